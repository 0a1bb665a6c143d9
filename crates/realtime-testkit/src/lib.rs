//! Test support for realtime: fakes, fixtures, the registry contract suite, a model-based
//! registry test and JWT minting. Used only as a dev-dependency (`publish = false`).
//!
//! - [`RecordingSink`]: a [`ConnectionSink`](realtime_ports::ConnectionSink) that records
//!   every frame and close, with an optional bounded queue that behaves like the real one.
//! - [`fixtures`]: one-line identities, connections and connection ids.
//! - [`registry_contract`] and the [`registry_contract_tests!`] macro: the checks every
//!   [`ConnectionRegistry`](realtime_ports::ConnectionRegistry) adapter must pass, one
//!   `#[test]` per case.
//! - [`sink_contract`] and the [`sink_contract_tests!`] macro: the checks every
//!   [`ConnectionSink`](realtime_ports::ConnectionSink) must pass, driven through a
//!   [`SinkHarness`](sink_contract::SinkHarness).
//! - [`registry_model`]: random operation sequences applied to a registry and to a naive
//!   model; every lookup must agree exactly with `realtime_core::route`.
//! - [`jwt`]: HS256 tokens (and odd ones) for tests and benchmarks.
//! - [`ws`]: a WebSocket client for the `/ws` endpoint (upgrade, JSON frames, close frames).
//! - [`raw_ws`]: a raw WebSocket client that writes hand-made frame bytes after a real
//!   upgrade, for protocol-violation tests.
//! - [`http`]: a minimal HTTP/1.1 client on a plain TCP stream, for well-formed and
//!   hand-made requests.
//! - [`logs`]: an in-memory log capture and the TRACE subscriber that writes into it.
//! - [`RedisProcess`]: a `redis-server` of the test's own on a free port, killed on drop.
//!
//! Network helpers bound every wait by [`WAIT`]. Helpers here panic with a descriptive
//! message on bad input: they are for tests.
//!
//! **Architecture Invariant:** no production crate depends on this one; it is a
//! dev-dependency only.

pub mod broker_contract;
pub mod fixtures;
pub mod http;
pub mod jwt;
pub mod logs;
pub mod presence_contract;
pub mod raw_ws;
mod redis;
pub mod registry_contract;
pub mod registry_model;
mod sink;
pub mod sink_contract;
pub mod ws;

#[cfg(test)]
mod self_test;

pub use redis::RedisProcess;
pub use registry_model::check_registry_against_model;
pub use sink::{RecordingSink, SinkClosed};

/// How long any single wait of the [`ws`] and [`http`] helpers may take before the test
/// fails: long enough for a loaded machine, short enough to fail a hung test quickly.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Expands to one `#[test]` per case of the registry contract suite
/// ([`registry_contract`]), inside a module (`registry_contract` unless named).
///
/// The argument is an expression evaluating to a closure that makes a fresh, empty registry;
/// it is evaluated once per test. Names it uses are resolved in the invoking module (the
/// generated module glob-imports `super::*`).
///
/// ```text
/// use std::sync::Arc;
/// use realtime_ports::ConnectionRegistry;
///
/// realtime_testkit::registry_contract_tests!(
///     || Arc::new(MyRegistry::new()) as Arc<dyn ConnectionRegistry>
/// );
/// // Or, to run the suite twice in one module, name the generated module:
/// realtime_testkit::registry_contract_tests!(
///     sharded_contract,
///     || Arc::new(MyRegistry::sharded(4)) as Arc<dyn ConnectionRegistry>
/// );
/// ```
#[macro_export]
macro_rules! registry_contract_tests {
    ($module:ident, $make:expr $(,)?) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            $crate::registry_contract_tests!(@cases $make;
                register_then_get,
                duplicate_id_is_rejected_and_original_kept,
                unregister_removes_from_every_index,
                find_by_user_returns_every_connection_of_the_user,
                find_by_role_with_overlapping_roles,
                all_and_count,
                unknown_user_and_role_give_empty,
                concurrent_operations_end_consistent,
                registered_sink_is_the_one_registered,
                subscribe_is_idempotent,
                subscribe_enforces_the_topic_limit,
                subscribe_requires_a_registered_connection,
                unsubscribe_removes_only_that_topic,
                unregister_removes_from_every_topic,
                no_empty_topic_entries,
                find_stream_dispatches_by_kind,
                concurrent_topic_operations_end_consistent,
            );
        }
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::registry_contract::$case($make);
            }
        )*
    };
    ($make:expr $(,)?) => {
        $crate::registry_contract_tests!(registry_contract, $make);
    };
}

