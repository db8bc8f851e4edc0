//! skiff-scheduler: assigns pending pods to nodes (filter, score, bind) as an ordinary API client.
//!
//! ```text
//!  watch nodes ─┐  (NodeSpec / PodInfo extracted in the watch tasks)
//!  watch pods  ─┼─▶ channel ─▶ run loop ─▶ Core { Cache (nodes + placed/assumed pods), Queue }
//!  bind results ┘                 │            schedule_next: filters → scores → Decision
//!                                 ├─ Bind ─▶ ≤ bind_concurrency tasks: POST pods/NAME/binding
//!                                 └─ Unschedulable ─▶ FailedScheduling event + PodScheduled=False
//! ```
//!
//! Per pod the work is one pass over the nodes with pre-extracted data (cheap filters first) and
//! a second over the feasible ones for scores; node state is updated incrementally, a pod counts
//! on its node from the moment it is assumed, and nothing is re-listed.
#![forbid(unsafe_code)]

mod cache;
mod core;
mod filter;
mod model;
mod queue;
mod run;

use std::time::Duration;

pub use run::run;

/// The scheduler name pods get when spec.schedulerName is unset.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// Tunables; `Default` is what `skiff server` runs with.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only pods whose spec.schedulerName is this (or unset, for the default name) are scheduled.
    pub scheduler_name: String,
    /// Binding requests in flight at once.
    pub bind_concurrency: usize,
    /// Backoff after a failed attempt, doubling per attempt up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// An unschedulable pod is retried after this long even if no cluster event announced a
    /// change that might help it.
    pub unschedulable_flush: Duration,
    /// Write a "Scheduled" event for each binding (upstream does; it doubles the writes).
    pub scheduled_events: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            scheduler_name: DEFAULT_SCHEDULER_NAME.to_owned(),
            bind_concurrency: 32,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            unschedulable_flush: Duration::from_secs(60),
            scheduled_events: true,
        }
    }
}
