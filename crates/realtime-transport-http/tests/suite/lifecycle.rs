//! Timers and shutdown: a silent client is closed with 4004, an answering one stays, an
//! expiring token closes with 4001, and a shutdown closes every socket with 1012,
//! unregisters each one and lets `run` return.

use std::time::Duration;

use futures_util::StreamExt;
use realtime_core::LivenessConfig;
use realtime_ports::DisconnectReason;
use realtime_transport_http::TransportConfig;
use tokio_tungstenite::tungstenite::Message;

use super::support::{self, test_config};

fn short_heartbeat(ping_ms: u64, pong_ms: u64) -> TransportConfig {
    TransportConfig {
        liveness: LivenessConfig {
            ping_interval: Duration::from_millis(ping_ms),
            pong_timeout: Duration::from_millis(pong_ms),
        },
        ..test_config()
    }
}

#[tokio::test]
async fn a_client_that_never_answers_pings_is_closed_with_4004() {
    let server = support::start(short_heartbeat(200, 200)).await;
    let (mut ws, id) = support::connect(server.addr, "good.alice").await;
    // The client does not read (so it never answers the ping) until the server gave up.
    assert_eq!(server.api.disconnected(id).await, DisconnectReason::HeartbeatTimeout);
    assert_eq!(support::expect_close(&mut ws).await, (4004, "heartbeat timeout".to_owned()));
    assert_eq!(server.api.connection_count_now(), 0);
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_answers_pings_stays_connected() {
    let server = support::start(short_heartbeat(50, 3000)).await;
    let (mut ws, id) = support::connect(server.addr, "good.alice").await;
    let mut pings = 0;
    while pings < 4 {
        // Reading lets tungstenite answer each ping with a pong.
        let message = tokio::time::timeout(support::WAIT, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no ping in time"))
            .unwrap_or_else(|| panic!("stream ended"))
            .unwrap_or_else(|e| panic!("{e}"));
        match message {
            Message::Ping(_) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(server.api.disconnects().is_empty());
    support::send_text(&mut ws, r#"{"type":"ping"}"#).await;
    assert_eq!(support::next_json(&mut ws).await["type"], "pong");
    assert!(server.api.send_one(id, realtime_core::Frame::from_text("{}".to_owned())).is_ok());
    server.stop().await;
}

#[tokio::test]
async fn an_expiring_token_closes_the_connection_with_4001() {
    let server = support::start(test_config()).await;
    let (mut ws, id) = support::connect(server.addr, "expiring.300.alice").await;
    assert_eq!(support::expect_close(&mut ws).await, (4001, "token expired".to_owned()));
    assert_eq!(server.api.disconnected(id).await, DisconnectReason::TokenExpired);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_every_socket_with_1012_and_run_returns() {
    let server = support::start(test_config()).await;
    let mut clients = Vec::new();
    for token in ["good.alice", "good.alice", "good.bob.admin"] {
        clients.push(support::connect(server.addr, token).await);
    }
    let addr = server.addr;
    let api = server.api.clone();
    server.shutdown.shutdown();
    for (ws, id) in &mut clients {
        assert_eq!(support::expect_close(ws).await, (1012, "server restart".to_owned()));
        assert_eq!(api.disconnected(*id).await, DisconnectReason::Shutdown);
    }
    tokio::time::timeout(support::WAIT, server.task)
        .await
        .unwrap_or_else(|_| panic!("run did not return"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(api.connection_count_now(), 0);
    assert_eq!(api.disconnects().len(), 3, "each connection unregistered once");
    // No longer accepting.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn shutdown_drops_clients_that_do_not_answer_within_the_grace_period() {
    let config = TransportConfig {
        close_timeout: Duration::from_secs(30),
        shutdown_grace: Duration::from_millis(300),
        ..test_config()
    };
    let server = support::start(config).await;
    // This client never reads: the close frame goes out, but the closing handshake never
    // completes, so only the grace period ends the connection.
    let (_silent, id) = support::connect(server.addr, "good.alice").await;
    let api = server.api.clone();
    server.shutdown.shutdown();
    tokio::time::timeout(support::WAIT, server.task)
        .await
        .unwrap_or_else(|_| panic!("run did not return within the grace period"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(api.disconnected(id).await, DisconnectReason::Shutdown);
    assert_eq!(api.connection_count_now(), 0);
}
