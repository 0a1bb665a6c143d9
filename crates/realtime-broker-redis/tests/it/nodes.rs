//! Subscriptions and the node-wide channels, with brokers sharing one Redis: interest
//! decides what a node receives, `recover` waits for its subscription, and messages to a
//! connection and revocations reach the other node.

use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use realtime_broker_redis::{RedisBroker, RedisBrokerConfig};
use realtime_core::{ConnectionId, Frame, Position, StreamName, UnixMillis, UserId};
use realtime_ports::{Broker, LocalDelivery};
use realtime_testkit::fixtures::{connection_id, user};
use realtime_testkit::{RedisProcess, WAIT};

use crate::support::{message, runtime};

/// A node's delivery: records stream offsets, holds the connections in `local`.
#[derive(Debug, Default)]
struct Node {
    local: Vec<ConnectionId>,
    streams: Mutex<Vec<(StreamName, Option<u64>)>>,
    connections: Mutex<Vec<ConnectionId>>,
    revoked: Mutex<Vec<(UserId, UnixMillis)>>,
    lost: Mutex<Vec<StreamName>>,
}

impl LocalDelivery for Node {
    fn deliver(&self, stream: &StreamName, position: Option<&Position>, _frame: &Frame) -> usize {
        self.streams.lock().push((stream.clone(), position.map(|p| p.offset)));
        1
    }

    fn deliver_to_connection(&self, id: ConnectionId, _frame: &Frame) -> bool {
        let here = self.local.contains(&id);
        if here {
            self.connections.lock().push(id);
        }
        here
    }

    fn revoke(&self, user: &UserId, issued_before: UnixMillis) -> usize {
        self.revoked.lock().push((user.clone(), issued_before));
        0
    }

    fn lost(&self, stream: &StreamName) -> usize {
        self.lost.lock().push(stream.clone());
        0
    }
}

fn stream(raw: &str) -> StreamName {
    StreamName::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"))
}

