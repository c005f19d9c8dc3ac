//! `eddy dev`: the inner loop. Builds and deploys the functions of `eddy.toml` that have a
//! `lang`, prints their invocations as they happen, and on every change to their sources
//! rebuilds and redeploys — until Ctrl-C. A failed build or deploy is printed and the loop
//! goes on; the last good version keeps serving.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::build;
use crate::client::Client;
use crate::deploy::{self, DeployTarget};
use crate::{logs, manifest};

/// Quiet time after a change before building: an editor's save (write, rename, chmod) or a
/// `git checkout` arrives as a burst of events, and one build should answer the burst.
const DEBOUNCE: Duration = Duration::from_millis(150);

#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Functions of the manifest to develop [default: every function that has a `lang`]
    names: Vec<String>,
    /// Manifest listing the functions [default: eddy.toml]
    #[arg(short = 'f', long = "manifest", value_name = "FILE")]
    manifest: Option<PathBuf>,
}

pub async fn run(client: Client, args: DevArgs) -> Result<()> {
    let path = args
        .manifest
        .unwrap_or_else(|| manifest::DEFAULT_PATH.into());
    let targets: Vec<DeployTarget> = manifest::load(&path)?
        .functions
        .into_iter()
        .filter(|r| r.build.is_some() && (args.names.is_empty() || args.names.contains(&r.name)))
        .collect();
    if targets.is_empty() {
        bail!(
            "no function in {} has a `lang` for eddy dev to build{} — add lang = \"rust\", \
             \"python\" or \"js\" to its [functions.NAME] table, or start from `eddy new NAME \
             --lang LANG`",
            path.display(),
            if args.names.is_empty() {
                String::new()
            } else {
                format!(" among {}", args.names.join(", "))
            }
        );
    }
    let client = Arc::new(client);

    // Watch before the first build, so an edit made while it runs is not missed.
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let _ = events_tx.send(event);
    })?;
    for target in &targets {
        let source = &target.build.as_ref().expect("filtered on build").source;
        let source = source.canonicalize().map_err(|err| {
            anyhow::anyhow!(
                "the sources of function `{}` are not there: {}: {err} — set `source` in {} to \
                 the function's project directory",
                target.name,
                source.display(),
                path.display()
            )
        })?;
        watcher.watch(&source, RecursiveMode::Recursive)?;
    }

    let mut followed = Vec::new();
    for target in &targets {
        if update(&client, target, true).await {
            followed.push(target.name.clone());
            follow_logs(&client, &target.name).await;
        }
    }
    eprintln!(
        "eddy dev: watching {} for changes (Ctrl-C to stop)",
        targets
            .iter()
            .map(|t| t
                .build
                .as_ref()
                .expect("filtered on build")
                .source
                .display()
                .to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );

    loop {
        let Some(first) = events.recv().await else {
            bail!("the file watcher stopped");
        };
        let mut changed = Vec::new();
        collect(&targets, first, &mut changed);
        // Debounce: take the rest of the burst.
        while let Ok(Some(event)) = tokio::time::timeout(DEBOUNCE, events.recv()).await {
            collect(&targets, event, &mut changed);
        }
        for target in targets.iter().filter(|t| changed.contains(&t.name)) {
            if update(&client, target, false).await && !followed.contains(&target.name) {
                followed.push(target.name.clone());
                follow_logs(&client, &target.name).await;
            }
        }
    }
}

/// Adds to `changed` the targets one of whose source files `event` touched.
fn collect(
    targets: &[DeployTarget],
    event: notify::Result<notify::Event>,
    changed: &mut Vec<String>,
) {
    let event = match event {
        Ok(event) => event,
        Err(err) => {
            eprintln!("eddy dev: watching: {err}");
            return;
        }
    };
    if matches!(event.kind, EventKind::Access(_)) {
        return;
    }
    for target in targets {
        let spec = target.build.as_ref().expect("filtered on build");
        if !changed.contains(&target.name)
            && build::Sources::new(&spec.source, &target.component)
                .is_ok_and(|sources| event.paths.iter().any(|path| sources.contains(path)))
        {
            changed.push(target.name.clone());
        }
    }
}

/// Builds `target` if a source is newer than its component (or `first`: the first round,
/// which deploys even an up-to-date component), then deploys it. Prints what happened;
/// returns whether the function is now deployed.
async fn update(client: &Client, target: &DeployTarget, first: bool) -> bool {
    let started = Instant::now();
    let built = match deploy::build_if_stale(target).await {
        Ok(built) => built,
        Err(err) => {
            eprintln!("eddy dev: {}: {err:#}", target.name);
            eprintln!(
                "eddy dev: the version deployed before (if any) keeps serving; waiting for the next change"
            );
            return false;
        }
    };
    if !built && !first {
        return true;
    }
    let build_s = started.elapsed().as_secs_f64();
    let deploying = Instant::now();
    if let Err(err) = deploy::deploy_request(client, target).await {
        eprintln!("eddy dev: {}: {err:#}", target.name);
        return false;
    }
    eprintln!(
        "eddy dev: {} is live {:.2}s after the change (build {build_s:.2}s, deploy {:.2}s)",
        target.name,
        started.elapsed().as_secs_f64(),
        deploying.elapsed().as_secs_f64()
    );
    true
}

/// Prints `name`'s invocations from now on, in a task of its own.
async fn follow_logs(client: &Arc<Client>, name: &str) {
    let after = match logs::newest(client, name).await {
        Ok(after) => after,
        Err(err) => {
            eprintln!("eddy dev: cannot follow the logs of {name}: {err:#}");
            return;
        }
    };
    let (client, name) = (client.clone(), name.to_owned());
    tokio::spawn(async move {
        if let Err(err) = logs::follow(&client, &name, after, false).await {
            eprintln!("eddy dev: stopped following the logs of {name}: {err:#}");
        }
    });
}
