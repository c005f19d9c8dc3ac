//! `eddy deploy`: upload a component as a new version of a function, or every function listed
//! in an `eddy.toml` manifest, with the queues it declares and the consumers it binds.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use futures::TryStreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Body;
use reqwest::multipart::{Form, Part};
use tokio_util::io::ReaderStream;

pub use eddy_parse::manifest::{Consume, check_env_key};

use crate::api::{DeployRequest, Deployed, Missed, Overlap, ScheduleSettings};
use crate::build::{self, BuildSpec};
use crate::client::Client;
use crate::{manifest, queue, units};

/// Uploads smaller than this finish before a progress bar would tell the user anything.
const PROGRESS_BAR_BYTES_MIN: u64 = 1024 * 1024;

/// Read size for streaming the component to the node: large enough for few syscalls, small
/// enough that the progress bar moves smoothly.
const UPLOAD_CHUNK_BYTES: usize = 64 * 1024;

const MANIFEST_HELP: &str = r#"With NAME and FILE, deploys that one component. Without them, deploys every function in
the manifest (./eddy.toml, or -f FILE), in name order, stopping at the first failure. It
first creates the queues the manifest declares that the node does not have yet (an existing
queue is left as it is), and binds each function's `consume` queue after deploying it:

  [queues.orders]         # created with its dead-letter queue orders-dlq
  idempotency_window = "5m"      # optional, default: the node's

  [functions.hello]
  component = "target/guests/hello-rust.wasm"   # relative to the manifest's directory
  lang = "rust"           # optional: rust, python or js — `eddy build` (and `eddy deploy`,
                          # when a source is newer) makes the component from the sources;
                          # component then defaults to build/NAME.wasm
  source = "hello"        # optional with lang: the project directory, default: the manifest's
  route = "/hello"        # optional, default /NAME
  memory = "64MiB"        # optional, default: the node's
  timeout = "2s"          # optional, default: the node's
  allow_outbound = ["api.example.com", "http://127.0.0.1:9000"]   # optional, none by default
  max_concurrency = 100   # optional, with max_queue, max_wait = "10s", reserved_concurrency
  reuse = true            # optional: keep instances warm between requests
  reuse_max_requests = 10000     # optional (implies reuse)
  reuse_idle_timeout = "60s"     # optional (implies reuse)
  publish = ["orders"]    # optional: queues it may send to (POST http://eddy.local/queues/NAME),
                          # "*" for any
  consume = { queue = "orders" }   # optional: it receives the queue's messages; also
                          # batch_size, max_concurrency, visibility_timeout = "60s",
                          # max_attempts, backoff_base = "1s", backoff_max = "5m",
                          # dead_letter = "QUEUE", path = "/hello/jobs"
  schedule = { cron = "*/5 * * * *" }   # optional: a POST every 5 minutes; also
                          # timezone = "Europe/Paris" (default UTC), overlap = "skip" or
                          # "allow", missed = "skip" or "run-once", path = "/hello/tick"
  websocket = true        # optional: the node holds WebSocket connections on the route and
                          # sends the function their connect, message and close events
  [functions.hello.env]
  GREETING = "Hi"
  [functions.hello.secrets]   # environment variables whose values are secrets
  STRIPE_KEY = "stripe"       # (eddy secret set stripe), pinned to its latest version

Unknown keys are refused."#;

