//! Fidelity bonds: bitcoin locked in a timelocked output (as in JoinMarket) so that a provider or buyer can
//! show it has something to lose. The output is P2WSH of
//! `<locktime> OP_CHECKLOCKTIMEVERIFY OP_DROP <pubkey> OP_CHECKSIG`: nobody, the owner included, can move the
//! coins before the locktime, and only the owner's key can after it.
//!
//! The owner publishes the outpoint, key and locktime with a signature by the bond key over a digest that
//! binds the bond to its node identity (the protocol crate computes the digest); anyone verifies the
//! signature with [`verify_bond_binding`] and the output against the chain with
//! [`XovWallet::check_bond`](crate::XovWallet::check_bond).
//!
//! Bond keys come from the wallet's seed at `m/84'/<coin>'/0'/2/<index>` (coin 0 on mainnet, 1 elsewhere;
//! chain 2 of the BIP84 account, the chain JoinMarket uses for its bonds), one index per bond counted from
//! 0, so the keys are recoverable from the mnemonic. The locktime is not (JoinMarket encodes it in the
//! index; we allow any height): it lives in the bond record, which is stored before any coins move.

use bdk_wallet::bitcoin::absolute::LockTime;
use bdk_wallet::bitcoin::bip32::{ChildNumber, DerivationPath, Xpriv};
use bdk_wallet::bitcoin::hashes::Hash;
use bdk_wallet::bitcoin::secp256k1::{self, ecdsa, Message, Secp256k1, SecretKey};
use bdk_wallet::bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bdk_wallet::bitcoin::{
    opcodes, script, transaction, Address, Amount, FeeRate, Network, OutPoint, PublicKey,
    ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness,
};
use bdk_wallet::chain::ChainPosition;
use bdk_wallet::KeychainKind;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::info;

use crate::error::WalletError;
use crate::wallet::{create_tx_error, sign, unix_now, Inner, XovWallet, FALLBACK_FEE_SAT_PER_VB};

/// The BIP84 account chain that holds bond keys.
pub const BOND_KEY_CHAIN: u32 = 2;

/// The derivation path of bond key `index`: `m/84'/<coin>'/0'/2/<index>`.
pub fn bond_key_path(network: Network, index: u32) -> DerivationPath {
    let coin = if network == Network::Bitcoin { 0 } else { 1 };
    let hardened = |i| ChildNumber::from_hardened_idx(i).expect("small index");
    let normal = |i| ChildNumber::from_normal_idx(i).expect("index below 2^31");
    DerivationPath::from(vec![
        hardened(84),
        hardened(coin),
        hardened(0),
        normal(BOND_KEY_CHAIN),
        normal(index & 0x7fff_ffff),
    ])
}

/// The secret key of bond `index`.
pub(crate) fn bond_secret_key(
    xprv: &Xpriv,
    network: Network,
    index: u32,
) -> Result<SecretKey, WalletError> {
    let secp = Secp256k1::signing_only();
    xprv.derive_priv(&secp, &bond_key_path(network, index))
        .map(|k| k.private_key)
        .map_err(|e| WalletError::Descriptor(e.to_string()))
}

/// The witness script of a bond: `<locktime> OP_CHECKLOCKTIMEVERIFY OP_DROP <pubkey> OP_CHECKSIG`. The
/// locktime is a block height (below 500 000 000) or a unix time, pushed as a minimal script number.
pub fn bond_script(pubkey: &secp256k1::PublicKey, locktime: LockTime) -> ScriptBuf {
    script::Builder::new()
        .push_lock_time(locktime)
        .push_opcode(opcodes::all::OP_CLTV)
        .push_opcode(opcodes::all::OP_DROP)
        .push_slice(pubkey.serialize())
        .push_opcode(opcodes::all::OP_CHECKSIG)
        .into_script()
}

/// The output script a bond is paid to: P2WSH of [`bond_script`].
pub fn bond_script_pubkey(pubkey: &secp256k1::PublicKey, locktime: LockTime) -> ScriptBuf {
    ScriptBuf::new_p2wsh(&bond_script(pubkey, locktime).wscript_hash())
}

