//! `eddy ws`: the WebSocket connections a node holds for functions (docs/websockets.md). List
//! a function's open connections, and send a message to every connection in a channel.

use std::io::Write;

use anyhow::{Result, anyhow};
use clap::builder::NonEmptyStringValueParser;

use crate::api::{Broadcast, WebSocketList};
use crate::client::Client;
use crate::payload::Payload;
use crate::{table, units};

#[derive(clap::Args, Debug)]
pub struct WsArgs {
    #[command(subcommand)]
    command: WsCommand,
}

#[derive(clap::Subcommand, Debug)]
enum WsCommand {
    /// List a function's open WebSocket connections with their channels
    Ls(LsArgs),
    /// Send a message to every WebSocket connection in one of a function's channels; prints
    /// how many got it
    Send(SendArgs),
}

#[derive(clap::Args, Debug)]
struct LsArgs {
    /// Function whose connections to list
    function: String,
    /// Print the node's JSON answer instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct SendArgs {
    /// Function whose channel it is (each function has channels of its own)
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    function: String,
    /// Channel to send to: the function's connections that joined it
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    channel: String,
    /// The message: literal text, @FILE for the bytes of a file, or - for standard input
    /// [default: -]
    #[arg(value_name = "DATA", value_parser = Payload::parse)]
    data: Option<Payload>,
    /// Send a binary message [default: a text message, which must be UTF-8]
    #[arg(long)]
    binary: bool,
}

pub async fn run(client: &Client, args: WsArgs) -> Result<()> {
    match args.command {
        WsCommand::Ls(args) => {
            let path = ["v1", "functions", &args.function, "websockets"];
            client
                .print_listing(&path, &[], args.json, |list: WebSocketList| render(&list))
                .await
        }
        WsCommand::Send(args) => {
            let line = send(client, args).await?;
            writeln!(std::io::stdout(), "{line}")?;
            Ok(())
        }
    }
}

async fn send(client: &Client, args: SendArgs) -> Result<String> {
    let body = args.data.unwrap_or(Payload::Stdin).read()?;
    let query = if args.binary {
        vec![("binary", "true".to_owned())]
    } else {
        check_text(&body)?;
        Vec::new()
    };
    let path = [
        "v1",
        "functions",
        &args.function,
        "websockets",
        "channels",
        &args.channel,
        "messages",
    ];
    let sent: Broadcast = client.post_bytes(&path, &query, body, &[]).await?;
    Ok(sent_summary(&sent))
}

/// A text message must be UTF-8 (RFC 6455); checked here so the fix is named in the CLI's
/// terms rather than the API's.
fn check_text(body: &[u8]) -> Result<()> {
    std::str::from_utf8(body).map(drop).map_err(|err| {
        anyhow!(
            "the message is not UTF-8 text ({err}) — pass --binary to send it as a binary message"
        )
    })
}

/// `sent to 3 connections in room`
fn sent_summary(sent: &Broadcast) -> String {
    let connections = match sent.sent {
        1 => "1 connection".to_owned(),
        n => format!("{n} connections"),
    };
    format!("sent to {connections} in {}", sent.channel)
}

