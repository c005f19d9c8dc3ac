//! Limits the runtime enforces, as named constants with their units, and the config that overrides them.
//!
//! Every constant here is documented in `docs/limits.md` with the test that proves it.

use std::path::PathBuf;
use std::time::Duration;

pub use crate::outbound::OutboundConfig;

/// Default linear-memory limit of one instance. A guest that grows past it traps and the
/// caller gets `500` with `eddy-error: memory_bytes_max`.
pub const DEFAULT_MEMORY_BYTES_MAX: u64 = 128 * 1024 * 1024;
/// Node-wide ceiling for any function's memory limit; also the size of each pooled memory slot.
pub const DEFAULT_NODE_MEMORY_BYTES_MAX: u64 = 1024 * 1024 * 1024;
/// Default wall-clock limit of one invocation, from instantiation to the end of the
/// response body. Exceeding it gives `504` with `eddy-error: timeout_ms`.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Node-wide ceiling for any function's timeout.
pub const DEFAULT_NODE_TIMEOUT_MS_MAX: u64 = 15 * 60 * 1000;
/// Default request-body limit; larger bodies get `413` with `eddy-error: request_body_bytes_max`.
pub const DEFAULT_REQUEST_BODY_BYTES_MAX: u64 = 10 * 1024 * 1024;
/// Default response-body limit; a guest that writes more is cut off (see docs/limits.md).
pub const DEFAULT_RESPONSE_BODY_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Captured stdout+stderr kept per invocation; the rest is dropped and marked as truncated.
/// The guest never sees an error for logging too much.
pub const DEFAULT_LOG_BYTES_PER_INVOCATION_MAX: usize = 64 * 1024;
/// Instances that may exist at once on the node (the pooling allocator's slot count).
/// Beyond it an invocation is refused with `503` and `eddy-error: instances_max`.
pub const DEFAULT_INSTANCES_MAX: u32 = 1000;
/// How often the epoch advances: the resolution of deadlines and CPU slices.
pub const EPOCH_TICK_MS: u64 = 5;
/// CPU time a guest may run before it yields its worker thread to other invocations, in
/// epoch ticks (`EPOCH_TICK_MS` each). Short requests finish within one slice and never
/// interleave; a CPU-bound guest cannot hold a worker for longer than this. Deadlines are
/// checked at every slice, so a looping guest stops within a slice of its timeout.
pub const CPU_SLICE_TICKS: u64 = 10;
/// Polls of a guest shorter than this (wall clock) are metered as CPU by their wall time
/// instead of a second read of the thread CPU clock (`meter.rs`); also the most a single
/// poll can be over-counted by.
pub const METER_WALL_CLOCK_POLL_MAX_NS: u64 = 50_000;

