//! A pub/sub connection that goes silent (TCP up, nothing arrives, as with a detached
//! replica behind a proxy): the idle probe finds it, the node reconnects, reports what it
//! may have missed and delivers again. (The command connection stays up here: redis-rs does
//! not replace a command connection whose replies time out; see docs/scaling.md.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use realtime_broker_redis::{RedisBroker, RedisBrokerConfig};
use realtime_core::StreamName;
use realtime_ports::Broker;
use realtime_testkit::broker_contract::RecordingDelivery;
use realtime_testkit::{RedisProcess, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{message, runtime};

/// A TCP proxy whose `freeze_subscribers` makes every pub/sub connection open so far
/// silent for good, without closing it; other connections and later ones flow.
struct FreezingProxy {
    port: u16,
    links: Arc<Mutex<Vec<Link>>>,
}

/// One proxied connection: whether its client sent a SUBSCRIBE, and whether it is frozen.
#[derive(Clone, Default)]
struct Link {
    subscriber: Arc<AtomicBool>,
    frozen: Arc<AtomicBool>,
}

/// Copies `from` to `to` until either ends; once `frozen`, reads are held, never forwarded.
/// With `watch`, marks the link a subscriber when a SUBSCRIBE goes through.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    link: Link,
    watch: bool,
) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let Ok(n) = from.read(&mut buffer).await else { return };
        if n == 0 {
            return;
        }
        if watch && buffer[..n].windows(9).any(|w| w == b"SUBSCRIBE") {
            link.subscriber.store(true, Ordering::SeqCst);
        }
        while link.frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

impl FreezingProxy {
    async fn start(upstream: u16) -> FreezingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
        let links: Arc<Mutex<Vec<Link>>> = Arc::default();
        let registered = Arc::clone(&links);
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                let link = Link::default();
                registered.lock().push(link.clone());
                let (in_read, in_write) = inbound.into_split();
                let (out_read, out_write) = outbound.into_split();
                tokio::spawn(pump(in_read, out_write, link.clone(), true));
                tokio::spawn(pump(out_read, in_write, link, false));
            }
        });
        FreezingProxy { port, links }
    }

    fn freeze_subscribers(&self) {
        for link in self.links.lock().iter() {
            if link.subscriber.load(Ordering::SeqCst) {
                link.frozen.store(true, Ordering::SeqCst);
            }
        }
    }
}

#[test]
fn a_silent_pubsub_connection_is_probed_and_replaced() {
    runtime().block_on(async {
        let server = RedisProcess::start();
        let proxy = FreezingProxy::start(server.port()).await;
        let config = RedisBrokerConfig {
            probe_interval: Duration::from_millis(300),
            ..RedisBrokerConfig::new(format!("redis://127.0.0.1:{}/", proxy.port))
        };
        let broker = RedisBroker::connect(config).await.unwrap_or_else(|e| panic!("{e}"));
        let recorder = RecordingDelivery::new();
        recorder.attach_to(&broker);
        let to = StreamName::parse("topic:silent").unwrap_or_else(|e| panic!("{e}"));
        broker.interest(&to, true);
        broker.recover(&to, None, 300).await.unwrap_or_else(|e| panic!("{e}"));
        // Published directly to Redis, not through the proxy.
        let publisher = RedisBroker::connect(RedisBrokerConfig::new(server.url()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        publisher.publish(&to, message(), None).await.unwrap_or_else(|e| panic!("{e}"));
        let deadline = tokio::time::Instant::now() + WAIT;
        while recorder.offsets(&to).is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "the first publication");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        proxy.freeze_subscribers();
        publisher.publish(&to, message(), None).await.unwrap_or_else(|e| panic!("{e}"));
        // Nothing tells the node but its own probe going unanswered.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let state = broker.state();
            if state.reconnects >= 1 && state.connected {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "never reconnected: {state:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The publication sent into the silence is reported as lost; the next is delivered.
        let deadline = tokio::time::Instant::now() + WAIT;
        while recorder.lost() != [to.clone()] {
            assert!(tokio::time::Instant::now() < deadline, "the loss: {:?}", recorder.calls());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let third = publisher.publish(&to, message(), None).await.unwrap_or_else(|e| panic!("{e}"));
        let third = third.position.unwrap_or_else(|| panic!("a position"));
        let deadline = tokio::time::Instant::now() + WAIT;
        while !recorder.offsets(&to).contains(&Some(third.offset)) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "delivered after: {:?}",
                recorder.calls()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(recorder.offsets(&to), [Some(1), Some(3)], "2 was reported, never delivered");
    });
}