async fn node(server: &RedisProcess, delivery: &Arc<Node>) -> RedisBroker {
    let broker = RedisBroker::connect(RedisBrokerConfig::new(server.url()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    broker.attach(Arc::downgrade(delivery) as Weak<dyn LocalDelivery>);
    broker
}

/// Waits (at most `WAIT`) until `done` holds.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The last of many subscriptions asked for at once is confirmed well after the first:
/// `recover` of its stream must wait for it, or the publication right after is lost.
#[test]
fn recover_waits_for_its_streams_subscription() {
    runtime().block_on(async {
        let server = RedisProcess::start();
        let here = Arc::new(Node::default());
        let broker = node(&server, &here).await;
        let streams: Vec<StreamName> = (0..300).map(|i| stream(&format!("topic:t{i}"))).collect();
        for to in &streams {
            broker.interest(to, true);
        }
        let last = &streams[streams.len() - 1];
        broker.recover(last, None, 300).await.unwrap_or_else(|e| panic!("{e}"));
        let published = broker.publish(last, message(), None).await;
        assert_eq!(published.map(|p| p.position.map(|p| p.offset)), Ok(Some(1)));
        eventually("the publication after the read", || {
            here.streams.lock().contains(&(last.clone(), Some(1)))
        })
        .await;
    });
}

/// A node gets a stream's publications only while it is interested, whichever node
/// published them.
#[test]
fn interest_decides_what_a_node_receives() {
    runtime().block_on(async {
        let server = RedisProcess::start();
        let (a, b) = (Arc::new(Node::default()), Arc::new(Node::default()));
        let (node_a, node_b) = (node(&server, &a).await, node(&server, &b).await);
        let to = stream("topic:shared");
        node_b.interest(&to, true);
        node_b.recover(&to, None, 300).await.unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..3 {
            node_a.publish(&to, message(), None).await.unwrap_or_else(|e| panic!("{e}"));
        }
        eventually("b got 1..=3", || b.streams.lock().len() == 3).await;
        let offsets: Vec<_> = b.streams.lock().iter().map(|(_, o)| *o).collect();
        assert_eq!(offsets, [Some(1), Some(2), Some(3)]);
        node_b.interest(&to, false);
        node_b.interest(&to, true);
        node_b.interest(&to, false);
        // Wait until the unsubscribe was confirmed: a recover of a stream without interest
        // does not wait, so probe with a second stream's subscription (handled after it).
        let probe = stream("topic:probe");
        node_b.interest(&probe, true);
        node_b.recover(&probe, None, 300).await.unwrap_or_else(|e| panic!("{e}"));
        node_a.publish(&to, message(), None).await.unwrap_or_else(|e| panic!("{e}"));
        node_a.publish(&probe, message(), None).await.unwrap_or_else(|e| panic!("{e}"));
        eventually("the probe", || b.streams.lock().iter().any(|(s, _)| *s == probe)).await;
        let to_count = b.streams.lock().iter().filter(|(s, _)| *s == to).count();
        assert_eq!(to_count, 3, "nothing after the last interest(false)");
        assert!(a.streams.lock().is_empty(), "a was never interested");
    });
}

/// A message to a connection on another node reaches it there (and `Ok(0)`: the count needs
/// receipts); one on this node is delivered here, `Ok(1)`.
#[test]
fn a_message_reaches_the_connection_on_another_node() {
    runtime().block_on(async {
        let server = RedisProcess::start();
        let (on_a, on_b) = (connection_id(1), connection_id(2));
        let a = Arc::new(Node { local: vec![on_a], ..Node::default() });
        let b = Arc::new(Node { local: vec![on_b], ..Node::default() });
        let (node_a, _node_b) = (node(&server, &a).await, node(&server, &b).await);
        assert_eq!(node_a.send_to_connection(on_a, message()).await, Ok(1));
        assert_eq!(node_a.send_to_connection(on_b, message()).await, Ok(0));
        eventually("the message on b", || !b.connections.lock().is_empty()).await;
        assert_eq!(*a.connections.lock(), [on_a]);
        assert_eq!(*b.connections.lock(), [on_b]);
    });
}

/// A revocation reaches the other node's cache and connections; the revoking node does not
/// close its own twice (the service does).
#[test]
fn a_revocation_reaches_every_other_node() {
    runtime().block_on(async {
        let server = RedisProcess::start();
        let (a, b) = (Arc::new(Node::default()), Arc::new(Node::default()));
        let (node_a, node_b) = (node(&server, &a).await, node(&server, &b).await);
        let alice = user("alice");
        let far = UnixMillis(u64::MAX / 2);
        assert_eq!(node_a.revoke(&alice, UnixMillis(2_000), far).await, Ok(()));
        assert_eq!(node_a.revoked_before(&alice), Some(UnixMillis(2_000)));
        eventually("b knows", || node_b.revoked_before(&alice).is_some()).await;
        assert_eq!(node_b.revoked_before(&alice), Some(UnixMillis(2_000)));
        // Once from the control message; maybe once more from b's load at connect, which may
        // run after the revocation (closing twice closes nothing more).
        let calls = b.revoked.lock().clone();
        assert!(!calls.is_empty() && calls.len() <= 2, "{calls:?}");
        assert!(calls.iter().all(|call| *call == (alice.clone(), UnixMillis(2_000))), "{calls:?}");
        // A later message from b to a orders the check that a ignored its own.
        node_b.revoke(&user("bob"), UnixMillis(1), far).await.unwrap_or_else(|e| panic!("{e}"));
        eventually("a hears b", || !a.revoked.lock().is_empty()).await;
        assert_eq!(*a.revoked.lock(), [(user("bob"), UnixMillis(1))], "a skipped its own");
    });
}

/// A node started after a revocation knows it (loaded from Redis at connect), though it
/// never saw the control message: its tokens are refused there too.
#[test]
fn a_node_started_after_a_revocation_loads_it() {
    runtime().block_on(async {
        let server = RedisProcess::start();
        let a = Arc::new(Node::default());
        let node_a = node(&server, &a).await;
        let alice = user("alice");
        let far = UnixMillis(u64::MAX / 2);
        assert_eq!(node_a.revoke(&alice, UnixMillis(3_000), far).await, Ok(()));
        let b = Arc::new(Node::default());
        let node_b = node(&server, &b).await;
        eventually("b loaded it", || node_b.revoked_before(&alice).is_some()).await;
        assert_eq!(node_b.revoked_before(&alice), Some(UnixMillis(3_000)));
    });
}

/// Receipts: every node that received a publication reports its local count, summed; a
/// node not interested in the stream neither receives nor answers; a message to one
/// connection is counted by the node that holds it, and 0 by all when none does.
#[test]
fn receipts_sum_every_nodes_count() {
    runtime().block_on(async {
        let server = RedisProcess::start();
        let on_b = connection_id(7);
        let nodes: Vec<Arc<Node>> = vec![
            Arc::new(Node::default()),
            Arc::new(Node { local: vec![on_b], ..Node::default() }),
            Arc::new(Node::default()),
            Arc::new(Node::default()),
        ];
        let mut brokers = Vec::new();
        for delivery in &nodes {
            brokers.push(node(&server, delivery).await);
        }
        let to = stream("topic:receipts");
        for broker in &brokers[..3] {
            broker.interest(&to, true);
            broker.recover(&to, None, 300).await.unwrap_or_else(|e| panic!("{e}"));
        }
        let within = Duration::from_secs(2);
        let published = brokers[0].publish_counted(&to, message(), None, within).await;
        let published = published.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(published.delivered, 3, "one per interested node (each counts 1)");
        assert_eq!(
            published.nodes,
            Some(realtime_ports::NodeReceipts { answered: 3, expected: 3 })
        );
        assert!(nodes[3].streams.lock().is_empty());
        let plain =
            brokers[3].publish(&to, message(), None).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((plain.delivered, plain.nodes), (0, None), "no receipts asked for");

        let sent = brokers[0].send_to_connection_counted(on_b, message(), within).await;
        let (delivered, receipts) = sent.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(delivered, 1);
        assert!(receipts.is_some_and(|r| r.expected == 4 && r.answered >= 1), "{receipts:?}");
        let nobody = brokers[0].send_to_connection_counted(connection_id(99), message(), within);
        let (delivered, receipts) = nobody.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(delivered, 0, "on no live node");
        assert_eq!(receipts, Some(realtime_ports::NodeReceipts { answered: 4, expected: 4 }));
    });
}

/// A broker sharded over `servers` (in this order), attached to `delivery`.
async fn sharded_node(servers: &[&RedisProcess], delivery: &Arc<Node>) -> RedisBroker {
    let urls: Vec<String> = servers.iter().map(|s| s.url()).collect();
    // Spaces around the commas are allowed.
    let broker = RedisBroker::connect(RedisBrokerConfig::new(urls.join(" , ")))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    broker.attach(Arc::downgrade(delivery) as Weak<dyn LocalDelivery>);
    broker
}

/// Whether `key` is on `server`.
fn holds_key(server: &RedisProcess, key: &str) -> bool {
    server.command(&["EXISTS", key]) == ":1"
}

/// Whether `to`'s keys are on `server`.
fn holds(server: &RedisProcess, to: &StreamName) -> bool {
    holds_key(server, &format!("rt:{{{to}}}:meta"))
}

/// Two nodes sharded over the same two servers: streams are spread over both servers (each
/// stream's keys on exactly one), every publication reaches the other node in order with
/// its receipt, and what is node-wide (a message to a connection, a revocation) crosses
/// too.
#[test]
fn two_sharded_nodes_spread_streams_over_both_servers_and_deliver_across() {
    runtime().block_on(async {
        let (first, second) = (RedisProcess::start(), RedisProcess::start());
        let on_b = connection_id(5);
        let (a, b) =
            (Arc::new(Node::default()), Arc::new(Node { local: vec![on_b], ..Node::default() }));
        let node_a = sharded_node(&[&first, &second], &a).await;
        let node_b = sharded_node(&[&first, &second], &b).await;
        assert_eq!((node_a.state().shards, node_a.state().shards_connected), (2, 2));
        let streams: Vec<StreamName> = (0..16).map(|i| stream(&format!("topic:s{i}"))).collect();
        for to in &streams {
            node_b.interest(to, true);
            node_b.recover(to, None, 300).await.unwrap_or_else(|e| panic!("{e}"));
        }
        let within = Duration::from_secs(2);
        for round in 1..=2 {
            for to in &streams {
                let published = node_a.publish_counted(to, message(), None, within).await;
                let published = published.unwrap_or_else(|e| panic!("{to}: {e}"));
                assert_eq!(published.position.map(|p| p.offset), Some(round), "{to}");
                assert_eq!(published.delivered, 1, "{to}: b's receipt");
                assert_eq!(
                    published.nodes,
                    Some(realtime_ports::NodeReceipts { answered: 1, expected: 1 })
                );
            }
        }
        eventually("b got everything", || b.streams.lock().len() == 2 * streams.len()).await;
        for to in &streams {
            let offsets: Vec<Option<u64>> =
                b.streams.lock().iter().filter(|(s, _)| s == to).map(|(_, o)| *o).collect();
            assert_eq!(offsets, [Some(1), Some(2)], "{to}");
            assert_ne!(holds(&first, to), holds(&second, to), "{to}: on exactly one server");
        }
        let on_first = streams.iter().filter(|to| holds(&first, to)).count();
        assert!(0 < on_first && on_first < streams.len(), "{on_first} of 16 on the first");
        assert!(b.lost.lock().is_empty());
        assert!(a.streams.lock().is_empty(), "a was never interested");

        let sent = node_a.send_to_connection_counted(on_b, message(), within).await;
        assert_eq!(sent.map(|(delivered, _)| delivered), Ok(1));
        assert_eq!(*b.connections.lock(), [on_b]);
        let alice = user("alice");
        let far = UnixMillis(u64::MAX / 2);
        assert_eq!(node_a.revoke(&alice, UnixMillis(2_000), far).await, Ok(()));
        eventually("b knows", || node_b.revoked_before(&alice).is_some()).await;
        assert!(holds_key(&first, "rt:revoked:{alice}"), "revocations live on the first shard");
        assert!(!holds_key(&second, "rt:revoked:{alice}"));
    });
}
