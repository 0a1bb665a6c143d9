//! [`RedisBroker`]: the [`Broker`] of many nodes sharing one Redis, or several (shards).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use rand::Rng;
use rand::distr::Alphanumeric;
use realtime_core::{
    ConnectionId, Epoch, Frame, HistoryLimits, HistoryPolicy, IdempotencyKey, Position, StreamName,
    UnixMillis, UserId,
};
use realtime_ports::{
    Broker, BrokerError, BrokerHealth, LocalDelivery, NodeReceipts, Published, Recovered,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::presence::RedisPresence;
use crate::pubsub::{self, Settings, ShardInfo, Shared};
use crate::scripts;
use crate::shard::{self, UrlListError};
use crate::wire::{self, Names, Reply, RevocationMessage};

/// How a [`RedisBroker`] reaches Redis and keeps streams.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisBrokerConfig {
    /// `redis://[user:password@]host:port[/db]`, or a comma-separated list of such URLs: one
    /// shard each (spaces around a comma are ignored; a comma in a password is written
    /// `%2C`). Never printed: [`Debug`] hides it, and no error holds it.
    ///
    /// A stream lives on one shard, `jump(fnv1a64(stream name), shards)` (jump consistent
    /// hash): its keys, its channel, its barriers and its receipts. What is node-wide lives
    /// on the first shard: messages to one connection, revocations and presence. Every node
    /// must list the same URLs in the same order. Appending a shard moves about `1/(n+1)` of
    /// the streams to it; a moved stream starts again in a new epoch on its new shard, so
    /// its clients get `recovered: false` once.
    pub url: String,
    /// Prefix of every key and channel (`rt`): 1 to 64 ASCII letters, digits, `-`, `_`, `.`
    /// or `:`, so that it never breaks a hash tag.
    pub prefix: String,
    /// Which streams keep history, and how much.
    pub history: HistoryPolicy,
    /// How long an idempotency key is remembered (300 s).
    pub idempotency_ttl: Duration,
    /// How long a stream keeps its epoch and offset after it was last published to or read
    /// (1 h, and never less than its history's age limit); after that a client coming back
    /// with a position in it gets `recovered: false`.
    pub idle_stream_ttl: Duration,
    /// How long `recover` waits for Redis to confirm the stream's SUBSCRIBE (5 s) before it
    /// fails with [`BrokerError::Unavailable`].
    pub subscribe_timeout: Duration,
    /// This node's id on the control channel (1 to 64 ASCII letters, digits, `-` or `_`);
    /// drawn at random when `None`.
    pub node_id: Option<String>,
    /// How long the pub/sub connection may stay silent before the node probes it by
    /// publishing to itself (15 s); a probe not heard back within as long again makes the
    /// node reconnect.
    pub probe_interval: Duration,
    /// Stream messages each pub/sub worker queues (4096); one more is dropped, and the loss
    /// reported to the stream's clients, rather than block the read loop.
    pub queue_capacity: usize,
    /// Longest wait between two pub/sub reconnection attempts (1 s, so a node is back within
    /// about a second of Redis; each wait is drawn at
    /// random below a ceiling that doubles from 100 ms).
    pub max_reconnect_delay: Duration,
    /// How long a node's presence entries outlive its last heartbeat (60 s; the heartbeat
    /// runs every third of it): a crashed node's connections leave presence within it.
    pub presence_ttl: Duration,
}

impl std::fmt::Debug for RedisBrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBrokerConfig")
            .field("url", &"<hidden>")
            .field("prefix", &self.prefix)
            .field("history", &self.history)
            .field("idempotency_ttl", &self.idempotency_ttl)
            .field("idle_stream_ttl", &self.idle_stream_ttl)
            .field("subscribe_timeout", &self.subscribe_timeout)
            .field("node_id", &self.node_id)
            .field("probe_interval", &self.probe_interval)
            .field("queue_capacity", &self.queue_capacity)
            .field("max_reconnect_delay", &self.max_reconnect_delay)
            .field("presence_ttl", &self.presence_ttl)
            .finish()
    }
}

