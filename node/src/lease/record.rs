//! Lease records: what each side knows about a lease, persisted (RocksDB column family `leases`) before any
//! action is taken on a state change, so a restart resumes from the last recorded state.
//!
//! Invariants: a record changes only through `lease::machine::handle`; every field the machine decides on is
//! here (nothing lives only in memory), so rebuilding from the store after a crash gives the same decisions.
//! Fields added after the first release carry `#[serde(default)]` so older records still load.
//! A buyer's slices (`budget`, `slices`) are written before anything is built or paid: a slice without a
//! transaction was never signed, one with a transaction is only ever sent as that transaction.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use xov_protocol::{LeaseEvent, LeaseState};

use crate::store::{Store, StoreError};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    #[default]
    Provider,
    Buyer,
}

/// The machine a lease runs on, as the buyer needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InstanceInfo {
    pub server_id: String,
    pub addresses: Vec<String>,
    pub image: String,
    /// Login user for SSH (with the buyer's key).
    pub user: String,
    /// TCP port of the machine's SSH server at `addresses` (records from before it: 22).
    #[serde(default = "default_ssh_port")]
    pub ssh_port: u16,
    /// Every TCP port the provider's firewall opens to the machine, the SSH port included.
    #[serde(default = "default_open_ports")]
    pub open_ports: Vec<u16>,
}

fn default_ssh_port() -> u16 {
    22
}

fn default_open_ports() -> Vec<u16> {
    vec![22]
}

