//! Test support: a metrics recorder that keeps values, a `HashMap` registry fake, builders.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use realtime_core::{
    Connection, ConnectionId, Envelope, Frame, IdempotencyKey, Identity, Permission, Position,
    Role, StreamName, Target, TopicName, UnixMillis, UserId, route,
};
use realtime_ports::mocks::{MockConnectionRegistry, MockConnectionSink};
use realtime_ports::{
    Broker, BrokerError, ConnectRequest, ConnectionRegistry, ConnectionSink, LocalDelivery,
    Presence, PresenceError, PresenceScope, Published, Recovered, RegisterError, Registered,
    TopicError, TopicMember, UserPresence,
};
use uuid::Uuid;

/// A recorder that keeps every counter and gauge, keyed `name{k=v,...}` (labels sorted).
#[derive(Debug, Default)]
pub struct TestRecorder {
    counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
    gauges: Mutex<HashMap<String, Arc<AtomicU64>>>,
    described: Mutex<Vec<String>>,
}

fn render(key: &Key) -> String {
    let mut labels: Vec<String> =
        key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
    if labels.is_empty() {
        return key.name().to_owned();
    }
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

fn slot(map: &Mutex<HashMap<String, Arc<AtomicU64>>>, key: &Key, zero: u64) -> Arc<AtomicU64> {
    let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
    Arc::clone(map.entry(render(key)).or_insert_with(|| Arc::new(AtomicU64::new(zero))))
}

impl TestRecorder {
    /// A counter's value (0 if never registered), e.g. `counter("x_total{reason=a}")`.
    pub fn counter(&self, key: &str) -> u64 {
        let map = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(key).map_or(0, |v| v.load(Ordering::Acquire))
    }

    /// A gauge's value (0 if never registered).
    pub fn gauge(&self, key: &str) -> f64 {
        let map = self.gauges.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(key).map_or(0.0, |v| f64::from_bits(v.load(Ordering::Acquire)))
    }

    /// Every metric name described so far.
    pub fn described(&self) -> Vec<String> {
        self.described.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn describe(&self, key: KeyName) {
        self.described.lock().unwrap_or_else(PoisonError::into_inner).push(key.as_str().to_owned());
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.describe(key);
    }

    fn describe_gauge(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.describe(key);
    }

    fn describe_histogram(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.describe(key);
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(slot(&self.counters, key, 0))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(slot(&self.gauges, key, 0.0f64.to_bits()))
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// A registry fake: one `HashMap` behind a `Mutex`, lookups by scanning with `route`.
#[derive(Debug, Default)]
pub struct MapRegistry {
    map: Mutex<HashMap<ConnectionId, Registered>>,
    /// The topics of each connection; only locked while `map` is held.
    topics: Mutex<HashMap<ConnectionId, BTreeSet<TopicName>>>,
}

impl MapRegistry {
    fn find(&self, target: &Target) -> Vec<Registered> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        route(target, map.values().map(|r| &*r.connection))
            .into_iter()
            .filter_map(|id| map.get(&id).cloned())
            .collect()
    }
}

impl ConnectionRegistry for MapRegistry {
    fn register(
        &self,
        connection: Arc<Connection>,
        sink: Arc<dyn ConnectionSink>,
    ) -> Result<(), RegisterError> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.contains_key(&connection.id) {
            return Err(RegisterError::Duplicate(connection.id));
        }
        map.insert(connection.id, Registered { connection, sink });
        Ok(())
    }

    fn unregister(&self, id: ConnectionId) -> Option<Registered> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        self.topics.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        map.remove(&id)
    }

    fn get(&self, id: ConnectionId) -> Option<Registered> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner).get(&id).cloned()
    }

    fn find_by_user(&self, user: &UserId) -> Vec<Registered> {
        self.find(&Target::User(user.clone()))
    }

    fn find_by_role(&self, role: &Role) -> Vec<Registered> {
        self.find(&Target::Role(role.clone()))
    }

    fn all(&self) -> Vec<Registered> {
        self.find(&Target::Broadcast)
    }

    fn count(&self) -> usize {
        self.map.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    fn subscribe(
        &self,
        id: ConnectionId,
        topic: &TopicName,
        max_topics: usize,
    ) -> Result<bool, TopicError> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if !map.contains_key(&id) {
            return Err(TopicError::NotRegistered(id));
        }
        let mut topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
        let held = topics.entry(id).or_default();
        if !held.contains(topic) && held.len() >= max_topics {
            return Err(TopicError::TooManyTopics { max: max_topics });
        }
        Ok(held.insert(topic.clone()))
    }

    fn unsubscribe(&self, id: ConnectionId, topic: &TopicName) -> bool {
        let _map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let mut topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
        topics.get_mut(&id).is_some_and(|held| held.remove(topic))
    }

    fn find_by_topic(&self, topic: &TopicName) -> Vec<Registered> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
        topics
            .iter()
            .filter(|(_, held)| held.contains(topic))
            .filter_map(|(id, _)| map.get(id).cloned())
            .collect()
    }

    fn topics_of(&self, id: ConnectionId) -> Vec<TopicName> {
        let _map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
        topics.get(&id).map_or_else(Vec::new, |held| held.iter().cloned().collect())
    }

    fn topic_count(&self, topic: &TopicName) -> usize {
        self.find_by_topic(topic).len()
    }
}

