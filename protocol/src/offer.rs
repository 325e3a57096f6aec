//! A provider's signed promise: "this many machines of this shape, with these images, at this price, until then".
//!
//! Invariant: an offer names the bitcoin network it is paid on ([`Chain`]); it must be its pool's chain
//! (`validate_offer` refuses one that contradicts its pool's charter), and nodes on another chain drop it.

use serde::{Deserialize, Serialize};

use crate::chain::Chain;
use crate::encoding::{Decode, DecodeError, Encode, Reader, Writer};
use crate::identity::NodeId;
use crate::pool::PoolId;

/// Longest free-text field (GPU model, region, image name).
pub const MAX_LABEL: usize = 64;
/// Most OS images one offer may list.
pub const MAX_IMAGES: usize = 32;

/// CPU architecture of the offered machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    X86_64,
    Aarch64,
    Riscv64,
}

impl Arch {
    fn tag(self) -> u8 {
        match self {
            Arch::X86_64 => 1,
            Arch::Aarch64 => 2,
            Arch::Riscv64 => 3,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
            Arch::Riscv64 => "riscv64",
        }
    }
}

impl std::str::FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "x86_64" | "amd64" | "x86-64" => Ok(Arch::X86_64),
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            "riscv64" => Ok(Arch::Riscv64),
            other => Err(format!(
                "unknown architecture '{other}' (expected x86_64, aarch64 or riscv64)"
            )),
        }
    }
}

impl Encode for Arch {
    fn encode(&self, w: &mut Writer) {
        w.u8(self.tag())
    }
}

impl Decode for Arch {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8("arch")? {
            1 => Ok(Arch::X86_64),
            2 => Ok(Arch::Aarch64),
            3 => Ok(Arch::Riscv64),
            tag => Err(DecodeError::InvalidTag { field: "arch", tag }),
        }
    }
}

/// Attached accelerators.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Gpu {
    pub model: String,
    pub count: u16,
}

impl Encode for Gpu {
    fn encode(&self, w: &mut Writer) {
        w.str(&self.model);
        w.u16(self.count);
    }
}

impl Decode for Gpu {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Gpu {
            model: r.str("gpu model", MAX_LABEL)?,
            count: r.u16("gpu count")?,
        })
    }
}

/// The shape of one machine.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InstanceType {
    pub vcpus: u32,
    pub ram_mib: u32,
    pub disk_gib: u32,
    pub gpu: Option<Gpu>,
    pub arch: Arch,
}

impl Encode for InstanceType {
    fn encode(&self, w: &mut Writer) {
        w.u32(self.vcpus);
        w.u32(self.ram_mib);
        w.u32(self.disk_gib);
        w.option(&self.gpu);
        self.arch.encode(w);
    }
}

impl Decode for InstanceType {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(InstanceType {
            vcpus: r.u32("vcpus")?,
            ram_mib: r.u32("ram")?,
            disk_gib: r.u32("disk")?,
            gpu: r.option("gpu")?,
            arch: Arch::decode(r)?,
        })
    }
}

/// Where the machine runs: an ISO 3166-1 alpha-2 country code (upper case) and a free-form region.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Location {
    pub country: String,
    pub region: String,
}

impl Encode for Location {
    fn encode(&self, w: &mut Writer) {
        w.str(&self.country);
        w.str(&self.region);
    }
}

impl Decode for Location {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Location {
            country: r.str("country", 2)?,
            region: r.str("region", MAX_LABEL)?,
        })
    }
}

/// Reference to a bitcoin-anchored fidelity bond backing the provider (filled in by the trust work; carried
/// and signed now so that offers need no new version when bonds arrive).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BondRef {
    /// Transaction id of the bond output, in internal byte order.
    pub txid: [u8; 32],
    pub vout: u32,
}

impl Encode for BondRef {
    fn encode(&self, w: &mut Writer) {
        w.raw(&self.txid);
        w.u32(self.vout);
    }
}

impl Decode for BondRef {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(BondRef {
            txid: r.array("bond txid")?,
            vout: r.u32("bond vout")?,
        })
    }
}

