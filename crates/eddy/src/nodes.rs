//! `eddy nodes`: the nodes that share the store, as their heartbeats tell.

use anyhow::Result;

use crate::api::{Member, NodeList};
use crate::client::Client;
use crate::{table, units};

#[derive(clap::Args, Debug)]
pub struct NodesArgs {
    /// Print the node's JSON answer instead of a table
    #[arg(long)]
    json: bool,
}

pub async fn run(client: &Client, args: NodesArgs) -> Result<()> {
    const PATH: [&str; 2] = ["v1", "nodes"];
    client
        .print_listing(&PATH, &[], args.json, |list: NodeList| render(&list.nodes))
        .await
}

fn render(nodes: &[Member]) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|node| {
            let name = if node.this {
                format!("{} *", node.name)
            } else {
                node.name.clone()
            };
            vec![
                name,
                node.state.clone(),
                node.version.clone(),
                format!("{}/{}", node.in_flight, node.concurrency_max),
                node.instances.to_string(),
                node.functions.to_string(),
                format!("{} ago", units::format_ms(node.seen_ms_ago)),
                node.public_url.clone(),
            ]
        })
        .collect();
    let mut out = table::render(
        &[
            "NAME",
            "STATE",
            "VERSION",
            "IN-FLIGHT",
            "INSTANCES",
            "FUNCTIONS",
            "SEEN",
            "URL",
        ],
        &rows,
    );
    out.push_str("* the node that answered\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_render_as_a_table_with_the_answering_one_marked() {
        let list: NodeList = serde_json::from_str(
            r#"{"nodes": [
                {"name": "a", "state": "live", "this": true, "version": "0.1.0",
                 "public_url": "http://a:8080", "admin_addr": "a:8081",
                 "started_at": "x", "seen_at": "y", "seen_ms_ago": 1200, "in_flight": 3,
                 "concurrency_max": 512, "instances": 4, "functions": 2},
                {"name": "b", "state": "gone", "this": false, "version": "0.1.0",
                 "public_url": "http://b:8080", "admin_addr": "b:8081",
                 "started_at": "x", "seen_at": "y", "seen_ms_ago": 60000, "in_flight": 0,
                 "concurrency_max": 512, "instances": 0, "functions": 2}
            ]}"#,
        )
        .unwrap();
        let text = render(&list.nodes);
        assert!(text.contains("a *"), "{text}");
        assert!(text.contains("live") && text.contains("gone"), "{text}");
        assert!(text.contains("3/512"), "{text}");
    }
}
