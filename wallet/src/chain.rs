//! Chain sources, behind one handle: compact block filters (BIP157/158 via bdk_kyoto, the default: no server
//! of one's own needed) and bitcoind RPC (bdk_bitcoind_rpc, for operators who run a node).
//!
//! Each runs as a task that applies chain data to the wallet, persists, and re-assesses invoices. The light
//! client sees transactions only once they are in a block; RPC also sees the mempool.
//!
//! Invariants: a broadcast of a transaction the source already has (mempool or chain) is not an error
//! ([`Broadcasted::AlreadyKnown`]); the decision rests on bitcoind's typed RPC error codes, and where the
//! code alone is ambiguous on the one message check in [`rpc_says_already_known`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bdk_bitcoind_rpc::bitcoincore_rpc::jsonrpc;
use bdk_bitcoind_rpc::bitcoincore_rpc::{Auth, Client, RpcApi};
use bdk_bitcoind_rpc::Emitter;
use bdk_wallet::bitcoin::{Network, Transaction};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};
use tracing::{debug, warn};

use crate::error::WalletError;
use crate::health::{ChainHealth, ChainState, ChainTuning};
use crate::light::LightHandle;
use crate::wallet::{Inner, BROADCAST_TIMEOUT};

/// Which chain source to follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChainSource {
    /// Light client: download compact block filters from these peers (BIP157/158).
    CompactFilters { peers: Vec<SocketAddr> },
    /// A bitcoind of one's own, over RPC, polled every `poll_ms`.
    BitcoindRpc {
        url: String,
        cookie_file: PathBuf,
        poll_ms: u64,
    },
}

impl ChainSource {
    pub fn name(&self) -> &'static str {
        match self {
            ChainSource::CompactFilters { .. } => "compact block filters",
            ChainSource::BitcoindRpc { .. } => "bitcoind RPC",
        }
    }
}

type Shared = Arc<Mutex<Inner>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) enum ChainHandle {
    Kyoto {
        light: LightHandle,
        /// Kept for the bond checker's own light client.
        network: Network,
        peers: Vec<SocketAddr>,
    },
    Rpc {
        client: Arc<Client>,
        stop: Arc<AtomicBool>,
        /// Taken by the first stop.
        thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
        health: Arc<watch::Sender<ChainHealth>>,
    },
}

pub(crate) async fn start(
    source: ChainSource,
    network: Network,
    inner: Shared,
    rebuild: Arc<Notify>,
    tuning: ChainTuning,
) -> Result<ChainHandle, WalletError> {
    match source {
        ChainSource::CompactFilters { peers } => {
            if peers.is_empty() {
                return Err(WalletError::Chain(
                    "compact block filters need at least one peer".into(),
                ));
            }
            let light = LightHandle::start(network, peers.clone(), inner, rebuild, tuning);
            Ok(ChainHandle::Kyoto {
                light,
                network,
                peers,
            })
        }
        ChainSource::BitcoindRpc {
            url,
            cookie_file,
            poll_ms,
        } => {
            let client = Arc::new(
                Client::new(&url, Auth::CookieFile(cookie_file.clone()))
                    .map_err(|e| WalletError::Chain(format!("bitcoind RPC at {url}: {e}")))?,
            );
            let c = client.clone();
            let info = tokio::task::spawn_blocking(move || c.get_blockchain_info())
                .await
                .map_err(|e| WalletError::Chain(e.to_string()))?
                .map_err(|e| WalletError::Chain(format!("bitcoind RPC at {url} does not answer: {e}; is bitcoind running, and is {} its cookie?", cookie_file.display())))?;
            if info.chain != network {
                return Err(WalletError::Chain(format!(
                    "bitcoind is on {}, the wallet on {network}",
                    info.chain
                )));
            }
            let stop = Arc::new(AtomicBool::new(false));
            let health = Arc::new(
                watch::channel(ChainHealth {
                    source: "bitcoind RPC".into(),
                    state: ChainState::Syncing,
                    peers: 1,
                    header_tip: Some(info.blocks as u32),
                    peer_tip: Some(info.blocks as u32),
                    wallet_tip: lock(&inner).wallet.latest_checkpoint().height(),
                    secs_since_progress: 0,
                    restarts: 0,
                    last_restart_reason: None,
                    last_warning: None,
                })
                .0,
            );
            let (c, s, h) = (client.clone(), stop.clone(), health.clone());
            let thread = std::thread::Builder::new()
                .name("xov-wallet-rpc".into())
                .spawn(move || run_rpc(c, inner, Duration::from_millis(poll_ms.max(10)), s, h))
                .map_err(|e| WalletError::Chain(e.to_string()))?;
            Ok(ChainHandle::Rpc {
                client,
                stop,
                thread: std::sync::Mutex::new(Some(thread)),
                health,
            })
        }
    }
}

