//! GitHub (github.com and Enterprise Server): `X-GitHub-Event`,
//! `X-Hub-Signature-256`, and the `push` and `ping` payloads.

use super::json::{self, flag, nested, string};
use super::signature::{first_header, verify_prefixed_sha1, verify_prefixed_sha256};
use super::{
    ParseError, Parsed, ParsedKind, PullRequest, PullRequestClosed, PullUpdate, RefKind, RefUpdate,
    VerifyError, event_header, pr_number, pr_sha, required, sha,
};
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
    #[serde(default, deserialize_with = "nested")]
    pub(super) owner: Option<User>,
}

#[derive(Deserialize)]
struct PrPayload {
    #[serde(default, deserialize_with = "string")]
    action: Option<String>,
    #[serde(default)]
    number: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "nested")]
    pull_request: Option<Pr>,
    #[serde(default, deserialize_with = "nested")]
    repository: Option<Repository>,
}

/// GitHub's `pull_request` object (Gitea, Forgejo and Gogs copy its shape).
#[derive(Deserialize)]
pub(super) struct Pr {
    #[serde(default)]
    pub(super) number: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "string")]
    pub(super) title: Option<String>,
    #[serde(default, deserialize_with = "nested")]
    pub(super) user: Option<User>,
    #[serde(default, deserialize_with = "string")]
    pub(super) author_association: Option<String>,
    #[serde(default, deserialize_with = "nested")]
    pub(super) head: Option<Side>,
    #[serde(default, deserialize_with = "nested")]
    pub(super) base: Option<Side>,
    #[serde(default, deserialize_with = "flag")]
    pub(super) merged: bool,
}

/// A login.
#[derive(Deserialize)]
pub(super) struct User {
    #[serde(default, deserialize_with = "string")]
    pub(super) login: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(super) username: Option<String>,
}

/// One side (`head`, `base`) of a pull request.
#[derive(Deserialize)]
pub(super) struct Side {
    #[serde(default, rename = "ref", deserialize_with = "string")]
    pub(super) git_ref: Option<String>,
    #[serde(default, deserialize_with = "string")]
    pub(super) sha: Option<String>,
    #[serde(default, deserialize_with = "nested")]
    pub(super) repo: Option<Repository>,
    /// Gitea and Forgejo may send only the repository's id.
    #[serde(default)]
    pub(super) repo_id: Option<serde_json::Value>,
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
        "pull_request" => pull_request(body, &BUILD_ACTIONS, Trust::Association)?,
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
    let git_ref = required(p.git_ref, "ref")?;
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
        repo: required(repository.full_name, "repository.full_name")?,
        git_ref,
        before: sha(p.before, "before")?,
        after: sha(p.after, "after")?,
        head: tagged,
        created: p.created,
        deleted: p.deleted,
        forced: p.forced,
        clone_url: required(repository.clone_url, "repository.clone_url")?,
        ssh_url: repository.ssh_url,
        web_url: repository.html_url,
        message,
        pusher: p.pusher.and_then(|u| u.name).unwrap_or_default(),
    })
}

/// The actions of a `pull_request` delivery that build its head commit.
const BUILD_ACTIONS: [&str; 3] = ["opened", "reopened", "synchronize"];

/// How a host says a pull request's author may be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trust {
    /// GitHub's `author_association`: OWNER, MEMBER or COLLABORATOR.
    Association,
    /// Gitea, Forgejo: the author owns the base repository (their payloads
    /// say nothing of membership).
    Owner,
}

/// `pull_request` (GitHub's shape, which Gitea and Forgejo copy): the
/// `build_actions` build; closed (merged or not) cancels; every other
/// action (labels, edits, reviews) builds nothing.
pub(super) fn pull_request(
    body: &[u8],
    build_actions: &[&str],
    trust: Trust,
) -> Result<ParsedKind, ParseError> {
    let p: PrPayload = json::object(body)?;
    let action = required(p.action, "action")?;
    let builds = build_actions.contains(&action.as_str());
    if !builds && action != "closed" {
        return Ok(ParsedKind::Ignored(format!(
            "pull request action {action} builds nothing"
        )));
    }
    let repository = p.repository.ok_or(ParseError::Missing("repository"))?;
    let repo = required(repository.full_name, "repository.full_name")?;
    let pr = p.pull_request.ok_or(ParseError::Missing("pull_request"))?;
    let number = pr_number(p.number.as_ref().or(pr.number.as_ref()))?;
    let git_ref = format!("refs/pull/{number}/head");
    if !builds {
        return Ok(ParsedKind::PullRequestClosed(PullRequestClosed {
            repo,
            git_ref,
            number,
            merged: pr.merged,
        }));
    }
    let owner = repository
        .owner
        .and_then(|o| o.login.or(o.username))
        .unwrap_or_default();
    let mut update = pull_update(pr, repo, git_ref, number)?;
    if trust == Trust::Owner {
        update.pr.author_trusted =
            !owner.is_empty() && owner.eq_ignore_ascii_case(&update.pr.author);
    }
    Ok(ParsedKind::PullRequest(Box::new(
        PullUpdate {
            clone_url: required(repository.clone_url, "repository.clone_url")?,
            ssh_url: repository.ssh_url,
            web_url: repository.html_url,
            ..update
        }
        .into_event(),
    )))
}

/// A GitHub-shaped `pull_request` object as a [`PullUpdate`] (without the
/// base repository's URLs).
pub(super) fn pull_update(
    pr: Pr,
    repo: String,
    git_ref: String,
    number: u64,
) -> Result<PullUpdate, ParseError> {
    let head = pr.head.ok_or(ParseError::Missing("pull_request.head"))?;
    let base = pr.base.ok_or(ParseError::Missing("pull_request.base"))?;
    let head_sha = pr_sha(head.sha, "pull_request.head.sha")?;
    // The head repository's name where the payload has it; else (Gitea,
    // Forgejo) the two sides' repository ids; a head repository named by
    // neither (a deleted fork) counts as a fork.
    let (head_repo, fork) = match head.repo.and_then(|r| r.full_name) {
        Some(name) => {
            let fork = !name.eq_ignore_ascii_case(&repo);
            (name, fork)
        }
        None => match (&head.repo_id, &base.repo_id) {
            (Some(h), Some(b)) if h.is_u64() && h == b => (repo.clone(), false),
            _ => (String::new(), true),
        },
    };
    let author = pr
        .user
        .and_then(|u| u.login.or(u.username))
        .unwrap_or_default();
    let trusted = matches!(
        pr.author_association.as_deref(),
        Some("OWNER" | "MEMBER" | "COLLABORATOR")
    );
    Ok(PullUpdate {
        repo,
        git_ref,
        head: Some(head_sha),
        base_sha: base.sha.and_then(|s| s.parse().ok()),
        pr: PullRequest {
            number,
            title: pr.title.unwrap_or_default(),
            author,
            author_trusted: trusted,
            base_branch: required(base.git_ref, "pull_request.base.ref")?,
            head_branch: required(head.git_ref, "pull_request.head.ref")?,
            head_repo,
            fork,
            head_clone_url: None,
        },
        ..PullUpdate::default()
    })
}
