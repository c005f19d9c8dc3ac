//! Admission control: one mechanism every trigger (HTTP now; queues, cron and WebSockets
//! later) goes through before an invocation may run.
//!
//! - Each function has a concurrency limit and a bounded wait queue with a maximum wait.
//! - The node has a capacity shared by all functions. A function's reserved concurrency
//!   is a floor the others cannot take: the shared part of the capacity is what is left
//!   after every reservation.
//! - Two classes: interactive (HTTP, WebSocket) and background (queue, cron). Background
//!   work may use at most `background_concurrency_max` of the node, and when a slot frees,
//!   waiting interactive requests are admitted before waiting background ones.
//! - Nothing waits without bound: past the queue, or past the wait, the request is
//!   rejected at once with the name of the limit (and the caller gets 503 with
//!   `Retry-After`).
//!
//! - In a cluster a function's `max_concurrency` is the whole cluster's: each live node runs
//!   its share ([`ClusterShare`]), the shares summing to the limit. The heartbeat sets the
//!   share from the live nodes it reads; no request touches the store for it.
//!
//! All state sits behind one mutex; critical sections are a few comparisons.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

/// Which kind of work asks for admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// A caller is waiting: HTTP requests, WebSocket messages.
    Interactive,
    /// Nobody is waiting on the answer: queue deliveries, cron ticks.
    Background,
}

/// The node-wide side of admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeAdmission {
    /// Invocations running at once on the node.
    pub concurrency_max: usize,
    /// Of those, at most this many background ones.
    pub background_concurrency_max: usize,
}

/// One function's admission settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FunctionAdmission {
    /// Invocations of this function running at once.
    pub max_concurrency: usize,
    /// Requests that may wait for a slot; 0: reject at once when full.
    pub max_queue: usize,
    /// Longest a request waits for a slot.
    pub max_wait: Duration,
    /// Slots held for this function alone (a floor no other function can take).
    pub reserved: usize,
}

/// This node's place among the cluster's live nodes, which divides every function's
/// `max_concurrency` between them: node `rank` of `live` (by name) runs
/// `max / live` invocations, one more when `rank < max % live`, so the shares sum to `max`
/// exactly. A node whose share is 0 (a limit below the number of nodes) runs none and
/// refuses at once. A single node is rank 0 of 1: its share is the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterShare {
    pub rank: usize,
    pub live: usize,
}

impl Default for ClusterShare {
    fn default() -> Self {
        ClusterShare { rank: 0, live: 1 }
    }
}

impl ClusterShare {
    /// This node's share of a function-wide `max`.
    pub fn of(&self, max: usize) -> usize {
        let live = self.live.max(1);
        max / live + usize::from(self.rank < max % live)
    }

    /// `max_concurrency` as a message names it: with this node's share in a cluster.
    pub fn describe(&self, max: usize) -> String {
        if self.live <= 1 {
            format!("max_concurrency ({max})")
        } else {
            format!(
                "share of max_concurrency ({} here of {max} across {} live nodes)",
                self.of(max),
                self.live
            )
        }
    }
}

/// Why a request was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The function's wait queue was full (`max_queue`).
    QueueFull,
    /// No slot freed within `max_wait`.
    WaitExpired,
    /// The function was removed or redeployed with other settings while it waited.
    Gone,
    /// In a cluster, this node's share of the function's `max_concurrency` is 0 (the limit
    /// is below the number of live nodes): the other nodes run it.
    NoShare,
}

/// A running invocation's slot; dropping it frees the slot and admits the next waiter.
pub struct Permit {
    admission: Arc<Admission>,
    function: Arc<str>,
    /// The function's registration this permit was granted under: a function removed and
    /// created again is a new generation, which this permit's release does not touch.
    generation: u64,
    class: Class,
    /// False once the slot was released some other way.
    armed: bool,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut state = self.admission.lock();
        state.release(&self.function, self.generation, self.class);
        state.admit_waiters(&self.admission);
    }
}

