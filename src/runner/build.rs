//! One build, start to end: log, checkout, the `paths` decision, the steps
//! in order, and the result. Shared by the daemon's workers and `hookci run`.
//!
//! The runner records step states in the store when it has one, and returns
//! how the build ended; the worker records that. A cancel or a shutdown
//! reaches it through a [`CancellationToken`] plus a [`StopReason`] set
//! before the token fires.

use super::checkout::{CloneSpec, Mirrors};
use super::log::LogWriter;
use super::step::{StepOutcome, StepSpec, run_step};
use crate::model::CommitId;
use crate::pipeline::{PathFilter, Pipeline};
use crate::store::{Build, BuildStatus, Resume, StepStatus, Store};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The PATH a step starts with (a pipeline's `[env]` may replace it).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why a running build is being stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// A user cancelled it or a newer push superseded it; the reason says which.
    Cancel(String),
    /// The daemon is shutting down; the build goes back to the queue.
    Shutdown,
}

/// A shared slot for the stop reason, set before the token is cancelled.
pub type StopSlot = Arc<Mutex<Option<StopReason>>>;

/// How a build ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// A final state, with the reason in words.
    Finished(BuildStatus, Option<String>),
    /// Stopped by a shutdown: back to the queue.
    Requeue(String),
}

/// One step's result, for the summary `hookci run` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepSummary {
    /// The step's name.
    pub name: String,
    /// How it ended.
    pub status: StepStatus,
    /// In words: "exited 0", "timed out after 30m".
    pub outcome: String,
    /// How long it ran.
    pub duration: Duration,
}

/// What the runner needs from the daemon's config.
#[derive(Debug)]
pub struct Runner {
    /// `data_dir`: logs/, workspaces/ and repos/ live here.
    pub data_dir: PathBuf,
    /// The base of build links.
    pub public_url: String,
    /// The mirror cache.
    pub mirrors: Mirrors,
    /// The largest log kept per build.
    pub max_log_bytes: u64,
    /// Steps run as this (uid, gid), when hookci runs as root.
    pub run_as: Option<(u32, u32)>,
    /// Between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// The step sandbox and limits (SPEC section 9).
    pub sandbox: super::sandbox::Setup,
}

/// Where a build runs: a fresh checkout, or a directory the user gave.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// Fetch into the mirror and check the commit out into a fresh workspace.
    Checkout,
    /// Run the steps in this directory as it is (`hookci run --workdir`).
    Workdir(&'a Path),
}

impl Runner {
    /// A runner over `data_dir`.
    pub fn new(data_dir: PathBuf, public_url: String, max_log_bytes: u64) -> Runner {
        let mirrors = Mirrors::new(data_dir.join("repos"));
        Runner {
            data_dir,
            public_url,
            mirrors,
            max_log_bytes,
            run_as: None,
            kill_grace: Duration::from_secs(10),
            sandbox: super::sandbox::Setup::default(),
        }
    }

    /// The log file of build `id`.
    pub fn log_path(&self, id: i64) -> PathBuf {
        self.data_dir.join("logs").join(format!("{id}.log"))
    }

    /// The workspace directory of build `id` (the checkout is `src/` in it,
    /// the steps' HOME is `home/`).
    pub fn workspace(&self, id: i64) -> PathBuf {
        self.data_dir.join("workspaces").join(id.to_string())
    }