/// The address of a bond on `network`.
pub fn bond_address(
    pubkey: &secp256k1::PublicKey,
    locktime: LockTime,
    network: Network,
) -> Address {
    Address::p2wsh(&bond_script(pubkey, locktime), network)
}

/// A 33-byte compressed key from the wire.
pub fn parse_bond_pubkey(pubkey: &[u8; 33]) -> Result<secp256k1::PublicKey, BondError> {
    secp256k1::PublicKey::from_slice(pubkey).map_err(|_| BondError::BadPubkey)
}

/// Signs a 32-byte digest (the node binding) with a bond key: ECDSA, compact 64-byte form, low S.
pub(crate) fn sign_digest(key: &SecretKey, digest: &[u8; 32]) -> [u8; 64] {
    let secp = Secp256k1::signing_only();
    secp.sign_ecdsa(&Message::from_digest(*digest), key)
        .serialize_compact()
}

/// Checks that `sig` is the bond key's signature over `digest`. High-S (malleated) signatures are refused.
pub fn verify_bond_binding(
    pubkey: &[u8; 33],
    digest: &[u8; 32],
    sig: &[u8; 64],
) -> Result<(), BondError> {
    let pk = parse_bond_pubkey(pubkey)?;
    let sig = ecdsa::Signature::from_compact(sig).map_err(|_| BondError::BadSignature)?;
    Secp256k1::verification_only()
        .verify_ecdsa(&Message::from_digest(*digest), &sig, &pk)
        .map_err(|_| BondError::BadSignature)
}

/// One of this wallet's bonds, as stored (before the funding transaction is broadcast) and listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bond {
    pub outpoint: OutPoint,
    pub amount_sat: u64,
    pub locktime: LockTime,
    /// Index of the bond key under [`bond_key_path`].
    pub key_index: u32,
    /// Compressed public key of the bond key.
    pub pubkey: PublicKey,
    /// The P2WSH output script.
    pub script_pubkey: ScriptBuf,
    pub created_at: u64,
    /// Height of the block that confirmed the funding transaction, as the wallet last saw it (filled in
    /// when listed; None while unconfirmed).
    #[serde(default)]
    pub height: Option<u32>,
    /// The transaction that moved the coins back to the wallet, once [`unlock_bond`] broadcast it.
    ///
    /// [`unlock_bond`]: crate::XovWallet::unlock_bond
    #[serde(default)]
    pub unlock_txid: Option<Txid>,
}

impl Bond {
    /// The 33-byte compressed public key, as published in the bond proof.
    pub fn pubkey_bytes(&self) -> [u8; 33] {
        self.pubkey.inner.serialize()
    }

    /// The funding txid in the byte order of the transaction serialization (the reverse of its hex form).
    pub fn txid_bytes(&self) -> [u8; 32] {
        self.outpoint.txid.to_byte_array()
    }

    /// The witness script.
    pub fn witness_script(&self) -> ScriptBuf {
        bond_script(&self.pubkey.inner, self.locktime)
    }
}

/// What a bond proof claims, to be checked against the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BondClaim {
    pub outpoint: OutPoint,
    pub pubkey: [u8; 33],
    pub locktime: LockTime,
    pub amount_sat: u64,
    /// Height of the block that confirmed the bond. The light client needs it (it scans block filters
    /// from there); bitcoind uses it to find a spent bond's transaction when it runs without `-txindex`.
    pub height_hint: Option<u32>,
}

/// A bond found unspent on the chain, with the claimed script and amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BondStatus {
    pub amount_sat: u64,
    /// Height of the confirming block; None while in bitcoind's mempool.
    pub height: Option<u32>,
    pub confirmations: u32,
    pub tip_height: u32,
    /// Whether the locktime has passed: the owner can move the coins at any time, so the bond no longer
    /// costs anything to keep.
    pub locktime_passed: bool,
}

