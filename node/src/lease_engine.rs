//! The lease engine: both sides of a lease.
//!
//! Provider: admits orders (capacity, terms), invoices from the wallet, launches on payment, meters, warns,
//! halts, deletes, and signs a receipt. Buyer: orders, pays, and mirrors what the provider reports.
//!
//! Every state change goes through `xov_protocol::LeaseState::apply` and is written to the store before
//! the action it allows (a launch, a stop, a delete) is taken. Actions on machines are idempotent (the
//! provisioner finds servers by their lease tag), so a crash at any point resumes without a second machine.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::mpsc;
use tracing::{info, warn};
use xov_protocol::validate::{validate_invoice, validate_order};
use xov_protocol::{
    Bid, Invoice, Keypair, LeaseEvent, LeaseNotice, LeaseState, MessageId, NodeId, Offer, OfferKey,
    Order, Phase, PoolId, ProviderReceipt, Signed, SignedReceipt,
};
use xov_wallet::{InvoiceStatus, PaymentPolicy, WalletEvent, XovWallet};

use crate::api::unix_now;
use crate::leases::{InstanceInfo, LeaseRecord, Role};
use crate::market::Market;
use crate::network::lease_wire::{LeaseRequest, LeaseResponse};
use crate::network::{IncomingLease, NetworkHandle};
use crate::store::Store;

/// What the engine needs from a cloud; the provisioner crate's backends are adapted to it.
pub trait Machines: Send + Sync + 'static {
    fn launch(&self, spec: LaunchSpec) -> BoxFuture<'_, Result<InstanceInfo, String>>;
    fn stop(&self, lease_id: &str) -> BoxFuture<'_, Result<(), String>>;
    fn start(&self, lease_id: &str) -> BoxFuture<'_, Result<(), String>>;
    fn delete(&self, lease_id: &str) -> BoxFuture<'_, Result<(), String>>;
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What to launch for a lease.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaunchSpec {
    pub lease_id: String,
    pub offer_id: u64,
    pub vcpus: u32,
    pub ram_mib: u32,
    pub disk_gib: u32,
    pub image: String,
    pub ssh_public_key: String,
}

/// The provider's terms for running leases.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeasePolicy {
    pub payment: PaymentPolicy,
    /// How long an invoice may stay unpaid.
    pub invoice_ttl_secs: u64,
    /// The buyer is warned this long before funds run out.
    pub warn_before_secs: u64,
    /// The machine keeps running this long after funds ran out.
    pub grace_secs: u64,
    /// A halted machine is kept (stopped) this long for a late top-up, then deleted.
    pub hold_secs: u64,
    /// How often leases are metered.
    pub tick: Duration,
    /// How much buyers may run here, by trust tier.
    pub admission: xov_protocol::AdmissionPolicy,
}

impl Default for LeasePolicy {
    fn default() -> Self {
        LeasePolicy {
            payment: PaymentPolicy {
                min_confirmations: 1,
                zero_conf_max_sat: 0,
            },
            invoice_ttl_secs: 3600,
            warn_before_secs: 600,
            grace_secs: 300,
            hold_secs: 3600,
            tick: Duration::from_secs(1),
            admission: crate::config::default_admission(),
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
    #[error("{0}")]
    Other(String),
}

/// A receipt both sides sign when a lease ends: the input of the trust work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub lease_id: String,
    pub provider: String,
    pub buyer: String,
    pub started_at: u64,
    pub ended_at: u64,
    pub paid_sat: u64,
    pub refunded_sat: u64,
}

/// The buyer's order request (CLI `xov order`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    pub pool: Option<String>,
    #[serde(default)]
    pub vcpus: u32,
    #[serde(default)]
    pub ram_mib: u32,
    #[serde(default)]
    pub disk_gib: u32,
    pub gpu: Option<String>,
    pub image: String,
    pub max_price: Option<u64>,
    pub hours: u32,
    pub ssh_public_key: String,
    pub refund_address: Option<String>,
    /// Pay the invoice from this node's wallet right away.
    #[serde(default)]
    pub pay: bool,
    /// When no offer in the book matches, gossip a bid and wait this long for providers to answer (0: don't).
    #[serde(default)]
    pub bid_wait_secs: u64,
}

pub struct LeaseEngine {
    key: Keypair,
    me: NodeId,
    market: Arc<RwLock<Market>>,
    store: Store,
    wallet: Option<Arc<XovWallet>>,
    machines: Option<Arc<dyn Machines>>,
    net: NetworkHandle,
    policy: LeasePolicy,
    leases: Mutex<HashMap<String, LeaseRecord>>,
    /// Buyer: open bids and the offers providers answered with.
    bids: crate::bids::BidBoard,
    /// Provider: bids already answered, (buyer, bid id) → expiry, so a bid heard twice is answered once.
    answered: Mutex<HashMap<(NodeId, u64), u64>>,
    /// Every persisted lease change is published here (dashboard, `xov events`, drain-warning hooks).
    events: crate::events::EventBus,
}

