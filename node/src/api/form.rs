//! The forms of the API's strings, as /openapi.json states them and as the routes check them.
//!
//! Invariants:
//! - Each `is_*` function accepts exactly the strings its pattern matches (the table test below runs both
//!   on the same cases), and [`constrain`] is the only place the patterns enter the document, so the routes
//!   and the document cannot drift apart.
//! - A string of the right form may still be refused with 422 (a node id not on the curve, an address with
//!   a bad checksum): the form is what a schema can say, not everything that is true.

/// Base58 of 32 bytes: 32 to 44 characters of the Bitcoin alphabet.
pub const NODE_ID: &str = "^[1-9A-HJ-NP-Za-km-z]{32,44}$";
pub fn is_node_id(s: &str) -> bool {
    (32..=44).contains(&s.len()) && s.bytes().all(is_base58)
}

/// `PROVIDER:OFFER_ID`.
pub const OFFER_KEY: &str = "^[1-9A-HJ-NP-Za-km-z]{32,44}:[0-9]{1,20}$";
pub fn is_offer_key(s: &str) -> bool {
    s.rsplit_once(':').is_some_and(|(p, id)| {
        is_node_id(p) && (1..=20).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit())
    })
}

/// An offer's label (image, GPU model): 1 to 64 printable ASCII characters.
pub const LABEL: &str = "^[ -~]{1,64}$";
pub fn is_label(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| (b' '..=b'~').contains(&b))
}

/// A region: up to 64 printable ASCII characters (may be empty).
pub const REGION: &str = "^[ -~]{0,64}$";
pub fn is_region(s: &str) -> bool {
    s.len() <= 64 && s.bytes().all(|b| (b' '..=b'~').contains(&b))
}

/// ISO 3166-1 alpha-2, upper case.
pub const COUNTRY: &str = "^[A-Z]{2}$";
pub fn is_country(s: &str) -> bool {
    s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase())
}

/// A pool's name: 1 to 64 letters, digits, `-`, `_` or `.`.
pub const POOL_NAME: &str = "^[A-Za-z0-9._-]{1,64}$";
pub fn is_pool_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Whole bytes in hex, at least one.
pub const HEX_BYTES: &str = "^([0-9a-fA-F]{2})+$";
pub fn is_hex_bytes(s: &str) -> bool {
    !s.is_empty() && s.len() % 2 == 0 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A transaction id: 64 hex characters.
pub const TXID: &str = "^[0-9a-fA-F]{64}$";
pub fn is_txid(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `txid:vout`.
/// (`vout` up to 9 digits: no transaction has a billion outputs, and every such number fits 32 bits.)
pub const OUTPOINT: &str = "^[0-9a-fA-F]{64}:[0-9]{1,9}$";
pub fn is_outpoint(s: &str) -> bool {
    s.split_once(':').is_some_and(|(t, v)| {
        is_txid(t) && (1..=9).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit())
    })
}

/// A bitcoin address: bech32 (`bc1…`, `tb1…`, `bcrt1…`) or base58, letters and digits only.
pub const ADDRESS: &str = "^[A-Za-z0-9]{14,90}$";
pub fn is_address(s: &str) -> bool {
    (14..=90).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Ports as the offer filter takes them: comma-separated, each 1 to 65535 (empty: no ports asked).
pub const PORT_LIST: &str = "^(([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])(,([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))*)?$";

pub fn is_port_list(s: &str) -> bool {
    s.is_empty()
        || s.split(',').all(|p| {
            !p.starts_with('0')
                && p.len() <= 5
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n))
        })
}

/// An architecture.
pub const ARCH: &str = "^(x86_64|aarch64|riscv64)$";

/// A node id or `me`.
pub const NODE_OR_ME: &str = "^(me|[1-9A-HJ-NP-Za-km-z]{32,44})$";

/// A BIP21 URI: `bitcoin:` (any case) and an address.
pub const BITCOIN_URI: &str = "^[bB][iI][tT][cC][oO][iI][nN]:[A-Za-z0-9]{14,90}([?][ -~]*)?$";
pub fn is_bitcoin_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    let (addr, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    scheme.eq_ignore_ascii_case("bitcoin")
        && is_address(addr)
        && query.is_none_or(|q| q.bytes().all(|b| (b' '..=b'~').contains(&b)))
}

/// One line of an OpenSSH public key: a key type, its base64 blob, an optional comment.
pub const SSH_KEY: &str = "^[ \\t]*(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521|sk-ssh-ed25519@openssh[.]com|sk-ecdsa-sha2-nistp256@openssh[.]com)[ \\t]+[A-Za-z0-9+/]+={0,2}([ \\t][^\\x00-\\x08\\x0a-\\x1f\\x7f]*)?$";

