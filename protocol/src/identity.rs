//! Node identities: an ed25519 key pair whose public key is the node id.
//!
//! Ids are shown as base58 (Bitcoin alphabet) so that they are short, copyable and free of look-alike
//! characters. Key generation takes the randomness source as a parameter: this crate never reads the OS.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::encoding::{Decode, DecodeError, Encode, Reader, Writer};

/// A node's public identity: its ed25519 public key (32 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId([u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NodeIdError {
    #[error("node id is not base58: {0}")]
    NotBase58(String),
    #[error("node id must be 32 bytes, got {0}")]
    WrongLength(usize),
    #[error("node id is not a valid ed25519 public key")]
    NotAKey,
}

impl NodeId {
    /// The all-zero id, below every real id; only for range bounds.
    pub(crate) const MIN: NodeId = NodeId([0; 32]);

    /// Wraps raw bytes after checking they decode as an ed25519 point. Weak (small-order) keys pass this
    /// check, but no signature by one is valid ([`crate::sig`]), so their messages are rejected.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, NodeIdError> {
        VerifyingKey::from_bytes(&bytes).map_err(|_| NodeIdError::NotAKey)?;
        Ok(NodeId(bytes))
    }
    /// Any 32 bytes, unchecked, for range bounds only (never a message's id).
    pub(crate) const fn bound(bytes: [u8; 32]) -> NodeId {
        NodeId(bytes)
    }
    /// Any 32 bytes, unchecked: for tests of what happens to an id that is no key.
    #[cfg(test)]
    pub(crate) fn unchecked(bytes: [u8; 32]) -> NodeId {
        NodeId(bytes)
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.0).into_string())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

impl FromStr for NodeId {
    type Err = NodeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let raw = bs58::decode(s.trim())
            .into_vec()
            .map_err(|e| NodeIdError::NotBase58(e.to_string()))?;
        let arr: [u8; 32] = raw
            .as_slice()
            .try_into()
            .map_err(|_| NodeIdError::WrongLength(raw.len()))?;
        NodeId::from_bytes(arr)
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Encode for NodeId {
    fn encode(&self, w: &mut Writer) {
        w.raw(&self.0)
    }
}

impl Decode for NodeId {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let bytes = r.array::<32>("node id")?;
        if r.keys_checked() {
            // checked when these bytes were first decoded (`Signed::from_checked_bytes`)
            return Ok(NodeId(bytes));
        }
        NodeId::from_bytes(bytes).map_err(|_| DecodeError::InvalidKey("node id"))
    }
}

/// A node's secret key. Its `Debug` output never shows the secret.
pub struct Keypair {
    signing: SigningKey,
}

impl Keypair {
    pub fn generate<R: CryptoRngCore + ?Sized>(rng: &mut R) -> Self {
        Keypair {
            signing: SigningKey::generate(rng),
        }
    }
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Self {
        Keypair {
            signing: SigningKey::from_bytes(secret),
        }
    }
    /// The 32-byte secret seed, for the node to store (0600) and nothing else.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }
    pub fn node_id(&self) -> NodeId {
        NodeId(self.signing.verifying_key().to_bytes())
    }
    pub(crate) fn sign_raw(&self, msg: &[u8]) -> [u8; 64] {
        self.signing.sign(msg).to_bytes()
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({}, secret hidden)", self.node_id())
    }
}

/// Verification under xov's signature rule ([`crate::sig`]): canonical `s`, no small-order key, the
/// cofactored equation; nobody but the author can produce a valid signature, nor another one for the same
/// body. The author can, which is why supersession is decided by sequence and not by message id.
pub(crate) fn verify_raw(id: &NodeId, msg: &[u8], sig: &[u8; 64]) -> bool {
    crate::sig::verify_one(&crate::sig::Item {
        key: &id.0,
        msg,
        sig,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_round_trips_through_base58() {
        let kp = Keypair::from_secret_bytes(&[7u8; 32]);
        let id = kp.node_id();
        let text = id.to_string();
        assert_eq!(text.parse::<NodeId>().unwrap(), id);
        assert!("not-base58!".parse::<NodeId>().is_err());
        assert_eq!(
            bs58::encode([1u8; 5]).into_string().parse::<NodeId>(),
            Err(NodeIdError::WrongLength(5))
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        let kp = Keypair::from_secret_bytes(&[9u8; 32]);
        let shown = format!("{kp:?}");
        assert!(shown.contains("secret hidden"));
        assert!(!shown.contains(&hex_of(&kp.secret_bytes())));
    }

    fn hex_of(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
