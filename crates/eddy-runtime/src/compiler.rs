//! Compiling an uploaded component in a child process, bounded in time and memory.
//!
//! Cranelift's time and memory grow with what a component contains, and a component is
//! whatever a deployer uploads: one huge function can take seconds of CPU and gigabytes of
//! memory to compile. The node therefore compiles in a child process (the `eddy` binary's
//! hidden `compile-worker` subcommand, which calls [`worker_main`]) with `RLIMIT_DATA` at
//! `compile_memory_bytes_max`, killed once it has used `compile_time_ms_max` of CPU time
//! (all its threads together: time spent waiting for a core on a busy machine does not
//! count, so a loaded node does not refuse an ordinary component); the deploy then gets
//! `422 component_limit` naming the limit, and the node is unharmed. The child builds an
//! engine with the node's code settings ([`code_config`]) and writes the serialized component
//! to its stdout; the node loads it like a compile-cache entry (the pooling allocator does
//! not change the compiled code, so the artifact is compatible: see the test below).
//!
//! Protocol: the component's bytes on the child's stdin; on success exit 0, the artifact on
//! stdout and a last stderr line `eddy-compile-stats hits=H inserts=I bytes=B` (Cranelift's
//! incremental cache, counted into the node's); an invalid component exits
//! [`EXIT_INVALID`] with the reason on stderr, a compilation short of memory `EXIT_MEMORY`
//! (or aborts, when an allocation fails).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::Component;
use wasmtime::{Config, Engine};

use crate::cache::IncrementalStore;
use crate::engine::DeployError;

/// The program and arguments that run [`worker_main`] (the node: its own executable with
/// `compile-worker`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompilerCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

/// The argument that makes the `eddy` binary a compile worker.
pub const WORKER_SUBCOMMAND: &str = "compile-worker";

impl CompilerCommand {
    /// The running executable as its own compile worker. `/proc/self/exe` names the binary
    /// this process runs even after an upgrade replaced the file on disk, so the worker's code
    /// settings always match the node's.
    pub fn this_executable() -> CompilerCommand {
        CompilerCommand {
            program: PathBuf::from("/proc/self/exe"),
            args: vec![OsString::from(WORKER_SUBCOMMAND)],
        }
    }
}

/// How much compiling one component may take (see docs/limits.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompileLimits {
    /// CPU time the compiler may use (all its threads together), from its start to its
    /// artifact. Wall time is bounded too, at `COMPILE_WALL_TIME_FACTOR` times this, for a
    /// compiler that stops making progress.
    pub time_ms_max: u64,
    /// The compiler process's data memory (`RLIMIT_DATA`: heap, thread stacks, code being
    /// emitted), including the process's own start-up (about 20 MiB).
    pub memory_bytes_max: u64,
}

/// Default of `compile_time_ms_max`. The slowest example to compile, hello-js (13 MB,
/// 12,818 functions), takes 7.9 s in this machine's debug build without an incremental
/// cache, hello-python 6.1 s, hello-rust 0.06 s (2026-12-04); a minute leaves room for a
/// slower or busier machine.
pub const DEFAULT_COMPILE_TIME_MS_MAX: u64 = 60_000;
/// A compiler still running after this many times `compile_time_ms_max` of wall time is
/// stopped as well, even though it has not used its CPU time: one that waits for ever (on
/// its input, on a stopped disk) must not hold a deploy for ever.
pub const COMPILE_WALL_TIME_FACTOR: u64 = 10;
/// Default of `compile_memory_bytes_max`. Compiling hello-js peaks at 419 MiB resident,
/// hello-python at 347 MiB, hello-rust at 27 MiB (same measurement).
pub const DEFAULT_COMPILE_MEMORY_BYTES_MAX: u64 = 2 * 1024 * 1024 * 1024;

/// The smallest `compile_memory_bytes_max` a node accepts: the worker's own start-up takes
/// about 20 MiB.
pub const COMPILE_MEMORY_BYTES_FLOOR: u64 = 64 * 1024 * 1024;

impl Default for CompileLimits {
    fn default() -> Self {
        CompileLimits {
            time_ms_max: DEFAULT_COMPILE_TIME_MS_MAX,
            memory_bytes_max: DEFAULT_COMPILE_MEMORY_BYTES_MAX,
        }
    }
}

