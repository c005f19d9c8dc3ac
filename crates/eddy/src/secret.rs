//! `eddy secret`: values functions take as environment variables, sealed by the node under
//! the operator's key — set (from stdin or a file, never an argument), list (never a
//! value), remove, re-key.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::api::{Rekeyed, SecretInfo, SecretList, SecretSet};
use crate::client::Client;
use crate::table;

#[derive(clap::Args, Debug)]
pub struct SecretArgs {
    #[command(subcommand)]
    command: SecretCommand,
}

#[derive(clap::Subcommand, Debug)]
enum SecretCommand {
    /// Set a new version of a secret; the value comes from stdin or --from-file. One
    /// trailing newline is dropped. Functions bound to it get it at their next deploy
    Set {
        /// The secret's name (A-Z, a-z, 0-9, `_`, `-`)
        name: String,
        /// Read the value from this file instead of stdin
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
    },
    /// List secrets: names, versions, dates and the functions bound to them (never a value)
    Ls {
        /// Print the node's JSON answer instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Remove a secret with every version; refused while a live function binds it
    Rm {
        /// The secret's name
        name: String,
    },
    /// Seal every secret again under the node's current key (after a key rotation)
    Rekey,
}

/// Largest value read (the node's `limits.secret_bytes_max` decides; this only bounds memory).
const VALUE_BYTES_READ_MAX: u64 = 16 * 1024 * 1024;

pub async fn run(client: &Client, args: SecretArgs) -> Result<()> {
    match args.command {
        SecretCommand::Set { name, from_file } => {
            let mut value = Vec::new();
            match &from_file {
                Some(path) => {
                    std::fs::File::open(path)
                        .with_context(|| format!("cannot open {}", path.display()))?
                        .take(VALUE_BYTES_READ_MAX)
                        .read_to_end(&mut value)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                }
                None => {
                    std::io::stdin()
                        .take(VALUE_BYTES_READ_MAX)
                        .read_to_end(&mut value)
                        .context("cannot read the value from stdin")?;
                }
            }
            if value.ends_with(b"\n") {
                value.pop();
                if value.ends_with(b"\r") {
                    value.pop();
                }
            }
            if value.is_empty() {
                bail!(
                    "the value is empty — pipe it in (`printf %s \"$VALUE\" | eddy secret set {name}`) or pass --from-file"
                );
            }
            let set: SecretSet = client
                .put_bytes(
                    &["v1", "secrets", &name],
                    value,
                    &[("content-type", "application/octet-stream")],
                )
                .await?;
            println!(
                "secret `{}` is at version {}; functions bound to it take it at their next deploy",
                set.name, set.version
            );
            Ok(())
        }
        SecretCommand::Ls { json } => {
            client
                .print_listing(&["v1", "secrets"], &[], json, |list: SecretList| {
                    render(&list.secrets)
                })
                .await
        }
        SecretCommand::Rm { name } => {
            let _: serde_json::Value = client.delete(&["v1", "secrets", &name]).await?;
            println!("removed secret `{name}`");
            Ok(())
        }
        SecretCommand::Rekey => {
            let done: Rekeyed = client
                .post(&["v1", "secrets", "rekey"], &serde_json::json!({}))
                .await?;
            println!(
                "sealed {} secret versions again under the node's key ({} were already)",
                done.resealed, done.current
            );
            Ok(())
        }
    }
}

fn render(secrets: &[SecretInfo]) -> String {
    let rows: Vec<Vec<String>> = secrets
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.version.to_string(),
                s.versions.to_string(),
                s.created_at.clone(),
                s.updated_at.clone(),
                if s.used_by.is_empty() {
                    "-".to_owned()
                } else {
                    s.used_by.join(", ")
                },
            ]
        })
        .collect();
    table::render(
        &[
            "NAME", "VERSION", "VERSIONS", "CREATED", "UPDATED", "USED BY",
        ],
        &rows,
    )
}
