//! The build page in a real browser: Debian's headless Chromium, driven
//! over the DevTools protocol, against the real server running a real
//! build. The page's script runs only if the page's Content-Security-Policy
//! allows it by hash, so this also checks the policy.
//!
//! With `CI=true` a missing `chromium` fails the test; elsewhere it is
//! skipped with a message.

use crate::common;
use crate::gitserve;

use common::{TestServer, ZERO};
use gitserve::Upstream;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

const SECRET: &str = "browser-webhook-secret";
const ADMIN: &str = "browser-admin-token-51f0";

/// Chromium, killed (by its pid) and its profile removed when dropped.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    port: u16,
    /// The browser's DevTools websocket.
    ws: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium() -> Option<std::path::PathBuf> {
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::var_os("PATH")?
            .to_str()?
            .split(':')
            .map(|dir| std::path::Path::new(dir).join(name))
            .find(|p| p.is_file())
    })
}

impl Browser {
    fn start(bin: &std::path::Path) -> Browser {
        let profile = tempfile::tempdir().expect("a profile dir");
        let mut child = Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--remote-debugging-port=0",
                "--window-size=1000,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let (port, ws) = loop {
            let line = lines
                .next()
                .expect("chromium printed its DevTools address")
                .expect("stderr");
            if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                let port = rest
                    .split('/')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .expect("a port");
                break (port, format!("ws://127.0.0.1:{}", rest.trim()));
            }
        };
        // Keep reading so that chromium never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        Browser {
            child,
            _profile: profile,
            port,
            ws,
        }
    }

    /// A DevTools connection to a new page of the browser.
    fn page(&self) -> Cdp {
        let mut browser = Cdp::connect(&self.ws);
        let target = browser
            .call("Target.createTarget", json!({ "url": "about:blank" }))
            .expect("a new page");
        let id = target["targetId"].as_str().expect("a target id");
        Cdp::connect(&format!("ws://127.0.0.1:{}/devtools/page/{id}", self.port))
    }
}

/// One DevTools session.
struct Cdp {
    ws: WebSocket<TcpStream>,
    next: u64,
}

impl Cdp {
    fn connect(url: &str) -> Cdp {
        let addr = url
            .strip_prefix("ws://")
            .and_then(|r| r.split('/').next())
            .expect("a ws:// URL");
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let (ws, _) = tungstenite::client(url, stream).expect("websocket");
        Cdp { ws, next: 0 }
    }

    /// Calls `method` and returns its result (events in between are
    /// dropped); `Err` is the protocol's error.
    fn call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next += 1;
        let id = self.next;
        let msg = json!({ "id": id, "method": method, "params": params });
        self.ws.send(Message::text(msg.to_string())).expect("send");
        loop {
            let msg = self.ws.read().expect("a DevTools message");
            let Message::Text(text) = msg else { continue };
            let v: Value = serde_json::from_str(text.as_str()).expect("json");
            if v["id"] == id {
                return match v.get("error") {
                    Some(e) => Err(e.clone()),
                    None => Ok(v["result"].clone()),
                };
            }
        }
    }

    /// The value of a JavaScript expression in the page (awaited when it
    /// is a promise); `Err` when it threw or the page navigated meanwhile.
    fn eval(&mut self, expr: &str) -> Result<Value, String> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expr, "awaitPromise": true, "returnByValue": true }),
            )
            .map_err(|e| e.to_string())?;
        if let Some(ex) = r.get("exceptionDetails") {
            return Err(ex.to_string());
        }
        Ok(r["result"]["value"].clone())
    }

    /// Waits (bounded) until `cond` is true in the page: the page itself
    /// checks it on every animation frame, so no test-side polling; a page
    /// that navigates meanwhile is asked again.
    fn wait_for(&mut self, cond: &str) {
        eprintln!("browser: waiting for {cond}");
        let until = Instant::now() + Duration::from_secs(60);
        let probe = format!(
            "new Promise(function (r) {{ var t0 = Date.now(); (function f() {{ \
               try {{ if ({cond}) return r(true); }} catch (e) {{}} \
               if (Date.now() - t0 > 10000) return r(false); \
               requestAnimationFrame(f); }})(); }})"
        );
        loop {
            match self.eval(&probe) {
                Ok(Value::Bool(true)) => return,
                Ok(_) => {}
                // The page navigated while it checked.
                Err(_) => self.wait_load(),
            }
            assert!(Instant::now() < until, "never true in the page: {cond}");
        }
    }

    /// Waits for the page's next load event (after a navigation or reload
    /// the script started).
    fn wait_load(&mut self) {
        loop {
            let msg = self.ws.read().expect("a DevTools message");
            let Message::Text(text) = msg else { continue };
            let v: Value = serde_json::from_str(text.as_str()).expect("json");
            if v["method"] == "Page.loadEventFired" {
                return;
            }
        }
    }
}

