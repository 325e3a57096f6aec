//! The lease machine: every decision about a lease, for both roles, as one pure function
//! [`handle`]`(record, input, now, ctx) -> Outcome`. No clock reads, no I/O, no awaits: the driver
//! (`lease::driver`) feeds it inputs (wallet views, clock ticks, notices, results of actions), persists the
//! record it returns, and only then carries out the actions. The simulator (`node/tests/lease_sim.rs`) drives
//! the same function with an in-memory world.
//!
//! Invariants (checked by the simulator over thousands of random schedules with crashes):
//! - A launch is asked only while confirmed (or zero-conf, within the policy) funds cover the offer's
//!   shortest lease, and never for a cancelled lease.
//! - The machine is level-triggered: from the record and `now` alone it re-derives what is wanted (launch,
//!   stop, start, delete, refund, notice), so after a crash the same actions are asked again; every action is
//!   idempotent at its executor (tagged cloud resources, signed transactions persisted before broadcast).
//! - Money: per lease, confirmed received = earned + refunded (values, fees included) + written off + owed.
//!   Earned is at most the metered running time at the lease's price; zero-conf money is never refunded;
//!   a refund is an intent persisted with an id, built once, and its signed transaction persisted before it
//!   is broadcast, so nothing is refunded twice.
//! - A cancelled lease never (re)starts; a failed, expired or closed lease keeps no machine (delete is asked
//!   until the cloud confirms) and refunds whatever confirmed money it did not earn, late payments included.
//! - Admission ([`check_order_parties`], [`check_order`]) refuses an order of another chain, sender or
//!   provider before anything is looked up or invoiced.
//! - Buyer, paying in slices ([`plan_budget`], `buyer_settle`): the slices' amounts to the lease's address
//!   never add up to more than the budget; a slice is an intent persisted with a number, built and signed
//!   once, its transaction persisted before it is broadcast, so each is paid at most once across crashes
//!   (an intent never built is dropped once the lease ends). A new slice is decided only while no earlier
//!   one is under way, every payment of ours is confirmed and counted in the provider's fresh status, the
//!   machine runs and the start timeout did not fire; otherwise it is withheld, said in the history, and
//!   an alert is raised once per reason.

use std::fmt;

use xov_protocol::{
    Access, Chain, Keypair, LeaseEvent, LeaseNotice, LeaseState, LeaseStatus, MessageId, NodeId,
    NoticeBody, OrderRefusal, PoolId, ProviderReceipt, Receipt, Signed, SignedReceipt,
};

use super::record::{
    Budget, InstanceInfo, LeaseRecord, NotDelivering, PaymentOut, Refund, RefundTx, Role,
    SentPayment, Slice,
};

/// The provider's terms and both sides' timeouts. Everything the machine decides by, apart from the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    /// Confirmations a payment needs to count.
    pub min_confirmations: u32,
    /// An unconfirmed payment counts at once if its own amount is at most this and it does not signal RBF;
    /// the unconfirmed sats counted per lease are capped at this too (0 = never).
    pub zero_conf_max_sat: u64,
    pub warn_before_secs: u64,
    pub grace_secs: u64,
    pub hold_secs: u64,
    /// A payment seen but not confirmed keeps the lease's machine reserved this long past the invoice's
    /// expiry; then the lease expires (a later confirmation is refunded).
    pub payment_seen_ttl_secs: u64,
    /// The provider gives up launching this long after the lease was funded (the lease fails, is refunded,
    /// and any machine is deleted).
    pub launch_deadline_secs: u64,
    /// First wait after a transient cloud or wallet error; doubled per attempt up to `retry_max_secs`.
    pub retry_base_secs: u64,
    pub retry_max_secs: u64,
    /// An unacknowledged notice is sent again after this long.
    pub notice_retry_secs: u64,
    /// Buyer: the provider must report a running machine within this long after our payment.
    pub start_timeout_secs: u64,
    /// Refunds smaller than this are written off (they would mostly pay the network fee).
    pub refund_min_sat: u64,
    /// Money counts toward a refund only at this depth (at least `min_confirmations`): a refund paid out of
    /// a payment that a reorg then removes would be money the provider never received.
    pub refund_confirmations: u32,
    /// A halted machine restarts after a top-up only if the balance covers at least this long.
    pub restart_min_secs: u64,
    /// Buyer, paying in slices: the next slice is paid this long before the provider's drain warning would
    /// come (`warn_before_secs` before the paid time ends), leaving the payment time to confirm.
    pub slice_lead_secs: u64,
    /// Buyer: a provider status older than this is stale; before a slice a fresh one is asked for, and a
    /// provider that does not answer within this long gets no slice.
    pub status_fresh_secs: u64,
}

impl Default for Terms {
    fn default() -> Self {
        Terms {
            min_confirmations: 1,
            zero_conf_max_sat: 0,
            warn_before_secs: 600,
            grace_secs: 300,
            hold_secs: 3600,
            payment_seen_ttl_secs: 6 * 3600,
            launch_deadline_secs: 1800,
            retry_base_secs: 5,
            retry_max_secs: 300,
            notice_retry_secs: 30,
            start_timeout_secs: 3600,
            refund_min_sat: 600,
            refund_confirmations: 3,
            restart_min_secs: 60,
            slice_lead_secs: 1200,
            status_fresh_secs: 300,
        }
    }
}

/// What the machine is handed besides the record: the terms and this node's key (signing is pure).
pub struct Ctx<'a> {
    pub terms: &'a Terms,
    pub key: &'a Keypair,
}

/// A cloud operation's failure, by what the machine should do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudError {
    /// Try again later (the cloud is unreachable, the machine is still building, a state change timed out).
    #[error("cloud not ready: {detail}")]
    Transient { detail: String },
    /// This lease cannot get a machine here (the cloud refused or the machine went to ERROR).
    #[error("launch failed: {detail}")]
    LaunchFailed { detail: String },
    /// The provider's cloud configuration cannot work; the lease cannot be served.
    #[error("cloud configuration: {detail}")]
    Config { detail: String },
    /// The lease has no machine (stop, start).
    #[error("no machine for the lease")]
    NoMachine,
}

/// A refund's failure, by what the machine should do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefundError {
    /// The value would not cover the network fee and the dust limit: written off.
    #[error("too small to send ({value_sat} sat)")]
    Uneconomic { value_sat: u64 },
    /// Try again later (no funds spendable yet, chain source not connected, broadcast refused for now).
    #[error("refund not sent yet: {detail}")]
    Later { detail: String },
}

/// A slice payment's failure, by what the machine should do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SliceError {
    /// The wallet has not enough to pay it (tried again later; the user is told).
    #[error("the wallet cannot pay it: {detail}")]
    Funds { detail: String },
    /// The payment would not clear the dust limit after its fee: it is never made.
    #[error("too small to pay: {detail}")]
    Uneconomic { detail: String },
    /// Try again later (chain source not connected, broadcast not taken yet).
    #[error("not paid yet: {detail}")]
    Later { detail: String },
}

/// Everything that can happen to a lease. (Inputs are short-lived, one at a time per lease: the size of the
/// largest, a notice, costs nothing worth a box.)
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum Input {
    /// Time passed: meter, warn, halt, expire, retry, resend.
    Tick,
    /// Provider: the wallet's view of every output paying the lease's address, at chain tip `tip`.
    Payments {
        payments: Vec<PaymentOut>,
        tip: u32,
    },
    /// Provider: the buyer asked to end the lease. Buyer: the user asked to (a notice goes to the provider).
    Cancel,
    Launched(Result<InstanceInfo, CloudError>),
    Stopped(Result<(), CloudError>),
    Started(Result<(), CloudError>),
    Deleted(Result<(), CloudError>),
    RefundBuilt {
        id: u32,
        result: Result<RefundTx, RefundError>,
    },
    RefundSent {
        id: u32,
        result: Result<(), RefundError>,
    },
    /// The other side acknowledged our notice with this sequence number.
    Acked {
        seq: u64,
    },
    /// A notice from the lease's other party (the driver checked its signature and sender).
    Notice(LeaseNotice),
    /// Buyer: this node paid the lease's address.
    Paid(SentPayment),
    /// Buyer: a slice's payment was built and signed (not broadcast), or could not be.
    SliceBuilt {
        n: u32,
        result: Result<RefundTx, SliceError>,
    },
    /// Buyer: a slice's signed payment was broadcast, or not yet.
    SliceSent {
        n: u32,
        result: Result<(), SliceError>,
    },
    /// Buyer: the wallet's view of this node's payments for the lease, by txid (the height of the block
    /// holding it, None while unconfirmed or unknown), at chain tip `tip`.
    Confirmations {
        txs: Vec<(String, Option<u32>)>,
        tip: u32,
    },
    /// Buyer: a payment of ours was replaced by a fee bump (`old` → `new`, same outputs).
    Replaced {
        old: String,
        new: String,
    },
    /// The node restarted (or lost the answer of a cloud action): what the cloud did since the last answer is
    /// unknown. Metering pauses until the cloud confirms the machine runs, and the wanted state is asked
    /// for again (idempotent). After a restart the wallet's current view comes with it, so nothing is decided
    /// on payments from before the restart.
    Restarted {
        view: Option<(Vec<PaymentOut>, u32)>,
    },
}

/// What the driver must do after persisting the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Launch(LaunchSpec),
    Stop,
    Start,
    Delete,
    /// Build and sign (not broadcast) a refund; answer with `Input::RefundBuilt`.
    BuildRefund {
        id: u32,
        value_sat: u64,
        address: String,
    },
    /// Broadcast a refund whose signed transaction is persisted; answer with `Input::RefundSent`.
    Broadcast {
        id: u32,
        tx: RefundTx,
    },
    /// Buyer: build and sign (not broadcast) a payment of `amount_sat` to the lease's address, the network
    /// fee on top; answer with `Input::SliceBuilt`.
    PaySlice {
        n: u32,
        amount_sat: u64,
        address: String,
    },
    /// Buyer: broadcast a slice whose signed payment is persisted; answer with `Input::SliceSent`.
    SendSlice {
        n: u32,
        tx: RefundTx,
    },
    /// Send a notice to the other party; an acknowledgement comes back as `Input::Acked`.
    Send(Signed<LeaseNotice>),
    /// A receipt both parties signed: add it to the trust evidence and gossip it.
    PublishReceipt(SignedReceipt),
    /// Tell the user (event bus, log).
    Alert(Alert),
}

