//! Unit tests of `RealtimeService` against mockall mocks of the ports and a `HashMap` fake.

mod streams;
mod support;

use std::sync::{Arc, Barrier, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use realtime_core::{Connection, Envelope, Frame, Target, UnixMillis, UserId};
use realtime_ports::mocks::{MockConnectionRegistry, MockConnectionSink};
use realtime_ports::{
    CloseReason, ConnectError, ConnectionRegistry, ConnectionSink, DisconnectReason, PublishError,
    RealtimeApi, RegisterError, Registered, SendError,
};

use self::support::{
    MapRegistry, TestRecorder, conn_id, identity, message, mock_registry, permission, quiet_sink,
    registered, request, role, service_over, user,
};
use realtime_testkit::{RecordingSink, SinkClosed};

use crate::metrics as m;
use crate::{RealtimeService, ServiceConfig, describe_metrics};

fn service(registry: impl ConnectionRegistry, max_connections: usize) -> Arc<RealtimeService> {
    let config = ServiceConfig { max_connections, ..ServiceConfig::default() };
    service_over(Arc::new(registry), config).0
}

fn now_millis() -> u64 {
    let elapsed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_else(|e| panic!("{e}"));
    u64::try_from(elapsed.as_millis()).unwrap_or_else(|e| panic!("{e}"))
}

/// A mock registry whose `register` accepts everything and remembers what it was given.
fn accepting_registry(seen: &Arc<Mutex<Vec<Connection>>>, times: usize) -> MockConnectionRegistry {
    let seen = Arc::clone(seen);
    let mut registry = mock_registry();
    registry.expect_register().times(times).returning(move |connection, _| {
        seen.lock().unwrap().push(Connection::clone(&connection));
        Ok(())
    });
    registry
}

#[test]
fn default_config() {
    let config = ServiceConfig::default();
    assert_eq!(config.max_connections, 100_000);
    assert!(config.required_permissions.is_empty());
}

#[test]
fn connect_registers_and_returns_the_connection() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let service = service(accepting_registry(&seen, 1), 10);

    let mut req = request(identity("alice", &["admin", "ops"], &[]));
    req.metadata.insert("tab".into(), "inbox".into());
    let before = now_millis();
    let connection = service.connect(req).unwrap();
    let after = now_millis();

    assert_eq!(connection.user_id, user("alice"));
    assert_eq!(connection.roles, [role("admin"), role("ops")].into_iter().collect());
    assert_eq!(connection.metadata.get("tab"), Some(&"inbox".into()));
    assert_eq!(connection.id.as_uuid().get_version_num(), 4);
    let UnixMillis(at) = connection.connected_at;
    assert!(before <= at && at <= after, "connected_at {at} not in [{before}, {after}]");
    assert_eq!(*seen.lock().unwrap(), vec![Connection::clone(&connection)]);

    assert_eq!(recorder.counter(m::CONNECTIONS_OPENED_TOTAL), 1);
    assert_eq!(recorder.gauge(m::CONNECTIONS_ACTIVE), 1.0);
}

#[test]
fn connect_generates_a_fresh_id_per_connection() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let service = service(accepting_registry(&seen, 2), 10);
    let a = service.connect(request(identity("alice", &[], &[]))).unwrap();
    let b = service.connect(request(identity("alice", &[], &[]))).unwrap();
    assert_ne!(a.id, b.id);
}

#[test]
fn connection_ids_are_random_v4_uuids_on_every_thread() {
    let n = 500;
    let ids: Vec<uuid::Uuid> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(move || {
                    let seen = Arc::new(Mutex::new(Vec::new()));
                    let service = service(accepting_registry(&seen, n), n);
                    (0..n)
                        .map(|_| service.connect(request(identity("u", &[], &[]))).unwrap())
                        .map(|c| c.id.as_uuid())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "repeated ids across threads");
    for id in &ids {
        assert_eq!(id.get_version_num(), 4, "{id}");
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122, "{id}");
    }
    // Every one of the 122 random bits takes both values somewhere.
    let (ones, zeros) =
        ids.iter().fold((0u128, 0u128), |(o, z), id| (o | id.as_u128(), z | !id.as_u128()));
    let fixed: u128 = (0xF << 76) | (0x3 << 62);
    assert_eq!((ones & zeros) | fixed, u128::MAX);
}

