//! Containment: a function, a client or a neighbour that misbehaves fails alone and reaches
//! nothing it must not (docs/security.md).

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_request_targets_get_414_and_long_paths_route_like_short_ones() {
    let node = Node::start_with_config("[limits]\nrequest_target_bytes_max = 4096\n");
    node.deploy_ok("hello", "hello-rust", json!({})).await;
    node.deploy_ok("mis", "misbehave", json!({"route": "/mis"}))
        .await;
    // Just under the limit, a path of slashes is routed (to no function) and one under a
    // route reaches its function whole.
    let under = format!("/mis{}/echo", "/".repeat(4096 - 9));
    assert_eq!(under.len(), 4096);
    let reply = node.get(&under).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.body.contains(&under), "{reply:?}");
    let reply = node.get(&"/".repeat(4096)).await;
    reply.assert_refused(404, "no_route");
    // One byte over, in the path or in the query: 414 naming the limit.
    for target in [
        format!("/mis{}/echo", "/".repeat(4096 - 8)),
        format!("/mis/echo?q={}", "a".repeat(4096)),
        "/".repeat(40_000),
    ] {
        let reply = node.get(&target).await;
        reply.assert_refused(414, "request_target_bytes_max");
        assert!(reply.body.contains("4096 bytes"), "{reply:?}");
    }
    assert_unharmed(&node).await;
}

