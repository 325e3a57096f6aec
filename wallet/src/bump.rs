//! Replace-by-fee bumping of this wallet's own unconfirmed payments (BIP125).
//!
//! Invariants:
//! - Only a transaction the wallet holds as unconfirmed and canonical, that signals RBF, whose every input is
//!   the wallet's own, and that no other unconfirmed wallet transaction spends from, is replaced. Anything
//!   else is a typed error and nothing is built, persisted or broadcast.
//! - The replacement pays every output of the original that is not the wallet's change to the same script
//!   with the same value; only the change shrinks (or confirmed coins of the wallet's are added) to pay the
//!   higher fee. Coins reserved by payouts built but not yet broadcast are never added.
//! - Its fee rate is above the original's (an asked rate at or below the original's, rounded up to whole
//!   sat/vB, is [`WalletError::FeeTooLow`]) and its absolute fee covers the original's plus the incremental
//!   relay fee for its own size (BIP125 rules 3, 4 and 6), topped up when rounding falls short.
//! - What building reveals (a change address) is persisted before the broadcast; once the chain source has
//!   the replacement, the original is recorded as evicted and the replacement as unconfirmed with a later
//!   last-seen than the original, so canonicalisation (latest last-seen wins, evicted ones drop out) shows
//!   the replacement in balance and history and not the original. That is persisted and invoices are
//!   re-assessed before the result is returned.

use std::str::FromStr;

use bdk_wallet::bitcoin::{Amount, FeeRate, Transaction, Txid};
use bdk_wallet::chain::ChainPosition;
use bdk_wallet::error::{BuildFeeBumpError, CreateTxError};
use bdk_wallet::KeychainKind;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::chain::Broadcasted;
use crate::error::WalletError;
use crate::wallet::{create_tx_error, sign, unix_now, Inner, XovWallet, FALLBACK_FEE_SAT_PER_VB};

/// Bitcoin Core's default `-incrementalrelayfee` (BIP125 rule 4), in sat/vB.
const INCREMENTAL_RELAY_SAT_PER_VB: u64 = 1;
/// Builds allowed for the fee to cover BIP125 rule 4 (the first at the rate, then topped up by amount).
const BUMP_ATTEMPTS: usize = 3;

/// A fee bump done: the replaced transaction, its replacement, and what each pays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bumped {
    pub old_txid: String,
    pub new_txid: String,
    pub old_fee_sat: u64,
    pub new_fee_sat: u64,
    /// The fee rate the replacement was built at.
    pub fee_sat_per_vb: u64,
}

/// What replacing a transaction has to beat.
struct Original {
    txid: Txid,
    tx: Transaction,
    fee_sat: u64,
    /// The original's fee rate the way BDK counts it (fee over weight), rounded up to whole sat/vB.
    sat_per_vb_ceil: u64,
}

/// Checks that `txid` is a live unconfirmed transaction of ours that may be replaced.
fn original(g: &Inner, txid: Txid) -> Result<Original, WalletError> {
    let not_replaceable = |reason: &str| WalletError::NotReplaceable {
        txid: txid.to_string(),
        reason: reason.to_string(),
    };
    let Some(canon) = g.wallet.get_tx(txid) else {
        return Err(if g.wallet.tx_graph().get_tx(txid).is_some() {
            not_replaceable("it was replaced or dropped from the mempool already")
        } else {
            WalletError::NoSuchTx(txid.to_string())
        });
    };
    if let ChainPosition::Confirmed { anchor, .. } = canon.chain_position {
        return Err(WalletError::AlreadyConfirmed {
            txid: txid.to_string(),
            height: anchor.block_id.height,
        });
    }
    let tx = canon.tx_node.tx.as_ref().clone();
    let graph = g.wallet.tx_graph();
    let all_ours = tx.input.iter().all(|i| {
        graph
            .get_txout(i.previous_output)
            .is_some_and(|o| g.wallet.is_mine(o.script_pubkey.clone()))
    });
    if !all_ours {
        return Err(not_replaceable(
            "not every input is this wallet's (not a payment this wallet sent)",
        ));
    }
    if !tx.is_explicitly_rbf() {
        return Err(not_replaceable("it does not signal replace-by-fee"));
    }
    let children: Vec<String> = (0..tx.output.len() as u32)
        .flat_map(|vout| graph.outspends(bdk_wallet::bitcoin::OutPoint { txid, vout }))
        .filter(|child| g.wallet.get_tx(**child).is_some())
        .map(|child| child.to_string())
        .collect();
    if !children.is_empty() {
        return Err(not_replaceable(&format!(
            "unconfirmed transactions spend from it ({})",
            children.join(", ")
        )));
    }
    let fee_sat = g
        .wallet
        .calculate_fee(&tx)
        .map_err(|e| not_replaceable(&format!("its fee is unknown: {e}")))?
        .to_sat();
    let weight = tx.weight().to_wu().max(1);
    Ok(Original {
        txid,
        sat_per_vb_ceil: (fee_sat * 4).div_ceil(weight),
        tx,
        fee_sat,
    })
}

