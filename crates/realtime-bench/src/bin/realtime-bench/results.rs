//! The results of a benchmark run, as written to `results/bench/<date>.json`.

use realtime_bench::hist::{HistPairs, Summary};
use realtime_bench::shard::CloseCount;
use serde::{Deserialize, Serialize};

use crate::procfs::Machine;

/// Which server a session measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    /// `target/release/realtime-server`.
    RealtimeServer,
    /// `target/release/realtime-baseline`.
    Baseline,
}

impl TargetKind {
    /// The name used in tables and file names.
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::RealtimeServer => "realtime-server",
            TargetKind::Baseline => "baseline",
        }
    }
}

/// Connect scenario (a): every handshake of the session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectResult {
    /// Handshakes completed.
    pub handshakes: u64,
    /// Handshakes failed.
    pub failed: u64,
    /// Wall time spent connecting, summed over the batches, in seconds.
    pub seconds: f64,
    /// Handshakes per second.
    pub rate_per_s: f64,
    /// Handshake latency: TCP connect to `connected` frame, JWT verification included.
    pub latency: Summary,
    /// The first failure, if any.
    pub first_error: Option<String>,
}

/// Idle memory (b) at one N.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemorySample {
    /// Open connections.
    pub n: u32,
    /// Server RSS, KiB.
    pub rss_kib: u64,
    /// Machine slab, KiB.
    pub slab_kib: u64,
    /// (RSS − RSS before any connection) / N, bytes.
    pub rss_per_conn_bytes: f64,
    /// (slab − slab before any connection) / N, bytes (both ends of each loopback socket).
    pub slab_per_conn_bytes: f64,
}

/// A closed-loop series of broadcasts at one N (the ramp of the shootout metric, f).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    /// Open connections.
    pub n: u32,
    /// Broadcasts published.
    pub broadcasts: u32,
    /// Broadcasts that reached every connection within 500 ms.
    pub within_500ms: u32,
    /// `within_500ms / broadcasts`.
    pub fraction_within_500ms: f64,
    /// Per-broadcast completion (the last receiver), complete broadcasts only.
    pub completion: Summary,
    /// Per-delivery latency.
    pub delivery: Summary,
    /// Deliveries that did not arrive.
    pub missing: u64,
    /// Deliveries that should not have arrived.
    pub extra: u64,
}

/// Broadcast fan-out (c) at the main N.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FanoutResult {
    /// Open connections.
    pub n: u32,
    /// Broadcasts published (one at a time).
    pub broadcasts: u32,
    /// Per-broadcast completion (the last receiver).
    pub completion: Summary,
    /// Per-delivery latency.
    pub delivery: Summary,
    /// Per-delivery latency CDF: `(latency µs, cumulative fraction)`, at most 200 points.
    pub delivery_cdf: Vec<(u64, f64)>,
    /// Per-delivery latency histogram, for merging repetitions within a run (not written).
    #[serde(skip)]
    pub delivery_hist: HistPairs,
    /// Deliveries that did not arrive.
    pub missing: u64,
    /// Deliveries that should not have arrived.
    pub extra: u64,
    /// Sum of the server's `delivered` answers.
    pub server_delivered: u64,
    /// Deliveries expected.
    pub expected: u64,
}

/// send_to_user latency (e) at one N.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserResult {
    /// Open connections.
    pub n: u32,
    /// Messages published (one at a time, to random users).
    pub messages: u32,
    /// Publish-to-receive latency.
    pub latency: Summary,
    /// Messages that did not arrive.
    pub missing: u64,
    /// Deliveries that should not have arrived.
    pub extra: u64,
}

/// Sustained throughput (d) at one publish rate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThroughputResult {
    /// Open connections.
    pub n: u32,
    /// Broadcasts per second asked for.
    pub rate_per_s: u32,
    /// Broadcasts published.
    pub published: u32,
    /// Broadcasts per second actually published.
    pub achieved_rate_per_s: f64,
    /// Deliveries expected.
    pub expected: u64,
    /// Deliveries that arrived.
    pub deliveries: u64,
    /// First publish to last delivery, in seconds.
    pub seconds: f64,
    /// Deliveries per second.
    pub delivered_per_s: f64,
    /// Server CPU (user + system) over the window, in seconds.
    pub cpu_seconds: f64,
    /// Server CPU-seconds per million deliveries.
    pub cpu_s_per_million: f64,
    /// Per-delivery latency under this load.
    pub delivery: Summary,
    /// Deliveries that did not arrive.
    pub missing: u64,
    /// Deliveries that should not have arrived.
    pub extra: u64,
}

