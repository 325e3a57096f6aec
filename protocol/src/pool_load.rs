//! The pool's observed global compute rate: providers gossip what they are running ([`LoadReport`]), and
//! every node sums the latest fresh report of each provider ([`PoolLoad`]). Admission uses the sum to make
//! anonymous starts scarcer as the pool fills (`admission.rs`).
//!
//! Reports are claims: nothing proves a provider runs what it says. Inflating one's load only makes anonymous
//! starts dearer for everyone (the provider's own buyers included); a node may cap what it believes of a
//! provider, for example by the capacity and price of that provider's offers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::encoding::{Decode, DecodeError, Encode, Reader, Writer};
use crate::identity::NodeId;
use crate::pool::PoolId;
use crate::signed::{MessageId, Signed};

/// How often a provider is expected to report its load (also whenever it changes much).
pub const LOAD_REPORT_INTERVAL_SECS: u64 = 300;
/// A report older than this no longer counts: three missed reports mean the provider is gone or idle.
pub const DEFAULT_LOAD_STALE_SECS: u64 = 3 * LOAD_REPORT_INTERVAL_SECS;

/// What a provider is running in a pool right now. Sent as `Signed<LoadReport>` signed by `provider`,
/// gossiped on the pool's topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LoadReport {
    pub provider: NodeId,
    pub pool: PoolId,
    /// Leases whose machine is running (provisioning, running, warned or in grace).
    pub running_leases: u32,
    /// Sum of those leases' prices.
    pub running_sats_per_hour: u64,
    /// Unix seconds of the measurement; a newer report replaces an older one.
    pub at: u64,
}

impl Encode for LoadReport {
    fn encode(&self, w: &mut Writer) {
        self.provider.encode(w);
        self.pool.encode(w);
        w.u32(self.running_leases);
        w.u64(self.running_sats_per_hour);
        w.u64(self.at);
    }
}

impl Decode for LoadReport {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(LoadReport {
            provider: NodeId::decode(r)?,
            pool: PoolId::decode(r)?,
            running_leases: r.u32("running leases")?,
            running_sats_per_hour: r.u64("running sats per hour")?,
            at: r.u64("at")?,
        })
    }
}

/// The sum over a pool's providers with a fresh report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadTotal {
    /// Providers whose latest report is fresh.
    pub providers: u32,
    pub running_leases: u64,
    /// The pool's global compute rate.
    pub running_sats_per_hour: u64,
}

/// Each provider's latest load report per pool. Feed it validated reports (`validate_load_report`); the
/// result does not depend on arrival order.
#[derive(Debug, Clone)]
pub struct PoolLoad {
    stale_after_secs: u64,
    latest: BTreeMap<(PoolId, NodeId), (LoadReport, MessageId)>,
}

impl PoolLoad {
    /// Reports older than `stale_after_secs` (at `now`) are left out of totals.
    pub fn new(stale_after_secs: u64) -> Self {
        PoolLoad {
            stale_after_secs,
            latest: BTreeMap::new(),
        }
    }

    pub fn stale_after_secs(&self) -> u64 {
        self.stale_after_secs
    }

    /// Keeps `report` if it is newer than what the provider last reported for the pool (equal times: the
    /// lower message id wins, as in the offer book). Returns whether it was kept.
    pub fn observe(&mut self, report: &Signed<LoadReport>) -> bool {
        let body = report.body();
        let id = report.id();
        let key = (body.pool, body.provider);
        if let Some((held, held_id)) = self.latest.get(&key) {
            if (held.at, std::cmp::Reverse(*held_id)) >= (body.at, std::cmp::Reverse(id)) {
                return false;
            }
        }
        self.latest.insert(key, (body.clone(), id));
        true
    }

    fn fresh(&self, report: &LoadReport, now: u64) -> bool {
        report.at.saturating_add(self.stale_after_secs) > now
    }

    /// The latest fresh report of `provider` in `pool`.
    pub fn report(&self, pool: &PoolId, provider: &NodeId, now: u64) -> Option<&LoadReport> {
        self.latest
            .get(&(*pool, *provider))
            .map(|(r, _)| r)
            .filter(|r| self.fresh(r, now))
    }

