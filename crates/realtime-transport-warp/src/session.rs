//! One live WebSocket connection: its bounded outbound queue (the [`ConnectionSink`] the
//! service sends to), the writer that drains it, the reader that answers the client and runs
//! the liveness timers, and the single end that unregisters the connection.
//!
//! Both halves run as two futures of one task, so nothing outlives the connection. The
//! first end recorded (client close, socket error, timeout, slow consumer, shutdown, the
//! application) wins; it decides the close frame and the reason given to
//! `RealtimeApi::disconnect`, which is called exactly once, when the task ends.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::task::AtomicWaker;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use realtime_core::{
    ClientMessage, Connection, DecodeLimits, Frame, Liveness, LivenessAction, LivenessConfig,
    UnixMillis, decode_client_text,
};
use realtime_ports::{CloseReason, ConnectionSink, InboundHandler, RealtimeApi, SendError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Utf8Bytes};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::{Instrument, debug, info, warn};

use crate::shutdown::ShutdownHandle;
use crate::wire::{ClientFault, SessionEnd};

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Most bytes read and thrown away while waiting for a closing client to go.
const LINGER_MAX_BYTES: usize = 1024 * 1024;

/// Settings shared by every connection.
#[derive(Debug)]
pub(crate) struct SessionSettings {
    pub(crate) websocket: WebSocketConfig,
    pub(crate) liveness: LivenessConfig,
    pub(crate) decode: DecodeLimits,
    pub(crate) close_timeout: Duration,
    pub(crate) outbound_queue: usize,
    /// `{"type":"pong","payload":{}}`, encoded once and shared.
    pub(crate) pong: Frame,
}

/// An item of the outbound queue.
#[derive(Debug)]
pub(crate) enum Outbound {
    Frame(Frame),
    Ping,
}

/// The outbound half the service holds: `send` only pushes onto the bounded queue.
///
/// The queue is a `VecDeque` behind a mutex plus a readiness flag and an `AtomicWaker`,
/// rather than a tokio mpsc channel: it allocates nothing until the first frame (an mpsc
/// channel allocates a block of 32 slots up front, about 1 KiB per idle connection), the
/// writer takes everything queued with one swap, and waking the writer is lock-free.
#[derive(Debug)]
pub(crate) struct WsSink {
    queue: Mutex<VecDeque<Outbound>>,
    capacity: usize,
    /// Set by `enqueue`, cleared by the writer when it takes the queue.
    ready: AtomicBool,
    writer: AtomicWaker,
    closing: AtomicBool,
    end: watch::Sender<Option<SessionEnd>>,
}

/// A new connection's sink, holding at most `capacity` queued items.
pub(crate) fn outbound_channel(capacity: usize) -> Arc<WsSink> {
    let (end, _) = watch::channel(None);
    Arc::new(WsSink {
        queue: Mutex::new(VecDeque::new()),
        capacity: capacity.max(1),
        ready: AtomicBool::new(false),
        writer: AtomicWaker::new(),
        closing: AtomicBool::new(false),
        end,
    })
}

impl WsSink {
    /// Records how the connection ends; only the first call counts. Wakes both halves.
    pub(crate) fn end(&self, end: SessionEnd) -> bool {
        self.closing.store(true, Ordering::Release);
        self.end.send_if_modified(|current| match current {
            None => {
                *current = Some(end);
                true
            }
            Some(_) => false,
        })
    }

    fn ended(&self) -> Option<SessionEnd> {
        self.end.borrow().clone()
    }

    fn enqueue(&self, item: Outbound) -> Result<(), SendError> {
        if self.closing.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        let mut queue = self.queue.lock();
        if queue.len() >= self.capacity {
            drop(queue);
            // The close travels on the `end` signal, not on the full queue.
            self.end(SessionEnd::SlowConsumer);
            return Err(SendError::QueueFull);
        }
        queue.push_back(item);
        drop(queue);
        // Only the first item since the writer last looked needs to wake it.
        if !self.ready.swap(true, Ordering::AcqRel) {
            self.writer.wake();
        }
        Ok(())
    }

