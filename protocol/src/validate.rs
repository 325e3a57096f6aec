//! Validation: what a node checks before it accepts, stores or forwards a message. Time is a parameter.

use thiserror::Error;

use crate::bid::Bid;
use crate::bond::{BondProof, LOCKTIME_THRESHOLD, MAX_MONEY_SATS};
use crate::demand::GpuWanted;
use crate::encoding::DecodeError;
use crate::identity::NodeId;
use crate::invoice::Invoice;
use crate::offer::{Offer, OfferWithdrawal, MAX_LABEL};
use crate::order::Order;
use crate::pool::{PoolCharter, PoolId, PoolRules, PublishPolicy};
use crate::pool_load::LoadReport;
use crate::receipt::SignedReceipt;
use crate::signed::{Message, Signed};

/// How far in the future a message's `created_at` may lie, for clocks that disagree a little.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;
/// Most hours one order or bid may ask for (a year).
pub const MAX_HOURS: u32 = 24 * 366;
/// An order older than this is refused, so a captured order cannot be replayed later.
pub const MAX_ORDER_AGE_SECS: u64 = 600;
/// Longest life of a bid.
pub const MAX_BID_TTL_SECS: u64 = 24 * 3600;

/// Why a message was rejected. Every variant is the sender's fault (gossip penalises it) except
/// [`ValidationError::SequenceNotNewer`] and [`ValidationError::Withdrawn`], which honest peers also produce
/// when messages cross, and are ignored rather than penalised.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValidationError {
    #[error("malformed message: {0}")]
    Malformed(#[from] DecodeError),
    #[error("signature does not verify for {0}")]
    BadSignature(NodeId),
    #[error("expired at {expires_at}, now is {now}")]
    Expired { expires_at: u64, now: u64 },
    #[error(
        "created at {created_at}, which is more than {MAX_CLOCK_SKEW_SECS} s after now ({now})"
    )]
    FromTheFuture { created_at: u64, now: u64 },
    #[error("sequence {got} is not newer than the {have} already held")]
    SequenceNotNewer { have: u64, got: u64 },
    #[error("offer was withdrawn at sequence {withdrawn}; sequence {got} is not newer")]
    Withdrawn { withdrawn: u64, got: u64 },
    #[error("{field} out of range: {reason}")]
    OutOfRange {
        field: &'static str,
        reason: &'static str,
    },
    #[error("lifetime of {ttl} s is outside the pool's bounds {min}..={max} s")]
    TtlOutOfBounds { ttl: u64, min: u32, max: u32 },
    #[error("provider {0} may not publish in this pool")]
    NotAllowedInPool(NodeId),
    #[error("price {price} is not a multiple of the pool's price step {step}")]
    PriceStep { price: u64, step: u64 },
    #[error("message is for pool {got}, expected {expected}")]
    WrongPool { expected: PoolId, got: PoolId },
    #[error("provider already holds {max} offers in this pool, the pool's limit")]
    TooManyOffers { max: u32 },
}

impl ValidationError {
    /// Whether an honest peer can cause this (crossing messages); such rejections are not penalised.
    pub fn is_benign(&self) -> bool {
        matches!(
            self,
            ValidationError::SequenceNotNewer { .. } | ValidationError::Withdrawn { .. }
        )
    }
}

fn range(ok: bool, field: &'static str, reason: &'static str) -> Result<(), ValidationError> {
    if ok {
        Ok(())
    } else {
        Err(ValidationError::OutOfRange { field, reason })
    }
}

fn check_signature<T: Message>(msg: &Signed<T>) -> Result<(), ValidationError> {
    if msg.verify() {
        Ok(())
    } else {
        Err(ValidationError::BadSignature(*msg.body().author()))
    }
}

fn check_times(created_at: u64, expires_at: u64, now: u64) -> Result<(), ValidationError> {
    if created_at > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
        return Err(ValidationError::FromTheFuture { created_at, now });
    }
    if expires_at <= now {
        return Err(ValidationError::Expired { expires_at, now });
    }
    range(
        expires_at > created_at,
        "expires_at",
        "must be after created_at",
    )
}

