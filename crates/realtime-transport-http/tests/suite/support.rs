//! Fakes of the ports (service, verifier, inbound handler) and a server on 127.0.0.1:0 for
//! the transport's integration tests. The WebSocket and HTTP clients come from
//! `realtime_testkit::{ws, http}`, re-exported here.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::TransportServer as Server;
use async_trait::async_trait;
use parking_lot::Mutex;
use realtime_core::{
    BearerToken, Connection, ConnectionId, ConnectionsOf, Envelope, Epoch, Frame, Identity,
    Position, RequestId, Role, StreamName, StreamState, Target, TopicName, UnixMillis, UserId,
};
use realtime_ports::{
    AuthError, CloseReason, ConnectError, ConnectRequest, ConnectionSink, DisconnectReason,
    InboundError, InboundHandler, InboundReply, PresenceError, PublishError, PublishOptions,
    PublishReceipt, RealtimeApi, RefreshError, RevokeError, StreamError, SubscribeError,
    SubscribeRequest, Subscribed, TokenVerifier, TopicMember, UnsubscribeError, UserPresence,
};
pub use realtime_testkit::WAIT;
pub use realtime_testkit::http::{HttpResponse, http, raw_http};
pub use realtime_testkit::ws::{Connect, connect, expect_close, next_json, send_text, try_connect};
use realtime_transport_http::{ApiKey, Deps, ShutdownHandle, TransportConfig};
use serde_json::Value;
use tokio::task::JoinHandle;

/// The API key of test servers.
pub const API_KEY: &str = "test-api-key-0123456789";

// ---------------------------------------------------------------- fake service

/// A registered connection of the fake service.
struct Entry {
    connection: Connection,
    sink: Arc<dyn ConnectionSink>,
}

/// A `RealtimeApi` on a `HashMap`, recording every disconnect and every backend call
/// ([`FakeApi::backend_calls`]).
///
/// Backend calls fail on cue: the topic `full` is refused as too many topics (at most 2),
/// the topic `down` and the user `down` (revoke, presence) as unavailable (with a secret in
/// the error, which must not reach the reply). A publish with an idempotency key gets
/// position `fake1`/7, and is a duplicate when the key is `retried`. The topic `busy` has
/// two members, `carol` (2 connections) and `dave` (1).
pub struct FakeApi {
    connections: Mutex<HashMap<ConnectionId, Entry>>,
    disconnects: Mutex<Vec<(ConnectionId, DisconnectReason)>>,
    calls: Mutex<Vec<String>>,
    notify: tokio::sync::Notify,
    max: usize,
}

