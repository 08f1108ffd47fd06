//! The data directory is private to the daemon's user: the store, every
//! log (also in private mode), the mirrors of private repositories and the
//! workspaces are created 0700 (directories) and 0600 (files), whatever
//! the umask. `serve` and `run` also set the umask to 0077 at start, so
//! that everything created below inherits it.

use nix::sys::stat::{Mode, umask};
use std::fs::{OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The subdirectories of `data_dir` hookci creates.
pub const SUBDIRS: [&str; 4] = ["logs", "repos", "workspaces", "workspace-pool"];

/// Sets the process's umask to 0077 (for `serve` and `run`, at start).
pub fn set_umask() {
    let _previous = umask(Mode::from_bits_truncate(0o077));
}

/// Creates `dir` (and its parents) and makes it 0700.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, Permissions::from_mode(0o700))
}

/// Creates `data_dir` and its subdirectories 0700, and the store's file
/// `db` (if missing) 0600, so that SQLite's `-wal` and `-shm`, which take
/// the database's mode, are 0600 too. With `run_as` steps, `data_dir`,
/// `repos` and `workspaces` are 0711 instead: the build user must reach
/// its own workspace (and the mirror objects it borrows) by path, but may
/// list none of them; `logs` and the pool stay 0700.
pub fn prepare(data_dir: &Path, db: &Path, run_as: bool) -> io::Result<()> {
    let traverse = |dir: &Path| -> io::Result<()> {
        private_dir(dir)?;
        if run_as {
            std::fs::set_permissions(dir, Permissions::from_mode(0o711))?;
        }
        Ok(())
    };
    traverse(data_dir)?;
    for sub in SUBDIRS {
        match sub {
            "repos" | "workspaces" => traverse(&data_dir.join(sub))?,
            _ => private_dir(&data_dir.join(sub))?,
        }
    }
    private_file(db)
}

/// Creates `path` empty 0600 if it does not exist; an existing file is
/// made 0600.
pub fn private_file(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    std::fs::set_permissions(path, Permissions::from_mode(0o600))
}
