//! An end with a close frame (kick, shutdown) first writes what was already queued: "send a
//! goodbye, then close" delivers the goodbye, then the close frame.

use realtime_core::Frame;
use realtime_ports::{CloseReason, DisconnectReason};
use serde_json::json;

use super::support::{self, next_json, test_config};

fn goodbye(n: usize) -> Frame {
    Frame::from_text(json!({"type": "goodbye", "payload": {"n": n}}).to_string())
}

#[tokio::test]
async fn frames_queued_before_a_kick_arrive_before_4003() {
    let server = support::start(test_config()).await;
    let (mut ws, id) = support::connect(server.addr, "good.alice").await;
    for n in 0..20 {
        assert_eq!(server.api.send_one(id, goodbye(n)), Ok(()));
    }
    server.api.close_one(id, CloseReason::Kicked);
    for n in 0..20 {
        assert_eq!(next_json(&mut ws).await["payload"]["n"], n);
    }
    assert_eq!(support::expect_close(&mut ws).await, (4003, "kicked".to_owned()));
    assert_eq!(server.api.disconnected(id).await, DisconnectReason::Kicked);
    server.stop().await;
}

#[tokio::test]
async fn frames_queued_before_shutdown_arrive_before_1012() {
    let server = support::start(test_config()).await;
    let (mut ws, id) = support::connect(server.addr, "good.alice").await;
    for n in 0..20 {
        assert_eq!(server.api.send_one(id, goodbye(n)), Ok(()));
    }
    server.shutdown.shutdown();
    for n in 0..20 {
        assert_eq!(next_json(&mut ws).await["payload"]["n"], n);
    }
    assert_eq!(support::expect_close(&mut ws).await, (1012, "server restart".to_owned()));
    assert_eq!(server.api.disconnected(id).await, DisconnectReason::Shutdown);
    server.stop().await;
}
