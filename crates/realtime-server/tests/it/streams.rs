//! Streams through the real stack (service, in-memory broker, JWT verifier without leeway,
//! warp transport): positions in `connected` and on every publication, recovery with `since`
//! at the upgrade and in `subscribe`, topic subscriptions allowed by the `topics` claim,
//! in-band token refresh, and revocation.

use std::net::SocketAddr;
use std::time::Duration;

use realtime_auth_jwt::JwtConfig;
use realtime_core::{Envelope, TopicName, UnixMillis, UserId};
use realtime_ports::RealtimeApi;
use realtime_service::ServiceConfig;
use realtime_testkit::jwt::{Claims, now_unix_secs};
use realtime_testkit::ws::{Connect, percent_encode};
use serde_json::{Value, json};

use crate::support::{self, SECRET, Stack, Ws, next_json, send_text};

/// A stack whose verifier has no leeway: a connection closes at its token's `exp`.
async fn stack(service: ServiceConfig) -> Stack {
    let jwt = JwtConfig::hs256(SECRET.to_vec()).with_leeway(Duration::ZERO);
    support::start_stack_verifying(support::transport(), service, None, jwt).await
}

/// A token for `user` valid for an hour, allowed `topics`.
fn token(user: &str, topics: &[&str]) -> String {
    Claims::new(user).topics(topics).exp(now_unix_secs() + 3600).mint(SECRET)
}

/// Opens a WebSocket with `token` and, if given, `since`; returns it with its `connected`
/// frame, or the refusal's status.
async fn open(addr: SocketAddr, token: &str, since: Option<&Value>) -> Result<(Ws, Value), u16> {
    let query = since.map(realtime_testkit::ws::since_query);
    let options =
        Connect { token_query: Some(token), query: query.as_deref(), ..Connect::default() };
    let (mut ws, _) = realtime_testkit::ws::try_connect(addr, options).await?;
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["type"], "connected", "{hello}");
    Ok((ws, hello))
}

async fn open_ok(addr: SocketAddr, token: &str, since: Option<&Value>) -> (Ws, Value) {
    open(addr, token, since).await.unwrap_or_else(|status| panic!("refused with {status}"))
}

/// The raw answer to an upgrade request for `/ws?{query}`.
async fn upgrade_answer(addr: SocketAddr, query: &str) -> support::HttpResponse {
    let headers = [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    support::http(addr, "GET", &format!("/ws?{query}"), &headers, b"").await
}

fn envelope(kind: &str, payload: Value) -> Envelope {
    Envelope::from_parts(kind, payload).unwrap_or_else(|e| panic!("{e}"))
}

fn user(raw: &str) -> UserId {
    UserId::new(raw).unwrap_or_else(|e| panic!("{e}"))
}

fn topic(raw: &str) -> TopicName {
    TopicName::new(raw).unwrap_or_else(|e| panic!("{e}"))
}

async fn to_user(api: &dyn RealtimeApi, name: &str, i: u64) {
    let sent = api.send_to_user(&user(name), &envelope("n", json!({ "i": i }))).await;
    sent.unwrap_or_else(|e| panic!("{e}"));
}

async fn to_topic(api: &dyn RealtimeApi, name: &str, i: u64) {
    let sent = api.send_to_topic(&topic(name), &envelope("t", json!({ "i": i }))).await;
    sent.unwrap_or_else(|e| panic!("{e}"));
}

/// Sends a ping with `id` and requires the next frame to be its pong: nothing else was
/// queued before it, and the connection is open.
async fn ping_pong(ws: &mut Ws, id: &str) {
    send_text(ws, &json!({"type": "ping", "id": id}).to_string()).await;
    let pong = next_json(ws).await;
    assert_eq!((&pong["type"], &pong["id"]), (&json!("pong"), &json!(id)), "{pong}");
}

async fn request(ws: &mut Ws, frame: Value) -> Value {
    send_text(ws, &frame.to_string()).await;
    next_json(ws).await
}

fn offset(value: &Value) -> u64 {
    value["offset"].as_u64().unwrap_or_else(|| panic!("no offset: {value}"))
}

/// Closes `ws` and waits until the server has unregistered every connection.
async fn leave(stack: &Stack, mut ws: Ws) {
    ws.close(None).await.unwrap_or_else(|e| panic!("{e}"));
    drop(ws);
    let api = stack.api.clone();
    support::eventually("every connection gone", move || api.connection_count() == 0).await;
}

#[tokio::test]
async fn connected_carries_every_stream_position_and_the_expiry() {
    let stack = stack(ServiceConfig::default()).await;
    let exp = now_unix_secs() + 3600;
    let token = Claims::new("alice").roles(&["admin"]).exp(exp).mint(SECRET);
    let (mut ws, hello) = open_ok(stack.addr, &token, None).await;
    let payload = &hello["payload"];
    assert_eq!(payload["user_id"], "alice", "{hello}");
    assert_eq!(payload["roles"], json!(["admin"]), "{hello}");
    assert!(payload["connection_id"].is_string(), "{hello}");
    assert_eq!(payload["expires_at"], json!(exp), "{hello}");
    let streams = payload["streams"].as_object().unwrap_or_else(|| panic!("{hello}"));
    let mut names: Vec<&str> = streams.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["broadcast", "role:admin", "user:alice"], "{hello}");
    for state in streams.values() {
        assert!(state["epoch"].as_str().is_some_and(|e| !e.is_empty()), "{hello}");
        assert_eq!(state["recovered"], false, "{hello}");
        offset(state);
    }

    // A publication to the user carries its stream, the next offset and the same epoch.
    let before = &streams["user:alice"];
    to_user(&*stack.api, "alice", 1).await;
    let got = next_json(&mut ws).await;
    assert_eq!((&got["type"], &got["payload"]["i"]), (&json!("n"), &json!(1)), "{got}");
    assert_eq!(got["stream"], "user:alice", "{got}");
    assert_eq!(got["epoch"], before["epoch"], "{got}");
    assert_eq!(offset(&got), offset(before) + 1, "{got}");
    stack.stop().await;
}

