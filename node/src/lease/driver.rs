//! The lease driver: the one place that does a lease's I/O. Decisions are made by `lease::machine::handle`;
//! the driver feeds it inputs (wallet views, clock ticks, notices, results of actions), persists the record it
//! returns, and only then carries out the actions.
//!
//! Invariants:
//! - Decide and persist happen under one lock with no await in between: no read-modify-write across an
//!   await, so a result that arrives while another is being handled is applied to the newest record.
//! - A failed write stops the action: nothing is acted on and nothing changes in memory; the next tick
//!   decides again from the last record that was persisted (LDK's "a failed persist is an outcome").
//! - Each lease's slow actions (cloud, refunds, notices) run as their own tasks, at most one of each kind per
//!   lease at a time; nothing waits for them, so one slow lease never holds up another.
//! - Refunds and a buyer's slices are serialised through one lock (built, persisted, broadcast), so two
//!   payouts never pick the same coins; signed refund transactions are broadcast again at every start until
//!   they confirm. A slice is built only from a persisted intent and sent only as its persisted transaction.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};
use xov_protocol::validate::{validate_invoice, validate_order};
use xov_protocol::{
    Bid, Chain, Invoice, Keypair, LeaseNotice, LeaseState, NodeId, Offer, OfferKey, Order,
    OrderRefusal, PoolId, Signed, SignedReceipt,
};
use xov_wallet::{WalletEvent, XovWallet};

use super::machine::{
    self, Action, ActionKind, BudgetError, CloudError, Ctx, Input, RefundError, SliceError, Terms,
};
use super::record::{InstanceInfo, LeaseRecord, PaymentOut, RefundTx, Role, SentPayment};
use crate::clock::unix_now;
use crate::market::Market;
use crate::network::lease_wire::{LeaseRequest, LeaseResponse};
use crate::network::{IncomingLease, NetworkHandle};
use crate::store::{Store, StoreError};

pub use super::machine::LaunchSpec;

/// What the driver needs from a cloud; the provisioner crate's backends are adapted to it.
pub trait Machines: Send + Sync + 'static {
    fn launch(&self, spec: LaunchSpec) -> BoxFuture<'_, Result<InstanceInfo, CloudError>>;
    fn stop(&self, lease_id: &str) -> BoxFuture<'_, Result<(), CloudError>>;
    fn start(&self, lease_id: &str) -> BoxFuture<'_, Result<(), CloudError>>;
    fn delete(&self, lease_id: &str) -> BoxFuture<'_, Result<(), CloudError>>;
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The provider's terms for running leases.
#[derive(Debug, Clone)]
pub struct LeasePolicy {
    /// What the lease machine decides by (confirmations, zero-conf, warn, grace, hold, timeouts, refunds).
    pub terms: Terms,
    /// How long an invoice may stay unpaid.
    pub invoice_ttl_secs: u64,
    /// How often leases are metered.
    pub tick: Duration,
    /// How much buyers may run here, by trust tier.
    pub admission: xov_protocol::AdmissionPolicy,
    /// Unpaid invoices one buyer may hold open here at once.
    pub max_unpaid_per_buyer: u32,
}

impl Default for LeasePolicy {
    fn default() -> Self {
        LeasePolicy {
            terms: Terms::default(),
            invoice_ttl_secs: 3600,
            tick: Duration::from_secs(1),
            admission: crate::config::default_admission(),
            max_unpaid_per_buyer: 3,
        }
    }
}