/// One step in a lease's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Step {
    pub at: u64,
    #[schema(value_type = String)]
    pub state: LeaseState,
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LeaseRecord {
    /// Hex id: the message id of the buyer's signed order.
    pub id: String,
    pub role: Role,
    #[schema(value_type = String)]
    pub state: LeaseState,
    /// The other party's node id.
    pub counterparty: String,
    pub pool: String,
    pub offer_id: u64,
    pub image: String,
    pub hours: u32,
    pub price_sats_per_hour: u64,
    /// The offer's shortest lease: confirmed payments covering at least this much start the machine.
    #[serde(default)]
    pub min_lease_secs: u32,
    pub vcpus: u32,
    pub ram_mib: u32,
    pub disk_gib: u32,
    pub ssh_public_key: String,
    pub refund_address: Option<String>,
    /// TCP ports besides SSH the buyer asked to have opened (records from before it: none).
    #[serde(default)]
    pub extra_ports: Vec<u16>,
    /// The signed order and invoice, hex, as received or sent.
    pub order_hex: String,
    pub invoice_hex: Option<String>,
    /// The invoice's address and BIP21 URI (paying the address again tops the lease up).
    pub pay_address: Option<String>,
    pub pay_uri: Option<String>,
    pub amount_sat: u64,
    /// Confirmed sats received so far.
    pub paid_sat: u64,
    pub started_at: Option<u64>,
    /// When the funds run out at the current balance.
    pub runs_until: Option<u64>,
    pub instance: Option<InstanceInfo>,
    /// Sats given back to the buyer: refund values, each paying its own network fee (`refund_fees_sat`).
    pub refunded_sat: u64,
    pub history: Vec<Step>,

    // ---- what the machine decides on (serde defaults: records written before these fields still load)
    /// Provider: every output paying the lease's address, as the wallet last reported it.
    #[serde(default)]
    pub payments: Vec<PaymentOut>,
    /// The wallet's chain tip when it last reported on the lease's payments (both roles).
    #[serde(default)]
    pub tip: u32,
    /// Provider: sats counted while still unconfirmed (zero-conf); never refunded, never earned for sure.
    #[serde(default)]
    pub zero_conf_sat: u64,
    /// Unix seconds the order was admitted (provider) or sent (buyer).
    #[serde(default)]
    pub admitted_at: u64,
    #[serde(default)]
    pub invoice_expires_at: u64,
    /// The buyer asked to end the lease: it never (re)starts, and everything unused is refunded.
    #[serde(default)]
    pub cancelled: bool,
    /// Provider: a launch was asked and no delete confirmed since, so a machine may exist in the cloud.
    #[serde(default)]
    pub machine_may_exist: bool,
    /// Provider: seconds the machine has been metered as running (what the buyer is charged for).
    #[serde(default)]
    pub charged_secs: u64,
    /// Provider: metering since (None while not running or once cancelled).
    #[serde(default)]
    pub metered_at: Option<u64>,
    #[serde(default)]
    pub halted_at: Option<u64>,
    /// Provider: the last cloud answer says the machine is stopped (or gone); metering pauses.
    #[serde(default)]
    pub machine_stopped: bool,
    #[serde(default)]
    pub provisioning_since: Option<u64>,
    /// Provider: a cloud action that failed transiently is tried again from this time.
    #[serde(default)]
    pub retry_at: Option<u64>,
    #[serde(default)]
    pub attempts: u32,
    /// Provider: refunds, each made exactly once (intent persisted, then the signed transaction, then sent).
    #[serde(default)]
    pub refunds: Vec<Refund>,
    /// Provider: a refund that failed for now is tried again from this time.
    #[serde(default)]
    pub refund_retry_at: Option<u64>,
    /// Sats too few to refund economically (below the refund minimum or dust): counted with fees.
    #[serde(default)]
    pub written_off_sat: u64,
    /// How many times money was written off (each below `refund_min_sat`, or too small to send at all).
    #[serde(default)]
    pub write_offs: u32,
    /// Network fees of refunds (taken out of their value).
    #[serde(default)]
    pub refund_fees_sat: u64,
    /// Sats owed back that could not be sent because the order named no refund address.
    #[serde(default)]
    pub owed_sat: u64,
    /// Our notices: the last sequence number used, the highest the other side acknowledged, when last sent.
    #[serde(default)]
    pub out_seq: u64,
    #[serde(default)]
    pub acked_seq: u64,
    #[serde(default)]
    pub sent_at: Option<u64>,
    /// The other side's notices: the highest sequence number applied.
    #[serde(default)]
    pub peer_seq: u64,
    /// The provider-signed receipt (hex canonical bytes), once the lease ended.
    #[serde(default)]
    pub receipt_hex: Option<String>,
    /// Provider: the notice sequence number that carries the receipt (statuses follow once it is acknowledged).
    #[serde(default)]
    pub receipt_seq: u64,
    /// The countersigned receipt (hex wire bytes), once the buyer signed it.
    #[serde(default)]
    pub countersigned_hex: Option<String>,
    /// Buyer: payments this node made to the lease's address.
    #[serde(default)]
    pub sent: Vec<SentPayment>,
    /// Buyer: the provider did not start the machine in time after payment (an alert was raised).
    #[serde(default)]
    pub stalled: bool,
    /// Which lease engine wrote the record: 0 for records from before the lease machine (they are migrated
    /// once at start, see [`LeaseRecord::migrate`]), [`ENGINE`] since.
    #[serde(default)]
    pub engine: u32,
    /// Provider: sats the earlier engine already settled (kept or refunded); never refunded again.
    #[serde(default)]
    pub legacy_settled_sat: u64,

    // ---- buyer: paying in slices (`xov order --budget`)
    /// Buyer: pay in slices up to a budget instead of all at once (None: the buyer pays by hand).
    #[serde(default)]
    pub budget: Option<Budget>,
    /// Buyer: the slices paid or being paid, each made exactly once (intent persisted, then the signed
    /// transaction, then broadcast).
    #[serde(default)]
    pub slices: Vec<Slice>,
    /// Buyer: a slice that could not be built or broadcast for now is tried again from this time.
    #[serde(default)]
    pub slice_retry_at: Option<u64>,
    /// Buyer: when the provider signed its latest status notice (its time, never later than ours on
    /// arrival), and when this node last asked for one (a `StatusRequest` notice).
    #[serde(default)]
    pub status_at: Option<u64>,
    #[serde(default)]
    pub status_asked_at: Option<u64>,
    /// Buyer: why the next slice is withheld from the provider, while it is.
    #[serde(default)]
    pub withheld: Option<NotDelivering>,
    /// Buyer: the budget is spent (said once in the history); no more slices.
    #[serde(default)]
    pub budget_spent: bool,
    /// Buyer: confirmations the invoice said a payment needs (0 for records from before this field: 1).
    #[serde(default)]
    pub invoice_min_confirmations: u32,
}

/// The record format of the lease machine.
pub const ENGINE: u32 = 2;
/// History entries kept per lease: the first ones (order, invoice) and the latest.
pub const MAX_HISTORY: usize = 200;
const HISTORY_HEAD: usize = 8;

