//! warp 0.4 transport for realtime: the WebSocket endpoint, the HTTP publish API, health and
//! metrics as warp filters, and a server with a graceful drain.
//!
//! A thin adapter over `realtime-transport-http`, the framework-neutral toolkit that holds
//! the handshake, the sessions, the HTTP API handlers, the error-to-wire mapping and the
//! accept loop: each filter here matches a path and a method, reads the request's pieces and
//! hands them to the toolkit. It depends on `realtime-core`, `realtime-ports` and
//! `realtime-transport-http` only among the workspace crates.
//!
//! - `GET /ws`, `POST /api/publish`, `POST /api/disconnect`, ..., `GET /healthz`,
//!   `GET /metrics` (behind the API key), `GET /` (demo page): filters in [`filters`] that
//!   compose with an application's own routes; [`MetricsServer`] serves `GET /metrics` alone,
//!   without a key, on an address of its own.
//! - [`Server`]: [`routes`] on the toolkit's own accept loop, with the transport's JSON
//!   404/405 ([`filters::recover`]).
//!
//! **Architecture Invariant:** no token, API key or request URI is ever logged or echoed.

pub mod filters;
mod server;

pub use filters::routes;
pub use realtime_transport_http::exports::*;
pub use server::Server;
