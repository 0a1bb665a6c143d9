//! A client that never reads fills its bounded queue and is closed with 4008, while a client
//! that reads receives every message, and nothing waits on the slow one.

use realtime_core::{Envelope, Target};
use realtime_ports::{DisconnectReason, RealtimeApi};
use realtime_testkit::ws::spawn_json_reader;
use realtime_transport_http::TransportConfig;
use serde_json::json;

use super::support::{self, test_config};

/// Enough 48 KiB messages to fill any loopback socket buffers many times over.
const MAX_MESSAGES: usize = 2000;

#[tokio::test]
async fn a_client_that_never_reads_is_closed_with_4008_and_the_others_get_everything() {
    // The slow client starts reading only after the checks below: its close frame must
    // wait for it that long.
    let config = TransportConfig {
        outbound_queue: 8,
        close_timeout: std::time::Duration::from_secs(5),
        ..test_config()
    };
    let server = support::start(config).await;
    let (mut slow, slow_id) = support::connect(server.addr, "good.slow").await;
    let (fast, _) = support::connect(server.addr, "good.fast").await;

    // The fast client reads everything and reports each sequence number it sees.
    let (reader, mut seen) = spawn_json_reader(fast, |v| v["payload"]["seq"].as_u64());

    let filler = "x".repeat(48 * 1024);
    let mut published = 0u64;
    let mut slow_gone = false;
    for seq in 0..MAX_MESSAGES as u64 {
        let message = Envelope::from_parts("tick", json!({"seq": seq, "filler": filler}))
            .unwrap_or_else(|e| panic!("{e}"));
        let delivered = server
            .api
            .publish(&Target::Broadcast, &message)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        published += 1;
        // Lock step with the fast client, so only the slow one can fall behind.
        let got = tokio::time::timeout(support::WAIT, seen.recv())
            .await
            .unwrap_or_else(|_| panic!("fast client missed message {seq}"));
        assert_eq!(got, Some(Some(seq)));
        if delivered == 1 {
            slow_gone = true;
            break;
        }
        assert_eq!(delivered, 2);
    }
    assert!(slow_gone, "the slow client was never cut off");
    assert_eq!(server.api.disconnected(slow_id).await, DisconnectReason::SlowConsumer);

    // The fast client still receives what comes next.
    let after =
        Envelope::from_parts("tick", json!({"seq": published})).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(server.api.publish(&Target::Broadcast, &after).await, Ok(1));
    assert_eq!(
        tokio::time::timeout(support::WAIT, seen.recv()).await.ok().flatten(),
        Some(Some(published))
    );

    // Once the slow client reads, the close frame is there after what was already sent.
    assert_eq!(support::expect_close(&mut slow).await, (4008, "slow consumer".to_owned()));
    reader.abort();
    server.stop().await;
}
