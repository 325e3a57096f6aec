//! The offer book's partitioned price index against the definition of a query: a linear scan of every held
//! offer with `Demand::matches`, sorted by price then key. Books mix pools, architectures, GPU models in
//! varied case, few distinct prices (so ties are common) and churn (supersession, removal, expiry), so that
//! slot reuse and partition clean-up are exercised too. The same books check the key-ordered pages of book
//! sync and the pool digests of anti-entropy against their definitions.

mod common;

use common::*;
use proptest::prelude::*;
use xov_protocol::*;

const MODELS: [&str; 4] = ["A100", "a100", "H100", "L4"];
const IMAGES: [&str; 3] = ["debian-12", "ubuntu-24.04", "alpine-3.20"];
const PORTS: [u16; 3] = [80, 443, 8080];
const COUNTRIES: [&str; 3] = ["DE", "de", "FR"];
const REGIONS: [&str; 3] = ["r1", "R1", "r2"];
const ARCHS: [Arch; 3] = [Arch::X86_64, Arch::Aarch64, Arch::Riscv64];

fn other_pool() -> PoolId {
    PoolId([7; 32])
}

fn pick_pool(i: u8) -> Option<PoolId> {
    match i {
        0 => None,
        1 => Some(pool()),
        2 => Some(other_pool()),
        _ => Some(PoolId([9; 32])),
    }
}

prop_compose! {
    fn arb_offer()(
        provider in 1u8..=6, offer_id in 0u64..6, sequence in 0u64..4, in_other_pool in any::<bool>(),
        ttl in 1u64..400, vcpus in 1u32..16, ram_mib in 1u32..8, disk_gib in 1u32..8,
        gpu in proptest::option::of((0usize..4, 1u16..4)), arch in 0usize..3,
        images in proptest::collection::vec(0usize..3, 1..3),
        price in 1u64..12, country in 0usize..3, region in 0usize..3,
        ports in proptest::collection::btree_set(0usize..PORTS.len(), 0..3),
    ) -> Signed<Offer> {
        let k = key(provider);
        let mut body = offer(&k, offer_id, sequence, price);
        body.pool = if in_other_pool { other_pool() } else { pool() };
        body.expires_at = NOW + ttl;
        body.instance = InstanceType {
            vcpus, ram_mib, disk_gib, arch: ARCHS[arch],
            gpu: gpu.map(|(m, count)| Gpu { model: MODELS[m].into(), count }),
        };
        body.images = images.into_iter().map(|i| IMAGES[i].to_string()).collect();
        body.location = Location { country: COUNTRIES[country].into(), region: REGIONS[region].into() };
        body.extra_ports = ports.into_iter().map(|p| PORTS[p]).collect();
        Signed::sign(body, &k)
    }
}

prop_compose! {
    fn arb_demand()(
        min_vcpus in 0u32..12, min_ram_mib in 0u32..6, min_disk_gib in 0u32..6,
        gpu in prop_oneof![
            Just(GpuWanted::DontCare), Just(GpuWanted::None),
            (proptest::option::of(0usize..5), 0u16..4).prop_map(|(m, min_count)| GpuWanted::Some {
                // 4 stands for a model no offer has.
                model: m.map(|m| MODELS.get(m).copied().unwrap_or("T4").to_string()), min_count,
            }),
        ],
        image in proptest::option::of(0usize..3), arch in proptest::option::of(0usize..3),
        country in proptest::option::of(0usize..3), region in proptest::option::of(0usize..3),
        max_price in proptest::option::of(0u64..14),
        ports in proptest::collection::btree_set(0usize..PORTS.len(), 0..2),
    ) -> Demand {
        Demand {
            min_vcpus, min_ram_mib, min_disk_gib, gpu,
            image: image.map(|i| IMAGES[i].to_string()),
            arch: arch.map(|a| ARCHS[a]),
            country: country.map(|c| COUNTRIES[c].to_string()),
            region: region.map(|r| REGIONS[r].to_string()),
            max_price_sats_per_hour: max_price,
            ports: ports.into_iter().map(|p| PORTS[p]).collect(),
        }
    }
}

