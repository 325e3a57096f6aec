//! Validation: what a node checks before it accepts, stores or forwards a message. Time is a parameter.
//!
//! Cheap checks run before the signature (the most expensive check). An SSH public key in an order must be a
//! single OpenSSH public key line whose base64 blob names the same key type as the line
//! ([`check_ssh_public_key`]); nothing else about the key is checked here. An offer checked against its
//! pool's charter must name the charter's chain ([`ValidationError::ChainMismatch`], the provider's fault);
//! whether a message's chain is the receiver's own is the receiver's business, not a validation rule.

use thiserror::Error;

use crate::bid::Bid;
use crate::bond::{BondProof, LOCKTIME_THRESHOLD, MAX_MONEY_SATS};
use crate::chain::Chain;
use crate::demand::GpuWanted;
use crate::encoding::DecodeError;
use crate::identity::NodeId;
use crate::invoice::Invoice;
use crate::lease::{LeaseNotice, NoticeBody};
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
    /// The offer names its pool but another chain than the pool's charter: its provider signed an offer that
    /// contradicts itself (an honest node never does), so it is the sender's fault.
    #[error("the offer is for chain {offer} but its pool is on chain {pool}: the provider signed an offer that contradicts its own pool")]
    ChainMismatch { offer: Chain, pool: Chain },
    #[error("provider already holds {max} offers in this pool, the pool's limit")]
    TooManyOffers { max: u32 },
    #[error("ssh key is not usable: {0}")]
    BadSshKey(SshKeyError),
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
    validate_offer_unsigned(msg, now, charter)?;
    // The signature is checked last: it is the most expensive check, and cheap checks reject most garbage.
    check_signature(msg)
}

