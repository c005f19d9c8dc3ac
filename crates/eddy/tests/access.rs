//! Access to the control API: each role against each route, scopes, expiry and revocation,
//! the slowdown of failed authentication, and the audit trail.

mod common;

use std::time::Duration;

use common::{Node, stderr_err, stdout_ok, wait_for};
use reqwest::Method;
use serde_json::{Value, json};

/// Every route of the control API, a concrete path for it, and the permission it needs:
/// the specification the node's own table (`auth::ROUTES`) is checked against. Targets are
/// names that do not exist, so a request that is let through changes nothing.
const ROUTES: &[(&str, &str, &str)] = &[
    ("GET", "/metrics", "nodes:read"),
    ("GET", "/v1/node", "nodes:read"),
    ("GET", "/v1/nodes", "nodes:read"),
    ("GET", "/v1/functions", "functions:read"),
    ("GET", "/v1/functions/ghost", "functions:read"),
    ("DELETE", "/v1/functions/ghost", "functions:write"),
    ("GET", "/v1/functions/ghost/versions", "functions:read"),
    ("POST", "/v1/functions/ghost/versions", "functions:write"),
    ("POST", "/v1/functions/ghost/rollback", "functions:write"),
    ("GET", "/v1/functions/ghost/logs", "functions:read"),
    ("GET", "/v1/functions/ghost/stats", "functions:read"),
    ("GET", "/v1/functions/ghost/websockets", "functions:read"),
    (
        "POST",
        "/v1/functions/ghost/websockets/channels/c/messages",
        "websockets:send",
    ),
    ("GET", "/v1/queues", "queues:read"),
    ("POST", "/v1/queues", "queues:write"),
    ("GET", "/v1/queues/ghost", "queues:read"),
    ("DELETE", "/v1/queues/ghost", "queues:write"),
    ("GET", "/v1/queues/ghost/messages", "queues:write"),
    ("POST", "/v1/queues/ghost/messages", "queues:publish"),
    ("POST", "/v1/queues/ghost/batch", "queues:publish"),
    ("POST", "/v1/queues/ghost/redrive", "queues:write"),
    ("POST", "/v1/queues/ghost/purge", "queues:write"),
    ("PUT", "/v1/queues/ghost/consumer", "queues:write"),
    ("DELETE", "/v1/queues/ghost/consumer", "queues:write"),
    ("GET", "/v1/cost", "cost:read"),
    ("GET", "/v1/price-sheets", "cost:read"),
    ("PUT", "/v1/price-sheets/ghost", "cost:write"),
    ("DELETE", "/v1/price-sheets/ghost", "cost:write"),
    ("GET", "/v1/budgets", "cost:read"),
    ("PUT", "/v1/budgets/node", "cost:write"),
    ("DELETE", "/v1/budgets/node", "cost:write"),
    ("PUT", "/v1/budgets/functions/ghost", "cost:write"),
    ("DELETE", "/v1/budgets/functions/ghost", "cost:write"),
    ("GET", "/v1/tokens", "tokens:manage"),
    ("POST", "/v1/tokens", "tokens:manage"),
    ("DELETE", "/v1/tokens/ghost", "tokens:manage"),
    ("GET", "/v1/audit", "audit:read"),
    ("GET", "/v1/secrets", "secrets:read"),
    ("PUT", "/v1/secrets/ghost", "secrets:write"),
    ("DELETE", "/v1/secrets/ghost", "secrets:write"),
    ("POST", "/v1/secrets/rekey", "secrets:write"),
    ("GET", "/v1/functions/ghost/series", "functions:read"),
    ("GET", "/v1/functions/ghost/logs/stream", "functions:read"),
    ("GET", "/v1/schedules", "functions:read"),
    ("GET", "/v1/stats", "functions:read"),
    ("GET", "/v1/session", "session"),
    ("POST", "/v1/session", "session"),
    ("DELETE", "/v1/session", "session"),
];

/// What each role holds, as `docs/security.md` writes it down.
fn allowed(role: &str, permission: &str) -> bool {
    if permission == "session" {
        return true;
    }
    match role {
        "admin" => true,
        "reader" => matches!(
            permission,
            "nodes:read" | "functions:read" | "queues:read" | "cost:read"
        ),
        "deployer" => matches!(
            permission,
            "nodes:read"
                | "functions:read"
                | "queues:read"
                | "cost:read"
                | "functions:write"
                | "websockets:send"
                | "queues:write"
                | "secrets:read"
        ),
        "publisher" => permission == "queues:publish",
        other => panic!("no role {other}"),
    }
}

