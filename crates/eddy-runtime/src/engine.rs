//! The node's Wasmtime engine and linker, and deploy-time validation and compilation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::cache::{CacheStats, CompileCache, IncrementalStore};
use crate::invoke::InvocationState;
use crate::limits::{EPOCH_TICK_MS, RuntimeConfig};
use crate::outbound::OutboundClient;
use crate::reuse::IdleBudget;

/// Where, under the compile cache directory, Cranelift's per-function cache lives.
const INCREMENTAL_CACHE_SUBDIR: &str = "incremental";

/// The export every function must have: `wasi:http/incoming-handler` of WASI 0.2.
const HANDLER_EXPORT_PREFIX: &str = "wasi:http/incoming-handler@0.2.";
/// The same interface of any release.
const HANDLER_EXPORT_NAME: &str = "wasi:http/incoming-handler@";
/// What a component of the `wasi:cli/command` world (a program for `wasmtime run`) exports.
const CLI_RUN_EXPORT_NAME: &str = "wasi:cli/run@";

/// A failure to start the runtime: an infrastructure fault, never the user's input.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot configure the WebAssembly engine: {0:#}")]
    Engine(wasmtime::Error),
    #[error("cannot use compile cache directory {path}: {source}")]
    CacheDir {
        path: String,
        source: std::io::Error,
    },
}

/// Why a component was refused at deploy. Every variant is the user's input, and its
/// message says what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("not a WebAssembly binary (the file does not start with the `\\0asm` magic bytes)")]
    NotWasm,
    #[error(
        "this is a core WebAssembly module, not a component; build for the wasm32-wasip2 target \
         (or wrap it with `wasm-tools component new`) so that it exports wasi:http/incoming-handler"
    )]
    CoreModule,
    #[error("invalid component: {0}")]
    Invalid(String),
    #[error(
        "the component does not export `wasi:http/incoming-handler@0.2.x` (it exports: {exports}); \
         eddy serves components of the wasi:http/proxy world"
    )]
    MissingExport { exports: String },
    #[error(
        "the component exports `{export}`, a wasi:http release eddy does not serve; eddy serves \
         wasi:http 0.2 (`wasi:http/incoming-handler@0.2.x`, the wasi:http/proxy world of WASIp2): \
         build against wasi:http 0.2"
    )]
    UnsupportedHttpVersion { export: String },
    #[error(
        "the component is a command (it exports `{export}`, the wasi:cli/command world: a program \
         for `wasmtime run`), not an HTTP handler; eddy serves components of the wasi:http/proxy \
         world, which export `wasi:http/incoming-handler@0.2.x` (Rust: a cdylib with \
         `wasi::http::proxy::export!`; componentize-py and componentize-js: \
         `-w wasi:http/proxy@0.2.x`)"
    )]
    CommandWorld { export: String },
    #[error(
        "the component imports `{import}`, which eddy does not provide ({detail}); eddy provides \
         wasi:http, wasi:cli, wasi:clocks, wasi:random, wasi:io, and wasi:filesystem/wasi:sockets \
         without any directory or network access"
    )]
    UnsatisfiedImport { import: String, detail: String },
    #[error(
        "the component's `wasi:http/incoming-handler` export does not have the expected shape: {0}"
    )]
    BadExport(String),
}

/// A validated, compiled and pre-linked component, ready to become a deployment.
#[derive(Clone)]
pub struct Prepared {
    pub(crate) pre: ProxyPre<InvocationState>,
    /// `sha256:<hex>` of the component bytes.
    pub digest: String,
    /// False when the compiled code came from the cache.
    pub compiled: bool,
    /// Instances with at most this much linear memory are torn down inline.
    pub(crate) inline_teardown_memory_bytes_max: usize,
}

/// One per node: the engine, the linker with every host interface, the compile cache and
/// the epoch ticker that enforces deadlines.
pub struct Runtime {
    engine: Engine,
    linker: Linker<InvocationState>,
    cache: CompileCache,
    /// Cranelift's per-function cache, when `incremental_cache_bytes_max` is not 0.
    incremental: Option<Arc<IncrementalStore>>,
    config: RuntimeConfig,
    ticker: Option<JoinHandle<()>>,
    ticker_stop: Arc<AtomicBool>,
    outbound: Arc<OutboundClient>,
    idle_budget: Arc<IdleBudget>,
}

impl Runtime {
    /// Build the engine (pooling allocator, copy-on-write memory images, epoch
    /// interruption) and start the epoch ticker thread.
    pub fn new(config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let incremental = match config.incremental_cache_bytes_max {
            0 => None,
            bytes_max => {
                let dir = config.cache_dir.join(INCREMENTAL_CACHE_SUBDIR);
                let store =
                    IncrementalStore::open(&dir, bytes_max).map_err(cache_dir_error(&dir))?;
                Some(Arc::new(store))
            }
        };
        let mut wasm = engine_config(&config);
        if let Some(store) = &incremental {
            wasm.enable_incremental_compilation(store.clone())
                .map_err(RuntimeError::Engine)?;
        }
        let engine = Engine::new(&wasm).map_err(RuntimeError::Engine)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(RuntimeError::Engine)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(RuntimeError::Engine)?;
        let cache = CompileCache::open(&config.cache_dir, &engine)
            .map_err(cache_dir_error(&config.cache_dir))?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let ticker = spawn_epoch_ticker(engine.clone(), ticker_stop.clone());
        Ok(Runtime {
            engine,
            linker,
            cache,
            incremental,
            ticker: Some(ticker),
            ticker_stop,
            outbound: Arc::new(OutboundClient::new(
                config.outbound,
                config.destinations.clone(),
            )),
            idle_budget: Arc::new(IdleBudget::new(config.idle_instances_max)),
            config,
        })
    }

