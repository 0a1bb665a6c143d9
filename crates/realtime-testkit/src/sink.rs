//! [`RecordingSink`]: a fake [`ConnectionSink`] that records every frame and close.

use parking_lot::Mutex;
use realtime_core::Frame;
use realtime_ports::{CloseReason, ConnectionSink, SendError};

/// How a [`RecordingSink`] was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkClosed {
    /// Through [`ConnectionSink::close`], with this reason.
    By(CloseReason),
    /// By itself: a bounded sink overflowed (the transport closes with 4008 then).
    SlowConsumer,
}

/// A [`ConnectionSink`] that records what it is given, for assertions.
///
/// - Every accepted frame is kept, in order; [`texts`](Self::texts) returns them as text.
/// - The first [`close`](ConnectionSink::close) is recorded; later ones have no effect, as
///   the contract requires. After a close, `send` returns [`SendError::Closed`].
/// - A sink made with [`bounded`](Self::bounded) accepts that many frames in total through
///   `send` (nothing ever drains it; `send_batch` frames do not count, as the contract says);
///   the next `send` returns [`SendError::QueueFull`] and records
///   [`SinkClosed::SlowConsumer`], as the real transport closes with 4008; sends after that
///   return [`SendError::Closed`].
#[derive(Debug, Default)]
pub struct RecordingSink {
    /// Frames accepted beyond this many overflow; `None` means unbounded.
    capacity: Option<usize>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    frames: Vec<Frame>,
    /// Frames accepted through `send_batch`, which do not count against the capacity.
    batched: usize,
    closed: Option<SinkClosed>,
}

impl State {
    fn full(&self, capacity: Option<usize>) -> bool {
        capacity.is_some_and(|capacity| self.frames.len() - self.batched >= capacity)
    }
}

impl RecordingSink {
    /// An unbounded sink: every `send` before a close succeeds.
    pub fn new() -> Self {
        RecordingSink::default()
    }

    /// A sink that accepts `capacity` frames, then overflows like a slow consumer.
    pub fn bounded(capacity: usize) -> Self {
        RecordingSink { capacity: Some(capacity), state: Mutex::default() }
    }

    /// The accepted frames, as text, in the order they were sent.
    pub fn texts(&self) -> Vec<String> {
        self.state.lock().frames.iter().map(|f| f.as_str().to_owned()).collect()
    }

    /// The accepted frames, in the order they were sent (clones share the bytes).
    pub fn frames(&self) -> Vec<Frame> {
        self.state.lock().frames.clone()
    }

    /// The first close; `None` while open.
    pub fn closed(&self) -> Option<SinkClosed> {
        self.state.lock().closed
    }

    /// How many frames were accepted.
    pub fn len(&self) -> usize {
        self.state.lock().frames.len()
    }

    /// Whether no frame was accepted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ConnectionSink for RecordingSink {
    fn send(&self, frame: Frame) -> Result<(), SendError> {
        let mut state = self.state.lock();
        if state.closed.is_some() {
            return Err(SendError::Closed);
        }
        if state.full(self.capacity) {
            state.closed = Some(SinkClosed::SlowConsumer);
            return Err(SendError::QueueFull);
        }
        state.frames.push(frame);
        Ok(())
    }

    fn send_batch(&self, frames: Vec<Frame>) -> Result<(), SendError> {
        let mut state = self.state.lock();
        if state.closed.is_some() {
            return Err(SendError::Closed);
        }
        if frames.is_empty() {
            return Ok(());
        }
        if state.full(self.capacity) {
            state.closed = Some(SinkClosed::SlowConsumer);
            return Err(SendError::QueueFull);
        }
        state.batched += frames.len();
        state.frames.extend(frames);
        Ok(())
    }

