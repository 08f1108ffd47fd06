//! Pipeline files (`pipelines/NAME.toml`): raw serde structs validated into
//! [`Pipeline`], and the pure trigger [`matcher`].
//!
//! Loading reads files and resolves secrets; everything after that is pure.
//! Validation errors name the file, line and column and say what is wrong in
//! one sentence.

mod check;
mod credentials;
pub mod glob;
pub mod matcher;
pub(crate) mod raw;
pub mod sandbox;
mod validate;

use crate::secret::Secret;
use crate::webhook::Host;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) use check::{Checker, secrets_skipped, settle_secret_role};
pub use check::{scope_secrets, secret_role, skip_secrets};
pub use glob::GlobList;
pub use validate::valid_name;

/// A validated pipeline, ready to match pushes and run builds.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The file stem: `[a-z0-9][a-z0-9._-]*`.
    pub name: String,
    /// The file it was loaded from.
    pub path: PathBuf,
    /// The repository's full name as the host reports it.
    pub repo: String,
    /// The host, when pinned; else detected from each delivery's headers.
    pub host: Option<Host>,
    /// The webhook secret; `None` only with `insecure_no_signature = true`.
    pub secret: Option<Secret>,
    /// Accept unsigned deliveries (only allowed without a secret).
    pub insecure_no_signature: bool,
    /// Accept GitHub's legacy `X-Hub-Signature: sha1=` alone.
    pub allow_sha1: bool,
    /// Overrides the payload's clone URL.
    pub clone_url: Option<String>,
    /// Clone credentials and options.
    pub clone: Clone,
    /// A push builds if any trigger matches; empty = every branch, no tags.
    pub triggers: Vec<Trigger>,
    /// Skip pushes whose head commit message carries a skip marker.
    pub skip_ci: bool,
    /// How builds of one branch are ordered.
    pub concurrency: Concurrency,
    /// `runs_on`: the labels a runner must offer to take its builds.
    pub runs_on: Vec<String>,
    /// The whole build's time limit.
    pub timeout: Option<Duration>,
    /// Extra environment for every step.
    pub env: BTreeMap<String, String>,
    /// Secret environment for every step; masked in logs.
    pub secrets: BTreeMap<String, Secret>,
    /// Where the commit status goes.
    pub status: Status,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// `[sandbox]` as this file writes it (merged over the server's at run time).
    pub sandbox: sandbox::SandboxKeys,
    /// `[limits]` as this file writes it.
    pub limits: sandbox::LimitKeys,
    /// Every file a `{ file = ... }` secret of this pipeline is read from.
    pub secret_files: Vec<PathBuf>,
    /// `[pull_requests]`: what pull requests from forks may do.
    pub pull_requests: PullRequests,
    /// The file's revision: the first 12 hex digits of the SHA-256 of its
    /// bytes, as loaded (at start and on each reload). A build records the
    /// revision it was matched with.
    pub revision: String,
}

/// The revision of a pipeline file whose text is `src`.
pub fn revision(src: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(src.as_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// The `[pull_requests]` table (SPEC section 10).
#[derive(Debug, Clone, Default)]
pub struct PullRequests {
    /// What a pull request from a fork does.
    pub forks: ForkPolicy,
    /// Host logins whose fork pull requests never wait.
    pub trusted_authors: Vec<String>,
    /// A fork pull request's steps get `[secrets]`, and its fetch the
    /// `[clone]` credentials (default false).
    pub secrets_for_forks: bool,
}

impl PullRequests {
    /// True when `author` is in `trusted_authors` (logins compare without
    /// regard to ASCII case, as hosts do).
    pub fn trusts(&self, author: &str) -> bool {
        !author.is_empty()
            && self
                .trusted_authors
                .iter()
                .any(|a| a.eq_ignore_ascii_case(author))
    }
}

/// `forks = approve | build | ignore`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForkPolicy {
    /// An untrusted author's fork pull request waits for an admin.
    #[default]
    Approve,
    /// Fork pull requests build without approval (sandboxed).
    Build,
    /// Fork pull requests never build.
    Ignore,
}

impl ForkPolicy {
    /// The name used in pipeline files.
    pub fn as_str(self) -> &'static str {
        match self {
            ForkPolicy::Approve => "approve",
            ForkPolicy::Build => "build",
            ForkPolicy::Ignore => "ignore",
        }
    }
}

/// The `[clone]` table.
#[derive(Debug, Clone, Default)]
pub struct Clone {
    /// A deploy key for ssh URLs (the key's contents).
    pub ssh_key: Option<Secret>,
    /// A token for https URLs.
    pub token: Option<Secret>,
    /// Check out submodules too.
    pub submodules: bool,
    /// Pin the key of an ssh host in no `known_hosts` file on first use
    /// (into `data_dir/known_hosts`) rather than refuse it.
    pub accept_new_host_keys: bool,
}

