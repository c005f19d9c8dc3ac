//! `eddy sheets`: the price sheets `eddy cost` and budgets price with; add your own.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::client::Client;
use crate::table;

#[derive(clap::Args, Debug)]
pub struct SheetsArgs {
    #[command(subcommand)]
    command: Option<SheetsCommand>,
}

#[derive(clap::Subcommand, Debug)]
enum SheetsCommand {
    /// List the sheets (the default)
    Ls {
        /// Print the node's JSON
        #[arg(long)]
        json: bool,
    },
    /// Add or replace a sheet from a TOML file (a built-in's name replaces the built-in)
    Add {
        /// The sheet, e.g. my-vm.toml (format: docs/cost.md)
        file: PathBuf,
    },
    /// Remove a sheet you added
    Rm { name: String },
}

pub async fn run(client: &Client, args: SheetsArgs) -> Result<()> {
    let mut out = std::io::stdout();
    match args.command.unwrap_or(SheetsCommand::Ls { json: false }) {
        SheetsCommand::Ls { json } => {
            let listing: Value = client.get(&["v1", "price-sheets"], &[]).await?;
            if json {
                writeln!(out, "{listing}")?;
                return Ok(());
            }
            let empty = Vec::new();
            let rows: Vec<Vec<String>> = listing["sheets"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .map(|s| {
                    vec![
                        s["name"].as_str().unwrap_or("?").to_string(),
                        s["kind"].as_str().unwrap_or("?").to_string(),
                        if s["built_in"] == true {
                            "built-in"
                        } else {
                            "yours"
                        }
                        .to_string(),
                        s["as_of"].as_str().unwrap_or("?").to_string(),
                        s["title"].as_str().unwrap_or("?").to_string(),
                    ]
                })
                .collect();
            write!(
                out,
                "{}",
                table::render(&["NAME", "KIND", "FROM", "AS OF", "TITLE"], &rows)
            )?;
        }
        SheetsCommand::Add { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read price sheet {}", file.display()))?;
            let parsed: toml::Table = toml::from_str(&text).with_context(|| {
                format!(
                    "{} is not TOML — see docs/cost.md for the format",
                    file.display()
                )
            })?;
            let name = parsed
                .get("name")
                .and_then(|v| v.as_str())
                .with_context(|| format!("{} has no `name = \"...\"`", file.display()))?
                .to_string();
            let sheet: Value = client
                .put_bytes(
                    &["v1", "price-sheets", &name],
                    text.into_bytes(),
                    &[("content-type", "application/toml")],
                )
                .await?;
            writeln!(
                out,
                "sheet `{}` saved: {}",
                name,
                sheet["title"].as_str().unwrap_or("")
            )?;
        }
        SheetsCommand::Rm { name } => {
            client.delete::<()>(&["v1", "price-sheets", &name]).await?;
            writeln!(out, "sheet `{name}` removed")?;
        }
    }
    Ok(())
}
