//! Trust without an authority: a node scores another from evidence it can check itself, namely receipts
//! both parties of a lease signed (`receipt.rs`) and bitcoin locked in fidelity bonds (`bond.rs`).
//!
//! Scoring rule ([`TrustLedger::score`]), all amounts in sats:
//!
//! * A receipt weighs its net sats (paid − refunded) × 2^(−age / [`RECEIPT_HALF_LIFE_SECS`]), where age is
//!   `now − ended_at`: a lease a month ago counts half.
//! * Who signed the other side decides how much of that weight counts, because a receipt between two keys
//!   one person made for free proves nothing:
//!   - the scoring node itself (first-hand, [`TrustLedger::with_local`]): all of it;
//!   - a counterparty with a live bond: all of it, but what one bonded node lends is capped by its bond
//!     value *in total*, across every node it has counted receipts with: when the weight of all its receipts
//!     exceeds its bond value, each node it has receipts with gets a share of the bond value in proportion to
//!     its receipts' weight (rounded down, so the shares never add up to more than the bond). A bonded node
//!     cannot vouch for more than it has at stake, however many fake buyers it signs receipts with;
//!   - a counterparty without a live bond: [`UNBONDED_WEIGHT_PERCENT`] % of it, and all such receipts
//!     together at most [`UNBONDED_CAP_SATS`], which is below [`BASIC_MIN_SCORE`]: a ring of fresh keys
//!     trading fake receipts can never lift itself out of [`Tier::Anonymous`].
//! * score = receipt weight + the node's own live bond value.
//! * tier: the highest [`Tier`] whose minimum score the score reaches.
//!
//! Invariants the ledger keeps against attackers:
//!
//! * Receipts are keyed by [`ReceiptKey`] (lease id, provider, buyer), not by lease id alone. A receipt
//!   only ever speaks for the two keys that signed it, so one signed by other keys that reuses an honest
//!   lease's id is held beside the honest one and counts for its own signers only (as unbonded weight, if
//!   they are throwaway keys); it never touches the honest receipt.
//! * Double counting: a lease has one receipt per pair of parties. A second, different receipt for the same
//!   key (which needs *both* parties' keys, so both signed twice) marks that key as conflicted, and neither
//!   receipt counts, whatever order they arrived in. The same receipt again is a [`Added::Duplicate`],
//!   never an error, so whoever re-gossips an honest receipt is not blamed.
//! * One bond outpoint backs one identity: the first node id recorded for an outpoint keeps it, and
//!   [`TrustLedger::set_bond`] refuses the same outpoint for another node id
//!   ([`BondStatusError::OutpointTaken`]), which so gets no bond value from it. The outpoint is freed when
//!   its owner's bond is removed or replaced by another outpoint. (Only the bond key's holder can bind a
//!   bond to a node id, so being first cannot steal someone else's bond.)
//! * The bonded weight all nodes get from one bonded counterparty adds up to at most its bond value (above).
//! * Bounded memory: at most [`MAX_RECEIPTS`] receipts are held. When full, a new receipt may evict only a
//!   receipt neither of whose parties is the local node or has a live bond (the oldest such, by end time):
//!   such receipts count at most [`UNBONDED_CAP_SATS`] in all, below [`BASIC_MIN_SCORE`], so evicting them
//!   changes no one's tier. Receipts with the local node or a bonded party are never evicted by newcomers;
//!   if all held receipts are of that kind, the newcomer is refused ([`TrustError::Full`], nobody's fault)
//!   until [`TrustLedger::prune`] frees room. Evicted receipts are handed out by
//!   [`TrustLedger::take_evicted`] so the node can forget them on disk too.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::bond::BondProof;
use crate::identity::NodeId;
use crate::receipt::SignedReceipt;
use crate::signed::MessageId;
use crate::validate::{validate_receipt, ValidationError, MAX_RECEIPT_AGE_SECS};

/// Receipt weight halves every 30 days.
pub const RECEIPT_HALF_LIFE_SECS: u64 = 30 * 24 * 3600;
/// Share of a receipt's weight that counts when the counterparty has no live bond.
pub const UNBONDED_WEIGHT_PERCENT: u64 = 10;
/// Most weight all receipts with unbonded counterparties together may add to a score.
pub const UNBONDED_CAP_SATS: u64 = 500;
/// Most receipts a ledger holds (see the eviction rule above).
pub const MAX_RECEIPTS: usize = 200_000;
/// Least score of [`Tier::Basic`].
pub const BASIC_MIN_SCORE: u64 = 1_000;
// Receipts with unbonded counterparties alone must never reach Basic (the Sybil rule above).
const _: () = assert!(UNBONDED_CAP_SATS < BASIC_MIN_SCORE);
/// Least score of [`Tier::Established`].
pub const ESTABLISHED_MIN_SCORE: u64 = 100_000;
/// Least score of [`Tier::Trusted`].
pub const TRUSTED_MIN_SCORE: u64 = 10_000_000;

