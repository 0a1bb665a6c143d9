//! The transport suite: the integration tests every web framework adapter runs, the same
//! files compiled into each adapter's test binary (rustls runs its API suite once per crypto
//! provider the same way). Real sockets on 127.0.0.1:0, a real WebSocket client, and fakes of
//! the service, the verifier and the inbound handler.
//!
//! The including test binary names its bundled server `crate::TransportServer`, with the
//! `Server` API of every adapter: `bind(addr, deps, config)`, `local_addr()`,
//! `shutdown_handle()` and `run()`.

mod backend_api;
mod closing;
mod deflate;
mod handler;
mod handshake;
mod http_api;
mod http_limits;
mod lifecycle;
mod logs;
mod rate_limit;
mod session;
mod slow_consumer;
pub mod support;
mod verifier;
mod violations;
