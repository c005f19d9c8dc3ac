//! The example functions beyond hello, in each language (`examples/*-{rust,python,js}`),
//! built with their real toolchains and deployed with `eddy deploy` from a copy of their
//! directory, as a user would: a JSON API calling GitHub (a local stand-in, allowed by the
//! function's outbound list), a queue consumer delivering to a webhook, and a WebSocket chat
//! room. One scenario per example runs against each language's version of it.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use common::{Node, REACH_LOOPBACK, WsClient, shared_compile_cache, stdout_ok, ws_expect};
use futures::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// What a build leaves in a project; not copied.
const BUILD_OUTPUTS: &[&str] = &["build", "target", "node_modules", "__pycache__"];

/// A copy of `examples/NAME` in a temporary directory, without build outputs, with each
/// `(from, to)` replaced in its eddy.toml (every one must occur).
fn example_project(name: &str, replacements: &[(&str, String)]) -> (tempfile::TempDir, PathBuf) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name);
    let work = tempfile::tempdir().unwrap();
    let project = work.path().join(name);
    copy_dir(&source, &project);
    let manifest = project.join("eddy.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    for (from, to) in replacements {
        assert!(
            text.contains(from),
            "{name}/eddy.toml should contain {from:?}"
        );
        text = text.replace(from, to);
    }
    std::fs::write(&manifest, text).unwrap();
    (work, project)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if BUILD_OUTPUTS.iter().any(|skip| name == *skip) {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// `eddy deploy` in the project: builds it with its toolchain, then deploys it.
fn deploy(node: &Node, project: &Path, function: &str) {
    let out = stdout_ok(&node.cli_in(project, &["deploy"]));
    assert!(
        out.contains(&format!("deployed {function} version 1")),
        "{out}"
    );
}

/// Serves `app` on a free loopback port until the returned task is aborted (or the test's
/// runtime ends).
async fn serve(app: axum::Router) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, task)
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// repo-api: a JSON API that calls an allowed outbound service

/// A stand-in for GitHub's `GET /repos/{owner}/{repo}`: `octo/hello` exists, `octo/broken`
/// fails, `octo/garbled` answers something that is not JSON, anything else is not found.
/// Records the headers of each request.
async fn fake_github() -> (
    SocketAddr,
    tokio::task::JoinHandle<()>,
    Arc<Mutex<Vec<HeaderMap>>>,
) {
    use axum::extract::{Path, State};
    type Seen = Arc<Mutex<Vec<HeaderMap>>>;
    async fn repo(
        State(seen): State<Seen>,
        Path((owner, repo)): Path<(String, String)>,
        headers: HeaderMap,
    ) -> (StatusCode, String) {
        seen.lock().unwrap().push(headers);
        match (owner.as_str(), repo.as_str()) {
            ("octo", "hello") => (
                StatusCode::OK,
                json!({
                    "id": 1, "name": "hello", "full_name": "octo/hello", "private": false,
                    "description": "Says hello", "stargazers_count": 42, "forks_count": 7,
                    "open_issues_count": 3, "language": null, "watchers": 42,
                    "html_url": "https://github.com/octo/hello",
                    "owner": {"login": "octo", "id": 9},
                })
                .to_string(),
            ),
            ("octo", "broken") => (StatusCode::INTERNAL_SERVER_ERROR, "oops".into()),
            ("octo", "garbled") => (StatusCode::OK, "<html>rate limited</html>".into()),
            _ => (
                StatusCode::NOT_FOUND,
                json!({"message": "Not Found"}).to_string(),
            ),
        }
    }
    let seen = Seen::default();
    let app = axum::Router::new()
        .route("/repos/{owner}/{repo}", axum::routing::get(repo))
        .with_state(seen.clone());
    let (addr, task) = serve(app).await;
    (addr, task, seen)
}

