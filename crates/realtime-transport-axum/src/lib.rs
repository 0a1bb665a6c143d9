//! axum 0.8 transport for realtime: the WebSocket endpoint, the HTTP publish API, health and
//! metrics as an axum [`Router`](axum::Router), and a server with a graceful drain.
//!
//! A thin adapter over `realtime-transport-http`, the framework-neutral toolkit that holds
//! the handshake, the sessions, the HTTP API handlers, the error-to-wire mapping and the
//! accept loop: each route here matches a path and a method, reads the request's pieces and
//! hands them to the toolkit. It depends on `realtime-core`, `realtime-ports` and
//! `realtime-transport-http` only among the workspace crates.
//!
//! - [`router`]: the usual set (`/ws`, `/api/..`, `/healthz`, and `/metrics`, `/` and
//!   `/client.js` when configured), or the pieces one by one in [`routes`], to `.merge()`
//!   into an application's router or `.nest()` under a prefix. They set no fallback of their
//!   own (axum refuses to merge two), so unknown paths stay the application's;
//!   [`not_found`] is the transport's JSON 404 for an application that wants it.
//! - `/ws` does the upgrade itself on hyper's `OnUpgrade` (axum's `WebSocketUpgrade` would
//!   not let it set tungstenite's whole `WebSocketConfig`), so the connection must be served
//!   with upgrades (`axum::serve` and [`Server`] both do).
//! - [`Server`]: [`router`] with [`not_found`] on the toolkit's own accept loop (its HTTP
//!   limits, then the drain).
//!
//! **Architecture Invariant:** no token, API key or request URI is ever logged or echoed.

pub mod routes;
mod server;

pub use realtime_transport_http::exports::*;
pub use routes::{not_found, router};
pub use server::Server;
