//! Limits below the WebSocket layer, on the real server: clients that never finish their
//! request (slowloris) are closed after the header timeout, are counted, and do not lock a
//! real client (real JWT) out.

use std::time::Duration;

use serde_json::json;
use tokio::net::TcpStream;

use crate::support;

/// Raw sockets that send half a request line: more than `max_http_connections` (1024), so
/// the real client usually waits behind some of them in the accept queue.
const STALLED: usize = 2000;
/// A generous bound for the server to close every stalled socket (the header timeout is 1 s;
/// they are accepted in batches of 1024).
const ALL_CLOSED_WITHIN: Duration = Duration::from_secs(30);

/// Waits until the server closes `stream` (EOF or reset); whatever it sent first is skipped.
async fn closed_by_server(stream: &TcpStream) {
    let mut buffer = [0u8; 256];
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        match stream.try_read(&mut buffer) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

#[tokio::test]
async fn slowloris_sockets_are_closed_and_a_real_client_still_connects_and_receives() {
    let mut config = support::config();
    config.header_read_timeout_secs = 1;
    let running = support::start(config).await;
    let addr = running.addr;
    let timeouts = r#"realtime_http_connection_errors_total{reason="header_timeout"}"#;
    let timeouts_before = support::counter(addr, timeouts).await;

    let mut stalled = Vec::with_capacity(STALLED);
    for _ in 0..STALLED {
        let stream = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect: {e}"));
        // Sent at once: the socket's buffer has room.
        assert_eq!(stream.try_write(b"GET /ws?tok").unwrap_or_else(|e| panic!("{e}")), 11);
        stalled.push(stream);
    }

    // A real client with a real token connects and receives a published message.
    let (mut ws, _) = support::connect(addr, &support::token("alice", &["user"])).await;
    let body = json!({"target": {"user": "alice"}, "message": {"type": "n", "payload": {"k": 1}}});
    assert_eq!(support::delivered(addr, &body).await, 1);
    let message = support::next_json(&mut ws).await;
    assert_eq!((&message["type"], &message["payload"]["k"]), (&json!("n"), &json!(1)));

    // Every stalled socket is closed by the server.
    let all_closed = async {
        for stream in &stalled {
            closed_by_server(stream).await;
        }
    };
    tokio::time::timeout(ALL_CLOSED_WITHIN, all_closed)
        .await
        .unwrap_or_else(|_| panic!("stalled sockets still open after {ALL_CLOSED_WITHIN:?}"));
    drop(stalled);
    // Each one was counted. (Whether `max_http_connections` was reached depends on how fast
    // the sockets connected; the transport's tests check the cap itself.)
    let timeouts_after = support::counter(addr, timeouts).await;
    assert!(
        timeouts_after >= timeouts_before + STALLED as u64,
        "header timeouts counted: {timeouts_before} before, {timeouts_after} after"
    );
    // The real client is still connected.
    assert_eq!(support::delivered(addr, &body).await, 1);
    assert_eq!(support::next_json(&mut ws).await["type"], "n");
    support::stop(running).await;
}
