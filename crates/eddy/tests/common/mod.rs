//! Test harness: runs the real `eddy` binary on loopback with its own state directory and
//! drives it over HTTP and through the CLI.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod postgres;

/// Node config (top-level keys) letting functions reach this machine's loopback stand-ins:
/// the operator's opening, which no deployer's allowlist can give (docs/security.md).
pub const REACH_LOOPBACK: &str = "outbound_allow_networks = [\"127.0.0.0/8\"]\n";

/// Node config (top-level keys) for the tests that build and deploy Python and JavaScript
/// functions: with `EDDY_TEST_COMPILE_CACHE` set (scripts/test sets it to a directory of its
/// own for the run), their nodes share that compile cache, so the functions of the
/// interpreter that every such component carries come from Cranelift's incremental cache
/// after the first, as they do on one node deploying many functions. Unset: each node has
/// its own cache, in its state directory.
pub fn shared_compile_cache() -> String {
    match std::env::var("EDDY_TEST_COMPILE_CACHE") {
        Ok(dir) => format!("cache_dir = {}\n", serde_json::to_string(&dir).unwrap()),
        Err(_) => String::new(),
    }
}

/// How long a node gets to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a test waits for something the node does promptly (metering an invocation,
/// taking a request in, applying a state change, writing a log line): generous, so a loaded
/// machine slows a test down instead of failing it.
pub const PROMPTLY: Duration = Duration::from_secs(15);

/// How often `wait_for` looks again: short beside what the tests wait for, long enough not
/// to load the node with polling.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A running `eddy serve` process, killed (by PID) when dropped.
pub struct Node {
    child: Option<Child>,
    pub state: Arc<tempfile::TempDir>,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    /// The node's `eddy ready` log line, parsed.
    pub ready: Value,
    pub token: String,
    output: Arc<Mutex<Vec<String>>>,
    pub http: reqwest::Client,
}

/// Path of a guest built by `scripts/build-guests`.
pub fn guest(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/guests")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-guests (scripts/test does)",
        path.display()
    );
    path
}

/// The CLI, run from `dir` with the guest toolchains `scripts/build-guests` installs on its
/// PATH (componentize-py under target/tools/bin) and Rust guests built in the target
/// directory it uses (target/guest-build: std for wasm32-wasip2 and the `wasi` crate are
/// built once).
pub fn eddy_in(dir: &Path) -> Command {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    let mut paths = vec![root.join("tools/bin")];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    let mut command = Command::new(env!("CARGO_BIN_EXE_eddy"));
    command
        .current_dir(dir)
        .env("PATH", std::env::join_paths(paths).unwrap())
        .env("CARGO_TARGET_DIR", root.join("guest-build"));
    command
}

/// Bytes of a guest.
pub fn guest_bytes(name: &str) -> Vec<u8> {
    std::fs::read(guest(name)).unwrap()
}

impl Node {
    /// A node with default limits.
    pub fn start() -> Node {
        Node::start_with_config("")
    }

    /// A node with the given `--config` TOML.
    pub fn start_with_config(config_toml: &str) -> Node {
        let state = Arc::new(tempfile::tempdir().unwrap());
        Node::start_in(state, config_toml)
    }