/// One output paying a lease's address, as the provider's wallet sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PaymentOut {
    pub txid: String,
    pub vout: u32,
    pub amount_sat: u64,
    /// Height of its block; None while unconfirmed.
    pub height: Option<u32>,
    /// Whether the paying transaction signals replace-by-fee.
    #[serde(default)]
    pub rbf: bool,
}

impl PaymentOut {
    pub fn confirmations(&self, tip: u32) -> u32 {
        self.height
            .map_or(0, |h| tip.saturating_add(1).saturating_sub(h))
    }
}

/// A refund the provider owes, from intent to broadcast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Refund {
    /// Per lease, from 1.
    pub id: u32,
    /// Sats given back, the network fee included (the buyer receives `value_sat - fee`).
    pub value_sat: u64,
    pub address: String,
    pub why: String,
    /// The signed transaction, once built (persisted before it is broadcast).
    pub tx: Option<RefundTx>,
    /// Whether a broadcast was accepted at least once.
    #[serde(default)]
    pub broadcast: bool,
    /// Too small to send (the wallet said so): counted as written off, never sent.
    #[serde(default)]
    pub written_off: bool,
}

/// A signed transaction of a lease's: a provider's refund, or a buyer's slice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RefundTx {
    pub txid: String,
    pub raw_hex: String,
    pub fee_sat: u64,
    pub sent_sat: u64,
}

/// A payment the buyer's node made for a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SentPayment {
    /// The transaction paying it now (after a fee bump, the replacement).
    pub txid: String,
    /// Sats to the lease's address (the network fee not included).
    pub amount_sat: u64,
    pub at: u64,
    /// Height of its block as this node's wallet last saw it; None while unconfirmed.
    #[serde(default)]
    pub height: Option<u32>,
    /// When (this node's clock) it was first seen with the confirmations the invoice asks for.
    #[serde(default)]
    pub confirmed_at: Option<u64>,
    /// Earlier transactions of the same payment, replaced by fee bumps (any of them may be the one that
    /// confirms).
    #[serde(default)]
    pub replaced: Vec<String>,
}

impl SentPayment {
    pub fn new(txid: String, amount_sat: u64, at: u64) -> SentPayment {
        SentPayment {
            txid,
            amount_sat,
            at,
            height: None,
            confirmed_at: None,
            replaced: Vec::new(),
        }
    }

    /// Every txid this payment has had, the current one first.
    pub fn txids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.txid.as_str()).chain(self.replaced.iter().map(String::as_str))
    }
}

/// A buyer's budget: pay `slice_sat` at a time, `total_sat` at most in all (sats to the lease's address;
/// network fees are paid on top, as for any payment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Budget {
    pub total_sat: u64,
    /// One slice: `slice_secs` of running at the lease's price.
    pub slice_sat: u64,
    pub slice_secs: u64,
}

/// One slice of a budget, from intent to broadcast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Slice {
    /// Per lease, from 1.
    pub n: u32,
    /// Sats the lease's address should receive.
    pub amount_sat: u64,
    pub address: String,
    /// When the slice was decided (this node's clock).
    pub at: u64,
    /// The signed transaction, once built (persisted before it is broadcast). Its `sent_sat` is what the
    /// lease's address receives, `fee_sat` the network fee paid on top.
    pub tx: Option<RefundTx>,
    /// Whether a broadcast was accepted at least once.
    #[serde(default)]
    pub broadcast: bool,
    /// Never built and never to be: the lease ended or was cancelled first, or the wallet cannot make it.
    #[serde(default)]
    pub abandoned: bool,
}

impl Slice {
    /// Sats this slice pays (or may have paid) to the lease's address: the built transaction's amount, else
    /// the intended amount until it is abandoned unbuilt.
    pub fn committed_sat(&self) -> u64 {
        match (&self.tx, self.abandoned) {
            (Some(tx), _) => tx.sent_sat,
            (None, true) => 0,
            (None, false) => self.amount_sat,
        }
    }

    /// Still on its way: not broadcast, not abandoned.
    pub fn pending(&self) -> bool {
        !self.broadcast && !self.abandoned
    }
}