#[derive(Debug, Error)]
pub enum OrderError {
    #[error("no offer matches: {}", .0.join("; "))]
    NoMatch(Vec<String>),
    #[error("every matching provider refused: {}", .0.join("; "))]
    AllRefused(Vec<String>),
    #[error("this node has no wallet to pay with; enable [wallet] or pay the invoice from another wallet (omit --pay)")]
    NoWallet,
    #[error("no lease {0}; `xov leases list` shows yours")]
    NoSuchLease(String),
    #[error("lease {id} is {state:?}; only a live lease you bought can be {what}")]
    NotLive {
        id: String,
        state: LeaseState,
        what: &'static str,
    },
    #[error("the SSH key is not usable: {0}")]
    BadSshKey(String),
    #[error("the refund address is not usable: {0}")]
    BadRefundAddress(String),
    #[error("the ports are not usable: {0}")]
    BadPorts(String),
    #[error("'{0}' is not PROVIDER:OFFER_ID (an offer's key; `xov offers list --json` shows each offer's `key`)")]
    BadOffer(String),
    #[error("the budget is not usable: {0}")]
    Budget(#[from] BudgetError),
    #[error("{0}")]
    Bid(String),
    #[error("the wallet could not pay: {0}")]
    Wallet(#[from] xov_wallet::WalletError),
    #[error("invoice received but paying failed: {error}; pay {uri} yourself")]
    PayFailed {
        uri: String,
        error: xov_wallet::WalletError,
    },
    #[error("this node's storage failed: {0}")]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// The buyer's order request (CLI `xov order`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    /// Pool name or id (default: every pool this node takes part in).
    pub pool: Option<String>,
    #[serde(default)]
    pub vcpus: u32,
    #[serde(default)]
    pub ram_mib: u32,
    #[serde(default)]
    pub disk_gib: u32,
    /// `any`, `none`, or a GPU model.
    pub gpu: Option<String>,
    #[schema(example = "debian-12")]
    pub image: String,
    /// Most sats per hour to pay.
    pub max_price: Option<u64>,
    /// Hours to order (the invoice's size): at least 1, unless a budget is given, when 0 means the budget's
    /// worth within the offer's lease bounds.
    #[serde(default)]
    #[schema(maximum = 8784)]
    pub hours: u32,
    /// One line of an OpenSSH public key (`ssh-ed25519 AAAA… comment`).
    #[schema(max_length = 4096)]
    pub ssh_public_key: String,
    /// Where refunds go; by default a fresh address of this node's own wallet.
    pub refund_address: Option<String>,
    /// TCP ports besides SSH to have opened to the machine (a web server's 80 and 443, say): only offers
    /// that allow each of them match.
    #[serde(default)]
    #[schema(max_items = 15)]
    pub ports: Vec<u16>,
    /// Pay the invoice from this node's wallet right away.
    #[serde(default)]
    pub pay: bool,
    /// When no offer in the book matches, gossip a bid and wait this long for providers to answer (0: don't;
    /// at most a day).
    #[serde(default)]
    #[schema(maximum = 86400)]
    pub bid_wait_secs: u64,
    /// Pay in slices instead: at most this many sats in all to the lease's address (network fees on top).
    /// The first slice is paid at once from this node's wallet, the next ones before the lease runs low
    /// while the provider delivers.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub budget_sat: Option<u64>,
    /// With a budget: the length of one slice in hours, fractions allowed (default one hour, or the offer's
    /// shortest lease if longer).
    #[serde(default)]
    #[schema(minimum = 0.001, maximum = 1193046)]
    pub slice_hours: Option<f64>,
    /// Order this one offer and no other, `PROVIDER:OFFER_ID` (an offer's `key` in `GET /v1/offers`; the
    /// dashboard's Order button, `xov order --offer`): when it is gone or no longer meets the order, the order
    /// fails instead of going to another provider.
    #[serde(default)]
    #[schema(example = "EDzN4pz3rsuYrFtAnd2PmS1291pdq5sD6ZRvezPkmw3b:3")]
    pub offer: Option<String>,
}

/// `PROVIDER:OFFER_ID` as an offer's key.
pub fn parse_offer_key(s: &str) -> Result<OfferKey, OrderError> {
    let bad = || OrderError::BadOffer(s.to_string());
    let (provider, id) = s.rsplit_once(':').ok_or_else(bad)?;
    Ok(OfferKey {
        provider: provider.parse().map_err(|_| bad())?,
        offer_id: id.parse().map_err(|_| bad())?,
    })
}

pub struct LeaseEngine {
    key: Keypair,
    me: NodeId,
    /// The bitcoin network this node trades on (its market's): orders for another are refused.
    chain: Chain,
    market: Arc<RwLock<Market>>,
    store: Store,
    wallet: Option<Arc<XovWallet>>,
    machines: Option<Arc<dyn Machines>>,
    net: NetworkHandle,
    policy: LeasePolicy,
    leases: Mutex<HashMap<String, LeaseRecord>>,
    /// Actions under way, one of each kind per lease.
    inflight: Mutex<HashSet<(String, ActionKind)>>,
    /// Leases whose cloud answer could not be stored: the machine hears `Restarted` at the next tick.
    unsure: Mutex<HashSet<String>>,
    /// Serialises admissions (check, invoice, record) without holding the lease map during wallet I/O.
    admission: tokio::sync::Mutex<()>,
    /// Serialises refund building and broadcasting, so two refunds never select the same coins.
    refunding: tokio::sync::Mutex<()>,
    /// Buyer: open bids and the offers providers answered with.
    bids: crate::market::bids::BidBoard,
    /// Provider: bids already answered, (buyer, bid id) → expiry, so a bid heard twice is answered once.
    answered: Mutex<HashMap<(NodeId, u64), u64>>,
    /// Every persisted lease change is published here (dashboard, `xov events`, drain-warning hooks).
    events: crate::events::EventBus,
}

/// A provider's leases that hold a machine of `offer` which the offer's advertised capacity does not already
/// leave out: the offer's capacity is what the cloud had free when the offer was made, so leases whose
/// machine was running by then are already subtracted.
pub fn busy(leases: &HashMap<String, LeaseRecord>, offer: &Offer) -> usize {
    leases
        .values()
        .filter(|l| {
            l.role == Role::Provider
                && l.offer_id == offer.offer_id
                && !l.state.is_terminal()
                && l.started_at.is_none_or(|s| s >= offer.created_at)
        })
        .count()
}

/// Why no matching offer leases for `hours`: the lease lengths the offers allow, and what to ask instead.
fn hours_unfit<'a>(hours: u32, offers: impl Iterator<Item = &'a Offer>) -> String {
    let (mut min, mut max, mut n) = (u32::MAX, 0, 0);
    for o in offers {
        min = min.min(o.min_lease_secs);
        max = max.max(o.max_lease_secs);
        n += 1;
    }
    let h = |secs: u32| {
        if secs % 3600 == 0 {
            format!("{} h", secs / 3600)
        } else {
            format!("{:.2} h", f64::from(secs) / 3600.0)
        }
    };
    let ask = if max < 3600 {
        "order with --budget and --slice-hours instead".to_string()
    } else {
        format!(
            "ask for --hours between {} and {}",
            min.div_ceil(3600).max(1),
            max / 3600
        )
    };
    format!(
        "{n} {} {} the machine asked for, but none leases it for {hours} h: they lease for {} to {}; {ask}",
        if n == 1 { "offer" } else { "offers" },
        if n == 1 { "has" } else { "have" },
        h(min),
        h(max)
    )
}

/// Unpaid invoices a buyer holds open with this provider (a payment seen but not confirmed is not paid yet:
/// it costs nothing to send one that is then replaced).
fn unpaid(leases: &HashMap<String, LeaseRecord>, buyer: &str) -> u32 {
    leases
        .values()
        .filter(|l| {
            l.role == Role::Provider
                && l.counterparty == buyer
                && matches!(l.state, LeaseState::Invoiced | LeaseState::PaymentSeen)
        })
        .count() as u32
}

/// A buyer's live leases with this provider: how many, and their price per hour together.
fn buyer_load(leases: &HashMap<String, LeaseRecord>, buyer: &str) -> (u32, u64) {
    leases
        .values()
        .filter(|l| l.role == Role::Provider && l.counterparty == buyer && !l.state.is_terminal())
        .fold((0, 0), |(n, r), l| (n + 1, r + l.price_sats_per_hour))
}

/// This provider's machines running or about to (paid): what it announces as its load.
fn provider_load(leases: &HashMap<String, LeaseRecord>) -> (u32, u64) {
    leases
        .values()
        .filter(|l| {
            l.role == Role::Provider
                && matches!(
                    l.state,
                    LeaseState::Provisioning
                        | LeaseState::Running
                        | LeaseState::Warned
                        | LeaseState::Grace
                )
        })
        .fold((0, 0), |(n, r), l| (n + 1, r + l.price_sats_per_hour))
}

/// Providers asked, one after another, before an order gives up.
const MAX_CANDIDATES: usize = 8;
/// How long `order` waits for a budget's first slice to be broadcast before it answers.
const FIRST_SLICE_WAIT: Duration = Duration::from_secs(60);
/// After the first answer to a bid, how long to wait for others to compare with.
const BID_SETTLE: Duration = Duration::from_millis(500);

/// The outcome of applying one input: what was persisted and what to do now.
#[derive(Debug)]
pub struct Applied {
    pub actions: Vec<Action>,
    /// The record before and after, when it changed.
    pub previous: Option<LeaseState>,
    pub saved: Option<LeaseRecord>,
}

/// Decide and persist, with no await: the synchronous core the driver (and the simulator) run under the
/// lease map's lock. A failed write returns the error and changes nothing; the caller takes no action.
pub fn apply_input<E>(
    leases: &mut HashMap<String, LeaseRecord>,
    persist: &mut dyn FnMut(&LeaseRecord) -> Result<(), E>,
    id: &str,
    input: Input,
    now: u64,
    ctx: &Ctx<'_>,
) -> Result<Applied, E> {
    let Some(rec) = leases.get(id) else {
        return Ok(Applied {
            actions: Vec::new(),
            previous: None,
            saved: None,
        });
    };
    let outcome = machine::handle(rec, input, now, ctx);
    let previous = Some(rec.state);
    let saved = match outcome.record {
        Some(new) => {
            persist(&new)?;
            leases.insert(id.to_string(), new.clone());
            Some(new)
        }
        None => None,
    };
    Ok(Applied {
        actions: outcome.actions,
        previous,
        saved,
    })
}

/// Maps the provisioner's errors onto what the lease machine does about them.
pub fn cloud_error(e: xov_provisioner::ProvisionError) -> CloudError {
    use xov_provisioner::ProvisionError as P;
    let detail = e.to_string();
    match e {
        P::NoMachine { .. } => CloudError::NoMachine,
        ref e if e.is_transient() => CloudError::Transient { detail },
        ref e if e.is_launch_failure() => CloudError::LaunchFailed { detail },
        P::NotFound { .. } | P::InvalidRequest(_) | P::KeypairConflict { .. } => {
            CloudError::LaunchFailed { detail }
        }
        ref e if e.is_config_error() => CloudError::Config { detail },
        P::Auth { .. } | P::Catalog { .. } | P::Microversion { .. } => {
            CloudError::Config { detail }
        }
        _ => CloudError::Transient { detail },
    }
}

/// A refund's persisted transaction, as the wallet broadcasts it.
/// A signed transaction from the wallet, as the lease record keeps it (the inverse of [`signed_tx`]).
fn persisted_tx(t: xov_wallet::SignedTx) -> RefundTx {
    RefundTx {
        txid: t.txid,
        raw_hex: t.raw_hex,
        fee_sat: t.fee_sat,
        sent_sat: t.sent_sat,
    }
}

fn signed_tx(tx: RefundTx) -> xov_wallet::SignedTx {
    xov_wallet::SignedTx {
        txid: tx.txid,
        raw_hex: tx.raw_hex,
        fee_sat: tx.fee_sat,
        sent_sat: tx.sent_sat,
    }
}

fn slice_error(e: xov_wallet::WalletError) -> SliceError {
    match e {
        xov_wallet::WalletError::InsufficientFunds(detail) => SliceError::Funds { detail },
        e @ xov_wallet::WalletError::BelowDust { .. } => SliceError::Uneconomic {
            detail: e.to_string(),
        },
        other => SliceError::Later {
            detail: other.to_string(),
        },
    }
}

/// The network fee the wallet pays for a typical payment (one P2WPKH input; the recipient's P2WPKH output
/// and a change output) at `sat_per_vb`, computed as BDK does (each part's weight at the rate, rounded up).
/// A slice is built with the fee taken out of `amount + this`, so that the lease's address receives the
/// slice's amount; another shape (more inputs, no change) pays more fee and the address a little less, never
/// more (the machine refuses to send a slice that would pay more than asked).
pub fn payment_fee_sat(sat_per_vb: u64) -> u64 {
    let per_kwu = sat_per_vb.saturating_mul(250);
    let at_rate = |wu: u64| per_kwu.saturating_mul(wu).div_ceil(1000);
    // The transaction without inputs (version, counts, the recipient's output, lock time, segwit marker),
    // one P2WPKH input (41 bytes, an empty witness's count) with its largest witness (a 72-byte signature
    // with its sighash byte and a 33-byte key, each with its length), and the change output.
    const BASE_WU: u64 = 166;
    const INPUT_WU: u64 = 41 * 4 + 1 + 107;
    const CHANGE_VB: u64 = 31;
    at_rate(BASE_WU) + at_rate(INPUT_WU) + sat_per_vb.saturating_mul(CHANGE_VB)
}

fn refund_error(e: xov_wallet::WalletError) -> RefundError {
    match e {
        xov_wallet::WalletError::BelowDust { value_sat, .. } => {
            RefundError::Uneconomic { value_sat }
        }
        other => RefundError::Later {
            detail: other.to_string(),
        },
    }
}

impl LeaseEngine {
    pub fn new(
        key: Keypair,
        market: Arc<RwLock<Market>>,
        store: Store,
        wallet: Option<Arc<XovWallet>>,
        machines: Option<Arc<dyn Machines>>,
        net: NetworkHandle,
        policy: LeasePolicy,
    ) -> Result<Arc<Self>, StoreError> {
        let now = unix_now();
        // The chain never changes once the market is loaded, so a poisoned lock still tells it truly.
        let chain = market.read().unwrap_or_else(|p| p.into_inner()).chain();
        let mut leases = HashMap::new();
        for mut l in store.leases()? {
            // Records of the engine before the lease machine: brought to its rules once, persisted first.
            if l.migrate(now) {
                store.put_lease(&l)?;
            }
            leases.insert(l.id.clone(), l);
        }
        Ok(Arc::new(LeaseEngine {
            me: key.node_id(),
            chain,
            key,
            market,
            store,
            wallet,
            machines,
            net,
            policy,
            leases: Mutex::new(leases),
            inflight: Mutex::new(HashSet::new()),
            unsure: Mutex::new(HashSet::new()),
            admission: tokio::sync::Mutex::new(()),
            refunding: tokio::sync::Mutex::new(()),
            bids: Default::default(),
            answered: Mutex::new(HashMap::new()),
            events: crate::events::EventBus::new(),
        }))
    }

