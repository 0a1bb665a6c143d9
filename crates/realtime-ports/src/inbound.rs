//! [`InboundHandler`]: the application's hook for client messages outside the protocol.

use async_trait::async_trait;
use realtime_core::{Connection, Envelope};

/// What the handler answers to the sending connection, if anything.
pub type InboundReply = Option<Envelope>;

/// Why the application refused or failed a client message. The client receives an `error`
/// frame with the matching code; the connection stays open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InboundError {
    /// Nothing handles this message type (error code `unsupported_type`).
    #[error("unsupported message type")]
    Unsupported,
    /// The application refused the message; the text is shown to the client (code `rejected`).
    #[error("{0}")]
    Rejected(String),
    /// The handler failed; the text is logged, the client sees a generic message
    /// (code `internal_error`).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Receives the client messages that are not part of the protocol (anything but `ping`).
///
/// Messages from one connection are handed over one at a time, in order: while `handle`
/// awaits, that connection's further messages wait (so a slow handler slows only its own
/// client).
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait InboundHandler: Send + Sync + 'static {
    /// Handles `message` from `connection`, optionally replying to it.
    ///
    /// # Errors
    /// [`InboundError`] when the message is refused or handling failed; the transport turns it
    /// into an `error` frame.
    async fn handle(
        &self,
        connection: &Connection,
        message: Envelope,
    ) -> Result<InboundReply, InboundError>;
}