/// The kinds of action, for the driver's "one of each in flight per lease" rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionKind {
    Cloud,
    BuildRefund(u32),
    Broadcast(u32),
    PaySlice(u32),
    SendSlice(u32),
    Send,
    Publish,
    Alert,
}

impl Action {
    pub fn kind(&self) -> ActionKind {
        match self {
            // One cloud operation at a time per lease: the provisioner serialises them anyway, and a result
            // must be judged against the state it was asked in.
            Action::Launch(_) | Action::Stop | Action::Start | Action::Delete => ActionKind::Cloud,
            Action::BuildRefund { id, .. } => ActionKind::BuildRefund(*id),
            Action::Broadcast { id, .. } => ActionKind::Broadcast(*id),
            Action::PaySlice { n, .. } => ActionKind::PaySlice(*n),
            Action::SendSlice { n, .. } => ActionKind::SendSlice(*n),
            Action::Send(_) => ActionKind::Send,
            Action::PublishReceipt(_) => ActionKind::Publish,
            Action::Alert(_) => ActionKind::Alert,
        }
    }
}

/// Something a person should hear about.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "alert", rename_all = "snake_case")]
pub enum Alert {
    /// Buyer: paid, but the provider has not started the machine in time.
    NotStarted { lease_id: String, paid_at: u64 },
    /// Buyer: the provider's receipt disagrees with what this node saw; it was not countersigned.
    ReceiptRefused { lease_id: String, why: String },
    /// Provider: money is owed back but the order named no refund address.
    RefundOwed { lease_id: String, sat: u64 },
    /// Buyer, paying in slices: the provider is not (visibly) delivering, so the next slice is withheld.
    SliceWithheld {
        lease_id: String,
        reason: NotDelivering,
    },
    /// Buyer, paying in slices: the wallet could not pay a slice that is due (tried again).
    SliceNotPaid {
        lease_id: String,
        n: u32,
        why: String,
    },
}

impl fmt::Display for Alert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Alert::NotStarted { lease_id, .. } => write!(
                f,
                "lease {lease_id}: paid, but the provider has not started the machine; it is refunded if it fails, or cancel with `xov lease cancel {lease_id}`"
            ),
            Alert::ReceiptRefused { lease_id, why } => {
                write!(f, "lease {lease_id}: receipt not countersigned: {why}")
            }
            Alert::RefundOwed { lease_id, sat } => write!(
                f,
                "lease {lease_id}: {sat} sat are owed to the buyer, but the order named no refund address"
            ),
            Alert::SliceWithheld { lease_id, reason } => write!(
                f,
                "lease {lease_id}: no further slice is paid: {reason}; the lease runs out unless the provider delivers again, or cancel with `xov lease cancel {lease_id}`"
            ),
            Alert::SliceNotPaid { lease_id, n, why } => write!(
                f,
                "lease {lease_id}: slice {n} is due but was not paid: {why}; fund the wallet (`xov wallet address`)"
            ),
        }
    }
}

/// What to launch for a lease.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LaunchSpec {
    pub lease_id: String,
    pub offer_id: u64,
    pub vcpus: u32,
    pub ram_mib: u32,
    pub disk_gib: u32,
    pub image: String,
    pub ssh_public_key: String,
    /// TCP ports besides the provider's own the buyer asked for (the order's).
    #[serde(default)]
    pub extra_ports: Vec<u16>,
}

/// The machine's answer: the record to persist (None: unchanged), then the actions to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub record: Option<LeaseRecord>,
    pub actions: Vec<Action>,
}

/// The receipt as people read it in a lease's history (`receipt {json}`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReceiptView {
    pub lease_id: String,
    pub provider: String,
    pub buyer: String,
    pub started_at: u64,
    pub ended_at: u64,
    pub paid_sat: u64,
    pub refunded_sat: u64,
}

/// Applies one input at `now`; returns the record to persist and the actions to take after persisting it.
pub fn handle(rec: &LeaseRecord, input: Input, now: u64, ctx: &Ctx<'_>) -> Outcome {
    let mut l = rec.clone();
    let mut out = Vec::new();
    let before = status_of(&l, now);
    match l.role {
        Role::Provider => {
            if matches!(input, Input::Restarted { .. }) {
                // Not charged: the time since the last metering (the machine may have been stopped then).
                l.metered_at = None;
            }
            accrue(&mut l, now);
            provider_input(&mut l, input, now, ctx, &mut out);
            refresh_money(&mut l, ctx.terms);
            provider_settle(&mut l, now, ctx, &mut out);
            refresh_money(&mut l, ctx.terms);
        }
        Role::Buyer => {
            buyer_input(&mut l, input, now, ctx, &mut out);
            buyer_settle(&mut l, now, ctx, &mut out);
        }
    }
    // Our side of the conversation: a changed status (provider) is a new notice; unacknowledged ones are
    // sent again after a while.
    if l.role == Role::Provider && status_of(&l, now) != before {
        l.out_seq += 1;
        l.sent_at = None;
    }
    if l.receipt_seq > l.out_seq {
        l.out_seq = l.receipt_seq;
        l.sent_at = None;
    }
    if l.out_seq > l.acked_seq
        && l.sent_at
            .is_none_or(|t| now >= t.saturating_add(ctx.terms.notice_retry_secs))
    {
        if let Some(n) = notice_of(&l, now, ctx) {
            l.sent_at = Some(now);
            out.push(Action::Send(n));
        }
    }
    let record = (l != *rec && !only_metered(rec, &l)).then_some(l);
    Outcome {
        record,
        actions: out,
    }
}

/// Metering is written at least this often, so a restart (which charges nothing for the unknown time since
/// the last write) gives away at most this much running time.
const METERING_WRITE_SECS: u64 = 300;

/// Whether `new` differs from `old` only by metering that `old` already implies (charged seconds grow
/// exactly as the metering clock moves): such a record need not be written, since re-reading `old` and
/// metering again gives the same charge. Saves a write per running lease per tick.
fn only_metered(old: &LeaseRecord, new: &LeaseRecord) -> bool {
    match (old.metered_at, new.metered_at) {
        (Some(a), Some(b))
            if b >= a
                && b - a < METERING_WRITE_SECS
                && new.charged_secs == old.charged_secs + (b - a) =>
        {
            let mut same = new.clone();
            same.charged_secs = old.charged_secs;
            same.metered_at = old.metered_at;
            same == *old
        }
        _ => false,
    }
}

// --------------------------------------------------------------------------------------- admission

/// The provider's first checks of a valid order, before it looks anything up: signed by the peer that sent
/// it (`from`), addressed to this provider (`me`), and for this provider's chain. An order for another chain
/// is refused here, so nothing is invoiced (and nothing paid) across bitcoin networks.
pub fn check_order_parties(
    o: &xov_protocol::Order,
    from: Option<NodeId>,
    me: &NodeId,
    chain: Chain,
) -> Result<(), OrderRefusal> {
    if Some(o.buyer) != from {
        return Err(OrderRefusal::NotFromBuyer);
    }
    if o.provider != *me {
        return Err(OrderRefusal::WrongProvider);
    }
    if o.chain != chain {
        return Err(OrderRefusal::WrongChain {
            provider: chain,
            order: o.chain,
        });
    }
    Ok(())
}

/// The buyer's answer to a refusal of its order for `asked`: the offer version to order once more, if any.
/// Only an [`OrderRefusal::OfferChanged`] naming a newer version is retried: with the newest version the
/// buyer's book holds (`in_book`, the same offer as held now) when it is at least the refusal's, else with
/// the version and price the refusal names (the provider's capacity changes bump its offers' versions, and
/// gossip may bring the new one after the order arrived; the provider checks the other terms again); and only
/// while the price stays within `max_price`. The buyer's node then checks the invoice against that price.
pub fn renewed_offer(
    asked: &xov_protocol::Offer,
    why: &OrderRefusal,
    in_book: Option<&xov_protocol::Offer>,
    max_price: Option<u64>,
) -> Option<xov_protocol::Offer> {
    let OrderRefusal::OfferChanged {
        sequence,
        price_sats_per_hour,
        ..
    } = *why
    else {
        return None;
    };
    if sequence <= asked.sequence {
        return None;
    }
    let renewed = match in_book.filter(|n| n.sequence >= sequence) {
        Some(n) => n.clone(),
        None => xov_protocol::Offer {
            sequence,
            price_sats_per_hour,
            ..asked.clone()
        },
    };
    max_price
        .is_none_or(|p| renewed.price_sats_per_hour <= p)
        .then_some(renewed)
}

/// The provider's checks of an order against the offer it names (pure; capacity and trust come after).
pub fn check_order(
    o: &xov_protocol::Order,
    offer: &xov_protocol::Offer,
) -> Result<(), OrderRefusal> {
    if offer.sequence != o.offer_sequence {
        return Err(OrderRefusal::OfferChanged {
            offer_id: o.offer_id,
            sequence: offer.sequence,
            price_sats_per_hour: offer.price_sats_per_hour,
        });
    }
    if offer.pool != o.pool {
        return Err(OrderRefusal::WrongPool {
            offer_id: o.offer_id,
        });
    }
    if !offer.has_image(&o.image) {
        return Err(OrderRefusal::NoSuchImage {
            offer_id: o.offer_id,
            image: o.image.clone(),
            available: offer.images.clone(),
        });
    }
    if let Some(&port) = o.extra_ports.iter().find(|p| !offer.allows_port(**p)) {
        return Err(OrderRefusal::PortNotOffered {
            offer_id: o.offer_id,
            port,
            allowed: offer.extra_ports.clone(),
        });
    }
    let secs = o.hours as u64 * 3600;
    if secs < offer.min_lease_secs as u64 || secs > offer.max_lease_secs as u64 {
        return Err(OrderRefusal::HoursOutOfRange {
            hours: o.hours,
            min_hours: offer.min_lease_secs.div_ceil(3600),
            max_hours: offer.max_lease_secs / 3600,
        });
    }
    xov_protocol::check_ssh_public_key(&o.ssh_public_key).map_err(|e| OrderRefusal::BadSshKey {
        detail: e.to_string(),
    })
}

