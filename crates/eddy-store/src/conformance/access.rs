//! Contracts of `AccessStore`: tokens are found by hash until removed, the audit trail grows
//! in order within its retention, and secrets keep their versions and their sealing.

use super::{Backend, open, reopen};
use crate::{NewAuditEntry, Result, StoreError, TokenRecord};

fn token(name: &str, hash: &str) -> TokenRecord {
    TokenRecord {
        name: name.to_owned(),
        hash: hash.to_owned(),
        role: "deployer".to_owned(),
        functions: vec!["api".to_owned(), "web".to_owned()],
        queues: vec!["jobs".to_owned()],
        secrets: Vec::new(),
        created_at_ms: 1_000,
        expires_at_ms: Some(9_000),
        last_used_at_ms: None,
    }
}

pub async fn tokens_are_found_by_hash_until_removed_and_survive_a_restart<B: Backend>() -> Result<()>
{
    let (place, stores) = open::<B>().await?;
    let access = &stores.access;
    access.create_token(token("ci", "h1")).await?;
    let mut other = token("alice", "h2");
    other.role = "reader".to_owned();
    other.functions.clear();
    other.queues.clear();
    other.secrets = vec!["stripe".to_owned()];
    other.expires_at_ms = None;
    access.create_token(other.clone()).await?;
    // A name is taken once, and nothing of the second try is stored.
    match access.create_token(token("ci", "h3")).await {
        Err(StoreError::AlreadyExists { .. }) => {}
        other => panic!("a second token `ci` was not refused: {other:?}"),
    }
    assert_eq!(access.token_by_hash("h3").await?, None);
    assert_eq!(access.token_by_hash("h1").await?, Some(token("ci", "h1")));
    let names: Vec<String> = access.tokens().await?.into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["alice", "ci"]);
    // Last use only moves forward.
    access.touch_token("ci", 5_000).await?;
    access.touch_token("ci", 4_000).await?;
    let found = access.token_by_hash("h1").await?.expect("ci");
    assert_eq!(found.last_used_at_ms, Some(5_000));
    let stores = reopen(&place, stores).await?;
    let access = &stores.access;
    assert_eq!(access.token_by_hash("h2").await?, Some(other));
    assert!(access.remove_token("ci").await?);
    assert!(!access.remove_token("ci").await?);
    assert_eq!(access.token_by_hash("h1").await?, None);
    // Touching a removed token does not bring it back.
    access.touch_token("ci", 6_000).await?;
    assert_eq!(access.tokens().await?.len(), 1);
    Ok(())
}

fn entry(at_ms: i64, request: &str) -> NewAuditEntry {
    NewAuditEntry {
        at_ms,
        token: "ci".to_owned(),
        source: "127.0.0.1".to_owned(),
        request: request.to_owned(),
        action: "functions:deploy".to_owned(),
        status: 201,
        outcome: "ok".to_owned(),
    }
}

pub async fn the_audit_trail_grows_in_order_forgets_old_entries_and_survives_a_restart<
    B: Backend,
>() -> Result<()> {
    let (place, stores) = open::<B>().await?;
    let access = &stores.access;
    let first = access
        .append_audit(entry(1_000, "POST /v1/functions/a/versions"), 0)
        .await?;
    let second = access
        .append_audit(entry(2_000, "DELETE /v1/functions/a"), 0)
        .await?;
    assert!(second > first);
    let all = access.audit(0, 0, 100).await?;
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].id, first);
    assert_eq!(all[0].entry, entry(1_000, "POST /v1/functions/a/versions"));
    assert_eq!(access.audit(0, first, 100).await?.len(), 1);
    assert_eq!(access.audit(1_500, 0, 100).await?[0].id, second);
    assert_eq!(access.audit(0, 0, 1).await?.len(), 1);
    let stores = reopen(&place, stores).await?;
    let access = &stores.access;
    // Appending drops what is older than the retention given.
    let third = access
        .append_audit(entry(3_000, "PUT /v1/budgets/a"), 1_500)
        .await?;
    assert!(third > second);
    let ids: Vec<i64> = access
        .audit(0, 0, 100)
        .await?
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, [second, third]);
    Ok(())
}

pub async fn secrets_keep_versions_reseal_only_from_their_key_and_survive_a_restart<B: Backend>()
-> Result<()> {
    let (place, stores) = open::<B>().await?;
    let access = &stores.access;
    assert_eq!(access.secret("stripe", None).await?, None);
    let v1 = access
        .put_secret("stripe", "k1", vec![1; 12], vec![10, 11], 1_000)
        .await?;
    let v2 = access
        .put_secret("stripe", "k1", vec![2; 12], vec![20, 21], 2_000)
        .await?;
    access
        .put_secret("db", "k1", vec![3; 12], vec![30], 3_000)
        .await?;
    assert_eq!((v1, v2), (1, 2));
    let latest = access.secret("stripe", None).await?.expect("stripe");
    assert_eq!(
        (latest.version, latest.ciphertext.clone()),
        (2, vec![20, 21])
    );
    let first = access.secret("stripe", Some(1)).await?.expect("stripe v1");
    assert_eq!((first.nonce, first.created_at_ms), (vec![1; 12], 1_000));
    let listed: Vec<(String, u32)> = access
        .secrets()
        .await?
        .into_iter()
        .map(|s| (s.name, s.version))
        .collect();
    assert_eq!(
        listed,
        [("db".into(), 1), ("stripe".into(), 1), ("stripe".into(), 2)]
    );
    // A reseal applies only over the key it replaces.
    assert!(
        access
            .reseal_secret("stripe", 1, "k1", "k2", vec![9; 12], vec![90])
            .await?
    );
    assert!(
        !access
            .reseal_secret("stripe", 1, "k1", "k3", vec![8; 12], vec![80])
            .await?
    );
    let stores = reopen(&place, stores).await?;
    let access = &stores.access;
    let resealed = access.secret("stripe", Some(1)).await?.expect("stripe v1");
    assert_eq!(
        (resealed.key_id.as_str(), resealed.ciphertext),
        ("k2", vec![90])
    );
    // Concurrent sets each get their own version.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8u8 {
        let access = access.clone();
        tasks.spawn(async move {
            access
                .put_secret("race", "k1", vec![i; 12], vec![i], 0)
                .await
        });
    }
    let mut versions = tasks
        .join_all()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    versions.sort();
    assert_eq!(versions, (1..=8).collect::<Vec<u32>>());
    assert!(access.remove_secret("stripe").await?);
    assert!(!access.remove_secret("stripe").await?);
    assert_eq!(access.secret("stripe", Some(1)).await?, None);
    Ok(())
}
