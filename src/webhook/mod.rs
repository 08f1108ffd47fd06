//! Webhook deliveries: host detection, signature verification, and parsing
//! every host's payload into host-neutral [`PushEvent`]s.
//!
//! One file per host. This module owns no I/O and no state: it takes headers
//! and bytes, and returns a verdict or events. It never decides what builds
//! (that is [`crate::pipeline::matcher`]) and never touches the store.
//!
//! Files: `github`, `gitlab`, `gitea` (Gitea, Forgejo and Gogs share a
//! shape), `bitbucket` (Cloud, and the signature check Server shares),
//! `bitbucket_server`, `generic` (Standard Webhooks senders); `signature`
//! holds the shared HMAC, token and Standard Webhooks code, `json` the
//! lenient readers the payload structs are built with.
//!
//! Invariant: no input (headers or body) makes this module panic; every
//! refusal is a [`VerifyError`] or [`ParseError`], and every signature or
//! token comparison is constant time.

mod bitbucket;
mod bitbucket_server;
mod event;
mod form;
mod generic;
mod gitea;
mod github;
mod gitlab;
mod json;
mod signature;

pub use crate::model::{
    CommitId, Host, PullRequest, PullRequestClosed, PushEvent, RefKind, ZERO_SHA,
};
pub use event::{Parsed, ParsedKind};
pub use signature::standard_webhooks_signature;

use crate::secret::Secret;
use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
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
    /// A pull request number that is not a positive integer.
    #[error("the payload's pull request number is not a positive integer")]
    BadNumber,
    /// A ref that git would not accept as a name (control characters,
    /// `..`, a trailing `.lock`, ...).
    #[error("the payload's ref is not a valid git ref name")]
    BadRef,
    /// A form-encoded body without a decodable `payload` field.
    #[error(
        "the form-encoded body has no valid payload field; set the webhook's content type to application/json"
    )]
    Form,
}

/// Which host sent a delivery, from its headers alone. Forgejo, then Gitea,
/// then Gogs are checked before GitHub, since they send GitHub's headers too.
/// `None` when no known host's event header is present.
pub fn detect(headers: &HeaderMap) -> Option<Host> {
    let has = |name: &str| headers.contains_key(name);
    if has("x-forgejo-event") {
        Some(Host::Forgejo)
    } else if has("x-gitea-event") {
        Some(Host::Gitea)
    } else if has("x-gogs-event") {
        Some(Host::Gogs)
    } else if has("x-github-event") {
        Some(Host::Github)
    } else if has("x-gitlab-event") {
        Some(Host::Gitlab)
    } else if let Some(key) = headers.get("x-event-key") {
        // Bitbucket Cloud sends X-Request-UUID, Server X-Request-Id; with
        // neither, Server's own event key decides, and Cloud is the default.
        let server_key = key.as_bytes().starts_with(b"repo:refs_changed");
        if has("x-request-uuid") {
            Some(Host::Bitbucket)
        } else if server_key || has("x-request-id") {
            Some(Host::BitbucketServer)
        } else {
            Some(Host::Bitbucket)
        }
    } else if has("webhook-id") && has("webhook-signature") {
        Some(Host::Generic)
    } else {
        None
    }
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
    // An empty key would make every signature forgeable; resolved secrets
    // are never empty, so this only guards against misuse.
    if secret.expose().is_empty() {
        return Err(VerifyError::Mismatch);
    }
    match host {
        Host::Github => github::verify(headers, body, secret, allow_sha1),
        Host::Gitlab => gitlab::verify(headers, body, secret, now),
        Host::Gitea | Host::Forgejo | Host::Gogs => gitea::verify(host, headers, body, secret),
        Host::Bitbucket | Host::BitbucketServer => bitbucket::verify(headers, body, secret),
        Host::Generic => signature::verify_standard_webhooks(headers, body, secret, now),
    }
}

/// The longest delivery header kept as the delivery's id.
const MAX_DELIVERY_ID: usize = 200;

