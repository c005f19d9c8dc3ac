//! Contracts of `MemberStore`: each node's latest heartbeat, by name.

use super::{Backend, open, reopen};
use crate::{NodeBeat, Result};

fn beat(name: &str, seen_at_ms: i64, in_flight: u64) -> NodeBeat {
    NodeBeat {
        name: name.to_owned(),
        version: "0.1.0".into(),
        public_url: format!("http://{name}:8080"),
        admin_addr: format!("{name}:8081"),
        started_at_ms: 5,
        seen_at_ms,
        in_flight,
        concurrency_max: 512,
        instances: 3,
        functions: 2,
        stopped: false,
    }
}

pub async fn beats_are_kept_per_node_forgotten_when_old_and_survive_a_restart<B: Backend>()
-> Result<()> {
    let (place, stores) = open::<B>().await?;
    let members = &stores.members;
    assert_eq!(members.members().await?, vec![]);
    members.beat(beat("b", 100, 1)).await?;
    members.beat(beat("a", 100, 2)).await?;
    let mut later = beat("b", 200, 7);
    later.stopped = true;
    members.beat(later.clone()).await?;
    assert_eq!(
        members.members().await?,
        vec![beat("a", 100, 2), later.clone()]
    );
    let stores = reopen(&place, stores).await?;
    assert_eq!(
        stores.members.members().await?,
        vec![beat("a", 100, 2), later.clone()]
    );
    assert_eq!(stores.members.forget_members(150).await?, 1);
    assert_eq!(stores.members.members().await?, vec![later]);
    Ok(())
}