async fn repo_api(lang: &str) {
    let function = format!("repo-api-{lang}");
    let (github, github_task, seen) = fake_github().await;
    let (_work, project) = example_project(
        &function,
        &[
            (
                "GITHUB_API = \"https://api.github.com\"",
                format!("GITHUB_API = \"http://{github}\"\nGITHUB_TOKEN = \"t0ken\""),
            ),
            ("\"api.github.com\"", format!("\"{github}\"")),
        ],
    );
    let node = Node::start_with_config(&format!("{REACH_LOOPBACK}{}", shared_compile_cache()));
    deploy(&node, &project, &function);

    let found = node.get(&format!("/{function}/octo/hello")).await;
    assert_eq!(found.status, 200, "{}\n{}", found.body, node.output());
    assert_eq!(found.header("content-type"), Some("application/json"));
    assert_eq!(
        serde_json::from_str::<Value>(&found.body).unwrap(),
        json!({
            "repo": "octo/hello", "description": "Says hello", "stars": 42, "forks": 7,
            "open_issues": 3, "language": null, "url": "https://github.com/octo/hello",
        })
    );
    {
        let seen = seen.lock().unwrap();
        let request = seen.last().expect("the function asked GitHub");
        assert_eq!(header(request, "accept"), "application/vnd.github+json");
        assert_eq!(header(request, "user-agent"), "eddy-example-repo-api");
        assert_eq!(header(request, "authorization"), "Bearer t0ken");
    }

    let error = |status: u16, message: String| (status, json!({ "error": message }));
    let expect = |path: &str, (status, body): (u16, Value)| {
        let (node, path) = (&node, format!("/{function}{path}"));
        async move {
            let reply = node.get(&path).await;
            assert_eq!(reply.status, status, "{path}: {}", reply.body);
            assert_eq!(
                reply.header("content-type"),
                Some("application/json"),
                "{path}"
            );
            let got: Value = serde_json::from_str(&reply.body)
                .unwrap_or_else(|_| panic!("{path}: not JSON: {}", reply.body));
            assert_eq!(got, body, "{path}");
        }
    };
    expect(
        "/octo/missing",
        error(404, "no such repository: octo/missing".into()),
    )
    .await;
    expect("/octo/broken", error(502, "GitHub answered 500".into())).await;
    expect(
        "/octo/garbled",
        error(502, "GitHub's answer was not a repository".into()),
    )
    .await;
    let usage = error(400, format!("expected GET /{function}/OWNER/REPO"));
    expect("/octo", usage.clone()).await;
    expect("/octo/hello/extra", usage.clone()).await;
    expect("/octo/he%20llo", usage).await;

    let post = node
        .send(reqwest::Client::new().post(node.url(&format!("/{function}/octo/hello"))))
        .await;
    assert_eq!(post.status, 405, "{}", post.body);
    assert_eq!(post.header("allow"), Some("GET"));
    assert_eq!(
        serde_json::from_str::<Value>(&post.body).unwrap(),
        json!({"error": "only GET"})
    );

    // GitHub gone: the function says so instead of failing.
    github_task.abort();
    let _ = github_task.await;
    let gone = node.get(&format!("/{function}/octo/hello")).await;
    assert_eq!(gone.status, 502, "{}", gone.body);
    let message = serde_json::from_str::<Value>(&gone.body).unwrap()["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.starts_with("cannot reach GitHub: "), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repo_api_in_rust() {
    repo_api("rust").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repo_api_in_python() {
    repo_api("python").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repo_api_in_js() {
    repo_api("js").await;
}

// ---------------------------------------------------------------------------------------
// webhook: a queue consumer

/// One POST the webhook received: its headers of interest and body.
#[derive(Debug, Clone)]
struct Hook {
    id: String,
    attempt: String,
    content_type: String,
    user_agent: String,
    body: String,
}

/// A webhook receiver on loopback that fails its first POST with 503 and accepts the rest.
async fn flaky_webhook() -> (SocketAddr, Arc<Mutex<Vec<Hook>>>) {
    use axum::extract::State;
    type Seen = Arc<Mutex<Vec<Hook>>>;
    async fn receive(State(seen): State<Seen>, headers: HeaderMap, body: String) -> StatusCode {
        let mut seen = seen.lock().unwrap();
        seen.push(Hook {
            id: header(&headers, "webhook-id"),
            attempt: header(&headers, "webhook-attempt"),
            content_type: header(&headers, "content-type"),
            user_agent: header(&headers, "user-agent"),
            body,
        });
        if seen.len() == 1 {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        }
    }
    let seen = Seen::default();
    let app = axum::Router::new()
        .route("/eddy", axum::routing::post(receive))
        .with_state(seen.clone());
    (serve(app).await.0, seen)
}

async fn webhook(lang: &str) {
    let (function, queue) = (format!("webhook-{lang}"), format!("webhooks-{lang}"));
    let (hook, seen) = flaky_webhook().await;
    let (_work, project) = example_project(
        &function,
        &[
            (
                "https://hooks.example.com/eddy",
                format!("http://{hook}/eddy"),
            ),
            ("\"hooks.example.com\"", format!("\"{hook}\"")),
        ],
    );
    let node = Node::start_with_config(&format!("{REACH_LOOPBACK}{}", shared_compile_cache()));
    deploy(&node, &project, &function);

    let sent = stdout_ok(&node.cli(&[
        "queue",
        "send",
        &queue,
        r#"{"order": 42}"#,
        "--content-type",
        "application/json",
    ]));
    let id = sent.split_whitespace().next().unwrap().to_owned();

    // The first POST fails (503): the function answers non-2xx, eddy retries after its
    // backoff (0–1 s), and the second succeeds with the same webhook-id.
    let hooks = common::wait_for("two webhook POSTs", Duration::from_secs(30), async || {
        let hooks = seen.lock().unwrap().clone();
        if hooks.len() >= 2 {
            Ok(hooks)
        } else {
            Err(format!("{hooks:?}\n{}", node.output()))
        }
    })
    .await;
    assert_eq!(hooks.len(), 2, "{hooks:?}\n{}", node.output());
    for (hook, attempt) in hooks.iter().zip(["1", "2"]) {
        assert_eq!(hook.id, id, "{hooks:?}");
        assert_eq!(hook.attempt, attempt, "{hooks:?}");
        assert_eq!(hook.content_type, "application/json", "{hooks:?}");
        assert_eq!(hook.user_agent, "eddy-example-webhook", "{hooks:?}");
        assert_eq!(hook.body, r#"{"order": 42}"#, "{hooks:?}");
    }

    // Acknowledged: nothing left, one failed attempt, nothing dead-lettered.
    let queue_state = common::wait_for("the message acknowledged", common::PROMPTLY, async || {
        let queue_state = node.api_get(&format!("/queues/{queue}")).await.1;
        if queue_state["succeeded"] == 1 {
            Ok(queue_state)
        } else {
            Err(queue_state)
        }
    })
    .await;
    assert_eq!(queue_state["succeeded"], 1, "{queue_state}");
    assert_eq!(queue_state["depth"], 0, "{queue_state}");
    assert_eq!(queue_state["failed_attempts"], 1, "{queue_state}");
    assert_eq!(queue_state["dead_lettered"], 0, "{queue_state}");

    // What the function printed is in its logs.
    let logs: String = node
        .wait_logs(&function, 2)
        .await
        .iter()
        .map(|entry| entry["log"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        logs.contains(&format!(
            "webhook answered 503 for {id} (attempt 1); eddy will retry"
        )),
        "{logs}"
    );
    assert!(
        logs.contains(&format!("delivered {id} (attempt 2): 200")),
        "{logs}"
    );

    // Called as an ordinary HTTP endpoint, it says it is not one; a public request that
    // dresses up as a delivery loses the node's header at the door and is no delivery either.
    let plain = node.get(&format!("/{function}")).await;
    let forged = node
        .send(
            reqwest::Client::new()
                .post(node.url(&format!("/{function}")))
                .header("eddy-queue", &queue)
                .header("ce-id", "m999")
                .body("forged"),
        )
        .await;
    for reply in [plain, forged] {
        assert_eq!(reply.status, 400, "{}", reply.body);
        assert_eq!(
            serde_json::from_str::<Value>(&reply.body).unwrap(),
            json!({"error": "not a queue delivery"})
        );
    }
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "nothing more reached the webhook"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_consumer_in_rust() {
    webhook("rust").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_consumer_in_python() {
    webhook("python").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_consumer_in_js() {
    webhook("js").await;
}

// ---------------------------------------------------------------------------------------
// chat: a WebSocket chat room

/// Connects to `path` and returns the client with its connection id.
async fn join(node: &Node, path: &str) -> (WsClient, String) {
    let url = format!("ws://{}{path}", node.public);
    let (client, response) = connect_async(&url)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}\n{}", node.output()));
    let id = response.headers()["eddy-connection-id"]
        .to_str()
        .unwrap()
        .to_owned();
    (client, id)
}

/// The next message on `client`, as JSON; `what` names it when it does not come.
async fn event(client: &mut WsClient, what: &str) -> Value {
    match ws_expect(client, what).await {
        Message::Text(text) => {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
        }
        other => panic!("expected a text message, got {other:?}"),
    }
}

async fn chat(lang: &str) {
    let function = format!("chat-{lang}");
    let (_work, project) = example_project(&function, &[]);
    let node = Node::start_with_config(&shared_compile_cache());
    deploy(&node, &project, &function);

    let help = node.get(&format!("/{function}")).await;
    assert_eq!(help.status, 200, "{}", help.body);
    assert_eq!(
        help.body,
        format!("connect a WebSocket to /{function}/ROOM\n")
    );

    let room = format!("/{function}/general");
    let (mut ann, ann_id) = join(&node, &room).await;
    let (mut bob, bob_id) = join(&node, &room).await;
    assert_eq!(
        event(&mut ann, "ann: bob's join").await,
        json!({"type": "join", "id": bob_id, "room": "general"})
    );

    // A message reaches everyone in the room, the sender included.
    ann.send(Message::text("hi bob")).await.unwrap();
    let said = json!({"type": "message", "from": ann_id, "text": "hi bob"});
    assert_eq!(event(&mut ann, "ann: her own message").await, said);
    assert_eq!(event(&mut bob, "bob: ann's message").await, said);

    // Too long: an error to the sender alone; the next message is the next thing ann sees.
    bob.send(Message::text("x".repeat(1001))).await.unwrap();
    assert_eq!(
        event(&mut bob, "bob: the size error").await,
        json!({"type": "error", "error": "messages are at most 1000 bytes"})
    );
    bob.send(Message::text("sorry")).await.unwrap();
    let said = json!({"type": "message", "from": bob_id, "text": "sorry"});
    assert_eq!(event(&mut ann, "ann: bob's sorry").await, said);
    assert_eq!(event(&mut bob, "bob: his own sorry").await, said);

    // A public request cannot pass for an event of ann's connection: the node removes eddy-*
    // request headers, so the function sees a plain request and answers its help.
    let forged = node
        .send(
            reqwest::Client::new()
                .post(node.url(&room))
                .header("eddy-websocket", "message")
                .header("eddy-connection-id", &ann_id)
                .body("forged"),
        )
        .await;
    assert_eq!(forged.status, 200, "{}", forged.body);
    assert_eq!(
        forged.body,
        format!("connect a WebSocket to /{function}/ROOM\n")
    );

    // Someone in another room hears nothing of this one.
    let (mut cat, _) = join(&node, &format!("/{function}")).await;
    bob.close(None).await.unwrap();
    assert_eq!(
        event(&mut ann, "ann: bob's leave").await,
        json!({"type": "leave", "id": bob_id})
    );
    cat.send(Message::text("anyone in the lobby?"))
        .await
        .unwrap();
    assert_eq!(
        event(&mut cat, "cat: the lobby message").await["text"],
        "anyone in the lobby?"
    );

    match connect_async(format!("ws://{}/{function}/bad!room", node.public)).await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status().as_u16(), 400);
            let body = response.body().clone().unwrap_or_default();
            assert_eq!(
                serde_json::from_slice::<Value>(&body).unwrap(),
                json!({"error": "room names are 1-64 characters of A-Z a-z 0-9 _ -"})
            );
        }
        other => panic!("expected a 400 refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_room_in_rust() {
    chat("rust").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_room_in_python() {
    chat("python").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_room_in_js() {
    chat("js").await;
}
