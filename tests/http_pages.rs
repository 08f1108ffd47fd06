//! The HTML pages and the badge, end to end: real pushes to the real server,
//! real builds of real git repositories, the pages read as a browser gets
//! them. Most of what a page shows was written by whoever can push, so
//! several tests push markup and check that it arrives as text.

mod common;
#[path = "support/gitserve.rs"]
mod gitserve;
mod report_fake;

use common::{TestServer, ZERO, client};
use gitserve::Upstream;
use report_fake::{FakeHost, Reply};
use std::time::{Duration, Instant};

const SECRET: &str = "pages-webhook-secret";
const ADMIN: &str = "pages-admin-token-7c1d";
/// A pipeline that builds nothing of interest (most tests only queue).
const NOOP: &str = "[[steps]]\nname = \"t\"\nrun = \"true\"\n";
const STATUS_TOKEN: &str = "ghp_pages_status_token_42";

fn pipeline(steps: &str) -> String {
    format!("repo = \"Codertocat/Hello-World\"\nsecret = \"{SECRET}\"\n{steps}")
}

async fn start(pipelines: &[(&str, &str)], parallel: usize) -> TestServer {
    TestServer::start(pipelines, |c| {
        c.max_parallel_builds = parallel;
        c.admin_token = Some(hookci::secret::Secret::new(ADMIN));
    })
    .await
}

async fn deliver(server: &TestServer, name: &str, body: &[u8], delivery: &str) -> i64 {
    common::queue_github(&server.base(), name, SECRET, delivery, body).await[0]
}

/// A page as a browser gets it: status, headers, body.
struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Page {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The text of the first `<tag>…</tag>` in the body.
    fn element(&self, tag: &str) -> Option<&str> {
        let open = format!("<{tag}>");
        let start = self.body.find(&open)? + open.len();
        let end = self.body[start..].find(&format!("</{tag}>"))?;
        Some(&self.body[start..start + end])
    }
}

async fn get(server: &TestServer, path: &str) -> Page {
    fetch(client().get(server.url(path))).await
}

async fn fetch(request: reqwest::RequestBuilder) -> Page {
    let res = request.send().await.expect("the page answers");
    Page {
        status: res.status().as_u16(),
        headers: res.headers().clone(),
        body: res.text().await.expect("a body"),
    }
}

/// `text` as HTML shows it (what the page must contain for pushed text).
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `'sha256-BASE64'` of `text`, as a Content-Security-Policy allows it.
fn csp_hash(text: &str) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
    )
}

/// Checks the headers every HTML answer carries.
fn assert_html_headers(page: &Page) {
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    assert_eq!(page.header("x-content-type-options"), "nosniff");
    let csp = page.header("content-security-policy");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
}

