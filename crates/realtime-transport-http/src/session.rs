//! One live WebSocket connection: its bounded outbound queue (the [`ConnectionSink`] the
//! service sends to), the writer that drains it, the reader that answers the client, runs
//! the liveness timers and the rate limit and hands messages to the inbound handler, and the
//! single end that unregisters the connection.
//!
//! The WebSocket framing is our own (`ws_codec`), on the raw `TcpStream` taken back from
//! hyper after the upgrade, so that an idle connection holds almost nothing and a frame
//! reaches the socket without a detour:
//! - **Frame once.** A frame goes to the socket as a header built on the stack (2 to 10
//!   bytes) and the publication's shared bytes, in one vectored write (one serialisation per
//!   publish, never a copy per recipient). `send` only queues and wakes the connection's
//!   task, which writes everything queued in vectored writes of up to [`MAX_BATCH`] frames.
//!   (Writing from `send` itself, on the publishing thread, was measured and dropped: it
//!   puts a whole fan-out's system calls on one thread; see docs/benchmarks.md, Findings.)
//!   With permessage-deflate agreed, `send` compresses a large enough frame first, once per
//!   publication on the fan-out's thread (`deflate::deflated`), and queues the shared
//!   compressed bytes instead ([`Outbound::Deflated`]).
//! - **No buffer while idle.** The reader waits for readiness without a buffer, reads into a
//!   buffer shared by the worker thread, and the decoder keeps bytes only while a frame or a
//!   fragmented message is incomplete; the queue is allocated only while something waits in
//!   it.
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

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::task::AtomicWaker;
use hyper::upgrade::{OnUpgrade, Upgraded};
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
use tokio::io::AsyncWriteExt;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{Instrument, debug, error, info, warn};

use crate::shutdown::SessionTicket;
use crate::wire::{ClientFault, SessionEnd};
use crate::ws_codec::{self, Decoder, Header, Incoming, ReadFault, opcode};

/// Most bytes read and thrown away while waiting for a closing client to go.
const LINGER_MAX_BYTES: usize = 1024 * 1024;

/// Longest wait for the upgraded socket once the connection is registered.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most client messages read ahead while the inbound handler is busy.
pub(crate) const INBOUND_BACKLOG: usize = 8;

/// Most frames gathered into one vectored write.
pub(crate) const MAX_BATCH: usize = 64;

/// The buffer every connection of a worker thread reads into (the decoder copies out what it
/// keeps) and gathers a small write in: no connection holds a buffer of its own.
const WORKER_BUFFER_BYTES: usize = crate::config::MAX_READ_BUFFER_BYTES;

thread_local! {
    static WORKER_BUFFER: RefCell<Box<[u8]>> =
        RefCell::new(vec![0; WORKER_BUFFER_BYTES].into_boxed_slice());
}

/// A ping frame with no payload, built once.
const PING: Bytes = Bytes::from_static(&[0x80 | opcode::PING, 0]);

/// Settings shared by every connection.
#[derive(Debug)]
pub(crate) struct SessionSettings {
    /// Largest client frame or message (1009 beyond).
    pub(crate) max_message: usize,
    /// Most bytes read from the socket at once (into the worker thread's shared buffer).
    pub(crate) read_chunk: usize,
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
    /// A text frame: the payload is the frame's shared bytes, the header is built when it is
    /// written.
    Frame(Frame),
    /// A text frame compressed (permessage-deflate): the payload is the publication's
    /// compressed bytes, shared by every recipient; the header (RSV1 set) is built when it is
    /// written.
    Deflated(Bytes),
    /// A complete control frame (ping, pong, close).
    Control(Bytes),
}

impl Outbound {
    /// The item's two pieces on the wire: the header (empty for a control frame, which is
    /// whole) and the payload.
    fn pieces(&self) -> (Header, &[u8]) {
        match self {
            Outbound::Frame(frame) => {
                (Header::new(opcode::TEXT, frame.as_bytes().len()), frame.as_bytes())
            }
            Outbound::Deflated(bytes) => (Header::deflated(bytes.len()), bytes),
            Outbound::Control(bytes) => (Header::EMPTY, bytes),
        }
    }

    fn is_frame(&self) -> bool {
        matches!(self, Outbound::Frame(_) | Outbound::Deflated(_))
    }
}

/// The outbound half the service holds.
///
/// `send` queues (bounded: a full queue ends the connection as a slow consumer) and wakes
/// the writer. The queue and the socket's writes are under one mutex, so frames reach the
/// socket in the order they were accepted. Before the upgrade
/// completes (the connection is registered before its 101 goes out) there is no socket yet
/// and everything queues behind the `connected` frame.
#[derive(Debug)]
pub(crate) struct WsSink {
    out: Mutex<Out>,
    capacity: usize,
    /// With permessage-deflate agreed, the size from which a frame is compressed;
    /// [`NO_DEFLATE`] without. (4 bytes, in what is padding beside the flags.)
    compress_from: u32,
    /// Set by a queueing `send`, cleared by the writer when it looks.
    ready: AtomicBool,
    /// Set once an end is recorded (it is in [`Out::end`]).
    ending: AtomicBool,
    /// Set when the shutdown's grace period is over: the task drops the socket at once.
    forced: AtomicBool,
    /// The session task: woken by a queueing `send`, an end and a forced stop. Every wait of
    /// the task looks at its own flag, so a wake-up costs a few atomic loads, never a lock.
    task: AtomicWaker,
}

