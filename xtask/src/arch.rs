//! The architecture rules as tests: which workspace crate may depend on which, which crates
//! must never reach `realtime-core`, and that no web framework reaches the transport toolkit,
//! checked on the graph `cargo metadata` resolves.
//!
//! The checks are pure functions over [`Graph`], so they are unit-tested on synthetic
//! graphs below; `real_workspace_*` run them on this workspace with all features on, once per
//! platform of [`PLATFORMS`] (so a dependency that exists only on, say, wasm does not count).

use std::collections::{BTreeSet, HashMap, VecDeque};

use cargo_metadata::{CargoOpt, DependencyKind, Metadata, MetadataCommand};

const CORE: &str = "realtime-core";
const PORTS: &str = "realtime-ports";
const REGISTRY_MEM: &str = "realtime-registry-mem";
const BROKER_MEM: &str = "realtime-broker-mem";
const BROKER_REDIS: &str = "realtime-broker-redis";
const AUTH_JWT: &str = "realtime-auth-jwt";
const TRANSPORT_HTTP: &str = "realtime-transport-http";
const TRANSPORT_WARP: &str = "realtime-transport-warp";
const TRANSPORT_AXUM: &str = "realtime-transport-axum";
const SERVICE: &str = "realtime-service";
const TESTKIT: &str = "realtime-testkit";
const CLIENT: &str = "realtime-client";

/// The kind of a dependency edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    Normal,
    Build,
    Dev,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Normal => "normal",
            Kind::Build => "build",
            Kind::Dev => "dev",
        }
    }
}

/// What a crate may dev-depend on beyond its normal allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dev {
    /// Also `realtime-testkit` (every crate gets this).
    Testkit,
    /// Any workspace crate.
    Anything,
}

/// One row of the allow-list: the workspace crates `krate` may depend on.
#[derive(Debug)]
struct Allow {
    krate: &'static str,
    /// Allowed targets of normal and build dependencies.
    deps: &'static [&'static str],
    /// What dev-dependencies may add.
    dev: Dev,
}

/// THE allow-list of workspace crate -> workspace crate edges. A workspace crate without a
/// row fails the check; a row for a crate that does not exist yet is harmless.
const ALLOW_LIST: &[Allow] = &[
    Allow { krate: CORE, deps: &[], dev: Dev::Testkit },
    Allow { krate: PORTS, deps: &[CORE], dev: Dev::Testkit },
    // Adapters (`realtime-<port>-<technology>`) see only the core and the ports.
    Allow { krate: REGISTRY_MEM, deps: &[CORE, PORTS], dev: Dev::Testkit },
    Allow { krate: AUTH_JWT, deps: &[CORE, PORTS], dev: Dev::Testkit },
    // The transport toolkit is framework-neutral (plain http/hyper); each web framework
    // adapter is a thin layer over it and sees nothing else of the workspace.
    Allow { krate: TRANSPORT_HTTP, deps: &[CORE, PORTS], dev: Dev::Testkit },
    Allow { krate: TRANSPORT_WARP, deps: &[CORE, PORTS, TRANSPORT_HTTP], dev: Dev::Testkit },
    Allow { krate: TRANSPORT_AXUM, deps: &[CORE, PORTS, TRANSPORT_HTTP], dev: Dev::Testkit },
    Allow { krate: BROKER_MEM, deps: &[CORE, PORTS], dev: Dev::Testkit },
    Allow { krate: BROKER_REDIS, deps: &[CORE, PORTS], dev: Dev::Testkit },
    Allow { krate: SERVICE, deps: &[CORE, PORTS], dev: Dev::Testkit },
    Allow { krate: TESTKIT, deps: &[CORE, PORTS], dev: Dev::Testkit },
    // The binary is where adapters are wired together.
    Allow {
        krate: "realtime-server",
        deps: &[
            CORE,
            PORTS,
            REGISTRY_MEM,
            BROKER_MEM,
            BROKER_REDIS,
            AUTH_JWT,
            SERVICE,
            TRANSPORT_WARP,
        ],
        dev: Dev::Anything,
    },
    // The Rust client speaks the wire protocol only: the core's names and close codes, no
    // port, adapter or service.
    Allow { krate: CLIENT, deps: &[CORE], dev: Dev::Testkit },
    // Load generator and baseline: drives the system from outside, through the ports.
    Allow { krate: "realtime-bench", deps: &[CORE, PORTS, TESTKIT], dev: Dev::Testkit },
    Allow { krate: "xtask", deps: &[], dev: Dev::Testkit },
];

