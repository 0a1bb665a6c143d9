//! `cargo xtask test`: format check, clippy and every test of the workspace, failing fast.
//!
//! The architecture and tidy rules are not separate steps: they are `#[test]`s in this crate
//! (`arch.rs`, `tidy.rs`), so the `cargo test` step runs them.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

/// One step: a name for messages and the arguments given to `cargo`.
#[derive(Debug)]
struct Step {
    name: &'static str,
    args: &'static [&'static str],
}

/// The steps, in order. The first failure stops the run.
const STEPS: &[Step] = &[
    Step { name: "fmt", args: &["fmt", "--all", "--", "--check"] },
    Step {
        name: "clippy",
        args: &["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"],
    },
    Step { name: "test", args: &["test", "--workspace", "--all-features"] },
];

/// Runs every step from the workspace root with inherited stdio.
///
/// # Errors
/// When a step cannot be started or exits unsuccessfully; the error names the step.
pub(crate) fn run() -> anyhow::Result<()> {
    let cargo = crate::cargo();
    let root = crate::workspace_root();
    let started = Instant::now();
    let total = STEPS.len();
    for (index, step) in STEPS.iter().enumerate() {
        let number = index + 1;
        let command_line = format!("cargo {}", step.args.join(" "));
        eprintln!("==> [{number}/{total}] {}: {command_line}", step.name);
        let status = Command::new(&cargo)
            .args(step.args)
            .current_dir(&root)
            .status()
            .with_context(|| {
                format!("step {number}/{total} `{}` could not start `{command_line}`", step.name)
            })?;
        if !status.success() {
            bail!(
                "step {number}/{total} `{}` failed ({status}): `{command_line}`; \
                 later steps were not run",
                step.name
            );
        }
    }
    let names: Vec<&str> = STEPS.iter().map(|s| s.name).collect();
    eprintln!(
        "xtask test: ok, {total}/{total} steps passed ({}) in {:.1}s",
        names.join(", "),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The steps are the ones CI relies on, in fail-fast order.
    #[test]
    fn steps_are_fmt_then_clippy_then_test() {
        let names: Vec<&str> = STEPS.iter().map(|s| s.name).collect();
        assert_eq!(names, ["fmt", "clippy", "test"]);
        let lines: Vec<String> = STEPS.iter().map(|s| s.args.join(" ")).collect();
        assert_eq!(
            lines,
            [
                "fmt --all -- --check",
                "clippy --workspace --all-targets --all-features -- -D warnings",
                "test --workspace --all-features",
            ]
        );
    }
}
