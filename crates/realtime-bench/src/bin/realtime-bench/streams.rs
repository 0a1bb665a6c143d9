//! The streams scenarios, realtime-server only: recovery cost (N clients away while
//! broadcasts are published, reconnecting at once with `since` against a plain reconnect of
//! the same clients) and publish cost with history on (the default) against
//! `--history-off user,role,topic,broadcast`.

use std::time::Duration;

use anyhow::{Context, bail};
use realtime_bench::hist::Summary;
use realtime_bench::http::HttpClient;
use realtime_bench::shard::ReconnectReport;
use realtime_bench::wire::{BenchPayload, publish_body, unix_micros};
use realtime_bench::worker::to_hex;
use realtime_core::Target;
use tokio::time::Instant;

use crate::fleet::Fleet;
use crate::procfs::cpu_seconds;
use crate::report::median;
use crate::results::{
    HistoryCostResult, HistoryRep, Plan, ReconnectPhase, RecoveryRep, RecoveryResult,
    StreamsResult, TargetKind,
};
use crate::session::{Paths, Running, Session, random_bytes, start};

/// Every stream kind, for `REALTIME_HISTORY_OFF`.
const ALL_KINDS: &str = "user,role,topic,broadcast";
/// Longest wait for the registry to empty after a disconnect.
const EMPTY_WAIT: Duration = Duration::from_secs(30);
/// Round number of the publications the recovery scenario's clients miss (they are checked
/// by position, not by round).
const MISSED_ROUND: u64 = 2_000_000;

/// Runs both streams scenarios.
pub async fn run_streams(paths: &Paths, plan: &Plan) -> anyhow::Result<StreamsResult> {
    let mut notes = Vec::new();
    let recovery = recovery(paths, plan, &mut notes).await.context("recovery")?;
    let history = history_cost(paths, plan, &mut notes).await.context("history cost")?;
    Ok(StreamsResult { recovery, history, notes })
}

/// A server and the credentials its clients and publisher use.
pub(crate) struct Server {
    pub(crate) running: Running,
    pub(crate) secret_text: String,
    pub(crate) http: HttpClient,
    pub(crate) api_key: String,
}

pub(crate) async fn start_server(
    paths: &Paths,
    log_name: &str,
    n: u32,
    env: &[(&str, String)],
) -> anyhow::Result<Server> {
    let secret_text = to_hex(&random_bytes());
    let api_key = to_hex(&random_bytes());
    let running =
        start(TargetKind::RealtimeServer, paths, log_name, &secret_text, &api_key, n + 500, env)
            .await?;
    let http = HttpClient::new(running.addr, Some(api_key.clone()), Duration::from_secs(30));
    Ok(Server { running, secret_text, http, api_key })
}

impl Server {
    async fn fleet(&self, paths: &Paths, plan: &Plan, n: u32) -> anyhow::Result<Fleet> {
        let workers = n.div_ceil(plan.shard_cap.max(1)).max(1) as usize;
        let secret_hex = to_hex(self.secret_text.as_bytes());
        Fleet::spawn(&paths.loadgen, self.running.addr, &secret_hex, workers).await
    }

