//! Bitbucket Cloud: build statuses on commits.
//!
//! `POST {api}/2.0/repositories/{workspace}/{slug}/commit/{sha}/statuses/build`
//! with `{key, state, url, description, name}`; states `INPROGRESS`,
//! `SUCCESSFUL`, `FAILED`, `STOPPED`. The key is the context, shortened
//! stably when longer than Bitbucket's 40 characters.

use super::request::{Outgoing, Phase, Report, endpoint, owner_and_name, truncate_chars};
use crate::secret::Secret;
use reqwest::Url;
use reqwest::header::{ACCEPT, AUTHORIZATION};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Bitbucket Cloud's API.
pub const DEFAULT_API: &str = "https://api.bitbucket.org";

/// The longest build status key Bitbucket Cloud takes.
pub const MAX_KEY_CHARS: usize = 40;

/// The API base when `[status] api_url` is not set.
pub fn default_api() -> Url {
    Url::parse(DEFAULT_API).expect("a valid constant URL")
}

/// The state Bitbucket (Cloud and Server) takes, but for cancelled builds.
pub fn state(phase: Phase) -> &'static str {
    match phase {
        Phase::Waiting | Phase::Queued | Phase::Running => "INPROGRESS",
        Phase::Succeeded => "SUCCESSFUL",
        Phase::Failed | Phase::Errored => "FAILED",
        Phase::Cancelled => "STOPPED",
    }
}

/// `context` as a key of at most `max` characters: itself when it fits,
/// else its start, `-`, and 8 hex digits of its SHA-256, so that two long
/// contexts with the same start still get different, stable keys.
pub fn short_key(context: &str, max: usize) -> String {
    if context.chars().count() <= max {
        return context.to_owned();
    }
    let digest = hex::encode(Sha256::digest(context.as_bytes()));
    let head = truncate_chars(context, max.saturating_sub(9));
    format!("{head}-{}", &digest[..8])
}

#[derive(Serialize)]
struct Body<'a> {
    key: &'a str,
    state: &'a str,
    url: &'a str,
    description: &'a str,
    name: &'a str,
}

/// The build status request Bitbucket Cloud and Server both take at `url`:
/// `{key, state, url, description, name}`, the key at most `max_key`
/// characters.
pub(super) fn status_request(
    url: Url,
    report: &Report<'_>,
    max_key: usize,
    state: &str,
    token: &Secret,
) -> Result<Outgoing, String> {
    let key = short_key(report.context, max_key);
    let body = Body {
        key: &key,
        state,
        url: &report.target_url,
        description: &report.description,
        name: report.context,
    };
    Outgoing::json(url, &body)?
        .header(ACCEPT, "application/json")
        .credential(AUTHORIZATION, "Bearer ", token)
}

/// The request for `report`.
pub fn request(report: &Report<'_>, api: &Url, token: &Secret) -> Result<Outgoing, String> {
    let (workspace, slug) = owner_and_name(&report.build.repo)?;
    let url = endpoint(
        api,
        &[
            "2.0",
            "repositories",
            workspace,
            slug,
            "commit",
            report.build.commit_str(),
            "statuses",
            "build",
        ],
    )?;
    status_request(url, report, MAX_KEY_CHARS, state(report.phase), token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_context_becomes_a_stable_forty_character_key() {
        let long = "hookci/a-pipeline-with-a-very-long-name-indeed";
        let key = short_key(long, MAX_KEY_CHARS);
        assert_eq!(key.chars().count(), 40);
        assert!(key.starts_with("hookci/a-pipeline-with-a-very-l-"));
        assert_eq!(key, short_key(long, MAX_KEY_CHARS));
        let other = short_key("hookci/a-pipeline-with-a-very-long-name-too", MAX_KEY_CHARS);
        assert_ne!(key, other);
        assert_eq!(short_key("hookci/short", MAX_KEY_CHARS), "hookci/short");
        assert_eq!(
            short_key(&"é".repeat(41), MAX_KEY_CHARS).chars().count(),
            40
        );
    }
}
