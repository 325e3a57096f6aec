//! `XovWallet`: the node's wallet. BDK holds keys and the chain view; a chain source task feeds it blocks
//! (and, with bitcoind RPC, mempool transactions); after each update every invoice is re-assessed and the
//! differences go out as [`WalletEvent`]s. State is persisted before events are sent.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bdk_wallet::bitcoin::bip32::Xpriv;
use bdk_wallet::bitcoin::{Address, Amount, FeeRate, Network, OutPoint, Transaction, Txid};
use bdk_wallet::chain::{ChainPosition, Merge};
use bdk_wallet::template::Bip84;
use bdk_wallet::{ChangeSet, KeychainKind, SignOptions, Wallet};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, Notify};
use tracing::{debug, warn};

use crate::bond::Bond;
use crate::chain::{self, ChainSource};
use crate::error::WalletError;
use crate::events::WalletEvent;
use crate::fee::{FeeChoice, FeePolicy};
use crate::health::{ChainHealth, ChainTuning};
use crate::invoice::{assess, counted, Invoice, InvoiceStatus, Payment, PaymentPolicy};
use crate::keys;
use crate::store::WalletStore;

/// Addresses watched beyond the last revealed one. Kyoto only matches filters against the revealed window
/// plus this lookahead, so the client is rebuilt when invoices use up half of it.
pub const DEFAULT_LOOKAHEAD: u32 = 1000;
/// Fee rate used when none is given and the chain source offers no estimate (regtest has none).
pub const FALLBACK_FEE_SAT_PER_VB: u64 = 2;

#[derive(Debug, Clone)]
pub struct WalletConfig {
    pub network: Network,
    pub mnemonic_path: PathBuf,
    /// Optional BIP39 passphrase.
    pub passphrase: String,
    /// Encrypt the mnemonic file with this passphrase (and need it to open the wallet).
    pub file_passphrase: Option<String>,
    pub chain: ChainSource,
    pub lookahead: u32,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) struct Inner {
    pub(crate) wallet: Wallet,
    pub(crate) xprv: Xpriv,
    pub(crate) store: Box<dyn WalletStore>,
    full: ChangeSet,
    invoices: BTreeMap<String, Invoice>,
    /// Fidelity bonds, by funding outpoint.
    pub(crate) bonds: BTreeMap<OutPoint, Bond>,
    events: broadcast::Sender<WalletEvent>,
    /// Highest external index the running light client was built to watch.
    pub(crate) watched_up_to: u32,
    lookahead: u32,
    /// The tip at the last assessment, so "newly counts" compares like with like.
    assessed_tip: u32,
    /// Coins spent by payouts built but not yet broadcast, by payout txid (see [`crate::payout`]).
    pub(crate) reserved: BTreeMap<Txid, Vec<OutPoint>>,
    /// Unconfirmed transactions this wallet spent from, with the tip height when this process first saw each
    /// (see [`crate::stuck`]). In memory only.
    pub(crate) unconfirmed_since: BTreeMap<Txid, crate::stuck::Waiting>,
    /// The highest tip this process has seen the wallet at (stuck payments count blocks above it).
    pub(crate) tip_high: u32,
    /// A change-set write failed: the next one writes the complete change set.
    full_write_due: bool,
}

impl Inner {
    /// Writes what BDK staged, or everything once more after a failed write (the store then lacks a delta);
    /// returns whether anything was written. Called before any result of the change leaves the wallet.
    pub(crate) fn persist(&mut self) -> Result<bool, WalletError> {
        let delta = self.wallet.take_staged().filter(|d| !d.is_empty());
        if let Some(d) = &delta {
            self.full.merge(d.clone());
        }
        let written = match (&delta, self.full_write_due) {
            (None, false) => return Ok(false),
            (Some(d), false) => self.store.append_changeset(d, &self.full),
            (_, true) => self.store.save_changeset(&self.full),
        };
        self.full_write_due = written.is_err();
        written?;
        Ok(true)
    }

