//! `eddy queue`: durable queues (docs/queues.md). Create them, send messages, bind the
//! function that consumes them, and look into or repair what is queued.

use std::io::Write;
use std::time::SystemTime;

use anyhow::Result;

use crate::api::{
    Consumer, ConsumerRequest, CreateQueue, Message, MessageList, Purged, Queue, QueueList,
    Redriven, Sent,
};
use crate::client::Client;
use crate::payload::Payload;
use crate::{table, units};

/// Error code of the node's 404 for a queue that does not exist.
const NO_QUEUE: &str = "no_queue";

/// `eddy queue peek` shows this many messages unless told otherwise.
const PEEK_DEFAULT: u32 = 10;

/// The node answers at most this many messages per peek.
const PEEK_MAX: i64 = 1000;

/// Characters of a payload or error shown in a peek table cell: enough to recognise a message,
/// few enough that a row fits a terminal.
const PREVIEW_CHARS_MAX: usize = 48;

const EMPTY: &str = "no queues — try: eddy queue create NAME";

#[derive(clap::Args, Debug)]
pub struct QueueArgs {
    #[command(subcommand)]
    command: QueueCommand,
}

#[derive(clap::Subcommand, Debug)]
enum QueueCommand {
    /// Create a queue, and with it its dead-letter queue NAME-dlq
    Create(CreateArgs),
    /// List queues with their depth and consumer
    Ls(LsArgs),
    /// Remove a queue with its messages, its dead-letter queue and its consumer binding
    Rm(NameArgs),
    /// Send a message to a queue; prints its id
    Send(SendArgs),
    /// Bind the function that receives a queue's messages, or remove the binding
    Consume(ConsumeArgs),
    /// Show a queue's counters, its consumer's settings and its circuit breaker
    Stats(StatsArgs),
    /// Show a queue's oldest messages without taking them
    Peek(PeekArgs),
    /// Move the messages of a queue's dead-letter queue back into it, attempts reset
    Redrive(NameArgs),
    /// Delete every message of a queue that is not being delivered right now
    Purge(NameArgs),
}

#[derive(clap::Args, Debug)]
struct CreateArgs {
    /// Queue to create: 1-58 characters of a-z, 0-9 and -, starting with a letter
    name: String,
    /// How long a repeated idempotency key is recognised: 5m, 1h [default: the node's, 5m]
    #[arg(long = "idempotency-window", value_name = "DURATION", value_parser = units::parse_duration_ms)]
    idempotency_window_ms: Option<u64>,
}

#[derive(clap::Args, Debug)]
struct LsArgs {
    /// Print the node's JSON answer instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct NameArgs {
    /// The queue
    name: String,
}

#[derive(clap::Args, Debug)]
struct SendArgs {
    /// Queue to send to
    queue: String,
    /// The message: literal text, @FILE for the bytes of a file, or - for standard input
    /// [default: -]
    #[arg(value_name = "DATA", value_parser = Payload::parse)]
    data: Option<Payload>,
    /// Media type stored with the message and delivered as its content type
    /// [default: application/octet-stream]
    #[arg(long, value_name = "TYPE", value_parser = parse_header_value)]
    content_type: Option<String>,
    /// A second send with the same key within the queue's idempotency window enqueues nothing
    /// and answers the first message's id
    #[arg(long, value_name = "KEY", value_parser = parse_header_value)]
    idempotency_key: Option<String>,
}

