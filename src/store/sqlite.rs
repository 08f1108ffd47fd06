//! The SQLite backend: one writer thread that commits in groups, and a
//! reader connection for queries.
//!
//! Every write is a job sent to the writer thread. The writer takes the jobs
//! that are waiting, runs each inside its own savepoint (a failing job rolls
//! back alone), commits them in one transaction, and only then answers each
//! caller. Under load, one fsync serves a whole batch of deliveries; alone,
//! a delivery waits for nothing but its own commit.

use super::migrations;
use super::outbox::{self, NewReport, Outbox, StateChange};
use super::{
    ApproveOutcome, Backend, BoxFuture, Build, BuildFilter, BuildOrigin, BuildStatus,
    CancelOutcome, ClaimPolicy, Fence, Holder, LEASE_LOST, LEASE_LOST_TWICE, Manual, NewBuild,
    NewDelivery, PlannedStep, RUNNER_GONE_AFTER_BEATS, Recorded, Recovery, ReportJob,
    ReportOutcome, ReportRecord, ReportedState, RunnerInfo, RunnerRecord, StepRecord, StepStatus,
    StoreError, StoreOptions, now_rfc3339,
};
use super::{Cause, Fault};
use crate::model::{CommitId, Host, PushEvent, RefKind};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::path::Path;
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

/// The reason of a build that a dead daemon left running twice.
const INTERRUPTED_TWICE: &str = "interrupted twice";
/// The reason of a build re-queued after a dead daemon left it running.
const INTERRUPTED: &str = "interrupted: the daemon stopped while it ran";

/// The most jobs one transaction takes.
const MAX_BATCH: usize = 512;

/// A unit of work for the writer thread.
trait Job: Send {
    /// Runs inside a savepoint; `false` rolls the savepoint back.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the transaction's fate is known.
    fn finish(self: Box<Self>, committed: Result<(), Fault>);
}

struct FnJob<R, F> {
    work: Option<F>,
    result: Option<Result<R, StoreError>>,
    reply: oneshot::Sender<Result<R, StoreError>>,
}

impl<R, F> Job for FnJob<R, F>
where
    R: Send,
    F: FnOnce(&Connection) -> Result<R, StoreError> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        let result = work(conn);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, committed: Result<(), Fault>) {
        let answer = match (committed, self.result) {
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(StoreError::unavailable(
                Cause::Failed,
                "the job did not run",
            )),
            (Err(e), _) => Err(StoreError::Unavailable(e)),
        };
        // The caller may have gone (client hung up); the write stands.
        let _ = self.reply.send(answer);
    }
}

/// A column whose text names no known value: a corrupt row is an error,
/// never read as some default.
fn bad_text(column: usize, text: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        rusqlite::types::Type::Text,
        format!("unknown value {text:?}").into(),
    )
}

/// What kind of failure a SQLite error is.
fn fault(e: rusqlite::Error) -> Fault {
    use rusqlite::ErrorCode;
    let cause = match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Cause::Busy,
        Some(ErrorCode::CannotOpen) => Cause::Down,
        _ => Cause::Failed,
    };
    Fault {
        cause,
        detail: e.to_string(),
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Unavailable(fault(e))
    }
}

/// The SQLite backend.
#[derive(Debug)]
pub struct SqliteBackend {
    jobs: mpsc::Sender<Box<dyn Job>>,
    reader: Arc<Mutex<Connection>>,
    options: StoreOptions,
}

impl std::fmt::Debug for dyn Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(())
}

/// Checks an existing database file before it is used: `Ok` for a file
/// that does not exist yet (or is empty: SQLite makes it a database), `Err`
/// with a short reason when it is not a SQLite database or SQLite's
/// `quick_check` finds damage. `quick_check` reads every page once and
/// checks each b-tree's structure (not indexes against their tables, as
/// `integrity_check` does at several times the cost): a damaged page is
/// found at start, not by the first delivery that touches it.
pub fn check_file(path: &Path) -> Result<(), Damage> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() == 0 => return Ok(()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Damage::Unreadable(e.to_string())),
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(Damage::from_sqlite)?;
    let rows = (|| -> rusqlite::Result<Vec<String>> {
        let mut stmt = conn.prepare("PRAGMA quick_check(20)")?;
        stmt.query_map([], |r| r.get::<_, String>(0))?.collect()
    })()
    .map_err(Damage::from_sqlite)?;
    if rows.len() == 1 && rows[0] == "ok" {
        Ok(())
    } else {
        Err(Damage::Corrupt(rows))
    }
}

/// What [`check_file`] found wrong.
#[derive(Debug)]
pub enum Damage {
    /// Not a SQLite database at all.
    NotADatabase,
    /// SQLite's findings (`quick_check` lines, or the error it stopped at).
    Corrupt(Vec<String>),
    /// The file could not be opened or read (permissions, I/O).
    Unreadable(String),
}

impl Damage {
    fn from_sqlite(e: rusqlite::Error) -> Damage {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase) => Damage::NotADatabase,
            Some(rusqlite::ErrorCode::DatabaseCorrupt) => Damage::Corrupt(vec![e.to_string()]),
            _ => Damage::Unreadable(e.to_string()),
        }
    }
}

impl SqliteBackend {
    /// Opens or creates the database, migrates it, and starts the writer.
    pub fn open(path: &Path, options: StoreOptions) -> Result<SqliteBackend, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::unavailable(Cause::Failed, format!("{}: {e}", dir.display()))
            })?;
        }
        let mut writer = Connection::open(path)?;
        configure(&writer)?;
        migrations::migrate(&mut writer)?;
        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&reader)?;

        let (jobs, rx) = mpsc::channel::<Box<dyn Job>>(4 * MAX_BATCH);
        std::thread::Builder::new()
            .name("hookci-store-writer".into())
            .spawn(move || writer_loop(writer, rx))
            .map_err(|e| StoreError::unavailable(Cause::Failed, e))?;
        Ok(SqliteBackend {
            jobs,
            reader: Arc::new(Mutex::new(reader)),
            options,
        })
    }

    async fn write<R, F>(&self, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(FnJob {
            work: Some(work),
            result: None,
            reply,
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| StoreError::unavailable(Cause::Down, "the store writer has stopped"))?;
        answer
            .await
            .map_err(|_| StoreError::unavailable(Cause::Down, "the store writer has stopped"))?
    }

    async fn read<R, F>(&self, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let reader = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || {
            let conn = reader
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            work(&conn)
        })
        .await
        .map_err(|e| StoreError::unavailable(Cause::Failed, e))?
    }
}

fn writer_loop(conn: Connection, mut rx: mpsc::Receiver<Box<dyn Job>>) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let committed = run_batch(&conn, &mut batch);
        if let Err(e) = &committed {
            tracing::error!(error = %e.detail, cause = %e.cause, jobs = batch.len(), "store transaction failed");
        }
        for job in batch.drain(..) {
            job.finish(committed.clone());
        }
    }
}

fn run_batch(conn: &Connection, batch: &mut [Box<dyn Job>]) -> Result<(), Fault> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(fault)?;
    let result = (|| -> rusqlite::Result<()> {
        for job in batch.iter_mut() {
            conn.execute_batch("SAVEPOINT job")?;
            if job.run(conn) {
                conn.execute_batch("RELEASE job")?;
            } else {
                conn.execute_batch("ROLLBACK TO job; RELEASE job")?;
            }
        }
        conn.execute_batch("COMMIT")
    })();
    if let Err(e) = result {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(fault(e));
    }
    Ok(())
}

