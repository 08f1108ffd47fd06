//! Writes that fail: a build whose log fills its disk does not end
//! `success`, and a step's state that cannot be written at once is retried
//! until it is.

use crate::common;
use crate::gitserve;
use crate::prereq;

use common::{TestServer, ZERO};
use gitserve::Upstream;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SECRET: &str = "disk-secret";

/// A small tmpfs mounted on a directory for as long as it lives.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a daemon that still holds a file open must not leave it
        // mounted.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_whose_log_filled_the_disk_ends_error_saying_so() {
    if !nix::unistd::geteuid().is_root() {
        prereq::missing("mounting a small tmpfs for the logs needs root");
        return;
    }
    let up = Upstream::new("full-disk");
    let commit = up.push(&[("README", "x\n")], "x");
    let toml = common::with_clone_url(
        &up.url(),
        &format!(
            "repo = \"Codertocat/Hello-World\"\nsecret = \"{SECRET}\"\n\
             [[steps]]\nname = \"fill\"\n\
             run = \"head -c 1000000 /dev/zero | tr '\\\\000' x; echo\"\n"
        ),
    );
    // The logs directory is a 256 KiB filesystem; the step prints 1 MB.
    let dir = tempfile::tempdir().expect("temp dir");
    let logs = dir.path().join("data/logs");
    let _tmpfs = Tmpfs::mount(&logs, "256k");
    let data = dir.path().join("data");
    let server = TestServer::start(&[("app", &toml)], |c| {
        c.max_parallel_builds = 1;
        c.data_dir = data;
    })
    .await;
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "x");
    let id = common::queue_github(&server.base(), "app", SECRET, "fill", &body).await[0];
    let b = common::wait_final(&server.base(), id).await;
    assert_eq!(b["status"], "error", "{b}");
    let reason = b["reason"].as_str().expect("a reason");
    assert_eq!(
        reason, "the build log could not be written: No space left on device",
        "{b}"
    );
    // The step itself ran to its end, and that is recorded.
    assert_eq!(b["steps"][0]["status"], "success", "{b}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steps_end_that_cannot_be_written_at_once_is_retried() {
    let up = Upstream::new("step-retry");
    let commit = up.push(&[("README", "x\n")], "x");
    let marks = tempfile::tempdir().expect("marker dir");
    let go = marks.path().join("go");
    let toml = common::with_clone_url(
        &up.url(),
        &format!(
            "repo = \"Codertocat/Hello-World\"\nsecret = \"{SECRET}\"\n\
             [sandbox]\nread_only = [{dir:?}]\n\
             [[steps]]\nname = \"wait\"\n\
             run = 'while [ ! -e {go:?} ]; do sleep 0.05; done'\n",
            dir = marks.path(),
            go = go,
        ),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("pipelines")).expect("pipelines dir");
    std::fs::write(dir.path().join("pipelines/app.toml"), &toml).expect("pipeline");
    let (_daemon, base, log) = common::spawn_daemon_with_log(dir.path(), "max_parallel_builds = 1");
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "x");
    let id = common::queue_github(&base, "app", SECRET, "retry", &body).await[0];
    common::wait_build(&base, id, |b| b["steps"][0]["status"] == "running").await;

    // Another process holds the store's write lock past SQLite's busy
    // timeout (what a full disk does to a write, too: the transaction
    // fails), and the step ends meanwhile.
    let locker = rusqlite::Connection::open(dir.path().join("data/hookci.db")).expect("open db");
    locker.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    std::fs::write(&go, "").expect("go");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut failed_once = false;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match log.recv_timeout(left) {
            Ok(line) if line.contains("cannot record a step's end") => {
                failed_once = true;
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    locker.execute_batch("ROLLBACK").expect("unlock");
    let b = common::wait_final(&base, id).await;
    assert!(failed_once, "the step's end was never retried: {b}");
    assert_eq!(b["status"], "success", "{b}");
    assert_eq!(b["steps"][0]["status"], "success", "{b}");
    assert_eq!(b["steps"][0]["exit_code"], 0, "{b}");
}
