//! Monthly budgets of the node or of one function, on a chosen price sheet: alerts at
//! thresholds (log line, metric, optional webhook) and an optional hard cap that pauses
//! background triggers first and then refuses interactive requests.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{PriceSheet, SheetKind, month_of, price_sheets, spent, totals_since};
pub use crate::caps::Block;
use crate::parts::Parts;
use crate::problem::Problem;

/// Thresholds (percent of the monthly limit) alerted at when a budget does not say.
pub const DEFAULT_ALERT_PERCENTS: [f64; 3] = [50.0, 80.0, 100.0];
/// With a hard cap, background triggers pause at this percent when a budget does not say;
/// interactive requests are refused at 100%.
pub const DEFAULT_PAUSE_BACKGROUND_PERCENT: f64 = 90.0;
/// Thresholds one budget may have.
pub const ALERT_PERCENTS_MAX: usize = 16;
/// Highest alert threshold (percent).
pub const ALERT_PERCENT_CEILING: f64 = 1000.0;
/// Smallest and largest monthly limit (USD): spent over limit stays a finite percent.
pub const MONTHLY_USD_MIN: f64 = 1e-12;
pub const MONTHLY_USD_MAX: f64 = 1e12;

/// A budget as set through the API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSettings {
    /// The monthly limit (USD, calendar month in UTC).
    pub monthly_usd: f64,
    /// The price sheet spending is counted on.
    pub sheet: String,
    #[serde(default = "default_alert_percents")]
    pub alert_percents: Vec<f64>,
    /// Where alerts are POSTed (a host in the node's `budget_webhook_hosts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Enforce the limit: pause background triggers at `pause_background_percent`, refuse
    /// interactive requests at 100%.
    #[serde(default)]
    pub hard_cap: bool,
    #[serde(default = "default_pause_background_percent")]
    pub pause_background_percent: f64,
}

fn default_alert_percents() -> Vec<f64> {
    DEFAULT_ALERT_PERCENTS.to_vec()
}

fn default_pause_background_percent() -> f64 {
    DEFAULT_PAUSE_BACKGROUND_PERCENT
}

/// Why budget settings were refused.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error(
        "monthly_usd must be greater than 0 (from {MONTHLY_USD_MIN} to {MONTHLY_USD_MAX}), not {0}"
    )]
    MonthlyUsd(f64),
    #[error("no price sheet named `{sheet}`; the node has: {known}")]
    UnknownSheet { sheet: String, known: String },
    #[error(
        "a hard cap on `{0}` would save nothing: a machine costs its price per hour whether requests run or not. Use alerts alone on a machine sheet, or cap on a per-invocation sheet"
    )]
    HardCapOnMachineSheet(String),
    #[error("{0} alert thresholds; a budget has at most {ALERT_PERCENTS_MAX}")]
    TooManyAlerts(usize),
    #[error("alert threshold {0}% is not above 0% and at most {ALERT_PERCENT_CEILING}%")]
    AlertPercent(f64),
    #[error(
        "pause_background_percent {0} must be above 0 and at most 100: background work pauses before interactive requests are refused at 100%"
    )]
    PauseBackgroundPercent(f64),
    #[error(transparent)]
    Webhook(#[from] WebhookRefused),
}

/// Why a budget's webhook may not be called.
#[derive(Debug, thiserror::Error)]
pub enum WebhookRefused {
    #[error("webhook `{url}` is not a URL: {source}")]
    NotAUrl {
        url: String,
        source: http::uri::InvalidUri,
    },
    #[error("webhook `{0}` must be an http:// or https:// URL")]
    NotHttp(String),
    #[error("webhook `{0}` has no host")]
    NoHost(String),
    #[error(
        "webhook host `{host}` is not in the node's budget_webhook_hosts ({allowed}); add it to the node's config file"
    )]
    HostNotAllowed { host: String, allowed: String },
}

impl From<BudgetError> for Problem {
    fn from(e: BudgetError) -> Problem {
        Problem::invalid(e.to_string())
    }
}

