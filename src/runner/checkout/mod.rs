//! Checkout with libgit2: one bare mirror per clone URL under
//! `data_dir/repos`, fetched incrementally, and a workspace per build at
//! exactly the build's commit (detached HEAD) that contains nothing else:
//! a finished build's workspace is parked (`pool`) and the next build of the
//! same mirror updates it, rewriting only the files that differ; without a
//! parked one, a fresh checkout.
//!
//! Credentials (an ssh deploy key, an https token) go through git2's
//! credential callback, and only to the clone URL's scheme, host and port:
//! never in a URL, a log or an error. Blocking git2 work runs on the
//! blocking pool.
//!
//! *Invariant:* operations on one mirror are serialised by a per-mirror
//! lock that the blocking work itself holds, so a build cancelled mid-fetch
//! cannot let a second fetch into the same mirror: a fetch takes it
//! exclusively, a diff, a workspace checkout or the cleaning of a parked
//! workspace shares it.
//!
//! Files: `url` (parsing, redaction, mirror names), `auth` (callbacks and
//! error sentences), `mirror` (the bare cache), `worktree` (workspaces),
//! `pool` (parked workspaces, and why reusing one is safe), `policy` (which
//! payload clone URLs may be fetched; the https location of a clone URL).

mod auth;
mod known_hosts;
mod mirror;
mod policy;
mod pool;
mod url;
mod worktree;

pub use known_hosts::KnownHosts;
pub use policy::{WebLocation, check_payload_url, web_location};

use self::url::RemoteUrl;
use crate::secret::Secret;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::RwLock;

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
    /// An ssh host in no `known_hosts` file is accepted once and its key
    /// pinned into hookci's own (`data_dir/known_hosts`); otherwise it is
    /// refused.
    pub accept_new_host_keys: bool,
}

/// Why a checkout failed, in words a user can act on. Never contains a
/// credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckoutError {
    /// The repository has no such ref (a trigger's branch that isn't there).
    #[error("{url} has no ref {git_ref}")]
    NoSuchRef {
        /// The repository, as the user wrote it.
        url: String,
        /// The ref asked for.
        git_ref: String,
    },
    /// Anything else: the sentence says why.
    #[error("{0}")]
    Failed(String),
}

/// What a fetch did: the mirror, the peeled commit, and how much came over
/// the wire (zero objects when the mirror was up to date).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The mirror's directory.
    pub mirror: PathBuf,
    /// The full id of the commit the requested id peels to.
    pub commit: String,
    /// Objects received by this fetch.
    pub received_objects: usize,
    /// Bytes received by this fetch.
    pub received_bytes: usize,
}

/// hookci's own `known_hosts`: `known_hosts` beside the mirrors' directory
/// (`data_dir/known_hosts` for `data_dir/repos`).
fn own_known_hosts(root: &Path) -> PathBuf {
    root.parent().unwrap_or(Path::new("")).join("known_hosts")
}

/// `url` as it may be shown in a log or an error: without userinfo (a
/// password, a token), query or fragment.
pub fn display_url(url: &str) -> String {
    RemoteUrl::parse(url).display().to_owned()
}

/// The mirror cache. Cheap to share behind an `Arc`; one per daemon.
#[derive(Debug)]
pub struct Mirrors {
    root: PathBuf,
    locks: Mutex<HashMap<PathBuf, Arc<RwLock<()>>>>,
    pool: Arc<pool::Pool>,
    known_hosts: Arc<KnownHosts>,
}

impl Mirrors {
    /// A cache rooted at `root` (`data_dir/repos`). Parked workspaces go to
    /// `workspace-pool` beside it (`data_dir/workspace-pool`), which nothing
    /// touches before the first [`Mirrors::park`].
    pub fn new(root: PathBuf) -> Mirrors {
        let pool_dir = root
            .parent()
            .unwrap_or(Path::new(""))
            .join("workspace-pool");
        Mirrors {
            locks: Mutex::new(HashMap::new()),
            pool: Arc::new(pool::Pool::new(pool_dir)),
            known_hosts: Arc::new(KnownHosts::default().with_own(own_known_hosts(&root))),
            root,
        }
    }

    /// Checks ssh host keys against these `known_hosts` files instead of
    /// `~/.ssh/known_hosts` and `/etc/ssh/ssh_known_hosts` (hookci's own,
    /// beside the mirrors, is still read and pinned into).
    pub fn set_known_hosts(&mut self, files: Vec<PathBuf>) {
        self.known_hosts =
            Arc::new(KnownHosts::from_files(files).with_own(own_known_hosts(&self.root)));
    }

    /// The mirror directory for a clone URL (named from a hash of the URL
    /// without credentials, plus a readable tail).
    pub fn mirror_path(&self, url: &str) -> PathBuf {
        self.root.join(RemoteUrl::parse(url).mirror_name())
    }

