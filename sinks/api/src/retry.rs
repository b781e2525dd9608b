//! One backoff for every retry loop: a failing write, a sink unreachable at start-up,
//! an interrupted insert still running, a commit that raced another writer.
//!
//! Exponential with jitter (from `backon`), so instances that failed together (a
//! server restart seen by the whole group) do not come back in lockstep.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Delays starting near `first`, doubling up to `max`, each with a random jitter of up
/// to the delay itself; never ends (the caller decides when to give up).
pub fn backoff(first: Duration, max: Duration) -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::new()
        .with_min_delay(first)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_its_cap_with_jitter() {
        let first = Duration::from_millis(100);
        let max = Duration::from_millis(800);
        let delays: Vec<Duration> = backoff(first, max).take(8).collect();
        assert!(delays[0] >= first && delays[0] < first * 2, "{delays:?}");
        // Jitter adds up to the delay itself on top of the capped delay.
        assert!(delays.iter().all(|d| *d <= max * 2), "{delays:?}");
        assert!(delays[7] >= max, "{delays:?}");
        let again: Vec<Duration> = backoff(first, max).take(8).collect();
        assert_ne!(delays, again, "two instances must not retry in lockstep");
    }
}
