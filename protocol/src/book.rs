//! The offer book: every live offer a node knows, indexed for buyers' queries.
//!
//! Supersession is decided by `(provider, offer_id, sequence)` alone, with ties broken by message id, and
//! withdrawals leave a tombstone until the withdrawn offer would have expired. Together these make the book
//! independent of arrival order: any two nodes that saw the same messages hold the same book, which is what
//! gossip convergence rests on. Known limit: a superseded version leaves no trace, so if a newer version
//! expires before an older one, a delayed copy of the older one can return for the rest of its life.
//! Offer ids are per provider, across pools: one provider must not reuse an id in two pools.
//!
//! Index layout, chosen for books of a million offers: entries live in one hash map by key; each pool keeps a
//! price-ordered set of keys (and so does the whole book), so a query walks offers cheapest first, can stop at
//! the buyer's maximum price, and stops as soon as it has `limit` matches. Expiry is a time-ordered set, so
//! pruning costs only what it removes.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::demand::Demand;
use crate::identity::NodeId;
use crate::offer::{Offer, OfferWithdrawal};
use crate::pool::PoolId;
use crate::signed::{MessageId, Signed};
use crate::validate::ValidationError;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tombstone {
    sequence: u64,
    expires_at: u64,
}

type PriceKey = (u64, OfferKey);

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
    entries: HashMap<OfferKey, Entry>,
    by_price: BTreeSet<PriceKey>,
    by_pool: HashMap<PoolId, BTreeSet<PriceKey>>,
    by_expiry: BTreeSet<(u64, OfferKey)>,
    tombstones: HashMap<OfferKey, Tombstone>,
    tombstones_by_expiry: BTreeSet<(u64, OfferKey)>,
}

impl OfferBook {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, key: &OfferKey) -> Option<&Signed<Offer>> {
        self.entries.get(key).map(|e| &e.offer)
    }

    /// Every held offer, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Signed<Offer>> {
        self.entries.values().map(|e| &e.offer)
    }

    /// Offers of one pool.
    pub fn iter_pool<'a>(&'a self, pool: &PoolId) -> impl Iterator<Item = &'a Signed<Offer>> + 'a {
        self.by_pool
            .get(pool)
            .into_iter()
            .flat_map(|set| set.iter())
            .filter_map(|(_, k)| self.get(k))
    }

    /// How many live offers `provider` holds in `pool` (for the pool's per-provider limit).
    pub fn count_for(&self, provider: &NodeId, pool: &PoolId) -> usize {
        self.iter_pool(pool)
            .filter(|o| o.body().provider == *provider)
            .count()
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
        let Some(held) = self.entries.get(&key) else {
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
        let price_key = (body.price_sats_per_hour, key);
        self.by_price.insert(price_key);
        self.by_pool.entry(body.pool).or_default().insert(price_key);
        self.by_expiry.insert((body.expires_at, key));
        self.entries.insert(key, Entry { offer, id });
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
            .entries
            .get(&key)
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

    /// Drops offers and tombstones that expired at or before `now`; returns the keys of dropped offers.
    pub fn expire(&mut self, now: u64) -> Vec<OfferKey> {
        let due: Vec<OfferKey> = self
            .by_expiry
            .range(..(now.saturating_add(1), OfferKey::MIN))
            .map(|(_, k)| *k)
            .collect();
        for k in &due {
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
        due
    }

    /// Forgets an offer without a withdrawal (the node left its pool). A later copy may come back.
    pub fn remove_key(&mut self, key: &OfferKey) -> Option<Signed<Offer>> {
        self.remove(key)
    }

    fn remove(&mut self, key: &OfferKey) -> Option<Signed<Offer>> {
        let entry = self.entries.remove(key)?;
        let body = entry.offer.body();
        let price_key = (body.price_sats_per_hour, *key);
        self.by_price.remove(&price_key);
        if let Some(set) = self.by_pool.get_mut(&body.pool) {
            set.remove(&price_key);
            if set.is_empty() {
                self.by_pool.remove(&body.pool);
            }
        }
        self.by_expiry.remove(&(body.expires_at, *key));
        Some(entry.offer)
    }

    /// Offers matching `q` that are live at `now`, cheapest first (ties by provider and offer id, so every node
    /// answers the same query in the same order).
    pub fn query(&self, q: &OfferQuery, now: u64) -> Vec<&Signed<Offer>> {
        let index = match &q.pool {
            Some(p) => match self.by_pool.get(p) {
                Some(set) => set,
                None => return Vec::new(),
            },
            None => &self.by_price,
        };
        let upper = match q.demand.max_price_sats_per_hour {
            Some(max) => Bound::Excluded((max.saturating_add(1), OfferKey::MIN)),
            None => Bound::Unbounded,
        };
        let limit = if q.limit == 0 { usize::MAX } else { q.limit };
        index
            .range((Bound::Unbounded, upper))
            .filter_map(|(_, k)| self.entries.get(k))
            .map(|e| &e.offer)
            .filter(|o| o.body().expires_at > now && q.demand.matches(o.body()))
            .take(limit)
            .collect()
    }

    /// A canonical summary of the book's state (live offers by id and tombstones), for comparing two books.
    pub fn fingerprint(&self) -> Vec<(OfferKey, [u8; 32])> {
        let mut v: Vec<_> = self.entries.iter().map(|(k, e)| (*k, e.id.0)).collect();
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
}
