//! [`SubscribeAuthorizer`]: the application's say on a subscribe that the token's `topics`
//! claim does not allow.

use async_trait::async_trait;
use realtime_core::{Connection, TopicName};

/// Decides whether a connection may subscribe to a topic its token's `topics` claim does not
/// allow. The service checks the claim first; only when no pattern matches does it ask the
/// authorizer, and a `false` refuses the subscribe with the `forbidden` error.
///
/// # Contract
/// - Called at most once per client subscribe request, after the claim check.
/// - Answers in bounded time (the service does not time it out on its own); an authorizer
///   that cannot decide (its backend is down) answers `false`.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait SubscribeAuthorizer: Send + Sync + 'static {
    /// Whether `connection` may subscribe to `topic`.
    async fn authorize(&self, connection: &Connection, topic: &TopicName) -> bool;
}