/// Expands to one `#[test]` per case of the [`Broker`](realtime_ports::Broker) contract suite
/// ([`broker_contract`]), inside a module (`broker_contract` unless named). The argument is
/// an expression evaluating to a closure that makes a fresh broker for a
/// [`HistoryPolicy`](realtime_core::HistoryPolicy).
///
/// ```text
/// realtime_testkit::broker_contract_tests!(|policy| Arc::new(MyBroker::new(policy)) as Arc<dyn Broker>);
/// ```
#[macro_export]
macro_rules! broker_contract_tests {
    ($module:ident, $make:expr $(,)?) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            $crate::broker_contract_tests!(@cases $make;
                offsets_count_up_and_frames_carry_their_position,
                streams_are_independent,
                recover_without_since_gives_the_top_only,
                recover_replays_everything_after_since,
                recovery_is_all_or_nothing,
                aged_out_publications_are_not_recovered,
                a_stream_without_history_has_no_position,
                an_idempotency_key_publishes_once_per_stream,
                ephemeral_frames_are_delivered_and_not_kept,
                a_message_to_a_connection_is_delivered_to_it,
                revocations_are_remembered_until_they_expire,
                no_gap_between_a_read_and_live_delivery,
                concurrent_publishers_get_distinct_offsets_delivered_in_order,
            );
        }
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::broker_contract::$case(&$make);
            }
        )*
    };
    ($make:expr $(,)?) => {
        $crate::broker_contract_tests!(broker_contract, $make);
    };
}

/// Expands to one `#[test]` per case of the [`Presence`](realtime_ports::Presence) contract
/// suite ([`presence_contract`]), inside a module (`presence_contract` unless named). The
/// argument is an expression evaluating to a closure that makes a fresh, empty presence.
#[macro_export]
macro_rules! presence_contract_tests {
    ($module:ident, $make:expr $(,)?) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            $crate::presence_contract_tests!(@cases $make;
                a_users_first_connection_joins_and_its_last_leaves,
                join_and_leave_are_idempotent_per_connection,
                topic_members_are_sorted_with_their_counts,
                scopes_are_independent,
                concurrent_joins_and_leaves_end_consistent,
                the_online_count_counts_connections,
            );
        }
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::presence_contract::$case(&$make);
            }
        )*
    };
    ($make:expr $(,)?) => {
        $crate::presence_contract_tests!(presence_contract, $make);
    };
}

/// Expands to one `#[test]` per case of the [`ConnectionSink`](realtime_ports::ConnectionSink)
/// contract suite ([`sink_contract`]), inside a module (`sink_contract` unless named).
///
/// The argument is an expression evaluating to a closure that makes a fresh
/// [`SinkHarness`](sink_contract::SinkHarness) for a queue capacity; names are resolved in
/// the invoking module.
///
/// ```text
/// realtime_testkit::sink_contract_tests!(|capacity| MyHarness::new(capacity));
/// ```
#[macro_export]
macro_rules! sink_contract_tests {
    ($module:ident, $make:expr $(,)?) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            $crate::sink_contract_tests!(@cases $make;
                frames_are_written_in_order,
                a_full_queue_is_a_slow_consumer,
                a_batch_is_contiguous_and_admitted_whole,
                send_after_close_is_closed,
                close_is_idempotent_and_the_first_end_wins,
                frames_accepted_before_close_are_still_written,
                concurrent_sends_keep_each_senders_order,
            );
        }
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::sink_contract::$case($make);
            }
        )*
    };
    ($make:expr $(,)?) => {
        $crate::sink_contract_tests!(sink_contract, $make);
    };
}
