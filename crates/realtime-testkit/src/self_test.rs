//! Tests of the test suites themselves: a naive registry passes them, and registries with
//! planted bugs fail them (so the suites can fail).

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use parking_lot::Mutex;
use realtime_core::{
    Connection, ConnectionId, Role, StreamName, Target, TopicName, UserId, route, route_stream,
};
use realtime_ports::{ConnectionRegistry, ConnectionSink, RegisterError, Registered, TopicError};

use crate::registry_contract;
use crate::registry_model::check_registry_against_model_with_cases;

/// A bug planted in [`NaiveRegistry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bug {
    None,
    /// `register` accepts a second connection with an existing id.
    AcceptsDuplicates,
    /// `unregister` forgets to remove the connection from role lookups.
    StaleRoleIndex,
    /// `find_by_user` returns every match twice.
    UserLookupRepeats,
    /// `unregister` leaves the connection's topics behind (counted, and kept for its id).
    UnregisterKeepsTopics,
    /// `subscribe` never refuses for the limit.
    IgnoresTopicLimit,
    /// `subscribe` answers `Ok(true)` for a topic already held.
    ResubscribeIsNew,
}

/// The simplest correct registry (a scanned `Vec`), unless a bug is planted.
#[derive(Debug)]
struct NaiveRegistry {
    bug: Bug,
    live: Mutex<Vec<Registered>>,
    /// Unregistered connections still returned by role lookups under `Bug::StaleRoleIndex`.
    ghosts: Mutex<Vec<Registered>>,
    /// The topics of each connection; only taken while `live` is held, so the two change
    /// together.
    topics: Mutex<BTreeMap<ConnectionId, BTreeSet<TopicName>>>,
}

impl NaiveRegistry {
    fn make(bug: Bug) -> impl Fn() -> Arc<dyn ConnectionRegistry> {
        move || {
            Arc::new(NaiveRegistry {
                bug,
                live: Mutex::default(),
                ghosts: Mutex::default(),
                topics: Mutex::default(),
            }) as Arc<dyn ConnectionRegistry>
        }
    }

    fn select(&self, target: &Target) -> Vec<Registered> {
        let live = self.live.lock();
        live.iter().filter(|r| !route(target, [&*r.connection]).is_empty()).cloned().collect()
    }
}

impl ConnectionRegistry for NaiveRegistry {
    fn register(
        &self,
        connection: Arc<Connection>,
        sink: Arc<dyn ConnectionSink>,
    ) -> Result<(), RegisterError> {
        let mut live = self.live.lock();
        if self.bug != Bug::AcceptsDuplicates
            && live.iter().any(|r| r.connection.id == connection.id)
        {
            return Err(RegisterError::Duplicate(connection.id));
        }
        live.push(Registered { connection, sink });
        Ok(())
    }

    fn unregister(&self, id: ConnectionId) -> Option<Registered> {
        let mut live = self.live.lock();
        let index = live.iter().position(|r| r.connection.id == id)?;
        let removed = live.remove(index);
        if self.bug != Bug::UnregisterKeepsTopics {
            self.topics.lock().remove(&id);
        }
        if self.bug == Bug::StaleRoleIndex {
            self.ghosts.lock().push(removed.clone());
        }
        Some(removed)
    }

    fn get(&self, id: ConnectionId) -> Option<Registered> {
        self.select(&Target::Connection(id)).into_iter().next()
    }

    fn find_by_user(&self, user: &UserId) -> Vec<Registered> {
        let found = self.select(&Target::User(user.clone()));
        if self.bug == Bug::UserLookupRepeats {
            return found.iter().chain(&found).cloned().collect();
        }
        found
    }

    fn find_by_role(&self, role: &Role) -> Vec<Registered> {
        let mut found = self.select(&Target::Role(role.clone()));
        found.extend(self.ghosts.lock().iter().filter(|r| r.connection.has_role(role)).cloned());
        found
    }

    fn all(&self) -> Vec<Registered> {
        self.live.lock().clone()
    }

    fn count(&self) -> usize {
        self.live.lock().len()
    }

    fn subscribe(
        &self,
        id: ConnectionId,
        topic: &TopicName,
        max_topics: usize,
    ) -> Result<bool, TopicError> {
        let live = self.live.lock();
        if !live.iter().any(|r| r.connection.id == id) {
            return Err(TopicError::NotRegistered(id));
        }
        let mut topics = self.topics.lock();
        let held = topics.entry(id).or_default();
        if held.contains(topic) {
            return Ok(self.bug == Bug::ResubscribeIsNew);
        }
        if held.len() >= max_topics && self.bug != Bug::IgnoresTopicLimit {
            return Err(TopicError::TooManyTopics { max: max_topics });
        }
        Ok(held.insert(topic.clone()))
    }

