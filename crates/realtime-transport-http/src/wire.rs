//! The one place where outcomes meet the wire: every handshake refusal, publish error, route
//! rejection, connection end and client-message error is mapped here, by an explicit `match`,
//! to its HTTP status and JSON body, close code and reason, error-frame code, disconnect
//! reason and metric label. Bodies never echo request data (tokens, keys, query strings).

use std::borrow::Cow;

use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use realtime_core::protocol::{self, close};
use realtime_core::{
    DecodeFailure, Frame, InvalidTopicName, InvalidUserId, MessageType, RequestError, RequestId,
    error_frame,
};
use realtime_ports::{
    AuthError, CloseReason, ConnectError, DisconnectReason, InboundError, PresenceError,
    PublishError, RefreshError, RevokeError, SubscribeError, UnsubscribeError,
};
use serde_json::json;

use crate::Response;
use crate::ws_codec::ReadFault;

/// The one body every authentication failure gets, whatever the cause.
pub(crate) const UNAUTHORIZED_BODY: &str = "unauthorized";

/// The body of a valid token that lacks a permission the service requires: 403, so clients
/// do not refresh the token and retry as they would after a 401.
pub(crate) const FORBIDDEN_BODY: &str = "forbidden";

/// Why an upgrade request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HandshakeRefusal {
    /// Not a WebSocket upgrade request.
    NotUpgrade,
    /// `Origin` outside the allow-list.
    Origin,
    /// The server is at its connection cap.
    Capacity,
    /// The server is shutting down.
    ShuttingDown,
    /// No token, or a token that does not verify.
    Unauthorized(AuthError),
    /// The identity lacks a permission the service requires.
    Forbidden,
    /// The service refused for a reason this transport does not know.
    Unavailable,
    /// As many verifications as allowed are already in progress.
    VerifierBusy,
    /// The verifier did not answer within the verification timeout.
    VerifierTimeout,
    /// A query parameter copied into metadata is badly encoded, repeated or too long.
    InvalidQuery,
    /// The `since` query parameter is not a valid set of stream positions; the text says
    /// what is wrong (it may name a stream, never the token).
    InvalidSince(String),
    /// The token was revoked: a new one is needed, so not a 401 that a client retries with
    /// the same token.
    Revoked,
}

impl From<ConnectError> for HandshakeRefusal {
    fn from(error: ConnectError) -> Self {
        match error {
            ConnectError::AtCapacity { .. } => HandshakeRefusal::Capacity,
            ConnectError::Forbidden => HandshakeRefusal::Forbidden,
            ConnectError::Revoked => HandshakeRefusal::Revoked,
            _ => HandshakeRefusal::Unavailable,
        }
    }
}

