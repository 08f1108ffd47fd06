//! Logs across boxes (SPEC 11: "Logs and the live log stream are served by
//! every receiver"; issue 13, test 7's second half): a runner on one box
//! ships a build's log to PostgreSQL as it writes it, and a receiver on
//! another box, which has no file of it, serves it live (the API's stream,
//! the build page's stream, `hookci logs --follow`) and whole after, byte
//! for byte, masked as the runner masked it; a build re-run as attempt 2
//! shows only attempt 2's log.

use crate::cluster::{
    a_runs_then_b_starts, open_schema_as, queue_main, spawn_runner, write_pipeline,
};
use crate::common;
use crate::gitserve;
use crate::pg;

use common::{ZERO, spawn_daemon_with_log};
use eventsource_stream::Eventsource as _;
use futures_util::StreamExt as _;
use gitserve::Upstream;
use std::time::{Duration, Instant};

const SECRET_VALUE: &str = "ship-secret-9137";

/// The events of the SSE stream at `url`, each with when it arrived, until
/// an `end` event (included) or 120 s.
async fn sse_events(url: String) -> Vec<(Instant, String, String)> {
    let res = common::client()
        .get(&url)
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("open the stream");
    assert!(res.status().is_success(), "{url}: {}", res.status());
    let chunks = futures_util::stream::try_unfold(res, |mut res| async move {
        Ok::<_, reqwest::Error>(res.chunk().await?.map(|chunk| (chunk, res)))
    });
    let mut events = std::pin::pin!(chunks.eventsource());
    let mut out = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let next = tokio::time::timeout_at(until, events.next())
            .await
            .unwrap_or_else(|_| panic!("{url}: no end within 120 s: {out:?}"));
        let Some(event) = next else {
            panic!("{url}: the stream closed without an end: {out:?}");
        };
        let event = event.expect("an event");
        let end = event.event == "end";
        out.push((Instant::now(), event.event, event.data));
        if end {
            return out;
        }
    }
}

/// When the first event whose data holds `text` arrived.
fn arrival(events: &[(Instant, String, String)], text: &str) -> Instant {
    events
        .iter()
        .find(|(_, _, data)| data.contains(text))
        .unwrap_or_else(|| panic!("no event holds {text:?}: {events:?}"))
        .0
}

async fn api_log(base: &str, id: i64) -> Vec<u8> {
    let res = common::client()
        .get(format!("{base}/api/builds/{id}/log"))
        .send()
        .await
        .expect("get the log");
    assert!(res.status().is_success(), "{}", res.status());
    res.bytes().await.expect("the log").to_vec()
}

