//! permessage-deflate through the whole server binary (`REALTIME_WEBSOCKET_COMPRESSION=true`):
//! raw clients that offer it as Chromium does get a large broadcast compressed (inflated here
//! with flate2, independently of the server's code), a client that does not offer it gets the
//! same bytes uncompressed, and the publication is compressed once for all its recipients
//! (`realtime_frames_compressed_total` in `/metrics` goes up by one), on the memory broker
//! and on Redis (a server of the test's own).

use std::net::SocketAddr;

use realtime_testkit::RedisProcess;
use realtime_testkit::raw_ws::{self, RawWs, ServerFrame, TEXT};
use serde_json::{Value, json};

use crate::support::{self, ServerBinary};

const OFFER: (&str, &str) =
    ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits");

/// A text frame's JSON, inflated first when RSV1 says it is compressed.
fn json_of(frame: &ServerFrame) -> Value {
    assert_eq!(frame.opcode, TEXT, "{frame:?}");
    let bytes = if frame.rsv1 { raw_ws::inflate(&frame.payload) } else { frame.payload.clone() };
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}"))
}

async fn open(addr: SocketAddr, user: &str, headers: &[(&str, &str)]) -> (RawWs, String) {
    let path = format!("/ws?token={}", support::token(user, &[]));
    let (mut ws, head) = RawWs::upgrade_with(addr, &path, headers).await;
    let hello = json_of(&ws.next_frame().await.unwrap_or_else(|| panic!("no connected frame")));
    assert_eq!(hello["type"], "connected", "{hello}");
    (ws, head)
}

#[tokio::test]
async fn a_broadcast_is_compressed_once_for_every_client_that_agreed_and_sent_plain_to_the_rest() {
    compressed_once(&[]).await;
}

/// The same on the Redis broker: the publication comes back from Redis and is fanned out to
/// the node's connections from there.
#[tokio::test]
async fn on_the_redis_broker_too() {
    let redis = RedisProcess::start();
    compressed_once(&[
        ("REALTIME_BROKER", "redis".to_owned()),
        ("REALTIME_REDIS_URL", redis.url()),
    ])
    .await;
}

/// Four clients that offer compression and one that does not, on a server started with
/// compression on and `env`; one broadcast of about 2 KiB.
async fn compressed_once(env: &[(&str, String)]) {
    let mut env = env.to_vec();
    env.push(("REALTIME_WEBSOCKET_COMPRESSION", "true".to_owned()));
    let server = ServerBinary::start(&env).await;
    let mut agreed = Vec::new();
    for n in 0..4 {
        let (ws, head) = open(server.addr, &format!("user{n}"), &[OFFER]).await;
        assert!(
            head.to_ascii_lowercase().contains(
                "sec-websocket-extensions: permessage-deflate; server_no_context_takeover; \
                 client_no_context_takeover"
            ),
            "{head}"
        );
        agreed.push(ws);
    }
    let (mut plain, head) = open(server.addr, "plain", &[]).await;
    assert!(!head.to_ascii_lowercase().contains("sec-websocket-extensions"), "{head}");

    let rows: Vec<Value> =
        (0..60).map(|n| json!({"metric": format!("orders.region.{n}"), "value": n * 7})).collect();
    let before = support::counter(server.addr, "realtime_frames_compressed_total").await;
    let body =
        json!({"target": "broadcast", "message": {"type": "dashboard", "payload": {"rows": rows}}});
    // (On Redis the count comes back with the receipts, not in the answer: not checked here.)
    let response = support::publish(server.addr, &body).await;
    assert_eq!(response.status, 200, "{}", response.text());

    let plain_frame = plain.next_frame().await.unwrap_or_else(|| panic!("nothing for plain"));
    assert!(!plain_frame.rsv1);
    let sent = json_of(&plain_frame);
    assert_eq!(sent["payload"]["rows"], json!(rows));
    let mut compressed = Vec::new();
    for ws in &mut agreed {
        let frame = ws.next_frame().await.unwrap_or_else(|| panic!("nothing delivered"));
        assert!(frame.rsv1, "compressed for a client that agreed");
        assert!(
            frame.payload.len() * 3 < plain_frame.payload.len(),
            "{} of {} bytes",
            frame.payload.len(),
            plain_frame.payload.len()
        );
        assert_eq!(raw_ws::inflate(&frame.payload), plain_frame.payload, "the same frame");
        compressed.push(frame.payload);
    }
    assert!(compressed.windows(2).all(|pair| pair[0] == pair[1]));
    let after = support::counter(server.addr, "realtime_frames_compressed_total").await;
    assert_eq!(after - before, 1, "one compression for four recipients");
    drop(server);
}