/// Why a bond is not accepted.
#[derive(Debug, Error)]
pub enum BondError {
    #[error("bond public key is not a valid compressed secp256k1 key")]
    BadPubkey,
    #[error("bond signature does not verify")]
    BadSignature,
    #[error("bond output {outpoint} not found: {detail}")]
    NotFound { outpoint: OutPoint, detail: String },
    #[error(
        "output {outpoint} pays {actual}, not the bond script {expected} of this key and locktime"
    )]
    ScriptMismatch {
        outpoint: OutPoint,
        expected: String,
        actual: String,
    },
    #[error("bond {outpoint} holds {actual_sat} sat, not the claimed {claimed_sat} sat")]
    AmountMismatch {
        outpoint: OutPoint,
        claimed_sat: u64,
        actual_sat: u64,
    },
    #[error("bond {outpoint} is spent{}", spending_txid.map(|t| format!(" by {t}")).unwrap_or_default())]
    Spent {
        outpoint: OutPoint,
        spending_txid: Option<Txid>,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("chain source: {0}")]
    Chain(String),
    /// The light client would have to scan more block filters than this node allows to check the claim
    /// (its claimed confirmation is too far below the tip). The tip only grows, so this never changes.
    #[error("bond {outpoint} claims a confirmation at height {height}, {depth} blocks below the tip: more than the {max_blocks} this node scans")]
    TooDeep {
        outpoint: OutPoint,
        height: u32,
        depth: u32,
        max_blocks: u32,
    },
}

/// The script a claim must pay, from its key and locktime.
pub(crate) fn expected_script_pubkey(claim: &BondClaim) -> Result<ScriptBuf, BondError> {
    Ok(bond_script_pubkey(
        &parse_bond_pubkey(&claim.pubkey)?,
        claim.locktime,
    ))
}

/// Compares a found output with the claim: script first, then amount.
pub(crate) fn match_output(
    claim: &BondClaim,
    expected: &ScriptBuf,
    script_pubkey: &[u8],
    amount_sat: u64,
) -> Result<(), BondError> {
    if script_pubkey != expected.as_bytes() {
        return Err(BondError::ScriptMismatch {
            outpoint: claim.outpoint,
            expected: expected.to_hex_string(),
            actual: hex::encode(script_pubkey),
        });
    }
    if amount_sat != claim.amount_sat {
        return Err(BondError::AmountMismatch {
            outpoint: claim.outpoint,
            claimed_sat: claim.amount_sat,
            actual_sat: amount_sat,
        });
    }
    Ok(())
}

/// Whether a locktime is reached at a tip of `tip_height` whose median time past is `tip_mtp` (the rules a
/// transaction's nLockTime is judged by: a height lock allows the next block after it, a time lock needs
/// the median time past beyond it).
pub fn locktime_passed(locktime: LockTime, tip_height: u32, tip_mtp: u64) -> bool {
    match locktime {
        LockTime::Blocks(h) => tip_height >= h.to_consensus_u32(),
        LockTime::Seconds(t) => tip_mtp > u64::from(t.to_consensus_u32()),
    }
}

impl Bond {
    /// This bond as a claim to check against the chain (what a proof of it publishes).
    pub fn claim(&self) -> BondClaim {
        BondClaim {
            outpoint: self.outpoint,
            pubkey: self.pubkey_bytes(),
            locktime: self.locktime,
            amount_sat: self.amount_sat,
            height_hint: self.height,
        }
    }
}

/// Dust limit of the P2WPKH output an unlock pays to.
const UNLOCK_DUST_SAT: u64 = 294;

