//! The light client (compact block filters) against a real regtest bitcoind behind the Bitcoin P2P fault
//! proxy: each way it was seen or read to stall, made to happen on purpose, and what the wallet does about it.
//!
//! - A reply lost in the middle of a filter batch leaves the library's request with no timer: the bare client
//!   never gets there (shown with supervision off), the supervised one is restarted and reaches the tip.
//! - Requests the peer ignores (as Core does with `getcfilters` past its filter index) are outlived.
//! - A peer's `version` is not a connection: with `verack` held the wallet stays "connecting" and restarts.
//! - A stopped or rebuilt client leaves no connection (and so no task) behind.
//! - A broadcast made before the handshake completes still reaches the peer.
//! - Chain updates are written on the light client's own thread, never on the node's async workers.
//! - A peer on another network is refused by name.
//!
//! No sleeps as synchronisation: waits are on wallet health changes, wallet events and the proxy's
//! counters, each with a deadline. Where something must *not* happen, a bounded wait shows it.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use xov_testnet::bitcoind::Bitcoind;
use xov_testnet::p2p_proxy::{Direction::*, P2pProxy};
use xov_wallet::bdk::ChangeSet;
use xov_wallet::*;

const WAIT: Duration = Duration::from_secs(90);

/// Short timeouts so each fault plays out in seconds.
fn tuning() -> ChainTuning {
    ChainTuning {
        connect_timeout: Duration::from_secs(4),
        stall_after: Duration::from_secs(6),
        probe_every: Duration::from_secs(2),
        backoff_min: Duration::from_millis(200),
        backoff_max: Duration::from_secs(2),
        response_timeout: Duration::from_secs(3),
        handshake_timeout: Duration::from_secs(3),
        supervise: true,
    }
}

fn config(dir: &std::path::Path, name: &str, peer: SocketAddr) -> WalletConfig {
    WalletConfig {
        network: Network::Regtest,
        mnemonic_path: dir.join(format!("{name}.mnemonic")),
        passphrase: String::new(),
        file_passphrase: None,
        chain: ChainSource::CompactFilters { peers: vec![peer] },
        lookahead: 25,
    }
}

async fn open(dir: &std::path::Path, name: &str, peer: SocketAddr, t: ChainTuning) -> XovWallet {
    let store = FileStore::new(dir.join(name)).unwrap();
    XovWallet::open_tuned(config(dir, name, peer), Box::new(store), t)
        .await
        .expect("wallet opens")
}

/// Waits until the wallet's chain health satisfies `cond`; the health then, or None at `wait`.
async fn health_until(
    w: &XovWallet,
    wait: Duration,
    cond: impl Fn(&ChainHealth) -> bool,
) -> Option<ChainHealth> {
    let mut rx: watch::Receiver<ChainHealth> = w.subscribe_health();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        {
            let h = rx.borrow_and_update();
            if cond(&h) {
                return Some(h.clone());
            }
        }
        if tokio::time::timeout_at(deadline, rx.changed())
            .await
            .is_err()
        {
            return None;
        }
    }
}

async fn reaches_tip(w: &XovWallet, tip: u32, wait: Duration) -> Option<ChainHealth> {
    health_until(w, wait, |h| {
        h.wallet_tip >= tip && h.state == ChainState::Synced
    })
    .await
}

fn height(btc: &Bitcoind) -> u32 {
    btc.height().unwrap() as u32
}

/// A chain long enough that the first filter batch has a middle.
fn chain(btc: &Bitcoind) {
    btc.mine(120).unwrap();
}

/// A regtest bitcoind with `blocks` mined, a temp dir, and the fault proxy in front of bitcoind; the tip.
fn lab(blocks: u32) -> (Bitcoind, tempfile::TempDir, P2pProxy, u32) {
    let btc = Bitcoind::start().unwrap_or_else(|e| panic!("{e}"));
    btc.mine(blocks).unwrap();
    let tip = height(&btc);
    let proxy = P2pProxy::start(btc.p2p_addr()).unwrap();
    (btc, tempfile::tempdir().unwrap(), proxy, tip)
}

