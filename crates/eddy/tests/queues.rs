//! Durable queues: nothing published is lost (also across `kill -9`), no message is tried
//! more than its max attempts, failing consumers back off without touching interactive
//! traffic, deliveries are CloudEvents, and every misuse is refused with its reason.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Node, REACH_LOOPBACK, assert_api_error, wait_for};
use serde_json::{Value, json};

/// What the local recorder has seen: `(ce-id, attempt)` of each success report, and the
/// bodies relayed to it.
#[derive(Default)]
struct Recorded {
    successes: Vec<(String, u32)>,
    relayed: Vec<String>,
}

/// A recorder on loopback: `GET /record?id=&attempt=` notes a success, `POST /relay` notes
/// a body, `GET /slow` answers after ten seconds.
async fn recorder() -> (SocketAddr, Arc<Mutex<Recorded>>) {
    use axum::extract::{Query, State};
    use axum::routing::{get, post};
    let recorded = Arc::new(Mutex::new(Recorded::default()));
    let app = axum::Router::new()
        .route(
            "/record",
            get(
                |State(r): State<Arc<Mutex<Recorded>>>,
                 Query(q): Query<HashMap<String, String>>| async move {
                    let attempt = q["attempt"].parse().unwrap_or(0);
                    r.lock().unwrap().successes.push((q["id"].clone(), attempt));
                    "ok"
                },
            ),
        )
        .route(
            "/relay",
            post(
                |State(r): State<Arc<Mutex<Recorded>>>, body: String| async move {
                    r.lock().unwrap().relayed.push(body);
                    "ok"
                },
            ),
        )
        .route(
            "/slow",
            get(|| async {
                // The slowness under test (a consumer whose deliveries time out), not
                // synchronisation.
                tokio::time::sleep(Duration::from_secs(10)).await;
                "late"
            }),
        )
        .with_state(recorded.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, recorded)
}