/// What `send` and the writer share, under the sink's lock.
#[derive(Debug, Default)]
struct Out {
    /// The socket, once the upgrade completed and until the session ends.
    socket: Option<Arc<TcpStream>>,
    /// Items not (completely) written, oldest first.
    items: VecDeque<Outbound>,
    /// Bytes of the first item already written.
    head_written: usize,
    /// How many queued items came in replay batches (`send_batch`), which do not count
    /// against the capacity: a recovery of up to `max_recovery` frames per stream is queued
    /// before the socket exists, and a live frame behind it must not make the connection a
    /// slow consumer.
    replayed: usize,
    /// Set once an end is recorded: every frame accepted before it is queued or written.
    closing: bool,
    /// Our answer to the client's close frame: its code and reason echoed. Boxed: every
    /// sink has room for it, few ever hold one.
    client_close: Option<Box<Bytes>>,
    /// How the connection ends: the first end recorded.
    end: Option<SessionEnd>,
}

/// What a write attempt left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flushed {
    /// Everything queued is written.
    Empty,
    /// The socket takes no more for now.
    Blocked,
}

/// Largest write gathered into the worker's buffer and sent as one piece.
const SMALL_WRITE: usize = 1024;
const _: () = assert!(SMALL_WRITE <= WORKER_BUFFER_BYTES);

/// One write of `slices` to `socket`: `send(2)` of one piece (a single slice as it is, small
/// pieces together, such as a header and a short frame, the common case of a fan-out,
/// gathered in the worker's buffer), `sendmsg(2)` of the pieces otherwise. Both, not tokio's
/// `writev(2)`: the same readiness handling, without the VFS layer on every write; one piece,
/// not two, spares the kernel importing an iovec array.
fn send_slices(socket: &TcpStream, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    let socket = socket2::SockRef::from(socket);
    if let [piece] = slices {
        return socket.send(piece);
    }
    let total: usize = slices.iter().map(|slice| slice.len()).sum();
    if total <= SMALL_WRITE {
        // Never borrowed here already (a read holds it only around its own `try_read`); if it
        // were, the pieces go out as they are.
        let gathered = WORKER_BUFFER.with(|cell| {
            let mut buffer = cell.try_borrow_mut().ok()?;
            let mut filled = 0;
            for slice in slices {
                buffer[filled..filled + slice.len()].copy_from_slice(slice);
                filled += slice.len();
            }
            Some(socket.send(&buffer[..filled]))
        });
        if let Some(sent) = gathered {
            return sent;
        }
    }
    socket.send_vectored(slices)
}

impl Out {
    /// Whether live items fill the capacity.
    fn full(&self, capacity: usize) -> bool {
        self.items.len().saturating_sub(self.replayed) >= capacity
    }

    /// Writes `self`'s items (taken out of the sink's queue) until none is left or the socket
    /// takes no more.
    fn write_to(&mut self, socket: &TcpStream) -> io::Result<Flushed> {
        while !self.items.is_empty() {
            let count = self.items.len().min(MAX_BATCH);
            let mut headers = [Header::EMPTY; MAX_BATCH];
            let mut slices = [IoSlice::new(&[]); MAX_BATCH * 2];
            let mut used = 0;
            let mut skip = self.head_written;
            for (index, item) in self.items.iter().take(count).enumerate() {
                let (header, _) = item.pieces();
                headers[index] = header;
            }
            for (index, item) in self.items.iter().take(count).enumerate() {
                let (_, payload) = item.pieces();
                for piece in [headers[index].as_bytes(), payload] {
                    if skip >= piece.len() {
                        skip -= piece.len();
                        continue;
                    }
                    slices[used] = IoSlice::new(&piece[skip..]);
                    skip = 0;
                    used += 1;
                }
            }
            let sent = socket.try_io(Interest::WRITABLE, || send_slices(socket, &slices[..used]));
            match sent {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => self.advance(written),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(Flushed::Blocked);
                }
                Err(error) => return Err(error),
            }
        }
        Ok(Flushed::Empty)
    }

    /// Drops the items `written` bytes completed and records how far into the next one the
    /// write went.
    fn advance(&mut self, mut written: usize) {
        while let Some(item) = self.items.front() {
            let (header, payload) = item.pieces();
            let remaining = header.as_bytes().len() + payload.len() - self.head_written;
            if written < remaining {
                self.head_written += written;
                return;
            }
            written -= remaining;
            self.head_written = 0;
            self.items.pop_front();
            self.replayed = self.replayed.saturating_sub(1);
        }
    }

    /// Forgets what is queued except the part of a frame already on the wire (a close frame
    /// can only follow a complete frame).
    fn drop_unwritten(&mut self) {
        let keep = usize::from(self.head_written > 0);
        self.items.truncate(keep);
        self.replayed = 0;
    }
}

/// [`WsSink::compress_from`] of a connection without permessage-deflate.
const NO_DEFLATE: u32 = u32::MAX;

/// A new connection's sink, holding at most `capacity` queued items (beyond replays), which
/// compresses frames of at least `compress_from` bytes (`None`: permessage-deflate was not
/// agreed).
pub(crate) fn outbound_channel(capacity: usize, compress_from: Option<usize>) -> Arc<WsSink> {
    let compress_from =
        compress_from.map_or(NO_DEFLATE, |min| u32::try_from(min).unwrap_or(NO_DEFLATE - 1));
    Arc::new(WsSink {
        out: Mutex::new(Out::default()),
        capacity: capacity.max(1),
        compress_from,
        ready: AtomicBool::new(false),
        ending: AtomicBool::new(false),
        forced: AtomicBool::new(false),
        task: AtomicWaker::new(),
    })
}

