//! The demo page in a real browser: `tests/browser/demo.test.mjs` (Node's test runner,
//! playwright-core driving Debian's `/usr/bin/chromium`, never a downloaded browser) against
//! this crate's server binary, which it starts, kills and restarts. The npm packages are
//! installed here when missing (`npm ci`); chromium must be installed (`.ci/run` does:
//! `apt-get install chromium`), and so must `redis-server` (for the case on the Redis broker,
//! which gets a server of its own). Every run checks its screenshots; a passing run copies
//! them into `docs/screenshots/` only with `REALTIME_UPDATE_SCREENSHOTS=1`, so that a test
//! run leaves the tree as it was.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use realtime_testkit::RedisProcess;

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

/// The screenshots the passing run saves into `docs/screenshots/`.
const SCREENSHOTS: [&str; 4] =
    ["demo-admin.png", "demo-user.png", "demo-after-restart.png", "demo-after-restart-redis.png"];

#[tokio::test]
async fn the_demo_pages_show_the_three_use_cases_recover_and_survive_a_restart_in_a_real_browser() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's chromium (`apt-get install chromium`; .ci/run does)"
    );
    let dir = browser_dir();
    npm_ci_unless(&dir, "playwright-core").await;
    // The test writes its screenshots here; only a passing run's are copied into docs/.
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    if shots.exists() {
        std::fs::remove_dir_all(&shots).unwrap_or_else(|e| panic!("{}: {e}", shots.display()));
    }
    std::fs::create_dir_all(&shots).unwrap_or_else(|e| panic!("{}: {e}", shots.display()));
    // The Redis case's own redis-server, killed when the test ends.
    let redis = RedisProcess::start();
    let mut node = Command::new("node");
    // It starts the server binary itself, so that it can kill it and start it again.
    node.args(["--test", "demo.test.mjs"])
        .current_dir(&dir)
        .env("REALTIME_SERVER_BIN", env!("CARGO_BIN_EXE_realtime-server"))
        .env("REALTIME_TEST_REDIS_URL", redis.url())
        .env("SCREENSHOT_DIR", &shots);
    let (ok, output) = run(node, Duration::from_secs(300)).await;
    drop(redis);
    assert!(ok, "the browser test failed:\n{output}");
    assert!(output.contains("# fail 0"), "{output}");
    for name in SCREENSHOTS {
        assert!(shots.join(name).exists(), "no screenshot {name}:\n{output}");
    }
    if std::env::var_os("REALTIME_UPDATE_SCREENSHOTS").is_some_and(|v| v == "1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");
        std::fs::create_dir_all(&docs).unwrap_or_else(|e| panic!("{}: {e}", docs.display()));
        for name in SCREENSHOTS {
            let shot = shots.join(name);
            std::fs::copy(&shot, docs.join(name))
                .unwrap_or_else(|e| panic!("{} into {}: {e}", shot.display(), docs.display()));
        }
    }
}
