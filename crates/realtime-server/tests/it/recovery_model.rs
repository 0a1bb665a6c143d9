//! Recovery checked end to end against a model: the real server (real service, in-memory
//! broker with small history, warp transport), real sockets and JWTs.
//!
//! - `random_operations_on_two_redis_nodes_agree_with_the_recovery_model`: the model test
//!   on two nodes sharing one Redis (`--broker redis`, a `redis-server` of the test's own):
//!   each publication goes through either node, each reconnect to either, so a client often
//!   recovers on one node what was published while it was on the other.
//!
//! - `random_operations_agree_with_the_recovery_model`: seeded random sequences of
//!   publications (to the user's stream or a topic), disconnects, reconnects with `since`,
//!   subscribes with `since` and unsubscribes, on one or two clients of one user. A `since`
//!   is mostly the last position seen, sometimes one in another epoch or ahead of the
//!   stream; a reconnect sometimes lists the topics' positions too (not its streams: ignored).
//!   History keeps 5 publications, and on odd seeds one recovery replays at most 3. The
//!   model knows every publication's offset and both limits, so it predicts every
//!   `recovered`; each client checks every frame it gets (of a stream it is in, the next
//!   offset, the payload published there: no gap, no duplicate, in order, across
//!   reconnects) and, after each step, that it has everything due (a ping/pong round trip
//!   is the barrier: the pong is queued behind whatever was queued before it).
//! - `recovery_races_a_fast_publisher`: a publisher as fast as it can on a user stream and a
//!   topic, while three clients of that user keep disconnecting, reconnecting with `since`
//!   and resubscribing with `since`; history is large, so every recovery must succeed and
//!   every client must end with every offset of both streams exactly once, in order. A close
//!   by the server as a slow consumer (4008) or for a lagged stream (4010) is allowed (the
//!   protocol says: reconnect and recover), and counted.
//!
//! The operations are drawn from fixed seeds (`StdRng`), so a run is reproducible in what it
//! does; no assertion depends on timing, and every wait is bounded by `WAIT`. A failure of
//! the model test names its seed and prints the operations that led to it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::FutureExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use realtime_broker_mem::InMemoryBrokerConfig;
use realtime_core::{
    Envelope, HistoryLimits, HistoryPolicy, RateLimitConfig, Target, TopicName, UserId,
};
use realtime_ports::{PublishOptions, RealtimeApi};
use realtime_server::Running;
use realtime_service::ServiceConfig;
use realtime_testkit::RedisProcess;
use realtime_testkit::jwt::{Claims, now_unix_secs};
use realtime_testkit::ws::{Connect, next_json_or_close, since_query, try_connect};
use realtime_transport_warp::{INBOUND_RATE_RANGE, TransportConfig};
use serde_json::{Map, Value, json};

use crate::support::{self, Pos, SECRET, Stack, Ws};

/// The one user of both tests.
const USER: &str = "model-user";
/// Its stream.
const USER_STREAM: &str = "user:model-user";
/// The other implicit stream of a connection without roles.
const BROADCAST: &str = "broadcast";

// ---------------------------------------------------------------- shared

/// A token of [`USER`] that may subscribe to every topic.
fn user_token() -> String {
    Claims::new(USER).topics(&["*"]).exp(now_unix_secs() + 3600).mint(SECRET)
}

/// History on for every kind of stream, `max_len` publications for 300 s.
fn history(max_len: usize) -> InMemoryBrokerConfig {
    let limits = Some(HistoryLimits { max_len, max_age_millis: 300_000 });
    let history = HistoryPolicy {
        broadcast: limits,
        user: limits,
        role: limits,
        topic: limits,
        topic_prefixes: Vec::new(),
    };
    InMemoryBrokerConfig { history, ..InMemoryBrokerConfig::default() }
}

/// A transport whose inbound rate limit stays out of the way of barrier pings.
fn transport() -> TransportConfig {
    TransportConfig {
        inbound_rate: RateLimitConfig { per_second: 100_000, burst: 100_000 },
        ..support::transport()
    }
}

fn target(stream: &str) -> Target {
    match stream.split_once(':') {
        Some(("user", user)) => Target::User(UserId::new(user).unwrap_or_else(|e| panic!("{e}"))),
        Some(("topic", topic)) => {
            Target::Topic(TopicName::new(topic).unwrap_or_else(|e| panic!("{e}")))
        }
        _ => panic!("no target for {stream}"),
    }
}

/// Publishes `{"type":"note","payload":{"seq":seq}}` to `stream` through the Rust API and
/// returns the position the broker gave it.
async fn publish(api: &dyn RealtimeApi, stream: &str, seq: u64) -> Pos {
    let message =
        Envelope::from_parts("note", json!({"seq": seq})).unwrap_or_else(|e| panic!("{e}"));
    let receipt = api
        .publish_with(&target(stream), &message, &PublishOptions::default())
        .await
        .unwrap_or_else(|e| panic!("publish to {stream}: {e}"));
    let position = receipt.position.unwrap_or_else(|| panic!("{stream} has no history"));
    Pos { epoch: position.epoch.as_str().to_owned(), offset: position.offset }
}

