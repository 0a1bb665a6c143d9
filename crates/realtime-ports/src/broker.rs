//! [`Broker`]: where publications to streams get their position, are kept as history and are
//! handed to every node that holds connections in the stream; and [`LocalDelivery`], the one
//! synchronous entry point through which a broker hands them to this node's connections.

use std::sync::Weak;

use async_trait::async_trait;
use realtime_core::{
    ConnectionId, Frame, IdempotencyKey, Position, StreamName, UnixMillis, UserId,
};

/// What a [`Broker::publish`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The publication's place in its stream; `None` when the stream keeps no history (its
    /// messages then carry no position).
    pub position: Option<Position>,
    /// How many connections accepted it, as far as the broker knows when it answers (with an
    /// in-process broker: exactly; with a message bus: this node's).
    pub delivered: usize,
    /// An earlier publish with the same idempotency key answered: this is its result and
    /// nothing was delivered again.
    pub duplicate: bool,
    /// With receipts from a distributed broker: how many nodes answered with their count
    /// (summed into `delivered`) out of how many received the publication. `None` from an
    /// in-process broker (this node is all there is) and without receipts.
    pub nodes: Option<NodeReceipts>,
}

/// Which nodes reported their local delivery counts for one publication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeReceipts {
    /// Nodes that answered in time.
    pub answered: usize,
    /// Nodes that received the publication (each should answer).
    pub expected: usize,
}

/// What a broker reports of itself, for `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerHealth {
    /// Which broker (`memory`, `redis`).
    pub backend: &'static str,
    /// Whether it can publish and deliver now (a distributed broker: its bus connection is
    /// up). A node whose broker is down refuses new connections (503).
    pub connected: bool,
    /// Counters worth a look (`reconnects`, `dropped`, `gaps`, ...), by name.
    pub counters: Vec<(&'static str, u64)>,
}

/// What [`Broker::recover`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The stream's position when it was read (its top); `None` when the stream keeps no
    /// history. Every publication after it reaches [`LocalDelivery::deliver`] (the caller
    /// declared its interest first).
    pub position: Option<Position>,
    /// With a `since`: every publication after it, in order, when all of them are still kept
    /// and the epoch matches; `None` otherwise (and always without a `since`).
    pub publications: Option<Vec<Frame>>,
}

/// Why a broker operation failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker's backing store or bus is unreachable; nothing was published or read.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// How publications reach this node's connections: implemented by the service, called by the
/// broker for every publication of a stream the node declared its interest in, whichever
/// node published it (so that a message from another node is delivered here without being
/// published again).
///
/// # Contract
/// - Synchronous and non-blocking: it only enqueues on sinks (it never awaits, never does
///   I/O), so a broker may call it from its read loop or while holding a per-stream lock.
/// - A broker calls `deliver` for the publications of one stream in offset order, each once.
/// - A broker that may have missed publications of a stream calls `lost` for it before it
///   delivers anything more of it: loss is reported, never silent.
pub trait LocalDelivery: Send + Sync + 'static {
    /// Hands `frame` (already carrying `stream`, `offset` and `epoch` when `position` is
    /// `Some`) to this node's connections in `stream`; returns how many accepted it.
    fn deliver(&self, stream: &StreamName, position: Option<&Position>, frame: &Frame) -> usize;

    /// Hands `frame` to one connection of this node; returns whether it accepted it.
    fn deliver_to_connection(&self, id: ConnectionId, frame: &Frame) -> bool;

    /// Another node revoked `user`'s tokens issued before `issued_before`: closes this node's
    /// matching connections (tokens without an `iat` included); returns how many.
    fn revoke(&self, user: &UserId, issued_before: UnixMillis) -> usize;

    /// The broker may have missed publications of `stream` (its bus connection was lost, a
    /// bounded queue dropped one, the stream's offsets jumped or went back, its epoch
    /// changed): closes this node's connections in `stream`, those still recovering
    /// included, with [`CloseReason::StreamLagged`](crate::CloseReason::StreamLagged), so
    /// that each reconnects and recovers from history or learns `recovered: false`; returns
    /// how many.
    fn lost(&self, stream: &StreamName) -> usize;
}