/// What a function's admission looks like right now (for stats and metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FunctionLoad {
    pub in_flight: usize,
    pub queued: usize,
}

/// The node's admission controller.
pub struct Admission {
    node: NodeAdmission,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    functions: HashMap<Arc<str>, FunctionState>,
    /// Waiters in arrival order, per class.
    interactive: VecDeque<Waiter>,
    background: VecDeque<Waiter>,
    in_flight: usize,
    background_in_flight: usize,
    /// Permits taken beyond their function's reservation.
    shared_in_flight: usize,
    /// Sum of every function's reservation.
    reserved_total: usize,
    /// This node's share of each function's `max_concurrency`.
    share: ClusterShare,
    next_waiter: u64,
    next_generation: u64,
}

/// Invariant: `State::shared_in_flight` is the sum over functions of
/// `in_flight - reserved` (where positive), plus the permits still running for removed
/// generations.
struct FunctionState {
    settings: FunctionAdmission,
    generation: u64,
    in_flight: usize,
    queued: usize,
}

struct Waiter {
    id: u64,
    function: Arc<str>,
    tx: oneshot::Sender<Permit>,
}

impl Admission {
    pub fn new(node: NodeAdmission) -> Arc<Admission> {
        Arc::new(Admission {
            node,
            state: Mutex::new(State::default()),
        })
    }

    pub fn node(&self) -> NodeAdmission {
        self.node
    }

    /// Register or update a function's settings. Refused (with the reason) when its
    /// reservation does not fit in what the node has left to reserve.
    pub fn configure(
        self: &Arc<Self>,
        function: &str,
        settings: FunctionAdmission,
    ) -> Result<(), ReservationDoesNotFit> {
        let mut state = self.lock();
        state.reserved_total = state.reservation_fits(&self.node, function, settings.reserved)?;
        if !state.functions.contains_key(function) {
            let generation = state.next_generation;
            state.next_generation += 1;
            state.functions.insert(
                Arc::from(function),
                FunctionState {
                    settings,
                    generation,
                    in_flight: 0,
                    queued: 0,
                },
            );
        }
        let entry = state
            .functions
            .get_mut(function)
            .expect("present or inserted above");
        let shared_before = entry.in_flight.saturating_sub(entry.settings.reserved);
        entry.settings = settings;
        let shared_after = entry.in_flight.saturating_sub(settings.reserved);
        state.shared_in_flight = state.shared_in_flight + shared_after - shared_before;
        state.admit_waiters(self);
        Ok(())
    }

    /// Whether `settings` would fit, without changing anything.
    pub fn check(
        &self,
        function: &str,
        settings: FunctionAdmission,
    ) -> Result<(), ReservationDoesNotFit> {
        self.lock()
            .reservation_fits(&self.node, function, settings.reserved)
            .map(|_| ())
    }

    /// Forget a removed function; its waiters are rejected.
    pub fn remove(self: &Arc<Self>, function: &str) {
        let mut state = self.lock();
        if let Some(f) = state.functions.remove(function) {
            state.reserved_total -= f.settings.reserved;
            // Its running invocations now count as shared until they end (see `release`).
            state.shared_in_flight += f.in_flight.min(f.settings.reserved);
        }
        // Dropping the senders wakes the waiters with `Gone`.
        state.interactive.retain(|w| &*w.function != function);
        state.background.retain(|w| &*w.function != function);
        state.admit_waiters(self);
    }

    /// The current load of `function`.
    pub fn load(&self, function: &str) -> FunctionLoad {
        let state = self.lock();
        state
            .functions
            .get(function)
            .map(|f| FunctionLoad {
                in_flight: f.in_flight,
                queued: f.queued,
            })
            .unwrap_or_default()
    }