/// Every directory under `dir` is 0700 and every file 0600, with `dir` itself.
fn assert_private(dir: &std::path::Path) -> usize {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{} is {mode:o}", dir.display());
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            files += assert_private(&entry.path());
        } else {
            let mode = meta.permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} is {mode:o}", entry.path().display());
            files += 1;
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_directory_and_every_file_in_it_are_the_owners_only() {
    use std::os::unix::fs::PermissionsExt;
    // A state directory left readable by an older eddy is tightened, files and all.
    let state = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let dir = state.path().join("state");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("eddy.db"), b"").unwrap();
    std::fs::set_permissions(dir.join("eddy.db"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let node = Node::start_in(state.clone(), "");
    node.deploy_ok("hello", "hello-rust", json!({"env": {"API_KEY": "s3cret"}}))
        .await;
    node.deploy_ok("echo", "misbehave", json!({"route": "/echo"}))
        .await;
    assert_eq!(node.get("/hello").await.status, 200);
    let files = assert_private(&dir);
    // eddy.db and queues.db with their -wal and -shm, admin-token, compiled code.
    assert!(files >= 7, "{files} files");
    drop(node);

    // A fresh one: private from the start.
    let node = Node::start();
    node.deploy_ok("hello", "hello-rust", json!({})).await;
    assert_private(&node.state_dir());
}

#[test]
fn a_cache_directory_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let state = tempfile::tempdir().unwrap();
    let cache = state.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .arg("--cache-dir")
        .arg(&cache)
        .arg("--state-dir")
        .arg(state.path().join("state"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{err}");
    assert!(err.contains("writable by its group or by others"), "{err}");
    assert!(err.contains("chmod 700"), "{err}");
}

/// A local HTTP server standing in for a service a function calls; answers `upstream`.
async fn upstream() -> std::net::SocketAddr {
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "upstream" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_reach_neither_the_node_nor_internal_networks_whatever_their_allowlist() {
    let up = upstream().await;
    let node = Node::start();
    node.deploy_ok("any", "misbehave", json!({"allow_outbound": ["*"]}))
        .await;
    let admin = node.admin.port();
    // The control API, a loopback stand-in by address and by name: refused before
    // connecting, with the address and the operator's setting named.
    for (i, (to, address)) in [
        (format!("127.0.0.1:{admin}/_eddy/healthz"), "127.0.0.1"),
        (format!("127.0.0.1:{}/", up.port()), "127.0.0.1"),
        (format!("localhost:{}/", up.port()), ""),
        (format!("[::1]:{}/", up.port()), "::1"),
    ]
    .into_iter()
    .enumerate()
    {
        let reply = node.get(&format!("/any/outgoing?to={to}")).await;
        assert_eq!(
            reply.body, "outgoing refused: ErrorCode::DestinationIpProhibited",
            "{to}"
        );
        let entries = node.wait_logs("any", i + 1).await;
        let log = entries[i]["log"].as_str().unwrap().to_string();
        assert!(log.contains("is a loopback address"), "{to}: {log}");
        assert!(log.contains(address), "{to}: {log}");
        assert!(log.contains("outbound_allow_networks = ["), "{to}: {log}");
    }
    assert_unharmed_or_deploy(&node).await;

    // The operator opens loopback: the stand-in answers, by address and by name; the
    // control API stays closed.
    let node = Node::start_with_config(REACH_LOOPBACK);
    node.deploy_ok("any", "misbehave", json!({"allow_outbound": ["*"]}))
        .await;
    for to in [
        format!("127.0.0.1:{}/", up.port()),
        format!("localhost:{}/", up.port()),
    ] {
        let reply = node.get(&format!("/any/outgoing?to={to}")).await;
        assert_eq!(reply.body, "outgoing ok: 200 upstream", "{to}");
    }
    let admin = node.admin.port();
    for to in [
        format!("127.0.0.1:{admin}/_eddy/healthz"),
        format!("localhost:{admin}/_eddy/healthz"),
    ] {
        let reply = node.get(&format!("/any/outgoing?to={to}")).await;
        assert_eq!(
            reply.body, "outgoing refused: ErrorCode::DestinationIpProhibited",
            "{to}"
        );
    }
    let entries = node.wait_logs("any", 4).await;
    for entry in &entries[2..4] {
        let log = entry["log"].as_str().unwrap();
        assert!(
            log.contains(&format!("127.0.0.1:{admin} is this node's control API")),
            "{log}"
        );
    }
}

/// A node's other functions still answer (deploying one first when there is none).
async fn assert_unharmed_or_deploy(node: &Node) {
    node.deploy_ok("hello", "hello-rust", json!({})).await;
    assert_unharmed(node).await;
}

/// Most the node's peak resident memory may grow while one instance hoards host resources
/// (docs/security.md: about 64 MiB an instance, plus the node's own growth under a test).
const HOARD_RSS_GROWTH_BYTES_MAX: u64 = 192 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_hoarding_host_memory_fails_alone_within_a_bound() {
    let node = Node::start();
    node.deploy_ok("hello", "hello-rust", json!({})).await;
    node.deploy_ok("mis", "misbehave", json!({"memory_bytes_max": 64 << 20}))
        .await;
    assert_unharmed(&node).await;
    let before = node.peak_rss_bytes();
    // Unsent outgoing bodies, each filled as far as check-write allows (Wasmtime's default
    // 1 MiB chunks once made this 2 GiB), and header maps of 56 KiB each.
    for (path, limit) in [
        ("/mis/bodies?n=1000", "resources_per_instance_max"),
        ("/mis/fields?n=2000&kb=56", "resources_per_instance_max"),
        ("/mis/fields?n=1&kb=100", "fields_bytes_max"),
    ] {
        let reply = node.get(path).await;
        reply.assert_refused(500, limit);
        assert!(reply.body.contains(limit), "{reply:?}");
        assert_unharmed(&node).await;
    }
    let grown = node.peak_rss_bytes().saturating_sub(before);
    assert!(
        grown < HOARD_RSS_GROWTH_BYTES_MAX,
        "peak RSS grew by {} MiB",
        grown >> 20
    );
    // Within the limits, the same paths work.
    let reply = node.get("/mis/bodies?n=100").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "100 bodies"));
    let reply = node.get("/mis/fields?n=100&kb=8").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "100 fields"));
    let entries = node.wait_logs("mis", 3).await;
    let outcomes: Vec<&str> = entries[..3]
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["resource_limit", "resource_limit", "fields_limit"]
    );
}

