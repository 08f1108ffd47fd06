//! When the daemon runs as root and `run_as` is set, steps run as that
//! user and the workspace belongs to it.

mod common;
#[path = "support/gitserve.rs"]
mod gitserve;

use common::{TestServer, client, fixture, hub_sha256};
use gitserve::Upstream;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_run_as_the_run_as_user_in_a_workspace_it_owns() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: run_as needs the tests to run as root");
        return;
    }
    let Ok(Some(nobody)) = nix::unistd::User::from_name("nobody") else {
        eprintln!("skipped: this machine has no user 'nobody'");
        return;
    };
    let up = Upstream::new("runas");
    let commit = up.push(&[("README", "x\n")], "x");
    let pipeline = "repo = \"Codertocat/Hello-World\"\nsecret = \"s\"\n[[steps]]\nname = \"who\"\n\
                    run = 'echo \"uid=$(id -u) owner=$(stat -c %u .) home=$(stat -c %u \"$HOME\")\"; touch made-by-step'\n";
    let server = TestServer::start(&[("app", pipeline)], |c| {
        c.max_parallel_builds = 1;
        c.run_as = Some("nobody".into());
    })
    .await;
    // The user must be able to reach the data dir, as under /var/lib.
    for dir in [server.dir.path(), &server.config.data_dir] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let mut body: Value =
        serde_json::from_slice(&fixture("github/goscm__push.json")).expect("json");
    body["ref"] = "refs/heads/main".into();
    body["after"] = commit.clone().into();
    body["head_commit"]["id"] = commit.into();
    body["repository"]["clone_url"] = up.url().into();
    let body = serde_json::to_vec(&body).expect("json");
    let res = client()
        .post(server.url("/hooks/app"))
        .header("X-GitHub-Event", "push")
        .header("X-Hub-Signature-256", hub_sha256("s", &body))
        .body(body)
        .send()
        .await
        .expect("deliver");
    let id = res.json::<Value>().await.expect("json")["builds"][0]["id"]
        .as_i64()
        .expect("id");
    let until = Instant::now() + Duration::from_secs(60);
    let b = loop {
        let b: Value = client()
            .get(server.url(&format!("/api/builds/{id}")))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        if b["status"] != "queued" && b["status"] != "running" {
            break b;
        }
        assert!(Instant::now() < until, "{b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = std::fs::read_to_string(server.config.data_dir.join(format!("logs/{id}.log")))
        .expect("log");
    assert_eq!(b["status"], "success", "{b}\n{log}");
    let uid = nobody.uid.as_raw();
    assert!(
        log.contains(&format!("uid={uid} owner={uid} home={uid}")),
        "{log}"
    );
    server.stop().await;
}