impl XovWallet {
    /// Locks `amount_sat` of the wallet's coins in a new bond until `locktime` (a block height, or a unix
    /// time from 500 000 000 on), change back to the wallet. The bond is stored before the transaction is
    /// broadcast, so coins never sit in a bond the wallet has no record of.
    pub async fn create_bond(
        &self,
        amount_sat: u64,
        locktime: LockTime,
        fee_sat_per_vb: Option<u64>,
    ) -> Result<Bond, WalletError> {
        let fee_sat_per_vb = match fee_sat_per_vb {
            Some(f) => Some(f),
            None => Some(self.fee_rate().await),
        };
        let (tx, bond) = {
            let mut g = self.lock();
            let tip = g.wallet.latest_checkpoint().height();
            if locktime_passed(locktime, tip, unix_now()) {
                return Err(WalletError::BadBond(format!(
                    "locktime {locktime} has passed already (tip {tip}); a bond locks its coins until \
                     a future height or time"
                )));
            }
            let index = g.bonds.values().map(|b| b.key_index + 1).max().unwrap_or(0);
            let sk = bond_secret_key(&g.xprv, self.network, index)?;
            let pk = sk.public_key(g.wallet.secp_ctx());
            let spk = bond_script_pubkey(&pk, locktime);
            let rate = FeeRate::from_sat_per_vb(fee_sat_per_vb.unwrap_or(FALLBACK_FEE_SAT_PER_VB))
                .ok_or_else(|| WalletError::Build("fee rate out of range".into()))?;
            let mut b = g.wallet.build_tx();
            b.add_recipient(spk.clone(), Amount::from_sat(amount_sat))
                .fee_rate(rate);
            let psbt = b.finish().map_err(create_tx_error)?;
            let tx = sign(&mut g, psbt)?;
            let vout = tx
                .output
                .iter()
                .position(|o| o.script_pubkey == spk)
                .ok_or_else(|| WalletError::Build("the bond output went missing".into()))?;
            let bond = Bond {
                outpoint: OutPoint::new(tx.compute_txid(), vout as u32),
                amount_sat,
                locktime,
                key_index: index,
                pubkey: PublicKey::new(pk),
                script_pubkey: spk,
                created_at: unix_now(),
                height: None,
                unlock_txid: None,
            };
            g.store.save_bond(&bond)?;
            g.bonds.insert(bond.outpoint, bond.clone());
            g.persist()?;
            (tx, bond)
        };
        self.broadcast(tx).await?;
        info!(outpoint = %bond.outpoint, amount_sat, locktime = %locktime, "fidelity bond created");
        Ok(bond)
    }

    /// The wallet's bonds, with the confirmation height of each as the wallet sees it now.
    pub fn list_bonds(&self) -> Vec<Bond> {
        let g = self.lock();
        g.bonds.values().map(|b| with_height(&g, b)).collect()
    }

    pub fn bond(&self, outpoint: OutPoint) -> Option<Bond> {
        let g = self.lock();
        g.bonds.get(&outpoint).map(|b| with_height(&g, b))
    }

    /// Signs `digest` (the protocol's binding of this bond to a node) with the bond's key.
    pub fn sign_bond_binding(
        &self,
        outpoint: OutPoint,
        digest: &[u8; 32],
    ) -> Result<[u8; 64], WalletError> {
        let g = self.lock();
        let b = g
            .bonds
            .get(&outpoint)
            .ok_or_else(|| WalletError::NoSuchBond(outpoint.to_string()))?;
        let sk = bond_secret_key(&g.xprv, self.network, b.key_index)?;
        Ok(sign_digest(&sk, digest))
    }

    /// Checks a bond claim (anyone's) against the chain through this wallet's chain source: the output must
    /// exist, pay the script of the claimed key and locktime, hold the claimed amount, and be unspent.
    pub async fn check_bond(&self, claim: &BondClaim) -> Result<BondStatus, BondError> {
        self.check_bond_within(claim, u32::MAX).await
    }

    /// [`XovWallet::check_bond`], bounding the work an untrusted claim can cause: on compact block filters, a
    /// claim confirmed more than `max_scan_blocks` below the wallet's tip is [`BondError::TooDeep`] before
    /// any filter is fetched (bitcoind RPC looks the output up directly, so the bound does not apply there).
    pub async fn check_bond_within(
        &self,
        claim: &BondClaim,
        max_scan_blocks: u32,
    ) -> Result<BondStatus, BondError> {
        let tip = self.lock().wallet.latest_checkpoint();
        self.chain.check_bond(claim, tip, max_scan_blocks).await
    }

