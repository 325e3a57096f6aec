//! The offer book: every live offer a node knows, indexed for buyers' queries.
//!
//! Supersession is decided by `(provider, offer_id, sequence)` alone, with ties broken by message id, and
//! withdrawals leave a tombstone until the withdrawn offer would have expired. Together these make the book
//! independent of arrival order: any two nodes that saw the same messages hold the same book, which is what
//! gossip convergence rests on. Known limit: a superseded version leaves no trace, so if a newer version
//! expires before an older one, a delayed copy of the older one can return for the rest of its life.
//! Offer ids are per provider, across pools: one provider must not reuse an id in two pools.
//!
//! Index layout, chosen for books of a million offers (see docs/benchmarks.md): each offer lives once, boxed,
//! in a slot table, found by key through an ordered map. The price indexes are partitioned by pool and by
//! [`Shape`] (architecture and GPU model), so a query walks only partitions that can match: a rare-GPU query
//! never touches the CPU-only offers. Partitions hold `(price, slot)` pairs, 16 bytes each, and a query merges
//! the partitions it needs cheapest first, stops at the buyer's maximum price and as soon as it has `limit`
//! matches. Expiry is a time-ordered set, so pruning costs only what it removes. The key map is ordered, so a
//! page of a pool in key order (book sync) is a range walk, not a sort of the pool. Known limit: the walk skips
//! other pools' keys, so a page of a small pool in a book dominated by another pool walks past the other's
//! offers (a per-pool key set would avoid it, at ~60 bytes per offer).
//!
//! Digest (anti-entropy): each pool keeps, per [`DIGEST_BUCKETS`] bucket of the key space (the first 10 bits
//! of the provider's id), the count of its offers and the wrapping sum of their message ids' first 8 bytes,
//! updated on every insert and removal. Two books that hold the same offers of a pool have equal digests
//! whatever the order they came in; a bucket whose entries differ tells two nodes which slice of the key
//! space to exchange ([`OfferBook::bucket_page`]), so a missed gossip message is repaired without sending the
//! whole book. Message ids are hashes of the signed bytes, so no sender chooses what it adds to a sum.

use std::cmp::Reverse;
use std::collections::{btree_map, btree_set, BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::demand::{Demand, GpuWanted};
use crate::identity::NodeId;
use crate::offer::{Arch, Offer, OfferWithdrawal};
use crate::pool::PoolId;
use crate::pool_load::LoadCaps;
use crate::signed::{MessageId, Signed};
use crate::validate::ValidationError;

/// Buckets of a pool's digest: an offer falls in one by the first 10 bits of its provider's id.
pub const DIGEST_BUCKETS: usize = 1024;

/// One digest bucket: how many offers of the pool fall in it, and the wrapping sum of the first 8 bytes
/// (little-endian) of their message ids.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BucketSum {
    pub count: u32,
    pub sum: u64,
}

impl BucketSum {
    fn add(&mut self, part: u64) {
        self.count = self.count.wrapping_add(1);
        self.sum = self.sum.wrapping_add(part);
    }

    fn sub(&mut self, part: u64) {
        self.count = self.count.wrapping_sub(1);
        self.sum = self.sum.wrapping_sub(part);
    }
}

fn id_part(id: &MessageId) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&id.0[..8]);
    u64::from_le_bytes(b)
}

/// The digest bucket an offer key falls in (below [`DIGEST_BUCKETS`]).
pub fn bucket_of(key: &OfferKey) -> u16 {
    let b = key.provider.as_bytes();
    (u16::from(b[0]) << 2) | u16::from(b[1] >> 6)
}

/// The buckets in which two digests of a pool differ, in bucket order. A digest of the wrong length (not
/// [`DIGEST_BUCKETS`]) differs everywhere it is missing.
pub fn differing_buckets(ours: &[BucketSum], theirs: &[BucketSum]) -> Vec<u16> {
    (0..DIGEST_BUCKETS)
        .filter(|&i| ours.get(i) != theirs.get(i))
        .map(|i| i as u16)
        .collect()
}

