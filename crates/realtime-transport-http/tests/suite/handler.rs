//! The inbound handler off the connection's critical path: while it awaits, the timers
//! (pings, token expiry) and shutdown keep running; a handler that hangs gets a timeout and
//! the client an `internal_error` frame; a panicking handler is caught; a reply of a
//! reserved type is refused by the service.

use std::time::Duration;

use futures_util::StreamExt;
use realtime_core::LivenessConfig;
use realtime_ports::DisconnectReason;
use realtime_transport_http::TransportConfig;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::support::{self, WAIT, next_json, send_text, test_config};

/// The most client messages the session reads ahead of a busy handler (`session.rs`).
const INBOUND_BACKLOG: usize = 8;

/// A configuration where a hanging handler hangs longer than any test waits.
fn patient() -> TransportConfig {
    TransportConfig { inbound_timeout: Duration::from_secs(60), ..test_config() }
}

#[tokio::test]
async fn a_hanging_handler_does_not_stop_token_expiry() {
    let server = support::start(patient()).await;
    let (mut ws, id) = support::connect(server.addr, "expiring.1500.alice").await;
    send_text(&mut ws, r#"{"type":"hang"}"#).await;
    server.inbound.hanging(1).await;
    assert_eq!(support::expect_close(&mut ws).await, (4001, "token expired".to_owned()));
    assert_eq!(server.api.disconnected(id).await, DisconnectReason::TokenExpired);
    server.stop().await;
}

#[tokio::test]
async fn a_hanging_handler_does_not_stop_shutdown() {
    let server = support::start(patient()).await;
    let (mut ws, id) = support::connect(server.addr, "good.alice").await;
    send_text(&mut ws, r#"{"type":"hang"}"#).await;
    server.inbound.hanging(1).await;
    server.shutdown.shutdown();
    assert_eq!(support::expect_close(&mut ws).await, (1012, "server restart".to_owned()));
    assert_eq!(server.api.disconnected(id).await, DisconnectReason::Shutdown);
    server.stop().await;
}

#[tokio::test]
async fn a_hanging_handler_does_not_stop_heartbeat_pings() {
    let config = TransportConfig {
        liveness: LivenessConfig {
            ping_interval: Duration::from_millis(100),
            pong_timeout: Duration::from_secs(5),
        },
        ..patient()
    };
    let server = support::start(config).await;
    let (mut ws, _) = support::connect(server.addr, "good.alice").await;
    send_text(&mut ws, r#"{"type":"hang"}"#).await;
    let ping = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Ping(_))) => break,
                Some(Ok(_)) => {}
                other => panic!("stream ended before a ping: {other:?}"),
            }
        }
    };
    tokio::time::timeout(WAIT, ping)
        .await
        .unwrap_or_else(|_| panic!("no ping while the handler hangs"));
    server.stop().await;
}

#[tokio::test]
async fn a_hanging_handler_times_out_with_internal_error_and_messages_stay_in_order() {
    let config = TransportConfig { inbound_timeout: Duration::from_millis(200), ..test_config() };
    let server = support::start(config).await;
    let (mut ws, _) = support::connect(server.addr, "good.alice").await;
    send_text(&mut ws, r#"{"type":"hang"}"#).await;
    send_text(&mut ws, r#"{"type":"echo","payload":{"n":1}}"#).await;
    send_text(&mut ws, r#"{"type":"echo","payload":{"n":2}}"#).await;
    let error = next_json(&mut ws).await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["payload"]["code"], "internal_error", "{error}");
    assert_eq!(next_json(&mut ws).await, json!({"type": "echo", "payload": {"n": 1}}));
    assert_eq!(next_json(&mut ws).await, json!({"type": "echo", "payload": {"n": 2}}));
    server.stop().await;
}

#[tokio::test]
async fn a_panicking_handler_answers_internal_error_and_the_connection_goes_on() {
    let server = support::start(test_config()).await;
    let (mut ws, id) = support::connect(server.addr, "good.alice").await;
    send_text(&mut ws, r#"{"type":"panic"}"#).await;
    let error = next_json(&mut ws).await;
    assert_eq!(error["payload"]["code"], "internal_error", "{error}");
    send_text(&mut ws, r#"{"type":"echo","payload":{"n":1}}"#).await;
    assert_eq!(next_json(&mut ws).await, json!({"type": "echo", "payload": {"n": 1}}));
    drop(ws);
    assert_eq!(server.api.disconnected(id).await, DisconnectReason::TransportError);
    assert_eq!(server.api.connection_count_now(), 0);
    server.stop().await;
}

#[tokio::test]
async fn a_reply_of_a_reserved_type_is_refused_with_internal_error() {
    let server = support::start(test_config()).await;
    let (mut ws, _) = support::connect(server.addr, "good.alice").await;
    send_text(&mut ws, r#"{"type":"forge"}"#).await;
    let error = next_json(&mut ws).await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["payload"]["code"], "internal_error", "{error}");
    send_text(&mut ws, r#"{"type":"ping"}"#).await;
    assert_eq!(next_json(&mut ws).await["type"], "pong");
    server.stop().await;
}

/// While the handler's backlog is full the server does not read the socket, so the client's
/// pongs wait unread: that must not close a client that is answering (4004).
#[tokio::test]
async fn a_full_handler_backlog_does_not_count_as_a_missed_pong() {
    let config = TransportConfig {
        liveness: LivenessConfig {
            ping_interval: Duration::from_millis(100),
            pong_timeout: Duration::from_millis(200),
        },
        inbound_timeout: Duration::from_millis(1500),
        ..test_config()
    };
    let server = support::start(config).await;
    let (mut ws, _) = support::connect(server.addr, "good.alice").await;
    send_text(&mut ws, r#"{"type":"hang"}"#).await;
    server.inbound.hanging(1).await;
    // More than the backlog holds: the socket is not read until the hang times out.
    for _ in 0..INBOUND_BACKLOG + 2 {
        send_text(&mut ws, r#"{"type":"other"}"#).await;
    }
    // The client keeps reading (so it answers pings); the next frames are the timeout's
    // `internal_error` and the answers to the others, not a heartbeat close.
    let first = next_json(&mut ws).await;
    assert_eq!(first["payload"]["code"], "internal_error", "{first}");
    for _ in 0..INBOUND_BACKLOG + 2 {
        let reply = next_json(&mut ws).await;
        assert_eq!(reply["payload"]["code"], "unsupported_type", "{reply}");
    }
    drop(ws);
    server.stop().await;
}
