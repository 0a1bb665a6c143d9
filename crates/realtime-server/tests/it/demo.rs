//! The demo's own actions are bounded: a connection runs at most three demo jobs at once, a
//! fourth is refused with a `rejected` error frame, and a slot comes back when a job ends.

use crate::support::{self, next_json, send_text};

#[tokio::test]
async fn a_connection_runs_at_most_three_demo_jobs_at_once() {
    let mut config = support::config();
    config.demo = Some(true);
    let running = support::start(config).await;
    let (mut ws, _) = support::connect(running.addr, &support::token("alice", &["user"])).await;
    for _ in 0..4 {
        send_text(&mut ws, r#"{"type":"demo.job"}"#).await;
    }
    // The answers come in order; job progress frames come in between.
    let mut answers = Vec::new();
    let mut done = 0;
    while answers.len() < 4 {
        let frame = next_json(&mut ws).await;
        match frame["type"].as_str() {
            Some("demo.ack") => answers.push("ack".to_owned()),
            Some("error") => answers.push(format!("{}", frame["payload"]["code"])),
            Some("job-progress") if frame["payload"]["progress"] == 100 => done += 1,
            _ => {}
        }
    }
    assert_eq!(answers, ["ack", "ack", "ack", "\"rejected\""]);

    // Another connection has slots of its own.
    let (mut other, _) = support::connect(running.addr, &support::token("alice", &["user"])).await;
    send_text(&mut other, r#"{"type":"demo.job"}"#).await;
    assert_eq!(next_json(&mut other).await["type"], "demo.ack");

    // Once the three jobs have ended, the first connection may start another.
    while done < 3 {
        let frame = next_json(&mut ws).await;
        if frame["type"] == "job-progress" && frame["payload"]["progress"] == 100 {
            done += 1;
        }
    }
    send_text(&mut ws, r#"{"type":"demo.job"}"#).await;
    loop {
        let frame = next_json(&mut ws).await;
        if frame["type"] != "job-progress" {
            assert_eq!(frame["type"], "demo.ack", "{frame}");
            break;
        }
    }
    drop((ws, other));
    support::stop(running).await;
}

/// The demo page's flow with a real client: it subscribes to `demo:news` and receives what
/// `demo.topic` publishes there; after `demo.notify_later` it drops its socket (the server
/// stays up), reconnects with `since`, and gets the three notifications once and in order.
#[tokio::test]
async fn the_demo_topic_and_notifications_sent_while_the_page_was_offline() {
    use realtime_testkit::ws::{Connect, try_connect};

    let mut config = support::config();
    config.demo = Some(true);
    let running = support::start(config).await;
    let token = support::demo_token("alice");
    let subprotocol = format!("realtime.v1, bearer.{token}");
    let open = |query: Option<String>| {
        let subprotocol = subprotocol.clone();
        async move {
            let options = Connect {
                subprotocol: Some(&subprotocol),
                query: query.as_deref(),
                ..Connect::default()
            };
            let (mut ws, _) = try_connect(running.addr, options)
                .await
                .unwrap_or_else(|status| panic!("refused: {status}"));
            let connected = next_json(&mut ws).await;
            assert_eq!(connected["type"], "connected", "{connected}");
            (ws, connected)
        }
    };
    let (mut ws, connected) = open(None).await;
    let positions = connected["payload"]["streams"].clone();
    assert!(positions["user:alice"]["offset"].is_u64(), "{connected}");

    send_text(&mut ws, r#"{"type":"subscribe","id":"news","payload":{"topic":"demo:news"}}"#).await;
    let subscribed = next_json(&mut ws).await;
    assert_eq!(
        (subscribed["type"].as_str(), subscribed["id"].as_str()),
        (Some("subscribed"), Some("news"))
    );
    send_text(&mut ws, r#"{"type":"demo.topic"}"#).await;
    let mut news = None;
    while news.is_none() {
        let frame = next_json(&mut ws).await;
        if frame["type"] == "news" {
            assert_eq!(frame["stream"], "topic:demo:news", "{frame}");
            news = Some(frame);
        }
    }

    send_text(&mut ws, r#"{"type":"demo.notify_later"}"#).await;
    loop {
        let frame = next_json(&mut ws).await;
        if frame["type"] == "demo.ack" && frame["payload"]["action"] == "notify_later" {
            break;
        }
    }
    drop(ws);
    // The three go out 1, 2 and 3 s after the ack; whatever is not out yet when the page is
    // back arrives live. Either way: each once, in order.
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    let since = serde_json::json!({ "user:alice": positions["user:alice"] });
    let (mut ws, connected) = open(Some(realtime_testkit::ws::since_query(&since))).await;
    assert_eq!(connected["payload"]["streams"]["user:alice"]["recovered"], true, "{connected}");
    let mut texts = Vec::new();
    let mut offsets = Vec::new();
    while texts.len() < 3 {
        let frame = next_json(&mut ws).await;
        if frame["type"] == "notification" {
            texts.push(frame["payload"]["message"].as_str().unwrap_or_default().to_owned());
            offsets.push(frame["offset"].as_u64().unwrap_or_default());
        }
    }
    assert!(texts[0].starts_with("Sent while you were offline (1 of 3"), "{texts:?}");
    assert!(texts[2].starts_with("Sent while you were offline (3 of 3"), "{texts:?}");
    let first = positions["user:alice"]["offset"].as_u64().unwrap_or_default();
    assert_eq!(offsets, [first + 1, first + 2, first + 3], "once each, in order");
    // Nothing more: a ping's pong is the next frame.
    send_text(&mut ws, r#"{"type":"ping"}"#).await;
    assert_eq!(next_json(&mut ws).await["type"], "pong");
    drop(ws);
    support::stop(running).await;
}
