//! The [`ConnectionRegistry`] contract suite: checks every registry adapter must pass.
//!
//! Each check is a `pub fn` taking a factory of fresh, empty registries; it panics with a
//! descriptive message when the registry breaks the contract. Adapters run them through
//! [`registry_contract_tests!`](crate::registry_contract_tests), which expands to one
//! `#[test]` per check, or all at once through [`run_all`].
//!
//! The checks compare id lists sorted but not deduplicated, so a lookup that returns a
//! connection twice fails as surely as one that misses it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use realtime_core::{
    Connection, ConnectionId, Frame, StreamName, Target, TopicName, UnixMillis, route, route_stream,
};
use realtime_ports::{ConnectionRegistry, RegisterError, Registered, TopicError};

use crate::RecordingSink;
use crate::fixtures::{connection, connection_id, role, topic, user};

/// The ids of `found`, sorted, duplicates kept.
pub fn sorted_ids(found: &[Registered]) -> Vec<ConnectionId> {
    let mut ids: Vec<ConnectionId> = found.iter().map(|r| r.connection.id).collect();
    ids.sort();
    ids
}

/// Whether `registered` holds exactly the sink object `sink` (same allocation).
pub fn same_sink(registered: &Registered, sink: &Arc<RecordingSink>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(&registered.sink), Arc::as_ptr(sink))
}

/// Registers `connection` with a fresh [`RecordingSink`], which is returned; panics if the
/// registry refuses.
#[track_caller]
fn add(registry: &dyn ConnectionRegistry, connection: Connection) -> Arc<RecordingSink> {
    let sink = Arc::new(RecordingSink::new());
    let id = connection.id;
    let result = registry.register(Arc::new(connection), sink.clone());
    assert_eq!(result, Ok(()), "register({id}) must succeed");
    sink
}

/// Sorted connection ids for the numbers `ns`.
fn ids(ns: &[u128]) -> Vec<ConnectionId> {
    let mut ids: Vec<ConnectionId> = ns.iter().map(|n| connection_id(*n)).collect();
    ids.sort();
    ids
}

#[track_caller]
fn check_user(registry: &dyn ConnectionRegistry, name: &str, expected: &[u128]) {
    let found = registry.find_by_user(&user(name));
    assert_eq!(sorted_ids(&found), ids(expected), "find_by_user({name:?})");
    for r in &found {
        assert_eq!(r.connection.user_id.as_str(), name, "find_by_user({name:?}) record");
    }
}

#[track_caller]
fn check_role(registry: &dyn ConnectionRegistry, name: &str, expected: &[u128]) {
    let found = registry.find_by_role(&role(name));
    assert_eq!(sorted_ids(&found), ids(expected), "find_by_role({name:?})");
    for r in &found {
        assert!(r.connection.has_role(&role(name)), "find_by_role({name:?}) record");
    }
}

#[track_caller]
fn check_all(registry: &dyn ConnectionRegistry, expected: &[u128]) {
    assert_eq!(sorted_ids(&registry.all()), ids(expected), "all()");
    assert_eq!(registry.count(), expected.len(), "count()");
}

/// A registered connection can be read back by id, unchanged; other ids are absent.
pub fn register_then_get(make: impl Fn() -> Arc<dyn ConnectionRegistry>) {
    let registry = make();
    assert!(registry.get(connection_id(1)).is_none(), "a new registry is empty");
    check_all(&*registry, &[]);

    let mut conn = connection(1, "alice", &["admin", "ops"]);
    conn.metadata.insert("tab".to_owned(), serde_json::json!("inbox"));
    conn.connected_at = UnixMillis(1_700_000_000_123);
    add(&*registry, conn.clone());

    let got = registry.get(connection_id(1)).unwrap_or_else(|| panic!("get(1) after register"));
    assert_eq!(*got.connection, conn, "get returns the registered connection unchanged");
    assert!(registry.get(connection_id(2)).is_none(), "get(unregistered id)");
    check_all(&*registry, &[1]);
}

/// Registering an id twice fails with `Duplicate` and leaves the first registration (record,
/// sink and index entries) untouched; once unregistered, the id can be registered again.
pub fn duplicate_id_is_rejected_and_original_kept(make: impl Fn() -> Arc<dyn ConnectionRegistry>) {
    let registry = make();
    let original = connection(1, "alice", &["admin"]);
    let first_sink = add(&*registry, original.clone());

    let second_sink = Arc::new(RecordingSink::new());
    let result = registry.register(Arc::new(connection(1, "bob", &["ops"])), second_sink.clone());
    assert_eq!(result, Err(RegisterError::Duplicate(connection_id(1))));

    let got = registry.get(connection_id(1)).unwrap_or_else(|| panic!("original is kept"));
    assert_eq!(*got.connection, original, "the original connection is kept");
    assert!(same_sink(&got, &first_sink), "the original sink is kept");
    check_user(&*registry, "alice", &[1]);
    check_user(&*registry, "bob", &[]);
    check_role(&*registry, "admin", &[1]);
    check_role(&*registry, "ops", &[]);
    check_all(&*registry, &[1]);
    assert_eq!(second_sink.closed(), None, "the rejected sink is not touched");
    assert!(second_sink.is_empty(), "the rejected sink is not touched");

    assert!(registry.unregister(connection_id(1)).is_some());
    add(&*registry, connection(1, "bob", &["ops"]));
    check_user(&*registry, "alice", &[]);
    check_user(&*registry, "bob", &[1]);
    check_role(&*registry, "admin", &[]);
    check_role(&*registry, "ops", &[1]);
}