impl HandshakeRefusal {
    /// The `reason` label of `realtime_handshake_failures_total` and of the log line.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            HandshakeRefusal::NotUpgrade => "not_upgrade",
            HandshakeRefusal::Origin => "origin",
            HandshakeRefusal::Capacity => "capacity",
            HandshakeRefusal::ShuttingDown => "shutdown",
            HandshakeRefusal::Unauthorized(error) => error.reason(),
            HandshakeRefusal::Forbidden => "forbidden",
            HandshakeRefusal::Unavailable => "unavailable",
            HandshakeRefusal::VerifierBusy => "verifier_busy",
            HandshakeRefusal::VerifierTimeout => "verifier_timeout",
            HandshakeRefusal::InvalidQuery => "invalid_query",
            HandshakeRefusal::InvalidSince(_) => "invalid_since",
            HandshakeRefusal::Revoked => "revoked",
        }
    }

    /// The HTTP answer. Every authentication failure gets the same 401 body; a missing
    /// permission gets 403 `{"error":"forbidden"}` (a new token would not help).
    pub(crate) fn into_response(self) -> Response {
        let (status, message): (StatusCode, Cow<'static, str>) = match self {
            HandshakeRefusal::NotUpgrade => {
                (StatusCode::BAD_REQUEST, "WebSocket upgrade required".into())
            }
            HandshakeRefusal::Origin => (StatusCode::FORBIDDEN, "origin not allowed".into()),
            HandshakeRefusal::Capacity => {
                (StatusCode::SERVICE_UNAVAILABLE, "server at connection capacity".into())
            }
            HandshakeRefusal::ShuttingDown => {
                (StatusCode::SERVICE_UNAVAILABLE, "server shutting down".into())
            }
            HandshakeRefusal::Unavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "service unavailable".into())
            }
            // The verifier could not decide: not the client's fault, so not a 401 that
            // would send it to refresh its token; retry later.
            HandshakeRefusal::VerifierBusy
            | HandshakeRefusal::VerifierTimeout
            | HandshakeRefusal::Unauthorized(AuthError::Unavailable(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "authentication unavailable, retry later".into())
            }
            HandshakeRefusal::InvalidQuery => {
                (StatusCode::BAD_REQUEST, "invalid query parameter".into())
            }
            HandshakeRefusal::InvalidSince(text) => (StatusCode::BAD_REQUEST, text.into()),
            HandshakeRefusal::Forbidden => (StatusCode::FORBIDDEN, FORBIDDEN_BODY.into()),
            HandshakeRefusal::Revoked => (
                StatusCode::FORBIDDEN,
                "the token was revoked; get a new token before reconnecting".into(),
            ),
            HandshakeRefusal::Unauthorized(_) => return unauthorized(),
        };
        error_response(status, &message)
    }
}

/// Why a backend API request (`/api/publish`, `/api/subscribe`, `/api/presence/..`, ...) was
/// refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PublishRefusal {
    /// Missing or wrong API key.
    Unauthorized,
    /// The body is not a valid request (not JSON: 400; a wrong field: 422).
    Invalid(RequestError),
    /// The body is larger than the limit.
    TooLarge {
        /// The limit in bytes.
        max: u64,
    },
    /// The body could not be read (the client went away or sent a broken stream).
    BodyUnreadable,
    /// The service refused the publish (too large, reserved type, unavailable).
    Service(PublishError),
    /// The service refused a server-side subscribe (a connection at its limit: 409;
    /// unavailable: 503).
    Subscribe(SubscribeError),
    /// The revocation could not be recorded (503).
    Revoke(RevokeError),
    /// Presence could not be read (503).
    Presence(PresenceError),
    /// The user id in a presence path is invalid (422).
    PathUser(InvalidUserId),
    /// The topic name in a presence path is invalid (422).
    PathTopic(InvalidTopicName),
    /// A presence path has a broken `%` escape or is not UTF-8 once decoded (400).
    PathEncoding,
    /// A presence path that takes nothing after its prefix had something (404).
    PathExtra,
}

impl PublishRefusal {
    /// The HTTP answer.
    pub(crate) fn into_response(self) -> Response {
        let (status, message): (StatusCode, Cow<'static, str>) = match self {
            PublishRefusal::Unauthorized => return unauthorized(),
            PublishRefusal::PathExtra => return not_found(),
            PublishRefusal::Invalid(error @ RequestError::Json(_)) => {
                (StatusCode::BAD_REQUEST, error.to_string().into())
            }
            PublishRefusal::Invalid(error) => {
                (StatusCode::UNPROCESSABLE_ENTITY, error.to_string().into())
            }
            PublishRefusal::TooLarge { max } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than {max} bytes").into(),
            ),
            PublishRefusal::BodyUnreadable => {
                (StatusCode::BAD_REQUEST, "request body could not be read".into())
            }
            PublishRefusal::Service(PublishError::TooLarge { len, max }) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("\"message\" is {len} bytes encoded, at most {max} are allowed").into(),
            ),
            PublishRefusal::Service(PublishError::ReservedType(kind)) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "\"message.type\" \"{kind}\" is reserved for the protocol and cannot be published"
                )
                .into(),
            ),
            PublishRefusal::Service(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "publish unavailable".into())
            }
            PublishRefusal::Subscribe(SubscribeError::TooManyTopics { max }) => (
                StatusCode::CONFLICT,
                format!("the connection holds the most topics allowed ({max})").into(),
            ),
            PublishRefusal::Subscribe(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "subscribe unavailable".into())
            }
            PublishRefusal::Revoke(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "revoke unavailable".into())
            }
            PublishRefusal::Presence(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "presence unavailable".into())
            }
            PublishRefusal::PathUser(error) => {
                (StatusCode::UNPROCESSABLE_ENTITY, format!("invalid user id in the path: {error}").into())
            }
            PublishRefusal::PathTopic(error) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("invalid topic in the path: {error}").into(),
            ),
            PublishRefusal::PathEncoding => {
                (StatusCode::BAD_REQUEST, "the path has a broken percent-encoding".into())
            }
        };
        error_response(status, &message)
    }
}

