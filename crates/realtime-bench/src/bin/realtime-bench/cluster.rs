//! The cluster scenario (`cargo xtask bench --cluster`): several realtime-server processes
//! joined by one Redis (a `redis-server` of the bench's own), load-generator shards spread
//! over the nodes, broadcasts and user messages published through one node; then one node
//! alone at the same per-node load, on the same Redis, as the reference. Reported: broadcast
//! completion p50/p99 and delivery p99 of both, their ratio, exactly-once counts, and the CPU
//! of Redis and of the nodes.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use realtime_bench::hist::Summary;
use realtime_bench::http::HttpClient;
use realtime_bench::shard::{RoundKind, user_of};
use realtime_bench::wire::{BenchPayload, publish_body, unix_micros};
use realtime_bench::worker::to_hex;
use realtime_core::{Target, UserId};
use serde::Serialize;
use tokio::time::Instant;

use crate::fleet::Fleet;
use crate::procfs::cpu_seconds;
use crate::results::TargetKind;
use crate::session::{Outcome, Paths, Running, random_bytes, start};

/// What the cluster scenario runs.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterPlan {
    /// Server processes.
    pub nodes: usize,
    /// Connections per node.
    pub per_node: u32,
    /// Most connections per load-generator shard.
    pub shard_size: u32,
    /// Broadcasts, one at a time.
    pub broadcasts: u32,
    /// Messages to random users, one at a time.
    pub users: u32,
    /// Handshakes in flight per node.
    pub concurrency: u32,
    /// Pause between two publications (ms).
    pub gap_ms: u64,
    /// Longest wait for one publication to reach everyone (ms).
    pub done_timeout_ms: u64,
}

impl ClusterPlan {
    /// Five nodes of 19,000 connections (95,000), shards of at most 10,000.
    pub fn full() -> ClusterPlan {
        ClusterPlan {
            nodes: 5,
            per_node: 19_000,
            shard_size: 10_000,
            broadcasts: 40,
            users: 200,
            concurrency: 256,
            gap_ms: 50,
            done_timeout_ms: 20_000,
        }
    }
}

/// One topology's figures.
#[derive(Debug, Clone, Serialize)]
pub struct TopologyResult {
    /// Nodes.
    pub nodes: usize,
    /// Connections open when the broadcasts ran.
    pub connections: u32,
    /// Connections that failed to open.
    pub connect_failed: u32,
    /// Seconds to open them.
    pub connect_seconds: f64,
    /// Broadcast completion (the last receiver), µs.
    pub completion: Summary,
    /// Broadcast delivery latency (every receiver), µs.
    pub delivery: Summary,
    /// User-message delivery latency, µs.
    pub user_delivery: Summary,
    /// Deliveries expected, received once, missing, extra (broadcasts and user messages).
    pub expected: u64,
    /// First, correct deliveries.
    pub deliveries: u64,
    /// Deliveries that did not arrive.
    pub missing: u64,
    /// Deliveries that should not have.
    pub extra: u64,
    /// CPU-seconds of Redis during the publications.
    pub redis_cpu_seconds: f64,
    /// CPU-seconds of every node during the publications.
    pub nodes_cpu_seconds: f64,
    /// Wall seconds of the publications.
    pub publish_seconds: f64,
}

/// The scenario's result.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterResult {
    /// What ran.
    pub plan: ClusterPlan,
    /// The nodes joined by Redis, published through the first.
    pub cluster: TopologyResult,
    /// One node alone at the same per-node load (same Redis broker).
    pub single: TopologyResult,
    /// The same nodes sharing the single node's connections (the same total work): what
    /// crossing nodes costs when the machine's cores are not the limit.
    pub spread: TopologyResult,
    /// Cross-node broadcast completion p99 over the single node's.
    pub completion_p99_ratio: f64,
    /// The spread topology's completion p99 over the single node's.
    pub spread_completion_p99_ratio: f64,
    /// Nothing missing, nothing extra, in both.
    pub exactly_once: bool,
    /// Unusual things seen.
    pub notes: Vec<String>,
}

/// A `redis-server` of the bench's own, killed when dropped.
struct Redis {
    child: tokio::process::Child,
    pid: u32,
    port: u16,
}

