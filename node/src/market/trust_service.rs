//! The trust upkeep that needs I/O: checking bond proofs against the chain through the wallet (when they
//! arrive and again periodically, so a spent bond stops counting), announcing this node's own confirmed bonds,
//! for providers, announcing their running load to the pool, and pruning the evidence.
//!
//! Invariants bounding the work remote proofs can cause (issue 15):
//!
//! * Chain checks run one at a time, and checks of others' proofs are limited to `bond_checks_per_hour`
//!   (`[trust]`); proofs beyond the budget wait for a later recheck, counting bonds (least recently checked
//!   first) before unverified proofs (newest first). This node's own bonds are not limited.
//! * A light client refuses a proof claiming a confirmation more than `bond_max_scan_blocks` below its tip
//!   before scanning anything (the wallet's [`XovWallet::check_bond_within`]).
//! * A proof the chain refutes (or too deep to check) is forgotten, memory and store, and copies of it are
//!   not checked again ([`crate::market::trust::Evidence::bond_verdict`]); only the proof held for its node
//!   is checked at all.
//! * Every [`PRUNE_INTERVAL_SECS`] the market prunes its evidence ([`Market::prune_trust`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tracing::{debug, info, warn};
use xov_protocol::{AnyMessage, BondProof, Keypair, LoadReport, NodeId, Signed};
use xov_wallet::bitcoin::{absolute::LockTime, hashes::Hash, OutPoint, Txid};
use xov_wallet::{BondClaim, BondError, XovWallet};

use crate::clock::unix_now;
use crate::config::TrustConfig;
use crate::lease::driver::LeaseEngine;
use crate::market::trust::{BondVerdict, PRUNE_INTERVAL_SECS};
use crate::market::Market;
use crate::network::NetworkHandle;

/// How often own bonds are looked at for a new confirmation (announcing waits for one).
const OWN_BOND_POLL: Duration = Duration::from_secs(2);

/// Built by the daemon, then [`TrustService::spawn`]ed.
pub struct TrustService {
    pub key: Keypair,
    pub market: Arc<RwLock<Market>>,
    pub wallet: Option<Arc<XovWallet>>,
    pub net: NetworkHandle,
    pub leases: Arc<LeaseEngine>,
    pub cfg: TrustConfig,
    /// Whether this node provides machines (and so announces its load).
    pub provider: bool,
    /// Serialises chain checks and counts them against `bond_checks_per_hour`.
    pub checks: tokio::sync::Mutex<CheckBudget>,
}

/// Chain checks of others' bond proofs spent in the current hour.
#[derive(Debug, Default)]
pub struct CheckBudget {
    window_start: u64,
    used: u32,
}

impl CheckBudget {
    /// Takes one check from a budget of `per_hour` at `now`; false when the hour's budget is spent.
    pub fn take(&mut self, per_hour: u32, now: u64) -> bool {
        if now >= self.window_start.saturating_add(3600) {
            self.window_start = now;
            self.used = 0;
        }
        if self.used >= per_hour {
            return false;
        }
        self.used += 1;
        true
    }
}