/// Polls the log over the API until it contains `needle` (bounded).
async fn wait_log(server: &TestServer, id: i64, needle: &str) {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let text = client()
            .get(server.url(&format!("/api/builds/{id}/log")))
            .send()
            .await
            .expect("log")
            .text()
            .await
            .expect("log text");
        if text.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < until,
            "the log never showed {needle}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_builds_page_shows_status_steps_reports_and_log_with_pushed_markup_as_text() {
    // The host refuses every status with markup in its answer.
    let host = FakeHost::start(
        (0..10)
            .map(|_| Reply::Answer {
                status: 422,
                headers: vec![("content-type", "text/plain".to_owned())],
                body: "<script>alert(3)</script>".to_owned(),
            })
            .collect(),
    )
    .await;
    let up = Upstream::new("escape");
    let commit = up.push(&[("README", "x\n")], "escape");
    let steps = format!(
        "[status]\nprovider = \"github\"\napi_url = \"{}\"\ntoken = \"{STATUS_TOKEN}\"\n\
         [[steps]]\nname = \"greet\"\nrun = \"printf '<script>alert(2)</script>\\\\n'\"\n\
         [[steps]]\nname = \"fail\"\nrun = \"exit 3\"\n\
         [[steps]]\nname = \"after\"\nrun = \"true\"\n",
        host.url()
    );
    let server = start(&[("app", &pipeline(&steps))], 1).await;
    let branch = "<script>alert(1)</script>";
    let message = "<img src=x onerror=alert(1)> fix\n\nbody <b>bold</b>";
    let body = common::github_push(
        &up.url(),
        &format!("refs/heads/{branch}"),
        ZERO,
        &commit,
        message,
    );
    let id = deliver(&server, "app", &body, "escape-1").await;
    let b = common::wait_build(&server.base(), id, |b| {
        b["status"] == "failure"
            && b["reports"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["last_error"].is_string()))
    })
    .await;

    let page = get(&server, &format!("/builds/{id}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_html_headers(&page);
    let html = &page.body;
    // Status, reason, attempt, the commit (short, full in its title).
    assert!(html.contains("class=\"st st-failure\""), "{html}");
    let reason = b["reason"].as_str().expect("a reason");
    assert!(html.contains(&escaped(reason)), "{reason} in {html}");
    assert!(html.contains(&format!("title=\"{commit}\"")), "{html}");
    assert!(html.contains(&commit[..12]), "{html}");
    // Steps with their states and exit codes.
    for name in ["greet", "fail", "after"] {
        assert!(html.contains(&format!(">{name}</td>")), "{name} in {html}");
    }
    assert!(html.contains("class=\"st st-skipped\""), "{html}");
    assert!(html.contains("<td class=\"num\">3</td>"), "{html}");
    // The log's text.
    assert!(
        html.contains("&lt;script&gt;alert(2)&lt;/script&gt;"),
        "{html}"
    );
    // The report and the host's answer.
    assert!(html.contains("hookci/app"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(3)&lt;/script&gt;"),
        "{html}"
    );
    // The branch and the message, as text.
    assert!(html.contains(&escaped(branch)), "{html}");
    assert!(
        html.contains(&escaped("<img src=x onerror=alert(1)> fix")),
        "{html}"
    );
    assert!(html.contains("body &lt;b&gt;bold&lt;/b&gt;"), "{html}");
    // No pushed markup as markup, and a finished build runs no script.
    for raw in ["<script", "<img src=x", "<b>bold"] {
        assert!(!html.contains(raw), "{raw} in {html}");
    }
    assert!(!html.contains("EventSource"), "{html}");
    // No secret of the config on the page.
    for secret in [SECRET, ADMIN, STATUS_TOKEN] {
        assert!(!html.contains(secret), "{secret} in {html}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_builds_page_follows_its_log_with_a_script_its_policy_allows() {
    let up = Upstream::new("live");
    let commit = up.push(&[("README", "x\n")], "live");
    let steps = "[[steps]]\nname = \"long\"\nrun = \"echo started-marker; sleep 41337\"\n";
    let server = start(&[("app", &pipeline(steps))], 1).await;
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "live");
    let id = deliver(&server, "app", &body, "live-1").await;
    common::wait_build(&server.base(), id, |b| b["steps"][0]["status"] == "running").await;
    wait_log(&server, id, "started-marker").await;

    let page = get(&server, &format!("/builds/{id}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_html_headers(&page);
    let html = &page.body;
    assert!(html.contains("class=\"st st-running\""), "{html}");
    assert!(html.contains("started-marker"), "the log so far: {html}");
    let stream = format!("/api/builds/{id}/log/stream");
    assert!(
        html.contains(&format!("data-stream=\"{stream}\"")),
        "{html}"
    );
    let script = page.element("script").expect("a script");
    assert!(script.contains("new EventSource("), "{script}");
    assert!(script.contains("location.reload()"), "{script}");
    // The browser runs the script and applies the style only if the
    // page's policy allows them.
    let csp = page.header("content-security-policy");
    assert!(csp.contains(&csp_hash(script)), "{csp}");
    let style = page.element("style").expect("a style sheet");
    assert!(csp.contains(&csp_hash(style)), "{csp}");
    // Without a script, the page reloads itself.
    assert!(
        html.contains("<noscript><meta http-equiv=\"refresh\""),
        "{html}"
    );

    // The stream the script opens sends the log.
    let mut res = client()
        .get(server.url(&stream))
        .send()
        .await
        .expect("stream");
    assert_eq!(res.status().as_u16(), 200);
    let mut seen = String::new();
    let until = Instant::now() + Duration::from_secs(30);
    while !seen.contains("started-marker") {
        assert!(Instant::now() < until, "{seen}");
        let chunk = tokio::time::timeout(Duration::from_secs(30), res.chunk())
            .await
            .expect("a chunk in time")
            .expect("the stream")
            .expect("not ended");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(res);

    // Cancelled, the page shows the final state and follows nothing.
    let res = client()
        .post(server.url(&format!("/api/builds/{id}/cancel")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("cancel");
    assert_eq!(res.status().as_u16(), 202);
    common::wait_final(&server.base(), id).await;
    let page = get(&server, &format!("/builds/{id}")).await;
    assert!(
        page.body.contains("class=\"st st-cancelled\""),
        "{}",
        page.body
    );
    assert!(page.body.contains("cancelled by a user"), "{}", page.body);
    assert!(!page.body.contains("<script"), "{}", page.body);
    assert!(!page.body.contains("http-equiv"), "{}", page.body);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_build_has_a_page_that_follows_its_log_and_shows_on_the_badge() {
    let server = start(&[("app", &pipeline(NOOP))], 0).await;
    let badge = get(&server, "/badge/app.svg").await;
    assert!(badge.body.contains(">unknown</text>"), "{}", badge.body);
    let commit = "a".repeat(40);
    let body = common::github_push(
        "/nonexistent/repo.git",
        "refs/heads/main",
        ZERO,
        &commit,
        "q",
    );
    let id = deliver(&server, "app", &body, "queued-1").await;

    let page = get(&server, &format!("/builds/{id}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let html = &page.body;
    assert!(html.contains("class=\"st st-queued\""), "{html}");
    assert!(
        html.contains("<noscript><meta http-equiv=\"refresh\" content=\"10\"></noscript>"),
        "{html}"
    );
    assert!(
        html.contains(&format!("data-stream=\"/api/builds/{id}/log/stream\"")),
        "the stream waits for the build to start: {html}"
    );
    assert!(html.contains("new EventSource"), "{html}");

    let badge = get(&server, "/badge/app.svg").await;
    assert!(badge.body.contains(">queued</text>"), "{}", badge.body);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_lists_the_pipelines_and_the_newest_builds_with_a_link_to_older_ones() {
    let server = start(&[("app", &pipeline(NOOP)), ("other", &pipeline(NOOP))], 0).await;
    let mut ids = Vec::new();
    for n in 0..52 {
        let commit = format!("{:040x}", n + 1);
        let body = common::github_push(
            "/nonexistent/repo.git",
            "refs/heads/main",
            ZERO,
            &commit,
            &format!("change {n}"),
        );
        ids.push(deliver(&server, "app", &body, &format!("index-{n}")).await);
    }
    let body = common::github_push(
        "/nonexistent/repo.git",
        "refs/heads/feature/x",
        ZERO,
        &"f".repeat(40),
        "other change",
    );
    let other = deliver(&server, "other", &body, "index-other").await;
    let link = |id: i64| format!("href=\"/builds/{id}\"");

    let page = get(&server, "/").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_html_headers(&page);
    let (pipelines, builds) = page
        .body
        .split_once("<h2>Builds")
        .expect("a builds section");
    // Each pipeline, its repository, its latest build, its badge.
    assert!(pipelines.contains(">app</a>"), "{pipelines}");
    assert!(pipelines.contains(">other</a>"), "{pipelines}");
    assert!(pipelines.contains("Codertocat/Hello-World"), "{pipelines}");
    assert!(pipelines.contains(&link(ids[51])), "{pipelines}");
    assert!(pipelines.contains(&link(other)), "{pipelines}");
    assert!(
        pipelines.contains(&format!(
            "[![build]({0}/badge/app.svg)]({0}/?pipeline=app)",
            server.config.public_url
        )),
        "{pipelines}"
    );
    // The newest 50 builds, newest first, and a link to the older ones.
    let at = |id: i64| builds.find(&link(id));
    assert!(at(other).is_some() && at(ids[51]).is_some(), "{builds}");
    assert!(at(other) < at(ids[51]), "newest first: {builds}");
    assert!(at(ids[51]) < at(ids[50]), "newest first: {builds}");
    assert!(at(ids[3]).is_some(), "{builds}");
    assert!(at(ids[2]).is_none(), "50 builds a page: {builds}");
    assert!(builds.contains("feature/x"), "{builds}");
    assert!(builds.contains("change 51"), "the commit message: {builds}");
    let older = format!("href=\"/?before={}\"", ids[3]);
    assert!(builds.contains(&older), "{builds}");

    let page = get(&server, &format!("/?before={}", ids[3])).await;
    assert_eq!(page.status, 200);
    let (_, builds) = page.body.split_once("<h2>Builds").expect("builds");
    for id in &ids[..3] {
        assert!(builds.contains(&link(*id)), "{builds}");
    }
    assert!(!builds.contains(&link(ids[3])), "{builds}");
    assert!(!builds.contains("?before="), "no older page: {builds}");

    let page = get(&server, "/?pipeline=other").await;
    let (_, builds) = page.body.split_once("<h2>Builds").expect("builds");
    assert!(builds.contains(&link(other)), "{builds}");
    assert!(!builds.contains(&link(ids[51])), "{builds}");

    let page = get(&server, "/?before=abc").await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert_html_headers(&page);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_badge_shows_the_latest_finished_build_of_the_pipeline_or_of_one_branch() {
    let up = Upstream::new("badge");
    let good = up.push(&[("ok", "1\n")], "good");
    up.git(&["rm", "-q", "ok"]);
    let bad = up.commit(&[], "bad");
    up.git(&["push", "-q", "origin", "HEAD:refs/heads/broken"]);
    let steps = "[[steps]]\nname = \"test\"\nrun = \"test -e ok\"\n";
    let server = start(&[("app", &pipeline(steps))], 1).await;
    let badge = |query: &'static str| {
        let server = &server;
        async move {
            let page = get(server, &format!("/badge/app.svg{query}")).await;
            assert_eq!(page.status, 200, "{}", page.body);
            assert_eq!(page.header("content-type"), "image/svg+xml");
            assert_eq!(page.header("cache-control"), "no-cache");
            assert!(page.body.starts_with("<svg "), "{}", page.body);
            page.body
        }
    };
    let says = |svg: &str, word: &str| svg.contains(&format!(">{word}</text>"));

    let svg = badge("").await;
    assert!(says(&svg, "unknown"), "{svg}");

    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &good, "good");
    let id = deliver(&server, "app", &body, "badge-good").await;
    assert_eq!(
        common::wait_final(&server.base(), id).await["status"],
        "success"
    );
    let svg = badge("").await;
    assert!(says(&svg, "passing") && svg.contains("#4c1"), "{svg}");
    assert!(svg.contains("<title>app: build passing</title>"), "{svg}");

    let body = common::github_push(&up.url(), "refs/heads/broken", ZERO, &bad, "bad");
    let id = deliver(&server, "app", &body, "badge-bad").await;
    assert_eq!(
        common::wait_final(&server.base(), id).await["status"],
        "failure"
    );
    let svg = badge("").await;
    assert!(says(&svg, "failing") && svg.contains("#e05d44"), "{svg}");
    let svg = badge("?branch=main").await;
    assert!(says(&svg, "passing"), "main's latest: {svg}");
    let svg = badge("?branch=broken").await;
    assert!(says(&svg, "failing"), "{svg}");
    let svg = badge("?branch=nope").await;
    assert!(says(&svg, "unknown"), "{svg}");
    // The branch is in the title, as text.
    let svg = badge("?branch=%3Cx%3E%22").await;
    assert!(
        svg.contains("app on &lt;x&gt;&quot;: build unknown"),
        "{svg}"
    );
    assert!(!svg.contains("<x>"), "{svg}");

    for path in [
        "/badge/nope.svg",
        "/badge/app",
        "/badge/app.png",
        "/badge/.svg",
    ] {
        let page = get(&server, path).await;
        assert_eq!(page.status, 404, "{path}: {}", page.body);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_malformed_build_ids_get_a_404_page() {
    let server = start(&[("app", &pipeline(NOOP))], 0).await;
    for path in [
        "/builds/999999",
        "/builds/abc",
        "/builds/0",
        "/builds/-1",
        "/builds/1.5",
        "/builds/99999999999999999999999",
        "/builds/%FF",
        "/builds/%3Cscript%3E",
    ] {
        let page = get(&server, path).await;
        assert_eq!(page.status, 404, "{path}: {}", page.body);
        assert_html_headers(&page);
        assert!(page.body.contains("no such build"), "{path}: {}", page.body);
        assert!(!page.body.contains("<script"), "{path}: {}", page.body);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_server_asks_a_browser_for_the_admin_token_and_then_opens() {
    let server = TestServer::start(&[("app", &pipeline(NOOP))], |c| {
        c.max_parallel_builds = 0;
        c.private = true;
        c.admin_token = Some(hookci::secret::Secret::new(ADMIN));
    })
    .await;
    let body = common::github_push(
        "/nonexistent/repo.git",
        "refs/heads/main",
        ZERO,
        &"b".repeat(40),
        "p",
    );
    let id = deliver(&server, "app", &body, "private-1").await;
    let paths = [
        "/".to_owned(),
        format!("/builds/{id}"),
        "/badge/app.svg".to_owned(),
    ];
    for path in &paths {
        let page = get(&server, path).await;
        assert_eq!(page.status, 401, "{path}: {}", page.body);
        assert!(
            page.header("www-authenticate")
                .starts_with("Basic realm=\"hookci\""),
            "{path}: {:?}",
            page.headers
        );
        assert!(!page.body.contains("Hello-World"), "{path}: {}", page.body);

        let wrong = fetch(
            client()
                .get(server.url(path))
                .basic_auth("me", Some("wrong")),
        )
        .await;
        assert_eq!(wrong.status, 401, "{path}");

        let page = fetch(client().get(server.url(path)).basic_auth("me", Some(ADMIN))).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert!(
            !page.body.contains(ADMIN) && !page.body.contains(SECRET),
            "{path}: {}",
            page.body
        );

        let page = fetch(client().get(server.url(path)).bearer_auth(ADMIN)).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
    }
    // Whether a build exists is private too.
    let page = get(&server, "/builds/999999").await;
    assert_eq!(page.status, 401);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_log_is_embedded_by_its_end_with_a_link_to_the_whole_log() {
    let up = Upstream::new("long");
    let commit = up.push(&[("README", "x\n")], "long");
    let steps = "[[steps]]\nname = \"loud\"\n\
                 run = \"echo FIRST-LINE; yes 0123456789abcdef | head -c 1500000; echo; echo LAST-LINE\"\n";
    let server = start(&[("app", &pipeline(steps))], 1).await;
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "long");
    let id = deliver(&server, "app", &body, "long-1").await;
    let b = common::wait_final(&server.base(), id).await;
    assert_eq!(b["status"], "success", "{b}");

    let page = get(&server, &format!("/builds/{id}")).await;
    assert_eq!(page.status, 200);
    let html = &page.body;
    assert!(html.contains("LAST-LINE"), "the end of the log is shown");
    assert!(
        !html.contains("FIRST-LINE"),
        "the start of a long log is not"
    );
    assert!(html.contains(&format!(
        "<a href=\"/api/builds/{id}/log\">The whole log</a>"
    )));
    assert!(
        html.len() < 1024 * 1024 + 64 * 1024,
        "the page embeds about a MiB: {}",
        html.len()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_server_without_an_admin_token_refuses_its_pages_in_words() {
    let server = TestServer::start(&[("app", &pipeline(NOOP))], |c| {
        c.max_parallel_builds = 0;
        c.private = true;
    })
    .await;
    let page = get(&server, "/").await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert_html_headers(&page);
    assert!(page.body.contains("no admin token"), "{}", page.body);
    server.stop().await;
}
