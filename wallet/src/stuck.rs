//! Automatic fee bumping of this wallet's own payments that stay unconfirmed ([`XovWallet::bump_stuck`]).
//!
//! Invariants:
//! - Tracking is in memory only: `Inner::unconfirmed_since` maps each canonical unconfirmed transaction the
//!   wallet spent coins in to the tip height when this process first saw it so (at broadcast, since the
//!   broadcast re-assesses, or at the first chain update or `bump_stuck` after a restart) and the number of
//!   times the tip rose since. Every re-assessment adds newcomers and drops what confirmed, was replaced or
//!   was evicted; a replacement is a new txid and so starts its own count at the tip it was made at.
//! - The count is of new *highest* tips the wallet saw after the transaction, not of the height difference:
//!   a light client whose view lagged when the transaction was sent, or that was rebuilt and catches up
//!   again, reports blocks mined before the transaction (CI caught payments bumped seconds after they were
//!   sent, both ways). The count starts above the highest tip this process has seen.
//!   So a transaction is bumped no earlier than `after_blocks` blocks after it was sent, later if updates
//!   bring several blocks at once.
//! - A transaction is due once the tip rose `after_blocks` (at least 1) times; an attempt to bump it,
//!   whatever the outcome, restarts its count. So at one tip height nothing is bumped twice, and a
//!   transaction is bumped at most once per `after_blocks` blocks.
//! - Only transactions whose every input is the wallet's and that signal RBF are bumped; ones spending a coin
//!   reserved by a payout built but not broadcast (or being that payout) are left alone, and ones BIP125
//!   forbids replacing ([`WalletError::NotReplaceable`]) are skipped with a debug log, not reported.
//! - Calls are serialised, and nothing here sends wallet events: the replacement goes through
//!   [`XovWallet::bump_fee`], which persists and re-assesses as any broadcast does.

use std::collections::BTreeSet;

use bdk_wallet::bitcoin::{Amount, OutPoint, Txid};
use tracing::{debug, warn};

use crate::bump::Bumped;
use crate::error::WalletError;
use crate::wallet::{Inner, XovWallet};

/// Where a tracked transaction's count stands: the highest tip seen, and how many times a new highest tip
/// was seen since it was first tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Waiting {
    high: u32,
    rises: u32,
}

impl Waiting {
    /// Starts counting above `high`: the highest tip this process has seen (not the tip now, which a light
    /// client restarting and catching up may have lowered for a while).
    pub(crate) fn at(high: u32) -> Self {
        Waiting { high, rises: 0 }
    }

    /// The tip is now `tip`: one more rise if it is above the highest seen (however much higher). A tip that
    /// goes down and comes back (a client rebuilt and catching up, a reorg) is no rise.
    fn observe(&mut self, tip: u32) {
        if tip > self.high {
            self.rises += 1;
            self.high = tip;
        }
    }
}

/// Whether a transaction whose tip rose `rises` times since it was sent is due for a bump.
fn is_due(rises: u32, after_blocks: u32) -> bool {
    rises >= after_blocks.max(1)
}

/// Brings `unconfirmed_since` up to date with the wallet's canonical view at its tip.
pub(crate) fn track(g: &mut Inner) {
    let tip = g.wallet.latest_checkpoint().height();
    let outgoing: BTreeSet<Txid> = g
        .wallet
        .transactions()
        .filter(|t| t.chain_position.is_unconfirmed())
        .filter(|t| g.wallet.sent_and_received(&t.tx_node.tx).0 > Amount::ZERO)
        .map(|t| t.tx_node.txid)
        .collect();
    g.unconfirmed_since.retain(|t, _| outgoing.contains(t));
    for w in g.unconfirmed_since.values_mut() {
        w.observe(tip);
    }
    let high = g.tip_high.max(tip);
    g.tip_high = high;
    for t in outgoing {
        g.unconfirmed_since.entry(t).or_insert(Waiting::at(high));
    }
}

/// Why a tracked transaction is not for `bump_stuck` to replace, if it is not.
fn not_ours_to_bump(g: &Inner, txid: Txid, reserved: &BTreeSet<OutPoint>) -> Option<&'static str> {
    let Some(t) = g.wallet.get_tx(txid) else {
        return Some("no longer in the wallet's view");
    };
    let tx = &t.tx_node.tx;
    let graph = g.wallet.tx_graph();
    if !tx.input.iter().all(|i| {
        graph
            .get_txout(i.previous_output)
            .is_some_and(|o| g.wallet.is_mine(o.script_pubkey.clone()))
    }) {
        return Some("not every input is this wallet's");
    }
    if !tx.is_explicitly_rbf() {
        return Some("it does not signal replace-by-fee");
    }
    if g.reserved.contains_key(&txid)
        || tx
            .input
            .iter()
            .any(|i| reserved.contains(&i.previous_output))
    {
        return Some("it spends coins reserved by a pending payout");
    }
    None
}

