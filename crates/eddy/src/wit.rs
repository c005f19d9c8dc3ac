//! The WIT that function templates and `eddy build` use: the WASI 0.2 interfaces eddy's host
//! implements. `crates/eddy/wit/` is a copy of the `wit/deps` of the `wasmtime-wasi-http`
//! crate eddy links (a test checks the two are the same), so a template never asks for an
//! interface the node lacks, and nothing is downloaded at run time.

use std::io;
use std::path::Path;

/// The WASI 0.2 release of the vendored WIT.
pub const WASI_VERSION: &str = "0.2.12";

/// The world `write` puts in world.wit: wasi:http/proxy plus wasi:cli/environment, which
/// componentize-js needs in the world for `import { getEnvironment } from
/// "wasi:cli/environment@0.2.x"` (StarlingMonkey has no `process.env`).
pub const FUNCTION_WORLD: &str = "eddy:function/function";

/// The world every function targets.
pub fn proxy_world(wasi_version: &str) -> String {
    format!("wasi:http/proxy@{wasi_version}")
}

/// The vendored packages, by file name.
pub const PACKAGES: &[(&str, &str)] = &[
    ("cli.wit", include_str!("../wit/cli.wit")),
    ("clocks.wit", include_str!("../wit/clocks.wit")),
    ("filesystem.wit", include_str!("../wit/filesystem.wit")),
    ("http.wit", include_str!("../wit/http.wit")),
    ("io.wit", include_str!("../wit/io.wit")),
    ("random.wit", include_str!("../wit/random.wit")),
    ("sockets.wit", include_str!("../wit/sockets.wit")),
];

/// Writes a WIT directory for a function: the packages under `deps/` and a `world.wit` whose
/// world includes `wasi:http/proxy`. With `wasi_version`, every `0.2.x` package, use and
/// `@since` newer than it is set to that release: a toolchain built against an older 0.2
/// release (componentize-js) then resolves the host's newer, semver-compatible interfaces.
pub fn write(dir: &Path, wasi_version: Option<&str>) -> io::Result<()> {
    let version = wasi_version.unwrap_or(WASI_VERSION);
    let deps = dir.join("deps");
    std::fs::create_dir_all(&deps)?;
    for (file, text) in PACKAGES {
        let text = match wasi_version {
            Some(version) => retarget(text, version),
            None => (*text).to_owned(),
        };
        std::fs::write(deps.join(file), text)?;
    }
    std::fs::write(
        dir.join("world.wit"),
        format!(
            "// The world of an eddy function: a wasi:http/proxy component that may also read\n\
             // its environment (the deploy's env). The packages under deps/ are the WASI\n\
             // {version} interfaces eddy serves.\n\
             package eddy:function;\n\n\
             world function {{\n  include {};\n  import wasi:cli/environment@{version};\n}}\n",
            proxy_world(version)
        ),
    )
}

/// `text` with `@0.2.N` set to `@VERSION`, and `version = 0.2.N` (in `@since`) set to
/// VERSION where N is newer.
fn retarget(text: &str, version: &str) -> String {
    let patch: u32 = version
        .rsplit('.')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let at = rest.find("@0.2.");
        let since = rest.find("version = 0.2.");
        let (start, prefix_len, is_since) = match (at, since) {
            (Some(a), Some(s)) if s < a => (s, "version = 0.2.".len(), true),
            (Some(a), _) => (a, "@0.2.".len(), false),
            (None, Some(s)) => (s, "version = 0.2.".len(), true),
            (None, None) => break,
        };
        out.push_str(&rest[..start]);
        let after = &rest[start + prefix_len..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let n: Option<u32> = after[..digits].parse().ok();
        match (n, is_since) {
            (Some(n), true) if n <= patch => {
                out.push_str(&rest[start..start + prefix_len + digits])
            }
            (Some(_), true) => {
                out.push_str("version = ");
                out.push_str(version);
            }
            (Some(_), false) => {
                out.push('@');
                out.push_str(version);
            }
            (None, _) => out.push_str(&rest[start..start + prefix_len]),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendored_wit_is_the_version_it_says() {
        let http = PACKAGES.iter().find(|(f, _)| *f == "http.wit").unwrap().1;
        assert!(http.contains(&format!("package wasi:http@{WASI_VERSION};")));
    }

    /// The copy must follow the host: after a Wasmtime upgrade, copy the crate's `wit/deps`
    /// into `crates/eddy/wit/` and set `WASI_VERSION`.
    #[test]
    fn vendored_wit_matches_the_linked_wasmtime_wasi_http() {
        let metadata = std::process::Command::new(env!("CARGO"))
            .args([
                "metadata",
                "--format-version",
                "1",
                "--locked",
                "--manifest-path",
            ])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml"))
            .output()
            .expect("running cargo metadata");
        assert!(metadata.status.success(), "{metadata:?}");
        let metadata: serde_json::Value = serde_json::from_slice(&metadata.stdout).unwrap();
        let crate_dir = metadata["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "wasmtime-wasi-http")
            .map(|p| {
                Path::new(p["manifest_path"].as_str().unwrap())
                    .parent()
                    .unwrap()
                    .to_owned()
            })
            .expect("wasmtime-wasi-http in the dependency graph");
        let deps = crate_dir.join("wit/deps");
        let mut upstream: Vec<String> = std::fs::read_dir(&deps)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        upstream.sort();
        let ours: Vec<&str> = PACKAGES.iter().map(|(f, _)| *f).collect();
        assert_eq!(upstream, ours, "files of {}", deps.display());
        for (file, text) in PACKAGES {
            let theirs = std::fs::read_to_string(deps.join(file)).unwrap();
            assert!(
                theirs == *text,
                "crates/eddy/wit/{file} differs from {}",
                deps.display()
            );
        }
    }

    #[test]
    fn retargeting_sets_packages_and_newer_since_to_the_release() {
        let text = "package wasi:http@0.2.12;\n@since(version = 0.2.0)\nfoo\n\
                    @since(version = 0.2.11)\nuse wasi:io/streams@0.2.12.{x};\nkeep @1.0.0";
        assert_eq!(
            retarget(text, "0.2.10"),
            "package wasi:http@0.2.10;\n@since(version = 0.2.0)\nfoo\n\
             @since(version = 0.2.10)\nuse wasi:io/streams@0.2.10.{x};\nkeep @1.0.0"
        );
    }

    #[test]
    fn written_wit_declares_the_world() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), Some("0.2.10")).unwrap();
        let world = std::fs::read_to_string(dir.path().join("world.wit")).unwrap();
        assert!(world.contains("include wasi:http/proxy@0.2.10;"), "{world}");
        assert!(
            world.contains("import wasi:cli/environment@0.2.10;"),
            "{world}"
        );
        let http = std::fs::read_to_string(dir.path().join("deps/http.wit")).unwrap();
        assert!(http.starts_with("package wasi:http@0.2.10;"));
        assert!(!http.contains("0.2.12"));
    }
}
