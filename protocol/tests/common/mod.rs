//! Shared builders and proptest strategies for the protocol tests.
#![allow(dead_code)]

use proptest::prelude::*;
use xov_protocol::*;

pub const NOW: u64 = 1_800_000_000;

pub fn key(n: u8) -> Keypair {
    Keypair::from_secret_bytes(&[n; 32])
}

pub fn pool() -> PoolId {
    charter(&key(200)).pool_id()
}

pub fn charter(founder: &Keypair) -> PoolCharter {
    PoolCharter {
        name: "public".into(),
        founder: founder.node_id(),
        created_at: NOW - 1000,
        rules: PoolRules::default(),
        chain: Chain::REGTEST,
    }
}

/// A valid offer from `provider`, live at `NOW`.
pub fn offer(provider: &Keypair, offer_id: u64, sequence: u64, price: u64) -> Offer {
    Offer {
        provider: provider.node_id(),
        pool: pool(),
        offer_id,
        sequence,
        created_at: NOW - 10,
        expires_at: NOW + 3600,
        instance: InstanceType {
            vcpus: 2,
            ram_mib: 4096,
            disk_gib: 40,
            gpu: None,
            arch: Arch::X86_64,
        },
        images: vec!["debian-12".into()],
        price_sats_per_hour: price,
        min_lease_secs: 3600,
        max_lease_secs: 30 * 24 * 3600,
        location: Location {
            country: "DE".into(),
            region: "Bavaria".into(),
        },
        capacity: 4,
        bond: None,
        chain: Chain::REGTEST,
        extra_ports: vec![],
    }
}

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9._-]{1,20}"
}

prop_compose! {
    pub fn arb_instance()(
        vcpus in 1u32..512, ram_mib in 1u32..2_000_000, disk_gib in 1u32..100_000,
        gpu in proptest::option::of((label(), 1u16..16).prop_map(|(model, count)| Gpu { model, count })),
        arch in prop_oneof![Just(Arch::X86_64), Just(Arch::Aarch64), Just(Arch::Riscv64)],
    ) -> InstanceType {
        InstanceType { vcpus, ram_mib, disk_gib, gpu, arch }
    }
}

prop_compose! {
    /// Any offer by one of four providers (keys 1..=4), signed by its provider.
    pub fn arb_signed_offer()(
        provider in 1u8..=4, offer_id in 0u64..4, sequence in 0u64..6,
        created in 0u64..100, ttl in 60u64..7200,
        instance in arb_instance(),
        images in proptest::collection::vec(label(), 1..4),
        price in 1u64..100_000, min_lease in 1u32..10_000, extra in 0u32..100_000,
        country in "[A-Z]{2}", region in "[A-Za-z ]{0,20}", capacity in 1u32..100,
        bond in proptest::option::of((any::<[u8; 32]>(), any::<u32>()).prop_map(|(txid, vout)| BondRef { txid, vout })),
        extra_ports in proptest::collection::btree_set(1u16.., 0..=15),
    ) -> Signed<Offer> {
        let k = key(provider);
        let body = Offer {
            provider: k.node_id(), pool: pool(), offer_id, sequence,
            created_at: NOW - 200 + created, expires_at: NOW - 200 + created + ttl,
            instance, images, price_sats_per_hour: price,
            min_lease_secs: min_lease, max_lease_secs: min_lease + extra,
            location: Location { country, region }, capacity, bond, chain: Chain::REGTEST,
            extra_ports: extra_ports.into_iter().collect(),
        };
        Signed::sign(body, &k)
    }
}

prop_compose! {
    pub fn arb_signed_withdrawal()(provider in 1u8..=4, offer_id in 0u64..4, sequence in 0u64..6) -> Signed<OfferWithdrawal> {
        let k = key(provider);
        Signed::sign(OfferWithdrawal {
            provider: k.node_id(), pool: pool(), offer_id, sequence,
            created_at: NOW - 5, expires_at: NOW + 3600,
        }, &k)
    }
}

prop_compose! {
    pub fn arb_signed_bid()(
        buyer in 1u8..=4, bid_id in any::<u64>(), sequence in any::<u64>(),
        min_vcpus in 0u32..64, image in proptest::option::of(label()),
        max_price in 1u64..1_000_000, hours in 1u32..1000, count in 1u32..10,
        gpu in prop_oneof![
            Just(GpuWanted::DontCare), Just(GpuWanted::None),
            (proptest::option::of(label()), 1u16..8).prop_map(|(model, min_count)| GpuWanted::Some { model, min_count }),
        ],
    ) -> Signed<Bid> {
        let k = key(buyer);
        Signed::sign(Bid {
            buyer: k.node_id(), pool: pool(), bid_id, sequence,
            created_at: NOW, expires_at: NOW + 600,
            demand: Demand { min_vcpus, image, gpu, max_price_sats_per_hour: Some(max_price), ..Demand::default() },
            hours, count,
        }, &k)
    }
}

