//! [`RealtimeService`]: admission (cap, permissions, revocations, ids), publishing through
//! the broker, local delivery over the registry, topics, recovery and presence.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use async_trait::async_trait;
use realtime_core::protocol;
use realtime_core::{
    Connection, ConnectionId, ConnectionsOf, Envelope, Frame, Identity, Position, RequestId,
    StreamName, StreamState as StreamPosition, Target, TopicName, UnixMillis, UserId,
    connection_authorized, presence_frame, subscribed_frame, topic_allowed, unsubscribed_frame,
};
use realtime_ports::{
    Broker, CloseReason, ConnectError, ConnectRequest, ConnectionRegistry, DisconnectReason,
    LocalDelivery, NodeReceipts, Presence, PresenceError, PresenceScope, PublishError,
    PublishOptions, PublishReceipt, RealtimeApi, RefreshError, RegisterError, Registered,
    RevokeError, StreamError, SubscribeAuthorizer, SubscribeError, SubscribeOrigin,
    SubscribeRequest, Subscribed, TopicError, TopicMember, UnsubscribeError, UserPresence,
};
use tracing::{debug, error, info, warn};

use crate::config::ServiceConfig;
use crate::metrics as m;
use crate::streams::{Replay, StreamState, implicit_streams, members};

/// How many fresh ids `connect` tries before giving up on a registry that keeps answering
/// [`RegisterError::Duplicate`] (with random v4 ids, a second attempt never happens in practice).
const MAX_REGISTER_ATTEMPTS: usize = 8;

/// The adapters a [`RealtimeService`] runs on.
#[derive(Clone)]
pub struct Adapters {
    /// This node's connections.
    pub registry: Arc<dyn ConnectionRegistry>,
    /// Stream positions, history and fan-out across nodes.
    pub broker: Arc<dyn Broker>,
    /// Who is online and in which topic.
    pub presence: Arc<dyn Presence>,
    /// The application's say on subscribes the token's claim does not allow; `None` refuses
    /// them all.
    pub authorizer: Option<Arc<dyn SubscribeAuthorizer>>,
}

impl Adapters {
    /// A registry, a broker and presence; no authorizer.
    pub fn new(
        registry: Arc<dyn ConnectionRegistry>,
        broker: Arc<dyn Broker>,
        presence: Arc<dyn Presence>,
    ) -> Adapters {
        Adapters { registry, broker, presence, authorizer: None }
    }

    /// With the application's subscribe authorizer.
    pub fn with_authorizer(mut self, authorizer: Arc<dyn SubscribeAuthorizer>) -> Adapters {
        self.authorizer = Some(authorizer);
        self
    }
}

impl fmt::Debug for Adapters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Adapters")
            .field("authorizer", &self.authorizer.is_some())
            .finish_non_exhaustive()
    }
}

