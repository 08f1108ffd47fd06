//! Several `hookci serve` processes on one PostgreSQL schema (SPEC 11):
//! the real binary, the local server. One delivery sent to two receivers
//! at once queues one build and gets the same answer twice; a build queued
//! through one process runs on another; a cancel taken by one process
//! stops the step running in another.

use crate::common;
use crate::gitserve;
use crate::pg;

use common::{ZERO, spawn_daemon_with_log};
use gitserve::Upstream;
use std::path::Path;
use std::time::{Duration, Instant};

const ADMIN: &str = "cluster-admin-token";

/// `hookci.toml` lines for a process of the installation in `schema`.
fn cluster_config(schema: &pg::Schema, node: &str, builds: usize) -> String {
    format!(
        "store = {:?}\nnode = {node:?}\nmax_parallel_builds = {builds}\nadmin_token = {ADMIN:?}",
        schema.url
    )
}

pub(crate) fn write_pipeline(dir: &Path, toml: &str) {
    std::fs::create_dir_all(dir.join("pipelines")).expect("mkdir");
    std::fs::write(dir.join("pipelines/app.toml"), toml).expect("pipeline");
}

/// Builds of the installation, as receiver `base`'s API lists them.
async fn api_builds(base: &str) -> Vec<serde_json::Value> {
    let json: serde_json::Value = common::client()
        .get(format!("{base}/api/builds?limit=100"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    json["builds"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("a list: {json}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_delivery_sent_to_two_receivers_at_once_queues_one_build_and_gets_one_answer() {
    let Some(schema) = pg::Schema::create().await else {
        return;
    };
    let toml = common::pipeline_toml("s")
        .clone_url("https://git.example/Codertocat/Hello-World.git")
        .step("t", "true")
        .to_string();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_pipeline(a_dir.path(), &toml);
    write_pipeline(b_dir.path(), &toml);
    // Receivers only: nothing runs, so nothing is cloned.
    let (_a, a, _) = spawn_daemon_with_log(a_dir.path(), &cluster_config(&schema, "a", 0));
    let (_b, b, _) = spawn_daemon_with_log(b_dir.path(), &cluster_config(&schema, "b", 0));

    for round in 0..5 {
        let after = format!("{:040x}", 0xabc0 + round);
        let body = common::github_push(
            "https://git.example/Codertocat/Hello-World.git",
            "refs/heads/main",
            ZERO,
            &after,
            &format!("round {round}"),
        );
        let delivery = format!("same-{round}");
        let (to_a, to_b) = tokio::join!(
            common::send_github(&a, "app", "s", &delivery, &body),
            common::send_github(&b, "app", "s", &delivery, &body),
        );
        let mut statuses = [to_a.0, to_b.0];
        statuses.sort_unstable();
        assert_eq!(
            statuses,
            [200, 202],
            "one records, one repeats: {to_a:?} {to_b:?}"
        );
        let ids = |j: &serde_json::Value| {
            j["builds"]
                .as_array()
                .expect("builds")
                .iter()
                .map(|b| b["id"].as_i64().expect("id"))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&to_a.1), ids(&to_b.1), "the same answer twice");
        assert_eq!(ids(&to_a.1).len(), 1);
    }
    // Five deliveries, five builds, whichever receiver is asked.
    assert_eq!(api_builds(&a).await.len(), 5);
    assert_eq!(api_builds(&b).await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_queued_on_one_process_runs_on_another_and_a_cancel_reaches_it() {
    let Some(schema) = pg::Schema::create().await else {
        return;
    };
    let up = Upstream::new("cluster");
    let commit = up.push(&[("README", "x\n")], "first");
    let toml = common::pipeline_toml("s")
        .clone_url(&up.url())
        .step(
            "work",
            r#"if [ "$HOOKCI_BRANCH" = slow ]; then sleep 600; fi; echo "ran $HOOKCI_BRANCH""#,
        )
        .to_string();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_pipeline(a_dir.path(), &toml);
    write_pipeline(b_dir.path(), &toml);
    // A receives and runs nothing; B runs.
    let (_a, a, _) = spawn_daemon_with_log(a_dir.path(), &cluster_config(&schema, "a", 0));
    let (_b, b, _) = spawn_daemon_with_log(b_dir.path(), &cluster_config(&schema, "b", 1));

    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "fast");
    let id = common::queue_github(&a, "app", "s", "fast-1", &body).await[0];
    let done = common::wait_final(&a, id).await;
    assert_eq!(done["status"], "success", "{done}");
    // B ran it: the log is in B's data directory, not A's.
    let log = std::fs::read_to_string(b_dir.path().join(format!("data/logs/{id}.log")))
        .expect("B wrote the log");
    assert!(log.contains("ran main"), "{log}");
    assert!(!a_dir.path().join(format!("data/logs/{id}.log")).exists());

    // A build running on B, cancelled through A.
    let body = common::github_push(&up.url(), "refs/heads/slow", ZERO, &commit, "slow");
    let slow = common::queue_github(&a, "app", "s", "slow-1", &body).await[0];
    common::wait_build(&a, slow, |b| b["status"] == "running").await;
    let until = Instant::now() + Duration::from_secs(60);
    let steps_running = || async {
        common::get_build(&b, slow).await.is_some_and(|b| {
            b["steps"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["status"] == "running"))
        })
    };
    while !steps_running().await {
        assert!(Instant::now() < until, "the step never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let res = common::client()
        .post(format!("{a}/api/builds/{slow}/cancel"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("cancel");
    assert!(res.status().is_success(), "{}", res.status());
    let ended = common::wait_final(&b, slow).await;
    assert_eq!(ended["status"], "cancelled", "{ended}");
}

/// `hookci serve` on a config whose `store` is `url` (through the
/// environment); its exit code and stderr.
fn serve_with_store(url: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookci.toml");
    std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\npipelines_dir = \"{}\"\nstore = {{ env = \"HOOKCI_TEST_STORE_URL\" }}\n",
            dir.path().join("data").display(),
            dir.path().join("pipelines").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookci"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("HOOKCI_TEST_STORE_URL", url)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run hookci");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A database that does not answer, or a URL that does not parse, stops
/// `serve` at once: exit 2, one sentence that says so, and never the
/// URL's password.
#[test]
fn serve_stops_with_exit_2_when_the_database_cannot_be_reached() {
    // Port 1 on loopback: nothing listens there.
    let (code, stderr) = serve_with_store("postgres://hookci:sekrit-pw-41@127.0.0.1:1/hookci");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("the PostgreSQL store cannot be reached"),
        "{stderr}"
    );
    assert!(!stderr.contains("sekrit-pw-41"), "{stderr}");
    let (code, stderr) = serve_with_store("postgres://hookci:sekrit-pw-42@127.0.0.1:port/hookci");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("not a PostgreSQL URL"), "{stderr}");
    assert!(!stderr.contains("sekrit-pw-42"), "{stderr}");
}

/// `store` must be a PostgreSQL URL; the error does not repeat the value.
#[test]
fn a_store_that_is_not_a_postgres_url_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookci.toml");
    std::fs::write(&config, "store = \"mysql://root:pw-77@db/x\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookci"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run hookci");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("store is not a PostgreSQL URL"), "{stderr}");
    assert!(!stderr.contains("pw-77"), "{stderr}");
}

/// `hookci serve --role runner` on a config written in `dir`, once it says
/// it claims builds. A runner serves no HTTP.
pub(crate) fn spawn_runner(dir: &Path, extra: &str) -> common::Daemon {
    let (runner, said) = spawn_role(dir, "runner", extra, &[]);
    assert!(
        !said.iter().any(|line| line.contains("address=")),
        "a runner listens: {said:?}"
    );
    runner
}

/// `hookci serve --role ROLE` on a config written in `dir` (`extra`
/// lines), with the environment variables `env` (and neither the webhook
/// secret's variable nor systemd's credentials directory, unless given);
/// returns once it says it listens (a receiver, `address=`) or claims
/// builds (a runner), with its start log. Bounded: 60 s.
pub(crate) fn spawn_role(
    dir: &Path,
    role: &str,
    extra: &str,
    env: &[(&str, &str)],
) -> (common::Daemon, Vec<String>) {
    use std::io::{BufRead, BufReader};
    let config = dir.join("hookci.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\npipelines_dir = \"{}\"\n{extra}\n",
            dir.join("data").display(),
            dir.join("pipelines").display()
        ),
    )
    .expect("write config");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hookci"));
    cmd.args(["serve", "--role", role, "--config"])
        .arg(&config)
        .env_remove("HOOKCI_TEST_HOOK_SECRET")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env("HOOKCI_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = common::Daemon(cmd.spawn().expect("spawn hookci"));
    let marker = if role == "runner" {
        "runner: claiming builds"
    } else {
        "address="
    };
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let started = line.contains(marker);
                lines.push(line);
                if started {
                    break;
                }
            }
            Err(_) => panic!(
                "it never said {marker:?} (exited: {:?}):\n{}",
                child.try_wait().ok().flatten(),
                lines.join("\n")
            ),
        }
    }
    // Keep draining, so that it never blocks on a full pipe.
    std::thread::spawn(move || while rx.recv().is_ok() {});
    (child, lines)
}

/// A receiver runs no build; a runner runs the builds of the pipelines
/// whose `runs_on` its labels cover, and leaves the others queued, though
/// older. The queued build says why it waits, on its page and in the API,
/// until a runner with its labels starts and runs it. Runners are listed
/// while they run, a clean stop removes one, a killed one is shown gone.
/// A runner whose pipeline file differs from the receiver's says so in the
/// log and runs its own; the build keeps the revision it was matched with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_runs_nothing_and_a_runner_only_what_its_labels_allow() {
    let Some(schema) = pg::Schema::create().await else {
        return;
    };
    let up = Upstream::new("roles");
    let commit = up.push(&[("README", "x\n")], "first");
    let plain = common::pipeline_toml("s")
        .clone_url(&up.url())
        .step("work", "echo plain")
        .to_string();
    // Runner x's copy of app.toml is another revision: another step.
    let plain_x = common::pipeline_toml("s")
        .clone_url(&up.url())
        .step("work", "echo plain from x")
        .to_string();
    let gpu = common::pipeline_toml("s")
        .clone_url(&up.url())
        .top(r#"runs_on = ["gpu", "linux"]"#)
        .step("work", "echo gpu")
        .to_string();
    let (r_dir, x_dir, y_dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    for (dir, app) in [(&r_dir, &plain), (&x_dir, &plain_x), (&y_dir, &plain)] {
        std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
        std::fs::write(dir.path().join("pipelines/app.toml"), app).unwrap();
        std::fs::write(dir.path().join("pipelines/gpu.toml"), &gpu).unwrap();
    }
    // The receiver may run builds by its max_parallel_builds, but not by
    // its role.
    let (_r, r, _) = spawn_daemon_with_log(
        r_dir.path(),
        &format!(
            "store = {:?}\nnode = \"r\"\nrole = \"receiver\"\nmax_parallel_builds = 2",
            schema.url
        ),
    );
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "m");
    let gpu_build = common::queue_github(&r, "gpu", "s", "g-1", &body).await[0];
    let app_build = common::queue_github(&r, "app", "s", "a-1", &body).await[0];
    let mut x = spawn_runner(
        x_dir.path(),
        &format!(
            "store = {:?}\nnode = \"x\"\nlabels = [\"linux\"]\nmax_parallel_builds = 1\nlease = \"2s\"",
            schema.url
        ),
    );
    let done = common::wait_final(&r, app_build).await;
    assert_eq!(done["status"], "success", "{done}");
    // Matched by the receiver's file, run by x's, and x's log says both.
    let (r_rev, x_rev) = (
        hookci::pipeline::revision(&plain),
        hookci::pipeline::revision(&plain_x),
    );
    assert_ne!(r_rev, x_rev);
    assert_eq!(done["pipeline_revision"], r_rev.as_str(), "{done}");
    let log = std::fs::read_to_string(x_dir.path().join(format!("data/logs/{app_build}.log")))
        .expect("x wrote the log");
    assert!(
        log.contains(&format!(
            "this build was matched with revision {r_rev}; this runner has revision {x_rev} \
             and runs its own"
        )),
        "{log}"
    );
    assert!(log.contains("plain from x"), "{log}");

    let waiting = common::get_build(&r, gpu_build)
        .await
        .expect("the gpu build");
    assert_eq!(waiting["status"], "queued", "{waiting}");
    let why = "no runner online has labels gpu, linux";
    assert_eq!(waiting["waiting_reason"], why, "{waiting}");
    assert_eq!(done["waiting_reason"], serde_json::Value::Null, "{done}");
    let page = page_text(&r, &format!("/builds/{gpu_build}")).await;
    assert!(page.contains(why), "{page}");
    let listed = api_runners(&r).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["node"], "x");
    assert_eq!(listed[0]["role"], "runner");
    assert_eq!(listed[0]["labels"], serde_json::json!(["linux"]));
    assert_eq!(listed[0]["max_parallel_builds"], 1);
    assert_eq!(listed[0]["gone"], false);
    assert!(
        listed[0]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("x/")),
        "{listed:?}"
    );
    let page = page_text(&r, "/runners").await;
    assert!(page.contains("linux") && page.contains("online"), "{page}");

    // A runner with the labels takes it, with the receiver's revision.
    let mut y = spawn_runner(
        y_dir.path(),
        &format!(
            "store = {:?}\nnode = \"y\"\nlabels = [\"linux\", \"gpu\"]\nmax_parallel_builds = 1",
            schema.url
        ),
    );
    let done = common::wait_final(&r, gpu_build).await;
    assert_eq!(done["status"], "success", "{done}");
    assert_eq!(done["node"], "y", "{done}");
    let log = std::fs::read_to_string(y_dir.path().join(format!("data/logs/{gpu_build}.log")))
        .expect("y wrote the log");
    assert!(!log.contains("matched with revision"), "{log}");
    let nodes = |runners: &[serde_json::Value]| -> Vec<(String, bool)> {
        runners
            .iter()
            .map(|r| {
                (
                    r["node"].as_str().unwrap_or("").to_owned(),
                    r["gone"] == true,
                )
            })
            .collect()
    };
    assert_eq!(
        nodes(&api_runners(&r).await),
        [("x".to_owned(), false), ("y".to_owned(), false)]
    );

    // A clean stop removes y; a killed x stays, shown gone after three
    // missed heartbeats (its lease is 2 s: one beat every 2/3 s).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(y.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM y");
    y.0.wait().expect("y stops");
    assert_eq!(nodes(&api_runners(&r).await), [("x".to_owned(), false)]);
    x.0.kill().expect("kill x");
    x.0.wait().expect("x died");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = nodes(&api_runners(&r).await);
        if now == [("x".to_owned(), true)] {
            break;
        }
        assert!(Instant::now() < deadline, "x is not shown gone: {now:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The runners receiver `base`'s API lists.
async fn api_runners(base: &str) -> Vec<serde_json::Value> {
    let json: serde_json::Value = common::client()
        .get(format!("{base}/api/runners"))
        .send()
        .await
        .expect("list runners")
        .json()
        .await
        .expect("json");
    json["runners"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("a list: {json}"))
}

/// A page of receiver `base`, as text (200 or a panic).
async fn page_text(base: &str, path: &str) -> String {
    let res = common::client()
        .get(format!("{base}{path}"))
        .send()
        .await
        .expect("page");
    assert_eq!(res.status(), 200, "{path}");
    res.text().await.expect("text")
}

/// A role other than `all` needs a shared PostgreSQL store.
#[test]
fn a_runner_on_the_embedded_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookci.toml");
    std::fs::write(&config, "max_parallel_builds = 1\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookci"))
        .args(["serve", "--role", "runner", "--config"])
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run hookci");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("role \"runner\" needs store"), "{stderr}");
}