    /// Runs a build to its end. `log` is opened by the caller (so that
    /// followers can attach before it starts).
    pub async fn run(&self, job: Job<'_>, log: &mut LogWriter) -> (Ended, Vec<StepSummary>) {
        let Job {
            build,
            pipeline,
            store,
            source,
            cancel,
            stop,
            resume,
        } = job;
        let mut summary = Vec::new();
        let started = Instant::now();
        let deadline = pipeline.timeout.map(|t| started + t);
        let _ = log
            .line(&format!(
                "==> hookci build {} of {}: {} at {} (attempt {})",
                build.id,
                pipeline.name,
                build.git_ref,
                build.commit.as_ref().map_or("its tip", |c| c.as_str()),
                build.attempt
            ))
            .await;
        // Every process reads its own pipeline files (SPEC 11): a runner
        // whose copy differs from the one the build was matched with says
        // so, and runs its own (docs/topology.md, "Pipelines").
        if let Some(matched) = build
            .pipeline_revision
            .as_deref()
            .filter(|r| *r != pipeline.revision)
        {
            tracing::warn!(
                build = build.id,
                pipeline = %pipeline.name,
                matched,
                runs = %pipeline.revision,
                "the build was matched with another revision of the pipeline; running this runner's"
            );
            let _ = log
                .line(&format!(
                    "==> pipeline {}: this build was matched with revision {matched}; this \
                     runner has revision {} and runs its own",
                    pipeline.name, pipeline.revision
                ))
                .await;
        }
        // A rebuild from the failed step starts there only while the
        // pipeline still has the same steps up to it; else every step runs.
        let resume = match resume {
            Some(r) if r.fits(pipeline.steps.iter().map(|s| s.name.as_str())) => {
                let _ = log
                    .line(&format!(
                        "==> starting at step {}: the steps before it are not run, and \
                         the files they made are not in this fresh checkout",
                        r.from_name
                    ))
                    .await;
                Some(r)
            }
            Some(r) => {
                let _ = log
                    .line(&format!(
                        "==> the pipeline's steps changed since this rebuild was asked for; \
                         every step runs, not only from {}",
                        r.from_name
                    ))
                    .await;
                None
            }
            None => None,
        };
        // Recording the steps overlaps the fetch; it completes before any
        // step starts.
        let record_steps = async {
            if let Some(store) = store {
                let names: Vec<String> = pipeline.steps.iter().map(|s| s.name.clone()).collect();
                let recorded = match resume {
                    Some(r) => store.plan_steps(build.id, r.plan(names)).await,
                    None => store.set_steps(build.id, names).await,
                };
                if let Err(e) = recorded {
                    tracing::error!(build = build.id, error = %e, "cannot record the steps");
                }
            }
        };
        let workspace = self.workspace(build.id);
        let ended = match source {
            Source::Workdir(dir) => {
                record_steps.await;
                let home = workspace.join("home");
                match prepare_home(&home, &build.message) {
                    Ok(()) => {
                        let ctx = StepContext {
                            build,
                            pipeline,
                            store,
                            deadline,
                            cancel,
                            stop,
                            resume,
                        };
                        let commit = build.commit_str().to_owned();
                        self.steps(&ctx, log, dir, &home, &commit, &mut summary)
                            .await
                    }
                    Err(e) => Ended::Finished(
                        BuildStatus::Error,
                        Some(format!("cannot create the build's home directory: {e}")),
                    ),
                }
            }
            Source::Checkout => {
                let ctx = StepContext {
                    build,
                    pipeline,
                    store,
                    deadline,
                    cancel,
                    stop,
                    resume,
                };
                self.checkout_and_run(&ctx, log, &workspace, &mut summary, record_steps)
                    .await
            }
        };
        // The checkout goes back to the mirror cache's pool for the next
        // build of the same repository (see `checkout::pool`), except when
        // the steps ran as another user (it is theirs now), a fork's pull
        // request ran in it (code nobody trusted: deleted, never handed to
        // the next build), the daemon is shutting down, or the pool is not
        // this data dir's (`hookci run` works in a scratch dir beside the
        // daemon's mirrors); the rest of the workspace (home/) is deleted.
        let src = workspace.join("src");
        let parked = matches!(source, Source::Checkout)
            && self.run_as.is_none()
            && !is_fork(build)
            && self.mirrors.pool_dir().parent() == Some(self.data_dir.as_path())
            && !matches!(ended, Ended::Requeue(_))
            && self.mirrors.park(&src);
        if !parked {
            self.mirrors.forget(&src);
        }
        if let Err(e) = remove_dir_all_if_exists(&workspace) {
            tracing::warn!(build = build.id, error = %e, "cannot remove the workspace");
        }
        let result = match &ended {
            Ended::Finished(status, Some(reason)) => format!("{status}: {reason}"),
            Ended::Finished(status, None) => status.to_string(),
            Ended::Requeue(reason) => format!("re-queued: {reason}"),
        };
        let _ = log
            .line(&format!(
                "==> build {} {result} in {}",
                build.id,
                crate::text::duration(started.elapsed())
            ))
            .await;
        (ended, summary)
    }

