//! Payouts (refunds) that a caller can make exactly once: build and sign first, persist the result, then
//! broadcast it, as often as needed, until the chain has it.
//!
//! Invariants:
//! - `build_payout` neither broadcasts nor applies the transaction to the wallet. The recipient gets exactly
//!   `value_sat - fee_sat`; inputs and fee together come to `value_sat` plus whatever goes back to the
//!   wallet's internal (change) keychain.
//! - Coins spent by a payout built in this process but not yet broadcast are kept out of later payouts'
//!   coin selection, so two pending payouts never spend the same coin. This reservation lives in memory
//!   only: after a restart, broadcast the payouts persisted earlier before building new ones.
//! - `broadcast_signed` is idempotent: a transaction the chain source has already (mempool or block), or the
//!   wallet sees confirmed, is a success, not an error.
//! - Nothing secret is logged: txids, amounts and fees only.

use std::str::FromStr;

use bdk_wallet::bitcoin::consensus::encode::{deserialize_hex, serialize_hex};
use bdk_wallet::bitcoin::{Amount, FeeRate, OutPoint, Transaction, Txid};
use bdk_wallet::chain::ChainPosition;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::chain::Broadcasted;
use crate::error::WalletError;
use crate::wallet::{create_tx_error, parse_address, sign, Inner, XovWallet};

/// Size of a typical payout (one P2WPKH input, recipient and change outputs), in vbytes: used only to name a
/// fee in [`WalletError::BelowDust`] when the wallet could not even build a probe transaction.
const TYPICAL_PAYOUT_VB: u64 = 141;
/// Rebuilds allowed for the fee to settle (the fee depends on the transaction's shape, which can change
/// once when a change output appears or is dropped).
const FEE_SETTLE_ATTEMPTS: usize = 3;

/// A transaction built and signed but neither broadcast nor applied to the wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTx {
    pub txid: String,
    /// The consensus-encoded transaction, hex.
    pub raw_hex: String,
    pub fee_sat: u64,
    /// What the recipient's output receives: the payout's value less `fee_sat`.
    pub sent_sat: u64,
}

/// Where a transaction stands as the wallet sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TxStatus {
    /// In a block of the wallet's best chain (depth ≥ 1).
    Confirmed { height: u32 },
    /// Broadcast or seen in the mempool, not in a block.
    Unconfirmed,
    /// Not a transaction of this wallet's (never broadcast, evicted, replaced, or not a valid txid).
    Unknown,
}

/// Checks that `address` is a valid address for `network`.
pub fn check_address(
    address: &str,
    network: bdk_wallet::bitcoin::Network,
) -> Result<(), WalletError> {
    parse_address(address, network).map(|_| ())
}

/// One build: the PSBT's fee, and the transaction signed.
struct Built {
    fee_sat: u64,
    inputs: Vec<OutPoint>,
    psbt: bdk_wallet::bitcoin::Psbt,
}

fn build(
    g: &mut Inner,
    script: &bdk_wallet::bitcoin::ScriptBuf,
    amount_sat: u64,
    rate: FeeRate,
    inputs: Option<&[OutPoint]>,
    reserved: &[OutPoint],
) -> Result<Built, WalletError> {
    let mut b = g.wallet.build_tx();
    b.add_recipient(script.clone(), Amount::from_sat(amount_sat))
        .fee_rate(rate);
    match inputs {
        Some(ins) => {
            b.add_utxos(ins)
                .map_err(|e| WalletError::Build(e.to_string()))?
                .manually_selected_only();
        }
        None => {
            b.unspendable(reserved.to_vec());
        }
    }
    let psbt = b.finish().map_err(create_tx_error)?;
    let fee_sat = psbt
        .fee()
        .map_err(|e| WalletError::Build(e.to_string()))?
        .to_sat();
    let inputs = psbt
        .unsigned_tx
        .input
        .iter()
        .map(|i| i.previous_output)
        .collect();
    Ok(Built {
        fee_sat,
        inputs,
        psbt,
    })
}

