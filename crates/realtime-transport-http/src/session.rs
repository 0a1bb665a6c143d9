//! One live WebSocket connection: its bounded outbound queue (the [`ConnectionSink`] the
//! service sends to), the writer that drains it, the reader that answers the client, runs
//! the liveness timers and the rate limit and hands messages to the inbound handler, and the
//! single end that unregisters the connection.
//!
//! Both halves run as two futures of one task, so nothing outlives the connection. The
//! first end recorded (client close, socket error, protocol violation, timeout, slow
//! consumer, rate limit, shutdown, the application) wins; it decides the close frame and the
//! reason given to `RealtimeApi::unregister`, which is called exactly once, on every way out
//! of the task, a panic included (a drop guard).
//!
//! - An end with a close frame on a working connection (kick, shutdown, token
//!   expiry, heartbeat timeout; also the rate limit, so the client reads its `rate_limited`
//!   errors) first writes what was already queued, bounded by the close timeout, then the
//!   close frame. A slow consumer's queue is the problem, so it is not flushed; neither is
//!   anything after a protocol violation.
//! - The inbound handler runs beside the timers, not in front of them: while it awaits,
//!   pings, the pong deadline, token expiry and shutdown go on. Its messages still reach it
//!   one at a time, in order (at most [`INBOUND_BACKLOG`] wait; then the socket is not read
//!   until the handler is done). A call gets `inbound_timeout`; a call that times out or
//!   panics is dropped and answered with `internal_error`, and the connection goes on (a
//!   panic is caught with `catch_unwind` and logged once, at error level).
//! - Handler replies go through the service (`RealtimeApi::reply`, which puts the message's
//!   `id` on them), so they obey the same rules as every publish: a reply of a reserved type
//!   or over the size limit is refused (logged at warn, `internal_error` to the client).
//!   Every answer to a client frame (reply, refusal, `rate_limited`) echoes its `id`.
//! - The protocol's own requests (`subscribe`, `unsubscribe`, `refresh`) take the same
//!   one-at-a-time call slot as handler calls, so every client message is answered in the
//!   order it came, beside the timers and within `inbound_timeout`. Each reply echoes the
//!   request's `id`. A refresh that verifies and that the service accepts moves the
//!   connection's expiry and its `topics` grants; any other refresh leaves both as they were.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::task::AtomicWaker;
use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use realtime_core::protocol;
use realtime_core::{
    BearerToken, ClientMessage, Connection, DecodeLimits, Envelope, Frame, Liveness,
    LivenessAction, LivenessConfig, Position, RateLimitConfig, RateLimiter, RateVerdict, RequestId,
    TopicName, TopicPattern, UnixMillis, decode_client_text, refreshed_frame, request_id_of,
};
use realtime_ports::{
    CloseReason, ConnectionSink, InboundHandler, PublishError, RealtimeApi, SendError,
    SubscribeError, SubscribeOrigin, SubscribeRequest, TokenVerifier, UnsubscribeError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::{Instrument, debug, error, info, warn};

use crate::shutdown::ShutdownHandle;
use crate::wire::{ClientFault, SessionEnd};

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Most bytes read and thrown away while waiting for a closing client to go.
const LINGER_MAX_BYTES: usize = 1024 * 1024;

/// Longest wait for the upgraded socket once the connection is registered.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most client messages read ahead while the inbound handler is busy.
pub(crate) const INBOUND_BACKLOG: usize = 8;

/// Queue buffers keep up to this many slots when idle; a burst's larger buffers are given
/// back once the queue drains.
const IDLE_QUEUE_SLOTS: usize = 16;

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
    pub(crate) inbound_timeout: Duration,
    pub(crate) inbound_rate: RateLimitConfig,
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
/// writer takes everything queued with one swap, and waking the writer is lock-free. When the
/// writer goes idle after a burst, both buffers shrink back to [`IDLE_QUEUE_SLOTS`].
#[derive(Debug)]
pub(crate) struct WsSink {
    queue: Mutex<Queue>,
    capacity: usize,
    /// Set by `enqueue`, cleared by the writer when it takes the queue.
    ready: AtomicBool,
    writer: AtomicWaker,
    /// Set (under the queue lock) once an end is recorded: every frame accepted before it is
    /// in the queue when the writer takes it for the last time.
    closing: AtomicBool,
    end: watch::Sender<Option<SessionEnd>>,
}

/// The queued items, and how many of them came in replay batches (`send_batch`), which do
/// not count against the capacity: a recovery of up to `max_recovery` frames per stream is
/// queued before the writer runs, and a live frame behind it must not make the connection a
/// slow consumer. The writer takes both at once.
#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Outbound>,
    replayed: usize,
}

