//! Offer ingest and matching, measured next to their physical baselines in the same run:
//! ingest (decode + validate + index) against raw ed25519 verification, and book queries against a naive
//! linear scan. Also: heap bytes per offer held in the book. Query latency is reported interleaved with the
//! naive scan and, more stably, over 1,000 runs per query with the caches evicted before each (`matching-cold`).
//!
//! `cargo bench -p xov-protocol --bench market` (set XOV_BENCH_MAX_BOOK=100000 to skip the 1M book).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ed25519_dalek::{Signer, SigningKey, Verifier};
use xov_protocol::validate::{validate_offer, validate_offer_unsigned};
use xov_protocol::*;

/// Counts live heap bytes, to measure what the book holds per offer.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}
#[global_allocator]
static ALLOC: Counting = Counting;

const NOW: u64 = 1_800_000_000;
const IMAGES: [&str; 6] = [
    "debian-12",
    "ubuntu-24.04",
    "rocky-9",
    "alpine-3.20",
    "nixos-24.05",
    "windows-2022",
];
const COUNTRIES: [&str; 8] = ["DE", "NL", "FR", "US", "CA", "JP", "BR", "ZA"];

/// A deterministic pseudo-random offer (xorshift), signed by one of 256 providers.
fn offer(i: u64, keys: &[Keypair], pool: PoolId) -> Signed<Offer> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let k = &keys[(next() % keys.len() as u64) as usize];
    let gpu = (next() % 10 == 0).then(|| Gpu {
        model: ["A100", "H100", "L4"][(next() % 3) as usize].into(),
        count: 1 + (next() % 4) as u16,
    });
    let body = Offer {
        provider: k.node_id(),
        pool,
        offer_id: i,
        sequence: 1,
        created_at: NOW - 10,
        expires_at: NOW + 3600,
        instance: InstanceType {
            vcpus: 1 << (next() % 7),
            ram_mib: 512 << (next() % 9),
            disk_gib: 10 + (next() % 500) as u32,
            gpu,
            arch: if next() % 5 == 0 {
                Arch::Aarch64
            } else {
                Arch::X86_64
            },
        },
        images: (0..1 + next() % 3)
            .map(|_| IMAGES[(next() % 6) as usize].to_string())
            .collect(),
        price_sats_per_hour: 50 + next() % 20_000,
        min_lease_secs: 3600,
        max_lease_secs: 30 * 24 * 3600,
        location: Location {
            country: COUNTRIES[(next() % 8) as usize].into(),
            region: "r1".into(),
        },
        capacity: 1 + (next() % 8) as u32,
        bond: None,
        chain: Chain::REGTEST,
        extra_ports: vec![],
    };
    Signed::sign(body, k)
}

fn keys() -> Vec<Keypair> {
    (0..256u32)
        .map(|i| {
            let mut s = [0u8; 32];
            s[..4].copy_from_slice(&i.to_be_bytes());
            s[4] = 7;
            Keypair::from_secret_bytes(&s)
        })
        .collect()
}

