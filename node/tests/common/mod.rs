//! The node tests use the testnet crate's process harness (real `xov` daemons, CLI calls, timed waits).
#![allow(unused_imports)]

pub use xov_testnet::node::*;

pub mod adversary;

/// A valid offer body by `key` in `pool` on regtest (2 vCPUs, debian-12, 500 sat/h), sequence `seq`, valid from
/// `created` to `expires`: sign it, or sign it with another key to forge it.
pub fn signed_offer(
    key: &xov_protocol::Keypair,
    seq: u64,
    created: u64,
    expires: u64,
    pool: xov_protocol::PoolId,
) -> xov_protocol::Offer {
    use xov_protocol::*;
    Offer {
        provider: key.node_id(),
        pool,
        offer_id: 1,
        sequence: seq,
        created_at: created,
        expires_at: expires,
        instance: InstanceType {
            vcpus: 2,
            ram_mib: 2048,
            disk_gib: 20,
            gpu: None,
            arch: Arch::X86_64,
        },
        images: vec!["debian-12".into()],
        price_sats_per_hour: 500,
        min_lease_secs: 3600,
        max_lease_secs: 86_400,
        location: Location {
            country: "DE".into(),
            region: String::new(),
        },
        capacity: 1,
        bond: None,
        chain: Chain::REGTEST,
        extra_ports: vec![],
    }
}
