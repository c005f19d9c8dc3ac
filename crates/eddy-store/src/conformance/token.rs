//! Contracts of `TokenStore`: the admin token's hash is set, replaced and kept.

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
