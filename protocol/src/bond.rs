//! Fidelity bonds: bitcoin locked in a timelocked output (`<locktime> OP_CHECKLOCKTIMEVERIFY OP_DROP
//! <bond_pubkey> OP_CHECKSIG`, in P2WSH), which a node proves it controls and binds to its node id. Locking
//! money costs its owner the use of it, so a bond is what makes an identity expensive: bond value ranks offers
//! and raises a buyer's admission limits, and receipts count fully only with a bonded counterparty.
//!
//! This crate checks the proof's structure and the node's ed25519 signature. It has no secp256k1 and no
//! chain: the wallet checks the ECDSA `binding_sig` over [`bond_binding_message`] with `bond_pubkey`, that the
//! output at `txid:vout` pays the script built from `locktime` and `bond_pubkey`, holds `amount_sats` and is
//! unspent.

use serde::{Deserialize, Serialize};

use crate::encoding::{Decode, DecodeError, Encode, Reader, Writer};
use crate::identity::NodeId;
use crate::offer::BondRef;
use sha2::{Digest, Sha256};

/// Domain tag of the message the bond key signs.
pub const BOND_BINDING_DOMAIN: &[u8] = b"xov/bond/v1\0";
/// Lock times at or above this are Unix times, not block heights (bitcoin's rule); bonds must use heights.
pub const LOCKTIME_THRESHOLD: u32 = 500_000_000;
/// Blocks in a year at one block per ten minutes: the unit lock time is valued in.
pub const BLOCKS_PER_YEAR: u32 = 144 * 365;
/// Remaining lock time beyond this (four years) adds no value, so a tiny bond locked for a century is not
/// worth more than a real one.
pub const MAX_BOND_LOCK_BLOCKS: u32 = 4 * BLOCKS_PER_YEAR;
/// No amount of bitcoin exceeds this (21 million BTC).
pub const MAX_MONEY_SATS: u64 = 2_100_000_000_000_000;

/// The 32 bytes the bond key signs (ECDSA, by the wallet) to bind the bond to `node`:
/// SHA-256(`"xov/bond/v1\0"` ‖ node id (32) ‖ txid (32, internal byte order) ‖ vout (u32 big-endian)).
/// Binding the node id means nobody can claim someone else's bond.
pub fn bond_binding_message(node: &NodeId, txid: &[u8; 32], vout: u32) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(BOND_BINDING_DOMAIN);
    h.update(node.as_bytes());
    h.update(txid);
    h.update(vout.to_be_bytes());
    h.finalize().into()
}

/// What a bond is worth for ranking and limits, in sats:
/// `amount_sats × min(locktime − current_height, MAX_BOND_LOCK_BLOCKS) / BLOCKS_PER_YEAR`, rounded down.
///
/// So a bond locked for one more year is worth its amount, six months half of it, four years or more four
/// times it. Value grows with the amount and with the remaining lock, and falls as the unlock height
/// approaches; once it is reached (the owner may spend at any time) the bond is worth nothing. A `locktime`
/// that is a Unix time (≥ [`LOCKTIME_THRESHOLD`]) is worth nothing either. Linear in the amount: splitting a
/// bond among several identities splits its value too.
pub fn bond_value(amount_sats: u64, locktime_height: u32, current_height: u32) -> u64 {
    if locktime_height >= LOCKTIME_THRESHOLD {
        return 0;
    }
    let remaining = locktime_height
        .saturating_sub(current_height)
        .min(MAX_BOND_LOCK_BLOCKS);
    let value = amount_sats as u128 * remaining as u128 / BLOCKS_PER_YEAR as u128;
    u64::try_from(value).unwrap_or(u64::MAX)
}