/// Two processes on one store: only one is handed reports to send, so a
/// report has one sender; when that process goes, the other takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_at_a_time_sends_the_status_reports() {
    use hookci::store::{NewBuild, NewDelivery};
    let Some(schema) = pg::Schema::create().await else {
        return;
    };
    let a = open_schema_as(&schema, "a").await;
    let b = open_schema_as(&schema, "b").await;
    a.record_deliveries(vec![NewDelivery {
        pipeline: "app".into(),
        delivery_id: "d1".into(),
        host: hookci::webhook::Host::Github,
        event: "push".into(),
        builds: vec![NewBuild {
            pipeline: "app".into(),
            push: main_push(&"a".repeat(40)),
            path_filters: Vec::new(),
            supersede: false,
            waiting: false,
            report_context: Some("ci/app".into()),
            pipeline_revision: None,
        }],
        skipped: None,
        body_sha256: None,
        close: None,
    }])
    .await
    .expect("record");
    let from_a = a.due_reports(i64::MAX, 10).await.expect("due on a");
    let from_b = b.due_reports(i64::MAX, 10).await.expect("due on b");
    assert_eq!(from_a.len(), 1, "the first to ask sends");
    assert!(from_b.is_empty(), "the other sends nothing");
    assert_eq!(b.next_report_due().await.expect("next"), None);
    drop(a);
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if b.due_reports(i64::MAX, 10).await.expect("due on b").len() == 1 {
            break;
        }
        assert!(Instant::now() < until, "b never took over the reports");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A runner whose database sessions are all cut (as a restart of
/// PostgreSQL cuts them) reconnects, hears again, and runs the next build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_whose_database_sessions_are_cut_reconnects_and_runs_the_next_build() {
    let Some(schema) = pg::Schema::create().await else {
        return;
    };
    let up = Upstream::new("cut");
    let commit = up.push(&[("README", "x\n")], "first");
    let toml = common::pipeline_toml("s")
        .clone_url(&up.url())
        .step("work", "echo ok")
        .to_string();
    let (r_dir, x_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_pipeline(r_dir.path(), &toml);
    write_pipeline(x_dir.path(), &toml);
    let node = format!("x-{}", schema.name);
    let (_r, r, _) = spawn_daemon_with_log(
        r_dir.path(),
        &format!(
            "store = {:?}\nnode = \"r\"\nrole = \"receiver\"",
            schema.url
        ),
    );
    let _x = spawn_runner(
        x_dir.path(),
        &format!(
            "store = {:?}\nnode = {node:?}\nmax_parallel_builds = 1",
            schema.url
        ),
    );
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "one");
    let first = common::queue_github(&r, "app", "s", "cut-1", &body).await[0];
    assert_eq!(common::wait_final(&r, first).await["status"], "success");

    schema
        .execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = 'hookci {node}'"
        ))
        .await;
    let next = up.push(&[("README", "y\n")], "second");
    let body = common::github_push(&up.url(), "refs/heads/main", &commit, &next, "two");
    let second = common::queue_github(&r, "app", "s", "cut-2", &body).await[0];
    let done = common::wait_final(&r, second).await;
    assert_eq!(done["status"], "success", "{done}");
    assert!(
        x_dir
            .path()
            .join(format!("data/logs/{second}.log"))
            .exists()
    );
}

