//! Runners made visible (issue 13): each runner process keeps a row in the
//! store ([`keep_presence`]), and a queued build says why it waits
//! ([`waiting_reason`], pure, from those rows and the builds ahead of it).

use crate::model::{Build, BuildStatus};
use crate::store::{RunnerInfo, RunnerRecord, Store, StoreError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a runner refreshes its row: a third of its lease (the lease
/// heartbeat's period), at least half a second.
pub fn heartbeat(store: &Store) -> Duration {
    (store.lease() / 3).max(Duration::from_millis(500))
}

/// What this process registers as: `store`'s runner id, `node`, `role`,
/// `labels` and `max_parallel_builds`.
pub fn info(store: &Store, role: &str, labels: &[String], max_parallel: usize) -> RunnerInfo {
    let runner_id = store.runner_id().to_owned();
    RunnerInfo {
        node: runner_id
            .rsplit_once('/')
            .map_or(runner_id.as_str(), |(node, _)| node)
            .to_owned(),
        runner_id,
        role: role.to_owned(),
        labels: labels.to_vec(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        max_parallel: i64::try_from(max_parallel).unwrap_or(i64::MAX),
        heartbeat_ms: heartbeat(store).as_millis() as i64,
    }
}

/// Registers this runner process in the store, refreshes its row every
/// [`heartbeat`] until `stop`, then removes it (a clean stop). A runner
/// that dies keeps its row until it is shown gone, then forgotten. On a
/// store only this process opens (SQLite), every other row is a process
/// that died: they are forgotten first.
pub async fn keep_presence(store: Store, info: RunnerInfo, stop: CancellationToken) {
    if !store.shared() {
        if let Err(e) = store.forget_runners(0).await {
            tracing::warn!(error = %e, "cannot forget the runners of earlier starts");
        }
    }
    let period = heartbeat(&store);
    let mut failing = false;
    loop {
        match store.runner_seen(info.clone()).await {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot refresh this runner's row in the store");
            }
            Err(_) => {}
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(period) => {}
        }
    }
    if let Err(e) = store.runner_gone(&info.runner_id).await {
        tracing::warn!(error = %e, "cannot remove this runner's row from the store");
    }
}

/// What a queued build waits for, computed from the rows: `runs_on` and
/// `serial` are its pipeline's (`serial`: one build per ref at a time),
/// `runners` every registered runner, `ahead` the build of its ref that
/// holds it back (a running one, else an older queued one), if any.
/// `None` for a build that does not wait (SPEC is silent on this).
pub fn waiting_reason(
    build: &Build,
    runs_on: &[String],
    serial: bool,
    runners: &[RunnerRecord],
    ahead: Option<(i64, BuildStatus)>,
) -> Option<String> {
    match build.status {
        BuildStatus::Waiting => {
            return Some("an admin must approve it (a pull request from a fork)".to_owned());
        }
        BuildStatus::Queued => {}
        _ => return None,
    }
    let mut labels: Vec<&str> = runs_on.iter().map(String::as_str).collect();
    labels.sort_unstable();
    labels.dedup();
    let fits =
        |r: &&RunnerRecord| !r.gone && labels.iter().all(|l| r.labels.iter().any(|x| x == l));
    let online: Vec<&RunnerRecord> = runners.iter().filter(fits).collect();
    if online.is_empty() {
        return Some(if labels.is_empty() {
            "no runner is online".to_owned()
        } else {
            format!("no runner online has labels {}", labels.join(", "))
        });
    }
    let able: Vec<&RunnerRecord> = online
        .iter()
        .copied()
        .filter(|r| r.max_parallel_builds > 0)
        .collect();
    if able.is_empty() {
        return Some(
            "every runner online that could take it runs no builds (max_parallel_builds = 0)"
                .to_owned(),
        );
    }
    if serial && let Some((id, status)) = ahead {
        let what = match (build.branch(), build.tag()) {
            (Some(b), _) => format!("branch {b}"),
            (None, Some(t)) => format!("tag {t}"),
            (None, None) => build.git_ref.clone(),
        };
        return Some(format!(
            "build #{id} of {what} is {status} before it: one build of a branch at a time"
        ));
    }
    let (running, slots) = able.iter().fold((0, 0), |(n, m), r| {
        (
            n + r.running.min(r.max_parallel_builds),
            m + r.max_parallel_builds,
        )
    });
    if running >= slots {
        let runners = if able.len() == 1 { "runner" } else { "runners" };
        return Some(format!(
            "every runner that can take it is busy ({running} of {slots} builds running on {} {runners})",
            able.len()
        ));
    }
    Some("a runner is about to claim it".to_owned())
}

/// [`waiting_reason`] for `build` as the store and the pipelines being
/// served see it now: the runners' rows, and the build of its ref ahead of
/// it. `None` without a read for a build that is not waiting or queued.
pub async fn waiting_reason_now(
    store: &Store,
    pipelines: &std::collections::BTreeMap<String, crate::pipeline::Pipeline>,
    build: &Build,
) -> Result<Option<String>, StoreError> {
    if !matches!(build.status, BuildStatus::Waiting | BuildStatus::Queued) {
        return Ok(None);
    }
    let pipeline = pipelines.get(&build.pipeline);
    let runs_on = pipeline.map(|p| p.runs_on.as_slice()).unwrap_or_default();
    let serial = pipeline.is_none_or(|p| p.concurrency != crate::pipeline::Concurrency::Parallel);
    let runners = store.runners().await?;
    let ahead = if serial && build.status == BuildStatus::Queued {
        ahead_of(store, build).await?
    } else {
        None
    };
    Ok(waiting_reason(build, runs_on, serial, &runners, ahead))
}

/// The build of `build`'s pipeline and ref that holds it back: a running
/// one, else the nearest older queued one.
async fn ahead_of(store: &Store, build: &Build) -> Result<Option<(i64, BuildStatus)>, StoreError> {
    let of_ref = |statuses: Vec<BuildStatus>, before: Option<i64>| crate::store::BuildFilter {
        pipeline: Some(build.pipeline.clone()),
        git_ref: Some(build.git_ref.clone()),
        statuses,
        before,
        limit: 1,
        ..Default::default()
    };
    let running = store
        .builds(of_ref(vec![BuildStatus::Running], None))
        .await?;
    if let Some(b) = running.first() {
        return Ok(Some((b.id, b.status)));
    }
    let older = store
        .builds(of_ref(vec![BuildStatus::Queued], Some(build.id)))
        .await?;
    Ok(older.first().map(|b| (b.id, b.status)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CommitId, PushEvent, RefKind};
    use time::OffsetDateTime;

    fn build(status: BuildStatus) -> Build {
        Build {
            id: 9,
            pipeline: "p".into(),
            push: PushEvent {
                repo: "o/r".into(),
                git_ref: "refs/heads/main".into(),
                kind: RefKind::Branch("main".into()),
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

    fn runner(labels: &[&str], max: i64, running: i64, gone: bool) -> RunnerRecord {
        RunnerRecord {
            id: "n/1".into(),
            node: "n".into(),
            role: "runner".into(),
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            version: "0".into(),
            max_parallel_builds: max,
            running,
            started_at: OffsetDateTime::UNIX_EPOCH,
            last_seen_at: OffsetDateTime::UNIX_EPOCH,
            gone,
        }
    }

    fn labels(l: &[&str]) -> Vec<String> {
        l.iter().map(|l| (*l).to_owned()).collect()
    }

    #[test]
    fn a_queued_build_says_why_it_waits_from_the_rows() {
        let queued = build(BuildStatus::Queued);
        let gpu = labels(&["linux", "gpu"]);
        let why = |runs_on: &[String], serial, runners: &[RunnerRecord], ahead| {
            waiting_reason(&queued, runs_on, serial, runners, ahead).unwrap()
        };
        // No runner with every label: labels sorted, gone ones not counted.
        let linux = [
            runner(&["linux"], 2, 0, false),
            runner(&["gpu", "linux"], 2, 0, true),
        ];
        assert_eq!(
            why(&gpu, true, &linux, None),
            "no runner online has labels gpu, linux"
        );
        assert_eq!(why(&[], true, &[], None), "no runner is online");
        let idle = [runner(&["gpu", "linux", "x"], 0, 0, false)];
        assert!(why(&gpu, true, &idle, None).contains("max_parallel_builds = 0"));
        // Behind a build of its branch, before being busy.
        let busy = [
            runner(&["gpu", "linux"], 2, 2, false),
            runner(&["linux"], 4, 0, false),
        ];
        assert_eq!(
            why(&gpu, true, &busy, Some((7, BuildStatus::Running))),
            "build #7 of branch main is running before it: one build of a branch at a time"
        );
        // A parallel pipeline waits for no build of its branch.
        assert_eq!(
            why(&gpu, false, &busy, Some((7, BuildStatus::Running))),
            "every runner that can take it is busy (2 of 2 builds running on 1 runner)"
        );
        let free = [runner(&["gpu", "linux"], 2, 1, false)];
        assert_eq!(
            why(&gpu, true, &free, None),
            "a runner is about to claim it"
        );
    }

    #[test]
    fn only_waiting_and_queued_builds_wait() {
        let runners = [runner(&[], 1, 0, false)];
        let waiting = waiting_reason(&build(BuildStatus::Waiting), &[], true, &runners, None);
        assert!(waiting.unwrap().contains("approve"));
        for status in [
            BuildStatus::Running,
            BuildStatus::Success,
            BuildStatus::Cancelled,
        ] {
            assert_eq!(waiting_reason(&build(status), &[], true, &[], None), None);
        }
    }
}