/// `unregister` returns the record and removes it from every index (id, user, role); a
/// second `unregister` of the same id returns `None`.
pub fn unregister_removes_from_every_index(make: impl Fn() -> Arc<dyn ConnectionRegistry>) {
    let registry = make();
    assert!(registry.unregister(connection_id(1)).is_none(), "unregister on an empty registry");
    let c1 = connection(1, "alice", &["admin", "ops"]);
    add(&*registry, c1.clone());
    add(&*registry, connection(2, "alice", &["ops"]));
    add(&*registry, connection(3, "bob", &["admin"]));

    let removed = registry.unregister(connection_id(1)).unwrap_or_else(|| panic!("unregister(1)"));
    assert_eq!(*removed.connection, c1, "unregister returns the removed connection");
    assert!(registry.get(connection_id(1)).is_none(), "get after unregister");
    check_user(&*registry, "alice", &[2]);
    check_user(&*registry, "bob", &[3]);
    check_role(&*registry, "admin", &[3]);
    check_role(&*registry, "ops", &[2]);
    check_all(&*registry, &[2, 3]);

    assert!(registry.unregister(connection_id(1)).is_none(), "second unregister(1)");
    check_all(&*registry, &[2, 3]);

    assert!(registry.unregister(connection_id(2)).is_some(), "unregister(2)");
    assert!(registry.unregister(connection_id(3)).is_some(), "unregister(3)");
    check_user(&*registry, "alice", &[]);
    check_user(&*registry, "bob", &[]);
    check_role(&*registry, "admin", &[]);
    check_role(&*registry, "ops", &[]);
    check_all(&*registry, &[]);
}

/// `find_by_user` returns every connection of the user, each once, and no other user's
/// (user ids are case-sensitive).
pub fn find_by_user_returns_every_connection_of_the_user(
    make: impl Fn() -> Arc<dyn ConnectionRegistry>,
) {
    let registry = make();
    for (id, name) in
        [(1, "alice"), (2, "alice"), (3, "alice"), (4, "bob"), (5, "carol"), (6, "carol")]
    {
        add(&*registry, connection(id, name, &["member"]));
    }
    add(&*registry, connection(7, "Alice", &[]));
    check_user(&*registry, "alice", &[1, 2, 3]);
    check_user(&*registry, "Alice", &[7]);
    check_user(&*registry, "bob", &[4]);
    check_user(&*registry, "carol", &[5, 6]);

    assert!(registry.unregister(connection_id(2)).is_some());
    check_user(&*registry, "alice", &[1, 3]);
}

/// `find_by_role` returns every connection holding the role, each once, when connections
/// hold several overlapping roles.
pub fn find_by_role_with_overlapping_roles(make: impl Fn() -> Arc<dyn ConnectionRegistry>) {
    let registry = make();
    add(&*registry, connection(1, "alice", &["admin", "ops"]));
    add(&*registry, connection(2, "alice", &["ops"]));
    add(&*registry, connection(3, "bob", &["admin", "viewer"]));
    add(&*registry, connection(4, "bob", &[]));
    add(&*registry, connection(5, "carol", &["ops", "viewer", "admin"]));
    check_role(&*registry, "admin", &[1, 3, 5]);
    check_role(&*registry, "ops", &[1, 2, 5]);
    check_role(&*registry, "viewer", &[3, 5]);
    check_role(&*registry, "Admin", &[]);

    assert!(registry.unregister(connection_id(5)).is_some());
    check_role(&*registry, "admin", &[1, 3]);
    check_role(&*registry, "ops", &[1, 2]);
    check_role(&*registry, "viewer", &[3]);
}

/// `all` and `count` follow every register and unregister.
pub fn all_and_count(make: impl Fn() -> Arc<dyn ConnectionRegistry>) {
    let registry = make();
    let mut expected: Vec<u128> = Vec::new();
    for n in 1..=40u128 {
        add(&*registry, connection(n, &format!("user-{}", n % 7), &[]));
        expected.push(n);
        check_all(&*registry, &expected);
    }
    for n in (1..=40u128).filter(|n| n.is_multiple_of(3)) {
        assert!(registry.unregister(connection_id(n)).is_some(), "unregister({n})");
        expected.retain(|e| *e != n);
        check_all(&*registry, &expected);
    }
    // A rejected duplicate changes neither.
    let dup = registry.register(Arc::new(connection(1, "x", &[])), Arc::new(RecordingSink::new()));
    assert_eq!(dup, Err(RegisterError::Duplicate(connection_id(1))));
    check_all(&*registry, &expected);
}