/// Everything one session (one server, one repetition) measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionResult {
    /// The server measured.
    pub target: TargetKind,
    /// Repetition, from 0.
    pub rep: usize,
    /// (a)
    pub connect: ConnectResult,
    /// Server RSS before any connection, KiB.
    pub rss_before_kib: u64,
    /// (b), one sample per N step.
    pub memory: Vec<MemorySample>,
    /// (f), one closed-loop series per N step.
    pub steps: Vec<StepResult>,
    /// (c)
    pub fanout: Option<FanoutResult>,
    /// (e)
    pub user: Vec<UserResult>,
    /// (d)
    pub throughput: Vec<ThroughputResult>,
    /// (f): the largest N (in the ramp's steps) up to which every step had 95% of its
    /// broadcasts complete within 500 ms; 0 if the first step failed.
    pub shootout_n: u32,
    /// Missing deliveries over every scenario.
    pub missing: u64,
    /// Extra deliveries over every scenario.
    pub extra: u64,
    /// Server CPU seconds over the whole session.
    pub server_cpu_seconds: f64,
    /// Anything unusual (failed handshakes, timeouts).
    pub notes: Vec<String>,
}

/// Churn: connect/disconnect cycles against one server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChurnResult {
    /// Cycles run.
    pub cycles: u32,
    /// Connections opened per cycle.
    pub connections: u32,
    /// Handshakes completed over every cycle.
    pub handshakes: u64,
    /// Handshakes failed over every cycle.
    pub failed: u64,
    /// Connections closed with a closing handshake.
    pub clean_closes: u64,
    /// Connections whose socket was dropped without one.
    pub dropped: u64,
    /// Cycles after which `/healthz` did not reach 0 connections within the wait.
    pub cycles_not_empty: u32,
    /// `/healthz` connections after the last cycle.
    pub registry_after: Option<u64>,
    /// Server RSS with every connection of the cycle open, KiB, per cycle.
    pub rss_connected_kib: Vec<u64>,
    /// Server RSS after the cycle's disconnect (registry empty), KiB, per cycle.
    pub rss_after_kib: Vec<u64>,
    /// RSS after the last cycle / RSS after the first.
    pub rss_last_vs_first: Option<f64>,
    /// Wall time, in seconds.
    pub seconds: f64,
}

/// Ends of connections merged over workers: one row per kind of connection and close code.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CloseSummary {
    /// Slow connections (true) or the others.
    pub slow: bool,
    /// The close code, or `None` for an end without a close frame.
    pub code: Option<u16>,
    /// Connections.
    pub count: u64,
    /// Earliest end, ms after the scenario's reference instant.
    pub first_ms: f64,
    /// Latest end, ms after the scenario's reference instant.
    pub last_ms: f64,
}

impl CloseSummary {
    /// Merges per-worker counts; times are relative to `t0_us` (µs since the Unix epoch).
    pub fn merge(counts: &[CloseCount], t0_us: u64) -> Vec<CloseSummary> {
        let mut rows: Vec<CloseSummary> = Vec::new();
        let ms = |us: u64| (us as f64 - t0_us as f64) / 1000.0;
        for c in counts {
            match rows.iter_mut().find(|r| r.slow == c.slow && r.code == c.code) {
                Some(row) => {
                    row.count += c.count;
                    row.first_ms = row.first_ms.min(ms(c.first_us));
                    row.last_ms = row.last_ms.max(ms(c.last_us));
                }
                None => rows.push(CloseSummary {
                    slow: c.slow,
                    code: c.code,
                    count: c.count,
                    first_ms: ms(c.first_us),
                    last_ms: ms(c.last_us),
                }),
            }
        }
        rows.sort_by_key(|r| (r.slow, r.code));
        rows
    }