/// A process that starts re-queues the builds its own node left running,
/// never those another process is running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_recovers_only_its_own_nodes_builds() {
    use hookci::store::{BuildStatus, ClaimPolicy};
    let Some(schema) = pg::Schema::create().await else {
        return;
    };
    let a = open_schema_as(&schema, "a").await;
    let b = open_schema_as(&schema, "b").await;
    let after = "b".repeat(40);
    let queued = queue_main(&a, &after).await;
    let claimed = a.claim_next(ClaimPolicy::default()).await.expect("claim");
    assert_eq!(claimed.map(|b| b.id), Some(queued));
    // b starts: a's build is a's.
    assert_eq!(b.recover().await.expect("recover b"), Default::default());
    let build = b.build(queued).await.expect("read").expect("the build");
    assert_eq!(build.status, BuildStatus::Running);
    // a starts again: its own build goes back to the queue.
    assert_eq!(a.recover().await.expect("recover a").requeued, [queued]);
}

fn time_of(b: &serde_json::Value, key: &str) -> time::OffsetDateTime {
    let text = b[key].as_str().unwrap_or_else(|| panic!("{key} of {b}"));
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .expect("an RFC 3339 time")
}

/// Three runner processes drain 200 pushes to ten branches: every build
/// succeeds, each branch's builds run one at a time, in the order they
/// were queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_runners_keep_each_branchs_order_and_run_one_build_of_it_at_a_time() {
    let Some(schema) = pg::Schema::create().await else {
        return;
    };
    let up = Upstream::new("order");
    let commit = up.push(&[("README", "x\n")], "first");
    let toml = common::pipeline_toml("s")
        .clone_url(&up.url())
        .step("work", r#"echo "$HOOKCI_BRANCH""#)
        .to_string();
    let r_dir = tempfile::tempdir().unwrap();
    write_pipeline(r_dir.path(), &toml);
    let (_r, r, _) = spawn_daemon_with_log(
        r_dir.path(),
        &format!(
            "store = {:?}\nnode = \"r\"\nrole = \"receiver\"",
            schema.url
        ),
    );
    let mut runners = Vec::new();
    let mut dirs = Vec::new();
    for i in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        write_pipeline(dir.path(), &toml);
        runners.push(spawn_runner(
            dir.path(),
            &format!(
                "store = {:?}\nnode = \"x{i}\"\nmax_parallel_builds = 2",
                schema.url
            ),
        ));
        dirs.push(dir);
    }
    let branches: Vec<String> = (0..10).map(|b| format!("b{b}")).collect();
    let mut ids = Vec::new();
    for n in 0..200 {
        let branch = &branches[n % branches.len()];
        let body = common::github_push(
            &up.url(),
            &format!("refs/heads/{branch}"),
            ZERO,
            &commit,
            &format!("push {n}"),
        );
        ids.push(common::queue_github(&r, "app", "s", &format!("o-{n}"), &body).await[0]);
    }
    let mut done = Vec::new();
    for id in &ids {
        let b = common::wait_final(&r, *id).await;
        assert_eq!(b["status"], "success", "{b}");
        done.push(b);
    }
    for branch in &branches {
        let mut of_branch: Vec<_> = done
            .iter()
            .filter(|b| b["branch"] == branch.as_str())
            .collect();
        of_branch.sort_by_key(|b| b["id"].as_i64());
        for pair in of_branch.windows(2) {
            assert!(
                time_of(pair[1], "started_at") >= time_of(pair[0], "finished_at"),
                "{branch}: build {} started before build {} ended",
                pair[1]["id"],
                pair[0]["id"]
            );
        }
    }
    let ran: usize = dirs
        .iter()
        .map(|d| {
            ids.iter()
                .filter(|id| d.path().join(format!("data/logs/{id}.log")).exists())
                .count()
        })
        .sum();
    assert_eq!(ran, ids.len(), "every build ran once, on one runner");
    // Each build names the runner that ran it (SPEC §11: `node`, shown on
    // builds and in the API), and that runner has its log.
    for b in &done {
        let node = b["node"].as_str().unwrap_or_else(|| panic!("no node: {b}"));
        let i: usize = node
            .strip_prefix('x')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not a runner's node: {b}"));
        let log = dirs[i].path().join(format!("data/logs/{}.log", b["id"]));
        assert!(
            log.exists(),
            "build {} says {node} but has no log there",
            b["id"]
        );
    }
}

