//! The HTTP API for backends and operators: `POST /api/publish`, `POST /api/disconnect`,
//! `POST /api/subscribe`, `POST /api/unsubscribe`, `POST /api/revoke`,
//! `GET /api/presence/user/<id>`, `GET /api/presence/topic/<name>`, `GET /healthz`,
//! `GET /metrics` and the demo page at `GET /`.

use std::sync::Arc;

use bytes::Buf;
use futures_util::{Stream, StreamExt};
use http::StatusCode;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, HeaderMap};
use realtime_core::{KickTarget, PublishRequest, RevokeRequest, TopicName, TopicRequest, UserId};
use realtime_ports::{PublishOptions, PublishReceipt, RealtimeApi};
use serde_json::{Value, json};
use std::future::Future;
use tracing::debug;
use warp::Filter;
use warp::reply::Response;

use crate::config::{ApiKey, MetricsRenderer};
use crate::shutdown::ShutdownHandle;
use crate::wire::{self, PublishRefusal};

/// What the backend API routes (`/api/publish`, `/api/disconnect`, `/api/subscribe`, ...)
/// need.
pub(crate) struct PublishEndpoint {
    pub(crate) api: Arc<dyn RealtimeApi>,
    pub(crate) api_key: ApiKey,
    pub(crate) max_body_bytes: u64,
}

/// `POST /api/publish`: `{"delivered": N}`, with `"stream"`, `"offset"` and `"epoch"` when the
/// stream keeps history, `"duplicate": true` when the idempotency key was seen before, and
/// with `"receipts": true` the cluster-wide count (`"nodes_answered"`, `"nodes_expected"`).
pub(crate) fn publish(
    endpoint: Arc<PublishEndpoint>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    backend_route("publish", endpoint, |endpoint, body| async move {
        let PublishRequest { target, message, idempotency_key, receipts } =
            PublishRequest::parse(&body).map_err(PublishRefusal::Invalid)?;
        let options = PublishOptions { idempotency_key, receipts };
        let receipt = endpoint
            .api
            .publish_with(&target, &message, &options)
            .await
            .map_err(PublishRefusal::Service)?;
        debug!(
            target = target.kind(),
            kind = message.kind.as_str(),
            delivered = receipt.delivered,
            duplicate = receipt.duplicate,
            "published"
        );
        Ok(receipt_body(&receipt))
    })
}

/// The publish answer: `{"delivered": N}`, the position when there is one,
/// `"duplicate": true` only for a retried key, and with receipts `"nodes_answered"` and
/// `"nodes_expected"`.
fn receipt_body(receipt: &PublishReceipt) -> Value {
    let mut body = serde_json::Map::new();
    body.insert("delivered".to_owned(), json!(receipt.delivered));
    if let (Some(stream), Some(position)) = (&receipt.stream, &receipt.position) {
        body.insert("stream".to_owned(), json!(stream.to_string()));
        body.insert("offset".to_owned(), json!(position.offset));
        body.insert("epoch".to_owned(), json!(position.epoch.as_str()));
    }
    if receipt.duplicate {
        body.insert("duplicate".to_owned(), json!(true));
    }
    if let Some(nodes) = receipt.nodes {
        body.insert("nodes_answered".to_owned(), json!(nodes.answered));
        body.insert("nodes_expected".to_owned(), json!(nodes.expected));
    }
    Value::Object(body)
}

/// `POST /api/subscribe`: subscribes a user's connections (or one connection) to a topic,
/// `{"subscribed": N}`.
pub(crate) fn subscribe(
    endpoint: Arc<PublishEndpoint>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    backend_route("subscribe", endpoint, |endpoint, body| async move {
        let TopicRequest { target, topic } =
            TopicRequest::parse(&body).map_err(PublishRefusal::Invalid)?;
        let subscribed = endpoint
            .api
            .subscribe_connections(&target, &topic)
            .await
            .map_err(PublishRefusal::Subscribe)?;
        debug!(topic = topic.as_str(), subscribed, "subscribe requested");
        Ok(json!({ "subscribed": subscribed }))
    })
}

/// `POST /api/unsubscribe`: unsubscribes a user's connections (or one connection) from a
/// topic, `{"unsubscribed": N}`.
pub(crate) fn unsubscribe(
    endpoint: Arc<PublishEndpoint>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    backend_route("unsubscribe", endpoint, |endpoint, body| async move {
        let TopicRequest { target, topic } =
            TopicRequest::parse(&body).map_err(PublishRefusal::Invalid)?;
        let unsubscribed = endpoint.api.unsubscribe_connections(&target, &topic).await;
        debug!(topic = topic.as_str(), unsubscribed, "unsubscribe requested");
        Ok(json!({ "unsubscribed": unsubscribed }))
    })
}

