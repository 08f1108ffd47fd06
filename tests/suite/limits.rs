//! `[limits]` end to end (SPEC section 9): a step past its memory limit
//! fails with a reason naming it, a step past `pids` cannot fork, a fork
//! bomb ends, and the daemon keeps building through all of it.

use crate::common;
use crate::gitserve;

use common::{TestServer, ZERO};
use gitserve::Upstream;

const SECRET: &str = "limits-secret";

/// Step cgroups with the memory and pids controllers work here; else the
/// test is skipped (failed under `CI=true`).
fn have_limits() -> bool {
    // The check creates nothing; the daemon's own detection runs in the
    // server the test starts.
    match hookci::runner::cgroup::check_limits() {
        None => true,
        Some(why) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "the limits tests need cgroups: {why}"
            );
            println!("skipped: {why}");
            false
        }
    }
}

fn pipeline(limits: &str, steps: &str) -> String {
    common::pipeline_toml(SECRET)
        .table(&format!("[limits]\n{limits}"))
        .raw_steps(steps)
        .to_string()
}

/// Runs each (pipeline, toml) once, in order, and returns (build, log).
async fn run_all(pipelines: &[(&str, String)]) -> Vec<(serde_json::Value, String)> {
    let up = Upstream::new("limits");
    let commit = up.push(&[("README", "x\n")], "limits");
    let with_url: Vec<(&str, String)> = pipelines
        .iter()
        .map(|(n, t)| (*n, common::with_clone_url(&up.url(), t)))
        .collect();
    let refs: Vec<(&str, &str)> = with_url.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let server = TestServer::start(&refs, |c| c.max_parallel_builds = 1).await;
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "limits");
    let mut out = Vec::new();
    for (i, (name, _)) in pipelines.iter().enumerate() {
        let id =
            common::queue_github(&server.base(), name, SECRET, &format!("l-{i}"), &body).await[0];
        let b = common::wait_final(&server.base(), id).await;
        let log = std::fs::read_to_string(server.config.data_dir.join(format!("logs/{id}.log")))
            .expect("log");
        out.push((b, log));
    }
    let health = common::client()
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("the daemon answers");
    assert!(health.status().is_success());
    server.stop().await;
    out
}

fn processes_with(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .contains(needle)
            })
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_past_its_memory_limit_fails_with_a_reason_that_names_it() {
    if !have_limits() {
        return;
    }
    // The shell keeps 200 MB of output in a variable.
    let hog = "[[steps]]\nname = \"hog\"\n\
               run = 'x=$(head -c 200000000 /dev/zero | tr \"\\\\0\" a); echo \"kept ${#x}\"'\n";
    let ok = "[[steps]]\nname = \"small\"\nrun = 'x=$(head -c 1000000 /dev/zero | tr \"\\\\0\" a); echo \"kept ${#x}\"'\n";
    let results = run_all(&[
        ("hog", pipeline("memory = \"48M\"", hog)),
        ("small", pipeline("memory = \"48M\"", ok)),
    ])
    .await;
    let (b, log) = &results[0];
    assert_eq!(b["status"], "failure", "{b}\n{log}");
    assert_eq!(b["reason"], "step hog ran out of memory (limit 48M)", "{b}");
    // Under the limit, the daemon goes on building.
    let (b, log) = &results[1];
    assert_eq!(b["status"], "success", "{b}\n{log}");
    assert!(log.lines().any(|l| l == "kept 1000000"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_cannot_start_more_processes_than_pids_and_a_fork_bomb_ends() {
    if !have_limits() {
        return;
    }
    let many = "[[steps]]\nname = \"many\"\n\
                run = 'i=0; while [ $i -lt 100 ]; do sleep 41777 & i=$((i+1)); done; echo all-started'\n";
    let first = run_all(&[("many", pipeline("pids = 64", many))]).await;
    let (b, log) = &first[0];
    assert_eq!(b["status"], "failure", "{b}\n{log}");
    assert!(log.contains("fork"), "{log}");
    assert!(!log.lines().any(|l| l == "all-started"), "{log}");
    assert_eq!(processes_with("sleep 41777"), 0);

    // Only now that the limit is shown to hold: a real fork bomb.
    let bomb = "[[steps]]\nname = \"bomb\"\n\
                run = \"sh -c 'b() { b | b & }; b; sleep 2' bomb-41778 || true\"\n\
                [[steps]]\nname = \"after\"\nrun = \"echo still-building\"\n";
    let second = run_all(&[
        ("bomb", pipeline("pids = 64", bomb)),
        (
            "next",
            pipeline("", "[[steps]]\nname = \"t\"\nrun = \"echo next-build\"\n"),
        ),
    ])
    .await;
    let (b, log) = &second[0];
    assert_eq!(b["status"], "success", "{b}\n{log}");
    assert!(log.lines().any(|l| l == "still-building"), "{log}");
    assert_eq!(processes_with("bomb-41778"), 0);
    let (b, log) = &second[1];
    assert_eq!(b["status"], "success", "{b}\n{log}");
}