    /// A node on an existing state directory (for restarts).
    pub fn start_in(state: Arc<tempfile::TempDir>, config_toml: &str) -> Node {
        let config = state.path().join("node.toml");
        std::fs::write(&config, config_toml).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_eddy"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--config",
            ])
            .arg(&config)
            .arg("--state-dir")
            .arg(state.path().join("state"))
            .env("EDDY_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting eddy serve");
        let output = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let lines = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // Kept before readiness is reported, so `output()` always holds the ready line.
                lines.lock().unwrap().push(line.clone());
                if line.contains("\"eddy ready\"") {
                    let _ = ready_tx.send(line);
                }
            }
        });
        let stderr = child.stderr.take().unwrap();
        let lines = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let ready = match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "eddy did not become ready:\n{}",
                    output.lock().unwrap().join("\n")
                );
            }
        };
        let ready: Value = serde_json::from_str(&ready).unwrap();
        // A node of a cluster that did not create the cluster's token has no file: the
        // test sets `token` itself.
        let token = std::fs::read_to_string(state.path().join("state/admin-token"))
            .map(|token| token.trim().to_string())
            .unwrap_or_default();
        Node {
            child: Some(child),
            public: ready["public"].as_str().unwrap().parse().unwrap(),
            admin: ready["admin"].as_str().unwrap().parse().unwrap(),
            ready,
            state,
            token,
            output,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
        }
    }

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node stopped").id()
    }

    /// The node's resident memory now, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        self.proc_status_bytes("VmRSS:")
    }

    /// The most resident memory the node has had so far, in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        self.proc_status_bytes("VmHWM:")
    }

    fn proc_status_bytes(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib * 1024
    }

    pub fn state_dir(&self) -> PathBuf {
        self.state.path().join("state")
    }

    /// Everything the node printed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.public, path)
    }

    pub fn api_url(&self, path: &str) -> String {
        format!("http://{}/v1{}", self.admin, path)
    }

    /// GET on the public listener: status, headers, body text.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.http.get(self.url(path))).await
    }

    /// Send a request built on `self.http` and read the reply.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        Reply::from(request.send().await.unwrap()).await
    }

    /// An authenticated control-API GET.
    pub async fn api_get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(self.api_url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        json_reply(response).await
    }

    /// The Prometheus text of `/metrics` (admin listener, with the token).
    pub async fn metrics(&self) -> String {
        let response = self
            .http
            .get(format!("http://{}/metrics", self.admin))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// Deploy `bytes` as `name` with a JSON config through the control API.
    pub async fn deploy(&self, name: &str, bytes: Vec<u8>, config: Value) -> (u16, Value) {
        let form = reqwest::multipart::Form::new()
            .part("config", reqwest::multipart::Part::text(config.to_string()))
            .part("component", reqwest::multipart::Part::bytes(bytes));
        let response = self
            .http
            .post(self.api_url(&format!("/functions/{name}/versions")))
            .bearer_auth(&self.token)
            .multipart(form)
            .send()
            .await
            .unwrap();
        json_reply(response).await
    }

    /// Make a token with the request `body` (`POST /v1/tokens`, as the admin) and return it.
    pub async fn create_token(&self, body: Value) -> String {
        let response = self
            .http
            .post(self.api_url("/tokens"))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap();
        assert_eq!(status, 201, "{answer}");
        answer["token"].as_str().unwrap().to_owned()
    }

    /// Deploy and insist it worked.
    pub async fn deploy_ok(&self, name: &str, guest_name: &str, config: Value) -> Value {
        let (status, body) = self.deploy(name, guest_bytes(guest_name), config).await;
        assert_eq!(
            status,
            201,
            "deploy of {name} failed: {body}\n{}",
            self.output()
        );
        body
    }

    /// Run the CLI against this node.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_in(Path::new("."), args)
    }

    /// Run the CLI against this node from `dir`.
    pub fn cli_in(&self, dir: &Path, args: &[&str]) -> Output {
        eddy_in(dir)
            .args(args)
            .env("EDDY_SERVER", format!("http://{}", self.admin))
            .env("EDDY_STATE_DIR", self.state_dir())
            .env_remove("EDDY_TOKEN")
            .output()
            .unwrap()
    }

    /// The control API's stats of `function` (`/functions/{function}/stats`).
    pub async fn stats(&self, function: &str) -> Value {
        let (status, body) = self.api_get(&format!("/functions/{function}/stats")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Poll `function`'s stats until `done` holds (`what` says what is awaited, for the
    /// failure message), within `PROMPTLY`; the stats that satisfied it.
    pub async fn stats_when(
        &self,
        function: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_for(
            &format!("{what} (stats of {function})"),
            PROMPTLY,
            async || {
                let stats = self.stats(function).await;
                if done(&stats) { Ok(stats) } else { Err(stats) }
            },
        )
        .await
    }

    /// Wait until the public listener takes a new connection again, after a test dropped
    /// the connections that held its slots: a request is answered other than with the 503
    /// of the connection cap `limit` (the node frees a slot once it has seen the close).
    pub async fn wait_public_connection_slot(&self, limit: &str) {
        wait_until(
            &format!("the node to free a slot under {limit} on the public listener"),
            PROMPTLY,
            async || match self.http.get(self.url("/_eddy/healthz")).send().await {
                Ok(response) => {
                    let refused = response
                        .headers()
                        .get("eddy-error")
                        .is_some_and(|v| v.as_bytes() == limit.as_bytes());
                    !(response.status() == 503 && refused)
                }
                // Closed before the answer was read: still refused.
                Err(_) => false,
            },
        )
        .await;
    }

    /// Wait for at least `count` invocation records of `function` and return them.
    pub async fn wait_logs(&self, function: &str, count: usize) -> Vec<Value> {
        let mut entries: Vec<Value> = Vec::new();
        let mut after = 0;
        for _ in 0..60 {
            let (status, body) = self
                .api_get(&format!(
                    "/functions/{function}/logs?after={after}&wait_ms=1000"
                ))
                .await;
            assert_eq!(status, 200, "{body}");
            entries.extend(body["entries"].as_array().unwrap().iter().cloned());
            after = body["last_id"].as_i64().unwrap();
            if entries.len() >= count {
                return entries;
            }
        }
        panic!(
            "only {} of {count} invocation records of {function} arrived: {entries:?}",
            entries.len()
        );
    }

    /// SIGTERM, then wait for the process to exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let mut child = self.child.take().expect("node already stopped");
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().unwrap();
        status.success()
    }

    /// SIGKILL (no chance to clean up, as in a crash), then reap the process.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("node already stopped");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Send SIGTERM without waiting.
    pub fn signal_terminate(&self) {
        let child = self.child.as_ref().expect("node already stopped");
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    }

    /// Wait for the process to exit.
    pub fn wait_exit(&mut self) -> bool {
        self.child
            .take()
            .expect("node already stopped")
            .wait()
            .unwrap()
            .success()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A public-listener response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    /// The header `name`, if the response has it (as text).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Insist the node refused the request with `status` and `eddy-error: error`.
    #[track_caller]
    pub fn assert_refused(&self, status: u16, error: &str) {
        assert_eq!(
            (self.status, self.header("eddy-error")),
            (status, Some(error)),
            "{self:?}"
        );
        assert!(!self.body.is_empty(), "the node must say why: {self:?}");
    }

    pub async fn from(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .text()
            .await
            .unwrap_or_else(|e| format!("<body error: {e}>"));
        Reply {
            status,
            headers,
            body,
        }
    }
}

async fn json_reply(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// Insist a control-API reply is the error `status` and its message mentions `message_part`.
#[track_caller]
pub fn assert_api_error(status: u16, body: &Value, expected_status: u16, message_part: &str) {
    assert_eq!(status, expected_status, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(message_part), "{body}");
}

/// stdout of a CLI run, insisting it succeeded.
pub fn stdout_ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "eddy failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// stderr of a CLI run, insisting it failed.
pub fn stderr_err(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "eddy should have failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A WebSocket client connected to the node.
pub type WsClient =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next data or close message on `client`, within 10 s (pings and pongs skipped).
pub async fn ws_next(client: &mut WsClient) -> tokio_tungstenite::tungstenite::Message {
    ws_expect(client, "message").await
}

/// `ws_next`, saying `what` was awaited when it does not come.
pub async fn ws_expect(
    client: &mut WsClient,
    what: &str,
) -> tokio_tungstenite::tungstenite::Message {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), client.next())
            .await
            .unwrap_or_else(|_| panic!("no {what} arrived within 10 s"))
            .expect("the connection ended")
            .expect("a WebSocket error");
        if !matches!(message, Message::Ping(_) | Message::Pong(_)) {
            return message;
        }
    }
}