    /// The count of `(slow, code)` in `rows`.
    pub fn count(rows: &[CloseSummary], slow: bool, code: Option<u16>) -> u64 {
        rows.iter().filter(|r| r.slow == slow && r.code == code).map(|r| r.count).sum()
    }
}

/// Slow consumers: some clients stop reading while the others receive broadcasts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlowResult {
    /// Connections that keep reading.
    pub readers: u32,
    /// Connections that stop reading.
    pub slow: u32,
    /// Broadcasts published during the scenario (each must reach every reader).
    pub broadcasts: u32,
    /// Messages published to the slow connections' role to fill their queues.
    pub fill_messages: u32,
    /// Bytes of payload in each fill message.
    pub fill_bytes: usize,
    /// Seconds from the pause until the registry held no slow connection.
    pub seconds_until_closed: Option<f64>,
    /// When the slow connections were told to read again, ms after the pause.
    pub resumed_ms: Option<f64>,
    /// How the slow connections ended (they read again once the server dropped them);
    /// times in ms after the pause.
    pub slow_closes: Vec<CloseSummary>,
    /// How readers ended during the scenario (should be none).
    pub reader_closes: Vec<CloseSummary>,
    /// The server's `realtime_connections_closed_total{reason="slow_consumer"}` afterwards.
    pub server_slow_consumer_closes: Option<u64>,
    /// Deliveries to readers expected.
    pub expected: u64,
    /// First, correct deliveries to readers.
    pub deliveries: u64,
    /// Deliveries to readers that did not arrive.
    pub missing: u64,
    /// Deliveries to readers that should not have arrived.
    pub extra: u64,
    /// Server RSS at the pause, KiB.
    pub rss_before_kib: u64,
    /// Largest server RSS seen during the scenario, KiB.
    pub rss_peak_kib: u64,
    /// Server RSS after the scenario, KiB.
    pub rss_after_kib: u64,
}

/// Drain: SIGTERM to the server with every connection open.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DrainResult {
    /// Connections open at the signal.
    pub connections: u32,
    /// The server's grace period, seconds.
    pub grace_secs: u64,
    /// How the connections ended; times in ms after the signal.
    pub closes: Vec<CloseSummary>,
    /// Connections that received 1012.
    pub got_1012: u64,
    /// When the last 1012 arrived, ms after the signal.
    pub last_1012_ms: Option<f64>,
    /// When the server process exited, ms after the signal.
    pub exit_ms: Option<f64>,
    /// Its exit status.
    pub exit_status: String,
}

/// The soak scenarios, run against a fresh realtime-server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SoakResult {
    /// Connections per scenario.
    pub n: u32,
    /// Server RSS before any connection, KiB.
    pub rss_start_kib: u64,
    /// Churn.
    pub churn: ChurnResult,
    /// Slow consumers.
    pub slow: SlowResult,
    /// Drain.
    pub drain: DrainResult,
    /// Anything unusual.
    pub notes: Vec<String>,
}

/// One reconnect of every client of the recovery scenario.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReconnectPhase {
    /// Connections asked to reconnect.
    pub requested: u32,
    /// Connections open again (recovering: with every missed publication, in order).
    pub ok: u32,
    /// Connections that could not be opened.
    pub failed: u32,
    /// Connections told `recovered: false` (or given a new epoch).
    pub not_recovered: u32,
    /// Connections that got a wrong count of missed publications, or them out of order.
    pub wrong_count: u32,
    /// Missed publications received over every connection.
    pub recovered_messages: u64,
    /// Until every client had `connected` (and, recovering, its missed publications), in
    /// seconds; `None` when any client failed, so an error is never reported as a number.
    pub seconds: Option<f64>,
    /// Server CPU (user + system) during the reconnect, in seconds.
    pub cpu_seconds: f64,
    /// Per client: TCP connect until it had everything.
    pub latency: Summary,
    /// The first failure, if any.
    pub first_error: Option<String>,
}

impl ReconnectPhase {
    /// Clients that did not get what they should have.
    pub fn errors(&self) -> u32 {
        self.failed + self.not_recovered + self.wrong_count
    }
}