impl XovWallet {
    /// Builds and signs a payment of `value_sat` to `address` with the fee taken out of it (the recipient gets
    /// value_sat - fee). Fee rate: `fee_sat_per_vb`, else the wallet's fee policy.
    /// Nothing is broadcast or applied: the caller persists the result, then calls `broadcast_signed`.
    /// Errors: WalletError::BelowDust { value_sat, fee_sat } when value_sat - fee would be below the dust limit
    /// of the script (typed, so the caller can write it off), InsufficientFunds, BadAddress, Build, Sign.
    pub async fn build_payout(
        &self,
        address: &str,
        value_sat: u64,
        fee_sat_per_vb: Option<u64>,
    ) -> Result<SignedTx, WalletError> {
        let to = parse_address(address, self.network)?;
        let per_vb = match fee_sat_per_vb {
            Some(f) => f,
            None => self.fee_rate().await,
        };
        let rate = FeeRate::from_sat_per_vb(per_vb)
            .ok_or_else(|| WalletError::Build("fee rate out of range".into()))?;
        let script = to.script_pubkey();
        let dust = script.minimal_non_dust().to_sat();
        let below_dust = |fee_sat: u64| WalletError::BelowDust { value_sat, fee_sat };

        let mut g = self.lock();
        let reserved: Vec<OutPoint> = g.reserved.values().flatten().copied().collect();
        // Probe with the full value (any coin selection) to learn the inputs and the fee at this rate.
        let probe = match build(&mut g, &script, value_sat.max(dust), rate, None, &reserved) {
            Ok(p) => p,
            Err(_) if value_sat < dust => {
                return Err(below_dust(per_vb.saturating_mul(TYPICAL_PAYOUT_VB)))
            }
            // The wallet may hold no more than the value itself (a refund out of a lease's only payment): the
            // fee comes out of the value, so probe for the value less a generous fee to pick the coins.
            Err(WalletError::InsufficientFunds(_)) => {
                let margin = per_vb.saturating_mul(TYPICAL_PAYOUT_VB).saturating_mul(2);
                let less = value_sat.saturating_sub(margin);
                if less < dust {
                    return Err(below_dust(margin / 2));
                }
                build(&mut g, &script, less, rate, None, &reserved)?
            }
            Err(e) => return Err(e),
        };
        let inputs = probe.inputs;
        let mut fee_sat = probe.fee_sat;
        // Rebuild on the same inputs paying value - fee, until the fee the rebuild needs is the one taken
        // out (the shape, and so the fee, can change once when a change output appears or is dropped).
        let mut settled = None;
        let mut highest = fee_sat;
        for _ in 0..FEE_SETTLE_ATTEMPTS {
            let pay = value_sat
                .checked_sub(fee_sat)
                .filter(|p| *p >= dust)
                .ok_or_else(|| below_dust(fee_sat))?;
            let b = build(&mut g, &script, pay, rate, Some(&inputs), &reserved)?;
            highest = highest.max(b.fee_sat);
            if b.fee_sat == fee_sat {
                settled = Some((b, pay));
                break;
            }
            fee_sat = b.fee_sat;
        }
        let (built, pay) = match settled {
            Some(done) => done,
            // The shape keeps flipping (a change output just above or below the dust limit): take the highest
            // fee seen out of the value; the network gets what this build needs, any rest comes back as change.
            None => {
                let pay = value_sat
                    .checked_sub(highest)
                    .filter(|p| *p >= dust)
                    .ok_or_else(|| below_dust(highest))?;
                (
                    build(&mut g, &script, pay, rate, Some(&inputs), &reserved)?,
                    pay,
                )
            }
        };
        // What the refund gives up for the fee (the network may get a little less; the rest is change).
        let fee_sat = value_sat - pay;
        let tx = sign(&mut g, built.psbt)?;
        if !tx
            .output
            .iter()
            .any(|o| o.script_pubkey == script && o.value.to_sat() == pay)
        {
            return Err(WalletError::Build(
                "the recipient's output went missing".into(),
            ));
        }
        // The change address it reveals must stay revealed.
        g.persist()?;
        let txid = tx.compute_txid();
        g.reserved.insert(txid, built.inputs);
        info!(%txid, value_sat, fee_sat, "payout built");
        Ok(SignedTx {
            txid: txid.to_string(),
            raw_hex: serialize_hex(&tx),
            fee_sat,
            sent_sat: pay,
        })
    }