impl TrustService {
    pub fn spawn(self) {
        let s = Arc::new(self);
        let me = s.clone();
        let mut inbound = s.net.inbound();
        tokio::spawn(async move {
            loop {
                match inbound.recv().await {
                    Ok(AnyMessage::BondProof(p)) => me.verify(&p).await,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => me.recheck().await,
                    Err(_) => break,
                }
            }
        });
        let me = s.clone();
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(Duration::from_secs(me.cfg.bond_recheck_secs.max(1)));
            loop {
                tick.tick().await;
                me.recheck().await;
            }
        });
        let me = s.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(PRUNE_INTERVAL_SECS));
            loop {
                tick.tick().await;
                me.prune();
            }
        });
        let me = s.clone();
        tokio::spawn(async move {
            let mut announced: HashMap<OutPoint, u64> = HashMap::new();
            let mut tick = tokio::time::interval(OWN_BOND_POLL);
            loop {
                tick.tick().await;
                me.announce_own_bonds(&mut announced).await;
            }
        });
        if s.provider {
            tokio::spawn(async move {
                let mut tick =
                    tokio::time::interval(Duration::from_secs(s.cfg.load_report_secs.max(1)));
                loop {
                    tick.tick().await;
                    s.announce_load().await;
                }
            });
        }
    }

    /// Forgets evidence that can no longer count (see [`Market::prune_trust`]).
    fn prune(&self) {
        let Ok(mut m) = self.market.write() else {
            return;
        };
        match m.prune_trust(unix_now()) {
            Ok(p) => debug!(?p, "trust evidence pruned"),
            Err(e) => warn!(error = %e, "cannot prune trust evidence"),
        }
    }

    /// Checks known bond proofs again (a spent or expired bond stops counting): counting bonds least
    /// recently checked first, then unverified proofs newest first, as far as the check budget goes.
    async fn recheck(&self) {
        let mut proofs = match self.market.read() {
            Ok(m) => {
                let e = m.evidence();
                let mut ps: Vec<(u8, u64, Signed<BondProof>)> = e
                    .proofs()
                    .into_iter()
                    .map(|p| match e.bond_of(&p.body().node) {
                        Some(b) if b.is_live() => (0, u64::from(b.checked_at_height), p),
                        _ => (1, u64::MAX - p.body().created_at, p),
                    })
                    .collect();
                ps.sort_by_key(|(class, order, p)| (*class, *order, p.body().node));
                ps
            }
            Err(_) => return,
        };
        for (_, _, p) in proofs.drain(..) {
            self.verify(&p).await;
        }
    }

    /// Checks a bond proof: the bond key signed this node id, and the output exists on the chain with the
    /// claimed script and amount, confirmed and unspent. Only then does the bond count. Only the proof held
    /// for its node is checked, one check at a time, others' within the hour's budget.
    pub async fn verify(&self, p: &Signed<BondProof>) {
        let b = p.body();
        let Some(w) = &self.wallet else {
            debug!(node = %b.node, "no wallet: bonds cannot be checked and do not count");
            return;
        };
        let mut budget = self.checks.lock().await;
        let held = match self.market.read() {
            Ok(m) => m
                .evidence()
                .proof_of(&b.node)
                .is_some_and(|h| h.id() == p.id()),
            Err(_) => return,
        };
        if !held {
            debug!(node = %b.node, "bond proof replaced, refuted or evicted before its check");
            return;
        }
        if b.node != self.key.node_id() && !budget.take(self.cfg.bond_checks_per_hour, unix_now()) {
            debug!(node = %b.node, "bond check budget spent this hour: checked at a later recheck");
            return;
        }
        let verdict = check(w, b, self.cfg.bond_max_scan_blocks).await;
        drop(budget);
        let verdict = match verdict {
            Ok(tip) => {
                debug!(node = %b.node, "bond verified");
                BondVerdict::Live { tip }
            }
            Err(BondCheck::Spent) => {
                info!(node = %b.node, "bond output spent: it no longer counts");
                BondVerdict::Refuted
            }
            Err(BondCheck::Rejected(why)) => {
                info!(node = %b.node, %why, "bond proof rejected");
                BondVerdict::Refuted
            }
            Err(BondCheck::Unconfirmed) => {
                debug!(node = %b.node, "bond unconfirmed: not counted yet");
                BondVerdict::NotYet
            }
            Err(BondCheck::Unavailable(why)) => {
                debug!(node = %b.node, %why, "bond not counted yet");
                BondVerdict::NotYet
            }
        };
        let Ok(mut m) = self.market.write() else {
            return;
        };
        if let Err(e) = m.evidence_mut().bond_verdict(p, verdict) {
            warn!(error = %e, "cannot record a bond verdict");
        }
    }

    /// Gossips proofs of this node's confirmed bonds (and takes them into its own evidence): once when a
    /// bond confirms, then every `bond_announce_secs` for nodes that joined since.
    async fn announce_own_bonds(&self, announced: &mut HashMap<OutPoint, u64>) {
        let Some(w) = &self.wallet else { return };
        let now = unix_now();
        for bond in w.list_bonds() {
            if bond.height.is_none() || bond.unlock_txid.is_some() {
                continue;
            }
            if announced
                .get(&bond.outpoint)
                .is_some_and(|at| now < at + self.cfg.bond_announce_secs)
            {
                continue;
            }
            let Some(locktime) = bond
                .locktime
                .is_block_height()
                .then(|| bond.locktime.to_consensus_u32())
            else {
                continue;
            };
            let me = self.key.node_id();
            let txid = bond.txid_bytes();
            let digest = xov_protocol::bond_binding_message(&me, &txid, bond.outpoint.vout);
            let sig = match w.sign_bond_binding(bond.outpoint, &digest) {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "cannot sign the bond binding");
                    continue;
                }
            };
            let proof = Signed::sign(
                BondProof {
                    node: me,
                    txid,
                    vout: bond.outpoint.vout,
                    amount_sats: bond.amount_sat,
                    locktime,
                    bond_pubkey: bond.pubkey_bytes(),
                    binding_sig: sig,
                    created_at: now,
                    height: bond.height.unwrap_or(0),
                },
                &self.key,
            );
            let pools: Vec<_> = match self.market.write() {
                Ok(mut m) => {
                    if let Err(e) = m.evidence_mut().accept_bond_proof(proof.clone(), now) {
                        warn!(error = %e, "own bond proof not accepted");
                        continue;
                    }
                    m.joined().iter().copied().collect()
                }
                Err(_) => return,
            };
            self.verify(&proof).await;
            for pool in pools {
                if let Err(e) = self.net.publish(&pool, &proof).await {
                    debug!(error = %e, "cannot gossip bond proof yet");
                }
            }
            info!(outpoint = %bond.outpoint, amount = bond.amount_sat, "bond announced");
            announced.insert(bond.outpoint, now);
        }
    }

    /// Providers tell their pools how much compute they run: the sum over a pool is the rate that limits
    /// anonymous buyers.
    async fn announce_load(&self) {
        let (running, rate) = self.leases.provider_load();
        let now = unix_now();
        let pools: Vec<_> = match self.market.read() {
            Ok(m) => m.joined().iter().copied().collect(),
            Err(_) => return,
        };
        for pool in pools {
            let report = Signed::sign(
                LoadReport {
                    provider: self.key.node_id(),
                    pool,
                    running_leases: running,
                    running_sats_per_hour: rate,
                    at: now,
                },
                &self.key,
            );
            if let Err(e) = self.net.publish(&pool, &report).await {
                debug!(error = %e, "cannot gossip load report yet");
            }
        }
    }
}

