//! The node's typed configuration: one struct, unknown keys rejected, validated before anything starts.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use eddy_runtime::limits as rt;

/// Largest accepted component upload. Bigger uploads get `413 component_too_large`.
pub const DEFAULT_COMPONENT_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Total bytes of request header names and values. More gets `431` with `eddy-error: header_bytes_max`.
pub const DEFAULT_HEADER_BYTES_MAX: usize = 32 * 1024;
/// Longest request target (path and query) on the public listener. A longer one gets `414`
/// with `eddy-error: request_target_bytes_max` before it is routed. Routing itself looks
/// only at the first `ROUTE_BYTES_MAX` bytes, so a long path costs no more to route than a
/// short one; this bound keeps what a function is handed, logged and recorded small.
pub const DEFAULT_REQUEST_TARGET_BYTES_MAX: usize = 8 * 1024;
/// Open connections on the public listener. Past it a new connection gets `503` with
/// `eddy-error: connections_max` and is closed.
pub const DEFAULT_CONNECTIONS_MAX: usize = 10_000;
/// Time a client has to send a request's headers, on a new or an idle keep-alive connection
/// (both listeners): also how long a kept-alive connection may sit idle.
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 30_000;
/// Longest a write to a client may wait for the client to take bytes (both listeners, and
/// WebSockets): a client that stops reading is disconnected after it instead of holding its
/// connection and the response's buffers.
pub const DEFAULT_WRITE_TIMEOUT_MS: u64 = 30_000;
/// Open connections from one client address on the public listener (a load balancer in
/// `trusted_proxies` is exempt). Past it a new connection gets `503` with
/// `eddy-error: connections_per_ip_max` and is closed.
pub const DEFAULT_CONNECTIONS_PER_IP_MAX: usize = 1_000;
/// Open connections on the control API listener, where a client's requests are short.
pub const DEFAULT_ADMIN_CONNECTIONS_MAX: usize = 256;
/// Failed authentications one client address may make on the control API in a minute
/// before the node answers it `429` without checking, until the minute is over.
pub const DEFAULT_AUTH_FAILURES_PER_MINUTE_MAX: u32 = 10;
/// Live invocation-log streams (`GET …/logs/stream`) open on the node at once: each holds a
/// control-API connection, so they may take only part of `admin_connections_max`.
pub const DEFAULT_LOG_STREAMS_MAX: usize = 64;
/// Live invocation-log streams one token may hold open at once.
pub const DEFAULT_LOG_STREAMS_PER_TOKEN_MAX: usize = 8;
/// Streams one HTTP/2 connection may have open at once.
pub const DEFAULT_HTTP2_STREAMS_PER_CONNECTION_MAX: u32 = 100;
/// HTTP/2 streams a client may open and reset before the node accepted them (rapid reset).
pub const DEFAULT_HTTP2_PENDING_RESET_STREAMS_MAX: usize = 20;
/// HTTP/2 streams the node may reset for a client's protocol errors before it closes the
/// connection.
pub const HTTP2_LOCAL_ERROR_RESETS_MAX: usize = 1024;
/// Largest value of one secret.
pub const DEFAULT_SECRET_BYTES_MAX: usize = 64 * 1024;
/// How long audit entries are kept (90 days).
pub const DEFAULT_AUDIT_RETENTION_MS: u64 = 90 * 24 * 60 * 60 * 1000;
/// How long shutdown waits for in-flight requests before it stops them.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 30_000;
/// Invocation records kept per function (oldest deleted first).
pub const DEFAULT_INVOCATIONS_KEPT_PER_FUNCTION: usize = 1000;
/// Successful invocations without output recorded per function per second; past it they
/// are counted in the per-minute totals (`eddy stats`) but get no record of their own, so
/// the ring of recent invocations is not one SQLite row per request at high rates.
/// Failures and invocations that wrote output are always recorded.
pub const DEFAULT_INVOCATION_RECORDS_PER_SECOND_MAX: u32 = 100;
/// Age after which invocation records are deleted.
pub const DEFAULT_INVOCATION_RETENTION_MS: i64 = 7 * 24 * 60 * 60 * 1000;
/// Invocation records waiting to be written. When the store falls this far behind, new
/// records are dropped (and counted) rather than slowing requests down.
pub const INVOCATION_QUEUE_CAPACITY: usize = 10_000;
/// Largest memory limit there can be: a 32-bit WebAssembly memory holds at most 4 GiB.
pub const MEMORY_BYTES_MAX_CEILING: u64 = 4 * 1024 * 1024 * 1024;
/// Smallest memory a function can have: one WebAssembly page.
pub const MEMORY_BYTES_MIN: u64 = 64 * 1024;
/// Most instance slots a node can reserve: every memory slot reserves about 4 GiB of
/// address space, and the pool must fit in the process's 128 TiB.
pub const INSTANCES_MAX_CEILING: u32 = 10_000;
/// Most linear-memory slots the pool may reserve (`instances_max` ×
/// `component_memories_max`): the default's 2 per instance at `INSTANCES_MAX_CEILING`.
pub const MEMORY_SLOTS_MAX: u64 = 2 * INSTANCES_MAX_CEILING as u64;
/// Longest wait of a `logs?wait_ms=` long poll.
pub const LOG_WAIT_MS_MAX: u64 = 30_000;
/// Invocations running at once on the node, all functions and classes together. With
/// `idle_instances_max` it should stay within `instances_max`, so callers meet admission
/// control (503 with `Retry-After`) before the instance pool runs out.
pub const DEFAULT_CONCURRENCY_MAX: usize = 750;
/// Of `concurrency_max`, the most that background work (queue deliveries, cron ticks) may
/// hold at once; the rest is always left to interactive requests.
pub const DEFAULT_BACKGROUND_CONCURRENCY_MAX: usize = 375;
/// A function's concurrency when it does not ask for one (`--max-concurrency`).
pub const DEFAULT_FUNCTION_CONCURRENCY_MAX: u32 = 100;
/// Requests of one function that may wait for a slot when it does not say (`--max-queue`).
pub const DEFAULT_FUNCTION_QUEUE_MAX: u32 = 1000;
/// Longest a request waits for a slot when its function does not say (`--max-wait`).
pub const DEFAULT_FUNCTION_WAIT_MS_MAX: u64 = 10_000;
/// Ceiling of any function's `--max-queue`.
pub const FUNCTION_QUEUE_MAX_CEILING: u32 = 100_000;
/// Ceiling of any function's `--reuse-idle-timeout` (one day).
pub const REUSE_IDLE_TIMEOUT_MS_CEILING: u64 = 24 * 60 * 60 * 1000;
/// Per-minute invocation totals older than this are deleted (35 days: a calendar month and
/// the forecast's trailing days always fit).
pub const DEFAULT_ROLLUP_RETENTION_MS: i64 = 35 * 24 * 60 * 60 * 1000;
/// Largest user price sheet (TOML). A bigger one gets `413`.
pub const DEFAULT_PRICE_SHEET_BYTES_MAX: usize = 64 * 1024;
/// How often budgets are checked (and at once when one is set): how late an alert or a
/// hard cap can be.
pub const DEFAULT_BUDGET_CHECK_INTERVAL_MS: u64 = 10_000;
/// How long a budget alert webhook may take to answer.
pub const DEFAULT_BUDGET_WEBHOOK_TIMEOUT_MS: u64 = 5_000;
/// Entries of one function's outbound allowlist.
pub const ALLOW_OUTBOUND_RULES_MAX: usize = 64;
/// WebSocket connections the node holds, all functions together. Past it an upgrade gets
/// `503` with `eddy-error: websocket_connections_max`.
pub const DEFAULT_WEBSOCKET_CONNECTIONS_MAX: usize = 100_000;
/// WebSocket connections of one function (`websocket_connections_per_function_max`).
pub const DEFAULT_WEBSOCKET_CONNECTIONS_PER_FUNCTION_MAX: usize = 10_000;
/// Largest incoming WebSocket message; a bigger one closes the connection with 1009.
pub const DEFAULT_WEBSOCKET_MESSAGE_BYTES_MAX: usize = 1024 * 1024;
/// Bytes waiting to be written to one connection; a reader that falls further behind is
/// closed with 1013 instead of being buffered for.
pub const DEFAULT_WEBSOCKET_SEND_BUFFER_BYTES_MAX: usize = 1024 * 1024;
/// A connection with no frame from the client for this long is closed with 1001.
pub const DEFAULT_WEBSOCKET_IDLE_TIMEOUT_MS: u64 = 5 * 60 * 1000;
/// How often the node pings an open connection (keep-alive through proxies and NAT).
pub const DEFAULT_WEBSOCKET_PING_INTERVAL_MS: u64 = 30_000;
/// Entries of one function's `publish` list (queues it may publish to).
pub const PUBLISH_RULES_MAX: usize = 64;
/// Largest queue message body. A bigger publish gets `413` (`queue_message_bytes_max`).
/// A message must fit in the request that delivers it: the node uses at most
/// `request_body_bytes_max`.
pub const DEFAULT_QUEUE_MESSAGE_BYTES_MAX: u64 = 256 * 1024;
/// Size of the queue database (`queues.db`): every queue's messages, all together. Past it a
/// publish gets `507` with `eddy-error: queues_bytes_max` and nothing of it is stored, and a
/// disk that fills first gets the same answer. The database never shrinks below what it holds.
pub const DEFAULT_QUEUES_BYTES_MAX: u64 = 1024 * 1024 * 1024;
/// Bytes of message bodies one queue may hold, so one queue cannot take the whole of
/// `queues_bytes_max` from the others. Past it a publish gets `507` with
/// `eddy-error: queue_bytes_max` and nothing of it is stored; a dead-letter move is never
/// refused.
pub const DEFAULT_QUEUE_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Messages one queue may hold (ready, delayed and in flight). Past it a publish gets `503`
/// with `Retry-After` (`queue_depth_max`); a dead-letter move is never refused.
pub const DEFAULT_QUEUE_DEPTH_MAX: u64 = 1_000_000;
/// Queues on the node, dead-letter queues included.
pub const DEFAULT_QUEUES_MAX: usize = 1000;
/// Messages in one batch publish call.
pub const QUEUE_PUBLISH_BATCH_MAX: usize = 1000;
/// Idempotency window of a queue created without one.
pub const DEFAULT_QUEUE_IDEMPOTENCY_WINDOW_MS: u64 = 5 * 60 * 1000;
/// Longest idempotency window a queue may have (one day).
pub const QUEUE_IDEMPOTENCY_WINDOW_MS_CEILING: u64 = 24 * 60 * 60 * 1000;
/// Messages per delivery at most (`--batch-size`).
pub const CONSUMER_BATCH_SIZE_MAX: u32 = 1000;
/// Deliveries of one message at most (`--max-attempts`).
pub const CONSUMER_ATTEMPTS_MAX_CEILING: u32 = 100;
/// Defaults of a consumer binding that does not say.
pub const DEFAULT_CONSUMER_BATCH_SIZE: u32 = 1;
pub const DEFAULT_CONSUMER_CONCURRENCY_MAX: u32 = 10;
pub const DEFAULT_CONSUMER_VISIBILITY_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_CONSUMER_ATTEMPTS_MAX: u32 = 5;
pub const DEFAULT_CONSUMER_BACKOFF_BASE_MS: u64 = 1000;
pub const DEFAULT_CONSUMER_BACKOFF_MAX_MS: u64 = 5 * 60 * 1000;
/// Consecutive failed deliveries after which a consumer's circuit breaker opens: it pauses,
/// then probes with one delivery at exponentially growing intervals.
pub const DEFAULT_CONSUMER_BREAKER_FAILURES: u32 = 10;

