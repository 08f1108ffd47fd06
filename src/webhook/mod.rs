//! Webhook deliveries: host detection, signature verification, and parsing
//! every host's payload into host-neutral [`PushEvent`]s.
//!
//! One file per host. This module owns no I/O and no state: it takes headers
//! and bytes, and returns a verdict or events. It never decides what builds
//! (that is [`crate::pipeline::matcher`]) and never touches the store.

mod event;

pub use event::{Host, Parsed, ParsedKind, PushEvent, RefKind, ZERO_SHA};

use crate::secret::Secret;
use axum::http::HeaderMap;
use std::time::SystemTime;

/// Why a signature check failed. Every variant is the caller's doing (401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No signature (or token) header the host would send.
    #[error("the delivery has no signature")]
    Missing,
    /// A signature header is present but is not of the host's form.
    #[error("the signature header is malformed")]
    Malformed,
    /// The signature does not match the body and the pipeline's secret.
    #[error("the signature does not match")]
    Mismatch,
    /// A Standard Webhooks timestamp outside the 5-minute window.
    #[error("the delivery's timestamp is outside the allowed window")]
    Stale,
    /// Only a legacy SHA-1 signature was sent and the pipeline does not allow it.
    #[error("the delivery is signed with SHA-1 only; set allow_sha1 = true to accept it")]
    Sha1NotAllowed,
}

/// Why a payload could not be read. Every variant is the caller's doing (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The body is not JSON (or not UTF-8, or nested too deeply).
    #[error("the body is not valid JSON")]
    Json,
    /// A field the host always sends is missing or of the wrong type.
    #[error("the payload has no valid {0}")]
    Missing(&'static str),
}

/// Which host sent a delivery, from its headers alone. Forgejo, then Gitea,
/// then Gogs are checked before GitHub, since they send GitHub's headers too.
/// `None` when no known host's event header is present.
pub fn detect(headers: &HeaderMap) -> Option<Host> {
    let _ = headers;
    None
}

/// Checks a delivery's signature (or GitLab token) against the pipeline's
/// secret, in constant time. `now` bounds Standard Webhooks timestamps.
pub fn verify(
    host: Host,
    headers: &HeaderMap,
    body: &[u8],
    secret: &Secret,
    allow_sha1: bool,
    now: SystemTime,
) -> Result<(), VerifyError> {
    let _ = (host, headers, body, secret, allow_sha1, now);
    Err(VerifyError::Missing)
}

/// The delivery's id: the host's delivery header where it sends one, else a
/// digest of the body, so a redelivery of the same bytes is still recognised.
pub fn delivery_id(host: Host, headers: &HeaderMap, body: &[u8]) -> String {
    let _ = (host, headers, body);
    String::new()
}

/// Reads a delivery's payload into events.
pub fn parse(host: Host, headers: &HeaderMap, body: &[u8]) -> Result<Parsed, ParseError> {
    let _ = (host, headers, body);
    Err(ParseError::Json)
}

/// The signature header(s) `host` would send for `body` signed with
/// `secret`, as `(name, value)` pairs (for `hookci sign`).
pub fn sign(host: Host, secret: &Secret, body: &[u8], now: SystemTime) -> Vec<(String, String)> {
    let _ = (host, secret, body, now);
    Vec::new()
}