/// A pool's share of the book's indexes.
#[derive(Debug, Clone)]
struct PoolIndex {
    shapes: HashMap<Shape, BTreeSet<PriceSlot>>,
    /// [`DIGEST_BUCKETS`] entries.
    digest: Box<[BucketSum]>,
}

impl Default for PoolIndex {
    fn default() -> Self {
        PoolIndex {
            shapes: HashMap::new(),
            digest: vec![BucketSum::default(); DIGEST_BUCKETS].into_boxed_slice(),
        }
    }
}

/// Identifies an offer across its versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OfferKey {
    pub provider: NodeId,
    pub offer_id: u64,
}

impl OfferKey {
    pub fn of(offer: &Offer) -> Self {
        OfferKey {
            provider: offer.provider,
            offer_id: offer.offer_id,
        }
    }
}

/// What an accepted insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    New,
    Superseded {
        previous_sequence: u64,
    },
    /// Exactly this message was already held: nothing changed, nothing to forward.
    Duplicate,
}

#[derive(Debug, Clone)]
struct Entry {
    offer: Signed<Offer>,
    id: MessageId,
}

impl Entry {
    fn key(&self) -> OfferKey {
        OfferKey::of(self.offer.body())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tombstone {
    sequence: u64,
    expires_at: u64,
}

/// Index of an entry in the slot table. u32 keeps index keys small; four billion offers is beyond any book.
type Slot = u32;

/// Price index key. Equal prices are put in [`OfferKey`] order when read (see [`Cheapest`]), which keeps the
/// key at 16 bytes instead of 48.
type PriceSlot = (u64, Slot);

/// The partition of a pool's price index an offer falls in: what most narrows a query at no cost per offer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Shape {
    arch: Arch,
    /// ASCII-lowercased, since buyers match models case-insensitively.
    gpu_model: Option<Box<str>>,
}

impl Shape {
    fn of(offer: &Offer) -> Self {
        Shape {
            arch: offer.instance.arch,
            gpu_model: offer
                .instance
                .gpu
                .as_ref()
                .map(|g| g.model.to_ascii_lowercase().into_boxed_str()),
        }
    }

    /// Whether any offer of this shape can satisfy `d` (never false for a shape holding a match).
    fn may_match(&self, d: &Demand) -> bool {
        let gpu = match &d.gpu {
            GpuWanted::DontCare => true,
            GpuWanted::None => self.gpu_model.is_none(),
            GpuWanted::Some { model, .. } => match (&self.gpu_model, model) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(have), Some(want)) => have.eq_ignore_ascii_case(want),
            },
        };
        gpu && d.arch.is_none_or(|a| a == self.arch)
    }
}

/// A buyer's query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferQuery {
    pub pool: Option<PoolId>,
    pub demand: Demand,
    /// At most this many results (0 means no limit).
    pub limit: usize,
}

#[derive(Debug, Default, Clone)]
pub struct OfferBook {
    /// Boxed so that a half-empty table after growth costs 8 bytes per spare slot, not a whole entry.
    slots: Vec<Option<Box<Entry>>>,
    free: Vec<Slot>,
    /// Ordered: sync pages and digest buckets are key ranges.
    by_key: BTreeMap<OfferKey, Slot>,
    by_pool: HashMap<PoolId, PoolIndex>,
    by_expiry: BTreeSet<(u64, Slot)>,
    /// Live offers per provider and pool, for the pool's per-provider limit without a scan.
    per_provider: HashMap<(NodeId, PoolId), usize>,
    tombstones: HashMap<OfferKey, Tombstone>,
    tombstones_by_expiry: BTreeSet<(u64, OfferKey)>,
}

impl OfferBook {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    fn entry(&self, key: &OfferKey) -> Option<&Entry> {
        self.by_key.get(key).map(|s| self.at(*s))
    }