#[derive(clap::Args, Debug)]
struct ConsumeArgs {
    /// Queue whose messages the function receives
    queue: String,
    /// Function that receives the messages, as CloudEvents in POST requests
    #[arg(long, value_name = "NAME", required_unless_present = "remove")]
    function: Option<String>,
    /// Messages per delivery; above 1 they arrive together as one
    /// application/cloudevents-batch+json request [default: the node's, 1]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: Option<u32>,
    /// Deliveries running at once; the node adapts its concurrency below this
    /// [default: the node's, 10]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_concurrency: Option<u32>,
    /// How long a delivery may take before its messages are delivered again: 60s, 5m; at
    /// least the function's timeout [default: the node's, 60s or the function's timeout]
    #[arg(long = "visibility-timeout", value_name = "DURATION", value_parser = units::parse_duration_ms)]
    visibility_timeout_ms: Option<u64>,
    /// Deliveries of one message before it goes to the dead-letter queue
    /// [default: the node's, 5]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_attempts: Option<u32>,
    /// Base of the exponential backoff between attempts: 1s, 500ms [default: the node's, 1s]
    #[arg(long = "backoff-base", value_name = "DURATION", value_parser = units::parse_duration_ms)]
    backoff_base_ms: Option<u64>,
    /// Longest backoff between attempts: 60s, 10m [default: the node's, 5m]
    #[arg(long = "backoff-max", value_name = "DURATION", value_parser = units::parse_duration_ms)]
    backoff_max_ms: Option<u64>,
    /// Queue that receives messages after their last failed attempt [default: QUEUE-dlq]
    #[arg(long, value_name = "QUEUE")]
    dead_letter: Option<String>,
    /// Request path the deliveries are POSTed to [default: the function's route]
    #[arg(long, value_name = "PATH")]
    path: Option<String>,
    /// Remove the queue's consumer binding instead; messages wait until a new one is bound
    #[arg(long, conflicts_with_all = [
        "function", "batch_size", "max_concurrency", "visibility_timeout_ms", "max_attempts",
        "backoff_base_ms", "backoff_max_ms", "dead_letter", "path",
    ])]
    remove: bool,
}

#[derive(clap::Args, Debug)]
struct StatsArgs {
    /// The queue
    name: String,
    /// Print the node's JSON answer instead of a summary
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct PeekArgs {
    /// The queue
    name: String,
    /// Messages to show, oldest first: 1 to 1000
    #[arg(short = 'n', long = "limit", value_name = "N", default_value_t = PEEK_DEFAULT,
          value_parser = clap::value_parser!(u32).range(1..=PEEK_MAX))]
    limit: u32,
    /// Print the node's JSON answer instead of a table
    #[arg(long)]
    json: bool,
}

pub async fn run(client: &Client, args: QueueArgs) -> Result<()> {
    let line = match args.command {
        QueueCommand::Create(args) => {
            let queue = CreateQueue {
                name: args.name,
                idempotency_window_ms: args.idempotency_window_ms,
            };
            created(&client.post(&["v1", "queues"], &queue).await?)
        }
        QueueCommand::Ls(args) => {
            return client
                .print_listing(&["v1", "queues"], &[], args.json, |list: QueueList| {
                    render_list(&list.queues)
                })
                .await;
        }
        QueueCommand::Rm(args) => {
            client.delete::<()>(&["v1", "queues", &args.name]).await?;
            format!("removed queue {}", args.name)
        }
        QueueCommand::Send(args) => send(client, args).await?,
        QueueCommand::Consume(args) => consume(client, args).await?,
        QueueCommand::Stats(args) => {
            return client
                .print_listing(&["v1", "queues", &args.name], &[], args.json, |queue| {
                    render_stats(&queue)
                })
                .await;
        }
        QueueCommand::Peek(args) => {
            let path = ["v1", "queues", &args.name, "messages"];
            let query = [("limit", args.limit.to_string())];
            let now = SystemTime::now();
            return client
                .print_listing(&path, &query, args.json, |list: MessageList| {
                    render_messages(&args.name, &list.messages, now)
                })
                .await;
        }
        QueueCommand::Redrive(args) => {
            let path = ["v1", "queues", &args.name, "redrive"];
            let answer: Redriven = client.post(&path, &serde_json::json!({})).await?;
            format!(
                "moved {} from the dead-letter queue back into {}",
                messages(answer.moved),
                args.name
            )
        }
        QueueCommand::Purge(args) => {
            let path = ["v1", "queues", &args.name, "purge"];
            let answer: Purged = client.post(&path, &serde_json::json!({})).await?;
            format!("purged {} from {}", messages(answer.purged), args.name)
        }
    };
    writeln!(std::io::stdout(), "{line}")?;
    Ok(())
}