/// Crates that must not reach `realtime-core` through normal or build dependencies.
/// A trailing `*` matches any suffix.
const FORBIDDEN_IN_CORE: &[&str] = &[
    "tokio",
    "warp",
    "hyper",
    "futures",
    "futures-*",
    "async-trait",
    "mio",
    "jsonwebtoken",
    "parking_lot",
    "tracing",
];

/// The target platforms the real workspace is checked for: where realtime is built and run.
/// `cargo metadata --filter-platform` resolves target-specific dependencies for each.
const PLATFORMS: &[&str] = &[
    "x86_64-unknown-linux-gnu",
    "aarch64-unknown-linux-gnu",
    "aarch64-apple-darwin",
    "x86_64-pc-windows-msvc",
];

/// Web frameworks, which must not reach `realtime-transport-http` (the toolkit stays on plain
/// `http`/`hyper`; a framework belongs to its adapter). A trailing `*` matches any suffix.
const FORBIDDEN_IN_TOOLKIT: &[&str] = &["warp", "axum", "axum-*", "actix-*", "poem", "rocket"];

fn is_forbidden_in_core(name: &str) -> bool {
    matches_any(FORBIDDEN_IN_CORE, name)
}

/// Whether `name` matches one of `patterns` (a trailing `*` matches any suffix).
fn matches_any(patterns: &[&str], name: &str) -> bool {
    patterns.iter().any(|pattern| match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == *pattern,
    })
}

/// A package in the [`Graph`].
#[derive(Debug)]
struct Crate {
    name: String,
    workspace: bool,
}

/// The resolved dependency graph: packages and typed edges between them.
#[derive(Debug, Default)]
pub(crate) struct Graph {
    crates: Vec<Crate>,
    /// `(from, to, kind)`, indices into `crates`; a set, so duplicates collapse and the
    /// order (and so every message) is deterministic.
    edges: BTreeSet<(usize, usize, Kind)>,
}

impl Graph {
    fn add_crate(&mut self, name: &str, workspace: bool) -> usize {
        self.crates.push(Crate { name: name.to_owned(), workspace });
        self.crates.len() - 1
    }

    fn add_edge(&mut self, from: usize, to: usize, kind: Kind) {
        self.edges.insert((from, to, kind));
    }

    fn name(&self, index: usize) -> &str {
        &self.crates[index].name
    }

    /// Builds the graph from `cargo metadata` output (which must include the resolve graph).
    ///
    /// # Errors
    /// When the metadata has no resolve graph or refers to a package it does not list.
    pub(crate) fn from_metadata(metadata: &Metadata) -> Result<Graph, String> {
        let resolve = metadata
            .resolve
            .as_ref()
            .ok_or("cargo metadata has no resolve graph (was it run with --no-deps?)")?;
        let mut graph = Graph::default();
        let mut index = HashMap::new();
        for package in &metadata.packages {
            let workspace = metadata.workspace_members.contains(&package.id);
            index.insert(&package.id, graph.add_crate(&package.name, workspace));
        }
        let lookup = |id| index.get(id).copied().ok_or_else(|| format!("unknown package {id}"));
        for node in &resolve.nodes {
            let from = lookup(&node.id)?;
            for dep in &node.deps {
                let to = lookup(&dep.pkg)?;
                if dep.dep_kinds.is_empty() {
                    // Cargo before 1.41 did not report kinds; assume the strictest reading.
                    graph.add_edge(from, to, Kind::Normal);
                }
                for info in &dep.dep_kinds {
                    let kind = match info.kind {
                        DependencyKind::Normal | DependencyKind::Unknown => Kind::Normal,
                        DependencyKind::Build => Kind::Build,
                        DependencyKind::Development => Kind::Dev,
                    };
                    graph.add_edge(from, to, kind);
                }
            }
        }
        Ok(graph)
    }
}

