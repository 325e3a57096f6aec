//! `Signed<T>`: the only form in which messages travel or are stored.
//!
//! Wire layout (all big-endian):
//!
//! ```text
//! version u8 (= 3) | kind u8 | body_len u32 | body (canonical encoding of T) | signature [u8; 64]
//! ```
//!
//! The signature is ed25519 by the message's author (the field [`Message::author`] names) over
//! `"xov/sig/v1\0" || kind || body`, so a signature for one kind of message can never be passed off as
//! another kind, nor as anything outside xov. The size limit of the kind is checked before any decoding.
//!
//! Versions: any change to the wire format takes a new [`VERSION`], and this code decodes only its own
//! (anything else is [`DecodeError::UnknownVersion`]). Version 2 added the chain to offers, pool charters and
//! orders; version 3 added ports to offers (those a buyer may open), orders and bids (those asked for). The
//! bodies of the other kinds are those of version 1, and since the version byte is not signed, [`upgrade`]
//! carries such messages over unchanged but for that byte (stored trust evidence, say).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::bid::Bid;
use crate::bond::BondProof;
use crate::encoding::{Decode, DecodeError, Encode, Reader, Writer};
use crate::identity::{verify_raw, Keypair, NodeId};
use crate::invoice::Invoice;
use crate::lease::LeaseNotice;
use crate::offer::{Offer, OfferWithdrawal};
use crate::order::Order;
use crate::pool::PoolCharter;
use crate::pool_load::LoadReport;
use crate::receipt::SignedReceipt;

/// The only encoding version this code speaks. Version 1 had no chain in offers, charters and orders;
/// version 2 no ports in offers, orders and bids.
pub const VERSION: u8 = 3;
/// Bytes before the body: version, kind, body length.
pub(crate) const HEADER: usize = 1 + 1 + 4;
pub(crate) const SIGNATURE: usize = 64;
const DOMAIN: &[u8] = b"xov/sig/v1\0";
/// No message of any kind may be larger than this.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// Message kinds; the byte is part of what is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Kind {
    Offer = 1,
    OfferWithdrawal = 2,
    Bid = 3,
    PoolCharter = 4,
    Order = 5,
    Invoice = 6,
    LeaseNotice = 7,
    /// A lease receipt signed by both parties (`receipt.rs`); its envelope signature is the buyer's.
    Receipt = 8,
    BondProof = 9,
    LoadReport = 10,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Offer,
            2 => Kind::OfferWithdrawal,
            3 => Kind::Bid,
            4 => Kind::PoolCharter,
            5 => Kind::Order,
            6 => Kind::Invoice,
            7 => Kind::LeaseNotice,
            8 => Kind::Receipt,
            9 => Kind::BondProof,
            10 => Kind::LoadReport,
            _ => return None,
        })
    }
    /// Largest encoded message of this kind, checked before decoding.
    pub fn max_size(self) -> usize {
        match self {
            Kind::Offer => 4096,
            Kind::OfferWithdrawal | Kind::Bid => 1024,
            Kind::PoolCharter => 10 * 1024,
            Kind::Order => 6 * 1024,
            Kind::Invoice => 1024,
            // A maximal notice (a status with every string and list full) is 1177 bytes; the rest is room
            // for newer kinds of notice, so older nodes decode them to UnknownVariant rather than TooLarge.
            Kind::LeaseNotice => 4096,
            Kind::Receipt | Kind::BondProof | Kind::LoadReport => 512,
        }
    }
}

/// A message body that can be signed.
pub trait Message: Encode + Decode + Clone {
    const KIND: Kind;
    const NAME: &'static str;
    /// Who must have signed it.
    fn author(&self) -> &NodeId;
}

macro_rules! message {
    ($t:ty, $kind:ident, $name:literal, $author:ident) => {
        impl Message for $t {
            const KIND: Kind = Kind::$kind;
            const NAME: &'static str = $name;
            fn author(&self) -> &NodeId {
                &self.$author
            }
        }
    };
}

message!(Offer, Offer, "offer", provider);
message!(
    OfferWithdrawal,
    OfferWithdrawal,
    "offer withdrawal",
    provider
);
message!(Bid, Bid, "bid", buyer);
message!(PoolCharter, PoolCharter, "pool charter", founder);
message!(Order, Order, "order", buyer);
message!(Invoice, Invoice, "invoice", provider);
message!(LeaseNotice, LeaseNotice, "lease notice", from);
message!(BondProof, BondProof, "bond proof", node);
message!(LoadReport, LoadReport, "load report", provider);

