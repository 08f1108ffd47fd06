//! What a worker's claim costs as the queue grows: `cargo bench --bench claims`.
//!
//! For each queue shape, the store (a real SQLite file) is filled to a depth,
//! one build is left running on the busiest ref, and then claims are timed:
//! each claimed build is ended at once, so the queue stays that deep. The
//! same shapes at 1,000 queued are the baseline, measured in the same run;
//! the target is a claim under 1 ms at 100,000 queued, and a ratio near 1.
//!
//! Shapes:
//! - `hot/cold`: the review's case, every queued build on one busy branch
//!   but one on another, of the same pipeline;
//! - `spread`: 10 pipelines, 100 branches each, builds spread evenly;
//! - `parallel`: one `parallel` pipeline, one branch.
//!
//! `--depth N` changes the deep run's depth (default 100000).

use hookci::store::{BuildStatus, ClaimPolicy, NewBuild, NewDelivery, Store, StoreOptions};
use hookci::webhook::{CommitId, Host, PushEvent, RefKind};
use std::time::{Duration, Instant};

const CLAIMS: usize = 300;

fn push(branch: &str, n: usize) -> PushEvent {
    let commit = format!("{n:040x}");
    PushEvent {
        repo: "acme/app".to_owned(),
        git_ref: format!("refs/heads/{branch}"),
        kind: RefKind::Branch(branch.to_owned()),
        before: CommitId::ZERO,
        after: commit.parse().expect("hex"),
        commit: Some(commit.parse().expect("hex")),
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

#[derive(Clone, Copy)]
enum Shape {
    HotCold,
    Spread,
    Parallel,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::HotCold => "hot/cold",
            Shape::Spread => "spread",
            Shape::Parallel => "parallel",
        }
    }

    /// The pipeline and branch of the `i`th build of a queue `depth` deep
    /// (`i` past `depth`: a build that tops the queue up after a claim).
    fn at(self, i: usize, depth: usize) -> (String, String) {
        match self {
            Shape::HotCold if i + 1 >= depth => ("app".into(), "cold".into()),
            Shape::HotCold => ("app".into(), "hot".into()),
            Shape::Spread => (format!("p{}", i % 10), format!("b{}", (i / 10) % 100)),
            Shape::Parallel => ("wide".into(), "main".into()),
        }
    }

    fn policy(self) -> ClaimPolicy {
        let mut policy = ClaimPolicy::default();
        if let Shape::Parallel = self {
            policy.parallel.insert("wide".into());
        }
        policy
    }
}

async fn fill(store: &Store, shape: Shape, from: usize, to: usize, depth: usize) {
    let mut i = from;
    while i < to {
        let end = (i + 1000).min(to);
        let batch = (i..end)
            .map(|n| {
                let (pipeline, branch) = shape.at(n, depth);
                NewDelivery {
                    pipeline: pipeline.clone(),
                    delivery_id: format!("d-{n}"),
                    host: Host::Github,
                    event: "push".into(),
                    builds: vec![NewBuild {
                        pipeline,
                        push: push(&branch, n),
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
        store.record_deliveries(batch).await.expect("record");
        i = end;
    }
}

/// Claim times at `depth` queued, in microseconds, sorted.
async fn run(shape: Shape, depth: usize, under: &std::path::Path) -> Vec<f64> {
    let dir = tempfile::tempdir_in(under).expect("tempdir");
    let store = Store::open_sqlite(
        &dir.path().join("hookci.db"),
        StoreOptions {
            max_queued_builds: u64::MAX,
        },
    )
    .expect("open");
    let policy = shape.policy();
    // The first build (of the busiest ref) runs for the whole measurement.
    fill(&store, shape, 0, depth, depth).await;
    store
        .claim_next(policy.clone())
        .await
        .expect("claim")
        .expect("a build");
    let mut times = Vec::with_capacity(CLAIMS);
    for next in depth..depth + CLAIMS {
        // Keep the queue as deep: one new build per claimed one.
        fill(&store, shape, next, next + 1, depth).await;
        let start = Instant::now();
        let build = store.claim_next(policy.clone()).await.expect("claim");
        times.push(start.elapsed());
        let Some(build) = build else {
            panic!("{}: nothing to claim at depth {depth}", shape.name());
        };
        store
            .finish(build.id, BuildStatus::Success, None)
            .await
            .expect("finish");
    }
    let mut us: Vec<f64> = times.iter().map(Duration::as_secs_f64).collect();
    us.iter_mut().for_each(|t| *t *= 1e6);
    us.sort_by(f64::total_cmp);
    us
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let mut depth = 100_000;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--depth" {
            depth = args.next().and_then(|d| d.parse().ok()).expect("--depth N");
        }
    }
    // On disk, each claim's commit waits for fsync (synchronous = FULL);
    // in /dev/shm (tmpfs) fsync is free, and what is left is the claim's own
    // work, the part that could grow with the queue.
    let shm = std::path::Path::new("/dev/shm");
    let places: Vec<(&str, std::path::PathBuf)> = if shm.is_dir() {
        vec![("tmpfs", shm.to_owned()), ("disk", std::env::temp_dir())]
    } else {
        vec![("disk", std::env::temp_dir())]
    };
    for (place, under) in places {
        println!(
            "claim latency on {place}, {CLAIMS} claims per run, microseconds (through Store, one SQLite file)"
        );
        println!(
            "{:<10} {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} | {:>6}",
            "shape", "1k p50", "1k p99", "1k max", "deep p50", "deep p99", "deep max", "ratio"
        );
        for shape in [Shape::HotCold, Shape::Spread, Shape::Parallel] {
            let base = run(shape, 1_000, &under).await;
            let deep = run(shape, depth, &under).await;
            println!(
                "{:<10} {:>8.0} {:>8.0} {:>8.0} | {:>8.0} {:>8.0} {:>8.0} | {:>6.2}",
                shape.name(),
                pct(&base, 0.5),
                pct(&base, 0.99),
                pct(&base, 1.0),
                pct(&deep, 0.5),
                pct(&deep, 0.99),
                pct(&deep, 1.0),
                pct(&deep, 0.5) / pct(&base, 0.5),
            );
        }
    }
    println!("(deep = {depth} queued; ratio = deep p50 / 1k p50)");
}
