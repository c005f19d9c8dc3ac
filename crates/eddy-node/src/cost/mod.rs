//! Cost: metered traffic priced under price sheets, the machine's price shared out by CPU
//! time, what waiting would have cost, break-even traffic, month-end forecasts and budgets.
//!
//! The method is `docs/cost.md`'s.

pub mod budget;
pub mod forecast;
pub mod sheets;

use std::collections::BTreeMap;

use chrono::{Datelike, TimeZone, Utc};
use eddy_store::Rollup;
use serde::Serialize;

use crate::metering::MINUTE_MS;
use crate::parts::Parts;
use crate::problem::Problem;
pub use forecast::{DAY_MS, FORECAST_TRAILING_DAYS, Forecast, HOUR_MS, forecast};
pub use sheets::{Cost, PriceSheet, SheetKind};

/// The longest calendar month (31 days).
pub const MONTH_MS_MAX: i64 = 31 * DAY_MS;
/// Hours in an average month (8760 / 12): what "per month" means in break-even figures.
pub const HOURS_PER_MONTH: f64 = 730.0;
/// Points per series in a report at most: the bucket grows (1 min, 5 min, 1 h, 1 day) until
/// the window fits.
const SERIES_POINTS_MAX: i64 = 720;
const BUCKETS_MS: [i64; 4] = [MINUTE_MS, 5 * MINUTE_MS, HOUR_MS, DAY_MS];

/// One function's metered minute.
pub type Minute = (String, i64, Rollup);

/// Every metered minute from `since_ms` on: stored ones and those not yet flushed, read
/// under the meter's flush gate so none is counted twice or missed.
pub async fn minutes_since(parts: &Parts, since_ms: i64) -> Result<Vec<Minute>, Problem> {
    read(parts, since_ms, Totals::PerMinute).await
}

/// The same traffic as `minutes_since`, but the stored part summed per function and memory
/// limit: enough to price a month, without reading every minute of it.
pub async fn totals_since(parts: &Parts, since_ms: i64) -> Result<Vec<Minute>, Problem> {
    read(parts, since_ms, Totals::PerFunction).await
}

/// What `totals_since` reads, per node: each node's stored share of the cost totals, this
/// node's minutes not yet flushed added to its own. A single node's store names its one share
/// `""`: this node's.
pub async fn shares_since(
    parts: &Parts,
    since_ms: i64,
) -> Result<std::collections::BTreeMap<String, Vec<Minute>>, Problem> {
    let from_minute = since_ms - since_ms.rem_euclid(MINUTE_MS);
    let meter = &parts.meter;
    let _gate = meter.flush_gate.read().await;
    let mut by_node: std::collections::BTreeMap<String, Vec<Minute>> = Default::default();
    for (node, function, minute, rollup) in
        parts.stores.invocations.cost_shares(from_minute).await?
    {
        let node = if node.is_empty() {
            parts.node.to_string()
        } else {
            node
        };
        by_node
            .entry(node)
            .or_default()
            .push((function, minute, rollup));
    }
    by_node
        .entry(parts.node.to_string())
        .or_default()
        .extend(meter.pending_since(from_minute));
    Ok(by_node)
}

/// How the stored minutes are read.
enum Totals {
    PerMinute,
    PerFunction,
}

async fn read(parts: &Parts, since_ms: i64, totals: Totals) -> Result<Vec<Minute>, Problem> {
    let from_minute = since_ms - since_ms.rem_euclid(MINUTE_MS);
    let meter = &parts.meter;
    let _gate = meter.flush_gate.read().await;
    let store = &parts.stores.invocations;
    let mut minutes = match totals {
        Totals::PerMinute => store.cost_minutes(from_minute).await?,
        Totals::PerFunction => store.cost_totals(from_minute).await?,
    };
    minutes.extend(meter.pending_since(from_minute));
    Ok(minutes)
}