/// Lookups of users and roles nobody has return empty, before and after registrations, and
/// once the last connection of a user or role is gone.
pub fn unknown_user_and_role_give_empty(make: impl Fn() -> Arc<dyn ConnectionRegistry>) {
    let registry = make();
    check_user(&*registry, "nobody", &[]);
    check_role(&*registry, "nothing", &[]);
    add(&*registry, connection(1, "alice", &["admin"]));
    check_user(&*registry, "nobody", &[]);
    check_role(&*registry, "nothing", &[]);
    assert!(registry.get(connection_id(2)).is_none());
    assert!(registry.unregister(connection_id(1)).is_some());
    check_user(&*registry, "alice", &[]);
    check_role(&*registry, "admin", &[]);
}

/// Users and roles of the concurrent check.
const USERS: [&str; 5] = ["u0", "u1", "u2", "u3", "u4"];
const ROLES: [&str; 3] = ["r0", "r1", "r2"];
const THREADS: usize = 8;
const OWN_PER_THREAD: u128 = 120;
const SHARED: u128 = 100;
const SHARED_BASE: u128 = 1_000_000;

/// The connection with number `n` of the concurrent check: user and roles derive from `n`.
fn concurrent_connection(n: u128) -> Connection {
    let user = USERS[(n % 5) as usize];
    let roles: Vec<&str> =
        ROLES.iter().enumerate().filter(|(i, _)| (n >> i) & 1 == 1).map(|(_, r)| *r).collect();
    connection(n, user, &roles)
}

/// The own connection numbers of thread `t` that survive its register/unregister pattern
/// (it registers `base + i` and, when `i % 3 == 0`, unregisters `base + i - 1`).
fn own_survivors(t: usize) -> Vec<u128> {
    let base = (t as u128 + 1) * 10_000;
    (0..OWN_PER_THREAD)
        .filter(|i| !(i % 3 == 2 && i + 1 < OWN_PER_THREAD))
        .map(|i| base + i)
        .collect()
}

/// Checks that every record returned for `target` matches it and appears once.
#[track_caller]
fn check_lookup_is_coherent(found: &[Registered], target: &Target) {
    let mut selected = route(target, found.iter().map(|r| &*r.connection));
    selected.sort();
    let mut returned = sorted_ids(found);
    assert_eq!(selected, returned, "lookup {target:?} returned a record it does not match");
    returned.dedup();
    assert_eq!(returned.len(), found.len(), "lookup {target:?} returned a record twice");
}