#[tokio::test]
async fn a_reconnect_with_since_recovers_what_was_missed_in_order_and_once() {
    let stack = stack(ServiceConfig::default()).await;
    let token = token("alice", &[]);
    let (mut ws, _) = open_ok(stack.addr, &token, None).await;
    to_user(&*stack.api, "alice", 0).await;
    let last = next_json(&mut ws).await;
    leave(&stack, ws).await;
    for i in 1..=3 {
        to_user(&*stack.api, "alice", i).await;
    }

    let since = json!({"user:alice": {"epoch": last["epoch"], "offset": offset(&last)}});
    let (mut ws, hello) = open_ok(stack.addr, &token, Some(&since)).await;
    let state = &hello["payload"]["streams"]["user:alice"];
    assert_eq!(state["recovered"], true, "{hello}");
    assert_eq!(state["epoch"], last["epoch"], "{hello}");
    assert_eq!(offset(state), offset(&last) + 3, "{hello}");
    assert_eq!(hello["payload"]["streams"]["broadcast"]["recovered"], false, "{hello}");
    for i in 1..=3 {
        let got = next_json(&mut ws).await;
        assert_eq!(got["payload"]["i"], i, "{got}");
        assert_eq!(offset(&got), offset(&last) + i, "{got}");
    }
    // Nothing else was queued: no duplicate of the replay.
    ping_pong(&mut ws, "after-replay").await;
    to_user(&*stack.api, "alice", 4).await;
    assert_eq!(offset(&next_json(&mut ws).await), offset(&last) + 4);
    stack.stop().await;
}

#[tokio::test]
async fn a_since_with_another_epoch_is_not_recovered_and_replays_nothing() {
    let stack = stack(ServiceConfig::default()).await;
    let token = token("alice", &[]);
    to_user(&*stack.api, "alice", 1).await;
    let since = json!({"user:alice": {"epoch": "someotherepoch", "offset": 0}});
    let (mut ws, hello) = open_ok(stack.addr, &token, Some(&since)).await;
    assert_eq!(hello["payload"]["streams"]["user:alice"]["recovered"], false, "{hello}");
    ping_pong(&mut ws, "nothing-replayed").await;
    stack.stop().await;
}