    /// Broadcasts a transaction from `build_payout` and applies it to the wallet as unconfirmed (persisted).
    /// Idempotent: broadcasting one the chain source already has (in the mempool or a block) is Ok.
    pub async fn broadcast_signed(&self, tx: &SignedTx) -> Result<String, WalletError> {
        let decoded: Transaction =
            deserialize_hex(&tx.raw_hex).map_err(|e| WalletError::BadSignedTx(e.to_string()))?;
        let txid = decoded.compute_txid();
        if txid.to_string() != tx.txid {
            return Err(WalletError::BadSignedTx(format!(
                "raw_hex is transaction {txid}, not {}",
                tx.txid
            )));
        }
        let before = self.tx_status(&tx.txid);
        if let TxStatus::Confirmed { .. } = before {
            // In a block already: bitcoind would not take it again once its outputs are spent.
            self.lock().reserved.remove(&txid);
            return Ok(tx.txid.clone());
        }
        match self.chain.broadcast(decoded.clone()).await? {
            Broadcasted::Accepted | Broadcasted::AlreadyKnown => {}
            // A peer that has it never asks for it; the wallet holds it unconfirmed only after an earlier
            // broadcast that a peer did ask for (or after seeing it in bitcoind's mempool).
            Broadcasted::NotRequested if before == TxStatus::Unconfirmed => {}
            Broadcasted::NotRequested => {
                return Err(WalletError::Broadcast(
                    "no peer asked for the transaction in time".into(),
                ))
            }
        }
        let out = self.apply_broadcast(decoded)?;
        self.lock().reserved.remove(&txid);
        info!(%txid, "payout broadcast");
        Ok(out)
    }

    /// Whether the wallet sees this txid confirmed (depth ≥ 1), unconfirmed, or not at all.
    /// The transaction that replaced `txid`, if `txid` is no longer in the wallet's view (replaced by a fee
    /// bump, here or before a restart) and a transaction the wallet holds spends one of its inputs. Lets a
    /// caller that recorded the first txid follow the payment to the one that confirms.
    pub fn replacement_of(&self, txid: &str) -> Option<String> {
        let txid = Txid::from_str(txid.trim()).ok()?;
        let g = self.lock();
        if g.wallet.get_tx(txid).is_some() {
            return None;
        }
        let graph = g.wallet.tx_graph();
        let old = graph.get_tx(txid)?;
        old.input
            .iter()
            .flat_map(|i| graph.outspends(i.previous_output).iter())
            .filter(|t| **t != txid)
            .find(|t| g.wallet.get_tx(**t).is_some())
            .map(|t| t.to_string())
    }

    pub fn tx_status(&self, txid: &str) -> TxStatus {
        let Ok(txid) = Txid::from_str(txid.trim()) else {
            return TxStatus::Unknown;
        };
        let g = self.lock();
        match g.wallet.get_tx(txid).map(|t| t.chain_position) {
            Some(ChainPosition::Confirmed { anchor, .. }) => TxStatus::Confirmed {
                height: anchor.block_id.height,
            },
            Some(ChainPosition::Unconfirmed { .. }) => TxStatus::Unconfirmed,
            None => TxStatus::Unknown,
        }
    }
}
