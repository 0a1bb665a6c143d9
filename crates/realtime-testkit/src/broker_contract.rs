//! The [`Broker`] contract suite: checks every broker adapter must pass (the in-memory one
//! now, the Redis one next), including the recovery decision and the no-gap hand-over
//! between a history read and live delivery.
//!
//! Each check is a `pub fn` taking a factory that makes a fresh broker for a
//! [`HistoryPolicy`]; it drives the broker on its own tokio runtime and panics with a
//! descriptive message on a breach.
//!
//! Deliveries may be asynchronous (a broker on a message bus hands them over from its read
//! loop): every delivery check waits, at most [`WAIT`], until the expected deliveries are
//! there, then lets a short [`SETTLE`] pass and compares exactly (these, in order, each once,
//! nothing else). A case that expects deliveries first declares its interest and reads the
//! stream ([`join`]), as the service does when a stream's first connection joins: only
//! interested nodes get a stream's publications, from the read on. Adapters run them through
//! [`broker_contract_tests!`](crate::broker_contract_tests), one `#[test]` per check.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use realtime_core::{
    ConnectionId, Envelope, Frame, HistoryLimits, HistoryPolicy, IdempotencyKey, Position,
    StreamName, UnixMillis, UserId,
};
use realtime_ports::{Broker, LocalDelivery, Recovered};

use crate::WAIT;
use crate::fixtures::{connection_id, user};

/// One call the broker made into [`RecordingDelivery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// [`LocalDelivery::deliver`].
    Stream {
        /// The stream.
        stream: StreamName,
        /// The position the broker passed.
        position: Option<Position>,
        /// The frame.
        frame: Frame,
    },
    /// [`LocalDelivery::deliver_to_connection`].
    Connection {
        /// The connection.
        id: ConnectionId,
        /// The frame.
        frame: Frame,
    },
    /// [`LocalDelivery::revoke`].
    Revoke {
        /// Whose tokens.
        user: UserId,
        /// Issued before.
        issued_before: UnixMillis,
    },
    /// [`LocalDelivery::lost`].
    Lost {
        /// The stream whose publications may have been missed.
        stream: StreamName,
    },
}

/// A [`LocalDelivery`] that records every call, answering `deliver` with 1.
#[derive(Debug, Default)]
pub struct RecordingDelivery {
    calls: Mutex<Vec<Delivered>>,
}

impl RecordingDelivery {
    /// A recorder with no calls.
    pub fn new() -> Arc<RecordingDelivery> {
        Arc::new(RecordingDelivery::default())
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Delivered> {
        self.calls.lock().clone()
    }

    /// The positions of the deliveries to `stream`, in order (`None` for one without).
    pub fn offsets(&self, stream: &StreamName) -> Vec<Option<u64>> {
        self.calls
            .lock()
            .iter()
            .filter_map(|call| match call {
                Delivered::Stream { stream: s, position, .. } if s == stream => {
                    Some(position.as_ref().map(|p| p.offset))
                }
                _ => None,
            })
            .collect()
    }

    /// What `stream` saw, in order: `Some(offset)` per delivery with a position, `None` per
    /// loss reported.
    pub fn offsets_and_losses(&self, stream: &StreamName) -> Vec<Option<u64>> {
        self.calls
            .lock()
            .iter()
            .filter_map(|call| match call {
                Delivered::Stream { stream: s, position: Some(p), .. } if s == stream => {
                    Some(Some(p.offset))
                }
                Delivered::Lost { stream: s } if s == stream => Some(None),
                _ => None,
            })
            .collect()
    }

    /// The streams the broker reported as possibly missing publications, in order.
    pub fn lost(&self) -> Vec<StreamName> {
        self.calls
            .lock()
            .iter()
            .filter_map(|call| match call {
                Delivered::Lost { stream } => Some(stream.clone()),
                _ => None,
            })
            .collect()
    }

    /// Attaches this recorder to `broker`.
    pub fn attach_to(self: &Arc<Self>, broker: &dyn Broker) {
        let weak: Weak<dyn LocalDelivery> = Arc::downgrade(self) as Weak<dyn LocalDelivery>;
        broker.attach(weak);
    }
}

impl LocalDelivery for RecordingDelivery {
    fn deliver(&self, stream: &StreamName, position: Option<&Position>, frame: &Frame) -> usize {
        self.calls.lock().push(Delivered::Stream {
            stream: stream.clone(),
            position: position.cloned(),
            frame: frame.clone(),
        });
        1
    }

