//! SVG cost chart for the JSON that `GET /v1/cost` returns.
//!
//! Two stacked panels: cost per time bucket for every price sheet, and
//! monthly cost against traffic with the break-even points.
//!
//! `plotters` (SVG backend only, without its `ttf`/`ab_glyph` features) lays
//! out the title, captions, axes and tick labels. Without a font backend it
//! sizes text with a built-in estimate, so no font files, fontconfig or
//! freetype are needed. Its SVG backend cannot put attributes on what it
//! draws, so this module writes the data itself (lines, steps, markers,
//! legends) as an overlay. Plotters maps the data to pixels
//! (`backend_coord`), and every overlay element has a `class` and a
//! `data-sheet` attribute that tests and scripts can select. The document is an
//! outer `<svg>` holding a `<title>`, the plotters drawing as a nested `<svg>`,
//! and then the overlay. Nothing depends on clocks or hashing, so the same
//! report always renders to the same bytes.

use std::fmt::Write as _;
use std::ops::Range;

use chrono::DateTime;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Deserialize;
use serde_json::Value;

/// Size of the whole document, in pixels.
const WIDTH: u32 = 900;
const HEIGHT: u32 = 760;
/// Width kept at the right of each panel for its legend.
const LEGEND_WIDTH: i32 = 190;
/// Space around each panel's chart, and the areas for the tick labels.
const PANEL_MARGIN: i32 = 12;
const X_LABEL_AREA: i32 = 44;
const Y_LABEL_AREA: i32 = 80;
/// Font sizes: document title, subtitle, panel captions, small labels.
const TITLE_SIZE: i32 = 22;
const SUBTITLE_SIZE: i32 = 14;
const CAPTION_SIZE: i32 = 16;
const LABEL_SIZE: i32 = 11;
/// Legend layout: first row offset, row height, sample line length, and the
/// longest name shown in full.
const LEGEND_TOP: i32 = 48;
const LEGEND_ROW: i32 = 18;
const LEGEND_SAMPLE: i32 = 22;
const LEGEND_MAX_CHARS: usize = 22;
const MARKER_RADIUS: i32 = 5;
const DASH: &str = "6 4";
/// Most labelled time ticks, and faint grid lines between two ticks.
const MAX_TIME_TICKS: i64 = 6;
const LIGHT_LINES: usize = 4;
/// If a machine line has more steps than this, it is drawn as their envelope
/// (at that point each step is finer than a pixel).
const MAX_STEPS: f64 = 400.0;
/// Colours of the price sheets (cycled) and of the machine sheets.
const PALETTE: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#17becf", "#e377c2", "#bcbd22",
];
const MACHINE_PALETTE: [&str; 3] = ["#333333", "#8c564b", "#7f7f7f"];
const OBSERVED_COLOUR: &str = "#555555";
const NO_TRAFFIC: &str = "no metered traffic in this window";
const NO_BREAK_EVEN: &str = "no break-even data";
/// Largest bucket accepted (about 31 years).
const MAX_BUCKET_MS: f64 = 1e12;
const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
/// Candidate distances between time ticks, in seconds, smallest first.
const TIME_STEPS_S: [i64; 19] = [
    1, 5, 15, 30, 60, 300, 900, 1800, 3600, 10_800, 21_600, 43_200, 86_400, 172_800, 604_800,
    1_209_600, 2_592_000, 7_776_000, 31_536_000,
];

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type PixelBox = (Range<i32>, Range<i32>);

/// The fields of the cost report that the chart reads (numbers may be floats).
#[derive(Deserialize)]
struct Report {
    function: Option<String>,
    from_ms: Option<f64>,
    to_ms: Option<f64>,
    series: Series,
    break_even: Option<Vec<BreakEven>>,
}

#[derive(Deserialize)]
struct Series {
    bucket_ms: f64,
    sheets: Vec<Sheet>,
}

/// One price sheet's cost per bucket, as `[bucket start ms, USD]` pairs.
#[derive(Deserialize)]
struct Sheet {
    sheet: String,
    points: Vec<(f64, f64)>,
}

#[derive(Deserialize)]
struct BreakEven {
    sheet: String,
    machine_sheet: String,
    usd_per_invocation: Option<f64>,
    machine_usd_per_month: f64,
    machine_invocations_per_month_max: Option<f64>,
    invocations_per_month: Option<f64>,
    observed_invocations_per_month: Option<f64>,
}

