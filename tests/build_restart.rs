//! A daemon killed with SIGKILL mid-build: on restart, what its step left
//! running is stopped, and the build runs again to success as attempt 2.

mod common;
#[path = "support/gitserve.rs"]
mod gitserve;

use common::{client, fixture, hub_sha256, spawn_daemon};
use gitserve::Upstream;
use serde_json::Value;
use std::time::{Duration, Instant};

fn processes_with(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| {
            String::from_utf8_lossy(c)
                .replace('\0', " ")
                .contains(needle)
        })
        .count()
}

async fn wait_for(base: &str, id: i64, want: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(res) = client().get(format!("{base}/api/builds/{id}")).send().await {
            if let Ok(b) = res.json::<Value>().await {
                if want(&b) {
                    return b;
                }
            }
        }
        assert!(Instant::now() < until, "build {id} never got there");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_interrupted_by_sigkill_runs_again_as_attempt_2_and_succeeds() {
    let up = Upstream::new("restart");
    let commit = up.push(&[("README", "x\n")], "first");
    let dir = tempfile::tempdir().expect("tmp");
    let mark = dir.path().join("first-run.mark");
    std::fs::create_dir_all(dir.path().join("pipelines")).expect("mkdir");
    std::fs::write(
        dir.path().join("pipelines/app.toml"),
        format!(
            "repo = \"Codertocat/Hello-World\"\nsecret = \"s\"\n[env]\nMARK = \"{}\"\n\
             [[steps]]\nname = \"work\"\n\
             run = 'if [ ! -e \"$MARK\" ]; then touch \"$MARK\"; sleep 41341; fi; echo second run'\n",
            mark.display()
        ),
    )
    .expect("pipeline");
    let (mut daemon, base) = spawn_daemon(dir.path(), "max_parallel_builds = 1");

    let mut body: Value =
        serde_json::from_slice(&fixture("github/goscm__push.json")).expect("json");
    body["ref"] = "refs/heads/main".into();
    body["after"] = commit.clone().into();
    body["head_commit"]["id"] = commit.clone().into();
    body["repository"]["clone_url"] = up.url().into();
    let body = serde_json::to_vec(&body).expect("json");
    let res = client()
        .post(format!("{base}/hooks/app"))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", "r1")
        .header("X-Hub-Signature-256", hub_sha256("s", &body))
        .body(body)
        .send()
        .await
        .expect("deliver");
    assert_eq!(res.status().as_u16(), 202);
    let id = res.json::<Value>().await.expect("json")["builds"][0]["id"]
        .as_i64()
        .expect("id");

    // The first run is in its step; kill the daemon under it.
    let until = Instant::now() + Duration::from_secs(60);
    while !mark.exists() {
        assert!(Instant::now() < until, "the step never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    daemon.kill().expect("SIGKILL");
    daemon.wait().expect("reap");
    // The step's shell and its sleep outlive a SIGKILLed daemon.
    assert!(
        processes_with("sleep 41341") >= 1,
        "the scenario needs a surviving step"
    );

    let (mut daemon, base) = spawn_daemon(dir.path(), "max_parallel_builds = 1");
    let b = wait_for(&base, id, |b| {
        b["status"] == "success" || b["status"] == "failure" || b["status"] == "error"
    })
    .await;
    assert_eq!(b["status"], "success", "{b}");
    assert_eq!(b["attempt"], 2, "{b}");
    assert_eq!(
        processes_with("sleep 41341"),
        0,
        "the restart stopped what the first run left"
    );
    let log = std::fs::read_to_string(dir.path().join(format!("data/logs/{id}.log"))).expect("log");
    assert!(log.contains("second run"), "{log}");
    daemon.kill().expect("SIGKILL");
    daemon.wait().expect("reap");
}