    /// Invocations running on the node.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight
    }

    /// Wait (within the function's queue and wait limits) for a slot to run `function`.
    pub async fn admit(
        self: &Arc<Self>,
        function: &str,
        class: Class,
    ) -> Result<Permit, Rejection> {
        let (rx, id, function, max_wait) = {
            let mut state = self.lock();
            let Some((key, f)) = state.functions.get_key_value(function) else {
                return Err(Rejection::Gone);
            };
            let key = key.clone();
            let settings = f.settings;
            let queued = f.queued;
            // Another node runs this function: waiting here would only wait out max_wait.
            if state.share.of(settings.max_concurrency) == 0 {
                return Err(Rejection::NoShare);
            }
            // Interactive-first holds at every release (see `admit_waiters`); an arrival
            // only has to stay behind its own function's waiters.
            let nobody_waiting = state.queue(class).iter().all(|w| w.function != key);
            if nobody_waiting && let Some(shared) = state.fits(&self.node, &key, class) {
                return Ok(state.grant(self, key, class, shared));
            }
            if queued >= settings.max_queue {
                return Err(Rejection::QueueFull);
            }
            let (tx, rx) = oneshot::channel();
            let id = state.next_waiter;
            state.next_waiter += 1;
            state.functions.get_mut(&key).expect("checked above").queued += 1;
            state.queue_mut(class).push_back(Waiter {
                id,
                function: key.clone(),
                tx,
            });
            (rx, id, key, settings.max_wait)
        };
        // Leaves the queue however this wait ends: admitted, timed out, or the caller
        // gone (this future dropped).
        let _leave = LeaveQueue {
            admission: self,
            class,
            id,
            function,
        };
        match tokio::time::timeout(max_wait, rx).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(Rejection::Gone),
            // A permit granted just as the wait ran out is dropped with the receiver, which
            // frees its slot again.
            Err(_) => Err(Rejection::WaitExpired),
        }
    }

    /// Sets this node's share of every function's `max_concurrency`; waiters that now fit
    /// are admitted.
    pub fn set_cluster_share(self: &Arc<Self>, share: ClusterShare) {
        let mut state = self.lock();
        if state.share != share {
            state.share = share;
            state.admit_waiters(self);
        }
    }

    /// This node's share of every function's `max_concurrency`.
    pub fn cluster_share(&self) -> ClusterShare {
        self.lock().share
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Removes a waiter from its queue when its wait ends, unless it was admitted (and so
/// removed) already.
struct LeaveQueue<'a> {
    admission: &'a Admission,
    class: Class,
    id: u64,
    function: Arc<str>,
}

impl Drop for LeaveQueue<'_> {
    fn drop(&mut self) {
        let mut state = self.admission.lock();
        let queue = state.queue_mut(self.class);
        if let Some(at) = queue.iter().position(|w| w.id == self.id) {
            queue.remove(at);
            if let Some(f) = state.functions.get_mut(&self.function) {
                f.queued -= 1;
            }
        }
    }
}

/// A function's reserved concurrency does not fit in what the node has left to reserve.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error(
    "reserved concurrency {reserved} does not fit: other functions on this node reserve {others} of its concurrency_max ({concurrency_max})"
)]
pub struct ReservationDoesNotFit {
    pub reserved: usize,
    pub others: usize,
    pub concurrency_max: usize,
}

impl State {
    /// The node's reservations if `function` reserved `reserved`, or why that does not fit.
    fn reservation_fits(
        &self,
        node: &NodeAdmission,
        function: &str,
        reserved: usize,
    ) -> Result<usize, ReservationDoesNotFit> {
        let current = self
            .functions
            .get(function)
            .map_or(0, |f| f.settings.reserved);
        let others = self.reserved_total - current;
        if others + reserved > node.concurrency_max {
            return Err(ReservationDoesNotFit {
                reserved,
                others,
                concurrency_max: node.concurrency_max,
            });
        }
        Ok(others + reserved)
    }

    fn queue(&self, class: Class) -> &VecDeque<Waiter> {
        match class {
            Class::Interactive => &self.interactive,
            Class::Background => &self.background,
        }
    }

    fn queue_mut(&mut self, class: Class) -> &mut VecDeque<Waiter> {
        match class {
            Class::Interactive => &mut self.interactive,
            Class::Background => &mut self.background,
        }
    }

