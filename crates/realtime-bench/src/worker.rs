//! The JSON-lines protocol between the bench driver and `realtime-loadgen worker`
//! processes, and the worker's loop.
//!
//! One process can hold at most about 20,000 sockets (the open-file limit), so the driver
//! shards large N over several worker processes. Each worker owns one [`Shard`]; the driver
//! writes one [`Command`] per line to its stdin and reads one [`Event`] per line from its
//! stdout. Done events stream while a round runs, so the driver can publish in closed loop.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::shard::{
    ConnectReport, DisconnectReport, ReconnectReport, RoundKind, RoundReport, Shard, ShardConfig,
    StatusReport,
};

/// Environment variable through which the driver hands workers the JWT secret (hex), so it
/// never appears on a command line.
pub const SECRET_ENV: &str = "REALTIME_BENCH_SECRET_HEX";

/// A driver-to-worker command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Open `count` more connections, `concurrency` handshakes at a time.
    Connect {
        /// How many.
        count: u32,
        /// Handshakes in flight.
        concurrency: u32,
        /// Slow connections (see [`Shard::connect_as`]).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        slow: bool,
    },
    /// Start a round.
    BeginRound {
        /// Round number (never 0).
        round: u64,
        /// Broadcast or user-targeted.
        kind: RoundKind,
        /// Messages in the round.
        seqs: u32,
    },
    /// Wait `settle_ms`, then report the round.
    EndRound {
        /// Milliseconds to wait for late deliveries first.
        settle_ms: u64,
    },
    /// Slow connections stop reading.
    PauseSlow,
    /// Slow connections read again.
    ResumeSlow,
    /// Report open connections and the ends since the last status.
    Status,
    /// Close every connection (see [`Shard::disconnect_all`]).
    DisconnectAll {
        /// Milliseconds allowed for the closing handshakes.
        timeout_ms: u64,
    },
    /// Open again every connection the last [`Command::DisconnectAll`] closed (see
    /// [`Shard::reconnect`]).
    Reconnect {
        /// Handshakes in flight.
        concurrency: u32,
        /// Present each connection's last positions as `since`; it must then receive this
        /// many missed publications.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recover: Option<u64>,
    },
    /// Close every connection and exit.
    Quit,
}

/// A worker-to-driver event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    /// The worker is up.
    Ready {
        /// Its shard number.
        shard: u32,
    },
    /// Answer to [`Command::Connect`].
    Connected(ConnectReport),
    /// Answer to [`Command::BeginRound`]: connections that must receive each broadcast.
    RoundStarted {
        /// The round.
        round: u64,
        /// Live connections.
        expected: u32,
    },
    /// A message reached every connection of this shard that should receive it.
    Done {
        /// The round.
        round: u64,
        /// The sequence number.
        seq: u32,
    },
    /// Answer to [`Command::EndRound`].
    RoundEnded(RoundReport),
    /// Answer to [`Command::PauseSlow`] and [`Command::ResumeSlow`]: whether slow connections
    /// are now paused.
    SlowPaused {
        /// Paused (true) or reading.
        paused: bool,
    },
    /// Answer to [`Command::Status`].
    Status(StatusReport),
    /// Answer to [`Command::DisconnectAll`].
    Disconnected(DisconnectReport),
    /// Answer to [`Command::Reconnect`].
    Reconnected(ReconnectReport),
    /// A command could not be understood.
    Error {
        /// What went wrong.
        message: String,
    },
}

/// Encodes bytes as lower-case hex.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes lower- or upper-case hex; `None` when malformed.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| text.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
        .collect()
}