#[test]
fn connect_retries_with_a_new_id_on_duplicate() {
    let tried = Arc::new(Mutex::new(Vec::new()));
    let mut registry = mock_registry();
    let log = Arc::clone(&tried);
    registry.expect_register().times(3).returning(move |c: Arc<Connection>, _| {
        let mut tried = log.lock().unwrap();
        tried.push(c.id);
        if tried.len() < 3 { Err(RegisterError::Duplicate(c.id)) } else { Ok(()) }
    });
    let service = service(registry, 10);
    let connection = service.connect(request(identity("alice", &[], &[]))).unwrap();
    let tried = tried.lock().unwrap();
    assert_eq!(tried.len(), 3);
    assert_ne!(tried[0], tried[1]);
    assert_ne!(tried[1], tried[2]);
    assert_eq!(connection.id, tried[2]);
}

#[test]
fn connect_gives_up_on_a_registry_that_always_refuses_and_releases_the_slot() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let mut registry = mock_registry();
    registry.expect_register().returning(|c, _| Err(RegisterError::Duplicate(c.id)));
    let service = service(registry, 1);
    let result = service.connect(request(identity("alice", &[], &[])));
    assert!(matches!(result, Err(ConnectError::Unavailable(_))), "{result:?}");
    assert!(service.has_capacity(), "the reserved slot was not released");
    let rejected =
        format!("{}{{reason={}}}", m::CONNECTIONS_REJECTED_TOTAL, m::REASON_REGISTRY_ERROR);
    assert_eq!(recorder.counter(&rejected), 1);
    assert_eq!(recorder.gauge(m::CONNECTIONS_ACTIVE), 0.0);
}

#[test]
fn connect_requires_the_configured_permissions() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let seen = Arc::new(Mutex::new(Vec::new()));
    // Only the two authorized connects may reach the registry.
    let (service, _) = service_over(
        Arc::new(accepting_registry(&seen, 2)),
        ServiceConfig {
            max_connections: 10,
            required_permissions: vec![permission("realtime:connect"), permission("beta")],
            ..ServiceConfig::default()
        },
    );
    let cases: &[(&[&str], bool)] = &[
        (&[], false),
        (&["realtime:connect"], false),
        (&["beta", "other"], false),
        (&["realtime:connect", "beta"], true),
        (&["beta", "realtime:connect", "admin:all"], true),
    ];
    for (granted, admitted) in cases {
        let result = service.connect(request(identity("alice", &[], granted)));
        match admitted {
            true => assert!(result.is_ok(), "{granted:?}: {result:?}"),
            false => assert_eq!(result, Err(ConnectError::Forbidden), "{granted:?}"),
        }
    }
    let forbidden = format!("{}{{reason={}}}", m::CONNECTIONS_REJECTED_TOTAL, m::REASON_FORBIDDEN);
    assert_eq!(recorder.counter(&forbidden), 3);
    // A forbidden connect takes no slot.
    assert_eq!(recorder.gauge(m::CONNECTIONS_ACTIVE), 2.0);
}

#[test]
fn the_cap_is_enforced_and_released_after_disconnect() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut registry = accepting_registry(&seen, 3);
    let seen_by_unregister = Arc::clone(&seen);
    registry.expect_unregister().times(1).returning(move |id| {
        let connection = seen_by_unregister.lock().unwrap().iter().find(|c| c.id == id).cloned()?;
        Some(Registered { connection: Arc::new(connection), sink: quiet_sink() })
    });
    let service = service(registry, 2);

    let first = service.connect(request(identity("alice", &[], &[]))).unwrap();
    assert!(service.has_capacity());
    service.connect(request(identity("bob", &[], &[]))).unwrap();
    assert!(!service.has_capacity());
    assert_eq!(
        service.connect(request(identity("carol", &[], &[]))),
        Err(ConnectError::AtCapacity { max: 2 })
    );

    assert!(service.unregister(first.id, DisconnectReason::ClientClosed));
    assert!(service.has_capacity());
    service.connect(request(identity("carol", &[], &[]))).unwrap();
    assert!(!service.has_capacity());

    let at_capacity =
        format!("{}{{reason={}}}", m::CONNECTIONS_REJECTED_TOTAL, m::REASON_AT_CAPACITY);
    assert_eq!(recorder.counter(&at_capacity), 1);
    assert_eq!(recorder.counter(m::CONNECTIONS_OPENED_TOTAL), 3);
    assert_eq!(recorder.gauge(m::CONNECTIONS_ACTIVE), 2.0);
}

