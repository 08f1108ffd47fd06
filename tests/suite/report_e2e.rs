//! Commit statuses end to end: a push to the real server, a real build, and
//! a fake GitHub API on loopback receiving the statuses in order.

use crate::common;
use crate::gitserve;
use crate::report_fake;

use common::{TestServer, ZERO};
use gitserve::Upstream;
use report_fake::{FakeHost, Reply};
use serde_json::Value;

const TOKEN: &str = "ghp_e2e_token_9f8e7d";

async fn deliver(server: &TestServer, up: &Upstream, commit: &str) -> i64 {
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, commit, "status");
    common::queue_github(&server.base(), "app", "s", commit, &body).await[0]
}

async fn wait_for(server: &TestServer, id: i64, want: impl Fn(&Value) -> bool) -> Value {
    common::wait_build(&server.base(), id, want).await
}

fn pipeline(api: &str) -> String {
    common::pipeline_toml("s")
        .table(&format!(
            "[status]\nprovider = \"github\"\napi_url = \"{api}\"\ntoken = \"{TOKEN}\"\ncontext = \"ci/e2e\""
        ))
        .step("t", "sleep 0.3")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_reports_pending_then_success_to_the_hosts_status_api() {
    let host = FakeHost::start(Vec::new()).await;
    let up = Upstream::new("status");
    let commit = up.push(&[("README", "x\n")], "status");
    let server = TestServer::start(
        &[(
            "app",
            &common::with_clone_url(&up.url(), &pipeline(&host.url())),
        )],
        |c| c.max_parallel_builds = 1,
    )
    .await;
    let id = deliver(&server, &up, &commit).await;
    let b = wait_for(&server, id, |b| {
        b["status"] == "success"
            && b["reports"].as_array().is_some_and(|r| {
                r.iter()
                    .any(|r| r["state"] == "success" && r["outcome"] == "delivered")
            })
    })
    .await;
    let seen = host.seen();
    assert!(!seen.is_empty());
    let path = format!("/repos/Codertocat/Hello-World/statuses/{commit}");
    let states: Vec<String> = seen
        .iter()
        .map(|s| {
            assert_eq!(s.method, "POST");
            assert_eq!(s.path, path);
            assert_eq!(
                s.header("authorization"),
                Some(format!("Bearer {TOKEN}").as_str())
            );
            let body = s.json();
            assert_eq!(body["context"], "ci/e2e");
            assert_eq!(
                body["target_url"],
                format!("{}/builds/{id}", server.config.public_url)
            );
            body["state"].as_str().expect("state").to_owned()
        })
        .collect();
    // Older states may be superseded before they are sent, but the last one
    // the host saw is the final state, and nothing came after it.
    assert_eq!(
        states.last().map(String::as_str),
        Some("success"),
        "{states:?}"
    );
    assert!(
        states.iter().all(|s| s == "pending" || s == "success"),
        "{states:?}"
    );
    let reports = b["reports"].as_array().expect("reports");
    assert!(reports.iter().all(|r| r["outcome"] != "failed"), "{b}");
    assert!(!b.to_string().contains(TOKEN));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_refuses_the_token_fails_the_report_not_the_build() {
    let refusals = (0..10)
        .map(|_| Reply::Answer {
            status: 401,
            headers: Vec::new(),
            body: "{\"message\":\"Bad credentials\"}".into(),
        })
        .collect();
    let host = FakeHost::start(refusals).await;
    let up = Upstream::new("refused");
    let commit = up.push(&[("README", "x\n")], "refused");
    let server = TestServer::start(
        &[(
            "app",
            &common::with_clone_url(&up.url(), &pipeline(&host.url())),
        )],
        |c| c.max_parallel_builds = 1,
    )
    .await;
    let id = deliver(&server, &up, &commit).await;
    let b = wait_for(&server, id, |b| {
        b["status"] == "success"
            && b["reports"].as_array().is_some_and(|r| {
                r.iter()
                    .any(|r| r["state"] == "success" && r["outcome"] == "failed")
            })
    })
    .await;
    let failed = b["reports"]
        .as_array()
        .expect("reports")
        .iter()
        .find(|r| r["state"] == "success")
        .expect("the final report");
    assert_eq!(failed["attempts"], 1, "a 401 is not retried: {b}");
    let error = failed["last_error"].as_str().unwrap_or("");
    assert!(error.contains("401"), "{error}");
    assert!(!b.to_string().contains(TOKEN));
    server.stop().await;
}
