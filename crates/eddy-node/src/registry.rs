//! Functions and their versions: deploy, rollback and remove, and the live route table.
//!
//! Changes are serialised by one async mutex (they are rare); requests read the route
//! table through an `ArcSwap` without any lock. A request that started on a version keeps
//! its `Arc<Deployment>` and finishes on it, whatever is swapped in meanwhile.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use axum::http::StatusCode;
use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use eddy_parse::api::DeployRequest;
use eddy_runtime::limits as rt_limits;
use eddy_runtime::{
    AllowRule, Deployment, DeploymentSettings, FunctionLimits, Prepared, ReuseConfig, Runtime,
};
use eddy_store::{FunctionRecord, NewVersion, ReuseSettings, Store, VersionConfig, VersionRecord};
use tokio::sync::Mutex;

use crate::admission::{Admission, FunctionAdmission, NodeAdmission};
use crate::config::{
    ALLOW_OUTBOUND_RULES_MAX, FUNCTION_QUEUE_MAX_CEILING, LimitsConfig, MEMORY_BYTES_MIN,
    PUBLISH_RULES_MAX, REUSE_IDLE_TIMEOUT_MS_CEILING,
};
use crate::error::ApiError;
use crate::metering::Meter;
use crate::platform::FunctionPlatform;
use crate::queues::{QueueHub, validate_queue_name};
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

/// The registry of one node.
pub struct Registry {
    runtime: Arc<Runtime>,
    store: Arc<Store>,
    limits: LimitsConfig,
    routes: ArcSwap<RouteTable>,
    admission: Arc<Admission>,
    meter: Arc<Meter>,
    /// Live-instance counts by function, shared by all of a function's versions.
    instance_gauges: std::sync::Mutex<HashMap<String, Arc<AtomicUsize>>>,
    /// Serialises changes; holds prepared components by digest so rollbacks and
    /// functions sharing bytes reuse them.
    prepared: Mutex<HashMap<String, Prepared>>,
    /// The node's queues, which functions reach through `http://eddy.local`.
    queues: Arc<QueueHub>,
    /// The node's WebSocket connections, which functions reach the same way.
    sockets: Arc<crate::websocket::Sockets>,
    /// Budgets' hard caps as last checked.
    budgets: crate::cost::budget::Budgets,
}

