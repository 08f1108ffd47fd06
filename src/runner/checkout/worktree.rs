//! A build's workspace: a repository that borrows the mirror's objects
//! (`objects/info/alternates`, nothing copied), with `origin` set to the
//! clone URL and a detached HEAD at the build's commit: checked out fresh
//! (`checkout`), or updated from a parked workspace (`refresh`, see
//! `pool`). Everything here blocks; the caller holds the mirror's lock
//! (shared).

use super::CheckoutError;
use super::auth::Auth;
use super::known_hosts::KnownHosts;
use super::mirror;
use super::pool::{self, Trusted};
use super::url::{RemoteUrl, Transport};
use crate::secret::Secret;
use git2::build::CheckoutBuilder;
use git2::{
    FetchOptions, Oid, Repository, RepositoryInitOptions, Status, StatusOptions, StatusShow,
    SubmoduleUpdateOptions, Tree, TreeWalkMode, TreeWalkResult,
};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// How deep submodules may nest before we call it a loop.
const MAX_SUBMODULE_DEPTH: u32 = 8;

/// The credentials a checkout may need, for submodules.
#[derive(Debug)]
pub(super) struct Creds<'s> {
    pub(super) url: &'s RemoteUrl,
    pub(super) ssh_key: Option<&'s Secret>,
    pub(super) token: Option<&'s Secret>,
    pub(super) known_hosts: &'s KnownHosts,
    pub(super) accept_new_host_keys: bool,
}

/// Makes `dest` a workspace at `commit`, borrowing objects from `mirror`;
/// returns the commit's full id.
pub(super) fn checkout(
    mirror_path: &Path,
    creds: &Creds<'_>,
    commit: &str,
    dest: &Path,
    submodules: bool,
) -> Result<Oid, CheckoutError> {
    let commit = mirror::parse_commit_id(commit)?;
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        CheckoutError::Failed(format!("cannot {what} in {}: {e}", dest.display()))
    };
    if std::fs::read_dir(dest).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(CheckoutError::Failed(format!(
            "the workspace {} already exists and is not empty",
            dest.display()
        )));
    }
    let repo = init_repo(mirror_path, creds.url.display(), dest, None)?;

    let oid = mirror::resolve(&repo, &commit)?.ok_or_else(|| {
        CheckoutError::Failed(format!(
            "commit {commit} is not in the mirror {}",
            mirror_path.display()
        ))
    })?;
    let target = repo
        .find_object(oid, None)
        .map_err(|e| failed("read the commit", &e.message()))?;
    let tree = target
        .peel_to_tree()
        .map_err(|e| failed("read the commit's tree", &e.message()))?;
    let mut files = CheckoutBuilder::new();
    files
        .force()
        .disable_filters(!filters_may_apply(&repo, &tree));
    repo.checkout_tree(tree.as_object(), Some(&mut files))
        .map_err(|e| failed("check out the files", &e.message()))?;
    repo.set_head_detached(oid)
        .map_err(|e| failed("detach HEAD", &e.message()))?;

    if submodules {
        update_submodules(&repo, creds, 0)?;
    }
    Ok(oid)
}

/// Creates the repository of a workspace at `dest` (its files may already
/// be there): no template, the mirror's objects as alternates, `origin` at
/// `origin` (shown form, no credentials), and `index` as its index.
fn init_repo(
    mirror_path: &Path,
    origin: &str,
    dest: &Path,
    index: Option<&Trusted>,
) -> Result<Repository, CheckoutError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        CheckoutError::Failed(format!("cannot {what} in {}: {e}", dest.display()))
    };
    let objects = std::fs::canonicalize(mirror_path)
        .map_err(|e| {
            CheckoutError::Failed(format!(
                "cannot open the mirror {}: {e}",
                mirror_path.display()
            ))
        })?
        .join("objects");

    // No template: sample hooks are a dozen files per build for nothing.
    let mut init = RepositoryInitOptions::new();
    init.external_template(false).no_reinit(true);
    let repo = Repository::init_opts(dest, &init)
        .map_err(|e| failed("create a repository", &e.message()))?;
    let alternates = repo.path().join("objects/info/alternates");
    write_line(&alternates, objects.as_os_str().as_bytes())
        .map_err(|e| failed("write objects/info/alternates", &e))?;
    if let Some(trusted) = index {
        trusted
            .restore(repo.path())
            .map_err(|e| failed("restore the index", &e))?;
    }
    // The object database was set up before the alternates file existed.
    drop(repo);
    let repo = Repository::open(dest).map_err(|e| failed("open the repository", &e.message()))?;
    repo.remote("origin", origin)
        .map_err(|e| failed("add the origin remote", &e.message()))?;
    Ok(repo)
}

