//! GitHub (github.com and Enterprise Server): `X-GitHub-Event`,
//! `X-Hub-Signature-256`, and the `push` and `ping` payloads.

use super::json::{self, flag, nested, string};
use super::signature::{first_header, verify_prefixed_sha1, verify_prefixed_sha256};
use super::{ParseError, Parsed, ParsedKind, RefKind, RefUpdate, VerifyError, event_header, sha};
use crate::secret::Secret;
use axum::http::HeaderMap;
use serde::Deserialize;

/// `X-Hub-Signature-256: sha256=HEX`; the legacy SHA-1 `X-Hub-Signature`
/// only when nothing better was sent and the pipeline allows it.
pub(super) fn verify(
    headers: &HeaderMap,
    body: &[u8],
    secret: &Secret,
    allow_sha1: bool,
) -> Result<(), VerifyError> {
    match first_header(headers, &["x-hub-signature-256", "x-hub-signature"])? {
        Some(("x-hub-signature-256", value)) => verify_prefixed_sha256(value, secret, body),
        Some((_, value)) if allow_sha1 => verify_prefixed_sha1(value, secret, body),
        Some(_) => Err(VerifyError::Sha1NotAllowed),
        None => Err(VerifyError::Missing),
    }
}

#[derive(Deserialize)]
struct Payload {
    #[serde(default, rename = "ref", deserialize_with = "string")]
    git_ref: Option<String>,
    #[serde(default, deserialize_with = "string")]
    before: Option<String>,
    #[serde(default, deserialize_with = "string")]
    after: Option<String>,
    #[serde(default, deserialize_with = "flag")]
    created: bool,
    #[serde(default, deserialize_with = "flag")]
    deleted: bool,
    #[serde(default, deserialize_with = "flag")]
    forced: bool,
    #[serde(default, deserialize_with = "nested")]
    repository: Option<Repository>,
    #[serde(default, deserialize_with = "nested")]
    head_commit: Option<Commit>,
    #[serde(default, deserialize_with = "nested")]
    pusher: Option<Pusher>,
}

/// The repository object, as GitHub sends it (and Gitea, Forgejo and Gogs,
/// whose push payloads copy GitHub's shape).
#[derive(Deserialize)]
pub(super) struct Repository {
    #[serde(default, deserialize_with = "string")]
    pub(super) full_name: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(super) clone_url: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(super) ssh_url: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(super) html_url: Option<String>,
}

/// A commit of a push payload (GitHub's shape, shared as above).
#[derive(Deserialize)]
pub(super) struct Commit {
    #[serde(default, deserialize_with = "string")]
    pub(super) id: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(super) message: Option<String>,
}

#[derive(Deserialize)]
struct Pusher {
    #[serde(default, deserialize_with = "string")]
    name: Option<String>,
}

pub(super) fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Parsed, ParseError> {
    let event = event_header(headers, "x-github-event", "X-GitHub-Event header")?;
    let payload: Payload = json::object(body)?;
    let repo = payload
        .repository
        .as_ref()
        .and_then(|r| r.full_name.clone());
    let kind = match event {
        "ping" => ParsedKind::Ping,
        "push" => ParsedKind::Pushes(vec![push(payload)?.into_event()]),
        other => ParsedKind::Ignored(format!("github event {other} builds nothing")),
    };
    Ok(Parsed {
        event: event.to_owned(),
        repo,
        kind,
    })
}

fn push(p: Payload) -> Result<RefUpdate, ParseError> {
    let repository = p.repository.ok_or(ParseError::Missing("repository"))?;
    let git_ref = super::required(p.git_ref, "ref")?;
    let head = match p.head_commit {
        Some(c) => Some((sha(c.id, "head_commit.id")?, c.message.unwrap_or_default())),
        None => None,
    };
    let is_tag = matches!(RefKind::of(&git_ref), RefKind::Tag(_));
    let (tagged, message) = match head {
        // For an annotated tag `after` is the tag object; head_commit is the commit.
        Some((id, message)) => (is_tag.then_some(id), message),
        None => (None, String::new()),
    };
    Ok(RefUpdate {
        repo: super::required(repository.full_name, "repository.full_name")?,
        git_ref,
        before: sha(p.before, "before")?,
        after: sha(p.after, "after")?,
        head: tagged,
        created: p.created,
        deleted: p.deleted,
        forced: p.forced,
        clone_url: super::required(repository.clone_url, "repository.clone_url")?,
        ssh_url: repository.ssh_url,
        web_url: repository.html_url,
        message,
        pusher: p.pusher.and_then(|u| u.name).unwrap_or_default(),
    })
}