/// A component exporting `wasi:http/incoming-handler` whose handler traps, made of `memories`
/// core modules with a memory of `mib` MiB each, and `instances` extra empty core instances.
fn handler_component(memories: usize, mib: usize, instances: usize) -> Vec<u8> {
    let pages = mib * 16;
    let mut text = String::from(
        r#"(component
  (import "wasi:http/types@0.2.0" (instance $types
    (export "incoming-request" (type (sub resource)))
    (export "response-outparam" (type (sub resource)))))
  (alias export $types "incoming-request" (type $request))
  (alias export $types "response-outparam" (type $out))
  (core module $handler (func (export "handle") (param i32 i32) unreachable))
  (core instance $h (instantiate $handler))
  (core module $empty)
"#,
    );
    for m in 0..memories {
        text += &format!(
            "  (core module $mem{m} (memory {pages}))\n  (core instance (instantiate $mem{m}))\n"
        );
    }
    for _ in 0..instances {
        text += "  (core instance (instantiate $empty))\n";
    }
    text += r#"  (func $handle (param "request" (own $request)) (param "response-out" (own $out))
    (canon lift (core func $h "handle")))
  (instance $exports (export "handle" (func $handle)))
  (export "wasi:http/incoming-handler@0.2.0" (instance $exports)))
