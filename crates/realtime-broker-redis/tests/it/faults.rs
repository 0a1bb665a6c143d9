//! Faults injected into a Redis of the test's own, each checked with one rule: every
//! publication reached the node exactly once, in order, or the node was told of the loss
//! (`LocalDelivery::lost`) before anything after it was delivered. Redis killed with
//! SIGKILL and restarted, the pub/sub connection killed, the output-buffer limit hit, an old
//! snapshot restored, a worker queue overflowing.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use realtime_broker_redis::{RedisBroker, RedisBrokerConfig};
use realtime_core::{ConnectionId, Envelope, Frame, Position, StreamName, UnixMillis, UserId};
use realtime_ports::{Broker, BrokerError, LocalDelivery};
use realtime_testkit::broker_contract::{Delivered, RecordingDelivery};
use realtime_testkit::{RedisProcess, WAIT};

use crate::support::{message, runtime};

fn config(server: &RedisProcess) -> RedisBrokerConfig {
    RedisBrokerConfig {
        probe_interval: Duration::from_secs(1),
        ..RedisBrokerConfig::new(server.url())
    }
}

/// A node: a broker with a recorder, interested in `to` and past its first read.
async fn node(server: &RedisProcess, to: &StreamName) -> (RedisBroker, Arc<RecordingDelivery>) {
    let broker = RedisBroker::connect(config(server)).await.unwrap_or_else(|e| panic!("{e}"));
    let recorder = RecordingDelivery::new();
    recorder.attach_to(&broker);
    broker.interest(to, true);
    broker.recover(to, None, 300).await.unwrap_or_else(|e| panic!("{e}"));
    (broker, recorder)
}

fn topic(name: &str) -> StreamName {
    StreamName::parse(&format!("topic:{name}")).unwrap_or_else(|e| panic!("{e}"))
}

/// An envelope of about `bytes` bytes.
fn sized(bytes: usize) -> Frame {
    let envelope = Envelope::from_parts("n", serde_json::json!({ "pad": "x".repeat(bytes) }))
        .unwrap_or_else(|e| panic!("{e}"));
    Frame::encode(&envelope)
}

/// Publishes `frame` to `to`; the position, or `None` when Redis refused (it is down).
async fn publish(publisher: &RedisBroker, to: &StreamName, frame: Frame) -> Option<Position> {
    match publisher.publish(to, frame, None).await {
        Ok(published) => published.position,
        Err(BrokerError::Unavailable(_)) => None,
        Err(other) => panic!("{other:?}"),
    }
}

async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The node is connected again after at least `reconnects` reconnections.
async fn back(broker: &RedisBroker, reconnects: u64) {
    eventually("the pub/sub connection back", || {
        let state = broker.state();
        state.connected && state.reconnects >= reconnects
    })
    .await;
}

/// What the node saw of `to`: `Some(position)` per delivery, `None` per reported loss.
fn events(recorder: &RecordingDelivery, to: &StreamName) -> Vec<Option<Position>> {
    recorder
        .calls()
        .into_iter()
        .filter_map(|call| match call {
            Delivered::Stream { stream, position, .. } if stream == *to => Some(position),
            Delivered::Lost { stream } if stream == *to => Some(None),
            _ => None,
        })
        .collect()
}

/// THE rule. `published` are the positions Redis gave, in order, after the node's first
/// read at offset `start`. Every delivery continues the one before (same epoch, next offset)
/// unless a loss was reported between them; nothing is delivered twice; a publication never
/// delivered comes before a reported loss.
#[track_caller]
fn delivered_or_reported(events: &[Option<Position>], start: u64, published: &[Position]) {
    let mut last: Option<Position> = None;
    let mut reported = false;
    let mut seen = std::collections::HashSet::new();
    for event in events {
        let Some(at) = event else {
            reported = true;
            continue;
        };
        assert!(seen.insert(at.clone()), "{at:?} delivered twice: {events:?}");
        let continues = match &last {
            Some(last) => last.epoch == at.epoch && at.offset == last.offset + 1,
            None => at.offset == start + 1,
        };
        assert!(continues || reported, "{at:?} after {last:?} without a loss reported: {events:?}");
        last = Some(at.clone());
        reported = false;
    }
    let missing: Vec<&Position> = published.iter().filter(|p| !seen.contains(*p)).collect();
    if let Some(latest) = published.last()
        && !seen.contains(latest)
    {
        assert!(reported, "the last publications {missing:?} neither delivered nor reported");
    }
}

