//! The transport's routes as axum routers for embedding: [`ws`], [`api`], [`healthz`],
//! [`metrics()`], [`demo`] and [`client_script`] one by one, or [`router`] for the usual set.
//!
//! Each answers its own paths, every method included: a method a path does not take gets
//! the transport's JSON 405 (as `HEAD` does on the `GET` routes, which axum would otherwise
//! answer through `GET`). None sets a router fallback, so they merge with an application's
//! router whatever its fallback; [`not_found`] is the transport's JSON 404.
//!
//! The routers are generic over the application's state `S` (they use none), so they merge
//! into a `Router<S>` before its `with_state`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::handler::Handler;
use axum::response::Response;
use axum::routing::{MethodFilter, MethodRouter, any, on};
use http::{HeaderMap, Uri};
use realtime_transport_http::{
    self as toolkit, ApiKey, BackendApi, BackendRoute, Deps, MetricsRenderer, PresenceRoute,
    ShutdownHandle, TransportConfig, UpgradeRequest, WsEndpoint,
};

/// A toolkit answer as axum's.
fn into_axum(response: toolkit::Response) -> Response {
    response.map(Body::from)
}

/// The transport's JSON 404 `{"error":"not found"}`, for `Router::fallback`.
pub async fn not_found() -> Response {
    into_axum(toolkit::not_found())
}

/// The transport's JSON 405 `{"error":"method not allowed"}`.
async fn method_not_allowed() -> Response {
    into_axum(toolkit::method_not_allowed())
}

/// `handler` for `method` on one path; every other method gets the JSON 405.
fn only<S, H, T>(method: MethodFilter, handler: H) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
    H: Handler<T, S>,
    T: 'static,
{
    let route = on(method, handler);
    // axum answers `HEAD` through a `GET` route unless `HEAD` has one of its own.
    let route = if method == MethodFilter::GET {
        route.on(MethodFilter::HEAD, method_not_allowed)
    } else {
        route
    };
    route.fallback(method_not_allowed)
}

/// `/ws`, the WebSocket endpoint, for every method (anything but an upgrade `GET` gets a JSON
/// 400). Every request to `/ws` gets an answer.
///
/// Connections opened through it are tracked by `shutdown`: call
/// [`ShutdownHandle::drain`] when the embedding server stops. `config` should have passed
/// [`TransportConfig::validate`].
pub fn ws<S>(deps: &Deps, config: &TransportConfig, shutdown: &ShutdownHandle) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let endpoint = Arc::new(WsEndpoint::new(deps, config, shutdown));
    let handler = move |request: Request| async move {
        let (mut parts, _body) = request.into_parts();
        into_axum(endpoint.handle(UpgradeRequest::from_parts(&mut parts)).await)
    };
    Router::new().route("/ws", any(handler))
}

/// The HTTP API for backends, behind the configured API key: `POST /api/publish`,
/// `POST /api/disconnect`, `POST /api/subscribe`, `POST /api/unsubscribe`,
/// `POST /api/revoke`, `GET /api/presence/user/<id>` and `GET /api/presence/topic/<name>`.
pub fn api<S>(deps: &Deps, config: &TransportConfig) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let backend = Arc::new(BackendApi::new(deps, config));
    let mut router = Router::new();
    for route in BackendRoute::ALL {
        let backend = Arc::clone(&backend);
        let handler = move |request: Request| async move {
            let (parts, body) = request.into_parts();
            into_axum(backend.post(route, &parts.headers, body.into_data_stream()).await)
        };
        router = router.route(route.path(), only(MethodFilter::POST, handler));
    }
    for route in PresenceRoute::ALL {
        let backend = Arc::clone(&backend);
        let handler = move |uri: Uri, headers: HeaderMap| async move {
            // The rest of the path as it came (still percent-encoded): the toolkit decodes it,
            // and `chat:room-1`, `a/b` and `auth0%7C42` all arrive whole. `Uri` is relative to
            // a `nest`, like the route.
            let rest = presence_rest(uri.path(), route).unwrap_or_default();
            into_axum(backend.presence(route, &headers, rest).await)
        };
        let prefix = route.prefix();
        let method = only(MethodFilter::GET, handler);
        // `<prefix>` and `<prefix>/` too, with an empty rest (an invalid id or name).
        router = router
            .route(prefix, method.clone())
            .route(&format!("{prefix}/"), method.clone())
            .route(&format!("{prefix}/{{*rest}}"), method);
    }
    router
}