/// The node still serves `hello` (hello-rust, deployed by the test): another function's
/// misbehaviour did not reach it.
pub async fn assert_unharmed(node: &Node) {
    let reply = node.get("/hello").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "Hello from eddy!\n"),
        "{}",
        node.output()
    );
}

/// Poll `check` every `POLL_INTERVAL` until it returns `Ok`, and return that value; after
/// `within`, fail saying `what` was awaited and what the last look saw (the `Err`).
pub async fn wait_for<T, E: std::fmt::Display>(
    what: &str,
    within: Duration,
    mut check: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(seen) => assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting for {what}; last seen: {seen}"
            ),
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// `wait_for` a condition that has nothing to report.
pub async fn wait_until(what: &str, within: Duration, mut done: impl AsyncFnMut() -> bool) {
    wait_for(what, within, async || {
        if done().await { Ok(()) } else { Err("not yet") }
    })
    .await
}

/// A connection to `addr` that the node has accepted and holds: one keep-alive `GET path`
/// was answered 200 on it, which a bare connect cannot show (it only reaches the kernel's
/// accept queue). The connection stays open after the answer.
pub async fn held_connection(addr: SocketAddr, path: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut seen = Vec::new();
    let answered = tokio::time::timeout(PROMPTLY, async {
        let mut chunk = [0u8; 4096];
        while !is_whole_response(&seen) {
            let n = stream.read(&mut chunk).await.unwrap();
            if n == 0 {
                return false;
            }
            seen.extend_from_slice(&chunk[..n]);
        }
        true
    })
    .await;
    let text = String::from_utf8_lossy(&seen);
    assert!(
        matches!(answered, Ok(true)) && text.starts_with("HTTP/1.1 200"),
        "{addr} did not answer GET {path} on a held connection: {text}"
    );
    stream
}

/// Whether `bytes` hold a whole HTTP/1.1 response (its body sized by `content-length` or
/// chunked).
fn is_whole_response(bytes: &[u8]) -> bool {
    let Some(head_end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_ascii_lowercase();
    if head.contains("\r\ntransfer-encoding: chunked") {
        return bytes.ends_with(b"\r\n0\r\n\r\n");
    }
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    bytes.len() >= head_end + 4 + length
}

/// A webhook receiver on loopback that keeps what it was sent to `/alerts`: its port, and
/// the JSON bodies received.
pub async fn webhook_receiver() -> (u16, Arc<Mutex<Vec<Value>>>) {
    use axum::extract::State;
    use axum::routing::post;
    let got = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route(
            "/alerts",
            post(
                |State(got): State<Arc<Mutex<Vec<Value>>>>, body: String| async move {
                    got.lock()
                        .unwrap()
                        .push(serde_json::from_str(&body).unwrap());
                    "ok"
                },
            ),
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, got)
}

/// Unix milliseconds of an RFC 3339 UTC time with milliseconds, as the node writes it.
pub fn unix_ms(rfc3339: &str) -> i64 {
    let (date, time) = rfc3339.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, millis) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) * 1000) + millis.parse::<i64>().unwrap()
}

/// The wall clock in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