pub fn user(raw: &str) -> UserId {
    UserId::new(raw).unwrap_or_else(|e| panic!("{e}"))
}

pub fn role(raw: &str) -> Role {
    Role::new(raw).unwrap_or_else(|e| panic!("{e}"))
}

pub fn permission(raw: &str) -> Permission {
    Permission::new(raw).unwrap_or_else(|e| panic!("{e}"))
}

pub fn conn_id(n: u128) -> ConnectionId {
    ConnectionId::from_uuid(Uuid::from_u128(n))
}

pub fn identity(user_id: &str, roles: &[&str], permissions: &[&str]) -> Identity {
    let mut identity = Identity::new(user(user_id)).with_roles(roles.iter().map(|r| role(r)));
    identity.permissions.extend(permissions.iter().map(|p| permission(p)));
    identity
}

/// A sink that expects nothing: any call fails the test.
pub fn quiet_sink() -> Arc<dyn ConnectionSink> {
    Arc::new(MockConnectionSink::new())
}

pub fn request(identity: Identity) -> ConnectRequest {
    ConnectRequest { identity, metadata: Default::default(), sink: quiet_sink() }
}

/// A registered connection `n` of `user_id` with `sink`.
pub fn registered(n: u128, user_id: &str, sink: Arc<dyn ConnectionSink>) -> Registered {
    let connection = Connection::new(
        conn_id(n),
        &identity(user_id, &[], &[]),
        Default::default(),
        UnixMillis(0),
    );
    Registered { connection: Arc::new(connection), sink }
}

