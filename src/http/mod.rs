//! HTTP: routes, connection limits and JSON errors.
//!
//! The HTTP layer extracts, verifies and enqueues. It never runs git or a
//! build, and it answers a webhook only after the store has committed what
//! the answer promises.

mod api;
mod body;
mod delivery_log;
mod error;
mod hooks;
mod idle;
mod metrics;
mod origin;
mod pages;
mod proxy;
mod streams;

pub use error::ApiError;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, PipelineSet};
use crate::runner::build::Runner;
use crate::store::Store;
use crate::worker::LiveBuilds;
use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// A build's log file, as [`AppState::log_file`] finds it.
#[derive(Debug)]
pub struct LogFile {
    /// The file.
    pub path: std::path::PathBuf,
    _keep: Option<crate::runner::log::mirror::MirrorFile>,
}

/// The state every handler shares: a cheap clone of `Arc`s.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    pipelines: PipelineSet,
    store: Store,
    runner: Arc<Runner>,
    live: LiveBuilds,
    /// On a shared store: the copies of the logs runners ship.
    mirrors: Option<Arc<crate::runner::log::mirror::Mirrors>>,
    metrics: Arc<Metrics>,
    bodies: Arc<body::BodyBudget>,
    streams: Arc<streams::StreamCounts>,
}

impl AppState {
    /// State for a server with this config, pipelines and store; on a
    /// shared store, `mirrors` copies the logs of builds run elsewhere.
    pub fn new(
        config: Config,
        pipelines: PipelineSet,
        store: Store,
        runner: Arc<Runner>,
        live: LiveBuilds,
        mirrors: Option<Arc<crate::runner::log::mirror::Mirrors>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let bodies = body::BodyBudget::new(config.max_body_bytes_in_flight, config.max_body_bytes);
        AppState {
            inner: Arc::new(Inner {
                bodies,
                streams: Arc::default(),
                config,
                pipelines,
                store,
                runner,
                live,
                mirrors,
                metrics,
            }),
        }
    }

    /// A reader of build `id`'s log from its first byte: live while it
    /// runs, else its file; for a queued build, once it starts.
    pub async fn follow_log(
        &self,
        id: i64,
    ) -> Result<crate::runner::log::LogFollower, crate::store::StoreError> {
        match &self.inner.mirrors {
            Some(mirrors) => {
                self.inner
                    .live
                    .follow_shared(id, &self.inner.runner, &self.inner.store, mirrors)
                    .await
            }
            None => {
                self.inner
                    .live
                    .follow(id, &self.inner.runner, &self.inner.store)
                    .await
            }
        }
    }

    /// Build `id`'s status once its log has ended (see
    /// [`LiveBuilds::settled_status`]).
    pub async fn settled_status(
        &self,
        id: i64,
    ) -> Result<Option<crate::store::BuildStatus>, crate::store::StoreError> {
        self.inner.live.settled_status(id, &self.inner.store).await
    }

    /// The log file of build `id` as it is now: this box's file, or on a
    /// shared store, for a build not running here, the copy of what its
    /// runner shipped to the database (this box's file when the database
    /// has none for it). The copy stays while the answer is held.
    pub async fn log_file(&self, id: i64) -> Result<LogFile, crate::store::StoreError> {
        let local = LogFile {
            path: self.inner.runner.log_path(id),
            _keep: None,
        };
        let Some(mirrors) = &self.inner.mirrors else {
            return Ok(local);
        };
        if self.inner.live.running_here(id).is_some() {
            return Ok(local);
        }
        Ok(match mirrors.file(id).await? {
            Some(copy) => LogFile {
                path: copy.path.clone(),
                _keep: Some(copy),
            },
            None => local,
        })
    }

    /// The daemon's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The runner (for what the API asks of git, such as a branch's head).
    pub fn runner(&self) -> &Arc<Runner> {
        &self.inner.runner
    }

    /// The budget of request-body bytes held at once.
    pub fn bodies(&self) -> &Arc<body::BodyBudget> {
        &self.inner.bodies
    }

    /// Live log streams open now.
    fn streams(&self) -> &Arc<streams::StreamCounts> {
        &self.inner.streams
    }

