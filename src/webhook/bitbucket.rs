//! Bitbucket Cloud: `X-Event-Key: repo:push`, `X-Hub-Signature: sha256=HEX`,
//! and the `push.changes[]` payload, one ref update per change.

use super::json::{self, flag, list, nested, string};
use super::signature::{header, verify_prefixed_sha256};
use super::{
    ParseError, Parsed, ParsedKind, RefUpdate, VerifyError, ZERO_SHA, event_header, required, sha,
};
use crate::secret::Secret;
use axum::http::HeaderMap;
use serde::Deserialize;

/// `X-Hub-Signature: sha256=HEX`, as Bitbucket Cloud and Server both send it.
pub(super) fn verify(headers: &HeaderMap, body: &[u8], secret: &Secret) -> Result<(), VerifyError> {
    match header(headers, "x-hub-signature")? {
        Some(value) => verify_prefixed_sha256(value, secret, body),
        None => Err(VerifyError::Missing),
    }
}

#[derive(Deserialize)]
struct Payload {
    #[serde(default, deserialize_with = "nested")]
    actor: Option<Actor>,
    #[serde(default, deserialize_with = "nested")]
    repository: Option<Repository>,
    #[serde(default, deserialize_with = "nested")]
    push: Option<Push>,
}

#[derive(Deserialize)]
struct Actor {
    #[serde(default, deserialize_with = "string")]
    display_name: Option<String>,
    #[serde(default, deserialize_with = "string")]
    nickname: Option<String>,
}

#[derive(Deserialize)]
struct Repository {
    #[serde(default, deserialize_with = "string")]
    full_name: Option<String>,
    #[serde(default, deserialize_with = "nested")]
    links: Option<Links>,
}

#[derive(Deserialize)]
struct Links {
    #[serde(default, deserialize_with = "nested")]
    html: Option<Link>,
}

#[derive(Deserialize)]
struct Link {
    #[serde(default, deserialize_with = "string")]
    href: Option<String>,
}

#[derive(Deserialize)]
struct Push {
    #[serde(default, deserialize_with = "list")]
    changes: Vec<Change>,
}

#[derive(Deserialize)]
struct Change {
    #[serde(default, deserialize_with = "nested")]
    old: Option<RefState>,
    #[serde(default, deserialize_with = "nested")]
    new: Option<RefState>,
    #[serde(default, deserialize_with = "flag")]
    created: bool,
    #[serde(default, deserialize_with = "flag")]
    closed: bool,
    #[serde(default, deserialize_with = "flag")]
    forced: bool,
}

/// One side of a change: the ref and the commit it named.
#[derive(Deserialize)]
struct RefState {
    #[serde(default, rename = "type", deserialize_with = "string")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "nested")]
    target: Option<Target>,
}

#[derive(Deserialize)]
struct Target {
    #[serde(default, deserialize_with = "string")]
    hash: Option<String>,
    #[serde(default, deserialize_with = "string")]
    message: Option<String>,
}

pub(super) fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Parsed, ParseError> {
    let event = event_header(headers, "x-event-key", "X-Event-Key header")?;
    let payload: Payload = json::object(body)?;
    let repo = payload
        .repository
        .as_ref()
        .and_then(|r| r.full_name.clone());
    let kind = match event {
        // Bitbucket's "test connection" delivery.
        "diagnostics:ping" => ParsedKind::Ping,
        "repo:push" => pushes(payload)?,
        other => ParsedKind::Ignored(format!("bitbucket event {other} builds nothing")),
    };
    Ok(Parsed {
        event: event.to_owned(),
        repo,
        kind,
    })
}

fn pushes(p: Payload) -> Result<ParsedKind, ParseError> {
    let repository = p.repository.ok_or(ParseError::Missing("repository"))?;
    let full_name = required(repository.full_name, "repository.full_name")?;
    let web_url = repository
        .links
        .and_then(|l| l.html)
        .and_then(|h| h.href)
        .filter(|h| !h.is_empty());
    let clone_url = match &web_url {
        Some(web) => format!("{}.git", web.trim_end_matches('/')),
        None => format!("https://bitbucket.org/{full_name}.git"),
    };
    let ssh_url = format!("git@bitbucket.org:{full_name}.git");
    let pusher = p
        .actor
        .and_then(|a| a.display_name.filter(|n| !n.is_empty()).or(a.nickname))
        .unwrap_or_default();
    let changes = p.push.ok_or(ParseError::Missing("push"))?.changes;
    if changes.is_empty() {
        return Ok(ParsedKind::Ignored("the push changed no refs".to_owned()));
    }
    let mut events = Vec::with_capacity(changes.len());
    for change in changes {
        let named = change
            .new
            .as_ref()
            .or(change.old.as_ref())
            .ok_or(ParseError::Missing("push.changes[].new"))?;
        let name = required(named.name.clone(), "push.changes[].new.name")?;
        let git_ref = match named.kind.as_deref() {
            Some("branch" | "named_branch") => format!("refs/heads/{name}"),
            Some("tag") => format!("refs/tags/{name}"),
            _ => return Err(ParseError::Missing("push.changes[].new.type")),
        };
        let side = |state: Option<RefState>, field| match state {
            Some(s) => sha(s.target.and_then(|t| t.hash), field),
            None => Ok(ZERO_SHA.to_owned()),
        };
        let message = change
            .new
            .as_ref()
            .and_then(|n| n.target.as_ref())
            .and_then(|t| t.message.clone())
            .unwrap_or_default();
        let update = RefUpdate {
            repo: full_name.clone(),
            git_ref,
            created: change.created || change.old.is_none(),
            deleted: change.closed || change.new.is_none(),
            forced: change.forced,
            before: side(change.old, "push.changes[].old.target.hash")?,
            after: side(change.new, "push.changes[].new.target.hash")?,
            head: None,
            clone_url: clone_url.clone(),
            ssh_url: Some(ssh_url.clone()),
            web_url: web_url.clone(),
            message,
            pusher: pusher.clone(),
        };
        events.push(update.into_event());
    }
    Ok(ParsedKind::Pushes(events))
}
