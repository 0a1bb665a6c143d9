//! [`InMemoryBroker`]: positions, bounded history, recovery, idempotency keys and
//! revocations of one node, delivered through the node's `LocalDelivery`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use rand::Rng;
use rand::distr::Alphanumeric;
use realtime_core::{
    ConnectionId, Epoch, Frame, HistoryPolicy, IdempotencyKey, Position, Recovery, StreamHistory,
    StreamName, UnixMillis, UserId,
};
use realtime_ports::{Broker, BrokerError, LocalDelivery, Published, Recovered};

/// How an [`InMemoryBroker`] keeps streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InMemoryBrokerConfig {
    /// Which streams keep history, and how much.
    pub history: HistoryPolicy,
    /// How long an idempotency key is remembered (300 s).
    pub idempotency_ttl: Duration,
    /// How long a stream whose history is empty keeps its epoch and offset after it was last
    /// used (1 h); after that it is forgotten, and a client that comes back with a position
    /// in it gets `recovered: false`.
    pub idle_stream_ttl: Duration,
}

impl Default for InMemoryBrokerConfig {
    fn default() -> Self {
        InMemoryBrokerConfig {
            history: HistoryPolicy::default(),
            idempotency_ttl: Duration::from_secs(300),
            idle_stream_ttl: Duration::from_secs(3600),
        }
    }
}

/// Operations between two sweeps of idle streams and expired keys.
const SWEEP_EVERY_OPS: u64 = 4096;
/// Longest time between two sweeps while the broker is used.
const SWEEP_EVERY_MILLIS: u64 = 10_000;
/// Length of a drawn epoch.
const EPOCH_LEN: usize = 16;

/// The in-process [`Broker`]: every stream's history in memory, one lock per stream (held
/// while a publication is appended and delivered, so a stream's deliveries keep offset order).
pub struct InMemoryBroker {
    config: InMemoryBrokerConfig,
    delivery: OnceLock<Weak<dyn LocalDelivery>>,
    streams: Mutex<HashMap<StreamName, Arc<Mutex<Stream>>>>,
    revocations: RwLock<HashMap<UserId, Revocation>>,
    ops: AtomicU64,
    last_sweep: AtomicU64,
}

impl std::fmt::Debug for InMemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryBroker")
            .field("config", &self.config)
            .field("streams", &self.streams.lock().len())
            .finish_non_exhaustive()
    }
}

/// One stream: its history (none when the policy keeps none) and its recent idempotency keys.
struct Stream {
    history: Option<StreamHistory>,
    /// Made on the first idempotency key and dropped when the last expires: most streams
    /// (every connection's own user stream) never see one, and an empty map and queue inline
    /// would cost each of them 80 bytes.
    keys: Option<Box<Keys>>,
    last_used: UnixMillis,
}

/// The idempotency keys a stream has seen, until they expire.
#[derive(Default)]
struct Keys {
    seen: HashMap<IdempotencyKey, (Published, UnixMillis)>,
    /// Keys in the order they were added, to expire them oldest first.
    order: VecDeque<IdempotencyKey>,
}

impl Stream {
    fn expire_keys(&mut self, now: UnixMillis) {
        let Some(keys) = self.keys.as_mut() else { return };
        while let Some(oldest) = keys.order.front() {
            match keys.seen.get(oldest) {
                Some((_, expires)) if *expires > now => break,
                _ => {
                    if let Some(key) = keys.order.pop_front() {
                        keys.seen.remove(&key);
                    }
                }
            }
        }
        if keys.order.is_empty() {
            self.keys = None;
        }
    }

    /// Whether nothing would be lost by forgetting the stream at `now`.
    fn idle(&self, now: UnixMillis, ttl_millis: u64) -> bool {
        self.keys.as_ref().is_none_or(|keys| keys.seen.is_empty())
            && self.history.as_ref().is_none_or(StreamHistory::is_empty)
            && self.last_used.0.saturating_add(ttl_millis) <= now.0
    }
}

