//! An eddy node: the public ingress, the control API and the registry, wired to one
//! runtime and one store.
//!
//! Architecture invariant: this crate is the only one that knows all the others. It does
//! the IO (listeners, JSON); the runtime knows nothing of routes or the store, and the
//! store knows nothing of HTTP or Wasmtime.

pub(crate) mod admission;
pub(crate) mod api;
pub(crate) mod artifacts;
pub(crate) mod auth;
pub(crate) mod caps;
pub(crate) mod clock;
pub(crate) mod cluster;
pub mod config;
pub(crate) mod consumer;
pub(crate) mod cost;
pub(crate) mod cron;
pub(crate) mod error;
pub(crate) mod events;
pub(crate) mod health;
pub(crate) mod ingress;
pub(crate) mod invocations;
pub(crate) mod invoker;
pub(crate) mod listener;
pub(crate) mod members;
pub(crate) mod metering;
pub(crate) mod parts;
pub(crate) mod platform;
pub(crate) mod problem;
pub(crate) mod queues;
pub(crate) mod registry;
pub(crate) mod routes;
pub(crate) mod schedule;
pub(crate) mod secrets;
pub(crate) mod stores;
pub(crate) mod tls;
pub(crate) mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use eddy_runtime::Runtime;
use eddy_store::Retention;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::NodeConfig;

pub use eddy_store::copy::Copied;
pub use stores::{DATABASE_FILE, NODE_NAME_FILE, QUEUE_DATABASE_FILE, copy_to_postgres};

/// Compiled code shared with the cluster: when the store is shared and the operator gave
/// the artifact key. Without the key each node compiles for itself.
fn shared_artifacts(
    config: &NodeConfig,
    stores: &eddy_store::Stores,
    runtime: &Arc<Runtime>,
) -> anyhow::Result<Option<artifacts::SharedArtifacts>> {
    let Some(store) = stores.artifacts.clone() else {
        return Ok(None);
    };
    let Some(path) = &config.artifact_key_file else {
        tracing::info!("compiled code is not shared between nodes: no artifact_key_file");
        return Ok(None);
    };
    let key = artifacts::SharedArtifacts::read_key(path)?;
    Ok(Some(artifacts::SharedArtifacts::new(
        store,
        key,
        runtime.clone(),
    )))
}

/// The secrets key (and earlier keys) the operator gave: from `EDDY_SECRETS_KEY` or
/// `secrets_key_file`, never from a file in the state directory (the key must not sit
/// beside the data it protects).
fn node_secrets(
    config: &NodeConfig,
    stores: &eddy_store::Stores,
) -> anyhow::Result<secrets::Secrets> {
    let beside = |path: &std::path::Path| {
        let state = std::path::absolute(&config.state_dir).unwrap_or(config.state_dir.clone());
        std::path::absolute(path).is_ok_and(|p| p.starts_with(&state))
    };
    for path in config
        .secrets_key_file
        .iter()
        .chain(&config.secrets_previous_key_files)
    {
        anyhow::ensure!(
            !beside(path),
            "the secrets key file {} is inside the state directory {}: keep the key apart from the data it seals",
            path.display(),
            config.state_dir.display()
        );
    }
    let current = match (&config.secrets_key, &config.secrets_key_file) {
        (Some(_), Some(path)) => anyhow::bail!(
            "the secrets key is given twice, in {} and in {}: give one",
            secrets::SECRETS_KEY_ENV,
            path.display()
        ),
        (Some(key), None) => Some((key.clone(), secrets::SECRETS_KEY_ENV.to_owned())),
        (None, Some(path)) => Some(secrets::Secrets::read_key(path)?),
        (None, None) => None,
    };
    let previous = config
        .secrets_previous_key_files
        .iter()
        .map(|path| secrets::Secrets::read_key(path))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let current_file = match &config.secrets_key {
        Some(_) => None,
        None => config.secrets_key_file.clone(),
    };
    secrets::Secrets::new(stores.access.clone(), current, current_file, previous)
}