impl Queue {
    /// Whether live items fill the capacity.
    fn full(&self, capacity: usize) -> bool {
        self.items.len().saturating_sub(self.replayed) >= capacity
    }
}

/// A new connection's sink, holding at most `capacity` queued items (beyond replays).
pub(crate) fn outbound_channel(capacity: usize) -> Arc<WsSink> {
    let (end, _) = watch::channel(None);
    Arc::new(WsSink {
        queue: Mutex::new(Queue::default()),
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
        {
            // Under the lock, so that no `enqueue` that saw the sink open pushes after the
            // writer's last look at the queue.
            let _queue = self.queue.lock();
            self.closing.store(true, Ordering::Release);
        }
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
        let mut queue = self.queue.lock();
        if self.closing.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        if queue.full(self.capacity) {
            drop(queue);
            // The close travels on the `end` signal, not on the full queue.
            self.end(SessionEnd::SlowConsumer);
            return Err(SendError::QueueFull);
        }
        queue.items.push_back(item);
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
            if self.ready.swap(false, Ordering::AcqRel) { Poll::Ready(()) } else { Poll::Pending }
        })
        .await;
    }

    /// Swaps everything queued into `batch` (which must be empty), keeping both buffers'
    /// capacity for the next round.
    fn take_queued(&self, batch: &mut VecDeque<Outbound>) {
        let mut queue = self.queue.lock();
        std::mem::swap(&mut queue.items, batch);
        queue.replayed = 0;
    }

    /// Called by the writer after a batch: when nothing more is queued, gives back what a
    /// burst grew the two buffers (`batch` is empty) beyond [`IDLE_QUEUE_SLOTS`].
    fn release_idle(&self, batch: &mut VecDeque<Outbound>) {
        if self.ready.load(Ordering::Acquire) {
            return;
        }
        batch.shrink_to(IDLE_QUEUE_SLOTS);
        let mut queue = self.queue.lock();
        if queue.items.is_empty() {
            queue.items.shrink_to(IDLE_QUEUE_SLOTS);
        }
    }
}

impl ConnectionSink for WsSink {
    fn send(&self, frame: Frame) -> Result<(), SendError> {
        self.enqueue(Outbound::Frame(frame))
    }

    fn send_batch(&self, frames: Vec<Frame>) -> Result<(), SendError> {
        let mut queue = self.queue.lock();
        if self.closing.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        if frames.is_empty() {
            return Ok(());
        }
        if queue.full(self.capacity) {
            drop(queue);
            self.end(SessionEnd::SlowConsumer);
            return Err(SendError::QueueFull);
        }
        queue.replayed += frames.len();
        queue.items.extend(frames.into_iter().map(Outbound::Frame));
        drop(queue);
        if !self.ready.swap(true, Ordering::AcqRel) {
            self.writer.wake();
        }
        Ok(())
    }

    fn close(&self, reason: CloseReason) {
        self.end(SessionEnd::Closed(reason));
    }
}

/// Whether an end first writes what is queued: yes when the server ends a working
/// connection (and for a rate-limited client, so that it reads its `rate_limited` errors
/// before the close); not for a slow consumer (its queue is the problem), a client that broke
/// the protocol, or one that went.
fn flushes_queue(end: &SessionEnd) -> bool {
    match end {
        SessionEnd::Closed(_)
        | SessionEnd::Shutdown
        | SessionEnd::TokenExpired
        | SessionEnd::HeartbeatTimeout
        | SessionEnd::RateLimited => true,
        SessionEnd::ClientClosed
        | SessionEnd::TransportError
        | SessionEnd::MessageTooBig
        | SessionEnd::SlowConsumer
        | SessionEnd::ProtocolViolation
        | SessionEnd::InvalidUtf8 => false,
    }
}

/// Everything one connection task needs.
pub(crate) struct Session {
    pub(crate) api: Arc<dyn RealtimeApi>,
    pub(crate) inbound: Arc<dyn InboundHandler>,
    /// Verifies the tokens of in-band refreshes.
    pub(crate) verifier: Arc<dyn TokenVerifier>,
    pub(crate) connection: Connection,
    pub(crate) expires_at: Option<UnixMillis>,
    /// The `topics` claim of the connection's current token.
    pub(crate) topics: Vec<TopicPattern>,
    pub(crate) sink: Arc<WsSink>,
    pub(crate) settings: Arc<SessionSettings>,
    pub(crate) shutdown: ShutdownHandle,
    /// The first frame, `connected`, written before anything from the queue.
    pub(crate) hello: Frame,
}

