//! Lease receipts: what a finished lease was, signed by both of its parties. They are the evidence trust is
//! computed from (`trust.rs`), so a node can judge a stranger by what others have signed about it.
//!
//! The provider signs first ([`ProviderReceipt::sign`]) and hands the half-signed receipt to the buyer, who
//! checks it against its own record of the lease and countersigns ([`ProviderReceipt::countersign`]).
//!
//! Wire form (kind [`Kind::Receipt`]) is the usual envelope (`signed.rs`): its body is the receipt followed
//! by the provider's signature, and its signature is the buyer's over `"xov/sig/v1\0" || kind || body`, as
//! for every other kind. The provider's signature is over `"xov/receipt/v1\0" || receipt`, a domain of its
//! own, so it cannot be passed off as any envelope signature nor the other way round. The buyer's signature
//! covers the provider's, so the buyer attests to having seen the provider's version.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::encoding::{Decode, DecodeError, Encode, Reader, Writer};
use crate::identity::{verify_raw, Keypair, NodeId};
use crate::pool::PoolId;
use crate::signed::{open_envelope, signing_input, Kind, MessageId, HEADER, SIGNATURE, VERSION};

/// Domain tag of the provider's signature.
const PROVIDER_DOMAIN: &[u8] = b"xov/receipt/v1\0";

/// The facts of one finished lease. One lease has exactly one receipt: its id is the lease id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Receipt {
    /// The lease: the message id of the buyer's order.
    pub lease_id: MessageId,
    /// The pool the offer was in; the receipt is gossiped on that pool's topic.
    pub pool: PoolId,
    pub provider: NodeId,
    pub buyer: NodeId,
    /// Unix seconds the machine started running.
    pub started_at: u64,
    /// Unix seconds the lease ended (machine stopped).
    pub ended_at: u64,
    /// Everything the buyer paid to the lease's address.
    pub paid_sats: u64,
    /// What the provider paid back (unused time, cancellation).
    pub refunded_sats: u64,
}

impl Receipt {
    /// What the provider kept: paid minus refunded.
    pub fn net_sats(&self) -> u64 {
        self.paid_sats.saturating_sub(self.refunded_sats)
    }

    /// The other party of the lease, if `node` is one of them.
    pub fn counterparty(&self, node: &NodeId) -> Option<NodeId> {
        if *node == self.provider {
            Some(self.buyer)
        } else if *node == self.buyer {
            Some(self.provider)
        } else {
            None
        }
    }
}

impl Encode for Receipt {
    fn encode(&self, w: &mut Writer) {
        self.lease_id.encode(w);
        self.pool.encode(w);
        self.provider.encode(w);
        self.buyer.encode(w);
        w.u64(self.started_at);
        w.u64(self.ended_at);
        w.u64(self.paid_sats);
        w.u64(self.refunded_sats);
    }
}

impl Decode for Receipt {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Receipt {
            lease_id: MessageId::decode(r)?,
            pool: PoolId::decode(r)?,
            provider: NodeId::decode(r)?,
            buyer: NodeId::decode(r)?,
            started_at: r.u64("started at")?,
            ended_at: r.u64("ended at")?,
            paid_sats: r.u64("paid")?,
            refunded_sats: r.u64("refunded")?,
        })
    }
}

fn provider_input(receipt: &Receipt) -> Vec<u8> {
    let mut m = PROVIDER_DOMAIN.to_vec();
    m.extend_from_slice(&receipt.to_canonical_bytes());
    m
}

/// Why a buyer's node would not countersign a receipt.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CountersignError {
    #[error("the provider's signature on the receipt does not verify")]
    BadProviderSignature,
    #[error("the receipt names buyer {expected}, not this key ({got})")]
    NotTheBuyer { expected: NodeId, got: NodeId },
}

/// A receipt signed by its provider only, on its way to the buyer. Its canonical bytes (receipt, then the
/// 64-byte signature) are what a node sends to the buyer, and are also the body of the countersigned form.
/// JSON form: the receipt and the signature in hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProviderReceipt {
    receipt: Receipt,
    #[serde(rename = "provider_signature", with = "crate::hex::array")]
    provider_sig: [u8; 64],
}

impl ProviderReceipt {
    /// The provider signs `receipt`. `provider` should be `receipt.provider`, or verification will fail.
    pub fn sign(receipt: Receipt, provider: &Keypair) -> Self {
        let provider_sig = provider.sign_raw(&provider_input(&receipt));
        ProviderReceipt {
            receipt,
            provider_sig,
        }
    }

