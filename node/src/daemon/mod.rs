//! `xov node run`: lock the data dir, load state, serve the local API, stop cleanly on SIGINT/SIGTERM.

pub mod provider;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use rand_core::{OsRng, RngCore};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::{error, info, warn};
use xov_protocol::Keypair;

use crate::api::{self, AppState};
use crate::clock::unix_now;
use crate::config::Config;
use crate::market::Market;
use crate::network;
use crate::store::datadir::{DataDir, DB_DIR};
use crate::store::Store;

/// How often expired offers are pruned from memory and disk.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(30);

pub async fn run(dd: DataDir, cfg: Config) -> anyhow::Result<()> {
    dd.create()?;
    let _lock = dd.lock()?;
    let (key, created) = dd.load_or_create_key(|| Keypair::generate(&mut OsRng))?;
    let p2p_key = Keypair::from_secret_bytes(&key.secret_bytes());
    let lease_key_secret = key.secret_bytes();
    let node_id = key.node_id();
    if created {
        info!(%node_id, "created a new node key");
    }
    let db_path = dd.path(DB_DIR);
    let store = Store::open(&db_path)
        .with_context(|| format!("cannot open the database at {}", db_path.display()))?;
    let store_for_wallet = store.clone();
    let chain = cfg.wallet.chain()?;
    let (market, report) = Market::load(key, store, chain, unix_now(), &cfg.network.pools)?;
    info!(%chain, genesis = %chain.genesis_hex(), "trading on this bitcoin network's pools only");
    if report.corrupt > 0 || report.rejected > 0 {
        warn!(?report, "some stored entries were dropped");
    }

    let mut token = [0u8; 32];
    OsRng.fill_bytes(&mut token);
    let token = hex::encode(token);
    dd.write_cookie(&token)?;

    let listener = TcpListener::bind(cfg.api.listen).await.with_context(|| {
        format!(
            "cannot listen on {} for the local API; is another program using it? Set api.listen in {} or XOV_API_LISTEN (port 0 picks a free port)",
            cfg.api.listen,
            dd.path(crate::config::CONFIG_FILE).display()
        )
    })?;
    let addr = listener.local_addr()?;
    dd.write_api_addr(&addr)?;

    let (shutdown_tx, mut shutdown_rx) = watch::channel(false);
    let market = Arc::new(RwLock::new(market));
    let (net, lease_requests) = network::start(
        &p2p_key,
        &cfg.network,
        market.clone(),
        store_for_wallet.clone(),
        shutdown_rx.clone(),
    )
    .await?;
    drop(p2p_key);
    let wallet = if cfg.wallet.enabled {
        Some(std::sync::Arc::new(
            open_wallet(&dd, &cfg, store_for_wallet.clone()).await?,
        ))
    } else {
        None
    };
    // Stopped before the process exits (see `XovWallet::stop_chain`).
    let wallet_for_exit = wallet.clone();
    let policy = crate::lease::driver::LeasePolicy {
        terms: cfg.lease.terms(),
        invoice_ttl_secs: cfg.lease.invoice_ttl_secs,
        tick: Duration::from_secs(1),
        admission: cfg.provider.admission,
        max_unpaid_per_buyer: cfg.lease.max_unpaid_per_buyer,
    };
    let cloud = crate::daemon::provider::from_config(&cfg, &node_id.to_string()).await?;
    let machines = cloud
        .clone()
        .map(|c| c as std::sync::Arc<dyn crate::lease::driver::Machines>);
    let leases = crate::lease::driver::LeaseEngine::new(
        Keypair::from_secret_bytes(&lease_key_secret),
        market.clone(),
        store_for_wallet.clone(),
        wallet.clone(),
        machines,
        net.clone(),
        policy,
    )?;
    leases.spawn(lease_requests);
    let state_leases = leases.clone();
    crate::market::trust_service::TrustService {
        key: Keypair::from_secret_bytes(&lease_key_secret),
        market: market.clone(),
        wallet: wallet.clone(),
        net: net.clone(),
        leases: leases.clone(),
        cfg: cfg.trust.clone(),
        provider: cloud.is_some(),
        checks: Default::default(),
    }
    .spawn();
    if let Some(c) = cloud {
        crate::daemon::provider::spawn_provider(
            c,
            cfg.provider.clone(),
            market.clone(),
            net.clone(),
            leases.clone(),
        );
    }
    let events = leases.events();
    if let Some(w) = &wallet {
        events.forward_wallet(w);
        w.set_fee_policy(cfg.wallet.fee_policy());
        spawn_fee_bumping(
            w.clone(),
            cfg.wallet.bump_after_blocks,
            state_leases.clone(),
        );
    }
    events.spawn_hooks(cfg.events.clone());
    let state = AppState {
        leases,
        wallet,
        net: net.clone(),
        market: market.clone(),
        token: Arc::new(token),
        started_at: unix_now(),
        datadir: dd.root().display().to_string(),
        shutdown: shutdown_tx.clone(),
        events,
        config: Arc::new(cfg.clone()),
        logins: Default::default(),
    };

    let expiry = tokio::spawn({
        let market = market.clone();
        async move {
            let mut tick = tokio::time::interval(EXPIRY_INTERVAL);
            loop {
                tick.tick().await;
                let Ok(mut m) = market.write() else { break };
                match m.expire(unix_now()) {
                    Ok(0) => {}
                    Ok(n) => info!(count = n, "expired offers pruned"),
                    Err(e) => error!(error = %e, "pruning expired offers failed"),
                }
            }
        }
    });

    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received, stopping"),
            _ = int.recv() => info!("SIGINT received, stopping"),
        }
        let _ = shutdown_tx.send(true);
    });

    info!(%node_id, api = %addr, datadir = %dd.root().display(), "node ready");
    // One line on stdout when ready, for scripts and tests that start the daemon: they wait for it.
    let p2p: Vec<String> = net.listen_addrs.iter().map(|a| a.to_string()).collect();
    println!(
        "xov node ready: node_id={node_id} api={addr} p2p={}",
        p2p.join(",")
    );

    let serve = axum::serve(listener, api::router(state)).with_graceful_shutdown(async move {
        let _ = shutdown_rx.wait_for(|stop| *stop).await;
    });
    let result = serve.await;
    expiry.abort();
    if let Some(w) = &wallet_for_exit {
        w.stop_chain().await;
    }
    dd.clear_runtime_files();
    result.context("local API server failed")?;
    info!("node stopped");
    Ok(())
}

