//! `realtime-bench`: the bench driver behind `cargo xtask bench`. It builds the binaries,
//! runs realtime-server and the baseline interleaved through every scenario, then the soak
//! scenarios (churn, slow consumers, drain) against a fresh realtime-server, then the streams
//! scenarios (recovery cost, history on vs off) against fresh ones, then the compression
//! scenario (permessage-deflate off vs on, bytes on the wire and CPU), writes
//! `results/bench/<date>.json`, renders `docs/bench/*.png` and updates `docs/benchmarks.md`.
//! Targets are reported, never asserted; the exit code is non-zero only when a delivery was
//! missing or extra, a reconnecting client did not recover exactly what it missed, or a
//! session could not run.

mod charts;
mod cluster;
mod compression;
mod fleet;
mod procfs;
mod report;
mod results;
mod session;
mod soak;
mod streams;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};

use crate::results::{Plan, RunResults, TargetKind};
use crate::session::{Paths, default_root, run_session};

/// Benchmarks realtime-server against the bare tokio-tungstenite baseline.
#[derive(Debug, Parser)]
#[command(name = "realtime-bench", version, about)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
    /// Workspace root (results/, docs/ and target/ are under it).
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// Use the binaries already in target/release instead of building them.
    #[arg(long, global = true)]
    no_build: bool,
    /// Which servers to measure.
    #[arg(long, global = true, value_enum, default_value = "both")]
    targets: Targets,
    /// Override the number of repetitions.
    #[arg(long, global = true)]
    reps: Option<usize>,
    /// Override the largest N (the main N is lowered to it when larger).
    #[arg(long, global = true)]
    n_max: Option<u32>,
    /// Do not touch docs/ (results/bench/<date>.json is still written).
    #[arg(long, global = true)]
    no_docs: bool,
    /// Whether to run the soak scenarios (churn, slow consumers, drain; realtime-server
    /// only) after the comparison, instead of it, or not at all.
    #[arg(long, global = true, value_enum, default_value = "on")]
    soak: SoakMode,
    /// Override the connections of each soak scenario.
    #[arg(long, global = true)]
    soak_n: Option<u32>,
    /// Override the cycles of the churn scenario.
    #[arg(long, global = true)]
    churn_cycles: Option<u32>,
    /// Whether to run the streams scenarios (recovery cost, history on vs off;
    /// realtime-server only) after the others, instead of them, or not at all.
    #[arg(long, global = true, value_enum, default_value = "on")]
    streams: SoakMode,
    /// Whether to run the compression scenario (permessage-deflate off vs on;
    /// realtime-server only) after the others, instead of them, or not at all.
    #[arg(long, global = true, value_enum, default_value = "on")]
    compression: SoakMode,
    /// `cluster` mode: how many nodes (5).
    #[arg(long, global = true)]
    nodes: Option<usize>,
    /// `cluster` mode: connections per node (19,000).
    #[arg(long, global = true)]
    per_node: Option<u32>,
    /// Pin the server under test to the last CPU and the driver with its load generators to
    /// the others (`taskset`), instead of letting the scheduler spread all of them over every
    /// CPU. Off by default: see docs/benchmarks.md, Findings, for what it changed.
    #[arg(long, global = true)]
    pin: bool,
}

/// Whether a group of scenarios (soak, streams) runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SoakMode {
    /// After the comparison.
    On,
    /// Not at all.
    Off,
    /// Only this group.
    Only,
}

