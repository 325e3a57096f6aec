//! The order in which a buyer asks providers: price first (what the buyer set a limit on), then trust (the
//! provider's score from receipts and bonds), then latency (the ping round trip, a hint of distance and load),
//! and the provider id last so the order is stable.

use std::cmp::Reverse;
use std::time::Duration;

use xov_protocol::{NodeId, Offer, Signed};

/// Sorts candidate offers best first. `trust` scores a provider (higher is better), `latency` is the last
/// measured round trip (unknown sorts after any known one).
pub fn rank(
    offers: &mut [Signed<Offer>],
    trust: impl Fn(&NodeId) -> u64,
    latency: impl Fn(&NodeId) -> Option<Duration>,
) {
    offers.sort_by_cached_key(|o| {
        let b = o.body();
        (
            b.price_sats_per_hour,
            Reverse(trust(&b.provider)),
            latency(&b.provider).unwrap_or(Duration::MAX),
            b.provider,
            b.offer_id,
        )
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;
    use xov_protocol::Keypair;

    fn offer(key: &Keypair, price: u64) -> Signed<Offer> {
        crate::test_support::offer(key, 1, price, 1, 1)
    }

    #[test]
    fn price_then_trust_then_latency() {
        let k: Vec<Keypair> = (0..4).map(|_| Keypair::generate(&mut OsRng)).collect();
        let id = |i: usize| k[i].node_id();
        // 0: dearest. 1, 2, 3 share a price; 3 is trusted; 1 is nearer than 2.
        let mut offers = vec![
            offer(&k[0], 200),
            offer(&k[1], 100),
            offer(&k[2], 100),
            offer(&k[3], 100),
        ];
        let trusted = id(3);
        let near = id(1);
        let far = id(2);
        rank(
            &mut offers,
            |n| if *n == trusted { 5 } else { 0 },
            |n| {
                if *n == near {
                    Some(Duration::from_millis(3))
                } else if *n == far {
                    Some(Duration::from_millis(80))
                } else {
                    None
                }
            },
        );
        let order: Vec<NodeId> = offers.iter().map(|o| o.body().provider).collect();
        assert_eq!(order, vec![id(3), id(1), id(2), id(0)]);
    }

    #[test]
    fn unknown_latency_goes_after_known() {
        let k: Vec<Keypair> = (0..2).map(|_| Keypair::generate(&mut OsRng)).collect();
        let mut offers = vec![offer(&k[0], 100), offer(&k[1], 100)];
        let measured = k[1].node_id();
        rank(
            &mut offers,
            |_| 0,
            |n| (*n == measured).then_some(Duration::from_secs(1)),
        );
        assert_eq!(offers[0].body().provider, measured);
    }
}