// ------------------------------------------------------------------------------------------ budget

/// Why a budget cannot buy from an offer (or at all).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error("--slice-hours must be a positive number of hours (got {0})")]
    BadSliceHours(String),
    #[error("a budget of 0 sat buys nothing")]
    ZeroBudget,
    #[error("a slice of {slice_secs} s is shorter than the offer's shortest lease ({min_secs} s)")]
    SliceTooShort { slice_secs: u64, min_secs: u64 },
    #[error("a slice of {slice_secs} s is longer than the offer's longest lease ({max_secs} s)")]
    SliceTooLong { slice_secs: u64, max_secs: u64 },
    #[error(
        "the budget of {budget_sat} sat does not pay the offer's shortest lease ({min_sat} sat)"
    )]
    BelowShortestLease { budget_sat: u64, min_sat: u64 },
    #[error("the offer's leases ({min_secs}..{max_secs} s) fit no whole number of hours to order")]
    NoHours { min_secs: u64, max_secs: u64 },
}

/// Slice length from `--slice-hours` (fractional hours; 0.01 = 36 s).
pub fn slice_secs_of(hours: f64) -> Result<u64, BudgetError> {
    let secs = (hours * 3600.0).round();
    if !hours.is_finite() || hours <= 0.0 || secs < 1.0 || secs > u32::MAX as f64 {
        return Err(BudgetError::BadSliceHours(hours.to_string()));
    }
    Ok(secs as u64)
}

/// A budget's plan against an offer: the slice (the asked length, else an hour or the offer's shortest
/// lease if longer), within the offer's lease bounds; and the hours to order (the invoice's size: the
/// budget's worth, within the bounds). The first slice must pay the offer's shortest lease, or the machine
/// would never start.
pub fn plan_budget(
    total_sat: u64,
    slice_secs: Option<u64>,
    hours: u32,
    offer: &xov_protocol::Offer,
) -> Result<(Budget, u32), BudgetError> {
    if total_sat == 0 {
        return Err(BudgetError::ZeroBudget);
    }
    let (min_secs, max_secs) = (offer.min_lease_secs as u64, offer.max_lease_secs as u64);
    let slice_secs = slice_secs.unwrap_or_else(|| 3600u64.max(min_secs).min(max_secs));
    if slice_secs < min_secs {
        return Err(BudgetError::SliceTooShort {
            slice_secs,
            min_secs,
        });
    }
    if slice_secs > max_secs {
        return Err(BudgetError::SliceTooLong {
            slice_secs,
            max_secs,
        });
    }
    let price = offer.price_sats_per_hour;
    let slice_sat = ((price as u128 * slice_secs as u128).div_ceil(3600) as u64).max(1);
    let min_sat = ((price as u128 * min_secs as u128).div_ceil(3600) as u64).max(1);
    if total_sat.min(slice_sat) < min_sat {
        return Err(BudgetError::BelowShortestLease {
            budget_sat: total_sat,
            min_sat,
        });
    }
    let hours = if hours > 0 {
        hours as u64
    } else {
        let (lo, hi) = (min_secs.div_ceil(3600).max(1), max_secs / 3600);
        if lo > hi {
            return Err(BudgetError::NoHours { min_secs, max_secs });
        }
        total_sat.div_ceil(price.max(1)).clamp(lo, hi)
    };
    Ok((
        Budget {
            total_sat,
            slice_sat,
            slice_secs,
        },
        hours.min(u32::MAX as u64) as u32,
    ))
}

/// What a buyer has at stake in a lease right now, as `xov leases show` says it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Exposure {
    /// Sats paid and not yet used up: `prepaid_left_sat + uncounted_sat`.
    pub at_risk_sat: u64,
    /// The paid time not yet run, at the lease's price (all of what the provider counted, before the
    /// machine started).
    pub prepaid_left_sat: u64,
    /// Sats this node paid that the provider's latest status does not count (unconfirmed, or not credited).
    pub uncounted_sat: u64,
    /// Every sat this node paid to the lease's address.
    pub sent_sat: u64,
    /// Paying in slices: how far the budget went.
    pub budget: Option<BudgetView>,
}

/// A budget's progress.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct BudgetView {
    pub total_sat: u64,
    /// Sats of slices paid or under way (to the lease's address; fees not included).
    pub spent_sat: u64,
    pub left_sat: u64,
    pub slice_sat: u64,
    pub slice_secs: u64,
    /// Slices broadcast.
    pub slices_paid: u32,
    /// Network fees the slices paid on top.
    pub fees_sat: u64,
    /// When the next slice is due (the provider still has to be delivering then).
    pub next_slice_at: Option<u64>,
    /// Why the next slice is withheld, if it is.
    pub withheld: Option<NotDelivering>,
    /// Nothing more will be paid (the budget is spent, or slicing stopped).
    pub done: bool,
}

/// The buyer's exposure at `now` (None for a provider's lease).
pub fn exposure(l: &LeaseRecord, now: u64, t: &Terms) -> Option<Exposure> {
    if l.role != Role::Buyer {
        return None;
    }
    let sent_sat: u64 = l.sent.iter().map(|p| p.amount_sat).sum();
    let uncounted_sat = sent_sat.saturating_sub(l.paid_sat);
    let unused = l.paid_sat.saturating_sub(l.refunded_sat);
    let prepaid_left_sat = match l.state {
        s if is_running(s) => {
            let left = l.runs_until.map_or(0, |u| u.saturating_sub(now));
            ((left as u128 * l.price_sats_per_hour as u128) / 3600).min(unused as u128) as u64
        }
        LeaseState::Invoiced
        | LeaseState::PaymentSeen
        | LeaseState::Funded
        | LeaseState::Provisioning => unused,
        _ => 0,
    };
    let budget = l.budget.map(|b| {
        let spent_sat: u64 = l.slices.iter().map(Slice::committed_sat).sum();
        let done = l.budget_spent
            || l.cancelled
            || l.state.is_terminal()
            || l.slices.iter().any(|s| s.abandoned);
        BudgetView {
            total_sat: b.total_sat,
            spent_sat,
            left_sat: b.total_sat.saturating_sub(spent_sat),
            slice_sat: b.slice_sat,
            slice_secs: b.slice_secs,
            slices_paid: l.slices.iter().filter(|s| s.broadcast).count() as u32,
            fees_sat: l
                .slices
                .iter()
                .filter(|s| s.broadcast)
                .filter_map(|s| s.tx.as_ref().map(|t| t.fee_sat))
                .sum(),
            next_slice_at: if done || l.slices.iter().any(Slice::pending) {
                None
            } else {
                next_slice_due(l, t)
            },
            withheld: l.withheld.clone(),
            done,
        }
    });
    Some(Exposure {
        at_risk_sat: prepaid_left_sat + uncounted_sat,
        prepaid_left_sat,
        uncounted_sat,
        sent_sat,
        budget,
    })
}

// ------------------------------------------------------------------------------------------- money

/// Sats a lease must have before its machine starts: the price of the offer's shortest lease, at least 1.
pub fn min_start(l: &LeaseRecord) -> u64 {
    ((l.price_sats_per_hour as u128 * l.min_lease_secs as u128).div_ceil(3600) as u64).max(1)
}

/// Confirmed sats on the lease's address.
pub fn confirmed_sat(l: &LeaseRecord, t: &Terms) -> u64 {
    l.payments
        .iter()
        .filter(|p| p.confirmations(l.tip) >= t.min_confirmations.max(1))
        .map(|p| p.amount_sat)
        .sum()
}

/// Sats deep enough to be given back (`refund_confirmations`).
pub fn refundable_sat(l: &LeaseRecord, t: &Terms) -> u64 {
    let depth = t.refund_confirmations.max(t.min_confirmations).max(1);
    l.payments
        .iter()
        .filter(|p| p.confirmations(l.tip) >= depth)
        .map(|p| p.amount_sat)
        .sum()
}

/// Unconfirmed sats that count at once: each payment at most the limit and not signalling RBF, and no more
/// than the limit in total.
pub fn zero_conf_sat(l: &LeaseRecord, t: &Terms) -> u64 {
    // As the wallet counts them: below the confirmations needed, a payment counts at once if it is small
    // enough, and (while in the mempool) does not signal RBF; in the order seen, within one cap per lease.
    let mut total = 0u64;
    for p in l
        .payments
        .iter()
        .filter(|p| p.confirmations(l.tip) < t.min_confirmations.max(1))
    {
        if (p.height.is_some() || !p.rbf)
            && p.amount_sat <= t.zero_conf_max_sat
            && total + p.amount_sat <= t.zero_conf_max_sat
        {
            total += p.amount_sat;
        }
    }
    total
}

/// Sats seen on the address that do not count (yet).
fn pending_sat(l: &LeaseRecord, t: &Terms) -> u64 {
    let all: u64 = l.payments.iter().map(|p| p.amount_sat).sum();
    all.saturating_sub(confirmed_sat(l, t) + zero_conf_sat(l, t))
}

/// Sats committed to refunds (values, network fees included); write-offs are counted apart.
pub fn refund_values(l: &LeaseRecord) -> u64 {
    l.refunds
        .iter()
        .filter(|r| !r.written_off)
        .map(|r| r.value_sat)
        .sum()
}

/// Sats refunds have delivered: the amounts of refunds broadcast (their network fees excluded). What the
/// buyer is told; money not yet sent is never reported as refunded.
pub fn refunds_sent(l: &LeaseRecord) -> u64 {
    l.refunds
        .iter()
        .filter(|r| r.broadcast && !r.written_off)
        .filter_map(|r| r.tx.as_ref().map(|t| t.sent_sat))
        .sum()
}

