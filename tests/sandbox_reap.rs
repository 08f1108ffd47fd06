//! The sandbox inits the end-of-step sweep kills are reaped: hookci (a
//! subreaper) inherits them when their bwrap exits, and nothing else waits
//! for them. Its own process: it counts this process's zombie children.

#[path = "support/prereq.rs"]
mod prereq;

use hookci::pipeline::Shell;
use hookci::pipeline::sandbox::{LimitKeys, SandboxKeys};
use hookci::runner::log::LogWriter;
use hookci::runner::sandbox;
use hookci::runner::step::{StepOutcome, StepSpec, init_reaper, run_step};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// This process's zombie children named bwrap that lead no process group
/// (a step's own shell does; a sandbox's init does not).
fn zombie_inits() -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(end) = stat.rfind(')') else { continue };
        let comm = &stat[stat.find('(').unwrap_or(0) + 1..end];
        let f: Vec<&str> = stat[end + 1..].split_ascii_whitespace().collect();
        let (state, ppid, pgrp) = (f[0], f[1].parse().unwrap_or(0), f[2].parse().unwrap_or(0));
        if comm == "bwrap" && state == "Z" && ppid == me && pgrp != pid {
            found.push(pid);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_inits_of_finished_steps_do_not_pile_up_as_zombies() {
    init_reaper().unwrap();
    let bwrap = match sandbox::probe(None) {
        Ok(b) => b,
        Err(why) => return prereq::missing(&why),
    };
    let dir = tempfile::tempdir().unwrap();
    let command = sandbox::Plan::new(
        &bwrap,
        &SandboxKeys::default(),
        dir.path(),
        None,
        Default::default(),
    )
    .command();
    let spec = StepSpec {
        name: "s".into(),
        script: "true".into(),
        shell: Shell::Sh,
        cwd: dir.path().to_path_buf(),
        env: vec![
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("HOOKCI_BUILD_ID".into(), "reap".into()),
        ],
        timeout: Some(Duration::from_secs(20)),
        user: None,
        kill_grace: Duration::from_millis(500),
        sandbox: Some(command),
        limits: LimitKeys::default(),
    };
    for i in 0..12 {
        let path = dir.path().join(format!("{i}.log"));
        let mut log = LogWriter::create(&path, &[], 1 << 20).unwrap();
        let outcome = run_step(&spec, &mut log, &CancellationToken::new()).await;
        log.finish().await.unwrap();
        assert_eq!(outcome, StepOutcome::Exited(0));
    }
    // Each sweep reaps what earlier ones killed; the last step's init may
    // still be dying.
    let left = zombie_inits();
    assert!(left.len() <= 1, "unreaped sandbox inits: {left:?}");
}
