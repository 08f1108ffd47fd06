//! Writes that fail: a build whose log fills its disk does not end
//! `success`, and a step's state that cannot be written at once is retried
//! until it is.

mod common;
#[path = "support/gitserve.rs"]
mod gitserve;
#[path = "support/prereq.rs"]
mod prereq;

use common::{TestServer, ZERO};
use gitserve::Upstream;
use std::io::{BufRead, BufReader};
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

/// `hookci serve` with its stderr lines sent to a channel.
fn serve_with_log(
    dir: &Path,
    toml: &str,
) -> (common::Daemon, String, std::sync::mpsc::Receiver<String>) {
    std::fs::create_dir_all(dir.join("pipelines")).expect("pipelines dir");
    std::fs::write(dir.join("pipelines/app.toml"), toml).expect("pipeline");
    let config = dir.join("hookci.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\npipelines_dir = \"{}\"\nmax_parallel_builds = 1\n",
            dir.join("data").display(),
            dir.join("pipelines").display()
        ),
    )
    .expect("config");
    let mut child = common::Daemon(
        std::process::Command::new(env!("CARGO_BIN_EXE_hookci"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("HOOKCI_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn hookci"),
    );
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                // Keep draining: the daemon must never block on its stderr.
                continue;
            }
        }
    });
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("hookci listens");
        if let Some(rest) = line.split("address=").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .expect("an address")
                .to_owned();
        }
    };
    (child, format!("http://{addr}"), rx)
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
    let (_daemon, base, log) = serve_with_log(dir.path(), &toml);
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