impl WsSink {
    /// Records how the connection ends; only the first call counts. Wakes both halves.
    pub(crate) fn end(&self, end: SessionEnd) -> bool {
        // Under the lock, so that no `send` that saw the sink open queues after the writer's
        // last look at the queue.
        let mut out = self.out.lock();
        out.closing = true;
        if out.end.is_some() {
            return false;
        }
        out.end = Some(end);
        self.ending.store(true, Ordering::Release);
        drop(out);
        self.task.wake();
        true
    }

    fn ended(&self) -> Option<SessionEnd> {
        if self.is_ending() { self.out.lock().end.clone() } else { None }
    }

    /// Whether an end is recorded.
    fn is_ending(&self) -> bool {
        self.ending.load(Ordering::Acquire)
    }

    /// Completes once an end is recorded; may be polled again after that (it stays ready).
    fn end_recorded(&self) -> impl Future<Output = ()> + '_ {
        self.flag_set(&self.ending)
    }

    /// Stops the session at once (the end of the shutdown's grace period): its task drops
    /// the socket the next time it runs.
    pub(crate) fn force(&self) {
        self.forced.store(true, Ordering::Release);
        // Wakes the task (or finds the end recorded already, and then wakes it here).
        if !self.end(SessionEnd::Shutdown) {
            self.task.wake();
        }
    }

    /// Completes once [`force`](WsSink::force) was called.
    fn forced(&self) -> impl Future<Output = ()> + '_ {
        self.flag_set(&self.forced)
    }

    /// Completes once `flag` (one of the sink's) is set; the setter wakes [`WsSink::task`].
    /// The poll function itself, not an `async fn` around it: every waiting state of the
    /// task's future holds one, and an `async fn` would add its own state to each.
    fn flag_set<'s>(&'s self, flag: &'s AtomicBool) -> impl Future<Output = ()> + 's {
        std::future::poll_fn(move |cx| {
            if flag.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            self.task.register(cx.waker());
            if flag.load(Ordering::Acquire) { Poll::Ready(()) } else { Poll::Pending }
        })
    }

    /// Whether permessage-deflate was agreed (client messages may come compressed).
    pub(crate) fn deflates(&self) -> bool {
        self.compress_from != NO_DEFLATE
    }

    /// `frame` as it is queued: compressed when permessage-deflate was agreed, the frame is
    /// large enough and compressing makes it smaller. Compressed once per publication
    /// (`deflate::deflated`), outside the sink's lock.
    fn outbound(&self, frame: Frame) -> Outbound {
        if self.deflates()
            && frame.as_bytes().len() >= self.compress_from as usize
            && let Some(compressed) = crate::deflate::deflated(&frame)
        {
            return Outbound::Deflated(compressed);
        }
        Outbound::Frame(frame)
    }

    /// Wakes the writer if it was not woken since it last looked.
    fn wake_writer(&self) {
        if !self.ready.swap(true, Ordering::AcqRel) {
            self.task.wake();
        }
    }

    fn enqueue(&self, item: Outbound) -> Result<(), SendError> {
        let mut out = self.out.lock();
        if out.closing {
            return Err(SendError::Closed);
        }
        if out.full(self.capacity) {
            drop(out);
            // The close travels on the `end` signal, not on the full queue.
            self.end(SessionEnd::SlowConsumer);
            return Err(SendError::QueueFull);
        }
        out.items.push_back(item);
        drop(out);
        self.wake_writer();
        Ok(())
    }

    /// Completes when something was queued since the last call.
    async fn queued(&self) {
        std::future::poll_fn(|cx| {
            self.task.register(cx.waker());
            if self.ready.swap(false, Ordering::AcqRel) { Poll::Ready(()) } else { Poll::Pending }
        })
        .await;
    }

    /// Hands the upgraded socket over: the `connected` frame goes first, then whatever was
    /// queued since the registration.
    fn attach(&self, socket: Arc<TcpStream>, hello: Frame) {
        let hello = self.outbound(hello);
        let mut out = self.out.lock();
        out.items.push_front(hello);
        out.socket = Some(socket);
        drop(out);
        self.wake_writer();
    }

    /// Takes the socket away (the session is over): no write reaches it any more.
    fn detach(&self) -> Option<Arc<TcpStream>> {
        self.out.lock().socket.take()
    }

    /// Writes what is queued until it is all written or the socket takes no more. The items
    /// are taken out and written without the lock, so that `send` (the fan-out) never waits
    /// for a system call; what is left goes back in front of what was queued meanwhile. (While
    /// a batch is out, up to [`MAX_BATCH`] more live frames can be queued than the capacity.)
    fn write_queued(&self) -> io::Result<Flushed> {
        loop {
            let (socket, mut taken) = {
                let mut out = self.out.lock();
                let Some(socket) = out.socket.clone() else { return Ok(Flushed::Blocked) };
                if out.items.is_empty() {
                    // A burst's buffer is given back: an idle connection holds no queue.
                    out.items = VecDeque::new();
                    out.replayed = 0;
                    return Ok(Flushed::Empty);
                }
                let taken = Out {
                    items: std::mem::take(&mut out.items),
                    head_written: std::mem::take(&mut out.head_written),
                    replayed: std::mem::take(&mut out.replayed),
                    ..Out::default()
                };
                (socket, taken)
            };
            let written = taken.write_to(&socket);
            let mut out = self.out.lock();
            taken.items.append(&mut out.items);
            out.items = taken.items;
            out.head_written = taken.head_written;
            out.replayed += taken.replayed;
            drop(out);
            if written? == Flushed::Blocked {
                return Ok(Flushed::Blocked);
            }
        }
    }

    /// Queues a control frame regardless of the end (the writer's closing frames).
    fn push_control(&self, frame: Bytes) {
        self.out.lock().items.push_back(Outbound::Control(frame));
    }

    /// Swaps everything queued into `batch` (tests, and counting what a closing connection
    /// could not write).
    fn take_queued(&self, batch: &mut VecDeque<Outbound>) {
        let mut out = self.out.lock();
        std::mem::swap(&mut out.items, batch);
        out.head_written = 0;
        out.replayed = 0;
    }
}

