//! The demo: a page at `/` and an inbound handler that lets it trigger the design record's
//! three use cases through the real service API (a notification to the user, metrics to the
//! `admin` role, job progress to one connection), a topic (`demo:news`), and notifications
//! sent while the page's socket is down (`demo.notify_later`), which it recovers on reconnect.
//! What a client can start is bounded: at most [`MAX_JOBS_PER_CONNECTION`] running jobs
//! (delayed notifications count as jobs) per connection and [`MAX_JOBS`] in all.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use realtime_core::{Connection, ConnectionId, Envelope, MessageType, Payload, Role, TopicName};
use realtime_ports::{InboundError, InboundHandler, InboundReply, RealtimeApi};
use serde_json::json;

/// The demo page (plain HTML and an ES module on the JavaScript client it imports from
/// `/client.js`, no build step).
pub(crate) const DEMO_PAGE: &str = include_str!("../static/index.html");

/// Most demo jobs one connection may have running; a further `demo.job` is `rejected`.
pub(crate) const MAX_JOBS_PER_CONNECTION: usize = 3;
/// Most demo jobs running on the whole server; a further `demo.job` is `rejected`.
pub(crate) const MAX_JOBS: usize = 64;

/// The running demo jobs, counted per connection and in all.
#[derive(Debug, Default)]
struct JobSlots {
    running: Mutex<JobCounts>,
}

#[derive(Debug, Default)]
struct JobCounts {
    total: usize,
    by_connection: HashMap<ConnectionId, usize>,
}

impl JobSlots {
    /// A slot for one more job of `connection`, held until the job ends; the text of the
    /// `rejected` error when a bound is reached.
    fn acquire(self: &Arc<Self>, connection: ConnectionId) -> Result<JobSlot, &'static str> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if running.total >= MAX_JOBS {
            return Err("too many demo jobs running on the server; try again later");
        }
        let mine = running.by_connection.entry(connection).or_default();
        if *mine >= MAX_JOBS_PER_CONNECTION {
            return Err("too many demo jobs running for this connection; wait for one to end");
        }
        *mine += 1;
        running.total += 1;
        Ok(JobSlot { slots: Arc::clone(self), connection })
    }
}

/// One running job's place in [`JobSlots`], given back on drop (however the job ends).
struct JobSlot {
    slots: Arc<JobSlots>,
    connection: ConnectionId,
}

impl Drop for JobSlot {
    fn drop(&mut self) {
        let mut running = self.slots.running.lock().unwrap_or_else(PoisonError::into_inner);
        running.total = running.total.saturating_sub(1);
        if let Some(mine) = running.by_connection.get_mut(&self.connection) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                running.by_connection.remove(&self.connection);
            }
        }
    }
}

/// Answers the demo page's `demo.notify`, `demo.metrics` and `demo.job` messages by publishing
/// through the service, exactly as a backend would.
pub(crate) struct DemoHandler {
    api: Arc<dyn RealtimeApi>,
    counter: AtomicU64,
    jobs: Arc<JobSlots>,
}

impl std::fmt::Debug for DemoHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoHandler").finish_non_exhaustive()
    }
}

impl DemoHandler {
    pub(crate) fn new(api: Arc<dyn RealtimeApi>) -> Self {
        DemoHandler { api, counter: AtomicU64::new(0), jobs: Arc::default() }
    }
}

fn envelope(kind: &str, payload: serde_json::Value) -> Result<Envelope, InboundError> {
    Envelope::from_parts(kind, payload).map_err(|e| InboundError::Internal(e.to_string()))
}

fn ack(what: &str, delivered: usize) -> Result<InboundReply, InboundError> {
    let kind = MessageType::new("demo.ack").map_err(|e| InboundError::Internal(e.to_string()))?;
    let mut payload = Payload::new();
    payload.insert("action".into(), json!(what));
    payload.insert("delivered".into(), json!(delivered));
    Ok(Some(Envelope::new(kind, payload)))
}