/// One repetition of the recovery scenario: the same clients reconnect with `since`, and
/// without it, in an order that alternates between repetitions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecoveryRep {
    /// Repetition, from 0.
    pub rep: usize,
    /// Whether the plain reconnect ran first.
    pub plain_first: bool,
    /// Reconnect with `since`, each client missing the scenario's publications.
    pub recover: ReconnectPhase,
    /// Reconnect without `since`.
    pub plain: ReconnectPhase,
}

/// Recovery cost: N clients away while broadcasts are published, reconnecting at once.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecoveryResult {
    /// Clients.
    pub n: u32,
    /// Broadcasts published while they were away (each client misses them all).
    pub missed: u32,
    /// Handshakes in flight over all load-generator workers.
    pub concurrency: u32,
    /// Every repetition.
    pub reps: Vec<RecoveryRep>,
    /// Median seconds until every client recovered.
    pub recover_seconds: Option<f64>,
    /// Median seconds until every client was connected, without `since`.
    pub plain_seconds: Option<f64>,
    /// Median server CPU-seconds of the reconnect with `since`.
    pub recover_cpu_seconds: Option<f64>,
    /// Median server CPU-seconds of the plain reconnect.
    pub plain_cpu_seconds: Option<f64>,
    /// Clients that failed, were not recovered or got a wrong count, over every repetition.
    pub errors: u64,
}

/// One repetition of the history cost scenario against one server process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryRep {
    /// Repetition, from 0.
    pub rep: usize,
    /// History on (the default) or off for every stream kind.
    pub history: bool,
    /// The sustained broadcast load.
    pub throughput: ThroughputResult,
}

/// Publish cost with history on and off: the same sustained broadcast load against two
/// server processes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryCostResult {
    /// Clients.
    pub n: u32,
    /// Broadcasts per second.
    pub rate_per_s: u32,
    /// Seconds of publishing per repetition.
    pub secs: u32,
    /// Every repetition, in the order run.
    pub reps: Vec<HistoryRep>,
    /// Median deliveries per second, history on.
    pub on_delivered_per_s: Option<f64>,
    /// Median deliveries per second, history off.
    pub off_delivered_per_s: Option<f64>,
    /// Median server CPU-seconds per million deliveries, history on.
    pub on_cpu_s_per_million: Option<f64>,
    /// Median server CPU-seconds per million deliveries, history off.
    pub off_cpu_s_per_million: Option<f64>,
    /// Missing deliveries over every repetition.
    pub missing: u64,
    /// Extra deliveries over every repetition.
    pub extra: u64,
}

/// The streams scenarios (realtime-server only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamsResult {
    /// Recovery cost.
    pub recovery: RecoveryResult,
    /// Publish cost with history on and off.
    pub history: HistoryCostResult,
    /// Anything unusual.
    pub notes: Vec<String>,
}

impl StreamsResult {
    /// Whether every client recovered exactly what it missed and every delivery arrived
    /// exactly once.
    pub fn ok(&self) -> bool {
        self.recovery.errors == 0 && self.history.missing == 0 && self.history.extra == 0
    }
}

/// One payload against one server of the compression scenario.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompressionRep {
    /// Repetition.
    pub rep: usize,
    /// Whether the server had compression on.
    pub on: bool,
    /// The payload (`notification`, `activity`, `dashboard`).
    pub kind: String,
    /// Deliveries counted.
    pub deliveries: u64,
    /// Seconds the closed-loop broadcasts took.
    pub seconds: f64,
    /// Bytes the clients read from their sockets per delivery (headers included).
    pub wire_bytes_per_delivery: f64,
    /// Bytes of the frames' text per delivery (after inflating).
    pub text_bytes_per_delivery: f64,
    /// Share of the frames that came compressed.
    pub compressed_share: f64,
    /// Server CPU-seconds per million deliveries.
    pub server_cpu_s_per_million: f64,
    /// The clients' process's CPU-seconds per million deliveries (reading, inflating,
    /// parsing; the publisher's HTTP client too).
    pub client_cpu_s_per_million: f64,
    /// Delivery latency (publish call to the client's parse).
    pub latency: Summary,
    /// Deliveries that did not arrive within their round (the next publication waits for
    /// them, at most 20 s).
    pub missing: u64,
    /// Deliveries that arrived twice.
    pub extra: u64,
}

