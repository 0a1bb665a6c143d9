//! [`ConnectionSink`]: the outbound half of one live connection.

use realtime_core::Frame;

/// A WebSocket close code (RFC 6455 section 7.4); realtime's own are in
/// `realtime_core::protocol::close`.
pub type CloseCode = u16;

/// Why a frame was not enqueued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The connection's outbound queue is full: the client reads too slowly.
    #[error("outbound queue is full")]
    QueueFull,
    /// The connection is closed or closing.
    #[error("connection is closed")]
    Closed,
}

/// The outbound half of one live connection, owned by the transport.
///
/// # Contract
/// - [`send`](ConnectionSink::send) only enqueues: it never awaits, never blocks the caller
///   on the network, never copies the frame's bytes. It is called from the fan-out loop,
///   once per recipient, possibly while the registry holds a read lock.
/// - Implementations must not call back into the registry or the service from `send` or
///   `close`.
/// - Frames enqueued on one sink are written in the order they were enqueued.
#[cfg_attr(feature = "mocks", mockall::automock)]
pub trait ConnectionSink: Send + Sync + 'static {
    /// Enqueues `frame` for writing.
    ///
    /// # Errors
    /// - MUST return [`SendError::QueueFull`] when the bounded queue has no room; the
    ///   implementation then closes the connection as a slow consumer (close code 4008), so
    ///   a slow client never holds back the others and nothing is buffered without bound.
    /// - MUST return [`SendError::Closed`] once the connection is closed or closing.
    fn send(&self, frame: Frame) -> Result<(), SendError>;

    /// Asks the connection to close with `code` and `reason` (at most 123 bytes of UTF-8, as
    /// the WebSocket protocol allows). Does not wait; calling it again has no further effect.
    fn close(&self, code: CloseCode, reason: &str);
}