/// Trust tiers, lowest first. Admission limits are set per tier (`admission.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// No evidence worth counting: no bond, no receipts that a Sybil could not have made.
    Anonymous,
    Basic,
    Established,
    Trusted,
}

impl Tier {
    pub const ALL: [Tier; 4] = [
        Tier::Anonymous,
        Tier::Basic,
        Tier::Established,
        Tier::Trusted,
    ];

    /// The least score of the tier.
    pub fn min_score(self) -> u64 {
        match self {
            Tier::Anonymous => 0,
            Tier::Basic => BASIC_MIN_SCORE,
            Tier::Established => ESTABLISHED_MIN_SCORE,
            Tier::Trusted => TRUSTED_MIN_SCORE,
        }
    }

    /// The tier a score reaches.
    pub fn for_score(score: u64) -> Tier {
        Tier::ALL
            .into_iter()
            .rev()
            .find(|t| score >= t.min_score())
            .unwrap_or(Tier::Anonymous)
    }

    /// The tier above, if any.
    pub fn next(self) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| *t > self)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Anonymous => "anonymous",
            Tier::Basic => "basic",
            Tier::Established => "established",
            Tier::Trusted => "trusted",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A bond as the node's wallet last verified it against the chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BondStatus {
    /// Internal byte order; shown reversed in JSON, as bitcoind does.
    #[serde(with = "crate::hex::txid")]
    pub txid: [u8; 32],
    pub vout: u32,
    pub amount_sats: u64,
    /// Unlock height.
    pub locktime: u32,
    /// `bond_value(amount_sats, locktime, checked_at_height)`.
    pub value_sats: u64,
    /// The output was spent: the bond is gone.
    pub spent: bool,
    /// Chain height of the last check.
    pub checked_at_height: u32,
}

impl BondStatus {
    /// The status of a verified proof at `height` (the wallet decides `spent`).
    pub fn from_proof(proof: &BondProof, height: u32, spent: bool) -> Self {
        BondStatus {
            txid: proof.txid,
            vout: proof.vout,
            amount_sats: proof.amount_sats,
            locktime: proof.locktime,
            value_sats: proof.value_at(height),
            spent,
            checked_at_height: height,
        }
    }

    /// Unspent and still locked.
    pub fn is_live(&self) -> bool {
        !self.spent && self.value_sats > 0
    }

    /// The value that counts: nothing once spent.
    pub fn live_value(&self) -> u64 {
        if self.spent {
            0
        } else {
            self.value_sats
        }
    }
}

/// What the ledger keys a receipt by: the lease id, the provider and the buyer. A receipt signed by other
/// parties for the same lease id is another receipt, not a conflict.
pub type ReceiptKey = (MessageId, NodeId, NodeId);

/// The key of a receipt.
pub fn receipt_key(r: &SignedReceipt) -> ReceiptKey {
    (r.id(), r.receipt().provider, r.receipt().buyer)
}

/// Result of adding a receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    New,
    /// The same receipt was already held (possibly with other, equally valid signatures); nothing changed.
    Duplicate,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TrustError {
    /// Forged signature, impossible amounts or times, too old or from the future.
    #[error("receipt for lease {lease_id} rejected: {source}")]
    Invalid {
        lease_id: MessageId,
        source: ValidationError,
    },
    #[error("lease {lease_id} already has a different receipt signed by the same parties: a double count, so neither counts")]
    Conflict { lease_id: MessageId },
    /// The ledger holds its maximum of receipts and none it may evict for this one. Not the sender's fault.
    #[error("receipt for lease {lease_id} not kept: the ledger holds its maximum of {max} receipts, none of which may be dropped")]
    Full { lease_id: MessageId, max: usize },
}

/// A bond status the ledger refuses to record.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BondStatusError {
    /// One bond backs one identity: the outpoint is already recorded for another node.
    #[error("bond {}:{vout} already backs node {owner}: one bond backs one identity, so it gives node {claimant} nothing", txid_hex(txid))]
    OutpointTaken {
        /// Internal byte order (shown reversed, as bitcoind does).
        txid: [u8; 32],
        vout: u32,
        owner: NodeId,
        claimant: NodeId,
    },
}

/// A txid as bitcoind shows it (byte order reversed).
fn txid_hex(txid: &[u8; 32]) -> String {
    txid.iter().rev().map(|b| format!("{b:02x}")).collect()
}

impl TrustError {
    /// Whether the receipt's signatures failed (as opposed to other faults).
    pub fn is_forgery(&self) -> bool {
        matches!(
            self,
            TrustError::Invalid {
                source: ValidationError::BadSignature(_),
                ..
            }
        )
    }
}

