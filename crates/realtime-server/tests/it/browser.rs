//! The demo page in a real browser: `tests/browser/demo.test.mjs` (Node's test runner,
//! playwright-core driving Debian's `/usr/bin/chromium`, never a downloaded browser) against
//! this server. The npm packages are installed here when missing (`npm ci`); chromium must be
//! installed (`.ci/run` does: `apt-get install chromium`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support;

const CHROMIUM: &str = "/usr/bin/chromium";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Runs `command` to its end (off the runtime's thread, so the server keeps serving) and
/// returns its status and output; panics if it cannot start or takes longer than `limit`.
pub(crate) async fn run(mut command: Command, limit: Duration) -> (bool, String) {
    let what = format!("{command:?}");
    let output = tokio::time::timeout(limit, tokio::task::spawn_blocking(move || command.output()))
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .unwrap_or_else(|e| panic!("{what} could not start: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Runs `npm ci` in `dir` unless its `node_modules` already holds `package`.
pub(crate) async fn npm_ci_unless(dir: &Path, package: &str) {
    if dir.join("node_modules").join(package).exists() {
        return;
    }
    let mut npm = Command::new("npm");
    npm.args(["ci", "--no-audit", "--no-fund"]).current_dir(dir);
    let (ok, output) = run(npm, Duration::from_secs(300)).await;
    assert!(ok, "npm ci in {}:\n{output}", dir.display());
}

#[tokio::test]
async fn the_demo_page_recovers_what_it_missed_in_a_real_browser() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's chromium (`apt-get install chromium`; .ci/run does)"
    );
    let dir = browser_dir();
    npm_ci_unless(&dir, "playwright-core").await;
    let mut config = support::config();
    config.demo = Some(true);
    let running = support::start(config).await;
    let token = support::demo_token("alice");
    let screenshots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&screenshots).unwrap_or_else(|e| panic!("{e}"));
    let mut node = Command::new("node");
    node.args(["--test", "demo.test.mjs"])
        .current_dir(&dir)
        .env("REALTIME_DEMO_URL", format!("http://{}/?token={token}", running.addr))
        .env("SCREENSHOT_DIR", &screenshots);
    let (ok, output) = run(node, Duration::from_secs(90)).await;
    assert!(ok, "the browser test failed:\n{output}");
    assert!(screenshots.join("demo-recovered.png").exists(), "no screenshot:\n{output}");
    support::stop(running).await;
}
