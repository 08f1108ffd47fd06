//! Generic senders: Standard Webhooks signing (see [`super::signature`])
//! over hookci's own small body, one ref update per delivery:
//! `{"repo", "ref", "before", "after", "clone_url", "message"}`.

use super::json::{self, string};
use super::{ParseError, Parsed, ParsedKind, RefUpdate, required, sha};
use serde::Deserialize;

#[derive(Deserialize)]
struct Payload {
    #[serde(default, deserialize_with = "string")]
    repo: Option<String>,
    #[serde(default, rename = "ref", deserialize_with = "string")]
    git_ref: Option<String>,
    #[serde(default, deserialize_with = "string")]
    before: Option<String>,
    #[serde(default, deserialize_with = "string")]
    after: Option<String>,
    #[serde(default, deserialize_with = "string")]
    clone_url: Option<String>,
    #[serde(default, deserialize_with = "string")]
    message: Option<String>,
}

pub(super) fn parse(body: &[u8]) -> Result<Parsed, ParseError> {
    let p: Payload = json::object(body)?;
    let repo = required(p.repo, "repo")?;
    let before = match p.before {
        Some(b) if !b.is_empty() => sha(Some(b), "before")?,
        _ => super::CommitId::ZERO,
    };
    let update = RefUpdate {
        repo: repo.clone(),
        git_ref: required(p.git_ref, "ref")?,
        before,
        after: sha(p.after, "after")?,
        head: None,
        created: false,
        deleted: false,
        forced: false,
        clone_url: required(p.clone_url, "clone_url")?,
        ssh_url: None,
        web_url: None,
        message: p.message.unwrap_or_default(),
        pusher: String::new(),
    };
    Ok(Parsed {
        event: "push".to_owned(),
        repo: Some(repo),
        kind: ParsedKind::Pushes(vec![update.into_event()]),
    })
}
