//! The bundled server of every adapter: [`bind`] (a validated configuration, a deep accept
//! queue) and [`serve`] (the HTTP limits of `accept`, then the drain), so that an adapter's
//! `Server` is its routes and these two calls.

use std::net::SocketAddr;

use hyper::body::{Body, Incoming};
use tokio::net::{TcpListener, TcpSocket};
use tracing::info;

use crate::accept::{self, HttpLimits};
use crate::config::TransportConfig;
use crate::shutdown::{DrainOutcome, ShutdownHandle};

/// The errors a service or a body may fail with.
use crate::accept::BoxError;

/// Validates `config` and binds `addr` with `SO_REUSEADDR` and an accept queue of
/// `listen_backlog` (so that a reconnect storm is not dropped by the kernel).
///
/// # Errors
/// `InvalidInput` for a configuration that cannot work; the socket's error when binding or
/// listening fails.
pub fn bind(addr: SocketAddr, config: &TransportConfig) -> std::io::Result<TcpListener> {
    config
        .validate()
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(config.listen_backlog)
}

/// Serves `service` (a tower service over hyper's requests: warp's filter service, an axum
/// `Router`, ...) on `listener` until [`ShutdownHandle::shutdown`] on `shutdown`; then stops
/// accepting, closes every WebSocket with 1012 and unregisters it, waits up to
/// `shutdown_grace` for them and for HTTP requests in flight, drops what is left, and
/// returns.
///
/// HTTP connections are served with the limits of `config`: `header_read_timeout`,
/// `max_header_bytes` and `max_http_connections`. `shutdown` must be the handle the routes
/// of `service` were built with, so that the drain sees their connections.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    config: &TransportConfig,
    shutdown: &ShutdownHandle,
) where
    S: tower_service::Service<http::Request<Incoming>, Response = http::Response<B>>,
    S: Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    if let Ok(local_addr) = listener.local_addr() {
        info!(%local_addr, "listening");
    }
    let limits = HttpLimits {
        header_read_timeout: config.header_read_timeout,
        max_header_bytes: config.max_header_bytes,
        max_http_connections: config.max_http_connections,
    };
    let http = accept::serve(listener, service, limits, shutdown.graceful_token().clone()).await;
    info!("shutting down");
    let grace = config.shutdown_grace;
    let (outcome, dropped_http) = tokio::join!(shutdown.drain(grace), http.close(grace, || {}));
    match outcome {
        DrainOutcome::Clean => info!("every connection closed"),
        DrainOutcome::Forced { dropped } => {
            info!(dropped, "grace period over; remaining connections dropped");
        }
    }
    if dropped_http > 0 {
        info!(dropped_http, "grace period over; HTTP connections still open were dropped");
    }
}