/// A receiver that does not hold a pipeline's step secrets (SPEC 11: each
/// role holds only what it needs) cannot mask what a step prints split by
/// an escape sequence, which no byte of the runner's file holds whole: the
/// runner masks it in place as it ships the log (`*` for each character a
/// page would show, escapes and length kept). B's log never shows it, and
/// is as long as A's file, so offsets and line times still hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_split_by_an_escape_is_masked_for_a_receiver_without_the_secret() {
    let Some(schema) = pg::Schema::create().await else {
        return;
    };
    let up = Upstream::new("splitlog");
    let commit = up.push(&[("README", "x\n")], "first");
    let step = r#"a=${TOKEN%%-*}; b=${TOKEN#*-}; printf 'shown: %s\033[0m-%s end\n' "$a" "$b"; echo after"#;
    let pipeline = |secrets: bool| {
        let p = common::pipeline_toml("s").clone_url(&up.url());
        let p = if secrets {
            p.table("[secrets]\nTOKEN = \"split-secret-5521\"")
        } else {
            p
        };
        p.step("split", step).to_string()
    };
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_pipeline(a_dir.path(), &pipeline(true));
    // The receiver's copy of the pipeline has no `[secrets]`.
    write_pipeline(b_dir.path(), &pipeline(false));
    let (_b_guard, b, _) = spawn_daemon_with_log(
        b_dir.path(),
        &format!(
            "store = {:?}\nnode = \"b\"\nrole = \"receiver\"",
            schema.url
        ),
    );
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "split");
    let id = common::queue_github(&b, "app", "s", "split-1", &body).await[0];
    let _a = spawn_runner(
        a_dir.path(),
        &format!(
            "store = {:?}\nnode = \"a\"\nmax_parallel_builds = 1",
            schema.url
        ),
    );
    let done = common::wait_final(&b, id).await;
    assert_eq!(done["status"], "success", "{done}");
    let file = std::fs::read(a_dir.path().join(format!("data/logs/{id}.log"))).expect("A's file");
    assert!(
        file.windows(6).any(|w| w == b"\x1b[0m-s"),
        "the step printed the secret split: {}",
        String::from_utf8_lossy(&file)
    );
    let served = api_log(&b, id).await;
    assert_eq!(
        served.len(),
        file.len(),
        "the same length as the runner's file"
    );
    let shown = hookci::runner::log::visible::visible_text(&served);
    let shown = String::from_utf8_lossy(&shown);
    assert!(!shown.contains("split-secret-5521"), "{shown}");
    assert!(shown.contains("shown: ***************** end"), "{shown}");
    assert!(shown.contains("after"), "{shown}");
    let html = common::client()
        .get(format!("{b}/builds/{id}"))
        .send()
        .await
        .expect("the build page")
        .text()
        .await
        .expect("html");
    assert!(html.contains("shown: "), "{html}");
    assert!(!html.contains("secret-5521"), "{html}");
}

