//! Pools: named markets, each defined by a charter its founder signs. The pool id is the hash of the charter,
//! so nobody can change a pool's rules after others joined it; new rules make a new pool.
//!
//! Invariants: a charter names the bitcoin network ([`Chain`]) its market settles on, and the chain is part of
//! the hashed content, so the same name and rules on two chains are two pools with two ids (and two gossip
//! topics). The built-in public pool is therefore one per chain ([`public_charter`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::chain::Chain;
use crate::encoding::{Decode, DecodeError, Encode, Reader, Writer};
use crate::identity::NodeId;

/// Longest pool name.
pub const MAX_POOL_NAME: usize = 64;
/// Most publishers an allow-list may name.
pub const MAX_PUBLISHERS: usize = 256;

/// A pool's identity: SHA-256 over a domain tag and the charter's canonical bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolId(pub [u8; 32]);

impl PoolId {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for PoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PoolId({self})")
    }
}

impl FromStr for PoolId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() != 64 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("pool id must be 64 hex characters, got '{s}'"));
        }
        let mut out = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let pair = std::str::from_utf8(chunk).map_err(|e| e.to_string())?;
            out[i] = u8::from_str_radix(pair, 16).map_err(|e| e.to_string())?;
        }
        Ok(PoolId(out))
    }
}

impl Serialize for PoolId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PoolId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Encode for PoolId {
    fn encode(&self, w: &mut Writer) {
        w.raw(&self.0)
    }
}

impl Decode for PoolId {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(PoolId(r.array("pool id")?))
    }
}

/// Who may publish offers in a pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "publishers")]
pub enum PublishPolicy {
    Anyone,
    /// Only these providers (the founder is not implied).
    AllowList(Vec<NodeId>),
}

impl Encode for PublishPolicy {
    fn encode(&self, w: &mut Writer) {
        match self {
            PublishPolicy::Anyone => w.u8(0),
            PublishPolicy::AllowList(ids) => {
                w.u8(1);
                w.seq(ids);
            }
        }
    }
}

impl Decode for PublishPolicy {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8("publish policy")? {
            0 => Ok(PublishPolicy::Anyone),
            1 => Ok(PublishPolicy::AllowList(
                r.seq("publishers", MAX_PUBLISHERS)?,
            )),
            tag => Err(DecodeError::InvalidTag {
                field: "publish policy",
                tag,
            }),
        }
    }
}

/// The rules every offer in the pool must follow; nodes reject and do not forward offers that break them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PoolRules {
    pub publish: PublishPolicy,
    /// Prices must be a multiple of this many sats per hour (1 = any price). Keeps the book from being
    /// flooded by offers undercutting each other by one sat.
    pub min_price_step_sats: u64,
    /// Bounds on an offer's lifetime (`expires_at - created_at`), in seconds.
    pub min_ttl_secs: u32,
    pub max_ttl_secs: u32,
    /// Most live offers one provider may hold in the pool.
    pub max_offers_per_provider: u32,
}

impl Default for PoolRules {
    fn default() -> Self {
        PoolRules {
            publish: PublishPolicy::Anyone,
            min_price_step_sats: 1,
            min_ttl_secs: 60,
            max_ttl_secs: 24 * 3600,
            max_offers_per_provider: 1000,
        }
    }
}

impl Encode for PoolRules {
    fn encode(&self, w: &mut Writer) {
        self.publish.encode(w);
        w.u64(self.min_price_step_sats);
        w.u32(self.min_ttl_secs);
        w.u32(self.max_ttl_secs);
        w.u32(self.max_offers_per_provider);
    }
}

impl Decode for PoolRules {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(PoolRules {
            publish: PublishPolicy::decode(r)?,
            min_price_step_sats: r.u64("min price step")?,
            min_ttl_secs: r.u32("min ttl")?,
            max_ttl_secs: r.u32("max ttl")?,
            max_offers_per_provider: r.u32("max offers per provider")?,
        })
    }
}

