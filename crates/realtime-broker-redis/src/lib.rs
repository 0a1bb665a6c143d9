//! The Redis adapter of the [`Broker`](realtime_ports::Broker) port: [`RedisBroker`], for
//! many nodes that behave as one server, on one Redis or sharded over several. Redis 7 or
//! later.
//!
//! - Keys of one stream share a hash tag, `<prefix>:{<stream>}:meta|hist|idem:<key>`, and
//!   its pub/sub channel is `<prefix>:{<stream>}:ch`; one Redis Cluster slot holds them all.
//! - A publication is one Lua script: idempotency, epoch, offset, exactly trimmed history,
//!   PUBLISH. Its position therefore never depends on which node published it.
//! - A node subscribes to a stream's channel while it is interested in the stream
//!   (`interest`), and to three node-wide channels: `<prefix>:conn` (messages to one
//!   connection), `<prefix>:control` (revocations) and `<prefix>:node:<id>` (its own:
//!   barriers, receipts and idle probes; with several shards, on each of them).
//! - The pub/sub connection (one per shard) is supervised: lost, killed or silent (an idle
//!   probe is not heard back), it is opened again with full-jitter backoff, every wanted
//!   channel is subscribed again in batches, and every stream that may have missed
//!   publications while it was down is reported to the node
//!   ([`LocalDelivery::lost`](realtime_ports::LocalDelivery::lost)), which closes its
//!   clients so they recover from history.
//!
//! - Sharding: [`RedisBrokerConfig::url`] may list several Redis servers (comma-separated),
//!   one shard each. A stream goes to shard `jump(fnv1a64(name), shards)` (Lamping and
//!   Veach's jump consistent hash), and everything about it goes there: its keys, its
//!   publish and recover scripts, its SUBSCRIBE and gap tracking, and its barriers and
//!   receipts (on that shard's `<prefix>:node:<id>`, which every shard's pub/sub connection
//!   subscribes, so a barrier follows the stream's messages on one connection). Each shard
//!   has its own command and supervised pub/sub connections. What is node-wide is on the
//!   first shard: `<prefix>:conn`, `<prefix>:control`, the revocation keys and presence. A
//!   shard that is down refuses its own streams only. Every node lists the same URLs in the
//!   same order, and changes the list together with the others: a stream that moves to
//!   another shard starts again there in a new epoch (its clients get `recovered: false`).
//!
//! - [`RedisPresence`] (from [`RedisBroker::presence`]): presence across nodes, in sorted
//!   sets scored by expiry and refreshed by a heartbeat, so a crashed node's connections
//!   disappear within the TTL.
//!
//! **Architecture Invariant:** the pub/sub read loop never awaits: stream messages go to
//! bounded worker queues chosen by channel (a full queue drops the message and reports the
//! loss); the workers check each publication's position and call the node's
//! `LocalDelivery`, which only enqueues. No publication is skipped silently.
//!
//! **Architecture Invariant:** no error text holds the Redis URL (it may carry a password).

mod broker;
pub mod metrics;
mod presence;
mod pubsub;
mod scripts;
mod shard;
mod wire;

pub use broker::{BrokerState, ConnectError, RedisBroker, RedisBrokerConfig};
pub use metrics::describe_metrics;
pub use presence::RedisPresence;
