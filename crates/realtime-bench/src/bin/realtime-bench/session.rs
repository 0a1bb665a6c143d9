//! One session: start one server (realtime-server or the baseline), ramp connections up in
//! steps with load-generator workers, and run every scenario against it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use realtime_bench::hist::{HistPairs, Summary, cdf_points, new_hist, record};
use realtime_bench::http::HttpClient;
use realtime_bench::shard::{RoundKind, RoundReport, user_of};
use realtime_bench::wire::{BenchPayload, delivered_count, publish_body, unix_micros};
use realtime_bench::worker::to_hex;
use realtime_core::{Target, UserId};
use tokio::time::Instant;

use crate::fleet::Fleet;
use crate::procfs::{cpu_seconds, rss_kib, slab_kib};
use crate::results::{
    ConnectResult, FanoutResult, MemorySample, Plan, SessionResult, StepResult, TargetKind,
    ThroughputResult, UserResult,
};

/// Completion bound of the websocket-shootout metric.
const SHOOTOUT_BOUND_US: u64 = 500_000;
/// Share of broadcasts that must complete within the bound.
const SHOOTOUT_SHARE: f64 = 0.95;

/// Where the binaries and logs are.
#[derive(Debug, Clone)]
pub struct Paths {
    /// CPUs the servers are pinned to (`taskset -c` syntax), if `--pin` was given.
    pub server_cpus: Option<String>,
    /// `realtime-server`.
    pub server: PathBuf,
    /// `realtime-baseline`.
    pub baseline: PathBuf,
    /// `realtime-loadgen`.
    pub loadgen: PathBuf,
    /// Directory for server logs.
    pub logs: PathBuf,
}

