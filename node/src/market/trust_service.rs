//! The trust upkeep that needs I/O: checking bond proofs against the chain through the wallet (when they
//! arrive and again periodically, so a spent bond stops counting), announcing this node's own confirmed bonds,
//! and, for providers, announcing their running load to the pool.

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

    /// Checks every known bond proof again (a spent or expired bond stops counting).
    async fn recheck(&self) {
        let proofs = match self.market.read() {
            Ok(m) => m.evidence().proofs(),
            Err(_) => return,
        };
        for p in proofs {
            self.verify(&p).await;
        }
    }

    /// Checks a bond proof: the bond key signed this node id, and the output exists on the chain with the
    /// claimed script and amount, confirmed and unspent. Only then does the bond count.
    pub async fn verify(&self, p: &Signed<BondProof>) {
        let b = p.body();
        let Some(w) = &self.wallet else {
            debug!(node = %b.node, "no wallet: bonds cannot be checked and do not count");
            return;
        };
        let verdict = check(w, b).await;
        let Ok(mut m) = self.market.write() else {
            return;
        };
        let e = m.evidence_mut();
        match verdict {
            Ok(tip) => {
                e.set_bond(b.node, xov_protocol::BondStatus::from_proof(b, tip, false));
                debug!(node = %b.node, "bond verified");
            }
            Err(BondCheck::Spent) => {
                info!(node = %b.node, "bond output spent: it no longer counts");
                e.set_bond(b.node, xov_protocol::BondStatus::from_proof(b, 0, true));
            }
            Err(BondCheck::Rejected(why)) => {
                info!(node = %b.node, %why, "bond proof rejected");
                e.drop_bond(&b.node);
            }
            Err(BondCheck::NotYet(why)) => debug!(node = %b.node, %why, "bond not counted yet"),
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

enum BondCheck {
    Spent,
    Rejected(String),
    NotYet(String),
}

/// The chain's verdict on a proof: the tip height when the bond counts.
async fn check(w: &XovWallet, b: &BondProof) -> Result<u32, BondCheck> {
    xov_wallet::verify_bond_binding(&b.bond_pubkey, &b.binding_message(), &b.binding_sig)
        .map_err(|e| BondCheck::Rejected(format!("binding signature: {e}")))?;
    let locktime = LockTime::from_height(b.locktime)
        .map_err(|e| BondCheck::Rejected(format!("locktime: {e}")))?;
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
    match w.check_bond(&claim).await {
        Ok(st) if st.confirmations >= 1 => Ok(st.tip_height),
        Ok(_) => Err(BondCheck::NotYet("unconfirmed".into())),
        Err(BondError::Spent { .. }) => Err(BondCheck::Spent),
        Err(e @ (BondError::Unsupported(_) | BondError::Chain(_))) => {
            Err(BondCheck::NotYet(e.to_string()))
        }
        Err(e) => Err(BondCheck::Rejected(e.to_string())),
    }
}

/// A node id for the API: `me` or a 64-hex node id.
pub fn parse_node(s: &str, me: NodeId) -> Result<NodeId, String> {
    if s == "me" {
        return Ok(me);
    }
    s.parse()
        .map_err(|_| format!("'{s}' is not a node id (64 hex characters) or 'me'"))
}