/// Eight threads register, unregister and look up at once (own ids, and shared ids they
/// race for); every thread sees its own writes, each shared id is registered and removed
/// exactly once, and the final state is consistent: `count` matches, and every index agrees
/// with `all()`.
pub fn concurrent_operations_end_consistent(make: impl Fn() -> Arc<dyn ConnectionRegistry>) {
    let registry = make();
    let registered_shared = AtomicUsize::new(0);
    let removed_shared = AtomicUsize::new(0);

    // Phase 1: own ids, and a race for every shared id. (Two scopes rather than a barrier,
    // so a failing thread fails the test instead of leaving the others waiting.)
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (registry, registered_shared) = (&*registry, &registered_shared);
            scope.spawn(move || {
                let base = (t as u128 + 1) * 10_000;
                for i in 0..OWN_PER_THREAD {
                    let conn = concurrent_connection(base + i);
                    let own_user = conn.user_id.clone();
                    add(registry, conn);
                    assert!(registry.get(connection_id(base + i)).is_some(), "own write visible");
                    let of_user = registry.find_by_user(&own_user);
                    assert!(of_user.iter().any(|r| r.connection.id == connection_id(base + i)));
                    check_lookup_is_coherent(&of_user, &Target::User(own_user));
                    if i.is_multiple_of(3) && i > 0 {
                        let gone = connection_id(base + i - 1);
                        assert!(registry.unregister(gone).is_some(), "unregister own {gone}");
                        assert!(registry.get(gone).is_none(), "own unregister visible");
                    }
                    if i.is_multiple_of(4) {
                        let r = role(ROLES[(i / 4 % 3) as usize]);
                        check_lookup_is_coherent(&registry.find_by_role(&r), &Target::Role(r));
                    }
                    if i.is_multiple_of(40) {
                        check_lookup_is_coherent(&registry.all(), &Target::Broadcast);
                    }
                    // Never more than every thread's ids and the shared ones, and never less
                    // than what this thread has registered and not removed (read under load).
                    let count = registry.count();
                    let most = THREADS * OWN_PER_THREAD as usize + SHARED as usize;
                    assert!(count <= most, "count {count} above every possible id");
                    let own_live = (i + 1 - (i / 3)) as usize;
                    assert!(count >= own_live, "count {count} below this thread's {own_live}");
                }
                // Every thread races for every shared id, each in a different order.
                for k in 0..SHARED {
                    let n = SHARED_BASE + (k + t as u128 * 13) % SHARED;
                    let sink = Arc::new(RecordingSink::new());
                    match registry.register(Arc::new(concurrent_connection(n)), sink) {
                        Ok(()) => {
                            registered_shared.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(RegisterError::Duplicate(id)) => {
                            assert_eq!(id, connection_id(n), "Duplicate names the id");
                        }
                        Err(other) => panic!("unexpected register error {other:?}"),
                    }
                }
            });
        }
    });

    // Phase 2: every thread races to remove every even shared id, looking users up meanwhile.
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (registry, removed_shared) = (&*registry, &removed_shared);
            scope.spawn(move || {
                for k in (0..SHARED).filter(|k| k.is_multiple_of(2)) {
                    let n = SHARED_BASE + (k + t as u128 * 14) % SHARED;
                    if registry.unregister(connection_id(n)).is_some() {
                        removed_shared.fetch_add(1, Ordering::Relaxed);
                    }
                    let u = user(USERS[(k % 5) as usize]);
                    check_lookup_is_coherent(&registry.find_by_user(&u), &Target::User(u));
                }
            });
        }
    });

    assert_eq!(registered_shared.into_inner(), SHARED as usize, "each shared id registered once");
    assert_eq!(
        removed_shared.into_inner(),
        SHARED as usize / 2,
        "each even shared id removed once"
    );

    let mut expected: Vec<u128> = (0..THREADS).flat_map(own_survivors).collect();
    expected.extend((SHARED_BASE..SHARED_BASE + SHARED).filter(|n| n % 2 == 1));
    let all = registry.all();
    assert_eq!(sorted_ids(&all), ids(&expected), "all() after the concurrent run");
    assert_eq!(registry.count(), expected.len(), "count() after the concurrent run");

    let targets = USERS
        .iter()
        .map(|u| Target::User(user(u)))
        .chain(ROLES.iter().map(|r| Target::Role(role(r))));
    for target in targets {
        let found = match &target {
            Target::User(u) => registry.find_by_user(u),
            Target::Role(r) => registry.find_by_role(r),
            _ => Vec::new(),
        };
        let mut want = route(&target, all.iter().map(|r| &*r.connection));
        want.sort();
        assert_eq!(sorted_ids(&found), want, "index for {target:?} disagrees with all()");
    }
    let expected: HashSet<ConnectionId> = expected.iter().map(|n| connection_id(*n)).collect();
    let candidates = (0..THREADS as u128)
        .flat_map(|t| ((t + 1) * 10_000)..((t + 1) * 10_000 + OWN_PER_THREAD))
        .chain(SHARED_BASE..SHARED_BASE + SHARED);
    for n in candidates {
        let id = connection_id(n);
        assert_eq!(registry.get(id).is_some(), expected.contains(&id), "get({id})");
    }
}

/// The sink in every returned [`Registered`] is the very object that was registered with
/// that connection (not a copy, not another connection's).
pub fn registered_sink_is_the_one_registered(make: impl Fn() -> Arc<dyn ConnectionRegistry>) {
    let registry = make();
    let alice_sink = add(&*registry, connection(1, "alice", &["admin"]));
    let bob_sink = add(&*registry, connection(2, "bob", &["admin"]));

    let mut seen: Vec<(&str, Registered)> = Vec::new();
    let get = registry.get(connection_id(1)).unwrap_or_else(|| panic!("get(1)"));
    seen.push(("get", get));
    seen.extend(registry.find_by_user(&user("alice")).into_iter().map(|r| ("find_by_user", r)));
    seen.extend(
        registry
            .find_by_role(&role("admin"))
            .into_iter()
            .filter(|r| r.connection.id == connection_id(1))
            .map(|r| ("find_by_role", r)),
    );
    seen.extend(
        registry
            .all()
            .into_iter()
            .filter(|r| r.connection.id == connection_id(1))
            .map(|r| ("all", r)),
    );
    let removed = registry.unregister(connection_id(1)).unwrap_or_else(|| panic!("unregister"));
    seen.push(("unregister", removed));
    let lookups: BTreeSet<&str> = seen.iter().map(|(how, _)| *how).collect();
    assert_eq!(lookups.len(), 5, "connection 1 was found by every lookup: {lookups:?}");

    for (i, (how, registered)) in seen.iter().enumerate() {
        assert!(same_sink(registered, &alice_sink), "{how} returned another sink");
        let text = format!("via {how}");
        assert_eq!(registered.sink.send(Frame::from_text(text.clone())), Ok(()));
        assert_eq!(alice_sink.len(), i + 1, "{how}: the frame reached the registered sink");
        assert_eq!(alice_sink.texts().last(), Some(&text));
    }
    assert!(bob_sink.is_empty(), "no frame reached the other connection's sink");
    let bob = registry.get(connection_id(2)).unwrap_or_else(|| panic!("get(2)"));
    assert!(same_sink(&bob, &bob_sink));
}

/// A generous topic limit, for checks that are not about the limit.
const MANY: usize = 64;

#[track_caller]
fn subscribe(registry: &dyn ConnectionRegistry, n: u128, name: &str) -> bool {
    registry
        .subscribe(connection_id(n), &topic(name), MANY)
        .unwrap_or_else(|e| panic!("subscribe({n}, {name:?}): {e}"))
}

