//! The Redis adapter of the [`Broker`](realtime_ports::Broker) port: [`RedisBroker`], for
//! many nodes that behave as one server. Redis 7 or later.
//!
//! - Keys of one stream share a hash tag, `<prefix>:{<stream>}:meta|hist|idem:<key>`, and
//!   its pub/sub channel is `<prefix>:{<stream>}:ch`; one Redis Cluster slot holds them all.
//! - A publication is one Lua script: idempotency, epoch, offset, exactly trimmed history,
//!   PUBLISH. Its position therefore never depends on which node published it.
//! - A node subscribes to a stream's channel while it is interested in the stream
//!   (`interest`), and to two node-wide channels: `<prefix>:conn` (messages to one
//!   connection) and `<prefix>:control` (revocations).
//!
//! **Architecture Invariant:** the pub/sub read loop never awaits a consumer: it calls the
//! node's `LocalDelivery`, which only enqueues.
//!
//! **Architecture Invariant:** no error text holds the Redis URL (it may carry a password).

mod broker;
mod pubsub;
mod scripts;
mod wire;

pub use broker::{ConnectError, RedisBroker, RedisBrokerConfig};
