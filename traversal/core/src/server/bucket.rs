//! The server's one rate limiter: a token bucket, kept as the time at which it would be full
//! again (the generic cell rate algorithm, ITU-T I.371), so one bucket is one `Option<Instant>`
//! (16 bytes) and refilling loses no fraction of a token however often it is asked.
//!
//! Used for the P4 acknowledgements to listed addresses (per source, [`super::Server`]), the
//! spacing of probes (per registration) and the relay (bytes and frames per call direction,
//! [`super::calls`]).

use std::time::{Duration, Instant};

/// How fast a bucket fills and how deep it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rate {
    /// Time one token takes to come back; `None` when the rate is zero (nothing is admitted).
    interval: Option<Duration>,
    /// Depth of the bucket, as the time it takes to fill from empty.
    depth: Duration,
}

impl Rate {
    /// `per_s` tokens a second, at most `burst` at once.
    pub(crate) fn new(per_s: u32, burst: u32) -> Self {
        let interval = (per_s > 0).then(|| Duration::from_secs(1) / per_s);
        Rate {
            interval,
            depth: interval.map_or(Duration::ZERO, |i| i.saturating_mul(burst)),
        }
    }

    /// `per_s` tokens a second, at most as many as `burst` of time brings.
    pub(crate) fn over(per_s: u32, burst: Duration) -> Self {
        Rate {
            interval: (per_s > 0).then(|| Duration::from_secs(1) / per_s),
            depth: burst,
        }
    }

    /// One token every `interval`, at most `burst` at once: rates below one a second (names
    /// per hour). A zero interval admits nothing.
    pub(crate) fn every(interval: Duration, burst: u32) -> Self {
        Rate {
            interval: (!interval.is_zero()).then_some(interval),
            depth: interval.saturating_mul(burst),
        }
    }

    /// The time `tokens` take to come back.
    fn cost(&self, tokens: u32) -> Option<Duration> {
        self.interval?.checked_mul(tokens)
    }
}

/// A token bucket; starts full. The rate is passed on each use, so a table of buckets that share
/// it stores only their state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TokenBucket {
    /// When the bucket would be full again; `None` (or a time past) when it is full.
    full_at: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) const FULL: TokenBucket = TokenBucket { full_at: None };

    /// Takes `tokens` if the bucket has them at `now`; false (and nothing taken) if not.
    pub(crate) fn take(&mut self, now: Instant, rate: &Rate, tokens: u32) -> bool {
        match self.admit(now, rate, tokens) {
            Some(full_at) => {
                self.full_at = Some(full_at);
                true
            }
            None => false,
        }
    }

    /// Whether the bucket is full at `now` (then it is the same as a fresh one, and a table may
    /// forget it).
    pub(crate) fn is_full(&self, now: Instant) -> bool {
        self.full_at.is_none_or(|t| t <= now)
    }

    /// Whether `tokens` could be taken at `now` (nothing is taken).
    pub(crate) fn has(&self, now: Instant, rate: &Rate, tokens: u32) -> bool {
        self.admit(now, rate, tokens).is_some()
    }

    /// Takes `tokens_a` from `a` and `tokens_b` from `b` if both have them, else nothing.
    pub(crate) fn take_both(
        now: Instant,
        (a, rate_a, tokens_a): (&mut TokenBucket, &Rate, u32),
        (b, rate_b, tokens_b): (&mut TokenBucket, &Rate, u32),
    ) -> bool {
        match (
            a.admit(now, rate_a, tokens_a),
            b.admit(now, rate_b, tokens_b),
        ) {
            (Some(full_a), Some(full_b)) => {
                a.full_at = Some(full_a);
                b.full_at = Some(full_b);
                true
            }
            _ => false,
        }
    }

    /// When the bucket would be full again after taking `tokens` at `now`, if it has them.
    fn admit(&self, now: Instant, rate: &Rate, tokens: u32) -> Option<Instant> {
        let from = self.full_at.map_or(now, |t| t.max(now));
        let full_at = from.checked_add(rate.cost(tokens)?)?;
        (full_at.saturating_duration_since(now) <= rate.depth).then_some(full_at)
    }
}

#[cfg(test)]
mod tests {
    // A test's virtual clock starts at any instant; none is read again.
    #![allow(clippy::disallowed_methods)]

    use super::*;

    fn count(bucket: &mut TokenBucket, now: Instant, rate: &Rate, tokens: u32) -> usize {
        (0..1000)
            .take_while(|_| bucket.take(now, rate, tokens))
            .count()
    }

