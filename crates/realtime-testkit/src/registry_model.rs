//! Model-based property test of a [`ConnectionRegistry`]: random operation sequences are
//! applied to the registry and to a naive model (a `Vec` of connections, each with its set
//! of topics), and after every step every lookup must agree exactly with
//! [`realtime_core::route`] and [`realtime_core::route_stream`] over the model, and
//! `topics_of`, `topic_count` and `count` with the model's sets.
//!
//! Operations draw from small pools (ids `0..24`, four users, four roles, five topics and a
//! limit of two topics per connection, most topic operations on six of the ids), so duplicates, users with several connections,
//! overlapping roles, repeated subscribes, refused subscribes (over the limit, or of ids not
//! registered) and unregistering unknown ids all occur often. Lookups also ask for ids,
//! users, roles and topics that are never registered or subscribed to.

use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use realtime_core::{Connection, ConnectionId, StreamName, Target, TopicName, route, route_stream};
use realtime_ports::{ConnectionRegistry, RegisterError, Registered, TopicError};

use crate::RecordingSink;
use crate::fixtures::{connection, connection_id, role, topic, user};

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
/// Topics connections subscribe to; one is also the name of a role.
const TOPICS: [&str; 5] = ["news", "chat:room-1", "chat:room-2", "orders", "admin"];
/// Looked up, never subscribed to.
const UNKNOWN_TOPIC: &str = "void";
/// The topic limit every subscribe passes.
const MAX_TOPICS: usize = 2;
/// Most subscribes and unsubscribes go to ids `0..BUSY_IDS`, so connections often reach
/// the limit.
const BUSY_IDS: u128 = 6;

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
    /// Subscribe connection `id`, registered or not, to `topic` (limit [`MAX_TOPICS`]).
    Subscribe {
        /// Connection number (see [`connection_id`]).
        id: u128,
        /// Topic name.
        topic: &'static str,
    },
    /// Unsubscribe connection `id` from `topic`, subscribed or not.
    Unsubscribe {
        /// Connection number (see [`connection_id`]).
        id: u128,
        /// Topic name.
        topic: &'static str,
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
        select(&TOPICS[..]).prop_map(|t| Target::Topic(topic(t))),
        (0..LOOKUP_IDS).prop_map(|id| Target::Connection(connection_id(id))),
    ];
    let topic_id = || prop_oneof![3 => 0..BUSY_IDS, 1 => 0..LOOKUP_IDS];
    let subscribe =
        (topic_id(), select(&TOPICS[..])).prop_map(|(id, topic)| Op::Subscribe { id, topic });
    let unsubscribe =
        (topic_id(), select(&TOPICS[..])).prop_map(|(id, topic)| Op::Unsubscribe { id, topic });
    prop_oneof![
        4 => register,
        2 => unregister,
        4 => subscribe,
        2 => unsubscribe,
        1 => target.prop_map(Op::Lookup),
    ]
}

/// A connection of the model and the topics it is subscribed to.
type Entry = (Connection, BTreeSet<TopicName>);

/// Every stream a step is checked against: broadcast, every user, role and topic of the
/// pools plus an unknown one of each.
fn every_stream() -> Vec<StreamName> {
    let mut streams = vec![StreamName::Broadcast];
    streams.extend(USERS.iter().chain([&UNKNOWN_USER]).map(|u| StreamName::User(user(u))));
    streams.extend(ROLES.iter().chain([&UNKNOWN_ROLE]).map(|r| StreamName::Role(role(r))));
    streams.extend(TOPICS.iter().chain([&UNKNOWN_TOPIC]).map(|t| StreamName::Topic(topic(t))));
    streams
}

/// Every target a step is checked against: broadcast, every user, role and topic of the
/// pools plus an unknown one of each, and every id that can occur.
fn every_target() -> Vec<Target> {
    let mut targets = vec![Target::Broadcast];
    targets.extend(USERS.iter().chain([&UNKNOWN_USER]).map(|u| Target::User(user(u))));
    targets.extend(ROLES.iter().chain([&UNKNOWN_ROLE]).map(|r| Target::Role(role(r))));
    targets.extend(TOPICS.iter().chain([&UNKNOWN_TOPIC]).map(|t| Target::Topic(topic(t))));
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
        Target::Topic(topic) => registry.find_by_topic(topic),
    }
}

/// `found` must be exactly `want` (ids, each once) with the model's connection records.
fn check_found(
    found: &[Registered],
    mut want: Vec<ConnectionId>,
    model: &[Entry],
    what: &dyn std::fmt::Debug,
) -> Result<(), TestCaseError> {
    let mut got: Vec<ConnectionId> = found.iter().map(|r| r.connection.id).collect();
    got.sort();
    want.sort();
    prop_assert_eq!(&got, &want, "lookup {:?}", what);
    for registered in found {
        let expected = model.iter().map(|(c, _)| c).find(|c| c.id == registered.connection.id);
        prop_assert_eq!(Some(&*registered.connection), expected, "record for {:?}", what);
    }
    Ok(())
}