impl ConnectionSink for WsSink {
    fn send(&self, frame: Frame) -> Result<(), SendError> {
        self.enqueue(self.outbound(frame))
    }

    /// A batch (a recovery's replay and what was held during it) is queued as it is, never
    /// compressed: the service queues it under its streams' lock, which compressing up to
    /// hundreds of frames would hold for everyone.
    fn send_batch(&self, frames: Vec<Frame>) -> Result<(), SendError> {
        let mut out = self.out.lock();
        if out.closing {
            return Err(SendError::Closed);
        }
        if frames.is_empty() {
            return Ok(());
        }
        if out.full(self.capacity) {
            drop(out);
            self.end(SessionEnd::SlowConsumer);
            return Err(SendError::QueueFull);
        }
        out.replayed += frames.len();
        out.items.extend(frames.into_iter().map(Outbound::Frame));
        drop(out);
        self.wake_writer();
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
    /// The registry's record, shared (not a copy of it).
    pub(crate) connection: Arc<Connection>,
    pub(crate) sink: Arc<WsSink>,
    pub(crate) settings: Arc<SessionSettings>,
    /// What the session uses once, when the socket is handed over. Boxed and dropped then:
    /// the task's future keeps room for every field of the session for the connection's life.
    /// (Under a lock only so that the session, borrowed, can give it away.)
    pub(crate) opening: Mutex<Option<Box<Opening>>>,
}

/// What a session needs to start: the token's grants and the first frame.
pub(crate) struct Opening {
    pub(crate) expires_at: Option<UnixMillis>,
    /// The `topics` claim of the connection's token.
    pub(crate) topics: Vec<TopicPattern>,
    /// The first frame, `connected`, written before anything from the queue.
    pub(crate) hello: Frame,
}

impl Opening {
    /// Moves the value out and frees the box now. (`*boxed` moved out where it is used would
    /// free the box only when its binding goes out of scope: at the session's end.)
    #[expect(clippy::boxed_local, reason = "taking the box is the point: it is freed here")]
    fn unbox(self: Box<Self>) -> Opening {
        *self
    }
}

/// The session, which it unregisters when dropped, whichever way the task ends (a panic too).
/// It holds the session itself, so that the task's future keeps no second handle to the
/// service or the sink for it.
struct Unregister {
    session: Session,
    done: AtomicBool,
    /// Off the shutdown's list with the task.
    _ticket: SessionTicket,
}

impl Unregister {
    /// Unregisters now (the end is known); the drop then does nothing.
    fn now(&self) -> realtime_ports::DisconnectReason {
        let session = &self.session;
        // An end recorded by nobody means the task is going away for another reason.
        session.sink.end(SessionEnd::TransportError);
        let reason = session.sink.ended().unwrap_or(SessionEnd::TransportError).disconnect_reason();
        if !self.done.swap(true, Ordering::AcqRel) {
            session.api.unregister(session.connection.id, reason);
        }
        reason
    }
}

impl Drop for Unregister {
    fn drop(&mut self) {
        // Whatever happens, the socket goes with the task.
        drop(self.session.sink.detach());
        if !*self.done.get_mut() {
            let reason = self.now();
            warn!(reason = reason.as_str(), "connection task ended abnormally; unregistered");
        }
    }
}

/// The raw socket under an upgraded connection, and the bytes hyper read past the request.
///
/// The WebSocket is spoken on the `TcpStream` itself (readiness without a buffer, vectored
/// writes from any thread); hyper's own HTTP/1 connection (our accept loop) and hyper-util's
/// auto connection (`warp::serve`, `axum::serve`) are both taken apart. Any other transport
/// (TLS inside the process, a Unix socket) is not supported: it gets `None`.
fn into_tcp(upgraded: Upgraded) -> Option<(TcpStream, Bytes)> {
    let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => return Some((parts.io.into_inner(), parts.read_buf)),
        Err(upgraded) => upgraded,
    };
    match hyper_util::server::conn::auto::upgrade::downcast::<TokioIo<TcpStream>>(upgraded) {
        Ok(parts) => Some((parts.io.into_inner(), parts.read_buf)),
        Err(_) => None,
    }
}

