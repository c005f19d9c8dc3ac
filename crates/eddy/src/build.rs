//! `eddy build`: makes a function's component from its sources with its language's
//! toolchain — cargo for Rust (the rustup `wasm32-wasip2` target, or Debian's `rustc-web`
//! where rustup has none), componentize-py for Python, componentize-js for JavaScript — and
//! says exactly what to install when a toolchain is missing.

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
pub use eddy_parse::manifest::Lang;
use serde::Deserialize;

use crate::{manifest, wit};

/// The componentize-py release the Python template is written for.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";
/// The componentize-js release the JavaScript template pins.
pub const COMPONENTIZE_JS_VERSION: &str = "0.23.0";

/// The Debian route to `wasm32-wasip2` (../shared/TOOLCHAIN.md): Debian's rustc builds std
/// from its own source and links with LLVM's wasm-ld against Debian's wasi-libc.
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_LLVM_BIN: &str = "/usr/lib/llvm-22/bin";
const DEBIAN_WASI_LIBC: &str = "/usr/lib/wasm32-wasi";
/// Each file the Debian route needs, and the package that has it.
const DEBIAN_FILES: &[(&str, &str)] = &[
    (DEBIAN_RUSTC, "rustc-web"),
    (DEBIAN_CARGO, "cargo-web"),
    ("/usr/lib/rustlib/src/rust/library", "rust-web-src"),
    ("/usr/lib/llvm-22/bin/wasm-ld", "lld-22"),
    ("/usr/lib/wasm32-wasi/libc.a", "wasi-libc"),
];

/// Directories never taken for sources when deciding whether a build is stale.
const NOT_SOURCES: &[&str] = &["target", "node_modules", "__pycache__", ".git", ".eddy"];

/// What to build: a function's sources and where its component goes.
#[derive(Clone, Debug, PartialEq)]
pub struct BuildSpec {
    pub lang: Lang,
    /// The function's project directory.
    pub source: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// Functions of the manifest to build [default: every function that has a `lang`]
    names: Vec<String>,
    /// Manifest listing the functions [default: eddy.toml]
    #[arg(short = 'f', long = "manifest", value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// Build even when the component is newer than every source file
    #[arg(long)]
    force: bool,
}

