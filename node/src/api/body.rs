//! Reading JSON request bodies the way /openapi.json describes them.
//!
//! Invariants:
//! - A body that is not JSON, or JSON whose shape the document forbids (a field missing, unknown, of the
//!   wrong type, a number out of its type's range), is answered 400 `bad_body`, naming the field by its path
//!   (`images[2]`, `hours`). 415 when `Content-Type: application/json` is missing. 422 is left to the
//!   routes: a body the document allows whose content is still wrong (a checksum, a signature, a key that is
//!   not on the curve).
//! - JSON Schema's `integer` is a number with no fractional part, however it is spelled: `3`, `3.0` and
//!   `3e0` are the same integer and are read alike, exactly (decimal arithmetic on the literal). A fraction
//!   (`3.5`) is not an integer and is refused where an integer is due.
//! - The body is parsed once into a tree, bounded by the router's body limit (64 KiB).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::ApiError;

/// A JSON request body, read as the API document says (see the module's invariants).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "bad_body",
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), "bad_body", e.body_text()))?;
        parse(&bytes).map(ApiJson)
    }
}

fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || (essence.len() > 5 && essence[..essence.len() - 5].contains('/')
            && essence.to_ascii_lowercase().ends_with("+json"))
}

/// The body's bytes as a `T`: 400 with the field's path when they are not JSON or not of `T`'s shape.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text = whole_numbers_as_integers(bytes);
    let value: Value = serde_json::from_slice(&text).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            format!("the body is not JSON: {e}"),
        )
    })?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = if path == "." {
            format!("the body does not have the documented shape: {inner}")
        } else {
            format!("{path}: {inner}")
        };
        ApiError::new(StatusCode::BAD_REQUEST, "bad_body", message)
    })
}

