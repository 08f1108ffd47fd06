//! The bare mirror of one clone URL: created on first use, fetched
//! incrementally, re-created once when a killed fetch left it unusable.
//! Everything here blocks; the caller holds the mirror's lock.

use super::auth::Auth;
use super::known_hosts::KnownHosts;
use super::url::RemoteUrl;
use super::{CheckoutError, CloneSpec, Fetched};
use git2::{
    AutotagOption, ErrorClass, ErrorCode, FetchOptions, FetchPrune, Oid, Repository,
    RepositoryInitOptions,
};
use std::collections::BTreeSet;
use std::path::Path;

/// The refs every fetch brings: all branches and tags, force-updated so a
/// force push is mirrored too.
const BASE_REFSPECS: [&str; 2] = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"];

/// Fetches `spec.url` into the mirror at `path` so that `commit` is there.
/// An empty `commit` means whatever `git_ref` points to once fetched
/// (`hookci run --branch B`).
pub(super) fn fetch(
    path: &Path,
    spec: &CloneSpec,
    git_ref: &str,
    commit: &str,
    known_hosts: &KnownHosts,
) -> Result<Fetched, CheckoutError> {
    let commit = if commit.is_empty() {
        String::new()
    } else {
        parse_commit_id(commit)?
    };
    let url = RemoteUrl::parse(&spec.url);
    let auth = Auth::new(
        &url,
        url.clone(),
        spec.ssh_key.as_ref(),
        spec.token.as_ref(),
        known_hosts,
        spec.accept_new_host_keys,
    );
    let mut refspecs: Vec<String> = BASE_REFSPECS.iter().map(|s| (*s).to_owned()).collect();
    if let Some(extra) = extra_refspec(git_ref) {
        refspecs.push(extra);
    }

    let mut repo = open_or_create(path)?;
    let (received_objects, received_bytes) = match fetch_refspecs(&repo, &url, &auth, &refspecs) {
        Ok(stats) => stats,
        Err(err) if is_local_damage(&err, &auth) => {
            // A fetch killed half-way leaves lock files or a torn pack: the
            // mirror is a cache, so start it again, once.
            tracing::warn!(
                mirror = %path.display(),
                "mirror unusable ({}); re-creating it",
                auth.scrub(err.message())
            );
            drop(repo);
            repo = recreate(path)?;
            fetch_refspecs(&repo, &url, &auth, &refspecs)
                .map_err(|err| auth.describe(&err, "fetching"))?
        }
        Err(err) => return Err(auth.describe(&err, "fetching")),
    };

    if commit.is_empty() {
        let oid = repo
            .revparse_single(git_ref)
            .and_then(|o| o.peel_to_commit())
            .map_err(|_| CheckoutError::NoSuchRef {
                url: url.display().to_string(),
                git_ref: git_ref.to_owned(),
            })?
            .id();
        return Ok(Fetched {
            mirror: path.to_path_buf(),
            commit: oid.to_string(),
            received_objects,
            received_bytes,
        });
    }
    let peeled = match resolve(&repo, &commit)? {
        Some(oid) => oid,
        None => {
            // Not under any ref any more (force-pushed away): a server that
            // allows unadvertised wants can still send it by id.
            if commit.len() == 40 {
                let _ = fetch_refspecs(&repo, &url, &auth, std::slice::from_ref(&commit));
            }
            resolve(&repo, &commit)?.ok_or_else(|| {
                CheckoutError::Failed(format!(
                    "commit {commit} is not on the remote any more (force-pushed?): {} does not have it",
                    url.display()
                ))
            })?
        }
    };
    Ok(Fetched {
        mirror: path.to_path_buf(),
        commit: peeled.to_string(),
        received_objects,
        received_bytes,
    })
}