    /// The bus this engine publishes lease changes and drain warnings on.
    pub fn events(&self) -> crate::events::EventBus {
        self.events.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, LeaseRecord>> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn list(&self) -> Vec<LeaseRecord> {
        let mut v: Vec<_> = self.lock().values().cloned().collect();
        v.sort_by_key(|l| std::cmp::Reverse(l.history.first().map_or(0, |s| s.at)));
        v
    }

    /// This provider's running machines and what they earn per hour together: its announced load.
    pub fn provider_load(&self) -> (u32, u64) {
        provider_load(&self.lock())
    }

    pub fn get(&self, id: &str) -> Option<LeaseRecord> {
        let g = self.lock();
        g.get(id).cloned().or_else(|| {
            // Accept unambiguous prefixes of the id, as people copy short ids from tables.
            let mut m = g.values().filter(|l| l.id.starts_with(id));
            match (m.next(), m.next()) {
                (Some(l), None) => Some(l.clone()),
                _ => None,
            }
        })
    }

    /// Applies one input to one lease: decide, persist, then act. False when the write failed (nothing was
    /// done; the input must come again, e.g. a notice is not acknowledged).
    pub fn drive(self: &Arc<Self>, id: &str, input: Input) -> bool {
        self.drive_result(id, input, None)
    }

    /// `drive` for the result of an action of kind `done`: the action stops counting as under way in the
    /// same critical section that applies its result, so a tick in between cannot ask for it a second time.
    fn drive_result(self: &Arc<Self>, id: &str, input: Input, done: Option<ActionKind>) -> bool {
        let now = unix_now();
        let ctx = Ctx {
            terms: &self.policy.terms,
            key: &self.key,
        };
        let (started, applied) = {
            let mut g = self.lock();
            let started = std::time::Instant::now();
            if let Some(kind) = done {
                self.inflight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&(id.to_string(), kind));
            }
            let store = &self.store;
            let applied = apply_input(&mut g, &mut |r| store.put_lease(r), id, input, now, &ctx);
            (started, applied)
        };
        match applied {
            Ok(a) => {
                if let Some(saved) = &a.saved {
                    // The step trace of a lease change: decide and persist, under the lock (debug level).
                    debug!(
                        lease = %id,
                        from = ?a.previous,
                        to = ?saved.state,
                        actions = a.actions.len(),
                        decide_persist_us = started.elapsed().as_micros() as u64,
                        "lease input applied"
                    );
                    self.events.lease_saved(saved, a.previous);
                }
                for action in a.actions {
                    self.act(id, action);
                }
                true
            }
            Err(e) => {
                error!(
                    lease = %id,
                    error = %e,
                    "cannot persist the lease; its actions are held back until a write succeeds"
                );
                false
            }
        }
    }

    /// Inserts a new lease, persisted first.
    fn insert_new(&self, rec: LeaseRecord) -> Result<(), StoreError> {
        self.store.put_lease(&rec)?;
        self.events.lease_saved(&rec, None);
        self.lock().insert(rec.id.clone(), rec);
        Ok(())
    }