/// Why a node has the score it has: what `xov trust show` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustReport {
    pub node: NodeId,
    /// Unix seconds the score was computed for.
    pub at: u64,
    pub tier: Tier,
    pub score: u64,
    pub next_tier: Option<Tier>,
    /// Score still missing to reach `next_tier`.
    pub score_to_next_tier: Option<u64>,
    /// Counted receipts (conflicted ones excluded) with the node as provider.
    pub receipts_as_provider: u32,
    /// Counted receipts with the node as buyer.
    pub receipts_as_buyer: u32,
    /// Receipts of the node's leases that were double-counted and so do not count.
    pub conflicted_receipts: u32,
    /// Net sats of the counted receipts, before any weighting.
    pub sats_as_provider: u64,
    pub sats_as_buyer: u64,
    pub last_receipt_at: Option<u64>,
    /// Weight of receipts whose counterparty is the scoring node itself.
    pub local_receipt_weight_sats: u64,
    /// Weight of receipts whose counterparty has a live bond (each counterparty's lending capped by its bond
    /// value in total, across every node it has receipts with, and shared in proportion).
    pub bonded_receipt_weight_sats: u64,
    /// Weight of receipts whose counterparty has no live bond (10 %, capped).
    pub unbonded_receipt_weight_sats: u64,
    pub receipt_weight_sats: u64,
    pub bond: Option<BondStatus>,
    /// The node's own bond value (0 without a live bond).
    pub bond_value_sats: u64,
}

impl TrustReport {
    /// The report of a node nothing is known about.
    pub fn anonymous(node: NodeId, at: u64) -> Self {
        let next_tier = Tier::Anonymous.next();
        TrustReport {
            node,
            at,
            tier: Tier::Anonymous,
            score: 0,
            next_tier,
            score_to_next_tier: next_tier.map(Tier::min_score),
            receipts_as_provider: 0,
            receipts_as_buyer: 0,
            conflicted_receipts: 0,
            sats_as_provider: 0,
            sats_as_buyer: 0,
            last_receipt_at: None,
            local_receipt_weight_sats: 0,
            bonded_receipt_weight_sats: 0,
            unbonded_receipt_weight_sats: 0,
            receipt_weight_sats: 0,
            bond: None,
            bond_value_sats: 0,
        }
    }

    /// The score without the node's own bond: what a new bond would be added to.
    pub fn score_without_bond(&self) -> u64 {
        self.score.saturating_sub(self.bond_value_sats)
    }
}

impl fmt::Display for TrustReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "node {}: {} (score {})",
            self.node, self.tier, self.score
        )?;
        writeln!(
            f,
            "  receipts: {} as provider ({} sats), {} as buyer ({} sats){}",
            self.receipts_as_provider,
            self.sats_as_provider,
            self.receipts_as_buyer,
            self.sats_as_buyer,
            if self.conflicted_receipts > 0 {
                format!(", {} double-counted and ignored", self.conflicted_receipts)
            } else {
                String::new()
            }
        )?;
        writeln!(
            f,
            "  receipt weight {} = {} first-hand + {} with bonded counterparties + {} with unbonded ones (10 %, at most {})",
            self.receipt_weight_sats,
            self.local_receipt_weight_sats,
            self.bonded_receipt_weight_sats,
            self.unbonded_receipt_weight_sats,
            UNBONDED_CAP_SATS
        )?;
        match &self.bond {
            Some(b) if b.spent => writeln!(f, "  bond: spent, worth nothing")?,
            Some(b) => writeln!(
                f,
                "  bond: {} sats locked until height {}, worth {} (checked at height {})",
                b.amount_sats, b.locktime, b.value_sats, b.checked_at_height
            )?,
            None => writeln!(f, "  bond: none")?,
        }
        match (self.next_tier, self.score_to_next_tier) {
            (Some(t), Some(missing)) => write!(f, "  next tier {t}: {missing} more score"),
            _ => write!(f, "  highest tier"),
        }
    }
}

/// The receipts and bonds a node knows, and the scores computed from them. Pure: time is a parameter.
#[derive(Debug, Clone, Default)]
pub struct TrustLedger {
    local: Option<NodeId>,
    receipts: BTreeMap<ReceiptKey, SignedReceipt>,
    conflicted: BTreeSet<ReceiptKey>,
    by_node: BTreeMap<NodeId, BTreeSet<ReceiptKey>>,
    bonds: BTreeMap<NodeId, BondStatus>,
    /// Which node each bond outpoint (txid, vout) backs: one bond, one identity.
    bond_owners: BTreeMap<([u8; 32], u32), NodeId>,
    /// Most receipts held; `None` means [`MAX_RECEIPTS`].
    max_receipts: Option<usize>,
    /// Receipts evicted to make room, until [`TrustLedger::take_evicted`].
    evicted: Vec<SignedReceipt>,
}

/// 2^(−age / half-life).
fn decay(age_secs: u64) -> f64 {
    (-(age_secs as f64) / RECEIPT_HALF_LIFE_SECS as f64).exp2()
}

