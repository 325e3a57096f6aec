//! Waiting between tries. Two shapes: [`Backoff`] for retrying a failed request (exponential, jittered, a
//! fixed number of tries) and [`Poll`] for watching a machine change state (gentle growth, up to a deadline).
//! Jitter keeps many leases that failed together from hammering a recovering cloud in lockstep.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use crate::config::RetryPolicy;

/// Delays between the tries of one request.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
    tries_left: u32,
    tried: u32,
}

impl Backoff {
    pub fn new(policy: &RetryPolicy) -> Backoff {
        Backoff {
            next: policy.initial_delay,
            max: policy.max_delay.max(policy.initial_delay),
            tries_left: policy.attempts.max(1),
            tried: 0,
        }
    }

    /// Records a try. Returns how long to sleep before the next one, or `None` when the policy is spent.
    pub fn failed(&mut self) -> Option<Duration> {
        self.tried += 1;
        self.tries_left = self.tries_left.saturating_sub(1);
        if self.tries_left == 0 {
            return None;
        }
        let d = jitter(self.next);
        self.next = (self.next * 2).min(self.max);
        Some(d)
    }

    /// Tries made so far (for error messages).
    pub fn tried(&self) -> u32 {
        self.tried
    }
}

/// Spreads a delay over [75 %, 125 %] of itself. Needs no RNG crate: std's `RandomState` is seeded randomly.
fn jitter(d: Duration) -> Duration {
    let r = RandomState::new().hash_one(Instant::now()) % 1001; // 0..=1000
    d.mul_f64(0.75 + r as f64 / 2000.0)
}

/// Polling a state change until a deadline: 250 ms first, growing by half up to `max_interval`.
#[derive(Debug, Clone)]
pub struct Poll {
    started: Instant,
    deadline: Instant,
    interval: Duration,
    max_interval: Duration,
}

impl Poll {
    pub fn new(timeout: Duration) -> Poll {
        let started = Instant::now();
        Poll {
            started,
            deadline: started + timeout,
            interval: Duration::from_millis(250),
            // A machine that became ACTIVE is noticed at most a second late (measured: a 3 s cap could add
            // 10 % to a 30 s boot; docs/benchmarks.md, Lease).
            max_interval: Duration::from_secs(1),
        }
    }

    /// Sleeps before the next look; `false` once the deadline has passed (do not look again).
    pub async fn wait(&mut self) -> bool {
        let now = Instant::now();
        if now >= self.deadline {
            return false;
        }
        let d = self.interval.min(self.deadline - now);
        tokio::time::sleep(d).await;
        self.interval = self.interval.mul_f64(1.5).min(self.max_interval);
        true
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_ends() {
        let policy = RetryPolicy {
            attempts: 5,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
        };
        let mut b = Backoff::new(&policy);
        let delays: Vec<Duration> = std::iter::from_fn(|| b.failed()).collect();
        assert_eq!(delays.len(), 4, "5 tries = 4 pauses");
        assert_eq!(b.tried(), 5);
        let nominal = [100, 200, 300, 300];
        for (d, n) in delays.iter().zip(nominal) {
            let ms = d.as_millis() as u64;
            assert!(ms >= n * 3 / 4 && ms <= n * 5 / 4, "{ms} ms vs nominal {n}");
        }
    }

    #[test]
    fn one_attempt_means_no_retry() {
        let policy = RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        };
        assert_eq!(Backoff::new(&policy).failed(), None);
    }

    #[tokio::test]
    async fn poll_stops_at_the_deadline() {
        let mut p = Poll::new(Duration::from_millis(600));
        let mut looks = 0;
        while p.wait().await {
            looks += 1;
        }
        assert!((2..=4).contains(&looks), "{looks}");
        assert!(p.elapsed() >= Duration::from_millis(600));
    }
}