/// Everything `eddy serve` needs. Read from `--config FILE` (TOML) and overridden by flags.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Public listener for functions.
    pub listen: SocketAddr,
    /// Control API listener.
    pub admin: SocketAddr,
    /// Holds the SQLite database, the admin token and (by default) the compile cache.
    /// Set by `--state-dir` / `EDDY_STATE_DIR` only, so the CLI and the node agree on it.
    #[serde(skip)]
    pub state_dir: PathBuf,
    /// Compiled-code cache; default `<state_dir>/cache`.
    pub cache_dir: Option<PathBuf>,
    /// Where the node's durable state lives: `None` (or `"sqlite"`), SQLite files in the
    /// state directory; `postgres://…`, a Postgres database the nodes of a cluster share.
    pub store: Option<String>,
    /// The Postgres schema the tables live in (created if missing); default: the
    /// connection's current schema.
    pub store_schema: Option<String>,
    /// This node's name in the cluster (unique, stable across restarts); default: the one
    /// kept in `<state_dir>/node-name`, made from the host name on first start.
    pub node_name: Option<String>,
    /// A file holding the admin token the operator gives (a Kubernetes Secret, say): the
    /// node accepts it and writes no token of its own.
    pub admin_token_file: Option<PathBuf>,
    /// A file holding the cluster's artifact key (the same on every node, never in the
    /// database): with it, compiled code is shared between the nodes of a cluster, each
    /// artifact authenticated by a MAC under the key.
    pub artifact_key_file: Option<PathBuf>,
    /// A file holding the key that seals secrets (the same on every node, never beside the
    /// data); without it, nor `secrets_key`, the node refuses to set or bind secrets.
    pub secrets_key_file: Option<PathBuf>,
    /// Keys that sealed secrets before the current one: they only open (a key rotation).
    pub secrets_previous_key_files: Vec<PathBuf>,
    /// TLS on both listeners.
    pub tls: TlsConfig,
    /// The secrets key itself, when the operator gives it in `EDDY_SECRETS_KEY` rather
    /// than a file; never read from the config file.
    #[serde(skip)]
    pub secrets_key: Option<String>,
    /// Base URL printed for functions; default `http://<listen>`.
    pub public_url: Option<String>,
    /// Hosts (`host` or `host:port`) budget alert webhooks may be sent to.
    pub budget_webhook_hosts: Vec<String>,
    /// Networks (CIDR, `10.0.0.0/8`, or one address) functions may reach although they are
    /// loopback, private, link-local or otherwise internal; none by default. Only the
    /// operator opens these: no deployer's allowlist can. The control API is never reachable.
    pub outbound_allow_networks: Vec<String>,
    /// Load balancers (CIDR or address) whose connections carry many clients: exempt from
    /// `limits.connections_per_ip_max`, which then applies at the load balancer.
    pub trusted_proxies: Vec<String>,
    pub limits: LimitsConfig,
    pub pooling: PoolingSettings,
    /// The `[limits]` keys the config file set (the others are defaults, which the node may
    /// lower to fit the open-file limit; a value the operator set is never lowered).
    #[serde(skip)]
    pub limits_set: Vec<String>,
    /// The command that compiles components in a child process bounded by
    /// `limits.compile_time_ms_max` and `limits.compile_memory_bytes_max` (`eddy serve`: its
    /// own executable's `compile-worker`). `None` compiles in the node's process, unbounded:
    /// only for embedding the node in tests.
    #[serde(skip)]
    pub compiler: Option<eddy_runtime::CompilerCommand>,
    /// The clock every part of the node reads (the system's, unless a test hands in
    /// [`crate::clock::Clock::starting_at`]).
    #[serde(skip)]
    pub clock: crate::clock::Clock,
}

