//! Hex text for byte strings in the JSON forms (the local API, `xov trust show`): serde cannot derive arrays
//! longer than 32 bytes, and people paste transaction ids in bitcoin's reversed display order.

use serde::{Deserialize, Deserializer, Serializer};

/// Lower-case hex of `bytes`, in order.
pub fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses exactly `N` bytes of hex (either case).
pub fn decode<const N: usize>(s: &str) -> Result<[u8; N], String> {
    let s = s.trim();
    if s.len() != 2 * N || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("expected {} hex characters, got '{s}'", 2 * N));
    }
    let mut out = [0u8; N];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).map_err(|e| e.to_string())?;
        out[i] = u8::from_str_radix(text, 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// `#[serde(with = "crate::hex::array")]`: a byte array as hex, in order.
pub mod array {
    use super::*;

    pub fn serialize<S: Serializer, const N: usize>(b: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        decode(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// `#[serde(with = "crate::hex::txid")]`: a transaction id kept in internal byte order, shown reversed, as
/// bitcoind and block explorers print it.
pub mod txid {
    use super::*;

    pub fn serialize<S: Serializer>(txid: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        let mut shown = *txid;
        shown.reverse();
        s.serialize_str(&encode(&shown))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let mut txid: [u8; 32] =
            decode(&String::deserialize(d)?).map_err(serde::de::Error::custom)?;
        txid.reverse();
        Ok(txid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_the_wrong_length() {
        let b = [0u8, 1, 0xab, 0xff];
        assert_eq!(encode(&b), "0001abff");
        assert_eq!(decode::<4>("0001ABff"), Ok(b));
        assert!(decode::<4>("0001ab").is_err());
        assert!(decode::<2>("zz00").is_err());
    }
}