    /// Fetches `spec.url` into its mirror (only what is new comes over the
    /// wire) so that `commit` is present, and returns the mirror's path and
    /// the full id of the commit (`commit` peeled: an annotated tag becomes
    /// the tagged commit; an abbreviated id is expanded). An empty `commit`
    /// means the commit `git_ref` points to once fetched (`hookci run`).
    pub async fn fetch(
        &self,
        spec: &CloneSpec,
        git_ref: &str,
        commit: &str,
    ) -> Result<(PathBuf, String), CheckoutError> {
        let fetched = self.fetch_with_stats(spec, git_ref, commit).await?;
        Ok((fetched.mirror, fetched.commit))
    }

    /// [`Mirrors::fetch`], also telling how much was transferred.
    pub async fn fetch_with_stats(
        &self,
        spec: &CloneSpec,
        git_ref: &str,
        commit: &str,
    ) -> Result<Fetched, CheckoutError> {
        let path = self.mirror_path(&spec.url);
        let guard = self.lock(&path).write_owned().await;
        let known_hosts = Arc::clone(&self.known_hosts);
        let (spec, git_ref, commit) = (spec.clone(), git_ref.to_owned(), commit.to_owned());
        let started = std::time::Instant::now();
        let fetched = blocking(move || {
            let _guard = guard;
            mirror::fetch(&path, &spec, &git_ref, &commit, &known_hosts)
        })
        .await?;
        tracing::debug!(
            mirror = %fetched.mirror.display(),
            commit = %fetched.commit,
            objects = fetched.received_objects,
            bytes = fetched.received_bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "fetched"
        );
        Ok(fetched)
    }

    /// The message of `commit`, from the mirror (a trigger has no payload
    /// to carry it).
    pub async fn commit_message(
        &self,
        mirror: &Path,
        commit: &str,
    ) -> Result<String, CheckoutError> {
        let guard = self.lock(mirror).read_owned().await;
        let (mirror, commit) = (mirror.to_path_buf(), commit.to_owned());
        blocking(move || {
            let _guard = guard;
            mirror::commit_message(&mirror, &commit)
        })
        .await
    }

    /// The files changed between `before` and `commit`, from the mirror.
    /// `None` when there is no `before` (a new ref) or it is not in the mirror.
    pub async fn changed_files(
        &self,
        mirror: &Path,
        before: &str,
        commit: &str,
    ) -> Result<Option<Vec<String>>, CheckoutError> {
        self.changed(mirror, before, commit, false).await
    }

    /// The files a pull request changes: between the merge base of `base`
    /// (its base branch's commit) and `commit`, and `commit`. `None` when
    /// `base` is not in the mirror or the two share no history.
    pub async fn changed_files_since_merge_base(
        &self,
        mirror: &Path,
        base: &str,
        commit: &str,
    ) -> Result<Option<Vec<String>>, CheckoutError> {
        self.changed(mirror, base, commit, true).await
    }

    async fn changed(
        &self,
        mirror: &Path,
        before: &str,
        commit: &str,
        since_merge_base: bool,
    ) -> Result<Option<Vec<String>>, CheckoutError> {
        let guard = self.lock(mirror).read_owned().await;
        let (mirror, before, commit) = (mirror.to_path_buf(), before.to_owned(), commit.to_owned());
        blocking(move || {
            let _guard = guard;
            mirror::changed_files(&mirror, &before, &commit, since_merge_base)
        })
        .await
    }

    /// Makes `dest` (which must not exist, or be empty) a workspace with a
    /// detached HEAD at `commit` and nothing but the commit's files, and
    /// its submodules when `spec` asks. A clean parked workspace of this
    /// mirror is moved there and updated (only the files that differ are
    /// written); otherwise, or if that fails, a fresh checkout. The
    /// workspace borrows the mirror's objects through
    /// `objects/info/alternates`, so it is only valid while the mirror is.
    /// Hand it back with [`Mirrors::park`] (or [`Mirrors::forget`] it).
    pub async fn checkout(
        &self,
        mirror: &Path,
        spec: &CloneSpec,
        commit: &str,
        dest: &Path,
    ) -> Result<(), CheckoutError> {
        let guard = self.lock(mirror).read_owned().await;
        let (mirror, spec, commit, dest) = (
            mirror.to_path_buf(),
            spec.clone(),
            commit.to_owned(),
            dest.to_path_buf(),
        );
        let pool = self.pool.clone();
        let known_hosts = Arc::clone(&self.known_hosts);
        blocking(move || {
            let _guard = guard;
            let url = RemoteUrl::parse(&spec.url);
            // Submodule workspaces are not pooled: their nested
            // repositories would need the same rebuilding, recursively.
            let pooled = !spec.submodules;
            // (A non-empty `dest` is refused by the fresh checkout.)
            let free = std::fs::read_dir(&dest).map_or(true, |mut d| d.next().is_none());
            if pooled
                && free
                && let Some(parked) = pool.take(&mirror, pool::WAIT_FOR_CLEANING)
                && reuse(&pool, parked, &dest, &commit)?
            {
                return Ok(());
            }
            let creds = worktree::Creds {
                url: &url,
                ssh_key: spec.ssh_key.as_ref(),
                token: spec.token.as_ref(),
                known_hosts: &known_hosts,
                accept_new_host_keys: spec.accept_new_host_keys,
            };
            let oid = worktree::checkout(&mirror, &creds, &commit, &dest, spec.submodules)?;
            if pooled {
                match pool::Trusted::capture(&dest, &mirror, url.display(), oid) {
                    Ok(trusted) => pool.hand(dest, trusted),
                    Err(e) => tracing::debug!(error = %e, "cannot read the index; not pooling"),
                }
            }
            Ok(())
        })
        .await
    }

