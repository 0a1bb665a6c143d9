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