/// A database migrated by a newer hookci stops `serve`: exit 2, and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_a_newer_hookci_stops_serve() {
    let Some(schema) = pg::Schema::create().await else {
        return;
    };
    schema
        .execute(
            "CREATE TABLE hookci_schema (version bigint NOT NULL);
             INSERT INTO hookci_schema VALUES (999)",
        )
        .await;
    let url = schema.url.clone();
    let (code, stderr) = tokio::task::spawn_blocking(move || serve_with_store(&url))
        .await
        .unwrap();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("refused to open") && stderr.contains("newer than this hookci knows"),
        "{stderr}"
    );
}

/// The lease of the lease tests: short, so that they run fast.
const SHORT_LEASE: &str = "lease = \"3s\"";

/// A pipeline whose one step, on its first run only, writes its process
/// id to `dir/pid` and sleeps; the next run ends at once. Unsandboxed, so
/// that the step sees `dir` and its pid is this machine's.
/// Its status reports go to `host`.
/// Two processes of one node (two runners on one box, both named by its
/// host name): one that starts while the other runs a build leaves that
/// build alone, as it is not a dead predecessor's; once the first process
/// is gone, a start of the node recovers it.
#[tokio::test]
async fn a_start_leaves_the_builds_of_a_live_process_of_its_node_alone() {
    use hookci::store::{BuildStatus, ClaimPolicy};
    let Some(schema) = pg::Schema::create().await else {
        return;
    };
    let first = open_schema_as(&schema, "box").await;
    first
        .hold_runner_mark()
        .await
        .expect("mark the first runner");
    let queued = queue_main(&first, &"d".repeat(40)).await;
    let claimed = first
        .claim_next(ClaimPolicy::default())
        .await
        .expect("claim");
    assert_eq!(claimed.map(|b| b.id), Some(queued));
    let second = open_schema_as(&schema, "box").await;
    assert_ne!(first.runner_id(), second.runner_id());
    second
        .hold_runner_mark()
        .await
        .expect("mark the second runner");
    assert_eq!(
        second.recover().await.expect("recover"),
        Default::default(),
        "the first process of the node still runs its build"
    );
    let build = second
        .build(queued)
        .await
        .expect("read")
        .expect("the build");
    assert_eq!((build.status, build.attempt), (BuildStatus::Running, 1));
    // The first process goes (its sessions end): the node's next start
    // recovers what it left.
    drop(first);
    let until = Instant::now() + Duration::from_secs(10);
    let third = open_schema_as(&schema, "box").await;
    loop {
        let recovered = third.recover().await.expect("recover");
        if recovered.requeued == [queued] {
            break;
        }
        assert!(
            Instant::now() < until,
            "the gone process's build was never recovered: {recovered:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The same with real processes: runner B starts with A's node name while
/// A runs a build; the build stays A's (attempt 1, running), where before
/// B's start took it for a dead predecessor's and ran it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_started_with_a_live_runners_node_name_leaves_its_build_alone() {
    let Some(schema) = pg::Schema::create().await else {
        return;
    };
    let lost = a_runs_then_b_starts_as(&schema, "samenode", "a").await;
    // B recovers just after it says it claims; give it time to.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b = common::get_build(&lost.r, lost.id)
        .await
        .expect("the build");
    assert_eq!(b["status"], "running", "{b}");
    assert_eq!(b["attempt"], 1, "{b}");
    assert!(
        !lost
            .b_dir
            .path()
            .join(format!("data/logs/{}.log", lost.id))
            .exists(),
        "B ran the build of A"
    );
}

fn first_run_hangs(up: &Upstream, dir: &Path, host: &crate::report_fake::FakeHost) -> String {
    let (mark, pid) = (dir.join("ran"), dir.join("pid"));
    common::pipeline_toml("s")
        .clone_url(&up.url())
        .table("[sandbox]\nenabled = false")
        .table(&format!(
            "[status]\nprovider = \"github\"\napi_url = \"{}\"\ntoken = \"tok\"\n\
             context = \"ci/lease\"",
            host.url()
        ))
        .step(
            "work",
            &format!(
                "if [ ! -e {mark:?} ]; then touch {mark:?}; echo $$ > {pid:?}.tmp; \
                 mv {pid:?}.tmp {pid:?}; sleep 600; fi; echo attempt $HOOKCI_BUILD_ID done"
            ),
        )
        .to_string()
}

/// Waits (bounded) for the pid the step wrote.
async fn step_pid(dir: &Path) -> nix::unistd::Pid {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(dir.join("pid")) {
            return nix::unistd::Pid::from_raw(text.trim().parse().expect("a pid"));
        }
        assert!(Instant::now() < until, "the step never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// True while process `pid` exists (a zombie counts until reaped).
fn alive(pid: nix::unistd::Pid) -> bool {
    nix::sys::signal::kill(pid, None).is_ok()
}

/// The store of the installation in `schema`, as a test reads it.
async fn open_schema(schema: &pg::Schema) -> hookci::store::Store {
    open_schema_as(schema, "test").await
}

/// The store in `schema`, opened by a process named `node`.
pub(crate) async fn open_schema_as(schema: &pg::Schema, node: &str) -> hookci::store::Store {
    hookci::store::Store::open_postgres(
        hookci::store::PgOptions {
            url: hookci::secret::Secret::new(schema.url.clone()),
            node: node.to_owned(),
            pool_size: 2,
        },
        hookci::store::StoreOptions {
            max_queued_builds: 100,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("open the store as {node}: {e}"))
}

/// A push of `after` to `main` of acme/app, as a store test records it.
fn main_push(after: &str) -> hookci::webhook::PushEvent {
    hookci::webhook::PushEvent {
        repo: "acme/app".into(),
        git_ref: "refs/heads/main".into(),
        kind: hookci::webhook::RefKind::Branch("main".into()),
        before: ZERO.parse().unwrap(),
        after: after.parse().unwrap(),
        commit: Some(after.parse().unwrap()),
        created: true,
        deleted: false,
        forced: false,
        clone_url: "https://git.example/acme/app.git".into(),
        ssh_url: None,
        web_url: None,
        message: "m".into(),
        pusher: "p".into(),
        pull_request: None,
    }
}

/// Queues one build of `main` at `after` by hand (as a trigger does);
/// its id.
pub(crate) async fn queue_main(store: &hookci::store::Store, after: &str) -> i64 {
    store
        .queue_manual(
            hookci::store::NewBuild {
                pipeline: "app".into(),
                push: main_push(after),
                path_filters: Vec::new(),
                supersede: false,
                waiting: false,
                report_context: None,
                pipeline_revision: None,
            },
            None,
            hookci::store::BuildOrigin {
                rebuild_of: None,
                triggered_by: "admin".into(),
                resume: None,
            },
        )
        .await
        .expect("queue")
        .id
}

/// The states of build `id`'s status reports, in the order they were
/// written (the outbox's order is the order they are sent in).
async fn report_states(store: &hookci::store::Store, id: i64) -> Vec<String> {
    store
        .reports(id)
        .await
        .expect("reports")
        .iter()
        .map(|r| r.state.as_str().to_owned())
        .collect()
}

/// Runner A and a receiver; A claims the build of one push and its step
/// starts; then runner B starts. Returns (receiver guard, its URL, A, B,
/// the build id, the step's pid, the dirs, the upstream).
pub(crate) struct Lost {
    _r: common::Daemon,
    pub(crate) r: String,
    pub(crate) a: common::Daemon,
    _b: common::Daemon,
    pub(crate) id: i64,
    pid: nix::unistd::Pid,
    pub(crate) a_dir: tempfile::TempDir,
    pub(crate) b_dir: tempfile::TempDir,
    _r_dir: tempfile::TempDir,
    _shared: tempfile::TempDir,
    _up: Upstream,
    host: crate::report_fake::FakeHost,
}

impl Drop for Lost {
    /// A killed runner leaves its step behind: its process group goes too.
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(self.pid, nix::sys::signal::Signal::SIGKILL);
    }
}

pub(crate) async fn a_runs_then_b_starts(schema: &pg::Schema, name: &str) -> Lost {
    a_runs_then_b_starts_as(schema, name, "b").await
}

/// As [`a_runs_then_b_starts`], B with `node = b_node`.
pub(crate) async fn a_runs_then_b_starts_as(schema: &pg::Schema, name: &str, b_node: &str) -> Lost {
    let up = Upstream::new(name);
    let commit = up.push(&[("README", "x\n")], "first");
    let shared = tempfile::tempdir().unwrap();
    let host = crate::report_fake::FakeHost::start(Vec::new()).await;
    let toml = first_run_hangs(&up, shared.path(), &host);
    let (r_dir, a_dir, b_dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    for dir in [r_dir.path(), a_dir.path(), b_dir.path()] {
        write_pipeline(dir, &toml);
    }
    let (r_guard, r, _) = spawn_daemon_with_log(
        r_dir.path(),
        &format!(
            "store = {:?}\nnode = \"r\"\nrole = \"receiver\"\n{SHORT_LEASE}",
            schema.url
        ),
    );
    let a = spawn_runner(
        a_dir.path(),
        &format!(
            "store = {:?}\nnode = \"a\"\nmax_parallel_builds = 1\nshutdown_grace = \"0s\"\n{SHORT_LEASE}",
            schema.url
        ),
    );
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "one");
    let id = common::queue_github(&r, "app", "s", &format!("{name}-1"), &body).await[0];
    let pid = step_pid(shared.path()).await;
    let b = spawn_runner(
        b_dir.path(),
        &format!(
            "store = {:?}\nnode = {b_node:?}\nmax_parallel_builds = 1\n{SHORT_LEASE}",
            schema.url
        ),
    );
    Lost {
        _r: r_guard,
        r,
        a,
        _b: b,
        id,
        pid,
        a_dir,
        b_dir,
        _r_dir: r_dir,
        _shared: shared,
        _up: up,
        host,
    }
}

/// The states the fake host received, once it received a final one
/// (bounded): each is sent after every older one, so a `success` never
/// comes before a `pending`.
async fn states_until_final(host: &crate::report_fake::FakeHost) -> Vec<String> {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let states: Vec<String> = host
            .seen()
            .iter()
            .map(|s| s.json()["state"].as_str().unwrap_or("?").to_owned())
            .collect();
        if states.iter().any(|s| s != "pending") {
            return states;
        }
        assert!(
            Instant::now() < until,
            "no final status arrived: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `states` are some pendings, then one `success`, last.
fn in_order(states: &[String]) {
    let (last, before) = states.split_last().expect("some states");
    assert_eq!(last, "success", "{states:?}");
    assert!(before.iter().all(|s| s == "pending"), "{states:?}");
}

/// Issue 13, test 4: `kill -9` of a runner mid-step. Its build is rescued
/// when its lease runs out and finishes on another runner as attempt 2,
/// within the lease plus 10 s; its reports were written in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runners_build_finishes_on_another_runner_as_attempt_2() {
    let Some(schema) = pg::Schema::create().await else {
        return;
    };
    let mut lost = a_runs_then_b_starts(&schema, "killed").await;
    let id = lost.id;
    lost.a.kill().expect("kill -9 runner a");
    let _ = lost.a.wait();
    let killed = Instant::now();
    // Bounded by the lease plus 10 s, as the issue asks.
    let until = killed + Duration::from_secs(3 + 10);
    let done = loop {
        let b = common::get_build(&lost.r, id).await;
        if let Some(b) = b.filter(|b| !matches!(b["status"].as_str(), Some("queued" | "running"))) {
            break b;
        }
        assert!(
            Instant::now() < until,
            "build {id} did not finish within the lease plus 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done["status"], "success", "{done}");
    assert_eq!(done["attempt"], 2, "{done}");
    let log = std::fs::read_to_string(lost.b_dir.path().join(format!("data/logs/{id}.log")))
        .expect("B ran attempt 2");
    assert!(log.contains("(attempt 2)"), "{log}");
    assert!(log.contains(&format!("attempt {id} done")), "{log}");
    let store = open_schema(&schema).await;
    assert_eq!(
        report_states(&store, id).await,
        ["pending", "running", "pending", "running", "success"]
    );
    in_order(&states_until_final(&lost.host).await);
}

/// Issue 13, test 5: a runner paused (`SIGSTOP`) past its lease loses its
/// build to another runner; resumed (`SIGCONT`), it kills its step, and
/// its late writes change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_runner_kills_its_step_when_resumed_and_its_late_writes_change_nothing() {
    use nix::sys::signal::{Signal, kill};
    let Some(schema) = pg::Schema::create().await else {
        return;
    };
    let lost = a_runs_then_b_starts(&schema, "paused").await;
    let (id, pid) = (lost.id, lost.pid);
    let a_pid = nix::unistd::Pid::from_raw(lost.a.id() as i32);
    kill(a_pid, Signal::SIGSTOP).expect("SIGSTOP runner a");
    let done = common::wait_final(&lost.r, id).await;
    assert_eq!(done["status"], "success", "{done}");
    assert_eq!(done["attempt"], 2, "{done}");
    assert!(alive(pid), "a's step runs on while a is paused");
    let store = open_schema(&schema).await;
    let reports = report_states(&store, id).await;
    let steps = store.steps(id).await.expect("steps");
    kill(a_pid, Signal::SIGCONT).expect("SIGCONT runner a");

    // A kills its step...
    let until = Instant::now() + Duration::from_secs(30);
    while alive(pid) {
        assert!(Instant::now() < until, "a's step was never stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...and ends its attempt: its log says so, the store keeps B's end.
    let a_log = lost.a_dir.path().join(format!("data/logs/{id}.log"));
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&a_log).unwrap_or_default();
        if text.contains("==> build") {
            assert!(text.contains("lost the build's lease"), "{text}");
            break;
        }
        assert!(Instant::now() < until, "a never ended its attempt: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = common::get_build(&lost.r, id).await.expect("the build");
    assert_eq!(after["status"], "success", "{after}");
    assert_eq!(after["attempt"], 2, "{after}");
    assert_eq!(after["reason"], done["reason"], "{after}");
    assert_eq!(after["finished_at"], done["finished_at"], "{after}");
    assert_eq!(report_states(&store, id).await, reports);
    let steps_after = store.steps(id).await.expect("steps");
    assert_eq!(
        steps_after
            .iter()
            .map(|s| (s.status, s.exit_code, s.finished_at))
            .collect::<Vec<_>>(),
        steps
            .iter()
            .map(|s| (s.status, s.exit_code, s.finished_at))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        reports,
        ["pending", "running", "pending", "running", "success"]
    );
    let states = states_until_final(&lost.host).await;
    in_order(&states);
    // Nothing was sent after the final state.
    assert_eq!(lost.host.seen().len(), states.len());
}