impl RedisBrokerConfig {
    /// The defaults, for the Redis at `url` (or the shards it lists, see [`url`](Self::url)).
    pub fn new(url: impl Into<String>) -> RedisBrokerConfig {
        RedisBrokerConfig {
            url: url.into(),
            prefix: "rt".to_owned(),
            history: HistoryPolicy::default(),
            idempotency_ttl: Duration::from_secs(300),
            idle_stream_ttl: Duration::from_secs(3600),
            subscribe_timeout: Duration::from_secs(5),
            node_id: None,
            probe_interval: Duration::from_secs(15),
            queue_capacity: 4096,
            max_reconnect_delay: Duration::from_secs(1),
            presence_ttl: Duration::from_secs(60),
        }
    }
}

/// Why [`RedisBroker::connect`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The prefix breaks the rule of [`RedisBrokerConfig::prefix`].
    #[error("the key prefix must be 1 to 64 ASCII letters, digits, '-', '_', '.' or ':'")]
    InvalidPrefix,
    /// The node id breaks the rule of [`RedisBrokerConfig::node_id`].
    #[error("the node id must be 1 to 64 ASCII letters, digits, '-' or '_'")]
    InvalidNodeId,
    /// A probe interval, queue capacity, reconnect delay or presence TTL of zero.
    #[error(
        "the probe interval, queue capacity, reconnect delay and presence TTL must be above zero"
    )]
    InvalidLimits,
    /// The URL list has an empty entry or lists a URL twice (see
    /// [`RedisBrokerConfig::url`]).
    #[error("the Redis URL list must be comma-separated, non-empty, distinct URLs")]
    InvalidUrlList,
    /// Redis could not be reached (the text never holds the URL).
    #[error("redis unavailable: {0}")]
    Unavailable(String),
}

/// Longest key or message TTL and latest time passed to Redis: 2^53 - 1 ms, which Lua's
/// numbers hold exactly (about 285,000 years).
const MAX_MILLIS: u64 = (1 << 53) - 1;
/// Length of a drawn epoch or node id.
const RANDOM_LEN: usize = 16;

/// The [`Broker`] of many nodes sharing one Redis (7 or later), or several (shards).
///
/// - `publish` runs one Lua script per publication: idempotency check, epoch, offset,
///   exactly trimmed history with a TTL, PUBLISH to the stream's channel, idempotency result.
///   It answers `delivered: 0`: delivery is asynchronous (through pub/sub, to every
///   interested node, this one included), so when it answers the broker knows of none.
/// - `recover` reads the position and the history in one script and decides as
///   `StreamHistory::recover` does (all or nothing); for a stream this node is interested
///   in, it first waits for Redis to confirm the stream's SUBSCRIBE, so every publication
///   after the read is received.
/// - One dedicated pub/sub connection (per shard), read by one task: messages reach
///   [`LocalDelivery`] in the order Redis delivers them (per channel: offset order).
///
/// - The pub/sub connection is supervised (see the crate documentation): while it is down,
///   `recover` of an interested stream fails at once with [`BrokerError::Unavailable`];
///   once it is back, every stream that may have missed publications is reported to the
///   node's [`LocalDelivery::lost`].
///
/// - Sharded over several Redis servers when [`RedisBrokerConfig::url`] lists several: one
///   command connection, one supervised pub/sub connection and its own subscriptions and
///   gap tracking per shard; each stream goes to its shard (see the URL's documentation),
///   and the first shard carries what is node-wide. A shard that is down refuses only its
///   own streams (and, for the first, what is node-wide); the others keep working.
pub struct RedisBroker {
    config: RedisBrokerConfig,
    /// One per URL, in the order of the list; never empty.
    shards: Vec<Shard>,
    publish_script: Script,
    recover_script: Script,
    revoke_script: Script,
    tasks: Vec<AbortHandle>,
}

/// One Redis of the broker: its command connection, its pub/sub side and its queue of
/// ephemeral frames.
struct Shard {
    shared: Arc<Shared>,
    commands: ConnectionManager,
    ephemeral: mpsc::UnboundedSender<(String, String)>,
}