/// The definition: live matching offers, cheapest first, ties by key, at most `limit` (0: all).
fn linear_scan(book: &OfferBook, q: &OfferQuery, now: u64) -> Vec<MessageId> {
    let mut v: Vec<_> = book
        .iter()
        .filter(|o| q.pool.is_none_or(|p| o.body().pool == p))
        .filter(|o| o.body().expires_at > now && q.demand.matches(o.body()))
        .map(|o| {
            (
                (o.body().price_sats_per_hour, OfferKey::of(o.body())),
                o.id(),
            )
        })
        .collect();
    v.sort();
    let mut ids: Vec<_> = v.into_iter().map(|(_, id)| id).collect();
    if q.limit > 0 {
        ids.truncate(q.limit);
    }
    ids
}

/// A book after churn: `first` inserted, some of them forgotten, `second` inserted (reusing freed slots),
/// then pruned by expiry.
fn churned(
    first: &[Signed<Offer>],
    forget: &[prop::sample::Index],
    second: &[Signed<Offer>],
    expire_after: u64,
) -> OfferBook {
    let mut book = OfferBook::new();
    for o in first {
        let _ = book.insert(o.clone(), NOW);
    }
    let held: Vec<OfferKey> = book.iter().map(|o| OfferKey::of(o.body())).collect();
    for i in forget {
        if !held.is_empty() {
            book.remove_key(&held[i.index(held.len())]);
        }
    }
    for o in second {
        let _ = book.insert(o.clone(), NOW);
    }
    book.expire(NOW + expire_after);
    book
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn partitioned_query_equals_linear_scan(
        first in proptest::collection::vec(arb_offer(), 0..40),
        forget in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        second in proptest::collection::vec(arb_offer(), 0..20),
        expire_after in 0u64..300,
        queries in proptest::collection::vec((0u8..4, arb_demand(), 0usize..6, 0u64..400), 1..8),
    ) {
        let book = churned(&first, &forget, &second, expire_after);

        for (pool_pick, demand, limit, at) in queries {
            let q = OfferQuery { pool: pick_pool(pool_pick), demand, limit };
            let now = NOW + at;
            let got: Vec<MessageId> = book.query(&q, now).into_iter().map(|o| o.id()).collect();
            prop_assert_eq!(got, linear_scan(&book, &q, now), "query {:?} at +{}", q, at);
        }
        // Whole pools read cheapest first too, and the per-provider counts agree with the offers held.
        for p in [pool(), other_pool()] {
            let got: Vec<MessageId> = book.iter_pool(&p).map(|o| o.id()).collect();
            let all = OfferQuery { pool: Some(p), demand: Demand::default(), limit: 0 };
            prop_assert_eq!(got, linear_scan(&book, &all, 0));
            for n in 1u8..=6 {
                let provider = key(n).node_id();
                let held = book.iter().filter(|o| o.body().pool == p && o.body().provider == provider).count();
                prop_assert_eq!(book.count_for(&provider, &p), held);
            }
        }
    }
}

/// A pool's digest by definition: per bucket, the count of its offers and the wrapping sum of their ids'
/// first 8 bytes.
fn digest_by_scan(book: &OfferBook, pool: &PoolId) -> Vec<BucketSum> {
    let mut d = vec![BucketSum::default(); DIGEST_BUCKETS];
    for o in book.iter().filter(|o| o.body().pool == *pool) {
        let b = &mut d[usize::from(bucket_of(&OfferKey::of(o.body())))];
        b.count += 1;
        b.sum = b
            .sum
            .wrapping_add(u64::from_le_bytes(o.id().0[..8].try_into().unwrap()));
    }
    d
}

/// Keys of a pool's offers in key order, optionally only those of one bucket.
fn keys_by_scan(book: &OfferBook, pool: &PoolId, bucket: Option<u16>) -> Vec<OfferKey> {
    let mut v: Vec<OfferKey> = book
        .iter()
        .filter(|o| o.body().pool == *pool)
        .map(|o| OfferKey::of(o.body()))
        .filter(|k| bucket.is_none_or(|b| bucket_of(k) == b))
        .collect();
    v.sort();
    v
}