    /// Whether one more `class` invocation of `function` fits now; `Some(shared)` says
    /// whether it takes a shared slot (beyond the function's reservation).
    fn fits(&self, node: &NodeAdmission, function: &str, class: Class) -> Option<bool> {
        let f = self.functions.get(function)?;
        if f.in_flight >= self.share.of(f.settings.max_concurrency) {
            return None;
        }
        let within_reservation = f.in_flight < f.settings.reserved;
        if !within_reservation {
            let shared_capacity = node.concurrency_max - self.reserved_total;
            if self.shared_in_flight >= shared_capacity {
                return None;
            }
            if class == Class::Background
                && self.background_in_flight >= node.background_concurrency_max
            {
                return None;
            }
        }
        Some(!within_reservation)
    }

    fn grant(
        &mut self,
        admission: &Arc<Admission>,
        function: Arc<str>,
        class: Class,
        shared: bool,
    ) -> Permit {
        let f = self
            .functions
            .get_mut(&function)
            .expect("granted functions exist");
        f.in_flight += 1;
        let generation = f.generation;
        self.in_flight += 1;
        if class == Class::Background {
            self.background_in_flight += 1;
        }
        if shared {
            self.shared_in_flight += 1;
        }
        Permit {
            admission: admission.clone(),
            function,
            generation,
            class,
            armed: true,
        }
    }

    /// Give back one slot. Whether it was a shared one follows from the function's state
    /// now (its reservation may have changed since the grant), which keeps the invariant on
    /// `shared_in_flight`.
    fn release(&mut self, function: &str, generation: u64, class: Class) {
        self.in_flight -= 1;
        if class == Class::Background {
            self.background_in_flight -= 1;
        }
        match self.functions.get_mut(function) {
            Some(f) if f.generation == generation => {
                if f.in_flight > f.settings.reserved {
                    self.shared_in_flight -= 1;
                }
                f.in_flight -= 1;
            }
            // Removed (and perhaps created again) while running: `remove` moved its slots
            // to the shared count.
            _ => self.shared_in_flight -= 1,
        }
    }

