//! [`Shard`]: a group of benchmark WebSocket clients in one process, and the exactly-once
//! accounting of the messages they receive.
//!
//! Messages are counted in *rounds*. A round is a numbered batch of benchmark messages
//! (`{"type":"bench","payload":{"r":round,"s":seq,"t":sent_us,"to":user?}}`), either
//! broadcasts (every connection must receive every sequence number once) or user-targeted
//! (only the connection of user `to` may receive it). For each delivery a connection checks
//! the round, whether it already saw that sequence number (duplicate) and whether it is the
//! intended user (misrouted); first correct deliveries are counted per sequence number and
//! their latency (receive wall clock minus the send timestamp) goes into a histogram. When
//! a sequence number has reached every connection of the shard that should get it, the
//! shard emits a *done* event, which lets a driver publish in closed loop.
//!
//! For the soak scenarios a shard can also open *slow* connections (role [`SLOW_ROLE`] in
//! their token, left out of every round) that stop reading on [`Shard::pause_slow`], close
//! every connection (half with a closing handshake, half by dropping the socket), and count
//! how its connections ended, by close code ([`Shard::status`]).
//!
//! Every connection keeps the stream positions of its `connected` frame. After
//! [`Shard::disconnect_all`] a shard can open the same connections again
//! ([`Shard::reconnect`]), with those positions as `since` when asked to recover: each then
//! checks that it received exactly the publications it missed ([`RecoveryCheck`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::BenchError;
use crate::hist::{HistPairs, new_hist, record};
use crate::recovery::{RecoveryCheck, RecoveryError};
use crate::wire::{
    BENCH_TYPE, Positions, connected_streams, mint_token, parse_incoming, positions_of,
    since_param, unix_micros,
};

/// Histogram shards per round (connections record into `index % HIST_SHARDS`).
const HIST_SHARDS: usize = 16;

/// The role in the token of every slow connection (so a driver can fill their queues with
/// `Target::Role`).
pub const SLOW_ROLE: &str = "bench-slow";

/// The client-side WebSocket settings: small read buffer (4 KiB), 64 KiB message limit.
pub fn client_ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024))
}

/// The user id (JWT `sub`) of connection `index` of shard `shard`: unique per connection.
pub fn user_of(shard: u32, index: u32) -> String {
    format!("s{shard}u{index}")
}

/// How a shard opens its connections.
#[derive(Clone)]
pub struct ShardConfig {
    /// The server's address.
    pub addr: SocketAddr,
    /// The HS256 secret client tokens are signed with.
    pub secret: Vec<u8>,
    /// This shard's number (part of every user id, and of the source-address spread).
    pub shard: u32,
    /// Roles put in every token.
    pub roles: Vec<String>,
    /// Time allowed for one connection: TCP connect, upgrade and the `connected` frame.
    pub connect_timeout: Duration,
    /// Spread client sockets over 127.0.0.2..=127.0.0.251 (only used when `addr` is an IPv4
    /// loopback address).
    pub spread_sources: bool,
}

impl std::fmt::Debug for ShardConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardConfig")
            .field("addr", &self.addr)
            .field("shard", &self.shard)
            .field("roles", &self.roles)
            .field("connect_timeout", &self.connect_timeout)
            .field("spread_sources", &self.spread_sources)
            .finish_non_exhaustive()
    }
}

impl ShardConfig {
    /// A configuration with the defaults: no roles, 10 s connect timeout, spread sources.
    pub fn new(addr: SocketAddr, secret: Vec<u8>, shard: u32) -> ShardConfig {
        ShardConfig {
            addr,
            secret,
            shard,
            roles: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            spread_sources: true,
        }
    }
}

/// What a round of messages is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundKind {
    /// Every connection must receive every message once.
    Broadcast,
    /// Each message is for one user; only that user's connection may receive it.
    User,
}