impl FakeApi {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(FakeApi {
            connections: Mutex::new(HashMap::new()),
            disconnects: Mutex::new(Vec::new()),
            calls: Mutex::new(Vec::new()),
            notify: tokio::sync::Notify::new(),
            max,
        })
    }

    /// How many connections are registered.
    pub fn connection_count_now(&self) -> usize {
        self.connections.lock().len()
    }

    /// The metadata a registered connection was admitted with.
    pub fn metadata_of(&self, id: ConnectionId) -> Option<realtime_core::Payload> {
        self.connections.lock().get(&id).map(|e| e.connection.metadata.clone())
    }

    /// Every backend call so far, as `"<method> <arguments>"` (for example
    /// `"subscribe user:alice orders"`).
    pub fn backend_calls(&self) -> Vec<String> {
        self.calls.lock().clone()
    }

    fn record(&self, call: String) {
        self.calls.lock().push(call);
    }

    /// Every disconnect so far.
    pub fn disconnects(&self) -> Vec<(ConnectionId, DisconnectReason)> {
        self.disconnects.lock().clone()
    }

    /// Waits until `id` was disconnected and returns the reason.
    pub async fn disconnected(&self, id: ConnectionId) -> DisconnectReason {
        let wait = async {
            loop {
                let notified = self.notify.notified();
                if let Some((_, reason)) = self.disconnects.lock().iter().find(|(i, _)| *i == id) {
                    return *reason;
                }
                notified.await;
            }
        };
        tokio::time::timeout(WAIT, wait)
            .await
            .unwrap_or_else(|_| panic!("{id} was not disconnected in time"))
    }

    /// Sends to one connection and says whether its sink took the frame.
    pub fn send_one(
        &self,
        id: ConnectionId,
        frame: Frame,
    ) -> Result<(), realtime_ports::SendError> {
        let sink = self.connections.lock().get(&id).map(|e| Arc::clone(&e.sink));
        sink.map_or(Err(realtime_ports::SendError::Closed), |sink| sink.send(frame))
    }

    /// Asks one connection's sink to close, as the service does for a kick.
    pub fn close_one(&self, id: ConnectionId, reason: CloseReason) {
        let sink = self.connections.lock().get(&id).map(|e| Arc::clone(&e.sink));
        sink.unwrap_or_else(|| panic!("{id} not registered")).close(reason);
    }

    fn fan_out(&self, target: &Target, message: &Envelope) -> usize {
        let frame = Frame::encode(message);
        let sinks: Vec<_> = {
            let connections = self.connections.lock();
            let all: Vec<&Connection> = connections.values().map(|e| &e.connection).collect();
            realtime_core::route(target, all)
                .into_iter()
                .filter_map(|id| connections.get(&id).map(|e| Arc::clone(&e.sink)))
                .collect()
        };
        sinks.iter().filter(|sink| sink.send(frame.clone()).is_ok()).count()
    }
}

#[async_trait]
impl RealtimeApi for FakeApi {
    fn connect(&self, request: ConnectRequest) -> Result<Arc<Connection>, ConnectError> {
        if request.identity.user_id.as_str() == "forbidden" {
            return Err(ConnectError::Forbidden);
        }
        let mut connections = self.connections.lock();
        if connections.len() >= self.max {
            return Err(ConnectError::AtCapacity { max: self.max });
        }
        let id = ConnectionId::from_uuid(uuid::Uuid::new_v4());
        let connection =
            Connection::new(id, &request.identity, request.metadata, UnixMillis(now_millis()));
        connections.insert(id, Entry { connection: connection.clone(), sink: request.sink });
        Ok(Arc::new(connection))
    }

    fn unregister(&self, id: ConnectionId, reason: DisconnectReason) -> bool {
        let removed = self.connections.lock().remove(&id).is_some();
        self.disconnects.lock().push((id, reason));
        self.notify.notify_waiters();
        removed
    }

    fn kick(&self, id: ConnectionId) -> bool {
        let entry = self.connections.lock().remove(&id);
        entry.map(|entry| entry.sink.close(CloseReason::Kicked)).is_some()
    }

    fn kick_user(&self, user: &UserId) -> usize {
        let ids: Vec<ConnectionId> = self
            .connections
            .lock()
            .values()
            .filter(|e| e.connection.user_id == *user)
            .map(|e| e.connection.id)
            .collect();
        ids.into_iter().filter(|id| self.kick(*id)).count()
    }

    fn has_capacity(&self) -> bool {
        self.connections.lock().len() < self.max
    }

    fn connection_count(&self) -> usize {
        self.connections.lock().len()
    }

    async fn publish_with(
        &self,
        target: &Target,
        message: &Envelope,
        options: &PublishOptions,
    ) -> Result<PublishReceipt, PublishError> {
        // As the contract requires of every service.
        if realtime_core::protocol::is_reserved_server_type(message.kind.as_str()) {
            return Err(PublishError::ReservedType(message.kind.clone()));
        }
        if *target == Target::Topic(topic("down")) {
            return Err(PublishError::Unavailable("broker password hunter2".to_owned()));
        }
        let key = options.idempotency_key.as_ref().map(|k| k.as_str().to_owned());
        if let Some(key) = &key {
            self.record(format!("publish key {key}"));
        }
        let delivered = self.fan_out(target, message);
        let position = key.as_ref().map(|_| Position {
            epoch: Epoch::new("fake1").unwrap_or_else(|e| panic!("{e}")),
            offset: 7,
        });
        let duplicate = key.as_deref() == Some("retried");
        Ok(PublishReceipt { delivered, stream: target.stream(), position, duplicate, nodes: None })
    }

