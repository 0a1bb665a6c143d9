//! `realtime-server`: runs the server from flags and environment (see `--help`).

use std::io::IsTerminal;

use clap::Parser;
use realtime_server::{Config, LogFormat, Running};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let filter = EnvFilter::try_new(&config.log)?;
    // The log goes to stderr; stdout carries only the banner (with the development secrets).
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log_format {
        LogFormat::Text => log.init(),
        LogFormat::Json => log.json().init(),
    }
    let running = realtime_server::start(config.clone()).await?;
    print_banner(&running, &config);
    let shutdown = running.shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: closing connections with 1012");
        shutdown.shutdown();
    });
    running.join().await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Prints what a person needs to try the server. Secrets go to stdout only, never to the log.
#[allow(clippy::print_stdout)]
fn print_banner(running: &Running, config: &Config) {
    let base = format!("http://{}", running.addr);
    let ws = format!("ws://{}/ws", running.addr);
    let key = &running.api_key;
    println!();
    println!("realtime server listening on {base}");
    if config.api_key.is_none() {
        println!("  generated API key:   {key}");
    }
    match running.metrics_addr {
        Some(metrics) => println!("  metrics:             http://{metrics}/metrics (no key)"),
        None => println!("  metrics:             {base}/metrics (Authorization: Bearer <API key>)"),
    }
    if let Some(dev) = &running.dev {
        println!("  development mode: random JWT secret (set REALTIME_JWT_SECRET for production)");
        println!("  JWT secret:          {}", dev.jwt_secret);
        println!("  admin token (roles admin,user): {}", dev.admin_token);
        println!("  alice token (role user):        {}", dev.user_token);
        println!();
        println!("  demo page (admin):   {base}/?token={}", dev.admin_token);
        println!("  demo page (alice):   {base}/?token={}", dev.user_token);
        println!("  WebSocket:           {ws}?token=<token>");
        println!();
        println!("  try (notification to alice, metrics to admins, job progress, announcement):");
        let curl = |body: &str| {
            println!(
                "    curl -s -X POST {base}/api/publish -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' -d '{body}'"
            );
        };
        curl(
            r#"{"target":{"user":"alice"},"message":{"type":"notification","payload":{"message":"New order #1234 received"}}}"#,
        );
        curl(
            r#"{"target":{"role":"admin"},"message":{"type":"metrics","payload":{"active_users":142,"orders_today":37}}}"#,
        );
        curl(
            r#"{"target":{"connection":"<connection_id from the page>"},"message":{"type":"job-progress","payload":{"job_id":"job-123","progress":45,"status":"Processing..."}}}"#,
        );
        curl(
            r#"{"target":"broadcast","message":{"type":"announcement","payload":{"message":"Maintenance in 5 minutes"}}}"#,
        );
    }
    println!();
}