    async fn checkout_and_run(
        &self,
        ctx: &StepContext<'_>,
        log: &mut LogWriter,
        workspace: &Path,
        summary: &mut Vec<StepSummary>,
        record_steps: impl Future<Output = ()>,
    ) -> Ended {
        let StepContext {
            build,
            pipeline,
            deadline,
            cancel,
            stop,
            ..
        } = *ctx;
        let source =
            clone_spec(build, pipeline).and_then(|spec| fetch_source(build, pipeline, spec));
        let (spec, fetch_ref) = match source {
            Ok(spec) => spec,
            Err(why) => {
                let _ = log.line(&format!("==> {why}")).await;
                return Ended::Finished(BuildStatus::Error, Some(why));
            }
        };
        let _ = log
            .line(&format!(
                "==> fetching {}",
                super::checkout::display_url(&spec.url)
            ))
            .await;
        let fetch = async {
            tokio::select! {
                r = self.mirrors.fetch(&spec, &fetch_ref, build.commit_str()) => Ok(r),
                () = cancel.cancelled() => Err(self.stopped(stop, "cancelled while fetching")),
                () = sleep_until(deadline) => Err(timed_out(pipeline)),
            }
        };
        let (fetched, ()) = tokio::join!(fetch, record_steps);
        let fetched = match fetched {
            Ok(r) => r,
            Err(ended) => return ended,
        };
        let (mirror, commit) = match fetched {
            Ok(v) => v,
            Err(e) => {
                let mut why = format!("clone failed: {e}");
                if secrets_withheld(build, pipeline)
                    && (pipeline.clone.token.is_some() || pipeline.clone.ssh_key.is_some())
                {
                    why.push_str(
                        " (a pull request from a fork is fetched without the [clone] credentials \
                         unless [pull_requests] secrets_for_forks = true)",
                    );
                }
                let _ = log.line(&format!("==> {why}")).await;
                return Ended::Finished(BuildStatus::Error, Some(why));
            }
        };
        // A Gogs pull request names no commit: record the one its ref gave.
        if build.commit.is_none() && build.pull_request.is_some() {
            if let (Some(store), Ok(resolved)) = (ctx.store, commit.parse::<CommitId>()) {
                let _ = store
                    .retried("the resolved commit", build.id, || {
                        store.resolve_commit(build.id, resolved.clone())
                    })
                    .await;
            }
        }
        // A pull request's payload carries no commit message: the mirror has it.
        let with_message;
        let ctx = &if build.pull_request.is_some() && build.message.is_empty() {
            let message = self
                .mirrors
                .commit_message(&mirror, &commit)
                .await
                .unwrap_or_default();
            with_message = Build {
                push: crate::model::PushEvent {
                    message,
                    ..build.push.clone()
                },
                ..build.clone()
            };
            StepContext {
                build: &with_message,
                ..*ctx
            }
        } else {
            *ctx
        };
        let build = ctx.build;
        if !build.path_filters.is_empty() {
            let changed = if build.pull_request.is_some() {
                self.mirrors
                    .changed_files_since_merge_base(&mirror, build.before.as_str(), &commit)
                    .await
            } else {
                self.mirrors
                    .changed_files(&mirror, build.before.as_str(), &commit)
                    .await
            };
            match changed {
                Ok(Some(files)) => {
                    let refs: Vec<&str> = files.iter().map(String::as_str).collect();
                    if !build
                        .path_filters
                        .iter()
                        .any(|f: &PathFilter| f.accepts(&refs))
                    {
                        let reason = format!(
                            "no changed file matches the trigger's paths ({} files changed)",
                            files.len()
                        );
                        let _ = log.line(&format!("==> skipped: {reason}")).await;
                        return Ended::Finished(BuildStatus::Skipped, Some(reason));
                    }
                }
                Ok(None) => {} // a new ref, or `before` unknown: build
                Err(e) => {
                    let _ = log
                        .line(&format!(
                            "==> cannot list the changed files ({e}); building anyway"
                        ))
                        .await;
                }
            }
        }
        if let Err(e) = remove_dir_all_if_exists(workspace) {
            return Ended::Finished(
                BuildStatus::Error,
                Some(format!("cannot clear the workspace: {e}")),
            );
        }
        let src = workspace.join("src");
        let home = workspace.join("home");
        if let Err(e) =
            std::fs::create_dir_all(workspace).and_then(|()| prepare_home(&home, &build.message))
        {
            return Ended::Finished(
                BuildStatus::Error,
                Some(format!("cannot create the workspace: {e}")),
            );
        }
        let _ = log.line(&format!("==> checking out {commit}")).await;
        let checked_out = tokio::select! {
            r = self.mirrors.checkout(&mirror, &spec, &commit, &src) => r,
            () = cancel.cancelled() => return self.stopped(stop, "cancelled while checking out"),
        };
        if let Err(e) = checked_out {
            let _ = log.line(&format!("==> checkout failed: {e}")).await;
            return Ended::Finished(BuildStatus::Error, Some(format!("checkout failed: {e}")));
        }
        if let Some((uid, gid)) = self.run_as {
            if let Err(e) = super::step::chown_tree(workspace, uid, gid) {
                return Ended::Finished(
                    BuildStatus::Error,
                    Some(format!("cannot give the workspace to the build user: {e}")),
                );
            }
        }
        self.steps(ctx, log, &src, &home, &commit, summary).await
    }

