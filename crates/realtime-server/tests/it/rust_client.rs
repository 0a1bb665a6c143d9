//! The Rust client (`realtime-client`) against the real server: messages and topics arrive,
//! it reconnects after the server binary is killed and started again on the same port,
//! recovers what was published while its socket was cut (each message once, in order),
//! refreshes its token in band before expiry, reconnects at once after 4001, and stops on
//! 4005, 4003 and a handshake 403.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use realtime_client::{
    Client, ClientConfig, ClientError, Disconnect, Event, Events, Message, Stop, StreamName,
};
use realtime_testkit::jwt::{Claims, now_unix_secs};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::support::{self, API_KEY, ServerBinary};

/// The bound of every wait for an event (a failure bound, never a timing assertion).
const LONG: Duration = Duration::from_secs(20);

/// A token for `user` that may subscribe to every topic, valid for `secs`.
fn token(user: &str, secs: u64) -> String {
    let now = now_unix_secs();
    Claims::new(user).topics(&["*"]).iat(now).exp(now + secs).mint(support::SECRET)
}

/// A token source for `user` that counts its calls.
fn counting_tokens(
    user: &'static str,
    secs: u64,
) -> (Arc<AtomicUsize>, impl Fn() -> std::future::Ready<Result<String, String>> + Send + Sync) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let source = move || {
        counter.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(token(user, secs)))
    };
    (calls, source)
}

/// Fast backoff for tests.
fn config(addr: SocketAddr) -> ClientConfig {
    let mut config = ClientConfig::new(format!("ws://{addr}/ws"));
    config.min_delay = Duration::from_millis(20);
    config.max_delay = Duration::from_millis(200);
    config.seed = Some(7);
    config
}

/// Reads events (keeping each in `seen`) until one matches; panics on timeout or the end.
async fn until(
    events: &mut Events,
    seen: &mut Vec<Event>,
    what: &str,
    matches: impl Fn(&Event) -> bool,
) -> Event {
    let wait = async {
        while let Some(event) = events.next_event().await {
            seen.push(event.clone());
            if matches(&event) {
                return event;
            }
        }
        panic!("the events ended before {what}: {seen:#?}");
    };
    match tokio::time::timeout(LONG, wait).await {
        Ok(event) => event,
        Err(_) => panic!("no {what} within {LONG:?}: {seen:#?}"),
    }
}

/// Reads events (keeping each in `seen`) until `done(seen)` holds, which may already be.
async fn until_seen(
    events: &mut Events,
    seen: &mut Vec<Event>,
    what: &str,
    done: impl Fn(&[Event]) -> bool,
) {
    let wait = async {
        while !done(seen) {
            match events.next_event().await {
                Some(event) => seen.push(event),
                None => panic!("the events ended before {what}: {seen:#?}"),
            }
        }
    };
    if tokio::time::timeout(LONG, wait).await.is_err() {
        panic!("no {what} within {LONG:?}: {seen:#?}");
    }
}

/// The `n` of the `note` messages of `stream` in `seen`.
fn notes(seen: &[Event], stream: &str) -> Vec<u64> {
    seen.iter()
        .filter_map(|event| match event {
            Event::Message(Message { kind, payload, stream: Some(s), .. })
                if kind == "note" && s.to_string() == stream =>
            {
                payload["n"].as_u64()
            }
            _ => None,
        })
        .collect()
}

fn is_note(event: &Event, stream: &str, n: u64) -> bool {
    notes(std::slice::from_ref(event), stream) == [n]
}

async fn publish(addr: SocketAddr, target: Value, n: u64) {
    let body = json!({"target": target, "message": {"type": "note", "payload": {"n": n}}});
    support::delivered(addr, &body).await;
}

async fn post(addr: SocketAddr, path: &str, body: &Value) -> support::HttpResponse {
    let auth = format!("Bearer {API_KEY}");
    support::http(addr, "POST", path, &[("Authorization", &auth)], body.to_string().as_bytes())
        .await
}

