//! The smoke check: N clients, a few broadcasts and user messages through the HTTP API, and
//! an exactly-once count of what arrived. Correctness only; nothing about timing.

use std::net::SocketAddr;
use std::time::Duration;

use realtime_core::{Target, UserId};
use serde::{Deserialize, Serialize};

use crate::BenchError;
use crate::http::HttpClient;
use crate::shard::{RoundKind, RoundReport, Shard, ShardConfig};
use crate::wire::{BenchPayload, delivered_count, publish_body, unix_micros};

/// What [`smoke_with`] does.
#[derive(Clone)]
pub struct SmokeOptions {
    /// The server.
    pub addr: SocketAddr,
    /// API key for `POST /api/publish` (sent as `Authorization: Bearer`).
    pub api_key: String,
    /// HS256 secret for client tokens.
    pub secret: Vec<u8>,
    /// Client connections.
    pub connections: usize,
    /// Broadcasts (each must reach every connection once).
    pub broadcasts: usize,
    /// User-targeted messages (each must reach exactly its user's one connection).
    pub user_messages: usize,
    /// Time allowed for each connection, each publish and each message's deliveries.
    pub timeout: Duration,
}

impl std::fmt::Debug for SmokeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmokeOptions")
            .field("addr", &self.addr)
            .field("connections", &self.connections)
            .field("broadcasts", &self.broadcasts)
            .field("user_messages", &self.user_messages)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What arrived.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmokeReport {
    /// Connections opened.
    pub connections: u64,
    /// Broadcasts published.
    pub broadcasts: u64,
    /// User messages published.
    pub user_messages: u64,
    /// Deliveries that should have arrived.
    pub expected: u64,
    /// First, correct deliveries that arrived.
    pub delivered: u64,
    /// Expected deliveries that did not arrive.
    pub missing: u64,
    /// Deliveries that should not have arrived: duplicates, misrouted, stray.
    pub extra: u64,
    /// Sum of the servers' `{"delivered": N}` answers.
    pub server_delivered: u64,
}

impl SmokeReport {
    /// Whether every expected delivery arrived exactly once and nothing else did.
    pub fn is_exactly_once(&self) -> bool {
        self.missing == 0 && self.extra == 0 && self.delivered == self.expected
    }
}

/// [`smoke_with`] with `n_broadcasts` broadcasts, 5 user messages and a 10 s timeout.
///
/// # Errors
/// As [`smoke_with`].
pub async fn smoke(
    addr: SocketAddr,
    api_key: &str,
    secret: &[u8],
    n_connections: usize,
    n_broadcasts: usize,
) -> Result<SmokeReport, BenchError> {
    smoke_with(SmokeOptions {
        addr,
        api_key: api_key.to_owned(),
        secret: secret.to_vec(),
        connections: n_connections,
        broadcasts: n_broadcasts,
        user_messages: 5,
        timeout: Duration::from_secs(10),
    })
    .await
}

/// Opens the connections, publishes broadcasts then user messages one at a time (each after
/// the previous one arrived everywhere or timed out), and counts what arrived.
///
/// # Errors
/// [`BenchError::Connect`] when a connection fails; [`BenchError::HttpStatus`] (and the
/// other variants) when a publish fails. Missing or extra deliveries are not errors: they
/// are in the report.
pub async fn smoke_with(options: SmokeOptions) -> Result<SmokeReport, BenchError> {
    let mut cfg = ShardConfig::new(options.addr, options.secret.clone(), 0);
    cfg.connect_timeout = options.timeout;
    let mut shard = Shard::new(cfg);
    let mut done = shard
        .take_done_events()
        .ok_or_else(|| BenchError::Protocol("done events already taken".into()))?;
    let n = u32::try_from(options.connections).unwrap_or(u32::MAX);
    let connected = shard.connect(n, 32).await;
    if connected.failed > 0 {
        return Err(BenchError::Connect {
            requested: options.connections,
            failed: connected.failed as usize,
            first_error: connected.first_error.unwrap_or_default(),
        });
    }
    let mut http = HttpClient::new(options.addr, Some(options.api_key.clone()), options.timeout);
    let mut report = SmokeReport { connections: u64::from(connected.ok), ..SmokeReport::default() };

    // Round 1: broadcasts.
    let seqs = u32::try_from(options.broadcasts).unwrap_or(u32::MAX);
    let expected = shard.begin_round(1, RoundKind::Broadcast, seqs);
    for s in 0..seqs {
        let payload = BenchPayload { r: 1, s, t: unix_micros(), to: None };
        report.server_delivered += publish(&mut http, &Target::Broadcast, &payload).await?;
        wait_done(&mut done, 1, s, options.timeout).await;
    }
    let broadcasts = shard.end_round();
    report.broadcasts = u64::from(seqs);
    report.expected += u64::from(expected) * u64::from(seqs);
    account(&mut report, &broadcasts);
    report.missing += broadcasts.missing;

    // Round 2: one message to each of the first users.
    let users = options.user_messages.min(options.connections);
    let seqs = u32::try_from(users).unwrap_or(u32::MAX);
    shard.begin_round(2, RoundKind::User, seqs);
    for s in 0..seqs {
        let user = shard.user(s);
        let target =
            Target::User(UserId::new(&user).map_err(|e| BenchError::Protocol(e.to_string()))?);
        let payload = BenchPayload { r: 2, s, t: unix_micros(), to: Some(user) };
        report.server_delivered += publish(&mut http, &target, &payload).await?;
        wait_done(&mut done, 2, s, options.timeout).await;
    }
    // Give a misrouted or duplicated copy a moment to show up.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let targeted = shard.end_round();
    report.user_messages = u64::from(seqs);
    report.expected += u64::from(seqs);
    account(&mut report, &targeted);
    report.missing += targeted.per_seq_count.iter().filter(|&&c| c == 0).count() as u64;
    shard.close();
    Ok(report)
}

fn account(report: &mut SmokeReport, round: &RoundReport) {
    report.delivered += round.deliveries;
    report.extra += round.extra();
}

/// Publishes one benchmark message; the server's delivered count.
async fn publish(
    http: &mut HttpClient,
    target: &Target,
    payload: &BenchPayload,
) -> Result<u64, BenchError> {
    let response = http.post_json("/api/publish", &publish_body(target, payload)).await?;
    if response.status != 200 {
        return Err(BenchError::HttpStatus {
            path: "/api/publish".into(),
            status: response.status,
            body: String::from_utf8_lossy(&response.body).chars().take(200).collect(),
        });
    }
    Ok(delivered_count(&response.body).unwrap_or(0))
}

/// Waits until `(round, seq)` is done or `timeout` passes; earlier events are skipped.
async fn wait_done(
    done: &mut tokio::sync::mpsc::UnboundedReceiver<(u64, u32)>,
    round: u64,
    seq: u32,
    timeout: Duration,
) {
    let _ = tokio::time::timeout(timeout, async {
        while let Some(event) = done.recv().await {
            if event == (round, seq) {
                return;
            }
        }
    })
    .await;
}