/// Why a proof does not count (yet); the errors are kept for the log.
enum BondCheck {
    Spent,
    Rejected(RejectedBy),
    Unconfirmed,
    /// The chain source could not say (down, or cannot check this claim).
    Unavailable(BondError),
}

/// What refuted a proof.
#[derive(Debug, thiserror::Error)]
enum RejectedBy {
    #[error("binding signature: {0}")]
    Binding(BondError),
    #[error("locktime: {0}")]
    Locktime(#[from] xov_wallet::bitcoin::absolute::ConversionError),
    #[error(transparent)]
    Chain(BondError),
}

/// The chain's verdict on a proof: the tip height when the bond counts. A light client scans at most
/// `max_scan_blocks` of block filters for it.
async fn check(w: &XovWallet, b: &BondProof, max_scan_blocks: u32) -> Result<u32, BondCheck> {
    xov_wallet::verify_bond_binding(&b.bond_pubkey, &b.binding_message(), &b.binding_sig)
        .map_err(|e| BondCheck::Rejected(RejectedBy::Binding(e)))?;
    let locktime = LockTime::from_height(b.locktime)
        .map_err(|e| BondCheck::Rejected(RejectedBy::Locktime(e)))?;
    let claim = BondClaim {
        outpoint: OutPoint {
            txid: Txid::from_byte_array(b.txid),
            vout: b.vout,
        },
        pubkey: b.bond_pubkey,
        locktime,
        amount_sat: b.amount_sats,
        height_hint: (b.height > 0).then_some(b.height),
    };
    match w.check_bond_within(&claim, max_scan_blocks).await {
        Ok(st) if st.confirmations >= 1 => Ok(st.tip_height),
        Ok(_) => Err(BondCheck::Unconfirmed),
        Err(BondError::Spent { .. }) => Err(BondCheck::Spent),
        Err(e @ (BondError::Unsupported(_) | BondError::Chain(_))) => {
            Err(BondCheck::Unavailable(e))
        }
        // Wrong output, or confirmed too deep to check here: the tip only grows, so it never will be.
        Err(e) => Err(BondCheck::Rejected(RejectedBy::Chain(e))),
    }
}

/// A node id for the API: `me` or a 64-hex node id.
pub fn parse_node(s: &str, me: NodeId) -> Result<NodeId, xov_protocol::NodeIdError> {
    if s == "me" {
        return Ok(me);
    }
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 15, attack 4: checks of others' proofs are rate-limited per hour.
    #[test]
    fn the_check_budget_allows_so_many_an_hour_then_refills() {
        let mut b = CheckBudget::default();
        let t = 1_800_000_000;
        assert!((0..3).all(|i| b.take(3, t + i)));
        assert!(!b.take(3, t + 10));
        assert!(!b.take(3, t + 3599));
        assert!(b.take(3, t + 3600));
        assert!(!CheckBudget::default().take(0, t));
    }
}