    /// Payments to each external index, from the wallet's indexed outputs (spent ones included).
    fn payments_by_index(&self, now: u64) -> BTreeMap<u32, Vec<Payment>> {
        let mut out: BTreeMap<u32, Vec<Payment>> = BTreeMap::new();
        for lo in self.wallet.list_output() {
            if lo.keychain != KeychainKind::External {
                continue;
            }
            let (height, seen_at) = match lo.chain_position {
                ChainPosition::Confirmed { anchor, .. } => {
                    (Some(anchor.block_id.height), anchor.confirmation_time)
                }
                ChainPosition::Unconfirmed { first_seen, .. } => (None, first_seen.unwrap_or(now)),
            };
            let txid = lo.outpoint.txid;
            let rbf = self
                .wallet
                .get_tx(txid)
                .is_some_and(|t| t.tx_node.tx.is_explicitly_rbf());
            out.entry(lo.derivation_index).or_default().push(Payment {
                txid: txid.to_string(),
                vout: lo.outpoint.vout,
                amount_sat: lo.txout.value.to_sat(),
                height,
                seen_at,
                rbf,
            });
        }
        out
    }

    /// Re-assesses every invoice against the chain view; persists and announces what changed. Nothing changes
    /// in memory, and nothing is announced, unless every changed invoice was written: after a failed write the
    /// next call finds the same changes and tries again.
    pub(crate) fn refresh(&mut self) -> Result<(), WalletError> {
        crate::stuck::track(self);
        let now = unix_now();
        let tip = self.wallet.latest_checkpoint().height();
        let mut by_index = self.payments_by_index(now);
        let mut events = Vec::new();
        let mut changed = Vec::new();
        for inv in self.invoices.values() {
            let mut payments = by_index.remove(&inv.index).unwrap_or_default();
            payments.sort_by_key(|p| (p.seen_at, p.txid.clone(), p.vout));
            let key = |p: &Payment| (p.txid.clone(), p.vout);
            let counted_now = counted(&payments, tip, &inv.policy);
            let counted_then = counted(&inv.payments, self.assessed_tip, &inv.policy);
            for (p, now_counts) in payments.iter().zip(&counted_now) {
                let old = inv.payments.iter().position(|o| key(o) == key(p));
                let counted_before = old.is_some_and(|i| counted_then[i].counts());
                let old = old.map(|i| &inv.payments[i]);
                if old.is_none() {
                    events.push(WalletEvent::PaymentSeen {
                        invoice: inv.id.clone(),
                        txid: p.txid.clone(),
                        amount_sat: p.amount_sat,
                        confirmations: p.confirmations(tip),
                    });
                }
                if now_counts.counts() && !counted_before {
                    events.push(WalletEvent::PaymentConfirmed {
                        invoice: inv.id.clone(),
                        txid: p.txid.clone(),
                        amount_sat: p.amount_sat,
                        confirmations: p.confirmations(tip),
                    });
                }
                if old.is_some_and(|o| o.height.is_some()) && p.height.is_none() {
                    events.push(WalletEvent::PaymentReorged {
                        invoice: inv.id.clone(),
                        txid: p.txid.clone(),
                        amount_sat: p.amount_sat,
                    });
                }
            }
            for o in &inv.payments {
                if o.height.is_some() && !payments.iter().any(|p| key(p) == key(o)) {
                    events.push(WalletEvent::PaymentReorged {
                        invoice: inv.id.clone(),
                        txid: o.txid.clone(),
                        amount_sat: o.amount_sat,
                    });
                }
            }
            let a = assess(inv, &payments, tip, now);
            let status_changed = (a.status, a.settled_sat, a.zero_conf_sat, a.pending_sat)
                != (
                    inv.status,
                    inv.settled_sat,
                    inv.zero_conf_sat,
                    inv.pending_sat,
                );
            if status_changed || payments != inv.payments {
                let mut next = inv.clone();
                next.status = a.status;
                next.settled_sat = a.settled_sat;
                next.zero_conf_sat = a.zero_conf_sat;
                next.pending_sat = a.pending_sat;
                next.payments = payments;
                changed.push(next);
                if status_changed {
                    events.push(WalletEvent::InvoiceUpdated {
                        invoice: inv.id.clone(),
                        status: a.status,
                        settled_sat: a.settled_sat,
                        zero_conf_sat: a.zero_conf_sat,
                        pending_sat: a.pending_sat,
                    });
                }
            }
        }
        for inv in &changed {
            self.store.save_invoice(inv)?;
        }
        for inv in changed {
            self.invoices.insert(inv.id.clone(), inv);
        }
        self.assessed_tip = tip;
        for e in events {
            debug!(event = ?e, "wallet event");
            let _ = self.events.send(e);
        }
        Ok(())
    }

