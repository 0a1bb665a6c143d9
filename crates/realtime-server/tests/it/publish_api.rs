//! The publish API on the real server: the key check, 400/422 that say what is wrong, 413,
//! health and metrics.

use serde_json::json;

use crate::support::{self, API_KEY};

#[tokio::test]
async fn the_key_is_checked() {
    let running = support::start(support::config()).await;
    let body = json!({"target": "broadcast", "message": {"type": "n"}}).to_string();
    let wrong = format!("Bearer x{API_KEY}");
    for headers in [&[][..], &[("Authorization", wrong.as_str())][..]] {
        let response =
            support::http(running.addr, "POST", "/api/publish", headers, body.as_bytes()).await;
        assert_eq!(response.status, 401);
        assert_eq!(response.json(), json!({"error": "unauthorized"}));
    }
    assert_eq!(
        support::delivered(running.addr, &json!({"target": "broadcast", "message": {"type": "n"}}))
            .await,
        0
    );
    support::stop(running).await;
}

#[tokio::test]
async fn bad_bodies_get_400_or_422_saying_what_is_wrong() {
    let running = support::start(support::config()).await;
    let auth = format!("Bearer {API_KEY}");
    let cases = [
        (&b"{\"target\":"[..], 400, "malformed JSON"),
        (br#"{"target":"all","message":{"type":"n"}}"#, 422, "\"target\" must be"),
        (br#"{"target":{"role":"a b"},"message":{"type":"n"}}"#, 422, "target.role"),
        (br#"{"target":"broadcast","message":{"type":""}}"#, 422, "message.type"),
        (br#"{"target":"broadcast","message":{"type":"n","payload":"x"}}"#, 422, "message.payload"),
    ];
    for (body, status, says) in cases {
        let response =
            support::http(running.addr, "POST", "/api/publish", &[("Authorization", &auth)], body)
                .await;
        assert_eq!(response.status, status, "{}", String::from_utf8_lossy(body));
        let error = response.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(error.contains(says), "{error}");
    }
    let head = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Length: {}\r\n\r\n",
        1024 * 1024
    );
    assert_eq!(support::raw_http(running.addr, head.as_bytes()).await.status, 413);
    support::stop(running).await;
}

#[tokio::test]
async fn health_and_metrics() {
    let running = support::start(support::config()).await;
    let (ws, _) = support::connect(running.addr, &support::token("alice", &[])).await;
    let health = support::http(running.addr, "GET", "/healthz", &[], b"").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    assert_eq!(health.json()["connections"], running.api.connection_count());
    // A refused handshake is counted.
    assert_eq!(support::try_connect(running.addr, Some("nope"), None).await.err(), Some(401));
    let metrics = support::http(running.addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.text().contains("realtime_handshake_failures_total"), "{}", metrics.text());
    drop(ws);
    support::stop(running).await;
}
