//! An in-memory [`ConnectionRegistry`]: the live connections of one node, indexed by
//! connection id, by user, by role and by topic.
//!
//! [`InMemoryRegistry`] keeps five maps behind one [`parking_lot::RwLock`]:
//!
//! - `by_id`: connection id → [`Registered`] (the domain record and its sink),
//! - `by_user`: user id → set of connection ids,
//! - `by_role`: role → set of connection ids,
//! - `by_topic`: topic → set of subscribed connection ids,
//! - `topics`: connection id → its topics (for `topics_of`, the limit and `unregister`).
//!
//! `find_by_user`, `find_by_role` and `find_by_topic` read one index entry and resolve its
//! ids, so their cost grows with the number of matches, not with the number of registered
//! connections; `topic_count` is the size of one entry. Every mutation updates the maps
//! under one write lock, so a reader never sees a connection in one index and not in
//! another, and a subscribe's limit check and insert are one step. Entries whose set becomes
//! empty are removed, so the maps never keep users, roles or topics that have no
//! connection, nor connections without topics in `topics`.
//!
//! Locks are held only for map operations and reference-count increments: records are built
//! before the write lock is taken, and sinks handed back by [`ConnectionRegistry::unregister`]
//! or rejected by [`ConnectionRegistry::register`] are dropped after it is released.
//! [`ConnectionRegistry::count`] reads an atomic counter and never takes the lock.
//!
//! The registry is checked by `realtime-testkit`'s registry contract suite and by a
//! model-based property test against `realtime_core::route` (see `tests/it`).
//!
//! **Architecture Invariant:** this crate never does I/O and never awaits; it depends only on
//! `realtime-core`, `realtime-ports` and `parking_lot`.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::RwLock;
use realtime_core::{Connection, ConnectionId, ConnectionSet, Role, TopicName, UserId};
use realtime_ports::{ConnectionRegistry, ConnectionSink, RegisterError, Registered, TopicError};

/// The live connections of this node, in memory, indexed by id, user, role and topic.
///
/// Safe to share between threads (`Arc<InMemoryRegistry>` or `Arc<dyn ConnectionRegistry>`);
/// every method is synchronous, never awaits and never does I/O.
///
/// # Cost
/// - [`get`](ConnectionRegistry::get), [`register`](ConnectionRegistry::register): one hash
///   lookup per index touched (id, user, and each role of the connection).
/// - [`subscribe`](ConnectionRegistry::subscribe),
///   [`unsubscribe`](ConnectionRegistry::unsubscribe): a few hash and tree lookups,
///   independent of the number of subscribers; [`unregister`](ConnectionRegistry::unregister)
///   adds one per topic the connection held.
/// - [`find_by_user`](ConnectionRegistry::find_by_user),
///   [`find_by_role`](ConnectionRegistry::find_by_role),
///   [`find_by_topic`](ConnectionRegistry::find_by_topic): proportional to the number of
///   matches; the only allocation is the returned `Vec`, sized exactly.
/// - [`all`](ConnectionRegistry::all): proportional to the number of connections.
/// - [`count`](ConnectionRegistry::count): O(1), lock-free;
///   [`topic_count`](ConnectionRegistry::topic_count): O(1) under the read lock.
pub struct InMemoryRegistry {
    /// The maps; every mutation updates all of them under one write lock.
    indexes: RwLock<Indexes>,
    /// Number of registered connections, updated under the write lock so [`count`] never
    /// has to take the lock.
    ///
    /// [`count`]: ConnectionRegistry::count
    count: AtomicUsize,
}

/// The maps, always updated together.
#[derive(Default)]
struct Indexes {
    /// Every registered connection.
    by_id: HashMap<ConnectionId, Registered>,
    /// The ids of each user's connections; no entry has an empty set.
    by_user: HashMap<UserId, ConnectionSet>,
    /// The ids of the connections holding each role; no entry has an empty set.
    by_role: HashMap<Role, ConnectionSet>,
    /// The ids of the connections subscribed to each topic; no entry has an empty set.
    by_topic: HashMap<TopicName, ConnectionSet>,
    /// The topics of each registered connection that has any; no entry has an empty set,
    /// and every key is in `by_id`.
    topics: HashMap<ConnectionId, BTreeSet<TopicName>>,
}