/// The outcome of opening connections.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectReport {
    /// Connections asked for.
    pub requested: u32,
    /// Connections opened (`connected` frame received).
    pub ok: u32,
    /// Connections that failed.
    pub failed: u32,
    /// Wall time of the whole batch, in microseconds.
    pub elapsed_us: u64,
    /// Handshake latency (TCP connect to `connected` frame), in microseconds.
    pub latency: HistPairs,
    /// The first failure, if any.
    pub first_error: Option<String>,
}

/// The outcome of [`Shard::reconnect`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReconnectReport {
    /// Connections asked for (those closed by the last [`Shard::disconnect_all`]).
    pub requested: u32,
    /// Connections open again (and, when recovering, with every missed publication checked).
    pub ok: u32,
    /// Connections that could not be opened (handshake, timeout).
    pub failed: u32,
    /// Recovering: connections whose `connected` said `recovered: false` for a stream of
    /// their `since` (or a new epoch).
    pub not_recovered: u32,
    /// Recovering: connections that got a wrong count of missed publications, or them out
    /// of order.
    pub wrong_count: u32,
    /// Recovering: missed publications received, over every connection.
    pub recovered_messages: u64,
    /// Wall time of the whole batch (until the last connection had everything), µs.
    pub elapsed_us: u64,
    /// Per connection: TCP connect until `connected` (and, recovering, the last missed
    /// publication), µs.
    pub latency: HistPairs,
    /// The first failure, if any.
    pub first_error: Option<String>,
}

/// How many connections ended one way, and when.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseCount {
    /// Slow connections (true) or the others.
    pub slow: bool,
    /// The close code the server sent; `None` when the connection ended without a close
    /// frame (reset, end of stream, or dropped by this side).
    pub code: Option<u16>,
    /// Connections.
    pub count: u64,
    /// Earliest end, microseconds since the Unix epoch.
    pub first_us: u64,
    /// Latest end, microseconds since the Unix epoch.
    pub last_us: u64,
}

/// Open connections and the ends counted since the previous status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Open connections that are not slow.
    pub open: u32,
    /// Open slow connections.
    pub open_slow: u32,
    /// Ends since the previous status, by kind of connection and close code.
    pub closes: Vec<CloseCount>,
}

/// The outcome of [`Shard::disconnect_all`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisconnectReport {
    /// Connections closed with a closing handshake (code 1000).
    pub clean: u32,
    /// Connections whose socket was dropped without one.
    pub dropped: u32,
    /// Clean closes that had not finished within the timeout (then dropped).
    pub timed_out: u32,
    /// Wall time, in microseconds.
    pub elapsed_us: u64,
}

/// The outcome of one round on one shard.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundReport {
    /// The round.
    pub round: u64,
    /// Live connections when the round began (each must get every broadcast).
    pub connections: u32,
    /// Sequence numbers in the round.
    pub seqs: u32,
    /// First, correct deliveries.
    pub deliveries: u64,
    /// Broadcast rounds: deliveries that did not arrive (`connections * seqs - deliveries`).
    /// User rounds: 0 here; a driver sums `per_seq_count` over shards instead.
    pub missing: u64,
    /// Deliveries of a sequence number a connection had already received.
    pub duplicates: u64,
    /// Targeted messages received by a connection of another user.
    pub misrouted: u64,
    /// Benchmark messages of another round, or out of range (counted since the last report).
    pub stale: u64,
    /// Correct deliveries per sequence number.
    pub per_seq_count: Vec<u32>,
    /// Largest latency per sequence number (the last receiver), in microseconds.
    pub per_seq_max_us: Vec<u64>,
    /// Per-delivery latency, in microseconds.
    pub latency: HistPairs,
    /// Connections that ended since the shard opened them.
    pub closed_connections: u64,
}

impl RoundReport {
    /// Duplicates, misrouted and stale deliveries together: everything that arrived but
    /// should not have.
    pub fn extra(&self) -> u64 {
        self.duplicates + self.misrouted + self.stale
    }
}