fn pipeline(steps: &str) -> String {
    common::pipeline_toml(SECRET).raw_steps(steps).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_follows_a_running_build_sees_colours_and_re_runs_it() {
    let Some(bin) = chromium() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium is not installed (apt-get install chromium)"
        );
        eprintln!("skipped: chromium is not installed");
        return;
    };
    let dir = tempfile::tempdir().expect("a temp dir");
    let (go1, go2) = (dir.path().join("go1"), dir.path().join("go2"));
    let steps = format!(
        "[[steps]]\nname = \"first\"\nrun = '''\n\
         printf '\\033[31mred <b>words</b>\\033[0m\\n'\n\
         while [ ! -e {} ]; do sleep 0.05; done\n'''\n\
         [[steps]]\nname = \"second\"\nrun = '''\n\
         echo second-step\n\
         while [ ! -e {} ]; do sleep 0.05; done\n'''\n",
        go1.display(),
        go2.display()
    );
    let up = Upstream::new("browser");
    let server = TestServer::start(
        &[("app", &common::with_clone_url(&up.url(), &pipeline(&steps)))],
        |c| {
            c.max_parallel_builds = 1;
            c.admin_token = Some(hookci::secret::Secret::new(ADMIN));
            // The steps watch for their go files from the sandbox.
            c.sandbox.read_only = Some(vec![dir.path().to_path_buf()]);
        },
    )
    .await;
    let commit = up.push(&[("README", "x\n")], "browser");
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "browser");
    let id = common::queue_github(&server.base(), "app", SECRET, "browser-1", &body).await[0];
    common::wait_build(&server.base(), id, |b| b["steps"][0]["status"] == "running").await;
    let url = server.url(&format!("/builds/{id}"));

    let (go1c, go2c) = (go1.clone(), go2.clone());
    let base = server.base();
    tokio::task::spawn_blocking(move || {
        let browser = Browser::start(&bin);
        eprintln!("browser: started on port {}", browser.port);
        let mut page = browser.page();
        eprintln!("browser: page connected");
        page.call("Page.enable", json!({})).expect("Page.enable");
        page.call("Page.navigate", json!({ "url": url }))
            .expect("navigate");
        page.wait_for("document.readyState === 'complete' && document.getElementById('step-rows')");
        // A mark that a reload would lose.
        page.eval("window.__still_here = 1").expect("mark");

        // The log's colour is a styled span, its markup text.
        page.wait_for("document.querySelector('#sec-0 span.f1')");
        let span = page
            .eval(
                "(function () { var s = document.querySelector('#sec-0 span.f1'); \
                 return [s.textContent, getComputedStyle(s).color, s.children.length]; })()",
            )
            .expect("the span");
        assert_eq!(span[0], "red <b>words</b>", "{span}");
        assert_eq!(span[1], "rgb(255, 123, 114)", "styled by the sheet: {span}");
        assert_eq!(span[2], 0, "no markup from the log: {span}");

        // The first step ends: the table, the headings and the log follow
        // without a reload.
        std::fs::write(&go1c, "").expect("go1");
        page.wait_for(
            "document.querySelector('#step-rows tr:nth-child(1) .st').textContent === 'success' && \
             document.querySelector('#step-rows tr:nth-child(2) .st').textContent === 'running' && \
             document.querySelector('#sum-1 .st-running') && \
             document.querySelector('#sec-1 .lines').textContent.indexOf('second-step') >= 0",
        );
        assert_eq!(
            page.eval("window.__still_here").expect("mark"),
            json!(1),
            "the page was not reloaded"
        );

        // The build ends: the page shows its final state.
        std::fs::write(&go2c, "").expect("go2");
        page.wait_for("document.getElementById('head-st').textContent === 'success'");
        // At its end the page reloads into its final form, the one with the
        // re-run button: wait for that document, not the one being replaced.
        page.wait_for(
            "document.readyState === 'complete' && document.getElementById('token') && \
             document.querySelector('button[data-post$=\"/rebuild\"]')",
        );

        // Re-run, with the token pasted into the page's form.
        page.eval(&format!(
            "document.getElementById('token').value = '{ADMIN}'; \
             document.getElementById('token-save').click(); 1"
        ))
        .expect("token");
        page.eval("document.querySelector('button[data-post$=\"/rebuild\"]').click(); 1")
            .expect("click");
        let next = id + 1;
        page.wait_for(&format!(
            "location.pathname === '/builds/{next}' && \
             document.getElementById('facts').textContent.indexOf('rebuild of #{id}') >= 0"
        ));
        drop(page);
        drop(browser);
        let _ = base;
    })
    .await
    .expect("the browser session");
    // The re-run is a real build; let it end before the server stops.
    common::wait_final(&server.base(), id + 1).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_re_runs_a_failed_build_from_its_failed_step() {
    let Some(bin) = chromium() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium is not installed (apt-get install chromium)"
        );
        eprintln!("skipped: chromium is not installed");
        return;
    };
    // `flaky` fails in build 1 only.
    let steps = "[[steps]]\nname = \"prepare\"\nrun = \"true\"\n\
         [[steps]]\nname = \"flaky\"\nrun = 'test \"$HOOKCI_BUILD_ID\" != 1'\n";
    let up = Upstream::new("browser-resume");
    let server = TestServer::start(
        &[("app", &common::with_clone_url(&up.url(), &pipeline(steps)))],
        |c| {
            c.max_parallel_builds = 1;
            c.admin_token = Some(hookci::secret::Secret::new(ADMIN));
        },
    )
    .await;
    let commit = up.push(&[("README", "x\n")], "resume");
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "resume");
    let id = common::queue_github(&server.base(), "app", SECRET, "browser-r1", &body).await[0];
    assert_eq!(id, 1, "a fresh store numbers its first build 1");
    let b = common::wait_final(&server.base(), id).await;
    assert_eq!(b["status"], "failure", "{b}");
    let url = server.url(&format!("/builds/{id}"));
    tokio::task::spawn_blocking(move || {
        let browser = Browser::start(&bin);
        let mut page = browser.page();
        page.call("Page.enable", json!({})).expect("Page.enable");
        page.call("Page.navigate", json!({ "url": url }))
            .expect("navigate");
        let button = "document.querySelector('button[data-post$=\"/rebuild?from=failed\"]')";
        page.wait_for(&format!(
            "document.readyState === 'complete' && document.getElementById('token') && {button}"
        ));
        page.eval(&format!(
            "document.getElementById('token').value = '{ADMIN}'; \
             document.getElementById('token-save').click(); {button}.click(); 1"
        ))
        .expect("click");
        // The new build's page says what it is; once it has run, its
        // first step shows as skipped, where it passed.
        page.wait_for(&format!(
            "location.pathname === '/builds/{next}' && document.getElementById('facts') && \
             document.getElementById('facts').textContent.indexOf('rebuild of #{id} from step flaky') >= 0 && \
             document.querySelector('#step-rows tr:nth-child(1)') && \
             document.querySelector('#step-rows tr:nth-child(1)').textContent.indexOf('passed in #{id}') >= 0",
            next = id + 1
        ));
        drop(page);
        drop(browser);
    })
    .await
    .expect("the browser session");
    let again = common::wait_final(&server.base(), id + 1).await;
    assert_eq!(again["status"], "success", "{again}");
    server.stop().await;
}

