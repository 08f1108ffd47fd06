//! Gitea and Forgejo: the commit statuses API (Forgejo keeps Gitea's).
//!
//! `POST {base}/api/v1/repos/{owner}/{repo}/statuses/{sha}` with
//! `{state, target_url, description, context}` and `Authorization: token T`;
//! states `pending`, `success`, `failure`, `error` (Gitea's `warning` is not
//! used: no hookci state means it). A cancelled build is an `error` whose
//! description says "cancelled".

use super::request::{Outgoing, Report, base_or_root, endpoint, owner_and_name, strip_path_suffix};
use crate::secret::Secret;
use reqwest::Url;
use reqwest::header::{ACCEPT, AUTHORIZATION};

/// The server's base when `[status] api_url` is not set: the configured
/// `clone_url`'s host, as https, and any path prefix before
/// `/{owner}/{repo}` (Gitea may be served under a sub-path).
pub fn default_api(urls: &[Url], repo: &str) -> Result<Url, String> {
    base_or_root(urls, repo).ok_or_else(|| {
        "the status token goes only to an address from the configuration, and there is none: set [status] api_url (or the pipeline's clone_url)".to_owned()
    })
}

/// The request for `report`. `base` is the server's root; a configured
/// `api_url` ending in `/api/v1` is taken as the same root.
pub fn request(report: &Report<'_>, base: &Url, token: &Secret) -> Result<Outgoing, String> {
    let (owner, name) = owner_and_name(&report.build.repo)?;
    let url = endpoint(
        &strip_path_suffix(base, "/api/v1"),
        &[
            "api",
            "v1",
            "repos",
            owner,
            name,
            "statuses",
            report.build.commit_str(),
        ],
    )?;
    // Gitea's status API takes GitHub's body and states.
    Outgoing::json(url, &super::github::Body::of(report))?
        .header(ACCEPT, "application/json")
        .credential(AUTHORIZATION, "token ", token)
}