/// The delivery's id: the host's delivery header where it sends one, else a
/// digest of the body, so a redelivery of the same bytes is still recognised.
pub fn delivery_id(host: Host, headers: &HeaderMap, body: &[u8]) -> String {
    // Only headers that name one delivery (and keep it across the host's
    // retries) qualify: Bitbucket's X-Hook-UUID names the hook, not the
    // delivery, so it would make every later delivery look like a repeat.
    let names: &[&str] = match host {
        Host::Github => &["x-github-delivery"],
        Host::Gitlab => &["x-gitlab-event-uuid", "x-gitlab-webhook-uuid"],
        Host::Gitea => &["x-gitea-delivery"],
        Host::Forgejo => &["x-forgejo-delivery", "x-gitea-delivery"],
        Host::Gogs => &["x-gogs-delivery"],
        Host::Bitbucket => &["x-request-uuid"],
        Host::BitbucketServer => &["x-request-id"],
        Host::Generic => &["webhook-id"],
    };
    names
        .iter()
        .filter_map(|name| headers.get(*name))
        .filter_map(|value| value.to_str().ok())
        .map(str::trim)
        .find(|id| {
            !id.is_empty()
                && id.len() <= MAX_DELIVERY_ID
                && id.bytes().all(|b| (b' '..=b'~').contains(&b))
        })
        .map_or_else(
            || format!("sha256:{}", hex::encode(Sha256::digest(body))),
            str::to_owned,
        )
}

/// Reads a delivery's payload into events.
pub fn parse(host: Host, headers: &HeaderMap, body: &[u8]) -> Result<Parsed, ParseError> {
    let body = &*form::json_body(headers, body)?;
    let parsed = match host {
        Host::Github => github::parse(headers, body),
        Host::Gitlab => gitlab::parse(headers, body),
        Host::Gitea | Host::Forgejo | Host::Gogs => gitea::parse(host, headers, body),
        Host::Bitbucket => bitbucket::parse(headers, body),
        Host::BitbucketServer => bitbucket_server::parse(headers, body),
        Host::Generic => generic::parse(body),
    }?;
    // A ref reaches the store, the log and the steps' environment: only
    // names git itself accepts (no control characters, no `..`, ...).
    let refs: Vec<&str> = match &parsed.kind {
        ParsedKind::Pushes(events) => events.iter().map(|e| e.git_ref.as_str()).collect(),
        ParsedKind::PullRequest(e) => {
            let pr = e.pull_request.as_ref();
            let branches = pr.map(|p| [p.base_branch.as_str(), p.head_branch.as_str()]);
            let mut refs = vec![e.git_ref.as_str()];
            refs.extend(branches.into_iter().flatten());
            refs
        }
        ParsedKind::PullRequestClosed(c) => vec![c.git_ref.as_str()],
        ParsedKind::Ping | ParsedKind::Ignored(_) => Vec::new(),
    };
    // A pull request's branches are short names: checked as refs/heads/NAME.
    let valid = |r: &&str| {
        if r.starts_with("refs/") {
            valid_ref(r)
        } else {
            valid_ref(&format!("refs/heads/{r}"))
        }
    };
    if !refs.iter().all(valid) {
        return Err(ParseError::BadRef);
    }
    Ok(parsed)
}

/// True for a full ref name git accepts (`git check-ref-format` rules).
/// Pure: libgit2 checks the string, nothing is read.
pub fn valid_ref(name: &str) -> bool {
    git2::Reference::is_valid_name(name)
}

/// The signature header(s) `host` would send for `body` signed with
/// `secret`, as `(name, value)` pairs (for `hookci sign`).
pub fn sign(host: Host, secret: &Secret, body: &[u8], now: SystemTime) -> Vec<(String, String)> {
    let pair = |name: &str, value: String| vec![(name.to_owned(), value)];
    let hex = || signature::hmac_sha256_hex(secret, body);
    match host {
        Host::Github => pair("X-Hub-Signature-256", format!("sha256={}", hex())),
        Host::Gitlab => pair("X-Gitlab-Token", secret.expose().to_owned()),
        Host::Gitea => pair("X-Gitea-Signature", hex()),
        Host::Forgejo => pair("X-Forgejo-Signature", hex()),
        Host::Gogs => pair("X-Gogs-Signature", hex()),
        Host::Bitbucket | Host::BitbucketServer => {
            pair("X-Hub-Signature", format!("sha256={}", hex()))
        }
        Host::Generic => signature::standard_webhooks_headers(secret, body, now),
    }
}

/// A header's value as text, when present and visible ASCII.
fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The event header `name`, which every delivery of its host carries;
/// `label` names it in the error ("X-GitHub-Event header").
fn event_header<'a>(
    headers: &'a HeaderMap,
    name: &str,
    label: &'static str,
) -> Result<&'a str, ParseError> {
    header_str(headers, name)
        .filter(|e| !e.is_empty())
        .ok_or(ParseError::Missing(label))
}

