//! The fee policy: what rate the wallet's own payments, top-ups, refunds, bonds and bumps pay when the
//! caller names none. Pure; the chain source supplies the inputs.
//!
//! Invariants:
//! - With bitcoind RPC, bitcoind's estimate for `confirm_within_blocks` is used when it has one; the light
//!   client has no mempool and no estimate, so it pays the configured target.
//! - Never below the peers' minimum relay fee (a transaction under it is not relayed at all), never below
//!   1 sat/vB, and never above `max_sat_per_vb` (a runaway estimate cannot drain a payment).

use serde::{Deserialize, Serialize};

/// How fees are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeePolicy {
    /// The rate paid when no estimate is available (light client, or bitcoind without data), sat/vB.
    pub target_sat_per_vb: u64,
    /// bitcoind's `estimatesmartfee` horizon.
    pub confirm_within_blocks: u16,
    /// The cap on any chosen rate, sat/vB.
    pub max_sat_per_vb: u64,
}

impl Default for FeePolicy {
    fn default() -> Self {
        FeePolicy {
            target_sat_per_vb: crate::wallet::FALLBACK_FEE_SAT_PER_VB,
            confirm_within_blocks: 6,
            max_sat_per_vb: 500,
        }
    }
}

/// Where a chosen rate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeeSource {
    /// bitcoind's estimate.
    Estimate,
    /// The configured target.
    Target,
    /// Raised to the peers' minimum relay fee.
    MinRelay,
    /// Lowered to the configured cap.
    Cap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeChoice {
    pub sat_per_vb: u64,
    pub source: FeeSource,
}

impl FeePolicy {
    pub fn choose(&self, estimate: Option<u64>, min_relay: Option<u64>) -> FeeChoice {
        let (mut rate, mut source) = match estimate {
            Some(e) => (e, FeeSource::Estimate),
            None => (self.target_sat_per_vb, FeeSource::Target),
        };
        let floor = min_relay.unwrap_or(1).max(1);
        if rate < floor {
            rate = floor;
            source = FeeSource::MinRelay;
        }
        if rate > self.max_sat_per_vb.max(floor) {
            rate = self.max_sat_per_vb.max(floor);
            source = FeeSource::Cap;
        }
        FeeChoice {
            sat_per_vb: rate,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fee_choices() {
        let p = FeePolicy {
            target_sat_per_vb: 5,
            confirm_within_blocks: 6,
            max_sat_per_vb: 100,
        };
        let c = |sat_per_vb, source| FeeChoice { sat_per_vb, source };
        let cases = [
            (
                "light client pays the target",
                None,
                Some(1),
                c(5, FeeSource::Target),
            ),
            (
                "bitcoind's estimate wins over the target",
                Some(12),
                None,
                c(12, FeeSource::Estimate),
            ),
            (
                "an estimate below the target is used",
                Some(3),
                None,
                c(3, FeeSource::Estimate),
            ),
            (
                "the min relay fee is a floor",
                None,
                Some(8),
                c(8, FeeSource::MinRelay),
            ),
            (
                "a runaway estimate is capped",
                Some(900),
                None,
                c(100, FeeSource::Cap),
            ),
            (
                "the cap never goes under the relay floor",
                Some(900),
                Some(150),
                c(150, FeeSource::Cap),
            ),
            (
                "nothing known: the target",
                None,
                None,
                c(5, FeeSource::Target),
            ),
        ];
        for (name, est, relay, want) in cases {
            assert_eq!(p.choose(est, relay), want, "{name}");
        }
    }

    #[test]
    fn a_zero_target_still_pays_one_sat_per_vbyte() {
        let p = FeePolicy {
            target_sat_per_vb: 0,
            ..FeePolicy::default()
        };
        assert_eq!(p.choose(None, None).sat_per_vb, 1);
    }
}
