//! A provider's admission policy: how much a buyer may run at once, by trust tier (`trust.rs`).
//!
//! Each tier has a fixed limit on concurrent leases and on sats per hour (the sum of the prices of the
//! buyer's running leases with this provider, the new one included). Anonymous buyers' limits shrink as the
//! pool fills, so anonymous starts get scarcer as compute gets scarcer:
//!
//! ```text
//! anonymous limit = floor(base × reference / (reference + pool_global_sats_per_hour))
//! ```
//!
//! i.e. `base / (1 + global / reference)`: the full base in an idle pool, half of it when the pool's
//! providers together run `reference` sats per hour, a third at twice that, and so on down to zero.
//! `reference = 0` turns the scaling off. `pool_global_sats_per_hour` is the sum of the providers' load
//! reports as far as their live offers back them (`pool_load.rs`), so one identity's claim cannot shut a pool
//! to new buyers. A refusal says which limit was hit and what would let the buyer
//! in: a bond worth at least so much, more completed leases, a smaller machine, or waiting.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::trust::{Tier, TrustReport};

/// Limits of one tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierLimits {
    /// Most leases the buyer may run with this provider at once.
    pub max_concurrent_leases: u32,
    /// Most sats per hour all the buyer's running leases with this provider may cost together.
    pub max_sats_per_hour: u64,
}

/// Limits of anonymous buyers: the base applies in an idle pool and shrinks as the pool's global rate grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnonymousLimits {
    pub max_concurrent_leases: u32,
    pub max_sats_per_hour: u64,
    /// The pool's global rate (sats per hour) at which the anonymous limits are halved; 0: never scaled.
    pub reference_sats_per_hour: u64,
}

impl Default for AnonymousLimits {
    fn default() -> Self {
        AnonymousLimits {
            max_concurrent_leases: 2,
            max_sats_per_hour: 2_000,
            reference_sats_per_hour: 20_000,
        }
    }
}

/// The node's `[provider.admission]` configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionPolicy {
    pub anonymous: AnonymousLimits,
    pub basic: TierLimits,
    pub established: TierLimits,
    pub trusted: TierLimits,
}

impl Default for AdmissionPolicy {
    fn default() -> Self {
        AdmissionPolicy {
            anonymous: AnonymousLimits::default(),
            basic: TierLimits {
                max_concurrent_leases: 4,
                max_sats_per_hour: 20_000,
            },
            established: TierLimits {
                max_concurrent_leases: 16,
                max_sats_per_hour: 200_000,
            },
            trusted: TierLimits {
                max_concurrent_leases: 256,
                max_sats_per_hour: 10_000_000,
            },
        }
    }
}

/// `floor(base × reference / (reference + global))`; `base` when `reference` is 0.
fn scale(base: u64, reference: u64, global: u64) -> u64 {
    if reference == 0 {
        return base;
    }
    let v = base as u128 * reference as u128 / (reference as u128 + global as u128);
    v as u64 // at most `base`
}

/// The limits that apply to one buyer now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub tier: Tier,
    pub max_concurrent_leases: u32,
    pub max_sats_per_hour: u64,
    /// The pool's global rate the limits were computed for.
    pub pool_global_sats_per_hour: u64,
    /// Whether these limits shrink as the pool fills (anonymous buyers) and are below their base now.
    pub reduced_by_pool_load: bool,
}

impl Limits {
    fn admits(&self, running_leases: u32, running_sats_per_hour: u64, requested: u64) -> bool {
        running_leases < self.max_concurrent_leases
            && running_sats_per_hour.saturating_add(requested) <= self.max_sats_per_hour
    }
}

impl AdmissionPolicy {
    /// The limits of `tier` when the pool's providers together run `pool_global_sats_per_hour`.
    pub fn limits(&self, tier: Tier, pool_global_sats_per_hour: u64) -> Limits {
        let fixed = |l: &TierLimits| Limits {
            tier,
            max_concurrent_leases: l.max_concurrent_leases,
            max_sats_per_hour: l.max_sats_per_hour,
            pool_global_sats_per_hour,
            reduced_by_pool_load: false,
        };
        match tier {
            Tier::Anonymous => {
                let a = &self.anonymous;
                let reference = a.reference_sats_per_hour;
                let max_concurrent_leases = scale(
                    a.max_concurrent_leases as u64,
                    reference,
                    pool_global_sats_per_hour,
                ) as u32;
                let max_sats_per_hour =
                    scale(a.max_sats_per_hour, reference, pool_global_sats_per_hour);
                Limits {
                    tier,
                    max_concurrent_leases,
                    max_sats_per_hour,
                    pool_global_sats_per_hour,
                    reduced_by_pool_load: max_concurrent_leases < a.max_concurrent_leases
                        || max_sats_per_hour < a.max_sats_per_hour,
                }
            }
            Tier::Basic => fixed(&self.basic),
            Tier::Established => fixed(&self.established),
            Tier::Trusted => fixed(&self.trusted),
        }
    }
}