/// Content id of a signed message: SHA-256 of its complete wire bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; 32]);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

impl std::str::FromStr for MessageId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<crate::pool::PoolId>()
            .map(|p| MessageId(p.0))
            .map_err(|_| format!("message id must be 64 hex characters, got '{s}'"))
    }
}

impl Serialize for MessageId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Encode for MessageId {
    fn encode(&self, w: &mut Writer) {
        w.raw(&self.0)
    }
}

impl Decode for MessageId {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(MessageId(r.array("message id")?))
    }
}

/// A message body with its author's signature. Construct by [`Signed::sign`] or [`Signed::from_bytes`];
/// a decoded message is not yet trusted: call [`Signed::verify`] (validation does).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Signed<T> {
    body: T,
    signature: [u8; 64],
}

impl<T: fmt::Debug> fmt::Debug for Signed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signed").field("body", &self.body).finish()
    }
}

pub(crate) fn signing_input(kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 1 + body.len());
    m.extend_from_slice(DOMAIN);
    m.push(kind as u8);
    m.extend_from_slice(body);
    m
}

/// Which of `msgs` carry their author's signature, checked together ([`crate::sig::verify_many`]: about
/// three times the throughput of one by one). Each verdict is exactly [`Signed::verify`]'s, whatever else is
/// in the batch, so this may admit new messages (a sync page) as well as re-check stored ones; a bad
/// signature is always pinned to its message.
pub fn verify_all<T: Message>(msgs: &[&Signed<T>]) -> Vec<bool> {
    let mut ok = Vec::with_capacity(msgs.len());
    // A batch at a time, so the signed bytes of only one batch are held at once.
    for batch in msgs.chunks(crate::sig::BATCH) {
        let inputs: Vec<Vec<u8>> = batch
            .iter()
            .map(|m| signing_input(T::KIND, &m.body.to_canonical_bytes()))
            .collect();
        let items: Vec<crate::sig::Item<'_>> = batch
            .iter()
            .zip(&inputs)
            .map(|(m, input)| crate::sig::Item {
                key: m.body.author().as_bytes(),
                msg: input,
                sig: &m.signature,
            })
            .collect();
        ok.extend(crate::sig::verify_many(&items));
    }
    ok
}

impl<T: Message> Signed<T> {
    /// Signs `body` with `key`. The key should be the body's author, or verification will fail.
    pub fn sign(body: T, key: &Keypair) -> Self {
        let bytes = body.to_canonical_bytes();
        let signature = key.sign_raw(&signing_input(T::KIND, &bytes));
        Signed { body, signature }
    }

    pub fn body(&self) -> &T {
        &self.body
    }

    pub fn into_body(self) -> T {
        self.body
    }

    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }

    /// Whether the signature is the author's, over exactly this body.
    pub fn verify(&self) -> bool {
        let bytes = self.body.to_canonical_bytes();
        verify_raw(
            self.body.author(),
            &signing_input(T::KIND, &bytes),
            &self.signature,
        )
    }

    /// The canonical wire bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let body = self.body.to_canonical_bytes();
        let mut w = Writer::with_capacity(HEADER + body.len() + SIGNATURE);
        w.u8(VERSION);
        w.u8(T::KIND as u8);
        w.bytes(&body);
        w.raw(&self.signature);
        w.into_bytes()
    }

    /// The content id: SHA-256 of the wire bytes.
    pub fn id(&self) -> MessageId {
        MessageId(Sha256::digest(self.to_bytes()).into())
    }

    /// Decodes wire bytes of this kind, checking the size limit first. Does not verify the signature.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = open_envelope(bytes, T::KIND, T::NAME)?;
        Self::decode_after_header(&mut r)
    }

    /// [`Signed::from_bytes`] for bytes this program decoded and checked in full before and kept where only
    /// it writes (an offer its store sealed): node ids are taken as they are, without checking again that
    /// each is a curve point (decompressing it is most of the cost of decoding). Does not verify the
    /// signature; an id that is no key would fail every signature check.
    pub fn from_checked_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = open_envelope(bytes, T::KIND, T::NAME)?.with_checked_keys();
        Self::decode_after_header(&mut r)
    }

    /// [`Signed::from_bytes`] for bytes this node stored itself, possibly in an older encoding version: a
    /// kind whose body did not change since is carried over ([`upgrade`]). Does not verify the signature.
    pub fn from_stored_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        match Self::from_bytes(bytes) {
            Err(DecodeError::UnknownVersion(v)) if v < VERSION => {
                Self::from_bytes(&upgrade(bytes)?)
            }
            other => other,
        }
    }

    fn decode_after_header(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let len = r.u32("body length")? as usize;
        let body_bytes = r.take(len, "body")?;
        let mut body_reader = r.part(body_bytes);
        let body = T::decode(&mut body_reader)?;
        body_reader.finish()?;
        let signature = r.array::<64>("signature")?;
        r.finish()?;
        Ok(Signed { body, signature })
    }
}

