//! Tests of the test suites themselves: a naive registry passes them, and registries with
//! planted bugs fail them (so the suites can fail).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use parking_lot::Mutex;
use realtime_core::{Connection, ConnectionId, Role, Target, UserId, route};
use realtime_ports::{ConnectionRegistry, ConnectionSink, RegisterError, Registered};

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
}

/// The simplest correct registry (a scanned `Vec`), unless a bug is planted.
#[derive(Debug)]
struct NaiveRegistry {
    bug: Bug,
    live: Mutex<Vec<Registered>>,
    /// Unregistered connections still returned by role lookups under `Bug::StaleRoleIndex`.
    ghosts: Mutex<Vec<Registered>>,
}

impl NaiveRegistry {
    fn make(bug: Bug) -> impl Fn() -> Arc<dyn ConnectionRegistry> {
        move || {
            Arc::new(NaiveRegistry { bug, live: Mutex::default(), ghosts: Mutex::default() })
                as Arc<dyn ConnectionRegistry>
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
        connection: Connection,
        sink: Arc<dyn ConnectionSink>,
    ) -> Result<(), RegisterError> {
        let mut live = self.live.lock();
        if self.bug != Bug::AcceptsDuplicates
            && live.iter().any(|r| r.connection.id == connection.id)
        {
            return Err(RegisterError::Duplicate(connection.id));
        }
        live.push(Registered { connection: Arc::new(connection), sink });
        Ok(())
    }

    fn unregister(&self, id: ConnectionId) -> Option<Registered> {
        let mut live = self.live.lock();
        let index = live.iter().position(|r| r.connection.id == id)?;
        let removed = live.remove(index);
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
    ];
    for (bug, what, check) in cases {
        assert!(fails(*bug, *check), "the {what} check misses {bug:?}");
    }
}

#[test]
fn model_test_catches_planted_bugs() {
    for bug in [Bug::AcceptsDuplicates, Bug::StaleRoleIndex, Bug::UserLookupRepeats] {
        assert!(
            fails(bug, |m| check_registry_against_model_with_cases(m, 64)),
            "the model test misses {bug:?}"
        );
    }
}
