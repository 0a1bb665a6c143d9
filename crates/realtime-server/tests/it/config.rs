//! Settings that cannot work are refused at start with a message naming the flag and its
//! environment variable (through `start` and through the binary); development mode listens
//! on loopback only; and the binary prints development secrets on stdout only, its log on
//! stderr.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use realtime_server::Config;

use crate::support::{self, WAIT};

const BIN: &str = env!("CARGO_BIN_EXE_realtime-server");

/// A change to the test configuration.
type Change = fn(&mut Config);

/// The error `start` gives for `config`, with its causes (`{:#}`).
async fn refusal(config: Config) -> String {
    match realtime_server::start(config).await {
        Ok(running) => {
            support::stop(running).await;
            String::from("<started>")
        }
        Err(error) => format!("{error:#}"),
    }
}

#[tokio::test]
async fn start_refuses_every_setting_that_cannot_work_and_names_it() {
    let cases: [(Change, &str); 15] = [
        (
            |c| c.ping_interval_secs = 0,
            "--ping-interval-secs (REALTIME_PING_INTERVAL_SECS) must be between 1 and 3600 seconds, got 0",
        ),
        (
            |c| c.ping_interval_secs = 3601,
            "--ping-interval-secs (REALTIME_PING_INTERVAL_SECS) must be between 1 and 3600 seconds, got 3601",
        ),
        (
            |c| c.pong_timeout_secs = 0,
            "--pong-timeout-secs (REALTIME_PONG_TIMEOUT_SECS) must be between 1 and 600 seconds, got 0",
        ),
        (
            |c| c.pong_timeout_secs = 86_400,
            "--pong-timeout-secs (REALTIME_PONG_TIMEOUT_SECS) must be between 1 and 600 seconds, got 86400",
        ),
        (
            |c| c.shutdown_grace_secs = 0,
            "--shutdown-grace-secs (REALTIME_SHUTDOWN_GRACE_SECS) must be between 1 and 3600 seconds, got 0",
        ),
        (
            |c| c.jwt_leeway_secs = 301,
            "--jwt-leeway-secs (REALTIME_JWT_LEEWAY_SECS) must be between 0 and 300 seconds, got 301",
        ),
        (
            |c| c.max_connections = 0,
            "--max-connections (REALTIME_MAX_CONNECTIONS) must be at least 1, got 0",
        ),
        (
            |c| c.max_message_bytes = 0,
            "--max-message-bytes (REALTIME_MAX_MESSAGE_BYTES) must be between 1 and 67108864, got 0",
        ),
        (
            |c| c.outbound_queue = 0,
            "--outbound-queue (REALTIME_OUTBOUND_QUEUE) must be between 1 and 65536, got 0",
        ),
        (
            |c| c.outbound_queue = 10_000_000,
            "--outbound-queue (REALTIME_OUTBOUND_QUEUE) must be between 1 and 65536, got 10000000",
        ),
        (
            |c| c.required_permissions = vec!["chat:read".to_owned(), "a b".to_owned()],
            "--required-permissions (REALTIME_REQUIRED_PERMISSIONS): \"a b\"",
        ),
        (
            |c| c.api_key = Some("short-key".to_owned()),
            "REALTIME_API_KEY (--api-key): the API key must be at least 16 bytes, got 9",
        ),
        (|c| c.jwt_secret = Some("too-short".to_owned()), "invalid JWT configuration"),
        // Development mode (no JWT key) on an address other hosts can reach.
        (
            |c| {
                c.jwt_secret = None;
                c.listen = SocketAddr::from(([0, 0, 0, 0], 0));
            },
            "development mode (no REALTIME_JWT_SECRET or REALTIME_JWT_PUBLIC_KEY_FILE) listens on \
             loopback addresses only, and --listen (REALTIME_LISTEN) is 0.0.0.0:0",
        ),
        (
            |c| {
                c.jwt_secret = None;
                c.metrics_listen = Some(SocketAddr::from(([0, 0, 0, 0], 0)));
            },
            "--metrics-listen (REALTIME_METRICS_LISTEN) is 0.0.0.0:0",
        ),
    ];
    for (change, expected) in cases {
        let mut config = support::config();
        change(&mut config);
        let message = refusal(config).await;
        assert!(message.contains(expected), "expected {expected:?}, got {message:?}");
        assert!(!message.contains("short-key"), "the key appears in {message:?}");
    }

    // Controls: the edges of each range start, and development mode starts on loopback.
    let edges: [Change; 4] = [
        |c| {
            c.ping_interval_secs = 1;
            c.pong_timeout_secs = 1;
            c.shutdown_grace_secs = 1;
            c.jwt_leeway_secs = 0;
        },
        |c| {
            c.ping_interval_secs = 3600;
            c.pong_timeout_secs = 600;
            c.jwt_leeway_secs = 300;
            c.outbound_queue = 65_536;
        },
        |c| c.required_permissions = vec!["chat:read".to_owned(), String::new()],
        |c| {
            c.jwt_secret = None;
            c.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        },
    ];
    for change in edges {
        let mut config = support::config();
        change(&mut config);
        let running = realtime_server::start(config).await.unwrap_or_else(|e| panic!("{e:#}"));
        support::stop(running).await;
    }
}

