//! [`Server`]: [`router`](crate::router) with the transport's JSON 404, served by the
//! toolkit's accept loop (its HTTP limits, then the drain).

use std::net::SocketAddr;

use axum::Router;
use realtime_transport_http::{Deps, ShutdownHandle, TransportConfig};
use tokio::net::TcpListener;

use crate::routes;

/// The transport bound to a socket: serves until [`ShutdownHandle::shutdown`], then drains.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    router: Router,
    shutdown: ShutdownHandle,
    config: TransportConfig,
}

impl Server {
    /// Validates `config` and binds `addr` with `SO_REUSEADDR` and an accept queue of
    /// `listen_backlog` (so that a reconnect storm is not dropped by the kernel).
    ///
    /// # Errors
    /// `InvalidInput` for a configuration that cannot work; the socket's error when binding
    /// or listening fails.
    pub async fn bind(
        addr: SocketAddr,
        deps: Deps,
        config: TransportConfig,
    ) -> std::io::Result<Server> {
        let listener = realtime_transport_http::bind(addr, &config)?;
        let local_addr = listener.local_addr()?;
        let shutdown = ShutdownHandle::new();
        let router = routes::router(deps, config.clone(), &shutdown).fallback(routes::not_found);
        Ok(Server { listener, local_addr, router, shutdown, config })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that starts the graceful shutdown.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Serves until a shutdown is requested; then stops accepting, closes every WebSocket
    /// with 1012 and unregisters it, waits up to `shutdown_grace` for them and for HTTP
    /// requests in flight, drops what is left, and returns.
    ///
    /// HTTP connections are served with the limits of `config`: `header_read_timeout`,
    /// `max_header_bytes` and `max_http_connections`.
    pub async fn run(self) {
        let Server { listener, local_addr: _, router, shutdown, config } = self;
        realtime_transport_http::serve(listener, router, &config, &shutdown).await;
    }
}
