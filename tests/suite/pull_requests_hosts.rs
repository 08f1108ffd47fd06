//! Pull and merge requests of every host other than GitHub (see
//! `pull_requests.rs` for GitHub and the fork rules), end to end: the real
//! daemon, a base repository made with the git CLI holding the host's own
//! pull ref (`refs/merge-requests/N/head` on GitLab, `refs/pull/N/head` on
//! Gitea, Forgejo and Gogs, `refs/pull-requests/N/from` on Bitbucket
//! Server; Bitbucket Cloud has none, so its source branch), the host's
//! recorded payload with this test's commits, signed as the host signs,
//! and the host's status API faked on loopback. The same pull request from
//! a fork then waits for approval, and its close cancels it. No host's
//! recorded fork payload is used here: each case turns its own into one by
//! changing the head repository (and the author, where the host vouches
//! for owners).

use crate::common;
use crate::gitserve;
use crate::report_fake;

use gitserve::Upstream;
use report_fake::FakeHost;
use serde_json::Value;

const SECRET: &str = "pr-hosts-secret";
const CONTEXT: &str = "hookci/app/pr";

/// One host's case.
struct Case {
    /// `host` in the pipeline.
    host: &'static str,
    /// `[status] provider`, if the host has a status API.
    provider: Option<&'static str>,
    /// The pipeline's `repo`: the fixture's repository.
    repo: &'static str,
    /// The recorded payload.
    fixture: &'static str,
    /// The event header's value for a build, and for a close.
    build_event: &'static str,
    close_event: &'static str,
    /// The ref the host keeps the head in (in the base repository).
    pull_ref: &'static str,
    /// The number the payload says.
    number: u64,
    /// Puts the test's head and base commits (and the `feature` into
    /// `main` branches) into the payload.
    fill: fn(&mut Value, head: &str, base: &str),
    /// Makes the filled payload a close (or merge).
    close: fn(&mut Value),
    /// Makes the filled payload come from a fork, by an author the host
    /// does not vouch for.
    fork: fn(&mut Value),
}

/// The headers `host` sends for `event`, signed.
fn headers(host: &str, event: &str, body: &[u8], n: usize) -> Vec<(&'static str, String)> {
    let hex = common::hmac_hex(SECRET, body);
    let id = format!("delivery-{n}-{}", &hex[..12]);
    match host {
        "gitlab" => vec![
            ("X-Gitlab-Event", event.to_owned()),
            ("X-Gitlab-Token", SECRET.to_owned()),
            ("X-Gitlab-Event-UUID", id),
        ],
        "gitea" => vec![
            ("X-Gitea-Event", event.to_owned()),
            ("X-Gitea-Delivery", id),
            ("X-Gitea-Signature", hex),
        ],
        "forgejo" => vec![
            ("X-Forgejo-Event", event.to_owned()),
            ("X-Forgejo-Delivery", id),
            ("X-Forgejo-Signature", hex),
        ],
        "gogs" => vec![
            ("X-Gogs-Event", event.to_owned()),
            ("X-Gogs-Delivery", id),
            ("X-Gogs-Signature", hex),
        ],
        "bitbucket" => vec![
            ("X-Event-Key", event.to_owned()),
            ("X-Request-UUID", id),
            ("X-Hub-Signature", format!("sha256={hex}")),
        ],
        "bitbucket-server" => vec![
            ("X-Event-Key", event.to_owned()),
            ("X-Request-Id", id),
            ("X-Hub-Signature", format!("sha256={hex}")),
        ],
        other => panic!("no headers for {other}"),
    }
}

