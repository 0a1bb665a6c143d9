//! The limits below the WebSocket layer: a request head over `max_header_bytes` gets 431, at
//! most `max_http_connections` are in the HTTP phase at once (an upgraded WebSocket leaves
//! it), client faults at the HTTP level log nothing at WARN or ERROR, and no HTTP connection
//! outlives the server's shutdown.

use std::time::Duration;

use realtime_testkit::logs::Capture;
use realtime_transport_http::TransportConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::support::{self, WAIT, http, test_config};

/// Opens a raw connection and sends `bytes` (part of a request, or garbage).
async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect: {e}"));
    stream.write_all(bytes).await.unwrap_or_else(|e| panic!("write: {e}"));
    stream
}

/// Reads until the server closes the connection (EOF or reset) and returns what it sent.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let read = async {
        let mut buffer = [0u8; 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .unwrap_or_else(|_| panic!("the server did not close the connection"));
    received
}

#[tokio::test]
async fn a_request_head_over_max_header_bytes_gets_431() {
    let config = TransportConfig { max_header_bytes: 8 * 1024, ..test_config() };
    let server = support::start(config).await;
    let fits = "a".repeat(6 * 1024);
    let response = http(server.addr, "GET", "/healthz", &[("X-Filler", &fits)], b"").await;
    assert_eq!(response.status, 200);
    let too_big = "a".repeat(9 * 1024);
    let response = http(server.addr, "GET", "/healthz", &[("X-Filler", &too_big)], b"").await;
    assert_eq!(response.status, 431);
    // The same for an upgrade request: the head is refused before any route sees it.
    let upgrade = format!(
        "GET /ws?token=good.alice HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nCookie: {too_big}\r\n\r\n"
    );
    assert_eq!(support::raw_http(server.addr, upgrade.as_bytes()).await.status, 431);
    assert_eq!(server.api.connection_count_now(), 0);
    server.stop().await;
}

#[tokio::test]
async fn a_connection_waits_for_a_slot_when_max_http_connections_are_open() {
    let config = TransportConfig {
        max_http_connections: 1,
        header_read_timeout: Duration::from_millis(300),
        ..test_config()
    };
    let server = support::start(config).await;
    // The only slot: a client that never finishes its request line.
    let stalled = raw(server.addr, b"GET /hea").await;
    // Accepted only once the stalled client is gone (its header timeout).
    let response = http(server.addr, "GET", "/healthz", &[], b"").await;
    assert_eq!(response.status, 200);
    let mut buffer = [0u8; 16];
    match stalled.try_read(&mut buffer) {
        Ok(0) => {}
        Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => {}
        other => {
            panic!("the stalled client was still open when the next one was served: {other:?}")
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_never_reads_its_answers_loses_its_slot() {
    let config = TransportConfig {
        max_http_connections: 1,
        header_read_timeout: Duration::from_millis(300),
        ..test_config()
    };
    let server = support::start(config).await;
    // The only slot: a client that pipelines requests and never reads the answers, so the
    // server's writes stall (no head is being read, so the header timeout does not apply).
    let mut stalled = raw(server.addr, b"").await;
    let writer = tokio::spawn(async move {
        let requests = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1000);
        for _ in 0..1000 {
            if stalled.write_all(&requests).await.is_err() {
                return true;
            }
        }
        false
    });
    // Served once the stalled client has been dropped (six header timeouts, plus one).
    let response = http(server.addr, "GET", "/healthz", &[], b"").await;
    assert_eq!(response.status, 200);
    let dropped = tokio::time::timeout(WAIT, writer).await;
    assert!(
        dropped.unwrap_or_else(|_| panic!("writer still blocked")).unwrap_or(false),
        "the stalled client's connection was closed"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_upgraded_websocket_frees_its_http_slot() {
    let config = TransportConfig { max_http_connections: 1, ..test_config() };
    let server = support::start(config).await;
    let (mut alice, _) = support::connect(server.addr, "good.alice").await;
    let (mut bob, _) = support::connect(server.addr, "good.bob").await;
    let body = serde_json::json!({"target": "broadcast", "message": {"type": "n"}});
    let response = support::publish(server.addr, &body).await;
    assert_eq!(response.json()["delivered"], 2);
    assert_eq!(support::next_json(&mut alice).await["type"], "n");
    assert_eq!(support::next_json(&mut bob).await["type"], "n");
    server.stop().await;
}

#[tokio::test]
async fn http_client_faults_are_logged_below_warn() {
    let capture = Capture::new();
    // A current-thread runtime: the server's tasks run on this thread, under this subscriber.
    let _guard = tracing::subscriber::set_default(capture.subscriber());
    let config = TransportConfig {
        header_read_timeout: Duration::from_millis(200),
        max_header_bytes: 8 * 1024,
        ..test_config()
    };
    let server = support::start(config).await;
    // Header timeout: half a request line, then nothing.
    let mut slow = raw(server.addr, b"GET /ws?tok").await;
    // Malformed: not HTTP at all.
    let mut garbage = raw(server.addr, b"\x16\x03\x01 hello\r\n\r\n").await;
    // Too large a head.
    let big = format!("GET / HTTP/1.1\r\nX-Filler: {}\r\n\r\n", "a".repeat(9 * 1024));
    let mut large = raw(server.addr, big.as_bytes()).await;
    // Half-open, then gone: part of the headers, then the client closes.
    drop(raw(server.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await);
    until_closed(&mut slow).await;
    assert!(until_closed(&mut garbage).await.starts_with(b"HTTP/1.1 400"));
    assert!(until_closed(&mut large).await.starts_with(b"HTTP/1.1 431"));
    // Still serving.
    assert_eq!(http(server.addr, "GET", "/healthz", &[], b"").await.status, 200);
    server.stop().await;

    let logs = capture.text();
    for reason in ["header_timeout", "malformed", "header_too_large"] {
        assert!(logs.contains(&format!("reason=\"{reason}\"")), "no {reason} logged:\n{logs}");
    }
    let loud: Vec<&str> = logs
        .lines()
        .filter(|line| matches!(line.split_whitespace().nth(1), Some("WARN" | "ERROR")))
        .collect();
    assert!(loud.is_empty(), "client faults logged at WARN or ERROR:\n{}", loud.join("\n"));
}

#[tokio::test]
async fn no_http_connection_outlives_the_shutdown() {
    let config = TransportConfig {
        header_read_timeout: Duration::from_secs(300),
        shutdown_grace: Duration::from_millis(300),
        ..test_config()
    };
    let server = support::start(config).await;
    // Still sending its request when the shutdown starts, and long after.
    let mut stalled = raw(server.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
    // Connections are accepted in order: once this one is answered, the stalled one is in.
    assert_eq!(http(server.addr, "GET", "/healthz", &[], b"").await.status, 200);
    server.stop().await;
    until_closed(&mut stalled).await;
}
