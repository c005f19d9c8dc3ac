//! Several `eddy serve` processes sharing one Postgres store: a change made through any
//! node is served by every node, and the admin token is the cluster's. Each test has a
//! schema of its own in the database `EDDY_TEST_POSTGRES_URL` names (by default the local
//! `test` database), dropped when it ends.

mod common;

use std::time::Duration;

use common::postgres::{Schema, run_sql, url};
use common::{Node, wait_for};
use serde_json::json;

/// How long a change may take to reach another node before the test fails: far above the
/// notification's usual milliseconds, and below the poll interval the tests set, so only
/// a notification can meet it.
const PROPAGATION_WITHIN: Duration = Duration::from_secs(20);

/// `count` nodes on `config`, the first one's token given to the others (the cluster's).
fn start_nodes(config: &str, count: usize) -> Vec<Node> {
    let mut nodes = vec![Node::start_with_config(config)];
    for _ in 1..count {
        let mut node = Node::start_with_config(config);
        node.token = nodes[0].token.clone();
        nodes.push(node);
    }
    nodes
}

async fn status(node: &Node, path: &str) -> Result<String, String> {
    let reply = node.get(path).await;
    let seen = format!("{} {}", reply.status, reply.body.trim());
    if reply.status == 200 {
        Ok(seen)
    } else {
        Err(seen)
    }
}

#[tokio::test]
async fn a_change_through_any_node_is_served_by_every_node() {
    let schema = Schema::new("changes");
    let a = Node::start_with_config(&schema.config(""));
    let mut b = Node::start_with_config(&schema.config(""));
    // The first node created the cluster's token; the second took it and wrote none.
    assert!(
        !b.state_dir().join("admin-token").exists(),
        "the second node wrote a token of its own"
    );
    b.token = a.token.clone();
    let (code, _) = b.api_get("/functions").await;
    assert_eq!(code, 200, "the second node refused the cluster's token");

    a.deploy_ok("hello", "hello-rust", json!({})).await;
    let served = wait_for("node B to serve hello", PROPAGATION_WITHIN, async || {
        status(&b, "/hello").await
    })
    .await;
    assert!(served.contains("Hello"), "{served}");

    // A second version through B, with another greeting: A serves it.
    b.deploy_ok("hello", "hello-rust", json!({"env": {"GREETING": "Hi"}}))
        .await;
    wait_for(
        "node A to serve version 2",
        PROPAGATION_WITHIN,
        async || match status(&a, "/hello").await {
            Ok(text) if text.contains("Hi") => Ok(text),
            Ok(text) | Err(text) => Err(text),
        },
    )
    .await;

    // A rollback through A: B serves version 1 again.
    let output = a.cli(&["rollback", "hello"]);
    assert!(output.status.success(), "{output:?}");
    wait_for(
        "node B to serve version 1 again",
        PROPAGATION_WITHIN,
        async || match status(&b, "/hello").await {
            Ok(text) if text.contains("Hello") => Ok(text),
            Ok(text) | Err(text) => Err(text),
        },
    )
    .await;

    // A removal through B: A stops serving it.
    let removed = b
        .http
        .delete(b.api_url("/functions/hello"))
        .bearer_auth(&b.token)
        .send()
        .await
        .unwrap();
    assert!(removed.status().is_success(), "{}", removed.status());
    wait_for(
        "node A to stop serving hello",
        PROPAGATION_WITHIN,
        async || match a.get("/hello").await.status {
            404 => Ok(()),
            other => Err(other),
        },
    )
    .await;
}

#[tokio::test]
async fn a_node_that_starts_serves_what_the_cluster_holds() {
    let schema = Schema::new("starts");
    let a = Node::start_with_config(&schema.config(""));
    a.deploy_ok("hello", "hello-rust", json!({})).await;
    let mut b = Node::start_with_config(&schema.config(""));
    b.token = a.token.clone();
    let reply = b.get("/hello").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let (code, body) = b.api_get("/functions").await;
    assert_eq!(code, 200);
    assert_eq!(body["functions"][0]["name"], "hello", "{body}");
}

#[tokio::test]
async fn the_operators_token_is_the_clusters_and_no_node_writes_one() {
    let schema = Schema::new("given");
    let dir = tempfile::tempdir().unwrap();
    let token = "operator-token-0123456789abcdef0123456789";
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let extra = format!("admin_token_file = \"{}\"", file.display());
    for _ in 0..2 {
        let mut node = Node::start_with_config(&schema.config(&extra));
        assert!(!node.state_dir().join("admin-token").exists());
        node.token = token.to_owned();
        let (code, _) = node.api_get("/functions").await;
        assert_eq!(code, 200);
        node.token = "wrong".to_owned();
        let (code, _) = node.api_get("/functions").await;
        assert_eq!(code, 401);
    }
    // A guessable token is refused before the node starts.
    std::fs::write(&file, "short\n").unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, schema.config(&extra)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "eddy serve took a 5-byte token");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is 5 bytes; use at least 32"), "{err}");
}

