//! [`ServiceConfig`]: the limits and admission rules of a [`RealtimeService`](crate::RealtimeService).

use realtime_core::Permission;

/// How a [`RealtimeService`](crate::RealtimeService) admits connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Most connections this node holds at once; further connects fail with
    /// [`ConnectError::AtCapacity`](realtime_ports::ConnectError::AtCapacity).
    pub max_connections: usize,
    /// Permissions every connecting identity must hold; a connect without one of them fails
    /// with [`ConnectError::Forbidden`](realtime_ports::ConnectError::Forbidden).
    pub required_permissions: Vec<Permission>,
    /// Largest encoded message a publish may hand to connections, in bytes; a larger one
    /// fails with [`PublishError::TooLarge`](realtime_ports::PublishError::TooLarge) before
    /// any recipient sees it. Set it to the transport's `max_message_bytes`.
    pub max_message_bytes: usize,
}

impl ServiceConfig {
    /// The default connection cap.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
    /// The default message size limit (the transport's default too).
    pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;
}

impl Default for ServiceConfig {
    /// At most [`ServiceConfig::DEFAULT_MAX_CONNECTIONS`] connections, no permission required,
    /// messages up to [`ServiceConfig::DEFAULT_MAX_MESSAGE_BYTES`].
    fn default() -> Self {
        ServiceConfig {
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            required_permissions: Vec::new(),
            max_message_bytes: Self::DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}
