//! Builds end to end: real git repositories pushed to, signed deliveries to
//! the real server, the build watched to its final state and its log read.

use crate::common;
use crate::gitserve;

use common::{TestServer, ZERO, client};
use gitserve::{HttpGitServer, Upstream};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const SECRET: &str = "e2e-secret";
const ADMIN: &str = "e2e-admin-token";

/// A pipeline cloning `clone_url` (a payload's clone URL is trusted only
/// on the public host the pipeline's host implies; tests clone local ones).
fn pipeline(clone_url: &str, extra_top: &str, steps: &str) -> String {
    common::pipeline_toml(SECRET)
        .clone_url(clone_url)
        .top(extra_top)
        .raw_steps(steps)
        .to_string()
}

async fn start(pipelines: &[(&str, &str)], parallel: usize) -> TestServer {
    TestServer::start(pipelines, |c| {
        c.max_parallel_builds = parallel;
        c.admin_token = Some(hookci::secret::Secret::new(ADMIN));
    })
    .await
}

fn push_body(up: &Upstream, git_ref: &str, before: &str, after: &str, message: &str) -> Vec<u8> {
    common::github_push(&up.url(), git_ref, before, after, message)
}

async fn deliver(server: &TestServer, name: &str, body: &[u8], delivery: &str) -> Vec<i64> {
    common::queue_github(&server.base(), name, SECRET, delivery, body).await
}

async fn build(server: &TestServer, id: i64) -> Value {
    common::get_build(&server.base(), id)
        .await
        .expect("the build")
}

async fn wait_for(server: &TestServer, id: i64, want: impl Fn(&Value) -> bool) -> Value {
    common::wait_build(&server.base(), id, want).await
}

async fn wait_final(server: &TestServer, id: i64) -> Value {
    common::wait_final(&server.base(), id).await
}