/// How often a node of a cluster polls the store for other nodes' changes (milliseconds).
pub const DEFAULT_STORE_POLL_INTERVAL_MS: u64 = 1_000;

/// Where a node keeps its durable state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreChoice {
    /// SQLite files in the state directory: one node.
    Sqlite,
    /// A Postgres database shared by the nodes of a cluster.
    Postgres { url: String, schema: Option<String> },
}

/// Longest node name (bytes).
pub const NODE_NAME_BYTES_MAX: usize = 63;

/// Whether `name` may name a node: what a host name or a Kubernetes pod name may be.
pub fn is_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NODE_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl NodeConfig {
    /// The store `store` and `store_schema` name; an error says what is wrong with them.
    pub fn store_choice(&self) -> Result<StoreChoice, ConfigError> {
        match self.store.as_deref().map(str::trim) {
            None | Some("sqlite") => {
                if self.store_schema.is_some() {
                    return Err(ConfigError(
                        "store_schema is set but the store is SQLite; set store = \"postgres://…\" too".into(),
                    ));
                }
                Ok(StoreChoice::Sqlite)
            }
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(StoreChoice::Postgres {
                    url: url.to_owned(),
                    schema: self.store_schema.clone(),
                })
            }
            Some(other) => {
                // Never echo a URL: it may carry a password.
                let scheme = other.split(':').next().unwrap_or_default();
                Err(ConfigError(format!(
                    "store: `{scheme}` is not a store eddy knows; use \"sqlite\" (the default) or a postgres:// URL"
                )))
            }
        }
    }
}

