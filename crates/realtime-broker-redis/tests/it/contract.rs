//! The broker contract suite, run against a real Redis: one server per test, then two
//! servers per test (a broker sharded over both).

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use realtime_broker_redis::{RedisBroker, RedisBrokerConfig};
use realtime_core::{
    ConnectionId, Frame, HistoryPolicy, IdempotencyKey, Position, StreamName, UnixMillis, UserId,
};
use realtime_ports::{Broker, BrokerError, LocalDelivery, Published, Recovered};
use realtime_testkit::RedisProcess;

/// A [`RedisBroker`] with its own `redis-server`s (one per shard), which live (and are
/// killed) with it.
#[derive(Debug)]
pub struct ServedBroker {
    // Declared first: dropped (its tasks stopped) before the servers are killed.
    broker: RedisBroker,
    _servers: Vec<RedisProcess>,
}

impl ServedBroker {
    /// Starts a server and connects a broker with `history` to it. Called from inside a
    /// multi-threaded tokio runtime (the contract suite's).
    pub fn start(history: HistoryPolicy) -> ServedBroker {
        ServedBroker::sharded(history, 1)
    }

    /// Starts `shards` servers and connects a broker with `history` sharded over them.
    pub fn sharded(history: HistoryPolicy, shards: usize) -> ServedBroker {
        let servers: Vec<RedisProcess> = (0..shards).map(|_| RedisProcess::start()).collect();
        let urls: Vec<String> = servers.iter().map(RedisProcess::url).collect();
        let config = RedisBrokerConfig { history, ..RedisBrokerConfig::new(urls.join(",")) };
        let connect = RedisBroker::connect(config);
        let handle = tokio::runtime::Handle::current();
        let broker = tokio::task::block_in_place(|| handle.block_on(connect))
            .unwrap_or_else(|e| panic!("connect to {urls:?}: {e}"));
        assert_eq!(broker.state().shards, shards);
        ServedBroker { broker, _servers: servers }
    }
}

#[async_trait]
impl Broker for ServedBroker {
    fn attach(&self, delivery: Weak<dyn LocalDelivery>) {
        self.broker.attach(delivery);
    }

    async fn publish(
        &self,
        stream: &StreamName,
        frame: Frame,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> Result<Published, BrokerError> {
        self.broker.publish(stream, frame, idempotency_key).await
    }

    fn publish_ephemeral(&self, stream: &StreamName, frame: Frame) {
        self.broker.publish_ephemeral(stream, frame);
    }

    async fn send_to_connection(
        &self,
        id: ConnectionId,
        frame: Frame,
    ) -> Result<usize, BrokerError> {
        self.broker.send_to_connection(id, frame).await
    }

    async fn recover(
        &self,
        stream: &StreamName,
        since: Option<&Position>,
        max: usize,
    ) -> Result<Recovered, BrokerError> {
        self.broker.recover(stream, since, max).await
    }

    fn interest(&self, stream: &StreamName, interested: bool) {
        self.broker.interest(stream, interested);
    }

    async fn revoke(
        &self,
        user: &UserId,
        issued_before: UnixMillis,
        keep_until: UnixMillis,
    ) -> Result<(), BrokerError> {
        self.broker.revoke(user, issued_before, keep_until).await
    }

    fn revoked_before(&self, user: &UserId) -> Option<UnixMillis> {
        self.broker.revoked_before(user)
    }
}

realtime_testkit::broker_contract_tests!(|history| {
    Arc::new(ServedBroker::start(history)) as Arc<dyn Broker>
});

realtime_testkit::broker_contract_tests!(broker_contract_two_shards, |history| {
    Arc::new(ServedBroker::sharded(history, 2)) as Arc<dyn Broker>
});