    /// Hands back the workspace `checkout` made by [`Mirrors::checkout`],
    /// once no build uses it any more: it is moved (renamed) into the pool
    /// and cleaned there in the background (not awaited), ready for the
    /// next build of its mirror. Returns false when it was not parked (not
    /// one of ours, the pool is full or another process's, it could not be
    /// moved): then the caller deletes it. Must be called on a Tokio
    /// runtime.
    pub fn park(&self, checkout: &Path) -> bool {
        let Some(parked) = self.pool.park(checkout) else {
            return false;
        };
        let lock = self.lock(&parked.trusted.mirror);
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = lock.blocking_read();
            let started = std::time::Instant::now();
            let mirror = parked.trusted.mirror.clone();
            match worktree::refresh(&parked.dir, &parked.trusted, None) {
                Ok(trusted) => {
                    tracing::debug!(
                        workspace = %parked.dir.display(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "cleaned a parked workspace"
                    );
                    pool.cleaned(&mirror, &parked.dir, Some(trusted));
                }
                Err(e) => {
                    tracing::warn!("{e}; deleting it");
                    pool.cleaned(&mirror, &parked.dir, None);
                    if let Err(e) = pool::remove_path(&parked.dir) {
                        tracing::warn!(workspace = %parked.dir.display(), error = %e, "cannot delete the workspace");
                    }
                }
            }
        });
        true
    }

    /// Forgets the workspace `checkout` made by [`Mirrors::checkout`],
    /// which the caller deletes instead of parking it.
    pub fn forget(&self, checkout: &Path) {
        self.pool.forget(checkout);
    }

    /// Where parked workspaces go (`workspace-pool` beside the mirrors).
    pub fn pool_dir(&self) -> &Path {
        self.pool.dir()
    }

    /// How many parked workspaces `mirror` has: (clean, being cleaned).
    pub fn parked(&self, mirror: &Path) -> (usize, usize) {
        self.pool.counts(mirror)
    }

    fn lock(&self, mirror: &Path) -> Arc<RwLock<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        locks.entry(mirror.to_path_buf()).or_default().clone()
    }
}

/// Moves a parked workspace to `dest` and updates it to `commit` (true).
/// When it cannot be used it is deleted and `dest` left as it was (false:
/// the caller checks out afresh); an error only when it cannot be deleted.
fn reuse(
    pool: &pool::Pool,
    parked: pool::Parked,
    dest: &Path,
    commit: &str,
) -> Result<bool, CheckoutError> {
    let started = std::time::Instant::now();
    if let Some(parent) = dest.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let (failed, doomed) = match std::fs::rename(&parked.dir, dest) {
        Err(e) => (pool::unusable(&parked.dir, "move it", &e), parked.dir),
        Ok(()) => match worktree::refresh(dest, &parked.trusted, Some(commit)) {
            Ok(trusted) => {
                tracing::debug!(
                    workspace = %dest.display(),
                    commit = %trusted.commit,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "updated a parked workspace"
                );
                pool.hand(dest.to_path_buf(), trusted);
                return Ok(true);
            }
            Err(e) => (e, dest.to_path_buf()),
        },
    };
    tracing::warn!("{failed}; checking out afresh");
    pool::remove_path(&doomed).map_err(|e| {
        CheckoutError::Failed(format!(
            "cannot remove the unusable workspace {}: {e}",
            doomed.display()
        ))
    })?;
    Ok(false)
}

/// Runs git2 work on the blocking pool; a panic there becomes an error.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, CheckoutError> + Send + 'static,
) -> Result<T, CheckoutError> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        tracing::error!("git task failed: {e}");
        Err(CheckoutError::Failed(
            "the git task failed unexpectedly (see the daemon log)".into(),
        ))
    })
}