/// Rewrites, in the JSON text, every number literal whose value is a whole number (`3.0`, `1e3`, `1.50e1`)
/// as that integer's digits, exactly (decimal arithmetic on the literal, no float in between: a float would
/// turn `2099999999999999.0` into `2099999999999999.2`). Fractions, and integers of more than 40 digits
/// (no field holds one), are left as written. Strings are copied untouched.
pub fn whole_numbers_as_integers(json: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    let mut i = 0;
    let mut copied = 0;
    while i < json.len() {
        match json[i] {
            b'"' => {
                i += 1;
                while i < json.len() && json[i] != b'"' {
                    i += if json[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < json.len() && matches!(json[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') {
                    i += 1;
                }
                let literal = &json[start..i];
                if let Some(integer) = whole(literal) {
                    let o = out.get_or_insert_with(|| Vec::with_capacity(json.len()));
                    o.extend_from_slice(&json[copied..start]);
                    o.extend_from_slice(integer.as_bytes());
                    copied = i;
                }
            }
            _ => i += 1,
        }
    }
    match out {
        None => std::borrow::Cow::Borrowed(json),
        Some(mut o) => {
            o.extend_from_slice(&json[copied.min(json.len())..]);
            std::borrow::Cow::Owned(o)
        }
    }
}

/// The integer a JSON number literal spells, when it has a fraction or exponent and is whole.
fn whole(literal: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(literal).ok()?;
    let (negative, text) = match text.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, text),
    };
    let (mantissa, exp) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], text[at + 1..].parse::<i64>().ok()?),
        None => (text, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if frac.is_empty() && exp == 0 {
        return None; // already an integer literal
    }
    if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    // value = digits × 10^shift
    let mut digits = format!("{int}{frac}");
    let mut shift = exp.checked_sub(frac.len() as i64)?;
    while shift < 0 && digits.ends_with('0') && digits.len() > 1 {
        digits.pop();
        shift += 1;
    }
    if shift < 0 {
        return None; // a fraction
    }
    let digits = digits.trim_start_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    if digits == "0" {
        // `-0` would read as the float -0.0; zero has no sign.
        return Some("0".into());
    }
    if digits.len() as i64 + shift > 40 {
        return None;
    }
    let zeros = "0".repeat(shift as usize);
    Some(format!("{}{digits}{zeros}", if negative { "-" } else { "" }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Shape {
        hours: u32,
        #[serde(default)]
        sats: Option<u64>,
        #[serde(default)]
        ports: Vec<u16>,
        #[serde(default)]
        slice_hours: Option<f64>,
    }

    #[test]
    fn integers_are_read_however_they_are_spelled() {
        let cases: &[(&str, &str, Shape)] = &[
            (
                "plain",
                r#"{"hours": 3}"#,
                Shape { hours: 3, sats: None, ports: vec![], slice_hours: None },
            ),
            (
                "trailing .0",
                r#"{"hours": 3.0, "sats": 1000000000001.0}"#,
                Shape { hours: 3, sats: Some(1_000_000_000_001), ports: vec![], slice_hours: None },
            ),
            (
                "exponent",
                r#"{"hours": 1e1, "ports": [8.0e1, 443]}"#,
                Shape { hours: 10, sats: None, ports: vec![80, 443], slice_hours: None },
            ),
            (
                "large, exactly (a float would read ...999.2)",
                r#"{"hours": 0, "sats": 2099999999999999.0}"#,
                Shape { hours: 0, sats: Some(2_099_999_999_999_999), ports: vec![], slice_hours: None },
            ),
            (
                "fraction digits that cancel",
                r#"{"hours": 1.50e1, "ports": [4.43E2], "sats": -0.0e5}"#,
                Shape { hours: 15, sats: Some(0), ports: vec![443], slice_hours: None },
            ),
            (
                "a float field given a whole number",
                r#"{"hours": 2, "slice_hours": 1.0}"#,
                Shape { hours: 2, sats: None, ports: vec![], slice_hours: Some(1.0) },
            ),
            (
                "a float field keeps its fraction",
                r#"{"hours": 1, "slice_hours": 0.5}"#,
                Shape { hours: 1, sats: None, ports: vec![], slice_hours: Some(0.5) },
            ),
        ];
        for (name, body, want) in cases {
            let got: Shape = parse(body.as_bytes()).unwrap_or_else(|e| panic!("{name}: {}", e.message));
            assert_eq!(&got, want, "{name}");
        }
    }

    #[test]
    fn what_the_document_forbids_is_a_400_naming_the_field() {
        let cases: &[(&str, &str, &str)] = &[
            ("a fraction is not an integer", r#"{"hours": 1.5}"#, "hours"),
            ("a small fraction", r#"{"hours": 1.000000000000000001}"#, "hours"),
            ("negative", r#"{"hours": -1}"#, "hours"),
            ("too large for the type", r#"{"hours": 4294967296}"#, "hours"),
            ("inside an array", r#"{"hours": 1, "ports": [80, 70000]}"#, "ports[1]"),
            ("unknown field", r#"{"hours": 1, "minutes": 3}"#, "minutes"),
            ("missing field", r#"{}"#, "hours"),
            ("not JSON", r#"{"hours": "#, "not JSON"),
        ];
        for (name, body, names) in cases {
            let e = parse::<Shape>(body.as_bytes()).expect_err(name);
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{name}");
            assert_eq!(e.error, "bad_body", "{name}");
            assert!(e.message.contains(names), "{name}: {}", e.message);
        }
    }

    #[test]
    fn strings_pass_through_untouched() {
        let body = br#"{"a": "1.0 \" 2.0", "b": 3.0}"#;
        let out = whole_numbers_as_integers(body);
        assert_eq!(&*out, br#"{"a": "1.0 \" 2.0", "b": 3}"#);
        let plain = br#"{"a": [1, 2, "x"]}"#;
        assert!(matches!(whole_numbers_as_integers(plain), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn json_content_types_are_recognised() {
        let cases = [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("application/problem+json", true),
            ("text/plain", false),
            ("application/jsonx", false),
        ];
        for (ct, want) in cases {
            let mut h = axum::http::HeaderMap::new();
            h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            assert_eq!(is_json(&h), want, "{ct}");
        }
        assert!(!is_json(&axum::http::HeaderMap::new()), "no header");
    }
}
