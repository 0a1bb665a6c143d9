//! The ports of realtime: the traits that adapters implement and the service is wired through.
//!
//! Who depends on this crate: every adapter (`realtime-registry-*`, `realtime-transport-*`,
//! `realtime-auth-*`, `realtime-broker-*`), the service, and applications that plug in
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
mod authorize;
mod broker;
mod inbound;
mod presence;
mod registry;
mod sink;

pub use api::{
    ConnectError, ConnectRequest, DisconnectReason, PublishError, PublishOptions, PublishReceipt,
    RealtimeApi, RefreshError, RevokeError, StreamError, SubscribeError, SubscribeOrigin,
    SubscribeRequest, Subscribed, UnsubscribeError,
};
pub use auth::{AuthError, HandshakeRequest, TokenVerifier, UpgradeRequest};
pub use authorize::SubscribeAuthorizer;
pub use broker::{
    Broker, BrokerError, BrokerHealth, LocalDelivery, NodeReceipts, Published, Recovered,
};
pub use inbound::{InboundError, InboundHandler, InboundReply};
pub use presence::{Presence, PresenceError, PresenceScope, TopicMember, UserPresence};
pub use registry::{ConnectionRegistry, RegisterError, Registered, TopicError};
pub use sink::{CloseReason, ConnectionSink, SendError};

/// mockall mocks of every port, for unit tests of code that uses them.
#[cfg(feature = "mocks")]
pub mod mocks {
    pub use crate::api::MockRealtimeApi;
    pub use crate::auth::MockTokenVerifier;
    pub use crate::authorize::MockSubscribeAuthorizer;
    pub use crate::inbound::MockInboundHandler;
    pub use crate::registry::MockConnectionRegistry;
    pub use crate::sink::MockConnectionSink;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use std::sync::Mutex;

    use std::collections::BTreeMap;

    use realtime_core::{
        Connection, ConnectionId, ConnectionsOf, Envelope, Identity, MessageType, Payload,
        Position, RequestId, Role, StreamName, StreamState, Target, TopicName, UnixMillis, UserId,
    };

    use super::*;

    /// A service that only records the targets it is asked to publish to.
    #[derive(Default)]
    struct Targets(Mutex<Vec<Target>>);

    #[async_trait::async_trait]
    impl RealtimeApi for Targets {
        fn connect(&self, _: ConnectRequest) -> Result<Arc<Connection>, ConnectError> {
            Err(ConnectError::Forbidden)
        }
        fn unregister(&self, _: ConnectionId, _: DisconnectReason) -> bool {
            false
        }
        fn kick(&self, _: ConnectionId) -> bool {
            false
        }
        fn kick_user(&self, _: &UserId) -> usize {
            0
        }
        fn has_capacity(&self) -> bool {
            false
        }
        fn connection_count(&self) -> usize {
            0
        }
        async fn publish_with(
            &self,
            target: &Target,
            _: &Envelope,
            _: &PublishOptions,
        ) -> Result<PublishReceipt, PublishError> {
            let mut targets = self.0.lock().unwrap_or_else(|e| e.into_inner());
            targets.push(target.clone());
            let delivered = targets.len();
            Ok(PublishReceipt {
                delivered,
                stream: target.stream(),
                position: None,
                duplicate: false,
                nodes: None,
            })
        }
        async fn reply(
            &self,
            id: ConnectionId,
            _: Option<RequestId>,
            _: &Envelope,
        ) -> Result<usize, PublishError> {
            let mut targets = self.0.lock().unwrap_or_else(|e| e.into_inner());
            targets.push(Target::Connection(id));
            Ok(1)
        }
        async fn open_streams(
            &self,
            _: ConnectionId,
            _: &BTreeMap<StreamName, Position>,
        ) -> Result<Vec<StreamState>, StreamError> {
            Err(StreamError::NotConnected)
        }
        async fn subscribe(&self, _: SubscribeRequest) -> Result<Subscribed, SubscribeError> {
            Err(SubscribeError::NotConnected)
        }
        async fn unsubscribe(
            &self,
            _: ConnectionId,
            _: &TopicName,
            _: Option<RequestId>,
        ) -> Result<(), UnsubscribeError> {
            Err(UnsubscribeError::NotConnected)
        }
        async fn subscribe_connections(
            &self,
            _: &ConnectionsOf,
            _: &TopicName,
        ) -> Result<usize, SubscribeError> {
            Ok(0)
        }
        async fn unsubscribe_connections(&self, _: &ConnectionsOf, _: &TopicName) -> usize {
            0
        }
        fn refresh(&self, _: ConnectionId, _: &Identity) -> Result<(), RefreshError> {
            Err(RefreshError::NotConnected)
        }
        async fn revoke(&self, _: &UserId, _: UnixMillis) -> Result<usize, RevokeError> {
            Ok(0)
        }
        async fn user_presence(&self, user: &UserId) -> Result<UserPresence, PresenceError> {
            Ok(UserPresence { user_id: user.clone(), online: false, connections: 0 })
        }
        async fn topic_presence(&self, _: &TopicName) -> Result<Vec<TopicMember>, PresenceError> {
            Ok(Vec::new())
        }
    }

    /// Every port is usable as `Arc<dyn Trait>`, and the provided send methods of
    /// `RealtimeApi` are `publish` to the matching target, through the trait object.
    #[tokio::test]
    async fn provided_sends_are_publish_through_a_trait_object() {
        fn _dyn_compatible(
            _: Arc<dyn ConnectionRegistry>,
            _: Arc<dyn ConnectionSink>,
            _: Arc<dyn TokenVerifier>,
            _: Arc<dyn InboundHandler>,
        ) {
        }
        fn _stream_ports_dyn_compatible(
            _: Arc<dyn Broker>,
            _: Arc<dyn LocalDelivery>,
            _: Arc<dyn Presence>,
            _: Arc<dyn SubscribeAuthorizer>,
        ) {
        }
        let recorder = Arc::new(Targets::default());
        let api: Arc<dyn RealtimeApi> = recorder.clone();
        let kind = MessageType::new("n").unwrap_or_else(|e| panic!("{e}"));
        let message = Envelope::new(kind, Payload::new());
        let user = UserId::new("u").unwrap_or_else(|e| panic!("{e}"));
        let role = Role::new("r").unwrap_or_else(|e| panic!("{e}"));
        let id = ConnectionId::parse("6f1c5a7e-0d2b-4c8e-9a57-3b1f2e4d5c6a")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(api.send_to_user(&user, &message).await, Ok(1));
        assert_eq!(api.send_to_role(&role, &message).await, Ok(2));
        assert_eq!(api.send_to_connection(id, &message).await, Ok(3));
        assert_eq!(api.broadcast(&message).await, Ok(4));
        let topic = TopicName::new("orders").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(api.send_to_topic(&topic, &message).await, Ok(5));
        assert_eq!(
            *recorder.0.lock().unwrap_or_else(|e| e.into_inner()),
            [
                Target::User(user),
                Target::Role(role),
                Target::Connection(id),
                Target::Broadcast,
                Target::Topic(topic)
            ]
        );
    }
}