/// Which limit a request broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "limit")]
pub enum Exceeded {
    /// The buyer already runs `running` leases, the most allowed is `max`.
    ConcurrentLeases { running: u32, max: u32 },
    /// Running `running` plus `requested` sats per hour would exceed `max`.
    SatsPerHour {
        running: u64,
        requested: u64,
        max: u64,
    },
}

/// Why a provider refused a buyer, and what would let the buyer in. Its `Display` is written for the buyer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub exceeded: Exceeded,
    /// The limits that applied.
    pub limits: Limits,
    pub score: u64,
    /// The lowest tier whose limits would admit this request, if any does.
    pub tier_needed: Option<Tier>,
    /// A bond worth at least this many sats (`bond_value`) would reach `tier_needed`.
    pub bond_value_needed_sats: Option<u64>,
    /// Or this much more receipt weight (completed leases with bonded providers, or with this provider).
    pub receipt_weight_needed_sats: Option<u64>,
    /// The most sats per hour the buyer could be admitted with right now (a smaller machine), if any.
    pub max_sats_per_hour_now: Option<u64>,
}

impl std::error::Error for Refusal {}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.limits;
        match self.exceeded {
            Exceeded::ConcurrentLeases { max: 0, .. } => write!(
                f,
                "refused: {} buyers may not start a lease with this provider now",
                l.tier
            )?,
            Exceeded::ConcurrentLeases { running, max } => write!(
                f,
                "refused: {} buyers may run at most {max} lease{} at once with this provider, and you run {running}",
                l.tier,
                if max == 1 { "" } else { "s" }
            )?,
            Exceeded::SatsPerHour {
                running,
                requested,
                max,
            } => write!(
                f,
                "refused: {} buyers may run at most {max} sats/hour with this provider; you run {running} and ask for {requested} more",
                l.tier
            )?,
        }
        if l.reduced_by_pool_load {
            write!(
                f,
                " (anonymous limits shrink as the pool fills; its providers now run {} sats/hour)",
                l.pool_global_sats_per_hour
            )?;
        }
        f.write_str(".")?;
        let mut ways = Vec::new();
        if let (Some(tier), Some(bond)) = (self.tier_needed, self.bond_value_needed_sats) {
            ways.push(format!(
                "a fidelity bond worth at least {bond} sats (reaching the {tier} tier; a bond's worth is its amount times the years it stays locked, up to 4)"
            ));
        }
        if let Some(weight) = self.receipt_weight_needed_sats {
            ways.push(format!(
                "completed leases worth about {weight} sats more with bonded providers or with this one"
            ));
        }
        if let Some(rate) = self.max_sats_per_hour_now {
            ways.push(format!("a smaller machine (at most {rate} sats/hour)"));
        }
        match self.exceeded {
            Exceeded::ConcurrentLeases { running, .. } if running > 0 => {
                ways.push("waiting until one of your running leases ends".into())
            }
            Exceeded::SatsPerHour { running, .. } if running > 0 => {
                ways.push("waiting until one of your running leases ends".into())
            }
            _ => {}
        }
        if l.reduced_by_pool_load {
            ways.push("waiting until the pool is less busy".into());
        }
        if ways.is_empty() {
            write!(f, " No trust tier admits this request here.")
        } else {
            write!(f, " What would let you in: {}.", ways.join("; or "))
        }
    }
}

