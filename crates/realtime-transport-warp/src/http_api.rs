//! The HTTP API for backends and operators: `POST /api/publish`, `POST /api/disconnect`,
//! `GET /healthz`, `GET /metrics` and the demo page at `GET /`.

use std::sync::Arc;

use bytes::Buf;
use futures_util::{Stream, StreamExt};
use http::StatusCode;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, HeaderMap};
use realtime_core::{KickTarget, PublishRequest};
use realtime_ports::RealtimeApi;
use serde_json::{Value, json};
use std::future::Future;
use tracing::debug;
use warp::Filter;
use warp::reply::Response;

use crate::config::{ApiKey, MetricsRenderer};
use crate::shutdown::ShutdownHandle;
use crate::wire::{self, PublishRefusal};

/// What the backend API routes (`/api/publish`, `/api/disconnect`) need.
pub(crate) struct PublishEndpoint {
    pub(crate) api: Arc<dyn RealtimeApi>,
    pub(crate) api_key: ApiKey,
    pub(crate) max_body_bytes: u64,
}

/// `POST /api/publish`: `{"delivered": N}`.
pub(crate) fn publish(
    endpoint: Arc<PublishEndpoint>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    backend_route("publish", endpoint, |endpoint, body| async move {
        let PublishRequest { target, message, .. } =
            PublishRequest::parse(&body).map_err(PublishRefusal::Invalid)?;
        let delivered =
            endpoint.api.publish(&target, &message).await.map_err(PublishRefusal::Service)?;
        debug!(target = target.kind(), kind = message.kind.as_str(), delivered, "published");
        Ok(json!({ "delivered": delivered }))
    })
}

/// `POST /api/disconnect`: kicks a user's connections or one connection (close code 4003),
/// `{"disconnected": N}`.
pub(crate) fn disconnect(
    endpoint: Arc<PublishEndpoint>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    backend_route("disconnect", endpoint, |endpoint, body| async move {
        let kicked = match KickTarget::parse(&body).map_err(PublishRefusal::Invalid)? {
            KickTarget::User(user) => endpoint.api.kick_user(&user),
            KickTarget::Connection(id) => usize::from(endpoint.api.kick(id)),
        };
        debug!(kicked, "disconnect requested");
        Ok(json!({ "disconnected": kicked }))
    })
}

/// `POST /api/<name>` behind the API key, with a size-limited body handed to `handle`.
fn backend_route<F, Fut>(
    name: &'static str,
    endpoint: Arc<PublishEndpoint>,
    handle: F,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone
where
    F: Fn(Arc<PublishEndpoint>, Vec<u8>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, PublishRefusal>> + Send,
{
    warp::path("api")
        .and(warp::path(name))
        .and(warp::path::end())
        .and(warp::post())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(move |headers: HeaderMap, body| {
            let endpoint = Arc::clone(&endpoint);
            let handle = handle.clone();
            async move {
                let outcome = async {
                    if !endpoint.authorized(&headers) {
                        return Err(PublishRefusal::Unauthorized);
                    }
                    let body = read_limited(&headers, body, endpoint.max_body_bytes).await?;
                    handle(Arc::clone(&endpoint), body).await
                };
                match outcome.await {
                    Ok(answer) => wire::json_response(StatusCode::OK, &answer),
                    Err(refusal) => {
                        debug!(route = name, ?refusal, "backend request refused");
                        refusal.into_response()
                    }
                }
            }
        })
}

impl PublishEndpoint {
    /// `Authorization: Bearer <key>` (scheme in any case) with the configured key.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let value = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        bearer_key_matches(value, &self.api_key)
    }
}

/// Whether an `Authorization` header value is `Bearer <key>` (scheme in any case) with `key`.
fn bearer_key_matches(authorization: Option<&str>, key: &ApiKey) -> bool {
    let Some((scheme, presented)) = authorization.and_then(|v| v.trim().split_once(' ')) else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer") && key.matches(presented.trim())
}

/// Reads the body, refusing it as soon as it is known to exceed `max` bytes (by its
/// `Content-Length`, or while streaming a body without one).
async fn read_limited<S, B>(
    headers: &HeaderMap,
    body: S,
    max: u64,
) -> Result<Vec<u8>, PublishRefusal>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let too_large = PublishRefusal::TooLarge { max };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(too_large);
    }
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    let mut buffer = Vec::with_capacity(declared.map_or(0, |len| len as usize));
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|_| PublishRefusal::BodyUnreadable)?;
        if buffer.len().saturating_add(chunk.remaining()) > max {
            return Err(too_large);
        }
        while chunk.has_remaining() {
            let bytes = chunk.chunk();
            let len = bytes.len();
            buffer.extend_from_slice(bytes);
            chunk.advance(len);
        }
    }
    Ok(buffer)
}

/// `GET /healthz`: 200 `{"status":"ok","connections":N}`; 503 with `"shutting_down"` once a
/// shutdown has started, so that load balancers stop sending new clients.
pub(crate) fn healthz(
    api: Arc<dyn RealtimeApi>,
    shutdown: ShutdownHandle,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("healthz").and(warp::get()).map(move || {
        let connections = api.connection_count();
        if shutdown.is_shutdown() {
            let body = json!({ "status": "shutting_down", "connections": connections });
            wire::json_response(StatusCode::SERVICE_UNAVAILABLE, &body)
        } else {
            wire::json_response(
                StatusCode::OK,
                &json!({ "status": "ok", "connections": connections }),
            )
        }
    })
}

/// `GET /metrics`: the Prometheus text exposition (only mounted when a renderer is wired). With
/// `api_key`, only to `Authorization: Bearer <key>` (401 otherwise, as on the publish API);
/// `None` serves anyone, for a listener of its own that only the scraper reaches.
pub(crate) fn metrics(
    renderer: MetricsRenderer,
    api_key: Option<ApiKey>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("metrics")
        .and(warp::get())
        .and(warp::header::optional::<String>(AUTHORIZATION.as_str()))
        .map(move |authorization: Option<String>| {
            let refused = api_key
                .as_ref()
                .is_some_and(|key| !bearer_key_matches(authorization.as_deref(), key));
            if refused {
                return wire::unauthorized();
            }
            wire::text_response(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                renderer(),
            )
        })
}

/// `GET /`: the demo page.
pub(crate) fn demo(
    page: &'static str,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path::end().and(warp::get()).map(move || {
        wire::text_response(StatusCode::OK, "text/html; charset=utf-8", page.to_owned())
    })
}