impl Session {
    /// Runs the connection from the upgrade to its end, then unregisters it (once).
    ///
    /// A plain function returning the task's future, not an `async fn`: an `async fn` would
    /// wrap it in one more state machine that keeps a second copy of the session.
    pub(crate) fn run(
        self,
        upgrade: OnUpgrade,
        ticket: SessionTicket,
    ) -> impl Future<Output = ()> + Send + 'static {
        let span = tracing::info_span!(
            "ws",
            connection_id = %self.connection.id,
            user_id = %self.connection.user_id
        );
        let session = self;
        // Made before the future, which then holds it once (made inside, the ticket would be
        // kept twice: as the future's argument and in the guard).
        let guard = Unregister { session, done: AtomicBool::new(false), _ticket: ticket };
        async move {
            let session = &guard.session;
            let sink = &*session.sink;
            // Unregister as soon as the end is known, so that nothing more is routed here
            // while the closing handshake runs.
            let unregister = async {
                sink.end_recorded().await;
                guard.now()
            };
            let work = async {
                tokio::select! {
                    biased;
                    () = sink.forced() => {
                        debug!("connection dropped at the end of the shutdown grace period");
                    }
                    () = session.drive(upgrade) => {}
                }
                // Every way out of `drive` records an end; this covers any other.
                sink.end(SessionEnd::TransportError);
            };
            // `work` first in every poll: an end it records is unregistered in the same poll,
            // not one scheduling round later (which would let another task's request see the
            // connection still registered).
            let ((), reason) = tokio::join!(biased; work, unregister);
            drop(sink.detach());
            info!(reason = reason.as_str(), "connection closed");
        }
        .instrument(span)
    }

    /// Borrows the session rather than taking it: the task's future then holds its fields
    /// once (taking `self` kept two copies of them in the future, about 550 bytes).
    async fn drive(&self, upgrade: OnUpgrade) {
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
        let Some((socket, early)) = into_tcp(upgraded) else {
            error!("the WebSocket endpoint needs a plain TCP connection served by hyper; closed");
            self.sink.end(SessionEnd::TransportError);
            return;
        };
        info!("connection open");
        let socket = Arc::new(socket);
        // The `connected` frame is needed once: the session does not keep it.
        let Some(opening) = self.opening.lock().take() else {
            error!("session started twice; closed");
            self.sink.end(SessionEnd::TransportError);
            return;
        };
        let Opening { expires_at, topics, hello } = opening.unbox();
        let Session { sink, settings, .. } = self;
        sink.attach(Arc::clone(&socket), hello);
        let writing = write_half(&socket, sink, settings.close_timeout);
        let context = Inbound { session: self };
        let grants = Grants { expires_at, topics };
        let reading = read_half(&socket, early, &context, grants);
        let ((), drain_deadline) = tokio::join!(writing, reading);
        // When the stream cannot be read frame by frame any more (an oversize frame or a
        // protocol violation), stop writing and read what the client still sends until it
        // goes, so that the close frame is not lost to a reset. The writer may have spent its
        // close timeout on the close frame: the linger gets a close timeout of its own.
        drop(sink.detach());
        if drain_deadline.is_some() {
            let deadline = Instant::now() + settings.close_timeout;
            // Boxed, as every wait of the closing path: the task's future is as large as its
            // largest state, and an idle connection should not carry the closing ones.
            let _ = Box::pin(tokio::time::timeout_at(deadline, linger(socket))).await;
        }
    }
}

/// Counts, in `realtime_frames_dropped_total{reason="close_timeout"}`, the frames accepted
/// for a closing connection that may not have reached it (what is still queued, the one
/// being written included).
fn count_unwritten(sink: &WsSink) {
    let mut rest = VecDeque::new();
    sink.take_queued(&mut rest);
    let lost = rest.iter().filter(|item| item.is_frame()).count();
    if lost > 0 {
        metrics::counter!("realtime_frames_dropped_total", "reason" => "close_timeout")
            .increment(lost as u64);
    }
}

/// Waits until the socket may be read (`try_read` then says whether there is something).
///
/// `poll_read_ready`, not `readable()`: it keeps the waiting task's waker in the socket's one
/// reader slot instead of a waiter node in the future (about 150 bytes less in every idle
/// connection's task), and it replaces the waker left in that slot by hyper's connection
/// task, which read the upgrade request. A waker held there keeps the finished task's memory
/// (about 1.1 KiB) allocated until the client next sends something, which an idle client
/// never does. Only one task may wait this way: the session is the socket's only reader.
fn read_ready(socket: &TcpStream) -> impl Future<Output = io::Result<()>> + '_ {
    std::future::poll_fn(|cx| socket.poll_read_ready(cx))
}

/// Waits until the socket may be written; as [`read_ready`], for the socket's one writer
/// (the session task: the fan-out never writes to the socket itself).
fn write_ready(socket: &TcpStream) -> impl Future<Output = io::Result<()>> + '_ {
    std::future::poll_fn(|cx| socket.poll_write_ready(cx))
}

/// Writes everything queued, waiting for the socket to drain as often as needed.
async fn flush(socket: &TcpStream, sink: &WsSink) -> io::Result<()> {
    loop {
        match sink.write_queued()? {
            Flushed::Empty => return Ok(()),
            Flushed::Blocked => write_ready(socket).await?,
        }
    }
}