/// Notifications are hints: a change no notification announced (here made in the database
/// directly, as if the notification were lost) is served once the poll finds it.
#[tokio::test]
async fn a_change_no_notification_announced_is_found_by_polling() {
    let schema = Schema::new("polling");
    let a = Node::start_with_config(&schema.config_polling("", 300));
    a.deploy_ok("hello", "hello-rust", json!({})).await;
    a.deploy_ok("hello", "hello-rust", json!({"env": {"GREETING": "Hi"}}))
        .await;
    let text = status(&a, "/hello").await.unwrap();
    assert!(text.contains("Hi"), "{text}");
    // Version 1 made live behind every node's back, generation raised, nothing notified.
    run_sql(&format!(
        "UPDATE {s}.functions SET live_version = 1 WHERE name = 'hello';
         UPDATE {s}.meta SET value = (value::BIGINT + 1)::TEXT WHERE key = 'functions_generation';",
        s = schema.0
    ));
    wait_for(
        "node A to find version 1 by polling",
        PROPAGATION_WITHIN,
        async || match status(&a, "/hello").await {
            Ok(text) if text.contains("Hello") => Ok(text),
            Ok(text) | Err(text) => Err(text),
        },
    )
    .await;
}

/// A store that accepts connections and never answers stops the node at start, within
/// `limits.store_connect_timeout_ms`, and the error names that limit.
#[test]
fn a_store_that_never_answers_stops_the_node_naming_the_limit() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"postgres://postgres@127.0.0.1:{port}/test\"\n\
             [limits]\nstore_connect_timeout_ms = 300\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "eddy serve started without a store");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("limits.store_connect_timeout_ms = 300 ms"),
        "{err}"
    );
    drop(silent);
}

/// An authenticated control-API call with a JSON body.
async fn api(node: &Node, method: reqwest::Method, path: &str, body: serde_json::Value) -> u16 {
    let response = node
        .http
        .request(method, node.api_url(path))
        .bearer_auth(&node.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    response.status().as_u16()
}

/// A consumer bound through one node runs on the others too: with the node it was bound
/// through stopped, another consumes what is published through it.
#[tokio::test]
async fn a_consumer_bound_through_one_node_consumes_on_the_others() {
    const MESSAGES: usize = 20;
    let schema = Schema::new("consumers");
    let mut a = Node::start_with_config(&schema.config(""));
    let mut b = Node::start_with_config(&schema.config(""));
    b.token = a.token.clone();
    a.deploy_ok("worker", "hello-rust", json!({})).await;
    use reqwest::Method;
    assert_eq!(
        api(&a, Method::POST, "/queues", json!({"name": "jobs"})).await,
        201
    );
    let bound = api(
        &a,
        Method::PUT,
        "/queues/jobs/consumer",
        json!({"function": "worker", "max_attempts": 3}),
    )
    .await;
    assert_eq!(bound, 200);
    // B hears of the binding (and the function) before A goes.
    wait_for(
        "node B to serve the worker",
        PROPAGATION_WITHIN,
        async || status(&b, "/worker").await,
    )
    .await;
    assert!(a.terminate(), "node A did not stop cleanly");
    let messages: Vec<_> = (0..MESSAGES)
        .map(|i| json!({"data": format!("m{i}")}))
        .collect();
    let published = api(
        &b,
        Method::POST,
        "/queues/jobs/batch",
        json!({"messages": messages}),
    )
    .await;
    assert_eq!(published, 202);
    wait_for(
        "node B to consume every message",
        PROPAGATION_WITHIN,
        async || {
            let (code, stats) = b.api_get("/queues/jobs").await;
            match (code, stats["succeeded"].as_u64()) {
                (200, Some(n)) if n == MESSAGES as u64 => Ok(()),
                _ => Err(format!("{code} {stats}")),
            }
        },
    )
    .await;
}

/// A private Postgres for one test (`scripts/postgres`), stopped when dropped.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    url: String,
}

impl PrivatePostgres {
    fn start() -> PrivatePostgres {
        let dir = tempfile::tempdir().unwrap();
        let out = postgres_script("start", dir.path(), true);
        PrivatePostgres {
            url: String::from_utf8(out).unwrap().trim().to_owned(),
            dir,
        }
    }

    fn stop(&self) {
        postgres_script("stop", self.dir.path(), false);
    }

