//! Deploying, serving, listing, versioning, rolling back and removing functions through
//! the real node and CLI, and refusing components that cannot be served.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::{
    Node, PROMPTLY, guest, guest_bytes, shared_compile_cache, stderr_err, stdout_ok, wait_until,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_deploys_serves_lists_versions_rolls_back_and_removes() {
    let node = Node::start();
    let hello = guest("hello-rust");
    let out = stdout_ok(&node.cli(&["deploy", "hello", hello.to_str().unwrap()]));
    assert!(out.contains("deployed hello version 1"), "{out}");
    assert!(out.contains(&node.url("/hello")), "{out}");
    let reply = node.get("/hello").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "Hello from eddy!\n")
    );

    let out = stdout_ok(&node.cli(&[
        "deploy",
        "hello",
        hello.to_str().unwrap(),
        "--env",
        "GREETING=Howdy",
        "--memory",
        "64MiB",
        "--timeout",
        "2s",
    ]));
    assert!(out.contains("version 2"), "{out}");
    assert_eq!(node.get("/hello").await.body, "Howdy from eddy!\n");

    let ls = stdout_ok(&node.cli(&["ls"]));
    assert!(
        ls.contains("hello") && ls.contains("/hello") && ls.contains("64 MiB") && ls.contains("2s"),
        "{ls}"
    );
    let ls: serde_json::Value =
        serde_json::from_str(&stdout_ok(&node.cli(&["ls", "--json"]))).unwrap();
    assert_eq!(ls["functions"][0]["live_version"], 2);
    assert_eq!(ls["functions"][0]["memory_bytes_max"], 64 * 1024 * 1024);
    assert_eq!(ls["functions"][0]["timeout_ms"], 2000);

    let versions: serde_json::Value =
        serde_json::from_str(&stdout_ok(&node.cli(&["versions", "hello", "--json"]))).unwrap();
    let numbers: Vec<u64> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [2, 1]);
    assert_eq!(versions["versions"][0]["env_keys"], json!(["GREETING"]));

    let out = stdout_ok(&node.cli(&["rollback", "hello"]));
    assert!(out.contains("live version is now 1 (was 2)"), "{out}");
    assert_eq!(node.get("/hello").await.body, "Hello from eddy!\n");
    let out = stdout_ok(&node.cli(&["rollback", "hello", "2"]));
    assert!(out.contains("now 2"), "{out}");
    assert_eq!(node.get("/hello").await.body, "Howdy from eddy!\n");
    let err = stderr_err(&node.cli(&["rollback", "hello", "9"]));
    assert!(
        err.starts_with("error: ") && err.contains("no version 9"),
        "{err}"
    );

    stdout_ok(&node.cli(&["rm", "hello"]));
    let reply = node.get("/hello").await;
    reply.assert_refused(404, "no_route");
    assert!(stdout_ok(&node.cli(&["ls"])).contains("no functions deployed"));
    let err = stderr_err(&node.cli(&["rm", "hello"]));
    assert!(err.contains("no function `hello`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_deploys_every_function_and_refuses_unknown_keys() {
    let node = Node::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(guest("hello-rust"), dir.path().join("hello.wasm")).unwrap();
    std::fs::write(
        dir.path().join("eddy.toml"),
        "[functions.hello]\ncomponent = \"hello.wasm\"\nroute = \"/hi\"\nmemory = \"32MiB\"\ntimeout = \"500ms\"\n[functions.hello.env]\nGREETING = \"Hey\"\n\n[functions.other]\ncomponent = \"hello.wasm\"\n",
    )
    .unwrap();
    stdout_ok(&node.cli_in(dir.path(), &["deploy"]));
    assert_eq!(node.get("/hi").await.body, "Hey from eddy!\n");
    assert_eq!(node.get("/other").await.body, "Hello from eddy!\n");
    let (_, f) = node.api_get("/functions/hello").await;
    assert_eq!(
        (f["memory_bytes_max"].as_u64(), f["timeout_ms"].as_u64()),
        (Some(32 << 20), Some(500))
    );

    std::fs::write(
        dir.path().join("bad.toml"),
        "[functions.hello]\ncomponent = \"hello.wasm\"\nmemroy = \"1MiB\"\n",
    )
    .unwrap();
    let err = stderr_err(&node.cli_in(dir.path(), &["deploy", "-f", "bad.toml"]));
    assert!(err.contains("memroy"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_longest_prefix_wins_taken_routes_are_refused_and_requests_arrive_whole() {
    let node = Node::start();
    node.deploy_ok(
        "root",
        "hello-rust",
        json!({"route": "/", "env": {"GREETING": "Root"}}),
    )
    .await;
    node.deploy_ok("api", "misbehave", json!({"route": "/api"}))
        .await;
    node.deploy_ok(
        "v2",
        "hello-rust",
        json!({"route": "/api/v2", "env": {"GREETING": "V2"}}),
    )
    .await;

    assert_eq!(node.get("/api/v2/users").await.body, "V2 from eddy!\n");
    assert_eq!(node.get("/apix").await.body, "Root from eddy!\n");
    assert_eq!(node.get("/").await.body, "Root from eddy!\n");

    let (status, body) = node
        .deploy("thief", guest_bytes("hello-rust"), json!({"route": "/api"}))
        .await;
    common::assert_api_error(status, &body, 409, "`api`");
    assert_eq!(body["error"]["code"], "route_taken");
    let (status, _) = node.api_get("/functions/thief").await;
    assert_eq!(status, 404, "a refused deploy must store nothing");

    for route in ["nope", "/_eddy/x", "/a/../b", "/trailing/"] {
        let (status, body) = node
            .deploy("bad", guest_bytes("hello-rust"), json!({"route": route}))
            .await;
        assert_eq!(status, 400, "{route}: {body}");
    }
    let (status, body) = node
        .deploy("Bad_Name", guest_bytes("hello-rust"), json!({}))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = node
        .deploy(
            "typo",
            guest_bytes("hello-rust"),
            json!({"memroy_bytes_max": 1}),
        )
        .await;
    common::assert_api_error(status, &body, 400, "memroy_bytes_max");
    let (status, body) = node
        .deploy(
            "env",
            guest_bytes("hello-rust"),
            json!({"env": {"A=B": "x"}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = node
        .deploy(
            "tiny",
            guest_bytes("hello-rust"),
            json!({"memory_bytes_max": 1000}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = node
        .deploy(
            "bigenv",
            guest_bytes("hello-rust"),
            json!({"env": {"BIG": "x".repeat(70_000)}}),
        )
        .await;
    common::assert_api_error(status, &body, 422, "env_bytes_max");
    assert_eq!(body["error"]["code"], "limit_exceeded", "{body}");
    let long_route = format!("/{}", "a".repeat(300));
    let (status, body) = node
        .deploy(
            "longroute",
            guest_bytes("hello-rust"),
            json!({"route": long_route}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let rollback = node
        .http
        .post(node.api_url("/functions/api/rollback"))
        .bearer_auth(&node.token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        rollback.status(),
        409,
        "a function with one version has nothing to roll back to"
    );

    let response = node
        .http
        .put(node.url("/api/echo?x=1&y=two"))
        .header("x-custom", "value-1")
        .body("the body")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.contains("method: PUT"), "{text}");
    assert!(text.contains("path: /api/echo?x=1&y=two"), "{text}");
    assert!(text.contains("header: x-custom: value-1"), "{text}");
    assert!(text.ends_with("body-bytes: 8\nbody:\nthe body"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_comes_from_the_deploy_and_identical_bytes_are_not_recompiled() {
    let node = Node::start();
    let first = node
        .deploy_ok(
            "mis",
            "misbehave",
            json!({"env": {"A": "1", "B": "two words"}}),
        )
        .await;
    assert_eq!(first["compiled"], true);
    let env = node.get("/mis/env").await.body;
    assert_eq!(
        env, "A=1\nB=two words\n",
        "the guest must see exactly the deploy's environment"
    );
    let second = node.deploy_ok("mis", "misbehave", json!({})).await;
    assert_eq!(second["compiled"], false);
    assert_eq!(second["version"], 2);
    let (_, stats) = node.api_get("/node").await;
    let cache = &stats["compile_cache"];
    assert_eq!(
        (&cache["hits"], &cache["misses"]),
        (&json!(1), &json!(1)),
        "{cache}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_loop_across_redeploys_sees_only_successes() {
    let node = Arc::new(Node::start());
    node.deploy_ok("hello", "hello-rust", json!({"env": {"GREETING": "v0"}}))
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (node, stop, ok) = (node.clone(), stop.clone(), ok.clone());
        loops.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut seen = std::collections::BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                let reply = node.get("/hello").await;
                if reply.status == 200 && reply.body.ends_with(" from eddy!\n") {
                    ok.fetch_add(1, Ordering::Relaxed);
                    seen.insert(reply.body);
                } else {
                    failures.push(format!("{reply:?}"));
                }
            }
            (failures, seen)
        }));
    }
    for round in 1..=5 {
        node.deploy_ok(
            "hello",
            "hello-rust",
            json!({"env": {"GREETING": format!("v{round}")}}),
        )
        .await;
        // Let the load loops be answered by this version before the next deploy: of the
        // next eight answers, at most four (one a loop) can be to requests sent before it.
        let answered = ok.load(Ordering::Relaxed);
        wait_until(
            &format!("the load loops to be answered by v{round}"),
            PROMPTLY,
            async || ok.load(Ordering::Relaxed) >= answered + 8,
        )
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut all_seen = std::collections::BTreeSet::new();
    for l in loops {
        let (failures, seen) = l.await.unwrap();
        assert!(
            failures.is_empty(),
            "requests failed during redeploys: {failures:?}"
        );
        all_seen.extend(seen);
    }
    assert!(ok.load(Ordering::Relaxed) > 20, "the load loop barely ran");
    assert!(
        all_seen.contains("v5 from eddy!\n") && all_seen.len() >= 2,
        "{all_seen:?}"
    );
    assert_eq!(node.get("/hello").await.body, "v5 from eddy!\n");
}

/// A component exporting `interface` with one function `func` (no parameters, returning
/// `result`), as a component of another world than wasi:http/proxy would.
fn exporting(interface: &str, func: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(component
            (core module $m (func (export "f") (result i32) i32.const 0))
            (core instance $i (instantiate $m))
            (func $f (result (result)) (canon lift (core func $i "f")))
            (instance $exported (export "{func}" (func $f)))
            (export "{interface}" (instance $exported)))"#
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_that_cannot_be_served_are_refused_and_nothing_is_stored() {
    let node = Node::start_with_config("[limits]\ncomponent_bytes_max = 1000000\n");
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("random", b"this is not webassembly at all".to_vec(), 422, "not a WebAssembly binary"),
        ("core", wat::parse_str("(module (func (export \"f\")))").unwrap(), 422, "core WebAssembly module"),
        ("noexport", wat::parse_str("(component)").unwrap(), 422, "does not export `wasi:http/incoming-handler"),
        (
            "badimport",
            wat::parse_str("(component (import \"acme:missing/thing@1.0.0\" (instance (export \"ping\" (func)))))").unwrap(),
            422,
            "imports `acme:missing/thing@1.0.0`",
        ),
        (
            "command",
            exporting("wasi:cli/run@0.2.0", "run"),
            422,
            "the component is a command (it exports `wasi:cli/run@0.2.0`",
        ),
        (
            "http03",
            exporting("wasi:http/incoming-handler@0.3.0-rc-2026-03-15", "handle"),
            422,
            "a wasi:http release eddy does not serve; eddy serves wasi:http 0.2",
        ),
        ("huge", vec![0u8; 1_200_000], 413, "component_bytes_max"),
    ];
    for (name, bytes, status, message) in cases {
        let digest = eddy_store::component_digest(&bytes);
        let (got, body) = node.deploy(name, bytes, json!({})).await;
        common::assert_api_error(got, &body, status, message);
        let (status, _) = node.api_get(&format!("/functions/{name}")).await;
        assert_eq!(status, 404, "{name} must not be stored");
        let store = eddy_store::Store::open(&node.state_dir().join("eddy.db")).unwrap();
        assert!(
            !store.has_component(&digest).unwrap(),
            "{name}: component bytes were stored"
        );
    }
    let (_, list) = node.api_get("/functions").await;
    assert_eq!(list["functions"], json!([]));

    let out = node.cli(&["deploy", "core", "/dev/null"]);
    let err = stderr_err(&out);
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    assert!(err.starts_with("error: "), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_api_needs_the_token_and_health_needs_nothing() {
    let node = Node::start();
    let url = node.api_url("/functions");
    let missing = node.http.get(&url).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let wrong = node
        .http
        .get(&url)
        .bearer_auth("eddy_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let deploy = node
        .http
        .post(node.api_url("/functions/x/versions"))
        .send()
        .await
        .unwrap();
    assert_eq!(deploy.status(), 401);
    let unknown = node
        .http
        .get(node.api_url("/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        unknown.status(),
        401,
        "unknown paths under /v1 must not reveal themselves either"
    );

    let not_multipart = node
        .http
        .post(node.api_url("/functions/x/versions"))
        .bearer_auth(&node.token)
        .body("raw bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(not_multipart.status(), 400);
    let body: serde_json::Value = not_multipart.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    node.deploy_ok("hello", "hello-rust", json!({})).await;
    let (status, body) = node.api_get("/functions/hello/logs?after=soon").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("bad_request")),
        "{body}"
    );

    let err = stderr_err(&node.cli(&["ls", "--token", "eddy_wrong"]));
    assert!(err.contains("refused the token"), "{err}");

    for url in [
        format!("http://{}/healthz", node.admin),
        node.url("/_eddy/healthz"),
    ] {
        let response = node.http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "ok\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_component_built_by_componentize_py_deploys_and_serves() {
    let node = Node::start_with_config(&shared_compile_cache());
    node.deploy_ok("py", "hello-python", json!({})).await;
    for _ in 0..3 {
        let reply = node.get("/py").await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, "Hello from Python on eddy!\n"),
            "{}",
            node.output()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_on_the_version_they_started_on() {
    let node = Node::start();
    node.deploy_ok("swap", "misbehave", json!({"route": "/swap"}))
        .await;
    let client = node.http.clone();
    let url = node.url("/swap/sleep?ms=1000");
    let slow =
        tokio::spawn(async move { client.get(url).send().await.unwrap().text().await.unwrap() });
    node.stats_when("swap", "the slow request in flight on version 1", |s| {
        s["in_flight"] == 1
    })
    .await;
    node.deploy_ok("swap", "hello-rust", json!({"route": "/swap"}))
        .await;
    assert_eq!(
        node.get("/swap/sleep?ms=1000").await.body,
        "Hello from eddy!\n",
        "new requests go to version 2"
    );
    assert_eq!(
        slow.await.unwrap(),
        "slept 1000 ms",
        "the in-flight request must finish on version 1"
    );
}
