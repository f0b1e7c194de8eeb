//! A retry budget per upstream bounds retries in flight to a share of its active requests,
//! so a failing upstream cannot multiply its own load (Envoy's retry_budget, minimum 3).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Retries in flight are always allowed up to this many, however few requests are active.
const MIN_RETRY_CONCURRENCY: usize = 3;

/// Active requests and retries in flight of one upstream.
#[derive(Debug, Default)]
pub struct RetryBudget {
    active: AtomicUsize,
    retries: AtomicUsize,
}

impl RetryBudget {
    /// Counts an active request until the guard is dropped.
    pub fn start_request(self: &Arc<Self>) -> BudgetGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        BudgetGuard {
            budget: self.clone(),
            counter: Counter::Active,
        }
    }

    /// Takes a retry slot if retries in flight stay within `percent` of active requests
    /// (and at least [`MIN_RETRY_CONCURRENCY`]); the slot is held until the guard drops.
    pub fn try_retry(self: &Arc<Self>, percent: u32) -> Option<BudgetGuard> {
        let active = self.active.load(Ordering::Relaxed);
        let allowed = (active * percent as usize / 100).max(MIN_RETRY_CONCURRENCY);
        self.retries
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                (r < allowed).then_some(r + 1)
            })
            .ok()?;
        Some(BudgetGuard {
            budget: self.clone(),
            counter: Counter::Retry,
        })
    }

    /// Retries in flight now.
    pub fn retries_in_flight(&self) -> usize {
        self.retries.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
enum Counter {
    Active,
    Retry,
}

/// Releases an active-request count or a retry slot when dropped.
#[derive(Debug)]
pub struct BudgetGuard {
    budget: Arc<RetryBudget>,
    counter: Counter,
}

impl Drop for BudgetGuard {
    fn drop(&mut self) {
        let counter = match self.counter {
            Counter::Active => &self.budget.active,
            Counter::Retry => &self.budget.retries,
        };
        counter.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_allows_minimum_then_percentage_of_active() {
        let budget = Arc::new(RetryBudget::default());
        let active: Vec<_> = (0..50).map(|_| budget.start_request()).collect();
        // 20% of 50 = 10 retries.
        let retries: Vec<_> = (0..10)
            .map(|_| budget.try_retry(20).expect("within budget"))
            .collect();
        assert!(budget.try_retry(20).is_none());
        drop(retries);
        drop(active);
        let few: Vec<_> = (0..3)
            .map(|_| budget.try_retry(20).expect("minimum 3"))
            .collect();
        assert!(budget.try_retry(20).is_none());
        drop(few);
        assert_eq!(budget.retries_in_flight(), 0);
    }
}