fn stream(raw: &str) -> StreamName {
    StreamName::parse(raw).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn the_rust_client_receives_messages_and_answers_requests() {
    let running = support::start(support::config()).await;
    let (calls, tokens) = counting_tokens("ana", 3600);
    let (client, mut events) =
        Client::start(config(running.addr), tokens).unwrap_or_else(|e| panic!("{e}"));
    let mut seen = Vec::new();
    let hello =
        until(&mut events, &mut seen, "connected", |e| matches!(e, Event::Connected(_))).await;
    let Event::Connected(hello) = hello else { unreachable!() };
    assert_eq!(hello.user_id, "ana");
    assert!(hello.expires_at.is_some());
    assert!(hello.streams.iter().any(|s| s.stream == stream("user:ana")), "{hello:?}");
    assert_eq!(seen[0], Event::Connecting { attempt: 0 });

    publish(running.addr, json!({"user": "ana"}), 1).await;
    let note = until(&mut events, &mut seen, "the note", |e| is_note(e, "user:ana", 1)).await;
    let Event::Message(note) = note else { unreachable!() };
    assert_eq!(note.position.map(|p| p.offset), Some(1));

    client.ping().await.unwrap_or_else(|e| panic!("{e}"));
    // No inbound handler: the refusal comes as an event, with the id `send` returned.
    let sent =
        client.send("chat.say", json!({"text": "hi"})).await.unwrap_or_else(|e| panic!("{e}"));
    let refusal =
        until(&mut events, &mut seen, "the refusal", |e| matches!(e, Event::ServerError { .. }))
            .await;
    assert!(
        matches!(&refusal, Event::ServerError { code, id: Some(id), .. }
            if code == "unsupported_type" && *id == json!(sent)),
        "{refusal:?}"
    );
    // A `request` of an application type settles on its refusal, matched by id.
    assert!(
        matches!(
            client.request("chat.say", json!({})).await,
            Err(ClientError::Refused { code, .. }) if code == "unsupported_type"
        ),
        "a refused request"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    client.close().await;
    until(&mut events, &mut seen, "stopped", |e| *e == Event::Stopped(Stop::Closed)).await;
    assert!(events.next_event().await.is_none(), "events after Stopped");
    assert!(client.is_stopped());
    assert_eq!(client.ping().await, Err(ClientError::Stopped));
    support::eventually("the server saw the close", || running.api.connection_count() == 0).await;
    support::stop(running).await;
}

/// `request` of an application message resolves with the inbound handler's reply, which
/// the server sends with the request's id (the demo handler: `demo.notify` notifies the user
/// and answers `demo.ack`); a refusal by the handler settles it with the refusal.
#[tokio::test]
async fn a_request_to_the_demo_handler_resolves_with_its_reply() {
    let mut server_config = support::config();
    server_config.demo = Some(true);
    let running = support::start(server_config).await;
    let (_, tokens) = counting_tokens("ana", 3600);
    let (client, mut events) =
        Client::start(config(running.addr), tokens).unwrap_or_else(|e| panic!("{e}"));
    let mut seen = Vec::new();
    until(&mut events, &mut seen, "connected", |e| matches!(e, Event::Connected(_))).await;
    let reply = client.request("demo.notify", json!({})).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reply.kind, "demo.ack");
    assert_eq!(reply.payload, json!({"action": "notify", "delivered": 1}));
    // The notification it sent reached the user (this client).
    until(
        &mut events,
        &mut seen,
        "the notification",
        |e| matches!(e, Event::Message(Message { kind, .. }) if kind == "notification"),
    )
    .await;
    // Each of several requests in flight gets its own reply.
    let (topic, job) = tokio::join!(
        client.request("demo.topic", json!({})),
        client.request("demo.job", json!({}))
    );
    let action = |reply: Result<realtime_client::Reply, ClientError>| {
        reply.unwrap_or_else(|e| panic!("{e}")).payload["action"].clone()
    };
    assert_eq!((action(topic), action(job)), (json!("topic"), json!("job")));
    assert!(
        matches!(
            client.request("demo.nothing", json!({})).await,
            Err(ClientError::Refused { code, .. }) if code == "unsupported_type"
        ),
        "an unknown demo type is refused"
    );
    client.close().await;
    support::stop(running).await;
}

#[tokio::test]
async fn the_client_lives_while_its_events_are_read_and_stops_when_all_is_dropped() {
    let running = support::start(support::config()).await;
    let (_, tokens) = counting_tokens("kim", 3600);
    let (client, mut events) =
        Client::start(config(running.addr), tokens).unwrap_or_else(|e| panic!("{e}"));
    let mut seen = Vec::new();
    until(&mut events, &mut seen, "connected", |e| matches!(e, Event::Connected(_))).await;
    // Without a `Client` handle the events still come.
    drop(client);
    publish(running.addr, json!({"user": "kim"}), 1).await;
    until(&mut events, &mut seen, "the note", |e| is_note(e, "user:kim", 1)).await;
    // Without either, the client closes its socket.
    drop(events);
    support::eventually("the socket closed", || running.api.connection_count() == 0).await;
    support::stop(running).await;
}

#[tokio::test]
async fn the_rust_client_subscribes_to_topics_and_gets_their_publications() {
    let running = support::start(support::config()).await;
    let (_, tokens) = counting_tokens("bea", 3600);
    let (client, mut events) =
        Client::start(config(running.addr), tokens).unwrap_or_else(|e| panic!("{e}"));
    let mut seen = Vec::new();
    // Called before the connection is up: it goes out with the first one.
    let orders = client.subscribe("orders").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(orders.topic().as_str(), "orders");
    assert_eq!(orders.position().map(|p| p.offset), Some(0));
    assert!(!orders.recovered());
    for n in 1..=3 {
        publish(running.addr, json!({"topic": "orders"}), n).await;
    }
    until(&mut events, &mut seen, "the third order", |e| is_note(e, "topic:orders", 3)).await;
    assert_eq!(notes(&seen, "topic:orders"), [1, 2, 3]);
    let positions = client.positions().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(positions.get(&stream("topic:orders")).map(|p| p.offset), Some(3));

    orders.unsubscribe().await.unwrap_or_else(|e| panic!("{e}"));
    let body =
        json!({"target": {"topic": "orders"}, "message": {"type": "note", "payload": {"n": 4}}});
    assert_eq!(support::delivered(running.addr, &body).await, 0, "still subscribed");
    assert!(matches!(client.unsubscribe("nope!").await, Err(ClientError::InvalidTopic(_))));
    client.close().await;
    support::stop(running).await;
}

#[tokio::test]
async fn a_refused_subscribe_is_an_error_and_leaves_nothing_behind() {
    let running = support::start(support::config()).await;
    let now = now_unix_secs();
    let narrow = Claims::new("cid").topics(&["chat:*"]).exp(now + 3600).mint(support::SECRET);
    let tokens = move || std::future::ready(Ok::<_, String>(narrow.clone()));
    let (client, _events) =
        Client::start(config(running.addr), tokens).unwrap_or_else(|e| panic!("{e}"));
    match client.subscribe("orders").await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, "forbidden"),
        other => panic!("{other:?}"),
    }
    client.subscribe("chat:7").await.unwrap_or_else(|e| panic!("{e}"));
    let positions = client.positions().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!positions.contains_key(&stream("topic:orders")), "{positions:?}");
    assert!(positions.contains_key(&stream("topic:chat:7")), "{positions:?}");
    client.close().await;
    support::stop(running).await;
}

