//! The daemon keeps taking pushes under abuse: request bodies under a
//! memory budget, connection slots kept for webhooks, replays refused,
//! cross-site writes refused. The real binary or the real server, real
//! sockets on 127.0.0.1.

use crate::common;
use crate::gitserve;

use common::{ZERO, client, fixture, hub_sha256, send_github};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;

const SECRET: &str = "topsecret";

/// The one-step pipeline of the GitHub fixtures' repository.
static PIPELINE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    common::pipeline_toml(SECRET)
        .step("test", "true")
        .to_string()
});

/// Kills the spawned daemon when the test ends, failed or not.
struct Daemon {
    child: common::Daemon,
    base: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn start(dir: &Path, pipelines: &[(&str, &str)], extra: &str) -> Daemon {
        std::fs::create_dir_all(dir.join("pipelines")).expect("mkdir");
        for (name, toml) in pipelines {
            std::fs::write(dir.join(format!("pipelines/{name}.toml")), toml).expect("pipeline");
        }
        let (child, base) = common::spawn_daemon(dir, extra);
        Daemon { child, base }
    }

    fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }

    /// The daemon's resident memory in kB, from /proc.
    fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS")
    }
}

const MIB: usize = 1024 * 1024;

/// Opens a connection and sends an unauthenticated-but-well-formed webhook
/// of `len` declared bytes, writing `len` bytes of body (or as many as the
/// daemon takes before it answers); the socket is kept open.
fn big_body(addr: &str, len: usize) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    let head = format!(
        "POST /hooks HTTP/1.1\r\nHost: {addr}\r\nX-GitHub-Event: push\r\n\
         X-Hub-Signature-256: sha256={}\r\nContent-Type: application/json\r\n\
         Content-Length: {len}\r\n\r\n",
        "0".repeat(64)
    );
    if s.write_all(head.as_bytes()).is_err() {
        return s;
    }
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < len {
        let n = chunk.len().min(len - sent);
        if s.write_all(&chunk[..n]).is_err() {
            break;
        }
        sent += n;
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_unauthenticated_25_mib_bodies_keep_the_daemon_under_200_mb() {
    let dir = tempfile::tempdir().expect("temp dir");
    let daemon = Daemon::start(
        dir.path(),
        &[("hello", PIPELINE.as_str())],
        "max_parallel_builds = 0",
    );
    let before = daemon.rss_kb();
    let addr = daemon.addr();
    let len = 25 * MIB - 1024;
    // 60 senders at once, each sending its whole body (the daemon may
    // refuse early) and then holding the connection open.
    let senders: Vec<_> = (0..60)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || big_body(&addr, len))
        })
        .collect();
    let sockets: Vec<TcpStream> = senders
        .into_iter()
        .map(|t| t.join().expect("sender"))
        .collect();
    let during = daemon.rss_kb();
    eprintln!("RSS before: {before} kB, with 60 bodies in flight: {during} kB");
    assert!(
        during < 200 * 1024,
        "the daemon holds {during} kB with 60 unauthenticated bodies in flight"
    );
    // Those the daemon refused got 503 with Retry-After.
    let mut refused = 0;
    for mut s in sockets {
        s.set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .expect("timeout");
        let mut buf = [0u8; 512];
        if let Ok(n) = s.read(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).to_lowercase();
            if text.starts_with("http/1.1 503") {
                assert!(text.contains("retry-after"), "{text}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "no body was refused for the budget");
    // And a signed push is still taken.
    let body = common::github_push(
        "https://example.invalid/x.git",
        "refs/heads/main",
        ZERO,
        "1111111111111111111111111111111111111111",
        "after the flood",
    );
    let (status, json) = send_github(&daemon.base, "hello", SECRET, "after-flood", &body).await;
    assert_eq!(status, 202, "{json}");
}

#[tokio::test]
async fn cheap_checks_come_before_the_body_is_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let daemon = Daemon::start(
        dir.path(),
        &[("hello", PIPELINE.as_str())],
        "max_parallel_builds = 0",
    );
    let http = client();
    let body = fixture("github/goscm__push.json");
    // Each of these declares a body it never sends: an answer proves the
    // daemon did not wait for it.
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, u16);
    let cases: [Case<'_>; 4] = [
        ("/hooks/nope", vec![("X-GitHub-Event", "push".into())], 404),
        ("/hooks/hello", vec![], 400),
        ("/hooks/hello", vec![("X-GitHub-Event", "push".into())], 401),
        (
            "/hooks",
            vec![
                ("X-GitHub-Event", "push".into()),
                ("X-Hub-Signature-256", "sha256=short".into()),
            ],
            401,
        ),
    ];
    for (path, headers, want) in cases {
        let mut s = TcpStream::connect(daemon.addr()).expect("connect");
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in &headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).expect("write");
        s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .expect("timeout");
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).expect("an answer without the body");
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {want}")),
            "{path} {headers:?}: {text}"
        );
    }
    // The same with a correct signature and the body: accepted.
    let res = http
        .post(format!("{}/hooks/hello", daemon.base))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", "ok-1")
        .header("X-Hub-Signature-256", hub_sha256(SECRET, &body))
        .body(body.clone())
        .send()
        .await
        .expect("send");
    assert!(res.status().is_success(), "{}", res.status());
}