#[tokio::test]
async fn subscribes_allowed_by_the_topics_claim_exactly_or_by_prefix() {
    let stack = stack(ServiceConfig::default()).await;
    let (mut ws, _) = open_ok(stack.addr, &token("alice", &["orders", "chat:*"]), None).await;
    for (id, name) in [(json!(1), "orders"), (json!("s-2"), "chat:room-7")] {
        let reply =
            request(&mut ws, json!({"type": "subscribe", "id": id, "payload": {"topic": name}}))
                .await;
        assert_eq!((&reply["type"], &reply["id"]), (&json!("subscribed"), &id), "{reply}");
        assert_eq!(reply["payload"]["topic"], name, "{reply}");
        assert_eq!(reply["payload"]["recovered"], false, "{reply}");
        to_topic(&*stack.api, name, 7).await;
        let got = next_json(&mut ws).await;
        assert_eq!((&got["type"], &got["payload"]["i"]), (&json!("t"), &json!(7)), "{got}");
        assert_eq!(got["stream"], format!("topic:{name}"), "{got}");
        assert_eq!(offset(&got), offset(&reply["payload"]) + 1, "{got}");
    }
    // Published over HTTP too.
    let body = json!({"target": {"topic": "orders"}, "message": {"type": "h"}});
    assert_eq!(support::delivered(stack.addr, &body).await, 1);
    assert_eq!(next_json(&mut ws).await["type"], "h");
    stack.stop().await;
}

/// The application's hook, asked only for topics the claim does not allow: it allows
/// `org:<user>:*` topics of the connection's own user.
struct OwnOrgTopics(std::sync::atomic::AtomicUsize);

#[async_trait::async_trait]
impl realtime_ports::SubscribeAuthorizer for OwnOrgTopics {
    async fn authorize(
        &self,
        connection: &realtime_core::Connection,
        topic: &realtime_core::TopicName,
    ) -> bool {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        topic.as_str().starts_with(&format!("org:{}:", connection.user_id))
    }
}