/// What the metered running time costs at the lease's price, rounded up.
pub fn charge_sat(l: &LeaseRecord) -> u64 {
    (l.charged_secs as u128 * l.price_sats_per_hour as u128).div_ceil(3600) as u64
}

/// What the provider keeps: the charge, at most what confirmed and was not given back.
pub fn earned_sat(l: &LeaseRecord, t: &Terms) -> u64 {
    charge_sat(l).min(
        confirmed_sat(l, t)
            .saturating_sub(refund_values(l))
            .saturating_sub(l.written_off_sat),
    )
}

/// Seconds of running the counted funds buy, less what was charged: negative once overdue.
fn balance_secs(l: &LeaseRecord, t: &Terms) -> i64 {
    let credit = (confirmed_sat(l, t) + zero_conf_sat(l, t))
        .saturating_sub(refund_values(l))
        .saturating_sub(l.written_off_sat);
    let secs = (credit as u128 * 3600 / l.price_sats_per_hour.max(1) as u128) as i64;
    secs - l.charged_secs as i64
}

fn is_running(s: LeaseState) -> bool {
    matches!(
        s,
        LeaseState::Running | LeaseState::Warned | LeaseState::Grace
    )
}

/// Charges the running time since the last metering.
fn accrue(l: &mut LeaseRecord, now: u64) {
    if let Some(t) = l.metered_at {
        if is_running(l.state) && !l.cancelled && !l.machine_stopped {
            l.charged_secs += now.saturating_sub(t);
            l.metered_at = Some(now.max(t));
        } else {
            l.metered_at = None;
        }
    }
}

fn backoff(t: &Terms, attempts: u32) -> u64 {
    t.retry_base_secs
        .saturating_mul(1u64 << attempts.min(16))
        .min(t.retry_max_secs)
        .max(1)
}

fn step(l: &mut LeaseRecord, event: LeaseEvent, now: u64, detail: impl Into<String>) -> bool {
    l.apply(event, now, detail).is_ok()
}

fn note(l: &mut LeaseRecord, now: u64, detail: impl Into<String>) {
    let state = l.state;
    l.push_step(now, state, detail.into());
}

// ---------------------------------------------------------------------------------------- provider

fn provider_input(
    l: &mut LeaseRecord,
    input: Input,
    now: u64,
    ctx: &Ctx<'_>,
    out: &mut Vec<Action>,
) {
    let t = ctx.terms;
    match input {
        // Buyer-only inputs.
        Input::Tick
        | Input::Paid(_)
        | Input::SliceBuilt { .. }
        | Input::SliceSent { .. }
        | Input::Confirmations { .. }
        | Input::Replaced { .. } => {}
        Input::Restarted { view } => {
            if l.machine_may_exist && (is_running(l.state) || l.state == LeaseState::Halted) {
                l.metered_at = None;
                l.machine_stopped = false;
            }
            if let Some((payments, tip)) = view {
                provider_input(l, Input::Payments { payments, tip }, now, ctx, out);
            }
        }
        Input::Payments { payments, tip } => {
            let before = confirmed_sat(l, t);
            l.payments = payments;
            l.tip = tip;
            let after = confirmed_sat(l, t);
            if after > before {
                note(
                    l,
                    now,
                    format!("{} sat confirmed ({after} in all)", after - before),
                );
            } else if after < before {
                note(
                    l,
                    now,
                    format!(
                        "{} sat no longer confirmed (reorg or replacement); {after} in all",
                        before - after
                    ),
                );
            }
        }
        Input::Cancel => {
            if !l.cancelled && !l.state.is_terminal() {
                l.cancelled = true;
                l.metered_at = None;
                note(l, now, "cancelled by the buyer");
            }
        }
        Input::Launched(r) => {
            l.machine_may_exist = true;
            match r {
                Ok(info) if l.state == LeaseState::Provisioning => {
                    l.instance = Some(info.clone());
                    l.started_at.get_or_insert(now);
                    l.metered_at = Some(now);
                    l.machine_stopped = false;
                    l.attempts = 0;
                    l.retry_at = None;
                    step(
                        l,
                        LeaseEvent::Launched,
                        now,
                        format!("running on {}", info.addresses.join(", ")),
                    );
                }
                // The lease moved on while the launch ran: the machine is cleaned up by the state's rules.
                Ok(_) => {}
                Err(e @ (CloudError::Transient { .. } | CloudError::NoMachine)) => {
                    let detail = e.to_string();
                    l.attempts += 1;
                    l.retry_at = Some(now + backoff(t, l.attempts));
                    note(
                        l,
                        now,
                        format!("launch not done yet ({detail}); trying again"),
                    );
                }
                Err(e) => {
                    if l.state == LeaseState::Provisioning {
                        step(l, LeaseEvent::LaunchFailed, now, format!("{e}"));
                    }
                }
            }
        }
        Input::Stopped(r) => match r {
            Ok(()) => {
                l.machine_stopped = true;
                l.retry_at = None;
            }
            Err(CloudError::NoMachine) => {
                l.machine_stopped = true;
                l.machine_may_exist = false;
            }
            Err(e) => retry(l, now, t, "stop", &e),
        },
        Input::Started(r) => match r {
            Ok(()) => {
                l.machine_stopped = false;
                l.retry_at = None;
                if is_running(l.state) && !l.cancelled {
                    l.metered_at = Some(now);
                } else if l.state == LeaseState::Halted
                    && !l.cancelled
                    && balance_secs(l, t) >= t.restart_min_secs as i64
                {
                    // Running again only once the cloud says so.
                    l.metered_at = Some(now);
                    step(
                        l,
                        LeaseEvent::ToppedUp,
                        now,
                        "topped up; machine running again",
                    );
                }
            }
            Err(CloudError::NoMachine) => {
                l.machine_may_exist = false;
                l.machine_stopped = true;
                note(l, now, "the machine is gone; it cannot be restarted");
            }
            Err(e) => retry(l, now, t, "start", &e),
        },
        Input::Deleted(r) => match r {
            Ok(()) | Err(CloudError::NoMachine) => {
                l.machine_may_exist = false;
                l.machine_stopped = true;
                l.retry_at = None;
            }
            Err(e) => retry(l, now, t, "delete", &e),
        },
        Input::RefundBuilt { id, result } => {
            if let Some(i) = l
                .refunds
                .iter()
                .position(|r| r.id == id && r.tx.is_none() && !r.written_off)
            {
                match result {
                    Ok(tx) => {
                        l.refund_fees_sat += tx.fee_sat;
                        l.refunds[i].tx = Some(tx);
                        l.refund_retry_at = None;
                    }
                    Err(RefundError::Uneconomic { value_sat })
                        if value_sat >= t.refund_min_sat.saturating_mul(4) =>
                    {
                        // Fees are high now; a refund this size is worth sending later.
                        l.attempts = l.attempts.saturating_add(1);
                        l.refund_retry_at = Some(now + backoff(t, l.attempts.max(4)));
                    }
                    Err(RefundError::Uneconomic { value_sat }) => {
                        // Never sent: the intent becomes a write-off, under the same id forever.
                        l.refunds[i].written_off = true;
                        l.written_off_sat += l.refunds[i].value_sat;
                        l.write_offs += 1;
                        note(
                            l,
                            now,
                            format!("refund of {value_sat} sat too small to send; written off"),
                        );
                    }
                    Err(RefundError::Later { detail }) => {
                        l.attempts = l.attempts.saturating_add(1);
                        l.refund_retry_at = Some(now + backoff(t, l.attempts.max(2)));
                        note(l, now, format!("refund not built yet: {detail}"));
                    }
                }
            }
        }
        Input::RefundSent { id, result } => {
            if let Some(r) = l.refunds.iter_mut().find(|r| r.id == id) {
                match result {
                    Ok(()) if !r.broadcast => {
                        r.broadcast = true;
                        let txid = r.tx.as_ref().map(|t| t.txid.clone()).unwrap_or_default();
                        let sent = r.tx.as_ref().map_or(0, |t| t.sent_sat);
                        note(l, now, format!("refunded {sent} sat in {txid}"));
                    }
                    Ok(()) => {}
                    Err(e) => {
                        l.attempts = l.attempts.saturating_add(1);
                        l.refund_retry_at = Some(now + backoff(t, l.attempts.max(2)));
                        note(l, now, format!("refund broadcast failed: {e}"));
                    }
                }
            }
        }
        Input::Acked { seq } => acked(l, seq),
        Input::Notice(n) => {
            match n.body {
                NoticeBody::Cancel => provider_input(l, Input::Cancel, now, ctx, out),
                NoticeBody::StatusRequest => {
                    // Send the current state again now.
                    l.sent_at = None;
                    if l.acked_seq >= l.out_seq {
                        l.out_seq += 1;
                    }
                }
                NoticeBody::Countersigned(signed) => {
                    let ours = l.receipt_hex.clone();
                    let r = signed.receipt();
                    let matches = signed.verify()
                        && r.provider == ctx.key.node_id()
                        && r.lease_id.to_string() == l.id
                        && ours.is_some_and(|h| {
                            let theirs =
                                ProviderReceipt::from_parts(r.clone(), *signed.provider_sig());
                            hex::encode(xov_protocol::Encode::to_canonical_bytes(&theirs)) == h
                        });
                    if matches && l.countersigned_hex.is_none() {
                        let hexed = hex::encode(signed.to_bytes());
                        note(l, now, format!("buyer countersigned receipt {hexed}"));
                        l.countersigned_hex = Some(hexed);
                        out.push(Action::PublishReceipt(signed));
                    }
                }
                NoticeBody::Status(_) | NoticeBody::Receipt(_) => {}
            }
            l.peer_seq = l.peer_seq.max(n.seq);
        }
    }
}

/// The other side has our notices up to `seq`; anything newer goes out now rather than at the next resend.
fn acked(l: &mut LeaseRecord, seq: u64) {
    l.acked_seq = l.acked_seq.max(seq.min(l.out_seq));
    if l.acked_seq < l.out_seq {
        l.sent_at = None;
    }
}