fn ingest(c: &mut Criterion) {
    let keys = keys();
    let pool = public_charter(Chain::REGTEST).body().pool_id();
    let offers: Vec<Vec<u8>> = (0..2000)
        .map(|i| offer(i, &keys, pool).to_bytes())
        .collect();
    // Baseline: raw ed25519 verification of messages the size of a signed offer body.
    let sk = SigningKey::from_bytes(&[9; 32]);
    let vk = sk.verifying_key();
    let msgs: Vec<Vec<u8>> = offers.iter().map(|o| o[6..o.len() - 64].to_vec()).collect();
    let sigs: Vec<ed25519_dalek::Signature> = msgs.iter().map(|m| sk.sign(m)).collect();

    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(offers.len() as u64));
    g.bench_function("raw_ed25519_verify_strict", |b| {
        b.iter(|| {
            for (m, s) in msgs.iter().zip(&sigs) {
                black_box(vk.verify_strict(m, s).is_ok());
            }
        })
    });
    g.bench_function("raw_ed25519_verify", |b| {
        b.iter(|| {
            for (m, s) in msgs.iter().zip(&sigs) {
                black_box(vk.verify(m, s).is_ok());
            }
        })
    });
    let vks = vec![vk; msgs.len()];
    let msg_refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
    g.bench_function("raw_ed25519_verify_batch", |b| {
        b.iter(|| black_box(ed25519_dalek::verify_batch(&msg_refs, &sigs, &vks).is_ok()))
    });
    g.bench_function("decode_validate_index", |b| {
        b.iter_batched(
            OfferBook::new,
            |mut book| {
                for bytes in &offers {
                    let o = Signed::<Offer>::from_bytes(bytes).unwrap();
                    validate_offer(&o, NOW, None).unwrap();
                    book.insert(o, NOW).unwrap();
                }
                book
            },
            criterion::BatchSize::LargeInput,
        )
    });
    // A sync page's offers (512 a page, as the node pages them), one at a time and checked together: the
    // same decode, checks and index, with the signatures by `verify` one by one or `verify_all` per page.
    g.bench_function("page_ingest_one_by_one", |b| {
        b.iter_batched(
            OfferBook::new,
            |mut book| {
                for page in offers.chunks(PAGE) {
                    for bytes in page {
                        let o = Signed::<Offer>::from_bytes(bytes).unwrap();
                        validate_offer(&o, NOW, None).unwrap();
                        book.insert(o, NOW).unwrap();
                    }
                }
                book
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.bench_function("page_ingest_batched", |b| {
        b.iter_batched(
            OfferBook::new,
            |mut book| {
                for page in offers.chunks(PAGE) {
                    let decoded: Vec<Signed<Offer>> = page
                        .iter()
                        .map(|b| Signed::<Offer>::from_bytes(b).unwrap())
                        .collect();
                    let refs: Vec<&Signed<Offer>> = decoded.iter().collect();
                    let ok = xov_protocol::signed::verify_all(&refs);
                    for (o, ok) in decoded.into_iter().zip(ok) {
                        assert!(ok);
                        validate_offer_unsigned(&o, NOW, None).unwrap();
                        book.insert(o, NOW).unwrap();
                    }
                }
                book
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// Offers per sync page (node/src/network/sync.rs `PAGE`).
const PAGE: usize = 512;

fn queries() -> Vec<OfferQuery> {
    let pool = Some(public_charter(Chain::REGTEST).body().pool_id());
    let q = |d: Demand| OfferQuery {
        pool,
        demand: d,
        limit: 20,
    };
    vec![
        q(Demand {
            min_vcpus: 2,
            min_ram_mib: 4096,
            image: Some("debian-12".into()),
            max_price_sats_per_hour: Some(900),
            ..Demand::default()
        }),
        q(Demand {
            min_vcpus: 8,
            gpu: GpuWanted::None,
            country: Some("DE".into()),
            ..Demand::default()
        }),
        q(Demand {
            gpu: GpuWanted::Some {
                model: Some("H100".into()),
                min_count: 2,
            },
            ..Demand::default()
        }),
        q(Demand {
            arch: Some(Arch::Aarch64),
            image: Some("alpine-3.20".into()),
            max_price_sats_per_hour: Some(5000),
            ..Demand::default()
        }),
    ]
}

fn naive(all: &[Signed<Offer>], q: &OfferQuery, now: u64) -> Vec<u64> {
    let mut v: Vec<&Signed<Offer>> = all
        .iter()
        .filter(|o| o.body().expires_at > now && q.demand.matches(o.body()))
        .collect();
    v.sort_by_key(|o| (o.body().price_sats_per_hour, OfferKey::of(o.body())));
    v.into_iter()
        .take(q.limit)
        .map(|o| o.body().offer_id)
        .collect()
}

/// Writes one byte per cache line of a buffer larger than any last-level cache, so that what a query reads
/// next comes from memory, as in a node whose caches hold other work.
fn evict(trash: &mut [u8]) {
    for i in (0..trash.len()).step_by(64) {
        trash[i] = trash[i].wrapping_add(1);
    }
    black_box(&*trash);
}

fn percentiles(mut d: Vec<Duration>) -> (Duration, Duration) {
    d.sort();
    (d[d.len() / 2], d[d.len() * 99 / 100])
}

fn matching(c: &mut Criterion) {
    let keys = keys();
    let pool = public_charter(Chain::REGTEST).body().pool_id();
    let max: usize = std::env::var("XOV_BENCH_MAX_BOOK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let qs = queries();
    let mut trash = vec![0u8; 64 << 20];
    let mut g = c.benchmark_group("matching");
    g.sample_size(20);
    for n in [10_000usize, 100_000, 1_000_000]
        .into_iter()
        .filter(|n| *n <= max)
    {
        let all: Vec<Signed<Offer>> = (0..n as u64).map(|i| offer(i, &keys, pool)).collect();
        let before = LIVE.load(Ordering::Relaxed);
        let mut book = OfferBook::new();
        for o in &all {
            book.insert(o.clone(), NOW).unwrap();
        }
        let per_offer = (LIVE.load(Ordering::Relaxed) - before) / n;
        let wire: usize = all.iter().map(|o| o.to_bytes().len()).sum::<usize>() / n;
        // Same answers as the naive scan, or the comparison means nothing.
        for q in &qs {
            let got: Vec<u64> = book
                .query(q, NOW)
                .iter()
                .map(|o| o.body().offer_id)
                .collect();
            assert_eq!(got, naive(&all, q, NOW));
        }
        let mut idx = Vec::new();
        let mut scan = Vec::new();
        for _ in 0..(if n >= 1_000_000 { 25 } else { 100 }) {
            for q in &qs {
                let t = Instant::now();
                black_box(book.query(q, NOW));
                idx.push(t.elapsed());
                let t = Instant::now();
                black_box(naive(&all, q, NOW));
                scan.push(t.elapsed());
            }
        }
        // The interleaved p99 above rests on 100 samples at 1M (it is the slowest one), so one preemption on a
        // busy machine decides it. This loop takes 1,000 samples per query, evicting the caches before each, and
        // reports them per query so a slow tail can be traced to the query that causes it.
        let mut cold = Vec::new();
        for (i, q) in qs.iter().enumerate() {
            let mut d = Vec::new();
            for _ in 0..1000 {
                evict(&mut trash);
                let t = Instant::now();
                black_box(book.query(q, NOW));
                d.push(t.elapsed());
            }
            cold.extend_from_slice(&d);
            let (p50, p99) = percentiles(d);
            println!("BENCH matching-cold n={n} query={i} index_p50={p50:?} index_p99={p99:?}");
        }
        let (c50, c99) = percentiles(cold);
        println!("BENCH matching-cold n={n} all index_p50={c50:?} index_p99={c99:?}");
        let (i50, i99) = percentiles(idx);
        let (s50, s99) = percentiles(scan);
        println!(
            "BENCH matching n={n} index_p50={i50:?} index_p99={i99:?} naive_p50={s50:?} naive_p99={s99:?} book_bytes_per_offer={per_offer} wire_bytes_per_offer={wire}"
        );
        g.bench_with_input(BenchmarkId::new("index", n), &n, |b, _| {
            b.iter(|| {
                for q in &qs {
                    black_box(book.query(q, NOW));
                }
            })
        });
        if n <= 100_000 {
            g.bench_with_input(BenchmarkId::new("naive_scan", n), &n, |b, _| {
                b.iter(|| {
                    for q in &qs {
                        black_box(naive(&all, q, NOW));
                    }
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, ingest, matching);
criterion_main!(benches);
