//! Parked workspaces: a finished build's checkout is moved (renamed, same
//! filesystem) to `data_dir/workspace-pool/<mirror name>/<n>`, cleaned there
//! off the build's critical path, and the next build of the same mirror
//! turns it into its commit by rewriting only what differs, instead of
//! writing every file into new directories.
//!
//! The pool lives next to the mirrors (`data_dir/workspace-pool`, not under
//! `workspaces/`, whose entries are builds). One process at a time owns it:
//! the first park takes an exclusive `flock` on `workspace-pool/.lock` and
//! deletes whatever an earlier (killed) daemon left there, since those may be
//! half-cleaned and their index is not one this process wrote. A second
//! process over the same data dir (`hookci run` beside the daemon) gets no
//! lock and simply does not pool.
//!
//! *Security:* a parked workspace was written by an earlier build's steps
//! (the same pipeline's pushers). Every time the daemon opens it, `.git` is
//! deleted and rebuilt from scratch as a fresh workspace's would be (config,
//! alternates, `origin` without credentials; no hooks, info, refs, modules),
//! and the only thing kept from the old `.git` is the index, and not the one
//! in the workspace: the copy the daemon itself captured right after its own
//! checkout, before any step ran. A forced checkout then removes every
//! untracked and ignored file, and rewrites every tracked file whose stat
//! data (mtime, ctime, inode, size, mode) differs from that trusted index:
//! a step cannot forge a ctime, so nothing it wrote survives. Finally
//! `statuses()` (untracked and ignored included) must be empty, or the
//! workspace is deleted and a fresh one checked out. Workspaces of builds
//! that run as another user (`run_as`) or with submodules are never parked.

use super::CheckoutError;
use git2::Oid;
use nix::fcntl::{Flock, FlockArg};
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// Parked workspaces kept per mirror; more are deleted.
pub(super) const MAX_PARKED: usize = 2;

/// How long a checkout waits for a parked workspace still being cleaned
/// (usually tens of milliseconds) before it checks out afresh (0.1 to 2 s
/// for a few thousand files).
pub(super) const WAIT_FOR_CLEANING: Duration = Duration::from_secs(2);

/// What the daemon itself last made of a workspace: the commit, and the
/// index (with its mtime, which racy-clean detection compares against) that
/// its own checkout wrote, captured before any step could touch it.
#[derive(Clone)]
pub(super) struct Trusted {
    /// The mirror the workspace borrows objects from.
    pub(super) mirror: PathBuf,
    /// `origin`, as shown (no credentials).
    pub(super) origin: String,
    /// The commit checked out.
    pub(super) commit: Oid,
    /// The bytes of `.git/index`.
    pub(super) index: Vec<u8>,
    /// Its mtime.
    pub(super) index_mtime: SystemTime,
}

impl std::fmt::Debug for Trusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trusted")
            .field("mirror", &self.mirror)
            .field("commit", &self.commit)
            .field("index_bytes", &self.index.len())
            .finish_non_exhaustive()
    }
}

impl Trusted {
    /// Captures the index of the workspace at `dir`, just checked out at
    /// `commit` by the daemon.
    pub(super) fn capture(
        dir: &Path,
        mirror: &Path,
        origin: &str,
        commit: Oid,
    ) -> io::Result<Trusted> {
        let path = dir.join(".git/index");
        let file = File::open(&path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::other("the index is not a file"));
        }
        let index = std::fs::read(&path)?;
        Ok(Trusted {
            mirror: mirror.to_path_buf(),
            origin: origin.to_owned(),
            commit,
            index,
            index_mtime: meta.modified()?,
        })
    }

    /// Writes the captured index back into a rebuilt `.git` at `git_dir`.
    pub(super) fn restore(&self, git_dir: &Path) -> io::Result<()> {
        let path = git_dir.join("index");
        let file = File::create(&path)?;
        io::Write::write_all(&mut &file, &self.index)?;
        file.set_modified(self.index_mtime)
    }
}

#[derive(Debug)]
enum SlotState {
    /// Being cleaned: not to be taken.
    Cleaning,
    /// Exactly `Trusted::commit`, with that index.
    Ready(Trusted),
}

#[derive(Debug)]
struct Slot {
    dir: PathBuf,
    state: SlotState,
}

#[derive(Debug, Default)]
struct State {
    /// The exclusive lock on the pool directory, once taken.
    lock: Option<Flock<File>>,
    /// Parked workspaces by mirror.
    parked: HashMap<PathBuf, Vec<Slot>>,
    /// Workspaces handed to builds, by checkout path.
    handed: HashMap<PathBuf, Trusted>,
}

/// The pool of one [`super::Mirrors`].
#[derive(Debug)]
pub(super) struct Pool {
    dir: PathBuf,
    next: AtomicU64,
    state: Mutex<State>,
    /// Notified when a parked workspace is cleaned (or dropped).
    cleaned: Condvar,
}

/// A workspace moved into the pool, to be cleaned.
#[derive(Debug)]
pub(super) struct Parked {
    pub(super) dir: PathBuf,
    pub(super) trusted: Trusted,
}