/// Test (a) and (b): runner A runs a step that prints a line every 0.4 s;
/// receiver B, which runs nothing and has no file of the log, streams it
/// as it arrives, to the API's stream, the build page's stream and
/// `hookci logs --follow`, each ending with the build; after, B's log is
/// A's file byte for byte, with the secret A masked masked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_streams_and_serves_the_log_of_a_build_running_on_another_box() {
    let Some(schema) = pg::Schema::create().await else {
        return;
    };
    let up = Upstream::new("shiplog");
    let commit = up.push(&[("README", "x\n")], "first");
    let toml = common::pipeline_toml("s")
        .clone_url(&up.url())
        .table(&format!("[secrets]\nTOKEN = {SECRET_VALUE:?}"))
        .step(
            "ticks",
            r#"for i in 1 2 3 4 5 6 7 8 9 10; do echo "tick $i"; sleep 0.4; done; echo "token $TOKEN""#,
        )
        .to_string();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_pipeline(a_dir.path(), &toml);
    write_pipeline(b_dir.path(), &toml);
    let b_config = format!(
        "store = {:?}\nnode = \"b\"\nrole = \"receiver\"",
        schema.url
    );
    let (b_guard, b, _) = spawn_daemon_with_log(b_dir.path(), &b_config);
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "ticks");
    let id = common::queue_github(&b, "app", "s", "ticks-1", &body).await[0];
    // Every reader starts while the build is queued: nothing runs yet.
    let api = tokio::spawn(sse_events(format!("{b}/api/builds/{id}/log/stream")));
    let page = tokio::spawn(sse_events(format!(
        "{b}/builds/{id}/live?from=0&line=1&grp=0"
    )));
    let cli = tokio::spawn(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_hookci"))
            .args(["logs", &id.to_string(), "--follow", "--server", &b])
            .env_remove("HOOKCI_CONFIG")
            .env_remove("HOOKCI_TOKEN")
            .env_remove("HOOKCI_SERVER")
            .env("HOOKCI_LOG", "warn")
            .current_dir(b_dir.path())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    );
    let _a = spawn_runner(
        a_dir.path(),
        &format!(
            "store = {:?}\nnode = \"a\"\nmax_parallel_builds = 1",
            schema.url
        ),
    );

    let api = api.await.expect("the API stream");
    // Lines arrive as the step prints them, not all at its end: the ten
    // ticks are 3.6 s apart.
    let (first, last) = (arrival(&api, "tick 1"), arrival(&api, "tick 10"));
    assert!(
        last.duration_since(first) >= Duration::from_secs(2),
        "the ticks came together: {api:?}"
    );
    let (_, kind, status) = api.last().expect("an end");
    assert_eq!((kind.as_str(), status.as_str()), ("end", "success"));
    let streamed: String = api
        .iter()
        .filter(|(_, kind, _)| kind == "message")
        .map(|(_, _, data)| data.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(streamed.contains("token ***"), "{streamed}");
    assert!(!streamed.contains(SECRET_VALUE), "{streamed}");

    let page = page.await.expect("the page's stream");
    let (first, last) = (arrival(&page, "tick 1"), arrival(&page, "tick 10"));
    assert!(
        last.duration_since(first) >= Duration::from_secs(2),
        "the page's ticks came together: {page:?}"
    );
    assert_eq!(page.last().map(|e| e.1.as_str()), Some("end"));

    let cli = tokio::time::timeout(Duration::from_secs(60), cli)
        .await
        .expect("hookci logs --follow ended")
        .expect("join")
        .expect("run hookci logs");
    let printed = String::from_utf8_lossy(&cli.stdout);
    assert!(
        cli.status.success(),
        "{printed}\n{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    for i in 1..=10 {
        assert!(printed.contains(&format!("tick {i}\n")), "{printed}");
    }
    assert!(printed.contains("token ***"), "{printed}");
    assert!(!printed.contains(SECRET_VALUE), "{printed}");

    // After the build: B's log is A's file, byte for byte; B has no file.
    let done = common::wait_final(&b, id).await;
    assert_eq!(done["status"], "success", "{done}");
    let file = std::fs::read(a_dir.path().join(format!("data/logs/{id}.log"))).expect("A's file");
    let served = api_log(&b, id).await;
    assert_eq!(
        String::from_utf8_lossy(&served),
        String::from_utf8_lossy(&file)
    );
    assert_eq!(served, file);
    assert!(!b_dir.path().join(format!("data/logs/{id}.log")).exists());
    let text = String::from_utf8_lossy(&served);
    assert!(text.contains("token ***"), "{text}");
    assert!(!text.contains(SECRET_VALUE), "{text}");
    let html = common::client()
        .get(format!("{b}/builds/{id}"))
        .send()
        .await
        .expect("the build page")
        .text()
        .await
        .expect("html");
    assert!(html.contains("tick 10"), "{html}");
    assert!(!html.contains(SECRET_VALUE));

    // A receiver restarted (its copies are a cache, emptied at start)
    // serves the same log.
    let mirror = b_dir.path().join("data/logs/mirror");
    assert!(
        std::fs::read_dir(&mirror).expect("B's copies").count() > 0,
        "B keeps a copy"
    );
    drop(b_guard);
    let (_b, b, _) = spawn_daemon_with_log(b_dir.path(), &b_config);
    assert_eq!(api_log(&b, id).await, file);
}

