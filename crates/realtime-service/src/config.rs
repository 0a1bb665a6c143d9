//! [`ServiceConfig`]: the limits and admission rules of a [`RealtimeService`](crate::RealtimeService).

use std::time::Duration;

use realtime_core::{Identity, Permission};

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
    /// Most topics one connection may be subscribed to; a further subscribe is refused
    /// (`too_many_subscriptions`).
    pub max_topics_per_connection: usize,
    /// Most publications one recovery replays per stream; a longer gap is `recovered: false`.
    pub max_recovery: usize,
    /// Most live publications buffered per stream for a connection while its recovery
    /// reads history; beyond that, the connection is closed to reconnect and recover
    /// (`CloseReason::StreamLagged`) rather than miss one.
    pub max_recovery_buffer: usize,
    /// Topic prefixes whose subscribers get `presence.join` and `presence.leave` (`""`
    /// enables them for every topic).
    pub presence_event_prefixes: Vec<String>,
    /// How long a revocation is remembered: set it to at least the longest token lifetime,
    /// so every revoked token has expired when it is forgotten.
    pub revocation_ttl: Duration,
    /// How long a publish with receipts waits for every node's count (500 ms); a node that
    /// has not answered by then is left out of `delivered` and `nodes_answered`.
    pub receipt_timeout: Duration,
}

/// A [`ServiceConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceConfigError {
    /// `max_connections` is 0: every connect would be refused.
    #[error("max_connections must be greater than 0")]
    ZeroMaxConnections,
    /// `max_message_bytes` is 0: every publish would be refused.
    #[error("max_message_bytes must be greater than 0")]
    ZeroMaxMessageBytes,
    /// `max_recovery` is 0: no recovery could ever succeed.
    #[error("max_recovery must be greater than 0")]
    ZeroMaxRecovery,
    /// `max_recovery_buffer` is 0: every recovery with a live publication would close.
    #[error("max_recovery_buffer must be greater than 0")]
    ZeroMaxRecoveryBuffer,
    /// More required permissions than an identity can hold: every connect would be refused.
    #[error("required_permissions lists {count} permissions; an identity holds at most {max}")]
    TooManyRequiredPermissions {
        /// How many are listed.
        count: usize,
        /// [`Identity::MAX_GRANTS`].
        max: usize,
    },
}

impl ServiceConfig {
    /// The default connection cap.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
    /// The default message size limit (the transport's default too).
    pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;
    /// The default subscription limit per connection.
    pub const DEFAULT_MAX_TOPICS_PER_CONNECTION: usize = 128;
    /// The default recovery limit per stream.
    pub const DEFAULT_MAX_RECOVERY: usize = 300;
    /// The default live buffer per stream during a recovery.
    pub const DEFAULT_MAX_RECOVERY_BUFFER: usize = 1024;
    /// The default revocation lifetime: 24 hours.
    pub const DEFAULT_REVOCATION_TTL: Duration = Duration::from_secs(24 * 3600);
    /// Default [`ServiceConfig::receipt_timeout`]: 500 ms.
    pub const DEFAULT_RECEIPT_TIMEOUT: Duration = Duration::from_millis(500);

    /// Checks that the configuration can admit anyone.
    ///
    /// # Errors
    /// [`ServiceConfigError`] names the setting that cannot work.
    pub fn validate(&self) -> Result<(), ServiceConfigError> {
        if self.max_connections == 0 {
            return Err(ServiceConfigError::ZeroMaxConnections);
        }
        if self.max_message_bytes == 0 {
            return Err(ServiceConfigError::ZeroMaxMessageBytes);
        }
        if self.max_recovery == 0 {
            return Err(ServiceConfigError::ZeroMaxRecovery);
        }
        if self.max_recovery_buffer == 0 {
            return Err(ServiceConfigError::ZeroMaxRecoveryBuffer);
        }
        let count = self.required_permissions.len();
        if count > Identity::MAX_GRANTS {
            let max = Identity::MAX_GRANTS;
            return Err(ServiceConfigError::TooManyRequiredPermissions { count, max });
        }
        Ok(())
    }
}

impl Default for ServiceConfig {
    /// At most [`ServiceConfig::DEFAULT_MAX_CONNECTIONS`] connections, no permission required,
    /// messages up to [`ServiceConfig::DEFAULT_MAX_MESSAGE_BYTES`], the default limits of
    /// streams, no presence events.
    fn default() -> Self {
        ServiceConfig {
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            required_permissions: Vec::new(),
            max_message_bytes: Self::DEFAULT_MAX_MESSAGE_BYTES,
            max_topics_per_connection: Self::DEFAULT_MAX_TOPICS_PER_CONNECTION,
            max_recovery: Self::DEFAULT_MAX_RECOVERY,
            max_recovery_buffer: Self::DEFAULT_MAX_RECOVERY_BUFFER,
            presence_event_prefixes: Vec::new(),
            revocation_ttl: Self::DEFAULT_REVOCATION_TTL,
            receipt_timeout: Self::DEFAULT_RECEIPT_TIMEOUT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        let permission =
            |i: usize| Permission::new(format!("p{i}")).unwrap_or_else(|e| panic!("{e}"));
        let with = |max_connections, permissions: usize| ServiceConfig {
            max_connections,
            required_permissions: (0..permissions).map(permission).collect(),
            ..ServiceConfig::default()
        };
        let cases = [
            (ServiceConfig::default(), Ok(())),
            (with(1, 0), Ok(())),
            (with(1, Identity::MAX_GRANTS), Ok(())),
            (with(0, 0), Err(ServiceConfigError::ZeroMaxConnections)),
            (
                ServiceConfig { max_message_bytes: 0, ..ServiceConfig::default() },
                Err(ServiceConfigError::ZeroMaxMessageBytes),
            ),
            (
                ServiceConfig { max_recovery: 0, ..ServiceConfig::default() },
                Err(ServiceConfigError::ZeroMaxRecovery),
            ),
            (
                ServiceConfig { max_recovery_buffer: 0, ..ServiceConfig::default() },
                Err(ServiceConfigError::ZeroMaxRecoveryBuffer),
            ),
            (
                with(10, Identity::MAX_GRANTS + 1),
                Err(ServiceConfigError::TooManyRequiredPermissions {
                    count: Identity::MAX_GRANTS + 1,
                    max: Identity::MAX_GRANTS,
                }),
            ),
        ];
        for (config, expected) in cases {
            assert_eq!(config.validate(), expected, "{config:?}");
        }
        assert_eq!(
            ServiceConfigError::ZeroMaxConnections.to_string(),
            "max_connections must be greater than 0"
        );
    }
}