    /// Runs the steps in `cwd`. `commit` is the full id of what was checked
    /// out (the tagged commit for an annotated tag).
    async fn steps(
        &self,
        ctx: &StepContext<'_>,
        log: &mut LogWriter,
        cwd: &Path,
        home: &Path,
        commit: &str,
        summary: &mut Vec<StepSummary>,
    ) -> Ended {
        let StepContext {
            build,
            pipeline,
            store,
            deadline,
            cancel,
            stop,
            resume,
        } = *ctx;
        let base = self.environment(build, pipeline, commit, cwd, home);
        let mut keys = pipeline.sandbox.over(&self.sandbox.keys);
        let limits = pipeline.limits.over(&self.sandbox.limits);
        let probe = super::sandbox::probe(self.run_as);
        // A fork's pull request runs sandboxed wherever a sandbox exists,
        // whatever the pipeline says (where none exists it waited for an
        // admin's approval, see `matcher::decide_pull_request`), and may
        // not write where other builds read (a shared cache it could
        // poison): its `read_write` paths are bound read-only.
        if is_fork(build) && probe.is_ok() {
            keys.enabled = Some(crate::pipeline::sandbox::Enabled::On);
            if let Some(shared) = keys.read_write.take() {
                keys.read_only.get_or_insert_with(Vec::new).extend(shared);
            }
        }
        let decision = super::sandbox::decide(&keys, &probe, |bwrap| {
            let masks = self.sandbox.masks_for(pipeline);
            super::sandbox::Plan::new(bwrap, &keys, cwd, Some(home), masks)
        });
        let sandbox = match decision {
            super::sandbox::Decision::Sandboxed(args) => Some(args),
            super::sandbox::Decision::Unsandboxed => None,
            super::sandbox::Decision::Refused(why) => {
                let _ = log.line(&format!("==> {why}")).await;
                return Ended::Finished(BuildStatus::Error, Some(why));
            }
        };
        let mut failed: Option<String> = None;
        for (idx, step) in pipeline.steps.iter().enumerate() {
            if failed.is_some() {
                break;
            }
            // Its own section on the page, saying why it did not run.
            if let Some(why) = resume.and_then(|r| r.skipped.get(idx)) {
                let _ = log
                    .line(&format!("==> step {}: skipped, {}", step.name, why.reason))
                    .await;
                summary.push(StepSummary {
                    name: step.name.clone(),
                    status: StepStatus::Skipped,
                    outcome: why.reason.clone(),
                    duration: Duration::ZERO,
                });
                continue;
            }
            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let (timeout, build_limit) = match (step.timeout, remaining) {
                (Some(s), Some(r)) if r < s => (Some(r), true),
                (Some(s), _) => (Some(s), false),
                (None, Some(r)) => (Some(r), true),
                (None, None) => (None, false),
            };
            let mut env = base.clone();
            env.extend(step.env.iter().map(|(k, v)| (k.clone(), v.clone())));
            let spec = StepSpec {
                name: step.name.clone(),
                script: step.run.clone(),
                shell: step.shell,
                cwd: cwd.to_path_buf(),
                env: dedup_env(env),
                timeout,
                user: self.run_as,
                kill_grace: self.kill_grace,
                sandbox: sandbox.clone(),
                limits: limits.clone(),
            };
            let first_line = step.run.lines().next().unwrap_or("");
            let _ = log
                .line(&format!("==> step {}: {first_line}", step.name))
                .await;
            let began = Instant::now();
            // The step starts while its state is recorded; it is finished
            // only after both, so the store sees running before its end.
            let mark_started = async {
                if let Some(store) = store {
                    let _ = store
                        .retried("a step's start", build.id, || {
                            store.step_started(build.id, idx)
                        })
                        .await;
                }
            };
            let ((), outcome) = tokio::join!(mark_started, run_step(&spec, log, cancel));
            let status = match &outcome {
                o if o.succeeded() => StepStatus::Success,
                StepOutcome::Cancelled => StepStatus::Cancelled,
                StepOutcome::Exited(_)
                | StepOutcome::Signalled(_)
                | StepOutcome::TimedOut(_)
                | StepOutcome::SpawnFailed(_)
                | StepOutcome::OutOfMemory(_) => StepStatus::Failure,
            };
            let exit_code = match outcome {
                StepOutcome::Exited(code) => Some(code),
                _ => None,
            };
            let _ = log
                .line(&format!(
                    "==> step {} {outcome} in {}",
                    step.name,
                    crate::text::duration(began.elapsed())
                ))
                .await;
            if let Some(store) = store {
                let _ = store
                    .retried("a step's end", build.id, || {
                        store.step_finished(build.id, idx, status, exit_code)
                    })
                    .await;
            }
            summary.push(StepSummary {
                name: step.name.clone(),
                status,
                outcome: outcome.to_string(),
                duration: began.elapsed(),
            });
            match outcome {
                o if o.succeeded() => {}
                StepOutcome::Cancelled => return self.stopped(stop, "cancelled"),
                StepOutcome::TimedOut(_) if build_limit => return timed_out(pipeline),
                other => {
                    if step.allow_failure {
                        let _ = log
                            .line(&format!(
                                "==> step {} is allowed to fail; going on",
                                step.name
                            ))
                            .await;
                    } else {
                        failed = Some(format!("step {} {other}", step.name));
                    }
                }
            }
        }
        match failed {
            Some(reason) => Ended::Finished(BuildStatus::Failure, Some(reason)),
            None => Ended::Finished(BuildStatus::Success, None),
        }
    }

