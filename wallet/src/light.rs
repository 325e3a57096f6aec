//! The light client (BIP157/158 through bdk_kyoto), isolated and supervised.
//!
//! Each client runs on a thread of its own with a single-threaded tokio runtime: the client library's node,
//! its peer tasks, and the loop that applies updates to the wallet (taking the wallet lock, writing with an
//! fsync) all live there, never on the node's async workers. Stopping a client drops that runtime, which
//! ends every task it spawned and closes every socket, whatever state the library left them in (bip157 0.7's
//! peer task spins on a closed channel after a shutdown; see docs/wallet.md).
//!
//! A supervisor task watches the client ([`crate::health::Supervisor`] decides): live peers, the client's
//! header tip, the peers' own tip (from a short `version` probe of ours, [`crate::peer_probe`]), the wallet's
//! tip and the time since progress; it restarts a stalled client with back-off and publishes
//! [`ChainHealth`].
//!
//! Invariants:
//! - Connected means a completed handshake (both `verack`s), never just the peer's `version`.
//! - After every handshake the wallet's own unconfirmed transactions are announced again, so a broadcast
//!   queued while no handshake was complete (which the library drops) still reaches the peers.
//! - A peer that answers for another network is never given to the client.
//! - The client watches the wallet's addresses as they were when it was built (revealed ones plus the
//!   lookahead); it is rebuilt when invoices come close to the end of that window.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bdk_kyoto::builder::{Builder, BuilderExt};
use bdk_kyoto::{Info, Requester, SyncConfig, TrustedPeer, Warning};
use bdk_wallet::bitcoin::{Network, Transaction};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tracing::{debug, info, warn};

use crate::error::WalletError;
use crate::health::{ChainHealth, ChainTuning, StallReason, Supervisor, Verdict};
use crate::peer_probe::{self, ProbeError};
use crate::wallet::Inner;

type Shared = Arc<Mutex<Inner>>;

/// How long a request to the running client (its tip, its peers) may take before it counts as unanswered.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the supervisor looks.
const TICK: Duration = Duration::from_millis(500);
/// How long one broadcast attempt waits for a peer to ask for the transaction before announcing it again.
const ANNOUNCE_RETRY: Duration = Duration::from_secs(10);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the rest of the wallet sees of the light client.
pub(crate) struct LightShared {
    requester: Mutex<Option<Requester>>,
    connected: watch::Sender<bool>,
    health: watch::Sender<ChainHealth>,
}

impl LightShared {
    pub(crate) fn health(&self) -> watch::Receiver<ChainHealth> {
        self.health.subscribe()
    }

    fn requester(&self) -> Option<Requester> {
        lock(&self.requester).clone()
    }

