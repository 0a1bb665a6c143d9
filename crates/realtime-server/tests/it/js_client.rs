//! The JavaScript client (`clients/js`): the server serves it at `/client.js`, and its Node
//! tests (`node --test`; the `ws` package, a dev dependency, is installed with `npm ci` when
//! missing) pass against this crate's server binary, which they start, kill and restart.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::browser::{npm_ci_unless, run};
use crate::support;

/// The client's source, as the server embeds it.
const CLIENT: &str = include_str!("../../../../clients/js/src/index.js");

fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/js")
}

#[tokio::test]
async fn the_server_serves_the_javascript_client_at_client_js() {
    // Served whether or not the demo is on.
    for demo in [false, true] {
        let mut config = support::config();
        config.demo = Some(demo);
        let running = support::start(config).await;
        let script = support::http(running.addr, "GET", "/client.js", &[], b"").await;
        assert_eq!(script.status, 200, "demo {demo}");
        assert!(
            script.header("content-type").is_some_and(|t| t.starts_with("application/javascript")),
            "{:?}",
            script.header("content-type")
        );
        assert_eq!(script.text(), CLIENT);
        assert!(script.text().contains("export class RealtimeClient"));
        support::stop(running).await;
    }
}

#[tokio::test]
async fn the_javascript_client_passes_its_node_tests_against_the_server_binary() {
    let dir = client_dir();
    npm_ci_unless(&dir, "ws").await;
    let mut node = Command::new("node");
    node.args(["--experimental-websocket", "--test"])
        .current_dir(&dir)
        .env("REALTIME_SERVER_BIN", env!("CARGO_BIN_EXE_realtime-server"));
    let (ok, output) = run(node, Duration::from_secs(60)).await;
    assert!(ok, "the JavaScript client's tests failed:\n{output}");
    assert!(output.contains("# fail 0"), "{output}");
}
