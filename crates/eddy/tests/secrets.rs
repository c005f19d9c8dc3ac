//! Secrets: sealed under the operator's key, handed to a function as environment variables,
//! and nowhere else in the clear — not an API answer, not a log line, not the database.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{Node, guest, stderr_err, stdout_ok};
use serde_json::json;

/// A key file outside every state directory.
fn key_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{text}\n")).unwrap();
    path
}

fn config(key: &Path, previous: &[&Path], extra: &str) -> String {
    let previous: Vec<String> = previous
        .iter()
        .map(|p| format!("\"{}\"", p.display()))
        .collect();
    format!(
        "secrets_key_file = \"{}\"\nsecrets_previous_key_files = [{}]\n{extra}",
        key.display(),
        previous.join(", ")
    )
}

/// `eddy secret set NAME` with `value` on stdin.
fn set_secret(node: &Node, name: &str, value: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["secret", "set", name])
        .env("EDDY_SERVER", format!("http://{}", node.admin))
        .env("EDDY_STATE_DIR", node.state_dir())
        .env_remove("EDDY_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{value}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn deploy_hello(node: &Node) {
    let wasm = guest("hello-rust");
    stdout_ok(&node.cli(&[
        "deploy",
        "hello",
        wasm.to_str().unwrap(),
        "--secret",
        "GREETING=greeting",
    ]));
}

/// `eddy serve` with `config` on `<dir>/state`, which must refuse to start: its stderr.
fn refused_start(dir: &Path, config: &str) -> String {
    let config_path = dir.join("node.toml");
    std::fs::write(&config_path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .arg("--config")
        .arg(&config_path)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "eddy serve started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn every_file(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            every_file(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[tokio::test]
async fn a_secret_reaches_the_function_and_no_answer_log_line_or_database_file() {
    let keys = tempfile::tempdir().unwrap();
    let key = key_file(keys.path(), "secrets.key", &"k".repeat(64));
    let node = Node::start_with_config(&config(&key, &[], ""));
    let value = format!("s3cr3t-{}", std::process::id() * 7919);
    let out = set_secret(&node, "greeting", &value);
    assert!(stdout_ok(&out).contains("version 1"));
    deploy_hello(&node);
    let reply = node.get("/hello").await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.contains(&value), "{}", reply.body);
    // Every answer of the control API about the function, the node and the secret.
    let mut answers = String::new();
    for path in [
        "/functions",
        "/functions/hello",
        "/functions/hello/versions",
        "/functions/hello/logs?tail=100",
        "/functions/hello/stats",
        "/secrets",
        "/audit",
        "/tokens",
        "/node",
        "/nodes",
    ] {
        let (status, body) = node.api_get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        answers.push_str(&body.to_string());
    }
    answers.push_str(&node.metrics().await);
    assert!(
        answers.contains("greeting@1"),
        "the version does not show the binding"
    );
    assert!(!answers.contains(&value), "an API answer holds the secret");
    let listed = stdout_ok(&node.cli(&["secret", "ls"]));
    assert!(listed.contains("greeting") && listed.contains("hello (GREETING, version 1)"));
    assert!(!listed.contains(&value));
    // The node's own log lines.
    assert!(
        !node.output().contains(&value),
        "the node logged the secret"
    );
    // The database files, byte for byte.
    let mut files = Vec::new();
    every_file(&node.state_dir(), &mut files);
    assert!(files.iter().any(|f| f.ends_with("eddy.db")), "{files:?}");
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        assert!(
            !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
            "{} holds the secret in the clear",
            file.display()
        );
    }
}

#[tokio::test]
async fn a_changed_secret_takes_effect_at_the_next_deploy_and_a_bound_one_cannot_go() {
    let keys = tempfile::tempdir().unwrap();
    let key = key_file(keys.path(), "secrets.key", &"a".repeat(64));
    let state = Arc::new(tempfile::tempdir().unwrap());
    let mut node = Node::start_in(state.clone(), &config(&key, &[], ""));
    stdout_ok(&set_secret(&node, "greeting", "first"));
    deploy_hello(&node);
    assert!(node.get("/hello").await.body.contains("first"));
    assert!(stdout_ok(&set_secret(&node, "greeting", "second")).contains("version 2"));
    // Pinned: the running version keeps the value it was deployed with, across a restart.
    assert!(node.get("/hello").await.body.contains("first"));
    assert!(node.terminate());
    let node = Node::start_in(state, &config(&key, &[], ""));
    assert!(node.get("/hello").await.body.contains("first"));
    deploy_hello(&node);
    assert!(node.get("/hello").await.body.contains("second"));
    stdout_ok(&node.cli(&["rollback", "hello"]));
    assert!(node.get("/hello").await.body.contains("first"));
    // A secret a live version binds is not removed from under it.
    let out = node.cli(&["secret", "rm", "greeting"]);
    assert!(stderr_err(&out).contains("hello (GREETING, version 1)"));
    // A deploy naming a secret that does not exist is refused and changes nothing.
    let wasm = guest("hello-rust");
    let out = node.cli(&[
        "deploy",
        "hello",
        wasm.to_str().unwrap(),
        "--secret",
        "GREETING=nope",
    ]);
    assert!(stderr_err(&out).contains("no secret `nope`"));
    assert!(node.get("/hello").await.body.contains("first"));
    // A deployer may bind only the secrets its token names.
    let (status, body) = {
        let response = node
            .http
            .post(node.api_url("/tokens"))
            .bearer_auth(&node.token)
            .json(&json!({"name": "ci", "role": "deployer", "secrets": ["other"]}))
            .send()
            .await
            .unwrap();
        (
            response.status(),
            response.json::<serde_json::Value>().await.unwrap(),
        )
    };
    assert_eq!(status, 201);
    let out = common::eddy_in(Path::new("."))
        .args([
            "deploy",
            "hello",
            wasm.to_str().unwrap(),
            "--secret",
            "GREETING=greeting",
        ])
        .env("EDDY_SERVER", format!("http://{}", node.admin))
        .env("EDDY_TOKEN", body["token"].as_str().unwrap())
        .output()
        .unwrap();
    let err = stderr_err(&out);
    assert!(
        err.contains("`greeting`") && err.contains("secret"),
        "{err}"
    );
    // Removed and set again, a secret starts its versions over: a rollback to a version
    // pinned to the removed one is refused, not given the new value.
    stdout_ok(&node.cli(&["deploy", "hello", wasm.to_str().unwrap()]));
    stdout_ok(&node.cli(&["secret", "rm", "greeting"]));
    assert!(!stdout_ok(&node.cli(&["secret", "ls"])).contains("greeting"));
    stdout_ok(&set_secret(&node, "greeting", "third"));
    let out = node.cli(&["rollback", "hello", "1"]);
    assert!(stderr_err(&out).contains("is gone"), "{}", stderr_err(&out));
    assert!(node.get("/hello").await.body.contains("Hello from eddy"));
    stdout_ok(&node.cli(&["rm", "hello"]));
}

