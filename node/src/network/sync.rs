//! Book sync: a request-response pull so that late joiners and restarted nodes get a pool's current book
//! and the pools' charters (gossipsub only carries what is published while a node listens). Everything
//! received is validated exactly like gossip; the book's supersession rules make repeated or overlapping
//! pages harmless.
//!
//! Invariants:
//! - Every request names the requester's chain, and a node serves only requests for its own
//!   ([`SyncResponse::OtherChain`] otherwise, no penalty either way: a peer of another network is no crime).
//! - An answer is read against the request it answers ([`check_response`]), never on its own word: the pool
//!   is the one asked for, the kind is the one asked for, a page holds at most its limit, only a first page
//!   carries evidence, and a `next` must lie strictly after the page's start. Breaking any of these is the
//!   answering peer's fault ([`SyncFault`]), and nothing of that answer is applied.
//! - A sync of one pool (or of the charters) from one peer follows at most [`MAX_BOOK_PAGES`]
//!   ([`MAX_CHARTER_PAGES`]) pages, so a peer cannot keep us paging forever.
//! - Charters travel in pages too (by count and by bytes), so however many exist, every page fits far
//!   below the codec's 10 MiB response limit and a new node learns every pool.
//!
//! - Anti-entropy: a node asks a random pool peer for the pool's digest now and then ([`SyncRequest::Digest`],
//!   every `[network] resync_secs`), compares it with its own and pulls only the buckets that differ
//!   ([`SyncRequest::Bucket`], at most [`MAX_RESYNC_BUCKETS`] a round, each at most [`MAX_BUCKET_PAGES`]
//!   pages, and at most [`RESYNC_REQUESTS`] requests a round in all), so an offer or withdrawal that gossip lost reaches it without the whole book being sent again.
//!   A digest answer must have exactly [`DIGEST_BUCKETS`] entries, and a bucket page carries no evidence.
//!
//! Version 3: charters are paged; version 4 carries offers of encoding version 3; version 5 (`/xov/sync/5`)
//! adds digests and bucket pages. A node that speaks only an older version does not sync with this one (it
//! still gossips).

use serde::{Deserialize, Serialize};
use thiserror::Error;
use xov_protocol::{BucketSum, Chain, OfferKey, PoolId, DIGEST_BUCKETS};

pub const PROTOCOL: &str = "/xov/sync/5";
/// Offers per page; a page stays far below the codec's response limit.
pub const PAGE: usize = 512;
/// Withdrawals handed over with a pool's first page.
pub const MAX_SYNC_WITHDRAWALS: usize = 4096;
/// Receipts handed over with a pool's first page: the newest ones, far below the response limit.
pub const MAX_SYNC_RECEIPTS: usize = 2048;
/// Items of evidence (receipts, then bond proofs) on a first page; a server truncates to it.
pub const MAX_SYNC_EVIDENCE: usize = 2 * MAX_SYNC_RECEIPTS;
/// Charters per page (at most 10 KiB each).
pub const CHARTER_PAGE: usize = 64;
/// Bytes of charters per page.
pub const CHARTER_PAGE_BYTES: usize = 512 * 1024;
/// Pages followed in one sync of one pool from one peer (`PAGE` offers each).
pub const MAX_BOOK_PAGES: u32 = 256;
/// Differing buckets pulled in one round; the rest wait for the next round (or another peer).
pub const MAX_RESYNC_BUCKETS: usize = 16;
/// Pages followed in one bucket's pull (a bucket holds about 1/1024 of a pool).
pub const MAX_BUCKET_PAGES: u32 = 32;
/// Sync requests one anti-entropy round sends at most, every pool together: digests, buckets and the buckets'
/// further pages (the answering peer steers those, so they come out of this budget too). Below what a peer
/// serves in a default round (30 s at one a second, `SYNC_SERVE_RATE_PER_SEC`), so resync alone never gets an
/// honest node refused or penalised, and a peer answering a digest cannot make a round cost more than this many
/// pages (512 offers each).
pub const RESYNC_REQUESTS: u32 = 24;
/// Pages followed in one sync of the charters from one peer: twice what a node keeps.
pub const MAX_CHARTER_PAGES: u32 = (2 * crate::market::MAX_CHARTERS / CHARTER_PAGE) as u32;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncRequest {
    /// A page of the pool charters of `chain` the peer knows, in pool-id order after `after`.
    Charters {
        chain: Chain,
        after: Option<[u8; 32]>,
    },
    /// A page of a pool's book, after the given key (from the start when `None`).
    Book {
        chain: Chain,
        pool: [u8; 32],
        after: Option<OfferKey>,
    },
    /// The pool's digest: one [`BucketSum`] per bucket.
    Digest { chain: Chain, pool: [u8; 32] },
    /// A page of the pool's offers in one digest bucket, after the given key; the first page also carries
    /// the bucket's withdrawals. Answered with [`SyncResponse::Book`].
    Bucket {
        chain: Chain,
        pool: [u8; 32],
        bucket: u16,
        after: Option<OfferKey>,
    },
}

