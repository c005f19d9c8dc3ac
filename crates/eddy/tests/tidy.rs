//! Checks that the architecture ARCHITECTURE.md describes holds in the code: which crates
//! depend on which (from `cargo metadata`), and which imports each layer may not use (from
//! the code's own `use` lines). A rule the code breaks today is listed as a debt by file;
//! the test fails when a debt is paid but still listed, so the list only shrinks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Each eddy crate and the eddy crates it may depend on (normal dependencies).
const CRATE_GRAPH: &[(&str, &[&str])] = &[
    ("eddy", &["eddy-node", "eddy-parse", "eddy-runtime"]),
    ("eddy-node", &["eddy-parse", "eddy-runtime", "eddy-store"]),
    ("eddy-runtime", &[]),
    ("eddy-store", &["eddy-parse"]),
    ("eddy-parse", &[]),
];

/// Outside crates an eddy crate must never depend on, and why.
const FORBIDDEN_DEPENDENCIES: &[(&str, &[&str], &str)] = &[
    (
        "eddy-store",
        &[
            "wasmtime",
            "wasmtime-wasi",
            "wasmtime-wasi-http",
            "axum",
            "hyper",
        ],
        "the store knows nothing of Wasmtime or HTTP",
    ),
    (
        "eddy-runtime",
        &["rusqlite", "axum", "sqlx", "tokio-postgres"],
        "the runtime knows nothing of the store or the control API",
    ),
    (
        "eddy-parse",
        &["wasmtime", "tokio", "rusqlite", "axum", "hyper"],
        "the parsers link alone into a fuzzer",
    ),
];

#[test]
fn the_crate_graph_is_the_one_the_architecture_describes() {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace())
        .output()
        .expect("running cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for package in metadata["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap().to_string();
        let normal: BTreeSet<String> = package["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"].is_null())
            .map(|d| d["name"].as_str().unwrap().to_string())
            .collect();
        found.insert(name, normal);
    }
    for (krate, allowed) in CRATE_GRAPH {
        let deps = found
            .get(*krate)
            .unwrap_or_else(|| panic!("crate {krate} is not in the workspace"));
        let eddy: BTreeSet<&str> = deps
            .iter()
            .map(String::as_str)
            .filter(|d| d.starts_with("eddy"))
            .collect();
        let allowed: BTreeSet<&str> = allowed.iter().copied().collect();
        assert_eq!(
            eddy, allowed,
            "{krate} depends on these eddy crates; ARCHITECTURE.md's code map and this test's CRATE_GRAPH say otherwise"
        );
    }
    for (krate, forbidden, why) in FORBIDDEN_DEPENDENCIES {
        for dep in *forbidden {
            assert!(
                !found[*krate].contains(*dep),
                "{krate} depends on {dep}, but {why}"
            );
        }
    }
}

/// A crate's source files (not tests), relative to its `src`.
fn sources(krate: &str) -> Vec<(String, String)> {
    let src = workspace().join("crates").join(krate).join("src");
    let mut files = Vec::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                // Unit tests may use what the code may not.
                let code = match text.find("#[cfg(test)]\nmod tests") {
                    Some(at) => text[..at].to_string(),
                    None => text,
                };
                let rel = path.strip_prefix(&src).unwrap().display().to_string();
                files.push((rel, code));
            }
        }
    }
    files.sort();
    files
}

/// Whether `code` names crate `name` in a path (`name::`), outside comments.
fn names(code: &str, name: &str) -> bool {
    code.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .any(|line| {
            line.match_indices(&format!("{name}::")).any(|(at, _)| {
                at == 0
                    || !line[..at]
                        .chars()
                        .next_back()
                        .is_some_and(|c| c.is_alphanumeric() || c == '_')
            })
        })
}

struct Rule {
    krate: &'static str,
    /// The crate path that is forbidden.
    import: &'static str,
    /// Files (relative to src) where it belongs.
    allowed_in: &'static [&'static str],
    /// Files that break the rule today: debts to pay, listed so the list only shrinks.
    debts: &'static [&'static str],
    why: &'static str,
}

const RULES: &[Rule] = &[
    Rule {
        krate: "eddy-node",
        import: "axum",
        allowed_in: &[
            "api/mod.rs",
            "api/access.rs",
            "api/console.rs",
            "api/cost.rs",
            "api/observe.rs",
            "api/queues.rs",
            "api/secrets.rs",
            "error.rs",
            "ingress.rs",
            "listener.rs",
            "platform.rs",
        ],
        debts: &[],
        why: "only the control API, ingress and platform layers speak HTTP; domain code returns typed errors",
    },
    Rule {
        krate: "eddy-node",
        import: "crate::error",
        allowed_in: &[
            "api/mod.rs",
            "api/access.rs",
            "api/console.rs",
            "api/cost.rs",
            "api/observe.rs",
            "api/queues.rs",
            "api/secrets.rs",
            "error.rs",
            "platform.rs",
        ],
        debts: &[],
        why: "`ApiError` (an HTTP status) belongs to the HTTP layers; the domain returns `Problem`",
    },
    Rule {
        krate: "eddy-node",
        import: "rusqlite",
        allowed_in: &[],
        debts: &[],
        why: "the node reaches state only through eddy-store's API",
    },
    Rule {
        krate: "eddy-node",
        import: "wasmtime",
        allowed_in: &[],
        debts: &[],
        why: "the node reaches Wasmtime only through eddy-runtime",
    },
    Rule {
        krate: "eddy-store",
        import: "wasmtime",
        allowed_in: &[],
        debts: &[],
        why: "the store knows nothing of Wasmtime",
    },
    Rule {
        krate: "eddy-store",
        import: "http",
        allowed_in: &[],
        debts: &[],
        why: "the store knows nothing of HTTP",
    },
    Rule {
        krate: "eddy-runtime",
        import: "eddy_store",
        allowed_in: &[],
        debts: &[],
        why: "the runtime knows nothing of the store",
    },
    Rule {
        krate: "eddy-runtime",
        import: "serde_json",
        allowed_in: &[],
        debts: &[],
        why: "the runtime speaks no JSON",
    },
];

