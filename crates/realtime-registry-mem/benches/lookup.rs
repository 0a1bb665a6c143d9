//! Criterion micro-benchmarks of registry lookups at 100,000 registered connections: by id,
//! by user (2 connections each), by a role held by 100 connections, by a topic 100 of them
//! subscribe to, the count, a register/unregister pair and a subscribe/unsubscribe pair.
//! Lookups are indexed, so their cost should not depend on N.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use realtime_core::Frame;
use realtime_ports::{CloseReason, ConnectionRegistry, ConnectionSink, SendError};
use realtime_registry_mem::InMemoryRegistry;
use realtime_testkit::fixtures::{connection, connection_id, role, topic, user};

/// Entries in the registry.
const N: u128 = 100_000;

/// A sink that drops everything: the benchmark measures the registry only.
struct NullSink;

impl ConnectionSink for NullSink {
    fn send(&self, _frame: Frame) -> Result<(), SendError> {
        Ok(())
    }

    fn send_batch(&self, _frames: Vec<Frame>) -> Result<(), SendError> {
        Ok(())
    }

    fn close(&self, _reason: CloseReason) {}
}

/// Topics each connection may hold in the benchmark.
const MAX_TOPICS: usize = 64;

/// 100,000 connections: user `u{i / 2}` (two tabs each); every 1,000th also has `admin`;
/// every connection is subscribed to `t{i % 10}`, and every 1,000th also to `hot`.
fn filled() -> InMemoryRegistry {
    let registry = InMemoryRegistry::new();
    let sink: Arc<dyn ConnectionSink> = Arc::new(NullSink);
    for i in 0..N {
        let user_id = format!("u{}", i / 2);
        let roles: &[&str] = if i % 1000 == 0 { &["member", "admin"] } else { &["member"] };
        registry
            .register(Arc::new(connection(i, &user_id, roles)), sink.clone())
            .unwrap_or_else(|e| panic!("{e}"));
        let id = connection_id(i);
        let ten = topic(&format!("t{}", i % 10));
        registry.subscribe(id, &ten, MAX_TOPICS).unwrap_or_else(|e| panic!("{e}"));
        if i % 1000 == 0 {
            registry.subscribe(id, &topic("hot"), MAX_TOPICS).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    registry
}

fn lookups(c: &mut Criterion) {
    let registry = filled();
    assert_eq!(registry.count(), N as usize);
    let id = connection_id(N / 2 + 7);
    let someone = user(&format!("u{}", N / 4 + 3));
    let admin = role("admin");
    let mut group = c.benchmark_group("registry_100k");
    group.bench_function("get", |b| b.iter(|| registry.get(black_box(id))));
    group.bench_function("find_by_user_2_matches", |b| {
        b.iter(|| registry.find_by_user(black_box(&someone)))
    });
    group.bench_function("find_by_role_100_matches", |b| {
        b.iter(|| registry.find_by_role(black_box(&admin)))
    });
    let hot = topic("hot");
    assert_eq!(registry.topic_count(&hot), 100);
    group.bench_function("find_by_topic_100_matches", |b| {
        b.iter(|| registry.find_by_topic(black_box(&hot)))
    });
    group.bench_function("topic_count", |b| b.iter(|| registry.topic_count(black_box(&hot))));
    group.bench_function("count", |b| b.iter(|| registry.count()));
    let fresh = topic("fresh");
    group.bench_function("subscribe_then_unsubscribe", |b| {
        b.iter(|| {
            let subscribed = registry.subscribe(black_box(id), &fresh, MAX_TOPICS);
            (subscribed, registry.unsubscribe(black_box(id), &fresh))
        })
    });
    let sink: Arc<dyn ConnectionSink> = Arc::new(NullSink);
    group.bench_function("register_then_unregister", |b| {
        b.iter_batched(
            || connection(N + 1, "newcomer", &["member"]),
            |c| {
                let id = c.id;
                registry.register(Arc::new(c), sink.clone()).unwrap_or_else(|e| panic!("{e}"));
                registry.unregister(id)
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