impl SyncRequest {
    /// The chain the requester trades on.
    pub fn chain(&self) -> Chain {
        match self {
            SyncRequest::Charters { chain, .. }
            | SyncRequest::Book { chain, .. }
            | SyncRequest::Digest { chain, .. }
            | SyncRequest::Bucket { chain, .. } => *chain,
        }
    }
}

impl SyncRequest {
    /// For a request of a pool's pages (its book, or one digest bucket): the pool, where the page starts, and
    /// how much evidence a page may carry.
    fn pool_page(&self) -> Option<([u8; 32], Option<OfferKey>, usize)> {
        match self {
            SyncRequest::Book { pool, after, .. } => Some((*pool, *after, MAX_SYNC_EVIDENCE)),
            SyncRequest::Bucket { pool, after, .. } => Some((*pool, *after, 0)),
            SyncRequest::Charters { .. } | SyncRequest::Digest { .. } => None,
        }
    }

    /// The request for the page after key `n`, this request having been the `page`th of its sync; `None` at
    /// the page limit. A bucket's next page must start in the bucket.
    fn next_page(&self, n: OfferKey, page: u32) -> Result<Option<SyncRequest>, SyncFault> {
        Ok(match *self {
            SyncRequest::Book { chain, pool, .. } if page + 1 < MAX_BOOK_PAGES => {
                Some(SyncRequest::Book {
                    chain,
                    pool,
                    after: Some(n),
                })
            }
            SyncRequest::Bucket { bucket, .. } if xov_protocol::bucket_of(&n) != bucket => {
                return Err(SyncFault::OutsideBucket {
                    asked: bucket,
                    got: xov_protocol::bucket_of(&n),
                })
            }
            SyncRequest::Bucket {
                chain,
                pool,
                bucket,
                ..
            } if page + 1 < MAX_BUCKET_PAGES => Some(SyncRequest::Bucket {
                chain,
                pool,
                bucket,
                after: Some(n),
            }),
            _ => None,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SyncResponse {
    Charters {
        charters: Vec<Vec<u8>>,
        /// Ask again after this pool id for more.
        next: Option<[u8; 32]>,
    },
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
    OtherChain { chain: Chain },
    /// The pool's digest ([`DIGEST_BUCKETS`] entries; all zero for a pool the responder has not joined).
    Digest {
        pool: [u8; 32],
        buckets: Vec<BucketSum>,
    },
}

pub fn pool_of(raw: [u8; 32]) -> PoolId {
    PoolId(raw)
}

/// How a sync answer broke the protocol: the answering peer's fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SyncFault {
    #[error("answered a {asked} request with a {got} page")]
    WrongKind {
        asked: &'static str,
        got: &'static str,
    },
    #[error("asked for pool {asked}, got a page of pool {got}")]
    WrongPool { asked: PoolId, got: PoolId },
    #[error("{what}: {got} items, at most {max} per page")]
    TooLong {
        what: &'static str,
        got: usize,
        max: usize,
    },
    #[error("evidence on a page other than the first")]
    EvidenceNotFirst,
    #[error("the next page would start at or before this one")]
    NoProgress,
    #[error("a digest of {got} buckets, not {DIGEST_BUCKETS}")]
    DigestLength { got: usize },
    #[error("bucket {asked} asked, the next page would start in bucket {got}")]
    OutsideBucket { asked: u16, got: u16 },
}

/// A checked answer: what to apply, and what to ask next (if anything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// The peer trades on another chain.
    OtherChain(Chain),
    Charters {
        items: Vec<Vec<u8>>,
        next: Option<SyncRequest>,
    },
    Book {
        pool: PoolId,
        /// Withdrawals first, so that a withdrawn offer in the same page stays out; then offers, evidence.
        items: Vec<Vec<u8>>,
        next: Option<SyncRequest>,
    },
    Digest {
        pool: PoolId,
        buckets: Vec<BucketSum>,
    },
}

fn too_long(what: &'static str, got: usize, max: usize) -> Result<(), SyncFault> {
    if got > max {
        Err(SyncFault::TooLong { what, got, max })
    } else {
        Ok(())
    }
}

/// A book or bucket page as answered, with where its request started.
struct PageIn<'a> {
    after: Option<OfferKey>,
    offers: &'a [Vec<u8>],
    withdrawals: &'a [Vec<u8>],
    evidence: &'a [Vec<u8>],
    next: Option<OfferKey>,
}

impl PageIn<'_> {
    /// The rules every page of a pool keeps (its limits, withdrawals and evidence on a first page only, a
    /// `next` strictly after the start); returns that `next`.
    fn check(&self, max_evidence: usize) -> Result<Option<OfferKey>, SyncFault> {
        too_long("offers", self.offers.len(), PAGE)?;
        too_long("withdrawals", self.withdrawals.len(), MAX_SYNC_WITHDRAWALS)?;
        too_long("evidence", self.evidence.len(), max_evidence)?;
        if self.after.is_some() && !(self.evidence.is_empty() && self.withdrawals.is_empty()) {
            return Err(SyncFault::EvidenceNotFirst);
        }
        match self.next {
            Some(n) if self.after.is_some_and(|a| n <= a) => Err(SyncFault::NoProgress),
            n => Ok(n),
        }
    }
}

