//! The signature schemes hosts share: HMAC over the body with a hex digest
//! (GitHub, Gitea, Gogs, Bitbucket), a shared token (GitLab), and Standard
//! Webhooks (generic senders, newer GitLab).
//!
//! Every comparison is constant time: digests through [`Mac::verify_slice`],
//! tokens through [`ConstantTimeEq`] on their SHA-256 digests, so that
//! neither content nor length leaks. Nothing here panics on header input.

use super::VerifyError;
use crate::secret::Secret;
use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::time::{SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;
type HmacSha1 = Hmac<Sha1>;

/// How far a Standard Webhooks timestamp may be from now, either way.
const TOLERANCE_SECS: u64 = 5 * 60;

/// A header's value as text; `Malformed` when it is not visible ASCII.
pub(super) fn header<'a>(
    headers: &'a HeaderMap,
    name: &str,
) -> Result<Option<&'a str>, VerifyError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| VerifyError::Malformed),
    }
}

/// The first of `names` present in `headers`, with its value.
pub(super) fn first_header<'a>(
    headers: &'a HeaderMap,
    names: &[&'static str],
) -> Result<Option<(&'static str, &'a str)>, VerifyError> {
    for &name in names {
        if let Some(value) = header(headers, name)? {
            return Ok(Some((name, value)));
        }
    }
    Ok(None)
}

