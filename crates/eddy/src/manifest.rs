//! `eddy.toml`: the manifest that lists a project's functions and queues for `eddy deploy`.
//! It is checked whole (unknown keys, sizes, durations, env names, queue names) before
//! anything is uploaded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use eddy_node::queues::validate_queue_name;
use serde::Deserialize;

use crate::api::{ConsumerConfig, DeployConfig, FluidConfig, NewQueue, ScheduleConfig};
use crate::build::{BuildSpec, Lang};
use crate::deploy::{Consume, DeployRequest, check_env_key};
use crate::units;

/// The manifest `eddy deploy` reads when given neither NAME FILE nor `-f`.
pub const DEFAULT_PATH: &str = "eddy.toml";

const FORMAT_HINT: &str = "see `eddy deploy --help` for the manifest format";

/// What the node appends to a queue's name to name its dead-letter queue.
const DEAD_LETTER_SUFFIX: &str = "-dlq";

/// What a manifest asks for, checked: the queues to create and the functions to deploy.
#[derive(Debug)]
pub struct Manifest {
    /// In name order.
    pub queues: Vec<NewQueue>,
    /// In name order.
    pub functions: Vec<DeployRequest>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct ManifestToml {
    #[serde(default)]
    queues: BTreeMap<String, QueueToml>,
    #[serde(default)]
    functions: BTreeMap<String, FunctionToml>,
}

/// `[queues.NAME]`: a queue `eddy deploy` creates when the node does not have it yet.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct QueueToml {
    idempotency_window: Option<String>,
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
    /// Queues the function may send to from inside; `*` for any.
    #[serde(default)]
    publish: Vec<String>,
    /// The queue whose messages the function receives.
    consume: Option<ConsumeToml>,
    /// `schedule = { cron = "*/5 * * * *", ... }`: the keys are those the node takes, so the
    /// table is read as it is sent; unknown keys are refused there too.
    schedule: Option<ScheduleConfig>,
    /// The node holds WebSocket connections on the route and sends the function their events.
    websocket: Option<bool>,
}

/// `consume = { queue = "orders", ... }`: only `queue` is required; the node has defaults for
/// the rest.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct ConsumeToml {
    queue: String,
    batch_size: Option<u32>,
    max_concurrency: Option<u32>,
    visibility_timeout: Option<String>,
    max_attempts: Option<u32>,
    backoff_base: Option<String>,
    backoff_max: Option<String>,
    dead_letter: Option<String>,
    path: Option<String>,
}