    /// Starts an action unless one of its kind is already under way for this lease.
    fn act(self: &Arc<Self>, id: &str, action: Action) {
        let kind = action.kind();
        let deduped = !matches!(kind, ActionKind::Alert | ActionKind::Publish);
        if deduped {
            let mut f = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            if !f.insert((id.to_string(), kind)) {
                return;
            }
        }
        let me = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let result = me.run(&id, action).await;
            let done = deduped.then_some(kind);
            match result {
                Some(input) => {
                    let cloud = matches!(
                        input,
                        Input::Launched(_)
                            | Input::Stopped(_)
                            | Input::Started(_)
                            | Input::Deleted(_)
                    );
                    if !me.drive_result(&id, input, done) && cloud {
                        // The answer is lost with the failed write: treat the lease like after a restart.
                        me.mark_unsure(&id);
                    }
                }
                None => {
                    if let Some(kind) = done {
                        me.inflight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&(id.clone(), kind));
                    }
                }
            }
        });
    }

    /// Carries out one action; its result, if the machine needs it, is the next input.
    async fn run(&self, id: &str, action: Action) -> Option<Input> {
        match action {
            Action::Launch(spec) => {
                let m = self.machines.clone()?;
                info!(lease = %id, "launching");
                Some(Input::Launched(m.launch(spec).await))
            }
            Action::Stop => Some(Input::Stopped(self.machines.clone()?.stop(id).await)),
            Action::Start => Some(Input::Started(self.machines.clone()?.start(id).await)),
            Action::Delete => Some(Input::Deleted(self.machines.clone()?.delete(id).await)),
            Action::BuildRefund {
                id: rid,
                value_sat,
                address,
            } => {
                let w = self.wallet.clone()?;
                let _one = self.refunding.lock().await;
                let result = w
                    .build_payout(&address, value_sat, None)
                    .await
                    .map(persisted_tx)
                    .map_err(refund_error);
                Some(Input::RefundBuilt { id: rid, result })
            }
            Action::Broadcast { id: rid, tx } => {
                let w = self.wallet.clone()?;
                let _one = self.refunding.lock().await;
                let result = w
                    .broadcast_signed(&signed_tx(tx))
                    .await
                    .map(|_| ())
                    .map_err(refund_error);
                Some(Input::RefundSent { id: rid, result })
            }
            Action::PaySlice {
                n,
                amount_sat,
                address,
            } => {
                let w = self.wallet.clone()?;
                let _one = self.refunding.lock().await;
                let rate = w.fee_choice().await.sat_per_vb;
                let result = w
                    .build_payout(
                        &address,
                        amount_sat.saturating_add(payment_fee_sat(rate)),
                        Some(rate),
                    )
                    .await
                    .map(persisted_tx)
                    .map_err(slice_error);
                Some(Input::SliceBuilt { n, result })
            }
            Action::SendSlice { n, tx } => {
                let w = self.wallet.clone()?;
                let _one = self.refunding.lock().await;
                let result = w
                    .broadcast_signed(&signed_tx(tx))
                    .await
                    .map(|_| ())
                    .map_err(slice_error);
                Some(Input::SliceSent { n, result })
            }
            Action::Send(notice) => {
                let to = self.get(id)?.counterparty.parse::<NodeId>().ok()?;
                let seq = notice.body().seq;
                match self
                    .net
                    .send_lease(&to, LeaseRequest::Notice(notice.to_bytes()))
                    .await
                {
                    Ok(LeaseResponse::Ack) => {
                        debug!(lease = %id, seq, "notice acknowledged");
                        Some(Input::Acked { seq })
                    }
                    Ok(other) => {
                        debug!(lease = %id, ?other, "notice not acknowledged");
                        None
                    }
                    Err(e) => {
                        debug!(lease = %id, error = %e, "notice not delivered; sent again later");
                        None
                    }
                }
            }
            Action::PublishReceipt(r) => {
                self.record_receipt(r).await;
                None
            }
            Action::Alert(a) => {
                warn!(alert = %a, "lease alert");
                self.events
                    .publish(crate::events::Event::Alert { alert: a });
                None
            }
        }
    }

    /// The wallet's view of a lease's address, as the machine's input.
    fn payments_of(&self, id: &str) -> Option<Input> {
        let w = self.wallet.as_ref()?;
        let inv = w.invoice(id)?;
        Some(Input::Payments {
            payments: inv
                .payments
                .iter()
                .map(|p| PaymentOut {
                    txid: p.txid.clone(),
                    vout: p.vout,
                    amount_sat: p.amount_sat,
                    height: p.height,
                    rbf: p.rbf,
                })
                .collect(),
            tip: w.tip_height(),
        })
    }

    /// Buyer: payments of a lease the wallet no longer holds because a fee bump replaced them (also one made
    /// before a restart, whose event was lost): the lease follows the replacement.
    fn follow_replacements(self: &Arc<Self>, id: &str) {
        let Some(w) = self.wallet.as_ref() else {
            return;
        };
        let Some(l) = self.get(id) else {
            return;
        };
        let known: Vec<String> = l
            .sent
            .iter()
            .flat_map(|p| p.txids())
            .map(|t| t.to_string())
            .collect();
        for p in &l.sent {
            let old = p.txid.clone();
            if let Some(new) = w.replacement_of(&old) {
                if !known.contains(&new) {
                    self.drive(id, Input::Replaced { old, new });
                }
            }
        }
    }

    /// Buyer: the wallet's view of this node's payments for a lease, as the machine's input.
    fn confirmations_of(&self, id: &str) -> Option<Input> {
        let w = self.wallet.as_ref()?;
        let l = self.get(id).filter(|l| l.id == id)?;
        let txs = l
            .sent
            .iter()
            .flat_map(|p| p.txids())
            .map(|t| {
                let h = match w.tx_status(t) {
                    xov_wallet::TxStatus::Confirmed { height } => Some(height),
                    _ => None,
                };
                (t.to_string(), h)
            })
            .collect();
        Some(Input::Confirmations {
            txs,
            tip: w.tip_height(),
        })
    }

    /// Live buyer leases this node paid something for: their payments' confirmations matter.
    fn paying_buyer_ids(&self) -> Vec<String> {
        self.lock()
            .values()
            .filter(|l| l.role == Role::Buyer && !l.state.is_terminal() && !l.sent.is_empty())
            .map(|l| l.id.clone())
            .collect()
    }

    /// Feeds every live buyer lease the wallet's view of its payments.
    fn feed_confirmations(self: &Arc<Self>) {
        for id in self.paying_buyer_ids() {
            self.follow_replacements(&id);
            if let Some(i) = self.confirmations_of(&id) {
                self.drive(&id, i);
            }
        }
    }

    /// Buyer: a payment of this node's was replaced by a fee bump; the lease that holds it follows.
    pub fn replaced(self: &Arc<Self>, old: &str, new: &str) {
        let ids: Vec<String> = self
            .lock()
            .values()
            .filter(|l| l.role == Role::Buyer && l.sent.iter().any(|p| p.txid == old))
            .map(|l| l.id.clone())
            .collect();
        for id in ids {
            self.drive(
                &id,
                Input::Replaced {
                    old: old.to_string(),
                    new: new.to_string(),
                },
            );
        }
    }

    fn provider_ids(&self, all: bool) -> Vec<String> {
        self.lock()
            .values()
            .filter(|l| l.role == Role::Provider && (all || machine::wants_ticks(l)))
            .map(|l| l.id.clone())
            .collect()
    }

    /// Starts the engine's tasks: incoming requests, wallet events, metering; and resumes interrupted work.
    pub fn spawn(self: &Arc<Self>, mut incoming: mpsc::Receiver<IncomingLease>) {
        let me = self.clone();
        tokio::spawn(async move {
            while let Some(req) = incoming.recv().await {
                let e = me.clone();
                tokio::spawn(async move {
                    let resp = e.on_request(req.from, req.request).await;
                    let _ = e.net.reply_lease(req.token, resp).await;
                });
            }
        });
        if let Some(w) = self.wallet.clone() {
            let me = self.clone();
            let mut events = w.subscribe();
            tokio::spawn(async move {
                loop {
                    let event = events.recv().await;
                    if let Ok(e) = &event {
                        debug!(event = ?e, "wallet event received");
                    }
                    match event {
                        Ok(WalletEvent::TipChanged { .. }) => {
                            for id in me.provider_ids(true) {
                                if let Some(i) = me.payments_of(&id) {
                                    me.drive(&id, i);
                                }
                            }
                            me.feed_confirmations();
                        }
                        Ok(
                            WalletEvent::PaymentSeen { invoice, .. }
                            | WalletEvent::PaymentConfirmed { invoice, .. }
                            | WalletEvent::PaymentReorged { invoice, .. }
                            | WalletEvent::InvoiceUpdated { invoice, .. },
                        ) => {
                            if let Some(i) = me.payments_of(&invoice) {
                                me.drive(&invoice, i);
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            warn!(
                                missed = n,
                                "lease engine fell behind wallet events; re-reading invoices"
                            );
                            for id in me.provider_ids(true) {
                                if let Some(i) = me.payments_of(&id) {
                                    me.drive(&id, i);
                                }
                            }
                            me.feed_confirmations();
                        }
                        Err(_) => break,
                    }
                }
            });
        }
        let me = self.clone();
        let mut inbound = self.net.inbound();
        tokio::spawn(async move {
            loop {
                match inbound.recv().await {
                    Ok(xov_protocol::AnyMessage::Bid(b)) => me.on_bid(b).await,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        warn!(missed = n, "bids arrived faster than they were answered")
                    }
                    Err(_) => break,
                }
            }
        });
        let me = self.clone();
        tokio::spawn(async move {
            me.resume().await;
            let mut tick = tokio::time::interval(me.policy.tick);
            loop {
                tick.tick().await;
                let ids: Vec<String> = me
                    .lock()
                    .values()
                    .filter(|l| machine::wants_ticks(l))
                    .map(|l| l.id.clone())
                    .collect();
                for id in ids {
                    let unsure = me
                        .unsure
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&id);
                    if unsure && !me.drive(&id, me.restarted(&id)) {
                        me.mark_unsure(&id);
                        continue;
                    }
                    me.drive(&id, Input::Tick);
                }
            }
        });
    }

    /// After a start: the wallet's view of every lease, and refunds signed before a crash sent again.
    /// `Restarted` with the wallet's current view of the lease's address.
    fn restarted(&self, id: &str) -> Input {
        let view = match self.payments_of(id) {
            Some(Input::Payments { payments, tip }) => Some((payments, tip)),
            _ => None,
        };
        Input::Restarted { view }
    }

    fn mark_unsure(&self, id: &str) {
        self.unsure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string());
    }

    /// After a start: signed refunds sent again first (so their coins are spent before any new refund is
    /// built), then every provider lease hears `Restarted` with the wallet's current view.
    async fn resume(self: &Arc<Self>) {
        if let Some(w) = self.wallet.clone() {
            for (id, tx) in self.signed_refunds() {
                if matches!(
                    w.tx_status(&tx.txid),
                    xov_wallet::TxStatus::Confirmed { .. }
                ) {
                    continue;
                }
                let _one = self.refunding.lock().await;
                match w.broadcast_signed(&signed_tx(tx.clone())).await {
                    Ok(_) => {
                        info!(lease = %id, txid = %tx.txid, "signed refund broadcast after a restart")
                    }
                    Err(e) => {
                        warn!(lease = %id, txid = %tx.txid, error = %e, "signed refund not broadcast; tried again")
                    }
                }
            }
        }
        for id in self.provider_ids(true) {
            if !self.drive(&id, self.restarted(&id)) {
                self.mark_unsure(&id);
            }
        }
        // Buyers: where their payments stand now (a slice waits for the last one to confirm and count).
        self.feed_confirmations();
    }

    fn signed_refunds(&self) -> Vec<(String, RefundTx)> {
        self.lock()
            .values()
            .flat_map(|l| {
                l.refunds
                    .iter()
                    .filter(|r| !r.written_off)
                    .filter_map(|r| r.tx.clone().map(|t| (l.id.clone(), t)))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    // ---------------------------------------------------------------- provider

    async fn on_request(
        self: &Arc<Self>,
        from: Option<NodeId>,
        req: LeaseRequest,
    ) -> LeaseResponse {
        match req {
            LeaseRequest::BidAnswer { bid_id, offers } => {
                // The answer's offers must pass their pool's charter, allow-list included, as gossip's do.
                let charter_of = |p: &xov_protocol::PoolId| {
                    self.market
                        .read()
                        .ok()
                        .and_then(|m| m.charter(p).map(|c| c.body().clone()))
                };
                match self
                    .bids
                    .answer(from, bid_id, &offers, self.chain, charter_of, unix_now())
                {
                    Ok(_) => LeaseResponse::Ack,
                    Err(why) => LeaseResponse::BidNotTaken(why.to_string()),
                }
            }
            LeaseRequest::Order(bytes) => match self.admit(from, &bytes).await {
                Ok(inv) => LeaseResponse::Invoice(inv.to_bytes()),
                Err(why) => LeaseResponse::Refused(why),
            },
            LeaseRequest::Notice(bytes) => {
                if self.on_notice(from, &bytes) {
                    LeaseResponse::Ack
                } else {
                    LeaseResponse::NotStored
                }
            }
        }
    }

    /// Admission: check the order against our offer, trust limits and capacity, then invoice it.
    async fn admit(
        self: &Arc<Self>,
        from: Option<NodeId>,
        bytes: &[u8],
    ) -> Result<Signed<Invoice>, OrderRefusal> {
        let now = unix_now();
        let order = Signed::<Order>::from_bytes(bytes).map_err(|e| OrderRefusal::Malformed {
            detail: e.to_string(),
        })?;
        validate_order(&order, now).map_err(|e| match e {
            xov_protocol::ValidationError::BadSshKey(k) => OrderRefusal::BadSshKey {
                detail: k.to_string(),
            },
            other => OrderRefusal::Malformed {
                detail: other.to_string(),
            },
        })?;
        let o = order.body().clone();
        machine::check_order_parties(&o, from, &self.me, self.chain)?;
        let lease_id = order.id().to_string();
        if let Some(existing) = self.get(&lease_id) {
            // A retried order gets the same invoice: never two leases for one order.
            return existing
                .invoice_hex
                .and_then(|h| hex::decode(h).ok())
                .and_then(|b| Signed::<Invoice>::from_stored_bytes(&b).ok())
                .ok_or(OrderRefusal::AlreadyEnded {
                    state: existing.state,
                });
        }
        let (Some(wallet), Some(_)) = (self.wallet.clone(), self.machines.as_ref()) else {
            return Err(OrderRefusal::NotProviding);
        };
        let offer: Offer = self
            .market
            .read()
            .map_err(|_| OrderRefusal::ProviderError {
                detail: "market lock poisoned".into(),
            })?
            .own_offer(o.offer_id, now)
            .map(|s| s.body().clone())
            .ok_or(OrderRefusal::OfferGone {
                offer_id: o.offer_id,
            })?;
        machine::check_order(&o, &offer)?;
        if let Some(a) = &o.refund_address {
            xov_wallet::check_address(a, wallet.network()).map_err(|e| {
                OrderRefusal::BadRefundAddress {
                    detail: e.to_string(),
                }
            })?;
        }
        let amount = xov_protocol::price_for_hours(offer.price_sats_per_hour, o.hours);
        let (report, pool_rate) = {
            let m = self
                .market
                .read()
                .map_err(|_| OrderRefusal::ProviderError {
                    detail: "market lock poisoned".into(),
                })?;
            (
                m.evidence().report(&o.buyer, now),
                m.pool_rate(&o.pool, now),
            )
        };
        // One admission at a time: the checks below and the insert cannot interleave with another order's,
        // while the lease map itself stays free for metering during the wallet's work.
        let _one = self.admission.lock().await;
        if let Some(existing) = self.get(&lease_id).filter(|l| l.id == lease_id) {
            // The same order arrived twice at once: the first one made the lease; both get its invoice.
            return existing
                .invoice_hex
                .and_then(|h| hex::decode(h).ok())
                .and_then(|b| Signed::<Invoice>::from_stored_bytes(&b).ok())
                .ok_or(OrderRefusal::AlreadyEnded {
                    state: existing.state,
                });
        }
        {
            let g = self.lock();
            let buyer = o.buyer.to_string();
            let (running, rate) = buyer_load(&g, &buyer);
            let (_, own_rate) = provider_load(&g);
            xov_protocol::admit(
                &self.policy.admission,
                &report,
                running,
                rate,
                offer.price_sats_per_hour,
                pool_rate + own_rate,
            )
            .map_err(OrderRefusal::Admission)?;
            let open = unpaid(&g, &buyer);
            if open >= self.policy.max_unpaid_per_buyer {
                return Err(OrderRefusal::TooManyUnpaid {
                    open,
                    max: self.policy.max_unpaid_per_buyer,
                });
            }
            let leased = busy(&g, &offer);
            if leased >= offer.capacity as usize {
                return Err(OrderRefusal::FullyBooked {
                    offer_id: o.offer_id,
                    leased: leased as u32,
                    capacity: offer.capacity,
                });
            }
        }
        let expires_at = now + self.policy.invoice_ttl_secs;
        let payment = xov_wallet::PaymentPolicy {
            min_confirmations: self.policy.terms.min_confirmations,
            zero_conf_max_sat: self.policy.terms.zero_conf_max_sat,
        };
        let inv = {
            let (w, id) = (wallet.clone(), lease_id.clone());
            tokio::task::spawn_blocking(move || match w.invoice(&id) {
                Some(existing) => Ok(existing),
                None => w.create_invoice(&id, amount, expires_at, payment),
            })
            .await
            .map_err(|_| OrderRefusal::ProviderError {
                detail: "invoice task failed".into(),
            })?
            .map_err(|e| OrderRefusal::ProviderError {
                detail: format!("cannot invoice: {e}"),
            })?
        };
        let signed = Signed::sign(
            Invoice {
                provider: self.me,
                buyer: o.buyer,
                lease_id: order.id(),
                address: inv.address.clone(),
                amount_sats: amount,
                price_sats_per_hour: offer.price_sats_per_hour,
                hours: o.hours,
                min_confirmations: self.policy.terms.min_confirmations,
                created_at: now,
                expires_at: inv.expires_at,
            },
            &self.key,
        );
        let mut rec = new_record(
            Role::Provider,
            &lease_id,
            &o.buyer.to_string(),
            &o,
            &offer,
            now,
        );
        rec.order_hex = hex::encode(bytes);
        rec.invoice_hex = Some(hex::encode(signed.to_bytes()));
        rec.pay_address = Some(inv.address.clone());
        rec.pay_uri = Some(inv.uri());
        rec.amount_sat = amount;
        rec.invoice_expires_at = inv.expires_at;
        rec.set_state(LeaseState::Ordered, now, "order received");
        let _ = rec.apply(
            xov_protocol::LeaseEvent::InvoiceIssued,
            now,
            format!("invoiced {amount} sat to {}", inv.address),
        );
        self.insert_new(rec)
            .map_err(|e| OrderRefusal::ProviderError {
                detail: format!("provider storage error: {e}"),
            })?;
        info!(lease = %lease_id, amount, "order admitted, invoice issued");
        Ok(signed)
    }

    /// Answers a gossiped bid with this provider's offers (listed or unlisted) that meet it and have a free
    /// machine, sent straight to the buyer. Admission still decides when the buyer orders.
    async fn on_bid(&self, bid: Signed<Bid>) {
        let b = bid.body();
        let now = unix_now();
        if self.machines.is_none() || self.wallet.is_none() || b.buyer == self.me {
            return;
        }
        {
            let mut seen = self.answered.lock().unwrap_or_else(|p| p.into_inner());
            seen.retain(|_, expires| *expires > now);
            if seen.insert((b.buyer, b.bid_id), b.expires_at).is_some() {
                return;
            }
        }
        let offers: Vec<Vec<u8>> = {
            let Ok(m) = self.market.read() else { return };
            let g = self.lock();
            m.own_offers_for(&b.pool, &b.demand, now)
                .into_iter()
                .filter(|o| busy(&g, o.body()) < o.body().capacity as usize)
                .filter(|o| {
                    let secs = b.hours as u64 * 3600;
                    secs >= o.body().min_lease_secs as u64 && secs <= o.body().max_lease_secs as u64
                })
                .map(|o| o.to_bytes())
                .collect()
        };
        if offers.is_empty() {
            return;
        }
        let n = offers.len();
        match self
            .net
            .send_lease(
                &b.buyer,
                LeaseRequest::BidAnswer {
                    bid_id: b.bid_id,
                    offers,
                },
            )
            .await
        {
            Ok(LeaseResponse::BidNotTaken(why)) => {
                info!(buyer = %b.buyer, bid = b.bid_id, %why, "bid answer not taken")
            }
            Ok(_) => info!(buyer = %b.buyer, bid = b.bid_id, offers = n, "bid answered"),
            Err(e) => warn!(buyer = %b.buyer, error = %e, "cannot answer bid"),
        }
    }

    /// A signed notice from a lease's other party: checked here (signature, sender), decided by the machine.
    /// False only when it could not be stored (the sender keeps it and sends it again); a notice dropped on
    /// purpose (unknown kind, forged, not ours) is acknowledged so it is not sent again.
    fn on_notice(self: &Arc<Self>, from: Option<NodeId>, bytes: &[u8]) -> bool {
        let n = match Signed::<LeaseNotice>::from_bytes(bytes) {
            Ok(n) => n,
            Err(e) => {
                // A newer kind of notice, or garbage: dropped quietly either way.
                debug!(error = %e, "lease notice not understood; dropped");
                return true;
            }
        };
        if Some(n.body().from) != from {
            return true;
        }
        if let Err(e) = xov_protocol::validate::validate_notice(&n, unix_now()) {
            debug!(error = %e, "lease notice refused");
            return true;
        }
        let b = n.body().clone();
        let id = b.lease_id.to_string();
        let Some(l) = self.get(&id).filter(|l| l.id == id) else {
            return true;
        };
        if l.counterparty != b.from.to_string() {
            return true;
        }
        let seq = b.seq;
        let stored = self.drive(&id, Input::Notice(b));
        debug!(lease = %id, seq, stored, "notice received");
        stored
    }

    /// Takes a dual-signed receipt into the node's evidence and gossips it into the lease's pool, where it
    /// builds both parties' trust.
    async fn record_receipt(&self, r: SignedReceipt) {
        let pool = r.receipt().pool;
        let added = match self.market.write() {
            Ok(mut m) => m
                .evidence_mut()
                .accept_receipt(r.clone(), unix_now())
                .map_err(|e| e.to_string()),
            Err(_) => Err("market lock poisoned".to_string()),
        };
        match added {
            Ok(_) => {
                if let Err(e) = self.net.publish_bytes(&pool, r.to_bytes()).await {
                    warn!(error = %e, "cannot gossip receipt");
                }
            }
            Err(e) => warn!(error = %e, "receipt not recorded"),
        }
    }

    /// Orders a machine: picks the cheapest matching offers and asks their providers directly, one after
    /// another, until one invoices. Pays from the wallet when asked.
    pub async fn order(self: &Arc<Self>, req: OrderRequest) -> Result<LeaseRecord, OrderError> {
        let now = unix_now();
        let mut req = req;
        // What this node can check, it checks before talking to anyone.
        let slice_secs = req.slice_hours.map(machine::slice_secs_of).transpose()?;
        if req.budget_sat == Some(0) {
            return Err(BudgetError::ZeroBudget.into());
        }
        if req.budget_sat.is_some() && self.wallet.is_none() {
            return Err(OrderError::NoWallet);
        }
        let key = req.ssh_public_key.trim().to_string();
        xov_protocol::validate::check_ssh_public_key(&key)
            .map_err(|e| OrderError::BadSshKey(e.to_string()))?;
        req.ssh_public_key = key;
        req.ports = check_ports(&req.ports)?;
        match (&req.refund_address, &self.wallet) {
            (Some(a), Some(w)) => xov_wallet::check_address(a, w.network())
                .map_err(|e| OrderError::BadRefundAddress(e.to_string()))?,
            // Refunds go to this node's own wallet unless the buyer names an address.
            (None, Some(w)) => req.refund_address = Some(w.new_address()?),
            // No wallet here: the address must still be one of this node's bitcoin network.
            (Some(a), None) => {
                if let Some(net) = self.chain.name().and_then(|n| n.parse().ok()) {
                    xov_wallet::check_address(a, net)
                        .map_err(|e| OrderError::BadRefundAddress(e.to_string()))?;
                }
            }
            (None, None) => {}
        }
        let picked = req.offer.as_deref().map(parse_offer_key).transpose()?;
        let candidates = {
            let m = self
                .market
                .read()
                .map_err(|_| OrderError::Internal("market lock poisoned"))?;
            let pool = match &req.pool {
                Some(p) => Some(
                    m.resolve_pool(Some(p))
                        .map_err(|e| OrderError::NoMatch(vec![e.to_string()]))?,
                ),
                None => None,
            };
            let gpu = match req.gpu.as_deref() {
                None => xov_protocol::GpuWanted::DontCare,
                Some("none") => xov_protocol::GpuWanted::None,
                Some("any") => xov_protocol::GpuWanted::Some {
                    model: None,
                    min_count: 1,
                },
                Some(g) => xov_protocol::GpuWanted::Some {
                    model: Some(g.into()),
                    min_count: 1,
                },
            };
            let q = xov_protocol::OfferQuery {
                pool,
                demand: xov_protocol::Demand {
                    min_vcpus: req.vcpus,
                    min_ram_mib: req.ram_mib,
                    min_disk_gib: req.disk_gib,
                    gpu,
                    image: Some(req.image.clone()),
                    max_price_sats_per_hour: req.max_price,
                    ports: req.ports.clone(),
                    ..Default::default()
                },
                limit: 0,
            };
            // The book answers cheapest first; the ranking below reorders equal prices by trust and latency.
            let c: Vec<Signed<Offer>> = m
                .query(&q, now)
                .into_iter()
                .filter(|o| o.body().provider != self.me)
                .filter(|o| picked.as_ref().is_none_or(|k| OfferKey::of(o.body()) == *k))
                .take(MAX_CANDIDATES * 4)
                .cloned()
                .collect();
            let why = match (&picked, c.is_empty()) {
                (_, false) => Vec::new(),
                (Some(k), true) => vec![match m.book().get(k) {
                    Some(o) if o.body().expires_at > now => format!(
                        "offer {} of {} no longer meets the order (renewed with other terms?); `xov offers list` shows it as it is now",
                        k.offer_id, k.provider
                    ),
                    _ => format!(
                        "offer {} of {} is no longer in the book (withdrawn or expired); pick another",
                        k.offer_id, k.provider
                    ),
                }],
                (None, true) => xov_protocol::explain_no_match(m.book(), &q, now),
            };
            (c, why, q)
        };
        let (mut candidates, mut reasons, query) = candidates;
        if candidates.is_empty() && req.bid_wait_secs > 0 && picked.is_none() {
            match self.bid(&req, &query, now).await {
                Ok(answers) if answers.is_empty() => reasons.push(format!(
                    "no provider answered a bid within {} s",
                    req.bid_wait_secs
                )),
                Ok(answers) => candidates = answers,
                Err(OrderError::Bid(why)) => reasons.push(why),
                Err(e) => return Err(e),
            }
        }
        if candidates.is_empty() {
            return Err(OrderError::NoMatch(reasons));
        }
        // The hours asked must fit an offer's lease lengths: providers whose offers they do not fit are not
        // asked (each would refuse). A budget is planned against each offer's bounds below instead.
        if req.budget_sat.is_none() {
            let secs = u64::from(req.hours) * 3600;
            let fits = |o: &Offer| {
                (u64::from(o.min_lease_secs)..=u64::from(o.max_lease_secs)).contains(&secs)
            };
            if !candidates.iter().any(|o| fits(o.body())) {
                return Err(OrderError::NoMatch(vec![hours_unfit(
                    req.hours,
                    candidates.iter().map(|o| o.body()),
                )]));
            }
            candidates.retain(|o| fits(o.body()));
        }
        // Trust: the providers' scores from receipts and bonds this node holds.
        let scores: HashMap<NodeId, u64> = match self.market.read() {
            Ok(m) => candidates
                .iter()
                .map(|o| o.body().provider)
                .map(|p| (p, m.evidence().report(&p, now).score))
                .collect(),
            Err(_) => HashMap::new(),
        };
        crate::market::ranking::rank(
            &mut candidates,
            |p| scores.get(p).copied().unwrap_or(0),
            |p| self.net.latency(p),
        );
        candidates.truncate(MAX_CANDIDATES);
        if (req.pay || req.budget_sat.is_some()) && self.wallet.is_none() {
            return Err(OrderError::NoWallet);
        }
        let mut refusals = Vec::new();
        // Offers' bodies: a retry may order a version known only from the provider's refusal.
        let mut queue: std::collections::VecDeque<(Offer, bool)> = candidates
            .into_iter()
            .map(|o| (o.body().clone(), true))
            .collect();
        while let Some((offer, may_retry)) = queue.pop_front() {
            let o = &offer;
            // The book and bid answers hold offers of this node's chain only; never order across networks.
            if o.chain != self.chain {
                refusals.push(format!(
                    "{}…: its offer is for {}, this node is on {}",
                    &o.provider.to_string()[..8],
                    o.chain,
                    self.chain
                ));
                continue;
            }
            let short = o.provider.to_string()[..8].to_string();
            // A budget is planned against each offer's lease bounds: the slice must fit them.
            let (budget, hours) = match req.budget_sat {
                Some(total) => match machine::plan_budget(total, slice_secs, req.hours, o) {
                    Ok((b, h)) => (Some(b), h),
                    Err(e) => {
                        refusals.push(format!("{short}…: {e}"));
                        continue;
                    }
                },
                None => (None, req.hours),
            };
            let order = Signed::sign(
                Order {
                    buyer: self.me,
                    provider: o.provider,
                    pool: o.pool,
                    offer_id: o.offer_id,
                    offer_sequence: o.sequence,
                    image: req.image.clone(),
                    hours,
                    ssh_public_key: req.ssh_public_key.clone(),
                    refund_address: req.refund_address.clone(),
                    created_at: now,
                    nonce: now ^ o.offer_id,
                    chain: self.chain,
                    extra_ports: req.ports.clone(),
                },
                &self.key,
            );
            let resp = match self
                .net
                .send_lease(&o.provider, LeaseRequest::Order(order.to_bytes()))
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    refusals.push(format!("{short}…: {e}"));
                    continue;
                }
            };
            let inv = match resp {
                LeaseResponse::Invoice(bytes) => match Signed::<Invoice>::from_bytes(&bytes) {
                    Ok(i) => (i, bytes),
                    Err(e) => {
                        refusals.push(format!("{short}…: unreadable invoice ({e})"));
                        continue;
                    }
                },
                LeaseResponse::Refused(why) => {
                    // The offer was renewed while the order travelled: try once more with the newer version,
                    // if it still matches what was asked (`machine::renewed_offer`).
                    if may_retry {
                        let in_book =
                            self.market.read().ok().and_then(|m| {
                                m.book().get(&OfferKey::of(o)).map(|n| n.body().clone())
                            });
                        if let Some(n) =
                            machine::renewed_offer(o, &why, in_book.as_ref(), req.max_price)
                        {
                            queue.push_front((n, false));
                            continue;
                        }
                    }
                    refusals.push(format!("{short}…: {why}"));
                    continue;
                }
                LeaseResponse::Ack | LeaseResponse::NotStored | LeaseResponse::BidNotTaken(_) => {
                    refusals.push(format!("{short}…: no invoice"));
                    continue;
                }
            };
            let (invoice, bytes) = inv;
            let i = invoice.body();
            let expected = xov_protocol::price_for_hours(o.price_sats_per_hour, hours);
            if validate_invoice(&invoice, now).is_err()
                || i.provider != o.provider
                || i.buyer != self.me
                || i.lease_id != order.id()
                || i.amount_sats != expected
            {
                refusals.push(format!(
                    "{short}…: invoice does not match the order (amount {} vs {expected})",
                    i.amount_sats
                ));
                continue;
            }
            // Never pay an address of another bitcoin network (a provider on signet, say, for a regtest buyer).
            if let Some(w) = &self.wallet {
                if let Err(e) = xov_wallet::check_address(&i.address, w.network()) {
                    refusals.push(format!(
                        "{short}…: its invoice cannot be paid from here: {e}"
                    ));
                    continue;
                }
            }
            let uri = xov_wallet::bip21::uri(
                &i.address,
                Some(i.amount_sats),
                Some(&format!("xov lease {}", &order.id().to_string()[..12])),
            );
            let lease_id = order.id().to_string();
            let mut rec = new_record(
                Role::Buyer,
                &lease_id,
                &o.provider.to_string(),
                order.body(),
                o,
                now,
            );
            rec.state = LeaseState::Invoiced;
            rec.order_hex = hex::encode(order.to_bytes());
            rec.invoice_hex = Some(hex::encode(&bytes));
            rec.pay_address = Some(i.address.clone());
            rec.pay_uri = Some(uri.clone());
            rec.amount_sat = i.amount_sats;
            rec.invoice_expires_at = i.expires_at;
            rec.invoice_min_confirmations = i.min_confirmations;
            rec.budget = budget;
            rec.set_state(
                LeaseState::Invoiced,
                now,
                format!("invoice for {} sat from {short}…", i.amount_sats),
            );
            if let Some(b) = budget {
                rec.push_step(
                    now,
                    LeaseState::Invoiced,
                    format!(
                        "paying in slices of {} sat ({} s) up to a budget of {} sat",
                        b.slice_sat, b.slice_secs, b.total_sat
                    ),
                );
            }
            self.insert_new(rec)?;
            if budget.is_some() {
                self.pay_first_slice(&lease_id).await;
            } else if req.pay {
                let w = self.wallet.clone().ok_or(OrderError::NoWallet)?;
                match w.pay(&uri, None).await {
                    Ok(txid) => {
                        self.drive(
                            &lease_id,
                            Input::Paid(SentPayment::new(txid, i.amount_sats, unix_now())),
                        );
                    }
                    Err(error) => return Err(OrderError::PayFailed { uri, error }),
                }
            }
            return self
                .get(&lease_id)
                .ok_or(OrderError::Internal("lease vanished"));
        }
        Err(OrderError::AllRefused(refusals))
    }

    /// Buyer: decides the first slice of a budgeted order (the machine persists its intent and asks for it to
    /// be built and sent) and waits, up to a minute, for it to be broadcast or to fail, so the order answers
    /// with the payment made. The slice is carried on by the machine either way.
    async fn pay_first_slice(self: &Arc<Self>, id: &str) {
        let mut events = self.events.subscribe();
        let settled = |l: &LeaseRecord| {
            l.slices
                .first()
                .is_some_and(|s| s.broadcast || s.abandoned || l.slice_retry_at.is_some())
        };
        if !self.drive(id, Input::Tick) {
            return;
        }
        let deadline = tokio::time::Instant::now() + FIRST_SLICE_WAIT;
        while !self.get(id).is_some_and(|l| settled(&l)) {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(_)) | Err(_) => break,
            }
        }
    }

    /// Buyer: gossips the demand as a bid into the pool asked for (or every joined pool) and collects the
    /// offers providers answer with directly.
    async fn bid(
        &self,
        req: &OrderRequest,
        q: &xov_protocol::OfferQuery,
        now: u64,
    ) -> Result<Vec<Signed<Offer>>, OrderError> {
        if q.demand.max_price_sats_per_hour.is_none() {
            return Err(OrderError::Bid(
                "a bid needs a price limit: add --max-price".into(),
            ));
        }
        let pools: Vec<PoolId> = match q.pool {
            Some(p) => vec![p],
            None => self
                .market
                .read()
                .map(|m| m.joined().iter().copied().collect())
                .unwrap_or_default(),
        };
        let mut ids = Vec::new();
        for pool in pools {
            let body = Bid {
                buyer: self.me,
                pool,
                bid_id: rand_core::RngCore::next_u64(&mut rand_core::OsRng),
                sequence: now,
                created_at: now,
                expires_at: now + req.bid_wait_secs + 60,
                demand: q.demand.clone(),
                hours: req.hours,
                count: 1,
            };
            self.bids.open(body.clone());
            ids.push(body.bid_id);
            let signed = Signed::sign(body, &self.key);
            if let Err(e) = self.net.publish(&pool, &signed).await {
                warn!(error = %e, "cannot gossip bid");
            }
        }
        info!(
            bids = ids.len(),
            wait = req.bid_wait_secs,
            "no offer in the book matched; bid gossiped"
        );
        let answers = self
            .bids
            .wait(&ids, Duration::from_secs(req.bid_wait_secs), BID_SETTLE)
            .await;
        for id in ids {
            self.bids.close(id);
        }
        Ok(answers)
    }

    /// Buyer: pays more to the lease's address (a top-up), `hours` at the lease's price or exactly `sats`.
    pub async fn extend(
        self: &Arc<Self>,
        id: &str,
        hours: u32,
        sats: Option<u64>,
    ) -> Result<String, OrderError> {
        let l = self
            .get(id)
            .ok_or_else(|| OrderError::NoSuchLease(id.to_string()))?;
        let w = self.wallet.clone().ok_or(OrderError::NoWallet)?;
        if l.role != Role::Buyer || l.state.is_terminal() || l.cancelled {
            return Err(OrderError::NotLive {
                id: l.id,
                state: l.state,
                what: "extended",
            });
        }
        let Some(addr) = l.pay_address.clone() else {
            return Err(OrderError::Internal("lease has no payment address"));
        };
        let amount =
            sats.unwrap_or_else(|| xov_protocol::price_for_hours(l.price_sats_per_hour, hours));
        let txid = w.send(&addr, amount, None).await?;
        self.drive(
            &l.id,
            Input::Paid(SentPayment::new(txid.clone(), amount, unix_now())),
        );
        Ok(txid)
    }

    /// Buyer: asks the provider to end the lease (the unused part is refunded to the refund address). The
    /// request is kept and sent again until the provider acknowledges it.
    pub async fn cancel(self: &Arc<Self>, id: &str) -> Result<(), OrderError> {
        let l = self
            .get(id)
            .ok_or_else(|| OrderError::NoSuchLease(id.to_string()))?;
        if l.role != Role::Buyer || l.state.is_terminal() {
            return Err(OrderError::NotLive {
                id: l.id,
                state: l.state,
                what: "cancelled",
            });
        }
        self.drive(&l.id, Input::Cancel);
        Ok(())
    }
}