/// Runs the binary with `args` and `env` only (no inherited environment) and waits for it to
/// exit; panics if it is still running after [`WAIT`] (it started instead of refusing).
fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut child = Command::new(BIN)
        .env_clear()
        .env("REALTIME_LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
            break status;
        }
        if Instant::now() > deadline {
            kill(&mut child);
            panic!("{args:?} {env:?}: the server started instead of refusing the setting");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut stderr).unwrap_or_else(|e| panic!("{e}"));
    }
    (status.success(), stderr)
}

fn kill(child: &mut Child) {
    // Only this test's own child process, by its handle.
    let _killed = child.kill();
    let _status = child.wait();
}

#[test]
fn the_binary_exits_with_an_error_naming_a_zero_ping_interval() {
    let expected = "--ping-interval-secs (REALTIME_PING_INTERVAL_SECS) must be between 1 and \
                    3600 seconds, got 0";
    for (args, env) in [
        (&["--ping-interval-secs", "0"][..], &[][..]),
        (&[][..], &[("REALTIME_PING_INTERVAL_SECS", "0")][..]),
    ] {
        let (success, stderr) = run_to_exit(args, env);
        assert!(!success, "{args:?} {env:?}: exit status 0");
        assert!(stderr.contains(expected), "{args:?} {env:?}: {stderr}");
    }
}

#[test]
fn development_mode_prints_its_secrets_on_stdout_and_logs_on_stderr() {
    let mut child = Command::new(BIN)
        .env_clear()
        .env("REALTIME_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let (lines, banner) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _read = stderr.read_to_string(&mut text);
        text
    });
    // The banner, up to its last secret (the alice token).
    let mut out = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !out.iter().any(|line: &String| line.contains("alice token")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match banner.recv_timeout(left) {
            Ok(line) => out.push(line),
            Err(_) => {
                kill(&mut child);
                panic!(
                    "no banner on stdout; got {out:?}, stderr:\n{}",
                    errors.join().unwrap_or_default()
                );
            }
        }
    }
    kill(&mut child);
    let log = errors.join().unwrap_or_else(|_| panic!("stderr reader panicked"));
    let out = out.join("\n");

    let value = |label: &str| {
        out.lines()
            .find_map(|line| line.split_once(label).map(|(_, v)| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {label:?} on stdout:\n{out}"))
    };
    let secrets = [
        value("JWT secret:"),
        value("generated API key:"),
        value("admin token (roles admin,user):"),
        value("alice token (role user):"),
    ];
    // The log's "listening" event (an INFO line) is on stderr, and no log line on stdout.
    let logged = |text: &str| text.lines().any(|l| l.contains("INFO") && l.contains("listening"));
    assert!(logged(&log), "the log is not on stderr:\n{log}");
    assert!(!logged(&out) && !out.contains("INFO"), "log lines on stdout:\n{out}");
    for secret in &secrets {
        assert!(secret.len() >= 16, "{secret:?}");
        assert!(!log.contains(secret.as_str()), "a secret is in the log:\n{log}");
    }
}
