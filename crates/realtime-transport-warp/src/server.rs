//! [`Server`]: the transport bound to a socket with a deep accept queue, serving
//! [`routes`](crate::routes) with the transport's JSON 404/405, and draining on shutdown.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};
use tracing::info;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

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
    pub async fn run(self) {
        let Server { listener, local_addr, filter, shutdown, config } = self;
        info!(%local_addr, "listening");
        let serving = warp::serve(filter).incoming(listener).graceful(shutdown.requested()).run();
        let mut serving = std::pin::pin!(serving);
        let served = tokio::select! {
            () = &mut serving => true,
            () = shutdown.requested() => false,
        };
        info!("shutting down");
        let grace = config.shutdown_grace;
        // warp stops accepting on the same signal and waits for HTTP requests in flight.
        let http =
            async { if served { Ok(()) } else { tokio::time::timeout(grace, &mut serving).await } };
        let (outcome, http) = tokio::join!(shutdown.drain(grace), http);
        match outcome {
            DrainOutcome::Clean => info!("every connection closed"),
            DrainOutcome::Forced { dropped } => {
                info!(dropped, "grace period over; remaining connections dropped");
            }
        }
        if http.is_err() {
            info!("grace period over; HTTP requests still in flight were dropped");
        }
    }
}
