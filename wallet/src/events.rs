//! What the wallet tells the node's lease logic.
//!
//! Invariants: events go out only after the state they describe is persisted; an invoice's balances in
//! `InvoiceUpdated` are those of [`crate::Invoice`] at that moment (`zero_conf_sat` is part of
//! `settled_sat`).

use serde::{Deserialize, Serialize};

use crate::invoice::InvoiceStatus;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WalletEvent {
    /// A transaction paying an invoice was seen for the first time (mempool, or a block for a light client).
    PaymentSeen {
        invoice: String,
        txid: String,
        amount_sat: u64,
        confirmations: u32,
    },
    /// A payment now counts under the invoice's policy.
    PaymentConfirmed {
        invoice: String,
        txid: String,
        amount_sat: u64,
        confirmations: u32,
    },
    /// A payment's block left the best chain; it no longer counts.
    PaymentReorged {
        invoice: String,
        txid: String,
        amount_sat: u64,
    },
    /// An invoice's status or balances changed (also for top-ups).
    InvoiceUpdated {
        invoice: String,
        status: InvoiceStatus,
        settled_sat: u64,
        /// The part of `settled_sat` counted before reaching the confirmations required.
        zero_conf_sat: u64,
        pending_sat: u64,
    },
    /// The wallet's view of the chain tip moved.
    TipChanged { height: u32 },
}