/// The paths that differ between the trees of `before` and `commit`.
/// With `since_merge_base` (a pull request, whose `before` is its base
/// branch), from the merge base of the two instead: what the pull request
/// changes, not what the base branch gained since.
pub(super) fn changed_files(
    path: &Path,
    before: &str,
    commit: &str,
    since_merge_base: bool,
) -> Result<Option<Vec<String>>, CheckoutError> {
    let Ok(before) = parse_commit_id(before) else {
        return Ok(None);
    };
    if before.bytes().all(|b| b == b'0') {
        return Ok(None);
    }
    let commit = parse_commit_id(commit)?;
    let repo = open(path)?;
    let Some(before) = resolve(&repo, &before).ok().flatten() else {
        return Ok(None);
    };
    let after = resolve(&repo, &commit)?
        .ok_or_else(|| CheckoutError::Failed(format!("commit {commit} is not in the mirror")))?;
    let before = if since_merge_base {
        match repo.merge_base(before, after) {
            Ok(base) => base,
            Err(_) => return Ok(None),
        }
    } else {
        before
    };
    let tree = |oid: Oid| {
        repo.find_commit(oid).and_then(|c| c.tree()).map_err(|e| {
            CheckoutError::Failed(format!("cannot read the tree of {oid}: {}", e.message()))
        })
    };
    let (old, new) = (tree(before)?, tree(after)?);
    let diff = repo
        .diff_tree_to_tree(Some(&old), Some(&new), None)
        .map_err(|e| {
            CheckoutError::Failed(format!("cannot diff {before}..{after}: {}", e.message()))
        })?;
    // Without rename detection a rename is a deletion plus an addition, so
    // both paths are listed, which is what path filters want.
    let mut paths = BTreeSet::new();
    for delta in diff.deltas() {
        for file in [delta.old_file(), delta.new_file()] {
            if let Some(p) = file.path() {
                paths.insert(p.to_string_lossy().into_owned());
            }
        }
    }
    Ok(Some(paths.into_iter().collect()))
}

/// Resolves a full or abbreviated id in `repo` to the commit it peels to;
/// `None` when no such object is there.
/// The full message of `commit` in the mirror at `path`.
pub(super) fn commit_message(path: &Path, commit: &str) -> Result<String, CheckoutError> {
    let repo = open(path)?;
    let oid = resolve(&repo, commit)?
        .ok_or_else(|| CheckoutError::Failed(format!("commit {commit} is not in the mirror")))?;
    let commit = repo
        .find_commit(oid)
        .map_err(|e| CheckoutError::Failed(format!("cannot read commit {oid}: {}", e.message())))?;
    Ok(String::from_utf8_lossy(commit.message_bytes()).into_owned())
}

pub(super) fn resolve(repo: &Repository, id: &str) -> Result<Option<Oid>, CheckoutError> {
    let found = if id.len() == 40 {
        Oid::from_str(id).and_then(|oid| repo.find_object(oid, None))
    } else {
        repo.find_object_by_prefix(id, None)
    };
    let object = match found {
        Ok(object) => object,
        Err(e) if e.code() == ErrorCode::NotFound => return Ok(None),
        Err(e) if e.code() == ErrorCode::Ambiguous => {
            return Err(CheckoutError::Failed(format!(
                "the abbreviated commit id {id} matches several objects: use the full id"
            )));
        }
        Err(e) => {
            return Err(CheckoutError::Failed(format!(
                "cannot look up {id} in the mirror: {}",
                e.message()
            )));
        }
    };
    match object.peel_to_commit() {
        Ok(commit) => Ok(Some(commit.id())),
        Err(_) => Err(CheckoutError::Failed(format!(
            "{id} is a {}, not a commit",
            object.kind().map_or("object", |k| k.str())
        ))),
    }
}

/// A commit id as given by a host: 4 to 40 hex digits, lowercased.
pub(super) fn parse_commit_id(id: &str) -> Result<String, CheckoutError> {
    if (4..=40).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(CheckoutError::Failed(
            "the commit id is not 4 to 40 hexadecimal digits".into(),
        ))
    }
}