/// A server process under test.
pub struct Running {
    /// The process.
    pub child: tokio::process::Child,
    /// Its pid.
    pub pid: u32,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// 32 random bytes (from two v4 UUIDs, which come from the OS generator).
pub fn random_bytes() -> Vec<u8> {
    let mut bytes = uuid::Uuid::new_v4().as_bytes().to_vec();
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes
}

/// A command that runs `program`, under `taskset -c cpus` when `cpus` is given (taskset execs
/// it, so the child's pid is the program's).
fn pinned(program: &Path, cpus: Option<&str>) -> tokio::process::Command {
    match cpus {
        Some(cpus) => {
            let mut c = tokio::process::Command::new("taskset");
            c.args(["-c", cpus]).arg(program);
            c
        }
        None => tokio::process::Command::new(program),
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Starts `kind` (realtime-server with `extra_env` besides the usual settings), logging to
/// `<logs>/<log_name>.log`, and waits until it answers `/healthz`.
pub async fn start(
    kind: TargetKind,
    paths: &Paths,
    log_name: &str,
    secret_text: &str,
    api_key: &str,
    max_connections: u32,
    extra_env: &[(&str, String)],
) -> anyhow::Result<Running> {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    std::fs::create_dir_all(&paths.logs)?;
    let log_path = paths.logs.join(format!("{log_name}.log"));
    let log = std::fs::File::create(&log_path)?;
    let mut command = match kind {
        TargetKind::RealtimeServer => {
            let mut c = pinned(&paths.server, paths.server_cpus.as_deref());
            c.env("REALTIME_LISTEN", addr.to_string())
                .env("REALTIME_JWT_SECRET", secret_text)
                .env("REALTIME_API_KEY", api_key)
                .env("REALTIME_MAX_CONNECTIONS", max_connections.to_string())
                .env("REALTIME_LOG", "warn")
                .envs(extra_env.iter().map(|(k, v)| (*k, v.as_str())));
            c
        }
        TargetKind::Baseline => {
            let mut c = pinned(&paths.baseline, paths.server_cpus.as_deref());
            c.args(["--listen", &addr.to_string()]);
            c
        }
    };
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", kind.name()))?;
    let pid = child.id().context("server pid")?;
    let mut running = Running { child, pid, addr };
    let mut http = HttpClient::new(addr, None, Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = http.get("/healthz").await
            && r.status == 200
        {
            return Ok(running);
        }
        if let Ok(Some(status)) = running.child.try_wait() {
            bail!("{} exited with {status}; see {}", kind.name(), log_path.display());
        }
        if Instant::now() > deadline {
            bail!("{} did not answer /healthz; see {}", kind.name(), log_path.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs every scenario of `plan` against a fresh `kind` server.
pub async fn run_session(
    paths: &Paths,
    plan: &Plan,
    kind: TargetKind,
    rep: usize,
) -> anyhow::Result<SessionResult> {
    // The server is given the hex text as its secret; tokens are signed with those bytes.
    let secret_text = to_hex(&random_bytes());
    let api_key = to_hex(&random_bytes());
    let max_connections = plan.n_max + 500;
    let log_name = format!("{}-rep{rep}", kind.name());
    let mut running =
        start(kind, paths, &log_name, &secret_text, &api_key, max_connections, &[]).await?;
    let result = Session::new(plan, kind, &running, api_key, rep)
        .run(paths, running.addr, &secret_text, rep)
        .await;
    let _ = running.child.kill().await;
    result
}

/// The state of one session.
pub struct Session<'a> {
    plan: &'a Plan,
    kind: TargetKind,
    pid: u32,
    http: HttpClient,
    round: u64,
    rng: u64,
    notes: Vec<String>,
}

/// A round's reports from every worker, merged.
pub struct Outcome {
    seqs: u32,
    /// Deliveries expected.
    pub expected: u64,
    /// First, correct deliveries.
    pub deliveries: u64,
    /// Deliveries that did not arrive.
    pub missing: u64,
    /// Deliveries that should not have arrived.
    pub extra: u64,
    /// Per sequence number: whether it reached everyone it should have.
    complete: Vec<bool>,
    /// Per sequence number: largest latency (the last receiver), µs.
    completion_us: Vec<u64>,
    delivery: Histogram<u64>,
    server_delivered: u64,
}

impl Outcome {
    /// Merges the workers' reports of one round.
    pub fn merge(kind: RoundKind, seqs: u32, expected: &[u32], reports: &[RoundReport]) -> Outcome {
        let n = seqs as usize;
        let mut counts = vec![0u64; n];
        let mut completion_us = vec![0u64; n];
        let mut delivery = new_hist();
        let (mut deliveries, mut missing, mut extra) = (0, 0, 0);
        for r in reports {
            for (i, &c) in r.per_seq_count.iter().enumerate().take(n) {
                counts[i] += u64::from(c);
            }
            for (i, &m) in r.per_seq_max_us.iter().enumerate().take(n) {
                completion_us[i] = completion_us[i].max(m);
            }
            r.latency.add_to(&mut delivery);
            deliveries += r.deliveries;
            missing += r.missing;
            extra += r.extra();
        }
        let total_expected: u64 = expected.iter().map(|&e| u64::from(e)).sum();
        let (complete, expected_deliveries) = match kind {
            RoundKind::Broadcast => (
                counts.iter().map(|&c| c == total_expected).collect(),
                total_expected * u64::from(seqs),
            ),
            RoundKind::User => {
                missing = counts.iter().filter(|&&c| c == 0).count() as u64;
                (counts.iter().map(|&c| c >= 1).collect(), u64::from(seqs))
            }
        };
        Outcome {
            seqs,
            expected: expected_deliveries,
            deliveries,
            missing,
            extra,
            complete,
            completion_us,
            delivery,
            server_delivered: 0,
        }
    }

    /// Delivery latency of every first, correct delivery.
    pub fn delivery(&self) -> &Histogram<u64> {
        &self.delivery
    }

    /// Completion latency of the complete messages.
    pub fn completion(&self) -> Histogram<u64> {
        let mut h = new_hist();
        for (&done, &us) in self.complete.iter().zip(&self.completion_us) {
            if done {
                record(&mut h, us);
            }
        }
        h
    }
}

impl<'a> Session<'a> {
    /// A session against `running` (a `kind` server), publishing with `api_key`.
    pub fn new(
        plan: &'a Plan,
        kind: TargetKind,
        running: &Running,
        api_key: String,
        rep: usize,
    ) -> Session<'a> {
        Session {
            plan,
            kind,
            pid: running.pid,
            http: HttpClient::new(running.addr, Some(api_key), Duration::from_secs(30)),
            round: 0,
            rng: 0x9E37_79B9_7F4A_7C15 ^ (rep as u64 + 1),
            notes: Vec::new(),
        }
    }

    /// What was unusual so far.
    pub fn into_notes(self) -> Vec<String> {
        self.notes
    }

    async fn run(
        mut self,
        paths: &Paths,
        addr: SocketAddr,
        secret_text: &str,
        rep: usize,
    ) -> anyhow::Result<SessionResult> {
        let plan = self.plan;
        let cpu_start = cpu_seconds(self.pid).unwrap_or(0.0);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rss0 = rss_kib(self.pid).unwrap_or(0);
        let slab0 = slab_kib().unwrap_or(0);
        let workers = plan.n_max.div_ceil(plan.shard_cap.max(1)).max(1) as usize;
        let mut fleet =
            Fleet::spawn(&paths.loadgen, addr, &to_hex(secret_text.as_bytes()), workers).await?;

        let mut connect = ConnectResult::default();
        let mut handshakes = new_hist();
        let (mut memory, mut steps, mut user, mut throughput) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut fanout = None;
        let (mut missing, mut extra) = (0u64, 0u64);

        for n in plan.steps() {
            let batch = fleet.connect_to(n, plan.connect_concurrency).await?;
            connect.handshakes += u64::from(batch.ok);
            connect.failed += u64::from(batch.failed);
            connect.seconds += batch.elapsed_us as f64 / 1e6;
            batch.latency.add_to(&mut handshakes);
            if batch.failed > 0 {
                let error = batch.first_error.clone().unwrap_or_default();
                self.notes.push(format!("N={n}: {} handshakes failed ({error})", batch.failed));
                connect.first_error.get_or_insert(error);
            }
            eprintln!(
                "  {} rep {rep}: N={n} open={} (+{} in {:.1}s)",
                self.kind.name(),
                fleet.total_open(),
                batch.ok,
                batch.elapsed_us as f64 / 1e6
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
            let open = fleet.total_open().max(1);
            let rss = rss_kib(self.pid).unwrap_or(0);
            let slab = slab_kib().unwrap_or(0);
            memory.push(MemorySample {
                n: open,
                rss_kib: rss,
                slab_kib: slab,
                rss_per_conn_bytes: (rss as f64 - rss0 as f64) * 1024.0 / f64::from(open),
                slab_per_conn_bytes: (slab as f64 - slab0 as f64) * 1024.0 / f64::from(open),
            });

            let broadcasts =
                if n == plan.n_main { plan.fanout_broadcasts } else { plan.ramp_broadcasts };
            let outcome = self.closed_broadcasts(&mut fleet, broadcasts).await?;
            missing += outcome.missing;
            extra += outcome.extra;
            let completion = outcome.completion();
            let within = outcome
                .complete
                .iter()
                .zip(&outcome.completion_us)
                .filter(|(done, us)| **done && **us <= SHOOTOUT_BOUND_US)
                .count() as u32;
            steps.push(StepResult {
                n: open,
                broadcasts,
                within_500ms: within,
                fraction_within_500ms: f64::from(within) / f64::from(broadcasts.max(1)),
                completion: Summary::of(&completion),
                delivery: Summary::of(&outcome.delivery),
                missing: outcome.missing,
                extra: outcome.extra,
            });
            if n == plan.n_main {
                fanout = Some(FanoutResult {
                    n: open,
                    broadcasts,
                    completion: Summary::of(&completion),
                    delivery: Summary::of(&outcome.delivery),
                    delivery_cdf: cdf_points(&outcome.delivery, 200),
                    delivery_hist: HistPairs::of(&outcome.delivery),
                    missing: outcome.missing,
                    extra: outcome.extra,
                    server_delivered: outcome.server_delivered,
                    expected: outcome.expected,
                });
            }
            if n == plan.n_user_small || n == plan.n_max {
                let outcome = self.user_messages(&mut fleet, plan.user_messages).await?;
                missing += outcome.missing;
                extra += outcome.extra;
                user.push(UserResult {
                    n: open,
                    messages: outcome.seqs,
                    latency: Summary::of(&outcome.delivery),
                    missing: outcome.missing,
                    extra: outcome.extra,
                });
            }
        }

        for &rate in &plan.rates {
            let result = self.open_loop(&mut fleet, rate).await?;
            missing += result.missing;
            extra += result.extra;
            eprintln!(
                "  {} rep {rep}: {rate}/s at N={} -> {:.0} deliveries/s, {:.2} CPU-s per million",
                self.kind.name(),
                result.n,
                result.delivered_per_s,
                result.cpu_s_per_million
            );
            throughput.push(result);
        }
        fleet.quit().await;

        connect.rate_per_s = connect.handshakes as f64 / connect.seconds.max(1e-9);
        connect.latency = Summary::of(&handshakes);
        let mut shootout_n = 0;
        for step in &steps {
            if step.fraction_within_500ms >= SHOOTOUT_SHARE && step.missing == 0 {
                shootout_n = step.n;
            } else {
                break;
            }
        }
        Ok(SessionResult {
            target: self.kind,
            rep,
            connect,
            rss_before_kib: rss0,
            memory,
            steps,
            fanout,
            user,
            throughput,
            shootout_n,
            missing,
            extra,
            server_cpu_seconds: cpu_seconds(self.pid).unwrap_or(0.0) - cpu_start,
            notes: self.notes,
        })
    }

    fn next_round(&mut self) -> u64 {
        self.round += 1;
        self.round
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: reproducible per repetition.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Publishes one message; the server's delivered count, or `None` when it failed.
    async fn publish(&mut self, target: &Target, payload: &BenchPayload) -> Option<u64> {
        match self.http.post_json("/api/publish", &publish_body(target, payload)).await {
            Ok(r) if r.status == 200 => Some(delivered_count(&r.body).unwrap_or(0)),
            Ok(r) => {
                self.note(format!("publish answered HTTP {}", r.status));
                None
            }
            Err(e) => {
                self.note(format!("publish failed: {e}"));
                None
            }
        }
    }

    fn note(&mut self, note: String) {
        if self.notes.len() < 50 {
            self.notes.push(note);
        }
    }

    /// Broadcasts published one at a time, each after the previous reached everyone.
    async fn closed_broadcasts(&mut self, fleet: &mut Fleet, seqs: u32) -> anyhow::Result<Outcome> {
        let plan = self.plan;
        let round = self.next_round();
        let expected = fleet.begin_round(round, RoundKind::Broadcast, seqs).await?;
        let needed = expected.iter().filter(|&&e| e > 0).count() as u32;
        let mut server_delivered = 0;
        let mut timeouts = 0;
        for s in 0..seqs {
            let payload = BenchPayload { r: round, s, t: unix_micros(), to: None };
            if let Some(d) = self.publish(&Target::Broadcast, &payload).await {
                server_delivered += d;
                if !fleet
                    .wait_done(round, s, needed, Duration::from_millis(plan.done_timeout_ms))
                    .await
                {
                    timeouts += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(plan.gap_ms)).await;
        }
        if timeouts > 0 {
            self.note(format!("round {round}: {timeouts} broadcasts did not complete in time"));
        }
        let reports = fleet.end_round(100).await?;
        let mut outcome = Outcome::merge(RoundKind::Broadcast, seqs, &expected, &reports);
        outcome.server_delivered = server_delivered;
        Ok(outcome)
    }

    /// Messages to random users, one at a time.
    async fn user_messages(&mut self, fleet: &mut Fleet, seqs: u32) -> anyhow::Result<Outcome> {
        let plan = self.plan;
        let round = self.next_round();
        let expected = fleet.begin_round(round, RoundKind::User, seqs).await?;
        let total: u64 = expected.iter().map(|&e| u64::from(e)).sum();
        if total == 0 {
            bail!("no open connection for send_to_user");
        }
        for s in 0..seqs {
            // A uniformly random open connection: worker w, local index i.
            let mut pick = self.random() % total;
            let mut worker = 0;
            for (w, &count) in expected.iter().enumerate() {
                if pick < u64::from(count) {
                    worker = w;
                    break;
                }
                pick -= u64::from(count);
            }
            let user = user_of(worker as u32, pick as u32);
            let target = Target::User(UserId::new(&user)?);
            let payload = BenchPayload { r: round, s, t: unix_micros(), to: Some(user) };
            if self.publish(&target, &payload).await.is_some() {
                fleet.wait_done(round, s, 1, Duration::from_millis(plan.done_timeout_ms)).await;
            }
            tokio::time::sleep(Duration::from_millis(plan.gap_ms)).await;
        }
        let reports = fleet.end_round(100).await?;
        Ok(Outcome::merge(RoundKind::User, seqs, &expected, &reports))
    }

    /// Broadcasts at a fixed rate for `rate_secs`, then until everything arrived.
    async fn open_loop(
        &mut self,
        fleet: &mut Fleet,
        rate: u32,
    ) -> anyhow::Result<ThroughputResult> {
        self.open_loop_for(fleet, rate, self.plan.rate_secs).await
    }

    /// Broadcasts at `rate` per second for `secs`, then waits until everything arrived;
    /// deliveries per second and server CPU over that window.
    pub async fn open_loop_for(
        &mut self,
        fleet: &mut Fleet,
        rate: u32,
        secs: u32,
    ) -> anyhow::Result<ThroughputResult> {
        let seqs = rate.max(1) * secs.max(1);
        let round = self.next_round();
        let expected = fleet.begin_round(round, RoundKind::Broadcast, seqs).await?;
        let needed = expected.iter().filter(|&&e| e > 0).count() as u32;
        let n: u32 = expected.iter().sum();
        let cpu0 = cpu_seconds(self.pid).unwrap_or(0.0);
        let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sent = vec![0u64; seqs as usize];
        let started = Instant::now();
        let mut published = 0;
        for s in 0..seqs {
            ticker.tick().await;
            let t = unix_micros();
            sent[s as usize] = t;
            let payload = BenchPayload { r: round, s, t, to: None };
            if self.publish(&Target::Broadcast, &payload).await.is_some() {
                published += 1;
            }
        }
        let publish_secs = started.elapsed().as_secs_f64();
        let deadline = Instant::now() + Duration::from_secs(20);
        for s in 0..seqs {
            let left = deadline.saturating_duration_since(Instant::now());
            if !fleet.wait_done(round, s, needed, left).await {
                self.note(format!("throughput {rate}/s: not every broadcast arrived"));
                break;
            }
        }
        let cpu = cpu_seconds(self.pid).unwrap_or(0.0) - cpu0;
        let reports = fleet.end_round(200).await?;
        let outcome = Outcome::merge(RoundKind::Broadcast, seqs, &expected, &reports);
        let first = sent.first().copied().unwrap_or(0);
        let end =
            sent.iter().zip(&outcome.completion_us).map(|(&t, &c)| t + c).max().unwrap_or(first);
        let seconds = (end.saturating_sub(first)) as f64 / 1e6;
        let deliveries = outcome.deliveries;
        Ok(ThroughputResult {
            n,
            rate_per_s: rate,
            published,
            achieved_rate_per_s: f64::from(published) / publish_secs.max(1e-9),
            expected: outcome.expected,
            deliveries,
            seconds,
            delivered_per_s: deliveries as f64 / seconds.max(1e-9),
            cpu_seconds: cpu,
            cpu_s_per_million: if deliveries > 0 { cpu / deliveries as f64 * 1e6 } else { 0.0 },
            delivery: Summary::of(&outcome.delivery),
            missing: outcome.missing,
            extra: outcome.extra,
        })
    }
}

/// The workspace root this binary was built from.
pub fn default_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_worker_reports() {
        let report = |counts: Vec<u32>, max: Vec<u64>, missing: u64, dup: u64| RoundReport {
            deliveries: counts.iter().map(|&c| u64::from(c)).sum(),
            per_seq_count: counts,
            per_seq_max_us: max,
            missing,
            duplicates: dup,
            ..RoundReport::default()
        };
        // Two workers of 2 and 3 connections; broadcast 1 missed one delivery on worker 1.
        let reports =
            [report(vec![2, 2], vec![10, 20], 0, 0), report(vec![3, 2], vec![30, 5], 1, 1)];
        let o = Outcome::merge(RoundKind::Broadcast, 2, &[2, 3], &reports);
        assert_eq!(o.complete, vec![true, false]);
        assert_eq!(o.completion_us, vec![30, 20]);
        assert_eq!((o.expected, o.deliveries, o.missing, o.extra), (10, 9, 1, 1));
        assert_eq!(o.completion().len(), 1);

        // User messages: the first arrived (on worker 1), the second nowhere.
        let reports = [report(vec![0, 0], vec![0, 0], 0, 0), report(vec![1, 0], vec![7, 0], 0, 0)];
        let o = Outcome::merge(RoundKind::User, 2, &[2, 3], &reports);
        assert_eq!(o.complete, vec![true, false]);
        assert_eq!((o.expected, o.deliveries, o.missing), (2, 1, 1));
    }
}