/// Unregisters the connection when dropped, whichever way the task ends (a panic too).
struct Unregister {
    api: Arc<dyn RealtimeApi>,
    sink: Arc<WsSink>,
    id: realtime_core::ConnectionId,
    done: bool,
}

impl Unregister {
    /// Unregisters now (the end is known); the drop then does nothing.
    fn now(&mut self) -> realtime_ports::DisconnectReason {
        // An end recorded by nobody means the task is going away for another reason.
        self.sink.end(SessionEnd::TransportError);
        let reason = self.sink.ended().unwrap_or(SessionEnd::TransportError).disconnect_reason();
        if !self.done {
            self.done = true;
            self.api.unregister(self.id, reason);
        }
        reason
    }
}

impl Drop for Unregister {
    fn drop(&mut self) {
        if !self.done {
            let reason = self.now();
            warn!(reason = reason.as_str(), "connection task ended abnormally; unregistered");
        }
    }
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
            let sink = Arc::clone(&self.sink);
            let mut guard = Unregister {
                api: Arc::clone(&self.api),
                sink: Arc::clone(&sink),
                id: self.connection.id,
                done: false,
            };
            let forced = self.shutdown.forced_token().clone();
            let mut end = sink.end.subscribe();
            // Unregister as soon as the end is known, so that nothing more is routed here
            // while the closing handshake runs.
            let unregister = async {
                ended(&mut end).await;
                guard.now()
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
        // The connection is registered already: a client that never lets the 101 out (it
        // does not read, so hyper cannot write) must not hold its registration.
        let upgraded = match tokio::time::timeout(UPGRADE_TIMEOUT, upgrade).await {
            Ok(Ok(upgraded)) => upgraded,
            Ok(Err(error)) => {
                debug!(%error, "upgrade failed");
                self.sink.end(SessionEnd::TransportError);
                return;
            }
            Err(_) => {
                debug!("upgrade not completed in time");
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
        let Session {
            api,
            inbound,
            verifier,
            connection,
            expires_at,
            topics,
            sink,
            settings,
            shutdown,
            hello,
        } = self;
        let settings_close_timeout = settings.close_timeout;
        let writing = write_half(writer, &sink, hello, settings.close_timeout);
        let context = Inbound {
            sink: &sink,
            settings: &settings,
            connection: &connection,
            inbound: &*inbound,
            api: &*api,
            verifier: &*verifier,
        };
        let grants = Grants { expires_at, topics };
        let reading = read_half(reader, &context, &shutdown, grants);
        let (writer, (reader, drain_deadline)) = tokio::join!(writing, reading);
        // When the stream cannot be read frame by frame any more (an oversize frame or a
        // protocol violation), stop writing and read what the client still sends until it
        // goes, so that the close frame is not lost to a reset.
        // The writer may have spent its close timeout on the close frame: the linger gets a
        // close timeout of its own from now on.
        if let (Some(_), Ok(mut socket)) = (drain_deadline, reader.reunite(writer)) {
            let deadline = Instant::now() + settings_close_timeout;
            let _ = tokio::time::timeout_at(deadline, linger(socket.get_mut())).await;
        }
    }
}

/// Hands a frame to tungstenite as a text frame without copying or re-validating it: a
/// ready-made frame (`Message::Frame`) is written as it is. `Frame`'s bytes are valid UTF-8
/// by construction; were they not, the client would see a bad text frame, never undefined
/// behaviour.
fn text_message(frame: Frame) -> Message {
    Message::Frame(tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
        frame.into_bytes(),
        OpCode::Data(Data::Text),
        true,
    ))
}

/// Counts, in `realtime_frames_dropped_total{reason="close_timeout"}`, the frames accepted
/// for a closing connection that may not have reached it: the batch being written when the
/// close timeout passed (`in_flight`, some of which may have gone out) and what was still
/// queued behind it.
fn count_unwritten(sink: &WsSink, in_flight: usize) {
    let mut rest = VecDeque::new();
    sink.take_queued(&mut rest);
    let lost = in_flight + rest.iter().filter(|item| matches!(item, Outbound::Frame(_))).count();
    if lost > 0 {
        metrics::counter!("realtime_frames_dropped_total", "reason" => "close_timeout")
            .increment(lost as u64);
    }
}

/// Completes once an end is recorded.
async fn ended(end: &mut watch::Receiver<Option<SessionEnd>>) {
    // An error means the sender is gone, which cannot happen while the sink is alive; either
    // way there is nothing more to wait for.
    let _ = end.wait_for(Option::is_some).await;
}

/// The writer: the `connected` frame, then the queue in batches (fed, then flushed once),
/// until an end is recorded; then, when the end flushes the queue, what is still queued;
/// then the close frame, if the end has one. The closing part is bounded by the close
/// timeout, counted from when the writer saw the end.
async fn write_half(
    mut socket: SplitSink<Socket, Message>,
    sink: &WsSink,
    hello: Frame,
    close_timeout: Duration,
) -> SplitSink<Socket, Message> {
    let mut end = sink.end.subscribe();
    // One wait for the end for the writer's whole life (not one registration per frame);
    // fused, so that it may be polled again after it fired.
    let end_signal = ended(&mut end).fuse();
    tokio::pin!(end_signal);
    let mut closing = Closing { sink, close_timeout, deadline: None };
    // Allocated at the first frame, not per idle connection.
    let mut batch = VecDeque::new();
    let mut healthy = closing.write(end_signal.as_mut(), socket.send(text_message(hello))).await;
    while healthy && sink.ended().is_none() {
        tokio::select! {
            biased;
            () = &mut end_signal => break,
            () = sink.queued() => {}
        }
        sink.take_queued(&mut batch);
        if batch.is_empty() {
            continue;
        }
        healthy = closing.write(end_signal.as_mut(), write_batch(&mut socket, &mut batch)).await;
        batch.clear();
        sink.release_idle(&mut batch);
    }
    let end = sink.ended().unwrap_or(SessionEnd::TransportError);
    let deadline = closing.deadline();
    if healthy && flushes_queue(&end) {
        // `send` refuses from now on, so this ends.
        loop {
            sink.take_queued(&mut batch);
            if batch.is_empty() {
                break;
            }
            let in_flight = batch.len();
            match tokio::time::timeout_at(deadline, write_batch(&mut socket, &mut batch)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    debug!(%error, "write failed while closing");
                    count_unwritten(sink, in_flight);
                    healthy = false;
                    break;
                }
                Err(_) => {
                    debug!("queued frames not written within the close timeout");
                    count_unwritten(sink, in_flight);
                    break;
                }
            }
        }
    }
    let close = end
        .close_frame()
        .map(|(code, reason)| CloseFrame { code: code.into(), reason: reason.into() });
    if let (Some(frame), true) =
        (close, healthy || sink.ended() != Some(SessionEnd::TransportError))
    {
        let sent = tokio::time::timeout_at(deadline, socket.send(Message::Close(Some(frame))));
        match sent.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => debug!(%error, "close frame not sent"),
            Err(_) => debug!("close frame not sent within the close timeout"),
        }
    }
    socket
}