    /// Waits until the running client has completed a handshake; the requester then, or None by `deadline`.
    pub(crate) async fn connected_requester(
        &self,
        deadline: tokio::time::Instant,
    ) -> Option<Requester> {
        let mut rx = self.connected.subscribe();
        loop {
            if *rx.borrow_and_update() {
                if let Some(r) = self.requester() {
                    return Some(r);
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

    /// Submits `tx` once a handshake is complete and waits for a peer to ask for it, announcing it again
    /// every [`ANNOUNCE_RETRY`] (after a reconnect the library would not). Returns whether a peer asked.
    pub(crate) async fn broadcast(&self, tx: Transaction, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let Some(r) = self.connected_requester(deadline).await else {
                return false;
            };
            let attempt = (tokio::time::Instant::now() + ANNOUNCE_RETRY).min(deadline);
            match tokio::time::timeout_at(attempt, r.submit_package(tx.clone())).await {
                Ok(Ok(_)) => return true,
                Ok(Err(e)) => debug!(error = %e, "light client did not take the transaction"),
                Err(_) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
        }
    }

    pub(crate) async fn min_fee_rate(&self) -> Option<u64> {
        let r = self.requester()?;
        let rate = tokio::time::timeout(Duration::from_secs(5), r.broadcast_min_feerate())
            .await
            .ok()?
            .ok()?;
        Some(rate.to_sat_per_vb_ceil().max(1))
    }
}

/// The running light client and its supervisor.
pub(crate) struct LightHandle {
    pub(crate) shared: Arc<LightShared>,
    stop: watch::Sender<bool>,
    /// Taken by the first stop.
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl LightHandle {
    pub(crate) fn start(
        network: Network,
        peers: Vec<SocketAddr>,
        inner: Shared,
        rebuild: Arc<Notify>,
        tuning: ChainTuning,
    ) -> LightHandle {
        let wallet_tip = lock(&inner).wallet.latest_checkpoint().height();
        let sup = Supervisor::new(tuning, wallet_tip);
        let shared = Arc::new(LightShared {
            requester: Mutex::new(None),
            connected: watch::channel(false).0,
            health: watch::channel(sup.health(SOURCE, Instant::now())).0,
        });
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(supervise(
            network,
            peers,
            inner,
            rebuild,
            shared.clone(),
            sup,
            stop_rx,
        ));
        LightHandle {
            shared,
            stop,
            task: Mutex::new(Some(task)),
        }
    }

    /// Stops the supervisor and its client, and waits until the client's thread is gone. Later calls
    /// return at once.
    pub(crate) async fn stop(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

const SOURCE: &str = "compact block filters";

/// What a client thread reports.
#[derive(Debug)]
enum ClientEvent {
    Handshake,
    Progress,
    Disconnected,
    Warning(String),
    /// The client ended by itself.
    Stopped(String),
}

/// One client on its own thread and runtime.
struct Client {
    requester: Requester,
    events: mpsc::UnboundedReceiver<ClientEvent>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Client {
    async fn spawn(
        network: Network,
        peers: &[SocketAddr],
        inner: Shared,
        tuning: ChainTuning,
    ) -> Result<Client, WalletError> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let peers = peers.to_vec();
        let thread = std::thread::Builder::new()
            .name("xov-light-client".into())
            .spawn(move || {
                client_thread(network, peers, inner, tuning, ready_tx, events_tx, stop_rx)
            })
            .map_err(|e| WalletError::Chain(format!("cannot start a light-client thread: {e}")))?;
        match ready_rx.await {
            Ok(Ok(requester)) => Ok(Client {
                requester,
                events,
                stop: Some(stop_tx),
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
                Err(e)
            }
            Err(_) => {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
                Err(WalletError::Chain(
                    "the light-client thread ended at start".into(),
                ))
            }
        }
    }

    /// Stops the client and waits until its thread (with every task and socket it had) is gone.
    async fn stop(mut self) {
        let _ = self.requester.shutdown();
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

fn client_thread(
    network: Network,
    peers: Vec<SocketAddr>,
    inner: Shared,
    tuning: ChainTuning,
    ready: oneshot::Sender<Result<Requester, WalletError>>,
    events: mpsc::UnboundedSender<ClientEvent>,
    stop: oneshot::Receiver<()>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(WalletError::Chain(format!(
                "cannot start the light client's runtime: {e}"
            ))));
            return;
        }
    };
    rt.block_on(async move {
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
                .handshake_timeout(tuning.handshake_timeout)
                .response_timeout(tuning.response_timeout)
                .fetch_witness_data()
                .build_with_wallet(&g.wallet, SyncConfig::sync_from_last_checkpoint().build())
        };
        let client = match built {
            Ok(c) => c,
            Err(e) => {
                let _ = ready.send(Err(WalletError::Chain(format!(
                    "cannot build the light client: {e}"
                ))));
                return;
            }
        };
        let (client, logging, mut updates) = client.subscribe();
        let (client, node) = client.managed_start();
        let requester = client.requester();
        let mut warnings = logging.warning_subscriber;
        let mut infos = logging.info_subscriber;
        let ev = events.clone();
        tokio::spawn(async move {
            while let Some(w) = warnings.recv().await {
                info!(warning = %w, "light client");
                let gone = match &w {
                    Warning::NeedConnections { connected, .. } => *connected == 0,
                    Warning::PeerTimedOut => true,
                    _ => false,
                };
                if gone {
                    let _ = ev.send(ClientEvent::Disconnected);
                }
                let _ = ev.send(ClientEvent::Warning(w.to_string()));
            }
        });
        let ev = events.clone();
        tokio::spawn(async move {
            while let Some(i) = infos.recv().await {
                debug!(info = %i, "light client");
                let e = match i {
                    Info::SuccessfulHandshake => ClientEvent::Handshake,
                    // The peer's `version` arrived: not a connection yet.
                    Info::ConnectionsMet => continue,
                    Info::Progress(_) | Info::BlockReceived(_) => ClientEvent::Progress,
                };
                let _ = ev.send(e);
            }
        });
        let node_task = tokio::spawn(node.run());
        let _ = ready.send(Ok(requester.clone()));
        info!(network = %network, "light client started");
        tokio::pin!(stop);
        loop {
            tokio::select! {
                u = updates.update() => match u {
                    Ok(update) => {
                        let mut g = lock(&inner);
                        if let Err(e) = g.wallet.apply_update(update) {
                            warn!(error = %e, "light client update does not connect");
                            continue;
                        }
                        let tip_before = g.assessed_tip();
                        // Announced only once written (a failed write is written, and announced, with the
                        // next update: the store then writes the complete change set).
                        match g.persist().and_then(|_| g.refresh()) {
                            Err(e) => warn!(error = %e, "cannot persist wallet update"),
                            Ok(()) => {
                                if g.wallet.latest_checkpoint().height() != tip_before {
                                    g.tip_event();
                                }
                            }
                        }
                        drop(g);
                        let _ = events.send(ClientEvent::Progress);
                    }
                    Err(e) => {
                        let _ = events.send(ClientEvent::Stopped(e.to_string()));
                        break;
                    }
                },
                _ = &mut stop => break,
            }
        }
        let _ = requester.shutdown();
        node_task.abort();
    });
    // Dropping the runtime ends every task the client spawned (peer tasks included) and closes their sockets.
    rt.shutdown_timeout(Duration::from_secs(1));
}

/// The wallet's own transactions that are not in a block yet (what a new connection must hear about).
fn own_unconfirmed(inner: &Shared) -> Vec<Transaction> {
    let g = lock(inner);
    g.wallet
        .transactions()
        .filter(|t| t.chain_position.is_unconfirmed())
        .filter(|t| g.wallet.sent_and_received(&t.tx_node.tx).0.to_sat() > 0)
        .map(|t| (*t.tx_node.tx).clone())
        .collect()
}

/// Probes every peer: their best tip, and the peers that are on this network (others are dropped, with a
/// warning).
async fn probe_peers(
    peers: &[SocketAddr],
    network: Network,
    timeout: Duration,
    sup: &mut Supervisor,
) -> Vec<SocketAddr> {
    let mut usable = Vec::new();
    let mut best = None;
    for p in peers {
        match peer_probe::probe(*p, network, timeout).await {
            Ok(v) => {
                if !v.serves_filters() {
                    sup.warning(format!(
                        "peer {p} ({}) does not serve compact block filters",
                        v.user_agent
                    ));
                }
                best = Some(best.map_or(v.height, |b: u32| b.max(v.height)));
                usable.push(*p);
            }
            Err(e @ ProbeError::WrongNetwork { .. }) => {
                warn!(error = %e, "refusing a light-client peer");
                sup.warning(e.to_string());
            }
            // Unreachable now is not a verdict: the client keeps trying it.
            Err(e) => {
                debug!(error = %e, "peer probe");
                usable.push(*p);
            }
        }
    }
    if let Some(b) = best {
        sup.peer_tip(b);
    }
    usable
}

async fn supervise(
    network: Network,
    peers: Vec<SocketAddr>,
    inner: Shared,
    rebuild: Arc<Notify>,
    shared: Arc<LightShared>,
    mut sup: Supervisor,
    mut stop: watch::Receiver<bool>,
) {
    let tuning = *sup.tuning();
    let probe_timeout = tuning.handshake_timeout.min(Duration::from_secs(5));
    let publish = |sup: &Supervisor, shared: &LightShared| {
        let h = sup.health(SOURCE, Instant::now());
        shared.health.send_if_modified(|old| {
            let changed = *old != h;
            *old = h;
            changed
        });
    };
    let mut delay = Duration::ZERO;
    loop {
        if !delay.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
            }
        }
        let usable = probe_peers(&peers, network, probe_timeout, &mut sup).await;
        publish(&sup, &shared);
        if usable.is_empty() {
            warn!("no light-client peer is on {network}; the wallet cannot follow the chain");
            delay = match sup.restart(StallReason::NoPeer) {
                Verdict::Restart { after, .. } => after,
                Verdict::Keep => tuning.backoff_max,
            };
            publish(&sup, &shared);
            continue;
        }
        let client = match Client::spawn(network, &usable, inner.clone(), tuning).await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "light client");
                sup.warning(e.to_string());
                delay = match sup.restart(StallReason::ClientStopped) {
                    Verdict::Restart { after, .. } => after,
                    Verdict::Keep => tuning.backoff_max,
                };
                publish(&sup, &shared);
                continue;
            }
        };
        *lock(&shared.requester) = Some(client.requester.clone());
        sup.client_started(Instant::now());
        publish(&sup, &shared);
        let mut client = client;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_probe = Instant::now() + tuning.probe_every;
        let stopping = loop {
            tokio::select! {
                ev = client.events.recv() => {
                    let now = Instant::now();
                    match ev {
                        Some(ClientEvent::Handshake) => {
                            sup.handshake();
                            shared.connected.send_replace(true);
                            let txs = own_unconfirmed(&inner);
                            if !txs.is_empty() {
                                debug!(count = txs.len(), "announcing the wallet's unconfirmed transactions again");
                                let r = client.requester.clone();
                                tokio::spawn(async move {
                                    for tx in txs {
                                        let _ = tokio::time::timeout(ANNOUNCE_RETRY, r.submit_package(tx)).await;
                                    }
                                });
                            }
                        }
                        Some(ClientEvent::Progress) => sup.progress(now),
                        Some(ClientEvent::Disconnected) => {
                            shared.connected.send_replace(false);
                        }
                        Some(ClientEvent::Warning(w)) => sup.warning(w),
                        Some(ClientEvent::Stopped(why)) => {
                            warn!(reason = %why, "light client stopped; restarting it");
                            sup.warning(format!("the light client stopped: {why}"));
                            break sup.restart(StallReason::ClientStopped);
                        }
                        None => break sup.restart(StallReason::ClientStopped),
                    }
                    publish(&sup, &shared);
                }
                _ = tick.tick() => {
                    let r = &client.requester;
                    let peers_now = tokio::time::timeout(ASK_TIMEOUT, r.peer_info())
                        .await
                        .ok()
                        .and_then(|p| p.ok())
                        .map(|p| p.len());
                    let header_tip = tokio::time::timeout(ASK_TIMEOUT, r.chain_tip())
                        .await
                        .ok()
                        .and_then(|t| t.ok())
                        .map(|t| t.height);
                    let wallet_tip = lock(&inner).wallet.latest_checkpoint().height();
                    if peers_now == Some(0) {
                        shared.connected.send_replace(false);
                    }
                    sup.observe(peers_now.unwrap_or(0), header_tip, wallet_tip, Instant::now());
                    if Instant::now() >= next_probe {
                        probe_peers(&peers, network, probe_timeout, &mut sup).await;
                        next_probe = Instant::now() + tuning.probe_every;
                    }
                    let verdict = sup.check(Instant::now());
                    publish(&sup, &shared);
                    if let Verdict::Restart { reason, after } = verdict {
                        warn!(reason = reason.describe(), next_start_secs = after.as_secs(), "light client stalled; restarting it");
                        break verdict;
                    }
                }
                _ = rebuild.notified() => {
                    debug!("rebuilding the light client to watch newly revealed addresses");
                    break Verdict::Keep;
                }
                _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                    *lock(&shared.requester) = None;
                    shared.connected.send_replace(false);
                    client.stop().await;
                    return;
                }
            }
        };
        *lock(&shared.requester) = None;
        shared.connected.send_replace(false);
        client.stop().await;
        delay = match stopping {
            Verdict::Restart { after, .. } => after,
            Verdict::Keep => Duration::ZERO,
        };
        publish(&sup, &shared);
    }
}