/// Opens a WebSocket for `token`, with `since` (stream name to position) when it is not
/// empty, and returns it with its `connected` payload.
async fn open(
    addr: std::net::SocketAddr,
    token: &str,
    since: &BTreeMap<String, Pos>,
) -> (Ws, Value) {
    try_open(addr, token, since)
        .await
        .unwrap_or_else(|code| panic!("closed with {code:?} before `connected`"))
}

/// [`open`], or the close code (`None`: no close frame) when the server closes the
/// connection before `connected`.
async fn try_open(
    addr: std::net::SocketAddr,
    token: &str,
    since: &BTreeMap<String, Pos>,
) -> Result<(Ws, Value), Option<u16>> {
    let since_json: Map<String, Value> =
        since.iter().map(|(stream, pos)| (stream.clone(), pos.to_json())).collect();
    let query = (!since.is_empty()).then(|| since_query(&Value::Object(since_json)));
    let options =
        Connect { token_query: Some(token), query: query.as_deref(), ..Connect::default() };
    let (mut ws, _) = try_connect(addr, options)
        .await
        .unwrap_or_else(|status| panic!("upgrade refused with {status}"));
    let hello = next_json_or_close(&mut ws).await?;
    assert_eq!(hello["type"], "connected", "the first frame is not `connected`: {hello}");
    let streams = hello["payload"]["streams"]
        .as_object()
        .unwrap_or_else(|| panic!("`connected` without a streams object: {hello}"));
    let names: BTreeSet<&str> = streams.keys().map(String::as_str).collect();
    assert_eq!(names, BTreeSet::from([BROADCAST, USER_STREAM]), "{hello}");
    Ok((ws, hello["payload"].clone()))
}

fn subscribe_text(id: u64, topic: &str, since: Option<&Pos>) -> String {
    let mut payload = json!({"topic": topic});
    if let Some(since) = since {
        payload["since"] = since.to_json();
    }
    json!({"type": "subscribe", "id": id, "payload": payload}).to_string()
}

// ---------------------------------------------------------------- the model test

/// Publications kept per stream by the model test's server.
const MAX_LEN: u64 = 5;
/// The most one recovery replays, on odd seeds (the default, 300, on even ones): below
/// [`MAX_LEN`], so that limit is reached too.
const SMALL_MAX_RECOVERY: u64 = 3;
/// Seeds of the model test.
const SEEDS: u64 = 40;
/// Seeds of the model test on Redis (each starts two nodes; fewer, to keep it short).
const REDIS_SEEDS: u64 = 40;
/// Operations per seed.
const STEPS: usize = 80;
/// The topics of the model test.
const TOPICS: [&str; 2] = ["topic:t1", "topic:t2"];

/// What the server must hold: each stream's epoch (the first one seen; it never changes,
/// the broker does not restart), its top, and every publication's `seq` by offset.
#[derive(Debug)]
struct Model {
    /// The most a client may have missed and still recover: the history's length or the
    /// recovery limit, whichever is smaller.
    limit: u64,
    epochs: BTreeMap<String, String>,
    tops: BTreeMap<String, u64>,
    seqs: BTreeMap<(String, u64), u64>,
    next_seq: u64,
    /// Recoveries asked for that succeeded, and that did not (so the test can check it
    /// reached both).
    recovered: usize,
    not_recovered: usize,
    /// Delivery is asynchronous (Redis pub/sub): a publication may reach a node after its
    /// publish returned, so a client first reads up to the top of its streams, then checks
    /// with the ping barrier that nothing more is queued.
    asynchronous: bool,
    /// Recoveries with something to replay on another node than the client's last one.
    replayed_elsewhere: usize,
}

impl Model {
    fn new(max_recovery: u64, asynchronous: bool) -> Model {
        Model {
            asynchronous,
            replayed_elsewhere: 0,
            limit: MAX_LEN.min(max_recovery),
            epochs: BTreeMap::new(),
            tops: BTreeMap::new(),
            seqs: BTreeMap::new(),
            next_seq: 0,
            recovered: 0,
            not_recovered: 0,
        }
    }

    fn top(&self, stream: &str) -> u64 {
        self.tops.get(stream).copied().unwrap_or(0)
    }

    /// Records `stream`'s epoch the first time, and checks it every later time.
    fn check_epoch(&mut self, stream: &str, epoch: &str) {
        let known = self.epochs.entry(stream.to_owned()).or_insert_with(|| epoch.to_owned());
        assert_eq!(known, epoch, "{stream}: the epoch changed");
    }

    /// Whether a client that last saw `since` recovers `stream` now: same epoch, not ahead,
    /// and it missed no more than history (the last [`MAX_LEN`]) covers and one recovery
    /// replays.
    fn recovers(&self, stream: &str, since: &Pos) -> bool {
        let top = self.top(stream);
        self.epochs.get(stream) == Some(&since.epoch)
            && since.offset <= top
            && top - since.offset <= self.limit
    }