/// Why a buyer's node withholds the next slice: the provider is not (visibly) delivering what was paid for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum NotDelivering {
    /// The provider's latest status says the machine is not running.
    NotRunning {
        #[schema(value_type = String)]
        state: LeaseState,
    },
    /// No fresh status from the provider: the latest is `age_secs` old and a request for a new one went
    /// unanswered.
    StatusStale { age_secs: u64 },
    /// Payments this node saw confirmed are not in the provider's reported `paid_sat`.
    PaymentsNotCounted {
        confirmed_sat: u64,
        counted_sat: u64,
    },
    /// The provider never started the machine after payment (`start_timeout_secs`).
    NotStarted,
}

impl std::fmt::Display for NotDelivering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotDelivering::NotRunning { state } => write!(
                f,
                "the provider reports the lease {}, not a running machine",
                format!("{state:?}").to_lowercase()
            ),
            NotDelivering::StatusStale { age_secs } => write!(
                f,
                "the provider has not answered for {age_secs} s (no fresh status)"
            ),
            NotDelivering::PaymentsNotCounted {
                confirmed_sat,
                counted_sat,
            } => write!(
                f,
                "{confirmed_sat} sat of our payments confirmed, but the provider counts {counted_sat}"
            ),
            NotDelivering::NotStarted => {
                write!(f, "the provider never started the machine after payment")
            }
        }
    }
}

impl LeaseRecord {
    /// Moves the record through the protocol's state machine; an impossible step is an error, not a jump.
    pub fn apply(
        &mut self,
        event: LeaseEvent,
        at: u64,
        detail: impl Into<String>,
    ) -> Result<LeaseState, xov_protocol::lease::TransitionError> {
        let next = self.state.apply(event)?;
        self.set_state(next, at, detail);
        Ok(next)
    }

    /// The lease's meter at its current balance, running since `started_at`.
    pub fn meter(&self, started_at: u64) -> xov_protocol::Meter {
        xov_protocol::Meter {
            price_sats_per_hour: self.price_sats_per_hour,
            paid_sat: self.paid_sat,
            started_at,
        }
    }

    /// Records a state reported by the other party (the buyer mirrors the provider's machine).
    pub fn set_state(&mut self, state: LeaseState, at: u64, detail: impl Into<String>) {
        self.state = state;
        self.push_step(at, state, detail.into());
    }

    /// Appends a step to the history, unless it repeats the last one; keeps the history bounded (the first
    /// steps and the latest), whatever the other party sends.
    pub fn push_step(&mut self, at: u64, state: LeaseState, detail: String) {
        if self
            .history
            .last()
            .is_some_and(|s| s.state == state && s.detail == detail)
        {
            return;
        }
        self.history.push(Step { at, state, detail });
        if self.history.len() > MAX_HISTORY {
            self.history.remove(HISTORY_HEAD);
        }
    }

    /// Brings a record written before the lease machine to its rules, once: what the earlier engine settled
    /// (everything, for an ended lease; its refunds, for a live one) is never refunded again, and a live
    /// lease is charged from its start as the earlier engine metered it. Returns whether anything changed.
    pub fn migrate(&mut self, now: u64) -> bool {
        if self.engine >= ENGINE {
            return false;
        }
        self.engine = ENGINE;
        if self.role == Role::Provider {
            if self.state.is_terminal() {
                self.legacy_settled_sat = u64::MAX;
            } else {
                self.legacy_settled_sat = self.refunded_sat;
                self.machine_may_exist = self.state.may_have_machine();
                if let Some(started) = self.started_at {
                    self.charged_secs = now.saturating_sub(started);
                    if matches!(
                        self.state,
                        LeaseState::Running | LeaseState::Warned | LeaseState::Grace
                    ) {
                        self.metered_at = Some(now);
                    }
                }
                self.invoice_expires_at = self
                    .invoice_hex
                    .as_deref()
                    .and_then(|h| hex::decode(h).ok())
                    .and_then(|b| {
                        xov_protocol::Signed::<xov_protocol::Invoice>::from_stored_bytes(&b).ok()
                    })
                    .map_or(now, |i| i.body().expires_at);
            }
        }
        true
    }
}

impl Store {
    pub fn put_lease(&self, l: &LeaseRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(l).expect("lease records serialize");
        self.put_raw(crate::store::CF_LEASES, l.id.as_bytes(), &bytes)
    }

    pub fn leases(&self) -> Result<Vec<LeaseRecord>, StoreError> {
        Ok(self
            .load_raw(crate::store::CF_LEASES)?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect())
    }
}
