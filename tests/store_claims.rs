//! Which queued build a worker gets: the store's claim, through `Store`, on
//! a real SQLite file.

use hookci::store::{BuildStatus, ClaimPolicy, NewBuild, NewDelivery, Store, StoreOptions};
use hookci::webhook::{Host, PushEvent, RefKind};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_sqlite(
        &dir.path().join("hookci.db"),
        StoreOptions {
            max_queued_builds: 1_000_000,
        },
    )
    .expect("open the store");
    (dir, store)
}

fn push(branch: &str, n: u64) -> PushEvent {
    let commit = format!("{n:040x}");
    PushEvent {
        repo: "acme/app".to_owned(),
        git_ref: format!("refs/heads/{branch}"),
        kind: RefKind::Branch(branch.to_owned()),
        before: "0".repeat(40),
        after: commit.clone(),
        commit,
        created: false,
        deleted: false,
        forced: false,
        clone_url: "https://git.example/acme/app.git".to_owned(),
        ssh_url: None,
        web_url: None,
        message: "a change".to_owned(),
        pusher: "octocat".to_owned(),
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
                    report_context: None,
                }],
                skipped: None,
                body_sha256: None,
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
            (b.id, b.pipeline, b.git_ref)
        })
}

/// The review's case: a deep queue on one busy branch must not hide a build
/// of another branch that may run now. Before, a claim read only the oldest
/// 1,000 queued builds, and the `cold` build waited for the `hot` queue.
#[tokio::test]
async fn a_build_that_may_run_is_found_behind_a_deep_queue_of_a_busy_branch() {
    let (_dir, store) = open();
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

/// Of one ref, builds run one at a time, oldest first; a parallel pipeline's
/// run side by side.
#[tokio::test]
async fn one_ref_runs_oldest_first_unless_its_pipeline_is_parallel() {
    let (_dir, store) = open();
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

/// A pipeline with a deep queue does not starve another: of the pipelines
/// with a build that may run, the one with the fewest running goes first.
#[tokio::test]
async fn a_deep_queue_does_not_starve_another_pipeline() {
    let (_dir, store) = open();
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

/// A claim still finds the oldest free ref when every build in its first
/// look waits behind a running one, across many refs.
#[tokio::test]
async fn the_oldest_free_ref_wins_when_many_refs_are_queued() {
    let (_dir, store) = open();
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
