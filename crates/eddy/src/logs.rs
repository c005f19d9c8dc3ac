//! `eddy logs`: show a function's recent invocations with their captured output, and with
//! `--follow` keep printing new ones as the node records them.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use serde::Deserialize as _;
use serde_json::Value;

use crate::api::{LogEntry, LogPage};
use crate::client::Client;

/// The most entries the node returns in one page (docs/api.md), so the most `--tail` can show.
const TAIL_MAX: i64 = 1000;

/// How long one `--follow` poll asks the node to wait for news: below the node's 30 s cap, and
/// long enough that an idle follow costs about two requests a minute.
const FOLLOW_WAIT: Duration = Duration::from_millis(25_000);

/// Least time between two `--follow` polls that brought nothing. A node that answers empty
/// pages at once (an older node ignoring `wait_ms`, or one shutting down) must not turn the
/// follow loop into a busy loop.
const EMPTY_POLL_INTERVAL_MIN: Duration = Duration::from_secs(1);

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// Function whose invocations to show
    name: String,
    /// After the newest invocations, keep waiting for new ones and print them as they come
    /// (Ctrl-C to stop)
    #[arg(short, long)]
    follow: bool,
    /// How many of the newest invocations to show first (at most 1000)
    #[arg(short = 'n', long, value_name = "N", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(0..=TAIL_MAX))]
    tail: u32,
    /// Print each invocation as one line of JSON (NDJSON), as the node sent it, instead of text
    #[arg(long)]
    json: bool,
}

pub async fn run(client: &Client, args: LogsArgs) -> Result<()> {
    let path = ["v1", "functions", args.name.as_str(), "logs"];
    // The node returns at least one entry for `tail`, so `--tail 0` asks for one to learn the
    // cursor and shows none.
    let tail = args.tail.max(1).to_string();
    let page: LogPage<Value> = client.get(&path, &[("tail", tail)]).await?;
    let skip = page.entries.len().saturating_sub(args.tail as usize);
    print_entries(&page.entries[skip..], args.json)?;
    if !args.follow {
        return Ok(());
    }
    follow(client, &args.name, next_cursor(0, &page), args.json).await
}

/// The cursor after the newest invocation `name` has now: following from it prints only
/// invocations still to come.
pub(crate) async fn newest(client: &Client, name: &str) -> Result<u64> {
    let path = ["v1", "functions", name, "logs"];
    let page: LogPage<Value> = client.get(&path, &[("tail", "1".to_owned())]).await?;
    Ok(next_cursor(0, &page))
}

/// Prints `name`'s invocations after cursor `after` as the node records them.
pub(crate) async fn follow(client: &Client, name: &str, mut after: u64, json: bool) -> Result<()> {
    let path = ["v1", "functions", name, "logs"];
    // Ends only with Ctrl-C or an error: following is open-ended by request. Each poll is
    // bounded by the client's long-poll time limit.
    loop {
        let started = Instant::now();
        let query = [
            ("after", after.to_string()),
            ("wait_ms", FOLLOW_WAIT.as_millis().to_string()),
        ];
        let page: LogPage<Value> = client.long_poll(&path, &query, FOLLOW_WAIT).await?;
        print_entries(&page.entries, json)?;
        after = next_cursor(after, &page);
        if page.entries.is_empty() {
            tokio::time::sleep(EMPTY_POLL_INTERVAL_MIN.saturating_sub(started.elapsed())).await;
        }
    }
}

/// The `after=` for the next poll: the node's `last_id`, or failing that the newest entry id,
/// never moving backwards.
fn next_cursor(after: u64, page: &LogPage<Value>) -> u64 {
    let newest_entry = page
        .entries
        .iter()
        .filter_map(|entry| entry["id"].as_u64())
        .max();
    after
        .max(page.last_id.map_or(0, |id| u64::try_from(id).unwrap_or(0)))
        .max(newest_entry.unwrap_or(0))
}

