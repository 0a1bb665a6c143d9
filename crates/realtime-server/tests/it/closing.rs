//! Through the real service: a message followed at once by a kick or a shutdown is
//! delivered before the close frame, and a panicking inbound handler neither leaks the
//! connection's registration nor its capacity slot.

use std::sync::Arc;

use realtime_core::{Connection, Envelope, UserId};
use realtime_ports::ConnectionRegistry;
use realtime_ports::{InboundError, InboundHandler, InboundReply};
use realtime_service::ServiceConfig;
use serde_json::json;

use crate::support::{self, next_json, send_text};

fn goodbye(n: usize) -> Envelope {
    Envelope::from_parts("goodbye", json!({"n": n})).unwrap_or_else(|e| panic!("{e}"))
}

/// A received publication without its stream position (`stream`, `offset`, `epoch`).
fn message(mut frame: serde_json::Value) -> serde_json::Value {
    if let Some(object) = frame.as_object_mut() {
        for field in ["stream", "offset", "epoch"] {
            object.remove(field);
        }
    }
    frame
}

#[tokio::test]
async fn a_message_then_a_kick_delivers_the_message_then_4003() {
    let stack = support::start_stack(support::transport()).await;
    let (mut ws, _) = support::connect(stack.addr, &support::token("alice", &[])).await;
    let alice = UserId::new("alice").unwrap_or_else(|e| panic!("{e}"));
    for n in 0..10 {
        let sent = stack.api.send_to_user(&alice, &goodbye(n)).await;
        assert_eq!(sent, Ok(1));
    }
    assert_eq!(stack.api.kick_user(&alice), 1);
    for n in 0..10 {
        assert_eq!(
            message(next_json(&mut ws).await),
            json!({"type": "goodbye", "payload": {"n": n}})
        );
    }
    assert_eq!(support::expect_close_then_end(&mut ws).await, (4003, "kicked".to_owned()));
    assert_eq!(stack.registry.count(), 0);
    stack.stop().await;
}

#[tokio::test]
async fn a_message_then_shutdown_delivers_the_message_then_1012() {
    let stack = support::start_stack(support::transport()).await;
    let (mut ws, _) = support::connect(stack.addr, &support::token("alice", &[])).await;
    assert_eq!(stack.api.broadcast(&goodbye(0)).await, Ok(1));
    stack.shutdown.shutdown();
    assert_eq!(message(next_json(&mut ws).await), json!({"type": "goodbye", "payload": {"n": 0}}));
    assert_eq!(support::expect_close_then_end(&mut ws).await, (1012, "server restart".to_owned()));
    stack.stop().await;
}

/// Panics on every message.
struct Panicking;

#[async_trait::async_trait]
impl InboundHandler for Panicking {
    async fn handle(&self, _: &Connection, _: Envelope) -> Result<InboundReply, InboundError> {
        panic!("the application's handler panicked");
    }
}

#[tokio::test]
async fn a_panicking_handler_leaks_neither_the_registration_nor_the_slot() {
    let service = ServiceConfig { max_connections: 1, ..ServiceConfig::default() };
    let stack =
        support::start_stack_with(support::transport(), service, Some(Arc::new(Panicking))).await;
    for round in 0..3 {
        // With one slot, each round can connect only if the last one released it.
        let (mut ws, _) = support::connect(stack.addr, &support::token("alice", &[])).await;
        send_text(&mut ws, r#"{"type":"chat","payload":{}}"#).await;
        let error = next_json(&mut ws).await;
        assert_eq!(error["payload"]["code"], "internal_error", "round {round}: {error}");
        drop(ws);
        support::eventually("the connection is unregistered", || stack.registry.count() == 0).await;
        support::eventually("the slot is free", || stack.api.has_capacity()).await;
    }
    stack.stop().await;
}

#[tokio::test]
async fn the_rate_limit_settings_reach_the_connections_and_zero_is_refused() {
    let mut config = support::config();
    config.inbound_rate = 1;
    config.inbound_burst = 1;
    let running = support::start(config).await;
    let (mut ws, _) = support::connect(running.addr, &support::token("alice", &[])).await;
    for _ in 0..20 {
        send_text(&mut ws, r#"{"type":"ping"}"#).await;
    }
    assert_eq!(next_json(&mut ws).await["type"], "pong");
    assert_eq!(next_json(&mut ws).await["payload"]["code"], "rate_limited");
    assert_eq!(support::expect_close_then_end(&mut ws).await, (4029, "rate limited".to_owned()));
    support::stop(running).await;

    let mut zero = support::config();
    zero.inbound_rate = 0;
    let error = realtime_server::start(zero).await.err().map(|e| format!("{e:#}"));
    let error = error.unwrap_or_else(|| panic!("a zero rate was accepted"));
    assert!(error.contains("--inbound-rate (REALTIME_INBOUND_RATE)"), "{error}");
}
