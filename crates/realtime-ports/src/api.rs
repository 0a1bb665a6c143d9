//! [`RealtimeApi`]: what the service offers to transports and to the application.

use std::sync::Arc;

use async_trait::async_trait;
use realtime_core::{Connection, ConnectionId, Envelope, Identity, Payload, Role, Target, UserId};

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
    /// The server is shutting down.
    Shutdown,
    /// The application asked for it.
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
}

/// The service's API, from the design record: admit and remove connections, and send.
///
/// Each send serialises the message once and returns how many connections on this node it
/// was handed to (enqueued on their sinks). Sends are `async` so that a multi-node service
/// can forward to a message bus without changing this trait.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait RealtimeApi: Send + Sync + 'static {
    /// Admits a verified connection: generates its id and registers it.
    ///
    /// # Errors
    /// [`ConnectError::AtCapacity`] at the connection cap; [`ConnectError::Forbidden`] when a
    /// required permission is missing.
    fn connect(&self, request: ConnectRequest) -> Result<Connection, ConnectError>;

    /// Removes a connection, closing its sink when the application asked for it
    /// ([`DisconnectReason::Kicked`]). Returns false if it was not registered.
    fn disconnect(&self, id: ConnectionId, reason: DisconnectReason) -> bool;

    /// Whether a connection could be admitted now (the transport asks before upgrading).
    fn has_capacity(&self) -> bool;

    /// How many connections this node holds.
    fn connection_count(&self) -> usize;

    /// Sends to every connection of `user`.
    ///
    /// # Errors
    /// [`PublishError`] when the message could not be handed on at all.
    async fn send_to_user(&self, user: &UserId, message: &Envelope) -> Result<usize, PublishError>;

    /// Sends to every connection holding `role`.
    ///
    /// # Errors
    /// [`PublishError`] when the message could not be handed on at all.
    async fn send_to_role(&self, role: &Role, message: &Envelope) -> Result<usize, PublishError>;

    /// Sends to one connection; `Ok(0)` when it is not connected.
    ///
    /// # Errors
    /// [`PublishError`] when the message could not be handed on at all.
    async fn send_to_connection(
        &self,
        id: ConnectionId,
        message: &Envelope,
    ) -> Result<usize, PublishError>;

    /// Sends to every connection.
    ///
    /// # Errors
    /// [`PublishError`] when the message could not be handed on at all.
    async fn broadcast(&self, message: &Envelope) -> Result<usize, PublishError>;

    /// Sends to `target` (one of the four above).
    ///
    /// # Errors
    /// [`PublishError`] when the message could not be handed on at all.
    async fn publish(&self, target: &Target, message: &Envelope) -> Result<usize, PublishError>;
}
