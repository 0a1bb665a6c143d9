//! The publish API on the real server: the key check, 400/422 that say what is wrong, 413,
//! health and metrics (behind the key by default, or alone on `REALTIME_METRICS_LISTEN`).

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
    let auth = format!("Bearer {}", support::API_KEY);
    let metrics =
        support::http(running.addr, "GET", "/metrics", &[("Authorization", &auth)], b"").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.text().contains("realtime_handshake_failures_total"), "{}", metrics.text());
    // By default /metrics is behind the API key.
    let refused = support::http(running.addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json(), json!({"error": "unauthorized"}));
    assert_eq!(running.metrics_addr, None);
    drop(ws);
    support::stop(running).await;
}

#[tokio::test]
async fn with_a_metrics_address_metrics_are_served_there_without_a_key_and_not_on_the_main_one() {
    let mut config = support::config();
    config.metrics_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let running = support::start(config).await;
    let metrics_addr = running.metrics_addr.unwrap_or_else(|| panic!("no metrics listener"));
    assert_ne!(metrics_addr, running.addr);
    assert_eq!(support::try_connect(running.addr, Some("nope"), None).await.err(), Some(401));
    let metrics = support::http(metrics_addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.text().contains("realtime_handshake_failures_total"), "{}", metrics.text());
    // Not on the main listener, even with the key; and nothing else on the metrics one.
    let auth = format!("Bearer {}", support::API_KEY);
    let main =
        support::http(running.addr, "GET", "/metrics", &[("Authorization", &auth)], b"").await;
    assert_eq!(main.status, 404);
    assert_eq!(support::http(metrics_addr, "GET", "/healthz", &[], b"").await.status, 404);
    support::stop(running).await;
    assert!(tokio::net::TcpStream::connect(metrics_addr).await.is_err(), "metrics still served");
}
