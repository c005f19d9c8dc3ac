//! Price sheets: what a platform charges, in TOML. Parsing and checking a sheet is here; what
//! a sheet makes of metered traffic is the node's (`eddy-node/src/cost/sheets.rs`).

use serde::{Deserialize, Serialize};

/// Bytes in a mebibyte: memory limits are metered in bytes, sheets price MB (as AWS does,
/// 1024-based: 128 MB is 0.125 GB).
pub const BYTES_PER_MB: f64 = 1024.0 * 1024.0;
/// Longest sheet name.
pub const SHEET_NAME_BYTES_MAX: usize = 64;
/// Largest number a sheet may hold (a price, a memory size, CPUs): costs stay finite.
pub const SHEET_NUMBER_MAX: f64 = 1e9;

/// How a sheet charges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SheetKind {
    /// Per request, per unit of compute (AWS Lambda, Vercel).
    PerInvocation,
    /// Per hour of a machine, busy or idle.
    Machine,
}

/// One price sheet, as written in TOML. Prices are US dollars.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PriceSheet {
    pub name: String,
    pub title: String,
    pub kind: SheetKind,
    /// Where the figures come from.
    pub source: String,
    /// The date the figures were read (`YYYY-MM-DD`).
    pub as_of: String,
    /// Fee per million invocations.
    #[serde(default)]
    pub request_usd_per_million: f64,
    /// Price of one GB-second of wall time (each invocation rounded up to 1 ms) at the
    /// memory size.
    #[serde(default)]
    pub gb_second_usd: f64,
    /// Price of one hour of CPU time (time waiting on I/O is not CPU time).
    #[serde(default)]
    pub cpu_hour_usd: f64,
    /// Price of one GB-hour of memory held for the invocations' wall time.
    #[serde(default)]
    pub memory_gb_hour_usd: f64,
    /// Memory size the sheet bills at; without it, the function's memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<f64>,
    /// Smallest memory size the platform offers (a smaller limit bills at this).
    #[serde(default)]
    pub memory_mb_min: f64,
    /// Largest memory size the platform offers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb_max: Option<f64>,
    /// A machine's price per hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_hour: Option<f64>,
    /// A machine's CPUs: how much CPU time an hour of it can give.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<f64>,
}

impl PriceSheet {
    /// Parses and checks a sheet.
    pub fn from_toml(text: &str) -> Result<PriceSheet, String> {
        let sheet: PriceSheet =
            toml::from_str(text).map_err(|e| format!("not a valid price sheet: {e}"))?;
        sheet.validate()?;
        Ok(sheet)
    }

    /// Checks a sheet's numbers and that its kind fits its prices.
    pub fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        check_name(name)?;
        let prices = [
            ("request_usd_per_million", self.request_usd_per_million),
            ("gb_second_usd", self.gb_second_usd),
            ("cpu_hour_usd", self.cpu_hour_usd),
            ("memory_gb_hour_usd", self.memory_gb_hour_usd),
            ("memory_mb_min", self.memory_mb_min),
        ];
        let optional = [
            ("memory_mb", self.memory_mb),
            ("memory_mb_max", self.memory_mb_max),
            ("usd_per_hour", self.usd_per_hour),
            ("vcpus", self.vcpus),
        ];
        for (key, value) in prices
            .into_iter()
            .chain(optional.into_iter().filter_map(|(k, v)| Some((k, v?))))
        {
            if !(0.0..=SHEET_NUMBER_MAX).contains(&value) {
                return Err(format!(
                    "sheet `{name}`: {key} must be a number from 0 to {SHEET_NUMBER_MAX}, not {value}"
                ));
            }
        }
        match self.kind {
            SheetKind::PerInvocation => {
                if prices[..4].iter().all(|(_, v)| *v == 0.0) {
                    return Err(format!(
                        "sheet `{name}` (per-invocation) prices nothing: set request_usd_per_million, gb_second_usd, cpu_hour_usd or memory_gb_hour_usd"
                    ));
                }
                if let Some(key) = [("usd_per_hour", self.usd_per_hour), ("vcpus", self.vcpus)]
                    .iter()
                    .find_map(|(k, v)| v.map(|_| k))
                {
                    return Err(format!(
                        "sheet `{name}`: {key} is for kind = \"machine\" sheets"
                    ));
                }
                if let Some(max) = self.memory_mb_max
                    && max < self.memory_mb_min
                {
                    return Err(format!(
                        "sheet `{name}`: memory_mb_max ({max}) is below memory_mb_min ({})",
                        self.memory_mb_min
                    ));
                }
            }
            SheetKind::Machine => {
                match self.usd_per_hour {
                    Some(price) if price > 0.0 => {}
                    _ => {
                        return Err(format!(
                            "sheet `{name}` (machine) needs usd_per_hour greater than 0"
                        ));
                    }
                }
                if self.vcpus == Some(0.0) {
                    return Err(format!("sheet `{name}`: vcpus must be greater than 0"));
                }
                if prices[..4].iter().any(|(_, v)| *v != 0.0) {
                    return Err(format!(
                        "sheet `{name}` (machine) is priced by usd_per_hour alone"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The memory size (GB) the sheet bills a function with `memory_limit_bytes` at.
    pub fn memory_gb(&self, memory_limit_bytes: u64) -> f64 {
        let mut mb = self
            .memory_mb
            .unwrap_or(memory_limit_bytes as f64 / BYTES_PER_MB)
            .max(self.memory_mb_min);
        if let Some(max) = self.memory_mb_max {
            mb = mb.min(max);
        }
        mb / 1024.0
    }
}

/// Sheet names are like function names: lowercase letters, digits and dashes.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= SHEET_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "sheet name `{name}` must be 1 to {SHEET_NAME_BYTES_MAX} lowercase letters, digits or dashes, not starting with a dash"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_sheets_say_what_is_wrong() {
        for (text, expect) in [
            ("name = \"x\"", "missing field"),
            (
                &format!(
                    "name = \"{}\"\ntitle = \"t\"\nkind = \"machine\"\nsource = \"s\"\nas_of = \"d\"\nusd_per_hour = 1.0",
                    "a".repeat(SHEET_NAME_BYTES_MAX + 1)
                ),
                "1 to 64",
            ),
            (
                "name = \"Bad\"\ntitle = \"t\"\nkind = \"machine\"\nsource = \"s\"\nas_of = \"d\"\nusd_per_hour = 1.0",
                "lowercase",
            ),
            (
                "name = \"m\"\ntitle = \"t\"\nkind = \"machine\"\nsource = \"s\"\nas_of = \"d\"",
                "usd_per_hour",
            ),
            (
                "name = \"p\"\ntitle = \"t\"\nkind = \"per-invocation\"\nsource = \"s\"\nas_of = \"d\"",
                "prices nothing",
            ),
            (
                "name = \"p\"\ntitle = \"t\"\nkind = \"per-invocation\"\nsource = \"s\"\nas_of = \"d\"\ngb_second_usd = -1.0",
                "gb_second_usd",
            ),
            (
                "name = \"p\"\ntitle = \"t\"\nkind = \"per-invocation\"\nsource = \"s\"\nas_of = \"d\"\ncpu_hour_usd = 1.0\nprice = 2",
                "unknown field `price`",
            ),
        ] {
            let err = PriceSheet::from_toml(text).unwrap_err();
            assert!(err.contains(expect), "{text}: {err}");
        }
    }
}
