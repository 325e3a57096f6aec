//! Checking a bond claim against the chain, through the wallet's chain source.
//!
//! - bitcoind RPC: `gettxout` (mempool included) finds an unspent output; when it finds none,
//!   `getrawtransaction` (needs `-txindex`, or the claim's height to look in that block) tells a spent bond
//!   from one that never existed, and `gettxspendingprevout` names a mempool spender.
//! - Compact block filters: a short-lived light client of its own starts at the block before the claim's
//!   height and downloads the filters from there to the tip. BIP158 filters hold the scripts of created
//!   outputs and of spent prevouts, so the bond script matches the funding block and any block spending
//!   it; those blocks are fetched and read. The funding block is fetched whatever its filter says, so a
//!   claim of the wrong script is told apart from a missing output. Mempool spends are not seen.
//!   The scan is bounded: a claim confirmed more than `max_scan_blocks` below the wallet's tip is refused
//!   ([`BondError::TooDeep`]) before the light client starts, so a proof claiming a confirmation near
//!   genesis cannot make this node download the whole chain's filters.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bdk_bitcoind_rpc::bitcoincore_rpc::{Client, RpcApi};
use bdk_kyoto::bip157::{self, ChainState, Event, HashCheckpoint, TrustedPeer};
use bdk_wallet::bitcoin::{BlockHash, Network, ScriptBuf, Transaction, Txid};
use bdk_wallet::chain::CheckPoint;
use serde_json::{json, Value};
use tracing::debug;

use crate::bond::{
    expected_script_pubkey, locktime_passed, match_output, BondClaim, BondError, BondStatus,
};
use crate::chain::ChainHandle;

/// How long the bond-checking light client may go without news from its peers.
const SCAN_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

impl ChainHandle {
    /// Checks `claim` against the chain; `wallet_tip` is the wallet's chain view (the light client starts
    /// from one of its blocks).
    pub(crate) async fn check_bond(
        &self,
        claim: &BondClaim,
        wallet_tip: CheckPoint,
        max_scan_blocks: u32,
    ) -> Result<BondStatus, BondError> {
        let expected = expected_script_pubkey(claim)?;
        match self {
            ChainHandle::Rpc { client, .. } => {
                let (c, claim) = (client.clone(), claim.clone());
                tokio::task::spawn_blocking(move || rpc_check(&c, &claim, &expected))
                    .await
                    .map_err(|e| BondError::Chain(e.to_string()))?
            }
            ChainHandle::Kyoto { network, peers, .. } => {
                filter_check(
                    *network,
                    peers,
                    wallet_tip,
                    claim,
                    &expected,
                    max_scan_blocks,
                )
                .await
            }
        }
    }
}

fn rpc_err(e: bdk_bitcoind_rpc::bitcoincore_rpc::Error) -> BondError {
    BondError::Chain(format!("bitcoind RPC: {e}"))
}

fn sats(v: &Value) -> Option<u64> {
    v.as_f64().map(|btc| (btc * 100_000_000.0).round() as u64)
}

fn rpc_check(
    c: &Arc<Client>,
    claim: &BondClaim,
    expected: &ScriptBuf,
) -> Result<BondStatus, BondError> {
    let op = claim.outpoint;
    let info: Value = c.call("getblockchaininfo", &[]).map_err(rpc_err)?;
    let mtp = info["mediantime"].as_u64().unwrap_or(0);
    let out: Value = c
        .call(
            "gettxout",
            &[json!(op.txid.to_string()), json!(op.vout), json!(true)],
        )
        .map_err(rpc_err)?;
    if !out.is_null() {
        let spk = out["scriptPubKey"]["hex"]
            .as_str()
            .and_then(|h| hex::decode(h).ok())
            .ok_or_else(|| BondError::Chain("gettxout gave no script".into()))?;
        let amount =
            sats(&out["value"]).ok_or_else(|| BondError::Chain("gettxout gave no value".into()))?;
        match_output(claim, expected, &spk, amount)?;
        let confirmations = out["confirmations"].as_u64().unwrap_or(0) as u32;
        // Confirmations count up to gettxout's best block: take its height for one consistent view.
        let best: Value = c
            .call("getblockheader", &[out["bestblock"].clone(), json!(true)])
            .map_err(rpc_err)?;
        let tip = best["height"]
            .as_u64()
            .or_else(|| info["blocks"].as_u64())
            .unwrap_or(0) as u32;
        return Ok(BondStatus {
            amount_sat: amount,
            height: (confirmations > 0).then(|| tip + 1 - confirmations),
            confirmations,
            tip_height: tip,
            locktime_passed: locktime_passed(claim.locktime, tip, mtp),
        });
    }
    // Not in the UTXO set, nor created in the mempool: spent, or never there.
    let Some(tx) = find_tx(c, op.txid, claim.height_hint) else {
        return Err(BondError::NotFound {
            outpoint: op,
            detail: format!(
                "no such unspent output, and bitcoind knows no transaction {}{}",
                op.txid,
                if claim.height_hint.is_some() {
                    " in the claimed block"
                } else {
                    " (without -txindex it only finds spent ones given the bond's height)"
                }
            ),
        });
    };
    let Some(o) = tx.output.get(op.vout as usize) else {
        return Err(BondError::NotFound {
            outpoint: op,
            detail: format!("the transaction has {} outputs", tx.output.len()),
        });
    };
    match_output(
        claim,
        expected,
        o.script_pubkey.as_bytes(),
        o.value.to_sat(),
    )?;
    Err(BondError::Spent {
        outpoint: op,
        spending_txid: mempool_spender(c, op),
    })
}