impl Indexes {
    /// Clones the records of `ids` into a `Vec` of exactly the right capacity.
    ///
    /// Every id in an index is in `by_id` (the maps change together), so the `filter_map`
    /// drops nothing; it only avoids a panic path.
    fn resolve<'a>(&self, ids: impl ExactSizeIterator<Item = &'a ConnectionId>) -> Vec<Registered> {
        let mut out = Vec::with_capacity(ids.len());
        out.extend(ids.filter_map(|id| self.by_id.get(id).cloned()));
        out
    }

    /// Adds `id` to the set under `key` in `index`, making the entry if there is none.
    fn add_to<K: std::hash::Hash + Eq>(
        index: &mut HashMap<K, ConnectionSet>,
        key: K,
        id: ConnectionId,
    ) {
        match index.entry(key) {
            Entry::Occupied(mut ids) => {
                ids.get_mut().insert(id);
            }
            Entry::Vacant(entry) => {
                entry.insert(ConnectionSet::new(id));
            }
        }
    }

    /// Removes `id` from the set under `key` in `index`, and the entry itself if the set
    /// becomes empty.
    fn remove_from<K: std::hash::Hash + Eq>(
        index: &mut HashMap<K, ConnectionSet>,
        key: &K,
        id: &ConnectionId,
    ) {
        if index.get_mut(key).and_then(|ids| ids.remove(id)) == Some(true) {
            index.remove(key);
        }
    }
}

impl InMemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        InMemoryRegistry { indexes: RwLock::new(Indexes::default()), count: AtomicUsize::new(0) }
    }
}

impl Default for InMemoryRegistry {
    fn default() -> Self {
        InMemoryRegistry::new()
    }
}

impl fmt::Debug for InMemoryRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryRegistry").field("count", &self.count()).finish_non_exhaustive()
    }
}

impl ConnectionRegistry for InMemoryRegistry {
    fn register(
        &self,
        connection: Arc<Connection>,
        sink: Arc<dyn ConnectionSink>,
    ) -> Result<(), RegisterError> {
        let id = connection.id;
        // Built before the lock is taken; on a duplicate it is dropped after the lock is
        // released (it is declared before the guard, so it is dropped after it).
        let registered = Registered { connection, sink };
        let mut indexes = self.indexes.write();
        if indexes.by_id.contains_key(&id) {
            return Err(RegisterError::Duplicate(id));
        }
        let conn = Arc::clone(&registered.connection);
        Indexes::add_to(&mut indexes.by_user, conn.user_id.clone(), id);
        for role in &conn.roles {
            Indexes::add_to(&mut indexes.by_role, role.clone(), id);
        }
        indexes.by_id.insert(id, registered);
        self.count.store(indexes.by_id.len(), Ordering::Release);
        Ok(())
    }

    fn unregister(&self, id: ConnectionId) -> Option<Registered> {
        let mut indexes = self.indexes.write();
        let removed = indexes.by_id.remove(&id)?;
        let conn = &removed.connection;
        Indexes::remove_from(&mut indexes.by_user, &conn.user_id, &id);
        for role in &conn.roles {
            Indexes::remove_from(&mut indexes.by_role, role, &id);
        }
        let topics = indexes.topics.remove(&id).unwrap_or_default();
        for topic in &topics {
            Indexes::remove_from(&mut indexes.by_topic, topic, &id);
        }
        self.count.store(indexes.by_id.len(), Ordering::Release);
        drop(indexes);
        drop(topics);
        Some(removed)
    }

    fn get(&self, id: ConnectionId) -> Option<Registered> {
        self.indexes.read().by_id.get(&id).cloned()
    }

    fn find_by_user(&self, user: &UserId) -> Vec<Registered> {
        let indexes = self.indexes.read();
        match indexes.by_user.get(user) {
            Some(ids) => indexes.resolve(ids.iter()),
            None => Vec::new(),
        }
    }

    fn find_by_role(&self, role: &Role) -> Vec<Registered> {
        let indexes = self.indexes.read();
        match indexes.by_role.get(role) {
            Some(ids) => indexes.resolve(ids.iter()),
            None => Vec::new(),
        }
    }