/// Starts decoding an envelope that must be of `kind`: the kind's size limit first, then version and kind.
/// Returns the reader positioned at the body length.
pub(crate) fn open_envelope<'a>(
    bytes: &'a [u8],
    kind: Kind,
    name: &'static str,
) -> Result<Reader<'a>, DecodeError> {
    let max = kind.max_size();
    if bytes.len() > max {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            max,
        });
    }
    let mut r = Reader::new(bytes);
    let found = read_header(&mut r)?;
    if found != kind as u8 {
        return Err(DecodeError::WrongKind {
            expected: name,
            found,
        });
    }
    Ok(r)
}

pub(crate) fn read_header(r: &mut Reader<'_>) -> Result<u8, DecodeError> {
    let version = r.u8("version")?;
    if version != VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    r.u8("kind")
}

/// The encoding version in which the body of `kind` last changed: a message of that kind written in an older
/// version cannot be carried over.
fn body_changed_in(kind: Kind) -> u8 {
    match kind {
        // version 3: offers say which ports a buyer may open, orders and bids ask for ports
        Kind::Offer | Kind::Order | Kind::Bid => 3,
        // version 2: charters name their chain
        Kind::PoolCharter => 2,
        Kind::OfferWithdrawal
        | Kind::Invoice
        | Kind::LeaseNotice
        | Kind::Receipt
        | Kind::BondProof
        | Kind::LoadReport => 1,
    }
}

/// Rewrites the wire bytes of a message of an older encoding version as the current [`VERSION`], for a kind
/// whose body did not change since (stored trust evidence, a stored invoice). Only the version byte changes;
/// it is not signed, so the signatures stay valid, and the result still has to be decoded and validated like
/// any message. Refused: the current or an unknown version (`UnknownVersion`), an unknown kind
/// (`UnknownKind`), a kind whose body changed since that version (`UnknownVersion(version)`: an offer,
/// order or bid before version 3, a charter before version 2), input too short for a header (`Truncated`).
pub fn upgrade(bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut r = Reader::new(bytes);
    let version = r.u8("version")?;
    if version == 0 || version >= VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let kind_byte = r.u8("kind")?;
    let kind = Kind::from_u8(kind_byte).ok_or(DecodeError::UnknownKind(kind_byte))?;
    if version < body_changed_in(kind) {
        return Err(DecodeError::UnknownVersion(version));
    }
    let mut out = bytes.to_vec();
    out[0] = VERSION;
    Ok(out)
}

impl<T: Message + Serialize> Serialize for Signed<T> {
    /// JSON form for the local API: the body, plus id and signature in hex for those who want to check.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Signed", 3)?;
        st.serialize_field("id", &self.id())?;
        st.serialize_field("body", &self.body)?;
        let sig: String = self.signature.iter().map(|b| format!("{b:02x}")).collect();
        st.serialize_field("signature", &sig)?;
        st.end()
    }
}

/// Any signed message, for transports that carry several kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyMessage {
    Offer(Signed<Offer>),
    OfferWithdrawal(Signed<OfferWithdrawal>),
    Bid(Signed<Bid>),
    PoolCharter(Signed<PoolCharter>),
    Order(Signed<Order>),
    Invoice(Signed<Invoice>),
    LeaseNotice(Signed<LeaseNotice>),
    Receipt(SignedReceipt),
    BondProof(Signed<BondProof>),
    LoadReport(Signed<LoadReport>),
}

