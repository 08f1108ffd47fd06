//! The worker: claims queued builds and runs them, at most
//! `max_parallel_builds` at once, honouring each pipeline's concurrency.
//!
//! It wakes when the store says work may be claimable (a build was queued,
//! or one finished and unblocked its ref), never on a polling timer. Cancel
//! requests arrive as store events. On shutdown it stops claiming, gives
//! running builds `shutdown_grace` to finish, then stops them and puts them
//! back in the queue.

use crate::metrics::Metrics;
use crate::pipeline::{Concurrency, PipelineSet};
use crate::runner::build::{Ended, Job, Runner, Source, StopReason, StopSlot};
use crate::runner::log::{LogFollower, LogWriter, follow_file};
use crate::store::{Build, BuildStatus, ClaimPolicy, Store, StoreError, StoreEvent};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, broadcast};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A running build's handles.
#[derive(Debug)]
struct Running {
    cancel: CancellationToken,
    stop: StopSlot,
    log: LogFollower,
}

/// Builds running now, shared with readers of live logs.
#[derive(Debug, Clone, Default)]
pub struct LiveBuilds {
    running: Arc<Mutex<HashMap<i64, Running>>>,
    /// Notified whenever a build starts or ends here.
    changed: Arc<Notify>,
}

impl LiveBuilds {
    /// A follower of build `id`'s log from its first byte: live while it
    /// runs, else the file. For a build still queued, waits until it starts
    /// (woken when a build starts; the store is asked again every few
    /// seconds in case it was cancelled meanwhile).
    pub async fn follow(
        &self,
        id: i64,
        runner: &Runner,
        store: &Store,
    ) -> Result<LogFollower, StoreError> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(r) = self.lock().get(&id) {
                return Ok(r.log.clone());
            }
            let wait = match store.build(id).await?.map(|b| b.status) {
                Some(BuildStatus::Queued) => Duration::from_secs(5),
                // Claimed but not started yet, or ended here and not yet
                // recorded: a moment.
                Some(BuildStatus::Running) => Duration::from_millis(200),
                _ => return Ok(follow_file(runner.log_path(id))),
            };
            let _ = tokio::time::timeout(wait, changed).await;
        }
    }

    /// [`LiveBuilds::follow`] on a shared store, where the build may run
    /// on another box: a build running here is followed here; any other
    /// through `mirrors`, the copies of the logs runners ship to the
    /// database. Waits while the build is queued, or running without its
    /// claim's log begun (woken when a log in the database begins or
    /// grows; the store is asked again every second). A build the database
    /// has no log of (shipped before logs were, or never shipped) is read
    /// from this box's file, if any.
    pub async fn follow_shared(
        &self,
        id: i64,
        runner: &Runner,
        store: &Store,
        mirrors: &Arc<crate::runner::log::mirror::Mirrors>,
    ) -> Result<LogFollower, StoreError> {
        let mut logs = store.subscribe_logs();
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(r) = self.lock().get(&id) {
                return Ok(r.log.clone());
            }
            let wait = match store.build(id).await?.map(|b| b.status) {
                Some(BuildStatus::Queued) => Duration::from_secs(5),
                Some(BuildStatus::Running) => {
                    match store.log_head(id).await? {
                        Some(head) if head.writer_holds => {
                            if let Some(f) = mirrors.follow(id).await? {
                                return Ok(f);
                            }
                        }
                        _ => {}
                    }
                    Duration::from_secs(1)
                }
                None => return Ok(follow_file(runner.log_path(id))),
                Some(_) => {
                    return Ok(match mirrors.follow(id).await? {
                        Some(f) => f,
                        None => follow_file(runner.log_path(id)),
                    });
                }
            };
            let heard = async {
                loop {
                    match logs.recv().await {
                        Ok(Some(b)) if b != id => {}
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => return,
                        Err(broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await;
                        }
                    }
                }
            };
            tokio::select! {
                () = changed => {}
                () = heard => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// The log follower of build `id` when it runs in this process.
    pub fn running_here(&self, id: i64) -> Option<LogFollower> {
        self.lock().get(&id).map(|r| r.log.clone())
    }

    /// The state build `id` settles in once its log has ended: its final
    /// status, or `queued` when it was re-queued (a shutdown). Waits (at
    /// most ~10 s) while the store still says `running`: the end is
    /// recorded just after the log is finished.
    pub async fn settled_status(
        &self,
        id: i64,
        store: &Store,
    ) -> Result<Option<BuildStatus>, StoreError> {
        let mut status = None;
        for _ in 0..50 {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            status = store.build(id).await?.map(|b| b.status);
            if status != Some(BuildStatus::Running) {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), changed).await;
        }
        Ok(status)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, id: i64, running: Running) {
        self.lock().insert(id, running);
        self.changed.notify_waiters();
    }

    fn remove(&self, id: i64) {
        self.lock().remove(&id);
        self.changed.notify_waiters();
    }

    fn stop(&self, id: i64, reason: StopReason) {
        let live = self.lock();
        if let Some(r) = live.get(&id) {
            *r.stop.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
            r.cancel.cancel();
        }
    }

    fn stop_all(&self, reason: &StopReason) {
        let live = self.lock();
        for r in live.values() {
            *r.stop.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.clone());
            r.cancel.cancel();
        }
    }

    fn ids(&self) -> Vec<i64> {
        self.lock().keys().copied().collect()
    }
}

