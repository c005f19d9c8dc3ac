//! `eddy`: the command line. `eddy serve` runs a node; every other subcommand drives a node
//! through its control API (docs/api.md).
//!
//! Error contract: a failure prints exactly one line, `error: <what is wrong> — <what to do>`,
//! to stderr and exits 1. Usage errors are clap's and exit 2.

mod api;
mod audit;
mod budget;
mod build;
mod chart;
mod client;
mod cost;
mod deploy;
mod dev;
mod logs;
mod ls;
mod manifest;
mod new;
mod nodes;
mod payload;
mod queue;
mod rm;
mod rollback;
mod secret;
mod serve;
mod sheets;
mod stats;
mod store;
mod table;
mod token;
mod units;
mod versions;
mod wit;
mod ws;

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand};
use reqwest::Url;

use crate::client::Client;

/// The control API a fresh `eddy serve` listens on (its default `--admin`), so the CLI works
/// against a local node with no flags.
const DEFAULT_SERVER: &str = "http://127.0.0.1:8081";

/// Where `eddy serve` keeps its state when started from the same directory with no flags;
/// the CLI reads the node's `admin-token` from here.
const DEFAULT_STATE_DIR: &str = "./.eddy";

/// Help heading that keeps the node-selection options apart from each subcommand's own.
const GLOBAL_OPTIONS: &str = "Global options";

const QUICK_START: &str = "\
Quick start:
  eddy serve &                        # a node: public on :8080, control API on :8081
  eddy new hello --lang python        # a function project (or --lang rust, --lang js)
  cd hello && eddy deploy             # build it and deploy it; it serves /hello
  eddy dev                            # redeploy on every change, print the invocations
  curl http://127.0.0.1:8080/hello
  eddy logs hello --follow";

#[derive(Parser, Debug)]
#[command(
    name = "eddy",
    version,
    about = "eddy — self-hosted serverless for WebAssembly HTTP components",
    after_help = QUICK_START
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct GlobalArgs {
    /// Control API of the node to talk to (http:// or https://)
    #[arg(long, env = "EDDY_SERVER", value_name = "URL", default_value = DEFAULT_SERVER,
          value_parser = parse_server, global = true, help_heading = GLOBAL_OPTIONS)]
    server: Url,
    /// Admin token for the control API [default: the contents of <STATE_DIR>/admin-token]
    #[arg(long, env = "EDDY_TOKEN", value_name = "TOKEN", hide_env_values = true,
          global = true, help_heading = GLOBAL_OPTIONS)]
    token: Option<String>,
    /// Node state directory: `eddy serve` keeps its data here, and the other commands read the
    /// node's admin-token from it (by default from ./.eddy here or in the nearest parent
    /// directory that has one)
    #[arg(long, env = "EDDY_STATE_DIR", value_name = "DIR", default_value = DEFAULT_STATE_DIR,
          global = true, help_heading = GLOBAL_OPTIONS)]
    state_dir: PathBuf,
    /// PEM file of a CA (or the node's own certificate) to trust for https:// besides the
    /// system's roots: for a node with a private CA or a self-signed certificate
    #[arg(long, env = "EDDY_CA_CERT", value_name = "FILE", global = true,
          help_heading = GLOBAL_OPTIONS)]
    ca_cert: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run an eddy node: serve deployed functions and the control API
    Serve(serve::ServeArgs),
    /// Create a function project: source, eddy.toml and what its toolchain needs
    New(new::NewArgs),
    /// Move this node's state into a Postgres store, for a cluster (stop the node first)
    Store(store::StoreArgs),
    /// Build the components of the functions in eddy.toml that have a `lang`
    Build(build::BuildArgs),
    #[command(flatten)]
    Api(ApiCommand),
}