impl XovWallet {
    /// Bumps (RBF, via [`XovWallet::bump_fee`] with the chain's estimate) every unconfirmed transaction this
    /// wallet sent that has stayed unconfirmed for at least `after_blocks` new blocks since it was sent (or
    /// since this process first saw it unconfirmed, after a restart). Returns what it replaced, and the
    /// bumps that failed. Idempotent per block height: a transaction is bumped at most once per
    /// `after_blocks` blocks (0 counts as 1). Meant to be called on every [`crate::WalletEvent::TipChanged`].
    pub async fn bump_stuck(&self, after_blocks: u32) -> Vec<Result<Bumped, WalletError>> {
        let _one_at_a_time = self.bumping.lock().await;
        let due: Vec<Txid> = {
            let mut g = self.lock();
            track(&mut g);
            let tip = g.wallet.latest_checkpoint().height();
            let reserved: BTreeSet<OutPoint> = g.reserved.values().flatten().copied().collect();
            let due: Vec<Txid> = g
                .unconfirmed_since
                .iter()
                .filter(|(_, w)| is_due(w.rises, after_blocks))
                .map(|(txid, _)| *txid)
                .filter(|txid| match not_ours_to_bump(&g, *txid, &reserved) {
                    Some(why) => {
                        debug!(%txid, why, "unconfirmed, not bumping it");
                        false
                    }
                    None => true,
                })
                .collect();
            // An attempt restarts the count, whatever comes of it.
            let high = g.tip_high.max(tip);
            for txid in &due {
                g.unconfirmed_since.insert(*txid, Waiting::at(high));
            }
            due
        };
        let mut out = Vec::new();
        for txid in due {
            match self.bump_fee(&txid.to_string(), None).await {
                Ok(b) => {
                    let mut g = self.lock();
                    let tip = g.wallet.latest_checkpoint().height();
                    g.unconfirmed_since.remove(&txid);
                    if let Ok(new) = b.new_txid.parse::<Txid>() {
                        let high = g.tip_high.max(tip);
                        g.unconfirmed_since.insert(new, Waiting::at(high));
                    }
                    out.push(Ok(b));
                }
                Err(WalletError::NotReplaceable { txid, reason }) => {
                    debug!(%txid, %reason, "stuck, but BIP125 does not let it be replaced");
                }
                // Confirmed, or gone from the wallet's view, since it was picked: nothing to do.
                Err(WalletError::AlreadyConfirmed { .. } | WalletError::NoSuchTx(_)) => {}
                Err(e) => {
                    warn!(%txid, error = %e, "cannot bump a stuck transaction");
                    out.push(Err(e));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::{is_due, Waiting};

    #[test]
    fn due_after_n_tip_rises_and_never_at_the_same_height() {
        struct Case {
            name: &'static str,
            tips: &'static [u32],
            after: u32,
            due: bool,
        }
        let cases = [
            Case {
                name: "no new block",
                tips: &[100, 100, 100],
                after: 2,
                due: false,
            },
            Case {
                name: "one new block of two",
                tips: &[101],
                after: 2,
                due: false,
            },
            Case {
                name: "two new blocks",
                tips: &[101, 102],
                after: 2,
                due: true,
            },
            Case {
                name: "a lagging view catching up in one update is one rise, not ten",
                tips: &[110],
                after: 3,
                due: false,
            },
            Case {
                name: "three rises after the catch-up",
                tips: &[110, 111, 112],
                after: 3,
                due: true,
            },
            Case {
                name: "0 counts as 1",
                tips: &[100],
                after: 0,
                due: false,
            },
            Case {
                name: "0 counts as 1, one rise",
                tips: &[101],
                after: 0,
                due: true,
            },
            Case {
                name: "a reorg below the start is no rise",
                tips: &[98, 99],
                after: 2,
                due: false,
            },
            Case {
                name: "a rebuilt client going down and back up is no rise",
                tips: &[60, 100, 70, 100, 90, 100],
                after: 1,
                due: false,
            },
        ];
        for c in cases {
            let mut w = Waiting::at(100);
            for t in c.tips {
                w.observe(*t);
            }
            assert_eq!(is_due(w.rises, c.after), c.due, "{}", c.name);
        }
    }
}
