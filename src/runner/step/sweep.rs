//! Finding, stopping and reaping what a step left running.
//!
//! A step's processes are found two ways: by its process group (everything
//! it started that did not move out of the group) and, for those that left
//! the group with `setsid` or job control, by the build's marker
//! (`HOOKCI_BUILD_ID=...`) in their initial environment. Only descendants of
//! this process are looked at for the marker: two daemons on one machine
//! may number their builds alike. As a child subreaper (see
//! [`super::init_reaper`]) hookci inherits the orphans of its steps, so
//! everything a step left behind is its descendant, and the zombies are
//! ours to reap.

use crate::runner::cgroup::StepCgroup;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::{Pid, getpid};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How long to keep waiting for processes to die after SIGKILL (a process
/// in uninterruptible sleep dies only when its I/O completes).
const AFTER_KILL: Duration = Duration::from_secs(5);

/// Sandbox inits (see [`sandbox_init`]) killed by a sweep and not yet
/// reaped: they became hookci's children when their bwrap exited, and no
/// one else waits for them (without `--new-session` they are not session
/// leaders, whose zombies [`reap`] takes anyway). Their pids cannot be
/// reused before they are reaped, and only the sweep reaps them.
static KILLED_INITS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// One line of `/proc/PID/stat`, the fields that matter here.
#[derive(Debug, Clone, Copy)]
struct Proc {
    pid: i32,
    ppid: i32,
    pgrp: i32,
    session: i32,
    zombie: bool,
}

/// A step's identity for the sweep.
#[derive(Debug, Clone, Copy)]
pub(super) struct StepProcs<'a> {
    /// The step's process group (the shell's pid).
    pub pgid: Pid,
    /// The environment entries (`HOOKCI_BUILD_ID=...`, `HOOKCI_BUILD_URL=...`)
    /// that together mark the build's processes; empty: sweep the group only.
    pub marker: &'a [Vec<u8>],
    /// The step's cgroup, where there is one: all its members are the step's.
    pub cgroup: Option<&'a StepCgroup>,
}

/// Sends `signal` to the step's whole process group, then SIGCONT so that a
/// stopped process acts on it. A group that is already empty is no error.
pub(super) fn signal_group(pgid: Pid, signal: Signal) {
    let _ = killpg(pgid, signal);
    if signal != Signal::SIGKILL {
        let _ = killpg(pgid, Signal::SIGCONT);
    }
}

/// Stops every process of the step that is still alive and reaps the ones
/// that became ours. `kill_at`: when SIGTERM was already sent (on timeout or
/// cancel), the moment SIGKILL is due; otherwise SIGTERM is sent now and
/// SIGKILL `grace` later. Returns how many processes had to be stopped here.
pub(super) async fn stop_leftovers(
    step: StepProcs<'_>,
    kill_at: Option<Instant>,
    grace: Duration,
) -> usize {
    let me = getpid().as_raw();
    let mut signalled: HashSet<i32> = HashSet::new();
    // What the step left, for its log: not the sandbox's own bwrap, which
    // is still tearing down the step's pid namespace.
    let mut counted: HashSet<i32> = HashSet::new();
    let mut kill_at = kill_at;
    let mut killed_at: Option<Instant> = None;
    let mut pause = Duration::from_millis(5);
    let own_ns = std::fs::read_link("/proc/self/ns/pid").ok();
    loop {
        let procs = scan();
        reap(&procs, me, step, &signalled);
        let alive = targets(&procs, me, step);
        if alive.is_empty() {
            break;
        }
        // Under the sandbox, bwrap's init (pid 1 of the step's pid
        // namespace) outlives the step's shell while its exit tears the
        // namespaces down, which can take the kernel tens of milliseconds.
        // SIGKILL to it takes down everything in that namespace, and
        // nothing in it can survive that: no need to watch it die.
        if kill_at.is_none() && alive.iter().all(|&p| sandbox_init(p, &own_ns)) {
            let mut inits = KILLED_INITS.lock().unwrap_or_else(|p| p.into_inner());
            for &pid in &alive {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                if !inits.contains(&pid) {
                    inits.push(pid);
                }
            }
            break;
        }
        let now = Instant::now();
        match kill_at {
            None => {
                signal_group(step.pgid, Signal::SIGTERM);
                for &pid in &alive {
                    send(pid, Signal::SIGTERM);
                }
                kill_at = Some(now + grace);
            }
            Some(due) if now >= due => {
                let first = killed_at.get_or_insert(now);
                if now.duration_since(*first) > AFTER_KILL {
                    tracing::warn!(
                        left = alive.len(),
                        "processes of a step did not die after SIGKILL"
                    );
                    break;
                }
                signal_group(step.pgid, Signal::SIGKILL);
                for &pid in &alive {
                    send(pid, Signal::SIGKILL);
                }
            }
            Some(_) => {
                // Processes that showed up since (re-parented, or started
                // by one that handles SIGTERM) get SIGTERM too.
                for &pid in alive.iter().filter(|p| !signalled.contains(p)) {
                    send(pid, Signal::SIGTERM);
                }
            }
        }
        for &pid in &alive {
            if !signalled.contains(&pid) && !is_bwrap(pid) {
                counted.insert(pid);
            }
        }
        signalled.extend(alive);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    counted.len()
}

/// True for a bwrap process inside a pid namespace other than hookci's
/// (a sandbox's init; a step cannot name a process of hookci's namespace).
fn sandbox_init(pid: i32, own_ns: &Option<std::path::PathBuf>) -> bool {
    is_bwrap(pid)
        && own_ns.is_some()
        && std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok() != *own_ns
}

fn is_bwrap(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == "bwrap")
}

