//! `eddy ls`: list deployed functions.

use anyhow::Result;

use crate::api::{Function, FunctionList};
use crate::client::Client;
use crate::{table, units};

const EMPTY: &str = "no functions deployed — try: eddy deploy NAME FILE";

#[derive(clap::Args, Debug)]
pub struct LsArgs {
    /// Print the node's JSON answer instead of a table
    #[arg(long)]
    json: bool,
}

pub async fn run(client: &Client, args: LsArgs) -> Result<()> {
    const PATH: [&str; 2] = ["v1", "functions"];
    client
        .print_listing(&PATH, &[], args.json, |list: FunctionList| {
            render(&list.functions)
        })
        .await
}

fn render(functions: &[Function]) -> String {
    if functions.is_empty() {
        return format!("{EMPTY}\n");
    }
    let rows: Vec<Vec<String>> = functions
        .iter()
        .map(|function| {
            vec![
                function.name.clone(),
                function.route.clone(),
                function.live_version.to_string(),
                units::format_bytes(function.memory_bytes_max),
                units::format_ms(function.timeout_ms),
                function.updated_at.clone(),
                function.url.clone(),
            ]
        })
        .collect();
    table::render(
        &[
            "NAME", "ROUTE", "VERSION", "MEMORY", "TIMEOUT", "UPDATED", "URL",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_render_as_a_table() {
        let list: FunctionList = serde_json::from_str(
            r#"{"functions": [
                {"name": "hello", "route": "/hello", "url": "http://127.0.0.1:8080/hello",
                 "live_version": 3, "versions": 3, "digest": "sha256:ab", "memory_bytes_max": 134217728,
                 "timeout_ms": 30000, "updated_at": "2026-11-23T11:00:00Z"},
                {"name": "api-v2", "route": "/api", "url": "http://127.0.0.1:8080/api",
                 "live_version": 12, "versions": 14, "digest": "sha256:cd", "memory_bytes_max": 67108864,
                 "timeout_ms": 2500, "updated_at": "2026-11-24T09:30:00Z"}]}"#,
        )
        .unwrap();
        assert_eq!(
            render(&list.functions),
            "\
NAME    ROUTE   VERSION  MEMORY   TIMEOUT   UPDATED               URL
hello   /hello  3        128 MiB  30s       2026-11-23T11:00:00Z  http://127.0.0.1:8080/hello
api-v2  /api    12       64 MiB   2s 500ms  2026-11-24T09:30:00Z  http://127.0.0.1:8080/api
"
        );
    }

    #[test]
    fn no_functions_suggests_a_deploy() {
        assert_eq!(
            render(&[]),
            "no functions deployed — try: eddy deploy NAME FILE\n"
        );
    }
}