/// BDK's refusals, typed like [`original`]'s (which normally catches them first).
fn fee_bump_error(g: &Inner, e: BuildFeeBumpError) -> WalletError {
    match e {
        BuildFeeBumpError::TransactionNotFound(t) => WalletError::NoSuchTx(t.to_string()),
        BuildFeeBumpError::TransactionConfirmed(t) => match original(g, t) {
            Err(e @ WalletError::AlreadyConfirmed { .. }) => e,
            _ => WalletError::Build(format!("transaction {t} is confirmed")),
        },
        BuildFeeBumpError::IrreplaceableTransaction(t) => WalletError::NotReplaceable {
            txid: t.to_string(),
            reason: "it does not signal replace-by-fee".into(),
        },
        other => WalletError::Build(other.to_string()),
    }
}

enum Fee {
    Rate(FeeRate),
    Absolute(Amount),
}

/// Builds and signs the replacement paying `fee`; returns it with its fee.
fn build_replacement(
    g: &mut Inner,
    old: &Original,
    fee: Fee,
    asked_sat_per_vb: u64,
) -> Result<(Transaction, u64), WalletError> {
    let reserved: Vec<_> = g.reserved.values().flatten().copied().collect();
    let mut b = match g.wallet.build_fee_bump(old.txid) {
        Ok(b) => b,
        Err(e) => return Err(fee_bump_error(g, e)),
    };
    match fee {
        Fee::Rate(r) => b.fee_rate(r),
        Fee::Absolute(a) => b.fee_absolute(a),
    };
    b.unspendable(reserved);
    let psbt = b.finish().map_err(|e| match e {
        CreateTxError::FeeRateTooLow { .. } | CreateTxError::FeeTooLow { .. } => {
            WalletError::FeeTooLow {
                old_sat_per_vb: old.sat_per_vb_ceil,
                asked_sat_per_vb,
            }
        }
        other => create_tx_error(other),
    })?;
    let fee_sat = psbt
        .fee()
        .map_err(|e| WalletError::Build(e.to_string()))?
        .to_sat();
    Ok((sign(g, psbt)?, fee_sat))
}

