//! Steps as subprocesses: a cleared environment, stdin from /dev/null, a
//! process group of their own, output streamed to the log, and a kill
//! sequence that leaves no process of the step behind.
//!
//! A step is `/bin/sh -ec SCRIPT` (or `bash -ec SCRIPT`) with the script as
//! one argument; values from a payload reach it only through its
//! environment. Its stdout and stderr are one pipe (as GitHub Actions and
//! Woodpecker do: not a pty, so programs do not take the log for a
//! terminal), so the log has the step's output in the order it was written;
//! a capture thread of the log reads it and writes each chunk as it arrives.
//!
//! On timeout or cancel the step's process group gets SIGTERM, then SIGKILL
//! after [`StepSpec::kill_grace`]. When a step ends, however it ends, what it
//! left running is stopped the same way ([`sweep`]): its group, and the
//! processes that left the group (`setsid`) but carry the build's marker in
//! their environment. That last part needs hookci to be a child subreaper:
//! call [`init_reaper`] once at start.
//!
//! *Invariant:* no process of a step outlives [`run_step`], and
//! [`run_step`] never panics.

mod spawner;
mod sweep;

pub(crate) use sweep::{alive, environ_has_all};

use crate::pipeline::Shell;
use crate::pipeline::sandbox::LimitKeys;
use crate::runner::cgroup::StepCgroup;
use crate::runner::log::LogWriter;
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::{Gid, Pid, Uid, getegid, geteuid};
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;
use sweep::StepProcs;
use tokio::process::{Child, Command};
use tokio::signal::unix::{Signal as UnixSignal, SignalKind, signal};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The size asked for a step's output pipe (Linux's default limit for an
/// unprivileged process): a step that prints fast blocks less often, and
/// hookci wakes once per large chunk instead of once per 64 KiB.
const PIPE_SIZE: i32 = 1 << 20;

/// How long to keep reading a step's output once all its processes are
/// gone: a pipe can only stay open past that if something unknown to the
/// sweep holds it.
const DRAIN_AFTER_SWEEP: Duration = Duration::from_secs(2);

/// The environment variable whose entry marks a build's processes.
/// The environment variables whose entries together mark a build's
/// processes: the build's id, and its URL, which names this daemon (two
/// daemons on one machine, or two test servers in one process, share ids).
const MARKER_VARS: [&str; 2] = ["HOOKCI_BUILD_ID", "HOOKCI_BUILD_URL"];

/// Everything needed to run one step.
#[derive(Debug, Clone)]
pub struct StepSpec {
    /// The step's name, for hookci's own log lines.
    pub name: String,
    /// The script, given to the shell as one argument.
    pub script: String,
    /// The shell that runs the script.
    pub shell: Shell,
    /// The working directory (the checkout).
    pub cwd: PathBuf,
    /// The step's whole environment, in order; nothing else is inherited.
    /// Its `HOOKCI_BUILD_ID` entry marks the build's processes.
    pub env: Vec<(String, String)>,
    /// The step's time limit.
    pub timeout: Option<Duration>,
    /// Run as this (uid, gid); only possible when hookci runs as root.
    pub user: Option<(u32, u32)>,
    /// How long processes get between SIGTERM and SIGKILL (10 s in the
    /// daemon).
    pub kill_grace: Duration,
    /// Run under bwrap: its path and arguments up to the command (see
    /// [`crate::runner::sandbox`]); `None` runs the shell as it is.
    pub sandbox: Option<Arc<[OsString]>>,
    /// `[limits]`, written into the step's cgroup where there is one.
    pub limits: LimitKeys,
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// The shell exited with this code.
    Exited(i32),
    /// The shell was killed by this signal (not by hookci).
    Signalled(i32),
    /// The step ran past its timeout (this long) and was stopped.
    TimedOut(Duration),
    /// The build was cancelled while the step ran (or before it started).
    Cancelled,
    /// The step could not be started; why, in words.
    SpawnFailed(String),
    /// The kernel killed a process of the step at its memory limit (the
    /// limit as written).
    OutOfMemory(String),
}

