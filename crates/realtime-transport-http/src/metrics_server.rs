//! [`MetricsServer`]: `GET /metrics` alone on an address of its own, served without the API
//! key, for a listener that only the metrics scraper can reach.

use std::convert::Infallible;
use std::future::Ready;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Method;
use http_body_util::Full;
use tokio::net::TcpListener;
use tracing::info;

use crate::accept::{self, HttpLimits};
use crate::config::MetricsRenderer;
use crate::http_api;
use crate::shutdown::ShutdownHandle;
use crate::wire;

/// The metrics listener's HTTP limits: scrapers send small requests, few at a time.
const METRICS_LIMITS: HttpLimits = HttpLimits {
    header_read_timeout: Duration::from_secs(10),
    max_header_bytes: 16 * 1024,
    max_http_connections: 64,
};

/// How long scrapes in flight may take once the server stops.
const METRICS_GRACE: Duration = Duration::from_secs(1);

/// `GET /metrics` (the Prometheus text exposition, no key asked) and a JSON 404 for any other
/// path, on its own listener. Bind it to a private address (loopback, a cluster-internal
/// interface): whoever reaches it reads the metrics.
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    service: MetricsService,
}

impl MetricsServer {
    /// Binds `addr`.
    ///
    /// # Errors
    /// The socket's error when binding fails.
    pub async fn bind(addr: SocketAddr, renderer: MetricsRenderer) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        Ok(MetricsServer { listener, local_addr, service: MetricsService { renderer } })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` is requested (the main server's handle, so both stop together),
    /// then waits briefly for the scrapes in flight. Served by the same accept loop as the
    /// main server, with its limits: a header-read timeout, a head size limit, a connection
    /// cap, client faults logged at debug level only.
    pub async fn run(self, shutdown: ShutdownHandle) {
        let MetricsServer { listener, local_addr, service } = self;
        info!(%local_addr, "serving metrics");
        let connections =
            accept::serve(listener, service, METRICS_LIMITS, shutdown.graceful_token().clone())
                .await;
        connections.close(METRICS_GRACE, || {}).await;
    }
}

/// `GET /metrics` without a key; 405 for another method there, 404 for any other path.
#[derive(Clone)]
struct MetricsService {
    renderer: MetricsRenderer,
}

impl std::fmt::Debug for MetricsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsService").finish_non_exhaustive()
    }
}

impl<B> tower_service::Service<http::Request<B>> for MetricsService {
    type Response = http::Response<Full<bytes::Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let response = match (request.uri().path(), request.method()) {
            ("/metrics", &Method::GET) => {
                http_api::metrics(&self.renderer, None, request.headers())
            }
            ("/metrics", _) => wire::method_not_allowed(),
            _ => wire::not_found(),
        };
        std::future::ready(Ok(response.map(Full::new)))
    }
}