/// Every node-wide limit. Names carry their units.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Memory of a function that does not ask for a limit.
    pub memory_bytes_default: u64,
    /// Largest memory a function may ask for.
    pub memory_bytes_max: u64,
    /// Timeout of a function that does not ask for one.
    pub timeout_ms_default: u64,
    /// Largest timeout a function may ask for.
    pub timeout_ms_max: u64,
    pub component_bytes_max: u64,
    pub request_body_bytes_max: u64,
    pub response_body_bytes_max: u64,
    pub header_bytes_max: usize,
    pub request_target_bytes_max: usize,
    pub connections_max: usize,
    pub connections_per_ip_max: usize,
    pub admin_connections_max: usize,
    pub write_timeout_ms: u64,
    pub instances_max: u32,
    pub header_read_timeout_ms: u64,
    pub shutdown_grace_ms: u64,
    pub log_bytes_per_invocation_max: usize,
    pub invocations_kept_per_function: usize,
    pub invocation_records_per_second_max: u32,
    pub invocation_retention_ms: i64,
    pub rollup_retention_ms: i64,
    pub concurrency_max: usize,
    pub background_concurrency_max: usize,
    pub function_concurrency_default: u32,
    pub function_queue_default: u32,
    pub function_wait_ms_default: u64,
    pub idle_instances_max: usize,
    /// Disk for Cranelift's per-function cache (`0`: off).
    pub incremental_cache_bytes_max: u64,
    pub outbound_connect_timeout_ms: u64,
    pub outbound_timeout_ms: u64,
    pub outbound_response_bytes_max: u64,
    pub outbound_requests_in_flight_max: usize,
    pub resources_per_instance_max: usize,
    pub fields_bytes_max: usize,
    pub outgoing_body_chunk_bytes: usize,
    pub component_core_instances_max: u32,
    pub component_memories_max: u32,
    pub component_tables_max: u32,
    pub component_functions_max: u32,
    pub component_data_bytes_max: u64,
    pub component_modules_max: u32,
    pub compile_time_ms_max: u64,
    pub compile_memory_bytes_max: u64,
    pub queue_message_bytes_max: u64,
    pub queue_depth_max: u64,
    pub queues_bytes_max: u64,
    pub queue_bytes_max: u64,
    pub queues_max: usize,
    pub queue_idempotency_window_ms_default: u64,
    pub consumer_breaker_failures: u32,
    pub websocket_connections_max: usize,
    pub websocket_connections_per_function_max: usize,
    pub websocket_message_bytes_max: usize,
    pub websocket_send_buffer_bytes_max: usize,
    pub websocket_idle_timeout_ms: u64,
    pub websocket_ping_interval_ms: u64,
    pub price_sheet_bytes_max: usize,
    pub budget_check_interval_ms: u64,
    pub budget_webhook_timeout_ms: u64,
    /// Connections to a Postgres store one node keeps open at most.
    pub store_connections_max: usize,
    /// Longest wait for a connection to a Postgres store (milliseconds).
    pub store_connect_timeout_ms: u64,
    /// Longest a statement on a Postgres store may run, lock waits included (milliseconds).
    pub store_statement_timeout_ms: u64,
    /// How often a node of a cluster checks the store for changes other nodes made, besides
    /// the notifications that usually tell it sooner (milliseconds).
    pub store_poll_interval_ms: u64,
    /// Failed authentications from one address per minute before it is refused unchecked.
    pub auth_failures_per_minute_max: u32,
    /// Live invocation-log streams open on the node at once.
    pub log_streams_max: usize,
    /// Live invocation-log streams one token may hold open at once.
    pub log_streams_per_token_max: usize,
    /// How long the audit trail keeps an entry (milliseconds).
    pub audit_retention_ms: u64,
    /// Largest value of one secret.
    pub secret_bytes_max: usize,
    /// HTTP/2 (public listener, over TLS): streams per connection at once.
    pub http2_streams_per_connection_max: u32,
    /// HTTP/2: streams opened and reset before accepted, before the connection is closed.
    pub http2_pending_reset_streams_max: usize,
}

/// TLS on both listeners (`[tls]`): a certificate chain and its key in PEM files, reloaded
/// when they change; or a self-signed certificate the node makes once.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Make (once, in `<state_dir>/tls/`) and serve a self-signed certificate.
    pub self_signed: bool,
}

impl TlsConfig {
    /// Whether the listeners speak TLS.
    pub fn enabled(&self) -> bool {
        self.self_signed || self.cert_file.is_some()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        match (&self.cert_file, &self.key_file, self.self_signed) {
            (Some(_), None, _) | (None, Some(_), _) => Err(ConfigError(
                "tls.cert_file and tls.key_file go together: give both".to_owned(),
            )),
            (Some(_), Some(_), true) => Err(ConfigError(
                "tls.self_signed makes its own certificate: give it or tls.cert_file and tls.key_file, not both".to_owned(),
            )),
            _ => Ok(()),
        }
    }
}

/// How the instance pool keeps and resets slots between instantiations (tuning, see
/// `docs/limits.md`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolingSettings {
    pub memory_keep_resident_bytes: usize,
    pub table_keep_resident_bytes: usize,
    pub async_stack_keep_resident_bytes: usize,
    pub pagemap_scan: bool,
    pub inline_teardown_memory_bytes_max: usize,
}