/// A field that must be an object id: 4 to 64 hex digits (Bitbucket may
/// send abbreviated ids), as a [`CommitId`].
fn sha(value: Option<String>, field: &'static str) -> Result<CommitId, ParseError> {
    value
        .and_then(|s| CommitId::parse(&s).ok())
        .ok_or(ParseError::Missing(field))
}

/// A pull request number: a positive integer (some hosts send it as text).
fn pr_number(value: Option<&serde_json::Value>) -> Result<u64, ParseError> {
    let n = match value {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) if s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()
        }
        _ => None,
    };
    n.filter(|&n| n > 0 && n <= i64::MAX as u64)
        .ok_or(ParseError::BadNumber)
}

/// A pull request's head commit: a full object id (40 or 64 hex digits).
fn pr_sha(value: Option<String>, field: &'static str) -> Result<CommitId, ParseError> {
    value
        .and_then(|s| CommitId::parse(&s).ok())
        .filter(|c| c.is_full() && !c.is_zero())
        .ok_or(ParseError::Missing(field))
}

/// A pull request as a host reports it, before the rules every host
/// shares are applied by [`PullUpdate::into_event`].
#[derive(Debug, Default)]
struct PullUpdate {
    /// The base repository's full name.
    repo: String,
    /// The ref the head commit is fetched by.
    git_ref: String,
    /// The head commit; `None` where the host names none (Gogs).
    head: Option<CommitId>,
    /// The base branch's commit, where the host sends it.
    base_sha: Option<CommitId>,
    clone_url: String,
    ssh_url: Option<String>,
    web_url: Option<String>,
    pr: PullRequest,
}

impl PullUpdate {
    fn into_event(self) -> PushEvent {
        PushEvent {
            repo: self.repo,
            git_ref: self.git_ref,
            kind: RefKind::Other,
            before: self.base_sha.unwrap_or(CommitId::ZERO),
            after: self.head.clone().unwrap_or(CommitId::ZERO),
            commit: self.head,
            created: false,
            deleted: false,
            forced: false,
            clone_url: self.clone_url,
            ssh_url: self.ssh_url.filter(|s| !s.is_empty()),
            web_url: self.web_url.filter(|s| !s.is_empty()),
            message: String::new(),
            pusher: self.pr.author.clone(),
            pull_request: Some(self.pr),
        }
    }
}

/// A string field the host always sends, non-empty.
fn required(value: Option<String>, field: &'static str) -> Result<String, ParseError> {
    value
        .filter(|s| !s.is_empty())
        .ok_or(ParseError::Missing(field))
}

/// One ref update as a host reports it, before the rules every host shares
/// are applied by [`RefUpdate::into_event`].
#[derive(Debug)]
struct RefUpdate {
    repo: String,
    git_ref: String,
    before: CommitId,
    after: CommitId,
    /// The commit the ref now names, where the host says so and it may
    /// differ from `after` (the tagged commit of an annotated tag).
    head: Option<CommitId>,
    /// The host says the ref was created (else inferred from `before`).
    created: bool,
    /// The host says the ref was deleted (else inferred from `after`).
    deleted: bool,
    forced: bool,
    clone_url: String,
    ssh_url: Option<String>,
    web_url: Option<String>,
    message: String,
    pusher: String,
}

