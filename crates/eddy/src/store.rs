//! `eddy store copy`: moves a single node's state (its SQLite files in the state
//! directory) into a Postgres database, for a node that grows into a cluster.

use std::path::Path;

/// The node's state in other stores.
#[derive(clap::Args, Debug)]
pub struct StoreArgs {
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(clap::Subcommand, Debug)]
enum StoreCommand {
    /// Copy this node's state (--state-dir; stop the node first) into an empty Postgres
    /// store: functions with every version, the admin token, logs, metering, price sheets,
    /// budgets, queues with their messages, cron ticks
    Copy {
        /// The Postgres store, as `eddy serve --store` takes it
        #[arg(long, value_name = "URL", env = "EDDY_STORE")]
        to: String,
        /// The schema in it (created if missing) [default: the connection's]
        #[arg(long, value_name = "SCHEMA")]
        schema: Option<String>,
    },
}

pub async fn run(state_dir: &Path, args: StoreArgs) -> anyhow::Result<()> {
    let StoreCommand::Copy { to, schema } = args.command;
    let copied = eddy_node::copy_to_postgres(state_dir, to, schema).await?;
    println!(
        "copied {} functions ({} versions), {} invocation records, {} minutes of metering, \
         {} price sheets, {} budgets, {} queues with {} messages, {} schedules, {} tokens, \
         {} secret versions (give the cluster's nodes the same secrets key), {} audit entries{}",
        copied.functions,
        copied.versions,
        copied.invocations,
        copied.rollup_minutes,
        copied.price_sheets,
        copied.budgets,
        copied.queues,
        copied.messages,
        copied.schedules,
        copied.tokens,
        copied.secrets,
        copied.audit_entries,
        if copied.token {
            "; the admin token is now the cluster's"
        } else {
            ""
        }
    );
    Ok(())
}
