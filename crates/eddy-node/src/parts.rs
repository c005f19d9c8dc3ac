//! The parts of a node that several layers share, built once by `start` and handed to each
//! user: the stores, the clock, admission, the meter, the budget caps, the runtime and the
//! store's health. The
//! registry is one user of them among others, not where they are found.

use std::sync::Arc;

use eddy_runtime::Runtime;
use eddy_store::Stores;

use crate::admission::Admission;
use crate::caps::Budgets;
use crate::clock::Clock;
use crate::metering::Meter;

#[derive(Clone)]
pub(crate) struct Parts {
    pub(crate) stores: Stores,
    pub(crate) clock: Clock,
    pub(crate) admission: Arc<Admission>,
    pub(crate) meter: Arc<Meter>,
    pub(crate) budgets: Arc<Budgets>,
    pub(crate) runtime: Arc<Runtime>,
    /// Whether the store answered when last asked (a cluster's shared store).
    pub(crate) store_health: Arc<crate::health::StoreHealth>,
    /// This node's name (in invocation records and heartbeats).
    pub(crate) node: Arc<str>,
}