    /// The node's pooled client for outgoing HTTP.
    pub(crate) fn outbound_client(&self) -> Arc<OutboundClient> {
        self.outbound.clone()
    }

    /// The node-wide budget of warm idle instances.
    pub(crate) fn idle_budget(&self) -> Arc<IdleBudget> {
        self.idle_budget.clone()
    }

    /// The node-wide settings this runtime was built with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Whether finished instances are reset with `PAGEMAP_SCAN`: configured and supported
    /// by this kernel.
    pub fn pagemap_scan_in_use(&self) -> bool {
        self.config.pooling.pagemap_scan && PoolingAllocationConfig::is_pagemap_scan_available()
    }

    /// Compile-cache counters since the runtime started.
    pub fn cache_stats(&self) -> CacheStats {
        let mut stats = self.cache.stats();
        if let Some(store) = &self.incremental {
            (stats.incremental_hits, stats.incremental_inserts) = store.counts();
            stats.incremental_bytes = store.bytes();
        }
        stats
    }

    /// Validate, compile (or load from the cache) and pre-link a component.
    ///
    /// Blocking and CPU-heavy on a cache miss: call it from a blocking thread.
    pub fn prepare(&self, bytes: &[u8]) -> Result<Prepared, DeployError> {
        check_is_component(bytes)?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        let (component, compiled) = self
            .cache
            .load_or_compile(&self.engine, &digest, bytes)
            .map_err(|e| DeployError::Invalid(format!("{e:#}")))?;
        let pre = self.link(&component)?;
        Ok(Prepared {
            pre,
            digest,
            compiled,
            inline_teardown_memory_bytes_max: self.config.pooling.inline_teardown_memory_bytes_max,
        })
    }

    fn link(&self, component: &Component) -> Result<ProxyPre<InvocationState>, DeployError> {
        let instance_pre = self.linker.instantiate_pre(component).map_err(|e| {
            let detail = format!("{e:#}");
            let import = first_backticked(&detail).unwrap_or_else(|| "an interface".into());
            DeployError::UnsatisfiedImport { import, detail }
        })?;
        let exports = export_names(&self.engine, component);
        let serves = exports
            .iter()
            .any(|name| name.starts_with(HANDLER_EXPORT_PREFIX));
        let find = |prefix: &str| {
            exports
                .iter()
                .find(|name| name.starts_with(prefix))
                .cloned()
        };
        if !serves {
            if let Some(export) = find(HANDLER_EXPORT_NAME) {
                return Err(DeployError::UnsupportedHttpVersion { export });
            }
            if let Some(export) = find(CLI_RUN_EXPORT_NAME) {
                return Err(DeployError::CommandWorld { export });
            }
            let exports = if exports.is_empty() {
                "nothing".into()
            } else {
                exports.join(", ")
            };
            return Err(DeployError::MissingExport { exports });
        }
        ProxyPre::new(instance_pre).map_err(|e| DeployError::BadExport(format!("{e:#}")))
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}

fn engine_config(config: &RuntimeConfig) -> Config {
    let mut pooling = PoolingAllocationConfig::new();
    pooling
        .total_component_instances(config.instances_max)
        .total_core_instances(
            config
                .instances_max
                .saturating_mul(crate::limits::CORE_INSTANCES_PER_INSTANCE),
        )
        .total_memories(
            config
                .instances_max
                .saturating_mul(crate::limits::MEMORIES_PER_INSTANCE),
        )
        .total_tables(
            config
                .instances_max
                .saturating_mul(crate::limits::TABLES_PER_INSTANCE),
        )
        .total_stacks(config.instances_max)
        .max_memory_size(usize::try_from(config.memory_bytes_max).unwrap_or(usize::MAX))
        .linear_memory_keep_resident(config.pooling.memory_keep_resident_bytes)
        .table_keep_resident(config.pooling.table_keep_resident_bytes)
        .async_stack_keep_resident(config.pooling.async_stack_keep_resident_bytes)
        .pagemap_scan(if config.pooling.pagemap_scan {
            Enabled::Auto
        } else {
            Enabled::No
        });
    let mut wasm = Config::new();
    wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling))
        .epoch_interruption(true)
        .memory_init_cow(true)
        .parallel_compilation(true);
    wasm
}

fn cache_dir_error(dir: &std::path::Path) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let path = dir.display().to_string();
    move |source| RuntimeError::CacheDir { path, source }
}

fn spawn_epoch_ticker(engine: Engine, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("eddy-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(EPOCH_TICK_MS));
                engine.increment_epoch();
            }
        })
        .expect("spawning the epoch thread")
}

fn check_is_component(bytes: &[u8]) -> Result<(), DeployError> {
    use wasmtime::wasmparser::Parser;
    if !bytes.starts_with(b"\0asm") {
        return Err(DeployError::NotWasm);
    }
    if Parser::is_core_wasm(bytes) {
        return Err(DeployError::CoreModule);
    }
    if !Parser::is_component(bytes) {
        return Err(DeployError::Invalid(
            "unknown WebAssembly binary version or layer".into(),
        ));
    }
    Ok(())
}

fn export_names(engine: &Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect()
}

fn first_backticked(text: &str) -> Option<String> {
    let start = text.find('`')? + 1;
    let len = text[start..].find('`')?;
    Some(text[start..start + len].to_string())
}