pub fn run(args: BuildArgs) -> Result<()> {
    let path = args
        .manifest
        .unwrap_or_else(|| manifest::DEFAULT_PATH.into());
    let requests = manifest::load(&path)?.functions;
    for name in &args.names {
        if !requests.iter().any(|r| &r.name == name) {
            bail!(
                "{} has no function `{name}` — its functions: {}",
                path.display(),
                requests
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let mut built = 0;
    for request in &requests {
        if !args.names.is_empty() && !args.names.contains(&request.name) {
            continue;
        }
        let Some(spec) = &request.build else {
            if args.names.contains(&request.name) {
                bail!(
                    "function `{}` in {} has no `lang`, so eddy cannot build it — add \
                     lang = \"rust\", \"python\" or \"js\"",
                    request.name,
                    path.display()
                );
            }
            continue;
        };
        build(&request.name, spec, &request.component, args.force)?;
        built += 1;
    }
    if built == 0 {
        bail!(
            "no function in {} has a `lang` to build with — add lang = \"rust\", \"python\" or \
             \"js\" to a [functions.NAME] table, or create a project with `eddy new NAME --lang LANG`",
            path.display()
        );
    }
    Ok(())
}

/// Builds `spec` into `output` unless `output` is newer than every source file (or `force`).
/// Returns whether it built.
pub fn build(name: &str, spec: &BuildSpec, output: &Path, force: bool) -> Result<bool> {
    if !spec.source.is_dir() {
        bail!(
            "the sources of function `{name}` are not there: {} is not a directory — set \
             `source` in the manifest to the function's project directory",
            spec.source.display()
        );
    }
    if !force && up_to_date(&spec.source, output)? {
        eprintln!("eddy build: {name} is up to date ({})", output.display());
        return Ok(false);
    }
    let started = Instant::now();
    eprintln!(
        "eddy build: building {name} ({}) from {}",
        spec.lang,
        spec.source.display()
    );
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating {} for the component", dir.display()))?;
    }
    let partial = output.with_extension("wasm.partial");
    let result = match spec.lang {
        Lang::Rust => build_rust(spec, &partial),
        Lang::Python => build_python(spec, &partial),
        Lang::Js => build_js(spec, &partial),
    };
    if let Err(err) = result {
        let _ = std::fs::remove_file(&partial);
        return Err(err.context(format!("building function `{name}`")));
    }
    std::fs::rename(&partial, output)
        .with_context(|| format!("moving the component into {}", output.display()))?;
    let bytes = std::fs::metadata(output)?.len();
    eprintln!(
        "eddy build: built {name} → {} ({}, {:.1}s)",
        output.display(),
        bytesize::ByteSize::b(bytes).display().iec(),
        started.elapsed().as_secs_f64()
    );
    Ok(true)
}

/// What a component is built from: the files under its project directory, but for those in
/// `NOT_SOURCES` directories, in the component's own directory, and `eddy.toml`. Paths are
/// compared canonical, as a file watcher reports them.
pub struct Sources {
    root: PathBuf,
    /// The component's directory, once it exists.
    output_dir: Option<PathBuf>,
}

impl Sources {
    pub fn new(source: &Path, output: &Path) -> Result<Sources> {
        let root = source
            .canonicalize()
            .with_context(|| format!("the sources at {}", source.display()))?;
        let output_dir = output
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .canonicalize()
            .ok();
        Ok(Sources { root, output_dir })
    }

    /// Whether a change to `path` can change the component.
    pub fn contains(&self, path: &Path) -> bool {
        let Ok(relative) = path.strip_prefix(&self.root) else {
            return false;
        };
        !(relative
            .components()
            .any(|c| NOT_SOURCES.iter().any(|n| c.as_os_str() == *n))
            || relative.file_name() == Some(OsStr::new(manifest::DEFAULT_PATH))
            || self
                .output_dir
                .as_ref()
                .is_some_and(|d| path.starts_with(d)))
    }

    /// When the newest source file was modified.
    fn newest(&self, dir: &Path) -> Result<Option<SystemTime>> {
        let mut newest = None;
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            let path = entry.path();
            if !self.contains(&path) {
                continue;
            }
            let time = if entry.file_type()?.is_dir() {
                self.newest(&path)?
            } else {
                Some(entry.metadata()?.modified()?)
            };
            newest = newest.max(time);
        }
        Ok(newest)
    }
}

/// Whether `output` exists and no source file under `source` is newer.
fn up_to_date(source: &Path, output: &Path) -> Result<bool> {
    let Ok(built) = std::fs::metadata(output).and_then(|m| m.modified()) else {
        return Ok(false);
    };
    let sources = Sources::new(source, output)?;
    Ok(sources
        .newest(&sources.root)?
        .is_none_or(|newest| newest <= built))
}

/// Runs a toolchain command with its output on our stderr (stdout stays for results).
fn run_tool(what: &str, command: &mut Command) -> Result<()> {
    let stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
    let status = command
        .stdin(Stdio::null())
        .stdout(Stdio::from(stderr))
        .status()
        .with_context(|| format!("starting {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status}); its output is above");
    }
    Ok(())
}

/// Whether `program` runs at all (is installed and on PATH).
fn runs(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

// ---------------------------------------------------------------------------------------
// Rust

#[derive(Deserialize)]
struct CargoToml {
    package: Option<CargoPackage>,
    lib: Option<CargoLib>,
}

#[derive(Deserialize)]
struct CargoPackage {
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct CargoLib {
    name: Option<String>,
    #[serde(default)]
    crate_type: Vec<String>,
}

enum RustRoute {
    Rustup,
    Debian,
}

fn rust_route() -> Result<RustRoute> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    if installed.lines().any(|t| t.trim() == "wasm32-wasip2") {
        return Ok(RustRoute::Rustup);
    }
    let missing: Vec<&str> = DEBIAN_FILES
        .iter()
        .filter(|(file, _)| !Path::new(file).exists())
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(RustRoute::Debian);
    }
    bail!(
        "no Rust toolchain for wasm32-wasip2 — run `rustup target add wasm32-wasip2`; where \
         rustup cannot download it (Debian 12 with bookworm-backports), `sudo apt-get install \
         rustc-web cargo-web rust-web-src lld-22 wasi-libc` (missing here: {})",
        missing.join(", ")
    )
}

fn build_rust(spec: &BuildSpec, output: &Path) -> Result<()> {
    let manifest_path = spec.source.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest_path).map_err(|err| {
        anyhow!(
            "cannot read {}: {err} — a Rust function is a cargo crate; `eddy new NAME --lang \
             rust` writes one",
            manifest_path.display()
        )
    })?;
    let cargo: CargoToml = toml::from_str(&text)
        .map_err(|err| anyhow!("{}: {}", manifest_path.display(), err.message()))?;
    let package = cargo.package.ok_or_else(|| {
        anyhow!(
            "{} has no [package]: eddy builds one crate per function",
            manifest_path.display()
        )
    })?;
    let lib = cargo.lib.unwrap_or_default();
    if !lib.crate_type.iter().any(|t| t == "cdylib") {
        bail!(
            "{} does not build a component: add [lib] crate-type = [\"cdylib\"] (a function \
             is a library that exports wasi:http/incoming-handler)",
            manifest_path.display()
        );
    }
    let crate_name = lib.name.unwrap_or(package.name).replace('-', "_");
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => spec.source.join("target"),
    };
    let mut command = match rust_route()? {
        RustRoute::Rustup => {
            let mut command = Command::new("cargo");
            command.args(["build", "--release", "--target", "wasm32-wasip2"]);
            command
        }
        RustRoute::Debian => {
            // Debian's rustc ships no std for wasm32-wasip2: build it from rust-web-src
            // (cached in the target directory after the first time).
            let path = std::env::var_os("PATH").unwrap_or_default();
            let mut paths = vec![PathBuf::from(DEBIAN_LLVM_BIN)];
            paths.extend(std::env::split_paths(&path));
            let mut command = Command::new(DEBIAN_CARGO);
            command
                .args(["build", "--release", "--target", "wasm32-wasip2"])
                .arg("-Zbuild-std=std,panic_abort")
                .env("PATH", std::env::join_paths(paths)?)
                .env("RUSTC", DEBIAN_RUSTC)
                .env("RUSTC_BOOTSTRAP", "1")
                .env(
                    "RUSTFLAGS",
                    format!("-L {DEBIAN_WASI_LIBC} -C link-self-contained=no"),
                )
                .env_remove("RUSTUP_TOOLCHAIN");
            command
        }
    };
    command
        .current_dir(&spec.source)
        .env("CARGO_TARGET_DIR", &target_dir);
    if std::io::stderr().is_terminal() {
        command.args(["--color", "always"]);
    }
    run_tool("cargo build", &mut command)?;
    let artifact = target_dir.join(format!("wasm32-wasip2/release/{crate_name}.wasm"));
    std::fs::copy(&artifact, output).with_context(|| format!("copying {}", artifact.display()))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Python

