//! What the Redis broker's tests share: a runtime for the sync `#[test]`s and a message.

use realtime_core::{Envelope, Frame};

/// A two-worker runtime (the broker's pub/sub task runs beside the test).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

/// The encoded envelope `{"type":"n","payload":{}}`.
pub fn message() -> Frame {
    let envelope =
        Envelope::from_parts("n", serde_json::json!({})).unwrap_or_else(|e| panic!("{e}"));
    Frame::encode(&envelope)
}
