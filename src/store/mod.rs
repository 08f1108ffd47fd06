//! The store: deliveries and builds, durably.
//!
//! This is the only module that speaks SQL. Callers see [`Store`], a cheap
//! clone handle whose methods are async and backend-neutral; the SQLite
//! backend lives in [`sqlite`]. A second backend implements [`Backend`]
//! and [`outbox::Outbox`], calls [`outbox::state_changed`] for every state
//! change inside the changing transaction, maps its errors to a [`Cause`],
//! and passes `tests/store_conformance.rs`.
//!
//! Invariant: a write method returns `Ok` only after the transaction that
//! made the write has committed with `synchronous=FULL`.

mod migrations;
pub mod outbox;
mod sqlite;

use crate::model::PathFilter;
pub use crate::model::{Build, BuildStatus, StepStatus};
use crate::model::{Host, PushEvent};
use serde::Serialize;
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use time::OffsetDateTime;
use tokio::sync::Notify;

/// A boxed future, so that [`Backend`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A build to queue: the pipeline and the push that triggers it.
#[derive(Debug, Clone)]
pub struct NewBuild {
    /// The pipeline's name.
    pub pipeline: String,
    /// The push.
    pub push: PushEvent,
    /// The path rules the runner must decide from git; empty = none.
    pub path_filters: Vec<PathFilter>,
    /// The pipeline's concurrency is `supersede`: queuing this build cancels
    /// the same branch's older queued and running builds.
    pub supersede: bool,
    /// The commit status context this build reports under; `None` when the
    /// pipeline reports nothing. Every state change of the build then writes
    /// a report to the outbox in its own transaction.
    pub report_context: Option<String>,
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
    /// Hex SHA-256 of a signed body: a body seen before for this pipeline
    /// is a redelivery whatever its delivery id. `None` for unsigned ones.
    pub body_sha256: Option<String>,
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
    /// Running builds this delivery superseded; their runners must stop them.
    pub cancel_running: Vec<i64>,
    /// How many queued builds of the pipeline it superseded (cancelled).
    pub superseded_queued: u64,
}

/// What queuing a build by hand (a rebuild, a trigger) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manual {
    /// The new build's id.
    pub id: i64,
    /// Running builds it superseded; their runners must stop them.
    pub cancel_running: Vec<i64>,
    /// How many queued builds of the pipeline it superseded (cancelled).
    pub superseded_queued: u64,
}

/// A step of a build, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepRecord {
    /// The step's name.
    pub name: String,
    /// Its state.
    pub status: StepStatus,
    /// The exit code, once it exited.
    pub exit_code: Option<i64>,
    /// When it started.
    #[serde(serialize_with = "crate::model::ser_opt_time")]
    pub started_at: Option<OffsetDateTime>,
    /// When it ended.
    #[serde(serialize_with = "crate::model::ser_opt_time")]
    pub finished_at: Option<OffsetDateTime>,
}

/// How the worker may pick the next build: each pipeline's concurrency.
#[derive(Debug, Clone, Default)]
pub struct ClaimPolicy {
    /// Pipelines whose builds of one ref may run side by side (`parallel`).
    /// Every other pipeline runs one build per ref at a time, oldest first.
    pub parallel: std::collections::HashSet<String>,
}

/// What a cancel request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The build (of this pipeline) was queued; it is now cancelled.
    Cancelled {
        /// The build's pipeline.
        pipeline: String,
    },
    /// The build is running; its runner was asked to stop it.
    Requested,
    /// The build had already finished; nothing changed.
    AlreadyFinished,
    /// No such build.
    NotFound,
}

/// What happened to builds left `running` by a daemon that died.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Re-queued with attempt + 1.
    pub requeued: Vec<i64>,
    /// Ended as `error`: interrupted a second time.
    pub failed: Vec<i64>,
}

/// A commit status report waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportJob {
    /// The report's id.
    pub id: i64,
    /// The build it reports.
    pub build: Build,
    /// The status context.
    pub context: String,
    /// The build state it reports: queued, running, success, failure,
    /// error or cancelled.
    pub state: BuildStatus,
    /// The build's reason at that state (may be empty).
    pub description: String,
    /// Sends tried so far.
    pub attempts: i64,
    /// When it was written, Unix milliseconds.
    pub created_ms: i64,
}

