//! What this node knows about others' trustworthiness: dual-signed lease receipts and bond proofs heard in its
//! pools (persisted, re-validated at start), the bonds its wallet verified against the chain, and the load
//! providers announce. Scoring and admission rules are the protocol crate's; this file holds the evidence.
//!
//! Invariants against remote input (issue 15), each map bounded with a stated eviction rule:
//!
//! * Bond proofs: one per node id (the newest), at most [`MAX_BOND_PROOFS`]. When full, a proof of a new
//!   node may evict only the oldest proof whose bond does not count here (not verified yet, or found dead);
//!   never this node's own, never one whose bond the wallet verified live. If every held proof counts, the
//!   newcomer is not kept. So flooding can delay honest proofs not yet verified, never unseat verified ones.
//! * A proof the chain refutes (no such output, wrong script or amount, bad binding, spent, or confirmed too
//!   deep for this node to check) is dropped from memory and the store, and its message id remembered (at
//!   most [`MAX_REFUTED_PROOFS`], oldest forgotten first), so copies of it are neither kept, nor passed on,
//!   nor checked again ([`Evidence::bond_verdict`]). Its owner gets a new hearing only by signing a new
//!   proof.
//! * A verdict counts only for the proof held: a check that finishes after its proof was replaced or
//!   evicted records nothing, so the ledger's bonds are always those of held proofs.
//! * Sync hands out only proofs whose bond the wallet verified live, at most [`MAX_SYNC_PROOFS`], and the
//!   whole evidence of a page within a byte budget ([`Evidence::sync_items_within`]; by default
//!   [`SYNC_EVIDENCE_BYTES`]).
//! * [`Evidence::prune`] (the trust service calls it every [`PRUNE_INTERVAL_SECS`]) forgets receipts too old
//!   to count, stale load reports, proofs never verified within [`UNVERIFIED_PROOF_TTL_SECS`] and proofs of
//!   bonds no longer live. Receipts are capped as the ledger says (`TrustLedger`), load reports as
//!   `PoolLoad` says.

use std::collections::{HashMap, HashSet, VecDeque};

use thiserror::Error;
use xov_protocol::validate::{validate_bond_proof, validate_load_report};
use xov_protocol::{
    Added, BondProof, BondStatus, LoadCaps, LoadReport, MessageId, NodeId, PoolId, PoolLoad,
    Signed, SignedReceipt, TrustError, TrustLedger, TrustReport, ValidationError,
};

use crate::store::{Store, StoreError};

/// Most bond proofs held (one per node id).
pub const MAX_BOND_PROOFS: usize = 10_000;
/// Most ids of refuted bond proofs remembered, so their copies are not checked again.
pub const MAX_REFUTED_PROOFS: usize = 4_096;
/// Most bond proofs handed to a syncing peer.
pub const MAX_SYNC_PROOFS: usize = 1_024;
/// Byte budget (raw message bytes) of the evidence in one sync page, to pass to [`Evidence::sync_items`].
/// Well under the 10 MiB of a sync response even though CBOR may spend two bytes per byte of a `Vec<u8>`.
pub const SYNC_EVIDENCE_BYTES: usize = 2 * 1024 * 1024;
/// A proof the wallet has not verified within this long (no wallet, chain source down, check budget spent)
/// is forgotten at the next prune; its owner announces it again (every `bond_announce_secs`).
pub const UNVERIFIED_PROOF_TTL_SECS: u64 = 24 * 3600;
/// How often the node prunes its trust evidence.
pub const PRUNE_INTERVAL_SECS: u64 = 600;

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
            // A full ledger is our limit, not the sender's doing.
            EvidenceError::Receipt(TrustError::Full { .. }) => false,
            EvidenceError::Receipt(_) => true,
            EvidenceError::Invalid { source, .. } => !source.is_benign(),
            EvidenceError::Store(_) => false,
        }
    }
}