/// Pooled-allocator memory kept resident between instantiations instead of being returned
/// to the kernel and faulted back in. On 2-core VMs this doubled `wasmtime serve`'s
/// throughput for a fresh instance per request; eddy's own figures come with the
/// benchmark harness.
pub const DEFAULT_POOL_MEMORY_KEEP_RESIDENT_BYTES: usize = 8 * 1024 * 1024;
/// Table memory kept resident between instantiations.
pub const DEFAULT_POOL_TABLE_KEEP_RESIDENT_BYTES: usize = 1024 * 1024;
/// Async stack memory kept resident between instantiations.
pub const DEFAULT_POOL_ASYNC_STACK_KEEP_RESIDENT_BYTES: usize = 2 * 1024 * 1024;
/// Whether a finished instance's memory is reset by asking the kernel which pages the guest
/// wrote (Linux `PAGEMAP_SCAN`, kernel 6.7 or later; ignored where unavailable) and
/// restoring only those, instead of `memset`-ing the whole kept-resident region. Measured
/// in `bench/RESULTS.md` (2026-11-23): +20% requests/s for a small Rust guest, but about
/// −15% for the Python guest at 8 MiB kept resident and −45% at 64 MiB, whose instances
/// dirty many pages. Nodes that serve mostly interpreter-based guests should turn it off.
pub const DEFAULT_POOL_PAGEMAP_SCAN: bool = true;
/// A finished instance whose linear memory is at most this large is torn down (its pool
/// slot reset) at once, before its response is sent; a larger one in a task of its own on
/// the same worker, after the response is sent. Resetting a small memory costs
/// microseconds, less than a task; resetting a large one costs hundreds of microseconds to
/// milliseconds, which the response should not wait for. Measured in `bench/RESULTS.md`
/// (2026-11-23, and 2026-11-27 10:21 for the task on the same worker instead of the
/// blocking pool).
pub const DEFAULT_POOL_INLINE_TEARDOWN_MEMORY_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Requests one warm instance serves before it is replaced, for functions deployed with
/// `--reuse` and no `--reuse-max-requests`. Bounds what a slow leak in module state can grow to.
pub const DEFAULT_REUSE_MAX_REQUESTS: u32 = 10_000;
/// How long a warm instance waits idle before it is dropped (scale to zero), for functions
/// deployed with `--reuse` and no `--reuse-idle-timeout`.
pub const DEFAULT_REUSE_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Resources a guest may leave open in its instance after a request (handles its
/// interpreter has not collected yet) and still have the instance reused; past it the
/// instance is replaced. A response body left unfinished, or I/O still pending, always
/// means replacement. StarlingMonkey (JavaScript) leaves one `incoming-request` per
/// request unless the handler disposes of it (`request[Symbol.dispose]()`, as
/// examples/hello-js does), so without that its warm instance is replaced about every this
/// many requests. A fresh instance's first request cost 1.08 ms of guest CPU against
/// 0.19 ms warm (2026-11-27): about 3.5 µs a request at 256, 14 at the earlier 64.
pub const REUSE_LEFTOVER_RESOURCES_MAX: usize = 256;
/// Warm instances kept idle on the node at once, all functions together. Each holds an
/// instance slot (`instances_max`) and its memory; past this, finished instances are
/// dropped instead of kept.
pub const DEFAULT_IDLE_INSTANCES_MAX: usize = 250;
/// Longest wait for an outgoing TCP (and TLS) connection.
pub const DEFAULT_OUTBOUND_CONNECT_TIMEOUT_MS: u64 = 10_000;
/// Longest wait for an outgoing response's head, and between frames of its body. A guest
/// may ask for less with `wasi:http` request options, never more.
pub const DEFAULT_OUTBOUND_TIMEOUT_MS: u64 = 30_000;
/// Largest outgoing response body a guest may receive; past it the guest's read fails
/// with `HTTP-response-body-size`.
pub const DEFAULT_OUTBOUND_RESPONSE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Outgoing requests in flight at once on the node, all functions together; past it a
/// guest's request fails with `connection-limit-reached`, and its log says why.
pub const DEFAULT_OUTBOUND_REQUESTS_IN_FLIGHT_MAX: usize = 4096;
/// Outgoing requests one instance may have in flight at once (a guest that starts
/// requests in a loop without reading them cannot take the node's file descriptors).
pub const OUTBOUND_REQUESTS_PER_INSTANCE_MAX: usize = 64;
/// Host resources one instance may hold at once: the entries of its resource table (header
/// `fields`, requests, responses, bodies, streams, pollables). Each is host memory outside
/// the guest's `memory_bytes_max`, so the count is bounded; past it the guest traps and the
/// caller gets `500` with `eddy-error: resources_per_instance_max`. With
/// `DEFAULT_FIELDS_BYTES_MAX` and `DEFAULT_OUTGOING_BODY_CHUNK_BYTES` this bounds what one
/// instance can pin on the host to about 64 MiB (docs/security.md). Wasmtime's default is
/// 1,000,000.
pub const DEFAULT_RESOURCES_PER_INSTANCE_MAX: usize = 1024;
/// Size of one header map (`fields`) a guest builds, as `wasi:http` counts it: names and
/// values plus the size of each entry's structures (about 72 bytes). Past it the guest's
/// `set`/`append` fails with `size-exceeded`. Twice `DEFAULT_HEADER_BYTES_MAX`, so a guest
/// can copy any request's headers it was given. Wasmtime's default is 128 KiB.
pub const DEFAULT_FIELDS_BYTES_MAX: usize = 64 * 1024;
/// Largest single write to an outgoing body (a response's, or an outgoing request's) that
/// the host takes, and so what one buffered chunk can hold. An outgoing body buffers at
/// most `OUTGOING_BODY_BUFFER_CHUNKS` + 1 chunks until hyper sends them. Wasmtime's default
/// is 1 MiB, which let one 64 MiB function pin 2 GiB of host memory with 1,000 unsent bodies.
pub const DEFAULT_OUTGOING_BODY_CHUNK_BYTES: usize = 64 * 1024;
/// Chunks an outgoing body buffers beyond the one being sent (Wasmtime's default).
pub const OUTGOING_BODY_BUFFER_CHUNKS: usize = 1;
/// Idle pooled connections kept per upstream host for outgoing requests.
pub const DEFAULT_OUTBOUND_IDLE_CONNECTIONS_PER_HOST_MAX: usize = 64;

/// Disk the incremental compilation cache may use (machine code of single functions, reused
/// when a changed component compiles; under `<cache_dir>/incremental`). Past it new code is
/// not stored; at start the least recently used entries are removed until the rest fit in
/// three quarters of it. `0` turns incremental compilation off.
pub const DEFAULT_INCREMENTAL_CACHE_BYTES_MAX: u64 = 1024 * 1024 * 1024;

/// Node-wide runtime settings.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Directory of the compiled-code cache.
    pub cache_dir: PathBuf,
    /// Largest memory limit any function may ask for.
    pub memory_bytes_max: u64,
    /// Instances that may exist at once.
    pub instances_max: u32,
    /// Captured log bytes kept per invocation.
    pub log_bytes_per_invocation_max: usize,
    /// Pooling allocator tuning.
    pub pooling: PoolingConfig,
    /// Warm instances kept idle at once, all functions together.
    pub idle_instances_max: usize,
    /// Outgoing HTTP.
    pub outbound: OutboundConfig,
    /// Which addresses outgoing HTTP may reach.
    pub destinations: crate::destinations::DestinationPolicy,
    /// Disk Cranelift's per-function cache may use (`0`: no incremental compilation).
    pub incremental_cache_bytes_max: u64,
    /// Host memory one instance may hold outside its linear memory.
    pub host: HostLimits,
    /// What one component may declare.
    pub component: ComponentLimits,
    /// What compiling one component may take.
    pub compile: crate::compiler::CompileLimits,
    /// Where components are compiled: `None` in this process (unbounded: tests and
    /// embedders), else a compile worker bounded by `compile`.
    pub compiler: Option<crate::compiler::CompilerCommand>,
}

