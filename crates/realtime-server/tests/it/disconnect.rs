//! Every way a connection ends (clean close, dropped TCP, missed pongs) removes it from every
//! index of the real registry, and publishes stop counting it; the others are untouched.

use std::time::Duration;

use realtime_core::{ConnectionId, LivenessConfig, Role, UserId};
use realtime_ports::ConnectionRegistry;
use realtime_transport_warp::TransportConfig;
use serde_json::json;

use crate::support::{self, Stack};

fn user(name: &str) -> UserId {
    UserId::new(name).unwrap_or_else(|e| panic!("{e}"))
}

fn role(name: &str) -> Role {
    Role::new(name).unwrap_or_else(|e| panic!("{e}"))
}

/// Whether `id` is in no index of the registry.
fn gone(stack: &Stack, id: ConnectionId) -> bool {
    let registry = &stack.registry;
    registry.get(id).is_none()
        && registry.find_by_user(&user("alice")).iter().all(|r| r.connection.id != id)
        && registry.find_by_role(&role("admin")).iter().all(|r| r.connection.id != id)
        && registry.find_by_role(&role("user")).iter().all(|r| r.connection.id != id)
        && registry.all().iter().all(|r| r.connection.id != id)
}

/// Connects alice twice (the first with `admin`) and bob once; returns the sockets.
async fn three_clients(stack: &Stack) -> [(support::Ws, ConnectionId); 3] {
    [
        support::connect(stack.addr, &support::token("alice", &["user", "admin"])).await,
        support::connect(stack.addr, &support::token("alice", &["user"])).await,
        support::connect(stack.addr, &support::token("bob", &["user"])).await,
    ]
}

async fn check_removed_everywhere(stack: &Stack, id: ConnectionId) {
    support::eventually("connection removed from every index", || gone(stack, id)).await;
    assert_eq!(stack.registry.count(), 2);
    assert_eq!(stack.registry.find_by_user(&user("alice")).len(), 1);
    assert_eq!(stack.registry.find_by_role(&role("admin")).len(), 0);
    assert_eq!(stack.registry.find_by_role(&role("user")).len(), 2);
    let counts = [
        (json!({"user": "alice"}), 1),
        (json!({"role": "admin"}), 0),
        (json!({"role": "user"}), 2),
        (json!({"connection": id.to_string()}), 0),
        (json!("broadcast"), 2),
    ];
    for (target, delivered) in counts {
        let body = json!({"target": target, "message": {"type": "n"}});
        assert_eq!(support::delivered(stack.addr, &body).await, delivered, "{target}");
    }
}

#[tokio::test]
async fn a_clean_close_removes_the_connection_from_every_index() {
    let stack = support::start_stack(support::transport()).await;
    let [(mut ws, id), _alice2, _bob] = three_clients(&stack).await;
    ws.close(None).await.unwrap_or_else(|e| panic!("{e}"));
    check_removed_everywhere(&stack, id).await;
    drop((_alice2, _bob));
    stack.stop().await;
}

#[tokio::test]
async fn a_dropped_tcp_connection_is_removed_from_every_index() {
    let stack = support::start_stack(support::transport()).await;
    let [(ws, id), _alice2, _bob] = three_clients(&stack).await;
    drop(ws);
    check_removed_everywhere(&stack, id).await;
    drop((_alice2, _bob));
    stack.stop().await;
}

#[tokio::test]
async fn missed_pongs_remove_the_connection_from_every_index() {
    let transport = TransportConfig {
        liveness: LivenessConfig {
            ping_interval: Duration::from_millis(200),
            pong_timeout: Duration::from_millis(300),
        },
        ..support::transport()
    };
    let stack = support::start_stack(transport).await;
    let [(mut silent, id), mut alice2, mut bob] = three_clients(&stack).await;
    // The others keep reading (and so answer pings) while the first one never does.
    let keep_alive = |mut ws: support::Ws| {
        tokio::spawn(async move {
            use futures_util::StreamExt;
            while let Some(Ok(_)) = ws.next().await {}
        })
    };
    // Read one frame each first so that both are known to be live, then let them idle.
    support::send_text(&mut alice2.0, r#"{"type":"ping"}"#).await;
    assert_eq!(support::next_json(&mut alice2.0).await["type"], "pong");
    support::send_text(&mut bob.0, r#"{"type":"ping"}"#).await;
    assert_eq!(support::next_json(&mut bob.0).await["type"], "pong");
    let readers = [keep_alive(alice2.0), keep_alive(bob.0)];
    check_removed_everywhere(&stack, id).await;
    assert_eq!(
        support::expect_close_then_end(&mut silent).await,
        (4004, "heartbeat timeout".to_owned())
    );
    for reader in readers {
        reader.abort();
    }
    stack.stop().await;
}
