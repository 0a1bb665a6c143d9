//! Tidy rules as tests: every Rust file opens with a `//!` line, no test is ignored,
//! `realtime-core`'s `clippy.toml` bans the clock and threads, and the README quotes its
//! compiled examples line for line.
//!
//! Each rule is a pure function from (path, contents) to violations, unit-tested on inline
//! samples; `real_*` tests apply them to the files of this repository.

use std::fs;
use std::path::{Path, PathBuf};

/// Directories whose Rust files must open with a `//!` line.
const HEADER_ROOTS: &[&str] = &["crates", "xtask"];

/// Where `realtime-core`'s clippy configuration lives, relative to the workspace root.
const CORE_CLIPPY_TOML: &str = "crates/realtime-core/clippy.toml";

/// Methods `realtime-core`'s clippy.toml must list under `disallowed-methods`.
const CORE_DISALLOWED_METHODS: &[&str] =
    &["std::time::Instant::now", "std::time::SystemTime::now", "std::thread::spawn"];

/// The README's code blocks quoted from compiled examples: (example, marker name). Between
/// `// README: <name> begin` and `// README: <name> end` in the example, dedented, the lines
/// must appear in `README.md` as they are.
const README_QUOTES: &[(&str, &str)] = &[
    ("crates/realtime-server/examples/mount_axum.rs", "mount-axum"),
    ("crates/realtime-server/examples/mount_warp.rs", "mount-warp"),
];

/// The attribute that must not appear, spelled so that this file does not contain it.
fn ignore_attribute() -> String {
    format!("#[{}", "ignore")
}

/// The first line must be a `//!` comment.
pub(crate) fn check_header(path: &str, text: &str) -> Option<String> {
    let first = text.trim_start_matches('\u{feff}').lines().next().unwrap_or("");
    (!first.starts_with("//!")).then(|| {
        format!("{path}: the first line must be a `//!` comment saying what the file is for")
    })
}

/// No ignore attribute on any test, bare or with a reason.
pub(crate) fn check_no_ignore(path: &str, text: &str) -> Vec<String> {
    let needle = ignore_attribute();
    let mut errors = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find(&needle) {
            rest = &rest[at + needle.len()..];
            if rest.starts_with(|c: char| c == ']' || c == '=' || c.is_whitespace()) {
                errors.push(format!(
                    "{path}:{}: `{needle}]` is not allowed: make the test fast and \
                     deterministic, or delete it",
                    number + 1
                ));
                break;
            }
        }
    }
    errors
}

/// `disallowed-methods` lists the clock and thread entry points.
pub(crate) fn check_core_clippy_toml(path: &str, text: &str) -> Vec<String> {
    // The value of `disallowed-methods`: from its key to the next top-level key.
    let mut section = String::new();
    let mut inside = false;
    for line in text.lines() {
        let code = line.split('#').next().unwrap_or("");
        let is_key = code.starts_with(|c: char| c.is_ascii_alphabetic()) && code.contains('=');
        if is_key {
            inside = code.split('=').next().is_some_and(|key| key.trim() == "disallowed-methods");
        }
        if inside {
            section.push_str(code);
            section.push('\n');
        }
    }
    if section.is_empty() {
        return vec![format!("{path}: has no `disallowed-methods` list")];
    }
    CORE_DISALLOWED_METHODS
        .iter()
        .filter(|method| !section.contains(&format!("\"{method}\"")))
        .map(|method| format!("{path}: `disallowed-methods` must list \"{method}\""))
        .collect()
}

/// Every `.rs` file under `dir`, sorted, skipping `target` and hidden directories.
/// The lines of `example` between its `// README: <name>` markers, dedented by the begin
/// marker's indentation; `Err` when a marker is missing.
pub(crate) fn quoted_block(example: &str, name: &str) -> Result<String, String> {
    let begin = format!("// README: {name} begin");
    let end = format!("// README: {name} end");
    let mut lines = example.lines();
    let start = lines.by_ref().find(|line| line.trim() == begin).ok_or(format!("no `{begin}`"))?;
    let indent = start.len() - start.trim_start().len();
    let mut block = Vec::new();
    for line in lines {
        if line.trim() == end {
            return Ok(block.join("\n"));
        }
        block.push(line.get(indent..).unwrap_or_else(|| line.trim_start()));
    }
    Err(format!("no `{end}`"))
}

