//! Signed messages for the node's unit tests.

use xov_protocol::{public_charter, Arch, Chain, InstanceType, Keypair, Location, Offer, Signed};

/// A valid offer in the regtest public pool: `vcpus` vCPUs, 1 GiB, debian-12, for an hour from `now`.
pub fn offer(key: &Keypair, offer_id: u64, price: u64, vcpus: u32, now: u64) -> Signed<Offer> {
    Signed::sign(
        Offer {
            provider: key.node_id(),
            pool: public_charter(Chain::REGTEST).body().pool_id(),
            offer_id,
            sequence: now,
            created_at: now,
            expires_at: now + 3600,
            instance: InstanceType {
                vcpus,
                ram_mib: 1024,
                disk_gib: 10,
                gpu: None,
                arch: Arch::X86_64,
            },
            images: vec!["debian-12".into()],
            price_sats_per_hour: price,
            min_lease_secs: 3600,
            max_lease_secs: 7200,
            location: Location {
                country: "DE".into(),
                region: String::new(),
            },
            capacity: 1,
            bond: None,
            chain: Chain::REGTEST,
            extra_ports: vec![],
        },
        key,
    )
}