/// Test (c): runner A is killed mid-step; its build runs again on runner B
/// as attempt 2. The receiver's stream that followed attempt 1 ends and
/// never shows attempt 2's bytes; after, the receiver serves attempt 2's
/// log only, B's file byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runners_build_shows_only_attempt_2s_log_on_the_receiver() {
    let Some(schema) = pg::Schema::create().await else {
        return;
    };
    let mut lost = a_runs_then_b_starts(&schema, "shipkill").await;
    let id = lost.id;
    // Attempt 1's log reaches the receiver while it runs.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let log = String::from_utf8_lossy(&api_log(&lost.r, id).await).into_owned();
        if log.contains("(attempt 1)") && log.contains("==> step work") {
            break;
        }
        assert!(Instant::now() < until, "attempt 1's log never came: {log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let following = tokio::spawn(sse_events(format!("{}/api/builds/{id}/log/stream", lost.r)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    lost.a.kill().expect("kill -9 runner a");
    let _ = lost.a.wait();
    let done = common::wait_final(&lost.r, id).await;
    assert_eq!(
        (done["status"].as_str(), done["attempt"].as_i64()),
        (Some("success"), Some(2))
    );

    let followed = tokio::time::timeout(Duration::from_secs(60), following)
        .await
        .expect("the stream of attempt 1 ended")
        .expect("join");
    let text: String = followed
        .iter()
        .filter(|(_, kind, _)| kind == "message")
        .map(|(_, _, data)| data.as_str())
        .collect();
    assert!(text.contains("(attempt 1)"), "{text}");
    assert!(!text.contains("(attempt 2)"), "mixed: {text}");

    let served = api_log(&lost.r, id).await;
    let file =
        std::fs::read(lost.b_dir.path().join(format!("data/logs/{id}.log"))).expect("B's file");
    assert_eq!(
        String::from_utf8_lossy(&served),
        String::from_utf8_lossy(&file)
    );
    let text = String::from_utf8_lossy(&served);
    assert!(text.contains("(attempt 2)"), "{text}");
    assert!(!text.contains("(attempt 1)"), "{text}");
    assert!(
        lost.a_dir
            .path()
            .join(format!("data/logs/{id}.log"))
            .exists()
    );
}

/// The database fails the runner while it ships (its sessions are cut,
/// three times, while the step prints): the step goes on, the shipper
/// retries and catches up, and the receiver serves the whole log, the
/// runner's file byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_shipped_through_cut_database_sessions_arrives_whole() {
    let Some(schema) = pg::Schema::create().await else {
        return;
    };
    let up = Upstream::new("shipcut");
    let commit = up.push(&[("README", "x\n")], "first");
    let toml = common::pipeline_toml("s")
        .clone_url(&up.url())
        .step(
            "ticks",
            r#"for i in $(seq 1 12); do seq -f "tick $i line %g" 1 2000; sleep 0.3; done"#,
        )
        .to_string();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_pipeline(a_dir.path(), &toml);
    write_pipeline(b_dir.path(), &toml);
    let (_b, b, _) = spawn_daemon_with_log(
        b_dir.path(),
        &format!(
            "store = {:?}\nnode = \"b\"\nrole = \"receiver\"",
            schema.url
        ),
    );
    let node = format!("a-{}", schema.name);
    let _a = spawn_runner(
        a_dir.path(),
        &format!(
            "store = {:?}\nnode = {node:?}\nmax_parallel_builds = 1",
            schema.url
        ),
    );
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "cut");
    let id = common::queue_github(&b, "app", "s", "cut-1", &body).await[0];
    let following = tokio::spawn(sse_events(format!("{b}/api/builds/{id}/log/stream")));
    common::wait_build(&b, id, |b| b["status"] == "running").await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        schema
            .execute(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE application_name = 'hookci {node}'"
            ))
            .await;
    }
    let done = common::wait_final(&b, id).await;
    assert_eq!(done["status"], "success", "{done}");
    let file = std::fs::read(a_dir.path().join(format!("data/logs/{id}.log"))).expect("A's file");
    assert!(String::from_utf8_lossy(&file).contains("tick 12 line 2000\n"));
    assert_eq!(api_log(&b, id).await, file);
    let followed = following.await.expect("the stream");
    let text: String = followed
        .iter()
        .filter(|(_, kind, _)| kind == "message")
        .map(|(_, _, data)| format!("{data}\n"))
        .collect();
    assert!(text.contains("tick 12 line 2000"), "the stream ended early");
    assert_eq!(followed.last().map(|e| e.2.as_str()), Some("success"));
}

