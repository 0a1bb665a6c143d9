//! The soak scenarios, against one fresh realtime-server: churn (connect/disconnect cycles,
//! then an empty registry and flat RSS), slow consumers (a share of clients stop reading:
//! closed with 4008, RSS bounded, the others get every broadcast) and drain (SIGTERM with
//! every client connected: each gets 1012 within the grace period).

use std::time::Duration;

use anyhow::Context;
use realtime_bench::http::HttpClient;
use realtime_bench::shard::{CloseCount, RoundKind, SLOW_ROLE, StatusReport};
use realtime_bench::wire::{BenchPayload, publish_body, unix_micros};
use realtime_bench::worker::to_hex;
use realtime_core::{Role, Target};
use serde_json::json;
use tokio::time::Instant;

use crate::fleet::Fleet;
use crate::procfs::rss_kib;
use crate::results::{
    ChurnResult, CloseSummary, DrainResult, Plan, SlowResult, SoakResult, TargetKind,
};
use crate::session::{Outcome, Paths, random_bytes, start};

/// Close code of a slow consumer.
const SLOW_CONSUMER: u16 = realtime_core::protocol::close::SLOW_CONSUMER;
/// Close code of a server going away for a restart (graceful shutdown).
const SERVICE_RESTART: u16 = 1012;
/// Longest wait for the registry to empty after a churn cycle.
const EMPTY_WAIT: Duration = Duration::from_secs(30);
/// Longest the slow consumers are given to fill their queues.
const FILL_WAIT: Duration = Duration::from_secs(60);
/// Fill messages published between two looks at the registry.
const FILLS_PER_STEP: u32 = 16;

/// Runs churn, slow consumers and drain against a fresh realtime-server (which the drain
/// stops).
pub async fn run_soak(paths: &Paths, plan: &Plan) -> anyhow::Result<SoakResult> {
    let secret_text = to_hex(&random_bytes());
    let api_key = to_hex(&random_bytes());
    let n = plan.soak_n;
    let env = [("REALTIME_SHUTDOWN_GRACE_SECS", plan.drain_grace_secs.to_string())];
    let mut running = start(
        TargetKind::RealtimeServer,
        paths,
        "realtime-server-soak",
        &secret_text,
        &api_key,
        n + 500,
        &env,
    )
    .await?;
    let mut soak = Soak {
        plan,
        pid: running.pid,
        http: HttpClient::new(running.addr, Some(api_key), Duration::from_secs(30)),
        notes: Vec::new(),
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_start_kib = rss_kib(soak.pid).unwrap_or(0);
    let workers = n.div_ceil(plan.shard_cap.max(1)).max(1) as usize;
    let mut fleet =
        Fleet::spawn(&paths.loadgen, running.addr, &to_hex(secret_text.as_bytes()), workers)
            .await?;
    let result = async {
        let churn = soak.churn(&mut fleet).await.context("churn")?;
        let slow = soak.slow_consumers(&mut fleet).await.context("slow consumers")?;
        let drain = soak.drain(&mut fleet, &mut running.child).await.context("drain")?;
        anyhow::Ok((churn, slow, drain))
    }
    .await;
    fleet.quit().await;
    let _ = running.child.kill().await;
    let (churn, slow, drain) = result?;
    Ok(SoakResult { n, rss_start_kib, churn, slow, drain, notes: soak.notes })
}

struct Soak<'a> {
    plan: &'a Plan,
    pid: u32,
    http: HttpClient,
    notes: Vec<String>,
}

/// Every worker's ends, flattened.
fn closes(statuses: &[StatusReport]) -> Vec<CloseCount> {
    statuses.iter().flat_map(|s| s.closes.iter().cloned()).collect()
}

