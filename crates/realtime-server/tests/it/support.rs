//! End-to-end test support: the real stack (started through `realtime_server::start`, or
//! assembled here when a test needs short timers), real JWTs, and the publish API. The
//! WebSocket and HTTP clients come from `realtime_testkit::{ws, http}`, re-exported here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use realtime_auth_jwt::{JwtConfig, JwtVerifier};
use realtime_broker_mem::{InMemoryBroker, InMemoryBrokerConfig, InMemoryPresence};
use realtime_ports::{ConnectionRegistry, InboundHandler, RealtimeApi, SubscribeAuthorizer};
use realtime_registry_mem::InMemoryRegistry;
use realtime_server::{Config, Running};
use realtime_service::{Adapters, RealtimeService, ServiceConfig};
pub use realtime_testkit::WAIT;
pub use realtime_testkit::http::{HttpResponse, http, raw_http};
use realtime_testkit::jwt::{Claims, DEV_SECRET, now_unix_secs};
use realtime_testkit::ws::Connect;
pub use realtime_testkit::ws::{
    Ws, connect, expect_close, expect_close_then_end, next_json, send_text,
};
use realtime_transport_warp::{ApiKey, Deps, Server, ShutdownHandle, TransportConfig};
use serde_json::Value;
use tokio::task::JoinHandle;

/// The API key of test servers.
pub const API_KEY: &str = "e2e-api-key-0123456789abcdef";
/// The HS256 secret of test servers.
pub const SECRET: &[u8] = DEV_SECRET.as_bytes();

// ---------------------------------------------------------------- servers

/// A configuration for `realtime_server::start`: port 0, the test secret and key, no demo.
pub fn config() -> Config {
    let mut config = Config::dev();
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.jwt_secret = Some(DEV_SECRET.to_owned());
    config.api_key = Some(API_KEY.to_owned());
    config.demo = Some(false);
    config.shutdown_grace_secs = 3;
    config
}

/// [`config`] as node `id` of the cluster on `redis_url` (`--broker redis`; one URL or a
/// comma-separated list of shards).
pub fn redis_node(redis_url: &str, id: &str) -> Config {
    let mut config = config();
    config.broker = realtime_server::BrokerKind::Redis;
    config.redis_url = Some(redis_url.to_owned());
    config.node_id = Some(id.to_owned());
    config
}

/// Opens a WebSocket with `token` in the query and, with `since`, the positions to recover
/// from; returns it and its `connected` frame.
pub async fn open_since(addr: SocketAddr, token: &str, since: Option<&Value>) -> (Ws, Value) {
    let query = since.map(realtime_testkit::ws::since_query);
    let options =
        Connect { token_query: Some(token), query: query.as_deref(), ..Connect::default() };
    let (mut ws, _) = realtime_testkit::ws::try_connect(addr, options)
        .await
        .unwrap_or_else(|s| panic!("refused: {s}"));
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["type"], "connected", "{hello}");
    (ws, hello)
}

/// Starts the real server.
pub async fn start(config: Config) -> Running {
    realtime_server::start(config).await.unwrap_or_else(|e| panic!("start: {e:#}"))
}

/// Shuts a server down and waits for it to finish.
pub async fn stop(running: Running) {
    running.shutdown.shutdown();
    tokio::time::timeout(WAIT, running.join())
        .await
        .unwrap_or_else(|_| panic!("server did not stop in time"));
}

/// The stack assembled by hand (registry, service, JWT verifier, transport), for tests that
/// need short timers or a look into the registry.
pub struct Stack {
    pub addr: SocketAddr,
    pub registry: Arc<InMemoryRegistry>,
    /// The service, as the application holds it.
    pub api: Arc<dyn RealtimeApi>,
    pub shutdown: ShutdownHandle,
    task: JoinHandle<()>,
}

/// A transport configuration for hand-assembled stacks.
pub fn transport() -> TransportConfig {
    TransportConfig {
        api_key: ApiKey::new(API_KEY).unwrap_or_else(|e| panic!("{e}")),
        close_timeout: Duration::from_millis(500),
        shutdown_grace: Duration::from_secs(3),
        ..TransportConfig::default()
    }
}

