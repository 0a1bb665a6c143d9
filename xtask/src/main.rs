//! Repository automation, run as `cargo xtask <command>` (rust-analyzer's xtask pattern).
//!
//! Every repository rule lives here as code: `cargo xtask test` runs the same steps locally
//! as CI does (`.ci/run`). The architecture and tidy rules are `#[test]`s in `arch.rs` and
//! `tidy.rs`, so `cargo test` alone enforces them too.
//!
//! To add a command: add a variant to [`Command`], a line to [`USAGE`], an arm to
//! [`Command::parse`] and to `main`'s `match`, and a module with a `run` function.

#[cfg(test)]
mod arch;
mod bench;
mod test;
#[cfg(test)]
mod tidy;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test    fmt check, clippy (-D warnings) and every test of the workspace, failing fast
  bench   realtime-server against the baseline, N = 5,000 (--full: up to 19,000, 3 repetitions;
          --cluster: 5 nodes on one Redis, 95,000 connections, against one node)
  help    print this message";

/// A parsed command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    /// `cargo xtask test`
    Test,
    /// `cargo xtask bench [--full | --cluster]`
    Bench {
        /// Which benchmark.
        mode: bench::Mode,
    },
    /// `cargo xtask help`, `-h`, `--help`
    Help,
}

impl Command {
    /// Parses the arguments after the program name.
    fn parse(args: &[String]) -> Result<Command, String> {
        let (first, rest) = match args.split_first() {
            Some((first, rest)) => (first.as_str(), rest),
            None => return Err("no command given".to_owned()),
        };
        let command = match first {
            "test" => Command::Test,
            "bench" => return bench::parse(rest).map(|mode| Command::Bench { mode }),
            "help" | "-h" | "--help" => Command::Help,
            other => return Err(format!("unknown command `{other}`")),
        };
        match rest {
            [] => Ok(command),
            [extra, ..] => Err(format!("unexpected argument `{extra}` after `{first}`")),
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match Command::parse(&args) {
        Ok(command) => command,
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match command {
        Command::Test => test::run(),
        Command::Bench { mode } => bench::run(mode),
        Command::Help => {
            eprintln!("{USAGE}");
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the directory holding the root `Cargo.toml`).
pub(crate) fn workspace_root() -> PathBuf {
    // `cargo run` sets CARGO_MANIFEST_DIR at run time too; prefer it over the compile-time
    // value, which is stale when a target directory is shared between checkouts.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest_dir.parent().map_or_else(|| manifest_dir.clone(), Path::to_path_buf)
}

/// The `cargo` running us (`CARGO`, set by `cargo run` and `cargo test`), else `cargo`.
pub(crate) fn cargo() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(args: &[&str], expected: Result<Command, &str>) {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        assert_eq!(Command::parse(&args), expected.map_err(str::to_owned), "args: {args:?}");
    }

    #[test]
    fn parses_the_command_line() {
        check(&["test"], Ok(Command::Test));
        check(&["help"], Ok(Command::Help));
        check(&["--help"], Ok(Command::Help));
        check(&["-h"], Ok(Command::Help));
        check(&[], Err("no command given"));
        check(&["tset"], Err("unknown command `tset`"));
        check(&["test", "--fast"], Err("unexpected argument `--fast` after `test`"));
    }

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml"))
            .unwrap_or_else(|e| panic!("reading the root Cargo.toml: {e}"));
        assert!(manifest.contains("[workspace]"), "root Cargo.toml has no [workspace] table");
    }
}
