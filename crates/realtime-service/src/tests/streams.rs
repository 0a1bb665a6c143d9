//! The service's stream logic against the broker fake: the held-back live publications and
//! their merge with a replay (no gap, no duplicate), subscribe authorization, unsubscribe,
//! interest, revocation and refresh.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use realtime_core::{
    Connection, ConnectionId, Epoch, Frame, Identity, Position, StreamName, TopicName,
    TopicPattern, UnixMillis,
};
use realtime_ports::{
    CloseReason, ConnectError, ConnectionRegistry, LocalDelivery, RealtimeApi, RefreshError,
    SubscribeAuthorizer, SubscribeError, SubscribeOrigin, SubscribeRequest, UnsubscribeError,
};
use realtime_testkit::{RecordingSink, SinkClosed};

use super::support::{FakeBroker, MapRegistry, NoPresence, identity, request, service_over};
use crate::{Adapters, RealtimeService, ServiceConfig};

fn position(offset: u64) -> Position {
    Position { epoch: Epoch::new("e1").unwrap_or_else(|e| panic!("{e}")), offset }
}

fn frame(text: &str) -> Frame {
    Frame::from_text(format!(r#"{{"type":"n","payload":{{"t":"{text}"}}}}"#))
}

fn topic(raw: &str) -> TopicName {
    TopicName::new(raw).unwrap_or_else(|e| panic!("{e}"))
}

fn stream(raw: &str) -> StreamName {
    StreamName::parse(raw).unwrap_or_else(|e| panic!("{e}"))
}

/// A connected `alice` with a recording sink.
fn connect(service: &RealtimeService, identity: Identity) -> (ConnectionId, Arc<RecordingSink>) {
    let sink = Arc::new(RecordingSink::new());
    let mut req = request(identity);
    req.sink = sink.clone();
    let id = service.connect(req).unwrap_or_else(|e| panic!("{e}")).id;
    (id, sink)
}

fn texts(sink: &RecordingSink) -> Vec<String> {
    sink.texts()
}

fn sub(id: ConnectionId, name: &str, since: Option<Position>, topics: &[&str]) -> SubscribeRequest {
    let topics =
        topics.iter().map(|t| TopicPattern::parse(t).unwrap_or_else(|e| panic!("{e}"))).collect();
    SubscribeRequest {
        connection: id,
        topic: topic(name),
        since,
        reply_id: None,
        origin: SubscribeOrigin::Client { topics },
    }
}

/// Publications that race the history read are merged by offset: those the replay already
/// holds (one delivered before the streams were opened, one during the read) are dropped,
/// the newer one follows the replay, and nothing is sent ahead of the replay.
#[tokio::test]
async fn a_replay_and_the_live_publications_around_it_merge_without_gap_or_duplicate() {
    let (service, broker) =
        service_over(Arc::new(MapRegistry::default()), ServiceConfig::default());
    let user = stream("user:alice");
    broker.tops.lock().unwrap_or_else(|e| e.into_inner()).insert(user.clone(), position(3));
    broker
        .replays
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(user.clone(), vec![frame("2"), frame("3")]);
    broker
        .racing
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(user.clone(), vec![(position(3), frame("3-live")), (position(4), frame("4"))]);
    let (id, sink) = connect(&service, identity("alice", &[], &[]));
    // Delivered after connect, before open_streams: held (and the replay has it too).
    service.deliver(&user, Some(&position(2)), &frame("2-live"));
    assert!(sink.is_empty(), "nothing live before the streams are open");
    let since = BTreeMap::from([(user.clone(), position(1))]);
    let opened = service.open_streams(id, &since).await.unwrap_or_else(|e| panic!("{e}"));
    let alice = opened.iter().find(|s| s.stream == user).unwrap_or_else(|| panic!("{opened:?}"));
    assert!(alice.recovered);
    assert_eq!(alice.position, position(3));
    let expected: Vec<String> =
        ["2", "3", "4"].iter().map(|t| frame(t).as_str().to_owned()).collect();
    assert_eq!(texts(&sink), expected);
    // Live from now on.
    service.deliver(&user, Some(&position(5)), &frame("5"));
    assert_eq!(sink.len(), 4);
    assert_eq!(sink.closed(), None);
}

/// A held publication that skips an offset is a gap: the connection is closed to recover
/// again (4010), never served with a hole.
#[tokio::test]
async fn a_gap_in_the_held_publications_closes_the_connection_as_lagged() {
    let (service, broker) =
        service_over(Arc::new(MapRegistry::default()), ServiceConfig::default());
    let user = stream("user:alice");
    broker.tops.lock().unwrap_or_else(|e| e.into_inner()).insert(user.clone(), position(3));
    let (id, sink) = connect(&service, identity("alice", &[], &[]));
    service.deliver(&user, Some(&position(5)), &frame("5"));
    service.open_streams(id, &BTreeMap::new()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sink.closed(), Some(SinkClosed::By(CloseReason::StreamLagged)));
    assert!(sink.is_empty());
}

/// More live publications during a recovery than the buffer holds close the connection
/// rather than drop one.
#[tokio::test]
async fn an_overflowing_hold_closes_the_connection_as_lagged() {
    let config = ServiceConfig { max_recovery_buffer: 2, ..ServiceConfig::default() };
    let (service, broker) = service_over(Arc::new(MapRegistry::default()), config);
    let all = stream("broadcast");
    broker.tops.lock().unwrap_or_else(|e| e.into_inner()).insert(all.clone(), position(0));
    let (id, sink) = connect(&service, identity("alice", &[], &[]));
    for offset in 1..=3 {
        service.deliver(&all, Some(&position(offset)), &frame("x"));
    }
    service.open_streams(id, &BTreeMap::new()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sink.closed(), Some(SinkClosed::By(CloseReason::StreamLagged)));
}

/// A loss the broker reports closes the stream's connections as lagged (4010), one still
/// recovering included (at its release), and leaves the others alone.
#[tokio::test]
async fn a_loss_the_broker_reports_closes_the_streams_connections_as_lagged() {
    let (service, broker) =
        service_over(Arc::new(MapRegistry::default()), ServiceConfig::default());
    let ops = stream("role:ops");
    broker.tops.lock().unwrap_or_else(|e| e.into_inner()).insert(ops.clone(), position(0));
    let (open_id, open_sink) = connect(&service, identity("alice", &["ops"], &[]));
    service.open_streams(open_id, &BTreeMap::new()).await.unwrap_or_else(|e| panic!("{e}"));
    let (other_id, other_sink) = connect(&service, identity("bob", &[], &[]));
    service.open_streams(other_id, &BTreeMap::new()).await.unwrap_or_else(|e| panic!("{e}"));
    // Connected, its streams not open yet: held.
    let (held_id, held_sink) = connect(&service, identity("carol", &["ops"], &[]));
    assert_eq!(LocalDelivery::lost(&*service, &ops), 2);
    assert_eq!(open_sink.closed(), Some(SinkClosed::By(CloseReason::StreamLagged)));
    assert_eq!(held_sink.closed(), None, "closed at its release");
    service.open_streams(held_id, &BTreeMap::new()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(held_sink.closed(), Some(SinkClosed::By(CloseReason::StreamLagged)));
    assert_eq!(other_sink.closed(), None, "not in the stream");
}

struct AllowOnly(&'static str, Arc<std::sync::atomic::AtomicUsize>);

#[async_trait]
impl SubscribeAuthorizer for AllowOnly {
    async fn authorize(&self, _: &Connection, topic: &TopicName) -> bool {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        topic.as_str() == self.0
    }
}

/// The claim is checked first, then the hook; a refusal is `Forbidden` and changes nothing;
/// the server may subscribe anyone.
#[tokio::test]
async fn subscribe_is_allowed_by_the_claim_then_the_hook() {
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let registry = Arc::new(MapRegistry::default());
    let adapters =
        Adapters::new(registry.clone(), Arc::new(FakeBroker::default()), Arc::new(NoPresence))
            .with_authorizer(Arc::new(AllowOnly("hooked", Arc::clone(&asked))));
    let service = RealtimeService::new(adapters, ServiceConfig::default());
    let (id, sink) = connect(&service, identity("alice", &[], &[]));
    service.open_streams(id, &BTreeMap::new()).await.unwrap_or_else(|e| panic!("{e}"));
    let claim = ["orders", "chat:*"];
    let ok = |name| sub(id, name, None, &claim);
    assert!(service.subscribe(ok("orders")).await.is_ok());
    assert!(service.subscribe(ok("chat:room-1")).await.is_ok());
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 0, "the claim sufficed");
    assert!(service.subscribe(ok("hooked")).await.is_ok(), "the hook allows it");
    assert_eq!(service.subscribe(ok("secret")).await, Err(SubscribeError::Forbidden));
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 2);
    let mut topics = registry.topics_of(id);
    topics.sort();
    assert_eq!(topics, [topic("chat:room-1"), topic("hooked"), topic("orders")]);
    let server =
        SubscribeRequest { origin: SubscribeOrigin::Server, ..sub(id, "secret", None, &[]) };
    assert!(service.subscribe(server).await.is_ok(), "the backend is not checked");
    let replies: Vec<serde_json::Value> = sink
        .texts()
        .iter()
        .map(|t| serde_json::from_str(t).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    assert_eq!(replies.len(), 4, "{replies:?}");
    assert!(replies.iter().all(|r| r["type"] == "subscribed"), "{replies:?}");
}

/// The subscription limit refuses the next topic and keeps the others; unsubscribe sends
/// `unsubscribed`, after which the topic delivers nothing; a second unsubscribe says so.
#[tokio::test]
async fn the_subscription_limit_and_unsubscribe() {
    let config = ServiceConfig { max_topics_per_connection: 2, ..ServiceConfig::default() };
    let (service, broker) = service_over(Arc::new(MapRegistry::default()), config);
    let (id, sink) = connect(&service, identity("alice", &[], &[]));
    service.open_streams(id, &BTreeMap::new()).await.unwrap_or_else(|e| panic!("{e}"));
    for name in ["a", "b"] {
        service.subscribe(sub(id, name, None, &["*"])).await.unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(
        service.subscribe(sub(id, "c", None, &["*"])).await,
        Err(SubscribeError::TooManyTopics { max: 2 })
    );
    assert!(service.subscribe(sub(id, "a", None, &["*"])).await.is_ok(), "again is no new topic");
    let a = stream("topic:a");
    assert!(broker.interest.lock().unwrap_or_else(|e| e.into_inner()).contains(&(a.clone(), true)));
    assert_eq!(service.unsubscribe(id, &topic("a"), None).await, Ok(()));
    let before = sink.len();
    assert_eq!(service.deliver(&a, None, &frame("late")), 0);
    assert_eq!(sink.len(), before);
    let last: serde_json::Value =
        serde_json::from_str(&sink.texts()[before - 1]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(last["type"], "unsubscribed");
    assert_eq!(
        service.unsubscribe(id, &topic("a"), None).await,
        Err(UnsubscribeError::NotSubscribed)
    );
    assert!(broker.interest.lock().unwrap_or_else(|e| e.into_inner()).contains(&(a, false)));
}

/// A revocation closes the user's older connections (4005), refuses older tokens at
/// connect and refresh, and keeps newer ones.
#[tokio::test]
async fn revocation_closes_older_tokens_and_refuses_them_from_then_on() {
    let (service, _broker) =
        service_over(Arc::new(MapRegistry::default()), ServiceConfig::default());
    let issued = |secs: u64| {
        let mut identity = identity("alice", &[], &[]);
        identity.issued_at = Some(UnixMillis(secs * 1000));
        identity
    };
    let (old, old_sink) = connect(&service, issued(100));
    let (new, new_sink) = connect(&service, issued(300));
    let (_bob, bob_sink) = connect(&service, identity("bob", &[], &[]));
    let alice = realtime_core::UserId::new("alice").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(RealtimeApi::revoke(&*service, &alice, UnixMillis(200_000)).await, Ok(1));
    assert_eq!(old_sink.closed(), Some(SinkClosed::By(CloseReason::Revoked)));
    assert_eq!(new_sink.closed(), None);
    assert_eq!(bob_sink.closed(), None);
    assert!(!service.unregister(old, realtime_ports::DisconnectReason::ClientClosed), "removed");
    let mut again = request(issued(150));
    again.sink = Arc::new(RecordingSink::new());
    assert_eq!(service.connect(again).map(|c| c.id), Err(ConnectError::Revoked));
    assert_eq!(service.refresh(new, &issued(150)), Err(RefreshError::Revoked));
    assert_eq!(service.refresh(new, &issued(400)), Ok(()));
    assert_eq!(service.refresh(new, &identity("bob", &[], &[])), Err(RefreshError::DifferentUser));
}

/// A subscribe dropped while the history is read (the transport's timeout) leaves nothing
/// behind: no subscription, and no hold that would keep the topic's frames back.
#[tokio::test]
async fn a_subscribe_cancelled_during_the_read_leaves_no_hold_and_no_subscription() {
    let registry = Arc::new(MapRegistry::default());
    let (service, broker) = service_over(registry.clone(), ServiceConfig::default());
    let (id, sink) = connect(&service, identity("alice", &[], &[]));
    service.open_streams(id, &BTreeMap::new()).await.unwrap_or_else(|e| panic!("{e}"));
    broker.stall.store(true, std::sync::atomic::Ordering::Release);
    let stalled = tokio::time::timeout(
        std::time::Duration::from_millis(20),
        service.subscribe(sub(id, "orders", None, &["*"])),
    )
    .await;
    assert!(stalled.is_err(), "the read hangs");
    assert!(registry.topics_of(id).is_empty(), "the new subscription was undone");
    assert_eq!(service.deliver(&stream("topic:orders"), None, &frame("x")), 0);
    broker.stall.store(false, std::sync::atomic::Ordering::Release);
    service.subscribe(sub(id, "orders", None, &["*"])).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(service.deliver(&stream("topic:orders"), None, &frame("live")), 1);
    assert_eq!(sink.texts().last().map(String::as_str), Some(frame("live").as_str()), "not held");
}
