//! `eddy rollback`: make an earlier version of a function live again.

use std::io::Write;

use anyhow::Result;

use crate::api::{RollbackRequest, RolledBack};
use crate::client::Client;

#[derive(clap::Args, Debug)]
pub struct RollbackArgs {
    /// Function to roll back
    name: String,
    /// Version to make live (see `eddy versions NAME`) [default: the one before the live one]
    version: Option<u32>,
}

pub async fn run(client: &Client, args: RollbackArgs) -> Result<()> {
    let request = RollbackRequest {
        version: args.version,
    };
    let answer: RolledBack = client
        .post(&["v1", "functions", &args.name, "rollback"], &request)
        .await?;
    writeln!(std::io::stdout(), "{}", summary(&answer))?;
    Ok(())
}

/// `hello: live version is now 2 (was 3)`
fn summary(answer: &RolledBack) -> String {
    let now = format!(
        "{}: live version is now {}",
        answer.function, answer.live_version
    );
    let mut line = match answer.previous_version {
        Some(previous) => format!("{now} (was {previous})"),
        None => now,
    };
    for note in &answer.adjusted {
        line += &format!("\nnote: {note}");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_both_versions() {
        let answer: RolledBack = serde_json::from_str(
            r#"{"function": "hello", "live_version": 2, "previous_version": 3}"#,
        )
        .unwrap();
        assert_eq!(summary(&answer), "hello: live version is now 2 (was 3)");
    }
}
