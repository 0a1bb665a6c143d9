//! The framework-neutral transport toolkit of realtime, on plain `http`/`hyper` types: what
//! the WebSocket endpoint, the HTTP API, health and metrics need, for a web framework adapter
//! (`realtime-transport-warp`, `realtime-transport-axum`) to route to. Not an adapter of its
//! own: it has no router; an adapter matches path and method and calls in here.
//!
//! It drives the service through the ports (`RealtimeApi`, `TokenVerifier`,
//! `InboundHandler`) and implements `ConnectionSink` for each socket. It depends on
//! `realtime-core` and `realtime-ports` only among the workspace crates.
//!
//! - [`WsEndpoint`]: `GET /ws` from the request's pieces ([`UpgradeRequest`]) to the whole
//!   answer. The token (query `token=` or subprotocol `bearer.<JWT>` beside `realtime.v1`) is
//!   verified before the upgrade; the upgrade is performed here, on hyper's `OnUpgrade`, and
//!   the WebSocket is then spoken on the raw `TcpStream` with our own framing (`ws_codec`):
//!   a publication's shared bytes behind a header per socket, no per-connection buffers
//!   while idle; permessage-deflate (RFC 7692) when configured and offered (`deflate`): a
//!   publication compressed once for all its recipients, client messages inflated within
//!   the size limit.
//! - Per connection: one bounded outbound queue and one writer (the connection's task,
//!   woken by `send`, writes what is queued in vectored batches); a full queue closes the
//!   connection with 4008; liveness pings, pong timeout (4004) and token expiry (4001);
//!   an inbound rate limit (`rate_limited`, then 4029); protocol violations close with 1002
//!   or 1007; the inbound handler runs beside the timers with a timeout.
//! - [`BackendApi`] (`POST /api/publish`, `/api/disconnect`, `/api/subscribe`,
//!   `/api/unsubscribe`, `/api/revoke`, `GET /api/presence/..`), [`healthz`], [`metrics()`],
//!   [`demo_page`], [`client_script`]; [`not_found`], [`method_not_allowed`] and
//!   [`error_response`] for a router's own answers; [`MetricsServer`] serves `GET /metrics`
//!   alone, without a key, on an address of its own.
//! - [`bind`] and [`serve`]: our own accept loop on hyper (HTTP/1.1) for any tower service,
//!   with a header-read timeout, a request-head size limit, a cap on connections still in the
//!   HTTP phase, `TCP_NODELAY`, client faults counted and logged at debug level only, and the
//!   graceful drain of [`ShutdownHandle`].
//! - Every error is mapped to the wire in one module (`wire`).
//!
//! **Architecture Invariant:** no token, API key or request URI is ever logged or echoed.

mod accept;
mod config;
mod deflate;
mod handshake;
mod http_api;
mod metrics_server;
mod server;
mod session;
mod shutdown;
mod wire;
mod ws_codec;

pub use config::{
    ApiKey, ApiKeyError, CLOSE_TIMEOUT_RANGE, COMPRESSION_MIN_BYTES_RANGE, ConfigError, Deps,
    HEADER_READ_TIMEOUT_RANGE, INBOUND_RATE_RANGE, INBOUND_TIMEOUT_RANGE, LISTEN_BACKLOG_RANGE,
    MAX_CONCURRENT_VERIFICATIONS_RANGE, MAX_HEADER_BYTES_RANGE, MAX_JSON_DEPTH_RANGE,
    MAX_MESSAGE_BYTES_RANGE, MAX_READ_BUFFER_BYTES, MetricsRenderer, OUTBOUND_QUEUE_RANGE,
    PUBLISH_BODY_OVERHEAD_BYTES, SHUTDOWN_GRACE_RANGE, TransportConfig, VERIFY_TIMEOUT_RANGE,
    WRITE_BUFFER_BYTES_RANGE,
};
pub use handshake::{UpgradeRequest, WsEndpoint};
pub use http_api::{
    BackendApi, BackendRoute, PresenceRoute, client_script, demo_page, healthz, metrics,
};
pub use metrics_server::MetricsServer;
pub use server::{bind, serve};
pub use shutdown::{DrainOutcome, ShutdownHandle};
pub use wire::{error_response, method_not_allowed, not_found};

/// What every web framework adapter re-exports at its root (`pub use
/// realtime_transport_http::exports::*;`), listed once: the configuration and its ranges,
/// the wiring, the metrics server and the drain.
pub mod exports {
    pub use crate::{
        ApiKey, ApiKeyError, CLOSE_TIMEOUT_RANGE, COMPRESSION_MIN_BYTES_RANGE, ConfigError, Deps,
        DrainOutcome, HEADER_READ_TIMEOUT_RANGE, INBOUND_RATE_RANGE, INBOUND_TIMEOUT_RANGE,
        LISTEN_BACKLOG_RANGE, MAX_CONCURRENT_VERIFICATIONS_RANGE, MAX_HEADER_BYTES_RANGE,
        MAX_JSON_DEPTH_RANGE, MAX_MESSAGE_BYTES_RANGE, MAX_READ_BUFFER_BYTES, MetricsRenderer,
        MetricsServer, OUTBOUND_QUEUE_RANGE, PUBLISH_BODY_OVERHEAD_BYTES, SHUTDOWN_GRACE_RANGE,
        ShutdownHandle, TransportConfig, VERIFY_TIMEOUT_RANGE, WRITE_BUFFER_BYTES_RANGE,
    };
}

/// Every answer of the toolkit: a whole body, which warp (`Reply`) and axum
/// (`Body::from`) both take as it is.
pub type Response = http::Response<bytes::Bytes>;
