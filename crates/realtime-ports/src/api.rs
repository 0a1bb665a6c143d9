//! [`RealtimeApi`]: what the service offers to transports and to the application.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use realtime_core::{
    Connection, ConnectionId, ConnectionsOf, Envelope, IdempotencyKey, Identity, MessageType,
    Payload, Position, RequestId, Role, StreamName, StreamState, Target, TopicName, TopicPattern,
    UnixMillis, UserId,
};

use crate::broker::{BrokerHealth, NodeReceipts};
use crate::presence::{PresenceError, TopicMember, UserPresence};
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
    /// The token was revoked (`POST /api/revoke`): it was issued before the user's latest
    /// revocation.
    #[error("the token was revoked")]
    Revoked,
}

/// How a publish is made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishOptions {
    /// A retried publish with the same key (to the same stream, within 300 s) returns the
    /// first receipt and delivers nothing again.
    pub idempotency_key: Option<IdempotencyKey>,
    /// Wait (a bounded time) for every node's delivered count: the receipt's `delivered` is
    /// then cluster-wide, with `nodes_answered` and `nodes_expected`.
    pub receipts: bool,
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishReceipt {
    /// How many connections accepted the message: on this node, or with
    /// [`PublishOptions::receipts`] on every node that answered.
    pub delivered: usize,
    /// The stream it went to; `None` for one connection.
    pub stream: Option<StreamName>,
    /// Its place in the stream; `None` when the stream keeps no history.
    pub position: Option<Position>,
    /// A publish with the same idempotency key came first: this is its receipt.
    pub duplicate: bool,
    /// With [`PublishOptions::receipts`]: the nodes that answered and the nodes that
    /// received the message (with an in-process broker, 1 and 1).
    pub nodes: Option<NodeReceipts>,
}

/// Who asks for a subscribe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeOrigin {
    /// The client, holding a token with these `topics` patterns (checked first; then the
    /// application's `SubscribeAuthorizer`).
    Client {
        /// The `topics` claim of the connection's current token.
        topics: Vec<TopicPattern>,
    },
    /// The backend (`POST /api/subscribe`, Rust): not checked.
    Server,
}

/// A subscribe of one connection to one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeRequest {
    /// Which connection.
    pub connection: ConnectionId,
    /// Which topic.
    pub topic: TopicName,
    /// Where the client left off, to recover what it missed.
    pub since: Option<Position>,
    /// The client frame's `id`, echoed in the `subscribed` reply.
    pub reply_id: Option<RequestId>,
    /// Who asks.
    pub origin: SubscribeOrigin,
}

/// The outcome of a subscribe: the connection has been sent `subscribed` with this, then the
/// recovered publications (when `recovered`), then live ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribed {
    /// The topic's position (`None` when it keeps no history).
    pub position: Option<Position>,
    /// Whether every publication after `since` was replayed.
    pub recovered: bool,
}

/// Why a subscribe was refused; the connection stays open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The connection is not (or no longer) registered.
    #[error("not connected")]
    NotConnected,
    /// Neither the token's `topics` claim nor the application allows it.
    #[error("not allowed to subscribe to this topic")]
    Forbidden,
    /// The connection holds its maximum number of subscriptions.
    #[error("at most {max} subscriptions per connection")]
    TooManyTopics {
        /// The limit.
        max: usize,
    },
    /// The topic's history could not be read; nothing changed.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Why an unsubscribe did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnsubscribeError {
    /// The connection is not (or no longer) registered.
    #[error("not connected")]
    NotConnected,
    /// The connection is not subscribed to the topic.
    #[error("not subscribed to this topic")]
    NotSubscribed,
}