impl PoolingSettings {
    /// The runtime's form of these settings.
    pub fn runtime(&self) -> rt::PoolingConfig {
        rt::PoolingConfig {
            memory_keep_resident_bytes: self.memory_keep_resident_bytes,
            table_keep_resident_bytes: self.table_keep_resident_bytes,
            async_stack_keep_resident_bytes: self.async_stack_keep_resident_bytes,
            pagemap_scan: self.pagemap_scan,
            inline_teardown_memory_bytes_max: self.inline_teardown_memory_bytes_max,
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin: SocketAddr::from(([127, 0, 0, 1], 8081)),
            state_dir: PathBuf::from(".eddy"),
            cache_dir: None,
            store: None,
            store_schema: None,
            node_name: None,
            admin_token_file: None,
            artifact_key_file: None,
            secrets_key_file: None,
            secrets_previous_key_files: Vec::new(),
            tls: TlsConfig::default(),
            secrets_key: None,
            public_url: None,
            budget_webhook_hosts: Vec::new(),
            outbound_allow_networks: Vec::new(),
            trusted_proxies: Vec::new(),
            limits: LimitsConfig::default(),
            pooling: PoolingSettings::default(),
            limits_set: Vec::new(),
            compiler: None,
            clock: crate::clock::Clock::system(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            memory_bytes_default: rt::DEFAULT_MEMORY_BYTES_MAX,
            memory_bytes_max: rt::DEFAULT_NODE_MEMORY_BYTES_MAX,
            timeout_ms_default: rt::DEFAULT_TIMEOUT_MS,
            timeout_ms_max: rt::DEFAULT_NODE_TIMEOUT_MS_MAX,
            component_bytes_max: DEFAULT_COMPONENT_BYTES_MAX,
            request_body_bytes_max: rt::DEFAULT_REQUEST_BODY_BYTES_MAX,
            response_body_bytes_max: rt::DEFAULT_RESPONSE_BODY_BYTES_MAX,
            header_bytes_max: DEFAULT_HEADER_BYTES_MAX,
            request_target_bytes_max: DEFAULT_REQUEST_TARGET_BYTES_MAX,
            connections_max: DEFAULT_CONNECTIONS_MAX,
            connections_per_ip_max: DEFAULT_CONNECTIONS_PER_IP_MAX,
            admin_connections_max: DEFAULT_ADMIN_CONNECTIONS_MAX,
            write_timeout_ms: DEFAULT_WRITE_TIMEOUT_MS,
            instances_max: rt::DEFAULT_INSTANCES_MAX,
            header_read_timeout_ms: DEFAULT_HEADER_READ_TIMEOUT_MS,
            shutdown_grace_ms: DEFAULT_SHUTDOWN_GRACE_MS,
            log_bytes_per_invocation_max: rt::DEFAULT_LOG_BYTES_PER_INVOCATION_MAX,
            invocations_kept_per_function: DEFAULT_INVOCATIONS_KEPT_PER_FUNCTION,
            invocation_records_per_second_max: DEFAULT_INVOCATION_RECORDS_PER_SECOND_MAX,
            invocation_retention_ms: DEFAULT_INVOCATION_RETENTION_MS,
            rollup_retention_ms: DEFAULT_ROLLUP_RETENTION_MS,
            concurrency_max: DEFAULT_CONCURRENCY_MAX,
            background_concurrency_max: DEFAULT_BACKGROUND_CONCURRENCY_MAX,
            function_concurrency_default: DEFAULT_FUNCTION_CONCURRENCY_MAX,
            function_queue_default: DEFAULT_FUNCTION_QUEUE_MAX,
            function_wait_ms_default: DEFAULT_FUNCTION_WAIT_MS_MAX,
            idle_instances_max: rt::DEFAULT_IDLE_INSTANCES_MAX,
            incremental_cache_bytes_max: rt::DEFAULT_INCREMENTAL_CACHE_BYTES_MAX,
            outbound_connect_timeout_ms: rt::DEFAULT_OUTBOUND_CONNECT_TIMEOUT_MS,
            outbound_timeout_ms: rt::DEFAULT_OUTBOUND_TIMEOUT_MS,
            outbound_response_bytes_max: rt::DEFAULT_OUTBOUND_RESPONSE_BYTES_MAX,
            outbound_requests_in_flight_max: rt::DEFAULT_OUTBOUND_REQUESTS_IN_FLIGHT_MAX,
            resources_per_instance_max: rt::DEFAULT_RESOURCES_PER_INSTANCE_MAX,
            fields_bytes_max: rt::DEFAULT_FIELDS_BYTES_MAX,
            outgoing_body_chunk_bytes: rt::DEFAULT_OUTGOING_BODY_CHUNK_BYTES,
            component_core_instances_max: rt::DEFAULT_COMPONENT_CORE_INSTANCES_MAX,
            component_memories_max: rt::DEFAULT_COMPONENT_MEMORIES_MAX,
            component_tables_max: rt::DEFAULT_COMPONENT_TABLES_MAX,
            component_functions_max: rt::DEFAULT_COMPONENT_FUNCTIONS_MAX,
            component_data_bytes_max: rt::DEFAULT_COMPONENT_DATA_BYTES_MAX,
            component_modules_max: rt::DEFAULT_COMPONENT_MODULES_MAX,
            compile_time_ms_max: eddy_runtime::compiler::DEFAULT_COMPILE_TIME_MS_MAX,
            compile_memory_bytes_max: eddy_runtime::compiler::DEFAULT_COMPILE_MEMORY_BYTES_MAX,
            queue_message_bytes_max: DEFAULT_QUEUE_MESSAGE_BYTES_MAX,
            queue_depth_max: DEFAULT_QUEUE_DEPTH_MAX,
            queues_bytes_max: DEFAULT_QUEUES_BYTES_MAX,
            queue_bytes_max: DEFAULT_QUEUE_BYTES_MAX,
            queues_max: DEFAULT_QUEUES_MAX,
            queue_idempotency_window_ms_default: DEFAULT_QUEUE_IDEMPOTENCY_WINDOW_MS,
            consumer_breaker_failures: DEFAULT_CONSUMER_BREAKER_FAILURES,
            websocket_connections_max: DEFAULT_WEBSOCKET_CONNECTIONS_MAX,
            websocket_connections_per_function_max: DEFAULT_WEBSOCKET_CONNECTIONS_PER_FUNCTION_MAX,
            websocket_message_bytes_max: DEFAULT_WEBSOCKET_MESSAGE_BYTES_MAX,
            websocket_send_buffer_bytes_max: DEFAULT_WEBSOCKET_SEND_BUFFER_BYTES_MAX,
            websocket_idle_timeout_ms: DEFAULT_WEBSOCKET_IDLE_TIMEOUT_MS,
            websocket_ping_interval_ms: DEFAULT_WEBSOCKET_PING_INTERVAL_MS,
            price_sheet_bytes_max: DEFAULT_PRICE_SHEET_BYTES_MAX,
            budget_check_interval_ms: DEFAULT_BUDGET_CHECK_INTERVAL_MS,
            budget_webhook_timeout_ms: DEFAULT_BUDGET_WEBHOOK_TIMEOUT_MS,
            store_connections_max: eddy_store::postgres::POSTGRES_CONNECTIONS_MAX,
            store_connect_timeout_ms: eddy_store::postgres::POSTGRES_CONNECT_TIMEOUT_MS,
            store_statement_timeout_ms: eddy_store::postgres::POSTGRES_STATEMENT_TIMEOUT_MS,
            store_poll_interval_ms: DEFAULT_STORE_POLL_INTERVAL_MS,
            auth_failures_per_minute_max: DEFAULT_AUTH_FAILURES_PER_MINUTE_MAX,
            log_streams_max: DEFAULT_LOG_STREAMS_MAX,
            log_streams_per_token_max: DEFAULT_LOG_STREAMS_PER_TOKEN_MAX,
            audit_retention_ms: DEFAULT_AUDIT_RETENTION_MS,
            secret_bytes_max: DEFAULT_SECRET_BYTES_MAX,
            http2_streams_per_connection_max: DEFAULT_HTTP2_STREAMS_PER_CONNECTION_MAX,
            http2_pending_reset_streams_max: DEFAULT_HTTP2_PENDING_RESET_STREAMS_MAX,
        }
    }
}

impl Default for PoolingSettings {
    fn default() -> Self {
        let d = rt::PoolingConfig::default();
        PoolingSettings {
            memory_keep_resident_bytes: d.memory_keep_resident_bytes,
            table_keep_resident_bytes: d.table_keep_resident_bytes,
            async_stack_keep_resident_bytes: d.async_stack_keep_resident_bytes,
            pagemap_scan: d.pagemap_scan,
            inline_teardown_memory_bytes_max: d.inline_teardown_memory_bytes_max,
        }
    }
}

/// A configuration that cannot work, with the key to fix.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl NodeConfig {
    /// Parse TOML, rejecting unknown keys.
    pub fn from_toml(text: &str) -> Result<NodeConfig, ConfigError> {
        let mut config = toml_de(text)?;
        let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        if let Some(toml::Value::Table(limits)) = table.get("limits") {
            config.limits_set = limits.keys().cloned().collect();
        }
        Ok(config)
    }