    /// Reassembles one from stored parts; nothing is checked until [`ProviderReceipt::verify`].
    pub fn from_parts(receipt: Receipt, provider_sig: [u8; 64]) -> Self {
        ProviderReceipt {
            receipt,
            provider_sig,
        }
    }

    pub fn receipt(&self) -> &Receipt {
        &self.receipt
    }

    pub fn provider_sig(&self) -> &[u8; 64] {
        &self.provider_sig
    }

    /// Whether the provider's signature is valid (`crate::sig`'s rule).
    pub fn verify(&self) -> bool {
        verify_raw(
            &self.receipt.provider,
            &provider_input(&self.receipt),
            &self.provider_sig,
        )
    }

    /// The buyer countersigns, after checking the provider's signature and that `buyer` is the receipt's
    /// buyer. The caller must first compare the receipt's facts with its own record of the lease.
    pub fn countersign(self, buyer: &Keypair) -> Result<SignedReceipt, CountersignError> {
        if buyer.node_id() != self.receipt.buyer {
            return Err(CountersignError::NotTheBuyer {
                expected: self.receipt.buyer,
                got: buyer.node_id(),
            });
        }
        if !self.verify() {
            return Err(CountersignError::BadProviderSignature);
        }
        let buyer_sig = buyer.sign_raw(&signing_input(Kind::Receipt, &self.to_canonical_bytes()));
        Ok(SignedReceipt {
            receipt: self.receipt,
            provider_sig: self.provider_sig,
            buyer_sig,
        })
    }
}

impl Encode for ProviderReceipt {
    fn encode(&self, w: &mut Writer) {
        self.receipt.encode(w);
        w.raw(&self.provider_sig);
    }
}

impl Decode for ProviderReceipt {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ProviderReceipt {
            receipt: Receipt::decode(r)?,
            provider_sig: r.array("provider signature")?,
        })
    }
}

/// A receipt signed by both parties: the form that is gossiped, stored and counted.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SignedReceipt {
    receipt: Receipt,
    provider_sig: [u8; 64],
    buyer_sig: [u8; 64],
}

impl fmt::Debug for SignedReceipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedReceipt")
            .field("receipt", &self.receipt)
            .finish()
    }
}

impl SignedReceipt {
    /// Reassembles one from stored parts; nothing is checked until [`SignedReceipt::verify`].
    pub fn from_parts(receipt: Receipt, provider_sig: [u8; 64], buyer_sig: [u8; 64]) -> Self {
        SignedReceipt {
            receipt,
            provider_sig,
            buyer_sig,
        }
    }

    pub fn receipt(&self) -> &Receipt {
        &self.receipt
    }

    pub fn provider_sig(&self) -> &[u8; 64] {
        &self.provider_sig
    }

    pub fn buyer_sig(&self) -> &[u8; 64] {
        &self.buyer_sig
    }

    /// The lease id. The trust ledger keys receipts by it together with the provider and the buyer
    /// (`trust::ReceiptKey`): anyone can put any lease id in a receipt, so it only ever speaks for its signers.
    pub fn id(&self) -> MessageId {
        self.receipt.lease_id
    }

    /// The content id: SHA-256 of the wire bytes, as for every other message (the gossip message id).
    pub fn message_id(&self) -> MessageId {
        MessageId(Sha256::digest(self.to_bytes()).into())
    }

    fn provider_part(&self) -> ProviderReceipt {
        ProviderReceipt::from_parts(self.receipt.clone(), self.provider_sig)
    }

    /// Whether the provider's signature verifies.
    pub fn provider_signature_valid(&self) -> bool {
        self.provider_part().verify()
    }

    /// Whether the buyer's countersignature verifies.
    pub fn buyer_signature_valid(&self) -> bool {
        verify_raw(
            &self.receipt.buyer,
            &signing_input(Kind::Receipt, &self.provider_part().to_canonical_bytes()),
            &self.buyer_sig,
        )
    }

    /// Whether both signatures are valid (`crate::sig`'s rule).
    pub fn verify(&self) -> bool {
        self.provider_signature_valid() && self.buyer_signature_valid()
    }

    /// The canonical wire bytes: the envelope of `signed.rs` with the buyer's signature last.
    pub fn to_bytes(&self) -> Vec<u8> {
        let body = self.provider_part().to_canonical_bytes();
        let mut w = Writer::with_capacity(HEADER + body.len() + SIGNATURE);
        w.u8(VERSION);
        w.u8(Kind::Receipt as u8);
        w.bytes(&body);
        w.raw(&self.buyer_sig);
        w.into_bytes()
    }

