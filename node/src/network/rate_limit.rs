//! Rate limiting by key: a token bucket per key (a connected peer, an origin identity, a sync requester), so
//! one party's flood cannot starve the handling of everyone else's. Time is passed in: no clock reads here.
//!
//! Invariants:
//! - A key's bucket starts full (`burst` tokens), refills at `rate_per_sec` and never holds more than `burst`.
//! - [`RateLimiter::check`] either takes one token or says how long until one is there
//!   ([`TooSoon`]); a refused call takes nothing.
//! - Memory is bounded by activity, not by the number of keys ever seen: a bucket that has refilled is
//!   indistinguishable from no bucket, so [`RateLimiter::prune`] drops it; a key that sent one message at
//!   time t costs memory until t + 1/rate at most. `max_keys` caps the map outright: past it, the buckets
//!   closest to full are dropped first (the parties that sent least recently lose the least).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Over the rate: a token will be there after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooSoon(pub Duration);

#[derive(Debug)]
pub struct RateLimiter<K> {
    rate_per_sec: f64,
    burst: f64,
    max_keys: usize,
    buckets: HashMap<K, Bucket>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `rate_per_sec` tokens a second per key, at most `burst` saved up, at most `max_keys` buckets held.
    pub fn new(rate_per_sec: u32, burst: u32, max_keys: usize) -> Self {
        RateLimiter {
            rate_per_sec: rate_per_sec.max(1) as f64,
            burst: burst.max(1) as f64,
            max_keys: max_keys.max(1),
            buckets: HashMap::new(),
        }
    }

    fn refilled(&self, b: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        (b.tokens + elapsed * self.rate_per_sec).min(self.burst)
    }

    /// Takes one token for `key`, or says how long until one is there.
    pub fn check(&mut self, key: &K, now: Instant) -> Result<(), TooSoon> {
        let tokens = match self.buckets.get(key) {
            Some(b) => self.refilled(b, now),
            None => {
                if self.buckets.len() >= self.max_keys {
                    self.prune(now);
                    if self.buckets.len() >= self.max_keys {
                        self.evict_fullest(now);
                    }
                }
                self.burst
            }
        };
        if tokens >= 1.0 {
            self.buckets.insert(
                key.clone(),
                Bucket {
                    tokens: tokens - 1.0,
                    last: now,
                },
            );
            Ok(())
        } else {
            self.buckets
                .insert(key.clone(), Bucket { tokens, last: now });
            Err(TooSoon(Duration::from_secs_f64(
                (1.0 - tokens) / self.rate_per_sec,
            )))
        }
    }

    /// Whether `key` may send one more now (takes the token).
    pub fn allow(&mut self, key: &K, now: Instant) -> bool {
        self.check(key, now).is_ok()
    }

    /// Drops every bucket that has refilled completely: it behaves exactly like an absent one.
    pub fn prune(&mut self, now: Instant) {
        let (rate, burst) = (self.rate_per_sec, self.burst);
        self.buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
            b.tokens + elapsed * rate < burst
        });
    }

    /// Drops the fuller half of the buckets (the cap was reached with every bucket still refilling).
    fn evict_fullest(&mut self, now: Instant) {
        let mut levels: Vec<(f64, K)> = self
            .buckets
            .iter()
            .map(|(k, b)| (self.refilled(b, now), k.clone()))
            .collect();
        levels.sort_by(|a, b| b.0.total_cmp(&a.0));
        let drop = levels.len().div_ceil(2);
        for (_, k) in levels.into_iter().take(drop) {
            self.buckets.remove(&k);
        }
    }

    /// Buckets held (for the memory bound's tests and metrics).
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate_and_how_long_to_wait() {
        let mut rl = RateLimiter::new(10, 5, 100);
        let (p, q) = (1u32, 2u32);
        let t0 = Instant::now();
        assert_eq!(
            (0..8).filter(|_| rl.allow(&p, t0)).count(),
            5,
            "burst allowance"
        );
        assert!(rl.allow(&q, t0), "other keys are unaffected");
        let Err(TooSoon(wait)) = rl.check(&p, t0 + Duration::from_millis(50)) else {
            panic!("over the rate")
        };
        assert!(
            wait > Duration::from_millis(40) && wait <= Duration::from_millis(51),
            "{wait:?}"
        );
        assert!(
            rl.allow(&p, t0 + Duration::from_millis(200)),
            "refilled at 10/s"
        );
    }

    #[test]
    fn memory_follows_activity_not_the_number_of_keys_ever_seen() {
        let mut rl = RateLimiter::new(100, 10, 1_000);
        let t0 = Instant::now();
        for k in 0..500u32 {
            assert!(rl.allow(&k, t0));
        }
        assert_eq!(rl.len(), 500);
        // One token refills in 10 ms: after that every bucket is full again, and gone.
        rl.prune(t0 + Duration::from_millis(11));
        assert!(rl.is_empty());
    }

    #[test]
    fn the_cap_holds_even_when_every_bucket_is_still_refilling() {
        let mut rl = RateLimiter::new(1, 10, 100);
        let t0 = Instant::now();
        for k in 0..10_000u32 {
            assert!(
                rl.allow(&k, t0),
                "a new key always starts with a full bucket"
            );
            assert!(rl.len() <= 100);
        }
        // A key that flooded keeps its empty bucket over one that sent once: the fuller ones go first.
        let mut rl = RateLimiter::new(1, 3, 4);
        for _ in 0..3 {
            assert!(rl.allow(&0u32, t0));
        }
        for k in 1..20u32 {
            rl.allow(&k, t0);
        }
        assert!(!rl.allow(&0, t0), "the flooder is still limited");
    }
}
