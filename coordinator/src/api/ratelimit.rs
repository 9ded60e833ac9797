//! Per-token rate limits: one token bucket per API token name (`floe serve --rate-limit`,
//! `--rate-burst`). A request over its token's rate gets 429 with `Retry-After`.
//!
//! The table of buckets is bounded ([`MAX_BUCKETS`]): when it is full, buckets that have
//! refilled completely are dropped first (a full bucket is what a new one would be, so
//! nothing is lost), then the one idle longest. Device routes are not limited here (the
//! ingest queue answers 503 when full). Time is an input (milliseconds), so the arithmetic
//! is tested without a clock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Most buckets kept (one per token name seen recently).
pub const MAX_BUCKETS: usize = 4096;
/// The default sustained rate per token (requests per second).
pub const DEFAULT_RATE: u32 = 100;
/// The default burst per token.
pub const DEFAULT_BURST: u32 = 1000;
/// The highest rate or burst accepted.
pub const MAX_RATE: u32 = 1_000_000;
/// The default allowance of failed authentications (an unknown, revoked or expired bearer
/// token) per client address: a burst of 20, then one a second. Past it the address gets 429
/// before its token is even looked at, so guessing tokens or flooding the token table costs
/// the guesser time, not the coordinator.
pub const DEFAULT_AUTH_FAILURES: RateLimit = RateLimit {
    per_sec: 1,
    burst: 20,
};

/// A token's allowance: `per_sec` requests a second on average, `burst` at once. A rate of
/// 0 turns the limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per second (0: unlimited).
    pub per_sec: u32,
    /// Requests allowed at once after an idle spell (at least 1 when limited).
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_sec: DEFAULT_RATE,
            burst: DEFAULT_BURST,
        }
    }
}