/// Exit status of a worker whose input is not a valid component.
pub const EXIT_INVALID: u8 = 2;
/// Exit status of a worker whose compilation failed for lack of memory (`ENOMEM`).
const EXIT_MEMORY: u8 = 4;
/// Exit status of a worker that could not run (bad environment, unwritable output).
const EXIT_WORKER: u8 = 3;
/// Environment variables the node passes its worker.
const ENV_INCREMENTAL_DIR: &str = "EDDY_COMPILE_INCREMENTAL_DIR";
const ENV_INCREMENTAL_BYTES_MAX: &str = "EDDY_COMPILE_INCREMENTAL_BYTES_MAX";
/// Prefix of the worker's last stderr line on success.
const STATS_PREFIX: &str = "eddy-compile-stats ";
/// The worker's stderr kept for the error message.
const STDERR_BYTES_MAX: usize = 64 * 1024;

/// The engine settings that decide compiled code, shared by the node's engine (which adds the
/// pooling allocator) and the compile worker's.
pub(crate) fn code_config() -> Config {
    let mut wasm = Config::new();
    wasm.epoch_interruption(true)
        .memory_init_cow(true)
        .parallel_compilation(true);
    wasm
}

/// Incremental-cache counts the worker reports.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct WorkerStats {
    pub hits: u64,
    pub inserts: u64,
    pub bytes: u64,
}

/// Compile `bytes` in a worker: the serialized component and the worker's cache counts.
/// Past a limit it is `DeployError::CompileLimit` naming it; a worker that cannot run is the
/// node's fault, `DeployError::Compiler`. What the worker stopped on is read from its exit
/// status and signal, never from its messages, which can quote the component.
pub(crate) fn compile_in_worker(
    command: &CompilerCommand,
    limits: CompileLimits,
    incremental: Option<(&Path, u64)>,
    bytes: &[u8],
) -> Result<(Vec<u8>, WorkerStats), DeployError> {
    let started = Instant::now();
    let wall_deadline = started
        + Duration::from_millis(limits.time_ms_max.saturating_mul(COMPILE_WALL_TIME_FACTOR));
    let mut cmd = Command::new(&command.program);
    cmd.args(&command.args)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some((dir, bytes_max)) = incremental {
        cmd.env(ENV_INCREMENTAL_DIR, dir)
            .env(ENV_INCREMENTAL_BYTES_MAX, bytes_max.to_string());
    }
    let memory = limits.memory_bytes_max;
    // The node kills the worker when it has used its CPU time; the kernel's limit, a second
    // later, holds if the node cannot (it is stopped).
    let cpu_seconds = limits.time_ms_max.div_ceil(1000) + 1;
    // SAFETY: the closure runs in the child between fork and exec and only makes
    // async-signal-safe system calls (setrlimit, prctl), with no allocation.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            set_limit(libc::RLIMIT_DATA, memory)?;
            set_limit(libc::RLIMIT_CPU, cpu_seconds)?;
            set_limit(libc::RLIMIT_CORE, 0)?;
            // Never outlive the node.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        DeployError::Compiler(format!(
            "cannot start the compiler {}: {e}",
            command.program.display()
        ))
    })?;
    // The pipes are served on threads so neither side blocks the other; the input is
    // written on one too (a worker that stops reading cannot hold the node past the deadline).
    let mut stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let (status, stdout, stderr) = std::thread::scope(|scope| {
        scope.spawn(move || {
            let _ = stdin.write_all(bytes);
        });
        // The artifact lives in the worker's memory before it is written: it cannot be larger.
        let out = scope.spawn(move || read_capped(stdout, memory));
        let err = scope.spawn(move || read_capped(stderr, STDERR_BYTES_MAX as u64));
        let status = wait_within(&mut child, limits.time_ms_max, wall_deadline);
        let joined =
            |reader: std::thread::ScopedJoinHandle<'_, Vec<u8>>| reader.join().unwrap_or_default();
        (status, joined(out), joined(err))
    });
    let stderr = String::from_utf8_lossy(&stderr);
    let time_limit = || {
        tracing::warn!(
            ms = limits.time_ms_max,
            "compilation stopped at compile_time_ms_max"
        );
        DeployError::CompileLimit {
            limit: "compile_time_ms_max",
            detail: format!(
                "compiling it took more than {} ms of CPU time",
                limits.time_ms_max
            ),
        }
    };
    let Some(status) = status else {
        return Err(time_limit());
    };
    use std::os::unix::process::ExitStatusExt;
    if status.success() {
        let stats = stderr
            .lines()
            .rev()
            .find_map(|line| line.strip_prefix(STATS_PREFIX))
            .map(parse_stats)
            .unwrap_or_default();
        return Ok((stdout, stats));
    }
    let reason = stderr.trim();
    // Rust aborts when an allocation fails; the worker exits EXIT_MEMORY on an `ENOMEM` error.
    let allocation_failed =
        status.signal() == Some(libc::SIGABRT) && reason.contains("memory allocation of");
    if allocation_failed || status.code() == Some(i32::from(EXIT_MEMORY)) {
        tracing::warn!(
            bytes = memory,
            "compilation stopped at compile_memory_bytes_max"
        );
        return Err(DeployError::CompileLimit {
            limit: "compile_memory_bytes_max",
            detail: format!(
                "compiling it needed more than {} MiB of memory",
                memory / (1024 * 1024)
            ),
        });
    }
    if status.signal() == Some(libc::SIGXCPU) {
        return Err(time_limit());
    }
    if status.code() == Some(i32::from(EXIT_INVALID)) {
        return Err(DeployError::Invalid(reason.to_string()));
    }
    Err(DeployError::Compiler(format!(
        "the compiler {} stopped ({status}) after {} ms: {}",
        command.program.display(),
        started.elapsed().as_millis(),
        if reason.is_empty() {
            "no message"
        } else {
            reason
        }
    )))
}

