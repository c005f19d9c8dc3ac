//! The contracts of `contract.rs` kept by SQLite: [`Store`] runs each call's blocking work on
//! tokio's blocking pool, so async callers need no `spawn_blocking` of their own;
//! [`QueueStore`] is async already (its journal thread) and answers with its own methods.
//!
//! How SQLite keeps the words of the contracts: `Store` commits with `synchronous = NORMAL`
//! in WAL mode (committed on return: survives the process, not a power loss); the queue
//! journal commits with `synchronous = FULL` (synced). One connection per file, behind a
//! mutex or a thread, makes every call linearizable.

use async_trait::async_trait;

use crate::contract::{
    CostStore, FunctionStore, InvocationStore, QueueBackend, TickStore, TokenStore,
};
use crate::queues::{
    Claimed, ConsumerSettings, NewMessage, PeekedMessage, Published, QueueCounts, QueueLimits,
    QueueRecord, Settle,
};
use crate::{
    BudgetRecord, FunctionRecord, InvocationRecord, NewInvocation, NewVersion, QueueStore, Result,
    Retention, Rollup, Store, StoreError, VersionRecord,
};

impl Store {
    /// Runs `work` on a handle to this store on tokio's blocking pool. Needs a tokio runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.clone();
        match tokio::task::spawn_blocking(move || work(&store)).await {
            Ok(result) => result,
            Err(e) => match e.try_into_panic() {
                // The caller panics as it would have calling the blocking method; the
                // connection's lock tolerates the poison.
                Ok(panic) => std::panic::resume_unwind(panic),
                // Only a runtime shutting down cancels a blocking task.
                Err(cancelled) => Err(StoreError::Io {
                    path: "the store's blocking task".into(),
                    source: std::io::Error::other(cancelled),
                }),
            },
        }
    }
}

#[async_trait]
impl FunctionStore for Store {
    async fn put_component(&self, digest: &str, bytes: Vec<u8>) -> Result<()> {
        let digest = digest.to_owned();
        self.blocking(move |store| store.put_component(&digest, &bytes))
            .await
    }

    async fn component(&self, digest: &str) -> Result<Option<Vec<u8>>> {
        let digest = digest.to_owned();
        self.blocking(move |store| store.component(&digest)).await
    }

    async fn has_component(&self, digest: &str) -> Result<bool> {
        let digest = digest.to_owned();
        self.blocking(move |store| store.has_component(&digest))
            .await
    }

    async fn create_version(
        &self,
        new: NewVersion,
        component_bytes: Option<Vec<u8>>,
    ) -> Result<VersionRecord> {
        self.blocking(move |store| store.create_version(&new, component_bytes.as_deref()))
            .await
    }

    async fn list_functions(&self) -> Result<Vec<FunctionRecord>> {
        self.blocking(Store::list_functions).await
    }

    async fn function(&self, name: &str) -> Result<Option<FunctionRecord>> {
        let name = name.to_owned();
        self.blocking(move |store| store.function(&name)).await
    }

    async fn versions(&self, name: &str) -> Result<Vec<VersionRecord>> {
        let name = name.to_owned();
        self.blocking(move |store| store.versions(&name)).await
    }

    async fn version(&self, name: &str, version: u32) -> Result<Option<VersionRecord>> {
        let name = name.to_owned();
        self.blocking(move |store| store.version(&name, version))
            .await
    }

    async fn set_live_version(&self, name: &str, version: u32) -> Result<FunctionRecord> {
        let name = name.to_owned();
        self.blocking(move |store| store.set_live_version(&name, version))
            .await
    }

    async fn remove_function(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.blocking(move |store| store.remove_function(&name))
            .await
    }

    async fn generation(&self) -> Result<i64> {
        self.blocking(Store::generation).await
    }
}

#[async_trait]
impl TokenStore for Store {
    async fn admin_token_hash(&self) -> Result<Option<String>> {
        self.blocking(Store::admin_token_hash).await
    }

    async fn set_admin_token_hash(&self, hash: &str) -> Result<()> {
        let hash = hash.to_owned();
        self.blocking(move |store| store.set_admin_token_hash(&hash))
            .await
    }

    async fn init_admin_token_hash(&self, hash: &str) -> Result<bool> {
        let hash = hash.to_owned();
        self.blocking(move |store| store.init_admin_token_hash(&hash))
            .await
    }
}

#[async_trait]
impl crate::AccessStore for Store {
    async fn create_token(&self, token: crate::TokenRecord) -> Result<()> {
        self.blocking(move |store| store.create_token(&token)).await
    }

