//! The console: its files and headers, the session cookie and its CSRF defence, the routes
//! it reads (series per interval, the live invocation stream, schedules), and the whole
//! console end to end in a real headless Chromium (`tests/console/e2e.mjs`, driven by
//! playwright-core; `scripts/console-deps` installs both).

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::{Node, PROMPTLY, wait_for, wait_until};
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

async fn create_token(node: &Node, name: &str, role: &str) -> String {
    node.create_token(json!({"name": name, "role": role})).await
}

async fn revoke_token(node: &Node, name: &str) {
    let response = node
        .http
        .delete(node.api_url(&format!("/tokens/{name}")))
        .bearer_auth(&node.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// A control-API call as the console's browser makes it: the session cookie, and the
/// headers given.
async fn with_cookie(
    node: &Node,
    cookie: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut request = node
        .http
        .request(method, format!("http://{}{path}", node.admin))
        .header("cookie", cookie)
        .header("content-type", "application/json")
        .body("{}");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Signs in with `token` and returns the cookie the node set, as a `cookie` header value.
async fn sign_in(node: &Node, token: &str) -> (String, Value) {
    let response = node
        .http
        .post(node.api_url("/session"))
        .bearer_auth(token)
        .header("x-eddy-console", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let set = response
        .headers()
        .get("set-cookie")
        .expect("signing in sets the session cookie")
        .to_str()
        .unwrap()
        .to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attribute), "{set} lacks {attribute}");
    }
    assert!(
        !set.contains("Secure"),
        "{set}: Secure only over TLS, or the browser would drop it on plain loopback"
    );
    let cookie = set.split(';').next().unwrap().to_owned();
    (cookie, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cookie_signs_the_console_in_and_refuses_changes_other_sites_send() {
    let node = Node::start();
    node.deploy_ok("api", "misbehave", json!({})).await;
    node.deploy_ok("api", "misbehave", json!({"env": {"V": "2"}}))
        .await;
    let deployer = create_token(&node, "ops", "deployer").await;
    let reader = create_token(&node, "viewer", "reader").await;

    let (cookie, who) = sign_in(&node, &deployer).await;
    assert_eq!(
        (&who["name"], &who["role"]),
        (&json!("ops"), &json!("deployer"))
    );
    let permissions: Vec<&str> = who["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(permissions.contains(&"functions:write"), "{who}");
    assert!(!permissions.contains(&"tokens:manage"), "{who}");
    let (status, me) = with_cookie(&node, &cookie, Method::GET, "/v1/session", &[]).await;
    assert_eq!((status, &me["name"]), (200, &json!("ops")));

    // A change signed by the cookie alone, as a form of another site would send it.
    let rollback = "/v1/functions/api/rollback";
    let (status, body) = with_cookie(&node, &cookie, Method::POST, rollback, &[]).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &json!("cross_site_request")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-eddy-console"),
        "{body}"
    );
    // The header, but the browser says another site sent it.
    let console = ("x-eddy-console", "1");
    for headers in [
        vec![console, ("sec-fetch-site", "cross-site")],
        vec![console, ("origin", "https://evil.example")],
    ] {
        let (status, body) = with_cookie(&node, &cookie, Method::POST, rollback, &headers).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (403, &json!("cross_site_request")),
            "{headers:?}: {body}"
        );
    }
    let (_, function) = node.api_get("/functions/api").await;
    assert_eq!(
        function["live_version"], 2,
        "a refused change changed nothing"
    );
    // From the console's own page: it goes through.
    let origin = format!("http://{}", node.admin);
    let (status, body) = with_cookie(
        &node,
        &cookie,
        Method::POST,
        rollback,
        &[
            console,
            ("sec-fetch-site", "same-origin"),
            ("origin", &origin),
        ],
    )
    .await;
    assert_eq!((status, &body["live_version"]), (200, &json!(1)), "{body}");

    // A reader's cookie reads, and is refused the change for its role.
    let (reader_cookie, _) = sign_in(&node, &reader).await;
    let (status, _) = with_cookie(&node, &reader_cookie, Method::GET, "/v1/functions", &[]).await;
    assert_eq!(status, 200);
    let (status, body) =
        with_cookie(&node, &reader_cookie, Method::POST, rollback, &[console]).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`functions:write`"),
        "{body}"
    );

    // Signing out clears the cookie; revoking the token ends its session.
    let response = node
        .http
        .delete(node.api_url("/session"))
        .header("cookie", &cookie)
        .header("x-eddy-console", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let cleared = response.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cleared.contains("eddy_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    revoke_token(&node, "viewer").await;
    let response = node
        .http
        .get(node.api_url("/functions"))
        .header("cookie", &reader_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        401,
        "a revoked token's cookie still signs in"
    );
    let cleared = response.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cleared.contains("Max-Age=0"),
        "a dead cookie is not cleared: {cleared}"
    );
    // Two session cookies (a page on the same host name planted one): neither is taken.
    let (deployer_cookie, _) = sign_in(&node, &deployer).await;
    let both = format!("eddy_session=eddy_planted; {deployer_cookie}");
    let (status, body) = with_cookie(&node, &both, Method::GET, "/v1/functions", &[]).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 `eddy_session` cookies"),
        "{body}"
    );

    // The refusals are in the audit trail, with the token that was used.
    let (_, audit) = node.api_get("/audit").await;
    let refused: Vec<&Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["outcome"]
                .as_str()
                .unwrap()
                .starts_with("cross_site_request")
        })
        .collect();
    assert_eq!(refused.len(), 3, "{audit}");
    assert!(refused.iter().all(|e| e["token"] == "ops"), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_token_a_cookie_cannot_carry_is_refused_a_session_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let token = "operator token; with a space and 0123456789abcdef";
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let node = Node::start_with_config(&format!("admin_token_file = \"{}\"\n", file.display()));
    let response = node
        .http
        .post(node.api_url("/session"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.headers().get("set-cookie").is_none());
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("cannot carry"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_files_are_served_with_a_strict_content_security_policy() {
    let node = Node::start();
    for (path, media) in [
        ("/", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/app.css", "text/css"),
        ("/console/uPlot.iife.min.js", "text/javascript"),
        ("/console/uPlot.min.css", "text/css"),
    ] {
        let url = format!("http://{}{path}", node.admin);
        let response = node.http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        let header = |name: &str| headers.get(name).map_or("", |v| v.to_str().unwrap());
        assert!(header("content-type").starts_with(media), "{path}");
        let csp = header("content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert_eq!(header("x-frame-options"), "DENY");
        assert!(!response.bytes().await.unwrap().is_empty());
        // Revalidation: the same file is not sent again.
        let etag = headers["etag"].to_str().unwrap();
        let again = node
            .http
            .get(&url)
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
    }
    // The page loads no script or style from elsewhere and none inline.
    let page = node
        .http
        .get(format!("http://{}/", node.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "{page}"
    );
    assert!(
        !page.contains(" style=") && !page.contains(" onclick="),
        "{page}"
    );
    // API answers are not cached.
    let response = node
        .http
        .get(node.api_url("/functions"))
        .bearer_auth(&node.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["cache-control"], "no-store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_counts_each_interval_and_refuses_windows_it_cannot_give() {
    let node = Node::start();
    node.deploy_ok("api", "misbehave", json!({})).await;
    for _ in 0..5 {
        assert_eq!(node.get("/api/echo").await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(node.get("/api/trap").await.status, 500);
    }
    let series = wait_for("the series to count 7 invocations", PROMPTLY, async || {
        let (status, series) = node
            .api_get("/functions/api/series?since_ms=600000&step_ms=60000")
            .await;
        assert_eq!(status, 200, "{series}");
        let total: u64 = series["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["invocations"].as_u64().unwrap())
            .sum();
        if total == 7 {
            Ok(series)
        } else {
            Err(format!("{total}: {series}"))
        }
    })
    .await;
    let points = series["points"].as_array().unwrap();
    // Ten minutes of one-minute intervals: the minute the window starts in, and now's.
    assert_eq!(points.len(), 11, "{series}");
    let at: Vec<i64> = points
        .iter()
        .map(|p| p["at_ms"].as_i64().unwrap())
        .collect();
    assert!(at.windows(2).all(|w| w[1] - w[0] == 60_000), "{at:?}");
    let sum = |key: &str| -> u64 { points.iter().map(|p| p[key].as_u64().unwrap()).sum() };
    assert_eq!((sum("errors"), sum("cold_starts") > 0), (2, true));
    let traps: u64 = points
        .iter()
        .map(|p| p["outcomes"]["trap"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(traps, 2);
    let busy = points
        .iter()
        .find(|p| p["invocations"].as_u64() > Some(0))
        .unwrap();
    assert!(busy["latency_ms_p99"].as_f64().unwrap() > 0.0, "{busy}");
    assert!(
        busy["wall_ms"].as_f64().unwrap() >= busy["cpu_ms"].as_f64().unwrap(),
        "{busy}"
    );
    let idle = points.iter().find(|p| p["invocations"] == 0).unwrap();
    assert_eq!(idle["latency_ms_p50"], Value::Null);

    // Windows it cannot give, each refused with the rule.
    for (query, says) in [
        ("step_ms=1000", "whole number of minutes"),
        ("step_ms=0", "whole number of minutes"),
        ("since_ms=604800000&step_ms=60000", "SERIES_POINTS_MAX"),
        ("since_ms=99999999999999", "rollup_retention_ms"),
        ("bucket=1", "invalid series query"),
    ] {
        let (status, body) = node
            .api_get(&format!("/functions/api/series?{query}"))
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{query}: {message}");
    }
    let (status, _) = node.api_get("/functions/ghost/series").await;
    assert_eq!(status, 404);
    // A week of hours is fine.
    let (status, week) = node
        .api_get("/functions/api/series?since_ms=604800000&step_ms=3600000")
        .await;
    assert_eq!(
        (status, week["points"].as_array().unwrap().len()),
        (200, 169)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_stats_answer_every_function_the_token_may_read_in_one_call() {
    let node = Node::start();
    node.deploy_ok("api", "misbehave", json!({})).await;
    node.deploy_ok("web", "misbehave", json!({})).await;
    for _ in 0..3 {
        assert_eq!(node.get("/api/echo").await.status, 200);
    }
    assert_eq!(node.get("/web/echo").await.status, 200);
    let (status, all) = node.api_get("/stats?since_ms=300000").await;
    assert_eq!(status, 200, "{all}");
    let counts: Vec<(&str, u64)> = all["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["function"].as_str().unwrap(),
                f["invocations"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(counts, [("api", 3), ("web", 1)]);
    // The same figures as the one function's own stats.
    let one = node.api_get("/functions/api/stats?since_ms=300000").await.1;
    assert_eq!(all["functions"][0]["cpu_ms_total"], one["cpu_ms_total"]);
    // A token scoped to one function gets that one.
    let scoped = node
        .create_token(json!({"name": "web-team", "role": "reader", "functions": ["web"]}))
        .await;
    let response = node
        .http
        .get(node.api_url("/stats"))
        .bearer_auth(&scoped)
        .send()
        .await
        .unwrap();
    let mine: Value = response.json().await.unwrap();
    let names: Vec<&str> = mine["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["function"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web"]);
    let (status, _) = node.api_get("/stats?since_ms=soon").await;
    assert_eq!(status, 400);
    // `eddy stats` without a name: a line for each.
    let table = common::stdout_ok(&node.cli(&["stats", "--since", "5m"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[1].starts_with("FUNCTION") && lines[1].contains("P99 MS"),
        "{table}"
    );
    let api_line: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        (api_line[0], api_line[1], api_line[2]),
        ("api", "3", "0"),
        "{table}"
    );
    assert!(lines[3].starts_with("web "), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_never_see_the_console_session_cookie() {
    let node = Node::start();
    node.deploy_ok("api", "misbehave", json!({})).await;
    // The browser sends the admin listener's cookie to the public one on the same host.
    let cookie = format!("theme=dark; eddy_session={}; lang=fr", node.token);
    let reply = node
        .send(
            node.http
                .get(node.url("/api/echo"))
                .header("cookie", cookie),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert!(!reply.body.contains(&node.token), "{}", reply.body);
    assert!(
        reply.body.contains("header: cookie: theme=dark; lang=fr"),
        "{}",
        reply.body
    );
    // Nor may a function set it for the host name: not in its answer...
    let response = node
        .http
        .get(node.url("/api/set-cookie"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let set: Vec<&str> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(set, ["theme=dark; Path=/"]);
    // ... nor in its refusal of a WebSocket.
    node.deploy_ok("chat", "misbehave", json!({"websocket": true}))
        .await;
    let url = format!("ws://{}/chat/ws?refuse=403&forge=cookie", node.public);
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(refused)) => {
            assert_eq!(refused.status(), 403);
            assert!(
                refused.headers().get("set-cookie").is_none(),
                "{:?}",
                refused.headers()
            );
        }
        other => panic!("the refusal did not come: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_log_streams_are_capped_and_end_when_their_token_is_revoked() {
    let node =
        Node::start_with_config("[limits]\nlog_streams_max = 3\nlog_streams_per_token_max = 2\n");
    node.deploy_ok("api", "misbehave", json!({})).await;
    let reader = create_token(&node, "viewer", "reader").await;
    let open = |token: &str| {
        node.http
            .get(node.api_url("/functions/api/logs/stream"))
            .bearer_auth(token)
            .send()
    };
    let first = open(&reader).await.unwrap();
    let second = open(&reader).await.unwrap();
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let refused = open(&reader).await.unwrap();
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "log_streams_per_token_max", "{body}");
    // Another token may open one more, up to the node's cap.
    let admin = open(&node.token).await.unwrap();
    assert_eq!(admin.status(), 200);
    let refused = open(&node.token).await.unwrap();
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "log_streams_max", "{body}");
    // A stream closed frees its place.
    drop(admin);
    wait_until(
        "the closed stream's place to be free",
        PROMPTLY,
        async || open(&node.token).await.unwrap().status() == 200,
    )
    .await;
    // Revoking the token ends its open streams.
    revoke_token(&node, "viewer").await;
    let mut body = first.bytes_stream();
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(chunk) = body.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "a revoked token's stream is still open after 20 s"
    );
}

/// Reads server-sent events from `response` until `count` events have come.
async fn read_events(
    body: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buffer: &mut String,
    count: usize,
) -> Vec<(String, String, Value)> {
    let mut events = Vec::new();
    tokio::time::timeout(PROMPTLY, async {
        while events.len() < count {
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = (String::new(), String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if !event.is_empty() {
                    events.push((event, id, serde_json::from_str(&data).unwrap()));
                }
            }
            if events.len() >= count {
                break;
            }
            let chunk = body.next().await.expect("the stream ended").unwrap();
            buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{count} events did not come; got {events:?}"));
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_stream_sends_each_new_record_as_it_is_written_and_resumes_by_id() {
    let node = Node::start();
    node.deploy_ok("api", "misbehave", json!({})).await;
    // An earlier record: a stream opened without `after` starts after it.
    assert_eq!(node.get("/api/log?before").await.status, 200);
    node.wait_logs("api", 1).await;
    let response = node
        .http
        .get(node.api_url("/functions/api/logs/stream"))
        .bearer_auth(&node.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    for i in 0..3 {
        assert_eq!(node.get(&format!("/api/log?n={i}")).await.status, 200);
    }
    let events = read_events(&mut body, &mut buffer, 3).await;
    let paths: Vec<&str> = events
        .iter()
        .map(|(_, _, e)| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/api/log?n=0", "/api/log?n=1", "/api/log?n=2"]);
    for (event, id, entry) in &events {
        assert_eq!(event, "invocation");
        assert_eq!(id, &entry["id"].to_string());
        assert!(
            entry["log"].as_str().unwrap().contains("hello stdout"),
            "{entry}"
        );
    }
    drop(body);
    // A reconnecting EventSource sends the last id it saw: the stream resumes after it.
    let first_id = &events[0].1;
    let response = node
        .http
        .get(node.api_url("/functions/api/logs/stream"))
        .bearer_auth(&node.token)
        .header("last-event-id", first_id.as_str())
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let resumed = read_events(&mut body, &mut buffer, 2).await;
    assert_eq!(resumed[0].2["path"], "/api/log?n=1");
    assert_eq!(resumed[1].2["path"], "/api/log?n=2");
    drop(body);
    let (status, body) = node.api_get("/functions/api/logs/stream?after=x").await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_list_each_live_schedule_with_its_last_and_next_ticks() {
    let node = Node::start();
    node.deploy_ok(
        "tick",
        "misbehave",
        json!({"schedule": {"cron": "*/2 * * * * *", "path": "/tick/echo"}}),
    )
    .await;
    node.deploy_ok("plain", "misbehave", json!({})).await;
    let listed = wait_for("a tick of the schedule", PROMPTLY, async || {
        let (status, listed) = node.api_get("/schedules").await;
        assert_eq!(status, 200, "{listed}");
        let ticked = node.stats("tick").await["invocations"].as_u64().unwrap() > 0;
        if ticked {
            Ok(listed)
        } else {
            Err(listed.to_string())
        }
    })
    .await;
    let schedules = listed["schedules"].as_array().unwrap();
    assert_eq!(schedules.len(), 1, "{listed}");
    let tick = &schedules[0];
    assert_eq!(
        (
            &tick["function"],
            &tick["cron"],
            &tick["timezone"],
            &tick["overlap"],
            &tick["path"]
        ),
        (
            &json!("tick"),
            &json!("*/2 * * * * *"),
            &json!("UTC"),
            &json!("skip"),
            &json!("/tick/echo")
        )
    );
    let last = common::unix_ms(tick["last_tick"].as_str().unwrap());
    let next = common::unix_ms(tick["next_tick"].as_str().unwrap());
    assert!(next > last && next - last <= 4_000, "{tick}");
    assert_eq!(next % 2_000, 0, "{tick}");
}

/// The directory of the browser test and its npm packages.
fn console_tests() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/console")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser_shows_what_runs_and_acts_within_the_tokens_role() {
    let dir = console_tests();
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed in {}: run scripts/console-deps (scripts/test does)",
        dir.display()
    );
    let chromium = std::env::var("EDDY_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "no Chromium at {chromium}: run scripts/console-deps (Debian's chromium), or set EDDY_CHROMIUM"
    );
    let node = Node::start();
    let deployer = create_token(&node, "ops", "deployer").await;
    let reader = create_token(&node, "viewer", "reader").await;

    // A function with two versions and real traffic, some of it failing.
    node.deploy_ok("api", "misbehave", json!({})).await;
    node.deploy_ok("api", "misbehave", json!({"env": {"V": "2"}}))
        .await;
    for _ in 0..12 {
        assert_eq!(node.get("/api/log").await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(node.get("/api/trap").await.status, 500);
    }
    // Output and a queue payload that would run as script if the console did not escape it.
    let hostile = "<img src=x onerror=alert(1)><script>alert(2)</script>";
    assert_eq!(node.get(&format!("/api/echo?{hostile}")).await.status, 200);

    // A queue with a dead letter whose payload is markup; its consumer then unbound, so a
    // redriven message stays in the queue.
    node.deploy_ok("worker", "misbehave", json!({})).await;
    let api = |method: Method, path: &str, body: Option<Value>| {
        let mut request = node
            .http
            .request(method, node.api_url(path))
            .bearer_auth(&node.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send()
    };
    assert_eq!(
        api(Method::POST, "/queues", Some(json!({"name": "jobs"})))
            .await
            .unwrap()
            .status(),
        201
    );
    let consumer = json!({"function": "worker", "path": "/worker/trap", "max_attempts": 1});
    assert_eq!(
        api(Method::PUT, "/queues/jobs/consumer", Some(consumer))
            .await
            .unwrap()
            .status(),
        200
    );
    let dead_letter = format!("order 42 {hostile}");
    let sent = node
        .http
        .post(node.api_url("/queues/jobs/messages"))
        .bearer_auth(&node.token)
        .header("content-type", "text/plain")
        .body(dead_letter.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
    wait_until("the message to be dead-lettered", PROMPTLY, async || {
        node.api_get("/queues/jobs").await.1["dead_lettered"] == 1
    })
    .await;
    assert_eq!(
        api(Method::DELETE, "/queues/jobs/consumer", None)
            .await
            .unwrap()
            .status(),
        204
    );
    // A second queue with a consumer that succeeds, a schedule and a budget, so that every
    // page has something to show.
    assert_eq!(
        api(Method::POST, "/queues", Some(json!({"name": "emails"})))
            .await
            .unwrap()
            .status(),
        201
    );
    let consumer = json!({"function": "worker", "path": "/worker/echo"});
    assert_eq!(
        api(Method::PUT, "/queues/emails/consumer", Some(consumer))
            .await
            .unwrap()
            .status(),
        200
    );
    node.deploy_ok(
        "report",
        "misbehave",
        json!({"schedule": {"cron": "*/10 * * * * *", "path": "/report/echo"}}),
    )
    .await;
    let budget =
        json!({"monthly_usd": 5, "sheet": "aws-lambda-x86", "alert_percents": [50, 80, 100]});
    assert_eq!(
        api(Method::PUT, "/budgets/node", Some(budget))
            .await
            .unwrap()
            .status(),
        200
    );
    // A function holding WebSocket connections in channels.
    node.deploy_ok("chat", "misbehave", json!({"websocket": true}))
        .await;
    let mut sockets = Vec::new();
    for channels in ["room,lobby", "room"] {
        let url = format!("ws://{}/chat/ws?channels={channels}", node.public);
        let (socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        sockets.push(socket);
    }
    node.wait_logs("api", 15).await;

    let mut browser = tokio::process::Command::new("node");
    browser
        .arg(dir.join("e2e.mjs"))
        .current_dir(&dir)
        .env("EDDY_ADMIN_URL", format!("http://{}", node.admin))
        .env("EDDY_PUBLIC_URL", format!("http://{}", node.public))
        .env("EDDY_ADMIN_TOKEN", &node.token)
        .env("EDDY_DEPLOYER_TOKEN", &deployer)
        .env("EDDY_READER_TOKEN", &reader)
        .env("EDDY_FUNCTION", "api")
        .env("EDDY_FUNCTION_PATH", "/api/log")
        .env("EDDY_QUEUE", "jobs")
        .env("EDDY_DEAD_LETTER_TEXT", &dead_letter)
        .env("EDDY_CHROMIUM", &chromium)
        .env("EDDY_WEBSOCKET_FUNCTION", "chat")
        // scripts/console-screenshots sets it: the pages are saved as pictures too.
        .env(
            "EDDY_SCREENSHOTS",
            std::env::var("EDDY_CONSOLE_SCREENSHOTS").unwrap_or_default(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let run = browser.spawn().expect("running node (Node.js)");
    let output = tokio::time::timeout(Duration::from_secs(180), run.wait_with_output())
        .await
        .expect("the browser test took more than 180 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("console e2e: ok"),
        "the browser test failed ({}):\n{stdout}\n{stderr}\nnode's log:\n{}",
        output.status,
        node.output()
    );

    drop(sockets);
    // What the browser did, seen from the API.
    let (_, function) = node.api_get("/functions/api").await;
    assert_eq!(function["live_version"], 1, "the rollback did not happen");
    let (_, dlq) = node.api_get("/queues/jobs-dlq").await;
    assert_eq!(dlq["depth"], 0, "the redrive did not happen: {dlq}");
    let (_, jobs) = node.api_get("/queues/jobs").await;
    assert_eq!(jobs["depth"], 1, "{jobs}");
    let (_, audit) = node.api_get("/audit").await;
    let done: Vec<(String, String, u64)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["token"].as_str().unwrap().to_owned(),
                e["request"].as_str().unwrap().to_owned(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    for expected in [
        ("ops", "POST /v1/functions/api/rollback", 200),
        ("ops", "POST /v1/queues/jobs/redrive", 200),
        ("viewer", "POST /v1/functions/api/rollback", 403),
    ] {
        let expected = (expected.0.to_owned(), expected.1.to_owned(), expected.2);
        assert!(done.contains(&expected), "{expected:?} not in {done:?}");
    }
}