/// Creates `queue` unless the node has it already; an existing queue is left as it is.
/// Returns the line to tell the user: what was created, or that an existing queue's
/// idempotency window differs from the one asked for.
pub(crate) async fn create_if_missing(
    client: &Client,
    queue: &CreateQueue,
) -> Result<Option<String>> {
    let existing: Option<Queue> = client
        .get_unless_missing(&["v1", "queues", &queue.name], NO_QUEUE)
        .await?;
    let Some(existing) = existing else {
        return Ok(Some(created(&client.post(&["v1", "queues"], queue).await?)));
    };
    Ok(
        match (queue.idempotency_window_ms, existing.idempotency_window_ms) {
            (Some(asked), has) if asked != has => Some(format!(
                "queue {} exists with a {} idempotency window, not {}; left as it is",
                queue.name,
                units::format_ms(has),
                units::format_ms(asked)
            )),
            _ => None,
        },
    )
}

/// Binds `consumer` to `queue`, replacing any binding it had; returns the summary line.
pub(crate) async fn bind(
    client: &Client,
    queue: &str,
    consumer: &ConsumerRequest,
) -> Result<String> {
    let bound: Consumer = client
        .put(&["v1", "queues", queue, "consumer"], consumer)
        .await?;
    Ok(bound_summary(queue, &bound))
}

async fn send(client: &Client, args: SendArgs) -> Result<String> {
    let body = args.data.unwrap_or(Payload::Stdin).read()?;
    let headers: Vec<(&str, &str)> = [
        ("content-type", args.content_type.as_deref()),
        ("idempotency-key", args.idempotency_key.as_deref()),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some((name, value?)))
    .collect();
    let sent: Sent = client
        .post_bytes(
            &["v1", "queues", &args.queue, "messages"],
            &[],
            body,
            &headers,
        )
        .await?;
    Ok(if sent.duplicate {
        format!(
            "{} (duplicate: this idempotency key was sent before; nothing new was enqueued)",
            sent.id
        )
    } else {
        sent.id
    })
}

async fn consume(client: &Client, args: ConsumeArgs) -> Result<String> {
    let Some(function) = args.function else {
        client
            .delete::<()>(&["v1", "queues", &args.queue, "consumer"])
            .await?;
        return Ok(format!(
            "queue {} has no consumer now; its messages wait for the next one",
            args.queue
        ));
    };
    let consumer = ConsumerRequest {
        function,
        batch_size: args.batch_size,
        max_concurrency: args.max_concurrency,
        visibility_timeout_ms: args.visibility_timeout_ms,
        max_attempts: args.max_attempts,
        backoff_base_ms: args.backoff_base_ms,
        backoff_max_ms: args.backoff_max_ms,
        dead_letter: args.dead_letter,
        path: args.path,
    };
    bind(client, &args.queue, &consumer).await
}

/// A value sent as an HTTP header: visible ASCII and spaces, which every server reads the
/// same way. Checked here so the mistake is named instead of surfacing as a failed request.
fn parse_header_value(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err("is empty".to_owned());
    }
    if !value.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return Err(format!(
            "`{value}` cannot be sent as an HTTP header; use visible ASCII characters"
        ));
    }
    Ok(value.to_owned())
}

/// `created queue orders (dead-letter queue orders-dlq, idempotency window 5m)`
fn created(queue: &Queue) -> String {
    let mut details = Vec::new();
    if let Some(dead_letter) = &queue.dead_letter_queue {
        details.push(format!("dead-letter queue {dead_letter}"));
    }
    details.push(format!(
        "idempotency window {}",
        units::format_ms(queue.idempotency_window_ms)
    ));
    format!("created queue {} ({})", queue.name, details.join(", "))
}