/// What a broadcast came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Broadcasted {
    /// The chain source took the transaction (bitcoind accepted it, or a peer of the light client asked
    /// for it).
    Accepted,
    /// The chain source has it already, in its mempool or in a block.
    AlreadyKnown,
    /// Light client: no peer asked for the transaction in time. A peer that has the transaction already
    /// never asks for it, so this is also how an already-known transaction looks; the caller tells the two
    /// apart by what the wallet knows.
    NotRequested,
}

/// bitcoind's RPC_VERIFY_ERROR: the transaction was rejected (also for some duplicates).
const RPC_VERIFY_ERROR: i32 = -25;
/// bitcoind's RPC_VERIFY_REJECTED: the mempool rejected the transaction (also for some duplicates).
const RPC_VERIFY_REJECTED: i32 = -26;
/// bitcoind's RPC_VERIFY_ALREADY_IN_CHAIN (named RPC_VERIFY_ALREADY_IN_UTXO_SET in later versions).
const RPC_VERIFY_ALREADY_IN_CHAIN: i32 = -27;

/// Whether a `sendrawtransaction` error means bitcoind has the transaction already. -27 says so by itself.
/// A mempool duplicate comes back as -26 or -25 with the reject reason "txn-already-in-mempool" or
/// "txn-already-known" (recent versions answer a mempool duplicate with success instead); the reason string
/// is the RPC's only signal for those, so this is the one place that reads a message.
pub(crate) fn rpc_says_already_known(code: i32, message: &str) -> bool {
    code == RPC_VERIFY_ALREADY_IN_CHAIN
        || ((code == RPC_VERIFY_REJECTED || code == RPC_VERIFY_ERROR)
            && (message.contains("txn-already-in-mempool")
                || message.contains("txn-already-known")))
}

impl ChainHandle {
    pub(crate) async fn broadcast(&self, tx: Transaction) -> Result<Broadcasted, WalletError> {
        match self {
            ChainHandle::Kyoto { light, .. } => {
                if light.shared.broadcast(tx, BROADCAST_TIMEOUT).await {
                    Ok(Broadcasted::Accepted)
                } else {
                    Ok(Broadcasted::NotRequested)
                }
            }
            ChainHandle::Rpc { client, .. } => {
                let c = client.clone();
                let sent = tokio::task::spawn_blocking(move || c.send_raw_transaction(&tx))
                    .await
                    .map_err(|e| WalletError::Broadcast(e.to_string()))?;
                match sent {
                    Ok(_) => Ok(Broadcasted::Accepted),
                    Err(bdk_bitcoind_rpc::bitcoincore_rpc::Error::JsonRpc(
                        jsonrpc::error::Error::Rpc(ref e),
                    )) if rpc_says_already_known(e.code, &e.message) => {
                        Ok(Broadcasted::AlreadyKnown)
                    }
                    Err(e) => Err(WalletError::Broadcast(e.to_string())),
                }
            }
        }
    }

    /// What the chain source knows about fees: bitcoind's `estimatesmartfee` for `within` blocks (None on a
    /// fresh regtest chain, where there is nothing to estimate from), and the minimum relay fee (bitcoind's,
    /// or the light client's peers'), in sat/vB. [`crate::fee::FeePolicy`] turns them into a rate.
    pub(crate) async fn fee_inputs(&self, within: u16) -> (Option<u64>, Option<u64>) {
        match self {
            ChainHandle::Rpc { client, .. } => {
                let c = client.clone();
                let got = tokio::task::spawn_blocking(move || {
                    let est = c
                        .estimate_smart_fee(within, None)
                        .ok()
                        .and_then(|e| e.fee_rate)
                        .map(|per_kvb| per_kvb.to_sat().div_ceil(1000).max(1));
                    let relay = c
                        .get_network_info()
                        .ok()
                        .map(|n| n.relay_fee.to_sat().div_ceil(1000).max(1));
                    (est, relay)
                })
                .await;
                got.unwrap_or((None, None))
            }
            ChainHandle::Kyoto { light, .. } => (None, light.shared.min_fee_rate().await),
        }
    }