/// A fork's pull request waits; its page's Approve button runs it. The
/// delivery is the recorded GitHub `opened` payload with
/// `pull_request.head.repo` changed to a fork (no recorded fork delivery
/// exists).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_approves_a_forks_pull_request() {
    let Some(bin) = chromium() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium is not installed (apt-get install chromium)"
        );
        eprintln!("skipped: chromium is not installed");
        return;
    };
    let up = Upstream::new("browser-approve");
    let main = up.push(&[("README", "x\n")], "base");
    let head = up.commit(&[("fork.txt", "x\n")], "from a fork");
    up.git(&["push", "-q", "origin", "HEAD:refs/pull/5/head"]);
    let steps =
        "[[trigger]]\npull_requests = [\"main\"]\n[[steps]]\nname = \"t\"\nrun = \"true\"\n";
    let server = TestServer::start(
        &[("app", &common::with_clone_url(&up.url(), &pipeline(steps)))],
        |c| {
            c.max_parallel_builds = 1;
            c.admin_token = Some(hookci::secret::Secret::new(ADMIN));
        },
    )
    .await;
    let mut v: Value = serde_json::from_slice(&common::fixture(
        "github/octokit__pull_request__opened.json",
    ))
    .unwrap();
    v["number"] = 5.into();
    v["pull_request"]["number"] = 5.into();
    v["pull_request"]["head"]["sha"] = head.as_str().into();
    v["pull_request"]["base"]["ref"] = "main".into();
    v["pull_request"]["base"]["sha"] = main.as_str().into();
    v["pull_request"]["head"]["repo"]["full_name"] = "mallory/Hello-World".into();
    v["pull_request"]["author_association"] = "NONE".into();
    let body = serde_json::to_vec(&v).unwrap();
    let res = common::client()
        .post(server.url("/hooks/app"))
        .header("X-GitHub-Event", "pull_request")
        .header("X-GitHub-Delivery", "browser-approve-1")
        .header("X-Hub-Signature-256", common::hub_sha256(SECRET, &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 202);
    let id = 1;
    assert_eq!(
        common::get_build(&server.base(), id).await.unwrap()["status"],
        "waiting"
    );
    let url = server.url(&format!("/builds/{id}"));
    tokio::task::spawn_blocking(move || {
        let browser = Browser::start(&bin);
        let mut page = browser.page();
        page.call("Page.enable", json!({})).expect("Page.enable");
        page.call("Page.navigate", json!({ "url": url }))
            .expect("navigate");
        let button = "document.querySelector('button[data-post$=\"/approve\"]')";
        page.wait_for(&format!(
            "document.readyState === 'complete' && document.getElementById('token') && {button}"
        ));
        page.eval(&format!(
            "document.getElementById('token').value = '{ADMIN}'; \
             document.getElementById('token-save').click(); {button}.click(); 1"
        ))
        .expect("click");
        page.wait_for("document.getElementById('head-st').textContent === 'success'");
        drop(page);
        drop(browser);
    })
    .await
    .expect("the browser session");
    let b = common::wait_final(&server.base(), id).await;
    assert_eq!(b["status"], "success", "{b}");
    assert_eq!(b["pull_request"]["fork"], true);
    server.stop().await;
}

