//! Three realtime-server nodes on one Redis (a `redis-server` of the test's own), clients
//! spread over them: every routing delivers exactly once to exactly the intended sockets,
//! receipts sum every node's count, presence and revocation work across nodes, and a node whose pub/sub connection is killed
//! tells its clients (4010) or delivers everything; nothing is skipped silently.

use std::net::SocketAddr;

use realtime_testkit::RedisProcess;
use realtime_testkit::jwt::{Claims, now_unix_secs};
use realtime_testkit::ws::next_json_or_close;
use serde_json::{Value, json};

use crate::support::{self, API_KEY, Ws, next_json, redis_node as node, send_text};

fn token(user: &str, roles: &[&str], iat: Option<u64>) -> String {
    let mut claims = Claims::new(user).roles(roles).topics(&["*"]).exp(now_unix_secs() + 3600);
    if let Some(iat) = iat {
        claims = claims.iat(iat);
    }
    claims.mint(support::SECRET)
}

/// A client: its socket, its connection id and the positions it saw.
struct Client {
    ws: Ws,
    id: String,
}

async fn open(addr: SocketAddr, token: &str, since: Option<&Value>) -> (Client, Value) {
    let (ws, hello) = support::open_since(addr, token, since).await;
    let id = hello["payload"]["connection_id"].as_str().unwrap_or_else(|| panic!("{hello}"));
    (Client { ws, id: id.to_owned() }, hello)
}

async fn subscribe(client: &mut Client, topic: &str) {
    let request = json!({"type": "subscribe", "id": topic, "payload": {"topic": topic}});
    send_text(&mut client.ws, &request.to_string()).await;
    let reply = next_json(&mut client.ws).await;
    assert_eq!((&reply["type"], &reply["id"]), (&json!("subscribed"), &json!(topic)), "{reply}");
}

async fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Value {
    let auth = format!("Bearer {API_KEY}");
    let body = body.map(Value::to_string).unwrap_or_default();
    let response =
        support::http(addr, method, path, &[("Authorization", &auth)], body.as_bytes()).await;
    assert_eq!(response.status, 200, "{method} {path}: {}", response.text());
    response.json()
}

async fn publish(addr: SocketAddr, target: Value, label: &str) -> Value {
    let body = json!({"target": target, "message": {"type": "n", "payload": {"label": label}}});
    call(addr, "POST", "/api/publish", Some(&body)).await
}