/// What [`RedisBroker::state`] reports, for `/healthz`: over every shard.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerState {
    /// Every shard's pub/sub connection is up and every wanted channel subscribed.
    pub connected: bool,
    /// How many shards (Redis servers) the broker uses.
    pub shards: usize,
    /// How many of them are connected.
    pub shards_connected: usize,
    /// Pub/sub reconnections since the broker started, summed over the shards.
    pub reconnects: u64,
    /// Stream messages dropped because a worker queue was full.
    pub dropped: u64,
    /// Possible losses reported to the node.
    pub gaps: u64,
    /// How long the slowest shard's last (re)connection and resubscription took, in
    /// milliseconds.
    pub last_resubscribe_millis: u64,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("config", &self.config)
            .field("shards", &self.shards.iter().map(|s| &s.shared).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// `BrokerError::Unavailable` for a failed Redis call: the error's category and detail,
/// never the URL.
fn unavailable(what: &str, error: &RedisError) -> BrokerError {
    let detail = error.detail().map(|d| format!(": {d}")).unwrap_or_default();
    BrokerError::Unavailable(format!("redis {what}: {}{detail}", error.category()))
}

/// A fresh epoch.
pub(crate) fn random_epoch() -> String {
    random(RANDOM_LEN)
}

fn random(len: usize) -> String {
    rand::rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

/// Wall-clock now; 0 if the clock is set before 1970.
pub(crate) fn now() -> UnixMillis {
    UnixMillis::from_system_time(SystemTime::now())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX).clamp(1, MAX_MILLIS)
}

fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

impl RedisBroker {
    /// Connects to Redis, to every shard at once: per shard a command connection and a
    /// dedicated pub/sub connection, subscribed to this node's channels (on the first shard
    /// also to this prefix's connection and control channels) before it returns. Spawns the
    /// broker's tasks on the current tokio runtime; they end when the broker is dropped.
    ///
    /// # Errors
    /// [`ConnectError`] when the configuration is invalid or a shard's Redis cannot be
    /// reached.
    pub async fn connect(config: RedisBrokerConfig) -> Result<RedisBroker, ConnectError> {
        if !valid_prefix(&config.prefix) {
            return Err(ConnectError::InvalidPrefix);
        }
        let node_id = match &config.node_id {
            Some(id) if wire::valid_node_id(id) => id.clone(),
            Some(_) => return Err(ConnectError::InvalidNodeId),
            None => random(RANDOM_LEN),
        };
        if config.probe_interval.is_zero()
            || config.queue_capacity == 0
            || config.max_reconnect_delay.is_zero()
            || config.presence_ttl.is_zero()
        {
            return Err(ConnectError::InvalidLimits);
        }
        let urls = shard::split_urls(&config.url).map_err(|e| match e {
            UrlListError::Empty | UrlListError::Duplicate => ConnectError::InvalidUrlList,
        })?;
        let tokens = Arc::new(AtomicU64::new(1));
        let count = urls.len();
        let opened = futures_util::future::join_all(urls.iter().enumerate().map(|(index, url)| {
            let info = ShardInfo { index, tokens: Arc::clone(&tokens) };
            connect_shard(url, &config, node_id.clone(), info)
        }))
        .await;
        let mut shards = Vec::with_capacity(count);
        let mut tasks = Vec::new();
        let mut failure = None;
        for (index, result) in opened.into_iter().enumerate() {
            match result {
                Ok((shard, shard_tasks)) => {
                    shards.push(shard);
                    tasks.extend(shard_tasks);
                }
                Err(error) if failure.is_none() => {
                    failure = Some(match (count, error) {
                        (1, error) => error,
                        (_, ConnectError::Unavailable(text)) => ConnectError::Unavailable(format!(
                            "shard {} of {count}: {text}",
                            index + 1
                        )),
                        (_, error) => error,
                    });
                }
                Err(_) => {}
            }
        }
        if let Some(error) = failure {
            for task in &tasks {
                task.abort();
            }
            return Err(error);
        }
        Ok(RedisBroker {
            config,
            shards,
            publish_script: Script::new(scripts::PUBLISH),
            recover_script: Script::new(scripts::RECOVER),
            revoke_script: Script::new(scripts::REVOKE),
            tasks,
        })
    }

    /// The shard of `stream`.
    fn shard(&self, stream: &StreamName) -> &Shard {
        &self.shards[shard::shard_of(stream, self.shards.len())]
    }

    /// The first shard: messages to one connection, revocations and presence.
    fn first(&self) -> &Shard {
        &self.shards[0]
    }

    /// This node's id on the control channel.
    pub fn node_id(&self) -> &str {
        &self.first().shared.node_id
    }

    /// How long the stream's meta outlives its last use: the idle TTL, and at least the
    /// history's age.
    fn meta_ttl(&self, limits: &HistoryLimits) -> u64 {
        millis(self.config.idle_stream_ttl).max(limits.max_age_millis.clamp(1, MAX_MILLIS))
    }

    /// Presence across every node on this Redis (same prefix), with this broker's command
    /// connection to the first shard (presence is not sharded); its writer and heartbeat run
    /// on the current tokio runtime until it is dropped.
    pub fn presence(&self) -> Arc<RedisPresence> {
        let names = crate::wire::Names::new(&self.config.prefix);
        let ttl = self.config.presence_ttl;
        let commands = self.first().commands.clone();
        let presence = Arc::new(RedisPresence::start(names, commands, ttl));
        RedisPresence::beat(&presence, ttl);
        presence
    }

    /// The pub/sub side's state and counters, over every shard.
    pub fn state(&self) -> BrokerState {
        let mut state = BrokerState {
            connected: true,
            shards: self.shards.len(),
            shards_connected: 0,
            reconnects: 0,
            dropped: 0,
            gaps: 0,
            last_resubscribe_millis: 0,
        };
        for shard in &self.shards {
            let stats = &shard.shared.stats;
            if shard.shared.alive.load(Ordering::Acquire) {
                state.shards_connected += 1;
            } else {
                state.connected = false;
            }
            state.reconnects += stats.reconnects.load(Ordering::Relaxed);
            state.dropped += stats.dropped.load(Ordering::Relaxed);
            state.gaps += stats.gaps.load(Ordering::Relaxed);
            state.last_resubscribe_millis = state
                .last_resubscribe_millis
                .max(stats.last_resubscribe_millis.load(Ordering::Relaxed));
        }
        state
    }

    /// For a stream this node is interested in: waits until Redis confirmed its SUBSCRIBE;
    /// returns whether the node is interested.
    async fn subscribed(&self, shared: &Shared, channel: &str) -> Result<bool, BrokerError> {
        let deadline = tokio::time::Instant::now() + self.config.subscribe_timeout;
        let mut progress = shared.progress.subscribe();
        loop {
            let confirmed = {
                let guard = shared.subscriptions.lock();
                match guard.0.get(channel) {
                    Some(entry) if entry.wanted => entry.confirmed >= entry.seq,
                    _ => return Ok(false),
                }
            };
            if !shared.alive.load(Ordering::Acquire) {
                return Err(BrokerError::Unavailable(
                    "redis pub/sub connection down (reconnecting)".to_owned(),
                ));
            }
            if confirmed {
                return Ok(true);
            }
            match tokio::time::timeout_at(deadline, progress.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(BrokerError::Unavailable("redis broker stopped".to_owned()));
                }
                Err(_) => {
                    return Err(BrokerError::Unavailable(
                        "redis SUBSCRIBE not confirmed in time".to_owned(),
                    ));
                }
            }
        }
    }

    /// Runs the publish script; with a `reply`, every node that receives the publication
    /// sends its count there (the reply must come from the stream's shard). Returns the
    /// result and how many nodes PUBLISH reached.
    async fn run_publish(
        &self,
        shard: &Shard,
        stream: &StreamName,
        frame: Frame,
        idempotency_key: Option<&IdempotencyKey>,
        reply: Option<&Reply>,
    ) -> Result<(Published, usize), BrokerError> {
        let names = &shard.shared.names;
        let limits = self.config.history.limits(stream);
        let mut invocation = self.publish_script.prepare_invoke();
        invocation.key(names.meta(stream)).key(names.history(stream));
        if let Some(key) = idempotency_key {
            invocation.key(names.idempotency(stream, key));
        }
        let (max_len, history_ttl, meta_ttl) = match &limits {
            Some(limits) => {
                (limits.max_len, limits.max_age_millis.clamp(1, MAX_MILLIS), self.meta_ttl(limits))
            }
            None => (0, 1, 1),
        };
        invocation
            .arg(if limits.is_some() { "h" } else { "n" })
            .arg(random(RANDOM_LEN))
            .arg(max_len)
            .arg(history_ttl)
            .arg(meta_ttl)
            .arg(self.config.idempotency_ttl.as_secs().clamp(1, MAX_MILLIS / 1000))
            .arg(names.channel(stream))
            .arg(frame.as_str())
            .arg(Reply::tag(reply));
        let (duplicate, result, receivers): (i64, String, usize) = invocation
            .invoke_async(&mut shard.commands.clone())
            .await
            .map_err(|e| unavailable("publish", &e))?;
        let position = if result.is_empty() {
            None
        } else {
            let parsed = result.split_once(':').and_then(|(epoch, offset)| {
                Some(Position { epoch: Epoch::new(epoch).ok()?, offset: offset.parse().ok()? })
            });
            Some(parsed.ok_or_else(|| {
                BrokerError::Unavailable("redis publish: an unexpected answer".to_owned())
            })?)
        };
        let published =
            Published { position, delivered: 0, duplicate: duplicate == 1, nodes: None };
        Ok((published, receivers))
    }

    /// PUBLISHes to the connections channel (on the first shard); returns how many nodes it
    /// reached.
    async fn publish_to_connection(
        &self,
        id: ConnectionId,
        frame: &Frame,
        reply: Option<&Reply>,
    ) -> Result<usize, BrokerError> {
        let first = self.first();
        let sent: Result<usize, RedisError> = redis::cmd("PUBLISH")
            .arg(first.shared.names.connections())
            .arg(wire::to_connection(id, reply, frame))
            .query_async(&mut first.commands.clone())
            .await;
        sent.map_err(|e| unavailable("send to connection", &e))
    }
}