/// Checks `resp` against the request `req` it answers, the `page`th of this sync (0 = first). The follow-up
/// request is `None` when the peer says there is no more or the sync reached its page limit.
pub fn check_response(
    req: &SyncRequest,
    page: u32,
    resp: SyncResponse,
) -> Result<Checked, SyncFault> {
    let kind = |r: &SyncResponse| match r {
        SyncResponse::Charters { .. } => "charters",
        SyncResponse::Book { .. } => "book",
        SyncResponse::OtherChain { .. } => "other-chain",
        SyncResponse::Digest { .. } => "digest",
    };
    let same_pool = |asked: &[u8; 32], got: [u8; 32]| {
        if got == *asked {
            Ok(())
        } else {
            Err(SyncFault::WrongPool {
                asked: PoolId(*asked),
                got: PoolId(got),
            })
        }
    };
    match (req, resp) {
        (_, SyncResponse::OtherChain { chain }) => Ok(Checked::OtherChain(chain)),
        (SyncRequest::Charters { chain, after }, SyncResponse::Charters { charters, next }) => {
            too_long("charters", charters.len(), CHARTER_PAGE)?;
            let next = match next {
                Some(n) if after.is_some_and(|a| n <= a) => return Err(SyncFault::NoProgress),
                Some(n) if page + 1 < MAX_CHARTER_PAGES => Some(SyncRequest::Charters {
                    chain: *chain,
                    after: Some(n),
                }),
                _ => None,
            };
            Ok(Checked::Charters {
                items: charters,
                next,
            })
        }
        (
            req,
            SyncResponse::Book {
                pool,
                offers,
                withdrawals,
                next,
                evidence,
            },
        ) if req.pool_page().is_some() => {
            let (asked, after, max_evidence) = req.pool_page().expect("checked by the guard");
            same_pool(&asked, pool)?;
            let page_in = PageIn {
                after,
                offers: &offers,
                withdrawals: &withdrawals,
                evidence: &evidence,
                next,
            };
            let next = match page_in.check(max_evidence)? {
                Some(n) => req.next_page(n, page)?,
                None => None,
            };
            let items = withdrawals
                .into_iter()
                .chain(offers)
                .chain(evidence)
                .collect();
            Ok(Checked::Book {
                pool: PoolId(pool),
                items,
                next,
            })
        }
        (SyncRequest::Digest { pool: asked, .. }, SyncResponse::Digest { pool, buckets }) => {
            same_pool(asked, pool)?;
            if buckets.len() != DIGEST_BUCKETS {
                return Err(SyncFault::DigestLength { got: buckets.len() });
            }
            Ok(Checked::Digest {
                pool: PoolId(pool),
                buckets,
            })
        }
        (req, resp) => Err(SyncFault::WrongKind {
            asked: match req {
                SyncRequest::Charters { .. } => "charters",
                SyncRequest::Book { .. } => "book",
                SyncRequest::Digest { .. } => "digest",
                SyncRequest::Bucket { .. } => "bucket",
            },
            got: kind(&resp),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xov_protocol::bucket_of;

    fn key(n: u8) -> OfferKey {
        OfferKey {
            provider: xov_protocol::Keypair::from_secret_bytes(&[n; 32]).node_id(),
            offer_id: n as u64,
        }
    }

    fn book_req(after: Option<OfferKey>) -> SyncRequest {
        SyncRequest::Book {
            chain: Chain::REGTEST,
            pool: [1; 32],
            after,
        }
    }

    fn digest_req() -> SyncRequest {
        SyncRequest::Digest {
            chain: Chain::REGTEST,
            pool: [1; 32],
        }
    }

    fn bucket_req(bucket: u16, after: Option<OfferKey>) -> SyncRequest {
        SyncRequest::Bucket {
            chain: Chain::REGTEST,
            pool: [1; 32],
            bucket,
            after,
        }
    }

    fn page(
        pool: [u8; 32],
        offers: usize,
        next: Option<OfferKey>,
        evidence: usize,
    ) -> SyncResponse {
        SyncResponse::Book {
            pool,
            offers: vec![vec![0]; offers],
            withdrawals: Vec::new(),
            next,
            evidence: vec![vec![0]; evidence],
        }
    }

    #[test]
    fn answers_are_read_against_their_request() {
        let (k1, k2) = {
            let (a, b) = (key(1), key(2));
            if a < b {
                (a, b)
            } else {
                (b, a)
            }
        };
        // A key in another digest bucket than k1's.
        let other = (3..=40)
            .map(key)
            .find(|k| bucket_of(k) != bucket_of(&k1))
            .expect("40 random keys fill more than one bucket");
        struct Case {
            name: &'static str,
            req: SyncRequest,
            page: u32,
            resp: SyncResponse,
            want: Result<Option<SyncRequest>, SyncFault>,
        }
        let cases = [
            Case {
                name: "a first page with more to come asks for the next",
                req: book_req(None),
                page: 0,
                resp: page([1; 32], PAGE, Some(k1), 10),
                want: Ok(Some(book_req(Some(k1)))),
            },
            Case {
                name: "the last page ends the sync",
                req: book_req(Some(k1)),
                page: 3,
                resp: page([1; 32], 3, None, 0),
                want: Ok(None),
            },
            Case {
                name: "a page of another pool than asked is the peer's fault",
                req: book_req(None),
                page: 0,
                resp: page([2; 32], 1, None, 0),
                want: Err(SyncFault::WrongPool {
                    asked: PoolId([1; 32]),
                    got: PoolId([2; 32]),
                }),
            },
            Case {
                name: "a next that does not move forward is the peer's fault",
                req: book_req(Some(k2)),
                page: 1,
                resp: page([1; 32], 1, Some(k1), 0),
                want: Err(SyncFault::NoProgress),
            },
            Case {
                name: "a next equal to the start is no progress either",
                req: book_req(Some(k1)),
                page: 1,
                resp: page([1; 32], 1, Some(k1), 0),
                want: Err(SyncFault::NoProgress),
            },
            Case {
                name: "an over-long page is the peer's fault",
                req: book_req(None),
                page: 0,
                resp: page([1; 32], PAGE + 1, None, 0),
                want: Err(SyncFault::TooLong {
                    what: "offers",
                    got: PAGE + 1,
                    max: PAGE,
                }),
            },
            Case {
                name: "evidence rides on the first page only",
                req: book_req(Some(k1)),
                page: 1,
                resp: page([1; 32], 1, None, 1),
                want: Err(SyncFault::EvidenceNotFirst),
            },
            Case {
                name: "paging stops at the page limit however far next points",
                req: book_req(Some(k1)),
                page: MAX_BOOK_PAGES - 1,
                resp: page([1; 32], PAGE, Some(k2), 0),
                want: Ok(None),
            },
            Case {
                name: "a charters answer to a book request is the peer's fault",
                req: book_req(None),
                page: 0,
                resp: SyncResponse::Charters {
                    charters: Vec::new(),
                    next: None,
                },
                want: Err(SyncFault::WrongKind {
                    asked: "book",
                    got: "charters",
                }),
            },
            Case {
                name: "charters page on, strictly forward",
                req: SyncRequest::Charters {
                    chain: Chain::REGTEST,
                    after: Some([5; 32]),
                },
                page: 1,
                resp: SyncResponse::Charters {
                    charters: vec![vec![0]; CHARTER_PAGE],
                    next: Some([9; 32]),
                },
                want: Ok(Some(SyncRequest::Charters {
                    chain: Chain::REGTEST,
                    after: Some([9; 32]),
                })),
            },
            Case {
                name: "charters that page backwards are the peer's fault",
                req: SyncRequest::Charters {
                    chain: Chain::REGTEST,
                    after: Some([5; 32]),
                },
                page: 1,
                resp: SyncResponse::Charters {
                    charters: vec![vec![0]],
                    next: Some([5; 32]),
                },
                want: Err(SyncFault::NoProgress),
            },
            Case {
                name: "a digest of the right length is taken",
                req: digest_req(),
                page: 0,
                resp: SyncResponse::Digest {
                    pool: [1; 32],
                    buckets: vec![BucketSum::default(); DIGEST_BUCKETS],
                },
                want: Ok(None),
            },
            Case {
                name: "a digest of another length is the peer's fault",
                req: digest_req(),
                page: 0,
                resp: SyncResponse::Digest {
                    pool: [1; 32],
                    buckets: vec![BucketSum::default(); DIGEST_BUCKETS - 1],
                },
                want: Err(SyncFault::DigestLength {
                    got: DIGEST_BUCKETS - 1,
                }),
            },
            Case {
                name: "a digest of another pool is the peer's fault",
                req: digest_req(),
                page: 0,
                resp: SyncResponse::Digest {
                    pool: [2; 32],
                    buckets: vec![BucketSum::default(); DIGEST_BUCKETS],
                },
                want: Err(SyncFault::WrongPool {
                    asked: PoolId([1; 32]),
                    got: PoolId([2; 32]),
                }),
            },
            Case {
                name: "a bucket pages on within its bucket",
                req: bucket_req(bucket_of(&k1), None),
                page: 0,
                resp: page([1; 32], PAGE, Some(k1), 0),
                want: Ok(Some(bucket_req(bucket_of(&k1), Some(k1)))),
            },
            Case {
                name: "a bucket's next page in another bucket is the peer's fault",
                req: bucket_req(bucket_of(&k1), None),
                page: 0,
                resp: page([1; 32], PAGE, Some(other), 0),
                want: Err(SyncFault::OutsideBucket {
                    asked: bucket_of(&k1),
                    got: bucket_of(&other),
                }),
            },
            Case {
                name: "a bucket page carries no evidence",
                req: bucket_req(bucket_of(&k1), None),
                page: 0,
                resp: page([1; 32], 1, None, 1),
                want: Err(SyncFault::TooLong {
                    what: "evidence",
                    got: 1,
                    max: 0,
                }),
            },
            Case {
                name: "a bucket's paging stops at its page limit",
                req: bucket_req(bucket_of(&k1), None),
                page: MAX_BUCKET_PAGES - 1,
                resp: page([1; 32], PAGE, Some(k1), 0),
                want: Ok(None),
            },
            Case {
                name: "a digest answer to a bucket request is the peer's fault",
                req: bucket_req(0, None),
                page: 0,
                resp: SyncResponse::Digest {
                    pool: [1; 32],
                    buckets: Vec::new(),
                },
                want: Err(SyncFault::WrongKind {
                    asked: "bucket",
                    got: "digest",
                }),
            },
        ];
        for c in cases {
            let got = check_response(&c.req, c.page, c.resp).map(|ok| match ok {
                Checked::Book { next, .. } | Checked::Charters { next, .. } => next,
                Checked::OtherChain(_) | Checked::Digest { .. } => None,
            });
            assert_eq!(got, c.want, "{}", c.name);
        }
    }
}