/// Rounds a non-negative weight down to whole sats.
fn sats(w: f64) -> u64 {
    if w.is_finite() && w > 0.0 {
        w as u64
    } else {
        0
    }
}

impl TrustLedger {
    pub fn new() -> Self {
        Self::default()
    }

    /// A ledger for node `me`: receipts whose counterparty is `me` are first-hand and count in full.
    pub fn with_local(me: NodeId) -> Self {
        TrustLedger {
            local: Some(me),
            ..Self::default()
        }
    }

    /// Holds at most `max` receipts instead of [`MAX_RECEIPTS`].
    pub fn with_max_receipts(mut self, max: usize) -> Self {
        self.max_receipts = Some(max);
        self
    }

    /// Receipts evicted to make room since the last call (the node deletes them from its store).
    pub fn take_evicted(&mut self) -> Vec<SignedReceipt> {
        std::mem::take(&mut self.evicted)
    }

    /// Whether `r` may be evicted for a newcomer: neither party is the local node or has a live bond.
    fn evictable(&self, r: &SignedReceipt) -> bool {
        let r = r.receipt();
        [r.provider, r.buyer]
            .iter()
            .all(|n| Some(*n) != self.local && !self.bonds.get(n).is_some_and(BondStatus::is_live))
    }

    /// Removes one receipt and its index entries.
    fn remove_receipt(&mut self, key: &ReceiptKey) -> Option<SignedReceipt> {
        let r = self.receipts.remove(key)?;
        for node in [r.receipt().provider, r.receipt().buyer] {
            if let Some(set) = self.by_node.get_mut(&node) {
                set.remove(key);
                if set.is_empty() {
                    self.by_node.remove(&node);
                }
            }
        }
        self.conflicted.remove(key);
        Some(r)
    }

    /// Adds a receipt after validating it at `now` (both signatures, amounts, times: `validate_receipt`).
    ///
    /// Receipts are keyed by (lease id, provider, buyer): only a different receipt signed by the same two
    /// parties conflicts; one by other parties for the same lease id is held beside it. When the ledger is
    /// full, see the eviction rule in the module's invariants.
    pub fn add_receipt(&mut self, r: SignedReceipt, now: u64) -> Result<Added, TrustError> {
        let lease_id = r.id();
        validate_receipt(&r, now).map_err(|source| TrustError::Invalid { lease_id, source })?;
        let key = receipt_key(&r);
        if self.conflicted.contains(&key) {
            return Err(TrustError::Conflict { lease_id });
        }
        if let Some(held) = self.receipts.get(&key) {
            if held.receipt() == r.receipt() {
                return Ok(Added::Duplicate);
            }
            self.conflicted.insert(key);
            return Err(TrustError::Conflict { lease_id });
        }
        let max = self.max_receipts.unwrap_or(MAX_RECEIPTS);
        if self.receipts.len() >= max {
            let victim = self
                .receipts
                .iter()
                .filter(|(_, held)| self.evictable(held))
                .min_by_key(|(k, held)| (held.receipt().ended_at, **k))
                .map(|(k, _)| *k);
            match victim.and_then(|k| self.remove_receipt(&k)) {
                Some(gone) => self.evicted.push(gone),
                None => return Err(TrustError::Full { lease_id, max }),
            }
        }
        let (provider, buyer) = (r.receipt().provider, r.receipt().buyer);
        for node in [provider, buyer] {
            self.by_node.entry(node).or_default().insert(key);
        }
        self.receipts.insert(key, r);
        Ok(Added::New)
    }

    /// The receipt held for a lease between these parties (a conflicted one keeps the first, which does not
    /// count).
    pub fn receipt(&self, key: &ReceiptKey) -> Option<&SignedReceipt> {
        self.receipts.get(key)
    }

