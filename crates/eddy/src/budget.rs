//! `eddy budget`: monthly budgets of the node or of a function, with alerts and an optional
//! hard cap.

use std::io::Write;

use anyhow::Result;
use serde_json::{Value, json};

use crate::client::Client;
use crate::cost::usd;
use crate::table;

#[derive(clap::Args, Debug)]
pub struct BudgetArgs {
    #[command(subcommand)]
    command: Option<BudgetCommand>,
}

#[derive(clap::Subcommand, Debug)]
enum BudgetCommand {
    /// List budgets with this month's spending (the default)
    Ls {
        /// Print the node's JSON
        #[arg(long)]
        json: bool,
    },
    /// Set the node's budget, or a function's with --function
    Set(SetArgs),
    /// Remove the node's budget, or a function's with --function
    Rm {
        #[arg(long, value_name = "NAME")]
        function: Option<String>,
    },
}

#[derive(clap::Args, Debug)]
struct SetArgs {
    /// A function's budget instead of the node's
    #[arg(long, value_name = "NAME")]
    function: Option<String>,
    /// The limit per calendar month (UTC), in US dollars
    #[arg(long, value_name = "USD")]
    monthly_usd: f64,
    /// The price sheet spending is counted on (see `eddy sheets`)
    #[arg(long, value_name = "NAME")]
    sheet: String,
    /// Alert when spending crosses these percents of the limit
    #[arg(
        long,
        value_name = "PERCENTS",
        value_delimiter = ',',
        default_value = "50,80,100"
    )]
    alert_at: Vec<f64>,
    /// Also POST each alert as JSON to this URL (its host must be in the node's
    /// budget_webhook_hosts)
    #[arg(long, value_name = "URL")]
    webhook: Option<String>,
    /// Enforce the limit: pause cron and queue deliveries at --pause-background-at, refuse
    /// requests with 503 at 100%
    #[arg(long)]
    hard_cap: bool,
    /// With --hard-cap, the percent at which background triggers pause
    #[arg(long, value_name = "PERCENT", default_value_t = 90.0)]
    pause_background_at: f64,
}

fn path(function: Option<&str>) -> Vec<&str> {
    match function {
        Some(name) => vec!["v1", "budgets", "functions", name],
        None => vec!["v1", "budgets", "node"],
    }
}

pub async fn run(client: &Client, args: BudgetArgs) -> Result<()> {
    let mut out = std::io::stdout();
    match args.command.unwrap_or(BudgetCommand::Ls { json: false }) {
        BudgetCommand::Ls { json } => {
            let listing: Value = client.get(&["v1", "budgets"], &[]).await?;
            if json {
                writeln!(out, "{listing}")?;
                return Ok(());
            }
            let empty = Vec::new();
            let rows: Vec<Vec<String>> = listing["budgets"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .map(|b| {
                    let f = |k: &str| b[k].as_f64().unwrap_or(0.0);
                    vec![
                        b["scope"].as_str().unwrap_or("?").to_string(),
                        b["sheet"].as_str().unwrap_or("?").to_string(),
                        usd(f("monthly_usd")),
                        format!("{} ({:.0}%)", usd(f("spent_usd")), f("percent")),
                        if b["hard_cap"] == true { "yes" } else { "no" }.to_string(),
                        b["problem"]
                            .as_str()
                            .unwrap_or(b["state"].as_str().unwrap_or("?"))
                            .to_string(),
                    ]
                })
                .collect();
            write!(
                out,
                "{}",
                table::render(
                    &["BUDGET", "SHEET", "MONTHLY", "SPENT", "HARD CAP", "STATE"],
                    &rows
                )
            )?;
        }
        BudgetCommand::Set(set) => {
            let mut body = json!({
                "monthly_usd": set.monthly_usd,
                "sheet": set.sheet,
                "alert_percents": set.alert_at,
                "hard_cap": set.hard_cap,
                "pause_background_percent": set.pause_background_at,
            });
            if let Some(url) = &set.webhook {
                body["webhook"] = json!(url);
            }
            let status: Value = client.put(&path(set.function.as_deref()), &body).await?;
            writeln!(
                out,
                "budget {} set: {} a month on `{}`; spent {} ({:.0}%) so far this month",
                status["scope"].as_str().unwrap_or("?"),
                usd(set.monthly_usd),
                set.sheet,
                usd(status["spent_usd"].as_f64().unwrap_or(0.0)),
                status["percent"].as_f64().unwrap_or(0.0),
            )?;
        }
        BudgetCommand::Rm { function } => {
            client.delete::<()>(&path(function.as_deref())).await?;
            writeln!(out, "budget removed")?;
        }
    }
    Ok(())
}