    fn at(&self, slot: Slot) -> &Entry {
        self.slots[slot as usize]
            .as_deref()
            .expect("indexes point at live slots only")
    }

    pub fn get(&self, key: &OfferKey) -> Option<&Signed<Offer>> {
        self.entry(key).map(|e| &e.offer)
    }

    /// Every held offer, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Signed<Offer>> {
        self.slots.iter().flatten().map(|e| &e.offer)
    }

    /// Offers of one pool, cheapest first (ties by provider and offer id).
    pub fn iter_pool<'a>(&'a self, pool: &PoolId) -> impl Iterator<Item = &'a Signed<Offer>> + 'a {
        let parts = self
            .by_pool
            .get(pool)
            .into_iter()
            .flat_map(|index| index.shapes.values())
            .map(|set| set.range::<PriceSlot, _>(..));
        Cheapest::new(self, parts, |_| true).map(|e| &e.offer)
    }

    /// How many live offers `provider` holds in `pool` (for the pool's per-provider limit).
    pub fn count_for(&self, provider: &NodeId, pool: &PoolId) -> usize {
        self.per_provider
            .get(&(*provider, *pool))
            .copied()
            .unwrap_or(0)
    }

    /// What each provider's live offers in `pool` at `now` could run: the caps its load reports are believed
    /// up to ([`crate::pool_load::PoolLoad::total`]). A provider without a live offer in the pool is absent.
    pub fn load_caps(&self, pool: &PoolId, now: u64) -> LoadCaps {
        let mut caps = LoadCaps::new();
        for o in self.iter_pool(pool).map(|o| o.body()) {
            if o.expires_at > now {
                caps.entry(o.provider)
                    .or_default()
                    .add_offer(o.price_sats_per_hour, o.capacity);
            }
        }
        caps
    }

    /// What [`OfferBook::insert`] would do with `offer`, without changing anything (so callers can persist
    /// first and index second).
    pub fn check_insert(
        &self,
        offer: &Signed<Offer>,
        now: u64,
    ) -> Result<Inserted, ValidationError> {
        self.decide(offer, &offer.id(), now)
    }

    fn decide(
        &self,
        offer: &Signed<Offer>,
        id: &MessageId,
        now: u64,
    ) -> Result<Inserted, ValidationError> {
        let body = offer.body();
        if body.expires_at <= now {
            return Err(ValidationError::Expired {
                expires_at: body.expires_at,
                now,
            });
        }
        let key = OfferKey::of(body);
        if let Some(t) = self.tombstones.get(&key).filter(|t| t.expires_at > now) {
            if body.sequence <= t.sequence {
                return Err(ValidationError::Withdrawn {
                    withdrawn: t.sequence,
                    got: body.sequence,
                });
            }
        }
        let Some(held) = self.entry(&key) else {
            return Ok(Inserted::New);
        };
        let have = held.offer.body().sequence;
        if held.id == *id {
            return Ok(Inserted::Duplicate);
        }
        // Equal sequences with different content are the provider equivocating; the lower id wins everywhere.
        if body.sequence > have || (body.sequence == have && *id < held.id) {
            Ok(Inserted::Superseded {
                previous_sequence: have,
            })
        } else {
            Err(ValidationError::SequenceNotNewer {
                have,
                got: body.sequence,
            })
        }
    }

    /// Adds or supersedes an offer. The caller has validated it (signature, ranges, charter); the book
    /// enforces only what needs its state: newer sequence, tombstones and expiry at `now`.
    pub fn insert(&mut self, offer: Signed<Offer>, now: u64) -> Result<Inserted, ValidationError> {
        let id = offer.id();
        self.insert_with_id(offer, id, now)
    }

    /// [`OfferBook::insert`] with the offer's id already computed (`id` must be `offer.id()`): a node loading
    /// many offers hashes them on several threads and indexes them on one.
    pub fn insert_with_id(
        &mut self,
        offer: Signed<Offer>,
        id: MessageId,
        now: u64,
    ) -> Result<Inserted, ValidationError> {
        debug_assert!(id == offer.id(), "insert_with_id given another id");
        let outcome = self.decide(&offer, &id, now)?;
        let body = offer.body();
        let key = OfferKey::of(body);
        match outcome {
            Inserted::Duplicate => return Ok(outcome),
            Inserted::Superseded { .. } => {
                self.remove(&key);
            }
            Inserted::New => {}
        }
        let part = id_part(&id);
        let entry = Box::new(Entry { offer, id });
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(entry);
                s
            }
            None => {
                let s = Slot::try_from(self.slots.len()).expect("fewer than 2^32 offers");
                self.slots.push(Some(entry));
                s
            }
        };
        let body = self.at(slot).offer.body();
        let (price, expires_at, pool, provider) = (
            body.price_sats_per_hour,
            body.expires_at,
            body.pool,
            body.provider,
        );
        let shape = Shape::of(body);
        let index = self.by_pool.entry(pool).or_default();
        index.shapes.entry(shape).or_default().insert((price, slot));
        index.digest[usize::from(bucket_of(&key))].add(part);
        self.by_expiry.insert((expires_at, slot));
        *self.per_provider.entry((provider, pool)).or_default() += 1;
        self.by_key.insert(key, slot);
        Ok(outcome)
    }

    /// Applies a withdrawal: removes the offer if its sequence is not newer, and remembers the withdrawal so a
    /// late copy of the old offer stays out. Returns the removed offer.
    pub fn withdraw(
        &mut self,
        w: &Signed<OfferWithdrawal>,
        now: u64,
    ) -> Result<Option<Signed<Offer>>, ValidationError> {
        let b = w.body();
        if b.expires_at <= now {
            return Err(ValidationError::Expired {
                expires_at: b.expires_at,
                now,
            });
        }
        let key = OfferKey {
            provider: b.provider,
            offer_id: b.offer_id,
        };
        let mut previous_until = 0;
        if let Some(t) = self.tombstones.get(&key).copied() {
            previous_until = t.expires_at;
            if t.sequence >= b.sequence {
                return Err(ValidationError::Withdrawn {
                    withdrawn: t.sequence,
                    got: b.sequence,
                });
            }
            self.tombstones_by_expiry.remove(&(t.expires_at, key));
        }
        let removable = self
            .entry(&key)
            .is_some_and(|e| e.offer.body().sequence <= b.sequence);
        let removed = if removable { self.remove(&key) } else { None };
        // Keep the tombstone at least as long as the withdrawn offer would have lived.
        let until = removed
            .as_ref()
            .map_or(b.expires_at, |o| o.body().expires_at.max(b.expires_at))
            .max(previous_until);
        self.tombstones.insert(
            key,
            Tombstone {
                sequence: b.sequence,
                expires_at: until,
            },
        );
        self.tombstones_by_expiry.insert((until, key));
        Ok(removed)
    }

    /// Drops offers and tombstones that expired at or before `now`; returns the keys of dropped offers, in
    /// expiry order (ties by key).
    pub fn expire(&mut self, now: u64) -> Vec<OfferKey> {
        let mut due: Vec<(u64, OfferKey)> = self
            .by_expiry
            .range(..=(now, Slot::MAX))
            .map(|&(at, slot)| (at, self.at(slot).key()))
            .collect();
        due.sort_unstable();
        for (_, k) in &due {
            self.remove(k);
        }
        let dead: Vec<(u64, OfferKey)> = self
            .tombstones_by_expiry
            .range(..(now.saturating_add(1), OfferKey::MIN))
            .copied()
            .collect();
        for d in dead {
            self.tombstones_by_expiry.remove(&d);
            self.tombstones.remove(&d.1);
        }
        due.into_iter().map(|(_, k)| k).collect()
    }

    /// Forgets an offer without a withdrawal (the node left its pool). A later copy may come back.
    pub fn remove_key(&mut self, key: &OfferKey) -> Option<Signed<Offer>> {
        self.remove(key)
    }

    fn remove(&mut self, key: &OfferKey) -> Option<Signed<Offer>> {
        let slot = self.by_key.remove(key)?;
        let entry = self.slots[slot as usize]
            .take()
            .expect("the key map points at live slots only");
        self.free.push(slot);
        let body = entry.offer.body();
        if let Some(index) = self.by_pool.get_mut(&body.pool) {
            let shape = Shape::of(body);
            if let Some(set) = index.shapes.get_mut(&shape) {
                set.remove(&(body.price_sats_per_hour, slot));
                if set.is_empty() {
                    index.shapes.remove(&shape);
                }
            }
            index.digest[usize::from(bucket_of(key))].sub(id_part(&entry.id));
            if index.shapes.is_empty() {
                self.by_pool.remove(&body.pool);
            }
        }
        self.by_expiry.remove(&(body.expires_at, slot));
        let owner = (body.provider, body.pool);
        if let Some(n) = self.per_provider.get_mut(&owner) {
            *n -= 1;
            if *n == 0 {
                self.per_provider.remove(&owner);
            }
        }
        Some(entry.offer)
    }

    /// Offers matching `q` that are live at `now`, cheapest first (ties by provider and offer id, so every node
    /// answers the same query in the same order).
    pub fn query(&self, q: &OfferQuery, now: u64) -> Vec<&Signed<Offer>> {
        let d = &q.demand;
        let max = d.max_price_sats_per_hour.unwrap_or(u64::MAX);
        let pools: Vec<&PoolIndex> = match &q.pool {
            Some(p) => self.by_pool.get(p).into_iter().collect(),
            None => self.by_pool.values().collect(),
        };
        let parts = pools
            .into_iter()
            .flat_map(|index| index.shapes.iter())
            .filter(|(shape, _)| shape.may_match(d))
            .map(|(_, set)| set.range(..=(max, Slot::MAX)));
        let limit = if q.limit == 0 { usize::MAX } else { q.limit };
        Cheapest::new(self, parts, |e: &Entry| {
            let o = e.offer.body();
            o.expires_at > now && d.matches(o)
        })
        .take(limit)
        .map(|e| &e.offer)
        .collect()
    }

    /// Up to `limit` offers of `pool` in key order, after `after` (from the start when `None`), and whether
    /// more follow: a page of book sync.
    pub fn page(
        &self,
        pool: &PoolId,
        after: Option<OfferKey>,
        limit: usize,
    ) -> (Vec<&Signed<Offer>>, bool) {
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.take_page(
            pool,
            self.by_key.range((from, Bound::Unbounded)),
            limit,
            |_| true,
        )
    }

    /// [`OfferBook::page`] within one digest bucket: the pool's offers whose keys fall in `bucket`, after
    /// `after`.
    pub fn bucket_page(
        &self,
        pool: &PoolId,
        bucket: u16,
        after: Option<OfferKey>,
        limit: usize,
    ) -> (Vec<&Signed<Offer>>, bool) {
        let from = match after {
            Some(a) if bucket_of(&a) == bucket => Bound::Excluded(a),
            Some(a) if bucket_of(&a) > bucket => return (Vec::new(), false),
            _ => Bound::Included(OfferKey::first_of(bucket)),
        };
        let range = self.by_key.range((from, Bound::Unbounded));
        self.take_page(pool, range, limit, |k| bucket_of(k) == bucket)
    }

    fn take_page<'a>(
        &'a self,
        pool: &PoolId,
        range: btree_map::Range<'a, OfferKey, Slot>,
        limit: usize,
        within: impl Fn(&OfferKey) -> bool,
    ) -> (Vec<&'a Signed<Offer>>, bool) {
        let mut out = Vec::new();
        if !self.by_pool.contains_key(pool) {
            return (out, false);
        }
        for (_, slot) in range.take_while(|(k, _)| within(k)) {
            let e = self.at(*slot);
            if e.offer.body().pool != *pool {
                continue;
            }
            if out.len() == limit {
                return (out, true);
            }
            out.push(&e.offer);
        }
        (out, false)
    }

    /// The pool's digest: [`DIGEST_BUCKETS`] bucket sums (all zero for a pool the book holds nothing of).
    pub fn digest(&self, pool: &PoolId) -> Vec<BucketSum> {
        match self.by_pool.get(pool) {
            Some(index) => index.digest.to_vec(),
            None => vec![BucketSum::default(); DIGEST_BUCKETS],
        }
    }

    /// A canonical summary of the book's state (live offers by id and tombstones), for comparing two books.
    pub fn fingerprint(&self) -> Vec<(OfferKey, [u8; 32])> {
        let mut v: Vec<_> = self
            .slots
            .iter()
            .flatten()
            .map(|e| (e.key(), e.id.0))
            .collect();
        v.extend(self.tombstones.iter().map(|(k, t)| {
            let mut marker = [0xffu8; 32];
            marker[..8].copy_from_slice(&t.sequence.to_be_bytes());
            (*k, marker)
        }));
        v.sort();
        v
    }
}

