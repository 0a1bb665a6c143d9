//! [`routes`] (the whole transport as one warp filter, for embedding) and [`Server`] (bind
//! with a deep accept queue, serve, and drain on shutdown).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use realtime_core::{Connection, Envelope};
use realtime_ports::{InboundError, InboundHandler, InboundReply};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tracing::info;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use crate::config::{Deps, TransportConfig};
use crate::handshake::{self, Endpoint};
use crate::http_api::{self, PublishEndpoint};
use crate::session::SessionSettings;
use crate::shutdown::{DrainOutcome, ShutdownHandle};
use crate::wire;

/// Every route of the transport as one filter: `GET /ws`, `POST /api/publish`,
/// `GET /healthz`, `GET /metrics`, `GET /`, and a JSON 404/405 for anything else.
///
/// Connections opened through it are tracked by `shutdown`: call
/// [`ShutdownHandle::drain`] when the embedding server stops. `config` should have passed
/// [`TransportConfig::validate`]. No route logs request URIs or headers.
pub fn routes(
    deps: Deps,
    config: TransportConfig,
    shutdown: &ShutdownHandle,
) -> BoxedFilter<(Response,)> {
    let max_body_bytes = config.max_publish_body_bytes();
    let settings = Arc::new(SessionSettings {
        websocket: config.websocket_config(),
        liveness: config.liveness,
        decode: config.decode_limits(),
        close_timeout: config.close_timeout,
        outbound_queue: config.outbound_queue,
        pong: wire::pong_frame(),
    });
    let ws = handshake::filter(Arc::new(Endpoint {
        api: Arc::clone(&deps.api),
        verifier: deps.verifier,
        inbound: deps.inbound.unwrap_or_else(|| Arc::new(NoInbound)),
        allowed_origins: config.allowed_origins,
        settings,
        shutdown: shutdown.clone(),
        verifications: Semaphore::new(config.max_concurrent_verifications),
        verify_timeout: config.verify_timeout,
        metadata_query_params: config.metadata_query_params,
    }));
    let backend = Arc::new(PublishEndpoint {
        api: Arc::clone(&deps.api),
        max_body_bytes,
        api_key: config.api_key,
    });
    ws.or(http_api::publish(Arc::clone(&backend)))
        .unify()
        .or(http_api::disconnect(backend))
        .unify()
        .or(http_api::healthz(deps.api, shutdown.clone()))
        .unify()
        .or(http_api::metrics(deps.metrics))
        .unify()
        .or(http_api::demo(config.demo_page))
        .unify()
        .recover(|rejection: warp::Rejection| async move {
            Ok::<_, Infallible>(wire::rejection_response(&rejection))
        })
        .unify()
        .boxed()
}

/// The inbound handler when the application has none: every message is unsupported.
#[derive(Debug)]
struct NoInbound;

#[async_trait::async_trait]
impl InboundHandler for NoInbound {
    async fn handle(&self, _: &Connection, _: Envelope) -> Result<InboundReply, InboundError> {
        Err(InboundError::Unsupported)
    }
}

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
        let filter = routes(deps, config.clone(), &shutdown);
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
