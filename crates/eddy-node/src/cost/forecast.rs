//! Month-end projection from hourly cost: a trailing average with daily seasonality, and a
//! range from how much whole days varied. The method is `docs/cost.md`'s.

use std::collections::BTreeMap;

use serde::Serialize;

pub const HOUR_MS: i64 = 60 * 60 * 1000;
pub const DAY_MS: i64 = 24 * HOUR_MS;
/// History the projection averages over at most.
pub const FORECAST_TRAILING_DAYS: i64 = 14;
/// z for a two-sided 90% interval of a normal distribution.
const Z_90: f64 = 1.645;
/// With less than two whole days of history, the range is the projection of the remaining
/// month times (1 - this) to (1 + this).
const SHORT_HISTORY_SPREAD: f64 = 0.5;

/// A month-end projection.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Forecast {
    /// Spent from the start of the month to now.
    pub month_to_date_usd: f64,
    /// Month to date plus the expected rest of the month.
    pub projected_usd: f64,
    /// The range the month end falls in (about 90%).
    pub low_usd: f64,
    pub high_usd: f64,
    /// Hours of history the projection learned from.
    pub history_hours: f64,
}

/// Projects the month `[month_start_ms, month_end_ms)` at `now_ms` from `hourly` costs
/// (hour start → USD). History starts when the first cost was metered, `first_cost_ms`
/// (a function deployed three days ago has three days of history, not eleven of zeros;
/// one deployed at 10:40 has 20 minutes of its first hour, not 60), at most
/// `FORECAST_TRAILING_DAYS` back, and ends now; the hour now is in counts for the part
/// of it that has passed. Without `first_cost_ms`, the first hour with a cost starts it.
///
/// Each hour of the day gets the average cost of that hour over the history (daily
/// seasonality); an hour of the day the history has not seen yet gets the history's overall
/// average per hour. The rest of the month is the sum of those averages over its hours.
/// The range is ±1.645 × (standard deviation of whole days' costs) × √(days left): days
/// are taken as independent. With fewer than two whole days the range is ±50% of the rest.
pub fn forecast(
    hourly: &BTreeMap<i64, f64>,
    first_cost_ms: Option<i64>,
    now_ms: i64,
    month_start_ms: i64,
    month_end_ms: i64,
) -> Forecast {
    let month_to_date_usd: f64 = hourly
        .range(month_start_ms..now_ms)
        .map(|(_, usd)| usd)
        .sum();
    let first = first_cost_ms.or_else(|| {
        hourly
            .iter()
            .find(|(_, usd)| **usd > 0.0)
            .map(|(hour, _)| *hour)
    });
    let history_start = first
        .unwrap_or(now_ms)
        .max(now_ms - FORECAST_TRAILING_DAYS * DAY_MS);
    let history_hours = (now_ms - history_start).max(0) as f64 / HOUR_MS as f64;
    let no_history = Forecast {
        month_to_date_usd,
        projected_usd: month_to_date_usd,
        low_usd: month_to_date_usd,
        high_usd: month_to_date_usd,
        history_hours,
    };
    if history_hours <= 0.0 {
        return no_history;
    }

    // Cost and covered hours per hour of the day.
    let mut cost = [0.0f64; 24];
    let mut covered = [0.0f64; 24];
    let mut hour = history_start - history_start.rem_euclid(HOUR_MS);
    while hour < now_ms {
        let from = hour.max(history_start);
        let to = (hour + HOUR_MS).min(now_ms);
        let slot = hour_of_day(hour);
        covered[slot] += (to - from) as f64 / HOUR_MS as f64;
        cost[slot] += hourly.get(&hour).copied().unwrap_or(0.0);
        hour += HOUR_MS;
    }
    let mean = cost.iter().sum::<f64>() / covered.iter().sum::<f64>();
    let profile: Vec<f64> = (0..24)
        .map(|h| {
            if covered[h] >= 1.0 {
                cost[h] / covered[h]
            } else {
                mean
            }
        })
        .collect();

    // The rest of the month, hour by hour.
    let mut rest = 0.0;
    let mut hour = now_ms - now_ms.rem_euclid(HOUR_MS);
    while hour < month_end_ms {
        let from = hour.max(now_ms);
        let to = (hour + HOUR_MS).min(month_end_ms);
        rest += profile[hour_of_day(hour)] * (to - from) as f64 / HOUR_MS as f64;
        hour += HOUR_MS;
    }
    let projected_usd = month_to_date_usd + rest;
    let days_left = (month_end_ms - now_ms).max(0) as f64 / DAY_MS as f64;

    let days = whole_days(hourly, history_start, now_ms);
    let half = if days.len() >= 2 {
        let n = days.len() as f64;
        let avg = days.iter().sum::<f64>() / n;
        let variance = days.iter().map(|d| (d - avg).powi(2)).sum::<f64>() / (n - 1.0);
        Z_90 * variance.sqrt() * days_left.sqrt()
    } else {
        rest * SHORT_HISTORY_SPREAD
    };
    Forecast {
        month_to_date_usd,
        projected_usd,
        low_usd: (projected_usd - half).max(month_to_date_usd),
        high_usd: projected_usd + half,
        history_hours,
    }
}

fn hour_of_day(hour_ms: i64) -> usize {
    (hour_ms.rem_euclid(DAY_MS) / HOUR_MS) as usize
}

