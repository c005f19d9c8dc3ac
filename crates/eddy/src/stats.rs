//! `eddy stats`: a function's metered invocations over a recent window.

use std::io::Write;

use anyhow::Result;
use serde_json::Value;

use crate::client::Client;
use crate::units;

#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// Function to report on
    name: String,
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
    let stats: Value = client
        .get(&["v1", "functions", &args.name, "stats"], &query)
        .await?;
    let mut out = std::io::stdout();
    if args.json {
        writeln!(out, "{stats}")?;
        return Ok(());
    }
    write!(out, "{}", render(&stats))?;
    Ok(())
}

fn render(s: &Value) -> String {
    let n = |key: &str| s[key].as_u64().unwrap_or(0);
    let ms = |key: &str| match s[key].as_f64() {
        Some(v) => format!("{v:.2} ms"),
        None => "-".to_owned(),
    };
    let invocations = n("invocations");
    let wall = s["wall_ms_total"].as_f64().unwrap_or(0.0);
    let cpu = s["cpu_ms_total"].as_f64().unwrap_or(0.0);
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
        name = s["function"].as_str().unwrap_or("?"),
        since = s["since"].as_str().unwrap_or("?"),
        errors = n("errors"),
        rejected = n("rejected"),
        cold = n("cold_starts"),
        p50 = ms("latency_ms_p50"),
        p99 = ms("latency_ms_p99"),
        req = units::format_bytes(n("request_bytes")),
        resp = units::format_bytes(n("response_bytes")),
        mem = units::format_bytes(n("memory_bytes_peak")),
        live = n("instances_live"),
        in_flight = n("in_flight"),
        queued = n("queued"),
    )
}