// ---------------------------------------------------------------- the server binary

#[tokio::test]
async fn the_rust_client_reconnects_after_the_server_binary_is_killed_and_started_again() {
    let mut server = ServerBinary::start(&[]).await;
    let (calls, tokens) = counting_tokens("dan", 3600);
    let (client, mut events) =
        Client::start(config(server.addr), tokens).unwrap_or_else(|e| panic!("{e}"));
    let mut seen = Vec::new();
    until(&mut events, &mut seen, "connected", |e| matches!(e, Event::Connected(_))).await;
    client.subscribe("board").await.unwrap_or_else(|e| panic!("{e}"));
    publish(server.addr, json!({"user": "dan"}), 1).await;
    until(&mut events, &mut seen, "the first note", |e| is_note(e, "user:dan", 1)).await;

    server.kill();
    let lost =
        until(&mut events, &mut seen, "disconnected", |e| matches!(e, Event::Disconnected { .. }))
            .await;
    assert!(
        matches!(&lost, Event::Disconnected { reason: Disconnect::Lost { .. }, .. }),
        "{lost:?}"
    );
    server.spawn().await;
    until(&mut events, &mut seen, "a second connected", |e| matches!(e, Event::Connected(_))).await;
    // The in-memory broker lost its history with the process: the client says so, for its
    // streams and for the topic it resubscribed.
    let topic = until(
        &mut events,
        &mut seen,
        "the topic's verdict",
        |e| matches!(e, Event::Unrecovered { stream, .. } if stream.to_string() == "topic:board"),
    )
    .await;
    assert!(matches!(topic, Event::Unrecovered { .. }));
    let mut unrecovered: Vec<String> = seen
        .iter()
        .filter_map(|e| match e {
            Event::Unrecovered { stream, .. } => Some(stream.to_string()),
            _ => None,
        })
        .collect();
    unrecovered.sort();
    assert_eq!(unrecovered, ["broadcast", "topic:board", "user:dan"]);
    publish(server.addr, json!({"user": "dan"}), 2).await;
    publish(server.addr, json!({"topic": "board"}), 3).await;
    until(&mut events, &mut seen, "the topic note", |e| is_note(e, "topic:board", 3)).await;
    assert_eq!(notes(&seen, "user:dan"), [1, 2]);
    assert!(calls.load(Ordering::SeqCst) >= 2, "a token for each connect");
    client.close().await;
}