    /// Completes when something was enqueued since the last call.
    async fn queued(&self) {
        std::future::poll_fn(|cx| {
            self.writer.register(cx.waker());
            if self.ready.swap(false, Ordering::AcqRel) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
    }

    /// Swaps everything queued into `batch` (which must be empty), keeping both buffers'
    /// capacity for the next round.
    fn take_queued(&self, batch: &mut VecDeque<Outbound>) {
        std::mem::swap(&mut *self.queue.lock(), batch);
    }
}

impl ConnectionSink for WsSink {
    fn send(&self, frame: Frame) -> Result<(), SendError> {
        self.enqueue(Outbound::Frame(frame))
    }

    fn close(&self, reason: CloseReason) {
        self.end(SessionEnd::Closed(reason));
    }
}

/// Everything one connection task needs.
pub(crate) struct Session {
    pub(crate) api: Arc<dyn RealtimeApi>,
    pub(crate) inbound: Arc<dyn InboundHandler>,
    pub(crate) connection: Connection,
    pub(crate) expires_at: Option<UnixMillis>,
    pub(crate) sink: Arc<WsSink>,
    pub(crate) settings: Arc<SessionSettings>,
    pub(crate) shutdown: ShutdownHandle,
    /// The first frame, `connected`, written before anything from the queue.
    pub(crate) hello: Frame,
}

impl Session {
    /// Runs the connection from the upgrade to its end, then unregisters it (once).
    pub(crate) async fn run(self, upgrade: OnUpgrade) {
        let span = tracing::info_span!(
            "ws",
            connection_id = %self.connection.id,
            user_id = %self.connection.user_id
        );
        async move {
            let api = Arc::clone(&self.api);
            let id = self.connection.id;
            let sink = Arc::clone(&self.sink);
            let forced = self.shutdown.forced_token().clone();
            let mut end = sink.end.subscribe();
            // Unregister as soon as the end is known, so that nothing more is routed here
            // while the closing handshake runs.
            let unregister = async {
                ended(&mut end).await;
                let reason = sink.ended().unwrap_or(SessionEnd::TransportError).disconnect_reason();
                api.unregister(id, reason);
                reason
            };
            let work = async {
                tokio::select! {
                    biased;
                    () = forced.cancelled() => {
                        sink.end(SessionEnd::Shutdown);
                        debug!("connection dropped at the end of the shutdown grace period");
                    }
                    () = self.drive(upgrade) => {}
                }
                // Every way out of `drive` records an end; this covers any other.
                sink.end(SessionEnd::TransportError);
            };
            let (reason, ()) = tokio::join!(unregister, work);
            info!(reason = reason.as_str(), "connection closed");
        }
        .instrument(span)
        .await;
    }

    async fn drive(self, upgrade: OnUpgrade) {
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                debug!(%error, "upgrade failed");
                self.sink.end(SessionEnd::TransportError);
                return;
            }
        };
        let socket = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(self.settings.websocket),
        )
        .await;
        info!("connection open");
        let (writer, reader) = socket.split();
        let Session { api: _, inbound, connection, expires_at, sink, settings, shutdown, hello } =
            self;
        let writing = write_half(writer, &sink, hello, settings.close_timeout);
        let reading =
            read_half(reader, &sink, &settings, &shutdown, &connection, &*inbound, expires_at);
        let (writer, (reader, drain_deadline)) = tokio::join!(writing, reading);
        // When tungstenite could not finish the closing handshake (an oversize frame leaves
        // the stream unreadable), stop writing and read what the client still sends until it
        // goes, so that the close frame is not lost to a reset.
        if let (Some(deadline), Ok(mut socket)) = (drain_deadline, reader.reunite(writer)) {
            let _ = tokio::time::timeout_at(deadline, linger(socket.get_mut())).await;
        }
    }
}

/// Hands a frame to tungstenite as a text message without copying or re-validating it.
#[allow(unsafe_code)]
fn text_message(frame: Frame) -> Message {
    // SAFETY: `realtime_core::Frame` documents the invariant that its bytes are valid UTF-8
    // (every constructor takes `serde_json` output or a `String`), which is exactly what
    // `Utf8Bytes::from_bytes_unchecked` requires.
    let text = unsafe { Utf8Bytes::from_bytes_unchecked(frame.into_bytes()) };
    Message::Text(text)
}

/// Completes once an end is recorded.
async fn ended(end: &mut watch::Receiver<Option<SessionEnd>>) {
    // An error means the sender is gone, which cannot happen while the sink is alive; either
    // way there is nothing more to wait for.
    let _ = end.wait_for(Option::is_some).await;
}

