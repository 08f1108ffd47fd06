//! Deliveries as a real GitHub sends them by default (form-encoded), and the
//! operator's log line for each delivery (issue 10).

use crate::common;
use crate::gitserve;

use common::{Daemon, TestServer, ZERO, client, fixture, hub_sha256};
use gitserve::Upstream;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

const SECRET: &str = "topsecret";

/// The one-step pipeline of the GitHub fixtures' repository.
static HELLO: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    common::pipeline_toml(SECRET)
        .step("test", "true")
        .to_string()
});

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

async fn post_form(server: &TestServer, body: &str, signature: &str) -> (u16, Value) {
    let res = client()
        .post(server.url("/hooks/hello"))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", "form-1")
        .header("X-Hub-Signature-256", signature)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.expect("a JSON answer"))
}

#[tokio::test]
async fn a_form_encoded_github_push_is_verified_over_the_raw_form_and_queued() {
    let server = TestServer::start(&[("hello", HELLO.as_str())], |_| {}).await;
    let payload = fixture("github/goscm__push.json");
    let body = format!("payload={}", form_encode(&payload));
    // Signed over the raw form body, as GitHub signs it.
    let (status, json) = post_form(&server, &body, &hub_sha256(SECRET, body.as_bytes())).await;
    assert_eq!(status, 202, "{json}");
    assert_eq!(json["builds"].as_array().map(Vec::len), Some(1), "{json}");
    server.stop().await;
}

#[tokio::test]
async fn a_form_signed_over_the_decoded_json_is_refused() {
    let server = TestServer::start(&[("hello", HELLO.as_str())], |_| {}).await;
    let payload = fixture("github/goscm__push.json");
    let body = format!("payload={}", form_encode(&payload));
    let (status, json) = post_form(&server, &body, &hub_sha256(SECRET, &payload)).await;
    assert_eq!(status, 401, "{json}");
    server.stop().await;
}

#[tokio::test]
async fn a_form_without_a_payload_field_is_a_400_naming_the_fix() {
    let server = TestServer::start(&[("hello", HELLO.as_str())], |_| {}).await;
    let body = "other=1";
    let (status, json) = post_form(&server, body, &hub_sha256(SECRET, body.as_bytes())).await;
    assert_eq!(status, 400, "{json}");
    assert_eq!(
        json["error"],
        "the form-encoded body has no valid payload field; set the webhook's content type to application/json"
    );
    server.stop().await;
}

/// The real binary with its journal-format stderr sent line by line to a
/// channel, so a test can wait for a line instead of sleeping.
struct LoggedDaemon {
    daemon: Daemon,
    base: String,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl LoggedDaemon {
    fn start(dir: &Path, extra: &str) -> LoggedDaemon {
        std::fs::create_dir_all(dir.join("pipelines")).unwrap();
        let config = dir.join("hookci.toml");
        std::fs::write(&config, format!("listen = \"127.0.0.1:0\"\n{extra}\n")).unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hookci"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("HOOKCI_LOG", "info")
            .env("JOURNAL_STREAM", "8:12345")
            .env_remove("HOOKCI_LOG_FORMAT")
            .env_remove("NOTIFY_SOCKET")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn hookci");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut d = LoggedDaemon {
            daemon: Daemon(child),
            base: String::new(),
            lines,
            seen: Vec::new(),
        };
        let listening = d.wait_line(|l| l.contains("listening"));
        let addr = listening
            .split("address=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .expect("an address")
            .to_owned();
        d.base = format!("http://{addr}");
        d
    }

    /// The next line `want` holds for (bounded by a generous timeout that
    /// only a broken daemon reaches).
    fn wait_line(&mut self, want: impl Fn(&str) -> bool) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(120)) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return line;
                    }
                }
                Err(e) => panic!("no such line ({e}); saw:\n{}", self.seen.join("\n")),
            }
        }
    }

    fn sighup(&self) {
        let pid = nix::unistd::Pid::from_raw(self.daemon.0.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    }
}

