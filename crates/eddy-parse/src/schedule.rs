//! A function's cron schedule as a deploy asks for it (from `--schedule` flags or
//! `schedule = { ... }` in `eddy.toml`, whose keys are these same names) and the store keeps
//! it. Whether the expression and time zone mean anything is the node's check
//! (`eddy-node/src/cron.rs`). A policy left at its default is not written, so the CLI sends
//! only what the user gave.

/// When and how a function's cron schedule invokes it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSettings {
    /// Five fields, or six with a leading seconds field; aliases such as `@hourly`.
    pub cron: String,
    /// IANA time zone the fields are read in; `None`: UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Overlap::is_default")]
    pub overlap: Overlap,
    #[serde(default, skip_serializing_if = "Missed::is_default")]
    pub missed: Missed,
    /// Request path of a tick; `None`: the function's route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// What happens to a tick while the previous run of the schedule is still going.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Overlap {
    /// The tick is dropped.
    #[default]
    Skip,
    /// The tick runs beside the previous run.
    Allow,
}

/// What happens to ticks that fell while the node was down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Missed {
    /// They are dropped.
    #[default]
    Skip,
    /// The latest of them runs once, when the node starts.
    RunOnce,
}

impl Overlap {
    fn is_default(&self) -> bool {
        *self == Overlap::default()
    }
}

impl Missed {
    fn is_default(&self) -> bool {
        *self == Missed::default()
    }
}