    async fn reply(
        &self,
        id: ConnectionId,
        reply_id: Option<RequestId>,
        message: &Envelope,
    ) -> Result<usize, PublishError> {
        // As the contract requires of every service.
        if realtime_core::protocol::is_reserved_server_type(message.kind.as_str()) {
            return Err(PublishError::ReservedType(message.kind.clone()));
        }
        let frame = Frame::encode_reply(message, reply_id.as_ref());
        Ok(usize::from(self.send_one(id, frame).is_ok()))
    }

    async fn open_streams(
        &self,
        id: ConnectionId,
        _: &BTreeMap<StreamName, Position>,
    ) -> Result<Vec<StreamState>, StreamError> {
        // The fake keeps no history: no implicit stream has a position.
        if self.connections.lock().contains_key(&id) {
            Ok(Vec::new())
        } else {
            Err(StreamError::NotConnected)
        }
    }

    async fn subscribe(&self, _: SubscribeRequest) -> Result<Subscribed, SubscribeError> {
        Err(SubscribeError::Forbidden)
    }

    async fn unsubscribe(
        &self,
        _: ConnectionId,
        _: &TopicName,
        _: Option<RequestId>,
    ) -> Result<(), UnsubscribeError> {
        Err(UnsubscribeError::NotSubscribed)
    }

    async fn subscribe_connections(
        &self,
        target: &ConnectionsOf,
        topic: &TopicName,
    ) -> Result<usize, SubscribeError> {
        self.record(format!("subscribe {} {topic}", of(target)));
        match topic.as_str() {
            "full" => Err(SubscribeError::TooManyTopics { max: 2 }),
            "down" => Err(SubscribeError::Unavailable("broker password hunter2".to_owned())),
            _ => Ok(self.count_of(target)),
        }
    }

    async fn unsubscribe_connections(&self, target: &ConnectionsOf, topic: &TopicName) -> usize {
        self.record(format!("unsubscribe {} {topic}", of(target)));
        self.count_of(target)
    }

    fn refresh(&self, id: ConnectionId, identity: &Identity) -> Result<(), RefreshError> {
        match self.connections.lock().get(&id) {
            None => Err(RefreshError::NotConnected),
            Some(e) if e.connection.user_id != identity.user_id => Err(RefreshError::DifferentUser),
            Some(_) => Ok(()),
        }
    }

    async fn revoke(&self, user: &UserId, issued_before: UnixMillis) -> Result<usize, RevokeError> {
        self.record(format!("revoke {user} {}", issued_before.0));
        if user.as_str() == "down" {
            return Err(RevokeError::Unavailable("broker password hunter2".to_owned()));
        }
        Ok(self.count_of(&ConnectionsOf::User(user.clone())))
    }

    async fn user_presence(&self, user: &UserId) -> Result<UserPresence, PresenceError> {
        if user.as_str() == "down" {
            return Err(PresenceError::Unavailable("broker password hunter2".to_owned()));
        }
        let connections =
            self.connections.lock().values().filter(|e| e.connection.user_id == *user).count();
        Ok(UserPresence { user_id: user.clone(), online: connections > 0, connections })
    }