/// The refspec for a pushed ref outside heads and tags (`refs/pull/1/head`,
/// `refs/merge-requests/1/head`), if `git_ref` is one and is well formed.
fn extra_refspec(git_ref: &str) -> Option<String> {
    let plain = git_ref.starts_with("refs/")
        && !git_ref.starts_with("refs/heads/")
        && !git_ref.starts_with("refs/tags/")
        && git2::Reference::is_valid_name(git_ref)
        && !git_ref.contains(['*', ':']);
    plain.then(|| format!("+{git_ref}:{git_ref}"))
}

/// One fetch; returns (objects, bytes) received.
fn fetch_refspecs(
    repo: &Repository,
    url: &RemoteUrl,
    auth: &Auth<'_>,
    refspecs: &[String],
) -> Result<(usize, usize), git2::Error> {
    let mut remote = repo.remote_anonymous(url.raw())?;
    let mut options = FetchOptions::new();
    options
        .remote_callbacks(auth.callbacks())
        .download_tags(AutotagOption::None)
        .update_fetchhead(false);
    if refspecs.iter().any(|r| r.contains('*')) {
        options.prune(FetchPrune::On);
    }
    remote.fetch(refspecs, Some(&mut options), None)?;
    let stats = remote.stats();
    Ok((stats.received_objects(), stats.received_bytes()))
}

/// True for an error of the mirror itself rather than of the remote or the
/// credentials: worth re-creating the mirror for.
fn is_local_damage(err: &git2::Error, auth: &Auth<'_>) -> bool {
    if auth.is_auth_failure(err) {
        return false;
    }
    // A stale lock file comes back as an OS error, not always as Locked.
    err.code() == ErrorCode::Locked
        || err.message().starts_with("failed to lock file")
        || matches!(
            err.class(),
            ErrorClass::Odb
                | ErrorClass::Object
                | ErrorClass::Reference
                | ErrorClass::Repository
                | ErrorClass::Zlib
                | ErrorClass::Index
                | ErrorClass::Config
                | ErrorClass::Filesystem
                | ErrorClass::Tree
                | ErrorClass::Sha1
        )
}

/// Opens an existing mirror.
pub(super) fn open(path: &Path) -> Result<Repository, CheckoutError> {
    Repository::open_bare(path).map_err(|e| {
        CheckoutError::Failed(format!(
            "cannot open the mirror {}: {}",
            path.display(),
            e.message()
        ))
    })
}

fn open_or_create(path: &Path) -> Result<Repository, CheckoutError> {
    if !path.exists() {
        return create(path);
    }
    match Repository::open_bare(path) {
        Ok(repo) if repo.is_bare() && repo.head_detached().is_ok() => Ok(repo),
        Ok(_) | Err(_) => {
            tracing::warn!(mirror = %path.display(), "mirror unreadable; re-creating it");
            recreate(path)
        }
    }
}

fn recreate(path: &Path) -> Result<Repository, CheckoutError> {
    std::fs::remove_dir_all(path).map_err(|e| {
        CheckoutError::Failed(format!(
            "cannot remove the broken mirror {}: {e}",
            path.display()
        ))
    })?;
    create(path)
}

fn create(path: &Path) -> Result<Repository, CheckoutError> {
    let failed = |e: &dyn std::fmt::Display| {
        CheckoutError::Failed(format!("cannot create the mirror {}: {e}", path.display()))
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| failed(&e))?;
    }
    // `init_bare` without the template's sample hooks.
    let repo = Repository::init_opts(
        path,
        RepositoryInitOptions::new()
            .bare(true)
            .external_template(false),
    )
    .map_err(|e| failed(&e.message()))?;
    // Workspaces borrow the mirror's objects (alternates): a git command run
    // by hand in the mirror must never gc them away.
    repo.config()
        .and_then(|mut c| c.set_i64("gc.auto", 0))
        .map_err(|e| failed(&e.message()))?;
    Ok(repo)
}