    fn stopped(&self, stop: &StopSlot, fallback: &str) -> Ended {
        let reason = stop.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match reason {
            Some(StopReason::Shutdown) => {
                Ended::Requeue("the daemon shut down while it ran".into())
            }
            Some(StopReason::Cancel(reason)) => {
                Ended::Finished(BuildStatus::Cancelled, Some(reason))
            }
            None => Ended::Finished(BuildStatus::Cancelled, Some(fallback.to_owned())),
        }
    }

    /// The environment of SPEC.md section 6, before the step's own `env`.
    fn environment(
        &self,
        build: &Build,
        pipeline: &Pipeline,
        commit: &str,
        cwd: &Path,
        home: &Path,
    ) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), DEFAULT_PATH.into()),
            ("LANG".into(), "C.UTF-8".into()),
            ("HOME".into(), home.display().to_string()),
            ("CI".into(), "true".into()),
            ("HOOKCI".into(), "true".into()),
            ("HOOKCI_BUILD_ID".into(), build.id.to_string()),
            (
                "HOOKCI_BUILD_URL".into(),
                format!("{}/builds/{}", self.public_url, build.id),
            ),
            ("HOOKCI_PIPELINE".into(), pipeline.name.clone()),
            ("HOOKCI_REPO".into(), capped(&build.repo)),
            ("HOOKCI_EVENT".into(), build.event_name().to_owned()),
            ("HOOKCI_REF".into(), capped(&build.git_ref)),
        ];
        if let Some(b) = build.branch() {
            env.push(("HOOKCI_BRANCH".into(), capped(b)));
        }
        if let Some(t) = build.tag() {
            env.push(("HOOKCI_TAG".into(), capped(t)));
        }
        env.extend([
            ("HOOKCI_COMMIT".into(), commit.to_owned()),
            ("HOOKCI_COMMIT_BEFORE".into(), build.before.to_string()),
            ("HOOKCI_COMMIT_MESSAGE".into(), capped(&build.message)),
            (
                "HOOKCI_COMMIT_MESSAGE_FILE".into(),
                message_file(home).display().to_string(),
            ),
            ("HOOKCI_PUSHER".into(), capped(&build.pusher)),
            (
                "HOOKCI_DELIVERY".into(),
                capped(build.delivery.as_deref().unwrap_or_default()),
            ),
            ("HOOKCI_WORKSPACE".into(), cwd.display().to_string()),
        ]);
        if let Some(pr) = &build.pull_request {
            env.extend([
                ("HOOKCI_PR_NUMBER".into(), pr.number.to_string()),
                ("HOOKCI_PR_TITLE".into(), capped(&pr.title)),
                ("HOOKCI_PR_AUTHOR".into(), capped(&pr.author)),
                ("HOOKCI_PR_BASE_BRANCH".into(), capped(&pr.base_branch)),
                ("HOOKCI_PR_HEAD_BRANCH".into(), capped(&pr.head_branch)),
                ("HOOKCI_PR_HEAD_REPO".into(), capped(&pr.head_repo)),
                ("HOOKCI_PR_FORK".into(), pr.fork.to_string()),
            ]);
        }
        env.extend(pipeline.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        if !secrets_withheld(build, pipeline) {
            env.extend(
                pipeline
                    .secrets
                    .iter()
                    .map(|(k, v)| (k.clone(), v.expose().to_owned())),
            );
        }
        env
    }
}

