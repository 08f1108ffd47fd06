//! The management API of SPEC §5 against the real server: listing builds
//! and pipelines, rebuilding a build and triggering a branch, with real git
//! repositories and real step processes.

use crate::common;
use crate::gitserve;

use common::{TestServer, ZERO, client};
use gitserve::Upstream;
use serde_json::{Value, json};

const SECRET: &str = "api-secret";
const ADMIN: &str = "api-admin-token";

/// A pipeline whose one step prints what it was asked to build.
fn pipeline(clone_url: Option<&str>) -> String {
    let toml = common::pipeline_toml(SECRET);
    let toml = match clone_url {
        Some(url) => toml.clone_url(url),
        None => toml,
    };
    toml.step(
        "show",
        r#"echo "commit=$HOOKCI_COMMIT branch=$HOOKCI_BRANCH message=$HOOKCI_COMMIT_MESSAGE"; cat marker.txt"#,
    )
    .to_string()
}

async fn start(pipelines: &[(&str, &str)], parallel: usize) -> TestServer {
    TestServer::start(pipelines, |c| {
        c.max_parallel_builds = parallel;
        c.admin_token = Some(hookci::secret::Secret::new(ADMIN));
    })
    .await
}

async fn get(server: &TestServer, path: &str) -> (u16, Value) {
    let res = client()
        .get(server.url(path))
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.expect("a JSON answer"))
}

async fn post(server: &TestServer, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let mut req = client()
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.expect("a JSON answer"))
}

