//! WebSocket protocol violations (RFC 6455): for each, a raw client writes the bad frame
//! after a real upgrade; the server answers with a close frame carrying the matching status
//! (7.1.7: fail the connection with a close frame first) and unregisters the connection.

use realtime_ports::DisconnectReason;
use realtime_testkit::raw_ws::{CLOSE, CONTINUATION, PING, RawFrame, RawWs, TEXT};

use super::support::{self, test_config};

/// One violation: what the client writes, the close code it gets, why it is unregistered.
struct Case {
    name: &'static str,
    frame: RawFrame,
    code: u16,
    reason: DisconnectReason,
}

fn cases() -> Vec<Case> {
    let protocol =
        |name, frame| Case { name, frame, code: 1002, reason: DisconnectReason::ProtocolError };
    vec![
        Case {
            name: "invalid UTF-8 in a text frame",
            frame: RawFrame::new(TEXT, [b'{', 0xff, 0xfe, b'}']),
            code: 1007,
            reason: DisconnectReason::ProtocolError,
        },
        protocol("reserved bits set", RawFrame { rsv: 0b100, ..RawFrame::new(TEXT, *b"{}") }),
        protocol("unknown data opcode", RawFrame::new(0x3, *b"{}")),
        protocol("unknown control opcode", RawFrame::new(0xb, [])),
        protocol(
            "unmasked client frame",
            RawFrame { masked: false, ..RawFrame::new(TEXT, *b"{}") },
        ),
        protocol("fragmented control frame", RawFrame { fin: false, ..RawFrame::new(PING, []) }),
        protocol("control frame over 125 bytes", RawFrame::new(PING, vec![0u8; 126])),
        protocol("continuation without a start", RawFrame::new(CONTINUATION, *b"{}")),
        protocol("close frame with a 1-byte body", RawFrame::new(CLOSE, [0x03])),
        // A close frame with a code no peer may send is a violation, not a close.
        protocol("invalid close code", RawFrame::new(CLOSE, 999u16.to_be_bytes())),
    ]
}

#[tokio::test]
async fn each_violation_gets_its_close_code_and_unregisters_the_connection() {
    let server = support::start(test_config()).await;
    for case in cases() {
        let (mut ws, id) = RawWs::connect(server.addr, "good.alice").await;
        ws.write(&case.frame.encode()).await;
        let close = ws.expect_close().await;
        assert_eq!(close.map(|(code, _)| code), Some(case.code), "{}", case.name);
        assert_eq!(server.api.disconnected(id).await, case.reason, "{}", case.name);
    }
    assert_eq!(server.api.connection_count_now(), 0);
    server.stop().await;
}

#[tokio::test]
async fn a_client_close_with_a_valid_code_is_echoed() {
    let server = support::start(test_config()).await;
    let (mut ws, id) = RawWs::connect(server.addr, "good.alice").await;
    let mut body = 1000u16.to_be_bytes().to_vec();
    body.extend_from_slice(b"bye");
    ws.write(&RawFrame::new(CLOSE, body).encode()).await;
    assert_eq!(ws.expect_close().await, Some((1000, "bye".to_owned())));
    assert_eq!(server.api.disconnected(id).await, DisconnectReason::ClientClosed);
    server.stop().await;
}
