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

use http::StatusCode;
use http::header::HeaderMap;
use hyper::upgrade::OnUpgrade;
use realtime_transport_http::{
    self as toolkit, ApiKey, BackendApi, BackendRoute, Deps, MetricsRenderer, PresenceRoute,
    ShutdownHandle, TransportConfig, UpgradeRequest, WsEndpoint,
};
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::{Reply, Response};

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
    let endpoint = Arc::new(WsEndpoint::new(deps, config, shutdown));
    // The raw query is read here and nowhere else (warp's typed query filter would log it).
    let query = warp::query::raw().map(Some).or(warp::any().map(|| None)).unify();
    warp::path("ws")
        .and(warp::path::end())
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(query)
        .and(warp::ext::optional::<OnUpgrade>())
        .then(move |method, headers, query, on_upgrade| {
            let endpoint = Arc::clone(&endpoint);
            async move {
                let request = UpgradeRequest { method, headers, query, on_upgrade };
                endpoint.handle(request).await.into_response()
            }
        })
        .boxed()
}

/// The HTTP API for backends, behind the configured API key: `POST /api/publish`,
/// `POST /api/disconnect`, `POST /api/subscribe`, `POST /api/unsubscribe`,
/// `POST /api/revoke`, `GET /api/presence/user/<id>` and `GET /api/presence/topic/<name>`.
pub fn api(deps: &Deps, config: &TransportConfig) -> BoxedFilter<(Response,)> {
    let backend = Arc::new(BackendApi::new(deps, config));
    // Every route of the toolkit, so that one it gains is mounted here too.
    let [first, rest @ ..] = BackendRoute::ALL;
    let mut posts = backend_route(first, Arc::clone(&backend));
    for route in rest {
        posts = posts.or(backend_route(route, Arc::clone(&backend))).unify().boxed();
    }
    let [first, rest @ ..] = PresenceRoute::ALL;
    let mut presence = presence_route(first, Arc::clone(&backend));
    for route in rest {
        presence = presence.or(presence_route(route, Arc::clone(&backend))).unify().boxed();
    }
    posts.or(presence).unify().boxed()
}

/// `POST /api/<name>`, the body handed to the toolkit as the stream it arrives in.
fn backend_route(route: BackendRoute, backend: Arc<BackendApi>) -> BoxedFilter<(Response,)> {
    warp::path("api")
        .and(warp::path(route.name()))
        .and(warp::path::end())
        .and(warp::post())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(move |headers: HeaderMap, body| {
            let backend = Arc::clone(&backend);
            async move { backend.post(route, &headers, body).await.into_response() }
        })
        .boxed()
}

/// `GET /api/presence/<kind>/<rest of the path>`, the rest handed to the toolkit as it is
/// (still percent-encoded).
fn presence_route(route: PresenceRoute, backend: Arc<BackendApi>) -> BoxedFilter<(Response,)> {
    warp::path("api")
        .and(warp::path("presence"))
        .and(warp::path(route.name()))
        .and(warp::path::tail())
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .then(move |tail: warp::path::Tail, headers: HeaderMap| {
            let backend = Arc::clone(&backend);
            async move { backend.presence(route, &headers, tail.as_str()).await.into_response() }
        })
        .boxed()
}

/// `GET /healthz`: 200 `{"status":"ok","connections":N}`, or 503 `"shutting_down"` once
/// `shutdown` has started.
pub fn healthz(deps: &Deps, shutdown: &ShutdownHandle) -> BoxedFilter<(Response,)> {
    let (api, shutdown) = (Arc::clone(&deps.api), shutdown.clone());
    warp::path!("healthz")
        .and(warp::get())
        .map(move || toolkit::healthz(&*api, &shutdown).into_response())
        .boxed()
}

/// `GET /metrics`: what `renderer` renders (the Prometheus text exposition), only to
/// `Authorization: Bearer <key>` with `api_key` (401 otherwise, like the publish API);
/// `None` serves anyone (for a listener only the scraper reaches, as
/// [`MetricsServer`](crate::MetricsServer) does).
pub fn metrics(renderer: MetricsRenderer, api_key: Option<ApiKey>) -> BoxedFilter<(Response,)> {
    warp::path!("metrics")
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .map(move |headers: HeaderMap| {
            toolkit::metrics(&renderer, api_key.as_ref(), &headers).into_response()
        })
        .boxed()
}

/// `GET /`: the demo page `page`.
pub fn demo(page: &'static str) -> BoxedFilter<(Response,)> {
    warp::path::end().and(warp::get()).map(move || toolkit::demo_page(page).into_response()).boxed()
}

/// `GET /client.js`: the JavaScript client `script`, as `application/javascript`.
pub fn client_script(script: &'static str) -> BoxedFilter<(Response,)> {
    warp::path("client.js")
        .and(warp::path::end())
        .and(warp::get())
        .map(move || toolkit::client_script(script).into_response())
        .boxed()
}

/// The transport's answer to a rejection: JSON `{"error": ..}` with 404, 405, 413, 415 or
/// 400. For embedders who want the same answers as the bundled server
/// (`routes.recover(filters::recover)`).
///
/// # Errors
/// Never: every rejection gets a response.
pub async fn recover(rejection: warp::Rejection) -> Result<Response, Infallible> {
    Ok(rejection_response(&rejection).into_response())
}

/// The answer to a request no route took (the rejection of the combined filter).
fn rejection_response(rejection: &warp::Rejection) -> toolkit::Response {
    if rejection.is_not_found() {
        toolkit::not_found()
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        toolkit::method_not_allowed()
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        toolkit::error_response(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
    } else if rejection.find::<warp::reject::UnsupportedMediaType>().is_some() {
        toolkit::error_response(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported media type")
    } else {
        toolkit::error_response(StatusCode::BAD_REQUEST, "bad request")
    }
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
