//! `GET /ws`: checks an upgrade request (upgrade, origin, capacity, `since`, token) before
//! upgrading, admits the connection, opens its streams (recovering from `since`), answers 101
//! itself and starts the connection task, which speaks WebSocket on the raw socket.
//!
//! Framework-neutral: [`WsEndpoint::handle`] takes the request's method, headers, raw query
//! and hyper's `OnUpgrade` (an adapter reads them from its framework's request) and returns
//! the whole answer.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::header::{
    CONNECTION, HeaderMap, HeaderValue, ORIGIN, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS,
    SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{Method, StatusCode};
use hyper::upgrade::OnUpgrade;
use realtime_core::{
    BearerToken, ConnectionId, Payload, Position, StreamName, TokenQueryError, connected_frame,
    parse_since, query_param, token_from_query, token_from_subprotocols,
};
use realtime_core::{Connection, Envelope};
use realtime_ports::{
    AuthError, ConnectRequest, DisconnectReason, HandshakeRequest, InboundError, InboundHandler,
    InboundReply, RealtimeApi, TokenVerifier,
};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tracing::debug;

use crate::Response;
use crate::config::{Deps, TransportConfig};
use crate::deflate;
use crate::session::{Opening, Session, SessionSettings, outbound_channel};
use crate::shutdown::ShutdownHandle;
use crate::wire::{self, HandshakeRefusal};

/// The subprotocol the server answers (the token entry is never echoed).
const SUBPROTOCOL: &str = "realtime.v1";

/// The upgrade query parameter with the positions the client last saw in its streams.
const SINCE_PARAM: &str = "since";

/// Longest value of a query parameter copied into a connection's metadata, in bytes.
pub(crate) const MAX_METADATA_VALUE_BYTES: usize = 512;

/// The `/ws` endpoint: answers upgrade requests and starts the connection tasks. Cheap to
/// share (`Arc`); one per mounted transport.
pub struct WsEndpoint {
    api: Arc<dyn RealtimeApi>,
    verifier: Arc<dyn TokenVerifier>,
    inbound: Arc<dyn InboundHandler>,
    allowed_origins: Option<Vec<String>>,
    settings: Arc<SessionSettings>,
    shutdown: ShutdownHandle,
    /// Bounds the verifications in progress (a remote verifier cannot be made to carry
    /// unbounded unauthenticated traffic).
    verifications: Semaphore,
    /// How long one verification may take.
    verify_timeout: std::time::Duration,
    /// Query parameters copied into the connection's metadata.
    metadata_query_params: Vec<String>,
    /// With permessage-deflate enabled, the size from which frames are compressed.
    compress_from: Option<usize>,
}

impl std::fmt::Debug for WsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsEndpoint")
            .field("allowed_origins", &self.allowed_origins)
            .field("verify_timeout", &self.verify_timeout)
            .finish_non_exhaustive()
    }
}

/// An upgrade request, in the pieces the handshake reads: an adapter fills it from its
/// framework's request (or with [`UpgradeRequest::from_parts`]).
#[derive(Debug)]
pub struct UpgradeRequest {
    /// The request method (anything but `GET` is refused with 400).
    pub method: Method,
    /// The request headers.
    pub headers: HeaderMap,
    /// The raw (still percent-encoded) query string; `None` without one (an empty query is
    /// no query). Read here only: it may hold the token, so it is never logged.
    pub query: Option<String>,
    /// hyper's upgrade of the connection (from the request's extensions); `None` when the
    /// connection cannot be upgraded, which is refused like a request that is not an upgrade.
    pub on_upgrade: Option<OnUpgrade>,
}

