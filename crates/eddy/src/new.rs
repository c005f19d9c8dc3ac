//! `eddy new NAME --lang rust|python|js`: a ready function project — its source, an
//! `eddy.toml`, and what its toolchain needs (a guest `Cargo.toml`; the WIT for
//! componentize-py; a `package.json` pinning componentize-js).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::build::{COMPONENTIZE_JS_VERSION, Lang};
use crate::wit;

#[derive(clap::Args, Debug)]
pub struct NewArgs {
    /// The function's name: 1–63 characters of a-z, 0-9 and -, starting with a letter. It
    /// names the directory, the function and its route (/NAME)
    name: String,
    /// The language to write it in
    #[arg(long, value_enum)]
    lang: Lang,
    /// Directory to create [default: ./NAME]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// A template file: its path in the project and its text, with `{{name}}` to fill in.
type Template = (&'static str, &'static str);

const RUST: &[Template] = &[
    ("Cargo.toml", include_str!("../templates/rust/Cargo.toml")),
    ("src/lib.rs", include_str!("../templates/rust/src/lib.rs")),
    ("eddy.toml", include_str!("../templates/rust/eddy.toml")),
    (".gitignore", include_str!("../templates/rust/gitignore")),
];

const PYTHON: &[Template] = &[
    ("app.py", include_str!("../templates/python/app.py")),
    ("eddy.toml", include_str!("../templates/python/eddy.toml")),
    (".gitignore", include_str!("../templates/python/gitignore")),
];

const JS: &[Template] = &[
    ("app.js", include_str!("../templates/js/app.js")),
    ("package.json", include_str!("../templates/js/package.json")),
    ("eddy.toml", include_str!("../templates/js/eddy.toml")),
    (".gitignore", include_str!("../templates/js/gitignore")),
];

pub fn run(args: NewArgs) -> Result<()> {
    eddy_parse::routes::validate_name(&args.name)
        .map_err(|problem| anyhow::anyhow!("{problem} — it names the project and the function"))?;
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    create(&dir, &args.name, args.lang)?;
    println!(
        "created the {} function {} in {}",
        args.lang,
        args.name,
        dir.display()
    );
    println!();
    println!("  cd {}", dir.display());
    println!("  eddy build      # make build/{}.wasm", args.name);
    println!("  eddy deploy     # build if a source changed, then deploy to the node");
    println!();
    println!("It serves /{} once deployed.", args.name);
    Ok(())
}

/// Writes the project for function `name` in `lang` into `dir`, which must not exist or be
/// empty.
pub fn create(dir: &Path, name: &str, lang: Lang) -> Result<()> {
    if let Ok(mut entries) = std::fs::read_dir(dir) {
        if entries.next().is_some() {
            bail!(
                "{} already exists and is not empty — choose another NAME, or --dir for an \
                 empty or new directory",
                dir.display()
            );
        }
    } else if dir.exists() {
        bail!(
            "{} exists and is not a directory — pass --dir DIR",
            dir.display()
        );
    }
    let templates = match lang {
        Lang::Rust => RUST,
        Lang::Python => PYTHON,
        Lang::Js => JS,
    };
    for (path, text) in templates {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let text = text
            .replace("{{name}}", name)
            .replace("{{componentize_js}}", COMPONENTIZE_JS_VERSION);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if lang == Lang::Python {
        // componentize-py builds against it; editors and `componentize-py bindings` read it.
        wit::write(&dir.join("wit"), None)
            .with_context(|| format!("writing the WIT into {}", dir.join("wit").display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest;

    #[test]
    fn every_template_is_a_deployable_manifest_with_nothing_left_to_fill() {
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            let dir = tempfile::tempdir().unwrap();
            let project = dir.path().join("fn");
            create(&project, "my-fn", lang).unwrap();
            let requests = manifest::load(&project.join("eddy.toml"))
                .unwrap()
                .functions;
            assert_eq!(requests.len(), 1);
            assert_eq!(requests[0].name, "my-fn");
            assert_eq!(requests[0].component, project.join("build/my-fn.wasm"));
            assert_eq!(requests[0].build.as_ref().unwrap().lang, lang);
            assert_eq!(requests[0].config.route.as_deref(), Some("/my-fn"));
            for entry in walk(&project) {
                let text = std::fs::read_to_string(&entry).unwrap();
                assert!(
                    !text.contains("{{"),
                    "{} has a placeholder left",
                    entry.display()
                );
            }
        }
    }

    #[test]
    fn an_existing_project_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.py"), "mine").unwrap();
        let err = create(dir.path(), "f", Lang::Python)
            .unwrap_err()
            .to_string();
        assert!(err.contains("already exists and is not empty"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("app.py")).unwrap(),
            "mine"
        );
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else {
                files.push(path);
            }
        }
        files
    }
}
