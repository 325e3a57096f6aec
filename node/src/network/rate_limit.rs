//! Per-peer rate limiting of gossip messages: a token bucket per peer, so one peer's flood cannot starve the
//! validation of everyone else's messages. Time is passed in, which keeps this testable without a clock.

use std::collections::HashMap;
use std::time::Instant;

use libp2p::PeerId;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Debug)]
pub struct RateLimiter {
    rate_per_sec: f64,
    burst: f64,
    buckets: HashMap<PeerId, Bucket>,
}

impl RateLimiter {
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        RateLimiter {
            rate_per_sec: rate_per_sec as f64,
            burst: burst.max(1) as f64,
            buckets: HashMap::new(),
        }
    }

    /// Takes one token for `peer`; false when the peer is over its rate.
    pub fn allow(&mut self, peer: &PeerId, now: Instant) -> bool {
        let b = self.buckets.entry(*peer).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate_per_sec).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    pub fn forget(&mut self, peer: &PeerId) {
        self.buckets.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_rate() {
        let mut rl = RateLimiter::new(10, 5);
        let p = PeerId::random();
        let q = PeerId::random();
        let t0 = Instant::now();
        assert_eq!(
            (0..8).filter(|_| rl.allow(&p, t0)).count(),
            5,
            "burst allowance"
        );
        assert!(rl.allow(&q, t0), "other peers are unaffected");
        assert!(!rl.allow(&p, t0 + Duration::from_millis(50)));
        assert!(
            rl.allow(&p, t0 + Duration::from_millis(200)),
            "refilled at 10/s"
        );
    }
}