/// Makes the parked workspace `dir` exactly `commit` (`None`: the commit it
/// was left at), rewriting only what differs, and returns what the daemon
/// now trusts of it. On an error the workspace must be deleted.
///
/// `.git` is deleted and rebuilt from scratch, so no config (a
/// `core.worktree`, an fsmonitor, a filter), hook, ref, info file or module
/// an earlier build left survives; the index put back is the one the
/// daemon captured itself (see `pool`), never the workspace's. With HEAD at
/// the commit that index describes, libgit2's forced checkout compares each
/// file's stat data with it and rewrites only files that changed (in the
/// new commit or on disk), and removes every untracked and ignored file.
pub(super) fn refresh(
    dir: &Path,
    trusted: &Trusted,
    commit: Option<&str>,
) -> Result<Trusted, CheckoutError> {
    let unusable = |what: &str, e: &dyn std::fmt::Display| pool::unusable(dir, what, e);
    let meta = std::fs::symlink_metadata(dir).map_err(|e| unusable("read it", &e))?;
    if !meta.is_dir() {
        return Err(unusable("use it", &"not a directory"));
    }
    pool::remove_path(&dir.join(".git")).map_err(|e| unusable("remove .git", &e))?;
    let started = std::time::Instant::now();
    let repo = init_repo(&trusted.mirror, &trusted.origin, dir, Some(trusted))?;
    let rebuilt = started.elapsed();
    // The baseline: what the trusted index describes.
    repo.set_head_detached(trusted.commit)
        .map_err(|e| unusable("set HEAD to the parked commit", &e.message()))?;
    if commit.is_none() {
        forget_modified(&repo).map_err(|e| unusable("find the modified files", &e.message()))?;
    }
    let oid = match commit {
        None => trusted.commit,
        Some(commit) => {
            let commit = mirror::parse_commit_id(commit)?;
            mirror::resolve(&repo, &commit)?.ok_or_else(|| {
                CheckoutError::Failed(format!(
                    "commit {commit} is not in the mirror {}",
                    trusted.mirror.display()
                ))
            })?
        }
    };
    let tree = repo
        .find_commit(oid)
        .and_then(|c| c.tree())
        .map_err(|e| unusable("read the commit's tree", &e.message()))?;
    let mut files = CheckoutBuilder::new();
    files
        .force()
        .recreate_missing(true)
        .remove_untracked(true)
        .remove_ignored(true)
        .disable_filters(!filters_may_apply(&repo, &tree));
    // Taking a workspace the pool cleaned: only the paths that differ
    // between the two commits need looking at (a tree diff skips equal
    // subtrees); the status check below still covers every path.
    let mut update = true;
    if commit.is_some() {
        let paths = changed_paths(&repo, trusted.commit, &tree)
            .map_err(|e| unusable("diff the commits", &e.message()))?;
        update = !paths.is_empty();
        files.disable_pathspec_match(true);
        for path in paths {
            files.path(path);
        }
    }
    let prepared = started.elapsed();
    if update {
        repo.checkout_tree(tree.as_object(), Some(&mut files))
            .map_err(|e| unusable("check out the files", &e.message()))?;
    }
    repo.set_head_detached(oid)
        .map_err(|e| unusable("detach HEAD", &e.message()))?;
    let checked_out = started.elapsed();

    // Exactly the commit, nothing else: cheap (stat calls), and the proof.
    let mut options = StatusOptions::new();
    options
        .include_untracked(true)
        .include_ignored(true)
        .recurse_untracked_dirs(false)
        .exclude_submodules(false);
    let statuses = repo
        .statuses(Some(&mut options))
        .map_err(|e| unusable("read its status", &e.message()))?;
    if let Some(entry) = statuses.iter().next() {
        return Err(unusable(
            "make it exact",
            &format!(
                "{} paths differ from {oid} after the checkout (first: {:?} {})",
                statuses.len(),
                entry.status(),
                entry.path().unwrap_or("?")
            ),
        ));
    }
    drop(statuses);
    // Git sees only contents and the exec bit; a `chmod 000` or a new
    // owner would pass. When cleaning, every file must still have the stat
    // data the daemon recorded when it last wrote it (a metadata change
    // moves the ctime, which cannot be put back). Not again when taking it
    // (~2 us a file): nothing runs in the pool, and a check could not stop
    // a process that outlived its build anyway.
    if commit.is_none()
        && let Some(path) =
            touched_file(&repo, dir).map_err(|e| unusable("read its index", &e.message()))?
    {
        return Err(unusable(
            "make it exact",
            &format!("{path} was changed after the daemon wrote it"),
        ));
    }
    tracing::debug!(
        workspace = %dir.display(),
        rebuild_us = rebuilt.as_micros() as u64,
        prepare_us = prepared.as_micros() as u64,
        checkout_us = checked_out.as_micros() as u64,
        verify_us = started.elapsed().as_micros() as u64,
        "refreshed (cumulative times)"
    );
    Trusted::capture(dir, &trusted.mirror, &trusted.origin, oid)
        .map_err(|e| unusable("read back the index", &e))
}