/// The writer's view of the end: when it saw it, and what an interrupted write does then.
struct Closing<'a> {
    sink: &'a WsSink,
    close_timeout: Duration,
    deadline: Option<Instant>,
}

impl Closing<'_> {
    /// The deadline of the closing writes: the close timeout after the end was first seen.
    fn deadline(&mut self) -> Instant {
        *self.deadline.get_or_insert_with(|| Instant::now() + self.close_timeout)
    }

    /// Awaits `write`. When an end is recorded meanwhile, a write whose frames the end keeps
    /// ([`flushes_queue`]) goes on until the close deadline; otherwise it is given up.
    /// Returns whether the socket is still fit for writing.
    async fn write<E, W>(&mut self, end_signal: Pin<&mut E>, write: W) -> bool
    where
        E: Future<Output = ()>,
        W: Future<Output = Result<(), WsError>>,
    {
        tokio::pin!(write);
        let result = tokio::select! {
            biased;
            () = end_signal => None,
            written = &mut write => Some(written),
        };
        let result = match result {
            Some(written) => written,
            None if self.sink.ended().as_ref().is_some_and(flushes_queue) => {
                match tokio::time::timeout_at(self.deadline(), write).await {
                    Ok(written) => written,
                    Err(_) => return false,
                }
            }
            // A slow consumer's write may never finish; the close frame still gets its try.
            None => return true,
        };
        match result {
            Ok(()) => true,
            Err(error) => {
                debug!(%error, "write failed");
                self.sink.end(SessionEnd::TransportError);
                false
            }
        }
    }
}

async fn write_batch(
    socket: &mut SplitSink<Socket, Message>,
    batch: &mut VecDeque<Outbound>,
) -> Result<(), WsError> {
    while let Some(item) = batch.pop_front() {
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

/// What handling a client message needs, borrowed from the session.
struct Inbound<'a> {
    sink: &'a WsSink,
    settings: &'a SessionSettings,
    connection: &'a Connection,
    inbound: &'a dyn InboundHandler,
    api: &'a dyn RealtimeApi,
    verifier: &'a dyn TokenVerifier,
}

/// What the connection's current token grants: when it expires and which topics it may
/// subscribe to. A refresh replaces both.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Grants {
    expires_at: Option<UnixMillis>,
    topics: Vec<TopicPattern>,
}

