//! Bitbucket Server and Data Center: `X-Event-Key: repo:refs_changed` and
//! its `changes[]` payload, one ref update per change. Signatures are
//! checked as Bitbucket Cloud's (see [`super::bitbucket::verify`]).

use super::json::{self, list, nested, string};
use super::{ParseError, Parsed, ParsedKind, RefUpdate, event_header, required, sha};
use axum::http::HeaderMap;
use serde::Deserialize;

#[derive(Deserialize)]
struct Payload {
    #[serde(default, deserialize_with = "nested")]
    actor: Option<Actor>,
    #[serde(default, deserialize_with = "nested")]
    repository: Option<Repository>,
    #[serde(default, deserialize_with = "list")]
    changes: Vec<Change>,
    /// Data Center sends the pushed commits (newest first) and the new head.
    #[serde(default, deserialize_with = "list")]
    commits: Vec<Commit>,
    #[serde(default, rename = "toCommit", deserialize_with = "nested")]
    to_commit: Option<Commit>,
}

#[derive(Deserialize)]
struct Actor {
    #[serde(default, deserialize_with = "string")]
    name: Option<String>,
}

#[derive(Deserialize)]
struct Repository {
    #[serde(default, deserialize_with = "string")]
    slug: Option<String>,
    #[serde(default, deserialize_with = "nested")]
    project: Option<Project>,
    #[serde(default, deserialize_with = "nested")]
    links: Option<Links>,
}

#[derive(Deserialize)]
struct Project {
    #[serde(default, deserialize_with = "string")]
    key: Option<String>,
}

#[derive(Deserialize)]
struct Links {
    #[serde(default, deserialize_with = "list")]
    clone: Vec<Link>,
    #[serde(default, rename = "self", deserialize_with = "list")]
    self_: Vec<Link>,
}

#[derive(Deserialize)]
struct Link {
    #[serde(default, deserialize_with = "string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "string")]
    href: Option<String>,
}

#[derive(Deserialize)]
struct Change {
    #[serde(default, rename = "ref", deserialize_with = "nested")]
    git_ref: Option<Ref>,
    /// The full ref again, in older payloads the only place it is.
    #[serde(default, rename = "refId", deserialize_with = "string")]
    ref_id: Option<String>,
    #[serde(default, rename = "fromHash", deserialize_with = "string")]
    from_hash: Option<String>,
    #[serde(default, rename = "toHash", deserialize_with = "string")]
    to_hash: Option<String>,
    #[serde(default, rename = "type", deserialize_with = "string")]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct Ref {
    #[serde(default, deserialize_with = "string")]
    id: Option<String>,
}

#[derive(Deserialize)]
struct Commit {
    #[serde(default, deserialize_with = "string")]
    id: Option<String>,
    #[serde(default, deserialize_with = "string")]
    message: Option<String>,
}

pub(super) fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Parsed, ParseError> {
    let event = event_header(headers, "x-event-key", "X-Event-Key header")?;
    let payload: Payload = json::object(body)?;
    let repo = payload.repository.as_ref().and_then(repo_name);
    let kind = match event {
        // Bitbucket Server's "test connection" delivery.
        "diagnostics:ping" => ParsedKind::Ping,
        "repo:refs_changed" => pushes(payload)?,
        other => ParsedKind::Ignored(format!("bitbucket-server event {other} builds nothing")),
    };
    Ok(Parsed {
        event: event.to_owned(),
        repo,
        kind,
    })
}

/// `PROJECT/slug`, the name pipelines use for a Bitbucket Server repository.
fn repo_name(r: &Repository) -> Option<String> {
    let key = r
        .project
        .as_ref()?
        .key
        .as_deref()
        .filter(|k| !k.is_empty())?;
    let slug = r.slug.as_deref().filter(|s| !s.is_empty())?;
    Some(format!("{key}/{slug}"))
}

fn pushes(p: Payload) -> Result<ParsedKind, ParseError> {
    let repository = p.repository.ok_or(ParseError::Missing("repository"))?;
    let repo = repo_name(&repository).ok_or(ParseError::Missing("repository.project.key"))?;
    let links = repository.links;
    let clone = |name: &str| {
        links
            .as_ref()?
            .clone
            .iter()
            .find(|l| l.name.as_deref() == Some(name))?
            .href
            .clone()
    };
    // Without links (older payloads), the clone URL must come from the pipeline.
    let clone_url = clone("http").unwrap_or_default();
    let ssh_url = clone("ssh");
    let web_url = links
        .as_ref()
        .and_then(|l| l.self_.first())
        .and_then(|l| l.href.clone());
    let pusher = p.actor.and_then(|a| a.name).unwrap_or_default();
    if p.changes.is_empty() {
        return Ok(ParsedKind::Ignored("the push changed no refs".to_owned()));
    }
    let mut events = Vec::with_capacity(p.changes.len());
    for change in p.changes {
        let git_ref = change
            .git_ref
            .and_then(|r| r.id)
            .filter(|id| !id.is_empty())
            .or(change.ref_id);
        let after = sha(change.to_hash, "changes[].toHash")?;
        let message = p
            .commits
            .iter()
            .chain(&p.to_commit)
            .find(|c| c.id.as_deref() == Some(after.as_str()))
            .and_then(|c| c.message.clone())
            .unwrap_or_default();
        let update = RefUpdate {
            repo: repo.clone(),
            git_ref: required(git_ref, "changes[].ref.id")?,
            before: sha(change.from_hash, "changes[].fromHash")?,
            after,
            head: None,
            created: change.kind.as_deref() == Some("ADD"),
            deleted: change.kind.as_deref() == Some("DELETE"),
            // Bitbucket Server does not say whether a push was forced.
            forced: false,
            clone_url: clone_url.clone(),
            ssh_url: ssh_url.clone(),
            web_url: web_url.clone(),
            message,
            pusher: pusher.clone(),
        };
        events.push(update.into_event());
    }
    Ok(ParsedKind::Pushes(events))
}