impl Registry {
    /// Restore every function's live version from the store. Compiled code comes from the
    /// on-disk cache; a missing entry is recompiled.
    pub async fn load(
        runtime: Arc<Runtime>,
        store: Arc<Store>,
        limits: LimitsConfig,
        queues: Arc<QueueHub>,
        sockets: Arc<crate::websocket::Sockets>,
    ) -> anyhow::Result<Registry> {
        let admission = Admission::new(NodeAdmission {
            concurrency_max: limits.concurrency_max,
            background_concurrency_max: limits.background_concurrency_max,
        });
        let registry = Registry {
            runtime,
            store,
            limits,
            routes: ArcSwap::from_pointee(RouteTable::default()),
            admission,
            meter: Arc::new(Meter::new()),
            instance_gauges: std::sync::Mutex::new(HashMap::new()),
            prepared: Mutex::new(HashMap::new()),
            queues,
            sockets,
            budgets: Default::default(),
        };
        let functions = blocking(&registry.store, |s| s.list_functions()).await?;
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
            if let Err(problem) = registry.admission.configure(&function.name, live.admission) {
                // Node limits lowered since the deploy: serve it without its reservation.
                tracing::warn!(function = %function.name, problem, "reserved concurrency dropped");
                let mut settings = live.admission;
                settings.reserved = 0;
                let _ = registry.admission.configure(&function.name, settings);
            }
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

    /// The runtime, for its counters.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The store, for reads.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The node's admission controller.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    /// The node's meter.
    pub fn meter(&self) -> &Arc<Meter> {
        &self.meter
    }

    /// The node's budgets' caps.
    pub fn budgets(&self) -> &crate::cost::budget::Budgets {
        &self.budgets
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
    ) -> Result<Deployed, ApiError> {
        validate_name(name).map_err(ApiError::bad_request)?;
        let config = self.version_config(name, request)?;
        if bytes.len() as u64 > self.limits.component_bytes_max {
            return Err(component_too_large(
                Some(bytes.len() as u64),
                self.limits.component_bytes_max,
            ));
        }
        let mut prepared_cache = self.prepared.lock().await;
        self.check_route_free(name, &config.route)?;
        let runtime = self.runtime.clone();
        let compile_bytes = bytes.clone();
        let prepared = tokio::task::spawn_blocking(move || runtime.prepare(&compile_bytes))
            .await
            .map_err(|e| ApiError::internal("compilation task failed", e))??;
        let new = NewVersion {
            function: name.to_string(),
            digest: prepared.digest.clone(),
            size_bytes: bytes.len() as u64,
            config,
            created_at_ms: now_ms(),
        };
        self.admission
            .check(name, self.function_admission(&new.config))
            .map_err(ApiError::limit)?;
        let version = blocking(&self.store, move |s| s.create_version(&new, Some(&bytes))).await?;
        let live = self.live_function(&prepared, &version);
        let compiled = prepared.compiled;
        prepared_cache.insert(prepared.digest.clone(), prepared);
        self.admission
            .configure(name, live.admission)
            .map_err(ApiError::limit)?;
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
    ) -> Result<(FunctionRecord, u32), ApiError> {
        let mut prepared_cache = self.prepared.lock().await;
        let owned = name.to_string();
        let current = blocking(&self.store, move |s| s.function(&owned))
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no function `{name}`")))?;
        let previous = current.live.version;
        let owned = name.to_string();
        let versions = blocking(&self.store, move |s| s.versions(&owned)).await?;
        let target = match version {
            Some(v) => versions.iter().find(|r| r.version == v).ok_or_else(|| {
                ApiError::not_found(format!(
                    "no version {v} of `{name}`; see `eddy versions {name}`"
                ))
            })?,
            None => versions
                .iter()
                .find(|r| r.version < previous)
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::CONFLICT,
                        "no_previous_version",
                        format!("`{name}` has no version before {previous} to roll back to"),
                    )
                })?,
        }
        .clone();
        self.check_route_free(name, &target.config.route)?;
        self.admission
            .check(name, self.function_admission(&target.config))
            .map_err(ApiError::limit)?;
        let live = self.prepare_version(&mut prepared_cache, &target).await?;
        let owned = name.to_string();
        let target_version = target.version;
        let record = blocking(&self.store, move |s| {
            s.set_live_version(&owned, target_version)
        })
        .await?;
        self.admission
            .configure(name, live.admission)
            .map_err(ApiError::limit)?;
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
    pub async fn remove(&self, name: &str) -> Result<(), ApiError> {
        let mut prepared_cache = self.prepared.lock().await;
        let owned = name.to_string();
        if !blocking(&self.store, move |s| s.remove_function(&owned)).await? {
            return Err(ApiError::not_found(format!("no function `{name}`")));
        }
        self.publish(&mut prepared_cache, self.routes.load().without(name));
        self.admission.remove(name);
        self.meter.remove(name);
        self.instance_gauges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if let Err(e) = self.queues.store.forget_schedule(name).await {
            tracing::warn!(function = name, error = %e, "forgetting the schedule's last tick failed");
        }
        tracing::info!(function = name, "removed");
        Ok(())
    }

    /// Refuse a route that is live for another function (the store checks again inside
    /// its transaction; this answers before any compiling).
    fn check_route_free(&self, name: &str, route: &str) -> Result<(), ApiError> {
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

    fn version_config(
        &self,
        name: &str,
        request: DeployRequest,
    ) -> Result<VersionConfig, ApiError> {
        self.validate_fluid(&request)?;
        let route = request.route.unwrap_or_else(|| format!("/{name}"));
        validate_route(&route).map_err(ApiError::bad_request)?;
        let memory_bytes_max = request
            .memory_bytes_max
            .unwrap_or(self.limits.memory_bytes_default);
        if memory_bytes_max > self.limits.memory_bytes_max {
            return Err(ApiError::limit(format!(
                "memory {memory_bytes_max} bytes is above this node's memory_bytes_max ({} bytes); ask for less or raise limits.memory_bytes_max",
                self.limits.memory_bytes_max
            )));
        }
        if memory_bytes_max < MEMORY_BYTES_MIN {
            return Err(ApiError::bad_request(format!(
                "memory must be at least {MEMORY_BYTES_MIN} bytes (one WebAssembly page)"
            )));
        }
        let timeout_ms = request.timeout_ms.unwrap_or(self.limits.timeout_ms_default);
        if timeout_ms > self.limits.timeout_ms_max {
            return Err(ApiError::limit(format!(
                "timeout {timeout_ms} ms is above this node's timeout_ms_max ({} ms); ask for less or raise limits.timeout_ms_max",
                self.limits.timeout_ms_max
            )));
        }
        if timeout_ms == 0 {
            return Err(ApiError::bad_request("timeout must be greater than 0"));
        }
        validate_env(&request.env)?;
        let reuse_asked = request.reuse.unwrap_or(false)
            || request.reuse_max_requests.is_some()
            || request.reuse_idle_timeout_ms.is_some();
        if request.reuse == Some(false) && reuse_asked {
            return Err(ApiError::bad_request(
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
    fn validate_fluid(&self, request: &DeployRequest) -> Result<(), ApiError> {
        let l = &self.limits;
        if let Some(n) = request.max_concurrency {
            if n == 0 {
                return Err(ApiError::bad_request("max_concurrency must be at least 1"));
            }
            if n as usize > l.concurrency_max {
                return Err(ApiError::limit(format!(
                    "max_concurrency {n} is above this node's concurrency_max ({}); ask for less or raise limits.concurrency_max",
                    l.concurrency_max
                )));
            }
        }
        if let Some(n) = request.max_queue
            && n > FUNCTION_QUEUE_MAX_CEILING
        {
            return Err(ApiError::limit(format!(
                "max_queue {n} is above {FUNCTION_QUEUE_MAX_CEILING}, the most a function may queue"
            )));
        }
        if let Some(ms) = request.max_wait_ms
            && ms > l.timeout_ms_max
        {
            return Err(ApiError::limit(format!(
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
            return Err(ApiError::bad_request(format!(
                "reserved_concurrency {reserved} is above the function's max_concurrency ({max_concurrency})"
            )));
        }
        if request.reuse_max_requests == Some(0) {
            return Err(ApiError::bad_request(
                "reuse_max_requests must be at least 1",
            ));
        }
        if let Some(ms) = request.reuse_idle_timeout_ms
            && (ms == 0 || ms > REUSE_IDLE_TIMEOUT_MS_CEILING)
        {
            return Err(ApiError::bad_request(format!(
                "reuse_idle_timeout must be between 1 ms and {REUSE_IDLE_TIMEOUT_MS_CEILING} ms (one day)"
            )));
        }
        if request.allow_outbound.len() > ALLOW_OUTBOUND_RULES_MAX {
            return Err(ApiError::limit(format!(
                "{} outbound rules is above allow_outbound_rules_max ({ALLOW_OUTBOUND_RULES_MAX}); use a wildcard such as *.example.com",
                request.allow_outbound.len()
            )));
        }
        for rule in &request.allow_outbound {
            AllowRule::parse(rule).map_err(ApiError::bad_request)?;
        }
        if let Some(schedule) = &request.schedule {
            crate::cron::validate_schedule(schedule).map_err(ApiError::bad_request)?;
        }
        if request.publish.len() > PUBLISH_RULES_MAX {
            return Err(ApiError::limit(format!(
                "{} publish entries is above publish_rules_max ({PUBLISH_RULES_MAX}); use `*` for any queue",
                request.publish.len()
            )));
        }
        for queue in &request.publish {
            if queue != "*" {
                validate_queue_name(queue)
                    .map_err(|e| ApiError::bad_request(format!("publish: {e}")))?;
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
    ) -> Result<LiveFunction, ApiError> {
        let prepared = match cache.get(&version.digest) {
            Some(p) => p.clone(),
            None => {
                let digest = version.digest.clone();
                let bytes = blocking(&self.store, move |s| s.component(&digest))
                    .await?
                    .ok_or_else(|| {
                        ApiError::internal(
                            "component bytes missing from the store",
                            &version.digest,
                        )
                    })?;
                let runtime = self.runtime.clone();
                let p = tokio::task::spawn_blocking(move || runtime.prepare(&bytes))
                    .await
                    .map_err(|e| ApiError::internal("compilation task failed", e))??;
                cache.insert(p.digest.clone(), p.clone());
                p
            }
        };
        Ok(self.live_function(&prepared, version))
    }

    fn live_function(&self, prepared: &Prepared, version: &VersionRecord) -> LiveFunction {
        let env = version
            .config
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let config = &version.config;
        let outbound = config
            .allow_outbound
            .iter()
            .filter_map(|rule| match AllowRule::parse(rule) {
                Ok(rule) => Some(rule),
                Err(problem) => {
                    tracing::warn!(function = %version.function, problem, "outbound rule ignored");
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
                platform: Some(Arc::new(FunctionPlatform::new(
                    self.queues.clone(),
                    self.sockets.clone(),
                    Arc::from(version.function.as_str()),
                    config.publish.clone().into(),
                ))),
            },
        );
        LiveFunction {
            name: Arc::from(version.function.as_str()),
            version: version.version,
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

fn validate_env(env: &BTreeMap<String, String>) -> Result<(), ApiError> {
    let mut total = 0;
    for (key, value) in env {
        if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
            return Err(ApiError::bad_request(format!(
                "environment variable `{key}` is invalid: names must be non-empty without `=`, and neither may contain NUL"
            )));
        }
        total += key.len() + value.len();
    }
    if total > ENV_BYTES_MAX {
        return Err(ApiError::limit(format!(
            "environment variables take {total} bytes, above env_bytes_max ({ENV_BYTES_MAX} bytes)"
        )));
    }
    Ok(())
}

/// 413 for a component above the node's limit.
/// `size` is the upload's size when it is known (it is not when the body was cut off).
pub fn component_too_large(size: Option<u64>, max: u64) -> ApiError {
    let size = size.map(|s| format!(" ({s} bytes)")).unwrap_or_default();
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "component_too_large",
        format!(
            "the component upload{size} is above this node's component_bytes_max ({max} bytes); shrink it (release build, strip, opt-level=\"s\") or raise limits.component_bytes_max"
        ),
    )
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Run a store call on a blocking thread.
pub async fn blocking<T, F>(store: &Arc<Store>, call: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> eddy_store::Result<T> + Send + 'static,
{
    let store = store.clone();
    tokio::task::spawn_blocking(move || call(&store))
        .await
        .map_err(|e| ApiError::internal("store task failed", e))?
        .map_err(ApiError::from)
}