/// The worker's settings and shared parts.
#[derive(Debug, Clone)]
pub struct Worker {
    /// The store.
    pub store: Store,
    /// The pipelines being served.
    pub pipelines: PipelineSet,
    /// The runner.
    pub runner: Arc<Runner>,
    /// Builds run at once.
    pub max_parallel: usize,
    /// How long running builds may finish on shutdown.
    pub shutdown_grace: Duration,
    /// Builds kept per pipeline.
    pub keep_builds: u32,
    /// Builds running now.
    pub live: LiveBuilds,
    /// The daemon's counters (builds finished, durations, queue waits).
    pub metrics: Arc<Metrics>,
    /// What this runner offers (`labels`); it claims no build of a
    /// pipeline whose `runs_on` names another.
    pub labels: Vec<String>,
    /// This process's role (`all` or `runner`), as its row in the store
    /// shows it.
    pub role: &'static str,
}

impl Worker {
    /// Re-queues what a dead daemon left running, then claims and runs
    /// builds until `shutdown` fires.
    pub async fn run(self, shutdown: CancellationToken) {
        // The step cgroups of a dead daemon: whatever is still in them is
        // left over from it (those found by marker are stopped below).
        let stale = tokio::task::spawn_blocking(crate::runner::cgroup::kill_stale)
            .await
            .unwrap_or(0);
        if stale > 0 {
            tracing::warn!(
                processes = stale,
                "killed processes left in the step cgroups of a daemon that died"
            );
        }
        match crate::runner::cgroup::unavailable_reason() {
            None => tracing::info!("steps run in cgroups of their own"),
            Some(why) => tracing::info!(
                "steps run without cgroups of their own ({why}); they are contained by \
                 process group and marker"
            ),
        }
        // On a shared store: renew this runner's leases (and rescue the
        // builds of runners that stopped renewing theirs) until every build
        // here has ended, shutdown included.
        let leases = CancellationToken::new();
        let heartbeat = self.store.shared().then(|| {
            tokio::spawn(keep_leases(
                self.store.clone(),
                self.live.clone(),
                leases.clone(),
                true,
            ))
        });
        let _stop_heartbeat = leases.clone().drop_guard();
        // This runner's row in the store: registered now, refreshed, and
        // removed once every build here has ended.
        let presence_stop = CancellationToken::new();
        let presence = tokio::spawn(crate::runners::keep_presence(
            self.store.clone(),
            crate::runners::info(&self.store, self.role, &self.labels, self.max_parallel),
            presence_stop.clone(),
        ));
        let presence = async move {
            presence_stop.cancel();
            let _ = presence.await;
        };
        // Before recovering and claiming: another process of this node
        // that starts later must see this one alive.
        if self.store.shared() {
            if let Err(e) = self.store.hold_runner_mark().await {
                tracing::warn!(error = %e, "cannot mark this runner alive in the database yet");
            }
        }
        match self.store.recover().await {
            Ok(r) => {
                if !r.requeued.is_empty() || !r.failed.is_empty() || !r.cancelled.is_empty() {
                    tracing::warn!(
                        requeued = ?r.requeued,
                        failed = ?r.failed,
                        cancelled = ?r.cancelled,
                        "builds interrupted by the last stop were recovered"
                    );
                    // Their steps' processes outlived the daemon: stop them
                    // before the builds run again.
                    let builds: Vec<(i64, String)> = r
                        .requeued
                        .iter()
                        .chain(&r.failed)
                        .chain(&r.cancelled)
                        .map(|id| (*id, format!("{}/builds/{id}", self.runner.public_url)))
                        .collect();
                    let grace = self.runner.kill_grace;
                    let killed = tokio::task::spawn_blocking(move || {
                        crate::runner::leftovers::kill_leftovers(&builds, grace)
                    })
                    .await
                    .unwrap_or(0);
                    if killed > 0 {
                        tracing::warn!(
                            processes = killed,
                            "stopped processes left by interrupted builds"
                        );
                    }
                    // Interrupted twice: ended as `error` without this run.
                    for id in &r.failed {
                        if let Ok(Some(b)) = self.store.build(*id).await {
                            self.metrics.ended_unrun(&b.pipeline, BuildStatus::Error, 1);
                        }
                    }
                    for id in &r.cancelled {
                        if let Ok(Some(b)) = self.store.build(*id).await {
                            self.metrics
                                .ended_unrun(&b.pipeline, BuildStatus::Cancelled, 1);
                        }
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot recover interrupted builds"),
        }
        if self.max_parallel == 0 {
            tracing::info!("max_parallel_builds = 0: queueing only, running no builds");
            shutdown.cancelled().await;
            presence.await;
            return;
        }
        let permits = Arc::new(Semaphore::new(self.max_parallel));
        let mut events = self.store.subscribe();
        let mut tasks = JoinSet::new();
        loop {
            // Claim while there are free slots and claimable builds.
            while let Ok(permit) = Arc::clone(&permits).try_acquire_owned() {
                match self.store.claim_next(self.policy()).await {
                    Ok(Some(build)) => {
                        let this = self.clone();
                        tasks.spawn(async move {
                            this.execute(build).await;
                            drop(permit);
                        });
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot claim a build; retrying in 5s");
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_secs(5)) => {}
                            () = shutdown.cancelled() => {}
                        }
                        break;
                    }
                }
            }
            tokio::select! {
                () = self.store.builds_queued() => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                event = events.recv() => self.on_event(event).await,
                () = shutdown.cancelled() => break,
            }
        }
        // Shutdown: let running builds finish within the grace, then stop
        // them; they put themselves back in the queue.
        if !tasks.is_empty() {
            tracing::info!(
                running = tasks.len(),
                grace = ?self.shutdown_grace,
                "waiting for running builds"
            );
            let drain = async { while tasks.join_next().await.is_some() {} };
            if tokio::time::timeout(self.shutdown_grace, drain)
                .await
                .is_err()
            {
                self.live.stop_all(&StopReason::Shutdown);
                while tasks.join_next().await.is_some() {}
            }
        }
        leases.cancel();
        if let Some(heartbeat) = heartbeat {
            let _ = heartbeat.await;
        }
        presence.await;
    }

    fn policy(&self) -> ClaimPolicy {
        let pipelines = self.pipelines.current();
        ClaimPolicy {
            parallel: pipelines
                .values()
                .filter(|p| p.concurrency == Concurrency::Parallel)
                .map(|p| p.name.clone())
                .collect(),
            elsewhere: pipelines
                .values()
                .filter(|p| !p.runs_on.iter().all(|l| self.labels.contains(l)))
                .map(|p| p.name.clone())
                .collect(),
        }
    }

    async fn on_event(&self, event: Result<StoreEvent, broadcast::error::RecvError>) {
        let ids = match event {
            Ok(StoreEvent::CancelRequested(id)) => vec![id],
            // Missed events, here or in another process: look at every
            // running build.
            Ok(StoreEvent::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => self.live.ids(),
            Err(broadcast::error::RecvError::Closed) => return,
        };
        for id in ids {
            match self.store.cancel_reason(id).await {
                Ok(Some(reason)) => self.live.stop(id, StopReason::Cancel(reason)),
                Ok(None) => {}
                Err(e) => tracing::error!(build = id, error = %e, "cannot read a cancel request"),
            }
        }
    }

    /// Runs one claimed build and records how it ended.
    async fn execute(&self, build: Build) {
        let id = build.id;
        // This run's writes carry this claim's attempt.
        let store = self.store.for_run(&build);
        let run = self.metrics.build_started(&build);
        let pipelines = self.pipelines.current();
        let ended = match pipelines.get(&build.pipeline) {
            None => Ended::Finished(
                BuildStatus::Error,
                Some(format!("pipeline {} no longer exists", build.pipeline)),
            ),
            Some(pipeline) => {
                let secrets: Vec<_> = pipeline
                    .secrets
                    .values()
                    .chain(pipeline.clone.token.iter())
                    .chain(pipeline.clone.ssh_key.iter())
                    .cloned()
                    .collect();
                let path = self.runner.log_path(id);
                keep_earlier_attempt(&path);
                let created = match path.parent() {
                    Some(dir) => std::fs::create_dir_all(dir),
                    None => Ok(()),
                }
                .and_then(|()| LogWriter::create(&path, &secrets, self.runner.max_log_bytes));
                match created {
                    Err(e) => Ended::Finished(
                        BuildStatus::Error,
                        Some(format!("cannot write the build log: {e}")),
                    ),
                    Ok(mut log) => {
                        // On a shared store the log goes to the database
                        // too, so that every receiver serves it.
                        let shipper = store.shared().then(|| {
                            crate::runner::log::ship::start(store.clone(), id, &log, &secrets)
                        });
                        let cancel = CancellationToken::new();
                        let stop: StopSlot = Arc::default();
                        self.live.insert(
                            id,
                            Running {
                                cancel: cancel.clone(),
                                stop: stop.clone(),
                                log: log.follow(),
                            },
                        );
                        tracing::info!(
                            build = id,
                            pipeline = %pipeline.name,
                            branch = %build_branch(&build),
                            commit = build.commit_str(),
                            attempt = build.attempt,
                            "build started"
                        );
                        // A rebuild from the failed step starts there.
                        let origin = self.store.origin(id).await;
                        let (ended, _) = match &origin {
                            Err(e) => {
                                tracing::error!(build = id, error = %e, "cannot read where a build came from");
                                let why = "cannot read where the build came from".to_owned();
                                let _ = log.line(&format!("==> {why}")).await;
                                (Ended::Finished(BuildStatus::Error, Some(why)), Vec::new())
                            }
                            Ok(origin) => {
                                let job = Job {
                                    build: &build,
                                    pipeline,
                                    store: Some(&store),
                                    source: Source::Checkout,
                                    cancel: &cancel,
                                    stop: &stop,
                                    resume: origin.as_ref().and_then(|o| o.resume.as_ref()),
                                };
                                self.runner.run(job, &mut log).await
                            }
                        };
                        let mut lost = log.write_error();
                        if let Err(e) = log.finish().await {
                            tracing::warn!(build = id, error = %e, "cannot finish the build log");
                            lost.get_or_insert_with(|| crate::runner::log::describe(&e));
                        }
                        // The end is recorded once the whole log is in the
                        // database, so that a receiver that sees the build
                        // ended serves all of it; not waiting longer than
                        // SHIP_GRACE (the shipper then goes on alone).
                        if let Some(shipper) = shipper {
                            if !shipper.wait(SHIP_GRACE).await {
                                tracing::warn!(
                                    build = id,
                                    "the build log is not all in the database yet; recording \
                                     the build's end anyway"
                                );
                            }
                        }
                        unlogged(ended, lost)
                    }
                }
            }
        };
        self.live.remove(id);
        if let Ended::Finished(status, _) = &ended {
            run.finished(*status);
        }
        drop(run);
        self.record(&store, &build, ended).await;
        self.live.changed.notify_waiters();
    }

    /// Records the end of a build; retried, since a lost result would leave
    /// the build `running` until the next restart.
    async fn record(&self, store: &Store, build: &Build, ended: Ended) {
        let (id, pipeline) = (build.id, build.pipeline.as_str());
        let recorded = store
            .retried("the build's end", id, || async {
                match &ended {
                    Ended::Finished(status, reason) => {
                        store.finish(id, *status, reason.clone()).await
                    }
                    Ended::Requeue(reason) => store.requeue(id, reason.clone()).await,
                }
            })
            .await;
        match &recorded {
            Ok(()) => log_end(build, &ended),
            // Not written: this runner must not renew the lease of a build
            // it no longer runs, or the build would stay `running` for
            // good; once the lease runs out it goes back to the queue.
            Err(StoreError::Fenced) => {}
            Err(_) if store.shared() => {
                store.abandon_lease(id);
                tracing::error!(
                    build = id,
                    "the build's end was not recorded; its lease is given up, so it runs again once the lease runs out"
                );
            }
            Err(_) => {}
        }
        if matches!(ended, Ended::Finished(..)) {
            self.prune(pipeline).await;
        }
    }

    async fn prune(&self, pipeline: &str) {
        match self
            .store
            .prune(pipeline.to_owned(), self.keep_builds)
            .await
        {
            Ok(ids) => {
                for id in ids {
                    let path = self.runner.log_path(id);
                    let _ = std::fs::remove_file(&path);
                    let _ = std::fs::remove_file(crate::runner::log::times::times_path(&path));
                    for earlier in earlier_attempts(&path) {
                        let _ = std::fs::remove_file(earlier);
                    }
                }
            }
            Err(e) => tracing::warn!(pipeline, error = %e, "cannot prune old builds"),
        }
    }
}

/// How long a build's end waits for its log to be all in a shared store.
const SHIP_GRACE: Duration = Duration::from_secs(10);

/// Why a build is stopped on a runner that lost its lease.
const LEASE_LOST_HERE: &str = "this runner lost the build's lease";

/// The heartbeat of a process on a shared store (SPEC §11). Every lease/3
/// it renews the leases of the builds running here, in one write, and
/// stops the steps of any it lost (rescued while this process was paused
/// or cut off: another runner may run them now). When no renewal succeeded
/// within the lease minus a sixth (this process's monotonic clock), it
/// gives up all of its leases and stops their steps: a runner that cannot
/// renew its lease stops its own steps, and writes nothing more for them.
/// Each round it also rescues the builds whose lease ran out elsewhere.
pub async fn keep_leases(
    store: Store,
    live: LiveBuilds,
    stop: CancellationToken,
    runs_builds: bool,
) {
    let lease = store.lease();
    let period = lease / 3;
    let trust = lease - lease / 6;
    let mut last_ok = tokio::time::Instant::now();
    loop {
        let now = tokio::time::Instant::now();
        let mut wake = now + period;
        if last_ok + trust > now {
            wake = wake.min(last_ok + trust);
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep_until(wake) => {}
        }
        if runs_builds {
            if let Err(e) = store.hold_runner_mark().await {
                tracing::warn!(error = %e, "cannot mark this runner alive in the database");
            }
        }
        let sent = tokio::time::Instant::now();
        let left = (last_ok + trust).saturating_duration_since(sent);
        match tokio::time::timeout(left.max(Duration::from_millis(1)), store.renew()).await {
            Ok(Ok(lost)) => {
                last_ok = sent;
                for id in lost {
                    tracing::warn!(
                        build = id,
                        "this runner lost the build's lease (it was rescued); stopping its steps"
                    );
                    live.stop(id, StopReason::Cancel(LEASE_LOST_HERE.to_owned()));
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot renew this runner's leases"),
            Err(_) => tracing::warn!("renewing this runner's leases took too long"),
        }
        if last_ok.elapsed() >= trust {
            for id in store.abandon_leases() {
                tracing::error!(
                    build = id,
                    lease = ?lease,
                    "no lease renewal within the lease; stopping the build's steps"
                );
                live.stop(id, StopReason::Cancel(LEASE_LOST_HERE.to_owned()));
            }
        }
        match store.rescue().await {
            Ok(r) if !r.requeued.is_empty() || !r.failed.is_empty() || !r.cancelled.is_empty() => {
                tracing::warn!(
                requeued = ?r.requeued,
                failed = ?r.failed,
                cancelled = ?r.cancelled,
                "rescued builds whose runner stopped renewing its lease"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot rescue builds with expired leases"),
        }
    }
}

/// A build whose log could not be written whole (a full disk) does not
/// end `success` or `failure` as if its log told the story: it is an
/// `error` that says why, and a step's failure stays in the reason.
fn unlogged(ended: Ended, lost: Option<String>) -> Ended {
    match (ended, lost) {
        (Ended::Finished(BuildStatus::Success | BuildStatus::Failure, reason), Some(why)) => {
            let why = format!("the build log could not be written: {why}");
            Ended::Finished(
                BuildStatus::Error,
                Some(match reason {
                    Some(r) => format!("{why}; {r}"),
                    None => why,
                }),
            )
        }
        (ended, _) => ended,
    }
}

/// A build that runs again (after a crash or a shutdown) keeps the log of
/// its earlier run as `ID.log.1`, `ID.log.2`, ...; the new run writes `ID.log`.
fn keep_earlier_attempt(path: &std::path::Path) {
    if !path.exists() {
        return;
    }
    let next = earlier_attempts(path).len() + 1;
    let mut target = path.as_os_str().to_owned();
    target.push(format!(".{next}"));
    if let Err(e) = std::fs::rename(path, &target) {
        tracing::warn!(log = %path.display(), error = %e, "cannot keep the earlier attempt's log");
    }
}

/// The kept logs of earlier attempts of the build whose log is `path`
/// (`ID.log.1`, `ID.log.2`, ... up to the first missing number).
fn earlier_attempts(path: &std::path::Path) -> Vec<std::path::PathBuf> {
    (1..)
        .map(|k| {
            let mut name = path.as_os_str().to_owned();
            name.push(format!(".{k}"));
            std::path::PathBuf::from(name)
        })
        .take_while(|p| p.exists())
        .collect()
}

/// The branch (or tag, or ref) a build is of, for log lines.
fn build_branch(build: &Build) -> &str {
    build.branch().or(build.tag()).unwrap_or(&build.git_ref)
}

/// A build's end, in words: its state, and why where there is a reason.
fn log_end(build: &Build, ended: &Ended) {
    let branch = build_branch(build);
    match ended {
        Ended::Finished(status, reason) => {
            let why = reason.as_deref().unwrap_or("");
            let status = status.as_str();
            match status {
                "success" | "skipped" | "cancelled" => tracing::info!(
                    build = build.id, pipeline = %build.pipeline, %branch, commit = build.commit_str(),
                    status, why, "build ended"
                ),
                _ => tracing::warn!(
                    build = build.id, pipeline = %build.pipeline, %branch, commit = build.commit_str(),
                    status, why, "build ended"
                ),
            }
        }
        Ended::Requeue(reason) => tracing::info!(
            build = build.id, pipeline = %build.pipeline, %branch, commit = build.commit_str(),
            why = %reason, "build stopped and queued again"
        ),
    }
}