/// One call in flight (a handler call or a protocol request); a refresh the service
/// accepted ends with the new token's grants.
type HandlerCall<'a> = Pin<Box<dyn Future<Output = Option<Grants>> + Send + 'a>>;

impl<'a> Inbound<'a> {
    /// Handles one client message; returns the call to await for an application message or
    /// a protocol request, and answers everything else at once. `topics` are the current
    /// token's grants, for a subscribe.
    fn dispatch(&self, message: Message, topics: &[TopicPattern]) -> Option<HandlerCall<'a>> {
        let reply = match message {
            Message::Text(text) => match decode_client_text(text.as_str(), &self.settings.decode) {
                Ok(ClientMessage::Ping { id: None }) => self.settings.pong.clone(),
                Ok(ClientMessage::Ping { id: Some(id) }) => Frame::pong(Some(&id)),
                Ok(ClientMessage::Message { id, envelope }) => {
                    return Some(self.call(id, envelope));
                }
                Ok(ClientMessage::Subscribe { id, topic, since }) => {
                    return Some(self.subscribe(id, topic, since, topics.to_vec()));
                }
                Ok(ClientMessage::Unsubscribe { id, topic }) => {
                    return Some(self.unsubscribe(id, topic));
                }
                Ok(ClientMessage::Refresh { id, token }) => return Some(self.refresh(id, token)),
                Ok(_) => return None,
                Err(error) => {
                    debug!(%error, "undecodable client message");
                    ClientFault::Decode(&error).frame()
                }
            },
            Message::Binary(_) => ClientFault::Binary.frame(),
            // Close, ping and pong frames are handled by the reader.
            Message::Close(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
                return None;
            }
        };
        // A full queue ends the connection as a slow consumer; a closed one is ending anyway.
        let _ = self.sink.send(reply);
        None
    }

    /// The handler call for `envelope` (whose frame had `id`): bounded by the inbound
    /// timeout, a panic caught, the reply sent through the service (`RealtimeApi::reply`,
    /// which puts `id` on it); a refusal echoes `id` too.
    fn call(&self, id: Option<RequestId>, envelope: Envelope) -> HandlerCall<'a> {
        let Inbound { sink, settings, connection, inbound, api, .. } = *self;
        Box::pin(async move {
            let kind = envelope.kind.clone();
            let handled = AssertUnwindSafe(inbound.handle(connection, envelope)).catch_unwind();
            let fault = match tokio::time::timeout(settings.inbound_timeout, handled).await {
                Ok(Ok(Ok(Some(reply)))) => {
                    match api.reply(connection.id, id.clone(), &reply).await {
                        Ok(_) => None,
                        Err(PublishError::ReservedType(reserved)) => {
                            warn!(
                                kind = kind.as_str(),
                                reply = reserved.as_str(),
                                "inbound handler replied with a reserved type; refused"
                            );
                            Some(ClientFault::Internal(id.as_ref()).frame())
                        }
                        Err(error) => {
                            warn!(kind = kind.as_str(), %error, "inbound handler reply refused");
                            Some(ClientFault::Internal(id.as_ref()).frame())
                        }
                    }
                }
                Ok(Ok(Ok(None))) => None,
                Ok(Ok(Err(error))) => {
                    debug!(%error, kind = kind.as_str(), "inbound message refused");
                    Some(ClientFault::Inbound(&error, &kind, id.as_ref()).frame())
                }
                Ok(Err(_panic)) => {
                    error!(
                        kind = kind.as_str(),
                        "inbound handler panicked; answered internal_error"
                    );
                    Some(ClientFault::Internal(id.as_ref()).frame())
                }
                Err(_elapsed) => {
                    let timeout_ms =
                        u64::try_from(settings.inbound_timeout.as_millis()).unwrap_or(u64::MAX);
                    warn!(
                        kind = kind.as_str(),
                        timeout_ms, "inbound handler timed out; answered internal_error"
                    );
                    Some(ClientFault::Internal(id.as_ref()).frame())
                }
            };
            if let Some(frame) = fault {
                let _ = sink.send(frame);
            }
            None
        })
    }

    /// A client `subscribe`: on success the service has queued `subscribed` and the replay.
    fn subscribe(
        &self,
        id: Option<RequestId>,
        topic: TopicName,
        since: Option<Position>,
        topics: Vec<TopicPattern>,
    ) -> HandlerCall<'a> {
        let Inbound { sink, settings, connection, api, .. } = *self;
        Box::pin(async move {
            let request = SubscribeRequest {
                connection: connection.id,
                topic,
                since,
                reply_id: id.clone(),
                origin: SubscribeOrigin::Client { topics },
            };
            let outcome = api.subscribe(request);
            let refused = |error: &SubscribeError| match error {
                SubscribeError::NotConnected => None,
                error => {
                    debug!(%error, "subscribe refused");
                    Some(ClientFault::Subscribe(error, id.as_ref()).frame())
                }
            };
            answer(sink, settings, protocol::SUBSCRIBE, id.as_ref(), outcome, refused).await;
            None
        })
    }

    /// A client `unsubscribe`: on success the service has queued `unsubscribed`.
    fn unsubscribe(&self, id: Option<RequestId>, topic: TopicName) -> HandlerCall<'a> {
        let Inbound { sink, settings, connection, api, .. } = *self;
        Box::pin(async move {
            let outcome = api.unsubscribe(connection.id, &topic, id.clone());
            let refused = |error: &UnsubscribeError| match error {
                UnsubscribeError::NotConnected => None,
                error => Some(ClientFault::Unsubscribe(error, id.as_ref()).frame()),
            };
            answer(sink, settings, protocol::UNSUBSCRIBE, id.as_ref(), outcome, refused).await;
            None
        })
    }

    /// A client `refresh`: verifies the token, has the service accept it, answers
    /// `refreshed` and returns the new grants; any failure is answered and changes nothing.
    fn refresh(&self, id: Option<RequestId>, token: BearerToken) -> HandlerCall<'a> {
        let Inbound { sink, settings, connection, api, verifier, .. } = *self;
        Box::pin(async move {
            let verified =
                tokio::time::timeout(settings.inbound_timeout, verifier.verify(&token)).await;
            drop(token);
            let (reply, grants) = match verified {
                Ok(Ok(identity)) => match api.refresh(connection.id, &identity) {
                    Ok(()) => {
                        let grants =
                            Grants { expires_at: identity.expires_at, topics: identity.topics };
                        debug!("token refreshed");
                        (refreshed_frame(id.as_ref(), grants.expires_at), Some(grants))
                    }
                    Err(error) => {
                        debug!(%error, "refresh refused");
                        (ClientFault::Refresh(&error, id.as_ref()).frame(), None)
                    }
                },
                Ok(Err(error)) => {
                    debug!(reason = error.reason(), "refresh token refused");
                    (ClientFault::RefreshToken(&error, id.as_ref()).frame(), None)
                }
                Err(_elapsed) => {
                    warn!("refresh token verification timed out; answered unavailable");
                    (ClientFault::ProtocolTimeout(protocol::REFRESH, id.as_ref()).frame(), None)
                }
            };
            let _ = sink.send(reply);
            grants
        })
    }
}

