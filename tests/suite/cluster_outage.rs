//! Issue 13, test 6: PostgreSQL stops in the middle of a stream of
//! signed pushes, on a server of the test's own (`pg::Server`), with two
//! receivers and two runners (the real binary). While it is down the
//! receivers answer 503 with `Retry-After` and one sentence, and say they
//! are unhealthy; once it is back, every acknowledged delivery has its
//! build, every build ends `success` (a step that ran across the outage
//! finishes, or its build goes back to the queue by the lease rules), and
//! each commit's statuses reach the host in order.

use crate::cluster::{spawn_runner, write_pipeline};
use crate::common;
use crate::gitserve::Upstream;
use crate::pg;

use crate::report_fake::FakeHost;

use common::{ZERO, spawn_daemon_with_log};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// One signed push sent until a receiver acknowledges it: a 503 must carry
/// `Retry-After` and one sentence without internals, and the sender tries
/// again after it (at most 2 s, to keep the test short). Returns the
/// build ids and how many 503s it met.
async fn deliver(bases: &[String], n: usize, body: &[u8]) -> (Vec<i64>, usize) {
    let delivery = format!("outage-{n}");
    let until = Instant::now() + Duration::from_secs(120);
    let mut refused = 0;
    for attempt in 0.. {
        let base = &bases[(n + attempt) % bases.len()];
        let res = common::client()
            .post(format!("{base}/hooks/app"))
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", &delivery)
            .header("X-Hub-Signature-256", common::hub_sha256("s", body))
            .body(body.to_vec())
            .send()
            .await
            .unwrap_or_else(|e| panic!("receiver {base} did not answer push {n}: {e}"));
        let status = res.status().as_u16();
        let retry_after = res
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or("?").to_owned());
        let json: serde_json::Value = res.json().await.expect("a JSON answer");
        match status {
            200 | 202 => {
                let ids = json["builds"]
                    .as_array()
                    .unwrap_or_else(|| panic!("builds: {json}"))
                    .iter()
                    .map(|b| b["id"].as_i64().expect("an id"))
                    .collect();
                return (ids, refused);
            }
            503 => {
                refused += 1;
                let secs: u64 = retry_after
                    .as_deref()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("a 503 without Retry-After: {json}"));
                assert!((1..=60).contains(&secs), "Retry-After: {secs}");
                one_sentence_without_internals(&json);
                assert!(
                    Instant::now() < until,
                    "push {n} was never acknowledged: {json}"
                );
                tokio::time::sleep(Duration::from_secs(secs.min(2))).await;
            }
            other => panic!("push {n}: {other} {json}"),
        }
    }
    unreachable!()
}

/// `{"error": "..."}`: one sentence that names nothing inside hookci.
fn one_sentence_without_internals(json: &serde_json::Value) {
    let text = json["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error sentence: {json}"));
    assert!(!text.is_empty() && !text.contains('\n'), "{text:?}");
    assert_eq!(
        text.matches(". ").count(),
        0,
        "more than one sentence: {text:?}"
    );
    for internal in [
        "postgres",
        "sql",
        "127.0.0.1",
        "connection",
        "refused",
        "pool",
        "error:",
        "db",
    ] {
        assert!(
            !text.to_lowercase().contains(internal),
            "the answer shows {internal:?}: {text:?}"
        );
    }
}

/// `GET /healthz`: its status code.
async fn health(base: &str) -> u16 {
    common::client()
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz answers")
        .status()
        .as_u16()
}

/// With a 3 s lease, the 6 s outage (a crash: `immediate`, the WAL is
/// replayed at the restart) outlasts the leases: the runners stop
/// the steps they ran and the lease rules put those builds back in the
/// queue (attempt 2), once the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_restart_mid_stream_loses_nothing_and_requeues_by_the_lease_rules() {
    let attempts = outage(Some("3s"), pg::Stop::Immediate).await;
    assert!(
        attempts.iter().all(|a| *a == 1 || *a == 2) && attempts.contains(&2),
        "{attempts:?}"
    );
}

/// With the default lease (30 s), the leases outlast the 6 s outage (a
/// `fast` stop, as `systemctl restart` does): the
/// steps that ran across it finish, and their ends are written once the
/// database is back, in the same attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_restart_mid_stream_loses_nothing_and_running_builds_finish() {
    let attempts = outage(None, pg::Stop::Fast).await;
    assert!(attempts.iter().all(|a| *a == 1), "{attempts:?}");
}

