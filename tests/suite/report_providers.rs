//! Commit status reports as each provider's API receives them: for every
//! provider and every build state, the method, path, headers and body the
//! host sees, asserted exactly against a fake host on 127.0.0.1:0. Also the
//! default API addresses and the `webhook` provider's Standard Webhooks
//! signature.

use crate::report_fake as fake;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use fake::{
    Env, FakeHost, PUBLIC_URL, Reply, Seen, TOKEN, finish_build, pipeline_toml, push, queue, sha,
    spawn_reporter, start_build, within,
};
use hmac::{Hmac, Mac};
use hookci::report::{ReporterOptions, request_for};
use hookci::secret::Secret;
use hookci::store::{BuildStatus, ReportJob};
use hookci::webhook::Host;
use serde_json::{Value, json};
use sha2::Sha256;
use std::time::Duration;

const USER_AGENT: &str = concat!("hookci/", env!("CARGO_PKG_VERSION"));
const CONTEXT: &str = "hookci/hello";

/// The states each build of a drive goes through after queued and running.
const FINALS: [(BuildStatus, Option<&str>); 4] = [
    (BuildStatus::Success, None),
    (BuildStatus::Failure, Some("step test exited 101")),
    (BuildStatus::Error, Some("clone failed: no such repository")),
    (BuildStatus::Cancelled, Some("superseded by build 9")),
];

/// A state a report carries, as the tests name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Queued,
    Running,
    Final(BuildStatus),
}

/// One request the host received, with what it reported.
#[derive(Debug)]
struct Received {
    build: i64,
    commit: String,
    sent: Sent,
    reason: Option<&'static str>,
    request: Seen,
}

/// Queues four builds of `repo` one after another, takes each through
/// queued, running and one of [`FINALS`], and waits for the host to receive
/// each state before making the next: twelve requests.
async fn drive(host: &FakeHost, env: &Env, from: Host, repo: &str, web_url: &str) -> Vec<Received> {
    let (stop, task) = spawn_reporter(env.reporter(ReporterOptions::default()));
    let mut received = Vec::new();
    within(Duration::from_secs(60), "twelve reports", async {
        for (i, (status, reason)) in FINALS.into_iter().enumerate() {
            let commit = sha(i as u32 + 1);
            let push = push(repo, &commit, Some(web_url), &format!("{web_url}.git"));
            let id = queue(&env.store, "hello", from, push, CONTEXT).await;
            let mut sent = vec![(Sent::Queued, None)];
            host.wait_for(received.len() + 1).await;
            start_build(&env.store, id).await;
            sent.push((Sent::Running, None));
            host.wait_for(received.len() + 2).await;
            finish_build(&env.store, id, status, reason).await;
            sent.push((Sent::Final(status), reason));
            let seen = host.wait_for(received.len() + 3).await;
            for ((sent, reason), request) in sent.into_iter().zip(&seen[received.len()..]) {
                received.push(Received {
                    build: id,
                    commit: commit.clone(),
                    sent,
                    reason,
                    request: request.clone(),
                });
            }
        }
    })
    .await;
    stop.cancel();
    task.await.expect("the reporter stops");
    assert_eq!(
        host.seen().len(),
        12,
        "nothing but the twelve states is sent"
    );
    received
}

/// Asserts the method, the exact set of header names, the named headers'
/// values and the JSON body.
fn assert_request(r: &Received, path: &str, headers: &[(&str, &str)], body: Value) {
    let what = format!("{:?} of build {}", r.sent, r.build);
    assert_eq!(r.request.method, "POST", "{what}");
    assert_eq!(r.request.path, path, "{what}");
    let mut names: Vec<&str> = headers.iter().map(|(n, _)| *n).collect();
    names.extend(["content-length", "host"]);
    names.sort_unstable();
    assert_eq!(r.request.header_names(), names, "{what}: header names");
    for (name, value) in headers {
        assert_eq!(r.request.header(name), Some(*value), "{what}: {name}");
    }
    assert_eq!(r.request.json(), body, "{what}: body");
}

fn target_url(build: i64) -> String {
    format!("{PUBLIC_URL}/builds/{build}")
}