impl XovWallet {
    /// Replaces an unconfirmed transaction this wallet sent (RBF; our sends already signal it) by one paying
    /// the same recipients at `fee_sat_per_vb` (default: the chain's estimate, and at least the old rate + 1
    /// sat/vB plus what BIP125 rule 4 requires), broadcasts it and records it. Returns the new txid and fee.
    ///
    /// Errors: [`WalletError::NoSuchTx`] (not a transaction of this wallet's, or not a txid),
    /// [`WalletError::AlreadyConfirmed`], [`WalletError::FeeTooLow`] (asked rate not above the old one),
    /// [`WalletError::NotReplaceable`] (not ours to replace: foreign inputs, no RBF signal, unconfirmed
    /// children, or replaced already), InsufficientFunds, Build, Sign, Broadcast, Chain.
    pub async fn bump_fee(
        &self,
        txid: &str,
        fee_sat_per_vb: Option<u64>,
    ) -> Result<Bumped, WalletError> {
        let old_txid =
            Txid::from_str(txid.trim()).map_err(|_| WalletError::NoSuchTx(txid.to_string()))?;
        // Check before asking the chain source for an estimate; checked again below under the same lock
        // as the build, since the chain may move in between.
        original(&self.lock(), old_txid)?;
        let estimate = match fee_sat_per_vb {
            Some(_) => None,
            None => Some(self.fee_rate().await),
        };
        let (tx, old, new_fee_sat, rate) = {
            let mut g = self.lock();
            let old = original(&g, old_txid)?;
            let floor = old.sat_per_vb_ceil + 1;
            let rate = match fee_sat_per_vb {
                Some(asked) if asked < floor => {
                    return Err(WalletError::FeeTooLow {
                        old_sat_per_vb: old.sat_per_vb_ceil,
                        asked_sat_per_vb: asked,
                    })
                }
                Some(asked) => asked,
                None => estimate.unwrap_or(FALLBACK_FEE_SAT_PER_VB).max(floor),
            };
            let fee_rate = FeeRate::from_sat_per_vb(rate)
                .ok_or_else(|| WalletError::Build("fee rate out of range".into()))?;
            let mut fee = Fee::Rate(fee_rate);
            let mut built = None;
            for _ in 0..BUMP_ATTEMPTS {
                let (tx, fee_sat) = build_replacement(&mut g, &old, fee, rate)?;
                // Rules 3 and 4: the original's fee plus the incremental relay fee for the replacement.
                let required = old.fee_sat + INCREMENTAL_RELAY_SAT_PER_VB * tx.vsize() as u64;
                if fee_sat >= required {
                    built = Some((tx, fee_sat));
                    break;
                }
                fee = Fee::Absolute(Amount::from_sat(required));
            }
            let (tx, new_fee_sat) = built.ok_or_else(|| {
                WalletError::Build(format!(
                    "the replacement's fee did not cover BIP125 rule 4 in {BUMP_ATTEMPTS} builds"
                ))
            })?;
            check_recipients(&g, &old, &tx)?;
            // The change address the build revealed must stay revealed.
            g.persist()?;
            (tx, old, new_fee_sat, rate)
        };
        let new_txid = tx.compute_txid();
        match self.chain.broadcast(tx.clone()).await? {
            Broadcasted::Accepted | Broadcasted::AlreadyKnown => {}
            Broadcasted::NotRequested => {
                return Err(WalletError::Broadcast(
                    "no peer took the replacement in time".into(),
                ))
            }
        }
        {
            let mut g = self.lock();
            let now = unix_now();
            let old_seen = g
                .wallet
                .tx_graph()
                .get_tx_node(old.txid)
                .and_then(|n| n.last_seen)
                .unwrap_or(0);
            // Evict first: BDK only records evictions of transactions that are canonical at the time.
            g.wallet.apply_evicted_txs([(old.txid, now.max(old_seen))]);
            g.wallet
                .apply_unconfirmed_txs([(tx, now.max(old_seen + 1))]);
            g.persist()?;
            g.refresh()?;
        }
        info!(old = %old.txid, new = %new_txid, old_fee_sat = old.fee_sat, new_fee_sat, rate, "fee bumped");
        Ok(Bumped {
            old_txid: old.txid.to_string(),
            new_txid: new_txid.to_string(),
            old_fee_sat: old.fee_sat,
            new_fee_sat,
            fee_sat_per_vb: rate,
        })
    }
}

/// Every output of the original that is not the wallet's change is in the replacement, unchanged.
fn check_recipients(g: &Inner, old: &Original, new: &Transaction) -> Result<(), WalletError> {
    let change = |o: &bdk_wallet::bitcoin::TxOut| {
        matches!(
            g.wallet.derivation_of_spk(o.script_pubkey.clone()),
            Some((KeychainKind::Internal, _))
        )
    };
    let mut left: Vec<_> = new.output.iter().collect();
    for o in old.tx.output.iter().filter(|o| !change(o)) {
        match left.iter().position(|n| *n == o) {
            Some(i) => {
                left.swap_remove(i);
            }
            None => {
                return Err(WalletError::Build(format!(
                    "the replacement does not pay {} sat to {} as the original did",
                    o.value.to_sat(),
                    o.script_pubkey
                )))
            }
        }
    }
    Ok(())
}
