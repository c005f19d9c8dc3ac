//! Cost: real invocations priced under each built-in sheet and checked against the published
//! formulas computed here by hand; user sheets; budgets whose hard cap pauses a cron trigger
//! and then refuses HTTP with 503; the chart.

mod common;

use std::time::Duration;

use common::{
    Node, PROMPTLY, assert_api_error, stderr_err, stdout_ok, wait_for, wait_until, webhook_receiver,
};
use serde_json::{Value, json};

/// Published prices (us-east-1 / iad1), typed here from the pricing pages rather than read
/// from eddy's sheets, so a wrong sheet fails.
const LAMBDA_REQUEST_USD: f64 = 0.20 / 1e6;
const LAMBDA_X86_GB_SECOND_USD: f64 = 0.0000166667;
const LAMBDA_ARM_GB_SECOND_USD: f64 = 0.0000133334;
const VERCEL_INVOCATION_USD: f64 = 0.60 / 1e6;
const VERCEL_CPU_HOUR_USD: f64 = 0.128;
const VERCEL_MEMORY_GB_HOUR_USD: f64 = 0.0106;
const VERCEL_MEMORY_GB: f64 = 2.0;
const M7G_LARGE_USD_PER_HOUR: f64 = 0.0816;

/// Relative error allowed between eddy's figure and the hand computation: both sum the same
/// microsecond counts, so only floating-point rounding differs.
const PRECISION: f64 = 1e-9;

fn close(actual: f64, expected: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= expected.abs() * PRECISION,
        "{what}: eddy says {actual}, by hand {expected}"
    );
}

fn sheet<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["sheets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sheet"] == name)
        .unwrap_or_else(|| panic!("no sheet {name} in {report}"))
}

