//! Budgets' hard caps as last checked: read on every request, tick and delivery (one
//! `ArcSwap` load), set by the budget watcher (`cost::budget::Watcher`). A cap lapses when
//! its month ends, on the node's clock, whether or not a check runs again.

use std::collections::HashMap;

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use crate::clock::Clock;

/// What a budget's hard cap stops now: background triggers always, requests too once
/// `interactive`.
#[derive(Clone, Debug)]
pub struct Block {
    /// Requests get 503.
    pub interactive: bool,
    /// Why, for people.
    pub message: String,
    /// When the month ends and the budget starts over: the block lapses then even if no
    /// check runs again.
    pub until_ms: i64,
}

impl Block {
    /// Seconds from `now_ms` until the block lapses (at least 1): a refused request's
    /// `Retry-After`.
    pub fn retry_after_s(&self, now_ms: i64) -> u64 {
        ((self.until_ms - now_ms).max(1000) / 1000) as u64
    }
}

/// The node's budgets as last checked, read on every request, tick and delivery.
pub struct Budgets {
    /// By scope: `""` for the node, else the function.
    pub(crate) blocks: ArcSwap<HashMap<String, Block>>,
    /// Wakes the watcher at once (a budget was set or removed).
    pub changed: Notify,
    clock: Clock,
}

impl Budgets {
    /// No blocks yet; a block lapses when `clock` passes its month's end.
    pub fn new(clock: Clock) -> Budgets {
        Budgets {
            blocks: ArcSwap::default(),
            changed: Notify::new(),
            clock,
        }
    }

    fn block(&self, function: &str, pick: impl Fn(&Block) -> bool) -> Option<Block> {
        let blocks = self.blocks.load();
        if blocks.is_empty() {
            return None;
        }
        let now = self.clock.now_ms();
        [function, ""]
            .into_iter()
            .filter_map(|scope| blocks.get(scope))
            .find(|b| pick(b) && now < b.until_ms)
            .cloned()
    }

    /// Whether `function`'s cron ticks and queue deliveries must wait, and why.
    pub fn background_paused(&self, function: &str) -> Option<Block> {
        self.block(function, |_| true)
    }

    /// Whether `function`'s requests are refused, and why.
    pub fn refused(&self, function: &str) -> Option<Block> {
        self.block(function, |b| b.interactive)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cost::month_of;

    #[test]
    fn a_function_is_blocked_by_its_own_budget_or_the_nodes() {
        let budgets = Budgets::new(Clock::system());
        assert!(budgets.refused("a").is_none());
        let block = |interactive| Block {
            interactive,
            message: "spent".into(),
            until_ms: i64::MAX,
        };
        budgets
            .blocks
            .store(Arc::new([("a".to_string(), block(false))].into()));
        assert!(budgets.background_paused("a").is_some());
        assert!(budgets.refused("a").is_none());
        assert!(budgets.background_paused("b").is_none());
        budgets
            .blocks
            .store(Arc::new([(String::new(), block(true))].into()));
        assert!(budgets.refused("b").is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_block_lapses_when_its_month_ends_and_retry_after_counts_down_to_it() {
        // 2026-12-31T23:59:58.500Z: a block set now lasts until the month's end.
        let clock = Clock::starting_at(1_798_761_598_500);
        let budgets = Budgets::new(clock);
        let (_, month_end, month) = month_of(clock.now_ms());
        assert_eq!((month_end, month.as_str()), (1_798_761_600_000, "2026-12"));
        let block = Block {
            interactive: true,
            message: "spent".into(),
            until_ms: month_end,
        };
        budgets
            .blocks
            .store(Arc::new([(String::new(), block)].into()));
        let refused = budgets.refused("a").expect("refused before the month ends");
        assert_eq!(refused.retry_after_s(clock.now_ms()), 1);
        tokio::time::sleep(std::time::Duration::from_millis(1_499)).await;
        assert!(
            budgets.refused("a").is_some(),
            "a millisecond before the month ends"
        );
        // Whether or not a check runs again, the new month starts unblocked.
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        assert!(budgets.refused("a").is_none());
        assert!(budgets.background_paused("a").is_none());
        assert_eq!(month_of(clock.now_ms()).2, "2027-01");
    }
}