/// One build to run, and what it answers to.
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    /// The build (its id, ref, commit, and the push's values).
    pub build: &'a Build,
    /// Its pipeline.
    pub pipeline: &'a Pipeline,
    /// Where step states are recorded (`None` for `hookci run`).
    pub store: Option<&'a Store>,
    /// A fresh checkout, or a directory as it is.
    pub source: Source<'a>,
    /// Fires on cancel or shutdown.
    pub cancel: &'a CancellationToken,
    /// Why it fired, set before it does.
    pub stop: &'a StopSlot,
    /// A rebuild from the failed step: where it starts.
    pub resume: Option<&'a Resume>,
}

/// What every step of one build shares.
#[derive(Clone, Copy)]
struct StepContext<'a> {
    build: &'a Build,
    pipeline: &'a Pipeline,
    store: Option<&'a Store>,
    deadline: Option<Instant>,
    cancel: &'a CancellationToken,
    stop: &'a StopSlot,
    resume: Option<&'a Resume>,
}

/// The clone URL and credentials: the pipeline's `clone_url`, else the
/// payload's ssh URL when a deploy key is set, else its https URL. A
/// payload's URL is used only when it is https or ssh on the host the
/// pipeline's `host` implies; the error says why not, in one sentence.
///
/// A fork's pull request (unless `secrets_for_forks`) fetches with no
/// credentials at all.
pub fn clone_spec(build: &Build, pipeline: &Pipeline) -> Result<CloneSpec, String> {
    let mut spec = clone_spec_from(pipeline, &build.clone_url, build.ssh_url.as_deref())?;
    if secrets_withheld(build, pipeline) {
        spec.ssh_key = None;
        spec.token = None;
    }
    Ok(spec)
}

/// Where the build's commit is fetched from, and by which ref: the build's
/// ref from `spec`'s repository, except for a host with no pull refs in the
/// base repository (Bitbucket Cloud, `head_clone_url` set): there the head
/// branch, from the base repository for a branch of it, else from the
/// fork's URL (a payload's URL: allowed only as for a push's, and never
/// with a credential, whatever `secrets_for_forks` says).
pub fn fetch_source(
    build: &Build,
    pipeline: &Pipeline,
    spec: CloneSpec,
) -> Result<(CloneSpec, String), String> {
    let Some(pr) = &build.pull_request else {
        return Ok((spec, build.git_ref.clone()));
    };
    let Some(head_url) = &pr.head_clone_url else {
        return Ok((spec, build.git_ref.clone()));
    };
    let head_ref = format!("refs/heads/{}", pr.head_branch);
    if !pr.fork {
        return Ok((spec, head_ref));
    }
    super::checkout::check_payload_url(head_url, public_host(pipeline.host))?;
    Ok((
        CloneSpec {
            url: head_url.clone(),
            ssh_key: None,
            token: None,
            ..spec
        },
        head_ref,
    ))
}

