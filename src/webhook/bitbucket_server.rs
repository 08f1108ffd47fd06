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
        "pr:opened" | "pr:from_ref_updated" => pull_request(body, true)?,
        "pr:merged" | "pr:declined" => pull_request(body, false)?,
        other => ParsedKind::Ignored(format!("bitbucket-server event {other} builds nothing")),
    };
    // A pull request's payload names its repositories in its refs only.
    let repo = match &kind {
        ParsedKind::PullRequest(e) => Some(e.repo.clone()),
        ParsedKind::PullRequestClosed(c) => Some(c.repo.clone()),
        ParsedKind::Ping | ParsedKind::Pushes(_) | ParsedKind::Ignored(_) => repo,
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
            .find(|c| {
                c.id.as_deref()
                    .is_some_and(|id| id.eq_ignore_ascii_case(after.as_str()))
            })
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

#[derive(Deserialize)]
struct PrPayload {
    #[serde(default, rename = "pullRequest", deserialize_with = "nested")]
    pull_request: Option<Pr>,
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
    author: Option<Participant>,
    #[serde(default, rename = "fromRef", deserialize_with = "nested")]
    from_ref: Option<PrRef>,
    #[serde(default, rename = "toRef", deserialize_with = "nested")]
    to_ref: Option<PrRef>,
}

#[derive(Deserialize)]
struct Participant {
    #[serde(default, deserialize_with = "nested")]
    user: Option<Actor>,
}

#[derive(Deserialize)]
struct PrRef {
    #[serde(default, rename = "displayId", deserialize_with = "string")]
    display_id: Option<String>,
    #[serde(default, deserialize_with = "string")]
    id: Option<String>,
    #[serde(default, rename = "latestCommit", deserialize_with = "string")]
    latest_commit: Option<String>,
    #[serde(default, deserialize_with = "nested")]
    repository: Option<Repository>,
}

impl PrRef {
    /// The branch's short name: `displayId`, else the ref without `refs/heads/`.
    fn branch(&self) -> Option<String> {
        self.display_id
            .clone()
            .filter(|d| !d.is_empty())
            .or_else(|| {
                let id = self.id.as_deref()?;
                Some(id.strip_prefix("refs/heads/").unwrap_or(id).to_owned())
            })
    }
}

/// `pr:opened` and `pr:from_ref_updated` build; `pr:merged` and
/// `pr:declined` cancel; `pr:modified` (title, description, target) and
/// reviews build nothing. The head commit is fetched from the target
/// repository's `refs/pull-requests/N/from`, which Bitbucket Server keeps
/// for forks too.
fn pull_request(body: &[u8], builds: bool) -> Result<ParsedKind, ParseError> {
    let p: PrPayload = json::object(body)?;
    let pr = p.pull_request.ok_or(ParseError::Missing("pullRequest"))?;
    let to = pr.to_ref.ok_or(ParseError::Missing("pullRequest.toRef"))?;
    let to_repo = to
        .repository
        .as_ref()
        .ok_or(ParseError::Missing("pullRequest.toRef.repository"))?;
    let repo = repo_name(to_repo).ok_or(ParseError::Missing("pullRequest.toRef.repository"))?;
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
    let from = pr
        .from_ref
        .ok_or(ParseError::Missing("pullRequest.fromRef"))?;
    let head = super::pr_sha(
        from.latest_commit.clone(),
        "pullRequest.fromRef.latestCommit",
    )?;
    let head_repo = from
        .repository
        .as_ref()
        .and_then(repo_name)
        .unwrap_or_default();
    let fork = !head_repo.eq_ignore_ascii_case(&repo);
    let links = to_repo.links.as_ref();
    let clone = |name: &str| {
        links?
            .clone
            .iter()
            .find(|l| l.name.as_deref() == Some(name))?
            .href
            .clone()
    };
    let base_sha = super::pr_sha(to.latest_commit.clone(), "").ok();
    Ok(ParsedKind::PullRequest(Box::new(
        super::PullUpdate {
            git_ref,
            head: Some(head),
            base_sha,
            clone_url: clone("http").unwrap_or_default(),
            ssh_url: clone("ssh"),
            web_url: links
                .and_then(|l| l.self_.first())
                .and_then(|l| l.href.clone()),
            pr: super::PullRequest {
                number,
                title: pr.title.unwrap_or_default(),
                author: pr
                    .author
                    .and_then(|a| a.user)
                    .and_then(|u| u.name)
                    .unwrap_or_default(),
                // The payload's role is the author's role in the pull
                // request, not their permission on the repository.
                author_trusted: false,
                base_branch: required(to.branch(), "pullRequest.toRef.displayId")?,
                head_branch: required(from.branch(), "pullRequest.fromRef.displayId")?,
                head_repo,
                fork,
                head_clone_url: None,
            },
            repo,
        }
        .into_event(),
    )))
}