#[derive(Debug, Clone, Copy)]
struct Revocation {
    issued_before: UnixMillis,
    keep_until: UnixMillis,
}

impl InMemoryBroker {
    /// A broker keeping streams as `config` says.
    pub fn new(config: InMemoryBrokerConfig) -> InMemoryBroker {
        InMemoryBroker {
            config,
            delivery: OnceLock::new(),
            streams: Mutex::new(HashMap::new()),
            revocations: RwLock::new(HashMap::new()),
            ops: AtomicU64::new(0),
            last_sweep: AtomicU64::new(0),
        }
    }

    /// How many streams the broker holds (for tests and metrics).
    pub fn stream_count(&self) -> usize {
        self.streams.lock().len()
    }

    fn delivery(&self) -> Option<Arc<dyn LocalDelivery>> {
        self.delivery.get().and_then(Weak::upgrade)
    }

    /// The stream's entry, created (with a fresh epoch) when missing.
    fn stream(&self, name: &StreamName, now: UnixMillis) -> Arc<Mutex<Stream>> {
        self.maybe_sweep(now);
        let mut streams = self.streams.lock();
        if let Some(stream) = streams.get(name) {
            return Arc::clone(stream);
        }
        let history =
            self.config.history.limits(name).map(|limits| StreamHistory::new(new_epoch(), limits));
        let stream = Arc::new(Mutex::new(Stream { history, keys: None, last_used: now }));
        streams.insert(name.clone(), Arc::clone(&stream));
        stream
    }

    /// Every [`SWEEP_EVERY_OPS`] operations or [`SWEEP_EVERY_MILLIS`]: drops aged-out
    /// publications, expired keys, idle streams and expired revocations.
    fn maybe_sweep(&self, now: UnixMillis) {
        let ops = self.ops.fetch_add(1, Ordering::Relaxed);
        let last = self.last_sweep.load(Ordering::Relaxed);
        let due = ops % SWEEP_EVERY_OPS == SWEEP_EVERY_OPS - 1
            || now.0.saturating_sub(last) >= SWEEP_EVERY_MILLIS;
        if !due
            || self
                .last_sweep
                .compare_exchange(last, now.0, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.sweep(now);
    }

    /// Drops aged-out publications, expired keys, idle streams and expired revocations.
    pub fn sweep(&self, now: UnixMillis) {
        let ttl = u64::try_from(self.config.idle_stream_ttl.as_millis()).unwrap_or(u64::MAX);
        self.streams.lock().retain(|_, stream| {
            // A stream someone holds (between looking it up and locking it, or locked) is in
            // use: kept. The map's lock is held, so no new holder can appear meanwhile.
            if Arc::strong_count(stream) > 1 {
                return true;
            }
            let Some(mut stream) = stream.try_lock() else { return true };
            stream.expire_keys(now);
            if let Some(history) = stream.history.as_mut() {
                history.handle_timeout(now);
            }
            !stream.idle(now, ttl)
        });
        self.revocations.write().retain(|_, revocation| revocation.keep_until > now);
    }

    fn expires(&self, now: UnixMillis) -> UnixMillis {
        let ttl = u64::try_from(self.config.idempotency_ttl.as_millis()).unwrap_or(u64::MAX);
        UnixMillis(now.0.saturating_add(ttl))
    }
}

impl Default for InMemoryBroker {
    fn default() -> Self {
        InMemoryBroker::new(InMemoryBrokerConfig::default())
    }
}

/// A fresh random epoch of [`EPOCH_LEN`] letters and digits.
fn new_epoch() -> Epoch {
    let raw: String =
        rand::rng().sample_iter(&Alphanumeric).take(EPOCH_LEN).map(char::from).collect();
    // Alphanumeric and EPOCH_LEN <= Epoch::MAX_LEN: always valid.
    Epoch::new(raw).unwrap_or_else(|_| unreachable_epoch())
}

#[cold]
fn unreachable_epoch() -> Epoch {
    Epoch::new("0").unwrap_or_else(|_| unreachable!("\"0\" is a valid epoch"))
}

/// Wall-clock now; the epoch if the clock is set before it.
fn now() -> UnixMillis {
    UnixMillis::from_system_time(SystemTime::now())
}

#[async_trait]
impl Broker for InMemoryBroker {
    fn attach(&self, delivery: Weak<dyn LocalDelivery>) {
        // Only the first attach counts: one broker serves one service.
        let _ = self.delivery.set(delivery);
    }