    /// Admit every waiter that now fits: interactive ones first, each class in order of
    /// arrival (a function at its own limit does not hold up the others behind it).
    fn admit_waiters(&mut self, admission: &Arc<Admission>) {
        for class in [Class::Interactive, Class::Background] {
            let mut at = 0;
            while at < self.queue(class).len() {
                let function = self.queue(class)[at].function.clone();
                let Some(shared) = self.fits(&admission.node, &function, class) else {
                    at += 1;
                    continue;
                };
                let waiter = self.queue_mut(class).remove(at).expect("index in range");
                if let Some(f) = self.functions.get_mut(&function) {
                    f.queued -= 1;
                }
                if waiter.tx.is_closed() {
                    continue;
                }
                let permit = self.grant(admission, function, class, shared);
                if let Err(mut permit) = waiter.tx.send(permit) {
                    // The waiter gave up as it was admitted: undo without re-entering the lock.
                    self.release(&permit.function, permit.generation, permit.class);
                    permit.armed = false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function(max_concurrency: usize, max_queue: usize, reserved: usize) -> FunctionAdmission {
        FunctionAdmission {
            max_concurrency,
            max_queue,
            max_wait: Duration::from_secs(5),
            reserved,
        }
    }

    fn node(concurrency_max: usize, background_concurrency_max: usize) -> Arc<Admission> {
        Admission::new(NodeAdmission {
            concurrency_max,
            background_concurrency_max,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_function_with_no_queue_rejects_at_once() {
        let admission = node(10, 5);
        admission.configure("f", function(2, 0, 0)).unwrap();
        let a = admission.admit("f", Class::Interactive).await.unwrap();
        let _b = admission.admit("f", Class::Interactive).await.unwrap();
        let third = admission.admit("f", Class::Interactive).await;
        assert_eq!(third.err(), Some(Rejection::QueueFull));
        drop(a);
        let _c = admission.admit("f", Class::Interactive).await.unwrap();
        assert_eq!(admission.load("f").in_flight, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_admitted_in_order_and_bounded_by_their_wait() {
        let admission = node(10, 5);
        let mut settings = function(1, 1, 0);
        settings.max_wait = Duration::from_millis(100);
        admission.configure("f", settings).unwrap();
        let running = admission.admit("f", Class::Interactive).await.unwrap();
        let asked = tokio::time::Instant::now();
        let expired = admission.admit("f", Class::Interactive).await;
        assert_eq!(expired.err(), Some(Rejection::WaitExpired));
        // On the paused clock the wait is exactly max_wait, not a moment longer.
        assert_eq!(asked.elapsed(), Duration::from_millis(100));
        assert_eq!(
            admission.load("f").queued,
            0,
            "an expired waiter leaves the queue"
        );

        let waiting = {
            let admission = admission.clone();
            tokio::spawn(async move { admission.admit("f", Class::Interactive).await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(admission.load("f").queued, 1);
        drop(running);
        assert_eq!(waiting.await.unwrap(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_runs_its_share_of_a_clusters_limit_and_none_when_its_share_is_0() {
        let admission = node(100, 100);
        admission.configure("f", function(3, 10, 0)).unwrap();
        // Rank 2 of 4: 3 / 4 = 0, and 2 < 3 % 4, so 1.
        admission.set_cluster_share(ClusterShare { rank: 2, live: 4 });
        let held = admission.admit("f", Class::Interactive).await.unwrap();
        let waiting = {
            let admission = admission.clone();
            tokio::spawn(async move { admission.admit("f", Class::Interactive).await })
        };
        tokio::task::yield_now().await;
        assert_eq!(
            admission.load("f").queued,
            1,
            "the second waits for the share"
        );
        // The share grows (a node left): the waiter gets in.
        admission.set_cluster_share(ClusterShare { rank: 0, live: 2 });
        let second = waiting.await.unwrap().unwrap();
        // Rank 3 of 4: 0 + (3 < 3 = no) = 0: refused at once, not after max_wait.
        admission.set_cluster_share(ClusterShare { rank: 3, live: 4 });
        assert!(matches!(
            admission.admit("f", Class::Interactive).await,
            Err(Rejection::NoShare)
        ));
        drop((held, second));
    }

    #[tokio::test(start_paused = true)]
    async fn reserved_concurrency_is_a_floor_others_cannot_take() {
        let admission = node(4, 4);
        admission.configure("reserved", function(10, 0, 2)).unwrap();
        admission.configure("greedy", function(10, 0, 0)).unwrap();
        let mut greedy = Vec::new();
        while let Ok(permit) = admission.admit("greedy", Class::Interactive).await {
            greedy.push(permit);
        }
        assert_eq!(
            greedy.len(),
            2,
            "the greedy function gets only the unreserved half"
        );
        let _r1 = admission
            .admit("reserved", Class::Interactive)
            .await
            .unwrap();
        let _r2 = admission
            .admit("reserved", Class::Interactive)
            .await
            .unwrap();
        assert!(
            admission
                .admit("reserved", Class::Interactive)
                .await
                .is_err()
        );
        let err = admission.check("third", function(10, 0, 3)).unwrap_err();
        assert_eq!(
            err,
            ReservationDoesNotFit {
                reserved: 3,
                others: 2,
                concurrency_max: 4
            }
        );
        assert!(
            err.to_string()
                .contains("reserve 2 of its concurrency_max (4)"),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn background_work_cannot_take_the_whole_node_and_waits_behind_interactive() {
        let admission = node(4, 2);
        admission
            .configure("consumer", function(10, 10, 0))
            .unwrap();
        admission.configure("api", function(10, 10, 0)).unwrap();
        let b1 = admission
            .admit("consumer", Class::Background)
            .await
            .unwrap();
        let _b2 = admission
            .admit("consumer", Class::Background)
            .await
            .unwrap();
        // The background share is spent: the next delivery waits, interactive does not.
        let queued_background = {
            let admission = admission.clone();
            tokio::spawn(async move {
                admission
                    .admit("consumer", Class::Background)
                    .await
                    .map(|_| ())
            })
        };
        let i1 = admission.admit("api", Class::Interactive).await.unwrap();
        let _i2 = admission.admit("api", Class::Interactive).await.unwrap();
        // The node is full; an interactive request queues too.
        let queued_interactive = {
            let admission = admission.clone();
            tokio::spawn(async move {
                let permit = admission.admit("api", Class::Interactive).await;
                (permit.is_ok(), admission.load("consumer").in_flight)
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(admission.load("api").queued, 1);
        assert_eq!(admission.load("consumer").queued, 1);
        // A background slot frees: the waiting interactive request goes first.
        drop(b1);
        let (admitted, consumer_in_flight) = queued_interactive.await.unwrap();
        assert!(admitted);
        assert_eq!(consumer_in_flight, 1, "background stayed queued");
        drop(i1);
        assert_eq!(queued_background.await.unwrap(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn changing_a_reservation_while_invocations_run_keeps_the_counts_right() {
        let admission = node(4, 4);
        admission.configure("f", function(10, 0, 0)).unwrap();
        admission.configure("g", function(10, 0, 0)).unwrap();
        let running: Vec<Permit> = vec![
            admission.admit("f", Class::Interactive).await.unwrap(),
            admission.admit("f", Class::Interactive).await.unwrap(),
        ];
        admission.configure("f", function(10, 0, 2)).unwrap();
        drop(running);
        // Were the count off, `g` would find the shared part (2) full or overflowing.
        let g: Vec<Permit> = vec![
            admission.admit("g", Class::Interactive).await.unwrap(),
            admission.admit("g", Class::Interactive).await.unwrap(),
        ];
        assert!(admission.admit("g", Class::Interactive).await.is_err());
        drop(g);
        admission.configure("f", function(10, 0, 0)).unwrap();
        let all: Vec<Permit> =
            futures::future::join_all((0..4).map(|_| admission.admit("g", Class::Interactive)))
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect();
        assert_eq!(admission.in_flight(), all.len());
    }

    #[tokio::test(start_paused = true)]
    async fn a_function_removed_and_created_again_while_running_starts_from_zero() {
        let admission = node(4, 4);
        admission.configure("f", function(2, 0, 1)).unwrap();
        let old = admission.admit("f", Class::Interactive).await.unwrap();
        let old2 = admission.admit("f", Class::Interactive).await.unwrap();
        admission.remove("f");
        admission.configure("f", function(2, 0, 1)).unwrap();
        assert_eq!(admission.load("f").in_flight, 0);
        let new = admission.admit("f", Class::Interactive).await.unwrap();
        drop((old, old2));
        assert_eq!(admission.load("f").in_flight, 1);
        let _new2 = admission.admit("f", Class::Interactive).await.unwrap();
        drop(new);
        assert_eq!(admission.in_flight(), 1);
        // The node's shared capacity is whole again: 3 shared + 1 reserved.
        admission.configure("g", function(10, 0, 0)).unwrap();
        let mut g = Vec::new();
        while let Ok(permit) = admission.admit("g", Class::Interactive).await {
            g.push(permit);
        }
        assert_eq!(g.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_gives_up_leaves_the_queue() {
        let admission = node(4, 4);
        admission.configure("f", function(1, 1, 0)).unwrap();
        let _running = admission.admit("f", Class::Interactive).await.unwrap();
        let gave_up = tokio::time::timeout(
            Duration::from_millis(50),
            admission.admit("f", Class::Interactive),
        )
        .await;
        assert!(gave_up.is_err(), "it was still waiting");
        assert_eq!(admission.load("f").queued, 0);
        // Its place is free for the next caller.
        let next = tokio::time::timeout(
            Duration::from_millis(50),
            admission.admit("f", Class::Interactive),
        )
        .await;
        assert!(next.is_err(), "queued, not refused");
    }
}