/// What the chain said about a bond proof (the trust service asks the wallet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BondVerdict {
    /// The output exists as claimed, confirmed and unspent, with the chain's tip at this height.
    Live { tip: u32 },
    /// The proof is false, its bond spent, or it cannot be checked here ever (confirmed too deep).
    Refuted,
    /// Not decided yet (unconfirmed, chain source unavailable): checked again later.
    NotYet,
}

/// What [`Evidence::prune`] forgot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub receipts: usize,
    pub load_reports: usize,
    pub proofs: usize,
}

/// Trust evidence held by the node.
pub struct Evidence {
    me: NodeId,
    ledger: TrustLedger,
    load: PoolLoad,
    /// The latest bond proof of each node, verified or not yet (the ledger holds what the chain said).
    proofs: HashMap<NodeId, Signed<BondProof>>,
    /// Most proofs held ([`MAX_BOND_PROOFS`]; smaller in tests).
    max_proofs: usize,
    /// Ids of proofs the chain refuted, oldest first in `refuted_order`.
    refuted: HashSet<MessageId>,
    refuted_order: VecDeque<MessageId>,
    store: Store,
}

impl Evidence {
    /// Loads stored receipts and bond proofs, re-validating each at `now`. Bonds count only after the wallet
    /// has checked them again against the chain.
    pub fn load(me: NodeId, store: Store, now: u64) -> Result<Evidence, StoreError> {
        let mut e = Evidence {
            me,
            ledger: TrustLedger::with_local(me),
            load: PoolLoad::default(),
            proofs: HashMap::new(),
            max_proofs: MAX_BOND_PROOFS,
            refuted: HashSet::new(),
            refuted_order: VecDeque::new(),
            store,
        };
        let (receipts, bonds) = e.store.trust_evidence()?;
        for r in receipts.items {
            // Conflicting pairs were both stored on purpose: loading them marks the lease conflicted again.
            let _ = e.ledger.add_receipt(r, now);
        }
        for gone in e.ledger.take_evicted() {
            e.store.delete_receipt(&gone)?;
        }
        for b in bonds.items {
            if validate_bond_proof(&b, now).is_ok() && e.proofs.len() < e.max_proofs {
                e.proofs.insert(b.body().node, b);
            } else {
                e.store.delete_bond_proof(&b.body().node)?;
            }
        }
        Ok(e)
    }

    #[cfg(test)]
    fn with_max_proofs(mut self, max: usize) -> Self {
        self.max_proofs = max;
        self
    }

