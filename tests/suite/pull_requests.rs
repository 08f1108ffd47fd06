//! Pull request builds end to end: the real daemon (the `hookci` binary),
//! real git (a base repository and a fork made with the git CLI, the pull
//! ref pushed into the base as GitHub makes it: `git push base
//! HEAD:refs/pull/7/head`), signed deliveries built from the recorded
//! `pull_request` payloads, and the fake GitHub API of `report_fake`
//! receiving the statuses on the head commit under the pull request context.
//!
//! No public GitHub `pull_request` delivery from a fork was found: the fork
//! case is the recorded `octokit__pull_request__opened.json` with
//! `pull_request.head.repo` changed to a fork (and the author made a
//! stranger), which is what GitHub sends for one.

use crate::common;
use crate::gitserve;
use crate::prereq;
use crate::report_fake;

use base64::Engine;
use common::Daemon;
use gitserve::{HttpGitServer, Upstream, git};
use report_fake::FakeHost;
use serde_json::Value;
use std::path::PathBuf;

const SECRET: &str = "pr-hook-secret";
const ADMIN: &str = "pr-admin-token-5c1e";
const API_TOKEN: &str = "ghp_pr_status_token";
/// The pipeline's `[secrets]` value a fork's steps must not see.
const PROBE: &str = "probe-secret-7f3a9b";
/// The status context of the pipeline `app`'s pull request builds.
const CONTEXT: &str = "hookci/app/pr";

/// A base repository with `main`, a fork of it, and the daemon building
/// the base's pull requests.
struct Setup {
    up: Upstream,
    fork_work: PathBuf,
    dir: tempfile::TempDir,
    _daemon: Daemon,
    base: String,
    host: FakeHost,
    main: String,
}

impl Setup {
    /// `extra` goes into the pipeline file (tables after the trigger); the
    /// one step is [`PROBE_STEP`].
    async fn start(extra: &str) -> Setup {
        Setup::start_with(extra, PROBE_STEP).await
    }

    /// [`Setup::start`] with another step.
    async fn start_with(extra: &str, step: &str) -> Setup {
        let up = Upstream::new("base");
        let url = up.url();
        Setup::start_on(up, &url, extra, step).await
    }

    /// [`Setup::start_with`] on `up`, cloned from `clone_url`.
    async fn start_on(up: Upstream, clone_url: &str, extra: &str, step: &str) -> Setup {
        Setup::start_full(up, clone_url, "", extra, step, true).await
    }

    /// [`Setup::start_on`] with more keys in the trigger (`paths = [...]`).
    async fn start_full(
        up: Upstream,
        clone_url: &str,
        trigger: &str,
        extra: &str,
        step: &str,
        bwrap: bool,
    ) -> Setup {
        let main = up.push(&[("README", "base\n")], "base");
        // The fork: a bare clone of the base, and a working clone of it.
        let fork_bare = up.project_root.join("fork.git");
        git(
            &up.home,
            &up.project_root,
            &[
                "clone",
                "-q",
                "--bare",
                up.bare.to_str().unwrap(),
                fork_bare.to_str().unwrap(),
            ],
        );
        let fork_work = up.tmp.path().join("fork-work");
        git(
            &up.home,
            up.tmp.path(),
            &[
                "clone",
                "-q",
                fork_bare.to_str().unwrap(),
                fork_work.to_str().unwrap(),
            ],
        );
        git(&up.home, &fork_work, &["checkout", "-q", "-b", "feature"]);
        let host = FakeHost::start(Vec::new()).await;
        let dir = tempfile::tempdir().unwrap();
        let pipeline = common::pipeline_toml(SECRET)
            .clone_url(clone_url)
            .table(&format!(
                "[[trigger]]\npull_requests = [\"main\"]\n{trigger}"
            ))
            .table(&format!("[secrets]\nPROBE_SECRET = \"{PROBE}\""))
            .table(&format!(
                "[status]\nprovider = \"github\"\napi_url = \"{}\"\ntoken = \"{API_TOKEN}\"",
                host.url()
            ))
            .table(extra)
            .step("probe", step);
        std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
        std::fs::write(dir.path().join("pipelines/app.toml"), pipeline.to_string()).unwrap();
        let settings = format!("admin_token = \"{ADMIN}\"\nmax_parallel_builds = 1");
        let (daemon, base) = if bwrap {
            common::spawn_daemon(dir.path(), &settings)
        } else {
            // A PATH without bwrap stands for a box without bubblewrap (the
            // steps' PATH is hookci's own default, not the daemon's).
            let config = dir.path().join("hookci.toml");
            std::fs::write(
                &config,
                format!(
                    "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\npipelines_dir = \"{}\"\n{settings}\n",
                    dir.path().join("data").display(),
                    dir.path().join("pipelines").display()
                ),
            )
            .unwrap();
            let child = std::process::Command::new(env!("CARGO_BIN_EXE_hookci"))
                .args(["serve", "--config"])
                .arg(&config)
                .env("PATH", "/nonexistent")
                .env("HOOKCI_LOG", "info")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            common::listening(child)
        };
        Setup {
            up,
            fork_work,
            dir,
            _daemon: daemon,
            base,
            host,
            main,
        }
    }