/// Every workspace crate is in [`ALLOW_LIST`] and every edge between workspace crates is
/// allowed by it. Returns one message per violation.
pub(crate) fn check_workspace_edges(graph: &Graph) -> Vec<String> {
    let row = |name: &str| ALLOW_LIST.iter().find(|row| row.krate == name);
    let mut errors = Vec::new();
    let mut members: Vec<&str> =
        graph.crates.iter().filter(|c| c.workspace).map(|c| c.name.as_str()).collect();
    members.sort_unstable();
    for name in members {
        if row(name).is_none() {
            errors.push(format!(
                "workspace crate {name} has no allowed dependencies declared: \
                 add it to the allow-list in xtask/src/arch.rs"
            ));
        }
    }
    for &(from, to, kind) in &graph.edges {
        if !graph.crates[from].workspace || !graph.crates[to].workspace {
            continue;
        }
        let (from, to) = (graph.name(from), graph.name(to));
        let Some(row) = row(from) else { continue };
        let allowed = row.deps.contains(&to)
            || (kind == Kind::Dev && (to == TESTKIT || row.dev == Dev::Anything));
        if allowed {
            continue;
        }
        let listed = if row.deps.is_empty() { "none".to_owned() } else { row.deps.join(", ") };
        let dev_note = match (kind, row.dev) {
            (Kind::Dev, Dev::Testkit) => format!(" (and {TESTKIT} as a dev-dependency)"),
            _ => String::new(),
        };
        errors.push(format!(
            "forbidden dependency edge: {from} -> {to} ({}). Allowed for {from}: {listed}{dev_note}",
            kind.as_str()
        ));
    }
    errors
}

/// No crate of [`FORBIDDEN_IN_CORE`] is reachable from `realtime-core` through normal or
/// build edges. Returns one message per forbidden crate reached, naming a shortest path.
pub(crate) fn check_core_reach(graph: &Graph) -> Vec<String> {
    check_reach(graph, CORE, is_forbidden_in_core)
}

/// No web framework of [`FORBIDDEN_IN_TOOLKIT`] is reachable from `realtime-transport-http`
/// through normal or build edges.
pub(crate) fn check_toolkit_reach(graph: &Graph) -> Vec<String> {
    check_reach(graph, TRANSPORT_HTTP, |name| matches_any(FORBIDDEN_IN_TOOLKIT, name))
}

/// No crate `forbidden` says yes to is reachable from the workspace crate `root` through
/// normal or build edges. Returns one message per forbidden crate reached, naming a shortest
/// path.
fn check_reach(graph: &Graph, root: &str, forbidden: impl Fn(&str) -> bool) -> Vec<String> {
    let starts: Vec<usize> = (0..graph.crates.len())
        .filter(|&i| graph.crates[i].workspace && graph.name(i) == root)
        .collect();
    if starts.is_empty() {
        return vec![format!("{root} is not a workspace crate in the dependency graph")];
    }
    let mut adjacency = vec![Vec::new(); graph.crates.len()];
    for &(from, to, kind) in &graph.edges {
        if kind != Kind::Dev {
            adjacency[from].push(to);
        }
    }
    let mut errors = Vec::new();
    let mut parent: Vec<Option<usize>> = vec![None; graph.crates.len()];
    let mut seen = vec![false; graph.crates.len()];
    let mut queue = VecDeque::new();
    for &start in &starts {
        seen[start] = true;
        queue.push_back(start);
    }
    while let Some(node) = queue.pop_front() {
        for &next in &adjacency[node] {
            if seen[next] {
                continue;
            }
            seen[next] = true;
            parent[next] = Some(node);
            if forbidden(graph.name(next)) {
                // Report the first forbidden crate on each path, not what it pulls in.
                let mut path = vec![graph.name(next)];
                let mut at = next;
                while let Some(up) = parent[at] {
                    path.push(graph.name(up));
                    at = up;
                }
                path.reverse();
                errors.push(format!(
                    "forbidden crate reaches {root} (normal/build dependencies, all features \
                     on): {}",
                    path.join(" -> ")
                ));
            } else {
                queue.push_back(next);
            }
        }
    }
    errors
}