/// `find_by_topic` and `topic_count` of `name` say exactly `expected`; every record returned
/// lists the topic in `topics_of`.
#[track_caller]
fn check_topic(registry: &dyn ConnectionRegistry, name: &str, expected: &[u128]) {
    let found = registry.find_by_topic(&topic(name));
    assert_eq!(sorted_ids(&found), ids(expected), "find_by_topic({name:?})");
    assert_eq!(registry.topic_count(&topic(name)), expected.len(), "topic_count({name:?})");
    for r in &found {
        let topics = registry.topics_of(r.connection.id);
        assert!(topics.contains(&topic(name)), "topics_of({}) lacks {name:?}", r.connection.id);
    }
}

/// `topics_of(n)` is exactly `expected`, sorted.
#[track_caller]
fn check_topics_of(registry: &dyn ConnectionRegistry, n: u128, expected: &[&str]) {
    let mut want: Vec<TopicName> = expected.iter().map(|t| topic(t)).collect();
    want.sort();
    assert_eq!(registry.topics_of(connection_id(n)), want, "topics_of({n})");
}

/// `subscribe` answers `true` the first time and `false` after, without counting twice;
/// the connection is then found by topic, and by its topics only.
pub fn subscribe_is_idempotent(make: impl Fn() -> Arc<dyn ConnectionRegistry>) {
    let registry = make();
    add(&*registry, connection(1, "alice", &[]));
    add(&*registry, connection(2, "bob", &[]));
    check_topic(&*registry, "orders", &[]);
    assert!(subscribe(&*registry, 1, "orders"), "first subscribe is new");
    assert!(!subscribe(&*registry, 1, "orders"), "second subscribe is not new");
    assert!(!subscribe(&*registry, 1, "orders"), "third subscribe is not new");
    check_topic(&*registry, "orders", &[1]);
    check_topics_of(&*registry, 1, &["orders"]);
    check_topics_of(&*registry, 2, &[]);
    // A held topic is accepted at the limit, and counts once: with limit 2 one more fits.
    let again = registry.subscribe(connection_id(1), &topic("orders"), 1);
    assert_eq!(again, Ok(false), "re-subscribing at the limit is not refused");
    assert_eq!(registry.subscribe(connection_id(1), &topic("chat"), 2), Ok(true));
    assert!(subscribe(&*registry, 2, "chat"));
    check_topic(&*registry, "orders", &[1]);
    check_topic(&*registry, "chat", &[1, 2]);
    check_topic(&*registry, "Orders", &[]);
    check_topics_of(&*registry, 1, &["orders", "chat"]);
    check_topics_of(&*registry, 2, &["chat"]);
    // Topic names are not user ids or roles.
    check_user(&*registry, "orders", &[]);
    check_role(&*registry, "chat", &[]);
}

/// A connection holding `max_topics` topics is refused a new one with `TooManyTopics`
/// (nothing changes), while topics it already holds are still accepted; the limit is per
/// connection and frees up on unsubscribe.
pub fn subscribe_enforces_the_topic_limit(make: impl Fn() -> Arc<dyn ConnectionRegistry>) {
    let registry = make();
    add(&*registry, connection(1, "alice", &[]));
    add(&*registry, connection(2, "alice", &[]));
    let sub =
        |n: u128, name: &str, max: usize| registry.subscribe(connection_id(n), &topic(name), max);
    assert_eq!(sub(1, "a", 0), Err(TopicError::TooManyTopics { max: 0 }), "limit 0");
    check_topic(&*registry, "a", &[]);
    for name in ["a", "b", "c"] {
        assert_eq!(sub(1, name, 3), Ok(true), "{name} within the limit");
    }
    assert_eq!(sub(1, "d", 3), Err(TopicError::TooManyTopics { max: 3 }));
    check_topic(&*registry, "d", &[]);
    check_topics_of(&*registry, 1, &["a", "b", "c"]);
    assert_eq!(sub(1, "b", 3), Ok(false), "a held topic is accepted at the limit");
    assert_eq!(sub(1, "d", 4), Ok(true), "the limit is the caller's");
    assert_eq!(sub(1, "e", 4), Err(TopicError::TooManyTopics { max: 4 }));
    assert_eq!(sub(2, "e", 1), Ok(true), "another connection has its own count");
    assert!(registry.unsubscribe(connection_id(1), &topic("a")));
    assert_eq!(sub(1, "e", 4), Ok(true), "unsubscribe makes room");
    check_topics_of(&*registry, 1, &["b", "c", "d", "e"]);
    check_topic(&*registry, "e", &[1, 2]);
    check_topic(&*registry, "a", &[]);
}

