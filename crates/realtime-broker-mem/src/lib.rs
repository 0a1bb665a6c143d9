//! The in-process adapters of the stream ports, the default of a single node:
//! [`InMemoryBroker`] ([`Broker`](realtime_ports::Broker)) and [`InMemoryPresence`]
//! ([`Presence`](realtime_ports::Presence)). `cargo run -p realtime-server` needs nothing else.
//!
//! History lives as long as the process: a restart draws new epochs, so clients that
//! reconnect with old positions are told `recovered: false`, never given a silent gap.
//!
//! **Architecture Invariant:** neither adapter awaits or does I/O; [`InMemoryBroker`] calls
//! the node's `LocalDelivery` while it holds the stream's lock, so publications of one stream
//! are delivered in offset order.

mod broker;
mod presence;

pub use broker::{InMemoryBroker, InMemoryBrokerConfig};
pub use presence::InMemoryPresence;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use realtime_ports::{Broker, Presence};

    use super::*;

    realtime_testkit::broker_contract_tests!(|history| {
        let config = InMemoryBrokerConfig { history, ..InMemoryBrokerConfig::default() };
        Arc::new(InMemoryBroker::new(config)) as Arc<dyn Broker>
    });

    realtime_testkit::presence_contract_tests!(
        || Arc::new(InMemoryPresence::new()) as Arc<dyn Presence>
    );

    /// An idempotency key is remembered for `idempotency_ttl` (300 s by default), then the
    /// same key publishes again.
    #[tokio::test]
    async fn an_idempotency_key_expires_after_its_ttl() {
        use realtime_core::{Frame, IdempotencyKey, StreamName};
        let ttl = std::time::Duration::from_millis(50);
        assert_eq!(InMemoryBrokerConfig::default().idempotency_ttl.as_secs(), 300);
        let broker = InMemoryBroker::new(InMemoryBrokerConfig {
            idempotency_ttl: ttl,
            ..InMemoryBrokerConfig::default()
        });
        let to = StreamName::Broadcast;
        let key = IdempotencyKey::new("k").unwrap_or_else(|e| panic!("{e}"));
        let frame = || Frame::from_text(r#"{"type":"n","payload":{}}"#.to_owned());
        let publish = || broker.publish(&to, frame(), Some(&key));
        let first = publish().await.unwrap_or_else(|e| panic!("{e}"));
        let again = publish().await.unwrap_or_else(|e| panic!("{e}"));
        assert!(again.duplicate && again.position == first.position, "{again:?}");
        tokio::time::sleep(ttl * 4).await;
        let later = publish().await.unwrap_or_else(|e| panic!("{e}"));
        assert!(!later.duplicate, "{later:?}");
        assert_eq!(later.position.map(|p| p.offset), Some(2));
    }

    /// Presence keeps nothing for a topic nobody is in.
    #[test]
    fn presence_forgets_empty_topics() {
        use realtime_core::{TopicName, UserId};
        use realtime_ports::PresenceScope;
        let presence = InMemoryPresence::new();
        let topic = TopicName::new("t").unwrap_or_else(|e| panic!("{e}"));
        let user = UserId::new("u").unwrap_or_else(|e| panic!("{e}"));
        let id = realtime_testkit::fixtures::connection_id(1);
        assert!(presence.join(PresenceScope::Topic(&topic), &user, id));
        assert_eq!(presence.topic_count(), 1);
        assert!(presence.leave(PresenceScope::Topic(&topic), &user, id));
        assert_eq!(presence.topic_count(), 0);
    }
}