/// Raises this test process's soft open-file limit to the hard limit, for
/// the 1,024 sockets it holds.
fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_answered_while_1024_slow_sockets_hold_the_api() {
    raise_nofile();
    let upstream = gitserve::Upstream::new("slow");
    let commit = upstream.push(&[("README", "hello\n")], "first");
    let dir = tempfile::tempdir().expect("temp dir");
    // The go file lives outside hookci's directories, which the step's
    // sandbox masks, and is shown to the step read-only.
    let marks = tempfile::tempdir().expect("marks dir");
    let flag = marks.path().join("go");
    // The step runs until the test says go (bounded: 120 s).
    let pipeline = format!(
        r#"
repo = "Codertocat/Hello-World"
secret = "topsecret"
clone_url = "{}"
[sandbox]
read_only = ["{}"]
[[steps]]
name = "wait"
run = "i=0; while [ ! -e '{}' ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done; test -e '{}'"
"#,
        upstream.url(),
        marks.path().display(),
        flag.display(),
        flag.display()
    );
    let daemon = Daemon::start(
        dir.path(),
        &[("hello", &pipeline)],
        "max_parallel_builds = 1",
    );
    let push = common::github_push(&upstream.url(), "refs/heads/main", ZERO, &commit, "one");
    let ids = common::queue_github(&daemon.base, "hello", SECRET, "build-1", &push).await;
    common::wait_build(&daemon.base, ids[0], |b| b["status"] == "running").await;

    // 1,024 sockets that start an API request and never finish its headers.
    let addr = daemon.addr();
    let slow: Vec<TcpStream> = (0..1024)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).expect("connect");
            s.write_all(b"POST /api/pipelines/hello/trigger HTTP/1.1\r\nHost: x\r\n")
                .expect("write");
            s
        })
        .collect();

    // A signed webhook is still answered at once. The issue asks for 1 s;
    // the bound here is 3 s so that a loaded CI box does not flake, which
    // still tells the fix from its absence (there the answer waits for the
    // 10 s header timeout to free a slot).
    let second = common::github_push(&upstream.url(), "refs/heads/other", ZERO, &commit, "two");
    let started = std::time::Instant::now();
    let answered = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        send_github(&daemon.base, "hello", SECRET, "build-2", &second),
    )
    .await;
    let took = started.elapsed();
    eprintln!("webhook answered in {took:?} with 1,024 slow sockets open");
    let (status, json) = answered.expect("the webhook was answered while the API was flooded");
    assert_eq!(status, 202, "{json}");

    // The running build still passes: its step's files and pipes open.
    // (Reads of its status need a general slot: the sockets go first.)
    std::fs::write(&flag, "").expect("flag");
    drop(slow);
    let done = common::wait_build(&daemon.base, ids[0], |b| {
        matches!(
            b["status"].as_str(),
            Some("success" | "failure" | "error" | "cancelled")
        )
    })
    .await;
    assert_eq!(done["status"], "success", "{done}");
}

#[tokio::test]
async fn the_admin_token_is_checked_before_an_api_body_is_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let daemon = Daemon::start(
        dir.path(),
        &[("hello", PIPELINE.as_str())],
        "max_parallel_builds = 0\nadmin_token = \"admin-secret\"",
    );
    // A declared body that never comes, and no token: answered at once.
    let mut s = TcpStream::connect(daemon.addr()).expect("connect");
    s.write_all(
        b"POST /api/pipelines/hello/trigger HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
    )
    .expect("write");
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("timeout");
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).expect("an answer without the body");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    // With the token, a body over 16 KiB is refused.
    let res = client()
        .post(format!("{}/api/pipelines/hello/trigger", daemon.base))
        .bearer_auth("admin-secret")
        .header("Content-Type", "application/json")
        .body(format!("{{\"branch\":\"{}\"}}", "a".repeat(20_000)))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status().as_u16(), 413);
}