/// The description hookci sends for a state: generic words, never the
/// build's reason (which stays on the build page).
fn description(sent: Sent, _reason: Option<&str>) -> String {
    match sent {
        Sent::Queued => "queued".into(),
        Sent::Running => "running".into(),
        Sent::Final(BuildStatus::Success) => "build passed".into(),
        Sent::Final(BuildStatus::Failure) => "build failed".into(),
        Sent::Final(BuildStatus::Error) => "the build could not run".into(),
        Sent::Final(BuildStatus::Cancelled) => "build cancelled".into(),
        Sent::Final(other) => panic!("no description in the test for {other}"),
    }
}

#[tokio::test]
async fn github_receives_every_state_as_a_commit_status() {
    let host = FakeHost::start(vec![]).await;
    let toml = pipeline_toml("octo/hello", "github", Some(&host.url()), CONTEXT);
    let env = Env::new(&[("hello", &toml)]);
    let web = "https://github.com/octo/hello";
    let auth = format!("Bearer {TOKEN}");
    for r in drive(&host, &env, Host::Github, "octo/hello", web).await {
        let state = match r.sent {
            Sent::Queued | Sent::Running => "pending",
            Sent::Final(BuildStatus::Success) => "success",
            Sent::Final(BuildStatus::Failure) => "failure",
            Sent::Final(_) => "error",
        };
        assert_request(
            &r,
            &format!("/repos/octo/hello/statuses/{}", r.commit),
            &[
                ("accept", "application/vnd.github+json"),
                ("authorization", &auth),
                ("content-type", "application/json"),
                ("user-agent", USER_AGENT),
                ("x-github-api-version", "2022-11-28"),
            ],
            json!({
                "state": state,
                "target_url": target_url(r.build),
                "description": description(r.sent, r.reason),
                "context": CONTEXT,
            }),
        );
    }
}

/// Gitea and Forgejo take the same request.
async fn gitea_like(provider: &str, from: Host) {
    let host = FakeHost::start(vec![]).await;
    let toml = pipeline_toml("octo/hello", provider, Some(&host.url()), CONTEXT);
    let env = Env::new(&[("hello", &toml)]);
    let web = "https://git.example.com/octo/hello";
    let auth = format!("token {TOKEN}");
    for r in drive(&host, &env, from, "octo/hello", web).await {
        let state = match r.sent {
            Sent::Queued | Sent::Running => "pending",
            Sent::Final(BuildStatus::Success) => "success",
            Sent::Final(BuildStatus::Failure) => "failure",
            Sent::Final(_) => "error",
        };
        assert_request(
            &r,
            &format!("/api/v1/repos/octo/hello/statuses/{}", r.commit),
            &[
                ("accept", "application/json"),
                ("authorization", &auth),
                ("content-type", "application/json"),
                ("user-agent", USER_AGENT),
            ],
            json!({
                "state": state,
                "target_url": target_url(r.build),
                "description": description(r.sent, r.reason),
                "context": CONTEXT,
            }),
        );
    }
}

#[tokio::test]
async fn gitea_receives_every_state_as_a_commit_status() {
    gitea_like("gitea", Host::Gitea).await;
}

#[tokio::test]
async fn forgejo_receives_every_state_as_a_commit_status() {
    gitea_like("forgejo", Host::Forgejo).await;
}

#[tokio::test]
async fn gitlab_receives_every_state_with_its_own_state_names() {
    let host = FakeHost::start(vec![]).await;
    let toml = pipeline_toml("group/sub/hello", "gitlab", Some(&host.url()), CONTEXT);
    let env = Env::new(&[("hello", &toml)]);
    let web = "https://gitlab.example.com/group/sub/hello";
    for r in drive(&host, &env, Host::Gitlab, "group/sub/hello", web).await {
        let state = match r.sent {
            Sent::Queued => "pending",
            Sent::Running => "running",
            Sent::Final(BuildStatus::Success) => "success",
            Sent::Final(BuildStatus::Cancelled) => "canceled",
            Sent::Final(_) => "failed",
        };
        assert_request(
            &r,
            &format!("/api/v4/projects/group%2Fsub%2Fhello/statuses/{}", r.commit),
            &[
                ("accept", "application/json"),
                ("content-type", "application/json"),
                ("private-token", TOKEN),
                ("user-agent", USER_AGENT),
            ],
            json!({
                "state": state,
                "name": CONTEXT,
                "target_url": target_url(r.build),
                "description": description(r.sent, r.reason),
            }),
        );
    }
}

