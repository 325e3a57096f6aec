//! The offer book's partitioned price index against the definition of a query: a linear scan of every held
//! offer with `Demand::matches`, sorted by price then key. Books mix pools, architectures, GPU models in
//! varied case, few distinct prices (so ties are common) and churn (supersession, removal, expiry), so that
//! slot reuse and partition clean-up are exercised too.

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
        let mut book = OfferBook::new();
        for o in &first { let _ = book.insert(o.clone(), NOW); }
        // Churn: forget some, add more (reusing freed slots), prune some by expiry.
        let held: Vec<OfferKey> = book.iter().map(|o| OfferKey::of(o.body())).collect();
        for i in &forget {
            if !held.is_empty() { book.remove_key(&held[i.index(held.len())]); }
        }
        for o in &second { let _ = book.insert(o.clone(), NOW); }
        book.expire(NOW + expire_after);

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
