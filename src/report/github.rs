//! GitHub (github.com and GitHub Enterprise Server): the commit statuses API.
//!
//! `POST {api}/repos/{owner}/{repo}/statuses/{sha}` with
//! `{state, target_url, description, context}`; states `pending`,
//! `success`, `failure`, `error` (a cancelled build is an `error` whose
//! description says "cancelled").

use super::request::{Outgoing, Phase, Report, base_or_root, endpoint, owner_and_name};
use crate::secret::Secret;
use reqwest::Url;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderName};
use serde::Serialize;

/// github.com's API.
pub const DEFAULT_API: &str = "https://api.github.com";

/// The API base when `[status] api_url` is not set: github.com's API,
/// unless the pipeline's configured `clone_url` names another host, whose
/// GitHub Enterprise Server API is `https://{host}/api/v3`.
pub fn default_api(urls: &[Url], repo: &str) -> Url {
    let github_com = Url::parse(DEFAULT_API).expect("a valid constant URL");
    let Some(mut base) = base_or_root(urls, repo) else {
        return github_com;
    };
    match base.host_str() {
        Some("github.com" | "www.github.com") | None => github_com,
        Some(_) => {
            base.set_path("/api/v3");
            base
        }
    }
}

/// The state GitHub takes (and Gitea and Forgejo, whose status API copies
/// GitHub's).
pub fn state(phase: Phase) -> &'static str {
    match phase {
        Phase::Waiting | Phase::Queued | Phase::Running => "pending",
        Phase::Succeeded => "success",
        Phase::Failed => "failure",
        Phase::Errored | Phase::Cancelled => "error",
    }
}

/// A commit status as GitHub takes it (Gitea and Forgejo too).
#[derive(Serialize)]
pub(super) struct Body<'a> {
    pub(super) state: &'a str,
    pub(super) target_url: &'a str,
    pub(super) description: &'a str,
    pub(super) context: &'a str,
}

impl<'a> Body<'a> {
    /// The status body for `report`.
    pub(super) fn of(report: &'a Report<'_>) -> Body<'a> {
        Body {
            state: state(report.phase),
            target_url: &report.target_url,
            description: &report.description,
            context: report.context,
        }
    }
}

/// The request for `report`.
pub fn request(report: &Report<'_>, api: &Url, token: &Secret) -> Result<Outgoing, String> {
    let (owner, name) = owner_and_name(&report.build.repo)?;
    let url = endpoint(
        api,
        &["repos", owner, name, "statuses", report.build.commit_str()],
    )?;
    Outgoing::json(url, &Body::of(report))?
        .header(ACCEPT, "application/vnd.github+json")
        .header(
            HeaderName::from_static("x-github-api-version"),
            "2022-11-28",
        )
        .credential(AUTHORIZATION, "Bearer ", token)
}