/// `POST /api/revoke`: revokes a user's tokens issued before a moment and closes their
/// connections (close code 4005), `{"closed": N}`.
pub(crate) fn revoke(
    endpoint: Arc<PublishEndpoint>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    backend_route("revoke", endpoint, |endpoint, body| async move {
        let RevokeRequest { user, issued_before } =
            RevokeRequest::parse(&body).map_err(PublishRefusal::Invalid)?;
        let closed =
            endpoint.api.revoke(&user, issued_before).await.map_err(PublishRefusal::Revoke)?;
        debug!(closed, "revoke requested");
        Ok(json!({ "closed": closed }))
    })
}

/// `GET /api/presence/user/<id>`: `{"user_id": .., "online": .., "connections": N}`.
pub(crate) fn user_presence(
    endpoint: Arc<PublishEndpoint>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    presence_route("user", endpoint, |endpoint, raw| async move {
        let user = UserId::new(raw).map_err(PublishRefusal::PathUser)?;
        let presence = endpoint.api.user_presence(&user).await.map_err(PublishRefusal::Presence)?;
        Ok(json!({
            "user_id": presence.user_id.as_str(),
            "online": presence.online,
            "connections": presence.connections,
        }))
    })
}

/// `GET /api/presence/topic/<name>`: `{"topic": .., "members": [{"user_id": .., "connections": N}]}`.
pub(crate) fn topic_presence(
    endpoint: Arc<PublishEndpoint>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    presence_route("topic", endpoint, |endpoint, raw| async move {
        let topic = TopicName::new(raw).map_err(PublishRefusal::PathTopic)?;
        let members =
            endpoint.api.topic_presence(&topic).await.map_err(PublishRefusal::Presence)?;
        let members: Vec<Value> = members
            .iter()
            .map(|m| json!({ "user_id": m.user_id.as_str(), "connections": m.connections }))
            .collect();
        Ok(json!({ "topic": topic.as_str(), "members": members }))
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

/// `GET /api/presence/<kind>/<rest of the path>` behind the API key; `handle` gets the rest
/// of the path percent-decoded (so `chat:room-1`, `a/b` and `auth0%7C42` all arrive whole).
fn presence_route<F, Fut>(
    kind: &'static str,
    endpoint: Arc<PublishEndpoint>,
    handle: F,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone
where
    F: Fn(Arc<PublishEndpoint>, String) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, PublishRefusal>> + Send,
{
    warp::path("api")
        .and(warp::path("presence"))
        .and(warp::path(kind))
        .and(warp::path::tail())
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .then(move |tail: warp::path::Tail, headers: HeaderMap| {
            let endpoint = Arc::clone(&endpoint);
            let handle = handle.clone();
            async move {
                let outcome = async {
                    if !endpoint.authorized(&headers) {
                        return Err(PublishRefusal::Unauthorized);
                    }
                    let raw =
                        percent_decode_path(tail.as_str()).ok_or(PublishRefusal::PathEncoding)?;
                    handle(Arc::clone(&endpoint), raw).await
                };
                match outcome.await {
                    Ok(answer) => wire::json_response(StatusCode::OK, &answer),
                    Err(refusal) => {
                        debug!(route = kind, ?refusal, "presence request refused");
                        refusal.into_response()
                    }
                }
            }
        })
}

/// Decodes `%XX` escapes of a URL path (`+` stays a plus); `None` for a broken escape or
/// bytes that are not UTF-8.
fn percent_decode_path(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw.get(i + 1..i + 3).filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
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

/// `GET /client.js`: `script`, as `application/javascript`.
pub(crate) fn client_script(
    script: &'static str,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path("client.js").and(warp::path::end()).and(warp::get()).map(move || {
        wire::text_response(
            StatusCode::OK,
            "application/javascript; charset=utf-8",
            script.to_owned(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_percent_decoded() {
        let cases = [
            ("chat:room-1", Some("chat:room-1")),
            ("chat%3Aroom-1", Some("chat:room-1")),
            ("auth0%7C42", Some("auth0|42")),
            ("a/b", Some("a/b")),
            ("a+b", Some("a+b")),
            ("%C3%A9", Some("\u{e9}")),
            ("", Some("")),
            ("%", None),
            ("%4", None),
            ("%zz", None),
            ("%+5", None),
            ("%FF", None),
        ];
        for (raw, decoded) in cases {
            assert_eq!(percent_decode_path(raw).as_deref(), decoded, "{raw}");
        }
    }
}
