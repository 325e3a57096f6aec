//! Book sync: a request-response pull so that late joiners and restarted nodes get a pool's current book
//! (gossipsub only carries what is published while a node listens). Everything received is validated exactly
//! like gossip; the book's supersession rules make repeated or overlapping pages harmless.

use serde::{Deserialize, Serialize};
use xov_protocol::{OfferKey, PoolId};

pub const PROTOCOL: &str = "/xov/sync/1";
/// Offers per page; a page stays far below the codec's response limit.
pub const PAGE: usize = 512;
/// Receipts handed over with a pool's first page: the newest ones, far below the response limit.
pub const MAX_SYNC_RECEIPTS: usize = 2048;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SyncRequest {
    /// Every pool charter the peer knows.
    Charters,
    /// A page of a pool's book, after the given key (from the start when `None`).
    Book {
        pool: [u8; 32],
        after: Option<OfferKey>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SyncResponse {
    Charters(Vec<Vec<u8>>),
    Book {
        pool: [u8; 32],
        offers: Vec<Vec<u8>>,
        withdrawals: Vec<Vec<u8>>,
        next: Option<OfferKey>,
        /// On the first page only: the pool's dual-signed receipts and the bond proofs the peer holds, so a
        /// late joiner learns the trust evidence gossiped before it came.
        #[serde(default)]
        evidence: Vec<Vec<u8>>,
    },
}

pub fn pool_of(raw: [u8; 32]) -> PoolId {
    PoolId(raw)
}
