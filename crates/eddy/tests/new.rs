//! A user's first function in each language: `eddy new`, then `eddy deploy` in its directory
//! builds it with the real toolchain (cargo for wasm32-wasip2, componentize-py,
//! componentize-js from npm) and deploys it to a real node; an edit is rebuilt on the next
//! deploy; `eddy dev` redeploys on every change; and a missing toolchain is named with how
//! to install it.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Node, eddy_in, shared_compile_cache, stderr_err, stdout_ok};

fn eddy(dir: &Path, args: &[&str]) -> Output {
    eddy_in(dir).args(args).output().unwrap()
}

/// `eddy new NAME --lang LANG`, deploy, answer; edit `file` (replacing `from` by `to`, which
/// makes it greet with "Howdy"), deploy again: rebuilt and live; deploy once more: up to
/// date, not rebuilt.
async fn first_function(
    lang: &str,
    name: &str,
    file: &str,
    from: &str,
    to: &str,
) -> (Node, tempfile::TempDir) {
    let work = tempfile::tempdir().unwrap();
    let out = stdout_ok(&eddy(work.path(), &["new", name, "--lang", lang]));
    assert!(
        out.contains(&format!("created the {lang} function {name}")),
        "{out}"
    );
    assert!(out.contains(&format!("cd {name}")), "{out}");
    let project = work.path().join(name);

    let node = Node::start_with_config(&shared_compile_cache());
    let deploy = node.cli_in(&project, &["deploy"]);
    let out = stdout_ok(&deploy);
    let err = String::from_utf8_lossy(&deploy.stderr);
    assert!(out.contains(&format!("deployed {name} version 1")), "{out}");
    assert!(
        err.contains(&format!("eddy build: built {name} → ")),
        "{err}"
    );
    assert!(project.join(format!("build/{name}.wasm")).is_file());
    let reply = node.get(&format!("/{name}?from=test")).await;
    assert_eq!(reply.status, 200, "{}\n{}", reply.body, node.output());
    assert_eq!(
        reply.body,
        format!("Hello from {name}! You asked for /{name}?from=test\n")
    );

    let source = project.join(file);
    let text = std::fs::read_to_string(&source).unwrap();
    assert!(text.contains(from), "{file} should contain {from:?}");
    std::fs::write(&source, text.replace(from, to)).unwrap();
    let deploy = node.cli_in(&project, &["deploy"]);
    assert!(stdout_ok(&deploy).contains("version 2"));
    assert!(String::from_utf8_lossy(&deploy.stderr).contains("built"));
    let reply = node.get(&format!("/{name}")).await;
    assert!(
        reply.body.starts_with(&format!("Howdy from {name}!")),
        "{}",
        reply.body
    );

    let deploy = node.cli_in(&project, &["deploy"]);
    assert!(stdout_ok(&deploy).contains("version 3"));
    let err = String::from_utf8_lossy(&deploy.stderr);
    assert!(err.contains(&format!("{name} is up to date")), "{err}");
    (node, work)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_function_from_new_to_deployed() {
    first_function(
        "rust",
        "my-rust",
        "src/lib.rs",
        "\"{greeting} from",
        "\"Howdy from",
    )
    .await;
}

/// Also: an exception in the handler is a `500` for the client and a traceback in
/// `eddy logs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_function_from_new_to_deployed() {
    let (node, work) = first_function(
        "python",
        "my-python",
        "app.py",
        "f\"{greeting} from",
        "f\"Howdy from",
    )
    .await;
    let project = work.path().join("my-python");
    let app = project.join("app.py");
    let text = std::fs::read_to_string(&app).unwrap();
    let text = text.replace(
        "        greeting = os.environ",
        "        raise ValueError(\"no greeting today\")\n        greeting = os.environ",
    );
    std::fs::write(&app, text).unwrap();
    stdout_ok(&node.cli_in(&project, &["deploy"]));
    let reply = node.get("/my-python").await;
    reply.assert_refused(500, "trap");
    let logs = stdout_ok(&node.cli(&["logs", "my-python"]));
    assert!(
        logs.contains("Traceback (most recent call last)")
            && logs.contains("ValueError: no greeting today"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_js_function_from_new_to_deployed() {
    first_function("js", "my-js", "app.js", "`Hello from", "`Howdy from").await;
}

#[test]
fn a_missing_toolchain_is_named_with_how_to_install_it() {
    let work = tempfile::tempdir().unwrap();
    stdout_ok(&eddy(work.path(), &["new", "py", "--lang", "python"]));
    stdout_ok(&eddy(work.path(), &["new", "js", "--lang", "js"]));
    // A PATH with neither componentize-py nor Node.js on it.
    let bare = |project: &str| {
        eddy_in(&work.path().join(project))
            .arg("build")
            .env("PATH", "/nonexistent")
            .output()
            .unwrap()
    };
    let err = stderr_err(&bare("py"));
    assert!(
        err.contains("componentize-py is not installed")
            && err.contains("pip install componentize-py==0.25.1"),
        "{err}"
    );
    let err = stderr_err(&bare("js"));
    assert!(
        err.contains("Node.js and npm are not installed")
            && err.contains("apt-get install nodejs npm"),
        "{err}"
    );
}

#[test]
fn new_refuses_bad_names_and_existing_projects() {
    let work = tempfile::tempdir().unwrap();
    let err = stderr_err(&eddy(work.path(), &["new", "My_Fn", "--lang", "rust"]));
    assert!(err.contains("function name `My_Fn` is invalid"), "{err}");
    std::fs::create_dir(work.path().join("taken")).unwrap();
    std::fs::write(work.path().join("taken/notes.txt"), "mine").unwrap();
    let err = stderr_err(&eddy(work.path(), &["new", "taken", "--lang", "python"]));
    assert!(err.contains("already exists and is not empty"), "{err}");
    let out = eddy(work.path(), &["new", "f", "--lang", "go"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("possible values: rust, python, js"));
}

#[test]
fn build_outside_a_project_says_how_to_start_one() {
    let work = tempfile::tempdir().unwrap();
    let err = stderr_err(&eddy(work.path(), &["build"]));
    assert!(err.contains("cannot read manifest"), "{err}");
    std::fs::write(
        work.path().join("eddy.toml"),
        "[functions.a]\ncomponent = \"a.wasm\"\n",
    )
    .unwrap();
    let err = stderr_err(&eddy(work.path(), &["build"]));
    assert!(err.contains("eddy new NAME --lang LANG"), "{err}");
}

/// Lines a child process prints, collected by a thread per stream.
fn collect_lines(stream: impl std::io::Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            into.lock().unwrap().push(line);
        }
    });
}

/// Waits until `lines` has `count` lines containing `needle`.
async fn wait_for(lines: &Arc<Mutex<Vec<String>>>, needle: &str, count: usize, child: &mut Child) {
    let deadline = Instant::now() + DEV_STEP_TIMEOUT;
    loop {
        let seen = lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count();
        if seen >= count {
            return;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!(
                "no `{needle}` (#{count}) from eddy dev:\n{}",
                lines.lock().unwrap().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A child process killed (by PID) and reaped when dropped, also when a test fails.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A cold Rust build for wasm32-wasip2 (std from source on the Debian route) takes minutes.
const DEV_STEP_TIMEOUT: Duration = Duration::from_secs(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_redeploys_on_every_change_and_prints_the_invocations() {
    let work = tempfile::tempdir().unwrap();
    stdout_ok(&eddy(work.path(), &["new", "my-dev", "--lang", "rust"]));
    let project = work.path().join("my-dev");
    let node = Node::start();
    let mut running = Running(
        eddy_in(&project)
            .arg("dev")
            .env("EDDY_SERVER", format!("http://{}", node.admin))
            .env("EDDY_STATE_DIR", node.state_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let dev = &mut running.0;
    let lines = Arc::new(Mutex::new(Vec::new()));
    collect_lines(dev.stdout.take().unwrap(), lines.clone());
    collect_lines(dev.stderr.take().unwrap(), lines.clone());

    wait_for(&lines, "eddy dev: my-dev is live", 1, dev).await;
    wait_for(&lines, "watching", 1, dev).await;
    assert_eq!(
        node.get("/my-dev").await.body,
        "Hello from my-dev! You asked for /my-dev\n"
    );

    // An edit that does not build: reported, and the running version keeps serving.
    let lib = project.join("src/lib.rs");
    let good = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, good.replace("struct Function;", "struct Function")).unwrap();
    wait_for(&lines, "keeps serving", 1, dev).await;
    assert_eq!(node.get("/my-dev").await.status, 200);

    // A good edit: rebuilt, redeployed, and what the function prints shows up.
    let edited = good.replace("\"{greeting} from", "\"Howdy from").replace(
        "        let headers",
        "        eprintln!(\"served {path}\");\n        let headers",
    );
    std::fs::write(&lib, edited).unwrap();
    wait_for(&lines, "eddy dev: my-dev is live", 2, dev).await;
    assert_eq!(
        node.get("/my-dev/x").await.body,
        "Howdy from my-dev! You asked for /my-dev/x\n"
    );
    wait_for(&lines, "  | served /my-dev/x", 1, dev).await;
    let versions = stdout_ok(&node.cli(&["versions", "my-dev"]));
    assert!(versions.contains('2'), "{versions}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_below_the_nodes_directory_finds_its_token() {
    let node = Node::start();
    // The node's directory, as `scripts/demo` leaves it: its state in ./.eddy.
    let home = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(node.state_dir(), home.path().join(".eddy")).unwrap();
    let project = home.path().join("functions/hello");
    std::fs::create_dir_all(&project).unwrap();
    let ls = |dir: &Path| {
        eddy_in(dir)
            .args(["ls", "--json"])
            .env("EDDY_SERVER", format!("http://{}", node.admin))
            .env_remove("EDDY_STATE_DIR")
            .env_remove("EDDY_TOKEN")
            .output()
            .unwrap()
    };
    assert!(stdout_ok(&ls(&project)).contains("\"functions\""));
    let elsewhere = tempfile::tempdir().unwrap();
    let err = stderr_err(&ls(elsewhere.path()));
    assert!(err.contains("no admin token"), "{err}");
}