/// Subscribing an id that is not registered (never, or no longer) fails with
/// `NotRegistered` and leaves no trace; `unsubscribe` and `topics_of` of such an id answer
/// `false` and empty.
pub fn subscribe_requires_a_registered_connection(make: impl Fn() -> Arc<dyn ConnectionRegistry>) {
    let registry = make();
    let refused = registry.subscribe(connection_id(9), &topic("orders"), MANY);
    assert_eq!(refused, Err(TopicError::NotRegistered(connection_id(9))));
    check_topic(&*registry, "orders", &[]);
    check_topics_of(&*registry, 9, &[]);
    assert!(!registry.unsubscribe(connection_id(9), &topic("orders")));
    add(&*registry, connection(1, "alice", &[]));
    assert!(subscribe(&*registry, 1, "orders"));
    assert!(registry.unregister(connection_id(1)).is_some());
    let refused = registry.subscribe(connection_id(1), &topic("orders"), MANY);
    assert_eq!(refused, Err(TopicError::NotRegistered(connection_id(1))), "after unregister");
    check_topic(&*registry, "orders", &[]);
    // Registered again under the same id, it starts with no topics.
    add(&*registry, connection(1, "alice", &[]));
    check_topics_of(&*registry, 1, &[]);
    check_topic(&*registry, "orders", &[]);
    check_all(&*registry, &[1]);
}

/// `unsubscribe` removes the connection from that topic only, answers whether it was
/// subscribed, and a second call is harmless.
pub fn unsubscribe_removes_only_that_topic(make: impl Fn() -> Arc<dyn ConnectionRegistry>) {
    let registry = make();
    add(&*registry, connection(1, "alice", &["admin"]));
    add(&*registry, connection(2, "bob", &[]));
    for (n, name) in [(1, "a"), (1, "b"), (2, "a")] {
        assert!(subscribe(&*registry, n, name));
    }
    assert!(!registry.unsubscribe(connection_id(2), &topic("b")), "2 never had b");
    assert!(registry.unsubscribe(connection_id(1), &topic("a")), "1 had a");
    assert!(!registry.unsubscribe(connection_id(1), &topic("a")), "second unsubscribe");
    check_topic(&*registry, "a", &[2]);
    check_topic(&*registry, "b", &[1]);
    check_topics_of(&*registry, 1, &["b"]);
    check_topics_of(&*registry, 2, &["a"]);
    // Unsubscribing changes nothing else.
    check_user(&*registry, "alice", &[1]);
    check_role(&*registry, "admin", &[1]);
    check_all(&*registry, &[1, 2]);
    assert!(registry.unsubscribe(connection_id(1), &topic("b")));
    check_topics_of(&*registry, 1, &[]);
    assert!(subscribe(&*registry, 1, "a"), "subscribing again after unsubscribe is new");
    check_topic(&*registry, "a", &[1, 2]);
}

/// `unregister` removes the connection from every topic it was in; other subscribers stay.
pub fn unregister_removes_from_every_topic(make: impl Fn() -> Arc<dyn ConnectionRegistry>) {
    let registry = make();
    add(&*registry, connection(1, "alice", &[]));
    add(&*registry, connection(2, "bob", &[]));
    for (n, name) in [(1, "a"), (1, "b"), (1, "c"), (2, "b")] {
        assert!(subscribe(&*registry, n, name));
    }
    assert!(registry.unregister(connection_id(1)).is_some());
    check_topic(&*registry, "a", &[]);
    check_topic(&*registry, "b", &[2]);
    check_topic(&*registry, "c", &[]);
    check_topics_of(&*registry, 1, &[]);
    assert!(!registry.unsubscribe(connection_id(1), &topic("b")), "gone with unregister");
    check_all(&*registry, &[2]);
}

/// Topics whose last subscriber left (by unsubscribe or unregister) look exactly like
/// topics never used: count 0 and no connection, across many topics used once.
pub fn no_empty_topic_entries(make: impl Fn() -> Arc<dyn ConnectionRegistry>) {
    let registry = make();
    add(&*registry, connection(1, "alice", &[]));
    for k in 0..200 {
        let name = format!("once-{k}");
        assert!(subscribe(&*registry, 1, &name));
        check_topic(&*registry, &name, &[1]);
        assert!(registry.unsubscribe(connection_id(1), &topic(&name)));
        check_topic(&*registry, &name, &[]);
    }
    for k in 0..MANY {
        assert!(subscribe(&*registry, 1, &format!("held-{k}")));
    }
    assert_eq!(registry.topics_of(connection_id(1)).len(), MANY);
    // Every earlier topic is free again: the limit counts only held topics.
    let full = registry.subscribe(connection_id(1), &topic("one-more"), MANY);
    assert_eq!(full, Err(TopicError::TooManyTopics { max: MANY }));
    assert!(registry.unregister(connection_id(1)).is_some());
    for k in 0..MANY {
        check_topic(&*registry, &format!("held-{k}"), &[]);
    }
    check_topic(&*registry, "once-0", &[]);
}