fn build_python(spec: &BuildSpec, output: &Path) -> Result<()> {
    if !spec.source.join("app.py").is_file() {
        bail!(
            "no app.py in {}: a Python function's module is app.py, with a class \
             IncomingHandler(exports.IncomingHandler) — `eddy new NAME --lang python` writes one",
            spec.source.display()
        );
    }
    if !runs("componentize-py", "--version") {
        bail!(
            "componentize-py is not installed: it builds Python functions — install it with \
             `pip install componentize-py=={COMPONENTIZE_PY_VERSION}` (or `pipx install`) so \
             that `componentize-py` is on PATH"
        );
    }
    // The project's own WIT when it has one (`eddy new` writes it, for editors and bindings);
    // otherwise eddy's.
    let own = spec.source.join("wit");
    let scratch;
    let (wit_dir, version) = if own.is_dir() {
        let version = wasi_http_version(&own).ok_or_else(|| {
            anyhow!(
                "{} has no wasi:http 0.2 package — remove it to build with eddy's WIT, or \
                 restore deps/http.wit",
                own.display()
            )
        })?;
        (own, version)
    } else {
        scratch = tempfile::tempdir()?;
        wit::write(scratch.path(), None)?;
        (scratch.path().to_path_buf(), wit::WASI_VERSION.to_owned())
    };
    run_tool(
        "componentize-py",
        Command::new("componentize-py")
            .arg("-d")
            .arg(&wit_dir)
            .args([
                "-w",
                &wit::proxy_world(&version),
                "componentize",
                "app",
                "-p",
            ])
            .arg(&spec.source)
            .arg("-o")
            .arg(std::path::absolute(output)?),
    )
}