    /// Raise this process's open-file limit to its hard limit, then fit every cap on open
    /// connections within it: the public and control API listeners, held WebSockets and
    /// outgoing requests each hold a file descriptor. A cap the config file set that cannot
    /// hold is refused; a default is lowered to fit (WebSockets first, then public
    /// connections, outgoing requests, control API connections). Returns what was lowered.
    pub fn fit_open_files(&mut self) -> Result<Vec<String>, ConfigError> {
        let hard = raise_open_files_limit();
        let available = hard.saturating_sub(OPEN_FILES_RESERVE);
        let l = &mut self.limits;
        let mut caps: [(&str, &mut usize); 4] = [
            (
                "websocket_connections_max",
                &mut l.websocket_connections_max,
            ),
            ("connections_max", &mut l.connections_max),
            (
                "outbound_requests_in_flight_max",
                &mut l.outbound_requests_in_flight_max,
            ),
            ("admin_connections_max", &mut l.admin_connections_max),
        ];
        let set = |key: &str| self.limits_set.iter().any(|k| k == key);
        let fixed: u64 = caps
            .iter()
            .filter(|(key, _)| set(key))
            .map(|(_, v)| **v as u64)
            .sum();
        if fixed > available {
            let named: Vec<String> = caps
                .iter()
                .filter(|(key, _)| set(key))
                .map(|(key, v)| format!("limits.{key} ({v})"))
                .collect();
            return Err(ConfigError(format!(
                "{} need {fixed} open files, but this process may open {hard} (RLIMIT_NOFILE's hard limit) less {OPEN_FILES_RESERVE} kept for everything else; lower them, or raise the hard limit (ulimit -Hn, LimitNOFILE=)",
                named.join(" + ")
            )));
        }
        let left = available - fixed;
        let defaults: u64 = caps
            .iter()
            .filter(|(key, _)| !set(key))
            .map(|(_, v)| **v as u64)
            .sum();
        let mut lowered = Vec::new();
        let mut excess = defaults.saturating_sub(left);
        for (key, value) in caps.iter_mut().filter(|(key, _)| !set(key)) {
            if excess > 0 {
                let cut = excess.min(**value as u64 - 1);
                let was = **value;
                **value -= cut as usize;
                excess -= cut;
                lowered.push(format!(
                    "limits.{key} lowered from {was} to {} to fit RLIMIT_NOFILE's hard limit ({hard})",
                    **value
                ));
            }
        }
        if self.limits.websocket_connections_per_function_max
            > self.limits.websocket_connections_max
            && !set("websocket_connections_per_function_max")
        {
            self.limits.websocket_connections_per_function_max =
                self.limits.websocket_connections_max;
        }
        Ok(lowered)
    }