/// At every new block, replaces this node's own payments still unconfirmed after `after_blocks` blocks by
/// ones paying the chain's current estimate (RBF): payments, top-ups, slices and refunds confirm without
/// anyone watching. A buyer's lease that holds a replaced payment follows it to the replacement. 0 turns it
/// off.
fn spawn_fee_bumping(
    wallet: std::sync::Arc<xov_wallet::XovWallet>,
    after_blocks: u32,
    leases: std::sync::Arc<crate::lease::driver::LeaseEngine>,
) {
    if after_blocks == 0 {
        return;
    }
    let mut rx = wallet.subscribe();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(xov_wallet::WalletEvent::TipChanged { .. })
                | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    for r in wallet.bump_stuck(after_blocks).await {
                        match r {
                            Ok(b) => {
                                info!(
                                    old = %b.old_txid, new = %b.new_txid, fee_sat = b.new_fee_sat,
                                    "payment unconfirmed for {after_blocks} blocks replaced at a higher fee"
                                );
                                leases.replaced(&b.old_txid, &b.new_txid);
                            }
                            Err(e) => warn!(error = %e, "could not bump a stuck payment"),
                        }
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
}

/// Opens the built-in wallet. On first start the recovery words are printed once when stderr is a terminal
/// (someone is watching); under a service manager stderr goes to the journal, so only a pointer to
/// `xov wallet recovery-words` is printed. The words stay in `<datadir>/wallet.mnemonic` (0600).
async fn open_wallet(
    dd: &DataDir,
    cfg: &Config,
    store: Store,
) -> anyhow::Result<xov_wallet::XovWallet> {
    let network = cfg.wallet.bitcoin_network()?;
    let wcfg = xov_wallet::WalletConfig {
        network,
        mnemonic_path: dd.path(WALLET_MNEMONIC),
        passphrase: String::new(),
        // Not a config key on purpose: a passphrase belongs in the environment of the one process, not on disk.
        file_passphrase: std::env::var("XOV_WALLET_PASSPHRASE")
            .ok()
            .filter(|p| !p.is_empty()),
        chain: cfg.wallet.chain_source()?,
        lookahead: cfg.wallet.lookahead,
    };
    let source = wcfg.chain.name();
    let w = xov_wallet::XovWallet::open(wcfg, Box::new(crate::store::WalletDb::new(store)))
        .await
        .context("cannot open the wallet")?;
    if w.created_mnemonic() && !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!(
            "\n  New wallet. Its recovery words are in {} (mode 0600); run `xov wallet recovery-words` at a\n  terminal to see them and write them down. They are not printed here: this output may be logged.\n",
            dd.path(WALLET_MNEMONIC).display()
        );
    } else if w.created_mnemonic() {
        let pass = std::env::var("XOV_WALLET_PASSPHRASE")
            .ok()
            .filter(|p| !p.is_empty());
        if let Ok((words, _)) = xov_wallet::keys::load_or_create_mnemonic_with(
            &dd.path(WALLET_MNEMONIC),
            pass.as_deref(),
        ) {
            let words = words.to_string();
            eprintln!(
                "\n  New wallet. Write down these recovery words and keep them offline; they are shown only now\n  (and stay in {} with mode 0600):\n\n    {}\n",
                dd.path(WALLET_MNEMONIC).display(),
                words.trim()
            );
        }
    }
    info!(%network, source, "wallet ready");
    Ok(w)
}

/// File holding the wallet's BIP39 mnemonic.
pub const WALLET_MNEMONIC: &str = "wallet.mnemonic";
