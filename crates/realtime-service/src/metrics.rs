//! Names of the metrics the service emits, their labels, and [`describe_metrics`].
//!
//! Names follow Prometheus conventions (`snake_case`, counters end in `_total`). The
//! transport counts failed handshakes as `realtime_handshake_failures_total{reason}`; that
//! name is listed here for reference only, since the transport does not depend on this crate.

use ::metrics::{Unit, describe_counter, describe_gauge};

/// Gauge: connections currently registered through this service.
pub const CONNECTIONS_ACTIVE: &str = "realtime_connections_active";
/// Counter: connections admitted.
pub const CONNECTIONS_OPENED_TOTAL: &str = "realtime_connections_opened_total";
/// Counter: connections removed, by [`LABEL_REASON`] (a `DisconnectReason::as_str` value).
pub const CONNECTIONS_CLOSED_TOTAL: &str = "realtime_connections_closed_total";
/// Counter: connections refused, by [`LABEL_REASON`]: [`REASON_AT_CAPACITY`],
/// [`REASON_FORBIDDEN`] or [`REASON_REGISTRY_ERROR`].
pub const CONNECTIONS_REJECTED_TOTAL: &str = "realtime_connections_rejected_total";
/// Counter: sends (one per call, whatever the number of recipients), by [`LABEL_TARGET`].
pub const MESSAGES_PUBLISHED_TOTAL: &str = "realtime_messages_published_total";
/// Counter: frames accepted by recipients' sinks, by [`LABEL_TARGET`]. Incremented once per
/// send, by the number of sinks that accepted the frame.
pub const MESSAGES_DELIVERED_TOTAL: &str = "realtime_messages_delivered_total";
/// Counter: frames a sink refused, by [`LABEL_REASON`]: [`REASON_SLOW_CONSUMER`] (queue
/// full; the sink closes the connection) or [`REASON_CLOSED`].
pub const FRAMES_DROPPED_TOTAL: &str = "realtime_frames_dropped_total";
/// Counter: publishes refused before any recipient, by [`LABEL_REASON`]:
/// [`REASON_RESERVED_TYPE`] or [`REASON_TOO_LARGE`].
pub const PUBLISH_REFUSED_TOTAL: &str = "realtime_publish_refused_total";
/// Counter: recoveries asked for (a `since` on connect or subscribe), by [`LABEL_OUTCOME`]:
/// [`OUTCOME_RECOVERED`] or [`OUTCOME_NOT_RECOVERED`].
pub const RECOVERIES_TOTAL: &str = "realtime_recoveries_total";
/// Counter: connections closed because more live publications arrived during their
/// recovery than the buffer holds, a held publication did not continue the stream, or the
/// broker reported that it may have missed publications of one of their streams.
pub const STREAM_LAGGED_TOTAL: &str = "realtime_stream_lagged_total";
/// Counter: subscribes refused, by [`LABEL_REASON`]: [`REASON_FORBIDDEN`] or
/// [`REASON_TOO_MANY_TOPICS`].
pub const SUBSCRIBES_REFUSED_TOTAL: &str = "realtime_subscribes_refused_total";

/// Label key: why (a connection closed or was rejected, a frame was dropped).
pub const LABEL_REASON: &str = "reason";
/// Label key: the kind of target of a send (`user`, `role`, `connection`, `broadcast`).
pub const LABEL_TARGET: &str = "target";

/// Label key: how a recovery ended.
pub const LABEL_OUTCOME: &str = "outcome";
/// Recovery outcome: every missed publication was replayed.
pub const OUTCOME_RECOVERED: &str = "recovered";
/// Recovery outcome: history no longer covered the gap (or the epoch changed).
pub const OUTCOME_NOT_RECOVERED: &str = "not_recovered";

/// Rejection reason: the connection cap was reached.
pub const REASON_AT_CAPACITY: &str = "at_capacity";
/// Rejection reason: a required permission was missing.
pub const REASON_FORBIDDEN: &str = "forbidden";
/// Rejection reason: the token was revoked.
pub const REASON_REVOKED: &str = "revoked";
/// Subscribe refusal: the connection holds its maximum number of topics.
pub const REASON_TOO_MANY_TOPICS: &str = "too_many_topics";
/// Publish refusal: the broker could not take the message.
pub const REASON_UNAVAILABLE: &str = "unavailable";
/// Rejection reason: the registry refused the connection (repeated duplicate ids).
pub const REASON_REGISTRY_ERROR: &str = "registry_error";
/// Drop reason: the recipient's outbound queue was full.
pub const REASON_SLOW_CONSUMER: &str = "slow_consumer";
/// Drop reason: the recipient's connection was closed or closing.
pub const REASON_CLOSED: &str = "closed";
/// Publish refusal: the message type is reserved for the protocol.
pub const REASON_RESERVED_TYPE: &str = "reserved_type";
/// Publish refusal: the encoded message is over the size limit.
pub const REASON_TOO_LARGE: &str = "too_large";

/// Describes every metric above to the installed recorder (call once, after installing it).
pub fn describe_metrics() {
    describe_gauge!(CONNECTIONS_ACTIVE, Unit::Count, "Connections currently registered.");
    describe_counter!(CONNECTIONS_OPENED_TOTAL, Unit::Count, "Connections admitted.");
    describe_counter!(CONNECTIONS_CLOSED_TOTAL, Unit::Count, "Connections removed, by reason.");
    describe_counter!(
        CONNECTIONS_REJECTED_TOTAL,
        Unit::Count,
        "Connections refused (at_capacity, forbidden, registry_error)."
    );
    describe_counter!(
        MESSAGES_PUBLISHED_TOTAL,
        Unit::Count,
        "Messages sent, one per send call, by target kind."
    );
    describe_counter!(
        MESSAGES_DELIVERED_TOTAL,
        Unit::Count,
        "Frames accepted by recipients' outbound queues, by target kind."
    );
    describe_counter!(
        FRAMES_DROPPED_TOTAL,
        Unit::Count,
        "Frames a recipient refused (slow_consumer, closed)."
    );
    describe_counter!(
        PUBLISH_REFUSED_TOTAL,
        Unit::Count,
        "Publishes refused before any recipient (reserved_type, too_large, unavailable)."
    );
    describe_counter!(
        RECOVERIES_TOTAL,
        Unit::Count,
        "Recoveries asked for, by outcome (recovered, not_recovered)."
    );
    describe_counter!(
        STREAM_LAGGED_TOTAL,
        Unit::Count,
        "Connections closed to recover again (recovery buffer overflowed, a gap, or a loss the broker reported)."
    );
    describe_counter!(
        SUBSCRIBES_REFUSED_TOTAL,
        Unit::Count,
        "Subscribes refused (forbidden, too_many_topics)."
    );
}
