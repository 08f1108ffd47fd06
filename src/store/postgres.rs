//! The PostgreSQL backend: several hookci processes on one database.
//!
//! A pool of connections (deadpool-postgres); every write is one
//! transaction in READ COMMITTED that returns once it committed. What one
//! SQLite writer thread serialises, the database serialises here: row locks
//! (`SELECT … FOR UPDATE` before a state change), `ON CONFLICT` for two
//! receivers recording one delivery, a transaction-scoped advisory lock
//! around a claim (a fair claim needs one view of what runs), and a partial
//! unique index that refuses a second running build of a serial
//! (pipeline, ref). Claims record the claiming node in `runner`; a start
//! recovers only its own node's builds.

use super::outbox::{self, NewReport, Outbox, StateChange};
use super::pg_migrations;
use super::{
    Announce, ApproveOutcome, Backend, BoxFuture, Build, BuildFilter, BuildOrigin, BuildStatus,
    CancelOutcome, Cause, ClaimPolicy, Fault, Fence, Holder, LEASE_LOST, LEASE_LOST_TWICE,
    LogChunk, LogHead, Manual, NewBuild, NewDelivery, PlannedStep, RUNNER_GONE_AFTER_BEATS,
    Recorded, Recovery, ReportJob, ReportOutcome, ReportRecord, ReportedState, RunnerInfo,
    RunnerRecord, StepRecord, StepStatus, StoreError, StoreOptions,
};
use crate::model::{CommitId, Host, PushEvent, RefKind};
use deadpool_postgres::Transaction;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use time::OffsetDateTime;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};

/// The reason of a build that a dead daemon left running twice.
const INTERRUPTED_TWICE: &str = "interrupted twice";
/// The reason of a build re-queued after a dead daemon left it running.
const INTERRUPTED: &str = "interrupted: the daemon stopped while it ran";

/// The first key of hookci's advisory locks (the second is the schema's
/// hash, so that installations in different schemas do not wait on each
/// other): "hkci".
const LOCK_CLASS: i32 = 0x686b_6369;
/// Second-key offsets, per use.
const MIGRATE_LOCK: &str = "migrate";
const CLAIM_LOCK: &str = "claim";
const REPORT_LOCK: &str = "report";

/// How many of a pipeline's oldest queued builds a claim looks at before it
/// walks the pipeline's queued refs one by one instead (as SQLite's claim).
const HEAD_WINDOW: i64 = 64;

/// Where and as whom to open the PostgreSQL store.
#[derive(Clone)]
pub struct PgOptions {
    /// `postgres://user:password@host:port/db?options` or `key=value ...`.
    /// A secret: never logged or shown with its password.
    pub url: crate::secret::Secret,
    /// This process's node name: the runner its claims record.
    pub node: String,
    /// The most connections this process holds.
    pub pool_size: usize,
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &"***")
            .field("node", &self.node)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

/// What kind of failure a PostgreSQL error is.
pub(super) fn fault(e: &tokio_postgres::Error) -> Fault {
    let cause = match e.code() {
        Some(code) => classify(code),
        // No server answer: the connection failed, closed or timed out,
        // or a value did not convert (a schema this hookci does not know).
        None if e.is_closed() || io_source(e) => Cause::Down,
        None if e.to_string().starts_with("timeout") => Cause::Down,
        None => Cause::Failed,
    };
    Fault {
        cause,
        detail: describe(e),
    }
}

/// A server error's class: contention is `Busy`, a server that is going
/// away or not there yet `Down`, the rest `Failed`.
fn classify(code: &SqlState) -> Cause {
    const BUSY: &[SqlState] = &[
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::T_R_DEADLOCK_DETECTED,
        SqlState::LOCK_NOT_AVAILABLE,
        SqlState::QUERY_CANCELED,
        SqlState::TOO_MANY_CONNECTIONS,
    ];
    const DOWN: &[SqlState] = &[
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::CONNECTION_EXCEPTION,
        SqlState::CONNECTION_FAILURE,
        SqlState::CONNECTION_DOES_NOT_EXIST,
        SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
        SqlState::READ_ONLY_SQL_TRANSACTION,
    ];
    if BUSY.contains(code) {
        Cause::Busy
    } else if DOWN.contains(code) {
        Cause::Down
    } else {
        Cause::Failed
    }
}

fn io_source(e: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// The error in words, with the server's message (never the URL: the
/// driver's errors do not carry it).
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", e, db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        },
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Unavailable(fault(&e))
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::PoolError;
        match e {
            PoolError::Backend(e) => e.into(),
            // Every connection busy for the whole wait: contention.
            PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => {
                StoreError::unavailable(Cause::Busy, "no database connection became free in time")
            }
            // A new connection, or the check of a pooled one, took too
            // long: the server does not answer (a partition, a restart).
            PoolError::Timeout(_) => StoreError::unavailable(
                Cause::Down,
                "the database did not answer a connection in time",
            ),
            other => StoreError::unavailable(Cause::Down, other),
        }
    }
}

fn failed(detail: impl std::fmt::Display) -> StoreError {
    StoreError::unavailable(Cause::Failed, detail)
}