/// The realtime service of one node: admits connections into a [`ConnectionRegistry`],
/// publishes through a [`Broker`] and delivers what the broker hands back to this node's
/// connections ([`LocalDelivery`]).
///
/// The connection cap is enforced without races: `connect` reserves a slot in an atomic
/// counter before registering and releases it when registration fails or the connection is
/// disconnected.
pub struct RealtimeService {
    registry: Arc<dyn ConnectionRegistry>,
    broker: Arc<dyn Broker>,
    presence: Arc<dyn Presence>,
    authorizer: Option<Arc<dyn SubscribeAuthorizer>>,
    config: ServiceConfig,
    /// Connections registered through this service plus connects in flight.
    slots: AtomicUsize,
    streams: StreamState,
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
    /// A service over `adapters` with `config`, attached to its broker (which delivers
    /// through it from now on).
    pub fn new(adapters: Adapters, config: ServiceConfig) -> Arc<Self> {
        let Adapters { registry, broker, presence, authorizer } = adapters;
        let service = Arc::new(RealtimeService {
            registry,
            broker,
            presence,
            authorizer,
            config,
            slots: AtomicUsize::new(0),
            streams: StreamState::default(),
        });
        let delivery: Weak<dyn LocalDelivery> = Arc::downgrade(&service) as Weak<dyn LocalDelivery>;
        service.broker.attach(delivery);
        service
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

    /// Hands `frame` to `recipients` (one frame clone per recipient, or into their hold
    /// while they recover `stream`) and records the outcome. Returns how many accepted it.
    fn fan_out(
        &self,
        kind: &'static str,
        stream: Option<&StreamName>,
        position: Option<&Position>,
        frame: &Frame,
        recipients: impl FnOnce() -> Vec<Registered>,
    ) -> usize {
        // The hold lock orders stream deliveries with holds and releases; a message to one
        // connection is in no stream, so no hold applies and the lock is not taken.
        let guard = stream.map(|_| self.streams.for_delivery());
        let no_holds = crate::streams::Holds::default();
        let holds = guard.as_deref().unwrap_or(&no_holds);
        let recipients = recipients();
        if recipients.is_empty() {
            debug!(stream_kind = kind, delivered = 0, "no recipients");
            return 0;
        }
        let offset = position.map(|p| p.offset);
        let max_held = self.config.max_recovery_buffer;
        let outcome = holds.hand_out(stream, offset, frame, &recipients, max_held);
        drop(guard);
        ::metrics::counter!(m::MESSAGES_DELIVERED_TOTAL, m::LABEL_TARGET => kind)
            .increment(outcome.delivered as u64);
        if outcome.slow > 0 {
            ::metrics::counter!(m::FRAMES_DROPPED_TOTAL, m::LABEL_REASON => m::REASON_SLOW_CONSUMER)
                .increment(outcome.slow);
        }
        if outcome.closed > 0 {
            ::metrics::counter!(m::FRAMES_DROPPED_TOTAL, m::LABEL_REASON => m::REASON_CLOSED)
                .increment(outcome.closed);
        }
        debug!(
            stream_kind = kind,
            recipients = recipients.len(),
            delivered = outcome.delivered,
            dropped_slow_consumer = outcome.slow,
            dropped_closed = outcome.closed,
            "message delivered"
        );
        outcome.delivered
    }

    /// Hands `frame` to connection `id` if it is on this node (how many took it: 0 or 1);
    /// `None` when it is not. One connection is in no stream, so no hold applies.
    fn deliver_local(&self, id: ConnectionId, frame: &Frame) -> Option<usize> {
        let local = self.registry.get(id)?;
        Some(self.fan_out("connection", None, None, frame, || vec![local]))
    }

    /// Removes `id` from the registry, its streams, its holds and presence, and releases its
    /// slot; `None` if it was not there.
    fn remove(&self, id: ConnectionId, reason: DisconnectReason) -> Option<Registered> {
        let topics = self.registry.topics_of(id);
        let Some(registered) = self.registry.unregister(id) else {
            debug!(connection_id = %id, reason = reason.as_str(), "not registered");
            return None;
        };
        let connection = &registered.connection;
        let mut streams = implicit_streams(connection);
        streams.extend(topics.iter().cloned().map(StreamName::Topic));
        self.streams.unhold(id, &streams);
        self.streams.leave(&*self.broker, &streams);
        self.presence.leave(PresenceScope::Online, &connection.user_id, id);
        for topic in &topics {
            self.left_topic(topic, &connection.user_id, id);
        }
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

    /// The checks every publish and reply passes before any recipient: a type the protocol
    /// reserves is refused, then the message is encoded once (with `reply_id`, for a reply),
    /// also with no recipient so that the size check does not depend on who happens to be
    /// connected, and refused when over the limit with what the broker adds for `stream`.
    /// Counts the publish.
    fn checked_frame(
        &self,
        target: &Target,
        stream: Option<&StreamName>,
        message: &Envelope,
        reply_id: Option<&RequestId>,
    ) -> Result<Frame, PublishError> {
        if protocol::is_reserved_server_type(message.kind.as_str()) {
            self.refuse_publish(target, m::REASON_RESERVED_TYPE);
            return Err(PublishError::ReservedType(message.kind.clone()));
        }
        let frame = Frame::encode_reply(message, reply_id);
        let len = frame.len() + stream.map_or(0, position_overhead);
        let max = self.config.max_message_bytes;
        if len > max {
            self.refuse_publish(target, m::REASON_TOO_LARGE);
            return Err(PublishError::TooLarge { len, max });
        }
        ::metrics::counter!(m::MESSAGES_PUBLISHED_TOTAL, m::LABEL_TARGET => target.kind())
            .increment(1);
        Ok(frame)
    }

    fn refuse_publish(&self, target: &Target, reason: &'static str) {
        ::metrics::counter!(m::PUBLISH_REFUSED_TOTAL, m::LABEL_REASON => reason).increment(1);
        debug!(target_kind = target.kind(), reason, "publish refused");
    }

    fn reject(&self, reason: &'static str) {
        ::metrics::counter!(m::CONNECTIONS_REJECTED_TOTAL, m::LABEL_REASON => reason).increment(1);
    }

    /// Whether `topic`'s subscribers get presence events.
    fn presence_events(&self, topic: &TopicName) -> bool {
        self.config.presence_event_prefixes.iter().any(|prefix| topic.as_str().starts_with(prefix))
    }

    /// `id` of `user` left `topic`: presence, and the leave event after the user's last.
    fn left_topic(&self, topic: &TopicName, user: &UserId, id: ConnectionId) {
        if self.presence.leave(PresenceScope::Topic(topic), user, id) && self.presence_events(topic)
        {
            let stream = StreamName::Topic(topic.clone());
            self.broker.publish_ephemeral(&stream, presence_frame(false, topic, user));
        }
    }

    /// `id` of `user` joined `topic`: presence, and the join event for the user's first.
    fn joined_topic(&self, topic: &TopicName, user: &UserId, id: ConnectionId) {
        if self.presence.join(PresenceScope::Topic(topic), user, id) && self.presence_events(topic)
        {
            let stream = StreamName::Topic(topic.clone());
            self.broker.publish_ephemeral(&stream, presence_frame(true, topic, user));
        }
    }

    /// Whether `identity`'s token was revoked (issued before the user's latest revocation,
    /// or without an `iat` while a revocation stands).
    fn is_revoked(&self, identity: &Identity) -> bool {
        self.broker
            .revoked_before(&identity.user_id)
            .is_some_and(|before| identity.issued_at.is_none_or(|issued| issued < before))
    }

    /// Closes this node's connections of `user` with a token issued before `issued_before`.
    fn revoke_local(&self, user: &UserId, issued_before: UnixMillis) -> usize {
        self.registry
            .find_by_user(user)
            .into_iter()
            .filter(|r| r.connection.issued_at.is_none_or(|issued| issued < issued_before))
            .filter(|r| {
                let Some(registered) = self.remove(r.connection.id, DisconnectReason::Revoked)
                else {
                    return false;
                };
                registered.sink.close(CloseReason::Revoked);
                true
            })
            .count()
    }

    /// The implicit streams' part of `open_streams`, for one stream.
    async fn open_stream(
        &self,
        stream: &StreamName,
        since: Option<&Position>,
    ) -> Result<(Replay, Option<StreamPosition>), StreamError> {
        let read = self
            .broker
            .recover(stream, since, self.config.max_recovery)
            .await
            .map_err(|e| StreamError::Unavailable(e.to_string()))?;
        let recovered = since.is_some() && read.publications.is_some();
        if since.is_some() {
            let outcome = if recovered { m::OUTCOME_RECOVERED } else { m::OUTCOME_NOT_RECOVERED };
            ::metrics::counter!(m::RECOVERIES_TOTAL, m::LABEL_OUTCOME => outcome).increment(1);
        }
        let state = read.position.clone().map(|position| StreamPosition {
            stream: stream.clone(),
            position,
            recovered,
        });
        let replay = Replay {
            stream: stream.clone(),
            top: read.position,
            frames: read.publications.unwrap_or_default(),
        };
        Ok((replay, state))
    }

    /// Undoes a subscribe that failed after the registry took it.
    fn undo_subscribe(&self, id: ConnectionId, topic: &TopicName, user: &UserId) {
        if self.registry.unsubscribe(id, topic) {
            self.streams.leave(&*self.broker, &[StreamName::Topic(topic.clone())]);
            self.left_topic(topic, user, id);
        }
    }
}

/// A subscribe between its hold and its release: dropped before [`keep`](Self::keep) (an
/// error, or the future cancelled), it stops holding and undoes a new subscription.
struct PendingSubscribe<'a> {
    service: &'a RealtimeService,
    id: ConnectionId,
    topic: &'a TopicName,
    user: &'a UserId,
    newly: bool,
    armed: bool,
}

impl PendingSubscribe<'_> {
    /// The history was read: the release follows at once, nothing to undo.
    fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for PendingSubscribe<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let stream = StreamName::Topic(self.topic.clone());
        self.service.streams.unhold(self.id, std::slice::from_ref(&stream));
        if self.newly {
            self.service.undo_subscribe(self.id, self.topic, self.user);
        }
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
    UnixMillis::from_system_time(SystemTime::now())
}

