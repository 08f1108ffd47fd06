//! The store contract, run through `Store` against every backend: queue,
//! claim order and fairness, supersede, cancel, redelivery, the outbox
//! (which state changes report, and in what order), pruning, steps, and
//! recovery after a crash.
//!
//! A backend joins by one line in [`backends`] (and a [`Fresh`] that makes
//! it an empty database). Nothing here speaks SQL.

use crate::pg;

use hookci::pipeline::PathFilter;
use hookci::secret::Secret;
use hookci::store::{
    ApproveOutcome, BuildFilter, BuildStatus, CancelOutcome, ClaimPolicy, CloseRef, LogChunk,
    NewBuild, NewDelivery, PgOptions, ReportOutcome, RunnerInfo, StepStatus, Store, StoreError,
    StoreOptions,
};
use hookci::webhook::{CommitId, Host, PullRequest, PushEvent, RefKind};
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

/// An empty database of one backend. `open` may be called again on it: a
/// restart of the daemon.
trait Fresh {
    fn open(&self, options: StoreOptions) -> Pin<Box<dyn Future<Output = Store> + '_>>;
}

/// SQLite: a file in a temp dir.
struct Sqlite(tempfile::TempDir);

impl Fresh for Sqlite {
    fn open(&self, options: StoreOptions) -> Pin<Box<dyn Future<Output = Store> + '_>> {
        let store =
            Store::open_sqlite(&self.0.path().join("hookci.db"), options).expect("open the store");
        Box::pin(async move { store })
    }
}

/// PostgreSQL: a schema of its own on the test server.
struct Postgres(pg::Schema);

impl Fresh for Postgres {
    fn open(&self, options: StoreOptions) -> Pin<Box<dyn Future<Output = Store> + '_>> {
        let pg = PgOptions {
            url: Secret::new(self.0.url.clone()),
            node: "conformance".to_owned(),
            pool_size: 4,
        };
        Box::pin(async move {
            Store::open_postgres(pg, options)
                .await
                .expect("open the store")
        })
    }
}

/// Every backend, each a fresh database.
async fn backends() -> Vec<(&'static str, Box<dyn Fresh>)> {
    let mut all: Vec<(&'static str, Box<dyn Fresh>)> = vec![(
        "sqlite",
        Box::new(Sqlite(tempfile::tempdir().expect("tempdir"))),
    )];
    if let Some(schema) = pg::Schema::create().await {
        all.push(("postgres", Box::new(Postgres(schema))));
    }
    all
}

fn options(max_queued_builds: u64) -> StoreOptions {
    StoreOptions { max_queued_builds }
}

/// Each backend, opened with room for a million queued builds.
async fn stores() -> Vec<(&'static str, Box<dyn Fresh>, Store)> {
    let mut out = Vec::new();
    for (name, db) in backends().await {
        let store = db.open(options(1_000_000)).await;
        out.push((name, db, store));
    }
    out
}

fn push(branch: &str, n: u64) -> PushEvent {
    let commit = format!("{n:040x}");
    PushEvent {
        repo: "acme/app".to_owned(),
        git_ref: format!("refs/heads/{branch}"),
        kind: RefKind::Branch(branch.to_owned()),
        before: CommitId::ZERO,
        after: commit.parse().unwrap(),
        commit: Some(commit.parse().unwrap()),
        created: false,
        deleted: false,
        forced: false,
        clone_url: "https://git.example/acme/app.git".to_owned(),
        ssh_url: None,
        web_url: None,
        message: "a change".to_owned(),
        pusher: "octocat".to_owned(),
        pull_request: None,
    }
}

static N: AtomicU64 = AtomicU64::new(1);

/// Queues `count` builds of `branch` for `pipeline`, in one write; their ids.
async fn queue(store: &Store, pipeline: &str, branch: &str, count: usize) -> Vec<i64> {
    let deliveries = (0..count)
        .map(|_| {
            let n = N.fetch_add(1, Ordering::Relaxed);
            NewDelivery {
                pipeline: pipeline.to_owned(),
                delivery_id: format!("delivery-{n}"),
                host: Host::Github,
                event: "push".to_owned(),
                builds: vec![NewBuild {
                    pipeline: pipeline.to_owned(),
                    push: push(branch, n),
                    path_filters: Vec::new(),
                    supersede: false,
                    waiting: false,
                    report_context: None,
                    pipeline_revision: None,
                }],
                skipped: None,
                body_sha256: None,
                close: None,
            }
        })
        .collect();
    store
        .record_deliveries(deliveries)
        .await
        .expect("record")
        .into_iter()
        .map(|r| r.build_ids[0])
        .collect()
}

fn policy(parallel: &[&str]) -> ClaimPolicy {
    ClaimPolicy {
        parallel: parallel
            .iter()
            .map(|p| (*p).to_owned())
            .collect::<HashSet<_>>(),
        elsewhere: HashSet::new(),
    }
}

async fn claim(store: &Store, policy: &ClaimPolicy) -> Option<(i64, String, String)> {
    store
        .claim_next(policy.clone())
        .await
        .expect("claim")
        .map(|b| {
            assert_eq!(b.status, BuildStatus::Running);
            assert!(b.started_at.is_some());
            (b.id, b.pipeline, b.push.git_ref)
        })
}

/// The review's case: a deep queue on one busy branch must not hide a build
/// of another branch that may run now. Before, a claim read only the oldest
/// 1,000 queued builds, and the `cold` build waited for the `hot` queue.
#[tokio::test]
async fn a_build_that_may_run_is_found_behind_a_deep_queue_of_a_busy_branch() {
    for (_name, _db, store) in stores().await {
        let p = policy(&[]);
        let hot = queue(&store, "app", "hot", 1_100).await;
        assert_eq!(claim(&store, &p).await.map(|c| c.0), Some(hot[0]));
        // The rest of `hot` waits behind its running build.
        assert_eq!(claim(&store, &p).await, None);
        let cold = queue(&store, "app", "cold", 1).await;
        assert_eq!(
            claim(&store, &p).await,
            Some((cold[0], "app".to_owned(), "refs/heads/cold".to_owned()))
        );
        // When `hot`'s build ends, its next one goes, oldest first.
        store
            .finish(hot[0], BuildStatus::Success, None)
            .await
            .expect("finish");
        assert_eq!(claim(&store, &p).await.map(|c| c.0), Some(hot[1]));
        assert_eq!(claim(&store, &p).await, None);
    }
}

/// Of one ref, builds run one at a time, oldest first; a parallel pipeline's
/// run side by side.
#[tokio::test]
async fn one_ref_runs_oldest_first_unless_its_pipeline_is_parallel() {
    for (_name, _db, store) in stores().await {
        let p = policy(&["wide"]);
        let serial = queue(&store, "app", "main", 3).await;
        let wide = queue(&store, "wide", "main", 3).await;
        let mut got = Vec::new();
        while let Some((id, _, _)) = claim(&store, &p).await {
            got.push(id);
        }
        // app's first; all three of wide; app's others wait.
        let mut want = vec![serial[0]];
        want.extend(&wide);
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
    }
}

/// A pipeline with a deep queue does not starve another: of the pipelines
/// with a build that may run, the one with the fewest running goes first.
#[tokio::test]
async fn a_deep_queue_does_not_starve_another_pipeline() {
    for (_name, _db, store) in stores().await {
        let p = policy(&["deep"]);
        let deep = queue(&store, "deep", "main", 50).await;
        let other = queue(&store, "other", "main", 2).await;
        // Both have none running: the older build goes first.
        assert_eq!(claim(&store, &p).await.map(|c| c.0), Some(deep[0]));
        // `deep` has one running, `other` none: `other` goes, though younger.
        assert_eq!(claim(&store, &p).await.map(|c| c.0), Some(other[0]));
        // One each: the oldest again (`other`'s next waits behind its ref).
        assert_eq!(claim(&store, &p).await.map(|c| c.0), Some(deep[1]));
        assert_eq!(claim(&store, &p).await.map(|c| c.0), Some(deep[2]));
        store
            .finish(other[0], BuildStatus::Failure, None)
            .await
            .expect("finish");
        // `other` has none running again, `deep` three.
        assert_eq!(claim(&store, &p).await.map(|c| c.0), Some(other[1]));
    }
}