/// TLS as libpq's `sslmode` asks, with certificates checked against the
/// system's roots: `disable` never, `require` always, `prefer` (the
/// default) when the server offers it, except to a loopback address or a
/// Unix socket, where the traffic never leaves the box.
fn tls_for(config: &tokio_postgres::Config) -> Result<Option<rustls::ClientConfig>, StoreError> {
    use tokio_postgres::config::{Host as PgHost, SslMode};
    let local = config.get_hosts().iter().all(|h| match h {
        PgHost::Tcp(name) => {
            name == "localhost"
                || name
                    .trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        #[cfg(unix)]
        PgHost::Unix(_) => true,
    });
    let wanted = match config.get_ssl_mode() {
        SslMode::Disable => false,
        SslMode::Require => true,
        _ => !local,
    };
    if !wanted {
        return Ok(None);
    }
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    use rustls_platform_verifier::ConfigVerifierExt;
    rustls::ClientConfig::with_platform_verifier()
        .map(Some)
        .map_err(|e| failed(format!("cannot set up TLS for the database: {e}")))
}

/// The PostgreSQL backend.
#[derive(Debug)]
pub struct PostgresBackend {
    pool: Pool,
    options: StoreOptions,
    node: String,
    /// How to open the connection that hears other processes.
    hearing: Hearing,
    /// The session that holds the reporter lock, once it does: one process
    /// sends the status reports at a time (see [`PostgresBackend::reporting`]).
    reporter: tokio::sync::Mutex<Option<(tokio_postgres::Client, bool)>>,
    /// The session that holds this process's runner mark
    /// ([`Backend::hold_runner_mark`]), once it does.
    runner_mark: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
    /// When this process last asked for the reporter lock.
    reporter_asked: std::sync::Mutex<Option<std::time::Instant>>,
    /// Where `record_deliveries` calls wait for a lane ([`start_recording`]).
    recorder: tokio::sync::mpsc::UnboundedSender<Pending>,
    /// A "builds were queued" announcement is waiting to be sent.
    queued_unsent: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// What the connection that hears other processes needs.
#[derive(Clone)]
struct Hearing {
    config: tokio_postgres::Config,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// The NOTIFY channel of this schema: installations in different
    /// schemas of one database do not hear each other.
    channel: String,
    /// This process's tag on what it announces, so that it does not hear
    /// itself.
    me: String,
}

impl std::fmt::Debug for Hearing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hearing")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// How often a process looks again without being told (a NOTIFY lost
/// while its connection was down, or a process that died between its
/// commit and its NOTIFY).
const FALLBACK_POLL: Duration = Duration::from_secs(5);

impl PostgresBackend {
    /// Connects, migrates (under the migration lock) and returns the
    /// backend. Fails `Down` when the server cannot be reached, `Failed`
    /// when it refuses (credentials, a newer schema).
    pub async fn open(pg: PgOptions, options: StoreOptions) -> Result<PostgresBackend, StoreError> {
        let mut config: tokio_postgres::Config = pg.url.expose().parse().map_err(|e| {
            failed(format!(
                "the store URL is not a PostgreSQL URL ({})",
                describe(&e)
            ))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        if config.get_application_name().is_none() {
            config.application_name(format!("hookci {}", pg.node));
        }
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let tls = tls_for(&config)?.map(std::sync::Arc::new);
        let hearing_config = config.clone();
        let manager = match &tls {
            Some(tls) => Manager::from_config(
                config,
                tokio_postgres_rustls::MakeRustlsConnect::new((**tls).clone()),
                manager_config,
            ),
            None => Manager::from_config(config, tokio_postgres::NoTls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(pg.pool_size.max(2))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(failed)?;
        let channel: String = pool
            .get()
            .await?
            .query_one(
                "SELECT 'hookci_' || left(md5(COALESCE(current_schema(), '')), 16)",
                &[],
            )
            .await?
            .try_get(0)?;
        let recorder = start_recording(&pool, options.max_queued_builds);
        let backend = PostgresBackend {
            pool,
            options,
            node: pg.node,
            hearing: Hearing {
                config: hearing_config,
                tls,
                channel,
                me: format!("{:016x}", rand::random::<u64>()),
            },
            reporter: tokio::sync::Mutex::new(None),
            reporter_asked: std::sync::Mutex::new(None),
            runner_mark: tokio::sync::Mutex::new(None),
            recorder,
            queued_unsent: std::sync::Arc::default(),
        };
        backend.migrate().await?;
        Ok(backend)
    }

    /// True while this process sends the status reports: it holds the
    /// reporter lock, a session advisory lock on a connection of its own,
    /// so that each report has one sender across all processes and the
    /// reporter's one-request-per-key order holds. Another process takes
    /// over when that session ends (its process died, or lost the
    /// database); the others ask again on each wake-up.
    async fn reporting(&self) -> bool {
        let mut session = self.reporter.lock().await;
        if session.as_ref().is_some_and(|(c, _)| c.is_closed()) {
            *session = None;
        }
        if session.is_none() {
            match self.hearing.connect().await {
                Ok((client, _)) => *session = Some((client, false)),
                Err(e) => {
                    tracing::debug!(error = %describe(&e), "cannot ask for the reporter lock");
                    return false;
                }
            }
        }
        let Some((client, held)) = session.as_mut() else {
            return false;
        };
        if *held {
            return true;
        }
        // Another process holds it: asked again at most once a second, not
        // on every wake-up (a flood of deliveries wakes the reporter for
        // each), so a takeover waits at most that second.
        {
            let now = std::time::Instant::now();
            let mut asked = self
                .reporter_asked
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if asked.is_some_and(|then| now.duration_since(then) < REPORTER_ASK_EVERY) {
                return false;
            }
            *asked = Some(now);
        }
        let got = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, hashtext(COALESCE(current_schema(), '') || $2::text))",
                &[&LOCK_CLASS, &REPORT_LOCK],
            )
            .await
            .and_then(|row| row.try_get::<_, bool>(0));
        match got {
            Ok(got) => {
                if got {
                    tracing::info!("this process sends the status reports");
                }
                *held = got;
                got
            }
            Err(_) => {
                *session = None;
                false
            }
        }
    }

    /// Wakes the readers of `build`'s log in other processes, when `tx`
    /// commits.
    async fn notify_log(&self, tx: &Transaction<'_>, build: i64) -> Result<(), StoreError> {
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[
                &self.hearing.channel,
                &payload(&self.hearing.me, Announce::Log(build)),
            ],
        )
        .await?;
        Ok(())
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await?)
    }

    /// Brings the schema up to date in one transaction under the migration
    /// lock; refuses a schema newer than this hookci knows.
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock(&tx, MIGRATE_LOCK).await?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS hookci_schema (version bigint NOT NULL)")
            .await?;
        let version: i64 = tx
            .query_one("SELECT COALESCE(MAX(version), 0) FROM hookci_schema", &[])
            .await?
            .try_get(0)?;
        let version = usize::try_from(version).unwrap_or(0);
        if version > pg_migrations::latest() {
            return Err(failed(format!(
                "the database has schema version {version}, newer than this hookci knows ({})",
                pg_migrations::latest()
            )));
        }
        for (n, sql) in pg_migrations::MIGRATIONS {
            if *n <= version {
                continue;
            }
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO hookci_schema (version) VALUES ($1)",
                &[&(*n as i64)],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Takes hookci's advisory lock `what` for this schema until the
/// transaction ends.
async fn lock(tx: &Transaction<'_>, what: &str) -> Result<(), StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext(COALESCE(current_schema(), '') || $2::text))",
        &[&LOCK_CLASS, &what],
    )
    .await?;
    Ok(())
}

/// Reports a transaction writes, collected by [`outbox::state_changed`]
/// (which is synchronous) and inserted before the transaction commits.
#[derive(Default)]
struct Collected(Vec<(NewReport, OffsetDateTime)>);

impl Outbox for Collected {
    fn write_report(&mut self, report: &NewReport, at: OffsetDateTime) -> Result<(), StoreError> {
        self.0.push((report.clone(), at));
        Ok(())
    }
}

impl Collected {
    /// Inserts the reports, each superseding the pending ones before it of
    /// the same repository, commit and context.
    async fn write(self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        if self.0.is_empty() {
            return Ok(());
        }
        // One statement: the UPDATE sees the table as it was before the
        // INSERT, and supersedes only older rows.
        let insert = tx
            .prepare_cached(
                "WITH new AS (
                     INSERT INTO reports (build, context, state, description, created_at,
                         created_ms)
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id
                 ), superseded AS (
                     UPDATE reports SET outcome = 'superseded'
                     WHERE outcome = 'pending' AND context = $2 AND id < (SELECT id FROM new)
                       AND build IN (
                           SELECT ob.id FROM builds nb
                           JOIN builds ob ON ob.repo = nb.repo AND ob.commit_sha = nb.commit_sha
                           WHERE nb.id = $1)
                 )
                 SELECT id FROM new",
            )
            .await?;
        for (report, at) in self.0 {
            let created_ms = (at.unix_timestamp_nanos() / 1_000_000) as i64;
            tx.execute(
                &insert,
                &[
                    &report.build,
                    &report.context,
                    &report.state.as_str(),
                    &report.description,
                    &at,
                    &created_ms,
                ],
            )
            .await?;
        }
        Ok(())
    }
}

/// A build whose state an UPDATE changed: `RETURNING id, report_context,
/// path_filters`.
type ChangedRow = (i64, Option<String>, String);

fn changed_rows(rows: &[Row]) -> Result<Vec<ChangedRow>, StoreError> {
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
}

/// Collects the reports for builds an UPDATE moved from `from` to `to`.
fn changed(
    outbox: &mut Collected,
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
        outbox::state_changed(outbox, change, at)?;
    }
    Ok(())
}

const BUILD_COLUMNS: &str = "id, pipeline, repo, host, event, ref, branch, tag, commit_sha,
    before_sha, after_sha, status, reason, delivery_id, attempt, created_at, started_at,
    finished_at, clone_url, ssh_url, web_url, message, pusher, forced, path_filters,
    pull_request, runner_id, pipeline_revision";

/// How many columns [`BUILD_COLUMNS`] names.
const BUILD_COLUMN_COUNT: usize = 28;

/// [`BUILD_COLUMNS`] of the table `alias`.
fn build_columns_of(alias: &str) -> String {
    BUILD_COLUMNS
        .split(',')
        .map(|c| format!("{alias}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The commit id in column `column`; anything but hex is a corrupt row.
fn commit_at(r: &Row, column: usize) -> Result<CommitId, StoreError> {
    let text: String = r.try_get(column)?;
    text.parse()
        .map_err(|_| failed(format!("bad commit id of a build: {text:?}")))
}

/// A commit id that may be absent (stored as empty text).
fn opt_commit_at(r: &Row, column: usize) -> Result<Option<CommitId>, StoreError> {
    let text: String = r.try_get(column)?;
    if text.is_empty() {
        return Ok(None);
    }
    commit_at(r, column).map(Some)
}

fn build_from_row(r: &Row) -> Result<Build, StoreError> {
    build_from_row_at(r, 0)
}

/// A build from the row's columns `at..`, in [`BUILD_COLUMNS`] order. A
/// corrupt value is an error, never read as a default.
fn build_from_row_at(r: &Row, at: usize) -> Result<Build, StoreError> {
    let status: String = r.try_get(at + 11)?;
    let filters: String = r.try_get(at + 24)?;
    let git_ref: String = r.try_get(at + 5)?;
    let before = commit_at(r, at + 9)?;
    let pull_request: Option<String> = r.try_get(at + 25)?;
    let runner_id: Option<String> = r.try_get(at + 26)?;
    let pull_request: Option<crate::model::PullRequest> = pull_request
        .map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|e| failed(format!("bad pull request of a build: {e}")))?;
    Ok(Build {
        id: r.try_get(at)?,
        pipeline: r.try_get(at + 1)?,
        push: PushEvent {
            repo: r.try_get(at + 2)?,
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
            forced: r.try_get(at + 23)?,
            clone_url: r.try_get(at + 18)?,
            ssh_url: r.try_get(at + 19)?,
            web_url: r.try_get(at + 20)?,
            message: r.try_get(at + 21)?,
            pusher: r.try_get(at + 22)?,
            pull_request,
        },
        host: r.try_get(at + 3)?,
        status: status
            .parse()
            .map_err(|()| failed(format!("unknown build status {status:?}")))?,
        reason: r.try_get(at + 12)?,
        delivery: r.try_get(at + 13)?,
        attempt: r.try_get(at + 14)?,
        created_at: r.try_get(at + 15)?,
        started_at: r.try_get(at + 16)?,
        finished_at: r.try_get(at + 17)?,
        path_filters: serde_json::from_str(&filters)
            .map_err(|e| failed(format!("bad path rules of a build: {e}")))?,
        node: runner_id.as_deref().map(super::node_of),
        pipeline_revision: r.try_get(at + 27)?,
    })
}

async fn queued_count(c: &impl GenericClient) -> Result<u64, StoreError> {
    let n: i64 = c
        .query_one("SELECT COALESCE(sum(n), 0)::bigint FROM queue_counts", &[])
        .await?
        .try_get(0)?;
    Ok(n.max(0) as u64)
}

/// What a delivery id or body already recorded: its row and skip reason.
async fn seen_delivery(
    tx: &Transaction<'_>,
    d: &NewDelivery,
) -> Result<Option<(i64, Option<String>)>, StoreError> {
    let by_id = tx
        .prepare_cached(
            "SELECT id, skipped FROM deliveries WHERE pipeline = $1 AND delivery_id = $2",
        )
        .await?;
    let row = tx
        .query_opt(&by_id, &[&d.pipeline, &text(&d.delivery_id)])
        .await?;
    let row = match (row, &d.body_sha256) {
        (Some(row), _) => Some(row),
        // A replay under a new delivery id: the first answer.
        (None, Some(digest)) => {
            let by_body = tx
                .prepare_cached(
                    "SELECT id, skipped FROM deliveries
                     WHERE pipeline = $1 AND body_sha256 = $2 ORDER BY id LIMIT 1",
                )
                .await?;
            tx.query_opt(&by_body, &[&d.pipeline, digest]).await?
        }
        (None, None) => None,
    };
    row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
}

async fn duplicate_answer(
    tx: &Transaction<'_>,
    d: &NewDelivery,
    row: i64,
    skipped: Option<String>,
) -> Result<Recorded, StoreError> {
    let build_ids = ids_of(
        &tx.query(
            "SELECT id FROM builds WHERE delivery = $1 ORDER BY id",
            &[&row],
        )
        .await?,
    )?;
    Ok(Recorded {
        pipeline: d.pipeline.clone(),
        delivery_id: d.delivery_id.clone(),
        build_ids,
        skipped,
        duplicate: true,
        cancel_running: Vec::new(),
        superseded_queued: 0,
    })
}

/// Records one call's deliveries; `room` is how many more builds the queue
/// takes, and what they queue is taken from it.
async fn record(
    tx: &Transaction<'_>,
    outbox: &mut Collected,
    deliveries: &[NewDelivery],
    room: &mut u64,
) -> Result<Vec<Recorded>, StoreError> {
    let mut out = Vec::with_capacity(deliveries.len());
    if deliveries.is_empty() {
        return Ok(out);
    }
    let now = OffsetDateTime::now_utc();
    for d in deliveries {
        let wanted = d.builds.len() as u64;
        if wanted > *room {
            // Over the limit, unless it is a redelivery (which takes no
            // room: it gets its first answer).
            if let Some((row, skipped)) = seen_delivery(tx, d).await? {
                out.push(duplicate_answer(tx, d, row, skipped).await?);
                continue;
            }
            return Err(StoreError::QueueFull);
        }
        // Inserted first, looked up only when it was there already (by
        // delivery id, or by body: a replay under a new id), so that a new
        // delivery costs one statement. Two receivers with the same
        // delivery at once: the second waits here for the first to commit,
        // inserts nothing, and answers what the first recorded.
        let insert = tx
            .prepare_cached(
                "INSERT INTO deliveries
                     (pipeline, delivery_id, host, event, skipped, received_at, body_sha256)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT DO NOTHING RETURNING id",
            )
            .await?;
        let inserted = tx
            .query_opt(
                &insert,
                &[
                    &d.pipeline,
                    &text(&d.delivery_id),
                    &d.host.as_str(),
                    &text(&d.event),
                    &d.skipped,
                    &now,
                    &d.body_sha256,
                ],
            )
            .await?;
        let Some(inserted) = inserted else {
            let Some((row, skipped)) = seen_delivery(tx, d).await? else {
                return Err(StoreError::unavailable(
                    Cause::Busy,
                    "a delivery recorded at the same moment is not visible yet",
                ));
            };
            out.push(duplicate_answer(tx, d, row, skipped).await?);
            continue;
        };
        *room -= wanted;
        let row: i64 = inserted.try_get(0)?;
        let mut build_ids = Vec::with_capacity(d.builds.len());
        let mut cancel_running = Vec::new();
        let mut superseded_queued = 0;
        for b in &d.builds {
            let id = insert_build(
                tx,
                outbox,
                b,
                Some(row),
                Some(&d.delivery_id),
                Some(d.host),
                now,
            )
            .await?;
            build_ids.push(id);
            if b.supersede {
                let reason = format!("superseded by build {id}");
                let (running, queued) =
                    supersede(tx, outbox, &b.pipeline, &b.push.git_ref, id, &reason, now).await?;
                cancel_running.extend(running);
                superseded_queued += queued;
            }
        }
        if let Some(close) = &d.close {
            let (running, queued) = supersede(
                tx,
                outbox,
                &d.pipeline,
                &close.git_ref,
                i64::MAX,
                &close.reason,
                now,
            )
            .await?;
            cancel_running.extend(running);
            superseded_queued += queued;
        }
        out.push(Recorded {
            pipeline: d.pipeline.clone(),
            delivery_id: d.delivery_id.clone(),
            build_ids,
            skipped: d.skipped.clone(),
            duplicate: false,
            cancel_running,
            superseded_queued,
        });
    }
    Ok(out)
}

/// How often a process that does not send the reports asks for the lock.
const REPORTER_ASK_EVERY: Duration = Duration::from_secs(1);

/// One `record_deliveries` call waiting for its commit.
struct Pending {
    deliveries: Vec<NewDelivery>,
    answer: tokio::sync::oneshot::Sender<Result<Vec<Recorded>, StoreError>>,
}

/// How many transactions record deliveries at once in one process.
const RECORD_LANES: usize = 4;

/// The most calls one transaction records. A call that may overflow the
/// queue is a savepoint, and PostgreSQL slows every session's snapshots
/// once a transaction has more than 64 subtransactions.
const RECORD_BATCH: usize = 32;

/// Starts the lanes that record deliveries: each takes every call waiting
/// (up to [`RECORD_BATCH`]) and records them in one transaction, so that
/// under load a commit's flush, the admission count and the wake-up are
/// paid once per group, not once per delivery (SQLite's writer thread does
/// the same). They end when the backend is dropped.
fn start_recording(pool: &Pool, max_queued: u64) -> tokio::sync::mpsc::UnboundedSender<Pending> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Pending>();
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
    for _ in 0..RECORD_LANES {
        let (pool, rx) = (pool.clone(), rx.clone());
        tokio::spawn(async move {
            loop {
                let mut batch = Vec::new();
                {
                    let mut rx = rx.lock().await;
                    let Some(first) = rx.recv().await else {
                        return;
                    };
                    batch.push(first);
                    while batch.len() < RECORD_BATCH {
                        match rx.try_recv() {
                            Ok(next) => batch.push(next),
                            Err(_) => break,
                        }
                    }
                }
                record_batch(&pool, max_queued, batch).await;
            }
        });
    }
    tx
}

/// The same failure again, for each call of a group that shared it.
fn again(e: &StoreError) -> StoreError {
    match e {
        StoreError::QueueFull => StoreError::QueueFull,
        StoreError::Fenced => StoreError::Fenced,
        StoreError::Unavailable(fault) => StoreError::Unavailable(fault.clone()),
    }
}

/// Records a group of calls in one transaction and answers each once it
/// committed. A call that fails (a full queue, a conflict) is rolled back
/// to its savepoint and answered alone; the others go on. A failure of the
/// transaction itself answers every call with it: none was recorded.
async fn record_batch(pool: &Pool, max_queued: u64, batch: Vec<Pending>) {
    let mut senders = Vec::with_capacity(batch.len());
    let mut calls = Vec::with_capacity(batch.len());
    for call in batch {
        senders.push(call.answer);
        calls.push(call.deliveries);
    }
    let answers = match record_group(pool, max_queued, &calls).await {
        Ok(answers) => answers,
        // One call's conflict (a deadlock with another process, a delivery
        // not visible yet) must not cost the others their build: each is
        // tried once more in a transaction of its own.
        Err(e) if calls.len() > 1 => {
            tracing::debug!(error = %e, "a group of deliveries failed; recording them one by one");
            let mut answers = Vec::with_capacity(calls.len());
            for call in calls.chunks(1) {
                answers.push(match record_group(pool, max_queued, call).await {
                    Ok(mut one) => one.pop().unwrap_or_else(|| Err(again(&e))),
                    Err(e) => Err(e),
                });
            }
            answers
        }
        Err(e) => vec![Err(e)],
    };
    for (sender, answer) in senders.into_iter().zip(answers) {
        let _ = sender.send(answer);
    }
}

/// The transaction of [`record_batch`]: one answer per call, or the
/// failure that rolled all of them back (before it returns, so that their
/// locks are gone by the time a caller learns of it).
async fn record_group(
    pool: &Pool,
    max_queued: u64,
    calls: &[Vec<NewDelivery>],
) -> Result<Vec<Result<Vec<Recorded>, StoreError>>, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    match record_calls(&tx, max_queued, calls).await {
        Ok(answers) => {
            tx.commit().await?;
            Ok(answers)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

/// Records each call in turn. A call that might not fit in the queue's
/// room runs under a savepoint, so that a refusal takes back only its own
/// writes; any other failure is the whole group's.
async fn record_calls(
    tx: &Transaction<'_>,
    max_queued: u64,
    calls: &[Vec<NewDelivery>],
) -> Result<Vec<Result<Vec<Recorded>, StoreError>>, StoreError> {
    let alone = calls.len() == 1;
    let mut answers = Vec::with_capacity(calls.len());
    let mut room = max_queued.saturating_sub(queued_count(&**tx).await?);
    for deliveries in calls {
        let wanted: u64 = deliveries.iter().map(|d| d.builds.len() as u64).sum();
        let guarded = !alone && wanted > room;
        if guarded {
            tx.batch_execute("SAVEPOINT call").await?;
        }
        let before = room;
        let mut outbox = Collected::default();
        let result = match record(tx, &mut outbox, deliveries, &mut room).await {
            Ok(recorded) => outbox.write(tx).await.map(|()| recorded),
            Err(e) => Err(e),
        };
        match result {
            Ok(recorded) => {
                if guarded {
                    tx.batch_execute("RELEASE SAVEPOINT call").await?;
                }
                answers.push(Ok(recorded));
            }
            Err(StoreError::QueueFull) if guarded => {
                tx.batch_execute("ROLLBACK TO SAVEPOINT call").await?;
                room = before;
                answers.push(Err(StoreError::QueueFull));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(answers)
}

/// Ends as `cancelled` (with the reason the stop was asked for) those of
/// `candidates` (running builds a recovery takes, locked by the caller)
/// whose stop was asked before their runner went: they are not run again.
async fn end_cancelled(
    tx: &Transaction<'_>,
    outbox: &mut Collected,
    now: OffsetDateTime,
    candidates: &[i64],
) -> Result<Vec<i64>, StoreError> {
    let rows = tx
        .query(
            "UPDATE builds SET status = 'cancelled', reason = cancel_reason, finished_at = $1,
                 runner = NULL, runner_id = NULL, lease_expires_at = NULL
             WHERE id = ANY($2) AND status = 'running' AND cancel_reason IS NOT NULL
             RETURNING id, report_context, path_filters, reason",
            &[&now, &candidates],
        )
        .await?;
    let mut ids = Vec::with_capacity(rows.len());
    for r in &rows {
        let row: ChangedRow = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        let reason: Option<String> = r.try_get(3)?;
        changed(
            outbox,
            std::slice::from_ref(&row),
            BuildStatus::Running,
            BuildStatus::Cancelled,
            reason.as_deref(),
        )?;
        ids.push(row.0);
    }
    tx.execute(
        "UPDATE steps SET status = 'skipped'
         WHERE status IN ('pending', 'running') AND build = ANY($1)",
        &[&ids],
    )
    .await?;
    Ok(ids)
}

/// The advisory lock key of a runner's mark ([`Backend::hold_runner_mark`]),
/// as SQL over `runner_id` (an expression giving the runner id).
fn runner_mark(runner_id: &str) -> String {
    format!("hashtext(COALESCE(current_schema(), '') || 'runner:' || {runner_id})")
}

/// The ids of `rows` (their first column).
fn ids_of(rows: &[Row]) -> Result<Vec<i64>, StoreError> {
    Ok(rows
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?)
}

/// Payload text as PostgreSQL can hold it: a `text` value cannot contain
/// NUL, which JSON can carry (`\u0000` in a commit message), so it is
/// written as U+FFFD, as a page would show it. Any other character is kept.
fn text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', "\u{fffd}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// Inserts one queued build; returns its id.
async fn insert_build(
    tx: &Transaction<'_>,
    outbox: &mut Collected,
    b: &NewBuild,
    delivery_row: Option<i64>,
    delivery_id: Option<&str>,
    host: Option<Host>,
    now: OffsetDateTime,
) -> Result<i64, StoreError> {
    let p = &b.push;
    // A pull request's head branch is another repository's: it is kept in
    // `pull_request`, never in `branch` (as in SQLite).
    let (branch, tag) = match &p.kind {
        _ if p.pull_request.is_some() => (None, None),
        RefKind::Branch(n) => (Some(n.as_str()), None),
        RefKind::Tag(n) => (None, Some(n.as_str())),
        RefKind::Other => (None, None),
    };
    let filters = serde_json::to_string(&b.path_filters).map_err(failed)?;
    let pull_request = p
        .pull_request
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(failed)?;
    let status = if b.waiting {
        BuildStatus::Waiting
    } else {
        BuildStatus::Queued
    };
    let params: &[&(dyn ToSql + Sync)] = &[
        &b.pipeline,
        &delivery_row,
        &delivery_id.map(text),
        &text(&p.repo),
        &host.map(Host::as_str),
        &p.event_name(),
        &p.git_ref,
        &branch,
        &tag,
        &p.commit_str(),
        &p.before.as_str(),
        &p.after.as_str(),
        &p.forced,
        &text(&p.clone_url),
        &p.ssh_url.as_deref().map(text),
        &p.web_url.as_deref().map(text),
        &text(&p.message),
        &text(&p.pusher),
        &filters,
        &now,
        &b.report_context,
        &status.as_str(),
        &pull_request,
        &b.pipeline_revision,
    ];
    let insert = tx
        .prepare_cached(
            "INSERT INTO builds (pipeline, delivery, delivery_id, repo, host, event, ref, branch,
                 tag, commit_sha, before_sha, after_sha, forced, clone_url, ssh_url, web_url,
                 message, pusher, path_filters, status, created_at, report_context,
                 pull_request, pipeline_revision)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                 $17, $18, $19, $22, $20, $21, $23, $24)
             RETURNING id",
        )
        .await?;
    let id: i64 = tx.query_one(&insert, params).await?.try_get(0)?;
    let change = StateChange {
        build: id,
        context: b.report_context.as_deref(),
        path_rules: !b.path_filters.is_empty(),
        from: None,
        to: status,
        reason: None,
    };
    outbox::state_changed(outbox, change, OffsetDateTime::now_utc())?;
    Ok(id)
}

/// Cancels the ref's builds older than `newer` that wait or are queued,
/// with `reason`, and asks its running ones to stop; returns the running
/// ones, and how many it cancelled.
async fn supersede(
    tx: &Transaction<'_>,
    outbox: &mut Collected,
    pipeline: &str,
    git_ref: &str,
    newer: i64,
    reason: &str,
    now: OffsetDateTime,
) -> Result<(Vec<i64>, u64), StoreError> {
    let mut cancelled_count = 0;
    for from in [BuildStatus::Queued, BuildStatus::Waiting] {
        let rows = tx
            .query(
                "UPDATE builds SET status = 'cancelled', reason = $4, finished_at = $5
                 WHERE pipeline = $1 AND ref = $2 AND status = $6 AND id < $3
                 RETURNING id, report_context, path_filters",
                &[&pipeline, &git_ref, &newer, &reason, &now, &from.as_str()],
            )
            .await?;
        let cancelled = changed_rows(&rows)?;
        cancelled_count += cancelled.len() as u64;
        changed(
            outbox,
            &cancelled,
            from,
            BuildStatus::Cancelled,
            Some(reason),
        )?;
    }
    let ids = ids_of(
        &tx.query(
            "UPDATE builds SET cancel_reason = $4
             WHERE pipeline = $1 AND ref = $2 AND status = 'running' AND id < $3
               AND cancel_reason IS NULL
             RETURNING id",
            &[&pipeline, &git_ref, &newer, &reason],
        )
        .await?,
    )?;
    Ok((ids, cancelled_count))
}

/// Queues one build that no delivery carried (a rebuild, a trigger).
async fn queue_manual(
    tx: &Transaction<'_>,
    outbox: &mut Collected,
    build: &NewBuild,
    host: Option<Host>,
    origin: &BuildOrigin,
    max_queued: u64,
) -> Result<Manual, StoreError> {
    if queued_count(&**tx).await? >= max_queued {
        return Err(StoreError::QueueFull);
    }
    let now = OffsetDateTime::now_utc();
    let id = insert_build(tx, outbox, build, None, None, host, now).await?;
    let resume = origin
        .resume
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(failed)?;
    tx.execute(
        "INSERT INTO build_origins (build, rebuild_of, triggered_by, resume)
         VALUES ($1, $2, $3, $4)",
        &[&id, &origin.rebuild_of, &origin.triggered_by, &resume],
    )
    .await?;
    let (cancel_running, superseded_queued) = if build.supersede {
        let reason = format!("superseded by build {id}");
        supersede(
            tx,
            outbox,
            &build.pipeline,
            &build.push.git_ref,
            id,
            &reason,
            now,
        )
        .await?
    } else {
        (Vec::new(), 0)
    };
    Ok(Manual {
        id,
        cancel_running,
        superseded_queued,
    })
}

/// Claims a queued build that may run now, with SQLite's rule (see its
/// `claim`): a serial (pipeline, ref) runs one build at a time, oldest
/// first; the pipeline with the fewest running goes first, then the oldest
/// build. Claims are serialised by an advisory lock (every claimer needs
/// the same view of what runs, or two would pick the same ref's next
/// build); the unique index on running serial builds backs it.
async fn claim(
    tx: &Transaction<'_>,
    outbox: &mut Collected,
    policy: &ClaimPolicy,
    node: &str,
    holder: &Holder,
) -> Result<Option<Build>, StoreError> {
    lock(tx, CLAIM_LOCK).await?;
    let mut busy = HashSet::new();
    let mut running: HashMap<String, usize> = HashMap::new();
    for row in tx
        .query(
            "SELECT pipeline, ref FROM builds WHERE status = 'running'",
            &[],
        )
        .await?
    {
        let (pipeline, git_ref): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        *running.entry(pipeline.clone()).or_default() += 1;
        busy.insert((pipeline, git_ref));
    }
    let pipelines = tx
        .query(
            "WITH RECURSIVE p(pipeline) AS (
                 (SELECT pipeline FROM builds WHERE status = 'queued'
                  ORDER BY pipeline LIMIT 1)
                 UNION ALL
                 SELECT (SELECT b.pipeline FROM builds b
                         WHERE b.status = 'queued' AND b.pipeline > p.pipeline
                         ORDER BY b.pipeline LIMIT 1)
                 FROM p WHERE p.pipeline IS NOT NULL)
             SELECT pipeline FROM p WHERE pipeline IS NOT NULL",
            &[],
        )
        .await?;
    let mut best: Option<(usize, i64, bool)> = None;
    for row in pipelines {
        let pipeline: String = row.try_get(0)?;
        if policy.elsewhere.contains(&pipeline) {
            continue;
        }
        let parallel = policy.parallel.contains(&pipeline);
        let Some(id) = oldest_runnable(tx, &pipeline, parallel, &busy).await? else {
            continue;
        };
        let rank = (running.get(&pipeline).copied().unwrap_or(0), id);
        if best.is_none_or(|b| rank < (b.0, b.1)) {
            best = Some((rank.0, rank.1, parallel));
        }
    }
    let Some((_, id, parallel)) = best else {
        return Ok(None);
    };
    let sql = format!(
        "UPDATE builds SET status = 'running', started_at = $2, finished_at = NULL,
             reason = NULL, cancel_reason = NULL, run_parallel = $3, runner = $4,
             runner_id = $5, lease_expires_at = now() + $6 * interval '1 millisecond'
         WHERE id = $1 AND status = 'queued'
         RETURNING {BUILD_COLUMNS}, report_context"
    );
    let now = OffsetDateTime::now_utc();
    let lease_ms = holder.lease_ms as f64;
    let Some(row) = tx
        .query_opt(
            &sql,
            &[&id, &now, &parallel, &node, &holder.runner, &lease_ms],
        )
        .await?
    else {
        return Ok(None);
    };
    let build = build_from_row(&row)?;
    let context: Option<String> = row.try_get(BUILD_COLUMN_COUNT)?;
    let change = StateChange {
        build: build.id,
        context: context.as_deref(),
        path_rules: !build.path_filters.is_empty(),
        from: Some(BuildStatus::Queued),
        to: BuildStatus::Running,
        reason: None,
    };
    outbox::state_changed(outbox, change, OffsetDateTime::now_utc())?;
    Ok(Some(build))
}

/// Refuses a runner's write for `build` unless the build is `running` under
/// the fence's runner id and attempt, and locks its row until the write
/// commits (a rescue waits for it, or it sees the rescue). No fence: the
/// write is not a runner's.
async fn held(tx: &Transaction<'_>, build: i64, fence: Option<&Fence>) -> Result<(), StoreError> {
    let Some(fence) = fence else {
        return Ok(());
    };
    let row = tx
        .query_opt(
            "SELECT 1 FROM builds
             WHERE id = $1 AND status = 'running' AND runner_id = $2 AND attempt = $3
             FOR UPDATE",
            &[&build, &fence.runner, &fence.attempt],
        )
        .await?;
    match row {
        Some(_) => Ok(()),
        None => Err(StoreError::Fenced),
    }
}

/// Refuses a runner's log write for `build` unless the build is still its
/// claim's (runner id and attempt: a rescue, a re-queue or a new claim
/// changes them), whatever its state: a log may be completed after the
/// build's end was recorded. Locks the row (shared) until the write
/// commits, so a rescue waits for it or it sees the rescue.
async fn log_fenced(tx: &Transaction<'_>, build: i64, fence: &Fence) -> Result<(), StoreError> {
    let row = tx
        .query_opt(
            "SELECT 1 FROM builds WHERE id = $1 AND runner_id = $2 AND attempt = $3 FOR SHARE",
            &[&build, &fence.runner, &fence.attempt],
        )
        .await?;
    match row {
        Some(_) => Ok(()),
        None => Err(StoreError::Fenced),
    }
}

/// The oldest queued build of `pipeline` that may run now: among its
/// oldest [`HEAD_WINDOW`] queued builds, else by walking its queued refs
/// (one index probe each, a recursive skip scan).
async fn oldest_runnable(
    tx: &Transaction<'_>,
    pipeline: &str,
    parallel: bool,
    busy: &HashSet<(String, String)>,
) -> Result<Option<i64>, StoreError> {
    let window = tx
        .query(
            "SELECT id, ref FROM builds WHERE status = 'queued' AND pipeline = $1
             ORDER BY id LIMIT $2",
            &[&pipeline, &HEAD_WINDOW],
        )
        .await?;
    for row in &window {
        let (id, git_ref): (i64, String) = (row.try_get(0)?, row.try_get(1)?);
        if parallel || !busy.contains(&(pipeline.to_owned(), git_ref)) {
            return Ok(Some(id));
        }
    }
    if (window.len() as i64) < HEAD_WINDOW {
        return Ok(None);
    }
    let heads = tx
        .query(
            "WITH RECURSIVE r(ref, id) AS (
                 (SELECT ref, id FROM builds WHERE status = 'queued' AND pipeline = $1
                  ORDER BY ref, id LIMIT 1)
                 UNION ALL
                 SELECT n.ref, n.id FROM r, LATERAL (
                     SELECT b.ref, b.id FROM builds b
                     WHERE b.status = 'queued' AND b.pipeline = $1 AND b.ref > r.ref
                     ORDER BY b.ref, b.id LIMIT 1) n)
             SELECT ref, id FROM r",
            &[&pipeline],
        )
        .await?;
    let mut best: Option<i64> = None;
    for row in heads {
        let (git_ref, id): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
        if !busy.contains(&(pipeline.to_owned(), git_ref)) && best.is_none_or(|b| id < b) {
            best = Some(id);
        }
    }
    Ok(best)
}

fn outcome_name(outcome: ReportOutcome) -> &'static str {
    match outcome {
        ReportOutcome::Pending => "pending",
        ReportOutcome::Delivered => "delivered",
        ReportOutcome::Failed => "failed",
        ReportOutcome::Superseded => "superseded",
    }
}

fn outcome_of(name: &str) -> Result<ReportOutcome, StoreError> {
    Ok(match name {
        "pending" => ReportOutcome::Pending,
        "delivered" => ReportOutcome::Delivered,
        "failed" => ReportOutcome::Failed,
        "superseded" => ReportOutcome::Superseded,
        _ => return Err(failed(format!("unknown report outcome {name:?}"))),
    })
}

impl PostgresBackend {
    /// Runs `work` in one transaction with a report outbox, and commits
    /// both.
    async fn write<R, F>(&self, work: F) -> Result<R, StoreError>
    where
        F: for<'t> FnOnce(
            &'t Transaction<'t>,
            &'t mut Collected,
        ) -> BoxFuture<'t, Result<R, StoreError>>,
    {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut outbox = Collected::default();
        let written = match work(&tx, &mut outbox).await {
            Ok(result) => outbox.write(&tx).await.map(|()| result),
            Err(e) => Err(e),
        };
        match written {
            Ok(result) => {
                tx.commit().await?;
                Ok(result)
            }
            // Rolled back before the answer, not whenever the dropped
            // transaction's ROLLBACK reaches the server: its locks are gone
            // by the time the caller learns of the error.
            Err(e) => {
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }
}

impl Backend for PostgresBackend {
    fn record_deliveries(
        &self,
        deliveries: Vec<NewDelivery>,
    ) -> BoxFuture<'_, Result<Vec<Recorded>, StoreError>> {
        Box::pin(async move {
            let (answer, answered) = tokio::sync::oneshot::channel();
            self.recorder
                .send(Pending { deliveries, answer })
                .map_err(|_| StoreError::unavailable(Cause::Down, "the store is closing"))?;
            answered.await.unwrap_or_else(|_| {
                Err(StoreError::unavailable(Cause::Down, "the store is closing"))
            })
        })
    }

    fn queue_manual(
        &self,
        build: NewBuild,
        host: Option<Host>,
        origin: BuildOrigin,
    ) -> BoxFuture<'_, Result<Manual, StoreError>> {
        let max = self.options.max_queued_builds;
        Box::pin(self.write(move |tx, outbox| {
            Box::pin(async move { queue_manual(tx, outbox, &build, host, &origin, max).await })
        }))
    }

    fn build(&self, id: i64) -> BoxFuture<'_, Result<Option<Build>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let sql = format!("SELECT {BUILD_COLUMNS} FROM builds WHERE id = $1");
            client
                .query_opt(&sql, &[&id])
                .await?
                .map(|r| build_from_row(&r))
                .transpose()
        })
    }

    fn builds(&self, filter: BuildFilter) -> BoxFuture<'_, Result<Vec<Build>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
            let sql = format!(
                "SELECT {BUILD_COLUMNS} FROM builds
                 WHERE ($1::text IS NULL OR pipeline = $1) AND ($2::text IS NULL OR branch = $2)
                   AND (cardinality($3::text[]) = 0 OR status = ANY($3))
                   AND ($4::bigint IS NULL OR id < $4) AND ($6::text IS NULL OR event = $6)
                   AND ($7::text IS NULL OR ref = $7)

                 ORDER BY id DESC LIMIT $5"
            );
            let rows = client
                .query(
                    &sql,
                    &[
                        &filter.pipeline,
                        &filter.branch,
                        &statuses,
                        &filter.before,
                        &i64::from(filter.limit),
                        &filter.event,
                        &filter.git_ref,
                    ],
                )
                .await?;
            rows.iter().map(build_from_row).collect()
        })
    }

    fn queued_count(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move { queued_count(&**self.client().await?).await })
    }

    fn delivery_count(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let n: i64 = self
                .client()
                .await?
                .query_one("SELECT count(*) FROM deliveries", &[])
                .await?
                .try_get(0)?;
            Ok(n.max(0) as u64)
        })
    }

    fn delivery_recorded(
        &self,
        pipeline: String,
        delivery_id: String,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            Ok(self
                .client()
                .await?
                .query_opt(
                    "SELECT 1 FROM deliveries WHERE pipeline = $1 AND delivery_id = $2",
                    &[&pipeline, &delivery_id],
                )
                .await?
                .is_some())
        })
    }

    fn pending_reports(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let n: i64 = self
                .client()
                .await?
                .query_one(
                    "SELECT count(*) FROM reports WHERE outcome = 'pending'",
                    &[],
                )
                .await?
                .try_get(0)?;
            Ok(n.max(0) as u64)
        })
    }

    fn claim_next(
        &self,
        policy: ClaimPolicy,
        holder: Holder,
    ) -> BoxFuture<'_, Result<Option<Build>, StoreError>> {
        let node = self.node.clone();
        Box::pin(self.write(move |tx, outbox| {
            Box::pin(async move { claim(tx, outbox, &policy, &node, &holder).await })
        }))
    }

    fn renew(
        &self,
        runner: String,
        lease_ms: i64,
        builds: Vec<i64>,
    ) -> BoxFuture<'_, Result<Vec<(i64, i64)>, StoreError>> {
        Box::pin(async move {
            let rows = self
                .client()
                .await?
                .query(
                    "UPDATE builds SET lease_expires_at = now() + $2 * interval '1 millisecond'
                     WHERE runner_id = $1 AND status = 'running' AND id = ANY($3)
                     RETURNING id, attempt",
                    &[&runner, &(lease_ms as f64), &builds],
                )
                .await?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect()
        })
    }

    fn rescue(&self) -> BoxFuture<'_, Result<Recovery, StoreError>> {
        Box::pin(self.write(move |tx, outbox| {
            Box::pin(async move {
                let now = OffsetDateTime::now_utc();
                let stopped = tx
                    .query(
                        "SELECT id FROM builds
                         WHERE status = 'running' AND cancel_reason IS NOT NULL
                           AND lease_expires_at < now()
                         ORDER BY id FOR UPDATE",
                        &[],
                    )
                    .await?;
                let cancelled = end_cancelled(tx, outbox, now, &ids_of(&stopped)?).await?;
                // Locked in id order, as claims and finishes lock one row.
                let rows = tx
                    .query(
                        "WITH lost AS (
                             SELECT id FROM builds
                             WHERE status = 'running' AND lease_expires_at < now()
                             ORDER BY id FOR UPDATE)
                         UPDATE builds b SET
                             status = CASE WHEN b.attempt >= 2 THEN 'error' ELSE 'queued' END,
                             attempt = CASE WHEN b.attempt >= 2 THEN b.attempt
                                            ELSE b.attempt + 1 END,
                             reason = CASE WHEN b.attempt >= 2 THEN $2::text ELSE $3::text END,
                             finished_at = CASE WHEN b.attempt >= 2 THEN $1::timestamptz END,
                             started_at = CASE WHEN b.attempt >= 2 THEN b.started_at END,
                             cancel_reason = NULL, runner = NULL, runner_id = NULL,
                             lease_expires_at = NULL
                         FROM lost WHERE b.id = lost.id
                         RETURNING b.id, b.report_context, b.path_filters, b.status",
                        &[&now, &LEASE_LOST_TWICE, &LEASE_LOST],
                    )
                    .await?;
                let mut requeued = Vec::new();
                let mut failed = Vec::new();
                for r in &rows {
                    let row: ChangedRow = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
                    let status: String = r.try_get(3)?;
                    if status == "error" {
                        failed.push(row);
                    } else {
                        requeued.push(row);
                    }
                }
                changed(
                    outbox,
                    &failed,
                    BuildStatus::Running,
                    BuildStatus::Error,
                    Some(LEASE_LOST_TWICE),
                )?;
                changed(
                    outbox,
                    &requeued,
                    BuildStatus::Running,
                    BuildStatus::Queued,
                    Some(LEASE_LOST),
                )?;
                let failed: Vec<i64> = failed.into_iter().map(|(id, ..)| id).collect();
                tx.execute(
                    "UPDATE steps SET status = 'skipped'
                     WHERE status IN ('pending', 'running') AND build = ANY($1)",
                    &[&failed],
                )
                .await?;
                let requeued = requeued.into_iter().map(|(id, ..)| id).collect();
                Ok(Recovery {
                    requeued,
                    failed,
                    cancelled,
                })
            })
        }))
    }

    fn set_steps(
        &self,
        build: i64,
        steps: Vec<PlannedStep>,
        fence: Option<Fence>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |tx, _| {
            Box::pin(async move {
                held(tx, build, fence.as_ref()).await?;
                tx.execute("DELETE FROM steps WHERE build = $1", &[&build])
                    .await?;
                let insert = tx
                    .prepare(
                        "INSERT INTO steps (build, idx, name, status, reason)
                         VALUES ($1, $2, $3,
                             CASE WHEN $4::text IS NULL THEN 'pending' ELSE 'skipped' END, $4)",
                    )
                    .await?;
                for (idx, step) in steps.iter().enumerate() {
                    tx.execute(&insert, &[&build, &(idx as i64), &step.name, &step.skipped])
                        .await?;
                }
                Ok(())
            })
        }))
    }

    fn step_started(
        &self,
        build: i64,
        idx: usize,
        fence: Option<Fence>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |tx, _| {
            Box::pin(async move {
                held(tx, build, fence.as_ref()).await?;
                tx.execute(
                    "UPDATE steps SET status = 'running', started_at = $3
                     WHERE build = $1 AND idx = $2",
                    &[&build, &(idx as i64), &OffsetDateTime::now_utc()],
                )
                .await?;
                Ok(())
            })
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
        Box::pin(self.write(move |tx, _| {
            Box::pin(async move {
                held(tx, build, fence.as_ref()).await?;
                tx.execute(
                    "UPDATE steps SET status = $3, exit_code = $4, finished_at = $5
                     WHERE build = $1 AND idx = $2",
                    &[
                        &build,
                        &(idx as i64),
                        &status.as_str(),
                        &exit_code.map(i64::from),
                        &OffsetDateTime::now_utc(),
                    ],
                )
                .await?;
                Ok(())
            })
        }))
    }

    fn steps(&self, build: i64) -> BoxFuture<'_, Result<Vec<StepRecord>, StoreError>> {
        Box::pin(async move {
            let rows = self
                .client()
                .await?
                .query(
                    "SELECT name, status, exit_code, started_at, finished_at, reason FROM steps
                     WHERE build = $1 ORDER BY idx",
                    &[&build],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    let status: String = r.try_get(1)?;
                    Ok(StepRecord {
                        name: r.try_get(0)?,
                        status: status
                            .parse()
                            .map_err(|()| failed(format!("unknown step status {status:?}")))?,
                        exit_code: r.try_get(2)?,
                        started_at: r.try_get(3)?,
                        finished_at: r.try_get(4)?,
                        reason: r.try_get(5)?,
                    })
                })
                .collect()
        })
    }

    fn finish(
        &self,
        build: i64,
        status: BuildStatus,
        reason: Option<String>,
        fence: Option<Fence>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |tx, outbox| {
            Box::pin(async move {
                held(tx, build, fence.as_ref()).await?;
                let before: Option<String> = tx
                    .query_opt(
                        "SELECT status FROM builds WHERE id = $1 FOR UPDATE",
                        &[&build],
                    )
                    .await?
                    .map(|r| r.try_get(0))
                    .transpose()?;
                let rows = tx
                    .query(
                        "UPDATE builds SET status = $2, reason = $3, finished_at = $4,
                             lease_expires_at = NULL
                         WHERE id = $1 AND status IN ('queued', 'running')
                         RETURNING id, report_context, path_filters",
                        &[
                            &build,
                            &status.as_str(),
                            &reason,
                            &OffsetDateTime::now_utc(),
                        ],
                    )
                    .await?;
                if let Some(from) = before.as_deref().and_then(|s| s.parse().ok()) {
                    changed(
                        outbox,
                        &changed_rows(&rows)?,
                        from,
                        status,
                        reason.as_deref(),
                    )?;
                }
                tx.execute(
                    "UPDATE steps SET status = 'skipped' WHERE build = $1 AND status = 'pending'",
                    &[&build],
                )
                .await?;
                Ok(())
            })
        }))
    }

    fn requeue(
        &self,
        build: i64,
        reason: String,
        fence: Option<Fence>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |tx, outbox| {
            Box::pin(async move {
                held(tx, build, fence.as_ref()).await?;
                let rows = tx
                    .query(
                        "UPDATE builds SET status = 'queued', reason = $2, started_at = NULL,
                             cancel_reason = NULL, runner = NULL, runner_id = NULL,
                             lease_expires_at = NULL
                         WHERE id = $1 AND status = 'running'
                         RETURNING id, report_context, path_filters",
                        &[&build, &reason],
                    )
                    .await?;
                changed(
                    outbox,
                    &changed_rows(&rows)?,
                    BuildStatus::Running,
                    BuildStatus::Queued,
                    Some(&reason),
                )
            })
        }))
    }

    fn cancel(
        &self,
        build: i64,
        reason: String,
    ) -> BoxFuture<'_, Result<CancelOutcome, StoreError>> {
        Box::pin(self.write(move |tx, outbox| {
            Box::pin(async move {
                let found = tx
                    .query_opt(
                        "SELECT status, pipeline FROM builds WHERE id = $1 FOR UPDATE",
                        &[&build],
                    )
                    .await?;
                let Some(found) = found else {
                    return Ok(CancelOutcome::NotFound);
                };
                let (status, pipeline): (String, String) = (found.try_get(0)?, found.try_get(1)?);
                match status.as_str() {
                    "queued" | "waiting" => {
                        let from: BuildStatus = status.parse().unwrap_or(BuildStatus::Queued);
                        let rows = tx
                            .query(
                                "UPDATE builds SET status = 'cancelled', reason = $2,
                                     finished_at = $3
                                 WHERE id = $1 RETURNING id, report_context, path_filters",
                                &[&build, &reason, &OffsetDateTime::now_utc()],
                            )
                            .await?;
                        changed(
                            outbox,
                            &changed_rows(&rows)?,
                            from,
                            BuildStatus::Cancelled,
                            Some(&reason),
                        )?;
                        tx.execute(
                            "UPDATE steps SET status = 'skipped'
                             WHERE build = $1 AND status = 'pending'",
                            &[&build],
                        )
                        .await?;
                        Ok(CancelOutcome::Cancelled { pipeline })
                    }
                    "running" => {
                        tx.execute(
                            "UPDATE builds SET cancel_reason = COALESCE(cancel_reason, $2)
                             WHERE id = $1",
                            &[&build, &reason],
                        )
                        .await?;
                        Ok(CancelOutcome::Requested)
                    }
                    _ => Ok(CancelOutcome::AlreadyFinished),
                }
            })
        }))
    }

    fn resolve_commit(
        &self,
        build: i64,
        commit: CommitId,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |tx, _| {
            Box::pin(async move {
                tx.execute(
                    "UPDATE builds SET commit_sha = $2, after_sha = $2
                     WHERE id = $1 AND commit_sha = ''",
                    &[&build, &commit.as_str()],
                )
                .await?;
                Ok(())
            })
        }))
    }

    fn approve(&self, build: i64) -> BoxFuture<'_, Result<ApproveOutcome, StoreError>> {
        Box::pin(self.write(move |tx, outbox| {
            Box::pin(async move {
                let found = tx
                    .query_opt(
                        "SELECT status FROM builds WHERE id = $1 FOR UPDATE",
                        &[&build],
                    )
                    .await?;
                let Some(found) = found else {
                    return Ok(ApproveOutcome::NotFound);
                };
                let status: String = found.try_get(0)?;
                let status: BuildStatus = status
                    .parse()
                    .map_err(|()| failed(format!("unknown build status {status:?}")))?;
                if status != BuildStatus::Waiting {
                    return Ok(ApproveOutcome::NotWaiting(status));
                }
                let reason = "approved";
                let rows = tx
                    .query(
                        "UPDATE builds SET status = 'queued', reason = $2
                         WHERE id = $1 AND status = 'waiting'
                         RETURNING id, report_context, path_filters",
                        &[&build, &reason],
                    )
                    .await?;
                changed(
                    outbox,
                    &changed_rows(&rows)?,
                    BuildStatus::Waiting,
                    BuildStatus::Queued,
                    Some(reason),
                )?;
                Ok(ApproveOutcome::Approved)
            })
        }))
    }

    fn cancel_reason(&self, build: i64) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        Box::pin(async move {
            Ok(self
                .client()
                .await?
                .query_opt("SELECT cancel_reason FROM builds WHERE id = $1", &[&build])
                .await?
                .map(|r| r.try_get::<_, Option<String>>(0))
                .transpose()?
                .flatten())
        })
    }

    /// Only this node's builds: the others' belong to processes that may
    /// still run them (leases will rescue those of a dead node).
    fn recover(&self) -> BoxFuture<'_, Result<Recovery, StoreError>> {
        let node = self.node.clone();
        Box::pin(self.write(move |tx, outbox| {
            Box::pin(async move {
                let now = OffsetDateTime::now_utc();
                // This node's running builds whose process is gone: its
                // mark is free (a live process of the node holds its own).
                let gone = tx
                    .query(
                        &format!(
                            "SELECT id FROM builds
                             WHERE status = 'running' AND runner = $1
                               AND pg_try_advisory_xact_lock($2, {})
                             ORDER BY id FOR UPDATE",
                            runner_mark("COALESCE(runner_id, '')")
                        ),
                        &[&node, &LOCK_CLASS],
                    )
                    .await?;
                let gone = ids_of(&gone)?;
                let cancelled = end_cancelled(tx, outbox, now, &gone).await?;
                let rows = tx
                    .query(
                        "UPDATE builds SET status = 'error', reason = $2, finished_at = $1,
                             runner = NULL, runner_id = NULL, lease_expires_at = NULL
                         WHERE id = ANY($3) AND status = 'running' AND attempt >= 2
                         RETURNING id, report_context, path_filters",
                        &[&now, &INTERRUPTED_TWICE, &gone],
                    )
                    .await?;
                let failed = changed_rows(&rows)?;
                changed(
                    outbox,
                    &failed,
                    BuildStatus::Running,
                    BuildStatus::Error,
                    Some(INTERRUPTED_TWICE),
                )?;
                let failed: Vec<i64> = failed.into_iter().map(|(id, ..)| id).collect();
                tx.execute(
                    "UPDATE steps SET status = 'skipped'
                     WHERE status IN ('pending', 'running') AND build = ANY($1)",
                    &[&failed],
                )
                .await?;
                let rows = tx
                    .query(
                        "UPDATE builds SET status = 'queued', attempt = attempt + 1,
                             reason = $1, started_at = NULL, cancel_reason = NULL, runner = NULL,
                             runner_id = NULL, lease_expires_at = NULL
                         WHERE id = ANY($2) AND status = 'running'
                         RETURNING id, report_context, path_filters",
                        &[&INTERRUPTED, &gone],
                    )
                    .await?;
                let requeued = changed_rows(&rows)?;
                changed(
                    outbox,
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
            })
        }))
    }

    fn prune(&self, pipeline: String, keep: u32) -> BoxFuture<'_, Result<Vec<i64>, StoreError>> {
        Box::pin(self.write(move |tx, _| {
            Box::pin(async move {
                let ids = ids_of(
                    &tx.query(
                        "DELETE FROM builds WHERE pipeline = $1
                           AND status NOT IN ('waiting', 'queued', 'running')
                           AND id NOT IN (SELECT id FROM builds WHERE pipeline = $1
                                          ORDER BY id DESC LIMIT $2)
                         RETURNING id",
                        &[&pipeline, &i64::from(keep)],
                    )
                    .await?,
                )?;
                let cutoff =
                    OffsetDateTime::now_utc() - time::Duration::days(super::DELIVERY_MEMORY_DAYS);
                tx.execute(
                    "DELETE FROM deliveries WHERE id IN (
                         SELECT d.id FROM deliveries d
                         WHERE d.received_at < $1
                           AND NOT EXISTS (SELECT 1 FROM builds b WHERE b.delivery = d.id)
                         ORDER BY d.received_at LIMIT 1000)",
                    &[&cutoff],
                )
                .await?;
                Ok(ids)
            })
        }))
    }

    fn due_reports(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<ReportJob>, StoreError>> {
        Box::pin(async move {
            if !self.reporting().await {
                return Ok(Vec::new());
            }
            let client = self.client().await?;
            // Reports written side by side by two processes cannot see
            // each other when they are written: supersede here too.
            client
                .execute(
                    "UPDATE reports r SET outcome = 'superseded'
                     FROM builds ob
                     WHERE r.outcome = 'pending' AND ob.id = r.build AND EXISTS (
                         SELECT 1 FROM reports newer JOIN builds nb ON nb.id = newer.build
                         WHERE newer.context = r.context AND newer.id > r.id
                           AND nb.repo = ob.repo AND nb.commit_sha = ob.commit_sha)",
                    &[],
                )
                .await?;
            let sql = format!(
                "SELECT r.id, r.context, r.state, r.description, r.attempts, r.created_ms,
                        {cols}
                 FROM reports r JOIN builds b ON b.id = r.build
                 WHERE r.outcome = 'pending' AND r.next_attempt_ms <= $1
                 ORDER BY r.id LIMIT $2",
                cols = build_columns_of("b")
            );
            let rows = client.query(&sql, &[&now_ms, &i64::from(limit)]).await?;
            rows.iter()
                .map(|r| {
                    let state: String = r.try_get(2)?;
                    Ok(ReportJob {
                        id: r.try_get(0)?,
                        context: r.try_get(1)?,
                        state: state.parse().unwrap_or(BuildStatus::Error),
                        description: r.try_get(3)?,
                        attempts: r.try_get(4)?,
                        created_ms: r.try_get(5)?,
                        build: build_from_row_at(r, 6)?,
                    })
                })
                .collect()
        })
    }

    fn next_report_due(&self) -> BoxFuture<'_, Result<Option<i64>, StoreError>> {
        Box::pin(async move {
            if !self.reporting().await {
                return Ok(None);
            }
            Ok(self
                .client()
                .await?
                .query_one(
                    "SELECT MIN(next_attempt_ms) FROM reports WHERE outcome = 'pending'",
                    &[],
                )
                .await?
                .try_get(0)?)
        })
    }

    fn report_attempted(
        &self,
        id: i64,
        outcome: ReportOutcome,
        retry_at_ms: Option<i64>,
        error: Option<String>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let delivered_at = (outcome == ReportOutcome::Delivered).then(OffsetDateTime::now_utc);
            self.client()
                .await?
                .execute(
                    // A report superseded while it was in flight stays
                    // superseded unless it landed.
                    "UPDATE reports SET
                         outcome = CASE WHEN outcome = 'superseded' AND $2::text <> 'delivered'
                                        THEN 'superseded' ELSE $2::text END,
                         attempts = attempts + 1,
                         next_attempt_ms = COALESCE($3, next_attempt_ms),
                         last_error = COALESCE($4, last_error),
                         delivered_at = COALESCE($5, delivered_at)
                     WHERE id = $1",
                    &[
                        &id,
                        &outcome_name(outcome),
                        &retry_at_ms,
                        &error,
                        &delivered_at,
                    ],
                )
                .await?;
            Ok(())
        })
    }

    fn reports(&self, build: i64) -> BoxFuture<'_, Result<Vec<ReportRecord>, StoreError>> {
        Box::pin(async move {
            let rows = self
                .client()
                .await?
                .query(
                    "SELECT context, state, outcome, attempts, last_error, created_at,
                            delivered_at
                     FROM reports WHERE build = $1 ORDER BY id",
                    &[&build],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    let state: String = r.try_get(1)?;
                    let outcome: String = r.try_get(2)?;
                    Ok(ReportRecord {
                        context: r.try_get(0)?,
                        state: ReportedState(
                            state
                                .parse()
                                .map_err(|()| failed(format!("unknown report state {state:?}")))?,
                        ),
                        outcome: outcome_of(&outcome)?,
                        attempts: r.try_get(3)?,
                        last_error: r.try_get(4)?,
                        created_at: r.try_get(5)?,
                        delivered_at: r.try_get(6)?,
                    })
                })
                .collect()
        })
    }

    fn origin(&self, build: i64) -> BoxFuture<'_, Result<Option<BuildOrigin>, StoreError>> {
        Box::pin(async move {
            let row = self
                .client()
                .await?
                .query_opt(
                    "SELECT rebuild_of, triggered_by, resume FROM build_origins
                     WHERE build = $1",
                    &[&build],
                )
                .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            let resume: Option<String> = row.try_get(2)?;
            let resume = resume
                .map(|json| serde_json::from_str(&json))
                .transpose()
                .map_err(|e| failed(format!("bad resume of a build: {e}")))?;
            Ok(Some(BuildOrigin {
                rebuild_of: row.try_get(0)?,
                triggered_by: row.try_get(1)?,
                resume,
            }))
        })
    }

    fn latest_per_branch(
        &self,
        pipeline: String,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<Build>, StoreError>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT {BUILD_COLUMNS} FROM builds WHERE id IN
                   (SELECT MAX(id) FROM builds WHERE pipeline = $1 AND branch IS NOT NULL
                    GROUP BY branch)
                 ORDER BY id DESC LIMIT $2"
            );
            let rows = self
                .client()
                .await?
                .query(&sql, &[&pipeline, &i64::from(limit)])
                .await?;
            rows.iter().map(build_from_row).collect()
        })
    }

    fn log_begin(
        &self,
        build: i64,
        fence: Fence,
    ) -> BoxFuture<'_, Result<Option<i64>, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            log_fenced(&tx, build, &fence).await?;
            tx.execute("DELETE FROM log_chunks WHERE build = $1", &[&build])
                .await?;
            let run: i64 = tx
                .query_one(
                    "INSERT INTO build_logs (build, run, attempt, runner_id, length, complete)
                     VALUES ($1, nextval('log_runs'), $2, $3, 0, false)
                     ON CONFLICT (build) DO UPDATE SET run = EXCLUDED.run,
                         attempt = EXCLUDED.attempt, runner_id = EXCLUDED.runner_id,
                         length = 0, complete = false
                     RETURNING run",
                    &[&build, &fence.attempt, &fence.runner],
                )
                .await?
                .try_get(0)?;
            self.notify_log(&tx, build).await?;
            tx.commit().await?;
            Ok(Some(run))
        })
    }

    fn log_append(
        &self,
        build: i64,
        run: i64,
        chunk: LogChunk,
        complete: bool,
        fence: Fence,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let offset = i64::try_from(chunk.offset).map_err(failed)?;
            let end = offset + chunk.data.len() as i64;
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            log_fenced(&tx, build, &fence).await?;
            let Some(row) = tx
                .query_opt(
                    "SELECT length, complete FROM build_logs WHERE build = $1 AND run = $2
                     FOR UPDATE",
                    &[&build, &run],
                )
                .await?
            else {
                return Err(StoreError::Fenced);
            };
            let (length, was_complete): (i64, bool) = (row.try_get(0)?, row.try_get(1)?);
            if length >= end && (was_complete || !complete || length > end) {
                // Appended already (a retry whose answer was lost).
                return Ok(());
            }
            if length != offset && length != end {
                return Err(failed(format!(
                    "a log chunk at {offset} does not follow the log's {length} bytes"
                )));
            }
            if length == offset && !chunk.data.is_empty() {
                tx.execute(
                    "INSERT INTO log_chunks (build, run, byte_offset, data, times)
                     VALUES ($1, $2, $3, $4, $5)",
                    &[&build, &run, &offset, &chunk.data, &chunk.times],
                )
                .await?;
            }
            tx.execute(
                "UPDATE build_logs SET length = $2, complete = $3 WHERE build = $1",
                &[&build, &end, &complete],
            )
            .await?;
            self.notify_log(&tx, build).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn log_head(&self, build: i64) -> BoxFuture<'_, Result<Option<LogHead>, StoreError>> {
        Box::pin(async move {
            let row = self
                .client()
                .await?
                .query_opt(
                    "SELECT l.run, l.attempt, l.length, l.complete,
                         COALESCE(b.runner_id = l.runner_id AND b.attempt = l.attempt, false),
                         b.status = 'running'
                     FROM build_logs l JOIN builds b ON b.id = l.build
                     WHERE l.build = $1",
                    &[&build],
                )
                .await?;
            row.map(|r| {
                Ok(LogHead {
                    run: r.try_get(0)?,
                    attempt: r.try_get(1)?,
                    length: u64::try_from(r.try_get::<_, i64>(2)?).unwrap_or(0),
                    complete: r.try_get(3)?,
                    writer_holds: r.try_get(4)?,
                    running: r.try_get(5)?,
                })
            })
            .transpose()
        })
    }

    fn log_chunks(
        &self,
        build: i64,
        run: i64,
        from: u64,
        max: u32,
    ) -> BoxFuture<'_, Result<Vec<LogChunk>, StoreError>> {
        Box::pin(async move {
            let from = i64::try_from(from).map_err(failed)?;
            let rows = self
                .client()
                .await?
                .query(
                    "SELECT byte_offset, data, times FROM log_chunks
                     WHERE build = $1 AND run = $2 AND byte_offset >= $3
                     ORDER BY byte_offset LIMIT $4",
                    &[&build, &run, &from, &i64::from(max)],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(LogChunk {
                        offset: u64::try_from(r.try_get::<_, i64>(0)?).unwrap_or(0),
                        data: r.try_get(1)?,
                        times: r.try_get(2)?,
                    })
                })
                .collect()
        })
    }

    fn runner_seen(&self, info: RunnerInfo) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let labels = serde_json::to_string(&info.labels).map_err(failed)?;
            self.client()
                .await?
                .execute(
                    "INSERT INTO runners (runner_id, node, role, labels, version, max_parallel,
                         heartbeat_ms, started_at, last_seen_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, now(), now())
                     ON CONFLICT (runner_id) DO UPDATE SET node = excluded.node,
                         role = excluded.role, labels = excluded.labels,
                         version = excluded.version, max_parallel = excluded.max_parallel,
                         heartbeat_ms = excluded.heartbeat_ms, last_seen_at = now()",
                    &[
                        &info.runner_id,
                        &info.node,
                        &info.role,
                        &labels,
                        &info.version,
                        &info.max_parallel,
                        &info.heartbeat_ms,
                    ],
                )
                .await?;
            Ok(())
        })
    }

    fn runner_gone(&self, runner_id: String) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.client()
                .await?
                .execute("DELETE FROM runners WHERE runner_id = $1", &[&runner_id])
                .await?;
            Ok(())
        })
    }

    fn forget_runners(&self, older_than_ms: i64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            Ok(self
                .client()
                .await?
                .execute(
                    "DELETE FROM runners
                     WHERE last_seen_at < now() - $1 * interval '1 millisecond'",
                    &[&(older_than_ms as f64)],
                )
                .await?)
        })
    }

    fn runners(&self) -> BoxFuture<'_, Result<Vec<RunnerRecord>, StoreError>> {
        Box::pin(async move {
            let rows = self
                .client()
                .await?
                .query(
                    "SELECT r.runner_id, r.node, r.role, r.labels, r.version, r.max_parallel,
                            r.started_at, r.last_seen_at,
                            r.last_seen_at < now()
                                - ($1::bigint * r.heartbeat_ms)::float8 * interval '1 millisecond',
                            (SELECT count(*) FROM builds b
                             WHERE b.status = 'running' AND b.runner_id = r.runner_id)
                     FROM runners r ORDER BY r.node, r.runner_id",
                    &[&RUNNER_GONE_AFTER_BEATS],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    let labels: String = r.try_get(3)?;
                    Ok(RunnerRecord {
                        id: r.try_get(0)?,
                        node: r.try_get(1)?,
                        role: r.try_get(2)?,
                        labels: serde_json::from_str(&labels)
                            .map_err(|e| failed(format!("bad labels of a runner: {e}")))?,
                        version: r.try_get(4)?,
                        max_parallel_builds: r.try_get(5)?,
                        started_at: r.try_get(6)?,
                        last_seen_at: r.try_get(7)?,
                        gone: r.try_get(8)?,
                        running: r.try_get(9)?,
                    })
                })
                .collect()
        })
    }

    fn hold_runner_mark(&self, runner_id: String) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut session = self.runner_mark.lock().await;
            if session.as_ref().is_some_and(|c| !c.is_closed()) {
                return Ok(());
            }
            // A session of its own holds the mark for as long as it lives:
            // a `recover` elsewhere can take the mark (and the builds under
            // it) only once this process, or its connection, is gone. The
            // runner id is new at each start, so nothing else waits for it.
            let (client, _) = self.hearing.connect().await?;
            let held: bool = client
                .query_one(
                    &format!(
                        "SELECT pg_try_advisory_lock($1, {})",
                        runner_mark("$2::text")
                    ),
                    &[&LOCK_CLASS, &runner_id],
                )
                .await?
                .try_get(0)?;
            if !held {
                // A start's own `recover` holds it for a moment; taken on
                // the next heartbeat.
                return Err(StoreError::unavailable(
                    Cause::Busy,
                    "this runner's mark is held by a recovery",
                ));
            }
            *session = Some(client);
            Ok(())
        })
    }

    fn announce(&self, event: Announce) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // "Builds were queued" says nothing of which: while one is waiting
        // to be sent, another adds nothing. PostgreSQL serialises the
        // commits of notifying transactions, so under load one per
        // delivery would cost every delivery its turn.
        let coalesced = matches!(event, Announce::Queued).then(|| self.queued_unsent.clone());
        if coalesced
            .as_ref()
            .is_some_and(|unsent| unsent.swap(true, std::sync::atomic::Ordering::AcqRel))
        {
            return;
        }
        let pool = self.pool.clone();
        let channel = self.hearing.channel.clone();
        let payload = payload(&self.hearing.me, event);
        // Off the caller's path (a webhook's answer waits for nothing but
        // its commit); one lost is made up by the others' fallback poll.
        runtime.spawn(async move {
            let sent = async {
                let client = pool.get().await?;
                // Cleared before the NOTIFY is sent, so that it is sent
                // after every commit that set it.
                if let Some(unsent) = &coalesced {
                    unsent.store(false, std::sync::atomic::Ordering::Release);
                }
                client
                    .execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
                    .await?;
                Ok::<_, StoreError>(())
            };
            if let Err(e) = sent.await {
                if let Some(unsent) = &coalesced {
                    unsent.store(false, std::sync::atomic::Ordering::Release);
                }
                tracing::debug!(error = %e, "cannot tell other hookci processes");
            }
        });
    }

    fn announcements(
        &self,
        stop: tokio_util::sync::CancellationToken,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<Announce>> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(self.hearing.clone().run(tx, stop));
        Some(rx)
    }

    fn activity(&self) -> BoxFuture<'_, Result<super::Activity, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let newest: i64 = client
                .query_one("SELECT COALESCE(MAX(id), 0) FROM builds", &[])
                .await?
                .try_get(0)?;
            let rows = client
                .query(
                    "SELECT id, status FROM builds
                     WHERE status IN ('waiting', 'queued', 'running')
                     ORDER BY id DESC LIMIT 1000",
                    &[],
                )
                .await?;
            let active = rows
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<Vec<_>, StoreError>>()?;
            Ok((newest, active))
        })
    }
}