#[test]
fn a_zero_cap_admits_nobody() {
    let service = service(mock_registry(), 0);
    assert!(!service.has_capacity());
    assert_eq!(
        service.connect(request(identity("alice", &[], &[]))),
        Err(ConnectError::AtCapacity { max: 0 })
    );
}

#[test]
fn disconnect_is_idempotent() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut registry = accepting_registry(&seen, 3);
    // The registry's contract: the first unregister returns the connection, later ones `None`.
    let seen_by_unregister = Arc::clone(&seen);
    let mut removed = Vec::new();
    registry.expect_unregister().times(2).returning(move |id| {
        if removed.contains(&id) {
            return None;
        }
        removed.push(id);
        let connection = seen_by_unregister.lock().unwrap().iter().find(|c| c.id == id).cloned()?;
        Some(Registered { connection: Arc::new(connection), sink: quiet_sink() })
    });
    registry.expect_count().returning(|| 1);
    let service = service(registry, 2);

    let a = service.connect(request(identity("alice", &[], &[]))).unwrap();
    service.connect(request(identity("bob", &[], &[]))).unwrap();
    assert!(service.unregister(a.id, DisconnectReason::ClientClosed));
    assert!(!service.unregister(a.id, DisconnectReason::ClientClosed));

    // Exactly one slot came back: one more connect fits, the next does not.
    service.connect(request(identity("carol", &[], &[]))).unwrap();
    assert_eq!(
        service.connect(request(identity("dave", &[], &[]))),
        Err(ConnectError::AtCapacity { max: 2 })
    );
    let closed = format!("{}{{reason=client_closed}}", m::CONNECTIONS_CLOSED_TOTAL);
    assert_eq!(recorder.counter(&closed), 1);
    assert_eq!(recorder.gauge(m::CONNECTIONS_ACTIVE), 2.0);
    assert_eq!(service.connection_count(), 1, "connection_count asks the registry");
}

#[test]
fn removing_an_unknown_connection_returns_false() {
    let mut registry = mock_registry();
    registry.expect_unregister().times(2).returning(|_| None);
    let service = service(registry, 1);
    assert!(!service.unregister(conn_id(7), DisconnectReason::ClientClosed));
    assert!(!service.kick(conn_id(7)));
    assert!(service.has_capacity());
}

#[test]
fn unregister_never_closes_the_sink_and_kick_always_does() {
    let reasons = [
        DisconnectReason::Kicked,
        DisconnectReason::ClientClosed,
        DisconnectReason::TransportError,
        DisconnectReason::HeartbeatTimeout,
        DisconnectReason::TokenExpired,
        DisconnectReason::SlowConsumer,
        DisconnectReason::ProtocolError,
        DisconnectReason::Shutdown,
    ];
    // `None`: a kick; `Some(reason)`: the transport unregisters.
    let cases = std::iter::once(None).chain(reasons.into_iter().map(Some));
    for case in cases {
        let recorder = TestRecorder::default();
        let _guard = metrics::set_default_local_recorder(&recorder);
        let mut sink = MockConnectionSink::new();
        sink.expect_close()
            .withf(|reason| *reason == CloseReason::Kicked)
            .times(usize::from(case.is_none()))
            .return_const(());
        let service = service(MapRegistry::default(), 10);
        let mut req = request(identity("alice", &[], &[]));
        req.sink = Arc::new(sink);
        let connection = service.connect(req).unwrap();
        let removed = match case {
            None => service.kick(connection.id),
            Some(reason) => service.unregister(connection.id, reason),
        };
        assert!(removed, "{case:?}");
        // The registry dropped the last reference to the sink: mockall has checked `times`.
        assert_eq!(service.connection_count(), 0);
        assert!(service.has_capacity(), "the slot is released");
        let label = case.unwrap_or(DisconnectReason::Kicked).as_str();
        let closed = format!("{}{{reason={label}}}", m::CONNECTIONS_CLOSED_TOTAL);
        assert_eq!(recorder.counter(&closed), 1, "{case:?}");
    }
}

