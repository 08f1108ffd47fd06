//! A cgroup (v2) per step, where the kernel allows it: the step's shell is
//! placed in it before it runs anything, so every process the step starts
//! stays in it, whatever it does to its session, process group or
//! environment (`setsid env -i ...` included). The end-of-step sweep stops
//! the cgroup's members along with the group and the marked processes;
//! `cgroup.kill` ends what is left. A daemon that died leaves its cgroups
//! behind: the next start kills their processes ([`kill_stale`]).
//!
//! Layout: `<hookci's own cgroup>/hookci.<pid>/step-<n>`, and hookci
//! itself moves into `<hookci's own cgroup>/hookci.<pid>/daemon`: a cgroup
//! with members can hand no controllers to its children, and a directory
//! whose `daemon` leaf is empty belongs to a daemon that is gone (judged by
//! the cgroup itself, never by a pid that may be a zombie or reused). It
//! needs write access to hookci's own cgroup: root, or systemd's
//! `Delegate=yes` (see `systemd/hookci.service`). Without it, or on a
//! kernel without `cgroup.kill` (before 5.14), steps are contained by
//! process group, subreaper and marker alone, as before.
//!
//! `[limits]` go into the step's cgroup: `memory.max`, `pids.max` and
//! `cpu.max` where the cgroup2 hierarchy has those controllers; on a
//! hybrid host whose controllers are cgroup v1 hierarchies, into a step
//! group of the same name in each (`memory.limit_in_bytes`, `pids.max`,
//! `cpu.cfs_quota_us`), which the step's shell joins too.

use crate::pipeline::sandbox::LimitKeys;
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

/// The controllers a limit needs.
const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// Where each controller's limits go: the cgroup2 step cgroup itself
/// (`None`), or this process's directory of step groups in a v1 hierarchy.
static LIMIT_BASES: OnceLock<[Result<Option<PathBuf>, String>; 3]> = OnceLock::new();

fn limit_bases() -> &'static [Result<Option<PathBuf>, String>; 3] {
    LIMIT_BASES.get_or_init(|| {
        let v2 = base().map(enable_v2_controllers).unwrap_or_default();
        CONTROLLERS.map(|c| {
            if v2.iter().any(|e| e == c) {
                return Ok(None);
            }
            v1_base(c).map(Some)
        })
    })
}

/// Why a limit cannot be enforced here (`None`: all three can).
pub fn limits_unavailable() -> Option<String> {
    if let Some(why) = unavailable_reason() {
        return Some(why.to_owned());
    }
    let missing: Vec<String> = CONTROLLERS
        .iter()
        .zip(limit_bases())
        .filter_map(|(c, b)| b.as_ref().err().map(|why| format!("{c}: {why}")))
        .collect();
    (!missing.is_empty()).then(|| missing.join("; "))
}

/// What `hookci check` says about `[limits]` here, without creating
/// anything for itself: `None` when each controller can be had.
pub fn check_limits() -> Option<String> {
    let Some(own) = own_cgroup() else {
        return Some("no cgroup2 hierarchy is mounted for this process".into());
    };
    let v2 = std::fs::read_to_string(own.join("cgroup.controllers")).unwrap_or_default();
    let mut missing = Vec::new();
    for c in CONTROLLERS {
        if v2.split_whitespace().any(|x| x == c) && writable(&own) {
            continue;
        }
        match v1_own(c) {
            Ok(dir) if writable(&dir) => {}
            Ok(dir) => missing.push(format!(
                "{c}: cannot create cgroups under {}",
                dir.display()
            )),
            Err(why) => missing.push(format!("{c}: {why}")),
        }
    }
    (!missing.is_empty()).then(|| missing.join("; "))
}

fn writable(dir: &Path) -> bool {
    nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_ok()
}

