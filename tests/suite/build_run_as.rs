//! When the daemon runs as root and `run_as` is set, steps run as that
//! user and the workspace belongs to it.

use crate::common;
use crate::gitserve;
use crate::prereq;

use common::{TestServer, ZERO};
use gitserve::Upstream;
use std::os::unix::fs::PermissionsExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_run_as_the_run_as_user_in_a_workspace_it_owns() {
    if !nix::unistd::geteuid().is_root() {
        prereq::missing("run_as needs the tests to run as root");
        return;
    }
    let Ok(Some(nobody)) = nix::unistd::User::from_name("nobody") else {
        prereq::missing("this machine has no user 'nobody'");
        return;
    };
    let up = Upstream::new("runas");
    let commit = up.push(&[("README", "x\n")], "x");
    let pipeline = common::pipeline_toml("s")
        .clone_url(&up.url())
        .step(
            "who",
            r#"echo "uid=$(id -u) owner=$(stat -c %u .) home=$(stat -c %u "$HOME")"; touch made-by-step"#,
        )
        .to_string();
    let server = TestServer::start(&[("app", &pipeline)], |c| {
        c.max_parallel_builds = 1;
        c.run_as = Some("nobody".into());
    })
    .await;
    // The user must be able to reach the data dir, as under /var/lib.
    for dir in [server.dir.path(), &server.config.data_dir] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "x");
    let id = common::queue_github(&server.base(), "app", "s", "runas", &body).await[0];
    let b = common::wait_final(&server.base(), id).await;
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
