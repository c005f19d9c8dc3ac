//! Contracts of `TickStore`: each tick of a schedule is claimed once, by one caller, and the
//! last claimed tick is kept across restarts.

use super::{Backend, open, reopen};
use crate::Result;

pub async fn a_tick_is_claimed_once<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let store = &stores.ticks;
    assert_eq!(store.last_tick("f", 1000).await?, 1000);
    assert_eq!(store.last_tick("f", 5000).await?, 1000, "kept, not reset");
    assert!(store.claim_tick("f", 2000).await?);
    assert_eq!(store.last_tick("f", 5000).await?, 2000);
    assert!(!store.claim_tick("f", 2000).await?, "claimed twice");
    assert!(
        !store.claim_tick("f", 1500).await?,
        "an earlier tick after a later one"
    );
    assert_eq!(store.last_tick("f", 5000).await?, 2000);
    // Schedules are apart, and one never seen can be claimed straight away.
    assert!(store.claim_tick("g", 1500).await?);
    assert_eq!(store.last_tick("g", 9000).await?, 1500);
    store.forget_schedule("f").await?;
    assert_eq!(store.last_tick("f", 9000).await?, 9000);
    assert_eq!(store.last_tick("g", 9000).await?, 1500);
    store.forget_schedule("never seen").await?;
    Ok(())
}

/// However many callers race for one tick (nodes, or a node and its restart), one runs it.
pub async fn concurrent_claims_of_a_tick_let_one_win<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    stores.ticks.last_tick("f", 1000).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let ticks = stores.ticks.clone();
        tasks.spawn(async move { ticks.claim_tick("f", 2000).await });
    }
    let won = tasks
        .join_all()
        .await
        .into_iter()
        .collect::<Result<Vec<bool>>>()?;
    assert_eq!(won.iter().filter(|won| **won).count(), 1, "{won:?}");
    assert_eq!(stores.ticks.last_tick("f", 0).await?, 2000);
    Ok(())
}

pub async fn ticks_survive_a_restart<B: Backend>() -> Result<()> {
    let (place, stores) = open::<B>().await?;
    stores.ticks.last_tick("f", 1000).await?;
    assert!(stores.ticks.claim_tick("f", 2000).await?);
    let stores = reopen(&place, stores).await?;
    assert_eq!(stores.ticks.last_tick("f", 9000).await?, 2000);
    assert!(!stores.ticks.claim_tick("f", 2000).await?);
    assert!(stores.ticks.claim_tick("f", 3000).await?);
    Ok(())
}