/// The ports a buyer asks for, as an order carries them: ascending, each once; none 0, at most
/// [`xov_protocol::offer::MAX_EXTRA_PORTS`]. SSH's 22 is always open and is not asked for.
pub fn check_ports(ports: &[u16]) -> Result<Vec<u16>, OrderError> {
    if ports.contains(&0) {
        return Err(OrderError::BadPorts(
            "0 is not a port; give TCP ports from 1 to 65535 (--port 443)".into(),
        ));
    }
    let p: Vec<u16> = xov_protocol::offer::sorted_ports(ports)
        .into_iter()
        .filter(|p| *p != 22)
        .collect();
    if p.len() > xov_protocol::offer::MAX_EXTRA_PORTS {
        return Err(OrderError::BadPorts(format!(
            "{} ports asked for; a lease opens at most {} besides SSH",
            p.len(),
            xov_protocol::offer::MAX_EXTRA_PORTS
        )));
    }
    Ok(p)
}

/// A new lease record for `role`, from the order and the offer it names.
fn new_record(
    role: Role,
    id: &str,
    counterparty: &str,
    o: &Order,
    offer: &Offer,
    now: u64,
) -> LeaseRecord {
    LeaseRecord {
        id: id.to_string(),
        role,
        state: LeaseState::Ordered,
        counterparty: counterparty.to_string(),
        pool: o.pool.to_string(),
        offer_id: o.offer_id,
        image: o.image.clone(),
        hours: o.hours,
        price_sats_per_hour: offer.price_sats_per_hour,
        min_lease_secs: offer.min_lease_secs,
        vcpus: offer.instance.vcpus,
        ram_mib: offer.instance.ram_mib,
        disk_gib: offer.instance.disk_gib,
        ssh_public_key: o.ssh_public_key.clone(),
        refund_address: o.refund_address.clone(),
        extra_ports: o.extra_ports.clone(),
        order_hex: String::new(),
        invoice_hex: None,
        pay_address: None,
        pay_uri: None,
        amount_sat: 0,
        paid_sat: 0,
        started_at: None,
        runs_until: None,
        instance: None,
        refunded_sat: 0,
        history: Vec::new(),
        admitted_at: now,
        engine: super::record::ENGINE,
        ..LeaseRecord::default()
    }
}