/// Runs a worker on stdin/stdout until [`Command::Quit`] or the end of stdin.
///
/// # Errors
/// When stdout cannot be written (the driver is gone).
pub async fn run_worker(addr: SocketAddr, secret: Vec<u8>, shard: u32) -> std::io::Result<()> {
    let mut cfg = ShardConfig::new(addr, secret, shard);
    cfg.connect_timeout = Duration::from_secs(30);
    let mut shard_state = Shard::new(cfg);
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Event>();

    // One writer task owns stdout, so done events and answers never interleave mid-line.
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(event) = out_rx.recv().await {
            let mut line = serde_json::to_vec(&event).unwrap_or_default();
            line.push(b'\n');
            if stdout.write_all(&line).await.is_err() || stdout.flush().await.is_err() {
                break;
            }
        }
    });

    if let Some(mut done) = shard_state.take_done_events() {
        let out = out_tx.clone();
        tokio::spawn(async move {
            while let Some((round, seq)) = done.recv().await {
                if out.send(Event::Done { round, seq }).is_err() {
                    break;
                }
            }
        });
    }

    let _ = out_tx.send(Event::Ready { shard });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let command: Command = match serde_json::from_str(&line) {
            Ok(c) => c,
            Err(e) => {
                let _ = out_tx.send(Event::Error { message: format!("bad command: {e}") });
                continue;
            }
        };
        let event = match command {
            Command::Connect { count, concurrency, slow } => {
                Event::Connected(shard_state.connect_as(count, concurrency, slow).await)
            }
            Command::BeginRound { round, kind, seqs } => {
                let expected = shard_state.begin_round(round, kind, seqs);
                Event::RoundStarted { round, expected }
            }
            Command::EndRound { settle_ms } => {
                tokio::time::sleep(Duration::from_millis(settle_ms)).await;
                Event::RoundEnded(shard_state.end_round())
            }
            Command::PauseSlow => {
                shard_state.pause_slow();
                Event::SlowPaused { paused: true }
            }
            Command::ResumeSlow => {
                shard_state.resume_slow();
                Event::SlowPaused { paused: false }
            }
            Command::Status => Event::Status(shard_state.status()),
            Command::DisconnectAll { timeout_ms } => Event::Disconnected(
                shard_state.disconnect_all(Duration::from_millis(timeout_ms)).await,
            ),
            Command::Reconnect { concurrency, recover } => {
                Event::Reconnected(shard_state.reconnect(concurrency, recover).await)
            }
            Command::Quit => break,
        };
        if out_tx.send(event).is_err() {
            break;
        }
    }
    shard_state.close();
    drop(out_tx);
    drop(shard_state);
    let _ = writer.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_events_have_a_stable_json_form() {
        let cases = [
            (
                Command::Connect { count: 5, concurrency: 2, slow: false },
                r#"{"cmd":"connect","count":5,"concurrency":2}"#,
            ),
            (
                Command::Connect { count: 5, concurrency: 2, slow: true },
                r#"{"cmd":"connect","count":5,"concurrency":2,"slow":true}"#,
            ),
            (Command::PauseSlow, r#"{"cmd":"pause_slow"}"#),
            (Command::Status, r#"{"cmd":"status"}"#),
            (
                Command::DisconnectAll { timeout_ms: 500 },
                r#"{"cmd":"disconnect_all","timeout_ms":500}"#,
            ),
            (
                Command::BeginRound { round: 3, kind: RoundKind::User, seqs: 9 },
                r#"{"cmd":"begin_round","round":3,"kind":"user","seqs":9}"#,
            ),
            (Command::EndRound { settle_ms: 10 }, r#"{"cmd":"end_round","settle_ms":10}"#),
            (
                Command::Reconnect { concurrency: 8, recover: Some(10) },
                r#"{"cmd":"reconnect","concurrency":8,"recover":10}"#,
            ),
            (
                Command::Reconnect { concurrency: 8, recover: None },
                r#"{"cmd":"reconnect","concurrency":8}"#,
            ),
            (Command::Quit, r#"{"cmd":"quit"}"#),
        ];
        for (command, json) in cases {
            assert_eq!(serde_json::to_string(&command).unwrap(), json);
            assert_eq!(serde_json::from_str::<Command>(json).unwrap(), command);
        }
        let done = Event::Done { round: 1, seq: 2 };
        let json = serde_json::to_string(&done).unwrap();
        assert_eq!(json, r#"{"ev":"done","round":1,"seq":2}"#);
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), done);
        let ended = Event::RoundEnded(RoundReport { round: 4, ..RoundReport::default() });
        let back: Event = serde_json::from_str(&serde_json::to_string(&ended).unwrap()).unwrap();
        assert_eq!(back, ended);
    }

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(from_hex(&to_hex(&bytes)), Some(bytes));
        assert_eq!(from_hex("0"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("ABff"), Some(vec![0xab, 0xff]));
    }
}