    fn all(&self) -> Vec<Registered> {
        self.indexes.read().by_id.values().cloned().collect()
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    fn subscribe(
        &self,
        id: ConnectionId,
        topic: &TopicName,
        max_topics: usize,
    ) -> Result<bool, TopicError> {
        // The two keys a new subscription needs, allocated before the lock is taken; unused
        // ones are dropped after it is released (declared before the guard).
        let (index_key, own_key) = (topic.clone(), topic.clone());
        let mut indexes = self.indexes.write();
        if !indexes.by_id.contains_key(&id) {
            return Err(TopicError::NotRegistered(id));
        }
        let held = indexes.topics.get(&id);
        if held.is_some_and(|topics| topics.contains(topic)) {
            return Ok(false);
        }
        if held.map_or(0, BTreeSet::len) >= max_topics {
            return Err(TopicError::TooManyTopics { max: max_topics });
        }
        indexes.topics.entry(id).or_default().insert(own_key);
        Indexes::add_to(&mut indexes.by_topic, index_key, id);
        Ok(true)
    }

    fn unsubscribe(&self, id: ConnectionId, topic: &TopicName) -> bool {
        let mut indexes = self.indexes.write();
        let Some(topics) = indexes.topics.get_mut(&id) else {
            return false;
        };
        if !topics.remove(topic) {
            return false;
        }
        if topics.is_empty() {
            indexes.topics.remove(&id);
        }
        Indexes::remove_from(&mut indexes.by_topic, topic, &id);
        true
    }

    fn find_by_topic(&self, topic: &TopicName) -> Vec<Registered> {
        let indexes = self.indexes.read();
        match indexes.by_topic.get(topic) {
            Some(ids) => indexes.resolve(ids.iter()),
            None => Vec::new(),
        }
    }

    fn topics_of(&self, id: ConnectionId) -> Vec<TopicName> {
        let indexes = self.indexes.read();
        indexes.topics.get(&id).map_or_else(Vec::new, |topics| topics.iter().cloned().collect())
    }

    fn topic_count(&self, topic: &TopicName) -> usize {
        self.indexes.read().by_topic.get(topic).map_or(0, ConnectionSet::count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use realtime_testkit::RecordingSink;
    use realtime_testkit::fixtures::{connection, connection_id, topic};

    fn sink() -> Arc<dyn ConnectionSink> {
        Arc::new(RecordingSink::new())
    }

    /// Entry counts of the three maps: (ids, users, roles).
    fn sizes(registry: &InMemoryRegistry) -> (usize, usize, usize) {
        let indexes = registry.indexes.read();
        (indexes.by_id.len(), indexes.by_user.len(), indexes.by_role.len())
    }

    /// Entry counts of the topic maps: (topics, connections with topics).
    fn topic_sizes(registry: &InMemoryRegistry) -> (usize, usize) {
        let indexes = registry.indexes.read();
        (indexes.by_topic.len(), indexes.topics.len())
    }

    #[test]
    fn topic_entries_are_removed_when_their_last_subscriber_goes() {
        let registry = InMemoryRegistry::new();
        for n in 1..=3 {
            assert_eq!(registry.register(Arc::new(connection(n, "alice", &[])), sink()), Ok(()));
        }
        let id = connection_id;
        let sub = |n, t| registry.subscribe(id(n), &topic(t), 8);
        assert_eq!(sub(1, "a"), Ok(true));
        assert_eq!(sub(1, "b"), Ok(true));
        assert_eq!(sub(2, "a"), Ok(true));
        assert_eq!(topic_sizes(&registry), (2, 2));
        assert_eq!(sub(3, "c"), Ok(true));
        assert_eq!(topic_sizes(&registry), (3, 3));
        assert!(registry.unsubscribe(id(3), &topic("c")));
        assert_eq!(topic_sizes(&registry), (2, 2), "c and connection 3's set are gone");
        assert!(registry.unsubscribe(id(1), &topic("a")));
        assert_eq!(topic_sizes(&registry), (2, 2), "a still has 2, 1 still has b");
        assert!(registry.unregister(id(1)).is_some());
        assert_eq!(topic_sizes(&registry), (1, 1), "b is gone with connection 1");
        assert!(registry.unregister(id(2)).is_some());
        assert_eq!(topic_sizes(&registry), (0, 0));
        // Refused subscriptions leave nothing behind either.
        assert_eq!(sub(2, "z"), Err(TopicError::NotRegistered(id(2))));
        assert_eq!(
            registry.subscribe(id(3), &topic("z"), 0),
            Err(TopicError::TooManyTopics { max: 0 })
        );
        assert_eq!(topic_sizes(&registry), (0, 0));
    }

    /// (register?, connection number, user, roles, map sizes afterwards).
    type Step = (bool, u128, &'static str, &'static [&'static str], (usize, usize, usize));

    #[test]
    fn index_entries_are_removed_when_their_last_connection_goes() {
        let registry = InMemoryRegistry::new();
        let steps: &[Step] = &[
            (true, 1, "alice", &["admin", "ops"], (1, 1, 2)),
            (true, 2, "alice", &["ops"], (2, 1, 2)),
            (true, 3, "bob", &["viewer"], (3, 2, 3)),
            (false, 1, "alice", &["admin", "ops"], (2, 2, 2)),
            (false, 3, "bob", &["viewer"], (1, 1, 1)),
            (false, 2, "alice", &["ops"], (0, 0, 0)),
        ];
        for (register, id, user, roles, expected) in steps {
            if *register {
                let result = registry.register(Arc::new(connection(*id, user, roles)), sink());
                assert_eq!(result, Ok(()), "register {id}");
            } else {
                let removed = registry.unregister(connection(*id, user, roles).id);
                assert!(removed.is_some(), "unregister {id}");
            }
            assert_eq!(sizes(&registry), *expected, "after {register} {id}");
            assert_eq!(registry.count(), expected.0);
        }
    }

    #[test]
    fn debug_shows_the_count_and_no_sinks() {
        let registry = InMemoryRegistry::default();
        assert_eq!(registry.register(Arc::new(connection(1, "alice", &[])), sink()), Ok(()));
        assert_eq!(format!("{registry:?}"), "InMemoryRegistry { count: 1, .. }");
    }
}