/// Renders the cost report (the JSON `GET /v1/cost` returns) as an SVG document.
pub fn render(report: &Value) -> Result<String, String> {
    let report = Report::deserialize(report).map_err(|e| format!("cost report: {e}"))?;
    if !(1.0..=MAX_BUCKET_MS).contains(&report.series.bucket_ms) {
        return Err("cost report: `series.bucket_ms` must be positive, at most 1e12".into());
    }
    let title = match &report.function {
        Some(f) => format!("eddy cost — function {f}"),
        None => "eddy cost — all functions".to_string(),
    };
    let mut subtitle = format!("bucket {}", duration(report.series.bucket_ms as i64));
    if let (Some(from), Some(to)) = (report.from_ms, report.to_ms) {
        subtitle = format!("{} – {} UTC · {subtitle}", utc(from)?, utc(to)?);
    }
    let mut plot = String::new();
    let mut overlay = Overlay::new(&report);
    {
        let root = SVGBackend::with_string(&mut plot, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let body = root.titled(&title, ("sans-serif", TITLE_SIZE));
        let body = body.and_then(|b| b.titled(&subtitle, ("sans-serif", SUBTITLE_SIZE)));
        let body = body.map_err(draw_err)?;
        let (top, bottom) = body.split_vertically(body.dim_in_pixel().1 as i32 / 2);
        time_panel(&top, &report, &mut overlay)?;
        break_even_panel(&bottom, &report, &mut overlay)?;
        root.present().map_err(draw_err)?;
    }
    Ok(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\">\n<title>{}</title>\n{plot}<g class=\"data\">\n{}</g>\n\
         </svg>\n",
        escape(&title),
        overlay.svg
    ))
}

fn draw_err(e: impl std::fmt::Display) -> String {
    format!("drawing the cost chart failed: {e}")
}

/// Splits a panel into its chart area and the top-left corner of its legend.
fn split<'a>(area: &Area<'a>) -> (Area<'a>, (i32, i32)) {
    let (plot, legend) = area.split_horizontally(area.dim_in_pixel().0 as i32 - LEGEND_WIDTH);
    let (xs, ys) = legend.get_pixel_range();
    (plot, (xs.start, ys.start + LEGEND_TOP))
}

/// Top panel: USD per bucket over time, one line per sheet.
fn time_panel(area: &Area, report: &Report, out: &mut Overlay) -> Result<(), String> {
    let (plot, legend_at) = split(area);
    let sheets = &report.series.sheets;
    let (x0, x1) = time_range(report)?;
    let (ticks, step) = time_ticks(x0, x1);
    let max = max_of(sheets.iter().flat_map(|s| &s.points).map(|p| p.1));
    let bucket = duration(report.series.bucket_ms as i64);
    let caption = format!("Cost over time (USD per {bucket})");
    let mut chart = ChartBuilder::on(&plot)
        .caption(caption, ("sans-serif", CAPTION_SIZE))
        .margin(PANEL_MARGIN)
        .x_label_area_size(X_LABEL_AREA)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d((x0..x1).with_key_points(ticks), 0.0..headroom(max)?)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .max_light_lines(LIGHT_LINES)
        .x_labels(MAX_TIME_TICKS as usize + 2)
        .x_label_formatter(&|t: &i64| time_tick(*t, step))
        .y_label_formatter(&|v: &f64| usd(*v))
        .x_desc("time (UTC)")
        .y_desc("USD per bucket")
        .draw()
        .map_err(draw_err)?;
    if sheets.iter().all(|s| s.points.is_empty()) {
        out.note(&chart.plotting_area().get_pixel_range(), NO_TRAFFIC);
    }
    for s in sheets {
        let to_px = |&(t, usd): &(f64, f64)| chart.backend_coord(&(t as i64, usd));
        let pts: Vec<_> = s.points.iter().map(to_px).collect();
        out.line("series", &s.sheet, out.colour(&s.sheet), &pts);
        out.legend(&s.sheet, out.colour(&s.sheet), false);
    }
    out.flush_legend(legend_at);
    Ok(())
}