/// Reads the manifest at `path`: its queues, and its functions as deploy requests with
/// component paths resolved against the manifest's directory.
pub fn load(path: &Path) -> Result<Manifest> {
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
fn parse(text: &str, dir: &Path) -> Result<Manifest, String> {
    let manifest: ManifestToml = toml::from_str(text).map_err(|err| {
        let place = err
            .span()
            .map(|span| format!("line {}: ", text[..span.start].matches('\n').count() + 1))
            .unwrap_or_default();
        format!("{place}{} — {FORMAT_HINT}", err.message().trim_end())
    })?;
    if manifest.functions.is_empty() && manifest.queues.is_empty() {
        return Err(format!(
            "declares no functions or queues — add a [functions.NAME] or [queues.NAME] \
             table; {FORMAT_HINT}"
        ));
    }
    let queues = manifest
        .queues
        .into_iter()
        .map(|(name, queue)| {
            validate_queue_name(&name)?;
            let idempotency_window_ms = duration("idempotency_window", &queue.idempotency_window)
                .map_err(|problem| format!("queue `{name}`: {problem}"))?;
            Ok(NewQueue {
                name,
                idempotency_window_ms,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let functions = manifest
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
            let consume = function
                .consume
                .as_ref()
                .map(|consume| consume.binding(&name))
                .transpose()
                .map_err(|problem| format!("function `{name}`: consume: {problem}"))?;
            Ok(DeployRequest {
                component,
                name,
                config,
                build,
                consume,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    check_one_consumer_per_queue(&functions)?;
    Ok(Manifest { queues, functions })
}

/// A queue has one consumer binding; two functions claiming it would replace each other's.
fn check_one_consumer_per_queue(functions: &[DeployRequest]) -> Result<(), String> {
    let mut consumers = BTreeMap::new();
    for function in functions {
        let Some(consume) = &function.consume else {
            continue;
        };
        if let Some(first) = consumers.insert(&consume.queue, &function.name) {
            return Err(format!(
                "functions `{first}` and `{}` both consume queue `{}` — a queue has one \
                 consumer; remove `consume` from one of them",
                function.name, consume.queue
            ));
        }
    }
    Ok(())
}

/// Checks a name that refers to a queue (`publish`, `consume`): the name of a queue one can
/// create, or of such a queue's dead-letter queue. The rule is the node's, checked here so a
/// typo stops the deploy before anything is uploaded.
fn check_queue_ref(name: &str) -> Result<(), String> {
    validate_queue_name(name).or_else(|problem| match name.strip_suffix(DEAD_LETTER_SUFFIX) {
        Some(queue) if validate_queue_name(queue).is_ok() => Ok(()),
        _ => Err(problem),
    })
}

/// A duration key's value in milliseconds; the error names the key.
fn duration(key: &str, value: &Option<String>) -> Result<Option<u64>, String> {
    value
        .as_deref()
        .map(units::parse_duration_ms)
        .transpose()
        .map_err(|problem| format!("{key}: {problem}"))
}

/// A count that must be at least 1; the error names the key.
fn at_least_one(key: &str, value: Option<u32>) -> Result<Option<u32>, String> {
    match value {
        Some(0) => Err(format!("{key}: 0 is too few; expected 1 or more")),
        _ => Ok(value),
    }
}

impl ConsumeToml {
    fn binding(&self, function: &str) -> Result<Consume, String> {
        check_queue_ref(&self.queue).map_err(|problem| format!("queue: {problem}"))?;
        if let Some(dead_letter) = &self.dead_letter {
            check_queue_ref(dead_letter).map_err(|problem| format!("dead_letter: {problem}"))?;
        }
        Ok(Consume {
            queue: self.queue.clone(),
            consumer: ConsumerConfig {
                function: function.to_owned(),
                batch_size: at_least_one("batch_size", self.batch_size)?,
                max_concurrency: at_least_one("max_concurrency", self.max_concurrency)?,
                visibility_timeout_ms: duration("visibility_timeout", &self.visibility_timeout)?,
                max_attempts: at_least_one("max_attempts", self.max_attempts)?,
                backoff_base_ms: duration("backoff_base", &self.backoff_base)?,
                backoff_max_ms: duration("backoff_max", &self.backoff_max)?,
                dead_letter: self.dead_letter.clone(),
                path: self.path.clone(),
            },
        })
    }
}

impl FunctionToml {
    fn config(&self) -> Result<DeployConfig, String> {
        let memory_bytes_max = self
            .memory
            .as_deref()
            .map(units::parse_size)
            .transpose()
            .map_err(|problem| format!("memory: {problem}"))?;
        for key in self.env.keys() {
            check_env_key(key)
                .map_err(|problem| format!("env: {problem} — rename it in the env table"))?;
        }
        for queue in self.publish.iter().filter(|queue| *queue != "*") {
            check_queue_ref(queue)
                .map_err(|problem| format!("publish: {problem}, or \"*\" for any queue"))?;
        }
        Ok(DeployConfig {
            route: self.route.clone(),
            memory_bytes_max,
            timeout_ms: duration("timeout", &self.timeout)?,
            env: self.env.clone(),
            publish: self.publish.clone(),
            schedule: self.schedule.clone(),
            websocket: self.websocket,
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
    use crate::api::{Missed, Overlap};

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
        let requests = parse(EXAMPLE, Path::new("/project")).unwrap().functions;
        assert_eq!(
            requests,
            [
                DeployRequest {
                    name: "api".into(),
                    component: "/abs/api.wasm".into(),
                    config: DeployConfig::default(),
                    build: None,
                    consume: None,
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
                        ..DeployConfig::default()
                    },
                    build: None,
                    consume: None,
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
        .unwrap()
        .functions;
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
        let requests = parse("[functions.a]\ncomponent = \"a.wasm\"", Path::new(""))
            .unwrap()
            .functions;
        assert_eq!(requests[0].component, Path::new("a.wasm"));
    }

    #[test]
    fn load_resolves_against_the_manifests_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eddy.toml");
        std::fs::write(&path, "[functions.a]\ncomponent = \"guests/a.wasm\"\n").unwrap();
        let requests = load(&path).unwrap().functions;
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

    #[test]
    fn queues_are_declared_and_functions_publish_and_consume() {
        let manifest = parse(
            r#"
            [queues.orders]
            idempotency_window = "10m"
            [queues.emails]

            [functions.shop]
            component = "shop.wasm"
            publish = ["orders", "emails"]

            [functions.worker]
            component = "worker.wasm"
            consume = { queue = "orders", batch_size = 10, max_concurrency = 4, visibility_timeout = "90s", max_attempts = 3, backoff_base = "250ms", backoff_max = "1m", dead_letter = "parked", path = "/worker/jobs" }

            [functions.mailer]
            component = "mailer.wasm"
            consume = { queue = "emails" }
            "#,
            Path::new(""),
        )
        .unwrap();
        assert_eq!(
            manifest.queues,
            [
                NewQueue {
                    name: "emails".into(),
                    idempotency_window_ms: None
                },
                NewQueue {
                    name: "orders".into(),
                    idempotency_window_ms: Some(600_000)
                },
            ]
        );
        let [mailer, shop, worker] = &manifest.functions[..] else {
            panic!("three functions: {:?}", manifest.functions);
        };
        assert_eq!(shop.config.publish, ["orders", "emails"]);
        assert_eq!(shop.consume, None);
        assert_eq!(
            worker.consume,
            Some(Consume {
                queue: "orders".into(),
                consumer: ConsumerConfig {
                    function: "worker".into(),
                    batch_size: Some(10),
                    max_concurrency: Some(4),
                    visibility_timeout_ms: Some(90_000),
                    max_attempts: Some(3),
                    backoff_base_ms: Some(250),
                    backoff_max_ms: Some(60_000),
                    dead_letter: Some("parked".into()),
                    path: Some("/worker/jobs".into()),
                },
            })
        );
        let mailer_consumer = &mailer.consume.as_ref().unwrap().consumer;
        assert_eq!(
            serde_json::to_string(mailer_consumer).unwrap(),
            r#"{"function":"mailer"}"#
        );
        assert_eq!(
            serde_json::to_value(&shop.config).unwrap()["publish"],
            serde_json::json!(["orders", "emails"])
        );
    }

    #[test]
    fn a_manifest_of_queues_alone_is_enough() {
        let manifest = parse("[queues.orders]", Path::new("")).unwrap();
        assert_eq!(manifest.queues.len(), 1);
        assert!(manifest.functions.is_empty());
    }

    #[test]
    fn queue_keys_are_checked_like_the_rest() {
        let parse_err = |text: &str| parse(text, Path::new("")).unwrap_err();
        let err = parse_err("[queues.orders]\nidempotency_windw = \"5m\"");
        assert!(err.contains("unknown field `idempotency_windw`"), "{err}");
        let err = parse_err("[queues.orders]\nidempotency_window = \"5\"");
        assert!(
            err.starts_with("queue `orders`: idempotency_window: `5` is not a duration"),
            "{err}"
        );
        let err = parse_err("[queues.Orders]");
        assert!(err.starts_with("queue name `Orders` is invalid"), "{err}");
        let long = "q".repeat(59);
        assert!(parse_err(&format!("[queues.{long}]")).contains("longer than 58"));

        let function = |keys: &str| format!("[functions.w]\ncomponent = \"w.wasm\"\n{keys}");
        let err = parse_err(&function(
            "consume = { queue = \"orders\", batch-size = 2 }",
        ));
        assert!(err.contains("unknown field `batch-size`"), "{err}");
        let err = parse_err(&function("consume = { batch_size = 2 }"));
        assert!(err.contains("missing field `queue`"), "{err}");
        let err = parse_err(&function(
            "consume = { queue = \"orders\", visibility_timeout = \"soon\" }",
        ));
        assert!(
            err.starts_with("function `w`: consume: visibility_timeout: `soon` is not a duration"),
            "{err}"
        );
        let err = parse_err(&function(
            "consume = { queue = \"orders\", max_attempts = 0 }",
        ));
        assert!(
            err.starts_with("function `w`: consume: max_attempts: 0 is too few"),
            "{err}"
        );
        let err = parse_err(&function("publish = [\"Orders\"]"));
        assert!(
            err.starts_with("function `w`: publish: queue name `Orders`"),
            "{err}"
        );
    }

    #[test]
    fn dead_letter_queues_and_any_queue_can_be_named() {
        let long = "q".repeat(58);
        let text = format!(
            "[functions.w]\ncomponent = \"w.wasm\"\npublish = [\"*\"]\n\
             consume = {{ queue = \"{long}-dlq\", dead_letter = \"orders-dlq\" }}"
        );
        let manifest = parse(&text, Path::new("")).unwrap();
        assert_eq!(manifest.functions[0].config.publish, ["*"]);
        let err = parse(
            &format!(
                "[functions.w]\ncomponent = \"w.wasm\"\nconsume = {{ queue = \"q{long}-dlq\" }}"
            ),
            Path::new(""),
        )
        .unwrap_err();
        assert!(err.contains("longer than 58"), "{err}");
    }

    #[test]
    fn a_schedule_is_sent_with_only_the_keys_given() {
        let manifest = parse(
            r#"
            [functions.report]
            component = "report.wasm"
            schedule = { cron = "0 7 * * 1-5", timezone = "Europe/Paris", overlap = "allow", missed = "run-once", path = "/report/daily" }

            [functions.tick]
            component = "tick.wasm"
            schedule = { cron = "@hourly" }
            "#,
            Path::new(""),
        )
        .unwrap();
        let [report, tick] = &manifest.functions[..] else {
            panic!("two functions: {:?}", manifest.functions);
        };
        assert_eq!(
            report.config.schedule,
            Some(ScheduleConfig {
                cron: "0 7 * * 1-5".into(),
                timezone: Some("Europe/Paris".into()),
                overlap: Some(Overlap::Allow),
                missed: Some(Missed::RunOnce),
                path: Some("/report/daily".into()),
            })
        );
        assert_eq!(
            serde_json::to_string(&tick.config).unwrap(),
            r#"{"schedule":{"cron":"@hourly"}}"#
        );
    }

    #[test]
    fn schedule_keys_are_checked_like_the_rest() {
        let parse_err = |schedule: &str| {
            let text = format!("[functions.t]\ncomponent = \"t.wasm\"\nschedule = {schedule}");
            parse(&text, Path::new("")).unwrap_err()
        };
        let err = parse_err("{ timezone = \"UTC\" }");
        assert!(err.contains("missing field `cron`"), "{err}");
        let err = parse_err("{ cron = \"@hourly\", time_zone = \"UTC\" }");
        assert!(
            err.starts_with("line 3: unknown field `time_zone`"),
            "{err}"
        );
        let err = parse_err("{ cron = \"@hourly\", missed = \"run_once\" }");
        assert!(
            err.contains("unknown variant `run_once`, expected `skip` or `run-once`"),
            "{err}"
        );
        let err = parse_err("{ cron = \"@hourly\", overlap = \"queue\" }");
        assert!(err.contains("expected `skip` or `allow`"), "{err}");
        let err = parse_err("\"@hourly\"");
        assert!(err.starts_with("line 3: "), "{err}");
    }

    #[test]
    fn websocket_is_a_boolean_sent_as_given() {
        let manifest = parse(
            "[functions.chat]\ncomponent = \"chat.wasm\"\nwebsocket = true\n\
             [functions.plain]\ncomponent = \"plain.wasm\"\nwebsocket = false\n\
             [functions.unset]\ncomponent = \"unset.wasm\"",
            Path::new(""),
        )
        .unwrap();
        let [chat, plain, unset] = &manifest.functions[..] else {
            panic!("three functions: {:?}", manifest.functions);
        };
        assert_eq!(
            serde_json::to_string(&chat.config).unwrap(),
            r#"{"websocket":true}"#
        );
        assert_eq!(plain.config.websocket, Some(false));
        assert_eq!(unset.config.websocket, None);

        let parse_err = |value: &str| {
            let text = format!("[functions.chat]\ncomponent = \"c.wasm\"\nwebsocket = {value}");
            parse(&text, Path::new("")).unwrap_err()
        };
        let err = parse_err("\"yes\"");
        assert!(
            err.starts_with("line 3: invalid type: string \"yes\""),
            "{err}"
        );
        assert!(err.ends_with(FORMAT_HINT), "{err}");
        let err = parse_err("1");
        assert!(err.contains("expected a boolean"), "{err}");
        let err = parse(
            "[functions.chat]\ncomponent = \"c.wasm\"\nwebsockets = true",
            Path::new(""),
        )
        .unwrap_err();
        assert!(err.contains("unknown field `websockets`"), "{err}");
    }

    #[test]
    fn a_queue_has_one_consumer() {
        let err = parse(
            "[functions.a]\ncomponent = \"a.wasm\"\nconsume = { queue = \"orders\" }\n\
             [functions.b]\ncomponent = \"b.wasm\"\nconsume = { queue = \"orders\" }",
            Path::new(""),
        )
        .unwrap_err();
        assert!(
            err.starts_with("functions `a` and `b` both consume queue `orders`"),
            "{err}"
        );
    }
}