    /// Waits until `/healthz` counts no connection; the last count seen.
    async fn wait_empty(&mut self) -> Option<u64> {
        let deadline = Instant::now() + EMPTY_WAIT;
        loop {
            let count = async {
                let response = self.http.get("/healthz").await.ok()?;
                let body: serde_json::Value = serde_json::from_slice(&response.body).ok()?;
                body.get("connections")?.as_u64()
            }
            .await;
            if count == Some(0) || Instant::now() > deadline {
                return count;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The phase's figures from the merged report; `seconds` only when every client got what
/// it should have.
fn phase(report: ReconnectReport, cpu_seconds: f64) -> ReconnectPhase {
    let mut p = ReconnectPhase {
        requested: report.requested,
        ok: report.ok,
        failed: report.failed,
        not_recovered: report.not_recovered,
        wrong_count: report.wrong_count,
        recovered_messages: report.recovered_messages,
        seconds: None,
        cpu_seconds,
        latency: Summary::of(&report.latency.to_hist()),
        first_error: report.first_error,
    };
    if p.errors() == 0 && p.ok == p.requested && p.requested > 0 {
        p.seconds = Some(report.elapsed_us as f64 / 1e6);
    }
    p
}

async fn recovery(
    paths: &Paths,
    plan: &Plan,
    notes: &mut Vec<String>,
) -> anyhow::Result<RecoveryResult> {
    let n = plan.recovery_n;
    let mut server = start_server(paths, "realtime-server-recovery", n, &[]).await?;
    let mut fleet = server.fleet(paths, plan, n).await?;
    let result = async {
        let batch = fleet.connect_to(n, plan.connect_concurrency).await?;
        if batch.failed > 0 {
            bail!("{} of {n} handshakes failed: {:?}", batch.failed, batch.first_error);
        }
        let mut r = RecoveryResult {
            n,
            missed: plan.recovery_missed,
            concurrency: plan.reconnect_concurrency,
            ..RecoveryResult::default()
        };
        let mut seq = 0;
        for rep in 0..plan.streams_reps {
            let plain_first = rep % 2 == 1;
            let mut this = RecoveryRep { rep, plain_first, ..RecoveryRep::default() };
            for recover in if plain_first { [false, true] } else { [true, false] } {
                // Clients lost to an error are replaced by new ones (with fresh positions).
                let top_up = fleet.connect_to(n, plan.connect_concurrency).await?;
                if top_up.failed > 0 {
                    notes.push(format!("recovery rep {rep}: {} handshakes failed", top_up.failed));
                }
                fleet.disconnect_all(Duration::from_secs(10)).await?;
                let left = server.wait_empty().await;
                if left != Some(0) {
                    notes.push(format!("recovery rep {rep}: registry holds {left:?} connections"));
                }
                // Broadcasts nobody receives now: every client misses each of them.
                for _ in 0..plan.recovery_missed {
                    let payload = BenchPayload { r: MISSED_ROUND, s: seq, t: unix_micros(), to: None };
                    seq += 1;
                    let response =
                        server.http.post_json("/api/publish", &publish_body(&Target::Broadcast, &payload)).await?;
                    if response.status != 200 {
                        bail!("publishing a missed broadcast answered HTTP {}", response.status);
                    }
                }
                let missed = recover.then_some(u64::from(plan.recovery_missed));
                let cpu0 = cpu_seconds(server.running.pid).unwrap_or(0.0);
                let report = fleet.reconnect(plan.reconnect_concurrency, missed).await?;
                let cpu = cpu_seconds(server.running.pid).unwrap_or(0.0) - cpu0;
                let p = phase(report, cpu);
                eprintln!(
                    "  streams: recovery rep {rep} {}: {} of {} ok ({} failed, {} not recovered, {} wrong count) in {:?} s, {:.2} CPU-s",
                    if recover { "with since" } else { "plain" },
                    p.ok,
                    p.requested,
                    p.failed,
                    p.not_recovered,
                    p.wrong_count,
                    p.seconds,
                    p.cpu_seconds
                );
                if let Some(e) = p.first_error.as_ref().filter(|_| p.errors() > 0) {
                    notes.push(format!(
                        "recovery rep {rep} ({}): {} clients in error, first: {e}",
                        if recover { "with since" } else { "plain" },
                        p.errors()
                    ));
                }
                if p.requested != n {
                    notes.push(format!("recovery rep {rep}: {} of {n} clients were open to reconnect", p.requested));
                }
                r.errors += u64::from(p.errors());
                if recover { this.recover = p } else { this.plain = p }
            }
            r.reps.push(this);
        }
        let med = |f: &dyn Fn(&RecoveryRep) -> Option<f64>| median(r.reps.iter().filter_map(f).collect());
        r.recover_seconds = med(&|x| x.recover.seconds);
        r.plain_seconds = med(&|x| x.plain.seconds);
        r.recover_cpu_seconds = med(&|x| x.recover.seconds.map(|_| x.recover.cpu_seconds));
        r.plain_cpu_seconds = med(&|x| x.plain.seconds.map(|_| x.plain.cpu_seconds));
        anyhow::Ok(r)
    }
    .await;
    fleet.quit().await;
    let _ = server.running.child.kill().await;
    result
}

async fn history_cost(
    paths: &Paths,
    plan: &Plan,
    notes: &mut Vec<String>,
) -> anyhow::Result<HistoryCostResult> {
    let n = plan.history_n;
    let mut r = HistoryCostResult {
        n,
        rate_per_s: plan.history_rate,
        secs: plan.history_secs,
        ..HistoryCostResult::default()
    };
    for rep in 0..plan.streams_reps {
        // Interleaved: the order alternates between repetitions.
        for history in if rep % 2 == 1 { [false, true] } else { [true, false] } {
            let env: Vec<(&str, String)> = if history {
                Vec::new()
            } else {
                vec![("REALTIME_HISTORY_OFF", ALL_KINDS.to_owned())]
            };
            let name =
                format!("realtime-server-history-{}-rep{rep}", if history { "on" } else { "off" });
            let mut server = start_server(paths, &name, n, &env).await?;
            let mut fleet = server.fleet(paths, plan, n).await?;
            let result = async {
                let batch = fleet.connect_to(n, plan.connect_concurrency).await?;
                if batch.failed > 0 {
                    bail!("{} of {n} handshakes failed: {:?}", batch.failed, batch.first_error);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                let mut session = Session::new(
                    plan,
                    TargetKind::RealtimeServer,
                    &server.running,
                    server.api_key.clone(),
                    rep,
                );
                let t =
                    session.open_loop_for(&mut fleet, plan.history_rate, plan.history_secs).await?;
                notes.extend(session.into_notes().into_iter().map(|note| {
                    format!("history {} rep {rep}: {note}", if history { "on" } else { "off" })
                }));
                anyhow::Ok(t)
            }
            .await;
            fleet.quit().await;
            let _ = server.running.child.kill().await;
            let throughput = result?;
            eprintln!(
                "  streams: history {} rep {rep}: {:.0} deliveries/s, {:.2} CPU-s per million (missing {}, extra {})",
                if history { "on" } else { "off" },
                throughput.delivered_per_s,
                throughput.cpu_s_per_million,
                throughput.missing,
                throughput.extra
            );
            r.missing += throughput.missing;
            r.extra += throughput.extra;
            r.reps.push(HistoryRep { rep, history, throughput });
        }
    }
    let med = |on: bool, f: fn(&HistoryRep) -> f64| {
        median(r.reps.iter().filter(|x| x.history == on).map(f).collect())
    };
    r.on_delivered_per_s = med(true, |x| x.throughput.delivered_per_s);
    r.off_delivered_per_s = med(false, |x| x.throughput.delivered_per_s);
    r.on_cpu_s_per_million = med(true, |x| x.throughput.cpu_s_per_million);
    r.off_cpu_s_per_million = med(false, |x| x.throughput.cpu_s_per_million);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use realtime_bench::hist::{HistPairs, new_hist, record};

    #[test]
    fn a_phase_with_any_error_has_no_time() {
        let mut h = new_hist();
        record(&mut h, 1500);
        let report = ReconnectReport {
            requested: 3,
            ok: 3,
            recovered_messages: 30,
            elapsed_us: 2_500_000,
            latency: HistPairs::of(&h),
            ..ReconnectReport::default()
        };
        let p = phase(report.clone(), 0.5);
        assert_eq!((p.seconds, p.errors(), p.latency.count), (Some(2.5), 0, 1));
        let not_recovered = ReconnectReport { ok: 2, not_recovered: 1, ..report.clone() };
        assert_eq!(phase(not_recovered, 0.5).seconds, None);
        let wrong = ReconnectReport { ok: 2, wrong_count: 1, ..report.clone() };
        assert_eq!(phase(wrong, 0.5).errors(), 1);
        assert_eq!(phase(ReconnectReport { ok: 2, failed: 1, ..report }, 0.5).seconds, None);
        assert_eq!(phase(ReconnectReport::default(), 0.0).seconds, None, "nobody reconnected");
    }
}
