//! For the reporter's tests: a fake Git host API on 127.0.0.1:0 that records
//! every request and answers from a script, a real SQLite store in a temp
//! dir, and helpers to queue builds and drive their states.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hookci::pipeline::PipelineSet;
use hookci::report::{Reporter, ReporterOptions};
use hookci::store::{
    BuildStatus, ClaimPolicy, NewBuild, NewDelivery, ReportRecord, Store, StoreOptions,
};
use hookci::webhook::{Host, PushEvent, RefKind};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

/// The token every test pipeline reports with; it must never show in an error.
pub const TOKEN: &str = "tok-9f8e7d6c5b4a";

/// The public URL builds link to.
pub const PUBLIC_URL: &str = "https://ci.example.com";

/// A request the fake host received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    /// Path and query, exactly as sent (percent-encoding kept).
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// When it arrived, on tokio's clock (paused in some tests).
    pub at: tokio::time::Instant,
}

impl Seen {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("a text header"))
    }

    /// The header names sent, sorted.
    pub fn header_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.headers.keys().map(|k| k.to_string()).collect();
        names.sort();
        names.dedup();
        names
    }
}

/// How the fake host answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// This status, empty body.
    Status(u16),
    /// This status, headers and body.
    Answer {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Never answers.
    Hang,
    /// Answers 201 once the test notifies the gate.
    Gate(Arc<Notify>),
}

#[derive(Debug, Default)]
struct Shared {
    seen: Mutex<Vec<Seen>>,
    script: Mutex<VecDeque<Reply>>,
    count: Option<watch::Sender<usize>>,
}

/// A fake Git host API.
#[derive(Debug)]
pub struct FakeHost {
    pub addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    count: watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeHost {
    /// Starts a host that answers `script` in order, then 201 to everything.
    pub async fn start(script: Vec<Reply>) -> FakeHost {
        let (tx, rx) = watch::channel(0);
        let shared = Arc::new(Shared {
            seen: Mutex::default(),
            script: Mutex::new(script.into()),
            count: Some(tx),
        });
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake host");
        let addr = listener.local_addr().expect("its address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeHost {
            addr,
            shared,
            count: rx,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Waits (without a timer, so paused time is not pushed on) until `n`
    /// requests arrived, and returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Seen> {
        let mut count = self.count.clone();
        count
            .wait_for(|c| *c >= n)
            .await
            .expect("the fake host runs");
        self.seen()
    }
}

impl Drop for FakeHost {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let reply = {
        let mut seen = shared.seen.lock().unwrap();
        seen.push(Seen {
            method,
            path,
            headers,
            body: body.to_vec(),
            at: tokio::time::Instant::now(),
        });
        if let Some(count) = &shared.count {
            count.send_replace(seen.len());
        }
        shared.script.lock().unwrap().pop_front()
    };
    match reply {
        None => (StatusCode::CREATED, "{}").into_response(),
        Some(Reply::Status(code)) => status(code).into_response(),
        Some(Reply::Answer {
            status: code,
            headers,
            body,
        }) => {
            let mut response = (status(code), body).into_response();
            for (name, value) in headers {
                response
                    .headers_mut()
                    .insert(name, value.parse().expect("a header value"));
            }
            response
        }
        Some(Reply::Hang) => std::future::pending().await,
        Some(Reply::Gate(gate)) => {
            gate.notified().await;
            (StatusCode::CREATED, "{}").into_response()
        }
    }
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).expect("a status code")
}

/// A store and pipelines in a temp dir.
#[derive(Debug)]
pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub pipelines: PipelineSet,
}

impl Env {
    /// A fresh store, and pipelines from (name, TOML) pairs.
    pub fn new(pipelines: &[(&str, &str)]) -> Env {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = open_store(dir.path());
        let set = PipelineSet::new(load_pipelines(dir.path(), pipelines));
        Env {
            dir,
            store,
            pipelines: set,
        }
    }

    /// A reporter over this env's store and pipelines.
    pub fn reporter(&self, options: ReporterOptions) -> Reporter {
        Reporter::with_options(
            self.store.clone(),
            self.pipelines.clone(),
            PUBLIC_URL,
            options,
            Default::default(),
        )
        .expect("a reporter")
    }
}

/// Opens (or reopens) the SQLite store in `dir`.
pub fn open_store(dir: &Path) -> Store {
    Store::open_sqlite(
        &dir.join("hookci.db"),
        StoreOptions {
            max_queued_builds: 1000,
        },
    )
    .expect("open the store")
}

