//! The pool's observed global compute rate: providers gossip what they are running ([`LoadReport`]), and
//! every node sums the latest fresh report of each provider ([`PoolLoad`]). Admission uses the sum to make
//! anonymous starts scarcer as the pool fills (`admission.rs`).
//!
//! Reports are claims: nothing proves a provider runs what it says. So a report counts only as far as the
//! provider's live offers back it (invariants of [`PoolLoad::total`]):
//!
//! * A report counts only if its provider has live offers in the pool: the node passes a [`LoadCaps`] map,
//!   computed from its offer book at `now` ([`crate::book::OfferBook::load_caps`]), and a provider missing
//!   from it counts for nothing. Any identity can sign a report; only a provider can make it count.
//! * A counted report is capped by what the provider offers ([`LoadCap`]): `running_leases` by the sum of
//!   its live offers' capacities, `running_sats_per_hour` by the sum of price × capacity. To claim X sats/h
//!   of load a provider must offer X sats/h of capacity, which buyers can order.
//! * At most [`MAX_LOAD_REPORTS`] reports are held. When full, reports already stale (relative to the
//!   newcomer's time) make room; otherwise a report of a new (pool, provider) is not kept. Held reports are
//!   never evicted by newcomers, so flooding cannot push honest providers' reports out; it can only delay
//!   keeping new providers' reports until the node prunes ([`PoolLoad::prune`], [`PoolLoad::retain`]).

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

/// Most load reports a [`PoolLoad`] holds (over all pools).
pub const MAX_LOAD_REPORTS: usize = 16_384;

/// The most load one provider's report is believed for in a pool: what its live offers there could run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadCap {
    /// Sum of the capacities of the provider's live offers in the pool.
    pub running_leases: u64,
    /// Sum over those offers of price × capacity.
    pub running_sats_per_hour: u64,
}

impl LoadCap {
    /// Adds one live offer's capacity (saturating).
    pub fn add_offer(&mut self, price_sats_per_hour: u64, capacity: u32) {
        self.running_leases = self.running_leases.saturating_add(capacity as u64);
        self.running_sats_per_hour = self
            .running_sats_per_hour
            .saturating_add(price_sats_per_hour.saturating_mul(capacity as u64));
    }
}

/// The providers whose reports count in one pool, each with its cap. A provider missing counts for nothing.
pub type LoadCaps = BTreeMap<NodeId, LoadCap>;

/// The sum over a pool's providers with a fresh report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadTotal {
    /// Providers whose latest report is fresh.
    pub providers: u32,
    pub running_leases: u64,
    /// The pool's global compute rate.
    pub running_sats_per_hour: u64,
}

/// Each provider's latest load report per pool. Feed it validated reports (`validate_load_report`); below
/// the cap, the result does not depend on arrival order.
#[derive(Debug, Clone)]
pub struct PoolLoad {
    stale_after_secs: u64,
    max_reports: usize,
    latest: BTreeMap<(PoolId, NodeId), (LoadReport, MessageId)>,
}

impl PoolLoad {
    /// Reports older than `stale_after_secs` (at `now`) are left out of totals.
    pub fn new(stale_after_secs: u64) -> Self {
        PoolLoad::with_max_reports(stale_after_secs, MAX_LOAD_REPORTS)
    }

    /// As [`PoolLoad::new`], holding at most `max_reports` reports.
    pub fn with_max_reports(stale_after_secs: u64, max_reports: usize) -> Self {
        PoolLoad {
            stale_after_secs,
            max_reports,
            latest: BTreeMap::new(),
        }
    }

    /// How many reports are held.
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    pub fn stale_after_secs(&self) -> u64 {
        self.stale_after_secs
    }

