//! permessage-deflate (RFC 7692) on real sockets: a raw client offers it (as Chromium does),
//! reads the server's frames bit by bit and inflates them with flate2, independently of the
//! server's code, and sends compressed messages of its own, broken ones and a bomb included.

use realtime_core::{ConnectionId, Envelope, Frame, Target, UserId};
use realtime_ports::{DisconnectReason, RealtimeApi};
use realtime_testkit::raw_ws::{self, RawFrame, RawWs, ServerFrame, TEXT};
use realtime_transport_http::TransportConfig;
use serde_json::{Value, json};

use super::support::{self, test_config};

/// What Chromium offers.
const BROWSER_OFFER: (&str, &str) =
    ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits");

/// What the server answers when it agrees.
const AGREED: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

fn deflating() -> TransportConfig {
    TransportConfig { permessage_deflate: true, ..test_config() }
}

/// The `Sec-WebSocket-Extensions` value of a response head, if any.
fn extensions(head: &str) -> Option<String> {
    head.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-extensions").then(|| value.trim().to_owned())
    })
}

/// Upgrades as alice with `headers`; returns the socket, the agreed extensions and the
/// `connected` frame's JSON.
async fn open(
    addr: std::net::SocketAddr,
    headers: &[(&str, &str)],
) -> (RawWs, Option<String>, Value) {
    let (mut ws, head) = RawWs::upgrade_with(addr, "/ws?token=good.alice", headers).await;
    let hello = text_of(&next(&mut ws).await);
    assert_eq!(hello["type"], "connected", "{hello}");
    (ws, extensions(&head), hello)
}

async fn next(ws: &mut RawWs) -> ServerFrame {
    ws.next_frame().await.unwrap_or_else(|| panic!("the connection ended"))
}

/// A text frame's JSON, inflated first when RSV1 says it is compressed.
fn text_of(frame: &ServerFrame) -> Value {
    assert_eq!(frame.opcode, TEXT, "{frame:?}");
    let bytes = if frame.rsv1 { raw_ws::inflate(&frame.payload) } else { frame.payload.clone() };
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}"))
}

/// A dashboard-like publication of about 2 KiB of repetitive JSON.
fn figures() -> Envelope {
    let rows: Vec<Value> =
        (0..60).map(|n| json!({"metric": format!("orders.region.{n}"), "value": n * 7})).collect();
    Envelope::from_parts("dashboard", json!({ "rows": rows })).unwrap_or_else(|e| panic!("{e}"))
}

/// A client message compressed, as a compressing client sends it (RSV1 on the frame).
fn compressed(text: &str) -> Vec<u8> {
    RawFrame { rsv: 0b100, ..RawFrame::new(TEXT, raw_ws::deflate(text.as_bytes())) }.encode()
}

#[tokio::test]
async fn it_is_agreed_only_when_enabled_and_offered_in_a_form_the_server_honours() {
    let off = support::start(test_config()).await;
    let (_ws, agreed, _) = open(off.addr, &[BROWSER_OFFER]).await;
    assert_eq!(agreed, None, "off by default");
    off.stop().await;

    let on = support::start(deflating()).await;
    let (_ws, agreed, _) = open(on.addr, &[]).await;
    assert_eq!(agreed, None, "not offered");
    let (_ws, agreed, _) = open(on.addr, &[BROWSER_OFFER]).await;
    assert_eq!(agreed.as_deref(), Some(AGREED));
    let smaller_window =
        ("Sec-WebSocket-Extensions", "permessage-deflate; server_max_window_bits=10");
    let (_ws, agreed, _) = open(on.addr, &[smaller_window]).await;
    assert_eq!(agreed, None, "a smaller server window is declined");
    let fallback = (
        "Sec-WebSocket-Extensions",
        "permessage-deflate; server_max_window_bits=10, permessage-deflate",
    );
    let (_ws, agreed, _) = open(on.addr, &[fallback]).await;
    assert_eq!(agreed.as_deref(), Some(AGREED), "the next offer is taken");
    let full_window = ("Sec-WebSocket-Extensions", "permessage-deflate; server_max_window_bits=15");
    let (_ws, agreed, _) = open(on.addr, &[full_window]).await;
    assert_eq!(
        agreed,
        Some(format!("{AGREED}; server_max_window_bits=15")),
        "a window limit the server honours is echoed (RFC 7692 7.1.2.1)"
    );
    on.stop().await;
}