// ---------------------------------------------------------------- a network that can be cut

/// A TCP proxy in front of the server: `cut` drops every connection through it and refuses
/// new ones until `restore`, as a network failure would; the server sees nothing of it.
struct Proxy {
    addr: SocketAddr,
    online: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener =
            TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let online = Arc::new(AtomicBool::new(true));
        let links = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (online, links) = (online.clone(), links.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !online.load(Ordering::SeqCst) {
                        continue; // dropped: the client's upgrade fails
                    }
                    let link = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    links.lock().unwrap_or_else(|e| e.into_inner()).push(link);
                }
            }
        });
        Proxy { addr, online, links, task }
    }

    fn cut(&self) {
        self.online.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.online.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

#[tokio::test]
async fn messages_published_while_the_socket_was_down_arrive_once_in_order() {
    let running = support::start(support::config()).await;
    let proxy = Proxy::start(running.addr).await;
    let (_, tokens) = counting_tokens("eve", 3600);
    let (client, mut events) =
        Client::start(config(proxy.addr), tokens).unwrap_or_else(|e| panic!("{e}"));
    let mut seen = Vec::new();
    client.subscribe("orders").await.unwrap_or_else(|e| panic!("{e}"));
    for n in 1..=3 {
        publish(running.addr, json!({"user": "eve"}), n).await;
        publish(running.addr, json!({"topic": "orders"}), n).await;
    }
    until(&mut events, &mut seen, "the third order", |e| is_note(e, "topic:orders", 3)).await;

    proxy.cut();
    until(&mut events, &mut seen, "disconnected", |e| matches!(e, Event::Disconnected { .. }))
        .await;
    support::eventually("the server dropped the old socket", || {
        running.api.connection_count() == 0
    })
    .await;
    for n in 4..=8 {
        publish(running.addr, json!({"user": "eve"}), n).await;
        // Kept for recovery, with nobody subscribed right now.
        let body = json!({"target": {"topic": "orders"}, "message": {"type": "note", "payload": {"n": n}}});
        assert_eq!(support::delivered(running.addr, &body).await, 0);
    }
    // An attempt against the cut network fails, and the client goes on trying.
    until(&mut events, &mut seen, "a failed attempt", |e| matches!(e, Event::Disconnected { .. }))
        .await;
    proxy.restore();
    until(&mut events, &mut seen, "reconnected", |e| matches!(e, Event::Connected(_))).await;
    until(
        &mut events,
        &mut seen,
        "the topic recovered",
        |e| matches!(e, Event::Recovered { stream } if stream.to_string() == "topic:orders"),
    )
    .await;
    for n in 9..=10 {
        publish(running.addr, json!({"user": "eve"}), n).await;
        publish(running.addr, json!({"topic": "orders"}), n).await;
    }
    until_seen(&mut events, &mut seen, "the tenth of each", |seen| {
        notes(seen, "topic:orders").contains(&10) && notes(seen, "user:eve").contains(&10)
    })
    .await;
    // A duplicate would have shown up before the tenth of each; a ping round trip drains
    // whatever the server still had queued before it.
    client.ping().await.unwrap_or_else(|e| panic!("{e}"));
    let all: Vec<u64> = (1..=10).collect();
    assert_eq!(notes(&seen, "user:eve"), all);
    assert_eq!(notes(&seen, "topic:orders"), all);
    let mut recovered: Vec<String> = seen
        .iter()
        .filter_map(|e| match e {
            Event::Recovered { stream } => Some(stream.to_string()),
            _ => None,
        })
        .collect();
    recovered.sort();
    assert_eq!(recovered, ["broadcast", "topic:orders", "user:eve"]);
    assert!(!seen.iter().any(|e| matches!(e, Event::Unrecovered { .. })), "{seen:#?}");
    client.close().await;
    support::stop(running).await;
}

// ---------------------------------------------------------------- tokens

#[tokio::test]
async fn the_token_is_refreshed_in_band_before_it_expires_without_a_reconnect() {
    // No leeway: the server closes with 4001 at exp unless the token was refreshed.
    let mut server_config = support::config();
    server_config.jwt_leeway_secs = 0;
    let running = support::start(server_config).await;
    let (calls, tokens) = counting_tokens("fay", 3);
    let mut config = config(running.addr);
    config.refresh_before = Some(Duration::from_secs(2));
    let (client, mut events) = Client::start(config, tokens).unwrap_or_else(|e| panic!("{e}"));
    let mut seen = Vec::new();
    let hello =
        until(&mut events, &mut seen, "connected", |e| matches!(e, Event::Connected(_))).await;
    let Event::Connected(hello) = hello else { unreachable!() };
    let first_expiry = hello.expires_at.unwrap_or_else(|| panic!("no expiry"));
    // A token minted a second or more after the first one's exp: the connection outlived
    // that exp (the server would have closed it with 4001, an event before this one).
    let past = first_expiry + 4;
    let refreshed = until(
        &mut events,
        &mut seen,
        "a refresh past the first exp",
        |e| matches!(e, Event::Refreshed { expires_at: Some(at) } if *at >= past),
    )
    .await;
    assert!(matches!(refreshed, Event::Refreshed { .. }));
    assert!(now_unix_secs() > first_expiry, "the first exp has not passed yet");
    assert!(
        !seen.iter().any(|e| matches!(e, Event::Disconnected { .. } | Event::RefreshFailed { .. })),
        "{seen:#?}"
    );
    assert!(calls.load(Ordering::SeqCst) >= 2, "no token was asked for the refresh");
    client.ping().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(running.api.connection_count(), 1, "one connection all along");
    client.close().await;
    support::stop(running).await;
}

#[tokio::test]
async fn without_refresh_an_expired_token_reconnects_at_once_with_a_new_one() {
    let mut server_config = support::config();
    server_config.jwt_leeway_secs = 0;
    let running = support::start(server_config).await;
    let (calls, tokens) = counting_tokens("gus", 2);
    let mut config = config(running.addr);
    config.refresh_before = None;
    let (client, mut events) = Client::start(config, tokens).unwrap_or_else(|e| panic!("{e}"));
    let mut seen = Vec::new();
    until(&mut events, &mut seen, "connected", |e| matches!(e, Event::Connected(_))).await;
    let expired = until(&mut events, &mut seen, "the 4001 close", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    match expired {
        Event::Disconnected { reason: Disconnect::Closed { code, .. }, reconnect_in } => {
            assert_eq!(code, 4001);
            assert_eq!(reconnect_in, Duration::ZERO);
        }
        other => panic!("{other:?}"),
    }
    until(&mut events, &mut seen, "connected again", |e| matches!(e, Event::Connected(_))).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2, "a new token for the reconnect");
    assert!(seen.contains(&Event::Connecting { attempt: 0 }));
    client.close().await;
    support::stop(running).await;
}

// ---------------------------------------------------------------- stopping

/// Starts a client for `user`, waits for `connected`, runs `act`, and returns the final
/// event and how many tokens were asked for.
async fn stopped_after(
    addr: SocketAddr,
    user: &'static str,
    act: impl AsyncFnOnce(),
) -> (Stop, usize) {
    let (calls, tokens) = counting_tokens(user, 3600);
    let (client, mut events) =
        Client::start(config(addr), tokens).unwrap_or_else(|e| panic!("{e}"));
    let mut seen = Vec::new();
    until(&mut events, &mut seen, "connected", |e| matches!(e, Event::Connected(_))).await;
    act().await;
    let stopped =
        until(&mut events, &mut seen, "stopped", |e| matches!(e, Event::Stopped(_))).await;
    assert!(events.next_event().await.is_none(), "events after Stopped");
    assert!(client.is_stopped());
    assert!(!seen.iter().any(|e| matches!(e, Event::Disconnected { .. })), "{seen:#?}");
    let Event::Stopped(stop) = stopped else { unreachable!() };
    (stop, calls.load(Ordering::SeqCst))
}

#[tokio::test]
async fn a_revoked_token_stops_the_client() {
    let running = support::start(support::config()).await;
    let addr = running.addr;
    let (stop, tokens) = stopped_after(addr, "hal", async || {
        let body = json!({"user": "hal", "issued_before": now_unix_secs() + 5});
        let response = post(addr, "/api/revoke", &body).await;
        assert_eq!(response.status, 200, "{}", response.text());
    })
    .await;
    assert_eq!(stop, Stop::Revoked { reason: "token revoked".into() });
    assert_eq!(tokens, 1, "it tried again");
    support::stop(running).await;
}

#[tokio::test]
async fn a_kicked_client_stops() {
    let running = support::start(support::config()).await;
    let addr = running.addr;
    let (stop, tokens) = stopped_after(addr, "ivy", async || {
        let response = post(addr, "/api/disconnect", &json!({"target": {"user": "ivy"}})).await;
        assert_eq!(response.json()["disconnected"], 1, "{}", response.text());
    })
    .await;
    assert_eq!(stop, Stop::Kicked { reason: "kicked".into() });
    assert_eq!(tokens, 1);
    support::stop(running).await;
}

#[tokio::test]
async fn a_handshake_403_stops_the_client_without_retrying() {
    let mut server_config = support::config();
    server_config.required_permissions = vec!["realtime:connect".into()];
    let running = support::start(server_config).await;
    let (calls, tokens) = counting_tokens("joe", 3600);
    let (client, mut events) =
        Client::start(config(running.addr), tokens).unwrap_or_else(|e| panic!("{e}"));
    let mut seen = Vec::new();
    let stopped =
        until(&mut events, &mut seen, "stopped", |e| matches!(e, Event::Stopped(_))).await;
    assert!(matches!(stopped, Event::Stopped(Stop::Forbidden { .. })), "{stopped:?}");
    assert_eq!(seen, [Event::Connecting { attempt: 0 }, stopped]);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(client.subscribe("t").await.map(|_| ()), Err(ClientError::Stopped));
    support::stop(running).await;
}
