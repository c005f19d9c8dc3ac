//! Cron schedules as data: parsing a deploy's `schedule` (cron expression and time zone),
//! checking it, and finding ticks on the calendar. No clock is read here: every question
//! names its time.

use std::str::FromStr as _;

use chrono::{TimeZone as _, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use eddy_store::ScheduleSettings;

/// Occurrences looked through to find the latest tick missed while the node was down (a
/// one-second schedule down for more than a day counts its missed ticks as this many).
const MISSED_TICKS_SCAN_MAX: u64 = 100_000;

/// Why a deploy's schedule is refused.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "schedule `{expression}` is not a cron expression: {reason} (five fields `min hour day month weekday`, or six with seconds first, or @hourly/@daily/...)"
    )]
    NotCron { expression: String, reason: String },
    #[error("schedule time zone `{name}` is not an IANA time zone name such as Europe/Paris")]
    UnknownTimezone { name: String },
    #[error("schedule `{expression}` never fires")]
    NeverFires { expression: String },
    #[error("schedule path `{path}` must be a path starting with `/`")]
    NotAPath { path: String },
}

/// A parsed schedule.
pub struct Schedule {
    cron: Cron,
    timezone: Option<chrono_tz::Tz>,
}

impl Schedule {
    /// Parse the cron expression (five fields, or six with seconds first) and time zone.
    /// Parses `settings`; an expression with no tick after `now_ms` is refused.
    pub fn parse(settings: &ScheduleSettings, now_ms: i64) -> Result<Schedule, ScheduleError> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(&settings.cron)
            .map_err(|e| ScheduleError::NotCron {
                expression: settings.cron.clone(),
                reason: e.to_string(),
            })?;
        let timezone = settings
            .timezone
            .as_deref()
            .map(|tz| {
                chrono_tz::Tz::from_str(tz).map_err(|_| ScheduleError::UnknownTimezone {
                    name: tz.to_owned(),
                })
            })
            .transpose()?;
        let schedule = Schedule { cron, timezone };
        if schedule.next_after(now_ms).is_none() {
            return Err(ScheduleError::NeverFires {
                expression: settings.cron.clone(),
            });
        }
        Ok(schedule)
    }

    /// The first tick strictly after `ms` (unix milliseconds).
    pub fn next_after(&self, ms: i64) -> Option<i64> {
        let at = Utc.timestamp_millis_opt(ms).single()?;
        let next = match self.timezone {
            Some(tz) => self
                .cron
                .find_next_occurrence(&at.with_timezone(&tz), false)
                .ok()?
                .timestamp_millis(),
            None => self
                .cron
                .find_next_occurrence(&at, false)
                .ok()?
                .timestamp_millis(),
        };
        Some(next)
    }

    /// The latest tick in `(after, until]` and how many there were (counted up to
    /// `MISSED_TICKS_SCAN_MAX`).
    pub fn latest_between(&self, after: i64, until: i64) -> Option<(i64, u64)> {
        let mut latest = None;
        let mut count = 0;
        let mut at = after;
        while count < MISSED_TICKS_SCAN_MAX {
            match self.next_after(at) {
                Some(next) if next <= until => {
                    latest = Some(next);
                    count += 1;
                    at = next;
                }
                _ => break,
            }
        }
        latest.map(|t| (t, count))
    }
}

/// Check a deploy's schedule at calendar time `now_ms`.
pub fn validate_schedule(settings: &ScheduleSettings, now_ms: i64) -> Result<(), ScheduleError> {
    Schedule::parse(settings, now_ms)?;
    if let Some(path) = &settings.path
        && (!path.starts_with('/') || path.parse::<http::uri::PathAndQuery>().is_err())
    {
        return Err(ScheduleError::NotAPath { path: path.clone() });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use eddy_store::{Missed, Overlap};

    /// A schedule's settings with the defaults, for tests.
    pub(crate) fn settings(cron: &str, timezone: Option<&str>) -> ScheduleSettings {
        ScheduleSettings {
            cron: cron.into(),
            timezone: timezone.map(str::to_string),
            overlap: Overlap::Skip,
            missed: Missed::Skip,
            path: None,
        }
    }

    #[test]
    fn seconds_are_optional_and_time_zones_shift_ticks() {
        let every_second = Schedule::parse(&settings("* * * * * *", None), 0).unwrap();
        assert_eq!(every_second.next_after(1_000_500), Some(1_001_000));
        let five_minutes = Schedule::parse(&settings("*/5 * * * *", None), 0).unwrap();
        assert_eq!(five_minutes.next_after(0), Some(300_000));
        // 09:00 in Kolkata (UTC+05:30) is 03:30 UTC.
        let kolkata = Schedule::parse(&settings("0 9 * * *", Some("Asia/Kolkata")), 0).unwrap();
        assert_eq!(kolkata.next_after(0), Some((3 * 3600 + 30 * 60) * 1000));
        let (latest, count) = every_second.latest_between(1_000_000, 1_005_500).unwrap();
        assert_eq!((latest, count), (1_005_000, 5));
        assert!(every_second.latest_between(1_000_000, 1_000_900).is_none());
    }

    #[test]
    fn bad_schedules_say_why() {
        for (cron, tz, why) in [
            ("61 * * * *", None, "not a cron expression"),
            ("* * *", None, "not a cron expression"),
            ("* * * * *", Some("Mars/Olympus"), "not an IANA time zone"),
        ] {
            let err = validate_schedule(&settings(cron, tz), 0)
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{cron}: {err}");
        }
        let mut bad_path = settings("* * * * *", None);
        bad_path.path = Some("jobs".into());
        assert_eq!(
            validate_schedule(&bad_path, 0).unwrap_err(),
            ScheduleError::NotAPath {
                path: "jobs".into()
            }
        );
        assert!(
            validate_schedule(&bad_path, 0)
                .unwrap_err()
                .to_string()
                .contains("starting with `/`")
        );
    }
}