    pub(crate) fn assessed_tip(&self) -> u32 {
        self.assessed_tip
    }

    pub(crate) fn tip_event(&self) {
        let _ = self.events.send(WalletEvent::TipChanged {
            height: self.wallet.latest_checkpoint().height(),
        });
    }
}

/// A wallet balance in sats.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Balance {
    pub confirmed_sat: u64,
    pub pending_sat: u64,
    pub immature_sat: u64,
    pub tip_height: u32,
}

/// One wallet transaction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub txid: String,
    pub received_sat: u64,
    pub sent_sat: u64,
    pub fee_sat: Option<u64>,
    pub height: Option<u32>,
    pub confirmations: u32,
}

pub struct XovWallet {
    pub(crate) inner: Arc<Mutex<Inner>>,
    events: broadcast::Sender<WalletEvent>,
    pub(crate) network: Network,
    pub(crate) chain: chain::ChainHandle,
    rebuild: Arc<Notify>,
    created_mnemonic: bool,
    fee_policy: Mutex<FeePolicy>,
    /// Held by [`XovWallet::bump_stuck`], so that overlapping calls never bump the same transaction twice.
    pub(crate) bumping: tokio::sync::Mutex<()>,
}

impl XovWallet {
    /// Opens the wallet (creating mnemonic and state on first use) and starts following the chain.
    pub async fn open(
        cfg: WalletConfig,
        store: Box<dyn WalletStore>,
    ) -> Result<XovWallet, WalletError> {
        Self::open_tuned(cfg, store, ChainTuning::default()).await
    }

    /// [`XovWallet::open`], with the light client's supervision tuned (tests shorten its timeouts).
    pub async fn open_tuned(
        cfg: WalletConfig,
        store: Box<dyn WalletStore>,
        tuning: ChainTuning,
    ) -> Result<XovWallet, WalletError> {
        let (mnemonic, created) =
            keys::load_or_create_mnemonic_with(&cfg.mnemonic_path, cfg.file_passphrase.as_deref())?;
        let xprv = keys::master_key(&mnemonic, &cfg.passphrase, cfg.network)?;
        let lookahead = cfg.lookahead.max(25);
        let (mut wallet, mut full) = match store.load_changeset()? {
            Some(cs) => {
                let w = Wallet::load()
                    .check_network(cfg.network)
                    .descriptor(
                        KeychainKind::External,
                        Some(Bip84(xprv, KeychainKind::External)),
                    )
                    .descriptor(
                        KeychainKind::Internal,
                        Some(Bip84(xprv, KeychainKind::Internal)),
                    )
                    .lookahead(lookahead)
                    .load_wallet_no_persist(cs.clone())
                    .map_err(|e| match e {
                        // Restored words that are not the ones the imported state was made with.
                        bdk_wallet::LoadError::Mismatch(bdk_wallet::LoadMismatch::Descriptor {
                            keychain,
                            ..
                        }) => WalletError::OtherKeys {
                            mnemonic: cfg.mnemonic_path.display().to_string(),
                            detail: format!("its {keychain:?} descriptor differs"),
                        },
                        e => WalletError::Load(e.to_string()),
                    })?
                    .ok_or_else(|| WalletError::Load("empty change set".into()))?;
                (w, cs)
            }
            None => {
                let w = Wallet::create(
                    Bip84(xprv, KeychainKind::External),
                    Bip84(xprv, KeychainKind::Internal),
                )
                .network(cfg.network)
                .lookahead(lookahead)
                .create_wallet_no_persist()
                .map_err(|e| WalletError::Descriptor(e.to_string()))?;
                (w, ChangeSet::default())
            }
        };
        let mut store = store;
        if let Some(delta) = wallet.take_staged() {
            full.merge(delta);
            store.save_changeset(&full)?;
        }
        let invoices = store
            .load_invoices()?
            .into_iter()
            .map(|i| (i.id.clone(), i))
            .collect();
        let bonds = store
            .load_bonds()?
            .into_iter()
            .map(|b| (b.outpoint, b))
            .collect();
        let assessed_tip = wallet.latest_checkpoint().height();
        let (events, _) = broadcast::channel(4096);
        let inner = Arc::new(Mutex::new(Inner {
            wallet,
            xprv,
            store,
            full,
            invoices,
            bonds,
            events: events.clone(),
            watched_up_to: 0,
            lookahead,
            assessed_tip,
            reserved: BTreeMap::new(),
            unconfirmed_since: BTreeMap::new(),
            tip_high: 0,
            full_write_due: false,
        }));
        let rebuild = Arc::new(Notify::new());
        let chain = chain::start(
            cfg.chain.clone(),
            cfg.network,
            inner.clone(),
            rebuild.clone(),
            tuning,
        )
        .await?;
        Ok(XovWallet {
            inner,
            events,
            network: cfg.network,
            chain,
            rebuild,
            created_mnemonic: created,
            fee_policy: Mutex::new(FeePolicy::default()),
            bumping: tokio::sync::Mutex::new(()),
        })
    }