#[async_trait]
impl RealtimeApi for RealtimeService {
    fn connect(&self, request: ConnectRequest) -> Result<Arc<Connection>, ConnectError> {
        let ConnectRequest { identity, metadata, sink } = request;
        if !connection_authorized(&identity, &self.config.required_permissions) {
            self.reject(m::REASON_FORBIDDEN);
            info!(user_id = %identity.user_id, "connection rejected: missing a required permission");
            return Err(ConnectError::Forbidden);
        }
        if self.is_revoked(&identity) {
            self.reject(m::REASON_REVOKED);
            info!(user_id = %identity.user_id, "connection rejected: token revoked");
            return Err(ConnectError::Revoked);
        }
        let max = self.config.max_connections;
        let Some(slot) = self.reserve_slot() else {
            self.reject(m::REASON_AT_CAPACITY);
            warn!(user_id = %identity.user_id, max, "connection rejected: at capacity");
            return Err(ConnectError::AtCapacity { max });
        };

        // One record, shared by the registry and the transport's session.
        let mut connection = Arc::new(Connection::new(new_id(), &identity, metadata, now()));
        let streams = implicit_streams(&connection);
        let mut attempt = 1;
        loop {
            // Held from before the registration: nothing live reaches the connection before
            // `open_streams` has queued what it recovers.
            self.streams.hold(connection.id, &streams);
            match self.registry.register(Arc::clone(&connection), Arc::clone(&sink)) {
                Ok(()) => break,
                Err(RegisterError::Duplicate(id)) if attempt < MAX_REGISTER_ATTEMPTS => {
                    warn!(connection_id = %id, attempt, "generated connection id already registered; retrying");
                    self.streams.unhold(id, &streams);
                    // The refused record was dropped: this changes the only copy.
                    Arc::make_mut(&mut connection).id = new_id();
                    attempt += 1;
                }
                Err(e) => {
                    // `slot` drops here and releases the reservation.
                    self.streams.unhold(connection.id, &streams);
                    self.reject(m::REASON_REGISTRY_ERROR);
                    error!(user_id = %identity.user_id, error = %e, attempt, "connection rejected: registry refused it");
                    return Err(ConnectError::Unavailable(e.to_string()));
                }
            }
        }
        slot.keep();
        self.streams.enter(&*self.broker, &streams);
        self.presence.join(PresenceScope::Online, &connection.user_id, connection.id);

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

    async fn publish_with(
        &self,
        target: &Target,
        message: &Envelope,
        options: &PublishOptions,
    ) -> Result<PublishReceipt, PublishError> {
        let stream = target.stream();
        let frame = self.checked_frame(target, stream.as_ref(), message, None)?;
        let unavailable = |e: realtime_ports::BrokerError| {
            self.refuse_publish(target, m::REASON_UNAVAILABLE);
            PublishError::Unavailable(e.to_string())
        };
        let Some(stream) = stream else {
            let Target::Connection(id) = target else {
                return Err(PublishError::Unavailable("a target without a stream".to_owned()));
            };
            let local = self.deliver_local(*id, &frame);
            let (delivered, nodes) = if let Some(delivered) = local {
                (delivered, None)
            } else if options.receipts {
                let within = self.config.receipt_timeout;
                self.broker
                    .send_to_connection_counted(*id, frame, within)
                    .await
                    .map_err(unavailable)?
            } else {
                (self.broker.send_to_connection(*id, frame).await.map_err(unavailable)?, None)
            };
            return Ok(PublishReceipt {
                delivered,
                stream: None,
                position: None,
                duplicate: false,
                nodes: options.receipts.then(|| nodes.unwrap_or(ONE_NODE)),
            });
        };
        let key = options.idempotency_key.as_ref();
        let published = if options.receipts {
            let within = self.config.receipt_timeout;
            self.broker.publish_counted(&stream, frame, key, within).await
        } else {
            self.broker.publish(&stream, frame, key).await
        }
        .map_err(unavailable)?;
        Ok(PublishReceipt {
            delivered: published.delivered,
            stream: Some(stream),
            position: published.position,
            duplicate: published.duplicate,
            nodes: options.receipts.then(|| published.nodes.unwrap_or(ONE_NODE)),
        })
    }

    async fn reply(
        &self,
        id: ConnectionId,
        reply_id: Option<RequestId>,
        message: &Envelope,
    ) -> Result<usize, PublishError> {
        let target = Target::Connection(id);
        let frame = self.checked_frame(&target, None, message, reply_id.as_ref())?;
        // A request comes from a connection of this node: when it is not registered here any
        // more, it is gone and nobody takes the reply.
        let delivered = self.deliver_local(id, &frame);
        if delivered.is_none() {
            debug!(connection_id = %id, "reply to a connection that is gone");
        }
        Ok(delivered.unwrap_or(0))
    }

    async fn open_streams(
        &self,
        id: ConnectionId,
        since: &BTreeMap<StreamName, Position>,
    ) -> Result<Vec<StreamPosition>, StreamError> {
        let Some(registered) = self.registry.get(id) else {
            return Err(StreamError::NotConnected);
        };
        let streams = implicit_streams(&registered.connection);
        let mut replays = Vec::with_capacity(streams.len());
        let mut positions = Vec::with_capacity(streams.len());
        for stream in &streams {
            let (replay, position) = self.open_stream(stream, since.get(stream)).await?;
            replays.push(replay);
            positions.extend(position);
        }
        self.streams.release(id, &*registered.sink, None, replays);
        Ok(positions)
    }

    async fn subscribe(&self, request: SubscribeRequest) -> Result<Subscribed, SubscribeError> {
        let SubscribeRequest { connection: id, topic, since, reply_id, origin } = request;
        let Some(registered) = self.registry.get(id) else {
            return Err(SubscribeError::NotConnected);
        };
        let user = registered.connection.user_id.clone();
        if let SubscribeOrigin::Client { topics } = &origin {
            let allowed = topic_allowed(topics, &topic)
                || match &self.authorizer {
                    Some(authorizer) => authorizer.authorize(&registered.connection, &topic).await,
                    None => false,
                };
            if !allowed {
                ::metrics::counter!(m::SUBSCRIBES_REFUSED_TOTAL, m::LABEL_REASON => m::REASON_FORBIDDEN)
                    .increment(1);
                debug!(connection_id = %id, topic = topic.as_str(), "subscribe refused: forbidden");
                return Err(SubscribeError::Forbidden);
            }
        }
        let stream = StreamName::Topic(topic.clone());
        let streams = std::slice::from_ref(&stream);
        self.streams.hold(id, streams);
        let max_topics = self.config.max_topics_per_connection;
        let newly = match self.registry.subscribe(id, &topic, max_topics) {
            Ok(newly) => newly,
            Err(error) => {
                self.streams.unhold(id, streams);
                return Err(match error {
                    TopicError::TooManyTopics { max } => {
                        ::metrics::counter!(m::SUBSCRIBES_REFUSED_TOTAL, m::LABEL_REASON => m::REASON_TOO_MANY_TOPICS)
                            .increment(1);
                        SubscribeError::TooManyTopics { max }
                    }
                    _ => SubscribeError::NotConnected,
                });
            }
        };
        if newly {
            self.streams.enter(&*self.broker, streams);
            self.joined_topic(&topic, &user, id);
        }
        // Undoes the hold (and a new subscription) if this future is dropped while the
        // history is read (the transport's timeout), so that nothing stays held for good.
        let pending =
            PendingSubscribe { service: self, id, topic: &topic, user: &user, newly, armed: true };
        let read = self.broker.recover(&stream, since.as_ref(), self.config.max_recovery).await;
        let read = match read {
            Ok(read) => read,
            Err(error) => {
                drop(pending);
                warn!(connection_id = %id, topic = topic.as_str(), %error, "subscribe failed: history unavailable");
                return Err(SubscribeError::Unavailable(error.to_string()));
            }
        };
        pending.keep();
        let recovered = since.is_some() && read.publications.is_some();
        if since.is_some() {
            let outcome = if recovered { m::OUTCOME_RECOVERED } else { m::OUTCOME_NOT_RECOVERED };
            ::metrics::counter!(m::RECOVERIES_TOTAL, m::LABEL_OUTCOME => outcome).increment(1);
        }
        let reply = subscribed_frame(reply_id.as_ref(), &topic, read.position.as_ref(), recovered);
        let replay = Replay {
            stream: stream.clone(),
            top: read.position.clone(),
            frames: read.publications.unwrap_or_default(),
        };
        self.streams.release(id, &*registered.sink, Some(reply), vec![replay]);
        debug!(connection_id = %id, topic = topic.as_str(), recovered, "subscribed");
        Ok(Subscribed { position: read.position, recovered })
    }

    async fn unsubscribe(
        &self,
        id: ConnectionId,
        topic: &TopicName,
        reply_id: Option<RequestId>,
    ) -> Result<(), UnsubscribeError> {
        let Some(registered) = self.registry.get(id) else {
            return Err(UnsubscribeError::NotConnected);
        };
        if !self.registry.unsubscribe(id, topic) {
            return Err(UnsubscribeError::NotSubscribed);
        }
        // Deliveries that saw the subscription finish first, so `unsubscribed` is the last
        // frame of the topic this connection gets.
        self.streams.fence();
        self.streams.leave(&*self.broker, &[StreamName::Topic(topic.clone())]);
        self.left_topic(topic, &registered.connection.user_id, id);
        let _ = registered.sink.send(unsubscribed_frame(reply_id.as_ref(), topic));
        debug!(connection_id = %id, topic = topic.as_str(), "unsubscribed");
        Ok(())
    }

    async fn subscribe_connections(
        &self,
        target: &ConnectionsOf,
        topic: &TopicName,
    ) -> Result<usize, SubscribeError> {
        let ids: Vec<ConnectionId> = match target {
            ConnectionsOf::User(user) => {
                self.registry.find_by_user(user).iter().map(|r| r.connection.id).collect()
            }
            ConnectionsOf::Connection(id) => vec![*id],
        };
        let single = matches!(target, ConnectionsOf::Connection(_));
        let mut subscribed = 0;
        for id in ids {
            let request = SubscribeRequest {
                connection: id,
                topic: topic.clone(),
                since: None,
                reply_id: None,
                origin: SubscribeOrigin::Server,
            };
            match self.subscribe(request).await {
                Ok(_) => subscribed += 1,
                // Gone meanwhile: not counted.
                Err(SubscribeError::NotConnected) => {}
                Err(error @ SubscribeError::TooManyTopics { .. }) if single => return Err(error),
                Err(SubscribeError::TooManyTopics { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(subscribed)
    }

    async fn unsubscribe_connections(&self, target: &ConnectionsOf, topic: &TopicName) -> usize {
        let ids: Vec<ConnectionId> = match target {
            ConnectionsOf::User(user) => {
                self.registry.find_by_user(user).iter().map(|r| r.connection.id).collect()
            }
            ConnectionsOf::Connection(id) => vec![*id],
        };
        let mut count = 0;
        for id in ids {
            if self.unsubscribe(id, topic, None).await.is_ok() {
                count += 1;
            }
        }
        count
    }

    fn refresh(&self, id: ConnectionId, identity: &Identity) -> Result<(), RefreshError> {
        let Some(registered) = self.registry.get(id) else {
            return Err(RefreshError::NotConnected);
        };
        if registered.connection.user_id != identity.user_id {
            return Err(RefreshError::DifferentUser);
        }
        if self.is_revoked(identity) {
            return Err(RefreshError::Revoked);
        }
        Ok(())
    }

    async fn revoke(&self, user: &UserId, issued_before: UnixMillis) -> Result<usize, RevokeError> {
        let ttl = u64::try_from(self.config.revocation_ttl.as_millis()).unwrap_or(u64::MAX);
        let keep_until = UnixMillis(now().0.saturating_add(ttl));
        self.broker
            .revoke(user, issued_before, keep_until)
            .await
            .map_err(|e| RevokeError::Unavailable(e.to_string()))?;
        let closed = self.revoke_local(user, issued_before);
        info!(user_id = %user, closed, "tokens revoked");
        Ok(closed)
    }

    async fn user_presence(&self, user: &UserId) -> Result<UserPresence, PresenceError> {
        self.presence.user(user).await
    }

    async fn topic_presence(&self, topic: &TopicName) -> Result<Vec<TopicMember>, PresenceError> {
        self.presence.topic(topic).await
    }

    async fn online_count(&self) -> Result<usize, PresenceError> {
        self.presence.online_count().await
    }

    fn broker_health(&self) -> realtime_ports::BrokerHealth {
        self.broker.health()
    }
}

impl LocalDelivery for RealtimeService {
    fn deliver(&self, stream: &StreamName, position: Option<&Position>, frame: &Frame) -> usize {
        let registry = &*self.registry;
        self.fan_out(stream.kind(), Some(stream), position, frame, || members(registry, stream))
    }

    fn deliver_to_connection(&self, id: ConnectionId, frame: &Frame) -> bool {
        self.deliver_local(id, frame).is_some_and(|delivered| delivered > 0)
    }

    fn revoke(&self, user: &UserId, issued_before: UnixMillis) -> usize {
        self.revoke_local(user, issued_before)
    }

    fn lost(&self, stream: &StreamName) -> usize {
        let holds = self.streams.for_delivery();
        let recipients = members(&*self.registry, stream);
        // Those still recovering are counted when their release closes them.
        let closed_now = holds.lose(stream, &recipients);
        drop(holds);
        ::metrics::counter!(m::STREAM_LAGGED_TOTAL).increment(closed_now as u64);
        warn!(%stream, connections = recipients.len(), "the broker may have missed publications: closing the stream's connections so they recover");
        recipients.len()
    }
}

/// The receipt of an in-process broker: this node is the cluster.
const ONE_NODE: NodeReceipts = NodeReceipts { answered: 1, expected: 1 };

/// The most bytes [`Frame::with_position`] adds for `stream`: the field names and
/// punctuation, the name, a 20-digit offset and a longest epoch.
fn position_overhead(stream: &StreamName) -> usize {
    const FIXED: usize =
        r#","stream":"","offset":,"epoch":"""#.len() + 20 + realtime_core::Epoch::MAX_LEN;
    FIXED + stream.to_string().len()
}
