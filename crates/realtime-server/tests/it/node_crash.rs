//! A node crash (`kill -9` of a server process while publishing): its clients reconnect to
//! another node and recover from Redis history, and its connections leave presence.
//!
//! Node X is the server binary (a child process, so that it can be killed with SIGKILL: no
//! shutdown, no goodbye to Redis); node Y runs in this process. Both use one `redis-server`
//! of the test's own. [`CLIENTS`] clients of [`USERS`] users connect to X (half of them also
//! subscribe to a topic) and read; a publisher publishes through Y to every user's stream,
//! the topic and broadcast, while X is killed once [`KILL_AT`] of its [`ROUNDS`] rounds are
//! published (the publisher goes on; it waits for the kill only at [`KILL_BY`]). Each
//! client then reconnects to Y with `since` (the last position it saw of each stream) and
//! resubscribes with `since`: every recovery must succeed (history holds far more than the
//! run publishes), and every client must end with every publication of each of its streams
//! exactly once, in order. A close by Y as a slow consumer (4008) or for a lost stream
//! (4010) is allowed (the protocol says: reconnect and recover), and counted.
//!
//! Presence: a connection of one more user stays on X unread (a reader drains it); before
//! the crash Y reports it, after the crash it disappears from Y's answers within the
//! presence TTL (`--presence-ttl-secs 2`), and each user's count is its connections on Y.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use realtime_core::{Envelope, Target, TopicName, UserId};
use realtime_ports::PublishOptions;
use realtime_server::Config;
use realtime_testkit::RedisProcess;
use realtime_testkit::jwt::{Claims, now_unix_secs};
use realtime_testkit::ws::{
    Connect, next_json_or_close, since_query, spawn_json_reader, try_connect,
};
use serde_json::{Map, Value, json};

use crate::support::{self, API_KEY, Pos, SECRET, ServerBinary, Ws};

/// Clients of the crashed node; client `i` is user `u{i / 2}`, and even ones subscribe to
/// [`TOPIC`].
const CLIENTS: usize = 20;
/// Users of those clients (two connections each).
const USERS: usize = CLIENTS / 2;
/// Publication rounds: one to every user, one to the topic, one broadcast.
const ROUNDS: u64 = 200;
/// Rounds published before node X is killed.
const KILL_AT: u64 = 60;
/// The round the publisher does not start before X is killed (so it dies mid-stream).
const KILL_BY: u64 = 80;
/// The topic (`topic:feed` as a stream).
const TOPIC: &str = "feed";
/// Publications kept per stream and replayed per recovery: more than [`ROUNDS`], so no
/// recovery may fail for want of history.
const HISTORY: usize = 10_000;
/// Presence TTL of both nodes, in seconds.
const PRESENCE_TTL_SECS: u64 = 2;
/// Failure bound of the presence waits (several TTLs and heartbeats; never a timing
/// assertion).
const PRESENCE_WAIT: Duration = Duration::from_secs(30);

fn token(user: &str) -> String {
    Claims::new(user).topics(&["*"]).exp(now_unix_secs() + 3600).mint(SECRET)
}

fn user_stream(user: usize) -> String {
    format!("user:u{user}")
}

// ---------------------------------------------------------------- node X, a process

/// Node Y's configuration: in this process, on the same Redis.
fn node(redis: &RedisProcess, id: &str) -> Config {
    let mut config = support::redis_node(&redis.url(), id);
    config.presence_ttl_secs = PRESENCE_TTL_SECS;
    config.history_size = HISTORY;
    config.max_recovery = HISTORY;
    config
}

// ---------------------------------------------------------------- clients