#[tokio::test]
async fn large_frames_go_compressed_small_ones_as_they_are_and_compressed_messages_are_read() {
    let server = support::start(deflating()).await;
    let (mut ws, _, hello) = open(server.addr, &[BROWSER_OFFER]).await;
    let id = ConnectionId::parse(hello["payload"]["connection_id"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    let (mut plain, plain_agreed, _) = open(server.addr, &[]).await;
    assert_eq!(plain_agreed, None);

    let alice = Target::User(UserId::new("alice").unwrap_or_else(|e| panic!("{e}")));
    let delivered = server.api.publish(&alice, &figures()).await;
    assert_eq!(delivered, Ok(2));
    let wire = Frame::encode(&figures());
    let big = next(&mut ws).await;
    assert!(big.rsv1, "a 2 KiB frame is compressed");
    assert!(big.payload.len() * 3 < wire.as_bytes().len(), "{} bytes", big.payload.len());
    assert_eq!(raw_ws::inflate(&big.payload), wire.as_bytes().as_ref());
    let uncompressed = next(&mut plain).await;
    assert!(!uncompressed.rsv1, "a connection without the extension gets it as it is");
    assert_eq!(uncompressed.payload, wire.as_bytes().as_ref());

    // Below the threshold (256 bytes): as it is.
    let small = Frame::from_text(r#"{"type":"note","payload":{"n":1}}"#.to_owned());
    assert_eq!(server.api.send_one(id, small.clone()), Ok(()));
    let frame = next(&mut ws).await;
    assert!(!frame.rsv1);
    assert_eq!(frame.payload, small.as_bytes().as_ref());

    // A compressed client message is read: a ping is answered with its id.
    ws.write(&compressed(r#"{"type":"ping","id":"z1"}"#)).await;
    let pong = text_of(&next(&mut ws).await);
    assert_eq!((pong["type"].as_str(), pong["id"].as_str()), (Some("pong"), Some("z1")), "{pong}");
    server.stop().await;
}

#[tokio::test]
async fn a_bomb_and_broken_compressed_data_close_the_connection_with_their_codes() {
    let server = support::start(TransportConfig { max_message_bytes: 4096, ..deflating() }).await;
    // 1 MiB of one byte compresses to about 1 KiB: within the frame limit, far over the
    // message limit once inflated.
    let bomb = format!(r#"{{"type":"ping","pad":"{}"}}"#, "0".repeat(1 << 20));
    let cases: [(&str, Vec<u8>, u16); 3] = [
        ("bomb", compressed(&bomb), 1009),
        (
            "broken",
            RawFrame { rsv: 0b100, ..RawFrame::new(TEXT, [0xff, 0xff, 0xff]) }.encode(),
            1002,
        ),
        (
            "compressed control frame",
            RawFrame { rsv: 0b100, ..RawFrame::new(raw_ws::PING, *b"p") }.encode(),
            1002,
        ),
    ];
    for (name, bytes, code) in cases {
        assert!(bytes.len() < 4096, "{name}: {} bytes", bytes.len());
        let (mut ws, _, hello) = open(server.addr, &[BROWSER_OFFER]).await;
        let id =
            ConnectionId::parse(hello["payload"]["connection_id"].as_str().unwrap_or_default())
                .unwrap_or_else(|e| panic!("{e}"));
        ws.write(&bytes).await;
        assert_eq!(ws.expect_close().await.map(|(code, _)| code), Some(code), "{name}");
        assert_eq!(server.api.disconnected(id).await, DisconnectReason::ProtocolError, "{name}");
    }
    // Without the extension agreed, RSV1 is a reserved bit (the violations suite's case).
    let (mut ws, _, _) = open(server.addr, &[]).await;
    ws.write(&compressed(r#"{"type":"ping"}"#)).await;
    assert_eq!(ws.expect_close().await.map(|(code, _)| code), Some(1002));
    assert_eq!(server.api.connection_count_now(), 0);
    server.stop().await;
}
