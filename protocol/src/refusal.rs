//! Why a provider refused an order, as a typed value the buyer's node can act on.
//!
//! An [`OrderRefusal`] travels inside the provider's serde (CBOR) response to an order, so it has no canonical
//! encoding; its serde form is internally tagged by `reason` (snake_case) and must stay readable by older
//! nodes for the variants they know. Its `Display` is written for the buyer: what went wrong, whose fault it
//! is, and what to do. [`OrderRefusal::is_retryable_with_newer_offer`] is true only for
//! [`OrderRefusal::OfferChanged`]; [`OrderRefusal::buyers_fault`] says whether the buyer (or its node) can fix
//! the cause by changing the order.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::admission::Refusal;
use crate::lease::LeaseState;

/// Why a provider refused an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum OrderRefusal {
    /// The order could not be read or failed validation (the buyer's node is at fault).
    Malformed { detail: String },
    /// The order did not come from the buyer it names.
    NotFromBuyer,
    /// The order names another provider.
    WrongProvider,
    /// The order is for another bitcoin network than the provider's: the buyer's node ordered from a market
    /// it is not part of (its fault); nothing was invoiced, so nothing is paid.
    WrongChain {
        provider: crate::chain::Chain,
        order: crate::chain::Chain,
    },
    /// This node does not provide machines now (no wallet or no cloud).
    NotProviding,
    /// The offer was withdrawn or expired.
    OfferGone { offer_id: u64 },
    /// The offer was renewed; the buyer may retry with the newer version.
    OfferChanged {
        offer_id: u64,
        sequence: u64,
        price_sats_per_hour: u64,
    },
    /// The order names a pool other than its offer's.
    WrongPool { offer_id: u64 },
    /// The offer has no such image.
    NoSuchImage {
        offer_id: u64,
        image: String,
        available: Vec<String>,
    },
    /// The order asks for a TCP port to be opened that the offer does not allow.
    PortNotOffered {
        offer_id: u64,
        port: u16,
        allowed: Vec<u16>,
    },
    /// The lease length is outside the offer's range.
    HoursOutOfRange {
        hours: u32,
        min_hours: u32,
        max_hours: u32,
    },
    /// Every machine of the offer is leased.
    FullyBooked {
        offer_id: u64,
        leased: u32,
        capacity: u32,
    },
    /// Too many unpaid invoices open for this buyer.
    TooManyUnpaid { open: u32, max: u32 },
    /// Trust limits (admission.rs's Refusal, whose Display explains what would let the buyer in).
    Admission(Refusal),
    /// The SSH public key is not a valid OpenSSH public key line.
    BadSshKey { detail: String },
    /// The refund address is not an address of the provider's network.
    BadRefundAddress { detail: String },
    /// Something failed on the provider's side (storage, wallet); not the buyer's fault.
    ProviderError { detail: String },
    /// The lease this order created already ended.
    AlreadyEnded { state: LeaseState },
}

impl OrderRefusal {
    /// Whether ordering again from the offer's newer version may succeed (only [`OrderRefusal::OfferChanged`]).
    pub fn is_retryable_with_newer_offer(&self) -> bool {
        matches!(self, OrderRefusal::OfferChanged { .. })
    }

    /// Whether the cause lies with the buyer or its node (a bad or stale order, limits it ran into), as
    /// opposed to the provider or the state of the offer. The buyer's node should not count such a refusal
    /// against the provider.
    pub fn buyers_fault(&self) -> bool {
        match self {
            OrderRefusal::Malformed { .. }
            | OrderRefusal::NotFromBuyer
            | OrderRefusal::WrongProvider
            | OrderRefusal::WrongChain { .. }
            | OrderRefusal::OfferChanged { .. }
            | OrderRefusal::WrongPool { .. }
            | OrderRefusal::NoSuchImage { .. }
            | OrderRefusal::PortNotOffered { .. }
            | OrderRefusal::HoursOutOfRange { .. }
            | OrderRefusal::TooManyUnpaid { .. }
            | OrderRefusal::Admission(_)
            | OrderRefusal::BadSshKey { .. }
            | OrderRefusal::BadRefundAddress { .. } => true,
            OrderRefusal::NotProviding
            | OrderRefusal::OfferGone { .. }
            | OrderRefusal::FullyBooked { .. }
            | OrderRefusal::ProviderError { .. }
            | OrderRefusal::AlreadyEnded { .. } => false,
        }
    }
}