/// The registry's answer for `target` must be exactly the model's: the same ids, each once,
/// with the same connection records.
fn check_target(
    registry: &dyn ConnectionRegistry,
    model: &[Entry],
    target: &Target,
) -> Result<(), TestCaseError> {
    // A stream target's members follow `route_stream` (topics need each connection's
    // subscriptions); a connection target, which is no stream, follows `route`.
    let want = match target.stream() {
        Some(stream) => route_stream(&stream, model.iter().map(|(c, t)| (c, t))),
        None => route(target, model.iter().map(|(c, _)| c)),
    };
    check_found(&lookup(registry, target), want, model, target)
}

/// The registry's `find_stream` and, for a topic, `topic_count` must be exactly the model's.
fn check_stream(
    registry: &dyn ConnectionRegistry,
    model: &[Entry],
    stream: &StreamName,
) -> Result<(), TestCaseError> {
    let want = route_stream(stream, model.iter().map(|(c, t)| (c, t)));
    if let StreamName::Topic(name) = stream {
        prop_assert_eq!(registry.topic_count(name), want.len(), "topic_count {}", name);
        let by_topic = registry.find_by_topic(name);
        check_found(&by_topic, want.clone(), model, stream)?;
    }
    check_found(&registry.find_stream(stream), want, model, stream)
}

fn check_everything(
    registry: &dyn ConnectionRegistry,
    model: &[Entry],
    targets: &[Target],
    streams: &[StreamName],
) -> Result<(), TestCaseError> {
    for target in targets {
        check_target(registry, model, target)?;
    }
    for stream in streams {
        check_stream(registry, model, stream)?;
    }
    for n in 0..LOOKUP_IDS {
        let id = connection_id(n);
        let want: Vec<TopicName> = model
            .iter()
            .find(|(c, _)| c.id == id)
            .map_or_else(Vec::new, |(_, topics)| topics.iter().cloned().collect());
        prop_assert_eq!(registry.topics_of(id), want, "topics_of {}", n);
    }
    prop_assert_eq!(registry.count(), model.len(), "count");
    Ok(())
}

/// What the model answers to a subscribe.
fn model_subscribe(
    model: &mut [Entry],
    id: ConnectionId,
    name: &TopicName,
) -> Result<bool, TopicError> {
    let (_, topics) =
        model.iter_mut().find(|(c, _)| c.id == id).ok_or(TopicError::NotRegistered(id))?;
    if topics.contains(name) {
        return Ok(false);
    }
    if topics.len() >= MAX_TOPICS {
        return Err(TopicError::TooManyTopics { max: MAX_TOPICS });
    }
    Ok(topics.insert(name.clone()))
}

/// Applies `ops` to a fresh registry and to the model, checking after every step.
fn run_sequence(
    registry: &dyn ConnectionRegistry,
    ops: &[Op],
    targets: &[Target],
    streams: &[StreamName],
) -> Result<(), TestCaseError> {
    let mut model: Vec<Entry> = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Register { id, user, roles } => {
                let conn = connection(*id, user, roles);
                let expected = if model.iter().any(|(c, _)| c.id == conn.id) {
                    Err(RegisterError::Duplicate(conn.id))
                } else {
                    model.push((conn.clone(), BTreeSet::new()));
                    Ok(())
                };
                let got = registry.register(Arc::new(conn), Arc::new(RecordingSink::new()));
                prop_assert_eq!(got, expected, "step {}: {:?}", step, op);
            }
            Op::Unregister { id } => {
                let id = connection_id(*id);
                let expected =
                    model.iter().position(|(c, _)| c.id == id).map(|i| model.remove(i).0);
                let got = registry.unregister(id).map(|r| (*r.connection).clone());
                prop_assert_eq!(got, expected, "step {}: {:?}", step, op);
            }
            Op::Subscribe { id, topic: name } => {
                let (id, name) = (connection_id(*id), topic(name));
                let expected = model_subscribe(&mut model, id, &name);
                let got = registry.subscribe(id, &name, MAX_TOPICS);
                prop_assert_eq!(got, expected, "step {}: {:?}", step, op);
            }
            Op::Unsubscribe { id, topic: name } => {
                let (id, name) = (connection_id(*id), topic(name));
                let expected = model
                    .iter_mut()
                    .find(|(c, _)| c.id == id)
                    .is_some_and(|(_, topics)| topics.remove(&name));
                let got = registry.unsubscribe(id, &name);
                prop_assert_eq!(got, expected, "step {}: {:?}", step, op);
            }
            Op::Lookup(target) => check_target(registry, &model, target)?,
        }
        check_everything(registry, &model, targets, streams)
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
    let (targets, streams) = (every_target(), every_stream());
    let strategy = proptest::collection::vec(op_strategy(), 0..=MAX_OPS);
    let result = runner.run(&strategy, |ops| run_sequence(&*make(), &ops, &targets, &streams));
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, ops)) => {
            panic!("registry disagrees with the model: {reason}\nminimal sequence: {ops:#?}")
        }
        Err(TestError::Abort(reason)) => panic!("model-based registry test aborted: {reason}"),
    }
}