/// Why an alert's POST failed.
#[derive(Debug, thiserror::Error)]
enum WebhookFailure {
    #[error("{0}")]
    Request(#[from] http::Error),
    #[error("no answer within budget_webhook_timeout_ms ({0} ms)")]
    Timeout(u128),
    #[error("{0}")]
    Send(#[from] hyper_util::client::legacy::Error),
    #[error("the webhook answered {0}")]
    Status(http::StatusCode),
}

impl BudgetSettings {
    /// Checks the settings against the node's sheets and webhook allowlist.
    pub fn validate(
        &self,
        sheets: &[PriceSheet],
        webhook_hosts: &[String],
    ) -> Result<(), BudgetError> {
        if !(MONTHLY_USD_MIN..=MONTHLY_USD_MAX).contains(&self.monthly_usd) {
            return Err(BudgetError::MonthlyUsd(self.monthly_usd));
        }
        let Some(sheet) = sheets.iter().find(|s| s.name == self.sheet) else {
            let names: Vec<&str> = sheets.iter().map(|s| s.name.as_str()).collect();
            return Err(BudgetError::UnknownSheet {
                sheet: self.sheet.clone(),
                known: names.join(", "),
            });
        };
        if self.hard_cap && sheet.kind == SheetKind::Machine {
            return Err(BudgetError::HardCapOnMachineSheet(self.sheet.clone()));
        }
        if self.alert_percents.len() > ALERT_PERCENTS_MAX {
            return Err(BudgetError::TooManyAlerts(self.alert_percents.len()));
        }
        if let Some(bad) = self
            .alert_percents
            .iter()
            .find(|p| !(p.is_finite() && **p > 0.0 && **p <= ALERT_PERCENT_CEILING))
        {
            return Err(BudgetError::AlertPercent(*bad));
        }
        let pause = self.pause_background_percent;
        if !(pause.is_finite() && pause > 0.0 && pause <= 100.0) {
            return Err(BudgetError::PauseBackgroundPercent(pause));
        }
        if let Some(url) = &self.webhook {
            webhook_allowed(url, webhook_hosts)?;
        }
        Ok(())
    }
}

/// Whether `url` is an http(s) URL whose host (any port) or `host:port` is in `hosts`.
fn webhook_allowed(url: &str, hosts: &[String]) -> Result<(), WebhookRefused> {
    let allowed = webhook_authority(url)?;
    if hosts
        .iter()
        .any(|h| h.eq_ignore_ascii_case(&allowed.0) || h.eq_ignore_ascii_case(&allowed.1))
    {
        return Ok(());
    }
    Err(WebhookRefused::HostNotAllowed {
        host: allowed.1,
        allowed: if hosts.is_empty() {
            "empty".to_string()
        } else {
            hosts.join(", ")
        },
    })
}

/// `(host, host:port)` of an http(s) URL.
fn webhook_authority(url: &str) -> Result<(String, String), WebhookRefused> {
    let uri: http::Uri = url.parse().map_err(|source| WebhookRefused::NotAUrl {
        url: url.to_string(),
        source,
    })?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(WebhookRefused::NotHttp(url.to_string())),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| WebhookRefused::NoHost(url.to_string()))?;
    Ok((authority.host().to_string(), authority.as_str().to_string()))
}

/// How a budget stands this month.
#[derive(Clone, Debug, Serialize)]
pub struct BudgetStatus {
    /// `node` or the function's name.
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    #[serde(flatten)]
    pub settings: BudgetSettings,
    pub month: String,
    pub spent_usd: f64,
    pub percent: f64,
    /// `ok`, `background-paused` or `refusing`.
    pub state: &'static str,
    /// A problem with the budget itself (its sheet was removed, say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// The settings as stored, so recording an alert cannot touch a budget set since.
    #[serde(skip)]
    stored_settings: String,
    #[serde(skip)]
    alerted_month: String,
    #[serde(skip)]
    alerted_percent: f64,
}

/// The label a budget has in logs and metrics.
pub fn label(scope: &str) -> String {
    if scope.is_empty() {
        "node".to_string()
    } else {
        format!("function/{scope}")
    }
}

/// How every budget stands now.
pub async fn evaluate(parts: &Parts) -> Result<Vec<BudgetStatus>, Problem> {
    let records = parts.stores.cost.budgets().await?;
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let sheets = price_sheets(parts).await?;
    let now = parts.clock.now_ms();
    let (month_start, _, month) = month_of(now);
    let minutes = totals_since(parts, month_start).await?;
    let mut out = Vec::new();
    for record in records {
        let settings: BudgetSettings = match serde_json::from_str(&record.settings) {
            Ok(settings) => settings,
            Err(e) => {
                tracing::error!(scope = %record.scope, error = %e, "stored budget is not readable; skipped");
                continue;
            }
        };
        let function = (!record.scope.is_empty()).then(|| record.scope.clone());
        let (spent_usd, problem) = match sheets.iter().find(|s| s.name == settings.sheet) {
            Some(sheet) => (
                spent(sheet, &minutes, function.as_deref(), month_start, now),
                None,
            ),
            None => (
                0.0,
                Some(format!(
                    "price sheet `{}` no longer exists; set the budget again",
                    settings.sheet
                )),
            ),
        };
        let percent = spent_usd / settings.monthly_usd * 100.0;
        let state = if !settings.hard_cap || problem.is_some() {
            "ok"
        } else if percent >= 100.0 {
            "refusing"
        } else if percent >= settings.pause_background_percent {
            "background-paused"
        } else {
            "ok"
        };
        out.push(BudgetStatus {
            scope: label(&record.scope),
            function,
            settings,
            month: month.clone(),
            spent_usd,
            percent,
            state,
            problem,
            stored_settings: record.settings,
            alerted_month: record.alerted_month,
            alerted_percent: record.alerted_percent,
        });
    }
    Ok(out)
}

/// Checks every budget each `interval` (and at once when one changes): sets the metrics,
/// sends alerts and applies hard caps.
pub struct Watcher {
    pub(crate) parts: Parts,
    pub interval: Duration,
    pub webhook_timeout: Duration,
    /// The node's `budget_webhook_hosts`.
    pub webhook_hosts: Arc<[String]>,
}

impl Watcher {
    pub async fn run(self, shutdown: CancellationToken) {
        let budgets = &self.parts.budgets;
        loop {
            self.check().await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = budgets.changed.notified() => {}
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    async fn check(&self) {
        let statuses = match evaluate(&self.parts).await {
            Ok(statuses) => statuses,
            Err(e) => {
                tracing::error!(error = %e, "checking budgets failed; caps stay as they were");
                return;
            }
        };
        let (_, month_end, _) = month_of(self.parts.clock.now_ms());
        let before = self.parts.budgets.blocks.load_full();
        let mut blocks = HashMap::new();
        for status in &statuses {
            let scope = status.function.clone().unwrap_or_default();
            let meter = &self.parts.meter;
            meter.budget(&status.scope, status.spent_usd, status.settings.monthly_usd);
            self.alert(status, &scope).await;
            if status.state == "ok" {
                continue;
            }
            let whose = match &status.function {
                Some(f) => format!("function `{f}`"),
                None => "this node".to_string(),
            };
            let block = Block {
                interactive: status.state == "refusing",
                message: format!(
                    "budget spent: {whose} has spent ${:.6} of its ${} monthly budget ({:.0}%) on price sheet `{}`; {} until the month ends ({} UTC) or the budget is raised (eddy budget set)",
                    status.spent_usd,
                    status.settings.monthly_usd,
                    status.percent,
                    status.settings.sheet,
                    if status.state == "refusing" {
                        "requests are refused and background triggers paused"
                    } else {
                        "background triggers (cron, queues) are paused"
                    },
                    crate::events::rfc3339(month_end),
                ),
                until_ms: month_end,
            };
            let was = before.get(&scope);
            if was.map(|b| b.interactive) != Some(block.interactive) {
                tracing::warn!(budget = %status.scope, state = status.state, "{}", block.message);
            }
            blocks.insert(scope, block);
        }
        for scope in before.keys().filter(|s| !blocks.contains_key(*s)) {
            tracing::info!(budget = %label(scope), "budget cap lifted: triggers and requests run again");
        }
        self.parts.budgets.blocks.store(Arc::new(blocks));
    }

    /// Sends the highest threshold crossed since the last alert this month, once: once for
    /// the whole cluster, since the node that records the alert in the store is the one
    /// that sends it. A store that does not answer delays the alert to a later check.
    async fn alert(&self, status: &BudgetStatus, scope: &str) {
        let already = if status.alerted_month == status.month {
            status.alerted_percent
        } else {
            0.0
        };
        let Some(threshold) = status
            .settings
            .alert_percents
            .iter()
            .copied()
            .filter(|t| status.percent >= *t && *t > already)
            .reduce(f64::max)
        else {
            return;
        };
        let settings = status.stored_settings.clone();
        match self
            .parts
            .stores
            .cost
            .set_budget_alerted(scope, &settings, &status.month, threshold)
            .await
        {
            Ok(true) => {}
            // Another node recorded it (and sends it), or the budget was put again.
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(budget = %status.scope, error = %e, "a budget alert waits for the store to record it");
                return;
            }
        }
        tracing::warn!(
            budget = %status.scope,
            sheet = %status.settings.sheet,
            spent_usd = status.spent_usd,
            monthly_usd = status.settings.monthly_usd,
            threshold_percent = threshold,
            "budget alert: {} has spent {:.0}% (${:.6}) of its ${} monthly budget on price sheet `{}`",
            status.scope,
            status.percent,
            status.spent_usd,
            status.settings.monthly_usd,
            status.settings.sheet,
        );
        self.parts.meter.budget_alert(&status.scope, threshold);
        if let Some(url) = status.settings.webhook.clone() {
            // The allowlist may have shrunk since the budget was set.
            if let Err(e) = webhook_allowed(&url, &self.webhook_hosts) {
                tracing::warn!(budget = %status.scope, "budget alert webhook not sent: {e}");
                return;
            }
            let body = serde_json::json!({
                "type": "eddy.budget.alert",
                "budget": status.scope,
                "function": status.function,
                "month": status.month,
                "sheet": status.settings.sheet,
                "monthly_usd": status.settings.monthly_usd,
                "spent_usd": status.spent_usd,
                "percent": status.percent,
                "threshold_percent": threshold,
                "hard_cap": status.settings.hard_cap,
                "state": status.state,
            });
            let timeout = self.webhook_timeout;
            let budget = status.scope.clone();
            // Off the check loop: a slow receiver delays no cap.
            tokio::spawn(async move {
                if let Err(e) = post_webhook(&url, body.to_string(), timeout).await {
                    tracing::warn!(%budget, webhook = %url, "budget alert webhook failed: {e}");
                }
            });
        }
    }
}

/// One POST of an alert; not retried (the next threshold sends again).
async fn post_webhook(url: &str, body: String, timeout: Duration) -> Result<(), WebhookFailure> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Full<Bytes>>(connector);
    let request = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, "eddy-budget")
        .body(Full::new(Bytes::from(body)))?;
    let response = tokio::time::timeout(timeout, client.request(request))
        .await
        .map_err(|_| WebhookFailure::Timeout(timeout.as_millis()))??;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(WebhookFailure::Status(response.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(edit: impl FnOnce(&mut BudgetSettings)) -> Result<(), BudgetError> {
        let mut s = BudgetSettings {
            monthly_usd: 10.0,
            sheet: "aws-lambda-x86".into(),
            alert_percents: default_alert_percents(),
            webhook: None,
            hard_cap: true,
            pause_background_percent: DEFAULT_PAUSE_BACKGROUND_PERCENT,
        };
        edit(&mut s);
        s.validate(
            &super::super::sheets::built_in(),
            &["hooks.example.com".to_string()],
        )
    }

    #[test]
    fn budgets_are_checked_against_sheets_thresholds_and_the_webhook_allowlist() {
        settings(|_| {}).unwrap();
        settings(|s| s.webhook = Some("https://hooks.example.com/eddy".into())).unwrap();
        for (edit, expect) in [
            (
                Box::new(|s: &mut BudgetSettings| s.monthly_usd = 0.0) as Box<dyn FnOnce(&mut _)>,
                "monthly_usd must be greater than 0",
            ),
            (
                Box::new(|s: &mut BudgetSettings| s.sheet = "heroku".into()),
                "no price sheet named `heroku`",
            ),
            (
                Box::new(|s: &mut BudgetSettings| s.sheet = "dedicated".into()),
                "a hard cap on `dedicated` would save nothing",
            ),
            (
                Box::new(|s: &mut BudgetSettings| {
                    s.alert_percents = vec![10.0; ALERT_PERCENTS_MAX + 1]
                }),
                "at most 16",
            ),
            (
                Box::new(|s: &mut BudgetSettings| s.alert_percents = vec![0.0]),
                "alert threshold 0%",
            ),
            (
                Box::new(|s: &mut BudgetSettings| s.pause_background_percent = 120.0),
                "pause_background_percent 120",
            ),
            (
                Box::new(|s: &mut BudgetSettings| {
                    s.webhook = Some("http://evil.example.net/".into())
                }),
                "not in the node's budget_webhook_hosts",
            ),
            (
                Box::new(|s: &mut BudgetSettings| {
                    s.webhook = Some("ftp://hooks.example.com/".into())
                }),
                "http:// or https://",
            ),
        ] {
            let err = settings(edit).unwrap_err().to_string();
            assert!(err.contains(expect), "{err}");
        }
    }
}
