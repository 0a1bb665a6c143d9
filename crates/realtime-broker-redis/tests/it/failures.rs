//! What the broker answers when Redis is not there: an error, never a silent success, and
//! never the URL (it may carry a password).

use realtime_broker_redis::{ConnectError, RedisBroker, RedisBrokerConfig};
use realtime_core::StreamName;
use realtime_ports::{Broker, BrokerError};
use realtime_testkit::RedisProcess;

use crate::support::{message, runtime};

#[test]
fn connecting_to_no_redis_fails_without_the_password() {
    runtime().block_on(async {
        // A port nobody listens on: a server started and killed.
        let url = {
            let server = RedisProcess::start();
            format!("redis://:s3cret-pass@127.0.0.1:{}/", server.port())
        };
        let result = RedisBroker::connect(RedisBrokerConfig::new(url)).await;
        let Err(ConnectError::Unavailable(text)) = result else {
            panic!("connected to nothing: {result:?}");
        };
        assert!(!text.contains("s3cret"), "{text}");
    });
}

#[test]
fn a_publish_after_redis_died_is_an_error() {
    runtime().block_on(async {
        let server = RedisProcess::start();
        let url = server.url();
        let broker = RedisBroker::connect(RedisBrokerConfig::new(url.clone()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let to = StreamName::parse("topic:x").unwrap_or_else(|e| panic!("{e}"));
        let first = broker.publish(&to, message(), None).await;
        assert!(first.is_ok(), "{first:?}");
        drop(server);
        let publish = broker.publish(&to, message(), None).await;
        assert!(matches!(publish, Err(BrokerError::Unavailable(_))), "{publish:?}");
        let recover = broker.recover(&to, None, 300).await;
        assert!(matches!(recover, Err(BrokerError::Unavailable(_))), "{recover:?}");
        broker.interest(&to, true);
        let interested = broker.recover(&to, None, 300).await;
        assert!(matches!(interested, Err(BrokerError::Unavailable(_))), "{interested:?}");
    });
}

#[test]
fn an_invalid_prefix_or_node_id_is_refused() {
    runtime().block_on(async {
        let bad_prefix = RedisBrokerConfig {
            prefix: "a{b}".to_owned(),
            ..RedisBrokerConfig::new("redis://127.0.0.1:1/")
        };
        assert!(matches!(RedisBroker::connect(bad_prefix).await, Err(ConnectError::InvalidPrefix)));
        let bad_node = RedisBrokerConfig {
            node_id: Some("a:b".to_owned()),
            ..RedisBrokerConfig::new("redis://127.0.0.1:1/")
        };
        assert!(matches!(RedisBroker::connect(bad_node).await, Err(ConnectError::InvalidNodeId)));
    });
}

/// A URL list with an empty entry or a URL twice is refused before connecting.
#[test]
fn a_bad_url_list_is_refused() {
    runtime().block_on(async {
        for list in ["", "redis://127.0.0.1:1/,", "redis://127.0.0.1:1/, redis://127.0.0.1:1/"] {
            let connected = RedisBroker::connect(RedisBrokerConfig::new(list)).await;
            assert!(
                matches!(connected, Err(ConnectError::InvalidUrlList)),
                "{list:?}: {connected:?}"
            );
        }
    });
}

/// One shard of two not there: connecting fails, says which shard, never with a password.
#[test]
fn connecting_with_one_shard_missing_fails_and_names_the_shard_only() {
    runtime().block_on(async {
        let up = RedisProcess::start();
        let gone = {
            let server = RedisProcess::start();
            format!("redis://:s3cret-pass@127.0.0.1:{}/", server.port())
        };
        let result =
            RedisBroker::connect(RedisBrokerConfig::new(format!("{},{gone}", up.url()))).await;
        let Err(ConnectError::Unavailable(text)) = result else {
            panic!("connected without the second shard: {result:?}");
        };
        assert!(text.contains("shard 2 of 2"), "{text}");
        assert!(!text.contains("s3cret") && !text.contains("127.0.0.1"), "{text}");
    });
}