/// A receiver's copy of a shipped log, driven through the store: two
/// followers share one copy and follow it live; a new run (attempt 2)
/// ends the old run's followers, whose copy goes, and a new follower
/// reads the new run only; once the build is pruned, its copy goes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receivers_copy_follows_one_run_at_a_time_and_goes_with_its_build() {
    use hookci::runner::log::mirror::Mirrors;
    use hookci::store::{BuildStatus, ClaimPolicy, LogChunk};
    let Some(schema) = pg::Schema::create().await else {
        return;
    };
    let store = open_schema_as(&schema, "runner")
        .await
        .with_lease(Duration::from_secs(1));
    let receiver = open_schema_as(&schema, "receiver").await;
    let id = queue_main(&store, &"c".repeat(40)).await;
    let first = store
        .claim_next(ClaimPolicy::default())
        .await
        .unwrap()
        .expect("claimed");
    let run = store.for_run(&first);
    let r1 = run.log_begin(id).await.unwrap().expect("a run");
    let chunk = |offset: u64, data: &[u8]| LogChunk {
        offset,
        data: data.to_vec(),
        times: Vec::new(),
    };
    run.log_append(id, r1, chunk(0, b"one\n"), false)
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mirrors = Mirrors::open(dir.path().join("mirror"), receiver.clone()).expect("open");
    let mut a = mirrors.follow(id).await.unwrap().expect("a follower");
    let mut b = mirrors.follow(id).await.unwrap().expect("another");
    let next = |f: &mut hookci::runner::log::LogFollower| {
        let mut f = f.clone();
        async move {
            let mut got = Vec::new();
            let until = Instant::now() + Duration::from_secs(20);
            while let Ok(Ok(Some(c))) = tokio::time::timeout(
                until.saturating_duration_since(Instant::now()),
                f.next_chunk(),
            )
            .await
            {
                got.extend(c);
            }
            got
        }
    };
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), a.next_chunk())
            .await
            .expect("in time")
            .unwrap()
            .as_deref(),
        Some(&b"one\n"[..])
    );
    run.log_append(id, r1, chunk(4, b"two\n"), false)
        .await
        .unwrap();
    // Live: the second line reaches the follower while the log is open.
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), a.next_chunk())
            .await
            .expect("the second line came live")
            .unwrap()
            .as_deref(),
        Some(&b"two\n"[..])
    );
    let copies = || {
        std::fs::read_dir(dir.path().join("mirror"))
            .unwrap()
            .count()
    };
    assert_eq!(copies(), 2, "one copy (log and times) for both followers");

    // The runner loses the build; attempt 2 begins a new run.
    let until = Instant::now() + Duration::from_secs(20);
    while store.rescue().await.unwrap().requeued.is_empty() {
        assert!(Instant::now() < until, "never rescued");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ended_b = next(&mut b).await;
    assert_eq!(
        ended_b, b"one\ntwo\n",
        "attempt 1's follower ends with its run"
    );
    let second = store
        .claim_next(ClaimPolicy::default())
        .await
        .unwrap()
        .expect("again");
    assert_eq!(second.attempt, 2);
    let run2 = store.for_run(&second);
    let r2 = run2.log_begin(id).await.unwrap().expect("a run");
    run2.log_append(id, r2, chunk(0, b"attempt 2\n"), true)
        .await
        .unwrap();
    let c = mirrors.follow(id).await.unwrap().expect("a follower");
    assert_eq!(next(&mut c.clone()).await, b"attempt 2\n");
    let file = mirrors.file(id).await.unwrap().expect("a copy");
    assert_eq!(std::fs::read(&file.path).unwrap(), b"attempt 2\n");
    assert_eq!(copies(), 2, "attempt 1's copy is gone");
    drop((a, b, c, file));

    // Pruned: the log goes with the build, and the copy with the log.
    run2.finish(id, BuildStatus::Success, None).await.unwrap();
    assert_eq!(store.prune("app".into(), 0).await.unwrap(), [id]);
    // (A copier still ending holds the copy a moment.)
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        mirrors.sweep().await;
        if copies() == 0 {
            break;
        }
        assert!(Instant::now() < until, "the pruned build's copy stays");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(mirrors.file(id).await.unwrap().is_none());
}