#[derive(Debug, Clone, Copy, Subcommand)]
enum Mode {
    /// N = 5,000, one repetition; soak at 5,000 with 10 churn cycles: a few minutes.
    Quick,
    /// N up to 19,000, every scenario, three repetitions, medians; soak at 10,000 with 100
    /// churn cycles.
    Full,
    /// Five realtime-server nodes joined by one Redis, 95,000 connections, against one node
    /// at the same per-node load (`cargo xtask bench --cluster`).
    Cluster,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Targets {
    /// realtime-server and the baseline, interleaved.
    Both,
    /// realtime-server only (no ratios).
    Server,
    /// The baseline only (no ratios).
    Baseline,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!(
                "error: some deliveries were missing or extra, or some clients did not recover \
                 exactly what they missed (see the results)"
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn cargo_build(root: &Path, package: &str, extra: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(root)
        .args(["build", "--release", "-p", package])
        .args(extra)
        .status()
        .with_context(|| format!("running cargo build -p {package}"))?;
    if !status.success() {
        bail!("cargo build --release -p {package} failed ({status})");
    }
    Ok(())
}

/// Pins this process (every thread; the load generators it starts inherit it) to all CPUs but
/// the last, and returns the last one's number for the servers (`taskset -c` syntax).
fn pin_driver() -> anyhow::Result<String> {
    let cpus = std::thread::available_parallelism().context("counting CPUs")?.get();
    if cpus < 2 {
        bail!("--pin needs at least 2 CPUs, this machine has {cpus}");
    }
    let driver = if cpus == 2 { "0".to_owned() } else { format!("0-{}", cpus - 2) };
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", &driver, &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running taskset (util-linux)")?;
    if !status.success() {
        bail!("taskset -a -p -c {driver} failed: {status}");
    }
    Ok((cpus - 1).to_string())
}

fn run(args: &Args) -> anyhow::Result<bool> {
    let root = args.root.clone().unwrap_or_else(default_root);
    let root = root.canonicalize().with_context(|| format!("workspace root {}", root.display()))?;
    let kinds: Vec<TargetKind> = match args.targets {
        Targets::Both => vec![TargetKind::RealtimeServer, TargetKind::Baseline],
        Targets::Server => vec![TargetKind::RealtimeServer],
        Targets::Baseline => vec![TargetKind::Baseline],
    };
    if !args.no_build {
        cargo_build(&root, "realtime-bench", &["--bins"])?;
        if kinds.contains(&TargetKind::RealtimeServer) {
            cargo_build(&root, "realtime-server", &[])?;
        }
    }
    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let release = target_dir.join("release");
    if args.pin && matches!(args.mode, Mode::Cluster) {
        // The cluster's nodes would share one CPU, and its report has no method line to say so.
        bail!("--pin applies to quick and full runs, not to cluster");
    }
    let server_cpus = if args.pin { Some(pin_driver()?) } else { None };
    let paths = Paths {
        server_cpus,
        server: release.join("realtime-server"),
        baseline: release.join("realtime-baseline"),
        loadgen: release.join("realtime-loadgen"),
        logs: target_dir.join("bench-logs"),
    };
    for (kind, path) in
        [(TargetKind::RealtimeServer, &paths.server), (TargetKind::Baseline, &paths.baseline)]
    {
        if kinds.contains(&kind) && !path.exists() {
            bail!("{} not found (build it, or pass --targets)", path.display());
        }
    }
    if !paths.loadgen.exists() {
        bail!("{} not found", paths.loadgen.display());
    }

    if matches!(args.mode, Mode::Cluster) {
        return run_cluster(args, &root, &paths);
    }
    let mut plan = match args.mode {
        Mode::Quick | Mode::Cluster => Plan::quick(),
        Mode::Full => Plan::full(),
    };
    plan.server_cpus.clone_from(&paths.server_cpus);
    if let Some(reps) = args.reps {
        plan.reps = reps.max(1);
    }
    if let Some(n) = args.n_max {
        plan.n_max = (n / plan.step).max(1) * plan.step;
        plan.n_main = plan.n_main.min(plan.n_max);
        plan.n_user_small = plan.n_user_small.min(plan.n_max);
    }
    if let Some(n) = args.soak_n {
        plan.soak_n = n;
    }
    if let Some(cycles) = args.churn_cycles {
        plan.churn_cycles = cycles;
    }
    // A group set to `only` runs alone.
    let alone = |group: SoakMode, others: [SoakMode; 2]| {
        group == SoakMode::Only || (group == SoakMode::On && !others.contains(&SoakMode::Only))
    };
    let run_soak = alone(args.soak, [args.streams, args.compression])
        && plan.soak_n > 0
        && kinds.contains(&TargetKind::RealtimeServer);
    if !run_soak {
        plan.soak_n = 0;
    }
    let run_streams = alone(args.streams, [args.soak, args.compression])
        && plan.streams_reps > 0
        && kinds.contains(&TargetKind::RealtimeServer);
    if !run_streams {
        plan.streams_reps = 0;
    }
    let run_compression = alone(args.compression, [args.soak, args.streams])
        && plan.compression_reps > 0
        && kinds.contains(&TargetKind::RealtimeServer);
    if !run_compression {
        plan.compression_reps = 0;
    }
    let command = std::env::var("REALTIME_BENCH_COMMAND").unwrap_or_else(|_| {
        let rest: Vec<String> = std::env::args().skip(1).collect();
        format!("cargo run --release -p realtime-bench --bin realtime-bench -- {}", rest.join(" "))
    });
    let started_unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let started = Instant::now();
    eprintln!("realtime-bench {}: {} repetition(s), N up to {}", plan.mode, plan.reps, plan.n_max);

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut sessions = Vec::new();
    let only = [args.soak, args.streams, args.compression].contains(&SoakMode::Only);
    let reps = if only { 0 } else { plan.reps };
    for rep in 0..reps {
        // Interleaved: the order alternates between repetitions.
        let mut order = kinds.clone();
        if rep % 2 == 1 {
            order.reverse();
        }
        for kind in order {
            eprintln!("session: {} rep {rep}", kind.name());
            let session = runtime
                .block_on(run_session(&paths, &plan, kind, rep))
                .with_context(|| format!("{} rep {rep}", kind.name()))?;
            sessions.push(session);
        }
    }
    let soak = if run_soak {
        eprintln!(
            "soak: N = {}, {} churn cycles, {} per mille slow consumers",
            plan.soak_n, plan.churn_cycles, plan.slow_per_mille
        );
        Some(runtime.block_on(soak::run_soak(&paths, &plan)).context("soak")?)
    } else {
        None
    };
    let streams = if run_streams {
        eprintln!(
            "streams: recovery N = {} ({} missed), history on/off N = {} at {}/s, {} repetition(s)",
            plan.recovery_n,
            plan.recovery_missed,
            plan.history_n,
            plan.history_rate,
            plan.streams_reps
        );
        Some(runtime.block_on(streams::run_streams(&paths, &plan)).context("streams")?)
    } else {
        None
    };
    let compression = if run_compression {
        eprintln!(
            "compression: N = {}, {} broadcasts per payload, {} repetition(s)",
            plan.compression_n, plan.compression_broadcasts, plan.compression_reps
        );
        Some(runtime.block_on(compression::run_compression(&paths, &plan)).context("compression")?)
    } else {
        None
    };
    drop(runtime);

    let summary = report::summarize(&plan, &sessions);
    let exactly_once = sessions.iter().all(|s| s.missing == 0 && s.extra == 0)
        && soak.as_ref().is_none_or(|s| s.slow.missing == 0 && s.slow.extra == 0)
        && streams.as_ref().is_none_or(|s| s.history.missing == 0 && s.history.extra == 0)
        && compression.as_ref().is_none_or(|c| c.missing == 0 && c.extra == 0);
    let recovered = streams.as_ref().is_none_or(|s| s.ok());
    let results = RunResults {
        date: report::utc_date(started_unix),
        started_unix,
        command,
        machine: procfs::machine(),
        plan,
        sessions,
        summary,
        soak,
        streams,
        compression,
        exactly_once,
    };
    let results_dir = root.join("results/bench");
    std::fs::create_dir_all(&results_dir)?;
    let json_path = results_dir.join(report::results_file(&results));
    std::fs::write(&json_path, serde_json::to_string_pretty(&results)?)?;
    eprintln!("wrote {}", json_path.display());

    if !args.no_docs {
        let docs = root.join("docs");
        let md_path = docs.join("benchmarks.md");
        let mut text = std::fs::read_to_string(&md_path).ok();
        // A soak-only run leaves the comparison's section and charts as they are.
        if !results.sessions.is_empty() {
            let charts = charts::render_all(&results, &docs.join("bench"))?;
            let generated = report::markdown(&results, &charts);
            text = Some(report::splice(text.as_deref(), &generated));
        }
        if let (Some(soak), Some(existing)) = (&results.soak, &text) {
            text = Some(report::splice_soak(existing, &report::soak_markdown(&results, soak)));
        }
        if let (Some(streams), Some(existing)) = (&results.streams, &text) {
            let generated = report::streams_markdown(&results, streams);
            text = Some(report::splice_streams(existing, &generated));
        }
        if let (Some(compression), Some(existing)) = (&results.compression, &text) {
            let generated = report::compression_markdown(&results, compression);
            text = Some(report::splice_compression(existing, &generated));
        }
        if let Some(text) = text {
            std::fs::write(&md_path, text)?;
            eprintln!("updated {}", md_path.display());
        }
    }

    let mut out = std::io::stdout().lock();
    let table = if results.sessions.is_empty() { &[][..] } else { &results.summary[..] };
    if !table.is_empty() {
        writeln!(
            out,
            "{:<62} {:>14} {:>14} {:>8}  target",
            "measure", "server", "baseline", "ratio"
        )?;
    }
    for r in table {
        writeln!(
            out,
            "{:<62} {:>14} {:>14} {:>8}  {}{}",
            format!("{} ({})", r.measure, r.unit),
            report::fmt_num(r.server),
            report::fmt_num(r.baseline),
            r.ratio.map(|v| format!("{v:.2}x")).unwrap_or_default(),
            r.target.as_deref().unwrap_or(""),
            match r.met {
                Some(true) => " [met]",
                Some(false) => " [MISSED]",
                None => "",
            }
        )?;
    }
    if let Some(s) = &results.streams {
        let (r, h) = (&s.recovery, &s.history);
        writeln!(
            out,
            "recovery N={} ({} missed): with since {} s / {} CPU-s, plain {} s / {} CPU-s; clients in error: {}",
            r.n,
            r.missed,
            report::fmt_num(r.recover_seconds),
            report::fmt_num(r.recover_cpu_seconds),
            report::fmt_num(r.plain_seconds),
            report::fmt_num(r.plain_cpu_seconds),
            r.errors
        )?;
        writeln!(
            out,
            "history N={} at {}/s: on {} deliveries/s, {} CPU-s/M; off {} deliveries/s, {} CPU-s/M",
            h.n,
            h.rate_per_s,
            report::fmt_num(h.on_delivered_per_s),
            report::fmt_num(h.on_cpu_s_per_million),
            report::fmt_num(h.off_delivered_per_s),
            report::fmt_num(h.off_cpu_s_per_million)
        )?;
    }
    if let Some(c) = &results.compression {
        for row in &c.rows {
            writeln!(
                out,
                "compression {} ({} B): wire {} -> {} B/delivery, server {} -> {} CPU-s/M, clients {} -> {} CPU-s/M",
                row.kind,
                report::fmt_num(row.frame_bytes),
                report::fmt_num(row.off_wire_bytes),
                report::fmt_num(row.on_wire_bytes),
                report::fmt_num(row.off_server_cpu_s_per_million),
                report::fmt_num(row.on_server_cpu_s_per_million),
                report::fmt_num(row.off_client_cpu_s_per_million),
                report::fmt_num(row.on_client_cpu_s_per_million)
            )?;
        }
    }
    writeln!(
        out,
        "exactly once: {}; recovered exactly: {recovered}; took {:.0} s",
        results.exactly_once,
        started.elapsed().as_secs_f64()
    )?;
    Ok(results.exactly_once && recovered)
}

/// `cluster` mode: runs [`cluster::run_cluster`], writes `results/bench/cluster-<date>.json`
/// and the cluster section of docs/benchmarks.md.
fn run_cluster(args: &Args, root: &Path, paths: &Paths) -> anyhow::Result<bool> {
    let mut plan = cluster::ClusterPlan::full();
    if let Some(nodes) = args.nodes {
        plan.nodes = nodes.max(1);
    }
    if let Some(per_node) = args.per_node {
        plan.per_node = per_node.max(1);
    }
    let command = std::env::var("REALTIME_BENCH_COMMAND").unwrap_or_else(|_| {
        let rest: Vec<String> = std::env::args().skip(1).collect();
        format!("cargo run --release -p realtime-bench --bin realtime-bench -- {}", rest.join(" "))
    });
    let started_unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(cluster::run_cluster(paths, &plan)).context("cluster")?;
    drop(runtime);
    let date = report::utc_date(started_unix);
    let results_dir = root.join("results/bench");
    std::fs::create_dir_all(&results_dir)?;
    let json_path = results_dir.join(format!("cluster-{date}.json"));
    std::fs::write(&json_path, serde_json::to_string_pretty(&result)?)?;
    eprintln!("wrote {}", json_path.display());
    let generated = cluster::markdown(&result, &date, &command);
    if !args.no_docs {
        let md_path = root.join("docs/benchmarks.md");
        let text = std::fs::read_to_string(&md_path).unwrap_or_default();
        std::fs::write(&md_path, cluster::splice(&text, &generated))?;
        eprintln!("updated {}", md_path.display());
    }
    writeln!(std::io::stdout().lock(), "{generated}")?;
    Ok(result.exactly_once)
}