    fn resume(&self) {
        postgres_script("resume", self.dir.path(), false);
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn postgres_script(action: &str, dir: &std::path::Path, private: bool) -> Vec<u8> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/postgres");
    let mut command = std::process::Command::new(script);
    command
        .arg(action)
        .arg(dir)
        .env_remove("EDDY_TEST_POSTGRES_URL");
    if private {
        command.env("EDDY_TEST_POSTGRES_PRIVATE", "1");
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "scripts/postgres {action}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

async fn health(node: &Node) -> (u16, String) {
    let response = node
        .http
        .get(format!("http://{}/healthz", node.admin))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Postgres restarting under a node: it keeps serving what it holds and stays healthy
/// (a database blip must not drain it), says the store is unreachable in its health body,
/// its metrics and its log, and works on once the database is back, without a restart.
#[tokio::test]
async fn a_node_serves_through_a_postgres_restart_and_recovers_by_itself() {
    let postgres = PrivatePostgres::start();
    let config = format!(
        "store = \"{}\"\n[limits]\nstore_poll_interval_ms = 200\nstore_connect_timeout_ms = 1000\n",
        postgres.url
    );
    let node = Node::start_with_config(&config);
    node.deploy_ok("hello", "hello-rust", json!({})).await;
    assert_eq!(health(&node).await, (200, "ok\n".to_owned()));

    postgres.stop();
    let (code, body) = wait_for(
        "the node to notice the store is gone",
        PROPAGATION_WITHIN,
        async || match health(&node).await {
            (code, body) if body.contains("store: unreachable") => Ok((code, body)),
            seen => Err(format!("{seen:?}")),
        },
    )
    .await;
    assert_eq!(code, 200, "a store outage made the node unhealthy: {body}");
    for _ in 0..5 {
        let reply = node.get("/hello").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    assert!(node.metrics().await.contains("eddy_store_reachable 0"));
    assert!(
        node.output().contains("the store is unreachable"),
        "{}",
        node.output()
    );

    postgres.resume();
    wait_for(
        "the node to reach the store again",
        PROPAGATION_WITHIN,
        async || match health(&node).await {
            (200, body) if body == "ok\n" => Ok(()),
            seen => Err(format!("{seen:?}")),
        },
    )
    .await;
    assert!(node.metrics().await.contains("eddy_store_reachable 1"));
    // Writes work again on the same node: a new version is deployed and served.
    node.deploy_ok("hello", "hello-rust", json!({"env": {"GREETING": "Back"}}))
        .await;
    let text = status(&node, "/hello").await.unwrap();
    assert!(text.contains("Back"), "{text}");
}

/// The compile-cache counters of a node: (loaded from the cache, compiled).
async fn compiles(node: &Node) -> (u64, u64) {
    let (code, info) = node.api_get("/node").await;
    assert_eq!(code, 200, "{info}");
    let cache = &info["compile_cache"];
    (
        cache["hits"].as_u64().unwrap(),
        cache["misses"].as_u64().unwrap(),
    )
}

/// Compile once per cluster: a node of the same CPU class loads the artifact another node
/// compiled, after checking its MAC under the cluster's key. A node with another key, or an
/// artifact changed in the database, is not trusted: that node compiles for itself.
#[tokio::test]
async fn a_component_compiles_once_per_cluster_and_a_forged_artifact_is_not_loaded() {
    let schema = Schema::new("artifacts");
    let dir = tempfile::tempdir().unwrap();
    let key = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        format!("artifact_key_file = \"{}\"", path.display())
    };
    let cluster_key = key("cluster", "the-cluster-artifact-key-0123456789abcdef");
    let a = Node::start_with_config(&schema.config(&cluster_key));
    let mut b = Node::start_with_config(&schema.config(&cluster_key));
    b.token = a.token.clone();
    a.deploy_ok("hello", "hello-rust", json!({})).await;
    assert_eq!(compiles(&a).await, (0, 1));
    assert!(
        a.output()
            .contains("shared the compiled artifact with the cluster"),
        "{}",
        a.output()
    );
    wait_for("node B to serve hello", PROPAGATION_WITHIN, async || {
        status(&b, "/hello").await
    })
    .await;
    assert_eq!(
        compiles(&b).await,
        (1, 0),
        "node B compiled instead of loading"
    );

    // A node whose key differs does not trust the artifact: it compiles, and serves.
    let other_key = key("other", "another-key-that-is-long-enough-0123456789");
    let mut c = Node::start_with_config(&schema.config(&other_key));
    c.token = a.token.clone();
    assert_eq!(status(&c, "/hello").await.map(|_| ()), Ok(()));
    assert_eq!(
        compiles(&c).await,
        (0, 1),
        "node C loaded an artifact it cannot verify"
    );
    assert!(c.output().contains("does not verify"), "{}", c.output());

    // An artifact changed in the database (the key's owner did not make it) is not loaded
    // either: node D compiles.
    run_sql(&format!(
        "UPDATE {}.artifacts SET bytes = bytes || '\\x00'::bytea",
        schema.0
    ));
    let mut d = Node::start_with_config(&schema.config(&cluster_key));
    d.token = a.token.clone();
    assert_eq!(status(&d, "/hello").await.map(|_| ()), Ok(()));
    assert_eq!(
        compiles(&d).await,
        (0, 1),
        "node D loaded a changed artifact"
    );
    assert!(d.output().contains("does not verify"), "{}", d.output());
}

/// `eddy nodes` lists every node of the cluster with its state; a node that shut down
/// says so in its last heartbeat.
#[tokio::test]
async fn eddy_nodes_lists_the_cluster_and_the_nodes_that_stopped() {
    let schema = Schema::new("members");
    let a = Node::start_with_config(&schema.config("node_name = \"node-a\""));
    let mut b = Node::start_with_config(&schema.config("node_name = \"node-b\""));
    let listed = |node: &Node| {
        let out = node.cli(&["nodes", "--json"]);
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["name"].as_str().unwrap().to_owned(),
                    n["state"].as_str().unwrap().to_owned(),
                    n["this"].as_bool().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    wait_for(
        "both nodes to be listed",
        PROPAGATION_WITHIN,
        async || match listed(&a) {
            seen if seen.len() == 2 => Ok(seen),
            seen => Err(format!("{seen:?}")),
        },
    )
    .await;
    assert_eq!(
        listed(&a),
        [
            ("node-a".to_owned(), "live".to_owned(), true),
            ("node-b".to_owned(), "live".to_owned(), false)
        ]
    );
    assert!(b.terminate(), "node B did not stop cleanly");
    assert_eq!(
        listed(&a)[1],
        ("node-b".to_owned(), "stopped".to_owned(), false)
    );
    let table = a.cli(&["nodes"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("node-a *") && text.contains("stopped"),
        "{text}"
    );
}

/// `eddy store copy` moves a single node's state into Postgres: a node started on that store
/// serves the same functions and accepts the same admin token.
#[tokio::test]
async fn a_single_nodes_state_copies_into_postgres_and_serves_from_there() {
    let schema = Schema::new("copy");
    let mut single = Node::start();
    single
        .deploy_ok("hello", "hello-rust", json!({"env": {"GREETING": "Moved"}}))
        .await;
    let state = single.state.clone();
    assert!(single.terminate(), "the single node did not stop cleanly");
    let out = common::eddy_in(std::path::Path::new("."))
        .args(["store", "copy", "--to", &url(), "--schema", &schema.0])
        .env("EDDY_STATE_DIR", state.path().join("state"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("copied 1 functions (1 versions)"), "{said}");
    assert!(
        said.contains("the admin token is now the cluster's"),
        "{said}"
    );
    // A node of the cluster, on the same state directory: its token file still works.
    let clustered = Node::start_in(state, &schema.config(""));
    let text = status(&clustered, "/hello").await.unwrap();
    assert!(text.contains("Moved"), "{text}");
    let (code, _) = clustered.api_get("/functions").await;
    assert_eq!(code, 200);
    // A second copy into the same store is refused: it is not empty any more.
    let again = common::eddy_in(std::path::Path::new("."))
        .args(["store", "copy", "--to", &url(), "--schema", &schema.0])
        .env("EDDY_STATE_DIR", clustered.state_dir())
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("copy into an empty one"),
        "{again:?}"
    );
}

/// A WebSocket client held by node A hears a broadcast sent through node C; a client on C
/// hears it too, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_through_one_node_reaches_clients_held_by_another() {
    use tokio_tungstenite::tungstenite::Message;
    let schema = Schema::new("sockets");
    let a = Node::start_with_config(&schema.config(""));
    let mut c = Node::start_with_config(&schema.config(""));
    c.token = a.token.clone();
    a.deploy_ok("chat", "misbehave", json!({"websocket": true}))
        .await;
    wait_for("node C to serve chat", PROPAGATION_WITHIN, async || match c
        .get("/chat/sleep?ms=1")
        .await
        .status
    {
        200 => Ok(()),
        other => Err(other),
    })
    .await;
    let connect = async |node: &Node| {
        let url = format!("ws://{}/chat/ws?channels=room", node.public);
        let (client, _) = tokio_tungstenite::connect_async(&url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        client
    };
    let mut on_a = connect(&a).await;
    let mut on_c = connect(&c).await;
    let broadcast = async |node: &Node, text: &'static str| {
        let sent = node
            .http
            .post(node.api_url("/functions/chat/websockets/channels/room/messages"))
            .bearer_auth(&node.token)
            .body(text)
            .send()
            .await
            .unwrap();
        assert!(sent.status().is_success(), "{}", sent.status());
    };
    broadcast(&c, "across the cluster").await;
    assert_eq!(
        common::ws_next(&mut on_a).await,
        Message::text("across the cluster")
    );
    assert_eq!(
        common::ws_next(&mut on_c).await,
        Message::text("across the cluster")
    );
    // And the other way.
    broadcast(&a, "back again").await;
    assert_eq!(
        common::ws_next(&mut on_c).await,
        Message::text("back again")
    );
    assert_eq!(
        common::ws_next(&mut on_a).await,
        Message::text("back again")
    );
    // Each heard each broadcast once: the next message is the next broadcast, not a copy.
    broadcast(&c, "third").await;
    assert_eq!(common::ws_next(&mut on_a).await, Message::text("third"));
    assert_eq!(common::ws_next(&mut on_c).await, Message::text("third"));
}

/// A budget of the cluster: every node checks it against the whole cluster's spending, each
/// alert goes out once (not once per node), and the hard cap refuses on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_alerts_once_for_the_cluster_and_its_cap_holds_on_every_node() {
    let (port, alerts) = common::webhook_receiver().await;
    let schema = Schema::new("budget");
    let config = schema.config_limits(
        &format!("budget_webhook_hosts = [\"127.0.0.1:{port}\"]"),
        600_000,
        "budget_check_interval_ms = 100\n",
    );
    let nodes = start_nodes(&config, 3);
    nodes[0]
        .deploy_ok(
            "capped",
            "misbehave",
            json!({"memory_bytes_max": 128 * 1024 * 1024}),
        )
        .await;
    for node in &nodes {
        wait_for(
            "every node to serve capped",
            PROPAGATION_WITHIN,
            async || status(node, "/capped/echo").await,
        )
        .await;
    }
    // About twenty echoes' worth on Lambda x86 ($0.0000002 each: the request fee, and 1 ms
    // at 128 MB), alerting at 30% and 100%.
    let out = common::stdout_ok(&nodes[0].cli(&[
        "budget",
        "set",
        "--function",
        "capped",
        "--monthly-usd",
        "0.000004",
        "--sheet",
        "aws-lambda-x86",
        "--alert-at",
        "30,100",
        "--webhook",
        &format!("http://127.0.0.1:{port}/alerts"),
        "--hard-cap",
    ]));
    assert!(out.contains("budget function/capped set"), "{out}");

    // Requests through every node in turn until every node refuses.
    let mut refusing = [false; 3];
    for round in 0.. {
        assert!(
            round < 400,
            "the cap never held on every node: {refusing:?}"
        );
        for (i, node) in nodes.iter().enumerate() {
            let reply = node.get("/capped/echo").await;
            match reply.status {
                200 => refusing[i] = false,
                503 => {
                    reply.assert_refused(503, "budget_spent");
                    refusing[i] = true;
                }
                other => panic!("node {i}: {other} {}", reply.body),
            }
        }
        if refusing.iter().all(|r| *r) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every node has checked the budget many times over since the cap: still one alert
    // per threshold.
    common::wait_until("both alerts", Duration::from_secs(10), async || {
        alerts.lock().unwrap().len() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let thresholds: Vec<f64> = alerts
        .lock()
        .unwrap()
        .iter()
        .map(|alert| alert["threshold_percent"].as_f64().unwrap())
        .collect();
    assert_eq!(thresholds, [30.0, 100.0], "{:?}", alerts.lock().unwrap());
    let mut sent = 0;
    for node in &nodes {
        let metrics = node.metrics().await;
        sent += metrics
            .lines()
            .filter(|l| l.starts_with("eddy_budget_alerts_total{budget=\"function/capped\""))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum::<u64>();
    }
    assert_eq!(sent, 2, "alerts counted by the nodes' metrics");
}

/// Metering across nodes: the cluster's totals are the sum of every node's invocations,
/// none lost or counted twice, and `eddy stats` shows each node's share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_every_nodes_invocations_once_and_show_each_share() {
    const EACH: u64 = 25;
    let schema = Schema::new("shares");
    let nodes = start_nodes(&schema.config(""), 3);
    nodes[0].deploy_ok("hello", "hello-rust", json!({})).await;
    for (i, node) in nodes.iter().enumerate() {
        // Node i serves (i + 1) × EACH requests.
        for _ in 0..(i as u64 + 1) * EACH {
            let served = wait_for("a 200", PROPAGATION_WITHIN, async || {
                status(node, "/hello").await
            })
            .await;
            assert!(served.contains("Hello"), "{served}");
        }
    }
    let total = 6 * EACH;
    // Every node's totals reach the store within its metering flush; then any node reports
    // the whole cluster.
    let stats = wait_for("the cluster's totals", PROPAGATION_WITHIN, async || {
        let (code, stats) = nodes[2].api_get("/functions/hello/stats").await;
        assert_eq!(code, 200, "{stats}");
        if stats["invocations"] == total {
            Ok(stats)
        } else {
            Err(stats)
        }
    })
    .await;
    let shares: Vec<(String, u64)> = stats["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap().to_string(),
                n["invocations"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(shares.len(), 3, "{stats}");
    let mut counts: Vec<u64> = shares.iter().map(|s| s.1).collect();
    counts.sort();
    assert_eq!(counts, [EACH, 2 * EACH, 3 * EACH], "{stats}");
    // Still the same a while later: nothing is counted twice as the nodes flush again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, again) = nodes[0].api_get("/functions/hello/stats").await;
    assert_eq!(again["invocations"], total, "{again}");
    let out = common::stdout_ok(&nodes[0].cli(&["stats", "hello"]));
    assert!(out.contains("by node"), "{out}");
    for (node, count) in &shares {
        assert!(
            out.contains(node) && out.contains(&format!("{count} invocations")),
            "{out}"
        );
    }
    // The cluster's log names the node that ran each invocation: every node is there.
    let named: std::collections::BTreeSet<String> = shares.iter().map(|s| s.0.clone()).collect();
    wait_for("records from every node", PROPAGATION_WITHIN, async || {
        let (_, page) = nodes[1]
            .api_get("/functions/hello/logs?after=0&limit=1000")
            .await;
        let seen: std::collections::BTreeSet<String> = page["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"].as_str().unwrap_or("").to_string())
            .collect();
        if seen == named {
            Ok(())
        } else {
            Err(format!("{seen:?} of {named:?}"))
        }
    })
    .await;

    // The cost report prices each node's share too; on a per-invocation sheet the shares
    // add up to the cluster's cost.
    let (status, report) = nodes[0]
        .api_get("/cost?function=hello&sheet=aws-lambda-x86")
        .await;
    assert_eq!(status, 200, "{report}");
    let whole = report["sheets"][0]["cost_usd"].as_f64().unwrap();
    let parts: Vec<(String, u64, f64)> = report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap().to_string(),
                n["invocations"].as_u64().unwrap(),
                n["sheets"][0]["cost_usd"].as_f64().unwrap(),
            )
        })
        .collect();
    let mut counts: Vec<u64> = parts.iter().map(|p| p.1).collect();
    counts.sort();
    assert_eq!(counts, [EACH, 2 * EACH, 3 * EACH], "{report}");
    let sum: f64 = parts.iter().map(|p| p.2).sum();
    assert!(
        whole > 0.0 && (sum - whole).abs() <= whole * 1e-9,
        "{sum} of {whole}: {report}"
    );
    let out = common::stdout_ok(&nodes[0].cli(&[
        "cost",
        "--function",
        "hello",
        "--sheet",
        "aws-lambda-x86",
    ]));
    assert!(out.contains("by node"), "{out}");
}

/// Two requests at once through one node; their statuses, and the refusal's body if any.
async fn two_at_once(node: &Node, path: &str) -> (Vec<u16>, String) {
    let (one, two) = tokio::join!(node.get(path), node.get(path));
    let refused = [&one, &two]
        .iter()
        .find(|r| r.status != 200)
        .map(|r| r.body.clone())
        .unwrap_or_default();
    let mut statuses = vec![one.status, two.status];
    statuses.sort();
    (statuses, refused)
}

/// `max_concurrency` is the function's across the cluster: each live node runs its share
/// (3 over 3 nodes: one each), so a second invocation at once through one node is refused
/// naming the share; a node that stops gives its share to the others (3 over 2 nodes: 2
/// for the first by name, 1 for the other).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrency_is_the_whole_clusters_shared_by_the_live_nodes() {
    let schema = Schema::new("concurrency");
    // Named, so their order (which decides who runs the larger share) is known.
    let named = |name: &str| schema.config(&format!("node_name = \"{name}\""));
    let a = Node::start_with_config(&named("a"));
    let mut nodes = vec![a];
    for name in ["b", "c"] {
        let mut node = Node::start_with_config(&named(name));
        node.token = nodes[0].token.clone();
        nodes.push(node);
    }
    nodes[0]
        .deploy_ok(
            "slow",
            "misbehave",
            json!({"max_concurrency": 3, "max_queue": 0}),
        )
        .await;
    for node in &nodes {
        wait_for("every node to serve slow", PROPAGATION_WITHIN, async || {
            status(node, "/slow/sleep?ms=1").await
        })
        .await;
    }
    const SLOW: &str = "/slow/sleep?ms=1500";
    // Once node A has heard every node's heartbeat, its share is 1.
    let refused = wait_for(
        "node A to run its share only",
        PROPAGATION_WITHIN,
        async || match two_at_once(&nodes[0], SLOW).await {
            (statuses, body) if statuses == [200, 503] => Ok(body),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    assert!(
        refused.contains("share of max_concurrency (1 here of 3 across 3 live nodes)"),
        "{refused}"
    );
    // The function-wide limit is there to use: one at once through each node.
    let (x, y, z) = tokio::join!(nodes[0].get(SLOW), nodes[1].get(SLOW), nodes[2].get(SLOW));
    assert_eq!([x.status, y.status, z.status], [200, 200, 200]);

    // Node C stops (its last beat says so): the first by name, A, runs 2 of the 3.
    assert!(nodes[2].terminate(), "node C did not stop cleanly");
    wait_for(
        "node A to take a larger share",
        PROPAGATION_WITHIN,
        async || match two_at_once(&nodes[0], SLOW).await {
            (statuses, _) if statuses == [200, 200] => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
}

/// A function's send to, channel join of and close of a connection by id reach it on
/// whichever node holds it: the function runs on node A for a client there, the target
/// connection is held by node B. Another function's connection is not reachable this way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_joins_and_closes_by_connection_id_reach_the_node_holding_it() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let schema = Schema::new("socket_ops");
    let [a, b]: [Node; 2] = start_nodes(&schema.config(""), 2).try_into().ok().unwrap();
    a.deploy_ok("chat", "misbehave", json!({"websocket": true}))
        .await;
    a.deploy_ok(
        "other",
        "misbehave",
        json!({"websocket": true, "route": "/other"}),
    )
    .await;
    for route in ["/chat", "/other"] {
        wait_for("node B to serve both", PROPAGATION_WITHIN, async || {
            status(&b, &format!("{route}/sleep?ms=1")).await
        })
        .await;
    }
    let connect = async |node: &Node, route: &str| {
        let url = format!("ws://{}{route}/ws", node.public);
        let (client, response) = tokio_tungstenite::connect_async(&url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let id = response.headers()["eddy-connection-id"]
            .to_str()
            .unwrap()
            .to_string();
        (client, id)
    };
    let (mut on_a, _) = connect(&a, "/chat").await;
    let (mut on_b, b_id) = connect(&b, "/chat").await;
    let (mut other_on_b, other_id) = connect(&b, "/other").await;
    // Each command's answer comes back to the sender on A: the function's call was relayed.
    let mut command = async |text: String| {
        on_a.send(Message::text(text)).await.unwrap();
        match common::ws_next(&mut on_a).await {
            Message::Text(answer) => answer.to_string(),
            other => panic!("{other:?}"),
        }
    };

    let answer = command(format!("send:{b_id}:hello from A")).await;
    assert!(
        answer.contains("202") && answer.contains("relayed"),
        "{answer}"
    );
    assert_eq!(
        common::ws_next(&mut on_b).await,
        Message::text("hello from A")
    );

    // Joined to a channel through A, B's connection hears a broadcast to it.
    let answer = command(format!("joinid:{b_id}:room")).await;
    assert!(answer.contains("202"), "{answer}");
    wait_for(
        "B's connection to be in room",
        PROPAGATION_WITHIN,
        async || {
            let (_, listed) = b.api_get("/functions/chat/websockets").await;
            if listed["connections"][0]["channels"] == json!(["room"]) {
                Ok(())
            } else {
                Err(listed)
            }
        },
    )
    .await;

    // Another function's connection is out of reach: nothing arrives there.
    command(format!("send:{other_id}:not yours")).await;
    let answer = command(format!("closeid:{b_id}")).await;
    assert!(answer.contains("202"), "{answer}");
    match common::ws_next(&mut on_b).await {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 4001);
            assert_eq!(frame.reason, "closed from afar");
        }
        other => panic!("expected the close, got {other:?}"),
    }
    // `other`'s connection heard nothing: the relay is in order, so "not yours" would have
    // reached B before the close did, and so before this reply.
    other_on_b.send(Message::text("big:3")).await.unwrap();
    assert_eq!(common::ws_next(&mut other_on_b).await, Message::text("bbb"));
}

/// A function whose output holds a NUL (which Postgres cannot store in text) is recorded
/// like any other, and the records written with it in one batch (another function's) are
/// not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_a_functions_output_loses_no_record() {
    let schema = Schema::new("nul");
    let node = Node::start_with_config(&schema.config(""));
    node.deploy_ok("noisy", "misbehave", json!({})).await;
    node.deploy_ok("quiet", "misbehave", json!({"route": "/quiet"}))
        .await;
    // At once, so the records share a batch.
    let (noisy, quiet) = tokio::join!(node.get("/noisy/nul"), node.get("/quiet/log"));
    assert_eq!((noisy.status, quiet.status), (200, 200));
    for (function, expected) in [("noisy", "before\u{fffd}after"), ("quiet", "hello stdout")] {
        let entries = wait_for("the record", PROPAGATION_WITHIN, async || {
            let (status, body) = node
                .api_get(&format!("/functions/{function}/logs?after=0&wait_ms=1000"))
                .await;
            assert_eq!(status, 200, "{body}");
            match body["entries"].as_array() {
                Some(entries) if !entries.is_empty() => Ok(entries.clone()),
                _ => Err(format!("{body}\n{}", node.output())),
            }
        })
        .await;
        let log = entries[0]["log"].as_str().unwrap();
        assert!(log.contains(expected), "{function}: {log:?}");
    }
}

/// `overlap = skip` holds for the cluster: a tick claimed by one node while another node's
/// run of an earlier tick goes on is skipped, so no two runs of the schedule overlap,
/// whichever nodes ran them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_skip_holds_across_nodes() {
    let schema = Schema::new("overlap");
    let [a, b]: [Node; 2] = start_nodes(&schema.config(""), 2).try_into().ok().unwrap();
    // Each run takes 2.5 s; ticks come every second.
    a.deploy_ok(
        "ticker",
        "misbehave",
        json!({"schedule": {"cron": "* * * * * *", "path": "/ticker/sleep?ms=2500"}}),
    )
    .await;
    let runs = wait_for("four runs", Duration::from_secs(40), async || {
        let (status, body) = a.api_get("/functions/ticker/logs?after=0").await;
        assert_eq!(status, 200, "{body}");
        let entries = body["entries"].as_array().cloned().unwrap_or_default();
        if entries.len() >= 4 {
            Ok(entries)
        } else {
            Err(body)
        }
    })
    .await;
    let mut spans: Vec<(i64, i64)> = runs
        .iter()
        .map(|r| {
            let at = common::unix_ms(r["at"].as_str().unwrap());
            (at, at + r["duration_ms"].as_f64().unwrap() as i64)
        })
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "two runs overlapped: {pair:?} of {spans:?}"
        );
    }
    // Ticks were skipped (a run takes 2.5 s), or the test showed nothing.
    let output = format!("{}{}", a.output(), b.output());
    assert!(
        output.contains("tick skipped: the previous run is still going"),
        "no tick was skipped"
    );
}

/// A version this node cannot prepare (here: its own compile limit is far below what the
/// compilation takes) is not compiled again at every look at the store, each of which
/// would hold the node's change lock for a whole compilation: once, then after
/// `UNPREPARABLE_RETRY_MS`. The node keeps answering meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_a_node_cannot_prepare_is_not_compiled_at_every_poll() {
    const CANNOT: &str = "cannot serve the version another node made live";
    let schema = Schema::new("unpreparable");
    let a = Node::start_with_config(&schema.config_polling("", 100));
    let mut b =
        Node::start_with_config(&schema.config_limits("", 100, "compile_time_ms_max = 1\n"));
    b.token = a.token.clone();
    a.deploy_ok("hello", "hello-rust", json!({})).await;
    common::wait_until("node B to try once", PROPAGATION_WITHIN, async || {
        b.output().contains(CANNOT)
    })
    .await;
    // Thirty polls later: still the one attempt.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let output = b.output();
    assert_eq!(output.matches(CANNOT).count(), 1, "{output}");
    assert!(output.contains("compile_time_ms_max"), "{output}");
    let (code, _) = b.api_get("/functions").await;
    assert_eq!(code, 200);
    assert_eq!(b.get("/hello").await.status, 404);
}