#[tokio::test]
async fn bitbucket_cloud_receives_every_state_as_a_build_status() {
    let host = FakeHost::start(vec![]).await;
    let toml = pipeline_toml("ws/hello", "bitbucket", Some(&host.url()), CONTEXT);
    let env = Env::new(&[("hello", &toml)]);
    let web = "https://bitbucket.org/ws/hello";
    let auth = format!("Bearer {TOKEN}");
    for r in drive(&host, &env, Host::Bitbucket, "ws/hello", web).await {
        let state = match r.sent {
            Sent::Queued | Sent::Running => "INPROGRESS",
            Sent::Final(BuildStatus::Success) => "SUCCESSFUL",
            Sent::Final(BuildStatus::Cancelled) => "STOPPED",
            Sent::Final(_) => "FAILED",
        };
        assert_request(
            &r,
            &format!(
                "/2.0/repositories/ws/hello/commit/{}/statuses/build",
                r.commit
            ),
            &[
                ("accept", "application/json"),
                ("authorization", &auth),
                ("content-type", "application/json"),
                ("user-agent", USER_AGENT),
            ],
            json!({
                "key": CONTEXT,
                "state": state,
                "url": target_url(r.build),
                "description": description(r.sent, r.reason),
                "name": CONTEXT,
            }),
        );
    }
}

#[tokio::test]
async fn bitbucket_server_receives_every_state_on_the_repository_builds_api() {
    let host = FakeHost::start(vec![]).await;
    let toml = pipeline_toml("PROJ/hello", "bitbucket-server", Some(&host.url()), CONTEXT);
    let env = Env::new(&[("hello", &toml)]);
    let web = "https://bitbucket.example.com/projects/PROJ/repos/hello/browse";
    let auth = format!("Bearer {TOKEN}");
    for r in drive(&host, &env, Host::BitbucketServer, "PROJ/hello", web).await {
        let state = match r.sent {
            Sent::Queued | Sent::Running => "INPROGRESS",
            Sent::Final(BuildStatus::Success) => "SUCCESSFUL",
            Sent::Final(BuildStatus::Cancelled) => "CANCELLED",
            Sent::Final(_) => "FAILED",
        };
        assert_request(
            &r,
            &format!(
                "/rest/api/latest/projects/PROJ/repos/hello/commits/{}/builds",
                r.commit
            ),
            &[
                ("accept", "application/json"),
                ("authorization", &auth),
                ("content-type", "application/json"),
                ("user-agent", USER_AGENT),
            ],
            json!({
                "key": CONTEXT,
                "state": state,
                "url": target_url(r.build),
                "description": description(r.sent, r.reason),
                "name": CONTEXT,
            }),
        );
    }
}

