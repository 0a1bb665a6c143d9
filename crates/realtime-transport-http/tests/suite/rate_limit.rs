//! The inbound rate limit per connection: a client that floods gets `rate_limited` error
//! frames (echoing each dropped frame's id), then close 4029 if it goes on; another client
//! is unaffected meanwhile.

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

/// A dropped frame's `rate_limited` echoes its id when it had a valid one; a frame that is
/// not JSON gets one without. Whether a frame is dropped depends on the clock, so each frame
/// is checked against both of its possible answers, by id.
#[tokio::test]
async fn a_rate_limited_refusal_echoes_the_dropped_frames_id() {
    let config = TransportConfig {
        inbound_rate: RateLimitConfig { per_second: 1, burst: 1 },
        ..test_config()
    };
    let server = support::start(config).await;
    let (mut ws, _) = support::connect(server.addr, "good.mallory").await;
    // The answer each frame gets when it is handled rather than dropped.
    let frames = [
        (r#"{"type":"ping","id":1}"#, Some(json!(1)), "pong"),
        (r#"{"type":"ping","id":"two"}"#, Some(json!("two")), "pong"),
        (r#"{"type":"echo","id":3,"payload":{}}"#, Some(json!(3)), "echo"),
        ("{not json", None, "invalid_message"),
        (r#"{"type":"ping","id":true}"#, None, "invalid_message"),
    ];
    for (text, _, _) in &frames {
        send_text(&mut ws, text).await;
    }
    let mut answers = Vec::new();
    for _ in 0..frames.len() {
        answers.push(next_json(&mut ws).await);
    }
    let mut limited_with_id = 0;
    for (text, id, handled) in &frames {
        let position = answers
            .iter()
            .position(|answer| {
                let answered = answer["payload"]["code"]
                    .as_str()
                    .unwrap_or(answer["type"].as_str().unwrap_or_default());
                answer.get("id") == id.as_ref()
                    && (answered == *handled || answered == "rate_limited")
            })
            .unwrap_or_else(|| panic!("no answer to {text} with its id among {answers:?}"));
        let answer = answers.remove(position);
        if id.is_some() && answer["payload"]["code"] == "rate_limited" {
            limited_with_id += 1;
        }
    }
    assert!(limited_with_id >= 1, "at least one frame with an id was dropped");
    server.stop().await;
}