/// What follows `<prefix>/` in `path` (empty for `<prefix>` and `<prefix>/`).
fn presence_rest(path: &str, route: PresenceRoute) -> Option<&str> {
    let rest = path.strip_prefix(route.prefix())?;
    if rest.is_empty() { Some(rest) } else { rest.strip_prefix('/') }
}

/// `GET /healthz`: 200 `{"status":"ok","connections":N}`, or 503 `"shutting_down"` once
/// `shutdown` has started.
pub fn healthz<S>(deps: &Deps, shutdown: &ShutdownHandle) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let (api, shutdown) = (Arc::clone(&deps.api), shutdown.clone());
    let handler = move || async move { into_axum(toolkit::healthz(&*api, &shutdown)) };
    Router::new().route("/healthz", only(MethodFilter::GET, handler))
}

/// `GET /metrics`: what `renderer` renders (the Prometheus text exposition), only to
/// `Authorization: Bearer <key>` with `api_key` (401 otherwise, like the publish API);
/// `None` serves anyone (for a listener only the scraper reaches, as
/// [`MetricsServer`](crate::MetricsServer) does).
pub fn metrics<S>(renderer: MetricsRenderer, api_key: Option<ApiKey>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let handler = move |headers: HeaderMap| async move {
        into_axum(toolkit::metrics(&renderer, api_key.as_ref(), &headers))
    };
    Router::new().route("/metrics", only(MethodFilter::GET, handler))
}

/// `GET /`: the demo page `page`.
pub fn demo<S>(page: &'static str) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let handler = move || async move { into_axum(toolkit::demo_page(page)) };
    Router::new().route("/", only(MethodFilter::GET, handler))
}

/// `GET /client.js`: the JavaScript client `script`, as `application/javascript`.
pub fn client_script<S>(script: &'static str) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let handler = move || async move { into_axum(toolkit::client_script(script)) };
    Router::new().route("/client.js", only(MethodFilter::GET, handler))
}

/// The usual set: [`ws`], [`api`], [`healthz`], and [`metrics()`] (behind the API key) when
/// `deps` has a renderer, [`demo`] when `config` has a page and [`client_script`] when it has
/// a script (without them those paths are not routed, so they stay free for the
/// application). No fallback is set (see [`not_found`]).
///
/// Connections opened through it are tracked by `shutdown`: call [`ShutdownHandle::drain`]
/// when the embedding server stops. `config` should have passed
/// [`TransportConfig::validate`]. No route logs request URIs or headers.
pub fn router<S>(deps: Deps, config: TransportConfig, shutdown: &ShutdownHandle) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let mut all =
        ws(&deps, &config, shutdown).merge(api(&deps, &config)).merge(healthz(&deps, shutdown));
    if let Some(renderer) = deps.metrics {
        all = all.merge(metrics(renderer, Some(config.api_key.clone())));
    }
    if let Some(page) = config.demo_page {
        all = all.merge(demo(page));
    }
    if let Some(script) = config.client_script {
        all = all.merge(client_script(script));
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rest_of_a_presence_path() {
        let user = PresenceRoute::User;
        assert_eq!(presence_rest("/api/presence/user/a%2Fb/c", user), Some("a%2Fb/c"));
        assert_eq!(presence_rest("/api/presence/user/", user), Some(""));
        assert_eq!(presence_rest("/api/presence/user", user), Some(""));
        assert_eq!(presence_rest("/api/presence/username", user), None);
        assert_eq!(presence_rest("/api/presence/topic/x", user), None);
    }
}
