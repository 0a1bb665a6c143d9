//! Fakes of the ports (service, verifier, inbound handler), a server on 127.0.0.1:0, a
//! WebSocket client and a minimal HTTP/1.1 client for the transport's integration tests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use realtime_core::{
    BearerToken, Connection, ConnectionId, Envelope, Frame, Identity, Role, Target, UnixMillis,
    UserId,
};
use realtime_ports::{
    AuthError, ConnectError, ConnectRequest, ConnectionSink, DisconnectReason, InboundError,
    InboundHandler, InboundReply, PublishError, RealtimeApi, TokenVerifier,
};
use realtime_transport_warp::{ApiKey, Deps, Server, ShutdownHandle, TransportConfig};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single wait in these tests may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(5);
/// The API key of test servers.
pub const API_KEY: &str = "test-api-key-0123456789";

// ---------------------------------------------------------------- fake service

/// A registered connection of the fake service.
struct Entry {
    connection: Connection,
    sink: Arc<dyn ConnectionSink>,
}

/// A `RealtimeApi` on a `HashMap`, recording every disconnect.
pub struct FakeApi {
    connections: Mutex<HashMap<ConnectionId, Entry>>,
    disconnects: Mutex<Vec<(ConnectionId, DisconnectReason)>>,
    notify: tokio::sync::Notify,
    max: usize,
}

impl FakeApi {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(FakeApi {
            connections: Mutex::new(HashMap::new()),
            disconnects: Mutex::new(Vec::new()),
            notify: tokio::sync::Notify::new(),
            max,
        })
    }

    /// How many connections are registered.
    pub fn connection_count_now(&self) -> usize {
        self.connections.lock().len()
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

    /// Asks one connection's sink to close, as the service does for `disconnect`.
    pub fn close_one(&self, id: ConnectionId, code: u16, reason: &str) {
        let sink = self.connections.lock().get(&id).map(|e| Arc::clone(&e.sink));
        sink.unwrap_or_else(|| panic!("{id} not registered")).close(code, reason);
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
    fn connect(&self, request: ConnectRequest) -> Result<Connection, ConnectError> {
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
        Ok(connection)
    }

    fn disconnect(&self, id: ConnectionId, reason: DisconnectReason) -> bool {
        let removed = self.connections.lock().remove(&id).is_some();
        self.disconnects.lock().push((id, reason));
        self.notify.notify_waiters();
        removed
    }

    fn has_capacity(&self) -> bool {
        self.connections.lock().len() < self.max
    }

    fn connection_count(&self) -> usize {
        self.connections.lock().len()
    }

    async fn send_to_user(&self, user: &UserId, message: &Envelope) -> Result<usize, PublishError> {
        Ok(self.fan_out(&Target::User(user.clone()), message))
    }

    async fn send_to_role(&self, role: &Role, message: &Envelope) -> Result<usize, PublishError> {
        Ok(self.fan_out(&Target::Role(role.clone()), message))
    }

    async fn send_to_connection(
        &self,
        id: ConnectionId,
        message: &Envelope,
    ) -> Result<usize, PublishError> {
        Ok(self.fan_out(&Target::Connection(id), message))
    }

    async fn broadcast(&self, message: &Envelope) -> Result<usize, PublishError> {
        Ok(self.fan_out(&Target::Broadcast, message))
    }

    async fn publish(&self, target: &Target, message: &Envelope) -> Result<usize, PublishError> {
        Ok(self.fan_out(target, message))
    }
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
/// anything else is unsupported.
pub struct FakeInbound;

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
            _ => Err(InboundError::Unsupported),
        }
    }
}

// ---------------------------------------------------------------- server

/// A running transport server with the fakes.
pub struct TestServer {
    pub addr: SocketAddr,
    pub api: Arc<FakeApi>,
    pub shutdown: ShutdownHandle,
    pub task: JoinHandle<()>,
}

