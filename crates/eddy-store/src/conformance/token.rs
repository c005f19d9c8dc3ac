//! Contracts of `TokenStore`: the admin token's hash is set, replaced and kept; the first of
//! several nodes to create one wins.

use super::{Backend, open, reopen};
use crate::Result;

pub async fn admin_token_hash_is_set_replaced_and_survives_a_restart<B: Backend>() -> Result<()> {
    let (place, stores) = open::<B>().await?;
    assert_eq!(stores.token.admin_token_hash().await?, None);
    stores.token.set_admin_token_hash("sha256:aaaa").await?;
    assert_eq!(
        stores.token.admin_token_hash().await?.as_deref(),
        Some("sha256:aaaa")
    );
    stores.token.set_admin_token_hash("sha256:bbbb").await?;
    assert_eq!(
        stores.token.admin_token_hash().await?.as_deref(),
        Some("sha256:bbbb")
    );
    let stores = reopen(&place, stores).await?;
    assert_eq!(
        stores.token.admin_token_hash().await?.as_deref(),
        Some("sha256:bbbb")
    );
    Ok(())
}

/// Nodes of a cluster starting at once each try to create the token: one hash is stored, its
/// caller alone is told so, and a hash stored already is never replaced this way.
pub async fn the_first_admin_token_hash_wins<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let token = stores.token.clone();
        tasks.spawn(async move {
            let hash = format!("sha256:{i}");
            let won = token.init_admin_token_hash(&hash).await?;
            Ok::<_, crate::StoreError>((hash, won))
        });
    }
    let tries = tasks
        .join_all()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    let winners: Vec<&String> = tries
        .iter()
        .filter(|(_, won)| *won)
        .map(|(h, _)| h)
        .collect();
    assert_eq!(winners.len(), 1, "{tries:?}");
    assert_eq!(
        stores.token.admin_token_hash().await?.as_ref(),
        Some(winners[0])
    );
    assert!(!stores.token.init_admin_token_hash("sha256:late").await?);
    assert_eq!(
        stores.token.admin_token_hash().await?.as_ref(),
        Some(winners[0])
    );
    Ok(())
}