impl fmt::Display for OrderRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OrderRefusal::Malformed { detail } => write!(
                f,
                "the provider could not accept the order as sent ({detail}); your node built a bad order, update it or report a bug"
            ),
            OrderRefusal::NotFromBuyer => f.write_str(
                "the order is not signed by the buyer it names; your node built a bad order, update it or report a bug",
            ),
            OrderRefusal::WrongProvider => f.write_str(
                "the order names another provider; send it to the provider that published the offer",
            ),
            OrderRefusal::WrongChain { provider, order } => write!(
                f,
                "the provider takes payment on {provider}, your order is for {order}; nothing was invoiced: order from a provider of your own network"
            ),
            OrderRefusal::NotProviding => f.write_str(
                "this node does not provide machines now; choose another offer",
            ),
            OrderRefusal::OfferGone { offer_id } => write!(
                f,
                "offer {offer_id} was withdrawn or has expired; refresh and choose another offer"
            ),
            OrderRefusal::OfferChanged {
                offer_id,
                sequence,
                price_sats_per_hour,
            } => write!(
                f,
                "offer {offer_id} changed since you saw it (now version {sequence} at {price_sats_per_hour} sats/h); refresh and order again"
            ),
            OrderRefusal::WrongPool { offer_id } => write!(
                f,
                "the order names a pool other than offer {offer_id}'s; refresh and order again"
            ),
            OrderRefusal::NoSuchImage {
                offer_id,
                image,
                available,
            } => write!(
                f,
                "offer {offer_id} has no image {image}; it has {}",
                if available.is_empty() {
                    "none".to_string()
                } else {
                    available.join(", ")
                }
            ),
            OrderRefusal::PortNotOffered {
                offer_id,
                port,
                allowed,
            } => write!(
                f,
                "offer {offer_id} does not open port {port} to its machines; it allows {}",
                if allowed.is_empty() {
                    "SSH only".to_string()
                } else {
                    let p: Vec<String> = allowed.iter().map(u16::to_string).collect();
                    format!("{} besides SSH", p.join(", "))
                }
            ),
            OrderRefusal::HoursOutOfRange {
                hours,
                min_hours,
                max_hours,
            } => write!(
                f,
                "{hours} h is outside this offer's lease range ({min_hours} to {max_hours} h)"
            ),
            OrderRefusal::FullyBooked {
                offer_id,
                leased,
                capacity,
            } => write!(
                f,
                "offer {offer_id} is fully booked ({leased} of {capacity} machines leased); try again later or choose another offer"
            ),
            OrderRefusal::TooManyUnpaid { open, max } => write!(
                f,
                "you have {open} unpaid invoices open with this provider (at most {max} allowed); pay or let them expire, then order again"
            ),
            OrderRefusal::Admission(r) => write!(f, "{r}"),
            OrderRefusal::BadSshKey { detail } => write!(
                f,
                "the SSH public key was refused: {detail}; send the contents of your .pub file"
            ),
            OrderRefusal::BadRefundAddress { detail } => write!(
                f,
                "the refund address was refused: {detail}; give an address of the provider's bitcoin network"
            ),
            OrderRefusal::ProviderError { detail } => write!(
                f,
                "the provider failed on its side ({detail}); not your fault, try again later or choose another offer"
            ),
            OrderRefusal::AlreadyEnded { state } => write!(
                f,
                "the lease this order created already ended (state {}); order again for a new lease",
                serde_state(*state)
            ),
        }
    }
}

/// The snake_case name of a state, as the JSON forms spell it.
fn serde_state(state: LeaseState) -> String {
    format!("{state:?}")
        .chars()
        .enumerate()
        .flat_map(|(i, c)| {
            let lower = c.to_ascii_lowercase();
            if c.is_ascii_uppercase() && i > 0 {
                vec!['_', lower]
            } else {
                vec![lower]
            }
        })
        .collect()
}

impl std::error::Error for OrderRefusal {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::{admit, AdmissionPolicy};
    use crate::identity::Keypair;
    use crate::trust::TrustReport;

