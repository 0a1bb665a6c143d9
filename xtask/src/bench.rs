//! `cargo xtask bench [--full]`: runs the bench driver (`crates/realtime-bench`, binary
//! `realtime-bench`) in release mode. All orchestration lives in that crate; this only
//! picks the mode and passes the command line on, so the results record how they were made.

use std::process::Command;

use anyhow::{Context, bail};

/// Which benchmark `cargo xtask bench` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The quick comparison (no flag, or `--quick`).
    Quick,
    /// `--full`: every scenario, three repetitions.
    Full,
    /// `--cluster`: several nodes on one Redis against one node.
    Cluster,
}

/// Parses the arguments after `bench`.
pub(crate) fn parse(rest: &[String]) -> Result<Mode, String> {
    match rest {
        [] => Ok(Mode::Quick),
        [flag] if flag == "--full" => Ok(Mode::Full),
        [flag] if flag == "--quick" => Ok(Mode::Quick),
        [flag] if flag == "--cluster" => Ok(Mode::Cluster),
        [extra, ..] => Err(format!(
            "unexpected argument `{extra}` after `bench` (--quick, --full or --cluster)"
        )),
    }
}

/// Runs `cargo run --release -p realtime-bench --bin realtime-bench -- quick|full|cluster`.
///
/// # Errors
/// When cargo cannot be started or the driver fails (a session could not run, or a
/// delivery was missing or extra).
pub(crate) fn run(mode: Mode) -> anyhow::Result<()> {
    let (mode, command) = match mode {
        Mode::Full => ("full", "cargo xtask bench --full"),
        Mode::Quick => ("quick", "cargo xtask bench"),
        Mode::Cluster => ("cluster", "cargo xtask bench --cluster"),
    };
    let args = ["run", "--release", "-p", "realtime-bench", "--bin", "realtime-bench", "--", mode];
    eprintln!("==> cargo {}", args.join(" "));
    let status = Command::new(crate::cargo())
        .current_dir(crate::workspace_root())
        .args(args)
        .env("REALTIME_BENCH_COMMAND", command)
        .status()
        .context("starting cargo")?;
    if !status.success() {
        bail!("the bench driver failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_bench_flags() {
        let parse_args =
            |args: &[&str]| parse(&args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>());
        assert_eq!(parse_args(&[]), Ok(Mode::Quick));
        assert_eq!(parse_args(&["--full"]), Ok(Mode::Full));
        assert_eq!(parse_args(&["--quick"]), Ok(Mode::Quick));
        assert_eq!(parse_args(&["--cluster"]), Ok(Mode::Cluster));
        assert!(parse_args(&["--fast"]).is_err());
        assert!(parse_args(&["--full", "x"]).is_err());
    }
}