/// Sats that start a lease: the price of the offer's shortest lease, at least 1. The machine then runs as
/// long as the confirmed funds last; the invoice amount is what the buyer asked for up front.
fn min_start(l: &LeaseRecord) -> u64 {
    ((l.price_sats_per_hour as u128 * l.min_lease_secs as u128).div_ceil(3600) as u64).max(1)
}

/// Machines of one offer held by live leases: what capacity is measured against.
fn busy(leases: &HashMap<String, LeaseRecord>, offer_id: u64) -> usize {
    leases
        .values()
        .filter(|l| l.role == Role::Provider && l.offer_id == offer_id && !l.state.is_terminal())
        .count()
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
/// After the first answer to a bid, how long to wait for others to compare with.
const BID_SETTLE: Duration = Duration::from_millis(500);

fn hex_id(id: &MessageId) -> String {
    id.to_string()
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
    ) -> Result<Arc<Self>, crate::store::StoreError> {
        let leases = store
            .leases()?
            .into_iter()
            .map(|l| (l.id.clone(), l))
            .collect();
        Ok(Arc::new(LeaseEngine {
            me: key.node_id(),
            key,
            market,
            store,
            wallet,
            machines,
            net,
            policy,
            leases: Mutex::new(leases),
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

    /// Persists, then publishes in memory. The only way records change.
    fn save(&self, l: &LeaseRecord) {
        if let Err(e) = self.store.put_lease(l) {
            warn!(lease = %l.id, error = %e, "cannot persist lease");
        }
        let previous = self.lock().insert(l.id.clone(), l.clone()).map(|p| p.state);
        self.events.lease_saved(l, previous);
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
                    match events.recv().await {
                        Ok(ev) => me.on_wallet_event(ev).await,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            warn!(
                                missed = n,
                                "lease engine fell behind wallet events; re-reading invoices"
                            );
                            me.resync_invoices().await;
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
                me.meter().await;
            }
        });
    }

    // ---------------------------------------------------------------- provider

    async fn on_request(&self, from: Option<NodeId>, req: LeaseRequest) -> LeaseResponse {
        match req {
            LeaseRequest::BidAnswer { bid_id, offers } => {
                match self.bids.answer(from, bid_id, &offers, unix_now()) {
                    Ok(_) => LeaseResponse::Ack,
                    Err(why) => LeaseResponse::Refused(why),
                }
            }
            LeaseRequest::Order(bytes) => match self.admit(from, &bytes).await {
                Ok(inv) => LeaseResponse::Invoice(inv.to_bytes()),
                Err(why) => LeaseResponse::Refused(why),
            },
            LeaseRequest::Notice(bytes) => {
                self.on_notice(from, &bytes).await;
                LeaseResponse::Ack
            }
        }
    }

    /// Admission: check the order against our offer and capacity, then invoice it.
    async fn admit(&self, from: Option<NodeId>, bytes: &[u8]) -> Result<Signed<Invoice>, String> {
        let now = unix_now();
        let order =
            Signed::<Order>::from_bytes(bytes).map_err(|e| format!("malformed order: {e}"))?;
        validate_order(&order, now).map_err(|e| format!("invalid order: {e}"))?;
        let o = order.body().clone();
        if Some(o.buyer) != from {
            return Err("the order must come from the buyer's own node".into());
        }
        if o.provider != self.me {
            return Err("this order is for another provider".into());
        }
        let lease_id = hex_id(&order.id());
        if let Some(existing) = self.get(&lease_id) {
            // A retried order gets the same invoice: never two leases for one order.
            return existing
                .invoice_hex
                .and_then(|h| hex::decode(h).ok())
                .and_then(|b| Signed::<Invoice>::from_bytes(&b).ok())
                .ok_or_else(|| format!("lease {lease_id} was already {:?}", existing.state));
        }
        let (wallet, _machines) = match (&self.wallet, &self.machines) {
            (Some(w), Some(m)) => (w.clone(), m.clone()),
            _ => {
                return Err(
                    "this node does not provide machines (no wallet or no cloud configured)".into(),
                )
            }
        };
        let offer: Offer = {
            let m = self
                .market
                .read()
                .map_err(|_| "internal error".to_string())?;
            m.own_offer(o.offer_id, now)
                .map(|s| s.body().clone())
                .ok_or_else(|| {
                    format!(
                        "offer {} is no longer offered; refresh the book and order again",
                        o.offer_id
                    )
                })?
        };
        if offer.sequence != o.offer_sequence {
            return Err(format!(
                "offer {} changed since you saw it (now version {} at {} sats/h); refresh and order again",
                o.offer_id, offer.sequence, offer.price_sats_per_hour
            ));
        }
        if !offer.has_image(&o.image) {
            return Err(format!(
                "offer {} has no image {}; it has {}",
                o.offer_id,
                o.image,
                offer.images.join(", ")
            ));
        }
        let secs = o.hours as u64 * 3600;
        if secs < offer.min_lease_secs as u64 || secs > offer.max_lease_secs as u64 {
            return Err(format!(
                "{} h is outside this offer's lease range ({} to {} h)",
                o.hours,
                offer.min_lease_secs.div_ceil(3600),
                offer.max_lease_secs / 3600
            ));
        }
        // Capacity is reserved atomically: count and insert under one lock.
        let amount = xov_protocol::price_for_hours(offer.price_sats_per_hour, o.hours);
        let (report, pool_rate) = {
            let m = self
                .market
                .read()
                .map_err(|_| "internal error".to_string())?;
            let e = m.evidence();
            (e.report(&o.buyer, now), e.pool_rate(&o.pool, now))
        };
        let invoice = {
            let mut g = self.lock();
            // Trust limits, checked under the same lock as capacity so parallel orders cannot slip past.
            let (running, rate) = buyer_load(&g, &o.buyer.to_string());
            let (_, own_rate) = provider_load(&g);
            xov_protocol::admit(
                &self.policy.admission,
                &report,
                running,
                rate,
                offer.price_sats_per_hour,
                pool_rate + own_rate,
            )
            .map_err(|r| r.to_string())?;
            let busy = busy(&g, o.offer_id);
            if busy >= offer.capacity as usize {
                return Err(format!(
                    "offer {} is fully booked ({} of {} machines leased)",
                    o.offer_id, busy, offer.capacity
                ));
            }
            let inv = wallet
                .create_invoice(
                    &lease_id,
                    amount,
                    now + self.policy.invoice_ttl_secs,
                    self.policy.payment,
                )
                .map_err(|e| format!("cannot invoice: {e}"))?;
            let signed = Signed::sign(
                Invoice {
                    provider: self.me,
                    buyer: o.buyer,
                    lease_id: order.id(),
                    address: inv.address.clone(),
                    amount_sats: amount,
                    price_sats_per_hour: offer.price_sats_per_hour,
                    hours: o.hours,
                    min_confirmations: self.policy.payment.min_confirmations,
                    created_at: now,
                    expires_at: inv.expires_at,
                },
                &self.key,
            );
            let mut rec = LeaseRecord {
                id: lease_id.clone(),
                role: Role::Provider,
                state: LeaseState::Ordered,
                counterparty: o.buyer.to_string(),
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
                order_hex: hex::encode(bytes),
                invoice_hex: Some(hex::encode(signed.to_bytes())),
                pay_address: Some(inv.address.clone()),
                pay_uri: Some(inv.uri()),
                amount_sat: amount,
                paid_sat: 0,
                started_at: None,
                runs_until: None,
                instance: None,
                refunded_sat: 0,
                history: Vec::new(),
            };
            rec.set_state(LeaseState::Ordered, now, "order received");
            let _ = rec.apply(
                LeaseEvent::InvoiceIssued,
                now,
                format!("invoiced {amount} sat to {}", inv.address),
            );
            if let Err(e) = self.store.put_lease(&rec) {
                return Err(format!("provider storage error: {e}"));
            }
            self.events.lease_saved(&rec, None);
            g.insert(rec.id.clone(), rec);
            signed
        };
        info!(lease = %lease_id, amount, "order admitted, invoice issued");
        Ok(invoice)
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
                .filter(|o| busy(&g, o.body().offer_id) < o.body().capacity as usize)
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
            Ok(LeaseResponse::Refused(why)) => {
                info!(buyer = %b.buyer, bid = b.bid_id, %why, "bid answer not taken")
            }
            Ok(_) => info!(buyer = %b.buyer, bid = b.bid_id, offers = n, "bid answered"),
            Err(e) => warn!(buyer = %b.buyer, error = %e, "cannot answer bid"),
        }
    }

    async fn on_wallet_event(&self, ev: WalletEvent) {
        let id = match &ev {
            WalletEvent::PaymentSeen { invoice, .. }
            | WalletEvent::PaymentReorged { invoice, .. }
            | WalletEvent::InvoiceUpdated { invoice, .. } => invoice.clone(),
            _ => return,
        };
        let Some(mut l) = self.get(&id).filter(|l| l.role == Role::Provider) else {
            return;
        };
        let now = unix_now();
        match ev {
            WalletEvent::PaymentSeen {
                amount_sat,
                confirmations,
                ..
            } if l.state == LeaseState::Invoiced => {
                self.transition(
                    &mut l,
                    LeaseEvent::PaymentSeen,
                    now,
                    format!("{amount_sat} sat seen, {confirmations} confirmations"),
                    "payment seen; waiting for confirmations",
                )
                .await;
            }
            WalletEvent::PaymentReorged { .. } => {
                self.transition(
                    &mut l,
                    LeaseEvent::PaymentReorged,
                    now,
                    "paying transaction reorged out",
                    "payment was reorged out; waiting for it to confirm again",
                )
                .await;
            }
            WalletEvent::InvoiceUpdated {
                status,
                settled_sat,
                ..
            } => {
                let more = settled_sat > l.paid_sat;
                l.paid_sat = l.paid_sat.max(settled_sat);
                match l.state {
                    LeaseState::Invoiced | LeaseState::PaymentSeen
                        if status.is_paid()
                            || (status == InvoiceStatus::Partial
                                && settled_sat >= min_start(&l)) =>
                    {
                        if l.apply(
                            LeaseEvent::PaymentConfirmed,
                            now,
                            format!("{settled_sat} sat confirmed"),
                        )
                        .is_ok()
                        {
                            self.save(&l);
                            self.launch(l).await;
                        }
                    }
                    LeaseState::Running
                    | LeaseState::Warned
                    | LeaseState::Grace
                    | LeaseState::Halted
                        if more =>
                    {
                        self.top_up(l, now).await;
                    }
                    _ => self.save(&l),
                }
            }
            _ => {}
        }
    }

    async fn resync_invoices(&self) {
        let Some(w) = &self.wallet else { return };
        for inv in w.invoices() {
            self.on_wallet_event(WalletEvent::InvoiceUpdated {
                invoice: inv.id.clone(),
                status: inv.status,
                settled_sat: inv.settled_sat,
                pending_sat: inv.pending_sat,
            })
            .await;
        }
    }

    /// Funded → Provisioning (persisted) → launch → Running, or Failed with a refund.
    async fn launch(&self, mut l: LeaseRecord) {
        let Some(machines) = self.machines.clone() else {
            return;
        };
        let now = unix_now();
        if l.state == LeaseState::Funded {
            if l.apply(LeaseEvent::LaunchRequested, now, "launching")
                .is_err()
            {
                return;
            }
            self.save(&l);
        }
        if l.state != LeaseState::Provisioning {
            return;
        }
        self.notify(&l, "paid; launching your machine").await;
        let spec = LaunchSpec {
            lease_id: l.id.clone(),
            offer_id: l.offer_id,
            vcpus: l.vcpus,
            ram_mib: l.ram_mib,
            disk_gib: l.disk_gib,
            image: l.image.clone(),
            ssh_public_key: l.ssh_public_key.clone(),
        };
        match machines.launch(spec).await {
            Ok(info) => {
                let now = unix_now();
                l.instance = Some(info.clone());
                l.started_at = Some(now);
                let meter = l.meter(now);
                l.runs_until = Some(meter.runs_until());
                let _ = l.apply(
                    LeaseEvent::Launched,
                    now,
                    format!("running on {}", info.addresses.join(", ")),
                );
                self.save(&l);
                info!(lease = %l.id, server = %info.server_id, "lease running");
                self.notify(&l, "your machine is running").await;
            }
            Err(e) => {
                let now = unix_now();
                let _ = l.apply(LeaseEvent::LaunchFailed, now, format!("launch failed: {e}"));
                self.save(&l);
                warn!(lease = %l.id, error = %e, "launch failed; refunding");
                self.refund(&mut l).await;
                self.notify(&l, &format!("launch failed ({e}); refunded"))
                    .await;
            }
        }
    }

    async fn refund(&self, l: &mut LeaseRecord) {
        let (Some(w), Some(addr)) = (&self.wallet, l.refund_address.clone()) else {
            return;
        };
        let before = l.paid_sat;
        match w.refund_invoice(&l.id, &addr, None).await {
            Ok(txid) => {
                l.refunded_sat = before;
                l.history.push(crate::leases::Step {
                    at: unix_now(),
                    state: l.state,
                    detail: format!("refunded in {txid}"),
                });
                self.save(l);
            }
            Err(e) => warn!(lease = %l.id, error = %e, "refund failed"),
        }
    }

    async fn top_up(&self, mut l: LeaseRecord, now: u64) {
        let started = l.started_at.unwrap_or(now);
        let meter = l.meter(started);
        l.runs_until = Some(meter.runs_until());
        let was_halted = l.state == LeaseState::Halted;
        if meter.phase(now, self.policy.warn_before_secs, self.policy.grace_secs) == Phase::Running
            && l.state != LeaseState::Running
        {
            let _ = l.apply(
                LeaseEvent::ToppedUp,
                now,
                format!("topped up to {} sat", l.paid_sat),
            );
        } else {
            l.history.push(crate::leases::Step {
                at: now,
                state: l.state,
                detail: format!("topped up to {} sat", l.paid_sat),
            });
        }
        self.save(&l);
        if was_halted && l.state == LeaseState::Running {
            if let Some(m) = &self.machines {
                if let Err(e) = m.start(&l.id).await {
                    warn!(lease = %l.id, error = %e, "cannot restart halted machine");
                }
            }
        }
        self.notify(&l, "top-up received; lease extended").await;
    }

    /// Metering: warn, grace, halt, delete, expire unpaid invoices.
    async fn meter(&self) {
        let now = unix_now();
        let mine: Vec<LeaseRecord> = self
            .lock()
            .values()
            .filter(|l| l.role == Role::Provider && !l.state.is_terminal())
            .cloned()
            .collect();
        for mut l in mine {
            match l.state {
                LeaseState::Invoiced => {
                    let expired = l
                        .invoice_hex
                        .as_ref()
                        .and_then(|h| hex::decode(h).ok())
                        .and_then(|b| Signed::<Invoice>::from_bytes(&b).ok())
                        .is_some_and(|i| now >= i.body().expires_at);
                    if expired {
                        self.transition(
                            &mut l,
                            LeaseEvent::InvoiceExpired,
                            now,
                            "invoice expired unpaid",
                            "invoice expired unpaid",
                        )
                        .await;
                    }
                }
                LeaseState::Running
                | LeaseState::Warned
                | LeaseState::Grace
                | LeaseState::Halted => {
                    let Some(started) = l.started_at else {
                        continue;
                    };
                    let meter = l.meter(started);
                    let p = &self.policy;
                    let phase = meter.phase(now, p.warn_before_secs, p.grace_secs);
                    let until = meter.runs_until();
                    match (l.state, phase) {
                        (LeaseState::Running, Phase::Warn) => {
                            let tell = format!(
                                "funds run out in {} s; pay the same address to extend",
                                until.saturating_sub(now)
                            );
                            let detail = format!("funds run out at {until}");
                            self.transition(&mut l, LeaseEvent::BalanceLow, now, detail, &tell)
                                .await;
                        }
                        (LeaseState::Running | LeaseState::Warned, Phase::Grace | Phase::Halt) => {
                            let tell = format!(
                                "funds exhausted; the machine halts in {} s unless topped up",
                                p.grace_secs
                            );
                            let detail = "funds exhausted; grace period";
                            self.transition(&mut l, LeaseEvent::Drained, now, detail, &tell)
                                .await;
                        }
                        (LeaseState::Grace, Phase::Halt) => {
                            if let Some(m) = &self.machines {
                                if let Err(e) = m.stop(&l.id).await {
                                    warn!(lease = %l.id, error = %e, "cannot stop machine; will retry");
                                    continue;
                                }
                            }
                            let tell = format!(
                                "machine halted; it is deleted in {} s unless topped up",
                                p.hold_secs
                            );
                            self.transition(
                                &mut l,
                                LeaseEvent::GraceOver,
                                now,
                                "machine halted",
                                &tell,
                            )
                            .await;
                        }
                        (LeaseState::Halted, _)
                            if now
                                >= l.runs_until.map_or(until, |u| u.min(until))
                                    + p.grace_secs
                                    + p.hold_secs =>
                        {
                            if let Some(m) = &self.machines {
                                if let Err(e) = m.delete(&l.id).await {
                                    warn!(lease = %l.id, error = %e, "cannot delete machine; will retry");
                                    continue;
                                }
                            }
                            let _ = l.apply(LeaseEvent::Deleted, now, "machine deleted");
                            self.save(&l);
                            self.close(&mut l, now).await;
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
    }

    /// Ends a lease with a receipt the provider signs; the buyer signs it back.
    async fn close(&self, l: &mut LeaseRecord, now: u64) {
        let receipt = Receipt {
            lease_id: l.id.clone(),
            provider: self.me.to_string(),
            buyer: l.counterparty.clone(),
            started_at: l.started_at.unwrap_or(now),
            ended_at: now,
            paid_sat: l.paid_sat,
            refunded_sat: l.refunded_sat,
        };
        // The signed form the buyer countersigns; the JSON beside it is for people reading the history.
        let signed = match (
            l.id.parse::<MessageId>(),
            l.counterparty.parse::<NodeId>(),
            l.pool.parse::<PoolId>(),
        ) {
            (Ok(lease_id), Ok(buyer), Ok(pool)) => Some(ProviderReceipt::sign(
                xov_protocol::Receipt {
                    lease_id,
                    pool,
                    provider: self.me,
                    buyer,
                    started_at: receipt.started_at,
                    ended_at: receipt.ended_at,
                    paid_sats: receipt.paid_sat,
                    refunded_sats: receipt.refunded_sat,
                },
                &self.key,
            )),
            _ => None,
        };
        let mut v = serde_json::to_value(&receipt).unwrap_or_default();
        if let Some(pr) = &signed {
            v["provider_signed"] = hex::encode(xov_protocol::Encode::to_canonical_bytes(pr)).into();
        }
        let detail = v.to_string();
        l.history.push(crate::leases::Step {
            at: now,
            state: l.state,
            detail: format!(
                "receipt {}",
                serde_json::to_string(&receipt).unwrap_or_default()
            ),
        });
        self.save(l);
        self.send_notice(l, detail).await;
    }

    /// Takes a dual-signed receipt into the node's evidence and gossips it into the lease's pool, where it
    /// builds both parties' trust.
    async fn record_receipt(&self, r: SignedReceipt) {
        let pool = r.receipt().pool;
        let added = self
            .market
            .write()
            .map_err(|_| "internal error".to_string())
            .and_then(|mut m| {
                m.evidence_mut()
                    .accept_receipt(r.clone(), unix_now())
                    .map_err(|e| e.to_string())
            });
        match added {
            Ok(_) => {
                if let Err(e) = self.net.publish_bytes(&pool, r.to_bytes()).await {
                    warn!(error = %e, "cannot gossip receipt");
                }
            }
            Err(e) => warn!(error = %e, "receipt not recorded"),
        }
    }

    /// Resumes work interrupted by a crash: launches that were paid or under way.
    async fn resume(&self) {
        let pending: Vec<LeaseRecord> = self
            .lock()
            .values()
            .filter(|l| {
                l.role == Role::Provider
                    && matches!(l.state, LeaseState::Funded | LeaseState::Provisioning)
            })
            .cloned()
            .collect();
        for l in pending {
            info!(lease = %l.id, state = ?l.state, "resuming lease after restart");
            self.launch(l).await;
        }
        self.resync_invoices().await;
    }

    /// Applies `event`, persists the result, then tells the buyer: the order of every transition (persist
    /// before acting). Returns whether the event applied; a refused event changes nothing.
    async fn transition(
        &self,
        l: &mut LeaseRecord,
        event: LeaseEvent,
        now: u64,
        detail: impl Into<String>,
        tell: &str,
    ) -> bool {
        if l.apply(event, now, detail).is_err() {
            return false;
        }
        self.save(l);
        self.notify(l, tell).await;
        true
    }

    /// Tells the buyer where the lease stands, with the details it needs, as a signed notice.
    async fn notify(&self, l: &LeaseRecord, what: &str) {
        let detail = serde_json::json!({
            "message": what,
            "paid_sat": l.paid_sat,
            "runs_until": l.runs_until,
            "started_at": l.started_at,
            "instance": l.instance,
            "refunded_sat": l.refunded_sat,
        })
        .to_string();
        self.send_notice(l, detail).await;
    }

    async fn send_notice(&self, l: &LeaseRecord, detail: String) {
        let (Ok(to), Ok(lease_id)) = (l.counterparty.parse::<NodeId>(), l.id.parse::<MessageId>())
        else {
            return;
        };
        let mut detail = detail;
        if detail.len() > xov_protocol::lease::MAX_NOTICE_DETAIL {
            detail.truncate(xov_protocol::lease::MAX_NOTICE_DETAIL);
        }
        let notice = Signed::sign(
            LeaseNotice {
                from: self.me,
                lease_id,
                state: l.state,
                at: unix_now(),
                detail,
            },
            &self.key,
        );
        if let Err(e) = self
            .net
            .send_lease(&to, LeaseRequest::Notice(notice.to_bytes()))
            .await
        {
            warn!(lease = %l.id, error = %e, "could not deliver lease notice");
        }
    }

    // ---------------------------------------------------------------- buyer

    async fn on_notice(&self, from: Option<NodeId>, bytes: &[u8]) {
        let Ok(n) = Signed::<LeaseNotice>::from_bytes(bytes) else {
            return;
        };
        if !n.verify() || Some(n.body().from) != from {
            return;
        }
        let b = n.body();
        let id = b.lease_id.to_string();
        let Some(mut l) = self.get(&id) else { return };
        if l.counterparty != b.from.to_string() {
            return;
        }
        match l.role {
            Role::Buyer => {
                let v: serde_json::Value = serde_json::from_str(&b.detail).unwrap_or_default();
                if let Some(info) = v
                    .get("instance")
                    .and_then(|i| serde_json::from_value::<InstanceInfo>(i.clone()).ok())
                {
                    l.instance = Some(info);
                }
                if let Some(p) = v.get("paid_sat").and_then(|p| p.as_u64()) {
                    l.paid_sat = p;
                }
                if let Some(u) = v.get("runs_until").and_then(|p| p.as_u64()) {
                    l.runs_until = Some(u);
                }
                if let Some(s) = v.get("started_at").and_then(|p| p.as_u64()) {
                    l.started_at = Some(s);
                }
                if let Some(r) = v.get("refunded_sat").and_then(|p| p.as_u64()) {
                    l.refunded_sat = r;
                }
                let msg = v.get("message").and_then(|m| m.as_str()).map(String::from);
                let is_receipt = v.get("ended_at").is_some();
                l.set_state(
                    b.state,
                    b.at,
                    msg.unwrap_or_else(|| {
                        if is_receipt {
                            format!("receipt {}", b.detail)
                        } else {
                            b.detail.clone()
                        }
                    }),
                );
                self.save(&l);
                if is_receipt {
                    // Countersign the receipt so both parties hold it signed by the other, after checking it
                    // is about this lease and these parties.
                    let pr = v
                        .get("provider_signed")
                        .and_then(|h| h.as_str())
                        .and_then(|h| hex::decode(h).ok())
                        .and_then(|b| {
                            <ProviderReceipt as xov_protocol::Decode>::from_canonical_bytes(&b).ok()
                        });
                    let Some(pr) = pr else {
                        warn!(lease = %l.id, "receipt without a provider signature; not countersigned");
                        return;
                    };
                    let r = pr.receipt();
                    if r.lease_id.to_string() != l.id
                        || r.buyer != self.me
                        || r.provider.to_string() != l.counterparty
                    {
                        warn!(lease = %l.id, "receipt names another lease or other parties; not countersigned");
                        return;
                    }
                    match pr.countersign(&self.key) {
                        Ok(signed) => {
                            let detail = serde_json::json!({
                                "countersigned": hex::encode(signed.to_bytes()),
                            })
                            .to_string();
                            self.send_notice(&l, detail).await;
                            self.record_receipt(signed).await;
                        }
                        Err(e) => warn!(lease = %l.id, error = %e, "receipt not countersigned"),
                    }
                }
            }
            Role::Provider => {
                // The buyer's countersigned receipt, or a cancellation.
                if b.state == LeaseState::Closed {
                    let signed = serde_json::from_str::<serde_json::Value>(&b.detail)
                        .ok()
                        .and_then(|v| v["countersigned"].as_str().map(String::from))
                        .and_then(|h| hex::decode(h).ok())
                        .and_then(|b| SignedReceipt::from_bytes(&b).ok())
                        .filter(|r| {
                            r.verify()
                                && r.receipt().provider == self.me
                                && r.receipt().lease_id.to_string() == l.id
                        });
                    let Some(signed) = signed else {
                        warn!(lease = %l.id, "the buyer's countersigned receipt does not verify");
                        return;
                    };
                    l.history.push(crate::leases::Step {
                        at: b.at,
                        state: l.state,
                        detail: format!(
                            "buyer countersigned receipt {}",
                            hex::encode(signed.to_bytes())
                        ),
                    });
                    self.save(&l);
                    self.record_receipt(signed).await;
                } else if b.detail == "cancel" {
                    self.cancel_as_provider(l).await;
                }
            }
        }
    }

    async fn cancel_as_provider(&self, mut l: LeaseRecord) {
        let now = unix_now();
        let was_running = l.state.may_have_machine();
        if l.apply(LeaseEvent::Cancelled, now, "cancelled by the buyer")
            .is_err()
        {
            return;
        }
        // The lease ends now: the halted machine is deleted after the hold counted from here.
        l.runs_until = Some(now);
        self.save(&l);
        if was_running {
            if let Some(m) = &self.machines {
                let _ = m.stop(&l.id).await;
            }
        }
        // Refund of the unused part: the provider's stated policy is to return unused whole minutes' worth.
        if let (Some(started), Some(w), Some(addr)) =
            (l.started_at, &self.wallet, l.refund_address.clone())
        {
            let meter = l.meter(started);
            let unused = meter.unused_sat(now);
            if unused > 1000 {
                match w.send(&addr, unused - 500, None).await {
                    Ok(txid) => {
                        l.refunded_sat = unused - 500;
                        l.history.push(crate::leases::Step {
                            at: now,
                            state: l.state,
                            detail: format!("refunded {} sat in {txid}", l.refunded_sat),
                        });
                        self.save(&l);
                    }
                    Err(e) => warn!(lease = %l.id, error = %e, "refund failed"),
                }
            }
        } else if l.state == LeaseState::Failed {
            self.refund(&mut l).await;
        }
        self.notify(&l, "lease cancelled").await;
    }

    /// Orders a machine: picks the cheapest matching offers and asks their providers directly, one after
    /// another, until one invoices. Pays from the wallet when asked.
    pub async fn order(&self, req: OrderRequest) -> Result<LeaseRecord, OrderError> {
        let now = unix_now();
        let candidates = {
            let m = self
                .market
                .read()
                .map_err(|_| OrderError::Other("internal error".into()))?;
            let pool = match &req.pool {
                Some(p) => Some(
                    m.resolve_pool(Some(p))
                        .map_err(|e| OrderError::Other(e.to_string()))?,
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
                    ..Default::default()
                },
                limit: 0,
            };
            // The book answers cheapest first; the ranking below reorders equal prices by trust and latency.
            let c: Vec<Signed<Offer>> = m
                .query(&q, now)
                .into_iter()
                .filter(|o| o.body().provider != self.me)
                .take(MAX_CANDIDATES * 4)
                .cloned()
                .collect();
            let why = if c.is_empty() {
                xov_protocol::explain_no_match(m.book(), &q, now)
            } else {
                Vec::new()
            };
            (c, why, q)
        };
        let (mut candidates, mut reasons, query) = candidates;
        if candidates.is_empty() && req.bid_wait_secs > 0 {
            match self.bid(&req, &query, now).await {
                Ok(answers) if answers.is_empty() => reasons.push(format!(
                    "no provider answered a bid within {} s",
                    req.bid_wait_secs
                )),
                Ok(answers) => candidates = answers,
                Err(why) => reasons.push(why),
            }
        }
        if candidates.is_empty() {
            return Err(OrderError::NoMatch(reasons));
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
        crate::ranking::rank(
            &mut candidates,
            |p| scores.get(p).copied().unwrap_or(0),
            |p| self.net.latency(p),
        );
        candidates.truncate(MAX_CANDIDATES);
        if req.pay && self.wallet.is_none() {
            return Err(OrderError::NoWallet);
        }
        let mut refusals = Vec::new();
        let mut queue: std::collections::VecDeque<(Signed<Offer>, bool)> =
            candidates.into_iter().map(|o| (o, true)).collect();
        while let Some((offer, may_retry)) = queue.pop_front() {
            let o = offer.body();
            let order = Signed::sign(
                Order {
                    buyer: self.me,
                    provider: o.provider,
                    pool: o.pool,
                    offer_id: o.offer_id,
                    offer_sequence: o.sequence,
                    image: req.image.clone(),
                    hours: req.hours,
                    ssh_public_key: req.ssh_public_key.trim().to_string(),
                    refund_address: req.refund_address.clone(),
                    created_at: now,
                    nonce: now ^ o.offer_id,
                },
                &self.key,
            );
            let short = o.provider.to_string()[..8].to_string();
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
                    // The offer was renewed while the order travelled: try once more with the version now in
                    // our book, if it still matches what was asked.
                    if may_retry && why.contains("changed since you saw it") {
                        let newer = self.market.read().ok().and_then(|m| {
                            m.book()
                                .get(&OfferKey::of(o))
                                .filter(|n| {
                                    n.body().sequence > o.sequence
                                        && req
                                            .max_price
                                            .is_none_or(|p| n.body().price_sats_per_hour <= p)
                                })
                                .cloned()
                        });
                        if let Some(n) = newer {
                            queue.push_front((n, false));
                            continue;
                        }
                    }
                    refusals.push(format!("{short}…: {why}"));
                    continue;
                }
                LeaseResponse::Ack => {
                    refusals.push(format!("{short}…: no invoice"));
                    continue;
                }
            };
            let (invoice, bytes) = inv;
            let i = invoice.body();
            let expected = xov_protocol::price_for_hours(o.price_sats_per_hour, req.hours);
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
            let uri = xov_wallet::bip21::uri(
                &i.address,
                Some(i.amount_sats),
                Some(&format!("xov lease {}", &order.id().to_string()[..12])),
            );
            let mut rec = LeaseRecord {
                id: order.id().to_string(),
                role: Role::Buyer,
                state: LeaseState::Invoiced,
                counterparty: o.provider.to_string(),
                pool: o.pool.to_string(),
                offer_id: o.offer_id,
                image: req.image.clone(),
                hours: req.hours,
                price_sats_per_hour: o.price_sats_per_hour,
                min_lease_secs: o.min_lease_secs,
                vcpus: o.instance.vcpus,
                ram_mib: o.instance.ram_mib,
                disk_gib: o.instance.disk_gib,
                ssh_public_key: req.ssh_public_key.trim().to_string(),
                refund_address: req.refund_address.clone(),
                order_hex: hex::encode(order.to_bytes()),
                invoice_hex: Some(hex::encode(&bytes)),
                pay_address: Some(i.address.clone()),
                pay_uri: Some(uri.clone()),
                amount_sat: i.amount_sats,
                paid_sat: 0,
                started_at: None,
                runs_until: None,
                instance: None,
                refunded_sat: 0,
                history: Vec::new(),
            };
            rec.set_state(
                LeaseState::Invoiced,
                now,
                format!("invoice for {} sat from {short}…", i.amount_sats),
            );
            self.save(&rec);
            if req.pay {
                let w = self.wallet.clone().ok_or(OrderError::NoWallet)?;
                match w.pay(&uri, None).await {
                    Ok(txid) => {
                        rec.history.push(crate::leases::Step {
                            at: unix_now(),
                            state: rec.state,
                            detail: format!("paid in {txid}"),
                        });
                        self.save(&rec);
                    }
                    Err(e) => {
                        return Err(OrderError::Other(format!(
                            "invoice received but paying failed: {e}; pay {uri} yourself"
                        )))
                    }
                }
            }
            return Ok(rec);
        }
        Err(OrderError::AllRefused(refusals))
    }

    /// Buyer: gossips the demand as a bid into the pool asked for (or every joined pool) and collects the
    /// offers providers answer with directly.
    async fn bid(
        &self,
        req: &OrderRequest,
        q: &xov_protocol::OfferQuery,
        now: u64,
    ) -> Result<Vec<Signed<Offer>>, String> {
        if q.demand.max_price_sats_per_hour.is_none() {
            return Err("a bid needs a price limit: add --max-price".into());
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
        &self,
        id: &str,
        hours: u32,
        sats: Option<u64>,
    ) -> Result<String, OrderError> {
        let l = self
            .get(id)
            .ok_or_else(|| OrderError::Other(format!("no lease {id}")))?;
        let w = self.wallet.clone().ok_or(OrderError::NoWallet)?;
        let addr = l
            .pay_address
            .clone()
            .ok_or_else(|| OrderError::Other("lease has no payment address".into()))?;
        if l.role != Role::Buyer || l.state.is_terminal() {
            return Err(OrderError::Other(format!(
                "lease {} is {:?}; only a live lease you bought can be extended",
                l.id, l.state
            )));
        }
        let amount =
            sats.unwrap_or_else(|| xov_protocol::price_for_hours(l.price_sats_per_hour, hours));
        w.send(&addr, amount, None)
            .await
            .map_err(|e| OrderError::Other(e.to_string()))
    }

    /// Buyer: asks the provider to end the lease (the unused part is refunded to the refund address).
    pub async fn cancel(&self, id: &str) -> Result<(), OrderError> {
        let l = self
            .get(id)
            .ok_or_else(|| OrderError::Other(format!("no lease {id}")))?;
        if l.role != Role::Buyer {
            return Err(OrderError::Other("only the buyer cancels a lease".into()));
        }
        self.send_notice(&l, "cancel".into()).await;
        Ok(())
    }
}
