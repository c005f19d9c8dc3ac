//! Copying one node's state into other stores through the contracts alone: how a single
//! SQLite node moves to a Postgres cluster (`eddy store copy`). The source must not change
//! meanwhile (its node stopped); the target must hold no functions and no queues.

use crate::queues::{NewMessage, QueueLimits};
use crate::{Result, Retention, StoreError, Stores};

/// Records of one function read at a time when copying its invocations.
const COPY_RECORDS_PER_READ: usize = 1000;

/// What [`copy_all`] copied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Copied {
    pub functions: usize,
    pub versions: usize,
    pub invocations: usize,
    pub rollup_minutes: usize,
    pub price_sheets: usize,
    pub budgets: usize,
    pub queues: usize,
    pub messages: usize,
    pub schedules: usize,
    /// Whether the admin token's hash was copied (the target had none).
    pub token: bool,
    /// Scoped tokens.
    pub tokens: usize,
    /// Versions of secrets, as sealed (the target's nodes need the same key).
    pub secrets: usize,
    pub audit_entries: usize,
}

/// Copies everything in `from` into `to`: functions with every version (numbered as in the
/// source, the same one live), component bytes, the admin token's hash, invocation records
/// (with new ids), per-minute rollups, price sheets, budgets with their alert state, scoped
/// tokens, secrets (sealed as they are), the audit trail (with new ids), queues
/// with their consumers and messages, and each schedule's last claimed tick.
///
/// Messages are enqueued afresh: ready now, with new ids and their attempts, errors and
/// first publish times reset; a message that was in flight is delivered again.
///
/// `Conflict` if `to` already holds functions or queues (nothing is copied), or a
/// different admin token hash (nothing after the check is copied).
pub async fn copy_all(from: &Stores, to: &Stores) -> Result<Copied> {
    if !to.functions.list_functions().await?.is_empty()
        || !to.queues.list_queues().await?.is_empty()
    {
        return Err(StoreError::Conflict(
            "the target store already holds functions or queues; copy into an empty one".into(),
        ));
    }
    let mut copied = Copied::default();
    if let Some(hash) = from.token.admin_token_hash().await? {
        copied.token = to.token.init_admin_token_hash(&hash).await?;
        if !copied.token && to.token.admin_token_hash().await?.as_deref() != Some(&hash) {
            return Err(StoreError::Conflict(
                "the target store has another admin token; copy into an empty one".into(),
            ));
        }
    }
    // Tokens, secrets and the trail first: the versions copied next may bind secrets.
    for token in from.access.tokens().await? {
        to.access.create_token(token).await?;
        copied.tokens += 1;
    }
    for secret in from.access.secrets().await? {
        let version = to
            .access
            .put_secret(
                &secret.name,
                &secret.key_id,
                secret.nonce,
                secret.ciphertext,
                secret.created_at_ms,
            )
            .await?;
        if version != secret.version {
            return Err(StoreError::Corrupt(format!(
                "secret `{}` has version {} where {version} was expected",
                secret.name, secret.version
            )));
        }
        copied.secrets += 1;
    }
    let mut after = 0;
    loop {
        let entries = from
            .access
            .audit(i64::MIN, after, COPY_RECORDS_PER_READ)
            .await?;
        let Some(last) = entries.last() else { break };
        after = last.id;
        for record in entries {
            to.access.append_audit(record.entry, i64::MIN).await?;
            copied.audit_entries += 1;
        }
    }
    for function in from.functions.list_functions().await? {
        let mut versions = from.functions.versions(&function.name).await?;
        versions.reverse();
        for (i, version) in versions.iter().enumerate() {
            if version.version as usize != i + 1 {
                return Err(StoreError::Corrupt(format!(
                    "`{}` has version {} where {} was expected",
                    function.name,
                    version.version,
                    i + 1
                )));
            }
            let bytes = from
                .functions
                .component(&version.digest)
                .await?
                .ok_or_else(|| StoreError::NotFound {
                    what: format!("component {}", version.digest),
                })?;
            let new = crate::NewVersion {
                function: version.function.clone(),
                digest: version.digest.clone(),
                size_bytes: version.size_bytes,
                config: version.config.clone(),
                created_at_ms: version.created_at_ms,
            };
            to.functions.create_version(new, Some(bytes)).await?;
            copied.versions += 1;
        }
        to.functions
            .set_live_version(&function.name, function.live.version)
            .await?;
        copied.functions += 1;
        let mut after = 0;
        loop {
            let records = from
                .invocations
                .invocations_after(&function.name, after, COPY_RECORDS_PER_READ)
                .await?;
            let Some(last) = records.last() else { break };
            after = last.id;
            copied.invocations += records.len();
            let batch = records.into_iter().map(|r| r.invocation).collect();
            // Everything kept in the source is kept: no retention beyond its own.
            let keep_all = Retention {
                invocations_per_function_max: usize::MAX,
                retention_ms: i64::MAX,
            };
            to.invocations.append_invocations(batch, keep_all).await?;
        }
        let minutes = from.invocations.rollups(&function.name, i64::MIN).await?;
        copied.rollup_minutes += minutes.len();
        let rollups = minutes
            .into_iter()
            .map(|(minute, rollup)| (function.name.clone(), minute, rollup))
            .collect();
        to.invocations.add_rollups(rollups, i64::MIN).await?;
        // A schedule's last claimed tick: no tick before it runs again on the target.
        let now = crate::store::now_ms();
        let tick = from.ticks.last_tick(&function.name, now).await?;
        if tick < now {
            to.ticks.claim_tick(&function.name, tick, now).await?;
            to.ticks.finish_tick(&function.name, tick).await?;
            copied.schedules += 1;
        }
    }
    for (name, toml) in from.cost.price_sheets().await? {
        to.cost
            .put_price_sheet(&name, &toml, crate::store::now_ms())
            .await?;
        copied.price_sheets += 1;
    }
    for budget in from.cost.budgets().await? {
        to.cost.put_budget(&budget.scope, &budget.settings).await?;
        to.cost
            .set_budget_alerted(
                &budget.scope,
                &budget.settings,
                &budget.alerted_month,
                budget.alerted_percent,
            )
            .await?;
        copied.budgets += 1;
    }
    let queues = from.queues.list_queues().await?;
    // Queues first (each creates its dead-letter queue), then consumers (which may name
    // another queue's dead-letter queue), then messages.
    for queue in queues.iter().filter(|q| q.dead_letter_of.is_none()) {
        to.queues
            .create_queue(&queue.name, queue.idempotency_window_ms)
            .await?;
        copied.queues += 1;
    }
    for queue in &queues {
        if let Some(consumer) = &queue.consumer {
            to.queues
                .set_consumer(&queue.name, consumer.clone())
                .await?;
        }
        let messages = from.queues.peek(&queue.name, u32::MAX).await?;
        copied.messages += messages.len();
        for chunk in messages.chunks(1000) {
            let batch = chunk
                .iter()
                .map(|m| NewMessage {
                    body: m.body.clone(),
                    content_type: m.content_type.clone(),
                    idempotency_key: None,
                })
                .collect();
            to.queues
                .publish(&queue.name, batch, QueueLimits::NONE)
                .await?;
        }
    }
    Ok(copied)
}
