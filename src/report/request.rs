//! What every provider shares: the report in provider-neutral terms, the
//! request a provider makes of it (as data, so it is tested without a
//! network), and the URL helpers that derive a self-hosted API address from
//! the repository URL the configuration names.

use crate::secret::Secret;
use crate::store::{Build, BuildStatus, ReportJob};
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

/// Hosts cut descriptions at 140 characters (GitHub refuses longer ones).
pub const MAX_DESCRIPTION_CHARS: usize = 140;

/// The build state a report carries, as every provider distinguishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for an admin's approval (a fork's pull request).
    Waiting,
    /// Waiting for a worker.
    Queued,
    /// Running.
    Running,
    /// Finished, and passed.
    Succeeded,
    /// Finished, and a step failed.
    Failed,
    /// Could not run (clone failed, interrupted twice).
    Errored,
    /// Cancelled by a user or superseded by a newer push.
    Cancelled,
}

impl Phase {
    /// The phase a stored state reports; `None` for `skipped`, which
    /// reports nothing.
    pub fn of(state: BuildStatus) -> Option<Phase> {
        match state {
            BuildStatus::Waiting => Some(Phase::Waiting),
            BuildStatus::Queued => Some(Phase::Queued),
            BuildStatus::Running => Some(Phase::Running),
            BuildStatus::Success => Some(Phase::Succeeded),
            BuildStatus::Failure => Some(Phase::Failed),
            BuildStatus::Error => Some(Phase::Errored),
            BuildStatus::Cancelled => Some(Phase::Cancelled),
            BuildStatus::Skipped => None,
        }
    }

    /// The description a host is sent: generic words for the state. The
    /// build's reason (which may name paths, hosts or errors) stays on the
    /// build page, which the status links to.
    fn generic_description(self) -> &'static str {
        match self {
            Phase::Waiting => "waiting for approval",
            Phase::Queued => "queued",
            Phase::Running => "running",
            Phase::Succeeded => "build passed",
            Phase::Failed => "build failed",
            Phase::Errored => "the build could not run",
            Phase::Cancelled => "build cancelled",
        }
    }
}

/// A report, ready for a provider to phrase.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    /// The outbox row's id (the webhook provider's message id).
    pub id: i64,
    /// The build.
    pub build: &'a Build,
    /// The state reported.
    pub phase: Phase,
    /// The state as hookci names it (`queued`, `running`, `success`, ...).
    pub state: BuildStatus,
    /// The status context.
    pub context: &'a str,
    /// The build's reason at that state; may be empty.
    pub reason: &'a str,
    /// At most 140 characters.
    pub description: String,
    /// `public_url/builds/ID`.
    pub target_url: String,
}

impl<'a> Report<'a> {
    /// The report of an outbox row; an error for a state that reports nothing.
    pub fn new(job: &'a ReportJob, public_url: &str) -> Result<Report<'a>, String> {
        let phase = Phase::of(job.state)
            .ok_or_else(|| format!("a {} build reports no commit status", job.state))?;
        // The outbox writes "queued" for a new build, which is no reason.
        let reason = match job.description.trim() {
            d if d == job.state.as_str() => "",
            d => d,
        };
        Ok(Report {
            id: job.id,
            build: &job.build,
            phase,
            state: job.state,
            context: &job.context,
            reason,
            description: description(phase, reason),
            target_url: format!(
                "{}/builds/{}",
                public_url.trim_end_matches('/'),
                job.build.id
            ),
        })
    }
}

/// The description for `phase`, as public hosts show it: generic words for
/// the state, never the build's reason (a clone error may name internal
/// paths and hosts; the detail is on the build page). `_reason` is kept
/// for the providers that post to a configured URL.
pub fn description(phase: Phase, _reason: &str) -> String {
    truncate_chars(phase.generic_description(), MAX_DESCRIPTION_CHARS)
}

/// The first `max` characters of `s` (never splitting a character).
pub fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => s[..cut].to_owned(),
        None => s.to_owned(),
    }
}

/// One POST to a host, as data.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Where it goes.
    pub url: Url,
    /// Its headers; credentials are marked sensitive.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Vec<u8>,
    /// Values that must never appear in an error or a log (the token).
    pub secrets: Vec<Secret>,
}

impl Outgoing {
    /// A JSON POST of `body` to `url`.
    pub fn json(url: Url, body: &impl Serialize) -> Result<Outgoing, String> {
        let body =
            serde_json::to_vec(body).map_err(|e| format!("cannot encode the report: {e}"))?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(Outgoing {
            url,
            headers,
            body,
            secrets: Vec::new(),
        })
    }

    /// Adds a plain header.
    pub fn header(mut self, name: HeaderName, value: &'static str) -> Outgoing {
        self.headers.insert(name, HeaderValue::from_static(value));
        self
    }

    /// Adds a credential header, `prefix` + the secret, marked sensitive so
    /// that no debug output shows it.
    pub fn credential(
        mut self,
        name: HeaderName,
        prefix: &str,
        secret: &Secret,
    ) -> Result<Outgoing, String> {
        let mut value = HeaderValue::from_str(&format!("{prefix}{}", secret.expose()))
            .map_err(|_| "the [status] token is not a valid HTTP header value".to_owned())?;
        value.set_sensitive(true);
        self.headers.insert(name, value);
        self.secrets.push(secret.clone());
        Ok(self)
    }
}

