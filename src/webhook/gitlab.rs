//! GitLab (gitlab.com and self-managed): `X-Gitlab-Event`, the
//! `X-Gitlab-Token` shared token or a Standard Webhooks signature, and the
//! push, tag push and system hook payloads.

use super::json::{self, list, nested, string};
use super::signature::{header, verify_standard_webhooks, verify_token};
use super::{ParseError, Parsed, ParsedKind, RefUpdate, VerifyError, event_header, sha};
use crate::secret::Secret;
use axum::http::HeaderMap;
use serde::Deserialize;
use std::time::SystemTime;

/// A Standard Webhooks `webhook-signature` (GitLab's signing token) when
/// sent, since it covers the body and the time; else the `X-Gitlab-Token`,
/// which is the secret itself.
pub(super) fn verify(
    headers: &HeaderMap,
    body: &[u8],
    secret: &Secret,
    now: SystemTime,
) -> Result<(), VerifyError> {
    if headers.contains_key("webhook-signature") {
        return verify_standard_webhooks(headers, body, secret, now);
    }
    match header(headers, "x-gitlab-token")? {
        Some(token) => verify_token(token, secret),
        None => Err(VerifyError::Missing),
    }
}

#[derive(Deserialize)]
struct Payload {
    #[serde(default, deserialize_with = "string")]
    event_name: Option<String>,
    #[serde(default, deserialize_with = "string")]
    object_kind: Option<String>,
    #[serde(default, rename = "ref", deserialize_with = "string")]
    git_ref: Option<String>,
    #[serde(default, deserialize_with = "string")]
    before: Option<String>,
    #[serde(default, deserialize_with = "string")]
    after: Option<String>,
    #[serde(default, deserialize_with = "string")]
    checkout_sha: Option<String>,
    #[serde(default, deserialize_with = "string")]
    user_username: Option<String>,
    #[serde(default, deserialize_with = "string")]
    user_name: Option<String>,
    #[serde(default, deserialize_with = "nested")]
    project: Option<Project>,
    #[serde(default, deserialize_with = "nested")]
    repository: Option<Repository>,
    #[serde(default, deserialize_with = "list")]
    commits: Vec<Commit>,
}

#[derive(Deserialize)]
struct Project {
    #[serde(default, deserialize_with = "string")]
    path_with_namespace: Option<String>,
    #[serde(default, deserialize_with = "string")]
    git_http_url: Option<String>,
    #[serde(default, deserialize_with = "string")]
    git_ssh_url: Option<String>,
    #[serde(default, deserialize_with = "string")]
    web_url: Option<String>,
}

/// The older home of the project's URLs, still sent beside `project`.
#[derive(Deserialize)]
struct Repository {
    #[serde(default, deserialize_with = "string")]
    git_http_url: Option<String>,
    #[serde(default, deserialize_with = "string")]
    git_ssh_url: Option<String>,
    #[serde(default, deserialize_with = "string")]
    homepage: Option<String>,
}

#[derive(Deserialize)]
struct Commit {
    #[serde(default, deserialize_with = "string")]
    id: Option<String>,
    #[serde(default, deserialize_with = "string")]
    message: Option<String>,
}

pub(super) fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Parsed, ParseError> {
    let event = event_header(headers, "x-gitlab-event", "X-Gitlab-Event header")?;
    let payload: Payload = json::object(body)?;
    let repo = repo_name(&payload);
    let kind = match event {
        "Push Hook" | "Tag Push Hook" => ParsedKind::Pushes(vec![push(payload)?.into_event()]),
        "Merge Request Hook" => merge_request(body)?,
        "System Hook" => {
            let name = payload
                .event_name
                .clone()
                .or_else(|| payload.object_kind.clone())
                .unwrap_or_default();
            match name.as_str() {
                "push" | "tag_push" => ParsedKind::Pushes(vec![push(payload)?.into_event()]),
                other => ParsedKind::Ignored(format!("gitlab system event {other} builds nothing")),
            }
        }
        other => ParsedKind::Ignored(format!("gitlab event {other} builds nothing")),
    };
    Ok(Parsed {
        event: event.to_owned(),
        repo,
        kind,
    })
}

/// `project.path_with_namespace`; for older payloads without `project`, the
/// path of `repository.homepage`.
fn repo_name(p: &Payload) -> Option<String> {
    let from_project = p
        .project
        .as_ref()
        .and_then(|pr| pr.path_with_namespace.clone());
    from_project
        .or_else(|| {
            let home = p.repository.as_ref()?.homepage.as_deref()?;
            let (_, rest) = home.split_once("://")?;
            let (_, path) = rest.split_once('/')?;
            Some(path.trim_matches('/').to_owned())
        })
        .filter(|name| !name.is_empty())
}

