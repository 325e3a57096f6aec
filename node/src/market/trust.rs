//! What this node knows about others' trustworthiness: dual-signed lease receipts and bond proofs heard in its
//! pools (persisted, re-validated at start), the bonds its wallet verified against the chain, and the load
//! providers announce. Scoring and admission rules are the protocol crate's; this file holds the evidence.

use std::collections::HashMap;

use thiserror::Error;
use xov_protocol::validate::{validate_bond_proof, validate_load_report};
use xov_protocol::{
    Added, BondProof, LoadCaps, LoadReport, NodeId, PoolId, PoolLoad, Signed, SignedReceipt,
    TrustError, TrustLedger, TrustReport, ValidationError,
};

use crate::store::{Store, StoreError};

#[derive(Debug, Error)]
pub enum EvidenceError {
    #[error(transparent)]
    Receipt(#[from] TrustError),
    #[error("invalid {what}: {source}")]
    Invalid {
        what: &'static str,
        source: ValidationError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EvidenceError {
    /// Whether the sender of the evidence is to blame (forged, malformed, double-counted), as opposed to us.
    pub fn is_senders_fault(&self) -> bool {
        match self {
            EvidenceError::Receipt(_) => true,
            EvidenceError::Invalid { source, .. } => !source.is_benign(),
            EvidenceError::Store(_) => false,
        }
    }
}

/// Trust evidence held by the node.
pub struct Evidence {
    ledger: TrustLedger,
    load: PoolLoad,
    /// The latest bond proof of each node, verified or not yet (the ledger holds what the chain said).
    proofs: HashMap<NodeId, Signed<BondProof>>,
    store: Store,
}

impl Evidence {
    /// Loads stored receipts and bond proofs, re-validating each at `now`. Bonds count only after the wallet
    /// has checked them again against the chain.
    pub fn load(me: NodeId, store: Store, now: u64) -> Result<Evidence, StoreError> {
        let mut e = Evidence {
            ledger: TrustLedger::with_local(me),
            load: PoolLoad::default(),
            proofs: HashMap::new(),
            store,
        };
        let (receipts, bonds) = e.store.trust_evidence()?;
        for r in receipts.items {
            // Conflicting pairs were both stored on purpose: loading them marks the lease conflicted again.
            let _ = e.ledger.add_receipt(r, now);
        }
        for b in bonds.items {
            if validate_bond_proof(&b, now).is_ok() {
                e.proofs.insert(b.body().node, b);
            }
        }
        Ok(e)
    }

    /// A receipt from gossip, a lease's end or the API: validated, scored, persisted.
    pub fn accept_receipt(&mut self, r: SignedReceipt, now: u64) -> Result<Added, EvidenceError> {
        match self.ledger.add_receipt(r.clone(), now) {
            Ok(Added::New) => {
                self.store.put_receipt(&r)?;
                Ok(Added::New)
            }
            Ok(Added::Duplicate) => Ok(Added::Duplicate),
            Err(e @ TrustError::Conflict { .. }) => {
                // Keep the evidence of the double count, so it survives a restart.
                self.store.put_receipt(&r)?;
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A bond proof from gossip or our own wallet. Returns whether it is news (to verify and pass on).
    pub fn accept_bond_proof(
        &mut self,
        p: Signed<BondProof>,
        now: u64,
    ) -> Result<bool, EvidenceError> {
        validate_bond_proof(&p, now).map_err(|source| EvidenceError::Invalid {
            what: "bond proof",
            source,
        })?;
        let node = p.body().node;
        if let Some(held) = self.proofs.get(&node) {
            if held.body().created_at >= p.body().created_at {
                return Ok(false);
            }
        }
        self.store.put_bond_proof(&p)?;
        self.proofs.insert(node, p);
        Ok(true)
    }

    /// A provider's announced load. Returns whether it is news. Held whoever sent it (the evidence does not
    /// see the book); it counts only as far as the provider's live offers back it ([`Evidence::pool_rate`]).
    /// [`crate::market::Market::accept_load_report`] also leaves out reports of identities without offers.
    pub fn accept_load_report(
        &mut self,
        r: &Signed<LoadReport>,
        now: u64,
    ) -> Result<bool, EvidenceError> {
        validate_load_report(r, now).map_err(|source| EvidenceError::Invalid {
            what: "load report",
            source,
        })?;
        Ok(self.load.observe(r))
    }

    /// Records what the chain says about a node's bond. One bond backs one identity: a bond outpoint already
    /// recorded for another node is refused (logged) and gives `node` nothing.
    pub fn set_bond(&mut self, node: NodeId, status: xov_protocol::BondStatus) {
        if let Err(e) = self.ledger.set_bond(node, status) {
            tracing::warn!(%node, "bond not counted: {e}");
        }
    }

    /// Forgets a bond that no longer verifies.
    pub fn drop_bond(&mut self, node: &NodeId) {
        self.ledger.remove_bond(node);
    }

    pub fn proofs(&self) -> Vec<Signed<BondProof>> {
        self.proofs.values().cloned().collect()
    }

    pub fn proof_of(&self, node: &NodeId) -> Option<&Signed<BondProof>> {
        self.proofs.get(node)
    }

    pub fn report(&self, node: &NodeId, now: u64) -> TrustReport {
        self.ledger.score(node, now)
    }

    /// Sum of the running sats per hour the pool's providers announced (stale reports left out), counting
    /// only providers in `caps` and each up to its cap ([`PoolLoad::total`]). The market computes `caps`
    /// from its book ([`crate::market::Market::pool_rate`]).
    pub fn pool_rate(&self, pool: &PoolId, now: u64, caps: &LoadCaps) -> u64 {
        self.load.global_sats_per_hour(pool, now, caps)
    }

    /// Evidence for a peer that syncs a pool: the pool's counted receipts (newest `max`, by end time) and
    /// every bond proof held, as wire bytes. Conflicted receipts are left out: handing over both halves of a
    /// double count would make an honest node look like a forger.
    pub fn sync_items(&self, pool: &PoolId, max: usize) -> Vec<Vec<u8>> {
        let mut receipts: Vec<&SignedReceipt> = self
            .ledger
            .counted_receipts()
            .filter(|r| r.receipt().pool == *pool)
            .collect();
        receipts.sort_by_key(|r| std::cmp::Reverse(r.receipt().ended_at));
        receipts
            .into_iter()
            .take(max)
            .map(|r| r.to_bytes())
            .chain(self.proofs.values().map(|p| p.to_bytes()))
            .collect()
    }

    pub fn receipts_of(&self, node: &NodeId) -> Vec<SignedReceipt> {
        self.ledger.receipts_of(node).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;
    use xov_protocol::{public_charter, Chain, Keypair, MessageId, ProviderReceipt, Receipt};

    fn receipt(p: &Keypair, b: &Keypair, lease: u8, paid: u64, now: u64) -> SignedReceipt {
        ProviderReceipt::sign(
            Receipt {
                lease_id: MessageId([lease; 32]),
                pool: public_charter(Chain::REGTEST).body().pool_id(),
                provider: p.node_id(),
                buyer: b.node_id(),
                started_at: now - 100,
                ended_at: now - 10,
                paid_sats: paid,
                refunded_sats: 0,
            },
            p,
        )
        .countersign(b)
        .unwrap()
    }

    #[test]
    fn a_receipt_by_other_keys_reusing_a_lease_id_erases_nothing_and_blames_no_one() {
        let now = 1_800_000_000;
        let dir = tempfile::tempdir().unwrap();
        let me = Keypair::generate(&mut OsRng);
        let (p, b) = (Keypair::generate(&mut OsRng), Keypair::generate(&mut OsRng));
        let (x, y) = (Keypair::generate(&mut OsRng), Keypair::generate(&mut OsRng));
        let honest = receipt(&p, &b, 1, 5000, now);
        {
            let mut e =
                Evidence::load(me.node_id(), Store::open(dir.path()).unwrap(), now).unwrap();
            e.accept_receipt(honest.clone(), now).unwrap();
            assert_eq!(
                e.accept_receipt(receipt(&x, &y, 1, 900_000, now), now)
                    .unwrap(),
                Added::New
            );
            // The honest node gossiping its receipt again is not at fault.
            assert_eq!(e.accept_receipt(honest, now).unwrap(), Added::Duplicate);
        }
        let e = Evidence::load(me.node_id(), Store::open(dir.path()).unwrap(), now).unwrap();
        let r = e.report(&b.node_id(), now);
        assert_eq!(
            (r.receipts_as_buyer, r.conflicted_receipts),
            (1, 0),
            "{r:?}"
        );
        assert_eq!(e.sync_items(&honest_pool(), 10).len(), 2);
    }

    fn honest_pool() -> PoolId {
        public_charter(Chain::REGTEST).body().pool_id()
    }

    #[test]
    fn receipts_and_double_counts_survive_a_restart() {
        let now = 1_800_000_000;
        let dir = tempfile::tempdir().unwrap();
        let me = Keypair::generate(&mut OsRng);
        let (p, b) = (Keypair::generate(&mut OsRng), Keypair::generate(&mut OsRng));
        {
            let store = Store::open(dir.path()).unwrap();
            let mut e = Evidence::load(me.node_id(), store, now).unwrap();
            assert_eq!(
                e.accept_receipt(receipt(&p, &b, 1, 5000, now), now)
                    .unwrap(),
                Added::New
            );
            assert_eq!(
                e.accept_receipt(receipt(&p, &b, 1, 5000, now), now)
                    .unwrap(),
                Added::Duplicate
            );
            e.accept_receipt(receipt(&p, &b, 2, 7000, now), now)
                .unwrap();
            // A different receipt for lease 2: both parties lose it.
            let err = e
                .accept_receipt(receipt(&p, &b, 2, 70_000, now), now)
                .unwrap_err();
            assert!(err.is_senders_fault());
            assert_eq!(e.report(&b.node_id(), now).conflicted_receipts, 1);
        }
        let store = Store::open(dir.path()).unwrap();
        let e = Evidence::load(me.node_id(), store, now).unwrap();
        let r = e.report(&b.node_id(), now);
        assert_eq!(r.receipts_as_buyer, 1, "{r:?}");
        assert_eq!(r.conflicted_receipts, 1, "{r:?}");
        // Both leases' receipts are held (the evidence of the double count included), one counts.
        assert_eq!(e.receipts_of(&p.node_id()).len(), 2);
        assert_eq!(e.report(&p.node_id(), now).receipts_as_provider, 1);
    }
}
