//! The streams part of the backend HTTP API on the real stack (service, in-memory broker
//! and presence, JWT verifier): `POST /api/subscribe` then a topic publish that reaches
//! every tab with its position, idempotent publishes, presence of users and topics,
//! `POST /api/revoke` and `POST /api/unsubscribe`, each checked from the clients' side.

use std::net::SocketAddr;
use std::time::Duration;

use realtime_testkit::jwt::{Claims, now_unix_secs};
use serde_json::{Value, json};

use crate::support::{self, API_KEY, HttpResponse, Ws};

/// `POST <path>` of `body` with the test key.
async fn post(addr: SocketAddr, path: &str, body: &Value) -> HttpResponse {
    let auth = format!("Bearer {API_KEY}");
    support::http(addr, "POST", path, &[("Authorization", &auth)], body.to_string().as_bytes())
        .await
}

/// `POST <path>` that must answer 200; its JSON.
async fn post_ok(addr: SocketAddr, path: &str, body: &Value) -> Value {
    let response = post(addr, path, body).await;
    assert_eq!(response.status, 200, "{path}: {}", response.text());
    response.json()
}

/// `GET <path>` with the test key.
async fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    let auth = format!("Bearer {API_KEY}");
    support::http(addr, "GET", path, &[("Authorization", &auth)], b"").await
}

