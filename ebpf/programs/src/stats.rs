//! Per-CPU counters, read by `skiff` and exported as metrics.

use crate::maps::SKIFF_STATS_V1;

/// Adds one to counter `stat` (a `STAT_*` constant).
#[inline(always)]
pub fn bump(stat: u32) {
    if let Some(counter) = SKIFF_STATS_V1.get_ptr_mut(stat) {
        // SAFETY: the pointer comes from a successful per-CPU array lookup, so it is valid and
        // only this CPU writes it while the program runs.
        unsafe { *counter += 1 };
    }
}