/// A claim still finds the oldest free ref when every build in its first
/// look waits behind a running one, across many refs.
#[tokio::test]
async fn the_oldest_free_ref_wins_when_many_refs_are_queued() {
    for (_name, _db, store) in stores().await {
        let p = policy(&[]);
        let busy = queue(&store, "app", "busy", 200).await;
        assert_eq!(claim(&store, &p).await.map(|c| c.0), Some(busy[0]));
        let mut firsts = Vec::new();
        for branch in ["zeta", "alpha", "mid"] {
            firsts.push(queue(&store, "app", branch, 2).await[0]);
        }
        // In id order, not ref order: zeta was queued first.
        for want in firsts {
            assert_eq!(claim(&store, &p).await.map(|c| c.0), Some(want));
        }
        assert_eq!(claim(&store, &p).await, None);
    }
}

/// A runner takes no build of a pipeline it must leave to others (its
/// `runs_on` wants a label the runner lacks); those stay queued, in order,
/// for a runner that may take them.
#[tokio::test]
async fn a_runner_leaves_the_builds_of_pipelines_it_may_not_run_queued() {
    for (name, _db, store) in stores().await {
        let gpu = queue(&store, "gpu", "main", 2).await;
        let plain = queue(&store, "plain", "main", 1).await;
        let mut here = policy(&[]);
        here.elsewhere.insert("gpu".to_owned());
        assert_eq!(
            claim(&store, &here).await.map(|c| c.0),
            Some(plain[0]),
            "{name}"
        );
        assert_eq!(claim(&store, &here).await, None, "{name}");
        assert_eq!(status(&store, gpu[0]).await, BuildStatus::Queued);
        // A runner with the label takes them, oldest first.
        let there = policy(&[]);
        assert_eq!(
            claim(&store, &there).await.map(|c| c.0),
            Some(gpu[0]),
            "{name}"
        );
    }
}

/// A build of `branch` with its pipeline's settings.
fn new_build(pipeline: &str, branch: &str, context: Option<&str>, supersede: bool) -> NewBuild {
    NewBuild {
        pipeline: pipeline.to_owned(),
        push: push(branch, N.fetch_add(1, Ordering::Relaxed)),
        path_filters: Vec::new(),
        supersede,
        waiting: false,
        report_context: context.map(str::to_owned),
        pipeline_revision: None,
    }
}

fn delivery(pipeline: &str, id: &str, builds: Vec<NewBuild>, body: Option<&str>) -> NewDelivery {
    NewDelivery {
        pipeline: pipeline.to_owned(),
        delivery_id: id.to_owned(),
        host: Host::Github,
        event: "push".to_owned(),
        skipped: builds.is_empty().then(|| "no trigger matches".to_owned()),
        builds,
        body_sha256: body.map(str::to_owned),
        close: None,
    }
}

async fn record_one(store: &Store, d: NewDelivery) -> hookci::store::Recorded {
    let mut recorded = store.record_deliveries(vec![d]).await.expect("record");
    assert_eq!(recorded.len(), 1);
    recorded.remove(0)
}

async fn status(store: &Store, id: i64) -> BuildStatus {
    store
        .build(id)
        .await
        .expect("read")
        .expect("the build")
        .status
}

async fn report_states(store: &Store, id: i64) -> Vec<String> {
    store
        .reports(id)
        .await
        .expect("reports")
        .iter()
        .map(|r| r.state.as_str().to_owned())
        .collect()
}

/// Calls that arrive together (a backend may record them in one
/// transaction) are answered each on its own: the queue limit holds across
/// them, a call refused as over the limit leaves nothing of itself, not even
/// its deliveries that fit, and one delivery sent many times at once is one
/// build that every answer names.
#[tokio::test]
async fn calls_at_once_are_each_answered_alone() {
    for (name, db) in backends().await {
        let store = db.open(options(12)).await;
        // Over the limit as a whole: its first delivery fits, its second
        // does not.
        let over = vec![
            delivery(
                "app",
                "over-1",
                vec![new_build("app", "o1", None, false)],
                None,
            ),
            delivery(
                "app",
                "over-2",
                (0..20)
                    .map(|i| new_build("app", &format!("o2-{i}"), None, false))
                    .collect(),
                None,
            ),
        ];
        let mut calls = vec![over];
        for i in 0..20 {
            calls.push(vec![delivery(
                "app",
                &format!("d{i}"),
                vec![new_build("app", &format!("b{i}"), None, false)],
                None,
            )]);
        }
        for _ in 0..8 {
            calls.push(vec![delivery(
                "app",
                "same",
                vec![new_build("other", "main", None, false)],
                None,
            )]);
        }
        let answers = futures_util::future::join_all(calls.into_iter().map(|c| {
            let store = store.clone();
            async move { store.record_deliveries(c).await }
        }))
        .await;
        assert!(
            matches!(answers[0], Err(StoreError::QueueFull)),
            "{name}: the call over the limit is refused"
        );
        assert!(
            !store.delivery_recorded("app", "over-1").await.unwrap(),
            "{name}: nothing of it is kept"
        );
        let mut queued = 0;
        let mut refused = 0;
        let mut same = Vec::new();
        for answer in &answers[1..] {
            match answer {
                Ok(recorded) => {
                    assert_eq!(recorded.len(), 1, "{name}");
                    let r = &recorded[0];
                    if r.delivery_id == "same" {
                        same.push((r.duplicate, r.build_ids.clone()));
                    } else {
                        assert_eq!(r.build_ids.len(), 1, "{name}");
                        let b = store.build(r.build_ids[0]).await.unwrap().expect("stored");
                        assert_eq!(
                            b.delivery.as_deref(),
                            Some(r.delivery_id.as_str()),
                            "{name}"
                        );
                        queued += 1;
                    }
                }
                Err(StoreError::QueueFull) => refused += 1,
                Err(e) => panic!("{name}: {e}"),
            }
        }
        let firsts = same.iter().filter(|(dup, _)| !dup).count();
        let same_queued = usize::from(firsts == 1);
        assert!(
            firsts <= 1,
            "{name}: one delivery sent at once is recorded once: {same:?}"
        );
        if let Some((_, ids)) = same.iter().find(|(dup, _)| !dup) {
            assert_eq!(ids.len(), 1, "{name}");
            assert!(
                same.iter().all(|(_, got)| got == ids),
                "{name}: every answer names its build: {same:?}"
            );
        }
        assert_eq!(
            queued + same_queued,
            12,
            "{name}: the queue takes exactly its limit"
        );
        assert_eq!(
            refused + same.len(),
            28 - queued,
            "{name}: every other call is answered as refused or as the same delivery"
        );
        assert_eq!(store.queued_count().await.unwrap(), 12, "{name}");
    }
}

/// The queue's size (what `max_queued_builds` is checked against) stays
/// the number of queued and waiting builds through every way a build enters
/// or leaves the queue: queued, waiting, approved, claimed, cancelled,
/// superseded, closed, finished, re-queued and pruned.
#[tokio::test]
async fn the_queue_size_follows_every_change_of_state() {
    for (name, _db, store) in stores().await {
        let counted = || {
            let store = store.clone();
            async move {
                let listed = store
                    .builds(BuildFilter {
                        statuses: vec![BuildStatus::Queued, BuildStatus::Waiting],
                        limit: 1000,
                        ..BuildFilter::default()
                    })
                    .await
                    .unwrap()
                    .len() as u64;
                (store.queued_count().await.unwrap(), listed)
            }
        };
        let check = |(size, listed): (u64, u64), step: &str| {
            assert_eq!(size, listed, "{name}: after {step}");
        };
        let ids = queue(&store, "app", "main", 3).await;
        queue(&store, "app", "dev", 2).await;
        check(counted().await, "queueing");
        let mut waiting = new_build("app", "pr", None, false);
        waiting.waiting = true;
        let w = record_one(&store, delivery("app", "w1", vec![waiting], None)).await;
        check(counted().await, "a waiting build");
        store.approve(w.build_ids[0]).await.unwrap();
        check(counted().await, "approval");
        store.cancel(ids[2], "by hand".into()).await.unwrap();
        check(counted().await, "a cancel");
        let (first, _, _) = claim(&store, &policy(&[])).await.expect("a build");
        check(counted().await, "a claim");
        store.requeue(first, "shutdown".into()).await.unwrap();
        check(counted().await, "a re-queue");
        let (again, _, _) = claim(&store, &policy(&[])).await.expect("a build");
        store
            .finish(again, BuildStatus::Success, None)
            .await
            .unwrap();
        check(counted().await, "a finish");
        let newer = new_build("app", "dev", None, true);
        record_one(&store, delivery("app", "s1", vec![newer], None)).await;
        check(counted().await, "a supersede");
        let mut closing = delivery("app", "c1", Vec::new(), None);
        closing.close = Some(CloseRef {
            git_ref: "refs/heads/main".into(),
            reason: "closed".into(),
        });
        record_one(&store, closing).await;
        check(counted().await, "a close");
        store.prune("app".into(), 0).await.unwrap();
        check(counted().await, "pruning");
        assert!(
            counted().await.0 > 0,
            "{name}: the dev build is still queued"
        );
    }
}

