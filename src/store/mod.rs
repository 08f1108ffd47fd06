//! The store: deliveries and builds, durably.
//!
//! This is the only module that speaks SQL. Callers see [`Store`], a cheap
//! clone handle whose methods are async and backend-neutral; the SQLite
//! backend lives in [`sqlite`]. A PostgreSQL backend (several build boxes
//! sharing one queue) is a second implementation of [`Backend`], added here
//! without touching the HTTP or runner code.
//!
//! Invariant: a write method returns `Ok` only after the transaction that
//! made the write has committed with `synchronous=FULL`.

mod migrations;
mod sqlite;

use crate::pipeline::PathFilter;
use crate::webhook::{Host, PushEvent};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use tokio::sync::Notify;

/// A boxed future, so that [`Backend`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A build's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildStatus {
    /// Waiting for a worker.
    Queued,
    /// A worker is running it.
    Running,
    /// Every step that must pass passed.
    Success,
    /// A step failed.
    Failure,
    /// The build could not run (clone failed, interrupted twice).
    Error,
    /// Cancelled by a user or superseded by a newer push.
    Cancelled,
    /// Nothing to build (no changed file matched the trigger's paths).
    Skipped,
}

impl BuildStatus {
    /// The name used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Queued => "queued",
            BuildStatus::Running => "running",
            BuildStatus::Success => "success",
            BuildStatus::Failure => "failure",
            BuildStatus::Error => "error",
            BuildStatus::Cancelled => "cancelled",
            BuildStatus::Skipped => "skipped",
        }
    }

    /// True once the build will not change state again.
    pub fn is_final(self) -> bool {
        match self {
            BuildStatus::Queued | BuildStatus::Running => false,
            BuildStatus::Success
            | BuildStatus::Failure
            | BuildStatus::Error
            | BuildStatus::Cancelled
            | BuildStatus::Skipped => true,
        }
    }
}

impl fmt::Display for BuildStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BuildStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s {
            "queued" => BuildStatus::Queued,
            "running" => BuildStatus::Running,
            "success" => BuildStatus::Success,
            "failure" => BuildStatus::Failure,
            "error" => BuildStatus::Error,
            "cancelled" => BuildStatus::Cancelled,
            "skipped" => BuildStatus::Skipped,
            _ => return Err(()),
        })
    }
}

/// A build to queue: the pipeline and the push that triggers it.
#[derive(Debug, Clone)]
pub struct NewBuild {
    /// The pipeline's name.
    pub pipeline: String,
    /// The push.
    pub push: PushEvent,
    /// The path rules the runner must decide from git; empty = none.
    pub path_filters: Vec<PathFilter>,
}

/// A delivery to record for one pipeline, with the builds it queues.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// The pipeline's name.
    pub pipeline: String,
    /// The host's delivery id (or a digest of the body).
    pub delivery_id: String,
    /// The host it came from.
    pub host: Host,
    /// The host's name for the event.
    pub event: String,
    /// Builds to queue; empty when the delivery builds nothing.
    pub builds: Vec<NewBuild>,
    /// Why nothing builds, when `builds` is empty.
    pub skipped: Option<String>,
}

/// What recording a delivery did: the answer the host gets, now and on
/// every redelivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The pipeline's name.
    pub pipeline: String,
    /// The delivery id.
    pub delivery_id: String,
    /// The builds the delivery queued (the first time it was seen).
    pub build_ids: Vec<i64>,
    /// Why nothing was built, if so.
    pub skipped: Option<String>,
    /// True when this delivery id had been recorded before; nothing new was queued.
    pub duplicate: bool,
}

