//! `eddy rm`: remove a function, its versions and its logs.

use std::io::Write;

use anyhow::Result;

use crate::api::Removed;
use crate::client::Client;

#[derive(clap::Args, Debug)]
pub struct RmArgs {
    /// Function to remove; it stops serving at once
    name: String,
}

pub async fn run(client: &Client, args: RmArgs) -> Result<()> {
    let removed: Removed = client.delete(&["v1", "functions", &args.name]).await?;
    writeln!(std::io::stdout(), "removed {}", removed.removed)?;
    Ok(())
}