    /// Moves a bond whose locktime has passed back to a fresh address of this wallet; returns the txid.
    pub async fn unlock_bond(
        &self,
        outpoint: OutPoint,
        fee_sat_per_vb: Option<u64>,
    ) -> Result<String, WalletError> {
        let fee_sat_per_vb = match fee_sat_per_vb {
            Some(f) => Some(f),
            None => Some(self.fee_rate().await),
        };
        let (tx, bond) = {
            let mut g = self.lock();
            let bond = g
                .bonds
                .get(&outpoint)
                .cloned()
                .ok_or_else(|| WalletError::NoSuchBond(outpoint.to_string()))?;
            let tip = g.wallet.latest_checkpoint().height();
            if let LockTime::Blocks(h) = bond.locktime {
                if tip < h.to_consensus_u32() {
                    return Err(WalletError::BondLocked(format!(
                        "it unlocks once the chain reaches height {h}; the wallet's tip is {tip}"
                    )));
                }
            }
            let rate = FeeRate::from_sat_per_vb(fee_sat_per_vb.unwrap_or(FALLBACK_FEE_SAT_PER_VB))
                .ok_or_else(|| WalletError::Build("fee rate out of range".into()))?;
            let to = g.wallet.reveal_next_address(KeychainKind::External);
            g.persist()?;
            self.maybe_rebuild(&g, to.index);
            let witness_script = bond.witness_script();
            let value = Amount::from_sat(bond.amount_sat);
            let mut tx = Transaction {
                version: transaction::Version::TWO,
                // CHECKLOCKTIMEVERIFY compares with the spending transaction's nLockTime...
                lock_time: bond.locktime,
                input: vec![TxIn {
                    previous_output: outpoint,
                    script_sig: ScriptBuf::new(),
                    // ...which only applies with a non-final sequence (this one also signals RBF).
                    sequence: Sequence(0xffff_fffd),
                    witness: Witness::new(),
                }],
                output: vec![TxOut {
                    value,
                    script_pubkey: to.address.script_pubkey(),
                }],
            };
            // Priced with a worst-case (73-byte) signature before signing.
            tx.input[0].witness = Witness::from_slice(&[vec![0u8; 73], witness_script.to_bytes()]);
            let fee = rate
                .fee_vb(tx.vsize() as u64)
                .ok_or_else(|| WalletError::Build("fee out of range".into()))?;
            let out = bond
                .amount_sat
                .checked_sub(fee.to_sat())
                .filter(|v| *v >= UNLOCK_DUST_SAT)
                .ok_or_else(|| {
                    WalletError::InsufficientFunds(format!(
                        "the bond's {} sat do not cover the {} sat fee",
                        bond.amount_sat,
                        fee.to_sat()
                    ))
                })?;
            tx.output[0].value = Amount::from_sat(out);
            let sighash = SighashCache::new(&tx)
                .p2wsh_signature_hash(0, &witness_script, value, EcdsaSighashType::All)
                .map_err(|e| WalletError::Sign(e.to_string()))?;
            let sk = bond_secret_key(&g.xprv, self.network, bond.key_index)?;
            let sig = g
                .wallet
                .secp_ctx()
                .sign_ecdsa(&Message::from_digest(sighash.to_byte_array()), &sk);
            let sig = bdk_wallet::bitcoin::ecdsa::Signature::sighash_all(sig);
            tx.input[0].witness = Witness::from_slice(&[sig.to_vec(), witness_script.to_bytes()]);
            (tx, bond)
        };
        let txid = self.broadcast(tx).await?;
        let mut g = self.lock();
        let mut bond = bond;
        bond.unlock_txid = txid.parse().ok();
        g.store.save_bond(&bond)?;
        g.bonds.insert(outpoint, bond);
        info!(outpoint = %outpoint, txid = %txid, "fidelity bond unlocked");
        Ok(txid)
    }
}