/// Parses a configured API base (`[status] api_url`).
pub fn parse_base(api_url: &str) -> Result<Url, String> {
    Url::parse(api_url.trim()).map_err(|e| format!("[status] api_url is not a URL: {e}"))
}

/// `base` with `segments` appended to its path, each percent-encoded as one
/// segment (a `/` inside one becomes `%2F`, as GitLab's project ids need).
pub fn endpoint(base: &Url, segments: &[&str]) -> Result<Url, String> {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|()| format!("{base} cannot be an API base"))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// `base` without a trailing `suffix` path (`/api/v1`), so that an
/// `api_url` written with or without the API's version path both work.
pub fn strip_path_suffix(base: &Url, suffix: &str) -> Url {
    let mut url = base.clone();
    let path = url.path().trim_end_matches('/');
    if let Some(prefix) = path.strip_suffix(suffix) {
        let prefix = prefix.to_owned();
        url.set_path(&prefix);
    }
    url
}

/// `owner` and `name` of an `owner/name` repository.
pub fn owner_and_name(repo: &str) -> Result<(&str, &str), String> {
    match repo.split_once('/') {
        Some((owner, name)) if !owner.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((owner, name))
        }
        _ => Err(format!("the repository name {repo:?} is not OWNER/NAME")),
    }
}

/// The repository URL the configuration names, as an https URL without
/// credentials, query or fragment: the pipeline's `clone_url` (an ssh or
/// http one is read as https on the same host). Never a payload's URL: a
/// status token goes only where the configuration says.
pub fn configured_repo_urls(clone_url: Option<&str>) -> Vec<Url> {
    clone_url
        .and_then(crate::runner::checkout::web_location)
        .and_then(|loc| Url::parse(&loc.https_url()).ok())
        .filter(|u| u.scheme() == "https" && u.host_str().is_some())
        .into_iter()
        .collect()
}

/// The base a self-hosted forge serves under, from a repository URL that
/// ends in `/{repo}` (`.git` and a trailing slash allowed): scheme, host,
/// port and any path prefix before the repository. `https://git.example.com/sub/owner/repo`
/// with repo `owner/repo` gives `https://git.example.com/sub`.
pub fn base_before_repo(urls: &[Url], repo: &str) -> Option<Url> {
    let suffix = format!("/{}", repo.trim_matches('/')).to_ascii_lowercase();
    urls.iter().find_map(|url| {
        let mut url = url.clone();
        let path = url.path().trim_end_matches('/');
        let path = path.strip_suffix(".git").unwrap_or(path);
        // ASCII lowercasing keeps byte offsets, so the prefix cut is exact.
        let prefix = path.to_ascii_lowercase().strip_suffix(&suffix)?.len();
        let prefix = path[..prefix].to_owned();
        url.set_path(&prefix);
        Some(url)
    })
}

/// [`base_before_repo`], else the root of the first URL's host: a
/// configured clone URL whose path does not end in the repository still
/// names the server.
pub fn base_or_root(urls: &[Url], repo: &str) -> Option<Url> {
    base_before_repo(urls, repo).or_else(|| {
        let mut root = urls.first()?.clone();
        root.set_path("/");
        Some(root)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_generic_and_never_carry_the_reason() {
        assert_eq!(description(Phase::Queued, ""), "queued");
        assert_eq!(description(Phase::Running, " "), "running");
        assert_eq!(description(Phase::Succeeded, ""), "build passed");
        assert_eq!(
            description(Phase::Failed, "step test exited 101"),
            "build failed"
        );
        let leak = "clone failed: cannot create the mirror /var/lib/hookci/repos/x.git";
        assert_eq!(description(Phase::Errored, leak), "the build could not run");
        assert_eq!(
            description(Phase::Cancelled, "superseded by build 12"),
            "build cancelled"
        );
        assert_eq!(truncate_chars("short", 140), "short");
        assert_eq!(truncate_chars("ééé", 2), "éé");
    }

    #[test]
    fn endpoints_encode_each_segment() {
        let base = Url::parse("https://gitlab.example.com/prefix/").unwrap();
        let url = endpoint(
            &base,
            &["api", "v4", "projects", "group/sub/proj", "statuses"],
        );
        assert_eq!(
            url.unwrap().as_str(),
            "https://gitlab.example.com/prefix/api/v4/projects/group%2Fsub%2Fproj/statuses"
        );
        let root = Url::parse("https://api.github.com").unwrap();
        assert_eq!(
            endpoint(&root, &["repos", "o", "r"]).unwrap().as_str(),
            "https://api.github.com/repos/o/r"
        );
    }

    #[test]
    fn an_api_url_may_name_the_version_path_or_not() {
        let with = Url::parse("https://git.example.com/sub/api/v1/").unwrap();
        assert_eq!(
            strip_path_suffix(&with, "/api/v1").as_str(),
            "https://git.example.com/sub"
        );
        let without = Url::parse("https://git.example.com/sub").unwrap();
        assert_eq!(
            strip_path_suffix(&without, "/api/v1").as_str(),
            "https://git.example.com/sub"
        );
    }

    #[test]
    fn owner_and_name_need_exactly_one_slash() {
        assert_eq!(owner_and_name("o/r"), Ok(("o", "r")));
        assert!(owner_and_name("o").is_err());
        assert!(owner_and_name("a/b/c").is_err());
        assert!(owner_and_name("/r").is_err());
    }
}
