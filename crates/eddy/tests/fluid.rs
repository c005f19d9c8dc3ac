//! Fluid execution: waiting on I/O is concurrent and costs no CPU, outgoing HTTP follows
//! each function's allowlist, admission control bounds every function, warm instances are
//! reused only when asked for, and idle ones go away (scale to zero). Metering shows it all.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Node, PROMPTLY, REACH_LOOPBACK, assert_api_error};
use eddy_runtime::limits::REUSE_LEFTOVER_RESOURCES_MAX;
use serde_json::{Value, json};

/// Delay of the slow upstream.
const UPSTREAM_DELAY: Duration = Duration::from_millis(200);

/// A local upstream on loopback: `/slow` answers after `UPSTREAM_DELAY`, `/fast` at once.
/// Stops when the returned handle is dropped (the test's runtime ends).
async fn upstream() -> SocketAddr {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/slow",
            get(|| async {
                // The slowness under test (requests waiting on I/O), not synchronisation.
                tokio::time::sleep(UPSTREAM_DELAY).await;
                "slow upstream"
            }),
        )
        .route("/fast", get(|| async { "fast upstream" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A local upstream on loopback whose `/held` requests are answered only once the test
/// releases them: the test sees when an outgoing request is in flight and decides when it
/// ends.
struct HeldUpstream {
    addr: SocketAddr,
    /// `/held` requests that have arrived.
    arrived: Arc<AtomicUsize>,
    release: tokio::sync::watch::Sender<bool>,
}

async fn held_upstream() -> HeldUpstream {
    use axum::routing::get;
    let arrived = Arc::new(AtomicUsize::new(0));
    let (release, released) = tokio::sync::watch::channel(false);
    let counter = arrived.clone();
    let app = axum::Router::new().route(
        "/held",
        get(move || {
            let (counter, mut released) = (counter.clone(), released.clone());
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = released.wait_for(|r| *r).await;
                "held upstream"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    HeldUpstream {
        addr,
        arrived,
        release,
    }
}

/// The misbehave path that GETs `path` from the local upstream `at`.
fn outgoing(function: &str, at: SocketAddr, path: &str) -> String {
    format!("/{function}/outgoing?to=127.0.0.1:{}{path}", at.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_requests_waiting_on_a_slow_upstream_run_together_and_meter_little_cpu() {
    let upstream = upstream().await;
    let node = Node::start_with_config(REACH_LOOPBACK);
    node.deploy_ok(
        "mis",
        "misbehave",
        json!({"allow_outbound": [format!("127.0.0.1:{}", upstream.port())]}),
    )
    .await;
    let path = outgoing("mis", upstream, "/slow");
    assert_eq!(node.get(&path).await.body, "outgoing ok: 200 slow upstream");

    const REQUESTS: usize = 200;
    let started = Instant::now();
    let (replies, peak) = tokio::join!(
        futures::future::join_all((0..REQUESTS).map(|_| node.get(&path))),
        async {
            // While they wait, the function's 100 slots (its default max_concurrency) are
            // all busy and the rest queue; nothing waits behind a CPU.
            let mut peak = (0, 0);
            for _ in 0..200 {
                let s = node.stats("mis").await;
                let now = (
                    s["in_flight"].as_u64().unwrap(),
                    s["queued"].as_u64().unwrap(),
                );
                peak = (peak.0.max(now.0), peak.1.max(now.1));
                if peak.0 == 100 && peak.1 > 0 {
                    break;
                }
                // The sampling interval of the peak, not synchronisation: the assertions
                // below need a sample taken while the requests are all waiting.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            peak
        }
    );
    let elapsed = started.elapsed();
    assert_eq!(peak.0, 100, "100 invocations waited at once: {peak:?}");
    assert!(peak.1 > 0, "the rest queued: {peak:?}");
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body, "outgoing ok: 200 slow upstream");
    }
    // One at a time this is 200 × 200 ms = 40 s. The function's default max_concurrency
    // (100) runs them in two waves; allow a wide margin for a loaded machine.
    assert!(
        elapsed < UPSTREAM_DELAY * 40,
        "200 waiting requests took {elapsed:?}: they did not wait concurrently"
    );

    let s = node
        .stats_when("mis", "every request metered", |s| {
            s["invocations"] == REQUESTS + 1
        })
        .await;
    assert_eq!(s["errors"], 0, "{s}");
    assert_eq!(s["rejected"], 0, "{s}");
    let wall = s["wall_ms_total"].as_f64().unwrap();
    let cpu = s["cpu_ms_total"].as_f64().unwrap();
    assert!(wall >= 200.0 * (REQUESTS + 1) as f64, "{s}");
    assert!(cpu > 0.0, "CPU time is metered: {s}");
    assert!(
        cpu * 10.0 < wall,
        "waiting must not be metered as CPU: cpu {cpu} ms of wall {wall} ms"
    );
    // Each recorded invocation shows the same: CPU a small fraction of its wall time. (At
    // this rate plain successes are recorded up to invocation_records_per_second_max.)
    let entries = node.wait_logs("mis", 50).await;
    for entry in &entries {
        let (cpu, wall) = (
            entry["cpu_ms"].as_f64().unwrap(),
            entry["duration_ms"].as_f64().unwrap(),
        );
        assert!(wall >= 200.0 && cpu * 4.0 < wall, "{entry}");
        assert_eq!(entry["fresh_instance"], true, "{entry}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_requests_follow_the_allowlist() {
    let allowed = upstream().await;
    let other = upstream().await;
    let node = Node::start_with_config(REACH_LOOPBACK);
    node.deploy_ok(
        "mis",
        "misbehave",
        json!({"allow_outbound": [format!("http://127.0.0.1:{}", allowed.port())]}),
    )
    .await;
    let reply = node.get(&outgoing("mis", allowed, "/fast")).await;
    assert_eq!(reply.body, "outgoing ok: 200 fast upstream");
    let reply = node.get(&outgoing("mis", other, "/fast")).await;
    assert_eq!(reply.body, "outgoing refused: ErrorCode::HttpRequestDenied");
    let entries = node.wait_logs("mis", 2).await;
    let log = entries[1]["log"].as_str().unwrap();
    assert!(
        log.contains(&format!(
            "outgoing request to http://127.0.0.1:{}/fast denied: not in this function's outbound allowlist; deploy with --allow-outbound http://127.0.0.1:{}",
            other.port(),
            other.port()
        )),
        "{log}"
    );

    // `*` allows everything, but only when asked for.
    node.deploy_ok("any", "misbehave", json!({"allow_outbound": ["*"]}))
        .await;
    let reply = node.get(&outgoing("any", other, "/fast")).await;
    assert_eq!(reply.body, "outgoing ok: 200 fast upstream");

    // A closed port is a clear connection error, not a hang.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let reply = node.get(&outgoing("any", closed, "/")).await;
    assert_eq!(reply.body, "outgoing refused: ErrorCode::ConnectionRefused");

    // Bad rules are refused at deploy with the reason.
    let (status, body) = node
        .deploy(
            "bad",
            common::guest_bytes("misbehave"),
            json!({"allow_outbound": ["ftp://x"]}),
        )
        .await;
    assert_api_error(
        status,
        &body,
        400,
        "only http and https URLs can be allowed",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_function_answers_503_with_retry_after_and_meters_the_rejection() {
    let node = Node::start();
    node.deploy_ok(
        "mis",
        "misbehave",
        json!({"max_concurrency": 2, "max_queue": 0}),
    )
    .await;
    let slow = || node.get("/mis/sleep?ms=3000");
    let (first, second, third) = tokio::join!(slow(), slow(), async {
        // Let the two slow requests take both slots first.
        node.stats_when("mis", "both slow requests in flight", |s| {
            s["in_flight"] == 2
        })
        .await;
        node.get("/mis/echo").await
    });
    assert_eq!((first.status, second.status), (200, 200));
    third.assert_refused(503, "max_concurrency");
    assert_eq!(third.header("retry-after"), Some("1"));
    assert!(third.body.contains("max_concurrency (2)"), "{}", third.body);
    let s = node
        .stats_when("mis", "both slow requests metered", |s| {
            s["invocations"] == 2
        })
        .await;
    assert_eq!(s["rejected"], 1, "{s}");
    assert_eq!(s["outcomes"]["rejected"], 1, "{s}");

    // With a queue, a request waits for a slot instead, within max_wait.
    node.deploy_ok(
        "queued",
        "misbehave",
        json!({"max_concurrency": 1, "max_queue": 5, "max_wait_ms": 5000}),
    )
    .await;
    let (a, b) = tokio::join!(
        node.get("/queued/sleep?ms=300"),
        node.get("/queued/sleep?ms=300")
    );
    assert_eq!((a.status, b.status), (200, 200));
    node.deploy_ok(
        "impatient",
        "misbehave",
        json!({"max_concurrency": 1, "max_queue": 5, "max_wait_ms": 100}),
    )
    .await;
    let (a, b) = tokio::join!(node.get("/impatient/sleep?ms=2000"), async {
        // The slow request holds the only slot; this one queues behind it.
        node.stats_when("impatient", "the slow request in flight", |s| {
            s["in_flight"] == 1
        })
        .await;
        node.get("/impatient/echo").await
    });
    assert_eq!(a.status, 200);
    b.assert_refused(503, "max_wait_ms");

    // Settings the node cannot honour are refused at deploy.
    let (status, body) = node
        .deploy(
            "huge",
            common::guest_bytes("misbehave"),
            json!({"max_concurrency": 100000}),
        )
        .await;
    assert_api_error(
        status,
        &body,
        422,
        "above this node's concurrency_max (750)",
    );
    let (status, body) = node
        .deploy(
            "greedy",
            common::guest_bytes("misbehave"),
            json!({"max_concurrency": 700, "reserved_concurrency": 700}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = node
        .deploy(
            "greedy2",
            common::guest_bytes("misbehave"),
            json!({"reserved_concurrency": 100}),
        )
        .await;
    assert_api_error(
        status,
        &body,
        422,
        "reserve 700 of its concurrency_max (750)",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_keeps_module_state_only_when_asked_and_never_after_a_failure() {
    let node = Node::start();
    node.deploy_ok("fresh", "misbehave", json!({})).await;
    node.deploy_ok(
        "warm",
        "misbehave",
        json!({"reuse": true, "reuse_idle_timeout_ms": 1000}),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(node.get("/fresh/count").await.body, "1");
    }
    for n in 1..=3 {
        assert_eq!(node.get("/warm/count").await.body, n.to_string());
    }
    // A trap discards the instance: the next request starts from fresh state.
    assert_eq!(node.get("/warm/trap").await.status, 500);
    assert_eq!(node.get("/warm/count").await.body, "1");
    assert_eq!(node.get("/warm/count").await.body, "2");
    // So does a timeout or a memory limit.
    node.deploy_ok(
        "limited",
        "misbehave",
        json!({"reuse": true, "timeout_ms": 500, "memory_bytes_max": 16 << 20}),
    )
    .await;
    assert_eq!(node.get("/limited/count").await.body, "1");
    assert_eq!(node.get("/limited/loop").await.status, 504);
    assert_eq!(node.get("/limited/count").await.body, "1");
    assert_eq!(node.get("/limited/count").await.body, "2");
    assert_eq!(node.get("/limited/alloc").await.status, 500);
    assert_eq!(node.get("/limited/count").await.body, "1");

    let s = node
        .stats_when("warm", "six invocations metered", |s| s["invocations"] == 6)
        .await;
    assert_eq!(
        s["cold_starts"], 2,
        "fresh after deploy and after the trap: {s}"
    );
    assert_eq!(s["instances_live"], 1, "{s}");
    let fresh = node
        .stats_when("fresh", "three invocations metered", |s| {
            s["invocations"] == 3
        })
        .await;
    assert_eq!(fresh["cold_starts"], 3, "{fresh}");
    assert_eq!(fresh["instances_live"], 0, "{fresh}");

    // Scale to zero: past the idle timeout the warm instance is dropped.
    node.stats_when("warm", "the idle instance dropped", |s| {
        s["instances_live"] == 0
    })
    .await;
    assert_eq!(node.get("/warm/count").await.body, "1");

    // max_requests bounds one instance's life.
    node.deploy_ok("short", "misbehave", json!({"reuse_max_requests": 2}))
        .await;
    let counts: Vec<String> =
        futures::future::join_all((0..5).map(|_| async { node.get("/short/count").await.body }))
            .await;
    assert!(counts.iter().all(|c| c == "1" || c == "2"), "{counts:?}");
    let mut sequential = Vec::new();
    for _ in 0..4 {
        sequential.push(node.get("/short/count").await.body);
    }
    assert!(
        sequential.iter().all(|c| c == "1" || c == "2"),
        "{sequential:?}"
    );

    // A guest that returns with its body still open is not reused: its caller gets a body
    // cut off as failed, not a hang and not a clean short body, and the next request gets
    // a fresh instance.
    node.deploy_ok(
        "leaky",
        "misbehave",
        json!({"reuse": true, "timeout_ms": 1000}),
    )
    .await;
    assert_eq!(node.get("/leaky/count").await.body, "1");
    // Depending on timing the connection ends before the head or inside the body.
    let leaked = tokio::time::timeout(Duration::from_secs(10), async {
        match node.http.get(node.url("/leaky/leak")).send().await {
            Err(error) => Err(error),
            Ok(response) => response.text().await,
        }
    })
    .await;
    assert!(matches!(leaked, Ok(Err(_))), "{leaked:?}");
    assert_eq!(node.get("/leaky/count").await.body, "1");

    // Handles a guest leaves open (an interpreter's garbage not yet collected) are allowed
    // up to REUSE_LEFTOVER_RESOURCES_MAX; past it the instance is replaced.
    let half = REUSE_LEFTOVER_RESOURCES_MAX / 2 + 1;
    let hoard = format!("/leaky/hoard?n={half}");
    let mut counts = Vec::new();
    for _ in 0..3 {
        counts.push(node.get(&hoard).await.body);
    }
    assert_eq!(counts, ["2", "3", "1"], "{half} handles left per request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_and_metrics_report_every_invocation() {
    let node = Node::start();
    node.deploy_ok("mis", "misbehave", json!({"reuse": true}))
        .await;
    assert_eq!(node.get("/mis/trap").await.status, 500);
    for _ in 0..3 {
        assert_eq!(node.get("/mis/echo").await.status, 200);
    }
    let s = node
        .stats_when("mis", "four invocations metered", |s| s["invocations"] == 4)
        .await;
    for key in [
        "invocations",
        "errors",
        "rejected",
        "wall_ms_total",
        "cpu_ms_total",
        "latency_ms_p50",
        "latency_ms_p99",
        "cold_starts",
        "instances_live",
    ] {
        assert!(s.get(key).is_some(), "stats lack {key}: {s}");
    }
    assert_eq!(s["errors"], 1, "{s}");
    assert_eq!(s["outcomes"]["trap"], 1, "{s}");
    assert_eq!(s["outcomes"]["ok"], 3, "{s}");
    assert!(s["response_bytes"].as_u64().unwrap() > 0, "{s}");
    assert!(s["latency_ms_p50"].as_f64().unwrap() > 0.0, "{s}");

    // The CLI prints the same JSON, and a summary.
    let output = node.cli(&["stats", "mis", "--since", "10m", "--json"]);
    let cli: Value = serde_json::from_str(&common::stdout_ok(&output)).unwrap();
    assert_eq!(cli["invocations"], 4);
    let summary = common::stdout_ok(&node.cli(&["stats", "mis"]));
    assert!(
        summary.contains("invocations   4 (1 errors, 0 rejected"),
        "{summary}"
    );
    let missing = node.cli(&["stats", "nope"]);
    assert!(common::stderr_err(&missing).contains("no function `nope`"));

    // Prometheus text on the admin listener, with the token.
    let metrics = node
        .http
        .get(format!("http://{}/metrics", node.admin))
        .bearer_auth(&node.token)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    for line in [
        "eddy_invocations_total{function=\"mis\",outcome=\"ok\"} 3",
        "eddy_invocations_total{function=\"mis\",outcome=\"trap\"} 1",
        "eddy_instances_live{function=\"mis\"} 1",
        "eddy_node_concurrency_max 750",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "metrics lack `{line}`:\n{text}"
        );
    }
    assert!(
        text.contains("eddy_invocation_cpu_seconds_total{function=\"mis\"}"),
        "{text}"
    );
    let anonymous = node
        .http
        .get(format!("http://{}/metrics", node.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_survive_a_restart() {
    let mut node = Node::start();
    node.deploy_ok("mis", "misbehave", json!({})).await;
    for _ in 0..5 {
        assert_eq!(node.get("/mis/echo").await.status, 200);
    }
    node.stats_when("mis", "five invocations metered", |s| s["invocations"] == 5)
        .await;
    assert!(node.terminate(), "{}", node.output());
    let node = Node::start_in(node.state.clone(), "");
    let s = node.stats("mis").await;
    assert_eq!(s["invocations"], 5, "{s}");
    assert_eq!(s["instances_live"], 0, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_requests_stop_at_the_node_timeout_and_response_size() {
    let upstream = upstream().await;
    let node = Node::start_with_config(&format!(
        "{REACH_LOOPBACK}[limits]\noutbound_timeout_ms = 50\noutbound_response_bytes_max = 8\n",
    ));
    node.deploy_ok(
        "mis",
        "misbehave",
        json!({"allow_outbound": [format!("127.0.0.1:{}", upstream.port())]}),
    )
    .await;
    // The upstream answers after 200 ms; the node waits 50 ms for the head.
    let reply = node.get(&outgoing("mis", upstream, "/slow")).await;
    assert_eq!(
        reply.body,
        "outgoing refused: ErrorCode::ConnectionReadTimeout"
    );
    // "fast upstream" is 13 bytes, above the 8 allowed (declared by content-length).
    let reply = node.get(&outgoing("mis", upstream, "/fast")).await;
    assert_eq!(
        reply.body,
        "outgoing refused: ErrorCode::HttpResponseBodySize(Some(13))"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_requests_in_flight_are_bounded_node_wide() {
    let upstream = held_upstream().await;
    let node = Node::start_with_config(&format!(
        "{REACH_LOOPBACK}[limits]\noutbound_requests_in_flight_max = 1\n"
    ));
    node.deploy_ok(
        "mis",
        "misbehave",
        json!({"allow_outbound": [format!("127.0.0.1:{}", upstream.addr.port())]}),
    )
    .await;
    let path = outgoing("mis", upstream.addr, "/held");
    let (a, b) = tokio::join!(node.get(&path), async {
        // The first request's outgoing call holds the node's only slot until released.
        common::wait_until(
            "the first outgoing request at the upstream",
            PROMPTLY,
            async || upstream.arrived.load(Ordering::SeqCst) == 1,
        )
        .await;
        let b = tokio::time::timeout(PROMPTLY, node.get(&path)).await;
        upstream.release.send_replace(true);
        b.expect("the second outgoing request waited instead of being refused")
    });
    assert_eq!(
        [a.body, b.body],
        [
            "outgoing ok: 200 held upstream".to_string(),
            "outgoing refused: ErrorCode::ConnectionLimitReached".to_string()
        ]
    );
    let entries = node.wait_logs("mis", 2).await;
    assert!(
        entries.iter().any(|e| e["log"]
            .as_str()
            .unwrap()
            .contains("limits.outbound_requests_in_flight_max")),
        "{entries:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_keeps_at_most_idle_instances_max_warm() {
    let node = Node::start_with_config("[limits]\nidle_instances_max = 1\n");
    node.deploy_ok("a", "misbehave", json!({"reuse": true}))
        .await;
    node.deploy_ok("b", "misbehave", json!({"reuse": true}))
        .await;
    assert_eq!(node.get("/a/count").await.body, "1");
    assert_eq!(node.get("/b/count").await.body, "1");
    // `a` took the only idle slot; `b`'s instance was dropped after its request.
    assert_eq!(node.get("/a/count").await.body, "2");
    assert_eq!(node.get("/b/count").await.body, "1");
    let (a, b) = (node.stats("a").await, node.stats("b").await);
    assert_eq!(
        (a["instances_live"].as_u64(), b["instances_live"].as_u64()),
        (Some(1), Some(0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_flags_and_manifest_keys_reach_the_function() {
    let node = Node::start();
    let guest = common::guest("misbehave");
    let output = node.cli(&[
        "deploy",
        "flags",
        guest.to_str().unwrap(),
        "--allow-outbound",
        "api.example.com",
        "--allow-outbound",
        "127.0.0.1:9000",
        "--max-concurrency",
        "3",
        "--max-queue",
        "0",
        "--max-wait",
        "250ms",
        "--reserved-concurrency",
        "1",
        "--reuse-idle-timeout",
        "2s",
    ]);
    common::stdout_ok(&output);
    let (_, f) = node.api_get("/functions/flags").await;
    assert_eq!(
        f["allow_outbound"],
        json!(["api.example.com", "127.0.0.1:9000"])
    );
    assert_eq!(
        (
            &f["max_concurrency"],
            &f["max_queue"],
            &f["max_wait_ms"],
            &f["reserved_concurrency"]
        ),
        (&json!(3), &json!(0), &json!(250), &json!(1))
    );
    assert_eq!(
        f["reuse"],
        json!({"max_requests": 10000, "idle_timeout_ms": 2000})
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("eddy.toml"),
        format!(
            "[functions.manifest]\ncomponent = \"{}\"\nreuse = true\nmax_wait = \"1s\"\nallow_outbound = [\"*\"]\n",
            guest.display()
        ),
    )
    .unwrap();
    common::stdout_ok(&node.cli_in(dir.path(), &["deploy"]));
    let (_, f) = node.api_get("/functions/manifest").await;
    assert_eq!(f["allow_outbound"], json!(["*"]));
    assert_eq!(f["max_wait_ms"], 1000);
    assert_eq!(f["reuse"]["max_requests"], 10000);

    // Tuning flags cannot contradict reuse = false.
    let (status, body) = node
        .deploy(
            "bad",
            common::guest_bytes("misbehave"),
            json!({"reuse": false, "reuse_max_requests": 5}),
        )
        .await;
    assert_api_error(status, &body, 400, "cannot be given with reuse = false");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_high_rates_plain_successes_are_counted_but_not_each_recorded() {
    let node = Node::start_with_config("[limits]\ninvocation_records_per_second_max = 2\n");
    node.deploy_ok("mis", "misbehave", json!({})).await;
    let replies = futures::future::join_all((0..20).map(|_| node.get("/mis/echo"))).await;
    assert!(replies.iter().all(|r| r.status == 200));
    for _ in 0..3 {
        assert_eq!(node.get("/mis/trap").await.status, 500);
    }
    assert_eq!(node.get("/mis/log").await.status, 200);
    node.stats_when("mis", "24 invocations metered", |s| s["invocations"] == 24)
        .await;
    // Every failure and every invocation with output has its record; the plain successes
    // only as many as the budget allows in the seconds they spanned.
    let entries = common::wait_for("the record of /mis/log", PROMPTLY, async || {
        let (_, body) = node.api_get("/functions/mis/logs?tail=1000").await;
        let entries = body["entries"].as_array().unwrap().clone();
        if entries.iter().any(|e| e["path"] == "/mis/log") {
            Ok(entries)
        } else {
            Err(Value::from(entries))
        }
    })
    .await;
    let outcomes: Vec<&str> = entries
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| **o == "trap").count(),
        3,
        "{outcomes:?}"
    );
    assert!(
        entries.iter().any(|e| e["path"] == "/mis/log"),
        "{outcomes:?}"
    );
    let echoes = entries.iter().filter(|e| e["path"] == "/mis/echo").count();
    assert!(
        (1..20).contains(&echoes),
        "{echoes} of 20 plain successes recorded"
    );
}
