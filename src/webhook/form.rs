//! Form-encoded deliveries: GitHub's default content type (and an option of
//! Gitea, Forgejo and Gogs) is `application/x-www-form-urlencoded`, with the
//! JSON payload in the `payload` field. The signature covers the raw form
//! body, so this runs only after it verified; the field's JSON is then read
//! like any other payload.

use super::ParseError;
use axum::http::{HeaderMap, header};
use std::borrow::Cow;

/// The JSON bytes of a delivery: the body itself, or the decoded `payload`
/// field of a form-encoded body.
pub(super) fn json_body<'a>(
    headers: &HeaderMap,
    body: &'a [u8],
) -> Result<Cow<'a, [u8]>, ParseError> {
    if !is_form(headers) {
        return Ok(Cow::Borrowed(body));
    }
    for pair in body.split(|&b| b == b'&') {
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        if decode(key).as_deref() == Some(b"payload".as_slice()) {
            return decode(value).map(Cow::Owned).ok_or(ParseError::Form);
        }
    }
    Err(ParseError::Form)
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| {
            t.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// Percent-decoding with `+` as a space; `None` for a broken `%` escape.
fn decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = hex_digit(*s.get(i + 1)?)?;
                let lo = hex_digit(*s.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(out)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded; charset=utf-8"
                .parse()
                .unwrap(),
        );
        h
    }

    #[test]
    fn the_payload_field_is_decoded() {
        let got = json_body(&form(), b"x=1&payload=%7B%22a%22%3A+%22b%2Bc%22%7D").unwrap();
        assert_eq!(&*got, br#"{"a": "b+c"}"#);
    }

    #[test]
    fn json_bodies_pass_through_and_broken_forms_are_refused() {
        let body = br#"{"a":1}"#;
        assert_eq!(&*json_body(&HeaderMap::new(), body).unwrap(), body);
        assert_eq!(json_body(&form(), b"other=1"), Err(ParseError::Form));
        assert_eq!(json_body(&form(), b"payload=%zz"), Err(ParseError::Form));
        assert_eq!(json_body(&form(), b"payload=%4"), Err(ParseError::Form));
        assert_eq!(json_body(&form(), b""), Err(ParseError::Form));
    }
}
