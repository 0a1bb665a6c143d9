//! End-to-end test support: the real stack (started through `realtime_server::start`, or
//! assembled here when a test needs short timers), real JWTs, a WebSocket client and a
//! minimal HTTP/1.1 client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use realtime_auth_jwt::{JwtConfig, JwtVerifier};
use realtime_core::{Connection, ConnectionId, Envelope};
use realtime_ports::{ConnectionRegistry, InboundError, InboundHandler, InboundReply, RealtimeApi};
use realtime_registry_mem::InMemoryRegistry;
use realtime_server::{Config, Running};
use realtime_service::{RealtimeService, ServiceConfig};
use realtime_testkit::jwt::{Claims, DEV_SECRET, now_unix_secs};
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

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(5);
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
    pub shutdown: ShutdownHandle,
    task: JoinHandle<()>,
}

/// A transport configuration for hand-assembled stacks.
pub fn transport() -> TransportConfig {
    TransportConfig {
        api_key: ApiKey::new(API_KEY),
        close_timeout: Duration::from_millis(500),
        shutdown_grace: Duration::from_secs(3),
        ..TransportConfig::default()
    }
}

/// No application messages.
struct NoInbound;

#[async_trait::async_trait]
impl InboundHandler for NoInbound {
    async fn handle(&self, _: &Connection, _: Envelope) -> Result<InboundReply, InboundError> {
        Err(InboundError::Unsupported)
    }
}

pub async fn start_stack(transport: TransportConfig) -> Stack {
    let registry = Arc::new(InMemoryRegistry::new());
    let api: Arc<dyn RealtimeApi> = Arc::new(RealtimeService::new(
        registry.clone() as Arc<dyn ConnectionRegistry>,
        ServiceConfig::default(),
    ));
    let verifier =
        JwtVerifier::new(JwtConfig::hs256(SECRET.to_vec())).unwrap_or_else(|e| panic!("{e}"));
    let deps = Deps {
        api: api.clone(),
        verifier: Arc::new(verifier),
        inbound: Arc::new(NoInbound),
        metrics: None,
    };
    let server = Server::bind(SocketAddr::from(([127, 0, 0, 1], 0)), deps, transport)
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = server.local_addr();
    let shutdown = server.shutdown_handle();
    let task = tokio::spawn(server.run());
    Stack { addr, registry, shutdown, task }
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

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket; `Err(status)` when the server answers anything but 101.
pub async fn try_connect(
    addr: SocketAddr,
    query_token: Option<&str>,
    subprotocol: Option<&str>,
) -> Result<Ws, u16> {
    let url = match query_token {
        Some(token) => format!("ws://{addr}/ws?token={token}"),
        None => format!("ws://{addr}/ws"),
    };
    let mut request = url.into_client_request().unwrap_or_else(|e| panic!("{e}"));
    if let Some(protocols) = subprotocol {
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(protocols).unwrap_or_else(|e| panic!("{e}")),
        );
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request)).await {
        Err(_) => panic!("connect timed out"),
        Ok(Ok((ws, response))) => {
            assert_eq!(response.status().as_u16(), 101);
            Ok(ws)
        }
        Ok(Err(WsError::Http(response))) => Err(response.status().as_u16()),
        Ok(Err(e)) => panic!("connect failed: {e}"),
    }
}

/// Opens a WebSocket with `token` and reads the `connected` frame.
pub async fn connect(addr: SocketAddr, token: &str) -> (Ws, ConnectionId) {
    let mut ws = try_connect(addr, Some(token), None)
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

/// Reads until the close frame (skipping data), then on to the end of the stream so that the
/// closing handshake completes; returns the close code and reason.
pub async fn expect_close(ws: &mut Ws) -> (u16, String) {
    let read = async {
        let mut close = None;
        while let Some(message) = ws.next().await {
            match message {
                Ok(Message::Close(Some(CloseFrame { code, reason }))) => {
                    close = Some((u16::from(code), reason.as_str().to_owned()));
                }
                Ok(Message::Close(None)) => panic!("close frame without a code"),
                Ok(_) if close.is_none() => {}
                Ok(_) => panic!("data after the close frame"),
                Err(_) if close.is_some() => break,
                Err(e) => panic!("read failed before the close frame: {e}"),
            }
        }
        close.unwrap_or_else(|| panic!("stream ended without a close frame"))
    };
    tokio::time::timeout(WAIT, read).await.unwrap_or_else(|_| panic!("no close frame in time"))
}

/// Sends a text message.
pub async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap_or_else(|e| panic!("send failed: {e}"));
}

// ---------------------------------------------------------------- HTTP client

/// An HTTP response: status and body.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one HTTP/1.1 request (`Connection: close`) and reads the response.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    raw_http(addr, &request).await
}

/// Sends `request` as it is and reads the response (by `Content-Length`, or to the end).
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> HttpResponse {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("{e}"));
        stream.write_all(request).await.unwrap_or_else(|e| panic!("{e}"));
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
    HttpResponse { status, body }
}

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
