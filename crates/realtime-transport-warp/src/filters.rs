//! The transport's routes as warp filters for embedding: [`ws`], [`api`], [`healthz`],
//! [`metrics()`] and [`demo`] one by one, or [`routes`] for the usual set.
//!
//! Each filter answers its own path and rejects every other one (with warp's "not found" or,
//! for its path with the wrong method, "method not allowed"), so it composes with an
//! application's routes in either order: `realtime.or(app)` or `app.or(realtime)`. None of
//! them recovers rejections; [`recover`] turns them into the transport's JSON 404/405/400,
//! and the bundled [`Server`](crate::Server) applies it at the top.

use std::convert::Infallible;
use std::sync::Arc;

use realtime_core::{Connection, Envelope};
use realtime_ports::{InboundError, InboundHandler, InboundReply};
use tokio::sync::Semaphore;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use crate::config::{ApiKey, Deps, MetricsRenderer, TransportConfig};
use crate::handshake::{self, Endpoint};
use crate::http_api::{self, PublishEndpoint};
use crate::session::SessionSettings;
use crate::shutdown::ShutdownHandle;
use crate::wire;

/// `GET /ws`, the WebSocket endpoint. Every request to `/ws` gets an answer (101, or a JSON
/// refusal); any other path is rejected.
///
/// Connections opened through it are tracked by `shutdown`: call
/// [`ShutdownHandle::drain`] when the embedding server stops. `config` should have passed
/// [`TransportConfig::validate`].
pub fn ws(
    deps: &Deps,
    config: &TransportConfig,
    shutdown: &ShutdownHandle,
) -> BoxedFilter<(Response,)> {
    let settings = Arc::new(SessionSettings {
        websocket: config.websocket_config(),
        liveness: config.liveness,
        decode: config.decode_limits(),
        close_timeout: config.close_timeout,
        outbound_queue: config.outbound_queue,
        pong: wire::pong_frame(),
        inbound_timeout: config.inbound_timeout,
        inbound_rate: config.inbound_rate,
    });
    let inbound = match &deps.inbound {
        Some(inbound) => Arc::clone(inbound),
        None => Arc::new(NoInbound),
    };
    handshake::filter(Arc::new(Endpoint {
        api: Arc::clone(&deps.api),
        verifier: Arc::clone(&deps.verifier),
        inbound,
        allowed_origins: config.allowed_origins.clone(),
        settings,
        shutdown: shutdown.clone(),
        verifications: Semaphore::new(config.max_concurrent_verifications),
        verify_timeout: config.verify_timeout,
        metadata_query_params: config.metadata_query_params.clone(),
    }))
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

/// The HTTP API for backends, behind the configured API key: `POST /api/publish`,
/// `POST /api/disconnect`, `POST /api/subscribe`, `POST /api/unsubscribe`,
/// `POST /api/revoke`, `GET /api/presence/user/<id>` and `GET /api/presence/topic/<name>`.
pub fn api(deps: &Deps, config: &TransportConfig) -> BoxedFilter<(Response,)> {
    let backend = Arc::new(PublishEndpoint {
        api: Arc::clone(&deps.api),
        api_key: config.api_key.clone(),
        max_body_bytes: config.max_publish_body_bytes(),
    });
    let posts = http_api::publish(Arc::clone(&backend))
        .or(http_api::disconnect(Arc::clone(&backend)))
        .unify()
        .or(http_api::subscribe(Arc::clone(&backend)))
        .unify()
        .or(http_api::unsubscribe(Arc::clone(&backend)))
        .unify()
        .or(http_api::revoke(Arc::clone(&backend)))
        .unify()
        .boxed();
    let presence = http_api::user_presence(Arc::clone(&backend))
        .or(http_api::topic_presence(backend))
        .unify()
        .boxed();
    posts.or(presence).unify().boxed()
}

/// `GET /healthz`: 200 `{"status":"ok","connections":N}`, or 503 `"shutting_down"` once
/// `shutdown` has started.
pub fn healthz(deps: &Deps, shutdown: &ShutdownHandle) -> BoxedFilter<(Response,)> {
    http_api::healthz(Arc::clone(&deps.api), shutdown.clone()).boxed()
}

/// `GET /metrics`: what `renderer` renders (the Prometheus text exposition), only to
/// `Authorization: Bearer <key>` with `api_key` (401 otherwise, like the publish API);
/// `None` serves anyone (for a listener only the scraper reaches, as
/// [`MetricsServer`](crate::MetricsServer) does).
pub fn metrics(renderer: MetricsRenderer, api_key: Option<ApiKey>) -> BoxedFilter<(Response,)> {
    http_api::metrics(renderer, api_key).boxed()
}

/// `GET /`: the demo page `page`.
pub fn demo(page: &'static str) -> BoxedFilter<(Response,)> {
    http_api::demo(page).boxed()
}

/// `GET /client.js`: the JavaScript client `script`, as `application/javascript`.
pub fn client_script(script: &'static str) -> BoxedFilter<(Response,)> {
    http_api::client_script(script).boxed()
}

/// The transport's answer to a rejection: JSON `{"error": ..}` with 404, 405, 413, 415 or
/// 400. For embedders who want the same answers as the bundled server
/// (`routes.recover(filters::recover)`).
///
/// # Errors
/// Never: every rejection gets a response.
pub async fn recover(rejection: warp::Rejection) -> Result<Response, Infallible> {
    Ok(wire::rejection_response(&rejection))
}

/// The usual set: [`ws`], [`api`], [`healthz`], and [`metrics()`] (behind the API key) when
/// `deps` has a renderer, [`demo`] when `config` has a page and [`client_script`] when it has
/// a script (without them those paths are rejected,
/// so they stay free for the application). Rejections are not recovered (see [`recover`]).
///
/// Connections opened through it are tracked by `shutdown`: call [`ShutdownHandle::drain`]
/// when the embedding server stops. `config` should have passed
/// [`TransportConfig::validate`]. No route logs request URIs or headers.
pub fn routes(
    deps: Deps,
    config: TransportConfig,
    shutdown: &ShutdownHandle,
) -> BoxedFilter<(Response,)> {
    let mut all = ws(&deps, &config, shutdown)
        .or(api(&deps, &config))
        .unify()
        .or(healthz(&deps, shutdown))
        .unify()
        .boxed();
    if let Some(renderer) = deps.metrics {
        all = all.or(metrics(renderer, Some(config.api_key.clone()))).unify().boxed();
    }
    if let Some(page) = config.demo_page {
        all = all.or(demo(page)).unify().boxed();
    }
    if let Some(script) = config.client_script {
        all = all.or(client_script(script)).unify().boxed();
    }
    all
}
