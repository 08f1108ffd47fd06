//! The reporter's delivery guarantees against a fake host on 127.0.0.1:0
//! and a real SQLite store: retries with backoff and Retry-After (in paused
//! tokio time), order per commit and context, survival across a restart,
//! and refusals that are not retried.

use crate::report_fake as fake;

use fake::{
    Env, FakeHost, Reply, Seen, TOKEN, finish_build, open_store, pipeline_toml, push, queue,
    reports_until, sha, spawn_reporter, start_build, within,
};
use hookci::report::{ReporterOptions, Schedule};
use hookci::store::{BuildStatus, ReportOutcome};
use hookci::webhook::Host;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

const CONTEXT: &str = "hookci/hello";

/// A GitHub pipeline `hello` reporting to `host`.
fn github_env(host: &FakeHost) -> Env {
    let toml = pipeline_toml("octo/hello", "github", Some(&host.url()), CONTEXT);
    Env::new(&[("hello", &toml)])
}

/// Queues a build of commit `n` for `hello`.
async fn queue_build(env: &Env, n: u32) -> i64 {
    let push = push(
        "octo/hello",
        &sha(n),
        Some("https://github.com/octo/hello"),
        "https://github.com/octo/hello.git",
    );
    queue(&env.store, "hello", Host::Github, push, CONTEXT).await
}

/// The GitHub state of each request, in the order the host received them.
fn states(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .map(|s| s.json()["state"].as_str().unwrap().to_owned())
        .collect()
}

/// True when no state is followed by an older one.
fn in_order(states: &[String]) -> bool {
    let rank = |s: &str| match s {
        "pending" => 0,
        _ => 1,
    };
    states.windows(2).all(|w| rank(&w[0]) <= rank(&w[1]))
}

#[tokio::test(start_paused = true)]
async fn a_flaky_host_still_gets_the_final_state_in_order() {
    let host = FakeHost::start(vec![
        Reply::Status(500),
        Reply::Status(500),
        Reply::Answer {
            status: 429,
            headers: vec![("retry-after", "2".into())],
            body: "slow down".into(),
        },
        Reply::Hang,
        Reply::Status(201),
    ])
    .await;
    let env = github_env(&host);
    let id = queue_build(&env, 1).await;
    // A short backoff, so that the wait after the 429 is Retry-After's.
    let base = Duration::from_millis(200);
    let options = ReporterOptions {
        schedule: Schedule {
            base,
            cap: Duration::from_secs(1),
            ..Schedule::default()
        },
        ..ReporterOptions::default()
    };
    let (stop, task) = spawn_reporter(env.reporter(options));
    within(Duration::from_secs(30), "the first try", host.wait_for(1)).await;
    start_build(&env.store, id).await;
    finish_build(&env.store, id, BuildStatus::Success, None).await;
    let reports = reports_until(&env.store, id, "success delivered", |r| {
        r.last()
            .is_some_and(|r| r.state == "success" && r.outcome == ReportOutcome::Delivered)
    })
    .await;
    stop.cancel();
    task.await.unwrap();

    let seen = host.seen();
    let states = states(&seen);
    assert!(
        in_order(&states),
        "an older state after a newer one: {states:?}"
    );
    assert_eq!(states.last().map(String::as_str), Some("success"));
    // The host answered 500, 500, 429, nothing, 201; a sixth request (201)
    // only if that 201 went to a pending report still being retried.
    assert!(
        seen.len() == 5 || (seen.len() == 6 && states[4] == "pending"),
        "{states:?}"
    );
    let attempts: i64 = reports.iter().map(|r| r.attempts).sum();
    assert_eq!(attempts as usize, seen.len());
    // A retry of the same state waits; a newer state goes at once. Only
    // lower bounds hold: while the store's thread works, the idle runtime
    // moves paused time on to the next timer, so waits can only grow.
    let retry_gap = |i: usize| (states[i] == states[i + 1]).then(|| seen[i + 1].at - seen[i].at);
    for i in [0, 1] {
        if let Some(gap) = retry_gap(i) {
            assert!(gap >= base, "backoff after a 500: {gap:?}");
        }
    }
    if let Some(gap) = retry_gap(2) {
        assert!(gap >= Duration::from_secs(2), "Retry-After: 2: {gap:?}");
    }
    if let Some(gap) = retry_gap(3) {
        assert!(
            gap >= Duration::from_secs(15),
            "the hung request timed out: {gap:?}"
        );
    }
    assert!(
        reports.iter().any(|r| r.last_error.as_deref()
            == Some(format!("{} did not answer within 15s", host.addr).as_str())),
        "{reports:?}"
    );
    for r in &reports {
        assert_ne!(r.outcome, ReportOutcome::Pending, "{r:?}");
        assert_ne!(r.outcome, ReportOutcome::Failed, "{r:?}");
    }
}

