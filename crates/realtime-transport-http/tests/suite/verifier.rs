//! What the transport does around the token verifier: it sees the whole upgrade request
//! (a cookie session works without a token), is bounded in time and concurrency (503, not
//! 401, when it cannot decide), a verification that ends after a shutdown began never
//! registers, and named query parameters land in the connection's metadata. An application
//! without an inbound handler needs none.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use realtime_core::{BearerToken, Identity, UserId};
use realtime_ports::{AuthError, TokenVerifier, UpgradeRequest};
use realtime_transport_http::TransportConfig;
use serde_json::json;
use tokio::sync::Semaphore;

use super::support::{self, Connect, FakeVerifier, test_config};

/// Authenticates by the `session` cookie (`session=user-<name>`), never by a token; its
/// `verify` refuses everything.
struct CookieSessions;

#[async_trait]
impl TokenVerifier for CookieSessions {
    async fn verify(&self, _: &BearerToken) -> Result<Identity, AuthError> {
        Err(AuthError::InvalidSignature)
    }

    async fn authenticate(&self, request: &UpgradeRequest) -> Result<Identity, AuthError> {
        let name = request.cookie("session").and_then(|value| value.strip_prefix("user-"));
        let name = name.ok_or(AuthError::Missing)?;
        Ok(Identity::new(UserId::new(name).map_err(|_| AuthError::Malformed)?))
    }
}

/// Waits for a permit on `gate` before answering like the fake verifier; never returns
/// while the gate stays closed.
struct Gated {
    gate: Arc<Semaphore>,
    started: Arc<Semaphore>,
}

#[async_trait]
impl TokenVerifier for Gated {
    async fn verify(&self, token: &BearerToken) -> Result<Identity, AuthError> {
        self.started.add_permits(1);
        let _permit =
            self.gate.acquire().await.map_err(|_| AuthError::Unavailable("gate".into()))?;
        FakeVerifier.verify(token).await
    }
}

fn gated() -> (Arc<Gated>, Arc<Semaphore>, Arc<Semaphore>) {
    let gate = Arc::new(Semaphore::new(0));
    let started = Arc::new(Semaphore::new(0));
    (Arc::new(Gated { gate: gate.clone(), started: started.clone() }), gate, started)
}

async fn status(addr: std::net::SocketAddr, options: Connect<'_>) -> u16 {
    match support::try_connect(addr, options).await {
        Ok(_) => 101,
        Err(status) => status,
    }
}

#[tokio::test]
async fn a_cookie_session_authenticates_without_a_token() {
    let server = support::start_verifying(test_config(), Arc::new(CookieSessions), None).await;
    let options = Connect { cookie: Some("theme=dark; session=user-carol"), ..Connect::default() };
    let (mut ws, _) = support::try_connect(server.addr, options)
        .await
        .unwrap_or_else(|status| panic!("refused with {status}"));
    let hello = support::next_json(&mut ws).await;
    assert_eq!(hello["payload"]["user_id"], "carol", "{hello}");
    let refused = Connect { cookie: Some("session=nobody"), ..Connect::default() };
    assert_eq!(status(server.addr, refused).await, 401);
    drop(ws);
    server.stop().await;
}

#[tokio::test]
async fn a_hanging_verifier_gets_503_after_the_timeout_not_401() {
    let (verifier, _gate, _) = gated();
    let config = TransportConfig { verify_timeout: Duration::from_millis(200), ..test_config() };
    let server = support::start_verifying(config, verifier, None).await;
    let options = Connect { token_query: Some("good.alice"), ..Connect::default() };
    assert_eq!(status(server.addr, options).await, 503);
    assert_eq!(server.api.connection_count_now(), 0);
    server.stop().await;
}

#[tokio::test]
async fn verifications_beyond_the_limit_get_503_at_once() {
    let (verifier, gate, started) = gated();
    let config = TransportConfig { max_concurrent_verifications: 2, ..test_config() };
    let server = support::start_verifying(config, verifier, None).await;
    let addr = server.addr;
    let pending: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(async move {
                status(addr, Connect { token_query: Some("good.alice"), ..Connect::default() })
                    .await
            })
        })
        .collect();
    // Both are inside the verifier now.
    let both = tokio::time::timeout(support::WAIT, started.acquire_many(2)).await;
    drop(both.unwrap_or_else(|_| panic!("verifications did not start")));
    let third = Connect { token_query: Some("good.bob"), ..Connect::default() };
    assert_eq!(status(addr, third).await, 503, "a third is refused while two run");
    gate.add_permits(2);
    for handle in pending {
        assert_eq!(handle.await.unwrap_or_else(|e| panic!("{e}")), 101);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_verification_that_ends_after_shutdown_began_never_registers() {
    let (verifier, gate, started) = gated();
    let server = support::start_verifying(test_config(), verifier, None).await;
    let addr = server.addr;
    let handshake = tokio::spawn(async move {
        status(addr, Connect { token_query: Some("good.alice"), ..Connect::default() }).await
    });
    let inside = tokio::time::timeout(support::WAIT, started.acquire()).await;
    drop(inside.unwrap_or_else(|_| panic!("verification did not start")));
    server.shutdown.shutdown();
    gate.add_permits(1);
    assert_eq!(handshake.await.unwrap_or_else(|e| panic!("{e}")), 503);
    assert_eq!(server.api.connection_count_now(), 0, "nothing registered after the drain began");
    assert!(server.api.disconnects().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn named_query_parameters_become_metadata() {
    let config =
        TransportConfig { metadata_query_params: vec!["job_id".to_owned()], ..test_config() };
    let server = support::start_verifying(config, Arc::new(FakeVerifier), None).await;
    let options = Connect {
        token_query: Some("good.alice"),
        query: Some("job_id=job%2D123&other=x"),
        ..Connect::default()
    };
    let (mut ws, _) = support::try_connect(server.addr, options)
        .await
        .unwrap_or_else(|status| panic!("refused with {status}"));
    let hello = support::next_json(&mut ws).await;
    let id = hello["payload"]["connection_id"].as_str().unwrap_or_default();
    let id = realtime_core::ConnectionId::parse(id).unwrap_or_else(|e| panic!("{e}"));
    let metadata = server.api.metadata_of(id).unwrap_or_else(|| panic!("{id} not registered"));
    assert_eq!(serde_json::Value::Object(metadata), json!({"job_id": "job-123"}));
    let repeated = Connect {
        token_query: Some("good.alice"),
        query: Some("job_id=1&job_id=2"),
        ..Connect::default()
    };
    assert_eq!(status(server.addr, repeated).await, 400);
    let too_long = format!("job_id={}", "x".repeat(600));
    let long =
        Connect { token_query: Some("good.alice"), query: Some(&too_long), ..Connect::default() };
    assert_eq!(status(server.addr, long).await, 400);
    drop(ws);
    server.stop().await;
}

#[tokio::test]
async fn without_an_inbound_handler_client_messages_are_unsupported() {
    let server = support::start_verifying(test_config(), Arc::new(FakeVerifier), None).await;
    let (mut ws, _) = support::connect(server.addr, "good.alice").await;
    support::send_text(&mut ws, r#"{"type":"echo","payload":{}}"#).await;
    let reply = support::next_json(&mut ws).await;
    assert_eq!(reply["payload"]["code"], "unsupported_type", "{reply}");
    support::send_text(&mut ws, r#"{"type":"ping"}"#).await;
    assert_eq!(support::next_json(&mut ws).await["type"], "pong");
    drop(ws);
    server.stop().await;
}
