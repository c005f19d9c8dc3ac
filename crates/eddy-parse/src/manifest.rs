//! `eddy.toml`: the manifest that lists a project's functions and queues for `eddy deploy`.
//! It is checked whole (unknown keys, sizes, durations, env names, queue names) before
//! anything is uploaded, and turns into the bodies the CLI sends the control API. Reading
//! the file and resolving its paths is the CLI's (`eddy/src/manifest.rs`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use crate::api::{ConsumerRequest, CreateQueue, DeployRequest, validate_queue_name};
use crate::schedule::ScheduleSettings;

pub const FORMAT_HINT: &str = "see `eddy deploy --help` for the manifest format";

/// What the node appends to a queue's name to name its dead-letter queue.
const DEAD_LETTER_SUFFIX: &str = "-dlq";

/// What a manifest asks for, checked: the queues to create and the functions to deploy.
#[derive(Debug)]
pub struct Manifest {
    /// In name order.
    pub queues: Vec<CreateQueue>,
    /// In name order.
    pub functions: Vec<Function>,
}

/// One function of a manifest.
#[derive(Debug, PartialEq)]
pub struct Function {
    pub name: String,
    /// The component to deploy, relative to the manifest's directory unless absolute.
    pub component: PathBuf,
    /// The `config` part of its deploy.
    pub config: DeployRequest,
    /// How `eddy build` makes the component (`lang`).
    pub build: Option<Build>,
    /// The queue the function consumes, bound after it is deployed.
    pub consume: Option<Consume>,
}

/// `lang` and `source`: what `eddy build` makes the component from.
#[derive(Clone, Debug, PartialEq)]
pub struct Build {
    pub lang: Lang,
    /// The function's project directory, relative to the manifest's unless absolute.
    pub source: PathBuf,
}

/// A function's language: how its component is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    Rust,
    Python,
    Js,
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
        })
    }
}

/// A function's consumer binding: the queue, and how its messages are delivered.
#[derive(Debug, PartialEq)]
pub struct Consume {
    pub queue: String,
    pub consumer: ConsumerRequest,
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
    /// Environment variables whose values are secrets: variable → secret name.
    #[serde(default)]
    secrets: BTreeMap<String, String>,
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
    schedule: Option<ScheduleSettings>,
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

/// Parses and checks manifest text. Paths stay as written, relative to the manifest's
/// directory unless absolute.
pub fn parse(text: &str) -> Result<Manifest, String> {
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
            Ok(CreateQueue {
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
            let build = function.lang.map(|lang| Build {
                lang,
                source: function
                    .source
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(".")),
            });
            let component = match (&function.component, &build) {
                (Some(component), _) => component.clone(),
                (None, Some(_)) => PathBuf::from(format!("build/{name}.wasm")),
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
            Ok(Function {
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
fn check_one_consumer_per_queue(functions: &[Function]) -> Result<(), String> {
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
        .map(crate::units::parse_duration_ms)
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
            consumer: ConsumerRequest {
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
    fn config(&self) -> Result<DeployRequest, String> {
        let memory_bytes_max = self
            .memory
            .as_deref()
            .map(crate::units::parse_size)
            .transpose()
            .map_err(|problem| format!("memory: {problem}"))?;
        for key in self.env.keys() {
            check_env_key(key)
                .map_err(|problem| format!("env: {problem} — rename it in the env table"))?;
        }
        for (key, secret) in &self.secrets {
            check_env_key(key).map_err(|problem| {
                format!("secrets: {problem} — rename it in the secrets table")
            })?;
            if self.env.contains_key(key) {
                return Err(format!(
                    "secrets: `{key}` is also in the env table; give it a value or a secret, not both"
                ));
            }
            if secret.is_empty() {
                return Err(format!("secrets: `{key}` names no secret"));
            }
        }
        for queue in self.publish.iter().filter(|queue| *queue != "*") {
            check_queue_ref(queue)
                .map_err(|problem| format!("publish: {problem}, or \"*\" for any queue"))?;
        }
        Ok(DeployRequest {
            route: self.route.clone(),
            memory_bytes_max,
            timeout_ms: duration("timeout", &self.timeout)?,
            env: self.env.clone(),
            secrets: self.secrets.clone(),
            allow_outbound: self.allow_outbound.clone(),
            max_concurrency: self.max_concurrency,
            max_queue: self.max_queue,
            max_wait_ms: duration("max_wait", &self.max_wait)?,
            reserved_concurrency: self.reserved_concurrency,
            reuse: self.reuse,
            reuse_max_requests: self.reuse_max_requests,
            reuse_idle_timeout_ms: duration("reuse_idle_timeout", &self.reuse_idle_timeout)?,
            publish: self.publish.clone(),
            schedule: self.schedule.clone(),
            websocket: self.websocket,
        })
    }
}

/// An environment variable name must be non-empty and cannot contain `=` (the separator) or
/// NUL (the terminator in the guest's environment block).
pub fn check_env_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("the variable name is empty".to_owned());
    }
    if key.contains(['=', '\0']) {
        return Err(format!(
            "`{key}` cannot be a variable name: it contains `=` or NUL"
        ));
    }
    Ok(())
}
