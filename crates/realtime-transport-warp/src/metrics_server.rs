//! [`MetricsServer`]: `GET /metrics` alone on an address of its own, served without the API
//! key, for a listener that only the metrics scraper can reach.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::info;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

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
    filter: BoxedFilter<(Response,)>,
}

impl MetricsServer {
    /// Binds `addr`.
    ///
    /// # Errors
    /// The socket's error when binding fails.
    pub async fn bind(addr: SocketAddr, renderer: MetricsRenderer) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let filter = http_api::metrics(renderer, None)
            .recover(|rejection: warp::Rejection| async move {
                Ok::<_, Infallible>(wire::rejection_response(&rejection))
            })
            .unify()
            .boxed();
        Ok(MetricsServer { listener, local_addr, filter })
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
        let MetricsServer { listener, local_addr, filter } = self;
        info!(%local_addr, "serving metrics");
        let connections =
            accept::serve(listener, filter, METRICS_LIMITS, shutdown.graceful_token().clone())
                .await;
        connections.close(METRICS_GRACE).await;
    }
}