/// Bottom panel: USD per month against invocations per month, with a line per
/// per-invocation sheet, a step line per machine sheet, the break-even points
/// and the observed traffic.
fn break_even_panel(area: &Area, report: &Report, out: &mut Overlay) -> Result<(), String> {
    let (plot, legend_at) = split(area);
    let entries = report.break_even.as_deref().unwrap_or_default();
    let x_max = break_even_x_max(entries);
    headroom(x_max)?;
    let mut machines: Vec<&BreakEven> = Vec::new();
    for b in entries {
        if !machines.iter().any(|m| m.machine_sheet == b.machine_sheet) {
            machines.push(b);
        }
    }
    let lines: Vec<(&BreakEven, f64)> = entries
        .iter()
        .filter_map(|b| Some((b, b.usd_per_invocation?)))
        .collect();
    let line_tops = lines.iter().map(|(_, u)| u * x_max);
    let machine_top = |m: &&BreakEven| machine_cost(m, x_max);
    let y_max = max_of(line_tops.chain(machines.iter().map(machine_top)));
    let caption = "Monthly cost vs traffic — break-even";
    let mut chart = ChartBuilder::on(&plot)
        .caption(caption, ("sans-serif", CAPTION_SIZE))
        .margin(PANEL_MARGIN)
        .x_label_area_size(X_LABEL_AREA)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(0.0..x_max, 0.0..headroom(y_max)?)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .max_light_lines(LIGHT_LINES)
        .x_label_formatter(&|v: &f64| count(*v))
        .y_label_formatter(&|v: &f64| usd(*v))
        .x_desc("invocations per month")
        .y_desc("USD per month")
        .draw()
        .map_err(draw_err)?;
    let plot_box = chart.plotting_area().get_pixel_range();
    if entries.is_empty() {
        out.note(&plot_box, NO_BREAK_EVEN);
    }
    for (b, u) in &lines {
        let pts = [(0.0, 0.0), (x_max, u * x_max)].map(|p| chart.backend_coord(&p));
        out.line("break-even", &b.sheet, out.colour(&b.sheet), &pts);
        out.legend(&b.sheet, out.colour(&b.sheet), false);
    }
    for (i, m) in machines.iter().enumerate() {
        let c = MACHINE_PALETTE[i % MACHINE_PALETTE.len()];
        let steps = machine_steps(m, x_max);
        let pts: Vec<_> = steps.iter().map(|p| chart.backend_coord(p)).collect();
        out.line("machine", &m.machine_sheet, c, &pts);
        out.legend(&format!("{} (machine)", m.machine_sheet), c, false);
    }
    // Every point sits on a machine's price line, so neighbours' labels alternate above and
    // below it rather than overlap.
    for (i, (b, _)) in lines.iter().enumerate() {
        if let Some(x) = b.invocations_per_month.filter(|x| *x >= 0.0) {
            let at = chart.backend_coord(&(x, b.machine_usd_per_month));
            out.marker(&b.sheet, at, &format!("{}/mo", count(x)), i % 2 == 1);
        }
    }
    let observed = entries
        .iter()
        .filter_map(|b| b.observed_invocations_per_month);
    let mut observed: Vec<f64> = observed.collect();
    observed.sort_by(f64::total_cmp);
    observed.dedup();
    for x in &observed {
        let (px, py) = chart.backend_coord(&(*x, 0.0));
        let top = plot_box.1.start;
        let pts = [(px, py), (px, top)];
        out.line("observed", "observed", OBSERVED_COLOUR, &pts);
        out.text((px + 4, top + 12), "start", "observed");
    }
    if !observed.is_empty() {
        out.legend("observed", OBSERVED_COLOUR, true);
    }
    out.flush_legend(legend_at);
    Ok(())
}

/// The x extent of the break-even panel, with room past every break-even
/// point and the observed traffic.
fn break_even_x_max(entries: &[BreakEven]) -> f64 {
    let be = max_of(entries.iter().filter_map(|b| b.invocations_per_month));
    let seen = entries
        .iter()
        .filter_map(|b| b.observed_invocations_per_month);
    (2.0 * be).max(1.5 * max_of(seen)).max(1.0)
}