#[derive(clap::Args, Debug)]
#[command(after_long_help = MANIFEST_HELP)]
pub struct DeployArgs {
    /// Function to deploy; it is created on first deploy. 1–63 characters of a-z, 0-9 and -,
    /// starting with a letter
    name: Option<String>,
    /// WebAssembly component to upload (a .wasm file exporting wasi:http/incoming-handler)
    file: Option<PathBuf>,
    /// URL path prefix the function serves [default: /NAME]
    #[arg(long, value_name = "PREFIX")]
    route: Option<String>,
    /// Memory limit of one instance: 64MiB, 512KiB, 1GiB or a byte count [default: the node's]
    #[arg(long = "memory", value_name = "SIZE", value_parser = units::parse_size)]
    memory_bytes_max: Option<u64>,
    /// Time limit of one request: 2s, 500ms, 1m [default: the node's]
    #[arg(long = "timeout", value_name = "DURATION", value_parser = units::parse_duration_ms)]
    timeout_ms: Option<u64>,
    /// Environment variable for the function; repeat for more
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env_pair)]
    env: Vec<(String, String)>,
    /// Environment variable whose value is a secret (`eddy secret set NAME`), pinned to the
    /// secret's latest version at this deploy; repeat for more
    #[arg(long = "secret", value_name = "ENV=NAME", value_parser = parse_env_pair)]
    secrets: Vec<(String, String)>,
    /// Queue the function may send messages to (POST http://eddy.local/queues/NAME), or * for
    /// any; repeat for more [default: none]
    #[arg(long = "publish", value_name = "QUEUE")]
    publish: Vec<String>,
    /// Hold WebSocket connections on the function's route: the node accepts the upgrades and
    /// sends the function each connection's connect, message and close events
    /// (docs/websockets.md) [default: upgrades reach the function as plain requests]
    #[arg(long)]
    websocket: bool,
    #[command(flatten)]
    fluid: FluidArgs,
    #[command(flatten)]
    schedule: ScheduleArgs,
    /// Manifest to deploy when NAME and FILE are omitted [default: eddy.toml]
    #[arg(short = 'f', long = "manifest", value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// Print the node's JSON answer instead of a summary, one line per function
    #[arg(long)]
    json: bool,
}