/// The writer: the `connected` frame, then the queue in batches (fed, then flushed once),
/// until an end is recorded; then the close frame, if the end has one.
async fn write_half(
    mut socket: SplitSink<Socket, Message>,
    sink: &WsSink,
    hello: Frame,
    close_timeout: Duration,
) -> SplitSink<Socket, Message> {
    let mut end = sink.end.subscribe();
    // One wait for the end for the writer's whole life (not one registration per frame).
    let end_signal = ended(&mut end);
    tokio::pin!(end_signal);
    // Allocated at the first frame, not per idle connection.
    let mut batch = VecDeque::new();
    let result = tokio::select! {
        biased;
        () = &mut end_signal => Ok(()),
        sent = socket.send(text_message(hello)) => sent,
    };
    if let Err(error) = result {
        debug!(%error, "write failed");
        sink.end(SessionEnd::TransportError);
    }
    while sink.ended().is_none() {
        tokio::select! {
            biased;
            () = &mut end_signal => break,
            () = sink.queued() => {}
        }
        sink.take_queued(&mut batch);
        if batch.is_empty() {
            continue;
        }
        let written = tokio::select! {
            biased;
            () = &mut end_signal => break,
            written = write_batch(&mut socket, &mut batch) => written,
        };
        if let Err(error) = written {
            debug!(%error, "write failed");
            sink.end(SessionEnd::TransportError);
        }
    }
    let close = sink.ended().and_then(|end| {
        end.close_frame()
            .map(|(code, reason)| CloseFrame { code: code.into(), reason: reason.into() })
    });
    if let Some(frame) = close {
        let sent = tokio::time::timeout(close_timeout, socket.send(Message::Close(Some(frame))));
        match sent.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => debug!(%error, "close frame not sent"),
            Err(_) => debug!("close frame not sent within the close timeout"),
        }
    }
    socket
}

async fn write_batch(
    socket: &mut SplitSink<Socket, Message>,
    batch: &mut VecDeque<Outbound>,
) -> Result<(), WsError> {
    for item in batch.drain(..) {
        let message = match item {
            Outbound::Frame(frame) => text_message(frame),
            Outbound::Ping => Message::Ping(bytes::Bytes::new()),
        };
        match socket.feed(message).await {
            Ok(()) => {}
            Err(WsError::WriteBufferFull(message)) => {
                // Larger than the write buffer allows: cannot happen, since the service
                // refuses to publish over `max_message_bytes`; if it does, this frame is
                // skipped (counted) and the connection goes on.
                warn!(bytes = message.len(), "outbound frame over the size limit dropped");
                metrics::counter!("realtime_frames_dropped_total", "reason" => "too_large")
                    .increment(1);
            }
            Err(error) => return Err(error),
        }
    }
    socket.flush().await
}

/// The reader: answers pings and bad messages, hands the rest to the inbound handler, runs
/// the liveness timers and watches for shutdown. After an end is recorded it keeps reading
/// (and discarding) until the client goes or the close timeout passes, so that the closing
/// handshake completes. Returns the stream and, when the stream broke before the client
/// went, the deadline for draining the raw socket.
async fn read_half(
    mut stream: SplitStream<Socket>,
    sink: &WsSink,
    settings: &SessionSettings,
    shutdown: &ShutdownHandle,
    connection: &Connection,
    inbound: &dyn InboundHandler,
    expires_at: Option<UnixMillis>,
) -> (SplitStream<Socket>, Option<Instant>) {
    let mut end = sink.end.subscribe();
    // One wait for the end for the reader's whole loop, as in the writer.
    let end_signal = ended(&mut end);
    tokio::pin!(end_signal);
    let now = Instant::now();
    let mut liveness =
        Liveness::new(settings.liveness, now.into_std(), expiry_instant(expires_at, now));
    let graceful = shutdown.graceful_token();
    while sink.ended().is_none() {
        let wake = Instant::from_std(liveness.poll_timeout());
        tokio::select! {
            biased;
            () = &mut end_signal => break,
            () = graceful.cancelled() => {
                sink.end(SessionEnd::Shutdown);
            }
            () = tokio::time::sleep_until(wake) => {
                match liveness.handle_timeout(Instant::now().into_std()) {
                    Some(LivenessAction::SendPing) => {
                        let _ = sink.enqueue(Outbound::Ping);
                    }
                    Some(LivenessAction::Close) => {
                        sink.end(SessionEnd::HeartbeatTimeout);
                    }
                    Some(LivenessAction::Expired) => {
                        sink.end(SessionEnd::TokenExpired);
                    }
                    None => {}
                }
            }
            message = stream.next() => {
                liveness.handle_activity(Instant::now().into_std());
                match message {
                    Some(Ok(message)) => {
                        let handled = tokio::select! {
                            biased;
                            () = &mut end_signal => None,
                            handled = handle_message(message, sink, settings, connection, inbound) => Some(handled),
                        };
                        if handled.is_none() {
                            break;
                        }
                    }
                    Some(Err(WsError::Capacity(error))) => {
                        debug!(%error, "client message over the size limit");
                        sink.end(SessionEnd::MessageTooBig);
                        let deadline = Instant::now() + settings.close_timeout;
                        return (stream, Some(deadline));
                    }
                    Some(Err(error)) => {
                        debug!(%error, "read failed");
                        sink.end(SessionEnd::TransportError);
                    }
                    None => {
                        sink.end(SessionEnd::TransportError);
                    }
                }
            }
        }
    }
    // Closing: let tungstenite see the client's close answer (or send ours in reply to the
    // client's), bounded by the close timeout.
    let deadline = Instant::now() + settings.close_timeout;
    let broken = sink.ended() == Some(SessionEnd::TransportError);
    if !broken {
        while let Ok(Some(Ok(_))) = tokio::time::timeout_at(deadline, stream.next()).await {}
    }
    (stream, None)
}