/// Monthly cost of enough machines for `x` invocations (at least one).
fn machine_cost(b: &BreakEven, x: f64) -> f64 {
    let machines = capacity(b).map_or(1.0, |c| (x / c).ceil().max(1.0));
    machines * b.machine_usd_per_month
}

fn capacity(b: &BreakEven) -> Option<f64> {
    b.machine_invocations_per_month_max.filter(|c| *c > 0.0)
}

/// The machine cost from 0 to `x_max` as line points: a step up every
/// `capacity` invocations, flat when the capacity is unknown.
fn machine_steps(b: &BreakEven, x_max: f64) -> Vec<(f64, f64)> {
    let usd = b.machine_usd_per_month;
    let end = (x_max, machine_cost(b, x_max));
    let Some(cap) = capacity(b).filter(|c| x_max / c <= MAX_STEPS) else {
        return vec![(0.0, usd), end];
    };
    let mut pts = vec![(0.0, usd)];
    for k in 1..(x_max / cap).ceil() as usize {
        let (x, y) = (k as f64 * cap, k as f64 * usd);
        pts.extend([(x, y), (x, y + usd)]);
    }
    pts.push(end);
    pts
}

fn max_of(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(0.0, f64::max)
}

/// Time extent: the report window, widened to cover every point.
/// Fails on times that chrono cannot represent (about ±262,000 years), which
/// also keeps the tick arithmetic far from `i64` overflow.
fn time_range(report: &Report) -> Result<(i64, i64), String> {
    let sheets = &report.series.sheets;
    let times = || sheets.iter().flat_map(|s| &s.points).map(|p| p.0 as i64);
    let from = report.from_ms.map(|t| t as i64);
    let to = report.to_ms.map(|t| t as i64);
    let lo = from.into_iter().chain(times()).min().unwrap_or(0);
    let hi = to.into_iter().chain(times()).max().unwrap_or(lo);
    utc(lo as f64)?;
    utc(hi as f64)?;
    Ok((lo, hi.max(lo + report.series.bucket_ms as i64)))
}

/// Ticks at round UTC times between `lo` and `hi`, and the distance between them.
fn time_ticks(lo: i64, hi: i64) -> (Vec<i64>, i64) {
    let fits = |s: &i64| (hi - lo) / s <= MAX_TIME_TICKS;
    let step = TIME_STEPS_S.iter().map(|s| s * SECOND).find(fits);
    let step = step.unwrap_or(((hi - lo) / MAX_TIME_TICKS).max(1));
    let first = lo.div_euclid(step) * step;
    let ticks = (0..=MAX_TIME_TICKS + 1).map(|i| first + i * step);
    (ticks.filter(|t| (lo..=hi).contains(t)).collect(), step)
}

fn time_tick(ms: i64, step: i64) -> String {
    let format = match step {
        s if s >= DAY => "%Y-%m-%d",
        s if s >= MINUTE => "%m-%d %H:%M",
        _ => "%H:%M:%S",
    };
    let time = DateTime::from_timestamp_millis(ms);
    time.map_or("?".into(), |d| d.format(format).to_string())
}

fn utc(ms: f64) -> Result<String, String> {
    let time = DateTime::from_timestamp_millis(ms as i64);
    let time = time.ok_or_else(|| format!("cost report: timestamp {ms} is out of range"))?;
    Ok(time.format("%Y-%m-%d %H:%M").to_string())
}

/// A bucket size in words: "1 h", "15 min", "250 ms".
fn duration(ms: i64) -> String {
    let units = [(DAY, "day"), (HOUR, "h"), (MINUTE, "min"), (SECOND, "s")];
    match units.iter().find(|(u, _)| ms % u == 0) {
        Some((u, name)) => format!("{} {name}", ms / u),
        None => format!("{ms} ms"),
    }
}

/// The top of an axis that starts at 0: 10% above the largest value.
/// Fails when it is not finite: plotters would loop forever placing ticks.
fn headroom(max: f64) -> Result<f64, String> {
    match max * 1.1 {
        top if !top.is_finite() => Err("cost report: values are too large to chart".into()),
        top if top > 0.0 => Ok(top),
        _ => Ok(1.0),
    }
}

