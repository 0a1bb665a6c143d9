//! [`Server`]: the transport bound to a socket (a deep accept queue, the HTTP limits of
//! `accept`), serving [`routes`](crate::routes) with the transport's JSON 404/405, and
//! draining on shutdown.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};
use tracing::info;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use crate::accept::{self, HttpLimits};
use crate::config::{Deps, TransportConfig};
use crate::filters;
use crate::shutdown::{DrainOutcome, ShutdownHandle};

/// The transport bound to a socket: serves until [`ShutdownHandle::shutdown`], then drains.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    filter: BoxedFilter<(Response,)>,
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
        config
            .validate()
            .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(config.listen_backlog)?;
        let local_addr = listener.local_addr()?;
        let shutdown = ShutdownHandle::new();
        let filter = filters::routes(deps, config.clone(), &shutdown)
            .recover(filters::recover)
            .unify()
            .boxed();
        Ok(Server { listener, local_addr, filter, shutdown, config })
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
        let Server { listener, local_addr, filter, shutdown, config } = self;
        info!(%local_addr, "listening");
        let limits = HttpLimits {
            header_read_timeout: config.header_read_timeout,
            max_header_bytes: config.max_header_bytes,
            max_http_connections: config.max_http_connections,
        };
        let http = accept::serve(listener, filter, limits, shutdown.graceful_token().clone()).await;
        info!("shutting down");
        let grace = config.shutdown_grace;
        let (outcome, dropped_http) = tokio::join!(shutdown.drain(grace), http.close(grace));
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
}