/// The certificates both listeners serve, if TLS is on: the operator's files, or a
/// self-signed certificate made once for `localhost` and the listen addresses.
fn node_tls(
    config: &NodeConfig,
    public: SocketAddr,
    admin: SocketAddr,
) -> anyhow::Result<Option<Arc<tls::Certificates>>> {
    let tls_config = &config.tls;
    let (cert, key) = if tls_config.self_signed {
        let mut names = vec![
            "localhost".to_owned(),
            public.ip().to_string(),
            admin.ip().to_string(),
        ];
        if let Some(host) = config
            .public_url
            .as_deref()
            .and_then(|url| url.parse::<http::Uri>().ok())
            .and_then(|uri| uri.host().map(str::to_owned))
        {
            names.push(host);
        }
        // An unspecified address (0.0.0.0, ::) names no host a client could check.
        names.retain(|name| {
            name.parse::<std::net::IpAddr>()
                .map_or(true, |ip| !ip.is_unspecified())
        });
        names.dedup();
        tls::self_signed(&config.state_dir, &names)?
    } else {
        match (&tls_config.cert_file, &tls_config.key_file) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            _ => return Ok(None),
        }
    };
    let certificates = tls::Certificates::open(&cert, &key)?;
    tracing::info!(
        cert = %cert.display(),
        fingerprint = %certificates.fingerprint(),
        self_signed = tls_config.self_signed,
        "both listeners speak TLS"
    );
    Ok(Some(certificates))
}

/// hyper's read buffer on the control API: the most a request head there may take.
const ADMIN_READ_BUFFER_BYTES: usize = 64 * 1024;

/// A started node. Call [`RunningNode::shutdown`] to stop it gracefully.
pub struct RunningNode {
    pub public_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub public_url: String,
    pub functions: usize,
    /// The fingerprint of the TLS certificate both listeners serve, when they speak TLS.
    pub tls_fingerprint: Option<String>,
    /// The self-signed certificate's file, when the node made one.
    pub tls_self_signed: Option<std::path::PathBuf>,
    /// Whether finished instances are reset with Linux `PAGEMAP_SCAN` (configured and
    /// supported by the kernel).
    pub pagemap_scan: bool,
    shutdown: CancellationToken,
    draining: Arc<AtomicBool>,
    servers: Vec<JoinHandle<()>>,
    /// Control-API changes running apart from their connections.
    changes: tokio_util::task::TaskTracker,
    writer: JoinHandle<()>,
    heartbeat: JoinHandle<()>,
    consumers: Arc<consumer::Consumers>,
    sockets: Arc<websocket::Sockets>,
    grace: Duration,
}