/// Whether a provider admits a buyer with `report` who already runs `buyer_running_leases` leases costing
/// `buyer_running_sats_per_hour` with it, asking for a lease of `requested_sats_per_hour`, while the pool's
/// providers together run `pool_global_sats_per_hour`.
pub fn admit(
    policy: &AdmissionPolicy,
    report: &TrustReport,
    buyer_running_leases: u32,
    buyer_running_sats_per_hour: u64,
    requested_sats_per_hour: u64,
    pool_global_sats_per_hour: u64,
) -> Result<(), Refusal> {
    let limits = policy.limits(report.tier, pool_global_sats_per_hour);
    let exceeded = if buyer_running_leases >= limits.max_concurrent_leases {
        Exceeded::ConcurrentLeases {
            running: buyer_running_leases,
            max: limits.max_concurrent_leases,
        }
    } else if buyer_running_sats_per_hour.saturating_add(requested_sats_per_hour)
        > limits.max_sats_per_hour
    {
        Exceeded::SatsPerHour {
            running: buyer_running_sats_per_hour,
            requested: requested_sats_per_hour,
            max: limits.max_sats_per_hour,
        }
    } else {
        return Ok(());
    };
    let tier_needed = Tier::ALL.into_iter().find(|t| {
        *t > report.tier
            && policy.limits(*t, pool_global_sats_per_hour).admits(
                buyer_running_leases,
                buyer_running_sats_per_hour,
                requested_sats_per_hour,
            )
    });
    let bond_value_needed_sats = tier_needed.map(|t| {
        t.min_score()
            .saturating_sub(report.score_without_bond())
            .max(1)
    });
    let receipt_weight_needed_sats =
        tier_needed.map(|t| t.min_score().saturating_sub(report.score).max(1));
    let max_sats_per_hour_now = (buyer_running_leases < limits.max_concurrent_leases)
        .then(|| {
            limits
                .max_sats_per_hour
                .saturating_sub(buyer_running_sats_per_hour)
        })
        .filter(|&rate| rate > 0 && rate < requested_sats_per_hour);
    Err(Refusal {
        exceeded,
        limits,
        score: report.score,
        tier_needed,
        bond_value_needed_sats,
        receipt_weight_needed_sats,
        max_sats_per_hour_now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Keypair;
    use crate::trust::{BondStatus, TrustLedger};

    fn anonymous() -> TrustReport {
        TrustReport::anonymous(Keypair::from_secret_bytes(&[1; 32]).node_id(), 0)
    }

    #[test]
    fn anonymous_limits_halve_at_the_reference_rate_and_vanish_in_a_busy_pool() {
        let p = AdmissionPolicy::default();
        let idle = p.limits(Tier::Anonymous, 0);
        assert_eq!(
            (idle.max_concurrent_leases, idle.max_sats_per_hour),
            (2, 2000)
        );
        assert!(!idle.reduced_by_pool_load);
        let half = p.limits(Tier::Anonymous, 20_000);
        assert_eq!(
            (half.max_concurrent_leases, half.max_sats_per_hour),
            (1, 1000)
        );
        assert!(half.reduced_by_pool_load);
        let busy = p.limits(Tier::Anonymous, 60_000);
        assert_eq!(
            (busy.max_concurrent_leases, busy.max_sats_per_hour),
            (0, 500)
        );
        // Other tiers do not depend on the pool.
        assert_eq!(p.limits(Tier::Basic, 0).max_sats_per_hour, 20_000);
        assert_eq!(p.limits(Tier::Basic, u64::MAX).max_sats_per_hour, 20_000);
        let mut unscaled = p;
        unscaled.anonymous.reference_sats_per_hour = 0;
        assert_eq!(
            unscaled
                .limits(Tier::Anonymous, u64::MAX)
                .max_concurrent_leases,
            2
        );
    }

    #[test]
    fn an_anonymous_buyer_in_a_busy_pool_is_told_the_bond_that_admits_it() {
        let p = AdmissionPolicy::default();
        let r = admit(&p, &anonymous(), 0, 0, 500, 60_000).unwrap_err();
        assert_eq!(
            r.exceeded,
            Exceeded::ConcurrentLeases { running: 0, max: 0 }
        );
        assert_eq!(r.tier_needed, Some(Tier::Basic));
        assert_eq!(r.bond_value_needed_sats, Some(1_000));
        let text = r.to_string();
        assert!(text.contains("bond worth at least 1000 sats"), "{text}");
        assert!(text.contains("less busy"), "{text}");

        // With that bond, the same request is admitted.
        let mut ledger = TrustLedger::new();
        let me = anonymous().node;
        ledger
            .set_bond(
                me,
                BondStatus {
                    txid: [1; 32],
                    vout: 0,
                    amount_sats: 100_000,
                    locktime: 200,
                    value_sats: 1_000,
                    spent: false,
                    checked_at_height: 100,
                },
            )
            .unwrap();
        assert_eq!(admit(&p, &ledger.score(&me, 0), 0, 0, 500, 60_000), Ok(()));
    }

    #[test]
    fn a_rate_refusal_offers_a_smaller_machine_and_the_tier_that_fits() {
        let p = AdmissionPolicy::default();
        let r = admit(&p, &anonymous(), 0, 0, 5_000, 0).unwrap_err();
        assert_eq!(
            r.exceeded,
            Exceeded::SatsPerHour {
                running: 0,
                requested: 5_000,
                max: 2_000
            }
        );
        assert_eq!(r.max_sats_per_hour_now, Some(2_000));
        assert_eq!(r.tier_needed, Some(Tier::Basic));
        // Asking for more than any tier allows: only a smaller machine helps.
        let r = admit(&p, &anonymous(), 0, 0, 20_000_000, 0).unwrap_err();
        assert_eq!((r.tier_needed, r.bond_value_needed_sats), (None, None));
        assert!(r.to_string().contains("smaller machine"));
    }
}