/// The publication side of streams: positions, history and fan-out across nodes.
///
/// # Contract
/// (checked by `realtime_testkit::broker_contract`, which every broker runs)
/// - `publish` gives each publication of a stream with history the next offset (previous
///   + 1, starting at 1) in the stream's epoch, keeps it within the stream's history limits,
///   and hands it to [`LocalDelivery::deliver`] of every interested node, in offset order.
/// - A stream's epoch changes whenever its history is lost (for example, a restart of an
///   in-memory broker); offsets never go back within one epoch.
/// - `recover` is all or nothing: publications are returned only when every one after
///   `since` is still kept, the epoch matches, and there are at most `max`.
/// - No gap between a read and live delivery: after `interest(stream, true)`, every
///   publication with an offset above the position `recover` returns is delivered to
///   [`LocalDelivery::deliver`] (publications at or below it may be delivered too; the
///   caller drops them by offset).
/// - A publish with an idempotency key seen for the same stream within the retention
///   (300 s) returns the first result with `duplicate: true` and delivers nothing.
/// - Every failure is an error, never a silent success: a publish that returns
///   [`BrokerError`] was not delivered (a retry with the same key delivers at most once).
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Connects the broker to this node's delivery; called once, by the service, before any
    /// other method. The broker MUST NOT keep it alive (it is the service itself).
    fn attach(&self, delivery: Weak<dyn LocalDelivery>);

    /// Publishes `frame` (an encoded envelope without a position) to `stream`: assigns its
    /// position, appends it to the history and delivers it (the delivered frame carries the
    /// position: [`Frame::with_position`]).
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when nothing could be published.
    async fn publish(
        &self,
        stream: &StreamName,
        frame: Frame,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> Result<Published, BrokerError>;

    /// Delivers `frame` to `stream`'s connections on every node, without a position and
    /// without keeping it: presence events, which are at most once. Synchronous (the service
    /// sends them from `unregister`): a distributed broker enqueues it and returns.
    fn publish_ephemeral(&self, stream: &StreamName, frame: Frame);

    /// As [`publish`](Self::publish), and waits at most `within` for every node that received
    /// the publication to report how many of its connections accepted it: `delivered` is
    /// then their sum, with [`Published::nodes`] saying how many answered. An in-process
    /// broker's `publish` is exact already (the default).
    ///
    /// # Errors
    /// As [`publish`](Self::publish); a node that does not answer in time is not an error.
    async fn publish_counted(
        &self,
        stream: &StreamName,
        frame: Frame,
        idempotency_key: Option<&IdempotencyKey>,
        within: std::time::Duration,
    ) -> Result<Published, BrokerError> {
        let _ = within;
        self.publish(stream, frame, idempotency_key).await
    }

    /// As [`send_to_connection`](Self::send_to_connection), and waits at most `within` for
    /// every node to answer whether it holds the connection; returns the count and, from a
    /// distributed broker, which nodes answered. An in-process broker's answer is exact
    /// (the default).
    ///
    /// # Errors
    /// As [`send_to_connection`](Self::send_to_connection).
    async fn send_to_connection_counted(
        &self,
        id: ConnectionId,
        frame: Frame,
        within: std::time::Duration,
    ) -> Result<(usize, Option<NodeReceipts>), BrokerError> {
        let _ = within;
        Ok((self.send_to_connection(id, frame).await?, None))
    }

    /// Delivers `frame` to one connection, on whichever node holds it; `Ok(0)` when none does.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the connection's node could not be reached.
    async fn send_to_connection(
        &self,
        id: ConnectionId,
        frame: Frame,
    ) -> Result<usize, BrokerError>;

    /// Reads `stream`'s position and, with `since`, the publications after it (at most `max`;
    /// all or nothing). Creates the stream (and its epoch) if it does not exist yet.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the history could not be read.
    async fn recover(
        &self,
        stream: &StreamName,
        since: Option<&Position>,
        max: usize,
    ) -> Result<Recovered, BrokerError>;

    /// This node holds connections in `stream` (true, when the first one joins) or no longer
    /// does (false, when the last one leaves). Calls for one stream come in order; a broker
    /// that needs no interest (in-process) may ignore them.
    fn interest(&self, stream: &StreamName, interested: bool);

    /// Records that `user`'s tokens issued before `issued_before` are revoked until
    /// `keep_until`, and tells every other node (whose [`LocalDelivery::revoke`] closes its
    /// matching connections; the calling node closes its own).
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the revocation could not be recorded.
    async fn revoke(
        &self,
        user: &UserId,
        issued_before: UnixMillis,
        keep_until: UnixMillis,
    ) -> Result<(), BrokerError>;

    /// The latest revocation of `user` this node knows of (`issued_before`), if any; tokens
    /// issued before it are refused. Synchronous: a distributed broker answers from the
    /// revocations it has received.
    fn revoked_before(&self, user: &UserId) -> Option<UnixMillis>;

    /// The broker's state, for `/healthz`. The default: an in-process broker, always up.
    fn health(&self) -> BrokerHealth {
        BrokerHealth { backend: "memory", connected: true, counters: Vec::new() }
    }
}