fn check_label(s: &str, field: &'static str) -> Result<(), ValidationError> {
    range(
        !s.is_empty() && s.len() <= MAX_LABEL,
        field,
        "must be 1 to 64 bytes",
    )?;
    range(
        !s.chars().any(char::is_control),
        field,
        "must not contain control characters",
    )
}

fn check_country(c: &str) -> Result<(), ValidationError> {
    range(
        c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()),
        "country",
        "must be an ISO 3166-1 alpha-2 code in upper case",
    )
}

/// Checks an offer against the signature, the clock, field ranges and (when known) its pool's charter.
/// Without a charter the default rules apply.
pub fn validate_offer(
    msg: &Signed<Offer>,
    now: u64,
    charter: Option<&PoolCharter>,
) -> Result<(), ValidationError> {
    let o = msg.body();
    check_times(o.created_at, o.expires_at, now)?;
    let i = &o.instance;
    range(i.vcpus > 0, "vcpus", "must be at least 1")?;
    range(i.ram_mib > 0, "ram_mib", "must be at least 1")?;
    range(i.disk_gib > 0, "disk_gib", "must be at least 1")?;
    if let Some(gpu) = &i.gpu {
        check_label(&gpu.model, "gpu model")?;
        range(
            gpu.count > 0,
            "gpu count",
            "must be at least 1 when a GPU is named",
        )?;
    }
    range(
        !o.images.is_empty(),
        "images",
        "at least one image must be offered",
    )?;
    for img in &o.images {
        check_label(img, "image")?;
    }
    range(
        o.price_sats_per_hour > 0,
        "price",
        "must be at least 1 sat per hour",
    )?;
    range(o.capacity > 0, "capacity", "must be at least 1")?;
    range(o.min_lease_secs > 0, "min_lease", "must be at least 1 s")?;
    range(
        o.max_lease_secs >= o.min_lease_secs,
        "max_lease",
        "must not be below min_lease",
    )?;
    check_country(&o.location.country)?;
    range(
        !o.location.region.chars().any(char::is_control),
        "region",
        "must not contain control characters",
    )?;
    range(
        o.location.region.len() <= MAX_LABEL,
        "region",
        "must be at most 64 bytes",
    )?;
    let default_rules = PoolRules::default();
    let rules = match charter {
        Some(c) => {
            if c.pool_id() != o.pool {
                return Err(ValidationError::WrongPool {
                    expected: c.pool_id(),
                    got: o.pool,
                });
            }
            if !c.may_publish(&o.provider) {
                return Err(ValidationError::NotAllowedInPool(o.provider));
            }
            &c.rules
        }
        None => &default_rules,
    };
    let ttl = o.expires_at - o.created_at;
    if ttl < rules.min_ttl_secs as u64 || ttl > rules.max_ttl_secs as u64 {
        return Err(ValidationError::TtlOutOfBounds {
            ttl,
            min: rules.min_ttl_secs,
            max: rules.max_ttl_secs,
        });
    }
    let step = rules.min_price_step_sats.max(1);
    if o.price_sats_per_hour % step != 0 {
        return Err(ValidationError::PriceStep {
            price: o.price_sats_per_hour,
            step,
        });
    }
    // The signature is checked last: it is the most expensive check, and cheap checks reject most garbage.
    check_signature(msg)
}

/// Checks a withdrawal. Its lifetime is bounded like an offer's, so tombstones cannot pile up forever.
pub fn validate_withdrawal(
    msg: &Signed<OfferWithdrawal>,
    now: u64,
    charter: Option<&PoolCharter>,
) -> Result<(), ValidationError> {
    let w = msg.body();
    check_times(w.created_at, w.expires_at, now)?;
    let max = charter.map_or(PoolRules::default().max_ttl_secs, |c| c.rules.max_ttl_secs);
    let ttl = w.expires_at - w.created_at;
    if ttl > max as u64 {
        return Err(ValidationError::TtlOutOfBounds { ttl, min: 0, max });
    }
    check_signature(msg)
}

