//! Contracts of `TickStore`: each tick of a schedule is claimed once, by one caller, and the
//! last claimed tick is kept across restarts; a tick claimed and never finished is claimed
//! again, once, when its lease has ended.

use super::{Backend, FAR, open, reopen};
use crate::Result;

pub async fn a_tick_is_claimed_once<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let store = &stores.ticks;
    assert_eq!(store.last_tick("f", 1000).await?, 1000);
    assert_eq!(store.last_tick("f", 5000).await?, 1000, "kept, not reset");
    assert!(store.claim_tick("f", 2000, FAR).await?);
    assert_eq!(store.last_tick("f", 5000).await?, 2000);
    assert!(!store.claim_tick("f", 2000, FAR).await?, "claimed twice");
    assert!(
        !store.claim_tick("f", 1500, FAR).await?,
        "an earlier tick after a later one"
    );
    assert_eq!(store.last_tick("f", 5000).await?, 2000);
    // Schedules are apart, and one never seen can be claimed straight away.
    assert!(store.claim_tick("g", 1500, FAR).await?);
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
        tasks.spawn(async move { ticks.claim_tick("f", 2000, FAR).await });
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
    assert!(stores.ticks.claim_tick("f", 2000, FAR).await?);
    let stores = reopen(&place, stores).await?;
    assert_eq!(stores.ticks.last_tick("f", 9000).await?, 2000);
    assert!(!stores.ticks.claim_tick("f", 2000, FAR).await?);
    assert!(stores.ticks.claim_tick("f", 3000, FAR).await?);
    Ok(())
}

/// A tick whose runner died (its lease ended, unfinished) is claimed again by exactly one
/// of the callers looking; a finished tick, or one still leased, never is.
pub async fn an_unfinished_tick_is_claimed_again_once_its_lease_ends<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let ticks = &stores.ticks;
    ticks.last_tick("f", 1000).await?;
    // 2000 finished; 3000 still leased; 4000 and 5000 leased until long ago (runners died).
    assert!(ticks.claim_tick("f", 2000, 0).await?);
    ticks.finish_tick("f", 2000).await?;
    assert!(ticks.claim_tick("f", 3000, FAR).await?);
    assert!(ticks.claim_tick("f", 4000, 0).await?);
    assert!(ticks.claim_tick("f", 5000, 0).await?);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let ticks = ticks.clone();
        tasks.spawn(async move { ticks.reclaim_abandoned_tick("f", FAR).await });
    }
    let mut taken: Vec<i64> = tasks
        .join_all()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect();
    taken.sort();
    assert_eq!(
        taken,
        [4000, 5000],
        "each abandoned tick once, earliest first"
    );
    assert_eq!(ticks.reclaim_abandoned_tick("f", FAR).await?, None);
    ticks.finish_tick("f", 4000).await?;
    ticks.finish_tick("f", 9999).await?;
    // Claiming again does not make a tick claimable twice, and forgetting drops them all.
    assert!(!ticks.claim_tick("f", 5000, 0).await?);
    ticks.forget_schedule("f").await?;
    assert_eq!(ticks.reclaim_abandoned_tick("f", FAR).await?, None);
    Ok(())
}

/// `overlap = skip` across nodes: a tick sees an earlier one running while that one is
/// claimed, unfinished and leased; not once it finished, nor once its lease ended (its
/// runner died), and never a later one.
pub async fn another_running_tick_is_seen_until_it_finishes_or_its_lease_ends<B: Backend>()
-> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let ticks = &stores.ticks;
    ticks.last_tick("f", 1000).await?;
    assert!(ticks.claim_tick("f", 2000, FAR).await?);
    assert!(!ticks.another_tick_running("f", 2000).await?, "itself");
    assert!(ticks.claim_tick("f", 3000, FAR).await?);
    assert!(ticks.another_tick_running("f", 3000).await?);
    assert!(
        !ticks.another_tick_running("f", 2000).await?,
        "a later tick does not hold up an earlier one"
    );
    assert!(
        !ticks.another_tick_running("g", 3000).await?,
        "another schedule's"
    );
    ticks.finish_tick("f", 2000).await?;
    assert!(!ticks.another_tick_running("f", 3000).await?);
    // A runner that died (its lease ended long ago) holds up no later tick.
    assert!(ticks.claim_tick("f", 4000, 0).await?);
    ticks.finish_tick("f", 3000).await?;
    assert!(!ticks.another_tick_running("f", 5000).await?);
    Ok(())
}
