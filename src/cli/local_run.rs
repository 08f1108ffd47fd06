//! `hookci run PIPELINE`: the daemon's runner in the foreground. Step output
//! streams to the terminal with step headers, then a summary of step
//! results and durations; exit 0 when the build succeeded, else 1.

use super::{Failure, load_config};
use crate::model::{CommitId, PushEvent, RefKind};
use crate::pipeline;
use crate::runner::build::{Ended, Job, Runner, Source, StopReason, StopSlot};
use crate::runner::checkout::{Mirrors, display_url};
use crate::runner::log::LogWriter;
use crate::store::{Build, BuildStatus, StepStatus};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Runs `name` once in the foreground.
pub fn run(
    config: Option<PathBuf>,
    name: &str,
    git_ref: Option<String>,
    commit: Option<String>,
    workdir: Option<PathBuf>,
) -> Result<ExitCode, Failure> {
    crate::runner::private_dirs::set_umask();
    crate::runner::sandbox::no_dumping();
    let config = load_config(config)?;
    let pipeline = pipeline::load_file(&config.pipelines_dir.join(format!("{name}.toml")))
        .map_err(|findings| {
            let first = findings.first().map_or_else(
                || format!("cannot load pipeline {name}"),
                ToString::to_string,
            );
            Failure::usage(first)
        })?
        .0;
    let workdir = match workdir {
        Some(dir) => Some(
            std::fs::canonicalize(&dir)
                .ok()
                .filter(|d| d.is_dir())
                .ok_or_else(|| Failure::usage(format!("{} is not a directory", dir.display())))?,
        ),
        None => None,
    };
    if workdir.is_none() && git_ref.is_none() && commit.is_none() {
        return Err(Failure::usage(
            "say what to build: --branch B, --tag T, --ref R or --commit SHA (or run in a work tree with --workdir DIR)",
        ));
    }
    if workdir.is_none() && pipeline.clone_url.is_none() {
        return Err(Failure::usage(format!(
            "pipeline {name} has no clone_url to clone; set one, or pass --workdir DIR"
        )));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::usage(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async move {
        if let Err(e) = crate::runner::step::init_reaper() {
            tracing::warn!(error = %e, "cannot become the subreaper of build processes");
        }
        let scratch = tempfile::Builder::new()
            .prefix("hookci-run-")
            .tempdir()
            .map_err(|e| Failure::usage(format!("cannot create a temporary directory: {e}")))?;
        let mut runner = Runner::new(
            scratch.path().to_path_buf(),
            config.public_url.clone(),
            config.max_log_bytes,
        );
        // Reuse the daemon's mirror cache: only what is new is fetched.
        runner.mirrors = Mirrors::new(config.data_dir.join("repos"));
        runner.run_as =
            crate::runner::resolve_run_as(&config).map_err(|e| Failure::usage(format!("{e:#}")))?;
        runner.sandbox = crate::runner::sandbox::Setup::of_config(&config);
        crate::runner::sandbox::log_mode(&config, runner.run_as).await;

        let git_ref = git_ref.unwrap_or_else(|| {
            if workdir.is_some() {
                "refs/heads/local".into()
            } else {
                "HEAD".into()
            }
        });
        let head = workdir.as_deref().and_then(head_of);
        let commit =
            match (commit, &head) {
                (Some(c), _) => Some(c.parse::<CommitId>().map_err(|_| {
                    Failure::usage("--commit is not a commit id (4 to 64 hex digits)")
                })?),
                (None, Some((id, _))) => id.parse().ok(),
                (None, None) => None,
            };
        let mut build = local_build(&pipeline, &git_ref, commit);
        if let Some((_, message)) = head {
            build.push.message = message;
        }
        let secrets: Vec<_> = pipeline
            .secrets
            .values()
            .chain(pipeline.clone.token.iter())
            .chain(pipeline.clone.ssh_key.iter())
            .cloned()
            .collect();
        let log_path = scratch.path().join("build.log");
        let mut log = LogWriter::create(&log_path, &secrets, u64::MAX)
            .map_err(|e| Failure::usage(format!("cannot write the log: {e}")))?;
        log.echo_to_stdout(&secrets)
            .map_err(|e| Failure::usage(format!("cannot write to the terminal: {e}")))?;
        if workdir.is_none() {
            if let Some(url) = &pipeline.clone_url {
                tracing::info!(url = %display_url(url), git_ref = %git_ref, "cloning");
            }
        }
        let cancel = CancellationToken::new();
        let stop: StopSlot = Arc::default();
        let interrupt = {
            let (cancel, stop) = (cancel.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                super::shutdown_signal().await;
                *stop.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(StopReason::Cancel("interrupted".into()));
                cancel.cancel();
            })
        };
        let source = match &workdir {
            Some(dir) => Source::Workdir(dir),
            None => Source::Checkout,
        };
        let job = Job {
            build: &build,
            pipeline: &pipeline,
            store: None,
            source,
            cancel: &cancel,
            stop: &stop,
            resume: None,
        };
        let (ended, steps) = runner.run(job, &mut log).await;
        interrupt.abort();
        crate::runner::cgroup::release();
        let _ = log.finish().await;
        eprintln!();
        eprintln!("{:<24} {:<10} {:>10}  result", "step", "status", "time");
        for s in &steps {
            eprintln!(
                "{:<24} {:<10} {:>10}  {}",
                s.name,
                s.status.as_str(),
                crate::text::duration(s.duration),
                s.outcome
            );
        }
        for step in pipeline.steps.iter().skip(steps.len()) {
            eprintln!(
                "{:<24} {:<10} {:>10}",
                step.name,
                StepStatus::Skipped.as_str(),
                "-"
            );
        }
        let (status, reason) = match ended {
            Ended::Finished(status, reason) => (status, reason),
            Ended::Requeue(reason) => (BuildStatus::Cancelled, Some(reason)),
        };
        match &reason {
            Some(r) => eprintln!("build {status}: {r}"),
            None => eprintln!("build {status}"),
        }
        Ok(if status == BuildStatus::Success {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}

/// The commit a work tree's HEAD points to and its message, when it is a
/// git repository.
fn head_of(dir: &std::path::Path) -> Option<(String, String)> {
    let repo = git2::Repository::discover(dir).ok()?;
    let head = repo.head().ok()?.peel_to_commit().ok()?;
    Some((
        head.id().to_string(),
        head.message().unwrap_or("").trim_end().to_owned(),
    ))
}

/// A build record for a run that has no delivery and no store.
fn local_build(pipeline: &pipeline::Pipeline, git_ref: &str, commit: Option<CommitId>) -> Build {
    Build {
        id: 0,
        pipeline: pipeline.name.clone(),
        push: PushEvent {
            repo: pipeline.repo.clone(),
            git_ref: git_ref.into(),
            kind: RefKind::of(git_ref),
            before: CommitId::ZERO,
            after: commit.clone().unwrap_or(CommitId::ZERO),
            commit,
            created: true,
            deleted: false,
            forced: false,
            clone_url: pipeline.clone_url.clone().unwrap_or_default(),
            ssh_url: None,
            web_url: None,
            message: String::new(),
            pusher: std::env::var("USER").unwrap_or_default(),
            pull_request: None,
        },
        host: None,
        status: BuildStatus::Running,
        reason: None,
        delivery: None,
        attempt: 1,
        created_at: time::OffsetDateTime::now_utc(),
        started_at: None,
        finished_at: None,
        path_filters: Vec::new(),
        node: None,
        pipeline_revision: None,
    }
}