"#;
    wat::parse_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_cannot_take_more_than_its_share_of_the_pool_or_of_memory() {
    let node = Node::start();
    node.deploy_ok("hello", "hello-rust", json!({})).await;
    // Within the limits it deploys, and its handler runs (and traps).
    let (status, body) = node
        .deploy("small", handler_component(1, 1, 2), json!({}))
        .await;
    assert_eq!(status, 201, "{body}");
    node.get("/small").await.assert_refused(500, "trap");
    // Many core instances, or many memories: refused before compiling, the limit named.
    for (bytes, limit, declared) in [
        (
            handler_component(1, 1, 40),
            "component_core_instances_max",
            "42 core instances",
        ),
        (
            handler_component(3, 1, 0),
            "component_memories_max",
            "3 linear memories",
        ),
    ] {
        let (status, body) = node.deploy("greedy", bytes, json!({})).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], "component_limit", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(limit) && message.contains(declared),
            "{message}"
        );
    }
    // The memory limit counts all of an instance's memories: two of 40 MiB do not fit in 64.
    let (status, body) = node
        .deploy(
            "twomem",
            handler_component(2, 40, 0),
            json!({"memory_bytes_max": 64 << 20}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let reply = node.get("/twomem").await;
    reply.assert_refused(500, "memory_bytes_max");
    assert_unharmed(&node).await;
}

/// A raw TCP connection to `addr`.
async fn raw(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(addr).await.unwrap()
}

/// What the peer sends until it closes, within `within`; `None` if it is still open then.
async fn read_to_close(
    stream: &mut tokio::net::TcpStream,
    within: std::time::Duration,
) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    match tokio::time::timeout(within, stream.read_to_end(&mut seen)).await {
        Ok(_) => Some(String::from_utf8_lossy(&seen).into_owned()),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_listeners_bound_connections_per_node_and_per_client_and_time_out_silent_ones() {
    use std::time::Duration;
    let node = Node::start_with_config(
        "[limits]\nadmin_connections_max = 2\nconnections_per_ip_max = 3\nheader_read_timeout_ms = 300\n",
    );
    node.deploy_ok("hello", "hello-rust", json!({})).await;
    // A client that opens a connection and says nothing is closed, on both listeners.
    for addr in [node.public, node.admin] {
        let mut silent = raw(addr).await;
        assert!(
            read_to_close(&mut silent, Duration::from_secs(10))
                .await
                .is_some(),
            "{addr} kept a silent connection open"
        );
    }
    // The control API holds admin_connections_max connections, then refuses with 503.
    // (Each held one has been answered once, so the node has taken it in; it is kept
    // alive, and the third comes well within the header read timeout.)
    let held = [
        held_connection(node.admin, "/healthz").await,
        held_connection(node.admin, "/healthz").await,
    ];
    let mut third = raw(node.admin).await;
    let answer = read_to_close(&mut third, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("eddy-error: admin_connections_max"),
        "{answer}"
    );
    drop(held);
    // One client address holds connections_per_ip_max public connections, then gets 503.
    let held = [
        held_connection(node.public, "/_eddy/healthz").await,
        held_connection(node.public, "/_eddy/healthz").await,
        held_connection(node.public, "/_eddy/healthz").await,
    ];
    let mut fourth = raw(node.public).await;
    let answer = read_to_close(&mut fourth, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        answer.contains("eddy-error: connections_per_ip_max"),
        "{answer}"
    );
    assert!(
        answer.contains("127.0.0.1 already has connections_per_ip_max (3)"),
        "{answer}"
    );
    drop(held);
    node.wait_public_connection_slot("connections_per_ip_max")
        .await;
    assert_unharmed(&node).await;

    // Behind a trusted load balancer the per-address cap does not apply.
    let node = Node::start_with_config(
        "trusted_proxies = [\"127.0.0.0/8\"]\n[limits]\nconnections_per_ip_max = 1\n",
    );
    node.deploy_ok("hello", "hello-rust", json!({})).await;
    let _held = raw(node.public).await;
    assert_unharmed(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_at_the_write_timeout() {
    use std::time::{Duration, Instant};
    use tokio::io::AsyncWriteExt;
    let node = Node::start_with_config("[limits]\nwrite_timeout_ms = 500\n");
    node.deploy_ok("mis", "misbehave", json!({"timeout_ms": 120_000}))
        .await;
    let mut client = raw(node.public).await;
    client
        .write_all(b"GET /mis/big?bytes=60000000 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // The client reads nothing: the node gives up on it long before the function's timeout,
    // and the invocation ends (and is recorded).
    let started = Instant::now();
    loop {
        let (status, body) = node
            .api_get("/functions/mis/logs?after=0&wait_ms=1000")
            .await;
        assert_eq!(status, 200, "{body}");
        if !body["entries"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the invocation still runs for a client that reads nothing"
        );
    }
    drop(client);
}

/// `eddy serve` with RLIMIT_NOFILE's hard limit set to `hard`: whether it exited (and how)
/// before it was ready, and what it printed.
fn serve_with_open_files(hard: u64, config: &str) -> (Option<bool>, String) {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    let state = tempfile::tempdir().unwrap();
    let config_path = state.path().join("node.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_eddy"));
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(&config_path)
        .arg("--state-dir")
        .arg(state.path().join("state"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: 256,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    for pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let lines_tx = lines_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
    }
    drop(lines_tx);
    let mut out = String::new();
    // Both pipes close when it exits; "eddy ready" means it serves.
    while let Ok(line) = lines.recv_timeout(std::time::Duration::from_secs(30)) {
        out += &line;
        out += "\n";
        if line.contains("eddy ready") {
            child.kill().unwrap();
            child.wait().unwrap();
            return (None, out);
        }
    }
    let status = child.wait().unwrap();
    (Some(status.success()), out)
}

#[test]
fn connection_caps_are_fitted_to_the_open_file_limit() {
    // Defaults are lowered to fit, and the node says so and serves.
    let (status, out) = serve_with_open_files(4096, "");
    assert_eq!(status, None, "the node stopped: {out}");
    assert!(
        out.contains("limits.websocket_connections_max lowered from 100000 to"),
        "{out}"
    );
    assert!(out.contains("eddy ready"), "{out}");
    // A cap the operator set that cannot hold is refused, naming it.
    let (status, out) = serve_with_open_files(4096, "[limits]\nconnections_max = 5000\n");
    assert_eq!(status, Some(false), "{out}");
    assert!(out.contains("limits.connections_max (5000)"), "{out}");
    assert!(out.contains("RLIMIT_NOFILE"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_forge_node_headers_in_trailers() {
    use tokio::io::AsyncWriteExt;
    let node = Node::start();
    node.deploy_ok("mis", "misbehave", json!({})).await;
    let mut client = raw(node.public).await;
    client
        .write_all(
            b"POST /mis/trailers HTTP/1.1\r\nhost: x\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n\
              5\r\nhello\r\n0\r\neddy-queue: forged\r\nx-mine: kept\r\n\r\n",
        )
        .await
        .unwrap();
    let answer = read_to_close(&mut client, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("x-mine: kept"), "{answer}");
    assert!(!answer.contains("eddy-queue"), "{answer}");
}

/// A component whose one core function keeps `locals` values live through `instructions`
/// steps of arithmetic on them (every one feeds the result, so none is optimised away): under
/// a megabyte on the wire and within every declared count, yet Cranelift's register
/// allocator needs seconds and hundreds of MiB for it (2,000 × 60,000: more than a minute
/// of CPU in a debug build; 64 MiB runs out in under a second).
fn costly_to_compile(locals: usize, instructions: usize) -> Vec<u8> {
    let mut body = String::with_capacity(instructions * 64);
    for l in 1..locals {
        body += &format!("local.get 0 i64.const {l} i64.add local.set {l}\n");
    }
    for i in 0..instructions {
        let (x, y, z) = (
            1 + i % (locals - 1),
            (i * 7 + 3) % locals,
            (i * 13 + 5) % locals,
        );
        body +=
            &format!("local.get {x} local.get {y} i64.mul local.get {z} i64.add local.set {x}\n");
    }
    body += "local.get 0\n";
    for l in 1..locals {
        body += &format!("local.get {l} i64.xor\n");
    }
    let text = format!(
        "(component (core module (func (export \"f\") (param i64) (result i64) (local {}) {body})))",
        "i64 ".repeat(locals - 1)
    );
    wat::parse_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiling_a_hostile_component_is_bounded_in_time_and_memory() {
    let hostile = costly_to_compile(2_000, 60_000);
    for (config, limit) in [
        (
            "[limits]\ncompile_memory_bytes_max = 67108864\n",
            "compile_memory_bytes_max",
        ),
        (
            // Far above what hello needs even on a loaded machine, far below the hostile
            // component's minute.
            "[limits]\ncompile_time_ms_max = 5000\n",
            "compile_time_ms_max",
        ),
    ] {
        let node = Node::start_with_config(config);
        // An ordinary component compiles within the same limits.
        node.deploy_ok("hello", "hello-rust", json!({})).await;
        let rss_before = node.peak_rss_bytes();
        let (status, body) = node.deploy("hostile", hostile.clone(), json!({})).await;
        assert_eq!(status, 422, "{limit}: {body}");
        assert_eq!(body["error"]["code"], "component_limit", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(limit), "{message}");
        // The compiler ran in a process of its own: the node's memory did not grow with it.
        let grown = node.peak_rss_bytes().saturating_sub(rss_before);
        assert!(grown < 64 << 20, "{limit}: the node grew by {grown} bytes");
        // Nothing was deployed or cached for it, and the node serves on.
        let (status, _) = node.api_get("/v1/functions/hostile").await;
        assert_eq!(status, 404);
        let cached: Vec<_> = std::fs::read_dir(node.state_dir().join("cache"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
            .collect();
        assert_eq!(cached.len(), 1, "only hello's compiled code is cached");
        assert_unharmed(&node).await;
        // No compiler is left running.
        let children = children_of(node.pid());
        assert!(
            children.is_empty(),
            "{limit}: the node left {children:?} running"
        );
    }
}

/// `compile_time_ms_max` counts the compiler's CPU time, not the wall clock: a compiler that
/// waits for a core on a busy machine (here: stopped for longer than the whole limit) is not
/// cut off, while one that computes for longer is (the test above).
#[tokio::test(flavor = "multi_thread")]
async fn compile_time_counts_the_compilers_cpu_not_time_spent_waiting_for_a_core() {
    let node = Node::start_with_config("[limits]\ncompile_time_ms_max = 1000\n");
    let pid = node.pid();
    // Stop the compiler as soon as it appears, for longer than the limit, then let it go on.
    let freezer = std::thread::spawn(move || {
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < give_up {
            if let Some(&worker) = children_of(pid).first() {
                // SAFETY: signals to a process this node started and still waits for.
                unsafe { libc::kill(worker as i32, libc::SIGSTOP) };
                // Not synchronisation: the stopped time is what is under test.
                std::thread::sleep(std::time::Duration::from_millis(2500));
                unsafe { libc::kill(worker as i32, libc::SIGCONT) };
                return true;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        false
    });
    let (status, body) = node
        .deploy("hello", guest_bytes("hello-rust"), json!({}))
        .await;
    assert!(
        freezer.join().unwrap(),
        "the compiler was never seen running"
    );
    assert_eq!(status, 201, "{body}");
    assert_unharmed(&node).await;
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            // `pid (comm) state ppid ...`; comm may hold spaces, so split after its `)`.
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = stat.rsplit_once(')')?.1.to_string();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}