    /// Keeps `report` if it is newer than what the provider last reported for the pool (equal times: the
    /// lower message id wins, as in the offer book). Returns whether it was kept. When [`MAX_LOAD_REPORTS`]
    /// (or the configured maximum) are held, reports stale at the newcomer's time are dropped to make room;
    /// if none is, a report of a new (pool, provider) is not kept (replacing a held one always is).
    pub fn observe(&mut self, report: &Signed<LoadReport>) -> bool {
        let body = report.body();
        let id = report.id();
        let key = (body.pool, body.provider);
        match self.latest.get(&key) {
            Some((held, held_id))
                if (held.at, std::cmp::Reverse(*held_id)) >= (body.at, std::cmp::Reverse(id)) =>
            {
                return false;
            }
            Some(_) => {}
            None if self.latest.len() >= self.max_reports => {
                // A validated report is not from the future, so what is stale at its time is stale now.
                self.prune(body.at);
                if self.latest.len() >= self.max_reports {
                    return false;
                }
            }
            None => {}
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

    /// Sum of the latest fresh reports in `pool` (saturating), counting only providers in `caps` (those
    /// with live offers in the pool), each capped by its [`LoadCap`].
    pub fn total(&self, pool: &PoolId, now: u64, caps: &LoadCaps) -> LoadTotal {
        let mut t = LoadTotal::default();
        let lo = (*pool, NodeId::MIN);
        for ((p, provider), (r, _)) in self.latest.range(lo..) {
            if p != pool {
                break;
            }
            if !self.fresh(r, now) {
                continue;
            }
            let Some(cap) = caps.get(provider) else {
                continue;
            };
            t.providers = t.providers.saturating_add(1);
            t.running_leases = t
                .running_leases
                .saturating_add((r.running_leases as u64).min(cap.running_leases));
            t.running_sats_per_hour = t
                .running_sats_per_hour
                .saturating_add(r.running_sats_per_hour.min(cap.running_sats_per_hour));
        }
        t
    }

    /// The pool's global compute rate at `now`: what admission of anonymous buyers is scaled by (see
    /// [`PoolLoad::total`] for `caps`).
    pub fn global_sats_per_hour(&self, pool: &PoolId, now: u64, caps: &LoadCaps) -> u64 {
        self.total(pool, now, caps).running_sats_per_hour
    }

    /// Keeps only the reports for which `keep(pool, provider)` holds (the node drops those of providers
    /// without live offers); returns how many were dropped.
    pub fn retain(&mut self, mut keep: impl FnMut(&PoolId, &NodeId) -> bool) -> usize {
        let before = self.latest.len();
        self.latest
            .retain(|(pool, provider), _| keep(pool, provider));
        before - self.latest.len()
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

    /// Caps that believe every listed provider fully.
    fn uncapped(keys: &[u8]) -> LoadCaps {
        keys.iter()
            .map(|&n| {
                (
                    key(n).node_id(),
                    LoadCap {
                        running_leases: u64::MAX,
                        running_sats_per_hour: u64::MAX,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn the_total_sums_each_providers_latest_fresh_report_per_pool() {
        let all = uncapped(&[1, 2, 3]);
        let mut load = PoolLoad::new(900);
        assert!(load.observe(&report(&key(1), 1, 2, 200, 1000)));
        assert!(load.observe(&report(&key(1), 1, 3, 300, 1100)));
        assert!(!load.observe(&report(&key(1), 1, 1, 100, 1050)), "older");
        assert!(load.observe(&report(&key(2), 1, 1, 50, 1000)));
        assert!(load.observe(&report(&key(3), 2, 9, 9000, 1000)));
        assert_eq!(
            load.total(&PoolId([1; 32]), 1200, &all),
            LoadTotal {
                providers: 2,
                running_leases: 4,
                running_sats_per_hour: 350
            }
        );
        // Key 2's report goes stale first.
        assert_eq!(load.global_sats_per_hour(&PoolId([1; 32]), 1950, &all), 300);
        assert_eq!(load.global_sats_per_hour(&PoolId([1; 32]), 2000, &all), 0);
        assert_eq!(
            load.global_sats_per_hour(&PoolId([2; 32]), 1200, &all),
            9000
        );
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
        let all = uncapped(&[1]);
        assert_eq!(x.total(&p, 1000, &all), y.total(&p, 1000, &all));
    }

    #[test]
    fn a_report_counts_only_for_a_provider_with_offers_and_only_up_to_what_it_offers() {
        struct Case {
            name: &'static str,
            /// (leases, sats/h) reported by key 1.
            reported: (u32, u64),
            /// Key 1's cap, `None` if it has no live offer in the pool.
            cap: Option<(u64, u64)>,
            want: LoadTotal,
        }
        let cases = [
            Case {
                name: "an identity with no offers counts for nothing",
                reported: (1_000_000, u64::MAX / 2),
                cap: None,
                want: LoadTotal::default(),
            },
            Case {
                name: "an inflated report is capped by the provider's offers",
                reported: (1_000_000, u64::MAX / 2),
                cap: Some((3, 1500)),
                want: LoadTotal {
                    providers: 1,
                    running_leases: 3,
                    running_sats_per_hour: 1500,
                },
            },
            Case {
                name: "an honest report within the offers counts in full",
                reported: (2, 800),
                cap: Some((3, 1500)),
                want: LoadTotal {
                    providers: 1,
                    running_leases: 2,
                    running_sats_per_hour: 800,
                },
            },
        ];
        let pool = PoolId([1; 32]);
        for c in cases {
            let mut load = PoolLoad::new(900);
            load.observe(&report(&key(1), 1, c.reported.0, c.reported.1, 1000));
            let caps: LoadCaps = c
                .cap
                .map(|(running_leases, running_sats_per_hour)| {
                    (
                        key(1).node_id(),
                        LoadCap {
                            running_leases,
                            running_sats_per_hour,
                        },
                    )
                })
                .into_iter()
                .collect();
            assert_eq!(load.total(&pool, 1100, &caps), c.want, "{}", c.name);
        }
    }

    #[test]
    fn a_full_table_keeps_what_it_holds_and_makes_room_only_from_stale_reports() {
        let mut load = PoolLoad::with_max_reports(900, 2);
        assert!(load.observe(&report(&key(1), 1, 1, 100, 1000)));
        assert!(load.observe(&report(&key(2), 1, 1, 100, 1500)));
        // Full: a newcomer does not push out fresh reports.
        assert!(!load.observe(&report(&key(3), 1, 1, 100, 1600)));
        // A held provider may still replace its own report.
        assert!(load.observe(&report(&key(2), 1, 2, 200, 1700)));
        // Once key 1's report is stale at the newcomer's time, it makes room.
        assert!(load.observe(&report(&key(3), 1, 1, 100, 1900)));
        assert_eq!(load.len(), 2);
        assert!(load
            .report(&PoolId([1; 32]), &key(1).node_id(), 1900)
            .is_none());
        assert_eq!(load.retain(|_, p| *p != key(3).node_id()), 1);
        assert_eq!(load.len(), 1);
    }
}
