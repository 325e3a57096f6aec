//! Canonical binary encoding.
//!
//! Every signed byte string must have exactly one decoding and every value exactly one encoding, on every
//! platform, so that signatures and content ids are stable. The rules are deliberately simple:
//! integers are fixed-width big-endian, booleans and option tags are one byte that must be 0 or 1,
//! strings and byte strings carry a length prefix and strings must be UTF-8, sequences carry a count,
//! and a decoder must consume its input exactly. Any input a decoder accepts re-encodes to the same bytes.
//! Enums that later versions may extend report an unknown tag as [`DecodeError::UnknownVariant`], never as
//! [`DecodeError::InvalidTag`], so receivers can tell "newer" from "garbage" by the variant.

use thiserror::Error;

/// Why bytes could not be decoded. Decoding never panics and never allocates more than the input allows.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("message is {size} bytes, the limit for this kind is {max}")]
    TooLarge { size: usize, max: usize },
    #[error("unknown encoding version {0}")]
    UnknownVersion(u8),
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("expected a {expected} message, found kind {found}")]
    WrongKind { expected: &'static str, found: u8 },
    #[error("input ended early while reading {0}")]
    Truncated(&'static str),
    #[error("{0} bytes left over after the message")]
    TrailingBytes(usize),
    /// A tag byte that can never be valid here (a bool or option tag other than 0 or 1, a value outside a
    /// closed set): the input is garbage.
    #[error("invalid tag {tag} for {field}")]
    InvalidTag { field: &'static str, tag: u8 },
    /// A variant tag of an extensible enum (a lease notice's body) that this code does not know: most likely
    /// a newer kind of message from a newer peer, to be dropped quietly rather than held against the sender.
    #[error("unknown kind {tag} of {field} (sent by a newer version?)")]
    UnknownVariant { field: &'static str, tag: u8 },
    #[error("{0} is not valid UTF-8")]
    InvalidUtf8(&'static str),
    #[error("{field} has length {len}, the limit is {max}")]
    LengthTooLarge {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{0} is not a valid public key")]
    InvalidKey(&'static str),
}

impl DecodeError {
    /// The message is of an encoding version or a kind this code does not speak (a newer peer's, or an
    /// older one's): not garbage, so nobody is to blame for it. Receivers drop it quietly and count it.
    /// Version 0 was never used by any version: that is garbage.
    pub fn is_other_version(&self) -> bool {
        matches!(
            self,
            DecodeError::UnknownVersion(1..) | DecodeError::UnknownKind(_)
        )
    }
}

/// Appends canonical encodings to a buffer.
#[derive(Default, Debug)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n),
        }
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn bool(&mut self, v: bool) {
        self.u8(v as u8);
    }
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }
    /// A string with a u16 length prefix. Callers keep strings under their field limits; an oversize string is
    /// truncated to the u16 range here rather than panicking, which then fails validation on the other side.
    pub fn str(&mut self, s: &str) {
        let len = s.len().min(u16::MAX as usize);
        self.u16(len as u16);
        self.raw(&s.as_bytes()[..len]);
    }
    /// A byte string with a u32 length prefix.
    pub fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.raw(b);
    }
    pub fn option<T: Encode>(&mut self, v: &Option<T>) {
        match v {
            None => self.u8(0),
            Some(x) => {
                self.u8(1);
                x.encode(self);
            }
        }
    }
    pub fn seq<T: Encode>(&mut self, items: &[T]) {
        self.u16(items.len().min(u16::MAX as usize) as u16);
        for item in items.iter().take(u16::MAX as usize) {
            item.encode(self);
        }
    }
}

/// Reads canonical encodings from a slice, refusing anything non-canonical.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    /// The node ids in these bytes were checked to be curve points before ([`Reader::with_checked_keys`]).
    keys_checked: bool,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            keys_checked: false,
        }
    }
    /// A reader of bytes this program decoded and checked in full before (see
    /// [`crate::Signed::from_checked_bytes`]): node ids are taken without decompressing their points again.
    pub(crate) fn with_checked_keys(self) -> Self {
        Self {
            keys_checked: true,
            ..self
        }
    }
    pub(crate) fn keys_checked(&self) -> bool {
        self.keys_checked
    }
    /// A reader of `buf`, a part of this reader's bytes, carrying over whether keys were checked.
    pub(crate) fn part(&self, buf: &'a [u8]) -> Self {
        Self {
            buf,
            keys_checked: self.keys_checked,
        }
    }
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }
    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.buf.len()))
        }
    }
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }
    pub fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(DecodeError::InvalidTag { field: what, tag }),
        }
    }
    /// A string of at most `max` bytes.
    pub fn str(&mut self, what: &'static str, max: usize) -> Result<String, DecodeError> {
        let len = self.u16(what)? as usize;
        if len > max {
            return Err(DecodeError::LengthTooLarge {
                field: what,
                len,
                max,
            });
        }
        let raw = self.take(len, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::InvalidUtf8(what))
    }
    /// A byte string of at most `max` bytes.
    pub fn bytes(&mut self, what: &'static str, max: usize) -> Result<Vec<u8>, DecodeError> {
        let len = self.u32(what)? as usize;
        if len > max {
            return Err(DecodeError::LengthTooLarge {
                field: what,
                len,
                max,
            });
        }
        Ok(self.take(len, what)?.to_vec())
    }
    pub fn option<T: Decode>(&mut self, what: &'static str) -> Result<Option<T>, DecodeError> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => Ok(Some(T::decode(self)?)),
            tag => Err(DecodeError::InvalidTag { field: what, tag }),
        }
    }
    /// A sequence of at most `max` items.
    pub fn seq<T: Decode>(
        &mut self,
        what: &'static str,
        max: usize,
    ) -> Result<Vec<T>, DecodeError> {
        let len = self.u16(what)? as usize;
        if len > max {
            return Err(DecodeError::LengthTooLarge {
                field: what,
                len,
                max,
            });
        }
        // The count is bounded by `max`, so this allocation is bounded too.
        let mut out = Vec::with_capacity(len);
        for _ in 0..len {
            out.push(T::decode(self)?);
        }
        Ok(out)
    }
}

