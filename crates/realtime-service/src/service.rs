//! [`RealtimeService`]: admission (cap, permissions, ids) and fan-out over the registry port.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use realtime_core::protocol;
use realtime_core::{
    Connection, ConnectionId, Envelope, Frame, Target, UnixMillis, UserId, connection_authorized,
};
use realtime_ports::{
    CloseReason, ConnectError, ConnectRequest, ConnectionRegistry, DisconnectReason, PublishError,
    RealtimeApi, RegisterError, Registered, SendError,
};
use tracing::{debug, error, info, warn};

use crate::config::ServiceConfig;
use crate::metrics as m;

/// How many fresh ids `connect` tries before giving up on a registry that keeps answering
/// [`RegisterError::Duplicate`] (with random v4 ids, a second attempt never happens in practice).
const MAX_REGISTER_ATTEMPTS: usize = 8;

/// The realtime service of one node: admits connections into a [`ConnectionRegistry`] and
/// sends messages to them.
///
/// The connection cap is enforced without races: `connect` reserves a slot in an atomic
/// counter before registering and releases it when registration fails or the connection is
/// disconnected.
pub struct RealtimeService {
    registry: Arc<dyn ConnectionRegistry>,
    config: ServiceConfig,
    /// Connections registered through this service plus connects in flight.
    slots: AtomicUsize,
}

impl fmt::Debug for RealtimeService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RealtimeService")
            .field("config", &self.config)
            .field("slots", &self.slots.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl RealtimeService {
    /// A service over `registry` with `config`.
    pub fn new(registry: Arc<dyn ConnectionRegistry>, config: ServiceConfig) -> Self {
        RealtimeService { registry, config, slots: AtomicUsize::new(0) }
    }

    /// The configuration the service was built with.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// Reserves one connection slot, or `None` at the cap. The slot is released when the
    /// returned guard drops, unless it is kept.
    fn reserve_slot(&self) -> Option<SlotGuard<'_>> {
        let max = self.config.max_connections;
        self.slots
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| SlotGuard { slots: &self.slots, kept: false })
    }

    /// Hands `frame` to `recipients` (one frame clone per recipient) and records the
    /// outcome. Returns how many sinks accepted the frame.
    fn fan_out(
        &self,
        target: &'static str,
        recipients: &[Registered],
        frame: &Frame,
        message: &Envelope,
    ) -> usize {
        ::metrics::counter!(m::MESSAGES_PUBLISHED_TOTAL, m::LABEL_TARGET => target).increment(1);
        if recipients.is_empty() {
            debug!(target_kind = target, message_type = %message.kind, delivered = 0, "no recipients");
            return 0;
        }
        let (mut delivered, mut slow, mut closed) = (0usize, 0u64, 0u64);
        for recipient in recipients {
            match recipient.sink.send(frame.clone()) {
                Ok(()) => delivered += 1,
                // The sink closes itself as a slow consumer (ConnectionSink contract).
                Err(SendError::QueueFull) => slow += 1,
                // `Closed`, and any later variant: the frame did not reach the connection.
                Err(_) => closed += 1,
            }
        }
        ::metrics::counter!(m::MESSAGES_DELIVERED_TOTAL, m::LABEL_TARGET => target)
            .increment(delivered as u64);
        if slow > 0 {
            ::metrics::counter!(m::FRAMES_DROPPED_TOTAL, m::LABEL_REASON => m::REASON_SLOW_CONSUMER)
                .increment(slow);
        }
        if closed > 0 {
            ::metrics::counter!(m::FRAMES_DROPPED_TOTAL, m::LABEL_REASON => m::REASON_CLOSED)
                .increment(closed);
        }
        debug!(
            target_kind = target,
            message_type = %message.kind,
            recipients = recipients.len(),
            delivered,
            dropped_slow_consumer = slow,
            dropped_closed = closed,
            "message sent"
        );
        delivered
    }

    /// Removes `id` from the registry and releases its slot; `None` if it was not there.
    fn remove(&self, id: ConnectionId, reason: DisconnectReason) -> Option<Registered> {
        let Some(registered) = self.registry.unregister(id) else {
            debug!(connection_id = %id, reason = reason.as_str(), "not registered");
            return None;
        };
        release(&self.slots);
        ::metrics::gauge!(m::CONNECTIONS_ACTIVE).decrement(1.0);
        ::metrics::counter!(m::CONNECTIONS_CLOSED_TOTAL, m::LABEL_REASON => reason.as_str())
            .increment(1);
        info!(
            connection_id = %id,
            user_id = %registered.connection.user_id,
            reason = reason.as_str(),
            "connection closed"
        );
        Some(registered)
    }

    fn refuse_publish(&self, target: &Target, reason: &'static str) {
        ::metrics::counter!(m::PUBLISH_REFUSED_TOTAL, m::LABEL_REASON => reason).increment(1);
        debug!(target_kind = target.kind(), reason, "publish refused");
    }

    fn reject(&self, reason: &'static str) {
        ::metrics::counter!(m::CONNECTIONS_REJECTED_TOTAL, m::LABEL_REASON => reason).increment(1);
    }
}

