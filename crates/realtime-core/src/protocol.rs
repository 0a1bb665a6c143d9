//! Names and numbers of the wire protocol (`docs/protocol.md`): reserved message types,
//! close codes and error codes. The transport maps errors to these; the core owns the values.

/// Client to server: liveness check at the application level.
pub const PING: &str = "ping";
/// Server to client: answer to [`PING`].
pub const PONG: &str = "pong";
/// Server to client: first frame after the upgrade, with the connection id.
pub const CONNECTED: &str = "connected";
/// Server to client: something the client sent was refused; the connection stays open.
pub const ERROR: &str = "error";
/// Client to server: join a topic, optionally recovering what was missed since a position.
pub const SUBSCRIBE: &str = "subscribe";
/// Client to server: leave a topic.
pub const UNSUBSCRIBE: &str = "unsubscribe";
/// Client to server: a new token for this connection, before the current one expires.
pub const REFRESH: &str = "refresh";
/// Server to client: answer to [`SUBSCRIBE`], with the topic's position and whether what
/// was missed was replayed.
pub const SUBSCRIBED: &str = "subscribed";
/// Server to client: answer to [`UNSUBSCRIBE`].
pub const UNSUBSCRIBED: &str = "unsubscribed";
/// Server to client: answer to [`REFRESH`], with the new expiry.
pub const REFRESHED: &str = "refreshed";
/// Server to client: a user joined a topic the connection is subscribed to.
pub const PRESENCE_JOIN: &str = "presence.join";
/// Server to client: a user left a topic the connection is subscribed to.
pub const PRESENCE_LEAVE: &str = "presence.leave";

/// Message types only the server's protocol layer sends. Applications may not publish them
/// and clients may not send them, so a client can trust that a `connected`, `pong`, `error`,
/// `subscribed`, `unsubscribed`, `refreshed` or presence frame comes from the protocol.
pub const RESERVED_SERVER_TYPES: [&str; 8] =
    [CONNECTED, PONG, ERROR, SUBSCRIBED, UNSUBSCRIBED, REFRESHED, PRESENCE_JOIN, PRESENCE_LEAVE];

/// Message types a client sends to the protocol itself: they are decoded by the core and
/// answered by the server, never handed to the application's inbound handler.
pub const CLIENT_PROTOCOL_TYPES: [&str; 4] = [PING, SUBSCRIBE, UNSUBSCRIBE, REFRESH];

/// Whether `kind` is one of [`CLIENT_PROTOCOL_TYPES`].
pub fn is_client_protocol_type(kind: &str) -> bool {
    CLIENT_PROTOCOL_TYPES.contains(&kind)
}

/// Whether `kind` is one of [`RESERVED_SERVER_TYPES`].
pub fn is_reserved_server_type(kind: &str) -> bool {
    RESERVED_SERVER_TYPES.contains(&kind)
}

/// Error code in an `error` frame: the client frame could not be decoded.
pub const ERROR_INVALID_MESSAGE: &str = "invalid_message";
/// Error code in an `error` frame: binary frames are not part of the protocol.
pub const ERROR_BINARY_UNSUPPORTED: &str = "binary_unsupported";
/// Error code in an `error` frame: the application's inbound handler refused the message.
pub const ERROR_REJECTED: &str = "rejected";
/// Error code in an `error` frame: nothing handles this message type.
pub const ERROR_UNSUPPORTED_TYPE: &str = "unsupported_type";
/// Error code in an `error` frame: the handler failed, panicked, timed out, or replied with
/// something the service refused.
pub const ERROR_INTERNAL: &str = "internal_error";
/// Error code in an `error` frame: the client sent faster than its inbound rate limit; the
/// message was dropped. Going on closes the connection with [`close::RATE_LIMITED`].
pub const ERROR_RATE_LIMITED: &str = "rate_limited";
/// Error code in an `error` frame: the token does not allow this (a `subscribe` to a topic
/// its `topics` claim does not cover).
pub const ERROR_FORBIDDEN: &str = "forbidden";
/// Error code in an `error` frame: the connection already holds as many topic
/// subscriptions as allowed.
pub const ERROR_TOO_MANY_SUBSCRIPTIONS: &str = "too_many_subscriptions";
/// Error code in an `error` frame: an `unsubscribe` from a topic the connection is not
/// subscribed to.
pub const ERROR_NOT_SUBSCRIBED: &str = "not_subscribed";
/// Error code in an `error` frame: a `refresh` was refused because its token does not
/// verify or belongs to another user; the connection keeps its current token (and still
/// closes with [`close::TOKEN_EXPIRED`] when that one expires).
pub const ERROR_INVALID_TOKEN: &str = "invalid_token";
/// Error code in an `error` frame: the server cannot do this right now (for example, the
/// broker or the token verifier is down); retrying later may succeed.
pub const ERROR_UNAVAILABLE: &str = "unavailable";

/// WebSocket close codes used by realtime (RFC 6455 section 7.4 and the 4000-4999 private range).
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The endpoint is going away (not used by the server; listed for clients).
    pub const GOING_AWAY: u16 = 1001;
    /// The client sent something the protocol forbids at the WebSocket level.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// The client sent a text frame that is not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A policy was violated (for example, liveness: no pong in time).
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A frame or message was larger than the configured maximum.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The server hit an unexpected condition.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The server is restarting or shutting down; reconnect with backoff.
    pub const SERVICE_RESTART: u16 = 1012;
    /// The token expired; get a new one and reconnect.
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// The connection was closed by the application (for example, `disconnect`).
    pub const DISCONNECTED: u16 = 4003;
    /// The client did not answer pings in time.
    pub const HEARTBEAT_TIMEOUT: u16 = 4004;
    /// The backend revoked the connection's token (or its user); reconnecting with the
    /// same token will be refused.
    pub const REVOKED: u16 = 4005;
    /// The client read too slowly: its outbound queue filled up.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// The server could not keep this connection's streams gap-free (more arrived while its
    /// recovery ran than it may buffer); reconnect with `since` and recover.
    pub const STREAM_LAGGED: u16 = 4010;
    /// The client kept sending faster than its inbound rate limit after `rate_limited`
    /// error frames.
    pub const RATE_LIMITED: u16 = 4029;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_types() {
        for kind in [
            "connected",
            "pong",
            "error",
            "subscribed",
            "unsubscribed",
            "refreshed",
            "presence.join",
            "presence.leave",
        ] {
            assert!(is_reserved_server_type(kind), "{kind}");
            assert!(!is_client_protocol_type(kind), "{kind}");
        }
        for kind in ["ping", "subscribe", "unsubscribe", "refresh"] {
            assert!(is_client_protocol_type(kind), "{kind}");
            assert!(!is_reserved_server_type(kind), "{kind}");
        }
        for kind in ["notification", "Error", "errors", "presence", "presence.joined"] {
            assert!(!is_reserved_server_type(kind), "{kind}");
            assert!(!is_client_protocol_type(kind), "{kind}");
        }
    }
}