/// Awaits a protocol request (`kind`) within the inbound timeout; on success the service has
/// queued the reply itself. A refusal is answered with what `refused` makes of it (nothing
/// for a connection that is ending), a timeout with `unavailable`.
async fn answer<T, E>(
    sink: &WsSink,
    settings: &SessionSettings,
    kind: &'static str,
    id: Option<&RequestId>,
    outcome: impl Future<Output = Result<T, E>>,
    refused: impl FnOnce(&E) -> Option<Frame>,
) {
    let frame = match tokio::time::timeout(settings.inbound_timeout, outcome).await {
        Ok(Ok(_)) => None,
        Ok(Err(error)) => refused(&error),
        Err(_elapsed) => {
            warn!(kind, "request timed out; answered unavailable");
            Some(ClientFault::ProtocolTimeout(kind, id).frame())
        }
    };
    if let Some(frame) = frame {
        let _ = sink.send(frame);
    }
}

/// The reader: answers pings and bad messages, hands the rest to the inbound handler (one
/// call at a time, beside the timers), runs the liveness timers and the rate limit, and
/// watches for shutdown. After an end is recorded it keeps reading (and discarding) until the
/// client goes or the close timeout passes, so that the closing handshake completes. Returns
/// the stream and, when the stream broke before the client went, the deadline for draining
/// the raw socket.
async fn read_half<'a>(
    mut stream: SplitStream<Socket>,
    context: &Inbound<'a>,
    shutdown: &ShutdownHandle,
    mut grants: Grants,
) -> (SplitStream<Socket>, Option<Instant>) {
    let Inbound { sink, settings, .. } = *context;
    let mut end = sink.end.subscribe();
    // One wait for the end for the reader's whole loop, as in the writer.
    let end_signal = ended(&mut end);
    tokio::pin!(end_signal);
    let now = Instant::now();
    let mut liveness =
        Liveness::new(settings.liveness, now.into_std(), expiry_instant(grants.expires_at, now));
    let mut rate = RateLimiter::new(settings.inbound_rate, now.into_std());
    let graceful = shutdown.graceful_token();
    // Client messages that wait for the handler call in flight.
    let mut backlog: VecDeque<Message> = VecDeque::new();
    let mut call: Option<HandlerCall<'a>> = None;
    while sink.ended().is_none() {
        while call.is_none() {
            let Some(message) = backlog.pop_front() else { break };
            call = context.dispatch(message, &grants.topics);
        }
        let wake = Instant::from_std(liveness.poll_timeout());
        let reading = backlog.len() < INBOUND_BACKLOG;
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
                    // While the socket is not read (the handler's backlog is full), the
                    // client's pong may be waiting unread: not its fault, so no 4004 then.
                    Some(LivenessAction::Close) if !reading => {
                        liveness.handle_activity(Instant::now().into_std());
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
            refreshed = std::future::poll_fn(|cx| call.as_mut().map_or(Poll::Pending, |c| c.as_mut().poll(cx))), if call.is_some() => {
                call = None;
                if let Some(refreshed) = refreshed {
                    let now = Instant::now();
                    liveness.set_expiry(expiry_instant(refreshed.expires_at, now));
                    grants = refreshed;
                }
            }
            message = stream.next(), if reading => {
                let now = Instant::now().into_std();
                liveness.handle_activity(now);
                match message {
                    Some(Ok(Message::Close(_))) => {
                        sink.end(SessionEnd::ClientClosed);
                    }
                    Some(Ok(message)) => match rate.handle_message(now) {
                        RateVerdict::Allowed if call.is_none() && backlog.is_empty() => {
                            call = context.dispatch(message, &grants.topics);
                        }
                        RateVerdict::Allowed => backlog.push_back(message),
                        RateVerdict::Limited => {
                            debug!("client message over the rate limit dropped");
                            // Its id, without decoding it (a binary frame has none).
                            let id = match &message {
                                Message::Text(text) => {
                                    request_id_of(text.as_str(), &settings.decode)
                                }
                                _ => None,
                            };
                            let _ = sink.send(ClientFault::RateLimited(id.as_ref()).frame());
                        }
                        RateVerdict::Exceeded => {
                            debug!("client over the rate limit; closing");
                            sink.end(SessionEnd::RateLimited);
                        }
                    },
                    Some(Err(error)) => {
                        let ended = SessionEnd::from_read_error(&error);
                        debug!(%error, end = ?ended, "read failed");
                        let broken = ended.stream_broken();
                        sink.end(ended);
                        if broken {
                            let deadline = Instant::now() + settings.close_timeout;
                            return (stream, Some(deadline));
                        }
                    }
                    None => {
                        sink.end(SessionEnd::TransportError);
                    }
                }
            }
        }
    }
    // The handler call in flight, if any, is dropped here: the connection is ending.
    drop(call);
    // Closing: let tungstenite see the client's close answer (or send ours in reply to the
    // client's), bounded by twice the close timeout (the writer may spend one on flushing).
    let deadline = Instant::now() + settings.close_timeout * 2;
    let broken = sink.ended() == Some(SessionEnd::TransportError);
    if !broken {
        while let Ok(Some(Ok(_))) = tokio::time::timeout_at(deadline, stream.next()).await {}
    }
    (stream, None)
}

