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
use bdk_kyoto::builder::{Builder, BuilderExt};
use bdk_kyoto::{Requester, SyncConfig, TrustedPeer};
use bdk_wallet::bitcoin::{Network, Transaction};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};

use crate::error::WalletError;
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

/// How long a new light client may take to connect to its peers before it is rebuilt: longer than its own
/// connect and answer timeouts together, so the watchdog never cuts short an attempt that would succeed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(45);
/// Time a trusted peer gets to accept the TCP connection.
const PEER_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a trusted peer gets to answer a request (headers, filters, blocks).
const PEER_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

fn lock(inner: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) enum ChainHandle {
    Kyoto {
        requester: Arc<Mutex<Option<Requester>>>,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
        /// Kept for the bond checker's own light client.
        network: Network,
        peers: Vec<SocketAddr>,
    },
    Rpc {
        client: Arc<Client>,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    },
}

pub(crate) async fn start(
    source: ChainSource,
    network: Network,
    inner: Shared,
    rebuild: Arc<Notify>,
) -> Result<ChainHandle, WalletError> {
    match source {
        ChainSource::CompactFilters { peers } => {
            if peers.is_empty() {
                return Err(WalletError::Chain(
                    "compact block filters need at least one peer".into(),
                ));
            }
            let requester = Arc::new(Mutex::new(None));
            let (stop, stop_rx) = watch::channel(false);
            let task = tokio::spawn(run_kyoto(
                network,
                peers.clone(),
                inner,
                rebuild,
                requester.clone(),
                stop_rx,
            ));
            Ok(ChainHandle::Kyoto {
                requester,
                stop,
                task,
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
            let (c, s) = (client.clone(), stop.clone());
            let thread = std::thread::Builder::new()
                .name("xov-wallet-rpc".into())
                .spawn(move || run_rpc(c, inner, Duration::from_millis(poll_ms.max(10)), s))
                .map_err(|e| WalletError::Chain(e.to_string()))?;
            Ok(ChainHandle::Rpc {
                client,
                stop,
                thread: Some(thread),
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
            ChainHandle::Kyoto { requester, .. } => {
                let r = requester
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .ok_or_else(|| {
                        WalletError::Broadcast("the light client is not connected yet".into())
                    })?;
                match tokio::time::timeout(BROADCAST_TIMEOUT, r.submit_package(tx)).await {
                    Err(_) => Ok(Broadcasted::NotRequested),
                    Ok(sent) => {
                        sent.map_err(|e| WalletError::Broadcast(e.to_string()))?;
                        Ok(Broadcasted::Accepted)
                    }
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

    /// A fee rate for a transaction to confirm within about six blocks, in sat/vB, when the chain source
    /// can tell: bitcoind's `estimatesmartfee`, or (light client) the peers' minimum relay fee. None on a
    /// fresh regtest chain, where there is nothing to estimate from.
    pub(crate) async fn fee_rate(&self) -> Option<u64> {
        match self {
            ChainHandle::Rpc { client, .. } => {
                let c = client.clone();
                let est = tokio::task::spawn_blocking(move || c.estimate_smart_fee(6, None))
                    .await
                    .ok()?
                    .ok()?;
                est.fee_rate
                    .map(|per_kvb| per_kvb.to_sat().div_ceil(1000).max(1))
            }
            ChainHandle::Kyoto { requester, .. } => {
                let r = requester
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()?;
                let rate = tokio::time::timeout(Duration::from_secs(5), r.broadcast_min_feerate())
                    .await
                    .ok()?
                    .ok()?;
                Some(rate.to_sat_per_vb_ceil().max(1))
            }
        }
    }

    pub(crate) async fn stop(self) {
        match self {
            ChainHandle::Kyoto {
                requester,
                stop,
                task,
                ..
            } => {
                let _ = stop.send(true);
                if let Some(r) = requester.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    let _ = r.shutdown();
                }
                let _ = task.await;
            }
            ChainHandle::Rpc {
                stop, mut thread, ..
            } => {
                stop.store(true, Ordering::SeqCst);
                if let Some(t) = thread.take() {
                    let _ = tokio::task::spawn_blocking(move || t.join()).await;
                }
            }
        }
    }
}

/// Light-client loop. The client watches the wallet's addresses as they were when it was built (revealed
/// ones plus the lookahead), so it is rebuilt when invoices come close to the end of that window, and
/// whenever the node stops (it gives up on peers after a long idle spell).
async fn run_kyoto(
    network: Network,
    peers: Vec<SocketAddr>,
    inner: Shared,
    rebuild: Arc<Notify>,
    slot: Arc<Mutex<Option<Requester>>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let built = {
            let mut g = lock(&inner);
            let revealed = g
                .wallet
                .derivation_index(bdk_wallet::KeychainKind::External)
                .unwrap_or(0);
            g.watched_up_to = revealed;
            // Each connection attempt uses up one whitelist entry; list every peer many times.
            let whitelist: Vec<TrustedPeer> = peers
                .iter()
                .flat_map(|p| std::iter::repeat_n(TrustedPeer::from_socket_addr(*p), 64))
                .collect();
            Builder::new(network)
                .add_peers(whitelist)
                .whitelist_only()
                .required_peers(1)
                // The defaults (2 s to connect, 5 s to answer) drop a busy bitcoind under load; our peers
                // are the operator's own nodes, so waiting for them is better than losing them.
                .handshake_timeout(PEER_HANDSHAKE_TIMEOUT)
                .response_timeout(PEER_RESPONSE_TIMEOUT)
                .fetch_witness_data()
                .build_with_wallet(&g.wallet, SyncConfig::sync_from_last_checkpoint().build())
        };
        let client = match built {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot build the light client");
                return;
            }
        };
        let (client, logging, mut updates) = client.subscribe();
        let mut warnings = logging.warning_subscriber;
        let mut infos = logging.info_subscriber;
        tokio::spawn(async move {
            while let Some(w) = warnings.recv().await {
                info!(warning = %w, "light client");
            }
        });
        let (connected_tx, connected_rx) = watch::channel(false);
        tokio::spawn(async move {
            while let Some(i) = infos.recv().await {
                if matches!(i, bdk_kyoto::Info::ConnectionsMet) {
                    let _ = connected_tx.send(true);
                }
                debug!(info = %i, "light client");
            }
        });
        let requester = client.start().requester();
        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(requester.clone());
        info!(network = %network, "light client started");
        // A client that has not reached its peers in time is stuck (seen under heavy load: connected to
        // nobody, silently) and is rebuilt.
        let connect_deadline = tokio::time::sleep(CONNECT_TIMEOUT);
        tokio::pin!(connect_deadline);
        loop {
            tokio::select! {
                _ = &mut connect_deadline, if !*connected_rx.borrow() => {
                    warn!("light client reached no peer in {} s; restarting it", CONNECT_TIMEOUT.as_secs());
                    let _ = requester.shutdown();
                    break;
                }
                u = updates.update() => match u {
                    Ok(update) => {
                        let mut g = lock(&inner);
                        if let Err(e) = g.wallet.apply_update(update) {
                            warn!(error = %e, "light client update does not connect");
                            continue;
                        }
                        let tip_before = g.assessed_tip();
                        if let Err(e) = g.persist().and_then(|_| g.refresh()) {
                            warn!(error = %e, "cannot persist wallet update");
                        }
                        if g.wallet.latest_checkpoint().height() != tip_before {
                            g.tip_event();
                        }
                    }
                    Err(_) => {
                        warn!("light client stopped; restarting it");
                        break;
                    }
                },
                _ = rebuild.notified() => {
                    debug!("rebuilding the light client to watch newly revealed addresses");
                    let _ = requester.shutdown();
                    break;
                }
                _ = stop.wait_for(|s| *s) => {
                    let _ = requester.shutdown();
                    return;
                }
            }
        }
        *slot.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if *stop.borrow() {
            return;
        }
    }
}

/// RPC loop: connect new blocks (the emitter walks back over reorgs by itself), then the mempool.
fn run_rpc(client: Arc<Client>, inner: Shared, poll: Duration, stop: Arc<AtomicBool>) {
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
    while !stop.load(Ordering::SeqCst) {
        let mut changed = false;
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
                    changed = true;
                }
                Ok(None) => break,
                Err(e) => {
                    warn!(error = %e, "bitcoind RPC failed while fetching blocks");
                    break;
                }
            }
        }
        match emitter.mempool() {
            Ok(mp) => {
                if !mp.update.is_empty() || !mp.evicted.is_empty() {
                    let mut g = lock(&inner);
                    g.wallet.apply_evicted_txs(mp.evicted);
                    g.wallet.apply_unconfirmed_txs(mp.update);
                    changed = true;
                }
            }
            Err(e) => warn!(error = %e, "bitcoind RPC failed while reading the mempool"),
        }
        if changed {
            let mut g = lock(&inner);
            let tip_before = g.assessed_tip();
            match g.persist() {
                // Only a real change (new block, new or evicted transaction) is worth re-assessing.
                Ok(true) => {
                    if let Err(e) = g.refresh() {
                        warn!(error = %e, "cannot persist invoice update");
                    }
                    if g.wallet.latest_checkpoint().height() != tip_before {
                        g.tip_event();
                    }
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "cannot persist wallet update"),
            }
        }
        std::thread::sleep(poll);
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