const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// `v1,BASE64` computed here, independently of hookci.
fn standard_webhooks_signature(secret: &str, msg_id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
        .expect("base64 key");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn the_webhook_provider_posts_the_build_signed_per_standard_webhooks() {
    let host = FakeHost::start(vec![]).await;
    let toml = format!(
        "repo = \"octo/hello\"\nsecret = \"hook-secret\"\n[status]\nprovider = \"webhook\"\nurl = \"{}/ci-status?via=hookci\"\nsecret = \"{WEBHOOK_SECRET}\"\ncontext = \"{CONTEXT}\"\n[[steps]]\nname = \"test\"\nrun = \"true\"\n",
        host.url()
    );
    let env = Env::new(&[("hello", &toml)]);
    let web = "https://github.com/octo/hello";
    let received = drive(&host, &env, Host::Github, "octo/hello", web).await;
    for (n, r) in received.iter().enumerate() {
        let build = env.store.build(r.build).await.unwrap().unwrap();
        let what = format!("{:?} of build {}", r.sent, r.build);
        // Reports are numbered from 1 in a fresh store, in the order written.
        let msg_id = format!("msg_hookci_{}", n + 1);
        let timestamp = r.request.header("webhook-timestamp").expect("a timestamp");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(
            (now - timestamp.parse::<i64>().expect("unix seconds")).abs() < 300,
            "{what}"
        );
        let signature =
            standard_webhooks_signature(WEBHOOK_SECRET, &msg_id, timestamp, &r.request.body);
        assert_request(
            r,
            "/ci-status?via=hookci",
            &[
                ("accept", "*/*"),
                ("content-type", "application/json"),
                ("user-agent", USER_AGENT),
                ("webhook-id", &msg_id),
                ("webhook-signature", &signature),
                ("webhook-timestamp", timestamp),
            ],
            json!({
                "id": r.build,
                "pipeline": "hello",
                "repo": "octo/hello",
                "ref": "refs/heads/main",
                "commit": r.commit,
                "status": match r.sent {
                    Sent::Queued => "queued",
                    Sent::Running => "running",
                    Sent::Final(s) => s.as_str(),
                },
                "reason": r.reason,
                "context": CONTEXT,
                "url": target_url(r.build),
                "created_at": hookci::model::rfc3339(build.created_at),
                "started_at": match r.sent {
                    Sent::Queued => None,
                    Sent::Running | Sent::Final(_) => build.started_at.map(hookci::model::rfc3339),
                },
                "finished_at": match r.sent {
                    Sent::Queued | Sent::Running => None,
                    Sent::Final(_) => build.finished_at.map(hookci::model::rfc3339),
                },
                "steps": [],
            }),
        );
    }
}

#[tokio::test]
async fn the_webhook_provider_sends_the_builds_steps() {
    let host = FakeHost::start(vec![]).await;
    let toml = format!(
        "repo = \"octo/hello\"\nsecret = \"hook-secret\"\n[status]\nprovider = \"webhook\"\nurl = \"{}/hook\"\nsecret = \"{WEBHOOK_SECRET}\"\n[[steps]]\nname = \"test\"\nrun = \"true\"\n",
        host.url()
    );
    let env = Env::new(&[("hello", &toml)]);
    let (stop, task) = spawn_reporter(env.reporter(ReporterOptions::default()));
    let push = push(
        "octo/hello",
        &sha(1),
        None,
        "https://github.com/octo/hello.git",
    );
    let id = queue(&env.store, "hello", Host::Github, push, "hookci/hello").await;
    within(Duration::from_secs(30), "the final report", async {
        host.wait_for(1).await;
        start_build(&env.store, id).await;
        host.wait_for(2).await;
        let store = &env.store;
        store
            .set_steps(id, vec!["build".into(), "test".into()])
            .await
            .unwrap();
        store.step_started(id, 0).await.unwrap();
        store
            .step_finished(id, 0, hookci::store::StepStatus::Success, Some(0))
            .await
            .unwrap();
        store.step_started(id, 1).await.unwrap();
        store
            .step_finished(id, 1, hookci::store::StepStatus::Failure, Some(101))
            .await
            .unwrap();
        finish_build(
            store,
            id,
            BuildStatus::Failure,
            Some("step test exited 101"),
        )
        .await;
        host.wait_for(3).await;
    })
    .await;
    stop.cancel();
    task.await.unwrap();
    let steps = env.store.steps(id).await.unwrap();
    let body = host.seen()[2].json();
    assert_eq!(body["status"], "failure");
    assert_eq!(body["reason"], "step test exited 101");
    assert_eq!(body["steps"], serde_json::to_value(&steps).unwrap());
    assert_eq!(body["steps"][1]["name"], "test");
    assert_eq!(body["steps"][1]["exit_code"], 101);
    assert_eq!(body["steps"][1]["status"], "failure");
}

#[test]
fn the_webhook_signature_matches_the_published_standard_webhooks_vectors() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/webhooks/signature_vectors.json"
    );
    let vectors: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let vectors = vectors["standard_webhooks"].as_array().expect("vectors");
    assert!(vectors.len() >= 2);
    for v in vectors {
        let headers = hookci::report::webhook::signed_headers(
            &Secret::new(v["secret"].as_str().unwrap()),
            v["msg_id"].as_str().unwrap(),
            v["timestamp"].as_i64().unwrap(),
            v["payload"].as_str().unwrap().as_bytes(),
        );
        assert_eq!(
            headers["webhook-signature"],
            v["webhook-signature"].as_str().unwrap(),
            "{}",
            v["source"]
        );
        assert_eq!(headers["webhook-id"], v["msg_id"].as_str().unwrap());
        assert_eq!(
            headers["webhook-timestamp"],
            v["timestamp"].as_i64().unwrap().to_string().as_str()
        );
    }
}

