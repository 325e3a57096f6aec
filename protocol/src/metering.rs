//! Metering: a lease runs while its confirmed balance lasts, drained per second at the offer's price. Pure
//! arithmetic on integers (millisatoshis), so buyer and provider compute the same times from the same facts.

use serde::{Deserialize, Serialize};

/// What a lease has been paid and since when it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meter {
    pub price_sats_per_hour: u64,
    /// Confirmed sats received for the lease (top-ups included).
    pub paid_sat: u64,
    /// When the machine became available (unix seconds).
    pub started_at: u64,
}

/// Where a running lease stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Running,
    /// Funds end within the warning window.
    Warn,
    /// Funds are exhausted; the grace period runs.
    Grace,
    /// Grace is over: halt the machine.
    Halt,
}

impl Meter {
    /// Seconds of machine time the payments buy (rounded down).
    pub fn funded_secs(&self) -> u64 {
        if self.price_sats_per_hour == 0 {
            return u64::MAX;
        }
        ((self.paid_sat as u128 * 3600) / self.price_sats_per_hour as u128).min(u64::MAX as u128)
            as u64
    }

    /// The instant the funds run out.
    pub fn runs_until(&self) -> u64 {
        self.started_at.saturating_add(self.funded_secs())
    }

    /// Sats used up to `now` (rounded up: a started second is paid), never more than paid.
    pub fn used_sat(&self, now: u64) -> u64 {
        let secs = now.saturating_sub(self.started_at) as u128;
        let used = (secs * self.price_sats_per_hour as u128).div_ceil(3600);
        used.min(self.paid_sat as u128) as u64
    }

    /// What is left unused at `now` (the refund on cancellation, before the provider's policy).
    pub fn unused_sat(&self, now: u64) -> u64 {
        self.paid_sat - self.used_sat(now)
    }

    pub fn phase(&self, now: u64, warn_before_secs: u64, grace_secs: u64) -> Phase {
        let until = self.runs_until();
        if now >= until.saturating_add(grace_secs) {
            Phase::Halt
        } else if now >= until {
            Phase::Grace
        } else if now.saturating_add(warn_before_secs) >= until {
            Phase::Warn
        } else {
            Phase::Running
        }
    }
}

/// The amount to invoice for `hours` at `price_sats_per_hour`.
pub fn price_for_hours(price_sats_per_hour: u64, hours: u32) -> u64 {
    price_sats_per_hour.saturating_mul(hours as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drains_at_the_offer_rate_and_top_ups_extend() {
        let mut m = Meter {
            price_sats_per_hour: 3600,
            paid_sat: 7200,
            started_at: 1000,
        };
        assert_eq!(m.funded_secs(), 7200);
        assert_eq!(m.runs_until(), 8200);
        assert_eq!(m.used_sat(1000), 0);
        assert_eq!(m.used_sat(1001), 1);
        assert_eq!(m.unused_sat(4600), 3600);
        assert_eq!(m.phase(7000, 600, 300), Phase::Running);
        assert_eq!(m.phase(7600, 600, 300), Phase::Warn);
        assert_eq!(m.phase(8200, 600, 300), Phase::Grace);
        assert_eq!(m.phase(8500, 600, 300), Phase::Halt);
        m.paid_sat += 3600; // a top-up
        assert_eq!(m.phase(8500, 600, 300), Phase::Running);
        assert_eq!(m.runs_until(), 11_800);
        assert_eq!(m.used_sat(1_000_000), m.paid_sat, "never more than paid");
    }

    #[test]
    fn odd_prices_round_in_the_buyers_favour_for_time_and_the_providers_for_use() {
        let m = Meter {
            price_sats_per_hour: 7,
            paid_sat: 1,
            started_at: 0,
        };
        assert_eq!(m.funded_secs(), 514); // 3600/7 = 514.28
        assert_eq!(m.used_sat(1), 1);
        assert_eq!(price_for_hours(900, 3), 2700);
    }
}