#[test]
fn layers_import_only_what_they_may() {
    let mut broken = Vec::new();
    for rule in RULES {
        let files = sources(rule.krate);
        let users: BTreeSet<&str> = files
            .iter()
            .filter(|(_, code)| {
                names(code, rule.import) || code.contains(&format!("use {};", rule.import))
            })
            .map(|(file, _)| file.as_str())
            .collect();
        for file in &users {
            if !rule.allowed_in.contains(file) && !rule.debts.contains(file) {
                broken.push(format!(
                    "{}/src/{file} uses `{}`: {}",
                    rule.krate, rule.import, rule.why
                ));
            }
        }
        for debt in rule.debts {
            if !users.contains(debt) {
                broken.push(format!(
                    "{}/src/{debt} no longer uses `{}`: remove it from this test's debts",
                    rule.krate, rule.import
                ));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn the_path_check_sees_real_uses_only() {
    assert!(names("use axum::Router;", "axum"));
    assert!(names("    let r = axum::Router::new();", "axum"));
    assert!(!names("// axum::Router in a comment", "axum"));
    assert!(!names("use my_axum::Router;", "axum"));
    assert!(!names("use eddy_store::Store;", "store"));
}

/// The node's modules by layer, lowest first. A module may import its own layer and those
/// below it, never one above: the domain does not know the triggers that call it, and
/// nothing but the API knows the API.
const NODE_LAYERS: &[(&str, &[&str])] = &[
    (
        "foundation",
        &[
            "admission",
            "auth",
            "caps",
            "clock",
            "config",
            "error",
            "events",
            "health",
            "metering",
            "parts",
            "problem",
            "routes",
            "schedule",
            "tls",
        ],
    ),
    (
        "state",
        &[
            "artifacts",
            "cost",
            "invocations",
            "members",
            "queues",
            "registry",
            "secrets",
            "stores",
        ],
    ),
    ("pipeline", &["invoker"]),
    (
        "triggers",
        &[
            "cluster",
            "consumer",
            "cron",
            "ingress",
            "listener",
            "platform",
            "websocket",
        ],
    ),
    ("api", &["api"]),
    ("node", &["lib"]),
];

/// Imports that run up the layers today (importer, imported): debts, so the list only
/// shrinks.
const NODE_UPWARD_DEBTS: &[(&str, &str)] = &[];

#[test]
fn node_modules_import_only_their_own_layer_and_those_below() {
    let layer_of = |module: &str| {
        NODE_LAYERS
            .iter()
            .position(|(_, modules)| modules.contains(&module))
            .unwrap_or_else(|| panic!("module `{module}` is in no layer of NODE_LAYERS: add it"))
    };
    let mut upward = BTreeSet::new();
    for (file, code) in sources("eddy-node") {
        let module = file
            .trim_end_matches(".rs")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let module = if module == "mod" {
            "lib".to_string()
        } else {
            module
        };
        let from = layer_of(&module);
        let mut imported = BTreeSet::new();
        for line in code.lines().map(|l| l.split("//").next().unwrap_or("")) {
            for (at, _) in line.match_indices("crate::") {
                let rest = &line[at + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    imported.insert(name);
                }
            }
            // `use crate::{a::x, b::y}` names several modules.
            if let Some(group) = line.trim_start().strip_prefix("use crate::{") {
                for part in group.split(',') {
                    if let Some((name, _)) = part.trim().split_once("::") {
                        imported.insert(name.to_string());
                    }
                }
            }
        }
        for name in imported {
            if name == module || !NODE_LAYERS.iter().any(|(_, m)| m.contains(&name.as_str())) {
                continue;
            }
            if layer_of(&name) > from {
                upward.insert((module.clone(), name));
            }
        }
    }
    let debts: BTreeSet<(String, String)> = NODE_UPWARD_DEBTS
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let new: Vec<_> = upward.difference(&debts).collect();
    let paid: Vec<_> = debts.difference(&upward).collect();
    assert!(
        new.is_empty() && paid.is_empty(),
        "imports up the layers (importer -> imported): {new:?}; debts paid but still listed in NODE_UPWARD_DEBTS: {paid:?}"
    );
}

/// The CLI speaks to a node only over the control API; of the node's code it may name only
/// what `eddy serve` runs, and what `eddy store copy` runs on a stopped node's state (it
/// has no node to speak to). Wire rules and formats come from eddy-parse, the contract both
/// sides share.
#[test]
fn the_cli_uses_the_node_only_to_serve() {
    let mut uses = Vec::new();
    for (file, code) in sources("eddy") {
        for line in code.lines().map(|l| l.split("//").next().unwrap_or("")) {
            for (at, _) in line.match_indices("eddy_node::") {
                let path: String = line[at..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let allowed = [
                    "eddy_node::NodeConfig",
                    "eddy_node::start",
                    "eddy_node::copy_to_postgres",
                ];
                if !allowed.contains(&path.as_str()) {
                    uses.push(format!("crates/eddy/src/{file}: {path}"));
                }
            }
        }
    }
    assert!(uses.is_empty(), "the CLI reaches into the node: {uses:#?}");
}