    /// How the chain source is doing, for the operator.
    pub(crate) fn health(&self) -> watch::Receiver<ChainHealth> {
        match self {
            ChainHandle::Kyoto { light, .. } => light.shared.health(),
            ChainHandle::Rpc { health, .. } => health.subscribe(),
        }
    }

    /// Stops following the chain and waits until the source's thread is gone (nothing of it writes to the
    /// store afterwards). Later calls return at once.
    pub(crate) async fn stop(&self) {
        match self {
            ChainHandle::Kyoto { light, .. } => light.stop().await,
            ChainHandle::Rpc { stop, thread, .. } => {
                stop.store(true, Ordering::SeqCst);
                let t = thread.lock().ok().and_then(|mut t| t.take());
                if let Some(t) = t {
                    let _ = tokio::task::spawn_blocking(move || t.join()).await;
                }
            }
        }
    }
}

/// RPC loop: connect new blocks (the emitter walks back over reorgs by itself), then the mempool.
fn run_rpc(
    client: Arc<Client>,
    inner: Shared,
    poll: Duration,
    stop: Arc<AtomicBool>,
    health: Arc<watch::Sender<ChainHealth>>,
) {
    let mut last_progress = std::time::Instant::now();
    let (cp, expected) = {
        let g = lock(&inner);
        let expected: Vec<Arc<Transaction>> = g
            .wallet
            .transactions()
            .filter(|t| t.chain_position.is_unconfirmed())
            .map(|t| t.tx_node.tx.clone())
            .collect();
        (g.wallet.latest_checkpoint(), expected)
    };
    let start = cp.height();
    let mut emitter = Emitter::new(client.clone(), cp, start, expected);
    let mut push = true;
    // A write failed: commit again next round even if nothing new comes.
    let mut due = false;
    // Before the first catch-up too, which may take long: the status says syncing meanwhile.
    report_health(&client, &inner, &health, &mut last_progress);
    while !stop.load(Ordering::SeqCst) {
        let round = std::time::Instant::now();
        let mut blocks = 0u32;
        loop {
            match emitter.next_block() {
                Ok(Some(ev)) => {
                    let mut g = lock(&inner);
                    if let Err(e) = g.wallet.apply_block_connected_to(
                        &ev.block,
                        ev.block_height(),
                        ev.connected_to(),
                    ) {
                        // Start over from what the wallet holds rather than skip a block for good.
                        warn!(error = %e, "block does not connect; re-reading the chain from the wallet's tip");
                        let cp = g.wallet.latest_checkpoint();
                        let h = cp.height();
                        emitter =
                            Emitter::new(client.clone(), cp, h, Vec::<Arc<Transaction>>::new());
                        break;
                    }
                    blocks += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    warn!(error = %e, "bitcoind RPC failed while fetching blocks");
                    break;
                }
            }
        }
        let applied = round.elapsed();
        // Blocks are committed (persisted, then invoices re-assessed and the tip announced) before the mempool
        // is read: a confirmation does not wait for a full mempool read.
        if blocks > 0 && commit(&inner, &mut due) {
            debug!(
                blocks,
                applied_us = applied.as_micros() as u64,
                committed_us = (round.elapsed() - applied).as_micros() as u64,
                "wallet blocks committed"
            );
        }
        // The chain's health (bitcoind's tip against the wallet's) after the blocks: one RPC call fewer between
        // a block and its events.
        report_health(&client, &inner, &health, &mut last_progress);
        let mempool_start = round.elapsed();
        let mut mempool_changed = false;
        match emitter.mempool() {
            Ok(mp) => {
                if !mp.update.is_empty() || !mp.evicted.is_empty() {
                    let mut g = lock(&inner);
                    g.wallet.apply_evicted_txs(mp.evicted);
                    g.wallet.apply_unconfirmed_txs(mp.update);
                    mempool_changed = true;
                }
            }
            Err(e) => warn!(error = %e, "bitcoind RPC failed while reading the mempool"),
        }
        let mempool_read = round.elapsed();
        // (The emitter hands the whole mempool over every round; only a real change is written and logged.)
        if (mempool_changed || due) && commit(&inner, &mut due) {
            debug!(
                read_us = (mempool_read - mempool_start).as_micros() as u64,
                committed_us = (round.elapsed() - mempool_read).as_micros() as u64,
                "wallet mempool committed"
            );
        }
        let tip = lock(&inner).wallet.latest_checkpoint().height();
        if !wait_for_block_above(&client, tip, poll, &mut push) {
            std::thread::sleep(poll);
        }
    }
}