    /// Decodes wire bytes, checking the size limit first. Does not verify the signatures.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = open_envelope(bytes, Kind::Receipt, "receipt")?;
        let len = r.u32("body length")? as usize;
        let body = ProviderReceipt::from_canonical_bytes(r.take(len, "body")?)?;
        let buyer_sig = r.array::<64>("signature")?;
        r.finish()?;
        Ok(SignedReceipt {
            receipt: body.receipt,
            provider_sig: body.provider_sig,
            buyer_sig,
        })
    }
}

impl Serialize for SignedReceipt {
    /// JSON form for the local API: the receipt, its gossip message id and both signatures in hex.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("SignedReceipt", 4)?;
        st.serialize_field("message_id", &self.message_id())?;
        st.serialize_field("receipt", &self.receipt)?;
        st.serialize_field(
            "provider_signature",
            &crate::hex::encode(&self.provider_sig),
        )?;
        st.serialize_field("buyer_signature", &crate::hex::encode(&self.buyer_sig))?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for SignedReceipt {
    /// Reads the JSON form back; `message_id` is derived, so it is ignored. Signatures are not checked.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Json {
            receipt: Receipt,
            #[serde(with = "crate::hex::array")]
            provider_signature: [u8; 64],
            #[serde(with = "crate::hex::array")]
            buyer_signature: [u8; 64],
        }
        let j = Json::deserialize(d)?;
        Ok(SignedReceipt::from_parts(
            j.receipt,
            j.provider_signature,
            j.buyer_signature,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Keypair {
        Keypair::from_secret_bytes(&[n; 32])
    }

    fn receipt() -> Receipt {
        Receipt {
            lease_id: MessageId([5; 32]),
            pool: PoolId([6; 32]),
            provider: key(1).node_id(),
            buyer: key(2).node_id(),
            started_at: 1_000,
            ended_at: 4_600,
            paid_sats: 1_000,
            refunded_sats: 100,
        }
    }

    #[test]
    fn both_parties_sign_and_the_wire_form_round_trips() {
        let half = ProviderReceipt::sign(receipt(), &key(1));
        assert!(half.verify());
        assert_eq!(
            ProviderReceipt::from_canonical_bytes(&half.to_canonical_bytes()),
            Ok(half.clone())
        );
        let full = half.countersign(&key(2)).expect("the buyer countersigns");
        assert!(full.verify());
        assert_eq!(full.id(), MessageId([5; 32]));
        let bytes = full.to_bytes();
        assert_eq!(bytes[1], Kind::Receipt as u8);
        let back = SignedReceipt::from_bytes(&bytes).unwrap();
        assert_eq!(back, full);
        assert_eq!(back.to_bytes(), bytes);
        assert_eq!(back.message_id(), full.message_id());
    }

    #[test]
    fn the_buyer_will_not_countersign_a_forgery_or_someone_elses_receipt() {
        let forged = ProviderReceipt::sign(receipt(), &key(3));
        assert_eq!(
            forged.countersign(&key(2)),
            Err(CountersignError::BadProviderSignature)
        );
        let half = ProviderReceipt::sign(receipt(), &key(1));
        assert!(matches!(
            half.countersign(&key(3)),
            Err(CountersignError::NotTheBuyer { .. })
        ));
    }

    #[test]
    fn each_signature_is_checked() {
        let full = ProviderReceipt::sign(receipt(), &key(1))
            .countersign(&key(2))
            .unwrap();
        let mut bad_provider = full.clone();
        bad_provider.provider_sig[0] ^= 1;
        assert!(!bad_provider.provider_signature_valid() && !bad_provider.verify());
        let mut bad_buyer = full.clone();
        bad_buyer.buyer_sig[0] ^= 1;
        assert!(bad_buyer.provider_signature_valid() && !bad_buyer.verify());
        // Changing a fact breaks both signatures.
        let mut changed = full;
        changed.receipt.paid_sats += 1;
        assert!(!changed.provider_signature_valid() && !changed.buyer_signature_valid());
    }

    #[test]
    fn the_provider_signature_is_not_an_envelope_signature() {
        // A provider's receipt signature must not verify as the same key's envelope signature over the body.
        let half = ProviderReceipt::sign(receipt(), &key(1));
        let as_envelope = signing_input(Kind::Receipt, &receipt().to_canonical_bytes());
        assert!(!verify_raw(
            &key(1).node_id(),
            &as_envelope,
            half.provider_sig()
        ));
    }
}