/// Where a report stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportOutcome {
    /// Not sent yet, or being retried.
    Pending,
    /// The host accepted it.
    Delivered,
    /// Given up: a permanent refusal, or retries ran out.
    Failed,
    /// A newer state of the same commit and context replaced it unsent.
    Superseded,
}

/// The build state a report carries, named as a commit status names it:
/// a queued build reports `pending`. The store keeps the build state; the
/// name is this type's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportedState(pub BuildStatus);

impl ReportedState {
    /// The name the API and the pages show.
    pub fn as_str(self) -> &'static str {
        match self.0 {
            BuildStatus::Queued => "pending",
            other => other.as_str(),
        }
    }
}

impl fmt::Display for ReportedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ReportedState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl PartialEq<&str> for ReportedState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A report as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportRecord {
    /// The status context.
    pub context: String,
    /// The build state reported.
    pub state: ReportedState,
    /// Where it stands.
    pub outcome: ReportOutcome,
    /// Sends tried.
    pub attempts: i64,
    /// The last failure, as the host answered (never a token).
    pub last_error: Option<String>,
    /// When it was written.
    #[serde(serialize_with = "crate::model::ser_time")]
    pub created_at: OffsetDateTime,
    /// When the host accepted it.
    #[serde(serialize_with = "crate::model::ser_opt_time")]
    pub delivered_at: Option<OffsetDateTime>,
}

/// Events the store publishes after a commit, for the runners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// A running build should stop; the reason is already stored.
    CancelRequested(i64),
}

/// How long a delivery id is remembered (to answer a redelivery with the
/// first answer) once no build refers to it. Hosts redeliver within hours;
/// GitHub lets a user redeliver by hand for a few days.
pub const DELIVERY_MEMORY_DAYS: i64 = 30;

/// Which builds to list.
#[derive(Debug, Clone, Default)]
pub struct BuildFilter {
    /// Only this pipeline's.
    pub pipeline: Option<String>,
    /// Only this branch's.
    pub branch: Option<String>,
    /// Only builds in one of these states; empty = any state.
    pub statuses: Vec<BuildStatus>,
    /// Only builds with a smaller id (paging).
    pub before: Option<i64>,
    /// Only builds of this event (`push`, `tag`).
    pub event: Option<String>,
    /// At most this many (newest first).
    pub limit: u32,
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The queue holds `max_queued_builds` already; nothing was recorded.
    #[error("the build queue is full")]
    QueueFull,
    /// The database failed; nothing was recorded. Logged in detail;
    /// callers answer 503 without the detail, with a Retry-After that
    /// fits the cause.
    #[error("the store is unavailable ({}): {}", .0.cause, .0.detail)]
    Unavailable(Fault),
}

/// Why the database failed, and what it said (for the log only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// What kind of failure: callers decide by it.
    pub cause: Cause,
    /// The backend's own words; never shown to a caller.
    pub detail: String,
}

/// What kind of database failure, so that callers need not read words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Contention: the database is locked or busy; a retry soon may pass.
    Busy,
    /// The database cannot be reached (connection lost, server down, the
    /// writer stopped); a retry passes once it is back.
    Down,
    /// The database refused the write (disk full, I/O error, corruption, a
    /// schema it does not know): an operator must act.
    Failed,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cause::Busy => "busy",
            Cause::Down => "down",
            Cause::Failed => "failed",
        })
    }
}

impl Cause {
    /// How long a caller (a Git host, a client) should wait before it
    /// retries, in seconds.
    pub fn retry_after_secs(self) -> u32 {
        match self {
            Cause::Busy => 1,
            Cause::Down => 5,
            Cause::Failed => 30,
        }
    }
}