/// The `wasi:http` 0.2 release a WIT directory declares.
fn wasi_http_version(dir: &Path) -> Option<String> {
    for file in ["deps/http.wit", "deps/http/types.wit", "http.wit"] {
        if let Ok(text) = std::fs::read_to_string(dir.join(file))
            && let Some(at) = text.find("package wasi:http@")
        {
            let rest = &text[at + "package wasi:http@".len()..];
            let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
            return Some(rest[..end].to_owned());
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// JavaScript

/// Where componentize-js's engine is, inside a project's node_modules.
const COMPONENTIZE_JS_ENGINE: &str =
    "node_modules/@bytecodealliance/componentize-js/lib/starlingmonkey_embedding.wasm";
/// The bin componentize-js installs.
const COMPONENTIZE_JS_BIN: &str = "node_modules/.bin/componentize-js";
/// Scratch WIT for componentize-js, relative to the project (its CLI wants relative paths).
const JS_WIT_DIR: &str = "node_modules/.eddy-wit";

fn build_js(spec: &BuildSpec, output: &Path) -> Result<()> {
    let src = &spec.source;
    if !src.join("app.js").is_file() {
        bail!(
            "no app.js in {}: a JavaScript function's module is app.js, exporting \
             incomingHandler — `eddy new NAME --lang js` writes one",
            src.display()
        );
    }
    if !runs("node", "--version") || !runs("npm", "--version") {
        bail!(
            "Node.js and npm are not installed: they build JavaScript functions — install them \
             (Debian/Ubuntu: `sudo apt-get install nodejs npm`; elsewhere https://nodejs.org)"
        );
    }
    if !src.join("package.json").is_file() {
        bail!(
            "no package.json in {}: it pins the componentize-js that builds the function — add \
             one with devDependencies {{\"@bytecodealliance/componentize-js\": \
             \"{COMPONENTIZE_JS_VERSION}\"}} (`eddy new NAME --lang js` writes it)",
            src.display()
        );
    }
    if !src.join(COMPONENTIZE_JS_BIN).exists() {
        let install = if src.join("package-lock.json").is_file() {
            "ci"
        } else {
            "install"
        };
        eprintln!("eddy build: installing the project's npm packages (npm {install})");
        run_tool(
            &format!("npm {install}"),
            Command::new("npm")
                .args([install, "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(src),
        )?;
        if !src.join(COMPONENTIZE_JS_BIN).exists() {
            bail!(
                "package.json does not install componentize-js — add \
                 \"@bytecodealliance/componentize-js\": \"{COMPONENTIZE_JS_VERSION}\" to its \
                 devDependencies"
            );
        }
    }
    // The engine is built against one wasi 0.2.x release and fails to componentize against
    // another: ask it which, and give it eddy's WIT set to that release.
    let engine = std::fs::read(src.join(COMPONENTIZE_JS_ENGINE))
        .with_context(|| format!("reading componentize-js's engine {COMPONENTIZE_JS_ENGINE}"))?;
    let version = engine_wasi_version(&engine).ok_or_else(|| {
        anyhow!("cannot tell which wasi:http release {COMPONENTIZE_JS_ENGINE} was built for")
    })?;
    let wit_dir = src.join(JS_WIT_DIR);
    let _ = std::fs::remove_dir_all(&wit_dir);
    wit::write(&wit_dir, Some(&version))?;
    run_tool(
        "componentize-js",
        Command::new(src.join(COMPONENTIZE_JS_BIN))
            .args([
                "app.js",
                "--wit",
                JS_WIT_DIR,
                "--world-name",
                wit::FUNCTION_WORLD,
            ])
            .arg("-o")
            .arg(std::path::absolute(output)?)
            .current_dir(src),
    )
}

/// The `x` of the first `wasi:http/types@0.2.x` named in a componentize-js engine.
fn engine_wasi_version(engine: &[u8]) -> Option<String> {
    let needle = b"wasi:http/types@0.2.";
    let at = engine.windows(needle.len()).position(|w| w == needle)?;
    let rest = &engine[at + needle.len()..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    (digits > 0).then(|| format!("0.2.{}", String::from_utf8_lossy(&rest[..digits])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_version_is_read_from_its_imports() {
        let engine = b"\0asm...wasi:http/types@0.2.10#incoming-request...".to_vec();
        assert_eq!(engine_wasi_version(&engine).as_deref(), Some("0.2.10"));
        assert_eq!(engine_wasi_version(b"\0asm nothing"), None);
    }

    #[test]
    fn wit_version_is_read_from_the_http_package() {
        let dir = tempfile::tempdir().unwrap();
        wit::write(dir.path(), None).unwrap();
        assert_eq!(
            wasi_http_version(dir.path()).as_deref(),
            Some(wit::WASI_VERSION)
        );
        assert_eq!(wasi_http_version(Path::new("/nonexistent")), None);
    }

    #[test]
    fn sources_are_what_the_component_is_built_from() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(src.join("build")).unwrap();
        let sources = Sources::new(&src, &src.join("build/f.wasm")).unwrap();
        assert!(sources.contains(&src.join("app.py")));
        assert!(sources.contains(&src.join("lib/util.py")));
        assert!(!sources.contains(&src.join("build/f.wasm")));
        assert!(!sources.contains(&src.join("build/f.wasm.partial")));
        assert!(!sources.contains(&src.join("__pycache__/app.pyc")));
        assert!(!sources.contains(&src.join("node_modules/x/index.js")));
        assert!(!sources.contains(&src.join("target/release/x")));
        assert!(!sources.contains(&src.join("eddy.toml")));
        assert!(!sources.contains(Path::new("/elsewhere/app.py")));
    }

    #[test]
    fn a_build_is_stale_when_a_source_is_newer() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path();
        std::fs::write(src.join("app.py"), "x").unwrap();
        let output = src.join("build/f.wasm");
        assert!(!up_to_date(src, &output).unwrap(), "no component yet");
        std::fs::create_dir_all(src.join("build")).unwrap();
        std::fs::write(&output, "wasm").unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&output)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert!(up_to_date(src, &output).unwrap());
        // Caches and dependencies are not sources.
        std::fs::create_dir_all(src.join("__pycache__")).unwrap();
        std::fs::write(src.join("__pycache__/app.pyc"), "x").unwrap();
        let newer = later + std::time::Duration::from_secs(5);
        let touch = |path: &Path| {
            std::fs::File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(newer)
                .unwrap()
        };
        touch(&src.join("__pycache__/app.pyc"));
        assert!(up_to_date(src, &output).unwrap());
        touch(&src.join("app.py"));
        assert!(!up_to_date(src, &output).unwrap());
    }
}