/// The answer to a request for a path no route serves: 404 `{"error":"not found"}`.
pub fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "not found")
}

/// The answer to a request for a served path with a method it does not take: 405
/// `{"error":"method not allowed"}`.
pub fn method_not_allowed() -> Response {
    error_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

/// `{"error": message}` with `status`: the shape of every refusal of the transport, for a
/// router's own answers (413, 415, 400) to match.
pub fn error_response(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({ "error": message }))
}

/// A JSON body with `status`.
pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut response = http::Response::new(bytes::Bytes::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The single 401 answer, for WebSocket and HTTP API alike.
pub(crate) fn unauthorized() -> Response {
    let mut response = error_response(StatusCode::UNAUTHORIZED, UNAUTHORIZED_BODY);
    response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// A plain-text body with `status` (for `/metrics` and the demo page).
pub(crate) fn text_response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<bytes::Bytes>,
) -> Response {
    let mut response = http::Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// How a connection ended; the first end recorded wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SessionEnd {
    /// The client sent a close frame.
    ClientClosed,
    /// The socket failed, was reset, or the upgrade never completed.
    TransportError,
    /// The client sent a message or frame over the limit.
    MessageTooBig,
    /// No pong or other traffic within the pong timeout.
    HeartbeatTimeout,
    /// The token expired.
    TokenExpired,
    /// The outbound queue was full.
    SlowConsumer,
    /// The server is shutting down.
    Shutdown,
    /// The service closed the connection through its sink (for example, a kick).
    Closed(CloseReason),
    /// The client broke the WebSocket protocol (RFC 6455: reserved bits, unknown opcode,
    /// unmasked or fragmented control frame, bad close frame, stray continuation).
    ProtocolViolation,
    /// The client sent a text message that is not valid UTF-8.
    InvalidUtf8,
    /// The client went on sending over its inbound rate limit.
    RateLimited,
}

impl SessionEnd {
    /// The close frame to send, if one is to be sent (none when the client closed or the
    /// socket failed).
    pub(crate) fn close_frame(&self) -> Option<(u16, &str)> {
        match self {
            SessionEnd::ClientClosed | SessionEnd::TransportError => None,
            SessionEnd::MessageTooBig => Some((close::MESSAGE_TOO_BIG, "message too big")),
            SessionEnd::HeartbeatTimeout => Some((close::HEARTBEAT_TIMEOUT, "heartbeat timeout")),
            SessionEnd::TokenExpired => Some((close::TOKEN_EXPIRED, "token expired")),
            SessionEnd::SlowConsumer => Some((close::SLOW_CONSUMER, "slow consumer")),
            SessionEnd::Shutdown => Some((close::SERVICE_RESTART, "server restart")),
            SessionEnd::Closed(CloseReason::Kicked) => Some((close::DISCONNECTED, "kicked")),
            SessionEnd::Closed(CloseReason::Revoked) => Some((close::REVOKED, "token revoked")),
            SessionEnd::Closed(CloseReason::StreamLagged) => {
                Some((close::STREAM_LAGGED, "stream lagged"))
            }
            // A reason added to the ports later and not mapped yet: a generic close.
            SessionEnd::Closed(_) => Some((close::NORMAL, "closed")),
            SessionEnd::ProtocolViolation => Some((close::PROTOCOL_ERROR, "protocol error")),
            SessionEnd::InvalidUtf8 => Some((close::INVALID_PAYLOAD, "invalid UTF-8")),
            SessionEnd::RateLimited => Some((close::RATE_LIMITED, "rate limited")),
        }
    }

    /// What the service is told when the connection is unregistered.
    pub(crate) fn disconnect_reason(&self) -> DisconnectReason {
        match self {
            SessionEnd::ClientClosed => DisconnectReason::ClientClosed,
            SessionEnd::TransportError => DisconnectReason::TransportError,
            SessionEnd::MessageTooBig => DisconnectReason::ProtocolError,
            SessionEnd::HeartbeatTimeout => DisconnectReason::HeartbeatTimeout,
            SessionEnd::TokenExpired => DisconnectReason::TokenExpired,
            SessionEnd::SlowConsumer => DisconnectReason::SlowConsumer,
            SessionEnd::Shutdown => DisconnectReason::Shutdown,
            SessionEnd::Closed(CloseReason::Revoked) => DisconnectReason::Revoked,
            SessionEnd::Closed(CloseReason::StreamLagged) => DisconnectReason::StreamLagged,
            SessionEnd::Closed(_) => DisconnectReason::Kicked,
            SessionEnd::ProtocolViolation | SessionEnd::InvalidUtf8 => {
                DisconnectReason::ProtocolError
            }
            SessionEnd::RateLimited => DisconnectReason::RateLimited,
        }
    }

    /// How a fault in the client's byte stream ends the connection (each has its close
    /// code: 1002, 1009, 1007).
    pub(crate) fn from_read_fault(fault: ReadFault) -> SessionEnd {
        match fault {
            ReadFault::Protocol(_) => SessionEnd::ProtocolViolation,
            ReadFault::TooBig => SessionEnd::MessageTooBig,
            ReadFault::InvalidUtf8 => SessionEnd::InvalidUtf8,
        }
    }
}

/// Something a client sent that gets an `error` frame (the connection stays open).
#[derive(Debug)]
pub(crate) enum ClientFault<'a> {
    /// A text frame that does not decode (the reply echoes its id, if it had a valid one).
    Decode(&'a DecodeFailure),
    /// The service refused a `subscribe` (the id is the request's).
    Subscribe(&'a SubscribeError, Option<&'a RequestId>),
    /// The service refused an `unsubscribe`.
    Unsubscribe(&'a UnsubscribeError, Option<&'a RequestId>),
    /// A `refresh` whose token does not verify.
    RefreshToken(&'a AuthError, Option<&'a RequestId>),
    /// A `refresh` the service refused (another user, revoked).
    Refresh(&'a RefreshError, Option<&'a RequestId>),
    /// A `subscribe`, `unsubscribe` or `refresh` not answered within the inbound timeout.
    ProtocolTimeout(&'static str, Option<&'a RequestId>),
    /// A binary frame (it has no id to echo).
    Binary,
    /// The application's inbound handler refused or failed the message (the id is the
    /// message's).
    Inbound(&'a InboundError, &'a MessageType, Option<&'a RequestId>),
    /// Handling the message failed on the server's side (the handler panicked or timed out,
    /// or the service refused its reply); logged by the caller, no detail for the client.
    Internal(Option<&'a RequestId>),
    /// The client sent over its inbound rate limit; the message was dropped (the id is the
    /// dropped frame's, when it was a JSON object with a valid `id`: `request_id_of`).
    RateLimited(Option<&'a RequestId>),
}

impl ClientFault<'_> {
    /// The `error` frame `{"type":"error","id":..,"payload":{"code":..,"message":..}}`:
    /// every refusal echoes the refused frame's `id`, when it had a valid one (a binary
    /// frame has none).
    pub(crate) fn frame(&self) -> Frame {
        let (code, message): (&str, Cow<'_, str>) = match self {
            ClientFault::Decode(failure) => {
                (protocol::ERROR_INVALID_MESSAGE, failure.error.to_string().into())
            }
            ClientFault::Subscribe(SubscribeError::Forbidden, _) => {
                (protocol::ERROR_FORBIDDEN, "not allowed to subscribe to this topic".into())
            }
            ClientFault::Subscribe(SubscribeError::TooManyTopics { max }, _) => (
                protocol::ERROR_TOO_MANY_SUBSCRIPTIONS,
                format!("at most {max} subscriptions per connection").into(),
            ),
            // `NotConnected` is not answered (the connection is ending); anything else is the
            // server's side.
            ClientFault::Subscribe(_, _) => {
                (protocol::ERROR_UNAVAILABLE, "subscribe unavailable, retry later".into())
            }
            ClientFault::Unsubscribe(UnsubscribeError::NotSubscribed, _) => {
                (protocol::ERROR_NOT_SUBSCRIBED, "not subscribed to this topic".into())
            }
            ClientFault::Unsubscribe(_, _) => {
                (protocol::ERROR_UNAVAILABLE, "unsubscribe unavailable, retry later".into())
            }
            // The verifier could not decide: the token may be fine.
            ClientFault::RefreshToken(AuthError::Unavailable(_), _) => {
                (protocol::ERROR_UNAVAILABLE, "token verification unavailable, retry later".into())
            }
            // `AuthError` never carries the token.
            ClientFault::RefreshToken(error, _) => {
                (protocol::ERROR_INVALID_TOKEN, format!("token refused: {error}").into())
            }
            ClientFault::Refresh(RefreshError::DifferentUser, _) => {
                (protocol::ERROR_INVALID_TOKEN, "the token is for another user".into())
            }
            ClientFault::Refresh(RefreshError::Revoked, _) => {
                (protocol::ERROR_INVALID_TOKEN, "the token was revoked".into())
            }
            ClientFault::Refresh(_, _) => (protocol::ERROR_INVALID_TOKEN, "token refused".into()),
            ClientFault::ProtocolTimeout(kind, _) => {
                (protocol::ERROR_UNAVAILABLE, format!("{kind} timed out, retry later").into())
            }
            ClientFault::Binary => (
                protocol::ERROR_BINARY_UNSUPPORTED,
                "binary messages are not supported; send JSON text".into(),
            ),
            ClientFault::Inbound(InboundError::Unsupported, kind, _) => (
                protocol::ERROR_UNSUPPORTED_TYPE,
                format!("unsupported message type {:?}", kind.as_str()).into(),
            ),
            ClientFault::Inbound(InboundError::Rejected(text), _, _) => {
                (protocol::ERROR_REJECTED, text.as_str().into())
            }
            // Internal failures are logged by the caller; the client sees no detail.
            ClientFault::Inbound(_, _, _) | ClientFault::Internal(_) => {
                (protocol::ERROR_INTERNAL, "internal error".into())
            }
            ClientFault::RateLimited(_) => (
                protocol::ERROR_RATE_LIMITED,
                "too many messages; slow down or the connection is closed".into(),
            ),
        };
        let id = match self {
            ClientFault::Decode(failure) => failure.id.as_ref(),
            ClientFault::Subscribe(_, id)
            | ClientFault::Unsubscribe(_, id)
            | ClientFault::RefreshToken(_, id)
            | ClientFault::Refresh(_, id)
            | ClientFault::ProtocolTimeout(_, id)
            | ClientFault::Inbound(_, _, id)
            | ClientFault::Internal(id)
            | ClientFault::RateLimited(id) => *id,
            ClientFault::Binary => None,
        };
        error_frame(id, code, &message)
    }
}

/// `{"type":"pong","payload":{}}`.
pub(crate) fn pong_frame() -> Frame {
    Frame::pong(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_refusal(refusal: HandshakeRefusal, status: u16, reason: &str) {
        assert_eq!(refusal.reason(), reason);
        assert_eq!(refusal.into_response().status().as_u16(), status);
    }

    #[test]
    fn handshake_refusals() {
        check_refusal(HandshakeRefusal::NotUpgrade, 400, "not_upgrade");
        check_refusal(HandshakeRefusal::Origin, 403, "origin");
        check_refusal(HandshakeRefusal::Capacity, 503, "capacity");
        check_refusal(HandshakeRefusal::ShuttingDown, 503, "shutdown");
        check_refusal(HandshakeRefusal::Unauthorized(AuthError::Missing), 401, "missing");
        check_refusal(HandshakeRefusal::Unauthorized(AuthError::Expired), 401, "expired");
        check_refusal(HandshakeRefusal::Forbidden, 403, "forbidden");
        assert_eq!(HandshakeRefusal::from(ConnectError::Forbidden), HandshakeRefusal::Forbidden);
        check_refusal(HandshakeRefusal::VerifierBusy, 503, "verifier_busy");
        check_refusal(HandshakeRefusal::VerifierTimeout, 503, "verifier_timeout");
        check_refusal(
            HandshakeRefusal::Unauthorized(AuthError::Unavailable("jwks".into())),
            503,
            "unavailable",
        );
        check_refusal(HandshakeRefusal::InvalidQuery, 400, "invalid_query");
        check_refusal(
            HandshakeRefusal::InvalidSince("\"since\" is bad".into()),
            400,
            "invalid_since",
        );
        check_refusal(HandshakeRefusal::Revoked, 403, "revoked");
        assert_eq!(HandshakeRefusal::from(ConnectError::Revoked), HandshakeRefusal::Revoked);
        assert_eq!(
            HandshakeRefusal::from(ConnectError::Unavailable("registry".into())),
            HandshakeRefusal::Unavailable
        );
        assert_eq!(
            HandshakeRefusal::from(ConnectError::AtCapacity { max: 1 }),
            HandshakeRefusal::Capacity
        );
    }

    #[test]
    fn session_ends() {
        let cases = [
            (SessionEnd::ClientClosed, None, DisconnectReason::ClientClosed),
            (SessionEnd::TransportError, None, DisconnectReason::TransportError),
            (SessionEnd::MessageTooBig, Some(1009), DisconnectReason::ProtocolError),
            (SessionEnd::HeartbeatTimeout, Some(4004), DisconnectReason::HeartbeatTimeout),
            (SessionEnd::TokenExpired, Some(4001), DisconnectReason::TokenExpired),
            (SessionEnd::SlowConsumer, Some(4008), DisconnectReason::SlowConsumer),
            (SessionEnd::Shutdown, Some(1012), DisconnectReason::Shutdown),
            (SessionEnd::Closed(CloseReason::Kicked), Some(4003), DisconnectReason::Kicked),
            (SessionEnd::Closed(CloseReason::Revoked), Some(4005), DisconnectReason::Revoked),
            (
                SessionEnd::Closed(CloseReason::StreamLagged),
                Some(4010),
                DisconnectReason::StreamLagged,
            ),
            (SessionEnd::ProtocolViolation, Some(1002), DisconnectReason::ProtocolError),
            (SessionEnd::InvalidUtf8, Some(1007), DisconnectReason::ProtocolError),
            (SessionEnd::RateLimited, Some(4029), DisconnectReason::RateLimited),
        ];
        for (end, code, reason) in cases {
            assert_eq!(end.close_frame().map(|(c, _)| c), code, "{end:?}");
            assert_eq!(end.disconnect_reason(), reason, "{end:?}");
        }
    }

    #[test]
    fn read_faults_map_to_ends() {
        let cases = [
            (ReadFault::InvalidUtf8, SessionEnd::InvalidUtf8, 1007),
            (ReadFault::Protocol("unmasked frame"), SessionEnd::ProtocolViolation, 1002),
            (ReadFault::TooBig, SessionEnd::MessageTooBig, 1009),
        ];
        for (fault, end, code) in cases {
            let got = SessionEnd::from_read_fault(fault);
            assert_eq!(got, end, "{fault:?}");
            assert_eq!(got.close_frame().map(|(c, _)| c), Some(code), "{fault:?}");
        }
    }

    #[test]
    fn frames() {
        assert_eq!(pong_frame().as_str(), r#"{"type":"pong","payload":{}}"#);
        let kind = MessageType::new("chat").unwrap_or_else(|e| panic!("{e}"));
        let request = RequestId::from_json(&json!(9)).unwrap_or_else(|e| panic!("{e}"));
        for id in [None, Some(&request)] {
            let cases = [
                (ClientFault::Internal(id), "internal_error"),
                (ClientFault::RateLimited(id), "rate_limited"),
                (ClientFault::Inbound(&InboundError::Unsupported, &kind, id), "unsupported_type"),
                (ClientFault::Inbound(&InboundError::Rejected("no".into()), &kind, id), "rejected"),
                (
                    ClientFault::Inbound(&InboundError::Internal("db down".into()), &kind, id),
                    "internal_error",
                ),
            ];
            for (fault, code) in cases {
                let value: serde_json::Value =
                    serde_json::from_str(fault.frame().as_str()).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(value["type"], "error");
                assert_eq!(value["payload"]["code"], code);
                assert_eq!(value.get("id").cloned(), id.map(|_| json!(9)), "{fault:?}");
                assert!(!fault.frame().as_str().contains("db down"), "internal detail leaked");
            }
        }
        let binary = ClientFault::Binary.frame();
        assert_eq!(
            binary.as_str(),
            r#"{"type":"error","payload":{"code":"binary_unsupported","message":"binary messages are not supported; send JSON text"}}"#
        );
        let failure = realtime_core::decode_client_text(
            r#"{"type":"x","id":7,"payload":1}"#,
            &realtime_core::DecodeLimits::default(),
        )
        .err()
        .unwrap_or_else(|| panic!("decoded"));
        assert_eq!(
            ClientFault::Decode(&failure).frame().as_str(),
            r#"{"type":"error","id":7,"payload":{"code":"invalid_message","message":"\"payload\" must be a JSON object"}}"#
        );
        let id = RequestId::from_json(&json!("s1")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            ClientFault::Subscribe(&SubscribeError::Forbidden, Some(&id)).frame().as_str(),
            r#"{"type":"error","id":"s1","payload":{"code":"forbidden","message":"not allowed to subscribe to this topic"}}"#
        );
        let id = Some(&id);
        let protocol_cases = [
            (
                ClientFault::Subscribe(&SubscribeError::TooManyTopics { max: 2 }, id),
                "too_many_subscriptions",
            ),
            (
                ClientFault::Subscribe(&SubscribeError::Unavailable("redis".into()), id),
                "unavailable",
            ),
            (ClientFault::Unsubscribe(&UnsubscribeError::NotSubscribed, id), "not_subscribed"),
            (ClientFault::RefreshToken(&AuthError::Expired, id), "invalid_token"),
            (ClientFault::RefreshToken(&AuthError::Unavailable("jwks".into()), id), "unavailable"),
            (ClientFault::Refresh(&RefreshError::DifferentUser, id), "invalid_token"),
            (ClientFault::Refresh(&RefreshError::Revoked, id), "invalid_token"),
            (ClientFault::ProtocolTimeout(protocol::SUBSCRIBE, id), "unavailable"),
        ];
        for (fault, code) in protocol_cases {
            let value: serde_json::Value =
                serde_json::from_str(fault.frame().as_str()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!((&value["id"], &value["payload"]["code"]), (&json!("s1"), &json!(code)));
            assert!(!fault.frame().as_str().contains("redis"), "internal detail leaked");
        }
        let rejected = ClientFault::Inbound(&InboundError::Rejected("not now".into()), &kind, id);
        assert_eq!(
            rejected.frame().as_str(),
            r#"{"type":"error","id":"s1","payload":{"code":"rejected","message":"not now"}}"#
        );
    }
}