/// Everything [`validate_offer`] checks but the signature: for offers whose signatures are checked
/// together with others ([`crate::signed::verify_all`]).
pub fn validate_offer_unsigned(
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
    range(
        crate::offer::ports_well_formed(&o.extra_ports),
        "extra ports",
        "must be ascending, distinct and not 0",
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
            if c.chain != o.chain {
                return Err(ValidationError::ChainMismatch {
                    offer: o.chain,
                    pool: c.chain,
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
    Ok(())
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
    range(
        crate::offer::ports_well_formed(&b.demand.ports),
        "ports",
        "must be ascending, distinct and not 0",
    )?;
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
        crate::offer::ports_well_formed(&o.extra_ports),
        "extra ports",
        "must be ascending, distinct and not 0",
    )?;
    check_ssh_public_key(&o.ssh_public_key).map_err(ValidationError::BadSshKey)?;
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

/// Checks a lease notice: not from the future, a status that adds up and has no control characters in its
/// strings (their lengths are bounded by decoding), and a nested receipt about this lease from the right
/// party; then the sender's signature. The nested receipt's own signatures are checked where it is used
/// ([`crate::receipt::ProviderReceipt::countersign`], [`validate_receipt`]). Whether `seq` is new is for the
/// receiver to judge against what it applied.
pub fn validate_notice(msg: &Signed<LeaseNotice>, now: u64) -> Result<(), ValidationError> {
    let n = msg.body();
    check_not_future(n.at, now)?;
    match &n.body {
        NoticeBody::Status(s) => {
            // `refunded_sats` may exceed `paid_sats`: a reorg can take back a payment after its refund left.
            if let (Some(start), Some(until)) = (s.started_at, s.runs_until) {
                range(
                    until >= start,
                    "runs_until",
                    "must not be before started_at",
                )?;
            }
            range(
                !s.message.chars().any(char::is_control),
                "message",
                "must not contain control characters",
            )?;
            if let Some(a) = &s.access {
                let fields = [
                    (&a.server_id, "server id"),
                    (&a.user, "user"),
                    (&a.image, "image"),
                ];
                for (v, field) in fields {
                    range(
                        !v.chars().any(char::is_control),
                        field,
                        "must not contain control characters",
                    )?;
                }
                for addr in &a.addresses {
                    range(
                        crate::lease::is_access_address(addr),
                        "address",
                        "must be a host name or IP address",
                    )?;
                }
                range(a.ssh_port != 0, "ssh port", "must not be 0")?;
                range(
                    a.open_ports.windows(2).all(|w| w[0] < w[1]) && !a.open_ports.contains(&0),
                    "open ports",
                    "must be ascending, distinct and not 0",
                )?;
                range(
                    a.open_ports.contains(&a.ssh_port),
                    "open ports",
                    "must include the ssh port",
                )?;
            }
        }
        NoticeBody::Cancel | NoticeBody::StatusRequest => {}
        NoticeBody::Receipt(p) => {
            let r = p.receipt();
            range(
                r.lease_id == n.lease_id,
                "receipt",
                "must be for the notice's lease",
            )?;
            range(
                r.provider == n.from,
                "receipt",
                "must come from the lease's provider",
            )?;
        }
        NoticeBody::Countersigned(c) => {
            let r = c.receipt();
            range(
                r.lease_id == n.lease_id,
                "receipt",
                "must be for the notice's lease",
            )?;
            range(
                r.buyer == n.from,
                "receipt",
                "must come from the lease's buyer",
            )?;
        }
    }
    check_signature(msg)
}

/// Longest SSH public key line [`check_ssh_public_key`] accepts (orders carry at most
/// [`crate::order::MAX_SSH_KEY`]).
pub const MAX_SSH_KEY_LINE: usize = 16 * 1024;

/// Key types accepted in an SSH public key line.
pub const SSH_KEY_TYPES: [&str; 7] = [
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

const SSH_KEY_EXAMPLE: &str =
    "a valid key is one line like \"ssh-ed25519 AAAAC3Nza... comment\", the contents of a .pub file";

/// Why a string is not an OpenSSH public key line. Each message ends by saying what a valid line looks like.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SshKeyError {
    #[error("it is empty; {SSH_KEY_EXAMPLE}")]
    Empty,
    #[error("it is {len} bytes, the limit is {MAX_SSH_KEY_LINE}; {SSH_KEY_EXAMPLE}")]
    TooLong { len: usize },
    #[error("it has more than one line; {SSH_KEY_EXAMPLE}")]
    MultipleLines,
    #[error("it contains control characters; {SSH_KEY_EXAMPLE}")]
    ControlCharacter,
    /// The first word is not a supported key type (shown truncated to 40 bytes).
    #[error("'{found}' is not a supported key type (ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256/384/521, sk-ssh-ed25519@openssh.com, sk-ecdsa-sha2-nistp256@openssh.com); {SSH_KEY_EXAMPLE}")]
    UnknownKeyType { found: String },
    #[error("the key type is not followed by the base64 key; {SSH_KEY_EXAMPLE}")]
    MissingKey,
    #[error("the key is not valid base64; {SSH_KEY_EXAMPLE}")]
    BadBase64,
    #[error("the key data is not a {key_type} key; {SSH_KEY_EXAMPLE}")]
    KeyTypeMismatch { key_type: &'static str },
    #[error("the {key_type} key data is {len} bytes, expected {expected} (truncated?); {SSH_KEY_EXAMPLE}")]
    WrongKeyLength {
        key_type: &'static str,
        len: usize,
        expected: usize,
    },
}

/// Checks that `line` is one OpenSSH public key line: a supported key type, the base64 key blob, and an
/// optional comment, at most [`MAX_SSH_KEY_LINE`] bytes, without control characters (trailing line breaks
/// and surrounding blanks are ignored). The blob must begin with the line's key type as an SSH string
/// (u32 length, bytes), and an ssh-ed25519 blob must be exactly that string and a 32-byte key (51 bytes).
pub fn check_ssh_public_key(line: &str) -> Result<(), SshKeyError> {
    if line.len() > MAX_SSH_KEY_LINE {
        return Err(SshKeyError::TooLong { len: line.len() });
    }
    let line = line.trim_matches(|c: char| c == ' ' || c == '\t' || c == '\r' || c == '\n');
    if line.is_empty() {
        return Err(SshKeyError::Empty);
    }
    if line.contains(['\n', '\r']) {
        return Err(SshKeyError::MultipleLines);
    }
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(SshKeyError::ControlCharacter);
    }
    let mut words = line.split([' ', '\t']).filter(|w| !w.is_empty());
    let found = words.next().unwrap_or_default();
    let Some(&key_type) = SSH_KEY_TYPES.iter().find(|t| **t == found) else {
        let mut end = found.len().min(40);
        while !found.is_char_boundary(end) {
            end -= 1;
        }
        return Err(SshKeyError::UnknownKeyType {
            found: found[..end].to_string(),
        });
    };
    let blob = words.next().ok_or(SshKeyError::MissingKey)?;
    let blob = base64_decode(blob).ok_or(SshKeyError::BadBase64)?;
    let mismatch = SshKeyError::KeyTypeMismatch { key_type };
    let named = blob
        .get(..4)
        .map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize)
        .and_then(|n| blob.get(4..4 + n))
        .ok_or(mismatch.clone())?;
    if named != key_type.as_bytes() {
        return Err(mismatch);
    }
    if key_type == "ssh-ed25519" {
        let expected = 4 + key_type.len() + 4 + 32;
        let key_len = blob
            .get(15..19)
            .map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]));
        if blob.len() != expected || key_len != Some(32) {
            return Err(SshKeyError::WrongKeyLength {
                key_type,
                len: blob.len(),
                expected,
            });
        }
    }
    Ok(())
}