impl AnyMessage {
    /// Decodes any kind, checking the overall limit and then the kind's own limit before decoding the body.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(DecodeError::TooLarge {
                size: bytes.len(),
                max: MAX_MESSAGE_BYTES,
            });
        }
        let mut r = Reader::new(bytes);
        let kind_byte = read_header(&mut r)?;
        let kind = Kind::from_u8(kind_byte).ok_or(DecodeError::UnknownKind(kind_byte))?;
        Ok(match kind {
            Kind::Offer => AnyMessage::Offer(Signed::from_bytes(bytes)?),
            Kind::OfferWithdrawal => AnyMessage::OfferWithdrawal(Signed::from_bytes(bytes)?),
            Kind::Bid => AnyMessage::Bid(Signed::from_bytes(bytes)?),
            Kind::PoolCharter => AnyMessage::PoolCharter(Signed::from_bytes(bytes)?),
            Kind::Order => AnyMessage::Order(Signed::from_bytes(bytes)?),
            Kind::Invoice => AnyMessage::Invoice(Signed::from_bytes(bytes)?),
            Kind::LeaseNotice => AnyMessage::LeaseNotice(Signed::from_bytes(bytes)?),
            Kind::Receipt => AnyMessage::Receipt(SignedReceipt::from_bytes(bytes)?),
            Kind::BondProof => AnyMessage::BondProof(Signed::from_bytes(bytes)?),
            Kind::LoadReport => AnyMessage::LoadReport(Signed::from_bytes(bytes)?),
        })
    }

    pub fn kind(&self) -> Kind {
        match self {
            AnyMessage::Offer(_) => Kind::Offer,
            AnyMessage::OfferWithdrawal(_) => Kind::OfferWithdrawal,
            AnyMessage::Bid(_) => Kind::Bid,
            AnyMessage::PoolCharter(_) => Kind::PoolCharter,
            AnyMessage::Order(_) => Kind::Order,
            AnyMessage::Invoice(_) => Kind::Invoice,
            AnyMessage::LeaseNotice(_) => Kind::LeaseNotice,
            AnyMessage::Receipt(_) => Kind::Receipt,
            AnyMessage::BondProof(_) => Kind::BondProof,
            AnyMessage::LoadReport(_) => Kind::LoadReport,
        }
    }

    /// The content id: SHA-256 of the wire bytes (the gossip message id).
    pub fn id(&self) -> MessageId {
        MessageId(Sha256::digest(self.to_bytes()).into())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            AnyMessage::Offer(m) => m.to_bytes(),
            AnyMessage::OfferWithdrawal(m) => m.to_bytes(),
            AnyMessage::Bid(m) => m.to_bytes(),
            AnyMessage::PoolCharter(m) => m.to_bytes(),
            AnyMessage::Order(m) => m.to_bytes(),
            AnyMessage::Invoice(m) => m.to_bytes(),
            AnyMessage::LeaseNotice(m) => m.to_bytes(),
            AnyMessage::Receipt(m) => m.to_bytes(),
            AnyMessage::BondProof(m) => m.to_bytes(),
            AnyMessage::LoadReport(m) => m.to_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::Chain;
    use crate::pool::public_charter;

    fn withdrawal(key: &Keypair) -> Signed<OfferWithdrawal> {
        Signed::sign(
            OfferWithdrawal {
                provider: key.node_id(),
                pool: public_charter(Chain::REGTEST).body().pool_id(),
                offer_id: 1,
                sequence: 2,
                created_at: 1_800_000_000,
                expires_at: 1_800_003_600,
            },
            key,
        )
    }

    /// Bytes checked before decode alike without the curve-point check; an id that is no key decodes only
    /// that way, and then fails its signature check.
    #[test]
    fn checked_bytes_skip_only_the_curve_point_check() {
        let key = Keypair::from_secret_bytes(&[9; 32]);
        let good = withdrawal(&key);
        let bytes = good.to_bytes();
        assert_eq!(
            Signed::<OfferWithdrawal>::from_checked_bytes(&bytes).unwrap(),
            good
        );
        assert_eq!(Signed::<OfferWithdrawal>::from_bytes(&bytes).unwrap(), good);
        let not_a_key = (0u8..=255)
            .map(|i| {
                let mut b = [0u8; 32];
                b[0] = i;
                b
            })
            .find(|b| NodeId::from_bytes(*b).is_err())
            .expect("some small y is not on the curve");
        let mut body = good.body().clone();
        body.provider = NodeId::unchecked(not_a_key);
        let forged = Signed::sign(body, &key).to_bytes();
        assert!(matches!(
            Signed::<OfferWithdrawal>::from_bytes(&forged),
            Err(DecodeError::InvalidKey("node id"))
        ));
        let taken = Signed::<OfferWithdrawal>::from_checked_bytes(&forged).unwrap();
        assert!(!taken.verify());
        // everything else is still checked: a wrong kind, a truncated message
        assert!(Signed::<Offer>::from_checked_bytes(&bytes).is_err());
        assert!(Signed::<OfferWithdrawal>::from_checked_bytes(&bytes[..bytes.len() - 1]).is_err());
    }

    /// Checked together, each message still gets its own verdict: bad signatures are pinned to their
    /// messages wherever they sit in the batch, and agree with checking one by one.
    #[test]
    fn verify_all_pins_each_bad_signature_to_its_message() {
        let cases: &[(&str, usize, &[usize])] = &[
            ("all good", 300, &[]),
            ("one bad in the middle", 300, &[150]),
            ("first and last bad", 300, &[0, 299]),
            ("several bad, two adjacent", 2500, &[3, 4, 1024, 2048, 2499]),
            ("a single bad message", 1, &[0]),
            ("none at all", 0, &[]),
        ];
        for (name, n, bad) in cases {
            let msgs: Vec<Signed<OfferWithdrawal>> = (0..*n)
                .map(|i| {
                    let key = Keypair::from_secret_bytes(&[(i % 251) as u8 + 1; 32]);
                    let mut w = withdrawal(&key);
                    if bad.contains(&i) {
                        w.signature[5] ^= 0x40;
                    }
                    w
                })
                .collect();
            let refs: Vec<&Signed<OfferWithdrawal>> = msgs.iter().collect();
            let got = verify_all(&refs);
            let one_by_one: Vec<bool> = msgs.iter().map(|m| m.verify()).collect();
            assert_eq!(got, one_by_one, "{name}");
            let failed: Vec<usize> = (0..*n).filter(|&i| !got[i]).collect();
            assert_eq!(&failed, bad, "{name}");
        }
    }

    #[test]
    fn an_older_message_of_an_unchanged_kind_is_carried_over_with_its_signature() {
        let key = Keypair::from_secret_bytes(&[3; 32]);
        let w = withdrawal(&key);
        for old in [1u8, 2] {
            let mut bytes = w.to_bytes();
            bytes[0] = old;
            assert_eq!(
                Signed::<OfferWithdrawal>::from_bytes(&bytes),
                Err(DecodeError::UnknownVersion(old))
            );
            let up = upgrade(&bytes).unwrap();
            assert_eq!(up, w.to_bytes());
            let back = Signed::<OfferWithdrawal>::from_bytes(&up).unwrap();
            assert!(back.verify(), "the version byte is not signed");
            // what a node stored itself in the older version reads back the same
            assert_eq!(
                Signed::<OfferWithdrawal>::from_stored_bytes(&bytes).unwrap(),
                w
            );
        }
        let mut newer = w.to_bytes();
        newer[0] = VERSION + 1;
        assert_eq!(
            Signed::<OfferWithdrawal>::from_stored_bytes(&newer),
            Err(DecodeError::UnknownVersion(VERSION + 1)),
            "a newer version is not guessed at"
        );
        // a version-2 charter had its chain already
        let charter = public_charter(Chain::REGTEST);
        let mut v2 = charter.to_bytes();
        v2[0] = 2;
        assert_eq!(upgrade(&v2).unwrap(), charter.to_bytes());
    }

    #[test]
    fn kinds_whose_body_changed_since_cannot_be_carried_over() {
        struct Case {
            name: &'static str,
            bytes: Vec<u8>,
            want: DecodeError,
        }
        let mut charter_v1 = public_charter(Chain::REGTEST).to_bytes();
        charter_v1[0] = 1;
        let mut cases = vec![
            Case {
                name: "a version-1 charter names no chain",
                bytes: charter_v1,
                want: DecodeError::UnknownVersion(1),
            },
            Case {
                name: "an unknown kind",
                bytes: vec![1, 99],
                want: DecodeError::UnknownKind(99),
            },
            Case {
                name: "the current version needs no carrying over",
                bytes: vec![VERSION, Kind::Bid as u8],
                want: DecodeError::UnknownVersion(VERSION),
            },
            Case {
                name: "a newer version is not ours to rewrite",
                bytes: vec![VERSION + 1, Kind::Bid as u8],
                want: DecodeError::UnknownVersion(VERSION + 1),
            },
            Case {
                name: "version 0 never existed",
                bytes: vec![0, Kind::Bid as u8],
                want: DecodeError::UnknownVersion(0),
            },
            Case {
                name: "no kind byte",
                bytes: vec![1],
                want: DecodeError::Truncated("kind"),
            },
        ];
        for old in [1u8, 2] {
            for kind in [Kind::Offer, Kind::Order, Kind::Bid] {
                cases.push(Case {
                    name: "offers, orders and bids gained ports in version 3",
                    bytes: vec![old, kind as u8, 0, 0, 0, 0],
                    want: DecodeError::UnknownVersion(old),
                });
            }
        }
        for c in cases {
            assert_eq!(upgrade(&c.bytes), Err(c.want), "{}", c.name);
        }
    }
}