/// An announcement as a NOTIFY payload: `TAG:q`, `TAG:r`, `TAG:c:ID`,
/// `TAG:l:ID`.
fn payload(me: &str, event: Announce) -> String {
    match event {
        Announce::Queued => format!("{me}:q"),
        Announce::Reports => format!("{me}:r"),
        Announce::Cancel(id) => format!("{me}:c:{id}"),
        Announce::Log(id) => format!("{me}:l:{id}"),
        Announce::Resync => format!("{me}:s"),
    }
}

/// A payload another process sent; `None` for this process's own, or one
/// this hookci does not know.
fn heard(me: &str, payload: &str) -> Option<Announce> {
    let (tag, what) = payload.split_once(':')?;
    if tag == me {
        return None;
    }
    match what {
        "q" => Some(Announce::Queued),
        "r" => Some(Announce::Reports),
        "s" => Some(Announce::Resync),
        _ => match what.split_once(':') {
            Some(("c", id)) => id.parse().ok().map(Announce::Cancel),
            Some(("l", id)) => id.parse().ok().map(Announce::Log),
            _ => None,
        },
    }
}

/// Forwards the payloads of `conn`'s notifications until it ends.
async fn drive<S, T>(
    mut conn: tokio_postgres::Connection<S, T>,
    payloads: tokio::sync::mpsc::UnboundedSender<String>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match futures_util::future::poll_fn(|cx| conn.poll_message(cx)).await {
            Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                // Nobody listening: the session ends with its client.
                let _ = payloads.send(n.payload().to_owned());
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::warn!(error = %describe(&e), "the connection that hears other hookci processes failed");
                return;
            }
            None => return,
        }
    }
}

