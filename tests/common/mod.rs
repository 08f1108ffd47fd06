//! Test harness: the real server on 127.0.0.1:0 with a temp data dir, real
//! pipeline files, and helpers to sign real payloads.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use hmac::{Hmac, Mac};
use hookci::config::Config;
use sha2::Sha256;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tokio::sync::oneshot;

/// A fixture's bytes, exactly as saved.
pub fn fixture(rel: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/webhooks")
        .join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `sha256=HEX` of `body` under `secret`, computed here independently of hookci.
pub fn hub_sha256(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hmac_hex(secret, body))
}

/// Hex HMAC-SHA256.
pub fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// A running server and its temp dirs.
pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config: Config,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Writes `pipelines` (name, TOML) and starts the server with `tweak`ed defaults.
    pub async fn start(pipelines: &[(&str, &str)], tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let pdir = dir.path().join("pipelines");
        std::fs::create_dir_all(&pdir).expect("pipelines dir");
        for (name, toml) in pipelines {
            std::fs::write(pdir.join(format!("{name}.toml")), toml).expect("write pipeline");
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut config = Config {
            data_dir: dir.path().join("data"),
            pipelines_dir: pdir,
            public_url: format!("http://{addr}"),
            listen: addr.to_string(),
            // Receive only, unless a test turns builds on: no test may reach
            // the clone URLs of the recorded payloads (public hosts).
            max_parallel_builds: 0,
            ..Config::default()
        };
        tweak(&mut config);
        let (stop, stopped) = oneshot::channel::<()>();
        let run_config = config.clone();
        let task = tokio::spawn(async move {
            hookci::server::run(run_config, listener, async {
                let _ = stopped.await;
            })
            .await
            .expect("server runs");
        });
        let server = TestServer {
            addr,
            dir,
            config,
            stop: Some(stop),
            task: Some(task),
        };
        // Ready once /healthz answers (the store is open); bounded wait.
        let http = client();
        for _ in 0..500 {
            if let Ok(res) = http.get(server.url("/healthz")).send().await {
                if res.status().is_success() {
                    return server;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the server did not become ready");
    }

    /// `http://ADDR`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://ADDR/PATH`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The server's store, through a handle of the test's own (as another
    /// process of the same box would open it).
    pub fn store(&self) -> hookci::store::Store {
        open_store(&self.config.data_dir)
    }

    /// The SQLite file: only for a test that injects a fault no API can
    /// (another process holding the write lock).
    pub fn db_path(&self) -> PathBuf {
        self.config.data_dir.join("hookci.db")
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// A plain HTTP client for loopback.
pub fn client() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// reqwest is built with rustls and no default crypto provider (ring is
/// chosen explicitly, as hookci does); a client needs one installed.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Opens the store of a daemon whose `data_dir` is `data_dir`, through
/// `Store`, as the daemon itself opens it.
pub fn open_store(data_dir: &Path) -> hookci::store::Store {
    let config = Config {
        data_dir: data_dir.to_owned(),
        ..Config::default()
    };
    hookci::server::open_store(&config).expect("open the store")
}

/// Every build in `store`, oldest first.
pub async fn all_builds(store: &hookci::store::Store) -> Vec<hookci::store::Build> {
    let filter = hookci::store::BuildFilter {
        limit: u32::MAX,
        ..Default::default()
    };
    let mut builds = store.builds(filter).await.expect("list builds");
    builds.reverse();
    builds
}

/// How many builds `store` holds.
pub async fn build_count(store: &hookci::store::Store) -> usize {
    all_builds(store).await.len()
}

/// A daemon a test started: killed (SIGKILL) and reaped when dropped, so a
/// test that fails half-way leaves no daemon behind. Derefs to its `Child`.
pub struct Daemon(pub std::process::Child);

impl std::ops::Deref for Daemon {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Nothing to do if it was already waited for; else end it now.
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts the real binary with `hookci.toml` written in `dir` (listen on
/// 127.0.0.1:0, data and pipelines under `dir`, then `extra` lines), and
/// returns it with its base URL once it listens.
pub fn spawn_daemon(dir: &Path, extra: &str) -> (Daemon, String) {
    spawn_daemon_listening(dir, "127.0.0.1:0", extra)
}

/// [`spawn_daemon`] on a given `listen` address.
pub fn spawn_daemon_listening(dir: &Path, listen: &str, extra: &str) -> (Daemon, String) {
    listening(serve_child(dir, listen, extra))
}

/// [`spawn_daemon`], also handing over the daemon's stderr lines (see
/// [`listening_with_log`]).
pub fn spawn_daemon_with_log(
    dir: &Path,
    extra: &str,
) -> (Daemon, String, std::sync::mpsc::Receiver<String>) {
    listening_with_log(serve_child(dir, "127.0.0.1:0", extra))
}

/// `hookci serve` on a config written in `dir`, its stderr piped.
fn serve_child(dir: &Path, listen: &str, extra: &str) -> std::process::Child {
    let config = dir.join("hookci.toml");
    std::fs::create_dir_all(dir.join("pipelines")).expect("pipelines dir");
    std::fs::write(
        &config,
        format!(
            "listen = \"{listen}\"\ndata_dir = \"{}\"\npipelines_dir = \"{}\"\n{extra}\n",
            dir.join("data").display(),
            dir.join("pipelines").display()
        ),
    )
    .expect("write config");
    std::process::Command::new(env!("CARGO_BIN_EXE_hookci"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("HOOKCI_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn hookci")
}

/// Waits until the `hookci serve` in `child` (stderr piped) says it
/// listens; returns it guarded, with its base URL. Its stderr is drained
/// from then on, so it never blocks on a full pipe.
pub fn listening(child: std::process::Child) -> (Daemon, String) {
    let (child, base, _lines) = listening_with_log(child);
    (child, base)
}

/// [`listening`], also handing over the daemon's stderr lines from the
/// start, for a test that waits for one of them.
pub fn listening_with_log(
    child: std::process::Child,
) -> (Daemon, String, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader};
    let mut child = Daemon(child);
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Read to the end even once nobody listens: the daemon must never
        // block on a full pipe.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr = loop {
        let line = rx.recv().expect("hookci exited before listening");
        if let Some(rest) = line.split("address=").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .expect("an address")
                .to_owned();
        }
    };
    (child, format!("http://{addr}"), rx)
}

/// An all-zero commit id: `before` of a new ref.
pub const ZERO: &str = "0000000000000000000000000000000000000000";

/// A GitHub push payload: the recorded fixture with the ref, commits,
/// message and clone URL of a test repository.
pub fn github_push(
    clone_url: &str,
    git_ref: &str,
    before: &str,
    after: &str,
    message: &str,
) -> Vec<u8> {
    let mut v: serde_json::Value =
        serde_json::from_slice(&fixture("github/goscm__push.json")).expect("fixture");
    v["ref"] = git_ref.into();
    v["before"] = before.into();
    v["after"] = after.into();
    v["created"] = (before == ZERO).into();
    v["head_commit"]["id"] = after.into();
    v["head_commit"]["message"] = message.into();
    v["repository"]["clone_url"] = clone_url.into();
    v["pusher"]["name"] = "ada".into();
    serde_json::to_vec(&v).expect("json")
}

/// Sends `body` to `{base}/hooks/{name}` as GitHub would, signed with
/// `secret`; returns the status and the JSON answer.
pub async fn send_github(
    base: &str,
    name: &str,
    secret: &str,
    delivery: &str,
    body: &[u8],
) -> (u16, serde_json::Value) {
    let res = client()
        .post(format!("{base}/hooks/{name}"))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", delivery)
        .header("X-Hub-Signature-256", hub_sha256(secret, body))
        .body(body.to_vec())
        .send()
        .await
        .expect("deliver");
    let status = res.status().as_u16();
    (status, res.json().await.expect("a JSON answer"))
}

/// Like [`send_github`], expecting 202; returns the queued build ids.
pub async fn queue_github(
    base: &str,
    name: &str,
    secret: &str,
    delivery: &str,
    body: &[u8],
) -> Vec<i64> {
    let (status, json) = send_github(base, name, secret, delivery, body).await;
    assert_eq!(status, 202, "{json}");
    json["builds"]
        .as_array()
        .expect("builds")
        .iter()
        .map(|b| b["id"].as_i64().expect("id"))
        .collect()
}

/// `GET {base}/api/builds/{id}`, or `None` while the server cannot answer.
pub async fn get_build(base: &str, id: i64) -> Option<serde_json::Value> {
    client()
        .get(format!("{base}/api/builds/{id}"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// Polls build `id` until `want` holds (bounded: 120 s).
pub async fn wait_build(
    base: &str,
    id: i64,
    want: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let b = get_build(base, id).await;
        if let Some(b) = b.as_ref().filter(|b| want(b)) {
            return b.clone();
        }
        assert!(
            std::time::Instant::now() < until,
            "build {id} never got there: {b:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Polls build `id` until it is neither queued nor running.
pub async fn wait_final(base: &str, id: i64) -> serde_json::Value {
    wait_build(base, id, |b| {
        !matches!(b["status"].as_str(), Some("queued" | "running"))
    })
    .await
}

/// `toml` with `clone_url = URL` first: a pipeline without one trusts a
/// payload's clone URL only on the public host its `host` implies, so
/// tests that build a local repository pin it.
pub fn with_clone_url(url: &str, toml: &str) -> String {
    format!("clone_url = {url:?}\n{toml}")
}

/// A pipeline file for the GitHub fixtures' repository
/// (`Codertocat/Hello-World`), signed with `secret`: the text most tests
/// need, written once. Top-level keys, tables and steps may be added in any
/// order; `Display` puts them where TOML wants them.
///
/// ```ignore
/// let toml = common::pipeline_toml("s").clone_url(&up.url()).step("t", "true");
/// ```
#[derive(Clone, Debug)]
pub struct PipelineToml {
    top: String,
    tables: String,
    steps: String,
}

/// See [`PipelineToml`].
pub fn pipeline_toml(secret: &str) -> PipelineToml {
    PipelineToml {
        top: format!("repo = \"Codertocat/Hello-World\"\nsecret = {secret:?}\n"),
        tables: String::new(),
        steps: String::new(),
    }
}

impl PipelineToml {
    /// `clone_url = URL` (a payload's clone URL is trusted only on the public
    /// host the pipeline's host implies, so tests that clone local
    /// repositories set it).
    pub fn clone_url(self, url: &str) -> Self {
        self.top(&format!("clone_url = {url:?}"))
    }

    /// Top-level `key = value` lines, as written.
    pub fn top(mut self, lines: &str) -> Self {
        self.top.push_str(lines);
        self.top.push('\n');
        self
    }

    /// A table with its keys (`"[env]\nMARK = \"x\""`), or any text that
    /// goes after the top-level keys and before the steps.
    pub fn table(mut self, text: &str) -> Self {
        self.tables.push_str(text);
        self.tables.push('\n');
        self
    }

    /// A `[[steps]]` entry running `run` (a TOML literal string, so a
    /// script may hold `"` and `\` as the shell wants them).
    pub fn step(self, name: &str, run: &str) -> Self {
        self.raw_steps(&format!("[[steps]]\nname = {name:?}\nrun = '''{run}'''"))
    }

    /// Steps written by hand (extra keys such as `allow_failure`).
    pub fn raw_steps(mut self, text: &str) -> Self {
        self.steps.push_str(text);
        self.steps.push('\n');
        self
    }
}

impl std::fmt::Display for PipelineToml {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}{}", self.top, self.tables, self.steps)
    }
}
