//! `cargo xtask bench [--full]`: runs the bench driver (`crates/realtime-bench`, binary
//! `realtime-bench`) in release mode. All orchestration lives in that crate; this only
//! picks the mode and passes the command line on, so the results record how they were made.

use std::process::Command;

use anyhow::{Context, bail};

/// Parses the arguments after `bench`: whether `--full` was given.
pub(crate) fn parse(rest: &[String]) -> Result<bool, String> {
    match rest {
        [] => Ok(false),
        [flag] if flag == "--full" => Ok(true),
        [flag] if flag == "--quick" => Ok(false),
        [extra, ..] => Err(format!("unexpected argument `{extra}` after `bench` (only --full)")),
    }
}

/// Runs `cargo run --release -p realtime-bench --bin realtime-bench -- quick|full`.
///
/// # Errors
/// When cargo cannot be started or the driver fails (a session could not run, or a
/// delivery was missing or extra).
pub(crate) fn run(full: bool) -> anyhow::Result<()> {
    let (mode, command) =
        if full { ("full", "cargo xtask bench --full") } else { ("quick", "cargo xtask bench") };
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
        assert_eq!(parse_args(&[]), Ok(false));
        assert_eq!(parse_args(&["--full"]), Ok(true));
        assert_eq!(parse_args(&["--quick"]), Ok(false));
        assert!(parse_args(&["--fast"]).is_err());
        assert!(parse_args(&["--full", "x"]).is_err());
    }
}