/// Reads frames until the pong of a ping sent now: the labels of everything before it.
async fn drain(client: &mut Client) -> Vec<String> {
    send_text(&mut client.ws, r#"{"type":"ping","id":"fence"}"#).await;
    let mut labels = Vec::new();
    loop {
        let frame = next_json(&mut client.ws).await;
        if frame["type"] == "pong" {
            return labels;
        }
        labels.push(
            frame["payload"]["label"].as_str().unwrap_or_else(|| panic!("{frame}")).to_owned(),
        );
    }
}

/// Polls `GET <path>` on `addr` until it answers `expected` (presence is eventually
/// consistent across nodes only within one write; this bounds the wait).
async fn presence_is(addr: SocketAddr, path: &str, expected: &Value) {
    let mut last = Value::Null;
    let wait = async {
        loop {
            last = call(addr, "GET", path, None).await;
            if last == *expected {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(realtime_testkit::WAIT, wait).await.is_err() {
        panic!("{path}: {last}, expected {expected}");
    }
}

#[tokio::test]
async fn three_nodes_route_exactly_once_share_presence_and_revoke_everywhere() {
    let redis = RedisProcess::start();
    let nodes = [
        support::start(node(&redis.url(), "node-a")).await,
        support::start(node(&redis.url(), "node-b")).await,
        support::start(node(&redis.url(), "node-c")).await,
    ];
    let [a, b, c] = [nodes[0].addr, nodes[1].addr, nodes[2].addr];
    let old = now_unix_secs() - 10;
    let (mut alice_a, _) = open(a, &token("alice", &["user"], Some(old)), None).await;
    let (mut alice_b, _) = open(b, &token("alice", &["user"], Some(old)), None).await;
    let (mut bob_c, _) = open(c, &token("bob", &["admin"], None), None).await;
    let (mut carol_b, _) = open(b, &token("carol", &["user"], None), None).await;
    subscribe(&mut carol_b, "orders").await;
    subscribe(&mut bob_c, "orders").await;

    // Every routing, published through node A.
    publish(a, json!({"user": "alice"}), "to-alice").await;
    publish(a, json!({"role": "admin"}), "to-admins").await;
    publish(a, json!({"topic": "orders"}), "to-orders").await;
    publish(a, json!({"connection": carol_b.id}), "to-carols-socket").await;
    publish(a, json!("broadcast"), "to-all").await;
    // Each fence is a ping after the last publish's frame may still be in flight on another
    // node: wait for the broadcast (the last one) on each socket first.
    let expected: [(&mut Client, &[&str]); 4] = [
        (&mut alice_a, &["to-alice", "to-all"]),
        (&mut alice_b, &["to-alice", "to-all"]),
        (&mut bob_c, &["to-admins", "to-orders", "to-all"]),
        (&mut carol_b, &["to-orders", "to-carols-socket", "to-all"]),
    ];
    for (client, labels) in expected {
        let mut got = Vec::new();
        while got.len() < labels.len() {
            let frame = next_json(&mut client.ws).await;
            got.push(
                frame["payload"]["label"].as_str().unwrap_or_else(|| panic!("{frame}")).to_owned(),
            );
        }
        // Each label is on a stream of its own (or the connection channel), and order is
        // kept per stream only: across streams, Redis pub/sub messages are handled by
        // workers chosen by channel, so compare them as a set (each exactly once).
        got.sort();
        let mut labels = labels.to_vec();
        labels.sort_unstable();
        assert_eq!(got, labels, "exactly these, once");
        assert_eq!(drain(client).await, Vec::<String>::new(), "nothing more");
    }

    // Receipts: every node's count, summed (four sockets on three nodes).
    let counted = json!({"target": "broadcast", "receipts": true,
        "message": {"type": "n", "payload": {"label": "counted"}}});
    let receipt = call(a, "POST", "/api/publish", Some(&counted)).await;
    let answer = (&receipt["delivered"], &receipt["nodes_answered"], &receipt["nodes_expected"]);
    assert_eq!(answer, (&json!(4), &json!(3), &json!(3)), "{receipt}");
    for client in [&mut alice_a, &mut alice_b, &mut bob_c, &mut carol_b] {
        let frame = next_json(&mut client.ws).await;
        assert_eq!(frame["payload"]["label"], "counted", "{frame}");
    }
    let to_carol = json!({"target": {"connection": carol_b.id}, "receipts": true,
        "message": {"type": "n", "payload": {"label": "counted-one"}}});
    let receipt = call(c, "POST", "/api/publish", Some(&to_carol)).await;
    assert_eq!(receipt["delivered"], 1, "counted by the node that holds it: {receipt}");
    assert_eq!(next_json(&mut carol_b.ws).await["payload"]["label"], "counted-one");

    // Presence across nodes, asked of a node that holds none of the connections.
    presence_is(
        c,
        "/api/presence/user/alice",
        &json!({"user_id": "alice", "online": true, "connections": 2}),
    )
    .await;
    presence_is(b, "/api/presence/online", &json!({"connections": 4})).await;
    let members = json!({"topic": "orders", "members": [
        {"user_id": "bob", "connections": 1}, {"user_id": "carol", "connections": 1}]});
    presence_is(a, "/api/presence/topic/orders", &members).await;

    // A revocation on node C closes alice's tabs on A and B.
    let revoke = json!({"user": "alice", "issued_before": now_unix_secs()});
    call(c, "POST", "/api/revoke", Some(&revoke)).await;
    for client in [&mut alice_a, &mut alice_b] {
        let (code, _) = support::expect_close_then_end(&mut client.ws).await;
        assert_eq!(code, 4005);
    }
    assert!(
        support::try_connect(b, Some(&token("alice", &["user"], Some(old))), None).await.is_err(),
        "the old token is refused on every node"
    );
    presence_is(
        b,
        "/api/presence/user/alice",
        &json!({"user_id": "alice", "online": false, "connections": 0}),
    )
    .await;
    drop((bob_c, carol_b));
    for node in nodes {
        support::stop(node).await;
    }
}

/// `CLIENT KILL TYPE pubsub` while node A publishes to a client on node B: the client gets
/// every publication once, in order, or is closed with 4010; reconnecting with what it saw,
/// it recovers the rest from Redis history. Either way it ends with all of them, once.
#[tokio::test]
async fn a_killed_pubsub_connection_is_delivered_or_told_and_recovered() {
    let redis = RedisProcess::start();
    let (node_a, node_b) = (
        support::start(node(&redis.url(), "node-a")).await,
        support::start(node(&redis.url(), "node-b")).await,
    );
    let alice = token("alice", &[], None);
    let (mut client, hello) = open(node_b.addr, &alice, None).await;
    let mut seen = hello["payload"]["streams"]["user:alice"].clone();
    let total = 60;
    for i in 0..total {
        if i == 20 {
            let killed = redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
            assert!(killed.starts_with(':'), "{killed}");
        }
        publish(node_a.addr, json!({"user": "alice"}), &i.to_string()).await;
    }
    let mut got: Vec<String> = Vec::new();
    let mut told = false;
    while got.len() < total {
        match next_json_or_close(&mut client.ws).await {
            Ok(frame) => {
                seen = json!({"epoch": frame["epoch"], "offset": frame["offset"]});
                got.push(
                    frame["payload"]["label"]
                        .as_str()
                        .unwrap_or_else(|| panic!("{frame}"))
                        .to_owned(),
                );
            }
            Err(code) => {
                assert_eq!(code, Some(4010), "told with the documented close code");
                told = true;
                let since = json!({"user:alice": seen});
                let (again, hello) = open(node_b.addr, &alice, Some(&since)).await;
                let stream = &hello["payload"]["streams"]["user:alice"];
                assert_eq!(stream["recovered"], true, "{hello}");
                client = again;
            }
        }
    }
    let expected: Vec<String> = (0..total).map(|i| i.to_string()).collect();
    assert_eq!(got, expected, "each once, in order (told of the gap: {told})");
    assert_eq!(drain(&mut client).await, Vec::<String>::new());
    support::stop(node_a).await;
    support::stop(node_b).await;
}

/// Polls `/healthz` until it answers `status`; returns its body.
async fn healthz_once(addr: SocketAddr, status: u16) -> Value {
    let wait = async {
        loop {
            let health = support::http(addr, "GET", "/healthz", &[], b"").await;
            if health.status == status {
                return health.json();
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(realtime_testkit::WAIT, wait)
        .await
        .unwrap_or_else(|_| panic!("/healthz never answered {status}"))
}

/// `/healthz` reports the broker: 503 `broker_unavailable` while Redis is down (new clients
/// are refused then), 200 again once the node is back; the reconnection is counted. A publish
/// while Redis is down is refused with 503; its retry with the same idempotency key after
/// Redis is back publishes once. `/metrics` has the Redis broker's metrics.
#[tokio::test]
async fn healthz_reports_the_redis_broker() {
    let mut redis = RedisProcess::start();
    let node_a = support::start(node(&redis.url(), "node-a")).await;
    let health = support::http(node_a.addr, "GET", "/healthz", &[], b"").await;
    assert_eq!(health.status, 200, "{}", health.text());
    let body = health.json();
    assert_eq!(
        (&body["broker"]["backend"], &body["broker"]["connected"]),
        (&json!("redis"), &json!(true)),
        "{body}"
    );
    // A client, so that the node receives a publication through pub/sub (the lag metric).
    let (mut alice, _) = open(node_a.addr, &token("alice", &[], None), None).await;
    publish(node_a.addr, json!({"user": "alice"}), "before").await;
    assert_eq!(next_json(&mut alice.ws).await["payload"]["label"], "before");
    redis.kill();
    let body = healthz_once(node_a.addr, 503).await;
    let down = (&body["status"], &body["broker"]["connected"]);
    assert_eq!(down, (&json!("broker_unavailable"), &json!(false)), "{body}");
    // Redis down at publish time: an error, never a silent success.
    let keyed = json!({"target": {"user": "alice"}, "idempotency_key": "retry-1",
        "message": {"type": "n", "payload": {"label": "retried"}}});
    let refused = support::publish(node_a.addr, &keyed).await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    redis.restart();
    let body = healthz_once(node_a.addr, 200).await;
    assert_eq!(body["broker"]["reconnects"], 1, "{body}");
    // The retry with the same key publishes once; a second retry is answered as a duplicate.
    let first = call(node_a.addr, "POST", "/api/publish", Some(&keyed)).await;
    assert_eq!(first.get("duplicate"), None, "{first}");
    let again = call(node_a.addr, "POST", "/api/publish", Some(&keyed)).await;
    assert_eq!(
        (&again["duplicate"], &again["offset"]),
        (&json!(true), &first["offset"]),
        "{again}"
    );
    let metrics = call_text(node_a.addr, "/metrics").await;
    for name in [
        "realtime_redis_reconnects_total",
        "realtime_redis_resubscribe_seconds",
        "realtime_redis_pubsub_lag_seconds",
        "realtime_redis_gaps_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    drop(alice);
    support::stop(node_a).await;
}

/// `GET <path>` with the API key; the body as text.
async fn call_text(addr: SocketAddr, path: &str) -> String {
    let auth = format!("Bearer {API_KEY}");
    let response = support::http(addr, "GET", path, &[("Authorization", &auth)], b"").await;
    assert_eq!(response.status, 200, "{path}: {}", response.text());
    response.text()
}
