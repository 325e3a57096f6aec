#![no_main]

//! Book sync (`/xov/sync/5`): the input is a peer's answer, decoded as libp2p's cbor codec decodes it into a
//! `SyncResponse` (and, for the serving side, into a `SyncRequest`), then read against several requests it
//! could answer (book pages, digest buckets, digests, charters) with the node's own `sync::check_response`:
//! what it accepts must be of the pool asked for, within the page limits, and its follow-up must move forward,
//! stay in the bucket asked for, and stop at the page limit; an accepted digest has exactly `DIGEST_BUCKETS`
//! entries and compares with the node's own without panicking. Every item of a
//! page is decoded as an
//! `AnyMessage` and validated as the node validates gossip; a `Book` page is then applied in the node's order
//! (withdrawals, offers, evidence) to an in-memory `OfferBook` (offers and withdrawals of the page's pool),
//! a `TrustLedger` (receipts) and a `PoolLoad` (load reports). Checks: nothing panics; the book agrees with
//! what each insert and withdrawal reported; and applying the same page again changes nothing (sync.rs: the
//! book's supersession rules make repeated or overlapping pages harmless).

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use xov_node::network::sync::{self, SyncRequest, SyncResponse};
use xov_node_fuzz::{cbor_decode, check_cbor_roundtrip, provider_key, CHAIN, NOW};
use xov_protocol::validate::{
    validate_bid, validate_bond_proof, validate_charter, validate_load_report, validate_offer,
    validate_receipt, validate_withdrawal,
};
use xov_protocol::{
    bucket_of, differing_buckets, AnyMessage, Inserted, MessageId, OfferBook, OfferKey, PoolId,
    PoolLoad, TrustLedger, ValidationError, DIGEST_BUCKETS,
};

/// What the node keeps from sync: the book, receipts and load.
struct Node {
    book: OfferBook,
    ledger: TrustLedger,
    load: PoolLoad,
}

impl Node {
    fn new() -> Self {
        Node {
            book: OfferBook::new(),
            ledger: TrustLedger::with_local(provider_key().node_id()),
            load: PoolLoad::default(),
        }
    }

    fn ids(&self) -> BTreeSet<MessageId> {
        self.book.iter().map(|o| o.id()).collect()
    }

    /// One item of a page of `pool`, as the network's `apply` takes it (validated, then stored).
    fn apply(&mut self, pool: Option<PoolId>, item: &[u8]) {
        let Ok(msg) = AnyMessage::from_bytes(item) else {
            return;
        };
        match msg {
            AnyMessage::Offer(o) => {
                if validate_offer(&o, NOW, None).is_err() || Some(o.body().pool) != pool {
                    return;
                }
                assert!(o.verify());
                let key = OfferKey::of(o.body());
                let id = o.id();
                let before = self.book.get(&key).map(|h| h.id());
                let len = self.book.len();
                match self.book.insert(o, NOW) {
                    Ok(Inserted::New) => {
                        assert_eq!(before, None);
                        assert_eq!(self.book.len(), len + 1);
                        assert_eq!(self.book.get(&key).map(|h| h.id()), Some(id));
                    }
                    Ok(Inserted::Superseded { .. }) => {
                        assert!(before.is_some());
                        assert_eq!(self.book.len(), len);
                        assert_eq!(self.book.get(&key).map(|h| h.id()), Some(id));
                    }
                    Ok(Inserted::Duplicate) => assert_eq!(before, Some(id)),
                    Err(_) => {
                        assert_eq!(self.book.get(&key).map(|h| h.id()), before);
                        assert_eq!(self.book.len(), len);
                    }
                }
            }
            AnyMessage::OfferWithdrawal(w) => {
                if validate_withdrawal(&w, NOW, None).is_err() || Some(w.body().pool) != pool {
                    return;
                }
                assert!(w.verify());
                let b = w.body();
                let key = OfferKey {
                    provider: b.provider,
                    offer_id: b.offer_id,
                };
                let before = self.book.get(&key).map(|h| h.id());
                match self.book.withdraw(&w, NOW) {
                    Ok(Some(removed)) => {
                        assert!(removed.body().sequence <= b.sequence);
                        assert!(self.book.get(&key).is_none());
                    }
                    Ok(None) | Err(ValidationError::Withdrawn { .. }) => {
                        if let Some(held) = self.book.get(&key) {
                            assert!(held.body().sequence > b.sequence);
                        }
                    }
                    Err(_) => assert_eq!(self.book.get(&key).map(|h| h.id()), before),
                }
            }
            AnyMessage::PoolCharter(c) => {
                if validate_charter(&c, NOW).is_ok() {
                    assert!(c.verify());
                    let _ = c.body().pool_id();
                }
            }
            AnyMessage::Bid(b) => {
                if validate_bid(&b, NOW).is_ok() {
                    assert!(b.verify());
                }
            }
            AnyMessage::Receipt(r) => {
                let valid = validate_receipt(&r, NOW).is_ok();
                let added = self.ledger.add_receipt(r, NOW);
                if !valid {
                    assert!(added.is_err(), "the ledger took an invalid receipt");
                }
            }
            AnyMessage::BondProof(b) => {
                if validate_bond_proof(&b, NOW).is_ok() {
                    assert!(b.verify());
                }
            }
            AnyMessage::LoadReport(l) => {
                if validate_load_report(&l, NOW).is_ok() {
                    self.load.observe(&l);
                }
            }
            // Not carried by sync; the node rejects them there. Validation must still not panic.
            AnyMessage::Order(_) | AnyMessage::Invoice(_) | AnyMessage::LeaseNotice(_) => {}
        }
    }