fn log(server: &TestServer, id: i64) -> String {
    let path = server.config.data_dir.join(format!("logs/{id}.log"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ids(list: &Value) -> Vec<i64> {
    list["builds"]
        .as_array()
        .expect("builds")
        .iter()
        .map(|b| b["id"].as_i64().expect("id"))
        .collect()
}

/// Queues one build of `branch` at a made-up commit (nothing runs).
async fn queue(server: &TestServer, branch: &str, n: u32) -> i64 {
    let commit = format!("{n:040x}");
    let body = common::github_push(
        "/nonexistent",
        &format!("refs/heads/{branch}"),
        ZERO,
        &commit,
        "queued",
    );
    common::queue_github(&server.base(), "hello", SECRET, &format!("d-{n}"), &body).await[0]
}

#[tokio::test]
async fn builds_are_listed_newest_first_filtered_and_paged() {
    let server = start(&[("hello", &pipeline(None))], 0).await;
    let a = queue(&server, "main", 1).await;
    let b = queue(&server, "dev", 2).await;
    let c = queue(&server, "main", 3).await;

    let (status, all) = get(&server, "/api/builds").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(ids(&all), vec![c, b, a]);
    let first = &all["builds"][0];
    assert_eq!(first["pipeline"], "hello");
    assert_eq!(first["branch"], "main");
    assert_eq!(first["status"], "queued");
    assert_eq!(first["commit"], format!("{:040x}", 3));
    assert_eq!(first["url"], server.url(&format!("/builds/{c}")));
    assert_eq!(all["next_before"], Value::Null, "one page holds them all");

    let (_, main) = get(&server, "/api/builds?branch=main").await;
    assert_eq!(ids(&main), vec![c, a]);
    let (_, dev) = get(
        &server,
        "/api/builds?pipeline=hello&branch=dev&status=queued",
    )
    .await;
    assert_eq!(ids(&dev), vec![b]);
    let (_, none) = get(&server, "/api/builds?status=success").await;
    assert_eq!(ids(&none), Vec::<i64>::new());
    let (_, other) = get(&server, "/api/builds?pipeline=other").await;
    assert_eq!(ids(&other), Vec::<i64>::new());

    // Paging: two at a time, then from where the first page ended.
    let (_, page1) = get(&server, "/api/builds?limit=2").await;
    assert_eq!(ids(&page1), vec![c, b]);
    assert_eq!(page1["next_before"], json!(b));
    let (_, page2) = get(&server, &format!("/api/builds?limit=2&before={b}")).await;
    assert_eq!(ids(&page2), vec![a]);
    assert_eq!(page2["next_before"], Value::Null);

    for (query, word) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("status=green", "status"),
        ("before=-3", "before"),
    ] {
        let (status, err) = get(&server, &format!("/api/builds?{query}")).await;
        assert_eq!(status, 400, "{query}: {err}");
        assert!(
            err["error"].as_str().expect("error").contains(word),
            "{query}: {err}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn pipelines_are_listed_with_their_latest_build() {
    let server = start(
        &[
            ("hello", &pipeline(None)),
            ("quiet", &pipeline(Some("/srv/quiet.git"))),
        ],
        0,
    )
    .await;
    let id = queue(&server, "main", 7).await;
    let (status, list) = get(&server, "/api/pipelines").await;
    assert_eq!(status, 200, "{list}");
    let pipelines = list["pipelines"].as_array().expect("pipelines");
    let names: Vec<&str> = pipelines
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["hello", "quiet"]);
    assert_eq!(pipelines[0]["repo"], "Codertocat/Hello-World");
    assert_eq!(pipelines[0]["concurrency"], "queue");
    assert_eq!(pipelines[0]["steps"], json!(["show"]));
    assert_eq!(pipelines[0]["last_build"]["id"], json!(id));
    assert_eq!(pipelines[0]["last_build"]["status"], "queued");
    assert_eq!(pipelines[1]["last_build"], Value::Null);
    server.stop().await;
}

#[tokio::test]
async fn private_servers_list_nothing_without_the_token() {
    let server = TestServer::start(&[("hello", &pipeline(None))], |c| {
        c.max_parallel_builds = 0;
        c.private = true;
        c.admin_token = Some(hookci::secret::Secret::new(ADMIN));
    })
    .await;
    for path in ["/api/builds", "/api/pipelines", "/api/runners"] {
        let res = client()
            .get(server.url(path))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 401, "{path}");
        // RFC 9110: a 401 names its scheme; Basic lets a browser that
        // opened a page of this server send the token here too.
        assert_eq!(
            res.headers()["www-authenticate"],
            "Basic realm=\"hookci\", charset=\"UTF-8\"",
            "{path}"
        );
        let res = client()
            .get(server.url(path))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 200, "{path}");
        // Browsers send Basic credentials: any user, the token as password.
        let res = client()
            .get(server.url(path))
            .basic_auth("me", Some(ADMIN))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 200, "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_finished_build_is_rebuilt_at_the_same_commit() {
    let up = Upstream::new("hello");
    let first = up.push(&[("marker.txt", "first\n")], "first commit");
    let server = start(&[("hello", &pipeline(Some(&up.url())))], 1).await;
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &first, "first commit");
    let id = common::queue_github(&server.base(), "hello", SECRET, "r-1", &body).await[0];
    let done = common::wait_final(&server.base(), id).await;
    assert_eq!(done["status"], "success", "{done}");
    // The branch moves on; a rebuild still builds the first commit.
    up.push(&[("marker.txt", "second\n")], "second commit");

    let path = format!("/api/builds/{id}/rebuild");
    let (status, err) = post(&server, &path, None, "").await;
    assert_eq!(status, 401, "{err}");
    let (status, err) = post(&server, &path, Some("wrong"), "").await;
    assert_eq!(status, 401, "{err}");
    for bad in ["9999", "0", "-1", "abc", "%FF"] {
        let (status, err) = post(
            &server,
            &format!("/api/builds/{bad}/rebuild"),
            Some(ADMIN),
            "",
        )
        .await;
        assert_eq!(status, 404, "{bad}: {err}");
        assert_eq!(err["error"], "no such build", "{bad}");
        let (status, err) = get(&server, &format!("/api/builds/{bad}")).await;
        assert_eq!(
            (status, err["error"].as_str()),
            (404, Some("no such build")),
            "{bad}"
        );
    }

    let (status, answer) = post(&server, &path, Some(ADMIN), "").await;
    assert_eq!(status, 202, "{answer}");
    let again = answer["id"].as_i64().expect("id");
    assert!(again > id);
    assert_eq!(answer["url"], server.url(&format!("/builds/{again}")));
    assert_eq!(answer["rebuild_of"], json!(id));
    let rebuilt = common::wait_final(&server.base(), again).await;
    assert_eq!(rebuilt["status"], "success", "{rebuilt}");
    assert_eq!(rebuilt["commit"], first.as_str());
    assert_eq!(rebuilt["branch"], "main");
    assert_eq!(rebuilt["attempt"], 1);
    let text = log(&server, again);
    assert!(
        text.contains(&format!("commit={first} branch=main")),
        "{text}"
    );
    assert!(text.contains("\nfirst\n"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn a_build_still_queued_is_not_rebuilt() {
    let server = start(&[("hello", &pipeline(None))], 0).await;
    let id = queue(&server, "main", 1).await;
    let (status, err) = post(
        &server,
        &format!("/api/builds/{id}/rebuild"),
        Some(ADMIN),
        "",
    )
    .await;
    assert_eq!(status, 409, "{err}");
    assert!(
        err["error"].as_str().expect("error").contains("queued"),
        "{err}"
    );
    let (_, list) = get(&server, "/api/builds").await;
    assert_eq!(ids(&list), vec![id], "nothing new was queued");
    server.stop().await;
}

#[tokio::test]
async fn a_trigger_builds_the_branch_head_with_its_message() {
    let up = Upstream::new("hello");
    up.push(&[("marker.txt", "old\n")], "older commit");
    let head = up.push(&[("marker.txt", "head\n")], "the head of main");
    let server = start(&[("hello", &pipeline(Some(&up.url())))], 1).await;
    let path = "/api/pipelines/hello/trigger";

    let (status, err) = post(&server, path, None, r#"{"branch":"main"}"#).await;
    assert_eq!(status, 401, "{err}");
    let (status, err) = post(
        &server,
        "/api/pipelines/nope/trigger",
        Some(ADMIN),
        r#"{"branch":"main"}"#,
    )
    .await;
    assert_eq!(status, 404, "{err}");
    for body in ["", "{}", r#"{"branch": 3}"#, "not json"] {
        let (status, err) = post(&server, path, Some(ADMIN), body).await;
        assert_eq!(status, 400, "{body}: {err}");
    }
    for bad in ["", "a..b", "-x/../y", "with space", "ends.lock"] {
        let body = json!({ "branch": bad }).to_string();
        let (status, err) = post(&server, path, Some(ADMIN), &body).await;
        assert_eq!(status, 400, "{bad:?}: {err}");
    }
    let huge = format!(r#"{{"branch":"{}"}}"#, "a".repeat(3 << 20));
    let (status, err) = post(&server, path, Some(ADMIN), &huge).await;
    assert_eq!(status, 413, "{err}");
    let (status, err) = post(
        &server,
        "/api/pipelines/%FF/trigger",
        Some(ADMIN),
        r#"{"branch":"main"}"#,
    )
    .await;
    assert_eq!(status, 404, "{err}");
    let (status, err) = post(&server, path, Some(ADMIN), r#"{"branch":"gone"}"#).await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"], "the repository has no branch gone");
    let (_, list) = get(&server, "/api/builds").await;
    assert_eq!(ids(&list), Vec::<i64>::new(), "refusals queue nothing");

    let (status, answer) = post(&server, path, Some(ADMIN), r#"{"branch":"main"}"#).await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["id"].as_i64().expect("id");
    let done = common::wait_final(&server.base(), id).await;
    assert_eq!(done["status"], "success", "{done}");
    assert_eq!(done["commit"], head.as_str());
    assert_eq!(done["ref"], "refs/heads/main");
    assert_eq!(done["event"], "push");
    let text = log(&server, id);
    assert!(
        text.contains(&format!(
            "commit={head} branch=main message=the head of main"
        )),
        "{text}"
    );
    assert!(text.contains("\nhead\n"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn a_trigger_needs_somewhere_to_clone_from() {
    let server = start(&[("hello", &pipeline(None))], 0).await;
    let (status, err) = post(
        &server,
        "/api/pipelines/hello/trigger",
        Some(ADMIN),
        r#"{"branch":"main"}"#,
    )
    .await;
    assert_eq!(status, 409, "{err}");
    assert!(
        err["error"].as_str().expect("error").contains("clone_url"),
        "{err}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_trigger_never_clones_an_untrusted_url_of_the_latest_push() {
    // No clone_url and no host: a payload's clone URL (here a local path)
    // is never fetched, by the build nor by a manual trigger.
    let up = Upstream::new("hello");
    let first = up.push(&[("marker.txt", "one\n")], "one");
    let server = start(&[("hello", &pipeline(None))], 1).await;
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &first, "one");
    let id = common::queue_github(&server.base(), "hello", SECRET, "t-1", &body).await[0];
    let done = common::wait_final(&server.base(), id).await;
    assert_eq!(done["status"], "error", "{done}");
    let reason = done["reason"].as_str().unwrap_or("");
    assert!(reason.contains("set clone_url"), "{reason}");
    let (status, answer) = post(
        &server,
        "/api/pipelines/hello/trigger",
        Some(ADMIN),
        r#"{"branch":"main"}"#,
    )
    .await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or("")
            .contains("set clone_url"),
        "{answer}"
    );
    server.stop().await;
}

/// A fetch that fails for another reason than a missing branch is a 502 in
/// one sentence: what git said (here, a path on the build box) stays in the
/// daemon's log.
#[tokio::test]
async fn a_trigger_whose_fetch_fails_answers_502_without_gits_words() {
    let dir = tempfile::tempdir().expect("tmp");
    let missing = dir.path().join("no-such-repository.git");
    let url = missing.display().to_string();
    let server = start(&[("hello", &pipeline(Some(&url)))], 1).await;
    let (status, err) = post(
        &server,
        "/api/pipelines/hello/trigger",
        Some(ADMIN),
        r#"{"branch":"main"}"#,
    )
    .await;
    assert_eq!(status, 502, "{err}");
    assert_eq!(
        err["error"],
        "the repository could not be fetched; the daemon's log says why"
    );
    assert!(!err.to_string().contains("no-such-repository"), "{err}");
    let (_, list) = get(&server, "/api/builds").await;
    assert_eq!(
        ids(&list),
        Vec::<i64>::new(),
        "a failed trigger queues nothing"
    );
    server.stop().await;
}

/// A write as a browser sends it: `headers` as given (Origin,
/// Sec-Fetch-Site, Content-Type), with the admin token as the pages' own
/// script sends it, so that only the checks of where a request comes from
/// stand between a forged one and the write.
async fn browser_post(
    server: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let mut req = client()
        .post(server.url(path))
        .bearer_auth(ADMIN)
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.expect("a JSON answer"))
}

#[tokio::test]
async fn writes_from_another_site_are_refused_even_with_the_admin_token() {
    let up = Upstream::new("cross-site");
    up.push(&[("marker.txt", "x\n")], "first");
    let server = start(&[("hello", &pipeline(Some(&up.url())))], 0).await;
    let id = queue(&server, "main", 1).await;
    let trigger = "/api/pipelines/hello/trigger";
    let cancel = format!("/api/builds/{id}/cancel");
    let json = ("content-type", "application/json");
    let forged: [&[(&str, &str)]; 4] = [
        &[
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "cross-site"),
            json,
        ],
        &[("origin", "https://evil.example"), json],
        &[("sec-fetch-site", "same-site"), json],
        &[("origin", "null"), json],
    ];
    for headers in forged {
        for path in [trigger, &cancel, &format!("/api/builds/{id}/rebuild")] {
            let (status, answer) =
                browser_post(&server, path, headers, r#"{"branch":"main"}"#).await;
            assert_eq!(status, 403, "{path} {headers:?}: {answer}");
            let sentence = answer["error"].as_str().expect("a sentence");
            assert!(sentence.contains("another site"), "{sentence}");
        }
    }
    // A text/plain body (what a cross-site form can send) is not JSON,
    // whatever it holds.
    let (status, answer) = browser_post(
        &server,
        trigger,
        &[("content-type", "text/plain")],
        r#"{"branch":"main","x":"="}"#,
    )
    .await;
    assert_eq!(status, 415, "{answer}");
    let (status, answer) = browser_post(&server, trigger, &[], r#"{"branch":"main"}"#).await;
    assert_eq!(status, 415, "no Content-Type: {answer}");
    let (_, list) = get(&server, "/api/builds").await;
    assert_eq!(ids(&list), vec![id], "nothing was queued");
    assert_eq!(
        list["builds"][0]["status"], "queued",
        "nothing was cancelled"
    );

    // The pages' own script: same origin, JSON.
    let own = server.base();
    let (status, answer) = browser_post(
        &server,
        &cancel,
        &[("origin", &own), ("sec-fetch-site", "same-origin"), json],
        "{}",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = browser_post(
        &server,
        trigger,
        &[("origin", &own), ("sec-fetch-site", "same-origin"), json],
        r#"{"branch":"main"}"#,
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    // A client that is not a browser (curl, hookci) sends neither header.
    let (status, answer) = post(
        &server,
        &format!("/api/builds/{id}/rebuild"),
        Some(ADMIN),
        "",
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    // Webhooks come from other sites by nature.
    let body = common::github_push(
        "/nonexistent",
        "refs/heads/main",
        ZERO,
        &"b".repeat(40),
        "m",
    );
    let res = client()
        .post(server.url("/hooks/hello"))
        .header("origin", "https://github.com")
        .header("sec-fetch-site", "cross-site")
        .header("x-github-event", "push")
        .header("x-github-delivery", "cross-site-hook")
        .header("x-hub-signature-256", common::hub_sha256(SECRET, &body))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("hook");
    assert_eq!(res.status().as_u16(), 202);
    server.stop().await;
}

#[tokio::test]
async fn writes_refuse_a_browsers_basic_credentials_so_no_other_site_can_forge_one() {
    let server = TestServer::start(&[("hello", &pipeline(None))], |c| {
        c.max_parallel_builds = 0;
        c.private = true;
        c.admin_token = Some(hookci::secret::Secret::new(ADMIN));
    })
    .await;
    let body = common::github_push(
        "/nonexistent/repo.git",
        "refs/heads/main",
        ZERO,
        &"c".repeat(40),
        "queued",
    );
    let id = common::queue_github(&server.base(), "hello", SECRET, "basic-1", &body).await[0];
    // What a cross-site form post carries when the browser holds Basic
    // credentials for this server (a private server's pages ask for them),
    // from a browser that sends no Origin or Sec-Fetch-Site (those are
    // refused before the token is looked at: see the test above).
    for path in [
        format!("/api/builds/{id}/cancel"),
        format!("/api/builds/{id}/rebuild"),
        "/api/pipelines/hello/trigger".to_owned(),
    ] {
        let res = client()
            .post(server.url(&path))
            .basic_auth("me", Some(ADMIN))
            .header("content-type", "text/plain")
            .body(r#"{"branch":"main","x":"="}"#)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 401, "{path}");
        let err: Value = res.json().await.expect("json");
        assert!(
            err["error"].as_str().is_some_and(|e| e.contains("Bearer")),
            "{err}"
        );
    }
    // Nothing changed: the build is still queued, nothing else queued.
    let res = client()
        .get(server.url(&format!("/api/builds/{id}")))
        .basic_auth("me", Some(ADMIN))
        .send()
        .await
        .expect("read");
    assert_eq!(res.status(), 200, "reads still take Basic");
    let b: Value = res.json().await.expect("json");
    assert_eq!(b["status"], "queued", "{b}");
    let (status, _) = post(
        &server,
        &format!("/api/builds/{id}/cancel"),
        Some(ADMIN),
        "",
    )
    .await;
    assert_eq!(status, 200, "Bearer works");
    let res = client()
        .get(server.url("/api/builds"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("list");
    let list: Value = res.json().await.expect("json");
    assert_eq!(list["builds"].as_array().map(Vec::len), Some(1), "{list}");
    server.stop().await;
}
