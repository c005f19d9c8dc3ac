//! `eddy cost`: metered traffic priced under each price sheet, the machine's price shared
//! out by CPU time, what waiting costs, break-even traffic and month-end forecasts; and
//! `--chart FILE.svg` to draw it.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::client::Client;
use crate::{chart, table, units};

#[derive(clap::Args, Debug)]
pub struct CostArgs {
    /// One function instead of the whole node
    #[arg(long, value_name = "NAME")]
    function: Option<String>,
    /// Window to report: 1h, 7d, 30d [default: since the start of the month, UTC]
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration_ms)]
    since: Option<u64>,
    /// Price sheets to report on (repeat for more) [default: all; see `eddy sheets`]
    #[arg(long = "sheet", value_name = "NAME")]
    sheets: Vec<String>,
    /// Print the node's JSON instead of tables
    #[arg(long)]
    json: bool,
    /// Also draw cost over time per sheet and the break-even curve to this SVG file
    #[arg(long, value_name = "FILE.svg")]
    chart: Option<PathBuf>,
}

pub async fn run(client: &Client, args: CostArgs) -> Result<()> {
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(function) = &args.function {
        query.push(("function", function.clone()));
    }
    if let Some(ms) = args.since {
        query.push(("since_ms", ms.to_string()));
    }
    if !args.sheets.is_empty() {
        query.push(("sheet", args.sheets.join(",")));
    }
    let report: Value = client.get(&["v1", "cost"], &query).await?;
    if let Some(path) = &args.chart {
        let svg = chart::render(&report).map_err(|e| anyhow::anyhow!("{e}"))?;
        std::fs::write(path, svg)
            .with_context(|| format!("cannot write the chart to {}", path.display()))?;
    }
    let mut out = std::io::stdout();
    if args.json {
        writeln!(out, "{report}")?;
    } else {
        write!(out, "{}", render(&report))?;
        if let Some(path) = &args.chart {
            writeln!(out, "\nchart written to {}", path.display())?;
        }
    }
    Ok(())
}

/// Dollars: cents for a dollar amount, three significant digits below a cent.
pub fn usd(value: f64) -> String {
    if value == 0.0 {
        "$0".to_string()
    } else if value.abs() >= 0.01 {
        format!("${value:.2}")
    } else {
        let digits = (2 - value.abs().log10().floor() as i32).clamp(0, 12) as usize;
        format!("${value:.digits$}")
    }
}

