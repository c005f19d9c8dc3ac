//! Price sheets in use: the built-in ones (`src/cost/sheets/*.toml`, each with its source and
//! date) with the user's over them by name, and what a sheet makes of a minute of metered
//! traffic. Parsing and checking a sheet is `eddy_parse::sheets`.

pub use eddy_parse::sheets::{PriceSheet, SheetKind};
use eddy_store::Rollup;
use serde::Serialize;

/// The sheets compiled into eddy.
const BUILT_IN: [&str; 4] = [
    include_str!("sheets/aws-lambda-x86.toml"),
    include_str!("sheets/aws-lambda-arm64.toml"),
    include_str!("sheets/vercel-fluid.toml"),
    include_str!("sheets/dedicated.toml"),
];

/// What a minute of metered traffic costs under a per-invocation sheet, and what it would
/// cost billed on wall time or on CPU time alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Cost {
    pub requests_usd: f64,
    pub duration_usd: f64,
    pub cpu_usd: f64,
    pub memory_usd: f64,
    /// The sheet's time-priced parts (GB-seconds, CPU hours) all charged on wall time.
    pub wall_billing_usd: f64,
    /// The same parts all charged on CPU time.
    pub cpu_billing_usd: f64,
}

impl Cost {
    /// What the sheet charges.
    pub fn total_usd(&self) -> f64 {
        self.requests_usd + self.duration_usd + self.cpu_usd + self.memory_usd
    }

    pub fn add(&mut self, other: &Cost) {
        self.requests_usd += other.requests_usd;
        self.duration_usd += other.duration_usd;
        self.cpu_usd += other.cpu_usd;
        self.memory_usd += other.memory_usd;
        self.wall_billing_usd += other.wall_billing_usd;
        self.cpu_billing_usd += other.cpu_billing_usd;
    }
}

/// What one minute of a function's traffic costs under the per-invocation `sheet`.
pub fn cost(sheet: &PriceSheet, minute: &Rollup) -> Cost {
    let gb = sheet.memory_gb(minute.memory_limit_bytes);
    let billed_s = minute.billed_ms as f64 / 1e3;
    let wall_s = minute.wall_us as f64 / 1e6;
    let cpu_s = minute.cpu_us as f64 / 1e6;
    // The time-priced parts for `gb_seconds` of GB-second time and `cpu_seconds` of
    // CPU-hour time.
    let timed = |gb_seconds: f64, cpu_seconds: f64| {
        gb_seconds * gb * sheet.gb_second_usd + cpu_seconds / 3600.0 * sheet.cpu_hour_usd
    };
    let memory_usd = wall_s / 3600.0 * gb * sheet.memory_gb_hour_usd;
    let requests_usd = minute.invocations as f64 / 1e6 * sheet.request_usd_per_million;
    Cost {
        requests_usd,
        duration_usd: billed_s * gb * sheet.gb_second_usd,
        cpu_usd: cpu_s / 3600.0 * sheet.cpu_hour_usd,
        memory_usd,
        // GB-seconds keep their 1 ms rounding on wall time; CPU hours are exact.
        wall_billing_usd: requests_usd + memory_usd + timed(billed_s, wall_s),
        cpu_billing_usd: requests_usd + memory_usd + timed(cpu_s, cpu_s),
    }
}

/// The built-in sheets.
pub fn built_in() -> Vec<PriceSheet> {
    BUILT_IN
        .iter()
        .map(|text| PriceSheet::from_toml(text).expect("built-in sheets are valid"))
        .collect()
}

/// Built-in sheets with the user's `(name, toml)` sheets over them, by name. A stored sheet
/// that no longer parses is skipped with a warning rather than hiding every other.
pub fn all(user: &[(String, String)]) -> Vec<(PriceSheet, bool)> {
    let mut sheets: Vec<(PriceSheet, bool)> = built_in().into_iter().map(|s| (s, true)).collect();
    for (name, text) in user {
        match PriceSheet::from_toml(text) {
            Ok(sheet) => match sheets.iter_mut().find(|(s, _)| s.name == sheet.name) {
                Some(slot) => *slot = (sheet, false),
                None => sheets.push((sheet, false)),
            },
            Err(e) => tracing::warn!(sheet = %name, error = %e, "stored price sheet skipped"),
        }
    }
    sheets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_sheets_parse_and_have_sources() {
        let sheets = built_in();
        assert_eq!(sheets.len(), BUILT_IN.len());
        for sheet in &sheets {
            assert!(sheet.source.starts_with("https://"), "{}", sheet.name);
            assert_eq!(sheet.as_of.len(), 10, "{}", sheet.name);
        }
    }

    #[test]
    fn lambda_bills_rounded_wall_time_at_the_memory_size_with_a_floor() {
        let sheet = built_in()
            .into_iter()
            .find(|s| s.name == "aws-lambda-x86")
            .unwrap();
        let minute = Rollup {
            invocations: 2,
            wall_us: 200_500,
            billed_ms: 202,
            cpu_us: 1_000,
            memory_limit_bytes: 64 * 1024 * 1024,
            ..Rollup::default()
        };
        let cost = cost(&sheet, &minute);
        // 64 MB bills at Lambda's smallest size, 128 MB = 0.125 GB.
        let duration = 0.202 * 0.125 * 0.0000166667;
        assert!((cost.duration_usd - duration).abs() < 1e-15);
        assert!((cost.requests_usd - 2.0 * 0.20 / 1e6).abs() < 1e-15);
        assert!(cost.wall_billing_usd > cost.cpu_billing_usd);
        assert!((cost.total_usd() - cost.wall_billing_usd).abs() < 1e-15);
    }
}
