//! The HTTP API: the key check, 400/422/413 with messages that say what is wrong, delivered
//! counts, health, metrics (behind the key, or alone on a listener of their own), the demo
//! page, and JSON for unknown routes.

use std::net::SocketAddr;
use std::sync::Arc;

use realtime_transport_http::{MetricsServer, ShutdownHandle, TransportConfig};
use serde_json::json;

use super::support::{self, API_KEY, http, publish, test_config};

#[tokio::test]
async fn publish_needs_the_api_key() {
    let server = support::start(test_config()).await;
    let body = json!({"target": "broadcast", "message": {"type": "n"}}).to_string();
    let wrong = format!("Bearer {API_KEY}x");
    let basic = format!("Basic {API_KEY}");
    let cases: [&[(&str, &str)]; 4] = [
        &[],
        &[("Authorization", wrong.as_str())],
        &[("Authorization", basic.as_str())],
        &[("Authorization", "Bearer")],
    ];
    for headers in cases {
        let response = http(server.addr, "POST", "/api/publish", headers, body.as_bytes()).await;
        assert_eq!(response.status, 401, "{headers:?}");
        assert_eq!(response.json(), json!({"error": "unauthorized"}));
        assert!(!response.text().contains(API_KEY));
    }
    let lower = format!("bearer {API_KEY}");
    let response =
        http(server.addr, "POST", "/api/publish", &[("Authorization", &lower)], body.as_bytes())
            .await;
    assert_eq!(response.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn publish_says_what_is_wrong() {
    let server = support::start(test_config()).await;
    let auth = format!("Bearer {API_KEY}");
    let send = |body: &'static str| {
        let auth = auth.clone();
        async move {
            http(server.addr, "POST", "/api/publish", &[("Authorization", &auth)], body.as_bytes())
                .await
        }
    };
    let cases = [
        ("{not json", 400, "malformed JSON"),
        ("", 400, "malformed JSON"),
        ("[]", 422, "JSON object"),
        (r#"{"message":{"type":"n"}}"#, 422, "\"target\" is missing"),
        (r#"{"target":"everyone","message":{"type":"n"}}"#, 422, "\"target\" must be"),
        (r#"{"target":{"user":""},"message":{"type":"n"}}"#, 422, "target.user"),
        (r#"{"target":{"connection":"nope"},"message":{"type":"n"}}"#, 422, "target.connection"),
        (r#"{"target":"broadcast","message":{"type":"bad type"}}"#, 422, "message.type"),
        (r#"{"target":"broadcast","message":{"type":"n","payload":7}}"#, 422, "message.payload"),
        (r#"{"target":"broadcast","message":{"type":"connected"}}"#, 422, "reserved"),
        (r#"{"target":"broadcast"}"#, 422, "\"message\" is missing"),
    ];
    for (body, status, says) in cases {
        let response = send(body).await;
        assert_eq!(response.status, status, "{body}");
        let error = response.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(error.contains(says), "{body}: {error}");
    }
    server.stop().await;
}

#[tokio::test]
async fn an_oversize_body_gets_413() {
    let config = TransportConfig { max_message_bytes: 1024, ..test_config() };
    let limit = config.max_publish_body_bytes();
    assert_eq!(limit, 1024 + realtime_transport_http::PUBLISH_BODY_OVERHEAD_BYTES as u64);
    let server = support::start(config).await;
    let head = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        limit + 1
    );
    let response = support::raw_http(server.addr, head.as_bytes()).await;
    assert_eq!(response.status, 413);
    assert!(response.json()["error"].as_str().is_some_and(|e| e.contains(&limit.to_string())));
    // Just under the limit is fine.
    let filler = "y".repeat(900);
    let body = json!({"target": "broadcast", "message": {"type": "n", "payload": {"f": filler}}});
    assert_eq!(publish(server.addr, &body).await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn publish_counts_what_it_delivered() {
    let server = support::start(test_config()).await;
    let (mut a1, a1_id) = support::connect(server.addr, "good.alice.admin").await;
    let (mut a2, _) = support::connect(server.addr, "good.alice").await;
    let (mut b, _) = support::connect(server.addr, "good.bob.admin!ops").await;
    let cases = [
        (json!("broadcast"), 3),
        (json!({"user": "alice"}), 2),
        (json!({"user": "nobody"}), 0),
        (json!({"role": "admin"}), 2),
        (json!({"role": "ops"}), 1),
        (json!({"connection": a1_id.to_string()}), 1),
        (json!({"connection": "6f1c5a7e-0d2b-4c8e-9a57-3b1f2e4d5c6a"}), 0),
    ];
    for (n, (target, delivered)) in cases.into_iter().enumerate() {
        let body = json!({"target": target, "message": {"type": "note", "payload": {"n": n}}});
        let response = publish(server.addr, &body).await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.json(), json!({"delivered": delivered}), "{target}");
    }
    // Each client got exactly its messages, in order.
    for (ws, ns) in [(&mut a1, &[0u64, 1, 3, 5][..]), (&mut a2, &[0, 1]), (&mut b, &[0, 3, 4])] {
        for n in ns {
            let message = support::next_json(ws).await;
            assert_eq!(message, json!({"type": "note", "payload": {"n": n}}));
        }
    }
    // Nothing more for a2: a ping is answered next, not a stray note.
    support::send_text(&mut a2, r#"{"type":"ping"}"#).await;
    assert_eq!(support::next_json(&mut a2).await["type"], "pong");
    server.stop().await;
}

#[tokio::test]
async fn health_metrics_demo_and_unknown_routes() {
    let metrics: realtime_transport_http::MetricsRenderer =
        Arc::new(|| "realtime_connections_active 1\n".to_owned());
    let config = TransportConfig {
        demo_page: Some("<html>demo</html>"),
        client_script: Some("export class RealtimeClient {}"),
        ..test_config()
    };
    let server = support::start_with(config, 100, Some(metrics)).await;
    let (_ws, _) = support::connect(server.addr, "good.alice").await;

    let health = http(server.addr, "GET", "/healthz", &[], b"").await;
    assert_eq!(health.status, 200);
    let broker = json!({"backend": "memory", "connected": true});
    assert_eq!(health.json(), json!({"status": "ok", "connections": 1, "broker": broker}));

    // /metrics is behind the API key, like the publish API.
    let auth = format!("Bearer {API_KEY}");
    let metrics = http(server.addr, "GET", "/metrics", &[("Authorization", &auth)], b"").await;
    assert_eq!(metrics.status, 200);
    assert_eq!(metrics.text(), "realtime_connections_active 1\n");
    assert!(metrics.header("content-type").is_some_and(|t| t.starts_with("text/plain")));
    let wrong = "Bearer wrong-key-0123456789abcdef";
    for headers in [&[][..], &[("Authorization", wrong)][..]] {
        let refused = http(server.addr, "GET", "/metrics", headers, b"").await;
        assert_eq!(refused.status, 401, "{headers:?}");
        assert_eq!(refused.json(), json!({"error": "unauthorized"}));
        assert!(!refused.text().contains("realtime_connections_active"));
    }

    let demo = http(server.addr, "GET", "/", &[], b"").await;
    assert_eq!(demo.status, 200);
    assert_eq!(demo.text(), "<html>demo</html>");
    assert!(demo.header("content-type").is_some_and(|t| t.starts_with("text/html")));

    let script = http(server.addr, "GET", "/client.js", &[], b"").await;
    assert_eq!(script.status, 200);
    assert_eq!(script.text(), "export class RealtimeClient {}");
    assert!(script.header("content-type").is_some_and(|t| t.starts_with("application/javascript")));

    let unknown = http(server.addr, "GET", "/nope?token=secret-in-url", &[], b"").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json(), json!({"error": "not found"}));

    let wrong_method = http(server.addr, "GET", "/api/publish", &[], b"").await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.json(), json!({"error": "method not allowed"}));
    server.stop().await;
}

/// A `MetricsServer` on 127.0.0.1:0 with `renderer`, running until its handle shuts down.
async fn metrics_server(
    renderer: realtime_transport_http::MetricsRenderer,
) -> (SocketAddr, ShutdownHandle, tokio::task::JoinHandle<()>) {
    let server = MetricsServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)), renderer)
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = server.local_addr();
    let shutdown = ShutdownHandle::new();
    let task = tokio::spawn(server.run(shutdown.clone()));
    (addr, shutdown, task)
}

#[tokio::test]
async fn the_metrics_server_serves_metrics_alone_without_a_key() {
    let (addr, shutdown, task) =
        metrics_server(Arc::new(|| "realtime_connections_active 0\n".to_owned())).await;
    let response = http(addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "realtime_connections_active 0\n");
    for path in ["/", "/healthz", "/api/publish", "/ws"] {
        let other = http(addr, "GET", path, &[], b"").await;
        assert_eq!(other.status, 404, "{path}");
        assert_eq!(other.json(), json!({"error": "not found"}), "{path}");
    }
    shutdown.shutdown();
    tokio::time::timeout(support::WAIT, task)
        .await
        .unwrap_or_else(|_| panic!("the metrics server did not stop"))
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn a_half_sent_scrape_does_not_hold_the_metrics_server_open() {
    let (addr, shutdown, task) = metrics_server(Arc::new(String::new)).await;
    let mut half = tokio::net::TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("{e}"));
    tokio::io::AsyncWriteExt::write_all(&mut half, b"GET /met")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Served: the stalled request does not stop another scrape.
    assert_eq!(http(addr, "GET", "/metrics", &[], b"").await.status, 200);
    shutdown.shutdown();
    tokio::time::timeout(support::WAIT, task)
        .await
        .unwrap_or_else(|_| panic!("a half-sent request kept the metrics server from stopping"))
        .unwrap_or_else(|e| panic!("{e}"));
    drop(half);
}

#[tokio::test]
async fn without_a_renderer_or_page_those_routes_are_404() {
    let server = support::start(test_config()).await;
    for path in ["/metrics", "/"] {
        let response = http(server.addr, "GET", path, &[], b"").await;
        assert_eq!(response.status, 404, "{path}");
        assert_eq!(response.json(), json!({"error": "not found"}));
    }
    server.stop().await;
}