fn record(
    conn: &Connection,
    deliveries: Vec<NewDelivery>,
    max_queued: u64,
) -> Result<Vec<Recorded>, StoreError> {
    let mut out = Vec::with_capacity(deliveries.len());
    let mut room = max_queued.saturating_sub(in_queue(conn)?);
    let now = now_rfc3339();
    for d in deliveries {
        let mut seen: Option<(i64, Option<String>)> = conn
            .prepare_cached(
                "SELECT id, skipped FROM deliveries WHERE pipeline = ?1 AND delivery_id = ?2",
            )?
            .query_row(params![d.pipeline, d.delivery_id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        if let (None, Some(digest)) = (&seen, &d.body_sha256) {
            // A replay under a new delivery id: the first answer, nothing queued.
            seen = conn
                .prepare_cached(
                    "SELECT id, skipped FROM deliveries
                     WHERE pipeline = ?1 AND body_sha256 = ?2 ORDER BY id LIMIT 1",
                )?
                .query_row(params![d.pipeline, digest], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
        }
        if let Some((row, skipped)) = seen {
            let mut stmt =
                conn.prepare_cached("SELECT id FROM builds WHERE delivery = ?1 ORDER BY id")?;
            let build_ids = stmt
                .query_map([row], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<i64>>>()?;
            out.push(Recorded {
                pipeline: d.pipeline,
                delivery_id: d.delivery_id,
                build_ids,
                skipped,
                duplicate: true,
                cancel_running: Vec::new(),
                superseded_queued: 0,
            });
            continue;
        }
        let wanted = d.builds.len() as u64;
        if wanted > room {
            return Err(StoreError::QueueFull);
        }
        room -= wanted;
        conn.prepare_cached(
            "INSERT INTO deliveries
                 (pipeline, delivery_id, host, event, skipped, received_at, body_sha256)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            d.pipeline,
            d.delivery_id,
            d.host.as_str(),
            d.event,
            d.skipped,
            now,
            d.body_sha256
        ])?;
        let row = conn.last_insert_rowid();
        let mut build_ids = Vec::with_capacity(d.builds.len());
        let mut cancel_running = Vec::new();
        let mut superseded_queued = 0;
        for b in &d.builds {
            let id = insert_build(conn, b, Some(row), Some(&d.delivery_id), Some(d.host), &now)?;
            build_ids.push(id);
            if b.supersede {
                let reason = format!("superseded by build {id}");
                let (running, queued) =
                    supersede(conn, &b.pipeline, &b.push.git_ref, id, &reason, &now)?;
                cancel_running.extend(running);
                superseded_queued += queued;
            }
        }
        if let Some(close) = &d.close {
            let (running, queued) = supersede(
                conn,
                &d.pipeline,
                &close.git_ref,
                i64::MAX,
                &close.reason,
                &now,
            )?;
            cancel_running.extend(running);
            superseded_queued += queued;
        }
        out.push(Recorded {
            pipeline: d.pipeline,
            delivery_id: d.delivery_id,
            build_ids,
            skipped: d.skipped,
            duplicate: false,
            cancel_running,
            superseded_queued,
        });
    }
    Ok(out)
}

/// The builds admission control counts: queued ones (kept by triggers in
/// `queue_stats`), and those waiting for approval, which anyone who can
/// Ends as `cancelled` (with the reason the stop was asked for) the running
/// builds a recovery takes whose stop was asked (`cancel_reason`) before
/// their runner went: all of them at a start, those whose lease ran out
/// (before `lease_before_ms`) at a rescue. They are not run again.
fn end_cancelled(
    conn: &Connection,
    now: &str,
    lease_before_ms: Option<i64>,
) -> Result<Vec<i64>, StoreError> {
    let rows = conn
        .prepare_cached(
            "UPDATE builds SET status = 'cancelled', reason = cancel_reason, finished_at = ?1,
                 runner_id = NULL, lease_expires_ms = NULL
             WHERE status = 'running' AND cancel_reason IS NOT NULL
               AND (?2 IS NULL OR lease_expires_ms < ?2)
             RETURNING id, report_context, path_filters, reason",
        )?
        .query_map(params![now, lease_before_ms], |r| {
            Ok((changed_row(r)?, r.get::<_, String>(3)?))
        })?
        .collect::<rusqlite::Result<Vec<(ChangedRow, String)>>>()?;
    let mut ids = Vec::with_capacity(rows.len());
    for (row, reason) in rows {
        changed(
            conn,
            std::slice::from_ref(&row),
            BuildStatus::Running,
            BuildStatus::Cancelled,
            Some(&reason),
        )?;
        conn.prepare_cached(
            "UPDATE steps SET status = 'skipped'
             WHERE build = ?1 AND status IN ('pending', 'running')",
        )?
        .execute([row.0])?;
        ids.push(row.0);
    }
    Ok(ids)
}

/// open a pull request can add (counted through `builds_by_status`).
fn in_queue(conn: &Connection) -> Result<u64, StoreError> {
    let queued: i64 = conn
        .prepare_cached("SELECT queued FROM queue_stats WHERE id = 1")?
        .query_row([], |r| r.get(0))?;
    let waiting: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM builds WHERE status = 'waiting'")?
        .query_row([], |r| r.get(0))?;
    Ok(queued.max(0) as u64 + waiting.max(0) as u64)
}

/// Inserts one queued build; returns its id.
fn insert_build(
    conn: &Connection,
    b: &NewBuild,
    delivery_row: Option<i64>,
    delivery_id: Option<&str>,
    host: Option<Host>,
    now: &str,
) -> Result<i64, StoreError> {
    let p = &b.push;
    // A pull request's head branch is another repository's (a fork's
    // `main` is not this `main`): it is kept in `pull_request`, never in
    // `branch`, so branch filters and badges see pushes only.
    let (branch, tag) = match &p.kind {
        _ if p.pull_request.is_some() => (None, None),
        RefKind::Branch(n) => (Some(n.as_str()), None),
        RefKind::Tag(n) => (None, Some(n.as_str())),
        RefKind::Other => (None, None),
    };
    let filters = serde_json::to_string(&b.path_filters)
        .map_err(|e| StoreError::unavailable(Cause::Failed, e))?;
    let pull_request = p
        .pull_request
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::unavailable(Cause::Failed, e))?;
    let status = if b.waiting {
        BuildStatus::Waiting
    } else {
        BuildStatus::Queued
    };
    conn.prepare_cached(
        "INSERT INTO builds (pipeline, delivery, delivery_id, repo, host, event, ref, branch,
             tag, commit_sha, before_sha, after_sha, forced, clone_url, ssh_url, web_url,
             message, pusher, path_filters, status, created_at, report_context, pull_request,
             pipeline_revision)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
             ?17, ?18, ?19, ?22, ?20, ?21, ?23, ?24)",
    )?
    .execute(params![
        b.pipeline,
        delivery_row,
        delivery_id,
        p.repo,
        host.map(Host::as_str),
        p.event_name(),
        p.git_ref,
        branch,
        tag,
        p.commit_str(),
        p.before.as_str(),
        p.after.as_str(),
        p.forced,
        p.clone_url,
        p.ssh_url,
        p.web_url,
        p.message,
        p.pusher,
        filters,
        now,
        b.report_context,
        status.as_str(),
        pull_request,
        b.pipeline_revision,
    ])?;
    let id = conn.last_insert_rowid();
    let change = StateChange {
        build: id,
        context: b.report_context.as_deref(),
        path_rules: !b.path_filters.is_empty(),
        from: None,
        to: status,
        reason: None,
    };
    outbox::state_changed(&mut SqlOutbox(conn), change, OffsetDateTime::now_utc())?;
    Ok(id)
}

