//! [`RealtimeApi`]: what the service offers to transports and to the application.

use std::sync::Arc;

use async_trait::async_trait;
use realtime_core::{
    Connection, ConnectionId, Envelope, Identity, MessageType, Payload, Role, Target, UserId,
};

use crate::sink::ConnectionSink;

/// Everything needed to admit a verified connection.
#[derive(Clone)]
pub struct ConnectRequest {
    /// Who connects (from the verified token).
    pub identity: Identity,
    /// Application metadata for the connection (a JSON object).
    pub metadata: Payload,
    /// Where the connection's outbound frames go.
    pub sink: Arc<dyn ConnectionSink>,
}

impl std::fmt::Debug for ConnectRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectRequest").field("identity", &self.identity).finish_non_exhaustive()
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The node holds its maximum number of connections.
    #[error("at capacity: {max} connections")]
    AtCapacity {
        /// The configured maximum.
        max: usize,
    },
    /// The identity lacks a permission the service requires.
    #[error("forbidden: missing a required permission")]
    Forbidden,
    /// The connection could not be admitted for a reason on the server's side (for example,
    /// the registry refused it); the client may retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Why a connection left; a metrics label and a log field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The client closed the WebSocket.
    ClientClosed,
    /// The TCP connection failed or was reset.
    TransportError,
    /// No pong within the timeout.
    HeartbeatTimeout,
    /// The token expired.
    TokenExpired,
    /// The outbound queue filled up.
    SlowConsumer,
    /// The client broke the protocol (for example, an oversize frame).
    ProtocolError,
    /// The client kept sending faster than its inbound rate limit allows.
    RateLimited,
    /// The server is shutting down.
    Shutdown,
    /// The application removed it ([`RealtimeApi::kick`]).
    Kicked,
}

impl DisconnectReason {
    /// A short, stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::ClientClosed => "client_closed",
            DisconnectReason::TransportError => "transport_error",
            DisconnectReason::HeartbeatTimeout => "heartbeat_timeout",
            DisconnectReason::TokenExpired => "token_expired",
            DisconnectReason::SlowConsumer => "slow_consumer",
            DisconnectReason::ProtocolError => "protocol_error",
            DisconnectReason::RateLimited => "rate_limited",
            DisconnectReason::Shutdown => "shutdown",
            DisconnectReason::Kicked => "kicked",
        }
    }
}

/// Why a publish failed as a whole (per-recipient failures are counted, not returned).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The message could not be handed to the delivery layer (for example, a message bus is
    /// unreachable in a multi-node deployment).
    #[error("publish unavailable: {0}")]
    Unavailable(String),
    /// The encoded message is larger than the service's limit; no recipient got it.
    #[error("message is {len} bytes encoded, at most {max} are allowed")]
    TooLarge {
        /// The encoded size in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The message type is one the protocol reserves for itself (`connected`, `pong`,
    /// `error`, ...: `realtime_core::protocol::RESERVED_SERVER_TYPES`); nobody may publish it.
    #[error("message type {0:?} is reserved for the protocol")]
    ReservedType(MessageType),
}

/// The service's API, from the design record: admit and remove connections, and send.
///
/// Each send serialises the message once and returns how many connections on this node it
/// was handed to (enqueued on their sinks). Sends are `async` so that a multi-node service
/// can forward to a message bus without changing this trait.
///
/// Two ways out of the registry, with different callers:
/// - the application removes connections with [`kick`](RealtimeApi::kick) and
///   [`kick_user`](RealtimeApi::kick_user): they are unregistered at once and their sinks
///   closed, so the socket closes too (after writing what was already queued);
/// - the transport calls [`unregister`](RealtimeApi::unregister) when a socket has ended.
///
/// No method leaves an open socket outside the registry.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait RealtimeApi: Send + Sync + 'static {
    /// Admits a verified connection: generates its id and registers it.
    ///
    /// # Errors
    /// [`ConnectError::AtCapacity`] at the connection cap; [`ConnectError::Forbidden`] when a
    /// required permission is missing.
    fn connect(&self, request: ConnectRequest) -> Result<Connection, ConnectError>;

    /// Removes a connection whose socket has ended (called by the transport, once per
    /// connection, with why it ended). Does not touch the sink. Returns false if it was not
    /// registered (for example, because it was kicked), so a second call is harmless.
    fn unregister(&self, id: ConnectionId, reason: DisconnectReason) -> bool;

    /// Removes one connection on the application's behalf: unregisters it at once and closes
    /// its sink with [`CloseReason::Kicked`](crate::CloseReason::Kicked). Frames sent before the kick are still delivered.
    /// Returns false if it was not registered.
    fn kick(&self, id: ConnectionId) -> bool;

    /// [`kick`](RealtimeApi::kick)s every connection of `user`; returns how many there were.
    fn kick_user(&self, user: &UserId) -> usize;

    /// Whether a connection could be admitted now (the transport asks before upgrading).
    fn has_capacity(&self) -> bool;

    /// How many connections this node holds.
    fn connection_count(&self) -> usize;

    /// Sends `message` to `target`: serialises it once and hands the same frame to every
    /// recipient. Returns how many connections accepted it.
    ///
    /// # Errors
    /// - [`PublishError::ReservedType`] for a type the protocol reserves;
    /// - [`PublishError::TooLarge`] when the encoded message exceeds the service's limit;
    /// - [`PublishError::Unavailable`] when the message could not be handed on at all.
    ///
    /// In every error case no recipient received the message.
    async fn publish(&self, target: &Target, message: &Envelope) -> Result<usize, PublishError>;

    /// Sends to every connection of `user` ([`publish`](RealtimeApi::publish) to
    /// [`Target::User`]).
    ///
    /// # Errors
    /// As [`publish`](RealtimeApi::publish).
    async fn send_to_user(&self, user: &UserId, message: &Envelope) -> Result<usize, PublishError> {
        self.publish(&Target::User(user.clone()), message).await
    }

    /// Sends to every connection holding `role` ([`Target::Role`]).
    ///
    /// # Errors
    /// As [`publish`](RealtimeApi::publish).
    async fn send_to_role(&self, role: &Role, message: &Envelope) -> Result<usize, PublishError> {
        self.publish(&Target::Role(role.clone()), message).await
    }

    /// Sends to one connection ([`Target::Connection`]); `Ok(0)` when it is not connected.
    ///
    /// # Errors
    /// As [`publish`](RealtimeApi::publish).
    async fn send_to_connection(
        &self,
        id: ConnectionId,
        message: &Envelope,
    ) -> Result<usize, PublishError> {
        self.publish(&Target::Connection(id), message).await
    }

    /// Sends to every connection ([`Target::Broadcast`]).
    ///
    /// # Errors
    /// As [`publish`](RealtimeApi::publish).
    async fn broadcast(&self, message: &Envelope) -> Result<usize, PublishError> {
        self.publish(&Target::Broadcast, message).await
    }
}
