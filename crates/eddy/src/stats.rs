//! `eddy stats`: a function's metered invocations over a recent window, or a line for
//! every function.

use std::io::Write;

use anyhow::Result;
use serde_json::Value;

use crate::api::{FunctionStats, StatsList};
use crate::client::Client;
use crate::units;

#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// Function to report on; without it, a line for every function the token may read
    name: Option<String>,
    /// Window to report: 10m, 1h, 7d [default: 1h]. Totals are kept per minute, so the
    /// window starts at the beginning of the minute it reaches into
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration_ms)]
    since: Option<u64>,
    /// Print the node's JSON instead of a summary
    #[arg(long)]
    json: bool,
}

pub async fn run(client: &Client, args: StatsArgs) -> Result<()> {
    let query: Vec<(&str, String)> = args
        .since
        .map(|ms| vec![("since_ms", ms.to_string())])
        .unwrap_or_default();
    let mut out = std::io::stdout();
    let Some(name) = &args.name else {
        if args.json {
            let all: Value = client.get(&["v1", "stats"], &query).await?;
            writeln!(out, "{all}")?;
            return Ok(());
        }
        let all: StatsList = client.get(&["v1", "stats"], &query).await?;
        write!(out, "{}", table(&all))?;
        return Ok(());
    };
    let path = ["v1", "functions", name, "stats"];
    if args.json {
        let stats: Value = client.get(&path, &query).await?;
        writeln!(out, "{stats}")?;
        return Ok(());
    }
    let stats: FunctionStats = client.get(&path, &query).await?;
    write!(out, "{}", render(&stats))?;
    Ok(())
}

fn render(s: &FunctionStats) -> String {
    let mut out = summary(s);
    // A cluster: each node's share.
    if s.nodes.len() > 1 {
        out.push_str("by node\n");
        let width = s.nodes.iter().map(|n| n.node.len()).max().unwrap_or(0);
        for n in &s.nodes {
            out.push_str(&format!(
                "  {node:<width$}  {invocations} invocations ({errors} errors, {rejected} rejected), cpu {cpu:.1} ms\n",
                node = n.node,
                invocations = n.invocations,
                errors = n.errors,
                rejected = n.rejected,
                cpu = n.cpu_ms_total,
            ));
        }
    }
    out
}

/// A line for every function: its counts, latency, CPU against wall time and instances.
fn table(all: &StatsList) -> String {
    let Some(first) = all.functions.first() else {
        return "no functions\n".to_owned();
    };
    let width = all
        .functions
        .iter()
        .map(|s| s.function.len())
        .max()
        .unwrap_or(0)
        .max("FUNCTION".len());
    let ms = |value: Option<f64>| value.map_or("-".to_owned(), |v| format!("{v:.2}"));
    let mut out = format!("since {}\n", first.since);
    out.push_str(&format!(
        "{:<width$}  {:>11}  {:>6}  {:>8}  {:>8}  {:>8}  {:>9}\n",
        "FUNCTION", "INVOCATIONS", "ERRORS", "P50 MS", "P99 MS", "CPU/WALL", "INSTANCES"
    ));
    for s in &all.functions {
        let share = if s.wall_ms_total > 0.0 {
            format!("{:.1}%", s.cpu_ms_total / s.wall_ms_total * 100.0)
        } else {
            "-".to_owned()
        };
        out.push_str(&format!(
            "{:<width$}  {:>11}  {:>6}  {:>8}  {:>8}  {:>8}  {:>9}\n",
            s.function,
            s.invocations,
            s.errors,
            ms(s.latency_ms_p50),
            ms(s.latency_ms_p99),
            share,
            s.instances_live
        ));
    }
    out
}

fn summary(s: &FunctionStats) -> String {
    let ms = |value: Option<f64>| match value {
        Some(v) => format!("{v:.2} ms"),
        None => "-".to_owned(),
    };
    let (wall, cpu) = (s.wall_ms_total, s.cpu_ms_total);
    let cpu_share = if wall > 0.0 {
        format!(" ({:.1}% of wall)", cpu / wall * 100.0)
    } else {
        String::new()
    };
    format!(
        "{name} since {since}\n\
         invocations   {invocations} ({errors} errors, {rejected} rejected, {cold} cold starts)\n\
         latency       p50 {p50}, p99 {p99}\n\
         wall time     {wall:.1} ms total\n\
         cpu time      {cpu:.1} ms total{cpu_share}\n\
         bytes         {req} in, {resp} out\n\
         memory peak   {mem}\n\
         instances     {live} live, {in_flight} running, {queued} queued\n",
        name = s.function,
        since = s.since,
        invocations = s.invocations,
        errors = s.errors,
        rejected = s.rejected,
        cold = s.cold_starts,
        p50 = ms(s.latency_ms_p50),
        p99 = ms(s.latency_ms_p99),
        req = units::format_bytes(s.request_bytes),
        resp = units::format_bytes(s.response_bytes),
        mem = units::format_bytes(s.memory_bytes_peak),
        live = s.instances_live,
        in_flight = s.in_flight,
        queued = s.queued,
    )
}