/// A reserved connection slot; released on drop (a failed or panicking connect) unless kept.
struct SlotGuard<'a> {
    slots: &'a AtomicUsize,
    kept: bool,
}

impl SlotGuard<'_> {
    /// Keeps the slot: the connection is registered and `disconnect` releases it.
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        if !self.kept {
            release(self.slots);
        }
    }
}

/// Releases one slot (never below zero, so a stray release cannot wrap the counter).
fn release(slots: &AtomicUsize) {
    let _ = slots.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
}

/// A fresh random (version 4) connection id. The 122 random bits come from `rand`'s
/// thread-local CSPRNG (ChaCha12, seeded and periodically reseeded from the OS), which is as
/// unguessable as `Uuid::new_v4` and saves a `getrandom` system call per connection.
fn new_id() -> ConnectionId {
    ConnectionId::from_uuid(uuid::Builder::from_random_bytes(rand::random()).into_uuid())
}

/// Wall-clock now; the epoch if the clock is set before it.
fn now() -> UnixMillis {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    UnixMillis(millis)
}

#[async_trait]
impl RealtimeApi for RealtimeService {
    fn connect(&self, request: ConnectRequest) -> Result<Connection, ConnectError> {
        let ConnectRequest { identity, metadata, sink } = request;
        if !connection_authorized(&identity, &self.config.required_permissions) {
            self.reject(m::REASON_FORBIDDEN);
            info!(user_id = %identity.user_id, "connection rejected: missing a required permission");
            return Err(ConnectError::Forbidden);
        }
        let max = self.config.max_connections;
        let Some(slot) = self.reserve_slot() else {
            self.reject(m::REASON_AT_CAPACITY);
            warn!(user_id = %identity.user_id, max, "connection rejected: at capacity");
            return Err(ConnectError::AtCapacity { max });
        };

        let mut connection = Connection::new(new_id(), &identity, metadata, now());
        let mut attempt = 1;
        loop {
            match self.registry.register(connection.clone(), Arc::clone(&sink)) {
                Ok(()) => break,
                Err(RegisterError::Duplicate(id)) if attempt < MAX_REGISTER_ATTEMPTS => {
                    warn!(connection_id = %id, attempt, "generated connection id already registered; retrying");
                    connection.id = new_id();
                    attempt += 1;
                }
                Err(e) => {
                    // `slot` drops here and releases the reservation.
                    self.reject(m::REASON_REGISTRY_ERROR);
                    error!(user_id = %identity.user_id, error = %e, attempt, "connection rejected: registry refused it");
                    return Err(ConnectError::Unavailable(e.to_string()));
                }
            }
        }
        slot.keep();

        ::metrics::gauge!(m::CONNECTIONS_ACTIVE).increment(1.0);
        ::metrics::counter!(m::CONNECTIONS_OPENED_TOTAL).increment(1);
        info!(connection_id = %connection.id, user_id = %connection.user_id, "connection opened");
        Ok(connection)
    }

    fn unregister(&self, id: ConnectionId, reason: DisconnectReason) -> bool {
        self.remove(id, reason).is_some()
    }

    fn kick(&self, id: ConnectionId) -> bool {
        let Some(registered) = self.remove(id, DisconnectReason::Kicked) else {
            return false;
        };
        registered.sink.close(CloseReason::Kicked);
        true
    }

    fn kick_user(&self, user: &UserId) -> usize {
        // Each connection is removed by id, so one that ends meanwhile is not counted.
        self.registry
            .find_by_user(user)
            .into_iter()
            .filter(|registered| self.kick(registered.connection.id))
            .count()
    }

    fn has_capacity(&self) -> bool {
        self.slots.load(Ordering::Acquire) < self.config.max_connections
    }

    fn connection_count(&self) -> usize {
        self.registry.count()
    }

    async fn publish(&self, target: &Target, message: &Envelope) -> Result<usize, PublishError> {
        if protocol::is_reserved_server_type(message.kind.as_str()) {
            self.refuse_publish(target, m::REASON_RESERVED_TYPE);
            return Err(PublishError::ReservedType(message.kind.clone()));
        }
        // Encoded once per publish, also with no recipient, so the size check does not
        // depend on who happens to be connected.
        let frame = Frame::encode(message);
        let max = self.config.max_message_bytes;
        if frame.len() > max {
            self.refuse_publish(target, m::REASON_TOO_LARGE);
            return Err(PublishError::TooLarge { len: frame.len(), max });
        }
        let recipients = match target {
            Target::User(user) => self.registry.find_by_user(user),
            Target::Role(role) => self.registry.find_by_role(role),
            Target::Connection(id) => self.registry.get(*id).into_iter().collect(),
            Target::Broadcast => self.registry.all(),
            // Topic subscriptions arrive with the stream routing.
            Target::Topic(_) => Vec::new(),
        };
        Ok(self.fan_out(target.kind(), &recipients, &frame, message))
    }
}
