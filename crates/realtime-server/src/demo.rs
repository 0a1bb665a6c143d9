//! The demo: a page at `/` and an inbound handler that lets it trigger the design record's
//! three use cases through the real service API (a notification to the user, metrics to the
//! `admin` role, job progress to one connection).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use realtime_core::{Connection, Envelope, MessageType, Payload, Role};
use realtime_ports::{InboundError, InboundHandler, InboundReply, RealtimeApi};
use serde_json::json;

/// The demo page (plain HTML and JavaScript, no build step).
pub(crate) const DEMO_PAGE: &str = include_str!("../static/index.html");

/// Answers the demo page's `demo.notify`, `demo.metrics` and `demo.job` messages by publishing
/// through the service, exactly as a backend would.
pub(crate) struct DemoHandler {
    api: Arc<dyn RealtimeApi>,
    counter: AtomicU64,
}

impl std::fmt::Debug for DemoHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoHandler").finish_non_exhaustive()
    }
}

impl DemoHandler {
    pub(crate) fn new(api: Arc<dyn RealtimeApi>) -> Self {
        DemoHandler { api, counter: AtomicU64::new(0) }
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
            "demo.job" => {
                let api = self.api.clone();
                let id = connection.id;
                let job = format!("job-{n}");
                tokio::spawn(async move {
                    for progress in (0..=100).step_by(10) {
                        let status = if progress == 100 { "Done" } else { "Processing..." };
                        let Ok(update) = envelope(
                            "job-progress",
                            json!({ "job_id": job, "progress": progress, "status": status }),
                        ) else {
                            return;
                        };
                        match api.send_to_connection(id, &update).await {
                            Ok(1) => {}
                            _ => return, // the connection is gone
                        }
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                });
                ack("job", 1)
            }
            _ => Err(InboundError::Unsupported),
        }
    }
}