/// `queue orders → function worker (batch size 1, max concurrency 4, …)`
fn bound_summary(queue: &str, consumer: &Consumer) -> String {
    let mut details = vec![
        format!("batch size {}", consumer.batch_size),
        format!("max concurrency {}", consumer.max_concurrency),
        format!(
            "visibility timeout {}",
            units::format_ms(consumer.visibility_timeout_ms)
        ),
        format!("max attempts {}", consumer.max_attempts),
        format!(
            "backoff {} to {}",
            units::format_ms(consumer.backoff_base_ms),
            units::format_ms(consumer.backoff_max_ms)
        ),
    ];
    details.push(format!("dead letters to {}", consumer.dead_letter));
    if let Some(path) = &consumer.path {
        details.push(format!("path {path}"));
    }
    format!(
        "queue {queue} → function {} ({})",
        consumer.function,
        details.join(", ")
    )
}

fn messages(count: u64) -> String {
    match count {
        1 => "1 message".to_owned(),
        n => format!("{n} messages"),
    }
}

fn render_list(queues: &[Queue]) -> String {
    if queues.is_empty() {
        return format!("{EMPTY}\n");
    }
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|queue| {
            let (consumer, concurrency) = match &queue.consumer {
                Some(consumer) => (
                    consumer.function.clone(),
                    format!(
                        "{}/{}",
                        queue.consumer_concurrency, consumer.max_concurrency
                    ),
                ),
                None => ("-".to_owned(), "-".to_owned()),
            };
            vec![
                queue.name.clone(),
                queue.depth.to_string(),
                queue.in_flight.to_string(),
                consumer,
                concurrency,
                queue.dead_lettered.to_string(),
            ]
        })
        .collect();
    table::render(
        &[
            "NAME",
            "DEPTH",
            "IN FLIGHT",
            "CONSUMER",
            "CONCURRENCY",
            "DEAD LETTERED",
        ],
        &rows,
    )
}

/// One `label  value` line per counter and setting, values aligned.
fn render_stats(queue: &Queue) -> String {
    let or_dash = |value: Option<String>| value.unwrap_or_else(|| "-".to_owned());
    let mut lines: Vec<(&str, String)> = vec![("queue", queue.name.clone())];
    if let Some(dead_letter) = &queue.dead_letter_queue {
        lines.push(("dead-letter queue", dead_letter.clone()));
    }
    if let Some(of) = &queue.dead_letter_of {
        lines.push(("dead-letter queue of", of.clone()));
    }
    lines.extend([
        (
            "idempotency window",
            units::format_ms(queue.idempotency_window_ms),
        ),
        ("created", queue.created_at.clone()),
        ("depth", queue.depth.to_string()),
        ("ready", queue.ready.to_string()),
        ("in flight", queue.in_flight.to_string()),
        ("delayed", queue.delayed.to_string()),
        (
            "oldest message",
            or_dash(queue.oldest_age_ms.map(units::format_ms)),
        ),
        ("delivered", queue.delivered.to_string()),
        ("succeeded", queue.succeeded.to_string()),
        ("failed attempts", queue.failed_attempts.to_string()),
        ("dead-lettered", queue.dead_lettered.to_string()),
    ]);
    match &queue.consumer {
        None => lines.push((
            "consumer",
            format!(
                "none — bind one: eddy queue consume {} --function NAME",
                queue.name
            ),
        )),
        Some(consumer) => lines.extend([
            ("consumer", consumer.function.clone()),
            (
                "  path",
                consumer
                    .path
                    .clone()
                    .unwrap_or_else(|| "the function's route".to_owned()),
            ),
            ("  batch size", consumer.batch_size.to_string()),
            (
                "  concurrency",
                format!(
                    "{} now, {} max",
                    queue.consumer_concurrency, consumer.max_concurrency
                ),
            ),
            (
                "  deliveries running",
                or_dash(consumer.in_flight.map(|n| n.to_string())),
            ),
            (
                "  visibility timeout",
                units::format_ms(consumer.visibility_timeout_ms),
            ),
            ("  max attempts", consumer.max_attempts.to_string()),
            (
                "  backoff",
                format!(
                    "{} base, {} max",
                    units::format_ms(consumer.backoff_base_ms),
                    units::format_ms(consumer.backoff_max_ms)
                ),
            ),
            ("  dead letter", consumer.dead_letter.clone()),
            ("  breaker", or_dash(consumer.breaker.clone())),
        ]),
    }
    if let Some(why) = queue
        .consumer
        .as_ref()
        .and_then(|c| c.paused_by_budget.clone())
    {
        lines.push(("  paused", why));
    }
    let width = lines
        .iter()
        .map(|(label, _)| label.len())
        .max()
        .unwrap_or(0);
    lines
        .iter()
        .map(|(label, value)| format!("{label:<width$}  {value}\n"))
        .collect()
}