#[test]
fn kick_user_kicks_every_connection_of_that_user_only() {
    let service = service(MapRegistry::default(), 10);
    let sinks: Vec<(&str, Arc<RecordingSink>)> = ["alice", "alice", "bob"]
        .into_iter()
        .map(|user| (user, Arc::new(RecordingSink::new())))
        .collect();
    for (user, sink) in &sinks {
        let mut req = request(identity(user, &[], &[]));
        req.sink = sink.clone();
        service.connect(req).unwrap();
    }
    let alice = UserId::new("alice").unwrap();
    assert_eq!(service.kick_user(&alice), 2);
    assert_eq!(service.kick_user(&alice), 0, "nothing left to kick");
    assert_eq!(service.connection_count(), 1);
    let closed: Vec<Option<SinkClosed>> = sinks.iter().map(|(_, sink)| sink.closed()).collect();
    let kicked = Some(SinkClosed::By(CloseReason::Kicked));
    assert_eq!(closed, [kicked, kicked, None]);
}

/// What a mock sink answers to `send`.
type SendResult = Result<(), SendError>;

/// The frames the sinks of one fan-out were given. They are kept alive, so that two frames
/// encoded separately can never share an address by the allocator reusing freed memory.
type Seen = Arc<Mutex<Vec<Frame>>>;

/// One recipient per result; each sink expects exactly one `send` and answers with the result.
fn recipients(results: &[SendResult], seen: &Seen) -> Vec<Registered> {
    results
        .iter()
        .enumerate()
        .map(|(n, result)| {
            let (seen, result) = (Arc::clone(seen), *result);
            let mut sink = MockConnectionSink::new();
            sink.expect_send().times(1).returning(move |frame: Frame| {
                seen.lock().unwrap().push(frame);
                result
            });
            let sink: Arc<dyn ConnectionSink> = Arc::new(sink);
            registered(n as u128 + 1, "someone", sink)
        })
        .collect()
}

/// A registry on which only the lookup for `target` may be called, once.
fn registry_for(target: &Target, recipients: Vec<Registered>) -> MockConnectionRegistry {
    let mut registry = mock_registry();
    match target.stream() {
        Some(stream) => {
            registry
                .expect_find_stream()
                .withf(move |x| *x == stream)
                .times(1)
                .return_once(|_| recipients);
        }
        None => {
            let Target::Connection(id) = target.clone() else { panic!("{target:?}") };
            assert!(recipients.len() <= 1, "a connection target has at most one recipient");
            registry
                .expect_get()
                .withf(move |x| *x == id)
                .times(1)
                .return_once(|_| recipients.into_iter().next());
        }
    }
    registry
}

async fn send(
    service: &RealtimeService,
    target: &Target,
    message: &Envelope,
    via_publish: bool,
) -> usize {
    let result = if via_publish {
        service.publish(target, message).await
    } else {
        match target {
            Target::User(u) => service.send_to_user(u, message).await,
            Target::Role(r) => service.send_to_role(r, message).await,
            Target::Connection(id) => service.send_to_connection(*id, message).await,
            Target::Broadcast => service.broadcast(message).await,
            Target::Topic(_) => panic!("no topic cases here"),
        }
    };
    result.unwrap_or_else(|e| panic!("{target:?}: {e}"))
}

