//! The streams part of the backend HTTP API against the fake service: publish receipts
//! (position, duplicate, topic targets), server-side subscribe and unsubscribe, revoke and
//! presence; the key check, 400/422/409/503 with texts that say what is wrong and never
//! leak the service's error detail, and topic names with `:` (or `/`) in presence paths.

use serde_json::{Value, json};

use super::support::{self, API_KEY, get, http, post, test_config};

/// The routes under test, with a body that would succeed.
fn routes() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        ("POST", "/api/subscribe", json!({"target": {"user": "alice"}, "topic": "orders"})),
        ("POST", "/api/unsubscribe", json!({"target": {"user": "alice"}, "topic": "orders"})),
        ("POST", "/api/revoke", json!({"user": "alice", "issued_before": 1_767_225_600})),
        ("GET", "/api/presence/user/alice", Value::Null),
        ("GET", "/api/presence/topic/chat:room-1", Value::Null),
        ("GET", "/api/presence/online", Value::Null),
    ]
}

#[tokio::test]
async fn every_route_needs_the_api_key() {
    let server = support::start(test_config()).await;
    let wrong = format!("Bearer {API_KEY}x");
    for (method, path, body) in routes() {
        let body = if body.is_null() { String::new() } else { body.to_string() };
        for headers in [&[][..], &[("Authorization", wrong.as_str())][..]] {
            let response = http(server.addr, method, path, headers, body.as_bytes()).await;
            assert_eq!(response.status, 401, "{method} {path} {headers:?}");
            assert_eq!(response.json(), json!({"error": "unauthorized"}));
            assert!(!response.text().contains(API_KEY));
        }
        let auth = format!("Bearer {API_KEY}");
        let response =
            http(server.addr, method, path, &[("Authorization", &auth)], body.as_bytes()).await;
        assert_eq!(response.status, 200, "{method} {path}: {}", response.text());
    }
    // Only the requests with the key reached the service.
    assert_eq!(
        server.api.backend_calls(),
        [
            "subscribe user:alice orders",
            "unsubscribe user:alice orders",
            "revoke alice 1767225600000",
            "topic presence chat:room-1"
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn publish_replies_with_the_position_and_duplicate_only_for_a_retried_key() {
    let server = support::start(test_config()).await;
    let (mut ws, _) = support::connect(server.addr, "good.alice").await;
    let message = json!({"type": "note", "payload": {"n": 1}});
    let plain =
        support::publish(server.addr, &json!({"target": {"user": "alice"}, "message": message}))
            .await;
    assert_eq!(plain.json(), json!({"delivered": 1}));
    let keyed = json!({"target": {"user": "alice"}, "message": message, "idempotency_key": "k-1"});
    let first = support::publish(server.addr, &keyed).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(
        first.json(),
        json!({"delivered": 1, "stream": "user:alice", "offset": 7, "epoch": "fake1"})
    );
    let retried =
        json!({"target": {"user": "alice"}, "message": message, "idempotency_key": "retried"});
    assert_eq!(
        support::publish(server.addr, &retried).await.json(),
        json!({
            "delivered": 1, "stream": "user:alice", "offset": 7, "epoch": "fake1",
            "duplicate": true
        })
    );
    assert_eq!(server.api.backend_calls(), ["publish key k-1", "publish key retried"]);
    // A topic target is accepted (nobody of the fake's is subscribed).
    let to_topic = json!({"target": {"topic": "orders"}, "message": message});
    assert_eq!(support::publish(server.addr, &to_topic).await.json(), json!({"delivered": 0}));
    // An unavailable service is 503, without its detail.
    let down =
        support::publish(server.addr, &json!({"target": {"topic": "down"}, "message": message}))
            .await;
    assert_eq!(down.status, 503);
    assert_eq!(down.json(), json!({"error": "publish unavailable"}));
    let bad_key = json!({"target": "broadcast", "message": message, "idempotency_key": ""});
    let refused = support::publish(server.addr, &bad_key).await;
    assert_eq!(refused.status, 422);
    assert!(refused.text().contains("idempotency_key"), "{}", refused.text());
    for _ in 0..3 {
        assert_eq!(support::next_json(&mut ws).await["type"], "note");
    }
    server.stop().await;
}

#[tokio::test]
async fn subscribe_and_unsubscribe_hand_the_target_to_the_service_and_count() {
    let server = support::start(test_config()).await;
    let (_a1, a1_id) = support::connect(server.addr, "good.alice").await;
    let (_a2, _) = support::connect(server.addr, "good.alice").await;
    let user = json!({"target": {"user": "alice"}, "topic": "chat:room-1"});
    let response = post(server.addr, "/api/subscribe", &user).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json(), json!({"subscribed": 2}));
    let one = json!({"target": {"connection": a1_id.to_string()}, "topic": "orders"});
    assert_eq!(post(server.addr, "/api/subscribe", &one).await.json(), json!({"subscribed": 1}));
    assert_eq!(
        post(server.addr, "/api/unsubscribe", &user).await.json(),
        json!({"unsubscribed": 2})
    );
    let nobody = json!({"target": {"user": "nobody"}, "topic": "orders"});
    assert_eq!(
        post(server.addr, "/api/unsubscribe", &nobody).await.json(),
        json!({"unsubscribed": 0})
    );
    assert_eq!(
        server.api.backend_calls(),
        [
            "subscribe user:alice chat:room-1".to_owned(),
            format!("subscribe connection:{a1_id} orders"),
            "unsubscribe user:alice chat:room-1".to_owned(),
            "unsubscribe user:nobody orders".to_owned(),
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn subscribe_refusals_say_what_is_wrong() {
    let server = support::start(test_config()).await;
    let full =
        post(server.addr, "/api/subscribe", &json!({"target": {"user": "alice"}, "topic": "full"}))
            .await;
    assert_eq!(full.status, 409);
    assert_eq!(full.json(), json!({"error": "the connection holds the most topics allowed (2)"}));
    let down =
        post(server.addr, "/api/subscribe", &json!({"target": {"user": "alice"}, "topic": "down"}))
            .await;
    assert_eq!(down.status, 503);
    assert_eq!(down.json(), json!({"error": "subscribe unavailable"}));
    assert!(!down.text().contains("hunter2"));
    let auth = format!("Bearer {API_KEY}");
    let cases: [(&str, &[u8], u16, &str); 6] = [
        ("/api/subscribe", b"{nope", 400, "malformed JSON"),
        ("/api/subscribe", br#"{"target":{"user":"a"}}"#, 422, "\"topic\" is missing"),
        ("/api/subscribe", br#"{"target":"broadcast","topic":"t"}"#, 422, "\"target\" must be"),
        ("/api/unsubscribe", br#"{"target":{"role":"r"},"topic":"t"}"#, 422, "\"target\" must be"),
        ("/api/unsubscribe", br#"{"target":{"user":"a"},"topic":"a b"}"#, 422, "topic"),
        ("/api/unsubscribe", br#"{"target":{"user":"a"},"topic":7}"#, 422, "\"topic\" must be"),
    ];
    for (path, body, status, says) in cases {
        let response = http(server.addr, "POST", path, &[("Authorization", &auth)], body).await;
        assert_eq!(response.status, status, "{path} {}", String::from_utf8_lossy(body));
        let error = response.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(error.contains(says), "{path}: {error}");
    }
    // Only the two well-formed requests reached the service.
    assert_eq!(server.api.backend_calls().len(), 2);
    server.stop().await;
}

#[tokio::test]
async fn revoke_counts_the_closed_connections_and_takes_seconds() {
    let server = support::start(test_config()).await;
    let (_a1, _) = support::connect(server.addr, "good.alice").await;
    let (_a2, _) = support::connect(server.addr, "good.alice").await;
    let response =
        post(server.addr, "/api/revoke", &json!({"user": "alice", "issued_before": 1_767_225_600}))
            .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json(), json!({"closed": 2}));
    assert_eq!(server.api.backend_calls(), ["revoke alice 1767225600000"]);
    let down = post(server.addr, "/api/revoke", &json!({"user": "down", "issued_before": 1})).await;
    assert_eq!(down.status, 503);
    assert_eq!(down.json(), json!({"error": "revoke unavailable"}));
    for (body, says) in [
        (json!({"issued_before": 1}), "\"user\" is missing"),
        (json!({"user": "alice"}), "\"issued_before\" is missing"),
        (json!({"user": "alice", "issued_before": -1}), "issued_before"),
        (json!({"user": 3, "issued_before": 1}), "\"user\" must be"),
    ] {
        let refused = post(server.addr, "/api/revoke", &body).await;
        assert_eq!(refused.status, 422, "{body}");
        assert!(refused.json()["error"].as_str().is_some_and(|e| e.contains(says)), "{body}");
    }
    server.stop().await;
}

#[tokio::test]
async fn presence_of_a_user_and_of_a_topic() {
    let server = support::start(test_config()).await;
    let (_c1, _) = support::connect(server.addr, "good.carol").await;
    let (_c2, _) = support::connect(server.addr, "good.carol").await;
    let carol = get(server.addr, "/api/presence/user/carol").await;
    assert_eq!(carol.status, 200, "{}", carol.text());
    assert_eq!(carol.json(), json!({"user_id": "carol", "online": true, "connections": 2}));
    assert_eq!(
        get(server.addr, "/api/presence/user/nobody").await.json(),
        json!({"user_id": "nobody", "online": false, "connections": 0})
    );
    // Percent-encoded ids arrive decoded.
    assert_eq!(
        get(server.addr, "/api/presence/user/auth0%7C42").await.json()["user_id"],
        "auth0|42"
    );
    // The online count (this fake service: its connection count).
    assert_eq!(get(server.addr, "/api/presence/online").await.json(), json!({"connections": 2}));
    assert_eq!(get(server.addr, "/api/presence/online/x").await.status, 404);
    let busy = get(server.addr, "/api/presence/topic/busy").await;
    assert_eq!(
        busy.json(),
        json!({"topic": "busy", "members": [
            {"user_id": "carol", "connections": 2},
            {"user_id": "dave", "connections": 1},
        ]})
    );
    // `:` and `/` are topic characters: the whole rest of the path is the name.
    for (path, name) in [
        ("/api/presence/topic/chat:room-1", "chat:room-1"),
        ("/api/presence/topic/chat%3Aroom-1", "chat:room-1"),
        ("/api/presence/topic/org/7/orders", "org/7/orders"),
    ] {
        let response = get(server.addr, path).await;
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        assert_eq!(response.json(), json!({"topic": name, "members": []}), "{path}");
    }
    assert_eq!(
        server.api.backend_calls(),
        [
            "topic presence busy",
            "topic presence chat:room-1",
            "topic presence chat:room-1",
            "topic presence org/7/orders"
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn presence_refusals() {
    let server = support::start(test_config()).await;
    let cases = [
        ("/api/presence/topic/a%20b", 422, "invalid topic in the path"),
        ("/api/presence/topic/", 422, "invalid topic in the path"),
        ("/api/presence/user/", 422, "invalid user id in the path"),
        ("/api/presence/user/a%0Ab", 422, "invalid user id in the path"),
        ("/api/presence/user/a%zz", 400, "percent-encoding"),
        ("/api/presence/user/down", 503, "presence unavailable"),
        ("/api/presence/topic/down", 503, "presence unavailable"),
    ];
    for (path, status, says) in cases {
        let response = get(server.addr, path).await;
        assert_eq!(response.status, status, "{path}: {}", response.text());
        let error = response.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(error.contains(says), "{path}: {error}");
        assert!(!error.contains("hunter2"), "{path}: {error}");
    }
    let post = post(server.addr, "/api/presence/user/carol", &json!({})).await;
    assert_eq!(post.status, 405);
    let unknown = get(server.addr, "/api/presence/room/x").await;
    assert_eq!(unknown.status, 404);
    server.stop().await;
}
