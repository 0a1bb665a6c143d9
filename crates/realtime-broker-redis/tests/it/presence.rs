//! Presence on Redis: the presence contract suite on one node, then what only several
//! nodes show: a user online on two nodes, topic members across nodes, the cluster-wide
//! online count, and a crashed node's connections gone within the TTL.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use realtime_broker_redis::{RedisBroker, RedisBrokerConfig, RedisPresence};
use realtime_core::{ConnectionId, TopicName, UserId};
use realtime_ports::{Presence, PresenceError, PresenceScope, TopicMember, UserPresence};
use realtime_testkit::fixtures::{connection_id, user};
use realtime_testkit::{RedisProcess, WAIT};

use crate::support::runtime;

/// A [`RedisPresence`] with its own runtime and `redis-server` (the contract suite is
/// synchronous and drives each query on a runtime of its own).
struct ServedPresence {
    presence: Arc<RedisPresence>,
    _broker: RedisBroker,
    _server: RedisProcess,
    _runtime: tokio::runtime::Runtime,
}

impl ServedPresence {
    fn start() -> ServedPresence {
        let runtime = runtime();
        let server = RedisProcess::start();
        let (broker, presence) = runtime.block_on(async {
            let broker = RedisBroker::connect(RedisBrokerConfig::new(server.url()))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let presence = broker.presence();
            (broker, presence)
        });
        ServedPresence { presence, _broker: broker, _server: server, _runtime: runtime }
    }
}

#[async_trait]
impl Presence for ServedPresence {
    fn join(&self, scope: PresenceScope<'_>, user: &UserId, connection: ConnectionId) -> bool {
        self.presence.join(scope, user, connection)
    }
    fn leave(&self, scope: PresenceScope<'_>, user: &UserId, connection: ConnectionId) -> bool {
        self.presence.leave(scope, user, connection)
    }
    async fn user(&self, user: &UserId) -> Result<UserPresence, PresenceError> {
        self.presence.user(user).await
    }
    async fn topic(&self, topic: &TopicName) -> Result<Vec<TopicMember>, PresenceError> {
        self.presence.topic(topic).await
    }
    async fn online_count(&self) -> Result<usize, PresenceError> {
        self.presence.online_count().await
    }
}

realtime_testkit::presence_contract_tests!(
    || Arc::new(ServedPresence::start()) as Arc<dyn Presence>
);

fn topic(raw: &str) -> TopicName {
    TopicName::new(raw).unwrap_or_else(|e| panic!("{e}"))
}

async fn node(server: &RedisProcess, ttl: Duration) -> (RedisBroker, Arc<RedisPresence>) {
    let config = RedisBrokerConfig { presence_ttl: ttl, ..RedisBrokerConfig::new(server.url()) };
    let broker = RedisBroker::connect(config).await.unwrap_or_else(|e| panic!("{e}"));
    let presence = broker.presence();
    (broker, presence)
}

/// Two nodes: one user's tabs on both count once each, topic members and the online count
/// add up across nodes, and a leave on one node leaves the other's tab there.
#[test]
fn presence_adds_up_across_nodes() {
    runtime().block_on(async {
        let server = RedisProcess::start();
        let ((_a, on_a), (_b, on_b)) = (
            node(&server, Duration::from_secs(60)).await,
            node(&server, Duration::from_secs(60)).await,
        );
        let (alice, bob) = (user("alice"), user("bob"));
        let room = topic("room");
        assert!(on_a.join(PresenceScope::Online, &alice, connection_id(1)));
        assert!(on_b.join(PresenceScope::Online, &alice, connection_id(2)), "first on b");
        assert!(on_b.join(PresenceScope::Online, &bob, connection_id(3)));
        assert!(on_a.join(PresenceScope::Topic(&room), &alice, connection_id(1)));
        assert!(on_b.join(PresenceScope::Topic(&room), &alice, connection_id(2)));
        assert!(on_b.join(PresenceScope::Topic(&room), &bob, connection_id(3)));
        // b's writes are applied before a's query only once b flushed: ask b first.
        assert_eq!(on_b.online_count().await, Ok(3));
        let seen_from_a = on_a.user(&alice).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((seen_from_a.online, seen_from_a.connections), (true, 2));
        let members = on_a.topic(&room).await.unwrap_or_else(|e| panic!("{e}"));
        let members: Vec<(&str, usize)> =
            members.iter().map(|m| (m.user_id.as_str(), m.connections)).collect();
        assert_eq!(members, [("alice", 2), ("bob", 1)]);
        assert!(on_a.leave(PresenceScope::Online, &alice, connection_id(1)), "a's last");
        assert_eq!(on_a.user(&alice).await.map(|p| p.connections), Ok(1), "b's tab is still there");
    });
}

/// A node that crashes (its broker and presence gone without a leave) drops out of
/// presence within the TTL; the node still up keeps its own, refreshed by its heartbeat.
#[test]
fn a_crashed_nodes_connections_leave_presence_within_the_ttl() {
    runtime().block_on(async {
        let server = RedisProcess::start();
        let ttl = Duration::from_millis(600);
        let (survivor, on_survivor) = node(&server, ttl).await;
        let (crashed, on_crashed) = node(&server, ttl).await;
        let (alice, bob) = (user("alice"), user("bob"));
        on_survivor.join(PresenceScope::Online, &alice, connection_id(1));
        on_crashed.join(PresenceScope::Online, &bob, connection_id(2));
        assert_eq!(on_crashed.online_count().await, Ok(2));
        drop(on_crashed);
        drop(crashed);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let bob_online = on_survivor.user(&bob).await.unwrap_or_else(|e| panic!("{e}"));
            if !bob_online.online {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "bob still online after {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Several TTLs later the survivor's own connection is still there (heartbeats).
        tokio::time::sleep(ttl * 3).await;
        assert_eq!(on_survivor.user(&alice).await.map(|p| p.connections), Ok(1));
        assert_eq!(on_survivor.online_count().await, Ok(1));
        drop(survivor);
    });
}

/// Redis down: a presence query is an error, never a silent "nobody".
#[test]
fn a_presence_query_without_redis_is_an_error() {
    runtime().block_on(async {
        let mut server = RedisProcess::start();
        let (_broker, presence) = node(&server, Duration::from_secs(60)).await;
        presence.join(PresenceScope::Online, &user("alice"), connection_id(1));
        server.kill();
        let answer = presence.user(&user("alice")).await;
        assert!(matches!(answer, Err(PresenceError::Unavailable(_))), "{answer:?}");
    });
}