/// A payload's text may hold any character JSON can carry, NUL among
/// them (`\u0000` in a commit message): the delivery is recorded on every
/// backend, and the text reads back with the NUL shown as U+FFFD where the
/// database cannot hold it, never refused.
#[tokio::test]
async fn a_nul_in_a_payloads_text_is_recorded() {
    for (name, _db, store) in stores().await {
        let mut b = new_build("app", "main", None, false);
        b.push.message = "fix\0 the build".to_owned();
        b.push.pusher = "octo\0cat".to_owned();
        let r = record_one(&store, delivery("app", "nul", vec![b], None)).await;
        let got = store.build(r.build_ids[0]).await.unwrap().expect("stored");
        for (text, want) in [
            (&got.push.message, "fix the build"),
            (&got.push.pusher, "octocat"),
        ] {
            assert_eq!(
                text.replace(['\0', '\u{fffd}'], ""),
                want,
                "{name}: {text:?}"
            );
        }
    }
}

/// A delivery's builds are queued and read back as they were pushed;
/// lists are newest first and filter; a full queue records nothing.
#[tokio::test]
async fn queue_records_builds_and_refuses_past_the_limit() {
    for (name, db) in backends().await {
        let store = db.open(options(3)).await;
        let mut tag = new_build("app", "main", None, false);
        tag.push.git_ref = "refs/tags/v1".to_owned();
        tag.push.kind = RefKind::Tag("v1".to_owned());
        let main = new_build("app", "main", None, false);
        let commit = main.push.commit.clone();
        let r = record_one(&store, delivery("app", "d1", vec![main, tag], None)).await;
        assert!(!r.duplicate, "{name}");
        assert_eq!(r.build_ids.len(), 2, "{name}");
        let b = store.build(r.build_ids[0]).await.unwrap().expect("stored");
        assert_eq!(b.status, BuildStatus::Queued, "{name}");
        assert_eq!(b.pipeline, "app");
        assert_eq!(b.repo, "acme/app");
        assert_eq!(b.git_ref, "refs/heads/main");
        assert_eq!(b.branch(), Some("main"));
        assert_eq!(b.commit, commit);
        assert_eq!(b.host.as_deref(), Some("github"));
        assert_eq!(b.delivery.as_deref(), Some("d1"));
        assert_eq!(b.attempt, 1);
        assert_eq!(b.event_name(), "push");
        let t = store.build(r.build_ids[1]).await.unwrap().expect("stored");
        assert_eq!((t.event_name(), t.tag()), ("tag", Some("v1")));
        assert_eq!(store.queued_count().await.unwrap(), 2, "{name}");
        assert_eq!(store.delivery_count().await.unwrap(), 1, "{name}");

        let all = |f: BuildFilter| {
            let store = store.clone();
            async move {
                store
                    .builds(BuildFilter { limit: 100, ..f })
                    .await
                    .unwrap()
                    .iter()
                    .map(|b| b.id)
                    .collect::<Vec<_>>()
            }
        };
        let (first, second) = (r.build_ids[0], r.build_ids[1]);
        assert_eq!(all(BuildFilter::default()).await, [second, first], "{name}");
        let tags = BuildFilter {
            event: Some("tag".into()),
            ..BuildFilter::default()
        };
        assert_eq!(all(tags).await, [second], "{name}");
        let before = BuildFilter {
            before: Some(second),
            ..BuildFilter::default()
        };
        assert_eq!(all(before).await, [first], "{name}");
        let branch = BuildFilter {
            branch: Some("main".into()),
            statuses: vec![BuildStatus::Queued],
            ..BuildFilter::default()
        };
        assert_eq!(all(branch).await, [first], "{name}");

        // Two more do not fit in 3: nothing of that delivery is recorded.
        let two = vec![
            new_build("app", "x", None, false),
            new_build("app", "y", None, false),
        ];
        let full = store
            .record_deliveries(vec![delivery("app", "d2", two, None)])
            .await;
        assert!(matches!(full, Err(StoreError::QueueFull)), "{name}");
        assert_eq!(store.queued_count().await.unwrap(), 2, "{name}");
        assert_eq!(store.delivery_count().await.unwrap(), 1, "{name}");
        assert!(
            !store.delivery_recorded("app", "d2").await.unwrap(),
            "{name}"
        );
    }
}

/// The same delivery id, or the same signed body under a new id, gets the
/// first answer and queues nothing; another pipeline's id is its own.
#[tokio::test]
async fn a_redelivery_or_a_replayed_body_gets_the_first_answer() {
    for (name, _db, store) in stores().await {
        let first = record_one(
            &store,
            delivery(
                "app",
                "d1",
                vec![new_build("app", "main", None, false)],
                Some("body-1"),
            ),
        )
        .await;
        let again = record_one(
            &store,
            delivery(
                "app",
                "d1",
                vec![new_build("app", "main", None, false)],
                Some("body-2"),
            ),
        )
        .await;
        assert!(again.duplicate, "{name}");
        assert_eq!(again.build_ids, first.build_ids, "{name}");
        let replay = record_one(
            &store,
            delivery(
                "app",
                "other-id",
                vec![new_build("app", "main", None, false)],
                Some("body-1"),
            ),
        )
        .await;
        assert!(replay.duplicate, "{name}");
        assert_eq!(replay.build_ids, first.build_ids, "{name}");
        let skipped = record_one(&store, delivery("app", "s1", vec![], None)).await;
        let skipped_again = record_one(&store, delivery("app", "s1", vec![], None)).await;
        assert!(skipped_again.duplicate);
        assert_eq!(skipped_again.skipped, skipped.skipped, "{name}");
        assert!(skipped.build_ids.is_empty());
        let elsewhere = record_one(
            &store,
            delivery(
                "other",
                "d1",
                vec![new_build("other", "main", None, false)],
                Some("body-1"),
            ),
        )
        .await;
        assert!(!elsewhere.duplicate, "{name}");
        assert_eq!(store.queued_count().await.unwrap(), 2, "{name}");
        assert!(!store.delivery_recorded("app", "other-id").await.unwrap());
        assert!(
            store.delivery_recorded("app", "d1").await.unwrap(),
            "{name}"
        );
    }
}