    /// Check every value before any socket is bound or file written.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.tls.validate()?;
        let l = &self.limits;
        let positive: [(&str, u64); 59] = [
            (
                "limits.http2_streams_per_connection_max",
                u64::from(l.http2_streams_per_connection_max),
            ),
            (
                "limits.http2_pending_reset_streams_max",
                l.http2_pending_reset_streams_max as u64,
            ),
            ("limits.secret_bytes_max", l.secret_bytes_max as u64),
            (
                "limits.auth_failures_per_minute_max",
                u64::from(l.auth_failures_per_minute_max),
            ),
            ("limits.audit_retention_ms", l.audit_retention_ms),
            ("limits.log_streams_max", l.log_streams_max as u64),
            (
                "limits.log_streams_per_token_max",
                l.log_streams_per_token_max as u64,
            ),
            ("limits.compile_time_ms_max", l.compile_time_ms_max),
            ("limits.queue_bytes_max", l.queue_bytes_max),
            ("limits.queues_bytes_max", l.queues_bytes_max),
            (
                "limits.connections_per_ip_max",
                l.connections_per_ip_max as u64,
            ),
            (
                "limits.admin_connections_max",
                l.admin_connections_max as u64,
            ),
            ("limits.write_timeout_ms", l.write_timeout_ms),
            (
                "limits.component_core_instances_max",
                u64::from(l.component_core_instances_max),
            ),
            (
                "limits.component_memories_max",
                u64::from(l.component_memories_max),
            ),
            (
                "limits.component_tables_max",
                u64::from(l.component_tables_max),
            ),
            (
                "limits.component_functions_max",
                u64::from(l.component_functions_max),
            ),
            (
                "limits.component_data_bytes_max",
                l.component_data_bytes_max,
            ),
            (
                "limits.component_modules_max",
                u64::from(l.component_modules_max),
            ),
            (
                "limits.resources_per_instance_max",
                l.resources_per_instance_max as u64,
            ),
            ("limits.fields_bytes_max", l.fields_bytes_max as u64),
            (
                "limits.outgoing_body_chunk_bytes",
                l.outgoing_body_chunk_bytes as u64,
            ),
            (
                "limits.request_target_bytes_max",
                l.request_target_bytes_max as u64,
            ),
            (
                "limits.price_sheet_bytes_max",
                l.price_sheet_bytes_max as u64,
            ),
            (
                "limits.budget_check_interval_ms",
                l.budget_check_interval_ms,
            ),
            (
                "limits.budget_webhook_timeout_ms",
                l.budget_webhook_timeout_ms,
            ),
            (
                "limits.store_connections_max",
                l.store_connections_max as u64,
            ),
            (
                "limits.store_connect_timeout_ms",
                l.store_connect_timeout_ms,
            ),
            (
                "limits.store_statement_timeout_ms",
                l.store_statement_timeout_ms,
            ),
            ("limits.store_poll_interval_ms", l.store_poll_interval_ms),
            (
                "limits.websocket_connections_max",
                l.websocket_connections_max as u64,
            ),
            (
                "limits.websocket_connections_per_function_max",
                l.websocket_connections_per_function_max as u64,
            ),
            (
                "limits.websocket_message_bytes_max",
                l.websocket_message_bytes_max as u64,
            ),
            (
                "limits.websocket_send_buffer_bytes_max",
                l.websocket_send_buffer_bytes_max as u64,
            ),
            (
                "limits.websocket_idle_timeout_ms",
                l.websocket_idle_timeout_ms,
            ),
            (
                "limits.websocket_ping_interval_ms",
                l.websocket_ping_interval_ms,
            ),
            ("limits.queue_message_bytes_max", l.queue_message_bytes_max),
            ("limits.queue_depth_max", l.queue_depth_max),
            ("limits.queues_max", l.queues_max as u64),
            (
                "limits.consumer_breaker_failures",
                u64::from(l.consumer_breaker_failures),
            ),
            (
                "limits.outbound_requests_in_flight_max",
                l.outbound_requests_in_flight_max as u64,
            ),
            (
                "limits.rollup_retention_ms",
                l.rollup_retention_ms.max(0) as u64,
            ),
            ("limits.concurrency_max", l.concurrency_max as u64),
            (
                "limits.function_concurrency_default",
                u64::from(l.function_concurrency_default),
            ),
            (
                "limits.function_wait_ms_default",
                l.function_wait_ms_default,
            ),
            (
                "limits.outbound_connect_timeout_ms",
                l.outbound_connect_timeout_ms,
            ),
            ("limits.outbound_timeout_ms", l.outbound_timeout_ms),
            (
                "limits.outbound_response_bytes_max",
                l.outbound_response_bytes_max,
            ),
            ("limits.memory_bytes_default", l.memory_bytes_default),
            ("limits.memory_bytes_max", l.memory_bytes_max),
            ("limits.timeout_ms_default", l.timeout_ms_default),
            ("limits.timeout_ms_max", l.timeout_ms_max),
            ("limits.component_bytes_max", l.component_bytes_max),
            ("limits.header_bytes_max", l.header_bytes_max as u64),
            ("limits.connections_max", l.connections_max as u64),
            ("limits.instances_max", u64::from(l.instances_max)),
            ("limits.header_read_timeout_ms", l.header_read_timeout_ms),
            (
                "limits.invocations_kept_per_function",
                l.invocations_kept_per_function as u64,
            ),
            (
                "limits.invocation_retention_ms",
                l.invocation_retention_ms.max(0) as u64,
            ),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError(format!("{key} must be greater than 0")));
        }
        self.store_choice()?;
        if let Some(name) = &self.node_name
            && !is_node_name(name)
        {
            return Err(ConfigError(format!(
                "node_name `{name}`: use 1 to {NODE_NAME_BYTES_MAX} letters, digits, `-`, `_` or `.`"
            )));
        }
        if l.memory_bytes_max > MEMORY_BYTES_MAX_CEILING {
            return Err(ConfigError(format!(
                "limits.memory_bytes_max ({}) is above {MEMORY_BYTES_MAX_CEILING} bytes, the most a WebAssembly memory can hold",
                l.memory_bytes_max
            )));
        }
        if l.memory_bytes_default < MEMORY_BYTES_MIN {
            return Err(ConfigError(format!(
                "limits.memory_bytes_default ({}) is below {MEMORY_BYTES_MIN} bytes, one WebAssembly page",
                l.memory_bytes_default
            )));
        }
        if l.instances_max > INSTANCES_MAX_CEILING {
            return Err(ConfigError(format!(
                "limits.instances_max ({}) is above {INSTANCES_MAX_CEILING}: each instance slot reserves address space for its memories",
                l.instances_max
            )));
        }
        let memory_slots = u64::from(l.instances_max) * u64::from(l.component_memories_max);
        if memory_slots > MEMORY_SLOTS_MAX {
            return Err(ConfigError(format!(
                "limits.instances_max ({}) × limits.component_memories_max ({}) is {memory_slots} memory slots, above {MEMORY_SLOTS_MAX}: each reserves about 4 GiB of address space",
                l.instances_max, l.component_memories_max
            )));
        }
        if l.memory_bytes_default > l.memory_bytes_max {
            return Err(ConfigError(format!(
                "limits.memory_bytes_default ({}) is above limits.memory_bytes_max ({})",
                l.memory_bytes_default, l.memory_bytes_max
            )));
        }
        if l.timeout_ms_default > l.timeout_ms_max {
            return Err(ConfigError(format!(
                "limits.timeout_ms_default ({}) is above limits.timeout_ms_max ({})",
                l.timeout_ms_default, l.timeout_ms_max
            )));
        }
        if l.background_concurrency_max > l.concurrency_max {
            return Err(ConfigError(format!(
                "limits.background_concurrency_max ({}) is above limits.concurrency_max ({})",
                l.background_concurrency_max, l.concurrency_max
            )));
        }
        if l.function_concurrency_default as usize > l.concurrency_max {
            return Err(ConfigError(format!(
                "limits.function_concurrency_default ({}) is above limits.concurrency_max ({})",
                l.function_concurrency_default, l.concurrency_max
            )));
        }
        if l.function_queue_default > FUNCTION_QUEUE_MAX_CEILING {
            return Err(ConfigError(format!(
                "limits.function_queue_default ({}) is above {FUNCTION_QUEUE_MAX_CEILING}",
                l.function_queue_default
            )));
        }
        if l.queue_idempotency_window_ms_default > QUEUE_IDEMPOTENCY_WINDOW_MS_CEILING {
            return Err(ConfigError(format!(
                "limits.queue_idempotency_window_ms_default ({}) is above {QUEUE_IDEMPOTENCY_WINDOW_MS_CEILING} ms (one day)",
                l.queue_idempotency_window_ms_default
            )));
        }
        if l.compile_memory_bytes_max < eddy_runtime::compiler::COMPILE_MEMORY_BYTES_FLOOR {
            return Err(ConfigError(format!(
                "limits.compile_memory_bytes_max ({}) is below {} (64 MiB): the compiler process needs that much to start",
                l.compile_memory_bytes_max,
                eddy_runtime::compiler::COMPILE_MEMORY_BYTES_FLOOR
            )));
        }
        self.outbound_allow_networks()?;
        self.trusted_proxies()?;
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError(format!(
                "public_url `{url}` must start with http:// or https://"
            )));
        }
        Ok(())
    }

    /// `outbound_allow_networks`, parsed; a bare address is a network of one.
    pub fn outbound_allow_networks(
        &self,
    ) -> Result<Vec<eddy_runtime::destinations::IpNet>, ConfigError> {
        networks("outbound_allow_networks", &self.outbound_allow_networks)
    }

    /// `trusted_proxies`, parsed.
    pub fn trusted_proxies(&self) -> Result<Vec<eddy_runtime::destinations::IpNet>, ConfigError> {
        networks("trusted_proxies", &self.trusted_proxies)
    }

    /// The runtime's form of the node settings.
    pub fn runtime(&self) -> rt::RuntimeConfig {
        let l = &self.limits;
        let mut config = rt::RuntimeConfig::new(self.cache_dir());
        config.memory_bytes_max = l.memory_bytes_max;
        config.instances_max = l.instances_max;
        config.log_bytes_per_invocation_max = l.log_bytes_per_invocation_max;
        config.pooling = self.pooling.runtime();
        config.idle_instances_max = l.idle_instances_max;
        config.incremental_cache_bytes_max = l.incremental_cache_bytes_max;
        config.component = rt::ComponentLimits {
            core_instances_max: l.component_core_instances_max,
            memories_max: l.component_memories_max,
            tables_max: l.component_tables_max,
            functions_max: l.component_functions_max,
            data_bytes_max: l.component_data_bytes_max,
            modules_max: l.component_modules_max,
        };
        config.compile = eddy_runtime::CompileLimits {
            time_ms_max: l.compile_time_ms_max,
            memory_bytes_max: l.compile_memory_bytes_max,
        };
        config.compiler = self.compiler.clone();
        config.host = rt::HostLimits {
            resources_per_instance_max: l.resources_per_instance_max,
            fields_bytes_max: l.fields_bytes_max,
            outgoing_body_chunk_bytes: l.outgoing_body_chunk_bytes,
        };
        config.outbound = rt::OutboundConfig {
            connect_timeout: std::time::Duration::from_millis(l.outbound_connect_timeout_ms),
            timeout: std::time::Duration::from_millis(l.outbound_timeout_ms),
            response_bytes_max: l.outbound_response_bytes_max,
            requests_in_flight_max: l.outbound_requests_in_flight_max,
            ..rt::OutboundConfig::default()
        };
        config.destinations.allow_networks = self.outbound_allow_networks().unwrap_or_default();
        config
    }

    /// Where compiled code is cached.
    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("cache"))
    }
}

