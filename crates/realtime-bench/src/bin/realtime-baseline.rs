//! `realtime-baseline`: the bare tokio-tungstenite broadcast server (see
//! `realtime_bench::baseline`). Prints `listening on <addr>` on stdout once bound.

use std::io::Write;
use std::net::SocketAddr;

use clap::Parser;
use realtime_bench::baseline::{BaselineConfig, serve};

/// Bare tokio-tungstenite broadcast server with realtime's wire format (no auth, registry
/// or service): the floor the benchmarks compare realtime-server against.
#[derive(Debug, Parser)]
#[command(name = "realtime-baseline", version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:3100")]
    listen: SocketAddr,
    /// Frames queued per connection before it is dropped as a slow consumer.
    #[arg(long, default_value_t = 256)]
    outbound_queue: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let bound = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {bound}")?;
        out.flush()?;
    }
    let config =
        BaselineConfig { outbound_queue: args.outbound_queue, ..BaselineConfig::default() };
    serve(listener, config).await?;
    Ok(())
}
