//! One size setting (`--max-message-bytes`) governs client frames, the decoder, the publish
//! body and the published frame; an oversize publish is refused to its publisher (413 over
//! HTTP, `PublishError::TooLarge` from Rust) and never reaches, or breaks, a connection.

use realtime_core::{Envelope, UserId};
use realtime_ports::PublishError;
use serde_json::json;

use crate::support;

/// A client message or published payload of about `bytes` bytes.
fn filler(bytes: usize) -> String {
    "x".repeat(bytes)
}

#[tokio::test]
async fn a_limit_above_64_kib_applies_to_client_frames_and_publishes_alike() {
    let mut config = support::config();
    config.max_message_bytes = 128 * 1024;
    let running = support::start(config).await;
    let (mut ws, _) = support::connect(running.addr, &support::token("alice", &[])).await;

    // 100 KiB from the client is decoded (the server has no handler for it), not refused as
    // too large by a decoder limit of its own.
    let big = json!({"type": "chat", "payload": {"t": filler(100 * 1024)}}).to_string();
    support::send_text(&mut ws, &big).await;
    let reply = support::next_json(&mut ws).await;
    assert_eq!(reply["payload"]["code"], "unsupported_type", "{reply}");

    // 100 KiB published over HTTP reaches the client.
    let body = json!({"target": {"user": "alice"}, "message": {"type": "n", "payload": {"t": filler(100 * 1024)}}});
    assert_eq!(support::delivered(running.addr, &body).await, 1);
    let got = support::next_json(&mut ws).await;
    assert_eq!(got["payload"]["t"].as_str().map(str::len), Some(100 * 1024));

    // Over the limit from the client: 1009, as documented.
    let over = json!({"type": "chat", "payload": {"t": filler(129 * 1024)}}).to_string();
    support::send_text(&mut ws, &over).await;
    let (code, _) = support::expect_close(&mut ws).await;
    assert_eq!(code, 1009);
    support::stop(running).await;
}

#[tokio::test]
async fn an_oversize_publish_is_refused_over_http_and_from_rust_and_the_client_goes_on() {
    let mut config = support::config();
    config.max_message_bytes = 8 * 1024;
    let running = support::start(config).await;
    let (mut ws, _) = support::connect(running.addr, &support::token("alice", &[])).await;

    // Over HTTP: the body fits the body limit (message limit + overhead), the encoded
    // message does not: 413 naming the limit, nothing delivered.
    let body = json!({"target": {"user": "alice"}, "message": {"type": "n", "payload": {"t": filler(9 * 1024)}}});
    let response = support::publish(running.addr, &body).await;
    assert_eq!(response.status, 413, "{}", response.text());
    assert!(response.text().contains("8192"), "{}", response.text());

    // From Rust: the publisher gets the error.
    let alice = UserId::new("alice").unwrap_or_else(|e| panic!("{e}"));
    let oversize =
        Envelope::from_parts("n", json!({"t": filler(9 * 1024)})).unwrap_or_else(|e| panic!("{e}"));
    let refused = running.api.send_to_user(&alice, &oversize).await;
    assert!(matches!(refused, Err(PublishError::TooLarge { max: 8192, .. })), "{refused:?}");

    // The connection is intact and the next message is the first it sees.
    let small = Envelope::from_parts("n", json!({"t": "after"})).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(running.api.send_to_user(&alice, &small).await, Ok(1));
    let got = support::next_json(&mut ws).await;
    assert_eq!(got["payload"]["t"], "after", "{got}");
    support::stop(running).await;
}