/// Polls `GET <path>` until it answers 200 with `expected`, bounded by `WAIT`.
async fn poll_until(addr: SocketAddr, path: &str, expected: &Value) {
    let mut last = Value::Null;
    let wait = async {
        loop {
            let response = get(addr, path).await;
            assert_eq!(response.status, 200, "{path}: {}", response.text());
            last = response.json();
            if last == *expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(support::WAIT, wait).await.is_err() {
        panic!("{path} never answered {expected}; last {last}");
    }
}

/// Connects `user` with a valid token.
async fn tab(addr: SocketAddr, user: &str) -> Ws {
    support::connect(addr, &support::token(user, &[])).await.0
}

/// The next frame, which must be `subscribed` to `topic`; its payload.
async fn expect_subscribed(ws: &mut Ws, topic: &str) -> Value {
    let frame = support::next_json(ws).await;
    assert_eq!(frame["type"], "subscribed", "{frame}");
    assert_eq!(frame["payload"]["topic"], topic, "{frame}");
    frame["payload"].clone()
}

/// Nothing else is queued for `ws`: a ping is answered next.
async fn nothing_more(ws: &mut Ws) {
    support::send_text(ws, r#"{"type":"ping"}"#).await;
    let next = support::next_json(ws).await;
    assert_eq!(next["type"], "pong", "expected nothing before the pong, got {next}");
}

#[tokio::test]
async fn a_topic_publish_after_a_backend_subscribe_reaches_both_tabs_with_its_position() {
    let stack = support::start_stack(support::transport()).await;
    let mut tab1 = tab(stack.addr, "alice").await;
    let mut tab2 = tab(stack.addr, "alice").await;
    let mut bob = tab(stack.addr, "bob").await;
    let subscribe = json!({"target": {"user": "alice"}, "topic": "chat:room-1"});
    assert_eq!(post_ok(stack.addr, "/api/subscribe", &subscribe).await, json!({"subscribed": 2}));
    let mut epochs = Vec::new();
    for ws in [&mut tab1, &mut tab2] {
        let subscribed = expect_subscribed(ws, "chat:room-1").await;
        assert_eq!(subscribed["offset"], 0, "{subscribed}");
        epochs.push(subscribed["epoch"].clone());
    }

    let body = json!({
        "target": {"topic": "chat:room-1"},
        "message": {"type": "chat.message", "payload": {"text": "hi"}},
    });
    let receipt = post_ok(stack.addr, "/api/publish", &body).await;
    let epoch = receipt["epoch"].as_str().unwrap_or_else(|| panic!("no epoch: {receipt}"));
    assert_eq!(
        receipt,
        json!({"delivered": 2, "stream": "topic:chat:room-1", "offset": 1, "epoch": epoch})
    );
    assert!(receipt.get("duplicate").is_none());
    assert_eq!(epochs, [json!(epoch), json!(epoch)]);
    for ws in [&mut tab1, &mut tab2] {
        assert_eq!(
            support::next_json(ws).await,
            json!({
                "type": "chat.message", "payload": {"text": "hi"},
                "stream": "topic:chat:room-1", "offset": 1, "epoch": epoch,
            })
        );
    }
    nothing_more(&mut bob).await;
    stack.stop().await;
}

#[tokio::test]
async fn a_retried_idempotency_key_gets_the_first_offset_and_delivers_once() {
    let stack = support::start_stack(support::transport()).await;
    let mut ws = tab(stack.addr, "alice").await;
    // A topic stream: it is opened by the subscribe, whatever the session does with the
    // connection's implicit streams.
    let subscribe = json!({"target": {"user": "alice"}, "topic": "orders"});
    assert_eq!(post_ok(stack.addr, "/api/subscribe", &subscribe).await, json!({"subscribed": 1}));
    expect_subscribed(&mut ws, "orders").await;
    let body = json!({
        "target": {"topic": "orders"},
        "message": {"type": "order.paid", "payload": {"order": 42}},
        "idempotency_key": "order-42-paid",
    });
    let first = post_ok(stack.addr, "/api/publish", &body).await;
    assert_eq!(first["delivered"], 1, "{first}");
    assert_eq!(first["stream"], "topic:orders");
    assert!(first.get("duplicate").is_none(), "{first}");
    let offset = first["offset"].as_u64().unwrap_or_else(|| panic!("no offset: {first}"));
    let second = post_ok(stack.addr, "/api/publish", &body).await;
    assert_eq!(second["duplicate"], true, "{second}");
    assert_eq!(second["offset"], offset);
    assert_eq!(second["epoch"], first["epoch"]);
    assert_eq!(second["stream"], "topic:orders");

    let message = support::next_json(&mut ws).await;
    assert_eq!(message["type"], "order.paid");
    assert_eq!(message["offset"], offset);
    // The retry delivered nothing: the next frame is the next publication.
    let next = json!({"target": {"topic": "orders"}, "message": {"type": "order.shipped"}});
    let receipt = post_ok(stack.addr, "/api/publish", &next).await;
    assert_eq!(receipt["offset"], offset + 1);
    let message = support::next_json(&mut ws).await;
    assert_eq!(message["type"], "order.shipped", "{message}");
    assert_eq!(message["offset"], offset + 1);
    stack.stop().await;
}

#[tokio::test]
async fn presence_follows_tabs_and_topic_members() {
    let stack = support::start_stack(support::transport()).await;
    let tab1 = tab(stack.addr, "carol").await;
    let _tab2 = tab(stack.addr, "carol").await;
    let mut dave = tab(stack.addr, "dave").await;
    let carol = "/api/presence/user/carol";
    poll_until(stack.addr, carol, &json!({"user_id": "carol", "online": true, "connections": 2}))
        .await;
    drop(tab1);
    poll_until(stack.addr, carol, &json!({"user_id": "carol", "online": true, "connections": 1}))
        .await;
    assert_eq!(
        get(stack.addr, "/api/presence/user/nobody").await.json(),
        json!({"user_id": "nobody", "online": false, "connections": 0})
    );

    let room = "/api/presence/topic/room:9";
    assert_eq!(get(stack.addr, room).await.json(), json!({"topic": "room:9", "members": []}));
    for user in ["carol", "dave"] {
        let subscribe = json!({"target": {"user": user}, "topic": "room:9"});
        assert_eq!(
            post_ok(stack.addr, "/api/subscribe", &subscribe).await,
            json!({"subscribed": 1})
        );
    }
    expect_subscribed(&mut dave, "room:9").await;
    poll_until(
        stack.addr,
        room,
        &json!({"topic": "room:9", "members": [
            {"user_id": "carol", "connections": 1},
            {"user_id": "dave", "connections": 1},
        ]}),
    )
    .await;
    // Invalid names in the path are refused, saying so.
    let invalid = get(stack.addr, "/api/presence/topic/room%209").await;
    assert_eq!(invalid.status, 422, "{}", invalid.text());
    assert!(invalid.text().contains("invalid topic in the path"), "{}", invalid.text());
    stack.stop().await;
}

#[tokio::test]
async fn revoke_closes_the_users_connections_and_refuses_the_old_token() {
    let stack = support::start_stack(support::transport()).await;
    let now = now_unix_secs();
    let old = Claims::new("erin").iat(now - 10).exp(now + 3600).mint(support::SECRET);
    let (mut tab1, _) = support::connect(stack.addr, &old).await;
    let (mut tab2, _) = support::connect(stack.addr, &old).await;
    let mut frank = tab(stack.addr, "frank").await;

    let revoke = json!({"user": "erin", "issued_before": now});
    assert_eq!(post_ok(stack.addr, "/api/revoke", &revoke).await, json!({"closed": 2}));
    for ws in [&mut tab1, &mut tab2] {
        let (code, reason) = support::expect_close_then_end(ws).await;
        assert_eq!((code, reason.as_str()), (4005, "token revoked"));
    }
    assert_eq!(stack.api.connection_count(), 1);
    assert!(support::try_connect(stack.addr, Some(&old), None).await.is_err());
    nothing_more(&mut frank).await;
    stack.stop().await;
}

#[tokio::test]
async fn a_backend_unsubscribe_reaches_the_client_and_stops_the_topic() {
    let stack = support::start_stack(support::transport()).await;
    let mut ws = tab(stack.addr, "gina").await;
    let body = json!({"target": {"user": "gina"}, "topic": "orders"});
    assert_eq!(post_ok(stack.addr, "/api/subscribe", &body).await, json!({"subscribed": 1}));
    expect_subscribed(&mut ws, "orders").await;
    assert_eq!(post_ok(stack.addr, "/api/unsubscribe", &body).await, json!({"unsubscribed": 1}));
    assert_eq!(
        support::next_json(&mut ws).await,
        json!({"type": "unsubscribed", "payload": {"topic": "orders"}})
    );
    let publish = json!({"target": {"topic": "orders"}, "message": {"type": "n"}});
    assert_eq!(post_ok(stack.addr, "/api/publish", &publish).await["delivered"], 0);
    assert_eq!(post_ok(stack.addr, "/api/unsubscribe", &body).await, json!({"unsubscribed": 0}));
    nothing_more(&mut ws).await;
    stack.stop().await;
}

#[tokio::test]
async fn a_connection_at_its_topic_limit_gets_409() {
    let service = realtime_service::ServiceConfig {
        max_topics_per_connection: 1,
        ..realtime_service::ServiceConfig::default()
    };
    let stack = support::start_stack_with(support::transport(), service, None).await;
    let (mut ws, id) = support::connect(stack.addr, &support::token("hana", &[])).await;
    let first = json!({"target": {"connection": id.to_string()}, "topic": "a"});
    assert_eq!(post_ok(stack.addr, "/api/subscribe", &first).await, json!({"subscribed": 1}));
    expect_subscribed(&mut ws, "a").await;
    let second = json!({"target": {"connection": id.to_string()}, "topic": "b"});
    let refused = post(stack.addr, "/api/subscribe", &second).await;
    assert_eq!(refused.status, 409, "{}", refused.text());
    assert_eq!(
        refused.json(),
        json!({"error": "the connection holds the most topics allowed (1)"})
    );
    // For a user, a connection at its limit is skipped, not an error.
    let user = json!({"target": {"user": "hana"}, "topic": "b"});
    assert_eq!(post_ok(stack.addr, "/api/subscribe", &user).await, json!({"subscribed": 0}));
    nothing_more(&mut ws).await;
    stack.stop().await;
}