    async fn publish(
        &self,
        stream: &StreamName,
        frame: Frame,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> Result<Published, BrokerError> {
        let now = now();
        let entry = self.stream(stream, now);
        let mut state = entry.lock();
        state.last_used = now;
        if let Some(key) = idempotency_key {
            state.expire_keys(now);
            if let Some((first, _)) = state.keys.as_ref().and_then(|keys| keys.seen.get(key)) {
                return Ok(Published { duplicate: true, ..first.clone() });
            }
        }
        let delivery = self.delivery();
        let (position, delivered) = match state.history.as_mut() {
            Some(history) => {
                let mut positioned = None;
                let position = history.append(now, |position| {
                    let with = frame.with_position(stream, position);
                    positioned = Some(with.clone());
                    with
                });
                let frame = positioned.unwrap_or(frame);
                let delivered = delivery.map_or(0, |d| d.deliver(stream, Some(&position), &frame));
                (Some(position), delivered)
            }
            None => (None, delivery.map_or(0, |d| d.deliver(stream, None, &frame))),
        };
        let published = Published { position, delivered, duplicate: false, nodes: None };
        if let Some(key) = idempotency_key {
            let expires = self.expires(now);
            let keys = state.keys.get_or_insert_with(Box::default);
            keys.seen.insert(key.clone(), (published.clone(), expires));
            keys.order.push_back(key.clone());
        }
        Ok(published)
    }

    fn publish_ephemeral(&self, stream: &StreamName, frame: Frame) {
        let Some(delivery) = self.delivery() else { return };
        // Under the stream's lock, so it keeps its place among the stream's publications.
        let entry = self.streams.lock().get(stream).cloned();
        let _order = entry.as_ref().map(|entry| entry.lock());
        delivery.deliver(stream, None, &frame);
    }

    async fn send_to_connection(
        &self,
        id: ConnectionId,
        frame: Frame,
    ) -> Result<usize, BrokerError> {
        Ok(self.delivery().map_or(0, |d| usize::from(d.deliver_to_connection(id, &frame))))
    }

    async fn recover(
        &self,
        stream: &StreamName,
        since: Option<&Position>,
        max: usize,
    ) -> Result<Recovered, BrokerError> {
        let now = now();
        let entry = self.stream(stream, now);
        let mut state = entry.lock();
        state.last_used = now;
        let Some(history) = state.history.as_mut() else {
            return Ok(Recovered { position: None, publications: None });
        };
        let publications = since.and_then(|since| match history.recover(since, now, max) {
            Recovery::Recovered(frames) => Some(frames),
            Recovery::NotRecovered => None,
        });
        Ok(Recovered { position: Some(history.position()), publications })
    }

    fn interest(&self, _stream: &StreamName, _interested: bool) {
        // One node: every publication is delivered locally anyway.
    }

    async fn revoke(
        &self,
        user: &UserId,
        issued_before: UnixMillis,
        keep_until: UnixMillis,
    ) -> Result<(), BrokerError> {
        {
            let mut revocations = self.revocations.write();
            let entry =
                revocations.entry(user.clone()).or_insert(Revocation { issued_before, keep_until });
            entry.issued_before = entry.issued_before.max(issued_before);
            entry.keep_until = entry.keep_until.max(keep_until);
        }
        // One node: there is no other node to tell; the service closes its own connections.
        Ok(())
    }

    fn revoked_before(&self, user: &UserId) -> Option<UnixMillis> {
        let revocation = *self.revocations.read().get(user)?;
        (revocation.keep_until > now()).then_some(revocation.issued_before)
    }
}
