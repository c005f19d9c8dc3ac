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
use crate::compiler::{code_config, compile_in_worker};
use crate::invoke::InvocationState;
use crate::limits::{ComponentLimits, EPOCH_TICK_MS, RuntimeConfig};
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
    #[error(
        "the component declares {declared} {what}, above this node's {limit} ({max}); it was not compiled"
    )]
    ComponentLimit {
        what: &'static str,
        limit: &'static str,
        declared: u64,
        max: u64,
    },
    #[error(
        "{detail}, above this node's {limit}; the compiler was stopped and nothing was deployed \
         (a component with one huge function or very many functions costs the most to compile: \
         split it, or ask the operator to raise {limit})"
    )]
    CompileLimit { limit: &'static str, detail: String },
    #[error("the node could not compile the component: {0}")]
    Compiler(String),
}

impl DeployError {
    /// The named limit the component exceeded, if that is why it was refused.
    pub fn limit(&self) -> Option<&'static str> {
        match self {
            DeployError::ComponentLimit { limit, .. } | DeployError::CompileLimit { limit, .. } => {
                Some(limit)
            }
            _ => None,
        }
    }

    /// Whether the node, not the component, failed (the compile worker could not run).
    pub fn is_node_fault(&self) -> bool {
        matches!(self, DeployError::Compiler(_))
    }
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

    /// The compatibility key of this runtime's compiled code (Wasmtime's version, settings
    /// and the CPU features it compiles for, hashed): another runtime with the same key can
    /// load what this one compiles.
    pub fn engine_key(&self) -> &str {
        self.cache.engine_key()
    }

    /// Whether the compile cache holds an entry for `digest`.
    pub fn is_cached(&self, digest: &str) -> bool {
        self.cache.has(digest)
    }

    /// The compiled artifact of `digest` from the compile cache, to share with other nodes.
    pub fn cached_artifact(&self, digest: &str) -> Option<Vec<u8>> {
        self.cache.read(digest)
    }

    /// Puts an artifact compiled elsewhere into the compile cache, where the next
    /// [`Runtime::prepare`] of `digest` loads it instead of compiling.
    ///
    /// The artifact is native code that will run: call this only with an artifact whose
    /// origin was authenticated (the node checks a MAC under the cluster's key). If
    /// Wasmtime refuses it at load, the entry is dropped and the component compiled.
    pub fn install_artifact(&self, digest: &str, artifact: &[u8]) -> std::io::Result<()> {
        self.cache.install(digest, artifact)
    }

    /// Validate, compile (or load from the cache) and pre-link a component.
    ///
    /// Blocking and CPU-heavy on a cache miss: call it from a blocking thread.
    pub fn prepare(&self, bytes: &[u8]) -> Result<Prepared, DeployError> {
        check_is_component(bytes)?;
        check_declared(bytes, &self.config.component)?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        let (component, compiled) = match self.cache.load(&self.engine, &digest) {
            Some(component) => (component, false),
            None => (self.compile(&digest, bytes)?, true),
        };
        let pre = self.link(&component)?;
        Ok(Prepared {
            pre,
            digest,
            compiled,
            inline_teardown_memory_bytes_max: self.config.pooling.inline_teardown_memory_bytes_max,
        })
    }

    /// Compile `bytes` and keep the result in the cache: in a compile worker bounded by
    /// `compile_time_ms_max` and `compile_memory_bytes_max` when the runtime has one (the
    /// node always does), else in this process.
    fn compile(&self, digest: &str, bytes: &[u8]) -> Result<Component, DeployError> {
        let invalid = |e: wasmtime::Error| DeployError::Invalid(format!("{e:#}"));
        let Some(command) = &self.config.compiler else {
            let component = Component::new(&self.engine, bytes).map_err(invalid)?;
            self.cache.store_component(digest, &component);
            return Ok(component);
        };
        let incremental = self.incremental.as_deref().map(IncrementalStore::location);
        let (artifact, stats) =
            compile_in_worker(command, self.config.compile, incremental, bytes)?;
        if let Some(store) = &self.incremental {
            store.add_worker(stats.hits, stats.inserts, stats.bytes);
        }
        self.cache
            .store_artifact(&self.engine, digest, &artifact)
            .map_err(|e| DeployError::Compiler(format!("loading the compiled component: {e:#}")))
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
    // The pool holds `instances_max` instances of the largest component allowed, and no
    // component may take more than that share: one cannot leave the others without slots.
    let component = &config.component;
    let each = |per_instance: u32| config.instances_max.saturating_mul(per_instance);
    pooling
        .total_component_instances(config.instances_max)
        .total_core_instances(each(component.core_instances_max))
        .total_memories(each(component.memories_max))
        .total_tables(each(component.tables_max))
        .max_core_instances_per_component(component.core_instances_max)
        .max_memories_per_component(component.memories_max)
        .max_tables_per_component(component.tables_max)
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
    let mut wasm = code_config();
    wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    wasm
}