pub fn message() -> Envelope {
    Envelope::from_parts("notification", serde_json::json!({"text": "hello"}))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A broker fake for one node without history: publishes are delivered at once with no
/// position, revocations are remembered. The real broker runs in its own crate's contract
/// suite and in the server's tests; here the service's own logic is under test.
#[derive(Default)]
pub struct FakeBroker {
    delivery: Mutex<Option<std::sync::Weak<dyn LocalDelivery>>>,
    revocations: Mutex<HashMap<UserId, UnixMillis>>,
    /// Positions `recover` answers with, by stream (none: no history).
    pub tops: Mutex<HashMap<StreamName, Position>>,
    /// What `recover` replays for a `since`, by stream.
    pub replays: Mutex<HashMap<StreamName, Vec<Frame>>>,
    /// Frames `recover` delivers live before it answers (a publication racing the read).
    pub racing: Mutex<HashMap<StreamName, Vec<(Position, Frame)>>>,
    /// Interest changes, in order.
    pub interest: Mutex<Vec<(StreamName, bool)>>,
    /// `recover` never answers (a broker that hangs).
    pub stall: std::sync::atomic::AtomicBool,
}

impl FakeBroker {
    fn delivery(&self) -> Option<Arc<dyn LocalDelivery>> {
        self.delivery.lock().unwrap_or_else(PoisonError::into_inner).as_ref()?.upgrade()
    }
}

#[async_trait::async_trait]
impl Broker for FakeBroker {
    fn attach(&self, delivery: std::sync::Weak<dyn LocalDelivery>) {
        *self.delivery.lock().unwrap_or_else(PoisonError::into_inner) = Some(delivery);
    }

    async fn publish(
        &self,
        stream: &StreamName,
        frame: Frame,
        _: Option<&IdempotencyKey>,
    ) -> Result<Published, BrokerError> {
        let delivered = self.delivery().map_or(0, |d| d.deliver(stream, None, &frame));
        Ok(Published { position: None, delivered, duplicate: false, nodes: None })
    }

    fn publish_ephemeral(&self, stream: &StreamName, frame: Frame) {
        if let Some(delivery) = self.delivery() {
            delivery.deliver(stream, None, &frame);
        }
    }

    async fn send_to_connection(&self, _: ConnectionId, _: Frame) -> Result<usize, BrokerError> {
        // One node: a connection that is not local is nowhere.
        Ok(0)
    }

    async fn recover(
        &self,
        stream: &StreamName,
        since: Option<&Position>,
        _: usize,
    ) -> Result<Recovered, BrokerError> {
        if self.stall.load(Ordering::Acquire) {
            std::future::pending::<()>().await;
        }
        let racing = self.racing.lock().unwrap_or_else(PoisonError::into_inner).remove(stream);
        if let (Some(racing), Some(delivery)) = (racing, self.delivery()) {
            for (position, frame) in racing {
                delivery.deliver(stream, Some(&position), &frame);
            }
        }
        let position =
            self.tops.lock().unwrap_or_else(PoisonError::into_inner).get(stream).cloned();
        let publications = since
            .and(self.replays.lock().unwrap_or_else(PoisonError::into_inner).get(stream).cloned());
        Ok(Recovered { position, publications })
    }

    fn interest(&self, stream: &StreamName, interested: bool) {
        self.interest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((stream.clone(), interested));
    }

    async fn revoke(
        &self,
        user: &UserId,
        before: UnixMillis,
        _: UnixMillis,
    ) -> Result<(), BrokerError> {
        self.revocations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(user.clone(), before);
        Ok(())
    }

    fn revoked_before(&self, user: &UserId) -> Option<UnixMillis> {
        self.revocations.lock().unwrap_or_else(PoisonError::into_inner).get(user).copied()
    }
}

/// Presence that remembers nothing (the presence adapter has its own contract suite).
#[derive(Debug, Default)]
pub struct NoPresence;

#[async_trait::async_trait]
impl Presence for NoPresence {
    fn join(&self, _: PresenceScope<'_>, _: &UserId, _: ConnectionId) -> bool {
        false
    }
    fn leave(&self, _: PresenceScope<'_>, _: &UserId, _: ConnectionId) -> bool {
        false
    }
    async fn user(&self, user: &UserId) -> Result<UserPresence, PresenceError> {
        Ok(UserPresence { user_id: user.clone(), online: false, connections: 0 })
    }
    async fn topic(&self, _: &TopicName) -> Result<Vec<TopicMember>, PresenceError> {
        Ok(Vec::new())
    }
    async fn online_count(&self) -> Result<usize, PresenceError> {
        Ok(0)
    }
}

/// A service over `registry` with the fakes above.
pub fn service_over(
    registry: Arc<dyn ConnectionRegistry>,
    config: crate::ServiceConfig,
) -> (Arc<crate::RealtimeService>, Arc<FakeBroker>) {
    let broker = Arc::new(FakeBroker::default());
    let adapters = crate::Adapters::new(registry, broker.clone(), Arc::new(NoPresence));
    (crate::RealtimeService::new(adapters, config), broker)
}

/// A mock registry that knows of no topic subscriptions (`topics_of` is asked on every
/// removal); further expectations are added by each test.
pub fn mock_registry() -> MockConnectionRegistry {
    let mut registry = MockConnectionRegistry::new();
    registry.expect_topics_of().returning(|_| Vec::new());
    registry
}
