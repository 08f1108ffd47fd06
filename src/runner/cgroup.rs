//! A cgroup (v2) per step, where the kernel allows it: the step's shell is
//! placed in it before it runs anything, so every process the step starts
//! stays in it, whatever it does to its session, process group or
//! environment (`setsid env -i ...` included). The end-of-step sweep stops
//! the cgroup's members along with the group and the marked processes;
//! `cgroup.kill` ends what is left. A daemon that died leaves its cgroups
//! behind: the next start kills their processes ([`kill_stale`]).
//!
//! Layout: `<hookci's own cgroup>/hookci.<pid>/step-<n>`. It needs write
//! access to hookci's own cgroup: root, or systemd's `Delegate=yes` (see
//! `systemd/hookci.service`). Without it, or on a kernel without
//! `cgroup.kill` (before 5.14), steps are contained by process group,
//! subreaper and marker alone, as before.

use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// This process's directory of step cgroups, or why it has none.
static BASE: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// Numbers this process's step cgroups.
static NEXT: AtomicU64 = AtomicU64::new(0);

const PREFIX: &str = "hookci.";

/// True when steps get a cgroup of their own here.
pub fn available() -> bool {
    base().is_some()
}

/// Why steps get no cgroup here, in words (`None` when they do).
pub fn unavailable_reason() -> Option<&'static str> {
    BASE.get_or_init(detect).as_ref().err().map(String::as_str)
}

fn base() -> Option<&'static Path> {
    BASE.get_or_init(detect).as_deref().ok()
}

fn detect() -> Result<PathBuf, String> {
    let own = own_cgroup().ok_or("no cgroup2 hierarchy is mounted for this process")?;
    let dir = own.join(format!("{PREFIX}{}", std::process::id()));
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(format!(
                "cannot create cgroups under {} ({e}): run as root, or with systemd's Delegate=yes",
                own.display()
            ));
        }
    }
    if !dir.join("cgroup.kill").exists() {
        let _ = std::fs::remove_dir(&dir);
        return Err("this kernel has no cgroup.kill (Linux 5.14)".into());
    }
    Ok(dir)
}

/// The directory of this process's own cgroup in the cgroup2 mount.
fn own_cgroup() -> Option<PathBuf> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|line| {
        // `id parent major:minor root mount-point options [tags] - type source options`
        let (left, right) = line.split_once(" - ")?;
        if right.split(' ').next() != Some("cgroup2") {
            return None;
        }
        let fields: Vec<&str> = left.split(' ').collect();
        let (root, mount) = (*fields.get(3)?, *fields.get(4)?);
        let rel = if root == "/" {
            path
        } else {
            path.strip_prefix(root)?
        };
        Some(Path::new(&unescape(mount)).join(rel.trim_start_matches('/')))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(v) = bytes
                .get(i + 1..i + 4)
                .and_then(|o| std::str::from_utf8(o).ok())
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One step's cgroup. Dropping it kills what is left in it and removes it.
#[derive(Debug)]
pub struct StepCgroup {
    dir: PathBuf,
    /// `cgroup.procs`, open for the shell to write itself into.
    procs: OwnedFd,
}

impl StepCgroup {
    /// A new, empty cgroup for a step, or `None` where there are none.
    pub fn create() -> Option<StepCgroup> {
        let base = base()?;
        let dir = base.join(format!("step-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
        let made = match std::fs::create_dir(&dir) {
            // The base went with `release` (another server of this process
            // stopped): make it again.
            Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::create_dir(base)
                .or_else(|e| match e.kind() {
                    io::ErrorKind::AlreadyExists => Ok(()),
                    _ => Err(e),
                })
                .and_then(|()| std::fs::create_dir(&dir)),
            other => other,
        };
        let made = made.and_then(|()| {
            std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc_cloexec())
                .open(dir.join("cgroup.procs"))
        });
        match made {
            Ok(file) => Some(StepCgroup {
                dir,
                procs: file.into(),
            }),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), "cannot create a step cgroup: {e}");
                let _ = std::fs::remove_dir(&dir);
                None
            }
        }
    }

    /// Its `cgroup.procs`: a process that writes `0` there moves itself in.
    pub fn procs_path(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// A descriptor of `cgroup.procs` (close-on-exec) that a child writes
    /// `0` to, between fork and exec, to move itself into this cgroup.
    pub fn procs_fd(&self) -> io::Result<OwnedFd> {
        self.procs.try_clone()
    }

    /// The processes in the cgroup now.
    pub fn pids(&self) -> Vec<i32> {
        members(&self.dir)
    }
}

impl Drop for StepCgroup {
    fn drop(&mut self) {
        // Empty after a sweep; if not (the step's task was aborted), the
        // kernel kills what is left, and the directory goes once the killed
        // processes are reaped: waited for on a thread of its own, never on
        // the async thread that dropped this.
        if std::fs::remove_dir(&self.dir).is_err() {
            kill_all(&self.dir);
            let dir = self.dir.clone();
            let _ = std::thread::Builder::new()
                .name("hookci-cgroup".into())
                .spawn(move || {
                    if !remove_when_empty(&dir, Duration::from_secs(5)) {
                        tracing::warn!(dir = %dir.display(), "a step cgroup could not be removed");
                    }
                });
        }
    }
}

/// `O_CLOEXEC`: the step must not inherit the descriptor.
fn libc_cloexec() -> i32 {
    nix::fcntl::OFlag::O_CLOEXEC.bits()
}

fn members(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

fn kill_all(dir: &Path) {
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.kill"))
    {
        let _ = f.write_all(b"1");
    }
}

/// Removes `dir` once its processes are gone (killed processes leave their
/// cgroup when they are reaped); false if it could not within `wait`.
fn remove_when_empty(dir: &Path, wait: Duration) -> bool {
    let until = Instant::now() + wait;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return true,
            Err(_) if Instant::now() < until => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => return false,
        }
    }
}

/// Removes this process's (empty) directory of step cgroups, at shutdown;
/// a later step makes it again.
pub fn release() {
    if let Some(Ok(base)) = BASE.get() {
        let _ = std::fs::remove_dir(base);
    }
}

/// Kills the processes left in the step cgroups of dead hookci processes
/// (siblings `hookci.<pid>` whose pid is gone) and removes those cgroups.
/// Returns how many processes were killed. Blocking; call at start.
pub fn kill_stale() -> usize {
    let Some(own) = base().and_then(Path::parent) else {
        return 0;
    };
    let Ok(entries) = std::fs::read_dir(own) else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        if alive {
            continue;
        }
        let dead = entry.path();
        let steps: Vec<PathBuf> = std::fs::read_dir(&dead)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        for step in &steps {
            killed += members(step).len();
            kill_all(step);
        }
        for step in &steps {
            remove_when_empty(step, Duration::from_secs(5));
        }
        let _ = std::fs::remove_dir(&dead);
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/sys/fs/cgroup"), "/sys/fs/cgroup");
        assert_eq!(unescape(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape(r"/x\"), r"/x\");
    }
}
