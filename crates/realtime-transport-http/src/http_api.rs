//! The HTTP API for backends and operators: `POST /api/publish`, `POST /api/disconnect`,
//! `POST /api/subscribe`, `POST /api/unsubscribe`, `POST /api/revoke`,
//! `GET /api/presence/user/<id>`, `GET /api/presence/topic/<name>`, `GET /healthz`,
//! `GET /metrics` and the demo page at `GET /`, as handlers from the request's pieces (headers,
//! body stream, raw path) to the whole answer; the adapter routes (path and method) to them.

use std::sync::Arc;

use bytes::Buf;
use futures_util::{Stream, StreamExt};
use http::StatusCode;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, HeaderMap};
use realtime_core::{KickTarget, PublishRequest, RevokeRequest, TopicName, TopicRequest, UserId};
use realtime_ports::{PublishOptions, PublishReceipt, RealtimeApi};
use serde_json::{Value, json};
use tracing::debug;

use crate::Response;
use crate::config::{ApiKey, Deps, MetricsRenderer, TransportConfig};
use crate::shutdown::ShutdownHandle;
use crate::wire::{self, PublishRefusal};

/// A `POST` route of the backend API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendRoute {
    /// `POST /api/publish`.
    Publish,
    /// `POST /api/disconnect`.
    Disconnect,
    /// `POST /api/subscribe`.
    Subscribe,
    /// `POST /api/unsubscribe`.
    Unsubscribe,
    /// `POST /api/revoke`.
    Revoke,
}

impl BackendRoute {
    /// Every route, for an adapter to mount them all.
    pub const ALL: [BackendRoute; 5] = [
        BackendRoute::Publish,
        BackendRoute::Disconnect,
        BackendRoute::Subscribe,
        BackendRoute::Unsubscribe,
        BackendRoute::Revoke,
    ];

    /// The last path segment (`publish` for `/api/publish`), the `route` of the log line.
    pub fn name(self) -> &'static str {
        match self {
            BackendRoute::Publish => "publish",
            BackendRoute::Disconnect => "disconnect",
            BackendRoute::Subscribe => "subscribe",
            BackendRoute::Unsubscribe => "unsubscribe",
            BackendRoute::Revoke => "revoke",
        }
    }

    /// The whole path, `/api/<name>`.
    pub fn path(self) -> &'static str {
        match self {
            BackendRoute::Publish => "/api/publish",
            BackendRoute::Disconnect => "/api/disconnect",
            BackendRoute::Subscribe => "/api/subscribe",
            BackendRoute::Unsubscribe => "/api/unsubscribe",
            BackendRoute::Revoke => "/api/revoke",
        }
    }
}

/// A `GET` presence route; the rest of the path after [`prefix`](PresenceRoute::prefix) is
/// the user id or the topic, percent-encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PresenceRoute {
    /// `GET /api/presence/user/<id>`.
    User,
    /// `GET /api/presence/topic/<name>`.
    Topic,
    /// `GET /api/presence/online`: how many connections are online (on every node with a
    /// distributed presence).
    Online,
}

impl PresenceRoute {
    /// Every route.
    pub const ALL: [PresenceRoute; 3] =
        [PresenceRoute::User, PresenceRoute::Topic, PresenceRoute::Online];

    /// `user` or `topic`.
    pub fn name(self) -> &'static str {
        match self {
            PresenceRoute::User => "user",
            PresenceRoute::Topic => "topic",
            PresenceRoute::Online => "online",
        }
    }

    /// The path before the id or name, without its trailing slash:
    /// `/api/presence/user`.
    pub fn prefix(self) -> &'static str {
        match self {
            PresenceRoute::User => "/api/presence/user",
            PresenceRoute::Topic => "/api/presence/topic",
            PresenceRoute::Online => "/api/presence/online",
        }
    }
}

/// The backend API behind the configured API key: every [`BackendRoute`] and
/// [`PresenceRoute`].
pub struct BackendApi {
    api: Arc<dyn RealtimeApi>,
    api_key: ApiKey,
    max_body_bytes: u64,
}

impl std::fmt::Debug for BackendApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendApi")
            .field("api_key", &self.api_key)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

impl BackendApi {
    /// The API of `deps.api`, behind `config.api_key`, with bodies up to
    /// [`TransportConfig::max_publish_body_bytes`].
    pub fn new(deps: &Deps, config: &TransportConfig) -> Self {
        BackendApi {
            api: Arc::clone(&deps.api),
            api_key: config.api_key.clone(),
            max_body_bytes: config.max_publish_body_bytes(),
        }
    }

