//! Schema migrations, applied in order; `PRAGMA user_version` records how
//! many have run. A later version appends to [`MIGRATIONS`]; an applied
//! migration is never edited. Each new one gets its PostgreSQL twin, with
//! its number, in `pg_migrations.rs`.

use rusqlite::{Connection, OptionalExtension};

/// Each entry is one migration's SQL, run in its own transaction.
const MIGRATIONS: &[&str] = &[
    // 1: deliveries and builds.
    r#"
    CREATE TABLE deliveries (
        id           INTEGER PRIMARY KEY,
        pipeline     TEXT NOT NULL,
        delivery_id  TEXT NOT NULL,
        host         TEXT NOT NULL,
        event        TEXT NOT NULL,
        skipped      TEXT,
        received_at  TEXT NOT NULL,
        UNIQUE (pipeline, delivery_id)
    );
    CREATE TABLE builds (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        pipeline     TEXT NOT NULL,
        delivery     INTEGER REFERENCES deliveries(id),
        delivery_id  TEXT,
        repo         TEXT NOT NULL,
        host         TEXT,
        event        TEXT NOT NULL,
        ref          TEXT NOT NULL,
        branch       TEXT,
        tag          TEXT,
        commit_sha   TEXT NOT NULL,
        before_sha   TEXT NOT NULL,
        after_sha    TEXT NOT NULL,
        forced       INTEGER NOT NULL DEFAULT 0,
        clone_url    TEXT NOT NULL,
        ssh_url      TEXT,
        web_url      TEXT,
        message      TEXT NOT NULL,
        pusher       TEXT NOT NULL,
        path_filters TEXT NOT NULL DEFAULT '[]',
        status       TEXT NOT NULL CHECK (status IN
                       ('queued','running','success','failure','error','cancelled','skipped')),
        reason       TEXT,
        attempt      INTEGER NOT NULL DEFAULT 1,
        created_at   TEXT NOT NULL,
        started_at   TEXT,
        finished_at  TEXT
    );
    CREATE INDEX builds_by_status ON builds (status, id);
    CREATE INDEX builds_by_pipeline ON builds (pipeline, id);
    CREATE INDEX builds_by_delivery ON builds (delivery);

    -- The queue's length, kept by triggers so that admission control reads
    -- one row instead of counting the queue on every delivery.
    CREATE TABLE queue_stats (
        id      INTEGER PRIMARY KEY CHECK (id = 1),
        queued  INTEGER NOT NULL
    );
    INSERT INTO queue_stats (id, queued) VALUES (1, 0);
    CREATE TRIGGER builds_queued_insert AFTER INSERT ON builds
        WHEN NEW.status = 'queued'
        BEGIN UPDATE queue_stats SET queued = queued + 1 WHERE id = 1; END;
    CREATE TRIGGER builds_queued_update AFTER UPDATE OF status ON builds
        WHEN (OLD.status = 'queued') <> (NEW.status = 'queued')
        BEGIN UPDATE queue_stats
              SET queued = queued + (NEW.status = 'queued') - (OLD.status = 'queued')
              WHERE id = 1; END;
    CREATE TRIGGER builds_queued_delete AFTER DELETE ON builds
        WHEN OLD.status = 'queued'
        BEGIN UPDATE queue_stats SET queued = queued - 1 WHERE id = 1; END;
    "#,
    // 2: steps of a build, and cancel requests for running builds.
    r#"
    CREATE TABLE steps (
        build        INTEGER NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
        idx          INTEGER NOT NULL,
        name         TEXT NOT NULL,
        status       TEXT NOT NULL CHECK (status IN
                       ('pending','running','success','failure','cancelled','skipped')),
        exit_code    INTEGER,
        started_at   TEXT,
        finished_at  TEXT,
        PRIMARY KEY (build, idx)
    );
    ALTER TABLE builds ADD COLUMN cancel_reason TEXT;
    CREATE INDEX builds_by_branch ON builds (pipeline, ref, status, id);
    "#,
    // 3: the status report outbox. Triggers write a report in the same
    // transaction as the build state change that causes it.
    r#"
    ALTER TABLE builds ADD COLUMN report_context TEXT;
    CREATE TABLE reports (
        id               INTEGER PRIMARY KEY,
        build            INTEGER NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
        context          TEXT NOT NULL,
        state            TEXT NOT NULL,
        description      TEXT NOT NULL,
        created_at       TEXT NOT NULL,
        outcome          TEXT NOT NULL DEFAULT 'pending' CHECK (outcome IN
                           ('pending','delivered','failed','superseded')),
        attempts         INTEGER NOT NULL DEFAULT 0,
        created_ms       INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms  INTEGER NOT NULL DEFAULT 0,
        last_error       TEXT,
        delivered_at     TEXT
    );
    CREATE INDEX reports_due ON reports (outcome, next_attempt_ms);
    CREATE INDEX reports_by_build ON reports (build);

    -- Queued: pending. Not for builds with path rules: the runner may still
    -- skip them, and a skipped build reports nothing.
    CREATE TRIGGER report_on_insert AFTER INSERT ON builds
        WHEN NEW.report_context IS NOT NULL AND NEW.status = 'queued'
             AND NEW.path_filters = '[]'
        BEGIN
            INSERT INTO reports (build, context, state, description, created_at, created_ms)
            VALUES (NEW.id, NEW.report_context, 'queued', 'queued', NEW.created_at,
                    CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
        END;
    CREATE TRIGGER report_on_update AFTER UPDATE OF status ON builds
        WHEN NEW.report_context IS NOT NULL AND NEW.status <> OLD.status
             AND NEW.status <> 'skipped'
             AND (NEW.path_filters = '[]' OR NEW.status NOT IN ('queued', 'running'))
        BEGIN
            INSERT INTO reports (build, context, state, description, created_at, created_ms)
            VALUES (NEW.id, NEW.report_context, NEW.status, COALESCE(NEW.reason, ''),
                    strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
                    CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
        END;
    "#,
    // 4: deliveries are forgotten after a while (see `Backend::prune`).
    r#"
    CREATE INDEX deliveries_by_received ON deliveries (received_at);
    "#,
    // 5: where a build no push carried came from (a rebuild of another
    // build, a trigger), for the pages to say so.
    r#"
    CREATE TABLE build_origins (
        build        INTEGER PRIMARY KEY REFERENCES builds(id) ON DELETE CASCADE,
        rebuild_of   INTEGER,
        triggered_by TEXT NOT NULL
    );
    CREATE INDEX builds_by_event ON builds (event, id);
    "#,
    // 6: a claim finds the queued builds through indexes that hold only
    // them, so its cost does not grow with the queue or the history.
    r#"
    CREATE INDEX builds_queued_by_pipeline ON builds (pipeline, id) WHERE status = 'queued';
    CREATE INDEX builds_queued_by_ref ON builds (pipeline, ref, id) WHERE status = 'queued';
    "#,
    // 7: an older pending report of the same (repo, commit, context) is
    // superseded when a newer one is written, by a trigger and with indexes,
    // so that the reporter's pass is a read and never holds the writer that
    // webhooks wait for (a host outage leaves thousands pending). Then once
    // what is pending now.
    r#"
    CREATE INDEX builds_by_commit ON builds (repo, commit_sha);
    CREATE INDEX reports_by_context ON reports (context, outcome, build);
    CREATE TRIGGER report_supersede AFTER INSERT ON reports
        BEGIN
            UPDATE reports SET outcome = 'superseded'
            WHERE outcome = 'pending' AND context = NEW.context AND id < NEW.id
              AND build IN (
                  SELECT ob.id FROM builds nb
                  JOIN builds ob ON ob.repo = nb.repo AND ob.commit_sha = nb.commit_sha
                  WHERE nb.id = NEW.build);
        END;
    UPDATE reports SET outcome = 'superseded'
    WHERE outcome = 'pending' AND EXISTS (
        SELECT 1 FROM reports newer
        JOIN builds nb ON nb.id = newer.build
        JOIN builds ob ON ob.id = reports.build
        WHERE newer.context = reports.context AND newer.id > reports.id
          AND nb.repo = ob.repo AND nb.commit_sha = ob.commit_sha);
    "#,
    // 8: the SHA-256 of a signed delivery's body: the same signed body is a
    // redelivery whatever its (unsigned) delivery id says. Kept on the
    // delivery's row, so it is remembered exactly as long as the delivery.
    r#"
    ALTER TABLE deliveries ADD COLUMN body_sha256 TEXT;
    CREATE INDEX deliveries_by_body ON deliveries (pipeline, body_sha256)
        WHERE body_sha256 IS NOT NULL;
    "#,
    // 9: a rebuild that starts at the step its build failed in: where it
    // starts and why each earlier step is not run (JSON, see
    // `store::Resume`), and that reason on each such step's row.
    r#"
    ALTER TABLE build_origins ADD COLUMN resume TEXT;
    ALTER TABLE steps ADD COLUMN reason TEXT;
    "#,
    // 10: which state changes write a report is decided in Rust now
    // (`store::outbox`, shared by every backend), in the transaction that
    // changes the state; migration 3's triggers go. Migration 7's supersede
    // trigger stays: it is how this backend keeps "older pending reports of
    // a key are superseded" cheap, not a rule of what is reported.
    r#"
    DROP TRIGGER report_on_insert;
    DROP TRIGGER report_on_update;
    "#,
    // 11: pull request builds. A build may be `waiting` (a fork's pull
    // request until an admin approves it; never claimed), which the status
    // CHECK must allow: SQLite cannot alter a CHECK, so the table is made
    // again (foreign keys are off while migrations run, see
    // `migrate_until`), with every index and trigger of it. The pull
    // request itself is one JSON column (`model::PullRequest`), NULL for a
    // push.
    r#"
    DROP TRIGGER report_supersede;
    CREATE TABLE builds_new (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        pipeline     TEXT NOT NULL,
        delivery     INTEGER REFERENCES deliveries(id),
        delivery_id  TEXT,
        repo         TEXT NOT NULL,
        host         TEXT,
        event        TEXT NOT NULL,
        ref          TEXT NOT NULL,
        branch       TEXT,
        tag          TEXT,
        commit_sha   TEXT NOT NULL,
        before_sha   TEXT NOT NULL,
        after_sha    TEXT NOT NULL,
        forced       INTEGER NOT NULL DEFAULT 0,
        clone_url    TEXT NOT NULL,
        ssh_url      TEXT,
        web_url      TEXT,
        message      TEXT NOT NULL,
        pusher       TEXT NOT NULL,
        path_filters TEXT NOT NULL DEFAULT '[]',
        status       TEXT NOT NULL CHECK (status IN
                       ('waiting','queued','running','success','failure','error','cancelled',
                        'skipped')),
        reason       TEXT,
        attempt      INTEGER NOT NULL DEFAULT 1,
        created_at   TEXT NOT NULL,
        started_at   TEXT,
        finished_at  TEXT,
        cancel_reason TEXT,
        report_context TEXT,
        pull_request TEXT
    );
    INSERT INTO builds_new (id, pipeline, delivery, delivery_id, repo, host, event, ref, branch,
        tag, commit_sha, before_sha, after_sha, forced, clone_url, ssh_url, web_url, message,
        pusher, path_filters, status, reason, attempt, created_at, started_at, finished_at,
        cancel_reason, report_context)
    SELECT id, pipeline, delivery, delivery_id, repo, host, event, ref, branch,
        tag, commit_sha, before_sha, after_sha, forced, clone_url, ssh_url, web_url, message,
        pusher, path_filters, status, reason, attempt, created_at, started_at, finished_at,
        cancel_reason, report_context
    FROM builds;
    -- Ids of pruned builds are never handed out again.
    DELETE FROM sqlite_sequence WHERE name = 'builds_new';
    INSERT INTO sqlite_sequence (name, seq)
        SELECT 'builds_new', seq FROM sqlite_sequence WHERE name = 'builds';
    DROP TABLE builds;
    ALTER TABLE builds_new RENAME TO builds;
    CREATE INDEX builds_by_status ON builds (status, id);
    CREATE INDEX builds_by_pipeline ON builds (pipeline, id);
    CREATE INDEX builds_by_delivery ON builds (delivery);
    CREATE INDEX builds_by_branch ON builds (pipeline, ref, status, id);
    CREATE INDEX builds_by_event ON builds (event, id);
    CREATE INDEX builds_queued_by_pipeline ON builds (pipeline, id) WHERE status = 'queued';
    CREATE INDEX builds_queued_by_ref ON builds (pipeline, ref, id) WHERE status = 'queued';
    CREATE INDEX builds_by_commit ON builds (repo, commit_sha);
    CREATE TRIGGER builds_queued_insert AFTER INSERT ON builds
        WHEN NEW.status = 'queued'
        BEGIN UPDATE queue_stats SET queued = queued + 1 WHERE id = 1; END;
    CREATE TRIGGER builds_queued_update AFTER UPDATE OF status ON builds
        WHEN (OLD.status = 'queued') <> (NEW.status = 'queued')
        BEGIN UPDATE queue_stats
              SET queued = queued + (NEW.status = 'queued') - (OLD.status = 'queued')
              WHERE id = 1; END;
    CREATE TRIGGER builds_queued_delete AFTER DELETE ON builds
        WHEN OLD.status = 'queued'
        BEGIN UPDATE queue_stats SET queued = queued - 1 WHERE id = 1; END;
    CREATE TRIGGER report_supersede AFTER INSERT ON reports
        BEGIN
            UPDATE reports SET outcome = 'superseded'
            WHERE outcome = 'pending' AND context = NEW.context AND id < NEW.id
              AND build IN (
                  SELECT ob.id FROM builds nb
                  JOIN builds ob ON ob.repo = nb.repo AND ob.commit_sha = nb.commit_sha
                  WHERE nb.id = NEW.build);
        END;
    "#,
    // 12: leases. A claim records the claiming runner's id (its node and a
    // nonce drawn at start) and when its lease runs out (Unix ms); a
    // runner's writes for the build are fenced by runner id and attempt,
    // and a build whose lease ran out is rescued.
    r#"
    ALTER TABLE builds ADD COLUMN runner_id TEXT;
    ALTER TABLE builds ADD COLUMN lease_expires_ms INTEGER;
    "#,
    // 13: nothing. PostgreSQL's 13 keeps the logs its runners ship; the
    // embedded store's one process reads its logs from its own files.
    r#"
    -- logs stay in data_dir/logs
    "#,
    // 14: runners and pipeline revisions. Each runner process keeps a row
    // (refreshed by its heartbeat, deleted at a clean stop; a row not seen
    // for 3 heartbeats is shown gone, and one not seen for an hour is
    // forgotten); times are Unix ms. A build records the revision of the
    // pipeline file it was matched with.
    r#"
    CREATE TABLE runners (
        runner_id    TEXT PRIMARY KEY,
        node         TEXT NOT NULL,
        role         TEXT NOT NULL,
        labels       TEXT NOT NULL DEFAULT '[]',
        version      TEXT NOT NULL,
        max_parallel INTEGER NOT NULL,
        heartbeat_ms INTEGER NOT NULL,
        started_ms   INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL
    );
    ALTER TABLE builds ADD COLUMN pipeline_revision TEXT;
    "#,
    // 15: nothing. PostgreSQL's 15 counts the queue with triggers, as the
    // `queue_stats` row here has since 1 (here `waiting` builds, few, are
    // counted by an index).
    r#"
    -- the queue is counted by queue_stats's triggers
    "#,
];

/// The first migration that made a table again (11, `builds`): from it on,
/// every migration checks the references into the tables it touched.
const REBUILT_BUILDS: usize = 11;

/// How many migrations there are: the schema version of a new database.
/// PostgreSQL's list (`pg_migrations.rs`) has a twin of each from 10 on.
#[cfg(test)]
pub(super) fn count() -> usize {
    MIGRATIONS.len()
}

/// Brings the schema up to date. Refuses a database written by a newer
/// hookci (more migrations than this build knows).
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    migrate_until(conn, MIGRATIONS.len())
}

/// Applies the migrations up to number `last` (a test builds an older
/// database with it).
pub fn migrate_until(conn: &mut Connection, last: usize) -> rusqlite::Result<()> {
    let version: usize = conn
        .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?
        .try_into()
        .unwrap_or(0);
    if version > MIGRATIONS.len() {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "the database has schema version {version}, newer than this hookci knows ({})",
            MIGRATIONS.len()
        )));
    }
    if version >= last {
        return Ok(());
    }
    // A migration that makes a table again drops the old one, which with
    // foreign keys on would delete every row referring to it (steps,
    // reports): they are off while migrations run (the pragma is a no-op
    // inside a transaction), and every reference is checked before each
    // commit.
    let foreign_keys: i64 = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    let result = (|| {
        for (i, sql) in MIGRATIONS.iter().enumerate().take(last).skip(version) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            let broken: Option<String> = if i + 1 >= REBUILT_BUILDS {
                tx.query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
                    .optional()?
            } else {
                None
            };
            if let Some(table) = broken {
                return Err(rusqlite::Error::InvalidParameterName(format!(
                    "migration {} left a broken reference in table {table}",
                    i + 1
                )));
            }
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(())
    })();
    conn.pragma_update(None, "foreign_keys", foreign_keys)?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrating_twice_changes_nothing() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v as usize, MIGRATIONS.len());
    }

    #[test]
    fn a_newer_database_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", 999).unwrap();
        assert!(migrate(&mut conn).is_err());
    }
}