    /// Sum of the latest fresh reports in `pool` (saturating).
    pub fn total(&self, pool: &PoolId, now: u64) -> LoadTotal {
        let mut t = LoadTotal::default();
        let lo = (*pool, NodeId::MIN);
        for ((p, _), (r, _)) in self.latest.range(lo..) {
            if p != pool {
                break;
            }
            if !self.fresh(r, now) {
                continue;
            }
            t.providers = t.providers.saturating_add(1);
            t.running_leases = t.running_leases.saturating_add(r.running_leases as u64);
            t.running_sats_per_hour = t
                .running_sats_per_hour
                .saturating_add(r.running_sats_per_hour);
        }
        t
    }

    /// The pool's global compute rate at `now`: what admission of anonymous buyers is scaled by.
    pub fn global_sats_per_hour(&self, pool: &PoolId, now: u64) -> u64 {
        self.total(pool, now).running_sats_per_hour
    }

    /// Forgets stale reports; returns how many. A stale report no longer counts anyway, so this only frees
    /// memory (and lets an older copy arriving later be kept again, harmlessly: it is stale too).
    pub fn prune(&mut self, now: u64) -> usize {
        let before = self.latest.len();
        let stale = self.stale_after_secs;
        self.latest
            .retain(|_, (r, _)| r.at.saturating_add(stale) > now);
        before - self.latest.len()
    }
}

impl Default for PoolLoad {
    fn default() -> Self {
        PoolLoad::new(DEFAULT_LOAD_STALE_SECS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Keypair;

    fn key(n: u8) -> Keypair {
        Keypair::from_secret_bytes(&[n; 32])
    }

    fn report(k: &Keypair, pool: u8, leases: u32, rate: u64, at: u64) -> Signed<LoadReport> {
        Signed::sign(
            LoadReport {
                provider: k.node_id(),
                pool: PoolId([pool; 32]),
                running_leases: leases,
                running_sats_per_hour: rate,
                at,
            },
            k,
        )
    }

    #[test]
    fn the_total_sums_each_providers_latest_fresh_report_per_pool() {
        let mut load = PoolLoad::new(900);
        assert!(load.observe(&report(&key(1), 1, 2, 200, 1000)));
        assert!(load.observe(&report(&key(1), 1, 3, 300, 1100)));
        assert!(!load.observe(&report(&key(1), 1, 1, 100, 1050)), "older");
        assert!(load.observe(&report(&key(2), 1, 1, 50, 1000)));
        assert!(load.observe(&report(&key(3), 2, 9, 9000, 1000)));
        assert_eq!(
            load.total(&PoolId([1; 32]), 1200),
            LoadTotal {
                providers: 2,
                running_leases: 4,
                running_sats_per_hour: 350
            }
        );
        // Key 2's report goes stale first.
        assert_eq!(load.global_sats_per_hour(&PoolId([1; 32]), 1950), 300);
        assert_eq!(load.global_sats_per_hour(&PoolId([1; 32]), 2000), 0);
        assert_eq!(load.global_sats_per_hour(&PoolId([2; 32]), 1200), 9000);
        assert_eq!(load.prune(1950), 2);
        assert!(load
            .report(&PoolId([1; 32]), &key(1).node_id(), 1950)
            .is_some());
    }

    #[test]
    fn arrival_order_does_not_matter() {
        let a = report(&key(1), 1, 2, 200, 1000);
        let b = report(&key(1), 1, 3, 300, 1000); // same time, other content
        let c = report(&key(1), 1, 1, 100, 990);
        let mut x = PoolLoad::new(900);
        let mut y = PoolLoad::new(900);
        for m in [&a, &b, &c] {
            x.observe(m);
        }
        for m in [&c, &b, &a] {
            y.observe(m);
        }
        let p = PoolId([1; 32]);
        assert_eq!(x.total(&p, 1000), y.total(&p, 1000));
    }
}