/// File descriptors kept for everything but connections: the databases and their journals,
/// compiled code being loaded, the log, the runtime's threads and timers.
pub const OPEN_FILES_RESERVE: u64 = 1024;

/// Raise the soft open-file limit to the hard one; returns the hard limit.
fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return limit.rlim_cur;
            }
        }
    }
    limit.rlim_max
}

/// Networks (`10.0.0.0/8`) or single addresses of the config key `key`.
fn networks(
    key: &str,
    texts: &[String],
) -> Result<Vec<eddy_runtime::destinations::IpNet>, ConfigError> {
    use eddy_runtime::destinations::IpNet;
    texts
        .iter()
        .map(|text| {
            text.parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    ConfigError(format!(
                        "{key}: `{text}` is not a network (`10.0.0.0/8`, `fd00::/8`) or an address"
                    ))
                })
        })
        .collect()
}

fn toml_de(text: &str) -> Result<NodeConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_is_sqlite_or_a_postgres_url_and_a_bad_one_is_named_without_its_secrets() {
        let sqlite = NodeConfig::default();
        assert_eq!(sqlite.store_choice().unwrap(), StoreChoice::Sqlite);
        let pg = NodeConfig::from_toml(
            "store = \"postgres://eddy:secret@db/eddy\"\nstore_schema = \"blue\"\n",
        )
        .unwrap();
        assert_eq!(
            pg.store_choice().unwrap(),
            StoreChoice::Postgres {
                url: "postgres://eddy:secret@db/eddy".into(),
                schema: Some("blue".into()),
            }
        );
        let err = NodeConfig::from_toml("store = \"mysql://eddy:secret@db/eddy\"\n")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("`mysql` is not a store"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        let err = NodeConfig::from_toml("store_schema = \"blue\"\n")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("the store is SQLite"), "{err}");
    }

    #[test]
    fn node_names_are_what_a_host_or_pod_may_be_called() {
        for good in ["eddy-0", "node_1.example", "a"] {
            assert!(is_node_name(good), "{good}");
        }
        let long = "n".repeat(NODE_NAME_BYTES_MAX + 1);
        for bad in ["", "has space", "slash/y", "quote'", long.as_str()] {
            assert!(!is_node_name(bad), "{bad}");
        }
        let err = NodeConfig::from_toml("node_name = \"a b\"\n")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("node_name `a b`"), "{err}");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = NodeConfig::from_toml("[limits]\nmemory_bytes_maximum = 5\n").unwrap_err();
        assert!(err.to_string().contains("memory_bytes_maximum"), "{err}");
    }

    #[test]
    fn defaults_are_valid_and_partial_files_keep_defaults() {
        let config = NodeConfig::from_toml("[limits]\ntimeout_ms_default = 2000\n").unwrap();
        config.validate().unwrap();
        assert_eq!(config.limits.timeout_ms_default, 2000);
        assert_eq!(
            config.limits.request_body_bytes_max,
            rt::DEFAULT_REQUEST_BODY_BYTES_MAX
        );
    }

    #[test]
    fn values_the_engine_cannot_honour_are_refused_up_front() {
        for (text, key) in [
            (
                "[limits]\nmemory_bytes_max = 5000000000\n",
                "limits.memory_bytes_max",
            ),
            (
                "[limits]\nmemory_bytes_default = 1000\n",
                "limits.memory_bytes_default",
            ),
            ("[limits]\ninstances_max = 20000\n", "limits.instances_max"),
        ] {
            let err = NodeConfig::from_toml(text).unwrap().validate().unwrap_err();
            assert!(err.to_string().contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn outbound_networks_are_parsed_and_bad_ones_named() {
        let config = NodeConfig::from_toml(
            "outbound_allow_networks = [\"127.0.0.0/8\", \"10.1.2.3\", \"fd00::/8\"]\n",
        )
        .unwrap();
        config.validate().unwrap();
        let nets = config.outbound_allow_networks().unwrap();
        assert_eq!(nets.len(), 3);
        assert!(nets[1].contains(&"10.1.2.3".parse::<std::net::IpAddr>().unwrap()));
        let bad = NodeConfig::from_toml("outbound_allow_networks = [\"10.0.0.0/33\"]\n").unwrap();
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("`10.0.0.0/33` is not a network"), "{err}");
    }

    #[test]
    fn default_above_max_is_refused() {
        let config =
            NodeConfig::from_toml("[limits]\nmemory_bytes_default = 10\nmemory_bytes_max = 5\n")
                .unwrap();
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("memory_bytes_default")
        );
    }
}