/// Follows `page` from the start until it says there is no more.
fn all_pages(
    limit: usize,
    mut page: impl FnMut(Option<OfferKey>) -> (Vec<OfferKey>, bool),
) -> Vec<OfferKey> {
    let (mut out, mut after) = (Vec::new(), None);
    loop {
        let (keys, more) = page(after);
        assert!(keys.len() <= limit, "a page over its limit");
        out.extend(&keys);
        if !more {
            return out;
        }
        after = Some(*keys.last().expect("a page with more to come is not empty"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn digests_and_pages_follow_the_book(
        first in proptest::collection::vec(arb_offer(), 0..40),
        forget in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        second in proptest::collection::vec(arb_offer(), 0..20),
        expire_after in 0u64..300,
        limit in 1usize..5,
    ) {
        let book = churned(&first, &forget, &second, expire_after);

        // The same offers put in another order make the same digest.
        let mut again = OfferBook::new();
        let mut now_held: Vec<Signed<Offer>> = book.iter().cloned().collect();
        now_held.reverse();
        for o in now_held { again.insert(o, NOW).unwrap(); }

        for p in [pool(), other_pool(), PoolId([9; 32])] {
            let d = book.digest(&p);
            prop_assert_eq!(&d, &digest_by_scan(&book, &p), "digest kept up through churn");
            prop_assert_eq!(&d, &again.digest(&p), "digest independent of arrival order");
            prop_assert!(differing_buckets(&d, &again.digest(&p)).is_empty());

            let paged = all_pages(limit, |after| {
                let (offers, more) = book.page(&p, after, limit);
                (offers.iter().map(|o| OfferKey::of(o.body())).collect(), more)
            });
            prop_assert_eq!(paged, keys_by_scan(&book, &p, None), "pages walk the pool in key order");

            let mut buckets: Vec<u16> = keys_by_scan(&book, &p, None).iter().map(bucket_of).collect();
            buckets.dedup();
            // An empty bucket next to a used one, and the edges of the key space, give empty pages.
            buckets.extend([0, 1023]);
            buckets.extend(buckets.clone().iter().map(|b| b.saturating_add(1).min(1023)));
            for b in buckets {
                let paged = all_pages(limit, |after| {
                    let (offers, more) = book.bucket_page(&p, b, after, limit);
                    (offers.iter().map(|o| OfferKey::of(o.body())).collect(), more)
                });
                prop_assert_eq!(paged, keys_by_scan(&book, &p, Some(b)), "bucket {} walked in key order", b);
            }
        }
    }
}

/// A book that lacks one offer of another's differs from it in that offer's bucket and nowhere else; so does a
/// book that holds another version of it.
#[test]
fn a_missing_or_other_version_offer_shows_in_its_bucket_alone() {
    let mut full = OfferBook::new();
    let offers: Vec<Signed<Offer>> = (1u8..=40)
        .map(|n| {
            let k = key(n);
            Signed::sign(offer(&k, u64::from(n), 1, 5), &k)
        })
        .collect();
    for o in &offers {
        full.insert(o.clone(), NOW).unwrap();
    }
    let lost = &offers[17];
    let lost_bucket = bucket_of(&OfferKey::of(lost.body()));

    let mut missing = full.clone();
    missing.remove_key(&OfferKey::of(lost.body()));
    assert_eq!(
        differing_buckets(&full.digest(&pool()), &missing.digest(&pool())),
        vec![lost_bucket]
    );

    let mut newer = full.clone();
    let k = key(18);
    let mut body = lost.body().clone();
    body.sequence += 1;
    newer.insert(Signed::sign(body, &k), NOW).unwrap();
    assert_eq!(
        differing_buckets(&full.digest(&pool()), &newer.digest(&pool())),
        vec![lost_bucket]
    );
    // What the other side pulls for that bucket brings the lost offer back, and the digests agree again.
    let (page, more) = full.bucket_page(&pool(), lost_bucket, None, 512);
    assert!(!more);
    for o in page {
        let _ = missing.insert(o.clone(), NOW);
    }
    assert!(differing_buckets(&full.digest(&pool()), &missing.digest(&pool())).is_empty());
}
