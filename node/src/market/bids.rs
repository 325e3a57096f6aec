//! Bids, the buyer's half: when the book holds nothing that matches, `xov order --bid-wait` gossips the demand
//! into the pool and collects the offers providers send back directly. The provider's half (answering) is in
//! the lease engine, next to admission, since both count the same capacity.
//!
//! Invariant: an answer's offers are kept only if they are valid, the answering provider's own, in the bid's
//! pool, of the buyer's chain and meet the bid; the rest of an answer is skipped. An offer of the bid's pool
//! must also pass that pool's charter rules (publisher allow-list, price step, lifetime) exactly as a gossiped
//! offer must (`validate_offer` with the charter): an answer is no way around a pool's allow-list. An
//! answer carrying an offer that breaks them, or for a pool whose charter the buyer does not know, is
//! refused whole.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::Notify;
use xov_protocol::validate::validate_offer;
use xov_protocol::{
    Bid, Chain, DecodeError, NodeId, Offer, PoolCharter, PoolId, Signed, ValidationError,
};

/// Why a provider's answer to a bid was not taken (sent back to it as text).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BidAnswerError {
    #[error("an answer must come from the provider's own node")]
    NoSender,
    #[error("no open bid {0} (it was answered, or it expired)")]
    NoSuchBid(u64),
    #[error("malformed offer: {0}")]
    Malformed(#[from] DecodeError),
    #[error("invalid offer: {0}")]
    Invalid(#[from] ValidationError),
    #[error("an answer may only carry the answering provider's own offers")]
    NotOwnOffer,
    #[error("the bid's pool {0} is not known here, so its rules cannot be checked")]
    UnknownPool(PoolId),
}

/// Most offers kept from one provider's answer: enough to choose from, too few to flood.
const MAX_OFFERS_PER_ANSWER: usize = 8;

/// The buyer's open bids and the answers received so far.
#[derive(Default)]
pub struct BidBoard {
    open: Mutex<HashMap<u64, Open>>,
    answered: Notify,
}

struct Open {
    bid: Bid,
    offers: Vec<Signed<Offer>>,
}

impl BidBoard {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Open>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts collecting answers for a bid about to be gossiped.
    pub fn open(&self, bid: Bid) {
        self.lock().insert(
            bid.bid_id,
            Open {
                bid,
                offers: Vec::new(),
            },
        );
    }

    /// Stops collecting and returns what came in.
    pub fn close(&self, bid_id: u64) -> Vec<Signed<Offer>> {
        self.lock()
            .remove(&bid_id)
            .map(|o| o.offers)
            .unwrap_or_default()
    }

    /// Takes a provider's answer: offers signed by that provider, in the bid's pool, on `chain` (the buyer's),
    /// that meet the bid and the pool's rules (`charter_of` gives the charter of a pool the buyer knows).
    /// Returns how many were kept, or why the answer was refused.
    pub fn answer(
        &self,
        from: Option<NodeId>,
        bid_id: u64,
        offers: &[Vec<u8>],
        chain: Chain,
        charter_of: impl Fn(&PoolId) -> Option<PoolCharter>,
        now: u64,
    ) -> Result<usize, BidAnswerError> {
        let from = from.ok_or(BidAnswerError::NoSender)?;
        let pool = self
            .lock()
            .get(&bid_id)
            .map(|o| o.bid.pool)
            .ok_or(BidAnswerError::NoSuchBid(bid_id))?;
        // Looked up before taking the board's lock, so the caller's lock is never held inside ours.
        let charter = charter_of(&pool).ok_or(BidAnswerError::UnknownPool(pool))?;
        let mut g = self.lock();
        let open = g
            .get_mut(&bid_id)
            .ok_or(BidAnswerError::NoSuchBid(bid_id))?;
        let mut kept = 0;
        for bytes in offers.iter().take(MAX_OFFERS_PER_ANSWER) {
            let offer = Signed::<Offer>::from_bytes(bytes)?;
            validate_offer(&offer, now, None)?;
            let o = offer.body();
            if o.provider != from {
                return Err(BidAnswerError::NotOwnOffer);
            }
            if o.pool != open.bid.pool || o.chain != chain || !open.bid.demand.matches(o) {
                continue;
            }
            // The same rules as a gossiped offer of the pool: its allow-list above all.
            validate_offer(&offer, now, Some(&charter))?;
            if let Some(held) = open
                .offers
                .iter_mut()
                .find(|h| h.body().provider == o.provider && h.body().offer_id == o.offer_id)
            {
                if o.sequence > held.body().sequence {
                    *held = offer;
                }
                continue;
            }
            open.offers.push(offer);
            kept += 1;
        }
        drop(g);
        if kept > 0 {
            self.answered.notify_waiters();
        }
        Ok(kept)
    }

    /// Waits until at least one answer to any of `bid_ids` arrived and then `settle` more (so that answers
    /// arriving together can be compared), or until `timeout`; returns the answers so far.
    pub async fn wait(
        &self,
        bid_ids: &[u64],
        timeout: Duration,
        settle: Duration,
    ) -> Vec<Signed<Offer>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let answers = |g: &HashMap<u64, Open>| -> Vec<Signed<Offer>> {
            bid_ids
                .iter()
                .filter_map(|id| g.get(id))
                .flat_map(|o| o.offers.iter().cloned())
                .collect()
        };
        loop {
            let notified = self.answered.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !answers(&self.lock()).is_empty() {
                let until = (tokio::time::Instant::now() + settle).min(deadline);
                tokio::time::sleep_until(until).await;
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        answers(&self.lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;
    use xov_protocol::{public_charter, Chain, Demand, Keypair, PoolRules, PublishPolicy};

    fn public(pool: &PoolId) -> Option<PoolCharter> {
        let c = public_charter(Chain::REGTEST).body().clone();
        (c.pool_id() == *pool).then_some(c)
    }

    fn offer(key: &Keypair, price: u64, vcpus: u32, now: u64) -> Signed<Offer> {
        crate::test_support::offer(key, vcpus as u64, price, vcpus, now)
    }

    fn bid(buyer: &Keypair, now: u64) -> Bid {
        Bid {
            buyer: buyer.node_id(),
            pool: public_charter(Chain::REGTEST).body().pool_id(),
            bid_id: 7,
            sequence: now,
            created_at: now,
            expires_at: now + 60,
            demand: Demand {
                min_vcpus: 2,
                max_price_sats_per_hour: Some(500),
                ..Default::default()
            },
            hours: 1,
            count: 1,
        }
    }

    #[tokio::test]
    async fn keeps_only_the_answering_providers_offers_that_meet_the_bid() {
        let now = 1_800_000_000;
        let (buyer, provider, other) = (
            Keypair::generate(&mut OsRng),
            Keypair::generate(&mut OsRng),
            Keypair::generate(&mut OsRng),
        );
        let board = BidBoard::default();
        board.open(bid(&buyer, now));
        let fits = offer(&provider, 400, 2, now).to_bytes();
        let too_dear = offer(&provider, 900, 4, now).to_bytes();
        let too_small = offer(&provider, 100, 1, now).to_bytes();
        // The same offer signed for another chain (in the same-named pool there) is not for this buyer.
        let mut signet = offer(&provider, 300, 2, now).into_body();
        signet.chain = Chain::SIGNET;
        signet.pool = public_charter(Chain::SIGNET).body().pool_id();
        let signet = Signed::sign(signet, &provider).to_bytes();
        assert_eq!(
            board.answer(
                Some(provider.node_id()),
                7,
                &[fits, too_dear, too_small, signet],
                Chain::REGTEST,
                public,
                now
            ),
            Ok(1)
        );
        // Somebody else's offer in the answer is a lie about who answers.
        let theirs = offer(&other, 300, 2, now).to_bytes();
        assert_eq!(
            board.answer(
                Some(provider.node_id()),
                7,
                &[theirs],
                Chain::REGTEST,
                public,
                now
            ),
            Err(BidAnswerError::NotOwnOffer)
        );
        // A bid nobody opened.
        assert_eq!(
            board.answer(
                Some(provider.node_id()),
                8,
                &[],
                Chain::REGTEST,
                public,
                now
            ),
            Err(BidAnswerError::NoSuchBid(8))
        );
        let got = board
            .wait(&[7], Duration::from_secs(5), Duration::from_millis(1))
            .await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body().price_sats_per_hour, 400);
        assert_eq!(board.close(7).len(), 1);
        assert!(board.close(7).is_empty());
    }

    /// Issue 15, attack 10: a provider left out of a pool's allow-list cannot get its offers to a buyer by
    /// answering the buyer's bid directly.
    #[test]
    fn an_answer_passes_the_pools_allow_list_like_a_gossiped_offer() {
        let now = 1_800_000_000;
        let (buyer, founder, listed, outsider) = (
            Keypair::generate(&mut OsRng),
            Keypair::generate(&mut OsRng),
            Keypair::generate(&mut OsRng),
            Keypair::generate(&mut OsRng),
        );
        let closed = PoolCharter {
            name: "closed".into(),
            founder: founder.node_id(),
            created_at: now - 100,
            rules: PoolRules {
                publish: PublishPolicy::AllowList(vec![listed.node_id()]),
                ..PoolRules::default()
            },
            chain: Chain::REGTEST,
        };
        let pool = closed.pool_id();
        let charter_of = |p: &PoolId| (*p == pool).then(|| closed.clone());
        let in_pool = |k: &Keypair| {
            let mut o = offer(k, 400, 2, now).into_body();
            o.pool = pool;
            Signed::sign(o, k).to_bytes()
        };
        struct Case {
            name: &'static str,
            provider: &'static str,
            known: bool,
            want: Result<usize, BidAnswerError>,
        }
        let cases = [
            Case {
                name: "a listed publisher's offer is kept",
                provider: "listed",
                known: true,
                want: Ok(1),
            },
            Case {
                name: "an unlisted provider's offer is refused as a gossiped one would be",
                provider: "outsider",
                known: true,
                want: Err(BidAnswerError::Invalid(ValidationError::NotAllowedInPool(
                    outsider.node_id(),
                ))),
            },
            Case {
                name: "without the charter the rules cannot be checked: refused",
                provider: "listed",
                known: false,
                want: Err(BidAnswerError::UnknownPool(pool)),
            },
        ];
        for c in cases {
            let board = BidBoard::default();
            let mut b = bid(&buyer, now);
            b.pool = pool;
            board.open(b);
            let provider = if c.provider == "listed" {
                &listed
            } else {
                &outsider
            };
            let got = if c.known {
                board.answer(
                    Some(provider.node_id()),
                    7,
                    &[in_pool(provider)],
                    Chain::REGTEST,
                    charter_of,
                    now,
                )
            } else {
                board.answer(
                    Some(provider.node_id()),
                    7,
                    &[in_pool(provider)],
                    Chain::REGTEST,
                    |_| None,
                    now,
                )
            };
            assert_eq!(got, c.want, "{}", c.name);
            let kept = board.close(7);
            assert_eq!(kept.len(), usize::from(c.want.is_ok()), "{}", c.name);
            assert!(kept.iter().all(|o| o.body().provider == listed.node_id()));
        }
    }

    #[tokio::test]
    async fn waiting_ends_at_the_timeout_when_nobody_answers() {
        let board = BidBoard::default();
        board.open(bid(&Keypair::generate(&mut OsRng), 1_800_000_000));
        let got = board
            .wait(&[7], Duration::from_millis(50), Duration::from_millis(1))
            .await;
        assert!(got.is_empty());
    }
}