impl Pool {
    pub(super) fn new(dir: PathBuf) -> Pool {
        Pool {
            dir,
            next: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            cleaned: Condvar::new(),
        }
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers what the daemon checked out at `checkout`.
    pub(super) fn hand(&self, checkout: PathBuf, trusted: Trusted) {
        self.state().handed.insert(checkout, trusted);
    }

    /// Forgets a handed-out workspace (it will be deleted, not parked).
    pub(super) fn forget(&self, checkout: &Path) {
        self.state().handed.remove(checkout);
    }

    /// Takes a clean parked workspace of `mirror`, if there is one; it is
    /// no longer in the pool, so no one else can take it. One still being
    /// cleaned is never taken, but waited for (up to `wait`).
    pub(super) fn take(&self, mirror: &Path, wait: Duration) -> Option<Parked> {
        let deadline = Instant::now() + wait;
        let mut state = self.state();
        loop {
            let slots = state.parked.get_mut(mirror)?;
            if let Some(at) = slots
                .iter()
                .position(|s| matches!(s.state, SlotState::Ready(_)))
            {
                let slot = slots.remove(at);
                return match slot.state {
                    SlotState::Ready(trusted) => Some(Parked {
                        dir: slot.dir,
                        trusted,
                    }),
                    SlotState::Cleaning => None,
                };
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            if slots.is_empty() || left.is_zero() {
                return None;
            }
            state = self
                .cleaned
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Moves the handed-out workspace at `checkout` into the pool, marked
    /// as being cleaned. `None` (the caller deletes it) when it was not
    /// handed out by us, the pool is full or not ours, or the move failed.
    pub(super) fn park(&self, checkout: &Path) -> Option<Parked> {
        let mut state = self.state();
        let trusted = state.handed.remove(checkout)?;
        if state.lock.is_none() {
            state.lock = self.acquire();
            state.lock.as_ref()?;
        }
        let slots = state.parked.entry(trusted.mirror.clone()).or_default();
        if slots.len() >= MAX_PARKED {
            return None;
        }
        let name = trusted.mirror.file_name()?;
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self.dir.join(name).join(n.to_string());
        let moved = std::fs::create_dir_all(self.dir.join(name))
            .and_then(|()| std::fs::rename(checkout, &dir));
        if let Err(e) = moved {
            tracing::debug!(workspace = %checkout.display(), error = %e, "cannot park the workspace");
            return None;
        }
        slots.push(Slot {
            dir: dir.clone(),
            state: SlotState::Cleaning,
        });
        Some(Parked { dir, trusted })
    }

    /// Marks a parked workspace clean (`Some`) or drops it from the pool
    /// (`None`; the caller deletes it).
    pub(super) fn cleaned(&self, mirror: &Path, dir: &Path, trusted: Option<Trusted>) {
        let mut state = self.state();
        let Some(slots) = state.parked.get_mut(mirror) else {
            return;
        };
        let Some(at) = slots.iter().position(|s| s.dir == dir) else {
            return;
        };
        match trusted {
            Some(trusted) => slots[at].state = SlotState::Ready(trusted),
            None => {
                slots.remove(at);
            }
        }
        self.cleaned.notify_all();
    }

    /// (clean, being cleaned) parked workspaces of `mirror`.
    pub(super) fn counts(&self, mirror: &Path) -> (usize, usize) {
        let state = self.state();
        let Some(slots) = state.parked.get(mirror) else {
            return (0, 0);
        };
        let ready = slots
            .iter()
            .filter(|s| matches!(s.state, SlotState::Ready(_)))
            .count();
        (ready, slots.len() - ready)
    }

    /// Takes the pool directory's lock and empties it of what an earlier
    /// process left; `None` when another process holds it.
    fn acquire(&self) -> Option<Flock<File>> {
        let lock_path = self.dir.join(".lock");
        let file = std::fs::create_dir_all(&self.dir)
            .and_then(|()| {
                File::options()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&lock_path)
            })
            .map_err(|e| {
                tracing::warn!(pool = %self.dir.display(), error = %e, "cannot open the workspace pool; not pooling");
            })
            .ok()?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, errno)) => {
                tracing::info!(pool = %self.dir.display(), %errno, "the workspace pool is another process's; not pooling");
                return None;
            }
        };
        // Moved aside at once (renames), deleted on a thread of its own: a
        // large stale pool must not hold up the build that parks first.
        let trash = self.dir.join(format!(".stale-{}", std::process::id()));
        let mut stale = trash.exists();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                if name == ".lock" || entry.path() == trash {
                    continue;
                }
                let moved = std::fs::create_dir_all(&trash)
                    .and_then(|()| std::fs::rename(entry.path(), trash.join(&name)));
                match moved {
                    Ok(()) => stale = true,
                    Err(_) => {
                        let _ = remove_path(&entry.path());
                    }
                }
            }
        }
        if stale {
            std::thread::spawn(move || {
                if let Err(e) = remove_path(&trash) {
                    tracing::warn!(dir = %trash.display(), error = %e, "cannot delete the stale workspace pool");
                }
            });
        }
        Some(lock)
    }
}

/// Deletes a file, a symbolic link or a directory tree (never following a
/// link).
pub(super) fn remove_path(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Why a parked workspace could not be used, as a checkout error.
pub(super) fn unusable(dir: &Path, what: &str, e: &dyn std::fmt::Display) -> CheckoutError {
    CheckoutError::Failed(format!(
        "the parked workspace {} is unusable: cannot {what}: {e}",
        dir.display()
    ))
}