/// The subcommands that are clients of a node's control API.
#[derive(Subcommand, Debug)]
enum ApiCommand {
    /// Deploy a component as a new version of a function, or every function in eddy.toml
    Deploy(Box<deploy::DeployArgs>),
    /// List deployed functions
    Ls(ls::LsArgs),
    /// List the nodes that share this node's store, their load and when each was last seen
    Nodes(nodes::NodesArgs),
    /// Remove a function with all its versions and logs; it stops serving at once
    Rm(rm::RmArgs),
    /// List a function's versions, newest first
    Versions(versions::VersionsArgs),
    /// Make an earlier version of a function live again
    Rollback(rollback::RollbackArgs),
    /// Show a function's recent invocations and their output
    Logs(logs::LogsArgs),
    /// Show a function's metered invocations: counts, latency, CPU versus wall time; without
    /// a name, a line for every function
    Stats(stats::StatsArgs),
    /// Deploy the functions in eddy.toml, then redeploy on every change and print invocations
    Dev(dev::DevArgs),
    /// Durable queues: create them, send messages, bind a consumer function, inspect them
    Queue(queue::QueueArgs),
    /// WebSocket connections the node holds: list a function's, send to a channel's
    Ws(ws::WsArgs),
    /// What the metered traffic cost under each price sheet, break-even and forecasts
    Cost(cost::CostArgs),
    /// Price sheets (AWS Lambda, Vercel, a dedicated machine, yours): list, add, remove
    Sheets(sheets::SheetsArgs),
    /// Monthly budgets with alerts and an optional hard cap
    Budget(budget::BudgetArgs),
    /// Scoped tokens of the control API: create, list, revoke
    Token(token::TokenArgs),
    /// Changes made through the control API: who, when, from where, and how each ended
    Audit(audit::AuditArgs),
    /// Secrets functions take as environment variables: set, list, remove, re-key
    Secret(secret::SecretArgs),
}

fn main() -> ExitCode {
    // The node's compile worker (`eddy serve` runs it to compile a deployed component within
    // limits): before clap, and before the async runtime starts threads the limits count.
    let mut args = std::env::args_os().skip(1);
    if let (Some(first), None) = (args.next(), args.next())
        && first == eddy_runtime::compiler::WORKER_SUBCOMMAND
    {
        return eddy_runtime::compiler::worker_main();
    }
    cli_main()
}

#[tokio::main]
async fn cli_main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Api(ApiCommand::Deploy(args)) = &cli.command
        && let Err(problem) = args.check_usage()
    {
        usage_error("deploy", problem);
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        // `eddy logs --follow | head` closes our stdout; that is the reader being done, not a fault.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", one_line(&format!("{err:#}")));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let GlobalArgs {
        server,
        token,
        state_dir,
        ca_cert,
    } = cli.global;
    let command = match cli.command {
        Command::Serve(args) => return serve::run(state_dir, args).await,
        Command::New(args) => return new::run(args),
        Command::Store(args) => return store::run(&state_dir, args).await,
        // Builds run toolchains for minutes; they block this thread, which waits on nothing else.
        Command::Build(args) => return build::run(args),
        Command::Api(command) => command,
    };
    // The default state directory is looked for upwards too: a function project made inside
    // the directory a node runs from (`eddy new` next to `scripts/demo`) finds its token.
    let state_dir = if token.is_none() && state_dir == Path::new(DEFAULT_STATE_DIR) {
        client::find_state_dir(Path::new("."), Path::new(DEFAULT_STATE_DIR)).unwrap_or(state_dir)
    } else {
        state_dir
    };
    let token = client::resolve_token(token, &state_dir)?;
    let client = Client::new(server, token, state_dir, ca_cert.as_deref())?;
    match command {
        ApiCommand::Deploy(args) => deploy::run(&client, *args).await,
        ApiCommand::Ls(args) => ls::run(&client, args).await,
        ApiCommand::Nodes(args) => nodes::run(&client, args).await,
        ApiCommand::Rm(args) => rm::run(&client, args).await,
        ApiCommand::Versions(args) => versions::run(&client, args).await,
        ApiCommand::Rollback(args) => rollback::run(&client, args).await,
        ApiCommand::Logs(args) => logs::run(&client, args).await,
        ApiCommand::Stats(args) => stats::run(&client, args).await,
        ApiCommand::Dev(args) => dev::run(client, args).await,
        ApiCommand::Queue(args) => queue::run(&client, args).await,
        ApiCommand::Ws(args) => ws::run(&client, args).await,
        ApiCommand::Cost(args) => cost::run(&client, args).await,
        ApiCommand::Sheets(args) => sheets::run(&client, args).await,
        ApiCommand::Budget(args) => budget::run(&client, args).await,
        ApiCommand::Token(args) => token::run(&client, args).await,
        ApiCommand::Audit(args) => audit::run(&client, args).await,
        ApiCommand::Secret(args) => secret::run(&client, args).await,
    }
}

