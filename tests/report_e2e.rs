//! Commit statuses end to end: a push to the real server, a real build, and
//! a fake GitHub API on loopback receiving the statuses in order.

mod common;
#[path = "support/gitserve.rs"]
mod gitserve;
#[allow(dead_code, reason = "shared with the other report tests")]
mod report_fake;

use common::{TestServer, client, fixture, hub_sha256};
use gitserve::Upstream;
use report_fake::{FakeHost, Reply};
use serde_json::Value;
use std::time::{Duration, Instant};

const TOKEN: &str = "ghp_e2e_token_9f8e7d";

async fn deliver(server: &TestServer, up: &Upstream, commit: &str) -> i64 {
    let mut body: Value =
        serde_json::from_slice(&fixture("github/goscm__push.json")).expect("json");
    body["ref"] = "refs/heads/main".into();
    body["before"] = "0000000000000000000000000000000000000000".into();
    body["after"] = commit.into();
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
    assert_eq!(res.status().as_u16(), 202);
    res.json::<Value>().await.expect("json")["builds"][0]["id"]
        .as_i64()
        .expect("id")
}

async fn build(server: &TestServer, id: i64) -> Value {
    client()
        .get(server.url(&format!("/api/builds/{id}")))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

async fn wait_for(server: &TestServer, id: i64, want: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let b = build(server, id).await;
        if want(&b) {
            return b;
        }
        assert!(Instant::now() < until, "build {id} never got there: {b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pipeline(api: &str) -> String {
    format!(
        "repo = \"Codertocat/Hello-World\"\nsecret = \"s\"\n[status]\nprovider = \"github\"\n\
         api_url = \"{api}\"\ntoken = \"{TOKEN}\"\ncontext = \"ci/e2e\"\n\
         [[steps]]\nname = \"t\"\nrun = \"sleep 0.3\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_reports_pending_then_success_to_the_hosts_status_api() {
    let host = FakeHost::start(Vec::new()).await;
    let up = Upstream::new("status");
    let commit = up.push(&[("README", "x\n")], "status");
    let server = TestServer::start(&[("app", &pipeline(&host.url()))], |c| {
        c.max_parallel_builds = 1
    })
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
    let server = TestServer::start(&[("app", &pipeline(&host.url()))], |c| {
        c.max_parallel_builds = 1
    })
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