/// One `[[trigger]]`.
#[derive(Debug, Clone, Default)]
pub struct Trigger {
    /// Branch globs; `None` when the trigger names no branches.
    pub branches: Option<GlobList>,
    /// Tag globs; `None` when the trigger names no tags.
    pub tags: Option<GlobList>,
    /// Target branch globs of pull requests; `None` when the trigger names
    /// none (then it builds no pull request).
    pub pull_requests: Option<GlobList>,
    /// Path rules, decided later by the runner from git.
    pub paths: PathFilter,
}

pub use crate::model::PathFilter;

/// How builds of one branch are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Concurrency {
    /// One build per branch at a time, oldest first.
    #[default]
    Queue,
    /// A newer push cancels the same branch's queued and running builds.
    Supersede,
    /// No per-branch ordering.
    Parallel,
}

impl Concurrency {
    /// The name used in pipeline files and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Concurrency::Queue => "queue",
            Concurrency::Supersede => "supersede",
            Concurrency::Parallel => "parallel",
        }
    }
}

/// Which commit status provider a pipeline reports to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// GitHub's statuses API.
    Github,
    /// Gitea's statuses API.
    Gitea,
    /// Forgejo's statuses API (Gitea's).
    Forgejo,
    /// GitLab's commit statuses API.
    Gitlab,
    /// Bitbucket Cloud's build statuses.
    Bitbucket,
    /// Bitbucket Server's build statuses.
    BitbucketServer,
    /// A signed JSON POST to a URL (Standard Webhooks).
    Webhook,
    /// No reports.
    None,
}

impl Provider {
    /// Every provider, in the order their names are listed to users.
    pub const ALL: [Provider; 8] = [
        Provider::Github,
        Provider::Gitea,
        Provider::Forgejo,
        Provider::Gitlab,
        Provider::Bitbucket,
        Provider::BitbucketServer,
        Provider::Webhook,
        Provider::None,
    ];

    /// The name used in pipeline files and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Github => "github",
            Provider::Gitea => "gitea",
            Provider::Forgejo => "forgejo",
            Provider::Gitlab => "gitlab",
            Provider::Bitbucket => "bitbucket",
            Provider::BitbucketServer => "bitbucket-server",
            Provider::Webhook => "webhook",
            Provider::None => "none",
        }
    }
}

/// The `[status]` table.
#[derive(Debug, Clone)]
pub struct Status {
    /// The provider; `None` = the API of the pipeline's pinned `host`.
    pub provider: Option<Provider>,
    /// The API base; `None` = the host's public API, or one derived from
    /// the pipeline's configured `clone_url` (never from a payload).
    pub api_url: Option<String>,
    /// The API token.
    pub token: Option<Secret>,
    /// The status context (`hookci/NAME` by default); pull request builds
    /// report under `CONTEXT/pr`.
    pub context: String,
    /// The `webhook` provider's URL.
    pub url: Option<String>,
    /// The `webhook` provider's `whsec_` secret.
    pub secret: Option<Secret>,
}

/// One `[[steps]]`.
#[derive(Debug, Clone)]
pub struct Step {
    /// The step's name, unique in the pipeline.
    pub name: String,
    /// The script, run by the shell with `-ec`.
    pub run: String,
    /// `sh` (default) or `bash`.
    pub shell: Shell,
    /// The step's time limit.
    pub timeout: Option<Duration>,
    /// Extra environment for this step.
    pub env: BTreeMap<String, String>,
    /// A failure of this step does not fail the build.
    pub allow_failure: bool,
}

/// The shell a step runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shell {
    /// `/bin/sh -ec`.
    #[default]
    Sh,
    /// `bash -ec`.
    Bash,
}

impl Shell {
    /// The name used in pipeline files.
    pub fn as_str(self) -> &'static str {
        match self {
            Shell::Sh => "sh",
            Shell::Bash => "bash",
        }
    }
}

