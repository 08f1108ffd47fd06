//! The store: deliveries and builds, durably.
//!
//! This is the only module that speaks SQL. Callers see [`Store`], a cheap
//! clone handle whose methods are async and backend-neutral; the SQLite
//! backend lives in [`sqlite`]. A second backend implements [`Backend`]
//! and [`outbox::Outbox`], calls [`outbox::state_changed`] for every state
//! change inside the changing transaction, maps its errors to a [`Cause`],
//! and passes `tests/suite/store_conformance.rs`.
//!
//! Invariant: a write method returns `Ok` only after the transaction that
//! made the write has committed with `synchronous=FULL`.

mod migrations;
pub mod outbox;
mod pg_migrations;
mod postgres;
mod sqlite;

pub use postgres::PgOptions;
pub use sqlite::{Damage, check_file};

use crate::model::PathFilter;
pub use crate::model::{Build, BuildStatus, StepStatus};
use crate::model::{CommitId, Host, PushEvent};
use serde::{Deserialize, Serialize};
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
    /// The pipeline's concurrency is `supersede`, or the build is a pull
    /// request's: queuing this build cancels the same ref's older waiting,
    /// queued and running builds.
    pub supersede: bool,
    /// Recorded `waiting` (a fork's pull request until an admin approves
    /// it) rather than `queued`.
    pub waiting: bool,
    /// The commit status context this build reports under; `None` when the
    /// pipeline reports nothing. Every state change of the build then writes
    /// a report to the outbox in its own transaction.
    pub report_context: Option<String>,
    /// The revision of the pipeline file it was matched with
    /// (`Pipeline::revision`); `None` where none is known.
    pub pipeline_revision: Option<String>,
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
    /// A closed pull request: its ref's builds that have not ended are
    /// cancelled (waiting and queued ones at once, running ones asked to
    /// stop, as `Recorded::cancel_running`).
    pub close: Option<CloseRef>,
}

/// The builds of one ref to end, and why (a pull request was closed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRef {
    /// The ref their builds were queued under.
    pub git_ref: String,
    /// The reason each cancelled build gets.
    pub reason: String,
}

/// What an approval did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApproveOutcome {
    /// The build was waiting; it is queued now.
    Approved,
    /// The build is not waiting (its state is given); nothing changed.
    NotWaiting(BuildStatus),
    /// No such build.
    NotFound,
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
    /// Why a skipped step did not run, when the runner said
    /// ("passed in #5" in a rebuild from the failed step).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A step as the runner records it before the build's first step starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStep {
    /// The step's name.
    pub name: String,
    /// `Some(why)`: the step will not run and is recorded `skipped` at once.
    pub skipped: Option<String>,
}

/// How the worker may pick the next build: each pipeline's concurrency.
#[derive(Debug, Clone, Default)]
pub struct ClaimPolicy {
    /// Pipelines whose builds of one ref may run side by side (`parallel`).
    /// Every other pipeline runs one build per ref at a time, oldest first.
    pub parallel: std::collections::HashSet<String>,
    /// Pipelines whose builds this runner must leave to others: their
    /// `runs_on` names a label it does not offer.
    pub elsewhere: std::collections::HashSet<String>,
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
    /// Ended as `cancelled`: a stop was asked while it ran, and its runner
    /// went before it could stop it (it does not run again).
    pub cancelled: Vec<i64>,
}

/// Who holds a claim: this process's runner id (its `node` and a nonce
/// drawn at start, so that a restarted process is another runner) and how
/// long a lease lasts before it must be renewed ([`Backend::renew`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The runner id recorded on the claimed build.
    pub runner: String,
    /// The lease, in milliseconds of the database's clock.
    pub lease_ms: i64,
}

/// The fence on a runner's writes for one build: they change something
/// only while the build is `running` under this runner id and attempt.
/// Otherwise the write changes nothing and fails [`StoreError::Fenced`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The runner id the claim recorded.
    pub runner: String,
    /// The attempt the claim ran.
    pub attempt: i64,
}

/// Where a build's log stands in a store that keeps logs (PostgreSQL:
/// runners ship them there, so that every receiver serves them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogHead {
    /// The log's run: a new one each time a claim of the build begins its
    /// log ([`Backend::log_begin`]), so that a reader never mixes the bytes
    /// of two runs (attempt 1's and attempt 2's).
    pub run: i64,
    /// The attempt whose log it is.
    pub attempt: i64,
    /// Bytes shipped so far.
    pub length: u64,
    /// The runner wrote it all: no byte will be added.
    pub complete: bool,
    /// The run's runner still holds the build (same runner id and
    /// attempt): more may come. False once the build was rescued,
    /// re-queued or claimed again.
    pub writer_holds: bool,
    /// The build is `running`.
    pub running: bool,
}

/// A piece of a log in the store: its bytes from `offset` on, and the
/// line-time records of those bytes (16-byte records as in
/// `runner::log::times`: offset and Unix ms, little-endian).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogChunk {
    /// The byte offset of `data` in the log.
    pub offset: u64,
    /// The (masked) bytes.
    pub data: Vec<u8>,
    /// Their line-time records.
    pub times: Vec<u8>,
}

