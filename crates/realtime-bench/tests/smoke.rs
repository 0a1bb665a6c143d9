//! Smoke test: the baseline binary, 200 real WebSocket clients, a few broadcasts and user
//! messages through its HTTP API; every delivery must arrive exactly once. No timing is
//! asserted.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use realtime_bench::http::HttpClient;
use realtime_bench::{SmokeOptions, smoke_with};

/// The baseline process, killed when dropped.
struct Baseline {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Baseline {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_baseline() -> Baseline {
    let mut child = Command::new(env!("CARGO_BIN_EXE_realtime-baseline"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning realtime-baseline: {e}"));
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    Baseline { child, addr }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_delivery_arrives_exactly_once_on_the_baseline() {
    let baseline = start_baseline();
    let report = smoke_with(SmokeOptions {
        addr: baseline.addr,
        api_key: "unused-by-the-baseline".into(),
        secret: b"smoke-test-secret-at-least-32-bytes!".to_vec(),
        connections: 200,
        broadcasts: 3,
        user_messages: 5,
        timeout: std::time::Duration::from_secs(5),
    })
    .await
    .unwrap_or_else(|e| panic!("smoke failed: {e}"));
    assert_eq!(report.connections, 200, "{report:?}");
    assert_eq!(report.expected, 200 * 3 + 5, "{report:?}");
    assert_eq!(report.delivered, report.expected, "{report:?}");
    assert_eq!((report.missing, report.extra), (0, 0), "{report:?}");
    assert_eq!(report.server_delivered, report.expected, "{report:?}");
    assert!(report.is_exactly_once());
}

#[tokio::test]
async fn the_baseline_answers_health_and_rejects_bad_publishes() {
    let baseline = start_baseline();
    let mut http = HttpClient::new(baseline.addr, None, std::time::Duration::from_secs(5));
    let health = http.get("/healthz").await.unwrap();
    assert_eq!((health.status, health.body.as_slice()), (200, &b"ok"[..]));
    // Keep-alive: the same client, a second request.
    let cases: [(&str, &[u8], u16, &str); 4] = [
        (
            "/api/publish",
            br#"{"target":"broadcast","message":{"type":"n","payload":{}}}"#,
            200,
            r#"{"delivered":0}"#,
        ),
        (
            "/api/publish",
            br#"{"target":"everyone","message":{"type":"n","payload":{}}}"#,
            400,
            r#"{"error":"invalid_body"}"#,
        ),
        (
            "/api/publish",
            br#"{"target":"broadcast","message":{"type":"n","payload":[]}}"#,
            400,
            r#"{"error":"invalid_body"}"#,
        ),
        ("/nowhere", b"{}", 404, "not found"),
    ];
    for (path, body, status, reply) in cases {
        let response = http.post_json(path, body).await.unwrap();
        assert_eq!(
            (response.status, String::from_utf8_lossy(&response.body).as_ref()),
            (status, reply),
            "{path} {}",
            String::from_utf8_lossy(body)
        );
    }
}

#[tokio::test]
async fn a_missing_server_is_an_error_not_a_report() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let result = realtime_bench::smoke(addr, "k", &[1; 32], 3, 1).await;
    assert!(
        matches!(result, Err(realtime_bench::BenchError::Connect { failed: 3, .. })),
        "{result:?}"
    );
}