/// About three significant digits; scientific notation for tiny or huge values.
fn significant(v: f64) -> String {
    let trim = |s: &str| s.trim_end_matches('0').trim_end_matches('.').to_string();
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e6).contains(&a) {
        let s = format!("{v:.2e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        format!("{}e{exp}", trim(mantissa))
    } else {
        let decimals = (2 - a.log10().floor() as i32).max(0) as usize;
        let s = format!("{v:.decimals$}");
        if decimals > 0 { trim(&s) } else { s }
    }
}

fn usd(v: f64) -> String {
    format!("${}", significant(v))
}

/// A count with k/M/B suffixes: "1.5M".
fn count(v: f64) -> String {
    let scales = [(1e9, "B"), (1e6, "M"), (1e3, "k")];
    match scales.iter().find(|(s, _)| v.abs() >= *s) {
        Some((s, suffix)) => format!("{}{suffix}", significant(v / s)),
        None => significant(v),
    }
}

/// Escapes text for XML character data and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The SVG written over the plotters picture, the sheet names in colour
/// order, and the legend rows of the panel being drawn. Writing to a
/// `String` cannot fail, so `write!` results are ignored.
struct Overlay {
    svg: String,
    names: Vec<String>,
    legend: Vec<(String, &'static str, bool)>,
}

impl Overlay {
    /// Colours go to time-series sheets first, then to break-even-only ones.
    fn new(report: &Report) -> Self {
        let series = report.series.sheets.iter().map(|s| &s.sheet);
        let break_even = report.break_even.iter().flatten().map(|b| &b.sheet);
        let mut names: Vec<String> = Vec::new();
        for name in series.chain(break_even) {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        let (svg, legend) = (String::new(), Vec::new());
        Overlay { svg, names, legend }
    }

    fn colour(&self, sheet: &str) -> &'static str {
        let i = self.names.iter().position(|n| n == sheet);
        PALETTE[i.unwrap_or(0) % PALETTE.len()]
    }

    /// A data line; the observed-traffic line is dashed.
    fn line(&mut self, class: &str, sheet: &str, colour: &str, pts: &[(i32, i32)]) {
        let points: Vec<String> = pts.iter().map(|(x, y)| format!("{x},{y}")).collect();
        let dash = if class == "observed" { DASH } else { "none" };
        let _ = writeln!(
            self.svg,
            "<polyline class=\"{class}\" data-sheet=\"{}\" fill=\"none\" stroke=\"{colour}\" \
             stroke-width=\"2\" stroke-dasharray=\"{dash}\" points=\"{}\"/>",
            escape(sheet),
            points.join(" ")
        );
    }

    /// A break-even point with a small label beside it, above or `below` it.
    fn marker(&mut self, sheet: &str, (x, y): (i32, i32), label: &str, below: bool) {
        let _ = writeln!(
            self.svg,
            "<circle class=\"break-even-point\" data-sheet=\"{}\" cx=\"{x}\" cy=\"{y}\" \
             r=\"{MARKER_RADIUS}\" fill=\"{}\" stroke=\"#000000\"/>",
            escape(sheet),
            self.colour(sheet)
        );
        let label_y = if below { y + 7 + LABEL_SIZE } else { y - 7 };
        self.text((x + 7, label_y), "start", label);
    }

    fn text(&mut self, (x, y): (i32, i32), anchor: &str, s: &str) {
        let _ = writeln!(
            self.svg,
            "<text x=\"{x}\" y=\"{y}\" text-anchor=\"{anchor}\" font-family=\"sans-serif\" \
             font-size=\"{LABEL_SIZE}\" fill=\"#000000\">{}</text>",
            escape(s)
        );
    }

    /// A note centred in a chart's plotting box.
    fn note(&mut self, (xs, ys): &PixelBox, s: &str) {
        let centre = ((xs.start + xs.end) / 2, (ys.start + ys.end) / 2);
        self.text(centre, "middle", s);
    }

    fn legend(&mut self, name: &str, colour: &'static str, dashed: bool) {
        self.legend.push((name.to_string(), colour, dashed));
    }

