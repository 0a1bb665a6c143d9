//! No JWT and no API key ever appears in the log output of the whole stack (transport,
//! service, verifier), captured at TRACE level while tokens travel in queries and
//! subprotocols, good and bad.

use realtime_testkit::logs::Capture;
use serde_json::json;

use crate::support::{self, API_KEY, SECRET};

#[tokio::test]
async fn no_jwt_or_api_key_appears_in_the_logs() {
    let capture = Capture::new();
    // A current-thread runtime: every task of the server runs here, under this subscriber.
    let _guard = tracing::subscriber::set_default(capture.subscriber());

    let running = support::start(support::config()).await;
    let good = support::token("alice", &["user"]);
    let good2 = support::token("bob", &["admin"]);
    let forged = realtime_testkit::jwt::Claims::new("mallory")
        .exp(realtime_testkit::jwt::now_unix_secs() + 60)
        .mint(b"not-the-server-secret-not-the-server-secret");
    let (mut ws, _) = support::connect(running.addr, &good).await;
    let mut ws2 =
        support::try_connect(running.addr, None, Some(&format!("realtime.v1, bearer.{good2}")))
            .await
            .unwrap_or_else(|s| panic!("{s}"));
    assert_eq!(support::next_json(&mut ws2).await["type"], "connected");
    assert_eq!(support::try_connect(running.addr, Some(&forged), None).await.err(), Some(401));
    let plain = support::http(running.addr, "GET", &format!("/ws?token={forged}"), &[], b"").await;
    assert_eq!(plain.status, 400);
    support::send_text(&mut ws, "{broken").await;
    assert_eq!(support::next_json(&mut ws).await["type"], "error");
    let body = json!({"target": {"user": "alice"}, "message": {"type": "n"}});
    assert_eq!(support::delivered(running.addr, &body).await, 1);
    let wrong = support::http(
        running.addr,
        "POST",
        "/api/publish",
        &[("Authorization", "Bearer wrong-key-that-is-secret")],
        b"{}",
    )
    .await;
    assert_eq!(wrong.status, 401);
    drop((ws, ws2));
    support::stop(running).await;

    let logs = capture.text();
    assert!(
        logs.contains("connection opened") || logs.contains("connection open"),
        "nothing captured:\n{logs}"
    );
    let secret_text = String::from_utf8_lossy(SECRET).into_owned();
    for token in [&good, &good2, &forged] {
        // Neither the whole token nor its signature part.
        let signature = token.rsplit('.').next().unwrap_or_default();
        assert!(!logs.contains(token.as_str()), "a JWT appears in the logs:\n{logs}");
        assert!(!logs.contains(signature), "a JWT signature appears in the logs:\n{logs}");
    }
    for secret in [API_KEY, "wrong-key-that-is-secret", secret_text.as_str()] {
        assert!(!logs.contains(secret), "{secret:?} appears in the logs:\n{logs}");
    }
}