    /// Every receipt held with this lease id, whoever signed it (others may reuse an honest lease's id; each
    /// counts only for its own signers).
    pub fn receipts_for_lease<'a>(
        &'a self,
        lease_id: &MessageId,
    ) -> impl Iterator<Item = &'a SignedReceipt> + 'a {
        let lease_id = *lease_id;
        self.receipts
            .range((lease_id, NodeId::MIN, NodeId::MIN)..)
            .take_while(move |(k, _)| k.0 == lease_id)
            .map(|(_, r)| r)
    }

    pub fn is_conflicted(&self, key: &ReceiptKey) -> bool {
        self.conflicted.contains(key)
    }

    /// Every receipt held naming `node` as provider or buyer, by lease id.
    pub fn receipts_of<'a>(
        &'a self,
        node: &NodeId,
    ) -> impl Iterator<Item = &'a SignedReceipt> + 'a {
        self.by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|id| self.receipts.get(id))
    }

    /// Every held receipt that counts (conflicted leases left out), in lease-id order: what a node hands to
    /// a peer that syncs.
    pub fn counted_receipts(&self) -> impl Iterator<Item = &SignedReceipt> + '_ {
        self.receipts
            .iter()
            .filter(|(id, _)| !self.conflicted.contains(id))
            .map(|(_, r)| r)
    }

    pub fn len(&self) -> usize {
        self.receipts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.receipts.is_empty()
    }

    /// Records what the wallet found about `node`'s bond (replacing any earlier status of `node`).
    ///
    /// One bond backs one identity: if the status's outpoint is already recorded for another node, nothing
    /// changes and [`BondStatusError::OutpointTaken`] says so; the other node keeps it (the first recorded keeps
    /// an outpoint until its bond is removed or replaced by another outpoint).
    pub fn set_bond(&mut self, node: NodeId, status: BondStatus) -> Result<(), BondStatusError> {
        let outpoint = (status.txid, status.vout);
        if let Some(owner) = self.bond_owners.get(&outpoint) {
            if *owner != node {
                return Err(BondStatusError::OutpointTaken {
                    txid: status.txid,
                    vout: status.vout,
                    owner: *owner,
                    claimant: node,
                });
            }
        }
        if let Some(old) = self.bonds.insert(node, status) {
            let old = (old.txid, old.vout);
            if old != outpoint && self.bond_owners.get(&old) == Some(&node) {
                self.bond_owners.remove(&old);
            }
        }
        self.bond_owners.insert(outpoint, node);
        Ok(())
    }

    pub fn remove_bond(&mut self, node: &NodeId) -> Option<BondStatus> {
        let old = self.bonds.remove(node)?;
        let outpoint = (old.txid, old.vout);
        if self.bond_owners.get(&outpoint) == Some(node) {
            self.bond_owners.remove(&outpoint);
        }
        Some(old)
    }

    /// The node a bond outpoint backs, if recorded.
    pub fn bond_owner(&self, txid: &[u8; 32], vout: u32) -> Option<&NodeId> {
        self.bond_owners.get(&(*txid, vout))
    }

    pub fn bond(&self, node: &NodeId) -> Option<&BondStatus> {
        self.bonds.get(node)
    }

    /// Forgets receipts that ended [`MAX_RECEIPT_AGE_SECS`] or more before `now` (they would be refused if
    /// they arrived now); returns how many.
    pub fn prune(&mut self, now: u64) -> usize {
        self.prune_receipts(now).len()
    }

    /// [`TrustLedger::prune`], returning the receipts forgotten (the node deletes them from its store).
    pub fn prune_receipts(&mut self, now: u64) -> Vec<SignedReceipt> {
        let old: Vec<ReceiptKey> = self
            .receipts
            .iter()
            .filter(|(_, r)| r.receipt().ended_at.saturating_add(MAX_RECEIPT_AGE_SECS) <= now)
            .map(|(id, _)| *id)
            .collect();
        old.iter()
            .filter_map(|id| self.remove_receipt(id))
            .collect()
    }

    /// The weight, in whole sats, a counted receipt ending at `ended_at` with `net` sats has at `now`.
    fn receipt_weight(net: u64, ended_at: u64, now: u64) -> u64 {
        sats(net as f64 * decay(now.saturating_sub(ended_at)))
    }

    /// The total weight of `lender`'s counted receipts at `now`, with every node: what its bond value is
    /// shared among.
    fn lent_weight(&self, lender: &NodeId, now: u64) -> u128 {
        self.by_node
            .get(lender)
            .into_iter()
            .flatten()
            .filter(|k| !self.conflicted.contains(k))
            .filter_map(|k| self.receipts.get(k))
            .map(|r| {
                let r = r.receipt();
                Self::receipt_weight(r.net_sats(), r.ended_at, now) as u128
            })
            .sum()
    }

    /// `node`'s score at `now`, with everything that went into it (rule in the module documentation).
    pub fn score(&self, node: &NodeId, now: u64) -> TrustReport {
        let mut rep = TrustReport::anonymous(*node, now);
        rep.bond = self.bonds.get(node).cloned();
        rep.bond_value_sats = rep.bond.as_ref().map_or(0, BondStatus::live_value);

        let mut local = 0f64;
        let mut unbonded = 0f64;
        let mut bonded: BTreeMap<NodeId, u128> = BTreeMap::new();
        for id in self.by_node.get(node).into_iter().flatten() {
            let Some(signed) = self.receipts.get(id) else {
                continue;
            };
            let r = signed.receipt();
            if self.conflicted.contains(id) {
                rep.conflicted_receipts += 1;
                continue;
            }
            let Some(counterparty) = r.counterparty(node) else {
                continue;
            };
            let net = r.net_sats();
            if r.provider == *node {
                rep.receipts_as_provider += 1;
                rep.sats_as_provider = rep.sats_as_provider.saturating_add(net);
            } else {
                rep.receipts_as_buyer += 1;
                rep.sats_as_buyer = rep.sats_as_buyer.saturating_add(net);
            }
            rep.last_receipt_at = rep.last_receipt_at.max(Some(r.ended_at));
            let w = net as f64 * decay(now.saturating_sub(r.ended_at));
            if Some(counterparty) == self.local {
                local += w;
            } else if self
                .bonds
                .get(&counterparty)
                .is_some_and(BondStatus::is_live)
            {
                *bonded.entry(counterparty).or_default() +=
                    Self::receipt_weight(net, r.ended_at, now) as u128;
            } else {
                unbonded += w;
            }
        }
        rep.local_receipt_weight_sats = sats(local);
        rep.bonded_receipt_weight_sats = bonded
            .iter()
            .map(|(cp, w)| {
                // The bond value is shared among everyone `cp` lends to, in proportion to weight; rounding
                // down keeps the shares' sum within the bond value.
                let cap = self.bonds.get(cp).map_or(0, BondStatus::live_value) as u128;
                let total = self.lent_weight(cp, now).max(*w);
                let share = if total <= cap { *w } else { *w * cap / total };
                u64::try_from(share.min(cap)).unwrap_or(u64::MAX)
            })
            .fold(0u64, u64::saturating_add);
        rep.unbonded_receipt_weight_sats =
            (sats(unbonded * UNBONDED_WEIGHT_PERCENT as f64 / 100.0)).min(UNBONDED_CAP_SATS);
        rep.receipt_weight_sats = rep
            .local_receipt_weight_sats
            .saturating_add(rep.bonded_receipt_weight_sats)
            .saturating_add(rep.unbonded_receipt_weight_sats);
        rep.score = rep.receipt_weight_sats.saturating_add(rep.bond_value_sats);
        rep.tier = Tier::for_score(rep.score);
        rep.next_tier = rep.tier.next();
        rep.score_to_next_tier = rep.next_tier.map(|t| t.min_score() - rep.score);
        rep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Keypair;
    use crate::pool::PoolId;
    use crate::receipt::{ProviderReceipt, Receipt};

    const NOW: u64 = 1_800_000_000;
    const DAY: u64 = 24 * 3600;

    fn key(n: u8) -> Keypair {
        Keypair::from_secret_bytes(&[n; 32])
    }

    fn receipt(lease: u8, provider: u8, buyer: u8, paid: u64, ended_at: u64) -> SignedReceipt {
        ProviderReceipt::sign(
            Receipt {
                lease_id: MessageId([lease; 32]),
                pool: PoolId([1; 32]),
                provider: key(provider).node_id(),
                buyer: key(buyer).node_id(),
                started_at: ended_at - 3600,
                ended_at,
                paid_sats: paid,
                refunded_sats: 0,
            },
            &key(provider),
        )
        .countersign(&key(buyer))
        .unwrap()
    }

    fn bond(value: u64) -> BondStatus {
        BondStatus {
            txid: [9; 32],
            vout: 0,
            amount_sats: value,
            locktime: 1_000_000,
            value_sats: value,
            spent: false,
            checked_at_height: 900_000,
        }
    }

    #[test]
    fn a_node_nothing_is_known_about_is_anonymous() {
        let rep = TrustLedger::new().score(&key(1).node_id(), NOW);
        assert_eq!(rep, TrustReport::anonymous(key(1).node_id(), NOW));
        assert_eq!(rep.tier, Tier::Anonymous);
        assert_eq!(rep.score_to_next_tier, Some(BASIC_MIN_SCORE));
    }

    #[test]
    fn forged_receipts_are_rejected() {
        let good = receipt(1, 1, 2, 1000, NOW);
        let forged = SignedReceipt::from_parts(
            good.receipt().clone(),
            *good.provider_sig(),
            *receipt(1, 1, 3, 1000, NOW).buyer_sig(),
        );
        let mut l = TrustLedger::new();
        let err = l.add_receipt(forged, NOW).unwrap_err();
        assert!(err.is_forgery(), "{err}");
        assert!(l.is_empty());
    }

    #[test]
    fn the_same_receipt_twice_is_a_duplicate_and_a_different_one_a_conflict_in_any_order() {
        let a = receipt(1, 1, 2, 1000, NOW);
        let b = receipt(1, 1, 2, 5000, NOW);
        let mut l = TrustLedger::with_local(key(1).node_id());
        assert_eq!(l.add_receipt(a.clone(), NOW), Ok(Added::New));
        assert_eq!(l.add_receipt(a.clone(), NOW), Ok(Added::Duplicate));
        assert_eq!(l.score(&key(2).node_id(), NOW).score, 1000);
        let conflict = Err(TrustError::Conflict {
            lease_id: MessageId([1; 32]),
        });
        assert_eq!(l.add_receipt(b.clone(), NOW), conflict);
        assert_eq!(l.add_receipt(a.clone(), NOW), conflict);
        let rep = l.score(&key(2).node_id(), NOW);
        assert_eq!((rep.score, rep.conflicted_receipts), (0, 1));

        let mut other = TrustLedger::with_local(key(1).node_id());
        other.add_receipt(b, NOW).unwrap();
        assert!(other.add_receipt(a, NOW).is_err());
        assert_eq!(other.score(&key(2).node_id(), NOW), rep);
    }

    #[test]
    fn weight_halves_every_half_life() {
        let mut l = TrustLedger::with_local(key(1).node_id());
        l.add_receipt(
            receipt(1, 1, 2, 8000, NOW - 2 * RECEIPT_HALF_LIFE_SECS),
            NOW,
        )
        .unwrap();
        assert_eq!(
            l.score(&key(2).node_id(), NOW).local_receipt_weight_sats,
            2000
        );
    }

    #[test]
    fn receipts_with_unbonded_counterparties_count_a_tenth_and_never_reach_basic() {
        let mut l = TrustLedger::new();
        l.add_receipt(receipt(1, 1, 2, 3000, NOW), NOW).unwrap();
        let rep = l.score(&key(2).node_id(), NOW);
        assert_eq!(
            (rep.unbonded_receipt_weight_sats, rep.tier),
            (300, Tier::Anonymous)
        );
        for lease in 3..51 {
            l.add_receipt(receipt(lease, lease, 2, 1_000_000, NOW), NOW)
                .unwrap();
        }
        let rep = l.score(&key(2).node_id(), NOW);
        assert_eq!(rep.unbonded_receipt_weight_sats, UNBONDED_CAP_SATS);
        assert_eq!(rep.tier, Tier::Anonymous);
        assert_eq!(rep.receipts_as_buyer, 49);
    }

    #[test]
    fn a_bonded_counterparty_vouches_for_at_most_its_bond() {
        let mut l = TrustLedger::new();
        l.set_bond(key(1).node_id(), bond(150_000)).unwrap();
        l.add_receipt(receipt(1, 1, 2, 100_000, NOW), NOW).unwrap();
        let rep = l.score(&key(2).node_id(), NOW);
        assert_eq!((rep.score, rep.tier), (100_000, Tier::Established));
        l.add_receipt(receipt(2, 1, 2, 100_000, NOW), NOW).unwrap();
        assert_eq!(
            l.score(&key(2).node_id(), NOW).bonded_receipt_weight_sats,
            150_000
        );
        // Once the provider's bond is spent, its receipts count like any unbonded node's.
        let mut spent = bond(150_000);
        spent.spent = true;
        l.set_bond(key(1).node_id(), spent).unwrap();
        let rep = l.score(&key(2).node_id(), NOW);
        assert_eq!(rep.bonded_receipt_weight_sats, 0);
        assert_eq!(rep.unbonded_receipt_weight_sats, UNBONDED_CAP_SATS);
        assert_eq!(rep.score, UNBONDED_CAP_SATS);
    }

    #[test]
    fn a_bond_lifts_an_anonymous_node_and_a_spent_bond_does_not() {
        let mut l = TrustLedger::new();
        let me = key(5).node_id();
        l.set_bond(me, bond(20_000)).unwrap();
        let rep = l.score(&me, NOW);
        assert_eq!(
            (rep.score, rep.tier, rep.bond_value_sats),
            (20_000, Tier::Basic, 20_000)
        );
        let mut spent = bond(20_000);
        spent.spent = true;
        l.set_bond(me, spent).unwrap();
        assert_eq!(l.score(&me, NOW).tier, Tier::Anonymous);
        l.remove_bond(&me);
        assert_eq!(l.score(&me, NOW).bond, None);
    }

    #[test]
    fn providers_and_buyers_are_counted_separately_and_old_receipts_pruned() {
        let mut l = TrustLedger::with_local(key(9).node_id());
        l.add_receipt(receipt(1, 9, 2, 1000, NOW - 10 * DAY), NOW)
            .unwrap();
        l.add_receipt(receipt(2, 2, 9, 500, NOW), NOW).unwrap();
        let rep = l.score(&key(2).node_id(), NOW);
        assert_eq!((rep.receipts_as_buyer, rep.receipts_as_provider), (1, 1));
        assert_eq!((rep.sats_as_buyer, rep.sats_as_provider), (1000, 500));
        assert_eq!(rep.last_receipt_at, Some(NOW));
        assert_eq!(l.receipts_of(&key(2).node_id()).count(), 2);
        assert_eq!(l.prune(NOW - 10 * DAY + MAX_RECEIPT_AGE_SECS), 1);
        assert_eq!(l.len(), 1);
        assert!(rep.to_string().contains("1 as provider"));
    }

    #[test]
    fn a_bond_outpoint_is_freed_when_its_owner_drops_or_moves_it() {
        let (a, b) = (key(1).node_id(), key(2).node_id());
        let mut l = TrustLedger::new();
        l.set_bond(a, bond(10_000)).unwrap();
        assert!(matches!(
            l.set_bond(b, bond(10_000)),
            Err(BondStatusError::OutpointTaken { owner, claimant, .. }) if owner == a && claimant == b
        ));
        assert_eq!(l.bond(&b), None);
        // The owner re-checking its own bond (spent now) is no claim by another node.
        let mut spent = bond(10_000);
        spent.spent = true;
        l.set_bond(a, spent).unwrap();
        assert_eq!(l.bond_owner(&[9; 32], 0), Some(&a));
        // Moving to another outpoint frees the old one.
        let mut other = bond(10_000);
        other.vout = 1;
        l.set_bond(a, other.clone()).unwrap();
        l.set_bond(b, bond(10_000)).unwrap();
        assert_eq!(l.score(&b, NOW).bond_value_sats, 10_000);
        // So does dropping it.
        l.remove_bond(&b);
        assert_eq!(l.bond_owner(&[9; 32], 0), None);
        let err = l.set_bond(b, other).unwrap_err();
        assert!(
            err.to_string().contains("one bond backs one identity"),
            "{err}"
        );
    }

    #[test]
    fn receipts_of_one_lease_id_by_other_parties_are_held_apart() {
        let mut l = TrustLedger::new();
        let honest = receipt(1, 1, 2, 1000, NOW);
        l.add_receipt(honest.clone(), NOW).unwrap();
        l.add_receipt(receipt(1, 5, 6, 9000, NOW), NOW).unwrap();
        l.add_receipt(receipt(2, 1, 2, 1000, NOW), NOW).unwrap();
        assert_eq!(l.receipts_for_lease(&MessageId([1; 32])).count(), 2);
        assert_eq!(l.receipt(&receipt_key(&honest)), Some(&honest));
        // The same parties signing another receipt for the lease conflict only that pair's receipt.
        assert!(l.add_receipt(receipt(1, 1, 2, 2000, NOW), NOW).is_err());
        assert!(l.is_conflicted(&receipt_key(&honest)));
        assert!(!l.is_conflicted(&receipt_key(&receipt(1, 5, 6, 9000, NOW))));
        assert_eq!(l.counted_receipts().count(), 2);
        assert_eq!(l.prune(NOW + MAX_RECEIPT_AGE_SECS), 3);
        assert!(l.is_empty() && !l.is_conflicted(&receipt_key(&honest)));
    }

    /// Issue 15, attack 8: a flood of receipts cannot grow the ledger without bound, nor push out receipts
    /// that count for a tier.
    #[test]
    fn a_full_ledger_evicts_only_receipts_that_cannot_change_a_tier() {
        let me = key(9).node_id();
        let mut l = TrustLedger::with_local(me).with_max_receipts(3);
        l.set_bond(key(7).node_id(), bond(50_000)).unwrap();
        let first_hand = receipt(1, 9, 2, 1000, NOW - 100);
        let bonded = receipt(2, 7, 3, 1000, NOW - 90);
        let sybil_old = receipt(3, 5, 6, 1000, NOW - 80);
        for r in [&first_hand, &bonded, &sybil_old] {
            l.add_receipt(r.clone(), NOW).unwrap();
        }
        // Full: a newcomer evicts the only receipt between unbonded strangers.
        let sybil_new = receipt(4, 5, 6, 1000, NOW - 1);
        assert_eq!(l.add_receipt(sybil_new.clone(), NOW), Ok(Added::New));
        assert_eq!(l.take_evicted(), vec![sybil_old]);
        assert!(l.take_evicted().is_empty());
        // Then the Sybil pair's newer one; after that nothing is evictable and newcomers are refused.
        assert_eq!(
            l.add_receipt(receipt(5, 5, 6, 1000, NOW), NOW),
            Ok(Added::New)
        );
        assert_eq!(l.take_evicted(), vec![sybil_new]);
        l.set_bond(key(5).node_id(), {
            let mut b = bond(50_000);
            b.vout = 1;
            b
        })
        .unwrap();
        assert!(matches!(
            l.add_receipt(receipt(6, 1, 2, 1000, NOW), NOW),
            Err(TrustError::Full { max: 3, .. })
        ));
        assert_eq!(l.len(), 3);
        assert_eq!(l.receipt(&receipt_key(&first_hand)), Some(&first_hand));
        assert_eq!(l.receipt(&receipt_key(&bonded)), Some(&bonded));
    }

    #[test]
    fn tiers_follow_the_documented_thresholds() {
        assert_eq!(Tier::for_score(0), Tier::Anonymous);
        assert_eq!(Tier::for_score(BASIC_MIN_SCORE - 1), Tier::Anonymous);
        assert_eq!(Tier::for_score(BASIC_MIN_SCORE), Tier::Basic);
        assert_eq!(Tier::for_score(ESTABLISHED_MIN_SCORE), Tier::Established);
        assert_eq!(Tier::for_score(u64::MAX), Tier::Trusted);
        assert_eq!(Tier::Trusted.next(), None);
    }
}