    fn unsubscribe(&self, id: ConnectionId, topic: &TopicName) -> bool {
        let _live = self.live.lock();
        self.topics.lock().get_mut(&id).is_some_and(|held| held.remove(topic))
    }

    fn find_by_topic(&self, topic: &TopicName) -> Vec<Registered> {
        let live = self.live.lock();
        let topics = self.topics.lock();
        let none = BTreeSet::new();
        let stream = StreamName::Topic(topic.clone());
        live.iter()
            .filter(|r| {
                let held = topics.get(&r.connection.id).unwrap_or(&none);
                !route_stream(&stream, [(&*r.connection, held)]).is_empty()
            })
            .cloned()
            .collect()
    }

    fn topics_of(&self, id: ConnectionId) -> Vec<TopicName> {
        let _live = self.live.lock();
        self.topics.lock().get(&id).map_or_else(Vec::new, |held| held.iter().cloned().collect())
    }

    fn topic_count(&self, topic: &TopicName) -> usize {
        let _live = self.live.lock();
        self.topics.lock().values().filter(|held| held.contains(topic)).count()
    }
}

crate::registry_contract_tests!(naive_contract, NaiveRegistry::make(Bug::None));

#[test]
fn naive_registry_agrees_with_the_model() {
    check_registry_against_model_with_cases(NaiveRegistry::make(Bug::None), 64);
}

/// Whether `check` panics for a registry with `bug`.
fn fails(bug: Bug, check: fn(&dyn Fn() -> Arc<dyn ConnectionRegistry>)) -> bool {
    let make = NaiveRegistry::make(bug);
    catch_unwind(AssertUnwindSafe(|| check(&make))).is_err()
}

#[test]
fn contract_suite_catches_planted_bugs() {
    type Check = fn(&dyn Fn() -> Arc<dyn ConnectionRegistry>);
    let cases: &[(Bug, &str, Check)] = &[
        (Bug::AcceptsDuplicates, "duplicate", |m| {
            registry_contract::duplicate_id_is_rejected_and_original_kept(m)
        }),
        (Bug::AcceptsDuplicates, "concurrent", |m| {
            registry_contract::concurrent_operations_end_consistent(m)
        }),
        (Bug::UserLookupRepeats, "concurrent", |m| {
            registry_contract::concurrent_operations_end_consistent(m)
        }),
        (Bug::StaleRoleIndex, "unregister", |m| {
            registry_contract::unregister_removes_from_every_index(m)
        }),
        (Bug::UserLookupRepeats, "find_by_user", |m| {
            registry_contract::find_by_user_returns_every_connection_of_the_user(m)
        }),
        (Bug::UnregisterKeepsTopics, "unregister topics", |m| {
            registry_contract::unregister_removes_from_every_topic(m)
        }),
        (Bug::UnregisterKeepsTopics, "registration", |m| {
            registry_contract::subscribe_requires_a_registered_connection(m)
        }),
        (Bug::UnregisterKeepsTopics, "concurrent topics", |m| {
            registry_contract::concurrent_topic_operations_end_consistent(m)
        }),
        (Bug::IgnoresTopicLimit, "limit", |m| {
            registry_contract::subscribe_enforces_the_topic_limit(m)
        }),
        (Bug::IgnoresTopicLimit, "concurrent topics", |m| {
            registry_contract::concurrent_topic_operations_end_consistent(m)
        }),
        (Bug::ResubscribeIsNew, "idempotent", |m| registry_contract::subscribe_is_idempotent(m)),
        (Bug::ResubscribeIsNew, "concurrent topics", |m| {
            registry_contract::concurrent_topic_operations_end_consistent(m)
        }),
    ];
    for (bug, what, check) in cases {
        assert!(fails(*bug, *check), "the {what} check misses {bug:?}");
    }
}

#[test]
fn model_test_catches_planted_bugs() {
    for bug in [
        Bug::AcceptsDuplicates,
        Bug::StaleRoleIndex,
        Bug::UserLookupRepeats,
        Bug::UnregisterKeepsTopics,
        Bug::IgnoresTopicLimit,
        Bug::ResubscribeIsNew,
    ] {
        assert!(
            fails(bug, |m| check_registry_against_model_with_cases(m, 64)),
            "the model test misses {bug:?}"
        );
    }
}