    /// Publishes the next publication to `stream` and records it.
    async fn publish(&mut self, api: &dyn RealtimeApi, stream: &str) {
        self.next_seq += 1;
        let seq = self.next_seq;
        let pos = publish(api, stream, seq).await;
        self.check_epoch(stream, &pos.epoch);
        assert_eq!(pos.offset, self.top(stream) + 1, "{stream}: offsets grow by one");
        self.tops.insert(stream.to_owned(), pos.offset);
        self.seqs.insert((stream.to_owned(), pos.offset), seq);
    }
}

/// One client of [`USER`] in the model test.
#[derive(Debug)]
struct Client {
    name: &'static str,
    token: String,
    ws: Option<Ws>,
    /// The last position seen per stream, kept across disconnects and unsubscribes.
    seen: BTreeMap<String, Pos>,
    /// The streams delivering to it: its implicit ones while connected, and its topics.
    live: BTreeSet<String>,
    /// Subscribes sent and not answered yet, with the `since` they carried.
    subscribing: BTreeMap<String, Option<Pos>>,
    /// Unsubscribes sent and not answered yet.
    unsubscribing: BTreeSet<String>,
    next_id: u64,
    /// The node it last connected to.
    node: Option<usize>,
}

impl Client {
    fn new(name: &'static str) -> Client {
        Client {
            name,
            token: user_token(),
            ws: None,
            seen: BTreeMap::new(),
            live: BTreeSet::new(),
            subscribing: BTreeMap::new(),
            unsubscribing: BTreeSet::new(),
            next_id: 0,
            node: None,
        }
    }

    fn connected(&self) -> bool {
        self.ws.is_some()
    }

    fn subscribed(&self, topic: &str) -> bool {
        self.live.contains(topic)
    }

    /// Connects, with `since` for every implicit stream it has a position in (the user's
    /// as `how` says), and its topics' positions too when `with_topics` (not its streams
    /// until it subscribes: `connected` must ignore them).
    /// Connects to `node` at `addr`.
    async fn connect(
        &mut self,
        model: &mut Model,
        (node, addr): (usize, std::net::SocketAddr),
        how: Since,
        with_topics: bool,
    ) {
        assert!(!self.connected());
        let mut since: BTreeMap<String, Pos> = [USER_STREAM, BROADCAST]
            .into_iter()
            .filter_map(|stream| Some((stream.to_owned(), self.seen.get(stream)?.clone())))
            .collect();
        if let Some(user) = since.get_mut(USER_STREAM) {
            how.apply(user);
        }
        let mut asked = since.clone();
        if with_topics {
            asked.extend(
                TOPICS.iter().filter_map(|t| Some((t.to_string(), self.seen.get(*t)?.clone()))),
            );
        }
        let (ws, hello) = open(addr, &self.token, &asked).await;
        for (stream, state) in hello["streams"].as_object().into_iter().flatten() {
            let recovered = state["recovered"]
                .as_bool()
                .unwrap_or_else(|| panic!("{}: no `recovered` for {stream}", self.name));
            let since = since.get(stream);
            self.opened(model, stream, since, &Pos::of(state), recovered);
            let moved = self.node.is_some_and(|last| last != node);
            if recovered && moved && since.is_some_and(|since| since.offset < model.top(stream)) {
                model.replayed_elsewhere += 1;
            }
        }
        self.node = Some(node);
        self.ws = Some(ws);
        self.settle(model).await;
    }

    /// Closes its socket; its streams stop (topics too: a new connection starts without).
    async fn disconnect(&mut self) {
        let mut ws = self.ws.take().unwrap_or_else(|| panic!("{} is not connected", self.name));
        // The server may have closed first; either way the connection is gone.
        let _ = ws.close(None).await;
        self.live.clear();
    }

    async fn subscribe(&mut self, model: &mut Model, topic: &str, how: Since) {
        let mut since = self.seen.get(topic).cloned();
        if let Some(since) = since.as_mut() {
            how.apply(since);
        }
        let name = topic.strip_prefix("topic:").unwrap_or(topic);
        self.next_id += 1;
        let text = subscribe_text(self.next_id, name, since.as_ref());
        self.subscribing.insert(topic.to_owned(), since);
        self.send(&text).await;
        self.settle(model).await;
    }

    async fn unsubscribe(&mut self, model: &mut Model, topic: &str) {
        let name = topic.strip_prefix("topic:").unwrap_or(topic);
        self.next_id += 1;
        let text = json!({"type": "unsubscribe", "id": self.next_id, "payload": {"topic": name}});
        self.unsubscribing.insert(topic.to_owned());
        self.send(&text.to_string()).await;
        self.settle(model).await;
    }