impl StoreError {
    /// An [`StoreError::Unavailable`] of `cause`.
    pub fn unavailable(cause: Cause, detail: impl fmt::Display) -> StoreError {
        StoreError::Unavailable(Fault {
            cause,
            detail: detail.to_string(),
        })
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
    /// Queues one build no delivery carried (a rebuild or a trigger), with
    /// the same admission control and supersede rule as a delivery's.
    fn queue_manual(
        &self,
        build: NewBuild,
        host: Option<Host>,
    ) -> BoxFuture<'_, Result<Manual, StoreError>>;

    fn build(&self, id: i64) -> BoxFuture<'_, Result<Option<Build>, StoreError>>;

    /// Builds, newest first.
    fn builds(&self, filter: BuildFilter) -> BoxFuture<'_, Result<Vec<Build>, StoreError>>;

    /// How many builds are queued.
    fn queued_count(&self) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// How many deliveries are remembered (for redeliveries), all pipelines.
    fn delivery_count(&self) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// True when `delivery_id` is remembered for `pipeline`.
    fn delivery_recorded(
        &self,
        pipeline: String,
        delivery_id: String,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// How many status reports wait in the outbox (to be sent or retried).
    fn pending_reports(&self) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Claims the oldest queued build that `policy` lets run now: marks it
    /// `running` and returns it.
    fn claim_next(&self, policy: ClaimPolicy) -> BoxFuture<'_, Result<Option<Build>, StoreError>>;

    /// Records a build's steps, all pending (replacing those of an earlier attempt).
    fn set_steps(&self, build: i64, names: Vec<String>) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Marks step `idx` running.
    fn step_started(&self, build: i64, idx: usize) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Marks step `idx` finished.
    fn step_finished(
        &self,
        build: i64,
        idx: usize,
        status: StepStatus,
        exit_code: Option<i32>,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// A build's steps, in order.
    fn steps(&self, build: i64) -> BoxFuture<'_, Result<Vec<StepRecord>, StoreError>>;

    /// Ends a running build in a final state. Pending steps become skipped.
    fn finish(
        &self,
        build: i64,
        status: BuildStatus,
        reason: Option<String>,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Puts a running build back in the queue (shutdown), keeping its attempt.
    fn requeue(&self, build: i64, reason: String) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Cancels a queued build, or asks a running one to stop.
    fn cancel(
        &self,
        build: i64,
        reason: String,
    ) -> BoxFuture<'_, Result<CancelOutcome, StoreError>>;

    /// Why a running build was asked to stop, if it was.
    fn cancel_reason(&self, build: i64) -> BoxFuture<'_, Result<Option<String>, StoreError>>;

    /// On start: builds left `running` are re-queued with attempt + 1, or
    /// end as `error` if this was their second interruption.
    fn recover(&self) -> BoxFuture<'_, Result<Recovery, StoreError>>;

    /// Deletes finished builds of `pipeline` beyond the newest `keep`;
    /// returns their ids (so their logs can be removed). Also forgets
    /// deliveries older than [`DELIVERY_MEMORY_DAYS`] that no build refers
    /// to any more (a bounded batch per call), so the table that recognises
    /// redeliveries does not grow forever.
    fn prune(&self, pipeline: String, keep: u32) -> BoxFuture<'_, Result<Vec<i64>, StoreError>>;

    /// Reports due at `now_ms`, oldest first, at most `limit`. First marks
    /// superseded every pending report for which a newer one exists for the
    /// same repository, commit and context: an older state is never sent
    /// after a newer one was written.
    fn due_reports(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<ReportJob>, StoreError>>;

    /// When the next pending report is due (Unix ms), if any is pending.
    fn next_report_due(&self) -> BoxFuture<'_, Result<Option<i64>, StoreError>>;

    /// Records a send: delivered, to be retried at `retry_at_ms`, or failed
    /// for good. `error` is the host's answer in words.
    fn report_attempted(
        &self,
        id: i64,
        outcome: ReportOutcome,
        retry_at_ms: Option<i64>,
        error: Option<String>,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// A build's reports, oldest first.
    fn reports(&self, build: i64) -> BoxFuture<'_, Result<Vec<ReportRecord>, StoreError>>;

    /// Records where a build queued by hand came from.
    fn record_origin(
        &self,
        build: i64,
        origin: BuildOrigin,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Where a build queued by hand came from; `None` for a pushed build.
    fn origin(&self, build: i64) -> BoxFuture<'_, Result<Option<BuildOrigin>, StoreError>>;

    /// The newest build of each branch of `pipeline`, newest first, at
    /// most `limit`.
    fn latest_per_branch(
        &self,
        pipeline: String,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<Build>, StoreError>>;

    /// The newest build id and every queued or running build with its
    /// state: what changes when a build is queued, starts or ends.
    fn activity(&self) -> BoxFuture<'_, Result<Activity, StoreError>>;
}

/// The newest build id, and every queued or running build with its state.
pub type Activity = (i64, Vec<(i64, String)>);

/// Where a build no push carried came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildOrigin {
    /// The build it re-runs, for a rebuild.
    pub rebuild_of: Option<i64>,
    /// Who asked for it (`admin`: the admin token).
    pub triggered_by: String,
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
    reports: Arc<Notify>,
    events: tokio::sync::broadcast::Sender<StoreEvent>,
}

impl Store {
    /// Opens (creating and migrating) the SQLite store at `path`.
    pub fn open_sqlite(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        let backend = sqlite::SqliteBackend::open(path, options)?;
        Ok(Store {
            backend: Arc::new(backend),
            queued: Arc::new(Notify::new()),
            reports: Arc::new(Notify::new()),
            events: tokio::sync::broadcast::channel(256).0,
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
            self.wake_workers();
        }
        for id in recorded.iter().flat_map(|r| &r.cancel_running) {
            let _ = self.events.send(StoreEvent::CancelRequested(*id));
        }
        Ok(recorded)
    }

    /// Queues one build by hand; see [`Backend::queue_manual`]. Wakes the
    /// workers and stops the running builds it supersedes.
    pub async fn queue_manual(
        &self,
        build: NewBuild,
        host: Option<Host>,
    ) -> Result<Manual, StoreError> {
        let queued = self.backend.queue_manual(build, host).await?;
        self.wake_workers();
        for id in &queued.cancel_running {
            let _ = self.events.send(StoreEvent::CancelRequested(*id));
        }
        Ok(queued)
    }

    /// Wakes the workers (builds may be claimable) and the reporter (a
    /// state change may have written a report).
    pub fn wake_workers(&self) {
        self.queued.notify_one();
        self.reports.notify_one();
    }

    /// Resolves when reports may have been written since the last call.
    pub async fn reports_written(&self) {
        self.reports.notified().await;
    }

    /// See [`Backend::due_reports`].
    pub async fn due_reports(&self, now_ms: i64, limit: u32) -> Result<Vec<ReportJob>, StoreError> {
        self.backend.due_reports(now_ms, limit).await
    }

    /// See [`Backend::next_report_due`].
    pub async fn next_report_due(&self) -> Result<Option<i64>, StoreError> {
        self.backend.next_report_due().await
    }

    /// See [`Backend::report_attempted`].
    pub async fn report_attempted(
        &self,
        id: i64,
        outcome: ReportOutcome,
        retry_at_ms: Option<i64>,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        self.backend
            .report_attempted(id, outcome, retry_at_ms, error)
            .await
    }

    /// See [`Backend::reports`].
    pub async fn reports(&self, build: i64) -> Result<Vec<ReportRecord>, StoreError> {
        self.backend.reports(build).await
    }

    /// Events published after commits (cancel requests).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<StoreEvent> {
        self.events.subscribe()
    }

    /// See [`Backend::claim_next`].
    pub async fn claim_next(&self, policy: ClaimPolicy) -> Result<Option<Build>, StoreError> {
        let claimed = self.backend.claim_next(policy).await?;
        if claimed.is_some() {
            self.reports.notify_one();
        }
        Ok(claimed)
    }

    /// See [`Backend::set_steps`].
    pub async fn set_steps(&self, build: i64, names: Vec<String>) -> Result<(), StoreError> {
        self.backend.set_steps(build, names).await
    }

    /// See [`Backend::step_started`].
    pub async fn step_started(&self, build: i64, idx: usize) -> Result<(), StoreError> {
        self.backend.step_started(build, idx).await
    }

    /// See [`Backend::step_finished`].
    pub async fn step_finished(
        &self,
        build: i64,
        idx: usize,
        status: StepStatus,
        exit_code: Option<i32>,
    ) -> Result<(), StoreError> {
        self.backend
            .step_finished(build, idx, status, exit_code)
            .await
    }

    /// See [`Backend::steps`].
    pub async fn steps(&self, build: i64) -> Result<Vec<StepRecord>, StoreError> {
        self.backend.steps(build).await
    }

    /// See [`Backend::finish`]. Wakes the workers: a build of the same ref
    /// may now run.
    pub async fn finish(
        &self,
        build: i64,
        status: BuildStatus,
        reason: Option<String>,
    ) -> Result<(), StoreError> {
        self.backend.finish(build, status, reason).await?;
        self.wake_workers();
        Ok(())
    }

    /// See [`Backend::requeue`].
    pub async fn requeue(&self, build: i64, reason: String) -> Result<(), StoreError> {
        self.backend.requeue(build, reason).await?;
        self.wake_workers();
        Ok(())
    }

    /// See [`Backend::cancel`]. A running build's runner is told at once.
    pub async fn cancel(&self, build: i64, reason: String) -> Result<CancelOutcome, StoreError> {
        let outcome = self.backend.cancel(build, reason).await?;
        match outcome {
            CancelOutcome::Requested => {
                let _ = self.events.send(StoreEvent::CancelRequested(build));
            }
            CancelOutcome::Cancelled { .. } => self.wake_workers(),
            CancelOutcome::AlreadyFinished | CancelOutcome::NotFound => {}
        }
        Ok(outcome)
    }

    /// See [`Backend::cancel_reason`].
    pub async fn cancel_reason(&self, build: i64) -> Result<Option<String>, StoreError> {
        self.backend.cancel_reason(build).await
    }

    /// See [`Backend::recover`].
    pub async fn recover(&self) -> Result<Recovery, StoreError> {
        let recovery = self.backend.recover().await?;
        self.reports.notify_one();
        Ok(recovery)
    }

    /// See [`Backend::prune`].
    pub async fn prune(&self, pipeline: String, keep: u32) -> Result<Vec<i64>, StoreError> {
        self.backend.prune(pipeline, keep).await
    }

    /// One build by id.
    pub async fn build(&self, id: i64) -> Result<Option<Build>, StoreError> {
        self.backend.build(id).await
    }

    /// Builds, newest first.
    /// The newest build of `pipeline`, whatever its state.
    pub async fn latest_build(&self, pipeline: &str) -> Result<Option<Build>, StoreError> {
        let filter = BuildFilter {
            pipeline: Some(pipeline.to_owned()),
            limit: 1,
            ..BuildFilter::default()
        };
        Ok(self.builds(filter).await?.into_iter().next())
    }

    /// See [`Backend::builds`].
    pub async fn builds(&self, filter: BuildFilter) -> Result<Vec<Build>, StoreError> {
        self.backend.builds(filter).await
    }

    /// See [`Backend::record_origin`].
    pub async fn record_origin(&self, build: i64, origin: BuildOrigin) -> Result<(), StoreError> {
        self.backend.record_origin(build, origin).await
    }

    /// See [`Backend::origin`].
    pub async fn origin(&self, build: i64) -> Result<Option<BuildOrigin>, StoreError> {
        self.backend.origin(build).await
    }

    /// See [`Backend::latest_per_branch`].
    pub async fn latest_per_branch(
        &self,
        pipeline: &str,
        limit: u32,
    ) -> Result<Vec<Build>, StoreError> {
        self.backend
            .latest_per_branch(pipeline.to_owned(), limit)
            .await
    }

    /// See [`Backend::activity`].
    pub async fn activity(&self) -> Result<Activity, StoreError> {
        self.backend.activity().await
    }

    /// How many builds are queued.
    pub async fn queued_count(&self) -> Result<u64, StoreError> {
        self.backend.queued_count().await
    }

    /// See [`Backend::delivery_count`].
    pub async fn delivery_count(&self) -> Result<u64, StoreError> {
        self.backend.delivery_count().await
    }

    /// See [`Backend::delivery_recorded`].
    pub async fn delivery_recorded(
        &self,
        pipeline: &str,
        delivery_id: &str,
    ) -> Result<bool, StoreError> {
        self.backend
            .delivery_recorded(pipeline.to_owned(), delivery_id.to_owned())
            .await
    }

    /// See [`Backend::pending_reports`].
    pub async fn pending_reports(&self) -> Result<u64, StoreError> {
        self.backend.pending_reports().await
    }

    /// Resolves when builds may have been queued since the last call: the
    /// workers' wake-up, instead of polling.
    pub async fn builds_queued(&self) {
        self.queued.notified().await;
    }
}

/// Now, as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    crate::model::rfc3339(OffsetDateTime::now_utc())
}
