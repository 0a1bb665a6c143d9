//! Benchmarks of realtime: the load generator's core, the bare-stack baseline server and the
//! smoke check, as a library.
//!
//! - [`shard`]: a group of WebSocket client connections in one process (the load generator's
//!   core). It opens authenticated connections from spread 127.0.0.x source addresses, reads
//!   every frame, and counts deliveries per *round* of benchmark messages: exactly-once
//!   accounting, per-delivery latency (from a send timestamp in the payload) and per-message
//!   completion (the last receiver).
//! - [`worker`]: the JSON-lines protocol by which the bench driver (`realtime-bench`) steers
//!   shards living in separate `realtime-loadgen` processes (one process holds at most about
//!   20,000 sockets).
//! - [`baseline`]: a bare tokio-tungstenite broadcast server with realtime's wire format and
//!   buffer settings but no auth, registry or service: the floor of what the stack can do.
//! - [`smoke`]: connects N clients to any server speaking the protocol, publishes a few
//!   broadcasts and user messages over HTTP and reports whether every delivery arrived
//!   exactly once. It asserts nothing about timing.
//!
//! Wire formats shared by all of them live in [`wire`], the check of what a client
//! reconnecting with `since` must receive in [`recovery`], and the HTTP/1.1 client (on
//! hyper) in [`http`].
//!
//! **Architecture Invariant:** this crate depends on no realtime adapter or service (only
//! `realtime-core`); it sees the server only through its wire protocol.

pub mod baseline;
mod error;
pub mod hist;
pub mod http;
pub mod recovery;
pub mod shard;
mod smoke;
pub mod wire;
pub mod worker;

pub use error::BenchError;
pub use smoke::{SmokeOptions, SmokeReport, smoke, smoke_with};
