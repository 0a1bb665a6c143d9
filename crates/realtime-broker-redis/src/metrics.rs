//! Names of the metrics the Redis broker emits, and [`describe_metrics`].

use ::metrics::{Unit, describe_counter, describe_histogram};

/// Counter: pub/sub connections re-established after one was lost.
pub const RECONNECTS_TOTAL: &str = "realtime_redis_reconnects_total";
/// Counter: stream messages dropped because a worker queue was full (each reported to the
/// stream's clients as a loss).
pub const DROPPED_TOTAL: &str = "realtime_redis_pubsub_dropped_total";
/// Counter: possible losses reported to the node, by [`LABEL_REASON`]: `skipped`,
/// `went_back`, `epoch_changed`, `dropped` or `outage`.
pub const GAPS_TOTAL: &str = "realtime_redis_gaps_total";
/// Histogram: seconds from a publication's PUBLISH in Redis to its worker on this node.
pub const PUBSUB_LAG_SECONDS: &str = "realtime_redis_pubsub_lag_seconds";
/// Histogram: seconds to (re)connect the pub/sub connection and resubscribe every channel.
pub const RESUBSCRIBE_SECONDS: &str = "realtime_redis_resubscribe_seconds";
/// Label: why.
pub const LABEL_REASON: &str = "reason";

/// Registers the descriptions of the metrics above with the installed recorder.
pub fn describe_metrics() {
    describe_counter!(RECONNECTS_TOTAL, Unit::Count, "Redis pub/sub reconnections.");
    describe_counter!(DROPPED_TOTAL, Unit::Count, "Redis pub/sub messages dropped (queue full).");
    describe_counter!(GAPS_TOTAL, Unit::Count, "Possible losses reported to clients, by reason.");
    describe_histogram!(PUBSUB_LAG_SECONDS, Unit::Seconds, "Redis PUBLISH to local delivery.");
    describe_histogram!(
        RESUBSCRIBE_SECONDS,
        Unit::Seconds,
        "Time to reconnect and resubscribe the Redis pub/sub connection."
    );
}