/// A build as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Build {
    /// The build's number, a small integer users can type.
    pub id: i64,
    /// The pipeline's name.
    pub pipeline: String,
    /// The repository's full name.
    pub repo: String,
    /// The host the delivery came from (`None` for manual triggers).
    pub host: Option<String>,
    /// `push` or `tag`.
    pub event: String,
    /// The full ref.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// The branch, for a branch push.
    pub branch: Option<String>,
    /// The tag, for a tag push.
    pub tag: Option<String>,
    /// The commit built and reported on.
    pub commit: String,
    /// The ref's old value.
    pub before: String,
    /// The ref's new value as the host sent it.
    #[serde(skip)]
    pub after: String,
    /// The state.
    pub status: BuildStatus,
    /// Why it is in that state, in words.
    pub reason: Option<String>,
    /// The delivery id that queued it.
    pub delivery: Option<String>,
    /// 1, plus one per interrupted run.
    pub attempt: i64,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC.
    pub started_at: Option<String>,
    /// RFC 3339 UTC.
    pub finished_at: Option<String>,
    /// The clone URL from the payload.
    #[serde(skip)]
    pub clone_url: String,
    /// The ssh clone URL from the payload.
    #[serde(skip)]
    pub ssh_url: Option<String>,
    /// The repository's web page.
    #[serde(skip)]
    pub web_url: Option<String>,
    /// The head commit's message.
    #[serde(skip)]
    pub message: String,
    /// Who pushed.
    #[serde(skip)]
    pub pusher: String,
    /// The push was forced.
    #[serde(skip)]
    pub forced: bool,
    /// The path rules the runner decides; empty = none.
    #[serde(skip)]
    pub path_filters: Vec<PathFilter>,
}

/// Which builds to list.
#[derive(Debug, Clone, Default)]
pub struct BuildFilter {
    /// Only this pipeline's.
    pub pipeline: Option<String>,
    /// Only this branch's.
    pub branch: Option<String>,
    /// Only builds in this state.
    pub status: Option<BuildStatus>,
    /// Only builds with a smaller id (paging).
    pub before: Option<i64>,
    /// At most this many (newest first).
    pub limit: u32,
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The queue holds `max_queued_builds` already; nothing was recorded.
    #[error("the build queue is full")]
    QueueFull,
    /// The database failed (disk full, I/O error, corruption). Logged in
    /// detail; callers answer 503 without the detail.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// What a storage backend implements. Methods are async so that a network
/// database fits; the SQLite backend runs them on its own threads.
pub trait Backend: Send + Sync + fmt::Debug {
    /// Records deliveries (one per pipeline) and their builds in one
    /// transaction: all of them or none. A delivery id already recorded for
    /// a pipeline returns its first answer with `duplicate = true`.
    fn record_deliveries(
        &self,
        deliveries: Vec<NewDelivery>,
    ) -> BoxFuture<'_, Result<Vec<Recorded>, StoreError>>;

    /// One build by id.
    fn build(&self, id: i64) -> BoxFuture<'_, Result<Option<Build>, StoreError>>;

    /// Builds, newest first.
    fn builds(&self, filter: BuildFilter) -> BoxFuture<'_, Result<Vec<Build>, StoreError>>;

    /// How many builds are queued.
    fn queued_count(&self) -> BoxFuture<'_, Result<u64, StoreError>>;
}

/// Options for opening a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Past this many queued builds, recording fails with `QueueFull`.
    pub max_queued_builds: u64,
}

/// The store handle: cheap to clone, shared by the HTTP layer and workers.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    queued: Arc<Notify>,
}

impl Store {
    /// Opens (creating and migrating) the SQLite store at `path`.
    pub fn open_sqlite(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        let backend = sqlite::SqliteBackend::open(path, options)?;
        Ok(Store {
            backend: Arc::new(backend),
            queued: Arc::new(Notify::new()),
        })
    }

    /// Records deliveries and their builds; see [`Backend::record_deliveries`].
    /// Wakes workers when builds were queued.
    pub async fn record_deliveries(
        &self,
        deliveries: Vec<NewDelivery>,
    ) -> Result<Vec<Recorded>, StoreError> {
        let recorded = self.backend.record_deliveries(deliveries).await?;
        if recorded
            .iter()
            .any(|r| !r.duplicate && !r.build_ids.is_empty())
        {
            self.queued.notify_waiters();
            self.queued.notify_one();
        }
        Ok(recorded)
    }

    /// One build by id.
    pub async fn build(&self, id: i64) -> Result<Option<Build>, StoreError> {
        self.backend.build(id).await
    }

    /// Builds, newest first.
    pub async fn builds(&self, filter: BuildFilter) -> Result<Vec<Build>, StoreError> {
        self.backend.builds(filter).await
    }

    /// How many builds are queued.
    pub async fn queued_count(&self) -> Result<u64, StoreError> {
        self.backend.queued_count().await
    }

    /// Resolves when builds may have been queued since the last call: the
    /// workers' wake-up, instead of polling.
    pub async fn builds_queued(&self) {
        self.queued.notified().await;
    }
}

/// Now, as RFC 3339 UTC with milliseconds.
pub(crate) fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now
        .replace_nanosecond(now.millisecond() as u32 * 1_000_000)
        .unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}