/// The first due report of a fresh store holding one queued build from
/// `from`, for `pipeline`.
async fn first_report(
    env: &Env,
    from: Host,
    repo: &str,
    web_url: Option<&str>,
    clone_url: &str,
) -> ReportJob {
    let push = push(repo, &sha(7), web_url, clone_url);
    queue(&env.store, "hello", from, push, CONTEXT).await;
    let mut due = env.store.due_reports(i64::MAX, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    due.remove(0)
}

fn url_of(env: &Env, job: &ReportJob) -> Result<String, String> {
    let pipelines = env.pipelines.current();
    request_for(&pipelines["hello"], job, PUBLIC_URL, &[], 0).map(|out| out.url.to_string())
}

#[tokio::test]
async fn a_github_build_with_only_a_token_reports_to_api_github_com() {
    let toml = pipeline_toml("octo/hello", "github", None, CONTEXT);
    let env = Env::new(&[("hello", &toml)]);
    let web = Some("https://github.com/octo/hello");
    let job = first_report(
        &env,
        Host::Github,
        "octo/hello",
        web,
        "https://github.com/octo/hello.git",
    )
    .await;
    assert_eq!(
        url_of(&env, &job).unwrap(),
        format!(
            "https://api.github.com/repos/octo/hello/statuses/{}",
            sha(7)
        )
    );
}

/// `pipeline_toml` with a configured `clone_url` and, instead of a
/// `provider`, the pipeline's pinned `host` when `host` is given.
fn toml_with(repo: &str, provider: &str, clone_url: Option<&str>, host: Option<&str>) -> String {
    let clone = clone_url
        .map(|u| format!("clone_url = \"{u}\"\n"))
        .unwrap_or_default();
    let pin = host
        .map(|h| format!("host = \"{h}\"\n"))
        .unwrap_or_default();
    let provider = match host {
        Some(_) => String::new(),
        None => format!("provider = \"{provider}\"\n"),
    };
    format!(
        "repo = \"{repo}\"\nsecret = \"s\"\n{pin}{clone}[status]\n{provider}token = \"{TOKEN}\"\n[[steps]]\nname = \"x\"\nrun = \"true\"\n"
    )
}

#[tokio::test]
async fn the_provider_comes_from_the_pinned_host_never_from_the_delivery() {
    // host = "github": GitHub's API, even for a delivery whose headers said Gitea.
    let env = Env::new(&[("hello", &toml_with("octo/hello", "", None, Some("github")))]);
    let job = first_report(
        &env,
        Host::Gitea,
        "octo/hello",
        None,
        "https://github.com/octo/hello.git",
    )
    .await;
    let pipelines = env.pipelines.current();
    let out = request_for(&pipelines["hello"], &job, PUBLIC_URL, &[], 0).unwrap();
    assert_eq!(
        out.url.as_str(),
        format!(
            "https://api.github.com/repos/octo/hello/statuses/{}",
            sha(7)
        )
    );
    assert_eq!(
        out.headers["authorization"].to_str().unwrap(),
        format!("Bearer {TOKEN}")
    );
}

#[tokio::test]
async fn a_status_token_without_host_or_provider_does_not_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hello.toml");
    let toml = "repo = \"octo/hello\"\nsecret = \"s\"\n[status]\ntoken = \"t\"\n[[steps]]\nname = \"x\"\nrun = \"true\"\n";
    std::fs::write(&path, toml).unwrap();
    let errors = hookci::pipeline::load_file(&path).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.message.contains("needs host or [status] provider")),
        "{errors:?}"
    );
}

