//! warp 0.4 transport for realtime: the WebSocket endpoint, the HTTP publish API, health and
//! metrics, and a server with a graceful drain.
//!
//! An adapter: it drives the service through the ports (`RealtimeApi`, `TokenVerifier`,
//! `InboundHandler`) and implements `ConnectionSink` for each socket. It depends on
//! `realtime-core` and `realtime-ports` only among the workspace crates.
//!
//! - `GET /ws`: the token (query `token=` or subprotocol `bearer.<JWT>` beside `realtime.v1`)
//!   is verified before the upgrade; the upgrade is performed here so that tungstenite's
//!   whole `WebSocketConfig` is set (small buffers, bounded messages).
//! - Per connection: one bounded outbound queue and one writer; a full queue closes the
//!   connection with 4008; liveness pings, pong timeout (4004) and token expiry (4001);
//!   an inbound rate limit (`rate_limited`, then 4029); protocol violations close with 1002
//!   or 1007; the inbound handler runs beside the timers with a timeout.
//! - `POST /api/publish`, `POST /api/disconnect`, `GET /healthz`, `GET /metrics` (behind the
//!   API key), `GET /` (demo page): filters in [`filters`] that compose with an application's
//!   own routes; [`MetricsServer`] serves `GET /metrics` alone, without a key, on an address
//!   of its own.
//! - [`Server`]: our own accept loop on hyper (HTTP/1.1), with a header-read timeout, a
//!   request-head size limit, a cap on connections still in the HTTP phase, `TCP_NODELAY`,
//!   and client faults counted and logged at debug level only.
//! - Every error is mapped to the wire in one module (`wire`).
//!
//! **Architecture Invariant:** no token, API key or request URI is ever logged or echoed.

mod accept;
mod config;
pub mod filters;
mod handshake;
mod http_api;
mod metrics_server;
mod server;
mod session;
mod shutdown;
mod wire;

pub use config::{
    ApiKey, ApiKeyError, CLOSE_TIMEOUT_RANGE, ConfigError, Deps, HEADER_READ_TIMEOUT_RANGE,
    INBOUND_RATE_RANGE, INBOUND_TIMEOUT_RANGE, LISTEN_BACKLOG_RANGE,
    MAX_CONCURRENT_VERIFICATIONS_RANGE, MAX_HEADER_BYTES_RANGE, MAX_JSON_DEPTH_RANGE,
    MAX_MESSAGE_BYTES_RANGE, MAX_READ_BUFFER_BYTES, MetricsRenderer, OUTBOUND_QUEUE_RANGE,
    PUBLISH_BODY_OVERHEAD_BYTES, SHUTDOWN_GRACE_RANGE, TransportConfig, VERIFY_TIMEOUT_RANGE,
    WRITE_BUFFER_BYTES_RANGE,
};
pub use filters::routes;
pub use metrics_server::MetricsServer;
pub use server::Server;
pub use shutdown::{DrainOutcome, ShutdownHandle};