/// `find_stream` is the lookup of the stream's kind, and agrees with `route_stream`.
pub fn find_stream_dispatches_by_kind(make: impl Fn() -> Arc<dyn ConnectionRegistry>) {
    let registry = make();
    add(&*registry, connection(1, "alice", &["admin"]));
    add(&*registry, connection(2, "alice", &[]));
    add(&*registry, connection(3, "bob", &["admin", "ops"]));
    for (n, name) in [(1, "orders"), (3, "orders"), (2, "admin")] {
        assert!(subscribe(&*registry, n, name));
    }
    let stream = |raw: &str| StreamName::parse(raw).unwrap_or_else(|e| panic!("{e}"));
    let cases: &[(&str, &[u128])] = &[
        ("broadcast", &[1, 2, 3]),
        ("user:alice", &[1, 2]),
        ("user:carol", &[]),
        ("role:admin", &[1, 3]),
        ("role:ops", &[3]),
        ("topic:orders", &[1, 3]),
        ("topic:admin", &[2]),
        ("topic:ops", &[]),
    ];
    let all = registry.all();
    let topics: Vec<BTreeSet<TopicName>> =
        all.iter().map(|r| registry.topics_of(r.connection.id).into_iter().collect()).collect();
    for (raw, want) in cases {
        let found = registry.find_stream(&stream(raw));
        assert_eq!(sorted_ids(&found), ids(want), "find_stream({raw})");
        let mut rule = route_stream(&stream(raw), all.iter().map(|r| &*r.connection).zip(&topics));
        rule.sort();
        assert_eq!(rule, ids(want), "route_stream({raw})");
    }
}

/// Connections of the concurrent topic check: `1..=SHARED_SUBSCRIBERS` are registered
/// before the threads start; `LIMITED` is the one every thread fills up at once.
const SHARED_SUBSCRIBERS: u128 = 16;
const LIMITED: u128 = 500;
const LIMIT: usize = 10;
const TOPIC_POOL: [&str; 6] = ["t0", "t1", "t2", "t3", "t4", "t5"];
const OWN_TOPIC_CONNS: u128 = 30;

/// The topics thread `t`'s own connection `i` ends with, or `None` when it unregistered it:
/// it subscribes to `t{(i+t)%6}` and `t{(i+t+1)%6}`, drops the first again when `i` is even,
/// and unregisters the connection when `i % 5 == 4`.
fn own_topics(t: usize, i: u128) -> Option<Vec<&'static str>> {
    if i % 5 == 4 {
        return None;
    }
    let k = (i as usize + t) % TOPIC_POOL.len();
    let second = TOPIC_POOL[(k + 1) % TOPIC_POOL.len()];
    Some(if i.is_multiple_of(2) { vec![second] } else { vec![TOPIC_POOL[k], second] })
}

