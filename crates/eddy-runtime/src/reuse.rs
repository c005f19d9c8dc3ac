//! Instances: counted while they live, and (for functions deployed with `--reuse`) kept
//! warm between requests in a per-deployment idle pool with a node-wide budget.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::Proxy;

use crate::invoke::InvocationState;

/// Counts one live instance of a function until dropped.
pub(crate) struct LiveGuard(Arc<AtomicUsize>);

impl LiveGuard {
    pub(crate) fn new(gauge: &Arc<AtomicUsize>) -> LiveGuard {
        gauge.fetch_add(1, Ordering::Relaxed);
        LiveGuard(gauge.clone())
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A store with its instance (once instantiated). Dropping it frees the pool slot.
pub(crate) struct Instance {
    pub(crate) store: Store<InvocationState>,
    pub(crate) proxy: Option<Proxy>,
    /// Requests this instance has served.
    pub(crate) served: u32,
    // Declared last: the gauge drops after the store.
    pub(crate) _live: LiveGuard,
}

/// Idle instances the whole node may keep (`idle_instances_max`).
pub(crate) struct IdleBudget {
    max: usize,
    used: AtomicUsize,
}

impl IdleBudget {
    pub(crate) fn new(max: usize) -> IdleBudget {
        IdleBudget {
            max,
            used: AtomicUsize::new(0),
        }
    }

    fn try_take(&self) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < self.max).then_some(used + 1)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// The warm instances of one deployment, most recently used last.
pub(crate) struct IdlePool {
    idle: Mutex<Vec<(Instance, Instant)>>,
    budget: Arc<IdleBudget>,
}

impl IdlePool {
    pub(crate) fn new(budget: Arc<IdleBudget>) -> IdlePool {
        IdlePool {
            idle: Mutex::new(Vec::new()),
            budget,
        }
    }

    /// The warmest idle instance, if any.
    pub(crate) fn take(&self) -> Option<Instance> {
        let taken = self.lock().pop().map(|(instance, _)| instance);
        if taken.is_some() {
            self.budget.give_back(1);
        }
        taken
    }

    /// Keep `instance` warm; gives it back when the node's idle budget is spent.
    pub(crate) fn put(&self, instance: Instance) -> Result<(), Instance> {
        if !self.budget.try_take() {
            return Err(instance);
        }
        self.lock().push((instance, Instant::now()));
        Ok(())
    }

    /// Remove the instances idle since before `cutoff`.
    pub(crate) fn expired(&self, cutoff: Instant) -> Vec<Instance> {
        let mut idle = self.lock();
        // Oldest first: everything before the first instance used after `cutoff`.
        let keep_from = idle.partition_point(|(_, since)| *since < cutoff);
        let expired: Vec<Instance> = idle.drain(..keep_from).map(|(i, _)| i).collect();
        drop(idle);
        self.budget.give_back(expired.len());
        expired
    }

    /// Remove every idle instance.
    pub(crate) fn drain(&self) -> Vec<Instance> {
        let drained: Vec<Instance> = self.lock().drain(..).map(|(i, _)| i).collect();
        self.budget.give_back(drained.len());
        drained
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Instance, Instant)>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for IdlePool {
    fn drop(&mut self) {
        let left = self.lock().len();
        self.budget.give_back(left);
    }
}
