//! The ports of realtime: the traits that adapters implement and the service is wired through.
//!
//! Who depends on this crate: every adapter (`realtime-registry-*`, `realtime-transport-*`,
//! `realtime-auth-*`, later `realtime-bus-*`), the service, and applications that plug in
//! their own token verification or inbound message handling. It depends only on
//! `realtime-core` and `async-trait`, and changes rarely: a change here is a change for every
//! adapter.
//!
//! Every trait is dyn-compatible and meant to be used as `Arc<dyn Trait>`. Methods that only
//! enqueue or look up stay synchronous, so the fan-out path never allocates a future or
//! awaits per recipient; only [`TokenVerifier::verify`] and [`InboundHandler::handle`], which
//! may truly wait on I/O, are `async`.
//!
//! Each method documents its obligations under `# Errors` or `# Contract`; the registry's are
//! checked by the contract suite in `realtime-testkit`, which every registry adapter runs.
//!
//! **Architecture Invariant:** this crate holds traits, their error types and plain data,
//! nothing that runs.

mod api;
mod auth;
mod inbound;
mod registry;
mod sink;

pub use api::{ConnectError, ConnectRequest, DisconnectReason, PublishError, RealtimeApi};
pub use auth::{AuthError, TokenVerifier};
pub use inbound::{InboundError, InboundHandler, InboundReply};
pub use registry::{ConnectionRegistry, RegisterError, Registered};
pub use sink::{CloseCode, ConnectionSink, SendError};

/// mockall mocks of every port, for unit tests of code that uses them.
#[cfg(feature = "mocks")]
pub mod mocks {
    pub use crate::api::MockRealtimeApi;
    pub use crate::auth::MockTokenVerifier;
    pub use crate::inbound::MockInboundHandler;
    pub use crate::registry::MockConnectionRegistry;
    pub use crate::sink::MockConnectionSink;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Every port is usable as `Arc<dyn Trait>` (a compile-time check).
    #[test]
    fn ports_are_dyn_compatible() {
        fn takes(
            _: Option<Arc<dyn ConnectionRegistry>>,
            _: Option<Arc<dyn ConnectionSink>>,
            _: Option<Arc<dyn TokenVerifier>>,
            _: Option<Arc<dyn InboundHandler>>,
            _: Option<Arc<dyn RealtimeApi>>,
        ) -> bool {
            true
        }
        assert!(takes(None, None, None, None, None));
    }
}