#[tokio::test]
async fn a_github_enterprise_build_reports_to_the_api_v3_of_its_configured_clone_url() {
    let toml = toml_with(
        "octo/hello",
        "github",
        Some("git@ghe.example.com:octo/hello.git"),
        None,
    );
    let env = Env::new(&[("hello", &toml)]);
    // The payload's own URLs name another server: they are not used.
    let web = Some("http://127.0.0.1:9/octo/hello");
    let job = first_report(
        &env,
        Host::Github,
        "octo/hello",
        web,
        "http://127.0.0.1:9/octo/hello.git",
    )
    .await;
    assert_eq!(
        url_of(&env, &job).unwrap(),
        format!(
            "https://ghe.example.com/api/v3/repos/octo/hello/statuses/{}",
            sha(7)
        )
    );
}

#[tokio::test]
async fn self_hosted_api_addresses_come_from_the_configured_clone_url() {
    let cases = [
        (
            "gitlab",
            "group/sub/hello",
            Some("https://example.com/gitlab/group/sub/hello.git"),
            "https://example.com/gitlab/api/v4/projects/group%2Fsub%2Fhello/statuses/",
        ),
        (
            "gitlab",
            "group/sub/hello",
            None,
            "https://gitlab.com/api/v4/projects/group%2Fsub%2Fhello/statuses/",
        ),
        (
            "bitbucket-server",
            "PROJ/hello",
            Some("https://example.com:8443/bb/scm/proj/hello.git"),
            "https://example.com:8443/bb/rest/api/latest/projects/PROJ/repos/hello/commits/",
        ),
        (
            "bitbucket",
            "ws/hello",
            None,
            "https://api.bitbucket.org/2.0/repositories/ws/hello/commit/",
        ),
        (
            "forgejo",
            "octo/hello",
            Some("https://user:pw@codeberg.org/octo/hello.git"),
            "https://codeberg.org/api/v1/repos/octo/hello/statuses/",
        ),
        (
            "gitea",
            "octo/hello",
            Some("http://git.example.com:3000/sub/octo/hello.git"),
            "https://git.example.com/sub/api/v1/repos/octo/hello/statuses/",
        ),
    ];
    for (provider, repo, clone, expected) in cases {
        let toml = toml_with(repo, provider, clone, None);
        let env = Env::new(&[("hello", &toml)]);
        // Every payload names the attacker's server; none of it is used.
        let evil = format!("http://127.0.0.1:9/{repo}");
        let job = first_report(
            &env,
            Host::Generic,
            repo,
            Some(&evil),
            &format!("{evil}.git"),
        )
        .await;
        let url = url_of(&env, &job).unwrap();
        assert!(url.starts_with(expected), "{provider}: {url}");
    }
}

#[tokio::test]
async fn a_payload_naming_another_server_gets_no_token_and_the_report_says_why() {
    let host = FakeHost::start(vec![]).await;
    // A Gitea pipeline with neither api_url nor clone_url: before, the
    // token went wherever the payload's repository URL pointed.
    let toml = toml_with("octo/hello", "gitea", None, None);
    let env = Env::new(&[("hello", &toml)]);
    let web = format!("{}/octo/hello", host.url());
    let push = push("octo/hello", &sha(3), Some(&web), &format!("{web}.git"));
    let id = queue(&env.store, "hello", Host::Gitea, push, CONTEXT).await;
    let (stop, task) = spawn_reporter(env.reporter(ReporterOptions::default()));
    let reports = fake::reports_until(&env.store, id, "the report is refused", |r| {
        r.iter()
            .any(|r| r.outcome == hookci::store::ReportOutcome::Failed)
    })
    .await;
    stop.cancel();
    task.await.unwrap();
    assert!(host.seen().is_empty(), "the payload's server got a request");
    let error = reports[0].last_error.clone().unwrap_or_default();
    assert!(error.contains("set [status] api_url"), "{error}");
    assert!(!error.contains(TOKEN), "{error}");
}

#[tokio::test]
async fn an_api_url_with_the_version_path_is_the_same_base() {
    let toml = pipeline_toml(
        "octo/hello",
        "gitea",
        Some("https://git.example.com/api/v1/"),
        CONTEXT,
    );
    let env = Env::new(&[("hello", &toml)]);
    let job = first_report(
        &env,
        Host::Gitea,
        "octo/hello",
        None,
        "https://git.example.com/octo/hello.git",
    )
    .await;
    assert_eq!(
        url_of(&env, &job).unwrap(),
        format!(
            "https://git.example.com/api/v1/repos/octo/hello/statuses/{}",
            sha(7)
        )
    );
}

