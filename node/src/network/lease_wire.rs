//! The direct channel between buyer and provider (`/xov/lease/1`, request-response, never gossip): orders,
//! invoices, refusals and lease notices, each a signed protocol message carried as bytes.

use serde::{Deserialize, Serialize};

pub const PROTOCOL: &str = "/xov/lease/1";

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
    /// The order was refused; the reason is for the buyer to read.
    Refused(String),
    /// A notice was received.
    Ack,
}
