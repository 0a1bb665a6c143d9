//! `realtime-loadgen`: the load generator. `run` drives a server from this one process and
//! prints a JSON summary; `worker` is one shard steered by the bench driver over
//! stdin/stdout (see `realtime_bench::worker`).

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use realtime_bench::hist::{Summary, new_hist, record};
use realtime_bench::http::HttpClient;
use realtime_bench::shard::{RoundKind, Shard, ShardConfig};
use realtime_bench::wire::{BenchPayload, delivered_count, publish_body, unix_micros};
use realtime_bench::worker::{SECRET_ENV, from_hex, run_worker};
use realtime_core::Target;
use serde_json::json;

/// Load generator for any server speaking realtime's wire protocol.
#[derive(Debug, Parser)]
#[command(name = "realtime-loadgen", version, about)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Open N connections, publish broadcasts one at a time, print a JSON summary.
    Run {
        /// Server address.
        #[arg(long)]
        addr: SocketAddr,
        /// API key for POST /api/publish.
        #[arg(long, env = "REALTIME_API_KEY", hide_env_values = true, default_value = "")]
        api_key: String,
        /// HS256 secret the server verifies client tokens with.
        #[arg(long, env = "REALTIME_JWT_SECRET", hide_env_values = true)]
        secret: String,
        /// Connections to open (at most about 19,000 per process).
        #[arg(long, default_value_t = 1000)]
        connections: u32,
        /// Broadcasts to publish.
        #[arg(long, default_value_t = 20)]
        broadcasts: u32,
        /// Handshakes in flight.
        #[arg(long, default_value_t = 64)]
        concurrency: u32,
        /// Seconds to wait for each broadcast to reach everyone.
        #[arg(long, default_value_t = 5)]
        timeout_secs: u64,
    },
    /// Run as a shard of the bench driver (JSON lines on stdin/stdout). The JWT secret comes
    /// hex-encoded in the environment variable REALTIME_BENCH_SECRET_HEX.
    Worker {
        /// Server address.
        #[arg(long)]
        addr: SocketAddr,
        /// Shard number.
        #[arg(long)]
        shard: u32,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match args.command {
        Cmd::Worker { addr, shard } => {
            let hex = std::env::var(SECRET_ENV).with_context(|| format!("{SECRET_ENV} not set"))?;
            let secret = from_hex(&hex).with_context(|| format!("{SECRET_ENV} is not hex"))?;
            runtime.block_on(run_worker(addr, secret, shard))?;
        }
        Cmd::Run { addr, api_key, secret, connections, broadcasts, concurrency, timeout_secs } => {
            let summary = runtime.block_on(run(
                addr,
                api_key,
                secret.into_bytes(),
                connections,
                broadcasts,
                concurrency,
                Duration::from_secs(timeout_secs),
            ))?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", serde_json::to_string_pretty(&summary)?)?;
        }
    }
    Ok(())
}

async fn run(
    addr: SocketAddr,
    api_key: String,
    secret: Vec<u8>,
    connections: u32,
    broadcasts: u32,
    concurrency: u32,
    timeout: Duration,
) -> anyhow::Result<serde_json::Value> {
    let mut shard = Shard::new(ShardConfig::new(addr, secret, 0));
    let Some(mut done) = shard.take_done_events() else { bail!("no done events") };
    let connected = shard.connect(connections, concurrency).await;
    if connected.ok == 0 {
        bail!("no connection opened: {}", connected.first_error.unwrap_or_default());
    }
    let handshake = Summary::of(&connected.latency.to_hist());
    let rate = f64::from(connected.ok) / (connected.elapsed_us.max(1) as f64 / 1e6);

    let mut http = HttpClient::new(addr, Some(api_key), timeout);
    let expected = shard.begin_round(1, RoundKind::Broadcast, broadcasts);
    let mut sent = Vec::new();
    let mut server_delivered = 0;
    let start = Instant::now();
    for s in 0..broadcasts {
        let t = unix_micros();
        sent.push(t);
        let body = publish_body(&Target::Broadcast, &BenchPayload { r: 1, s, t, to: None });
        let response = http.post_json("/api/publish", &body).await?;
        if response.status != 200 {
            bail!("publish answered HTTP {}", response.status);
        }
        server_delivered += delivered_count(&response.body).unwrap_or(0);
        let _ = tokio::time::timeout(timeout, async {
            while let Some(event) = done.recv().await {
                if event == (1, s) {
                    break;
                }
            }
        })
        .await;
    }
    let wall = start.elapsed();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let report = shard.end_round();
    let mut completion = new_hist();
    for (&max, &count) in report.per_seq_max_us.iter().zip(&report.per_seq_count) {
        if count == expected {
            record(&mut completion, max);
        }
    }
    shard.close();
    Ok(json!({
        "connections": { "requested": connections, "ok": connected.ok, "failed": connected.failed,
            "rate_per_s": rate, "handshake_us": handshake, "first_error": connected.first_error },
        "broadcasts": broadcasts,
        "wall_ms": wall.as_millis() as u64,
        "expected_deliveries": u64::from(expected) * u64::from(broadcasts),
        "deliveries": report.deliveries,
        "server_delivered": server_delivered,
        "missing": report.missing,
        "extra": report.extra(),
        "completion_us": Summary::of(&completion),
        "delivery_us": Summary::of(&report.latency.to_hist()),
    }))
}
