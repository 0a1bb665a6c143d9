//! The baseline server: a bare tokio-tungstenite broadcast server with realtime's wire
//! format and buffer settings, and no auth, registry or service. It is the floor of what
//! this stack (tokio + tungstenite) can do, measured in the same run as realtime-server.
//!
//! - `GET /ws?token=JWT` upgrades WITHOUT verifying the token (its `sub` is read unverified,
//!   `anon` without one) and sends the same first frame as realtime-server:
//!   `{"type":"connected","payload":{"connection_id":"<uuid>","user_id":"<sub>","roles":[]}}`.
//! - `POST /api/publish` takes the same body (`{"target": ..., "message": {...}}`),
//!   serialises the message once and `try_send`s it to each recipient's bounded queue;
//!   it answers `{"delivered": N}`. The `Authorization` header is ignored.
//! - `GET /healthz` answers `ok`.
//!
//! HTTP is hand-rolled on the same listener: the request head is read first, then either
//! the WebSocket handshake is completed by hand or the request is answered.
//! One task per connection multiplexes reads and the outbound queue.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use realtime_core::{Envelope, Frame, Target, token_from_query};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use uuid::Uuid;

use crate::http::{MAX_HEAD, RequestHead, head_end, parse_request_head};
use crate::wire::{connected_frame, unverified_subject};

/// Largest publish body accepted, in bytes.
const MAX_BODY: usize = 1024 * 1024;
/// Frames written per flush when the queue has several waiting.
const WRITE_BATCH: usize = 64;

/// Baseline settings; the defaults match realtime-server's.
#[derive(Debug, Clone)]
pub struct BaselineConfig {
    /// Frames queued per connection before it is dropped as a slow consumer.
    pub outbound_queue: usize,
    /// WebSocket buffer settings.
    pub ws: WebSocketConfig,
    /// Time allowed to read a request head.
    pub head_timeout: Duration,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        BaselineConfig {
            outbound_queue: 256,
            ws: server_ws_config(),
            head_timeout: Duration::from_secs(10),
        }
    }
}

/// Server-side WebSocket buffers, the same as realtime-server's defaults: 1 KiB read buffer,
/// 64 KiB message and frame limit, small write buffer.
pub fn server_ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(4 * 1024)
        .max_write_buffer_size(256 * 1024)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024))
}

/// One registered connection.
struct Entry {
    user: String,
    tx: mpsc::Sender<Message>,
}

/// The connections, by id and by user.
#[derive(Default)]
struct Maps {
    by_id: HashMap<Uuid, Entry>,
    by_user: HashMap<String, Vec<Uuid>>,
}

/// Shared server state.
struct Hub {
    config: BaselineConfig,
    maps: RwLock<Maps>,
}

impl Hub {
    fn maps(&self) -> std::sync::RwLockReadGuard<'_, Maps> {
        self.maps.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn maps_mut(&self) -> std::sync::RwLockWriteGuard<'_, Maps> {
        self.maps.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn insert(&self, id: Uuid, user: String, tx: mpsc::Sender<Message>) {
        let mut maps = self.maps_mut();
        maps.by_user.entry(user.clone()).or_default().push(id);
        maps.by_id.insert(id, Entry { user, tx });
    }

    fn remove(&self, id: Uuid) {
        let mut maps = self.maps_mut();
        if let Some(entry) = maps.by_id.remove(&id)
            && let Some(ids) = maps.by_user.get_mut(&entry.user)
        {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                maps.by_user.remove(&entry.user);
            }
        }
    }

    /// Enqueues `message` for every recipient of `target`; returns how many accepted it.
    /// Recipients whose queue is full are dropped (their connection closes).
    fn publish(&self, target: &Target, message: &Message) -> u64 {
        let mut delivered = 0;
        let mut slow = Vec::new();
        {
            let maps = self.maps();
            let mut send = |id: &Uuid, entry: &Entry| match entry.tx.try_send(message.clone()) {
                Ok(()) => delivered += 1,
                Err(mpsc::error::TrySendError::Full(_)) => slow.push(*id),
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            };
            match target {
                Target::Broadcast => maps.by_id.iter().for_each(|(id, e)| send(id, e)),
                Target::User(user) => {
                    for id in maps.by_user.get(user.as_str()).into_iter().flatten() {
                        if let Some(e) = maps.by_id.get(id) {
                            send(id, e);
                        }
                    }
                }
                Target::Connection(cid) => {
                    let id = cid.as_uuid();
                    if let Some(e) = maps.by_id.get(&id) {
                        send(&id, e);
                    }
                }
                // Baseline connections have no roles.
                Target::Role(_) => {}
            }
        }
        for id in slow {
            self.remove(id);
        }
        delivered
    }
}

/// Serves the baseline on `listener` until the task is dropped.
///
/// # Errors
/// When accepting fails for a reason other than running out of file descriptors.
pub async fn serve(listener: TcpListener, config: BaselineConfig) -> std::io::Result<()> {
    let hub = Arc::new(Hub { config, maps: RwLock::new(Maps::default()) });
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) if is_transient_accept_error(&e) => {
                // Out of descriptors or a connection reset before accept: back off briefly.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let hub = hub.clone();
        tokio::spawn(async move {
            let _ = handle(stream, hub).await;
        });
    }
}

fn is_transient_accept_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted | WouldBlock)
        || e.raw_os_error().is_some_and(|code| code == 23 || code == 24) // ENFILE, EMFILE
}