/// A runner process as it registers itself in the store, and refreshes
/// its row on each heartbeat ([`Backend::runner_seen`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerInfo {
    /// Its runner id ([`Store::runner_id`]): node and start nonce.
    pub runner_id: String,
    /// Its `node`.
    pub node: String,
    /// Its role (`all` or `runner`).
    pub role: String,
    /// Its `labels`.
    pub labels: Vec<String>,
    /// The hookci version it runs.
    pub version: String,
    /// Its `max_parallel_builds`.
    pub max_parallel: i64,
    /// How often it refreshes its row, in ms: missing
    /// [`RUNNER_GONE_AFTER_BEATS`] of them, it is shown gone.
    pub heartbeat_ms: i64,
}

/// How many heartbeats a runner may miss before it is shown gone.
pub const RUNNER_GONE_AFTER_BEATS: i64 = 3;

/// How long the row of a runner not seen is kept (shown gone) before any
/// runner's heartbeat forgets it, in ms: an hour.
pub const RUNNER_FORGOTTEN_AFTER_MS: i64 = 3_600_000;

/// A runner as the store lists it (`GET /api/runners`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunnerRecord {
    /// Its runner id: node and start nonce.
    pub id: String,
    /// Its `node`.
    pub node: String,
    /// Its role.
    pub role: String,
    /// Its `labels`.
    pub labels: Vec<String>,
    /// The hookci version it runs.
    pub version: String,
    /// Its `max_parallel_builds`.
    pub max_parallel_builds: i64,
    /// How many builds run under its runner id now.
    pub running: i64,
    /// When it registered.
    #[serde(serialize_with = "crate::model::ser_time")]
    pub started_at: OffsetDateTime,
    /// Its last heartbeat.
    #[serde(serialize_with = "crate::model::ser_time")]
    pub last_seen_at: OffsetDateTime,
    /// It missed [`RUNNER_GONE_AFTER_BEATS`] heartbeats (by the store's
    /// clock): it died or lost the database.
    pub gone: bool,
}

/// The lease length when the config names none.
pub const DEFAULT_LEASE: std::time::Duration = std::time::Duration::from_secs(30);

/// Why a build goes back to the queue when its runner's lease ran out.
pub const LEASE_LOST: &str = "interrupted: its runner stopped renewing its lease";

/// Why a build ends `error` when its runner's lease ran out a second time.
pub const LEASE_LOST_TWICE: &str = "interrupted twice: its runner stopped renewing its lease";

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
            BuildStatus::Waiting | BuildStatus::Queued => "pending",
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
    /// Events from other processes may have been missed (the database
    /// connection that hears them was lost, or the fallback poll came
    /// round): look again at every running build.
    Resync,
}

