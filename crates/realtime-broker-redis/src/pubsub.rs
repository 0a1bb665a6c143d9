//! This node's side of pub/sub: one dedicated connection, read by one task that hands every
//! message to `LocalDelivery` in the order Redis sends it, and a second task that sends
//! SUBSCRIBE and UNSUBSCRIBE in the order `interest` asked for them and records which were
//! confirmed, so that `recover` can wait for its stream's subscription.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use futures_util::StreamExt;
use parking_lot::{Mutex, RwLock};
use realtime_core::{UnixMillis, UserId};
use realtime_ports::LocalDelivery;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::{mpsc, watch};

use crate::wire::{self, Names, StreamMessage};

/// One SUBSCRIBE or UNSUBSCRIBE, numbered in the order `interest` asked for it.
#[derive(Debug)]
pub(crate) enum Command {
    Subscribe { channel: String, seq: u64 },
    Unsubscribe { channel: String, seq: u64 },
}

/// What this node wants from one stream channel, and what Redis confirmed.
#[derive(Debug)]
pub(crate) struct Subscription {
    /// Whether the node is interested (the last `interest` call).
    pub(crate) wanted: bool,
    /// The number of the last command sent for this channel.
    pub(crate) seq: u64,
    /// The number of the last SUBSCRIBE Redis confirmed.
    pub(crate) confirmed: u64,
}

/// The latest revocation of one user this node knows of.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Revocation {
    pub(crate) issued_before: UnixMillis,
    pub(crate) keep_until: UnixMillis,
}

/// State shared by the broker and its tasks.
pub(crate) struct Shared {
    pub(crate) delivery: OnceLock<Weak<dyn LocalDelivery>>,
    pub(crate) names: Names,
    pub(crate) node_id: String,
    /// Stream channels, by channel name, with the next command number.
    pub(crate) subscriptions: Mutex<(HashMap<String, Subscription>, u64)>,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    /// The number of the last command handled (confirmed or failed).
    pub(crate) progress: watch::Sender<u64>,
    /// False once the pub/sub connection is lost (no reconnect yet).
    pub(crate) alive: AtomicBool,
    pub(crate) revocations: RwLock<HashMap<UserId, Revocation>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("node_id", &self.node_id)
            .field("alive", &self.alive.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn delivery(&self) -> Option<Arc<dyn LocalDelivery>> {
        self.delivery.get().and_then(Weak::upgrade)
    }

    /// Records a revocation; the latest `issued_before` and `keep_until` win.
    pub(crate) fn remember(
        &self,
        user: &UserId,
        issued_before: UnixMillis,
        keep_until: UnixMillis,
    ) {
        let mut revocations = self.revocations.write();
        let entry =
            revocations.entry(user.clone()).or_insert(Revocation { issued_before, keep_until });
        entry.issued_before = entry.issued_before.max(issued_before);
        entry.keep_until = entry.keep_until.max(keep_until);
    }

    /// `interest(stream, interested)` for the stream's `channel`: queues a SUBSCRIBE or
    /// UNSUBSCRIBE when it changes what the node wants.
    pub(crate) fn interest(&self, channel: String, interested: bool) {
        let mut guard = self.subscriptions.lock();
        let (subscriptions, next) = &mut *guard;
        let current = subscriptions.get(&channel).is_some_and(|s| s.wanted);
        if current == interested {
            return;
        }
        *next += 1;
        let seq = *next;
        let entry = subscriptions.entry(channel.clone()).or_insert(Subscription {
            wanted: false,
            seq: 0,
            confirmed: 0,
        });
        entry.wanted = interested;
        entry.seq = seq;
        // Sent under the lock, so commands reach the task in number order. A closed channel
        // means the task ended with the connection: `recover` then reports it.
        let command = if interested {
            Command::Subscribe { channel, seq }
        } else {
            Command::Unsubscribe { channel, seq }
        };
        let _ = self.commands.send(command);
    }

    /// Hands one pub/sub message to this node's delivery.
    fn handle(&self, channel: &str, payload: &[u8]) {
        let Ok(payload) = std::str::from_utf8(payload) else {
            tracing::warn!(channel, "redis broker: a message that is not UTF-8, dropped");
            return;
        };
        if channel == self.names.control() {
            let Some(message) = wire::parse_revocation(payload) else {
                tracing::warn!(channel, "redis broker: an unknown control message, dropped");
                return;
            };
            if message.node == self.node_id {
                return;
            }
            self.remember(&message.user, message.issued_before, message.keep_until);
            if let Some(delivery) = self.delivery() {
                delivery.revoke(&message.user, message.issued_before);
            }
            return;
        }
        let Some(delivery) = self.delivery() else { return };
        if channel == self.names.connections() {
            match wire::parse_to_connection(payload) {
                Some((id, frame)) => {
                    delivery.deliver_to_connection(id, &frame);
                }
                None => tracing::warn!(channel, "redis broker: an unknown connection message"),
            }
            return;
        }
        let Some(stream) = self.names.stream_of(channel) else {
            tracing::warn!(channel, "redis broker: a message on an unknown channel, dropped");
            return;
        };
        match wire::parse_stream_message(payload) {
            Some(StreamMessage::Positioned(position, envelope)) => {
                let frame = envelope.with_position(&stream, &position);
                delivery.deliver(&stream, Some(&position), &frame);
            }
            Some(StreamMessage::Plain(frame)) => {
                delivery.deliver(&stream, None, &frame);
            }
            None => tracing::warn!(channel, "redis broker: an unknown stream message, dropped"),
        }
    }

    /// The connection is gone: waiters of `recover` are woken to report it.
    fn lost(&self) {
        self.alive.store(false, Ordering::Release);
        self.progress.send_modify(|_| {});
    }
}

/// Reads every message of the pub/sub connection, in order, until it closes. Never blocks on
/// a consumer: `LocalDelivery` only enqueues.
pub(crate) async fn read(shared: Arc<Shared>, mut messages: PubSubStream) {
    while let Some(message) = messages.next().await {
        shared.handle(message.get_channel_name(), message.get_payload_bytes());
    }
    tracing::warn!("redis broker: the pub/sub connection closed");
    shared.lost();
}

/// Sends the subscription commands in order and records what Redis confirmed.
pub(crate) async fn subscribe(
    shared: Arc<Shared>,
    mut sink: PubSubSink,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    while let Some(command) = commands.recv().await {
        let seq = match command {
            Command::Subscribe { channel, seq } => {
                match sink.subscribe(&channel).await {
                    Ok(()) => {
                        let mut guard = shared.subscriptions.lock();
                        if let Some(entry) = guard.0.get_mut(&channel) {
                            entry.confirmed = entry.confirmed.max(seq);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(
                            channel,
                            category = error.category(),
                            "redis broker: SUBSCRIBE failed"
                        );
                    }
                }
                seq
            }
            Command::Unsubscribe { channel, seq } => {
                match sink.unsubscribe(&channel).await {
                    Ok(()) => {
                        let mut guard = shared.subscriptions.lock();
                        if guard.0.get(&channel).is_some_and(|e| !e.wanted && e.seq == seq) {
                            guard.0.remove(&channel);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(
                            channel,
                            category = error.category(),
                            "redis broker: UNSUBSCRIBE failed"
                        );
                    }
                }
                seq
            }
        };
        shared.progress.send_modify(|done| *done = (*done).max(seq));
    }
}