fn retry(l: &mut LeaseRecord, now: u64, t: &Terms, what: &str, e: &CloudError) {
    l.attempts += 1;
    l.retry_at = Some(now + backoff(t, l.attempts));
    note(l, now, format!("{what} not done yet ({e}); trying again"));
}

/// The provider's level-triggered rules: from the record and `now`, move the state and ask for what is
/// wanted.
fn provider_settle(l: &mut LeaseRecord, now: u64, ctx: &Ctx<'_>, out: &mut Vec<Action>) {
    let t = ctx.terms;
    let cloud_ready = l.retry_at.is_none_or(|r| now >= r);
    // State moves first (a few steps may follow each other: funded → provisioning, drained → grace ...).
    for _ in 0..6 {
        let s = l.state;
        let counted = confirmed_sat(l, t) + zero_conf_sat(l, t);
        match s {
            LeaseState::Ordered => {}
            LeaseState::Invoiced | LeaseState::PaymentSeen => {
                let pending = pending_sat(l, t);
                let seen_expired =
                    now >= l.invoice_expires_at.saturating_add(t.payment_seen_ttl_secs);
                if l.cancelled {
                    if pending == 0 || seen_expired {
                        if confirmed_sat(l, t) > 0 {
                            step(
                                l,
                                LeaseEvent::PaymentConfirmed,
                                now,
                                "paid after the cancellation",
                            );
                            step(
                                l,
                                LeaseEvent::Cancelled,
                                now,
                                "cancelled before launch; refunding",
                            );
                        } else {
                            if s == LeaseState::PaymentSeen {
                                step(
                                    l,
                                    LeaseEvent::PaymentReorged,
                                    now,
                                    "the payment did not confirm",
                                );
                            }
                            step(l, LeaseEvent::Cancelled, now, "cancelled before payment");
                        }
                    }
                } else if counted >= min_start(l) {
                    step(
                        l,
                        LeaseEvent::PaymentConfirmed,
                        now,
                        format!("{counted} sat confirmed; launching"),
                    );
                } else if s == LeaseState::Invoiced && counted + pending >= min_start(l) {
                    step(
                        l,
                        LeaseEvent::PaymentSeen,
                        now,
                        format!("{pending} sat seen; waiting for confirmation"),
                    );
                } else if s == LeaseState::PaymentSeen && counted + pending < min_start(l) {
                    step(
                        l,
                        LeaseEvent::PaymentReorged,
                        now,
                        "the payment seen is gone (replaced or reorged); waiting for payment",
                    );
                } else if s == LeaseState::Invoiced && now >= l.invoice_expires_at {
                    step(l, LeaseEvent::InvoiceExpired, now, "invoice expired unpaid");
                } else if s == LeaseState::PaymentSeen && seen_expired {
                    step(
                        l,
                        LeaseEvent::InvoiceExpired,
                        now,
                        "the payment seen never confirmed; the reservation lapsed (a late confirmation is refunded)",
                    );
                }
            }
            LeaseState::Funded => {
                if l.cancelled {
                    step(
                        l,
                        LeaseEvent::Cancelled,
                        now,
                        "cancelled before launch; refunding",
                    );
                } else {
                    l.provisioning_since = Some(now);
                    l.attempts = 0;
                    l.retry_at = None;
                    step(
                        l,
                        LeaseEvent::LaunchRequested,
                        now,
                        "payment confirmed; launching your machine",
                    );
                }
            }
            LeaseState::Provisioning => {
                let since = *l.provisioning_since.get_or_insert(now);
                if l.cancelled {
                    step(
                        l,
                        LeaseEvent::LaunchFailed,
                        now,
                        "cancelled before the machine ran; refunding",
                    );
                } else if now >= since.saturating_add(t.launch_deadline_secs) {
                    step(
                        l,
                        LeaseEvent::LaunchFailed,
                        now,
                        format!(
                            "the machine did not start within {} s; refunding",
                            t.launch_deadline_secs
                        ),
                    );
                }
            }
            LeaseState::Running | LeaseState::Warned | LeaseState::Grace => {
                let left = balance_secs(l, t);
                let warn = t.warn_before_secs as i64;
                if !l.machine_may_exist {
                    // The cloud says the machine is gone: nothing more is charged; the lease ends and the
                    // unused part is refunded when it closes.
                    l.metered_at = None;
                    l.machine_stopped = true;
                    if s != LeaseState::Grace {
                        step(l, LeaseEvent::Drained, now, "the machine is gone");
                    } else {
                        l.halted_at = Some(now);
                        step(
                            l,
                            LeaseEvent::GraceOver,
                            now,
                            "the machine is gone; the lease ends",
                        );
                    }
                } else if l.cancelled {
                    if l.machine_stopped {
                        l.halted_at = Some(now);
                        step(l, LeaseEvent::Cancelled, now, "machine stopped (cancelled)");
                    }
                } else if left > warn {
                    if s != LeaseState::Running {
                        step(l, LeaseEvent::ToppedUp, now, "topped up; lease extended");
                    }
                } else if left > 0 {
                    match s {
                        LeaseState::Running => {
                            step(
                                l,
                                LeaseEvent::BalanceLow,
                                now,
                                format!(
                                    "funds run out in {left} s; pay the same address to extend"
                                ),
                            );
                        }
                        LeaseState::Grace => {
                            step(l, LeaseEvent::ToppedUp, now, "topped up; lease extended");
                        }
                        _ => {}
                    }
                } else if s != LeaseState::Grace {
                    step(
                        l,
                        LeaseEvent::Drained,
                        now,
                        format!(
                            "funds exhausted; the machine halts in {} s unless topped up",
                            (t.grace_secs as i64 + left).max(0)
                        ),
                    );
                } else if -left >= t.grace_secs as i64 && l.machine_stopped {
                    l.halted_at = Some(now);
                    step(
                        l,
                        LeaseEvent::GraceOver,
                        now,
                        format!(
                            "machine halted; it is deleted in {} s unless topped up",
                            t.hold_secs
                        ),
                    );
                }
            }
            LeaseState::Halted => {
                if !l.machine_may_exist {
                    step(l, LeaseEvent::Deleted, now, "machine deleted");
                }
            }
            LeaseState::Closed | LeaseState::Refused | LeaseState::Expired | LeaseState::Failed => {
            }
        }
        if l.state == s {
            break;
        }
    }

    // What the cloud should do, from the state reached.
    let left = balance_secs(l, t);
    let wanted = match l.state {
        LeaseState::Provisioning
            if !l.cancelled && confirmed_sat(l, t) + zero_conf_sat(l, t) >= min_start(l) =>
        {
            l.machine_may_exist = true;
            Some(Action::Launch(LaunchSpec {
                lease_id: l.id.clone(),
                offer_id: l.offer_id,
                vcpus: l.vcpus,
                ram_mib: l.ram_mib,
                disk_gib: l.disk_gib,
                image: l.image.clone(),
                ssh_public_key: l.ssh_public_key.clone(),
                extra_ports: l.extra_ports.clone(),
            }))
        }
        s if is_running(s) => {
            let overdue = left <= -(t.grace_secs as i64);
            if l.cancelled || overdue {
                // Metering ends when the stop is asked: if its answer is lost (crash), a machine that is
                // already stopped must not go on being charged.
                (!l.machine_stopped).then(|| {
                    l.metered_at = None;
                    Action::Stop
                })
            } else {
                // Not metered: a stop was asked and the lease was topped up since (the machine may be
                // stopped even if the stop's answer was lost); start it (idempotent), metering resumes then.
                (l.machine_stopped || l.metered_at.is_none()).then_some(Action::Start)
            }
        }
        LeaseState::Halted => {
            let hold_over = now >= l.halted_at.unwrap_or(now).saturating_add(t.hold_secs);
            if !l.machine_stopped {
                Some(Action::Stop)
            } else if !l.cancelled && left >= t.restart_min_secs as i64 {
                Some(Action::Start)
            } else if hold_over {
                Some(Action::Delete)
            } else {
                None
            }
        }
        s if s.is_terminal() && l.machine_may_exist => Some(Action::Delete),
        _ => None,
    };
    if let Some(a) = wanted {
        if cloud_ready {
            out.push(a);
        }
    }

    // Money owed back: once the lease is ending (cancelled) or over, everything confirmed and not earned.
    if l.cancelled || l.state.is_terminal() {
        settle_money(l, now, t, out);
    }
    // Refunds under way, from intent to broadcast.
    if l.refund_retry_at.is_none_or(|r| now >= r) {
        for r in l.refunds.iter().filter(|r| !r.written_off) {
            match &r.tx {
                None => out.push(Action::BuildRefund {
                    id: r.id,
                    value_sat: r.value_sat,
                    address: r.address.clone(),
                }),
                Some(tx) if !r.broadcast => out.push(Action::Broadcast {
                    id: r.id,
                    tx: tx.clone(),
                }),
                Some(_) => {}
            }
        }
    }
    // The receipt, once the lease closed.
    if l.state == LeaseState::Closed && l.receipt_hex.is_none() {
        if let Some(pr) = provider_receipt(l, now, ctx) {
            let view = ReceiptView {
                lease_id: l.id.clone(),
                provider: ctx.key.node_id().to_string(),
                buyer: l.counterparty.clone(),
                started_at: pr.receipt().started_at,
                ended_at: pr.receipt().ended_at,
                paid_sat: pr.receipt().paid_sats,
                refunded_sat: pr.receipt().refunded_sats,
            };
            note(
                l,
                now,
                format!(
                    "receipt {}",
                    serde_json::to_string(&view).unwrap_or_default()
                ),
            );
            l.receipt_hex = Some(hex::encode(xov_protocol::Encode::to_canonical_bytes(&pr)));
            // The receipt is the notice until the buyer acknowledged it; later changes (a late payment and
            // its refund) go as statuses again.
            l.receipt_seq = l.out_seq + 1;
        }
    }
}