/// A finding of validation: an error (the pipeline is not loaded) or a
/// warning (`check` prints it; the pipeline loads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `file:line:col: ` prefix source (the file).
    pub file: PathBuf,
    /// 1-based line and column, where known.
    pub position: Option<(usize, usize)>,
    /// One sentence.
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.position {
            Some((l, c)) => write!(f, "{}:{l}:{c}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// The result of loading a pipelines directory.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The pipelines that loaded, by name.
    pub pipelines: BTreeMap<String, Pipeline>,
    /// Errors: each names a file that did not load.
    pub errors: Vec<Finding>,
    /// Warnings about pipelines that loaded.
    pub warnings: Vec<Finding>,
}

/// Loads every `*.toml` in `dir`, in name order. A file that fails is
/// reported in `errors` and left out; the others still load. A directory
/// that cannot be read is one error.
pub fn load_dir(dir: &Path) -> Loaded {
    let mut loaded = Loaded::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            let message = if e.kind() == std::io::ErrorKind::NotFound {
                "the pipelines directory does not exist".to_owned()
            } else {
                format!("cannot read the pipelines directory: {}", e.kind())
            };
            loaded.errors.push(Finding {
                file: std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()),
                position: None,
                message,
            });
            return loaded;
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    for file in files {
        match load_file(&file) {
            Ok((pipeline, warnings)) => {
                loaded.warnings.extend(warnings);
                loaded.pipelines.insert(pipeline.name.clone(), pipeline);
            }
            Err(errors) => loaded.errors.extend(errors),
        }
    }
    loaded
}

/// Loads one pipeline file; its name is the file stem. On success, the
/// warnings; on failure, every error found.
pub fn load_file(path: &Path) -> Result<(Pipeline, Vec<Finding>), Vec<Finding>> {
    let src = std::fs::read_to_string(path).map_err(|e| {
        vec![Finding {
            file: path.to_path_buf(),
            position: None,
            message: format!("cannot read the pipeline file: {}", e.kind()),
        }]
    })?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    validate::pipeline(&name, path, &src)
}

/// The pipelines being served, shared by the HTTP layer and the workers. A
/// reload (SIGHUP) swaps the whole set; readers keep the snapshot they took.
#[derive(Debug, Clone, Default)]
pub struct PipelineSet(
    std::sync::Arc<std::sync::RwLock<std::sync::Arc<BTreeMap<String, Pipeline>>>>,
);

impl PipelineSet {
    /// A set serving `pipelines`.
    pub fn new(pipelines: BTreeMap<String, Pipeline>) -> PipelineSet {
        PipelineSet(std::sync::Arc::new(std::sync::RwLock::new(
            std::sync::Arc::new(pipelines),
        )))
    }

    /// The pipelines as loaded now.
    pub fn current(&self) -> std::sync::Arc<BTreeMap<String, Pipeline>> {
        let guard = self.0.read().unwrap_or_else(|p| p.into_inner());
        std::sync::Arc::clone(&guard)
    }

    /// Swaps in a new set.
    pub fn replace(&self, pipelines: BTreeMap<String, Pipeline>) {
        let mut guard = self.0.write().unwrap_or_else(|p| p.into_inner());
        *guard = std::sync::Arc::new(pipelines);
    }
}

impl Pipeline {
    /// Where this pipeline's commit statuses go: the `[status] provider`,
    /// else the API of the pipeline's pinned `host`. The host a delivery's
    /// headers name (`_delivery_host`) is never consulted: the provider
    /// decides how the status token is sent, and that comes from the
    /// configuration alone. Gogs has no commit status API, and a generic
    /// sender has no host API: both report nothing unless a provider is
    /// named.
    pub fn provider_for(&self, _delivery_host: Option<Host>) -> Provider {
        if let Some(p) = self.status.provider {
            return p;
        }
        match self.host {
            Some(Host::Github) => Provider::Github,
            Some(Host::Gitlab) => Provider::Gitlab,
            Some(Host::Gitea) => Provider::Gitea,
            Some(Host::Forgejo) => Provider::Forgejo,
            Some(Host::Bitbucket) => Provider::Bitbucket,
            Some(Host::BitbucketServer) => Provider::BitbucketServer,
            Some(Host::Gogs) | Some(Host::Generic) | None => Provider::None,
        }
    }

    /// The context a pull request build reports under: `CONTEXT/pr`, so
    /// that a push build and a pull request build of one commit do not
    /// overwrite each other's status.
    pub fn pr_report_context(&self, delivery_host: Option<Host>) -> Option<String> {
        self.report_context(delivery_host)
            .map(|c| format!("{c}/pr"))
    }

    /// The status context builds report under, or `None` when
    /// they report nothing: no provider, or a host API provider without a
    /// `[status] token` (every host's status API needs one; a call without
    /// it could only fail).
    pub fn report_context(&self, delivery_host: Option<Host>) -> Option<String> {
        match self.provider_for(delivery_host) {
            Provider::None => None,
            Provider::Webhook => Some(self.status.context.clone()),
            Provider::Github
            | Provider::Gitea
            | Provider::Forgejo
            | Provider::Gitlab
            | Provider::Bitbucket
            | Provider::BitbucketServer => self
                .status
                .token
                .as_ref()
                .map(|_| self.status.context.clone()),
        }
    }
}
