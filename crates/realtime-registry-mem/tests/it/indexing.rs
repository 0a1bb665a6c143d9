//! Lookups go through the indexes: with many connections registered, every user, role and
//! topic lookup returns exactly its matches.
//!
//! No timing is asserted. The checks perform one lookup per registered connection: with
//! indexes that is linear work, while a registry that scanned every connection per lookup
//! would need billions of comparisons and never finish in the test timeout.

use std::sync::Arc;

use realtime_core::Connection;
use realtime_ports::{ConnectionRegistry, ConnectionSink};
use realtime_registry_mem::InMemoryRegistry;
use realtime_testkit::RecordingSink;
use realtime_testkit::fixtures::{connection, connection_id, role, topic, user};

/// Connection `i` belongs to user `user-{i}`; with `solo_roles` it also holds role
/// `solo-{i}`, and every thousandth connection holds role `rare`.
fn nth(i: u128, solo_roles: bool) -> Connection {
    let solo = format!("solo-{i}");
    let rare = i.is_multiple_of(1_000);
    let roles: &[&str] = match (solo_roles, rare) {
        (true, true) => &[solo.as_str(), "rare"],
        (true, false) => &[solo.as_str()],
        (false, true) => &["rare"],
        (false, false) => &[],
    };
    connection(i, &format!("user-{i}"), roles)
}

fn filled(n: u128, solo_roles: bool) -> InMemoryRegistry {
    let registry = InMemoryRegistry::new();
    let sink: Arc<dyn ConnectionSink> = Arc::new(RecordingSink::new());
    for i in 0..n {
        assert_eq!(
            registry.register(Arc::new(nth(i, solo_roles)), Arc::clone(&sink)),
            Ok(()),
            "{i}"
        );
    }
    assert_eq!(registry.count(), n as usize);
    registry
}

#[test]
fn every_user_lookup_among_100k_returns_exactly_its_connection() {
    const N: u128 = 100_000;
    let registry = filled(N, false);
    for i in 0..N {
        let found = registry.find_by_user(&user(&format!("user-{i}")));
        assert_eq!(found.len(), 1, "user-{i}");
        assert_eq!(found[0].connection.id, connection_id(i));
        assert_eq!(found.capacity(), 1, "the returned Vec is sized exactly");
    }
    assert!(registry.find_by_user(&user("user-absent")).is_empty());
    let mut rare: Vec<_> =
        registry.find_by_role(&role("rare")).iter().map(|r| r.connection.id).collect();
    rare.sort();
    let expected: Vec<_> = (0..N).filter(|i| i.is_multiple_of(1_000)).map(connection_id).collect();
    assert_eq!(rare, expected);
}

#[test]
fn every_role_lookup_stays_exact_as_half_the_connections_leave() {
    const N: u128 = 20_000;
    let registry = filled(N, true);
    for i in 0..N {
        let found = registry.find_by_role(&role(&format!("solo-{i}")));
        assert_eq!(found.len(), 1, "solo-{i}");
        assert_eq!(found[0].connection.id, connection_id(i));
    }
    for i in (0..N).filter(|i| i.is_multiple_of(2)) {
        assert!(registry.unregister(connection_id(i)).is_some(), "unregister {i}");
    }
    assert_eq!(registry.count(), N as usize / 2);
    for i in 0..N {
        let expected = usize::from(i % 2 == 1);
        assert_eq!(registry.find_by_user(&user(&format!("user-{i}"))).len(), expected, "user-{i}");
        assert_eq!(registry.find_by_role(&role(&format!("solo-{i}"))).len(), expected, "solo-{i}");
    }
    // Every thousandth connection is even, so no one holds `rare` any more.
    assert!(registry.find_by_role(&role("rare")).is_empty());
}

#[test]
fn every_topic_lookup_stays_exact_as_subscribers_leave() {
    const N: u128 = 20_000;
    let registry = filled(N, false);
    for i in 0..N {
        let own = registry.subscribe(connection_id(i), &topic(&format!("own-{i}")), 2);
        assert_eq!(own, Ok(true), "own-{i}");
        assert_eq!(registry.subscribe(connection_id(i), &topic("all"), 2), Ok(true), "all {i}");
    }
    assert_eq!(registry.topic_count(&topic("all")), N as usize);
    for i in 0..N {
        let found = registry.find_by_topic(&topic(&format!("own-{i}")));
        assert_eq!(found.len(), 1, "own-{i}");
        assert_eq!(found[0].connection.id, connection_id(i));
        assert_eq!(found.capacity(), 1, "the returned Vec is sized exactly");
        assert_eq!(registry.topic_count(&topic(&format!("own-{i}"))), 1);
    }
    // Odd connections unsubscribe from their own topic, every fourth one is unregistered.
    for i in 0..N {
        if i % 2 == 1 {
            assert!(registry.unsubscribe(connection_id(i), &topic(&format!("own-{i}"))));
        } else if i.is_multiple_of(4) {
            assert!(registry.unregister(connection_id(i)).is_some(), "unregister {i}");
        }
    }
    for i in 0..N {
        let expected = usize::from(i % 4 == 2);
        let own = topic(&format!("own-{i}"));
        assert_eq!(registry.find_by_topic(&own).len(), expected, "own-{i}");
        assert_eq!(registry.topic_count(&own), expected, "own-{i}");
    }
    assert_eq!(registry.topic_count(&topic("all")), N as usize * 3 / 4);
}
