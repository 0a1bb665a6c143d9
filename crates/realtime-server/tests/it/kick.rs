//! Kicks through the real service: `POST /api/disconnect` and `RealtimeApi::kick`. A kicked
//! socket is closed with 4003 and unregistered at once; nobody else is touched.

use realtime_core::UserId;
use serde_json::{Value, json};

use crate::support::{self, API_KEY};

async fn disconnect(addr: std::net::SocketAddr, body: &Value) -> support::HttpResponse {
    let auth = format!("Bearer {API_KEY}");
    support::http(
        addr,
        "POST",
        "/api/disconnect",
        &[("Authorization", &auth)],
        body.to_string().as_bytes(),
    )
    .await
}

#[tokio::test]
async fn disconnect_by_user_closes_every_tab_with_4003_and_only_those() {
    let running = support::start(support::config()).await;
    let (mut tab1, _) = support::connect(running.addr, &support::token("alice", &[])).await;
    let (mut tab2, _) = support::connect(running.addr, &support::token("alice", &[])).await;
    let (mut bob, _) = support::connect(running.addr, &support::token("bob", &[])).await;

    let response = disconnect(running.addr, &json!({"target": {"user": "alice"}})).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["disconnected"], 2);
    // Unregistered at once, not when the sockets finish closing.
    assert_eq!(running.api.connection_count(), 1);
    for tab in [&mut tab1, &mut tab2] {
        assert_eq!(support::expect_close_then_end(tab).await, (4003, "kicked".to_owned()));
    }
    let body = json!({"target": "broadcast", "message": {"type": "n"}});
    assert_eq!(support::delivered(running.addr, &body).await, 1);
    assert_eq!(support::next_json(&mut bob).await["type"], "n");

    let again = disconnect(running.addr, &json!({"target": {"user": "alice"}})).await;
    assert_eq!(again.json()["disconnected"], 0);
    support::stop(running).await;
}

#[tokio::test]
async fn disconnect_by_connection_and_from_rust() {
    let running = support::start(support::config()).await;
    let (mut first, first_id) = support::connect(running.addr, &support::token("alice", &[])).await;
    let (mut second, second_id) =
        support::connect(running.addr, &support::token("alice", &[])).await;

    let body = json!({"target": {"connection": first_id.to_string()}});
    assert_eq!(disconnect(running.addr, &body).await.json()["disconnected"], 1);
    assert_eq!(support::expect_close_then_end(&mut first).await.0, 4003);

    assert!(running.api.kick(second_id));
    assert!(!running.api.kick(second_id), "a second kick finds nothing");
    assert_eq!(support::expect_close_then_end(&mut second).await.0, 4003);
    let alice = UserId::new("alice").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(running.api.kick_user(&alice), 0);
    assert_eq!(running.api.connection_count(), 0);
    support::stop(running).await;
}

#[tokio::test]
async fn disconnect_refuses_bad_requests() {
    let running = support::start(support::config()).await;
    let cases = [
        (json!({"target": "broadcast"}), 422, "\"target\" must be"),
        (json!({"target": {"role": "admin"}}), 422, "\"target\" must be"),
        (json!({"target": {"connection": "nope"}}), 422, "target.connection"),
        (json!({}), 422, "\"target\" is missing"),
    ];
    for (body, status, says) in cases {
        let response = disconnect(running.addr, &body).await;
        assert_eq!(response.status, status, "{body}");
        let error = response.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(error.contains(says), "{body}: {error}");
    }
    let unauthenticated = support::http(
        running.addr,
        "POST",
        "/api/disconnect",
        &[],
        br#"{"target":{"user":"alice"}}"#,
    )
    .await;
    assert_eq!(unauthenticated.status, 401);
    support::stop(running).await;
}