fn settle_money(l: &mut LeaseRecord, now: u64, t: &Terms, out: &mut Vec<Action>) {
    // Only money deep enough is given back; what is less deep waits (level-triggered: it is owed later).
    let confirmed = refundable_sat(l, t);
    let given = refund_values(l) + l.written_off_sat;
    let owed = confirmed
        .saturating_sub(given)
        .saturating_sub(charge_sat(l))
        .saturating_sub(l.legacy_settled_sat);
    if owed == 0 {
        if l.owed_sat != 0 {
            l.owed_sat = 0;
        }
        return;
    }
    match l.refund_address.clone() {
        None => {
            if l.owed_sat != owed {
                l.owed_sat = owed;
                note(
                    l,
                    now,
                    format!("{owed} sat owed to the buyer; the order named no refund address"),
                );
                out.push(Action::Alert(Alert::RefundOwed {
                    lease_id: l.id.clone(),
                    sat: owed,
                }));
            }
        }
        Some(_) if owed < t.refund_min_sat => {
            l.written_off_sat += owed;
            l.write_offs += 1;
            note(
                l,
                now,
                format!("{owed} sat left over, too few to refund; written off"),
            );
        }
        Some(address) => {
            let id = l.refunds.iter().map(|r| r.id).max().unwrap_or(0) + 1;
            let why = if l.state.is_terminal() && l.state != LeaseState::Closed {
                format!("{:?} lease", l.state).to_lowercase()
            } else if l.cancelled {
                "unused part of a cancelled lease".to_string()
            } else {
                "unused part of the lease".to_string()
            };
            note(
                l,
                now,
                format!("refund {id}: {owed} sat to {address} ({why})"),
            );
            l.refunds.push(Refund {
                id,
                value_sat: owed,
                address,
                why,
                tx: None,
                broadcast: false,
                written_off: false,
            });
        }
    }
}

fn provider_receipt(l: &LeaseRecord, now: u64, ctx: &Ctx<'_>) -> Option<ProviderReceipt> {
    let lease_id = l.id.parse::<MessageId>().ok()?;
    let buyer = l.counterparty.parse::<NodeId>().ok()?;
    let pool = l.pool.parse::<PoolId>().ok()?;
    let t = ctx.terms;
    let started = l.started_at.unwrap_or(now);
    Some(ProviderReceipt::sign(
        Receipt {
            lease_id,
            pool,
            provider: ctx.key.node_id(),
            buyer,
            started_at: started,
            ended_at: l.halted_at.unwrap_or(now).max(started),
            paid_sats: confirmed_sat(l, t),
            refunded_sats: refunds_sent(l).min(confirmed_sat(l, t)),
        },
        ctx.key,
    ))
}

// ------------------------------------------------------------------------------------------- buyer

fn buyer_input(l: &mut LeaseRecord, input: Input, now: u64, ctx: &Ctx<'_>, out: &mut Vec<Action>) {
    let t = ctx.terms;
    match input {
        Input::Paid(p) => {
            if !l.sent.iter().any(|s| s.txid == p.txid) {
                note(l, now, format!("paid {} sat in {}", p.amount_sat, p.txid));
                l.sent.push(p);
            }
        }
        Input::Cancel => {
            if !l.cancelled && !l.state.is_terminal() {
                l.cancelled = true;
                l.out_seq += 1;
                l.sent_at = None;
                note(l, now, "cancel sent to the provider");
            }
        }
        Input::Acked { seq } => acked(l, seq),
        Input::Notice(n) if n.seq > l.peer_seq => {
            l.peer_seq = n.seq;
            match n.body {
                NoticeBody::Status(s) => {
                    // As old as the provider signed it (a status delayed on its way is not fresh news).
                    l.status_at = Some(n.at.min(now));
                    l.paid_sat = s.paid_sats;
                    l.refunded_sat = s.refunded_sats;
                    if s.started_at.is_some() {
                        l.started_at = s.started_at;
                    }
                    l.runs_until = s.runs_until;
                    if let Some(a) = s.access {
                        l.instance = Some(InstanceInfo {
                            server_id: a.server_id,
                            addresses: a.addresses,
                            image: a.image,
                            user: a.user,
                            ssh_port: a.ssh_port,
                            open_ports: a.open_ports,
                        });
                    }
                    if is_running(s.state) {
                        l.stalled = false;
                    }
                    let msg = if s.message.is_empty() {
                        format!("{:?}", s.state).to_lowercase()
                    } else {
                        s.message
                    };
                    l.set_state(s.state, n.at, msg);
                }
                NoticeBody::Receipt(pr) => buyer_receipt(l, pr, now, ctx, out),
                NoticeBody::Cancel | NoticeBody::StatusRequest | NoticeBody::Countersigned(_) => {}
            }
        }
        Input::Notice(n) => {
            // The same status sent again (our acknowledgement was lost): still the provider's current word,
            // since every change of it goes out under a new sequence number.
            if n.seq == l.peer_seq && matches!(n.body, NoticeBody::Status(_)) {
                l.status_at = l.status_at.max(Some(n.at.min(now)));
            }
        }
        Input::SliceBuilt { n, result } => {
            let Some(i) = l
                .slices
                .iter()
                .position(|s| s.n == n && s.tx.is_none() && !s.abandoned)
            else {
                return;
            };
            match result {
                Ok(tx) if tx.sent_sat > l.slices[i].amount_sat => {
                    // Never pay more than the slice: this transaction is not sent, and none is built again.
                    l.slices[i].abandoned = true;
                    let asked = l.slices[i].amount_sat;
                    note(
                        l,
                        now,
                        format!(
                            "slice {n}: the wallet built a payment of {} sat for a slice of {asked}; not sent, and no more slices",
                            tx.sent_sat
                        ),
                    );
                }
                Ok(tx) => {
                    l.slice_retry_at = None;
                    l.attempts = 0;
                    l.slices[i].tx = Some(tx);
                }
                Err(SliceError::Uneconomic { detail }) => {
                    l.slices[i].abandoned = true;
                    note(l, now, format!("slice {n}: not paid: too small ({detail})"));
                }
                Err(e) => {
                    let first = l.slice_retry_at.is_none();
                    l.attempts = l.attempts.saturating_add(1);
                    l.slice_retry_at = Some(now + backoff(t, l.attempts.max(2)));
                    note(l, now, format!("slice {n} not paid yet: {e}"));
                    if first && matches!(e, SliceError::Funds { .. }) {
                        out.push(Action::Alert(Alert::SliceNotPaid {
                            lease_id: l.id.clone(),
                            n,
                            why: e.to_string(),
                        }));
                    }
                }
            }
        }
        Input::SliceSent { n, result } => {
            let Some(i) = l
                .slices
                .iter()
                .position(|s| s.n == n && s.tx.is_some() && !s.broadcast)
            else {
                return;
            };
            match result {
                Ok(()) => {
                    let tx = l.slices[i].tx.clone().unwrap_or_else(|| RefundTx {
                        txid: String::new(),
                        raw_hex: String::new(),
                        fee_sat: 0,
                        sent_sat: 0,
                    });
                    l.slices[i].broadcast = true;
                    l.slice_retry_at = None;
                    l.attempts = 0;
                    if !l.sent.iter().any(|s| s.txids().any(|t| t == tx.txid)) {
                        l.sent
                            .push(SentPayment::new(tx.txid.clone(), tx.sent_sat, now));
                    }
                    let spent: u64 = l.slices.iter().map(Slice::committed_sat).sum();
                    let total = l.budget.map_or(0, |b| b.total_sat);
                    note(
                        l,
                        now,
                        format!(
                            "slice {n}: paid {} sat in {} (fee {}); {spent} of the budget's {total} sat spent",
                            tx.sent_sat, tx.txid, tx.fee_sat
                        ),
                    );
                }
                Err(e) => {
                    l.attempts = l.attempts.saturating_add(1);
                    l.slice_retry_at = Some(now + backoff(t, l.attempts.max(2)));
                    note(l, now, format!("slice {n} not broadcast yet: {e}"));
                }
            }
        }
        Input::Confirmations { txs, tip } => {
            l.tip = tip;
            let need = l.invoice_min_confirmations.max(1);
            for p in l.sent.iter_mut() {
                let reported: Vec<Option<u32>> = p
                    .txids()
                    .filter_map(|t| txs.iter().find(|(x, _)| x == t).map(|(_, h)| *h))
                    .collect();
                if reported.is_empty() {
                    continue;
                }
                p.height = reported.into_iter().flatten().min();
                let deep = p
                    .height
                    .is_some_and(|h| tip.saturating_add(1).saturating_sub(h) >= need);
                if deep {
                    p.confirmed_at.get_or_insert(now);
                } else {
                    p.confirmed_at = None;
                }
            }
        }
        Input::Replaced { old, new } => {
            if let Some(p) = l.sent.iter_mut().find(|p| p.txid == old) {
                p.replaced.push(old.clone());
                p.txid = new.clone();
                note(
                    l,
                    now,
                    format!("payment {old} replaced by {new} (a higher fee, the same amount)"),
                );
            }
        }
        Input::Tick => {
            if let Some(first) = l.sent.iter().map(|s| s.at).min() {
                let waiting = matches!(
                    l.state,
                    LeaseState::Invoiced
                        | LeaseState::PaymentSeen
                        | LeaseState::Funded
                        | LeaseState::Provisioning
                );
                if waiting && !l.stalled && now >= first.saturating_add(t.start_timeout_secs) {
                    l.stalled = true;
                    note(
                        l,
                        now,
                        format!(
                            "paid {} s ago and the provider has not started the machine; it is refunded if the launch fails, or cancel the lease",
                            now - first
                        ),
                    );
                    out.push(Action::Alert(Alert::NotStarted {
                        lease_id: l.id.clone(),
                        paid_at: first,
                    }));
                }
            }
        }
        // Provider-only inputs (a buyer's wallet view comes as `Confirmations`).
        Input::Restarted { .. }
        | Input::Payments { .. }
        | Input::Launched(_)
        | Input::Stopped(_)
        | Input::Started(_)
        | Input::Deleted(_)
        | Input::RefundBuilt { .. }
        | Input::RefundSent { .. } => {}
    }
}

