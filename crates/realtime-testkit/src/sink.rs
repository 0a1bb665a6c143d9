//! [`RecordingSink`]: a fake [`ConnectionSink`] that records every frame and close.

use parking_lot::Mutex;
use realtime_core::Frame;
use realtime_core::protocol::close;
use realtime_ports::{CloseCode, ConnectionSink, SendError};

/// The close reason a bounded [`RecordingSink`] records when its queue overflows.
pub const SLOW_CONSUMER_REASON: &str = "slow consumer";

/// A [`ConnectionSink`] that records what it is given, for assertions.
///
/// - Every accepted frame is kept, in order; [`texts`](Self::texts) returns them as text.
/// - The first [`close`](ConnectionSink::close) is recorded; later ones have no effect, as
///   the contract requires. After a close, `send` returns [`SendError::Closed`].
/// - A sink made with [`bounded`](Self::bounded) accepts that many frames in total (nothing
///   ever drains it); the next `send` returns [`SendError::QueueFull`] and records a close
///   with code 4008 (`protocol::close::SLOW_CONSUMER`) and reason [`SLOW_CONSUMER_REASON`],
///   as the real transport does; sends after that return [`SendError::Closed`].
#[derive(Debug, Default)]
pub struct RecordingSink {
    /// Frames accepted beyond this many overflow; `None` means unbounded.
    capacity: Option<usize>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    frames: Vec<Frame>,
    closed: Option<(CloseCode, String)>,
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

    /// The first close, as `(code, reason)`; `None` while open.
    pub fn closed(&self) -> Option<(u16, String)> {
        self.state.lock().closed.clone()
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
        if self.capacity.is_some_and(|capacity| state.frames.len() >= capacity) {
            state.closed = Some((close::SLOW_CONSUMER, SLOW_CONSUMER_REASON.to_owned()));
            return Err(SendError::QueueFull);
        }
        state.frames.push(frame);
        Ok(())
    }

    fn close(&self, code: CloseCode, reason: &str) {
        let mut state = self.state.lock();
        if state.closed.is_none() {
            state.closed = Some((code, reason.to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// One step against a sink and what it must answer.
    enum Step {
        Send(&'static str, Result<(), SendError>),
        Close(u16, &'static str),
    }
    use Step::{Close, Send};

    /// Runs `steps` against `sink` (through `Arc<dyn ConnectionSink>`, as the service holds
    /// it), then compares what it recorded.
    #[track_caller]
    fn check(sink: RecordingSink, steps: &[Step], texts: &[&str], closed: Option<(u16, &str)>) {
        let sink = Arc::new(sink);
        let dyn_sink: Arc<dyn ConnectionSink> = sink.clone();
        for (i, step) in steps.iter().enumerate() {
            match step {
                Send(text, expected) => {
                    let got = dyn_sink.send(Frame::from_text((*text).to_owned()));
                    assert_eq!(got, *expected, "step {i}: send {text:?}");
                }
                Close(code, reason) => dyn_sink.close(*code, reason),
            }
        }
        assert_eq!(sink.texts(), texts);
        assert_eq!(sink.len(), texts.len());
        assert_eq!(sink.is_empty(), texts.is_empty());
        assert_eq!(sink.frames().len(), texts.len());
        assert_eq!(sink.closed(), closed.map(|(c, r)| (c, r.to_owned())));
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
            &[
                Send("a", Ok(())),
                Close(4003, "bye"),
                Send("b", Err(SendError::Closed)),
                Close(1000, "again"),
            ],
            &["a"],
            Some((4003, "bye")),
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
                Close(1000, "later"),
            ],
            &["a", "b"],
            Some((4008, SLOW_CONSUMER_REASON)),
        );
        check(
            RecordingSink::bounded(0),
            &[Send("a", Err(SendError::QueueFull))],
            &[],
            Some((4008, SLOW_CONSUMER_REASON)),
        );
    }

    #[test]
    fn bounded_sink_closed_before_overflow_reports_closed() {
        check(
            RecordingSink::bounded(1),
            &[Close(1012, "restart"), Send("a", Err(SendError::Closed))],
            &[],
            Some((1012, "restart")),
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