    /// The answer to `POST` on `route`: 401 without the key, 413 for a body over the limit
    /// (refused as soon as that is known, by `Content-Length` or while reading), 400 or 422
    /// for a request that does not parse, the service's refusal mapped to its status, or 200
    /// with the JSON answer. A body stream that fails is a 400.
    pub async fn post<S, B, E>(&self, route: BackendRoute, headers: &HeaderMap, body: S) -> Response
    where
        S: Stream<Item = Result<B, E>>,
        B: Buf,
    {
        let outcome = async {
            if !self.authorized(headers) {
                return Err(PublishRefusal::Unauthorized);
            }
            let body = read_limited(headers, body, self.max_body_bytes).await?;
            match route {
                BackendRoute::Publish => self.publish(&body).await,
                BackendRoute::Disconnect => self.disconnect(&body),
                BackendRoute::Subscribe => self.subscribe(&body).await,
                BackendRoute::Unsubscribe => self.unsubscribe(&body).await,
                BackendRoute::Revoke => self.revoke(&body).await,
            }
        };
        match outcome.await {
            Ok(answer) => wire::json_response(StatusCode::OK, &answer),
            Err(refusal) => {
                debug!(route = route.name(), ?refusal, "backend request refused");
                refusal.into_response()
            }
        }
    }

    /// The answer to `GET` on `route` with `raw`, the rest of the path after
    /// `<prefix>/`, still percent-encoded (so `chat:room-1`, `a/b` and `auth0%7C42` all arrive
    /// whole): 401 without the key, 400 for a broken escape, 422 for an invalid id or name.
    pub async fn presence(&self, route: PresenceRoute, headers: &HeaderMap, raw: &str) -> Response {
        let outcome = async {
            if !self.authorized(headers) {
                return Err(PublishRefusal::Unauthorized);
            }
            let raw = percent_decode_path(raw).ok_or(PublishRefusal::PathEncoding)?;
            match route {
                PresenceRoute::User => self.user_presence(raw).await,
                PresenceRoute::Topic => self.topic_presence(raw).await,
                PresenceRoute::Online if raw.is_empty() => {
                    let online = self.api.online_count().await.map_err(PublishRefusal::Presence)?;
                    Ok(json!({ "connections": online }))
                }
                PresenceRoute::Online => Err(PublishRefusal::PathExtra),
            }
        };
        match outcome.await {
            Ok(answer) => wire::json_response(StatusCode::OK, &answer),
            Err(refusal) => {
                debug!(route = route.name(), ?refusal, "presence request refused");
                refusal.into_response()
            }
        }
    }

    /// `POST /api/publish`: `{"delivered": N}`, with `"stream"`, `"offset"` and `"epoch"` when
    /// the stream keeps history, and `"duplicate": true` when the idempotency key was seen
    /// before.
    async fn publish(&self, body: &[u8]) -> Result<Value, PublishRefusal> {
        let PublishRequest { target, message, idempotency_key, receipts } =
            PublishRequest::parse(body).map_err(PublishRefusal::Invalid)?;
        let options = PublishOptions { idempotency_key, receipts };
        let receipt = self
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
    }

    /// `POST /api/subscribe`: subscribes a user's connections (or one connection) to a topic,
    /// `{"subscribed": N}`.
    async fn subscribe(&self, body: &[u8]) -> Result<Value, PublishRefusal> {
        let TopicRequest { target, topic } =
            TopicRequest::parse(body).map_err(PublishRefusal::Invalid)?;
        let subscribed = self
            .api
            .subscribe_connections(&target, &topic)
            .await
            .map_err(PublishRefusal::Subscribe)?;
        debug!(topic = topic.as_str(), subscribed, "subscribe requested");
        Ok(json!({ "subscribed": subscribed }))
    }

    /// `POST /api/unsubscribe`: unsubscribes a user's connections (or one connection) from a
    /// topic, `{"unsubscribed": N}`.
    async fn unsubscribe(&self, body: &[u8]) -> Result<Value, PublishRefusal> {
        let TopicRequest { target, topic } =
            TopicRequest::parse(body).map_err(PublishRefusal::Invalid)?;
        let unsubscribed = self.api.unsubscribe_connections(&target, &topic).await;
        debug!(topic = topic.as_str(), unsubscribed, "unsubscribe requested");
        Ok(json!({ "unsubscribed": unsubscribed }))
    }