    async fn tokens(&self) -> Result<Vec<crate::TokenRecord>> {
        self.blocking(Store::tokens).await
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<crate::TokenRecord>> {
        let hash = hash.to_owned();
        self.blocking(move |store| store.token_by_hash(&hash)).await
    }

    async fn remove_token(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.blocking(move |store| store.remove_token(&name)).await
    }

    async fn touch_token(&self, name: &str, at_ms: i64) -> Result<()> {
        let name = name.to_owned();
        self.blocking(move |store| store.touch_token(&name, at_ms))
            .await
    }

    async fn append_audit(&self, entry: crate::NewAuditEntry, keep_after_ms: i64) -> Result<i64> {
        self.blocking(move |store| store.append_audit(&entry, keep_after_ms))
            .await
    }

    async fn audit(
        &self,
        since_ms: i64,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<crate::AuditRecord>> {
        self.blocking(move |store| store.audit(since_ms, after_id, limit))
            .await
    }

    async fn put_secret(
        &self,
        name: &str,
        key_id: &str,
        nonce: Vec<u8>,
        ciphertext: Vec<u8>,
        at_ms: i64,
    ) -> Result<u32> {
        let (name, key_id) = (name.to_owned(), key_id.to_owned());
        self.blocking(move |store| store.put_secret(&name, &key_id, &nonce, &ciphertext, at_ms))
            .await
    }

    async fn secrets(&self) -> Result<Vec<crate::SealedSecret>> {
        self.blocking(Store::secrets).await
    }

    async fn secret(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<crate::SealedSecret>> {
        let name = name.to_owned();
        self.blocking(move |store| store.secret(&name, version))
            .await
    }

    async fn remove_secret(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.blocking(move |store| store.remove_secret(&name)).await
    }

    async fn reseal_secret(
        &self,
        name: &str,
        version: u32,
        old_key_id: &str,
        key_id: &str,
        nonce: Vec<u8>,
        ciphertext: Vec<u8>,
    ) -> Result<bool> {
        let (name, old, key_id) = (name.to_owned(), old_key_id.to_owned(), key_id.to_owned());
        self.blocking(move |store| {
            store.reseal_secret(&name, version, &old, &key_id, &nonce, &ciphertext)
        })
        .await
    }
}

#[async_trait]
impl InvocationStore for Store {
    async fn append_invocations(
        &self,
        batch: Vec<NewInvocation>,
        retention: Retention,
    ) -> Result<()> {
        self.blocking(move |store| store.append_invocations(&batch, retention))
            .await
    }

    async fn expire_invocations(&self, retention: Retention) -> Result<usize> {
        self.blocking(move |store| store.expire_invocations(retention))
            .await
    }

    async fn invocations_after(
        &self,
        function: &str,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<InvocationRecord>> {
        let function = function.to_owned();
        self.blocking(move |store| store.invocations_after(&function, after_id, limit))
            .await
    }

    async fn invocations_tail(
        &self,
        function: &str,
        limit: usize,
    ) -> Result<Vec<InvocationRecord>> {
        let function = function.to_owned();
        self.blocking(move |store| store.invocations_tail(&function, limit))
            .await
    }

    async fn add_rollups(&self, rollups: Vec<(String, i64, Rollup)>, cutoff_ms: i64) -> Result<()> {
        self.blocking(move |store| store.add_rollups(&rollups, cutoff_ms))
            .await
    }

    async fn rollups(&self, function: &str, since_minute_ms: i64) -> Result<Vec<(i64, Rollup)>> {
        let function = function.to_owned();
        self.blocking(move |store| store.rollups(&function, since_minute_ms))
            .await
    }

    async fn every_rollup(&self, since_minute_ms: i64) -> Result<Vec<(String, i64, Rollup)>> {
        self.blocking(move |store| store.every_rollup(since_minute_ms))
            .await
    }

    async fn rollup_shares(
        &self,
        function: &str,
        since_minute_ms: i64,
    ) -> Result<Vec<(String, Rollup)>> {
        let minutes = InvocationStore::rollups(self, function, since_minute_ms).await?;
        if minutes.is_empty() {
            return Ok(Vec::new());
        }
        let mut total = Rollup::default();
        for (_, rollup) in &minutes {
            total.merge(rollup);
        }
        Ok(vec![(String::new(), total.share())])
    }

    async fn cost_shares(
        &self,
        since_minute_ms: i64,
    ) -> Result<Vec<(String, String, i64, Rollup)>> {
        let totals = InvocationStore::cost_totals(self, since_minute_ms).await?;
        Ok(totals
            .into_iter()
            .map(|(function, minute, rollup)| (String::new(), function, minute, rollup))
            .collect())
    }

    async fn cost_minutes(&self, since_minute_ms: i64) -> Result<Vec<(String, i64, Rollup)>> {
        self.blocking(move |store| store.cost_minutes(since_minute_ms))
            .await
    }

    async fn cost_totals(&self, since_minute_ms: i64) -> Result<Vec<(String, i64, Rollup)>> {
        self.blocking(move |store| store.cost_totals(since_minute_ms))
            .await
    }
}

#[async_trait]
impl crate::MemberStore for Store {
    async fn beat(&self, beat: crate::NodeBeat) -> Result<()> {
        self.blocking(move |store| store.beat(&beat)).await
    }

    async fn members(&self) -> Result<Vec<crate::NodeBeat>> {
        self.blocking(Store::members).await
    }

    async fn forget_members(&self, before_ms: i64) -> Result<u64> {
        self.blocking(move |store| store.forget_members(before_ms))
            .await
    }
}

#[async_trait]
impl CostStore for Store {
    async fn put_price_sheet(&self, name: &str, toml: &str, now_ms: i64) -> Result<()> {
        let (name, toml) = (name.to_owned(), toml.to_owned());
        self.blocking(move |store| store.put_price_sheet(&name, &toml, now_ms))
            .await
    }

    async fn price_sheets(&self) -> Result<Vec<(String, String)>> {
        self.blocking(Store::price_sheets).await
    }

    async fn remove_price_sheet(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.blocking(move |store| store.remove_price_sheet(&name))
            .await
    }

    async fn put_budget(&self, scope: &str, settings: &str) -> Result<()> {
        let (scope, settings) = (scope.to_owned(), settings.to_owned());
        self.blocking(move |store| store.put_budget(&scope, &settings))
            .await
    }

    async fn budgets(&self) -> Result<Vec<BudgetRecord>> {
        self.blocking(Store::budgets).await
    }

    async fn budget(&self, scope: &str) -> Result<Option<BudgetRecord>> {
        let scope = scope.to_owned();
        self.blocking(move |store| store.budget(&scope)).await
    }

    async fn remove_budget(&self, scope: &str) -> Result<bool> {
        let scope = scope.to_owned();
        self.blocking(move |store| store.remove_budget(&scope))
            .await
    }

    async fn set_budget_alerted(
        &self,
        scope: &str,
        settings: &str,
        month: &str,
        percent: f64,
    ) -> Result<bool> {
        let (scope, settings, month) = (scope.to_owned(), settings.to_owned(), month.to_owned());
        self.blocking(move |store| store.set_budget_alerted(&scope, &settings, &month, percent))
            .await
    }
}

// `QueueStore::method(self, …)` names the inherent method, which the trait method of the
// same name delegates to.
#[async_trait]
impl QueueBackend for QueueStore {
    async fn create_queue(&self, name: &str, idempotency_window_ms: u64) -> Result<QueueRecord> {
        QueueStore::create_queue(self, name, idempotency_window_ms).await
    }

    async fn delete_queue(&self, name: &str) -> Result<bool> {
        QueueStore::delete_queue(self, name).await
    }

    async fn list_queues(&self) -> Result<Vec<QueueRecord>> {
        QueueStore::list_queues(self).await
    }

    async fn queue(&self, name: &str) -> Result<Option<QueueRecord>> {
        QueueStore::queue(self, name).await
    }

    async fn set_consumer(&self, queue: &str, settings: ConsumerSettings) -> Result<()> {
        QueueStore::set_consumer(self, queue, settings).await
    }

    async fn remove_consumer(&self, queue: &str) -> Result<bool> {
        QueueStore::remove_consumer(self, queue).await
    }

    async fn publish(
        &self,
        queue: &str,
        messages: Vec<NewMessage>,
        limits: QueueLimits,
    ) -> Result<Vec<Published>> {
        QueueStore::publish(self, queue, messages, limits).await
    }

    async fn claim(
        &self,
        queue: &str,
        n: u32,
        lease_until_ms: i64,
    ) -> Result<(Vec<Claimed>, Option<i64>)> {
        QueueStore::claim(self, queue, n, lease_until_ms).await
    }

    async fn settle(&self, queue: &str, settlements: Vec<Settle>) -> Result<()> {
        QueueStore::settle(self, queue, settlements).await
    }

    async fn peek(&self, queue: &str, limit: u32) -> Result<Vec<PeekedMessage>> {
        QueueStore::peek(self, queue, limit).await
    }

    async fn purge(&self, queue: &str) -> Result<u64> {
        QueueStore::purge(self, queue).await
    }

    async fn redrive(&self, from: &str, to: &str) -> Result<u64> {
        QueueStore::redrive(self, from, to).await
    }

    async fn counts(&self, queue: &str) -> Result<QueueCounts> {
        QueueStore::counts(self, queue).await
    }
}

#[async_trait]
impl TickStore for QueueStore {
    async fn last_tick(&self, function: &str, now_ms: i64) -> Result<i64> {
        QueueStore::last_tick(self, function, now_ms).await
    }

    async fn claim_tick(&self, function: &str, tick_ms: i64, lease_until_ms: i64) -> Result<bool> {
        QueueStore::claim_tick(self, function, tick_ms, lease_until_ms).await
    }

    async fn finish_tick(&self, function: &str, tick_ms: i64) -> Result<()> {
        QueueStore::finish_tick(self, function, tick_ms).await
    }

    async fn reclaim_abandoned_tick(
        &self,
        function: &str,
        lease_until_ms: i64,
    ) -> Result<Option<i64>> {
        QueueStore::reclaim_abandoned_tick(self, function, lease_until_ms).await
    }

    async fn another_tick_running(&self, function: &str, tick_ms: i64) -> Result<bool> {
        QueueStore::another_tick_running(self, function, tick_ms).await
    }

    async fn forget_schedule(&self, function: &str) -> Result<()> {
        QueueStore::forget_schedule(self, function).await
    }
}