/// Cost of each UTC day wholly inside `[from_ms, to_ms)`.
fn whole_days(hourly: &BTreeMap<i64, f64>, from_ms: i64, to_ms: i64) -> Vec<f64> {
    let mut day = from_ms + (DAY_MS - from_ms.rem_euclid(DAY_MS)) % DAY_MS;
    let mut out = Vec::new();
    while day + DAY_MS <= to_ms {
        out.push(hourly.range(day..day + DAY_MS).map(|(_, usd)| usd).sum());
        day += DAY_MS;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-01T00:00:00Z and 2026-12-01T00:00:00Z.
    const NOV: i64 = 1_793_491_200_000;
    const DEC: i64 = NOV + 30 * DAY_MS;

    /// Hours 00:00–08:00 UTC (a working day in Asia) cost `per_hour` each, other hours
    /// nothing.
    fn busy_hours(days: std::ops::Range<i64>, per_hour: impl Fn(i64) -> f64) -> BTreeMap<i64, f64> {
        let mut hourly = BTreeMap::new();
        for day in days {
            for h in 0..8 {
                hourly.insert(NOV + day * DAY_MS + h * HOUR_MS, per_hour(day));
            }
        }
        hourly
    }

    #[test]
    fn a_steady_daily_pattern_projects_exactly_with_no_spread() {
        // 14 days of $1 per busy hour, $8 a day; now is the 15th at 00:00.
        let hourly = busy_hours(0..14, |_| 1.0);
        let f = forecast(&hourly, None, NOV + 14 * DAY_MS, NOV, DEC);
        assert_eq!(f.month_to_date_usd, 112.0);
        // 16 days left at $8.
        assert!((f.projected_usd - 240.0).abs() < 1e-9, "{f:?}");
        assert!((f.low_usd - 240.0).abs() < 1e-9 && (f.high_usd - 240.0).abs() < 1e-9);
    }

    #[test]
    fn seasonality_counts_only_the_hours_still_to_come_today() {
        // Now is the 15th at 04:00: today's 00–04 happened (and cost $4), 04–08 is to come.
        let mut hourly = busy_hours(0..14, |_| 1.0);
        for h in 0..4 {
            hourly.insert(NOV + 14 * DAY_MS + h * HOUR_MS, 1.0);
        }
        let f = forecast(&hourly, None, NOV + 14 * DAY_MS + 4 * HOUR_MS, NOV, DEC);
        assert_eq!(f.month_to_date_usd, 116.0);
        // History is the 14 days up to now, so every busy hour of the day averages $1:
        // 4 busy hours left today, then 15 days at $8.
        assert!(
            (f.projected_usd - (116.0 + 4.0 + 120.0)).abs() < 1e-9,
            "{f:?}"
        );
    }

    #[test]
    fn the_range_grows_with_how_much_days_vary() {
        // Days alternate $4 and $12 (0.5 and 1.5 per busy hour): mean $8, sample sd of
        // 14 such days = sqrt(14/13 × 16).
        let hourly = busy_hours(0..14, |d| if d % 2 == 0 { 0.5 } else { 1.5 });
        let f = forecast(&hourly, None, NOV + 14 * DAY_MS, NOV, DEC);
        assert!((f.projected_usd - 240.0).abs() < 1e-9, "{f:?}");
        let half = Z_90 * (16.0f64 * 14.0 / 13.0).sqrt() * 16f64.sqrt();
        assert!((f.high_usd - (240.0 + half)).abs() < 1e-9, "{f:?}");
        assert!((f.low_usd - (240.0 - half)).abs() < 1e-9, "{f:?}");
    }

    #[test]
    fn history_starts_at_the_first_cost_and_short_history_gives_a_wide_range() {
        // Deployed at 10:00 on the 29th; $2 an hour since; now is the 29th at 12:00.
        let start = NOV + 28 * DAY_MS + 10 * HOUR_MS;
        let hourly: BTreeMap<i64, f64> = [(start, 2.0), (start + HOUR_MS, 2.0)].into();
        let f = forecast(&hourly, None, start + 2 * HOUR_MS, NOV, DEC);
        assert_eq!(f.history_hours, 2.0);
        // Hours of the day not seen yet get the mean, $2: 36 hours left.
        assert!((f.projected_usd - (4.0 + 72.0)).abs() < 1e-9, "{f:?}");
        assert!((f.low_usd - (4.0 + 36.0)).abs() < 1e-9);
        assert!((f.high_usd - (4.0 + 108.0)).abs() < 1e-9);
    }

    #[test]
    fn a_first_hour_counts_from_the_first_cost_not_from_its_start() {
        // Deployed at 10:40 on the 29th; $1 by 11:00 (now): $3 an hour, 37 hours left.
        let hour = NOV + 28 * DAY_MS + 10 * HOUR_MS;
        let hourly: BTreeMap<i64, f64> = [(hour, 1.0)].into();
        let first = hour + 40 * 60_000;
        let f = forecast(&hourly, Some(first), hour + HOUR_MS, NOV, DEC);
        assert!((f.history_hours - 1.0 / 3.0).abs() < 1e-9, "{f:?}");
        assert!((f.projected_usd - (1.0 + 37.0 * 3.0)).abs() < 1e-9, "{f:?}");
        // Counted from the hour's start it would have been a third of that.
        let diluted = forecast(&hourly, None, hour + HOUR_MS, NOV, DEC);
        assert!(
            (diluted.projected_usd - (1.0 + 37.0)).abs() < 1e-9,
            "{diluted:?}"
        );
    }

    #[test]
    fn no_traffic_projects_nothing() {
        let f = forecast(&BTreeMap::new(), None, NOV + DAY_MS, NOV, DEC);
        assert_eq!(f.projected_usd, 0.0);
        assert_eq!(f.high_usd, 0.0);
    }
}