impl DeployArgs {
    /// Checks the combinations clap cannot express; the message says what to pass instead.
    pub fn check_usage(&self) -> Result<(), String> {
        // A lone positional is always NAME: clap fills positionals in order.
        if let (Some(name), None) = (&self.name, &self.file) {
            return Err(format!(
                "a component FILE is needed after the function name: `eddy deploy {name} FILE` \
                 (or pass neither to deploy every function in {})",
                manifest::DEFAULT_PATH
            ));
        }
        if self.name.is_some() && self.manifest.is_some() {
            return Err(
                "-f names a manifest to deploy instead of NAME FILE; pass one or the other"
                    .to_owned(),
            );
        }
        if self.name.is_none() {
            let flags = [
                ("--route", self.route.is_some()),
                ("--memory", self.memory_bytes_max.is_some()),
                ("--timeout", self.timeout_ms.is_some()),
                ("--env", !self.env.is_empty()),
                ("--secret", !self.secrets.is_empty()),
                ("--publish", !self.publish.is_empty()),
                ("--websocket", self.websocket),
                ("--allow-outbound", !self.fluid.allow_outbound.is_empty()),
                ("--max-concurrency", self.fluid.max_concurrency.is_some()),
                ("--max-queue", self.fluid.max_queue.is_some()),
                ("--max-wait", self.fluid.max_wait_ms.is_some()),
                (
                    "--reserved-concurrency",
                    self.fluid.reserved_concurrency.is_some(),
                ),
                ("--reuse", self.fluid.reuse),
                (
                    "--reuse-max-requests",
                    self.fluid.reuse_max_requests.is_some(),
                ),
                (
                    "--reuse-idle-timeout",
                    self.fluid.reuse_idle_timeout_ms.is_some(),
                ),
                // The other --schedule-* flags require --schedule.
                ("--schedule", self.schedule.cron.is_some()),
            ];
            if let Some((flag, _)) = flags.iter().find(|(_, given)| *given) {
                return Err(format!(
                    "{flag} applies to `eddy deploy NAME FILE`; for a manifest deploy, set it \
                     per function in {}",
                    manifest::DEFAULT_PATH
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for (key, _) in &self.env {
            if !seen.insert(key) {
                return Err(format!("--env {key} is given twice; pass each KEY once"));
            }
        }
        for (key, secret) in &self.secrets {
            if !seen.insert(key) {
                return Err(format!(
                    "{key} is given twice in --env and --secret; pass each variable once"
                ));
            }
            if secret.is_empty() {
                return Err(format!("--secret {key}= names no secret; pass ENV=NAME"));
            }
        }
        Ok(())
    }
}

/// Outgoing HTTP, admission and warm-instance settings of `eddy deploy NAME FILE`.
#[derive(clap::Args, Debug, Default)]
pub struct FluidArgs {
    /// Host or URL the function may send HTTP requests to: api.example.com, host:port,
    /// *.example.com, https://api.example.com/v1, or * for any; repeat for more [default: none]
    #[arg(long = "allow-outbound", value_name = "URL-OR-HOST")]
    allow_outbound: Vec<String>,
    /// Invocations of this function running at once [default: the node's, 100]
    #[arg(long, value_name = "N")]
    max_concurrency: Option<u32>,
    /// Requests that may wait for a slot beyond that; 0 refuses at once [default: 1000]
    #[arg(long, value_name = "N")]
    max_queue: Option<u32>,
    /// Longest a request waits for a slot before 503: 500ms, 10s [default: 10s]
    #[arg(long = "max-wait", value_name = "DURATION", value_parser = units::parse_duration_ms)]
    max_wait_ms: Option<u64>,
    /// Concurrency held for this function alone, a floor no other function can take
    #[arg(long, value_name = "N")]
    reserved_concurrency: Option<u32>,
    /// Keep instances warm between requests, so module state (an interpreter, a cache)
    /// survives; an instance that failed is never reused
    #[arg(long)]
    reuse: bool,
    /// Requests one warm instance serves before it is replaced (implies --reuse) [default: 10000]
    #[arg(long, value_name = "N")]
    reuse_max_requests: Option<u32>,
    /// Idle time after which a warm instance is dropped (implies --reuse) [default: 60s]
    #[arg(long = "reuse-idle-timeout", value_name = "DURATION", value_parser = units::parse_duration_ms)]
    reuse_idle_timeout_ms: Option<u64>,
}

impl FluidArgs {
    /// A deploy config with these settings and nothing else.
    fn config(self) -> DeployRequest {
        DeployRequest {
            allow_outbound: self.allow_outbound,
            max_concurrency: self.max_concurrency,
            max_queue: self.max_queue,
            max_wait_ms: self.max_wait_ms,
            reserved_concurrency: self.reserved_concurrency,
            reuse: self.reuse.then_some(true),
            reuse_max_requests: self.reuse_max_requests,
            reuse_idle_timeout_ms: self.reuse_idle_timeout_ms,
            ..DeployRequest::default()
        }
    }
}

/// The cron schedule of `eddy deploy NAME FILE` (docs/cron.md).
#[derive(clap::Args, Debug)]
pub struct ScheduleArgs {
    /// Invoke the function on a cron schedule: 5 fields ("*/5 * * * *"), 6 with a leading
    /// seconds field ("*/10 * * * * *"), or an alias such as @hourly; each tick is a POST
    /// [default: no schedule]
    #[arg(long = "schedule", value_name = "EXPR")]
    cron: Option<String>,
    /// IANA time zone the schedule is read in: Europe/Paris, America/New_York [default: UTC]
    #[arg(long = "schedule-timezone", value_name = "TZ", requires = "cron")]
    timezone: Option<String>,
    /// Whether a tick runs while the previous run of the schedule is still going
    /// [default: skip]
    #[arg(long = "schedule-overlap", value_name = "POLICY", requires = "cron")]
    overlap: Option<Overlap>,
    /// What happens to ticks that fell while the node was down [default: skip]
    #[arg(long = "schedule-missed", value_name = "POLICY", requires = "cron")]
    missed: Option<Missed>,
    /// Request path the ticks are POSTed to [default: the function's route]
    #[arg(long = "schedule-path", value_name = "PATH", requires = "cron")]
    path: Option<String>,
}

impl ScheduleArgs {
    fn config(self) -> Option<ScheduleSettings> {
        Some(ScheduleSettings {
            cron: self.cron?,
            timezone: self.timezone,
            overlap: self.overlap.unwrap_or_default(),
            missed: self.missed.unwrap_or_default(),
            path: self.path,
        })
    }
}

/// One function to deploy: what to upload and the configuration to send with it.
#[derive(Debug, PartialEq)]
pub struct DeployTarget {
    pub name: String,
    pub component: PathBuf,
    pub config: DeployRequest,
    /// How `eddy build` makes the component, when the manifest says (`lang`).
    pub build: Option<BuildSpec>,
    /// The queue the function consumes, bound after it is deployed (`consume` in the manifest).
    pub consume: Option<Consume>,
}

pub async fn run(client: &Client, args: DeployArgs) -> Result<()> {
    match (args.name, args.file) {
        (Some(name), Some(component)) => {
            let config = DeployRequest {
                route: args.route,
                memory_bytes_max: args.memory_bytes_max,
                timeout_ms: args.timeout_ms,
                env: args.env.into_iter().collect(),
                secrets: args.secrets.into_iter().collect(),
                publish: args.publish,
                schedule: args.schedule.config(),
                websocket: args.websocket.then_some(true),
                ..args.fluid.config()
            };
            let request = DeployTarget {
                name,
                component,
                config,
                build: None,
                consume: None,
            };
            let component = Component::open(&request.component)?;
            deploy_one(client, &request, component, args.json).await
        }
        _ => {
            let path = args
                .manifest
                .unwrap_or_else(|| manifest::DEFAULT_PATH.into());
            deploy_manifest(client, &path, args.json).await
        }
    }
}

/// Creates the manifest's missing queues, then deploys every function in the manifest at
/// `path`, in name order, binding its consumer; stops at the first failure with an error that
/// names the queue or function.
async fn deploy_manifest(client: &Client, path: &Path, json: bool) -> Result<()> {
    let manifest::Manifest {
        queues,
        functions: requests,
    } = manifest::load(path)?;
    let in_manifest =
        |request: &DeployTarget| format!("function `{}` in {}", request.name, path.display());
    // Functions with a `lang` are built first when a source is newer than the component.
    for request in &requests {
        build_if_stale(request).await?;
    }
    // Every component is opened before the first upload, so a typo in the last entry does not
    // leave the first functions deployed and the rest not.
    let components = requests
        .iter()
        .map(|request| Component::open(&request.component).with_context(|| in_manifest(request)))
        .collect::<Result<Vec<_>>>()?;
    // Queues come first: a function may publish to or consume from them as soon as it is live.
    for queue in &queues {
        let note = queue::create_if_missing(client, queue)
            .await
            .with_context(|| format!("queue `{}` in {}", queue.name, path.display()))?;
        print_unless_json(note, json)?;
    }
    for (request, component) in requests.iter().zip(components) {
        deploy_one(client, request, component, json)
            .await
            .with_context(|| in_manifest(request))?;
        if let Some(consume) = &request.consume {
            let bound = queue::bind(client, &consume.queue, &consume.consumer)
                .await
                .with_context(|| in_manifest(request))?;
            print_unless_json(Some(bound), json)?;
        }
    }
    Ok(())
}

/// `--json` output is the node's deploy answers only, one line per function; the lines about
/// queues are for people.
fn print_unless_json(line: Option<String>, json: bool) -> Result<()> {
    if let Some(line) = line.filter(|_| !json) {
        writeln!(std::io::stdout(), "{line}")?;
    }
    Ok(())
}

/// Builds `request`'s component (on a blocking thread: toolchains run for seconds) when it
/// has a `lang` and a source is newer than the component. Returns whether it built.
pub(crate) async fn build_if_stale(request: &DeployTarget) -> Result<bool> {
    let Some(spec) = request.build.clone() else {
        return Ok(false);
    };
    let (name, component) = (request.name.clone(), request.component.clone());
    tokio::task::spawn_blocking(move || build::build(&name, &spec, &component, false)).await?
}

/// Uploads `request`'s component and prints the one-line summary.
pub(crate) async fn deploy_request(client: &Client, request: &DeployTarget) -> Result<()> {
    let component = Component::open(&request.component)?;
    deploy_one(client, request, component, false).await
}

/// Parses one `--env KEY=VALUE`. The value may be empty and may contain `=`.
pub fn parse_env_pair(pair: &str) -> Result<(String, String), String> {
    const EXPECTED: &str = "expected KEY=VALUE, e.g. GREETING=Hi";
    let (key, value) = pair
        .split_once('=')
        .ok_or_else(|| format!("`{pair}` has no `=`; {EXPECTED}"))?;
    check_env_key(key).map_err(|problem| format!("{problem}; {EXPECTED}"))?;
    Ok((key.to_owned(), value.to_owned()))
}

/// A component file opened and measured before anything is sent.
struct Component {
    file: File,
    len: u64,
    file_name: String,
}

impl Component {
    fn open(path: &Path) -> Result<Self> {
        let unreadable = |err: std::io::Error| {
            anyhow!(
                "cannot read component {}: {err} — check the path",
                path.display()
            )
        };
        let file = File::open(path).map_err(unreadable)?;
        let metadata = file.metadata().map_err(unreadable)?;
        if !metadata.is_file() {
            bail!(
                "component {} is not a file — pass the .wasm file to upload",
                path.display()
            );
        }
        if metadata.len() == 0 {
            bail!("component {} is empty — build it first", path.display());
        }
        let file_name = path.file_name().map_or_else(
            || "component.wasm".to_owned(),
            |name| name.to_string_lossy().into_owned(),
        );
        Ok(Self {
            file,
            len: metadata.len(),
            file_name,
        })
    }
}

async fn deploy_one(
    client: &Client,
    request: &DeployTarget,
    component: Component,
    json: bool,
) -> Result<()> {
    let progress = upload_progress(&request.name, component.len);
    let form = deploy_form(request, component, progress.clone())?;
    let segments = ["v1", "functions", request.name.as_str(), "versions"];
    let line = if json {
        client
            .post_deploy::<serde_json::Value>(&segments, form)
            .await
            .map(|answer| answer.to_string())
    } else {
        client
            .post_deploy::<Deployed>(&segments, form)
            .await
            .map(|answer| summary(&answer))
    };
    progress.finish_and_clear();
    writeln!(std::io::stdout(), "{}", line?)?;
    Ok(())
}

/// The multipart body: the `config` JSON, then the component streamed from disk so memory
/// use does not grow with its size and the progress bar tracks bytes actually sent.
fn deploy_form(
    request: &DeployTarget,
    component: Component,
    progress: ProgressBar,
) -> Result<Form> {
    let config =
        Part::text(serde_json::to_string(&request.config)?).mime_str("application/json")?;
    let len = component.len;
    let chunks = ReaderStream::with_capacity(
        tokio::fs::File::from_std(component.file),
        UPLOAD_CHUNK_BYTES,
    )
    .inspect_ok(move |chunk| {
        progress.inc(chunk.len() as u64);
        if progress.position() >= len {
            progress.set_message("uploaded; the node is compiling…");
        }
    });
    let component = Part::stream_with_length(Body::wrap_stream(chunks), len)
        .file_name(component.file_name)
        .mime_str("application/wasm")?;
    Ok(Form::new()
        .part("config", config)
        .part("component", component))
}

/// A byte progress bar on stderr for uploads big enough to take a while, when a person is
/// watching; otherwise a hidden bar, so the upload path is the same either way.
fn upload_progress(name: &str, len: u64) -> ProgressBar {
    if len <= PROGRESS_BAR_BYTES_MIN || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(
        "{prefix} [{bar:30}] {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}) {msg}",
    )
    .expect("the progress template is valid")
    .progress_chars("=> ");
    ProgressBar::new(len)
        .with_style(style)
        .with_prefix(format!("uploading {name}"))
}

/// `deployed hello version 3 → http://127.0.0.1:8080/hello (compiled)`
fn summary(deployed: &Deployed) -> String {
    let how = if deployed.compiled {
        "compiled"
    } else {
        "cached"
    };
    let mut line = format!(
        "deployed {} version {} → {} ({how})",
        deployed.function, deployed.version, deployed.url
    );
    for note in &deployed.adjusted {
        line += &format!("\nnote: {note}");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `eddy deploy`'s arguments on their own.
    #[derive(Parser, Debug)]
    struct Deploy {
        #[command(flatten)]
        args: DeployArgs,
    }

    fn parse_deploy(args: &[&str]) -> Result<DeployArgs, clap::Error> {
        let args = [&["deploy"], args].concat();
        Deploy::try_parse_from(args).map(|deploy| deploy.args)
    }

    #[test]
    fn schedule_flags_become_the_schedule_of_the_config() {
        let args = parse_deploy(&[
            "tick",
            "tick.wasm",
            "--schedule",
            "*/10 * * * * *",
            "--schedule-timezone",
            "Europe/Paris",
            "--schedule-overlap",
            "allow",
            "--schedule-missed",
            "run-once",
            "--schedule-path",
            "/tick/jobs",
        ])
        .unwrap();
        assert_eq!(
            args.schedule.config(),
            Some(ScheduleSettings {
                cron: "*/10 * * * * *".into(),
                timezone: Some("Europe/Paris".into()),
                overlap: Overlap::Allow,
                missed: Missed::RunOnce,
                path: Some("/tick/jobs".into()),
            })
        );
        let args = parse_deploy(&["tick", "tick.wasm"]).unwrap();
        assert_eq!(args.schedule.config(), None);
    }

    #[test]
    fn schedule_options_need_a_schedule_and_a_known_policy() {
        for flag in [
            "--schedule-timezone=UTC",
            "--schedule-overlap=skip",
            "--schedule-missed=skip",
            "--schedule-path=/p",
        ] {
            let err = parse_deploy(&["tick", "tick.wasm", flag]).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::MissingRequiredArgument,
                "{flag}"
            );
            assert!(err.to_string().contains("--schedule <EXPR>"), "{err}");
        }
        let err = parse_deploy(&[
            "tick",
            "tick.wasm",
            "--schedule=@hourly",
            "--schedule-missed=all",
        ])
        .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
        let manifest_deploy = parse_deploy(&["--schedule", "@hourly"]).unwrap();
        let err = manifest_deploy.check_usage().unwrap_err();
        assert!(
            err.starts_with("--schedule applies to `eddy deploy NAME FILE`"),
            "{err}"
        );
    }

    #[test]
    fn the_websocket_flag_is_for_one_component() {
        assert!(
            parse_deploy(&["chat", "chat.wasm", "--websocket"])
                .unwrap()
                .websocket
        );
        assert!(!parse_deploy(&["chat", "chat.wasm"]).unwrap().websocket);
        let err = parse_deploy(&["--websocket"])
            .unwrap()
            .check_usage()
            .unwrap_err();
        assert!(
            err.starts_with("--websocket applies to `eddy deploy NAME FILE`"),
            "{err}"
        );
    }

    #[test]
    fn env_pairs_split_at_the_first_equals() {
        assert_eq!(
            parse_env_pair("GREETING=Hi"),
            Ok(("GREETING".into(), "Hi".into()))
        );
        assert_eq!(
            parse_env_pair("EMPTY="),
            Ok(("EMPTY".into(), String::new()))
        );
        assert_eq!(parse_env_pair("URL=a=b"), Ok(("URL".into(), "a=b".into())));
    }

    #[test]
    fn env_pairs_need_an_equals_and_a_key() {
        let no_equals = parse_env_pair("GREETING").unwrap_err();
        assert!(no_equals.contains("has no `=`"), "{no_equals}");
        let no_key = parse_env_pair("=Hi").unwrap_err();
        assert!(
            no_key.starts_with("the variable name is empty; expected KEY=VALUE"),
            "{no_key}"
        );
        assert!(check_env_key("A\0B").is_err());
    }

    #[test]
    fn summary_says_whether_the_node_compiled() {
        let deployed: Deployed = serde_json::from_str(
            r#"{"function": "hello", "version": 3, "route": "/hello",
                "url": "http://127.0.0.1:8080/hello", "digest": "sha256:ab",
                "size_bytes": 83211, "compiled": true}"#,
        )
        .unwrap();
        assert_eq!(
            summary(&deployed),
            "deployed hello version 3 → http://127.0.0.1:8080/hello (compiled)"
        );
    }

    #[test]
    fn components_are_checked_before_upload() {
        let dir = tempfile::tempdir().unwrap();
        let missing = Component::open(&dir.path().join("nope.wasm"))
            .err()
            .unwrap()
            .to_string();
        assert!(missing.starts_with("cannot read component "), "{missing}");
        assert!(missing.ends_with("— check the path"), "{missing}");

        let dir_err = Component::open(dir.path()).err().unwrap().to_string();
        assert!(dir_err.contains("is not a file"), "{dir_err}");

        let empty = dir.path().join("empty.wasm");
        std::fs::write(&empty, b"").unwrap();
        assert!(
            Component::open(&empty)
                .err()
                .unwrap()
                .to_string()
                .contains("is empty")
        );

        let real = dir.path().join("hello.wasm");
        std::fs::write(&real, b"\0asm").unwrap();
        let component = Component::open(&real).unwrap();
        assert_eq!(
            (component.len, component.file_name.as_str()),
            (4, "hello.wasm")
        );
    }
}