impl OfferKey {
    /// The smallest key, for range bounds.
    const MIN: OfferKey = OfferKey {
        provider: NodeId::MIN,
        offer_id: 0,
    };

    /// The smallest key of a digest bucket, for range bounds (its provider bytes are no key).
    fn first_of(bucket: u16) -> OfferKey {
        let mut b = [0u8; 32];
        b[0] = (bucket >> 2) as u8;
        b[1] = ((bucket & 3) as u8) << 6;
        OfferKey {
            provider: NodeId::bound(b),
            offer_id: 0,
        }
    }
}

/// Merges price-index partitions into one stream of entries that pass `keep`, cheapest first and, within a
/// price, in key order (gathered and sorted one price at a time, so a `take(n)` on top stays exact).
struct Cheapest<'a, F> {
    book: &'a OfferBook,
    parts: Vec<btree_set::Range<'a, PriceSlot>>,
    /// The next pair of each partition that has one, with the partition's index.
    heads: BinaryHeap<Reverse<(PriceSlot, usize)>>,
    /// Entries of the current price that passed `keep`, sorted so that `pop` yields the smallest key.
    run: Vec<&'a Entry>,
    keep: F,
}

impl<'a, F: FnMut(&Entry) -> bool> Cheapest<'a, F> {
    fn new(
        book: &'a OfferBook,
        parts: impl IntoIterator<Item = btree_set::Range<'a, PriceSlot>>,
        keep: F,
    ) -> Self {
        let mut parts: Vec<_> = parts.into_iter().collect();
        let heads = parts
            .iter_mut()
            .enumerate()
            .filter_map(|(i, r)| r.next().map(|head| Reverse((*head, i))))
            .collect();
        Cheapest {
            book,
            parts,
            heads,
            run: Vec::new(),
            keep,
        }
    }
}

impl<'a, F: FnMut(&Entry) -> bool> Iterator for Cheapest<'a, F> {
    type Item = &'a Entry;

    fn next(&mut self) -> Option<&'a Entry> {
        loop {
            if let Some(e) = self.run.pop() {
                return Some(e);
            }
            let Reverse(((price, _), _)) = *self.heads.peek()?;
            while let Some(&Reverse(((p, slot), i))) = self.heads.peek() {
                if p != price {
                    break;
                }
                self.heads.pop();
                let e = self.book.at(slot);
                if (self.keep)(e) {
                    self.run.push(e);
                }
                if let Some(next) = self.parts[i].next() {
                    self.heads.push(Reverse((*next, i)));
                }
            }
            self.run.sort_unstable_by_key(|e| Reverse(e.key()));
        }
    }
}