#[tokio::test]
async fn sends_route_through_the_registry_encode_once_and_count_accepted_frames() {
    use SendError::{Closed, QueueFull};
    let cases: Vec<(Target, Vec<SendResult>, usize)> = vec![
        (Target::User(user("alice")), vec![Ok(()), Err(QueueFull), Ok(()), Err(Closed)], 2),
        (Target::User(user("nobody")), vec![], 0),
        (Target::Role(role("admin")), vec![Ok(()), Ok(()), Ok(())], 3),
        (Target::Role(role("ops")), vec![Err(Closed)], 0),
        (Target::Connection(conn_id(1)), vec![Ok(())], 1),
        (Target::Connection(conn_id(2)), vec![Err(QueueFull)], 0),
        (Target::Connection(conn_id(3)), vec![], 0),
        (Target::Broadcast, vec![Err(Closed), Ok(())], 1),
        (Target::Broadcast, vec![], 0),
    ];
    let message = message();
    let wire = Frame::encode(&message).as_str().to_owned();
    for (target, results, expected) in cases {
        for via_publish in [false, true] {
            let recorder = TestRecorder::default();
            let _guard = metrics::set_default_local_recorder(&recorder);
            let seen: Seen = Arc::default();
            let service = service(registry_for(&target, recipients(&results, &seen)), 10);

            let count = send(&service, &target, &message, via_publish).await;
            let case = format!("{target:?} via_publish={via_publish}");
            assert_eq!(count, expected, "{case}");

            let seen = seen.lock().unwrap();
            assert_eq!(seen.len(), results.len(), "{case}: every recipient gets one send");
            assert!(
                seen.iter().all(|f| f.as_bytes().as_ptr() == seen[0].as_bytes().as_ptr()),
                "{case}: encoded more than once"
            );
            assert!(seen.iter().all(|f| f.as_str() == wire), "{case}: wrong bytes");

            let kind = target.kind();
            let slow = results.iter().filter(|r| **r == Err(QueueFull)).count() as u64;
            let closed = results.iter().filter(|r| **r == Err(Closed)).count() as u64;
            let metric = |name: &str, key: &str, value: &str| {
                recorder.counter(&format!("{name}{{{key}={value}}}"))
            };
            assert_eq!(metric(m::MESSAGES_PUBLISHED_TOTAL, m::LABEL_TARGET, kind), 1, "{case}");
            assert_eq!(
                metric(m::MESSAGES_DELIVERED_TOTAL, m::LABEL_TARGET, kind),
                expected as u64,
                "{case}"
            );
            assert_eq!(
                metric(m::FRAMES_DROPPED_TOTAL, m::LABEL_REASON, m::REASON_SLOW_CONSUMER),
                slow,
                "{case}"
            );
            assert_eq!(
                metric(m::FRAMES_DROPPED_TOTAL, m::LABEL_REASON, m::REASON_CLOSED),
                closed,
                "{case}"
            );
        }
    }
}

#[tokio::test]
async fn sends_reach_the_connections_of_a_real_registry() {
    let registry = Arc::new(MapRegistry::default());
    let (service, _) = service_over(registry.clone(), ServiceConfig::default());
    let seen: Seen = Arc::default();
    let connect = |user_id: &str, roles: &[&str]| {
        let mut sink = MockConnectionSink::new();
        let seen = Arc::clone(&seen);
        sink.expect_send().returning(move |frame: Frame| {
            seen.lock().unwrap().push(frame);
            Ok(())
        });
        let mut req = request(identity(user_id, roles, &[]));
        req.sink = Arc::new(sink);
        service.connect(req).unwrap().id
    };
    let alice_tab1 = connect("alice", &["admin"]);
    let ids = [alice_tab1, connect("alice", &[]), connect("bob", &["admin", "ops"])];
    // Live frames are held back until the transport has opened the streams.
    for id in ids {
        assert_eq!(service.open_streams(id, &Default::default()).await, Ok(Vec::new()));
    }
    let message = message();
    let cases = [
        (Target::User(user("alice")), 2),
        (Target::User(user("carol")), 0),
        (Target::Role(role("admin")), 2),
        (Target::Role(role("ops")), 1),
        (Target::Connection(alice_tab1), 1),
        (Target::Connection(conn_id(99)), 0),
        (Target::Broadcast, 3),
    ];
    let mut total = 0;
    for (target, expected) in cases {
        assert_eq!(service.publish(&target, &message).await, Ok(expected), "{target:?}");
        total += expected;
    }
    assert_eq!(seen.lock().unwrap().len(), total, "every accepted frame reached a sink");
    assert_eq!(service.connection_count(), 3);
}

#[test]
fn describe_metrics_describes_every_metric() {
    let recorder = TestRecorder::default();
    metrics::with_local_recorder(&recorder, describe_metrics);
    let mut described = recorder.described();
    described.sort();
    let mut expected = vec![
        "realtime_connections_active",
        "realtime_connections_opened_total",
        "realtime_connections_closed_total",
        "realtime_connections_rejected_total",
        "realtime_messages_published_total",
        "realtime_messages_delivered_total",
        "realtime_frames_dropped_total",
        "realtime_publish_refused_total",
        "realtime_recoveries_total",
        "realtime_stream_lagged_total",
        "realtime_subscribes_refused_total",
    ];
    expected.sort();
    assert_eq!(described, expected);
}

