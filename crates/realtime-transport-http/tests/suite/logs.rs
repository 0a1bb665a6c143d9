//! Secrets never reach the logs: everything the transport (and its web framework) logs at TRACE
//! level during handshakes, refusals, messages and publishes is captured and searched for the
//! tokens and the API key.

use realtime_testkit::logs::Capture;
use serde_json::json;

use super::support::{self, API_KEY, Connect, test_config};

#[tokio::test]
async fn no_token_or_api_key_appears_in_log_output() {
    let capture = Capture::new();
    // A current-thread runtime: the server's tasks run on this thread, under this subscriber.
    let _guard = tracing::subscriber::set_default(capture.subscriber());

    let server = support::start(test_config()).await;
    let good_query = "good.alice~query-secret-1";
    let good_protocol = "good.bob~protocol-secret-2";
    let bad = "forged~bad-secret-3";
    let (mut ws, _) = support::connect(server.addr, good_query).await;
    let options = Connect {
        subprotocol: Some("realtime.v1, bearer.good.bob~protocol-secret-2"),
        ..Connect::default()
    };
    let (mut ws2, _) =
        support::try_connect(server.addr, options).await.unwrap_or_else(|s| panic!("{s}"));
    assert_eq!(support::next_json(&mut ws2).await["type"], "connected");
    for (token, status) in [(bad, 401), ("unavailable~bad-secret-3", 503)] {
        let options = Connect { token_query: Some(token), ..Connect::default() };
        assert_eq!(support::try_connect(server.addr, options).await.err(), Some(status));
    }
    let plain = support::http(server.addr, "GET", "/ws?token=good.x~bad-secret-3", &[], b"").await;
    assert_eq!(plain.status, 400);
    support::send_text(&mut ws, r#"{"type":"boom"}"#).await;
    assert_eq!(support::next_json(&mut ws).await["type"], "error");
    let wrong_key = support::http(
        server.addr,
        "POST",
        "/api/publish",
        &[("Authorization", "Bearer wrong-key-secret-4")],
        b"{}",
    )
    .await;
    assert_eq!(wrong_key.status, 401);
    let body = json!({"target": "broadcast", "message": {"type": "n"}});
    assert_eq!(support::publish(server.addr, &body).await.status, 200);
    drop(ws);
    server.stop().await;

    let logs = capture.text();
    assert!(logs.contains("websocket handshake refused"), "nothing was captured:\n{logs}");
    assert!(logs.contains("connection closed"), "nothing was captured:\n{logs}");
    for secret in [
        "query-secret-1",
        "protocol-secret-2",
        "bad-secret-3",
        "wrong-key-secret-4",
        API_KEY,
        good_query,
        good_protocol,
    ] {
        assert!(!logs.contains(secret), "{secret:?} appears in the logs:\n{logs}");
    }
}

#[tokio::test]
async fn a_handler_panic_is_logged_once_and_a_protocol_violation_not_as_an_error() {
    let capture = Capture::new();
    let _guard = tracing::subscriber::set_default(capture.subscriber());
    let server = support::start(test_config()).await;
    let (mut ws, id) = support::connect(server.addr, "good.alice").await;
    support::send_text(&mut ws, r#"{"type":"panic"}"#).await;
    assert_eq!(support::next_json(&mut ws).await["payload"]["code"], "internal_error");
    drop(ws);
    server.api.disconnected(id).await;
    let (mut raw, id) = realtime_testkit::raw_ws::RawWs::connect(server.addr, "good.bob").await;
    raw.write(&realtime_testkit::raw_ws::RawFrame::new(0x3, *b"{}").encode()).await;
    assert_eq!(raw.expect_close().await.map(|(code, _)| code), Some(1002));
    server.api.disconnected(id).await;
    server.stop().await;

    let logs = capture.text();
    let errors: Vec<&str> = logs.lines().filter(|line| line.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "one error line, for the panic:\n{logs}");
    assert!(errors[0].contains("inbound handler panicked"), "{logs}");
}