impl Redis {
    async fn start() -> anyhow::Result<Redis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = tokio::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--loglevel", "warning", "--maxclients", "10000"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting redis-server (apt-get install redis-server)")?;
        let pid = child.id().context("redis pid")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if Instant::now() > deadline {
                bail!("redis-server did not listen on {port}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Redis { child, pid, port })
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Runs the cluster topology, then the single-node reference.
pub async fn run_cluster(paths: &Paths, plan: &ClusterPlan) -> anyhow::Result<ClusterResult> {
    let redis = Redis::start().await?;
    let mut notes = Vec::new();
    eprintln!("cluster: {} nodes x {} connections", plan.nodes, plan.per_node);
    let per_node = plan.per_node;
    let cluster =
        run_topology(paths, plan, &redis, plan.nodes, per_node, "cluster", &mut notes).await?;
    eprintln!("cluster: one node x {per_node} connections (the reference)");
    let single = run_topology(paths, plan, &redis, 1, per_node, "single", &mut notes).await?;
    let share = (per_node / plan.nodes as u32).max(1);
    eprintln!("cluster: {} nodes x {share} connections (the same total)", plan.nodes);
    let spread = run_topology(paths, plan, &redis, plan.nodes, share, "spread", &mut notes).await?;
    let ratio = |t: &TopologyResult| {
        if single.completion.p99_us > 0 {
            t.completion.p99_us as f64 / single.completion.p99_us as f64
        } else {
            0.0
        }
    };
    let (completion_p99_ratio, spread_completion_p99_ratio) = (ratio(&cluster), ratio(&spread));
    let exactly_once = [&cluster, &single, &spread].iter().all(|t| t.missing == 0 && t.extra == 0);
    Ok(ClusterResult {
        plan: plan.clone(),
        cluster,
        single,
        spread,
        completion_p99_ratio,
        spread_completion_p99_ratio,
        exactly_once,
        notes,
    })
}

/// The total CPU-seconds of `pids`.
fn cpu_of(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|&pid| cpu_seconds(pid)).sum()
}

async fn run_topology(
    paths: &Paths,
    plan: &ClusterPlan,
    redis: &Redis,
    nodes: usize,
    per_node: u32,
    name: &str,
    notes: &mut Vec<String>,
) -> anyhow::Result<TopologyResult> {
    let secret_text = to_hex(&random_bytes());
    let api_key = to_hex(&random_bytes());
    let url = format!("redis://127.0.0.1:{}/", redis.port);
    // Each run has prefixes of its own: nothing of the previous topology is seen.
    let prefix = format!("bench-{name}");
    let mut running: Vec<Running> = Vec::new();
    for n in 0..nodes {
        let env = [
            ("REALTIME_BROKER", "redis".to_owned()),
            ("REALTIME_REDIS_URL", url.clone()),
            ("REALTIME_REDIS_PREFIX", prefix.clone()),
            ("REALTIME_NODE_ID", format!("{name}-{n}")),
        ];
        let log = format!("{name}-node{n}");
        let max = per_node + 500;
        running.push(
            start(TargetKind::RealtimeServer, paths, &log, &secret_text, &api_key, max, &env)
                .await?,
        );
    }
    let shards_per_node = per_node.div_ceil(plan.shard_size.max(1)).max(1) as usize;
    let secret_hex = to_hex(secret_text.as_bytes());
    let mut fleets = Vec::new();
    for (n, node) in running.iter().enumerate() {
        let first = n * shards_per_node;
        fleets.push(
            Fleet::spawn_numbered(&paths.loadgen, node.addr, &secret_hex, shards_per_node, first)
                .await?,
        );
    }
    let connecting = Instant::now();
    let mut connect_failed = 0;
    // Nodes are connected one after the other: each gets the whole machine for its handshakes.
    for fleet in &mut fleets {
        let report = fleet.connect_to(per_node, plan.concurrency).await?;
        connect_failed += report.failed;
        if let Some(e) = report.first_error {
            notes.push(format!("{name}: a connection failed: {e}"));
        }
    }
    let connect_seconds = connecting.elapsed().as_secs_f64();
    let connections: u32 = fleets.iter().map(Fleet::total_open).sum();
    // Let every node's SUBSCRIBEs settle before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut http = HttpClient::new(running[0].addr, Some(api_key), Duration::from_secs(30));
    let pids: Vec<u32> = running.iter().map(|r| r.pid).collect();
    let (redis_before, nodes_before, started) =
        (cpu_of(&[redis.pid]), cpu_of(&pids), Instant::now());

    let broadcasts = broadcast_round(plan, &mut fleets, &mut http, 1, notes).await?;
    let users = user_round(plan, &mut fleets, &mut http, 2, shards_per_node, notes).await?;

    let publish_seconds = started.elapsed().as_secs_f64();
    let redis_cpu_seconds = cpu_of(&[redis.pid]) - redis_before;
    let nodes_cpu_seconds = cpu_of(&pids) - nodes_before;
    for fleet in fleets {
        fleet.quit().await;
    }
    drop(running);
    Ok(TopologyResult {
        nodes,
        connections,
        connect_failed,
        connect_seconds,
        completion: Summary::of(&broadcasts.completion()),
        delivery: Summary::of(broadcasts.delivery()),
        user_delivery: Summary::of(users.delivery()),
        expected: broadcasts.expected + users.expected,
        deliveries: broadcasts.deliveries + users.deliveries,
        missing: broadcasts.missing + users.missing,
        extra: broadcasts.extra + users.extra,
        redis_cpu_seconds,
        nodes_cpu_seconds,
        publish_seconds,
    })
}

/// Starts round `round` on every fleet; the expected counts of every worker, fleet by fleet.
async fn begin(
    fleets: &mut [Fleet],
    round: u64,
    kind: RoundKind,
    seqs: u32,
) -> anyhow::Result<Vec<Vec<u32>>> {
    let mut expected = Vec::new();
    for fleet in fleets.iter_mut() {
        expected.push(fleet.begin_round(round, kind, seqs).await?);
    }
    Ok(expected)
}

/// Ends the round on every fleet; the merged outcome.
async fn end(
    fleets: &mut [Fleet],
    kind: RoundKind,
    seqs: u32,
    expected: &[Vec<u32>],
) -> anyhow::Result<Outcome> {
    let mut reports = Vec::new();
    for fleet in fleets.iter_mut() {
        reports.extend(fleet.end_round(100).await?);
    }
    let expected: Vec<u32> = expected.iter().flatten().copied().collect();
    Ok(Outcome::merge(kind, seqs, &expected, &reports))
}

async fn publish(
    http: &mut HttpClient,
    target: &Target,
    payload: &BenchPayload,
    notes: &mut Vec<String>,
) -> bool {
    match http.post_json("/api/publish", &publish_body(target, payload)).await {
        Ok(r) if r.status == 200 => true,
        Ok(r) => {
            notes.push(format!("publish answered HTTP {}", r.status));
            false
        }
        Err(e) => {
            notes.push(format!("publish failed: {e}"));
            false
        }
    }
}

/// Broadcasts through the first node, each after the previous reached everyone.
async fn broadcast_round(
    plan: &ClusterPlan,
    fleets: &mut [Fleet],
    http: &mut HttpClient,
    round: u64,
    notes: &mut Vec<String>,
) -> anyhow::Result<Outcome> {
    let seqs = plan.broadcasts;
    let expected = begin(fleets, round, RoundKind::Broadcast, seqs).await?;
    for s in 0..seqs {
        let payload = BenchPayload { r: round, s, t: unix_micros(), to: None };
        if publish(http, &Target::Broadcast, &payload, notes).await {
            for (fleet, counts) in fleets.iter_mut().zip(&expected) {
                let needed = counts.iter().filter(|&&c| c > 0).count() as u32;
                let timeout = Duration::from_millis(plan.done_timeout_ms);
                if !fleet.wait_done(round, s, needed, timeout).await {
                    notes.push(format!("broadcast {s} did not reach a fleet in time"));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(plan.gap_ms)).await;
    }
    end(fleets, RoundKind::Broadcast, seqs, &expected).await
}

/// Messages to users picked at random over every node, through the first node.
async fn user_round(
    plan: &ClusterPlan,
    fleets: &mut [Fleet],
    http: &mut HttpClient,
    round: u64,
    shards_per_node: usize,
    notes: &mut Vec<String>,
) -> anyhow::Result<Outcome> {
    let seqs = plan.users;
    let expected = begin(fleets, round, RoundKind::User, seqs).await?;
    let slots: Vec<(usize, usize, u32)> = expected
        .iter()
        .enumerate()
        .flat_map(|(f, counts)| counts.iter().enumerate().map(move |(w, &c)| (f, w, c)))
        .collect();
    let total: u64 = slots.iter().map(|&(_, _, c)| u64::from(c)).sum();
    if total == 0 {
        bail!("no open connection for the user messages");
    }
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
    for s in 0..seqs {
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        let mut pick = rng.wrapping_mul(0x2545_F491_4F6C_DD1D) % total;
        let (mut fleet_of, mut worker) = (0, 0);
        for &(f, w, c) in &slots {
            if pick < u64::from(c) {
                (fleet_of, worker) = (f, w);
                break;
            }
            pick -= u64::from(c);
        }
        let shard = (fleet_of * shards_per_node + worker) as u32;
        let user = user_of(shard, pick as u32);
        let target = Target::User(UserId::new(&user)?);
        let payload = BenchPayload { r: round, s, t: unix_micros(), to: Some(user) };
        if publish(http, &target, &payload, notes).await {
            let timeout = Duration::from_millis(plan.done_timeout_ms);
            fleets[fleet_of].wait_done(round, s, 1, timeout).await;
        }
        tokio::time::sleep(Duration::from_millis(plan.gap_ms)).await;
    }
    end(fleets, RoundKind::User, seqs, &expected).await
}

/// The cluster section of docs/benchmarks.md.
pub fn markdown(result: &ClusterResult, date: &str, command: &str) -> String {
    let ms = |us: u64| format!("{:.1}", us as f64 / 1000.0);
    let row = |name: &str, t: &TopologyResult| {
        format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {}/{}/{} | {:.2} | {:.2} |\n",
            t.nodes,
            t.connections,
            ms(t.completion.p50_us),
            ms(t.completion.p99_us),
            ms(t.delivery.p99_us),
            ms(t.user_delivery.p99_us),
            t.deliveries,
            t.missing,
            t.extra,
            t.redis_cpu_seconds,
            t.nodes_cpu_seconds,
        )
    };
    let mut out = String::new();
    out.push_str(&format!(
        "Run {date} with `{command}`: {} nodes of {} connections joined by one `redis-server`, \
         clients on 127.0.0.2 and up in shards of at most {}; {} broadcasts and {} user messages \
         published one at a time through the first node; then one node alone at the same load \
         on the same Redis broker; then the same nodes sharing that one node's connections. \
         Every process (nodes, Redis, load generators) shares the machine's cores.\n\n",
        result.plan.nodes,
        result.plan.per_node,
        result.plan.shard_size,
        result.plan.broadcasts,
        result.plan.users
    ));
    out.push_str("| topology | nodes | connections | completion p50 (ms) | completion p99 (ms) | delivery p99 (ms) | user p99 (ms) | delivered/missing/extra | Redis CPU-s | nodes CPU-s |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    out.push_str(&row("cluster", &result.cluster));
    out.push_str(&row("one node", &result.single));
    out.push_str(&row("same total, spread", &result.spread));
    out.push_str(&format!(
        "\nCross-node broadcast completion p99 / single node at the same per-node load: \
         **{:.2}x** (target at most 1.5x); the same total connections spread over the nodes / \
         single node: **{:.2}x**; exactly once: **{}**.\n",
        result.completion_p99_ratio, result.spread_completion_p99_ratio, result.exactly_once
    ));
    let per_million = |t: &TopologyResult| {
        if t.deliveries == 0 { 0.0 } else { t.nodes_cpu_seconds * 1e6 / t.deliveries as f64 }
    };
    out.push_str(&format!(
        "\nNode CPU-seconds per million deliveries: cluster {:.1}, one node {:.1}, spread {:.1}.\n",
        per_million(&result.cluster),
        per_million(&result.single),
        per_million(&result.spread)
    ));
    for note in &result.notes {
        out.push_str(&format!("\n- {note}"));
    }
    out
}

/// Replaces the text between the cluster markers of `existing` (appends them when missing).
pub fn splice(existing: &str, generated: &str) -> String {
    const BEGIN: &str = "<!-- cluster:begin -->";
    const END: &str = "<!-- cluster:end -->";
    let section = format!("{BEGIN}\n{generated}\n{END}");
    match (existing.find(BEGIN), existing.find(END)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{section}{}", &existing[..b], &existing[e + END.len()..])
        }
        _ => format!("{}\n## Cluster (Redis, several nodes)\n\n{section}\n", existing.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_is_replaced_not_repeated() {
        let once = splice("# Benchmarks\n", "A");
        assert!(once.contains("## Cluster") && once.contains("\nA\n"));
        let twice = splice(&once, "B");
        assert!(twice.contains("\nB\n") && !twice.contains("\nA\n"));
        assert_eq!(twice.matches("## Cluster").count(), 1);
    }
}