/// Why a connection's streams could not be opened (the transport then refuses it, 503).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The connection is not (or no longer) registered.
    #[error("not connected")]
    NotConnected,
    /// The broker could not read a stream's position.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Why an in-band token refresh was refused; the connection keeps its old token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RefreshError {
    /// The connection is not (or no longer) registered.
    #[error("not connected")]
    NotConnected,
    /// The new token is for another user (`sub`).
    #[error("the token is for another user")]
    DifferentUser,
    /// The new token was revoked.
    #[error("the token was revoked")]
    Revoked,
}

/// Why a revocation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RevokeError {
    /// The revocation could not be recorded; nothing was closed.
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
    /// Its token was revoked ([`RealtimeApi::revoke`]).
    Revoked,
    /// Its streams fell behind while recovering ([`CloseReason::StreamLagged`](crate::CloseReason::StreamLagged)).
    StreamLagged,
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
            DisconnectReason::Revoked => "revoked",
            DisconnectReason::StreamLagged => "stream_lagged",
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
    /// Admits a verified connection: generates its id and registers it. From now on, live
    /// publications of its streams are held back until the transport calls
    /// [`open_streams`](RealtimeApi::open_streams), which every transport MUST do before it
    /// writes anything but the `connected` frame.
    ///
    /// # Errors
    /// [`ConnectError::AtCapacity`] at the connection cap; [`ConnectError::Forbidden`] when a
    /// required permission is missing.
    fn connect(&self, request: ConnectRequest) -> Result<Arc<Connection>, ConnectError>;

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
    /// recipient through the broker, which gives it its stream position (when the stream
    /// keeps history). Returns the receipt.
    ///
    /// # Errors
    /// - [`PublishError::ReservedType`] for a type the protocol reserves;
    /// - [`PublishError::TooLarge`] when the encoded message exceeds the service's limit;
    /// - [`PublishError::Unavailable`] when the message could not be handed on at all (the
    ///   broker failed): a retry with the same idempotency key delivers at most once.
    ///
    /// In every error case no recipient received the message.
    async fn publish_with(
        &self,
        target: &Target,
        message: &Envelope,
        options: &PublishOptions,
    ) -> Result<PublishReceipt, PublishError>;

    /// [`publish_with`](RealtimeApi::publish_with) without options; returns how many
    /// connections accepted the message.
    ///
    /// # Errors
    /// As [`publish_with`](RealtimeApi::publish_with).
    async fn publish(&self, target: &Target, message: &Envelope) -> Result<usize, PublishError> {
        let receipt = self.publish_with(target, message, &PublishOptions::default()).await?;
        Ok(receipt.delivered)
    }

    /// Answers a client frame: sends `message` to connection `id` as the reply to the frame
    /// whose `id` was `reply_id`. The frame is `{"type":..,"id":..,"payload":{..}}`
    /// (`Frame::encode_reply`: serialised once, the request's id echoed; none when the
    /// request had none), so the client can match it to its request. The transport sends
    /// the inbound handler's replies this way. Returns how many connections accepted it (1,
    /// or 0 when the connection is gone).
    ///
    /// # Errors
    /// The checks of [`publish_with`](RealtimeApi::publish_with), which every implementation
    /// MUST apply to replies too: [`PublishError::ReservedType`] for a type the protocol
    /// reserves, [`PublishError::TooLarge`] when the encoded reply (with its id) exceeds the
    /// limit, [`PublishError::Unavailable`]. In every error case nothing was sent.
    async fn reply(
        &self,
        id: ConnectionId,
        reply_id: Option<RequestId>,
        message: &Envelope,
    ) -> Result<usize, PublishError>;

    /// Opens a newly connected connection's implicit streams (its user, its roles,
    /// `broadcast`), recovering from `since` where the client gives a position: the
    /// recovered publications are queued on its sink, before any live one. Returns every
    /// implicit stream's position (with history) for the `connected` frame, which the
    /// transport writes first.
    ///
    /// # Errors
    /// [`StreamError`]; the transport then ends the connection.
    async fn open_streams(
        &self,
        id: ConnectionId,
        since: &BTreeMap<StreamName, Position>,
    ) -> Result<Vec<StreamState>, StreamError>;

    /// Subscribes a connection to a topic: checks who asks, registers the subscription,
    /// and queues `subscribed`, the recovered publications and then live ones on its sink.
    /// Subscribing again to a topic it is in answers `subscribed` again (with recovery).
    ///
    /// # Errors
    /// [`SubscribeError`]; the connection stays open and nothing changed.
    async fn subscribe(&self, request: SubscribeRequest) -> Result<Subscribed, SubscribeError>;

    /// Unsubscribes a connection from a topic and queues `unsubscribed` (with `reply_id`);
    /// nothing of the topic is delivered to it after that frame.
    ///
    /// # Errors
    /// [`UnsubscribeError`] when it was not subscribed.
    async fn unsubscribe(
        &self,
        id: ConnectionId,
        topic: &TopicName,
        reply_id: Option<RequestId>,
    ) -> Result<(), UnsubscribeError>;

    /// Subscribes every connection of `target` to `topic` on the backend's behalf (each gets
    /// `subscribed` without an id); returns how many were subscribed.
    ///
    /// # Errors
    /// [`SubscribeError::Unavailable`]; [`SubscribeError::TooManyTopics`] for a single
    /// connection at its limit (a user's connections at their limit are skipped).
    async fn subscribe_connections(
        &self,
        target: &ConnectionsOf,
        topic: &TopicName,
    ) -> Result<usize, SubscribeError>;

    /// Unsubscribes every connection of `target` from `topic`; returns how many were in it.
    async fn unsubscribe_connections(&self, target: &ConnectionsOf, topic: &TopicName) -> usize;

    /// Accepts a refreshed identity for a connection: the same user, not revoked. The
    /// transport verified the token and moves the connection's expiry itself.
    ///
    /// # Errors
    /// [`RefreshError`]; the connection keeps its old token.
    fn refresh(&self, id: ConnectionId, identity: &Identity) -> Result<(), RefreshError>;

    /// Revokes `user`'s tokens issued before `issued_before`: closes their connections
    /// ([`CloseReason::Revoked`](crate::CloseReason::Revoked)) and refuses such tokens at
    /// connect and refresh from now on. Returns how many connections were closed.
    ///
    /// # Errors
    /// [`RevokeError`] when the revocation could not be recorded.
    async fn revoke(&self, user: &UserId, issued_before: UnixMillis) -> Result<usize, RevokeError>;

    /// Whether `user` is online, and with how many connections.
    ///
    /// # Errors
    /// [`PresenceError`] when presence cannot be read.
    async fn user_presence(&self, user: &UserId) -> Result<UserPresence, PresenceError>;

    /// Who is subscribed to `topic`.
    ///
    /// # Errors
    /// [`PresenceError`] when presence cannot be read.
    async fn topic_presence(&self, topic: &TopicName) -> Result<Vec<TopicMember>, PresenceError>;

    /// How many connections are online: this node's with in-process presence, every node's
    /// with a distributed one (`connection_count` is always this node's, which is also what
    /// this returns unless overridden).
    ///
    /// # Errors
    /// [`PresenceError::Unavailable`] when presence cannot be read.
    async fn online_count(&self) -> Result<usize, PresenceError> {
        Ok(self.connection_count())
    }

    /// The broker's state, for `/healthz` (the default: an in-process broker, always up).
    fn broker_health(&self) -> BrokerHealth {
        BrokerHealth { backend: "memory", connected: true, counters: Vec::new() }
    }

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

    /// Sends to every connection subscribed to `topic` ([`Target::Topic`]).
    ///
    /// # Errors
    /// As [`publish`](RealtimeApi::publish).
    async fn send_to_topic(
        &self,
        topic: &TopicName,
        message: &Envelope,
    ) -> Result<usize, PublishError> {
        self.publish(&Target::Topic(topic.clone()), message).await
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