/// Writes into the document (as JSON) what the derive cannot: the forms of array items, and the rules
/// between fields (`hours` or `budget_sat`; `hours` or `sats`; `lock_blocks` or `locktime`).
pub fn constrain(doc: &mut serde_json::Value) {
    use serde_json::json;
    let port = json!({"type": "integer", "minimum": 1, "maximum": 65535});
    let items: [(&str, &str, serde_json::Value); 4] = [
        (
            "OfferSpec",
            "images",
            json!({"type": "string", "pattern": LABEL}),
        ),
        ("OfferSpec", "extra_ports", port.clone()),
        ("OrderRequest", "ports", port),
        (
            "CreatePool",
            "publishers",
            json!({"type": "string", "pattern": NODE_ID}),
        ),
    ];
    let fields: [(&str, &str, &str); 14] = [
        ("OfferSpec", "gpu_model", LABEL),
        ("OfferSpec", "arch", ARCH),
        ("OfferSpec", "country", COUNTRY),
        ("OfferSpec", "region", REGION),
        ("OrderRequest", "image", LABEL),
        ("OrderRequest", "ssh_public_key", SSH_KEY),
        ("OrderRequest", "refund_address", ADDRESS),
        ("OrderRequest", "offer", OFFER_KEY),
        ("CreatePool", "name", POOL_NAME),
        ("SendRequest", "address", ADDRESS),
        ("PayRequest", "uri", BITCOIN_URI),
        ("BumpRequest", "txid", TXID),
        ("ReceiptImport", "receipt_hex", HEX_BYTES),
        ("BondUnlock", "outpoint", OUTPOINT),
    ];
    let schemas = &mut doc["components"]["schemas"];
    for (schema, field, pattern) in fields {
        schemas[schema]["properties"][field]["pattern"] = json!(pattern);
    }
    for (schema, field, item) in items {
        schemas[schema]["properties"][field]["items"] = item;
    }
    let integer = json!({"type": "integer"});
    let absent = json!({"type": "null"});
    unsigned_ranges(doc);
    let params: [(&str, &str, &str, &str); 3] = [
        ("/v1/offers", "get", "ports", PORT_LIST),
        ("/v1/offers", "get", "arch", ARCH),
        ("/v1/trust/{node}", "get", "node", NODE_OR_ME),
    ];
    for (path, method, name, pattern) in params {
        if let Some(list) = doc["paths"][path][method]["parameters"].as_array_mut() {
            for p in list.iter_mut().filter(|p| p["name"] == name) {
                p["schema"]["pattern"] = json!(pattern);
            }
        }
    }
    // Where a created thing can be found next, for clients and for stateful API testers.
    let link = |op: &str, param: &str, pointer: &str, what: &str| json!({"operationId": op, "parameters": {param: format!("$response.body#/{pointer}")}, "description": what});
    doc["paths"]["/v1/orders"]["post"]["responses"]["201"]["links"] = json!({
        "GetLease": link("show_lease", "id", "id", "the lease ordered"),
        "ExtendLease": link("extend_lease", "id", "id", "pay for more of it"),
        "CancelLease": link("cancel_lease", "id", "id", "cancel it"),
    });
    doc["paths"]["/v1/offers"]["get"]["responses"]["200"]["links"] = json!({
        "OrderOffer": {
            "operationId": "order",
            "requestBody": {"offer": "$response.body#/0/key", "image": "$response.body#/0/images/0"},
            "description": "order the first offer listed, by its key (the rest of the order is the buyer's)",
        },
    });
    doc["paths"]["/v1/offers"]["post"]["responses"]["201"]["links"] = json!({
        "WithdrawOffer": link("withdraw_offer", "offer_id", "offer_id", "withdraw the offer published"),
    });
    let schemas = &mut doc["components"]["schemas"];
    schemas["OrderRequest"]["anyOf"] = json!([
        {"required": ["hours"], "properties": {"hours": {"minimum": 1}}},
        {"required": ["budget_sat"], "properties": {"budget_sat": integer}},
    ]);
    schemas["Extend"]["anyOf"] = json!([
        {"required": ["hours"], "properties": {"hours": {"minimum": 1}}},
        {"required": ["sats"], "properties": {"sats": integer}},
    ]);
    schemas["BondCreate"]["oneOf"] = json!([
        {"required": ["lock_blocks"], "properties": {"lock_blocks": integer, "locktime": absent}},
        {"required": ["locktime"], "properties": {"locktime": integer, "lock_blocks": absent}},
    ]);
}

