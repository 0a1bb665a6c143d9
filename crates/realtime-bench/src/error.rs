//! [`BenchError`]: why a load-generator or smoke operation failed.

/// Why a load-generator, publisher or smoke operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A socket operation failed.
    #[error("i/o error: {0}")]
    Io(String),
    /// A WebSocket handshake or frame failed.
    #[error("websocket error: {0}")]
    WebSocket(String),
    /// The server answered something the protocol does not allow.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// An HTTP request was answered with an unexpected status.
    #[error("HTTP {status} from {path}: {body}")]
    HttpStatus {
        /// The request path.
        path: String,
        /// The status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// Some connections could not be opened.
    #[error("{failed} of {requested} connections failed; first error: {first_error}")]
    Connect {
        /// Connections asked for.
        requested: usize,
        /// Connections that failed.
        failed: usize,
        /// The first failure.
        first_error: String,
    },
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A token could not be minted.
    #[error("minting a token failed: {0}")]
    Token(String),
}

impl From<std::io::Error> for BenchError {
    fn from(e: std::io::Error) -> Self {
        BenchError::Io(e.to_string())
    }
}

impl From<tokio_tungstenite::tungstenite::Error> for BenchError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        BenchError::WebSocket(e.to_string())
    }
}
