//! The bitcoin network a market runs on, named by the hash of its genesis block.
//!
//! Invariants:
//! - A [`Chain`] is exactly the 32 bytes of a genesis block hash in internal byte order (the order bitcoin
//!   serialises it in); its text form is the usual reversed hex (as bitcoind prints it), or the network's name
//!   when it is one of [`Chain::KNOWN`]. Every 32-byte value is a valid chain: a custom network is just a
//!   hash this code has no name for.
//! - The named constants are facts, not choices: they must equal the genesis block hashes of the `bitcoin`
//!   crate (checked by a test in xov-node, which depends on it; this crate does not).
//! - Signets with a custom challenge share the default signet's genesis block, so they are one [`Chain`]
//!   here; such a market must keep apart by its pools.
//!
//! Pool charters, offers and orders carry the chain they belong to (it is part of what is signed and, for a
//! charter, of the pool id), so nodes on regtest, signet, testnet and mainnet never share a pool.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::encoding::{Decode, DecodeError, Encode, Reader, Writer};

/// A bitcoin network: the hash of its genesis block, internal byte order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Chain(pub [u8; 32]);

/// Parses 64 hex digits of a hash as printed (reversed) into internal byte order. For the constants below;
/// panics (at compile time) on anything else.
const fn from_display_hex(s: &str) -> Chain {
    let s = s.as_bytes();
    assert!(s.len() == 64, "a genesis hash is 64 hex digits");
    const fn digit(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("lower-case hex digits only"),
        }
    }
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[31 - i] = digit(s[2 * i]) << 4 | digit(s[2 * i + 1]);
        i += 1;
    }
    Chain(out)
}

impl Chain {
    /// Bitcoin mainnet.
    pub const BITCOIN: Chain =
        from_display_hex("000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f");
    /// Testnet3 (bitcoin Core's `-testnet`).
    pub const TESTNET: Chain =
        from_display_hex("000000000933ea01ad0ee984209779baaec3ced90fa3f408719526f8d77f4943");
    /// Testnet4 (BIP94).
    pub const TESTNET4: Chain =
        from_display_hex("00000000da84f2bafbbc53dee25a72ae507ff4914b867c565be350b0da8bf043");
    /// The default signet (and every custom signet: they share its genesis block).
    pub const SIGNET: Chain =
        from_display_hex("00000008819873e925422c1ff0f99f7cc9bbb232af63a077a480a3633bee1ef6");
    /// Regtest: every regtest node has the same genesis block.
    pub const REGTEST: Chain =
        from_display_hex("0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206");

    /// The networks this code knows by name, with the names the `bitcoin` crate's `Network` prints.
    pub const KNOWN: [(&'static str, Chain); 5] = [
        ("bitcoin", Chain::BITCOIN),
        ("testnet", Chain::TESTNET),
        ("testnet4", Chain::TESTNET4),
        ("signet", Chain::SIGNET),
        ("regtest", Chain::REGTEST),
    ];

    /// The chain with this genesis block hash (internal byte order).
    pub fn from_genesis_hash(bytes: [u8; 32]) -> Chain {
        Chain(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The network's name, if it is one of [`Chain::KNOWN`].
    pub fn name(&self) -> Option<&'static str> {
        Chain::KNOWN
            .iter()
            .find(|(_, c)| c == self)
            .map(|(name, _)| *name)
    }

    /// The genesis block hash as bitcoind prints it: 64 lower-case hex digits, reversed byte order.
    pub fn genesis_hex(&self) -> String {
        self.0.iter().rev().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for Chain {
    /// The network's name when known, else its genesis hash (both parse back).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => f.write_str(&self.genesis_hex()),
        }
    }
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Chain({self})")
    }
}

/// Text that names no chain.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown chain '{0}': expected bitcoin, testnet, testnet4, signet, regtest or a genesis block hash (64 hex digits)")]
pub struct ChainParseError(pub String);

impl FromStr for Chain {
    type Err = ChainParseError;
    /// A name of [`Chain::KNOWN`] (also `mainnet`, `main`, `testnet3`), or a genesis hash as bitcoind prints
    /// it (64 hex digits, either case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        let alias = match t.as_str() {
            "mainnet" | "main" => "bitcoin",
            "testnet3" => "testnet",
            other => other,
        };
        if let Some((_, c)) = Chain::KNOWN.iter().find(|(n, _)| *n == alias) {
            return Ok(*c);
        }
        let bad = || ChainParseError(s.to_string());
        if t.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, pair) in t.as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(pair).map_err(|_| bad())?;
            out[31 - i] = u8::from_str_radix(hex, 16).map_err(|_| bad())?;
        }
        Ok(Chain(out))
    }
}

impl Serialize for Chain {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Chain {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Encode for Chain {
    fn encode(&self, w: &mut Writer) {
        w.raw(&self.0)
    }
}

impl Decode for Chain {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Chain(r.array("chain")?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_chains_have_distinct_hashes_and_round_trip_as_text() {
        for (i, (name, c)) in Chain::KNOWN.iter().enumerate() {
            assert_eq!(c.name(), Some(*name));
            assert_eq!(c.to_string(), *name);
            assert_eq!(name.parse::<Chain>(), Ok(*c));
            assert_eq!(c.genesis_hex().parse::<Chain>(), Ok(*c));
            for (_, other) in &Chain::KNOWN[i + 1..] {
                assert_ne!(c, other);
            }
        }
        assert_eq!("mainnet".parse::<Chain>(), Ok(Chain::BITCOIN));
        assert_eq!(" Testnet3 ".parse::<Chain>(), Ok(Chain::TESTNET));
    }

    #[test]
    fn text_is_the_hash_as_bitcoind_prints_it() {
        assert_eq!(
            Chain::REGTEST.genesis_hex(),
            "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
        );
        // Internal byte order is the reverse of the printed one.
        assert_eq!(Chain::REGTEST.0[0], 0x06);
        assert_eq!(Chain::REGTEST.0[31], 0x0f);
        assert_eq!(
            Chain::BITCOIN
                .genesis_hex()
                .to_ascii_uppercase()
                .parse::<Chain>(),
            Ok(Chain::BITCOIN)
        );
    }

    #[test]
    fn an_unnamed_chain_is_shown_and_read_as_its_hash() {
        let custom = Chain([0xab; 32]);
        assert_eq!(custom.name(), None);
        assert_eq!(custom.to_string(), "ab".repeat(32));
        assert_eq!(custom.to_string().parse::<Chain>(), Ok(custom));
        let json = serde_json::to_string(&custom).unwrap();
        assert_eq!(serde_json::from_str::<Chain>(&json).unwrap(), custom);
        assert_eq!(serde_json::to_string(&Chain::SIGNET).unwrap(), "\"signet\"");
    }

    #[test]
    fn nonsense_is_refused_with_the_input() {
        for bad in ["", "liquid", "0f9188", &"zz".repeat(32)] {
            assert_eq!(
                bad.parse::<Chain>(),
                Err(ChainParseError(bad.to_string())),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_encoding_is_the_32_raw_bytes() {
        let bytes = Chain::SIGNET.to_canonical_bytes();
        assert_eq!(bytes, Chain::SIGNET.0.to_vec());
        assert_eq!(Chain::from_canonical_bytes(&bytes), Ok(Chain::SIGNET));
        assert_eq!(
            Chain::from_canonical_bytes(&bytes[..31]),
            Err(DecodeError::Truncated("chain"))
        );
    }
}
