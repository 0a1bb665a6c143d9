//! [`InMemoryPresence`]: who is online and who is in each topic, on this node.

use std::collections::HashMap;

use async_trait::async_trait;
use parking_lot::Mutex;
use realtime_core::{ConnectionId, TopicName, UserId};
use realtime_ports::{Presence, PresenceError, PresenceScope, TopicMember, UserPresence};

/// Connections of each user in one scope. A user has a handful of connections, so a
/// vector beats a set.
type Members = HashMap<UserId, Vec<ConnectionId>>;

/// The in-process [`Presence`]: exact, for one node. Scopes nobody is in hold no memory.
#[derive(Debug, Default)]
pub struct InMemoryPresence {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    online: Members,
    topics: HashMap<TopicName, Members>,
}

impl InMemoryPresence {
    /// Empty presence.
    pub fn new() -> InMemoryPresence {
        InMemoryPresence::default()
    }

    /// How many topics have members (for tests: nobody's topics hold no memory).
    pub fn topic_count(&self) -> usize {
        self.state.lock().topics.len()
    }
}

/// Adds `connection` to `user`'s entry; true when it is the user's first.
fn add(members: &mut Members, user: &UserId, connection: ConnectionId) -> bool {
    let connections = members.entry(user.clone()).or_default();
    if connections.contains(&connection) {
        return false;
    }
    connections.push(connection);
    connections.len() == 1
}

/// Removes `connection` from `user`'s entry; true when it was the user's last.
fn remove(members: &mut Members, user: &UserId, connection: ConnectionId) -> bool {
    let Some(connections) = members.get_mut(user) else { return false };
    let Some(at) = connections.iter().position(|c| *c == connection) else { return false };
    connections.swap_remove(at);
    if connections.is_empty() {
        members.remove(user);
        return true;
    }
    false
}

#[async_trait]
impl Presence for InMemoryPresence {
    fn join(&self, scope: PresenceScope<'_>, user: &UserId, connection: ConnectionId) -> bool {
        let mut state = self.state.lock();
        match scope {
            PresenceScope::Online => add(&mut state.online, user, connection),
            PresenceScope::Topic(topic) => {
                add(state.topics.entry(topic.clone()).or_default(), user, connection)
            }
        }
    }

    fn leave(&self, scope: PresenceScope<'_>, user: &UserId, connection: ConnectionId) -> bool {
        let mut state = self.state.lock();
        match scope {
            PresenceScope::Online => remove(&mut state.online, user, connection),
            PresenceScope::Topic(topic) => {
                let Some(members) = state.topics.get_mut(topic) else { return false };
                let last = remove(members, user, connection);
                if members.is_empty() {
                    state.topics.remove(topic);
                }
                last
            }
        }
    }

    async fn user(&self, user: &UserId) -> Result<UserPresence, PresenceError> {
        let connections = self.state.lock().online.get(user).map_or(0, Vec::len);
        Ok(UserPresence { user_id: user.clone(), online: connections > 0, connections })
    }

    async fn topic(&self, topic: &TopicName) -> Result<Vec<TopicMember>, PresenceError> {
        let mut members: Vec<TopicMember> = self
            .state
            .lock()
            .topics
            .get(topic)
            .into_iter()
            .flatten()
            .map(|(user, connections)| TopicMember {
                user_id: user.clone(),
                connections: connections.len(),
            })
            .collect();
        members.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        Ok(members)
    }
}
