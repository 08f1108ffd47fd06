//! A daemon killed with SIGKILL mid-build: on restart, what its step left
//! running is stopped, and the build runs again to success as attempt 2.

use crate::common;
use crate::gitserve;

use common::{ZERO, spawn_daemon};
use gitserve::Upstream;
use std::time::{Duration, Instant};

fn processes_with(needle: &str) -> usize {
    pids_with(needle).len()
}

/// The pids whose command line contains `needle` (a marker unique to this test).
fn pids_with(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            text.contains(needle)
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_interrupted_by_sigkill_runs_again_as_attempt_2_and_succeeds() {
    let up = Upstream::new("restart");
    let commit = up.push(&[("README", "x\n")], "first");
    let dir = tempfile::tempdir().expect("tmp");
    // The mark lives outside the daemon's directory (hookci's config and
    // data are hidden from the sandbox, even under a read_write path).
    let marks = tempfile::tempdir().expect("tmp");
    let mark = marks.path().join("first-run.mark");
    std::fs::create_dir_all(dir.path().join("pipelines")).expect("mkdir");
    std::fs::write(
        dir.path().join("pipelines/app.toml"),
        common::pipeline_toml("s")
            .clone_url(&up.url())
            .table(&format!("[env]\nMARK = \"{}\"", mark.display()))
            .table(&format!(
                "[sandbox]\nread_write = [\"{}\"]",
                marks.path().display()
            ))
            .step(
                "work",
                r#"if [ ! -e "$MARK" ]; then setsid env -i /bin/sleep 41342 & touch "$MARK"; sleep 41341; fi; echo second run"#,
            )
            .to_string(),
    )
    .expect("pipeline");
    let (mut daemon, base) = spawn_daemon(dir.path(), "max_parallel_builds = 1");

    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "first");
    let id = common::queue_github(&base, "app", "s", "r1", &body).await[0];

    // The first run is in its step; kill the daemon under it.
    let until = Instant::now() + Duration::from_secs(60);
    while !mark.exists() {
        assert!(Instant::now() < until, "the step never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Both sleeps have started (the escapee forks before the mark).
    while processes_with("sleep 41341") == 0 || processes_with("sleep 41342") == 0 {
        assert!(Instant::now() < until, "the step's sleeps never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    daemon.kill().expect("SIGKILL");
    daemon.wait().expect("reap");
    // Without the sandbox, the step's shell and its sleep outlive a
    // SIGKILLed daemon; in it, bwrap's --die-with-parent may end them with
    // it (either way the restart must leave none).
    if hookci::runner::sandbox::probe(None).is_err() {
        assert!(
            processes_with("sleep 41341") >= 1,
            "the scenario needs a surviving step"
        );
    }

    let (mut daemon, base) = spawn_daemon(dir.path(), "max_parallel_builds = 1");
    let b = common::wait_final(&base, id).await;
    assert_eq!(b["status"], "success", "{b}");
    assert_eq!(b["attempt"], 2, "{b}");
    assert_eq!(
        processes_with("sleep 41341"),
        0,
        "the restart stopped what the first run left"
    );
    // One escaped with a new session and no environment: only the step's
    // cgroup still knows it, where steps get one.
    if hookci::runner::cgroup::available() {
        assert_eq!(
            processes_with("sleep 41342"),
            0,
            "the restart killed what was left in the dead daemon's step cgroups"
        );
    } else {
        println!("no step cgroups here: the escapee is not checked");
        // The escapee is this test's own step's child: end it by its pid.
        for pid in pids_with("sleep 41342") {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid])
                .status();
        }
    }
    let log = std::fs::read_to_string(dir.path().join(format!("data/logs/{id}.log"))).expect("log");
    assert!(log.contains("second run"), "{log}");
    // The interrupted first run's log is kept beside it.
    let first = std::fs::read_to_string(dir.path().join(format!("data/logs/{id}.log.1")))
        .expect("the first attempt's log");
    assert!(first.contains("(attempt 1)"), "{first}");
    assert!(!first.lines().any(|l| l == "second run"), "{first}");
    assert!(log.contains("(attempt 2)"), "{log}");
    daemon.kill().expect("SIGKILL");
    daemon.wait().expect("reap");
}