/// The writer: whatever `send` could not write at once (the `connected` frame and what was
/// queued before the upgrade first), until an end is recorded; then, when the end flushes the
/// queue, what is still queued; then the close frame, if the end has one. The closing part is
/// bounded by the close timeout, counted from when the writer saw the end.
///
/// A plain function returning the future (not an `async fn`, which would keep each argument
/// twice in its future).
#[expect(clippy::manual_async_fn, reason = "an async fn keeps every argument twice")]
fn write_half<'s>(
    socket: &'s TcpStream,
    sink: &'s WsSink,
    close_timeout: Duration,
) -> impl Future<Output = ()> + 's {
    async move {
        let mut closing = Closing { sink, close_timeout, deadline: None };
        let mut healthy = true;
        while healthy && !sink.is_ending() {
            let flushing = flush(socket, sink);
            tokio::pin!(flushing);
            healthy = closing.write(flushing).await;
            if !healthy || sink.is_ending() {
                break;
            }
            tokio::select! {
                biased;
                () = sink.end_recorded() => break,
                () = sink.queued() => {}
            }
        }
        let end = sink.ended().unwrap_or(SessionEnd::TransportError);
        let deadline = closing.deadline();
        if healthy && flushes_queue(&end) {
            // `send` refuses from now on, so this ends.
            match Box::pin(tokio::time::timeout_at(deadline, flush(socket, sink))).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    debug!(%error, "write failed while closing");
                    count_unwritten(sink);
                    healthy = false;
                }
                Err(_) => {
                    debug!("queued frames not written within the close timeout");
                    count_unwritten(sink);
                }
            }
        } else {
            sink.out.lock().drop_unwritten();
        }
        let close = match end.close_frame() {
            Some((code, reason)) => Some(ws_codec::close_frame(code, reason)),
            // The answer to the client's close: its code echoed (or none).
            None if end == SessionEnd::ClientClosed => {
                sink.out.lock().client_close.take().map(|c| *c)
            }
            None => None,
        };
        if let (Some(frame), true) =
            (close, healthy || sink.ended() != Some(SessionEnd::TransportError))
        {
            sink.push_control(frame);
            match Box::pin(tokio::time::timeout_at(deadline, flush(socket, sink))).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => debug!(%error, "close frame not sent"),
                Err(_) => debug!("close frame not sent within the close timeout"),
            }
        }
    }
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
    ///
    /// `write` comes pinned by the caller: taken by value and pinned here, the future would
    /// hold it twice (the argument and the pinned copy).
    async fn write<W>(&mut self, mut write: Pin<&mut W>) -> bool
    where
        W: Future<Output = io::Result<()>>,
    {
        let result = if self.sink.is_ending() {
            None
        } else {
            tokio::select! {
                biased;
                () = self.sink.end_recorded() => None,
                written = write.as_mut() => Some(written),
            }
        };
        let result = match result {
            Some(written) => written,
            None if self.sink.ended().as_ref().is_some_and(flushes_queue) => {
                match Box::pin(tokio::time::timeout_at(self.deadline(), write)).await {
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

/// What one look at the socket found.
enum ReadStep {
    /// Bytes were read (and decoded).
    Read,
    /// Nothing to read for now.
    Blocked,
    /// The client closed its side.
    Eof,
    /// The bytes are not a WebSocket stream we can go on reading.
    /// Boxed: a step is kept in every connection's reader, a fault is rare.
    Fault(Box<ReadFault>),
    Failed(io::Error),
}

impl ReadStep {
    /// The step a decode came to: its messages were read, or the stream cannot be read on.
    fn decoded(result: Result<(), ReadFault>) -> ReadStep {
        match result {
            Ok(()) => ReadStep::Read,
            Err(fault) => ReadStep::Fault(Box::new(fault)),
        }
    }
}

/// Reads once into the worker thread's shared buffer and decodes what came, keeping at most
/// `room` messages (the decoder keeps the rest).
fn read_once(
    socket: &TcpStream,
    decoder: &mut Decoder,
    chunk: usize,
    room: usize,
    out: &mut VecDeque<Incoming>,
) -> ReadStep {
    WORKER_BUFFER.with_borrow_mut(|buffer| {
        let chunk = chunk.clamp(1, buffer.len());
        match socket.try_read(&mut buffer[..chunk]) {
            Ok(0) => ReadStep::Eof,
            Ok(read) => ReadStep::decoded(decoder.decode(&buffer[..read], room, out)),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => ReadStep::Blocked,
            Err(error) => ReadStep::Failed(error),
        }
    })
}

/// What handling a client message needs: the session, borrowed. One reference, not one per
/// part: the reader's future keeps it for the connection's life.
#[derive(Clone, Copy)]
struct Inbound<'a> {
    session: &'a Session,
}

/// The parts of the session a client message's handling uses.
struct Parts<'a> {
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
    fn parts(self) -> Parts<'a> {
        let session = self.session;
        Parts {
            sink: &session.sink,
            settings: &session.settings,
            connection: &session.connection,
            inbound: &*session.inbound,
            api: &*session.api,
            verifier: &*session.verifier,
        }
    }

    /// Handles one client message; returns the call to await for an application message or
    /// a protocol request, and answers everything else at once. `topics` are the current
    /// token's grants, for a subscribe.
    fn dispatch(&self, message: Incoming, topics: &[TopicPattern]) -> Option<HandlerCall<'a>> {
        let reply = match message {
            Incoming::Text(text) => {
                match decode_client_text(&text, &self.session.settings.decode) {
                    Ok(ClientMessage::Ping { id: None }) => self.session.settings.pong.clone(),
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
                    Ok(ClientMessage::Refresh { id, token }) => {
                        return Some(self.refresh(id, token));
                    }
                    Ok(_) => return None,
                    Err(error) => {
                        debug!(%error, "undecodable client message");
                        ClientFault::Decode(&error).frame()
                    }
                }
            }
            Incoming::Binary => ClientFault::Binary.frame(),
            // Close, ping and pong frames are handled by the reader.
            Incoming::Close(_) | Incoming::Ping(_) | Incoming::Pong => return None,
        };
        // A full queue ends the connection as a slow consumer; a closed one is ending anyway.
        let _ = self.session.sink.send(reply);
        None
    }

    /// The handler call for `envelope` (whose frame had `id`): bounded by the inbound
    /// timeout, a panic caught, the reply sent through the service (`RealtimeApi::reply`,
    /// which puts `id` on it); a refusal echoes `id` too.
    fn call(&self, id: Option<RequestId>, envelope: Envelope) -> HandlerCall<'a> {
        let Parts { sink, settings, connection, inbound, api, .. } = self.parts();
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
        let Parts { sink, settings, connection, api, .. } = self.parts();
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
        let Parts { sink, settings, connection, api, .. } = self.parts();
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
        let Parts { sink, settings, connection, api, verifier, .. } = self.parts();
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

/// Handles the client messages just decoded, in order: a close frame ends the session (its
/// code echoed), a ping is answered, and the rest pass the rate limit to the inbound handler,
/// one call at a time (the others wait in `backlog`).
fn take_messages<'a>(
    context: &Inbound<'a>,
    fresh: &mut VecDeque<Incoming>,
    liveness: &mut Liveness,
    rate: &mut RateLimiter,
    call: &mut Option<HandlerCall<'a>>,
    backlog: &mut VecDeque<Incoming>,
    topics: &[TopicPattern],
) {
    let Parts { sink, settings, .. } = context.parts();
    let now = Instant::now().into_std();
    while let Some(message) = fresh.pop_front() {
        liveness.handle_activity(now);
        if let Incoming::Close(close) = message {
            let answer = match close {
                Some((code, reason)) => ws_codec::close_frame(code, &reason),
                None => ws_codec::encode(opcode::CLOSE, &[]),
            };
            sink.out.lock().client_close = Some(Box::new(answer));
            sink.end(SessionEnd::ClientClosed);
            break;
        }
        if let Incoming::Ping(payload) = &message {
            let _ = sink.enqueue(Outbound::Control(ws_codec::encode(opcode::PONG, payload)));
        }
        match rate.handle_message(now) {
            RateVerdict::Allowed => match message {
                Incoming::Ping(_) | Incoming::Pong => {}
                message if call.is_none() && backlog.is_empty() => {
                    *call = context.dispatch(message, topics);
                }
                message => backlog.push_back(message),
            },
            RateVerdict::Limited => {
                debug!("client message over the rate limit dropped");
                // Its id, without decoding it (a binary frame has none).
                let id = match &message {
                    Incoming::Text(text) => request_id_of(text, &settings.decode),
                    _ => None,
                };
                let _ = sink.send(ClientFault::RateLimited(id.as_ref()).frame());
            }
            RateVerdict::Exceeded => {
                debug!("client over the rate limit; closing");
                sink.end(SessionEnd::RateLimited);
                break;
            }
        }
    }
    fresh.clear();
}