/// The peek table. `now` (the local clock) tells a message waiting out its backoff from one
/// ready for delivery.
fn render_messages(queue: &str, messages: &[Message], now: SystemTime) -> String {
    if messages.is_empty() {
        return format!("no messages in {queue}\n");
    }
    let rows: Vec<Vec<String>> = messages
        .iter()
        .map(|message| {
            vec![
                message.id.clone(),
                message.attempts.to_string(),
                state(message, now).to_owned(),
                message.enqueued_at.clone(),
                message.content_type.clone(),
                data_preview(message),
                message
                    .last_error
                    .as_deref()
                    .map(preview)
                    .unwrap_or_default(),
            ]
        })
        .collect();
    table::render(
        &[
            "ID",
            "ATTEMPTS",
            "STATE",
            "ENQUEUED",
            "TYPE",
            "DATA",
            "LAST ERROR",
        ],
        &rows,
    )
}

fn state(message: &Message, now: SystemTime) -> &'static str {
    if message.in_flight {
        return "in flight";
    }
    match humantime::parse_rfc3339_weak(&message.visible_at) {
        Ok(visible_at) if visible_at > now => "delayed",
        _ => "ready",
    }
}

/// Text payloads as their start; binary ones as their size.
fn data_preview(message: &Message) -> String {
    match (&message.data, &message.data_base64) {
        (Some(text), _) => preview(text),
        (None, Some(base64)) => {
            let padding = base64.bytes().rev().take_while(|&b| b == b'=').count();
            let bytes = (base64.len() - padding) * 3 / 4;
            format!("({} binary)", units::format_bytes(bytes as u64))
        }
        (None, None) => String::new(),
    }
}