    fn deliver_to_connection(&self, id: ConnectionId, frame: &Frame) -> bool {
        self.calls.lock().push(Delivered::Connection { id, frame: frame.clone() });
        true
    }

    fn revoke(&self, user: &UserId, issued_before: UnixMillis) -> usize {
        self.calls.lock().push(Delivered::Revoke { user: user.clone(), issued_before });
        0
    }

    fn lost(&self, stream: &StreamName) -> usize {
        self.calls.lock().push(Delivered::Lost { stream: stream.clone() });
        0
    }
}

/// How long a check waits, after the expected deliveries arrived, for any that should not
/// come (a duplicate, an extra one) before it compares.
pub const SETTLE: Duration = Duration::from_millis(50);

/// Waits (at most [`WAIT`]) until `done` holds for the offsets delivered to `to`, lets
/// [`SETTLE`] pass and returns them.
async fn delivered(
    recorder: &RecordingDelivery,
    to: &StreamName,
    done: impl Fn(&[Option<u64>]) -> bool,
) -> Vec<Option<u64>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let offsets = recorder.offsets(to);
        if done(&offsets) {
            tokio::time::sleep(SETTLE).await;
            let lost = recorder.lost();
            assert!(lost.is_empty(), "the broker reported a loss in normal operation: {lost:?}");
            return recorder.offsets(to);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deliveries to {to} incomplete after {WAIT:?}: {offsets:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until at least `n` deliveries to `to` arrived; see [`delivered`].
async fn at_least(recorder: &RecordingDelivery, to: &StreamName, n: usize) -> Vec<Option<u64>> {
    delivered(recorder, to, |offsets| offsets.len() >= n).await
}

/// Declares this node's interest in `to` and reads its top: from then on every publication
/// to `to` reaches the recorder (the port's no-gap rule).
async fn join(broker: &dyn Broker, to: &StreamName) -> Option<Position> {
    broker.interest(to, true);
    recover(broker, to, None, 300).await.position
}

/// A fresh broker with `policy`, attached to a fresh recorder.
type Make<'a> = &'a dyn Fn(HistoryPolicy) -> Arc<dyn Broker>;

fn setup(make: Make<'_>, policy: HistoryPolicy) -> (Arc<dyn Broker>, Arc<RecordingDelivery>) {
    let broker = make(policy);
    let recorder = RecordingDelivery::new();
    recorder.attach_to(&*broker);
    (broker, recorder)
}

fn run<F: std::future::Future<Output = ()>>(future: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
        .block_on(future);
}

fn stream(raw: &str) -> StreamName {
    StreamName::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"))
}

/// The encoded envelope `{"type":"n","payload":{"i":i}}`.
fn message(i: u64) -> Frame {
    let envelope =
        Envelope::from_parts("n", serde_json::json!({ "i": i })).unwrap_or_else(|e| panic!("{e}"));
    Frame::encode(&envelope)
}

fn json(frame: &Frame) -> serde_json::Value {
    serde_json::from_str(frame.as_str()).unwrap_or_else(|e| panic!("{e}: {frame:?}"))
}

async fn publish(broker: &dyn Broker, to: &StreamName, i: u64) -> Option<Position> {
    broker
        .publish(to, message(i), None)
        .await
        .unwrap_or_else(|e| panic!("publish to {to}: {e}"))
        .position
}

async fn recover(
    broker: &dyn Broker,
    from: &StreamName,
    since: Option<&Position>,
    max: usize,
) -> Recovered {
    broker.recover(from, since, max).await.unwrap_or_else(|e| panic!("recover {from}: {e}"))
}

/// The `i` payload values of replayed frames, checking each carries its stream and epoch.
fn replayed(frames: &[Frame], from: &StreamName, epoch: &str) -> Vec<u64> {
    frames
        .iter()
        .map(|frame| {
            let value = json(frame);
            assert_eq!(value["stream"], from.to_string(), "{value}");
            assert_eq!(value["epoch"], epoch, "{value}");
            value["payload"]["i"].as_u64().unwrap_or_else(|| panic!("{value}"))
        })
        .collect()
}

/// Offsets count from 1 in one epoch; each publication is delivered once, in order, with its
/// position in the frame (`stream`, `offset`, `epoch` beside `type` and `payload`).
pub fn offsets_count_up_and_frames_carry_their_position(make: Make<'_>) {
    run(async {
        let (broker, recorder) = setup(make, HistoryPolicy::default());
        let to = stream("user:alice");
        join(&*broker, &to).await;
        let mut positions = Vec::new();
        for i in 1..=3 {
            positions
                .push(publish(&*broker, &to, i).await.unwrap_or_else(|| panic!("no position")));
        }
        assert_eq!(positions.iter().map(|p| p.offset).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(positions.windows(2).all(|w| w[0].epoch == w[1].epoch), "{positions:?}");
        assert_eq!(at_least(&recorder, &to, 3).await, [Some(1), Some(2), Some(3)]);
        for (call, position) in recorder.calls().iter().zip(&positions) {
            let Delivered::Stream { frame, position: delivered, .. } = call else {
                panic!("{call:?}");
            };
            assert_eq!(delivered.as_ref(), Some(position));
            let value = json(frame);
            assert_eq!(value["type"], "n");
            assert_eq!(value["stream"], "user:alice");
            assert_eq!(value["offset"], position.offset);
            assert_eq!(value["epoch"], position.epoch.as_str());
            assert_eq!(value["payload"]["i"], position.offset);
        }
    });
}

/// Each stream has its own offsets.
pub fn streams_are_independent(make: Make<'_>) {
    run(async {
        let (broker, _recorder) = setup(make, HistoryPolicy::default());
        let (a, b) = (stream("topic:a"), stream("role:b"));
        publish(&*broker, &a, 1).await;
        publish(&*broker, &a, 2).await;
        let first_b = publish(&*broker, &b, 1).await.unwrap_or_else(|| panic!("no position"));
        assert_eq!(first_b.offset, 1);
        let top_a = recover(&*broker, &a, None, 300).await.position;
        assert_eq!(top_a.map(|p| p.offset), Some(2));
    });
}

/// Without `since`, `recover` gives the top and no publications; a new stream is at 0.
pub fn recover_without_since_gives_the_top_only(make: Make<'_>) {
    run(async {
        let (broker, _recorder) = setup(make, HistoryPolicy::default());
        let to = stream("broadcast");
        let fresh = recover(&*broker, &to, None, 300).await;
        let epoch = fresh.position.as_ref().map(|p| p.epoch.clone());
        assert_eq!(fresh.position.as_ref().map(|p| p.offset), Some(0), "{fresh:?}");
        assert_eq!(fresh.publications, None);
        publish(&*broker, &to, 1).await;
        let read = recover(&*broker, &to, None, 300).await;
        assert_eq!(read.position.as_ref().map(|p| p.offset), Some(1));
        assert_eq!(read.position.map(|p| p.epoch), epoch, "the epoch stays");
        assert_eq!(read.publications, None);
    });
}

/// Recovery replays exactly the publications after `since`, in order; at the top it is an
/// empty success.
pub fn recover_replays_everything_after_since(make: Make<'_>) {
    run(async {
        let (broker, _recorder) = setup(make, HistoryPolicy::default());
        let to = stream("topic:orders");
        let mut last = None;
        for i in 1..=5 {
            last = publish(&*broker, &to, i).await;
        }
        let top = last.unwrap_or_else(|| panic!("no position"));
        let since = Position { epoch: top.epoch.clone(), offset: 2 };
        let read = recover(&*broker, &to, Some(&since), 300).await;
        let frames = read.publications.unwrap_or_else(|| panic!("not recovered"));
        assert_eq!(replayed(&frames, &to, top.epoch.as_str()), [3, 4, 5]);
        assert_eq!(read.position.as_ref(), Some(&top));
        let at_top = recover(&*broker, &to, Some(&top), 300).await;
        assert_eq!(at_top.publications, Some(Vec::new()), "nothing missed is a success");
        let from_zero = Position { epoch: top.epoch.clone(), offset: 0 };
        let all = recover(&*broker, &to, Some(&from_zero), 300).await;
        let frames = all.publications.unwrap_or_else(|| panic!("not recovered from 0"));
        assert_eq!(replayed(&frames, &to, top.epoch.as_str()), [1, 2, 3, 4, 5]);
    });
}

/// All or nothing: another epoch, an offset ahead of the top, more than `max` missed, or a
/// gap history no longer covers give no publications (and still the top).
pub fn recovery_is_all_or_nothing(make: Make<'_>) {
    run(async {
        let short = HistoryLimits { max_len: 3, max_age_millis: 300_000 };
        let policy = HistoryPolicy { topic: Some(short), ..HistoryPolicy::default() };
        let (broker, _recorder) = setup(make, policy);
        let to = stream("topic:short");
        let mut last = None;
        for i in 1..=6 {
            last = publish(&*broker, &to, i).await;
        }
        let top = last.unwrap_or_else(|| panic!("no position"));
        let epoch = top.epoch.clone();
        let at = |offset| Position { epoch: epoch.clone(), offset };
        let other = realtime_core::Epoch::new("someotherepoch").unwrap_or_else(|e| panic!("{e}"));
        let cases = [
            ("another epoch", Position { epoch: other, offset: 5 }, 300, false),
            ("ahead of the top", at(7), 300, false),
            ("trimmed away (kept 4..6)", at(2), 300, false),
            ("oldest kept is the first missed", at(3), 300, true),
            ("more than max", at(3), 2, false),
            ("exactly max", at(4), 2, true),
        ];
        for (what, since, max, recovered) in cases {
            let read = recover(&*broker, &to, Some(&since), max).await;
            assert_eq!(read.publications.is_some(), recovered, "{what}: {read:?}");
            assert_eq!(read.position.as_ref(), Some(&top), "{what}: the top is always given");
        }
    });
}

/// Publications older than the age limit are not replayed.
pub fn aged_out_publications_are_not_recovered(make: Make<'_>) {
    run(async {
        let brief = HistoryLimits { max_len: 100, max_age_millis: 50 };
        let policy = HistoryPolicy { user: Some(brief), ..HistoryPolicy::default() };
        let (broker, _recorder) = setup(make, policy);
        let to = stream("user:old");
        let first = publish(&*broker, &to, 1).await.unwrap_or_else(|| panic!("no position"));
        let since = Position { epoch: first.epoch.clone(), offset: 0 };
        assert!(recover(&*broker, &to, Some(&since), 300).await.publications.is_some());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let read = recover(&*broker, &to, Some(&since), 300).await;
        assert_eq!(read.publications, None, "aged out: {read:?}");
        assert_eq!(read.position, Some(first), "the position outlives the publication");
    });
}

/// A stream kind without history has no positions: its frames go out as they are.
pub fn a_stream_without_history_has_no_position(make: Make<'_>) {
    run(async {
        let policy = HistoryPolicy { role: None, ..HistoryPolicy::default() };
        let (broker, recorder) = setup(make, policy);
        let to = stream("role:ops");
        assert_eq!(join(&*broker, &to).await, None);
        assert_eq!(publish(&*broker, &to, 1).await, None);
        assert_eq!(at_least(&recorder, &to, 1).await, [None]);
        let calls = recorder.calls();
        let Some(Delivered::Stream { frame, .. }) = calls.first() else { panic!("{calls:?}") };
        assert_eq!(frame, &message(1), "delivered unchanged");
        let read = recover(&*broker, &to, None, 300).await;
        assert_eq!(read, Recovered { position: None, publications: None });
    });
}

/// A retried publish with the same key answers the first result and delivers nothing; the
/// same key on another stream is another publication.
pub fn an_idempotency_key_publishes_once_per_stream(make: Make<'_>) {
    run(async {
        let (broker, recorder) = setup(make, HistoryPolicy::default());
        let to = stream("user:carol");
        let key = IdempotencyKey::new("order-17").unwrap_or_else(|e| panic!("{e}"));
        join(&*broker, &to).await;
        let first = broker.publish(&to, message(1), Some(&key)).await;
        let first = first.unwrap_or_else(|e| panic!("{e}"));
        assert!(!first.duplicate);
        let again = broker.publish(&to, message(1), Some(&key)).await;
        let again = again.unwrap_or_else(|e| panic!("{e}"));
        assert!(again.duplicate, "{again:?}");
        assert_eq!(again.position, first.position);
        let next = publish(&*broker, &to, 2).await;
        assert_eq!(next.map(|p| p.offset), Some(2), "the retry took no offset");
        // Offset 2 is delivered after anything the retry could have delivered.
        let offsets = delivered(&recorder, &to, |o| o.contains(&Some(2))).await;
        assert_eq!(offsets, [Some(1), Some(2)], "the first delivered once, the retry never");
        let elsewhere = stream("user:dave");
        let other = broker.publish(&elsewhere, message(1), Some(&key)).await;
        assert!(!other.unwrap_or_else(|e| panic!("{e}")).duplicate);
    });
}

/// Ephemeral frames are delivered without a position and never replayed.
pub fn ephemeral_frames_are_delivered_and_not_kept(make: Make<'_>) {
    run(async {
        let (broker, recorder) = setup(make, HistoryPolicy::default());
        let to = stream("topic:room");
        let start = join(&*broker, &to).await.unwrap_or_else(|| panic!("no position"));
        broker.publish_ephemeral(&to, message(9));
        assert_eq!(at_least(&recorder, &to, 1).await, [None]);
        let read = recover(&*broker, &to, Some(&start), 300).await;
        assert_eq!(read.publications, Some(Vec::new()), "nothing to replay: {read:?}");
        assert_eq!(read.position, Some(start), "no offset taken");
    });
}

/// A message to one connection reaches `deliver_to_connection`.
pub fn a_message_to_a_connection_is_delivered_to_it(make: Make<'_>) {
    run(async {
        let (broker, recorder) = setup(make, HistoryPolicy::default());
        let id = connection_id(7);
        let sent = broker.send_to_connection(id, message(1)).await;
        assert_eq!(sent, Ok(1));
        let deadline = tokio::time::Instant::now() + WAIT;
        while recorder.calls().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(SETTLE).await;
        assert_eq!(recorder.calls(), [Delivered::Connection { id, frame: message(1) }]);
    });
}

/// A revocation is remembered until `keep_until` (the latest `issued_before` wins).
pub fn revocations_are_remembered_until_they_expire(make: Make<'_>) {
    run(async {
        let (broker, _recorder) = setup(make, HistoryPolicy::default());
        let alice = user("alice");
        assert_eq!(broker.revoked_before(&alice), None);
        let far = UnixMillis(u64::MAX / 2);
        let revoke = broker.revoke(&alice, UnixMillis(2_000), far).await;
        assert_eq!(revoke, Ok(()));
        assert_eq!(broker.revoked_before(&alice), Some(UnixMillis(2_000)));
        let earlier = broker.revoke(&alice, UnixMillis(1_000), far).await;
        assert_eq!(earlier, Ok(()));
        assert_eq!(broker.revoked_before(&alice), Some(UnixMillis(2_000)), "the latest wins");
        assert_eq!(broker.revoked_before(&user("bob")), None);
        let expired = broker.revoke(&user("bob"), UnixMillis(5_000), UnixMillis(1)).await;
        assert_eq!(expired, Ok(()));
        assert_eq!(broker.revoked_before(&user("bob")), None, "kept until 1 ms after 1970");
    });
}

/// The hand-over has no gap: while a publisher runs, a reader declares its interest and
/// takes the top; every publication above the first read's top is delivered, each once and
/// in order (the stream's deliveries are `from..=N` in order, with `from` at most that top
/// + 1: a broker may also deliver what came before, as an in-process one does).
pub fn no_gap_between_a_read_and_live_delivery(make: Make<'_>) {
    run(async {
        let (broker, recorder) = setup(make, HistoryPolicy::default());
        let to = stream("topic:race");
        let done = Arc::new(AtomicBool::new(false));
        const N: u64 = 2_000;
        let publisher = {
            let (broker, to, done) = (Arc::clone(&broker), to.clone(), Arc::clone(&done));
            tokio::spawn(async move {
                for i in 1..=N {
                    publish(&*broker, &to, i).await;
                    if i % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                done.store(true, Ordering::Release);
            })
        };
        // (deliveries seen before the read began, the top the read returned)
        let mut reads = Vec::new();
        loop {
            let before = recorder.offsets(&to).len();
            // Interest first (the contract's precondition), then the read.
            broker.interest(&to, true);
            let top = recover(&*broker, &to, None, 300).await.position;
            reads.push((before, top.map_or(0, |p| p.offset)));
            if done.load(Ordering::Acquire) {
                break;
            }
            tokio::task::yield_now().await;
        }
        publisher.await.unwrap_or_else(|e| panic!("publisher: {e}"));
        assert!(!reads.is_empty());
        let first_top = reads[0].1;
        let offsets = delivered(&recorder, &to, |o| first_top == N || o.contains(&Some(N))).await;
        let offsets: Vec<u64> = offsets.into_iter().flatten().collect();
        let from = offsets.first().copied().unwrap_or(N + 1);
        assert!(
            from <= first_top + 1,
            "offsets {} to {from} are above the first read's top {first_top} and were missed",
            first_top + 1
        );
        assert_eq!(offsets, (from..=N).collect::<Vec<_>>(), "each once, in order");
        // A publication delivered before a read began must be at or below that read's top:
        // otherwise a client that held live deliveries from the read on would miss it.
        for (before, top) in reads {
            let delivered_before = &offsets[..before];
            assert!(
                delivered_before.iter().all(|offset| *offset <= top),
                "offset {:?} was delivered before a read that returned top {top}",
                delivered_before.last()
            );
        }
    });
}

/// Concurrent publishers to one stream get distinct consecutive offsets, delivered in
/// offset order.
pub fn concurrent_publishers_get_distinct_offsets_delivered_in_order(make: Make<'_>) {
    run(async {
        let (broker, recorder) = setup(make, HistoryPolicy::default());
        let to = stream("broadcast");
        join(&*broker, &to).await;
        let tasks: Vec<_> = (0..4)
            .map(|t| {
                let (broker, to) = (Arc::clone(&broker), to.clone());
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    for i in 0..250 {
                        mine.push(publish(&*broker, &to, t * 1000 + i).await.map(|p| p.offset));
                    }
                    mine
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap_or_else(|e| panic!("{e}")).into_iter().flatten());
        }
        all.sort_unstable();
        assert_eq!(all, (1..=1000).collect::<Vec<_>>(), "distinct and consecutive");
        let offsets = at_least(&recorder, &to, 1000).await;
        let offsets: Vec<u64> = offsets.into_iter().flatten().collect();
        assert_eq!(offsets, (1..=1000).collect::<Vec<_>>(), "delivered in offset order");
    });
}
