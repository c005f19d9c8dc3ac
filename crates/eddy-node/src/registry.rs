//! Functions and their versions: deploy, rollback and remove, and the live route table.
//!
//! Changes are serialised by one async mutex (they are rare); requests read the route
//! table through an `ArcSwap` without any lock. A request that started on a version keeps
//! its `Arc<Deployment>` and finishes on it, whatever is swapped in meanwhile.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use eddy_parse::api::DeployRequest;
use eddy_runtime::limits as rt_limits;
use eddy_runtime::{
    AllowRule, Deployment, DeploymentSettings, FunctionLimits, Prepared, ReuseConfig, Runtime,
};
use eddy_store::{FunctionRecord, NewVersion, ReuseSettings, Stores, VersionConfig, VersionRecord};
use tokio::sync::Mutex;

use crate::admission::{Admission, FunctionAdmission};
use crate::clock::Clock;
use crate::config::{
    ALLOW_OUTBOUND_RULES_MAX, FUNCTION_QUEUE_MAX_CEILING, LimitsConfig, MEMORY_BYTES_MIN,
    PUBLISH_RULES_MAX, REUSE_IDLE_TIMEOUT_MS_CEILING,
};
use crate::metering::Meter;
use crate::parts::Parts;
use crate::problem::{Kind, Problem};
use crate::queues::validate_queue_name;
use crate::routes::{LiveFunction, RouteTable, validate_name, validate_route};

/// Total bytes of a function's environment variable names and values.
pub const ENV_BYTES_MAX: usize = 64 * 1024;

/// The result of a deploy.
#[derive(Debug)]
pub struct Deployed {
    pub version: VersionRecord,
    /// False when the compiled code came from the cache.
    pub compiled: bool,
}

/// Makes the `eddy.local` platform a function's deployments reach, from its name and its
/// `publish` list. The node wires it (`platform::EddyLocal`); the registry does not know
/// what it answers.
pub type PlatformFactory =
    Arc<dyn Fn(Arc<str>, Arc<[String]>) -> Arc<dyn eddy_runtime::Platform> + Send + Sync>;

/// The registry of one node: its functions' versions, the route table and the prepared
/// deployments. It configures admission for what it deploys; the node's other parts are
/// not found here (`parts::Parts`).
pub struct Registry {
    runtime: Arc<Runtime>,
    stores: Stores,
    limits: LimitsConfig,
    routes: ArcSwap<RouteTable>,
    admission: Arc<Admission>,
    /// A removed function's totals are dropped from it.
    meter: Arc<Meter>,
    /// Live-instance counts by function, shared by all of a function's versions.
    instance_gauges: std::sync::Mutex<HashMap<String, Arc<AtomicUsize>>>,
    /// Serialises changes; holds prepared components by digest so rollbacks and
    /// functions sharing bytes reuse them.
    prepared: Mutex<HashMap<String, Prepared>>,
    /// Makes what answers a deployment's requests to `http://eddy.local`.
    platforms: PlatformFactory,
    /// Compiled code shared with the other nodes of a cluster, if any.
    artifacts: Option<crate::artifacts::SharedArtifacts>,
    clock: Clock,
    /// Bumped each time a new route table is swapped in (a deploy, rollback or removal):
    /// the triggers wait on it instead of polling the table.
    published: tokio::sync::watch::Sender<u64>,
    /// Versions another node made live that this node could not prepare, by function: the
    /// version (number, creation time, digest), why, and when to try again. Kept under the
    /// change lock (`prepared`).
    unpreparable: std::sync::Mutex<HashMap<Arc<str>, Unpreparable>>,
    /// Opens the secrets versions bind into their environment.
    secrets: Arc<crate::secrets::Secrets>,
}

/// A live version this node could not prepare, and when it tries again.
struct Unpreparable {
    version: (u32, i64, String),
    why: String,
    retry_at_ms: i64,
}

/// How long a node waits before it tries again to prepare a version another node made live
/// and it could not (a compile limit of its own, an invalid component): not at every look at
/// the store, each of which would hold the change lock for a whole compilation. A failure of
/// the store or of the node itself is tried again at the next look.
pub const UNPREPARABLE_RETRY_MS: i64 = 60_000;

