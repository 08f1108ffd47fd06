//! Gitea, Forgejo and Gogs, which share one payload shape: the `push`
//! payload, `X-{Host}-Signature: HEX`, and the `create` and `delete`
//! companion events.

use super::github::{Commit, Repository};
use super::json::{self, flag, list, nested, string};
use super::signature::{first_header, verify_hex_sha256, verify_prefixed_sha256};
use super::{
    Host, ParseError, Parsed, ParsedKind, RefKind, RefUpdate, VerifyError, header_str, sha,
};
use crate::secret::Secret;
use axum::http::HeaderMap;
use serde::Deserialize;

/// The host's own signature header, then the ones its forks also send.
/// Gitea and Forgejo also send `X-Hub-Signature-256`, accepted last.
pub(super) fn verify(
    host: Host,
    headers: &HeaderMap,
    body: &[u8],
    secret: &Secret,
) -> Result<(), VerifyError> {
    let names: &[&'static str] = match host {
        Host::Forgejo => &[
            "x-forgejo-signature",
            "x-gitea-signature",
            "x-hub-signature-256",
        ],
        Host::Gogs => &["x-gogs-signature"],
        _ => &["x-gitea-signature", "x-hub-signature-256"],
    };
    match first_header(headers, names)? {
        Some(("x-hub-signature-256", value)) => verify_prefixed_sha256(value, secret, body),
        Some((_, value)) => verify_hex_sha256(value, secret, body),
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
    #[serde(default, deserialize_with = "nested")]
    repository: Option<Repository>,
    #[serde(default, deserialize_with = "nested")]
    head_commit: Option<Commit>,
    #[serde(default, deserialize_with = "list")]
    commits: Vec<Commit>,
    #[serde(default, deserialize_with = "nested")]
    pusher: Option<User>,
}

#[derive(Deserialize)]
struct User {
    #[serde(default, deserialize_with = "string")]
    login: Option<String>,
    #[serde(default, deserialize_with = "string")]
    username: Option<String>,
}

pub(super) fn parse(host: Host, headers: &HeaderMap, body: &[u8]) -> Result<Parsed, ParseError> {
    let (names, missing): (&[&str], _) = match host {
        Host::Forgejo => (
            &["x-forgejo-event", "x-gitea-event"],
            "X-Forgejo-Event header",
        ),
        Host::Gogs => (&["x-gogs-event"], "X-Gogs-Event header"),
        _ => (&["x-gitea-event"], "X-Gitea-Event header"),
    };
    let event = names
        .iter()
        .find_map(|name| header_str(headers, name))
        .filter(|e| !e.is_empty())
        .ok_or(ParseError::Missing(missing))?;
    let payload: Payload = json::object(body)?;
    let repo = payload
        .repository
        .as_ref()
        .and_then(|r| r.full_name.clone());
    // These hosts send `create` and `delete` beside the `push` for the same
    // ref (a new branch or tag is also a push from the zero id; a deletion
    // also a push to it), so building on them would build twice.
    let kind = match event {
        "push" => ParsedKind::Pushes(vec![push(payload)?.into_event()]),
        "pull_request" if host != Host::Gogs => super::github::pull_request(
            body,
            &["opened", "reopened", "synchronized"],
            super::github::Trust::Owner,
        )?,
        "pull_request" => gogs_pull_request(body)?,
        "create" => ParsedKind::Ignored(
            "create event builds nothing; the push event for this ref does".to_owned(),
        ),
        "delete" => ParsedKind::Ignored("ref deleted".to_owned()),
        other => ParsedKind::Ignored(format!("{host} event {other} builds nothing")),
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
    let after = sha(p.after, "after")?;
    // Gogs may leave `before` out; a ref without one is treated as new.
    let before = match p.before {
        Some(b) if !b.is_empty() => sha(Some(b), "before")?,
        _ => super::CommitId::ZERO,
    };
    let head_commit = match p.head_commit {
        Some(c) => Some((sha(c.id, "head_commit.id")?, c.message.unwrap_or_default())),
        None => None,
    };
    let message = match &head_commit {
        Some((_, message)) => message.clone(),
        None => p
            .commits
            .into_iter()
            .find(|c| {
                c.id.as_deref()
                    .is_some_and(|id| id.eq_ignore_ascii_case(after.as_str()))
            })
            .and_then(|c| c.message)
            .unwrap_or_default(),
    };
    let is_tag = matches!(RefKind::of(&git_ref), RefKind::Tag(_));
    let pusher = p
        .pusher
        .and_then(|u| u.login.filter(|l| !l.is_empty()).or(u.username))
        .unwrap_or_default();
    Ok(RefUpdate {
        repo: super::required(repository.full_name, "repository.full_name")?,
        git_ref,
        before,
        after,
        head: head_commit.filter(|_| is_tag).map(|(id, _)| id),
        created: false,
        deleted: false,
        // These hosts do not say whether a push was forced.
        forced: false,
        clone_url: super::required(repository.clone_url, "repository.clone_url")?,
        ssh_url: repository.ssh_url,
        web_url: repository.html_url,
        message,
        pusher,
    })
}

#[derive(Deserialize)]
struct GogsPrPayload {
    #[serde(default, deserialize_with = "string")]
    action: Option<String>,
    #[serde(default)]
    number: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "nested")]
    pull_request: Option<GogsPr>,
    #[serde(default, deserialize_with = "nested")]
    repository: Option<Repository>,
}