/// Checks the provider's receipt against what this node saw; countersigns it only if it agrees.
fn buyer_receipt(
    l: &mut LeaseRecord,
    pr: ProviderReceipt,
    now: u64,
    ctx: &Ctx<'_>,
    out: &mut Vec<Action>,
) {
    let hexed = hex::encode(xov_protocol::Encode::to_canonical_bytes(&pr));
    if l.receipt_hex.as_deref() == Some(hexed.as_str()) {
        return; // the same receipt again (a resend): already judged
    }
    let r = pr.receipt().clone();
    let sent: u64 = l.sent.iter().map(|s| s.amount_sat).sum();
    let run = r.ended_at.saturating_sub(r.started_at);
    let max_charge = (run as u128 * l.price_sats_per_hour as u128).div_ceil(3600) as u64;
    let why = if r.lease_id.to_string() != l.id
        || r.buyer != ctx.key.node_id()
        || r.provider.to_string() != l.counterparty
    {
        Some("it names another lease or other parties".to_string())
    } else if !pr.verify() {
        Some("the provider's signature does not verify".to_string())
    } else if r.paid_sats < sent {
        Some(format!(
            "it says {} sat were paid, but this node paid {sent}",
            r.paid_sats
        ))
    } else if l.started_at.is_some_and(|s| s != r.started_at) {
        Some(format!(
            "it says the machine started at {}, the provider reported {}",
            r.started_at,
            l.started_at.unwrap_or(0)
        ))
    } else if r.ended_at < r.started_at || r.ended_at > now.saturating_add(600) {
        Some("its times are impossible".to_string())
    } else if r.net_sats() > max_charge.saturating_add(ctx.terms.refund_min_sat) {
        Some(format!(
            "it keeps {} sat for {run} s of running at {} sats/h (at most {max_charge})",
            r.net_sats(),
            l.price_sats_per_hour
        ))
    } else {
        None
    };
    l.receipt_hex = Some(hexed);
    let view = ReceiptView {
        lease_id: l.id.clone(),
        provider: r.provider.to_string(),
        buyer: r.buyer.to_string(),
        started_at: r.started_at,
        ended_at: r.ended_at,
        paid_sat: r.paid_sats,
        refunded_sat: r.refunded_sats,
    };
    // The receipt is the provider's newest word on the money (it is applied only when its sequence is above
    // every status applied), so it replaces the view like a status does: a payment the last status counted
    // and a reorg then took away, as the lease closed, is gone on both sides. (Keeping the larger figure
    // left the two sides disagreeing forever; whether to countersign is judged above, on what this node sent.)
    l.paid_sat = r.paid_sats;
    l.refunded_sat = r.refunded_sats;
    l.set_state(
        LeaseState::Closed,
        now,
        format!(
            "receipt {}",
            serde_json::to_string(&view).unwrap_or_default()
        ),
    );
    match why {
        None => match pr.countersign(ctx.key) {
            Ok(signed) => {
                l.countersigned_hex = Some(hex::encode(signed.to_bytes()));
                l.out_seq += 1;
                l.sent_at = None;
                out.push(Action::PublishReceipt(signed));
            }
            Err(e) => note(l, now, format!("receipt not countersigned: {e}")),
        },
        Some(why) => {
            note(l, now, format!("receipt not countersigned: {why}"));
            out.push(Action::Alert(Alert::ReceiptRefused {
                lease_id: l.id.clone(),
                why,
            }));
        }
    }
}

/// What the buyer's node makes of the provider's conduct when a slice is due.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Conduct {
    /// Running, fresh, every payment of ours counted: the next slice may be paid.
    Delivering,
    /// Not decided yet (our own payment is not confirmed; a fresh status is on its way): `ask` for one.
    Wait { ask: bool },
    /// Not delivering: no slice; `ask` for a fresh status anyway, in case it comes back.
    Withhold { reason: NotDelivering, ask: bool },
}

/// Whether the provider visibly delivers, judged on this node's record at `now`.
fn conduct(l: &LeaseRecord, now: u64, t: &Terms) -> Conduct {
    if l.stalled {
        return Conduct::Withhold {
            reason: NotDelivering::NotStarted,
            ask: false,
        };
    }
    let fresh_for = t.status_fresh_secs.max(1);
    if l.status_at
        .is_none_or(|s| now > s.saturating_add(fresh_for))
    {
        // A request outstanding: asked after the latest status arrived.
        return match l
            .status_asked_at
            .filter(|a| l.status_at.is_none_or(|s| s < *a))
        {
            Some(a) if now >= a.saturating_add(fresh_for) => Conduct::Withhold {
                reason: NotDelivering::StatusStale {
                    age_secs: now.saturating_sub(l.status_at.unwrap_or(l.admitted_at)),
                },
                ask: true,
            },
            Some(_) => Conduct::Wait { ask: false },
            None => Conduct::Wait { ask: true },
        };
    }
    if !is_running(l.state) {
        return Conduct::Withhold {
            reason: NotDelivering::NotRunning { state: l.state },
            ask: false,
        };
    }
    // Our own payments first: one not yet confirmed is nobody's fault, and no new slice goes out meanwhile.
    if l.sent.iter().any(|p| p.confirmed_at.is_none()) {
        return Conduct::Wait { ask: false };
    }
    let confirmed: u64 = l.sent.iter().map(|p| p.amount_sat).sum();
    if l.paid_sat < confirmed {
        // The provider's wallet may be a little behind ours, and its status a little late: blame it only for
        // payments confirmed a freshness window before the status arrived.
        let status_at = l.status_at.unwrap_or(0);
        let long_ago: u64 = l
            .sent
            .iter()
            .filter(|p| {
                p.confirmed_at
                    .is_some_and(|c| status_at >= c.saturating_add(fresh_for))
            })
            .map(|p| p.amount_sat)
            .sum();
        if l.paid_sat < long_ago {
            return Conduct::Withhold {
                reason: NotDelivering::PaymentsNotCounted {
                    confirmed_sat: long_ago,
                    counted_sat: l.paid_sat,
                },
                ask: true,
            };
        }
        // Ask again once the newest confirmation is a freshness window old: that answer decides.
        let newest = l.sent.iter().filter_map(|p| p.confirmed_at).max();
        return Conduct::Wait {
            ask: newest.is_some_and(|c| now >= c.saturating_add(fresh_for)),
        };
    }
    Conduct::Delivering
}

/// The smallest slice worth a payment: less of a budget is left unspent.
pub fn min_slice_sat(b: &Budget) -> u64 {
    (b.slice_sat / 4).max(MIN_SLICE_SAT).min(b.slice_sat)
}

/// Below this a slice would mostly pay its network fee.
const MIN_SLICE_SAT: u64 = 600;

/// When the next slice of a running lease is due: the lead before the provider's drain warning.
pub fn next_slice_due(l: &LeaseRecord, t: &Terms) -> Option<u64> {
    l.runs_until
        .map(|u| u.saturating_sub(t.warn_before_secs + t.slice_lead_secs))
}

/// Asks the provider for a fresh status (a `StatusRequest` notice, sent until acknowledged), unless a
/// request is already outstanding and younger than the freshness window.
fn ask_status(l: &mut LeaseRecord, now: u64, t: &Terms) {
    let outstanding = l
        .status_asked_at
        .filter(|a| l.status_at.is_none_or(|s| s < *a))
        .is_some_and(|a| now < a.saturating_add(t.status_fresh_secs.max(1)));
    if !outstanding {
        l.status_asked_at = Some(now);
        l.out_seq += 1;
        l.sent_at = None;
    }
}

/// The buyer's level-triggered rules for a budget: slices under way are carried on, and the next one is
/// decided when due, only while the provider delivers.
fn buyer_settle(l: &mut LeaseRecord, now: u64, ctx: &Ctx<'_>, out: &mut Vec<Action>) {
    let t = ctx.terms;
    if l.state.is_terminal()
        && l.countersigned_hex.is_none()
        && !l.cancelled
        && l.out_seq > l.acked_seq
    {
        // Only a status request can be waiting: nothing to ask about an ended lease.
        l.acked_seq = l.out_seq;
    }
    let Some(budget) = l.budget else { return };
    let ended = l.cancelled || l.state.is_terminal();
    if ended {
        // An intent never built is dropped: nothing was signed, so nothing can have been paid.
        let dropped: Vec<u32> = l
            .slices
            .iter()
            .filter(|s| s.tx.is_none() && !s.abandoned)
            .map(|s| s.n)
            .collect();
        for n in dropped {
            if let Some(s) = l.slices.iter_mut().find(|s| s.n == n) {
                s.abandoned = true;
            }
            note(l, now, format!("slice {n} not paid: the lease ended first"));
        }
    }
    if !ended && !l.slices.iter().any(|s| s.pending() || s.abandoned) {
        decide_slice(l, now, t, &budget, out);
    }
    // Slices under way, from intent to broadcast. A signed one is sent even if the lease ended meanwhile:
    // it may be out already, and sending the same transaction again is harmless (the provider refunds
    // money that arrives after the end).
    if l.slice_retry_at.is_none_or(|r| now >= r) {
        for s in l.slices.iter().filter(|s| s.pending()) {
            out.push(match &s.tx {
                None => Action::PaySlice {
                    n: s.n,
                    amount_sat: s.amount_sat,
                    address: s.address.clone(),
                },
                Some(tx) => Action::SendSlice {
                    n: s.n,
                    tx: tx.clone(),
                },
            });
        }
    }
}

