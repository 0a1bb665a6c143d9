//! The [`ConnectionSink`] contract suite: checks every sink implementation must pass
//! (ordering, `QueueFull` then closed as a slow consumer, `Closed` after a close, an
//! idempotent close where the first reason wins, frames accepted before a close still
//! delivered).
//!
//! A sink is driven through a [`SinkHarness`], which also lets the suite look at what the
//! sink would write (without a network: the transport drains its queue directly). Each
//! check is a `pub fn` taking a factory of harnesses for a given queue capacity; adapters
//! run them through [`sink_contract_tests!`](crate::sink_contract_tests), one `#[test]` per
//! check.

use std::sync::Arc;

use parking_lot::Mutex;
use realtime_core::Frame;
use realtime_ports::{CloseReason, ConnectionSink, SendError};

use crate::{RecordingSink, SinkClosed};

/// A sink under test and a look at what it holds.
pub trait SinkHarness {
    /// The sink, as the service holds it.
    fn sink(&self) -> Arc<dyn ConnectionSink>;
    /// Takes the frames the sink accepted and would still write, oldest first (as the
    /// writer does; a taken frame frees its queue slot).
    fn take_written(&self) -> Vec<Frame>;
    /// How the sink was closed; `None` while open.
    fn closed(&self) -> Option<SinkClosed>;
}

