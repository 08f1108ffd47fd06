//! Bitbucket Cloud: `X-Event-Key: repo:push`, `X-Hub-Signature: sha256=HEX`,
//! and the `push.changes[]` payload, one ref update per change.

use super::json::{self, flag, list, nested, string};
use super::signature::{header, verify_prefixed_sha256};
use super::{ParseError, Parsed, ParsedKind, RefUpdate, VerifyError, event_header, required, sha};
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
        "pullrequest:created" | "pullrequest:updated" => pull_request(body, true)?,
        "pullrequest:fulfilled" | "pullrequest:rejected" => pull_request(body, false)?,
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
            None => Ok(super::CommitId::ZERO),
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

#[derive(Deserialize)]
struct PrPayload {
    #[serde(default, deserialize_with = "nested")]
    repository: Option<Repository>,
    #[serde(default, deserialize_with = "nested")]
    pullrequest: Option<Pr>,
}

#[derive(Deserialize)]
struct Pr {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "string")]
    title: Option<String>,
    #[serde(default, deserialize_with = "string")]
    state: Option<String>,
    #[serde(default, deserialize_with = "nested")]
    author: Option<PrAuthor>,
    #[serde(default, deserialize_with = "nested")]
    source: Option<Endpoint>,
    #[serde(default, deserialize_with = "nested")]
    destination: Option<Endpoint>,
}

#[derive(Deserialize)]
struct PrAuthor {
    #[serde(default, deserialize_with = "string")]
    nickname: Option<String>,
    #[serde(default, deserialize_with = "string")]
    username: Option<String>,
    #[serde(default, deserialize_with = "string")]
    display_name: Option<String>,
}

/// A pull request's source or destination.
#[derive(Deserialize)]
struct Endpoint {
    #[serde(default, deserialize_with = "nested")]
    branch: Option<Named>,
    #[serde(default, deserialize_with = "nested")]
    commit: Option<Target>,
    #[serde(default, deserialize_with = "nested")]
    repository: Option<Repository>,
}

#[derive(Deserialize)]
struct Named {
    #[serde(default, deserialize_with = "string")]
    name: Option<String>,
}

/// The https clone URL of a repository: its web page plus `.git`.
fn clone_url_of(full_name: &str, web_url: Option<&str>) -> String {
    match web_url {
        Some(web) => format!("{}.git", web.trim_end_matches('/')),
        None => format!("https://bitbucket.org/{full_name}.git"),
    }
}

/// `pullrequest:created` and `:updated` build (Bitbucket Cloud sends no
/// previous head, so every update builds; the same head again is a
/// redelivery the store recognises only by its body); `:fulfilled` (merged)
/// and `:rejected` (declined) cancel. Bitbucket Cloud has no pull request
/// refs: the source branch is fetched (from the fork, for a fork), and the
/// builds are keyed by `refs/pull-requests/N/from`.
fn pull_request(body: &[u8], builds: bool) -> Result<ParsedKind, ParseError> {
    let p: PrPayload = json::object(body)?;
    let repository = p.repository.ok_or(ParseError::Missing("repository"))?;
    let repo = required(repository.full_name, "repository.full_name")?;
    let pr = p.pullrequest.ok_or(ParseError::Missing("pullrequest"))?;
    let number = super::pr_number(pr.id.as_ref())?;
    let git_ref = format!("refs/pull-requests/{number}/from");
    if !builds {
        return Ok(ParsedKind::PullRequestClosed(super::PullRequestClosed {
            repo,
            git_ref,
            number,
            merged: pr.state.as_deref() == Some("MERGED"),
        }));
    }
    let source = pr.source.ok_or(ParseError::Missing("pullrequest.source"))?;
    let destination = pr
        .destination
        .ok_or(ParseError::Missing("pullrequest.destination"))?;
    let head = sha(
        source.commit.and_then(|c| c.hash),
        "pullrequest.source.commit.hash",
    )?;
    let head_repository = source.repository;
    let head_repo = head_repository
        .as_ref()
        .and_then(|r| r.full_name.clone())
        .unwrap_or_default();
    let fork = !head_repo.eq_ignore_ascii_case(&repo);
    let head_web = head_repository
        .and_then(|r| r.links)
        .and_then(|l| l.html)
        .and_then(|h| h.href)
        .filter(|h| !h.is_empty());
    let web_url = repository
        .links
        .and_then(|l| l.html)
        .and_then(|h| h.href)
        .filter(|h| !h.is_empty());
    let clone_url = clone_url_of(&repo, web_url.as_deref());
    let head_clone_url = if fork {
        clone_url_of(&head_repo, head_web.as_deref())
    } else {
        clone_url.clone()
    };
    let author = pr
        .author
        .and_then(|a| a.nickname.or(a.username).or(a.display_name))
        .unwrap_or_default();
    Ok(ParsedKind::PullRequest(Box::new(
        super::PullUpdate {
            git_ref,
            head: Some(head),
            base_sha: destination
                .commit
                .and_then(|c| c.hash)
                .and_then(|h| super::CommitId::parse(&h).ok()),
            ssh_url: Some(format!("git@bitbucket.org:{repo}.git")),
            clone_url,
            web_url,
            pr: super::PullRequest {
                number,
                title: pr.title.unwrap_or_default(),
                author,
                // Bitbucket's payload says nothing of the author's role.
                author_trusted: false,
                base_branch: required(
                    destination.branch.and_then(|b| b.name),
                    "pullrequest.destination.branch.name",
                )?,
                head_branch: required(
                    source.branch.and_then(|b| b.name),
                    "pullrequest.source.branch.name",
                )?,
                head_repo,
                fork,
                head_clone_url: Some(head_clone_url),
            },
            repo,
        }
        .into_event(),
    )))
}