fn push(p: Payload) -> Result<RefUpdate, ParseError> {
    let repo = repo_name(&p).ok_or(ParseError::Missing("project.path_with_namespace"))?;
    let project = p.project.as_ref();
    let repository = p.repository.as_ref();
    let pick = |from_project: fn(&Project) -> &Option<String>,
                from_repository: fn(&Repository) -> &Option<String>| {
        project
            .and_then(|pr| from_project(pr).clone())
            .or_else(|| repository.and_then(|r| from_repository(r).clone()))
            .filter(|s| !s.is_empty())
    };
    let clone_url = pick(|pr| &pr.git_http_url, |r| &r.git_http_url)
        .ok_or(ParseError::Missing("project.git_http_url"))?;
    let ssh_url = pick(|pr| &pr.git_ssh_url, |r| &r.git_ssh_url);
    let web_url = pick(|pr| &pr.web_url, |r| &r.homepage);

    let after = sha(p.after, "after")?;
    // checkout_sha is the commit the ref resolves to (the tagged commit for
    // an annotated tag); null when the ref was deleted.
    let head = match p.checkout_sha {
        Some(c) => Some(sha(Some(c), "checkout_sha")?),
        None => None,
    };
    let wanted = head.as_ref().unwrap_or(&after).as_str();
    let message = p
        .commits
        .iter()
        .find(|c| {
            c.id.as_deref()
                .is_some_and(|id| id.eq_ignore_ascii_case(wanted))
        })
        .or(p.commits.last())
        .and_then(|c| c.message.clone())
        .unwrap_or_default();
    let pusher = p
        .user_username
        .filter(|u| !u.is_empty())
        .or(p.user_name)
        .unwrap_or_default();
    Ok(RefUpdate {
        repo,
        git_ref: super::required(p.git_ref, "ref")?,
        before: sha(p.before, "before")?,
        after,
        head,
        created: false,
        deleted: false,
        // GitLab does not say whether a push was forced.
        forced: false,
        clone_url,
        ssh_url,
        web_url,
        message,
        pusher,
    })
}

#[derive(Deserialize)]
struct MrPayload {
    #[serde(default, deserialize_with = "nested")]
    user: Option<MrUser>,
    #[serde(default, deserialize_with = "nested")]
    project: Option<Project>,
    #[serde(default, deserialize_with = "nested")]
    object_attributes: Option<MrAttributes>,
}

#[derive(Deserialize)]
struct MrUser {
    #[serde(default, deserialize_with = "string")]
    username: Option<String>,
}

#[derive(Deserialize)]
struct MrAttributes {
    #[serde(default)]
    iid: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "string")]
    action: Option<String>,
    #[serde(default, deserialize_with = "string")]
    title: Option<String>,
    #[serde(default, deserialize_with = "string")]
    source_branch: Option<String>,
    #[serde(default, deserialize_with = "string")]
    target_branch: Option<String>,
    #[serde(default)]
    source_project_id: Option<serde_json::Value>,
    #[serde(default)]
    target_project_id: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "nested")]
    source: Option<MrProject>,
    #[serde(default, deserialize_with = "nested")]
    last_commit: Option<Commit>,
    /// Set on an `update` that pushed new commits (the previous head).
    #[serde(default, deserialize_with = "string")]
    oldrev: Option<String>,
}

#[derive(Deserialize)]
struct MrProject {
    #[serde(default, deserialize_with = "string")]
    path_with_namespace: Option<String>,
}

/// `Merge Request Hook`: open, reopen, and an update that pushed new
/// commits (`oldrev` set) build; close and merge cancel; every other
/// action (a title edit, approvals, labels) builds nothing.
fn merge_request(body: &[u8]) -> Result<ParsedKind, ParseError> {
    let p: MrPayload = json::object(body)?;
    let mr = p
        .object_attributes
        .ok_or(ParseError::Missing("object_attributes"))?;
    let action = super::required(mr.action, "object_attributes.action")?;
    let new_commits = mr.oldrev.as_deref().is_some_and(|r| !r.is_empty());
    let builds = match action.as_str() {
        "open" | "reopen" => true,
        "update" if new_commits => true,
        "close" | "merge" => false,
        other => {
            let what = if other == "update" {
                "a merge request update without new commits"
            } else {
                "this merge request action"
            };
            return Ok(ParsedKind::Ignored(format!(
                "{what} ({other}) builds nothing"
            )));
        }
    };
    let project = p.project.ok_or(ParseError::Missing("project"))?;
    let repo = super::required(project.path_with_namespace, "project.path_with_namespace")?;
    let number = super::pr_number(mr.iid.as_ref())?;
    let git_ref = format!("refs/merge-requests/{number}/head");
    if !builds {
        return Ok(ParsedKind::PullRequestClosed(super::PullRequestClosed {
            repo,
            git_ref,
            number,
            merged: action == "merge",
        }));
    }
    let head = super::pr_sha(
        mr.last_commit.and_then(|c| c.id),
        "object_attributes.last_commit.id",
    )?;
    let head_repo = mr
        .source
        .and_then(|s| s.path_with_namespace)
        .unwrap_or_default();
    // The source project's id is what says "another project"; its path may
    // be absent from older payloads.
    let fork = match (&mr.source_project_id, &mr.target_project_id) {
        (Some(a), Some(b)) => a != b,
        _ => !head_repo.eq_ignore_ascii_case(&repo),
    };
    Ok(ParsedKind::PullRequest(Box::new(
        super::PullUpdate {
            git_ref,
            head: Some(head),
            base_sha: None,
            clone_url: super::required(project.git_http_url, "project.git_http_url")?,
            ssh_url: project.git_ssh_url,
            web_url: project.web_url,
            pr: super::PullRequest {
                number,
                title: mr.title.unwrap_or_default(),
                // GitLab's payload names the user who acted, and says
                // nothing of their role in the project: never trusted by
                // the host's word, only through trusted_authors.
                author: p.user.and_then(|u| u.username).unwrap_or_default(),
                author_trusted: false,
                base_branch: super::required(mr.target_branch, "object_attributes.target_branch")?,
                head_branch: super::required(mr.source_branch, "object_attributes.source_branch")?,
                head_repo,
                fork,
                head_clone_url: None,
            },
            repo,
        }
        .into_event(),
    )))
}