/// True for a pull request from a fork.
pub fn is_fork(build: &Build) -> bool {
    build.pull_request.as_ref().is_some_and(|pr| pr.fork)
}

/// True when a build's steps get no `[secrets]` and its fetch no `[clone]`
/// credentials: a fork's pull request, unless `secrets_for_forks = true`.
pub fn secrets_withheld(build: &Build, pipeline: &Pipeline) -> bool {
    is_fork(build) && !pipeline.pull_requests.secrets_for_forks
}

/// [`clone_spec`] from a payload's clone URLs.
pub fn clone_spec_from(
    pipeline: &Pipeline,
    clone_url: &str,
    ssh_url: Option<&str>,
) -> Result<CloneSpec, String> {
    let url = match (&pipeline.clone_url, &pipeline.clone.ssh_key, ssh_url) {
        (Some(url), _, _) => url.clone(),
        (None, Some(_), Some(ssh)) if !ssh.is_empty() => ssh.to_owned(),
        _ => clone_url.to_owned(),
    };
    if pipeline.clone_url.is_none() {
        if url.trim().is_empty() {
            return Err("the payload has no clone URL; set clone_url in the pipeline".into());
        }
        super::checkout::check_payload_url(&url, public_host(pipeline.host))?;
    }
    Ok(CloneSpec {
        url,
        ssh_key: pipeline.clone.ssh_key.clone(),
        token: pipeline.clone.token.clone(),
        submodules: pipeline.clone.submodules,
        accept_new_host_keys: pipeline.clone.accept_new_host_keys,
    })
}

/// The public host a pinned `host` implies, whose payload clone URLs a
/// pipeline without `clone_url` may fetch; self-hosted kinds imply none.
fn public_host(host: Option<crate::webhook::Host>) -> Option<&'static str> {
    use crate::webhook::Host;
    match host? {
        Host::Github => Some("github.com"),
        Host::Gitlab => Some("gitlab.com"),
        Host::Bitbucket => Some("bitbucket.org"),
        Host::Gitea | Host::Forgejo | Host::Gogs | Host::BitbucketServer | Host::Generic => None,
    }
}

/// A later entry replaces an earlier one of the same name, in place.
fn dedup_env(env: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(env.len());
    for (k, v) in env {
        match out.iter_mut().find(|(name, _)| *name == k) {
            Some(slot) => slot.1 = v,
            None => out.push((k, v)),
        }
    }
    out
}