/// The counters of the current round, shared by every connection task.
struct Round {
    id: u64,
    kind: RoundKind,
    seqs: u32,
    expected_local: u32,
    counts: Vec<AtomicU32>,
    max_lat: Vec<AtomicU64>,
    hists: Vec<Mutex<Histogram<u64>>>,
    duplicates: AtomicU64,
    misrouted: AtomicU64,
    done: Option<mpsc::UnboundedSender<(u64, u32)>>,
}

impl Round {
    fn new(
        id: u64,
        kind: RoundKind,
        seqs: u32,
        expected_local: u32,
        done: Option<mpsc::UnboundedSender<(u64, u32)>>,
    ) -> Round {
        let n = seqs as usize;
        Round {
            id,
            kind,
            seqs,
            expected_local,
            counts: (0..n).map(|_| AtomicU32::new(0)).collect(),
            max_lat: (0..n).map(|_| AtomicU64::new(0)).collect(),
            hists: (0..HIST_SHARDS).map(|_| Mutex::new(new_hist())).collect(),
            duplicates: AtomicU64::new(0),
            misrouted: AtomicU64::new(0),
            done,
        }
    }
}

/// Locks a mutex, ignoring poisoning (the guarded data stays consistent: counters only).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Which sequence numbers of a round one connection has received.
struct Seen {
    round: u64,
    bits: Vec<u64>,
}

impl Seen {
    /// Marks `seq` as received; false when it already was.
    fn insert(&mut self, round: u64, seqs: u32, seq: u32) -> bool {
        if self.round != round {
            self.round = round;
            self.bits.clear();
            self.bits.resize((seqs as usize).div_ceil(64), 0);
        }
        if seq >= seqs {
            return false;
        }
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        match self.bits.get_mut(word) {
            Some(w) if *w & (1 << bit) == 0 => {
                *w |= 1 << bit;
                true
            }
            _ => false,
        }
    }
}

/// One client connection's state shared with the shard.
struct ConnState {
    index: u32,
    user: String,
    /// Left out of rounds; stops reading while the shard's slow connections are paused.
    slow: bool,
    alive: AtomicBool,
    seen: Mutex<Seen>,
    /// Asks the connection for a closing handshake.
    closer: Mutex<Option<oneshot::Sender<()>>>,
    /// The stream positions of its `connected` frame.
    positions: Positions,
}

/// A connection closed by [`Shard::disconnect_all`], remembered for [`Shard::reconnect`].
struct Away {
    index: u32,
    slow: bool,
    positions: Positions,
}

/// An open connection, its `connected` frame read (and, recovering, what it missed).
struct Opened {
    ws: WebSocketStream<TcpStream>,
    positions: Positions,
    recovered: u64,
}

/// Why a connection could not be opened: a failure, or a recovery that went wrong.
enum OpenError {
    Failed(BenchError),
    Recovery(RecoveryError),
}

impl From<BenchError> for OpenError {
    fn from(e: BenchError) -> Self {
        OpenError::Failed(e)
    }
}

/// State shared by all connection tasks of a shard.
struct Shared {
    round: RwLock<Arc<Round>>,
    stray: AtomicU64,
    closed: AtomicU64,
    /// Whether slow connections stop reading (checked by them before every read).
    paused: AtomicBool,
    /// Wakes paused slow connections.
    resume: watch::Sender<()>,
    /// Ends since the last status.
    closes: Mutex<Ends>,
}

/// Ends of connections: `(slow, close code)` → `(count, first µs, last µs)`.
type Ends = BTreeMap<(bool, Option<u16>), (u64, u64, u64)>;