/// Queues one build that no delivery carried (a rebuild, a trigger).
fn queue_manual(
    conn: &Connection,
    build: &NewBuild,
    host: Option<Host>,
    origin: &BuildOrigin,
    max_queued: u64,
) -> Result<Manual, StoreError> {
    if in_queue(conn)? >= max_queued {
        return Err(StoreError::QueueFull);
    }
    let now = now_rfc3339();
    let id = insert_build(conn, build, None, None, host, &now)?;
    let resume = origin
        .resume
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::unavailable(Cause::Failed, e))?;
    conn.prepare_cached(
        "INSERT INTO build_origins (build, rebuild_of, triggered_by, resume)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![id, origin.rebuild_of, origin.triggered_by, resume])?;
    let (cancel_running, superseded_queued) = if build.supersede {
        let reason = format!("superseded by build {id}");
        supersede(
            conn,
            &build.pipeline,
            &build.push.git_ref,
            id,
            &reason,
            &now,
        )?
    } else {
        (Vec::new(), 0)
    };
    Ok(Manual {
        id,
        cancel_running,
        superseded_queued,
    })
}

/// Cancels the ref's builds older than `newer` that wait or are queued,
/// with `reason`, and asks its running ones to stop; returns the running
/// ones, and how many it cancelled.
fn supersede(
    conn: &Connection,
    pipeline: &str,
    git_ref: &str,
    newer: i64,
    reason: &str,
    now: &str,
) -> Result<(Vec<i64>, u64), StoreError> {
    let mut queued = 0;
    for from in [BuildStatus::Queued, BuildStatus::Waiting] {
        let cancelled = conn
            .prepare_cached(
                "UPDATE builds SET status = 'cancelled', reason = ?4, finished_at = ?5
             WHERE pipeline = ?1 AND ref = ?2 AND status = ?6 AND id < ?3
             RETURNING id, report_context, path_filters",
            )?
            .query_map(
                params![pipeline, git_ref, newer, reason, now, from.as_str()],
                changed_row,
            )?
            .collect::<rusqlite::Result<Vec<ChangedRow>>>()?;
        queued += cancelled.len();
        changed(conn, &cancelled, from, BuildStatus::Cancelled, Some(reason))?;
    }
    let mut stmt = conn.prepare_cached(
        "UPDATE builds SET cancel_reason = ?4
         WHERE pipeline = ?1 AND ref = ?2 AND status = 'running' AND id < ?3
           AND cancel_reason IS NULL
         RETURNING id",
    )?;
    let ids = stmt
        .query_map(params![pipeline, git_ref, newer, reason], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    Ok((ids, queued as u64))
}

/// Claims a queued build that may run now, fairly and at a cost that does
/// not grow with the queue.
///
/// A build may run when its pipeline is `parallel`, or when no build of its
/// (pipeline, ref) is running; of one (pipeline, ref), the oldest goes first.
/// Among the pipelines that have a build that may run, the one with the
/// fewest builds running goes first (then the oldest build): a pipeline with
/// a deep queue cannot starve the others.
///
/// Cost: per pipeline with queued builds (few: they come from the config),
/// a look at its oldest [`HEAD_WINDOW`] queued builds, and only when all of
/// them wait behind running ones, one index probe per queued ref of it. The
/// queued rows are found through two partial indexes that hold queued builds
/// only (migration 6).
/// Now, in Unix milliseconds (leases on SQLite: one box, one clock).
fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Refuses a runner's write for `build` unless the build is `running` under
/// the fence's runner id and attempt. No fence: the write is not a runner's.
fn held(conn: &Connection, build: i64, fence: Option<&Fence>) -> Result<(), StoreError> {
    let Some(fence) = fence else {
        return Ok(());
    };
    conn.prepare_cached(
        "SELECT 1 FROM builds
         WHERE id = ?1 AND status = 'running' AND runner_id = ?2 AND attempt = ?3",
    )?
    .query_row(params![build, fence.runner, fence.attempt], |_| Ok(()))
    .optional()?
    .ok_or(StoreError::Fenced)
}

fn claim(
    conn: &Connection,
    policy: &ClaimPolicy,
    holder: &Holder,
) -> Result<Option<Build>, StoreError> {
    let mut busy = std::collections::HashSet::new();
    let mut running: std::collections::HashMap<String, usize> = Default::default();
    {
        let mut stmt =
            conn.prepare_cached("SELECT pipeline, ref FROM builds WHERE status = 'running'")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (pipeline, git_ref) = row?;
            *running.entry(pipeline.clone()).or_default() += 1;
            busy.insert((pipeline, git_ref));
        }
    }
    let mut best: Option<(usize, i64)> = None;
    for pipeline in queued_pipelines(conn)? {
        if policy.elsewhere.contains(&pipeline) {
            continue;
        }
        let parallel = policy.parallel.contains(&pipeline);
        let Some(id) = oldest_runnable(conn, &pipeline, parallel, &busy)? else {
            continue;
        };
        let rank = (running.get(&pipeline).copied().unwrap_or(0), id);
        if best.is_none_or(|b| rank < b) {
            best = Some(rank);
        }
    }
    let Some((_, id)) = best else {
        return Ok(None);
    };
    let now = now_rfc3339();
    let sql = format!(
        "UPDATE builds SET status = 'running', started_at = ?2, finished_at = NULL,
             reason = NULL, cancel_reason = NULL, runner_id = ?3, lease_expires_ms = ?4
         WHERE id = ?1 AND status = 'queued'
         RETURNING {BUILD_COLUMNS}, report_context"
    );
    let expires = now_ms().saturating_add(holder.lease_ms);
    let claimed = conn
        .prepare_cached(&sql)?
        .query_row(params![id, now, holder.runner, expires], |r| {
            Ok((
                build_from_row(r)?,
                r.get::<_, Option<String>>(BUILD_COLUMN_COUNT)?,
            ))
        })
        .optional()?;
    let Some((build, context)) = claimed else {
        return Ok(None);
    };
    let change = StateChange {
        build: build.id,
        context: context.as_deref(),
        path_rules: !build.path_filters.is_empty(),
        from: Some(BuildStatus::Queued),
        to: BuildStatus::Running,
        reason: None,
    };
    outbox::state_changed(&mut SqlOutbox(conn), change, OffsetDateTime::now_utc())?;
    Ok(Some(build))
}

/// The outbox inside the writer's open transaction.
struct SqlOutbox<'a>(&'a Connection);

impl Outbox for SqlOutbox<'_> {
    fn write_report(&mut self, report: &NewReport, at: OffsetDateTime) -> Result<(), StoreError> {
        let created_ms = (at.unix_timestamp_nanos() / 1_000_000) as i64;
        self.0
            .prepare_cached(
                "INSERT INTO reports (build, context, state, description, created_at, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                report.build,
                report.context,
                report.state.as_str(),
                report.description,
                rfc3339(at),
                created_ms
            ])?;
        Ok(())
    }
}

/// A build whose state an UPDATE changed: `RETURNING id, report_context,
/// path_filters`.
type ChangedRow = (i64, Option<String>, String);

fn changed_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ChangedRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
}

/// Writes the reports for builds an UPDATE moved from `from` to `to`.
fn changed(
    conn: &Connection,
    rows: &[ChangedRow],
    from: BuildStatus,
    to: BuildStatus,
    reason: Option<&str>,
) -> Result<(), StoreError> {
    let at = OffsetDateTime::now_utc();
    for (id, context, filters) in rows {
        let change = StateChange {
            build: *id,
            context: context.as_deref(),
            path_rules: filters != "[]",
            from: Some(from),
            to,
            reason,
        };
        outbox::state_changed(&mut SqlOutbox(conn), change, at)?;
    }
    Ok(())
}

use crate::model::rfc3339;