impl Soak<'_> {
    fn note(&mut self, note: String) {
        eprintln!("  soak: {note}");
        if self.notes.len() < 50 {
            self.notes.push(note);
        }
    }

    /// `/healthz`'s `connections`.
    async fn registered(&mut self) -> Option<u64> {
        let response = self.http.get("/healthz").await.ok()?;
        let body: serde_json::Value = serde_json::from_slice(&response.body).ok()?;
        body.get("connections")?.as_u64()
    }

    /// Waits until `/healthz` counts at most `target` connections; the last count seen.
    async fn wait_registered(&mut self, target: u64, wait: Duration) -> Option<u64> {
        let deadline = Instant::now() + wait;
        loop {
            let count = self.registered().await;
            if count.is_some_and(|c| c <= target) || Instant::now() > deadline {
                return count;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The value of the `/metrics` sample whose line starts with `name` and contains
    /// `label`.
    async fn metric(&mut self, name: &str, label: &str) -> Option<u64> {
        let response = self.http.get("/metrics").await.ok()?;
        if response.status != 200 {
            return None;
        }
        let text = String::from_utf8_lossy(&response.body).into_owned();
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(label))
            .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
    }

    async fn churn(&mut self, fleet: &mut Fleet) -> anyhow::Result<ChurnResult> {
        let plan = self.plan;
        let n = plan.soak_n;
        let started = Instant::now();
        let mut r = ChurnResult { cycles: plan.churn_cycles, connections: n, ..Default::default() };
        for cycle in 0..plan.churn_cycles {
            let batch = fleet.connect_to(n, plan.connect_concurrency).await?;
            r.handshakes += u64::from(batch.ok);
            r.failed += u64::from(batch.failed);
            if batch.failed > 0 {
                let error = batch.first_error.unwrap_or_default();
                self.note(format!(
                    "churn cycle {cycle}: {} handshakes failed ({error})",
                    batch.failed
                ));
            }
            r.rss_connected_kib.push(rss_kib(self.pid).unwrap_or(0));
            for d in fleet.disconnect_all(Duration::from_secs(10)).await? {
                r.clean_closes += u64::from(d.clean - d.timed_out);
                r.dropped += u64::from(d.dropped + d.timed_out);
            }
            let left = self.wait_registered(0, EMPTY_WAIT).await;
            if left != Some(0) {
                r.cycles_not_empty += 1;
                self.note(format!("churn cycle {cycle}: registry holds {left:?} connections"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            r.rss_after_kib.push(rss_kib(self.pid).unwrap_or(0));
            if cycle % 10 == 0 || cycle + 1 == plan.churn_cycles {
                eprintln!(
                    "  soak: churn cycle {cycle}: +{} conns, RSS {} KiB open, {} KiB after",
                    batch.ok,
                    r.rss_connected_kib.last().copied().unwrap_or(0),
                    r.rss_after_kib.last().copied().unwrap_or(0)
                );
            }
        }
        // The churn's ends are not reported; start the next scenario's count afresh.
        fleet.status().await?;
        r.registry_after = self.registered().await;
        r.rss_last_vs_first = match (r.rss_after_kib.first(), r.rss_after_kib.last()) {
            (Some(&first), Some(&last)) if first > 0 => Some(last as f64 / first as f64),
            _ => None,
        };
        r.seconds = started.elapsed().as_secs_f64();
        Ok(r)
    }

    async fn slow_consumers(&mut self, fleet: &mut Fleet) -> anyhow::Result<SlowResult> {
        let plan = self.plan;
        let slow = (plan.soak_n * plan.slow_per_mille / 1000).max(1);
        let readers = plan.soak_n - slow;
        fleet.connect_to(readers, plan.connect_concurrency).await?;
        fleet.connect_slow(slow, plan.connect_concurrency).await?;
        let opened = fleet.status().await?;
        let open_slow: u32 = opened.iter().map(|s| s.open_slow).sum();
        if open_slow != slow {
            self.note(format!("slow consumers: {open_slow} of {slow} slow connections opened"));
        }
        let mut r = SlowResult {
            readers: fleet.total_open(),
            slow: open_slow,
            broadcasts: plan.slow_broadcasts,
            fill_bytes: plan.fill_bytes,
            ..Default::default()
        };
        let round = 1_000_000;
        let expected = fleet.begin_round(round, RoundKind::Broadcast, plan.slow_broadcasts).await?;
        let needed = expected.iter().filter(|&&e| e > 0).count() as u32;
        fleet.pause_slow(true).await?;
        let paused_us = unix_micros();
        r.rss_before_kib = rss_kib(self.pid).unwrap_or(0);
        r.rss_peak_kib = r.rss_before_kib;
        let fill = serde_json::to_vec(&json!({
            "target": Target::Role(Role::new(SLOW_ROLE)?),
            "message": { "type": "fill", "payload": { "pad": "x".repeat(plan.fill_bytes) } },
        }))?;
        let started = Instant::now();
        let mut resumed = false;
        let mut seq = 0;
        while seq < plan.slow_broadcasts || !resumed {
            if seq < plan.slow_broadcasts {
                let payload = BenchPayload { r: round, s: seq, t: unix_micros(), to: None };
                let body = publish_body(&Target::Broadcast, &payload);
                match self.http.post_json("/api/publish", &body).await {
                    Ok(response) if response.status == 200 => {}
                    other => self.note(format!("slow consumers: broadcast {seq}: {other:?}")),
                }
                seq += 1;
            }
            if !resumed {
                for _ in 0..FILLS_PER_STEP {
                    match self.http.post_json("/api/publish", &fill).await {
                        Ok(response) if response.status == 200 => r.fill_messages += 1,
                        other => self.note(format!("slow consumers: fill: {other:?}")),
                    }
                }
                let registered = self.registered().await.unwrap_or(u64::MAX);
                let all_closed = registered <= u64::from(r.readers);
                if all_closed || started.elapsed() > FILL_WAIT {
                    if all_closed {
                        r.seconds_until_closed = Some(started.elapsed().as_secs_f64());
                    } else {
                        self.note(format!(
                            "slow consumers: {registered} registered after {FILL_WAIT:?} of fill"
                        ));
                    }
                    // They read again, so that they see what the server sent last.
                    fleet.pause_slow(false).await?;
                    r.resumed_ms = Some((unix_micros() - paused_us) as f64 / 1000.0);
                    resumed = true;
                }
            }
            r.rss_peak_kib = r.rss_peak_kib.max(rss_kib(self.pid).unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(plan.gap_ms.max(10))).await;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for s in 0..plan.slow_broadcasts {
            let left = deadline.saturating_duration_since(Instant::now());
            if !fleet.wait_done(round, s, needed, left).await {
                self.note("slow consumers: not every broadcast reached every reader".into());
                break;
            }
        }
        let reports = fleet.end_round(200).await?;
        let outcome =
            Outcome::merge(RoundKind::Broadcast, plan.slow_broadcasts, &expected, &reports);
        (r.expected, r.deliveries, r.missing, r.extra) =
            (outcome.expected, outcome.deliveries, outcome.missing, outcome.extra);
        // The close timeout (2 s) bounds how long a slow consumer's close frame may take.
        tokio::time::sleep(Duration::from_secs(3)).await;
        r.rss_peak_kib = r.rss_peak_kib.max(rss_kib(self.pid).unwrap_or(0));
        let ends = closes(&fleet.status().await?);
        let all = CloseSummary::merge(&ends, paused_us);
        r.slow_closes = all.iter().filter(|c| c.slow).cloned().collect();
        r.reader_closes = all.iter().filter(|c| !c.slow).cloned().collect();
        r.server_slow_consumer_closes =
            self.metric("realtime_connections_closed_total", "slow_consumer").await;
        r.rss_after_kib = rss_kib(self.pid).unwrap_or(0);
        eprintln!(
            "  soak: slow consumers: {} of {} closed with 4008 in {:?} s; RSS {} -> peak {} -> {} KiB; readers missing {} extra {}",
            CloseSummary::count(&all, true, Some(SLOW_CONSUMER)),
            r.slow,
            r.seconds_until_closed,
            r.rss_before_kib,
            r.rss_peak_kib,
            r.rss_after_kib,
            r.missing,
            r.extra
        );
        Ok(r)
    }

    async fn drain(
        &mut self,
        fleet: &mut Fleet,
        child: &mut tokio::process::Child,
    ) -> anyhow::Result<DrainResult> {
        let plan = self.plan;
        let n = plan.soak_n;
        fleet.connect_to(n, plan.connect_concurrency).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let open: u32 = fleet.status().await?.iter().map(|s| s.open).sum();
        let grace = Duration::from_secs(plan.drain_grace_secs);
        let t0 = unix_micros();
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid)?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).context("SIGTERM")?;
        let signalled = Instant::now();
        let exit = tokio::time::timeout(grace + Duration::from_secs(10), child.wait()).await;
        let exit_ms = exit.is_ok().then(|| signalled.elapsed().as_secs_f64() * 1000.0);
        let exit_status = match exit {
            Ok(Ok(status)) => status.to_string(),
            Ok(Err(e)) => format!("wait failed: {e}"),
            Err(_) => "still running".to_owned(),
        };
        let mut ends = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let statuses = fleet.status().await?;
            ends.extend(closes(&statuses));
            let still_open: u32 = statuses.iter().map(|s| s.open + s.open_slow).sum();
            if still_open == 0 || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let closes = CloseSummary::merge(&ends, t0);
        let got_1012 = CloseSummary::count(&closes, false, Some(SERVICE_RESTART));
        let last_1012_ms = closes
            .iter()
            .filter(|c| !c.slow && c.code == Some(SERVICE_RESTART))
            .map(|c| c.last_ms)
            .reduce(f64::max);
        eprintln!(
            "  soak: drain: {got_1012} of {open} got 1012 (the last after {last_1012_ms:?} ms, grace {} s); server exited after {exit_ms:?} ms ({exit_status})",
            plan.drain_grace_secs
        );
        Ok(DrainResult {
            connections: open,
            grace_secs: plan.drain_grace_secs,
            closes,
            got_1012,
            last_1012_ms,
            exit_ms,
            exit_status,
        })
    }
}