/// Medians of one payload, compression off and on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompressionRow {
    /// The payload.
    pub kind: String,
    /// Its frame's size, uncompressed.
    pub frame_bytes: Option<f64>,
    /// Bytes on the wire per delivery, off.
    pub off_wire_bytes: Option<f64>,
    /// Bytes on the wire per delivery, on.
    pub on_wire_bytes: Option<f64>,
    /// Share of the frames compressed, on.
    pub on_compressed_share: Option<f64>,
    /// Server CPU-seconds per million deliveries, off.
    pub off_server_cpu_s_per_million: Option<f64>,
    /// Server CPU-seconds per million deliveries, on.
    pub on_server_cpu_s_per_million: Option<f64>,
    /// Client CPU-seconds per million deliveries, off.
    pub off_client_cpu_s_per_million: Option<f64>,
    /// Client CPU-seconds per million deliveries, on.
    pub on_client_cpu_s_per_million: Option<f64>,
    /// Delivery latency p99, off, ms.
    pub off_latency_p99_ms: Option<f64>,
    /// Delivery latency p99, on, ms.
    pub on_latency_p99_ms: Option<f64>,
}

/// The compression scenario (realtime-server only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompressionResult {
    /// Clients.
    pub n: u32,
    /// Broadcasts of each payload per server.
    pub broadcasts: u32,
    /// Every payload of every server, in the order run.
    pub reps: Vec<CompressionRep>,
    /// Medians per payload.
    pub rows: Vec<CompressionRow>,
    /// Deliveries missing over all repetitions.
    pub missing: u64,
    /// Deliveries extra over all repetitions.
    pub extra: u64,
    /// Anything unusual.
    pub notes: Vec<String>,
}

/// The settings of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// `quick` or `full`.
    pub mode: String,
    /// Repetitions of every session.
    pub reps: usize,
    /// Step of the N ramp.
    pub step: u32,
    /// Largest N.
    pub n_max: u32,
    /// N of the fan-out scenario and of the per-connection memory target.
    pub n_main: u32,
    /// Small N of send_to_user.
    pub n_user_small: u32,
    /// Broadcasts per ramp step.
    pub ramp_broadcasts: u32,
    /// Broadcasts of the fan-out scenario.
    pub fanout_broadcasts: u32,
    /// Messages per send_to_user series.
    pub user_messages: u32,
    /// Publish rates of the throughput scenario (broadcasts per second, at `n_max`).
    pub rates: Vec<u32>,
    /// Seconds per throughput rate.
    pub rate_secs: u32,
    /// Most connections per load-generator process.
    pub shard_cap: u32,
    /// Handshakes in flight over all workers.
    pub connect_concurrency: u32,
    /// Milliseconds to wait for one closed-loop message to arrive everywhere.
    pub done_timeout_ms: u64,
    /// Milliseconds between closed-loop messages.
    pub gap_ms: u64,
    /// Connections of each soak scenario (churn, slow consumers, drain); 0 skips them.
    #[serde(default)]
    pub soak_n: u32,
    /// Connect/disconnect cycles of the churn scenario.
    #[serde(default)]
    pub churn_cycles: u32,
    /// Slow consumers, per thousand connections.
    #[serde(default)]
    pub slow_per_mille: u32,
    /// Broadcasts to the readers during the slow-consumer scenario.
    #[serde(default)]
    pub slow_broadcasts: u32,
    /// Payload bytes of each message that fills the slow consumers' queues.
    #[serde(default)]
    pub fill_bytes: usize,
    /// The server's shutdown grace period in the drain scenario, seconds.
    #[serde(default)]
    pub drain_grace_secs: u64,
    /// Repetitions of each streams scenario; 0 skips them.
    #[serde(default)]
    pub streams_reps: usize,
    /// Clients of the recovery scenario.
    #[serde(default)]
    pub recovery_n: u32,
    /// Broadcasts published while they are away.
    #[serde(default)]
    pub recovery_missed: u32,
    /// Handshakes in flight over all workers when they reconnect.
    #[serde(default)]
    pub reconnect_concurrency: u32,
    /// Clients of the history cost scenario.
    #[serde(default)]
    pub history_n: u32,
    /// Broadcasts per second of the history cost scenario.
    #[serde(default)]
    pub history_rate: u32,
    /// Seconds of publishing per repetition of the history cost scenario.
    #[serde(default)]
    pub history_secs: u32,
    /// CPUs the servers were pinned to (`--pin`); the driver and the load generators ran on
    /// the others. `None`: nothing was pinned.
    #[serde(default)]
    pub server_cpus: Option<String>,
    /// Repetitions of the compression scenario (each: off and on); 0 skips it.
    #[serde(default)]
    pub compression_reps: usize,
    /// Clients of the compression scenario.
    #[serde(default)]
    pub compression_n: u32,
    /// Broadcasts of each payload per server in the compression scenario.
    #[serde(default)]
    pub compression_broadcasts: u32,
}