/// Access is the cluster's: a token made through one node works on the other, its
/// revocation holds on the other's very next call, a secret set through one node is
/// opened by the other (the same key), and both write one audit trail.
#[tokio::test]
async fn tokens_secrets_and_the_audit_trail_are_the_clusters() {
    let schema = Schema::new("access");
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("secrets.key");
    std::fs::write(&key, "c".repeat(64)).unwrap();
    let config = schema.config(&format!("secrets_key_file = \"{}\"\n", key.display()));
    let nodes = start_nodes(&config, 2);
    let (a, b) = (&nodes[0], &nodes[1]);
    let created: serde_json::Value = a
        .http
        .post(a.api_url("/tokens"))
        .bearer_auth(&a.token)
        .json(&json!({"name": "ci", "role": "deployer"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    let call = async |node: &Node| {
        node.http
            .get(node.api_url("/functions"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(call(b).await, 200);
    // A secret set through `a`, bound by a deploy through `b`, served by both.
    let set = a
        .http
        .put(a.api_url("/secrets/greeting"))
        .bearer_auth(&a.token)
        .body("from-the-cluster")
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    b.deploy_ok(
        "hello",
        "hello-rust",
        json!({"secrets": {"GREETING": "greeting"}}),
    )
    .await;
    for node in [a, b] {
        wait_for(
            "the function with its secret",
            PROPAGATION_WITHIN,
            async || {
                let reply = node.get("/hello").await;
                match reply.body.contains("from-the-cluster") {
                    true => Ok(()),
                    false => Err(format!("{} {}", reply.status, reply.body)),
                }
            },
        )
        .await;
    }
    // Revoked through `a`: `b` refuses the next call, with no wait.
    let removed = a
        .http
        .delete(a.api_url("/tokens/ci"))
        .bearer_auth(&a.token)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 200);
    assert_eq!(call(b).await, 401);
    assert_eq!(call(a).await, 401);
    // One trail: what each node was asked to change.
    let (_, trail) = b.api_get("/audit").await;
    let requests: Vec<&str> = trail["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["request"].as_str().unwrap())
        .collect();
    assert_eq!(
        requests,
        [
            "POST /v1/tokens",
            "PUT /v1/secrets/greeting",
            "POST /v1/functions/hello/versions",
            "DELETE /v1/tokens/ci"
        ]
    );
}

#[tokio::test]
async fn the_consoles_live_log_series_and_overview_show_every_nodes_invocations() {
    use futures::StreamExt;
    let schema = Schema::new("console");
    let nodes = start_nodes(&schema.config(""), 2);
    let (a, b) = (&nodes[0], &nodes[1]);
    a.deploy_ok("api", "misbehave", json!({})).await;
    // The live log, opened on one node...
    let response = a
        .http
        .get(a.api_url("/functions/api/logs/stream"))
        .bearer_auth(&a.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    // ... shows an invocation the other node served.
    wait_for(
        "the function on the other node",
        PROPAGATION_WITHIN,
        async || status(b, "/api/log?on=b").await,
    )
    .await;
    let mut seen = String::new();
    tokio::time::timeout(PROPAGATION_WITHIN, async {
        while !seen.contains("/api/log?on=b") {
            let chunk = stream.next().await.expect("the stream ended").unwrap();
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the other node's invocation never came; got {seen}"));
    assert!(seen.contains("event: invocation"), "{seen}");
    // The charts' series and the overview count it too, on either node.
    for node in [a, b] {
        wait_for(
            "the series and overview to count it",
            PROPAGATION_WITHIN,
            async || {
                let (_, series) = node.api_get("/functions/api/series?since_ms=600000").await;
                let counted: u64 = series["points"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["invocations"].as_u64().unwrap())
                    .sum();
                let (_, all) = node.api_get("/stats?since_ms=600000").await;
                let overview = all["functions"][0]["invocations"].as_u64();
                if counted >= 1 && overview >= Some(1) {
                    Ok(())
                } else {
                    Err(format!("series {counted}, overview {overview:?}"))
                }
            },
        )
        .await;
    }
}