impl RateLimit {
    /// Checks both numbers are in range; the error names the setting.
    pub fn check(&self) -> Result<(), String> {
        if self.per_sec > MAX_RATE {
            return Err(format!(
                "rate_limit: {} is above {MAX_RATE} per second",
                self.per_sec
            ));
        }
        if self.per_sec > 0 && !(1..=MAX_RATE).contains(&self.burst) {
            return Err(format!(
                "rate_burst: {} is out of range: 1 to {MAX_RATE}",
                self.burst
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Requests left, scaled by 1000 (milli-requests), so refills stay integral.
    milli: u64,
    /// When `milli` was last brought up to date (ms).
    at: u64,
}

/// What the limiter counted since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimiterStats {
    /// Requests answered 429.
    pub throttled: u64,
    /// Buckets dropped to keep the table within [`MAX_BUCKETS`].
    pub evicted: u64,
    /// Buckets held now.
    pub buckets: usize,
}

/// The buckets of every token.
#[derive(Debug)]
pub struct Limiter {
    limit: RateLimit,
    cap: usize,
    buckets: Mutex<HashMap<Arc<str>, Bucket>>,
    throttled: AtomicU64,
    evicted: AtomicU64,
}

impl Limiter {
    /// A limiter with `limit` for every token.
    pub fn new(limit: RateLimit) -> Self {
        Limiter::with_cap(limit, MAX_BUCKETS)
    }

    fn with_cap(limit: RateLimit, cap: usize) -> Self {
        Limiter {
            limit,
            cap: cap.max(1),
            buckets: Mutex::new(HashMap::new()),
            throttled: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    fn full(&self) -> u64 {
        u64::from(self.limit.burst).saturating_mul(1000)
    }

    /// The bucket refilled up to `now`.
    fn refill(&self, b: Bucket, now: u64) -> Bucket {
        let elapsed = now.saturating_sub(b.at);
        // per_sec requests a second = per_sec milli-requests a millisecond.
        let milli = b
            .milli
            .saturating_add(elapsed.saturating_mul(u64::from(self.limit.per_sec)))
            .min(self.full());
        Bucket { milli, at: now }
    }

    /// Takes one request from `name`'s bucket at `now` (ms). `Err(seconds)`: over the limit,
    /// retry after that many seconds (at least 1).
    pub fn check(&self, name: &Arc<str>, now: u64) -> Result<(), u64> {
        if self.limit.per_sec == 0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = match buckets.get(name) {
            Some(b) => self.refill(*b, now),
            None => {
                if buckets.len() >= self.cap {
                    self.make_room(&mut buckets, now);
                }
                Bucket {
                    milli: self.full(),
                    at: now,
                }
            }
        };
        if bucket.milli >= 1000 {
            buckets.insert(
                name.clone(),
                Bucket {
                    milli: bucket.milli - 1000,
                    at: now,
                },
            );
            return Ok(());
        }
        buckets.insert(name.clone(), bucket);
        self.throttled.fetch_add(1, Ordering::Relaxed);
        let missing = 1000 - bucket.milli;
        let per_ms = u64::from(self.limit.per_sec);
        Err(missing.div_ceil(per_ms).div_ceil(1000).max(1))
    }

    /// Counts one refusal that [`Limiter::exhausted`] caused (it takes nothing from a bucket).
    pub fn count_refusal(&self) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether `name`'s bucket is empty at `now`, without taking from it: `Some(seconds)` to
    /// wait when it is (at least 1), `None` when a request would pass.
    pub fn exhausted(&self, name: &str, now: u64) -> Option<u64> {
        if self.limit.per_sec == 0 {
            return None;
        }
        let buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = self.refill(*buckets.get(name)?, now);
        (bucket.milli < 1000).then(|| {
            let missing = 1000 - bucket.milli;
            missing
                .div_ceil(u64::from(self.limit.per_sec))
                .div_ceil(1000)
                .max(1)
        })
    }

    /// Drops every bucket that is full again at `now`; if none is, the one idle longest.
    fn make_room(&self, buckets: &mut HashMap<Arc<str>, Bucket>, now: u64) {
        let before = buckets.len();
        let full = self.full();
        buckets.retain(|_, b| self.refill(*b, now).milli < full);
        if buckets.len() == before {
            if let Some(oldest) = buckets
                .iter()
                .min_by_key(|(_, b)| b.at)
                .map(|(k, _)| k.clone())
            {
                buckets.remove(&oldest);
            }
        }
        let dropped = before.saturating_sub(buckets.len()) as u64;
        self.evicted.fetch_add(dropped, Ordering::Relaxed);
    }

    /// What it counted.
    pub fn stats(&self) -> LimiterStats {
        LimiterStats {
            throttled: self.throttled.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            buckets: self
                .buckets
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds_and_retry_after_is_honest() {
        let l = Limiter::new(RateLimit {
            per_sec: 2,
            burst: 3,
        });
        let a = name("a");
        for _ in 0..3 {
            assert_eq!(l.check(&a, 1_000), Ok(()));
        }
        assert_eq!(l.check(&a, 1_000), Err(1));
        // Half a second later one request's worth has come back.
        assert_eq!(l.check(&a, 1_500), Ok(()));
        assert_eq!(l.check(&a, 1_500), Err(1));
        // Another token has its own bucket.
        assert_eq!(l.check(&name("b"), 1_500), Ok(()));
        assert_eq!(l.stats().throttled, 2);
        // Idle long enough, the bucket is full again (and no fuller).
        for _ in 0..3 {
            assert_eq!(l.check(&a, 100_000), Ok(()));
        }
        assert!(l.check(&a, 100_000).is_err());
    }

    #[test]
    fn a_slow_rate_asks_for_a_longer_wait() {
        let l = Limiter::new(RateLimit {
            per_sec: 1,
            burst: 1,
        });
        let a = name("a");
        assert_eq!(l.check(&a, 0), Ok(()));
        assert_eq!(l.check(&a, 0), Err(1));
        assert_eq!(l.check(&a, 999), Err(1));
        assert_eq!(l.check(&a, 1_000), Ok(()));
    }

    #[test]
    fn rate_zero_is_unlimited_and_keeps_no_bucket() {
        let l = Limiter::new(RateLimit {
            per_sec: 0,
            burst: 0,
        });
        for _ in 0..10_000 {
            assert_eq!(l.check(&name("a"), 0), Ok(()));
        }
        assert_eq!(l.stats().buckets, 0);
    }

    #[test]
    fn the_table_stays_bounded_dropping_full_buckets_first() {
        let l = Limiter::with_cap(
            RateLimit {
                per_sec: 1,
                burst: 2,
            },
            3,
        );
        // "busy" drains its bucket; the others take one request each.
        let busy = name("busy");
        assert_eq!(l.check(&busy, 0), Ok(()));
        assert_eq!(l.check(&busy, 0), Ok(()));
        assert_eq!(l.check(&name("x"), 0), Ok(()));
        assert_eq!(l.check(&name("y"), 500), Ok(()));
        // At 1 s "x" is full again, "y" and "busy" are not: "x" goes.
        assert_eq!(l.check(&name("z"), 1_000), Ok(()));
        let s = l.stats();
        assert_eq!((s.buckets, s.evicted), (3, 1));
        // "busy" kept its state: one request came back in a second, not a full bucket.
        assert_eq!(l.check(&busy, 1_000), Ok(()));
        assert!(l.check(&busy, 1_000).is_err());
        // Nothing full: the one idle longest goes, and the table still holds 3.
        for i in 0..10 {
            let _ = l.check(&name(&format!("n{i}")), 1_000);
        }
        assert_eq!(l.stats().buckets, 3);
    }

    #[test]
    fn out_of_range_settings_are_named() {
        let e = RateLimit {
            per_sec: 10,
            burst: 0,
        }
        .check()
        .unwrap_err();
        assert!(e.contains("rate_burst"), "{e}");
        let e = RateLimit {
            per_sec: MAX_RATE + 1,
            burst: 1,
        }
        .check()
        .unwrap_err();
        assert!(e.contains("rate_limit"), "{e}");
        assert_eq!(RateLimit::default().check(), Ok(()));
    }
}
