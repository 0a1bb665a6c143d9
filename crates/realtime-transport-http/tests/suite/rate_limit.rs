//! The inbound rate limit per connection: a client that floods gets `rate_limited` error
//! frames, then close 4029 if it goes on; another client is unaffected meanwhile.

use realtime_core::RateLimitConfig;
use realtime_ports::DisconnectReason;
use realtime_transport_http::TransportConfig;
use serde_json::json;

use super::support::{self, next_json, send_text, test_config};

#[tokio::test]
async fn a_flooding_client_gets_rate_limited_then_4029_and_others_are_unaffected() {
    let config = TransportConfig {
        inbound_rate: RateLimitConfig { per_second: 2, burst: 3 },
        ..test_config()
    };
    let server = support::start(config).await;
    let (mut flood, flood_id) = support::connect(server.addr, "good.mallory").await;
    let (mut bob, _) = support::connect(server.addr, "good.bob").await;
    for _ in 0..40 {
        send_text(&mut flood, r#"{"type":"ping"}"#).await;
    }
    // Meanwhile the other client is answered and receives publishes.
    send_text(&mut bob, r#"{"type":"ping"}"#).await;
    assert_eq!(next_json(&mut bob).await["type"], "pong");
    let body = json!({"target": {"user": "bob"}, "message": {"type": "news", "payload": {"n": 1}}});
    let response = support::publish(server.addr, &body).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(next_json(&mut bob).await, json!({"type": "news", "payload": {"n": 1}}));
    // The flooder: its burst is answered, then rate_limited errors, then the close.
    let mut pongs = 0;
    let mut limited = 0;
    let close = loop {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        let message = tokio::time::timeout(support::WAIT, flood.next())
            .await
            .unwrap_or_else(|_| panic!("no close in time"))
            .unwrap_or_else(|| panic!("stream ended without a close frame"))
            .unwrap_or_else(|e| panic!("{e}"));
        match message {
            Message::Text(text) => {
                let value: serde_json::Value =
                    serde_json::from_str(text.as_str()).unwrap_or_else(|e| panic!("{e}"));
                match (value["type"].as_str(), value["payload"]["code"].as_str()) {
                    (Some("pong"), _) => pongs += 1,
                    (Some("error"), Some("rate_limited")) => limited += 1,
                    _ => panic!("unexpected {value}"),
                }
            }
            Message::Close(Some(frame)) => break (u16::from(frame.code), frame.reason.to_string()),
            _ => {}
        }
    };
    assert_eq!(close, (4029, "rate limited".to_owned()));
    assert!(pongs >= 3, "the burst was answered: {pongs}");
    assert!(limited >= 1, "refusals were announced: {limited}");
    assert_eq!(server.api.disconnected(flood_id).await, DisconnectReason::RateLimited);
    // The other client goes on.
    send_text(&mut bob, r#"{"type":"ping"}"#).await;
    assert_eq!(next_json(&mut bob).await["type"], "pong");
    server.stop().await;
}