/// The transaction `txid`: from the transaction index (or mempool), else from the block at `height`.
fn find_tx(c: &Client, txid: Txid, height: Option<u32>) -> Option<Transaction> {
    if let Ok(tx) = c.get_raw_transaction(&txid, None) {
        return Some(tx);
    }
    let hash = c.get_block_hash(u64::from(height?)).ok()?;
    c.get_raw_transaction(&txid, Some(&hash)).ok()
}

fn mempool_spender(c: &Client, op: bdk_wallet::bitcoin::OutPoint) -> Option<Txid> {
    let v: Value = c
        .call(
            "gettxspendingprevout",
            &[json!([{"txid": op.txid.to_string(), "vout": op.vout}])],
        )
        .ok()?;
    v.get(0)?.get("spendingtxid")?.as_str()?.parse().ok()
}

/// Whether checking `claim` from its claimed height up to `tip` stays within `max_scan_blocks` filters.
fn scan_depth_allowed(claim: &BondClaim, tip: u32, max_scan_blocks: u32) -> Result<(), BondError> {
    let Some(height) = claim.height_hint else {
        return Ok(());
    };
    let depth = tip.saturating_sub(height);
    if depth > max_scan_blocks {
        return Err(BondError::TooDeep {
            outpoint: claim.outpoint,
            height,
            depth,
            max_blocks: max_scan_blocks,
        });
    }
    Ok(())
}