/// Every path that differs between the tree of `from` and `to` (both
/// sides of a rename, as a deletion and an addition).
fn changed_paths(repo: &Repository, from: Oid, to: &Tree<'_>) -> Result<Vec<Vec<u8>>, git2::Error> {
    let old = repo.find_commit(from)?.tree()?;
    let diff = repo.diff_tree_to_tree(Some(&old), Some(to), None)?;
    let mut paths = Vec::new();
    for delta in diff.deltas() {
        for file in [delta.old_file(), delta.new_file()] {
            if let Some(path) = file.path_bytes()
                && paths.last().is_none_or(|last: &Vec<u8>| last != path)
            {
                paths.push(path.to_vec());
            }
        }
    }
    Ok(paths)
}

/// The first tracked file whose ctime, mtime, inode, size, owner or type
/// differs from its index entry, if any.
fn touched_file(repo: &Repository, dir: &Path) -> Result<Option<String>, git2::Error> {
    use std::os::unix::fs::MetadataExt;
    let index = repo.index()?;
    for entry in index.iter() {
        if entry.mode & 0o170000 == 0o160000 {
            continue; // a submodule: an empty directory here
        }
        let path = dir.join(std::ffi::OsStr::from_bytes(&entry.path));
        let same = std::fs::symlink_metadata(&path).is_ok_and(|meta| {
            let time = |secs: i64, nanos: i64, at: &git2::IndexTime| {
                i64::from(at.seconds()) == secs
                    && (at.nanoseconds() == 0 || i64::from(at.nanoseconds()) == nanos)
            };
            let kind = entry.mode & 0o170000;
            time(meta.ctime(), meta.ctime_nsec(), &entry.ctime)
                && time(meta.mtime(), meta.mtime_nsec(), &entry.mtime)
                && u64::from(entry.ino) == meta.ino() & 0xffff_ffff
                && entry.file_size == meta.len() as u32
                && entry.uid == meta.uid()
                && entry.gid == meta.gid()
                && kind == meta.mode() & 0o170000
        });
        if !same {
            return Ok(Some(String::from_utf8_lossy(&entry.path).into_owned()));
        }
    }
    Ok(None)
}

/// Drops from the index every file whose stat data says it changed.
/// libgit2's checkout trusts an index entry whose mtime and size match the
/// file, but a step can put an mtime back (`touch -d`) after changing a
/// file to the same size; the status diff also compares the ctime and the
/// inode, which no step can put back. A file without an index entry is
/// hashed by the checkout, found different, and rewritten.
fn forget_modified(repo: &Repository) -> Result<(), git2::Error> {
    let mut options = StatusOptions::new();
    options
        .show(StatusShow::Workdir)
        .include_untracked(false)
        .include_ignored(false);
    let statuses = repo.statuses(Some(&mut options))?;
    let changed = Status::WT_MODIFIED | Status::WT_TYPECHANGE;
    let paths: Vec<PathBuf> = statuses
        .iter()
        .filter(|entry| entry.status().intersects(changed))
        .map(|entry| PathBuf::from(std::ffi::OsStr::from_bytes(entry.path_bytes())))
        .collect();
    drop(statuses);
    if paths.is_empty() {
        return Ok(());
    }
    let mut index = repo.index()?;
    for path in &paths {
        index.remove_path(path)?;
    }
    index.write()
}

