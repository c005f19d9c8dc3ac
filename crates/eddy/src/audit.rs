//! `eddy audit`: the changes made through the control API — who, when, from where, what,
//! and how it ended.

use anyhow::Result;

use crate::api::{AuditEntry, AuditPage};
use crate::client::Client;
use crate::table;

#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// Only changes of this last while, e.g. `1h`, `7d`
    #[arg(long, value_parser = eddy_parse::units::parse_duration_ms)]
    since: Option<u64>,
    /// Print the node's JSON answer instead of a table
    #[arg(long)]
    json: bool,
}

/// Entries asked for per call; `eddy audit` pages until it has them all.
const AUDIT_PAGE: usize = 1000;

pub async fn run(client: &Client, args: AuditArgs) -> Result<()> {
    let mut entries: Vec<serde_json::Value> = Vec::new();
    let mut after = 0i64;
    loop {
        let mut query = vec![
            ("after", after.to_string()),
            ("limit", AUDIT_PAGE.to_string()),
        ];
        if let Some(since) = args.since {
            query.push(("since_ms", since.to_string()));
        }
        let page: serde_json::Value = client.get(&["v1", "audit"], &query).await?;
        let got = page["entries"].as_array().cloned().unwrap_or_default();
        let done = got.len() < AUDIT_PAGE;
        entries.extend(got);
        after = page["last_id"].as_i64().unwrap_or(after);
        if done {
            break;
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    let page = AuditPage {
        entries: serde_json::from_value(serde_json::Value::Array(entries))?,
        last_id: after,
    };
    print!("{}", render(&page.entries));
    Ok(())
}

fn render(entries: &[AuditEntry]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.at.clone(),
                e.token.clone(),
                e.source.clone(),
                e.request.clone(),
                e.status.to_string(),
                e.outcome.clone(),
            ]
        })
        .collect();
    table::render(
        &["AT", "TOKEN", "SOURCE", "REQUEST", "STATUS", "OUTCOME"],
        &rows,
    )
}
