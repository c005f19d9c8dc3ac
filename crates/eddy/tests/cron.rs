//! Cron schedules: ticks arrive as CloudEvents on time, overlapping ticks are skipped when
//! asked, ticks missed while the node was down are skipped or run once, and no tick runs
//! twice, also across a restart; in a cluster whose nodes are killed, no tick is lost.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Node, REACH_LOOPBACK, now_ms, unix_ms, wait_for, wait_until};
use serde_json::{Value, json};

/// A recorder on loopback: `POST /relay` keeps each body (what misbehave `relay` sends:
/// the tick request as text).
async fn recorder() -> (u16, Arc<Mutex<Vec<String>>>) {
    use axum::extract::State;
    use axum::routing::post;
    let relayed = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route(
            "/relay",
            post(
                |State(r): State<Arc<Mutex<Vec<String>>>>, body: String| async move {
                    r.lock().unwrap().push(body);
                    "ok"
                },
            ),
        )
        .with_state(relayed.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, relayed)
}

/// One relayed tick: its function (the `f` query parameter), ce-id and ce-time.
#[derive(Clone, Debug)]
struct Tick {
    function: String,
    id: String,
    time: String,
    text: String,
}

fn ticks(relayed: &Mutex<Vec<String>>) -> Vec<Tick> {
    let header = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("header: {name}: ")))
            .unwrap_or_default()
            .to_string()
    };
    relayed
        .lock()
        .unwrap()
        .iter()
        .map(|text| Tick {
            function: text
                .lines()
                .find_map(|l| l.strip_prefix("path: "))
                .and_then(|p| p.split("f=").nth(1))
                .unwrap_or_default()
                .to_string(),
            id: header(text, "ce-id"),
            time: header(text, "ce-time"),
            text: text.clone(),
        })
        .collect()
}