/// The start of `text` on one line: control characters escaped, cut after
/// [`PREVIEW_CHARS_MAX`] characters with an ellipsis.
fn preview(text: &str) -> String {
    let mut out = String::new();
    for (shown, c) in text.chars().enumerate() {
        if shown == PREVIEW_CHARS_MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: QueueArgs,
    }

    fn parse(args: &[&str]) -> Result<QueueCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("queue").chain(args.iter().copied()))
            .map(|cli| cli.args.command)
    }

    const QUEUE: &str = r#"{"name":"orders","dead_letter_queue":"orders-dlq","dead_letter_of":null,
        "idempotency_window_ms":300000,"created_at":"2026-11-27T15:00:00.000Z",
        "depth":12,"ready":10,"in_flight":2,"delayed":0,
        "delivered":100,"succeeded":90,"failed_attempts":12,"dead_lettered":1,
        "oldest_age_ms":5300,"consumer_concurrency":3,
        "consumer":{"function":"worker","batch_size":1,"max_concurrency":4,
          "visibility_timeout_ms":60000,"max_attempts":5,"backoff_base_ms":1000,
          "backoff_max_ms":60000,"dead_letter":"orders-dlq","path":null,
          "concurrency":3,"in_flight":2,"breaker":"closed"}}"#;

    #[test]
    fn send_reads_stdin_unless_given_data() {
        let QueueCommand::Send(send) = parse(&["send", "orders"]).unwrap() else {
            panic!("not send");
        };
        assert_eq!(send.data, None);
        let QueueCommand::Send(send) = parse(&["send", "orders", "@order.json"]).unwrap() else {
            panic!("not send");
        };
        assert_eq!(send.data, Some(Payload::File("order.json".into())));
    }

    #[test]
    fn header_values_must_be_visible_ascii() {
        assert_eq!(
            parse_header_value("application/json"),
            Ok("application/json".to_owned())
        );
        assert!(
            parse_header_value("a\nb")
                .unwrap_err()
                .contains("visible ASCII")
        );
        assert!(parse_header_value("").is_err());
        assert!(parse(&["send", "q", "x", "--idempotency-key", "clé"]).is_err());
    }

    #[test]
    fn consume_flags_become_the_binding_in_milliseconds() {
        let QueueCommand::Consume(args) = parse(&[
            "consume",
            "orders",
            "--function",
            "worker",
            "--batch-size",
            "10",
            "--visibility-timeout",
            "5m",
            "--backoff-base",
            "250ms",
            "--dead-letter",
            "parked",
        ])
        .unwrap() else {
            panic!("not consume");
        };
        assert_eq!(
            (
                args.function.as_deref(),
                args.batch_size,
                args.visibility_timeout_ms,
                args.backoff_base_ms,
                args.dead_letter.as_deref(),
                args.max_attempts
            ),
            (
                Some("worker"),
                Some(10),
                Some(300_000),
                Some(250),
                Some("parked"),
                None
            )
        );
    }

    #[test]
    fn consume_needs_a_function_or_remove_but_not_both() {
        assert!(parse(&["consume", "orders"]).is_err());
        assert!(parse(&["consume", "orders", "--remove"]).is_ok());
        assert!(parse(&["consume", "orders", "--remove", "--function", "w"]).is_err());
        assert!(parse(&["consume", "orders", "--remove", "--batch-size", "2"]).is_err());
        assert!(parse(&["consume", "orders", "--function", "w", "--batch-size", "0"]).is_err());
        assert!(
            parse(&[
                "consume",
                "orders",
                "--function",
                "w",
                "--backoff-max",
                "60"
            ])
            .is_err()
        );
    }

    #[test]
    fn peek_limit_is_checked() {
        let QueueCommand::Peek(args) = parse(&["peek", "orders"]).unwrap() else {
            panic!("not peek");
        };
        assert_eq!(args.limit, 10);
        assert!(parse(&["peek", "orders", "-n", "1000"]).is_ok());
        assert!(parse(&["peek", "orders", "-n", "1001"]).is_err());
        assert!(parse(&["peek", "orders", "-n", "0"]).is_err());
    }

    #[test]
    fn create_takes_a_window() {
        let QueueCommand::Create(args) =
            parse(&["create", "orders", "--idempotency-window", "5m"]).unwrap()
        else {
            panic!("not create");
        };
        assert_eq!(args.idempotency_window_ms, Some(300_000));
    }

    #[test]
    fn queues_render_as_a_table() {
        let list: QueueList = serde_json::from_str(&format!(
            r#"{{"queues": [{QUEUE}, {{"name":"orders-dlq","dead_letter_queue":null,
                "dead_letter_of":"orders","idempotency_window_ms":300000,
                "created_at":"2026-11-27T15:00:00.000Z","depth":1,"ready":1,"in_flight":0,
                "delayed":0,"delivered":0,"succeeded":0,"failed_attempts":0,"dead_lettered":0,
                "oldest_age_ms":null,"consumer_concurrency":0,"consumer":null}}]}}"#
        ))
        .unwrap();
        assert_eq!(
            render_list(&list.queues),
            "\
NAME        DEPTH  IN FLIGHT  CONSUMER  CONCURRENCY  DEAD LETTERED
orders      12     2          worker    3/4          1
orders-dlq  1      0          -         -            0
"
        );
        assert_eq!(render_list(&[]), format!("{EMPTY}\n"));
    }

    #[test]
    fn stats_show_counters_settings_and_the_breaker() {
        let queue: Queue = serde_json::from_str(QUEUE).unwrap();
        let shown = render_stats(&queue);
        for line in [
            "queue                 orders\n",
            "dead-letter queue     orders-dlq\n",
            "idempotency window    5m\n",
            "oldest message        5s 300ms\n",
            "failed attempts       12\n",
            "consumer              worker\n",
            "  path                the function's route\n",
            "  concurrency         3 now, 4 max\n",
            "  backoff             1s base, 1m max\n",
            "  breaker             closed\n",
        ] {
            assert!(shown.contains(line), "{line:?} not in\n{shown}");
        }
    }

    #[test]
    fn summaries_say_what_the_node_did() {
        let queue: Queue = serde_json::from_str(QUEUE).unwrap();
        assert_eq!(
            created(&queue),
            "created queue orders (dead-letter queue orders-dlq, idempotency window 5m)"
        );
        assert_eq!(
            bound_summary("orders", queue.consumer.as_ref().unwrap()),
            "queue orders → function worker (batch size 1, max concurrency 4, visibility \
             timeout 1m, max attempts 5, backoff 1s to 1m, dead letters to orders-dlq)"
        );
        assert_eq!(messages(1), "1 message");
        assert_eq!(messages(0), "0 messages");
    }

    #[test]
    fn peek_shows_state_and_the_start_of_each_payload() {
        let list: MessageList = serde_json::from_str(
            r#"{"messages": [
                {"id":"m1","attempts":0,"enqueued_at":"2026-11-27T15:00:00.000Z",
                 "first_enqueued_at":"2026-11-27T15:00:00.000Z",
                 "visible_at":"2026-11-27T15:00:00.000Z","in_flight":false,
                 "content_type":"text/plain","data":"line one\nline two","last_error":null},
                {"id":"m2","attempts":2,"enqueued_at":"2026-11-27T15:00:01.000Z",
                 "first_enqueued_at":"2026-11-27T15:00:01.000Z",
                 "visible_at":"2026-11-27T15:10:00.000Z","in_flight":false,
                 "content_type":"application/octet-stream","data_base64":"AAEC",
                 "last_error":"status 500"},
                {"id":"m3","attempts":1,"enqueued_at":"2026-11-27T15:00:02.000Z",
                 "first_enqueued_at":"2026-11-27T15:00:02.000Z",
                 "visible_at":"2026-11-27T15:10:00.000Z","in_flight":true,
                 "content_type":"application/json","data":"{}","last_error":null}]}"#,
        )
        .unwrap();
        let now = humantime::parse_rfc3339("2026-11-27T15:05:00Z").unwrap();
        assert_eq!(
            render_messages("orders", &list.messages, now),
            "\
ID  ATTEMPTS  STATE      ENQUEUED                  TYPE                      DATA                LAST ERROR
m1  0         ready      2026-11-27T15:00:00.000Z  text/plain                line one\\nline two
m2  2         delayed    2026-11-27T15:00:01.000Z  application/octet-stream  (3 B binary)        status 500
m3  1         in flight  2026-11-27T15:00:02.000Z  application/json          {}
"
        );
        assert_eq!(
            render_messages("orders", &[], now + Duration::from_secs(1)),
            "no messages in orders\n"
        );
    }

    #[test]
    fn previews_are_one_short_line() {
        assert_eq!(preview("a\tb"), "a\\tb");
        let long = "x".repeat(PREVIEW_CHARS_MAX + 1);
        assert_eq!(
            preview(&long),
            format!("{}…", "x".repeat(PREVIEW_CHARS_MAX))
        );
        assert_eq!(preview(&long[1..]), long[1..]);
    }
}