fn log(server: &TestServer, id: i64) -> String {
    let path = server
        .config
        .data_dir
        .join("logs")
        .join(format!("{id}.log"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .chars()
            .all(|c| c.is_ascii_digit())
        {
            continue;
        }
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(cmd);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_sees_exactly_the_environment_of_the_spec_and_nothing_of_the_daemons() {
    let up = Upstream::new("env");
    let commit = up.push(&[("README", "hello\n")], "first commit");
    let steps = "[env]\nX_PIPE = \"p\"\n[[steps]]\nname = \"env\"\nrun = \"env | sort\"\nenv = { X_STEP = \"s\" }\n";
    let server = start(&[("app", &pipeline(&up.url(), "", steps))], 1).await;
    let ids = deliver(
        &server,
        "app",
        &push_body(&up, "refs/heads/main", ZERO, &commit, "first commit"),
        "env-1",
    )
    .await;
    let b = wait_final(&server, ids[0]).await;
    assert_eq!(b["status"], "success", "{b}\n{}", log(&server, ids[0]));
    assert_eq!(b["steps"][0]["status"], "success");
    assert_eq!(b["steps"][0]["exit_code"], 0);

    let text = log(&server, ids[0]);
    let vars: Vec<(String, String)> = text
        .lines()
        .filter(|l| !l.starts_with("==>"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let names: BTreeSet<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
    let expected: BTreeSet<&str> = [
        "PATH",
        "LANG",
        "HOME",
        "CI",
        "HOOKCI",
        "HOOKCI_BUILD_ID",
        "HOOKCI_BUILD_URL",
        "HOOKCI_PIPELINE",
        "HOOKCI_REPO",
        "HOOKCI_EVENT",
        "HOOKCI_REF",
        "HOOKCI_BRANCH",
        "HOOKCI_COMMIT",
        "HOOKCI_COMMIT_BEFORE",
        "HOOKCI_COMMIT_MESSAGE",
        "HOOKCI_COMMIT_MESSAGE_FILE",
        "HOOKCI_PUSHER",
        "HOOKCI_DELIVERY",
        "HOOKCI_WORKSPACE",
        "X_PIPE",
        "X_STEP",
    ]
    .into_iter()
    .collect();
    // What the shell itself adds.
    let shell: BTreeSet<&str> = ["PWD", "SHLVL", "OLDPWD", "_"].into_iter().collect();
    let extra: Vec<_> = names
        .difference(&expected)
        .filter(|n| !shell.contains(*n))
        .collect();
    let missing: Vec<_> = expected.difference(&names).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "extra {extra:?} missing {missing:?}\n{text}"
    );
    let get = |k: &str| {
        vars.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    assert_eq!(get("CI"), "true");
    assert_eq!(get("HOOKCI"), "true");
    assert_eq!(get("HOOKCI_BUILD_ID"), ids[0].to_string());
    assert_eq!(
        get("HOOKCI_BUILD_URL"),
        format!("{}/builds/{}", server.config.public_url, ids[0])
    );
    assert_eq!(get("HOOKCI_PIPELINE"), "app");
    assert_eq!(get("HOOKCI_REPO"), "Codertocat/Hello-World");
    assert_eq!(get("HOOKCI_EVENT"), "push");
    assert_eq!(get("HOOKCI_REF"), "refs/heads/main");
    assert_eq!(get("HOOKCI_BRANCH"), "main");
    assert_eq!(get("HOOKCI_COMMIT"), commit);
    assert_eq!(get("HOOKCI_COMMIT_BEFORE"), ZERO);
    assert_eq!(get("HOOKCI_COMMIT_MESSAGE"), "first commit");
    assert_eq!(get("HOOKCI_PUSHER"), "ada");
    assert_eq!(get("HOOKCI_DELIVERY"), "env-1");
    assert_eq!(get("PWD"), get("HOOKCI_WORKSPACE"));
    assert!(get("HOME").starts_with(server.config.data_dir.to_str().expect("utf-8")));
    assert_eq!(get("X_STEP"), "s");
    // Nothing of the daemon's environment (cargo sets these for the test process).
    assert!(!text.contains("CARGO_PKG_NAME"), "{text}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_values_with_shell_syntax_run_nothing() {
    let up = Upstream::new("inject");
    let message = "fix $(touch PWNED1) and `touch PWNED2`";
    let commit = up.push(&[("README", "x\n")], message);
    let steps = "[[steps]]\nname = \"echo\"\nrun = 'printf \"%s|%s\\n\" \"$HOOKCI_COMMIT_MESSAGE\" \"$HOOKCI_BRANCH\"'\n\
                 [[steps]]\nname = \"check\"\nrun = \"test ! -e PWNED1 && test ! -e PWNED2 && test ! -e PWNED3\"\n";
    let server = start(&[("app", &pipeline(&up.url(), "", steps))], 1).await;
    let branch = "refs/heads/feature/$(touch${IFS}PWNED3)";
    let ids = deliver(
        &server,
        "app",
        &push_body(&up, branch, ZERO, &commit, message),
        "inj",
    )
    .await;
    let b = wait_final(&server, ids[0]).await;
    let text = log(&server, ids[0]);
    assert_eq!(b["status"], "success", "{b}\n{text}");
    assert!(
        text.contains("fix $(touch PWNED1) and `touch PWNED2`|feature/$(touch${IFS}PWNED3)"),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_timeout_kills_a_backgrounded_grandchild() {
    let up = Upstream::new("timeout");
    let commit = up.push(&[("README", "x\n")], "slow");
    let steps =
        "[[steps]]\nname = \"slow\"\nrun = \"sleep 41337 & sleep 41338\"\ntimeout = \"1s\"\n";
    let server = start(&[("app", &pipeline(&up.url(), "", steps))], 1).await;
    let ids = deliver(
        &server,
        "app",
        &push_body(&up, "refs/heads/main", ZERO, &commit, "slow"),
        "t",
    )
    .await;
    let b = wait_final(&server, ids[0]).await;
    assert_eq!(b["status"], "failure", "{b}");
    assert!(
        b["reason"].as_str().unwrap_or("").contains("timed out"),
        "{b}"
    );
    assert_eq!(b["steps"][0]["status"], "failure");
    assert!(
        processes_with("sleep 41337").is_empty(),
        "{:?}",
        processes_with("sleep 41337")
    );
    assert!(processes_with("sleep 41338").is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_build_is_cancelled_through_the_api_and_leaves_no_process() {
    let up = Upstream::new("cancel");
    let commit = up.push(&[("README", "x\n")], "long");
    let steps = "[[steps]]\nname = \"long\"\nrun = \"sleep 41339\"\n[[steps]]\nname = \"after\"\nrun = \"true\"\n";
    let server = start(&[("app", &pipeline(&up.url(), "", steps))], 1).await;
    let ids = deliver(
        &server,
        "app",
        &push_body(&up, "refs/heads/main", ZERO, &commit, "long"),
        "c",
    )
    .await;
    wait_for(&server, ids[0], |b| b["steps"][0]["status"] == "running").await;
    let http = client();
    let url = server.url(&format!("/api/builds/{}/cancel", ids[0]));
    let res = http.post(&url).send().await.expect("cancel");
    assert_eq!(res.status().as_u16(), 401, "a cancel needs the admin token");
    let res = http
        .post(&url)
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("cancel");
    assert_eq!(res.status().as_u16(), 202);
    let b = wait_final(&server, ids[0]).await;
    assert_eq!(b["status"], "cancelled", "{b}");
    assert_eq!(b["reason"], "cancelled by a user");
    assert_eq!(b["steps"][0]["status"], "cancelled");
    assert_eq!(b["steps"][1]["status"], "skipped");
    assert!(processes_with("sleep 41339").is_empty());
    let res = http
        .post(&url)
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("cancel again");
    assert_eq!(res.status().as_u16(), 409);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_push_supersedes_the_running_build_of_its_branch() {
    let up = Upstream::new("supersede");
    let first = up.push(&[("a", "1\n")], "first");
    let steps = format!(
        "[[steps]]\nname = \"work\"\nrun = 'if [ \"$HOOKCI_COMMIT\" = {first} ]; then sleep 41340; fi'\n"
    );
    let server = start(
        &[(
            "app",
            &pipeline(&up.url(), "concurrency = \"supersede\"", &steps),
        )],
        2,
    )
    .await;
    let one = deliver(
        &server,
        "app",
        &push_body(&up, "refs/heads/main", ZERO, &first, "first"),
        "s1",
    )
    .await[0];
    wait_for(&server, one, |b| b["steps"][0]["status"] == "running").await;
    let second = up.push(&[("a", "2\n")], "second");
    let two = deliver(
        &server,
        "app",
        &push_body(&up, "refs/heads/main", &first, &second, "second"),
        "s2",
    )
    .await[0];
    let b1 = wait_final(&server, one).await;
    assert_eq!(b1["status"], "cancelled", "{b1}");
    assert_eq!(b1["reason"], format!("superseded by build {two}"));
    let b2 = wait_final(&server, two).await;
    assert_eq!(b2["status"], "success", "{b2}");
    assert!(processes_with("sleep 41340").is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_of_one_branch_run_one_at_a_time_in_push_order() {
    let up = Upstream::new("order");
    let out = up.tmp.path().join("order.txt");
    let steps = format!(
        "[env]\nOUT = \"{}\"\n[sandbox]\nread_write = [\"{}\"]\n[[steps]]\nname = \"record\"\n\
         run = 'echo \"start $HOOKCI_BUILD_ID\" >> \"$OUT\"; sleep 0.3; echo \"end $HOOKCI_BUILD_ID\" >> \"$OUT\"'\n",
        out.display(),
        up.tmp.path().display()
    );
    let server = start(&[("app", &pipeline(&up.url(), "", &steps))], 3).await;
    let mut before = ZERO.to_owned();
    let mut ids = Vec::new();
    for i in 0..3 {
        let c = up.push(&[("n", &format!("{i}\n"))], &format!("push {i}"));
        let body = push_body(&up, "refs/heads/main", &before, &c, &format!("push {i}"));
        ids.push(deliver(&server, "app", &body, &format!("o{i}")).await[0]);
        before = c;
    }
    for id in &ids {
        assert_eq!(wait_final(&server, *id).await["status"], "success");
    }
    let lines = std::fs::read_to_string(&out).expect("order file");
    let expected: String = ids
        .iter()
        .map(|id| format!("start {id}\nend {id}\n"))
        .collect();
    assert_eq!(lines, expected);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_that_changes_no_matching_path_is_skipped() {
    let up = Upstream::new("paths");
    let c1 = up.push(&[("src/lib.rs", "fn a() {}\n")], "code");
    let steps = "[[trigger]]\nbranches = [\"main\"]\npaths = [\"src/**\"]\n[[steps]]\nname = \"t\"\nrun = \"true\"\n";
    let server = start(&[("app", &pipeline(&up.url(), "", steps))], 1).await;
    let first = deliver(
        &server,
        "app",
        &push_body(&up, "refs/heads/main", ZERO, &c1, "code"),
        "p1",
    )
    .await[0];
    assert_eq!(wait_final(&server, first).await["status"], "success");
    let c2 = up.push(&[("docs/guide.md", "words\n")], "docs");
    let docs = deliver(
        &server,
        "app",
        &push_body(&up, "refs/heads/main", &c1, &c2, "docs"),
        "p2",
    )
    .await[0];
    let b = wait_final(&server, docs).await;
    assert_eq!(b["status"], "skipped", "{b}");
    assert!(b["reason"].as_str().unwrap_or("").contains("paths"), "{b}");
    let c3 = up.push(&[("src/lib.rs", "fn b() {}\n")], "more code");
    let code = deliver(
        &server,
        "app",
        &push_body(&up, "refs/heads/main", &c2, &c3, "more code"),
        "p3",
    )
    .await[0];
    assert_eq!(wait_final(&server, code).await["status"], "success");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_masked_when_split_across_writes_and_across_lines() {
    let up = Upstream::new("mask");
    let commit = up.push(&[("README", "x\n")], "mask");
    let secret_file = up.tmp.path().join("multi.secret");
    std::fs::write(&secret_file, "first-line-abc\nsecond-line-def\n").expect("secret");
    let top = format!(
        "[secrets]\nSPLIT = \"hunter2-split-secret\"\nMULTI = {{ file = \"{}\" }}",
        secret_file.display()
    );
    let steps = "[[steps]]\nname = \"leak\"\nrun = '''\nprintf 'hunter2-sp'; sleep 0.3; printf 'lit-secret\\n'\nprintf '%s\\n' \"$MULTI\"\necho second-line-def\n'''\n";
    let server = start(&[("app", &pipeline(&up.url(), &top, steps))], 1).await;
    let ids = deliver(
        &server,
        "app",
        &push_body(&up, "refs/heads/main", ZERO, &commit, "mask"),
        "m",
    )
    .await;
    let b = wait_final(&server, ids[0]).await;
    let text = log(&server, ids[0]);
    assert_eq!(b["status"], "success", "{b}\n{text}");
    for leaked in ["hunter2-split-secret", "first-line-abc", "second-line-def"] {
        assert!(!text.contains(leaked), "{leaked} leaked:\n{text}");
    }
    // The step's three lines of output, each wholly masked.
    let output: Vec<&str> = text.lines().filter(|l| !l.starts_with("==>")).collect();
    assert_eq!(output, ["***", "***", "***"], "{text}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_clones_over_smart_http_with_a_token_that_never_reaches_the_log() {
    let up = Upstream::new("private");
    let commit = up.push(&[("README", "x\n")], "private");
    let token = "tok-8c1f2e9a7b";
    let git = HttpGitServer::start(&up.project_root, &up.home, token).await;
    let top = format!("[clone]\ntoken = \"{token}\"");
    let steps =
        "[[steps]]\nname = \"show\"\nrun = \"git rev-parse HEAD 2>/dev/null || cat README\"\n";
    let server = start(&[("app", &pipeline(&git.url("private"), &top, steps))], 1).await;
    let mut body: Value =
        serde_json::from_slice(&push_body(&up, "refs/heads/main", ZERO, &commit, "p"))
            .expect("json");
    body["repository"]["clone_url"] = git.url("private").into();
    let body = serde_json::to_vec(&body).expect("json");
    let ids = deliver(&server, "app", &body, "h1").await;
    let b = wait_final(&server, ids[0]).await;
    let text = log(&server, ids[0]);
    assert_eq!(b["status"], "success", "{b}\n{text}");
    assert!(!text.contains(token), "{text}");

    // A wrong token: the build errors with a reason a user can act on.
    let wrong = pipeline(
        &git.url("private"),
        "[clone]\ntoken = \"not-the-token\"",
        steps,
    );
    let server2 = start(&[("app", &wrong)], 1).await;
    let ids = deliver(&server2, "app", &body, "h2").await;
    let b = wait_final(&server2, ids[0]).await;
    assert_eq!(b["status"], "error", "{b}");
    let reason = b["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("clone failed") && reason.contains("authentication"),
        "{reason}"
    );
    assert!(!reason.contains("not-the-token"));
    server.stop().await;
    server2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_failure_ends_the_build_as_error_with_a_reason() {
    let up = Upstream::new("gone");
    let commit = up.push(&[("README", "x\n")], "x");
    let server = start(
        &[(
            "app",
            &pipeline(
                "/nonexistent/repo.git",
                "",
                "[[steps]]\nname = \"t\"\nrun = \"true\"\n",
            ),
        )],
        1,
    )
    .await;
    let body = push_body(&up, "refs/heads/main", ZERO, &commit, "x");
    let ids = deliver(&server, "app", &body, "g").await;
    let b = wait_final(&server, ids[0]).await;
    assert_eq!(b["status"], "error", "{b}");
    assert!(
        b["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("clone failed"),
        "{b}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_beyond_keep_builds_are_pruned_with_their_logs() {
    let up = Upstream::new("prune");
    let steps = "[[steps]]\nname = \"t\"\nrun = \"echo hi\"\n";
    let server = TestServer::start(&[("app", &pipeline(&up.url(), "", steps))], |c| {
        c.max_parallel_builds = 1;
        c.keep_builds = 2;
    })
    .await;
    let mut before = ZERO.to_owned();
    let mut ids = Vec::new();
    for i in 0..4 {
        let c = up.push(&[("n", &format!("{i}\n"))], &format!("push {i}"));
        let body = push_body(&up, "refs/heads/main", &before, &c, "m");
        let id = deliver(&server, "app", &body, &format!("k{i}")).await[0];
        assert_eq!(wait_final(&server, id).await["status"], "success");
        ids.push(id);
        before = c;
    }
    let logs = server.config.data_dir.join("logs");
    // Pruning follows a build's end: the last build is final a moment before
    // the prune after it is done, so look until it is (or 30 s have passed).
    for old in &ids[..2] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let res = client()
                .get(server.url(&format!("/api/builds/{old}")))
                .send()
                .await
                .expect("get");
            let gone = res.status().as_u16() == 404 && !logs.join(format!("{old}.log")).exists();
            if gone {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "build {old} or its log was kept ({})",
                res.status()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for kept in &ids[2..] {
        assert_eq!(build(&server, *kept).await["status"], "success");
        assert!(logs.join(format!("{kept}.log")).exists());
    }
    // Workspaces are removed when a build ends.
    let workspaces = server.config.data_dir.join("workspaces");
    let left: Vec<_> = std::fs::read_dir(&workspaces)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_forgotten_after_thirty_days_unless_a_build_refers_to_them() {
    let up = Upstream::new("forget");
    let steps = "[[steps]]\nname = \"t\"\nrun = \"echo hi\"\n";
    let server = TestServer::start(&[("app", &pipeline(&up.url(), "", steps))], |c| {
        c.max_parallel_builds = 1;
        c.keep_builds = 1;
    })
    .await;
    // Two tag pushes (no trigger names tags: recorded, nothing built).
    let c0 = up.push(&[("n", "0\n")], "zero");
    // Two different tags: the same signed body twice would be a replay.
    for (id, tag) in [("old-tag", "refs/tags/v1"), ("new-tag", "refs/tags/v2")] {
        let tag = push_body(&up, tag, ZERO, &c0, "tag");
        let (status, _) = common::send_github(&server.base(), "app", SECRET, id, &tag).await;
        assert_eq!(status, 200);
    }
    // A built delivery, then backdate everything by 31 days.
    let body = push_body(&up, "refs/heads/main", ZERO, &c0, "m");
    let first = deliver(&server, "app", &body, "built").await[0];
    assert_eq!(wait_final(&server, first).await["status"], "success");
    // Time travel no API offers: the deliveries' receipt is moved back in
    // SQLite's file (the one write here; every read goes through the store).
    let db = rusqlite::Connection::open(server.db_path()).expect("open db");
    db.execute(
        "UPDATE deliveries SET received_at = '2020-01-01T00:00:00Z'
         WHERE delivery_id IN ('old-tag', 'built')",
        [],
    )
    .expect("backdate");
    // The next finished build prunes: build `first` goes (keep_builds = 1),
    // and with it the last reference to its delivery.
    let c1 = up.push(&[("n", "1\n")], "one");
    let body = push_body(&up, "refs/heads/main", &c0, &c1, "m");
    let second = deliver(&server, "app", &body, "second").await[0];
    assert_eq!(wait_final(&server, second).await["status"], "success");
    let store = server.store();
    let remembered =
        async |id: &str| i64::from(store.delivery_recorded("app", id).await.expect("read"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while remembered("old-tag").await == 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        remembered("old-tag").await,
        0,
        "an old delivery is forgotten"
    );
    assert_eq!(remembered("new-tag").await, 1, "a recent one is kept");
    assert_eq!(
        remembered("second").await,
        1,
        "one a build refers to is kept"
    );
    // `built` lost its build to keep_builds in the same prune, which
    // forgets builds first.
    assert_eq!(remembered("built").await, 0, "its build was pruned");
    // A redelivery of a recent id is still recognised.
    let (status, again) = common::send_github(&server.base(), "app", SECRET, "second", &body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["builds"][0]["id"], second);
    server.stop().await;
}

/// Reads a whole SSE stream, which must end `within`.
async fn read_stream(mut res: reqwest::Response, within: Duration) -> String {
    let mut text = String::new();
    let until = Instant::now() + within;
    while let Some(chunk) = tokio::time::timeout(within, res.chunk())
        .await
        .expect("the stream stalled")
        .expect("chunk")
    {
        text.push_str(&String::from_utf8_lossy(&chunk));
        assert!(Instant::now() < until, "the stream never ended");
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_builds_log_stream_waits_for_it_to_start() {
    let up = Upstream::new("waiting");
    let first = up.push(&[("n", "1\n")], "first");
    let steps = "[[steps]]\nname = \"s\"\nrun = 'echo \"start $HOOKCI_COMMIT\"; sleep 1; echo \"done $HOOKCI_COMMIT\"'\n";
    let server = start(&[("app", &pipeline(&up.url(), "", steps))], 1).await;
    let a = deliver(
        &server,
        "app",
        &push_body(&up, "refs/heads/main", ZERO, &first, "a"),
        "w1",
    )
    .await[0];
    wait_for(&server, a, |b| b["status"] == "running").await;
    // Queued behind the first (one build per branch at a time).
    let second = up.push(&[("n", "2\n")], "second");
    let b = deliver(
        &server,
        "app",
        &push_body(&up, "refs/heads/main", &first, &second, "b"),
        "w2",
    )
    .await[0];
    assert_eq!(build(&server, b).await["status"], "queued");
    let res = client()
        .get(server.url(&format!("/api/builds/{b}/log/stream")))
        .send()
        .await
        .expect("stream");
    assert_eq!(res.status().as_u16(), 200, "answered at once, while queued");
    let text = read_stream(res, Duration::from_secs(60)).await;
    assert!(text.contains(&format!("start {second}")), "{text}");
    assert!(text.contains(&format!("done {second}")), "{text}");
    assert!(!text.contains(&first), "only build {b}'s log: {text}");
    assert!(text.ends_with("event: end\ndata: success\n\n"), "{text}");
    // A finished build's stream replays its log and ends at once.
    let text = read_stream(
        client()
            .get(server.url(&format!("/api/builds/{a}/log/stream")))
            .send()
            .await
            .expect("stream"),
        Duration::from_secs(60),
    )
    .await;
    assert!(text.contains(&format!("done {first}")), "{text}");
    assert!(text.ends_with("event: end\ndata: success\n\n"), "{text}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_builds_log_can_be_followed_live_and_read_when_done() {
    let up = Upstream::new("follow");
    let commit = up.push(&[("README", "x\n")], "follow");
    let steps = "[secrets]\nTOKEN = \"follow-secret-value\"\n[[steps]]\nname = \"ticks\"\n\
                 run = 'for i in 1 2 3 4 5; do echo \"tick $i $TOKEN\"; sleep 0.2; done'\n";
    let server = start(&[("app", &pipeline(&up.url(), "", steps))], 1).await;
    let id = deliver(
        &server,
        "app",
        &push_body(&up, "refs/heads/main", ZERO, &commit, "f"),
        "f1",
    )
    .await[0];
    wait_for(&server, id, |b| b["steps"][0]["status"] == "running").await;
    let res = client()
        .get(server.url(&format!("/api/builds/{id}/log/stream")))
        .send()
        .await
        .expect("stream");
    assert_eq!(res.status().as_u16(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/event-stream")
    );
    let text = read_stream(res, Duration::from_secs(30)).await;
    for i in 1..=5 {
        assert!(text.contains(&format!("tick {i} ***")), "{text}");
    }
    assert!(
        text.ends_with("event: end\ndata: success\n\n"),
        "the end event carries the final status: {text}"
    );
    assert!(!text.contains("follow-secret-value"), "{text}");
    assert_eq!(wait_final(&server, id).await["status"], "success");
    let plain = client()
        .get(server.url(&format!("/api/builds/{id}/log")))
        .send()
        .await
        .expect("log");
    assert!(
        plain.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/plain")
    );
    let plain = plain.text().await.expect("text");
    assert_eq!(plain, log(&server, id));
    assert!(plain.contains("tick 5 ***"), "{plain}");
    server.stop().await;
}

/// A build shows the `node` that ran it (SPEC §11): none while it is
/// queued, the config's `node` once claimed (one box, the SQLite store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_shows_the_node_that_ran_it() {
    let up = Upstream::new("node");
    let commit = up.push(&[("README", "x\n")], "first");
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join("pipelines")).expect("mkdir");
    std::fs::write(
        dir.path().join("pipelines/app.toml"),
        pipeline(&up.url(), "", "[[steps]]\nname = \"t\"\nrun = \"true\"\n"),
    )
    .expect("pipeline");
    let (_daemon, base) = common::spawn_daemon(dir.path(), "node = \"box-7\"");
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "node");
    let id = common::queue_github(&base, "app", SECRET, "node-1", &body).await[0];
    let b = common::wait_final(&base, id).await;
    assert_eq!(b["status"], "success", "{b}");
    assert_eq!(b["node"], "box-7", "{b}");
    // The list shows it too.
    let list: Value = client()
        .get(format!("{base}/api/builds"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(list["builds"][0]["node"], "box-7", "{list}");
    // And the build page.
    let page = client()
        .get(format!("{base}/builds/{id}"))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(page.contains("Ran on") && page.contains("box-7"), "{page}");
}