/// Eight threads subscribe, unsubscribe, unregister and look topics up at once: their own
/// connections, a race to fill one connection's topic limit, and races to subscribe,
/// unsubscribe and unregister shared connections. Each race has exactly one winner per
/// change, the limit is never passed, and at the end every topic's lookup and count agree
/// with `topics_of` of every connection and with what the threads did.
pub fn concurrent_topic_operations_end_consistent(make: impl Fn() -> Arc<dyn ConnectionRegistry>) {
    let registry = make();
    for n in 1..=SHARED_SUBSCRIBERS {
        add(&*registry, connection(n, USERS[(n % 5) as usize], &[]));
    }
    add(&*registry, connection(LIMITED, "limited", &[]));
    let (new_shared, limited_ok, unsubscribed, unregistered) =
        (AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0));

    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let registry = &*registry;
            let (new_shared, limited_ok) = (&new_shared, &limited_ok);
            scope.spawn(move || {
                let base = (t as u128 + 1) * 10_000;
                for i in 0..OWN_TOPIC_CONNS {
                    let n = base + i;
                    add(registry, connection(n, USERS[t % 5], &[]));
                    let k = (i as usize + t) % TOPIC_POOL.len();
                    let (first, second) = (TOPIC_POOL[k], TOPIC_POOL[(k + 1) % TOPIC_POOL.len()]);
                    assert!(subscribe(registry, n, first), "own {n} {first}");
                    assert!(subscribe(registry, n, second), "own {n} {second}");
                    let found = registry.find_by_topic(&topic(first));
                    assert!(found.iter().any(|r| r.connection.id == connection_id(n)), "own write");
                    let mut distinct = sorted_ids(&found);
                    distinct.dedup();
                    assert_eq!(
                        distinct.len(),
                        found.len(),
                        "find_by_topic returned a record twice"
                    );
                    if i.is_multiple_of(2) {
                        assert!(registry.unsubscribe(connection_id(n), &topic(first)));
                    }
                    if i % 5 == 4 {
                        assert!(registry.unregister(connection_id(n)).is_some());
                        assert!(registry.topics_of(connection_id(n)).is_empty(), "own unregister");
                    }
                    // Race for the limited connection: 4 new topics per thread, 10 fit.
                    if i < 4 {
                        let name = format!("limit-{t}-{i}");
                        match registry.subscribe(connection_id(LIMITED), &topic(&name), LIMIT) {
                            Ok(true) => {
                                limited_ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(false) => panic!("{name} was new"),
                            Err(TopicError::TooManyTopics { max }) => assert_eq!(max, LIMIT),
                            Err(other) => panic!("unexpected subscribe error {other:?}"),
                        }
                        let held = registry.topics_of(connection_id(LIMITED)).len();
                        assert!(held <= LIMIT, "{held} topics held, limit {LIMIT}");
                    }
                }
                // Every thread subscribes every shared connection to `shared`, in its order.
                for k in 0..SHARED_SUBSCRIBERS {
                    let n = 1 + (k + t as u128 * 5) % SHARED_SUBSCRIBERS;
                    if subscribe(registry, n, "shared") {
                        new_shared.fetch_add(1, Ordering::Relaxed);
                    }
                    let count = registry.topic_count(&topic("shared"));
                    assert!(count <= SHARED_SUBSCRIBERS as usize, "topic_count {count}");
                }
            });
        }
    });

    // Phase 2: races to unsubscribe the even shared connections and to unregister those
    // with n % 4 == 1, while looking the topic up.
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let registry = &*registry;
            let (unsubscribed, unregistered) = (&unsubscribed, &unregistered);
            scope.spawn(move || {
                for k in 0..SHARED_SUBSCRIBERS {
                    let n = 1 + (k + t as u128 * 3) % SHARED_SUBSCRIBERS;
                    if n.is_multiple_of(2)
                        && registry.unsubscribe(connection_id(n), &topic("shared"))
                    {
                        unsubscribed.fetch_add(1, Ordering::Relaxed);
                    }
                    if n % 4 == 1 && registry.unregister(connection_id(n)).is_some() {
                        unregistered.fetch_add(1, Ordering::Relaxed);
                    }
                    let found = registry.find_by_topic(&topic("shared"));
                    let mut distinct = sorted_ids(&found);
                    distinct.dedup();
                    assert_eq!(
                        distinct.len(),
                        found.len(),
                        "find_by_topic returned a record twice"
                    );
                }
            });
        }
    });

    let shared = SHARED_SUBSCRIBERS as usize;
    assert_eq!(new_shared.into_inner(), shared, "each shared subscribe is new once");
    assert_eq!(limited_ok.into_inner(), LIMIT, "exactly the limit's worth of topics fit");
    assert_eq!(unsubscribed.into_inner(), shared / 2, "each even one unsubscribed once");
    assert_eq!(unregistered.into_inner(), shared / 4, "each n % 4 == 1 unregistered once");

    // The expected topics of every connection that can have any.
    let mut expected: BTreeMap<u128, Vec<&str>> = BTreeMap::new();
    for t in 0..THREADS {
        for i in 0..OWN_TOPIC_CONNS {
            if let Some(topics) = own_topics(t, i) {
                expected.insert((t as u128 + 1) * 10_000 + i, topics);
            }
        }
    }
    for n in (1..=SHARED_SUBSCRIBERS).filter(|n| n % 4 != 1) {
        expected.insert(n, if n.is_multiple_of(2) { vec![] } else { vec!["shared"] });
    }
    for (n, topics) in &expected {
        check_topics_of(&*registry, *n, topics);
    }
    for n in (1..=SHARED_SUBSCRIBERS).filter(|n| n % 4 == 1) {
        check_topics_of(&*registry, n, &[]);
    }
    let limited = registry.topics_of(connection_id(LIMITED));
    assert_eq!(limited.len(), LIMIT, "topics_of the limited connection");

    let mut names: Vec<String> = TOPIC_POOL.iter().map(|t| (*t).to_owned()).collect();
    names.push("shared".to_owned());
    names.extend((0..THREADS).flat_map(|t| (0..4).map(move |i| format!("limit-{t}-{i}"))));
    for name in &names {
        let mut want: Vec<u128> = expected
            .iter()
            .filter(|(_, topics)| topics.contains(&name.as_str()))
            .map(|(n, _)| *n)
            .collect();
        if limited.contains(&topic(name)) {
            want.push(LIMITED);
        }
        check_topic(&*registry, name, &want);
    }
    let mut live: Vec<u128> = expected.keys().copied().collect();
    live.push(LIMITED);
    check_all(&*registry, &live);
}

/// Runs every check of the suite, in order, each on a fresh registry.
pub fn run_all(make: impl Fn() -> Arc<dyn ConnectionRegistry>) {
    register_then_get(&make);
    duplicate_id_is_rejected_and_original_kept(&make);
    unregister_removes_from_every_index(&make);
    find_by_user_returns_every_connection_of_the_user(&make);
    find_by_role_with_overlapping_roles(&make);
    all_and_count(&make);
    unknown_user_and_role_give_empty(&make);
    concurrent_operations_end_consistent(&make);
    registered_sink_is_the_one_registered(&make);
    subscribe_is_idempotent(&make);
    subscribe_enforces_the_topic_limit(&make);
    subscribe_requires_a_registered_connection(&make);
    unsubscribe_removes_only_that_topic(&make);
    unregister_removes_from_every_topic(&make);
    no_empty_topic_entries(&make);
    find_stream_dispatches_by_kind(&make);
    concurrent_topic_operations_end_consistent(&make);
}