#[tokio::test]
async fn a_signed_body_seen_before_is_a_redelivery_whatever_its_delivery_id() {
    let dir = tempfile::tempdir().expect("temp dir");
    let daemon = Daemon::start(
        dir.path(),
        &[("hello", PIPELINE.as_str())],
        "max_parallel_builds = 0",
    );
    let body = fixture("github/goscm__push.json");
    let (status, first) = send_github(&daemon.base, "hello", SECRET, "original", &body).await;
    assert_eq!(status, 202, "{first}");
    for id in ["original", "replayed-1", "replayed-2"] {
        let (status, again) = send_github(&daemon.base, "hello", SECRET, id, &body).await;
        assert_eq!(status, 200, "{id}: {again}");
        assert_eq!(again["builds"], first["builds"], "{id}");
    }
    let store = common::open_store(&dir.path().join("data"));
    assert_eq!(common::build_count(&store).await, 1);
}

#[tokio::test]
async fn live_streams_are_capped_per_client_and_end_after_their_lifetime() {
    let dir = tempfile::tempdir().expect("temp dir");
    let daemon = Daemon::start(
        dir.path(),
        &[("hello", PIPELINE.as_str())],
        "max_parallel_builds = 0\nmax_log_streams_per_client = 1\nlog_stream_lifetime = \"2s\"",
    );
    let http = client();
    let first = http
        .get(format!("{}/live", daemon.base))
        .send()
        .await
        .expect("first stream");
    assert_eq!(first.status().as_u16(), 200);
    let second = http
        .get(format!("{}/live", daemon.base))
        .send()
        .await
        .expect("second stream");
    assert_eq!(second.status().as_u16(), 503);
    assert!(second.headers().contains_key("retry-after"));
    // The first ends by itself (bounded by the client's own 60 s timeout),
    // and its slot is free again.
    tokio::time::timeout(std::time::Duration::from_secs(60), first.bytes())
        .await
        .expect("the stream ended after its lifetime")
        .expect("body");
    let mut again = 0;
    for _ in 0..100 {
        let res = http
            .get(format!("{}/live", daemon.base))
            .send()
            .await
            .expect("stream");
        again = res.status().as_u16();
        if again == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(again, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_answered_while_1024_sockets_that_send_nothing_hold_every_slot() {
    raise_nofile();
    let dir = tempfile::tempdir().expect("temp dir");
    // Fewer slots than sockets: 64 general and 16 kept for /hooks, all
    // taken by sockets that never send a request line (which route they
    // want is not known, so they take the reserved slots too).
    let daemon = Daemon::start(
        dir.path(),
        &[("hello", PIPELINE.as_str())],
        "max_parallel_builds = 0\nmax_connections = 64\nreserved_hook_connections = 16",
    );
    let addr = daemon.addr();
    let silent: Vec<TcpStream> = (0..1024)
        .map(|_| TcpStream::connect(&addr).expect("connect"))
        .collect();
    // As in the test above: 3 s rather than the issue's 1 s, for a loaded
    // box; without eviction the answer waits for the 10 s header timeout
    // of the sockets ahead of it, batch by batch.
    let body = common::github_push(
        "https://example.invalid/x.git",
        "refs/heads/main",
        ZERO,
        "2222222222222222222222222222222222222222",
        "while silent sockets wait",
    );
    let started = std::time::Instant::now();
    let answered = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        send_github(&daemon.base, "hello", SECRET, "silent-1", &body),
    )
    .await;
    eprintln!(
        "webhook answered in {:?} with 1,024 silent sockets open",
        started.elapsed()
    );
    let (status, json) = answered.expect("the webhook was answered while every slot was held");
    assert_eq!(status, 202, "{json}");
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_declared_but_not_sent_holds_none_of_the_budget() {
    let dir = tempfile::tempdir().expect("temp dir");
    // One client (every socket here is 127.0.0.1) may hold half the
    // budget: 1 MiB, exactly what the staller declares.
    let daemon = Daemon::start(
        dir.path(),
        &[("hello", PIPELINE.as_str())],
        "max_parallel_builds = 0\nmax_body_bytes = 1048576\nmax_body_bytes_in_flight = 2097152\nrequest_timeout = \"120s\"",
    );
    let mut staller = TcpStream::connect(daemon.addr()).expect("connect");
    let head = format!(
        "POST /hooks/hello HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n\
         X-Hub-Signature-256: sha256={}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        "0".repeat(64),
        MIB
    );
    staller.write_all(head.as_bytes()).expect("write");
    // hyper says `100 Continue` once the handler starts reading the body:
    // past every check, with whatever it sets aside for it set aside.
    staller
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    let n = staller.read(&mut buf).expect("100 Continue");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 100"), "{text}");
    // It sends nothing more. A signed push from the same address is taken.
    let body = common::github_push(
        "https://example.invalid/x.git",
        "refs/heads/main",
        ZERO,
        "3333333333333333333333333333333333333333",
        "while a body stalls",
    );
    let (status, json) = send_github(&daemon.base, "hello", SECRET, "stall-1", &body).await;
    assert_eq!(status, 202, "{json}");
    drop(staller);
}