/// The scenario, with `lease` (else the default) on every process and
/// PostgreSQL stopped `how`; returns the attempts of the builds whose step
/// ran when it stopped.
async fn outage(lease: Option<&str>, how: pg::Stop) -> Vec<i64> {
    let Some(mut server) = pg::Server::start().await else {
        return Vec::new();
    };
    let lease = lease.map_or(String::new(), |l| format!("lease = {l:?}"));
    let host = FakeHost::start(Vec::new()).await;
    let up = Upstream::new("outage");
    const PUSHES: usize = 24;
    let commits: Vec<String> = (0..PUSHES)
        .map(|n| up.push(&[("README", &format!("{n}\n"))], &format!("c{n}")))
        .collect();
    let toml = common::pipeline_toml("s")
        .clone_url(&up.url())
        .table(&format!(
            "[status]\nprovider = \"github\"\napi_url = \"{}\"\ntoken = \"tok\"\ncontext = \"ci/outage\"",
            host.url()
        ))
        .step("work", r#"sleep 1; echo "built $HOOKCI_COMMIT""#)
        .to_string();
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    for d in &dirs {
        write_pipeline(d.path(), &toml);
    }
    let store = format!("store = {:?}", server.url);
    let mut receivers = Vec::new();
    let mut bases = Vec::new();
    for (i, d) in dirs[..2].iter().enumerate() {
        let (guard, base, _) = spawn_daemon_with_log(
            d.path(),
            &format!("{store}\nnode = \"r{i}\"\nrole = \"receiver\"\n{lease}"),
        );
        receivers.push(guard);
        bases.push(base);
    }
    let _runners: Vec<common::Daemon> = dirs[2..]
        .iter()
        .enumerate()
        .map(|(i, d)| {
            spawn_runner(
                d.path(),
                &format!("{store}\nnode = \"x{i}\"\nmax_parallel_builds = 2\n{lease}"),
            )
        })
        .collect();

    let body = |n: usize| {
        common::github_push(
            &up.url(),
            &format!("refs/heads/b{}", n % 4),
            ZERO,
            &commits[n],
            &format!("push {n}"),
        )
    };
    // The first part of the stream, with the database up.
    let mut acked: BTreeMap<usize, Vec<i64>> = BTreeMap::new();
    for n in 0..PUSHES / 2 {
        let (ids, refused) = deliver(&bases, n, &body(n)).await;
        assert_eq!(refused, 0, "push {n} was refused with the database up");
        acked.insert(n, ids);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Some step runs when the database goes.
    let until = Instant::now() + Duration::from_secs(60);
    let running = loop {
        let mut running = Vec::new();
        for ids in acked.values() {
            for id in ids {
                let b = common::get_build(&bases[0], *id).await;
                if b.is_some_and(|b| {
                    b["steps"]
                        .as_array()
                        .is_some_and(|s| s.iter().any(|s| s["status"] == "running"))
                }) {
                    running.push(*id);
                }
            }
        }
        if !running.is_empty() {
            break running;
        }
        assert!(Instant::now() < until, "no step ever ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    server.stop(how);
    let down = Instant::now();
    // While it is down: 503 with Retry-After and one sentence, and unhealthy.
    for base in &bases {
        let b = body(PUSHES / 2);
        let res = common::client()
            .post(format!("{base}/hooks/app"))
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", "outage-probe")
            .header("X-Hub-Signature-256", common::hub_sha256("s", &b))
            .body(b)
            .send()
            .await
            .expect("a receiver answers while the database is down");
        assert_eq!(res.status().as_u16(), 503, "{base}");
        assert!(res.headers().contains_key("retry-after"), "{base}");
        one_sentence_without_internals(&res.json().await.expect("JSON"));
        assert_eq!(health(base).await, 503, "{base}/healthz");
    }
    // The rest of the stream: senders retry until the database is back,
    // which it is after 6 s.
    let sender = {
        let bases = bases.clone();
        let bodies: Vec<(usize, Vec<u8>)> = (PUSHES / 2..PUSHES).map(|n| (n, body(n))).collect();
        tokio::spawn(async move {
            let mut acked = BTreeMap::new();
            let mut refused = 0;
            for (n, b) in bodies {
                let (ids, r) = deliver(&bases, n, &b).await;
                refused += r;
                acked.insert(n, ids);
            }
            (acked, refused)
        })
    };
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(down.elapsed())).await;
    server.restart().await;
    let (rest, refused) = sender.await.expect("the sender");
    assert!(refused > 0, "no push met the outage");
    eprintln!("{refused} answers were 503 while the database was down");
    acked.extend(rest);
    for base in &bases {
        let until = Instant::now() + Duration::from_secs(30);
        while health(base).await != 200 {
            assert!(Instant::now() < until, "{base} never became healthy again");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Every acknowledged delivery has its one build, and each succeeds.
    let mut running_attempts = Vec::new();
    let all: Vec<i64> = acked.values().flatten().copied().collect();
    assert_eq!(all.len(), PUSHES, "one build per push: {acked:?}");
    for (n, ids) in &acked {
        let id = ids[0];
        let b = common::wait_final(&bases[n % 2], id).await;
        assert_eq!(b["status"], "success", "push {n}, build {id}: {b}");
        assert_eq!(b["commit"], commits[*n].as_str(), "{b}");
        if running.contains(&id) {
            running_attempts.push(b["attempt"].as_i64().expect("an attempt"));
        }
        eprintln!(
            "push {n}: build {id} attempt {} on {} (running at the stop: {})",
            b["attempt"],
            b["node"],
            running.contains(&id)
        );
    }
    let listed: serde_json::Value = common::client()
        .get(format!("{}/api/builds?limit=100", bases[1]))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let listed: BTreeSet<i64> = listed["builds"]
        .as_array()
        .expect("builds")
        .iter()
        .map(|b| b["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(
        listed,
        all.iter().copied().collect::<BTreeSet<_>>(),
        "no build more, none less"
    );

    // Each commit's statuses reached the host in order: pendings, then
    // success.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = host.seen();
        let mut per_commit: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in &seen {
            let sha = s.path.rsplit('/').next().unwrap_or("").to_owned();
            per_commit
                .entry(sha)
                .or_default()
                .push(s.json()["state"].as_str().unwrap_or("?").to_owned());
        }
        let finished = commits
            .iter()
            .filter(|c| {
                per_commit
                    .get(*c)
                    .is_some_and(|s| s.contains(&"success".into()))
            })
            .count();
        if finished == PUSHES {
            // A report sent as the database went away may be sent again
            // (at least once), but never an older state after a newer one.
            for (sha, states) in &per_commit {
                let first = states
                    .iter()
                    .position(|s| s == "success")
                    .expect("a success");
                assert!(
                    states[..first].iter().all(|s| s == "pending")
                        && states[first..].iter().all(|s| s == "success"),
                    "{sha}: {states:?}"
                );
            }
            break;
        }
        assert!(
            Instant::now() < until,
            "{finished} of {PUSHES} commits got their success status: {per_commit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(receivers);
    running_attempts
}

/// A build whose end the database refuses (here a trigger refuses
/// `success`) is not renewed for good by its runner, as if it still ran
/// it: the runner gives its lease up, and the lease rules end it (re-queued
/// once, then `error`), instead of leaving it `running`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_whose_end_cannot_be_written_is_not_left_running() {
    let Some(schema) = pg::Schema::create().await else {
        return;
    };
    let up = Upstream::new("refused-end");
    let commit = up.push(&[("README", "x\n")], "first");
    let toml = common::pipeline_toml("s")
        .clone_url(&up.url())
        .step("work", "echo ok")
        .to_string();
    let (r_dir, x_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_pipeline(r_dir.path(), &toml);
    write_pipeline(x_dir.path(), &toml);
    let lease = "lease = \"3s\"";
    let (_r, r, _) = spawn_daemon_with_log(
        r_dir.path(),
        &format!(
            "store = {:?}\nnode = \"r\"\nrole = \"receiver\"\n{lease}",
            schema.url
        ),
    );
    schema
        .execute(
            "CREATE FUNCTION refuse_success() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'refused by the test'; END $$;
             CREATE TRIGGER refuse_success BEFORE UPDATE ON builds FOR EACH ROW
             WHEN (NEW.status = 'success') EXECUTE FUNCTION refuse_success();",
        )
        .await;
    let _x = spawn_runner(
        x_dir.path(),
        &format!(
            "store = {:?}\nnode = \"x\"\nmax_parallel_builds = 1\n{lease}",
            schema.url
        ),
    );
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "one");
    let id = common::queue_github(&r, "app", "s", "refused-1", &body).await[0];
    let done = common::wait_final(&r, id).await;
    assert_eq!(done["status"], "error", "{done}");
    assert_eq!(done["attempt"], 2, "{done}");
    assert!(
        done["reason"]
            .as_str()
            .is_some_and(|r| r.contains("interrupted twice")),
        "{done}"
    );
}