/// Handles one client message.
async fn handle_message(
    message: Message,
    sink: &WsSink,
    settings: &SessionSettings,
    connection: &Connection,
    inbound: &dyn InboundHandler,
) {
    let reply = match message {
        Message::Text(text) => match decode_client_text(text.as_str(), &settings.decode) {
            Ok(ClientMessage::Ping) => Some(settings.pong.clone()),
            Ok(ClientMessage::Message(envelope)) => {
                let kind = envelope.kind.clone();
                match inbound.handle(connection, envelope).await {
                    Ok(Some(reply)) => Some(Frame::encode(&reply)),
                    Ok(None) => None,
                    Err(error) => {
                        debug!(%error, kind = kind.as_str(), "inbound message refused");
                        Some(ClientFault::Inbound(&error, &kind).frame())
                    }
                }
            }
            Ok(_) => None,
            Err(error) => {
                debug!(%error, "undecodable client message");
                Some(ClientFault::Decode(&error).frame())
            }
        },
        Message::Binary(_) => Some(ClientFault::Binary.frame()),
        Message::Close(_) => {
            sink.end(SessionEnd::ClientClosed);
            None
        }
        // Pings are answered by tungstenite; pongs and pings only count as activity.
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => None,
    };
    if let Some(frame) = reply {
        // A full queue ends the connection as a slow consumer; a closed one is ending anyway.
        let _ = sink.send(frame);
    }
}

/// The monotonic instant at which a token's wall-clock expiry falls; `None` when it has none
/// or it lies beyond what the clock can represent.
fn expiry_instant(expires_at: Option<UnixMillis>, now: Instant) -> Option<std::time::Instant> {
    let expires_at = expires_at?;
    let wall_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let remaining = Duration::from_millis(expires_at.0.saturating_sub(wall_now));
    now.into_std().checked_add(remaining)
}

/// Shuts the write side and reads until the client goes (or a byte budget is spent).
async fn linger(io: &mut TokioIo<hyper::upgrade::Upgraded>) {
    let _ = io.shutdown().await;
    let mut buffer = [0u8; 1024];
    let mut total = 0usize;
    while total < LINGER_MAX_BYTES {
        match io.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => total += read,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_queue_full_ends_as_slow_consumer_and_then_refuses() {
        let sink = outbound_channel(2);
        let frame = Frame::from_text("{}".to_owned());
        assert_eq!(sink.send(frame.clone()), Ok(()));
        assert_eq!(sink.send(frame.clone()), Ok(()));
        assert_eq!(sink.send(frame.clone()), Err(SendError::QueueFull));
        assert_eq!(sink.ended(), Some(SessionEnd::SlowConsumer));
        assert_eq!(sink.send(frame), Err(SendError::Closed));
        sink.close(CloseReason::Kicked);
        assert_eq!(sink.ended(), Some(SessionEnd::SlowConsumer), "first end wins");
    }

    #[test]
    fn application_close_is_recorded() {
        let sink = outbound_channel(2);
        sink.close(CloseReason::Kicked);
        assert_eq!(sink.ended(), Some(SessionEnd::Closed(CloseReason::Kicked)));
        assert_eq!(sink.send(Frame::from_text("{}".to_owned())), Err(SendError::Closed));
    }

    #[test]
    fn expiry_maps_to_the_monotonic_clock() {
        let now = Instant::now();
        assert_eq!(expiry_instant(None, now), None);
        assert_eq!(expiry_instant(Some(UnixMillis(0)), now), Some(now.into_std()));
        // Far beyond any real expiry: no overflow, no panic.
        let _ = expiry_instant(Some(UnixMillis(u64::MAX)), now);
        let in_a_minute = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(0))
            .unwrap_or(0)
            + 60_000;
        let at = expiry_instant(Some(UnixMillis(in_a_minute)), now)
            .unwrap_or_else(|| panic!("no expiry"));
        assert!(at > now.into_std() + Duration::from_secs(50));
    }
}