impl Registry {
    /// Restore every function's live version from the store. Compiled code comes from the
    /// on-disk cache; a missing entry is recompiled.
    pub(crate) async fn load(
        parts: &Parts,
        limits: LimitsConfig,
        platforms: PlatformFactory,
        artifacts: Option<crate::artifacts::SharedArtifacts>,
        secrets: Arc<crate::secrets::Secrets>,
    ) -> anyhow::Result<Registry> {
        let registry = Registry {
            runtime: parts.runtime.clone(),
            stores: parts.stores.clone(),
            limits,
            routes: ArcSwap::from_pointee(RouteTable::default()),
            admission: parts.admission.clone(),
            meter: parts.meter.clone(),
            instance_gauges: std::sync::Mutex::new(HashMap::new()),
            prepared: Mutex::new(HashMap::new()),
            platforms,
            artifacts,
            clock: parts.clock,
            published: tokio::sync::watch::Sender::new(0),
            unpreparable: std::sync::Mutex::new(HashMap::new()),
            secrets,
        };
        let functions = registry.stores.functions.list_functions().await?;
        let mut prepared = registry.prepared.lock().await;
        for function in functions {
            let live = registry
                .prepare_version(&mut prepared, &function.live)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot restore function `{}` version {}: {}",
                        function.name,
                        function.live.version,
                        e.message
                    )
                })?;
            registry.configure_stored(&function.name, live.admission);
            registry
                .routes
                .store(Arc::new(registry.routes.load().with(live)));
        }
        drop(prepared);
        Ok(registry)
    }

    /// The current route table (lock-free).
    pub fn routes(&self) -> Arc<RouteTable> {
        self.routes.load_full()
    }

    /// Changes each time the route table does (a deploy, a rollback, a removal). Take it
    /// before reading the table: a change after the read is then never missed.
    pub fn route_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// How many instances of `function` exist now.
    pub fn instances_live(&self, function: &str) -> usize {
        self.instance_gauges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(function)
            .map_or(0, |g| g.load(Ordering::Relaxed))
    }

    /// Drop warm instances idle past their function's idle timeout. Returns how many.
    pub fn evict_idle(&self) -> usize {
        let now = std::time::Instant::now();
        self.routes()
            .all()
            .map(|live| live.deployment.evict_idle(now))
            .sum()
    }

    /// Validate, compile, store as the next version and make it live.
    pub async fn deploy(
        &self,
        name: &str,
        request: DeployRequest,
        bytes: Bytes,
    ) -> Result<Deployed, Problem> {
        validate_name(name).map_err(Problem::invalid)?;
        let bindings = request.secrets.clone();
        let mut config = self.version_config(name, request)?;
        config.secrets = self.bind_secrets(&config.env, bindings).await?;
        let secret_env = self.secret_env(&config).await?;
        if bytes.len() as u64 > self.limits.component_bytes_max {
            return Err(component_too_large(
                Some(bytes.len() as u64),
                self.limits.component_bytes_max,
            ));
        }
        let mut prepared_cache = self.prepared.lock().await;
        self.check_route_free(name, &config.route)?;
        let prepared = self.prepare_component(None, bytes.clone()).await?;
        let new = NewVersion {
            function: name.to_string(),
            digest: prepared.digest.clone(),
            size_bytes: bytes.len() as u64,
            config,
            created_at_ms: self.clock.now_ms(),
        };
        self.admission
            .check(name, self.function_admission(&new.config))?;
        // In a cluster that shares compiled code, the component and its artifact are stored
        // before the version: the other nodes hear of the version when it commits, and
        // find the artifact there (an artifact belongs to a stored component).
        // The bytes go with the version too (a no-op when stored): another node may remove
        // a function that used the same component in between.
        if self.artifacts.is_some() {
            self.stores
                .functions
                .put_component(&prepared.digest, bytes.to_vec())
                .await?;
            self.share(&prepared).await;
        }
        let version = self
            .stores
            .functions
            .create_version(new, Some(bytes.to_vec()))
            .await?;
        let live = self.live_function(&prepared, &version, secret_env);
        let compiled = prepared.compiled;
        prepared_cache.insert(prepared.digest.clone(), prepared);
        self.admission.configure(name, live.admission)?;
        self.publish(&mut prepared_cache, self.routes.load().with(live));
        tracing::info!(function = name, version = version.version, route = %version.config.route, compiled, "deployed");
        Ok(Deployed { version, compiled })
    }

    /// Make `version` (default: the one before the live one) live again.
    /// Returns the function record and the version that was live before.
    pub async fn rollback(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<(FunctionRecord, u32), Problem> {
        let mut prepared_cache = self.prepared.lock().await;
        let owned = name.to_string();
        let current = self
            .stores
            .functions
            .function(&owned)
            .await?
            .ok_or_else(|| Problem::not_found(format!("no function `{name}`")))?;
        let previous = current.live.version;
        let owned = name.to_string();
        let versions = self.stores.functions.versions(&owned).await?;
        let target = match version {
            Some(v) => versions.iter().find(|r| r.version == v).ok_or_else(|| {
                Problem::not_found(format!(
                    "no version {v} of `{name}`; see `eddy versions {name}`"
                ))
            })?,
            None => versions
                .iter()
                .find(|r| r.version < previous)
                .ok_or_else(|| {
                    Problem::new(
                        Kind::Conflict,
                        "no_previous_version",
                        format!("`{name}` has no version before {previous} to roll back to"),
                    )
                })?,
        }
        .clone();
        self.check_route_free(name, &target.config.route)?;
        self.admission
            .check(name, self.function_admission(&target.config))?;
        let live = self.prepare_version(&mut prepared_cache, &target).await?;
        let owned = name.to_string();
        let target_version = target.version;
        let record = self
            .stores
            .functions
            .set_live_version(&owned, target_version)
            .await?;
        self.admission.configure(name, live.admission)?;
        self.publish(&mut prepared_cache, self.routes.load().with(live));
        tracing::info!(
            function = name,
            version = target_version,
            previous,
            "rolled back"
        );
        Ok((record, previous))
    }

    /// Stop serving a function and delete its versions and records.
    pub async fn remove(&self, name: &str) -> Result<(), Problem> {
        let mut prepared_cache = self.prepared.lock().await;
        let owned = name.to_string();
        if !self.stores.functions.remove_function(&owned).await? {
            return Err(Problem::not_found(format!("no function `{name}`")));
        }
        self.publish(&mut prepared_cache, self.routes.load().without(name));
        self.forget(name);
        if let Err(e) = self.stores.ticks.forget_schedule(name).await {
            tracing::warn!(function = name, error = %e, "forgetting the schedule's last tick failed");
        }
        tracing::info!(function = name, "removed");
        Ok(())
    }

    /// Admission settings of a version already stored (restored at start, or deployed
    /// through another node): if this node cannot hold its reservation (its limits are
    /// lower), it is served without one.
    fn configure_stored(&self, name: &str, settings: FunctionAdmission) {
        if let Err(problem) = self.admission.configure(name, settings) {
            tracing::warn!(function = name, %problem, "reserved concurrency dropped");
            let mut settings = settings;
            settings.reserved = 0;
            let _ = self.admission.configure(name, settings);
        }
    }

    /// The store's generation of what is served (see `FunctionStore::generation`).
    pub async fn stored_generation(&self) -> Result<i64, Problem> {
        Ok(self.stores.functions.generation().await?)
    }

    /// Brings the route table in line with the store: what other nodes deployed, rolled
    /// back or removed since this node last looked. Returns how many functions changed, or
    /// the first problem if a version could not be prepared (its bytes could not be read,
    /// or it does not compile or fit here): that function keeps serving what it served, the
    /// others change all the same, and the caller tries again later.
    pub async fn catch_up(&self) -> Result<usize, Problem> {
        // Under the change lock, the store holds every change this node made.
        let mut prepared_cache = self.prepared.lock().await;
        let stored = self.stores.functions.list_functions().await?;
        let table = self.routes.load_full();
        let mut routes = (*table).clone();
        let mut changed = 0;
        let mut failed = None;
        for function in &stored {
            let live = &function.live;
            let same = table.function(&function.name).is_some_and(|current| {
                (
                    current.version,
                    current.created_at_ms,
                    current.digest.as_str(),
                ) == (live.version, live.created_at_ms, live.digest.as_str())
            });
            if same {
                continue;
            }
            let key = (live.version, live.created_at_ms, live.digest.clone());
            let now = self.clock.now_ms();
            let waiting = {
                let unpreparable = self.unpreparable.lock().unwrap_or_else(|e| e.into_inner());
                unpreparable
                    .get(&*function.name)
                    .filter(|u| u.version == key && now < u.retry_at_ms)
                    .map(|u| u.why.clone())
            };
            if let Some(why) = waiting {
                failed.get_or_insert(Problem::new(Kind::Limit, "unpreparable", why));
                continue;
            }
            match self.prepare_version(&mut prepared_cache, live).await {
                Ok(prepared) => {
                    self.unpreparable
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&*function.name);
                    self.configure_stored(&function.name, prepared.admission);
                    routes = routes.with(prepared);
                    changed += 1;
                    tracing::info!(function = %function.name, version = live.version, "serving a version another node made live");
                }
                Err(problem) if !matches!(problem.kind, Kind::Limit | Kind::Invalid) => {
                    // The store or the node failed: tried again at the next look.
                    tracing::warn!(function = %function.name, version = live.version, %problem, "cannot serve the version another node made live yet; still serving the one before");
                    failed.get_or_insert(problem);
                }
                Err(problem) => {
                    tracing::warn!(function = %function.name, version = live.version, %problem, retry_in_ms = UNPREPARABLE_RETRY_MS, "cannot serve the version another node made live; still serving the one before");
                    self.unpreparable
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(
                            function.name.as_str().into(),
                            Unpreparable {
                                version: key,
                                why: problem.message.clone(),
                                retry_at_ms: now + UNPREPARABLE_RETRY_MS,
                            },
                        );
                    failed.get_or_insert(problem);
                }
            }
        }
        let gone: Vec<Arc<str>> = table
            .all()
            .filter(|live| !stored.iter().any(|f| *f.name == *live.name))
            .map(|live| live.name.clone())
            .collect();
        for name in &gone {
            routes = routes.without(name);
            self.forget(name);
            changed += 1;
            tracing::info!(function = %name, "another node removed the function");
        }
        if changed > 0 {
            self.publish(&mut prepared_cache, routes);
        }
        match failed {
            Some(problem) => Err(problem),
            None => Ok(changed),
        }
    }

    /// Drops what this node keeps of a removed function besides its routes.
    fn forget(&self, name: &str) {
        self.unpreparable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        self.admission.remove(name);
        self.meter.remove(name);
        self.instance_gauges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// Refuse a route that is live for another function (the store checks again inside
    /// its transaction; this answers before any compiling).
    fn check_route_free(&self, name: &str, route: &str) -> Result<(), Problem> {
        match self.routes.load().owner(route) {
            Some(owner) if owner != name => Err(eddy_store::StoreError::RouteTaken {
                route: route.to_string(),
                function: owner.to_string(),
            }
            .into()),
            _ => Ok(()),
        }
    }

    /// Swap in a new route table and drop compiled components no live function uses any
    /// more (a rollback to them reloads from the on-disk cache).
    fn publish(&self, prepared_cache: &mut HashMap<String, Prepared>, routes: RouteTable) {
        prepared_cache.retain(|digest, _| routes.uses(digest));
        let previous = self.routes.swap(Arc::new(routes));
        self.published.send_modify(|n| *n += 1);
        // Versions no longer live keep no warm instances (requests still running on them
        // finish, and their instances are dropped with the version).
        let current = self.routes.load();
        for old in previous.all() {
            if !current
                .all()
                .any(|live| Arc::ptr_eq(&live.deployment, &old.deployment))
            {
                old.deployment.drop_idle();
            }
        }
    }

    /// The limits a stored version runs under.
    ///
    /// A version stored under higher node maxima than today's runs within today's: the
    /// node's ceilings always win.
    fn function_limits(&self, version: &VersionRecord) -> FunctionLimits {
        let config = &version.config;
        let memory_bytes_max = config.memory_bytes_max.min(self.limits.memory_bytes_max);
        let timeout_ms = config.timeout_ms.min(self.limits.timeout_ms_max);
        if (memory_bytes_max, timeout_ms) != (config.memory_bytes_max, config.timeout_ms) {
            tracing::warn!(
                function = %version.function,
                version = version.version,
                memory_bytes_max,
                timeout_ms,
                "a stored version asks for more than this node's maxima; running it within them"
            );
        }
        FunctionLimits {
            memory_bytes_max,
            timeout: Duration::from_millis(timeout_ms),
            request_body_bytes_max: self.limits.request_body_bytes_max,
            response_body_bytes_max: self.limits.response_body_bytes_max,
        }
    }

    fn version_config(&self, name: &str, request: DeployRequest) -> Result<VersionConfig, Problem> {
        self.validate_fluid(&request)?;
        let route = request.route.unwrap_or_else(|| format!("/{name}"));
        validate_route(&route).map_err(Problem::invalid)?;
        let memory_bytes_max = request
            .memory_bytes_max
            .unwrap_or(self.limits.memory_bytes_default);
        if memory_bytes_max > self.limits.memory_bytes_max {
            return Err(Problem::limit(format!(
                "memory {memory_bytes_max} bytes is above this node's memory_bytes_max ({} bytes); ask for less or raise limits.memory_bytes_max",
                self.limits.memory_bytes_max
            )));
        }
        if memory_bytes_max < MEMORY_BYTES_MIN {
            return Err(Problem::invalid(format!(
                "memory must be at least {MEMORY_BYTES_MIN} bytes (one WebAssembly page)"
            )));
        }
        let timeout_ms = request.timeout_ms.unwrap_or(self.limits.timeout_ms_default);
        if timeout_ms > self.limits.timeout_ms_max {
            return Err(Problem::limit(format!(
                "timeout {timeout_ms} ms is above this node's timeout_ms_max ({} ms); ask for less or raise limits.timeout_ms_max",
                self.limits.timeout_ms_max
            )));
        }
        if timeout_ms == 0 {
            return Err(Problem::invalid("timeout must be greater than 0"));
        }
        validate_env(&request.env)?;
        let reuse_asked = request.reuse.unwrap_or(false)
            || request.reuse_max_requests.is_some()
            || request.reuse_idle_timeout_ms.is_some();
        if request.reuse == Some(false) && reuse_asked {
            return Err(Problem::invalid(
                "reuse_max_requests and reuse_idle_timeout_ms tune warm-instance reuse; they cannot be given with reuse = false",
            ));
        }
        let reuse = reuse_asked.then(|| ReuseSettings {
            max_requests: request
                .reuse_max_requests
                .unwrap_or(rt_limits::DEFAULT_REUSE_MAX_REQUESTS),
            idle_timeout_ms: request
                .reuse_idle_timeout_ms
                .unwrap_or(rt_limits::DEFAULT_REUSE_IDLE_TIMEOUT_MS),
        });
        Ok(VersionConfig {
            route,
            memory_bytes_max,
            timeout_ms,
            env: request.env,
            secrets: BTreeMap::new(),
            allow_outbound: request.allow_outbound,
            max_concurrency: request.max_concurrency,
            max_queue: request.max_queue,
            max_wait_ms: request.max_wait_ms,
            reserved_concurrency: request.reserved_concurrency.unwrap_or(0),
            reuse,
            publish: request.publish,
            schedule: request.schedule,
            websocket: request.websocket.unwrap_or(false),
        })
    }

    /// Check the concurrency, reuse and outbound settings of a deploy against the node.
    fn validate_fluid(&self, request: &DeployRequest) -> Result<(), Problem> {
        let l = &self.limits;
        if let Some(n) = request.max_concurrency {
            if n == 0 {
                return Err(Problem::invalid("max_concurrency must be at least 1"));
            }
            if n as usize > l.concurrency_max {
                return Err(Problem::limit(format!(
                    "max_concurrency {n} is above this node's concurrency_max ({}); ask for less or raise limits.concurrency_max",
                    l.concurrency_max
                )));
            }
        }
        if let Some(n) = request.max_queue
            && n > FUNCTION_QUEUE_MAX_CEILING
        {
            return Err(Problem::limit(format!(
                "max_queue {n} is above {FUNCTION_QUEUE_MAX_CEILING}, the most a function may queue"
            )));
        }
        if let Some(ms) = request.max_wait_ms
            && ms > l.timeout_ms_max
        {
            return Err(Problem::limit(format!(
                "max_wait {ms} ms is above this node's timeout_ms_max ({} ms)",
                l.timeout_ms_max
            )));
        }
        let max_concurrency = request
            .max_concurrency
            .unwrap_or(l.function_concurrency_default);
        if let Some(reserved) = request.reserved_concurrency
            && reserved > max_concurrency
        {
            return Err(Problem::invalid(format!(
                "reserved_concurrency {reserved} is above the function's max_concurrency ({max_concurrency})"
            )));
        }
        if request.reuse_max_requests == Some(0) {
            return Err(Problem::invalid("reuse_max_requests must be at least 1"));
        }
        if let Some(ms) = request.reuse_idle_timeout_ms
            && (ms == 0 || ms > REUSE_IDLE_TIMEOUT_MS_CEILING)
        {
            return Err(Problem::invalid(format!(
                "reuse_idle_timeout must be between 1 ms and {REUSE_IDLE_TIMEOUT_MS_CEILING} ms (one day)"
            )));
        }
        if request.allow_outbound.len() > ALLOW_OUTBOUND_RULES_MAX {
            return Err(Problem::limit(format!(
                "{} outbound rules is above allow_outbound_rules_max ({ALLOW_OUTBOUND_RULES_MAX}); use a wildcard such as *.example.com",
                request.allow_outbound.len()
            )));
        }
        for rule in &request.allow_outbound {
            AllowRule::parse(rule).map_err(|e| Problem::invalid(e.to_string()))?;
        }
        if let Some(schedule) = &request.schedule {
            crate::schedule::validate_schedule(schedule, self.clock.now_ms())?;
        }
        if request.publish.len() > PUBLISH_RULES_MAX {
            return Err(Problem::limit(format!(
                "{} publish entries is above publish_rules_max ({PUBLISH_RULES_MAX}); use `*` for any queue",
                request.publish.len()
            )));
        }
        for queue in &request.publish {
            if queue != "*" {
                validate_queue_name(queue)
                    .map_err(|e| Problem::invalid(format!("publish: {e}")))?;
            }
        }
        Ok(())
    }

    /// The admission settings a version runs under.
    fn function_admission(&self, config: &VersionConfig) -> FunctionAdmission {
        let l = &self.limits;
        FunctionAdmission {
            max_concurrency: config
                .max_concurrency
                .unwrap_or(l.function_concurrency_default)
                .min(l.concurrency_max as u32) as usize,
            max_queue: config.max_queue.unwrap_or(l.function_queue_default) as usize,
            max_wait: Duration::from_millis(
                config.max_wait_ms.unwrap_or(l.function_wait_ms_default),
            ),
            reserved: config.reserved_concurrency as usize,
        }
    }

    /// The live-instance gauge of `function`, created on first use.
    fn instance_gauge(&self, function: &str) -> Arc<AtomicUsize> {
        self.instance_gauges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(function.to_string())
            .or_default()
            .clone()
    }

    async fn prepare_version(
        &self,
        cache: &mut HashMap<String, Prepared>,
        version: &VersionRecord,
    ) -> Result<LiveFunction, Problem> {
        let prepared = match cache.get(&version.digest) {
            Some(p) => p.clone(),
            None => {
                let digest = version.digest.clone();
                let bytes = self
                    .stores
                    .functions
                    .component(&digest)
                    .await?
                    .ok_or_else(|| {
                        Problem::internal("component bytes missing from the store", &version.digest)
                    })?;
                let p = self.prepare_component(Some(&digest), bytes).await?;
                self.share(&p).await;
                cache.insert(p.digest.clone(), p.clone());
                p
            }
        };
        let secret_env = self.secret_env(&version.config).await?;
        Ok(self.live_function(&prepared, version, secret_env))
    }

    /// Pins each secret a deploy binds (environment variable → secret name) to the secret's
    /// latest version: a secret set later takes effect at the function's next deploy.
    async fn bind_secrets(
        &self,
        env: &BTreeMap<String, String>,
        bindings: BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, eddy_store::SecretBinding>, Problem> {
        let mut pinned = BTreeMap::new();
        for (variable, name) in bindings {
            if env.contains_key(&variable) {
                return Err(Problem::invalid(format!(
                    "environment variable `{variable}` is given both a value and secret `{name}`; give one"
                )));
            }
            validate_env(&BTreeMap::from([(variable.clone(), String::new())]))?;
            let (version, created_at_ms) = self.secrets.latest(&name).await?;
            pinned.insert(
                variable,
                eddy_store::SecretBinding {
                    name,
                    version,
                    created_at_ms,
                },
            );
        }
        Ok(pinned)
    }

    /// The environment variables a version's secrets give, opened.
    async fn secret_env(&self, config: &VersionConfig) -> Result<Vec<(String, String)>, Problem> {
        let mut env = Vec::with_capacity(config.secrets.len());
        for (variable, binding) in &config.secrets {
            let value = self
                .secrets
                .value(&binding.name, binding.version, binding.created_at_ms)
                .await?;
            env.push((variable.clone(), value));
        }
        Ok(env)
    }

    /// Prepares the component `bytes` (whose digest is `digest`, if known): from the
    /// compile cache, else from the cluster's shared artifact when the node has one to
    /// check, else by compiling (then [`Registry::share`] it once the component is stored).
    async fn prepare_component(
        &self,
        digest: Option<&str>,
        bytes: impl AsRef<[u8]> + Send + 'static,
    ) -> Result<Prepared, Problem> {
        if let Some(shared) = &self.artifacts {
            let digest = match digest {
                Some(digest) => digest.to_owned(),
                None => eddy_store::component_digest(bytes.as_ref()),
            };
            shared.fetch(&digest).await;
        }
        let runtime = self.runtime.clone();
        let prepared = tokio::task::spawn_blocking(move || runtime.prepare(bytes.as_ref()))
            .await
            .map_err(|e| Problem::internal("compilation task failed", e))??;
        Ok(prepared)
    }

    /// Shares what this node compiled with the cluster's other nodes (if it shares).
    async fn share(&self, prepared: &Prepared) {
        if prepared.compiled
            && let Some(shared) = &self.artifacts
        {
            shared.share(&prepared.digest).await;
        }
    }

    fn live_function(
        &self,
        prepared: &Prepared,
        version: &VersionRecord,
        secret_env: Vec<(String, String)>,
    ) -> LiveFunction {
        let env = version
            .config
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .chain(secret_env)
            .collect();
        let config = &version.config;
        let outbound = config
            .allow_outbound
            .iter()
            .filter_map(|rule| match AllowRule::parse(rule) {
                Ok(rule) => Some(rule),
                Err(problem) => {
                    tracing::warn!(function = %version.function, %problem, "outbound rule ignored");
                    None
                }
            })
            .collect();
        let instances_live = self.instance_gauge(&version.function);
        let deployment = Deployment::new(
            &self.runtime,
            prepared,
            DeploymentSettings {
                limits: self.function_limits(version),
                env,
                reuse: config.reuse.map(|r| ReuseConfig {
                    max_requests: r.max_requests,
                    idle_timeout: Duration::from_millis(r.idle_timeout_ms),
                }),
                outbound,
                instances_live: instances_live.clone(),
                platform: Some((self.platforms)(
                    Arc::from(version.function.as_str()),
                    config.publish.clone().into(),
                )),
            },
        );
        LiveFunction {
            name: Arc::from(version.function.as_str()),
            version: version.version,
            created_at_ms: version.created_at_ms,
            digest: version.digest.clone(),
            route: config.route.clone(),
            deployment: Arc::new(deployment),
            instances_live,
            admission: self.function_admission(config),
            records: Default::default(),
            schedule: config.schedule.clone(),
            websocket: config.websocket,
        }
    }
}

fn validate_env(env: &BTreeMap<String, String>) -> Result<(), Problem> {
    let mut total = 0;
    for (key, value) in env {
        if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
            return Err(Problem::invalid(format!(
                "environment variable `{key}` is invalid: names must be non-empty without `=`, and neither may contain NUL"
            )));
        }
        total += key.len() + value.len();
    }
    if total > ENV_BYTES_MAX {
        return Err(Problem::limit(format!(
            "environment variables take {total} bytes, above env_bytes_max ({ENV_BYTES_MAX} bytes)"
        )));
    }
    Ok(())
}

/// 413 for a component above the node's limit.
/// `size` is the upload's size when it is known (it is not when the body was cut off).
pub fn component_too_large(size: Option<u64>, max: u64) -> Problem {
    let size = size.map(|s| format!(" ({s} bytes)")).unwrap_or_default();
    Problem::new(
        Kind::TooLarge,
        "component_too_large",
        format!(
            "the component upload{size} is above this node's component_bytes_max ({max} bytes); shrink it (release build, strip, opt-level=\"s\") or raise limits.component_bytes_max"
        ),
    )
}