/// Opens a WebSocket with `since` (when not empty); the close code when the server closes
/// before `connected` (`None`: no close frame).
async fn try_open(
    addr: SocketAddr,
    token: &str,
    since: &BTreeMap<String, Pos>,
) -> Result<(Ws, Value), Option<u16>> {
    let since: Map<String, Value> =
        since.iter().map(|(stream, pos)| (stream.clone(), pos.to_json())).collect();
    let query = (!since.is_empty()).then(|| since_query(&Value::Object(since)));
    let options =
        Connect { token_query: Some(token), query: query.as_deref(), ..Connect::default() };
    let (mut ws, _) =
        try_connect(addr, options).await.unwrap_or_else(|status| panic!("refused: {status}"));
    let hello = next_json_or_close(&mut ws).await?;
    assert_eq!(hello["type"], "connected", "{hello}");
    Ok((ws, hello["payload"].clone()))
}

fn subscribe_text(since: Option<&Pos>) -> String {
    let mut payload = json!({"topic": TOPIC});
    if let Some(since) = since {
        payload["since"] = since.to_json();
    }
    json!({"type": "subscribe", "id": "sub", "payload": payload}).to_string()
}

/// One client: on X until it crashes, then on Y.
#[derive(Debug)]
struct Crashed {
    name: String,
    token: String,
    /// Its streams: its user's, broadcast, and the topic's for even clients.
    streams: BTreeSet<String>,
    ws: Option<Ws>,
    /// The last position seen of each stream.
    seen: BTreeMap<String, Pos>,
    /// The streams delivering to it now.
    live: BTreeSet<String>,
    /// A subscribe sent and not answered yet.
    subscribing: bool,
    /// Closes by the server (or the end of the stream: `None`), by node and code.
    closes: BTreeMap<(&'static str, Option<u16>), usize>,
    /// Recoveries asked for (each of a stream, on Y), all of which succeeded.
    recoveries: usize,
    /// The offsets it had read of each stream when its connection to X ended.
    at_crash: BTreeMap<String, u64>,
}

impl Crashed {
    /// Connected to X (without `since`) and, for a topic client, subscribed (without
    /// `since`), before anything is published.
    async fn start(i: usize, x: SocketAddr) -> Crashed {
        let name = format!("c{i}");
        let user = i / 2;
        let token = token(&format!("u{user}"));
        let mut streams = BTreeSet::from([user_stream(user), "broadcast".to_owned()]);
        let (mut ws, hello) = try_open(x, &token, &BTreeMap::new())
            .await
            .unwrap_or_else(|code| panic!("{name}: closed with {code:?}"));
        let mut seen = BTreeMap::new();
        for (stream, state) in hello["streams"].as_object().into_iter().flatten() {
            assert!(streams.contains(stream), "{name}: {hello}");
            assert_eq!(state["offset"], 0, "{name}: {hello}");
            seen.insert(stream.clone(), Pos::of(state));
        }
        if i.is_multiple_of(2) {
            let stream = format!("topic:{TOPIC}");
            support::send_text(&mut ws, &subscribe_text(None)).await;
            let reply = support::next_json(&mut ws).await;
            assert_eq!(reply["type"], "subscribed", "{name}: {reply}");
            assert_eq!(reply["payload"]["offset"], 0, "{name}: {reply}");
            seen.insert(stream.clone(), Pos::of(&reply["payload"]));
            streams.insert(stream);
        }
        assert_eq!(seen.keys().collect::<BTreeSet<_>>(), streams.iter().collect(), "{name}");
        let live = streams.clone();
        Crashed {
            name,
            token,
            streams,
            ws: Some(ws),
            seen,
            live,
            subscribing: false,
            closes: BTreeMap::new(),
            recoveries: 0,
            at_crash: BTreeMap::new(),
        }
    }

    fn done(&self) -> bool {
        self.streams.iter().all(|stream| self.seen[stream].offset == ROUNDS)
    }

