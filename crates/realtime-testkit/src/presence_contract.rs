//! The [`Presence`] contract suite: checks every presence adapter must pass. Each check is a
//! `pub fn` taking a factory of fresh, empty presences; adapters run them through
//! [`presence_contract_tests!`](crate::presence_contract_tests), one `#[test]` per check.

use std::sync::Arc;

use realtime_core::TopicName;
use realtime_ports::{Presence, PresenceScope, TopicMember, UserPresence};

use crate::fixtures::{connection_id, user};

type Make<'a> = &'a dyn Fn() -> Arc<dyn Presence>;

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
        .block_on(future)
}

fn topic(raw: &str) -> TopicName {
    TopicName::new(raw).unwrap_or_else(|e| panic!("{e}"))
}

fn online(presence: &dyn Presence, name: &str) -> UserPresence {
    block_on(presence.user(&user(name))).unwrap_or_else(|e| panic!("{e}"))
}

fn members(presence: &dyn Presence, name: &str) -> Vec<(String, usize)> {
    block_on(presence.topic(&topic(name)))
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|TopicMember { user_id, connections }| (user_id.as_str().to_owned(), connections))
        .collect()
}

/// The online count counts connections (every tab), not users, and topics do not add to it.
pub fn the_online_count_counts_connections(make: Make<'_>) {
    let presence = make();
    let room = topic("room");
    let count = |p: &dyn Presence| block_on(p.online_count()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(count(&*presence), 0);
    presence.join(PresenceScope::Online, &user("frank"), connection_id(1));
    presence.join(PresenceScope::Online, &user("frank"), connection_id(2));
    presence.join(PresenceScope::Online, &user("gina"), connection_id(3));
    presence.join(PresenceScope::Topic(&room), &user("gina"), connection_id(3));
    assert_eq!(count(&*presence), 3);
    presence.leave(PresenceScope::Online, &user("frank"), connection_id(2));
    assert_eq!(count(&*presence), 2);
}

/// A user's first connection in a scope joins (true), a second tab does not; the last one
/// out leaves (true), the one before does not.
pub fn a_users_first_connection_joins_and_its_last_leaves(make: Make<'_>) {
    let presence = make();
    let carol = user("carol");
    let (tab1, tab2) = (connection_id(1), connection_id(2));
    assert!(presence.join(PresenceScope::Online, &carol, tab1), "first tab joins");
    assert!(!presence.join(PresenceScope::Online, &carol, tab2), "second tab is no join");
    let expected = UserPresence { user_id: carol.clone(), online: true, connections: 2 };
    assert_eq!(online(&*presence, "carol"), expected);
    assert!(!presence.leave(PresenceScope::Online, &carol, tab1), "one tab left: no leave");
    assert!(presence.leave(PresenceScope::Online, &carol, tab2), "the last tab leaves");
    let expected = UserPresence { user_id: carol, online: false, connections: 0 };
    assert_eq!(online(&*presence, "carol"), expected);
}

/// A second join of the same connection, and a leave of one that is not there, change
/// nothing and return false.
pub fn join_and_leave_are_idempotent_per_connection(make: Make<'_>) {
    let presence = make();
    let dave = user("dave");
    let orders = topic("orders");
    let scope = PresenceScope::Topic(&orders);
    assert!(!presence.leave(scope, &dave, connection_id(1)), "not there: no leave");
    assert!(presence.join(scope, &dave, connection_id(1)));
    assert!(!presence.join(scope, &dave, connection_id(1)), "the same connection again");
    assert_eq!(members(&*presence, "orders"), [("dave".to_owned(), 1)]);
    assert!(!presence.leave(scope, &dave, connection_id(2)), "another connection");
    assert!(presence.leave(scope, &dave, connection_id(1)));
    assert!(!presence.leave(scope, &dave, connection_id(1)), "twice");
    assert_eq!(members(&*presence, "orders"), []);
}

/// A topic lists its members sorted by user id, each with its connection count.
pub fn topic_members_are_sorted_with_their_counts(make: Make<'_>) {
    let presence = make();
    let room = topic("chat:room-1");
    let scope = PresenceScope::Topic(&room);
    presence.join(scope, &user("zoe"), connection_id(1));
    presence.join(scope, &user("ann"), connection_id(2));
    presence.join(scope, &user("ann"), connection_id(3));
    presence.join(scope, &user("max"), connection_id(4));
    let expected = [("ann".to_owned(), 2), ("max".to_owned(), 1), ("zoe".to_owned(), 1)];
    assert_eq!(members(&*presence, "chat:room-1"), expected);
    assert_eq!(members(&*presence, "chat:room-2"), [], "an unknown topic is empty");
}

/// Being online and being in a topic are separate scopes, as are two topics.
pub fn scopes_are_independent(make: Make<'_>) {
    let presence = make();
    let eve = user("eve");
    let (a, b) = (topic("a"), topic("b"));
    assert!(presence.join(PresenceScope::Topic(&a), &eve, connection_id(1)));
    assert!(!online(&*presence, "eve").online, "a topic member is not online by that");
    assert!(presence.join(PresenceScope::Online, &eve, connection_id(1)), "first online");
    assert!(presence.join(PresenceScope::Topic(&b), &eve, connection_id(1)), "first in b");
    assert!(presence.leave(PresenceScope::Topic(&a), &eve, connection_id(1)));
    assert_eq!(members(&*presence, "b"), [("eve".to_owned(), 1)]);
    assert!(online(&*presence, "eve").online);
}

/// 8 threads joining and leaving their own connections of shared users end with exactly the
/// connections still joined, and exactly one join per user that was first.
pub fn concurrent_joins_and_leaves_end_consistent(make: Make<'_>) {
    let presence = make();
    let room = topic("room");
    std::thread::scope(|scope| {
        for t in 0..8u128 {
            let presence = &presence;
            let room = &room;
            scope.spawn(move || {
                for i in 0..200u128 {
                    let who = user(&format!("u{}", i % 10));
                    let id = connection_id(t * 1_000 + i);
                    presence.join(PresenceScope::Topic(room), &who, id);
                    presence.join(PresenceScope::Online, &who, id);
                    if i % 2 == 0 {
                        presence.leave(PresenceScope::Topic(room), &who, id);
                        presence.leave(PresenceScope::Online, &who, id);
                    }
                }
            });
        }
    });
    // Odd i stay joined: users u1, u3, ..., u9, each with 8 threads x 20 connections.
    let expected: Vec<(String, usize)> =
        (1..10).step_by(2).map(|u| (format!("u{u}"), 160)).collect();
    assert_eq!(members(&*presence, "room"), expected);
    for u in 0..10 {
        let count = online(&*presence, &format!("u{u}")).connections;
        assert_eq!(count, if u % 2 == 1 { 160 } else { 0 }, "u{u}");
    }
}