#[tokio::test]
async fn a_self_hosted_build_with_no_usable_url_asks_for_api_url() {
    let toml = pipeline_toml("octo/hello", "gitea", None, CONTEXT);
    let env = Env::new(&[("hello", &toml)]);
    let job = first_report(&env, Host::Gitea, "octo/hello", None, "/srv/git/hello.git").await;
    let error = url_of(&env, &job).unwrap_err();
    assert!(error.contains("set [status] api_url"), "{error}");
}

#[tokio::test]
async fn a_long_context_is_shortened_to_a_stable_bitbucket_key() {
    let long = "hookci/a-pipeline-with-a-rather-long-name-for-bitbucket";
    let toml = pipeline_toml("ws/hello", "bitbucket", None, long);
    let env = Env::new(&[("hello", &toml)]);
    let push = push(
        "ws/hello",
        &sha(1),
        None,
        "https://bitbucket.org/ws/hello.git",
    );
    queue(&env.store, "hello", Host::Bitbucket, push, long).await;
    let job = env.store.due_reports(i64::MAX, 10).await.unwrap().remove(0);
    let pipelines = env.pipelines.current();
    let out = request_for(&pipelines["hello"], &job, PUBLIC_URL, &[], 0).unwrap();
    let body: Value = serde_json::from_slice(&out.body).unwrap();
    let key = body["key"].as_str().unwrap();
    assert_eq!(key.chars().count(), 40);
    assert!(key.starts_with("hookci/a-pipeline-with-a-rather-"), "{key}");
    assert_eq!(body["name"], long);
}

#[tokio::test]
async fn a_credential_never_follows_a_redirect_to_another_origin() {
    // The configured API answers 307 to another port; that one records
    // what reaches it. GitLab's PRIVATE-TOKEN is a custom header, which
    // reqwest would carry across origins.
    let thief = FakeHost::start(vec![]).await;
    let api = FakeHost::start(vec![Reply::Answer {
        status: 307,
        headers: vec![("location", format!("{}/stolen", thief.url()))],
        body: String::new(),
    }])
    .await;
    let toml = pipeline_toml("group/hello", "gitlab", Some(&api.url()), CONTEXT);
    let env = Env::new(&[("hello", &toml)]);
    let event = push(
        "group/hello",
        &sha(5),
        None,
        "https://gitlab.com/group/hello.git",
    );
    let id = queue(&env.store, "hello", Host::Gitlab, event, CONTEXT).await;
    let (stop, task) = spawn_reporter(env.reporter(ReporterOptions::default()));
    let reports = fake::reports_until(&env.store, id, "the redirect is refused", |r| {
        r.iter()
            .any(|r| r.outcome == hookci::store::ReportOutcome::Failed)
    })
    .await;
    stop.cancel();
    task.await.unwrap();
    assert!(thief.seen().is_empty(), "the token followed the redirect");
    assert_eq!(api.seen().len(), 1);
    let error = reports[0].last_error.clone().unwrap_or_default();
    assert!(error.contains("307"), "{error}");
    assert!(!error.contains(TOKEN), "{error}");

    // A redirect within the same origin is still followed, token and all.
    let moved = FakeHost::start(vec![Reply::Answer {
        status: 308,
        headers: vec![("location", "/moved/api/v4/projects/x/statuses/y".to_owned())],
        body: String::new(),
    }])
    .await;
    let toml = pipeline_toml("group/hello", "gitlab", Some(&moved.url()), CONTEXT);
    let env = Env::new(&[("hello", &toml)]);
    let event = push(
        "group/hello",
        &sha(6),
        None,
        "https://gitlab.com/group/hello.git",
    );
    queue(&env.store, "hello", Host::Gitlab, event, CONTEXT).await;
    let (stop, task) = spawn_reporter(env.reporter(ReporterOptions::default()));
    let seen = within(
        Duration::from_secs(30),
        "the same-origin redirect",
        moved.wait_for(2),
    )
    .await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(seen[1].path, "/moved/api/v4/projects/x/statuses/y");
    assert_eq!(seen[1].header("private-token"), Some(TOKEN));
}