/// The monotonic instant at which a token's wall-clock expiry falls; `None` when it has none
/// or it lies beyond what the clock can represent.
fn expiry_instant(expires_at: Option<UnixMillis>, now: Instant) -> Option<std::time::Instant> {
    let expires_at = expires_at?;
    let wall_now = UnixMillis::from_system_time(SystemTime::now());
    let remaining = Duration::from_millis(expires_at.0.saturating_sub(wall_now.0));
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
    use realtime_testkit::SinkClosed;
    use realtime_testkit::sink_contract::SinkHarness;

    use super::*;

    /// The queue driven directly, as the writer drives it.
    struct WsHarness(Arc<WsSink>);

    impl SinkHarness for WsHarness {
        fn sink(&self) -> Arc<dyn ConnectionSink> {
            self.0.clone()
        }

        fn take_written(&self) -> Vec<Frame> {
            let mut batch = VecDeque::new();
            self.0.take_queued(&mut batch);
            batch
                .into_iter()
                .filter_map(|item| match item {
                    Outbound::Frame(frame) => Some(frame),
                    Outbound::Ping => None,
                })
                .collect()
        }

        fn closed(&self) -> Option<SinkClosed> {
            match self.0.ended()? {
                SessionEnd::SlowConsumer => Some(SinkClosed::SlowConsumer),
                SessionEnd::Closed(reason) => Some(SinkClosed::By(reason)),
                other => panic!("the sink alone cannot end as {other:?}"),
            }
        }
    }

    realtime_testkit::sink_contract_tests!(|capacity| WsHarness(outbound_channel(capacity)));

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
    fn queue_buffers_shrink_back_after_a_burst() {
        use futures_util::FutureExt;
        let sink = outbound_channel(1000);
        let frame = Frame::from_text("{}".to_owned());
        let mut batch = VecDeque::new();
        // Two bursts, so that both buffers (the queue's and the writer's batch) grow.
        for _ in 0..2 {
            for _ in 0..500 {
                assert_eq!(sink.send(frame.clone()), Ok(()));
            }
            assert_eq!(sink.queued().now_or_never(), Some(()));
            sink.take_queued(&mut batch);
            assert_eq!(batch.len(), 500);
            batch.clear();
        }
        assert!(batch.capacity() >= 500 && sink.queue.lock().items.capacity() >= 500);
        // Mid-burst (something queued since the writer looked) nothing shrinks.
        assert_eq!(sink.send(frame.clone()), Ok(()));
        sink.release_idle(&mut batch);
        assert!(batch.capacity() >= 500);
        assert_eq!(sink.queued().now_or_never(), Some(()));
        sink.take_queued(&mut batch);
        batch.clear();
        // Idle: both come back to the small size.
        sink.release_idle(&mut batch);
        assert!(batch.capacity() <= IDLE_QUEUE_SLOTS, "batch keeps {}", batch.capacity());
        let queue = sink.queue.lock().items.capacity();
        assert!(queue <= IDLE_QUEUE_SLOTS, "queue keeps {queue}");
    }

    #[test]
    fn frames_accepted_before_an_end_are_still_queued_and_none_after() {
        let sink = outbound_channel(8);
        let frame = Frame::from_text("{}".to_owned());
        assert_eq!(sink.send(frame.clone()), Ok(()));
        sink.close(CloseReason::Kicked);
        assert_eq!(sink.send(frame), Err(SendError::Closed));
        let mut batch = VecDeque::new();
        sink.take_queued(&mut batch);
        assert_eq!(batch.len(), 1);
        assert!(flushes_queue(&SessionEnd::Closed(CloseReason::Kicked)));
        assert!(!flushes_queue(&SessionEnd::SlowConsumer));
    }

    #[test]
    fn text_messages_carry_the_frame_bytes_unchanged() {
        let frame = Frame::from_text(r#"{"type":"n","payload":{"s":"é"}}"#.to_owned());
        let Message::Frame(raw) = text_message(frame.clone()) else {
            panic!("not a ready-made frame");
        };
        assert_eq!(raw.header().opcode, OpCode::Data(Data::Text));
        assert!(raw.header().is_final);
        assert_eq!(raw.payload(), frame.as_bytes());
    }

    /// A replay batch does not count against the capacity: the live frames behind it still
    /// get the whole queue (the writer is not running yet when a recovery is queued).
    #[test]
    fn a_replay_batch_leaves_the_live_capacity_alone() {
        let sink = outbound_channel(2);
        let frame = Frame::from_text("{}".to_owned());
        assert_eq!(sink.send_batch(vec![frame.clone(); 300]), Ok(()));
        assert_eq!(sink.send(frame.clone()), Ok(()));
        assert_eq!(sink.send(frame.clone()), Ok(()));
        assert_eq!(
            sink.send(frame.clone()),
            Err(SendError::QueueFull),
            "live frames still bounded"
        );
        let mut batch = VecDeque::new();
        sink.take_queued(&mut batch);
        assert_eq!(batch.len(), 302);
        let fresh = outbound_channel(2);
        assert_eq!(fresh.send_batch(vec![frame.clone(); 10]), Ok(()));
        let mut taken = VecDeque::new();
        fresh.take_queued(&mut taken);
        assert_eq!((fresh.send(frame.clone()), fresh.send(frame.clone())), (Ok(()), Ok(())));
        assert_eq!(
            fresh.send(frame),
            Err(SendError::QueueFull),
            "the allowance went with the take"
        );
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
        // Far beyond any real expiry: no overflow and no wrap-around into the past (either
        // an instant centuries away, or none when the clock cannot represent it).
        let far = expiry_instant(Some(UnixMillis(u64::MAX)), now);
        let a_century = Duration::from_secs(100 * 365 * 24 * 3600);
        assert!(far.is_none_or(|at| at > now.into_std() + a_century), "{far:?}");
        let in_a_minute = UnixMillis::from_system_time(SystemTime::now()).0 + 60_000;
        let at = expiry_instant(Some(UnixMillis(in_a_minute)), now)
            .unwrap_or_else(|| panic!("no expiry"));
        assert!(at > now.into_std() + Duration::from_secs(50));
    }
}
