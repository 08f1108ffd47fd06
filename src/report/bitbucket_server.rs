//! Bitbucket Server and Data Center: build statuses on commits.
//!
//! `POST {base}/rest/api/latest/projects/{key}/repos/{slug}/commits/{sha}/builds`
//! with `{key, state, url, description, name}`; states `INPROGRESS`,
//! `SUCCESSFUL`, `FAILED`, `CANCELLED`. This is the repository-scoped API
//! (Bitbucket Server 7.4 and later), chosen over the legacy
//! `/rest/build-status/1.0/commits/{sha}`: it ties the status to the
//! repository, so the same commit in a fork does not show it, and it is the
//! one Atlassian keeps developing. Servers older than 7.4 answer 404, which
//! is logged on the report.

use super::bitbucket;
use super::request::{Outgoing, Phase, Report, endpoint, owner_and_name};
use crate::secret::Secret;
use reqwest::Url;

/// The longest build status key Bitbucket Server takes.
pub const MAX_KEY_CHARS: usize = 255;

/// The server's base when `[status] api_url` is not set, from the
/// configured `clone_url` (`{base}/scm/key/slug.git`, read as https), or a
/// repository page (`{base}/projects/KEY/repos/slug/browse`).
pub fn default_api(urls: &[Url]) -> Result<Url, String> {
    urls.iter()
        .find_map(|url| {
            let mut url = url.clone();
            let segments: Vec<String> = url.path_segments()?.map(str::to_owned).collect();
            let at = segments.iter().enumerate().position(|(i, s)| {
                let page = matches!(s.as_str(), "projects" | "users")
                    && segments.get(i + 2).is_some_and(|r| r == "repos");
                let clone = s == "scm" && segments.len() >= i + 3;
                page || clone
            })?;
            // The segments are still percent-encoded: set them back as they were.
            url.set_path(&format!("/{}", segments[..at].join("/")));
            Some(url)
        })
        .ok_or_else(|| {
            "the status token goes only to an address from the configuration, and the pipeline's clone_url names no Bitbucket Server: set [status] api_url"
                .to_owned()
        })
}

/// The state Bitbucket Server takes.
pub fn state(phase: Phase) -> &'static str {
    match phase {
        Phase::Waiting | Phase::Queued | Phase::Running => "INPROGRESS",
        Phase::Succeeded => "SUCCESSFUL",
        Phase::Failed | Phase::Errored => "FAILED",
        Phase::Cancelled => "CANCELLED",
    }
}

/// The request for `report`; the repository is `PROJECT/slug`.
pub fn request(report: &Report<'_>, base: &Url, token: &Secret) -> Result<Outgoing, String> {
    let (project, slug) = owner_and_name(&report.build.repo)?;
    let url = endpoint(
        base,
        &[
            "rest",
            "api",
            "latest",
            "projects",
            project,
            "repos",
            slug,
            "commits",
            report.build.commit_str(),
            "builds",
        ],
    )?;
    bitbucket::status_request(url, report, MAX_KEY_CHARS, state(report.phase), token)
}
