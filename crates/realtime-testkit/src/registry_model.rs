//! Model-based property test of a [`ConnectionRegistry`]: random operation sequences are
//! applied to the registry and to a naive model (a `Vec<Connection>`), and after every step
//! every lookup must agree exactly with [`realtime_core::route`] over the model.
//!
//! Operations draw from small pools (ids `0..24`, four users, four roles), so duplicates,
//! users with several connections, overlapping roles and unregistering unknown ids all occur
//! often. Lookups also ask for ids, users and roles that are never registered.

use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use realtime_core::{Connection, ConnectionId, Target, route};
use realtime_ports::{ConnectionRegistry, RegisterError, Registered};

use crate::RecordingSink;
use crate::fixtures::{connection, connection_id, role, user};

/// Registered ids are drawn from `0..REGISTER_IDS`.
const REGISTER_IDS: u128 = 24;
/// Unregistered and looked-up ids are drawn from `0..LOOKUP_IDS` (a few are never used).
const LOOKUP_IDS: u128 = 28;
/// Users connections belong to.
const USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];
/// Roles connections may hold.
const ROLES: [&str; 4] = ["admin", "ops", "viewer", "billing"];
/// Looked up, never registered.
const UNKNOWN_USER: &str = "eve";
/// Looked up, never held.
const UNKNOWN_ROLE: &str = "ghost";

/// Default number of generated sequences.
pub const DEFAULT_CASES: u32 = 256;
/// Longest generated sequence.
pub const MAX_OPS: usize = 64;

/// One step of a generated sequence.
#[derive(Debug, Clone)]
pub enum Op {
    /// Register connection `id` for `user` with `roles` (a duplicate when `id` is present).
    Register {
        /// Connection number (see [`connection_id`]).
        id: u128,
        /// User id.
        user: &'static str,
        /// Roles, possibly none.
        roles: Vec<&'static str>,
    },
    /// Unregister connection `id`, present or not.
    Unregister {
        /// Connection number (see [`connection_id`]).
        id: u128,
    },
    /// Look up one target.
    Lookup(Target),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let register = (0..REGISTER_IDS, select(&USERS[..]), subsequence(&ROLES[..], 0..=ROLES.len()))
        .prop_map(|(id, user, roles)| Op::Register { id, user, roles });
    let unregister = (0..LOOKUP_IDS).prop_map(|id| Op::Unregister { id });
    let target = prop_oneof![
        Just(Target::Broadcast),
        select(&USERS[..]).prop_map(|u| Target::User(user(u))),
        Just(Target::User(user(UNKNOWN_USER))),
        select(&ROLES[..]).prop_map(|r| Target::Role(role(r))),
        Just(Target::Role(role(UNKNOWN_ROLE))),
        (0..LOOKUP_IDS).prop_map(|id| Target::Connection(connection_id(id))),
    ];
    prop_oneof![
        4 => register,
        2 => unregister,
        1 => target.prop_map(Op::Lookup),
    ]
}

/// Every target a step is checked against: broadcast, every user and role of the pools plus
/// an unknown one of each, and every id that can occur.
fn every_target() -> Vec<Target> {
    let mut targets = vec![Target::Broadcast];
    targets.extend(USERS.iter().chain([&UNKNOWN_USER]).map(|u| Target::User(user(u))));
    targets.extend(ROLES.iter().chain([&UNKNOWN_ROLE]).map(|r| Target::Role(role(r))));
    targets.extend((0..LOOKUP_IDS).map(|id| Target::Connection(connection_id(id))));
    targets
}

/// What the registry returns for `target`.
fn lookup(registry: &dyn ConnectionRegistry, target: &Target) -> Vec<Registered> {
    match target {
        Target::Broadcast => registry.all(),
        Target::User(user) => registry.find_by_user(user),
        Target::Role(role) => registry.find_by_role(role),
        Target::Connection(id) => registry.get(*id).into_iter().collect(),
    }
}

/// The registry's answer for `target` must be exactly the model's: the same ids, each once,
/// with the same connection records.
fn check_target(
    registry: &dyn ConnectionRegistry,
    model: &[Connection],
    target: &Target,
) -> Result<(), TestCaseError> {
    let found = lookup(registry, target);
    let mut got: Vec<ConnectionId> = found.iter().map(|r| r.connection.id).collect();
    got.sort();
    let mut want = route(target, model);
    want.sort();
    prop_assert_eq!(&got, &want, "lookup {:?}", target);
    for registered in &found {
        let expected = model.iter().find(|c| c.id == registered.connection.id);
        prop_assert_eq!(Some(&*registered.connection), expected, "record for {:?}", target);
    }
    Ok(())
}

fn check_everything(
    registry: &dyn ConnectionRegistry,
    model: &[Connection],
    targets: &[Target],
) -> Result<(), TestCaseError> {
    for target in targets {
        check_target(registry, model, target)?;
    }
    prop_assert_eq!(registry.count(), model.len(), "count");
    Ok(())
}

/// Applies `ops` to a fresh registry and to the model, checking after every step.
fn run_sequence(
    registry: &dyn ConnectionRegistry,
    ops: &[Op],
    targets: &[Target],
) -> Result<(), TestCaseError> {
    let mut model: Vec<Connection> = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Register { id, user, roles } => {
                let conn = connection(*id, user, roles);
                let expected = if model.iter().any(|c| c.id == conn.id) {
                    Err(RegisterError::Duplicate(conn.id))
                } else {
                    model.push(conn.clone());
                    Ok(())
                };
                let got = registry.register(conn, Arc::new(RecordingSink::new()));
                prop_assert_eq!(got, expected, "step {}: {:?}", step, op);
            }
            Op::Unregister { id } => {
                let id = connection_id(*id);
                let expected = model.iter().position(|c| c.id == id).map(|i| model.remove(i));
                let got = registry.unregister(id).map(|r| (*r.connection).clone());
                prop_assert_eq!(got, expected, "step {}: {:?}", step, op);
            }
            Op::Lookup(target) => check_target(registry, &model, target)?,
        }
        check_everything(registry, &model, targets)
            .map_err(|e| TestCaseError::fail(format!("after step {step} ({op:?}): {e}")))?;
    }
    Ok(())
}

/// Runs the model-based test with [`DEFAULT_CASES`] sequences of up to [`MAX_OPS`]
/// operations, each on a fresh registry from `make`.
///
/// # Panics
/// When the registry disagrees with the model; the message names the failing check and the
/// shrunk operation sequence.
pub fn check_registry_against_model(make: impl Fn() -> Arc<dyn ConnectionRegistry>) {
    check_registry_against_model_with_cases(make, DEFAULT_CASES);
}

/// [`check_registry_against_model`] with `cases` sequences (fewer for slow adapters).
///
/// # Panics
/// When the registry disagrees with the model.
pub fn check_registry_against_model_with_cases(
    make: impl Fn() -> Arc<dyn ConnectionRegistry>,
    cases: u32,
) {
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new(config);
    let targets = every_target();
    let strategy = proptest::collection::vec(op_strategy(), 0..=MAX_OPS);
    let result = runner.run(&strategy, |ops| run_sequence(&*make(), &ops, &targets));
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, ops)) => {
            panic!("registry disagrees with the model: {reason}\nminimal sequence: {ops:#?}")
        }
        Err(TestError::Abort(reason)) => panic!("model-based registry test aborted: {reason}"),
    }
}