/// A supersede pipeline's new build cancels the ref's older queued builds
/// and asks its running one to stop; other refs and pipelines keep theirs.
#[tokio::test]
async fn a_newer_push_supersedes_the_refs_older_builds() {
    for (name, _db, store) in stores().await {
        let p = policy(&[]);
        let old = queue(&store, "app", "main", 2).await;
        let other_ref = queue(&store, "app", "dev", 1).await;
        let other_pipeline = queue(&store, "lib", "main", 1).await;
        assert_eq!(claim(&store, &p).await.map(|c| c.0), Some(old[0]));
        let r = record_one(
            &store,
            delivery(
                "app",
                "new",
                vec![new_build("app", "main", None, true)],
                None,
            ),
        )
        .await;
        let newer = r.build_ids[0];
        assert_eq!(r.cancel_running, [old[0]], "{name}");
        assert_eq!(r.superseded_queued, 1, "{name}");
        assert_eq!(status(&store, old[0]).await, BuildStatus::Running);
        let reason = format!("superseded by build {newer}");
        assert_eq!(
            store.cancel_reason(old[0]).await.unwrap().as_deref(),
            Some(reason.as_str()),
            "{name}"
        );
        let cancelled = store.build(old[1]).await.unwrap().expect("kept");
        assert_eq!(cancelled.status, BuildStatus::Cancelled, "{name}");
        assert_eq!(cancelled.reason.as_deref(), Some(reason.as_str()));
        assert!(cancelled.finished_at.is_some());
        assert_eq!(status(&store, other_ref[0]).await, BuildStatus::Queued);
        assert_eq!(status(&store, other_pipeline[0]).await, BuildStatus::Queued);
        // By hand too.
        let manual = store
            .queue_manual(
                new_build("app", "main", None, true),
                None,
                hookci::store::BuildOrigin {
                    rebuild_of: None,
                    triggered_by: "admin".into(),
                    resume: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(manual.superseded_queued, 1, "{name}");
        assert_eq!(status(&store, newer).await, BuildStatus::Cancelled);
        assert!(manual.cancel_running.is_empty(), "asked once: {name}");
    }
}

/// A cancel ends a queued build, asks a running one to stop, and changes
/// nothing on a finished or unknown one.
#[tokio::test]
async fn cancel_by_state() {
    for (name, _db, store) in stores().await {
        let p = policy(&[]);
        let ids = queue(&store, "app", "main", 2).await;
        assert_eq!(claim(&store, &p).await.map(|c| c.0), Some(ids[0]));
        store.set_steps(ids[1], vec!["a".into()]).await.unwrap();
        assert_eq!(
            store.cancel(ids[1], "by hand".into()).await.unwrap(),
            CancelOutcome::Cancelled {
                pipeline: "app".into()
            },
            "{name}"
        );
        let b = store.build(ids[1]).await.unwrap().expect("kept");
        assert_eq!(
            (b.status, b.reason.as_deref()),
            (BuildStatus::Cancelled, Some("by hand"))
        );
        let steps = store.steps(ids[1]).await.unwrap();
        assert_eq!(steps[0].status, StepStatus::Skipped, "{name}");
        assert_eq!(
            store.cancel(ids[0], "stop".into()).await.unwrap(),
            CancelOutcome::Requested,
            "{name}"
        );
        // A second request keeps the first reason.
        store.cancel(ids[0], "again".into()).await.unwrap();
        assert_eq!(
            store.cancel_reason(ids[0]).await.unwrap().as_deref(),
            Some("stop")
        );
        assert_eq!(status(&store, ids[0]).await, BuildStatus::Running);
        store
            .finish(ids[0], BuildStatus::Cancelled, Some("stop".into()))
            .await
            .unwrap();
        assert_eq!(
            store.cancel(ids[0], "late".into()).await.unwrap(),
            CancelOutcome::AlreadyFinished,
            "{name}"
        );
        assert_eq!(
            store.cancel(999_999, "none".into()).await.unwrap(),
            CancelOutcome::NotFound,
            "{name}"
        );
    }
}

/// Steps are recorded in order; a build's end skips those that never ran.
#[tokio::test]
async fn steps_are_recorded_and_the_unrun_ones_skipped_at_the_end() {
    for (name, _db, store) in stores().await {
        let id = queue(&store, "app", "main", 1).await[0];
        claim(&store, &policy(&[])).await.expect("claimed");
        store
            .set_steps(id, vec!["a".into(), "b".into(), "c".into()])
            .await
            .unwrap();
        store.step_started(id, 0).await.unwrap();
        store
            .step_finished(id, 0, StepStatus::Success, Some(0))
            .await
            .unwrap();
        store.step_started(id, 1).await.unwrap();
        store
            .step_finished(id, 1, StepStatus::Failure, Some(3))
            .await
            .unwrap();
        store
            .finish(id, BuildStatus::Failure, Some("step b failed".into()))
            .await
            .unwrap();
        let steps = store.steps(id).await.unwrap();
        let got: Vec<_> = steps
            .iter()
            .map(|s| (s.name.as_str(), s.status, s.exit_code))
            .collect();
        assert_eq!(
            got,
            [
                ("a", StepStatus::Success, Some(0)),
                ("b", StepStatus::Failure, Some(3)),
                ("c", StepStatus::Skipped, None)
            ],
            "{name}"
        );
        assert!(steps[0].started_at.is_some() && steps[0].finished_at.is_some());
    }
}

/// Which state changes write a report (the rule of `store::outbox`), and
/// the order the outbox hands them out: oldest first, an older pending
/// state of the same commit and context superseded by a newer one.
#[tokio::test]
async fn the_outbox_gets_one_report_per_reported_state_change_in_order() {
    for (name, _db, store) in stores().await {
        let p = policy(&[]);
        // Reported: queued, running, the end.
        let a = record_one(
            &store,
            delivery(
                "app",
                "a",
                vec![new_build("app", "a", Some("ci/app"), false)],
                None,
            ),
        )
        .await
        .build_ids[0];
        // No context: nothing.
        let quiet = queue(&store, "app", "q", 1).await[0];
        // Path rules: only the end (it may still be skipped until then).
        let mut with_paths = new_build("app", "p", Some("ci/app"), false);
        with_paths.path_filters = vec![PathFilter {
            paths: vec!["src/**".into()],
            ignore_paths: Vec::new(),
        }];
        let paths = record_one(&store, delivery("app", "p", vec![with_paths], None))
            .await
            .build_ids[0];
        // Skipped: nothing at all.
        let mut skip = new_build("app", "s", Some("ci/app"), false);
        skip.path_filters = vec![PathFilter {
            paths: vec!["docs/**".into()],
            ignore_paths: Vec::new(),
        }];
        let skipped = record_one(&store, delivery("app", "s", vec![skip], None))
            .await
            .build_ids[0];
        while let Some((id, _, _)) = claim(&store, &p).await {
            let end = if id == skipped {
                BuildStatus::Skipped
            } else {
                BuildStatus::Success
            };
            store.finish(id, end, None).await.unwrap();
        }
        assert_eq!(
            report_states(&store, a).await,
            ["pending", "running", "success"],
            "{name}"
        );
        assert!(report_states(&store, quiet).await.is_empty(), "{name}");
        assert_eq!(report_states(&store, paths).await, ["success"], "{name}");
        assert!(report_states(&store, skipped).await.is_empty(), "{name}");
        // A requeue (shutdown) reports queued again.
        let r = record_one(
            &store,
            delivery(
                "app",
                "r",
                vec![new_build("app", "r", Some("ci/app"), false)],
                None,
            ),
        )
        .await
        .build_ids[0];
        claim(&store, &p).await.expect("claimed");
        store.requeue(r, "shutting down".into()).await.unwrap();
        assert_eq!(
            report_states(&store, r).await,
            ["pending", "running", "pending"],
            "{name}"
        );
        assert_eq!(status(&store, r).await, BuildStatus::Queued);

        // Due: oldest first, and of build `a` (one commit, one context)
        // only the newest state: the older two are superseded unsent.
        let due = store.due_reports(i64::MAX, 100).await.unwrap();
        let order: Vec<_> = due.iter().map(|j| (j.build.id, j.state)).collect();
        assert_eq!(
            order,
            [
                (a, BuildStatus::Success),
                (paths, BuildStatus::Success),
                (r, BuildStatus::Queued),
            ],
            "{name}"
        );
        assert!(due.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(due[0].context, "ci/app");
        assert_eq!(store.pending_reports().await.unwrap(), 3, "{name}");
        let outcomes: Vec<_> = store
            .reports(a)
            .await
            .unwrap()
            .iter()
            .map(|r| r.outcome)
            .collect();
        assert_eq!(
            outcomes,
            [
                ReportOutcome::Superseded,
                ReportOutcome::Superseded,
                ReportOutcome::Pending
            ],
            "{name}"
        );
        // Sent, retried later, given up.
        store
            .report_attempted(due[0].id, ReportOutcome::Delivered, None, None)
            .await
            .unwrap();
        store
            .report_attempted(
                due[1].id,
                ReportOutcome::Pending,
                Some(5_000),
                Some("503".into()),
            )
            .await
            .unwrap();
        store
            .report_attempted(due[2].id, ReportOutcome::Failed, None, Some("401".into()))
            .await
            .unwrap();
        let later = store.due_reports(4_999, 100).await.unwrap();
        assert!(later.is_empty(), "{name}: not due before its retry");
        assert_eq!(store.next_report_due().await.unwrap(), Some(5_000));
        let retry = store.due_reports(5_000, 100).await.unwrap();
        assert_eq!(retry.len(), 1, "{name}");
        assert_eq!((retry[0].id, retry[0].attempts), (due[1].id, 1));
        let last = store.reports(a).await.unwrap();
        assert_eq!(last[2].outcome, ReportOutcome::Delivered);
        assert!(last[2].delivered_at.is_some());
        let failed = store.reports(r).await.unwrap();
        assert_eq!(
            failed.last().map(|r| r.outcome),
            Some(ReportOutcome::Failed)
        );
        assert_eq!(store.pending_reports().await.unwrap(), 1, "{name}");
    }
}

/// Pruning keeps the newest `keep` builds of a pipeline, never a queued
/// or running one, and returns the ids it deleted.
#[tokio::test]
async fn pruning_keeps_the_newest_and_every_unfinished_build() {
    for (name, _db, store) in stores().await {
        let p = policy(&["app"]);
        let ids = queue(&store, "app", "main", 5).await;
        let lib = queue(&store, "lib", "main", 1).await[0];
        for _ in 0..3 {
            let (id, ..) = claim(&store, &p).await.expect("claimed");
            assert!(ids.contains(&id) || id == lib);
        }
        // ids[0], ids[1] and lib run (parallel app: lib's none running goes
        // first after app's first); end everything that runs.
        let running: Vec<i64> = store
            .builds(BuildFilter {
                statuses: vec![BuildStatus::Running],
                limit: 100,
                ..BuildFilter::default()
            })
            .await
            .unwrap()
            .iter()
            .map(|b| b.id)
            .collect();
        for id in &running {
            store.finish(*id, BuildStatus::Success, None).await.unwrap();
        }
        // app: two finished (ids[0], ids[1]), three queued. Keep 1.
        let mut pruned = store.prune("app".into(), 1).await.unwrap();
        pruned.sort_unstable();
        assert_eq!(pruned, [ids[0], ids[1]], "{name}");
        assert!(store.build(ids[0]).await.unwrap().is_none(), "{name}");
        for id in &ids[2..] {
            assert_eq!(status(&store, *id).await, BuildStatus::Queued, "{name}");
        }
        assert!(
            store.build(lib).await.unwrap().is_some(),
            "another pipeline's"
        );
        // A delivery whose build is kept is still remembered.
        assert!(
            store
                .delivery_recorded(
                    "app",
                    &store
                        .build(ids[2])
                        .await
                        .unwrap()
                        .unwrap()
                        .delivery
                        .unwrap()
                )
                .await
                .unwrap()
        );
    }
}

/// Builds a crashed daemon left running: re-queued once with attempt + 1
/// (reported queued again), and `error` when interrupted a second time.
#[tokio::test]
async fn recovery_after_a_crash_requeues_once_then_errors() {
    for (name, db) in backends().await {
        let store = db.open(options(100)).await;
        let r = record_one(
            &store,
            delivery(
                "app",
                "c",
                vec![new_build("app", "main", Some("ci/app"), false)],
                None,
            ),
        )
        .await;
        let id = r.build_ids[0];
        let other = queue(&store, "app", "dev", 1).await[0];
        claim(&store, &policy(&[])).await.expect("claimed");
        store
            .set_steps(id, vec!["a".into(), "b".into()])
            .await
            .unwrap();
        store.step_started(id, 0).await.unwrap();
        drop(store);

        // The daemon died with `id` running; the next one opens the store.
        let store = db.open(options(100)).await;
        let recovery = store.recover().await.unwrap();
        assert_eq!(recovery.requeued, [id], "{name}");
        assert!(recovery.failed.is_empty());
        let b = store.build(id).await.unwrap().expect("kept");
        assert_eq!((b.status, b.attempt), (BuildStatus::Queued, 2), "{name}");
        assert!(b.started_at.is_none());
        assert!(b.reason.unwrap_or_default().contains("interrupted"));
        assert_eq!(status(&store, other).await, BuildStatus::Queued);
        assert_eq!(
            report_states(&store, id).await,
            ["pending", "running", "pending"],
            "{name}"
        );
        let (again, ..) = claim(&store, &policy(&[])).await.expect("claimed");
        assert_eq!(again, id, "the oldest goes first");
        drop(store);

        let store = db.open(options(100)).await;
        let recovery = store.recover().await.unwrap();
        assert_eq!(recovery.failed, [id], "{name}");
        let b = store.build(id).await.unwrap().expect("kept");
        assert_eq!(b.status, BuildStatus::Error, "{name}");
        assert!(b.finished_at.is_some());
        assert!(
            store
                .steps(id)
                .await
                .unwrap()
                .iter()
                .all(|s| s.status == StepStatus::Skipped),
            "{name}"
        );
        assert_eq!(
            report_states(&store, id).await.last().map(String::as_str),
            Some("error"),
            "{name}"
        );
        // Nothing was running: a third open changes nothing.
        drop(store);
        let store = db.open(options(100)).await;
        assert_eq!(store.recover().await.unwrap(), Default::default());
    }
}

/// A pull request's build as the webhook route makes it: keyed by its pull
/// ref, superseding, `waiting` when a fork's author is not trusted.
fn pull_build(number: u64, fork: bool, waiting: bool) -> NewBuild {
    let mut push = push("unused", N.fetch_add(1, Ordering::Relaxed));
    push.git_ref = format!("refs/pull/{number}/head");
    push.kind = RefKind::Other;
    push.pull_request = Some(PullRequest {
        number,
        title: "Fix the thing".to_owned(),
        author: "mallory".to_owned(),
        author_trusted: false,
        base_branch: "main".to_owned(),
        head_branch: "main".to_owned(),
        head_repo: if fork { "mallory/app" } else { "acme/app" }.to_owned(),
        fork,
        head_clone_url: None,
    });
    NewBuild {
        pipeline: "p".to_owned(),
        push,
        path_filters: Vec::new(),
        supersede: true,
        waiting,
        report_context: Some("ci/pr".to_owned()),
        pipeline_revision: None,
    }
}

/// A build queued without a commit (a Gogs pull request) gets the one its
/// runner resolved, once; a build with a commit keeps it.
#[tokio::test]
async fn a_resolved_commit_is_recorded_only_for_a_build_without_one() {
    for (name, _db, store) in stores().await {
        let mut b = pull_build(3, false, false);
        b.push.commit = None;
        let id = record_one(&store, delivery("p", "r1", vec![b], None))
            .await
            .build_ids[0];
        assert_eq!(store.build(id).await.unwrap().unwrap().commit, None);
        let resolved: CommitId = "ab".repeat(20).parse().unwrap();
        store.resolve_commit(id, resolved.clone()).await.unwrap();
        let cd = "cd".repeat(20).parse().unwrap();
        store.resolve_commit(id, cd).await.unwrap();
        let got = store.build(id).await.unwrap().unwrap();
        assert_eq!(got.commit, Some(resolved.clone()), "{name}");
        assert_eq!(got.after, resolved, "{name}");
        let other = queue(&store, "p", "main", 1).await[0];
        let before = store.build(other).await.unwrap().unwrap().commit.clone();
        let ef = "ef".repeat(20).parse().unwrap();
        store.resolve_commit(other, ef).await.unwrap();
        assert_eq!(
            store.build(other).await.unwrap().unwrap().commit,
            before,
            "{name}"
        );
    }
}

/// Waiting builds count against the queue's limit: a stranger's pull
/// requests cannot pile up without bound.
#[tokio::test]
async fn waiting_builds_count_against_the_queue_limit() {
    for (name, db) in backends().await {
        let store = db.open(options(1)).await;
        let d = |id: &str, b: NewBuild| delivery("p", id, vec![b], None);
        record_one(&store, d("l1", pull_build(1, true, true))).await;
        let full = store
            .record_deliveries(vec![d("l2", pull_build(2, true, true))])
            .await;
        assert!(
            matches!(full, Err(StoreError::QueueFull)),
            "{name}: {full:?}"
        );
    }
}

/// A waiting build is never claimed and reports pending "waiting for
/// approval"; approval queues it (once); a pull request's builds are read
/// back with their pull request and listed under `event=pull_request`
/// without a branch; a new build supersedes the waiting one, and closing
/// the pull request cancels what is left.
#[tokio::test]
async fn a_waiting_build_is_claimed_only_after_approval_and_closing_cancels() {
    for (name, _db, store) in stores().await {
        let d = |id: &str, b: NewBuild| delivery("p", id, vec![b], None);
        let waiting = record_one(&store, d("w1", pull_build(7, true, true)))
            .await
            .build_ids[0];
        assert_eq!(
            status(&store, waiting).await,
            BuildStatus::Waiting,
            "{name}"
        );
        assert_eq!(
            claim(&store, &policy(&[])).await,
            None,
            "{name}: claimed a waiting build"
        );
        let reports = store.reports(waiting).await.unwrap();
        assert_eq!(reports.len(), 1, "{name}");
        assert_eq!(reports[0].state, "pending", "{name}");
        assert_eq!(reports[0].context, "ci/pr", "{name}");

        let read = store.build(waiting).await.unwrap().unwrap();
        let pr = read
            .pull_request
            .as_ref()
            .expect("the pull request is kept");
        assert_eq!(
            (pr.number, pr.fork, pr.author.as_str()),
            (7, true, "mallory"),
            "{name}"
        );
        assert_eq!(read.event_name(), "pull_request", "{name}");
        assert_eq!(read.kind, RefKind::Other, "{name}");
        assert_eq!(read.branch(), Some("main"), "{name}: the head branch");
        let listed = store
            .builds(BuildFilter {
                event: Some("pull_request".to_owned()),
                limit: 10,
                ..BuildFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(
            listed.iter().map(|b| b.id).collect::<Vec<_>>(),
            [waiting],
            "{name}"
        );
        let by_branch = store
            .builds(BuildFilter {
                branch: Some("main".to_owned()),
                limit: 10,
                ..BuildFilter::default()
            })
            .await
            .unwrap();
        assert!(
            by_branch.is_empty(),
            "{name}: a fork's head branch is not this repository's"
        );

        // A new push to the pull request supersedes the waiting build.
        let newer = record_one(&store, d("w2", pull_build(7, true, true)))
            .await
            .build_ids[0];
        assert_eq!(
            status(&store, waiting).await,
            BuildStatus::Cancelled,
            "{name}"
        );
        assert_eq!(
            store.approve(waiting).await.unwrap(),
            ApproveOutcome::NotWaiting(BuildStatus::Cancelled),
            "{name}"
        );
        assert_eq!(
            store.approve(newer).await.unwrap(),
            ApproveOutcome::Approved,
            "{name}"
        );
        assert_eq!(
            store.approve(newer).await.unwrap(),
            ApproveOutcome::NotWaiting(BuildStatus::Queued),
            "{name}"
        );
        assert_eq!(
            store.approve(999_999).await.unwrap(),
            ApproveOutcome::NotFound,
            "{name}"
        );
        assert_eq!(
            report_states(&store, newer).await,
            ["pending", "pending"],
            "{name}"
        );
        assert_eq!(
            claim(&store, &policy(&[])).await.map(|c| c.0),
            Some(newer),
            "{name}"
        );

        // A newer push while it runs: the running one is asked to stop,
        // and the new one waits; then the pull request is closed: the
        // waiting one is cancelled (the running one was asked already).
        let third = record_one(&store, d("w3", pull_build(7, true, true))).await;
        assert_eq!(third.cancel_running, vec![newer], "{name}");
        let third = third.build_ids[0];
        let mut close = delivery("p", "w4", Vec::new(), None);
        close.close = Some(CloseRef {
            git_ref: "refs/pull/7/head".to_owned(),
            reason: "pull request 7 was closed".to_owned(),
        });
        let closed = record_one(&store, close).await;
        assert_eq!(closed.superseded_queued, 1, "{name}");
        let b = store.build(third).await.unwrap().unwrap();
        assert_eq!(b.status, BuildStatus::Cancelled, "{name}");
        assert_eq!(
            b.reason.as_deref(),
            Some("pull request 7 was closed"),
            "{name}"
        );
        assert_eq!(
            report_states(&store, third).await,
            ["pending", "cancelled"],
            "{name}"
        );
        // Another pull request's builds are untouched by the close.
        let other = record_one(&store, d("w5", pull_build(8, false, false)))
            .await
            .build_ids[0];
        let mut close = delivery("p", "w6", Vec::new(), None);
        close.close = Some(CloseRef {
            git_ref: "refs/pull/7/head".to_owned(),
            reason: "pull request 7 was closed".to_owned(),
        });
        record_one(&store, close).await;
        assert_eq!(status(&store, other).await, BuildStatus::Queued, "{name}");
    }
}

/// Waits (a bounded while) until `store` rescues something, and returns it.
async fn rescued(store: &Store, name: &str) -> hookci::store::Recovery {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = store.rescue().await.expect("rescue");
        if !r.requeued.is_empty() || !r.failed.is_empty() || !r.cancelled.is_empty() {
            return r;
        }
        assert!(
            std::time::Instant::now() < until,
            "{name}: nothing was rescued"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A stop asked for a running build whose runner then went (a crash, or a
/// lease that ran out) is kept: the recovery ends the build `cancelled`
/// with the reason asked, and it is not run again. Before, the recovery
/// re-queued it and forgot the cancel.
#[tokio::test]
async fn a_cancel_outlives_the_runner_that_was_to_carry_it_out() {
    use std::time::Duration;
    for (name, db) in backends().await {
        // At a restart.
        let store = db.open(options(100)).await;
        let id = queue(&store, "app", "main", 1).await[0];
        assert_eq!(claim(&store, &policy(&[])).await.map(|c| c.0), Some(id));
        store.set_steps(id, vec!["s".into()]).await.unwrap();
        store.step_started(id, 0).await.unwrap();
        assert_eq!(
            store.cancel(id, "cancelled by alice".into()).await.unwrap(),
            CancelOutcome::Requested,
            "{name}"
        );
        drop(store);
        let store = db.open(options(100)).await;
        let r = store.recover().await.unwrap();
        assert_eq!((r.requeued, r.cancelled), (vec![], vec![id]), "{name}");
        let b = store.build(id).await.unwrap().expect("kept");
        assert_eq!(b.status, BuildStatus::Cancelled, "{name}");
        assert_eq!(b.reason.as_deref(), Some("cancelled by alice"), "{name}");
        assert!(b.finished_at.is_some(), "{name}");
        assert_eq!(
            store.steps(id).await.unwrap()[0].status,
            StepStatus::Skipped,
            "{name}"
        );
        assert!(
            claim(&store, &policy(&[])).await.is_none(),
            "{name}: nothing runs again"
        );

        // At a lease that ran out.
        let a = store.with_lease(Duration::from_secs(2));
        let id = queue(&a, "app", "dev", 1).await[0];
        assert_eq!(claim(&a, &policy(&[])).await.map(|c| c.0), Some(id));
        a.cancel(id, "cancelled by bob".into()).await.unwrap();
        let r = rescued(&a, name).await;
        assert_eq!((r.requeued, r.cancelled), (vec![], vec![id]), "{name}");
        let b = a.build(id).await.unwrap().expect("kept");
        assert_eq!(
            (b.status, b.reason.as_deref()),
            (BuildStatus::Cancelled, Some("cancelled by bob")),
            "{name}"
        );
        assert!(
            claim(&a, &policy(&[])).await.is_none(),
            "{name}: nothing runs again"
        );
    }
}

/// A renewed lease holds; one that runs out is rescued (attempt + 1, its
/// reports in order), and every write its old runner makes after is
/// refused (`Fenced`) and changes nothing, while the build runs again
/// under another runner. A second loss ends it `error`.
#[tokio::test]
async fn a_lost_lease_is_rescued_once_then_errors_and_its_runners_writes_are_fenced() {
    use std::time::Duration;
    for (name, db) in backends().await {
        let a = db
            .open(options(100))
            .await
            .with_lease(Duration::from_secs(2));
        let b = a.another_runner();
        assert_ne!(a.runner_id(), b.runner_id());
        let id = record_one(
            &a,
            delivery(
                "app",
                "lease-1",
                vec![new_build("app", "main", Some("ci/app"), false)],
                None,
            ),
        )
        .await
        .build_ids[0];
        assert_eq!(claim(&a, &policy(&[])).await.map(|c| c.0), Some(id));
        a.set_steps(id, vec!["s".into()]).await.expect("steps");
        a.step_started(id, 0).await.expect("step started");

        // Renewed before it runs out: held past the first lease's end.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(a.renew().await.expect("renew"), Vec::<i64>::new(), "{name}");
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(
            a.rescue().await.expect("rescue"),
            Default::default(),
            "{name}: a renewed lease holds"
        );

        // a stops renewing: the build is rescued and b runs it.
        let r = rescued(&a, name).await;
        assert_eq!((r.requeued, r.failed), (vec![id], vec![]), "{name}");
        let q = a.build(id).await.unwrap().expect("kept");
        assert_eq!((q.status, q.attempt), (BuildStatus::Queued, 2), "{name}");
        assert!(q.reason.unwrap_or_default().contains("lease"), "{name}");
        // Before a learns of it, its writes are refused by the store.
        assert!(
            matches!(
                a.step_finished(id, 0, StepStatus::Success, Some(0)).await,
                Err(StoreError::Fenced)
            ),
            "{name}"
        );
        let b_claim = b.claim_next(policy(&[])).await.unwrap().expect("b claims");
        assert_eq!((b_claim.id, b_claim.attempt), (id, 2), "{name}");
        b.set_steps(id, vec!["s".into()]).await.expect("b's steps");
        assert!(
            matches!(a.step_started(id, 0).await, Err(StoreError::Fenced)),
            "{name}"
        );
        assert!(
            matches!(
                a.finish(id, BuildStatus::Failure, Some("late".into()))
                    .await,
                Err(StoreError::Fenced)
            ),
            "{name}"
        );
        assert!(
            matches!(a.requeue(id, "late".into()).await, Err(StoreError::Fenced)),
            "{name}"
        );
        // b's lease renews; a's is gone.
        assert_eq!(b.renew().await.expect("renew b"), Vec::<i64>::new());
        let now = a.build(id).await.unwrap().expect("kept");
        assert_eq!(
            (now.status, now.attempt),
            (BuildStatus::Running, 2),
            "{name}"
        );
        assert!(now.reason.is_none(), "{name}: {:?}", now.reason);
        let steps = a.steps(id).await.unwrap();
        assert_eq!(steps[0].status, StepStatus::Pending, "{name}: {steps:?}");
        b.step_started(id, 0).await.expect("b's step");
        b.step_finished(id, 0, StepStatus::Success, Some(0))
            .await
            .expect("b's step ends");
        b.finish(id, BuildStatus::Success, None)
            .await
            .expect("b ends it");
        assert_eq!(status(&a, id).await, BuildStatus::Success, "{name}");
        assert_eq!(
            report_states(&a, id).await,
            ["pending", "running", "pending", "running", "success"],
            "{name}"
        );

        // A second build lost twice: error, its steps skipped.
        let two = record_one(
            &a,
            delivery(
                "app",
                "lease-2",
                vec![new_build("app", "main", Some("ci/app"), false)],
                None,
            ),
        )
        .await
        .build_ids[0];
        assert_eq!(claim(&a, &policy(&[])).await.map(|c| c.0), Some(two));
        assert_eq!(rescued(&b, name).await.requeued, [two], "{name}");
        let again = b.claim_next(policy(&[])).await.unwrap().expect("b claims");
        assert_eq!((again.id, again.attempt), (two, 2), "{name}");
        b.set_steps(two, vec!["s".into()]).await.expect("steps");
        let r = rescued(&a, name).await;
        assert_eq!((r.requeued, r.failed), (vec![], vec![two]), "{name}");
        let e = a.build(two).await.unwrap().expect("kept");
        assert_eq!((e.status, e.attempt), (BuildStatus::Error, 2), "{name}");
        assert!(e.finished_at.is_some(), "{name}");
        assert!(
            a.steps(two)
                .await
                .unwrap()
                .iter()
                .all(|s| s.status == StepStatus::Skipped),
            "{name}"
        );
        assert!(
            matches!(
                b.finish(two, BuildStatus::Success, None).await,
                Err(StoreError::Fenced)
            ),
            "{name}"
        );
        assert_eq!(status(&a, two).await, BuildStatus::Error, "{name}");
        assert_eq!(
            report_states(&a, two).await.last().map(String::as_str),
            Some("error"),
            "{name}"
        );
        // b learns it lost nothing it still holds, a that it lost `two`
        // (already refused: not renewed again).
        assert_eq!(b.renew().await.expect("renew b"), Vec::<i64>::new());
    }
}

/// A process that lost a build's lease and claimed the build again: the
/// old run's writes still carry the old attempt and are refused; the new
/// run's pass.
#[tokio::test]
async fn a_run_of_an_older_attempt_cannot_write_for_the_build_claimed_again() {
    use std::time::Duration;
    for (name, db) in backends().await {
        let a = db
            .open(options(100))
            .await
            .with_lease(Duration::from_secs(2));
        let id = queue(&a, "app", "main", 1).await[0];
        let first = a.claim_next(policy(&[])).await.unwrap().expect("claimed");
        let old_run = a.for_run(&first);
        old_run
            .set_steps(id, vec!["s".into()])
            .await
            .expect("steps");
        assert_eq!(rescued(&a, name).await.requeued, [id], "{name}");
        let second = a.claim_next(policy(&[])).await.unwrap().expect("again");
        assert_eq!((second.id, second.attempt), (id, 2), "{name}");
        let new_run = a.for_run(&second);
        new_run
            .set_steps(id, vec!["s".into()])
            .await
            .expect("steps");
        assert!(
            matches!(
                old_run.finish(id, BuildStatus::Cancelled, None).await,
                Err(StoreError::Fenced)
            ),
            "{name}"
        );
        assert!(
            matches!(old_run.step_started(id, 0).await, Err(StoreError::Fenced)),
            "{name}"
        );
        assert_eq!(a.renew().await.expect("renew"), Vec::<i64>::new(), "{name}");
        new_run
            .step_started(id, 0)
            .await
            .expect("the new run's step");
        new_run
            .finish(id, BuildStatus::Success, None)
            .await
            .expect("the new run ends it");
        assert_eq!(status(&a, id).await, BuildStatus::Success, "{name}");
        // Its end written, the run writes nothing more.
        assert!(
            matches!(
                new_run.finish(id, BuildStatus::Failure, None).await,
                Err(StoreError::Fenced)
            ),
            "{name}"
        );
    }
}

/// One line-time record: (offset, Unix ms), little-endian.
fn time_record(offset: u64, ms: u64) -> Vec<u8> {
    let mut r = offset.to_le_bytes().to_vec();
    r.extend_from_slice(&ms.to_le_bytes());
    r
}

fn log_chunk(offset: u64, data: &[u8], times: Vec<u8>) -> LogChunk {
    LogChunk {
        offset,
        data: data.to_vec(),
        times,
    }
}

/// Logs in the store (SPEC 11: every receiver serves every log). On
/// PostgreSQL a runner begins its claim's log and appends chunks in order
/// with their line times (a retried append changes nothing, a gap is
/// refused); a rescued runner's appends are fenced; attempt 2 begins a new
/// run and the old run's bytes are gone at once; a log may be completed
/// after its build's end was recorded; pruning takes the log with its
/// build. SQLite keeps no logs (its one process reads its own files):
/// `log_begin` says so with `None`, appends change nothing, there is no
/// head and no chunk.
#[tokio::test]
async fn a_log_is_shipped_in_order_one_run_at_a_time_and_fenced() {
    use std::time::Duration;
    for (name, db) in backends().await {
        let a = db
            .open(options(100))
            .await
            .with_lease(Duration::from_secs(2));
        let b = a.another_runner();
        let id = queue(&a, "app", "main", 1).await[0];
        let first = a.claim_next(policy(&[])).await.unwrap().expect("claimed");
        let run_a = a.for_run(&first);
        let begun = run_a.log_begin(id).await.expect("begin");
        if name == "sqlite" {
            assert_eq!(begun, None, "{name}");
            run_a
                .log_append(id, 0, log_chunk(0, b"x", Vec::new()), true)
                .await
                .expect("nothing");
            assert_eq!(a.log_head(id).await.unwrap(), None, "{name}");
            assert!(a.log_chunks(id, 0, 0, 16).await.unwrap().is_empty());
            continue;
        }
        let run1 = begun.expect("a run");
        let hello = log_chunk(0, b"hello ", time_record(0, 1_000));
        run_a
            .log_append(id, run1, hello.clone(), false)
            .await
            .expect("append");
        // A retry whose answer was lost: nothing changes.
        run_a
            .log_append(id, run1, hello.clone(), false)
            .await
            .expect("a retried append");
        assert!(
            run_a
                .log_append(id, run1, log_chunk(100, b"gap", Vec::new()), false)
                .await
                .is_err(),
            "{name}: a gap is refused"
        );
        let head = a.log_head(id).await.unwrap().expect("a head");
        assert_eq!(
            (head.run, head.attempt, head.length, head.complete),
            (run1, 1, 6, false)
        );
        assert!(head.writer_holds && head.running, "{head:?}");
        assert_eq!(a.log_chunks(id, run1, 0, 16).await.unwrap(), [hello]);

        // Rescued: the old runner appends nothing more.
        assert_eq!(rescued(&a, name).await.requeued, [id], "{name}");
        assert!(matches!(
            run_a
                .log_append(id, run1, log_chunk(6, b"late", Vec::new()), true)
                .await,
            Err(StoreError::Fenced)
        ));
        let head = a.log_head(id).await.unwrap().expect("a head");
        assert_eq!(
            (head.length, head.writer_holds, head.running),
            (6, false, false)
        );

        // Attempt 2 begins a new run: attempt 1's bytes go at once.
        let second = b.claim_next(policy(&[])).await.unwrap().expect("b claims");
        assert_eq!(second.attempt, 2);
        let run_b = b.for_run(&second);
        let run2 = run_b.log_begin(id).await.unwrap().expect("a run");
        assert_ne!(run2, run1);
        assert!(a.log_chunks(id, run1, 0, 16).await.unwrap().is_empty());
        assert!(matches!(run_a.log_begin(id).await, Err(StoreError::Fenced)));
        let head = a.log_head(id).await.unwrap().expect("a head");
        assert_eq!(
            (head.run, head.attempt, head.length, head.writer_holds),
            (run2, 2, 0, true)
        );
        run_b
            .log_append(
                id,
                run2,
                log_chunk(0, b"two\n", time_record(0, 2_000)),
                false,
            )
            .await
            .expect("append");
        // The end recorded first, the log completed after.
        run_b
            .finish(id, BuildStatus::Success, None)
            .await
            .expect("finish");
        let end = log_chunk(4, b"end\n", time_record(4, 2_500));
        run_b
            .log_append(id, run2, end.clone(), true)
            .await
            .expect("completed after the end");
        let head = a.log_head(id).await.unwrap().expect("a head");
        assert_eq!(
            (head.length, head.complete, head.writer_holds, head.running),
            (8, true, true, false)
        );
        assert_eq!(a.log_chunks(id, run2, 4, 16).await.unwrap(), [end]);
        assert_eq!(a.log_chunks(id, run2, 0, 1).await.unwrap().len(), 1);

        // Pruned with its build.
        assert!(a.prune("app".into(), 0).await.unwrap().contains(&id));
        assert_eq!(a.log_head(id).await.unwrap(), None, "{name}");
        assert!(a.log_chunks(id, run2, 0, 16).await.unwrap().is_empty());
    }
}

fn runner_info(store: &Store, labels: &[&str], heartbeat_ms: i64) -> RunnerInfo {
    RunnerInfo {
        runner_id: store.runner_id().to_owned(),
        node: "conformance".to_owned(),
        role: "runner".to_owned(),
        labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        version: "9.9.9".to_owned(),
        max_parallel: 2,
        heartbeat_ms,
    }
}

/// A runner process registers itself, its heartbeat refreshes its row (its
/// start time stays), the builds running under its id are counted, one
/// that missed its heartbeats is shown gone and later forgotten, and a
/// clean stop removes it.
#[tokio::test]
async fn runners_register_are_refreshed_count_their_builds_go_and_are_forgotten() {
    for (name, _db, store) in stores().await {
        assert_eq!(store.runners().await.expect("list"), Vec::new(), "{name}");
        let a = runner_info(&store, &["linux", "gpu"], 60_000);
        store.runner_seen(a.clone()).await.expect("register");
        let listed = store.runners().await.expect("list");
        assert_eq!(listed.len(), 1, "{name}: {listed:?}");
        let row = &listed[0];
        assert_eq!(
            (
                row.id.as_str(),
                row.node.as_str(),
                row.role.as_str(),
                row.version.as_str()
            ),
            (store.runner_id(), "conformance", "runner", "9.9.9"),
            "{name}"
        );
        assert_eq!(row.labels, ["linux", "gpu"], "{name}");
        assert_eq!(
            (row.max_parallel_builds, row.running, row.gone),
            (2, 0, false)
        );
        let started = row.started_at;

        // Its claims count as its running builds.
        let ids = queue(&store, "app", "main", 1).await;
        assert_eq!(claim(&store, &policy(&[])).await.map(|c| c.0), Some(ids[0]));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        store.runner_seen(a.clone()).await.expect("heartbeat");
        let row = store.runners().await.expect("list").remove(0);
        assert_eq!(row.running, 1, "{name}");
        assert_eq!(row.started_at, started, "{name}: the start time stays");
        assert!(row.last_seen_at > started, "{name}: {row:?}");

        // Another runner that beats every millisecond is gone after three
        // missed beats; one that beats every minute is not.
        let other = store.another_runner();
        let b = runner_info(&other, &[], 1);
        other.runner_seen(b.clone()).await.expect("register b");
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        let listed = store.runners().await.expect("list");
        let gone: Vec<(&str, bool)> = listed.iter().map(|r| (r.id.as_str(), r.gone)).collect();
        assert_eq!(listed.len(), 2, "{name}");
        assert!(
            gone.contains(&(b.runner_id.as_str(), true)),
            "{name}: {gone:?}"
        );
        assert!(
            gone.contains(&(a.runner_id.as_str(), false)),
            "{name}: {gone:?}"
        );

        // Forgotten once not seen for longer than asked; A was just seen.
        store.runner_seen(a.clone()).await.expect("heartbeat");
        assert_eq!(store.forget_runners(20).await.expect("forget"), 1, "{name}");
        let left: Vec<String> = store
            .runners()
            .await
            .expect("list")
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(left, vec![a.runner_id.clone()], "{name}");

        // A clean stop removes its row.
        store.runner_gone(&a.runner_id).await.expect("gone");
        assert_eq!(store.runners().await.expect("list"), Vec::new(), "{name}");
    }
}

/// A build keeps the revision of the pipeline it was matched with, queued
/// by a delivery or by hand, and its claim hands it to the runner.
#[tokio::test]
async fn a_build_keeps_the_pipeline_revision_it_was_matched_with() {
    for (name, _db, store) in stores().await {
        let mut pushed = new_build("app", "main", None, false);
        pushed.pipeline_revision = Some("0123456789ab".to_owned());
        let id = record_one(&store, delivery("app", "rev-1", vec![pushed], None))
            .await
            .build_ids[0];
        let mut by_hand = new_build("app", "other", None, false);
        by_hand.pipeline_revision = Some("ba9876543210".to_owned());
        let origin = hookci::store::BuildOrigin {
            rebuild_of: None,
            triggered_by: "admin".to_owned(),
            resume: None,
        };
        let manual = store
            .queue_manual(by_hand, None, origin)
            .await
            .expect("queue")
            .id;
        let old = store
            .record_deliveries(vec![delivery(
                "app",
                "rev-2",
                vec![new_build("app", "third", None, false)],
                None,
            )])
            .await
            .expect("record")[0]
            .build_ids[0];
        let revision = |b: Option<hookci::store::Build>| b.expect("build").pipeline_revision;
        assert_eq!(
            revision(store.build(id).await.expect("read")).as_deref(),
            Some("0123456789ab"),
            "{name}"
        );
        assert_eq!(
            revision(store.build(manual).await.expect("read")).as_deref(),
            Some("ba9876543210"),
            "{name}"
        );
        assert_eq!(revision(store.build(old).await.expect("read")), None);
        let claimed = store
            .claim_next(policy(&[]))
            .await
            .expect("claim")
            .expect("a build");
        assert_eq!(claimed.id, id, "{name}");
        assert_eq!(claimed.pipeline_revision.as_deref(), Some("0123456789ab"));
    }
}
