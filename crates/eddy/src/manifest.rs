//! `eddy.toml`: the manifest that lists a project's functions for `eddy deploy`. It is checked
//! whole (unknown keys, sizes, durations, env names) before anything is uploaded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use serde::Deserialize;

use crate::api::{DeployConfig, FluidConfig};
use crate::build::{BuildSpec, Lang};
use crate::deploy::{DeployRequest, check_env_key};
use crate::units;

/// The manifest `eddy deploy` reads when given neither NAME FILE nor `-f`.
pub const DEFAULT_PATH: &str = "eddy.toml";

const FORMAT_HINT: &str = "see `eddy deploy --help` for the manifest format";

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct ManifestToml {
    #[serde(default)]
    functions: BTreeMap<String, FunctionToml>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct FunctionToml {
    /// How `eddy build` makes the component; without it the component is built elsewhere.
    lang: Option<Lang>,
    /// The function's project directory (with `lang`) [default: the manifest's directory].
    source: Option<PathBuf>,
    /// The component to deploy [default with `lang`: build/NAME.wasm].
    component: Option<PathBuf>,
    route: Option<String>,
    memory: Option<String>,
    timeout: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    allow_outbound: Vec<String>,
    max_concurrency: Option<u32>,
    max_queue: Option<u32>,
    max_wait: Option<String>,
    reserved_concurrency: Option<u32>,
    reuse: Option<bool>,
    reuse_max_requests: Option<u32>,
    reuse_idle_timeout: Option<String>,
}

/// Reads the manifest at `path` into deploy requests in function-name order, with component
/// paths resolved against the manifest's directory.
pub fn load(path: &Path) -> Result<Vec<DeployRequest>> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        anyhow!(
            "cannot read manifest {}: {err} — pass NAME FILE to deploy one component, or -f FILE to name the manifest",
            path.display()
        )
    })?;
    let dir = path.parent().unwrap_or(Path::new(""));
    parse(&text, dir).map_err(|problem| anyhow!("{}: {problem}", path.display()))
}

/// Parses manifest text; relative component paths are taken from `dir`.
fn parse(text: &str, dir: &Path) -> Result<Vec<DeployRequest>, String> {
    let manifest: ManifestToml = toml::from_str(text).map_err(|err| {
        let place = err
            .span()
            .map(|span| format!("line {}: ", text[..span.start].matches('\n').count() + 1))
            .unwrap_or_default();
        format!("{place}{} — {FORMAT_HINT}", err.message().trim_end())
    })?;
    if manifest.functions.is_empty() {
        return Err(format!(
            "declares no functions — add a [functions.NAME] table; {FORMAT_HINT}"
        ));
    }
    manifest
        .functions
        .into_iter()
        .map(|(name, function)| {
            let config = function
                .config()
                .map_err(|problem| format!("function `{name}`: {problem}"))?;
            let build = function.lang.map(|lang| BuildSpec {
                lang,
                source: dir.join(function.source.as_deref().unwrap_or(Path::new("."))),
            });
            let component = match (&function.component, &build) {
                (Some(component), _) => dir.join(component),
                (None, Some(_)) => dir.join(format!("build/{name}.wasm")),
                (None, None) => {
                    return Err(format!(
                        "function `{name}`: no `component` — set component = \"PATH.wasm\", \
                         or lang = \"rust\", \"python\" or \"js\" for `eddy build` to make \
                         it; {FORMAT_HINT}"
                    ));
                }
            };
            if function.source.is_some() && build.is_none() {
                return Err(format!(
                    "function `{name}`: `source` needs `lang` (how to build it); {FORMAT_HINT}"
                ));
            }
            Ok(DeployRequest {
                component,
                name,
                config,
                build,
            })
        })
        .collect()
}