    /// Draws the collected legend rows from `(x, y)` down, and clears them.
    fn flush_legend(&mut self, (x, y): (i32, i32)) {
        for (i, (name, colour, dashed)) in std::mem::take(&mut self.legend).iter().enumerate() {
            let (y, dash) = (
                y + i as i32 * LEGEND_ROW,
                if *dashed { DASH } else { "none" },
            );
            let _ = writeln!(
                self.svg,
                "<line class=\"legend\" x1=\"{x}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" \
                 stroke=\"{colour}\" stroke-width=\"3\" stroke-dasharray=\"{dash}\"/>",
                x + LEGEND_SAMPLE
            );
            let mut shown: String = name.chars().take(LEGEND_MAX_CHARS).collect();
            if shown.len() < name.len() {
                shown.pop();
                shown.push('…');
            }
            self.text((x + LEGEND_SAMPLE + 6, y + 4), "start", &shown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roxmltree::Document;
    use serde_json::json;

    const T0: i64 = 1_714_521_600_000; // 2024-05-01 00:00 UTC

    fn sample() -> Value {
        let pts = |c: f64| json!([[T0, c], [T0 + HOUR, c * 2.0], [T0 + 2 * HOUR, 0.000012]]);
        let be = |sheet: &str, usd: Value, cap: Value, at: Value| {
            json!({"sheet": sheet, "machine_sheet": "dedicated", "usd_per_invocation": usd,
                   "machine_usd_per_month": 30.0, "machine_invocations_per_month_max": cap,
                   "invocations_per_month": at, "observed_invocations_per_month": 1.0e5})
        };
        json!({
            "function": "hello", "from_ms": T0, "to_ms": T0 + 3 * HOUR,
            "series": {"bucket_ms": HOUR, "sheets": [
                {"sheet": "aws-lambda-x86", "points": pts(0.000002)},
                {"sheet": "cloudflare", "points": pts(0.000001)}]},
            "break_even": [be("aws-lambda-x86", json!(2.0e-7), json!(1.0e8), json!(1.5e8)),
                           be("cloudflare", Value::Null, Value::Null, Value::Null)],
        })
    }

    /// The `data-sheet` of every element with class `class`.
    fn sheets<'a>(doc: &'a Document, class: &str) -> Vec<&'a str> {
        let nodes = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some(class));
        nodes.filter_map(|n| n.attribute("data-sheet")).collect()
    }