/// Connects one shard: its command connection, its first pub/sub connection (subscribed
/// before this returns) and its tasks (the pub/sub supervisor and the ephemeral queue).
async fn connect_shard(
    url: &str,
    config: &RedisBrokerConfig,
    node_id: String,
    info: ShardInfo,
) -> Result<(Shard, Vec<AbortHandle>), ConnectError> {
    let connect_error = |what: &str, error: &RedisError| {
        let detail = error.detail().map(|d| format!(": {d}")).unwrap_or_default();
        ConnectError::Unavailable(format!("{what}: {}{detail}", error.category()))
    };
    let client = redis::Client::open(url).map_err(|e| connect_error("invalid url", &e))?;
    // Fail fast while Redis is down (a publisher gets its error within about 2 s, not
    // after a long backoff); the manager reconnects on the next command.
    let manager = ConnectionManagerConfig::new()
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500))
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    let commands = client
        .get_connection_manager_with_config(manager)
        .await
        .map_err(|e| connect_error("command connection", &e))?;
    let first = pubsub::open(&client)
        .await
        .map_err(|e| ConnectError::Unavailable(format!("pub/sub connection: {e}")))?;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4));
    let settings = Settings {
        workers,
        queue_capacity: config.queue_capacity,
        probe_interval: config.probe_interval,
        max_reconnect_delay: config.max_reconnect_delay,
        barrier_timeout: config.subscribe_timeout,
    };
    let (command_tx, command_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared::new(
        Names::new(&config.prefix),
        node_id,
        config.history.clone(),
        settings,
        commands.clone(),
        command_tx,
        info,
    ));
    let (ephemeral, ephemeral_rx) = mpsc::unbounded_channel();
    let supervisor =
        pubsub::supervise(Arc::clone(&shared), client, commands.clone(), command_rx, first);
    let tasks = vec![
        tokio::spawn(supervisor).abort_handle(),
        tokio::spawn(publish_ephemeral(commands.clone(), ephemeral_rx)).abort_handle(),
    ];
    // Up once the node's channels are subscribed.
    let mut progress = shared.progress.subscribe();
    let up = tokio::time::timeout(
        config.subscribe_timeout,
        progress.wait_for(|_| shared.alive.load(Ordering::Acquire)),
    )
    .await;
    if !matches!(up, Ok(Ok(_))) {
        for task in &tasks {
            task.abort();
        }
        return Err(ConnectError::Unavailable("pub/sub SUBSCRIBE not confirmed".to_owned()));
    }
    Ok((Shard { shared, commands, ephemeral }, tasks))
}