async fn send(base: &str, host: &str, event: &str, body: &[u8], n: usize) -> (u16, Value) {
    let mut req = common::client().post(format!("{base}/hooks/app"));
    for (k, v) in headers(host, event, body, n) {
        req = req.header(k, v);
    }
    let res = req.body(body.to_vec()).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The step: what it checked out and which pull request it builds.
const STEP: &str = r#"echo "head:$(git rev-parse HEAD) number:$HOOKCI_PR_NUMBER branch:$HOOKCI_BRANCH event:$HOOKCI_EVENT""#;

async fn run(case: Case) {
    let up = Upstream::new("base");
    let main = up.push(&[("README", "base\n")], "base");
    let head = up.commit(&[("change.txt", "from the pull request\n")], "the change");
    up.git(&["push", "-q", "origin", &format!("HEAD:{}", case.pull_ref)]);
    if case.host == "bitbucket" {
        up.git(&["push", "-q", "origin", "HEAD:refs/heads/feature"]);
    }
    let api = FakeHost::start(Vec::new()).await;
    let status = match case.provider {
        Some(p) => format!(
            "[status]\nprovider = \"{p}\"\napi_url = \"{}\"\ntoken = \"status-token\"",
            api.url()
        ),
        None => String::new(),
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
    let pipeline = format!(
        "repo = \"{}\"\nhost = \"{}\"\nsecret = \"{SECRET}\"\nclone_url = \"{}\"\n\
         [[trigger]]\npull_requests = [\"main\"]\n{status}\n[[steps]]\nname = \"show\"\nrun = '''{STEP}'''\n",
        case.repo,
        case.host,
        up.url()
    );
    std::fs::write(dir.path().join("pipelines/app.toml"), pipeline).unwrap();
    let (_daemon, base) = common::spawn_daemon(dir.path(), "max_parallel_builds = 1");

    let mut body: Value = serde_json::from_slice(&common::fixture(case.fixture)).unwrap();
    (case.fill)(&mut body, &head, &main);
    let bytes = serde_json::to_vec(&body).unwrap();
    let (code, answer) = send(&base, case.host, case.build_event, &bytes, 1).await;
    assert_eq!(code, 202, "{}: {answer}", case.host);
    let id = answer["builds"][0]["id"].as_i64().unwrap();
    let b = common::wait_final(&base, id).await;
    assert_eq!(b["status"], "success", "{}: {b}", case.host);
    assert_eq!(b["event"], "pull_request");
    assert_eq!(b["pull_request"]["number"], case.number);
    assert_eq!(b["pull_request"]["fork"], false);
    // Gogs names no commit: the build records the one its pull ref gave.
    assert_eq!(b["commit"], head.as_str(), "{}", case.host);
    let log = common::client()
        .get(format!("{base}/api/builds/{id}/log"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let want = format!(
        "head:{head} number:{} branch:feature event:pull_request",
        case.number
    );
    assert!(log.contains(&want), "{}: {log}", case.host);

    if case.provider.is_some() {
        // The head commit's status, under the pull request's context.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let seen = api.seen();
            let found = seen.iter().any(|s| {
                s.path.contains(&head)
                    && String::from_utf8_lossy(&s.body).contains(CONTEXT)
                    && String::from_utf8_lossy(&s.body).contains("build passed")
            });
            if found {
                break;
            }
            assert!(
                std::time::Instant::now() < until,
                "{}: no success status on {head}: {:?}",
                case.host,
                seen.iter().map(|s| &s.path).collect::<Vec<_>>()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    if case.host == "bitbucket" {
        // Bitbucket Cloud sends pullrequest:updated for a title edit too,
        // with no previous head: the same head again builds nothing.
        let mut edited = body.clone();
        edited["pullrequest"]["title"] = "A better title".into();
        // Bitbucket's own abbreviated id of the same head.
        edited["pullrequest"]["source"]["commit"]["hash"] = head[..12].into();
        let bytes = serde_json::to_vec(&edited).unwrap();
        let (code, answer) = send(&base, case.host, "pullrequest:updated", &bytes, 3).await;
        assert_eq!(code, 200, "{answer}");
        assert_eq!(
            answer["skipped"],
            format!(
                "pull request {} was updated without new commits",
                case.number
            )
        );
        // New commits on the source branch build.
        let newer = up.commit(&[("change.txt", "more\n")], "more");
        up.git(&["push", "-q", "origin", "HEAD:refs/heads/feature"]);
        edited["pullrequest"]["source"]["commit"]["hash"] = newer.as_str().into();
        let bytes = serde_json::to_vec(&edited).unwrap();
        let (code, answer) = send(&base, case.host, "pullrequest:updated", &bytes, 4).await;
        assert_eq!(code, 202, "{answer}");
        let newer_id = answer["builds"][0]["id"].as_i64().unwrap();
        let b = common::wait_final(&base, newer_id).await;
        assert_eq!(b["status"], "success", "{b}");
    }

    // The same pull request from a fork, by a stranger: it waits for an
    // admin (the pipeline's default `forks = "approve"`).
    let mut forked = body.clone();
    (case.fork)(&mut forked);
    let bytes = serde_json::to_vec(&forked).unwrap();
    let (code, answer) = send(&base, case.host, case.build_event, &bytes, 5).await;
    assert_eq!(code, 202, "{}: {answer}", case.host);
    let waiting = answer["builds"][0]["id"].as_i64().unwrap();
    let b = common::get_build(&base, waiting).await.unwrap();
    assert_eq!(b["status"], "waiting", "{}: {b}", case.host);
    assert_eq!(b["pull_request"]["fork"], true, "{}: {b}", case.host);

    // The close (or merge) of the pull request is answered, cancels the
    // waiting build, and changes nothing that ended.
    (case.close)(&mut body);
    let bytes = serde_json::to_vec(&body).unwrap();
    let (code, answer) = send(&base, case.host, case.close_event, &bytes, 2).await;
    assert_eq!(code, 200, "{}: {answer}", case.host);
    let skipped = answer["skipped"].as_str().unwrap();
    assert!(
        skipped == format!("pull request {} was closed", case.number)
            || skipped == format!("pull request {} was merged", case.number),
        "{}: {skipped}",
        case.host
    );
    assert_eq!(
        common::get_build(&base, id).await.unwrap()["status"],
        "success"
    );
    let b = common::get_build(&base, waiting).await.unwrap();
    assert_eq!(b["status"], "cancelled", "{}: {b}", case.host);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitlab_merge_request_builds_its_head_from_the_merge_request_ref() {
    run(Case {
        host: "gitlab",
        provider: Some("gitlab"),
        repo: "demoaccount2-commits-group/test_ci_tmp",
        fixture: "gitlab/woodpecker__mr_opened.json",
        build_event: "Merge Request Hook",
        close_event: "Merge Request Hook",
        pull_ref: "refs/merge-requests/3/head",
        number: 3,
        fill: |v, head, _| {
            let mr = &mut v["object_attributes"];
            mr["last_commit"]["id"] = head.into();
            mr["source_branch"] = "feature".into();
            mr["target_branch"] = "main".into();
        },
        close: |v| v["object_attributes"]["action"] = "merge".into(),
        fork: |v| {
            // Another project's merge request (GitLab says nothing of the
            // author's standing: only `trusted_authors` would trust them).
            v["object_attributes"]["target_project_id"] = 15.into();
            v["object_attributes"]["source_project_id"] = 16.into();
        },
    })
    .await;
}

/// Gitea's and Forgejo's `pull_request` (GitHub's shape): the test's head,
/// base and branches.
fn fill_gitea(v: &mut Value, head: &str, base: &str) {
    let pr = &mut v["pull_request"];
    pr["head"]["sha"] = head.into();
    pr["head"]["ref"] = "feature".into();
    pr["base"]["ref"] = "main".into();
    pr["base"]["sha"] = base.into();
}

/// Gitea's and Forgejo's `pull_request` from a fork, by someone who does
/// not own the repository.
fn fork_gitea(v: &mut Value) {
    v["pull_request"]["head"]["repo"]["full_name"] = "mallory/fork".into();
    v["pull_request"]["user"]["login"] = "mallory".into();
    v["pull_request"]["user"]["username"] = "mallory".into();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitea_pull_request_builds_its_head_from_the_pull_ref() {
    run(Case {
        host: "gitea",
        provider: Some("gitea"),
        repo: "Test-CI/multi-line-secrets",
        fixture: "gitea/woodpecker__pr_synchronized.json",
        build_event: "pull_request",
        close_event: "pull_request",
        pull_ref: "refs/pull/2/head",
        number: 2,
        fill: fill_gitea,
        close: |v| v["action"] = "closed".into(),
        fork: fork_gitea,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgejo_pull_request_builds_its_head_from_the_pull_ref() {
    run(Case {
        host: "forgejo",
        provider: Some("forgejo"),
        repo: "test_it/test_ci_thing",
        fixture: "forgejo/woodpecker__pr_reopened.json",
        build_event: "pull_request",
        close_event: "pull_request",
        pull_ref: "refs/pull/1/head",
        number: 1,
        fill: fill_gitea,
        close: |v| v["action"] = "closed".into(),
        fork: fork_gitea,
    })
    .await;
}

/// Gogs sends no commit id: the build is of what the pull ref points to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gogs_pull_request_builds_what_its_pull_ref_points_to() {
    run(Case {
        host: "gogs",
        provider: None,
        repo: "gogits/hello-world",
        fixture: "gogs/goscm__pull_request_opened.json",
        build_event: "pull_request",
        close_event: "pull_request",
        pull_ref: "refs/pull/2/head",
        number: 2,
        fill: |v, _, _| {
            let pr = &mut v["pull_request"];
            pr["head_branch"] = "feature".into();
            pr["base_branch"] = "main".into();
        },
        close: |v| v["action"] = "closed".into(),
        fork: |v| {
            v["pull_request"]["head_repo"]["full_name"] = "mallory/fork".into();
            v["pull_request"]["user"]["login"] = "mallory".into();
            v["pull_request"]["user"]["username"] = "mallory".into();
        },
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bitbucket_server_pull_request_builds_its_head_from_the_from_ref() {
    run(Case {
        host: "bitbucket-server",
        provider: Some("bitbucket-server"),
        repo: "PRJ/my-repo",
        fixture: "bitbucket-server/goscm__pr_open.json",
        build_event: "pr:opened",
        close_event: "pr:declined",
        pull_ref: "refs/pull-requests/2/from",
        number: 2,
        fill: |v, head, base| {
            let pr = &mut v["pullRequest"];
            pr["fromRef"]["latestCommit"] = head.into();
            pr["fromRef"]["displayId"] = "feature".into();
            pr["fromRef"]["id"] = "refs/heads/feature".into();
            pr["toRef"]["displayId"] = "main".into();
            pr["toRef"]["id"] = "refs/heads/main".into();
            pr["toRef"]["latestCommit"] = base.into();
        },
        close: |v| v["pullRequest"]["state"] = "DECLINED".into(),
        fork: |v| {
            let from = &mut v["pullRequest"]["fromRef"]["repository"];
            from["slug"] = "my-repo".into();
            from["project"]["key"] = "~MALLORY".into();
        },
    })
    .await;
}

/// Bitbucket Cloud keeps no pull ref: the source branch is fetched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bitbucket_cloud_pull_request_builds_its_source_branch() {
    run(Case {
        host: "bitbucket",
        provider: Some("bitbucket"),
        repo: "brydzewski/foo",
        fixture: "bitbucket/goscm__pr_created.json",
        build_event: "pullrequest:created",
        close_event: "pullrequest:fulfilled",
        pull_ref: "refs/heads/pr-source",
        number: 1,
        fill: |v, head, base| {
            let pr = &mut v["pullrequest"];
            pr["source"]["commit"]["hash"] = head.into();
            pr["source"]["branch"]["name"] = "feature".into();
            pr["destination"]["branch"]["name"] = "main".into();
            pr["destination"]["commit"]["hash"] = base.into();
        },
        close: |v| v["pullrequest"]["state"] = "MERGED".into(),
        fork: |v| {
            v["pullrequest"]["source"]["repository"]["full_name"] = "mallory/foo".into();
        },
    })
    .await;
}