    async fn send(&mut self, text: &str) {
        let ws = self.ws.as_mut().unwrap_or_else(|| panic!("{} is not connected", self.name));
        support::send_text(ws, text).await;
    }

    /// A `connected` entry or a `subscribed` answer for `stream`: the position is the top,
    /// `recovered` is what the model predicts, and a stream not recovered starts over at
    /// the position given (a recovered one goes on from `since`, with the replay).
    fn opened(
        &mut self,
        model: &mut Model,
        stream: &str,
        since: Option<&Pos>,
        given: &Pos,
        recovered: bool,
    ) {
        let name = self.name;
        model.check_epoch(stream, &given.epoch);
        let top = model.top(stream);
        assert_eq!(given.offset, top, "{name}: {stream} is given at {given:?}, its top is {top}");
        let expected = since.is_some_and(|since| model.recovers(stream, since));
        assert_eq!(
            recovered, expected,
            "{name}: {stream} recovered:{recovered} from {since:?} at top {top} (limit {})",
            model.limit
        );
        match (since, recovered) {
            (None, _) => {}
            (Some(_), true) => model.recovered += 1,
            (Some(_), false) => model.not_recovered += 1,
        }
        if !recovered {
            self.seen.insert(stream.to_owned(), given.clone());
        }
        self.live.insert(stream.to_owned());
    }

    /// A frame after `connected`; returns the id of a pong.
    fn handle(&mut self, model: &mut Model, frame: &Value) -> Option<String> {
        let name = self.name;
        let payload = &frame["payload"];
        match frame["type"].as_str() {
            Some("pong") => return Some(frame["id"].as_str().unwrap_or_default().to_owned()),
            Some("subscribed") => {
                let topic = format!("topic:{}", payload["topic"].as_str().unwrap_or_default());
                let since = self
                    .subscribing
                    .remove(&topic)
                    .unwrap_or_else(|| panic!("{name}: `subscribed` unasked: {frame}"));
                let recovered = payload["recovered"]
                    .as_bool()
                    .unwrap_or_else(|| panic!("{name}: no `recovered`: {frame}"));
                self.opened(model, &topic, since.as_ref(), &Pos::of(payload), recovered);
            }
            Some("unsubscribed") => {
                let topic = format!("topic:{}", payload["topic"].as_str().unwrap_or_default());
                assert!(
                    self.unsubscribing.remove(&topic),
                    "{name}: `unsubscribed` unasked: {frame}"
                );
                self.live.remove(&topic);
            }
            Some("connected" | "error") | None => panic!("{name}: unexpected {frame}"),
            Some(_) => self.delivered(model, frame),
        }
        None
    }

    /// A publication: of a stream it is in, the next offset after the last it saw, in the
    /// same epoch, with the payload the model published at that offset.
    fn delivered(&mut self, model: &Model, frame: &Value) {
        let name = self.name;
        let stream =
            frame["stream"].as_str().unwrap_or_else(|| panic!("{name}: no stream: {frame}"));
        assert!(
            self.live.contains(stream),
            "{name}: a frame of {stream}, which it is not in: {frame}"
        );
        let pos = Pos::of(frame);
        let last = self
            .seen
            .get_mut(stream)
            .unwrap_or_else(|| panic!("{name}: a frame of {stream} before its position: {frame}"));
        assert_eq!(pos.epoch, last.epoch, "{name}: {stream} changed epoch: {frame}");
        assert_eq!(
            pos.offset,
            last.offset + 1,
            "{name}: {stream} after offset {} (a gap or a duplicate): {frame}",
            last.offset
        );
        let seq = model.seqs.get(&(stream.to_owned(), pos.offset));
        assert_eq!(
            frame["payload"]["seq"].as_u64().as_ref(),
            seq,
            "{name}: wrong payload: {frame}"
        );
        last.offset = pos.offset;
    }

    /// Reads until a pong answers a ping sent now, so everything queued before it has been
    /// read; then the client must be at the top of every stream it is in, with every request
    /// answered.
    async fn settle(&mut self, model: &mut Model) {
        let Some(mut ws) = self.ws.take() else { return };
        if model.asynchronous {
            // Every frame read is checked as it comes; each read is bounded by `WAIT`.
            while self.live.iter().any(|stream| self.seen[stream].offset < model.top(stream)) {
                let frame = support::next_json(&mut ws).await;
                let pong = self.handle(model, &frame);
                assert!(pong.is_none(), "{}: a pong unasked: {frame}", self.name);
            }
        }
        self.next_id += 1;
        let id = format!("b{}", self.next_id);
        support::send_text(&mut ws, &json!({"type": "ping", "id": id}).to_string()).await;
        loop {
            let frame = support::next_json(&mut ws).await;
            if self.handle(model, &frame).is_some_and(|pong| pong == id) {
                break;
            }
        }
        self.ws = Some(ws);
        let name = self.name;
        assert!(
            self.subscribing.is_empty(),
            "{name}: unanswered subscribes {:?}",
            self.subscribing
        );
        assert!(
            self.unsubscribing.is_empty(),
            "{name}: unanswered unsubscribes {:?}",
            self.unsubscribing
        );
        for stream in &self.live {
            let (at, top) = (self.seen[stream].offset, model.top(stream));
            assert_eq!(at, top, "{name}: {stream} read up to {at}, published up to {top}");
        }
    }
}