#[tokio::test]
async fn the_subscribe_hook_decides_what_the_claim_does_not_allow() {
    let hook = std::sync::Arc::new(OwnOrgTopics(std::sync::atomic::AtomicUsize::new(0)));
    let parts = support::StackParts {
        authorizer: Some(hook.clone() as std::sync::Arc<dyn realtime_ports::SubscribeAuthorizer>),
        ..support::StackParts::default()
    };
    let stack = parts.start().await;
    let (mut ws, _) = open_ok(stack.addr, &token("alice", &["orders"]), None).await;
    let subscribe =
        |id: u64, name: &str| json!({"type": "subscribe", "id": id, "payload": {"topic": name}});
    let reply = request(&mut ws, subscribe(1, "orders")).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    assert_eq!(hook.0.load(std::sync::atomic::Ordering::SeqCst), 0, "the claim sufficed");
    let reply = request(&mut ws, subscribe(2, "org:alice:billing")).await;
    assert_eq!((&reply["type"], &reply["id"]), (&json!("subscribed"), &json!(2)), "{reply}");
    let reply = request(&mut ws, subscribe(3, "org:bob:billing")).await;
    assert_eq!(reply["payload"]["code"], "forbidden", "{reply}");
    assert_eq!(hook.0.load(std::sync::atomic::Ordering::SeqCst), 2);
    to_topic(&*stack.api, "org:alice:billing", 9).await;
    let got = next_json(&mut ws).await;
    assert_eq!(
        (&got["stream"], &got["payload"]["i"]),
        (&json!("topic:org:alice:billing"), &json!(9)),
        "{got}"
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_subscribe_the_token_does_not_allow_is_forbidden_and_the_connection_stays() {
    let stack = stack(ServiceConfig::default()).await;
    let (mut ws, _) = open_ok(stack.addr, &token("alice", &["chat:*"]), None).await;
    for name in ["orders", "chat", "chats:1"] {
        let reply =
            request(&mut ws, json!({"type": "subscribe", "id": 5, "payload": {"topic": name}}))
                .await;
        assert_eq!((&reply["type"], &reply["id"]), (&json!("error"), &json!(5)), "{reply}");
        assert_eq!(reply["payload"]["code"], "forbidden", "{name}: {reply}");
    }
    // Nothing of the topic reaches it.
    to_topic(&*stack.api, "orders", 1).await;
    ping_pong(&mut ws, "still-open").await;
    stack.stop().await;
}

#[tokio::test]
async fn a_subscribe_with_since_recovers_missed_topic_publications() {
    let stack = stack(ServiceConfig::default()).await;
    let (mut ws, _) = open_ok(stack.addr, &token("alice", &["orders"]), None).await;
    let subscribe = json!({"type": "subscribe", "id": 1, "payload": {"topic": "orders"}});
    let first = request(&mut ws, subscribe).await;
    assert_eq!(first["type"], "subscribed", "{first}");
    let unsubscribe = json!({"type": "unsubscribe", "id": 2, "payload": {"topic": "orders"}});
    assert_eq!(request(&mut ws, unsubscribe).await["type"], "unsubscribed");
    for i in 1..=2 {
        to_topic(&*stack.api, "orders", i).await;
    }
    let since = json!({"epoch": first["payload"]["epoch"], "offset": offset(&first["payload"])});
    let again =
        json!({"type": "subscribe", "id": 3, "payload": {"topic": "orders", "since": since}});
    let reply = request(&mut ws, again).await;
    assert_eq!((&reply["type"], &reply["id"]), (&json!("subscribed"), &json!(3)), "{reply}");
    assert_eq!(reply["payload"]["recovered"], true, "{reply}");
    assert_eq!(offset(&reply["payload"]), offset(&first["payload"]) + 2, "{reply}");
    for i in 1..=2 {
        let got = next_json(&mut ws).await;
        assert_eq!((&got["type"], &got["payload"]["i"]), (&json!("t"), &json!(i)), "{got}");
    }
    ping_pong(&mut ws, "once").await;
    stack.stop().await;
}

#[tokio::test]
async fn after_unsubscribed_nothing_more_comes_from_the_topic() {
    let stack = stack(ServiceConfig::default()).await;
    let (mut ws, _) = open_ok(stack.addr, &token("alice", &["orders"]), None).await;
    let subscribe = json!({"type": "subscribe", "id": 1, "payload": {"topic": "orders"}});
    assert_eq!(request(&mut ws, subscribe).await["type"], "subscribed");
    let unsubscribe = json!({"type": "unsubscribe", "id": "u", "payload": {"topic": "orders"}});
    let reply = request(&mut ws, unsubscribe.clone()).await;
    assert_eq!((&reply["type"], &reply["id"]), (&json!("unsubscribed"), &json!("u")), "{reply}");
    assert_eq!(reply["payload"]["topic"], "orders", "{reply}");
    to_topic(&*stack.api, "orders", 1).await;
    ping_pong(&mut ws, "nothing-more").await;
    let again = request(&mut ws, unsubscribe).await;
    assert_eq!((&again["id"], &again["payload"]["code"]), (&json!("u"), &json!("not_subscribed")));
    stack.stop().await;
}

#[tokio::test]
async fn subscriptions_beyond_the_limit_are_refused() {
    let service = ServiceConfig { max_topics_per_connection: 2, ..ServiceConfig::default() };
    let stack = stack(service).await;
    let (mut ws, _) = open_ok(stack.addr, &token("alice", &["t:*"]), None).await;
    for (i, name) in ["t:1", "t:2"].into_iter().enumerate() {
        let frame = json!({"type": "subscribe", "id": i, "payload": {"topic": name}});
        assert_eq!(request(&mut ws, frame).await["type"], "subscribed");
    }
    let third = json!({"type": "subscribe", "id": 9, "payload": {"topic": "t:3"}});
    let reply = request(&mut ws, third).await;
    assert_eq!((&reply["type"], &reply["id"]), (&json!("error"), &json!(9)), "{reply}");
    assert_eq!(reply["payload"]["code"], "too_many_subscriptions", "{reply}");
    // Subscribing again to one it is in is not a new subscription.
    let again = json!({"type": "subscribe", "id": 10, "payload": {"topic": "t:1"}});
    assert_eq!(request(&mut ws, again).await["type"], "subscribed");
    stack.stop().await;
}

#[tokio::test]
async fn a_topic_name_with_bad_characters_is_an_invalid_message_with_its_id() {
    let stack = stack(ServiceConfig::default()).await;
    let (mut ws, _) = open_ok(stack.addr, &token("alice", &["*"]), None).await;
    for kind in ["subscribe", "unsubscribe"] {
        let frame = json!({"type": kind, "id": "bad", "payload": {"topic": "a b"}});
        let reply = request(&mut ws, frame).await;
        assert_eq!((&reply["type"], &reply["id"]), (&json!("error"), &json!("bad")), "{reply}");
        assert_eq!(reply["payload"]["code"], "invalid_message", "{reply}");
    }
    ping_pong(&mut ws, "open").await;
    stack.stop().await;
}

#[tokio::test]
async fn a_refresh_for_another_user_or_with_a_bad_token_is_refused_without_echoing_it() {
    let stack = stack(ServiceConfig::default()).await;
    let (mut ws, _) = open_ok(stack.addr, &token("alice", &[]), None).await;
    let expired = Claims::new("alice").exp(now_unix_secs() - 60).mint(SECRET);
    for bad in [token("bob", &[]), expired, "not.a.jwt".to_owned()] {
        let frame = json!({"type": "refresh", "id": 4, "payload": {"token": bad}});
        let reply = request(&mut ws, frame).await;
        assert_eq!((&reply["type"], &reply["id"]), (&json!("error"), &json!(4)), "{reply}");
        assert_eq!(reply["payload"]["code"], "invalid_token", "{reply}");
        assert!(!reply.to_string().contains(&bad), "the token was echoed: {reply}");
    }
    ping_pong(&mut ws, "still-open").await;
    stack.stop().await;
}

#[tokio::test]
async fn a_refresh_moves_the_expiry_and_the_topic_grants() {
    let stack = stack(ServiceConfig::default()).await;
    let short = Claims::new("alice").exp(now_unix_secs() + 2).mint(SECRET);
    let (mut refreshed, _) = open_ok(stack.addr, &short, None).await;
    // The same short token without a refresh: the control that the old expiry is real.
    let (mut control, _) = open_ok(stack.addr, &short, None).await;

    let subscribe = json!({"type": "subscribe", "id": 1, "payload": {"topic": "orders"}});
    assert_eq!(request(&mut refreshed, subscribe.clone()).await["payload"]["code"], "forbidden");
    let exp = now_unix_secs() + 60;
    let longer = Claims::new("alice").topics(&["orders"]).exp(exp).mint(SECRET);
    let frame = json!({"type": "refresh", "id": "r", "payload": {"token": longer}});
    let reply = request(&mut refreshed, frame).await;
    assert_eq!((&reply["type"], &reply["id"]), (&json!("refreshed"), &json!("r")), "{reply}");
    assert_eq!(reply["payload"]["expires_at"], json!(exp), "{reply}");
    // The new token's `topics` count for later subscribes.
    assert_eq!(request(&mut refreshed, subscribe).await["type"], "subscribed");

    assert_eq!(support::expect_close(&mut control).await.0, 4001, "the old expiry closes");
    // Past the old expiry for certain (it was at most 2 s after the connect).
    tokio::time::sleep(Duration::from_secs(3)).await;
    ping_pong(&mut refreshed, "outlived").await;
    stack.stop().await;
}

#[tokio::test]
async fn a_bad_since_is_refused_with_400_and_a_text_that_does_not_echo_the_token() {
    let stack = stack(ServiceConfig::default()).await;
    let token = token("alice", &[]);
    let position = json!({"epoch": "e1", "offset": 1});
    // Just over 4 KiB once decoded (and far below the HTTP header limit encoded).
    let oversize = json!({"user:alice": position, "broadcast": "a".repeat(4100)});
    let cases = [
        (percent_encode(&oversize.to_string()), "bytes"),
        (percent_encode("{\"user:alice\":"), "JSON"),
        (percent_encode("[1]"), "object"),
        (
            percent_encode(&json!({"user:alice": {"epoch": "e1", "offset": -1}}).to_string()),
            "user:alice",
        ),
        (
            percent_encode(&json!({"user:alice": {"epoch": "a-b", "offset": 1}}).to_string()),
            "user:alice",
        ),
        (percent_encode(&json!({"nope:x": position}).to_string()), "stream"),
        ("%zz".to_owned(), "since"),
    ];
    for (since, says) in cases {
        let answer = upgrade_answer(stack.addr, &format!("token={token}&since={since}")).await;
        assert_eq!(answer.status, 400, "{since}: {}", answer.text());
        let text = answer.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(text.contains("since") && text.contains(says), "{since}: {text}");
        assert!(!text.contains(&token), "the token was echoed");
    }
    // Through a real client as well, and nothing was registered.
    let malformed = json!({"user:alice": {"offset": 1}});
    assert_eq!(open(stack.addr, &token, Some(&malformed)).await.err(), Some(400));
    assert_eq!(stack.api.connection_count(), 0);
    stack.stop().await;
}

#[tokio::test]
async fn a_revoked_connection_closes_with_4005_and_its_token_is_refused_after() {
    let stack = stack(ServiceConfig::default()).await;
    let now = now_unix_secs();
    let old = Claims::new("alice").iat(now - 10).exp(now + 3600).mint(SECRET);
    let (mut ws, _) = open_ok(stack.addr, &old, None).await;
    let (mut bob, _) = open_ok(stack.addr, &token("bob", &[]), None).await;

    let revoked = stack.api.revoke(&user("alice"), UnixMillis(now * 1000)).await;
    assert_eq!(revoked, Ok(1));
    assert_eq!(support::expect_close_then_end(&mut ws).await, (4005, "token revoked".to_owned()));
    assert_eq!(open(stack.addr, &old, None).await.err(), Some(403));
    let answer = upgrade_answer(stack.addr, &format!("token={old}")).await;
    assert_eq!(answer.status, 403);
    assert!(answer.text().contains("revoked"), "{}", answer.text());
    // A token issued after the revocation is fine; so is another user.
    let newer = Claims::new("alice").iat(now + 1).exp(now + 3600).mint(SECRET);
    let (mut ws, _) = open_ok(stack.addr, &newer, None).await;
    ping_pong(&mut ws, "new-token").await;
    ping_pong(&mut bob, "other-user").await;
    stack.stop().await;
}

/// A stream kind without history, and a topic prefix without history: their messages carry
/// no position and `connected` lists none for them; other topics keep theirs; a message to
/// one connection is no stream at all.
#[tokio::test]
async fn a_stream_kind_without_history_carries_no_position() {
    let broker = realtime_broker_mem::InMemoryBrokerConfig {
        history: realtime_core::HistoryPolicy {
            role: None,
            topic_prefixes: vec![("chat:".to_owned(), None)],
            ..realtime_core::HistoryPolicy::default()
        },
        ..realtime_broker_mem::InMemoryBrokerConfig::default()
    };
    let stack = support::StackParts { broker, ..support::StackParts::default() }.start().await;
    let token = Claims::new("alice").roles(&["ops"]).exp(now_unix_secs() + 3600).mint(SECRET);
    let (mut ws, hello) = open_ok(stack.addr, &token, None).await;
    let streams = &hello["payload"]["streams"];
    assert!(streams["user:alice"]["offset"].is_u64(), "{hello}");
    assert!(streams.get("role:ops").is_none(), "no position for a stream without history: {hello}");
    let ops = realtime_core::Role::new("ops").unwrap_or_else(|e| panic!("{e}"));
    let receipt = stack
        .api
        .publish_with(
            &realtime_core::Target::Role(ops),
            &envelope("r", json!({})),
            &Default::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((receipt.delivered, receipt.position), (1, None));
    let got = next_json(&mut ws).await;
    assert_eq!(got, json!({"type": "r", "payload": {}}), "delivered as published");

    let alice = hello["payload"]["connection_id"].as_str().unwrap_or_default();
    let alice = realtime_core::ConnectionId::parse(alice).unwrap_or_else(|e| panic!("{e}"));
    let one = realtime_core::Target::Connection(alice);
    let receipt =
        stack.api.publish_with(&one, &envelope("c", json!({})), &Default::default()).await;
    let receipt = receipt.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((receipt.delivered, &receipt.stream, &receipt.position), (1, &None, &None));
    assert_eq!(next_json(&mut ws).await, json!({"type": "c", "payload": {}}), "no stream fields");

    for (name, positioned) in [("chat:room", false), ("orders", true)] {
        let target = realtime_core::ConnectionsOf::Connection(alice);
        let subscribed = stack.api.subscribe_connections(&target, &topic(name)).await;
        assert_eq!(subscribed, Ok(1), "{name}");
        let reply = next_json(&mut ws).await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
        assert_eq!(reply["payload"]["offset"].is_u64(), positioned, "{reply}");
        to_topic(&*stack.api, name, 1).await;
        let got = next_json(&mut ws).await;
        assert_eq!(got["payload"]["i"], 1, "{got}");
        assert_eq!(got.get("offset").is_some(), positioned, "{name}: {got}");
    }
    stack.stop().await;
}