async fn call(node: &Node, token: &str, method: &str, path: &str) -> (u16, Value) {
    let url = format!("http://{}{path}", node.admin);
    let response = node
        .http
        .request(Method::from_bytes(method.as_bytes()).unwrap(), url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn each_role_is_allowed_its_routes_and_refused_the_others_naming_the_permission() {
    let node = Node::start();
    let mut tokens = vec![("admin", node.token.clone())];
    for role in ["deployer", "reader", "publisher"] {
        let token = node
            .create_token(json!({"name": format!("t-{role}"), "role": role}))
            .await;
        tokens.push((role, token));
    }
    let mut wrong = Vec::new();
    for (role, token) in &tokens {
        for (method, path, permission) in ROUTES {
            let (status, body) = call(&node, token, method, path).await;
            let ok = if allowed(role, permission) {
                status != 403 && status != 401
            } else {
                status == 403
                    && body["error"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains(&format!("`{permission}`")))
            };
            if !ok {
                wrong.push(format!("{role} {method} {path}: {status} {body}"));
            }
        }
    }
    assert!(wrong.is_empty(), "wrong answers:\n{}", wrong.join("\n"));
    // The node refuses what it does not know without a token, and everything without one.
    let (status, _) = call(&node, "nope", "GET", "/v1/functions").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_permission_table_in_the_docs_lists_every_route() {
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md")).unwrap();
    for (method, path, permission) in ROUTES {
        let declared = path
            .replace(
                "/ghost/websockets/channels/c/",
                "/{name}/websockets/channels/{channel}/",
            )
            .replace("/ghost", "/{name}");
        let row = format!("| `{method} {declared}` | `{permission}` |");
        assert!(docs.contains(&row), "docs/api.md lacks the row {row}");
    }
}

#[tokio::test]
async fn scoped_tokens_touch_only_their_functions_and_queues() {
    let node = Node::start();
    node.deploy_ok("hello", "hello-rust", json!({})).await;
    node.deploy_ok("other", "hello-rust", json!({"route": "/other"}))
        .await;
    let token = node
        .create_token(
            json!({"name": "ci", "role": "deployer", "functions": ["hello"], "queues": ["jobs"]}),
        )
        .await;
    let (status, _) = call(&node, &token, "GET", "/v1/functions/hello/stats").await;
    assert_eq!(status, 200);
    let (status, body) = call(&node, &token, "DELETE", "/v1/functions/other").await;
    assert_eq!(status, 403, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`functions:write`") && message.contains("`other`"),
        "{message}"
    );
    let (status, _) = node.api_get("/functions/other").await;
    assert_eq!(status, 200, "the refused removal removed it");
    // A queue is created by name in the body: the scope holds there too.
    let create = |name: &'static str| {
        node.http
            .post(node.api_url("/queues"))
            .bearer_auth(&token)
            .json(&json!({ "name": name }))
            .send()
    };
    assert_eq!(create("jobs").await.unwrap().status(), 201);
    let refused = create("mail").await.unwrap();
    assert_eq!(refused.status(), 403);
    // Binding a consumer makes a function run: only a function in scope.
    let bind = |function: &'static str| {
        node.http
            .put(node.api_url("/queues/jobs/consumer"))
            .bearer_auth(&token)
            .json(&json!({ "function": function }))
            .send()
    };
    let refused = bind("other").await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("`other`"));
    assert_eq!(bind("hello").await.unwrap().status(), 200);
    // Its own dead-letter queue goes with a queue in scope, and no other queue may take
    // such a name.
    let taken = node
        .http
        .post(node.api_url("/queues"))
        .bearer_auth(&node.token)
        .json(&json!({"name": "mail-dlq"}))
        .send()
        .await
        .unwrap();
    assert_eq!(taken.status(), 400);
    assert!(taken.text().await.unwrap().contains("dead-letter"));
    assert_eq!(
        call(&node, &token, "GET", "/v1/queues/jobs-dlq/messages")
            .await
            .0,
        200
    );
    // Another queue as the dead-letter queue would let a redrive drain it: refused, both
    // when binding and, for a binding an admin made, when redriving.
    let (status, _) = node.api_get("/queues").await;
    assert_eq!(status, 200);
    let payments = node
        .http
        .post(node.api_url("/queues"))
        .bearer_auth(&node.token)
        .json(&json!({"name": "payments"}))
        .send()
        .await
        .unwrap();
    assert_eq!(payments.status(), 201);
    let refused = node
        .http
        .put(node.api_url("/queues/jobs/consumer"))
        .bearer_auth(&token)
        .json(&json!({"function": "hello", "dead_letter": "payments"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let bound = node
        .http
        .put(node.api_url("/queues/jobs/consumer"))
        .bearer_auth(&node.token)
        .json(&json!({"function": "hello", "dead_letter": "payments"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bound.status(), 200);
    let (status, body) = call(&node, &token, "POST", "/v1/queues/jobs/redrive").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.to_string().contains("`payments`"), "{body}");
    // A function it deploys may publish only to queues in its scope.
    let wasm = common::guest_bytes("hello-rust");
    for (publish, expected) in [
        (json!(["*"]), 403),
        (json!(["payments"]), 403),
        (json!(["jobs"]), 201),
    ] {
        let form = reqwest::multipart::Form::new()
            .part(
                "config",
                reqwest::multipart::Part::text(json!({ "publish": publish }).to_string()),
            )
            .part("component", reqwest::multipart::Part::bytes(wasm.clone()));
        let response = node
            .http
            .post(node.api_url("/functions/hello/versions"))
            .bearer_auth(&token)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "publish {publish}");
    }
    // HEAD is a GET.
    let head = node
        .http
        .head(node.api_url("/functions"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    // An admin token has no scope to give.
    let response = node
        .http
        .post(node.api_url("/tokens"))
        .bearer_auth(&node.token)
        .json(&json!({"name": "half-admin", "role": "admin", "functions": ["hello"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn tokens_expire_and_a_revoked_token_is_refused_at_once() {
    let node = Node::start();
    // The CLI prints the token once, on stdout, and never lists it.
    let out = node.cli(&[
        "token",
        "create",
        "short",
        "--role",
        "reader",
        "--expires",
        "2s",
    ]);
    let short = stdout_ok(&out).trim().to_owned();
    assert!(short.starts_with("eddy_"), "{short}");
    let long = stdout_ok(&node.cli(&["token", "create", "long", "--role", "reader"]))
        .trim()
        .to_owned();
    let listed = stdout_ok(&node.cli(&["token", "ls"]));
    assert!(
        listed.contains("short") && listed.contains("reader"),
        "{listed}"
    );
    assert!(
        !listed.contains(&short) && !listed.contains(&long),
        "{listed}"
    );
    let listed = stdout_ok(&node.cli(&["token", "ls", "--json"]));
    assert!(!listed.contains(&short[5..]), "{listed}");
    // The CLI works with a scoped token, and its role holds there too.
    let out = common::eddy_in(std::path::Path::new("."))
        .args(["ls"])
        .env("EDDY_SERVER", format!("http://{}", node.admin))
        .env("EDDY_TOKEN", &long)
        .output()
        .unwrap();
    stdout_ok(&out);
    let out = common::eddy_in(std::path::Path::new("."))
        .args(["rm", "hello"])
        .env("EDDY_SERVER", format!("http://{}", node.admin))
        .env("EDDY_TOKEN", &long)
        .output()
        .unwrap();
    assert!(stderr_err(&out).contains("functions:write"));
    assert_eq!(call(&node, &short, "GET", "/v1/functions").await.0, 200);
    wait_for(
        "the short token to expire",
        Duration::from_secs(10),
        async || {
            let (status, body) = call(&node, &short, "GET", "/v1/functions").await;
            match status {
                401 => Ok(body),
                _ => Err(format!("{status} {body}")),
            }
        },
    )
    .await;
    let (_, body) = call(&node, &short, "GET", "/v1/functions").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );
    // Revoked: refused on the very next call.
    assert_eq!(call(&node, &long, "GET", "/v1/functions").await.0, 200);
    stdout_ok(&node.cli(&["token", "rm", "long"]));
    assert_eq!(call(&node, &long, "GET", "/v1/functions").await.0, 401);
    let listed = stdout_ok(&node.cli(&["token", "ls"]));
    assert!(!listed.contains("long"), "{listed}");
    // Names are unique, and the bootstrap token is not revoked this way.
    stdout_ok(&node.cli(&["token", "create", "dup", "--role", "reader"]));
    let out = node.cli(&["token", "create", "dup", "--role", "reader"]);
    assert!(stderr_err(&out).contains("exists"));
    let out = node.cli(&["token", "rm", "admin"]);
    assert!(stderr_err(&out).contains("bootstrap"));
    let out = node.cli(&["token", "create", "x", "--role", "root"]);
    assert!(stderr_err(&out).contains("unknown role"));
}

#[tokio::test]
async fn a_client_that_keeps_failing_to_authenticate_is_slowed_down_alone() {
    let node = Node::start_with_config("[limits]\nauth_failures_per_minute_max = 3\n");
    for _ in 0..3 {
        assert_eq!(call(&node, "wrong", "GET", "/v1/functions").await.0, 401);
    }
    let response = node
        .http
        .get(node.api_url("/functions"))
        .bearer_auth(&node.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("auth_failures_per_minute_max"),
        "{body}"
    );
    // Another client address is not held back.
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let response = other
        .get(node.api_url("/functions"))
        .bearer_auth(&node.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn every_change_is_in_the_audit_trail_with_who_where_and_how_it_ended() {
    let node = Node::start();
    node.deploy_ok("hello", "hello-rust", json!({})).await;
    node.deploy_ok("hello", "hello-rust", json!({"env": {"A": "1"}}))
        .await;
    let ci = node
        .create_token(json!({"name": "ci", "role": "deployer"}))
        .await;
    let reader = node
        .create_token(json!({"name": "viewer", "role": "reader"}))
        .await;
    let as_ci = |method: &'static str, path: &'static str, body: Value| {
        node.http
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                node.api_url(path),
            )
            .bearer_auth(&ci)
            .json(&body)
            .send()
    };
    assert_eq!(
        as_ci("POST", "/functions/hello/rollback", json!({}))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        as_ci("POST", "/queues", json!({"name": "jobs"}))
            .await
            .unwrap()
            .status(),
        201
    );
    assert_eq!(
        as_ci("POST", "/queues", json!({"name": "jobs"}))
            .await
            .unwrap()
            .status(),
        409
    );
    let (status, _) = call(&node, &reader, "DELETE", "/v1/functions/hello").await;
    assert_eq!(status, 403);
    let (status, _) = call(&node, "wrong", "DELETE", "/v1/functions/hello").await;
    assert_eq!(status, 401);
    // Reads are not changes.
    node.api_get("/functions").await;
    let budget = node
        .http
        .put(node.api_url("/budgets/node"))
        .bearer_auth(&node.token)
        .json(&json!({"monthly_usd": 10, "sheet": "aws-lambda-x86"}))
        .send()
        .await
        .unwrap();
    assert_eq!(budget.status(), 200, "{}", budget.text().await.unwrap());
    stdout_ok(&node.cli(&["token", "rm", "ci"]));
    stdout_ok(&node.cli(&["rm", "hello"]));
    let out = stdout_ok(&node.cli(&["audit", "--json"]));
    let entries: Vec<Value> = serde_json::from_str(&out).unwrap();
    let seen: Vec<(String, String, u64)> = entries
        .iter()
        .map(|e| {
            (
                e["token"].as_str().unwrap().to_owned(),
                e["request"].as_str().unwrap().to_owned(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, String, u64)> = [
        ("admin", "POST /v1/functions/hello/versions", 201),
        ("admin", "POST /v1/functions/hello/versions", 201),
        ("admin", "POST /v1/tokens", 201),
        ("admin", "POST /v1/tokens", 201),
        ("ci", "POST /v1/functions/hello/rollback", 200),
        ("ci", "POST /v1/queues", 201),
        ("ci", "POST /v1/queues", 409),
        ("viewer", "DELETE /v1/functions/hello", 403),
        ("-", "DELETE /v1/functions/hello", 401),
        ("admin", "PUT /v1/budgets/node", 200),
        ("admin", "DELETE /v1/tokens/ci", 200),
        ("admin", "DELETE /v1/functions/hello", 200),
    ]
    .into_iter()
    .map(|(t, r, s)| (t.to_owned(), r.to_owned(), s))
    .collect();
    assert_eq!(seen, expected, "{out}");
    let refused = &entries[7];
    assert_eq!(refused["action"], "functions:write");
    assert!(
        refused["outcome"].as_str().unwrap().contains("forbidden"),
        "{refused}"
    );
    assert!(
        entries[6]["outcome"].as_str().unwrap().contains("queue"),
        "{}",
        entries[6]
    );
    assert!(entries.iter().all(|e| e["source"] == "127.0.0.1"));
    // No entry holds a token.
    assert!(!out.contains("eddy_"), "{out}");
    let table = stdout_ok(&node.cli(&["audit", "--since", "1h"]));
    assert!(table.contains("DELETE /v1/tokens/ci"), "{table}");
}

#[tokio::test]
async fn audit_entries_older_than_the_retention_are_dropped() {
    let node = Node::start_with_config("[limits]\naudit_retention_ms = 1000\n");
    node.create_token(json!({"name": "first", "role": "reader"}))
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    node.create_token(json!({"name": "second", "role": "reader"}))
        .await;
    let (status, page) = node.api_get("/audit").await;
    assert_eq!(status, 200);
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{page}");
    assert_eq!(entries[0]["request"], "POST /v1/tokens");
}