/// The node's engine for `config`, without an incremental cache (for tests).
#[cfg(test)]
pub(crate) fn node_engine(config: &RuntimeConfig) -> Engine {
    Engine::new(&engine_config(config)).unwrap()
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

/// Refuse a component whose declared counts exceed `limits`, before compiling it. The
/// counts are static: a nested component instantiated twice is counted once, so the pool
/// checks each instance again (`max_*_per_component`).
fn check_declared(bytes: &[u8], limits: &ComponentLimits) -> Result<(), DeployError> {
    let counts = declared_counts(bytes)?;
    let checks = [
        (
            "core instances",
            "component_core_instances_max",
            counts.core_instances,
            u64::from(limits.core_instances_max),
        ),
        (
            "linear memories",
            "component_memories_max",
            counts.memories,
            u64::from(limits.memories_max),
        ),
        (
            "tables",
            "component_tables_max",
            counts.tables,
            u64::from(limits.tables_max),
        ),
        (
            "functions",
            "component_functions_max",
            counts.functions,
            u64::from(limits.functions_max),
        ),
        (
            "bytes of data segments",
            "component_data_bytes_max",
            counts.data_bytes,
            limits.data_bytes_max,
        ),
        (
            "nested modules and components",
            "component_modules_max",
            counts.modules,
            u64::from(limits.modules_max),
        ),
    ];
    match checks.iter().find(|(_, _, declared, max)| declared > max) {
        Some(&(what, limit, declared, max)) => Err(DeployError::ComponentLimit {
            what,
            limit,
            declared,
            max,
        }),
        None => Ok(()),
    }
}

/// What a component declares, at every depth of nesting.
#[derive(Debug, Default, PartialEq, Eq)]
struct DeclaredCounts {
    core_instances: u64,
    memories: u64,
    tables: u64,
    functions: u64,
    data_bytes: u64,
    modules: u64,
}

fn declared_counts(bytes: &[u8]) -> Result<DeclaredCounts, DeployError> {
    use wasmtime::wasmparser::{Instance, Parser, Payload};
    let invalid = |e: wasmtime::wasmparser::BinaryReaderError| DeployError::Invalid(e.to_string());
    let mut counts = DeclaredCounts::default();
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(invalid)? {
            Payload::InstanceSection(section) => {
                // Only instantiations take a pool slot; a bundle of exports does not.
                for instance in section {
                    let instantiates =
                        matches!(instance.map_err(invalid)?, Instance::Instantiate { .. });
                    counts.core_instances += u64::from(instantiates);
                }
            }
            Payload::MemorySection(section) => counts.memories += u64::from(section.count()),
            Payload::TableSection(section) => counts.tables += u64::from(section.count()),
            Payload::FunctionSection(section) => counts.functions += u64::from(section.count()),
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => counts.modules += 1,
            Payload::DataSection(section) => {
                for data in section {
                    counts.data_bytes += data.map_err(invalid)?.data.len() as u64;
                }
            }
            _ => {}
        }
    }
    Ok(counts)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A component of `modules` core modules with `memories` memories each, every one
    /// instantiated `instances` times.
    fn component(modules: usize, memories: usize, instances: usize) -> Vec<u8> {
        let memory = "(memory 1)".repeat(memories);
        let mut text = String::from("(component\n");
        for m in 0..modules {
            text += &format!("(core module $m{m} {memory} (func))\n");
            for _ in 0..instances {
                text += &format!("(core instance (instantiate $m{m}))\n");
            }
        }
        text += ")";
        wat::parse_str(&text).unwrap()
    }

    fn refused(bytes: &[u8]) -> Option<&'static str> {
        check_declared(bytes, &ComponentLimits::default())
            .err()
            .and_then(|e| e.limit())
    }

    #[test]
    fn components_past_their_declared_limits_are_refused_before_compiling() {
        assert_eq!(refused(&component(2, 1, 1)), None);
        assert_eq!(
            refused(&component(1, 0, 17)),
            Some("component_core_instances_max")
        );
        assert_eq!(refused(&component(3, 1, 1)), Some("component_memories_max"));
        let err = check_declared(&component(1, 0, 40), &ComponentLimits::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the component declares 40 core instances, above this node's component_core_instances_max (16); it was not compiled"
        );
        let tight = ComponentLimits {
            functions_max: 3,
            ..ComponentLimits::default()
        };
        let err = check_declared(&component(2, 0, 1), &tight);
        assert!(err.is_ok());
        let err = check_declared(&component(4, 0, 1), &tight).unwrap_err();
        assert_eq!(err.limit(), Some("component_functions_max"));
    }

    /// The guests `scripts/build-guests` made (when it has run) fit the defaults.
    #[test]
    fn the_example_guests_fit_the_default_component_limits() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/guests");
        for name in ["hello-rust", "misbehave", "hello-python", "hello-js"] {
            let path = dir.join(format!("{name}.wasm"));
            let bytes = std::fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}: run scripts/build-guests (scripts/test does)",
                    path.display()
                )
            });
            check_declared(&bytes, &ComponentLimits::default())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            eprintln!("{name}: {:?}", declared_counts(&bytes).unwrap());
        }
    }
}
