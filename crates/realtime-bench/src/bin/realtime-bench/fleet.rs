//! [`Fleet`]: the load-generator worker processes of one session, steered over their
//! stdin/stdout with `realtime_bench::worker`'s JSON lines.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use realtime_bench::shard::{
    ConnectReport, DisconnectReport, ReconnectReport, RoundKind, RoundReport, StatusReport,
};
use realtime_bench::worker::{Command, Event, SECRET_ENV};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The worker processes of one session.
pub struct Fleet {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    events: mpsc::UnboundedReceiver<(usize, Event)>,
    /// Done events received: `(round, seq)` → number of workers that reported it.
    done: HashMap<(u64, u32), u32>,
    /// Open connections per worker (slow ones not counted).
    pub open: Vec<u32>,
}

impl Fleet {
    /// Starts `workers` worker processes of `loadgen` against `addr`, and waits until each
    /// is ready.
    pub async fn spawn(
        loadgen: &Path,
        addr: SocketAddr,
        secret_hex: &str,
        workers: usize,
    ) -> anyhow::Result<Fleet> {
        Fleet::spawn_numbered(loadgen, addr, secret_hex, workers, 0).await
    }

    /// As [`spawn`](Self::spawn), with shard numbers from `first_shard` on (several fleets
    /// against several servers then have distinct users and source addresses).
    pub async fn spawn_numbered(
        loadgen: &Path,
        addr: SocketAddr,
        secret_hex: &str,
        workers: usize,
        first_shard: usize,
    ) -> anyhow::Result<Fleet> {
        let (tx, events) = mpsc::unbounded_channel();
        let mut children = Vec::new();
        let mut stdins = Vec::new();
        for w in 0..workers {
            let mut child = tokio::process::Command::new(loadgen)
                .args(["worker", "--addr", &addr.to_string()])
                .args(["--shard", &(first_shard + w).to_string()])
                .env(SECRET_ENV, secret_hex)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {}", loadgen.display()))?;
            let stdout = child.stdout.take().context("worker stdout")?;
            stdins.push(child.stdin.take().context("worker stdin")?);
            children.push(child);
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let event = serde_json::from_str::<Event>(&line).unwrap_or_else(|e| {
                        Event::Error { message: format!("unreadable worker line ({e}): {line}") }
                    });
                    if tx.send((w, event)).is_err() {
                        break;
                    }
                }
            });
        }
        let mut fleet =
            Fleet { children, stdins, events, done: HashMap::new(), open: vec![0; workers] };
        let all: Vec<usize> = (0..workers).collect();
        fleet
            .replies(&all, Duration::from_secs(30), |e| {
                matches!(e, Event::Ready { .. }).then_some(())
            })
            .await
            .context("waiting for workers to start")?;
        Ok(fleet)
    }

    /// Number of workers.
    pub fn len(&self) -> usize {
        self.stdins.len()
    }

    /// Total open connections.
    pub fn total_open(&self) -> u32 {
        self.open.iter().sum()
    }

    async fn send(&mut self, w: usize, command: &Command) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(command)?;
        line.push(b'\n');
        let stdin = self.stdins.get_mut(w).ok_or_else(|| anyhow!("no worker {w}"))?;
        stdin.write_all(&line).await.with_context(|| format!("writing to worker {w}"))?;
        stdin.flush().await?;
        Ok(())
    }

    /// The next event that is not a done event (done events are counted on the way), or
    /// `None` at `deadline`.
    async fn next_reply(&mut self, deadline: Instant) -> anyhow::Result<Option<(usize, Event)>> {
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => return Ok(None),
                Ok(None) => bail!("every worker exited"),
                Ok(Some((_, Event::Done { round, seq }))) => {
                    *self.done.entry((round, seq)).or_default() += 1;
                }
                Ok(Some((w, Event::Error { message }))) => bail!("worker {w}: {message}"),
                Ok(Some(other)) => return Ok(Some(other)),
            }
        }
    }

    /// One reply from each of `workers`, in that order, picked by `pick`.
    async fn replies<T>(
        &mut self,
        workers: &[usize],
        timeout: Duration,
        mut pick: impl FnMut(Event) -> Option<T>,
    ) -> anyhow::Result<Vec<T>> {
        let deadline = Instant::now() + timeout;
        let mut got: HashMap<usize, T> = HashMap::new();
        while got.len() < workers.len() {
            let Some((w, event)) = self.next_reply(deadline).await? else {
                bail!("workers did not answer within {timeout:?}");
            };
            if workers.contains(&w)
                && let Some(value) = pick(event)
            {
                got.insert(w, value);
            }
        }
        Ok(workers.iter().filter_map(|w| got.remove(w)).collect())
    }

    /// Waits until `needed` workers reported `(round, seq)` done, or `timeout`; whether they
    /// did.
    pub async fn wait_done(
        &mut self,
        round: u64,
        seq: u32,
        needed: u32,
        timeout: Duration,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.done.get(&(round, seq)).copied().unwrap_or(0) >= needed {
                return true;
            }
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some((_, Event::Done { round, seq }))) => {
                    *self.done.entry((round, seq)).or_default() += 1;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return false,
            }
        }
    }

    /// Worker `w`'s share of `total`, spread evenly.
    fn share(&self, total: u32, w: usize) -> u32 {
        let k = self.len().max(1) as u64;
        let share = u64::from(total) * (w as u64 + 1) / k - u64::from(total) * w as u64 / k;
        u32::try_from(share).unwrap_or(u32::MAX)
    }

    /// Opens connections until the fleet holds `total`, spread evenly over the workers;
    /// returns the merged report of this batch.
    pub async fn connect_to(
        &mut self,
        total: u32,
        concurrency: u32,
    ) -> anyhow::Result<ConnectReport> {
        let counts: Vec<u32> =
            (0..self.len()).map(|w| self.share(total, w).saturating_sub(self.open[w])).collect();
        self.connect(&counts, concurrency, false).await
    }

    /// Opens `count` more slow connections, spread evenly over the workers.
    pub async fn connect_slow(
        &mut self,
        count: u32,
        concurrency: u32,
    ) -> anyhow::Result<ConnectReport> {
        let counts: Vec<u32> = (0..self.len()).map(|w| self.share(count, w)).collect();
        self.connect(&counts, concurrency, true).await
    }

    async fn connect(
        &mut self,
        counts: &[u32],
        concurrency: u32,
        slow: bool,
    ) -> anyhow::Result<ConnectReport> {
        let mut asked = Vec::new();
        let per_worker_concurrency = (concurrency / self.len().max(1) as u32).max(1);
        for (w, &count) in counts.iter().enumerate() {
            if count > 0 {
                let command = Command::Connect { count, concurrency: per_worker_concurrency, slow };
                self.send(w, &command).await?;
                asked.push(w);
            }
        }
        let reports = self
            .replies(&asked, Duration::from_secs(300), |e| match e {
                Event::Connected(r) => Some(r),
                _ => None,
            })
            .await?;
        let mut merged = ConnectReport::default();
        let mut hist = realtime_bench::hist::new_hist();
        for (w, r) in asked.iter().zip(reports) {
            if !slow {
                self.open[*w] += r.ok;
            }
            merged.requested += r.requested;
            merged.ok += r.ok;
            merged.failed += r.failed;
            merged.elapsed_us = merged.elapsed_us.max(r.elapsed_us);
            r.latency.add_to(&mut hist);
            if merged.first_error.is_none() {
                merged.first_error = r.first_error;
            }
        }
        merged.latency = realtime_bench::hist::HistPairs::of(&hist);
        Ok(merged)
    }

    /// Starts a round on every worker; connections per worker that must get each broadcast.
    pub async fn begin_round(
        &mut self,
        round: u64,
        kind: RoundKind,
        seqs: u32,
    ) -> anyhow::Result<Vec<u32>> {
        let all: Vec<usize> = (0..self.len()).collect();
        for &w in &all {
            self.send(w, &Command::BeginRound { round, kind, seqs }).await?;
        }
        let expected = self
            .replies(&all, Duration::from_secs(30), |e| match e {
                Event::RoundStarted { round: r, expected } if r == round => Some(expected),
                _ => None,
            })
            .await?;
        self.open.clone_from(&expected);
        Ok(expected)
    }

    /// Ends the round on every worker after `settle_ms`; their reports, in worker order.
    pub async fn end_round(&mut self, settle_ms: u64) -> anyhow::Result<Vec<RoundReport>> {
        let all: Vec<usize> = (0..self.len()).collect();
        for &w in &all {
            self.send(w, &Command::EndRound { settle_ms }).await?;
        }
        self.replies(
            &all,
            Duration::from_secs(60) + Duration::from_millis(settle_ms),
            |e| match e {
                Event::RoundEnded(r) => Some(r),
                _ => None,
            },
        )
        .await
    }

    /// Sends `command` to every worker; their replies picked by `pick`, in worker order.
    async fn all<T>(
        &mut self,
        command: &Command,
        timeout: Duration,
        pick: impl FnMut(Event) -> Option<T>,
    ) -> anyhow::Result<Vec<T>> {
        let all: Vec<usize> = (0..self.len()).collect();
        for &w in &all {
            self.send(w, command).await?;
        }
        self.replies(&all, timeout, pick).await
    }

    /// Slow connections stop reading (`true`) or read again (`false`).
    pub async fn pause_slow(&mut self, paused: bool) -> anyhow::Result<()> {
        let command = if paused { Command::PauseSlow } else { Command::ResumeSlow };
        self.all(&command, Duration::from_secs(10), |e| match e {
            Event::SlowPaused { paused: p } if p == paused => Some(()),
            _ => None,
        })
        .await?;
        Ok(())
    }

    /// Every worker's open connections and the ends since its last status.
    pub async fn status(&mut self) -> anyhow::Result<Vec<StatusReport>> {
        self.all(&Command::Status, Duration::from_secs(10), |e| match e {
            Event::Status(r) => Some(r),
            _ => None,
        })
        .await
    }

    /// Closes every connection of every worker (see `Shard::disconnect_all`).
    pub async fn disconnect_all(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<Vec<DisconnectReport>> {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let reports = self
            .all(&Command::DisconnectAll { timeout_ms }, timeout + Duration::from_secs(30), |e| {
                match e {
                    Event::Disconnected(r) => Some(r),
                    _ => None,
                }
            })
            .await?;
        self.open.iter_mut().for_each(|o| *o = 0);
        Ok(reports)
    }

    /// Opens again every connection the last [`Fleet::disconnect_all`] closed, `concurrency`
    /// handshakes at a time over all workers, recovering `recover` missed publications each
    /// when given (see `Shard::reconnect`); the merged report.
    pub async fn reconnect(
        &mut self,
        concurrency: u32,
        recover: Option<u64>,
    ) -> anyhow::Result<ReconnectReport> {
        let per_worker = (concurrency / self.len().max(1) as u32).max(1);
        let command = Command::Reconnect { concurrency: per_worker, recover };
        let reports = self
            .all(&command, Duration::from_secs(300), |e| match e {
                Event::Reconnected(r) => Some(r),
                _ => None,
            })
            .await?;
        let mut merged = ReconnectReport::default();
        let mut hist = realtime_bench::hist::new_hist();
        for (w, r) in reports.into_iter().enumerate() {
            self.open[w] += r.ok;
            merged.requested += r.requested;
            merged.ok += r.ok;
            merged.failed += r.failed;
            merged.not_recovered += r.not_recovered;
            merged.wrong_count += r.wrong_count;
            merged.recovered_messages += r.recovered_messages;
            merged.elapsed_us = merged.elapsed_us.max(r.elapsed_us);
            r.latency.add_to(&mut hist);
            if merged.first_error.is_none() {
                merged.first_error = r.first_error;
            }
        }
        merged.latency = realtime_bench::hist::HistPairs::of(&hist);
        Ok(merged)
    }

    /// Asks every worker to quit and waits for them (killing those that linger).
    pub async fn quit(mut self) {
        for w in 0..self.len() {
            let _ = self.send(w, &Command::Quit).await;
        }
        for child in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
    }
}