/// How long what the node saw must stay unchanged before [`settle`] takes it as final.
const QUIET: Duration = Duration::from_millis(300);

/// Publishes one last message once the node is back and waits until what the node saw of
/// the stream is final: the last publication delivered, or a loss reported after the last
/// delivery, and nothing new for [`QUIET`]. One look is not enough: a loss reported early in
/// a burst can be followed by more deliveries and drops (and their own report) that a loaded
/// machine takes a while to work through. Returns the events.
async fn settle(
    publisher: &RedisBroker,
    recorder: &RecordingDelivery,
    to: &StreamName,
    published: &mut Vec<Position>,
) -> Vec<Option<Position>> {
    let last = publish(publisher, to, message()).await.unwrap_or_else(|| panic!("Redis is back"));
    published.push(last.clone());
    // What was seen last, and since when it has not changed.
    let seen = std::cell::RefCell::new((events(recorder, to), Instant::now()));
    eventually("the last publication delivered or a loss reported, then nothing new", || {
        let now = events(recorder, to);
        let mut seen = seen.borrow_mut();
        if now != seen.0 {
            *seen = (now, Instant::now());
        }
        let ended = seen.0.contains(&Some(last.clone())) || seen.0.last() == Some(&None);
        ended && seen.1.elapsed() >= QUIET
    })
    .await;
    seen.into_inner().0
}

/// SIGKILL of Redis while publishing, then a restart without its data: publishes in between
/// are refused (never a silent success), the node is back within 2 s of Redis, and the lost
/// stream is reported (its epoch is gone); what comes after is delivered in the new epoch.
#[test]
fn redis_killed_and_restarted_resumes_within_two_seconds_and_reports_the_loss() {
    runtime().block_on(async {
        let mut server = RedisProcess::start();
        let to = topic("kill");
        let (broker, recorder) = node(&server, &to).await;
        let mut published = Vec::new();
        for _ in 0..5 {
            published.extend(publish(&broker, &to, message()).await);
        }
        eventually("five delivered", || recorder.offsets(&to).len() == 5).await;
        server.kill();
        assert_eq!(publish(&broker, &to, message()).await, None, "refused while Redis is down");
        eventually("the node notices", || !broker.state().connected).await;
        server.restart();
        let restarted = Instant::now();
        back(&broker, 1).await;
        let resumed = restarted.elapsed();
        assert!(resumed < Duration::from_secs(2), "resumed {resumed:?} after Redis was back");
        eventually("the loss reported", || recorder.lost() == [to.clone()]).await;
        let events = settle(&broker, &recorder, &to, &mut published).await;
        delivered_or_reported(&events, 0, &published);
        let first_epoch = &published[0].epoch;
        let after = published.last().unwrap_or_else(|| panic!("published"));
        assert_ne!(&after.epoch, first_epoch, "a Redis without the data gives a new epoch");
        assert_eq!(events.last(), Some(&Some(after.clone())), "delivered in the new epoch");
        let recovered = broker.recover(&to, Some(&published[4]), 300).await;
        assert_eq!(recovered.map(|r| r.publications), Ok(None), "the old epoch cannot recover");
    });
}

/// `CLIENT KILL TYPE pubsub` in the middle of a run of publications from another node: the
/// node reconnects, and every publication was delivered once or its loss reported.
#[test]
fn a_killed_pubsub_connection_reconnects_and_loses_nothing_silently() {
    runtime().block_on(async {
        let server = RedisProcess::start();
        let to = topic("client-kill");
        let (broker, recorder) = node(&server, &to).await;
        let publisher =
            RedisBroker::connect(config(&server)).await.unwrap_or_else(|e| panic!("{e}"));
        let mut published = Vec::new();
        for i in 0..200 {
            if i == 50 || i == 120 {
                let killed = server.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
                assert!(killed.starts_with(':'), "{killed}");
            }
            published.extend(publish(&publisher, &to, message()).await);
        }
        back(&broker, 2).await;
        let events = settle(&publisher, &recorder, &to, &mut published).await;
        delivered_or_reported(&events, 0, &published);
        assert_eq!(published.len(), 201, "Redis itself stayed up");
    });
}

