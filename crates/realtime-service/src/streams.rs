//! Streams in the service: the live publications held back while a connection's recovery
//! reads history, their release after the replay (merged by offset, without a gap or a
//! duplicate), the node's interest in streams, and local delivery ([`LocalDelivery`]).
//!
//! The order that leaves no gap (the broker's contract does the rest):
//! 1. hold: live publications of the stream for this connection are buffered from now on;
//! 2. join: the connection enters the stream (registry), the node declares its interest;
//! 3. read: the broker returns the stream's top and, with a `since`, what came after it;
//! 4. release: under the hold lock, queue the reply, the replay, then the held publications
//!    above the top (in offset order, checked contiguous), and stop holding.
//!
//! Deliveries take the hold lock for reading *before* they look recipients up, so a hold, a
//! release or an unsubscribe (which fences with the write lock) is ordered with every
//! delivery: none straddles it.

use std::collections::HashMap;

use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use realtime_core::{Connection, ConnectionId, Frame, Position, StreamName};
use realtime_ports::{
    Broker, CloseReason, ConnectionRegistry, ConnectionSink, Registered, SendError,
};

use crate::metrics as m;

/// Live publications held back for one connection in one stream.
#[derive(Debug, Default)]
struct Held {
    frames: Vec<(Option<u64>, Frame)>,
    /// More arrived than the buffer holds: the connection must reconnect and recover.
    overflowed: bool,
}

/// Every hold in progress, by stream then connection.
#[derive(Debug, Default)]
pub(crate) struct Holds {
    streams: HashMap<StreamName, HashMap<ConnectionId, Mutex<Held>>>,
}

/// One stream's part of a release: the top the broker read and the replayed publications.
pub(crate) struct Replay {
    pub(crate) stream: StreamName,
    pub(crate) top: Option<Position>,
    pub(crate) frames: Vec<Frame>,
}

/// The hold lock and the interest counts.
#[derive(Debug, Default)]
pub(crate) struct StreamState {
    holds: RwLock<Holds>,
    interest: Mutex<HashMap<StreamName, usize>>,
}

/// The streams every connection is in from the moment it connects: its user's, each of its
/// roles', and `broadcast`.
pub(crate) fn implicit_streams(connection: &Connection) -> Vec<StreamName> {
    let mut streams = Vec::with_capacity(connection.roles.len() + 2);
    streams.push(StreamName::User(connection.user_id.clone()));
    streams.extend(connection.roles.iter().cloned().map(StreamName::Role));
    streams.push(StreamName::Broadcast);
    streams
}

impl StreamState {
    /// Starts holding back `streams`' live publications for `id`.
    pub(crate) fn hold(&self, id: ConnectionId, streams: &[StreamName]) {
        let mut holds = self.holds.write();
        for stream in streams {
            // A hold already running (two subscribes of one topic at once) is kept: what it
            // holds is released by the first release; the second may then repeat a replayed
            // publication, but none is lost.
            holds.streams.entry(stream.clone()).or_default().entry(id).or_default();
        }
    }

    /// Stops holding `streams` for `id`, dropping what was held (the connection is gone or
    /// the operation failed).
    pub(crate) fn unhold(&self, id: ConnectionId, streams: &[StreamName]) {
        let mut holds = self.holds.write();
        for stream in streams {
            if let Some(by_connection) = holds.streams.get_mut(stream) {
                by_connection.remove(&id);
                if by_connection.is_empty() {
                    holds.streams.remove(stream);
                }
            }
        }
    }

    /// Waits until every delivery in flight is done; deliveries after it see the registry as
    /// it is now.
    pub(crate) fn fence(&self) {
        drop(self.holds.write());
    }