/// The `since` a client sends for a stream.
#[derive(Debug, Clone, Copy)]
enum Since {
    /// The last position it saw.
    Seen,
    /// That offset in another epoch (as after a broker restart).
    OtherEpoch,
    /// An offset ahead of the stream's top.
    Ahead,
}

impl Since {
    fn draw(rng: &mut StdRng) -> Since {
        match rng.random_range(0..10) {
            0 => Since::OtherEpoch,
            1 => Since::Ahead,
            _ => Since::Seen,
        }
    }

    fn apply(self, pos: &mut Pos) {
        match self {
            Since::Seen => {}
            Since::OtherEpoch => pos.epoch = "otherEpoch0".to_owned(),
            Since::Ahead => pos.offset += 1_000,
        }
    }
}

/// One operation of the model test.
#[derive(Debug, Clone)]
enum Op {
    /// `count` publications to a stream, through a node.
    Publish(&'static str, u64, usize),
    Disconnect(usize),
    /// Reconnect with `since`, listing its topics' positions too when the flag is set, to a
    /// node (any: with Redis, it recovers there what it missed on another).
    Reconnect(usize, Since, bool, usize),
    Subscribe(usize, &'static str, Since),
    Unsubscribe(usize, &'static str),
}

/// An operation that applies to the clients as they are, drawn with weights; `nodes`
/// servers to publish through and reconnect to (the node is drawn only when there are
/// several, so one node's sequences stay as they were).
fn draw(rng: &mut StdRng, clients: &[Client], nodes: usize) -> Op {
    let node = |rng: &mut StdRng| if nodes > 1 { rng.random_range(0..nodes) } else { 0 };
    let mut ops: Vec<(u32, Op)> = Vec::new();
    for stream in [USER_STREAM, TOPICS[0], TOPICS[1]] {
        let count = rng.random_range(1..=3);
        ops.push((12, Op::Publish(stream, count, node(rng))));
    }
    for (i, client) in clients.iter().enumerate() {
        if client.connected() {
            ops.push((6, Op::Disconnect(i)));
            for topic in TOPICS {
                if client.subscribed(topic) {
                    ops.push((3, Op::Unsubscribe(i, topic)));
                } else {
                    ops.push((6, Op::Subscribe(i, topic, Since::draw(rng))));
                }
            }
        } else {
            let (how, with_topics) = (Since::draw(rng), rng.random_bool(0.25));
            ops.push((10, Op::Reconnect(i, how, with_topics, node(rng))));
        }
    }
    let total: u32 = ops.iter().map(|(weight, _)| weight).sum();
    let mut pick = rng.random_range(0..total);
    for (weight, op) in ops {
        if pick < weight {
            return op;
        }
        pick -= weight;
    }
    unreachable!("the pick is below the total")
}

fn lock(trace: &Mutex<Vec<String>>) -> std::sync::MutexGuard<'_, Vec<String>> {
    trace.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where the model test's servers run.
#[derive(Clone, Copy)]
enum Backend<'a> {
    /// One hand-assembled stack with the in-memory broker.
    Memory,
    /// Two nodes (`realtime_server::start`, `--broker redis`) on this Redis, with a key
    /// prefix of the seed's own, so every seed starts with fresh streams.
    Redis(&'a RedisProcess),
}

/// The servers of one seed.
enum Servers {
    Memory(Stack),
    Redis(Vec<Running>),
}

impl Servers {
    async fn start(backend: Backend<'_>, seed: u64, max_recovery: u64) -> Servers {
        match backend {
            Backend::Memory => {
                let service = ServiceConfig {
                    max_recovery: max_recovery as usize,
                    ..ServiceConfig::default()
                };
                let broker = history(MAX_LEN as usize);
                Servers::Memory(support::start_stack_full(transport(), service, broker, None).await)
            }
            Backend::Redis(redis) => {
                let mut nodes = Vec::new();
                for id in ["node-a", "node-b"] {
                    let mut config = support::redis_node(&redis.url(), id);
                    config.redis_prefix = format!("model{seed}");
                    config.history_size = MAX_LEN as usize;
                    config.max_recovery = max_recovery as usize;
                    // Out of the way of the barrier pings.
                    config.inbound_rate = *INBOUND_RATE_RANGE.end();
                    config.inbound_burst = *INBOUND_RATE_RANGE.end();
                    nodes.push(support::start(config).await);
                }
                Servers::Redis(nodes)
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Servers::Memory(_) => 1,
            Servers::Redis(nodes) => nodes.len(),
        }
    }

    fn addr(&self, node: usize) -> std::net::SocketAddr {
        match self {
            Servers::Memory(stack) => stack.addr,
            Servers::Redis(nodes) => nodes[node].addr,
        }
    }

    fn api(&self, node: usize) -> &dyn RealtimeApi {
        match self {
            Servers::Memory(stack) => &*stack.api,
            Servers::Redis(nodes) => &*nodes[node].api,
        }
    }

    async fn stop(self) {
        match self {
            Servers::Memory(stack) => stack.stop().await,
            Servers::Redis(nodes) => {
                for node in nodes {
                    support::stop(node).await;
                }
            }
        }
    }
}

/// One seed: fresh servers, one or two clients, [`STEPS`] operations.
/// Returns the model's counts: recovered, not recovered, replayed on another node.
async fn run_seed(
    backend: Backend<'_>,
    seed: u64,
    trace: &Mutex<Vec<String>>,
) -> (usize, usize, usize) {
    let max_recovery = if seed % 2 == 1 { SMALL_MAX_RECOVERY } else { 300 };
    let servers = Servers::start(backend, seed, max_recovery).await;
    let nodes = servers.len();
    let mut rng = StdRng::seed_from_u64(seed);
    let names = ["c0", "c1"];
    let mut clients: Vec<Client> =
        names.iter().copied().take(rng.random_range(1..=2)).map(Client::new).collect();
    let mut model = Model::new(max_recovery, matches!(backend, Backend::Redis(_)));
    lock(trace).push(format!("max_recovery {max_recovery}, history {MAX_LEN}, {nodes} node(s)"));
    for (i, client) in clients.iter_mut().enumerate() {
        let node = i % nodes;
        lock(trace).push(format!("Connect({}, node {node})", client.name));
        client.connect(&mut model, (node, servers.addr(node)), Since::Seen, false).await;
    }
    for _ in 0..STEPS {
        let op = draw(&mut rng, &clients, nodes);
        lock(trace).push(format!("{op:?}"));
        match op {
            Op::Publish(stream, count, node) => {
                for _ in 0..count {
                    model.publish(servers.api(node), stream).await;
                }
                for client in &mut clients {
                    client.settle(&mut model).await;
                }
            }
            Op::Disconnect(i) => clients[i].disconnect().await,
            Op::Reconnect(i, how, with_topics, node) => {
                let at = (node, servers.addr(node));
                clients[i].connect(&mut model, at, how, with_topics).await;
            }
            Op::Subscribe(i, topic, how) => clients[i].subscribe(&mut model, topic, how).await,
            Op::Unsubscribe(i, topic) => clients[i].unsubscribe(&mut model, topic).await,
        }
    }
    for client in &mut clients {
        if client.connected() {
            client.disconnect().await;
        }
    }
    servers.stop().await;
    (model.recovered, model.not_recovered, model.replayed_elsewhere)
}

/// Runs `seeds` on `backend`; a failure names its seed and the operations that led to it.
async fn run_seeds(backend: Backend<'_>, seeds: std::ops::Range<u64>) {
    let (mut recovered, mut not, mut elsewhere) = (0, 0, 0);
    for seed in seeds {
        let trace = Mutex::new(Vec::new());
        let run = AssertUnwindSafe(run_seed(backend, seed, &trace)).catch_unwind().await;
        if let Ok((yes, no, moved)) = run {
            recovered += yes;
            not += no;
            elsewhere += moved;
        } else {
            let mut ops = String::new();
            for (step, op) in lock(&trace).iter().enumerate() {
                let _ = writeln!(ops, "  {step}: {op}");
            }
            panic!("seed {seed} failed (its panic is printed above) after:\n{ops}");
        }
    }
    // The seeds are fixed: the operations reach both outcomes.
    eprintln!(
        "recoveries: {recovered} recovered, {not} not recovered, \
         {elsewhere} replayed on another node than the last"
    );
    assert!(recovered > 0 && not > 0, "recovered {recovered}, not recovered {not}");
    if matches!(backend, Backend::Redis(_)) {
        assert!(elsewhere > 0, "no client recovered on another node what it missed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_operations_agree_with_the_recovery_model() {
    run_seeds(Backend::Memory, 0..SEEDS).await;
}

/// The same model on two nodes sharing one Redis (a `redis-server` of the test's own):
/// publications go through either node, a client reconnects to either and must recover
/// there, from Redis history, what it missed on the other. Delivery through Redis pub/sub
/// is asynchronous, so each client reads up to the top before its ping barrier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_operations_on_two_redis_nodes_agree_with_the_recovery_model() {
    let redis = RedisProcess::start();
    run_seeds(Backend::Redis(&redis), 0..REDIS_SEEDS).await;
}

// ---------------------------------------------------------------- the race test

/// Publications per stream in the race.
const RACE_N: u64 = 2000;
/// Clients of the race.
const RACE_CLIENTS: usize = 3;
/// The race's topic stream.
const RACE_TOPIC: &str = "topic:race";

/// One client of the race, as it reconnects again and again.
#[derive(Debug)]
struct Racer {
    name: String,
    token: String,
    rng: StdRng,
    ws: Option<Ws>,
    seen: BTreeMap<String, Pos>,
    live: BTreeSet<String>,
    /// A resubscribe sent and not answered yet.
    subscribing: bool,
    /// An unsubscribe sent and not answered yet.
    unsubscribing: bool,
    /// Unsubscribes made (each followed by a subscribe with `since`).
    unsubscribes: usize,
    /// Reconnects made, and how many of them while the publisher was still going.
    reconnects: usize,
    reconnects_while_publishing: usize,
    /// Closes the server started, by code (`None`: the stream ended without a close frame).
    server_closes: BTreeMap<(Option<u16>, &'static str), usize>,
}

impl Racer {
    /// Connected (without `since`) and subscribed to the topic (without `since`), before
    /// anything is published.
    async fn start(name: String, seed: u64, addr: std::net::SocketAddr) -> Racer {
        let token = user_token();
        let (mut ws, hello) = open(addr, &token, &BTreeMap::new()).await;
        let mut seen = BTreeMap::new();
        for (stream, state) in hello["streams"].as_object().into_iter().flatten() {
            assert_eq!(state["recovered"], false, "{name}: {hello}");
            assert_eq!(state["offset"], 0, "{name}: {hello}");
            seen.insert(stream.clone(), Pos::of(state));
        }
        support::send_text(&mut ws, &subscribe_text(1, "race", None)).await;
        let reply = support::next_json(&mut ws).await;
        assert_eq!(reply["type"], "subscribed", "{name}: {reply}");
        assert_eq!(reply["payload"]["recovered"], false, "{name}: {reply}");
        assert_eq!(reply["payload"]["offset"], 0, "{name}: {reply}");
        seen.insert(RACE_TOPIC.to_owned(), Pos::of(&reply["payload"]));
        let live = seen.keys().cloned().collect();
        Racer {
            name,
            token,
            rng: StdRng::seed_from_u64(seed),
            ws: Some(ws),
            seen,
            live,
            subscribing: false,
            unsubscribing: false,
            unsubscribes: 0,
            reconnects: 0,
            reconnects_while_publishing: 0,
            server_closes: BTreeMap::new(),
        }
    }

    fn done(&self) -> bool {
        [USER_STREAM, RACE_TOPIC].iter().all(|stream| self.seen[*stream].offset == RACE_N)
    }

    /// Reads, disconnects and reconnects with `since` until it has seen both streams to
    /// [`RACE_N`]; every `recovered` must be true, every frame the next of its stream.
    async fn run(mut self, addr: std::net::SocketAddr, publishing: Arc<AtomicBool>) -> Racer {
        loop {
            let budget = self.rng.random_range(1..=250);
            let mut read = 0;
            let mut open = true;
            while read < budget && !self.done() {
                let ws = self.ws.as_mut().unwrap_or_else(|| panic!("not connected"));
                match next_json_or_close(ws).await {
                    Ok(frame) => {
                        if self.handle(&frame) {
                            self.resubscribe().await;
                        }
                    }
                    Err(code) => {
                        self.closed_by_server(code, "after `connected`");
                        open = false;
                        break;
                    }
                }
                read += 1;
            }
            // Now and then, leave the topic and come back (with `since`) instead of the
            // whole connection.
            let settled =
                self.live.contains(RACE_TOPIC) && !self.subscribing && !self.unsubscribing;
            if open && !self.done() && settled && self.rng.random_bool(0.3) {
                self.unsubscribes += 1;
                self.unsubscribing = true;
                let text = json!({"type": "unsubscribe", "id": 3, "payload": {"topic": "race"}});
                let ws = self.ws.as_mut().unwrap_or_else(|| panic!("not connected"));
                support::send_text(ws, &text.to_string()).await;
                continue;
            }
            self.unsubscribing = false;
            self.subscribing = false;
            if let Some(mut ws) = self.ws.take() {
                let _ = ws.close(None).await;
            }
            self.live.clear();
            if self.done() {
                return self;
            }
            self.reconnect(addr, &publishing).await;
        }
    }

    /// The server closed the connection: only as a slow consumer (4008) or for a lagged
    /// stream (4010), after which the protocol says to reconnect and recover.
    fn closed_by_server(&mut self, code: Option<u16>, when: &'static str) {
        assert!(matches!(code, None | Some(4008 | 4010)), "{}: closed with {code:?}", self.name);
        *self.server_closes.entry((code, when)).or_insert(0) += 1;
        let closes: usize = self.server_closes.values().sum();
        assert!(closes < 10_000, "{}: never recovers: {:?}", self.name, self.server_closes);
    }

    async fn reconnect(&mut self, addr: std::net::SocketAddr, publishing: &AtomicBool) {
        self.reconnects += 1;
        if publishing.load(Ordering::Relaxed) {
            self.reconnects_while_publishing += 1;
        }
        let since: BTreeMap<String, Pos> = [USER_STREAM, BROADCAST]
            .into_iter()
            .map(|stream| (stream.to_owned(), self.seen[stream].clone()))
            .collect();
        let (ws, hello) = loop {
            match try_open(addr, &self.token, &since).await {
                Ok(opened) => break opened,
                Err(code) => self.closed_by_server(code, "before `connected`"),
            }
        };
        for (stream, state) in hello["streams"].as_object().into_iter().flatten() {
            assert_eq!(state["recovered"], true, "{}: {stream} not recovered: {hello}", self.name);
            let given = Pos::of(state);
            assert_eq!(given.epoch, since[stream].epoch, "{}: {hello}", self.name);
            assert!(given.offset >= since[stream].offset, "{}: {hello}", self.name);
            self.live.insert(stream.clone());
        }
        self.ws = Some(ws);
        self.resubscribe().await;
    }

    /// Sends a subscribe to the topic with `since` its last position.
    async fn resubscribe(&mut self) {
        let since = self.seen[RACE_TOPIC].clone();
        let ws = self.ws.as_mut().unwrap_or_else(|| panic!("not connected"));
        support::send_text(ws, &subscribe_text(2, "race", Some(&since))).await;
        self.subscribing = true;
    }

    /// A frame of the connection; returns whether the topic is to be subscribed again (it
    /// was just left).
    fn handle(&mut self, frame: &Value) -> bool {
        let name = &self.name;
        match frame["type"].as_str() {
            Some("unsubscribed") => {
                assert!(self.unsubscribing, "{name}: `unsubscribed` unasked: {frame}");
                self.unsubscribing = false;
                // Nothing of the topic may follow.
                self.live.remove(RACE_TOPIC);
                return true;
            }
            Some("subscribed") => {
                assert!(self.subscribing, "{name}: `subscribed` unasked: {frame}");
                assert_eq!(frame["payload"]["recovered"], true, "{name}: not recovered: {frame}");
                let given = Pos::of(&frame["payload"]);
                let since = &self.seen[RACE_TOPIC];
                assert!(
                    given.epoch == since.epoch && given.offset >= since.offset,
                    "{name}: {frame}"
                );
                self.subscribing = false;
                self.live.insert(RACE_TOPIC.to_owned());
            }
            Some("note") => {
                let stream = frame["stream"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: no stream: {frame}"));
                assert!(
                    self.live.contains(stream),
                    "{name}: a frame of {stream} before it is open: {frame}"
                );
                let pos = Pos::of(frame);
                let last = self.seen.get_mut(stream).unwrap_or_else(|| panic!("{name}: {frame}"));
                assert_eq!(pos.epoch, last.epoch, "{name}: {frame}");
                assert_eq!(
                    pos.offset,
                    last.offset + 1,
                    "{name}: {stream} after offset {} (a gap or a duplicate): {frame}",
                    last.offset
                );
                assert_eq!(frame["payload"]["seq"], pos.offset, "{name}: wrong payload: {frame}");
                last.offset = pos.offset;
            }
            _ => panic!("{name}: unexpected {frame}"),
        }
        false
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_races_a_fast_publisher() {
    let service = ServiceConfig { max_recovery: 10_000, ..ServiceConfig::default() };
    let stack = support::start_stack_full(transport(), service, history(10_000), None).await;
    let mut racers = Vec::new();
    for i in 0..RACE_CLIENTS {
        racers.push(Racer::start(format!("r{i}"), 1000 + i as u64, stack.addr).await);
    }
    let publishing = Arc::new(AtomicBool::new(true));
    let api = Arc::clone(&stack.api);
    let flag = Arc::clone(&publishing);
    let publisher = tokio::spawn(async move {
        for seq in 1..=RACE_N {
            for stream in [USER_STREAM, RACE_TOPIC] {
                let pos = publish(&*api, stream, seq).await;
                assert_eq!(pos.offset, seq, "{stream}: offsets grow by one from 1");
            }
            tokio::task::yield_now().await;
        }
        flag.store(false, Ordering::Relaxed);
    });
    let tasks: Vec<_> = racers
        .into_iter()
        .map(|racer| tokio::spawn(racer.run(stack.addr, Arc::clone(&publishing))))
        .collect();
    publisher.await.unwrap_or_else(|e| panic!("publisher: {e}"));
    for task in tasks {
        let racer = task.await.unwrap_or_else(|e| panic!("racer: {e}"));
        // Every offset 1..=N of both streams seen once, in order: each frame was checked to
        // be the next of its stream, from 0, and both ended at N.
        assert!(racer.done(), "{racer:?}");
        eprintln!(
            "{}: {} reconnects ({} while publishing), {} unsubscribes, server closes {:?}",
            racer.name,
            racer.reconnects,
            racer.reconnects_while_publishing,
            racer.unsubscribes,
            racer.server_closes
        );
    }
    stack.stop().await;
}