    /// A receipt from gossip, a lease's end or the API: validated, scored, persisted.
    pub fn accept_receipt(&mut self, r: SignedReceipt, now: u64) -> Result<Added, EvidenceError> {
        let added = self.ledger.add_receipt(r.clone(), now);
        // Receipts evicted to make room (see TrustLedger) are forgotten on disk too.
        for gone in self.ledger.take_evicted() {
            self.store.delete_receipt(&gone)?;
        }
        match added {
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

    /// Whether `node`'s bond counts here now (the wallet verified it live).
    fn bond_counts(&self, node: &NodeId) -> bool {
        self.ledger.bond(node).is_some_and(BondStatus::is_live)
    }

    /// A bond proof from gossip or our own wallet. Returns whether it is news (to verify and pass on): a
    /// proof refuted before, one not newer than the node's held proof, or one that finds no room (see the
    /// file's invariants) is not.
    pub fn accept_bond_proof(
        &mut self,
        p: Signed<BondProof>,
        now: u64,
    ) -> Result<bool, EvidenceError> {
        validate_bond_proof(&p, now).map_err(|source| EvidenceError::Invalid {
            what: "bond proof",
            source,
        })?;
        if self.refuted.contains(&p.id()) {
            return Ok(false);
        }
        let node = p.body().node;
        match self.proofs.get(&node) {
            Some(held) if held.body().created_at >= p.body().created_at => return Ok(false),
            Some(_) => {}
            None if self.proofs.len() >= self.max_proofs => {
                let victim = self
                    .proofs
                    .iter()
                    .filter(|(n, _)| **n != self.me && !self.bond_counts(n))
                    .min_by_key(|(n, p)| (p.body().created_at, **n))
                    .map(|(n, _)| *n);
                match victim {
                    Some(v) => self.forget_proof(&v)?,
                    None => return Ok(false),
                }
            }
            None => {}
        }
        self.store.put_bond_proof(&p)?;
        self.proofs.insert(node, p);
        Ok(true)
    }

    /// Drops `node`'s proof from memory and the store, and its bond from the ledger.
    fn forget_proof(&mut self, node: &NodeId) -> Result<(), StoreError> {
        self.proofs.remove(node);
        self.ledger.remove_bond(node);
        self.store.delete_bond_proof(node)
    }

    fn remember_refuted(&mut self, id: MessageId) {
        if self.refuted.insert(id) {
            self.refuted_order.push_back(id);
            while self.refuted_order.len() > MAX_REFUTED_PROOFS {
                if let Some(old) = self.refuted_order.pop_front() {
                    self.refuted.remove(&old);
                }
            }
        }
    }

    /// Whether the proof `p` was refuted by the chain here (copies of it are ignored).
    pub fn is_refuted(&self, p: &Signed<BondProof>) -> bool {
        self.refuted.contains(&p.id())
    }

    /// Records the chain's verdict on `p`. It only touches the ledger if `p` is still the proof held for its
    /// node (a newer proof, or an eviction, makes an older check moot). A refuted proof is forgotten (memory
    /// and store) and its id remembered, so it is not taken or checked again.
    pub fn bond_verdict(
        &mut self,
        p: &Signed<BondProof>,
        verdict: BondVerdict,
    ) -> Result<(), StoreError> {
        let b = p.body();
        let held = self.proofs.get(&b.node).is_some_and(|h| h.id() == p.id());
        match verdict {
            BondVerdict::Live { tip } if held => {
                if let Err(e) = self
                    .ledger
                    .set_bond(b.node, BondStatus::from_proof(b, tip, false))
                {
                    // One bond backs one identity: an outpoint already recorded for another node gives
                    // this one nothing.
                    tracing::warn!(node = %b.node, "bond not counted: {e}");
                }
            }
            BondVerdict::Refuted => {
                self.remember_refuted(p.id());
                if held {
                    self.forget_proof(&b.node)?;
                }
            }
            BondVerdict::Live { .. } | BondVerdict::NotYet => {}
        }
        Ok(())
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

    pub fn proofs(&self) -> Vec<Signed<BondProof>> {
        self.proofs.values().cloned().collect()
    }

    /// How many bond proofs are held.
    pub fn proof_count(&self) -> usize {
        self.proofs.len()
    }

    pub fn proof_of(&self, node: &NodeId) -> Option<&Signed<BondProof>> {
        self.proofs.get(node)
    }

    /// What the wallet last found about `node`'s bond.
    pub fn bond_of(&self, node: &NodeId) -> Option<&BondStatus> {
        self.ledger.bond(node)
    }

    /// Whether `node`'s held proof has been verified live by the wallet.
    pub fn proof_verified(&self, node: &NodeId) -> bool {
        self.bond_counts(node)
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

    /// Keeps only the load reports for which `keep(pool, provider)` holds; returns how many were dropped.
    pub fn retain_load(&mut self, keep: impl FnMut(&PoolId, &NodeId) -> bool) -> usize {
        self.load.retain(keep)
    }

    /// Forgets what can no longer count at `now`: receipts past their maximum age (memory and store),
    /// stale load reports, proofs never verified within [`UNVERIFIED_PROOF_TTL_SECS`], and proofs whose bond
    /// is known dead (spent or unlocked). This node's own proof is kept.
    pub fn prune(&mut self, now: u64) -> Result<Pruned, StoreError> {
        let mut out = Pruned::default();
        for r in self.ledger.prune_receipts(now) {
            self.store.delete_receipt(&r)?;
            out.receipts += 1;
        }
        out.load_reports = self.load.prune(now);
        let gone: Vec<NodeId> = self
            .proofs
            .iter()
            .filter(|(n, _)| **n != self.me)
            .filter(|(n, p)| match self.ledger.bond(n) {
                Some(status) => !status.is_live(),
                None => {
                    p.body()
                        .created_at
                        .saturating_add(UNVERIFIED_PROOF_TTL_SECS)
                        <= now
                }
            })
            .map(|(n, _)| *n)
            .collect();
        for n in &gone {
            self.forget_proof(n)?;
        }
        out.proofs = gone.len();
        Ok(out)
    }

    /// [`Evidence::sync_items_within`] with the default byte budget [`SYNC_EVIDENCE_BYTES`].
    pub fn sync_items(&self, pool: &PoolId, max: usize) -> Vec<Vec<u8>> {
        self.sync_items_within(pool, max, SYNC_EVIDENCE_BYTES)
    }

    /// Evidence for a peer that syncs a pool, as wire bytes, at most `max_bytes` of them: proofs of bonds the
    /// wallet verified live (at most [`MAX_SYNC_PROOFS`], most valuable first), then the pool's counted
    /// receipts (newest `max`, by end time) while the budget lasts. Conflicted receipts are left out:
    /// handing over both halves of a double count would make an honest node look like a forger. Proofs not
    /// verified here are not handed on: a node passes on only what it checked.
    pub fn sync_items_within(&self, pool: &PoolId, max: usize, max_bytes: usize) -> Vec<Vec<u8>> {
        let mut proofs: Vec<(&NodeId, &Signed<BondProof>)> = self
            .proofs
            .iter()
            .filter(|(n, _)| self.bond_counts(n))
            .collect();
        proofs.sort_by_key(|(n, _)| {
            (
                std::cmp::Reverse(self.ledger.bond(n).map_or(0, |b| b.live_value())),
                **n,
            )
        });
        let mut receipts: Vec<&SignedReceipt> = self
            .ledger
            .counted_receipts()
            .filter(|r| r.receipt().pool == *pool)
            .collect();
        receipts.sort_by_key(|r| std::cmp::Reverse(r.receipt().ended_at));
        let mut left = max_bytes;
        let mut out = Vec::new();
        let items = proofs
            .into_iter()
            .take(MAX_SYNC_PROOFS)
            .map(|(_, p)| p.to_bytes())
            .chain(receipts.into_iter().take(max).map(|r| r.to_bytes()));
        for bytes in items {
            if bytes.len() > left {
                break;
            }
            left -= bytes.len();
            out.push(bytes);
        }
        out
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

    fn proof(k: &Keypair, created_at: u64) -> Signed<BondProof> {
        Signed::sign(
            BondProof {
                node: k.node_id(),
                txid: *k.node_id().as_bytes(),
                vout: 0,
                amount_sats: 1_000_000,
                locktime: 1_000_000,
                bond_pubkey: [2; 33],
                binding_sig: [1; 64],
                created_at,
                height: 1,
            },
            k,
        )
    }

    fn stored_proofs(dir: &std::path::Path) -> usize {
        Store::open(dir)
            .unwrap()
            .trust_evidence()
            .unwrap()
            .1
            .items
            .len()
    }

    const LIVE: BondVerdict = BondVerdict::Live { tip: 900_000 };

    /// Issue 15, attack 4: a proof the chain refutes is dropped, memory and store, and never checked again.
    #[test]
    fn a_refuted_bond_proof_is_dropped_from_memory_and_store_and_not_taken_again() {
        let now = 1_800_000_000;
        let dir = tempfile::tempdir().unwrap();
        let me = Keypair::generate(&mut OsRng);
        let liar = Keypair::generate(&mut OsRng);
        let p = proof(&liar, now - 10);
        {
            let mut e =
                Evidence::load(me.node_id(), Store::open(dir.path()).unwrap(), now).unwrap();
            assert!(e.accept_bond_proof(p.clone(), now).unwrap());
            e.bond_verdict(&p, BondVerdict::Refuted).unwrap();
            assert!(e.proof_of(&liar.node_id()).is_none());
            assert!(e.is_refuted(&p));
            // Its copies are not news: not kept, not passed on, not checked.
            assert!(!e.accept_bond_proof(p.clone(), now).unwrap());
            assert!(e.proof_of(&liar.node_id()).is_none());
            // A new proof by the same node gets a hearing.
            let newer = proof(&liar, now - 5);
            assert!(e.accept_bond_proof(newer.clone(), now).unwrap());
            // A verdict on a proof no longer held (replaced) records nothing.
            e.bond_verdict(&p, LIVE).unwrap();
            assert!(!e.proof_verified(&liar.node_id()));
            e.bond_verdict(&newer, BondVerdict::Refuted).unwrap();
        }
        assert_eq!(
            stored_proofs(dir.path()),
            0,
            "refuted proofs are gone from the store"
        );
        let e = Evidence::load(me.node_id(), Store::open(dir.path()).unwrap(), now).unwrap();
        assert!(e.proofs().is_empty());
    }

    /// Issue 15, attacks 4 and 8: bond proofs are capped; a newcomer evicts only proofs that do not count.
    #[test]
    fn bond_proofs_are_capped_and_newcomers_evict_only_proofs_that_do_not_count() {
        let now = 1_800_000_000;
        let dir = tempfile::tempdir().unwrap();
        let me = Keypair::generate(&mut OsRng);
        let mut e = Evidence::load(me.node_id(), Store::open(dir.path()).unwrap(), now)
            .unwrap()
            .with_max_proofs(3);
        let own = proof(&me, now - 100);
        let (bonded, pending) = (Keypair::generate(&mut OsRng), Keypair::generate(&mut OsRng));
        let bonded_proof = proof(&bonded, now - 90);
        for p in [&own, &bonded_proof, &proof(&pending, now - 80)] {
            assert!(e.accept_bond_proof(p.clone(), now).unwrap());
        }
        e.bond_verdict(&bonded_proof, LIVE).unwrap();
        assert!(e.proof_verified(&bonded.node_id()));
        struct Case {
            name: &'static str,
            kept: bool,
        }
        let cases = [
            Case {
                name: "a newcomer evicts the unverified proof",
                kept: true,
            },
            Case {
                name: "and then the previous newcomer (unverified too)",
                kept: true,
            },
        ];
        for (i, c) in cases.iter().enumerate() {
            let spam = Keypair::generate(&mut OsRng);
            assert_eq!(
                e.accept_bond_proof(proof(&spam, now - 70 + i as u64), now)
                    .unwrap(),
                c.kept,
                "{}",
                c.name
            );
            assert_eq!(e.proof_count(), 3, "{}", c.name);
        }
        assert!(e.proof_of(&pending.node_id()).is_none());
        // Verify the last spammer's proof (say it is real): now every held proof counts or is our own.
        let last = e
            .proofs()
            .into_iter()
            .find(|p| p.body().node != me.node_id() && p.body().node != bonded.node_id())
            .unwrap();
        e.bond_verdict(&last, BondVerdict::Live { tip: 900_001 })
            .unwrap();
        let late = Keypair::generate(&mut OsRng);
        assert!(!e.accept_bond_proof(proof(&late, now), now).unwrap());
        assert!(e.proof_of(&me.node_id()).is_some());
        assert!(e.proof_verified(&bonded.node_id()));
        drop(e);
        assert_eq!(
            stored_proofs(dir.path()),
            3,
            "evicted proofs are gone from the store"
        );
    }

    /// Issue 15, attack 4: the first sync page holds only proofs verified here, within count and bytes.
    #[test]
    fn sync_hands_out_only_verified_proofs_within_its_byte_budget() {
        let now = 1_800_000_000;
        let dir = tempfile::tempdir().unwrap();
        let me = Keypair::generate(&mut OsRng);
        let mut e = Evidence::load(me.node_id(), Store::open(dir.path()).unwrap(), now).unwrap();
        let keys: Vec<Keypair> = (0..20).map(|_| Keypair::generate(&mut OsRng)).collect();
        for (i, k) in keys.iter().enumerate() {
            let p = proof(k, now - 10);
            e.accept_bond_proof(p.clone(), now).unwrap();
            if i % 2 == 0 {
                e.bond_verdict(&p, LIVE).unwrap();
            }
        }
        let (p, b) = (Keypair::generate(&mut OsRng), Keypair::generate(&mut OsRng));
        e.accept_receipt(receipt(&p, &b, 1, 5000, now), now)
            .unwrap();
        let one = proof(&keys[0], now - 10).to_bytes().len();
        // Everything fits: the 10 verified proofs and the receipt, none of the 10 unverified.
        assert_eq!(e.sync_items(&honest_pool(), 10).len(), 11);
        // A budget of four proofs' bytes holds four proofs and nothing more.
        let items = e.sync_items_within(&honest_pool(), 10, 4 * one + one / 2);
        assert_eq!(items.len(), 4);
        assert!(items.iter().map(Vec::len).sum::<usize>() <= 4 * one + one / 2);
        assert!(e.sync_items_within(&honest_pool(), 10, 0).is_empty());
    }

    /// Issue 15, attack 8: pruning frees what can no longer count, in memory and on disk.
    #[test]
    fn prune_forgets_old_receipts_stale_load_unverified_proofs_and_dead_bonds() {
        let now = 1_800_000_000;
        let dir = tempfile::tempdir().unwrap();
        let me = Keypair::generate(&mut OsRng);
        let mut e = Evidence::load(me.node_id(), Store::open(dir.path()).unwrap(), now).unwrap();
        let (p, b) = (Keypair::generate(&mut OsRng), Keypair::generate(&mut OsRng));
        e.accept_receipt(receipt(&p, &b, 1, 5000, now), now)
            .unwrap();
        let (live, unverified) = (Keypair::generate(&mut OsRng), Keypair::generate(&mut OsRng));
        let live_proof = proof(&live, now);
        for proof in [&live_proof, &proof(&unverified, now), &proof(&me, now)] {
            e.accept_bond_proof(proof.clone(), now).unwrap();
        }
        e.bond_verdict(&live_proof, LIVE).unwrap();
        let report = Signed::sign(
            LoadReport {
                provider: p.node_id(),
                pool: honest_pool(),
                running_leases: 1,
                running_sats_per_hour: 100,
                at: now,
            },
            &p,
        );
        assert!(e.accept_load_report(&report, now).unwrap());
        // Nothing is due yet.
        assert_eq!(e.prune(now).unwrap(), Pruned::default());
        let later = now + UNVERIFIED_PROOF_TTL_SECS;
        assert_eq!(
            e.prune(later).unwrap(),
            Pruned {
                receipts: 0,
                load_reports: 1,
                proofs: 1
            }
        );
        assert!(e.proof_of(&unverified.node_id()).is_none());
        assert!(e.proof_of(&me.node_id()).is_some(), "our own proof stays");
        assert!(e.proof_of(&live.node_id()).is_some());
        // Receipts go once too old to be accepted.
        let old = later + xov_protocol::validate::MAX_RECEIPT_AGE_SECS;
        assert_eq!(e.prune(old).unwrap().receipts, 1);
        assert!(e.receipts_of(&p.node_id()).is_empty());
        drop(e);
        let e = Evidence::load(me.node_id(), Store::open(dir.path()).unwrap(), old).unwrap();
        assert!(
            e.receipts_of(&p.node_id()).is_empty(),
            "pruned from the store too"
        );
        assert_eq!(e.proofs().len(), 2);
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