/// Validate the config, open the state, restore every function and bind both listeners.
pub async fn start(mut config: NodeConfig) -> anyhow::Result<RunningNode> {
    config.validate()?;
    for lowered in config.fit_open_files()? {
        tracing::warn!("{lowered}");
    }
    // Bound first: the runtime must know the control API's address (functions may never
    // reach it), and a taken port is reported before anything is written.
    let public = TcpListener::bind(config.listen).await.with_context(|| {
        format!(
            "binding the public listener to {} (is another node running? use --listen)",
            config.listen
        )
    })?;
    let admin = TcpListener::bind(config.admin).await.with_context(|| {
        format!(
            "binding the control API to {} (is another node running? use --admin)",
            config.admin
        )
    })?;
    let public_addr = public.local_addr()?;
    let admin_addr = admin.local_addr()?;
    // The state directory holds the admin token, every function's env values and compiled
    // native code: this user's only, from the moment it exists.
    let tightened = eddy_runtime::ensure_private_dir(&config.state_dir).with_context(|| {
        format!(
            "preparing the state directory {}",
            config.state_dir.display()
        )
    })?;
    if tightened {
        tracing::warn!(dir = %config.state_dir.display(), "the state directory was readable by others; it is now 0700");
    }
    tighten_files(&config.state_dir)
        .with_context(|| format!("making the files in {} private", config.state_dir.display()))?;
    let certificates = node_tls(&config, public_addr, admin_addr)?;
    let limits = config.limits.clone();
    // From here on the node reaches its state only through the store traits.
    let started_at_ms = config.clock.now_ms();
    let stores::Opened {
        stores,
        shared,
        node: node_name,
    } = stores::open(&config).await?;
    let token = Arc::new(
        auth::admin_token(
            &*stores.token,
            &config.state_dir,
            auth::TokenSource {
                given: config.admin_token_file.as_deref(),
                shared,
            },
        )
        .await?,
    );
    let queues = Arc::new(queues::QueueHub::new(stores.queues.clone(), limits.clone()));
    let sockets = websocket::Sockets::new(limits.clone(), config.clock);
    let mut runtime_config = config.runtime();
    runtime_config.destinations.control_api = Some(admin_addr);
    let runtime = Arc::new(Runtime::new(runtime_config)?);
    let pagemap_scan = runtime.pagemap_scan_in_use();
    let parts = parts::Parts {
        stores: stores.clone(),
        clock: config.clock,
        admission: admission::Admission::new(admission::NodeAdmission {
            concurrency_max: limits.concurrency_max,
            background_concurrency_max: limits.background_concurrency_max,
        }),
        meter: Arc::new(metering::Meter::new()),
        budgets: Arc::new(caps::Budgets::new(config.clock)),
        runtime: runtime.clone(),
        store_health: Arc::default(),
        node: node_name.as_str().into(),
    };
    let secrets = Arc::new(node_secrets(&config, &stores)?);
    let registry = Arc::new(
        registry::Registry::load(
            &parts,
            limits.clone(),
            {
                let eddy_local = platform::EddyLocal::new(queues.clone(), sockets.clone());
                Arc::new(move |function, publish| eddy_local.for_function(function, publish))
            },
            shared_artifacts(&config, &stores, &runtime)?,
            secrets.clone(),
        )
        .await?,
    );
    let functions = registry.routes().len();

    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| match certificates {
            Some(_) => format!("https://{public_addr}"),
            None => format!("http://{public_addr}"),
        });

    let retention = Retention {
        invocations_per_function_max: limits.invocations_kept_per_function,
        retention_ms: limits.invocation_retention_ms,
    };
    let (sink, writer, written) = invocations::channel(
        stores.invocations.clone(),
        retention,
        parts.meter.clone(),
        limits.rollup_retention_ms,
        config.clock,
    );
    let writer = tokio::spawn(writer.run());
    let invoker = invoker::Invoker::new(
        parts.clone(),
        sink.clone(),
        limits.invocation_records_per_second_max,
    );
    let consumers = consumer::Consumers::new(queues.clone(), registry.clone(), invoker.clone());
    consumers.start_all().await?;
    let shutdown = CancellationToken::new();
    if let Some(certificates) = &certificates {
        tokio::spawn(certificates.clone().watch(shutdown.clone()));
    }
    tokio::spawn(secrets.clone().watch(shutdown.clone()));
    if shared {
        tokio::spawn(
            cluster::Follower {
                registry: registry.clone(),
                consumers: consumers.clone(),
                hints: stores.hints.clone(),
                health: parts.store_health.clone(),
                clock: config.clock,
                poll: Duration::from_millis(limits.store_poll_interval_ms),
            }
            .run(shutdown.clone()),
        );
    }
    let heartbeat = tokio::spawn(members::heartbeat(
        parts.clone(),
        registry.clone(),
        members::Identity {
            name: node_name.clone(),
            public_url: public_url.clone(),
            admin_addr: admin_addr.to_string(),
            started_at_ms,
        },
        shutdown.clone(),
    ));
    if let Some(relay) = stores.relay.clone() {
        sockets.relay_through(relay, node_name.clone(), shutdown.clone());
    }
    cron::Scheduler::start(registry.clone(), invoker.clone(), shutdown.clone());
    tokio::spawn(evict_idle_instances(registry.clone(), shutdown.clone()));
    if limits.rollup_retention_ms < cost::MONTH_MS_MAX {
        tracing::warn!(
            rollup_retention_ms = limits.rollup_retention_ms,
            "limits.rollup_retention_ms is shorter than a month: budgets and month-to-date cost see only the minutes kept"
        );
    }
    tokio::spawn(
        cost::budget::Watcher {
            parts: parts.clone(),
            interval: Duration::from_millis(limits.budget_check_interval_ms),
            webhook_timeout: Duration::from_millis(limits.budget_webhook_timeout_ms),
            webhook_hosts: config.budget_webhook_hosts.clone().into(),
        }
        .run(shutdown.clone()),
    );
    let draining = Arc::new(AtomicBool::new(false));

    let trusted_proxies: Arc<[eddy_runtime::destinations::IpNet]> =
        config.trusted_proxies()?.into();
    let ingress = Arc::new(ingress::Ingress {
        registry: registry.clone(),
        invoker: invoker.clone(),
        limits: limits.clone(),
        draining: draining.clone(),
        sockets: Arc::new(websocket::SocketServer {
            sockets: sockets.clone(),
            registry: registry.clone(),
            invoker: invoker.clone(),
            limits: limits.clone(),
        }),
        trusted_proxies: trusted_proxies.clone(),
        tls: certificates
            .as_ref()
            .map(|c| c.server_config(&[b"h2", b"http/1.1"])),
    });
    let changes = tokio_util::task::TaskTracker::new();
    let api_state = api::ApiState {
        registry,
        parts,
        token,
        public_url: public_url.clone(),
        limits: limits.clone(),
        sink,
        written,
        draining: draining.clone(),
        shutdown: shutdown.clone(),
        queues,
        consumers: consumers.clone(),
        sockets: sockets.clone(),
        budget_webhook_hosts: config.budget_webhook_hosts.clone().into(),
        node_name: node_name.into(),
        throttle: Arc::default(),
        secrets,
        changes: changes.clone(),
        tls: certificates.is_some(),
        log_streams: Arc::default(),
    };
    let public_server = tokio::spawn(ingress.serve(public, shutdown.clone()));
    let admin_shutdown = shutdown.clone();
    let admin_limits = listener::ListenerLimits {
        connections_key: "admin_connections_max",
        connections_max: limits.admin_connections_max,
        connections_per_ip_max: limits
            .connections_per_ip_max
            .min(limits.admin_connections_max),
        header_read_timeout: Duration::from_millis(limits.header_read_timeout_ms),
        write_timeout: Duration::from_millis(limits.write_timeout_ms),
        read_buffer_bytes: ADMIN_READ_BUFFER_BYTES,
        trusted_proxies: trusted_proxies.clone(),
        shutdown_grace: Duration::from_millis(limits.shutdown_grace_ms),
        tls: certificates
            .as_ref()
            .map(|c| c.server_config(&[b"http/1.1"])),
        http2: None,
    };
    let app = api::router(api_state);
    let changes_tracked = changes;
    let admin_server = tokio::spawn(listener::serve(
        admin,
        admin_limits,
        admin_shutdown,
        move |peer| {
            // The control API knows each caller's address: for the audit trail and the
            // slowdown of failed authentication.
            let app = app.clone();
            hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(listener::Peer(peer));
                tower_service::Service::call(&mut app.clone(), request)
            })
        },
    ));
    Ok(RunningNode {
        public_addr,
        admin_addr,
        public_url,
        functions,
        tls_fingerprint: certificates.as_ref().map(|c| c.fingerprint()),
        tls_self_signed: config.tls.self_signed.then(|| {
            config
                .state_dir
                .join(tls::SELF_SIGNED_DIR)
                .join("self-signed.crt")
        }),
        pagemap_scan,
        shutdown,
        draining,
        servers: vec![public_server, admin_server],
        changes: changes_tracked,
        writer,
        heartbeat,
        consumers,
        sockets,
        grace: Duration::from_millis(limits.shutdown_grace_ms),
    })
}