impl StepOutcome {
    /// True only for exit code 0.
    pub fn succeeded(&self) -> bool {
        match self {
            StepOutcome::Exited(code) => *code == 0,
            StepOutcome::Signalled(_)
            | StepOutcome::TimedOut(_)
            | StepOutcome::Cancelled
            | StepOutcome::SpawnFailed(_)
            | StepOutcome::OutOfMemory(_) => false,
        }
    }
}

impl fmt::Display for StepOutcome {
    /// Reads as a build's reason: "exited 101", "timed out after 30m".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepOutcome::Exited(code) => write!(f, "exited {code}"),
            StepOutcome::Signalled(signal) => write!(f, "killed by signal {signal}"),
            StepOutcome::TimedOut(after) => {
                write!(f, "timed out after {}", humantime::format_duration(*after))
            }
            StepOutcome::Cancelled => f.write_str("cancelled"),
            StepOutcome::SpawnFailed(why) => write!(f, "could not start: {why}"),
            StepOutcome::OutOfMemory(limit) => write!(f, "ran out of memory (limit {limit})"),
        }
    }
}

/// Makes this process the child subreaper of its descendants, so that what
/// a step leaves behind (even with `setsid`) is re-parented to hookci, where
/// the end-of-step sweep finds and reaps it. Call once at start (the daemon,
/// `hookci run`); calling again is harmless.
pub fn init_reaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// Gives `path` and everything under it to `uid:gid`, without following
/// symbolic links (a link itself changes owner, never its target). Children
/// go before their directory, so the new owner can rearrange nothing in the
/// tree before all of it is done.
pub fn chown_tree(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    // (path, its children were already pushed)
    let mut stack = vec![(path.to_path_buf(), false)];
    while let Some((p, expanded)) = stack.pop() {
        let is_dir = std::fs::symlink_metadata(&p)?.is_dir();
        if is_dir && !expanded {
            stack.push((p.clone(), true));
            for entry in std::fs::read_dir(&p)? {
                stack.push((entry?.path(), false));
            }
            continue;
        }
        std::os::unix::fs::lchown(&p, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// Runs one step to its end, streaming its output into `log`, and stops
/// whatever it left running. Never panics: a step that cannot start is
/// [`StepOutcome::SpawnFailed`].
pub async fn run_step(
    spec: &StepSpec,
    log: &mut LogWriter,
    cancel: &CancellationToken,
) -> StepOutcome {
    if cancel.is_cancelled() {
        return StepOutcome::Cancelled;
    }
    // Before the spawn, so that no exit goes unnoticed.
    let mut sigchld = signal(SignalKind::child()).ok();
    // Dropped last: by then the sweep emptied it (or, if this task is
    // aborted, the kernel kills what is in it).
    let cgroup = StepCgroup::create(&spec.limits);
    let join = match (&cgroup, spec.user) {
        // Dropping to another user needs fork (no posix_spawn), and the
        // cgroup must be joined before the uid changes: a pre_exec hook.
        (Some(cgroup), Some(_)) if geteuid().is_root() => match cgroup.procs_fds() {
            Ok(procs) => Join::Hook(procs),
            Err(e) => {
                tracing::warn!(error = %e, "cannot use the step's cgroup");
                Join::No
            }
        },
        (Some(cgroup), _) => Join::Wrapper(cgroup.procs_paths()),
        (None, _) => Join::No,
    };
    // Every step starts on the one spawner thread (see `spawner`): fork
    // copies the daemon's page tables and the parent waits for the child's
    // exec, which is no work for an async thread, and bwrap's
    // parent-death signal follows the thread that started it.
    let handle = tokio::runtime::Handle::current();
    let owned = spec.clone();
    let spawned = spawner::run(move || {
        let _runtime = handle.enter();
        spawn(&owned, &join)
    })
    .await
    .unwrap_or_else(|| Err("the spawner thread failed".into()));
    let (mut child, pipe) = match spawned {
        Ok(spawned) => spawned,
        Err(why) => return StepOutcome::SpawnFailed(why),
    };
    let Some(pgid) = child.id().and_then(|id| i32::try_from(id).ok()) else {
        // Only a child that was already reaped has no id.
        return StepOutcome::SpawnFailed("the shell vanished as it started".into());
    };
    let pgid = Pid::from_raw(pgid);
    let mut guard = GroupGuard { pgid, armed: true };
    let marker: Vec<Vec<u8>> = spec
        .env
        .iter()
        .filter(|(k, _)| MARKER_VARS.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v}").into_bytes())
        .collect();
    let procs = StepProcs {
        pgid,
        marker: &marker,
        cgroup: cgroup.as_ref(),
    };
    // Read, masked and written by a thread of the log's (see
    // `LogWriter::capture`); stopped when this function is dropped.
    let _capture = match log.capture(pipe) {
        Ok(guard) => Some(guard),
        Err(e) => {
            tracing::error!(step = %spec.name, error = %e, "cannot capture a step's output");
            None
        }
    };

    let deadline = spec.timeout.map(|t| Instant::now() + t);
    let mut stopping: Option<StepOutcome> = None;
    let mut kill_at: Option<Instant> = None;
    let mut killed = false;
    loop {
        tokio::select! {
            () = exited(pgid, &mut sigchld) => break,
            () = sleep_until(deadline), if stopping.is_none() => {
                let after = spec.timeout.unwrap_or_default();
                let note = format!(
                    "[hookci] step {} timed out after {}: stopping it",
                    spec.name,
                    humantime::format_duration(after),
                );
                stopping = Some(StepOutcome::TimedOut(after));
                kill_at = Some(begin_stop(procs, spec.sandbox.is_some(), spec.kill_grace));
                let _ = log.line(&note).await;
            }
            () = cancel.cancelled(), if stopping.is_none() => {
                stopping = Some(StepOutcome::Cancelled);
                kill_at = Some(begin_stop(procs, spec.sandbox.is_some(), spec.kill_grace));
                let note = format!("[hookci] step {} cancelled: stopping it", spec.name);
                let _ = log.line(&note).await;
            }
            () = sleep_until(kill_at), if !killed => {
                killed = true;
                sweep::signal_group(pgid, Signal::SIGKILL);
                let note = format!(
                    "[hookci] step {}: processes still running after {}, sending SIGKILL",
                    spec.name,
                    humantime::format_duration(spec.kill_grace),
                );
                let _ = log.line(&note).await;
            }
        }
    }

    // The shell is gone. Stop what it left running while reading the pipes
    // to their end: a leftover process may still hold them, and one that
    // handles SIGTERM by printing must not block on a full pipe.
    let sweep = sweep::stop_leftovers(procs, kill_at, spec.kill_grace);
    tokio::pin!(sweep);
    let mut stopped: Option<usize> = None;
    let mut give_up: Option<Instant> = None;
    let mut stop_capture = false;
    loop {
        tokio::select! {
            n = &mut sweep, if stopped.is_none() => {
                stopped = Some(n);
                give_up = Some(Instant::now() + DRAIN_AFTER_SWEEP);
            }
            () = log.capture_ended() => break,
            () = sleep_until(give_up) => {
                tracing::warn!(step = %spec.name, "a step's output stayed open after its processes were stopped");
                stop_capture = true;
                break;
            }
        }
    }
    log.end_capture(stop_capture).await;
    let stopped = match stopped {
        Some(n) => n,
        None => sweep.await,
    };
    // Only now is the shell reaped: until here its pid, the group's id,
    // could not be given to another process.
    guard.armed = false;
    let status = child.wait().await;
    if stopped > 0 && stopping.is_none() {
        let note = format!(
            "[hookci] step {}: stopped {stopped} process{} it left running",
            spec.name,
            if stopped == 1 { "" } else { "es" },
        );
        let _ = log.line(&note).await;
    }

    let out_of_memory = match (&cgroup, &spec.limits.memory) {
        (Some(cgroup), Some((_, limit))) if cgroup.oom_killed() => Some(limit.clone()),
        _ => None,
    };
    match (stopping, out_of_memory) {
        (Some(outcome), _) => outcome,
        (None, Some(limit)) => StepOutcome::OutOfMemory(limit),
        (None, None) => outcome_of(status),
    }
}

/// Kills the step's group if [`run_step`] is dropped before its end (its
/// task aborted): the sweep cannot run then, but the group at least does
/// not outlive it.
#[derive(Debug)]
struct GroupGuard {
    pgid: Pid,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            sweep::signal_group(self.pgid, Signal::SIGKILL);
        }
    }
}

/// Returns once the shell (`pid`) has exited, leaving it unreaped: as a
/// zombie it keeps its pid, and with it the process group's id, from being
/// reused while the group is still signalled.
async fn exited(pid: Pid, sigchld: &mut Option<UnixSignal>) {
    loop {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(pid), flags) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
            // Exited; or nothing left to wait for.
            Ok(_) | Err(_) => return,
        }
        match sigchld {
            // SIGCHLD comes for every child; the timeout covers a stream
            // that stopped delivering, and a wake-up that raced the exit
            // (seen under the sandbox, where bwrap and its init end
            // together): a waitid(2) every 20 ms costs nothing.
            Some(sigchld) => {
                let _ = tokio::time::timeout(Duration::from_millis(20), sigchld.recv()).await;
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// SIGTERM to the step now; returns when SIGKILL is due. Under the
/// sandbox, the group's leader is bwrap, which dies of SIGTERM and takes
/// its pid namespace with it at once: the step's own processes get the
/// SIGTERM instead (they are in the group too, or in a session of their
/// own with `--new-session`, found by their marker), and bwrap ends when
/// the step's shell does.
fn begin_stop(procs: StepProcs<'_>, sandboxed: bool, grace: Duration) -> Instant {
    if !sandboxed || sweep::signal_inside(procs, Signal::SIGTERM) == 0 {
        sweep::signal_group(procs.pgid, Signal::SIGTERM);
    }
    Instant::now() + grace
}

fn outcome_of(status: io::Result<ExitStatus>) -> StepOutcome {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => StepOutcome::Exited(code),
            (None, Some(signal)) => StepOutcome::Signalled(signal),
            // Neither code nor signal is only reported for a stopped
            // process, which `wait` does not return.
            (None, None) => StepOutcome::Signalled(0),
        },
        Err(e) => StepOutcome::SpawnFailed(format!("lost track of the shell: {e}")),
    }
}

/// How a step's shell joins its cgroup, before it runs anything of the
/// step's (so nothing the step starts is ever outside it).
#[derive(Debug)]
enum Join {
    /// No cgroup.
    No,
    /// A small `/bin/sh -c` writes itself into each `cgroup.procs` (these
    /// paths: the step's cgroup, and its cgroup v1 limit groups), then
    /// execs the step's shell (or bwrap): the spawn stays a posix_spawn
    /// (vfork), which costs the daemon a fraction of what fork does.
    Wrapper(Vec<PathBuf>),
    /// Between fork and exec, before dropping to the step's user (who may
    /// not write to the cgroup), through these `cgroup.procs` descriptors.
    Hook(Vec<OwnedFd>),
}

/// The wrapper of [`Join::Wrapper`]: `$1` how many `cgroup.procs` files
/// follow, then those files, then the command (the step's shell and its
/// script, or bwrap with its arguments first). A join that fails leaves
/// the step to its group and marker, as without cgroups. A shell exports variables of
/// its own on `exec` (dash `PWD`; bash also `SHLVL`, `OLDPWD`): those the
/// step's environment does not name are unset first, so the step's shell
/// starts with exactly its environment.
fn join_then_exec(env: &[(String, String)]) -> String {
    let own: Vec<&str> = ["PWD", "OLDPWD", "SHLVL"]
        .into_iter()
        .filter(|name| !env.iter().any(|(k, _)| k == name))
        .collect();
    let unset = if own.is_empty() {
        String::new()
    } else {
        format!("unset {}; ", own.join(" "))
    };
    format!(
        r#"n=$1; shift; while [ "$n" -gt 0 ]; do {{ echo 0 >"$1"; }} 2>/dev/null; shift; n=$((n-1)); done; {unset}exec "$@""#
    )
}

/// Starts the shell with its stdout and stderr on one new pipe, and
/// returns it with the pipe's read end; or says in words why it could not
/// be started.
#[allow(
    unsafe_code,
    reason = "pre_exec: the only way to act between fork and exec; the closure makes only async-signal-safe system calls"
)]
fn spawn(spec: &StepSpec, join: &Join) -> Result<(Child, OwnedFd), String> {
    if !spec.cwd.is_dir() {
        return Err(format!(
            "the working directory {} is not a directory",
            spec.cwd.display()
        ));
    }
    let shell = shell_path(spec.shell)?;
    let mut argv: Vec<OsString> = spec
        .sandbox
        .as_deref()
        .map(<[_]>::to_vec)
        .unwrap_or_default();
    argv.extend([shell.into(), "-ec".into(), spec.script.clone().into()]);
    let mut cmd = match join {
        Join::Wrapper(procs) => {
            let mut cmd = Command::new("/bin/sh");
            cmd.arg("-c")
                .arg(join_then_exec(&spec.env))
                .arg("hookci-step")
                .arg(procs.len().to_string())
                .args(procs)
                .args(&argv);
            cmd
        }
        Join::No | Join::Hook(_) => {
            let mut cmd = Command::new(&argv[0]);
            cmd.args(&argv[1..]);
            cmd
        }
    };
    let program = argv[0].clone();
    let (read, write) = output_pipe().map_err(|e| format!("cannot make the output pipe: {e}"))?;
    let write_err = write
        .try_clone()
        .map_err(|e| format!("cannot make the output pipe: {e}"))?;
    cmd.env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::from(write_err))
        .process_group(0);
    let mut switch = None;
    if let Some((uid, gid)) = spec.user {
        if geteuid().is_root() {
            switch = Some((Uid::from_raw(uid), Gid::from_raw(gid)));
        } else if Uid::from_raw(uid) != geteuid() || Gid::from_raw(gid) != getegid() {
            return Err(format!(
                "cannot run as uid {uid} gid {gid}: hookci is not running as root"
            ));
        }
    }
    let join: Vec<RawFd> = match join {
        Join::Hook(procs) => procs.iter().map(AsRawFd::as_raw_fd).collect(),
        Join::No | Join::Wrapper(_) => Vec::new(),
    };
    if !join.is_empty() || switch.is_some() {
        // SAFETY: between fork and exec the closure only calls write(2),
        // setgroups(2), setgid(2) and setuid(2): no allocation, no lock. The
        // descriptor is the cgroup's `cgroup.procs`, kept open by
        // `cgroup_procs` for the whole spawn.
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &join {
                    // "0" moves the writer itself. Best effort: without it
                    // the step is still held by its group and marker.
                    let _ = nix::unistd::write(std::os::fd::BorrowedFd::borrow_raw(fd), b"0");
                }
                if let Some((uid, gid)) = switch {
                    // As std does for `uid()`: no supplementary groups.
                    nix::unistd::setgroups(&[]).map_err(io::Error::from)?;
                    nix::unistd::setgid(gid).map_err(io::Error::from)?;
                    nix::unistd::setuid(uid).map_err(io::Error::from)?;
                }
                Ok(())
            });
        }
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("{}: {e}", Path::new(&program).display()))?;
    // `cmd` holds the parent's copies of the write end: without them the
    // pipe ends when the step's last process closes it.
    drop(cmd);
    Ok((child, read))
}

/// A new pipe for a step's output: both ends close-on-exec (the child gets
/// the write end as its fds 1 and 2 only), the read end non-blocking, and
/// as large as an unprivileged process may ask.
fn output_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    fcntl(&read, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    // Best effort: a smaller pipe is slower, not wrong.
    let _ = fcntl(&read, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    Ok((read, write))
}

fn shell_path(shell: Shell) -> Result<&'static Path, String> {
    match shell {
        Shell::Sh => Ok(Path::new("/bin/sh")),
        Shell::Bash => ["/bin/bash", "/usr/bin/bash"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.is_file())
            .ok_or_else(|| "bash is not installed (looked for /bin/bash and /usr/bin/bash)".into()),
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