/// False when no checkout filter (eol conversion, `ident`, a filter driver)
/// can change a byte: no attributes anywhere and `core.autocrlf` off. Then
/// filters are skipped, because resolving attributes costs libgit2 two
/// `realpath` calls per file: ~40% of a checkout of a few thousand files.
fn filters_may_apply(repo: &Repository, tree: &Tree<'_>) -> bool {
    let Ok(config) = repo.config() else {
        return true;
    };
    if config.get_bool("core.autocrlf").unwrap_or(false) {
        return true;
    }
    // Where libgit2 looks for attributes besides the tree: the repository,
    // core.attributesFile (or its XDG default) and the system file.
    let xdg = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".config")))
        .map(|dir| dir.join("git/attributes"));
    let files = [
        Some(repo.path().join("info/attributes")),
        config.get_path("core.attributesFile").ok(),
        xdg,
        Some(PathBuf::from("/etc/gitattributes")),
    ];
    if files.iter().flatten().any(|file| file.exists()) {
        return true;
    }
    let mut found = false;
    let walked = tree.walk(TreeWalkMode::PreOrder, |_, entry| {
        if entry.name_bytes() == b".gitattributes" {
            found = true;
            TreeWalkResult::Abort
        } else {
            TreeWalkResult::Ok
        }
    });
    // Aborting the walk is an error too; a tree that cannot be read keeps
    // the filters (and fails the checkout just after).
    found || walked.is_err()
}

fn write_line(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.write_all(b"\n")
}

/// Clones and checks out every submodule of `repo`, recursively, with the
/// clone's credentials (sent only to the clone URL's host).
fn update_submodules(
    repo: &Repository,
    creds: &Creds<'_>,
    depth: u32,
) -> Result<(), CheckoutError> {
    let workdir = repo.workdir().unwrap_or(repo.path()).display().to_string();
    let failed = |e: &git2::Error| {
        CheckoutError::Failed(format!(
            "cannot read the submodules of {workdir}: {}",
            e.message()
        ))
    };
    if depth >= MAX_SUBMODULE_DEPTH {
        return Err(CheckoutError::Failed(format!(
            "submodules nest deeper than {MAX_SUBMODULE_DEPTH} levels in {workdir}"
        )));
    }
    for mut submodule in repo.submodules().map_err(|e| failed(&e))? {
        let name = submodule.name().unwrap_or("?").to_owned();
        submodule.init(false).map_err(|e| failed(&e))?;
        // Relative URLs are resolved against origin by init.
        let resolved = repo
            .config()
            .and_then(|c| c.get_string(&format!("submodule.{name}.url")))
            .map_err(|e| failed(&e))?;
        let url = RemoteUrl::parse(&resolved);
        if url.transport() == Transport::Local && creds.url.transport() != Transport::Local {
            // A pushed .gitmodules must not copy other repositories of
            // this machine into the workspace.
            return Err(CheckoutError::Failed(format!(
                "submodule {name} points at a local path ({}), which a remote repository may not",
                url.display()
            )));
        }
        let auth = Auth::new(
            creds.url,
            url,
            creds.ssh_key,
            creds.token,
            creds.known_hosts,
            creds.accept_new_host_keys,
        );
        let mut fetch = FetchOptions::new();
        fetch.remote_callbacks(auth.callbacks());
        let mut checkout = CheckoutBuilder::new();
        checkout.force();
        let mut options = SubmoduleUpdateOptions::new();
        options.fetch(fetch).checkout(checkout);
        submodule
            .update(false, Some(&mut options))
            .map_err(|e| auth.describe(&e, &format!("cloning submodule {name} from")))?;
        let inner = submodule.open().map_err(|e| failed(&e))?;
        update_submodules(&inner, creds, depth + 1)?;
    }
    Ok(())
}