    /// A page as `on_sync_response` applies it: checked against the request it answers
    /// (`sync::check_response`), then its items in the checked order. Returns the follow-up request.
    fn page(&mut self, req: &SyncRequest, n: u32, resp: &SyncResponse) -> Option<SyncRequest> {
        match sync::check_response(req, n, resp.clone()) {
            Err(_) => None,
            Ok(sync::Checked::OtherChain(chain)) => {
                let _ = chain.to_string();
                None
            }
            Ok(sync::Checked::Charters { items, next }) => {
                assert!(items.len() <= sync::CHARTER_PAGE);
                for c in &items {
                    self.apply(None, c);
                }
                if let (Some(SyncRequest::Charters { after: Some(a), .. }), SyncRequest::Charters { after, .. }) =
                    (&next, req)
                {
                    assert!(after.is_none_or(|b| *a > b), "a follow-up that does not move forward");
                }
                next
            }
            Ok(sync::Checked::Digest { pool, buckets }) => {
                let SyncRequest::Digest { pool: asked, .. } = req else {
                    panic!("a digest accepted for another request than a digest");
                };
                assert_eq!(pool.0, *asked, "a digest of another pool than asked was accepted");
                assert_eq!(buckets.len(), DIGEST_BUCKETS);
                let differ = differing_buckets(&self.book.digest(&pool), &buckets);
                assert!(differ.windows(2).all(|w| w[0] < w[1]));
                assert!(differ.iter().all(|b| usize::from(*b) < DIGEST_BUCKETS));
                None
            }
            Ok(sync::Checked::Book { pool, items, next }) => {
                let (asked, after, bucket) = match req {
                    SyncRequest::Book { pool, after, .. } => (pool, after, None),
                    SyncRequest::Bucket { pool, after, bucket, .. } => (pool, after, Some(*bucket)),
                    _ => panic!("a book page accepted for a charters or digest request"),
                };
                assert_eq!(pool.0, *asked, "a page of another pool than asked was accepted");
                for item in &items {
                    self.apply(Some(pool), item);
                }
                for o in self.book.iter() {
                    assert_eq!(
                        self.book.get(&OfferKey::of(o.body())).map(|h| h.id()),
                        Some(o.id())
                    );
                }
                match &next {
                    Some(SyncRequest::Book { after: Some(a), .. }) => {
                        assert!(bucket.is_none(), "a bucket's follow-up asks for the whole book");
                        assert!(after.is_none_or(|b| *a > b), "a follow-up that does not move forward");
                        assert!(n + 1 < sync::MAX_BOOK_PAGES, "paging past the limit");
                    }
                    Some(SyncRequest::Bucket { after: Some(a), bucket: b, .. }) => {
                        assert_eq!(Some(*b), bucket, "a follow-up of another bucket or of a book page");
                        assert_eq!(bucket_of(a), *b, "a bucket's follow-up starts outside the bucket");
                        assert!(after.is_none_or(|p| *a > p), "a follow-up that does not move forward");
                        assert!(n + 1 < sync::MAX_BUCKET_PAGES, "paging past the limit");
                    }
                    Some(other) => panic!("a page's follow-up of the wrong kind: {other:?}"),
                    None => {}
                }
                if let Some(r) = &next {
                    check_cbor_roundtrip(r);
                }
                next
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some(req) = cbor_decode::<SyncRequest>(data) {
        check_cbor_roundtrip(&req);
        let _ = req.chain();
    }
    let Some(resp) = cbor_decode::<SyncResponse>(data) else {
        return;
    };
    check_cbor_roundtrip(&resp);
    // The answer read against each request it could answer: the first page of the page's own pool and of
    // another pool, a later page, the last allowed page, and the charters.
    let own = match &resp {
        SyncResponse::Book { pool, .. } | SyncResponse::Digest { pool, .. } => *pool,
        _ => [1; 32],
    };
    let after = Some(OfferKey {
        provider: provider_key().node_id(),
        offer_id: 7,
    });
    let requests = [
        (SyncRequest::Book { chain: CHAIN, pool: own, after: None }, 0),
        (SyncRequest::Book { chain: CHAIN, pool: [9; 32], after: None }, 0),
        (SyncRequest::Book { chain: CHAIN, pool: own, after }, 3),
        (SyncRequest::Book { chain: CHAIN, pool: own, after }, sync::MAX_BOOK_PAGES - 1),
        (SyncRequest::Charters { chain: CHAIN, after: None }, 0),
        (SyncRequest::Charters { chain: CHAIN, after: Some([5; 32]) }, 1),
        (SyncRequest::Digest { chain: CHAIN, pool: own }, 0),
        (SyncRequest::Digest { chain: CHAIN, pool: [9; 32] }, 0),
        (SyncRequest::Bucket { chain: CHAIN, pool: own, bucket: 0, after: None }, 0),
        (SyncRequest::Bucket { chain: CHAIN, pool: own, bucket: bucket_of(&after.unwrap()), after }, 2),
        (
            SyncRequest::Bucket { chain: CHAIN, pool: own, bucket: bucket_of(&after.unwrap()), after },
            sync::MAX_BUCKET_PAGES - 1,
        ),
    ];
    for (req, n) in &requests {
        let mut node = Node::new();
        node.page(req, *n, &resp);
        let once = node.ids();
        let len = node.book.len();
        assert_eq!(len, once.len());
        // The same page again (a retried or overlapping sync) changes nothing.
        node.page(req, *n, &resp);
        assert_eq!(node.ids(), once, "a repeated page changed the book");
        assert_eq!(node.book.len(), len);
    }
});