/// Publishes the chain's health: bitcoind's tip against the wallet's, or that bitcoind does not answer.
fn report_health(
    client: &Client,
    inner: &Shared,
    health: &watch::Sender<ChainHealth>,
    last_progress: &mut std::time::Instant,
) {
    let count = client.get_block_count();
    let wallet_tip = lock(inner).wallet.latest_checkpoint().height();
    health.send_if_modified(|h| {
        let before = h.clone();
        match &count {
            Ok(count) => {
                let count = *count as u32;
                if h.wallet_tip != wallet_tip || h.header_tip != Some(count) {
                    *last_progress = std::time::Instant::now();
                }
                h.peers = 1;
                h.header_tip = Some(count);
                h.peer_tip = Some(count);
                h.wallet_tip = wallet_tip;
                h.state = if wallet_tip >= count {
                    ChainState::Synced
                } else {
                    ChainState::Syncing
                };
            }
            Err(e) => {
                h.peers = 0;
                h.state = ChainState::Connecting;
                h.last_warning = Some(format!("bitcoind RPC does not answer: {e}"));
            }
        }
        h.secs_since_progress = last_progress.elapsed().as_secs();
        *h != before
    });
}

/// Persists what the wallet staged, then (only after a write that stuck, and only for a real change or a retry)
/// re-assesses the invoices and, once they are written too, announces a new tip: nothing is announced that a
/// crash could take back. `due` is set when a write failed, so that the next round tries again whether or not
/// anything new came; cleared once everything is written. True when a change was written and announced.
fn commit(inner: &Shared, due: &mut bool) -> bool {
    let mut g = lock(inner);
    let tip_before = g.assessed_tip();
    match g.persist() {
        Ok(written) if written || *due => match g.refresh() {
            Ok(()) => {
                *due = false;
                if g.wallet.latest_checkpoint().height() != tip_before {
                    g.tip_event();
                }
                true
            }
            Err(e) => {
                *due = true;
                warn!(error = %e, "cannot persist invoice update; tried again next round");
                false
            }
        },
        Ok(_) => false,
        Err(e) => {
            *due = true;
            warn!(error = %e, "cannot persist wallet update; tried again next round");
            false
        }
    }
}

/// Waits up to `poll` for bitcoind's tip to pass `height`, returning as soon as a block is connected (at once
/// if one already was): the RPC source is pushed new blocks by a long poll (`waitforblockheight`) instead of
/// finding them up to a poll interval late. The mempool is still read every `poll`. `push` is cleared, and
/// `false` returned (the caller then sleeps), if bitcoind refuses the call; it is not asked again.
fn wait_for_block_above(client: &Client, height: u32, poll: Duration, push: &mut bool) -> bool {
    if !*push {
        return false;
    }
    let timeout_ms = poll.as_millis().clamp(1, u128::from(u32::MAX)) as u64;
    let args = [serde_json::json!(height + 1), serde_json::json!(timeout_ms)];
    match client.call::<serde_json::Value>("waitforblockheight", &args) {
        Ok(_) => true,
        Err(bdk_bitcoind_rpc::bitcoincore_rpc::Error::JsonRpc(jsonrpc::Error::Rpc(e))) => {
            warn!(code = e.code, message = %e.message, "bitcoind refuses waitforblockheight; polling for blocks instead");
            *push = false;
            false
        }
        // a transport error: the next round reports it in the health; wait as a poll would
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_duplicates_are_already_known_and_rejections_are_not() {
        assert!(rpc_says_already_known(
            -27,
            "Transaction already in block chain"
        ));
        assert!(rpc_says_already_known(
            -27,
            "Transaction outputs already in utxo set"
        ));
        assert!(rpc_says_already_known(-26, "txn-already-in-mempool"));
        assert!(rpc_says_already_known(-25, "txn-already-known"));
        assert!(!rpc_says_already_known(-26, "min relay fee not met"));
        assert!(!rpc_says_already_known(
            -25,
            "bad-txns-inputs-missingorspent"
        ));
        assert!(!rpc_says_already_known(-22, "txn-already-in-mempool"));
    }
}
