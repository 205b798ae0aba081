//! Shared by the benches: the clock they measure with.

use std::time::{Duration, Instant};

/// This thread's CPU time so far (Linux `/proc/thread-self/schedstat`: nanoseconds on a CPU), so
/// that other load on the machine does not count; the wall time since `wall_start` where that
/// file is missing.
pub(crate) fn cpu_time(wall_start: Instant) -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map(Duration::from_nanos)
        .unwrap_or_else(|| wall_start.elapsed())
}
