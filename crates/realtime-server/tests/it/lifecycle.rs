//! A slow client is closed with 4008 while the others receive everything; a token that
//! expires mid-connection closes it with 4001 (at `exp` plus the verifier's leeway, so a token
//! admitted inside the leeway is served until then); shutdown sends 1012 to every client.

use realtime_testkit::jwt::{Claims, now_unix_secs};
use realtime_testkit::ws::spawn_json_reader;
use serde_json::json;

use crate::support::{self, SECRET};

/// More 48 KiB messages than loopback socket buffers can hold.
const MAX_MESSAGES: u64 = 2000;

#[tokio::test]
async fn a_client_that_never_reads_is_closed_with_4008_while_the_others_get_everything() {
    let mut config = support::config();
    config.outbound_queue = 8;
    let running = support::start(config).await;
    let addr = running.addr;
    let (mut slow, _) = support::connect(addr, &support::token("slow", &["user"])).await;
    let (fast, _) = support::connect(addr, &support::token("fast", &["user"])).await;
    let (reader, mut seen) = spawn_json_reader(fast, |v| v["payload"]["seq"].as_u64());
    let filler = "x".repeat(48 * 1024);
    let mut cut_off = None;
    for seq in 0..MAX_MESSAGES {
        let body = json!({
            "target": {"role": "user"},
            "message": {"type": "tick", "payload": {"seq": seq, "filler": filler}},
        });
        let delivered = support::delivered(addr, &body).await;
        // Lock step with the fast client, so only the slow one can fall behind.
        let got = tokio::time::timeout(support::WAIT, seen.recv()).await.ok().flatten();
        assert_eq!(got, Some(Some(seq)), "the fast client missed message {seq}");
        if delivered == 1 {
            cut_off = Some(seq);
            break;
        }
        assert_eq!(delivered, 2);
    }
    let cut_off = cut_off.unwrap_or_else(|| panic!("the slow client was never cut off"));
    support::eventually("slow client unregistered", || running.api.connection_count() == 1).await;
    // The fast client goes on receiving.
    let body = json!({"target": "broadcast", "message": {"type": "tick", "payload": {"seq": cut_off + 1}}});
    assert_eq!(support::delivered(addr, &body).await, 1);
    let got = tokio::time::timeout(support::WAIT, seen.recv()).await.ok().flatten();
    assert_eq!(got, Some(Some(cut_off + 1)));
    // The slow client finds the close frame after what was already on its way.
    assert_eq!(support::expect_close_then_end(&mut slow).await, (4008, "slow consumer".to_owned()));
    reader.abort();
    support::stop(running).await;
}

#[tokio::test]
async fn a_token_that_expires_mid_connection_closes_it_with_4001() {
    let mut config = support::config();
    config.jwt_leeway_secs = 1; // the connection ends at `exp` plus the leeway
    let running = support::start(config).await;
    let token = Claims::new("alice").roles(&["user"]).exp(now_unix_secs() + 2).mint(SECRET);
    let (mut ws, id) = support::connect(running.addr, &token).await;
    // Alive before the expiry...
    let body = json!({"target": {"connection": id.to_string()}, "message": {"type": "n"}});
    assert_eq!(support::delivered(running.addr, &body).await, 1);
    assert_eq!(support::next_json(&mut ws).await["type"], "n");
    // ...closed at it, and unregistered.
    assert_eq!(support::expect_close_then_end(&mut ws).await, (4001, "token expired".to_owned()));
    support::eventually("expired connection unregistered", || running.api.connection_count() == 0)
        .await;
    assert_eq!(support::delivered(running.addr, &body).await, 0);
    support::stop(running).await;
}

#[tokio::test]
async fn a_token_inside_the_leeway_is_served_until_the_leeway_is_over() {
    // `exp` 7 s ago is inside the default 10 s leeway: admitted, so it must not be closed
    // with 4001 at once; it is served until `exp` plus the leeway.
    let running = support::start(support::config()).await;
    let token = Claims::new("alice").roles(&["user"]).exp(now_unix_secs() - 7).mint(SECRET);
    let (mut ws, id) = support::connect(running.addr, &token).await;
    let body = json!({"target": {"connection": id.to_string()}, "message": {"type": "n"}});
    assert_eq!(support::delivered(running.addr, &body).await, 1);
    assert_eq!(support::next_json(&mut ws).await["type"], "n");
    // ...and then closed with 4001 when the leeway is over.
    assert_eq!(support::expect_close_then_end(&mut ws).await, (4001, "token expired".to_owned()));
    support::stop(running).await;
}

#[tokio::test]
async fn shutdown_sends_1012_to_every_client_and_unregisters_them() {
    let running = support::start(support::config()).await;
    let mut clients = Vec::new();
    for (user, roles) in [("alice", &["user"][..]), ("alice", &[]), ("bob", &["admin"])] {
        clients.push(support::connect(running.addr, &support::token(user, roles)).await);
    }
    assert_eq!(running.api.connection_count(), 3);
    let api = running.api.clone();
    let addr = running.addr;
    running.shutdown.shutdown();
    for (ws, _) in &mut clients {
        assert_eq!(support::expect_close_then_end(ws).await, (1012, "server restart".to_owned()));
    }
    tokio::time::timeout(support::WAIT, running.join())
        .await
        .unwrap_or_else(|_| panic!("the server did not finish its drain"));
    assert_eq!(api.connection_count(), 0);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "still accepting");
}