/// The calendar month (UTC) `now_ms` falls in: start, end and `YYYY-MM`.
pub fn month_of(now_ms: i64) -> (i64, i64, String) {
    let now = Utc
        .timestamp_millis_opt(now_ms)
        .single()
        .unwrap_or_else(Utc::now);
    let start = Utc
        .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .expect("the first of a month exists");
    let (y, m) = if now.month() == 12 {
        (now.year() + 1, 1)
    } else {
        (now.year(), now.month() + 1)
    };
    let end = Utc
        .with_ymd_and_hms(y, m, 1, 0, 0, 0)
        .single()
        .expect("the first of a month exists");
    (
        start.timestamp_millis(),
        end.timestamp_millis(),
        format!("{:04}-{:02}", now.year(), now.month()),
    )
}

/// What the report is asked for.
pub struct ReportQuery<'a> {
    /// One function, or all.
    pub function: Option<&'a str>,
    pub from_ms: i64,
    pub now_ms: i64,
    pub sheets: &'a [PriceSheet],
}

/// Metered usage in the window.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Usage {
    pub invocations: u64,
    pub wall_ms: f64,
    /// Wall time with each invocation rounded up to a whole millisecond.
    pub billed_wall_ms: u64,
    pub cpu_ms: f64,
    /// Wall time not spent on the CPU: waiting on I/O, timers, other services.
    pub waiting_ms: f64,
}

/// One function's part of a sheet's cost.
#[derive(Clone, Debug, Serialize)]
pub struct FunctionCost {
    pub function: String,
    pub invocations: u64,
    pub cpu_ms: f64,
    pub cost_usd: f64,
    /// Of a machine sheet: the function's share of the node's CPU time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_share: Option<f64>,
}

/// The cost under one sheet.
#[derive(Clone, Debug, Serialize)]
pub struct SheetReport {
    pub sheet: String,
    pub title: String,
    pub kind: SheetKind,
    pub source: String,
    pub as_of: String,
    pub invocations: u64,
    pub cost_usd: f64,
    /// Per-invocation sheets: the parts of the cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parts: Option<Cost>,
    /// Per-invocation sheets: the time-priced parts charged on wall time, on CPU time, and
    /// the difference (what waiting costs, or would cost).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wall_billing_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_billing_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usd_per_invocation: Option<f64>,
    /// Machine sheets: the price per hour and the hours in the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usd_per_hour: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hours: Option<f64>,
    pub functions: Vec<FunctionCost>,
    /// This calendar month (UTC), projected to its end.
    pub forecast: Forecast,
}

/// Where a machine beats a per-invocation sheet.
#[derive(Clone, Debug, Serialize)]
pub struct BreakEven {
    pub sheet: String,
    pub machine_sheet: String,
    /// The observed mean cost of one invocation under `sheet`.
    pub usd_per_invocation: Option<f64>,
    pub machine_usd_per_month: f64,
    /// Invocations of the observed mean CPU time one machine can run in a month, all its
    /// CPUs busy (unknown without `vcpus` or without CPU time).
    pub machine_invocations_per_month_max: Option<f64>,
    /// The traffic above which the machine is cheaper.
    pub invocations_per_month: Option<f64>,
    pub invocations_per_second: Option<f64>,
    /// The window's traffic at a monthly rate.
    pub observed_invocations_per_month: f64,
    /// The machine costs less than `sheet` at the observed traffic.
    pub machine_is_cheaper: bool,
}

/// Cost per time bucket.
#[derive(Clone, Debug, Serialize)]
pub struct Series {
    pub bucket_ms: i64,
    pub sheets: Vec<SeriesLine>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SeriesLine {
    pub sheet: String,
    /// `(bucket start ms, USD)`.
    pub points: Vec<(i64, f64)>,
}

/// The answer of `GET /v1/cost`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub function: Option<String>,
    pub from_ms: i64,
    pub to_ms: i64,
    /// The calendar month forecasts are for (`YYYY-MM`, UTC).
    pub month: String,
    pub usage: Usage,
    pub sheets: Vec<SheetReport>,
    pub break_even: Vec<BreakEven>,
    pub series: Series,
}

