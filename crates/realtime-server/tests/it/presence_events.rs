//! Presence events on the real stack: subscribers of a topic whose prefix enables them get
//! `presence.join` for a user's first connection and `presence.leave` for its last, never
//! for a second tab; topics without the prefix get none.

use realtime_service::ServiceConfig;
use realtime_testkit::jwt::{Claims, now_unix_secs};
use serde_json::Value;

use crate::support::{self, Ws, next_json, send_text};

async fn tab(addr: std::net::SocketAddr, user: &str) -> Ws {
    let token = Claims::new(user).topics(&["*"]).exp(now_unix_secs() + 3600).mint(support::SECRET);
    support::connect(addr, &token).await.0
}

/// Subscribes and waits for `subscribed`; returns the frames that came before it.
async fn subscribe(ws: &mut Ws, topic: &str) -> Vec<Value> {
    send_text(ws, &format!(r#"{{"type":"subscribe","payload":{{"topic":"{topic}"}}}}"#)).await;
    let mut before = Vec::new();
    loop {
        let frame = next_json(ws).await;
        if frame["type"] == "subscribed" {
            assert_eq!(frame["payload"]["topic"], topic, "{frame}");
            return before;
        }
        before.push(frame);
    }
}

/// The frames up to the pong of a ping: everything that was due before it.
async fn drain(ws: &mut Ws) -> Vec<Value> {
    send_text(ws, r#"{"type":"ping","id":"barrier"}"#).await;
    let mut frames = Vec::new();
    loop {
        let frame = next_json(ws).await;
        if frame["type"] == "pong" && frame["id"] == "barrier" {
            return frames;
        }
        frames.push(frame);
    }
}

fn events(frames: &[Value]) -> Vec<(String, String, String)> {
    frames
        .iter()
        .filter(|f| f["type"].as_str().is_some_and(|t| t.starts_with("presence.")))
        .map(|f| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (text(&f["type"]), text(&f["payload"]["topic"]), text(&f["payload"]["user_id"]))
        })
        .collect()
}

#[tokio::test]
async fn joins_and_leaves_are_sent_once_per_user_for_enabled_prefixes_only() {
    let service = ServiceConfig {
        presence_event_prefixes: vec!["chat:".to_owned()],
        ..ServiceConfig::default()
    };
    let stack = support::start_stack_with(support::transport(), service, None).await;
    let mut ann = tab(stack.addr, "ann").await;
    let mut seen = subscribe(&mut ann, "chat:room").await;
    seen.extend(subscribe(&mut ann, "orders").await);
    seen.extend(drain(&mut ann).await);
    let ev =
        |kind: &str, topic: &str, user: &str| (kind.to_owned(), topic.to_owned(), user.to_owned());
    assert_eq!(events(&seen), [ev("presence.join", "chat:room", "ann")], "its own join");

    let mut bob1 = tab(stack.addr, "bob").await;
    subscribe(&mut bob1, "chat:room").await;
    subscribe(&mut bob1, "orders").await;
    let mut bob2 = tab(stack.addr, "bob").await;
    subscribe(&mut bob2, "chat:room").await;
    assert_eq!(
        events(&drain(&mut ann).await),
        [ev("presence.join", "chat:room", "bob")],
        "bob's second tab is no second join; orders has no events"
    );

    drop(bob1);
    // Its close is seen by the server asynchronously: wait for it, so that bob2's unsubscribe
    // below is the last tab leaving.
    support::eventually("bob's first tab unregistered", || stack.api.connection_count() == 2).await;
    // Still one tab of bob in the room: no leave.
    send_text(&mut bob2, r#"{"type":"unsubscribe","payload":{"topic":"chat:room"}}"#).await;
    assert_eq!(
        events(&drain(&mut ann).await),
        [ev("presence.leave", "chat:room", "bob")],
        "the leave comes with bob's last tab in the room"
    );
    let members = stack
        .api
        .topic_presence(
            &realtime_core::TopicName::new("chat:room").unwrap_or_else(|e| panic!("{e}")),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(members.len(), 1, "{members:?}");
    drop((ann, bob2));
    stack.stop().await;
}