prop_compose! {
    pub fn arb_signed_charter()(
        founder in 1u8..=4, name in "[a-z0-9-]{1,30}", step in 1u64..1000,
        min_ttl in 1u32..600, extra in 0u32..86_400, max_offers in 1u32..10_000,
        allow in proptest::collection::vec(1u8..=8, 0..4),
    ) -> Signed<PoolCharter> {
        let k = key(founder);
        let publish = if allow.is_empty() {
            PublishPolicy::Anyone
        } else {
            PublishPolicy::AllowList(allow.into_iter().map(|n| key(n).node_id()).collect())
        };
        Signed::sign(PoolCharter {
            name, founder: k.node_id(), created_at: NOW,
            rules: PoolRules { publish, min_price_step_sats: step, min_ttl_secs: min_ttl,
                max_ttl_secs: min_ttl + extra, max_offers_per_provider: max_offers },
            chain: Chain::REGTEST,
        }, &k)
    }
}

/// A receipt between `provider` and `buyer` for lease `lease`, signed by both, ended at `ended_at`.
pub fn receipt(
    lease: u8,
    provider: &Keypair,
    buyer: &Keypair,
    paid: u64,
    ended_at: u64,
) -> SignedReceipt {
    ProviderReceipt::sign(
        Receipt {
            lease_id: MessageId([lease; 32]),
            pool: pool(),
            provider: provider.node_id(),
            buyer: buyer.node_id(),
            started_at: ended_at.saturating_sub(3600),
            ended_at,
            paid_sats: paid,
            refunded_sats: 0,
        },
        provider,
    )
    .countersign(buyer)
    .expect("the buyer countersigns")
}

/// A structurally valid bond proof by `node` (the binding signature is not a real ECDSA signature).
pub fn bond_proof(node: &Keypair, amount_sats: u64, locktime: u32) -> BondProof {
    BondProof {
        node: node.node_id(),
        txid: [7; 32],
        vout: 1,
        amount_sats,
        locktime,
        bond_pubkey: [2; 33],
        binding_sig: [9; 64],
        created_at: NOW - 10,
        height: 0,
    }
}

pub fn load_report(provider: &Keypair, leases: u32, rate: u64, at: u64) -> Signed<LoadReport> {
    Signed::sign(
        LoadReport {
            provider: provider.node_id(),
            pool: pool(),
            running_leases: leases,
            running_sats_per_hour: rate,
            at,
        },
        provider,
    )
}

prop_compose! {
    /// Any receipt between two of four keys, signed by both, ended within the last 30 days.
    pub fn arb_signed_receipt()(
        lease in any::<[u8; 32]>(), provider in 1u8..=4, other in 1u8..=3,
        duration in 0u64..1_000_000, age in 0u64..(30 * 24 * 3600),
        paid in 1u64..10_000_000, refund_share in 0u64..=100,
    ) -> SignedReceipt {
        let buyer = if other >= provider { other + 1 } else { other };
        let (p, b) = (key(provider), key(buyer));
        let ended_at = NOW - age;
        ProviderReceipt::sign(Receipt {
            lease_id: MessageId(lease), pool: pool(), provider: p.node_id(), buyer: b.node_id(),
            started_at: ended_at - duration, ended_at,
            paid_sats: paid, refunded_sats: paid / 100 * refund_share,
        }, &p).countersign(&b).unwrap()
    }
}

prop_compose! {
    pub fn arb_signed_bond_proof()(
        node in 1u8..=4, txid in any::<[u8; 32]>(), vout in any::<u32>(),
        amount in 1u64..=2_100_000_000_000_000, locktime in 1u32..500_000_000,
        parity in 2u8..=3, x in any::<[u8; 32]>(), sig in any::<[u8; 32]>(), created in 0u64..1000,
    ) -> Signed<BondProof> {
        let k = key(node);
        let mut bond_pubkey = [parity; 33];
        bond_pubkey[1..].copy_from_slice(&x);
        let mut binding_sig = [1u8; 64];
        binding_sig[..32].copy_from_slice(&sig);
        Signed::sign(BondProof {
            node: k.node_id(), txid, vout, amount_sats: amount, locktime, bond_pubkey, binding_sig,
            created_at: NOW - created, height: vout / 2,
        }, &k)
    }
}

prop_compose! {
    pub fn arb_signed_load_report()(
        provider in 1u8..=4, leases in 0u32..1000, extra in 0u64..1_000_000, age in 0u64..1800,
    ) -> Signed<LoadReport> {
        let rate = if leases == 0 { 0 } else { leases as u64 + extra };
        load_report(&key(provider), leases, rate, NOW - age)
    }
}
