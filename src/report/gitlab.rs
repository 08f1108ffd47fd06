//! GitLab (gitlab.com and self-managed): the commit statuses API.
//!
//! `POST {base}/api/v4/projects/{url-encoded path_with_namespace}/statuses/{sha}`
//! with `{state, name, target_url, description}` and `PRIVATE-TOKEN`; states
//! `pending`, `running`, `success`, `failed`, `canceled`.

use super::request::{Outgoing, Phase, Report, base_or_root, endpoint, strip_path_suffix};
use crate::secret::Secret;
use reqwest::Url;
use reqwest::header::{ACCEPT, HeaderName};
use serde::Serialize;

/// gitlab.com, the public host.
pub const DEFAULT_API: &str = "https://gitlab.com";

/// The server's base when `[status] api_url` is not set: the configured
/// `clone_url`'s host, as https, with any path prefix before the project's
/// path; without a `clone_url`, gitlab.com.
pub fn default_api(urls: &[Url], repo: &str) -> Url {
    base_or_root(urls, repo)
        .unwrap_or_else(|| Url::parse(DEFAULT_API).expect("a valid constant URL"))
}

/// The state GitLab takes.
pub fn state(phase: Phase) -> &'static str {
    match phase {
        Phase::Waiting | Phase::Queued => "pending",
        Phase::Running => "running",
        Phase::Succeeded => "success",
        Phase::Failed | Phase::Errored => "failed",
        Phase::Cancelled => "canceled",
    }
}

/// True when GitLab refused a status because the commit already has it:
/// GitLab answers 400 "Cannot transition status via :enqueue from :pending"
/// to a repeat of the same state, which is what a retry after a lost answer
/// sends. The host has the state, so the report counts as delivered.
pub fn already_in_state(phase: Phase, status: u16, body: &str) -> bool {
    status == 400
        && body.contains("Cannot transition status")
        && body.contains(&format!("from :{} ", state(phase)))
}

#[derive(Serialize)]
struct Body<'a> {
    state: &'a str,
    name: &'a str,
    target_url: &'a str,
    description: &'a str,
}

/// The request for `report`. `base` is the server's root; a configured
/// `api_url` ending in `/api/v4` is taken as the same root.
pub fn request(report: &Report<'_>, base: &Url, token: &Secret) -> Result<Outgoing, String> {
    let project = report.build.repo.trim_matches('/');
    if project.is_empty() {
        return Err("the project path is empty".to_owned());
    }
    let url = endpoint(
        &strip_path_suffix(base, "/api/v4"),
        &[
            "api",
            "v4",
            "projects",
            project,
            "statuses",
            report.build.commit_str(),
        ],
    )?;
    let body = Body {
        state: state(report.phase),
        name: report.context,
        target_url: &report.target_url,
        description: &report.description,
    };
    Outgoing::json(url, &body)?
        .header(ACCEPT, "application/json")
        .credential(HeaderName::from_static("private-token"), "", token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_state_is_recognised_in_gitlabs_refusal() {
        let body = r#"{"message":"Cannot transition status via :run from :running (Reason(s): Status cannot transition via \"run\".)"}"#;
        assert!(already_in_state(Phase::Running, 400, body));
        assert!(!already_in_state(Phase::Queued, 400, body));
        assert!(!already_in_state(Phase::Running, 401, body));
    }
}