pub fn validate_bid(msg: &Signed<Bid>, now: u64) -> Result<(), ValidationError> {
    let b = msg.body();
    check_times(b.created_at, b.expires_at, now)?;
    range(
        b.expires_at - b.created_at <= MAX_BID_TTL_SECS,
        "expires_at",
        "a bid may live at most 24 hours",
    )?;
    for (s, field) in [(&b.demand.image, "image"), (&b.demand.region, "region")] {
        if let Some(s) = s {
            check_label(s, field)?;
        }
    }
    range(
        b.demand.max_price_sats_per_hour.is_some_and(|p| p > 0),
        "max_price",
        "a bid must name a maximum price of at least 1 sat per hour",
    )?;
    range(
        b.hours > 0 && b.hours <= MAX_HOURS,
        "hours",
        "must be 1 to 8784",
    )?;
    range(b.count > 0, "count", "must be at least 1")?;
    if let Some(c) = &b.demand.country {
        check_country(c)?;
    }
    if let GpuWanted::Some { min_count, .. } = b.demand.gpu {
        range(min_count > 0, "gpu count", "must be at least 1")?;
    }
    check_signature(msg)
}

pub fn validate_charter(msg: &Signed<PoolCharter>, now: u64) -> Result<(), ValidationError> {
    let c = msg.body();
    if c.created_at > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
        return Err(ValidationError::FromTheFuture {
            created_at: c.created_at,
            now,
        });
    }
    range(
        !c.name.is_empty()
            && c.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'),
        "pool name",
        "must be 1 to 64 characters of letters, digits, '-', '_' or '.'",
    )?;
    let r = &c.rules;
    range(r.min_ttl_secs > 0, "min_ttl", "must be at least 1 s")?;
    range(
        r.max_ttl_secs >= r.min_ttl_secs,
        "max_ttl",
        "must not be below min_ttl",
    )?;
    range(
        r.min_price_step_sats > 0,
        "min_price_step",
        "must be at least 1 sat",
    )?;
    range(
        r.max_offers_per_provider > 0,
        "max_offers_per_provider",
        "must be at least 1",
    )?;
    if let PublishPolicy::AllowList(ids) = &r.publish {
        range(
            !ids.is_empty(),
            "publishers",
            "an allow-list must name someone",
        )?;
    }
    check_signature(msg)
}

pub fn validate_order(msg: &Signed<Order>, now: u64) -> Result<(), ValidationError> {
    let o = msg.body();
    check_times(
        o.created_at,
        o.created_at.saturating_add(MAX_ORDER_AGE_SECS),
        now,
    )?;
    if let Some(a) = &o.refund_address {
        range(
            !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric()),
            "refund address",
            "must be a bitcoin address",
        )?;
    }
    range(
        o.hours > 0 && o.hours <= MAX_HOURS,
        "hours",
        "must be 1 to 8784",
    )?;
    check_label(&o.image, "image")?;
    range(
        o.ssh_public_key.starts_with("ssh-") || o.ssh_public_key.starts_with("ecdsa-"),
        "ssh key",
        "must be an OpenSSH public key line (ssh-ed25519 AAAA…)",
    )?;
    range(
        o.buyer != o.provider,
        "provider",
        "a node cannot order from itself",
    )?;
    check_signature(msg)
}

pub fn validate_invoice(msg: &Signed<Invoice>, now: u64) -> Result<(), ValidationError> {
    let i = msg.body();
    check_times(i.created_at, i.expires_at, now)?;
    range(i.amount_sats > 0, "amount", "must be at least 1 sat")?;
    range(
        i.hours > 0 && i.hours <= MAX_HOURS,
        "hours",
        "must be 1 to 8784",
    )?;
    range(
        i.buyer != i.provider,
        "buyer",
        "a node cannot invoice itself",
    )?;
    range(
        !i.address.is_empty() && i.address.chars().all(|c| c.is_ascii_alphanumeric()),
        "address",
        "must be a bitcoin address",
    )?;
    check_signature(msg)
}