/// A time column [`rfc3339`] wrote; other text is an error.
fn time_at(r: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<OffsetDateTime> {
    let text: String = r.get(idx)?;
    crate::model::parse_rfc3339(&text).ok_or_else(|| bad_text(idx, &text))
}

/// An optional time column.
fn opt_time_at(r: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<Option<OffsetDateTime>> {
    let text: Option<String> = r.get(idx)?;
    text.map(|t| crate::model::parse_rfc3339(&t).ok_or_else(|| bad_text(idx, &t)))
        .transpose()
}

/// How many of a pipeline's oldest queued builds a claim looks at before it
/// walks the pipeline's queued refs one by one instead.
const HEAD_WINDOW: i64 = 64;

/// The pipelines that have queued builds: one index probe per pipeline.
fn queued_pipelines(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    let mut first = conn.prepare_cached(
        "SELECT pipeline FROM builds INDEXED BY builds_queued_by_pipeline
         WHERE status = 'queued' ORDER BY pipeline LIMIT 1",
    )?;
    let mut next = conn.prepare_cached(
        "SELECT pipeline FROM builds INDEXED BY builds_queued_by_pipeline
         WHERE status = 'queued' AND pipeline > ?1 ORDER BY pipeline LIMIT 1",
    )?;
    let mut at: Option<String> = first.query_row([], |r| r.get(0)).optional()?;
    while let Some(pipeline) = at {
        at = next.query_row([&pipeline], |r| r.get(0)).optional()?;
        out.push(pipeline);
    }
    Ok(out)
}

/// The oldest queued build of `pipeline` that may run now.
fn oldest_runnable(
    conn: &Connection,
    pipeline: &str,
    parallel: bool,
    busy: &std::collections::HashSet<(String, String)>,
) -> Result<Option<i64>, StoreError> {
    let mut window = conn.prepare_cached(
        "SELECT id, ref FROM builds INDEXED BY builds_queued_by_pipeline
         WHERE status = 'queued' AND pipeline = ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = window.query_map(params![pipeline, HEAD_WINDOW], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut seen = 0;
    for row in rows {
        let (id, git_ref) = row?;
        seen += 1;
        if parallel || !busy.contains(&(pipeline.to_owned(), git_ref)) {
            return Ok(Some(id));
        }
    }
    if seen < HEAD_WINDOW {
        return Ok(None);
    }
    // Every build in the window waits behind a running one of its ref (a
    // deep queue on a busy branch): walk the pipeline's queued refs, each
    // one's oldest build by one index probe, and take the oldest of the refs
    // that are free.
    let mut first = conn.prepare_cached(
        "SELECT ref, id FROM builds INDEXED BY builds_queued_by_ref
         WHERE status = 'queued' AND pipeline = ?1 ORDER BY ref, id LIMIT 1",
    )?;
    let mut next = conn.prepare_cached(
        "SELECT ref, id FROM builds INDEXED BY builds_queued_by_ref
         WHERE status = 'queued' AND pipeline = ?1 AND ref > ?2 ORDER BY ref, id LIMIT 1",
    )?;
    let head = |r: &rusqlite::Row<'_>| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?));
    let mut at = first.query_row([pipeline], head).optional()?;
    let mut best: Option<i64> = None;
    while let Some((git_ref, id)) = at {
        at = next
            .query_row(params![pipeline, git_ref], head)
            .optional()?;
        if !busy.contains(&(pipeline.to_owned(), git_ref)) && best.is_none_or(|b| id < b) {
            best = Some(id);
        }
    }
    Ok(best)
}

const BUILD_COLUMNS: &str = "id, pipeline, repo, host, event, ref, branch, tag, commit_sha,
    before_sha, after_sha, status, reason, delivery_id, attempt, created_at, started_at,
    finished_at, clone_url, ssh_url, web_url, message, pusher, forced, path_filters,
    pull_request, runner_id, pipeline_revision";

/// How many columns [`BUILD_COLUMNS`] names.
const BUILD_COLUMN_COUNT: usize = 28;

/// The commit id in column `column`; anything but hex is a corrupt row.
fn commit_at(r: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<CommitId> {
    let text: String = r.get(column)?;
    text.parse().map_err(|_| bad_text(column, &text))
}

/// A commit id that may be absent (stored as empty text).
fn opt_commit_at(r: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<Option<CommitId>> {
    let text: String = r.get(column)?;
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| bad_text(column, &text))
}

fn build_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Build> {
    build_from_row_at(r, 0)
}

/// A build from the row's columns `at..`, in [`BUILD_COLUMNS`] order. A
/// corrupt value is an error, never read as a default.
fn build_from_row_at(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Build> {
    let status: String = r.get(at + 11)?;
    let filters: String = r.get(at + 24)?;
    let git_ref: String = r.get(at + 5)?;
    let before = commit_at(r, at + 9)?;
    let pull_request: Option<String> = r.get(at + 25)?;
    let runner_id: Option<String> = r.get(at + 26)?;
    let pull_request: Option<crate::model::PullRequest> = pull_request
        .map(|text| {
            serde_json::from_str(&text).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    at + 25,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })
        })
        .transpose()?;
    Ok(Build {
        id: r.get(at)?,
        pipeline: r.get(at + 1)?,
        push: PushEvent {
            repo: r.get(at + 2)?,
            kind: if pull_request.is_some() {
                RefKind::Other
            } else {
                RefKind::of(&git_ref)
            },
            git_ref,
            created: before == CommitId::ZERO,
            before,
            after: commit_at(r, at + 10)?,
            commit: opt_commit_at(r, at + 8)?,
            deleted: false,
            forced: r.get(at + 23)?,
            clone_url: r.get(at + 18)?,
            ssh_url: r.get(at + 19)?,
            web_url: r.get(at + 20)?,
            message: r.get(at + 21)?,
            pusher: r.get(at + 22)?,
            pull_request,
        },
        host: r.get(at + 3)?,
        status: status.parse().map_err(|()| bad_text(at + 11, &status))?,
        reason: r.get(at + 12)?,
        delivery: r.get(at + 13)?,
        attempt: r.get(at + 14)?,
        created_at: time_at(r, at + 15)?,
        started_at: opt_time_at(r, at + 16)?,
        finished_at: opt_time_at(r, at + 17)?,
        path_filters: serde_json::from_str(&filters).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(
                at + 24,
                rusqlite::types::Type::Text,
                Box::new(e),
            )
        })?,
        node: runner_id.as_deref().map(super::node_of),
        pipeline_revision: r.get(at + 27)?,
    })
}

impl Backend for SqliteBackend {
    fn record_deliveries(
        &self,
        deliveries: Vec<NewDelivery>,
    ) -> BoxFuture<'_, Result<Vec<Recorded>, StoreError>> {
        let max = self.options.max_queued_builds;
        Box::pin(self.write(move |conn| record(conn, deliveries, max)))
    }

    fn queue_manual(
        &self,
        build: NewBuild,
        host: Option<Host>,
        origin: BuildOrigin,
    ) -> BoxFuture<'_, Result<Manual, StoreError>> {
        let max = self.options.max_queued_builds;
        Box::pin(self.write(move |conn| queue_manual(conn, &build, host, &origin, max)))
    }

    fn build(&self, id: i64) -> BoxFuture<'_, Result<Option<Build>, StoreError>> {
        Box::pin(self.read(move |conn| {
            let sql = format!("SELECT {BUILD_COLUMNS} FROM builds WHERE id = ?1");
            Ok(conn
                .prepare_cached(&sql)?
                .query_row([id], build_from_row)
                .optional()?)
        }))
    }

    fn builds(&self, filter: BuildFilter) -> BoxFuture<'_, Result<Vec<Build>, StoreError>> {
        Box::pin(self.read(move |conn| {
            let statuses = serde_json::to_string(
                &filter
                    .statuses
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>(),
            )
            .map_err(|e| StoreError::unavailable(Cause::Failed, e))?;
            let sql = format!(
                "SELECT {BUILD_COLUMNS} FROM builds
                 WHERE (?1 IS NULL OR pipeline = ?1) AND (?2 IS NULL OR branch = ?2)
                   AND (?3 = '[]' OR status IN (SELECT value FROM json_each(?3)))
                   AND (?4 IS NULL OR id < ?4) AND (?6 IS NULL OR event = ?6)
                   AND (?7 IS NULL OR ref = ?7)
                 ORDER BY id DESC LIMIT ?5"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(
                params![
                    filter.pipeline,
                    filter.branch,
                    statuses,
                    filter.before,
                    filter.limit,
                    filter.event,
                    filter.git_ref
                ],
                build_from_row,
            )?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        }))
    }

    fn claim_next(
        &self,
        policy: ClaimPolicy,
        holder: Holder,
    ) -> BoxFuture<'_, Result<Option<Build>, StoreError>> {
        Box::pin(self.write(move |conn| claim(conn, &policy, &holder)))
    }

    fn renew(
        &self,
        runner: String,
        lease_ms: i64,
        builds: Vec<i64>,
    ) -> BoxFuture<'_, Result<Vec<(i64, i64)>, StoreError>> {
        Box::pin(self.write(move |conn| {
            let expires = now_ms().saturating_add(lease_ms);
            let mut renew = conn.prepare_cached(
                "UPDATE builds SET lease_expires_ms = ?2
                 WHERE id = ?3 AND runner_id = ?1 AND status = 'running'
                 RETURNING attempt",
            )?;
            let mut renewed = Vec::new();
            for id in builds {
                if let Some(attempt) = renew
                    .query_row(params![runner, expires, id], |r| r.get::<_, i64>(0))
                    .optional()?
                {
                    renewed.push((id, attempt));
                }
            }
            Ok(renewed)
        }))
    }

    fn rescue(&self) -> BoxFuture<'_, Result<Recovery, StoreError>> {
        Box::pin(self.write(|conn| {
            let (now, at) = (now_rfc3339(), now_ms());
            let cancelled = end_cancelled(conn, &now, Some(at))?;
            let failed = conn
                .prepare_cached(
                    "UPDATE builds SET status = 'error', reason = ?2, finished_at = ?1,
                         cancel_reason = NULL, runner_id = NULL, lease_expires_ms = NULL
                     WHERE status = 'running' AND lease_expires_ms < ?3 AND attempt >= 2
                     RETURNING id, report_context, path_filters",
                )?
                .query_map(params![&now, LEASE_LOST_TWICE, at], changed_row)?
                .collect::<rusqlite::Result<Vec<ChangedRow>>>()?;
            changed(
                conn,
                &failed,
                BuildStatus::Running,
                BuildStatus::Error,
                Some(LEASE_LOST_TWICE),
            )?;
            let failed: Vec<i64> = failed.into_iter().map(|(id, ..)| id).collect();
            for id in &failed {
                conn.prepare_cached(
                    "UPDATE steps SET status = 'skipped'
                     WHERE build = ?1 AND status IN ('pending', 'running')",
                )?
                .execute([id])?;
            }
            let requeued = conn
                .prepare_cached(
                    "UPDATE builds SET status = 'queued', attempt = attempt + 1,
                         reason = ?1, started_at = NULL, cancel_reason = NULL,
                         runner_id = NULL, lease_expires_ms = NULL
                     WHERE status = 'running' AND lease_expires_ms < ?2
                     RETURNING id, report_context, path_filters",
                )?
                .query_map(params![LEASE_LOST, at], changed_row)?
                .collect::<rusqlite::Result<Vec<ChangedRow>>>()?;
            changed(
                conn,
                &requeued,
                BuildStatus::Running,
                BuildStatus::Queued,
                Some(LEASE_LOST),
            )?;
            let requeued = requeued.into_iter().map(|(id, ..)| id).collect();
            Ok(Recovery {
                requeued,
                failed,
                cancelled,
            })
        }))
    }

    fn set_steps(
        &self,
        build: i64,
        steps: Vec<PlannedStep>,
        fence: Option<Fence>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |conn| {
            held(conn, build, fence.as_ref())?;
            conn.prepare_cached("DELETE FROM steps WHERE build = ?1")?
                .execute([build])?;
            let mut insert = conn.prepare_cached(
                "INSERT INTO steps (build, idx, name, status, reason)
                 VALUES (?1, ?2, ?3, CASE WHEN ?4 IS NULL THEN 'pending' ELSE 'skipped' END, ?4)",
            )?;
            for (idx, step) in steps.iter().enumerate() {
                insert.execute(params![build, idx as i64, step.name, step.skipped])?;
            }
            Ok(())
        }))
    }

    fn step_started(
        &self,
        build: i64,
        idx: usize,
        fence: Option<Fence>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |conn| {
            held(conn, build, fence.as_ref())?;
            conn.prepare_cached(
                "UPDATE steps SET status = 'running', started_at = ?3
                 WHERE build = ?1 AND idx = ?2",
            )?
            .execute(params![build, idx as i64, now_rfc3339()])?;
            Ok(())
        }))
    }

    fn step_finished(
        &self,
        build: i64,
        idx: usize,
        status: StepStatus,
        exit_code: Option<i32>,
        fence: Option<Fence>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |conn| {
            held(conn, build, fence.as_ref())?;
            conn.prepare_cached(
                "UPDATE steps SET status = ?3, exit_code = ?4, finished_at = ?5
                 WHERE build = ?1 AND idx = ?2",
            )?
            .execute(params![
                build,
                idx as i64,
                status.as_str(),
                exit_code,
                now_rfc3339()
            ])?;
            Ok(())
        }))
    }

    fn steps(&self, build: i64) -> BoxFuture<'_, Result<Vec<StepRecord>, StoreError>> {
        Box::pin(self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT name, status, exit_code, started_at, finished_at, reason FROM steps
                 WHERE build = ?1 ORDER BY idx",
            )?;
            let rows = stmt.query_map([build], |r| {
                let status: String = r.get(1)?;
                Ok(StepRecord {
                    name: r.get(0)?,
                    status: status.parse().unwrap_or(StepStatus::Pending),
                    exit_code: r.get(2)?,
                    started_at: opt_time_at(r, 3)?,
                    finished_at: opt_time_at(r, 4)?,
                    reason: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        }))
    }

    fn finish(
        &self,
        build: i64,
        status: BuildStatus,
        reason: Option<String>,
        fence: Option<Fence>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |conn| {
            held(conn, build, fence.as_ref())?;
            let now = now_rfc3339();
            let before: Option<String> = conn
                .prepare_cached("SELECT status FROM builds WHERE id = ?1")?
                .query_row([build], |r| r.get(0))
                .optional()?;
            let rows = conn
                .prepare_cached(
                    "UPDATE builds SET status = ?2, reason = ?3, finished_at = ?4,
                         lease_expires_ms = NULL
                     WHERE id = ?1 AND status IN ('queued', 'running')
                     RETURNING id, report_context, path_filters",
                )?
                .query_map(params![build, status.as_str(), reason, now], changed_row)?
                .collect::<rusqlite::Result<Vec<ChangedRow>>>()?;
            if let Some(from) = before.as_deref().and_then(|s| s.parse().ok()) {
                changed(conn, &rows, from, status, reason.as_deref())?;
            }
            conn.prepare_cached(
                "UPDATE steps SET status = 'skipped' WHERE build = ?1 AND status = 'pending'",
            )?
            .execute([build])?;
            Ok(())
        }))
    }

    fn requeue(
        &self,
        build: i64,
        reason: String,
        fence: Option<Fence>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |conn| {
            held(conn, build, fence.as_ref())?;
            let rows = conn
                .prepare_cached(
                    "UPDATE builds SET status = 'queued', reason = ?2, started_at = NULL,
                         cancel_reason = NULL, runner_id = NULL, lease_expires_ms = NULL
                     WHERE id = ?1 AND status = 'running'
                     RETURNING id, report_context, path_filters",
                )?
                .query_map(params![build, reason], changed_row)?
                .collect::<rusqlite::Result<Vec<ChangedRow>>>()?;
            changed(
                conn,
                &rows,
                BuildStatus::Running,
                BuildStatus::Queued,
                Some(&reason),
            )?;
            Ok(())
        }))
    }

    fn cancel(
        &self,
        build: i64,
        reason: String,
    ) -> BoxFuture<'_, Result<CancelOutcome, StoreError>> {
        Box::pin(self.write(move |conn| {
            let found: Option<(String, String)> = conn
                .prepare_cached("SELECT status, pipeline FROM builds WHERE id = ?1")?
                .query_row([build], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((status, pipeline)) = found else {
                return Ok(CancelOutcome::NotFound);
            };
            match status.as_str() {
                "queued" | "waiting" => {
                    let from: BuildStatus = status.parse().unwrap_or(BuildStatus::Queued);
                    let rows = conn
                        .prepare_cached(
                            "UPDATE builds SET status = 'cancelled', reason = ?2, finished_at = ?3
                             WHERE id = ?1 RETURNING id, report_context, path_filters",
                        )?
                        .query_map(params![build, reason, now_rfc3339()], changed_row)?
                        .collect::<rusqlite::Result<Vec<ChangedRow>>>()?;
                    changed(conn, &rows, from, BuildStatus::Cancelled, Some(&reason))?;
                    conn.prepare_cached(
                        "UPDATE steps SET status = 'skipped' WHERE build = ?1 AND status = 'pending'",
                    )?
                    .execute([build])?;
                    Ok(CancelOutcome::Cancelled { pipeline })
                }
                "running" => {
                    conn.prepare_cached(
                        "UPDATE builds SET cancel_reason = COALESCE(cancel_reason, ?2) WHERE id = ?1",
                    )?
                    .execute(params![build, reason])?;
                    Ok(CancelOutcome::Requested)
                }
                _ => Ok(CancelOutcome::AlreadyFinished),
            }
        }))
    }

    fn resolve_commit(
        &self,
        build: i64,
        commit: CommitId,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE builds SET commit_sha = ?2, after_sha = ?2
                 WHERE id = ?1 AND commit_sha = ''",
            )?
            .execute(params![build, commit.as_str()])?;
            Ok(())
        }))
    }

    fn approve(&self, build: i64) -> BoxFuture<'_, Result<ApproveOutcome, StoreError>> {
        Box::pin(self.write(move |conn| {
            let found: Option<String> = conn
                .prepare_cached("SELECT status FROM builds WHERE id = ?1")?
                .query_row([build], |r| r.get(0))
                .optional()?;
            let Some(status) = found else {
                return Ok(ApproveOutcome::NotFound);
            };
            let status: BuildStatus = status.parse().map_err(|()| {
                StoreError::unavailable(Cause::Failed, format!("build {build} has status {status}"))
            })?;
            if status != BuildStatus::Waiting {
                return Ok(ApproveOutcome::NotWaiting(status));
            }
            let reason = "approved";
            let rows = conn
                .prepare_cached(
                    "UPDATE builds SET status = 'queued', reason = ?2
                     WHERE id = ?1 AND status = 'waiting'
                     RETURNING id, report_context, path_filters",
                )?
                .query_map(params![build, reason], changed_row)?
                .collect::<rusqlite::Result<Vec<ChangedRow>>>()?;
            changed(
                conn,
                &rows,
                BuildStatus::Waiting,
                BuildStatus::Queued,
                Some(reason),
            )?;
            Ok(ApproveOutcome::Approved)
        }))
    }

    fn cancel_reason(&self, build: i64) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        Box::pin(self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT cancel_reason FROM builds WHERE id = ?1")?
                .query_row([build], |r| r.get(0))
                .optional()?
                .flatten())
        }))
    }

    fn recover(&self) -> BoxFuture<'_, Result<Recovery, StoreError>> {
        Box::pin(self.write(|conn| {
            let now = now_rfc3339();
            let cancelled = end_cancelled(conn, &now, None)?;
            let failed = conn
                .prepare_cached(
                    "UPDATE builds SET status = 'error', reason = ?2,
                         finished_at = ?1, runner_id = NULL, lease_expires_ms = NULL
                     WHERE status = 'running' AND attempt >= 2
                     RETURNING id, report_context, path_filters",
                )?
                .query_map(params![&now, INTERRUPTED_TWICE], changed_row)?
                .collect::<rusqlite::Result<Vec<ChangedRow>>>()?;
            changed(
                conn,
                &failed,
                BuildStatus::Running,
                BuildStatus::Error,
                Some(INTERRUPTED_TWICE),
            )?;
            let failed = failed.into_iter().map(|(id, ..)| id).collect();
            conn.prepare_cached(
                "UPDATE steps SET status = 'skipped'
                 WHERE status IN ('pending', 'running')
                   AND build IN (SELECT id FROM builds WHERE status = 'error'
                                 AND reason = ?1)",
            )?
            .execute([INTERRUPTED_TWICE])?;
            let requeued = conn
                .prepare_cached(
                    "UPDATE builds SET status = 'queued', attempt = attempt + 1,
                         reason = ?1, started_at = NULL, cancel_reason = NULL,
                         runner_id = NULL, lease_expires_ms = NULL
                     WHERE status = 'running' RETURNING id, report_context, path_filters",
                )?
                .query_map([INTERRUPTED], changed_row)?
                .collect::<rusqlite::Result<Vec<ChangedRow>>>()?;
            changed(
                conn,
                &requeued,
                BuildStatus::Running,
                BuildStatus::Queued,
                Some(INTERRUPTED),
            )?;
            let requeued = requeued.into_iter().map(|(id, ..)| id).collect();
            Ok(Recovery {
                requeued,
                failed,
                cancelled,
            })
        }))
    }

    fn prune(&self, pipeline: String, keep: u32) -> BoxFuture<'_, Result<Vec<i64>, StoreError>> {
        Box::pin(self.write(move |conn| {
            let ids = conn
                .prepare_cached(
                    "DELETE FROM builds WHERE pipeline = ?1
                       AND status NOT IN ('waiting', 'queued', 'running')
                       AND id NOT IN (SELECT id FROM builds WHERE pipeline = ?1
                                      ORDER BY id DESC LIMIT ?2)
                     RETURNING id",
                )?
                .query_map(params![pipeline, keep], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<i64>>>()?;
            let cutoff =
                OffsetDateTime::now_utc() - time::Duration::days(super::DELIVERY_MEMORY_DAYS);
            let cutoff = cutoff
                .format(&time::format_description::well_known::Rfc3339)
                .map_err(|e| StoreError::unavailable(Cause::Failed, e))?;
            conn.prepare_cached(
                "DELETE FROM deliveries WHERE id IN (
                     SELECT d.id FROM deliveries d
                     WHERE d.received_at < ?1
                       AND NOT EXISTS (SELECT 1 FROM builds b WHERE b.delivery = d.id)
                     ORDER BY d.received_at LIMIT 1000)",
            )?
            .execute([cutoff])?;
            Ok(ids)
        }))
    }

    fn due_reports(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<ReportJob>, StoreError>> {
        // A read: older reports were superseded when newer ones were
        // written (migration 7's trigger), out of the webhook writer's way.
        Box::pin(self.read(move |conn| {
            let sql = format!(
                "SELECT r.id, r.context, r.state, r.description, r.attempts, r.created_ms,
                        {cols}
                 FROM reports r JOIN builds ON builds.id = r.build
                 WHERE r.outcome = 'pending' AND r.next_attempt_ms <= ?1
                 ORDER BY r.id LIMIT ?2",
                cols = BUILD_COLUMNS
                    .split(',')
                    .map(|c| format!("builds.{}", c.trim()))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![now_ms, limit], |r| {
                let state: String = r.get(2)?;
                Ok(ReportJob {
                    id: r.get(0)?,
                    context: r.get(1)?,
                    state: state.parse().unwrap_or(BuildStatus::Error),
                    description: r.get(3)?,
                    attempts: r.get(4)?,
                    created_ms: r.get(5)?,
                    build: build_from_row_at(r, 6)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        }))
    }

    fn next_report_due(&self) -> BoxFuture<'_, Result<Option<i64>, StoreError>> {
        Box::pin(self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT MIN(next_attempt_ms) FROM reports WHERE outcome = 'pending'",
                )?
                .query_row([], |r| r.get(0))?)
        }))
    }

    fn report_attempted(
        &self,
        id: i64,
        outcome: ReportOutcome,
        retry_at_ms: Option<i64>,
        error: Option<String>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |conn| {
            let outcome_name = match outcome {
                ReportOutcome::Pending => "pending",
                ReportOutcome::Delivered => "delivered",
                ReportOutcome::Failed => "failed",
                ReportOutcome::Superseded => "superseded",
            };
            let delivered_at = (outcome == ReportOutcome::Delivered).then(now_rfc3339);
            conn.prepare_cached(
                // A report superseded while it was in flight stays superseded
                // unless it landed: a newer state is what will be sent.
                "UPDATE reports SET
                     outcome = CASE WHEN outcome = 'superseded' AND ?2 <> 'delivered'
                                    THEN 'superseded' ELSE ?2 END,
                     attempts = attempts + 1,
                     next_attempt_ms = COALESCE(?3, next_attempt_ms),
                     last_error = COALESCE(?4, last_error),
                     delivered_at = COALESCE(?5, delivered_at)
                 WHERE id = ?1",
            )?
            .execute(params![id, outcome_name, retry_at_ms, error, delivered_at])?;
            Ok(())
        }))
    }

    fn reports(&self, build: i64) -> BoxFuture<'_, Result<Vec<ReportRecord>, StoreError>> {
        Box::pin(self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT context, state, outcome, attempts, last_error, created_at, delivered_at
                 FROM reports WHERE build = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([build], |r| {
                let outcome: String = r.get(2)?;
                let state: String = r.get(1)?;
                Ok(ReportRecord {
                    context: r.get(0)?,
                    state: ReportedState(state.parse().map_err(|()| bad_text(1, &state))?),
                    outcome: match outcome.as_str() {
                        "pending" => ReportOutcome::Pending,
                        "delivered" => ReportOutcome::Delivered,
                        "failed" => ReportOutcome::Failed,
                        "superseded" => ReportOutcome::Superseded,
                        _ => return Err(bad_text(2, &outcome)),
                    },
                    attempts: r.get(3)?,
                    last_error: r.get(4)?,
                    created_at: time_at(r, 5)?,
                    delivered_at: opt_time_at(r, 6)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        }))
    }

    fn pending_reports(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.read(|conn| {
            let n: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM reports WHERE outcome = 'pending'")?
                .query_row([], |r| r.get(0))?;
            Ok(n.max(0) as u64)
        }))
    }

    fn delivery_count(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.read(|conn| {
            let n: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM deliveries")?
                .query_row([], |r| r.get(0))?;
            Ok(n.max(0) as u64)
        }))
    }

    fn delivery_recorded(
        &self,
        pipeline: String,
        delivery_id: String,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT 1 FROM deliveries WHERE pipeline = ?1 AND delivery_id = ?2",
                )?
                .query_row(params![pipeline, delivery_id], |_| Ok(()))
                .optional()?
                .is_some())
        }))
    }

    fn queued_count(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.read(in_queue))
    }

    fn origin(&self, build: i64) -> BoxFuture<'_, Result<Option<BuildOrigin>, StoreError>> {
        Box::pin(self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT rebuild_of, triggered_by, resume FROM build_origins WHERE build = ?1",
                )?
                .query_row([build], |r| {
                    let resume = r
                        .get::<_, Option<String>>(2)?
                        .map(|json| {
                            serde_json::from_str(&json).map_err(|e| {
                                rusqlite::Error::FromSqlConversionFailure(
                                    2,
                                    rusqlite::types::Type::Text,
                                    Box::new(e),
                                )
                            })
                        })
                        .transpose()?;
                    Ok(BuildOrigin {
                        rebuild_of: r.get(0)?,
                        triggered_by: r.get(1)?,
                        resume,
                    })
                })
                .optional()?)
        }))
    }

    fn latest_per_branch(
        &self,
        pipeline: String,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<Build>, StoreError>> {
        Box::pin(self.read(move |conn| {
            let sql = format!(
                "SELECT {BUILD_COLUMNS} FROM builds WHERE id IN
                   (SELECT MAX(id) FROM builds WHERE pipeline = ?1 AND branch IS NOT NULL
                    GROUP BY branch)
                 ORDER BY id DESC LIMIT ?2"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![pipeline, limit], build_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        }))
    }

    fn runner_seen(&self, info: RunnerInfo) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |conn| {
            let labels = serde_json::to_string(&info.labels)
                .map_err(|e| StoreError::unavailable(Cause::Failed, e))?;
            conn.prepare_cached(
                "INSERT INTO runners (runner_id, node, role, labels, version, max_parallel,
                     heartbeat_ms, started_ms, last_seen_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)
                 ON CONFLICT (runner_id) DO UPDATE SET node = excluded.node,
                     role = excluded.role, labels = excluded.labels,
                     version = excluded.version, max_parallel = excluded.max_parallel,
                     heartbeat_ms = excluded.heartbeat_ms, last_seen_ms = excluded.last_seen_ms",
            )?
            .execute(params![
                info.runner_id,
                info.node,
                info.role,
                labels,
                info.version,
                info.max_parallel,
                info.heartbeat_ms,
                now_ms()
            ])?;
            Ok(())
        }))
    }

    fn runner_gone(&self, runner_id: String) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |conn| {
            conn.prepare_cached("DELETE FROM runners WHERE runner_id = ?1")?
                .execute([runner_id])?;
            Ok(())
        }))
    }

    fn forget_runners(&self, older_than_ms: i64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.write(move |conn| {
            let n = conn
                .prepare_cached("DELETE FROM runners WHERE last_seen_ms < ?1")?
                .execute([now_ms().saturating_sub(older_than_ms)])?;
            Ok(n as u64)
        }))
    }

    fn runners(&self) -> BoxFuture<'_, Result<Vec<RunnerRecord>, StoreError>> {
        Box::pin(self.read(|conn| {
            let now = now_ms();
            let mut stmt = conn.prepare_cached(
                "SELECT r.runner_id, r.node, r.role, r.labels, r.version, r.max_parallel,
                        r.started_ms, r.last_seen_ms,
                        r.last_seen_ms < ?1 - ?2 * r.heartbeat_ms,
                        (SELECT count(*) FROM builds b
                         WHERE b.status = 'running' AND b.runner_id = r.runner_id)
                 FROM runners r ORDER BY r.node, r.runner_id",
            )?;
            let rows = stmt.query_map(params![now, RUNNER_GONE_AFTER_BEATS], |r| {
                let labels: String = r.get(3)?;
                let at = |ms: i64| {
                    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
                };
                Ok(RunnerRecord {
                    id: r.get(0)?,
                    node: r.get(1)?,
                    role: r.get(2)?,
                    labels: serde_json::from_str(&labels).map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(
                            3,
                            rusqlite::types::Type::Text,
                            Box::new(e),
                        )
                    })?,
                    version: r.get(4)?,
                    max_parallel_builds: r.get(5)?,
                    started_at: at(r.get(6)?),
                    last_seen_at: at(r.get(7)?),
                    gone: r.get(8)?,
                    running: r.get(9)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        }))
    }

    fn activity(&self) -> BoxFuture<'_, Result<super::Activity, StoreError>> {
        Box::pin(self.read(|conn| {
            let newest: i64 = conn
                .prepare_cached("SELECT COALESCE(MAX(id), 0) FROM builds")?
                .query_row([], |r| r.get(0))?;
            let mut stmt = conn.prepare_cached(
                "SELECT id, status FROM builds WHERE status IN ('waiting', 'queued', 'running')
                 ORDER BY id DESC LIMIT 1000",
            )?;
            let active = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((newest, active))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    /// A locked database is `Busy` (retry soon), a refused write `Failed`:
    /// callers pick their Retry-After by the cause, not by words.
    #[test]
    fn sqlite_errors_are_classified_by_cause() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookci.db");
        let holder = Connection::open(&path).unwrap();
        holder
            .execute_batch("CREATE TABLE t (x INTEGER NOT NULL); BEGIN EXCLUSIVE")
            .unwrap();
        let other = Connection::open(&path).unwrap();
        other.busy_timeout(std::time::Duration::ZERO).unwrap();
        let locked = other.execute("INSERT INTO t VALUES (1)", []).unwrap_err();
        assert_eq!(fault(locked).cause, Cause::Busy);
        holder.execute_batch("ROLLBACK").unwrap();
        let refused = other
            .execute("INSERT INTO t VALUES (NULL)", [])
            .unwrap_err();
        assert_eq!(fault(refused).cause, Cause::Failed);
    }

    /// A row whose commit id is not hex is an error, never a default: the
    /// commit reaches git, a URL path and the steps' environment. An empty
    /// commit is a build without one yet.
    #[tokio::test]
    async fn a_build_row_whose_commit_id_is_not_hex_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookci.db");
        let options = StoreOptions {
            max_queued_builds: 10,
        };
        let store = Store::open_sqlite(&path, options).unwrap();
        let conn = Connection::open(&path).unwrap();
        let insert = |id: i64, commit: &str, before: &str| {
            conn.execute(
                "INSERT INTO builds (id, pipeline, repo, event, ref, branch, commit_sha,
                     before_sha, after_sha, clone_url, message, pusher, status, created_at)
                 VALUES (?1, 'app', 'acme/app', 'push', 'refs/heads/main', 'main', ?2, ?3,
                     'abcd', 'https://git.example/acme/app.git', 'm', 'me', 'success',
                     '2026-01-01T00:00:00.000Z')",
                params![id, commit, before],
            )
            .unwrap();
        };
        let zero = crate::model::ZERO_SHA;
        insert(1, "ABCD", zero);
        insert(2, "--upload-pack=x", zero);
        insert(3, "abcd", "");
        insert(4, "", zero);
        let good = store.build(1).await.unwrap().unwrap();
        assert_eq!(good.commit_str(), "abcd");
        assert!(good.created);
        assert!(store.build(2).await.is_err());
        assert!(store.build(3).await.is_err());
        assert_eq!(store.build(4).await.unwrap().unwrap().commit, None);
    }

    /// A database written before the report rule moved out of SQL (schema
    /// 8, with migration 3's triggers) migrates, and from then on each state
    /// change writes its report once: from Rust, not again from a trigger.
    #[tokio::test]
    async fn a_database_from_before_the_rust_report_rule_migrates_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookci.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            migrations::migrate_until(&mut conn, 8).unwrap();
            conn.execute(
                "INSERT INTO builds (pipeline, repo, event, ref, branch, commit_sha, before_sha,
                     after_sha, clone_url, message, pusher, status, created_at, report_context)
                 VALUES ('app', 'acme/app', 'push', 'refs/heads/main', 'main', 'abc1', '0000000000000000000000000000000000000000',
                     'abc1', 'https://git.example/acme/app.git', 'm', 'me', 'queued',
                     '2026-01-01T00:00:00.000Z', 'ci/app')",
                [],
            )
            .unwrap();
        }
        let store = Store::open_sqlite(
            &path,
            StoreOptions {
                max_queued_builds: 10,
            },
        )
        .unwrap();
        let build = store.claim_next(ClaimPolicy::default()).await.unwrap();
        let id = build.expect("the old queued build is claimed").id;
        store.finish(id, BuildStatus::Success, None).await.unwrap();
        let states: Vec<_> = store
            .reports(id)
            .await
            .unwrap()
            .iter()
            .map(|r| r.state.as_str())
            .collect();
        assert_eq!(states, ["pending", "running", "success"]);
        let conn = Connection::open(&path).unwrap();
        let triggers: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger'
                 AND name IN ('report_on_insert', 'report_on_update')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(triggers, 0);
    }

    /// Migration 11 makes `builds` again: every row, step, report and
    /// origin of a database at version 10 is kept (foreign keys would have
    /// deleted them with the old table), the queue count and the claim
    /// indexes still work, and a pruned build's id is not handed out again.
    #[tokio::test]
    async fn the_builds_table_made_again_keeps_every_row_and_what_refers_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookci.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            configure(&conn).unwrap();
            migrations::migrate_until(&mut conn, 10).unwrap();
            let insert = |id: i64, status: &str| {
                conn.execute(
                    "INSERT INTO builds (id, pipeline, repo, event, ref, branch, commit_sha,
                         before_sha, after_sha, clone_url, message, pusher, status, created_at,
                         report_context)
                     VALUES (?1, 'app', 'acme/app', 'push', 'refs/heads/main', 'main', 'abc1',
                         '0000000000000000000000000000000000000000', 'abc1', 'https://git.example/acme/app.git', 'm', 'me', ?2,
                         '2026-01-01T00:00:00.000Z', 'ci/app')",
                    params![id, status],
                )
                .unwrap();
            };
            insert(1, "success");
            insert(2, "queued");
            insert(9, "failure");
            conn.execute("DELETE FROM builds WHERE id = 9", []).unwrap();
            conn.execute(
                "INSERT INTO steps (build, idx, name, status) VALUES (1, 0, 'test', 'success')",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO reports (build, context, state, description, created_at)
                 VALUES (1, 'ci/app', 'success', '', '2026-01-01T00:00:00.000Z')",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO build_origins (build, triggered_by) VALUES (1, 'admin')",
                [],
            )
            .unwrap();
        }
        let store = Store::open_sqlite(
            &path,
            StoreOptions {
                max_queued_builds: 10,
            },
        )
        .unwrap();
        assert_eq!(store.steps(1).await.unwrap().len(), 1);
        assert_eq!(store.reports(1).await.unwrap().len(), 1);
        assert!(store.origin(1).await.unwrap().is_some());
        assert_eq!(store.queued_count().await.unwrap(), 1);
        let claimed = store.claim_next(ClaimPolicy::default()).await.unwrap();
        assert_eq!(claimed.map(|b| b.id), Some(2));
        let conn = Connection::open(&path).unwrap();
        let (version, fks): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT user_version FROM pragma_user_version),
                        (SELECT COUNT(*) FROM pragma_foreign_key_check)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((version, fks), (migrations::count() as i64, 0));
        let next: i64 = conn
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'builds'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(next, 9, "ids of pruned builds are not reused");
    }
}