pub async fn start_stack(transport: TransportConfig) -> Stack {
    start_stack_with(transport, ServiceConfig::default(), None).await
}

/// [`start_stack`] with a service configuration and the application's inbound handler, if any.
pub async fn start_stack_with(
    transport: TransportConfig,
    service: ServiceConfig,
    inbound: Option<Arc<dyn InboundHandler>>,
) -> Stack {
    StackParts { transport, service, inbound, ..StackParts::default() }.start().await
}

/// [`start_stack_with`] with a JWT configuration of its own (for example, no leeway, so that
/// a token's `exp` is exactly when its connection closes).
pub async fn start_stack_verifying(
    transport: TransportConfig,
    service: ServiceConfig,
    inbound: Option<Arc<dyn InboundHandler>>,
    jwt: JwtConfig,
) -> Stack {
    StackParts { transport, service, inbound, jwt, ..StackParts::default() }.start().await
}

/// [`start_stack_with`] with the broker's configuration too (history limits, for tests of
/// recovery).
pub async fn start_stack_full(
    transport: TransportConfig,
    service: ServiceConfig,
    broker: InMemoryBrokerConfig,
    inbound: Option<Arc<dyn InboundHandler>>,
) -> Stack {
    StackParts { transport, service, broker, inbound, ..StackParts::default() }.start().await
}

/// Every part of a hand-assembled stack; `Default` is the test transport, the default
/// service and broker, no inbound handler, no subscribe authorizer, HS256 with [`SECRET`].
pub struct StackParts {
    pub transport: TransportConfig,
    pub service: ServiceConfig,
    pub broker: InMemoryBrokerConfig,
    pub inbound: Option<Arc<dyn InboundHandler>>,
    pub authorizer: Option<Arc<dyn SubscribeAuthorizer>>,
    pub jwt: JwtConfig,
}

impl Default for StackParts {
    fn default() -> Self {
        StackParts {
            transport: transport(),
            service: ServiceConfig::default(),
            broker: InMemoryBrokerConfig::default(),
            inbound: None,
            authorizer: None,
            jwt: JwtConfig::hs256(SECRET.to_vec()),
        }
    }
}

impl StackParts {
    /// Builds the stack and serves it on 127.0.0.1 at a free port.
    pub async fn start(self) -> Stack {
        start_stack_parts(self).await
    }
}

/// The stack from every part's configuration.
async fn start_stack_parts(parts: StackParts) -> Stack {
    let StackParts { transport, service, broker, inbound, authorizer, jwt } = parts;
    let registry = Arc::new(InMemoryRegistry::new());
    let mut adapters = Adapters::new(
        registry.clone() as Arc<dyn ConnectionRegistry>,
        Arc::new(InMemoryBroker::new(broker)),
        Arc::new(InMemoryPresence::new()),
    );
    adapters.authorizer = authorizer;
    let api: Arc<dyn RealtimeApi> = RealtimeService::new(adapters, service);
    let verifier = JwtVerifier::new(jwt).unwrap_or_else(|e| panic!("{e}"));
    let mut deps = Deps::new(api.clone(), Arc::new(verifier));
    deps.inbound = inbound;
    let server = Server::bind(SocketAddr::from(([127, 0, 0, 1], 0)), deps, transport)
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = server.local_addr();
    let shutdown = server.shutdown_handle();
    let task = tokio::spawn(server.run());
    Stack { addr, registry, api, shutdown, task }
}