/// `cargo metadata --format-version 1 --all-features --filter-platform <platform>` for this
/// workspace.
///
/// # Errors
/// When `cargo metadata` fails or its output does not parse.
pub(crate) fn workspace_metadata(platform: &str) -> Result<Metadata, String> {
    MetadataCommand::new()
        .cargo_path(crate::cargo())
        .manifest_path(crate::workspace_root().join("Cargo.toml"))
        .features(CargoOpt::AllFeatures)
        .other_options(vec!["--filter-platform".to_owned(), platform.to_owned()])
        .exec()
        .map_err(|e| format!("cargo metadata --filter-platform {platform} failed: {e}"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::OnceLock;

    use super::Kind::{Build, Dev, Normal};
    use super::*;

    /// A synthetic graph; crates named `realtime-*` or `xtask` are workspace members.
    fn graph(edges: &[(&str, &str, Kind)]) -> Graph {
        let mut graph = Graph::default();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut id = |graph: &mut Graph, name: &str| {
            *index.entry(name.to_owned()).or_insert_with(|| {
                graph.add_crate(name, name.starts_with("realtime-") || name == "xtask")
            })
        };
        for &(from, to, kind) in edges {
            let (from, to) = (id(&mut graph, from), id(&mut graph, to));
            graph.add_edge(from, to, kind);
        }
        graph
    }

    /// A workspace that follows every rule.
    const GOOD: &[(&str, &str, Kind)] = &[
        ("realtime-core", "serde", Normal),
        ("realtime-core", "bytes", Normal),
        ("realtime-core", "realtime-testkit", Dev),
        ("realtime-core", "tokio", Dev),
        ("serde", "serde_derive", Normal),
        ("realtime-ports", "realtime-core", Normal),
        ("realtime-ports", "async-trait", Normal),
        ("realtime-registry-mem", "realtime-core", Normal),
        ("realtime-registry-mem", "realtime-ports", Normal),
        ("realtime-registry-mem", "parking_lot", Normal),
        ("realtime-registry-mem", "realtime-testkit", Dev),
        ("realtime-auth-jwt", "realtime-ports", Normal),
        ("realtime-auth-jwt", "jsonwebtoken", Normal),
        ("realtime-transport-warp", "realtime-ports", Normal),
        ("realtime-transport-warp", "warp", Normal),
        ("warp", "tokio", Normal),
        ("tokio", "mio", Normal),
        ("realtime-service", "realtime-core", Normal),
        ("realtime-service", "realtime-ports", Normal),
        ("realtime-service", "realtime-testkit", Dev),
        ("realtime-testkit", "realtime-ports", Normal),
        ("realtime-server", "realtime-service", Normal),
        ("realtime-server", "realtime-registry-mem", Normal),
        ("realtime-server", "realtime-auth-jwt", Normal),
        ("realtime-server", "realtime-transport-warp", Normal),
        ("realtime-server", "realtime-bench", Dev),
        ("realtime-bench", "realtime-testkit", Normal),
        ("xtask", "cargo_metadata", Normal),
    ];

    fn with(extra: &[(&str, &str, Kind)]) -> Graph {
        let edges: Vec<_> = GOOD.iter().chain(extra).copied().collect();
        graph(&edges)
    }

    #[track_caller]
    fn assert_clean(errors: &[String]) {
        assert!(errors.is_empty(), "unexpected violations:\n{}", errors.join("\n"));
    }

    #[test]
    fn a_good_workspace_passes() {
        let g = graph(GOOD);
        assert_clean(&check_workspace_edges(&g));
        assert_clean(&check_core_reach(&g));
    }

    #[test]
    fn tokio_in_core_is_named() {
        let errors = check_core_reach(&with(&[("realtime-core", "tokio", Normal)]));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].ends_with(": realtime-core -> tokio"), "{errors:?}");
    }

    #[test]
    fn a_transitive_path_is_named() {
        let g = with(&[("realtime-core", "foo", Normal), ("foo", "tokio", Normal)]);
        let errors = check_core_reach(&g);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].ends_with(": realtime-core -> foo -> tokio"), "{errors:?}");
    }

    #[test]
    fn build_dependencies_count_and_dev_dependencies_do_not() {
        let g = with(&[("serde", "helper", Build), ("helper", "futures-util", Normal)]);
        let errors = check_core_reach(&g);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].ends_with("realtime-core -> serde -> helper -> futures-util"));

        let g = with(&[("realtime-core", "hyper", Dev), ("serde", "tracing", Dev)]);
        assert_clean(&check_core_reach(&g));
    }

    #[test]
    fn each_forbidden_crate_is_reported_once_without_what_it_pulls_in() {
        let g = with(&[
            ("realtime-core", "a", Normal),
            ("a", "parking_lot", Normal),
            ("realtime-core", "warp", Normal),
            ("a", "warp", Normal),
        ]);
        let mut errors = check_core_reach(&g);
        errors.sort();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].ends_with(": realtime-core -> a -> parking_lot"), "{errors:?}");
        assert!(errors[1].ends_with(": realtime-core -> warp"), "{errors:?}");
    }

    #[test]
    fn forbidden_names() {
        let cases = [
            ("tokio", true),
            ("futures", true),
            ("futures-util", true),
            ("futures-core", true),
            ("async-trait", true),
            ("mio", true),
            ("jsonwebtoken", true),
            ("parking_lot", true),
            ("tracing", true),
            ("hyper", true),
            ("warp", true),
            ("serde", false),
            ("bytes", false),
            ("tokio-util", false),
            ("hyperlocal", false),
            ("futuresx", false),
        ];
        for (name, forbidden) in cases {
            assert_eq!(is_forbidden_in_core(name), forbidden, "{name}");
        }
    }

    #[test]
    fn a_missing_core_is_reported() {
        let errors = check_core_reach(&graph(&[("realtime-ports", "async-trait", Normal)]));
        assert_eq!(errors, ["realtime-core is not a workspace crate in the dependency graph"]);
    }

    #[test]
    fn service_depending_on_registry_mem_is_named() {
        let errors =
            check_workspace_edges(&with(&[("realtime-service", "realtime-registry-mem", Normal)]));
        assert_eq!(
            errors,
            ["forbidden dependency edge: realtime-service -> realtime-registry-mem (normal). \
                 Allowed for realtime-service: realtime-core, realtime-ports"]
        );
    }

    #[test]
    fn edge_kinds_are_checked() {
        let cases: &[(&str, &str, Kind, Option<&str>)] = &[
            ("realtime-ports", "realtime-service", Build, Some("(build). Allowed for")),
            (
                "realtime-service",
                "realtime-registry-mem",
                Dev,
                Some(
                    "(dev). Allowed for realtime-service: realtime-core, realtime-ports (and realtime-testkit as a dev-dependency)",
                ),
            ),
            ("realtime-core", "realtime-ports", Normal, Some("Allowed for realtime-core: none")),
            ("xtask", "realtime-core", Normal, Some("xtask -> realtime-core (normal)")),
            ("realtime-auth-jwt", "realtime-testkit", Dev, None),
            ("realtime-auth-jwt", "realtime-core", Dev, None),
            (
                "realtime-server",
                "realtime-bench",
                Normal,
                Some("realtime-server -> realtime-bench"),
            ),
            ("realtime-server", "realtime-testkit", Dev, None),
            ("realtime-bench", "realtime-core", Normal, None),
            (
                "realtime-bench",
                "realtime-service",
                Normal,
                Some("realtime-bench -> realtime-service"),
            ),
            ("realtime-core", "tokio", Normal, None), // not a workspace edge: the reach check's job
        ];
        for &(from, to, kind, expected) in cases {
            let errors = check_workspace_edges(&with(&[(from, to, kind)]));
            match expected {
                None => assert!(errors.is_empty(), "{from} -> {to} ({kind:?}): {errors:?}"),
                Some(fragment) => {
                    assert_eq!(errors.len(), 1, "{from} -> {to} ({kind:?}): {errors:?}");
                    assert!(errors[0].contains(fragment), "{errors:?} lacks {fragment:?}");
                }
            }
        }
    }

    #[test]
    fn a_crate_missing_from_the_allow_list_is_reported() {
        let errors = check_workspace_edges(&with(&[("realtime-mystery", "realtime-core", Normal)]));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("realtime-mystery"), "{errors:?}");
        assert!(errors[0].contains("add it to the allow-list in xtask/src/arch.rs"), "{errors:?}");
    }

    #[test]
    fn the_allow_list_is_consistent() {
        let names: Vec<&str> = ALLOW_LIST.iter().map(|row| row.krate).collect();
        let unique: BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len(), "a crate has two rows: {names:?}");
        for row in ALLOW_LIST {
            for dep in row.deps {
                assert!(unique.contains(dep), "{} allows unknown crate {dep}", row.krate);
                assert_ne!(*dep, row.krate, "{} allows itself", row.krate);
            }
        }
        assert!(ALLOW_LIST.iter().any(|row| row.krate == CORE && row.deps.is_empty()));
    }

    /// The workspace's graph for each of [`PLATFORMS`], read once per test binary.
    fn real_graphs() -> &'static [(&'static str, Graph)] {
        static GRAPHS: OnceLock<Vec<(&'static str, Graph)>> = OnceLock::new();
        GRAPHS.get_or_init(|| {
            PLATFORMS
                .iter()
                .map(|&platform| {
                    let metadata = workspace_metadata(platform).unwrap_or_else(|e| panic!("{e}"));
                    let graph = Graph::from_metadata(&metadata)
                        .unwrap_or_else(|e| panic!("{platform}: {e}"));
                    (platform, graph)
                })
                .collect()
        })
    }

    /// Runs `check` on every platform's graph and fails listing each violation once, with the
    /// platforms it occurs on.
    #[track_caller]
    fn assert_real_workspace_passes(check: fn(&Graph) -> Vec<String>) {
        let mut platforms_by_error: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for (platform, graph) in real_graphs() {
            for error in check(graph) {
                platforms_by_error.entry(error).or_default().push(platform);
            }
        }
        let errors: Vec<String> = platforms_by_error
            .into_iter()
            .map(|(error, platforms)| format!("{error} [on {}]", platforms.join(", ")))
            .collect();
        assert!(errors.is_empty(), "\n{}\n", errors.join("\n"));
    }

    #[test]
    fn real_workspace_follows_the_allow_list() {
        for (platform, graph) in real_graphs() {
            // The graph was really read: the members and an edge every version of this
            // workspace has.
            let has_edge = |from: &str, to: &str, kind| {
                graph
                    .edges
                    .iter()
                    .any(|&(f, t, k)| graph.name(f) == from && graph.name(t) == to && k == kind)
            };
            assert!(
                graph.crates.iter().any(|c| c.workspace && c.name == "xtask"),
                "{platform}: the metadata does not list xtask as a workspace member"
            );
            assert!(has_edge(PORTS, CORE, Kind::Normal), "{platform}: no {PORTS} -> {CORE} edge");
        }
        assert_real_workspace_passes(check_workspace_edges);
    }

    #[test]
    fn real_workspace_keeps_runtime_crates_out_of_core() {
        assert_real_workspace_passes(check_core_reach);
    }

    #[test]
    fn no_web_framework_reaches_the_transport_toolkit() {
        let toolkit = [
            ("realtime-transport-http", "realtime-ports", Normal),
            ("realtime-transport-http", "hyper", Normal),
            ("realtime-transport-axum", "realtime-transport-http", Normal),
            ("realtime-transport-axum", "axum", Normal),
        ];
        assert_clean(&check_toolkit_reach(&with(&toolkit)));
        let errors = check_toolkit_reach(&with(&[
            toolkit[0],
            ("realtime-transport-http", "tower-helper", Normal),
            ("tower-helper", "axum-core", Normal),
        ]));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].ends_with(": realtime-transport-http -> tower-helper -> axum-core"),
            "{errors:?}"
        );
        assert_eq!(
            check_toolkit_reach(&graph(GOOD)),
            ["realtime-transport-http is not a workspace crate in the dependency graph"]
        );
    }

    #[test]
    fn real_workspace_keeps_web_frameworks_out_of_the_toolkit() {
        assert_real_workspace_passes(check_toolkit_reach);
    }
}