/// Moves hookci into its `daemon` leaf and hands the controllers down to
/// the step cgroups; returns those the steps' parent has.
fn enable_v2_controllers(base: &Path) -> Vec<String> {
    let Some(own) = base.parent() else {
        return Vec::new();
    };
    for c in CONTROLLERS {
        for dir in [own, base] {
            let _ = std::fs::write(dir.join("cgroup.subtree_control"), format!("+{c}"));
        }
    }
    std::fs::read_to_string(base.join("cgroup.subtree_control"))
        .map(|s| s.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// This process's directory of step groups in the v1 hierarchy of
/// `controller`, made if need be.
fn v1_base(controller: &str) -> Result<PathBuf, String> {
    let own = v1_own(controller)?;
    let dir = own.join(format!("{PREFIX}{}", std::process::id()));
    match std::fs::create_dir(&dir) {
        Ok(()) => Ok(dir),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(dir),
        Err(e) => Err(format!("cannot create {} ({e})", dir.display())),
    }
}

/// This process's own cgroup in the v1 hierarchy of `controller`.
fn v1_own(controller: &str) -> Result<PathBuf, String> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup ({e})"))?;
    let path = cgroups
        .lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, list, path) = (f.next()?, f.next()?, f.next()?);
            list.split(',').any(|c| c == controller).then_some(path)
        })
        .ok_or("no cgroup hierarchy has this controller")?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read mountinfo ({e})"))?;
    let own = mounts
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut r = right.split(' ');
            if r.next() != Some("cgroup") {
                return None;
            }
            let opts = r.nth(1)?;
            if !opts.split(',').any(|o| o == controller) {
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
        .ok_or_else(|| "its hierarchy is not mounted".to_owned())?;
    Ok(own)
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
    // hookci's own leaf. Best effort: without it the step cgroups still
    // work, only controllers cannot be handed down.
    let leaf = dir.join(DAEMON_LEAF);
    let moved = std::fs::create_dir(&leaf)
        .or_else(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => Ok(()),
            _ => Err(e),
        })
        .and_then(|()| std::fs::write(leaf.join("cgroup.procs"), b"0"));
    if let Err(e) = moved {
        tracing::debug!(error = %e, "hookci stays in its own cgroup");
        let _ = std::fs::remove_dir(&leaf);
    }
    Ok(dir)
}

/// hookci's own leaf under its directory of step cgroups.
const DAEMON_LEAF: &str = "daemon";

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
    /// The step's groups in cgroup v1 hierarchies, for its limits.
    v1: Vec<(PathBuf, OwnedFd)>,
    /// Where its memory limit is, when it has one: (dir, v1).
    memory: Option<(PathBuf, bool)>,
}

impl StepCgroup {
    /// A new, empty cgroup for a step with `limits` written into it, or
    /// `None` where there are none. A limit that cannot be written is
    /// logged and left out.
    pub fn create(limits: &LimitKeys) -> Option<StepCgroup> {
        let base = base()?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut cgroup = StepCgroup::make(base, n)?;
        if !limits.is_empty() {
            cgroup.limit(limits, n);
        }
        Some(cgroup)
    }

    fn make(base: &Path, n: u64) -> Option<StepCgroup> {
        let dir = base.join(format!("step-{n}"));
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
                v1: Vec::new(),
                memory: None,
            }),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), "cannot create a step cgroup: {e}");
                let _ = std::fs::remove_dir(&dir);
                None
            }
        }
    }

    fn limit(&mut self, limits: &LimitKeys, n: u64) {
        let bases = limit_bases();
        let wanted = [
            limits.memory.as_ref().map(|(bytes, _)| *bytes),
            limits.pids,
            limits
                .cpus
                .map(|c| (c * 100_000.0).round().max(1000.0) as u64),
        ];
        for ((controller, base), value) in CONTROLLERS.iter().zip(bases).zip(wanted) {
            let Some(value) = value else { continue };
            let written = match base {
                Ok(None) => write_v2(&self.dir, controller, value).map(|()| self.dir.clone()),
                Ok(Some(v1)) => self.write_v1(v1, n, controller, value),
                Err(why) => Err(why.clone()),
            };
            match written {
                Ok(dir) if *controller == "memory" => {
                    self.memory = Some((dir, matches!(base, Ok(Some(_)))));
                }
                Ok(_) => {}
                Err(why) => {
                    tracing::warn!(controller, "a step limit is not enforced: {why}");
                }
            }
        }
    }

    fn write_v1(
        &mut self,
        v1_base: &Path,
        n: u64,
        controller: &str,
        value: u64,
    ) -> Result<PathBuf, String> {
        let dir = v1_base.join(format!("step-{n}"));
        let made = std::fs::create_dir(&dir).or_else(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => Ok(()),
            _ => Err(e),
        });
        let result = made.map_err(|e| e.to_string()).and_then(|()| {
            let w = |file: &str, v: String| {
                std::fs::write(dir.join(file), v).map_err(|e| format!("{file}: {e}"))
            };
            match controller {
                "memory" => {
                    w("memory.limit_in_bytes", value.to_string())?;
                    // With swap accounting, swap counts too.
                    if dir.join("memory.memsw.limit_in_bytes").exists() {
                        let _ = w("memory.memsw.limit_in_bytes", value.to_string());
                    }
                }
                "pids" => w("pids.max", value.to_string())?,
                _ => {
                    w("cpu.cfs_period_us", "100000".into())?;
                    w("cpu.cfs_quota_us", value.to_string())?;
                }
            }
            std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc_cloexec())
                .open(dir.join("cgroup.procs"))
                .map_err(|e| e.to_string())
        });
        match result {
            Ok(procs) => {
                self.v1.push((dir.clone(), procs.into()));
                Ok(dir)
            }
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(e)
            }
        }
    }

    /// The `cgroup.procs` files the step's shell writes `0` into to move
    /// itself in: its cgroup's, and its v1 limit groups'.
    pub fn procs_paths(&self) -> Vec<PathBuf> {
        std::iter::once(&self.dir)
            .chain(self.v1.iter().map(|(d, _)| d))
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// Descriptors of those files (close-on-exec) that a child writes `0`
    /// to, between fork and exec.
    pub fn procs_fds(&self) -> io::Result<Vec<OwnedFd>> {
        std::iter::once(&self.procs)
            .chain(self.v1.iter().map(|(_, fd)| fd))
            .map(OwnedFd::try_clone)
            .collect()
    }

    /// True when the kernel killed a process of the step at its memory
    /// limit (`memory.events` on cgroup2, `memory.oom_control` on v1).
    pub fn oom_killed(&self) -> bool {
        let Some((dir, v1)) = &self.memory else {
            return false;
        };
        let file = if *v1 {
            "memory.oom_control"
        } else {
            "memory.events"
        };
        let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        let count = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        count("oom_kill ") > 0 || (!*v1 && count("oom ") > 0)
    }

    /// The processes in the cgroup now.
    pub fn pids(&self) -> Vec<i32> {
        members(&self.dir)
    }
}