/// The connection table, then the time closed connections were held open.
fn render(list: &WebSocketList) -> String {
    let connections = if list.connections.is_empty() {
        format!(
            "no open WebSocket connections to {} (a function takes them when deployed with \
             --websocket)\n",
            list.function
        )
    } else {
        let rows: Vec<Vec<String>> = list
            .connections
            .iter()
            .map(|connection| {
                let channels = if connection.channels.is_empty() {
                    "-".to_owned()
                } else {
                    connection.channels.join(",")
                };
                vec![
                    connection.id.clone(),
                    connection.opened_at.clone(),
                    channels,
                    units::format_bytes(connection.queued_bytes),
                ]
            })
            .collect();
        table::render(&["ID", "OPENED", "CHANNELS", "QUEUED"], &rows)
    };
    format!(
        "{connections}closed connections: {:.1} connection-seconds since the node started\n",
        list.connection_seconds_closed
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: WsArgs,
    }

    fn parse(args: &[&str]) -> Result<WsCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("ws").chain(args.iter().copied()))
            .map(|cli| cli.args.command)
    }

    #[test]
    fn send_takes_a_function_a_channel_data_and_binary() {
        let WsCommand::Send(send) = parse(&["send", "chat", "room"]).unwrap() else {
            panic!("not send");
        };
        assert_eq!(
            (
                send.function.as_str(),
                send.channel.as_str(),
                send.data,
                send.binary
            ),
            ("chat", "room", None, false)
        );
        let WsCommand::Send(send) =
            parse(&["send", "chat", "room", "@frame.bin", "--binary"]).unwrap()
        else {
            panic!("not send");
        };
        assert_eq!(send.data, Some(Payload::File("frame.bin".into())));
        assert!(send.binary);
        assert!(parse(&["send", "chat", "", "hi"]).is_err());
        assert!(parse(&["send", "", "room", "hi"]).is_err());
        assert!(parse(&["send", "chat"]).is_err());
    }

    #[test]
    fn ls_needs_a_function() {
        let WsCommand::Ls(ls) = parse(&["ls", "chat", "--json"]).unwrap() else {
            panic!("not ls");
        };
        assert_eq!((ls.function.as_str(), ls.json), ("chat", true));
        assert!(parse(&["ls"]).is_err());
    }

    #[test]
    fn text_messages_must_be_utf8() {
        assert!(check_text("héllo".as_bytes()).is_ok());
        let err = check_text(&[b'h', 0xff]).unwrap_err().to_string();
        assert!(err.starts_with("the message is not UTF-8 text ("), "{err}");
        assert!(
            err.ends_with("— pass --binary to send it as a binary message"),
            "{err}"
        );
    }

    #[test]
    fn the_summary_counts_connections() {
        let sent = |json: &str| sent_summary(&serde_json::from_str(json).unwrap());
        assert_eq!(
            sent(r#"{"channel": "room", "sent": 100}"#),
            "sent to 100 connections in room"
        );
        assert_eq!(
            sent(r#"{"channel": "room", "sent": 1}"#),
            "sent to 1 connection in room"
        );
        assert_eq!(
            sent(r#"{"channel": "lobby", "sent": 0}"#),
            "sent to 0 connections in lobby"
        );
    }

    #[test]
    fn connections_render_as_a_table() {
        let list: WebSocketList = serde_json::from_str(
            r#"{"function": "chat", "connections": [
                {"id": "9f2c0d1e4b5a6c7d", "opened_at": "2026-11-27T16:00:00.000Z",
                 "channels": ["lobby", "room"], "queued_bytes": 0},
                {"id": "0a1b2c3d4e5f6071", "opened_at": "2026-11-27T16:00:05.250Z",
                 "channels": [], "queued_bytes": 81920, "added_later": true}],
                "connection_seconds_closed": 12.5}"#,
        )
        .unwrap();
        assert_eq!(
            render(&list),
            "\
ID                OPENED                    CHANNELS    QUEUED
9f2c0d1e4b5a6c7d  2026-11-27T16:00:00.000Z  lobby,room  0 B
0a1b2c3d4e5f6071  2026-11-27T16:00:05.250Z  -           80 KiB
closed connections: 12.5 connection-seconds since the node started
"
        );
    }

    #[test]
    fn no_connections_says_how_a_function_gets_them() {
        let list: WebSocketList = serde_json::from_str(
            r#"{"function": "chat", "connections": [], "connection_seconds_closed": 0}"#,
        )
        .unwrap();
        assert_eq!(
            render(&list),
            "no open WebSocket connections to chat (a function takes them when deployed with \
             --websocket)\nclosed connections: 0.0 connection-seconds since the node started\n"
        );
    }
}