#[cfg(test)]
mod tests {
    use super::payment_fee_sat;

    /// What the lease engine does with a cloud's error: retry what may pass, report what the operator must
    /// change (an untrusted certificate, a cloud missing from clouds.yaml) instead of retrying it forever.
    #[test]
    fn cloud_errors_are_sorted_by_what_helps() {
        use super::{cloud_error, CloudError};
        use xov_provisioner::ProvisionError as P;
        for (name, e, config) in [
            (
                "untrusted certificate",
                P::Tls {
                    service: "identity",
                    url: "https://keystone.example".into(),
                    detail: "unknown issuer".into(),
                },
                true,
            ),
            (
                "bad CA file",
                P::CaFile {
                    path: "/etc/ca.pem".into(),
                    detail: "no certificate".into(),
                },
                true,
            ),
            ("config", P::Config("x".into()), true),
            (
                "cloud down",
                P::Unavailable {
                    service: "compute",
                    attempts: 3,
                    last: "503".into(),
                },
                false,
            ),
        ] {
            let got = cloud_error(e);
            assert_eq!(
                matches!(got, CloudError::Config { .. }),
                config,
                "{name}: {got:?}"
            );
            if !config {
                assert!(
                    matches!(got, CloudError::Transient { .. }),
                    "{name}: {got:?}"
                );
            }
        }
    }

    /// What BDK charges for a one-input payment with change, as measured against regtest (the e2e test
    /// `a_budgeted_order_pays_three_slices_and_stops` checks every slice reaches the address exactly).
    #[test]
    fn the_fee_of_a_typical_payment_is_what_the_wallet_charges() {
        assert_eq!(payment_fee_sat(2), 281);
        assert_eq!(payment_fee_sat(1), 141);
        assert_eq!(payment_fee_sat(10), 1405);
    }
}