fn pipeline(secret: &str, clone_url: &str, run: &str) -> String {
    format!(
        "repo = \"Codertocat/Hello-World\"\nsecret = {{ file = \"{secret}\" }}\nclone_url = \"{clone_url}\"\n\
         [[steps]]\nname = \"t\"\nrun = \"{run}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_delivery_and_build_is_one_journal_line_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::new("logged");
    let commit = up.push(&[("README", "hi")], "first");
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir_all(&pipelines).unwrap();
    std::fs::write(pipelines.join("app.secret"), "s1\n").unwrap();
    std::fs::write(
        pipelines.join("app.toml"),
        pipeline("app.secret", &up.url(), "exit 3"),
    )
    .unwrap();
    let mut d = LoggedDaemon::start(dir.path(), "max_parallel_builds = 1");
    assert!(d.seen.iter().all(|l| l.starts_with('<')), "{:?}", d.seen);

    // 202: pipeline, host, event, delivery id, answer and the build.
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "first");
    let ids = common::queue_github(&d.base, "app", "s1", "dlv-1", &body).await;
    let line = d.wait_line(|l| l.contains("delivery=dlv-1"));
    assert_eq!(
        line,
        format!(
            "<6>delivery queued builds pipeline=app host=github event=push delivery=dlv-1 answer=202 builds={}",
            ids[0]
        )
    );
    // The build's start and end, with branch and commit, in words.
    let started = d.wait_line(|l| l.contains("build started"));
    assert_eq!(
        started,
        format!(
            "<6>build started build={} pipeline=app branch=main commit={commit} attempt=1",
            ids[0]
        )
    );
    let ended = d.wait_line(|l| l.contains("build ended"));
    assert_eq!(
        ended,
        format!(
            "<4>build ended build={} pipeline=app branch=main commit={commit} status=failure why=\"step t exited 3\"",
            ids[0]
        )
    );
    assert!(!ended.contains("Finished"), "{ended}");

    // 401: a warning with why.
    let (status, _) = common::send_github(&d.base, "app", "wrong", "dlv-2", &body).await;
    assert_eq!(status, 401);
    let line = d.wait_line(|l| l.contains("delivery=dlv-2"));
    assert_eq!(
        line,
        "<4>delivery refused pipeline=app host=github event=push delivery=dlv-2 answer=401 why=\"the signature does not match\""
    );
    // 404 names the route.
    let (status, _) = common::send_github(&d.base, "nope", "s1", "dlv-3", &body).await;
    assert_eq!(status, 404);
    let line = d.wait_line(|l| l.contains("pipeline=nope"));
    assert!(
        line.starts_with(
            "<4>delivery refused pipeline=nope host=unknown event=push delivery=- answer=404 why="
        ),
        "{line}"
    );
    // 200 that builds nothing says why.
    let tag = common::github_push(&up.url(), "refs/tags/v1", ZERO, &commit, "first");
    let (status, _) = common::send_github(&d.base, "app", "s1", "dlv-4", &tag).await;
    assert_eq!(status, 200);
    let line = d.wait_line(|l| l.contains("delivery=dlv-4"));
    assert!(line.starts_with("<6>delivery built nothing pipeline=app host=github event=push delivery=dlv-4 answer=200 why="), "{line}");

    // Reload: added, changed (the secret file was re-read), and broken with
    // the old version kept.
    std::fs::write(pipelines.join("app.secret"), "s2\n").unwrap();
    std::fs::write(
        pipelines.join("new.toml"),
        pipeline("app.secret", &up.url(), "true"),
    )
    .unwrap();
    d.sighup();
    assert_eq!(
        d.wait_line(|l| l.contains("reload: added")),
        "<6>reload: added pipelines=new"
    );
    assert_eq!(
        d.wait_line(|l| l.contains("reload: changed")),
        "<6>reload: changed pipelines=app"
    );
    let (status, _) = common::send_github(&d.base, "app", "s2", "dlv-5", &tag).await;
    assert_eq!(status, 200, "the re-read secret verifies");
    std::fs::write(pipelines.join("new.toml"), "repo = [broken").unwrap();
    d.sighup();
    assert_eq!(
        d.wait_line(|l| l.contains("reload: broken")),
        "<4>reload: broken, the previous version is still served pipelines=new"
    );
    let (status, _) = common::send_github(&d.base, "new", "s2", "dlv-6", &tag).await;
    assert_eq!(status, 200, "the old version still serves");
}

/// Behind nginx, the live streams must not be buffered.
#[tokio::test]
async fn event_streams_ask_proxies_not_to_buffer() {
    let server = TestServer::start(&[("hello", HELLO.as_str())], |_| {}).await;
    let res = client()
        .get(server.url("/live"))
        .send()
        .await
        .expect("GET /live");
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(res.headers()["x-accel-buffering"], "no");
    drop(res);
    // Ordinary answers do not carry it.
    let res = client().get(server.url("/healthz")).send().await.unwrap();
    assert!(res.headers().get("x-accel-buffering").is_none());
    server.stop().await;
}
