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
//! HTTP/1.1 is hyper's (keep-alive, a header-read timeout); `/ws` answers the handshake with
//! tungstenite's accept key and takes the socket over with `hyper::upgrade`. One task per
//! WebSocket connection multiplexes reads and the outbound queue.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{
    CONNECTION, CONTENT_TYPE, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::Upgraded;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use realtime_core::{Envelope, Frame, Target, token_from_query};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use uuid::Uuid;

use crate::wire::{connected_frame, unverified_subject};

/// A connection's socket once hyper has handed it over.
type Socket = TokioIo<Upgraded>;

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
                // Baseline connections have no roles and no topics.
                Target::Role(_) | Target::Topic(_) => {}
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
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(hub.config.head_timeout);
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
        let _ = stream.set_nodelay(true);
        let hub = hub.clone();
        let connection = http
            .serve_connection(
                TokioIo::new(stream),
                service_fn(move |request| {
                    let hub = hub.clone();
                    async move { Ok::<_, Infallible>(route(request, hub).await) }
                }),
            )
            .with_upgrades();
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}

fn is_transient_accept_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted | WouldBlock)
        || e.raw_os_error().is_some_and(|code| code == 23 || code == 24) // ENFILE, EMFILE
}

type Reply = Response<Full<Bytes>>;

/// Answers one HTTP request (keep-alive is hyper's).
async fn route(request: Request<Incoming>, hub: Arc<Hub>) -> Reply {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/ws") => upgrade(request, hub),
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", "ok"),
        (&Method::POST, "/api/publish") => {
            let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
                Ok(body) => body.to_bytes(),
                Err(_) => return reply(StatusCode::PAYLOAD_TOO_LARGE, "text/plain", "too large"),
            };
            let (status, body) = publish(&hub, &body);
            reply(status, "application/json", body)
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found"),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The body of `POST /api/publish`.
#[derive(Deserialize)]
struct PublishBody {
    target: Target,
    message: Envelope,
}

/// Handles a publish body; the status and JSON reply.
fn publish(hub: &Hub, body: &[u8]) -> (StatusCode, String) {
    let invalid = || (StatusCode::BAD_REQUEST, r#"{"error":"invalid_body"}"#.to_owned());
    let Ok(request) = serde_json::from_slice::<PublishBody>(body) else {
        return invalid();
    };
    // Serialised once; every recipient shares the bytes.
    let bytes: Bytes = Frame::encode(&request.message).into_bytes();
    let Ok(text) = Utf8Bytes::try_from(bytes) else {
        return invalid();
    };
    let delivered = hub.publish(&request.target, &Message::Text(text));
    (StatusCode::OK, format!(r#"{{"delivered":{delivered}}}"#))
}

/// Answers a WebSocket handshake with 101 and runs the connection on its own task once hyper
/// hands over the socket.
fn upgrade(mut request: Request<Incoming>, hub: Arc<Hub>) -> Reply {
    let headers = request.headers();
    let is_upgrade = headers
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = headers.get(SEC_WEBSOCKET_KEY).filter(|_| is_upgrade) else {
        return reply(StatusCode::BAD_REQUEST, "text/plain", "not a websocket upgrade");
    };
    let accept = derive_accept_key(key.as_bytes());
    let user = token_from_query(request.uri().query().unwrap_or(""))
        .ok()
        .and_then(|token| unverified_subject(token.expose()))
        .unwrap_or_else(|| "anon".to_owned());
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        let ws = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(hub.config.ws),
        )
        .await;
        run_connection(ws, user, hub).await;
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// One connection's life: the `connected` frame, then reads and queued writes in one task.
async fn run_connection(mut ws: WebSocketStream<Socket>, user: String, hub: Arc<Hub>) {
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
