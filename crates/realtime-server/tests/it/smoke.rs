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