    /// Ends the holds of `id` for the streams of `replays`: queues `head` (a reply), every
    /// replay, then each stream's held publications above its top, as one batch, and stops
    /// holding. A hold that overflowed, or held publications that do not continue the top
    /// without a gap, close the connection ([`CloseReason::StreamLagged`]) instead: the
    /// client reconnects and recovers, nothing is skipped silently. Returns whether the batch
    /// was queued.
    pub(crate) fn release(
        &self,
        id: ConnectionId,
        sink: &dyn ConnectionSink,
        head: Option<Frame>,
        replays: Vec<Replay>,
    ) -> bool {
        let mut holds = self.holds.write();
        let mut batch: Vec<Frame> = head.into_iter().collect();
        let mut lagged = false;
        for Replay { stream, top, frames } in replays {
            batch.extend(frames);
            let Some(by_connection) = holds.streams.get_mut(&stream) else { continue };
            let held = by_connection.remove(&id).map(Mutex::into_inner).unwrap_or_default();
            if by_connection.is_empty() {
                holds.streams.remove(&stream);
            }
            lagged |= held.overflowed;
            let mut next = top.as_ref().map(|top| top.offset + 1);
            for (offset, frame) in held.frames {
                match (offset, next.as_mut()) {
                    // At or below the top: the replay (or the past) has it.
                    (Some(offset), Some(next)) if offset < *next => {}
                    (Some(offset), Some(next)) if offset == *next => {
                        *next += 1;
                        batch.push(frame);
                    }
                    // Above the next offset: a publication is missing.
                    (Some(_), Some(_)) => lagged = true,
                    // No position (no history, or an ephemeral event): in arrival order.
                    _ => batch.push(frame),
                }
            }
        }
        if lagged {
            ::metrics::counter!(m::STREAM_LAGGED_TOTAL).increment(1);
            sink.close(CloseReason::StreamLagged);
            return false;
        }
        batch.is_empty() || sink.send_batch(batch).is_ok()
    }

    /// `streams` gained a connection of this node: declares interest on the first.
    pub(crate) fn enter(&self, broker: &dyn Broker, streams: &[StreamName]) {
        let mut interest = self.interest.lock();
        for stream in streams {
            let count = interest.entry(stream.clone()).or_insert(0);
            *count += 1;
            if *count == 1 {
                broker.interest(stream, true);
            }
        }
    }

    /// `streams` lost a connection of this node: withdraws interest after the last.
    pub(crate) fn leave(&self, broker: &dyn Broker, streams: &[StreamName]) {
        let mut interest = self.interest.lock();
        for stream in streams {
            let Some(count) = interest.get_mut(stream) else { continue };
            *count -= 1;
            if *count == 0 {
                interest.remove(stream);
                broker.interest(stream, false);
            }
        }
    }

    /// The hold lock for a delivery (taken before the recipients are looked up).
    pub(crate) fn for_delivery(&self) -> RwLockReadGuard<'_, Holds> {
        self.holds.read()
    }
}

/// What one delivery did, for the metrics.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) delivered: usize,
    pub(crate) slow: u64,
    pub(crate) closed: u64,
}

impl Holds {
    /// The broker may have missed publications of `stream`: closes every recipient
    /// ([`CloseReason::StreamLagged`]); one still recovering is marked overflowed instead,
    /// so its release closes it. Returns how many were closed now.
    pub(crate) fn lose(&self, stream: &StreamName, recipients: &[Registered]) -> usize {
        let held = self.streams.get(stream);
        let mut closed = 0;
        for recipient in recipients {
            match held.and_then(|h| h.get(&recipient.connection.id)) {
                Some(hold) => hold.lock().overflowed = true,
                None => {
                    recipient.sink.close(CloseReason::StreamLagged);
                    closed += 1;
                }
            }
        }
        closed
    }

    /// Hands `frame` to each recipient's sink, or to its hold when it has one for `stream`.
    /// A hold counts as a delivery (the frame is released to the sink after the replay).
    pub(crate) fn hand_out(
        &self,
        stream: Option<&StreamName>,
        offset: Option<u64>,
        frame: &Frame,
        recipients: &[Registered],
        max_held: usize,
    ) -> Outcome {
        let held = stream.and_then(|stream| self.streams.get(stream));
        let mut outcome = Outcome::default();
        for recipient in recipients {
            if let Some(hold) = held.and_then(|h| h.get(&recipient.connection.id)) {
                let mut hold = hold.lock();
                if hold.frames.len() < max_held {
                    hold.frames.push((offset, frame.clone()));
                } else {
                    hold.overflowed = true;
                }
                outcome.delivered += 1;
                continue;
            }
            match recipient.sink.send(frame.clone()) {
                Ok(()) => outcome.delivered += 1,
                // The sink closes itself as a slow consumer (ConnectionSink contract).
                Err(SendError::QueueFull) => outcome.slow += 1,
                // `Closed`, and any later variant: the frame did not reach the connection.
                Err(_) => outcome.closed += 1,
            }
        }
        outcome
    }
}

/// The connections of this node in `stream`.
pub(crate) fn members(registry: &dyn ConnectionRegistry, stream: &StreamName) -> Vec<Registered> {
    registry.find_stream(stream)
}