fn timed_out(pipeline: &Pipeline) -> Ended {
    let limit = pipeline.timeout.map_or_else(String::new, |t| {
        format!(" after {}", humantime::format_duration(t))
    });
    Ended::Finished(BuildStatus::Failure, Some(format!("timed out{limit}")))
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Creates the build's HOME and writes the whole commit message in it
/// (`HOOKCI_COMMIT_MESSAGE_FILE`): the environment carries at most
/// [`MAX_ENV_VALUE`] bytes of it.
fn prepare_home(home: &Path, message: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(home)?;
    std::fs::write(message_file(home), message)
}

/// Where the whole commit message is: `.hookci-commit-message` in the
/// build's HOME, which a sandboxed step sees (the workspace around `home/`
/// and `src/` is hookci's, masked).
fn message_file(home: &Path) -> PathBuf {
    home.join(".hookci-commit-message")
}

/// The most bytes of one payload value (message, ref, pusher, ...) given to
/// a step in its environment: Linux refuses any one environment string
/// over 128 KiB (`MAX_ARG_STRLEN`), and then no step could start.
pub const MAX_ENV_VALUE: usize = 64 * 1024;

/// The marker ending a value cut at [`MAX_ENV_VALUE`].
pub const TRUNCATED_MARKER: &str =
    "\n[truncated by hookci; the whole commit message is in $HOOKCI_COMMIT_MESSAGE_FILE]";

/// `value` as a step's environment gets it: whole when it fits in
/// [`MAX_ENV_VALUE`] bytes, else cut on a character boundary and ended by
/// [`TRUNCATED_MARKER`], the whole at most [`MAX_ENV_VALUE`] bytes.
pub fn capped(value: &str) -> String {
    if value.len() <= MAX_ENV_VALUE {
        return value.to_owned();
    }
    let mut cut = MAX_ENV_VALUE - TRUNCATED_MARKER.len();
    while !value.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{TRUNCATED_MARKER}", &value[..cut])
}

fn remove_dir_all_if_exists(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PullRequest, PushEvent, RefKind};

    fn pipeline(extra: &str) -> Pipeline {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            format!(
                "repo = \"team/app\"\nhost = \"bitbucket\"\nsecret = \"s\"\n\
                 clone_url = \"https://bitbucket.org/team/app.git\"\n{extra}\n\
                 [[steps]]\nname = \"t\"\nrun = \"true\"\n"
            ),
        )
        .unwrap();
        crate::pipeline::load_file(&path).unwrap().0
    }

    fn build(fork: bool, head_clone_url: Option<&str>) -> Build {
        Build {
            id: 1,
            pipeline: "p".into(),
            push: PushEvent {
                repo: "team/app".into(),
                git_ref: "refs/pull-requests/3/from".into(),
                kind: RefKind::Other,
                before: CommitId::ZERO,
                after: "a".repeat(12).parse().unwrap(),
                commit: Some("a".repeat(12).parse().unwrap()),
                created: false,
                deleted: false,
                forced: false,
                clone_url: "https://bitbucket.org/team/app.git".into(),
                ssh_url: None,
                web_url: None,
                message: String::new(),
                pusher: "m".into(),
                pull_request: Some(PullRequest {
                    number: 3,
                    head_branch: "feature".into(),
                    base_branch: "main".into(),
                    head_repo: if fork { "mallory/app" } else { "team/app" }.into(),
                    fork,
                    head_clone_url: head_clone_url.map(str::to_owned),
                    ..PullRequest::default()
                }),
            },
            host: Some("bitbucket".into()),
            status: BuildStatus::Running,
            reason: None,
            delivery: None,
            attempt: 1,
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            started_at: None,
            finished_at: None,
            path_filters: Vec::new(),
            node: None,
            pipeline_revision: None,
        }
    }

    fn source(b: &Build, p: &Pipeline) -> Result<(CloneSpec, String), String> {
        clone_spec(b, p).and_then(|spec| fetch_source(b, p, spec))
    }

    #[test]
    fn a_bitbucket_cloud_fork_is_fetched_from_its_own_url_without_credentials() {
        let p = pipeline("[clone]\ntoken = \"t0k\"");
        // A branch of the base repository: the pipeline's URL and token.
        let own = build(false, Some("https://bitbucket.org/team/app.git"));
        let (spec, git_ref) = source(&own, &p).unwrap();
        assert_eq!(spec.url, "https://bitbucket.org/team/app.git");
        assert!(spec.token.is_some());
        assert_eq!(git_ref, "refs/heads/feature");
        // A fork: its own URL, no token.
        let fork = build(true, Some("https://bitbucket.org/mallory/app.git"));
        let (spec, git_ref) = source(&fork, &p).unwrap();
        assert_eq!(spec.url, "https://bitbucket.org/mallory/app.git");
        assert!(spec.token.is_none() && spec.ssh_key.is_none());
        assert_eq!(git_ref, "refs/heads/feature");
        // Even with secrets_for_forks, a fork's URL gets no credential.
        let open = pipeline("[clone]\ntoken = \"t0k\"\n[pull_requests]\nsecrets_for_forks = true");
        let (spec, _) = source(&fork, &open).unwrap();
        assert!(spec.token.is_none());
        // A fork's URL must be https or ssh on the pipeline's public host.
        for url in [
            "file:///etc",
            "https://evil.example/mallory/app.git",
            "--upload-pack=x",
        ] {
            assert!(source(&build(true, Some(url)), &p).is_err(), "{url}");
        }
        // Hosts with pull refs fetch the build's ref from the pipeline's URL.
        let (spec, git_ref) = source(&build(true, None), &p).unwrap();
        assert_eq!(spec.url, "https://bitbucket.org/team/app.git");
        assert!(spec.token.is_none(), "a fork's fetch gets no token");
        assert_eq!(git_ref, "refs/pull-requests/3/from");
    }
}
