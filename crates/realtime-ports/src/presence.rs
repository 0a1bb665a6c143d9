//! [`Presence`]: who is online on the node (or the cluster) and who is in each topic.

use async_trait::async_trait;
use realtime_core::{ConnectionId, TopicName, UserId};

/// Where a connection is present: online at all, or in one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceScope<'a> {
    /// Connected (every connection is, from connect to its end).
    Online,
    /// Subscribed to this topic.
    Topic(&'a TopicName),
}

/// A user's presence: `GET /api/presence/user/<id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPresence {
    /// Whose.
    pub user_id: UserId,
    /// Whether any connection of the user is open.
    pub online: bool,
    /// How many connections the user has open.
    pub connections: usize,
}

/// One member of a topic: a user with at least one subscribed connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMember {
    /// Who.
    pub user_id: UserId,
    /// How many of the user's connections are subscribed.
    pub connections: usize,
}

/// Why a presence query failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PresenceError {
    /// The presence store is unreachable.
    #[error("presence unavailable: {0}")]
    Unavailable(String),
}

/// Presence: updated by the service as connections come, go, subscribe and unsubscribe;
/// queried by the application.
///
/// # Contract
/// (checked by `realtime_testkit::presence_contract`, which every presence adapter runs)
/// - `join` and `leave` are idempotent per connection: a second `join` of the same connection
///   in the same scope changes nothing and returns false, as does a `leave` of a connection
///   that is not there.
/// - `join` returns true exactly when the user had no connection in the scope before (a
///   `presence.join` is due); `leave` returns true exactly when it removed the user's last
///   one (a `presence.leave` is due). A user's second tab never yields a second join.
/// - Queries reflect every `join` and `leave` that returned before them (on this node; a
///   distributed adapter also reflects other nodes' within its heartbeat TTL).
/// - `join` and `leave` never block or await; no state is kept for a scope nobody is in.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// `connection` of `user` entered `scope`; true when it is the user's first there.
    fn join(&self, scope: PresenceScope<'_>, user: &UserId, connection: ConnectionId) -> bool;

    /// `connection` of `user` left `scope`; true when it was the user's last there.
    fn leave(&self, scope: PresenceScope<'_>, user: &UserId, connection: ConnectionId) -> bool;

    /// Whether `user` is online and with how many connections.
    ///
    /// # Errors
    /// [`PresenceError::Unavailable`] when the store cannot be read.
    async fn user(&self, user: &UserId) -> Result<UserPresence, PresenceError>;

    /// The members of `topic`, sorted by user id.
    ///
    /// # Errors
    /// [`PresenceError::Unavailable`] when the store cannot be read.
    async fn topic(&self, topic: &TopicName) -> Result<Vec<TopicMember>, PresenceError>;

    /// How many connections are online (on this node; a distributed adapter counts every
    /// node's, within its heartbeat TTL).
    ///
    /// # Errors
    /// [`PresenceError::Unavailable`] when the store cannot be read.
    async fn online_count(&self) -> Result<usize, PresenceError>;
}