/// 8 threads connect and disconnect at once against a `HashMap` registry: the cap holds at
/// every moment and every slot, gauge and registry entry comes back to zero.
#[test]
fn concurrent_connects_and_disconnects_balance_out() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 200;
    const MAX: usize = 12;
    let recorder = TestRecorder::default();
    let registry = Arc::new(MapRegistry::default());
    let (service, _) = service_over(
        registry.clone(),
        ServiceConfig { max_connections: MAX, ..ServiceConfig::default() },
    );
    let barrier = Barrier::new(THREADS);

    // Phase 1: churn. Each thread holds up to 2 connections at a time, so 16 may be wanted
    // at once against a cap of 12: some connects fail with AtCapacity, none may overshoot.
    let admitted: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (service, registry, barrier, recorder) =
                    (&service, &registry, &barrier, &recorder);
                s.spawn(move || {
                    metrics::with_local_recorder(recorder, || {
                        barrier.wait();
                        let mut admitted = 0;
                        for round in 0..ROUNDS {
                            let mut held = Vec::new();
                            for tab in 0..2 {
                                let who = format!("user{t}-{round}-{tab}");
                                match service.connect(request(identity(&who, &[], &[]))) {
                                    Ok(c) => held.push(c.id),
                                    Err(ConnectError::AtCapacity { max: MAX }) => {}
                                    Err(e) => panic!("unexpected {e}"),
                                }
                                assert!(registry.count() <= MAX, "cap overshot");
                            }
                            admitted += held.len();
                            for id in held {
                                assert!(service.unregister(id, DisconnectReason::ClientClosed));
                                assert!(!service.unregister(id, DisconnectReason::ClientClosed));
                            }
                        }
                        admitted
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert!(admitted > 0);
    assert_eq!(service.connection_count(), 0);
    assert!(service.has_capacity());
    assert_eq!(recorder.gauge(m::CONNECTIONS_ACTIVE), 0.0);
    assert_eq!(recorder.counter(m::CONNECTIONS_OPENED_TOTAL), admitted as u64);
    let closed = format!("{}{{reason=client_closed}}", m::CONNECTIONS_CLOSED_TOTAL);
    assert_eq!(recorder.counter(&closed), admitted as u64);

    // Phase 2: a burst with no disconnects admits exactly MAX, whatever the interleaving.
    let ids: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (service, barrier) = (&service, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    (0..4)
                        .filter_map(|n| {
                            service.connect(request(identity(&format!("u{t}-{n}"), &[], &[]))).ok()
                        })
                        .map(|c| c.id)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(ids.len(), MAX);
    assert_eq!(service.connection_count(), MAX);
    assert!(!service.has_capacity());
    for id in ids {
        assert!(service.unregister(id, DisconnectReason::Shutdown));
    }
    assert_eq!(service.connection_count(), 0);
    assert!(service.has_capacity());
}

#[tokio::test]
async fn reserved_types_are_refused_for_every_target_before_any_recipient() {
    let service = service(MapRegistry::default(), 10);
    let sink = Arc::new(RecordingSink::new());
    let mut req = request(identity("alice", &["admin"], &[]));
    req.sink = sink.clone();
    let connection = service.connect(req).unwrap();
    let targets = [
        Target::Broadcast,
        Target::User(user("alice")),
        Target::Role(role("admin")),
        Target::Connection(connection.id),
    ];
    for kind in realtime_core::protocol::RESERVED_SERVER_TYPES {
        let forged = Envelope::from_parts(kind, serde_json::json!({})).unwrap();
        for target in &targets {
            assert_eq!(
                service.publish(target, &forged).await,
                Err(PublishError::ReservedType(forged.kind.clone())),
                "{kind} to {target:?}"
            );
        }
    }
    assert!(sink.is_empty(), "no forged frame reached the connection");
    assert_eq!(service.publish(&Target::Broadcast, &message()).await, Ok(1));
}

#[tokio::test]
async fn an_oversize_message_is_refused_before_any_recipient_even_with_none() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let max = 100;
    let (service, _) = service_over(
        Arc::new(MapRegistry::default()),
        ServiceConfig { max_message_bytes: max, ..ServiceConfig::default() },
    );
    let fits = |text: &str| Envelope::from_parts("n", serde_json::json!({ "t": text })).unwrap();
    // `{"type":"n","payload":{"t":"..."}}` is 31 bytes around the text.
    let exactly = fits(&"x".repeat(max - 31));
    let over = fits(&"x".repeat(max - 30));
    assert_eq!(Frame::encode(&exactly).len(), max);
    // To a stream, the limit also counts the position fields every recipient gets.
    let refused = service.publish(&Target::Broadcast, &exactly).await;
    assert!(
        matches!(refused, Err(PublishError::TooLarge { len, max: 100 }) if len > max),
        "{refused:?}"
    );
    let sink = Arc::new(RecordingSink::new());
    let mut req = request(identity("alice", &[], &[]));
    req.sink = sink.clone();
    let id = service.connect(req).unwrap().id;
    assert_eq!(service.open_streams(id, &Default::default()).await, Ok(Vec::new()));
    assert_eq!(
        service.send_to_connection(id, &over).await,
        Err(PublishError::TooLarge { len: max + 1, max })
    );
    assert!(sink.is_empty(), "the oversize frame never reached the sink");
    assert_eq!(service.send_to_connection(id, &exactly).await, Ok(1));
    let refused = format!("{}{{reason={}}}", m::PUBLISH_REFUSED_TOTAL, m::REASON_TOO_LARGE);
    assert_eq!(recorder.counter(&refused), 2);
}

/// A reply carries the request's id, is checked as a publish is (the id counts towards the
/// size), and reaches only the connection it answers.
#[tokio::test]
async fn a_reply_echoes_the_request_id_and_passes_the_publish_checks() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let max = 100;
    let (service, _) = service_over(
        Arc::new(MapRegistry::default()),
        ServiceConfig { max_message_bytes: max, ..ServiceConfig::default() },
    );
    let connect = |name: &str| {
        let sink = Arc::new(RecordingSink::new());
        let mut req = request(identity(name, &[], &[]));
        req.sink = sink.clone();
        (service.connect(req).unwrap().id, sink)
    };
    let (alice, alice_sink) = connect("alice");
    let (bob, bob_sink) = connect("bob");
    for id in [alice, bob] {
        assert_eq!(service.open_streams(id, &Default::default()).await, Ok(Vec::new()));
    }
    let id = |value: serde_json::Value| realtime_core::RequestId::from_json(&value).unwrap();
    let ack = Envelope::from_parts("demo.ack", serde_json::json!({"n": 1})).unwrap();
    assert_eq!(service.reply(alice, Some(id(serde_json::json!(7))), &ack).await, Ok(1));
    assert_eq!(service.reply(alice, Some(id(serde_json::json!("r1"))), &ack).await, Ok(1));
    assert_eq!(service.reply(alice, None, &ack).await, Ok(1));
    assert_eq!(
        alice_sink.texts(),
        [
            r#"{"type":"demo.ack","id":7,"payload":{"n":1}}"#,
            r#"{"type":"demo.ack","id":"r1","payload":{"n":1}}"#,
            r#"{"type":"demo.ack","payload":{"n":1}}"#,
        ]
    );
    assert!(bob_sink.is_empty(), "a reply goes to its connection only");
    assert_eq!(service.reply(conn_id(99), Some(id(serde_json::json!(1))), &ack).await, Ok(0));
    // The reserved types and the size limit, as for a publish; nothing is sent.
    let forged = Envelope::from_parts("pong", serde_json::json!({})).unwrap();
    assert_eq!(
        service.reply(alice, Some(id(serde_json::json!(1))), &forged).await,
        Err(PublishError::ReservedType(forged.kind.clone()))
    );
    // `{"type":"n","payload":{"t":"..."}}` is 31 bytes around the text; `"id":"ab",` is 10.
    let exactly =
        Envelope::from_parts("n", serde_json::json!({ "t": "x".repeat(max - 41) })).unwrap();
    assert_eq!(
        service.reply(alice, Some(id(serde_json::json!("abc"))), &exactly).await,
        Err(PublishError::TooLarge { len: max + 1, max })
    );
    assert_eq!(alice_sink.len(), 3, "nothing refused reached the connection");
    assert_eq!(service.reply(alice, Some(id(serde_json::json!("ab"))), &exactly).await, Ok(1));
    let refused = |reason| format!("{}{{reason={reason}}}", m::PUBLISH_REFUSED_TOTAL);
    assert_eq!(recorder.counter(&refused(m::REASON_RESERVED_TYPE)), 1);
    assert_eq!(recorder.counter(&refused(m::REASON_TOO_LARGE)), 1);
}