/// The cost of `minutes` (which must reach back to the start of the month and
/// `FORECAST_TRAILING_DAYS` for the forecasts) under each of the query's sheets.
pub fn report(query: &ReportQuery<'_>, minutes: &[Minute]) -> Report {
    let (month_start, month_end, month) = month_of(query.now_ms);
    let to_ms = query.now_ms;
    let from_minute = query.from_ms - query.from_ms.rem_euclid(MINUTE_MS);
    let window: Vec<&Minute> = minutes.iter().filter(|m| m.1 >= from_minute).collect();

    let mut usage = Usage::default();
    for (_, _, r) in window.iter().filter(|m| query.mine(m)) {
        usage.invocations += r.invocations;
        usage.wall_ms += r.wall_us as f64 / 1e3;
        usage.billed_wall_ms += r.billed_ms;
        usage.cpu_ms += r.cpu_us as f64 / 1e3;
    }
    usage.waiting_ms = (usage.wall_ms - usage.cpu_ms).max(0.0);

    let bucket_ms = BUCKETS_MS
        .into_iter()
        .find(|b| (to_ms - query.from_ms) / b <= SERIES_POINTS_MAX)
        .unwrap_or(DAY_MS);
    let first_bucket = query.from_ms - query.from_ms.rem_euclid(bucket_ms);
    let frame = Frame {
        query,
        window,
        minutes,
        month: (month_start, month_end),
        hours: (to_ms - query.from_ms).max(0) as f64 / HOUR_MS as f64,
        buckets: (0..)
            .map(|i| first_bucket + i * bucket_ms)
            .take_while(|b| *b < to_ms.max(first_bucket + 1))
            .collect(),
        bucket_ms,
    };

    let (sheets, lines): (Vec<SheetReport>, Vec<SeriesLine>) = query
        .sheets
        .iter()
        .map(|sheet| match sheet.kind {
            SheetKind::PerInvocation => frame.per_invocation(sheet),
            SheetKind::Machine => frame.machine(sheet),
        })
        .unzip();
    let break_even = break_even(&sheets, query.sheets, &usage, frame.hours);
    Report {
        function: query.function.map(str::to_string),
        from_ms: query.from_ms,
        to_ms,
        month,
        usage,
        sheets,
        break_even,
        series: Series {
            bucket_ms,
            sheets: lines,
        },
    }
}

impl ReportQuery<'_> {
    /// Whether the minute is of the function asked for (any, without one).
    fn mine(&self, minute: &Minute) -> bool {
        self.function.is_none_or(|f| minute.0 == f)
    }
}

/// What every sheet of one report is priced over.
struct Frame<'a> {
    query: &'a ReportQuery<'a>,
    /// Every function's minutes in the window.
    window: Vec<&'a Minute>,
    /// Every function's minutes, back to the month's start and the forecast's history.
    minutes: &'a [Minute],
    /// The calendar month now is in.
    month: (i64, i64),
    /// Hours in the window.
    hours: f64,
    buckets: Vec<i64>,
    bucket_ms: i64,
}

/// Spent on `sheet` by `function` (or the node) from `from_ms` to `now_ms`: the priced
/// minutes of a per-invocation sheet, or a machine's hours shared out by CPU time. What
/// budgets compare with their limit, and a machine sheet's month to date.
pub fn spent(
    sheet: &PriceSheet,
    minutes: &[Minute],
    function: Option<&str>,
    from_ms: i64,
    now_ms: i64,
) -> f64 {
    match sheet.kind {
        SheetKind::PerInvocation => minutes
            .iter()
            .filter(|m| m.1 >= from_ms && function.is_none_or(|f| m.0 == f))
            .map(|m| sheets::cost(sheet, &m.2).total_usd())
            .sum(),
        SheetKind::Machine => {
            let hours = (now_ms - from_ms).max(0) as f64 / HOUR_MS as f64;
            sheet.usd_per_hour.unwrap_or(0.0) * hours * cpu_share(minutes, function, from_ms)
        }
    }
}