impl Shared {
    fn current(&self) -> Arc<Round> {
        self.round.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// A group of benchmark clients connected to one server.
pub struct Shard {
    cfg: ShardConfig,
    shared: Arc<Shared>,
    conns: Vec<Arc<ConnState>>,
    tasks: Vec<JoinHandle<()>>,
    /// The connections the last [`Shard::disconnect_all`] closed.
    away: Vec<Away>,
    /// The index the next connection gets (failed connections use up theirs too).
    next_index: u32,
    done_tx: mpsc::UnboundedSender<(u64, u32)>,
    done_rx: Option<mpsc::UnboundedReceiver<(u64, u32)>>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("cfg", &self.cfg)
            .field("connections", &self.conns.len())
            .finish_non_exhaustive()
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Shard {
    /// A shard with no connections yet.
    pub fn new(cfg: ShardConfig) -> Shard {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let idle = Round::new(0, RoundKind::Broadcast, 0, 0, None);
        Shard {
            cfg,
            shared: Arc::new(Shared {
                round: RwLock::new(Arc::new(idle)),
                stray: AtomicU64::new(0),
                closed: AtomicU64::new(0),
                paused: AtomicBool::new(false),
                resume: watch::Sender::new(()),
                closes: Mutex::new(BTreeMap::new()),
            }),
            conns: Vec::new(),
            tasks: Vec::new(),
            away: Vec::new(),
            next_index: 0,
            done_tx,
            done_rx: Some(done_rx),
        }
    }

    /// The receiver of *done* events `(round, seq)`: a sequence number reached every
    /// connection of this shard that should receive it. Can be taken once.
    pub fn take_done_events(&mut self) -> Option<mpsc::UnboundedReceiver<(u64, u32)>> {
        self.done_rx.take()
    }

    /// Connections opened so far (live or not; failed attempts are not counted).
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether no connection was opened.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Connections still open (slow ones included).
    pub fn alive(&self) -> u32 {
        self.count_alive(|_| true)
    }

    fn count_alive(&self, pick: impl Fn(&ConnState) -> bool) -> u32 {
        let n = self.conns.iter().filter(|c| c.alive.load(Ordering::Relaxed) && pick(c)).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// The user of local connection `index`.
    pub fn user(&self, index: u32) -> String {
        user_of(self.cfg.shard, index)
    }

    /// Opens `count` more connections, at most `concurrency` handshakes at a time.
    ///
    /// Failures are counted in the report, not returned: a benchmark reports them.
    pub async fn connect(&mut self, count: u32, concurrency: u32) -> ConnectReport {
        self.connect_as(count, concurrency, false).await
    }

    /// [`Shard::connect`], of slow connections when `slow`: they carry [`SLOW_ROLE`], are
    /// left out of rounds and stop reading while [`Shard::pause_slow`] is in effect.
    pub async fn connect_as(&mut self, count: u32, concurrency: u32, slow: bool) -> ConnectReport {
        let first = self.next_index;
        self.next_index = first.saturating_add(count);
        let mut hist = new_hist();
        let mut report = ConnectReport { requested: count, ..ConnectReport::default() };
        let start = Instant::now();
        let cfg = &self.cfg;
        let opens = futures_util::stream::iter(first..first.saturating_add(count))
            .map(|index| async move {
                let started = Instant::now();
                let result = open(cfg, index, slow, None).await;
                (index, result, started.elapsed())
            })
            .buffer_unordered(concurrency.max(1) as usize);
        let opened: Vec<_> = opens.collect().await;
        report.elapsed_us = duration_us(start.elapsed());
        let mut opened_ok = Vec::new();
        for (index, result, took) in opened {
            match result {
                Ok(o) => {
                    report.ok += 1;
                    record(&mut hist, duration_us(took));
                    opened_ok.push((index, o));
                }
                Err(OpenError::Failed(e)) => {
                    report.failed += 1;
                    report.first_error.get_or_insert_with(|| e.to_string());
                }
                Err(OpenError::Recovery(e)) => {
                    report.failed += 1;
                    report.first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        self.adopt(opened_ok, slow);
        report.latency = HistPairs::of(&hist);
        report
    }

    /// Starts the read loops of freshly opened connections, in index order.
    fn adopt(&mut self, mut opened: Vec<(u32, Opened)>, slow: bool) {
        opened.sort_by_key(|(index, _)| *index);
        for (index, o) in opened {
            let (closer, close_asked) = oneshot::channel();
            let state = Arc::new(ConnState {
                index,
                user: self.user(index),
                slow,
                alive: AtomicBool::new(true),
                seen: Mutex::new(Seen { round: 0, bits: Vec::new() }),
                closer: Mutex::new(Some(closer)),
                positions: o.positions,
            });
            self.conns.push(state.clone());
            self.tasks.push(tokio::spawn(read_loop(o.ws, state, self.shared.clone(), close_asked)));
        }
    }

    /// Opens again, `concurrency` handshakes at a time, every connection the last
    /// [`Shard::disconnect_all`] closed (same index, so same user and source address).
    /// With `recover: Some(missed)` each presents the positions of its last `connected`
    /// frame as `since` and must then receive exactly `missed` publications over its
    /// streams, in order ([`RecoveryCheck`]); those that do not are counted as
    /// `not_recovered` or `wrong_count`, and closed.
    pub async fn reconnect(&mut self, concurrency: u32, recover: Option<u64>) -> ReconnectReport {
        let away = std::mem::take(&mut self.away);
        let mut report = ReconnectReport {
            requested: u32::try_from(away.len()).unwrap_or(u32::MAX),
            ..ReconnectReport::default()
        };
        let mut hist = new_hist();
        let start = Instant::now();
        let cfg = &self.cfg;
        let opens = futures_util::stream::iter(away.iter())
            .map(|a| async move {
                let started = Instant::now();
                let since = recover.map(|missed| (&a.positions, missed));
                let result = open(cfg, a.index, a.slow, since).await;
                (a, result, started.elapsed())
            })
            .buffer_unordered(concurrency.max(1) as usize);
        let opened: Vec<_> = opens.collect().await;
        report.elapsed_us = duration_us(start.elapsed());
        let (mut plain, mut slow) = (Vec::new(), Vec::new());
        for (a, result, took) in opened {
            match result {
                Ok(o) => {
                    report.ok += 1;
                    report.recovered_messages += o.recovered;
                    record(&mut hist, duration_us(took));
                    if a.slow { &mut slow } else { &mut plain }.push((a.index, o));
                }
                Err(OpenError::Failed(e)) => {
                    report.failed += 1;
                    report.first_error.get_or_insert_with(|| e.to_string());
                }
                Err(OpenError::Recovery(e)) => {
                    if e.is_not_recovered() {
                        report.not_recovered += 1;
                    } else {
                        report.wrong_count += 1;
                    }
                    report.first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        self.adopt(plain, false);
        self.adopt(slow, true);
        report.latency = HistPairs::of(&hist);
        report
    }

    /// Starts round `id` of `seqs` messages of `kind`; returns the number of live
    /// connections (slow ones left out), each of which must receive every broadcast of the
    /// round.
    pub fn begin_round(&self, id: u64, kind: RoundKind, seqs: u32) -> u32 {
        let expected = self.count_alive(|c| !c.slow);
        let round = Round::new(id, kind, seqs, expected, Some(self.done_tx.clone()));
        *self.shared.round.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Arc::new(round);
        expected
    }

    /// The counts of the current round so far (call after the messages had time to arrive).
    pub fn end_round(&self) -> RoundReport {
        let round = self.shared.current();
        let per_seq_count: Vec<u32> =
            round.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let deliveries: u64 = per_seq_count.iter().map(|&c| u64::from(c)).sum();
        let missing = match round.kind {
            RoundKind::Broadcast => {
                (u64::from(round.expected_local) * u64::from(round.seqs)).saturating_sub(deliveries)
            }
            RoundKind::User => 0,
        };
        let mut hist = new_hist();
        for h in &round.hists {
            let _ = hist.add(&*lock(h));
        }
        RoundReport {
            round: round.id,
            connections: round.expected_local,
            seqs: round.seqs,
            deliveries,
            missing,
            duplicates: round.duplicates.load(Ordering::Relaxed),
            misrouted: round.misrouted.load(Ordering::Relaxed),
            stale: self.shared.stray.swap(0, Ordering::Relaxed),
            per_seq_count,
            per_seq_max_us: round.max_lat.iter().map(|m| m.load(Ordering::Relaxed)).collect(),
            latency: HistPairs::of(&hist),
            closed_connections: self.shared.closed.load(Ordering::Relaxed),
        }
    }

    /// Slow connections stop reading (each after the frame it is reading, if any).
    pub fn pause_slow(&self) {
        self.shared.paused.store(true, Ordering::SeqCst);
    }

    /// Slow connections read again.
    pub fn resume_slow(&self) {
        self.shared.paused.store(false, Ordering::SeqCst);
        self.shared.resume.send_replace(());
    }

    /// Open connections, and the ends counted since the previous call.
    pub fn status(&self) -> StatusReport {
        let closes = std::mem::take(&mut *lock(&self.shared.closes));
        StatusReport {
            open: self.count_alive(|c| !c.slow),
            open_slow: self.count_alive(|c| c.slow),
            closes: closes
                .into_iter()
                .map(|((slow, code), (count, first_us, last_us))| CloseCount {
                    slow,
                    code,
                    count,
                    first_us,
                    last_us,
                })
                .collect(),
        }
    }

    /// Closes every connection and forgets it: those of even index with a closing handshake
    /// (1000, waiting up to `timeout` for the server's answer), the others by dropping the
    /// socket. Afterwards the shard holds no connection (indices go on counting up).
    pub async fn disconnect_all(&mut self, timeout: Duration) -> DisconnectReport {
        let start = Instant::now();
        let mut report = DisconnectReport::default();
        let mut clean = Vec::new();
        self.away = self
            .conns
            .iter()
            .map(|c| Away { index: c.index, slow: c.slow, positions: c.positions.clone() })
            .collect();
        for (conn, task) in self.conns.iter().zip(self.tasks.drain(..)) {
            let closer = lock(&conn.closer).take().filter(|_| conn.index % 2 == 0);
            match closer.map(|closer| closer.send(())) {
                Some(Ok(())) => {
                    report.clean += 1;
                    clean.push(task);
                }
                _ => {
                    report.dropped += 1;
                    task.abort();
                }
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        for mut task in clean {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                report.timed_out += 1;
                task.abort();
            }
        }
        self.conns.clear();
        report.elapsed_us = duration_us(start.elapsed());
        report
    }

    /// Closes every connection (the tasks are stopped and the sockets dropped).
    pub fn close(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        for c in &self.conns {
            c.alive.store(false, Ordering::Relaxed);
        }
    }
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The source address of connection `index` of shard `shard`.
fn source_ip(shard: u32, index: u32) -> IpAddr {
    // 250 addresses 127.0.0.2..=127.0.0.251; shards start at different offsets.
    let n = (u64::from(shard) * 97 + u64::from(index)) % 250;
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + n as u8))
}

/// Opens one connection: socket, upgrade, and the `connected` frame; with `since`
/// (positions, publications missed), the upgrade carries them and the missed publications
/// are read and checked before the connection counts as open.
async fn open(
    cfg: &ShardConfig,
    index: u32,
    slow: bool,
    since: Option<(&Positions, u64)>,
) -> Result<Opened, OpenError> {
    let user = user_of(cfg.shard, index);
    let token = if slow {
        let mut roles = cfg.roles.clone();
        roles.push(SLOW_ROLE.to_owned());
        mint_token(&cfg.secret, &user, &roles, 3600)?
    } else {
        mint_token(&cfg.secret, &user, &cfg.roles, 3600)?
    };
    let deadline = tokio::time::Instant::now() + cfg.connect_timeout;
    let work = async {
        let stream = tcp_connect(cfg, index).await?;
        let mut url = format!("ws://{}/ws?token={token}", cfg.addr);
        if let Some((positions, _)) = since {
            url.push_str("&since=");
            url.push_str(&since_param(positions));
        }
        let (mut ws, _response) =
            tokio_tungstenite::client_async_with_config(url, stream, Some(client_ws_config()))
                .await
                .map_err(BenchError::from)?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let streams = connected_streams(&text)?;
                    return Ok::<_, OpenError>((ws, streams));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(BenchError::Protocol(format!(
                        "closed before `connected`: {:?}",
                        frame.map(|f| u16::from(f.code))
                    ))
                    .into());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(BenchError::from(e).into()),
                None => {
                    return Err(BenchError::Protocol("closed before `connected`".into()).into());
                }
            }
        }
    };
    let (mut ws, streams) = tokio::time::timeout_at(deadline, work)
        .await
        .map_err(|_| BenchError::Timeout("opening a connection".into()))??;
    let positions = positions_of(&streams);
    let Some((since, missed)) = since else {
        return Ok(Opened { ws, positions, recovered: 0 });
    };
    let mut check = RecoveryCheck::new(since, &streams, missed).map_err(OpenError::Recovery)?;
    while !check.is_done() {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let m = parse_incoming(&text);
                let position = m.as_ref().and_then(|m| {
                    Some((m.stream.as_deref()?, m.offset?, m.epoch.as_deref().unwrap_or("")))
                });
                check.handle(position, &text).map_err(OpenError::Recovery)?;
            }
            Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) | Err(_) => {
                return Err(OpenError::Recovery(check.missing()));
            }
            Ok(Some(Ok(_))) => {}
        }
    }
    Ok(Opened { ws, positions, recovered: check.received() })
}

/// A TCP connection to the server, from a spread loopback source address when configured.
async fn tcp_connect(cfg: &ShardConfig, index: u32) -> Result<TcpStream, BenchError> {
    let stream = match cfg.addr.ip() {
        IpAddr::V4(ip) if cfg.spread_sources && ip.is_loopback() => {
            let socket = TcpSocket::new_v4()?;
            socket.set_reuseaddr(true)?;
            // Defer the choice of source port to connect(), so ports are only unique per
            // (source, destination) pair.
            nix::sys::socket::setsockopt(
                &socket,
                nix::sys::socket::sockopt::IpBindAddressNoPort,
                &true,
            )
            .map_err(|e| BenchError::Io(format!("IP_BIND_ADDRESS_NO_PORT: {e}")))?;
            socket.bind(SocketAddr::new(source_ip(cfg.shard, index), 0))?;
            socket.connect(cfg.addr).await?
        }
        _ => TcpStream::connect(cfg.addr).await?,
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Reads every frame of one connection until it closes (or, asked through `close_asked`,
/// closes it with a closing handshake), and records how it ended.
async fn read_loop(
    mut ws: WebSocketStream<TcpStream>,
    me: Arc<ConnState>,
    shared: Arc<Shared>,
    close_asked: oneshot::Receiver<()>,
) {
    // Fused: polled again after it fired (or its sender went), it stays pending.
    let mut close_asked = close_asked.fuse();
    let mut resume = shared.resume.subscribe();
    let code = loop {
        if me.slow {
            while shared.paused.load(Ordering::SeqCst) {
                if resume.changed().await.is_err() {
                    break;
                }
            }
        }
        let message = tokio::select! {
            biased;
            message = ws.next() => message,
            Ok(()) = &mut close_asked => {
                let _ = ws.close(None).await;
                continue;
            }
        };
        match message {
            Some(Ok(Message::Text(text))) => on_text(&text, &me, &shared),
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Err(_)) | None => break None,
            Some(Ok(_)) => {}
        }
    };
    me.alive.store(false, Ordering::Relaxed);
    shared.closed.fetch_add(1, Ordering::Relaxed);
    let now = unix_micros();
    let mut closes = lock(&shared.closes);
    let entry = closes.entry((me.slow, code)).or_insert((0, now, now));
    entry.0 += 1;
    entry.1 = entry.1.min(now);
    entry.2 = entry.2.max(now);
}

/// Accounts one received text frame.
fn on_text(text: &str, me: &ConnState, shared: &Shared) {
    if me.slow {
        return;
    }
    let now = unix_micros();
    let Some(message) = parse_incoming(text) else { return };
    if message.kind != BENCH_TYPE {
        return;
    }
    let p = &message.payload;
    let (Some(r), Some(s), Some(t)) = (p.r, p.s, p.t) else {
        shared.stray.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let round = shared.current();
    if r != round.id || s >= round.seqs {
        shared.stray.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if let Some(to) = &p.to
        && *to != me.user
    {
        round.misrouted.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if !lock(&me.seen).insert(r, round.seqs, s) {
        round.duplicates.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let latency = now.saturating_sub(t);
    let i = s as usize;
    let count = round.counts.get(i).map_or(0, |c| c.fetch_add(1, Ordering::Relaxed) + 1);
    if let Some(m) = round.max_lat.get(i) {
        m.fetch_max(latency, Ordering::Relaxed);
    }
    if let Some(h) = round.hists.get(me.index as usize % HIST_SHARDS) {
        record(&mut lock(h), latency);
    }
    let expected = match round.kind {
        RoundKind::Broadcast => round.expected_local,
        RoundKind::User => 1,
    };
    if count == expected
        && let Some(done) = &round.done
    {
        let _ = done.send((r, s));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_detects_duplicates_per_round() {
        let mut seen = Seen { round: 0, bits: Vec::new() };
        assert!(seen.insert(1, 100, 0));
        assert!(seen.insert(1, 100, 99));
        assert!(!seen.insert(1, 100, 0));
        assert!(!seen.insert(1, 100, 100), "out of range is never new");
        assert!(seen.insert(2, 3, 0), "a new round starts empty");
        assert!(!seen.insert(2, 3, 0));
    }

    #[test]
    fn source_addresses_stay_in_127_0_0_2_to_251() {
        for shard in 0..4 {
            for index in 0..600 {
                let IpAddr::V4(ip) = source_ip(shard, index) else { panic!("v6") };
                let o = ip.octets();
                assert_eq!(&o[..3], &[127, 0, 0]);
                assert!((2..=251).contains(&o[3]), "{ip}");
            }
        }
        assert_ne!(source_ip(0, 0), source_ip(0, 1));
    }

    #[test]
    fn rounds_count_deliveries_duplicates_misroutes_and_strays() {
        let shard = Shard::new(ShardConfig::new(([127, 0, 0, 1], 1).into(), vec![1; 32], 0));
        let me = ConnState {
            index: 0,
            user: "s0u0".into(),
            slow: false,
            alive: AtomicBool::new(true),
            seen: Mutex::new(Seen { round: 0, bits: Vec::new() }),
            closer: Mutex::new(None),
            positions: Positions::new(),
        };
        let shared = &shard.shared;
        *shared.round.write().unwrap() =
            Arc::new(Round::new(5, RoundKind::User, 3, 1, Some(shard.done_tx.clone())));
        let frame = |r: u64, s: u32, to: &str| {
            format!(r#"{{"type":"bench","payload":{{"r":{r},"s":{s},"t":1,"to":"{to}"}}}}"#)
        };
        for text in [
            frame(5, 0, "s0u0"),
            frame(5, 0, "s0u0"), // duplicate
            frame(5, 1, "s0u9"), // misrouted
            frame(4, 1, "s0u0"), // other round
            frame(5, 7, "s0u0"), // out of range
            r#"{"type":"connected","payload":{}}"#.to_owned(),
            "not json".to_owned(),
        ] {
            on_text(&text, &me, shared);
        }
        let report = shard.end_round();
        assert_eq!(report.per_seq_count, vec![1, 0, 0]);
        assert_eq!(
            (report.deliveries, report.duplicates, report.misrouted, report.stale),
            (1, 1, 1, 2)
        );
        assert_eq!(report.extra(), 4);
        assert_eq!(report.latency.to_hist().len(), 1);
    }
}