#[tokio::test]
async fn states_written_before_the_reporter_runs_send_only_the_final_one() {
    let host = FakeHost::start(vec![]).await;
    let env = github_env(&host);
    let id = queue_build(&env, 1).await;
    start_build(&env.store, id).await;
    finish_build(
        &env.store,
        id,
        BuildStatus::Failure,
        Some("step test exited 1"),
    )
    .await;
    let (stop, task) = spawn_reporter(env.reporter(ReporterOptions::default()));
    let reports = reports_until(&env.store, id, "failure delivered", |r| {
        r.iter().any(|r| r.outcome == ReportOutcome::Delivered)
    })
    .await;
    stop.cancel();
    task.await.unwrap();
    let seen = host.seen();
    assert_eq!(states(&seen), ["failure"]);
    assert_eq!(seen[0].json()["description"], "build failed");
    let outcomes: Vec<_> = reports
        .iter()
        .map(|r| (r.state.as_str(), r.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("pending", ReportOutcome::Superseded),
            ("running", ReportOutcome::Superseded),
            ("failure", ReportOutcome::Delivered),
        ]
    );
}

#[tokio::test]
async fn a_newer_state_waits_until_the_older_one_in_flight_is_answered() {
    let gate = Arc::new(Notify::new());
    let host = FakeHost::start(vec![Reply::Gate(Arc::clone(&gate))]).await;
    let env = github_env(&host);
    let id = queue_build(&env, 1).await;
    let (stop, task) = spawn_reporter(env.reporter(ReporterOptions::default()));
    within(
        Duration::from_secs(30),
        "pending in flight",
        host.wait_for(1),
    )
    .await;
    start_build(&env.store, id).await;
    finish_build(&env.store, id, BuildStatus::Success, None).await;
    // The reporter has seen the new reports (the store woke it) and must hold them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        host.seen().len(),
        1,
        "success was sent while pending was in flight"
    );
    gate.notify_one();
    let seen = within(
        Duration::from_secs(30),
        "success after pending",
        host.wait_for(2),
    )
    .await;
    let reports = reports_until(&env.store, id, "success delivered", |r| {
        r.last()
            .is_some_and(|r| r.outcome == ReportOutcome::Delivered)
    })
    .await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(states(&seen), ["pending", "success"]);
    assert!(seen[1].at >= seen[0].at);
    let outcomes: Vec<_> = reports
        .iter()
        .map(|r| (r.state.as_str(), r.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("pending", ReportOutcome::Delivered),
            ("running", ReportOutcome::Superseded),
            ("success", ReportOutcome::Delivered),
        ]
    );
    assert_eq!(host.seen().len(), 2);
}

#[tokio::test]
async fn reports_pending_at_a_restart_are_delivered_after_it() {
    let host = FakeHost::start(vec![Reply::Status(503)]).await;
    // A retry a second later: long enough that the first reporter is gone by then.
    let options = ReporterOptions {
        schedule: Schedule {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(1),
            ..Schedule::default()
        },
        ..ReporterOptions::default()
    };
    let env = github_env(&host);
    let id = queue_build(&env, 1).await;
    let (stop, task) = spawn_reporter(env.reporter(options.clone()));
    let reports = reports_until(&env.store, id, "the first try", |r| r[0].attempts == 1).await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(reports[0].outcome, ReportOutcome::Pending);
    assert_eq!(
        reports[0].last_error.as_deref(),
        Some(format!("{} answered 503 Service Unavailable", host.addr).as_str())
    );
    assert_eq!(host.seen().len(), 1);

    // The daemon stops: reporter and store go; the same file is opened again.
    let Env {
        dir,
        store,
        pipelines,
    } = env;
    drop(store);
    let env = Env {
        store: open_store(dir.path()),
        dir,
        pipelines,
    };
    let (stop, task) = spawn_reporter(env.reporter(options));
    let reports = reports_until(&env.store, id, "delivered after the restart", |r| {
        r[0].outcome == ReportOutcome::Delivered
    })
    .await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(reports[0].attempts, 2);
    let seen = host.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body, seen[1].body, "the same report, sent again");
}

#[tokio::test(start_paused = true)]
async fn a_401_is_not_retried_and_shows_on_the_build_without_the_token() {
    let host = FakeHost::start(vec![Reply::Answer {
        status: 401,
        headers: vec![],
        body: format!("{{\"message\": \"Bad credentials\",\n \"token\": \"{TOKEN}\"}}"),
    }])
    .await;
    let env = github_env(&host);
    let id = queue_build(&env, 1).await;
    let (stop, task) = spawn_reporter(env.reporter(ReporterOptions::default()));
    let reports = reports_until(&env.store, id, "the refusal recorded", |r| {
        r[0].outcome != ReportOutcome::Pending
    })
    .await;
    // A day later, still one request.
    tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(host.seen().len(), 1);
    let report = &reports[0];
    assert_eq!(report.outcome, ReportOutcome::Failed);
    assert_eq!(report.attempts, 1);
    let error = report.last_error.as_deref().unwrap();
    assert_eq!(
        error,
        format!(
            "{} answered 401 Unauthorized: {{\"message\": \"Bad credentials\", \"token\": \"***\"}}",
            host.addr
        )
    );
    assert!(!error.contains(TOKEN));
    let api = env.store.reports(id).await.unwrap();
    assert_eq!(api, reports, "the build's reports show the refusal");
}