/// The CPU share of `function` among all functions' `minutes` from `from_ms` on (1 for
/// the node as a whole).
pub fn cpu_share(minutes: &[Minute], function: Option<&str>, from_ms: i64) -> f64 {
    let Some(function) = function else {
        return 1.0;
    };
    let mut total = 0u64;
    let mut own = 0u64;
    for (f, minute, r) in minutes {
        if *minute >= from_ms {
            total += r.cpu_us;
            if f == function {
                own += r.cpu_us;
            }
        }
    }
    ratio(own, total)
}

/// `own` of `total` CPU time; 0 when nothing used CPU.
fn ratio(own: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        own as f64 / total as f64
    }
}

/// Built-in price sheets with the user's over them.
pub async fn price_sheets(parts: &Parts) -> Result<Vec<PriceSheet>, Problem> {
    let user = parts.stores.cost.price_sheets().await?;
    Ok(sheets::all(&user).into_iter().map(|(s, _)| s).collect())
}

impl Frame<'_> {
    fn per_invocation(&self, sheet: &PriceSheet) -> (SheetReport, SeriesLine) {
        let query = self.query;
        let (month_start, month_end) = self.month;
        let mut total = Cost::default();
        let mut invocations = 0;
        let mut by_function: BTreeMap<&str, (u64, u64, f64)> = BTreeMap::new();
        let mut points = vec![0.0; self.buckets.len()];
        for m in self.window.iter().copied().filter(|m| query.mine(m)) {
            let cost = sheets::cost(sheet, &m.2);
            total.add(&cost);
            invocations += m.2.invocations;
            let entry = by_function.entry(&m.0).or_default();
            entry.0 += m.2.invocations;
            entry.1 += m.2.cpu_us;
            entry.2 += cost.total_usd();
            if let Some(slot) = self.bucket_index(m.1) {
                points[slot] += cost.total_usd();
            }
        }
        let forecast_from = month_start.min(query.now_ms - FORECAST_TRAILING_DAYS * DAY_MS);
        let mut hourly = BTreeMap::new();
        let mut first_cost_ms: Option<i64> = None;
        for m in self
            .minutes
            .iter()
            .filter(|m| m.1 >= forecast_from && query.mine(m))
        {
            let usd = sheets::cost(sheet, &m.2).total_usd();
            if usd > 0.0 {
                first_cost_ms = Some(first_cost_ms.map_or(m.1, |f| f.min(m.1)));
            }
            *hourly.entry(m.1 - m.1.rem_euclid(HOUR_MS)).or_insert(0.0) += usd;
        }
        let cost_usd = total.total_usd();
        let report = SheetReport {
            invocations,
            cost_usd,
            parts: Some(total),
            wall_billing_usd: Some(total.wall_billing_usd),
            cpu_billing_usd: Some(total.cpu_billing_usd),
            waiting_usd: Some(total.wall_billing_usd - total.cpu_billing_usd),
            usd_per_invocation: (invocations > 0).then(|| cost_usd / invocations as f64),
            functions: by_function
                .into_iter()
                .map(|(function, (invocations, cpu_us, cost_usd))| FunctionCost {
                    function: function.to_string(),
                    invocations,
                    cpu_ms: cpu_us as f64 / 1e3,
                    cost_usd,
                    cpu_share: None,
                })
                .collect(),
            forecast: forecast(&hourly, first_cost_ms, query.now_ms, month_start, month_end),
            ..SheetReport::of(sheet)
        };
        (report, self.line(sheet, points))
    }

    /// A machine's price for the window, shared out by CPU time among all the functions.
    fn machine(&self, sheet: &PriceSheet) -> (SheetReport, SeriesLine) {
        let query = self.query;
        let (month_start, month_end) = self.month;
        let usd_per_hour = sheet.usd_per_hour.unwrap_or(0.0);
        let node_cost = usd_per_hour * self.hours;
        let node_cpu_us: u64 = self.window.iter().map(|m| m.2.cpu_us).sum();
        let mut by_function: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for m in self.window.iter().filter(|m| query.mine(m)) {
            let entry = by_function.entry(&m.0).or_default();
            entry.0 += m.2.invocations;
            entry.1 += m.2.cpu_us;
        }
        let functions: Vec<FunctionCost> = by_function
            .into_iter()
            .map(|(function, (invocations, cpu_us))| {
                let share = ratio(cpu_us, node_cpu_us);
                FunctionCost {
                    function: function.to_string(),
                    invocations,
                    cpu_ms: cpu_us as f64 / 1e3,
                    cost_usd: node_cost * share,
                    cpu_share: Some(share),
                }
            })
            .collect();
        let share = match query.function {
            None => 1.0,
            Some(_) => functions.iter().filter_map(|f| f.cpu_share).sum(),
        };
        let month_share = cpu_share(self.minutes, query.function, month_start);
        let elapsed_h = (query.now_ms - month_start) as f64 / HOUR_MS as f64;
        let projected =
            usd_per_hour * (month_end - month_start) as f64 / HOUR_MS as f64 * month_share;
        let report = SheetReport {
            invocations: functions.iter().map(|f| f.invocations).sum(),
            cost_usd: node_cost * share,
            usd_per_hour: Some(usd_per_hour),
            hours: Some(self.hours),
            functions,
            forecast: Forecast {
                month_to_date_usd: spent(
                    sheet,
                    self.minutes,
                    query.function,
                    month_start,
                    query.now_ms,
                ),
                projected_usd: projected,
                low_usd: projected,
                high_usd: projected,
                history_hours: elapsed_h,
            },
            ..SheetReport::of(sheet)
        };
        let bucket_cost = usd_per_hour * self.bucket_ms as f64 / HOUR_MS as f64 * share;
        let points = vec![bucket_cost; self.buckets.len()];
        (report, self.line(sheet, points))
    }

    fn line(&self, sheet: &PriceSheet, points: Vec<f64>) -> SeriesLine {
        SeriesLine {
            sheet: sheet.name.clone(),
            points: self.buckets.iter().copied().zip(points).collect(),
        }
    }

    fn bucket_index(&self, at_ms: i64) -> Option<usize> {
        let first = *self.buckets.first()?;
        let i = usize::try_from((at_ms - first).div_euclid(self.bucket_ms)).ok()?;
        (i < self.buckets.len()).then_some(i)
    }
}

