//! [`ConnectionRegistry`]: where live connections are found by id, user, role and topic.

use std::sync::Arc;

use realtime_core::{Connection, ConnectionId, Role, StreamName, TopicName, UserId};

use crate::sink::ConnectionSink;

/// A registered connection: the domain record and its outbound sink. Cheap to clone (two
/// reference counts).
#[derive(Clone)]
pub struct Registered {
    /// What the domain knows of the connection.
    pub connection: Arc<Connection>,
    /// Where its frames go.
    pub sink: Arc<dyn ConnectionSink>,
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered").field("connection", &self.connection).finish_non_exhaustive()
    }
}

/// Why a connection could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// A connection with this id is already registered.
    #[error("connection {0} is already registered")]
    Duplicate(ConnectionId),
}

/// Why a connection could not subscribe to a topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// No connection with this id is registered.
    #[error("connection {0} is not registered")]
    NotRegistered(ConnectionId),
    /// The connection already holds the most topics it may.
    #[error("a connection may subscribe to at most {max} topics")]
    TooManyTopics {
        /// The limit that was reached.
        max: usize,
    },
}

/// The set of live connections of this node, indexed for routing.
///
/// A connection is in its user's stream, its roles' streams and the broadcast stream from
/// the moment it is registered, and in a topic's stream from a successful
/// [`subscribe`](ConnectionRegistry::subscribe) until it unsubscribes or is unregistered.
///
/// # Contract
/// (checked by `realtime_testkit::registry_contract`, which every implementation runs)
/// - Lookups return exactly the connections the pure rules `realtime_core::route` and
///   `realtime_core::route_stream` select from the registered set (with each connection's
///   topics), each once, in no particular order.
/// - `find_by_user`, `find_by_role` and `find_by_topic` cost grows with the number of
///   matches, not with the number of registered connections; `count` and `topic_count` are
///   O(1).
/// - After `unregister(id)` returns, no lookup returns `id`, and `id` is in no topic.
/// - A topic nobody is subscribed to any more takes no memory: the index keeps no empty
///   entries, so memory does not grow with topics that were once used.
/// - Safe under concurrent calls from many threads; no method awaits or does I/O.
#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait ConnectionRegistry: Send + Sync + 'static {
    /// Adds a connection. The record is shared, not copied: the transport's session holds
    /// the same `Arc` (one record per connection, not one per holder).
    ///
    /// # Errors
    /// MUST return [`RegisterError::Duplicate`] if the id is already registered, and leave
    /// the registered connection unchanged.
    fn register(
        &self,
        connection: Arc<Connection>,
        sink: Arc<dyn ConnectionSink>,
    ) -> Result<(), RegisterError>;

    /// Removes a connection from every index, every topic included, and returns it; `None`
    /// if it was not registered (so a second call is harmless).
    fn unregister(&self, id: ConnectionId) -> Option<Registered>;

    /// The connection with this id.
    fn get(&self, id: ConnectionId) -> Option<Registered>;

    /// Every connection of `user`.
    fn find_by_user(&self, user: &UserId) -> Vec<Registered>;

    /// Every connection holding `role`.
    fn find_by_role(&self, role: &Role) -> Vec<Registered>;

    /// Every connection.
    fn all(&self) -> Vec<Registered>;

    /// How many connections are registered.
    fn count(&self) -> usize;

    /// Adds connection `id` to `topic`'s stream. Returns `Ok(true)` when it was newly
    /// subscribed and `Ok(false)` when it already was (nothing changes, and the topic does
    /// not count twice towards the limit).
    ///
    /// # Errors
    /// - MUST return [`TopicError::NotRegistered`] when `id` is not registered.
    /// - MUST return [`TopicError::TooManyTopics`] with `max: max_topics` when the connection
    ///   already holds `max_topics` topics and `topic` is not one of them. The check and the
    ///   insert are one atomic step: concurrent subscribes of one connection never take it
    ///   past `max_topics`.
    ///
    /// On error nothing changes.
    fn subscribe(
        &self,
        id: ConnectionId,
        topic: &TopicName,
        max_topics: usize,
    ) -> Result<bool, TopicError>;

    /// Removes connection `id` from `topic`'s stream. Returns whether it was subscribed
    /// (`false` also when `id` is not registered, so a second call is harmless).
    ///
    /// # Contract
    /// When this was the topic's last subscriber, the topic leaves the index:
    /// `topic_count(topic) == 0` and `find_by_topic(topic)` is empty.
    fn unsubscribe(&self, id: ConnectionId, topic: &TopicName) -> bool;

    /// Every connection subscribed to `topic`.
    fn find_by_topic(&self, topic: &TopicName) -> Vec<Registered>;

    /// The topics connection `id` is subscribed to, sorted; empty when it is not registered.
    fn topics_of(&self, id: ConnectionId) -> Vec<TopicName>;

    /// How many connections are subscribed to `topic`.
    ///
    /// # Contract
    /// O(1): one lookup, no scan of the subscribers.
    fn topic_count(&self, topic: &TopicName) -> usize;

    /// Every connection in `stream`: [`find_by_user`](ConnectionRegistry::find_by_user),
    /// [`find_by_role`](ConnectionRegistry::find_by_role),
    /// [`find_by_topic`](ConnectionRegistry::find_by_topic) or
    /// [`all`](ConnectionRegistry::all) by the stream's kind.
    fn find_stream(&self, stream: &StreamName) -> Vec<Registered> {
        match stream {
            StreamName::Broadcast => self.all(),
            StreamName::User(user) => self.find_by_user(user),
            StreamName::Role(role) => self.find_by_role(role),
            StreamName::Topic(topic) => self.find_by_topic(topic),
        }
    }
}