    /// How the chain source is doing: connecting, syncing, synced or stalled, with peers, tips, restarts
    /// and the last warning.
    pub fn chain_health(&self) -> ChainHealth {
        self.chain.health().borrow().clone()
    }

    /// Every change of [`XovWallet::chain_health`] (for waiting on a state without polling).
    pub fn subscribe_health(&self) -> tokio::sync::watch::Receiver<ChainHealth> {
        self.chain.health()
    }

    /// Sets how fees are chosen when a caller names no rate.
    pub fn set_fee_policy(&self, policy: FeePolicy) {
        *self.fee_policy.lock().unwrap_or_else(|p| p.into_inner()) = policy;
    }

    pub fn fee_policy(&self) -> FeePolicy {
        *self.fee_policy.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The rate the wallet pays now when the caller names none, and where it came from.
    pub async fn fee_choice(&self) -> FeeChoice {
        let policy = self.fee_policy();
        let (estimate, relay) = self.chain.fee_inputs(policy.confirm_within_blocks).await;
        policy.choose(estimate, relay)
    }

    /// [`XovWallet::fee_choice`]'s rate, sat/vB.
    pub(crate) async fn fee_rate(&self) -> u64 {
        self.fee_choice().await.sat_per_vb
    }

    /// Whether this start created the mnemonic (show it to the user once).
    pub fn created_mnemonic(&self) -> bool {
        self.created_mnemonic
    }

    pub fn network(&self) -> Network {
        self.network
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wallet events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<WalletEvent> {
        self.events.subscribe()
    }

    /// A fresh receiving address (stored as revealed before it is returned).
    pub fn new_address(&self) -> Result<String, WalletError> {
        let mut g = self.lock();
        let info = g.wallet.reveal_next_address(KeychainKind::External);
        g.persist()?;
        self.maybe_rebuild(&g, info.index);
        Ok(info.address.to_string())
    }

    pub(crate) fn maybe_rebuild(&self, g: &Inner, index: u32) {
        if index + g.lookahead / 2 > g.watched_up_to + g.lookahead {
            self.rebuild.notify_one();
        }
    }

    /// Creates an invoice with its own fresh address. The address is never reused: it stays watched so that
    /// later payments to it are seen as top-ups.
    pub fn create_invoice(
        &self,
        id: &str,
        amount_sat: u64,
        expires_at: u64,
        policy: PaymentPolicy,
    ) -> Result<Invoice, WalletError> {
        let mut g = self.lock();
        if g.invoices.contains_key(id) {
            return Err(WalletError::DuplicateInvoice(id.to_string()));
        }
        let info = g.wallet.reveal_next_address(KeychainKind::External);
        g.persist()?;
        let inv = Invoice {
            id: id.to_string(),
            address: info.address.to_string(),
            index: info.index,
            amount_sat,
            created_at: unix_now(),
            expires_at,
            policy,
            status: InvoiceStatus::Unpaid,
            settled_sat: 0,
            zero_conf_sat: 0,
            pending_sat: 0,
            payments: Vec::new(),
        };
        g.store.save_invoice(&inv)?;
        g.invoices.insert(inv.id.clone(), inv.clone());
        self.maybe_rebuild(&g, info.index);
        Ok(inv)
    }

    pub fn invoice(&self, id: &str) -> Option<Invoice> {
        self.lock().invoices.get(id).cloned()
    }

    pub fn invoices(&self) -> Vec<Invoice> {
        self.lock().invoices.values().cloned().collect()
    }

    /// Re-assesses invoices now (expiry is time-based; chain updates trigger this by themselves).
    pub fn refresh(&self) -> Result<(), WalletError> {
        self.lock().refresh()
    }

    pub fn balance(&self) -> Balance {
        let g = self.lock();
        let b = g.wallet.balance();
        Balance {
            confirmed_sat: b.confirmed.to_sat(),
            pending_sat: (b.trusted_pending + b.untrusted_pending).to_sat(),
            immature_sat: b.immature.to_sat(),
            tip_height: g.wallet.latest_checkpoint().height(),
        }
    }

    pub fn tip_height(&self) -> u32 {
        self.lock().wallet.latest_checkpoint().height()
    }

    pub fn history(&self) -> Vec<HistoryEntry> {
        let g = self.lock();
        let tip = g.wallet.latest_checkpoint().height();
        let mut out: Vec<HistoryEntry> = g
            .wallet
            .transactions()
            .map(|t| {
                let (sent, received) = g.wallet.sent_and_received(&t.tx_node.tx);
                let height = match t.chain_position {
                    ChainPosition::Confirmed { anchor, .. } => Some(anchor.block_id.height),
                    ChainPosition::Unconfirmed { .. } => None,
                };
                HistoryEntry {
                    txid: t.tx_node.txid.to_string(),
                    received_sat: received.to_sat(),
                    sent_sat: sent.to_sat(),
                    fee_sat: g
                        .wallet
                        .calculate_fee(&t.tx_node.tx)
                        .ok()
                        .map(|f| f.to_sat()),
                    height,
                    confirmations: height.map_or(0, |h| tip.saturating_sub(h) + 1),
                }
            })
            .collect();
        out.sort_by_key(|h| std::cmp::Reverse(h.height.unwrap_or(u32::MAX)));
        out
    }

    /// Sends `amount_sat` to `address` with replace-by-fee on; returns the txid once broadcast.
    pub async fn send(
        &self,
        address: &str,
        amount_sat: u64,
        fee_sat_per_vb: Option<u64>,
    ) -> Result<String, WalletError> {
        let fee_sat_per_vb = match fee_sat_per_vb {
            Some(f) => Some(f),
            None => Some(self.fee_rate().await),
        };
        let tx = {
            let mut g = self.lock();
            let addr = parse_address(address, self.network)?;
            let rate = FeeRate::from_sat_per_vb(fee_sat_per_vb.unwrap_or(FALLBACK_FEE_SAT_PER_VB))
                .ok_or_else(|| WalletError::Build("fee rate out of range".into()))?;
            // Coins a refund was built from (signed, persisted by the node, not yet broadcast) stay its own.
            let reserved: Vec<OutPoint> = g.reserved.values().flatten().copied().collect();
            let mut b = g.wallet.build_tx();
            b.add_recipient(addr.script_pubkey(), Amount::from_sat(amount_sat))
                .fee_rate(rate)
                .unspendable(reserved);
            let psbt = b.finish().map_err(create_tx_error)?;
            let tx = sign(&mut g, psbt)?;
            g.persist()?;
            tx
        };
        self.broadcast(tx).await
    }

    /// Pays a BIP21 URI (it must carry an amount).
    pub async fn pay(&self, uri: &str, fee_sat_per_vb: Option<u64>) -> Result<String, WalletError> {
        let req = crate::bip21::parse(uri)?;
        let amount = req.amount_sat.ok_or_else(|| {
            WalletError::BadUri(
                "the request names no amount; use `xov wallet send ADDRESS AMOUNT`".into(),
            )
        })?;
        self.send(&req.address, amount, fee_sat_per_vb).await
    }

    /// Sends what arrived on an invoice's address (all its unspent outputs, less the fee) to `address`:
    /// the refund of an undeliverable lease.
    pub async fn refund_invoice(
        &self,
        id: &str,
        address: &str,
        fee_sat_per_vb: Option<u64>,
    ) -> Result<String, WalletError> {
        let tx = {
            let mut g = self.lock();
            let inv = g
                .invoices
                .get(id)
                .cloned()
                .ok_or_else(|| WalletError::NoSuchInvoice(id.to_string()))?;
            let to = parse_address(address, self.network)?;
            let reserved: Vec<OutPoint> = g.reserved.values().flatten().copied().collect();
            let outs: Vec<_> = g
                .wallet
                .list_unspent()
                .filter(|u| u.keychain == KeychainKind::External && u.derivation_index == inv.index)
                .map(|u| u.outpoint)
                .filter(|o| !reserved.contains(o))
                .collect();
            if outs.is_empty() {
                return Err(WalletError::InsufficientFunds(format!(
                    "nothing unspent on invoice {id}"
                )));
            }
            let rate = FeeRate::from_sat_per_vb(fee_sat_per_vb.unwrap_or(FALLBACK_FEE_SAT_PER_VB))
                .ok_or_else(|| WalletError::Build("fee rate out of range".into()))?;
            let mut b = g.wallet.build_tx();
            b.add_utxos(&outs)
                .map_err(|e| WalletError::Build(e.to_string()))?
                .manually_selected_only()
                .drain_to(to.script_pubkey())
                .fee_rate(rate);
            let psbt = b.finish().map_err(|e| WalletError::Build(e.to_string()))?;
            let tx = sign(&mut g, psbt)?;
            g.persist()?;
            tx
        };
        self.broadcast(tx).await
    }

    /// Broadcasts a transaction and applies it to the wallet as unconfirmed (persisted).
    pub(crate) async fn broadcast(&self, tx: Transaction) -> Result<String, WalletError> {
        match self.chain.broadcast(tx.clone()).await? {
            chain::Broadcasted::Accepted | chain::Broadcasted::AlreadyKnown => {}
            chain::Broadcasted::NotRequested => {
                return Err(WalletError::Broadcast(
                    "no peer took the transaction in time".into(),
                ))
            }
        }
        self.apply_broadcast(tx)
    }

    /// Applies a transaction the chain source has as unconfirmed, persists, and re-assesses invoices.
    pub(crate) fn apply_broadcast(&self, tx: Transaction) -> Result<String, WalletError> {
        let txid = tx.compute_txid();
        let mut g = self.lock();
        g.wallet.apply_unconfirmed_txs([(tx, unix_now())]);
        g.persist()?;
        g.refresh()?;
        Ok(txid.to_string())
    }

    /// Stops following the chain. State is already persisted.
    pub async fn shutdown(self) {
        self.chain.stop().await;
    }

    /// Stops following the chain through a shared handle, and waits until the chain source's thread is gone:
    /// the daemon calls it before it exits, so no thread of the wallet writes to the store while the
    /// process tears down (RocksDB's globals are destroyed at exit; a write then aborts the process).
    pub async fn stop_chain(&self) {
        self.chain.stop().await;
    }
}

pub(crate) fn parse_address(address: &str, network: Network) -> Result<Address, WalletError> {
    let bad = |message: String| WalletError::BadAddress {
        address: address.to_string(),
        network: network.to_string(),
        message,
    };
    Address::from_str(address.trim())
        .map_err(|e| bad(e.to_string()))?
        .require_network(network)
        .map_err(|e| bad(e.to_string()))
}

pub(crate) fn sign(
    g: &mut Inner,
    mut psbt: bdk_wallet::bitcoin::Psbt,
) -> Result<Transaction, WalletError> {
    let xprv = g.xprv;
    psbt.sign(&xprv, g.wallet.secp_ctx())
        .map_err(|(_, errs)| WalletError::Sign(format!("{errs:?}")))?;
    let done = g
        .wallet
        .finalize_psbt(&mut psbt, SignOptions::default())
        .map_err(|e| WalletError::Sign(e.to_string()))?;
    if !done {
        warn!("transaction not fully signed");
        return Err(WalletError::Sign("not every input could be signed".into()));
    }
    psbt.extract_tx()
        .map_err(|e| WalletError::Sign(e.to_string()))
}

/// A transaction the wallet cannot build: short of funds, or otherwise.
pub(crate) fn create_tx_error(e: bdk_wallet::error::CreateTxError) -> WalletError {
    match e {
        bdk_wallet::error::CreateTxError::CoinSelection(e) => {
            WalletError::InsufficientFunds(e.to_string())
        }
        other => WalletError::Build(other.to_string()),
    }
}

/// How long a broadcast may take before it is reported as failed.
pub(crate) const BROADCAST_TIMEOUT: Duration = Duration::from_secs(30);