    /// Reads until it has every publication of each of its streams; whenever its
    /// connection ends (X crashed, or Y closed it), reconnects to Y with `since`.
    async fn run(mut self, y: SocketAddr) -> Crashed {
        let mut on: &'static str = "x";
        while !self.done() {
            let ws = self.ws.as_mut().unwrap_or_else(|| panic!("not connected"));
            match next_json_or_close(ws).await {
                Ok(frame) => self.handle(&frame),
                Err(code) => {
                    let name = &self.name;
                    // X may end in any way (SIGKILL: no close frame); Y only as the
                    // protocol allows, with a reconnect and recovery to follow.
                    assert!(
                        on == "x" || matches!(code, Some(4008 | 4010)),
                        "{name}: closed by Y with {code:?}"
                    );
                    *self.closes.entry((on, code)).or_insert(0) += 1;
                    if on == "x" {
                        let offsets = self.seen.iter().map(|(s, pos)| (s.clone(), pos.offset));
                        self.at_crash = offsets.collect();
                    }
                    let closes: usize = self.closes.values().sum();
                    assert!(closes < 1000, "{name}: never recovers: {:?}", self.closes);
                    self.ws = None;
                    self.reconnect(y).await;
                    on = "y";
                }
            }
        }
        // Nothing more: a ping's pong comes next (a duplicate would fail `handle`).
        let ws = self.ws.as_mut().unwrap_or_else(|| panic!("not connected"));
        support::send_text(ws, r#"{"type":"ping","id":"end"}"#).await;
        loop {
            let ws = self.ws.as_mut().unwrap_or_else(|| panic!("not connected"));
            let frame = support::next_json(ws).await;
            if frame["type"] == "pong" {
                break;
            }
            self.handle(&frame);
        }
        self
    }

    /// Reconnects to Y with `since` for its implicit streams, then resubscribes to the topic
    /// with `since`; every stream must be recovered.
    async fn reconnect(&mut self, y: SocketAddr) {
        self.live.clear();
        self.subscribing = false;
        let topic = format!("topic:{TOPIC}");
        let since: BTreeMap<String, Pos> = self
            .streams
            .iter()
            .filter(|stream| **stream != topic)
            .map(|stream| (stream.clone(), self.seen[stream].clone()))
            .collect();
        let (mut ws, hello) = loop {
            match try_open(y, &self.token, &since).await {
                Ok(opened) => break opened,
                Err(code) => {
                    assert!(matches!(code, Some(4008 | 4010)), "{}: {code:?}", self.name);
                    *self.closes.entry(("y", code)).or_insert(0) += 1;
                }
            }
        };
        for (stream, state) in hello["streams"].as_object().into_iter().flatten() {
            let name = &self.name;
            assert_eq!(state["recovered"], true, "{name}: {stream} not recovered: {hello}");
            let given = Pos::of(state);
            assert_eq!(given.epoch, since[stream].epoch, "{name}: {hello}");
            assert!(given.offset >= since[stream].offset, "{name}: {hello}");
            self.recoveries += 1;
            self.live.insert(stream.clone());
        }
        assert_eq!(self.live.len(), since.len(), "{}: {hello}", self.name);
        if self.streams.contains(&topic) {
            support::send_text(&mut ws, &subscribe_text(Some(&self.seen[&topic]))).await;
            self.subscribing = true;
        }
        self.ws = Some(ws);
    }

    /// A frame after `connected`: the topic's `subscribed` (recovered), or a publication
    /// of a live stream, the next offset after the last seen, with its payload.
    fn handle(&mut self, frame: &Value) {
        let name = &self.name;
        match frame["type"].as_str() {
            Some("subscribed") => {
                assert!(self.subscribing, "{name}: `subscribed` unasked: {frame}");
                assert_eq!(frame["payload"]["recovered"], true, "{name}: not recovered: {frame}");
                let topic = format!("topic:{TOPIC}");
                let given = Pos::of(&frame["payload"]);
                let since = &self.seen[&topic];
                assert!(
                    given.epoch == since.epoch && given.offset >= since.offset,
                    "{name}: {frame}"
                );
                self.subscribing = false;
                self.recoveries += 1;
                self.live.insert(topic);
            }
            Some("note") => {
                let stream = frame["stream"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: no stream: {frame}"));
                assert!(self.live.contains(stream), "{name}: {stream} is not open: {frame}");
                let pos = Pos::of(frame);
                let last = self.seen.get_mut(stream).unwrap_or_else(|| panic!("{name}: {frame}"));
                assert_eq!(pos.epoch, last.epoch, "{name}: {frame}");
                assert_eq!(
                    pos.offset,
                    last.offset + 1,
                    "{name}: {stream} after offset {} (a gap or a duplicate): {frame}",
                    last.offset
                );
                assert_eq!(frame["payload"]["n"], pos.offset, "{name}: wrong payload: {frame}");
                last.offset = pos.offset;
            }
            _ => panic!("{name}: unexpected {frame}"),
        }
    }
}

// ---------------------------------------------------------------- presence

async fn presence(addr: SocketAddr, path: &str) -> Value {
    let auth = format!("Bearer {API_KEY}");
    let response = support::http(addr, "GET", path, &[("Authorization", &auth)], b"").await;
    assert_eq!(response.status, 200, "GET {path}: {}", response.text());
    response.json()
}

/// Polls `GET <path>` on `addr` until it answers `expected`, for at most [`PRESENCE_WAIT`].
async fn presence_is(addr: SocketAddr, path: &str, expected: &Value) {
    let mut last = Value::Null;
    let wait = async {
        loop {
            last = presence(addr, path).await;
            if last == *expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(PRESENCE_WAIT, wait).await.is_err() {
        panic!("{path}: {last}, expected {expected}");
    }
}

fn user_presence(user: &str, connections: u64) -> Value {
    json!({"user_id": user, "online": connections > 0, "connections": connections})
}

// ---------------------------------------------------------------- the test

/// Waits until `condition` holds, checking every millisecond, for at most `WAIT`.
async fn until(what: &str, condition: impl Fn() -> bool) {
    let wait = async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(support::WAIT, wait).await.unwrap_or_else(|_| panic!("never: {what}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_clients_recover_on_another_node_and_leave_presence() {
    let redis = RedisProcess::start();
    let env = [
        ("REALTIME_DEMO", "false".to_owned()),
        ("REALTIME_BROKER", "redis".to_owned()),
        ("REALTIME_REDIS_URL", redis.url()),
        ("REALTIME_NODE_ID", "node-x".to_owned()),
        ("REALTIME_PRESENCE_TTL_SECS", PRESENCE_TTL_SECS.to_string()),
        ("REALTIME_HISTORY_SIZE", HISTORY.to_string()),
        ("REALTIME_MAX_RECOVERY", HISTORY.to_string()),
    ];
    let mut x = ServerBinary::start(&env).await;
    let y = support::start(node(&redis, "node-y")).await;

    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(Crashed::start(i, x.addr).await);
    }
    // One more user's connection on X, drained by a reader, never reconnected.
    let (mut ghost, hello) = try_open(x.addr, &token("ghost"), &BTreeMap::new())
        .await
        .unwrap_or_else(|code| panic!("ghost: closed with {code:?}"));
    assert_eq!(hello["streams"]["user:ghost"]["offset"], 0, "{hello}");
    support::send_text(&mut ghost, &subscribe_text(None)).await;
    assert_eq!(support::next_json(&mut ghost).await["type"], "subscribed");
    let (ghost_reader, _ghost_frames) = spawn_json_reader(ghost, |_| ());

    // Y sees X's connections.
    presence_is(y.addr, "/api/presence/user/ghost", &user_presence("ghost", 1)).await;
    presence_is(y.addr, "/api/presence/user/u0", &user_presence("u0", 2)).await;
    let mut members: Vec<Value> =
        (0..USERS).map(|u| json!({"user_id": format!("u{u}"), "connections": 1})).collect();
    members.insert(0, json!({"user_id": "ghost", "connections": 1}));
    presence_is(y.addr, "/api/presence/topic/feed", &json!({"topic": TOPIC, "members": members}))
        .await;

    // The publisher, on Y, never waits for the kill but at round KILL_BY; the killer kills
    // X (SIGKILL) once KILL_AT rounds are published, while publications are in flight.
    let rounds = Arc::new(AtomicU64::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let killer = tokio::spawn({
        let (rounds, killed) = (Arc::clone(&rounds), Arc::clone(&killed));
        async move {
            until("KILL_AT rounds published", || rounds.load(Ordering::Acquire) >= KILL_AT).await;
            x.kill();
            killed.store(true, Ordering::Release);
            rounds.load(Ordering::Acquire)
        }
    });
    let api = Arc::clone(&y.api);
    let publisher = tokio::spawn({
        let (rounds, killed) = (Arc::clone(&rounds), Arc::clone(&killed));
        async move {
            let topic = TopicName::new(TOPIC).unwrap_or_else(|e| panic!("{e}"));
            let mut targets: Vec<(String, Target)> = (0..USERS)
                .map(|u| {
                    let user = UserId::new(format!("u{u}")).unwrap_or_else(|e| panic!("{e}"));
                    (user_stream(u), Target::User(user))
                })
                .collect();
            targets.push((format!("topic:{TOPIC}"), Target::Topic(topic)));
            targets.push(("broadcast".to_owned(), Target::Broadcast));
            for n in 1..=ROUNDS {
                if n == KILL_BY {
                    until("X killed", || killed.load(Ordering::Acquire)).await;
                }
                for (stream, target) in &targets {
                    let message = Envelope::from_parts("note", json!({"n": n}))
                        .unwrap_or_else(|e| panic!("{e}"));
                    let receipt = api
                        .publish_with(target, &message, &PublishOptions::default())
                        .await
                        .unwrap_or_else(|e| panic!("publish to {stream}: {e}"));
                    let offset = receipt.position.map(|p| p.offset);
                    assert_eq!(offset, Some(n), "{stream}: offsets grow by one from 1");
                }
                rounds.store(n, Ordering::Release);
                tokio::task::yield_now().await;
            }
        }
    });
    let tasks: Vec<_> =
        clients.into_iter().map(|client| tokio::spawn(client.run(y.addr))).collect();
    publisher.await.unwrap_or_else(|e| panic!("publisher: {e}"));
    let killed_at = killer.await.unwrap_or_else(|e| panic!("killer: {e}"));
    eprintln!("X killed after {killed_at} of {ROUNDS} rounds");
    let mut clients = Vec::new();
    for task in tasks {
        let client = task.await.unwrap_or_else(|e| panic!("client: {e}"));
        // Every offset 1..=ROUNDS of each of its streams seen once, in order: each frame was
        // checked to be the next of its stream, from 0, and each ended at ROUNDS.
        assert!(client.done(), "{client:?}");
        assert!(
            client.closes.keys().any(|(on, _)| *on == "x"),
            "{}: its connection to X ended: {:?}",
            client.name,
            client.closes
        );
        assert!(client.recoveries >= client.streams.len(), "{}: recovered on Y", client.name);
        eprintln!(
            "{}: read {:?} on X; {} recoveries; closes {:?}",
            client.name, client.at_crash, client.recoveries, client.closes
        );
        clients.push(client);
    }
    // The ghost's connection ended with X.
    tokio::time::timeout(support::WAIT, ghost_reader)
        .await
        .unwrap_or_else(|_| panic!("the ghost's connection outlived X"))
        .unwrap_or_else(|e| panic!("ghost reader: {e}"));

    // X's connections leave presence within its TTL; what is left is on Y.
    presence_is(y.addr, "/api/presence/user/ghost", &user_presence("ghost", 0)).await;
    for u in 0..USERS {
        let user = format!("u{u}");
        presence_is(y.addr, &format!("/api/presence/user/{user}"), &user_presence(&user, 2)).await;
    }
    members.remove(0);
    presence_is(y.addr, "/api/presence/topic/feed", &json!({"topic": TOPIC, "members": members}))
        .await;
    drop(clients);
    support::stop(y).await;
}