/// Writes and loads pipeline files; every one must load.
pub fn load_pipelines(
    dir: &Path,
    pipelines: &[(&str, &str)],
) -> BTreeMap<String, hookci::pipeline::Pipeline> {
    let pdir = dir.join("pipelines");
    std::fs::create_dir_all(&pdir).expect("pipelines dir");
    let mut map = BTreeMap::new();
    for (name, toml) in pipelines {
        let path = pdir.join(format!("{name}.toml"));
        std::fs::write(&path, toml).expect("write a pipeline");
        let (pipeline, _warnings) = hookci::pipeline::load_file(&path)
            .unwrap_or_else(|e| panic!("{name} does not load: {e:?}"));
        map.insert(pipeline.name.clone(), pipeline);
    }
    map
}

/// A pipeline file reporting to `provider` with the test token.
pub fn pipeline_toml(repo: &str, provider: &str, api_url: Option<&str>, context: &str) -> String {
    let api = api_url
        .map(|u| format!("api_url = \"{u}\"\n"))
        .unwrap_or_default();
    format!(
        "repo = \"{repo}\"\nsecret = \"hook-secret\"\n[status]\nprovider = \"{provider}\"\n{api}token = \"{TOKEN}\"\ncontext = \"{context}\"\n[[steps]]\nname = \"test\"\nrun = \"true\"\n"
    )
}

/// A branch push of `commit` to `repo`.
pub fn push(repo: &str, commit: &str, web_url: Option<&str>, clone_url: &str) -> PushEvent {
    PushEvent {
        repo: repo.to_owned(),
        git_ref: "refs/heads/main".to_owned(),
        kind: RefKind::Branch("main".to_owned()),
        before: hookci::model::CommitId::ZERO,
        after: commit.parse().expect("a commit id"),
        commit: Some(commit.parse().expect("a commit id")),
        created: false,
        deleted: false,
        forced: false,
        clone_url: clone_url.to_owned(),
        ssh_url: None,
        web_url: web_url.map(str::to_owned),
        message: "a change".to_owned(),
        pusher: "octocat".to_owned(),
        pull_request: None,
    }
}

/// A commit id made from `n`.
pub fn sha(n: u32) -> String {
    format!("{n:040x}")
}

static DELIVERY: AtomicU64 = AtomicU64::new(1);

/// Queues a build of `push` for `pipeline` from `host`, reporting under
/// `context`; returns its id.
pub async fn queue(
    store: &Store,
    pipeline: &str,
    host: Host,
    push: PushEvent,
    context: &str,
) -> i64 {
    let delivery_id = format!("delivery-{}", DELIVERY.fetch_add(1, Ordering::Relaxed));
    let recorded = store
        .record_deliveries(vec![NewDelivery {
            pipeline: pipeline.to_owned(),
            delivery_id,
            host,
            event: "push".to_owned(),
            builds: vec![NewBuild {
                pipeline: pipeline.to_owned(),
                push,
                path_filters: Vec::new(),
                supersede: false,
                waiting: false,
                report_context: Some(context.to_owned()),
                pipeline_revision: None,
            }],
            skipped: None,
            body_sha256: None,
            close: None,
        }])
        .await
        .expect("record the delivery");
    recorded[0].build_ids[0]
}

/// Claims the oldest queued build (it must be `id`): it is running now.
pub async fn start_build(store: &Store, id: i64) {
    let claimed = store
        .claim_next(ClaimPolicy::default())
        .await
        .expect("claim")
        .expect("a queued build");
    assert_eq!(claimed.id, id);
}

/// Ends running build `id`.
pub async fn finish_build(store: &Store, id: i64, status: BuildStatus, reason: Option<&str>) {
    store
        .finish(id, status, reason.map(str::to_owned))
        .await
        .expect("finish");
}

/// Runs `reporter` until the returned token is cancelled.
pub fn spawn_reporter(reporter: Reporter) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let task = tokio::spawn(reporter.run(stop.clone()));
    (stop, task)
}

/// Runs `fut`, failing the test if it takes longer than `limit` of real
/// time. The deadline is a thread, not a tokio timer, so paused time does
/// not jump to it while the store's thread is busy.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        let _ = tx.send(());
    });
    tokio::select! {
        biased;
        value = fut => value,
        _ = rx => panic!("{what}: not done within {limit:?}"),
    }
}

/// Polls build `id`'s reports every 10 ms (of tokio time) until `done`
/// holds, for at most 30 s of real time; returns them.
pub async fn reports_until(
    store: &Store,
    id: i64,
    what: &str,
    done: impl Fn(&[ReportRecord]) -> bool,
) -> Vec<ReportRecord> {
    within(Duration::from_secs(30), what, async {
        loop {
            let reports = store.reports(id).await.expect("reports");
            if done(&reports) {
                return reports;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}