/// A pool's founding document.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PoolCharter {
    pub name: String,
    pub founder: NodeId,
    pub created_at: u64,
    pub rules: PoolRules,
    /// The bitcoin network the pool's leases are paid on; every offer in the pool must name the same.
    pub chain: Chain,
}

impl PoolCharter {
    /// The pool's id, derived from the charter's content (not its signature).
    pub fn pool_id(&self) -> PoolId {
        let mut h = Sha256::new();
        h.update(b"xov/pool-id/v1\0");
        h.update(self.to_canonical_bytes());
        PoolId(h.finalize().into())
    }

    /// Whether `provider` may publish offers here.
    pub fn may_publish(&self, provider: &NodeId) -> bool {
        match &self.rules.publish {
            PublishPolicy::Anyone => true,
            PublishPolicy::AllowList(ids) => ids.contains(provider),
        }
    }
}

impl Encode for PoolCharter {
    fn encode(&self, w: &mut Writer) {
        w.str(&self.name);
        self.founder.encode(w);
        w.u64(self.created_at);
        self.rules.encode(w);
        self.chain.encode(w);
    }
}

impl Decode for PoolCharter {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(PoolCharter {
            name: r.str("pool name", MAX_POOL_NAME)?,
            founder: NodeId::decode(r)?,
            created_at: r.u64("created at")?,
            rules: PoolRules::decode(r)?,
            chain: Chain::decode(r)?,
        })
    }
}

/// Name of the pool every node joins unless told otherwise.
pub const PUBLIC_POOL_NAME: &str = "public";

/// The default public pool of `chain`, so that a new node has somewhere to go. Its founder key is derived from
/// a public constant: anyone can reproduce the charter, nobody can change it (the pool id is the charter's
/// hash), and the signature proves only that the charter is this one. The charters of two chains differ only
/// in their chain, so each chain has its own public pool id.
pub fn public_charter(chain: Chain) -> crate::signed::Signed<PoolCharter> {
    let seed: [u8; 32] = Sha256::digest(b"xov/public-pool/v1").into();
    let founder = crate::identity::Keypair::from_secret_bytes(&seed);
    let charter = PoolCharter {
        name: PUBLIC_POOL_NAME.to_string(),
        founder: founder.node_id(),
        created_at: 1_767_225_600, // 2026-01-01T00:00:00Z
        rules: PoolRules::default(),
        chain,
    };
    crate::signed::Signed::sign(charter, &founder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_pool_is_the_same_everywhere_and_valid() {
        for (_, chain) in Chain::KNOWN {
            let a = public_charter(chain);
            assert_eq!(a.body().pool_id(), public_charter(chain).body().pool_id());
            assert_eq!(a.body().chain, chain);
            assert_eq!(crate::validate::validate_charter(&a, 1_800_000_000), Ok(()));
        }
    }

    #[test]
    fn pool_ids_differ_per_chain() {
        let ids: std::collections::BTreeSet<PoolId> = Chain::KNOWN
            .iter()
            .map(|(_, c)| public_charter(*c).body().pool_id())
            .collect();
        assert_eq!(ids.len(), Chain::KNOWN.len(), "one public pool per chain");
        // The same for any charter: only the chain differs, the id does too.
        let mut c = public_charter(Chain::REGTEST).into_body();
        let regtest = c.pool_id();
        c.chain = Chain::SIGNET;
        assert_ne!(c.pool_id(), regtest);
    }

    #[test]
    fn the_chain_is_encoded_after_the_rules() {
        let c = public_charter(Chain::SIGNET).into_body();
        let bytes = c.to_canonical_bytes();
        assert_eq!(&bytes[bytes.len() - 32..], Chain::SIGNET.as_bytes());
        assert_eq!(PoolCharter::from_canonical_bytes(&bytes), Ok(c));
        // A charter without its chain (the layout of encoding version 1) does not decode.
        assert_eq!(
            PoolCharter::from_canonical_bytes(&bytes[..bytes.len() - 32]),
            Err(DecodeError::Truncated("chain"))
        );
    }
}
