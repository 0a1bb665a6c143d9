//! The accept loop under [`serve`](crate::serve): HTTP/1.1 connections served by hyper with
//! a header-read timeout, a request-head size limit and a cap on connections in the HTTP
//! phase, `TCP_NODELAY`, a back-off on accept errors, and a graceful stop.
//!
//! A connection is in the HTTP phase from `accept` until hyper hands its socket to a
//! WebSocket upgrade (or the connection ends); only then does its slot free. What a client
//! does wrong at this level (a malformed or oversized head, a timeout, a reset) is counted in
//! `realtime_http_connection_errors_total{reason}` and logged at debug level only.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::shutdown::Tracked;

/// The minimum of hyper's `max_buf_size`.
const MIN_BUF_BYTES: usize = 8 * 1024;
/// First pause after an accept error that is not about one connection (EMFILE, ENOBUFS, ...).
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// Longest pause after repeated accept errors.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Longest time one connection may stay in the HTTP phase, in header-read timeouts (60 s by
/// default): then it is told to close after the request in flight, and a header-read
/// timeout later it is dropped. hyper bounds only the reading of a request head, so without
/// this a client that sends requests and never reads the answers (hyper's writes then stall)
/// would hold its slot for ever.
const HTTP_PHASE_LIFETIME_FACTOR: u32 = 6;

/// The HTTP-level limits (see their `TransportConfig` fields).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpLimits {
    pub(crate) header_read_timeout: Duration,
    pub(crate) max_header_bytes: usize,
    pub(crate) max_http_connections: usize,
}

/// The HTTP connections being served: waited for, or dropped, when the server stops
/// ([`Tracked::close`]).
pub(crate) type HttpConnections = Tracked;

/// The errors a service or a body may fail with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Accepts connections on `listener` and serves `service` (a tower service: warp's, axum's
/// `Router`, ...) on each until `stop` is cancelled; then drops the listener (no more
/// connections are accepted), tells every connection to finish the request in flight and
/// close, and returns them for [`HttpConnections::close`].
pub(crate) async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    limits: HttpLimits,
    stop: CancellationToken,
) -> HttpConnections
where
    S: tower_service::Service<http::Request<Incoming>, Response = http::Response<B>>,
    S: Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let connections = HttpConnections::default();
    let slots = Arc::new(Semaphore::new(limits.max_http_connections));
    let builder = Arc::new(builder(limits));
    let service = TowerToHyperService::new(service);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let Some(slot) = until_stopped(&stop, wait_for_slot(&slots)).await else {
            break;
        };
        let Some(accepted) = until_stopped(&stop, listener.accept()).await else {
            break;
        };
        match accepted {
            Ok((stream, _peer)) => {
                backoff = FIRST_BACKOFF;
                if let Err(error) = stream.set_nodelay(true) {
                    debug!(%error, "cannot set TCP_NODELAY");
                }
                let connection =
                    builder.serve_connection(TokioIo::new(stream), service.clone()).with_upgrades();
                let (stop, forced) = (stop.clone(), connections.forced().clone());
                // Served until it ends or is upgraded (the socket then belongs to the
                // WebSocket task); the slot is held until then.
                let header_read_timeout = limits.header_read_timeout;
                let connection = async move {
                    let mut connection = Box::pin(connection);
                    let mut stopping = false;
                    let lifetime = header_read_timeout.saturating_mul(HTTP_PHASE_LIFETIME_FACTOR);
                    let expiry = tokio::time::sleep(lifetime);
                    tokio::pin!(expiry);
                    let mut expired = false;
                    let result = loop {
                        tokio::select! {
                            result = connection.as_mut() => break result,
                            () = stop.cancelled(), if !stopping => {
                                // Closes it if idle, else after the response in flight.
                                connection.as_mut().graceful_shutdown();
                                stopping = true;
                            }
                            () = &mut expiry => {
                                if expired {
                                    count_error("http_phase_expired");
                                    debug!("connection held in the HTTP phase too long; dropped");
                                    return;
                                }
                                expired = true;
                                if !stopping {
                                    connection.as_mut().graceful_shutdown();
                                    stopping = true;
                                }
                                // A header-read timeout more to finish, then it is dropped.
                                let last = tokio::time::Instant::now() + header_read_timeout;
                                expiry.as_mut().reset(last);
                            }
                            () = forced.cancelled() => return,
                        }
                    };
                    // The socket (unless upgraded) is closed before the slot frees.
                    drop(connection);
                    drop(slot);
                    if let Err(error) = result {
                        report(&error);
                    }
                };
                connections.spawn(connection);
            }
            Err(error) if is_connection_error(&error) => {
                // The peer gave up between its SYN and our accept: its fault, not ours.
                count_error("accept_aborted");
                debug!(%error, "connection aborted before it was accepted");
            }
            Err(error) => {
                metrics::counter!("realtime_accept_errors_total").increment(1);
                // One line per run of errors (they come back at once while the cause lasts).
                if backoff == FIRST_BACKOFF {
                    warn!(%error, "accept failed; backing off");
                } else {
                    debug!(%error, ?backoff, "accept failed again");
                }
                if until_stopped(&stop, tokio::time::sleep(backoff)).await.is_none() {
                    break;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    drop(listener);
    connections
}

/// The hyper settings for every connection.
fn builder(limits: HttpLimits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(MIN_BUF_BYTES));
    builder
}

/// A free slot for one more connection in the HTTP phase; when there is none, the loop
/// stops accepting (further clients wait in the kernel's accept queue) until one frees.
async fn wait_for_slot(slots: &Arc<Semaphore>) -> OwnedSemaphorePermit {
    if let Ok(slot) = Arc::clone(slots).try_acquire_owned() {
        return slot;
    }
    metrics::counter!("realtime_http_accept_paused_total").increment(1);
    debug!("max_http_connections reached; accepting again when a connection ends");
    match Arc::clone(slots).acquire_owned().await {
        Ok(slot) => slot,
        // The semaphore is never closed.
        Err(_) => std::future::pending().await,
    }
}

/// `future`'s output, or `None` once `stop` is cancelled.
async fn until_stopped<F: Future>(stop: &CancellationToken, future: F) -> Option<F::Output> {
    tokio::select! {
        biased;
        () = stop.cancelled() => None,
        output = future => Some(output),
    }
}

/// Counts and logs (at debug level) a connection that ended with an error.
fn report(error: &hyper::Error) {
    let reason = error_reason(error);
    count_error(reason);
    debug!(reason, %error, "http connection ended with an error");
}

fn count_error(reason: &'static str) {
    metrics::counter!("realtime_http_connection_errors_total", "reason" => reason).increment(1);
}

/// The `reason` label of a connection error. Every one of them is the client's doing (or
/// the network's): the service never fails, so hyper reports only what it read or wrote.
fn error_reason(error: &hyper::Error) -> &'static str {
    if error.is_timeout() {
        "header_timeout"
    } else if error.is_parse_too_large() {
        "header_too_large"
    } else if error.is_parse() {
        "malformed"
    } else if error.is_incomplete_message() {
        "incomplete"
    } else if std::error::Error::source(error).is_some_and(|source| source.is::<io::Error>()) {
        "io"
    } else {
        "other"
    }
}

/// Accept errors about one connection only (the loop goes on at once).
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