impl SheetReport {
    /// The sheet's own fields, with nothing priced yet.
    fn of(sheet: &PriceSheet) -> SheetReport {
        SheetReport {
            sheet: sheet.name.clone(),
            title: sheet.title.clone(),
            kind: sheet.kind,
            source: sheet.source.clone(),
            as_of: sheet.as_of.clone(),
            invocations: 0,
            cost_usd: 0.0,
            parts: None,
            wall_billing_usd: None,
            cpu_billing_usd: None,
            waiting_usd: None,
            usd_per_invocation: None,
            usd_per_hour: None,
            hours: None,
            functions: Vec::new(),
            forecast: Forecast::default(),
        }
    }
}

fn break_even(
    reports: &[SheetReport],
    sheets: &[PriceSheet],
    usage: &Usage,
    hours: f64,
) -> Vec<BreakEven> {
    let observed = if hours > 0.0 {
        usage.invocations as f64 / hours * HOURS_PER_MONTH
    } else {
        0.0
    };
    let cpu_s_per_invocation =
        (usage.invocations > 0).then(|| usage.cpu_ms / 1e3 / usage.invocations as f64);
    let mut out = Vec::new();
    for machine in sheets.iter().filter(|s| s.kind == SheetKind::Machine) {
        let machine_usd_per_month = machine.usd_per_hour.unwrap_or(0.0) * HOURS_PER_MONTH;
        let capacity = match (machine.vcpus, cpu_s_per_invocation) {
            (Some(vcpus), Some(cpu)) if cpu > 0.0 => Some(vcpus * 3600.0 * HOURS_PER_MONTH / cpu),
            _ => None,
        };
        for report in reports
            .iter()
            .filter(|r| r.kind == SheetKind::PerInvocation)
        {
            let per = report.usd_per_invocation.filter(|c| *c > 0.0);
            let at = per.map(|c| machine_usd_per_month / c);
            out.push(BreakEven {
                sheet: report.sheet.clone(),
                machine_sheet: machine.name.clone(),
                usd_per_invocation: report.usd_per_invocation,
                machine_usd_per_month,
                machine_invocations_per_month_max: capacity,
                invocations_per_month: at,
                invocations_per_second: at.map(|n| n / (HOURS_PER_MONTH * 3600.0)),
                observed_invocations_per_month: observed,
                machine_is_cheaper: per.is_some_and(|c| {
                    // Past one machine's capacity the traffic needs more of them.
                    let machines = capacity.map_or(1.0, |cap| (observed / cap).ceil().max(1.0));
                    machines * machine_usd_per_month <= observed * c
                }),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_calendar_months_in_utc() {
        // 2026-12-31T23:59:59Z.
        let (start, end, name) = month_of(1_798_761_599_000);
        assert_eq!(name, "2026-12");
        assert_eq!(start, 1_796_083_200_000);
        assert_eq!(end, 1_798_761_600_000);
    }

    #[test]
    fn the_machine_is_shared_by_cpu_time_and_breaks_even_at_its_price() {
        let sheets = sheets::built_in();
        let now = 1_796_083_200_000 + 10 * DAY_MS;
        let minute = |function: &str, cpu_us, invocations| {
            (
                function.to_string(),
                now - HOUR_MS,
                Rollup {
                    invocations,
                    wall_us: invocations * 100_000,
                    billed_ms: invocations * 100,
                    cpu_us,
                    memory_limit_bytes: 128 * 1024 * 1024,
                    ..Rollup::default()
                },
            )
        };
        let minutes = vec![minute("a", 3_000, 10), minute("b", 1_000, 10)];
        let query = ReportQuery {
            function: Some("a"),
            from_ms: now - 2 * HOUR_MS,
            now_ms: now,
            sheets: &sheets,
        };
        let report = report(&query, &minutes);
        let dedicated = report
            .sheets
            .iter()
            .find(|s| s.sheet == "dedicated")
            .unwrap();
        assert!((dedicated.cost_usd - 0.0816 * 2.0 * 0.75).abs() < 1e-12);
        let lambda = report
            .sheets
            .iter()
            .find(|s| s.sheet == "aws-lambda-x86")
            .unwrap();
        assert_eq!(lambda.invocations, 10);
        let per = 0.2 / 1e6 + 0.1 * 0.125 * 0.0000166667;
        assert!((lambda.usd_per_invocation.unwrap() - per).abs() < 1e-15);
        let even = report
            .break_even
            .iter()
            .find(|b| b.sheet == "aws-lambda-x86")
            .unwrap();
        let at = 0.0816 * HOURS_PER_MONTH / per;
        assert!((even.invocations_per_month.unwrap() / at - 1.0).abs() < 1e-9);
        assert!(!even.machine_is_cheaper);
        // 10 invocations in 2 hours.
        assert!((even.observed_invocations_per_month - 5.0 * HOURS_PER_MONTH).abs() < 1e-9);
    }
}