async fn filter_check(
    network: Network,
    peers: &[SocketAddr],
    wallet_tip: CheckPoint,
    claim: &BondClaim,
    expected: &ScriptBuf,
    max_scan_blocks: u32,
) -> Result<BondStatus, BondError> {
    let op = claim.outpoint;
    let h = claim.height_hint.ok_or_else(|| {
        BondError::Unsupported(
            "the light client checks a bond from the height of the block that confirmed it, and the \
             claim names none; give the height, or follow the chain with bitcoind RPC (chain = \"rpc\")"
                .into(),
        )
    })?;
    scan_depth_allowed(claim, wallet_tip.height(), max_scan_blocks)?;
    let start = wallet_tip
        .floor_at(h.saturating_sub(1))
        .filter(|_| h > 0)
        .ok_or_else(|| BondError::NotFound {
            outpoint: op,
            detail: format!("no bond can be confirmed at height {h}"),
        })?;
    let whitelist: Vec<TrustedPeer> = peers
        .iter()
        .flat_map(|p| std::iter::repeat_n(TrustedPeer::from_socket_addr(*p), 8))
        .collect();
    let (node, client) = bip157::Builder::new(network)
        .add_peers(whitelist)
        .whitelist_only()
        .required_peers(1)
        .fetch_witness_data()
        .chain_state(ChainState::Checkpoint(HashCheckpoint::new(
            start.height(),
            start.hash(),
        )))
        .build();
    let bip157::Client {
        requester,
        mut info_rx,
        mut warn_rx,
        mut event_rx,
    } = client;
    tokio::spawn(async move {
        while let Some(i) = info_rx.recv().await {
            debug!(info = %i, "bond check light client");
        }
    });
    tokio::spawn(async move {
        while let Some(w) = warn_rx.recv().await {
            debug!(warning = %w, "bond check light client");
        }
    });
    let node_task = tokio::spawn(async move { node.run().await });
    debug!(outpoint = %op, from = start.height(), "checking a bond against block filters");

    let result = async {
        let mut funding_block: Option<BlockHash> = None;
        let mut hits: Vec<BlockHash> = Vec::new();
        let (tip, mtp) = loop {
            let event = tokio::time::timeout(SCAN_IDLE_TIMEOUT, event_rx.recv())
                .await
                .map_err(|_| {
                    BondError::Chain(format!(
                        "no block filters from the peers in {} s",
                        SCAN_IDLE_TIMEOUT.as_secs()
                    ))
                })?
                .ok_or_else(|| BondError::Chain("the light client stopped".into()))?;
            match event {
                Event::IndexedFilter(f) => {
                    if f.height() == h {
                        funding_block = Some(f.block_hash());
                    }
                    if f.height() >= h && f.contains_any(std::iter::once(expected)) {
                        hits.push(f.block_hash());
                    }
                }
                Event::FiltersSynced(u) => {
                    let mut times: Vec<u64> = u
                        .recent_history()
                        .values()
                        .map(|hd| u64::from(hd.time))
                        .collect();
                    times.sort_unstable();
                    break (
                        u.tip().height,
                        times.get(times.len() / 2).copied().unwrap_or(0),
                    );
                }
                Event::ChainUpdate(_) => {}
            }
        };
        let fetch = |hash: BlockHash| {
            let r = requester.clone();
            async move {
                r.get_block(hash)
                    .await
                    .map(|b| b.block)
                    .map_err(|e| BondError::Chain(format!("cannot fetch block {hash}: {e}")))
            }
        };
        let Some(fh) = funding_block else {
            return Err(BondError::NotFound {
                outpoint: op,
                detail: format!("the chain's tip is {tip}, below the claimed height {h}"),
            });
        };
        let block = fetch(fh).await?;
        let Some(tx) = block.txdata.iter().find(|t| t.compute_txid() == op.txid) else {
            return Err(BondError::NotFound {
                outpoint: op,
                detail: format!("transaction {} is not in block {h} ({fh})", op.txid),
            });
        };
        let Some(o) = tx.output.get(op.vout as usize) else {
            return Err(BondError::NotFound {
                outpoint: op,
                detail: format!("the transaction has {} outputs", tx.output.len()),
            });
        };
        let amount = o.value.to_sat();
        match_output(claim, expected, o.script_pubkey.as_bytes(), amount)?;
        for hash in hits {
            let b = if hash == fh {
                block.clone()
            } else {
                fetch(hash).await?
            };
            if let Some(spender) = b
                .txdata
                .iter()
                .find(|t| t.input.iter().any(|i| i.previous_output == op))
            {
                return Err(BondError::Spent {
                    outpoint: op,
                    spending_txid: Some(spender.compute_txid()),
                });
            }
        }
        Ok(BondStatus {
            amount_sat: amount,
            height: Some(h),
            confirmations: tip.saturating_sub(h) + 1,
            tip_height: tip,
            locktime_passed: locktime_passed(claim.locktime, tip, mtp),
        })
    }
    .await;
    let _ = requester.shutdown();
    let abort = node_task.abort_handle();
    if tokio::time::timeout(Duration::from_secs(5), node_task)
        .await
        .is_err()
    {
        debug!("bond check light client did not stop in time; aborting it");
        abort.abort();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use bdk_wallet::bitcoin::absolute::LockTime;
    use bdk_wallet::bitcoin::hashes::Hash;
    use bdk_wallet::bitcoin::OutPoint;
    use bdk_wallet::chain::BlockId;

    fn claim(height: u32) -> BondClaim {
        BondClaim {
            outpoint: OutPoint {
                txid: Txid::all_zeros(),
                vout: 0,
            },
            pubkey: [2; 33],
            locktime: LockTime::from_height(1_000_000).unwrap(),
            amount_sat: 100_000,
            height_hint: Some(height),
        }
    }

    /// Issue 15, attack 4: a proof claiming a confirmation near genesis must not make a light client scan
    /// the whole chain's filters. Refused before any peer is contacted (there are none here).
    #[tokio::test]
    async fn a_claim_deeper_than_the_scan_bound_is_refused_before_any_scan() {
        let tip = CheckPoint::new(BlockId {
            height: 900_000,
            hash: BlockHash::all_zeros(),
        });
        let expected = ScriptBuf::new();
        let err = filter_check(Network::Regtest, &[], tip, &claim(1), &expected, 1000)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                BondError::TooDeep {
                    height: 1,
                    depth: 899_999,
                    max_blocks: 1000,
                    ..
                }
            ),
            "{err}"
        );
        struct Case {
            name: &'static str,
            height: u32,
            ok: bool,
        }
        for c in [
            Case {
                name: "at the bound",
                height: 899_000,
                ok: true,
            },
            Case {
                name: "one block deeper",
                height: 898_999,
                ok: false,
            },
            Case {
                name: "above the tip (the wallet lags)",
                height: 900_005,
                ok: true,
            },
        ] {
            assert_eq!(
                scan_depth_allowed(&claim(c.height), 900_000, 1000).is_ok(),
                c.ok,
                "{}",
                c.name
            );
        }
    }
}
