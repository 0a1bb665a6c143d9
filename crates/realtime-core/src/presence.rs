//! [`PresenceBook`]: who is in each scope (online, a topic), by user and connection: the
//! bookkeeping every presence adapter needs to answer "first" and "last" at once.

use std::collections::HashMap;
use std::hash::Hash;

use crate::{ConnectionId, ConnectionSet, UserId};

/// Connections of each user in one scope (most users have one: held inline).
type Members = HashMap<UserId, ConnectionSet>;

/// The members of every scope, keyed by `K`. A scope nobody is in holds no memory.
#[derive(Debug, Clone)]
pub struct PresenceBook<K> {
    scopes: HashMap<K, Members>,
}

impl<K> Default for PresenceBook<K> {
    fn default() -> Self {
        PresenceBook { scopes: HashMap::new() }
    }
}

impl<K: Hash + Eq + Clone> PresenceBook<K> {
    /// `connection` of `user` entered `scope`; true when it is the user's first there (false
    /// for a connection already there).
    pub fn join(&mut self, scope: &K, user: &UserId, connection: ConnectionId) -> bool {
        let members = match self.scopes.get_mut(scope) {
            Some(members) => members,
            None => self.scopes.entry(scope.clone()).or_default(),
        };
        match members.get_mut(user) {
            Some(connections) => {
                // Never the first: a user's entry has at least one connection.
                connections.insert(connection);
                false
            }
            None => {
                members.insert(user.clone(), ConnectionSet::new(connection));
                true
            }
        }
    }

    /// `connection` of `user` left `scope`; true when it was the user's last there (false for
    /// a connection that was not there).
    pub fn leave(&mut self, scope: &K, user: &UserId, connection: ConnectionId) -> bool {
        let Some(members) = self.scopes.get_mut(scope) else { return false };
        let Some(connections) = members.get_mut(user) else { return false };
        if connections.remove(&connection) != Some(true) {
            return false;
        }
        members.remove(user);
        if members.is_empty() {
            self.scopes.remove(scope);
        }
        true
    }

    /// How many connections `user` has in `scope`.
    pub fn connections(&self, scope: &K, user: &UserId) -> usize {
        self.scopes.get(scope).and_then(|m| m.get(user)).map_or(0, ConnectionSet::count)
    }

    /// The users in `scope` with their connection counts, sorted by user id.
    pub fn members(&self, scope: &K) -> Vec<(UserId, usize)> {
        let mut members: Vec<(UserId, usize)> = self
            .scopes
            .get(scope)
            .into_iter()
            .flatten()
            .map(|(user, connections)| (user.clone(), connections.count()))
            .collect();
        members.sort_by(|a, b| a.0.cmp(&b.0));
        members
    }

    /// How many scopes have members.
    pub fn scope_count(&self) -> usize {
        self.scopes.len()
    }

    /// Every (scope, user, connection), in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = (&K, &UserId, ConnectionId)> {
        self.scopes.iter().flat_map(|(scope, members)| {
            members.iter().flat_map(move |(user, connections)| {
                connections.iter().map(move |connection| (scope, user, *connection))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(raw: &str) -> UserId {
        UserId::new(raw).unwrap_or_else(|e| panic!("{e}"))
    }

    fn id(n: u128) -> ConnectionId {
        ConnectionId::from_uuid(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn first_in_and_last_out_per_user_and_scope() {
        let mut book = PresenceBook::<&str>::default();
        let (alice, bob) = (user("alice"), user("bob"));
        assert!(book.join(&"a", &alice, id(1)));
        assert!(!book.join(&"a", &alice, id(2)), "a second tab");
        assert!(!book.join(&"a", &alice, id(2)), "the same connection again");
        assert!(book.join(&"b", &alice, id(1)), "another scope");
        assert!(book.join(&"a", &bob, id(3)));
        assert_eq!(book.members(&"a"), [(alice.clone(), 2), (bob.clone(), 1)]);
        assert_eq!(book.entries().count(), 4);
        assert!(!book.leave(&"a", &alice, id(1)));
        assert!(!book.leave(&"a", &alice, id(1)), "not there any more");
        assert!(book.leave(&"a", &alice, id(2)));
        assert!(book.leave(&"a", &bob, id(3)));
        assert_eq!(book.scope_count(), 1, "an empty scope holds nothing");
        assert_eq!(book.connections(&"b", &alice), 1);
    }
}
