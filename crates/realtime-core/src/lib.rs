//! The pure domain of realtime.
//!
//! This crate contains a fully deterministic implementation of realtime's domain logic:
//! validated identifiers, identities from verified claims, connections, message envelopes,
//! wire frames, the decoding of client frames, token extraction, the routing rule, and the
//! per-connection timers and inbound rate limit as state machines fed `now`.
//! It contains no networking code, never spawns tasks, never reads the clock and never draws
//! random numbers: time and generated ids come in as arguments. The shell (transport, service,
//! adapters) owns sockets, clocks and tasks and drives this crate with plain values.
//!
//! **Architecture Invariant:** nothing here performs I/O or depends on an async runtime; the
//! check lives in `xtask` (`cargo xtask test`) and in this crate's `clippy.toml`.

mod auth;
mod connection;
mod connection_set;
mod decode;
mod envelope;
mod frame;
mod ids;
mod liveness;
mod presence;
pub mod protocol;
mod rate;
mod request;
mod routing;
mod stream;
mod time;
mod token;
mod wire;

pub use auth::{ClaimsError, Identity, RawClaims, connection_authorized};
pub use connection::Connection;
pub use connection_set::ConnectionSet;
pub use decode::{
    ClientMessage, DecodeError, DecodeFailure, DecodeLimits, decode_client_text, request_id_of,
};
pub use envelope::{Envelope, EnvelopeError, Payload, Target};
pub use frame::Frame;
pub use ids::{
    ConnectionId, InvalidConnectionId, InvalidMessageType, InvalidPermission, InvalidRole,
    InvalidTopicName, InvalidUserId, MessageType, Permission, Role, TopicName, UserId,
};
pub use liveness::{Liveness, LivenessAction, LivenessConfig, LivenessConfigError};
pub use presence::PresenceBook;
pub use rate::{REFUSALS_BEFORE_CLOSE, RateLimitConfig, RateLimiter, RateVerdict};
pub use request::{
    ConnectionsOf, IdempotencyKey, InvalidIdempotencyKey, KickTarget, PublishRequest, RequestError,
    RevokeRequest, TopicRequest,
};
pub use routing::{route, route_stream};
pub use stream::{
    BROADCAST, Epoch, HistoryLimits, HistoryPolicy, InvalidEpoch, InvalidStreamName, Position,
    Publication, Recovery, StreamHistory, StreamName, TopicPattern, topic_allowed,
};
pub use time::UnixMillis;
pub use token::{
    BEARER_PREFIX, BearerToken, QueryParamError, SUBPROTOCOL, SubprotocolError, TokenQueryError,
    query_param, token_from_query, token_from_subprotocols,
};
pub use wire::{
    InvalidRequestId, RequestId, SINCE_MAX_BYTES, SINCE_MAX_STREAMS, SinceError, StreamState,
    connected_frame, error_frame, parse_since, presence_frame, refreshed_frame, subscribed_frame,
    unsubscribed_frame,
};
