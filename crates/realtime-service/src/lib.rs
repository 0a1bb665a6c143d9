//! The realtime service: admits connections and fans messages out, through the ports only.
//!
//! [`RealtimeService`] implements [`realtime_ports::RealtimeApi`] over an
//! `Arc<dyn ConnectionRegistry>`. It is the shell around the pure core: it reads the clock,
//! generates connection ids (UUID v4), enforces the connection cap and the required
//! permissions, and records logs and metrics. Transports call [`connect`] after verifying a
//! token and [`disconnect`] when a socket ends; applications (in-process or through the HTTP
//! API) call the send methods.
//!
//! Each send looks its recipients up in the registry, serialises the message once into a
//! [`realtime_core::Frame`] and hands a clone of it (a reference count, never a copy) to every
//! recipient's sink, without awaiting per recipient. A full queue
//! ([`SendError::QueueFull`](realtime_ports::SendError)) or a closed sink is counted as a
//! dropped frame, not returned as an error: the count a send returns is the number of sinks
//! that accepted the frame.
//!
//! # Metrics
//!
//! Emitted through the `metrics` facade (names in the [`metrics`] module; call
//! [`describe_metrics`] once after installing a recorder):
//!
//! | Name | Kind | Labels |
//! |---|---|---|
//! | `realtime_connections_active` | gauge | |
//! | `realtime_connections_opened_total` | counter | |
//! | `realtime_connections_closed_total` | counter | `reason` ([`DisconnectReason::as_str`](realtime_ports::DisconnectReason::as_str)) |
//! | `realtime_connections_rejected_total` | counter | `reason`: `at_capacity`, `forbidden`, `registry_error` |
//! | `realtime_messages_published_total` | counter | `target`: `user`, `role`, `connection`, `broadcast` |
//! | `realtime_messages_delivered_total` | counter | `target` (one increment per publish, by the number of sinks that accepted the frame) |
//! | `realtime_frames_dropped_total` | counter | `reason`: `slow_consumer`, `closed` |
//!
//! The transport counts failed WebSocket handshakes itself as
//! `realtime_handshake_failures_total{reason}` (it does not depend on this crate, so the name
//! is only documented here).
//!
//! **Architecture Invariant:** this crate knows no adapter (no registry, transport or token
//! verifier implementation); it depends only on `realtime-core` and `realtime-ports`.
//!
//! [`connect`]: realtime_ports::RealtimeApi::connect
//! [`disconnect`]: realtime_ports::RealtimeApi::disconnect

mod config;
pub mod metrics;
mod service;
mod streams;

pub use config::{ServiceConfig, ServiceConfigError};
pub use metrics::describe_metrics;
pub use service::{Adapters, RealtimeService};

#[cfg(test)]
mod tests;
