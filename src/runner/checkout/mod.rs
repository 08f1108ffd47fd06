//! Checkout with libgit2: one bare mirror per clone URL under
//! `data_dir/repos`, fetched incrementally, and a fresh workspace per build
//! at exactly the build's commit (detached HEAD).
//!
//! Credentials (an ssh deploy key, an https token) go through git2's
//! credential callback: never in a URL, a log or an error. Blocking git2 work
//! runs on the blocking pool; one mirror is fetched by one build at a time.

use crate::secret::Secret;
use std::path::{Path, PathBuf};

/// What to clone and how to authenticate.
#[derive(Debug, Clone)]
pub struct CloneSpec {
    /// Any URL or path git2 takes.
    pub url: String,
    /// An ssh private key (contents), for ssh URLs.
    pub ssh_key: Option<Secret>,
    /// A token, for https URLs.
    pub token: Option<Secret>,
    /// Check out submodules too.
    pub submodules: bool,
}

/// Why a checkout failed, in words a user can act on. Never contains a
/// credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CheckoutError(pub String);

/// The mirror cache.
#[derive(Debug)]
pub struct Mirrors {
    root: PathBuf,
}

impl Mirrors {
    /// A cache rooted at `root` (`data_dir/repos`).
    pub fn new(root: PathBuf) -> Mirrors {
        Mirrors { root }
    }

    /// Fetches `spec.url` into its mirror (only what is new comes over the
    /// wire) so that `commit` is present, and returns the mirror's path and
    /// the full id of the commit (`commit` peeled: an annotated tag becomes
    /// the tagged commit; an abbreviated id is expanded).
    pub async fn fetch(
        &self,
        spec: &CloneSpec,
        git_ref: &str,
        commit: &str,
    ) -> Result<(PathBuf, String), CheckoutError> {
        let _ = (spec, git_ref, commit, &self.root);
        Err(CheckoutError("not implemented".into()))
    }

    /// The files changed between `before` and `commit`, from the mirror.
    /// `None` when there is no `before` (a new ref) or it is not in the mirror.
    pub async fn changed_files(
        &self,
        mirror: &Path,
        before: &str,
        commit: &str,
    ) -> Result<Option<Vec<String>>, CheckoutError> {
        let _ = (mirror, before, commit);
        Ok(None)
    }

    /// Creates a fresh workspace at `dest` (which must not exist) with a
    /// detached HEAD at `commit`, and its submodules when `spec` asks.
    pub async fn checkout(
        &self,
        mirror: &Path,
        spec: &CloneSpec,
        commit: &str,
        dest: &Path,
    ) -> Result<(), CheckoutError> {
        let _ = (mirror, spec, commit, dest);
        Err(CheckoutError("not implemented".into()))
    }
}
