//! The route table: which live deployment serves a request path (longest prefix wins).
//!
//! The table is immutable; the registry builds a new one on every change and swaps it in
//! atomically, so the request path reads it without taking a lock.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use eddy_runtime::Deployment;

use crate::admission::FunctionAdmission;

use eddy_parse::routes::candidates;
pub use eddy_parse::routes::{validate_name, validate_route};

/// The live version of one function.
pub struct LiveFunction {
    pub name: Arc<str>,
    pub version: u32,
    /// When the version was created: with the name and number, what tells it apart from a
    /// version of a function removed and deployed again.
    pub created_at_ms: i64,
    /// `sha256:` digest of the component.
    pub digest: String,
    pub route: String,
    pub deployment: Arc<Deployment>,
    /// How many instances of the function exist (all versions).
    pub instances_live: Arc<AtomicUsize>,
    /// The function's admission settings.
    pub admission: FunctionAdmission,
    /// How many plain successes this second got a record in the ring.
    pub records: RecordBudget,
    /// The version's cron schedule.
    pub schedule: Option<eddy_store::ScheduleSettings>,
    /// The node holds WebSocket connections on the route.
    pub websocket: bool,
}

/// Per-second budget of records for successful invocations without output.
#[derive(Default)]
pub struct RecordBudget {
    second: AtomicU64,
    used: AtomicU32,
}

impl RecordBudget {
    /// Whether one more plain success at `at_ms` gets a record, within `per_second_max`.
    pub fn take(&self, at_ms: i64, per_second_max: u32) -> bool {
        let second = (at_ms / 1000) as u64;
        if self.second.swap(second, Ordering::Relaxed) != second {
            self.used.store(0, Ordering::Relaxed);
        }
        self.used.fetch_add(1, Ordering::Relaxed) < per_second_max
    }
}

/// Route prefix → live function.
#[derive(Clone, Default)]
pub struct RouteTable {
    by_prefix: HashMap<String, Arc<LiveFunction>>,
}

impl RouteTable {
    /// The function serving `path`: the longest route that is the path itself or a
    /// whole-segment prefix of it (`/api` serves `/api` and `/api/x`, not `/apix`).
    pub fn lookup(&self, path: &str) -> Option<&Arc<LiveFunction>> {
        candidates(path).find_map(|prefix| self.by_prefix.get(prefix))
    }

    /// The function that owns `route`, if any.
    pub fn owner(&self, route: &str) -> Option<&str> {
        self.by_prefix.get(route).map(|live| &*live.name)
    }

    /// A table with `live` serving its route and no other route for that function.
    pub fn with(&self, live: LiveFunction) -> RouteTable {
        let mut next = self.without(&live.name);
        next.by_prefix.insert(live.route.clone(), Arc::new(live));
        next
    }

    /// A table without any route of function `name`.
    pub fn without(&self, name: &str) -> RouteTable {
        let mut next = self.clone();
        next.by_prefix.retain(|_, live| &*live.name != name);
        next
    }

    /// The live function called `name`.
    pub fn function(&self, name: &str) -> Option<&Arc<LiveFunction>> {
        self.by_prefix.values().find(|live| &*live.name == name)
    }

    /// Every live function.
    pub fn all(&self) -> impl Iterator<Item = &Arc<LiveFunction>> {
        self.by_prefix.values()
    }

    /// Whether a live function runs the component with `digest`.
    pub fn uses(&self, digest: &str) -> bool {
        self.by_prefix.values().any(|live| live.digest == digest)
    }

    /// Number of functions served.
    pub fn len(&self) -> usize {
        self.by_prefix.len()
    }
}
