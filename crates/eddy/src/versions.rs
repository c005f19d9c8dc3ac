//! `eddy versions`: list a function's versions, newest first.

use anyhow::Result;

use crate::api::{Version, VersionList};
use crate::client::Client;
use crate::{table, units};

/// Hex digits of the digest shown: enough to tell versions apart at a glance, as `git log
/// --oneline` does.
const DIGEST_HEX_SHOWN: usize = 12;

#[derive(clap::Args, Debug)]
pub struct VersionsArgs {
    /// Function whose versions to list
    name: String,
    /// Print the node's JSON answer instead of a table
    #[arg(long)]
    json: bool,
}

pub async fn run(client: &Client, args: VersionsArgs) -> Result<()> {
    let path = ["v1", "functions", args.name.as_str(), "versions"];
    client
        .print_listing(&path, &[], args.json, |list: VersionList| {
            render(&list.versions)
        })
        .await
}

fn render(versions: &[Version]) -> String {
    let rows: Vec<Vec<String>> = versions
        .iter()
        .map(|version| {
            vec![
                version.version.to_string(),
                if version.live { "*" } else { "" }.to_owned(),
                short_digest(&version.digest).to_owned(),
                units::format_bytes(version.size_bytes),
                version.route.clone(),
                units::format_bytes(version.memory_bytes_max),
                units::format_ms(version.timeout_ms),
                version.created_at.clone(),
            ]
        })
        .collect();
    table::render(
        &[
            "VERSION", "LIVE", "DIGEST", "SIZE", "ROUTE", "MEMORY", "TIMEOUT", "CREATED",
        ],
        &rows,
    )
}

/// `sha256:0123456789abcdef…` → `0123456789ab`.
fn short_digest(digest: &str) -> &str {
    let hex = digest.split_once(':').map_or(digest, |(_, hex)| hex);
    hex.get(..DIGEST_HEX_SHOWN).unwrap_or(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_render_with_the_live_one_marked() {
        let list: VersionList = serde_json::from_str(
            r#"{"function": "hello", "live_version": 2, "versions": [
                {"version": 3, "live": false, "digest": "sha256:0123456789abcdef0123", "size_bytes": 83211,
                 "route": "/hello", "memory_bytes_max": 134217728, "timeout_ms": 30000,
                 "env_keys": [], "created_at": "2026-11-23T11:00:00Z"},
                {"version": 2, "live": true, "digest": "sha256:fedcba9876543210fedc", "size_bytes": 1048576,
                 "route": "/hello", "memory_bytes_max": 67108864, "timeout_ms": 500,
                 "env_keys": ["GREETING"], "created_at": "2026-11-22T10:00:00Z"}]}"#,
        )
        .unwrap();
        assert_eq!(
            render(&list.versions),
            "\
VERSION  LIVE  DIGEST        SIZE      ROUTE   MEMORY   TIMEOUT  CREATED
3              0123456789ab  81.3 KiB  /hello  128 MiB  30s      2026-11-23T11:00:00Z
2        *     fedcba987654  1 MiB     /hello  64 MiB   500ms    2026-11-22T10:00:00Z
"
        );
    }

    #[test]
    fn short_digests_tolerate_odd_input() {
        assert_eq!(short_digest("sha256:abc"), "abc");
        assert_eq!(short_digest("0123456789abcdef"), "0123456789ab");
    }
}