/// The derive writes an unsigned integer as `format: int32` or `int64` with `minimum: 0`; the formats mean
/// *signed* ranges, so a client would stop at 2^31 - 1 where a `u32` goes on to 2^32 - 1. Each such
/// integer without a stated maximum gets its type's, in place of the format.
fn unsigned_ranges(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            let unsigned = map
                .get("minimum")
                .and_then(|m| m.as_f64())
                .is_some_and(|m| m >= 0.0);
            let max = match map.get("format").and_then(|f| f.as_str()) {
                Some("int32") if unsigned => Some(serde_json::json!(u32::MAX)),
                Some("int64") if unsigned => Some(serde_json::json!(u64::MAX)),
                _ => None,
            };
            if let Some(max) = max {
                map.remove("format");
                map.entry("maximum").or_insert(max);
            }
            map.values_mut().for_each(unsigned_ranges);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(unsigned_ranges),
        _ => {}
    }
}

fn is_base58(b: u8) -> bool {
    matches!(b, b'1'..=b'9' | b'A'..=b'H' | b'J'..=b'N' | b'P'..=b'Z' | b'a'..=b'k' | b'm'..=b'z')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each checker agrees with its documented pattern, on strings either side of the line.
    #[test]
    fn checkers_agree_with_the_documented_patterns() {
        type Check = fn(&str) -> bool;
        let id = "EDzN4pz3rsuYrFtAnd2PmS1291pdq5sD6ZRvezPkmw3b";
        let txid = "a".repeat(64);
        let cases: Vec<(&str, &str, Check, String)> = vec![
            ("node id", NODE_ID, is_node_id, id.into()),
            ("node id with 0", NODE_ID, is_node_id, id.replace('E', "0")),
            ("node id too short", NODE_ID, is_node_id, id[..31].into()),
            ("offer key", OFFER_KEY, is_offer_key, format!("{id}:3")),
            ("offer key no id", OFFER_KEY, is_offer_key, format!("{id}:")),
            (
                "offer key minus",
                OFFER_KEY,
                is_offer_key,
                format!("{id}:-3"),
            ),
            ("label", LABEL, is_label, "debian-12".into()),
            ("label empty", LABEL, is_label, String::new()),
            ("label unicode", LABEL, is_label, "débian".into()),
            ("label tab", LABEL, is_label, "a\tb".into()),
            ("label 65", LABEL, is_label, "a".repeat(65)),
            ("region empty", REGION, is_region, String::new()),
            ("region", REGION, is_region, "eu-west 1".into()),
            ("country", COUNTRY, is_country, "DE".into()),
            ("country lower", COUNTRY, is_country, "de".into()),
            ("pool", POOL_NAME, is_pool_name, "gpu.eu_1-a".into()),
            ("pool space", POOL_NAME, is_pool_name, "gpu eu".into()),
            ("hex", HEX_BYTES, is_hex_bytes, "00aB".into()),
            ("hex odd", HEX_BYTES, is_hex_bytes, "0aB".into()),
            ("hex empty", HEX_BYTES, is_hex_bytes, String::new()),
            ("txid", TXID, is_txid, txid.clone()),
            ("txid short", TXID, is_txid, txid[..63].into()),
            ("outpoint", OUTPOINT, is_outpoint, format!("{txid}:0")),
            (
                "outpoint no vout",
                OUTPOINT,
                is_outpoint,
                format!("{txid}:"),
            ),
            (
                "address",
                ADDRESS,
                is_address,
                "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080".into(),
            ),
            (
                "address dash",
                ADDRESS,
                is_address,
                "bcrt1-qw508d6qejxtdg4y5r3".into(),
            ),
            (
                "uri",
                BITCOIN_URI,
                is_bitcoin_uri,
                "BITCOIN:bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080?amount=1".into(),
            ),
            (
                "ports",
                PORT_LIST,
                |s| is_port_list(s),
                "80,443,65535".into(),
            ),
            ("ports empty", PORT_LIST, |s| is_port_list(s), String::new()),
            (
                "ports 65536",
                PORT_LIST,
                |s| is_port_list(s),
                "80,65536".into(),
            ),
            ("ports 0", PORT_LIST, |s| is_port_list(s), "0".into()),
            (
                "ports trailing comma",
                PORT_LIST,
                |s| is_port_list(s),
                "80,".into(),
            ),
            (
                "uri other scheme",
                BITCOIN_URI,
                is_bitcoin_uri,
                "litecoin:bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080".into(),
            ),
        ];
        for (name, pattern, check, s) in cases {
            let re = regex::Regex::new(pattern).unwrap();
            assert_eq!(check(&s), re.is_match(&s), "{name}: {s:?}");
        }
    }
}