#[derive(Deserialize)]
struct GogsPr {
    #[serde(default)]
    number: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "string")]
    title: Option<String>,
    #[serde(default, deserialize_with = "nested")]
    user: Option<User>,
    #[serde(default, deserialize_with = "string")]
    head_branch: Option<String>,
    #[serde(default, deserialize_with = "string")]
    base_branch: Option<String>,
    #[serde(default, deserialize_with = "nested")]
    head_repo: Option<Repository>,
    #[serde(default, deserialize_with = "flag")]
    merged: bool,
}

/// Gogs' `pull_request`: GitHub's actions, its own shape, and no commit id
/// at all. The build's commit is left empty: the runner builds what the
/// base repository's `refs/pull/N/head` points to when it fetches (there is
/// no id to check it against), and reports it as `HOOKCI_COMMIT`.
fn gogs_pull_request(body: &[u8]) -> Result<ParsedKind, ParseError> {
    let p: GogsPrPayload = json::object(body)?;
    let action = super::required(p.action, "action")?;
    let builds = matches!(action.as_str(), "opened" | "reopened" | "synchronized");
    if !builds && action != "closed" {
        return Ok(ParsedKind::Ignored(format!(
            "pull request action {action} builds nothing"
        )));
    }
    let repository = p.repository.ok_or(ParseError::Missing("repository"))?;
    let repo = super::required(repository.full_name, "repository.full_name")?;
    let pr = p.pull_request.ok_or(ParseError::Missing("pull_request"))?;
    let number = super::pr_number(p.number.as_ref().or(pr.number.as_ref()))?;
    let git_ref = format!("refs/pull/{number}/head");
    if !builds {
        return Ok(ParsedKind::PullRequestClosed(super::PullRequestClosed {
            repo,
            git_ref,
            number,
            merged: pr.merged,
        }));
    }
    let head_repo = pr.head_repo.and_then(|r| r.full_name).unwrap_or_default();
    let author = pr
        .user
        .and_then(|u| u.login.filter(|l| !l.is_empty()).or(u.username))
        .unwrap_or_default();
    let owner = repository
        .owner
        .and_then(|o| o.login.filter(|l| !l.is_empty()).or(o.username))
        .unwrap_or_default();
    let event = super::PullUpdate {
        git_ref,
        head: None,
        base_sha: None,
        clone_url: super::required(repository.clone_url, "repository.clone_url")?,
        ssh_url: repository.ssh_url,
        web_url: repository.html_url,
        pr: super::PullRequest {
            number,
            title: pr.title.unwrap_or_default(),
            author_trusted: !owner.is_empty() && owner.eq_ignore_ascii_case(&author),
            author,
            base_branch: super::required(pr.base_branch, "pull_request.base_branch")?,
            head_branch: super::required(pr.head_branch, "pull_request.head_branch")?,
            fork: !head_repo.eq_ignore_ascii_case(&repo),
            head_repo,
            head_clone_url: None,
        },
        repo,
    }
    .into_event();
    Ok(ParsedKind::PullRequest(Box::new(event)))
}