/// A receipt whose lease ended longer ago than this is refused: its weight has decayed to almost nothing
/// (twelve half-lives), and nodes need not keep it.
pub const MAX_RECEIPT_AGE_SECS: u64 = 365 * 24 * 3600;
/// A load report older than this is refused: it no longer says anything about the pool.
pub const MAX_LOAD_REPORT_AGE_SECS: u64 = 1800;

fn check_not_future(at: u64, now: u64) -> Result<(), ValidationError> {
    if at > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
        return Err(ValidationError::FromTheFuture {
            created_at: at,
            now,
        });
    }
    Ok(())
}

fn check_max_age(at: u64, max_age: u64, now: u64) -> Result<(), ValidationError> {
    let expires_at = at.saturating_add(max_age);
    if expires_at <= now {
        return Err(ValidationError::Expired { expires_at, now });
    }
    Ok(())
}

/// Checks a countersigned lease receipt: times, amounts, parties and both signatures (provider's first).
pub fn validate_receipt(msg: &SignedReceipt, now: u64) -> Result<(), ValidationError> {
    let r = msg.receipt();
    check_not_future(r.ended_at, now)?;
    check_max_age(r.ended_at, MAX_RECEIPT_AGE_SECS, now)?;
    range(
        r.ended_at >= r.started_at,
        "ended_at",
        "must not be before started_at",
    )?;
    range(
        r.provider != r.buyer,
        "buyer",
        "a node cannot lease from itself",
    )?;
    range(r.paid_sats > 0, "paid", "a receipt is for a paid lease")?;
    range(
        r.refunded_sats <= r.paid_sats,
        "refunded",
        "must not exceed what was paid",
    )?;
    if !msg.provider_signature_valid() {
        return Err(ValidationError::BadSignature(r.provider));
    }
    if !msg.buyer_signature_valid() {
        return Err(ValidationError::BadSignature(r.buyer));
    }
    Ok(())
}

/// Checks a bond proof's structure and the node's signature. The bond itself (the ECDSA binding signature,
/// the script, the amount, whether the output is unspent) is the wallet's to check against the chain.
pub fn validate_bond_proof(msg: &Signed<BondProof>, now: u64) -> Result<(), ValidationError> {
    let b = msg.body();
    check_not_future(b.created_at, now)?;
    range(
        b.amount_sats > 0 && b.amount_sats <= MAX_MONEY_SATS,
        "bond amount",
        "must be 1 sat to 21 million BTC",
    )?;
    range(
        b.locktime > 0 && b.locktime < LOCKTIME_THRESHOLD,
        "bond locktime",
        "must be a block height (1 to 499999999)",
    )?;
    range(
        matches!(b.bond_pubkey[0], 2 | 3),
        "bond pubkey",
        "must be a compressed secp256k1 public key (starting 02 or 03)",
    )?;
    range(
        b.binding_sig.iter().any(|&x| x != 0),
        "binding signature",
        "must not be empty",
    )?;
    check_signature(msg)
}

/// Checks a provider's load report: fresh, not from the future, consistent counts, and the signature.
pub fn validate_load_report(msg: &Signed<LoadReport>, now: u64) -> Result<(), ValidationError> {
    let l = msg.body();
    check_not_future(l.at, now)?;
    check_max_age(l.at, MAX_LOAD_REPORT_AGE_SECS, now)?;
    range(
        (l.running_leases == 0) == (l.running_sats_per_hour == 0),
        "running sats per hour",
        "must be zero exactly when no lease runs",
    )?;
    range(
        l.running_sats_per_hour >= l.running_leases as u64,
        "running sats per hour",
        "every running lease costs at least 1 sat per hour",
    )?;
    range(
        l.running_sats_per_hour <= MAX_MONEY_SATS,
        "running sats per hour",
        "must not exceed 21 million BTC",
    )?;
    check_signature(msg)
}