/// Sends ephemeral frames in the order they were queued; a failure is logged (they are at
/// most once).
async fn publish_ephemeral(
    mut connection: ConnectionManager,
    mut queue: mpsc::UnboundedReceiver<(String, String)>,
) {
    while let Some((channel, message)) = queue.recv().await {
        let sent: Result<(), RedisError> =
            redis::cmd("PUBLISH").arg(&channel).arg(&message).query_async(&mut connection).await;
        if let Err(error) = sent {
            tracing::warn!(
                channel,
                category = error.category(),
                "redis broker: ephemeral PUBLISH failed"
            );
        }
    }
}

/// One XRANGE entry: `(id, [field, value, ...])`.
type Entry = (String, Vec<String>);

/// The all-or-nothing rule of `StreamHistory::recover`, on what the recover script read:
/// the epoch matches, `since` is not ahead, at most `max` are missed, and every missed
/// offset is there, in order, no older than the age limit.
fn decide(
    stream: &StreamName,
    position: &Position,
    since: &Position,
    now: UnixMillis,
    entries: &[Entry],
    limits: &HistoryLimits,
    max: usize,
) -> Option<Vec<Frame>> {
    if since.epoch != position.epoch || since.offset > position.offset {
        return None;
    }
    let missed = position.offset - since.offset;
    if missed == 0 {
        return Some(Vec::new());
    }
    if usize::try_from(missed).map_or(true, |missed| missed > max) {
        return None;
    }
    let oldest_allowed = now.0.saturating_sub(limits.max_age_millis);
    let mut expected = since.offset + 1;
    let mut frames = Vec::with_capacity(entries.len());
    for (_, fields) in entries {
        let field = |name: &str| {
            fields.chunks_exact(2).find(|pair| pair[0] == name).map(|pair| pair[1].as_str())
        };
        let offset: u64 = field("o")?.parse().ok()?;
        let published_at: u64 = field("t")?.parse().ok()?;
        if offset != expected || published_at < oldest_allowed {
            return None;
        }
        let at = Position { epoch: position.epoch.clone(), offset };
        frames.push(Frame::from_text(field("d")?.to_owned()).with_position(stream, &at));
        expected += 1;
    }
    (expected == position.offset + 1).then_some(frames)
}