/// Sends `signal` to every process of the step but its group's leader
/// (bwrap, under the sandbox); returns how many got it.
pub(super) fn signal_inside(step: StepProcs<'_>, signal: Signal) -> usize {
    let me = getpid().as_raw();
    let procs = scan();
    let mut sent = 0;
    for pid in targets(&procs, me, step) {
        if pid != step.pgid.as_raw() {
            send(pid, signal);
            sent += 1;
        }
    }
    sent
}

fn send(pid: i32, signal: Signal) {
    let pid = Pid::from_raw(pid);
    let _ = kill(pid, signal);
    if signal == Signal::SIGTERM {
        let _ = kill(pid, Signal::SIGCONT);
    }
}

/// The live processes of the step: members of its group, and descendants of
/// this process carrying its marker, with all their descendants.
fn targets(procs: &[Proc], me: i32, step: StepProcs<'_>) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let by_pid: HashMap<i32, &Proc> = procs.iter().map(|p| (p.pid, p)).collect();
    let mut found: HashSet<i32> = procs
        .iter()
        .filter(|p| p.pgrp == step.pgid.as_raw())
        .map(|p| p.pid)
        .collect();
    if let Some(cgroup) = step.cgroup {
        found.extend(cgroup.pids());
    }
    if !step.marker.is_empty() {
        let marker = step.marker;
        for pid in descendants(&children, me) {
            if !found.contains(&pid)
                && by_pid.get(&pid).is_some_and(|p| !p.zombie)
                && environ_has_all(pid, marker)
            {
                found.insert(pid);
            }
        }
    }
    let roots: Vec<i32> = found.iter().copied().collect();
    for root in roots {
        found.extend(descendants(&children, root));
    }
    found
        .into_iter()
        .filter(|pid| *pid != me && by_pid.get(pid).is_some_and(|p| !p.zombie))
        .collect()
}

/// Every descendant of `root` (not `root` itself).
fn descendants(children: &HashMap<i32, Vec<i32>>, root: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        for &child in children.get(&pid).into_iter().flatten() {
            // A pid cycle cannot happen in a consistent snapshot, but a
            // snapshot read while processes exit is not one.
            if child != root && !out.contains(&child) {
                out.push(child);
                stack.push(child);
            }
        }
    }
    out
}

/// Reaps our zombie children that belong to the step: members of its group,
/// processes this sweep signalled, session leaders (no child hookci
/// starts itself is one, so such a zombie is an orphan that escaped a step
/// with `setsid`, whichever build it came from), and the sandbox inits
/// earlier sweeps killed. Never the shell itself (the group leader): tokio
/// reaps it, after the sweep.
fn reap(procs: &[Proc], me: i32, step: StepProcs<'_>, signalled: &HashSet<i32>) {
    let mut inits = KILLED_INITS.lock().unwrap_or_else(|p| p.into_inner());
    for p in procs {
        if p.zombie
            && p.ppid == me
            && p.pid != step.pgid.as_raw()
            && (p.pgrp == step.pgid.as_raw()
                || signalled.contains(&p.pid)
                || p.session == p.pid
                // Never a group leader: that is how a step's own shell
                // (tokio's to reap) could look, were the pid reused.
                || (inits.contains(&p.pid) && p.pgrp != p.pid))
        {
            let _ = waitpid(Pid::from_raw(p.pid), Some(WaitPidFlag::WNOHANG));
            inits.retain(|&pid| pid != p.pid);
        }
    }
    // Gone without being reaped here (a parent that was not hookci).
    inits.retain(|&pid| procs.iter().any(|p| p.pid == pid));
}

/// True when `/proc/PID/environ` holds exactly this entry.
/// True when process `pid`'s environment holds every one of `entries`
/// (`NAME=value`, exactly).
pub(crate) fn environ_has_all(pid: i32, entries: &[Vec<u8>]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
        let vars: Vec<&[u8]> = env.split(|b| *b == 0).collect();
        entries.iter().all(|entry| vars.contains(&entry.as_slice()))
    })
}

/// True while process `pid` exists and is not a zombie (dead, not reaped).
pub(crate) fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| parse_stat(pid, &stat))
            .is_some_and(|p| !p.zombie)
}

/// Every process in `/proc` (those that vanish while being read are
/// skipped).
fn scan() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let entry = entry.ok()?;
        let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
        parse_stat(pid, &stat)
    })
    .collect()
}

/// Parses `pid (comm) state ppid pgrp session ...`; `comm` may hold spaces
/// and parentheses, so the fields start after the last `)`.
fn parse_stat(pid: i32, stat: &str) -> Option<Proc> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    Some(Proc {
        pid,
        ppid,
        pgrp,
        session,
        zombie: state == "Z" || state == "X",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_name_with_parentheses_and_spaces_parses() {
        let p = parse_stat(42, "42 (a) b (c) S 1 42 40 0 -1").unwrap();
        assert_eq!((p.ppid, p.pgrp, p.session, p.zombie), (1, 42, 40, false));
    }
}