impl Stack {
    pub async fn stop(self) {
        self.shutdown.shutdown();
        tokio::time::timeout(WAIT, self.task)
            .await
            .unwrap_or_else(|_| panic!("server did not stop in time"))
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

// ---------------------------------------------------------------- tokens

/// A token as the development server mints them: role `user`, the demo's topics
/// (`demo:*`), valid for an hour.
pub fn demo_token(user: &str) -> String {
    Claims::new(user).roles(&["user"]).topics(&["demo:*"]).exp(now_unix_secs() + 3600).mint(SECRET)
}

/// A valid HS256 token for `user` with `roles`, valid for an hour.
pub fn token(user: &str, roles: &[&str]) -> String {
    Claims::new(user).roles(roles).exp(now_unix_secs() + 3600).mint(SECRET)
}

/// Base64url without padding, for hand-made tokens.
pub fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

// ---------------------------------------------------------------- WebSocket client

/// Opens a WebSocket with a token in the query and/or the subprotocol header;
/// `Err(status)` when the server answers anything but 101.
pub async fn try_connect(
    addr: SocketAddr,
    query_token: Option<&str>,
    subprotocol: Option<&str>,
) -> Result<Ws, u16> {
    let options = Connect { token_query: query_token, subprotocol, ..Connect::default() };
    realtime_testkit::ws::try_connect(addr, options).await.map(|(ws, _)| ws)
}

// ---------------------------------------------------------------- publish API

/// `POST /api/publish` with the test key.
pub async fn publish(addr: SocketAddr, body: &Value) -> HttpResponse {
    let auth = format!("Bearer {API_KEY}");
    http(addr, "POST", "/api/publish", &[("Authorization", &auth)], body.to_string().as_bytes())
        .await
}

/// `POST /api/publish` that must succeed; returns the delivered count.
pub async fn delivered(addr: SocketAddr, body: &Value) -> u64 {
    let response = publish(addr, body).await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["delivered"].as_u64().unwrap_or_else(|| panic!("{}", response.text()))
}

/// Waits until `condition` holds, checking after every short pause.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let wait = async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(WAIT, wait).await.unwrap_or_else(|_| panic!("never true: {what}"));
}

/// A counter's value in the server's `/metrics` (0 when it was never incremented).
pub async fn counter(addr: SocketAddr, series: &str) -> u64 {
    let auth = format!("Bearer {API_KEY}");
    let text = http(addr, "GET", "/metrics", &[("Authorization", &auth)], b"").await.text();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}

// ---------------------------------------------------------------- the server binary

/// The server binary as a child process on a port of its own: killed with SIGKILL (a crash),
/// and started again on the same port with the same settings.
pub struct ServerBinary {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Option<std::process::Child>,
    env: Vec<(String, String)>,
}

impl ServerBinary {
    /// Starts it with the test secret and API key, `REALTIME_LOG=warn` and `env`, on a free
    /// port; waits (at most 30 s) until it answers `/healthz`.
    pub async fn start(env: &[(&str, String)]) -> ServerBinary {
        let port = {
            let listener =
                std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
            listener.local_addr().unwrap_or_else(|e| panic!("{e}")).port()
        };
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        let mut binary =
            ServerBinary { addr: SocketAddr::from(([127, 0, 0, 1], port)), child: None, env };
        binary.spawn().await;
        binary
    }

    /// Starts it (again, after [`kill`](Self::kill)) on its port.
    pub async fn spawn(&mut self) {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_realtime-server"))
            .env("REALTIME_JWT_SECRET", DEV_SECRET)
            .env("REALTIME_API_KEY", API_KEY)
            .env("REALTIME_LISTEN", self.addr.to_string())
            .env("REALTIME_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn the server binary: {e}"));
        self.child = Some(child);
        let addr = self.addr;
        let ready = async {
            loop {
                if tokio::net::TcpStream::connect(addr).await.is_ok()
                    && http(addr, "GET", "/healthz", &[], b"").await.status == 200
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), ready)
            .await
            .unwrap_or_else(|_| panic!("the server binary did not answer /healthz"));
    }

    /// SIGKILL (`Child::kill` on Unix), then reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ServerBinary {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------- positions

/// A stream position as the wire gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pos {
    /// Its epoch.
    pub epoch: String,
    /// Its offset.
    pub offset: u64,
}

impl Pos {
    /// The `epoch` and `offset` of a `connected` stream entry, a `subscribed` payload or a
    /// publication.
    pub fn of(value: &Value) -> Pos {
        let epoch = value["epoch"].as_str().unwrap_or_else(|| panic!("no epoch in {value}"));
        let offset = value["offset"].as_u64().unwrap_or_else(|| panic!("no offset in {value}"));
        Pos { epoch: epoch.to_owned(), offset }
    }

    /// As `since` wants it.
    pub fn to_json(&self) -> Value {
        serde_json::json!({"epoch": self.epoch, "offset": self.offset})
    }
}
