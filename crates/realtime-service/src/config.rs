//! [`ServiceConfig`]: the limits and admission rules of a [`RealtimeService`](crate::RealtimeService).

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
    /// messages up to [`ServiceConfig::DEFAULT_MAX_MESSAGE_BYTES`].
    fn default() -> Self {
        ServiceConfig {
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            required_permissions: Vec::new(),
            max_message_bytes: Self::DEFAULT_MAX_MESSAGE_BYTES,
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