/// Waits for `child` while it has used less than `cpu_ms_max` of CPU time and the clock is
/// before `wall_deadline`; past either, kills it and returns `None`.
fn wait_within(
    child: &mut Child,
    cpu_ms_max: u64,
    wall_deadline: Instant,
) -> Option<std::process::ExitStatus> {
    // Woken the moment the child exits, so a deploy does not wait out a pause; between
    // wakes, its CPU time is read every CPU_CHECK_PAUSE_MS at most.
    let exit = ExitNotice::open(child.id());
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(_) => break,
        }
        if cpu_ms(child.id()).is_some_and(|used| used >= cpu_ms_max) {
            break;
        }
        let now = Instant::now();
        if now >= wall_deadline {
            break;
        }
        let pause_now = pause.min(wall_deadline - now);
        match &exit {
            Some(exit) => exit.wait(pause_now),
            None => std::thread::sleep(pause_now),
        }
        pause = (pause * 2).min(Duration::from_millis(CPU_CHECK_PAUSE_MS));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Longest pause between two reads of a compiling child's CPU time.
const CPU_CHECK_PAUSE_MS: u64 = 20;

/// A process's exit as a file descriptor that turns readable when it exits (`pidfd_open`,
/// Linux 5.3).
struct ExitNotice(std::os::fd::OwnedFd);

impl ExitNotice {
    /// `None` where the kernel has no pidfds: the caller sleeps instead.
    fn open(pid: u32) -> Option<ExitNotice> {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
        // SAFETY: the descriptor was just created and nothing else owns it.
        Some(ExitNotice(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }))
    }

    /// Returns when the process has exited or `at_most` has passed.
    fn wait(&self, at_most: Duration) {
        use std::os::fd::AsRawFd;
        let mut ready = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout_ms = i32::try_from(at_most.as_millis().max(1)).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut ready, 1, timeout_ms) };
    }
}

