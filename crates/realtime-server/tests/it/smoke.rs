//! The benchmark load generator's smoke run against the real server: 200 authenticated
//! connections, a few broadcasts and user messages, every delivery exactly once. It asserts
//! correctness only, never a timing (speed is measured by `cargo xtask bench`).

use crate::support::{self, API_KEY, SECRET};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_connections_receive_every_broadcast_exactly_once() {
    let mut config = support::config();
    config.max_connections = 1_000;
    let running = support::start(config).await;
    let report = realtime_bench::smoke(running.addr, API_KEY, SECRET, 200, 5)
        .await
        .unwrap_or_else(|e| panic!("smoke run failed: {e}"));
    assert!(report.is_exactly_once(), "missing or extra deliveries: {report:?}");
    let api = running.api.clone();
    support::eventually("every load-generator connection is unregistered", || {
        api.connection_count() == 0
    })
    .await;
    support::stop(running).await;
}

/// The load generator's recovery path (the bench's recovery scenario, small): clients keep
/// the positions of `connected`, miss broadcasts while away, and reconnecting with `since`
/// each gets `recovered: true` and exactly the missed publications; a plain reconnect gets
/// none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_generator_clients_recover_what_they_missed_with_since() {
    use realtime_bench::shard::{Shard, ShardConfig};
    use realtime_bench::wire::{BenchPayload, publish_body};

    let running = support::start(support::config()).await;
    let mut shard = Shard::new(ShardConfig::new(running.addr, SECRET.to_vec(), 0));
    let opened = shard.connect(20, 8).await;
    assert_eq!((opened.ok, opened.failed), (20, 0), "{opened:?}");
    let mut seq = 0;
    for recover in [true, false, true] {
        shard.disconnect_all(std::time::Duration::from_secs(5)).await;
        let api = running.api.clone();
        support::eventually("every client is unregistered", || api.connection_count() == 0).await;
        for _ in 0..3 {
            seq += 1;
            let payload = BenchPayload { r: 1, s: seq, t: 0, to: None };
            let body = publish_body(&realtime_core::Target::Broadcast, &payload);
            let body = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(support::delivered(running.addr, &body).await, 0);
        }
        let report = shard.reconnect(8, recover.then_some(3)).await;
        assert_eq!(
            (report.ok, report.failed, report.not_recovered, report.wrong_count),
            (20, 0, 0, 0),
            "recover {recover}: {report:?}"
        );
        assert_eq!(report.recovered_messages, if recover { 60 } else { 0 }, "{report:?}");
    }
    // A client that claims a position beyond what it missed is told the count is wrong.
    shard.disconnect_all(std::time::Duration::from_secs(5)).await;
    let api = running.api.clone();
    support::eventually("every client is unregistered", || api.connection_count() == 0).await;
    let report = shard.reconnect(8, Some(1)).await;
    assert_eq!((report.ok, report.wrong_count), (0, 20), "{report:?}");
    support::stop(running).await;
}
