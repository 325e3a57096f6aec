//! Book sync: a request-response pull so that late joiners and restarted nodes get a pool's current book
//! (gossipsub only carries what is published while a node listens). Everything received is validated exactly
//! like gossip; the book's supersession rules make repeated or overlapping pages harmless.
//!
//! Invariants: every request names the requester's chain, and a node serves only requests for its own
//! ([`SyncResponse::OtherChain`] otherwise, no penalty either way: a peer of another network is no crime).
//! Version 2 (`/xov/sync/2`): requests name their chain, and the messages inside are of encoding version 2;
//! a node that speaks only `/xov/sync/1` does not sync with this one.

use serde::{Deserialize, Serialize};
use xov_protocol::{Chain, OfferKey, PoolId};

pub const PROTOCOL: &str = "/xov/sync/2";
/// Offers per page; a page stays far below the codec's response limit.
pub const PAGE: usize = 512;
/// Receipts handed over with a pool's first page: the newest ones, far below the response limit.
pub const MAX_SYNC_RECEIPTS: usize = 2048;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SyncRequest {
    /// Every pool charter of `chain` the peer knows.
    Charters { chain: Chain },
    /// A page of a pool's book, after the given key (from the start when `None`).
    Book {
        chain: Chain,
        pool: [u8; 32],
        after: Option<OfferKey>,
    },
}

impl SyncRequest {
    /// The chain the requester trades on.
    pub fn chain(&self) -> Chain {
        match self {
            SyncRequest::Charters { chain } | SyncRequest::Book { chain, .. } => *chain,
        }
    }
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
    /// The responder trades on another chain (`chain`) and serves nothing to this requester.
    OtherChain {
        chain: Chain,
    },
}

pub fn pool_of(raw: [u8; 32]) -> PoolId {
    PoolId(raw)
}
