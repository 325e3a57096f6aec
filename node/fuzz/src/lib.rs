//! Helpers shared by the node's fuzz targets in `fuzz_targets/` and the seed writer (`examples/seeds.rs`).
//!
//! The wire types of the node's request-response channels are decoded exactly as libp2p's
//! `request_response::cbor` codec decodes them: `cbor4ii::serde::from_slice` (the same crate and version,
//! pinned in Cargo.toml) into the node's own serde types.

use serde::de::DeserializeOwned;
use serde::Serialize;
use xov_node::sim::{key_from, sim_terms, LeaseSpec, World, T0};
use xov_protocol::{
    Arch, Bid, Chain, Demand, InstanceType, Keypair, Location, Offer, Order, PoolId, Signed,
};

/// The fixed clock the targets validate against: the simulator's start, the protocol fuzz targets' `NOW`.
pub const NOW: u64 = T0;
/// The chain the fixture's nodes trade on (the simulator's).
pub const CHAIN: Chain = Chain::REGTEST;

/// Decodes `data` the way libp2p's cbor codec decodes a request or response it has read.
pub fn cbor_decode<T: DeserializeOwned>(data: &[u8]) -> Option<T> {
    cbor4ii::serde::from_slice(data).ok()
}

/// Encodes `v` the way libp2p's cbor codec writes a request or response.
pub fn cbor_encode<T: Serialize>(v: &T) -> Vec<u8> {
    cbor4ii::serde::to_vec(Vec::new(), v).expect("encoding into memory cannot fail")
}

/// What the codec promises for anything it accepted: the value encodes, the encoding decodes, and encoding
/// that again gives the same bytes (what a node forwards or answers is what it read).
pub fn check_cbor_roundtrip<T: Serialize + DeserializeOwned>(v: &T) {
    let bytes = cbor_encode(v);
    let again: T = cbor_decode(&bytes).expect("the codec refused its own encoding");
    assert_eq!(cbor_encode(&again), bytes, "re-encoding changed the bytes");
}

/// The simulator's provider key (`xov_node::sim::key_from(1, 7)`).
pub fn provider_key() -> Keypair {
    key_from(1, 7)
}

/// The simulator's buyer key (`xov_node::sim::key_from(2, 7)`).
pub fn buyer_key() -> Keypair {
    key_from(2, 7)
}

/// The public pool of the fixture's chain (the simulator's pool).
pub fn pool() -> PoolId {
    xov_protocol::public_charter(CHAIN).body().pool_id()
}

/// A lease both simulated nodes hold (provider and buyer records, as admission and ordering build them), in a
/// fresh simulator world at `NOW`: the target for notices. Deterministic: the same lease id every time.
pub fn world_with_lease() -> (World, String) {
    let mut w = World::new(1, sim_terms());
    let id = w.open_lease(LeaseSpec::default());
    (w, id)
}

/// The signed order of [`world_with_lease`]'s lease (its id is the lease id).
pub fn lease_order(w: &World, id: &str) -> Signed<Order> {
    let hex = &w.prov(id).order_hex;
    Signed::<Order>::from_bytes(&hex_decode(hex)).expect("the simulator's order decodes")
}

/// The provider's offer the fixture's order names (offer 1, sequence 1, in the pool, on the chain), signed by
/// the provider.
pub fn provider_offer() -> Signed<Offer> {
    let provider = provider_key();
    Signed::sign(
        Offer {
            provider: provider.node_id(),
            pool: pool(),
            offer_id: 1,
            sequence: 1,
            created_at: NOW - 10,
            expires_at: NOW + 3600,
            instance: InstanceType {
                vcpus: 2,
                ram_mib: 2048,
                disk_gib: 20,
                gpu: None,
                arch: Arch::X86_64,
            },
            images: vec!["debian-12".into()],
            price_sats_per_hour: 3600,
            min_lease_secs: 60,
            max_lease_secs: 24 * 3600,
            location: Location {
                country: "DE".into(),
                region: "Bavaria".into(),
            },
            capacity: 4,
            bond: None,
            chain: CHAIN,
            extra_ports: vec![80, 443],
        },
        &provider,
    )
}

/// An open bid of the buyer's in the pool that the fixture's offer meets.
pub fn buyer_bid(bid_id: u64) -> Bid {
    Bid {
        buyer: buyer_key().node_id(),
        pool: pool(),
        bid_id,
        sequence: 1,
        created_at: NOW - 5,
        expires_at: NOW + 600,
        demand: Demand {
            max_price_sats_per_hour: Some(10_000),
            ..Demand::default()
        },
        hours: 1,
        count: 1,
    }
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}