/// Serves one TCP connection: HTTP requests (keep-alive) until a WebSocket upgrade.
async fn handle(mut stream: TcpStream, hub: Arc<Hub>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        let head_len =
            match tokio::time::timeout(hub.config.head_timeout, read_head(&mut stream, &mut buf))
                .await
            {
                Ok(Ok(Some(n))) => n,
                _ => return Ok(()),
            };
        let head = match parse_request_head(&buf[..head_len]) {
            Ok(h) => h,
            Err(_) => return respond(&mut stream, 400, "text/plain", b"bad request", true).await,
        };
        buf.drain(..head_len);
        match (head.method.as_str(), head.path.as_str()) {
            ("GET", "/ws") => return upgrade(stream, head, buf, hub).await,
            ("GET", "/healthz") => {
                respond(&mut stream, 200, "text/plain", b"ok", head.wants_close()).await?
            }
            ("POST", "/api/publish") => {
                let len = match head.content_length() {
                    Ok(len) if len <= MAX_BODY => len,
                    _ => return respond(&mut stream, 413, "text/plain", b"too large", true).await,
                };
                while buf.len() < len {
                    buf.reserve(len - buf.len());
                    if stream.read_buf(&mut buf).await? == 0 {
                        return Ok(());
                    }
                }
                let body: Vec<u8> = buf.drain(..len).collect();
                let (status, reply) = publish(&hub, &body);
                respond(
                    &mut stream,
                    status,
                    "application/json",
                    reply.as_bytes(),
                    head.wants_close(),
                )
                .await?;
            }
            _ => return respond(&mut stream, 404, "text/plain", b"not found", true).await,
        }
        if head.wants_close() {
            return Ok(());
        }
    }
}

/// Reads until `buf` holds a complete head; its length, or `None` at end of stream or when
/// the head is too large.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
    loop {
        if let Some(end) = head_end(buf) {
            return Ok(Some(end));
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
        buf.reserve(2048);
        if stream.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
    close: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        413 => "Payload Too Large",
        _ => "Error",
    };
    let connection = if close { "close" } else { "keep-alive" };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    stream.write_all(&out).await
}

/// The body of `POST /api/publish`.
#[derive(Deserialize)]
struct PublishBody {
    target: Target,
    message: Envelope,
}

/// Handles a publish body; the status and JSON reply.
fn publish(hub: &Hub, body: &[u8]) -> (u16, String) {
    let Ok(request) = serde_json::from_slice::<PublishBody>(body) else {
        return (400, r#"{"error":"invalid_body"}"#.to_owned());
    };
    // Serialised once; every recipient shares the bytes.
    let bytes: Bytes = Frame::encode(&request.message).into_bytes();
    let Ok(text) = Utf8Bytes::try_from(bytes) else {
        return (400, r#"{"error":"invalid_body"}"#.to_owned());
    };
    let delivered = hub.publish(&request.target, &Message::Text(text));
    (200, format!(r#"{{"delivered":{delivered}}}"#))
}

/// Completes the WebSocket handshake by hand and runs the connection.
async fn upgrade(
    mut stream: TcpStream,
    head: RequestHead,
    leftover: Vec<u8>,
    hub: Arc<Hub>,
) -> std::io::Result<()> {
    let key = head.header("sec-websocket-key").map(str::to_owned);
    let is_upgrade = head.header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = key.filter(|_| is_upgrade) else {
        return respond(&mut stream, 400, "text/plain", b"not a websocket upgrade", true).await;
    };
    let user = token_from_query(&head.query)
        .ok()
        .and_then(|token| unverified_subject(token.expose()))
        .unwrap_or_else(|| "anon".to_owned());
    let accept = derive_accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await?;
    // The connection gets a task of its own, so it does not carry the HTTP phase's state.
    let leftover = if leftover.is_empty() { Vec::new() } else { leftover };
    tokio::spawn(async move {
        let ws = WebSocketStream::from_partially_read(
            stream,
            leftover,
            Role::Server,
            Some(hub.config.ws),
        )
        .await;
        run_connection(ws, user, hub).await;
    });
    Ok(())
}

/// One connection's life: the `connected` frame, then reads and queued writes in one task.
async fn run_connection(mut ws: WebSocketStream<TcpStream>, user: String, hub: Arc<Hub>) {
    let id = Uuid::new_v4();
    let connected = connected_frame(&id.to_string(), &user, &[]);
    if ws.send(Message::text(connected)).await.is_err() {
        return;
    }
    let (tx, mut rx) = mpsc::channel::<Message>(hub.config.outbound_queue.max(1));
    hub.insert(id, user, tx);
    let mut slow_consumer = false;
    loop {
        let outgoing = tokio::select! {
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(Message::Text(text))) if is_ping(&text) => {
                    Message::text(r#"{"type":"pong","payload":{}}"#)
                }
                Some(Ok(_)) => continue,
            },
            queued = rx.recv() => match queued {
                Some(message) => message,
                None => {
                    // Removed from the hub: its queue filled up.
                    slow_consumer = true;
                    break;
                }
            },
        };
        if ws.feed(outgoing).await.is_err() {
            break;
        }
        let mut batch = 1;
        while batch < WRITE_BATCH {
            let Ok(message) = rx.try_recv() else { break };
            if ws.feed(message).await.is_err() {
                break;
            }
            batch += 1;
        }
        if ws.flush().await.is_err() {
            break;
        }
    }
    hub.remove(id);
    if slow_consumer {
        let close = CloseFrame {
            code: CloseCode::from(realtime_core::protocol::close::SLOW_CONSUMER),
            reason: Utf8Bytes::from_static("slow consumer"),
        };
        let _ = ws.close(Some(close)).await;
    }
}

fn is_ping(text: &str) -> bool {
    crate::wire::parse_incoming(text).is_some_and(|m| m.kind == realtime_core::protocol::PING)
}