/// What one process tells the others sharing its database, after a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announce {
    /// Builds may be claimable (queued, or a ref freed), and reports written.
    Queued,
    /// Reports may have been written.
    Reports,
    /// A running build was asked to stop.
    Cancel(i64),
    /// A build's log (in the store) began or grew.
    Log(i64),
    /// Announcements may have been missed: treat everything as changed.
    Resync,
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
    /// Only builds of this event (`push`, `tag`, `pull_request`).
    pub event: Option<String>,
    /// Only builds of this ref (for a pull request: its pull ref).
    pub git_ref: Option<String>,
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
    /// A runner's write for a build it no longer holds (its lease ran out
    /// and the build was rescued, or it ended): nothing was written.
    #[error("this runner no longer holds the build's lease; nothing was written")]
    Fenced,
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

    /// Queues one build no delivery carried (a rebuild or a trigger), with
    /// the same admission control and supersede rule as a delivery's, and
    /// where it came from, in one transaction: a worker that claims it
    /// finds its origin (a rebuild from the failed step needs it to start).
    fn queue_manual(
        &self,
        build: NewBuild,
        host: Option<Host>,
        origin: BuildOrigin,
    ) -> BoxFuture<'_, Result<Manual, StoreError>>;

    /// One build by id.
    fn build(&self, id: i64) -> BoxFuture<'_, Result<Option<Build>, StoreError>>;

    /// Builds, newest first.
    fn builds(&self, filter: BuildFilter) -> BoxFuture<'_, Result<Vec<Build>, StoreError>>;

    /// How many builds are queued or waiting for approval: what
    /// `max_queued_builds` limits.
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
    /// `running` under `holder`'s runner id with a lease of
    /// `holder.lease_ms` from now (the database's clock), and returns it.
    fn claim_next(
        &self,
        policy: ClaimPolicy,
        holder: Holder,
    ) -> BoxFuture<'_, Result<Option<Build>, StoreError>>;

    /// Renews by `lease_ms` from now the lease of each of `builds` still
    /// running under runner id `runner`, in one write; returns those with
    /// their attempt. One missing is lost to the runner.
    fn renew(
        &self,
        runner: String,
        lease_ms: i64,
        builds: Vec<i64>,
    ) -> BoxFuture<'_, Result<Vec<(i64, i64)>, StoreError>>;

    /// Rescues the running builds whose lease ran out (their runner died,
    /// was cut off or paused): re-queued with attempt + 1, or ended `error`
    /// if this was their second interruption, with their reports, in one
    /// transaction. Whatever their old runner writes after is fenced.
    fn rescue(&self) -> BoxFuture<'_, Result<Recovery, StoreError>>;

    /// Records a build's steps, pending or skipped with a reason, in one
    /// write (replacing those of an earlier attempt). Fenced by `fence`.
    fn set_steps(
        &self,
        build: i64,
        steps: Vec<PlannedStep>,
        fence: Option<Fence>,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Marks step `idx` running. Fenced by `fence`.
    fn step_started(
        &self,
        build: i64,
        idx: usize,
        fence: Option<Fence>,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Marks step `idx` finished. Fenced by `fence`.
    fn step_finished(
        &self,
        build: i64,
        idx: usize,
        status: StepStatus,
        exit_code: Option<i32>,
        fence: Option<Fence>,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// A build's steps, in order.
    fn steps(&self, build: i64) -> BoxFuture<'_, Result<Vec<StepRecord>, StoreError>>;

    /// Ends a running build in a final state. Pending steps become skipped.
    /// Fenced by `fence`.
    fn finish(
        &self,
        build: i64,
        status: BuildStatus,
        reason: Option<String>,
        fence: Option<Fence>,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Puts a running build back in the queue (shutdown), keeping its
    /// attempt. Fenced by `fence`.
    fn requeue(
        &self,
        build: i64,
        reason: String,
        fence: Option<Fence>,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Cancels a queued build, or asks a running one to stop.
    fn cancel(
        &self,
        build: i64,
        reason: String,
    ) -> BoxFuture<'_, Result<CancelOutcome, StoreError>>;

    /// Records the commit a build queued without one was found to be (a
    /// Gogs pull request: its payload names no commit; the runner resolves
    /// the pull ref). Changes nothing for a build that has a commit.
    fn resolve_commit(&self, build: i64, commit: CommitId)
    -> BoxFuture<'_, Result<(), StoreError>>;

    /// Moves a `waiting` build to `queued` (an admin approved it), writing
    /// its report in the same transaction.
    fn approve(&self, build: i64) -> BoxFuture<'_, Result<ApproveOutcome, StoreError>>;

    /// Why a running build was asked to stop, if it was.
    fn cancel_reason(&self, build: i64) -> BoxFuture<'_, Result<Option<String>, StoreError>>;

    /// On start: builds left `running` (by this node, where several share
    /// the store, and only those of its processes that are gone: see
    /// [`Backend::hold_runner_mark`]) are re-queued with attempt + 1, or
    /// end as `error` if this was their second interruption.
    /// [`Store::recover`] also rescues.
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
    /// Where several processes share the store, only the one that holds
    /// the reporter role gets any (each report has one sender); the others
    /// get none, and `None` from [`Backend::next_report_due`].
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

    /// Begins build `build`'s log for the claim `fence` names: a new run,
    /// empty, replacing an earlier run's (its bytes go at once). Returns
    /// the run, or `None` where the store keeps no logs: the embedded
    /// SQLite store, whose one process reads its logs from its own files.
    /// Fenced by the runner id and attempt only (not the build's state), so
    /// that a runner may complete a log after its build's end was recorded;
    /// a rescued, re-queued or re-claimed build refuses it.
    fn log_begin(
        &self,
        _build: i64,
        _fence: Fence,
    ) -> BoxFuture<'_, Result<Option<i64>, StoreError>> {
        Box::pin(async { Ok(None) })
    }

    /// Appends `chunk` to run `run` of `build`'s log (its offset must be
    /// the log's length), with its line times; `complete` marks the log
    /// complete after it. A chunk already appended (a retry whose answer
    /// was lost) changes nothing. Fenced as [`Backend::log_begin`], and by
    /// the run: a newer run refuses it. Wakes the readers of other
    /// processes. Nothing where the store keeps no logs.
    fn log_append(
        &self,
        _build: i64,
        _run: i64,
        _chunk: LogChunk,
        _complete: bool,
        _fence: Fence,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    /// Where `build`'s log stands; `None` when none was begun (or the
    /// store keeps no logs).
    fn log_head(&self, _build: i64) -> BoxFuture<'_, Result<Option<LogHead>, StoreError>> {
        Box::pin(async { Ok(None) })
    }

    /// The chunks of run `run` of `build`'s log from byte `from` on (a
    /// chunk boundary), in order, at most `max` of them; none when `run`
    /// is not the log's run any more.
    fn log_chunks(
        &self,
        _build: i64,
        _run: i64,
        _from: u64,
        _max: u32,
    ) -> BoxFuture<'_, Result<Vec<LogChunk>, StoreError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Registers a runner process, or refreshes its row: its info, and
    /// now (the store's clock) as its last heartbeat; its start time is
    /// kept from its first call.
    fn runner_seen(&self, info: RunnerInfo) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Removes a runner's row (it stops cleanly).
    fn runner_gone(&self, runner_id: String) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Forgets the runners last seen more than `older_than_ms` ago;
    /// returns how many.
    fn forget_runners(&self, older_than_ms: i64) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Every registered runner, by node then runner id, with how many
    /// builds run under its id now and whether it is gone.
    fn runners(&self) -> BoxFuture<'_, Result<Vec<RunnerRecord>, StoreError>>;

    /// Marks runner `runner_id` (this process) alive for as long as the
    /// process lives, so that another process of the same `node` that
    /// starts meanwhile does not take this one's running builds for those
    /// of a dead predecessor ([`Backend::recover`] passes them over).
    /// Called before the first claim and on every lease heartbeat; cheap
    /// once held. Nothing where one process owns the store.
    fn hold_runner_mark(&self, _runner_id: String) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    /// Tells the other processes on this database, best effort (a missed
    /// one is made up by their fallback poll). Nothing for a store only
    /// this process opens.
    fn announce(&self, _event: Announce) {}

    /// What other processes announce, until `stop`; `None` for a store
    /// only this process opens. A backend that can lose announcements
    /// (a dropped connection) sends [`Announce::Resync`] after, and also
    /// on a fallback poll.
    fn announcements(
        &self,
        _stop: tokio_util::sync::CancellationToken,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<Announce>> {
        None
    }
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
    /// For a rebuild from the failed step: where it starts.
    pub resume: Option<Resume>,
}

/// Where a rebuild from the failed step starts, and why each step before it
/// does not run. The new build checks the commit out fresh: files those
/// steps made in their workspace are not there (see README, "Re-run from
/// the failed step").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// The index of the first step that runs.
    pub from: usize,
    /// Its name (the pipeline may have changed since).
    pub from_name: String,
    /// The steps before it, in order, each with why it does not run.
    pub skipped: Vec<SkippedStep>,
}

/// A step a [`Resume`] does not run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedStep {
    /// The step's name.
    pub name: String,
    /// Why it does not run: "passed in #5".
    pub reason: String,
}

impl Resume {
    /// A rebuild of `build` (with its `steps`) from the step that failed
    /// it: the last step that failed (a step allowed to fail comes before
    /// it, and nothing runs after it). The steps before it carry where they
    /// passed, which for a step skipped by an earlier resume is the build it
    /// passed in then. Why not, in one sentence.
    pub fn from_failed(build: &Build, steps: &[StepRecord]) -> Result<Resume, String> {
        let id = build.id;
        if build.status != BuildStatus::Failure {
            return Err(format!(
                "build {id} is {}: only a failed build can be re-run from its failed step",
                build.status
            ));
        }
        let Some(from) = steps.iter().rposition(|s| s.status == StepStatus::Failure) else {
            return Err(format!(
                "build {id} failed before a step failed: re-run it whole"
            ));
        };
        let skipped = steps[..from]
            .iter()
            .map(|s| {
                let reason = match (s.status, &s.reason) {
                    (StepStatus::Success, _) => format!("passed in #{id}"),
                    (StepStatus::Failure, _) => format!("failed in #{id}, allowed to fail"),
                    (StepStatus::Skipped, Some(why)) => why.clone(),
                    _ => {
                        return Err(format!(
                            "step {} of build {id} did not run: re-run it whole",
                            s.name
                        ));
                    }
                };
                Ok(SkippedStep {
                    name: s.name.clone(),
                    reason,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Resume {
            from,
            from_name: steps[from].name.clone(),
            skipped,
        })
    }

    /// True when a pipeline with these step names still has the steps this
    /// resume skips, and the one it starts at, in the same places.
    pub fn fits<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> bool {
        let mut names = names.into_iter();
        self.skipped
            .iter()
            .map(|s| s.name.as_str())
            .chain(std::iter::once(self.from_name.as_str()))
            .all(|want| names.next() == Some(want))
    }

    /// The steps a build of a pipeline with these step names records
    /// first: the skipped ones with their reason, the rest pending.
    pub fn plan(&self, names: Vec<String>) -> Vec<PlannedStep> {
        names
            .into_iter()
            .enumerate()
            .map(|(i, name)| PlannedStep {
                skipped: self.skipped.get(i).map(|s| s.reason.clone()),
                name,
            })
            .collect()
    }
}

/// Options for opening a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Past this many queued builds (waiting ones count too: anyone who can
    /// open a pull request can add them), recording fails with `QueueFull`.
    pub max_queued_builds: u64,
}

/// The store handle: cheap to clone, shared by the HTTP layer and workers.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    queued: Arc<Notify>,
    reports: Arc<Notify>,
    events: tokio::sync::broadcast::Sender<StoreEvent>,
    /// Logs that grew in other processes: `Some(build)`, or `None` when
    /// announcements may have been missed.
    logs: tokio::sync::broadcast::Sender<Option<i64>>,
    /// Stops hearing other processes once the last handle is dropped.
    _hearing: Option<Arc<tokio_util::sync::DropGuard>>,
    /// This handle's runner id and lease length: what its claims record.
    holder: Holder,
    /// The (build, attempt)s this handle claimed and has not ended, each
    /// with whether its lease is lost (not renewed, or not in time: nothing
    /// more is written for it, and it is no longer renewed). The fence of
    /// its writes.
    held: Arc<std::sync::Mutex<std::collections::HashMap<(i64, i64), bool>>>,
    /// The claim whose run this handle serves ([`Store::for_run`]): its
    /// writes for that build carry that attempt, even once the same
    /// process claimed the build again.
    pinned: Option<(i64, i64)>,
}

/// A runner id: `node` and a nonce, so that a restarted process (or
/// another handle) is another runner.
fn runner_id(node: &str) -> String {
    format!("{node}/{:08x}", rand::random::<u32>())
}

/// The `node` part of a [`runner_id`].
fn node_of(runner_id: &str) -> String {
    runner_id
        .rsplit_once('/')
        .map_or(runner_id, |(node, _)| node)
        .to_owned()
}

impl Store {
    /// Opens (creating and migrating) the SQLite store at `path`; its
    /// builds run on the node `local`.
    pub fn open_sqlite(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        Store::open_sqlite_as(path, options, "local")
    }

    /// Opens the SQLite store at `path` for the process named `node`.
    pub fn open_sqlite_as(
        path: &Path,
        options: StoreOptions,
        node: &str,
    ) -> Result<Store, StoreError> {
        let backend = sqlite::SqliteBackend::open(path, options)?;
        Ok(Store::with_backend(Arc::new(backend), node))
    }

    /// Opens (migrating) the PostgreSQL store `pg` names. Fails `Down`
    /// when the server cannot be reached, `Failed` when it refuses.
    pub async fn open_postgres(pg: PgOptions, options: StoreOptions) -> Result<Store, StoreError> {
        let node = pg.node.clone();
        let backend = postgres::PostgresBackend::open(pg, options).await?;
        Ok(Store::with_backend(Arc::new(backend), &node))
    }

    /// A handle over `backend`; what other processes announce wakes this
    /// one's workers and reporter and reaches its runners, as its own
    /// writes do (must run inside a runtime when the backend announces).
    fn with_backend(backend: Arc<dyn Backend>, node: &str) -> Store {
        let queued = Arc::new(Notify::new());
        let reports = Arc::new(Notify::new());
        let events = tokio::sync::broadcast::channel(256).0;
        let logs = tokio::sync::broadcast::channel(1024).0;
        let stop = tokio_util::sync::CancellationToken::new();
        let hearing = backend.announcements(stop.clone()).map(|mut heard| {
            let (queued, reports, events, logs) = (
                Arc::clone(&queued),
                Arc::clone(&reports),
                events.clone(),
                logs.clone(),
            );
            let stopped = stop.clone();
            tokio::spawn(async move {
                loop {
                    let event = tokio::select! {
                        () = stopped.cancelled() => return,
                        event = heard.recv() => event,
                    };
                    match event {
                        None => return,
                        Some(Announce::Queued) => {
                            queued.notify_one();
                            reports.notify_one();
                        }
                        Some(Announce::Reports) => reports.notify_one(),
                        Some(Announce::Cancel(id)) => {
                            let _ = events.send(StoreEvent::CancelRequested(id));
                        }
                        Some(Announce::Log(id)) => {
                            let _ = logs.send(Some(id));
                        }
                        Some(Announce::Resync) => {
                            queued.notify_one();
                            reports.notify_one();
                            let _ = events.send(StoreEvent::Resync);
                            let _ = logs.send(None);
                        }
                    }
                }
            });
            Arc::new(stop.drop_guard())
        });
        Store {
            backend,
            queued,
            reports,
            events,
            logs,
            _hearing: hearing,
            holder: Holder {
                runner: runner_id(node),
                lease_ms: DEFAULT_LEASE.as_millis() as i64,
            },
            held: Arc::default(),
            pinned: None,
        }
    }

    /// This handle with leases of `lease` (the `lease` key; at least 1 s).
    pub fn with_lease(mut self, lease: std::time::Duration) -> Store {
        self.holder.lease_ms = lease.as_millis().clamp(1_000, i64::MAX as u128) as i64;
        self
    }

    /// A handle on the same store that claims as another runner (a runner
    /// id of its own, no builds held): what a second process would be.
    pub fn another_runner(&self) -> Store {
        let node = self
            .holder
            .runner
            .rsplit_once('/')
            .map_or("local", |(n, _)| n);
        let mut other = self.clone();
        other.holder.runner = runner_id(node);
        other.held = Arc::default();
        other.pinned = None;
        other
    }

    /// This handle's runner id.
    pub fn runner_id(&self) -> &str {
        &self.holder.runner
    }

    /// How long a lease lasts.
    pub fn lease(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.holder.lease_ms.max(0) as u64)
    }

    /// True when other processes may share this store: leases must be
    /// renewed and expired ones rescued (not on embedded SQLite, which one
    /// process opens).
    pub fn shared(&self) -> bool {
        self._hearing.is_some()
    }

    fn held_lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<(i64, i64), bool>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A handle for the run of `build` this handle claimed: its writes for
    /// the build are fenced by that claim's attempt.
    pub fn for_run(&self, build: &Build) -> Store {
        let mut run = self.clone();
        run.pinned = Some((build.id, build.attempt));
        run
    }

    /// The claim of `build` this handle's writes are for: the pinned one,
    /// else the newest held.
    fn claim_of(&self, build: i64) -> Option<(i64, i64)> {
        match self.pinned {
            Some((b, a)) if b == build => Some((b, a)),
            _ => self
                .held_lock()
                .keys()
                .filter(|(b, _)| *b == build)
                .max()
                .copied(),
        }
    }

    /// The fence of this handle's writes for `build`: `None` for a build
    /// it did not claim; [`StoreError::Fenced`] at once for one whose lease
    /// it knows it lost.
    fn fence(&self, build: i64) -> Result<Option<Fence>, StoreError> {
        let Some(claim) = self.claim_of(build) else {
            return Ok(None);
        };
        match self.held_lock().get(&claim) {
            // Released: its end was written; nothing more is.
            None => Err(StoreError::Fenced),
            Some(true) => Err(StoreError::Fenced),
            Some(false) => Ok(Some(Fence {
                runner: self.holder.runner.clone(),
                attempt: claim.1,
            })),
        }
    }

    /// Forgets `build`'s lease once its end is written; once refused, the
    /// lease is lost (any later write for it is refused at once).
    fn release(&self, build: i64, result: &Result<(), StoreError>) {
        let Some(claim) = self.claim_of(build) else {
            return;
        };
        let mut held = self.held_lock();
        match result {
            Ok(()) => {
                held.remove(&claim);
            }
            Err(StoreError::Fenced) => {
                if let Some(lost) = held.get_mut(&claim) {
                    *lost = true;
                }
            }
            Err(_) => {}
        }
    }

    /// Renews the leases of the builds this handle holds; returns the ids
    /// of those it lost (rescued, or claimed by another runner since):
    /// nothing more is written for them. See [`Backend::renew`].
    pub async fn renew(&self) -> Result<Vec<i64>, StoreError> {
        let claims: Vec<(i64, i64)> = self
            .held_lock()
            .iter()
            .filter(|(_, lost)| !**lost)
            .map(|(claim, _)| *claim)
            .collect();
        let mut ids: Vec<i64> = claims.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let renewed = self
            .backend
            .renew(
                self.holder.runner.clone(),
                self.holder.lease_ms,
                ids.clone(),
            )
            .await?;
        let renewed: std::collections::HashSet<(i64, i64)> = renewed.into_iter().collect();
        let mut held = self.held_lock();
        let mut lost = Vec::new();
        for claim in claims {
            if !renewed.contains(&claim)
                && let Some(l) = held.get_mut(&claim)
            {
                *l = true;
                lost.push(claim.0);
            }
        }
        Ok(lost)
    }

    /// True while this handle holds `build`'s lease: it claimed the build
    /// and has neither ended it nor lost (or given up) its lease.
    pub fn holds_lease(&self, build: i64) -> bool {
        matches!(self.fence(build), Ok(Some(_)))
    }

    /// Gives up `build`'s lease (its end could not be written): it is no
    /// longer renewed, so the lease rules put the build back in the queue
    /// once it runs out, and nothing more is written for it.
    pub fn abandon_lease(&self, build: i64) {
        if let Some(claim) = self.claim_of(build)
            && let Some(lost) = self.held_lock().get_mut(&claim)
        {
            *lost = true;
        }
    }

    /// Runs a runner's write for `build` that must not be lost (a build's
    /// end, a step's state) up to 5 times, 0.2 s, 0.4 s, ... apart: a full
    /// disk or a lock held elsewhere often passes. On a shared store, while
    /// the database is unavailable (down or busy: a restart, a cut
    /// network) and this handle still holds the build's lease, it goes on
    /// trying every second, for at most one lease: the heartbeat gives the
    /// lease up after 5/6 of it without a renewal, and then the write is
    /// refused at once ([`StoreError::Fenced`]) and the lease rules put the
    /// build back in the queue. Each failure is logged with `what` and
    /// `build`.
    pub async fn retried<F, Fut>(
        &self,
        what: &str,
        build: i64,
        mut write: F,
    ) -> Result<(), StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), StoreError>>,
    {
        const QUICK: u32 = 5;
        let began = tokio::time::Instant::now();
        for attempt in 1u32.. {
            let last = write().await;
            let e = match &last {
                Ok(()) => {
                    if attempt > QUICK {
                        tracing::info!(
                            build,
                            attempt,
                            "{what} recorded once the database was back"
                        );
                    }
                    return last;
                }
                Err(StoreError::Fenced) => {
                    tracing::warn!(
                        build,
                        "{what} not recorded: this runner lost the build's lease"
                    );
                    return last;
                }
                Err(e) => e,
            };
            let unavailable = matches!(
                e,
                StoreError::Unavailable(Fault {
                    cause: Cause::Down | Cause::Busy,
                    ..
                })
            );
            let wait_on = self.shared()
                && unavailable
                && self.holds_lease(build)
                && began.elapsed() < self.lease();
            if attempt < QUICK {
                tracing::error!(build, attempt, error = %e, "cannot record {what}");
                tokio::time::sleep(std::time::Duration::from_millis(200 * u64::from(attempt)))
                    .await;
            } else if wait_on {
                if attempt == QUICK {
                    tracing::error!(
                        build, attempt, error = %e,
                        "cannot record {what}; trying every second while this runner holds the build's lease"
                    );
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            } else {
                tracing::error!(build, attempt, error = %e, "cannot record {what}; giving up");
                return last;
            }
        }
        unreachable!("the loop returns")
    }

    /// Gives up every lease this handle holds (it could not renew them in
    /// time: another runner may take their builds): nothing more is written
    /// for them, and they are no longer renewed. Returns their ids.
    pub fn abandon_leases(&self) -> Vec<i64> {
        let mut held = self.held_lock();
        let mut lost = Vec::new();
        for ((id, _), l) in held.iter_mut() {
            if !*l {
                *l = true;
                lost.push(*id);
            }
        }
        lost
    }

    /// See [`Backend::rescue`]. Wakes the workers and the reporter when
    /// something was rescued.
    pub async fn rescue(&self) -> Result<Recovery, StoreError> {
        let rescued = self.backend.rescue().await?;
        if !rescued.requeued.is_empty()
            || !rescued.failed.is_empty()
            || !rescued.cancelled.is_empty()
        {
            self.wake_workers();
        }
        Ok(rescued)
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
            .any(|r| !r.duplicate && (!r.build_ids.is_empty() || r.superseded_queued > 0))
        {
            self.wake_workers();
        }
        for id in recorded.iter().flat_map(|r| &r.cancel_running) {
            self.cancel_requested(*id);
        }
        Ok(recorded)
    }

    /// Queues one build by hand; see [`Backend::queue_manual`]. Wakes the
    /// workers and stops the running builds it supersedes.
    pub async fn queue_manual(
        &self,
        build: NewBuild,
        host: Option<Host>,
        origin: BuildOrigin,
    ) -> Result<Manual, StoreError> {
        let queued = self.backend.queue_manual(build, host, origin).await?;
        self.wake_workers();
        for id in &queued.cancel_running {
            self.cancel_requested(*id);
        }
        Ok(queued)
    }

    /// Wakes the workers (builds may be claimable) and the reporter (a
    /// state change may have written a report), in this process and in the
    /// others sharing the database.
    pub fn wake_workers(&self) {
        self.queued.notify_one();
        self.reports.notify_one();
        self.backend.announce(Announce::Queued);
    }

    /// Tells the runner of build `id`, whichever process it is in, that a
    /// stop was asked (the reason is stored).
    fn cancel_requested(&self, id: i64) {
        let _ = self.events.send(StoreEvent::CancelRequested(id));
        self.backend.announce(Announce::Cancel(id));
    }

    /// Wakes the reporters: reports were written.
    fn reports_changed(&self) {
        self.reports.notify_one();
        self.backend.announce(Announce::Reports);
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
        let claimed = self.backend.claim_next(policy, self.holder.clone()).await?;
        if let Some(build) = &claimed {
            self.held_lock().insert((build.id, build.attempt), false);
            self.reports_changed();
        }
        Ok(claimed)
    }

    /// Records a build's steps, all pending; see [`Backend::set_steps`].
    pub async fn set_steps(&self, build: i64, names: Vec<String>) -> Result<(), StoreError> {
        let steps = names
            .into_iter()
            .map(|name| PlannedStep {
                name,
                skipped: None,
            })
            .collect();
        self.backend
            .set_steps(build, steps, self.fence(build)?)
            .await
    }

    /// Records a build's steps, some skipped; see [`Backend::set_steps`].
    pub async fn plan_steps(&self, build: i64, steps: Vec<PlannedStep>) -> Result<(), StoreError> {
        self.backend
            .set_steps(build, steps, self.fence(build)?)
            .await
    }

    /// See [`Backend::step_started`].
    pub async fn step_started(&self, build: i64, idx: usize) -> Result<(), StoreError> {
        self.backend
            .step_started(build, idx, self.fence(build)?)
            .await
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
            .step_finished(build, idx, status, exit_code, self.fence(build)?)
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
        let result = match self.fence(build) {
            Ok(fence) => self.backend.finish(build, status, reason, fence).await,
            Err(e) => Err(e),
        };
        self.release(build, &result);
        result?;
        self.wake_workers();
        Ok(())
    }

    /// See [`Backend::requeue`].
    pub async fn requeue(&self, build: i64, reason: String) -> Result<(), StoreError> {
        let result = match self.fence(build) {
            Ok(fence) => self.backend.requeue(build, reason, fence).await,
            Err(e) => Err(e),
        };
        self.release(build, &result);
        result?;
        self.wake_workers();
        Ok(())
    }

    /// See [`Backend::cancel`]. A running build's runner is told at once.
    pub async fn cancel(&self, build: i64, reason: String) -> Result<CancelOutcome, StoreError> {
        let outcome = self.backend.cancel(build, reason).await?;
        match outcome {
            CancelOutcome::Requested => self.cancel_requested(build),
            CancelOutcome::Cancelled { .. } => self.wake_workers(),
            CancelOutcome::AlreadyFinished | CancelOutcome::NotFound => {}
        }
        Ok(outcome)
    }

    /// See [`Backend::resolve_commit`].
    pub async fn resolve_commit(&self, build: i64, commit: CommitId) -> Result<(), StoreError> {
        self.backend.resolve_commit(build, commit).await
    }

    /// Approves a waiting build; see [`Backend::approve`]. Wakes the workers.
    pub async fn approve(&self, build: i64) -> Result<ApproveOutcome, StoreError> {
        let outcome = self.backend.approve(build).await?;
        if outcome == ApproveOutcome::Approved {
            self.wake_workers();
        }
        Ok(outcome)
    }

    /// See [`Backend::cancel_reason`].
    pub async fn cancel_reason(&self, build: i64) -> Result<Option<String>, StoreError> {
        self.backend.cancel_reason(build).await
    }

    /// See [`Backend::hold_runner_mark`].
    pub async fn hold_runner_mark(&self) -> Result<(), StoreError> {
        self.backend
            .hold_runner_mark(self.holder.runner.clone())
            .await
    }

    /// See [`Backend::recover`].
    pub async fn recover(&self) -> Result<Recovery, StoreError> {
        let mut recovery = self.backend.recover().await?;
        // And those of runners whose lease ran out meanwhile.
        let rescued = self.backend.rescue().await?;
        recovery.requeued.extend(rescued.requeued);
        recovery.failed.extend(rescued.failed);
        recovery.cancelled.extend(rescued.cancelled);
        self.reports_changed();
        Ok(recovery)
    }

    /// The fence of this handle's log writes for `build`: the claim it
    /// runs (see [`Store::for_run`]), whether or not its end was recorded.
    fn log_fence(&self, build: i64) -> Result<Fence, StoreError> {
        self.claim_of(build)
            .map(|(_, attempt)| Fence {
                runner: self.holder.runner.clone(),
                attempt,
            })
            .ok_or(StoreError::Fenced)
    }

    /// Begins the log of a build this handle claimed; see
    /// [`Backend::log_begin`].
    pub async fn log_begin(&self, build: i64) -> Result<Option<i64>, StoreError> {
        let fence = self.log_fence(build)?;
        self.backend.log_begin(build, fence).await
    }

    /// Appends to the log of a build this handle claimed; see
    /// [`Backend::log_append`].
    pub async fn log_append(
        &self,
        build: i64,
        run: i64,
        chunk: LogChunk,
        complete: bool,
    ) -> Result<(), StoreError> {
        let fence = self.log_fence(build)?;
        self.backend
            .log_append(build, run, chunk, complete, fence)
            .await
    }

    /// See [`Backend::log_head`].
    pub async fn log_head(&self, build: i64) -> Result<Option<LogHead>, StoreError> {
        self.backend.log_head(build).await
    }

    /// See [`Backend::log_chunks`].
    pub async fn log_chunks(
        &self,
        build: i64,
        run: i64,
        from: u64,
        max: u32,
    ) -> Result<Vec<LogChunk>, StoreError> {
        self.backend.log_chunks(build, run, from, max).await
    }

    /// Logs that grew in other processes: `Some(build)`, or `None` when
    /// announcements may have been missed (look again at every log).
    pub fn subscribe_logs(&self) -> tokio::sync::broadcast::Receiver<Option<i64>> {
        self.logs.subscribe()
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

    /// A round trip through the writer: an empty write transaction,
    /// answered once it committed. A writer that is stuck (a lock held
    /// elsewhere, a disk that does not answer) or gone fails it.
    pub async fn ping_writer(&self) -> Result<(), StoreError> {
        self.backend.record_deliveries(Vec::new()).await.map(|_| ())
    }

    /// Registers this runner process or refreshes its row; see
    /// [`Backend::runner_seen`]. Also forgets the runners not seen for
    /// [`RUNNER_FORGOTTEN_AFTER_MS`].
    pub async fn runner_seen(&self, info: RunnerInfo) -> Result<(), StoreError> {
        self.backend.runner_seen(info).await?;
        self.backend
            .forget_runners(RUNNER_FORGOTTEN_AFTER_MS)
            .await
            .map(|_| ())
    }

    /// See [`Backend::runner_gone`].
    pub async fn runner_gone(&self, runner_id: &str) -> Result<(), StoreError> {
        self.backend.runner_gone(runner_id.to_owned()).await
    }

    /// See [`Backend::forget_runners`].
    pub async fn forget_runners(&self, older_than_ms: i64) -> Result<u64, StoreError> {
        self.backend.forget_runners(older_than_ms).await
    }

    /// See [`Backend::runners`].
    pub async fn runners(&self) -> Result<Vec<RunnerRecord>, StoreError> {
        self.backend.runners().await
    }

    /// How many builds are queued or waiting for approval.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn failed_build(id: i64, status: BuildStatus) -> Build {
        Build {
            id,
            pipeline: "p".into(),
            push: PushEvent {
                repo: "o/r".into(),
                git_ref: "refs/heads/main".into(),
                kind: crate::model::RefKind::Branch("main".into()),
                before: CommitId::ZERO,
                after: "a".repeat(40).parse().unwrap(),
                commit: Some("a".repeat(40).parse().unwrap()),
                created: false,
                deleted: false,
                forced: false,
                clone_url: String::new(),
                ssh_url: None,
                web_url: None,
                message: String::new(),
                pusher: String::new(),
                pull_request: None,
            },
            host: None,
            status,
            reason: None,
            delivery: None,
            attempt: 1,
            created_at: OffsetDateTime::UNIX_EPOCH,
            started_at: None,
            finished_at: None,
            path_filters: Vec::new(),
            node: None,
            pipeline_revision: None,
        }
    }

    fn step(name: &str, status: StepStatus, reason: Option<&str>) -> StepRecord {
        StepRecord {
            name: name.into(),
            status,
            exit_code: None,
            started_at: None,
            finished_at: None,
            reason: reason.map(str::to_owned),
        }
    }

    #[test]
    fn a_resume_starts_at_the_step_that_failed_the_build_and_says_where_the_others_passed() {
        use StepStatus::*;
        let steps = [
            step("build", Success, None),
            step("lint", Failure, None),
            step("test", Failure, None),
            step("deploy", Skipped, None),
        ];
        let r = Resume::from_failed(&failed_build(5, BuildStatus::Failure), &steps).unwrap();
        assert_eq!((r.from, r.from_name.as_str()), (2, "test"));
        let reasons: Vec<_> = r.skipped.iter().map(|s| s.reason.as_str()).collect();
        assert_eq!(reasons, ["passed in #5", "failed in #5, allowed to fail"]);
        assert!(r.fits(["build", "lint", "test", "deploy", "more"]));
        assert!(!r.fits(["build", "lint", "tests", "deploy"]));
        assert!(!r.fits(["build", "test"]));
        let plan = r.plan(vec!["build".into(), "lint".into(), "test".into()]);
        assert_eq!(plan[0].skipped.as_deref(), Some("passed in #5"));
        assert_eq!(plan[2].skipped, None);

        // A resumed build that failed again keeps where its steps passed.
        let again = [
            step("build", Skipped, Some("passed in #5")),
            step("lint", Skipped, Some("failed in #5, allowed to fail")),
            step("test", Failure, None),
        ];
        let r = Resume::from_failed(&failed_build(6, BuildStatus::Failure), &again).unwrap();
        assert_eq!(r.skipped[0].reason, "passed in #5");
    }

    #[test]
    fn only_a_build_that_failed_in_a_step_can_resume() {
        use StepStatus::*;
        let ok = [step("build", Success, None)];
        assert!(Resume::from_failed(&failed_build(1, BuildStatus::Success), &ok).is_err());
        // Failed before any step failed (a build timeout while fetching).
        let none = [step("build", Skipped, None)];
        assert!(Resume::from_failed(&failed_build(1, BuildStatus::Failure), &none).is_err());
        // A step before the failed one that never ran.
        let odd = [step("build", Cancelled, None), step("test", Failure, None)];
        assert!(Resume::from_failed(&failed_build(1, BuildStatus::Failure), &odd).is_err());
    }
}
