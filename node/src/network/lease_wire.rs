//! The direct channel between buyer and provider (`/xov/lease/5`, request-response, never gossip): orders,
//! invoices, refusals and lease notices, each a signed protocol message carried as bytes.
//!
//! Invariant: a provider refuses an order for another chain than its own (`OrderRefusal::WrongChain`) before
//! it invoices, so nothing is ever paid across networks.

use serde::{Deserialize, Serialize};

/// Version 2: structured notices with sequence numbers and acknowledgements, typed refusals. Version 3: the
/// messages inside are of encoding version 2 (orders name their chain). A node of an older version cannot open
/// the channel, so it never acknowledges a notice it cannot read: the sender keeps it until both speak one.
pub const PROTOCOL: &str = "/xov/lease/5";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LeaseRequest {
    /// A signed `Order` (buyer → provider).
    Order(Vec<u8>),
    /// A signed `LeaseNotice` (either way): state changes, instance details, warnings, receipts.
    Notice(Vec<u8>),
    /// A provider's answer to a gossiped bid (provider → buyer): its signed offers that meet the bid.
    BidAnswer { bid_id: u64, offers: Vec<Vec<u8>> },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LeaseResponse {
    /// A signed `Invoice` answering an order.
    Invoice(Vec<u8>),
    /// The order was refused, and why: the buyer's node acts on the kind, people read its Display.
    Refused(xov_protocol::OrderRefusal),
    /// A bid answer was not taken (for the provider's log only).
    BidNotTaken(String),
    /// A notice was received (stored, or dropped on purpose): do not send it again.
    Ack,
    /// A notice could not be stored: send it again later.
    NotStored,
}