/// CPU time process `pid` has used, all its threads together (`/proc/<pid>/stat`: user and
/// system time, in clock ticks).
fn cpu_ms(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ...`: comm may hold spaces and parentheses, so count after the last
    // `)`. utime and stime are fields 14 and 15, the 12th and 13th after it.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf reads a constant of the system.
    let ticks_per_second = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        t if t > 0 => t as u64,
        _ => 100,
    };
    Some((utime + stime) * 1000 / ticks_per_second)
}

fn read_capped(from: impl Read, max: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = from.take(max).read_to_end(&mut out);
    out
}

fn parse_stats(line: &str) -> WorkerStats {
    let mut stats = WorkerStats::default();
    for pair in line.split_whitespace() {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        let value = value.parse().unwrap_or(0);
        match key {
            "hits" => stats.hits = value,
            "inserts" => stats.inserts = value,
            "bytes" => stats.bytes = value,
            _ => {}
        }
    }
    stats
}

fn set_limit(resource: libc::__rlimit_resource_t, value: u64) -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: setrlimit reads the struct we pass and nothing else.
    if unsafe { libc::setrlimit(resource, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The compile worker: the component on stdin, the serialized component on stdout. Run by
/// the `eddy` binary's hidden `compile-worker` subcommand, in a process the node limits.
pub fn worker_main() -> ExitCode {
    match work() {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("{message}");
            ExitCode::from(code)
        }
    }
}

/// An I/O failure of the worker itself (not of the component).
fn worker(what: &'static str) -> impl Fn(std::io::Error) -> (u8, String) {
    move |e| (EXIT_WORKER, format!("{what}: {e}"))
}

/// `EXIT_MEMORY` when `e` comes from memory that could not be had, else `otherwise`.
fn exit_status(e: &wasmtime::Error, otherwise: u8) -> u8 {
    let out_of_memory = e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::OutOfMemory)
            || cause.downcast_ref::<wasmtime::OutOfMemory>().is_some()
    });
    if out_of_memory {
        EXIT_MEMORY
    } else {
        otherwise
    }
}

fn work() -> Result<(), (u8, String)> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .map_err(worker("reading the component"))?;
    let mut config = code_config();
    let incremental = match std::env::var_os(ENV_INCREMENTAL_DIR) {
        Some(dir) => {
            let bytes_max = std::env::var(ENV_INCREMENTAL_BYTES_MAX)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let store = IncrementalStore::open(Path::new(&dir), bytes_max)
                .map_err(worker("opening the incremental cache"))?;
            let store = Arc::new(store);
            config
                .enable_incremental_compilation(store.clone())
                .map_err(|e| (EXIT_WORKER, format!("{e:#}")))?;
            Some(store)
        }
        None => None,
    };
    let engine = Engine::new(&config).map_err(|e| (EXIT_WORKER, format!("{e:#}")))?;
    let component = Component::new(&engine, &bytes)
        .map_err(|e| (exit_status(&e, EXIT_INVALID), format!("{e:#}")))?;
    let artifact = component
        .serialize()
        .map_err(|e| (exit_status(&e, EXIT_WORKER), format!("{e:#}")))?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&artifact)
        .and_then(|()| stdout.flush())
        .map_err(worker("writing the compiled component"))?;
    if let Some(store) = incremental {
        let (hits, inserts) = store.counts();
        eprintln!(
            "{STATS_PREFIX}hits={hits} inserts={inserts} bytes={}",
            store.inserted_bytes()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_notice_wakes_when_the_child_exits() {
        let mut child = Command::new("true").spawn().expect("spawn true");
        let exit = ExitNotice::open(child.id()).expect("this kernel has pidfds");
        let started = Instant::now();
        exit.wait(Duration::from_secs(60));
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "woken by the exit, not the timeout"
        );
        assert!(child.try_wait().expect("try_wait").is_some());
    }

    #[test]
    fn a_process_cpu_time_is_read_from_proc() {
        let me = std::process::id();
        let before = cpu_ms(me).expect("this process's CPU time");
        // Burn CPU until the count moves (a tick is 10 ms); give up after 10 s of wall time.
        let give_up = Instant::now() + Duration::from_secs(10);
        let mut x = 0u64;
        while cpu_ms(me).unwrap() < before + 30 && Instant::now() < give_up {
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
        }
        assert!(cpu_ms(me).unwrap() >= before + 30, "CPU time did not move");
        assert_eq!(cpu_ms(u32::MAX), None, "no such process");
    }

    #[test]
    fn code_compiled_without_the_pool_loads_in_the_pooling_engine() {
        let wat = r#"(component (core module (func (export "f") (result i32) i32.const 7)))"#;
        let bytes = wat::parse_str(wat).unwrap();
        let plain = Engine::new(&code_config()).unwrap();
        let artifact = Component::new(&plain, &bytes).unwrap().serialize().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pooled = crate::engine::node_engine(&crate::limits::RuntimeConfig::new(
            dir.path().to_path_buf(),
        ));
        // SAFETY: the artifact was serialized just above by Wasmtime itself.
        unsafe { Component::deserialize(&pooled, &artifact) }
            .expect("the worker's artifact must load in the node's engine");
    }

    #[test]
    fn stats_lines_parse() {
        assert_eq!(
            parse_stats("hits=3 inserts=4 bytes=5 later=6"),
            WorkerStats {
                hits: 3,
                inserts: 4,
                bytes: 5
            }
        );
        assert_eq!(parse_stats("nonsense"), WorkerStats::default());
    }
}
