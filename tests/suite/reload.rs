//! SIGHUP reloads the pipelines: a new file is served, a broken one keeps
//! its previous version, and nothing queued is lost.

use crate::common;

use common::{client, fixture, hub_sha256, spawn_daemon};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

fn pipeline(secret: &str) -> String {
    common::pipeline_toml(secret).step("t", "true").to_string()
}

async fn post(base: &str, name: &str, secret: &str, delivery: &str) -> u16 {
    // A body of its own per delivery: the same signed body twice is a replay.
    let mut v: serde_json::Value =
        serde_json::from_slice(&fixture("github/goscm__push.json")).expect("json");
    v["hookci_test_delivery"] = delivery.into();
    let body = serde_json::to_vec(&v).expect("json");
    client()
        .post(format!("{base}/hooks/{name}"))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", delivery)
        .header("X-Hub-Signature-256", hub_sha256(secret, &body))
        .body(body)
        .send()
        .await
        .expect("post")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_serves_new_pipelines_and_keeps_the_old_version_of_a_broken_one() {
    let dir = tempfile::tempdir().expect("tmp");
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir_all(&pipelines).expect("mkdir");
    std::fs::write(pipelines.join("one.toml"), pipeline("first")).expect("write");
    let (mut daemon, base) = spawn_daemon(dir.path(), "max_parallel_builds = 0");
    assert_eq!(post(&base, "one", "first", "a").await, 202);
    assert_eq!(post(&base, "two", "second", "b").await, 404);

    std::fs::write(pipelines.join("two.toml"), pipeline("second")).expect("write");
    std::fs::write(pipelines.join("one.toml"), "repo = [broken").expect("write");
    let pid = Pid::from_raw(i32::try_from(daemon.id()).expect("pid"));
    kill(pid, Signal::SIGHUP).expect("SIGHUP");
    // Bounded wait for the reload to take effect.
    let until = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    while post(&base, "two", "second", &format!("c{n}")).await != 202 {
        assert!(Instant::now() < until, "the new pipeline was never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
        n += 1;
    }
    // The broken file kept its previous version: same secret, still served.
    assert_eq!(post(&base, "one", "first", "d").await, 202);
    let store = common::open_store(&dir.path().join("data"));
    let queued = store.queued_count().await.expect("count");
    assert_eq!(queued, 3, "every acknowledged delivery is still queued");
    daemon.kill().expect("kill");
    daemon.wait().expect("reap");
}