    async fn topic_presence(&self, topic: &TopicName) -> Result<Vec<TopicMember>, PresenceError> {
        self.record(format!("topic presence {topic}"));
        let member = |user: &str, connections| TopicMember {
            user_id: UserId::new(user).unwrap_or_else(|e| panic!("{e}")),
            connections,
        };
        match topic.as_str() {
            "down" => Err(PresenceError::Unavailable("broker password hunter2".to_owned())),
            "busy" => Ok(vec![member("carol", 2), member("dave", 1)]),
            _ => Ok(Vec::new()),
        }
    }
}

impl FakeApi {
    /// How many registered connections `target` addresses.
    fn count_of(&self, target: &ConnectionsOf) -> usize {
        let connections = self.connections.lock();
        match target {
            ConnectionsOf::User(user) => {
                connections.values().filter(|e| e.connection.user_id == *user).count()
            }
            ConnectionsOf::Connection(id) => usize::from(connections.contains_key(id)),
        }
    }
}

/// `user:<id>` or `connection:<id>`, for recorded calls.
fn of(target: &ConnectionsOf) -> String {
    match target {
        ConnectionsOf::User(user) => format!("user:{user}"),
        ConnectionsOf::Connection(id) => format!("connection:{id}"),
    }
}

/// A topic name from a test literal.
pub fn topic(name: &str) -> TopicName {
    TopicName::new(name).unwrap_or_else(|e| panic!("{e}"))
}

pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

// ---------------------------------------------------------------- fake verifier

/// Tokens: `good.<user>[.<role>!<role>][~anything]` is valid; `expiring.<ms>.<user>`
/// expires `ms` milliseconds after verification; `unavailable` fails as unavailable;
/// anything else has a bad signature. The part after `~` is ignored (tests put a secret
/// marker there to look for in logs).
pub struct FakeVerifier;

#[async_trait]
impl TokenVerifier for FakeVerifier {
    async fn verify(&self, token: &BearerToken) -> Result<Identity, AuthError> {
        let raw = token.expose().split('~').next().unwrap_or_default();
        let parts: Vec<&str> = raw.split('.').collect();
        let user = |name: &str| UserId::new(name).map_err(|_| AuthError::Malformed);
        match parts.as_slice() {
            ["good", name] => Ok(Identity::new(user(name)?)),
            ["good", name, roles] => Ok(Identity::new(user(name)?).with_roles(
                roles.split('!').map(|r| Role::new(r).unwrap_or_else(|e| panic!("{e}"))),
            )),
            ["expiring", ms, name] => {
                let ms: u64 = ms.parse().map_err(|_| AuthError::Malformed)?;
                let mut identity = Identity::new(user(name)?);
                identity.expires_at = Some(UnixMillis(now_millis() + ms));
                Ok(identity)
            }
            ["unavailable"] => Err(AuthError::Unavailable("down".to_owned())),
            _ => Err(AuthError::InvalidSignature),
        }
    }
}

// ---------------------------------------------------------------- fake inbound handler

/// `echo` replies with the same payload; `reject` is refused; `boom` fails internally;
/// `hang` never completes; `panic` panics; `forge` replies with a `pong` (a reserved type);
/// anything else is unsupported.
#[derive(Default)]
pub struct FakeInbound {
    /// How many `hang` messages were handed over so far.
    hangs: Mutex<usize>,
    notify: tokio::sync::Notify,
}