/// What one instance may hold on the host, outside its linear memory (see docs/security.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostLimits {
    pub resources_per_instance_max: usize,
    pub fields_bytes_max: usize,
    pub outgoing_body_chunk_bytes: usize,
}

impl Default for HostLimits {
    fn default() -> Self {
        HostLimits {
            resources_per_instance_max: DEFAULT_RESOURCES_PER_INSTANCE_MAX,
            fields_bytes_max: DEFAULT_FIELDS_BYTES_MAX,
            outgoing_body_chunk_bytes: DEFAULT_OUTGOING_BODY_CHUNK_BYTES,
        }
    }
}

impl RuntimeConfig {
    /// Defaults with the given cache directory.
    pub fn new(cache_dir: PathBuf) -> RuntimeConfig {
        RuntimeConfig {
            cache_dir,
            memory_bytes_max: DEFAULT_NODE_MEMORY_BYTES_MAX,
            instances_max: DEFAULT_INSTANCES_MAX,
            log_bytes_per_invocation_max: DEFAULT_LOG_BYTES_PER_INVOCATION_MAX,
            pooling: PoolingConfig::default(),
            idle_instances_max: DEFAULT_IDLE_INSTANCES_MAX,
            outbound: OutboundConfig::default(),
            destinations: Default::default(),
            incremental_cache_bytes_max: DEFAULT_INCREMENTAL_CACHE_BYTES_MAX,
            host: HostLimits::default(),
            component: ComponentLimits::default(),
            compile: crate::compiler::CompileLimits::default(),
            compiler: None,
        }
    }
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            connect_timeout: Duration::from_millis(DEFAULT_OUTBOUND_CONNECT_TIMEOUT_MS),
            timeout: Duration::from_millis(DEFAULT_OUTBOUND_TIMEOUT_MS),
            response_bytes_max: DEFAULT_OUTBOUND_RESPONSE_BYTES_MAX,
            idle_connections_per_host_max: DEFAULT_OUTBOUND_IDLE_CONNECTIONS_PER_HOST_MAX,
            requests_in_flight_max: DEFAULT_OUTBOUND_REQUESTS_IN_FLIGHT_MAX,
        }
    }
}

/// Warm-instance reuse of one function (`--reuse`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReuseConfig {
    /// Requests one instance serves before it is replaced.
    pub max_requests: u32,
    /// Idle time after which a warm instance is dropped.
    pub idle_timeout: Duration,
}

impl Default for ReuseConfig {
    fn default() -> Self {
        ReuseConfig {
            max_requests: DEFAULT_REUSE_MAX_REQUESTS,
            idle_timeout: Duration::from_millis(DEFAULT_REUSE_IDLE_TIMEOUT_MS),
        }
    }
}

/// How pooled instance slots are kept and reset between instantiations.
#[derive(Clone, Copy, Debug)]
pub struct PoolingConfig {
    pub memory_keep_resident_bytes: usize,
    pub table_keep_resident_bytes: usize,
    pub async_stack_keep_resident_bytes: usize,
    pub pagemap_scan: bool,
    pub inline_teardown_memory_bytes_max: usize,
}