/// Whether `readme` holds the block `name` of `example` (at `path`) line for line.
pub(crate) fn check_readme_quote(
    path: &str,
    example: &str,
    name: &str,
    readme: &str,
) -> Option<String> {
    match quoted_block(example, name) {
        Err(error) => Some(format!("{path}: {error}")),
        Ok(block) if readme.contains(&block) => None,
        Ok(_) => Some(format!(
            "README.md: the block `{name}` is not {path}'s lines between its README markers \
             (copy them again)"
        )),
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if entry.file_type()?.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out)?;
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// Applies `check` to every Rust file under `roots` (relative to the workspace root).
fn check_files(roots: &[&str], check: impl Fn(&str, &str) -> Vec<String>) -> Vec<String> {
    let root = crate::workspace_root();
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for dir in roots {
        if let Err(e) = rust_files(&root.join(dir), &mut files) {
            errors.push(format!("{dir}: cannot list files: {e}"));
        }
    }
    for file in files {
        let shown = file.strip_prefix(&root).unwrap_or(&file).to_string_lossy().replace('\\', "/");
        match fs::read_to_string(&file) {
            Ok(text) => errors.extend(check(&shown, &text)),
            Err(e) => errors.push(format!("{shown}: cannot read: {e}")),
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_rule() {
        let cases = [
            ("//! What this is.\nfn f() {}\n", true),
            ("//!\n//! Long form.\n", true),
            ("\u{feff}//! With a byte order mark.\n", true),
            ("// A plain comment.\n", false),
            ("/// An item doc.\nfn f() {}\n", false),
            ("\n//! Too late.\n", false),
            ("#![allow(dead_code)]\n//! After an attribute.\n", false),
            ("", false),
        ];
        for (text, ok) in cases {
            let result = check_header("crates/x/src/a.rs", text);
            assert_eq!(result.is_none(), ok, "{text:?}: {result:?}");
            if let Some(message) = result {
                assert!(message.starts_with("crates/x/src/a.rs: "), "{message}");
            }
        }
    }

    #[test]
    fn ignore_rule() {
        let attr = ignore_attribute();
        let cases = [
            (format!("#[test]\n{attr}]\nfn slow() {{}}\n"), vec![2]),
            (format!("    {attr} = \"flaky\"]\n"), vec![1]),
            (format!("{attr}]\n\n{attr}]\n"), vec![1, 3]),
            ("#[test]\nfn fine() {}\n".to_owned(), vec![]),
            (format!("{attr}d_by_name]\n"), vec![]),
            ("let ignore = true;\n".to_owned(), vec![]),
        ];
        for (text, lines) in cases {
            let errors = check_no_ignore("xtask/src/x.rs", &text);
            let expected: Vec<String> =
                lines.iter().map(|n| format!("xtask/src/x.rs:{n}:")).collect();
            assert_eq!(errors.len(), expected.len(), "{text:?}: {errors:?}");
            for (error, prefix) in errors.iter().zip(&expected) {
                assert!(error.starts_with(prefix.as_str()), "{error} should start with {prefix}");
            }
        }
    }

    #[test]
    fn core_clippy_toml_rule() {
        let good = r#"
# a comment
disallowed-methods = [
    { path = "std::time::Instant::now", reason = "take now" },
    { path = "std::time::SystemTime::now", reason = "take now" },
    { path = "std::thread::spawn", reason = "no threads" },
]
disallowed-types = [{ path = "std::fs::File" }]
"#;
        assert_eq!(check_core_clippy_toml("c.toml", good), Vec::<String>::new());

        let missing_spawn = good.replace("std::thread::spawn", "std::thread::sleep");
        assert_eq!(
            check_core_clippy_toml("c.toml", &missing_spawn),
            ["c.toml: `disallowed-methods` must list \"std::thread::spawn\""]
        );

        let under_types = r#"
disallowed-methods = [{ path = "std::thread::spawn" }]
disallowed-types = ["std::time::Instant::now", "std::time::SystemTime::now"]
"#;
        assert_eq!(check_core_clippy_toml("c.toml", under_types).len(), 2);

        let commented = "disallowed-methods = [\n# \"std::time::Instant::now\",\n\
                         \"std::time::SystemTime::now\", \"std::thread::spawn\"]\n";
        assert_eq!(
            check_core_clippy_toml("c.toml", commented),
            ["c.toml: `disallowed-methods` must list \"std::time::Instant::now\""]
        );

        assert_eq!(
            check_core_clippy_toml("c.toml", "msrv = \"1.95\"\n"),
            ["c.toml: has no `disallowed-methods` list"]
        );
    }

    #[track_caller]
    fn assert_clean(errors: &[String]) {
        assert!(errors.is_empty(), "\n{}\n", errors.join("\n"));
    }

    #[test]
    fn real_rust_files_open_with_a_doc_line() {
        assert_clean(&check_files(HEADER_ROOTS, |path, text| {
            check_header(path, text).into_iter().collect()
        }));
    }

    #[test]
    fn real_tests_are_never_ignored() {
        let root = crate::workspace_root();
        let mut roots: Vec<String> = Vec::new();
        for entry in fs::read_dir(&root).unwrap_or_else(|e| panic!("{}: {e}", root.display())) {
            let entry = entry.unwrap_or_else(|e| panic!("{e}"));
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir() && name != "target" && !name.starts_with('.') {
                roots.push(name);
            }
        }
        assert!(roots.iter().any(|r| r == "crates"), "no crates/ directory in {roots:?}");
        let roots: Vec<&str> = roots.iter().map(String::as_str).collect();
        assert_clean(&check_files(&roots, check_no_ignore));
    }

    #[test]
    fn readme_quote_rule() {
        let example = "fn main() {\n    // README: x begin\n    let a = 1;\n    if a {\n        b();\n    }\n    // README: x end\n}\n";
        assert_eq!(quoted_block(example, "x").as_deref(), Ok("let a = 1;\nif a {\n    b();\n}"));
        let readme = "```rust\nlet a = 1;\nif a {\n    b();\n}\n```\n";
        assert_eq!(check_readme_quote("e.rs", example, "x", readme), None);
        let stale = "```rust\nlet a = 2;\nif a {\n    b();\n}\n```\n";
        assert!(check_readme_quote("e.rs", example, "x", stale).is_some_and(|e| e.contains("`x`")));
        assert_eq!(
            check_readme_quote("e.rs", example, "y", readme).as_deref(),
            Some("e.rs: no `// README: y begin`")
        );
        let unterminated = "// README: x begin\nlet a = 1;\n";
        assert_eq!(quoted_block(unterminated, "x"), Err("no `// README: x end`".to_owned()));
    }

    #[test]
    fn real_readme_quotes_its_examples() {
        let root = crate::workspace_root();
        let readme = fs::read_to_string(root.join("README.md")).unwrap_or_else(|e| panic!("{e}"));
        let errors: Vec<String> = README_QUOTES
            .iter()
            .filter_map(|(path, name)| {
                let example = fs::read_to_string(root.join(path))
                    .unwrap_or_else(|e| panic!("{path}: must exist ({e})"));
                check_readme_quote(path, &example, name, &readme)
            })
            .collect();
        assert_clean(&errors);
    }

    #[test]
    fn real_core_clippy_toml_bans_the_clock_and_threads() {
        let path = crate::workspace_root().join(CORE_CLIPPY_TOML);
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{CORE_CLIPPY_TOML}: must exist ({e})"));
        assert_clean(&check_core_clippy_toml(CORE_CLIPPY_TOML, &text));
    }
}