/// The README's screenshots: `cargo test --test suite ui_browser -- --ignored`
/// writes docs/shots/{index,build}-{light,dark}.png and index-400px.png.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the README's screenshots"]
async fn screenshots() {
    let bin = chromium().expect("chromium");
    let app = "[[steps]]\nname = \"build\"\nrun = '''\n\
         echo '::group::Fetch dependencies'\n\
         for c in serde tokio axum maud; do printf '\\033[1;32m  Downloaded\\033[0m %s\\n' $c; done\n\
         echo '::endgroup::'\n\
         printf '\\033[1;32m   Compiling\\033[0m app v0.3.1\\n\\033[1;32m    Finished\\033[0m release in 41.2s\\n'\n'''\n\
         [[steps]]\nname = \"lint\"\nallow_failure = true\nrun = '''\n\
         printf '\\033[33mwarning\\033[0m: unused variable `x`\\n'\nexit 1\n'''\n\
         [[steps]]\nname = \"test\"\nrun = '''\n\
         printf 'running 3 tests\\ntest login::ok ... \\033[32mok\\033[0m\\ntest login::expired ... \\033[32mok\\033[0m\\n'\n\
         printf 'test login::lockout ... \\033[1;31mFAILED\\033[0m\\n\\n\\033[1mfailures:\\033[0m\\n  assertion failed: attempts < 5\\n'\nexit 101\n'''\n\
         [[steps]]\nname = \"deploy\"\nrun = \"true\"\n";
    let docs = "[[steps]]\nname = \"build\"\nrun = \"echo site built\"\n";
    let up = Upstream::new("shots");
    let server = TestServer::start(
        &[
            ("app", &common::with_clone_url(&up.url(), &pipeline(app))),
            ("docs", &common::with_clone_url(&up.url(), &pipeline(docs))),
        ],
        |c| {
            c.max_parallel_builds = 1;
            c.admin_token = Some(hookci::secret::Secret::new(ADMIN));
        },
    )
    .await;
    let mut last = 0;
    for (n, (name, branch, msg)) in [
        ("docs", "main", "Docs: describe the pipeline page"),
        ("app", "main", "Login: lock an account after five attempts"),
        (
            "app",
            "feature/sso",
            "SSO: accept the IdP's signed assertion",
        ),
        (
            "app",
            "main",
            "Login: count attempts per account, not per IP",
        ),
    ]
    .iter()
    .enumerate()
    {
        let commit = up.push(&[("README", &format!("{n}\n"))], msg);
        let body = common::github_push(
            &up.url(),
            &format!("refs/heads/{branch}"),
            ZERO,
            &commit,
            msg,
        );
        last = common::queue_github(&server.base(), name, SECRET, &format!("shot-{n}"), &body)
            .await[0];
        common::wait_final(&server.base(), last).await;
    }
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/shots");
    std::fs::create_dir_all(&shots).expect("docs/shots");
    let index = server.url("/");
    let build = server.url(&format!("/builds/{last}"));
    tokio::task::spawn_blocking(move || {
        use base64::Engine;
        let browser = Browser::start(&bin);
        let mut page = browser.page();
        page.call("Page.enable", json!({})).expect("Page.enable");
        for (file, url, scheme, width) in [
            ("index-light.png", &index, "light", 1000),
            ("index-dark.png", &index, "dark", 1000),
            ("index-400px.png", &index, "light", 400),
            ("build-light.png", &build, "light", 1000),
            ("build-dark.png", &build, "dark", 1000),
        ] {
            page.call(
                "Emulation.setEmulatedMedia",
                json!({ "features": [{ "name": "prefers-color-scheme", "value": scheme }] }),
            )
            .expect("media");
            page.call(
                "Emulation.setDeviceMetricsOverride",
                json!({ "width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 500 }),
            )
            .expect("metrics");
            page.call("Page.navigate", json!({ "url": url })).expect("navigate");
            page.wait_load();
            page.wait_for("document.readyState === 'complete'");
            let shot = page
                .call("Page.captureScreenshot", json!({ "format": "png" }))
                .expect("screenshot");
            let png = base64::engine::general_purpose::STANDARD
                .decode(shot["data"].as_str().expect("data"))
                .expect("base64");
            std::fs::write(shots.join(file), png).expect("write");
        }
    })
    .await
    .expect("the browser session");
    server.stop().await;
}
