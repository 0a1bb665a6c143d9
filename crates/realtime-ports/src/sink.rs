//! [`ConnectionSink`]: the outbound half of one live connection.

use realtime_core::Frame;

/// Why the service asks a connection to close. The transport alone turns it into a close
/// code and text (for WebSocket: `docs/protocol.md`), so no wire number lives outside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// The application removed the connection (`RealtimeApi::kick`, `kick_user`).
    Kicked,
    /// The backend revoked the connection's token (`RealtimeApi::revoke`).
    Revoked,
    /// The service could not keep the connection's streams consistent (for example, more
    /// live publications arrived while its recovery ran than it may buffer): the client
    /// reconnects and recovers.
    StreamLagged,
}

impl CloseReason {
    /// A short, stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Kicked => "kicked",
            CloseReason::Revoked => "revoked",
            CloseReason::StreamLagged => "stream_lagged",
        }
    }
}

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

    /// Enqueues `frames` as one contiguous run (no other frame lands between them), in
    /// order: a reply followed by the publications a recovery replays. The batch is admitted
    /// as a whole when the queue is not full, and its frames do not count against the bound
    /// until they are written: a recovery is queued before the connection's writer runs, and
    /// the live frames behind it must not make the connection a slow consumer (the service
    /// bounds a batch by its recovery limits). An empty batch is `Ok`.
    ///
    /// # Errors
    /// As [`send`](ConnectionSink::send), for the batch as a whole: on an error no frame of it
    /// was enqueued.
    fn send_batch(&self, frames: Vec<Frame>) -> Result<(), SendError>;

    /// Asks the connection to close for `reason`. Frames already accepted by
    /// [`send`](ConnectionSink::send) are still written first (bounded by the transport's
    /// close timeout), then the close frame; `send` returns [`SendError::Closed`] from now
    /// on. Does not wait; calling it again has no further effect (the first reason wins).
    fn close(&self, reason: CloseReason);
}