impl FunctionToml {
    fn config(&self) -> Result<DeployConfig, String> {
        let memory_bytes_max = self
            .memory
            .as_deref()
            .map(units::parse_size)
            .transpose()
            .map_err(|problem| format!("memory: {problem}"))?;
        let timeout_ms = self
            .timeout
            .as_deref()
            .map(units::parse_duration_ms)
            .transpose()
            .map_err(|problem| format!("timeout: {problem}"))?;
        for key in self.env.keys() {
            check_env_key(key)
                .map_err(|problem| format!("env: {problem} — rename it in the env table"))?;
        }
        let duration = |key: &str, value: &Option<String>| {
            value
                .as_deref()
                .map(units::parse_duration_ms)
                .transpose()
                .map_err(|problem| format!("{key}: {problem}"))
        };
        Ok(DeployConfig {
            route: self.route.clone(),
            memory_bytes_max,
            timeout_ms,
            env: self.env.clone(),
            fluid: FluidConfig {
                allow_outbound: self.allow_outbound.clone(),
                max_concurrency: self.max_concurrency,
                max_queue: self.max_queue,
                max_wait_ms: duration("max_wait", &self.max_wait)?,
                reserved_concurrency: self.reserved_concurrency,
                reuse: self.reuse,
                reuse_max_requests: self.reuse_max_requests,
                reuse_idle_timeout_ms: duration("reuse_idle_timeout", &self.reuse_idle_timeout)?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
        [functions.hello]
        component = "target/guests/hello-rust.wasm"
        route = "/hello"
        memory = "64MiB"
        timeout = "2s"
        allow_outbound = ["api.example.com"]
        max_concurrency = 5
        max_wait = "500ms"
        reuse_idle_timeout = "30s"
        [functions.hello.env]
        GREETING = "Hi"

        [functions.api]
        component = "/abs/api.wasm"
    "#;

    #[test]
    fn functions_come_in_name_order_with_paths_from_the_manifest_dir() {
        let requests = parse(EXAMPLE, Path::new("/project")).unwrap();
        assert_eq!(
            requests,
            [
                DeployRequest {
                    name: "api".into(),
                    component: "/abs/api.wasm".into(),
                    config: DeployConfig::default(),
                    build: None,
                },
                DeployRequest {
                    name: "hello".into(),
                    component: "/project/target/guests/hello-rust.wasm".into(),
                    config: DeployConfig {
                        route: Some("/hello".into()),
                        memory_bytes_max: Some(64 << 20),
                        timeout_ms: Some(2000),
                        env: BTreeMap::from([("GREETING".into(), "Hi".into())]),
                        fluid: FluidConfig {
                            allow_outbound: vec!["api.example.com".into()],
                            max_concurrency: Some(5),
                            max_wait_ms: Some(500),
                            reuse_idle_timeout_ms: Some(30_000),
                            ..FluidConfig::default()
                        },
                    },
                    build: None,
                },
            ]
        );
    }

    #[test]
    fn a_function_with_a_lang_is_built_from_its_source() {
        let requests = parse(
            "[functions.a]\nlang = \"python\"\n\
             [functions.b]\nlang = \"js\"\nsource = \"b\"\ncomponent = \"out/b.wasm\"",
            Path::new("/p"),
        )
        .unwrap();
        assert_eq!(requests[0].component, Path::new("/p/build/a.wasm"));
        assert_eq!(
            requests[0].build,
            Some(BuildSpec {
                lang: Lang::Python,
                source: "/p/.".into()
            })
        );
        assert_eq!(requests[1].component, Path::new("/p/out/b.wasm"));
        assert_eq!(
            requests[1].build,
            Some(BuildSpec {
                lang: Lang::Js,
                source: "/p/b".into()
            })
        );
        let err = parse("[functions.a]\nlang = \"go\"", Path::new("")).unwrap_err();
        assert!(err.contains("unknown variant `go`"), "{err}");
        let err = parse(
            "[functions.a]\ncomponent = \"a.wasm\"\nsource = \"a\"",
            Path::new(""),
        )
        .unwrap_err();
        assert!(err.contains("`source` needs `lang`"), "{err}");
    }

    #[test]
    fn a_manifest_in_the_working_directory_keeps_paths_relative() {
        let requests = parse("[functions.a]\ncomponent = \"a.wasm\"", Path::new("")).unwrap();
        assert_eq!(requests[0].component, Path::new("a.wasm"));
    }

    #[test]
    fn load_resolves_against_the_manifests_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eddy.toml");
        std::fs::write(&path, "[functions.a]\ncomponent = \"guests/a.wasm\"\n").unwrap();
        let requests = load(&path).unwrap();
        assert_eq!(requests[0].component, dir.path().join("guests/a.wasm"));
    }

    #[test]
    fn unknown_keys_are_refused_by_name_at_every_level() {
        let top = parse(
            "colour = \"blue\"\n[functions.a]\ncomponent = \"a.wasm\"",
            Path::new(""),
        );
        assert!(top.unwrap_err().contains("unknown field `colour`"));

        let function = parse(
            "[functions.a]\ncomponent = \"a.wasm\"\nmemroy = \"1MiB\"",
            Path::new(""),
        );
        let err = function.unwrap_err();
        assert!(err.starts_with("line 3: unknown field `memroy`"), "{err}");
        assert!(err.ends_with(FORMAT_HINT), "{err}");
    }

    #[test]
    fn bad_values_name_the_function_and_the_key() {
        let err = parse(
            "[functions.a]\ncomponent = \"a.wasm\"\nmemory = \"lots\"",
            Path::new(""),
        )
        .unwrap_err();
        assert!(
            err.starts_with("function `a`: memory: `lots` is not a size"),
            "{err}"
        );

        let err = parse(
            "[functions.a]\ncomponent = \"a.wasm\"\ntimeout = \"2\"",
            Path::new(""),
        )
        .unwrap_err();
        assert!(
            err.starts_with("function `a`: timeout: `2` is not a duration"),
            "{err}"
        );

        let err = parse(
            "[functions.a]\ncomponent = \"a.wasm\"\n[functions.a.env]\n\"\" = \"x\"",
            Path::new(""),
        )
        .unwrap_err();
        assert!(err.starts_with("function `a`: env: "), "{err}");
    }

    #[test]
    fn a_function_needs_a_component_and_a_manifest_needs_a_function() {
        let err = parse("[functions.a]\nroute = \"/a\"", Path::new("")).unwrap_err();
        assert!(err.contains("function `a`: no `component`"), "{err}");
        assert!(
            parse("", Path::new(""))
                .unwrap_err()
                .contains("declares no functions")
        );
    }

    #[test]
    fn a_missing_manifest_says_what_to_pass() {
        let err = load(Path::new("/nonexistent/eddy.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("pass NAME FILE"), "{err}");
    }
}
