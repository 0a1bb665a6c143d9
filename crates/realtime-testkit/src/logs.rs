//! Log capture for tests that search log output (for leaked secrets, say): [`Capture`] is a
//! shared in-memory writer, and [`Capture::subscriber`] a TRACE-level `fmt` subscriber that
//! writes plain text (no ANSI colours) into it.
//!
//! Install the subscriber with `tracing::subscriber::set_default` in a current-thread test
//! runtime (`#[tokio::test]`'s default) so that every task spawned by the code under test
//! runs on the test's thread, under that subscriber.

use std::sync::Arc;

use parking_lot::Mutex;
use tracing::Subscriber;

/// An in-memory log sink shared by the subscriber and the test; clones share the buffer.
#[derive(Debug, Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    /// An empty capture.
    pub fn new() -> Self {
        Self::default()
    }

    /// A subscriber that formats every event and span at TRACE level and above, without
    /// ANSI colours, into this capture.
    pub fn subscriber(&self) -> impl Subscriber + Send + Sync + 'static {
        let writer = self.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish()
    }

    /// Everything captured so far, as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock()).into_owned()
    }
}

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subscriber_writes_trace_events_in_plain_text_into_the_capture() {
        let capture = Capture::new();
        {
            let _guard = tracing::subscriber::set_default(capture.subscriber());
            tracing::trace!(answer = 42, "deep detail");
        }
        tracing::info!("after the guard is dropped");
        let text = capture.text();
        assert!(text.contains("TRACE"), "{text}");
        assert!(text.contains("deep detail answer=42"), "{text}");
        assert!(!text.contains('\u{1b}'), "ANSI escapes in {text:?}");
        assert!(!text.contains("after the guard"), "{text}");
    }
}