impl Default for PoolingConfig {
    fn default() -> Self {
        PoolingConfig {
            memory_keep_resident_bytes: DEFAULT_POOL_MEMORY_KEEP_RESIDENT_BYTES,
            table_keep_resident_bytes: DEFAULT_POOL_TABLE_KEEP_RESIDENT_BYTES,
            async_stack_keep_resident_bytes: DEFAULT_POOL_ASYNC_STACK_KEEP_RESIDENT_BYTES,
            pagemap_scan: DEFAULT_POOL_PAGEMAP_SCAN,
            inline_teardown_memory_bytes_max: DEFAULT_POOL_INLINE_TEARDOWN_MEMORY_BYTES_MAX,
        }
    }
}

/// Limits of one function's invocations, already checked against the node's maxima.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FunctionLimits {
    pub memory_bytes_max: u64,
    pub timeout: Duration,
    pub request_body_bytes_max: u64,
    pub response_body_bytes_max: u64,
}

impl Default for FunctionLimits {
    fn default() -> Self {
        FunctionLimits {
            memory_bytes_max: DEFAULT_MEMORY_BYTES_MAX,
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
            request_body_bytes_max: DEFAULT_REQUEST_BODY_BYTES_MAX,
            response_body_bytes_max: DEFAULT_RESPONSE_BODY_BYTES_MAX,
        }
    }
}

/// Pool slots reserved per allowed instance. A component is several core instances
/// (Python components built by componentize-py use 14), usually one or two
/// memories and a few tables; the pool must hold `instances_max` such components.
pub(crate) const CORE_INSTANCES_PER_INSTANCE: u32 = 16;
pub(crate) const MEMORIES_PER_INSTANCE: u32 = 2;
pub(crate) const TABLES_PER_INSTANCE: u32 = 4;

/// What one component may declare, checked when it is deployed, before it is compiled (and
/// so before it can cost compile time or memory), and again by the instance pool for each
/// instance. Past any of them the deploy gets `422 component_limit` naming it. The pool
/// limits are also per instance: no component can take more than its share of the pool, so
/// one function cannot leave the others without slots (`503 instances_max`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ComponentLimits {
    /// Core instances one instance of the component creates.
    pub core_instances_max: u32,
    /// Linear memories one instance has, all its core instances together.
    pub memories_max: u32,
    /// Tables one instance has, all its core instances together.
    pub tables_max: u32,
    /// Functions defined in all its core modules (what compilation costs grow with).
    pub functions_max: u32,
    /// Bytes of data segments in all its core modules.
    pub data_bytes_max: u64,
    /// Modules and components nested in it, at every depth.
    pub modules_max: u32,
}

/// Default of `ComponentLimits::core_instances_max`: `CORE_INSTANCES_PER_INSTANCE`, the
/// pool's share of each instance (hello-python, built by componentize-py, instantiates 14
/// core modules; hello-js and the Rust guests 4). A Python app that links several native
/// extensions instantiates one more per extension: raise it for those.
pub const DEFAULT_COMPONENT_CORE_INSTANCES_MAX: u32 = CORE_INSTANCES_PER_INSTANCE;
/// Default of `ComponentLimits::memories_max`: `MEMORIES_PER_INSTANCE`.
pub const DEFAULT_COMPONENT_MEMORIES_MAX: u32 = MEMORIES_PER_INSTANCE;
/// Default of `ComponentLimits::tables_max`: `TABLES_PER_INSTANCE`.
pub const DEFAULT_COMPONENT_TABLES_MAX: u32 = TABLES_PER_INSTANCE;
/// Default of `ComponentLimits::functions_max` (hello-python defines 13,485 functions,
/// hello-js 12,818).
pub const DEFAULT_COMPONENT_FUNCTIONS_MAX: u32 = 200_000;
/// Default of `ComponentLimits::data_bytes_max` (hello-python carries 10.6 MiB, hello-js
/// 3.4 MiB).
pub const DEFAULT_COMPONENT_DATA_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Default of `ComponentLimits::modules_max` (hello-python nests 16, the others 5).
pub const DEFAULT_COMPONENT_MODULES_MAX: u32 = 64;

impl Default for ComponentLimits {
    fn default() -> Self {
        ComponentLimits {
            core_instances_max: DEFAULT_COMPONENT_CORE_INSTANCES_MAX,
            memories_max: DEFAULT_COMPONENT_MEMORIES_MAX,
            tables_max: DEFAULT_COMPONENT_TABLES_MAX,
            functions_max: DEFAULT_COMPONENT_FUNCTIONS_MAX,
            data_bytes_max: DEFAULT_COMPONENT_DATA_BYTES_MAX,
            modules_max: DEFAULT_COMPONENT_MODULES_MAX,
        }
    }
}