fn relay_schedule(port: u16, function: &str, extra: Value) -> Value {
    let mut schedule = json!({
        "cron": "* * * * * *",
        "path": format!("/{function}/relay?to=127.0.0.1:{port}/relay&f={function}"),
    });
    for (k, v) in extra.as_object().unwrap() {
        schedule[k] = v.clone();
    }
    json!({
        "allow_outbound": [format!("127.0.0.1:{port}")],
        "schedule": schedule,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_second_schedule_delivers_cloudevent_ticks() {
    let (port, relayed) = recorder().await;
    let node = Node::start_with_config(REACH_LOOPBACK);
    node.deploy_ok(
        "ticker",
        "misbehave",
        relay_schedule(port, "ticker", json!({})),
    )
    .await;
    wait_until("three ticks", Duration::from_secs(20), async || {
        relayed.lock().unwrap().len() >= 3
    })
    .await;
    let ticks = ticks(&relayed);
    let mut times: Vec<i64> = ticks.iter().map(|t| unix_ms(&t.time)).collect();
    for tick in &ticks {
        assert!(
            tick.text.contains("header: ce-type: dev.eddy.cron.tick"),
            "{}",
            tick.text
        );
        assert!(
            tick.text
                .contains("header: ce-source: /functions/ticker/schedule"),
            "{}",
            tick.text
        );
        assert!(
            tick.text.contains("header: ce-specversion: 1.0"),
            "{}",
            tick.text
        );
        assert!(
            tick.text
                .contains(&format!("{{\"scheduled_time\":\"{}\"}}", tick.time)),
            "{}",
            tick.text
        );
        assert_eq!(tick.id, format!("ticker@{}", tick.time));
        assert!(
            tick.time.ends_with(".000Z"),
            "ticks are on whole seconds: {}",
            tick.time
        );
    }
    times.sort();
    times.dedup();
    assert_eq!(times.len(), ticks.len(), "a tick ran twice: {ticks:?}");
    assert!(times.windows(2).all(|w| w[1] - w[0] >= 1000), "{times:?}");
    // A bad schedule is refused at deploy with the reason.
    let (status, body) = node
        .deploy(
            "bad",
            common::guest_bytes("misbehave"),
            json!({"schedule": {"cron": "61 * * * *"}}),
        )
        .await;
    common::assert_api_error(status, &body, 400, "not a cron expression");
    let (status, body) = node
        .deploy(
            "bad",
            common::guest_bytes("misbehave"),
            json!({"schedule": {"cron": "* * * * *", "timezone": "Mars/Olympus"}}),
        )
        .await;
    common::assert_api_error(status, &body, 400, "not an IANA time zone");
}

/// Invocation records of `function` so far.
async fn runs(node: &Node, function: &str) -> usize {
    let (status, body) = node
        .api_get(&format!("/functions/{function}/logs?limit=1000"))
        .await;
    assert_eq!(status, 200, "{body}");
    body["entries"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_ticks_are_skipped_unless_allowed() {
    let node = Node::start();
    // Each run takes 2.5 s; ticks come every second.
    let sleepy = |name: &str, overlap: &str| json!({"schedule": {"cron": "* * * * * *", "path": format!("/{name}/sleep?ms=2500"), "overlap": overlap}});
    node.deploy_ok("skipper", "misbehave", sleepy("skipper", "skip"))
        .await;
    node.deploy_ok("stacker", "misbehave", sleepy("stacker", "allow"))
        .await;
    wait_for(
        "six runs of the overlapping schedule",
        Duration::from_secs(30),
        async || match runs(&node, "stacker").await {
            6.. => Ok(()),
            n => Err(format!("{n} runs; the node's output:\n{}", node.output())),
        },
    )
    .await;
    // Six overlapping runs finished in the time the skipping schedule ran at most a third.
    let skipped = runs(&node, "skipper").await;
    assert!(
        (1..=3).contains(&skipped),
        "skipper ran {skipped} times beside 6 overlapping runs"
    );
    assert!(
        node.output()
            .contains("tick skipped: the previous run is still going")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_missed_during_a_restart_are_skipped_or_run_once_and_never_twice() {
    let (port, relayed) = recorder().await;
    let mut node = Node::start_with_config(REACH_LOOPBACK);
    node.deploy_ok(
        "once",
        "misbehave",
        relay_schedule(port, "once", json!({"missed": "run-once"})),
    )
    .await;
    node.deploy_ok(
        "skip",
        "misbehave",
        relay_schedule(port, "skip", json!({"missed": "skip"})),
    )
    .await;
    wait_until("a tick of each", Duration::from_secs(20), async || {
        let t = ticks(&relayed);
        t.iter().any(|t| t.function == "once") && t.iter().any(|t| t.function == "skip")
    })
    .await;
    assert!(node.terminate(), "{}", node.output());
    let stopped = now_ms();
    // The outage under test, not synchronisation: the node stays down across two or three
    // ticks of the one-second schedule, so there are missed ticks to skip or run once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restarting = now_ms();
    let node = Node::start_in(node.state.clone(), REACH_LOOPBACK);
    let ready = now_ms();
    wait_until(
        "ticks after the restart",
        Duration::from_secs(20),
        async || {
            ticks(&relayed)
                .iter()
                .filter(|t| t.function == "skip" && unix_ms(&t.time) > ready)
                .count()
                >= 2
        },
    )
    .await;
    let all = ticks(&relayed);
    let mut ids: Vec<&str> = all.iter().map(|t| t.id.as_str()).collect();
    ids.sort();
    let before = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), before, "a tick ran twice: {all:?}");
    let during = |function: &str, until: i64| {
        all.iter()
            .filter(|t| t.function == function)
            .map(|t| unix_ms(&t.time))
            .filter(|&ms| ms > stopped && ms <= until)
            .count()
    };
    assert_eq!(
        during("skip", restarting),
        0,
        "skip ran a missed tick: {all:?}"
    );
    assert_eq!(during("skip", ready), 0, "skip ran a missed tick: {all:?}");
    assert_eq!(
        during("once", ready),
        1,
        "run-once: {all:?}\n{}",
        node.output()
    );
    assert!(
        node.output()
            .contains("skipped ticks that fell while the node was down")
    );
}

/// Two nodes on Postgres run one 1-second schedule while one of them is killed (SIGKILL)
/// and started again, twice: every tick runs, none is lost while a node is up, and a tick
/// runs twice only if its runner was killed during it (at most once per kill).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_run_once_across_a_cluster_whose_nodes_are_killed() {
    const KILLS: usize = 2;
    let schema = common::postgres::Schema::new("cron");
    let (port, relayed) = recorder().await;
    let config = schema.config_polling(REACH_LOOPBACK, 200);
    let mut a = Node::start_with_config(&config);
    let mut b = Node::start_with_config(&config);
    b.token = a.token.clone();
    // A short timeout and wait keep a killed runner's lease short (about 7 s).
    // `allow`: under `skip` a tick whose runner is killed mid-run holds up the next ticks
    // until its lease ends (it might still be running): the policy, not a lost tick.
    let mut deploy = relay_schedule(port, "ticker", json!({"overlap": "allow"}));
    deploy["timeout_ms"] = json!(2000);
    deploy["max_wait_ms"] = json!(100);
    a.deploy_ok("ticker", "misbehave", deploy).await;
    wait_until("three ticks", Duration::from_secs(20), async || {
        relayed.lock().unwrap().len() >= 3
    })
    .await;
    let started = ticks(&relayed)
        .iter()
        .map(|t| unix_ms(&t.time))
        .min()
        .unwrap();
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(1300)).await;
        a.kill();
        tokio::time::sleep(Duration::from_millis(700)).await;
        a = Node::start_in(a.state.clone(), &config);
    }
    // Past the longest lease of a tick the killed node held, and a check of the survivors.
    let until = now_ms() + 12_000;
    wait_until(
        "the leases to run out",
        Duration::from_secs(30),
        async || now_ms() > until,
    )
    .await;
    let ended = until - 9_000;
    let mut runs: std::collections::BTreeMap<i64, usize> = Default::default();
    for tick in ticks(&relayed) {
        *runs.entry(unix_ms(&tick.time)).or_default() += 1;
    }
    let missing: Vec<i64> = (started / 1000..=ended / 1000)
        .map(|s| s * 1000)
        .filter(|t| !runs.contains_key(t))
        .collect();
    assert!(
        missing.is_empty(),
        "ticks lost with a node up: {missing:?} of {runs:?}"
    );
    let twice: Vec<(&i64, &usize)> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.len() <= KILLS && twice.iter().all(|(_, n)| **n == 2),
        "ticks run more than their runners' deaths explain: {twice:?}"
    );
    drop(b);
}