impl FakeInbound {
    /// Waits until `n` `hang` messages have reached the handler.
    pub async fn hanging(&self, n: usize) {
        let wait = async {
            loop {
                let notified = self.notify.notified();
                if *self.hangs.lock() >= n {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(WAIT, wait)
            .await
            .unwrap_or_else(|_| panic!("{n} hang messages never reached the handler"));
    }
}

#[async_trait]
impl InboundHandler for FakeInbound {
    async fn handle(
        &self,
        _connection: &Connection,
        message: Envelope,
    ) -> Result<InboundReply, InboundError> {
        match message.kind.as_str() {
            "echo" => Ok(Some(message)),
            "reject" => Err(InboundError::Rejected("not allowed here".to_owned())),
            "boom" => Err(InboundError::Internal("database password is hunter2".to_owned())),
            "hang" => {
                *self.hangs.lock() += 1;
                self.notify.notify_waiters();
                std::future::pending().await
            }
            "panic" => panic!("inbound handler panicked on purpose"),
            "forge" => Ok(Some(
                Envelope::from_parts("pong", serde_json::json!({}))
                    .unwrap_or_else(|e| panic!("{e}")),
            )),
            _ => Err(InboundError::Unsupported),
        }
    }
}

// ---------------------------------------------------------------- server

/// A running transport server with the fakes.
pub struct TestServer {
    pub addr: SocketAddr,
    pub api: Arc<FakeApi>,
    pub inbound: Arc<FakeInbound>,
    pub shutdown: ShutdownHandle,
    pub task: JoinHandle<()>,
}

/// The test configuration: short timers, the test API key.
pub fn test_config() -> TransportConfig {
    TransportConfig {
        api_key: ApiKey::new(API_KEY).unwrap_or_else(|e| panic!("{e}")),
        // Test clients that are not being read do not answer close frames; a short close
        // timeout keeps their servers' shutdowns quick.
        close_timeout: Duration::from_millis(500),
        shutdown_grace: Duration::from_secs(3),
        ..TransportConfig::default()
    }
}

pub async fn start(config: TransportConfig) -> TestServer {
    start_with(config, 1000, None).await
}

pub async fn start_with(
    config: TransportConfig,
    max_connections: usize,
    metrics: Option<realtime_transport_http::MetricsRenderer>,
) -> TestServer {
    let api = FakeApi::new(max_connections);
    let inbound = Arc::new(FakeInbound::default());
    let deps = Deps {
        api: api.clone(),
        verifier: Arc::new(FakeVerifier),
        inbound: Some(inbound.clone()),
        metrics,
    };
    serve(api, inbound, deps, config).await
}

/// A server with the fake service and `verifier`, and `inbound` if any.
pub async fn start_verifying(
    config: TransportConfig,
    verifier: Arc<dyn TokenVerifier>,
    inbound: Option<Arc<dyn InboundHandler>>,
) -> TestServer {
    let api = FakeApi::new(1000);
    let mut deps = Deps::new(api.clone(), verifier);
    deps.inbound = inbound;
    serve(api, Arc::new(FakeInbound::default()), deps, config).await
}

/// `inbound` is the fake handler the test looks at (it serves only if `deps` holds it).
async fn serve(
    api: Arc<FakeApi>,
    inbound: Arc<FakeInbound>,
    deps: Deps,
    config: TransportConfig,
) -> TestServer {
    let server = Server::bind(([127, 0, 0, 1], 0).into(), deps, config)
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = server.local_addr();
    let shutdown = server.shutdown_handle();
    let task = tokio::spawn(server.run());
    TestServer { addr, api, inbound, shutdown, task }
}

impl TestServer {
    /// Shuts down and waits for `run` to return.
    pub async fn stop(self) {
        self.shutdown.shutdown();
        tokio::time::timeout(WAIT, self.task)
            .await
            .unwrap_or_else(|_| panic!("server did not stop in time"))
            .unwrap_or_else(|e| panic!("server task: {e}"));
    }
}

// ---------------------------------------------------------------- publish API

/// `POST /api/publish` with the test key.
pub async fn publish(addr: SocketAddr, body: &Value) -> HttpResponse {
    post(addr, "/api/publish", body).await
}

/// `POST <path>` of `body` with the test key.
pub async fn post(addr: SocketAddr, path: &str, body: &Value) -> HttpResponse {
    let auth = format!("Bearer {API_KEY}");
    http(
        addr,
        "POST",
        path,
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await
}

/// `GET <path>` with the test key.
pub async fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    let auth = format!("Bearer {API_KEY}");
    http(addr, "GET", path, &[("Authorization", &auth)], b"").await
}