#[tokio::test(start_paused = true)]
async fn a_report_failing_past_the_give_up_time_fails_with_the_last_error() {
    let host = FakeHost::start((0..100).map(|_| Reply::Status(502)).collect()).await;
    let env = github_env(&host);
    let id = queue_build(&env, 1).await;
    let options = ReporterOptions {
        schedule: Schedule {
            give_up_after: Duration::from_secs(90),
            ..Schedule::default()
        },
        ..ReporterOptions::default()
    };
    let (stop, task) = spawn_reporter(env.reporter(options));
    let reports = reports_until(&env.store, id, "given up", |r| {
        r[0].outcome == ReportOutcome::Failed
    })
    .await;
    stop.cancel();
    task.await.unwrap();
    let seen = host.seen();
    assert!(seen.len() >= 3, "retried before giving up: {}", seen.len());
    assert_eq!(reports[0].attempts as usize, seen.len());
    assert_eq!(
        reports[0].last_error.as_deref(),
        Some(format!("gave up after 90s: {} answered 502 Bad Gateway", host.addr).as_str())
    );
    let span = seen.last().unwrap().at - seen[0].at;
    assert!(
        span >= Duration::from_secs(60),
        "kept trying for a while: {span:?}"
    );
}

#[tokio::test]
async fn a_report_whose_pipeline_is_gone_or_reports_nothing_fails_clearly() {
    let host = FakeHost::start(vec![]).await;
    let env = github_env(&host);
    let gone = queue_build(&env, 1).await;
    env.pipelines.replace(BTreeMap::new());
    let (stop, task) = spawn_reporter(env.reporter(ReporterOptions::default()));
    let reports = reports_until(&env.store, gone, "refused", |r| {
        r[0].outcome == ReportOutcome::Failed
    })
    .await;
    assert_eq!(
        reports[0].last_error.as_deref(),
        Some("the pipeline hello no longer exists")
    );

    let none = "repo = \"octo/hello\"\nsecret = \"s\"\n[status]\nprovider = \"none\"\n[[steps]]\nname = \"x\"\nrun = \"true\"\n";
    env.pipelines
        .replace(fake::load_pipelines(env.dir.path(), &[("hello", none)]));
    let silent = queue_build(&env, 2).await;
    let reports = reports_until(&env.store, silent, "refused", |r| {
        r[0].outcome == ReportOutcome::Failed
    })
    .await;
    stop.cancel();
    task.await.unwrap();
    let error = reports[0].last_error.as_deref().unwrap();
    assert!(
        error.starts_with("the pipeline hello no longer reports commit statuses"),
        "{error}"
    );
    assert!(host.seen().is_empty());
}

#[tokio::test]
async fn an_unreachable_host_is_retried_with_the_connection_error() {
    // A port nothing listens on: bind one, then close it.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let toml = pipeline_toml(
        "octo/hello",
        "github",
        Some(&format!("http://{addr}")),
        CONTEXT,
    );
    let env = Env::new(&[("hello", &toml)]);
    let id = queue_build(&env, 1).await;
    let (stop, task) = spawn_reporter(env.reporter(ReporterOptions::default()));
    let reports = reports_until(&env.store, id, "a try", |r| r[0].attempts >= 1).await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(reports[0].outcome, ReportOutcome::Pending);
    let error = reports[0].last_error.as_deref().unwrap();
    assert!(
        error.starts_with(&format!("cannot connect to {addr}: ")),
        "{error}"
    );
}

#[tokio::test]
async fn many_commits_are_reported_side_by_side_within_the_bound() {
    let gates: Vec<_> = (0..12).map(|_| Arc::new(Notify::new())).collect();
    let host = FakeHost::start(gates.iter().map(|g| Reply::Gate(Arc::clone(g))).collect()).await;
    let env = github_env(&host);
    for n in 1..=12 {
        queue_build(&env, n).await;
    }
    let (stop, task) = spawn_reporter(env.reporter(ReporterOptions::default()));
    within(Duration::from_secs(30), "eight in flight", host.wait_for(8)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(host.seen().len(), 8, "at most eight requests in flight");
    for gate in &gates {
        gate.notify_one();
    }
    let seen = within(Duration::from_secs(30), "all twelve", host.wait_for(12)).await;
    stop.cancel();
    task.await.unwrap();
    let mut commits: Vec<_> = seen.iter().map(|s| s.path.clone()).collect();
    commits.sort();
    commits.dedup();
    assert_eq!(commits.len(), 12);
}