    /// `POST /api/revoke`: revokes a user's tokens issued before a moment and closes their
    /// connections (close code 4005), `{"closed": N}`.
    async fn revoke(&self, body: &[u8]) -> Result<Value, PublishRefusal> {
        let RevokeRequest { user, issued_before } =
            RevokeRequest::parse(body).map_err(PublishRefusal::Invalid)?;
        let closed = self.api.revoke(&user, issued_before).await.map_err(PublishRefusal::Revoke)?;
        debug!(closed, "revoke requested");
        Ok(json!({ "closed": closed }))
    }

    /// `GET /api/presence/user/<id>`: `{"user_id": .., "online": .., "connections": N}`.
    async fn user_presence(&self, raw: String) -> Result<Value, PublishRefusal> {
        let user = UserId::new(raw).map_err(PublishRefusal::PathUser)?;
        let presence = self.api.user_presence(&user).await.map_err(PublishRefusal::Presence)?;
        Ok(json!({
            "user_id": presence.user_id.as_str(),
            "online": presence.online,
            "connections": presence.connections,
        }))
    }

    /// `GET /api/presence/topic/<name>`: `{"topic": .., "members": [{"user_id": .., "connections": N}]}`.
    async fn topic_presence(&self, raw: String) -> Result<Value, PublishRefusal> {
        let topic = TopicName::new(raw).map_err(PublishRefusal::PathTopic)?;
        let members = self.api.topic_presence(&topic).await.map_err(PublishRefusal::Presence)?;
        let members: Vec<Value> = members
            .iter()
            .map(|m| json!({ "user_id": m.user_id.as_str(), "connections": m.connections }))
            .collect();
        Ok(json!({ "topic": topic.as_str(), "members": members }))
    }

    /// `POST /api/disconnect`: kicks a user's connections or one connection (close code 4003),
    /// `{"disconnected": N}`.
    fn disconnect(&self, body: &[u8]) -> Result<Value, PublishRefusal> {
        let kicked = match KickTarget::parse(body).map_err(PublishRefusal::Invalid)? {
            KickTarget::User(user) => self.api.kick_user(&user),
            KickTarget::Connection(id) => usize::from(self.api.kick(id)),
        };
        debug!(kicked, "disconnect requested");
        Ok(json!({ "disconnected": kicked }))
    }

    /// `Authorization: Bearer <key>` (scheme in any case) with the configured key.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        bearer_key_matches(authorization(headers), &self.api_key)
    }
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

/// The `Authorization` header, if it is text.
fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok())
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
async fn read_limited<S, B, E>(
    headers: &HeaderMap,
    body: S,
    max: u64,
) -> Result<Vec<u8>, PublishRefusal>
where
    S: Stream<Item = Result<B, E>>,
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

/// `GET /healthz`: 200 `{"status":"ok","connections":N,"broker":{..}}` (this node's
/// connections; the broker's backend, whether it is connected and its counters); 503 with
/// `"shutting_down"` once a shutdown has started, and with `"broker_unavailable"` while the
/// broker is down (new clients are refused then), so that load balancers send new clients
/// elsewhere.
pub fn healthz(api: &dyn RealtimeApi, shutdown: &ShutdownHandle) -> Response {
    let connections = api.connection_count();
    let health = api.broker_health();
    let mut broker = serde_json::Map::new();
    broker.insert("backend".to_owned(), json!(health.backend));
    broker.insert("connected".to_owned(), json!(health.connected));
    for (name, value) in &health.counters {
        broker.insert((*name).to_owned(), json!(value));
    }
    let (code, status) = if shutdown.is_shutdown() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting_down")
    } else if !health.connected {
        (StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable")
    } else {
        (StatusCode::OK, "ok")
    };
    let body = json!({ "status": status, "connections": connections, "broker": broker });
    wire::json_response(code, &body)
}

/// `GET /metrics`: the Prometheus text exposition `renderer` renders. With `api_key`, only to
/// `Authorization: Bearer <key>` in `headers` (401 otherwise, as on the publish API); `None`
/// serves anyone, for a listener of its own that only the scraper reaches.
pub fn metrics(
    renderer: &MetricsRenderer,
    api_key: Option<&ApiKey>,
    headers: &HeaderMap,
) -> Response {
    let refused = api_key.is_some_and(|key| !bearer_key_matches(authorization(headers), key));
    if refused {
        return wire::unauthorized();
    }
    wire::text_response(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", renderer())
}

/// `GET /`: the demo page.
pub fn demo_page(page: &'static str) -> Response {
    wire::text_response(StatusCode::OK, "text/html; charset=utf-8", page)
}

/// `GET /client.js`: `script`, as `application/javascript`.
pub fn client_script(script: &'static str) -> Response {
    wire::text_response(StatusCode::OK, "application/javascript; charset=utf-8", script)
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