fn mac_sha256(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` never fails for it.
    <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts any key length")
}

/// The lowercase hex HMAC-SHA256 of `body` under `secret`.
pub(super) fn hmac_sha256_hex(secret: &Secret, body: &[u8]) -> String {
    let mut mac = mac_sha256(secret.expose().as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Decodes a hex digest; `Malformed` for anything but an even number of hex digits.
fn decode_hex(value: &str) -> Result<Vec<u8>, VerifyError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(VerifyError::Malformed);
    }
    hex::decode(value).map_err(|_| VerifyError::Malformed)
}

/// Checks a bare hex HMAC-SHA256 of the body (Gitea, Gogs).
pub(super) fn verify_hex_sha256(
    value: &str,
    secret: &Secret,
    body: &[u8],
) -> Result<(), VerifyError> {
    let expected = decode_hex(value)?;
    let mut mac = mac_sha256(secret.expose().as_bytes());
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| VerifyError::Mismatch)
}

/// Checks a `sha256=HEX` HMAC-SHA256 of the body (GitHub, Bitbucket).
pub(super) fn verify_prefixed_sha256(
    value: &str,
    secret: &Secret,
    body: &[u8],
) -> Result<(), VerifyError> {
    let hex = value
        .trim()
        .strip_prefix("sha256=")
        .ok_or(VerifyError::Malformed)?;
    verify_hex_sha256(hex, secret, body)
}

/// Checks a legacy `sha1=HEX` HMAC-SHA1 of the body (GitHub's `X-Hub-Signature`).
pub(super) fn verify_prefixed_sha1(
    value: &str,
    secret: &Secret,
    body: &[u8],
) -> Result<(), VerifyError> {
    let hex = value
        .trim()
        .strip_prefix("sha1=")
        .ok_or(VerifyError::Malformed)?;
    let expected = decode_hex(hex)?;
    let mut mac = <HmacSha1 as Mac>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC accepts any key length");
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| VerifyError::Mismatch)
}

/// Checks a token that is the secret itself (GitLab's `X-Gitlab-Token`).
/// Both sides are hashed first so the comparison takes the same time
/// whatever the token's length.
pub(super) fn verify_token(value: &str, secret: &Secret) -> Result<(), VerifyError> {
    let given = Sha256::digest(value.as_bytes());
    let wanted = Sha256::digest(secret.expose().as_bytes());
    if bool::from(given.ct_eq(&wanted)) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// The Standard Webhooks signing key: the base64 after `whsec_`, or the
/// secret's own bytes when it has no such prefix (or is not base64 after it,
/// so that signing and verifying always agree on the key).
fn standard_webhooks_key(secret: &Secret) -> Vec<u8> {
    let raw = secret.expose();
    raw.strip_prefix("whsec_")
        .and_then(|b64| BASE64.decode(b64).ok())
        .unwrap_or_else(|| raw.as_bytes().to_vec())
}

fn standard_webhooks_mac(secret: &Secret, msg_id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = mac_sha256(&standard_webhooks_key(secret));
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `webhook-signature` value (`v1,BASE64`) a Standard Webhooks sender
/// puts on `body` sent as message `msg_id` at `timestamp` (unix seconds).
pub fn standard_webhooks_signature(
    secret: &Secret,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    let mac = standard_webhooks_mac(secret, msg_id, timestamp, body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// Unix seconds of `t`; negative before 1970.
pub(super) fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// Checks a Standard Webhooks delivery: `webhook-id`, `webhook-timestamp`
/// within five minutes of `now`, and a `webhook-signature` list of which any
/// `v1` entry matches. Entries of other versions are skipped.
pub(super) fn verify_standard_webhooks(
    headers: &HeaderMap,
    body: &[u8],
    secret: &Secret,
    now: SystemTime,
) -> Result<(), VerifyError> {
    let signatures = header(headers, "webhook-signature")?.ok_or(VerifyError::Missing)?;
    let msg_id = header(headers, "webhook-id")?
        .filter(|id| !id.is_empty())
        .ok_or(VerifyError::Malformed)?;
    let timestamp: i64 = header(headers, "webhook-timestamp")?
        .and_then(|t| t.trim().parse().ok())
        .ok_or(VerifyError::Malformed)?;
    if unix_seconds(now).abs_diff(timestamp) > TOLERANCE_SECS {
        return Err(VerifyError::Stale);
    }
    let mac = standard_webhooks_mac(secret, msg_id, timestamp, body);
    let mut saw_v1 = false;
    for entry in signatures.split_ascii_whitespace() {
        let Some(("v1", b64)) = entry.split_once(',') else {
            continue;
        };
        let Ok(given) = BASE64.decode(b64) else {
            continue;
        };
        saw_v1 = true;
        if mac.clone().verify_slice(&given).is_ok() {
            return Ok(());
        }
    }
    Err(if saw_v1 {
        VerifyError::Mismatch
    } else {
        VerifyError::Malformed
    })
}

/// The three Standard Webhooks headers for `body` sent at `now`; the
/// message id is derived from the body so that re-signing the same body
/// gives the same id.
pub(super) fn standard_webhooks_headers(
    secret: &Secret,
    body: &[u8],
    now: SystemTime,
) -> Vec<(String, String)> {
    let digest = Sha256::digest(body);
    let msg_id = format!("msg_{}", hex::encode(&digest[..12]));
    let timestamp = unix_seconds(now);
    let signature = standard_webhooks_signature(secret, &msg_id, timestamp, body);
    vec![
        ("webhook-id".to_owned(), msg_id),
        ("webhook-timestamp".to_owned(), timestamp.to_string()),
        ("webhook-signature".to_owned(), signature),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_github_docs_example_signature_verifies() {
        let secret = Secret::new("It's a Secret to Everybody");
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(
            verify_prefixed_sha256(sig, &secret, b"Hello, World!"),
            Ok(())
        );
        assert_eq!(
            hmac_sha256_hex(&secret, b"Hello, World!"),
            sig.trim_start_matches("sha256=")
        );
    }

    #[test]
    fn the_standard_webhooks_reference_signature_is_reproduced() {
        let secret = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let sig = standard_webhooks_signature(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_token_matches_only_the_exact_secret() {
        let secret = Secret::new("s3cret");
        assert_eq!(verify_token("s3cret", &secret), Ok(()));
        assert_eq!(verify_token("s3cret ", &secret), Err(VerifyError::Mismatch));
        assert_eq!(verify_token("", &secret), Err(VerifyError::Mismatch));
    }

    #[test]
    fn malformed_digests_are_refused_without_panicking() {
        let secret = Secret::new("k");
        for bad in ["", "zz", "abc", "sha1=00", " "] {
            assert_eq!(
                verify_prefixed_sha256(bad, &secret, b""),
                Err(VerifyError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            verify_hex_sha256("00", &secret, b""),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn times_before_1970_do_not_overflow() {
        let t = UNIX_EPOCH - std::time::Duration::from_secs(10);
        assert_eq!(unix_seconds(t), -10);
        assert_eq!(unix_seconds(UNIX_EPOCH), 0);
    }
}