/// The reader: answers pings and bad messages, hands the rest to the inbound handler (one
/// call at a time, beside the timers), runs the liveness timers and the rate limit, until an
/// end is recorded (a shutdown records one on every session). After an end is recorded it
/// keeps reading (and discarding) until the client's close frame or the close timeout, so
/// that the closing handshake completes. `early` is what hyper read past the request.
/// Returns, when the stream broke before the client went, the deadline for draining the raw
/// socket.
///
/// A plain function returning the future (not an `async fn`): an `async fn` would keep each
/// argument twice in its future (the argument and the local it is moved into), and the early
/// bytes are decoded before the future is made.
fn read_half<'s, 'a>(
    socket: &'s TcpStream,
    early: Bytes,
    context: &'s Inbound<'a>,
    mut grants: Grants,
) -> impl Future<Output = Option<Instant>> {
    // What hyper read past the request is decoded before the future is made, so that the
    // future does not keep room for it.
    let session = context.session;
    let mut decoder = Decoder::new(session.settings.max_message, session.sink.deflates());
    let mut fresh: VecDeque<Incoming> = VecDeque::new();
    let mut step = (!early.is_empty())
        .then(|| ReadStep::decoded(decoder.decode(&early, INBOUND_BACKLOG, &mut fresh)));
    drop(early);
    async move {
        let Parts { sink, settings, .. } = context.parts();
        let now = Instant::now();
        let mut liveness = Liveness::new(
            settings.liveness,
            now.into_std(),
            expiry_instant(grants.expires_at, now),
        );
        let mut rate = RateLimiter::new(settings.inbound_rate, now.into_std());
        // Client messages that wait for the handler call in flight (`fresh`: those just
        // decoded).
        let mut backlog: VecDeque<Incoming> = VecDeque::new();
        let mut call: Option<HandlerCall<'a>> = None;
        while sink.ended().is_none() {
            if let Some(taken) = step.take() {
                match taken {
                    ReadStep::Read => take_messages(
                        context,
                        &mut fresh,
                        &mut liveness,
                        &mut rate,
                        &mut call,
                        &mut backlog,
                        &grants.topics,
                    ),
                    ReadStep::Blocked => {}
                    ReadStep::Eof => {
                        sink.end(SessionEnd::TransportError);
                    }
                    ReadStep::Failed(error) => {
                        debug!(%error, "read failed");
                        sink.end(SessionEnd::TransportError);
                    }
                    ReadStep::Fault(fault) => {
                        let ended = SessionEnd::from_read_fault(*fault);
                        debug!(?fault, end = ?ended, "unreadable client stream");
                        sink.end(ended);
                        return Some(Instant::now() + settings.close_timeout);
                    }
                }
                continue;
            }
            while call.is_none() {
                let Some(message) = backlog.pop_front() else { break };
                call = context.dispatch(message, &grants.topics);
            }
            let room = INBOUND_BACKLOG.saturating_sub(backlog.len());
            let reading = room > 0;
            if reading && decoder.has_pending() {
                step = Some(ReadStep::decoded(decoder.decode(&[], room, &mut fresh)));
                continue;
            }
            let wake = Instant::from_std(liveness.poll_timeout());
            tokio::select! {
                biased;
                () = sink.end_recorded() => break,
                () = tokio::time::sleep_until(wake) => {
                    match liveness.handle_timeout(Instant::now().into_std()) {
                        Some(LivenessAction::SendPing) => {
                            let _ = sink.enqueue(Outbound::Control(PING));
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
                ready = read_ready(socket), if reading => {
                    step = Some(match ready {
                        // The room again rather than a local kept across the wait.
                        Ok(()) => read_once(socket, &mut decoder, settings.read_chunk, INBOUND_BACKLOG.saturating_sub(backlog.len()), &mut fresh),
                        Err(error) => ReadStep::Failed(error),
                    });
                }
            }
        }
        // The handler call in flight, if any, is dropped here: the connection is ending.
        drop(call);
        drop(backlog);
        // Closing: read until the client's close frame (its answer to ours), bounded by twice
        // the close timeout (the writer may spend one on flushing).
        let deadline = Instant::now() + settings.close_timeout * 2;
        if matches!(sink.ended(), Some(SessionEnd::TransportError | SessionEnd::ClientClosed)) {
            return None;
        }
        let closing_read = async {
            loop {
                fresh.clear();
                if read_ready(socket).await.is_err() {
                    return;
                }
                // Only the close frame matters now: messages are not inflated or checked.
                decoder.discard_messages();
                match read_once(socket, &mut decoder, settings.read_chunk, usize::MAX, &mut fresh) {
                    ReadStep::Read if fresh.iter().any(|m| matches!(m, Incoming::Close(_))) => {
                        return;
                    }
                    ReadStep::Read | ReadStep::Blocked => {}
                    ReadStep::Eof | ReadStep::Fault(_) | ReadStep::Failed(_) => return,
                }
            }
        };
        let _ = tokio::time::timeout_at(deadline, closing_read).await;
        None
    }
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
async fn linger(socket: Arc<TcpStream>) {
    use tokio::io::AsyncReadExt;
    // The sink let go of its handle: this is the last one.
    let Ok(mut socket) = Arc::try_unwrap(socket) else { return };
    let _ = socket.shutdown().await;
    let mut buffer = [0u8; 1024];
    let mut total = 0usize;
    while total < LINGER_MAX_BYTES {
        match socket.read(&mut buffer).await {
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
                    // What the client inflates.
                    Outbound::Deflated(bytes) => {
                        let text = crate::deflate::inflate(bytes.to_vec(), usize::MAX)
                            .unwrap_or_else(|e| panic!("{e:?}"));
                        Some(Frame::from_text(String::from_utf8(text).unwrap()))
                    }
                    Outbound::Control(_) => None,
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

    realtime_testkit::sink_contract_tests!(|capacity| WsHarness(outbound_channel(capacity, None)));

    /// The same contract with permessage-deflate agreed and every frame compressed that
    /// shrinks: compression changes nothing of order, capacity or the slow-consumer close.
    mod deflating {
        use super::*;

        realtime_testkit::sink_contract_tests!(|capacity| WsHarness(outbound_channel(
            capacity,
            Some(0)
        )));
    }

    /// Every write shape reaches the peer byte for byte: pieces gathered in the worker's
    /// buffer (up to exactly [`SMALL_WRITE`]), one byte more (sent as pieces), a single piece
    /// of either size, and many small pieces.
    #[tokio::test]
    async fn send_slices_writes_every_piece_in_order_on_both_paths() {
        use tokio::io::AsyncReadExt;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut peer, _) = listener.accept().await.unwrap();
        let header = [0x81u8, 0x7e, 0x03, 0xfc];
        let exact: Vec<u8> = (0..SMALL_WRITE - header.len()).map(|i| (i % 251) as u8).collect();
        let over: Vec<u8> = (0..=SMALL_WRITE - header.len()).map(|i| (i % 241) as u8).collect();
        let small: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; usize::from(i) + 1]).collect();
        let shapes: Vec<Vec<&[u8]>> = vec![
            vec![&header, &exact],
            vec![&header, &over],
            vec![&exact],
            vec![&over],
            small.iter().map(Vec::as_slice).collect(),
        ];
        for pieces in shapes {
            let slices: Vec<IoSlice<'_>> = pieces.iter().map(|piece| IoSlice::new(piece)).collect();
            let expected = pieces.concat();
            client.writable().await.unwrap();
            let sent = send_slices(&client, &slices).unwrap();
            assert_eq!(sent, expected.len(), "a loopback socket with room takes the whole write");
            let mut received = vec![0u8; expected.len()];
            peer.read_exact(&mut received).await.unwrap();
            assert_eq!(received, expected);
        }
    }

    #[test]
    fn sink_queue_full_ends_as_slow_consumer_and_then_refuses() {
        let sink = outbound_channel(2, None);
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
    fn frames_accepted_before_an_end_are_still_queued_and_none_after() {
        let sink = outbound_channel(8, None);
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

    /// A replay batch does not count against the capacity: the live frames behind it still
    /// get the whole queue (the writer is not running yet when a recovery is queued).
    #[test]
    fn a_replay_batch_leaves_the_live_capacity_alone() {
        let sink = outbound_channel(2, None);
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
        let fresh = outbound_channel(2, None);
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
        let sink = outbound_channel(2, None);
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