/// The test configuration: short timers, the test API key.
pub fn test_config() -> TransportConfig {
    TransportConfig {
        api_key: ApiKey::new(API_KEY),
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
    metrics: Option<realtime_transport_warp::MetricsRenderer>,
) -> TestServer {
    let api = FakeApi::new(max_connections);
    let deps = Deps {
        api: api.clone(),
        verifier: Arc::new(FakeVerifier),
        inbound: Arc::new(FakeInbound),
        metrics,
    };
    let server = Server::bind(([127, 0, 0, 1], 0).into(), deps, config)
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = server.local_addr();
    let shutdown = server.shutdown_handle();
    let task = tokio::spawn(server.run());
    TestServer { addr, api, shutdown, task }
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

// ---------------------------------------------------------------- WebSocket client

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Options of an upgrade request.
#[derive(Default, Clone)]
pub struct Connect<'a> {
    pub token_query: Option<&'a str>,
    pub subprotocol: Option<&'a str>,
    pub origin: Option<&'a str>,
}

/// Opens a WebSocket; `Err(status)` when the server answers something other than 101.
pub async fn try_connect(
    addr: SocketAddr,
    options: Connect<'_>,
) -> Result<(Ws, Option<String>), u16> {
    let url = match options.token_query {
        Some(token) => format!("ws://{addr}/ws?token={token}"),
        None => format!("ws://{addr}/ws"),
    };
    let mut request = url.into_client_request().unwrap_or_else(|e| panic!("{e}"));
    if let Some(protocols) = options.subprotocol {
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(protocols).unwrap_or_else(|e| panic!("{e}")),
        );
    }
    if let Some(origin) = options.origin {
        request
            .headers_mut()
            .insert("origin", HeaderValue::from_str(origin).unwrap_or_else(|e| panic!("{e}")));
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request)).await {
        Err(_) => panic!("connect timed out"),
        Ok(Ok((ws, response))) => {
            let protocol = response
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            Ok((ws, protocol))
        }
        Ok(Err(WsError::Http(response))) => Err(response.status().as_u16()),
        Ok(Err(e)) => panic!("connect failed: {e}"),
    }
}

/// Opens a WebSocket with `token` in the query and reads the `connected` frame.
pub async fn connect(addr: SocketAddr, token: &str) -> (Ws, ConnectionId) {
    let (mut ws, _) = try_connect(addr, Connect { token_query: Some(token), ..Connect::default() })
        .await
        .unwrap_or_else(|status| panic!("upgrade refused with {status}"));
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["type"], "connected", "{hello}");
    let id = hello["payload"]["connection_id"].as_str().unwrap_or_else(|| panic!("{hello}"));
    (ws, ConnectionId::parse(id).unwrap_or_else(|e| panic!("{e}")))
}

/// The next text message as JSON, skipping pings and pongs.
pub async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no message in time"))
            .unwrap_or_else(|| panic!("stream ended"))
            .unwrap_or_else(|e| panic!("read failed: {e}"));
        match message {
            Message::Text(text) => {
                return serde_json::from_str(text.as_str()).unwrap_or_else(|e| panic!("{e}"));
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Reads until the close frame and returns its code and reason (data frames are skipped).
pub async fn expect_close(ws: &mut Ws) -> (u16, String) {
    let read = async {
        while let Some(message) = ws.next().await {
            match message {
                Ok(Message::Close(Some(CloseFrame { code, reason }))) => {
                    return (u16::from(code), reason.as_str().to_owned());
                }
                Ok(Message::Close(None)) => panic!("close frame without a code"),
                Ok(_) => {}
                Err(e) => panic!("read failed before the close frame: {e}"),
            }
        }
        panic!("stream ended without a close frame")
    };
    tokio::time::timeout(WAIT, read).await.unwrap_or_else(|_| panic!("no close frame in time"))
}

/// Sends a text message.
pub async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap_or_else(|e| panic!("send failed: {e}"));
}

// ---------------------------------------------------------------- HTTP client

/// An HTTP response: status, lower-case headers, body.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one HTTP/1.1 request (`Connection: close`) and reads the response by its
/// `Content-Length` (or to the end of the stream).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-length")) {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("{e}"));
        stream.write_all(request.as_bytes()).await.unwrap_or_else(|e| panic!("{e}"));
        stream.write_all(body).await.unwrap_or_else(|e| panic!("{e}"));
        read_response(&mut stream).await
    };
    tokio::time::timeout(WAIT, exchange).await.unwrap_or_else(|_| panic!("HTTP request timed out"))
}

/// Sends only the head of a request (the body is never sent) and reads the response.
pub async fn http_head_only(addr: SocketAddr, head: &str) -> HttpResponse {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("{e}"));
        stream.write_all(head.as_bytes()).await.unwrap_or_else(|e| panic!("{e}"));
        read_response(&mut stream).await
    };
    tokio::time::timeout(WAIT, exchange).await.unwrap_or_else(|_| panic!("HTTP request timed out"))
}

async fn read_response(stream: &mut TcpStream) -> HttpResponse {
    let mut data = Vec::new();
    let mut buffer = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        let read = stream.read(&mut buffer).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(read > 0, "connection closed before the response head");
        data.extend_from_slice(&buffer[..read]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = data[head_end + 4..].to_vec();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    match length {
        Some(length) => {
            while body.len() < length {
                let read = stream.read(&mut buffer).await.unwrap_or_else(|e| panic!("{e}"));
                assert!(read > 0, "connection closed before the whole body");
                body.extend_from_slice(&buffer[..read]);
            }
            body.truncate(length);
        }
        None => {
            let _ = stream.read_to_end(&mut body).await;
        }
    }
    HttpResponse { status, headers, body }
}

/// `POST /api/publish` with the test key.
pub async fn publish(addr: SocketAddr, body: &Value) -> HttpResponse {
    let auth = format!("Bearer {API_KEY}");
    http(
        addr,
        "POST",
        "/api/publish",
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await
}
