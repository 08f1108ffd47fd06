//! Processes a dead daemon's builds left behind.
//!
//! When hookci is killed mid-build (SIGKILL, OOM, power cut of the daemon
//! alone), its steps' processes are re-parented to init and keep running.
//! On the next start, before the interrupted builds run again, they are
//! found by the marker every step's environment carries (`HOOKCI_BUILD_ID`
//! together with `HOOKCI_BUILD_URL`, which names this daemon's public URL)
//! and stopped: SIGTERM, then SIGKILL after a grace.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

/// Stops every process whose environment holds `HOOKCI_BUILD_ID=ID` and
/// `HOOKCI_BUILD_URL=URL` for one of `builds` (id, url). Returns how many
/// processes were signalled.
pub fn kill_leftovers(builds: &[(i64, String)], grace: Duration) -> usize {
    if builds.is_empty() {
        return 0;
    }
    let markers: Vec<Vec<Vec<u8>>> = builds
        .iter()
        .map(|(id, url)| {
            vec![
                format!("HOOKCI_BUILD_ID={id}").into_bytes(),
                format!("HOOKCI_BUILD_URL={url}").into_bytes(),
            ]
        })
        .collect();
    let found = matching(&markers);
    for pid in &found {
        let _ = kill(*pid, Signal::SIGTERM);
    }
    let until = Instant::now() + grace;
    let mut alive: Vec<Pid> = found.clone();
    while !alive.is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
        alive.retain(|pid| super::step::alive(pid.as_raw()));
    }
    for pid in alive {
        let _ = kill(pid, Signal::SIGKILL);
    }
    found.len()
}

fn matching(markers: &[Vec<Vec<u8>>]) -> Vec<Pid> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(pid) = i32::try_from(pid) else {
            continue;
        };
        if markers.iter().any(|m| super::step::environ_has_all(pid, m)) {
            pids.push(Pid::from_raw(pid));
        }
    }
    pids
}