/// A stored bond with the funding transaction's confirmation height from the wallet's chain view.
fn with_height(g: &Inner, b: &Bond) -> Bond {
    let mut b = b.clone();
    b.height = g
        .wallet
        .get_tx(b.outpoint.txid)
        .and_then(|t| match t.chain_position {
            ChainPosition::Confirmed { anchor, .. } => Some(anchor.block_id.height),
            ChainPosition::Unconfirmed { .. } => None,
        });
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use bdk_wallet::bitcoin::hashes::sha256;

    fn key(n: u8) -> (SecretKey, secp256k1::PublicKey) {
        let sk = SecretKey::from_slice(&[n; 32]).unwrap();
        (sk, sk.public_key(&Secp256k1::signing_only()))
    }

    #[test]
    fn bond_script_has_the_joinmarket_layout() {
        let (_, pk) = key(7);
        let s = bond_script(&pk, LockTime::from_height(500).unwrap());
        let mut want = vec![0x02, 0xf4, 0x01, 0xb1, 0x75, 0x21];
        want.extend_from_slice(&pk.serialize());
        want.push(0xac);
        assert_eq!(s.as_bytes(), &want[..]);

        // A height whose top bit is set needs a sign byte: 128 is pushed as 0x80 0x00.
        let s = bond_script(&pk, LockTime::from_height(128).unwrap());
        assert_eq!(&s.as_bytes()[..5], &[0x02, 0x80, 0x00, 0xb1, 0x75]);

        // A unix time: 1_700_000_000 = 0x6553f100, little-endian.
        let s = bond_script(&pk, LockTime::from_time(1_700_000_000).unwrap());
        assert_eq!(
            &s.as_bytes()[..7],
            &[0x04, 0x00, 0xf1, 0x53, 0x65, 0xb1, 0x75]
        );

        let spk = bond_script_pubkey(&pk, LockTime::from_height(500).unwrap());
        assert!(spk.is_p2wsh());
        let hash = sha256::Hash::hash(&want);
        assert_eq!(&spk.as_bytes()[2..], hash.as_byte_array());
        assert_eq!(
            bond_address(&pk, LockTime::from_height(500).unwrap(), Network::Regtest)
                .script_pubkey(),
            spk
        );
    }

    #[test]
    fn bond_keys_follow_the_documented_path() {
        assert_eq!(
            bond_key_path(Network::Bitcoin, 3).to_string(),
            "84'/0'/0'/2/3"
        );
        assert_eq!(
            bond_key_path(Network::Regtest, 0).to_string(),
            "84'/1'/0'/2/0"
        );
    }

    #[test]
    fn binding_signature_verifies_and_forgeries_do_not() {
        let (sk, pk) = key(9);
        let digest = sha256::Hash::hash(b"node binding").to_byte_array();
        let sig = sign_digest(&sk, &digest);
        let pk33 = pk.serialize();
        verify_bond_binding(&pk33, &digest, &sig).expect("genuine signature verifies");

        let other = sha256::Hash::hash(b"another node").to_byte_array();
        assert!(matches!(
            verify_bond_binding(&pk33, &other, &sig),
            Err(BondError::BadSignature)
        ));
        let (_, pk2) = key(10);
        assert!(matches!(
            verify_bond_binding(&pk2.serialize(), &digest, &sig),
            Err(BondError::BadSignature)
        ));
        let mut flipped = sig;
        flipped[10] ^= 1;
        assert!(verify_bond_binding(&pk33, &digest, &flipped).is_err());
        // The same signature with S negated is valid ECDSA but malleated: refused.
        let mut high_s = ecdsa::Signature::from_compact(&sig).unwrap();
        let mut s = high_s.serialize_compact();
        let neg = SecretKey::from_slice(&s[32..])
            .unwrap()
            .negate()
            .secret_bytes();
        s[32..].copy_from_slice(&neg);
        high_s = ecdsa::Signature::from_compact(&s).unwrap();
        assert!(matches!(
            verify_bond_binding(&pk33, &digest, &high_s.serialize_compact()),
            Err(BondError::BadSignature)
        ));
        assert!(matches!(
            verify_bond_binding(&[5u8; 33], &digest, &sig),
            Err(BondError::BadPubkey)
        ));
    }

    #[test]
    fn locktimes_pass_by_height_or_median_time() {
        let h = LockTime::from_height(100).unwrap();
        assert!(!locktime_passed(h, 99, 0));
        assert!(locktime_passed(h, 100, 0));
        let t = LockTime::from_time(1_700_000_000).unwrap();
        assert!(!locktime_passed(t, 1, 1_700_000_000));
        assert!(locktime_passed(t, 1, 1_700_000_001));
    }
}