/// Decides the next slice when it is due (none under way): the first with the order, the next ones before
/// the provider would warn, only while it delivers; says once when the budget is spent.
fn decide_slice(l: &mut LeaseRecord, now: u64, t: &Terms, budget: &Budget, out: &mut Vec<Action>) {
    let Some(address) = l.pay_address.clone() else {
        return;
    };
    let spent: u64 = l.slices.iter().map(Slice::committed_sat).sum();
    let amount = budget.total_sat.saturating_sub(spent).min(budget.slice_sat);
    if amount < min_slice_sat(budget) {
        if !l.budget_spent {
            l.budget_spent = true;
            note(
                l,
                now,
                format!(
                    "budget spent: {spent} of {} sat in {} slices; no more are paid (`xov lease extend` adds more)",
                    budget.total_sat,
                    l.slices.len()
                ),
            );
        }
        return;
    }
    if l.slices.is_empty() {
        // The first slice goes out with the order, as soon as the invoice is in.
        if l.state == LeaseState::Invoiced {
            new_slice(l, amount, address, now, spent, budget);
        }
        return;
    }
    if next_slice_due(l, t).is_none_or(|due| now < due) {
        return;
    }
    match conduct(l, now, t) {
        Conduct::Delivering => {
            if l.withheld.take().is_some() {
                note(l, now, "the provider delivers again; slices resume");
            }
            new_slice(l, amount, address, now, spent, budget);
        }
        Conduct::Wait { ask } => {
            if ask {
                ask_status(l, now, t);
            }
        }
        Conduct::Withhold { reason, ask } => {
            if ask {
                ask_status(l, now, t);
            }
            let same = l
                .withheld
                .as_ref()
                .is_some_and(|w| std::mem::discriminant(w) == std::mem::discriminant(&reason));
            if !same {
                note(l, now, format!("next slice withheld: {reason}"));
                out.push(Action::Alert(Alert::SliceWithheld {
                    lease_id: l.id.clone(),
                    reason: reason.clone(),
                }));
            }
            l.withheld = Some(reason);
        }
    }
}

/// Records the intent of the next slice (persisted before anything is built or paid).
fn new_slice(l: &mut LeaseRecord, amount: u64, address: String, now: u64, spent: u64, b: &Budget) {
    let n = l.slices.iter().map(|s| s.n).max().unwrap_or(0) + 1;
    note(
        l,
        now,
        format!(
            "slice {n}: paying {amount} sat ({spent} of the budget's {} sat spent so far)",
            b.total_sat
        ),
    );
    l.slices.push(Slice {
        n,
        amount_sat: amount,
        address,
        at: now,
        tx: None,
        broadcast: false,
        abandoned: false,
    });
}

// ------------------------------------------------------------------------------------------ notices

/// What the other party is told, compared before and after each input to decide whether to tell it again.
fn status_of(l: &LeaseRecord, now: u64) -> Option<LeaseStatus> {
    if l.role != Role::Provider {
        return None;
    }
    let _ = now;
    Some(LeaseStatus {
        state: l.state,
        paid_sats: l.paid_sat,
        refunded_sats: l.refunded_sat,
        started_at: l.started_at,
        runs_until: l.runs_until,
        access: l.instance.as_ref().map(wire_access),
        message: l
            .history
            .last()
            .map(|s| truncate_bytes(&s.detail, xov_protocol::lease::MAX_NOTICE_MESSAGE))
            .unwrap_or_default(),
    })
}

/// At most `max` bytes of `s`, cut at a character boundary (the wire limit is in bytes).
fn truncate_bytes(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// A machine's access details as a notice carries them: what the wire and the buyer's checks take. A cloud
/// may give more addresses than a notice holds, a host name longer than one, or names the buyer's checks
/// refuse; the usable ones go, in the cloud's order, up to the limit, so the notice is never one the buyer
/// drops unread (it would be acknowledged and never sent again).
fn wire_access(i: &InstanceInfo) -> Access {
    use xov_protocol::lease::{
        MAX_ACCESS_ADDRESS, MAX_ACCESS_ADDRESSES, MAX_ACCESS_IMAGE, MAX_ACCESS_USER,
        MAX_OPEN_PORTS, MAX_SERVER_ID,
    };
    let clean = |s: &str, max: usize| {
        let s: String = s.chars().filter(|c| !c.is_control()).collect();
        truncate_bytes(&s, max)
    };
    let addresses = i
        .addresses
        .iter()
        .filter(|a| a.len() <= MAX_ACCESS_ADDRESS && xov_protocol::lease::is_access_address(a))
        .take(MAX_ACCESS_ADDRESSES)
        .cloned()
        .collect();
    let ssh_port = if i.ssh_port == 0 { 22 } else { i.ssh_port };
    // Ascending and distinct, the SSH port always among them.
    let mut others: Vec<u16> = i
        .open_ports
        .iter()
        .copied()
        .filter(|&p| p != 0 && p != ssh_port)
        .collect();
    others.sort_unstable();
    others.dedup();
    others.truncate(MAX_OPEN_PORTS - 1);
    others.push(ssh_port);
    others.sort_unstable();
    Access {
        server_id: clean(&i.server_id, MAX_SERVER_ID),
        addresses,
        user: clean(&i.user, MAX_ACCESS_USER),
        image: clean(&i.image, MAX_ACCESS_IMAGE),
        ssh_port,
        open_ports: others,
    }
}

/// The notice our side owes the other, as of now.
fn notice_of(l: &LeaseRecord, now: u64, ctx: &Ctx<'_>) -> Option<Signed<LeaseNotice>> {
    let mut seq = l.out_seq;
    let body = match l.role {
        // The receipt goes under its own sequence number until acknowledged, so that an acknowledgement of it
        // never covers a later status (a late payment and its refund after the close).
        Role::Provider => match (&l.receipt_hex, l.state) {
            (Some(h), LeaseState::Closed) if l.acked_seq < l.receipt_seq => {
                seq = l.receipt_seq;
                let bytes = hex::decode(h).ok()?;
                NoticeBody::Receipt(
                    <ProviderReceipt as xov_protocol::Decode>::from_canonical_bytes(&bytes).ok()?,
                )
            }
            _ => NoticeBody::Status(status_of(l, now)?),
        },
        Role::Buyer => match (&l.countersigned_hex, l.cancelled) {
            (Some(h), _) => {
                NoticeBody::Countersigned(SignedReceipt::from_bytes(&hex::decode(h).ok()?).ok()?)
            }
            (None, true) => NoticeBody::Cancel,
            (None, false) if status_wanted(l) => NoticeBody::StatusRequest,
            (None, false) => return None,
        },
    };
    Some(Signed::sign(
        LeaseNotice {
            from: ctx.key.node_id(),
            lease_id: l.id.parse().ok()?,
            seq,
            at: now,
            body,
        },
        ctx.key,
    ))
}

/// Buyer: a status request is outstanding (asked after the latest status arrived) and the lease is live.
fn status_wanted(l: &LeaseRecord) -> bool {
    !l.state.is_terminal()
        && l.status_asked_at
            .is_some_and(|a| l.status_at.is_none_or(|s| s < a))
}

/// Whether clock ticks can still change anything for this lease: ended leases with nothing left to do
/// (no machine, notices acknowledged, refunds sent, no slice under way) are not ticked; a late payment still
/// reaches them.
pub fn wants_ticks(l: &LeaseRecord) -> bool {
    !l.state.is_terminal()
        || l.machine_may_exist
        || l.out_seq > l.acked_seq
        || l.refunds.iter().any(|r| !r.broadcast && !r.written_off)
        || l.slices.iter().any(Slice::pending)
}

/// Keeps the record's derived fields (shown to people and sent in notices) in step: money from the payments
/// and refunds, and, while metered, when the balance runs out (constant while nothing is paid or refunded).
pub fn refresh_money(l: &mut LeaseRecord, t: &Terms) {
    if l.role == Role::Provider {
        l.paid_sat = confirmed_sat(l, t);
        l.zero_conf_sat = zero_conf_sat(l, t);
        l.refunded_sat = refunds_sent(l);
        if let Some(m) = l.metered_at {
            let until = (m as i64 + balance_secs(l, t)).max(0) as u64;
            l.runs_until = Some(until.max(l.started_at.unwrap_or(0)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A provider's record as the engine before the lease machine wrote it (no fields of the machine).
    fn legacy(state: &str, paid: u64, refunded: u64) -> LeaseRecord {
        serde_json::from_value(serde_json::json!({
            "id": "ab".repeat(32), "role": "provider", "state": state, "counterparty": "x", "pool": "p",
            "offer_id": 1, "image": "debian-12", "hours": 1, "price_sats_per_hour": 3600, "vcpus": 1,
            "ram_mib": 512, "disk_gib": 1, "ssh_public_key": "k", "refund_address": "bcrt1qrefund",
            "order_hex": "", "invoice_hex": null, "pay_address": "bcrt1qpay", "pay_uri": null,
            "amount_sat": 3600, "paid_sat": paid, "started_at": 1000, "runs_until": 4600, "instance": null,
            "refunded_sat": refunded, "history": []
        }))
        .unwrap()
    }

    fn paid(amount: u64) -> Input {
        Input::Payments {
            payments: vec![PaymentOut {
                txid: "t".repeat(64),
                vout: 0,
                amount_sat: amount,
                height: Some(100),
                rbf: false,
            }],
            tip: 200,
        }
    }

    #[test]
    fn records_from_before_the_lease_machine_are_not_refunded_again() {
        let key = Keypair::from_secret_bytes(&[7; 32]);
        let terms = Terms::default();
        let ctx = Ctx {
            terms: &terms,
            key: &key,
        };
        // An ended lease: whatever the earlier engine kept or refunded stays settled.
        let mut closed = legacy("closed", 3600, 0);
        assert!(closed.migrate(5000));
        assert!(!closed.migrate(5000), "migrated once");
        let out = handle(&closed, paid(3600), 5000, &ctx);
        let after = out.record.unwrap_or(closed);
        assert!(after.refunds.is_empty(), "{:?}", after.refunds);
        assert!(!out
            .actions
            .iter()
            .any(|a| matches!(a, Action::BuildRefund { .. })));
        // A live one is charged from its start, as the earlier engine metered it, and its earlier refund counts.
        let mut halted = legacy("halted", 3600, 500);
        halted.cancelled = true;
        halted.migrate(2000);
        assert_eq!(halted.charged_secs, 1000);
        let out = handle(&halted, paid(3600), 2000, &ctx);
        let after = out.record.unwrap();
        let refunded: u64 = after.refunds.iter().map(|r| r.value_sat).sum();
        assert_eq!(
            refunded,
            3600 - 1000 - 500,
            "unused part less what was refunded before"
        );
    }
}