#[async_trait]
impl InboundHandler for DemoHandler {
    async fn handle(
        &self,
        connection: &Connection,
        message: Envelope,
    ) -> Result<InboundReply, InboundError> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        let failed = |e: realtime_ports::PublishError| InboundError::Internal(e.to_string());
        match message.kind.as_str() {
            "demo.notify" => {
                let note = envelope(
                    "notification",
                    json!({ "message": format!("Demo notification #{n} for {}", connection.user_id) }),
                )?;
                let delivered =
                    self.api.send_to_user(&connection.user_id, &note).await.map_err(failed)?;
                ack("notify", delivered)
            }
            "demo.metrics" => {
                let admin =
                    Role::new("admin").map_err(|e| InboundError::Internal(e.to_string()))?;
                let figures = envelope(
                    "metrics",
                    json!({
                        "active_connections": self.api.connection_count(),
                        "orders_today": 30 + n % 17,
                        "sequence": n,
                    }),
                )?;
                let delivered = self.api.send_to_role(&admin, &figures).await.map_err(failed)?;
                ack("metrics", delivered)
            }
            "demo.topic" => {
                let topic = TopicName::new("demo:news")
                    .map_err(|e| InboundError::Internal(e.to_string()))?;
                let news = envelope(
                    "news",
                    json!({ "message": format!("News #{n} from {}", connection.user_id) }),
                )?;
                let delivered = self.api.send_to_topic(&topic, &news).await.map_err(failed)?;
                ack("topic", delivered)
            }
            "demo.notify_later" => {
                // Three notifications over the next 3 s: the page drops its socket meanwhile
                // and gets them back, once and in order, when it reconnects with `since`.
                let slot = self
                    .jobs
                    .acquire(connection.id)
                    .map_err(|why| InboundError::Rejected(why.to_owned()))?;
                let api = self.api.clone();
                let user = connection.user_id.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    for i in 1..=3 {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let text = format!("Sent while you were offline ({i} of 3, demo #{n})");
                        let Ok(note) = envelope("notification", json!({ "message": text })) else {
                            return;
                        };
                        if api.send_to_user(&user, &note).await.is_err() {
                            return;
                        }
                    }
                });
                ack("notify_later", 3)
            }
            "demo.job" => {
                let slot = self
                    .jobs
                    .acquire(connection.id)
                    .map_err(|why| InboundError::Rejected(why.to_owned()))?;
                let api = self.api.clone();
                let id = connection.id;
                let job = format!("job-{n}");
                tokio::spawn(async move {
                    // Held while the job runs (and given back if it stops early).
                    let mut slot = Some(slot);
                    for progress in (0..=100).step_by(10) {
                        let status = if progress == 100 { "Done" } else { "Processing..." };
                        let Ok(update) = envelope(
                            "job-progress",
                            json!({ "job_id": job, "progress": progress, "status": status }),
                        ) else {
                            return;
                        };
                        if progress == 100 {
                            // Over before its last update goes out: whoever sees "Done" may
                            // start another job.
                            slot.take();
                        }
                        match api.send_to_connection(id, &update).await {
                            Ok(1) => {}
                            _ => return, // the connection is gone
                        }
                        if progress < 100 {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                        }
                    }
                });
                ack("job", 1)
            }
            _ => Err(InboundError::Unsupported),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> ConnectionId {
        ConnectionId::from_uuid(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn job_slots_are_bounded_per_connection_and_in_all() {
        let slots = Arc::new(JobSlots::default());
        let mine: Vec<JobSlot> = (0..MAX_JOBS_PER_CONNECTION)
            .map(|_| slots.acquire(id(1)).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        let refused = slots.acquire(id(1)).err().unwrap_or_else(|| panic!("a fourth job ran"));
        assert!(refused.contains("for this connection"), "{refused}");
        drop(mine);
        assert!(slots.acquire(id(1)).is_ok(), "an ended job keeps its slot");

        let mut all = Vec::new();
        for n in 0..MAX_JOBS {
            let conn = id(100 + (n / MAX_JOBS_PER_CONNECTION) as u128);
            all.push(slots.acquire(conn).unwrap_or_else(|e| panic!("job {n}: {e}")));
        }
        let refused = slots.acquire(id(1)).err().unwrap_or_else(|| panic!("job over the cap"));
        assert!(refused.contains("on the server"), "{refused}");
        all.pop();
        assert!(slots.acquire(id(1)).is_ok());
        drop(all);
        let counts = slots.running.lock().unwrap_or_else(PoisonError::into_inner);
        assert_eq!((counts.total, counts.by_connection.len()), (0, 0), "{counts:?}");
    }
}
