//! Two realtime-server nodes on one Redis (`--broker redis`; a `redis-server` of the test's
//! own), then on two Redis shards (`--redis-url a,b`): a message published on one node
//! reaches a client on the other with its position, a topic works across nodes, and a client
//! that comes back on the other node recovers from Redis history what it missed. Sharded,
//! each stream's keys are on exactly one server, streams use both, presence the first.

use realtime_testkit::RedisProcess;
use realtime_testkit::jwt::{Claims, now_unix_secs};
use serde_json::{Value, json};

use crate::support::{self, next_json, open_since as open, redis_node as node, send_text};

async fn publish(addr: std::net::SocketAddr, target: Value, i: u64) -> Value {
    let body = json!({"target": target, "message": {"type": "n", "payload": {"i": i}}});
    let response = support::publish(addr, &body).await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

#[tokio::test]
async fn two_nodes_on_one_redis_deliver_across_and_recover_from_redis_history() {
    let redis = RedisProcess::start();
    deliver_across_and_recover(&redis.url()).await;
}

/// Whether `key` is on `server`.
fn holds(server: &RedisProcess, key: &str) -> bool {
    server.command(&["EXISTS", key]) == ":1"
}

#[tokio::test]
async fn two_nodes_on_two_redis_shards_deliver_across_and_spread_the_streams() {
    let (first, second) = (RedisProcess::start(), RedisProcess::start());
    let list = format!("{},{}", first.url(), second.url());
    deliver_across_and_recover(&list).await;
    let meta = |stream: &str| format!("rt:{{{stream}}}:meta");
    for stream in ["user:alice", "topic:orders"] {
        assert_ne!(holds(&first, &meta(stream)), holds(&second, &meta(stream)), "{stream}");
    }

    let a = support::start(node(&list, "node-a")).await;
    let b = support::start(node(&list, "node-b")).await;
    let topics: Vec<String> = (0..12).map(|i| format!("t{i}")).collect();
    for topic in &topics {
        publish(b.addr, json!({ "topic": topic }), 0).await;
    }
    let on_first = topics.iter().filter(|t| holds(&first, &meta(&format!("topic:{t}")))).count();
    let on_second = topics.iter().filter(|t| holds(&second, &meta(&format!("topic:{t}")))).count();
    assert_eq!(on_first + on_second, topics.len(), "each topic on exactly one server");
    assert!(on_first > 0 && on_second > 0, "{on_first} and {on_second}: both servers used");

    // Presence lives on the first server.
    let token = Claims::new("bob").exp(now_unix_secs() + 3600).mint(support::SECRET);
    let (ws, _) = open(a.addr, &token, None).await;
    let presence = "rt:presence:user:{bob}";
    let deadline = tokio::time::Instant::now() + realtime_testkit::WAIT;
    while !holds(&first, presence) {
        assert!(tokio::time::Instant::now() < deadline, "bob's presence never written");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!holds(&second, presence));
    drop(ws);
    support::stop(a).await;
    support::stop(b).await;
}

/// A client on node B gets what node A publishes, with its position, on a user stream and a
/// topic; gone and back on node A with `since`, it gets what it missed from Redis history.
async fn deliver_across_and_recover(redis_url: &str) {
    let a = support::start(node(redis_url, "node-a")).await;
    let b = support::start(node(redis_url, "node-b")).await;
    let token =
        Claims::new("alice").topics(&["*"]).exp(now_unix_secs() + 3600).mint(support::SECRET);

    // A client on node B; a publish on node A reaches it, with its position.
    let (mut ws, hello) = open(b.addr, &token, None).await;
    let start = hello["payload"]["streams"]["user:alice"].clone();
    assert!(start["offset"].is_u64(), "{hello}");
    let receipt = publish(a.addr, json!({"user": "alice"}), 1).await;
    assert_eq!(receipt["stream"], "user:alice", "{receipt}");
    let got = next_json(&mut ws).await;
    assert_eq!((&got["payload"]["i"], &got["stream"]), (&json!(1), &json!("user:alice")), "{got}");
    assert_eq!((&got["offset"], &got["epoch"]), (&receipt["offset"], &receipt["epoch"]), "{got}");

    // A topic across nodes.
    send_text(&mut ws, r#"{"type":"subscribe","id":1,"payload":{"topic":"orders"}}"#).await;
    let subscribed = next_json(&mut ws).await;
    assert_eq!(
        (&subscribed["type"], &subscribed["id"]),
        (&json!("subscribed"), &json!(1)),
        "{subscribed}"
    );
    publish(a.addr, json!({"topic": "orders"}), 2).await;
    let got = next_json(&mut ws).await;
    assert_eq!(
        (&got["payload"]["i"], &got["stream"]),
        (&json!(2), &json!("topic:orders")),
        "{got}"
    );

    // Gone from node B; two more are published on node A; back on node A with `since`.
    let seen = json!({"user:alice": {"epoch": receipt["epoch"], "offset": receipt["offset"]}});
    drop(ws);
    publish(a.addr, json!({"user": "alice"}), 3).await;
    publish(a.addr, json!({"user": "alice"}), 4).await;
    let (mut ws, hello) = open(a.addr, &token, Some(&seen)).await;
    assert_eq!(hello["payload"]["streams"]["user:alice"]["recovered"], true, "{hello}");
    let replayed = [next_json(&mut ws).await, next_json(&mut ws).await];
    let values: Vec<&Value> = replayed.iter().map(|f| &f["payload"]["i"]).collect();
    assert_eq!(values, [&json!(3), &json!(4)], "missed ones, once, in order: {replayed:?}");
    send_text(&mut ws, r#"{"type":"ping","id":"end"}"#).await;
    assert_eq!(next_json(&mut ws).await["type"], "pong", "nothing more");
    drop(ws);
    support::stop(a).await;
    support::stop(b).await;
}