/// A value with one canonical encoding.
pub trait Encode {
    fn encode(&self, w: &mut Writer);
    fn to_canonical_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(256);
        self.encode(&mut w);
        w.into_bytes()
    }
}

/// The inverse of [`Encode`]; rejects every non-canonical input.
pub trait Decode: Sized {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
    /// Decodes a whole buffer, refusing trailing bytes.
    fn from_canonical_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let v = Self::decode(&mut r)?;
        r.finish()?;
        Ok(v)
    }
}

impl Encode for String {
    fn encode(&self, w: &mut Writer) {
        w.str(self)
    }
}

/// Longest string allowed inside a sequence of strings (image names, for example).
pub const MAX_SHORT_STR: usize = 64;

impl Decode for String {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.str("string", MAX_SHORT_STR)
    }
}

impl Encode for u16 {
    fn encode(&self, w: &mut Writer) {
        w.u16(*self);
    }
}

impl Decode for u16 {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.u16("u16")
    }
}

impl Encode for u64 {
    fn encode(&self, w: &mut Writer) {
        w.u64(*self)
    }
}

impl Decode for u64 {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.u64("u64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_versions_are_told_from_garbage() {
        let cases = [
            ("a newer version", DecodeError::UnknownVersion(4), true),
            ("an older version", DecodeError::UnknownVersion(1), true),
            (
                "version 0 never existed",
                DecodeError::UnknownVersion(0),
                false,
            ),
            (
                "a kind this version lacks",
                DecodeError::UnknownKind(0xEE),
                true,
            ),
            ("a truncated body", DecodeError::Truncated("body"), false),
            (
                "a bad tag",
                DecodeError::InvalidTag { field: "f", tag: 9 },
                false,
            ),
        ];
        for (name, e, want) in cases {
            assert_eq!(e.is_other_version(), want, "{name}");
        }
    }

    #[test]
    fn non_canonical_bool_and_option_tags_are_rejected() {
        assert_eq!(
            Reader::new(&[2]).bool("flag"),
            Err(DecodeError::InvalidTag {
                field: "flag",
                tag: 2
            })
        );
        assert!(Reader::new(&[7]).option::<u64>("opt").is_err());
    }

    #[test]
    fn lengths_beyond_limits_fail_before_allocation() {
        let mut w = Writer::new();
        w.u16(1000);
        let bytes = w.into_bytes();
        assert!(matches!(
            Reader::new(&bytes).str("name", 64),
            Err(DecodeError::LengthTooLarge { len: 1000, .. })
        ));
        let huge = [0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            Reader::new(&huge).bytes("blob", 1024),
            Err(DecodeError::LengthTooLarge { .. })
        ));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        assert_eq!(
            u64::from_canonical_bytes(&[0, 0, 0, 0, 0, 0, 0, 1, 9]),
            Err(DecodeError::TrailingBytes(1))
        );
        assert_eq!(u64::from_canonical_bytes(&[0, 0, 0, 0, 0, 0, 0, 1]), Ok(1));
    }

    #[test]
    fn invalid_utf8_is_refused() {
        let mut w = Writer::new();
        w.u16(2);
        w.raw(&[0xc3, 0x28]);
        assert_eq!(
            Reader::new(&w.into_bytes()).str("name", 64),
            Err(DecodeError::InvalidUtf8("name"))
        );
    }
}