    fn all() -> Vec<OrderRefusal> {
        let anonymous = TrustReport::anonymous(Keypair::from_secret_bytes(&[1; 32]).node_id(), 0);
        let admission = admit(&AdmissionPolicy::default(), &anonymous, 0, 0, 500, 60_000)
            .expect_err("a busy pool refuses an anonymous buyer");
        vec![
            OrderRefusal::Malformed {
                detail: "hours out of range".into(),
            },
            OrderRefusal::NotFromBuyer,
            OrderRefusal::WrongProvider,
            OrderRefusal::NotProviding,
            OrderRefusal::OfferGone { offer_id: 3 },
            OrderRefusal::OfferChanged {
                offer_id: 3,
                sequence: 7,
                price_sats_per_hour: 120,
            },
            OrderRefusal::WrongPool { offer_id: 3 },
            OrderRefusal::NoSuchImage {
                offer_id: 3,
                image: "arch".into(),
                available: vec!["debian-12".into(), "ubuntu-24.04".into()],
            },
            OrderRefusal::HoursOutOfRange {
                hours: 1000,
                min_hours: 1,
                max_hours: 720,
            },
            OrderRefusal::FullyBooked {
                offer_id: 3,
                leased: 4,
                capacity: 4,
            },
            OrderRefusal::TooManyUnpaid { open: 3, max: 3 },
            OrderRefusal::Admission(admission),
            OrderRefusal::BadSshKey {
                detail: "not base64".into(),
            },
            OrderRefusal::BadRefundAddress {
                detail: "a mainnet address on signet".into(),
            },
            OrderRefusal::ProviderError {
                detail: "disk full".into(),
            },
            OrderRefusal::AlreadyEnded {
                state: LeaseState::PaymentSeen,
            },
            OrderRefusal::WrongChain {
                provider: crate::chain::Chain::SIGNET,
                order: crate::chain::Chain::REGTEST,
            },
        ]
    }

    #[test]
    fn every_variant_round_trips_through_json() {
        let all = all();
        assert_eq!(all.len(), 17, "a test case for every variant");
        for r in all {
            let json = serde_json::to_string(&r).unwrap();
            assert!(json.contains("\"reason\":"), "{json}");
            let back: OrderRefusal = serde_json::from_str(&json).unwrap();
            assert_eq!(back, r, "{json}");
            assert!(!r.to_string().is_empty());
        }
    }

    #[test]
    fn the_json_form_is_tagged_by_reason() {
        let json = serde_json::to_value(OrderRefusal::OfferGone { offer_id: 9 }).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"reason": "offer_gone", "offer_id": 9})
        );
        let json = serde_json::to_value(OrderRefusal::NotProviding).unwrap();
        assert_eq!(json, serde_json::json!({"reason": "not_providing"}));
    }

    #[test]
    fn messages_say_what_happened_and_what_to_do() {
        let texts: Vec<String> = all().iter().map(|r| r.to_string()).collect();
        assert_eq!(
            texts[5],
            "offer 3 changed since you saw it (now version 7 at 120 sats/h); refresh and order again"
        );
        assert_eq!(
            texts[7],
            "offer 3 has no image arch; it has debian-12, ubuntu-24.04"
        );
        assert_eq!(
            texts[8],
            "1000 h is outside this offer's lease range (1 to 720 h)"
        );
        assert!(texts[9].starts_with("offer 3 is fully booked (4 of 4 machines leased)"));
        assert!(texts[11].contains("bond worth at least"), "{}", texts[11]);
        assert!(texts[15].contains("payment_seen"), "{}", texts[15]);
        assert!(texts[14].contains("not your fault"));
        assert_eq!(
            texts[16],
            "the provider takes payment on signet, your order is for regtest; nothing was invoiced: order from a provider of your own network"
        );
    }

    #[test]
    fn an_order_for_another_chain_is_the_buyers_fault_and_names_both_chains() {
        let r = OrderRefusal::WrongChain {
            provider: crate::chain::Chain::SIGNET,
            order: crate::chain::Chain::REGTEST,
        };
        assert!(r.buyers_fault());
        assert!(!r.is_retryable_with_newer_offer());
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"reason": "wrong_chain", "provider": "signet", "order": "regtest"})
        );
    }

    #[test]
    fn only_a_changed_offer_is_retried_with_the_newer_version() {
        for r in all() {
            assert_eq!(
                r.is_retryable_with_newer_offer(),
                matches!(r, OrderRefusal::OfferChanged { .. }),
                "{r:?}"
            );
        }
        assert!(OrderRefusal::NotFromBuyer.buyers_fault());
        assert!(!OrderRefusal::ProviderError {
            detail: String::new()
        }
        .buyers_fault());
        assert!(!OrderRefusal::FullyBooked {
            offer_id: 1,
            leased: 1,
            capacity: 1
        }
        .buyers_fault());
    }
}
