//! BIP21 payment URIs (`bitcoin:ADDRESS?amount=BTC&label=…`), and a terminal QR code of one.

use crate::error::WalletError;

/// Formats a URI; the amount in BTC with up to 8 decimals, the label percent-encoded.
pub fn uri(address: &str, amount_sat: Option<u64>, label: Option<&str>) -> String {
    let mut params = Vec::new();
    if let Some(sat) = amount_sat {
        params.push(format!("amount={}", btc(sat)));
    }
    if let Some(l) = label {
        params.push(format!("label={}", percent_encode(l)));
    }
    if params.is_empty() {
        format!("bitcoin:{address}")
    } else {
        format!("bitcoin:{address}?{}", params.join("&"))
    }
}

fn btc(sat: u64) -> String {
    let whole = sat / 100_000_000;
    let frac = sat % 100_000_000;
    if frac == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{:08}", frac)
            .trim_end_matches('0')
            .to_string()
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A parsed payment request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRequest {
    pub address: String,
    pub amount_sat: Option<u64>,
    pub label: Option<String>,
}

/// Parses a BIP21 URI. Unknown `req-` parameters make it invalid, as the BIP requires.
pub fn parse(s: &str) -> Result<PaymentRequest, WalletError> {
    let s = s.trim();
    let rest = s
        .get(..8)
        .filter(|p| p.eq_ignore_ascii_case("bitcoin:"))
        .map(|_| &s[8..])
        .ok_or_else(|| WalletError::BadUri(format!("'{s}' does not start with bitcoin:")))?;
    let (address, query) = rest.split_once('?').unwrap_or((rest, ""));
    if address.is_empty() {
        return Err(WalletError::BadUri("no address".into()));
    }
    let mut req = PaymentRequest {
        address: address.to_string(),
        amount_sat: None,
        label: None,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "amount" => req.amount_sat = Some(parse_btc(v)?),
            "label" => req.label = Some(percent_decode(v)),
            k if k.starts_with("req-") => {
                return Err(WalletError::BadUri(format!(
                    "unsupported required parameter '{k}'"
                )))
            }
            _ => {}
        }
    }
    Ok(req)
}

fn parse_btc(v: &str) -> Result<u64, WalletError> {
    let bad = || WalletError::BadUri(format!("amount '{v}' is not a BTC amount like 0.0015"));
    let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
    if whole.is_empty() && frac.is_empty()
        || frac.len() > 8
        || !whole
            .chars()
            .chain(frac.chars())
            .all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac: u64 = format!("{frac:0<8}").parse().map_err(|_| bad())?;
    whole
        .checked_mul(100_000_000)
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(bad)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(x) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(x);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URI as a QR code drawn with Unicode half blocks, for paying from a phone at the terminal.
pub fn qr(uri: &str) -> String {
    match qrcode::QrCode::new(uri.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::unicode::Dense1x2>()
            .quiet_zone(true)
            .build(),
        Err(e) => format!("(no QR code: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let u = uri("bcrt1qxyz", Some(150_000), Some("lease 7"));
        assert_eq!(u, "bitcoin:bcrt1qxyz?amount=0.0015&label=lease%207");
        let p = parse(&u).unwrap();
        assert_eq!(
            p,
            PaymentRequest {
                address: "bcrt1qxyz".into(),
                amount_sat: Some(150_000),
                label: Some("lease 7".into())
            }
        );
        assert_eq!(
            parse("BITCOIN:addr?amount=1").unwrap().amount_sat,
            Some(100_000_000)
        );
        assert!(parse("bitcoin:addr?req-pay=1").is_err());
        assert!(parse("bitcoin:addr?amount=1e5").is_err());
        assert!(parse("http://x").is_err());
        assert!(qr(&u).lines().count() > 10);
    }
}
