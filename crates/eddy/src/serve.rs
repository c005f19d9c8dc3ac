//! `eddy serve`: run a node until SIGINT or SIGTERM, then shut down gracefully.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use eddy_node::NodeConfig;
use tracing_subscriber::EnvFilter;

/// Start an eddy node.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Public listener for functions [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Control API listener; keep it on loopback or a private network [default: 127.0.0.1:8081]
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// Node configuration file (TOML): limits and pooling settings; unknown keys are refused.
    /// See docs/limits.md
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Compiled-code cache directory [default: <STATE_DIR>/cache]
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Base URL printed for functions, when clients reach the node through a proxy
    /// [default: http://<listen address>]
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// Where the node keeps its state: `sqlite` (files in the state directory, one node) or
    /// a postgres:// URL that every node of a cluster shares [default: sqlite]
    #[arg(long, value_name = "STORE", env = "EDDY_STORE")]
    store: Option<String>,
    /// This node's name in a cluster: unique, and the same across its restarts
    /// [default: kept in <STATE_DIR>/node-name]
    #[arg(long, value_name = "NAME", env = "EDDY_NODE_NAME")]
    node_name: Option<String>,
    /// A file holding the admin token (a mounted Secret, say); the node then writes none
    #[arg(long, value_name = "FILE", env = "EDDY_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// A file holding the cluster's artifact key (the same on every node): compiled code is
    /// then shared between the nodes, each artifact checked by a MAC under it
    #[arg(long, value_name = "FILE", env = "EDDY_ARTIFACT_KEY_FILE")]
    artifact_key_file: Option<PathBuf>,
    /// A file holding the key that seals secrets (the same on every node, never beside the
    /// data); EDDY_SECRETS_KEY may hold the key itself instead
    #[arg(long, value_name = "FILE", env = "EDDY_SECRETS_KEY_FILE")]
    secrets_key_file: Option<PathBuf>,
    /// PEM file of the TLS certificate chain both listeners serve (with --tls-key);
    /// reloaded when it changes
    #[arg(long, value_name = "FILE", env = "EDDY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM file of the TLS certificate's private key
    #[arg(long, value_name = "FILE", env = "EDDY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve TLS with a self-signed certificate made once in <STATE_DIR>/tls (a first try:
    /// clients trust it with --ca-cert, or by the fingerprint the node logs)
    #[arg(long, conflicts_with = "tls_cert")]
    tls_self_signed: bool,
    /// Log format: `text` for people, `json` for log collectors. Level from EDDY_LOG (default info)
    #[arg(long, value_name = "FORMAT", env = "EDDY_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

/// Run a node with `state_dir` until a shutdown signal.
pub async fn run(state_dir: PathBuf, args: ServeArgs) -> anyhow::Result<()> {
    init_logging(&args.log_format);
    // Whatever the node or a library it uses creates is its user's alone (the state
    // directory and its files also get explicit modes).
    // SAFETY: umask has no preconditions and cannot fail.
    unsafe { libc::umask(0o077) };
    let config = node_config(state_dir, args)?;
    let node = eddy_node::start(config).await?;
    tracing::info!(
        public = %node.public_addr,
        admin = %node.admin_addr,
        public_url = %node.public_url,
        tls_fingerprint = node.tls_fingerprint.as_deref().unwrap_or(""),
        tls_self_signed = %node
            .tls_self_signed
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        functions = node.functions,
        pagemap_scan = node.pagemap_scan,
        "eddy ready"
    );
    shutdown_signal().await?;
    tracing::info!("shutting down: no new connections; waiting for in-flight requests");
    node.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

fn node_config(state_dir: PathBuf, args: ServeArgs) -> anyhow::Result<NodeConfig> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            NodeConfig::from_toml(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => NodeConfig::default(),
    };
    config.state_dir = state_dir;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(admin) = args.admin {
        config.admin = admin;
    }
    if args.cache_dir.is_some() {
        config.cache_dir = args.cache_dir;
    }
    if args.public_url.is_some() {
        config.public_url = args.public_url;
    }
    if args.store.is_some() {
        config.store = args.store;
    }
    if args.node_name.is_some() {
        config.node_name = args.node_name;
    }
    if args.admin_token_file.is_some() {
        config.admin_token_file = args.admin_token_file;
    }
    if args.artifact_key_file.is_some() {
        config.artifact_key_file = args.artifact_key_file;
    }
    if args.tls_cert.is_some() {
        config.tls.cert_file = args.tls_cert;
        config.tls.key_file = args.tls_key;
        config.tls.self_signed = false;
    }
    if args.tls_self_signed {
        config.tls.self_signed = true;
        config.tls.cert_file = None;
        config.tls.key_file = None;
    }
    if args.secrets_key_file.is_some() {
        config.secrets_key_file = args.secrets_key_file;
    }
    config.secrets_key = std::env::var("EDDY_SECRETS_KEY")
        .ok()
        .filter(|key| !key.trim().is_empty());
    config.compiler = Some(eddy_runtime::CompilerCommand::this_executable());
    config.validate()?;
    Ok(config)
}

fn init_logging(format: &str) {
    let filter = EnvFilter::try_from_env("EDDY_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for SIGINT")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