/// A compute offer. Identified within its provider by `offer_id`; a newer `sequence` supersedes an older one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Offer {
    pub provider: NodeId,
    pub pool: PoolId,
    pub offer_id: u64,
    pub sequence: u64,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds; the offer is void from this instant on.
    pub expires_at: u64,
    pub instance: InstanceType,
    pub images: Vec<String>,
    /// Price in satoshis per hour of one machine. Metering divides it per second in millisatoshis
    /// (see [`Offer::cost_msat`]), so short leases are billed exactly.
    pub price_sats_per_hour: u64,
    pub min_lease_secs: u32,
    pub max_lease_secs: u32,
    pub location: Location,
    /// How many machines of this shape the provider can run at once.
    pub capacity: u32,
    pub bond: Option<BondRef>,
    /// The bitcoin network the provider invoices on: its pool's chain.
    pub chain: Chain,
    /// TCP ports besides SSH that a buyer may ask to have opened to the machine (an order's
    /// [`crate::Order::extra_ports`] must be among them): ascending, distinct, not 0, at most
    /// [`MAX_EXTRA_PORTS`]. Empty: only SSH.
    pub extra_ports: Vec<u16>,
}

/// Most entries in [`Offer::extra_ports`] and [`crate::Order::extra_ports`] (a lease's firewall opens at most
/// [`crate::lease::MAX_OPEN_PORTS`] ports, SSH included).
pub const MAX_EXTRA_PORTS: usize = 15;

/// Whether `ports` is ascending and distinct with no 0: the one spelling of a port set in messages.
pub fn ports_well_formed(ports: &[u16]) -> bool {
    ports.windows(2).all(|w| w[0] < w[1]) && !ports.contains(&0)
}

/// `ports` in that spelling, as far as sorting and removing repeats make it (a 0 stays, for validation to
/// refuse).
pub fn sorted_ports(ports: &[u16]) -> Vec<u16> {
    let mut p = ports.to_vec();
    p.sort_unstable();
    p.dedup();
    p
}

impl Offer {
    /// Whether a buyer may ask for TCP `port` to be opened to the machine.
    pub fn allows_port(&self, port: u16) -> bool {
        self.extra_ports.binary_search(&port).is_ok()
    }

    /// What `secs` seconds of one machine cost, in millisatoshis (exact, rounded down; saturates instead of
    /// overflowing for absurd inputs).
    pub fn cost_msat(&self, secs: u64) -> u128 {
        (self.price_sats_per_hour as u128 * 1000).saturating_mul(secs as u128) / 3600
    }

    /// Whether the offer lists this OS image.
    pub fn has_image(&self, image: &str) -> bool {
        self.images.iter().any(|i| i == image)
    }
}

impl Encode for Offer {
    fn encode(&self, w: &mut Writer) {
        self.provider.encode(w);
        self.pool.encode(w);
        w.u64(self.offer_id);
        w.u64(self.sequence);
        w.u64(self.created_at);
        w.u64(self.expires_at);
        self.instance.encode(w);
        w.seq(&self.images);
        w.u64(self.price_sats_per_hour);
        w.u32(self.min_lease_secs);
        w.u32(self.max_lease_secs);
        self.location.encode(w);
        w.u32(self.capacity);
        w.option(&self.bond);
        self.chain.encode(w);
        w.seq(&self.extra_ports);
    }
}

impl Decode for Offer {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Offer {
            provider: NodeId::decode(r)?,
            pool: PoolId::decode(r)?,
            offer_id: r.u64("offer id")?,
            sequence: r.u64("sequence")?,
            created_at: r.u64("created at")?,
            expires_at: r.u64("expires at")?,
            instance: InstanceType::decode(r)?,
            images: r.seq("images", MAX_IMAGES)?,
            price_sats_per_hour: r.u64("price")?,
            min_lease_secs: r.u32("min lease")?,
            max_lease_secs: r.u32("max lease")?,
            location: Location::decode(r)?,
            capacity: r.u32("capacity")?,
            bond: r.option("bond")?,
            chain: Chain::decode(r)?,
            extra_ports: r.seq("extra ports", MAX_EXTRA_PORTS)?,
        })
    }
}

/// The provider takes an offer back before it expires. Removes every version with a sequence up to `sequence`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OfferWithdrawal {
    pub provider: NodeId,
    pub pool: PoolId,
    pub offer_id: u64,
    pub sequence: u64,
    pub created_at: u64,
    /// Until when nodes must remember the withdrawal (the withdrawn offer's own expiry), so that a delayed copy
    /// of the old offer cannot bring it back.
    pub expires_at: u64,
}

impl Encode for OfferWithdrawal {
    fn encode(&self, w: &mut Writer) {
        self.provider.encode(w);
        self.pool.encode(w);
        w.u64(self.offer_id);
        w.u64(self.sequence);
        w.u64(self.created_at);
        w.u64(self.expires_at);
    }
}

impl Decode for OfferWithdrawal {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(OfferWithdrawal {
            provider: NodeId::decode(r)?,
            pool: PoolId::decode(r)?,
            offer_id: r.u64("offer id")?,
            sequence: r.u64("sequence")?,
            created_at: r.u64("created at")?,
            expires_at: r.u64("expires at")?,
        })
    }
}
