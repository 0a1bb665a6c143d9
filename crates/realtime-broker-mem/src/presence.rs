//! [`InMemoryPresence`]: who is online and who is in each topic, on this node.

use async_trait::async_trait;
use parking_lot::Mutex;
use realtime_core::{ConnectionId, PresenceBook, TopicName, UserId};
use realtime_ports::{Presence, PresenceError, PresenceScope, TopicMember, UserPresence};

/// The in-process [`Presence`]: exact, for one node. Scopes nobody is in hold no memory.
#[derive(Debug, Default)]
pub struct InMemoryPresence {
    /// By scope: `None` is online, `Some(topic)` a topic.
    book: Mutex<PresenceBook<Option<TopicName>>>,
}

impl InMemoryPresence {
    /// Empty presence.
    pub fn new() -> InMemoryPresence {
        InMemoryPresence::default()
    }

    /// How many topics have members (for tests: nobody's topics hold no memory).
    pub fn topic_count(&self) -> usize {
        let book = self.book.lock();
        book.scope_count() - usize::from(!book.members(&None).is_empty())
    }
}

/// The book's key of `scope`.
fn key(scope: PresenceScope<'_>) -> Option<TopicName> {
    match scope {
        PresenceScope::Online => None,
        PresenceScope::Topic(topic) => Some(topic.clone()),
    }
}

#[async_trait]
impl Presence for InMemoryPresence {
    fn join(&self, scope: PresenceScope<'_>, user: &UserId, connection: ConnectionId) -> bool {
        self.book.lock().join(&key(scope), user, connection)
    }

    fn leave(&self, scope: PresenceScope<'_>, user: &UserId, connection: ConnectionId) -> bool {
        self.book.lock().leave(&key(scope), user, connection)
    }

    async fn user(&self, user: &UserId) -> Result<UserPresence, PresenceError> {
        let connections = self.book.lock().connections(&None, user);
        Ok(UserPresence { user_id: user.clone(), online: connections > 0, connections })
    }

    async fn topic(&self, topic: &TopicName) -> Result<Vec<TopicMember>, PresenceError> {
        let members = self.book.lock().members(&Some(topic.clone()));
        Ok(members
            .into_iter()
            .map(|(user_id, connections)| TopicMember { user_id, connections })
            .collect())
    }

    async fn online_count(&self) -> Result<usize, PresenceError> {
        let book = self.book.lock();
        Ok(book.members(&None).iter().map(|(_, connections)| connections).sum())
    }
}