    fn close(&self, reason: CloseReason) {
        let mut state = self.state.lock();
        if state.closed.is_none() {
            state.closed = Some(SinkClosed::By(reason));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    crate::sink_contract_tests!(recording_contract, crate::sink_contract::RecordingHarness::new);

    /// One step against a sink and what it must answer.
    enum Step {
        Send(&'static str, Result<(), SendError>),
        Close,
    }
    use Step::{Close, Send};

    /// Runs `steps` against `sink` (through `Arc<dyn ConnectionSink>`, as the service holds
    /// it), then compares what it recorded.
    #[track_caller]
    fn check(sink: RecordingSink, steps: &[Step], texts: &[&str], closed: Option<SinkClosed>) {
        let sink = Arc::new(sink);
        let dyn_sink: Arc<dyn ConnectionSink> = sink.clone();
        for (i, step) in steps.iter().enumerate() {
            match step {
                Send(text, expected) => {
                    let got = dyn_sink.send(Frame::from_text((*text).to_owned()));
                    assert_eq!(got, *expected, "step {i}: send {text:?}");
                }
                Close => dyn_sink.close(CloseReason::Kicked),
            }
        }
        assert_eq!(sink.texts(), texts);
        assert_eq!(sink.len(), texts.len());
        assert_eq!(sink.is_empty(), texts.is_empty());
        assert_eq!(sink.frames().len(), texts.len());
        assert_eq!(sink.closed(), closed);
    }

    #[test]
    fn unbounded_records_frames_in_order() {
        check(RecordingSink::new(), &[], &[], None);
        check(
            RecordingSink::new(),
            &[Send("a", Ok(())), Send("b", Ok(())), Send("c", Ok(()))],
            &["a", "b", "c"],
            None,
        );
    }

    #[test]
    fn close_is_recorded_once_and_stops_sends() {
        check(
            RecordingSink::new(),
            &[Send("a", Ok(())), Close, Send("b", Err(SendError::Closed)), Close],
            &["a"],
            Some(SinkClosed::By(CloseReason::Kicked)),
        );
    }

    #[test]
    fn bounded_overflows_like_a_slow_consumer() {
        check(
            RecordingSink::bounded(2),
            &[
                Send("a", Ok(())),
                Send("b", Ok(())),
                Send("c", Err(SendError::QueueFull)),
                Send("d", Err(SendError::Closed)),
                Close,
            ],
            &["a", "b"],
            Some(SinkClosed::SlowConsumer),
        );
        check(
            RecordingSink::bounded(0),
            &[Send("a", Err(SendError::QueueFull))],
            &[],
            Some(SinkClosed::SlowConsumer),
        );
    }

    #[test]
    fn bounded_sink_closed_before_overflow_reports_closed() {
        check(
            RecordingSink::bounded(1),
            &[Close, Send("a", Err(SendError::Closed))],
            &[],
            Some(SinkClosed::By(CloseReason::Kicked)),
        );
    }

    #[test]
    fn frames_share_bytes_with_what_was_sent() {
        let sink = RecordingSink::new();
        let frame = Frame::from_text("shared".to_owned());
        assert_eq!(sink.send(frame.clone()), Ok(()));
        let recorded = sink.frames();
        assert_eq!(recorded.len(), 1);
        assert_eq!(recorded[0].as_bytes().as_ptr(), frame.as_bytes().as_ptr());
    }

    #[test]
    fn concurrent_sends_are_all_recorded() {
        let sink = RecordingSink::new();
        std::thread::scope(|scope| {
            for t in 0..4 {
                let sink = &sink;
                scope.spawn(move || {
                    for i in 0..100 {
                        assert_eq!(sink.send(Frame::from_text(format!("{t}-{i}"))), Ok(()));
                    }
                });
            }
        });
        assert_eq!(sink.len(), 400);
        // Per thread, order is preserved.
        let texts = sink.texts();
        for t in 0..4 {
            let mine: Vec<&String> =
                texts.iter().filter(|s| s.starts_with(&format!("{t}-"))).collect();
            let expected: Vec<String> = (0..100).map(|i| format!("{t}-{i}")).collect();
            assert_eq!(mine, expected.iter().collect::<Vec<_>>());
        }
    }
}