/// Reports a usage problem that clap's declarative rules cannot express, in clap's format
/// and with its exit code (2), showing the subcommand's usage line.
fn usage_error(subcommand: &str, problem: String) -> ! {
    let mut cli = Cli::command();
    cli.build();
    let sub = cli
        .find_subcommand_mut(subcommand)
        .expect("usage_error is called with a subcommand that exists");
    sub.error(ErrorKind::MissingRequiredArgument, problem)
        .exit()
}

fn parse_server(value: &str) -> Result<Url, String> {
    let url = Url::parse(value)
        .map_err(|err| format!("`{value}` is not a URL ({err}); expected e.g. {DEFAULT_SERVER}"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!(
            "`{value}` uses {}://; the control API speaks http:// or https://, e.g. {DEFAULT_SERVER}",
            url.scheme()
        ));
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(format!(
            "`{value}` has no host; expected e.g. {DEFAULT_SERVER}"
        ));
    }
    Ok(url)
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|cause| cause.downcast_ref::<io::Error>())
        .any(|io_err| io_err.kind() == io::ErrorKind::BrokenPipe)
}

/// The error contract promises one line; messages relayed from the node or from libraries may
/// carry newlines, so they are folded.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn server_must_be_an_http_url() {
        assert!(parse_server("http://127.0.0.1:8081").is_ok());
        assert!(parse_server("http://node.internal:8081/eddy/").is_ok());
        assert!(parse_server("https://node:8081").is_ok());
        assert!(
            parse_server("ftp://node:8081")
                .unwrap_err()
                .contains("http:// or https://")
        );
        assert!(parse_server("127.0.0.1:8081").is_err());
        assert!(parse_server("localhost").is_err());
    }

    #[test]
    fn messages_are_folded_to_one_line() {
        assert_eq!(
            one_line("bad component:\n  missing export\n"),
            "bad component: missing export"
        );
    }

    #[test]
    fn deploy_takes_both_name_and_file_or_neither() {
        let parse = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Command::Api(ApiCommand::Deploy(deploy)) => deploy.check_usage(),
            other => panic!("parsed as {other:?}"),
        };
        assert!(parse(&["eddy", "deploy", "hello", "hello.wasm"]).is_ok());
        assert!(parse(&["eddy", "deploy"]).is_ok());
        assert!(parse(&["eddy", "deploy", "-f", "other/eddy.toml"]).is_ok());
        assert!(
            parse(&["eddy", "deploy", "hello"])
                .unwrap_err()
                .contains("FILE")
        );
        assert!(
            parse(&["eddy", "deploy", "--memory", "64MiB"])
                .unwrap_err()
                .contains("--memory")
        );
        assert!(parse(&["eddy", "deploy", "hello", "hello.wasm", "-f", "eddy.toml"]).is_err());
    }

    #[test]
    fn global_options_go_anywhere() {
        let cli = Cli::try_parse_from(["eddy", "ls", "--server", "http://10.0.0.2:9000"]).unwrap();
        assert_eq!(cli.global.server.as_str(), "http://10.0.0.2:9000/");
    }
}