    /// The server config.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The pipelines as loaded now (a snapshot; a reload swaps it whole).
    pub fn pipelines(&self) -> Arc<BTreeMap<String, Pipeline>> {
        self.inner.pipelines.current()
    }

    /// The public link to a build.
    pub fn build_url(&self, id: i64) -> String {
        format!("{}/builds/{id}", self.inner.config.public_url)
    }
}

/// The application's routes.
pub fn router(state: AppState) -> Router {
    let live = Router::new()
        .route("/builds/{id}/live", get(pages::build_live))
        .route("/live", get(pages::index_live))
        .route("/api/builds/{id}/log/stream", get(api::stream_log))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            streams::limit,
        ));
    Router::new()
        .merge(live)
        .route("/hooks", post(hooks::org_wide))
        .route("/hooks/{name}", post(hooks::for_pipeline))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::metrics))
        .route("/", get(pages::index))
        .route("/builds/{id}", get(pages::build_page))
        .route("/badge/{file}", get(pages::badge))
        .route("/builds/{id}/log", get(pages::log_part))
        .route("/pipelines/{name}", get(pages::pipeline_page))
        .route("/api/pipelines", get(api::list_pipelines))
        .route("/api/runners", get(api::list_runners))
        .route("/runners", get(pages::runners_page))
        .route("/api/pipelines/{name}/trigger", post(api::trigger))
        .route("/api/builds", get(api::list_builds))
        .route("/api/builds/{id}", get(api::get_build))
        .route("/api/builds/{id}/cancel", post(api::cancel_build))
        .route("/api/builds/{id}/rebuild", post(api::rebuild))
        .route("/api/builds/{id}/approve", post(api::approve_build))
        .route("/api/builds/{id}/log", get(api::get_log))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            origin::refuse_cross_site,
        ))
        .layer(axum::middleware::map_response(
            proxy::no_buffering_for_streams,
        ))
        .with_state(state)
}

/// How long `/healthz` waits for the store's writer.
const WRITER_ANSWER: Duration = Duration::from_secs(3);

/// `GET /healthz`: 200 once a round trip through the store's writer
/// thread (an empty write transaction) answers within [`WRITER_ANSWER`];
/// else 503 with a sentence (the detail is logged).
async fn healthz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    match tokio::time::timeout(WRITER_ANSWER, state.store().ping_writer()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %e, "the store's writer failed a health check");
            return Err(ApiError::unavailable(
                "the store cannot write; the daemon's log says why",
                5,
            ));
        }
        Err(_) => {
            tracing::error!("the store's writer did not answer a health check in time");
            return Err(ApiError::unavailable(
                format!(
                    "the store's writer did not answer within {} s",
                    WRITER_ANSWER.as_secs()
                ),
                5,
            ));
        }
    }
    let queued = state.store().queued_count().await?;
    Ok(axum::Json(
        serde_json::json!({ "status": "ok", "queued": queued }),
    ))
}