/// A tiny `client-output-buffer-limit pubsub`: Redis drops the node's pub/sub connection on
/// a large publication in a burst; the node reconnects and reports what it missed.
#[test]
fn the_output_buffer_limit_drops_the_node_which_reports_the_loss() {
    runtime().block_on(async {
        let server = RedisProcess::start();
        let to = topic("buffer");
        let (broker, recorder) = node(&server, &to).await;
        let set =
            server.command(&["CONFIG", "SET", "client-output-buffer-limit", "pubsub 16kb 8kb 1"]);
        assert_eq!(set, "+OK");
        let mut published = Vec::new();
        for i in 0..60 {
            let frame = if i % 20 == 10 { sized(64 * 1024) } else { message() };
            published.extend(publish(&broker, &to, frame).await);
        }
        back(&broker, 1).await;
        let events = settle(&broker, &recorder, &to, &mut published).await;
        delivered_or_reported(&events, 0, &published);
        assert!(recorder.lost().contains(&to), "the large publications never arrived");
    });
}

/// Redis restarted from an old snapshot: the stream's offsets go back in the same epoch.
/// The node reports it, the stream gets a new epoch (so no client takes the restored
/// offsets for the ones it saw), and what comes after is delivered.
#[test]
fn a_stale_snapshot_is_detected_and_the_epoch_rotated() {
    runtime().block_on(async {
        let dir = std::env::temp_dir().join(format!("realtime-stale-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let mut server = RedisProcess::start_in(&dir);
        let to = topic("stale");
        let (broker, recorder) = node(&server, &to).await;
        let mut published = Vec::new();
        for i in 0..10 {
            if i == 5 {
                assert_eq!(server.command(&["SAVE"]), "+OK");
            }
            published.extend(publish(&broker, &to, message()).await);
        }
        eventually("ten delivered", || recorder.offsets(&to).len() == 10).await;
        server.restart();
        back(&broker, 1).await;
        eventually("the loss reported", || recorder.lost() == [to.clone()]).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let top = broker.recover(&to, None, 300).await.ok().and_then(|r| r.position);
            if top.as_ref().is_some_and(|top| top.epoch != published[0].epoch) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "no new epoch: {top:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let events = settle(&broker, &recorder, &to, &mut published).await;
        delivered_or_reported(&events, 0, &published);
        let after = published.last().unwrap_or_else(|| panic!("published"));
        assert_ne!(after.epoch, published[0].epoch, "the epoch was rotated");
        assert_eq!(after.offset, 1);
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// A node whose delivery is slow, with a worker queue of 2: a burst overflows it; the
/// dropped messages are counted and reported, never skipped silently.
#[test]
fn a_full_worker_queue_drops_and_reports() {
    #[derive(Debug)]
    struct Slow(Arc<RecordingDelivery>);
    impl LocalDelivery for Slow {
        fn deliver(
            &self,
            stream: &StreamName,
            position: Option<&Position>,
            frame: &Frame,
        ) -> usize {
            std::thread::sleep(Duration::from_millis(3));
            self.0.deliver(stream, position, frame)
        }
        fn deliver_to_connection(&self, id: ConnectionId, frame: &Frame) -> bool {
            self.0.deliver_to_connection(id, frame)
        }
        fn revoke(&self, user: &UserId, issued_before: UnixMillis) -> usize {
            self.0.revoke(user, issued_before)
        }
        fn lost(&self, stream: &StreamName) -> usize {
            LocalDelivery::lost(&*self.0, stream)
        }
    }
    runtime().block_on(async {
        let server = RedisProcess::start();
        let to = topic("slow");
        let broker =
            RedisBroker::connect(RedisBrokerConfig { queue_capacity: 2, ..config(&server) })
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        let recorder = RecordingDelivery::new();
        let slow = Arc::new(Slow(Arc::clone(&recorder)));
        broker.attach(Arc::downgrade(&slow) as Weak<dyn LocalDelivery>);
        broker.interest(&to, true);
        broker.recover(&to, None, 300).await.unwrap_or_else(|e| panic!("{e}"));
        let burst = (0..100).map(|_| broker.publish(&to, message(), None));
        let mut published: Vec<Position> = futures_util::future::join_all(burst)
            .await
            .into_iter()
            .filter_map(|p| p.ok().and_then(|p| p.position))
            .collect();
        published.sort_by_key(|p| p.offset);
        assert_eq!(published.len(), 100);
        let events = settle(&broker, &recorder, &to, &mut published).await;
        delivered_or_reported(&events, 0, &published);
        assert!(broker.state().dropped > 0, "the burst overflowed the queue");
        assert!(recorder.lost().contains(&to));
    });
}

/// Whether `to`'s keys are on `server`.
fn holds(server: &RedisProcess, to: &StreamName) -> bool {
    server.command(&["EXISTS", &format!("rt:{{{to}}}:meta")]) == ":1"
}

/// Two shards, and SIGKILL of the second one's Redis, then a restart without its data: the
/// first shard's stream keeps publishing and delivering with nothing reported; the second's
/// is refused (publish and recover) while it is down, and reported lost once it is back,
/// then continues in a new epoch; what is node-wide (on the first shard) keeps working.
#[test]
fn one_shard_killed_refuses_only_its_own_streams_and_reports_them_after_restart() {
    runtime().block_on(async {
        let (kept, mut killed) = (RedisProcess::start(), RedisProcess::start());
        let config = RedisBrokerConfig {
            probe_interval: Duration::from_secs(1),
            ..RedisBrokerConfig::new(format!("{},{}", kept.url(), killed.url()))
        };
        let broker = RedisBroker::connect(config).await.unwrap_or_else(|e| panic!("{e}"));
        let recorder = RecordingDelivery::new();
        recorder.attach_to(&broker);
        // One stream on each shard (a read creates the stream's keys on its shard).
        let (mut on_kept, mut on_killed) = (None, None);
        for i in 0..64 {
            let to = topic(&format!("shard-{i}"));
            broker.recover(&to, None, 300).await.unwrap_or_else(|e| panic!("{e}"));
            assert_ne!(holds(&kept, &to), holds(&killed, &to), "{to}: on exactly one");
            let slot = if holds(&kept, &to) { &mut on_kept } else { &mut on_killed };
            slot.get_or_insert(to);
            if on_kept.is_some() && on_killed.is_some() {
                break;
            }
        }
        let (Some(on_kept), Some(on_killed)) = (on_kept, on_killed) else {
            panic!("64 streams all on one shard");
        };
        for to in [&on_kept, &on_killed] {
            broker.interest(to, true);
            broker.recover(to, None, 300).await.unwrap_or_else(|e| panic!("{e}"));
        }
        let (mut kept_published, mut killed_published) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            kept_published.extend(publish(&broker, &on_kept, message()).await);
            killed_published.extend(publish(&broker, &on_killed, message()).await);
        }
        assert_eq!((kept_published.len(), killed_published.len()), (3, 3));
        eventually("three each delivered", || {
            recorder.offsets(&on_kept).len() == 3 && recorder.offsets(&on_killed).len() == 3
        })
        .await;

        killed.kill();
        assert_eq!(publish(&broker, &on_killed, message()).await, None, "refused while down");
        eventually("the node notices", || broker.state().shards_connected == 1).await;
        assert!(!broker.state().connected);
        let recovered = broker.recover(&on_killed, None, 300).await;
        assert!(matches!(recovered, Err(BrokerError::Unavailable(_))), "{recovered:?}");
        for _ in 0..3 {
            let position = publish(&broker, &on_kept, message()).await;
            kept_published.push(position.unwrap_or_else(|| panic!("the first shard is up")));
        }
        eventually("the first shard's stream still delivered", || {
            recorder.offsets(&on_kept).len() == 6
        })
        .await;
        let recovered = broker.recover(&on_kept, Some(&kept_published[2]), 300).await;
        let replayed = recovered.map(|r| r.publications.map(|p| p.len()));
        assert_eq!(replayed, Ok(Some(3)), "the first shard's history is there");
        let far = UnixMillis(u64::MAX / 2);
        let alice = realtime_testkit::fixtures::user("alice");
        assert_eq!(broker.revoke(&alice, UnixMillis(1_000), far).await, Ok(()), "node-wide");

        killed.restart();
        back(&broker, 1).await;
        eventually("the loss reported", || recorder.lost() == [on_killed.clone()]).await;
        let events_killed = settle(&broker, &recorder, &on_killed, &mut killed_published).await;
        delivered_or_reported(&events_killed, 0, &killed_published);
        let after = killed_published.last().unwrap_or_else(|| panic!("published"));
        assert_ne!(after.epoch, killed_published[0].epoch, "a new epoch on the restarted shard");
        let events_kept = settle(&broker, &recorder, &on_kept, &mut kept_published).await;
        delivered_or_reported(&events_kept, 0, &kept_published);
        let delivered: Vec<Option<Position>> = kept_published.iter().cloned().map(Some).collect();
        assert_eq!(events_kept, delivered, "the first shard's stream: all, once, no loss");
    });
}