/// Decodes standard-alphabet base64 with padding (RFC 4648 §4): the length must be a multiple of 4 and `=`
/// may appear only as the last one or two characters.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes = s.as_bytes();
    if bytes.is_empty() || bytes.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let last = bytes.len() / 4 - 1;
    for (i, quad) in bytes.chunks(4).enumerate() {
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i != last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &quad[..4 - pad] {
            n = n << 6 | value(c)?;
        }
        n <<= 6 * pad as u32;
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&decoded[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod notice_tests {
    use super::*;
    use crate::identity::Keypair;
    use crate::lease::{Access, LeaseState, LeaseStatus};
    use crate::pool::PoolId;
    use crate::receipt::{ProviderReceipt, Receipt};
    use crate::signed::MessageId;

    const NOW: u64 = 1_800_000_000;

    fn key(n: u8) -> Keypair {
        Keypair::from_secret_bytes(&[n; 32])
    }

    fn notice(from: &Keypair, body: NoticeBody) -> Signed<LeaseNotice> {
        Signed::sign(
            LeaseNotice {
                from: from.node_id(),
                lease_id: MessageId([5; 32]),
                seq: 1,
                at: NOW,
                body,
            },
            from,
        )
    }

    fn status() -> LeaseStatus {
        LeaseStatus {
            state: LeaseState::Running,
            paid_sats: 1000,
            refunded_sats: 0,
            started_at: Some(NOW - 60),
            runs_until: Some(NOW + 3600),
            access: Some(Access {
                server_id: "12345".into(),
                addresses: vec!["203.0.113.7".into(), "2001:db8::7".into()],
                user: "root".into(),
                image: "debian-12".into(),
                ssh_port: 22,
                open_ports: vec![22, 8080],
            }),
            message: "running".into(),
        }
    }

    fn receipt(lease: u8) -> ProviderReceipt {
        ProviderReceipt::sign(
            Receipt {
                lease_id: MessageId([lease; 32]),
                pool: PoolId([6; 32]),
                provider: key(1).node_id(),
                buyer: key(2).node_id(),
                started_at: NOW - 3600,
                ended_at: NOW,
                paid_sats: 1000,
                refunded_sats: 0,
            },
            &key(1),
        )
    }

    fn field(r: Result<(), ValidationError>) -> &'static str {
        match r {
            Err(ValidationError::OutOfRange { field, .. }) => field,
            other => panic!("expected OutOfRange, got {other:?}"),
        }
    }

    #[test]
    fn notices_are_checked_for_sense_and_signature() {
        let (provider, buyer) = (key(1), key(2));
        for n in [
            notice(&provider, NoticeBody::Status(status())),
            notice(&buyer, NoticeBody::Cancel),
            notice(&buyer, NoticeBody::StatusRequest),
            notice(&provider, NoticeBody::Receipt(receipt(5))),
            notice(
                &buyer,
                NoticeBody::Countersigned(receipt(5).countersign(&buyer).unwrap()),
            ),
        ] {
            assert_eq!(validate_notice(&n, NOW), Ok(()), "{n:?}");
        }
        let mut late = notice(&buyer, NoticeBody::Cancel).into_body();
        late.at = NOW + MAX_CLOCK_SKEW_SECS + 1;
        assert!(matches!(
            validate_notice(&Signed::sign(late, &buyer), NOW),
            Err(ValidationError::FromTheFuture { .. })
        ));
        let mut s = status();
        s.refunded_sats = 1001;
        assert!(
            validate_notice(&notice(&provider, NoticeBody::Status(s)), NOW).is_ok(),
            "a reorg after a refund leaves more refunded than paid; the status still stands"
        );
        let mut s = status();
        s.message = "\u{1b}[2J".into();
        assert_eq!(
            field(validate_notice(
                &notice(&provider, NoticeBody::Status(s)),
                NOW
            )),
            "message"
        );
        let mut s = status();
        s.access.as_mut().unwrap().addresses.push("a b".into());
        assert_eq!(
            field(validate_notice(
                &notice(&provider, NoticeBody::Status(s)),
                NOW
            )),
            "address"
        );
        for (name, ssh_port, open_ports) in [
            ("ssh port 0", 0, vec![0u16, 22]),
            ("ports out of order", 22, vec![8080, 22]),
            ("a port twice", 22, vec![22, 22]),
            ("ssh port not open", 2222, vec![22]),
        ] {
            let mut s = status();
            let a = s.access.as_mut().unwrap();
            a.ssh_port = ssh_port;
            a.open_ports = open_ports;
            assert!(
                validate_notice(&notice(&provider, NoticeBody::Status(s)), NOW).is_err(),
                "{name} passed"
            );
        }
        // A receipt for another lease, or from the wrong party.
        assert_eq!(
            field(validate_notice(
                &notice(&provider, NoticeBody::Receipt(receipt(6))),
                NOW
            )),
            "receipt"
        );
        assert_eq!(
            field(validate_notice(
                &notice(&buyer, NoticeBody::Receipt(receipt(5))),
                NOW
            )),
            "receipt"
        );
        // A notice signed by someone other than its sender.
        let mut forged = notice(&provider, NoticeBody::Cancel).into_body();
        forged.from = buyer.node_id();
        assert!(matches!(
            validate_notice(&Signed::sign(forged, &provider), NOW),
            Err(ValidationError::BadSignature(_))
        ));
    }
}

#[cfg(test)]
mod ssh_key_tests {
    use super::*;

    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFMq1LDz2jg9w7mOpwiKfpc7OclyFbnfAmDxnjAXHk82 buyer@laptop";
    const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCq04wkQ6Py8t+jPAyJMsl1yd7KnQpdWxDyhUDq9fU4iKqRxOgCjrZS4bs2AH53ScXArIcjAssc3/feMVHidVQNs1f+VA5iCBPxiTkZwBVfXexr8Ljwtv1HjL0oc+AT8FBm1JW9JKRZTrG0swuGmNlPPvT6zmgm/hGN/spc8dDCF48EUKxx80laE7TMQAkwitmopVvPV371H47qVa7TZlhC+vE57q6l6dxey/Gm+/I3oIgk+fnJ0zN2afFU4ibwN+Xqu2eu1uhho5alSSesAV+KntLGgxBmCgmh37/zh/+8MwPLzdVFjRpr9/J1EDOWeQXOMb+iyuvK8yFXtA4QWkdF rsa@host";
    const ECDSA: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBAF/AqxsI/eGgHDdzVFlL5HiRSADih969e8MC5m8drbZxo6WPD3WHJo8XNSRJH7rdc4b0YL65+lZ4EKziIIjwSk= e@h";

    #[test]
    fn real_keys_are_accepted() {
        assert_eq!(check_ssh_public_key(ED25519), Ok(()));
        assert_eq!(check_ssh_public_key(RSA), Ok(()));
        assert_eq!(check_ssh_public_key(ECDSA), Ok(()));
        // Without a comment, and as read from a .pub file (trailing newline).
        let bare = ED25519.rsplit_once(' ').unwrap().0;
        assert_eq!(check_ssh_public_key(bare), Ok(()));
        assert_eq!(check_ssh_public_key(&format!("{ED25519}\n")), Ok(()));
        assert_eq!(check_ssh_public_key(&format!("{ED25519}\r\n")), Ok(()));
        assert_eq!(
            check_ssh_public_key(&format!("{ED25519} with a long comment")),
            Ok(())
        );
    }

    #[test]
    fn bad_lines_are_refused_with_the_reason() {
        assert_eq!(check_ssh_public_key(""), Err(SshKeyError::Empty));
        assert_eq!(
            check_ssh_public_key("localhost"),
            Err(SshKeyError::UnknownKeyType {
                found: "localhost".into()
            })
        );
        assert_eq!(
            check_ssh_public_key("ssh-ed25519"),
            Err(SshKeyError::MissingKey)
        );
        // The ed25519 blob behind an RSA label.
        let relabelled = ED25519.replace("ssh-ed25519", "ssh-rsa");
        assert_eq!(
            check_ssh_public_key(&relabelled),
            Err(SshKeyError::KeyTypeMismatch {
                key_type: "ssh-rsa"
            })
        );
        // The RSA blob behind an ed25519 label.
        let relabelled = RSA.replace("ssh-rsa", "ssh-ed25519");
        assert_eq!(
            check_ssh_public_key(&relabelled),
            Err(SshKeyError::KeyTypeMismatch {
                key_type: "ssh-ed25519"
            })
        );
        // Truncated: 4 base64 characters (3 bytes) fewer.
        let truncated = ED25519.replace("Hk82", "");
        assert_eq!(
            check_ssh_public_key(&truncated),
            Err(SshKeyError::WrongKeyLength {
                key_type: "ssh-ed25519",
                len: 48,
                expected: 51
            })
        );
        assert_eq!(
            check_ssh_public_key("ssh-ed25519 AAAAC3Nza buyer@laptop"),
            Err(SshKeyError::BadBase64)
        );
        assert_eq!(
            check_ssh_public_key("ssh-ed25519 AAAA*3NzaC1lZDI1NTE5 x"),
            Err(SshKeyError::BadBase64)
        );
        assert_eq!(
            check_ssh_public_key(&format!("{ED25519}\n{RSA}")),
            Err(SshKeyError::MultipleLines)
        );
        assert_eq!(
            check_ssh_public_key(&format!("{ED25519}\u{1b}[2J")),
            Err(SshKeyError::ControlCharacter)
        );
        let long = format!("{ED25519} {}", "x".repeat(MAX_SSH_KEY_LINE));
        assert!(matches!(
            check_ssh_public_key(&long),
            Err(SshKeyError::TooLong { .. })
        ));
        // An authorized_keys line with options is not a bare public key.
        assert!(matches!(
            check_ssh_public_key(&format!("no-pty {ED25519}")),
            Err(SshKeyError::UnknownKeyType { .. })
        ));
        let text = check_ssh_public_key("localhost").unwrap_err().to_string();
        assert!(text.contains("ssh-ed25519 AAAAC3Nza... comment"), "{text}");
    }

    #[test]
    fn base64_follows_the_standard() {
        assert_eq!(base64_decode("TWFu"), Some(b"Man".to_vec()));
        assert_eq!(base64_decode("TWE="), Some(b"Ma".to_vec()));
        assert_eq!(base64_decode("TQ=="), Some(b"M".to_vec()));
        assert_eq!(base64_decode("TQ"), None);
        assert_eq!(base64_decode("T==="), None);
        assert_eq!(base64_decode("TQ==TWFu"), None);
        assert_eq!(base64_decode("TW-u"), None);
        assert_eq!(base64_decode(""), None);
    }
}