impl RefUpdate {
    fn into_event(self) -> PushEvent {
        let created = self.created || self.before.is_zero();
        let deleted = self.deleted || self.after.is_zero();
        let commit = if deleted {
            None
        } else {
            Some(self.head.unwrap_or_else(|| self.after.clone()))
        };
        PushEvent {
            kind: RefKind::of(&self.git_ref),
            repo: self.repo,
            git_ref: self.git_ref,
            before: self.before,
            after: self.after,
            commit,
            created,
            deleted,
            forced: self.forced,
            clone_url: self.clone_url,
            ssh_url: self.ssh_url.filter(|s| !s.is_empty()),
            web_url: self.web_url.filter(|s| !s.is_empty()),
            message: self.message,
            pusher: self.pusher,
            pull_request: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            let name = HeaderName::from_bytes(k.as_bytes()).unwrap();
            h.insert(name, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn gitea_family_is_detected_before_github() {
        let h = headers(&[
            ("X-GitHub-Event", "push"),
            ("X-Gogs-Event", "push"),
            ("X-Gitea-Event", "push"),
        ]);
        assert_eq!(detect(&h), Some(Host::Gitea));
        let h = headers(&[("X-Gitea-Event", "push"), ("X-Forgejo-Event", "push")]);
        assert_eq!(detect(&h), Some(Host::Forgejo));
        let h = headers(&[("X-GitHub-Event", "push"), ("X-Gogs-Event", "push")]);
        assert_eq!(detect(&h), Some(Host::Gogs));
    }

    #[test]
    fn bitbucket_cloud_and_server_are_told_apart() {
        let cloud = headers(&[("X-Event-Key", "repo:push"), ("X-Request-UUID", "u")]);
        assert_eq!(detect(&cloud), Some(Host::Bitbucket));
        let server = headers(&[("X-Event-Key", "repo:refs_changed")]);
        assert_eq!(detect(&server), Some(Host::BitbucketServer));
        let ping = headers(&[("X-Event-Key", "diagnostics:ping"), ("X-Request-Id", "i")]);
        assert_eq!(detect(&ping), Some(Host::BitbucketServer));
    }

    #[test]
    fn standard_webhooks_headers_mean_generic_and_nothing_means_none() {
        let h = headers(&[("webhook-id", "m"), ("webhook-signature", "v1,x")]);
        assert_eq!(detect(&h), Some(Host::Generic));
        assert_eq!(detect(&headers(&[("webhook-id", "m")])), None);
        assert_eq!(detect(&HeaderMap::new()), None);
    }

    #[test]
    fn a_delivery_without_a_usable_id_is_named_by_its_body() {
        let body = b"{}";
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(body)));
        assert_eq!(delivery_id(Host::Github, &HeaderMap::new(), body), digest);
        let empty = headers(&[("X-GitHub-Delivery", "")]);
        assert_eq!(delivery_id(Host::Github, &empty, body), digest);
        let mut long = HeaderMap::new();
        long.insert(
            "x-github-delivery",
            HeaderValue::from_str(&"a".repeat(201)).unwrap(),
        );
        assert_eq!(delivery_id(Host::Github, &long, body), digest);
        let mut binary = HeaderMap::new();
        binary.insert(
            "x-github-delivery",
            HeaderValue::from_bytes(b"id\xff").unwrap(),
        );
        assert_eq!(delivery_id(Host::Github, &binary, body), digest);
    }

    #[test]
    fn each_host_delivery_header_names_the_delivery() {
        let cases = [
            (Host::Github, "X-GitHub-Delivery"),
            (Host::Gitlab, "X-Gitlab-Event-UUID"),
            (Host::Gitlab, "X-Gitlab-Webhook-UUID"),
            (Host::Gitea, "X-Gitea-Delivery"),
            (Host::Forgejo, "X-Forgejo-Delivery"),
            (Host::Forgejo, "X-Gitea-Delivery"),
            (Host::Gogs, "X-Gogs-Delivery"),
            (Host::Bitbucket, "X-Request-UUID"),
            (Host::BitbucketServer, "X-Request-Id"),
            (Host::Generic, "webhook-id"),
        ];
        for (host, name) in cases {
            let h = headers(&[(name, "f6266f16-1bf3-46a5-9ea4-602e06ead473")]);
            assert_eq!(
                delivery_id(host, &h, b"x"),
                "f6266f16-1bf3-46a5-9ea4-602e06ead473",
                "{host} {name}"
            );
        }
        let hook_only = headers(&[("X-Hook-UUID", "the-hook")]);
        assert!(delivery_id(Host::Bitbucket, &hook_only, b"x").starts_with("sha256:"));
    }

    #[test]
    fn an_empty_secret_verifies_nothing() {
        let secret = Secret::new("");
        let h = headers(&[("X-Gitlab-Token", "")]);
        let now = SystemTime::now();
        assert_eq!(
            verify(Host::Gitlab, &h, b"", &secret, false, now),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn object_ids_must_be_hex() {
        assert!(sha(Some("a1b2c3d4e5f6".into()), "after").is_ok());
        assert!(sha(Some("--upload-pack=x".into()), "after").is_err());
        assert!(sha(Some(String::new()), "after").is_err());
        assert!(sha(Some("0".repeat(65)), "after").is_err());
        assert_eq!(sha(Some("A1B2C3D4".into()), "after").unwrap(), "a1b2c3d4");
        assert!(pr_sha(Some("a".repeat(40)), "head").is_ok());
        assert!(pr_sha(Some("a".repeat(12)), "head").is_err());
        assert!(pr_sha(Some(ZERO_SHA.into()), "head").is_err());
    }
}