/// A count in words people read: 1.2k, 3.4M.
fn count(value: f64) -> String {
    match value {
        v if v >= 1e9 => format!("{:.1}G", v / 1e9),
        v if v >= 1e6 => format!("{:.1}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

fn seconds(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        format!("{ms:.1} ms")
    }
}

fn render(r: &Value) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let mut out = String::new();
    let whose = match r["function"].as_str() {
        Some(name) => format!("function `{name}`"),
        None => "all functions".to_string(),
    };
    let u = &r["usage"];
    let wall = f(&u["wall_ms"]);
    let waiting = f(&u["waiting_ms"]);
    out.push_str(&format!(
        "cost of {whose} from {} to {} (forecasts: month {})\n",
        eddy_parse::units::rfc3339_ms(r["from_ms"].as_i64().unwrap_or(0)),
        eddy_parse::units::rfc3339_ms(r["to_ms"].as_i64().unwrap_or(0)),
        r["month"].as_str().unwrap_or("?"),
    ));
    out.push_str(&format!(
        "usage: {} invocations, wall {}, CPU {}, waiting {}{}\n\n",
        u["invocations"].as_u64().unwrap_or(0),
        seconds(wall),
        seconds(f(&u["cpu_ms"])),
        seconds(waiting),
        if wall > 0.0 {
            format!(" ({:.0}% of wall)", waiting / wall * 100.0)
        } else {
            String::new()
        },
    ));
    let empty = Vec::new();
    let sheets = r["sheets"].as_array().unwrap_or(&empty);
    let rows: Vec<Vec<String>> = sheets
        .iter()
        .map(|s| {
            let opt = |key: &str| s[key].as_f64().map_or("-".to_string(), usd);
            let fc = &s["forecast"];
            vec![
                s["sheet"].as_str().unwrap_or("?").to_string(),
                s["invocations"].as_u64().unwrap_or(0).to_string(),
                usd(f(&s["cost_usd"])),
                opt("wall_billing_usd"),
                opt("cpu_billing_usd"),
                opt("waiting_usd"),
                format!(
                    "{} ({}–{})",
                    usd(f(&fc["projected_usd"])),
                    usd(f(&fc["low_usd"])),
                    usd(f(&fc["high_usd"]))
                ),
            ]
        })
        .collect();
    out.push_str(&table::render(
        &[
            "SHEET",
            "INVOCATIONS",
            "COST",
            "BILLED ON WALL",
            "BILLED ON CPU",
            "WAITING COSTS",
            "MONTH-END FORECAST",
        ],
        &rows,
    ));
    for machine in sheets.iter().filter(|s| s["kind"] == "machine") {
        let rows: Vec<Vec<String>> = machine["functions"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .map(|fc| {
                vec![
                    fc["function"].as_str().unwrap_or("?").to_string(),
                    seconds(f(&fc["cpu_ms"])),
                    format!("{:.1}%", f(&fc["cpu_share"]) * 100.0),
                    usd(f(&fc["cost_usd"])),
                ]
            })
            .collect();
        out.push_str(&format!(
            "\n`{}` at ${}/h for {:.1} h, shared out by CPU time:\n",
            machine["sheet"].as_str().unwrap_or("?"),
            f(&machine["usd_per_hour"]),
            f(&machine["hours"]),
        ));
        out.push_str(&table::render(&["FUNCTION", "CPU", "SHARE", "COST"], &rows));
    }
    let even = r["break_even"].as_array().unwrap_or(&empty);
    if !even.is_empty() {
        out.push_str("\nbreak-even: the traffic above which the machine is cheaper\n");
        let rows: Vec<Vec<String>> = even
            .iter()
            .map(|b| {
                let at = b["invocations_per_month"].as_f64();
                vec![
                    b["sheet"].as_str().unwrap_or("?").to_string(),
                    b["machine_sheet"].as_str().unwrap_or("?").to_string(),
                    b["usd_per_invocation"]
                        .as_f64()
                        .map_or("-".to_string(), |c| usd(c * 1e6)),
                    at.map_or("never (no traffic)".to_string(), |n| {
                        format!(
                            "{}/month ({:.1}/s)",
                            count(n),
                            f(&b["invocations_per_second"])
                        )
                    }),
                    format!("{}/month", count(f(&b["observed_invocations_per_month"]))),
                    b["machine_invocations_per_month_max"]
                        .as_f64()
                        .map_or("-".to_string(), |n| format!("{}/month", count(n))),
                    if b["machine_is_cheaper"].as_bool() == Some(true) {
                        "machine".to_string()
                    } else {
                        b["sheet"].as_str().unwrap_or("?").to_string()
                    },
                ]
            })
            .collect();
        out.push_str(&table::render(
            &[
                "SHEET",
                "MACHINE",
                "PER 1M INVOCATIONS",
                "MACHINE CHEAPER ABOVE",
                "OBSERVED",
                "ONE MACHINE RUNS",
                "CHEAPER NOW",
            ],
            &rows,
        ));
    }
    out.push_str(&by_node(r));
    out
}

/// A cluster's report: each node's share, under each sheet (nothing on a single node).
fn by_node(r: &Value) -> String {
    let nodes = r["nodes"].as_array().map(Vec::as_slice).unwrap_or_default();
    if nodes.len() < 2 {
        return String::new();
    }
    let sheets: Vec<&str> = nodes[0]["sheets"]
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["sheet"].as_str()).collect())
        .unwrap_or_default();
    let mut header = vec!["NODE", "INVOCATIONS"];
    header.extend(sheets.iter().copied());
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let mut row = vec![
                n["node"].as_str().unwrap_or("?").to_string(),
                n["invocations"].as_u64().unwrap_or(0).to_string(),
            ];
            row.extend(
                n["sheets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| usd(s["cost_usd"].as_f64().unwrap_or(0.0))),
            );
            row
        })
        .collect();
    format!("\nby node\n{}", table::render(&header, &rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_keep_three_significant_digits_below_a_cent() {
        assert_eq!(usd(0.0), "$0");
        assert_eq!(usd(12.345), "$12.35");
        assert_eq!(usd(0.000_412_3), "$0.000412");
        assert_eq!(usd(0.005), "$0.00500");
    }
}
