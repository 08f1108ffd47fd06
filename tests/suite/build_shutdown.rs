//! SIGTERM: the daemon stops accepting, lets running builds finish within
//! `shutdown_grace`, then stops the rest and puts them back in the queue;
//! the next start runs them.

use crate::common;
use crate::gitserve;

use common::{ZERO, client, get_build, spawn_daemon, wait_build};
use gitserve::Upstream;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::time::Duration;

async fn deliver(base: &str, pipeline: &str, up: &Upstream, commit: &str, id: &str) -> i64 {
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, commit, "shutdown");
    common::queue_github(base, pipeline, "s", id, &body).await[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_what_fits_in_the_grace_and_requeues_the_rest() {
    let up = Upstream::new("shutdown");
    let commit = up.push(&[("README", "x\n")], "x");
    let dir = tempfile::tempdir().expect("tmp");
    // The mark lives outside the daemon's directory (hookci's config and
    // data are hidden from the sandbox, even under a read_write path).
    let marks = tempfile::tempdir().expect("tmp");
    let mark = marks.path().join("long.mark");
    std::fs::create_dir_all(dir.path().join("pipelines")).expect("mkdir");
    let pipe = |run: &str| {
        common::pipeline_toml("s")
            .clone_url(&up.url())
            .table(&format!("[env]\nMARK = \"{}\"", mark.display()))
            .table(&format!(
                "[sandbox]\nread_write = [\"{}\"]",
                marks.path().display()
            ))
            .step("work", run)
            .to_string()
    };
    std::fs::write(
        dir.path().join("pipelines/quick.toml"),
        pipe("sleep 0.5; echo quick done"),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("pipelines/long.toml"),
        pipe("if [ ! -e \"$MARK\" ]; then touch \"$MARK\"; sleep 41352; fi; echo resumed"),
    )
    .expect("write");
    let settings = "max_parallel_builds = 2\nshutdown_grace = \"2s\"";
    let (mut daemon, base) = spawn_daemon(dir.path(), settings);
    let long = deliver(&base, "long", &up, &commit, "l1").await;
    wait_build(&base, long, |b| b["steps"][0]["status"] == "running").await;
    let quick = deliver(&base, "quick", &up, &commit, "q1").await;
    wait_build(&base, quick, |b| b["steps"][0]["status"] == "running").await;

    let pid = Pid::from_raw(i32::try_from(daemon.id()).expect("pid"));
    kill(pid, Signal::SIGTERM).expect("SIGTERM");
    // It stops accepting while the long build still holds it in its grace.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while client().get(format!("{base}/healthz")).send().await.is_ok() {
        assert!(
            std::time::Instant::now() < until,
            "still accepting after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        daemon.try_wait().expect("try_wait").is_none(),
        "it had stopped accepting only by exiting"
    );
    let status = daemon.wait().expect("exit");
    assert!(status.success(), "the daemon exited with {status}");

    let (mut daemon, base) = spawn_daemon(dir.path(), "max_parallel_builds = 0");
    let q = get_build(&base, quick).await.expect("quick");
    assert_eq!(
        q["status"], "success",
        "the quick build finished within the grace: {q}"
    );
    let l = get_build(&base, long).await.expect("long");
    assert_eq!(
        l["status"], "queued",
        "the long build went back to the queue: {l}"
    );
    assert_eq!(l["attempt"], 1, "a shutdown is not an interruption: {l}");
    daemon.kill().expect("kill");
    daemon.wait().expect("reap");

    let (mut daemon, base) = spawn_daemon(dir.path(), "max_parallel_builds = 2");
    let l = wait_build(&base, long, |b| {
        b["status"] != "queued" && b["status"] != "running"
    })
    .await;
    assert_eq!(l["status"], "success", "{l}");
    let log =
        std::fs::read_to_string(dir.path().join(format!("data/logs/{long}.log"))).expect("log");
    assert!(log.contains("resumed"), "{log}");
    daemon.kill().expect("kill");
    daemon.wait().expect("reap");
}