fn print_entries(entries: &[Value], json: bool) -> Result<()> {
    let mut text = String::new();
    for entry in entries {
        if json {
            text.push_str(&entry.to_string());
            text.push('\n');
        } else {
            text.push_str(&render(&decode(entry)?));
        }
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

fn decode(entry: &Value) -> Result<LogEntry> {
    LogEntry::deserialize(entry).map_err(|err| {
        anyhow!(
            "the control API sent a log entry this eddy cannot read ({err}) — are the CLI and node the same version? (--json shows entries as sent)"
        )
    })
}

/// One header line per invocation (ending with the node that ran it, when the record names
/// it), then each captured line indented:
///
/// ```text
/// 2026-11-23T11:00:00.123Z v3 GET /hello 200 ok 1.27ms on eddy-a
///   | stdout line
/// ```
fn render(entry: &LogEntry) -> String {
    let status = entry
        .status
        .map_or_else(|| "-".to_owned(), |status| status.to_string());
    let on = if entry.node.is_empty() {
        String::new()
    } else {
        format!(" on {}", escape_controls(&entry.node))
    };
    let mut text = format!(
        "{} v{} {} {} {status} {} {}{on}\n",
        entry.at,
        entry.version,
        escape_controls(&entry.method),
        escape_controls(&entry.path),
        entry.outcome,
        format_duration_ms(entry.duration_ms)
    );
    for line in entry.log.lines() {
        text.push_str("  | ");
        text.push_str(&escape_controls(line));
        text.push('\n');
    }
    text
}

/// `text` with every control character but a tab shown as an escape (`\u{1b}`): a guest's
/// output must not move the terminal's cursor, change its title or colours, or hide lines.
fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return std::borrow::Cow::Borrowed(text);
    }
    text.chars()
        .map(|c| match c {
            '\t' => c.to_string(),
            c if c.is_control() => c.escape_unicode().to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// `1.27ms` below a second, `2.50s` from there on.
fn format_duration_ms(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.2}ms")
    } else {
        format!("{:.2}s", ms / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(json: &str) -> LogEntry {
        decode(&serde_json::from_str(json).unwrap()).unwrap()
    }

    #[test]
    fn an_invocation_is_a_header_and_indented_output() {
        let entry = entry(
            r#"{"id": 17, "at": "2026-11-23T11:00:00.123Z", "version": 3, "method": "GET",
                "path": "/hello?x=1", "status": 200, "outcome": "ok", "duration_ms": 1.27,
                "log": "stdout line\nstderr line\n"}"#,
        );
        assert_eq!(
            render(&entry),
            "2026-11-23T11:00:00.123Z v3 GET /hello?x=1 200 ok 1.27ms\n  | stdout line\n  | stderr line\n"
        );
    }

    #[test]
    fn guest_output_cannot_drive_the_terminal() {
        let entry = entry(
            r#"{"id": 19, "at": "2026-11-23T11:00:00Z", "version": 1, "method": "GET",
                "path": "/x", "status": 200, "outcome": "ok", "duration_ms": 1,
                "log": "\u001b]0;pwned\u0007\u001b[2J\tred\u001b[31m\rhidden\u0085\n"}"#,
        );
        let text = render(&entry);
        assert!(
            !text
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t'),
            "{text:?}"
        );
        assert!(
            text.ends_with(
                "  | \\u{1b}]0;pwned\\u{7}\\u{1b}[2J\tred\\u{1b}[31m\\u{d}hidden\\u{85}\n"
            ),
            "{text:?}"
        );
    }

    #[test]
    fn a_record_names_the_node_that_ran_it() {
        let entry = entry(
            r#"{"id": 20, "at": "2026-11-23T11:00:02Z", "version": 1, "method": "GET",
                "path": "/x", "status": 200, "outcome": "ok", "duration_ms": 1,
                "log": "", "node": "eddy-b"}"#,
        );
        assert_eq!(
            render(&entry),
            "2026-11-23T11:00:02Z v1 GET /x 200 ok 1.00ms on eddy-b\n"
        );
    }

    #[test]
    fn an_invocation_without_status_or_output_is_one_line() {
        let entry = entry(
            r#"{"id": 18, "at": "2026-11-23T11:00:01Z", "version": 3, "method": "POST",
                "path": "/hello", "status": null, "outcome": "timeout", "duration_ms": 2000.4,
                "log": ""}"#,
        );
        assert_eq!(
            render(&entry),
            "2026-11-23T11:00:01Z v3 POST /hello - timeout 2.00s\n"
        );
    }

    #[test]
    fn the_cursor_only_moves_forward() {
        let page = |json: &str| serde_json::from_str::<LogPage<Value>>(json).unwrap();
        assert_eq!(
            next_cursor(0, &page(r#"{"entries": [], "last_id": 17}"#)),
            17
        );
        assert_eq!(
            next_cursor(20, &page(r#"{"entries": [], "last_id": 0}"#)),
            20
        );
        assert_eq!(next_cursor(5, &page(r#"{"entries": [{"id": 9}]}"#)), 9);
    }
}