impl Drop for StepCgroup {
    fn drop(&mut self) {
        // The v1 groups hold the same processes: empty once the cgroup is.
        let v1: Vec<PathBuf> = self.v1.drain(..).map(|(d, _)| d).collect();
        let remove_v1 = move || {
            for dir in &v1 {
                remove_when_empty(dir, Duration::from_secs(5));
            }
        };
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
                    remove_v1();
                });
        } else {
            remove_v1();
        }
    }
}

/// `O_CLOEXEC`: the step must not inherit the descriptor.
fn libc_cloexec() -> i32 {
    nix::fcntl::OFlag::O_CLOEXEC.bits()
}

fn write_v2(dir: &Path, controller: &str, value: u64) -> Result<(), String> {
    let (file, text) = match controller {
        "memory" => ("memory.max", value.to_string()),
        "pids" => ("pids.max", value.to_string()),
        _ => ("cpu.max", format!("{value} 100000")),
    };
    std::fs::write(dir.join(file), text).map_err(|e| format!("{file}: {e}"))
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
/// and removes those cgroups. A sibling `hookci.<pid>` is stale when its
/// `daemon` leaf is empty (judged by the cgroup, not the pid, which may be
/// a zombie or belong to another process by now); one without a leaf (an
/// older hookci) when that pid is gone or a zombie. Returns how many
/// processes were killed. Blocking; call at start.
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
        let dead = entry.path();
        if pid == std::process::id() as i32 {
            continue;
        }
        let leaf = dead.join(DAEMON_LEAF);
        let alive = if leaf.is_dir() {
            // A hookci started by that one (a test's daemon, hookci building
            // hookci) makes its own cgroups inside this leaf: alive while
            // anything in the leaf's tree is.
            tree_has_members(&leaf)
        } else {
            super::step::alive(pid)
        };
        if alive {
            continue;
        }
        let steps: Vec<PathBuf> = std::fs::read_dir(&dead)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        for step in &steps {
            killed += remove_tree(step);
        }
        let _ = std::fs::remove_dir(&dead);
        // Its v1 limit groups: empty now that the cgroup is.
        for own_v1 in limit_bases()
            .iter()
            .flatten()
            .flatten()
            .filter_map(|b| b.parent())
        {
            let stale = own_v1.join(&name);
            if let Ok(d) = std::fs::read_dir(&stale) {
                for step in d
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                {
                    remove_when_empty(&step.path(), Duration::from_secs(1));
                }
                let _ = std::fs::remove_dir(&stale);
            }
        }
    }
    killed
}

/// True if a process is in `dir` or any cgroup below it.
fn tree_has_members(dir: &Path) -> bool {
    !members(dir).is_empty() || subdirs(dir).iter().any(|d| tree_has_members(d))
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Kills what is left in the cgroup tree at `dir` and removes it, deepest
/// first (a cgroup with children cannot be removed); how many processes
/// were killed. Waits at most a second per cgroup for killed processes to
/// be reaped.
fn remove_tree(dir: &Path) -> usize {
    let mut killed = 0;
    for sub in subdirs(dir) {
        killed += remove_tree(&sub);
    }
    let left = members(dir).len();
    if left > 0 {
        killed += left;
        kill_all(dir);
    }
    remove_when_empty(dir, Duration::from_secs(1));
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