/// An authenticated control-API call with a JSON body (or none).
async fn api(
    node: &Node,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = node
        .http
        .request(method, node.api_url(path))
        .bearer_auth(&node.token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn create_queue(node: &Node, name: &str) {
    let (status, body) = api(
        node,
        reqwest::Method::POST,
        "/queues",
        Some(json!({"name": name})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

async fn consume(node: &Node, queue: &str, settings: Value) {
    let (status, body) = api(
        node,
        reqwest::Method::PUT,
        &format!("/queues/{queue}/consumer"),
        Some(settings),
    )
    .await;
    assert_eq!(status, 200, "{body}\n{}", node.output());
}

/// Publish `bodies` in batches of 1000; their ids.
async fn publish_all(node: &Node, queue: &str, bodies: &[String]) -> Vec<String> {
    let mut ids = Vec::new();
    for chunk in bodies.chunks(1000) {
        let messages: Vec<Value> = chunk.iter().map(|b| json!({"data": b})).collect();
        let (status, body) = api(
            node,
            reqwest::Method::POST,
            &format!("/queues/{queue}/batch"),
            Some(json!({"messages": messages})),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        ids.extend(
            body["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|id| id.as_str().unwrap().to_string()),
        );
    }
    ids
}

async fn queue_stats(node: &Node, queue: &str) -> Value {
    let (status, body) = node.api_get(&format!("/queues/{queue}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Poll the queue's stats until `done` holds or `within` passes.
async fn queue_when(
    node: &Node,
    queue: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let what = format!("queue {queue} to get there");
    wait_for(&what, within, async || {
        let stats = queue_stats(node, queue).await;
        if done(&stats) {
            Ok(stats)
        } else {
            Err(WithOutputTail(stats, node))
        }
    })
    .await
}

/// Queue stats shown with the node's last 30 lines of output (formatted only on failure).
struct WithOutputTail<'a>(Value, &'a Node);

impl std::fmt::Display for WithOutputTail<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let output = self.1.output();
        let mut tail: Vec<&str> = output.lines().rev().take(30).collect();
        tail.reverse();
        write!(f, "{}\n{}", self.0, tail.join("\n"))
    }
}

/// Every message of a queue, by peeking (dead-letter queues here hold a few hundred).
async fn peek_all(node: &Node, queue: &str) -> Vec<Value> {
    let (status, body) = node
        .api_get(&format!("/queues/{queue}/messages?limit=1000"))
        .await;
    assert_eq!(status, 200, "{body}");
    body["messages"].as_array().unwrap().clone()
}

const MESSAGES: usize = 10_000;
const MAX_ATTEMPTS: u32 = 3;

/// How a flaky run treats its nodes.
#[derive(Clone, Copy, PartialEq)]
enum Run {
    /// One node, left alone.
    Quiet,
    /// One node, killed (SIGKILL) once a quarter is done and started again.
    KilledMidway,
    /// Three nodes sharing Postgres, one of them killed at random moments and started
    /// again, `CLUSTER_KILLS` times.
    Cluster,
}

/// Node kills of `Run::Cluster`.
const CLUSTER_KILLS: usize = 4;

/// A number below `n`, different each call (from the standard library's random hasher
/// keys: a test's randomness needs no generator crate).
fn random_below(n: u64) -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now()) % n
}

/// Deploys through the second node a one-second schedule relaying each tick to the
/// recorder, and through the third a WebSocket function; waits until every node serves
/// both and the worker. Returns the wall-clock time from which ticks are counted.
async fn cluster_functions(nodes: &[Node], recorder: SocketAddr) -> i64 {
    // A short timeout and wait keep a killed runner's lease short (about 7 s).
    nodes[1]
        .deploy_ok(
            "ticker",
            "misbehave",
            json!({
                "allow_outbound": [recorder.to_string()],
                "timeout_ms": 2000,
                "max_wait_ms": 100,
                // `allow`: under `skip` a tick whose runner is killed mid-run holds up the
                // next ticks until its lease ends (it might still be running), which is
                // the policy, not a lost tick.
                "schedule": {"cron": "* * * * * *", "overlap": "allow",
                             "path": format!("/ticker/relay?to={recorder}/relay")},
            }),
        )
        .await;
    nodes[2]
        .deploy_ok("chat", "misbehave", json!({"websocket": true}))
        .await;
    for (i, node) in nodes.iter().enumerate() {
        for function in ["worker", "ticker", "chat"] {
            let what = format!("node {i} to serve {function}");
            wait_for(&what, Duration::from_secs(30), async || {
                match node.get(&format!("/{function}/sleep?ms=1")).await.status {
                    200 => Ok(()),
                    other => Err(other),
                }
            })
            .await;
        }
    }
    // From the next whole second: every node has the schedule.
    (common::now_ms() / 1000 + 1) * 1000
}

/// The scheduled times (Unix ms) of the ticks relayed to the recorder, once per run.
fn recorded_ticks(recorded: &Mutex<Recorded>) -> Vec<i64> {
    recorded
        .lock()
        .unwrap()
        .relayed
        .iter()
        .filter_map(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("header: ce-time: "))
                .map(common::unix_ms)
        })
        .collect()
}

/// With at most one node of three down at any moment, every tick from `from` ran, and
/// ticks ran twice only where a kill explains it (its runner killed during it: at most
/// one per kill). Waits first for the leases of killed runners to run out (about 7 s,
/// then a survivor's check every 2 s).
async fn ticks_ran_once(ticks: &[i64], from: i64, last_kill_ms: i64) {
    let settled = last_kill_ms + 12_000;
    let wait = (settled - common::now_ms()).max(0) as u64;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let until = common::now_ms() - 2_000;
    let mut runs: std::collections::BTreeMap<i64, usize> = Default::default();
    for tick in ticks {
        *runs.entry(*tick).or_default() += 1;
    }
    let missing: Vec<i64> = (from / 1000..=until / 1000)
        .map(|s| s * 1000)
        .filter(|t| !runs.contains_key(t))
        .collect();
    assert!(
        missing.is_empty(),
        "ticks lost while two nodes were up: {missing:?} of {runs:?}"
    );
    let twice: Vec<(&i64, &usize)> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.len() <= CLUSTER_KILLS && twice.iter().all(|(_, n)| **n == 2),
        "ticks run more than their runners' deaths explain: {twice:?}"
    );
    assert!(runs.len() >= 5, "too few ticks to tell: {runs:?}");
}

/// A WebSocket client on `a` hears a broadcast sent through `c`'s control API.
async fn broadcast_reaches_another_node(a: &Node, c: &Node) {
    let url = format!("ws://{}/chat/ws?channels=room", a.public);
    let (mut client, _) = tokio_tungstenite::connect_async(&url)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let sent = c
        .http
        .post(c.api_url("/functions/chat/websockets/channels/room/messages"))
        .bearer_auth(&c.token)
        .body("through node C")
        .send()
        .await
        .unwrap();
    assert!(sent.status().is_success(), "{}", sent.status());
    assert_eq!(
        common::ws_next(&mut client).await,
        tokio_tungstenite::tungstenite::Message::text("through node C")
    );
}

/// Publishes `MESSAGES` to a consumer failing 30% of attempts at random, with the nodes
/// treated as `run` says, then checks that every published message ended acknowledged or
/// dead-lettered, within its max attempts.
async fn flaky_run(run: Run) {
    let (recorder, recorded) = recorder().await;
    let schema = (run == Run::Cluster).then(|| common::postgres::Schema::new("flaky"));
    let config = match &schema {
        Some(schema) => schema.config_polling(REACH_LOOPBACK, 200),
        None => REACH_LOOPBACK.to_owned(),
    };
    let mut nodes = vec![Node::start_with_config(&config)];
    if run == Run::Cluster {
        for _ in 0..2 {
            let mut node = Node::start_with_config(&config);
            node.token = nodes[0].token.clone();
            nodes.push(node);
        }
    }
    let node = &nodes[0];
    node.deploy_ok(
        "worker",
        "misbehave",
        json!({"allow_outbound": [format!("127.0.0.1:{}", recorder.port())], "reuse": true}),
    )
    .await;
    create_queue(node, "jobs").await;
    consume(
        node,
        "jobs",
        json!({
            "function": "worker",
            "path": format!("/worker/flaky?fail=30&to=127.0.0.1:{}/record", recorder.port()),
            "max_attempts": MAX_ATTEMPTS,
            "max_concurrency": 16,
            "backoff_base_ms": 1,
            "backoff_max_ms": 20,
        }),
    )
    .await;
    // A cluster also runs a one-second schedule and holds WebSockets through the kills,
    // each function deployed through another node and served by all.
    let ticks_from = if run == Run::Cluster {
        cluster_functions(&nodes, recorder).await
    } else {
        0
    };
    let bodies: Vec<String> = (0..MESSAGES).map(|i| format!("job {i}")).collect();
    let published: BTreeSet<String> = publish_all(node, "jobs", &bodies)
        .await
        .into_iter()
        .collect();
    assert_eq!(published.len(), MESSAGES, "ids are unique");

    let mut last_kill_ms = common::now_ms();
    match run {
        Run::Quiet => {}
        Run::KilledMidway => {
            queue_when(&nodes[0], "jobs", Duration::from_secs(120), |s| {
                s["succeeded"].as_u64().unwrap() >= (MESSAGES / 4) as u64
            })
            .await;
            nodes[0].kill();
            nodes[0] = Node::start_in(nodes[0].state.clone(), &config);
        }
        Run::Cluster => {
            let token = nodes[0].token.clone();
            for kill in 0..CLUSTER_KILLS {
                let done = queue_stats(&nodes[0], "jobs").await["succeeded"]
                    .as_u64()
                    .unwrap();
                if done as usize >= MESSAGES * 9 / 10 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100 + random_below(600))).await;
                let victim = random_below(nodes.len() as u64) as usize;
                nodes[victim].kill();
                tokio::time::sleep(Duration::from_millis(random_below(500))).await;
                nodes[victim] = Node::start_in(nodes[victim].state.clone(), &config);
                nodes[victim].token = token.clone();
                last_kill_ms = common::now_ms();
                eprintln!("kill {}: node {victim} killed and started again", kill + 1);
            }
        }
    }
    let node = &nodes[0];
    let done = queue_when(node, "jobs", Duration::from_secs(300), |s| s["depth"] == 0).await;

    let dead = peek_all(node, "jobs-dlq").await;
    for message in &dead {
        assert!(
            message["attempts"].as_u64().unwrap() <= u64::from(MAX_ATTEMPTS),
            "dead letter past max attempts: {message}"
        );
    }
    let dead_ids: BTreeSet<String> = dead
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    let successes = recorded.lock().unwrap().successes.clone();
    for (id, attempt) in &successes {
        assert!(
            (1..=MAX_ATTEMPTS).contains(attempt),
            "{id} succeeded on attempt {attempt}, beyond max attempts {MAX_ATTEMPTS}"
        );
    }
    let succeeded: BTreeSet<String> = successes.iter().map(|(id, _)| id.clone()).collect();
    let ended: BTreeSet<String> = succeeded.union(&dead_ids).cloned().collect();
    let lost: Vec<_> = published.difference(&ended).take(5).collect();
    let unknown: Vec<_> = ended.difference(&published).take(5).collect();
    assert!(lost.is_empty(), "messages lost: {lost:?} (stats {done})");
    assert!(unknown.is_empty(), "messages never published: {unknown:?}");
    // About 0.3^3 of the messages fail every attempt.
    assert!(
        !dead_ids.is_empty() && dead_ids.len() < MESSAGES / 10,
        "{} dead letters of {MESSAGES}",
        dead_ids.len()
    );
    if run == Run::Quiet {
        // Without a crash nothing is delivered twice after a success.
        assert_eq!(
            done["succeeded"].as_u64().unwrap() as usize,
            succeeded.len()
        );
        assert_eq!(
            done["succeeded"].as_u64().unwrap() + done["dead_lettered"].as_u64().unwrap(),
            MESSAGES as u64,
            "{done}"
        );
        assert_eq!(
            done["delivered"].as_u64().unwrap(),
            done["succeeded"].as_u64().unwrap() + done["failed_attempts"].as_u64().unwrap(),
            "{done}"
        );
    }
    if run == Run::Cluster {
        ticks_ran_once(&recorded_ticks(&recorded), ticks_from, last_kill_ms).await;
        broadcast_reaches_another_node(&nodes[0], &nodes[2]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_to_a_flaky_consumer_end_succeeded_or_dead_lettered() {
    flaky_run(Run::Quiet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_midway_loses_no_message() {
    flaky_run(Run::KilledMidway).await;
}

/// The cluster test: three nodes on Postgres, each function deployed through one node and
/// served by all. They consume one queue of 10,000 messages failing 30% of attempts while
/// nodes are killed (SIGKILL) at random moments and started again: every message ends
/// acknowledged or dead-lettered, none past its max attempts, none lost. A one-second
/// schedule across the same kills ran every tick, and twice only where a runner died
/// during it. A WebSocket client on node A then hears a broadcast sent through node C.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_nodes_killed_at_random_loses_no_message_nor_tick() {
    flaky_run(Run::Cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timing_out_consumer_shrinks_while_http_keeps_answering() {
    let (recorder, _) = recorder().await;
    let node = Node::start_with_config(REACH_LOOPBACK);
    node.deploy_ok(
        "worker",
        "misbehave",
        json!({"allow_outbound": [format!("127.0.0.1:{}", recorder.port())], "timeout_ms": 300}),
    )
    .await;
    node.deploy_ok("front", "hello-rust", json!({})).await;
    create_queue(&node, "slow").await;
    consume(
        &node,
        "slow",
        json!({
            "function": "worker",
            "path": format!("/worker/outgoing?to=127.0.0.1:{}/slow", recorder.port()),
            "max_concurrency": 8,
            "max_attempts": 50,
            "backoff_base_ms": 1,
            "backoff_max_ms": 50,
        }),
    )
    .await;
    let bodies: Vec<String> = (0..200).map(|i| i.to_string()).collect();
    publish_all(&node, "slow", &bodies).await;

    // Interactive traffic while the consumer times out: every request is answered.
    let started = Instant::now();
    let mut answered = 0;
    let mut smallest = u64::MAX;
    while started.elapsed() < Duration::from_secs(4) {
        let reply = node.get("/front").await;
        assert_eq!(reply.status, 200, "{reply:?}");
        answered += 1;
        if answered % 20 == 0 {
            let stats = queue_stats(&node, "slow").await;
            smallest = smallest.min(stats["consumer_concurrency"].as_u64().unwrap());
        }
    }
    let stats = queue_stats(&node, "slow").await;
    smallest = smallest.min(stats["consumer_concurrency"].as_u64().unwrap());
    assert!(stats["failed_attempts"].as_u64().unwrap() > 0, "{stats}");
    assert!(smallest < 8, "the consumer never shrank below 8: {stats}");
    assert!(answered > 50, "only {answered} interactive requests in 4 s");
    // The shrunk concurrency is in the metrics too.
    let metrics = node.metrics().await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("eddy_queue_consumer_concurrency{") && l.contains("queue=\"slow\""))
        .unwrap_or_else(|| panic!("no consumer concurrency metric:\n{metrics}"));
    let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(value < 8.0, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_cloudevents_single_or_batched() {
    let (recorder, recorded) = recorder().await;
    let node = Node::start_with_config(REACH_LOOPBACK);
    node.deploy_ok(
        "worker",
        "misbehave",
        json!({"allow_outbound": [format!("127.0.0.1:{}", recorder.port())]}),
    )
    .await;
    let relay = format!("/worker/relay?to=127.0.0.1:{}/relay", recorder.port());
    create_queue(&node, "single").await;
    create_queue(&node, "batched").await;
    consume(
        &node,
        "single",
        json!({"function": "worker", "path": relay}),
    )
    .await;
    consume(
        &node,
        "batched",
        json!({"function": "worker", "path": relay, "batch_size": 10}),
    )
    .await;
    let sent = node
        .http
        .post(node.api_url("/queues/single/messages"))
        .bearer_auth(&node.token)
        .header("content-type", "application/json")
        .body(r#"{"order":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
    let id = sent.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    queue_when(&node, "single", Duration::from_secs(30), |s| {
        s["succeeded"] == 1
    })
    .await;
    let single = recorded.lock().unwrap().relayed.pop().unwrap();
    for expected in [
        "method: POST".to_string(),
        "header: ce-specversion: 1.0".into(),
        format!("header: ce-id: {id}"),
        "header: ce-type: dev.eddy.queue.message".into(),
        "header: ce-source: /queues/single".into(),
        "header: ce-eddyattempt: 1".into(),
        "header: content-type: application/json".into(),
        "body:\n{\"order\":1}".into(),
    ] {
        assert!(
            single.contains(&expected),
            "{expected} missing from:\n{single}"
        );
    }
    assert!(single.contains("header: ce-time: 20"), "{single}");
    assert!(
        single.contains("header: ce-eddyfirstenqueued: 20"),
        "{single}"
    );

    let bodies: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
    publish_all(&node, "batched", &bodies).await;
    queue_when(&node, "batched", Duration::from_secs(30), |s| {
        s["succeeded"] == 5
    })
    .await;
    let relayed = recorded.lock().unwrap().relayed.clone();
    let mut seen = Vec::new();
    for text in &relayed {
        assert!(
            text.contains("header: content-type: application/cloudevents-batch+json"),
            "{text}"
        );
        let json = &text[text.find("body:\n").unwrap() + 6..];
        for event in serde_json::from_str::<Vec<Value>>(json).unwrap() {
            assert_eq!(event["type"], "dev.eddy.queue.message");
            assert_eq!(event["source"], "/queues/batched");
            assert_eq!(event["specversion"], "1.0");
            assert_eq!(event["eddyattempt"], 1);
            seen.push(event["data"].as_str().unwrap().to_string());
        }
    }
    seen.sort();
    assert_eq!(seen, bodies);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_publish_through_eddy_local_only_where_allowed() {
    let node = Node::start_with_config("[limits]\nqueue_message_bytes_max = 1024\n");
    node.deploy_ok("pub", "misbehave", json!({"publish": ["allowed"]}))
        .await;
    create_queue(&node, "allowed").await;
    create_queue(&node, "other").await;
    let post = |queue: &str, body: String| {
        node.send(
            node.http
                .post(node.url(&format!("/pub/publish?queue={queue}")))
                .body(body),
        )
    };
    let reply = post("allowed", "from inside".into()).await;
    assert!(reply.body.starts_with("202 "), "{reply:?}");
    let stats = queue_stats(&node, "allowed").await;
    assert_eq!(stats["depth"], 1, "{stats}");
    let message = &peek_all(&node, "allowed").await[0];
    assert_eq!(message["data"], "from inside");

    let reply = post("other", "x".into()).await;
    assert!(reply.body.starts_with("403 "), "{reply:?}");
    assert!(
        reply.body.contains("may not publish to queue `other`"),
        "{reply:?}"
    );
    let reply = post("allowed", "x".repeat(2000)).await;
    assert!(reply.body.starts_with("413 "), "{reply:?}");
    assert!(reply.body.contains("queue_message_bytes_max"), "{reply:?}");
    assert_eq!(queue_stats(&node, "other").await["depth"], 0);

    node.deploy_ok("pub", "misbehave", json!({"publish": ["*"]}))
        .await;
    let reply = post("missing", "x".into()).await;
    assert!(reply.body.starts_with("404 "), "{reply:?}");
    assert!(reply.body.contains("no queue `missing`"), "{reply:?}");
    // A function without `publish` reaches nothing.
    node.deploy_ok("closed", "misbehave", json!({})).await;
    let reply = node
        .send(
            node.http
                .post(node.url("/closed/publish?queue=allowed"))
                .body("x"),
        )
        .await;
    assert!(reply.body.starts_with("403 "), "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_misuse_is_refused_with_the_reason() {
    let node = Node::start_with_config(
        "[limits]\nqueue_depth_max = 3\nqueue_message_bytes_max = 100\nqueues_max = 4\n",
    );
    node.deploy_ok("worker", "misbehave", json!({"timeout_ms": 5000}))
        .await;
    use reqwest::Method;
    let (s, b) = api(&node, Method::POST, "/queues/nope/messages", None).await;
    assert_api_error(s, &b, 404, "no queue `nope`");
    let (s, b) = api(
        &node,
        Method::POST,
        "/queues",
        Some(json!({"name": "Bad_Name"})),
    )
    .await;
    assert_api_error(s, &b, 400, "queue name `Bad_Name` is invalid");
    let (s, b) = api(
        &node,
        Method::POST,
        "/queues",
        Some(json!({"name": "a".repeat(59)})),
    )
    .await;
    assert_api_error(s, &b, 400, "longer than 58");
    create_queue(&node, "jobs").await;
    let (s, b) = api(
        &node,
        Method::POST,
        "/queues",
        Some(json!({"name": "jobs"})),
    )
    .await;
    assert_api_error(s, &b, 409, "already exists");
    let (s, b) = api(
        &node,
        Method::POST,
        "/queues",
        Some(json!({"name": "jobs-two"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = api(
        &node,
        Method::POST,
        "/queues",
        Some(json!({"name": "third"})),
    )
    .await;
    assert_api_error(s, &b, 422, "queues_max (4)");

    // Size, depth and idempotency.
    let send = |body: &'static str, key: Option<&'static str>| {
        let mut request = node
            .http
            .post(node.api_url("/queues/jobs/messages"))
            .bearer_auth(&node.token)
            .body(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let big = Box::leak("x".repeat(101).into_boxed_str());
    let (s, b) = send(big, None).await;
    assert_api_error(s, &b, 413, "queue_message_bytes_max (100 bytes");
    let (s, first) = send("a", Some("k")).await;
    assert_eq!(s, 202, "{first}");
    let (s, again) = send("a", Some("k")).await;
    assert_eq!(
        (s, &again["duplicate"], &again["id"]),
        (202, &json!(true), &first["id"])
    );
    send("b", None).await;
    send("c", None).await;
    let (s, b) = send("d", None).await;
    assert_api_error(s, &b, 503, "queue_depth_max (3)");
    assert_eq!(queue_stats(&node, "jobs").await["depth"], 3);

    // Consumer bindings.
    let bind = |settings: Value| api(&node, Method::PUT, "/queues/jobs/consumer", Some(settings));
    let (s, b) = bind(json!({"function": "ghost"})).await;
    assert_api_error(s, &b, 404, "no function `ghost`");
    let (s, b) = bind(json!({"function": "worker", "visibility_timeout_ms": 1000})).await;
    assert_api_error(
        s,
        &b,
        400,
        "shorter than the function's timeout_ms (5000 ms)",
    );
    let (s, b) = bind(json!({"function": "worker", "batch_size": 5000})).await;
    assert_api_error(s, &b, 422, "consumer_batch_size_max");
    let (s, b) = bind(json!({"function": "worker", "max_attempts": 0})).await;
    assert_api_error(s, &b, 422, "max attempts 0");
    let (s, b) = bind(json!({"function": "worker", "dead_letter": "nowhere"})).await;
    assert_api_error(s, &b, 404, "no queue `nowhere`");
    let (s, b) =
        bind(json!({"function": "worker", "backoff_base_ms": 10, "backoff_max_ms": 5})).await;
    assert_api_error(s, &b, 400, "backoff base 10 ms");
    let (s, b) = api(&node, Method::DELETE, "/queues/jobs-dlq", None).await;
    assert_api_error(s, &b, 409, "dead-letter queue of `jobs`");

    // Purge and delete.
    let (s, b) = api(&node, Method::POST, "/queues/jobs/purge", None).await;
    assert_eq!((s, &b["purged"]), (200, &json!(3)), "{b}");
    let (s, _) = api(&node, Method::DELETE, "/queues/jobs", None).await;
    assert_eq!(s, 204);
    let (s, b) = node.api_get("/queues/jobs-dlq").await;
    assert_api_error(s, &b, 404, "no queue `jobs-dlq`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_can_be_redriven() {
    let node = Node::start();
    node.deploy_ok("worker", "misbehave", json!({})).await;
    create_queue(&node, "jobs").await;
    // `trap` fails every delivery.
    consume(
        &node,
        "jobs",
        json!({"function": "worker", "path": "/worker/trap", "max_attempts": 2, "backoff_base_ms": 1, "backoff_max_ms": 5}),
    )
    .await;
    publish_all(&node, "jobs", &["x".to_string(), "y".to_string()]).await;
    let stats = queue_when(&node, "jobs", Duration::from_secs(30), |s| {
        s["dead_lettered"] == 2
    })
    .await;
    assert_eq!(stats["failed_attempts"], 4, "{stats}");
    let dead = peek_all(&node, "jobs-dlq").await;
    assert!(
        dead[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("attempt 2 of 2: trap"),
        "{dead:?}"
    );
    // Fix the consumer, then redrive: both succeed.
    consume(
        &node,
        "jobs",
        json!({"function": "worker", "path": "/worker/echo"}),
    )
    .await;
    let (s, b) = api(&node, reqwest::Method::POST, "/queues/jobs/redrive", None).await;
    assert_eq!((s, &b["moved"]), (200, &json!(2)), "{b}");
    queue_when(&node, "jobs", Duration::from_secs(30), |s| {
        s["succeeded"] == 2 && s["depth"] == 0
    })
    .await;
    assert!(peek_all(&node, "jobs-dlq").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_sends_consumes_and_reports() {
    let node = Node::start();
    node.deploy_ok("worker", "misbehave", json!({})).await;
    common::stdout_ok(&node.cli(&["queue", "create", "orders"]));
    let sent = common::stdout_ok(&node.cli(&[
        "queue",
        "send",
        "orders",
        "hello",
        "--idempotency-key",
        "k1",
    ]));
    let again = common::stdout_ok(&node.cli(&[
        "queue",
        "send",
        "orders",
        "hello",
        "--idempotency-key",
        "k1",
    ]));
    assert!(again.contains("duplicate"), "{again}");
    assert!(again.contains(sent.trim()), "{sent} / {again}");
    let peek = common::stdout_ok(&node.cli(&["queue", "peek", "orders", "--json"]));
    assert!(peek.contains("hello"), "{peek}");
    let stats: Value = serde_json::from_str(&common::stdout_ok(
        &node.cli(&["queue", "stats", "orders", "--json"]),
    ))
    .unwrap();
    for key in [
        "depth",
        "in_flight",
        "delivered",
        "succeeded",
        "failed_attempts",
        "dead_lettered",
        "oldest_age_ms",
        "consumer_concurrency",
    ] {
        assert!(stats.get(key).is_some(), "{key} missing from {stats}");
    }
    assert_eq!(stats["depth"], 1);
    common::stdout_ok(&node.cli(&[
        "queue",
        "consume",
        "orders",
        "--function",
        "worker",
        "--path",
        "/worker/echo",
    ]));
    queue_when(&node, "orders", Duration::from_secs(30), |s| {
        s["succeeded"] == 1
    })
    .await;
    let ls = common::stdout_ok(&node.cli(&["queue", "ls"]));
    assert!(ls.contains("orders") && ls.contains("worker"), "{ls}");
    let err = common::stderr_err(&node.cli(&["queue", "send", "nowhere", "x"]));
    assert!(err.contains("no queue `nowhere`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_whose_every_delivery_fails_opens_its_breaker_and_probes() {
    let node = Node::start_with_config("[limits]\nconsumer_breaker_failures = 3\n");
    node.deploy_ok("worker", "misbehave", json!({})).await;
    create_queue(&node, "doomed").await;
    consume(
        &node,
        "doomed",
        json!({
            "function": "worker", "path": "/worker/trap", "max_concurrency": 1,
            "max_attempts": 100, "backoff_base_ms": 3000, "backoff_max_ms": 3000,
        }),
    )
    .await;
    publish_all(
        &node,
        "doomed",
        &(0..5).map(|i| i.to_string()).collect::<Vec<_>>(),
    )
    .await;
    let open = queue_when(&node, "doomed", Duration::from_secs(30), |s| {
        s["consumer"]["breaker"] == "open"
    })
    .await;
    assert_eq!(open["consumer_concurrency"], 0, "{open}");
    let failed = open["failed_attempts"].as_u64().unwrap();
    assert!(failed >= 3, "{open}");
    // Open for 3 s: nothing is delivered meanwhile. Watched until the probe ends it: a
    // reading taken at least 1 s after the breaker was seen open still shows no attempt.
    let seen_open = Instant::now();
    let mut quiet_until = seen_open;
    // Then one probe, which fails and opens it again.
    let probed = wait_for("the breaker's probe", Duration::from_secs(15), async || {
        let asked = Instant::now();
        let stats = queue_stats(&node, "doomed").await;
        if stats["failed_attempts"].as_u64().unwrap() > failed {
            return Ok(stats);
        }
        quiet_until = asked;
        Err(stats)
    })
    .await;
    let quiet = quiet_until - seen_open;
    assert!(
        quiet >= Duration::from_secs(1),
        "the open breaker let an attempt through {quiet:?} after it was seen open: {probed}"
    );
    assert_eq!(
        probed["failed_attempts"].as_u64().unwrap(),
        failed + 1,
        "{probed}"
    );
    let reopened = queue_when(&node, "doomed", Duration::from_secs(5), |s| {
        s["consumer"]["breaker"] == "open"
    })
    .await;
    assert_eq!(
        reopened["depth"], 5,
        "nothing is lost while the breaker is open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_creates_queues_and_binds_consumers() {
    let node = Node::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(common::guest("misbehave"), dir.path().join("worker.wasm")).unwrap();
    std::fs::write(
        dir.path().join("eddy.toml"),
        r#"
[queues.orders]
idempotency_window = "10m"

[functions.worker]
component = "worker.wasm"
publish = ["orders"]
consume = { queue = "orders", batch_size = 2, max_attempts = 4, path = "/worker/echo" }
"#,
    )
    .unwrap();
    common::stdout_ok(&node.cli_in(dir.path(), &["deploy"]));
    let stats = queue_stats(&node, "orders").await;
    assert_eq!(stats["idempotency_window_ms"], 600_000, "{stats}");
    assert_eq!(stats["consumer"]["function"], "worker", "{stats}");
    assert_eq!(stats["consumer"]["batch_size"], 2, "{stats}");
    assert_eq!(stats["consumer"]["max_attempts"], 4, "{stats}");
    // The function may publish to the queue it consumes; the messages get delivered.
    let reply = node
        .send(
            node.http
                .post(node.url("/worker/publish?queue=orders"))
                .body("hi"),
        )
        .await;
    assert!(reply.body.starts_with("202 "), "{reply:?}");
    queue_when(&node, "orders", Duration::from_secs(30), |s| {
        s["succeeded"] == 1
    })
    .await;
    // Deploying again leaves the queue as it is.
    common::stdout_ok(&node.cli_in(dir.path(), &["deploy"]));
    assert_eq!(queue_stats(&node, "orders").await["succeeded"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deliverys_answer_is_read_to_its_end_but_never_held() {
    let node = Node::start();
    node.deploy_ok("worker", "misbehave", json!({})).await;
    create_queue(&node, "jobs").await;
    // Each delivery answers 200 with 48 MB; the node needs only the status.
    consume(
        &node,
        "jobs",
        json!({"function": "worker", "path": "/worker/big?bytes=48000000", "max_concurrency": 1}),
    )
    .await;
    let before = node.peak_rss_bytes();
    publish_all(&node, "jobs", &["a".to_string(), "b".to_string()]).await;
    let done = queue_when(&node, "jobs", Duration::from_secs(120), |s| {
        s["succeeded"].as_u64().unwrap() == 2
    })
    .await;
    assert_eq!(done["dead_lettered"], 0, "{done}");
    let grown = node.peak_rss_bytes().saturating_sub(before);
    assert!(
        grown < 32 << 20,
        "the node's peak RSS grew by {} MiB for 48 MB answers",
        grown >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_cover_every_deploy_and_batches_fit_in_a_request() {
    let node = Node::start_with_config(
        "[limits]\nrequest_body_bytes_max = 4096\nqueue_message_bytes_max = 1024\n",
    );
    node.deploy_ok("worker", "misbehave", json!({"timeout_ms": 30_000}))
        .await;
    create_queue(&node, "jobs").await;
    consume(
        &node,
        "jobs",
        json!({"function": "worker", "path": "/worker/echo", "batch_size": 50, "visibility_timeout_ms": 30_000}),
    )
    .await;
    // A deploy with a longer timeout raises the lease to match, and says so.
    let body = node
        .deploy_ok("worker", "misbehave", json!({"timeout_ms": 90_000}))
        .await;
    let adjusted = body["adjusted"].as_array().unwrap();
    assert_eq!(adjusted.len(), 1, "{body}");
    assert!(
        adjusted[0]
            .as_str()
            .unwrap()
            .contains("raised from 30000 to 90000"),
        "{body}"
    );
    let stats = queue_stats(&node, "jobs").await;
    assert_eq!(
        stats["consumer"]["visibility_timeout_ms"], 90_000,
        "{stats}"
    );
    // 50 messages of 900 bytes cannot go in one 4 KiB request: they are split, and none is
    // refused for its size.
    let bodies: Vec<String> = (0..50)
        .map(|i| format!("{i:03}{}", "m".repeat(897)))
        .collect();
    publish_all(&node, "jobs", &bodies).await;
    let done = queue_when(&node, "jobs", Duration::from_secs(60), |s| {
        s["succeeded"].as_u64().unwrap() == 50
    })
    .await;
    assert_eq!(done["dead_lettered"], 0, "{done}");
    assert_eq!(done["failed_attempts"], 0, "{done}");
    let records = node.wait_logs("worker", 13).await;
    assert!(
        records.iter().all(|r| r["status"] == 200),
        "a delivery was refused: {records:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_database_refuses_with_507_and_keeps_what_it_accepted() {
    let node = Node::start_with_config(
        "[limits]\nqueues_bytes_max = 1048576\nqueue_message_bytes_max = 65536\n",
    );
    create_queue(&node, "jobs").await;
    let body = "m".repeat(60_000);
    let (mut accepted, mut refused) = (0u64, 0u64);
    for _ in 0..40 {
        let (status, answer) = api(
            &node,
            reqwest::Method::POST,
            "/queues/jobs/batch",
            Some(json!({"messages": [{"data": body}]})),
        )
        .await;
        match status {
            202 => accepted += 1,
            507 => {
                assert_eq!(answer["error"]["code"], "queues_bytes_max", "{answer}");
                refused += 1;
            }
            other => panic!("{other}: {answer}"),
        }
    }
    assert!(
        accepted > 0 && refused > 0,
        "{accepted} accepted, {refused} refused"
    );
    let stats = queue_stats(&node, "jobs").await;
    assert_eq!(stats["depth"], accepted, "{stats}");
    // The node is otherwise fine: the control API and other functions answer.
    node.deploy_ok("hello", "hello-rust", json!({})).await;
    assert_eq!(node.get("/hello").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eddy_local_requests_count_against_the_instances_outbound_limit() {
    let node = Node::start();
    node.deploy_ok("burst", "misbehave", json!({"publish": ["jobs"]}))
        .await;
    create_queue(&node, "jobs").await;
    // 64 (OUTBOUND_REQUESTS_PER_INSTANCE_MAX) in flight at once; the rest are refused.
    let reply = node.get("/burst/burst?n=80&queue=jobs").await;
    assert_eq!(reply.body, "ok 64 limited 16 other 0", "{reply:?}");
    let entries = node.wait_logs("burst", 1).await;
    let log = entries[0]["log"].as_str().unwrap();
    assert!(log.contains("outbound_requests_per_instance_max"), "{log}");
    assert_eq!(queue_stats(&node, "jobs").await["depth"], 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_full_queue_does_not_fill_the_others() {
    let node = Node::start_with_config(
        "[limits]\nqueue_bytes_max = 100000\nqueue_message_bytes_max = 65536\n",
    );
    create_queue(&node, "big").await;
    create_queue(&node, "small").await;
    let body = "m".repeat(60_000);
    let publish = |queue: &'static str| {
        let body = body.clone();
        let node = &node;
        async move {
            api(
                node,
                reqwest::Method::POST,
                &format!("/queues/{queue}/batch"),
                Some(json!({"messages": [{"data": body}]})),
            )
            .await
        }
    };
    assert_eq!(publish("big").await.0, 202);
    let (status, answer) = publish("big").await;
    assert_eq!(status, 507, "{answer}");
    assert_eq!(answer["error"]["code"], "queue_bytes_max", "{answer}");
    assert_eq!(queue_stats(&node, "big").await["bytes"], 60_000);
    assert_eq!(publish("small").await.0, 202);
}