#[tokio::test]
async fn the_key_rotates_without_downtime_and_a_node_without_the_key_says_which() {
    let keys = tempfile::tempdir().unwrap();
    let old = key_file(keys.path(), "old.key", &"o".repeat(64));
    let new = key_file(keys.path(), "new.key", &"n".repeat(64));
    let state = Arc::new(tempfile::tempdir().unwrap());
    let mut node = Node::start_in(state.clone(), &config(&old, &[], ""));
    stdout_ok(&set_secret(&node, "greeting", "rotated"));
    deploy_hello(&node);
    assert!(node.terminate());
    // The new key seals; the old one still opens what it sealed.
    let mut node = Node::start_in(state.clone(), &config(&new, &[&old], ""));
    assert!(node.get("/hello").await.body.contains("rotated"));
    let out = stdout_ok(&node.cli(&["secret", "rekey"]));
    assert!(out.contains("sealed 1 secret versions again"), "{out}");
    let out = stdout_ok(&node.cli(&["secret", "rekey"]));
    assert!(
        out.contains("sealed 0 secret versions again under the node's key (1 were already)"),
        "{out}"
    );
    assert!(node.terminate());
    let mut node = Node::start_in(state.clone(), &config(&new, &[], ""));
    assert!(node.get("/hello").await.body.contains("rotated"));
    assert!(node.terminate());
    drop(node);
    // Only the old key: the node cannot open the function's secret and says why.
    let err = refused_start(state.path(), &config(&old, &[], ""));
    assert!(
        err.contains("does not hold") && err.contains("secrets_key_file"),
        "{err}"
    );
}

#[tokio::test]
async fn a_new_key_written_into_the_key_file_takes_over_without_a_restart() {
    let keys = tempfile::tempdir().unwrap();
    let key = key_file(keys.path(), "secrets.key", &"1".repeat(64));
    let state = Arc::new(tempfile::tempdir().unwrap());
    let mut node = Node::start_in(state.clone(), &config(&key, &[], ""));
    stdout_ok(&set_secret(&node, "greeting", "before"));
    deploy_hello(&node);
    key_file(keys.path(), "secrets.key", &"2".repeat(64));
    common::wait_for(
        "the node to take the new key",
        Duration::from_secs(10),
        async || match node.output().contains("the secrets key changed") {
            true => Ok(()),
            false => Err("not yet"),
        },
    )
    .await;
    // The old key stays in memory: what it sealed still opens, for a new deploy too.
    assert!(node.get("/hello").await.body.contains("before"));
    deploy_hello(&node);
    assert!(node.get("/hello").await.body.contains("before"));
    stdout_ok(&set_secret(&node, "other", "after"));
    let out = stdout_ok(&node.cli(&["secret", "rekey"]));
    assert!(out.contains("sealed 1 secret versions again"), "{out}");
    // After the re-key the new key alone opens everything.
    assert!(node.terminate());
    let node = Node::start_in(state, &config(&key, &[], ""));
    assert!(node.get("/hello").await.body.contains("before"));
}

#[tokio::test]
async fn without_a_key_or_past_the_size_limit_a_secret_is_refused() {
    let node = Node::start_with_config("[limits]\nsecret_bytes_max = 16\n");
    let out = set_secret(&node, "greeting", "value");
    assert!(stderr_err(&out).contains("no secrets key"));
    let keys = tempfile::tempdir().unwrap();
    let key = key_file(keys.path(), "secrets.key", &"k".repeat(64));
    let node = Node::start_with_config(&config(&key, &[], "[limits]\nsecret_bytes_max = 16\n"));
    let out = set_secret(&node, "greeting", &"x".repeat(17));
    assert!(stderr_err(&out).contains("secret_bytes_max"));
    stdout_ok(&set_secret(&node, "greeting", &"x".repeat(16)));
    let out = set_secret(&node, "bad name", "v");
    assert!(stderr_err(&out).contains("invalid"));
    // A key kept inside the state directory is refused.
    let dir = tempfile::tempdir().unwrap();
    let inside = dir.path().join("state").join("secrets.key");
    std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
    std::fs::write(&inside, "k".repeat(64)).unwrap();
    let err = refused_start(dir.path(), &config(&inside, &[], ""));
    assert!(err.contains("inside the state directory"), "{err}");
}