/// A node's claim to a bond, sent as `Signed<BondProof>` signed by `node` and gossiped in the node's pools.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BondProof {
    /// Author; the node the bond backs.
    pub node: NodeId,
    /// Transaction id of the bond output, internal byte order (shown reversed in JSON, as bitcoind does).
    #[serde(with = "crate::hex::txid")]
    pub txid: [u8; 32],
    pub vout: u32,
    /// Value of the output, as the owner claims it; the wallet checks it against the chain.
    pub amount_sats: u64,
    /// Block height of the `OP_CHECKLOCKTIMEVERIFY` in the output's script.
    pub locktime: u32,
    /// Compressed secp256k1 public key of the script.
    #[serde(with = "crate::hex::array")]
    pub bond_pubkey: [u8; 33],
    /// Compact (r ‖ s) ECDSA signature by `bond_pubkey` over [`bond_binding_message`].
    #[serde(with = "crate::hex::array")]
    pub binding_sig: [u8; 64],
    pub created_at: u64,
    /// Height of the block that confirmed the bond, 0 if not given: a hint that lets a light client check the
    /// bond from that block on instead of scanning the chain. The chain check decides; the hint proves nothing.
    pub height: u32,
}

impl BondProof {
    /// The message `binding_sig` must sign.
    pub fn binding_message(&self) -> [u8; 32] {
        bond_binding_message(&self.node, &self.txid, self.vout)
    }

    /// The outpoint, in the form offers reference bonds by.
    pub fn outpoint(&self) -> BondRef {
        BondRef {
            txid: self.txid,
            vout: self.vout,
        }
    }

    /// [`bond_value`] of this bond at `current_height`.
    pub fn value_at(&self, current_height: u32) -> u64 {
        bond_value(self.amount_sats, self.locktime, current_height)
    }
}

impl Encode for BondProof {
    fn encode(&self, w: &mut Writer) {
        self.node.encode(w);
        w.raw(&self.txid);
        w.u32(self.vout);
        w.u64(self.amount_sats);
        w.u32(self.locktime);
        w.raw(&self.bond_pubkey);
        w.raw(&self.binding_sig);
        w.u64(self.created_at);
        w.u32(self.height);
    }
}

impl Decode for BondProof {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(BondProof {
            node: NodeId::decode(r)?,
            txid: r.array("bond txid")?,
            vout: r.u32("bond vout")?,
            amount_sats: r.u64("bond amount")?,
            locktime: r.u32("bond locktime")?,
            bond_pubkey: r.array("bond pubkey")?,
            binding_sig: r.array("binding signature")?,
            created_at: r.u64("created at")?,
            height: r.u32("bond height")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Keypair;

    #[test]
    fn the_binding_message_commits_to_node_and_outpoint() {
        let a = Keypair::from_secret_bytes(&[1; 32]).node_id();
        let b = Keypair::from_secret_bytes(&[2; 32]).node_id();
        let m = bond_binding_message(&a, &[7; 32], 1);
        assert_ne!(m, bond_binding_message(&b, &[7; 32], 1));
        assert_ne!(m, bond_binding_message(&a, &[8; 32], 1));
        assert_ne!(m, bond_binding_message(&a, &[7; 32], 2));
        // Pinned: the wallet signs exactly these bytes, so they must never change.
        let mut input = b"xov/bond/v1\0".to_vec();
        input.extend_from_slice(a.as_bytes());
        input.extend_from_slice(&[7; 32]);
        input.extend_from_slice(&[0, 0, 0, 1]);
        assert_eq!(m, <[u8; 32]>::from(Sha256::digest(&input)));
    }

    #[test]
    fn value_grows_with_amount_and_remaining_lock_and_is_nothing_once_unlocked() {
        let year = BLOCKS_PER_YEAR;
        assert_eq!(bond_value(1_000_000, 1000 + year, 1000), 1_000_000);
        assert_eq!(bond_value(1_000_000, 1000 + year / 2, 1000), 500_000);
        assert_eq!(bond_value(2_000_000, 1000 + year, 1000), 2_000_000);
        assert_eq!(bond_value(1_000_000, 1000 + 10 * year, 1000), 4_000_000);
        assert_eq!(bond_value(1_000_000, 1000, 1000), 0);
        assert_eq!(bond_value(1_000_000, 999, 1000), 0);
        assert_eq!(bond_value(1_000_000, LOCKTIME_THRESHOLD + 1, 0), 0);
        assert_eq!(bond_value(u64::MAX, 1000 + year * 4, 1000), u64::MAX);
        let mut last = u64::MAX;
        for h in (0..=2000).step_by(100) {
            let v = bond_value(5_000_000, 2000, h);
            assert!(v <= last, "value rose as the unlock height approached");
            last = v;
        }
    }
}