impl UpgradeRequest {
    /// The pieces of `parts`, taking the `OnUpgrade` out of its extensions.
    pub fn from_parts(parts: &mut http::request::Parts) -> Self {
        UpgradeRequest {
            method: parts.method.clone(),
            headers: std::mem::take(&mut parts.headers),
            query: parts.uri.query().filter(|query| !query.is_empty()).map(str::to_owned),
            on_upgrade: parts.extensions.remove::<OnUpgrade>(),
        }
    }
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

/// The upgrade request as the verifier sees it.
struct Upgrade {
    token: Option<BearerToken>,
    headers: HeaderMap,
    query: Option<String>,
}

impl HandshakeRequest for Upgrade {
    fn token(&self) -> Option<&BearerToken> {
        self.token.as_ref()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }
}

impl WsEndpoint {
    /// The endpoint of `deps` with the session settings of `config` (which should have passed
    /// [`TransportConfig::validate`]); connections it opens are tracked by `shutdown`: call
    /// [`ShutdownHandle::drain`] when the embedding server stops.
    pub fn new(deps: &Deps, config: &TransportConfig, shutdown: &ShutdownHandle) -> Self {
        let settings = Arc::new(SessionSettings {
            max_message: config.max_message_bytes.max(1),
            read_chunk: config.read_buffer_bytes.clamp(1, crate::config::MAX_READ_BUFFER_BYTES),
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
        WsEndpoint {
            api: Arc::clone(&deps.api),
            verifier: Arc::clone(&deps.verifier),
            inbound,
            allowed_origins: config.allowed_origins.clone(),
            settings,
            shutdown: shutdown.clone(),
            verifications: Semaphore::new(config.max_concurrent_verifications),
            verify_timeout: config.verify_timeout,
            metadata_query_params: config.metadata_query_params.clone(),
            compress_from: config.permessage_deflate.then_some(config.compression_min_bytes),
        }
    }

    /// The answer to `request`: 101 (the connection task is running, and takes the socket
    /// when the framework has sent the 101), or the refusal as JSON with its status. Every
    /// request gets an answer; the adapter routes only `/ws` here, whatever the method.
    pub async fn handle(&self, request: UpgradeRequest) -> Response {
        let UpgradeRequest { method, headers, query, on_upgrade } = request;
        match self.admit(&method, headers, query, on_upgrade).await {
            Ok(response) => response,
            Err(refusal) => {
                let reason = refusal.reason();
                debug!(reason, "websocket handshake refused");
                metrics::counter!("realtime_handshake_failures_total", "reason" => reason)
                    .increment(1);
                refusal.into_response()
            }
        }
    }

    /// The checks, in order: upgrade (400), origin (403), shutdown and capacity (503),
    /// query metadata and `since` (400), authentication (401, 503 when the verifier is busy,
    /// slow or unavailable); then, unless a shutdown began meanwhile, the service admits the
    /// connection (403 without a required permission or with a revoked token), opens its
    /// streams (503 when it cannot) and the 101 goes out.
    async fn admit(
        &self,
        method: &Method,
        headers: HeaderMap,
        query: Option<String>,
        upgrade: Option<OnUpgrade>,
    ) -> Result<Response, HandshakeRefusal> {
        let key = upgrade_key(method, &headers).ok_or(HandshakeRefusal::NotUpgrade)?;
        let upgrade = upgrade.ok_or(HandshakeRefusal::NotUpgrade)?;
        if !origin_allowed(&headers, self.allowed_origins.as_deref()) {
            return Err(HandshakeRefusal::Origin);
        }
        if self.shutdown.is_shutdown() {
            return Err(HandshakeRefusal::ShuttingDown);
        }
        if !self.api.has_capacity() {
            return Err(HandshakeRefusal::Capacity);
        }
        let metadata = self.metadata(query.as_deref())?;
        let since = since(query.as_deref())?;
        let (token, offers_subprotocol) =
            presented_token(&headers, query.as_deref()).map_err(HandshakeRefusal::Unauthorized)?;
        // Agreed only when enabled and offered in a form the server honours.
        let agreed =
            self.compress_from.and_then(|from| Some((from, deflate::negotiate(&headers)?)));
        let compress_from = agreed.map(|(from, _)| from);
        let request = Upgrade { token, headers, query };
        let identity = self.authenticate(&request).await?;
        drop(request);
        let expires_at = identity.expires_at;
        let topics = identity.topics.clone();
        let sink = outbound_channel(self.settings.outbound_queue, compress_from);
        // Admission happens under the shutdown's admission lock: a handshake whose
        // verification finished after the drain began is refused, never registered.
        let connection = self
            .shutdown
            .admit(|| self.api.connect(ConnectRequest { identity, metadata, sink: sink.clone() }))
            .ok_or(HandshakeRefusal::ShuttingDown)??;
        // Registered from here on: every way out below unregisters it, a dropped handshake
        // (the client went) included.
        let mut admitted = Admitted { api: &*self.api, id: connection.id, armed: true };
        // Outside the (synchronous) admission lock: this awaits the broker. What it recovers
        // is queued on the sink, behind nothing; `connected` is written before the queue.
        let streams = match self.api.open_streams(connection.id, &since).await {
            Ok(streams) => streams,
            Err(error) => {
                debug!(%error, "streams not opened; connection refused");
                admitted.unregister(DisconnectReason::TransportError);
                return Err(HandshakeRefusal::Unavailable);
            }
        };
        let hello = connected_frame(&connection, expires_at, &streams);
        let session = Session {
            api: Arc::clone(&self.api),
            inbound: Arc::clone(&self.inbound),
            verifier: Arc::clone(&self.verifier),
            connection,
            sink,
            settings: Arc::clone(&self.settings),
            opening: parking_lot::Mutex::new(Some(Box::new(Opening { expires_at, topics, hello }))),
        };
        // The spawn, under the admission lock again, so that the drain tracks the task; a
        // shutdown that began while the streams opened refuses the connection.
        let (id, sink) = (session.connection.id, Arc::clone(&session.sink));
        let spawned = self.shutdown.admit(|| {
            let ticket = self.shutdown.enlist(id, &sink);
            self.shutdown.spawn(session.run(upgrade, ticket));
        });
        if spawned.is_none() {
            admitted.unregister(DisconnectReason::Shutdown);
            return Err(HandshakeRefusal::ShuttingDown);
        }
        // The session unregisters it from now on.
        admitted.armed = false;
        Ok(switching_protocols(&key, offers_subprotocol, agreed.map(|(_, answer)| answer)))
    }

    /// Runs the verifier, bounded in concurrency and time.
    async fn authenticate(
        &self,
        request: &Upgrade,
    ) -> Result<realtime_core::Identity, HandshakeRefusal> {
        let Ok(_permit) = self.verifications.try_acquire() else {
            return Err(HandshakeRefusal::VerifierBusy);
        };
        match tokio::time::timeout(self.verify_timeout, self.verifier.authenticate(request)).await {
            Ok(Ok(identity)) => Ok(identity),
            Ok(Err(error)) => Err(HandshakeRefusal::Unauthorized(error)),
            Err(_) => Err(HandshakeRefusal::VerifierTimeout),
        }
    }

    /// The configured query parameters present in `query`, as string metadata.
    fn metadata(&self, query: Option<&str>) -> Result<Payload, HandshakeRefusal> {
        let mut metadata = Payload::new();
        let Some(query) = query else {
            return Ok(metadata);
        };
        for name in &self.metadata_query_params {
            let value = query_param(query, name).map_err(|_| HandshakeRefusal::InvalidQuery)?;
            if let Some(value) = value {
                if value.len() > MAX_METADATA_VALUE_BYTES {
                    return Err(HandshakeRefusal::InvalidQuery);
                }
                metadata.insert(name.clone(), serde_json::Value::String(value));
            }
        }
        Ok(metadata)
    }
}

/// A registered connection whose session has not started yet: unregistered when the
/// handshake gives up on it, or is dropped.
struct Admitted<'a> {
    api: &'a dyn RealtimeApi,
    id: ConnectionId,
    armed: bool,
}

impl Admitted<'_> {
    fn unregister(&mut self, reason: DisconnectReason) {
        if std::mem::take(&mut self.armed) {
            self.api.unregister(self.id, reason);
        }
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.unregister(DisconnectReason::TransportError);
    }
}

/// The positions of the `since` query parameter (none without it).
fn since(query: Option<&str>) -> Result<BTreeMap<StreamName, Position>, HandshakeRefusal> {
    let Some(query) = query else {
        return Ok(BTreeMap::new());
    };
    match query_param(query, SINCE_PARAM) {
        Ok(None) => Ok(BTreeMap::new()),
        Ok(Some(raw)) => {
            parse_since(&raw).map_err(|error| HandshakeRefusal::InvalidSince(error.to_string()))
        }
        Err(_) => Err(HandshakeRefusal::InvalidSince(
            "\"since\" must be given once and percent-encoded".to_owned(),
        )),
    }
}

/// The `Sec-WebSocket-Key` of a valid upgrade request: `GET`, `Connection: upgrade`,
/// `Upgrade: websocket`, `Sec-WebSocket-Version: 13`.
fn upgrade_key(method: &Method, headers: &HeaderMap) -> Option<HeaderValue> {
    let has_token = |name, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value.to_str().is_ok_and(|value| {
                value.split(',').any(|item| item.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    let upgrade = method == Method::GET
        && has_token(CONNECTION, "upgrade")
        && has_token(UPGRADE, "websocket")
        && headers.get(SEC_WEBSOCKET_VERSION).is_some_and(|v| v.as_bytes() == b"13");
    if !upgrade {
        return None;
    }
    headers.get(SEC_WEBSOCKET_KEY).filter(|key| !key.is_empty()).cloned()
}

/// Whether the request's `Origin` is allowed. A request without one is not from a browser
/// and is allowed (see `TransportConfig::allowed_origins`).
fn origin_allowed(headers: &HeaderMap, allowed: Option<&[String]>) -> bool {
    let Some(allowed) = allowed else {
        return true;
    };
    let Some(origin) = headers.get(ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    allowed.iter().any(|entry| entry == "*" || entry.eq_ignore_ascii_case(origin))
}

/// The token from `Sec-WebSocket-Protocol: realtime.v1, bearer.<JWT>`, or else from the
/// `token` query parameter (`None` when neither is there); and whether the client offered
/// `realtime.v1`.
fn presented_token(
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(Option<BearerToken>, bool), AuthError> {
    let offered: Vec<&str> = headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .map(|value| value.to_str().map_err(|_| AuthError::Malformed))
        .collect::<Result<_, _>>()?;
    let offered = offered.join(",");
    let offers_subprotocol = offered.split(',').any(|entry| entry.trim() == SUBPROTOCOL);
    if let Some(token) = token_from_subprotocols(&offered).map_err(|_| AuthError::Malformed)? {
        return Ok((Some(token), offers_subprotocol));
    }
    match token_from_query(query.unwrap_or_default()) {
        Ok(token) => Ok((Some(token), offers_subprotocol)),
        Err(TokenQueryError::Missing | TokenQueryError::Empty) => Ok((None, offers_subprotocol)),
        Err(_) => Err(AuthError::Malformed),
    }
}

/// The 101 answer, with the subprotocol and permessage-deflate's answer when agreed.
fn switching_protocols(
    key: &HeaderValue,
    subprotocol: bool,
    deflate: Option<&'static str>,
) -> Response {
    let mut response = http::Response::new(bytes::Bytes::new());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    }
    if subprotocol {
        headers.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
    }
    if let Some(answer) = deflate {
        headers.insert(SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_static(answer));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    const UPGRADE_HEADERS: [(&str, &str); 4] = [
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "WebSocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn upgrade_requests() {
        assert!(upgrade_key(&Method::GET, &headers(&UPGRADE_HEADERS)).is_some());
        assert!(upgrade_key(&Method::POST, &headers(&UPGRADE_HEADERS)).is_none());
        for skip in 0..UPGRADE_HEADERS.len() {
            let partial: Vec<_> = UPGRADE_HEADERS
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, pair)| *pair)
                .collect();
            assert!(upgrade_key(&Method::GET, &headers(&partial)).is_none(), "{skip}");
        }
        let mut old = UPGRADE_HEADERS;
        old[2] = ("sec-websocket-version", "8");
        assert!(upgrade_key(&Method::GET, &headers(&old)).is_none());
    }

    #[test]
    fn origins() {
        let allowed = vec!["https://app.example".to_owned()];
        let check = |pairs: &[(&'static str, &'static str)], allowed: Option<&[String]>| {
            origin_allowed(&headers(pairs), allowed)
        };
        assert!(check(&[("origin", "https://evil.example")], None));
        assert!(check(&[("origin", "https://APP.example")], Some(&allowed)));
        assert!(!check(&[("origin", "https://evil.example")], Some(&allowed)));
        assert!(!check(&[("origin", "null")], Some(&allowed)));
        assert!(check(&[], Some(&allowed)));
        assert!(check(&[("origin", "https://x")], Some(&["*".to_owned()])));
    }

    #[test]
    fn tokens() {
        let token = |pairs: &[(&'static str, &'static str)], query: Option<&str>| {
            presented_token(&headers(pairs), query)
                .map(|(t, p)| (t.map(|t| t.expose().to_owned()).unwrap_or_default(), p))
        };
        assert_eq!(token(&[], Some("token=abc")), Ok(("abc".to_owned(), false)));
        assert_eq!(
            token(&[("sec-websocket-protocol", "realtime.v1, bearer.xyz")], Some("token=abc")),
            Ok(("xyz".to_owned(), true))
        );
        assert_eq!(
            token(&[("sec-websocket-protocol", "realtime.v1")], Some("token=abc")),
            Ok(("abc".to_owned(), true))
        );
        assert_eq!(
            token(
                &[
                    ("sec-websocket-protocol", "realtime.v1"),
                    ("sec-websocket-protocol", "bearer.q")
                ],
                None
            ),
            Ok(("q".to_owned(), true))
        );
        assert_eq!(token(&[], None), Ok((String::new(), false)));
        assert_eq!(token(&[], Some("token=")), Ok((String::new(), false)));
        assert_eq!(token(&[], Some("token=a&token=b")), Err(AuthError::Malformed));
        assert_eq!(
            token(&[("sec-websocket-protocol", "bearer.xyz")], None),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn since_parameter() {
        assert_eq!(since(None), Ok(BTreeMap::new()));
        assert_eq!(since(Some("token=abc")), Ok(BTreeMap::new()));
        let got = since(Some(
            "token=abc&since=%7B%22broadcast%22%3A%7B%22epoch%22%3A%22e1%22%2C%22offset%22%3A3%7D%7D",
        ))
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(got.get(&StreamName::Broadcast).map(|p| p.offset), Some(3));
        for bad in ["since=%7B", "since=5", "since=%zz", "since=%7B%7D&since=%7B%7D"] {
            let Err(HandshakeRefusal::InvalidSince(text)) = since(Some(bad)) else {
                panic!("{bad} accepted");
            };
            assert!(text.contains("since"), "{bad}: {text}");
        }
        let huge = format!("since={}", "%20".repeat(5000));
        assert!(matches!(since(Some(&huge)), Err(HandshakeRefusal::InvalidSince(_))));
    }

    #[test]
    fn accept_key_from_the_rfc() {
        let response =
            switching_protocols(&HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="), true, None);
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            response.headers().get(SEC_WEBSOCKET_ACCEPT).map(HeaderValue::as_bytes),
            Some(&b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="[..])
        );
        assert_eq!(
            response.headers().get(SEC_WEBSOCKET_PROTOCOL).map(HeaderValue::as_bytes),
            Some(&b"realtime.v1"[..])
        );
    }
}