impl Hearing {
    /// A session of its own (outside the pool), and the payloads of the
    /// notifications it gets.
    async fn connect(
        &self,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio::sync::mpsc::UnboundedReceiver<String>,
        ),
        tokio_postgres::Error,
    > {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let client = match &self.tls {
            Some(tls) => {
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new((**tls).clone());
                let (client, conn) = self.config.connect(tls).await?;
                tokio::spawn(drive(conn, tx));
                client
            }
            None => {
                let (client, conn) = self.config.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(drive(conn, tx));
                client
            }
        };
        Ok((client, rx))
    }

    /// A connection that LISTENs on the channel, and what it hears.
    async fn listen(
        &self,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio::sync::mpsc::UnboundedReceiver<String>,
        ),
        tokio_postgres::Error,
    > {
        let (client, rx) = self.connect().await?;
        client
            .batch_execute(&format!("LISTEN {}", self.channel))
            .await?;
        Ok((client, rx))
    }

    /// Hears other processes until `stop` or until nobody listens to
    /// `out`: reconnects with backoff when the connection is lost, then
    /// says `Resync` (what was announced meanwhile is lost), and says it
    /// again every [`FALLBACK_POLL`].
    async fn run(
        self,
        out: tokio::sync::mpsc::UnboundedSender<Announce>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(250);
        while !out.is_closed() {
            match self.listen().await {
                Ok((_client, mut payloads)) => {
                    backoff = Duration::from_millis(250);
                    let mut poll = tokio::time::interval(FALLBACK_POLL);
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            p = payloads.recv() => match p {
                                Some(p) => {
                                    if let Some(event) = heard(&self.me, &p) {
                                        if out.send(event).is_err() {
                                            return;
                                        }
                                    }
                                }
                                None => break,
                            },
                            _ = poll.tick() => {
                                if out.send(Announce::Resync).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    tracing::warn!(
                        "lost the connection that hears other hookci processes; reconnecting"
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %describe(&e), "cannot hear other hookci processes; retrying");
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_timeout_is_busy_only_when_every_connection_was_taken() {
        use deadpool_postgres::{PoolError, TimeoutType};
        let cause = |t| match StoreError::from(PoolError::Timeout(t)) {
            StoreError::Unavailable(f) => f.cause,
            other => panic!("{other}"),
        };
        assert_eq!(cause(TimeoutType::Wait), Cause::Busy);
        assert_eq!(cause(TimeoutType::Create), Cause::Down);
        assert_eq!(cause(TimeoutType::Recycle), Cause::Down);
    }

    #[test]
    fn announcements_round_trip_and_a_process_does_not_hear_itself() {
        for event in [
            Announce::Queued,
            Announce::Reports,
            Announce::Cancel(42),
            Announce::Log(43),
            Announce::Resync,
        ] {
            assert_eq!(heard("b", &payload("a", event)), Some(event));
            assert_eq!(heard("a", &payload("a", event)), None);
        }
        assert_eq!(heard("b", "a:c:x"), None);
        assert_eq!(heard("b", "a:l:"), None);
        assert_eq!(heard("b", "nonsense"), None);
    }

    #[test]
    fn server_errors_are_classified_by_cause() {
        assert_eq!(classify(&SqlState::T_R_SERIALIZATION_FAILURE), Cause::Busy);
        assert_eq!(classify(&SqlState::T_R_DEADLOCK_DETECTED), Cause::Busy);
        assert_eq!(classify(&SqlState::LOCK_NOT_AVAILABLE), Cause::Busy);
        assert_eq!(classify(&SqlState::ADMIN_SHUTDOWN), Cause::Down);
        assert_eq!(classify(&SqlState::CANNOT_CONNECT_NOW), Cause::Down);
        assert_eq!(classify(&SqlState::UNIQUE_VIOLATION), Cause::Failed);
        assert_eq!(classify(&SqlState::DISK_FULL), Cause::Failed);
    }

    #[test]
    fn tls_is_off_only_where_the_traffic_stays_on_the_box_or_the_url_says_so() {
        let tls = |url: &str| tls_for(&url.parse().unwrap()).unwrap().is_some();
        assert!(!tls("postgres://u@127.0.0.1/db"));
        assert!(!tls("postgres://u@localhost/db"));
        assert!(!tls("postgres://u@[::1]/db"));
        assert!(tls("postgres://u@db.example/db"));
        assert!(tls("postgres://u@127.0.0.1/db?sslmode=require"));
        assert!(!tls("postgres://u@db.example/db?sslmode=disable"));
    }
}