async fn cost(node: &Node, query: &str) -> Value {
    let (status, body) = node.api_get(&format!("/cost?{query}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sheet_prices_waiting_invocations_by_its_published_formula() {
    let node = Node::start();
    // 256 MiB: 0.25 GB in Lambda's GB-seconds.
    node.deploy_ok(
        "waiter",
        "misbehave",
        json!({"memory_bytes_max": 256 * 1024 * 1024}),
    )
    .await;
    const INVOCATIONS: usize = 5;
    for _ in 0..INVOCATIONS {
        let reply = node.get("/waiter/sleep?ms=100").await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    // Each invocation's own record: wall and CPU time in microseconds.
    let records = node.wait_logs("waiter", INVOCATIONS).await;
    let wall_ms: Vec<f64> = records
        .iter()
        .map(|r| r["duration_ms"].as_f64().unwrap())
        .collect();
    let cpu_ms: f64 = records.iter().map(|r| r["cpu_ms"].as_f64().unwrap()).sum();
    assert!(wall_ms.iter().all(|ms| *ms >= 100.0), "{wall_ms:?}");
    let billed_ms: f64 = wall_ms.iter().map(|ms| ms.ceil()).sum();
    let wall_s: f64 = wall_ms.iter().sum::<f64>() / 1e3;
    let cpu_s = cpu_ms / 1e3;
    let n = INVOCATIONS as f64;

    // Metering lands just after each answer; wait for all of it.
    let report = wait_for("every invocation priced", PROMPTLY, async || {
        let report = cost(&node, "function=waiter").await;
        if report["usage"]["invocations"] == INVOCATIONS {
            Ok(report)
        } else {
            Err(report)
        }
    })
    .await;
    assert_eq!(report["usage"]["invocations"], INVOCATIONS, "{report}");
    assert_eq!(report["usage"]["billed_wall_ms"].as_f64(), Some(billed_ms));

    // AWS Lambda: requests plus GB-seconds of wall time rounded up to 1 ms.
    for (name, rate) in [
        ("aws-lambda-x86", LAMBDA_X86_GB_SECOND_USD),
        ("aws-lambda-arm64", LAMBDA_ARM_GB_SECOND_USD),
    ] {
        let s = sheet(&report, name);
        assert_eq!(s["invocations"], INVOCATIONS);
        let by_hand = n * LAMBDA_REQUEST_USD + billed_ms / 1e3 * 0.25 * rate;
        close(s["cost_usd"].as_f64().unwrap(), by_hand, name);
        // Billed on CPU instead, the waiting would have been free.
        let on_cpu = n * LAMBDA_REQUEST_USD + cpu_s * 0.25 * rate;
        close(s["cpu_billing_usd"].as_f64().unwrap(), on_cpu, name);
        close(
            s["waiting_usd"].as_f64().unwrap(),
            by_hand - on_cpu,
            &format!("{name} waiting"),
        );
        assert!(s["waiting_usd"].as_f64().unwrap() > 0.9 * (by_hand - n * LAMBDA_REQUEST_USD));
    }

    // Vercel Fluid: invocations, active CPU hours, provisioned memory GB-hours.
    let s = sheet(&report, "vercel-fluid");
    let by_hand = n * VERCEL_INVOCATION_USD
        + cpu_s / 3600.0 * VERCEL_CPU_HOUR_USD
        + wall_s / 3600.0 * VERCEL_MEMORY_GB * VERCEL_MEMORY_GB_HOUR_USD;
    close(s["cost_usd"].as_f64().unwrap(), by_hand, "vercel-fluid");
    // Billed on wall time, Vercel's CPU part would have grown by the waiting.
    let on_wall = n * VERCEL_INVOCATION_USD
        + wall_s / 3600.0 * VERCEL_CPU_HOUR_USD
        + wall_s / 3600.0 * VERCEL_MEMORY_GB * VERCEL_MEMORY_GB_HOUR_USD;
    close(
        s["wall_billing_usd"].as_f64().unwrap(),
        on_wall,
        "vercel wall",
    );

    // The machine: its price for the window, all of it this function's (the only one).
    let s = sheet(&report, "dedicated");
    let hours = (report["to_ms"].as_f64().unwrap() - report["from_ms"].as_f64().unwrap()) / 3.6e6;
    close(
        s["cost_usd"].as_f64().unwrap(),
        M7G_LARGE_USD_PER_HOUR * hours,
        "dedicated",
    );
    assert_eq!(s["functions"][0]["cpu_share"], 1.0);

    // Break-even: the machine's month over the observed cost of one invocation.
    let lambda = sheet(&report, "aws-lambda-x86")["cost_usd"]
        .as_f64()
        .unwrap();
    let even = report["break_even"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["sheet"] == "aws-lambda-x86" && b["machine_sheet"] == "dedicated")
        .unwrap();
    close(
        even["invocations_per_month"].as_f64().unwrap(),
        M7G_LARGE_USD_PER_HOUR * 730.0 / (lambda / n),
        "break-even",
    );
    // `--sheet` picks sheets; the CLI's JSON is the same report.
    let out = stdout_ok(&node.cli(&[
        "cost",
        "--function",
        "waiter",
        "--sheet",
        "aws-lambda-x86",
        "--sheet",
        "dedicated",
        "--json",
    ]));
    let picked: Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = picked["sheets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sheet"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["aws-lambda-x86", "dedicated"]);
    assert_eq!(picked["break_even"].as_array().unwrap().len(), 1);
    // The table names every sheet and the break-even.
    let table = stdout_ok(&node.cli(&["cost"]));
    for expect in ["aws-lambda-arm64", "vercel-fluid", "MACHINE CHEAPER ABOVE"] {
        assert!(table.contains(expect), "{table}");
    }
    let err = stderr_err(&node.cli(&["cost", "--sheet", "heroku"]));
    assert!(err.contains("no price sheet named `heroku`"), "{err}");
    let err = stderr_err(&node.cli(&["cost", "--since", "90d"]));
    assert!(err.contains("rollup_retention_ms"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_set_the_machine_price_and_add_sheets() {
    let node = Node::start_with_config("[limits]\nprice_sheet_bytes_max = 2048\n");
    node.deploy_ok("f", "misbehave", json!({})).await;
    assert_eq!(node.get("/f/echo").await.status, 200);
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.toml");
    std::fs::write(
        &ours,
        "name = \"dedicated\"\ntitle = \"Our rack\"\nkind = \"machine\"\nsource = \"https://example.com/invoice\"\nas_of = \"2026-11-01\"\nusd_per_hour = 1.5\nvcpus = 8\n",
    )
    .unwrap();
    let out = stdout_ok(&node.cli(&["sheets", "add", ours.to_str().unwrap()]));
    assert!(out.contains("Our rack"), "{out}");
    let report = cost(&node, "since_ms=3600000").await;
    let s = sheet(&report, "dedicated");
    assert_eq!(s["usd_per_hour"], 1.5);
    let listing = stdout_ok(&node.cli(&["sheets"]));
    let row: Vec<&str> = listing
        .lines()
        .find(|l| l.starts_with("dedicated "))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(row[..3], ["dedicated", "machine", "yours"], "{listing}");

    // A sheet of one's own, then a bad one, a huge one, and removals.
    let cheap = dir.path().join("cheap.toml");
    std::fs::write(
        &cheap,
        "name = \"cheap-faas\"\ntitle = \"Cheap\"\nkind = \"per-invocation\"\nsource = \"https://example.com\"\nas_of = \"2026-11-01\"\nrequest_usd_per_million = 1.0\n",
    )
    .unwrap();
    stdout_ok(&node.cli(&["sheets", "add", cheap.to_str().unwrap()]));
    let report = cost(&node, "sheet=cheap-faas").await;
    assert_eq!(report["sheets"][0]["sheet"], "cheap-faas");

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"bad\"\ntitle = \"t\"\nkind = \"machine\"\nsource = \"s\"\nas_of = \"d\"\n",
    )
    .unwrap();
    let err = stderr_err(&node.cli(&["sheets", "add", bad.to_str().unwrap()]));
    assert!(err.contains("needs usd_per_hour"), "{err}");
    let huge = dir.path().join("huge.toml");
    std::fs::write(
        &huge,
        format!(
            "name = \"huge\"\ntitle = \"{}\"\nkind = \"machine\"\nsource = \"s\"\nas_of = \"d\"\nusd_per_hour = 1.0\n",
            "x".repeat(4096)
        ),
    )
    .unwrap();
    let err = stderr_err(&node.cli(&["sheets", "add", huge.to_str().unwrap()]));
    assert!(err.contains("price_sheet_bytes_max (2048 bytes)"), "{err}");

    let err = stderr_err(&node.cli(&["sheets", "rm", "aws-lambda-x86"]));
    assert!(err.contains("built-in"), "{err}");
    stdout_ok(&node.cli(&["sheets", "rm", "dedicated"]));
    let report = cost(&node, "sheet=dedicated").await;
    assert_eq!(report["sheets"][0]["usd_per_hour"], M7G_LARGE_USD_PER_HOUR);
}

async fn invocations(node: &Node, function: &str) -> u64 {
    let (_, stats) = node.api_get(&format!("/functions/{function}/stats")).await;
    stats["invocations"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_cap_pauses_cron_then_refuses_requests_with_503() {
    let (port, alerts) = webhook_receiver().await;
    let node = Node::start_with_config(&format!(
        "budget_webhook_hosts = [\"127.0.0.1:{port}\"]\n[limits]\nbudget_check_interval_ms = 100\n"
    ));
    node.deploy_ok(
        "capped",
        "misbehave",
        json!({
            "memory_bytes_max": 128 * 1024 * 1024,
            "schedule": {"cron": "* * * * * *", "path": "/capped/echo"},
        }),
    )
    .await;
    node.deploy_ok("other", "misbehave", json!({})).await;
    // The cron runs.
    wait_until("a cron tick", Duration::from_secs(10), async || {
        invocations(&node, "capped").await >= 1
    })
    .await;

    // A webhook whose host the node does not allow is refused.
    let (status, body) = put_budget(
        &node,
        "capped",
        json!({"monthly_usd": 1, "sheet": "aws-lambda-x86", "webhook": "http://example.com/x"}),
    )
    .await;
    assert_api_error(status, &body, 400, "budget_webhook_hosts");
    let (status, body) =
        put_budget(&node, "capped", json!({"monthly_usd": 1, "sheet": "nope"})).await;
    assert_api_error(status, &body, 400, "no price sheet named `nope`");

    // Each echo costs about $0.0000002 on Lambda x86 (the request fee, and 1 ms at 128 MB).
    // A budget of what the function spent so far plus ten such invocations: the cap pauses
    // background work at 50% and refuses requests at 100%.
    let spent = spent_now(&node, "capped").await;
    let per = LAMBDA_REQUEST_USD + 0.001 * 0.125 * LAMBDA_X86_GB_SECOND_USD;
    let monthly = spent + 10.0 * per;
    let out = stdout_ok(&node.cli(&[
        "budget",
        "set",
        "--function",
        "capped",
        "--monthly-usd",
        &monthly.to_string(),
        "--sheet",
        "aws-lambda-x86",
        "--alert-at",
        "40,100",
        "--webhook",
        &format!("http://127.0.0.1:{port}/alerts"),
        "--hard-cap",
        "--pause-background-at",
        "50",
    ]));
    assert!(out.contains("budget function/capped set"), "{out}");

    // Spend past half with requests: background pauses, requests still run. Each request
    // is metered before the state is read again, so the spending stops just past half.
    let mut sent = 0;
    while budget_state(&node).await == "ok" {
        assert!(sent < 40, "the budget never paused: {}", node.output());
        let metered = invocations(&node, "capped").await;
        assert_eq!(node.get("/capped/echo").await.status, 200);
        sent += 1;
        wait_until("the request to be metered", PROMPTLY, async || {
            invocations(&node, "capped").await > metered
        })
        .await;
    }
    assert_eq!(budget_state(&node).await, "background-paused");
    const SKIPPED: &str = "tick skipped: budget spent: function `capped`";
    wait_until("a skipped tick", Duration::from_secs(5), async || {
        node.output().contains(SKIPPED)
    })
    .await;
    let before = invocations(&node, "capped").await;
    // Two more ticks come and are skipped (each is logged): neither ran.
    let skipped = node.output().matches(SKIPPED).count();
    wait_until("two more skipped ticks", PROMPTLY, async || {
        node.output().matches(SKIPPED).count() >= skipped + 2
    })
    .await;
    assert_eq!(
        invocations(&node, "capped").await,
        before,
        "cron ticks ran while paused"
    );
    assert_eq!(node.get("/capped/echo").await.status, 200);

    // Spend the rest: requests get 503 with the reason and the month's end.
    let refused = wait_for("the cap to refuse a request", PROMPTLY, async || {
        let reply = node.get("/capped/echo").await;
        if reply.status == 503 {
            return Ok(reply);
        }
        assert_eq!(reply.status, 200, "{reply:?}");
        Err(format!("{reply:?}"))
    })
    .await;
    refused.assert_refused(503, "budget_spent");
    assert!(
        refused.body.contains("function `capped` has spent")
            && refused.body.contains("monthly budget")
            && refused.body.contains("aws-lambda-x86"),
        "{refused:?}"
    );
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!(retry > 0 && retry <= 31 * 24 * 3600, "{retry}");
    // Other functions are untouched.
    assert_eq!(node.get("/other/echo").await.status, 200);

    // Alerts: log lines, metrics and the webhook, once per threshold.
    wait_until("two webhook alerts", Duration::from_secs(5), async || {
        alerts.lock().unwrap().len() >= 2
    })
    .await;
    let thresholds: Vec<f64> = alerts
        .lock()
        .unwrap()
        .iter()
        .map(|a| a["threshold_percent"].as_f64().unwrap())
        .collect();
    assert_eq!(thresholds, [40.0, 100.0]);
    assert!(
        node.output()
            .contains("budget alert: function/capped has spent")
    );
    let metrics = node.metrics().await;
    assert!(
        metrics.contains(
            "eddy_budget_alerts_total{budget=\"function/capped\",threshold_percent=\"100\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("eddy_budget_spent_usd{budget=\"function/capped\"}"));

    // Raising the budget lifts the cap at once.
    cap(&node, "capped", "100", "aws-lambda-x86");
    wait_until("the cap to lift", Duration::from_secs(5), async || {
        node.get("/capped/echo").await.status == 200
    })
    .await;
    let listing = stdout_ok(&node.cli(&["budget"]));
    assert!(
        listing.contains("function/capped  aws-lambda-x86  $100.00"),
        "{listing}"
    );
    stdout_ok(&node.cli(&["budget", "rm", "--function", "capped"]));
    let err = stderr_err(&node.cli(&["budget", "rm", "--function", "capped"]));
    assert!(err.contains("no budget for function/capped"), "{err}");
}

/// `eddy budget set --function FUNCTION --monthly-usd USD --sheet SHEET --hard-cap`.
fn cap(node: &Node, function: &str, monthly_usd: &str, sheet: &str) {
    stdout_ok(&node.cli(&[
        "budget",
        "set",
        "--function",
        function,
        "--monthly-usd",
        monthly_usd,
        "--sheet",
        sheet,
        "--hard-cap",
    ]));
}

async fn put_budget(node: &Node, function: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .put(node.api_url(&format!("/budgets/functions/{function}")))
        .bearer_auth(&node.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// What `function` has spent this month so far on Lambda x86: every invocation its stats
/// count is in it (both read the meter's totals, those not yet written included).
async fn spent_now(node: &Node, function: &str) -> f64 {
    let report = cost(node, &format!("function={function}&sheet=aws-lambda-x86")).await;
    report["sheets"][0]["forecast"]["month_to_date_usd"]
        .as_f64()
        .unwrap()
}

async fn budget_state(node: &Node) -> String {
    let (status, body) = node.api_get("/budgets").await;
    assert_eq!(status, 200, "{body}");
    body["budgets"][0]["state"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_draws_every_sheet_and_the_break_even() {
    let node = Node::start();
    node.deploy_ok("drawn", "misbehave", json!({})).await;
    for _ in 0..3 {
        assert_eq!(node.get("/drawn/sleep?ms=20").await.status, 200);
    }
    wait_until("the three invocations to be priced", PROMPTLY, async || {
        cost(&node, "function=drawn").await["usage"]["invocations"] == 3
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cost.svg");
    let out = stdout_ok(&node.cli(&["cost", "--since", "1h", "--chart", file.to_str().unwrap()]));
    assert!(out.contains("chart written to"), "{out}");
    let svg = std::fs::read_to_string(&file).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("the chart is well-formed SVG");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let drawn = |class: &str| -> Vec<String> {
        doc.descendants()
            .filter(|n| n.attribute("class") == Some(class))
            .filter_map(|n| n.attribute("data-sheet").map(str::to_string))
            .collect()
    };
    let mut series = drawn("series");
    series.sort();
    assert_eq!(
        series,
        [
            "aws-lambda-arm64",
            "aws-lambda-x86",
            "dedicated",
            "vercel-fluid"
        ]
    );
    let mut lines = drawn("break-even");
    lines.sort();
    assert_eq!(
        lines,
        ["aws-lambda-arm64", "aws-lambda-x86", "vercel-fluid"]
    );
    assert_eq!(drawn("machine"), ["dedicated"]);
    assert_eq!(drawn("break-even-point").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_does_not_answer_is_given_up_on_and_logged() {
    // A receiver that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let node = Node::start_with_config(&format!(
        "budget_webhook_hosts = [\"127.0.0.1:{port}\"]\n[limits]\nbudget_check_interval_ms = 100\nbudget_webhook_timeout_ms = 300\n"
    ));
    node.deploy_ok("spender", "misbehave", json!({})).await;
    stdout_ok(&node.cli(&[
        "budget",
        "set",
        "--monthly-usd",
        "0.0000000001",
        "--sheet",
        "vercel-fluid",
        "--webhook",
        &format!("http://127.0.0.1:{port}/hook"),
    ]));
    assert_eq!(node.get("/spender/echo").await.status, 200);
    wait_until(
        "the webhook to time out",
        Duration::from_secs(10),
        async || {
            node.output()
                .contains("no answer within budget_webhook_timeout_ms (300 ms)")
        },
    )
    .await;
    // Without a hard cap nothing is refused.
    assert_eq!(node.get("/spender/echo").await.status, 200);
    assert!(node.output().contains("budget alert: node has spent"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_budget_closes_held_websockets_and_refuses_new_ones() {
    use futures::SinkExt;
    use tokio_tungstenite::connect_async;
    use tokio_tungstenite::tungstenite::{Error as WsError, Message};

    let node = Node::start_with_config("[limits]\nbudget_check_interval_ms = 100\n");
    node.deploy_ok("sock", "misbehave", json!({"websocket": true}))
        .await;
    let (mut held, _) = connect_async(format!("ws://{}/sock/ws", node.public))
        .await
        .unwrap();
    // The connect itself was an invocation: any spending is past this budget.
    cap(&node, "sock", "0.000000000001", "aws-lambda-x86");
    wait_until("the cap", Duration::from_secs(10), async || {
        node.get("/sock/ws").await.status == 503
    })
    .await;
    assert_eq!(budget_state(&node).await, "refusing");

    held.send(Message::Text("hello".into())).await.unwrap();
    match common::ws_expect(&mut held, "the budget's close").await {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 1008);
            assert!(frame.reason.contains("budget spent"), "{frame:?}");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    match connect_async(format!("ws://{}/sock/ws", node.public)).await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503);
            assert_eq!(response.headers()["eddy-error"], "budget_spent");
        }
        other => panic!("expected 503, got {other:?}"),
    }
}

fn queue_stats(node: &Node, queue: &str) -> Value {
    serde_json::from_str(&stdout_ok(&node.cli(&["queue", "stats", queue, "--json"]))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_consumer_leaves_its_messages_waiting_until_the_budget_is_raised() {
    let node = Node::start_with_config("[limits]\nbudget_check_interval_ms = 100\n");
    node.deploy_ok("worker", "misbehave", json!({})).await;
    stdout_ok(&node.cli(&["queue", "create", "jobs"]));
    stdout_ok(&node.cli(&[
        "queue",
        "consume",
        "jobs",
        "--function",
        "worker",
        "--path",
        "/worker/echo",
    ]));
    // One request spends past this budget: background work pauses (and requests stop).
    assert_eq!(node.get("/worker/echo").await.status, 200);
    cap(&node, "worker", "0.000000000001", "aws-lambda-arm64");
    wait_until("the cap", Duration::from_secs(10), async || {
        node.get("/worker/echo").await.status == 503
    })
    .await;
    let waits = |stats: &serde_json::Value| stats["consumer"]["budget_waits"].as_u64();
    let before = waits(&queue_stats(&node, "jobs")).expect("the consumer's budget waits");
    stdout_ok(&node.cli(&["queue", "send", "jobs", "job-1"]));
    // The paused consumer looks again each BUDGET_PAUSED_POLL: two looks after the send,
    // each held back, and the message is still there, never attempted.
    wait_until(
        "two budget-held rounds of the consumer after the send",
        PROMPTLY,
        async || waits(&queue_stats(&node, "jobs")) >= Some(before + 2),
    )
    .await;
    let stats = queue_stats(&node, "jobs");
    assert_eq!(
        (stats["depth"].as_u64(), stats["delivered"].as_u64()),
        (Some(1), Some(0)),
        "{stats}"
    );
    let shown = stdout_ok(&node.cli(&["queue", "stats", "jobs"]));
    assert!(
        shown.contains("paused") && shown.contains("budget spent: function `worker`"),
        "{shown}"
    );

    // Raised: the message is delivered, no attempt was spent on the wait.
    cap(&node, "worker", "1000", "aws-lambda-arm64");
    wait_until("the delivery", Duration::from_secs(10), async || {
        queue_stats(&node, "jobs")["succeeded"] == 1
    })
    .await;
    assert_eq!(queue_stats(&node, "jobs")["failed_attempts"], 0);
}