/// The fault makes the supervisor restart the client (for `reason`, if named) while the wallet is behind;
/// once the fault is cleared the wallet reaches `tip`. Shuts the wallet and the proxy down.
async fn restarted_then_synced(
    w: XovWallet,
    proxy: P2pProxy,
    tip: u32,
    reason: Option<StallReason>,
) {
    let h = health_until(&w, WAIT, |h| h.restarts >= 1)
        .await
        .unwrap_or_else(|| panic!("no restart: {:?}", w.chain_health()));
    if reason.is_some() {
        assert_eq!(h.last_restart_reason, reason, "{h:?}");
    }
    assert!(h.wallet_tip < tip, "{h:?}");
    proxy.clear();
    reaches_tip(&w, tip, WAIT)
        .await
        .unwrap_or_else(|| panic!("never reached the tip: {:?}", w.chain_health()));
    w.shutdown().await;
    tokio::task::block_in_place(|| drop(proxy));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_lost_mid_batch_stalls_the_bare_client_and_the_supervised_one_recovers() {
    if xov_testnet::skip_e2e("light client faults") {
        return;
    }
    let btc = Bitcoind::start().unwrap_or_else(|e| panic!("{e}"));
    chain(&btc);
    let tip = height(&btc);
    let dir = tempfile::tempdir().unwrap();

    // Unsupervised: the library's own timers never notice the missing filter.
    let proxy = P2pProxy::start(btc.p2p_addr()).unwrap();
    proxy.drop_one(ToClient, "cfilter", 40);
    let bare = open(
        dir.path(),
        "bare",
        proxy.local_addr(),
        ChainTuning {
            supervise: false,
            ..tuning()
        },
    )
    .await;
    assert!(
        tokio::task::block_in_place(|| proxy.wait_seen(ToClient, "cfilter", 41, WAIT)),
        "the client asked for filters"
    );
    // Three times the response timeout: anything the library would do about it, it has done by then.
    let quiet = tuning().response_timeout * 3;
    assert!(
        reaches_tip(&bare, tip, quiet).await.is_none(),
        "the bare client reached the tip with a filter missing"
    );
    let h = bare.chain_health();
    assert!(h.wallet_tip < tip, "{h:?}");
    assert_eq!(h.restarts, 0);
    bare.shutdown().await;
    tokio::task::block_in_place(|| drop(proxy));

    // Supervised: the same loss, then a restart, then the tip.
    let proxy = P2pProxy::start(btc.p2p_addr()).unwrap();
    proxy.drop_one(ToClient, "cfilter", 40);
    let w = open(dir.path(), "supervised", proxy.local_addr(), tuning()).await;
    let h = reaches_tip(&w, tip, WAIT)
        .await
        .unwrap_or_else(|| panic!("never reached the tip: {:?}", w.chain_health()));
    assert!(h.restarts >= 1, "{h:?}");
    assert_eq!(
        h.last_restart_reason,
        Some(StallReason::NoProgress),
        "{h:?}"
    );
    w.shutdown().await;
    tokio::task::block_in_place(|| drop(proxy));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_requests_the_peer_ignores_are_outlived() {
    if xov_testnet::skip_e2e("light client faults") {
        return;
    }
    let (_btc, dir, proxy, tip) = lab(120);
    // Core answers nothing to a getcfilters whose stop block its filter index has not reached: here it
    // never even sees them, until the index "catches up" (the rule is cleared).
    proxy.drop(ToUpstream, "getcfilters");
    let w = open(dir.path(), "ignored", proxy.local_addr(), tuning()).await;
    assert!(tokio::task::block_in_place(|| proxy.wait_seen(
        ToUpstream,
        "getcfilters",
        1,
        WAIT
    )));
    restarted_then_synced(w, proxy, tip, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_version_is_not_a_connection() {
    if xov_testnet::skip_e2e("light client faults") {
        return;
    }
    let (_btc, dir, proxy, tip) = lab(5);
    // The peer's version arrives, then nothing: its verack and its answers are held.
    proxy.hold(ToClient, "verack");
    proxy.hold(ToClient, "headers");
    let w = open(dir.path(), "no-verack", proxy.local_addr(), tuning()).await;
    assert!(tokio::task::block_in_place(
        || proxy.wait_seen(ToClient, "version", 1, WAIT)
    ));
    // The peer's version arrived (the library reports "connections met"), yet no handshake completed.
    let h = w.chain_health();
    assert_eq!(h.state, ChainState::Connecting, "{h:?}");
    restarted_then_synced(w, proxy, tip, Some(StallReason::NoPeer)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_and_rebuilt_clients_leave_no_connection_behind() {
    if xov_testnet::skip_e2e("light client faults") {
        return;
    }
    let btc = Bitcoind::start().unwrap_or_else(|e| panic!("{e}"));
    btc.mine(5).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxy = P2pProxy::start(btc.p2p_addr()).unwrap();
    let quiet = ChainTuning {
        // No probes: every connection the proxy counts is the client's.
        probe_every: Duration::from_secs(3600),
        ..tuning()
    };
    let w = open(dir.path(), "rebuilt", proxy.local_addr(), quiet).await;
    for round in 0..3 {
        let tip = height(&btc);
        reaches_tip(&w, tip, WAIT)
            .await
            .unwrap_or_else(|| panic!("round {round}: never reached the tip"));
        assert!(
            tokio::task::block_in_place(|| proxy.wait_connections(1, WAIT)),
            "round {round}: {} connections live, one expected",
            proxy.connections()
        );
        // Reveal enough addresses to use up half the watched window: the client is rebuilt.
        let seen = proxy.seen(ToUpstream, "version");
        for _ in 0..20 {
            w.new_address().unwrap();
        }
        assert!(
            tokio::task::block_in_place(|| proxy.wait_seen(ToUpstream, "version", seen + 1, WAIT)),
            "round {round}: no rebuild"
        );
        btc.mine(1).unwrap();
    }
    w.shutdown().await;
    assert!(
        tokio::task::block_in_place(|| proxy.wait_connections(0, WAIT)),
        "{} connections still live after the wallet shut down",
        proxy.connections()
    );
    tokio::task::block_in_place(|| drop(proxy));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_before_the_handshake_still_reaches_the_peer() {
    if xov_testnet::skip_e2e("light client faults") {
        return;
    }
    let btc = Bitcoind::start().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let proxy = P2pProxy::start(btc.p2p_addr()).unwrap();
    let w = open(dir.path(), "sender", proxy.local_addr(), tuning()).await;
    let mut rx = w.subscribe();
    let funding = w.new_address().unwrap();
    btc.mine_to(101, &funding).unwrap();
    common::until(&mut rx, "funded through filters", || {
        w.balance().confirmed_sat > 0
    })
    .await;

    // A new connection whose handshake cannot complete yet.
    proxy.hold(ToClient, "verack");
    let versions = proxy.seen(ToClient, "verack");
    proxy.kill_connections();
    assert!(tokio::task::block_in_place(|| proxy.wait_seen(
        ToClient,
        "verack",
        versions + 1,
        WAIT
    )));
    let to = w.new_address().unwrap();
    let w = Arc::new(w);
    let sender = w.clone();
    let send = tokio::spawn(async move { sender.send(&to, 50_000, Some(2)).await });
    // The payment is made while no handshake is complete; then the handshake completes.
    proxy.release(ToClient, "verack");
    let txid = send.await.unwrap().expect("the payment is broadcast");
    let mempool = btc.cli(&["getrawmempool"]).unwrap();
    assert!(
        mempool
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t.as_str() == Some(txid.as_str())),
        "{txid} is not in bitcoind's mempool: {mempool}"
    );
    Arc::try_unwrap(w).ok().unwrap().shutdown().await;
    tokio::task::block_in_place(|| drop(proxy));
}

/// A file store that records on which thread each chain update was written.
struct Recording {
    inner: FileStore,
    threads: Arc<Mutex<Vec<String>>>,
}

impl WalletStore for Recording {
    fn load_changeset(&self) -> Result<Option<ChangeSet>, WalletError> {
        self.inner.load_changeset()
    }
    fn save_changeset(&mut self, full: &ChangeSet) -> Result<(), WalletError> {
        let name = std::thread::current().name().unwrap_or("").to_string();
        self.threads.lock().unwrap().push(name);
        self.inner.save_changeset(full)
    }
    fn load_invoices(&self) -> Result<Vec<Invoice>, WalletError> {
        self.inner.load_invoices()
    }
    fn save_invoice(&mut self, invoice: &Invoice) -> Result<(), WalletError> {
        self.inner.save_invoice(invoice)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_updates_are_written_off_the_async_workers() {
    if xov_testnet::skip_e2e("light client faults") {
        return;
    }
    let btc = Bitcoind::start().unwrap_or_else(|e| panic!("{e}"));
    btc.mine(5).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let threads = Arc::new(Mutex::new(Vec::new()));
    let store = Recording {
        inner: FileStore::new(dir.path().join("rec")).unwrap(),
        threads: threads.clone(),
    };
    let w = XovWallet::open_tuned(
        config(dir.path(), "rec", btc.p2p_addr()),
        Box::new(store),
        tuning(),
    )
    .await
    .unwrap();
    reaches_tip(&w, height(&btc), WAIT).await.unwrap();
    threads.lock().unwrap().clear();
    btc.mine(2).unwrap();
    reaches_tip(&w, height(&btc), WAIT).await.unwrap();
    let seen = threads.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the new blocks were not written");
    assert!(
        seen.iter().all(|t| t == "xov-light-client"),
        "chain updates written on {seen:?}"
    );
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_on_another_network_is_refused_by_name() {
    // No bitcoind needed: a listener that speaks signet.
    use xov_wallet::bitcoin::consensus::encode;
    use xov_wallet::bitcoin::p2p::message::{NetworkMessage, RawNetworkMessage};
    use xov_wallet::bitcoin::p2p::message_network::VersionMessage;
    use xov_wallet::bitcoin::p2p::{Address, Magic, ServiceFlags};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = l.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let v = VersionMessage::new(
                ServiceFlags::NETWORK | ServiceFlags::COMPACT_FILTERS,
                0,
                Address::new(&peer, ServiceFlags::NONE),
                Address::new(&peer, ServiceFlags::NONE),
                1,
                "/signet-node/".into(),
                200_000,
            );
            let m = RawNetworkMessage::new(Magic::SIGNET, NetworkMessage::Version(v));
            let _ = s.write_all(&encode::serialize(&m));
            let mut b = [0u8; 512];
            let _ = s.read(&mut b);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let w = open(dir.path(), "other-net", peer, tuning()).await;
    let h = health_until(&w, WAIT, |h| {
        h.last_warning
            .as_deref()
            .is_some_and(|m| m.contains("signet"))
    })
    .await
    .unwrap_or_else(|| panic!("no warning: {:?}", w.chain_health()));
    assert_ne!(h.state, ChainState::Synced);
    assert_eq!(h.peers, 0);
    w.shutdown().await;
}

// What the client library (bdk_kyoto 0.18.1 over bip157 0.7.0) does by itself, without our supervision and
// isolation: the upstream behaviour behind two of the leads, reported in docs/wallet.md. If an upgrade fixes
// one, its test fails, and the workaround can be reviewed.
mod upstream {
    use super::*;
    use bdk_kyoto::builder::{Builder, BuilderExt};
    use bdk_kyoto::{Info, SyncConfig, TrustedPeer};
    use bdk_wallet::template::Bip84;
    use bdk_wallet::{KeychainKind, Wallet};

    /// How long we watch for something that should not happen: several times what it takes on localhost.
    const QUIET: Duration = Duration::from_secs(8);

    fn bare_wallet(dir: &std::path::Path) -> Wallet {
        let (m, _) = keys::load_or_create_mnemonic_with(&dir.join("bare.mnemonic"), None).unwrap();
        let xprv = keys::master_key(&m, "", Network::Regtest).unwrap();
        Wallet::create(
            Bip84(xprv, KeychainKind::External),
            Bip84(xprv, KeychainKind::Internal),
        )
        .network(Network::Regtest)
        .create_wallet_no_persist()
        .unwrap()
    }

    /// Starts a bare client on the current runtime; returns its requester once a handshake completed.
    async fn bare_client(
        wallet: &Wallet,
        peer: SocketAddr,
        handshake: bool,
    ) -> bdk_kyoto::Requester {
        let client = Builder::new(Network::Regtest)
            .add_peers(std::iter::repeat_n(TrustedPeer::from_socket_addr(peer), 8))
            .whitelist_only()
            .required_peers(1)
            .build_with_wallet(wallet, SyncConfig::sync_from_last_checkpoint().build())
            .unwrap();
        let (client, logging, updates) = client.subscribe();
        let mut infos = logging.info_subscriber;
        let requester = client.start().requester();
        // Keep the update stream alive for the client's lifetime.
        tokio::spawn(async move {
            let mut updates = updates;
            while updates.update().await.is_ok() {}
        });
        if handshake {
            let done = tokio::time::timeout(WAIT, async {
                while let Some(i) = infos.recv().await {
                    if matches!(i, Info::SuccessfulHandshake) {
                        return true;
                    }
                }
                false
            })
            .await;
            assert_eq!(done, Ok(true), "the bare client completed no handshake");
        } else {
            tokio::spawn(async move { while infos.recv().await.is_some() {} });
        }
        requester
    }

    /// bip157's peer task loops on its closed channel after the node shuts down, keeping its socket open
    /// (bitcoind answers its pings) and a worker thread busy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn upstream_a_shut_down_client_keeps_its_connection() {
        if xov_testnet::skip_e2e("light client faults") {
            return;
        }
        let btc = Bitcoind::start().unwrap_or_else(|e| panic!("{e}"));
        btc.mine(5).unwrap();
        let proxy = P2pProxy::start(btc.p2p_addr()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let wallet = bare_wallet(dir.path());
        let r = bare_client(&wallet, proxy.local_addr(), true).await;
        assert_eq!(proxy.connections(), 1);
        r.shutdown().unwrap();
        let cpu_before = process_cpu();
        let closed = tokio::task::block_in_place(|| proxy.wait_connections(0, QUIET));
        let cpu = process_cpu() - cpu_before;
        eprintln!(
            "after shutdown: connection closed: {closed}; process CPU over {} s: {:.1} s",
            QUIET.as_secs(),
            cpu
        );
        assert!(
            !closed,
            "the shut-down client closed its connection (fixed upstream?)"
        );
        drop(proxy);
    }

    /// A transaction submitted while no handshake is complete is dropped by the peer task, and nothing
    /// announces it once the handshake completes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn upstream_a_broadcast_before_the_handshake_is_never_announced() {
        if xov_testnet::skip_e2e("light client faults") {
            return;
        }
        let btc = Bitcoind::start().unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().unwrap();
        let payer = common::funded(dir.path(), &btc, "payer").await;
        let to = payer.new_address().unwrap();
        let signed = payer.build_payout(&to, 40_000, Some(2)).await.unwrap();
        let tx: bdk_wallet::bitcoin::Transaction =
            bdk_wallet::bitcoin::consensus::encode::deserialize_hex(&signed.raw_hex).unwrap();

        let proxy = P2pProxy::start(btc.p2p_addr()).unwrap();
        proxy.hold(ToClient, "verack");
        let wallet = bare_wallet(dir.path());
        let r = bare_client(&wallet, proxy.local_addr(), false).await;
        // The node loop has handled the peer's version and sent our verack (the getheaders it sends then
        // is the mark): from here on only the peer's held verack completes the handshake.
        assert!(tokio::task::block_in_place(|| proxy.wait_seen(
            ToUpstream,
            "getheaders",
            1,
            WAIT
        )));
        // Submit (the request is sent on the first poll), then make one round trip through the node loop,
        // which handles requests in order: the broadcast has been queued and passed to the peer task.
        let mut submitted = Box::pin(r.submit_package(tx));
        tokio::select! {
            biased;
            _ = &mut submitted => panic!("a peer took the transaction before any handshake"),
            _ = std::future::ready(()) => {}
        }
        r.chain_tip().await.unwrap();
        proxy.release(ToClient, "verack");
        let asked = tokio::task::block_in_place(|| proxy.wait_seen(ToUpstream, "tx", 1, QUIET));
        assert!(
            !asked,
            "the queued transaction was announced after the handshake (fixed upstream?)"
        );
        drop(submitted);
        payer.shutdown().await;
        drop(proxy);
    }

    /// This process's user + system CPU seconds.
    fn process_cpu() -> f64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, r)| r.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // After the command name: state is field 0, utime 11, stime 12; clock ticks are 100 per second.
        (ticks(11) + ticks(12)) / 100.0
    }
}