/// Make every file directly in the state directory `PRIVATE_FILE_MODE` (files eddy made
/// before it created them private: `eddy.db` was once 0644).
fn tighten_files(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(
                entry.path(),
                std::fs::Permissions::from_mode(eddy_runtime::PRIVATE_FILE_MODE),
            )?;
        }
    }
    Ok(())
}

/// How often warm instances past their idle timeout are looked for: the precision of
/// `--reuse-idle-timeout`.
pub const IDLE_EVICTION_INTERVAL: Duration = Duration::from_millis(250);

/// Drop warm instances idle past their function's timeout, until shutdown (scale to zero).
async fn evict_idle_instances(registry: Arc<registry::Registry>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(IDLE_EVICTION_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let evicted = registry.evict_idle();
                if evicted > 0 {
                    tracing::debug!(evicted, "dropped idle warm instances");
                }
            }
        }
    }
}

impl RunningNode {
    /// Stop accepting, let in-flight requests finish within the grace period, then write
    /// the remaining invocation records.
    pub async fn shutdown(self) {
        self.draining.store(true, Ordering::Relaxed);
        self.shutdown.cancel();
        // Held WebSockets are no in-flight requests: close them (1001, going away). Each
        // still gets its close event, within the grace period like any invocation.
        let closed = self.sockets.close_all(1001, "the node is shutting down");
        if closed > 0 {
            tracing::info!(connections = closed, "closing WebSocket connections");
        }
        // No new deliveries; those running finish like requests (their messages are
        // settled, or delivered again after a restart). The consumers hold a record sink:
        // let go of it, or the writer below waits out the whole grace period.
        self.consumers.stop_all();
        drop(self.consumers);
        for server in self.servers {
            // The public server bounds itself by the grace period; the control API's
            // requests are short (long polls end on shutdown).
            if tokio::time::timeout(self.grace + Duration::from_secs(1), server)
                .await
                .is_err()
            {
                tracing::warn!("a listener did not stop within the grace period");
            }
        }
        // Control-API changes whose clients left still finish and reach the audit trail.
        self.changes.close();
        if tokio::time::timeout(self.grace, self.changes.wait())
            .await
            .is_err()
        {
            tracing::warn!("a control API change did not finish within the grace period");
        }
        // Guests still running (their clients gone) hold the record sink until their
        // deadline; do not wait for them longer than the grace period.
        if tokio::time::timeout(self.grace, self.writer).await.is_err() {
            tracing::warn!("some invocation records were not written before shutdown");
        }
        // The last heartbeat says the node stopped (bounded: the store may be away).
        if tokio::time::timeout(self.grace, self.heartbeat)
            .await
            .is_err()
        {
            tracing::warn!("the last heartbeat was not recorded before shutdown");
        }
    }
}