    /// Commits `files` in the fork on `feature`, pushes it to the fork, and
    /// pushes the commit into the base as `refs/pull/N/head` (what GitHub
    /// does for a pull request); returns the commit.
    fn fork_commit(&self, number: u64, files: &[(&str, &str)], message: &str) -> String {
        for (path, contents) in files {
            let path = self.fork_work.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        }
        let g = |args: &[&str]| git(&self.up.home, &self.fork_work, args);
        g(&["add", "-A"]);
        g(&["commit", "-q", "--allow-empty", "-m", message]);
        g(&["push", "-q", "origin", "HEAD:refs/heads/feature"]);
        let pull_ref = format!("HEAD:refs/pull/{number}/head");
        g(&[
            "push",
            "-q",
            "-f",
            self.up.bare.to_str().unwrap(),
            &pull_ref,
        ]);
        g(&["rev-parse", "HEAD"])
    }

    /// Sends a `pull_request` delivery; returns the status and answer.
    async fn deliver(&self, body: &[u8]) -> (u16, Value) {
        deliver(&self.base, body).await
    }

    async fn log(&self, id: i64) -> String {
        common::client()
            .get(format!("{}/api/builds/{id}/log", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Runs the real `hookci` client against the daemon.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_hookci"))
            .args(args)
            .args(["--server", &self.base, "--token", ADMIN])
            .current_dir(self.dir.path())
            .env_remove("HOOKCI_CONFIG")
            .output()
            .unwrap()
    }

    /// Waits until the fake host got a status `state` for `commit` under
    /// the pull request context; returns every status it got for it.
    async fn wait_status(&self, commit: &str, state: &str, description: &str) -> Vec<Value> {
        let path = format!("/repos/Codertocat/Hello-World/statuses/{commit}");
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let got: Vec<Value> = self
                .host
                .seen()
                .iter()
                .filter(|s| s.path == path)
                .map(|s| s.json())
                .collect();
            if got.iter().any(|s| {
                s["state"] == state && s["context"] == CONTEXT && s["description"] == description
            }) {
                return got;
            }
            assert!(
                std::time::Instant::now() < until,
                "no {state} status for {commit}: {got:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// Prints, base64-encoded (so the log's masking cannot hide a leak), what
/// the step sees; then whether it runs sandboxed (a sandboxed step has no
/// `/sys`).
const PROBE_STEP: &str = r#"printf '%s|%s|%s|%s|%s|%s|%s|%s' "${PROBE_SECRET:-}" "$HOOKCI_EVENT" "$HOOKCI_PR_NUMBER" "$HOOKCI_BRANCH" "$HOOKCI_PR_FORK" "$HOOKCI_PR_HEAD_REPO" "$HOOKCI_PR_AUTHOR" "$(git rev-parse HEAD)" | base64 | tr -d '\n' | sed 's/^/seen:/'; echo
if [ -d /sys/kernel ]; then echo where:unsandboxed; else echo where:sandboxed; fi
if [ -n "${SHARED_CACHE:-}" ]; then if touch "$SHARED_CACHE/from-$HOOKCI_BUILD_ID" 2>/dev/null; then echo cache:written; else echo cache:refused; fi; fi"#;

/// The probe's fields from a log: secret, event, number, branch, fork,
/// head repo, author, HEAD; and where it ran.
fn probe_of(log: &str) -> (Vec<String>, String) {
    let seen = log
        .lines()
        .find_map(|l| l.strip_prefix("seen:"))
        .unwrap_or_else(|| panic!("no probe line in the log:\n{log}"));
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(seen.trim())
        .expect("base64");
    let fields = String::from_utf8(decoded)
        .unwrap()
        .split('|')
        .map(str::to_owned)
        .collect();
    let place = log
        .lines()
        .find_map(|l| l.strip_prefix("where:"))
        .expect("where line")
        .to_owned();
    (fields, place)
}

async fn deliver(base: &str, body: &[u8]) -> (u16, Value) {
    let res = common::client()
        .post(format!("{base}/hooks/app"))
        .header("X-GitHub-Event", "pull_request")
        .header("X-GitHub-Delivery", uuid_of(body))
        .header("X-Hub-Signature-256", common::hub_sha256(SECRET, body))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// A delivery id from the body (distinct bodies, distinct ids).
fn uuid_of(body: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(body))[..32].to_owned()
}

/// Who opens the pull request, and from where.
#[derive(Clone, Copy)]
enum From {
    /// A stranger's fork (`mallory/Hello-World`, author_association NONE).
    Fork,
    /// A branch of the base repository, by its owner.
    SameRepo,
}

/// The recorded GitHub `pull_request` payload (octokit, action opened),
/// with this test's number, head commit, branches and base commit. For
/// [`From::Fork`], `pull_request.head.repo` is changed to a fork and the
/// author to a stranger: no recorded fork payload exists (see the top).
fn pull_request(action: &str, number: u64, head: &str, base_sha: &str, from: From) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&common::fixture(
        "github/octokit__pull_request__opened.json",
    ))
    .unwrap();
    v["action"] = action.into();
    v["number"] = number.into();
    let pr = &mut v["pull_request"];
    pr["number"] = number.into();
    pr["head"]["sha"] = head.into();
    pr["head"]["ref"] = "feature".into();
    pr["base"]["ref"] = "main".into();
    pr["base"]["sha"] = base_sha.into();
    match from {
        From::Fork => {
            pr["head"]["repo"]["full_name"] = "mallory/Hello-World".into();
            pr["head"]["repo"]["name"] = "Hello-World".into();
            pr["head"]["repo"]["fork"] = true.into();
            pr["head"]["repo"]["clone_url"] = "https://github.com/mallory/Hello-World.git".into();
            pr["head"]["repo"]["owner"]["login"] = "mallory".into();
            pr["user"]["login"] = "mallory".into();
            pr["author_association"] = "NONE".into();
        }
        From::SameRepo => {}
    }
    if action == "closed" {
        pr["state"] = "closed".into();
    }
    serde_json::to_vec(&v).unwrap()
}

fn build_ids(answer: &Value) -> Vec<i64> {
    answer["builds"]
        .as_array()
        .unwrap_or_else(|| panic!("no builds in {answer}"))
        .iter()
        .map(|b| b["id"].as_i64().unwrap())
        .collect()
}

fn have_bwrap() -> bool {
    let ok = std::process::Command::new("bwrap")
        .args(["--ro-bind", "/", "/", "--unshare-all", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        prereq::missing("bubblewrap (bwrap) does not work here");
    }
    ok
}

async fn post_approve(base: &str, id: i64, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = common::client()
        .post(format!("{base}/api/builds/{id}/approve"))
        .header("Authorization", format!("Bearer {ADMIN}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_pull_request_waits_for_approval_then_runs_sandboxed_without_secrets() {
    if !have_bwrap() {
        return;
    }
    // The pipeline turns the sandbox off; a fork's pull request gets it
    // anyway. Its shared cache, writable for the pipeline's own builds, is
    // read-only to a fork's.
    let cache = tempfile::tempdir().unwrap();
    let s = Setup::start(&format!(
        "[env]\nSHARED_CACHE = \"{0}\"\n[sandbox]\nenabled = false\nread_write = [\"{0}\"]",
        cache.path().display()
    ))
    .await;
    let head = s.fork_commit(7, &[("evil.sh", "echo hi\n")], "from the fork");
    let (status, answer) = s
        .deliver(&pull_request("opened", 7, &head, &s.main, From::Fork))
        .await;
    assert_eq!(status, 202, "{answer}");
    let id = build_ids(&answer)[0];

    let waiting = common::get_build(&s.base, id).await.unwrap();
    assert_eq!(waiting["status"], "waiting", "{waiting}");
    assert_eq!(waiting["event"], "pull_request");
    assert_eq!(waiting["commit"], head.as_str());
    assert_eq!(waiting["pull_request"]["number"], 7);
    assert_eq!(waiting["pull_request"]["fork"], true);
    assert_eq!(waiting["pull_request"]["author"], "mallory");
    assert_eq!(waiting["pull_request"]["head_repo"], "mallory/Hello-World");
    // The host shows the head commit pending, waiting for approval.
    s.wait_status(&head, "pending", "waiting for approval")
        .await;

    // The build page offers the approval.
    let page = common::client()
        .get(format!("{}/builds/{id}", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&format!("/api/builds/{id}/approve")),
        "{page}"
    );
    assert!(page.contains("mallory/Hello-World"), "{page}");

    // Nothing claims a waiting build: a later same-repo build runs first
    // and ends while this one still waits.
    let own = s.up.commit(&[("ok.txt", "ok\n")], "own branch");
    s.up.git(&["push", "-q", "origin", "HEAD:refs/pull/8/head"]);
    let (_, answer) = s
        .deliver(&pull_request("opened", 8, &own, &s.main, From::SameRepo))
        .await;
    let own_id = build_ids(&answer)[0];
    assert_eq!(
        common::wait_final(&s.base, own_id).await["status"],
        "success"
    );
    assert_eq!(
        common::get_build(&s.base, id).await.unwrap()["status"],
        "waiting"
    );

    // `hookci approve ID` releases it.
    let out = s.cli(&["approve", &id.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = common::wait_final(&s.base, id).await;
    assert_eq!(done["status"], "success", "{done}");
    let (fields, place) = probe_of(&s.log(id).await);
    assert_eq!(fields[0], "", "a fork's step saw the pipeline's secret");
    assert_eq!(
        &fields[1..],
        [
            "pull_request",
            "7",
            "feature",
            "true",
            "mallory/Hello-World",
            "mallory",
            head.as_str()
        ]
    );
    assert_eq!(place, "sandboxed");
    let log = s.log(id).await;
    assert!(log.contains("cache:refused"), "{log}");
    assert!(!cache.path().join(format!("from-{id}")).exists());
    let statuses = s.wait_status(&head, "success", "build passed").await;
    assert!(
        statuses.iter().all(|st| st["context"] == CONTEXT),
        "{statuses:?}"
    );

    // The same-repo pull request's steps got the secret and ran as the
    // pipeline says (unsandboxed).
    let (fields, place) = probe_of(&s.log(own_id).await);
    assert_eq!(fields[0], PROBE);
    assert_eq!(fields[4], "false");
    assert_eq!(place, "unsandboxed");
    assert!(cache.path().join(format!("from-{own_id}")).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_from_another_origin_is_refused_even_with_the_token() {
    let s = Setup::start("").await;
    let head = s.fork_commit(7, &[("a", "1\n")], "fork");
    let (_, answer) = s
        .deliver(&pull_request("opened", 7, &head, &s.main, From::Fork))
        .await;
    let id = build_ids(&answer)[0];
    for headers in [
        &[
            ("Origin", "https://evil.example"),
            ("Sec-Fetch-Site", "cross-site"),
        ][..],
        &[("Sec-Fetch-Site", "same-site")][..],
        &[("Origin", "https://evil.example")][..],
    ] {
        let (status, answer) = post_approve(&s.base, id, headers).await;
        assert_eq!(status, 403, "{headers:?}: {answer}");
    }
    assert_eq!(
        common::get_build(&s.base, id).await.unwrap()["status"],
        "waiting"
    );
    // Without the token: 401; a build that is not waiting: 409.
    let res = common::client()
        .post(format!("{}/api/builds/{id}/approve", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let (status, _) = post_approve(&s.base, id, &[]).await;
    assert_eq!(status, 200);
    let (status, answer) = post_approve(&s.base, id, &[]).await;
    assert_eq!(status, 409, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_authors_fork_pull_request_builds_at_once_still_without_secrets() {
    if !have_bwrap() {
        return;
    }
    let s = Setup::start("[pull_requests]\ntrusted_authors = [\"Mallory\"]").await;
    let head = s.fork_commit(9, &[("b", "2\n")], "trusted fork");
    let (status, answer) = s
        .deliver(&pull_request("opened", 9, &head, &s.main, From::Fork))
        .await;
    assert_eq!(status, 202, "{answer}");
    let id = build_ids(&answer)[0];
    let done = common::wait_final(&s.base, id).await;
    assert_eq!(done["status"], "success", "{done}");
    let (fields, place) = probe_of(&s.log(id).await);
    assert_eq!(fields[0], "", "secrets_for_forks is false by default");
    assert_eq!(fields[7], head);
    assert_eq!(place, "sandboxed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forks_ignore_builds_nothing_and_a_pull_into_another_branch_neither() {
    let s = Setup::start("[pull_requests]\nforks = \"ignore\"").await;
    let head = s.fork_commit(7, &[("c", "3\n")], "ignored fork");
    let (status, answer) = s
        .deliver(&pull_request("opened", 7, &head, &s.main, From::Fork))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["skipped"], "pull requests from forks are ignored");
    let mut body: Value =
        serde_json::from_slice(&pull_request("opened", 7, &head, &s.main, From::SameRepo)).unwrap();
    body["pull_request"]["base"]["ref"] = "release".into();
    let (status, answer) = s.deliver(&serde_json::to_vec(&body).unwrap()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["skipped"],
        "no trigger matches pull requests into release"
    );
    // A label builds nothing.
    let (status, answer) = s
        .deliver(&pull_request("labeled", 7, &head, &s.main, From::SameRepo))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["skipped"],
        "pull request action labeled builds nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_push_supersedes_a_pull_requests_build_and_closing_it_cancels_the_next() {
    // The step runs until it is stopped: only a supersede or a close ends it.
    let s = Setup::start_with("", "sleep 600").await;
    let first = s.up.commit(&[("f", "1\n")], "first");
    s.up.git(&["push", "-q", "-f", "origin", "HEAD:refs/pull/7/head"]);
    let (status, answer) = s
        .deliver(&pull_request("opened", 7, &first, &s.main, From::SameRepo))
        .await;
    assert_eq!(status, 202, "{answer}");
    let first_id = build_ids(&answer)[0];
    common::wait_build(&s.base, first_id, |b| b["status"] == "running").await;

    // synchronize: the running build is stopped for the new head.
    let second = s.up.commit(&[("f", "2\n")], "second");
    s.up.git(&["push", "-q", "-f", "origin", "HEAD:refs/pull/7/head"]);
    let (status, answer) = s
        .deliver(&pull_request(
            "synchronize",
            7,
            &second,
            &s.main,
            From::SameRepo,
        ))
        .await;
    assert_eq!(status, 202, "{answer}");
    let second_id = build_ids(&answer)[0];
    let b = common::wait_final(&s.base, first_id).await;
    assert_eq!(b["status"], "cancelled", "{b}");
    assert_eq!(b["reason"], format!("superseded by build {second_id}"));
    let b = common::wait_build(&s.base, second_id, |b| b["status"] == "running").await;
    assert_eq!(b["commit"], second.as_str());

    // closed: the pull request's running build is stopped.
    let (status, answer) = s
        .deliver(&pull_request("closed", 7, &second, &s.main, From::SameRepo))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["skipped"], "pull request 7 was closed");
    let b = common::wait_final(&s.base, second_id).await;
    assert_eq!(b["status"], "cancelled", "{b}");
    assert_eq!(b["reason"], "pull request 7 was closed");
    // Both reported on their own head commit under the pull request context.
    s.wait_status(&first, "error", "build cancelled").await;
    s.wait_status(&second, "error", "build cancelled").await;
    // A pull request never sets the pipeline's badge.
    let badge = common::client()
        .get(format!("{}/badge/app.svg", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        badge.contains("unknown") && !badge.contains("cancelled"),
        "{badge}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_fork_pull_request_cancels_its_waiting_build() {
    let s = Setup::start("").await;
    let head = s.fork_commit(7, &[("w", "1\n")], "fork");
    let (_, answer) = s
        .deliver(&pull_request("opened", 7, &head, &s.main, From::Fork))
        .await;
    let id = build_ids(&answer)[0];
    let (status, answer) = s
        .deliver(&pull_request("closed", 7, &head, &s.main, From::Fork))
        .await;
    assert_eq!(status, 200, "{answer}");
    let b = common::get_build(&s.base, id).await.unwrap();
    assert_eq!(b["status"], "cancelled", "{b}");
    assert_eq!(b["reason"], "pull request 7 was closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_request_builds_are_listed_by_the_api_filter_and_hookci_builds() {
    let s = Setup::start("").await;
    let head = s.fork_commit(7, &[("l", "1\n")], "fork");
    let (_, answer) = s
        .deliver(&pull_request("opened", 7, &head, &s.main, From::Fork))
        .await;
    let id = build_ids(&answer)[0];
    let list: Value = common::client()
        .get(format!("{}/api/builds?event=pull_request", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let builds = list["builds"].as_array().unwrap();
    assert_eq!(builds.len(), 1, "{list}");
    assert_eq!(builds[0]["id"], id);
    assert_eq!(
        builds[0]["pull_request"]["title"],
        "Update the README with new information."
    );
    let pushes: Value = common::client()
        .get(format!("{}/api/builds?event=push", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(pushes["builds"].as_array().unwrap().len(), 0, "{pushes}");
    let out = s.cli(&["builds", "--event", "pull_request"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.contains("PR #7 by mallory (fork): Update the README with new informat"),
        "{table}"
    );
    assert!(table.contains("waiting"), "{table}");
    // The index page lists it under its event, with its number and author.
    let index = common::client()
        .get(format!("{}/?event=pull_request", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(index.contains("PR #7"), "{index}");
    assert!(index.contains("by mallory (fork)"), "{index}");
    assert!(
        index.contains("<option value=\"pull_request\" selected"),
        "{index}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_pull_requests_fetch_gets_no_clone_credentials() {
    const TOKEN: &str = "clone-token-for-the-base-0b9e";
    let up = Upstream::new("base");
    let git = HttpGitServer::start(&up.project_root, &up.home, TOKEN).await;
    // A trusted author's fork builds at once, sandbox or not; it still gets
    // no credentials (secrets_for_forks is false).
    let extra =
        format!("[clone]\ntoken = \"{TOKEN}\"\n[pull_requests]\ntrusted_authors = [\"mallory\"]");
    let s = Setup::start_on(up, &git.url("base"), &extra, "true").await;
    let head = s.fork_commit(7, &[("x", "1\n")], "fork");
    let (_, answer) = s
        .deliver(&pull_request("opened", 7, &head, &s.main, From::Fork))
        .await;
    let fork_build = common::wait_final(&s.base, build_ids(&answer)[0]).await;
    assert_eq!(fork_build["status"], "error", "{fork_build}");
    let reason = fork_build["reason"].as_str().unwrap();
    assert!(reason.contains("asks for credentials"), "{reason}");
    assert!(reason.contains("secrets_for_forks = true"), "{reason}");
    assert_eq!(git.authorizations(), 0, "the fork's fetch sent the token");

    // The same pipeline's own pull request fetches with the token.
    let own = s.up.commit(&[("y", "1\n")], "own");
    s.up.git(&["push", "-q", "origin", "HEAD:refs/pull/8/head"]);
    let (_, answer) = s
        .deliver(&pull_request("opened", 8, &own, &s.main, From::SameRepo))
        .await;
    let own_build = common::wait_final(&s.base, build_ids(&answer)[0]).await;
    assert_eq!(own_build["status"], "success", "{own_build}");
    assert!(git.authorizations() > 0);
}

/// A trigger's `paths` are decided on what the pull request changes since
/// its merge base with the base branch, not on what the base branch gained
/// since (the payload's base commit is the base branch's tip).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_decided_on_the_changes_since_the_merge_base() {
    let up = Upstream::new("base");
    let url = up.url();
    let s = Setup::start_full(up, &url, "paths = [\"src/**\"]", "", "true", true).await;
    // The fork changes docs only; then main changes src.
    let docs_only = s.fork_commit(7, &[("docs.md", "words\n")], "docs");
    let main_now = s.up.push(&[("src/lib.rs", "fn f() {}\n")], "src on main");
    let (_, answer) = s
        .deliver(&pull_request(
            "opened",
            7,
            &docs_only,
            &main_now,
            From::Fork,
        ))
        .await;
    let id = build_ids(&answer)[0];
    let out = s.cli(&["approve", &id.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b = common::wait_final(&s.base, id).await;
    assert_eq!(b["status"], "skipped", "{b}");

    // A pull request that changes src builds.
    let src = s.fork_commit(7, &[("src/main.rs", "fn main() {}\n")], "src");
    let (_, answer) = s
        .deliver(&pull_request("synchronize", 7, &src, &main_now, From::Fork))
        .await;
    let id = build_ids(&answer)[0];
    let out = s.cli(&["approve", &id.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b = common::wait_final(&s.base, id).await;
    assert_eq!(b["status"], "success", "{b}");
}

/// `forks = "build"` builds a stranger's fork at once where steps are
/// sandboxed; where no sandbox works, it waits for approval all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forks_build_runs_at_once_only_where_a_sandbox_exists() {
    let extra = "[pull_requests]\nforks = \"build\"";
    if have_bwrap() {
        let s = Setup::start(extra).await;
        let head = s.fork_commit(7, &[("s", "1\n")], "fork");
        let (_, answer) = s
            .deliver(&pull_request("opened", 7, &head, &s.main, From::Fork))
            .await;
        let b = common::wait_final(&s.base, build_ids(&answer)[0]).await;
        assert_eq!(b["status"], "success", "{b}");
        let (fields, place) = probe_of(&s.log(b["id"].as_i64().unwrap()).await);
        assert_eq!((fields[0].as_str(), place.as_str()), ("", "sandboxed"));
    }
    let up = Upstream::new("base");
    let url = up.url();
    let s = Setup::start_full(up, &url, "", extra, PROBE_STEP, false).await;
    let head = s.fork_commit(7, &[("s", "1\n")], "fork");
    let (status, answer) = s
        .deliver(&pull_request("opened", 7, &head, &s.main, From::Fork))
        .await;
    assert_eq!(status, 202, "{answer}");
    let id = build_ids(&answer)[0];
    assert_eq!(
        common::get_build(&s.base, id).await.unwrap()["status"],
        "waiting"
    );
    // Approved, it runs (unsandboxed: there is none), still without secrets.
    let (status, _) = post_approve(&s.base, id, &[]).await;
    assert_eq!(status, 200);
    let b = common::wait_final(&s.base, id).await;
    assert_eq!(b["status"], "success", "{b}");
    let (fields, place) = probe_of(&s.log(id).await);
    assert_eq!((fields[0].as_str(), place.as_str()), ("", "unsandboxed"));
}

/// What a bad-input case does to a good payload.
type Spoil = fn(&mut Value);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pull_request_payloads_get_400() {
    let s = Setup::start("").await;
    let good: Value =
        serde_json::from_slice(&pull_request("opened", 7, &s.main, &s.main, From::SameRepo))
            .unwrap();
    let cases: [(&str, Spoil); 4] = [
        ("no head commit", |v| {
            v["pull_request"]["head"]
                .as_object_mut()
                .unwrap()
                .remove("sha");
        }),
        ("a head commit that is not hex", |v| {
            v["pull_request"]["head"]["sha"] = "--upload-pack=touch${IFS}x;#aaaaaaaaaaaaaaa".into();
        }),
        ("a number that is not a number", |v| {
            v["number"] = "7; rm -rf /".into();
        }),
        ("a negative number", |v| {
            v["number"] = (-7).into();
        }),
    ];
    for (what, spoil) in cases {
        let mut v = good.clone();
        spoil(&mut v);
        let (status, answer) = s.deliver(&serde_json::to_vec(&v).unwrap()).await;
        assert_eq!(status, 400, "{what}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(
            !error.contains('\n') && !error.contains("rm -rf"),
            "{error}"
        );
    }
    let list: Value = common::client()
        .get(format!("{}/api/builds", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["builds"].as_array().unwrap().len(), 0, "{list}");
}