#[async_trait]
impl Broker for RedisBroker {
    fn attach(&self, delivery: Weak<dyn LocalDelivery>) {
        // Only the first attach counts: one broker serves one service.
        for shard in &self.shards {
            let _ = shard.shared.delivery.set(delivery.clone());
        }
    }

    async fn publish(
        &self,
        stream: &StreamName,
        frame: Frame,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> Result<Published, BrokerError> {
        Ok(self.run_publish(self.shard(stream), stream, frame, idempotency_key, None).await?.0)
    }

    async fn publish_counted(
        &self,
        stream: &StreamName,
        frame: Frame,
        idempotency_key: Option<&IdempotencyKey>,
        within: Duration,
    ) -> Result<Published, BrokerError> {
        // Receipts come back on the node's channel of the stream's shard.
        let shard = self.shard(stream);
        let receipts = shard.shared.expect_receipts();
        let (published, receivers) =
            self.run_publish(shard, stream, frame, idempotency_key, Some(receipts.reply())).await?;
        let (delivered, nodes) = receipts.collect(receivers, within, |_| false).await;
        Ok(Published { delivered, nodes: Some(nodes), ..published })
    }

    fn publish_ephemeral(&self, stream: &StreamName, frame: Frame) {
        let shard = self.shard(stream);
        let message = (shard.shared.names.channel(stream), wire::plain(&frame));
        // Closed only when the broker is dropped.
        let _ = shard.ephemeral.send(message);
    }

    async fn send_to_connection(
        &self,
        id: ConnectionId,
        frame: Frame,
    ) -> Result<usize, BrokerError> {
        // Here first: exact when this node holds the connection.
        if self.first().shared.delivery().is_some_and(|d| d.deliver_to_connection(id, &frame)) {
            return Ok(1);
        }
        self.publish_to_connection(id, &frame, None).await?;
        // Another node may have delivered it: `send_to_connection_counted` tells.
        Ok(0)
    }

    async fn send_to_connection_counted(
        &self,
        id: ConnectionId,
        frame: Frame,
        within: Duration,
    ) -> Result<(usize, Option<NodeReceipts>), BrokerError> {
        if self.first().shared.delivery().is_some_and(|d| d.deliver_to_connection(id, &frame)) {
            return Ok((1, Some(NodeReceipts { answered: 1, expected: 1 })));
        }
        let receipts = self.first().shared.expect_receipts();
        let receivers = self.publish_to_connection(id, &frame, Some(receipts.reply())).await?;
        // One connection is on one node at most: its answer is enough.
        let (delivered, nodes) = receipts.collect(receivers, within, |n| n > 0).await;
        Ok((delivered, Some(nodes)))
    }

    async fn recover(
        &self,
        stream: &StreamName,
        since: Option<&Position>,
        max: usize,
    ) -> Result<Recovered, BrokerError> {
        let shard = self.shard(stream);
        let shared = &*shard.shared;
        let names = &shared.names;
        let channel = names.channel(stream);
        let interested = self.subscribed(shared, &channel).await?;
        let Some(limits) = self.config.history.limits(stream) else {
            return Ok(Recovered { position: None, publications: None });
        };
        let before = if interested { shared.seen(&channel) } else { None };
        let mut invocation = self.recover_script.prepare_invoke();
        invocation
            .key(names.meta(stream))
            .key(names.history(stream))
            .arg(random(RANDOM_LEN))
            .arg(self.meta_ttl(&limits))
            .arg(since.map(|s| s.offset.to_string()).unwrap_or_default())
            .arg(since.map_or("", |s| s.epoch.as_str()))
            .arg(max);
        let (epoch, top, now, entries): (String, String, String, Vec<Entry>) = invocation
            .invoke_async(&mut shard.commands.clone())
            .await
            .map_err(|e| unavailable("recover", &e))?;
        let unexpected =
            || BrokerError::Unavailable("redis recover: an unexpected answer".to_owned());
        let position = Position {
            epoch: Epoch::new(epoch).map_err(|_| unexpected())?,
            offset: top.parse().map_err(|_| unexpected())?,
        };
        let now = UnixMillis(now.parse().map_err(|_| unexpected())?);
        if interested {
            // Everything Redis sent before the read is handled once the barrier is back: no
            // publication at or below the top is delivered after this returns, and one the
            // node never received is reported. The barrier goes through the stream's shard,
            // so it follows the stream's messages on the same pub/sub connection.
            let mut commands = shard.commands.clone();
            shared
                .barrier(&mut commands, Some(&channel))
                .await
                .map_err(BrokerError::Unavailable)?;
            shared.settle(&channel, stream, before.as_ref(), &position);
        }
        let publications =
            since.and_then(|since| decide(stream, &position, since, now, &entries, &limits, max));
        Ok(Recovered { position: Some(position), publications })
    }

    fn interest(&self, stream: &StreamName, interested: bool) {
        let shared = &self.shard(stream).shared;
        shared.interest(shared.names.channel(stream), interested);
    }

    async fn revoke(
        &self,
        user: &UserId,
        issued_before: UnixMillis,
        keep_until: UnixMillis,
    ) -> Result<(), BrokerError> {
        let issued_before = UnixMillis(issued_before.0.min(MAX_MILLIS));
        let keep_until = UnixMillis(keep_until.0.min(MAX_MILLIS));
        // On the first shard: its control channel and its keys.
        let first = self.first();
        let message = RevocationMessage {
            node: first.shared.node_id.clone(),
            user: user.clone(),
            issued_before,
            keep_until,
        };
        let mut invocation = self.revoke_script.prepare_invoke();
        invocation
            .key(first.shared.names.revoked(user))
            .arg(issued_before.0)
            .arg(keep_until.0)
            .arg(first.shared.names.control())
            .arg(wire::revocation(&message));
        let _recorded: i64 = invocation
            .invoke_async(&mut first.commands.clone())
            .await
            .map_err(|e| unavailable("revoke", &e))?;
        first.shared.remember(user, issued_before, keep_until);
        Ok(())
    }

    fn health(&self) -> BrokerHealth {
        let state = self.state();
        BrokerHealth {
            backend: "redis",
            connected: state.connected,
            counters: vec![
                ("reconnects", state.reconnects),
                ("dropped", state.dropped),
                ("gaps", state.gaps),
                ("last_resubscribe_millis", state.last_resubscribe_millis),
            ],
        }
    }

    fn revoked_before(&self, user: &UserId) -> Option<UnixMillis> {
        let revocation = *self.first().shared.revocations.read().get(user)?;
        (revocation.keep_until > now()).then_some(revocation.issued_before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> StreamName {
        StreamName::parse("topic:t").unwrap_or_else(|e| panic!("{e}"))
    }

    fn at(epoch: &str, offset: u64) -> Position {
        Position { epoch: Epoch::new(epoch).unwrap_or_else(|e| panic!("{e}")), offset }
    }

    fn entry(offset: u64, published_at: u64) -> Entry {
        let fields =
            ["o", &offset.to_string(), "t", &published_at.to_string(), "d", r#"{"type":"n"}"#];
        (format!("{offset}-0"), fields.iter().map(|s| (*s).to_owned()).collect())
    }

    #[track_caller]
    fn check(since: Position, entries: &[Entry], max: usize, expected: Option<Vec<u64>>) {
        let limits = HistoryLimits { max_len: 100, max_age_millis: 1_000 };
        let decided =
            decide(&stream(), &at("e", 5), &since, UnixMillis(10_000), entries, &limits, max);
        let offsets = decided.map(|frames| {
            frames
                .iter()
                .map(|f| {
                    let value: serde_json::Value =
                        serde_json::from_str(f.as_str()).unwrap_or_else(|e| panic!("{e}"));
                    assert_eq!(value["epoch"], "e");
                    assert_eq!(value["stream"], "topic:t");
                    value["offset"].as_u64().unwrap_or_else(|| panic!("{value}"))
                })
                .collect::<Vec<_>>()
        });
        assert_eq!(offsets, expected);
    }

    #[test]
    fn recovery_is_all_or_nothing() {
        let fresh: Vec<Entry> = (3..=5).map(|o| entry(o, 9_500)).collect();
        check(at("e", 2), &fresh, 300, Some(vec![3, 4, 5]));
        check(at("e", 5), &[], 300, Some(vec![]));
        check(at("x", 2), &fresh, 300, None);
        check(at("e", 6), &[], 300, None);
        check(at("e", 2), &fresh, 2, None);
        check(at("e", 1), &fresh, 300, None);
        check(at("e", 2), &fresh[1..], 300, None);
        check(at("e", 2), &fresh[..2], 300, None);
        let aged = [entry(3, 8_999), entry(4, 9_500), entry(5, 9_500)];
        check(at("e", 2), &aged, 300, None);
        let exactly_at_the_limit = [entry(3, 9_000), entry(4, 9_500), entry(5, 9_500)];
        check(at("e", 2), &exactly_at_the_limit, 300, Some(vec![3, 4, 5]));
        let mut broken = fresh.clone();
        broken[1].1.truncate(2);
        check(at("e", 2), &broken, 300, None);
    }

    #[test]
    fn config_debug_hides_the_url() {
        let config = RedisBrokerConfig::new("redis://:s3cret@localhost:6379");
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn prefixes() {
        assert!(valid_prefix("rt") && valid_prefix("app.v2:rt"));
        for bad in ["", "a{b", "a}b", "a b"] {
            assert!(!valid_prefix(bad), "{bad:?}");
        }
    }
}
