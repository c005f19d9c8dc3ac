//! `eddy token`: scoped credentials of the control API — create (the token is printed once),
//! list (never the token), revoke.

use anyhow::Result;

use crate::api::{CreateToken, TokenCreated, TokenInfo, TokenList};
use crate::client::Client;
use crate::table;

#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(clap::Subcommand, Debug)]
enum TokenCommand {
    /// Make a token; it is printed once and only its hash is kept
    Create(CreateArgs),
    /// List tokens: names, roles, scopes, creation, expiry and last use (never the token)
    Ls {
        /// Print the node's JSON answer instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token on every node that shares the store
    Rm {
        /// The token's name
        name: String,
    },
}

#[derive(clap::Args, Debug)]
struct CreateArgs {
    /// A name for the token (a-z, 0-9 and `-`): what `eddy token ls` and `eddy audit` show
    name: String,
    /// What it may do: admin, deployer, reader or publisher (see docs/security.md)
    #[arg(long)]
    role: String,
    /// Only this function (repeat for more); without it, every function
    #[arg(long = "function", value_name = "F")]
    functions: Vec<String>,
    /// Only this queue (repeat for more); without it, every queue
    #[arg(long = "queue", value_name = "Q")]
    queues: Vec<String>,
    /// Only this secret may be bound to functions (repeat for more); without it, every one
    #[arg(long = "secret", value_name = "S")]
    secrets: Vec<String>,
    /// The token stops working after this long, e.g. `30d`, `12h`
    #[arg(long, value_parser = eddy_parse::units::parse_duration_ms)]
    expires: Option<u64>,
    /// Print the node's JSON answer (with the token) instead of the token alone
    #[arg(long)]
    json: bool,
}

pub async fn run(client: &Client, args: TokenArgs) -> Result<()> {
    match args.command {
        TokenCommand::Create(args) => {
            let request = CreateToken {
                name: args.name,
                role: args.role,
                functions: args.functions,
                queues: args.queues,
                secrets: args.secrets,
                expires_in_ms: args.expires,
            };
            if args.json {
                let answer: serde_json::Value = client.post(&["v1", "tokens"], &request).await?;
                println!("{}", serde_json::to_string_pretty(&answer)?);
                return Ok(());
            }
            let created: TokenCreated = client.post(&["v1", "tokens"], &request).await?;
            eprintln!(
                "token `{}` ({}{}) — shown once; only its hash is kept",
                created.info.name,
                created.info.role,
                created
                    .info
                    .expires_at
                    .as_deref()
                    .map(|at| format!(", expires {at}"))
                    .unwrap_or_default()
            );
            println!("{}", created.token);
            Ok(())
        }
        TokenCommand::Ls { json } => {
            client
                .print_listing(&["v1", "tokens"], &[], json, |list: TokenList| {
                    render(&list.tokens)
                })
                .await
        }
        TokenCommand::Rm { name } => {
            let _: serde_json::Value = client.delete(&["v1", "tokens", &name]).await?;
            println!("revoked token `{name}`");
            Ok(())
        }
    }
}

fn scope(names: &[String]) -> String {
    if names.is_empty() {
        "*".to_owned()
    } else {
        names.join(",")
    }
}

fn render(tokens: &[TokenInfo]) -> String {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.role.clone(),
                scope(&t.functions),
                scope(&t.queues),
                scope(&t.secrets),
                if t.bootstrap {
                    "(bootstrap)".to_owned()
                } else {
                    dash(&t.created_at)
                },
                match (&t.expires_at, t.expired) {
                    (Some(at), true) => format!("{at} (expired)"),
                    (at, _) => dash(at),
                },
                dash(&t.last_used_at),
            ]
        })
        .collect();
    table::render(
        &[
            "NAME",
            "ROLE",
            "FUNCTIONS",
            "QUEUES",
            "SECRETS",
            "CREATED",
            "EXPIRES",
            "LAST USED",
        ],
        &rows,
    )
}