    #[test]
    fn a_full_bucket_gives_its_burst_then_refills_at_the_rate() {
        let rate = Rate::new(4, 12);
        let start = Instant::now();
        let mut bucket = TokenBucket::FULL;
        assert_eq!(count(&mut bucket, start, &rate, 1), 12);
        // 4 a second: one every 250 ms, none before.
        let t = start + Duration::from_millis(249);
        assert!(!bucket.take(t, &rate, 1));
        let t = start + Duration::from_millis(250);
        assert!(bucket.take(t, &rate, 1));
        assert!(!bucket.take(t, &rate, 1));
        // After a long pause the bucket is full again, never fuller.
        let t = start + Duration::from_secs(3600);
        assert_eq!(count(&mut bucket, t, &rate, 1), 12);
    }

    #[test]
    fn asking_often_loses_no_fraction_of_a_token() {
        // 3 a second, asked every 100 us for 2 s: the burst of 3, then one every 333.3 ms
        // (at 333.4, 666.7, 1000, 1333.4 and 1666.7 ms). A bucket that rounded each refill
        // down would get nothing back at this rate of asking.
        let rate = Rate::new(3, 3);
        let start = Instant::now();
        let mut bucket = TokenBucket::FULL;
        let taken = (0..20_000)
            .filter(|t| bucket.take(start + Duration::from_micros(100 * t), &rate, 1))
            .count();
        assert_eq!(taken, 3 + 5);
    }

    #[test]
    fn a_burst_of_one_is_a_minimum_spacing() {
        let rate = Rate::new(10, 1);
        let start = Instant::now();
        let mut bucket = TokenBucket::FULL;
        assert!(bucket.take(start, &rate, 1));
        assert!(!bucket.take(start + Duration::from_millis(99), &rate, 1));
        assert!(bucket.take(start + Duration::from_millis(100), &rate, 1));
    }

    #[test]
    fn tokens_by_size_and_a_depth_in_time() {
        // 64,000 bytes a second, one second deep: 64 frames of 1,000 bytes, then one per 1/64 s.
        let rate = Rate::over(64_000, Duration::from_secs(1));
        let start = Instant::now();
        let mut bucket = TokenBucket::FULL;
        assert_eq!(count(&mut bucket, start, &rate, 1000), 64);
        assert!(!bucket.take(start + Duration::from_millis(15), &rate, 1000));
        assert!(bucket.take(start + Duration::from_millis(16), &rate, 1000));
        // More than the depth never passes.
        let t = start + Duration::from_secs(60);
        assert!(!bucket.take(t, &rate, 64_001));
        assert!(bucket.take(t, &rate, 64_000));
    }

    #[test]
    fn take_both_takes_from_neither_unless_both_have_enough() {
        let bytes = Rate::over(1000, Duration::from_secs(1));
        let frames = Rate::over(2, Duration::from_secs(1));
        let now = Instant::now();
        let (mut b, mut f) = (TokenBucket::FULL, TokenBucket::FULL);
        let mut frame = |t: Instant, len: u32| {
            TokenBucket::take_both(t, (&mut b, &bytes, len), (&mut f, &frames, 1))
        };
        assert!(frame(now, 600));
        // Not enough bytes: no frame is taken either, so one is left for a smaller one.
        assert!(!frame(now, 600));
        assert!(frame(now, 400));
        // No frame left, even for no bytes.
        assert!(!frame(now, 0));
        // Half a second later: one frame and 500 bytes are back.
        let later = now + Duration::from_millis(500);
        assert!(!frame(later, 501));
        assert!(frame(later, 500));
        assert!(!frame(later, 0));
    }

    #[test]
    fn a_rate_below_one_a_second_and_fullness() {
        // 5 an hour, 5 at once: the sixth waits 12 minutes.
        let rate = Rate::every(Duration::from_secs(720), 5);
        let start = Instant::now();
        let mut bucket = TokenBucket::FULL;
        assert!(bucket.is_full(start));
        assert_eq!(count(&mut bucket, start, &rate, 1), 5);
        assert!(!bucket.has(start + Duration::from_secs(719), &rate, 1));
        assert!(bucket.has(start + Duration::from_secs(720), &rate, 1));
        assert!(!bucket.is_full(start + Duration::from_secs(3599)));
        assert!(bucket.is_full(start + Duration::from_secs(3600)));
        let mut empty = TokenBucket::FULL;
        assert!(!empty.take(start, &Rate::every(Duration::ZERO, 5), 1));
    }

    #[test]
    fn a_zero_rate_admits_nothing() {
        let now = Instant::now();
        let mut bucket = TokenBucket::FULL;
        assert!(!bucket.take(now, &Rate::new(0, 10), 1));
        assert!(!bucket.take(now, &Rate::over(0, Duration::from_secs(1)), 1));
        // And a zero-token request always passes a non-zero rate.
        assert!(bucket.take(now, &Rate::new(1, 1), 0));
    }
}
