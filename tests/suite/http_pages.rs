//! The HTML pages and the badge, end to end: real pushes to the real server,
//! real builds of real git repositories, the pages read as a browser gets
//! them. Most of what a page shows was written by whoever can push, so
//! several tests push markup and check that it arrives as text.

use crate::common;
use crate::gitserve;
use crate::report_fake;

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
    common::pipeline_toml(SECRET).raw_steps(steps).to_string()
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

/// The value of the first `NAME="..."` attribute in `html`.
fn attr(html: &str, name: &str) -> Option<String> {
    let open = format!(" {name}=\"");
    let start = html.find(&open)? + open.len();
    let end = html[start..].find('"')?;
    Some(html[start..start + end].to_owned())
}

/// A Server-Sent Events stream, read event by event.
struct Sse {
    res: reqwest::Response,
    buf: String,
}

impl Sse {
    async fn open(server: &TestServer, path: &str) -> Sse {
        let res = client().get(server.url(path)).send().await.expect("stream");
        assert_eq!(res.status().as_u16(), 200, "{path}");
        Sse {
            res,
            buf: String::new(),
        }
    }

    /// The first event that starts with `head` and whose text passes
    /// `want` (bounded).
    async fn until(&mut self, head: &str, want: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let event: String = self.buf.drain(..end + 2).collect();
                if event.starts_with(head) && want(&event) {
                    return event;
                }
            }
            let left = until.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.res.chunk())
                .await
                .unwrap_or_else(|_| panic!("no {head} in time: {}", self.buf))
                .expect("the stream")
                .unwrap_or_else(|| panic!("the stream ended before {head}: {}", self.buf));
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
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
    let server = start(
        &[("app", &common::with_clone_url(&up.url(), &pipeline(&steps)))],
        1,
    )
    .await;
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
    // Steps with their states and exit codes, each linking to its log
    // section.
    for (i, name) in ["greet", "fail", "after"].iter().enumerate() {
        assert!(
            html.contains(&format!("<a href=\"#sec-{i}\">{name}</a></td>")),
            "{name} in {html}"
        );
    }
    // The failing step's section is open and the page jumps to it; the
    // others are folded.
    assert!(
        html.contains("<details class=\"sec\" id=\"sec-1\" open data-jump=\"1\">"),
        "{html}"
    );
    assert!(
        html.contains("<details class=\"sec\" id=\"sec-0\">"),
        "{html}"
    );
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
    for raw in ["<script>alert", "<img src=x", "<b>bold"] {
        assert!(!html.contains(raw), "{raw} in {html}");
    }
    // The page's own script is its only one, and a finished build follows
    // nothing.
    assert_eq!(html.matches("<script").count(), 1, "{html}");
    assert!(!html.contains("data-live="), "{html}");
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
    let dir = tempfile::tempdir().expect("a temp dir");
    let go = dir.path().join("go");
    let steps = format!(
        "[sandbox]\nread_only = [\"{}\"]\n\
         [[steps]]\nname = \"long\"\nrun = '''\nprintf 'started-%s\\n' marker\n\
         while [ ! -e {} ]; do sleep 0.05; done\n\
         printf '\\033[1;31mafter-go <i>\\033[0m\\n'\n'''\n\
         [[steps]]\nname = \"second\"\nrun = \"echo second-step; sleep 41337\"\n",
        dir.path().display(),
        go.display()
    );
    let server = start(
        &[("app", &common::with_clone_url(&up.url(), &pipeline(&steps)))],
        1,
    )
    .await;
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
    let live = attr(html, "data-live").expect("a live stream");
    assert!(
        live.starts_with(&format!("/builds/{id}/live?from=")),
        "{live}"
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
    // The running step's section is open, the next one is there to
    // receive its lines; a cancel button is there.
    assert!(
        html.contains("<details class=\"sec\" id=\"sec-1\">"),
        "{html}"
    );
    assert!(
        html.contains("<details class=\"sec\" id=\"sec-0\" open>"),
        "{html}"
    );
    assert!(
        html.contains(&format!("data-post=\"/api/builds/{id}/cancel\"")),
        "{html}"
    );

    // The stream the script opens sends the page's state, then the lines
    // after the page's part, rendered, once the step writes them.
    let mut stream = Sse::open(&server, &live.replace("&amp;", "&")).await;
    let state = stream
        .until("event: state", |s| s.contains("step-rows"))
        .await;
    assert!(state.contains("st-running"), "{state}");
    std::fs::write(&go, "").expect("the go file");
    let log = stream.until("event: log", |s| s.contains("after-go")).await;
    assert!(
        log.contains("<span class=\\\"f1 bo\\\">after-go &lt;i&gt;</span>"),
        "{log}"
    );
    assert!(!log.contains("started-marker"), "only new lines: {log}");
    // The next step's lines go to its section; the step table and the
    // section headings follow without a reload.
    let log = stream
        .until("event: log", |s| s.contains("second-step"))
        .await;
    assert!(log.contains("{\"s\":\"1\"}"), "a new section: {log}");
    let state = stream
        .until("event: state", |s| s.contains("\"sum-1\":\"<span class=\\\"sum\\\"><span class=\\\"name\\\">second</span><span class=\\\"st st-running"))
        .await;
    assert!(
        state.contains("\"sum-0\":\"<span class=\\\"sum\\\"><span class=\\\"name\\\">long</span><span class=\\\"st st-success"),
        "{state}"
    );

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
    assert!(!page.body.contains("data-live="), "{}", page.body);
    assert!(!page.body.contains("http-equiv"), "{}", page.body);
    // The stream ends, telling the page to reload.
    stream
        .until("event: end", |s| s.contains("cancelled"))
        .await;
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
        html.contains(&format!(
            "data-live=\"/builds/{id}/live?from=0&amp;line=1&amp;sec=setup&amp;grp=0&amp;n=0\""
        )),
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
            "[![build]({0}/badge/app.svg)]({0}/pipelines/app)",
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

    // Filters by status, event and branch, kept in the paging link.
    let page = get(&server, "/?status=queued&event=push&branch=main").await;
    let (_, builds) = page.body.split_once("<h2>Builds").expect("builds");
    assert!(builds.contains(&link(ids[51])), "{builds}");
    assert!(!builds.contains(&link(other)), "another branch: {builds}");
    assert!(
        builds.contains(&format!(
            "href=\"/?branch=main&amp;status=queued&amp;event=push&amp;before={}\"",
            ids[2]
        )),
        "{builds}"
    );
    assert!(
        builds.contains("<option value=\"queued\" selected>"),
        "{builds}"
    );
    for path in ["/?event=tag", "/?status=success"] {
        let page = get(&server, path).await;
        let (_, builds) = page.body.split_once("<h2>Builds").expect("builds");
        assert!(builds.contains("No builds."), "{path}: {builds}");
    }
    // The page follows the index's change stream.
    assert!(page.body.contains("data-index-live=\"/live\""));

    for path in ["/?before=abc", "/?status=bogus"] {
        let page = get(&server, path).await;
        assert_eq!(page.status, 400, "{}", page.body);
        assert_html_headers(&page);
    }
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
    let server = start(
        &[("app", &common::with_clone_url(&up.url(), &pipeline(steps)))],
        1,
    )
    .await;
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
        assert_eq!(
            page.body.matches("<script").count(),
            1,
            "{path}: {}",
            page.body
        );
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
        "/runners".to_owned(),
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
    let server = start(
        &[("app", &common::with_clone_url(&up.url(), &pipeline(steps)))],
        1,
    )
    .await;
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
    assert!(html.contains(&format!("<a href=\"/api/builds/{id}/log\">whole log</a>")));
    assert!(
        html.len() < 1024 * 1024,
        "the page embeds the last few thousand lines: {}",
        html.len()
    );
    // Line numbers go on from the part not shown.
    let raw = client()
        .get(server.url(&format!("/api/builds/{id}/log")))
        .send()
        .await
        .expect("log")
        .text()
        .await
        .expect("text");
    let last_no = raw[..raw.find("\nLAST-LINE\n").expect("last") + 1]
        .matches('\n')
        .count()
        + 1;
    assert!(
        html.contains(&format!(
            "<div id=\"L{last_no}\"><a href=\"#L{last_no}\">{last_no}</a>LAST-LINE</div>"
        )),
        "line {last_no}"
    );
    // "Show earlier output" fetches the parts before, the first line last.
    let mut src = attr(html, "data-src")
        .expect("an earlier part")
        .replace("&amp;", "&");
    let mut parts = 0;
    let first = loop {
        parts += 1;
        assert!(parts < 40, "too many parts");
        let part = get(&server, &src).await;
        assert_eq!(part.status, 200, "{}", part.body);
        assert_html_headers(&part);
        if part.body.contains("FIRST-LINE") {
            assert!(
                attr(&part.body, "data-next").is_none(),
                "the first part ends it"
            );
            break part.body;
        }
        src = attr(&part.body, "data-next")
            .expect("a next part")
            .replace("&amp;", "&");
    };
    assert!(parts >= 2, "{parts}");
    let first_no = raw[..raw.find("\nFIRST-LINE\n").expect("first") + 1]
        .matches('\n')
        .count()
        + 1;
    assert!(
        first.contains(&format!(
            "<div id=\"L{first_no}\"><a href=\"#L{first_no}\">{first_no}</a>FIRST-LINE</div>"
        )),
        "line {first_no}: {}",
        &first[..first.len().min(3000)]
    );
    let bad = get(&server, &format!("/builds/{id}/log?before=x")).await;
    assert_eq!(bad.status, 400);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_page_tells_the_truth_colours_folds_allowed_failures_links_and_host_words() {
    let host = FakeHost::start((0..20).map(|_| Reply::Status(201)).collect()).await;
    let up = Upstream::new("truth");
    let first = up.push(&[("README", "x\n")], "first");
    let commit = up.push(&[("README", "y\n")], "second");
    let steps = format!(
        "[status]\nprovider = \"github\"\napi_url = \"{}\"\ntoken = \"{STATUS_TOKEN}\"\n\
         [[steps]]\nname = \"colour\"\nrun = '''\n\
         printf '\\033[1;32m<b>green</b>\\033[0m plain\\n'\n\
         printf '::group::Deps <x>\\ninside-group\\n::endgroup::\\noutside-group\\n'\n'''\n\
         [[steps]]\nname = \"lint\"\nrun = \"exit 1\"\nallow_failure = true\n\
         [[steps]]\nname = \"after\"\nrun = \"true\"\n",
        host.url()
    );
    let server = start(
        &[("app", &common::with_clone_url(&up.url(), &pipeline(&steps)))],
        1,
    )
    .await;
    let body = common::github_push(&up.url(), "refs/heads/main", &first, &commit, "truth");
    let id = deliver(&server, "app", &body, "truth-1").await;
    common::wait_build(&server.base(), id, |b| {
        b["status"] == "success"
            && b["reports"].as_array().is_some_and(|r| {
                r.iter()
                    .any(|r| r["outcome"] == "delivered" && r["state"] == "success")
            })
    })
    .await;

    let page = get(&server, &format!("/builds/{id}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let html = &page.body;
    // Colours as classes, the pushed markup inside them as text.
    assert!(
        html.contains("<span class=\"f2 bo\">&lt;b&gt;green&lt;/b&gt;</span> plain</div>"),
        "{html}"
    );
    // The group folds: its title is a summary, its lines inside, the
    // markers gone.
    let fold = html
        .split_once("<details class=\"grp\">")
        .expect("a fold")
        .1;
    let fold = &fold[..fold.find("</details>").expect("its end")];
    assert!(fold.contains("</a>Deps &lt;x&gt;</summary>"), "{fold}");
    assert!(fold.contains("inside-group"), "{fold}");
    assert!(!fold.contains("outside-group"), "{fold}");
    assert!(!html.contains("::group::") && !html.contains("::endgroup::"));
    // Numbered lines, each its own anchor.
    assert!(
        html.contains("<div id=\"L1\"><a href=\"#L1\">1</a>==&gt; hookci build"),
        "{html}"
    );
    // The allowed failure is not a red failure in a green build, and the
    // page does not jump to it.
    assert!(html.contains("class=\"st st-allowed\""), "{html}");
    assert!(!html.contains("class=\"st st-failure\""), "{html}");
    assert!(!html.contains("data-jump="), "{html}");
    // The commit and the push link to the host.
    let web = "https://github.com/Codertocat/Hello-World";
    assert!(
        html.contains(&format!("href=\"{web}/commit/{commit}\"")),
        "{html}"
    );
    assert!(
        html.contains(&format!("href=\"{web}/compare/{first}...{commit}\"")),
        "{html}"
    );
    // Relative times, the absolute one on hover.
    assert!(
        html.contains(" UTC\">just now</time>") || html.contains(" s ago</time>"),
        "{html}"
    );
    // The reports in GitHub's words: queued and running were `pending`.
    assert!(
        html.contains("title=\"hookci: pending\">pending</td>"),
        "{html}"
    );
    assert!(
        html.contains("title=\"hookci: success\">success</td>"),
        "{html}"
    );
    // A re-run button for a finished build.
    assert!(
        html.contains(&format!("data-post=\"/api/builds/{id}/rebuild\"")),
        "{html}"
    );
    assert!(html.contains("id=\"token\""), "{html}");

    // A rebuild says what it rebuilds and who asked.
    let res = client()
        .post(server.url(&format!("/api/builds/{id}/rebuild")))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("rebuild");
    assert_eq!(res.status().as_u16(), 202);
    let again: serde_json::Value = res.json().await.expect("json");
    let again = again["id"].as_i64().expect("an id");
    let page = get(&server, &format!("/builds/{again}")).await;
    assert!(
        page.body.contains(&format!(
            "rebuild of <a href=\"/builds/{id}\">#{id}</a>, by admin"
        )),
        "{}",
        page.body
    );
    assert!(!page.body.contains("Pushed by"), "{}", page.body);
    // The pushed build says nothing of the kind.
    let page = get(&server, &format!("/builds/{id}")).await;
    assert!(!page.body.contains("rebuild of"), "{}", page.body);
    common::wait_final(&server.base(), again).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_page_lists_each_branch_with_its_latest_build_and_can_trigger_one() {
    let server = start(&[("app", &pipeline(NOOP))], 0).await;
    let mut last = std::collections::HashMap::new();
    for (n, branch) in ["main", "feature/<x>", "main"].iter().enumerate() {
        let body = common::github_push(
            "/nonexistent/repo.git",
            &format!("refs/heads/{branch}"),
            ZERO,
            &format!("{:040x}", n + 1),
            &format!("change {n}"),
        );
        last.insert(
            *branch,
            deliver(&server, "app", &body, &format!("p-{n}")).await,
        );
    }
    let page = get(&server, "/pipelines/app").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_html_headers(&page);
    let html = &page.body;
    let (branches, recent) = html.split_once("Recent builds").expect("two tables");
    assert!(
        branches.contains(&format!("href=\"/builds/{}\"", last["main"])),
        "{branches}"
    );
    assert!(
        branches.contains(&format!("href=\"/builds/{}\"", last["feature/<x>"])),
        "{branches}"
    );
    assert_eq!(
        branches.matches("href=\"/builds/").count(),
        2,
        "one per branch: {branches}"
    );
    assert!(branches.contains("feature/&lt;x&gt;"), "{branches}");
    assert!(
        branches.contains("href=\"/?pipeline=app&amp;branch=feature%2F%3Cx%3E\""),
        "{branches}"
    );
    assert_eq!(recent.matches("href=\"/builds/").count(), 3, "{recent}");
    assert!(
        html.contains("data-post=\"/api/pipelines/app/trigger\""),
        "{html}"
    );
    assert!(
        html.contains("data-branch-from=\"trigger-branch\""),
        "{html}"
    );
    let page = get(&server, "/pipelines/nope").await;
    assert_eq!(page.status, 404);
    server.stop().await;

    // Without an admin token, no buttons: the page says how to set one.
    let server = TestServer::start(&[("app", &pipeline(NOOP))], |c| {
        c.max_parallel_builds = 0;
    })
    .await;
    let page = get(&server, "/pipelines/app").await;
    assert!(!page.body.contains("data-post="), "{}", page.body);
    assert!(page.body.contains("HOOKCI_ADMIN_TOKEN"), "{}", page.body);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_stream_says_when_a_build_is_queued() {
    let server = start(&[("app", &pipeline(NOOP))], 0).await;
    let page = get(&server, "/").await;
    assert!(
        page.body.contains("data-index-live=\"/live\""),
        "{}",
        page.body
    );
    let mut stream = Sse::open(&server, "/live").await;
    // The stream has read the store once: a push now is a change.
    stream.until("event: ready", |_| true).await;
    let body = common::github_push(
        "/nonexistent/repo.git",
        "refs/heads/main",
        ZERO,
        &"b".repeat(40),
        "x",
    );
    deliver(&server, "app", &body, "live-index-1").await;
    stream.until("event: changed", |_| true).await;
    // An open stream would hold the server's shutdown until its drain
    // timeout.
    drop(stream);
    server.stop().await;
}

/// The log of build `id` over the API.
async fn log_text(server: &TestServer, id: i64) -> String {
    client()
        .get(server.url(&format!("/api/builds/{id}/log")))
        .send()
        .await
        .expect("log")
        .text()
        .await
        .expect("log text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_build_re_runs_from_its_failed_step_and_says_what_it_skipped() {
    let up = Upstream::new("resume");
    let commit = up.push(&[("README", "x\n")], "resume");
    // `build` leaves a file in the workspace; `test` fails in build 1 only
    // and says whether that file is there.
    let steps = "[[steps]]\nname = \"build\"\nrun = \"echo made > built.txt; echo BUILD-RAN-$HOOKCI_BUILD_ID\"\n\
         [[steps]]\nname = \"lint\"\nrun = \"exit 1\"\nallow_failure = true\n\
         [[steps]]\nname = \"test\"\nrun = '''\n# the test\n\
         if test -e built.txt; then echo found-built.$HOOKCI_BUILD_ID; else echo missing-built.$HOOKCI_BUILD_ID; fi\n\
         test \"$HOOKCI_BUILD_ID\" != 1\n'''\n\
         [[steps]]\nname = \"after\"\nrun = \"echo AFTER-RAN-$HOOKCI_BUILD_ID\"\n";
    let toml = common::with_clone_url(&up.url(), &pipeline(steps));
    let server = start(&[("app", &toml)], 1).await;
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "resume");
    let id = deliver(&server, "app", &body, "resume-1").await;
    assert_eq!(id, 1, "a fresh store numbers its first build 1");
    let first = common::wait_final(&server.base(), id).await;
    assert_eq!(first["status"], "failure", "{first}");
    assert!(log_text(&server, id).await.contains("found-built.1"));

    // The failed build's page offers a re-run from `test`, and says that
    // the earlier steps' files will not be there.
    let page = get(&server, &format!("/builds/{id}")).await;
    let html = &page.body;
    assert!(
        html.contains(&format!(
            "data-post=\"/api/builds/{id}/rebuild?from=failed\""
        )),
        "{html}"
    );
    assert!(html.contains("Re-run from test</button>"), "{html}");
    assert!(
        html.contains("their files are not in the fresh checkout"),
        "{html}"
    );

    // The API: the token is needed, and `from` takes one word.
    let url = server.url(&format!("/api/builds/{id}/rebuild?from=failed"));
    let res = client().post(&url).send().await.expect("rebuild");
    assert_eq!(res.status().as_u16(), 401);
    let res = client()
        .post(server.url(&format!("/api/builds/{id}/rebuild?from=lint")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("rebuild");
    assert_eq!(res.status().as_u16(), 400);
    let err: serde_json::Value = res.json().await.expect("json");
    assert!(
        err["error"].as_str().is_some_and(|e| e.contains("failed")),
        "{err}"
    );
    let res = client()
        .post(&url)
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("rebuild");
    assert_eq!(res.status().as_u16(), 202);
    let answer: serde_json::Value = res.json().await.expect("json");
    assert_eq!(answer["rebuild_of"], id, "{answer}");
    assert_eq!(answer["from_step"], "test", "{answer}");
    let again = answer["id"].as_i64().expect("an id");

    // It skips what passed (saying where), runs from `test` on, in a fresh
    // checkout without the file `build` made.
    let b = common::wait_final(&server.base(), again).await;
    assert_eq!(b["status"], "success", "{b}");
    let steps: Vec<(String, String, Option<String>)> = b["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_owned(),
                s["status"].as_str().unwrap_or_default().to_owned(),
                s["reason"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let want =
        |n: &str, st: &str, r: Option<&str>| (n.to_owned(), st.to_owned(), r.map(str::to_owned));
    assert_eq!(
        steps,
        vec![
            want("build", "skipped", Some("passed in #1")),
            want("lint", "skipped", Some("failed in #1, allowed to fail")),
            want("test", "success", None),
            want("after", "success", None),
        ]
    );
    let log = log_text(&server, again).await;
    assert!(!log.contains("BUILD-RAN-2"), "{log}");
    assert!(
        log.contains("==> step build: skipped, passed in #1"),
        "{log}"
    );
    assert!(log.contains("missing-built.2"), "{log}");
    assert!(log.contains("AFTER-RAN-2"), "{log}");

    // Its page says what it is, why the steps were skipped, and that their
    // files are not there; a build that passed has no such button.
    let page = get(&server, &format!("/builds/{again}")).await;
    let html = &page.body;
    assert!(
        html.contains(&format!(
            "rebuild of <a href=\"/builds/{id}\">#{id}</a> from step <code>test</code>, by admin"
        )),
        "{html}"
    );
    assert!(
        html.contains("<span class=\"muted reason\">passed in #1</span>"),
        "{html}"
    );
    assert!(
        html.contains("files they made in the earlier build are not there"),
        "{html}"
    );
    assert!(!html.contains("from=failed"), "{html}");
    let res = client()
        .post(server.url(&format!("/api/builds/{again}/rebuild?from=failed")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("rebuild");
    assert_eq!(res.status().as_u16(), 409);
    server.stop().await;

    // Without an admin token: no button, and the page says how to set one.
    let server = TestServer::start(&[("app", &toml)], |c| c.max_parallel_builds = 1).await;
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "resume 2");
    let id = deliver(&server, "app", &body, "resume-2").await;
    assert_eq!(
        common::wait_final(&server.base(), id).await["status"],
        "failure"
    );
    let page = get(&server, &format!("/builds/{id}")).await;
    assert!(!page.body.contains("from=failed"), "{}", page.body);
    assert!(!page.body.contains("data-post="), "{}", page.body);
    assert!(page.body.contains("HOOKCI_ADMIN_TOKEN"), "{}", page.body);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_triggered_builds_page_shows_its_origin_palette_colours_and_step_durations_in_either_scheme_and_on_a_phone()
 {
    let up = Upstream::new("looks");
    up.push(&[("README", "x\n")], "looks");
    let steps = "[[steps]]\nname = \"paint\"\nrun = '''\n# paint\n\
         printf '\\033[38;5;208mamber\\033[0m \\033[4;38;2;255;0;0mred-underlined\\033[0m\\n'\n'''\n";
    let toml = common::with_clone_url(&up.url(), &pipeline(steps));
    let server = start(&[("app", &toml)], 1).await;
    let res = client()
        .post(server.url("/api/pipelines/app/trigger"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(r#"{"branch":"main"}"#)
        .send()
        .await
        .expect("trigger");
    assert_eq!(res.status().as_u16(), 202);
    let answer: serde_json::Value = res.json().await.expect("json");
    let id = answer["id"].as_i64().expect("an id");
    let b = common::wait_final(&server.base(), id).await;
    assert_eq!(b["status"], "success", "{b}");

    let page = get(&server, &format!("/builds/{id}")).await;
    let html = &page.body;
    // A manual trigger says so, and names no pusher.
    assert!(
        html.contains("<dt>Triggered</dt><dd>by admin</dd>"),
        "{html}"
    );
    // The 256-colour palette, 24-bit colour (as the palette's nearest) and
    // underline, as classes.
    assert!(html.contains("<span class=\"f208\">amber</span>"), "{html}");
    assert!(
        html.contains("<span class=\"f196 un\">red-underlined</span>"),
        "{html}"
    );
    // The step's section heading has its result and duration.
    assert!(
        html.contains(
            "<span class=\"sum\"><span class=\"name\">paint</span><span class=\"st st-success\">success</span><span class=\"dur\">"
        ),
        "{html}"
    );
    // Dark mode follows the system; a phone gets the narrow layout, in
    // which the index's wide columns fold away.
    for path in [format!("/builds/{id}"), "/".to_owned()] {
        let page = get(&server, &path).await;
        let style = page.element("style").expect("a style sheet");
        assert!(
            style.contains("@media (prefers-color-scheme:dark)"),
            "{path}"
        );
        assert!(style.contains("@media (max-width:640px)"), "{path}");
        assert!(
            page.body
                .contains("<meta name=\"color-scheme\" content=\"light dark\">"),
            "{path}"
        );
        assert!(
            page.body.contains(
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            ),
            "{path}"
        );
    }
    let index = get(&server, "/").await;
    assert!(
        index.body.contains("<th class=\"wide\">Pipeline</th>"),
        "{}",
        index.body
    );
    assert!(index.body.contains("<td class=\"wide\">"), "{}", index.body);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_stream_says_when_a_queued_build_ends() {
    let server = start(&[("app", &pipeline(NOOP))], 0).await;
    let body = common::github_push(
        "/nonexistent/repo.git",
        "refs/heads/main",
        ZERO,
        &"d".repeat(40),
        "to cancel",
    );
    let id = deliver(&server, "app", &body, "live-index-end").await;
    let mut stream = Sse::open(&server, "/live").await;
    stream.until("event: ready", |_| true).await;
    let res = client()
        .post(server.url(&format!("/api/builds/{id}/cancel")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("cancel");
    assert_eq!(res.status().as_u16(), 200);
    stream.until("event: changed", |_| true).await;
    drop(stream);
    server.stop().await;
}

/// Each numbered line's (text, time in ms) on a page or in a live event
/// (HTML); the time is `None` for a line shown without one.
fn timed_lines(html: &str) -> Vec<(String, Option<u64>)> {
    let html = html.replace("\\\"", "\"");
    let mut out = Vec::new();
    let mut rest = html.as_str();
    while let Some(at) = rest.find("<div id=\"L") {
        rest = &rest[at..];
        let (Some(a), Some(end)) = (rest.find("</a>"), rest.find("</div>")) else {
            break;
        };
        let mut inner = &rest[a + 4..end];
        let mut ms = None;
        if let Some(ts) = inner.strip_prefix("<span class=\"ts\" data-ms=\"") {
            let (num, after) = ts.split_once('"').expect("data-ms");
            ms = Some(num.parse().expect("a number of ms"));
            inner = after.split_once("</span>").map_or(after, |(_, r)| r);
        }
        out.push((inner.to_owned(), ms));
        rest = &rest[end..];
    }
    out
}

/// The times of the lines `names`, in that order, from `lines`.
fn times_of(lines: &[(String, Option<u64>)], names: &[&str]) -> Vec<Option<u64>> {
    names
        .iter()
        .map(|n| {
            lines
                .iter()
                .find(|(text, _)| text == n)
                .unwrap_or_else(|| panic!("no line {n} in {lines:?}"))
                .1
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_times_show_on_request_in_order_and_spaced_as_written() {
    let up = Upstream::new("times");
    let commit = up.push(&[("README", "x\n")], "times");
    // The pauses are the step's: what the times must show.
    let steps = "[[steps]]\nname = \"paced\"\nrun = 'echo tick-one; sleep 0.7; echo tick-two; sleep 0.7; echo tick-three'\n";
    let server = start(
        &[("app", &common::with_clone_url(&up.url(), &pipeline(steps)))],
        1,
    )
    .await;
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "times");
    let id = deliver(&server, "app", &body, "times-1").await;
    assert_eq!(
        common::wait_final(&server.base(), id).await["status"],
        "success"
    );

    let names = ["tick-one", "tick-two", "tick-three"];
    let page = get(&server, &format!("/builds/{id}?times=1")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let lines = timed_lines(&page.body);
    assert!(lines.iter().all(|(_, t)| t.is_some()), "{lines:?}");
    let t: Vec<u64> = times_of(&lines, &names).into_iter().flatten().collect();
    assert!(t[0] <= t[1] && t[1] <= t[2], "{t:?}");
    // 0.7 s apart as written; loose, for a loaded machine.
    for gap in [t[1] - t[0], t[2] - t[1]] {
        assert!((400..5000).contains(&gap), "{t:?}");
    }
    // The times read as elapsed time, and the page offers to hide them.
    assert!(page.body.contains(">0:0"), "{}", page.body);
    assert!(
        page.body.contains(&format!(
            "<a id=\"times\" href=\"/builds/{id}\">Hide times</a>"
        )),
        "{}",
        page.body
    );

    // Without asking: no times anywhere, and a link that asks.
    let plain = get(&server, &format!("/builds/{id}")).await;
    assert!(!plain.body.contains("class=\"ts\""), "{}", plain.body);
    assert!(
        plain
            .body
            .contains(&format!("href=\"/builds/{id}?times=1\"")),
        "{}",
        plain.body
    );
    assert!(
        times_of(&timed_lines(&plain.body), &names)
            .iter()
            .all(Option::is_none)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_page_with_times_streams_lines_with_their_times() {
    let up = Upstream::new("livetimes");
    let commit = up.push(&[("README", "x\n")], "live times");
    let dir = tempfile::tempdir().expect("a temp dir");
    let go = dir.path().join("go");
    let steps = format!(
        "[sandbox]\nread_only = [\"{}\"]\n\
         [[steps]]\nname = \"gated\"\nrun = '''\nprintf '%s-go\\n' before\n\
         while [ ! -e {} ]; do sleep 0.05; done\nprintf '%s-go\\n' after\n'''\n",
        dir.path().display(),
        go.display()
    );
    let server = start(
        &[("app", &common::with_clone_url(&up.url(), &pipeline(&steps)))],
        1,
    )
    .await;
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "lt");
    let id = deliver(&server, "app", &body, "lt-1").await;
    // The markers come from printf, so hookci's step line, which echoes
    // the script, does not hold them: this waits for the step's output.
    wait_log(&server, id, "before-go").await;

    let page = get(&server, &format!("/builds/{id}?times=1")).await;
    let live = attr(&page.body, "data-live")
        .expect("a live stream")
        .replace("&amp;", "&");
    assert!(live.ends_with("&t=1"), "{live}");
    let before = times_of(&timed_lines(&page.body), &["before-go"])[0].expect("a time");
    let plain = get(&server, &format!("/builds/{id}")).await;
    let plain_live = attr(&plain.body, "data-live")
        .expect("a live stream")
        .replace("&amp;", "&");
    assert!(!plain_live.contains("t=1"), "{plain_live}");

    let mut timed = Sse::open(&server, &live).await;
    let mut untimed = Sse::open(&server, &plain_live).await;
    std::fs::write(&go, "").expect("go");
    let event = timed.until("event: log", |e| e.contains("after-go")).await;
    let after = times_of(&timed_lines(&event), &["after-go"])[0].expect("a time in the stream");
    assert!(after >= before, "{before} {after}");
    let event = untimed
        .until("event: log", |e| e.contains("after-go"))
        .await;
    assert!(!event.contains("class=\\\"ts\\\""), "{event}");
    common::wait_final(&server.base(), id).await;
    server.stop().await;
}
