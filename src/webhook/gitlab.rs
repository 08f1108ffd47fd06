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
    let wanted = head.as_deref().unwrap_or(&after);
    let message = p
        .commits
        .iter()
        .find(|c| c.id.as_deref() == Some(wanted))
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