impl Plan {
    /// The quick plan: N up to 5,000, one repetition, a few minutes.
    pub fn quick() -> Plan {
        Plan {
            mode: "quick".into(),
            reps: 1,
            step: 1000,
            n_max: 5000,
            n_main: 5000,
            n_user_small: 1000,
            ramp_broadcasts: 30,
            fanout_broadcasts: 200,
            user_messages: 500,
            rates: vec![5, 20],
            rate_secs: 8,
            shard_cap: 10_000,
            connect_concurrency: 64,
            done_timeout_ms: 3000,
            gap_ms: 5,
            soak_n: 5_000,
            churn_cycles: 10,
            slow_per_mille: 10,
            slow_broadcasts: 100,
            fill_bytes: 16 * 1024,
            drain_grace_secs: 5,
            streams_reps: 3,
            recovery_n: 1_000,
            recovery_missed: 10,
            reconnect_concurrency: 512,
            history_n: 1_000,
            history_rate: 50,
            history_secs: 5,
            server_cpus: None,
            compression_reps: 1,
            compression_n: 1_000,
            compression_broadcasts: 50,
        }
    }

    /// The full plan: N up to 19,000, every scenario, three repetitions.
    pub fn full() -> Plan {
        Plan {
            mode: "full".into(),
            reps: 3,
            n_max: 19_000,
            n_main: 10_000,
            ramp_broadcasts: 20,
            fanout_broadcasts: 200,
            user_messages: 1000,
            rates: vec![2, 5, 10],
            rate_secs: 10,
            soak_n: 10_000,
            churn_cycles: 100,
            recovery_n: 10_000,
            history_n: 10_000,
            history_rate: 20,
            history_secs: 10,
            compression_reps: 3,
            compression_n: 2_000,
            compression_broadcasts: 100,
            ..Plan::quick()
        }
    }

    /// The N values of the ramp.
    pub fn steps(&self) -> Vec<u32> {
        (1..=self.n_max / self.step.max(1)).map(|i| i * self.step).collect()
    }
}

/// One row of the summary table: medians over repetitions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryRow {
    /// What is measured.
    pub measure: String,
    /// Unit of the values.
    pub unit: String,
    /// realtime-server's median.
    pub server: Option<f64>,
    /// The baseline's median.
    pub baseline: Option<f64>,
    /// server / baseline.
    pub ratio: Option<f64>,
    /// The target from the issue, if any.
    pub target: Option<String>,
    /// Whether the target is met (reported, never asserted).
    pub met: Option<bool>,
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResults {
    /// UTC date of the run (YYYY-MM-DD).
    pub date: String,
    /// UTC start time, seconds since the Unix epoch.
    pub started_unix: u64,
    /// The command that produced it.
    pub command: String,
    /// The machine.
    pub machine: Machine,
    /// The settings.
    pub plan: Plan,
    /// Every session, in the order run.
    pub sessions: Vec<SessionResult>,
    /// Medians and ratios.
    pub summary: Vec<SummaryRow>,
    /// The soak scenarios (realtime-server only), when run.
    #[serde(default)]
    pub soak: Option<SoakResult>,
    /// The streams scenarios (realtime-server only), when run.
    #[serde(default)]
    pub streams: Option<StreamsResult>,
    /// The compression scenario (realtime-server only), when run.
    #[serde(default)]
    pub compression: Option<CompressionResult>,
    /// Whether every delivery of every session arrived exactly once.
    pub exactly_once: bool,
}