fn frame(n: usize) -> Frame {
    Frame::from_text(format!(r#"{{"type":"n","payload":{{"n":{n}}}}}"#))
}

fn texts(frames: &[Frame]) -> Vec<String> {
    frames.iter().map(|f| f.as_str().to_owned()).collect()
}

fn expected(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| frame(n).as_str().to_owned()).collect()
}

/// Frames come out in the order they were sent, also across takes.
pub fn frames_are_written_in_order<H: SinkHarness>(make: impl Fn(usize) -> H) {
    let harness = make(8);
    let sink = harness.sink();
    for n in 0..5 {
        assert_eq!(sink.send(frame(n)), Ok(()), "send {n}");
    }
    assert_eq!(texts(&harness.take_written()), expected(0..5));
    for n in 5..8 {
        assert_eq!(sink.send(frame(n)), Ok(()), "send {n}");
    }
    assert_eq!(texts(&harness.take_written()), expected(5..8));
    assert_eq!(harness.closed(), None);
}

/// A full queue answers `QueueFull` once, closes as a slow consumer, then answers `Closed`.
pub fn a_full_queue_is_a_slow_consumer<H: SinkHarness>(make: impl Fn(usize) -> H) {
    let harness = make(3);
    let sink = harness.sink();
    for n in 0..3 {
        assert_eq!(sink.send(frame(n)), Ok(()), "send {n}");
    }
    assert_eq!(sink.send(frame(3)), Err(SendError::QueueFull));
    assert_eq!(harness.closed(), Some(SinkClosed::SlowConsumer));
    assert_eq!(sink.send(frame(4)), Err(SendError::Closed));
}

/// A batch lands as one contiguous run in order and does not count against the bound: the
/// live frames behind it still get the whole capacity; a batch on a full queue is refused
/// whole (a slow consumer), and on a closed sink it is `Closed`.
pub fn a_batch_is_contiguous_and_admitted_whole<H: SinkHarness>(make: impl Fn(usize) -> H) {
    let harness = make(4);
    let sink = harness.sink();
    assert_eq!(sink.send(frame(0)), Ok(()));
    assert_eq!(sink.send_batch((1..7).map(frame).collect()), Ok(()), "room: admitted");
    assert_eq!(sink.send_batch(Vec::new()), Ok(()), "an empty batch");
    for n in 7..10 {
        assert_eq!(sink.send(frame(n)), Ok(()), "live send {n} behind the batch");
    }
    assert_eq!(sink.send_batch(vec![frame(10)]), Err(SendError::QueueFull), "four live: full");
    assert_eq!(harness.closed(), Some(SinkClosed::SlowConsumer));
    assert_eq!(texts(&harness.take_written()), expected(0..10), "nothing of the refused batch");
    let closed = make(4);
    closed.sink().close(CloseReason::Kicked);
    assert_eq!(closed.sink().send_batch(vec![frame(0)]), Err(SendError::Closed));
    assert!(closed.take_written().is_empty());
}

/// After `close`, every `send` answers `Closed` and the reason is recorded.
pub fn send_after_close_is_closed<H: SinkHarness>(make: impl Fn(usize) -> H) {
    let harness = make(8);
    let sink = harness.sink();
    sink.close(CloseReason::Kicked);
    assert_eq!(harness.closed(), Some(SinkClosed::By(CloseReason::Kicked)));
    assert_eq!(sink.send(frame(0)), Err(SendError::Closed));
    assert!(harness.take_written().is_empty(), "nothing sent after the close is written");
}

/// A second `close` changes nothing, and the first end wins (also a slow consumer's).
pub fn close_is_idempotent_and_the_first_end_wins<H: SinkHarness>(make: impl Fn(usize) -> H) {
    let harness = make(8);
    let sink = harness.sink();
    sink.close(CloseReason::Kicked);
    sink.close(CloseReason::Kicked);
    assert_eq!(harness.closed(), Some(SinkClosed::By(CloseReason::Kicked)));
    let harness = make(1);
    let sink = harness.sink();
    assert_eq!(sink.send(frame(0)), Ok(()));
    assert_eq!(sink.send(frame(1)), Err(SendError::QueueFull));
    sink.close(CloseReason::Kicked);
    assert_eq!(harness.closed(), Some(SinkClosed::SlowConsumer), "the first end wins");
}

/// Frames accepted before `close` are still written ("send a goodbye, then kick").
pub fn frames_accepted_before_close_are_still_written<H: SinkHarness>(make: impl Fn(usize) -> H) {
    let harness = make(8);
    let sink = harness.sink();
    for n in 0..3 {
        assert_eq!(sink.send(frame(n)), Ok(()), "send {n}");
    }
    sink.close(CloseReason::Kicked);
    assert_eq!(sink.send(frame(3)), Err(SendError::Closed));
    assert_eq!(texts(&harness.take_written()), expected(0..3));
}

/// Concurrent senders: every accepted frame is written once, each sender's in its order.
pub fn concurrent_sends_keep_each_senders_order<H: SinkHarness + Sync>(make: impl Fn(usize) -> H) {
    let harness = make(4 * 50);
    std::thread::scope(|scope| {
        for t in 0..4 {
            let sink = harness.sink();
            scope.spawn(move || {
                for i in 0..50 {
                    assert_eq!(sink.send(frame(t * 1000 + i)), Ok(()));
                }
            });
        }
    });
    let written = texts(&harness.take_written());
    assert_eq!(written.len(), 200);
    for t in 0..4 {
        let mine: Vec<&String> = written
            .iter()
            .filter(|s| (t * 1000..t * 1000 + 50).any(|n| **s == frame(n).as_str()))
            .collect();
        let want = expected(t * 1000..t * 1000 + 50);
        assert_eq!(mine, want.iter().collect::<Vec<_>>(), "sender {t}");
    }
}

/// [`RecordingSink`] run through the suite: [`RecordingSink::bounded`] with the capacity.
#[derive(Debug)]
pub struct RecordingHarness {
    sink: Arc<RecordingSink>,
    taken: Mutex<usize>,
}

impl RecordingHarness {
    /// A bounded recording sink of `capacity` frames.
    pub fn new(capacity: usize) -> Self {
        RecordingHarness { sink: Arc::new(RecordingSink::bounded(capacity)), taken: Mutex::new(0) }
    }
}

impl SinkHarness for RecordingHarness {
    fn sink(&self) -> Arc<dyn ConnectionSink> {
        self.sink.clone()
    }

    fn take_written(&self) -> Vec<Frame> {
        let mut taken = self.taken.lock();
        let frames = self.sink.frames();
        let new = frames[*taken..].to_vec();
        *taken = frames.len();
        new
    }

    fn closed(&self) -> Option<SinkClosed> {
        self.sink.closed()
    }
}