    /// The trimmed text of every element.
    fn texts<'a>(doc: &'a Document) -> Vec<&'a str> {
        let texts = doc.descendants().filter_map(|n| n.text());
        texts.map(str::trim).collect()
    }

    fn title<'a>(doc: &'a Document) -> Option<&'a str> {
        let title = doc.descendants().find(|n| n.has_tag_name("title"));
        title.and_then(|n| n.text())
    }

    #[test]
    fn renders_every_series() {
        let svg = render(&sample()).expect("renders");
        let doc = Document::parse(&svg).expect("well-formed XML");
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        assert_eq!(title(&doc), Some("eddy cost — function hello"));
        assert_eq!(sheets(&doc, "series"), ["aws-lambda-x86", "cloudflare"]);
        for line in doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("series"))
        {
            assert_eq!(
                line.attribute("points").map(|p| p.split(' ').count()),
                Some(3)
            );
        }
        assert_eq!(sheets(&doc, "break-even"), ["aws-lambda-x86"]);
        assert_eq!(sheets(&doc, "machine"), ["dedicated"]);
        assert_eq!(sheets(&doc, "break-even-point"), ["aws-lambda-x86"]);
        assert_eq!(sheets(&doc, "observed"), ["observed"]);
        let texts = texts(&doc);
        assert!(texts.contains(&"2024-05-01 00:00 – 2024-05-01 03:00 UTC · bucket 1 h"));
        assert!(
            texts.contains(&"$1.2e-5"),
            "tiny costs get readable ticks: {texts:?}"
        );
        assert!(texts.contains(&"150M/mo"), "break-even label");
    }

    #[test]
    fn escapes_xml_special_characters() {
        let mut report = sample();
        report["function"] = json!("f<\"&'>");
        report["series"]["sheets"][0]["sheet"] = json!("a<b&c");
        report["break_even"][1]["machine_sheet"] = json!("m\"x'");
        let svg = render(&report).expect("renders");
        let doc = Document::parse(&svg).expect("well-formed XML");
        assert_eq!(sheets(&doc, "series"), ["a<b&c", "cloudflare"]);
        assert_eq!(sheets(&doc, "machine"), ["dedicated", "m\"x'"]);
        assert!(svg.contains("data-sheet=\"a&lt;b&amp;c\""));
        assert_eq!(title(&doc), Some("eddy cost — function f<\"&'>"));
    }

    #[test]
    fn empty_report_renders_a_note() {
        let no_sheets = json!({"function": null, "series": {"bucket_ms": 60000, "sheets": []}});
        let no_points = json!({"series": {"bucket_ms": 6e4, "sheets": [{"sheet": "x", "points": []}]},
                               "break_even": []});
        for report in [no_sheets, no_points] {
            let svg = render(&report).expect("renders");
            let doc = Document::parse(&svg).expect("well-formed XML");
            let texts = texts(&doc);
            assert_eq!(title(&doc), Some("eddy cost — all functions"));
            assert!(texts.contains(&NO_TRAFFIC) && texts.contains(&NO_BREAK_EVEN));
            assert!(sheets(&doc, "series").len() <= 1);
        }
    }

    #[test]
    fn missing_required_fields_are_errors() {
        let err = |v: Value| render(&v).expect_err("must fail");
        assert!(err(json!({})).contains("missing field `series`"));
        assert!(err(json!({"series": {"sheets": []}})).contains("missing field `bucket_ms`"));
        assert!(err(json!({"series": {"bucket_ms": 0, "sheets": []}})).contains("positive"));
        let bad = json!({"series": {"bucket_ms": 1, "sheets": [{"sheet": "x", "points": [[1]]}]}});
        assert!(err(bad).starts_with("cost report: invalid length 1"));
        let mut report = sample();
        report["break_even"][0]["machine_usd_per_month"] = Value::Null;
        assert!(err(report).starts_with("cost report: invalid type: null"));
    }

    #[test]
    fn absurd_values_are_errors_not_hangs() {
        let err = |v: Value| render(&v).expect_err("must fail");
        let huge = json!({"series": {"bucket_ms": 1, "sheets": [{"sheet": "x", "points": [[0, 1.7e308]]}]}});
        assert_eq!(err(huge), "cost report: values are too large to chart");
        let far = json!({"series": {"bucket_ms": 1, "sheets": [{"sheet": "x", "points": [[9.2e18, 1]]}]}});
        assert!(err(far).contains("out of range"));
        assert!(err(json!({"series": {"bucket_ms": 1e30, "sheets": []}})).contains("at most"));
    }

    #[test]
    fn output_is_deterministic() {
        assert_eq!(render(&sample()), render(&sample()));
    }

    #[test]
    fn machine_steps_follow_capacity() {
        let machine = |cap: Value| {
            let v = json!({"sheet": "s", "machine_sheet": "m", "machine_usd_per_month": 10.0,
                           "machine_invocations_per_month_max": cap});
            BreakEven::deserialize(&v).expect("valid entry")
        };
        let steps = machine_steps(&machine(json!(100.0)), 250.0);
        let risers = [(100.0, 10.0), (100.0, 20.0), (200.0, 20.0), (200.0, 30.0)];
        assert_eq!(
            steps,
            [&[(0.0, 10.0)], &risers[..], &[(250.0, 30.0)]].concat()
        );
        assert_eq!(
            machine_steps(&machine(Value::Null), 250.0),
            [(0.0, 10.0), (250.0, 10.0)]
        );
        let fine = machine_steps(&machine(json!(1.0)), 1e9);
        assert_eq!(fine, [(0.0, 10.0), (1e9, 1e10)], "steps finer than a pixel");
    }

    #[test]
    fn formats_numbers_and_times() {
        let usds = [0.000012, 0.5, 0.0123, 0.0, 10.0, 1234.0].map(usd);
        assert_eq!(usds, ["$1.2e-5", "$0.5", "$0.0123", "$0", "$10", "$1234"]);
        assert_eq!(
            [count(1.5e8), count(2500.0), count(12.0)],
            ["150M", "2.5k", "12"]
        );
        assert_eq!(
            [HOUR, 15 * MINUTE, 1500].map(duration),
            ["1 h", "15 min", "1500 ms"]
        );
        let (ticks, step) = time_ticks(T0 + 1, T0 + 3 * HOUR);
        assert_eq!((ticks.len(), step), (6, 30 * MINUTE));
        assert_eq!(time_tick(ticks[0], step), "05-01 00:30");
    }
}