async fn not_found() -> impl IntoResponse {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> impl IntoResponse {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}

/// Limits on connections, enforced by [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers (and how long
    /// an idle keep-alive connection is kept).
    pub header_timeout: Duration,
    /// How long in-flight requests get to finish on shutdown.
    pub drain_timeout: Duration,
    /// Connection slots beyond `max_connections` that only `/hooks` may use.
    pub reserved_hook_connections: usize,
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting and lets in-flight requests finish (up to `drain_timeout`).
///
/// When every slot is taken, a new connection is accepted anyway and the
/// connection that has waited longest without a complete request head (a
/// socket that sent nothing or part of its headers, or a keep-alive
/// connection idle between requests) is closed to make room: which route a
/// connection wants is known only once its head is in, so sockets that
/// never send one could otherwise hold every slot, the reserved ones too.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let general = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let reserved = Arc::new(Semaphore::new(limits.reserved_hook_connections));
    let waiting = Arc::new(idle::Waiting::default());
    let mut accept_warnings = RateLimitedWarning::default();
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 * 1024);
    tokio::pin!(shutdown);
    loop {
        // A general slot when there is one; else one of the slots kept for
        // webhooks, so that clients holding every general slot (slow bodies,
        // log streams) cannot stop pushes.
        let slot = match Arc::clone(&general).try_acquire_owned() {
            Ok(p) => Some((p, false)),
            Err(_) => Arc::clone(&reserved)
                .try_acquire_owned()
                .ok()
                .map(|p| (p, true)),
        };
        let (permit, hooks_only, accepted) = match slot {
            Some((p, hooks_only)) => (p, hooks_only, None),
            None => tokio::select! {
                biased;
                () = &mut shutdown => break,
                permit = Arc::clone(&general).acquire_owned() => match permit {
                    Ok(p) => (p, false, None),
                    Err(_) => break,
                },
                permit = Arc::clone(&reserved).acquire_owned() => match permit {
                    Ok(p) => (p, true, None),
                    Err(_) => break,
                },
                accepted = listener.accept() => {
                    // Every slot is taken and someone new is here: the
                    // longest wait without a request head ends, and its
                    // slot (freed as that connection closes) is this one's.
                    waiting.evict_oldest();
                    let (p, hooks_only) = tokio::select! {
                        biased;
                        () = &mut shutdown => break,
                        permit = Arc::clone(&general).acquire_owned() => match permit {
                            Ok(p) => (p, false),
                            Err(_) => break,
                        },
                        permit = Arc::clone(&reserved).acquire_owned() => match permit {
                            Ok(p) => (p, true),
                            Err(_) => break,
                        },
                    };
                    (p, hooks_only, Some(accepted))
                }
            },
        };
        let accepted = match accepted {
            Some(a) => a,
            None => tokio::select! {
                accepted = listener.accept() => accepted,
                () = &mut shutdown => break,
            },
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning, and
                // say so at most once a minute.
                accept_warnings.warn(&e);
                drop(permit);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let conn_state = waiting.connected();
        let service_state = Arc::clone(&conn_state);
        let service = hyper::service::service_fn(
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(body::Peer(peer));
                let router = router.clone();
                // The head is in: not evictable until the answer is sent.
                let busy = service_state.begin();
                async move {
                    if hooks_only && !is_hook_path(req.uri().path()) {
                        let mut res =
                            ApiError::unavailable("every connection slot is taken; retry later", 5)
                                .into_response();
                        res.headers_mut().insert(
                            axum::http::header::CONNECTION,
                            axum::http::HeaderValue::from_static("close"),
                        );
                        return Ok(busy.hold(res));
                    }
                    let res = tower::ServiceExt::oneshot(router, req).await?;
                    Ok::<_, std::convert::Infallible>(busy.hold(res))
                }
            },
        );
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                ended = conn => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                () = conn_state.evicted() => {
                    tracing::debug!(peer = %peer, "closed a connection without a request head to make room");
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish in time");
    }
}

/// `/hooks` and `/hooks/NAME`: the routes the reserved slots serve, and
/// the only writes another site may send.
fn is_hook_path(path: &str) -> bool {
    path == "/hooks" || path.starts_with("/hooks/")
}

/// A warning logged at most once a minute, with the count of those held back.
#[derive(Debug, Default)]
struct RateLimitedWarning {
    last: Option<std::time::Instant>,
    held_back: u64,
}

impl RateLimitedWarning {
    fn warn(&mut self, e: &std::io::Error) {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(60))
        {
            self.held_back += 1;
            return;
        }
        tracing::warn!(error = %e, repeated = self.held_back, "accept failed");
        self.last = Some(now);
        self.held_back = 0;
    }
}

/// Raises the soft limit of open files to the hard limit (every connection,
/// log and step pipe is one), and warns when the connections allowed could
/// still use up the files a running build needs.
pub fn raise_open_file_limit(connections: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let soft = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!(error = %e, "cannot raise the open-file limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(_) => return,
    };
    // Half the files for connections, the rest for builds and the store.
    if (connections as u64).saturating_mul(2) > soft {
        tracing::warn!(
            limit = soft,
            connections,
            "max_connections plus reserved_hook_connections is above half the open-file limit; \
             raise LimitNOFILE or lower max_connections"
        );
    }
}
