//! `GET /metrics` end to end: signed deliveries, real builds of real git
//! repositories and a fake status API drive the real server, and the
//! scraped OpenMetrics text is parsed into samples and checked.

use crate::common;
use crate::gitserve;
use crate::report_fake;

use common::{TestServer, ZERO, client};
use gitserve::Upstream;
use report_fake::{FakeHost, Reply};
use std::collections::BTreeMap;

const SECRET: &str = "metrics-secret";
const ADMIN: &str = "metrics-admin-token";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One sample line: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the sample lines of OpenMetrics text (comments skipped); panics
/// on a line that is not one, so a malformed answer fails the test.
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| parse_line(line).unwrap_or_else(|| panic!("not a sample line: {line:?}")))
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    // We emit no timestamps or exemplars: the value is the last field.
    let (head, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match head.split_once('{') {
        None => (head, BTreeMap::new()),
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `k="v",k2="v2"` (with `\"`, `\\` and `\n` escapes in values).
fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars();
    loop {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if key.is_empty() {
            return Some(labels);
        }
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                c => value.push(c),
            }
        }
        labels.insert(key, value);
        match chars.next() {
            None => return Some(labels),
            Some(',') => {}
            Some(_) => return None,
        }
    }
}

/// The samples named `name`.
fn series<'a>(samples: &'a [Sample], name: &str) -> Vec<&'a Sample> {
    samples.iter().filter(|s| s.name == name).collect()
}

/// The value of the sample `name` with exactly `labels`, if there is one.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let found: Vec<_> = series(samples, name)
        .into_iter()
        .filter(|s| s.labels == want)
        .collect();
    assert!(found.len() <= 1, "{name} {labels:?} appears twice");
    found.first().map(|s| s.value)
}

/// Scrapes `/metrics`, expecting 200 in OpenMetrics text; returns the text.
async fn scrape(server: &TestServer) -> String {
    let res = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some(OPENMETRICS)
    );
    res.text().await.expect("the metrics text")
}

fn pipeline(secret: &str) -> String {
    common::pipeline_toml(secret).step("t", "true").to_string()
}

/// A push of branch `branch` of the fixture's repository, cloned from
/// nowhere (these servers only queue).
fn push(branch: &str) -> Vec<u8> {
    common::github_push(
        "https://example.invalid/repo.git",
        &format!("refs/heads/{branch}"),
        ZERO,
        "1111111111111111111111111111111111111111",
        "metrics",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_counted_by_pipeline_and_answer_with_one_label_for_unknown_pipelines() {
    let server = TestServer::start(
        &[
            ("app", &pipeline(SECRET)),
            ("other", &pipeline("other-secret")),
        ],
        |_| {},
    )
    .await;
    let base = server.base();
    for branch in ["a", "b", "c"] {
        common::queue_github(&base, "app", SECRET, &format!("d-{branch}"), &push(branch)).await;
    }
    common::queue_github(&base, "other", "other-secret", "d-other", &push("d")).await;
    let (status, _) = common::send_github(&base, "app", "wrong-secret", "d-bad", &push("e")).await;
    assert_eq!(status, 401);
    for name in ["nope", "also-nope"] {
        let (status, _) = common::send_github(&base, name, SECRET, "d-404", &push("f")).await;
        assert_eq!(status, 404);
    }
    // One org-wide delivery: both pipelines build the repository, app's
    // secret verifies it.
    let body = push("g");
    let res = client()
        .post(server.url("/hooks"))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", "d-org")
        .header("X-Hub-Signature-256", common::hub_sha256(SECRET, &body))
        .body(body)
        .send()
        .await
        .expect("deliver");
    assert_eq!(res.status(), 202);

    let text = scrape(&server).await;
    assert_eq!(text.lines().last(), Some("# EOF"), "{text}");
    let samples = parse(&text);
    let deliveries = "hookci_webhook_deliveries_total";
    let mut seen: Vec<(String, String, f64)> = series(&samples, deliveries)
        .into_iter()
        .map(|s| {
            (
                s.labels["pipeline"].clone(),
                s.labels["code"].clone(),
                s.value,
            )
        })
        .collect();
    seen.sort_by(|a, b| a.partial_cmp(b).expect("numbers"));
    let want: Vec<(String, String, f64)> = [
        ("_org_wide", "202", 1.0),
        ("_unknown", "404", 2.0),
        ("app", "202", 3.0),
        ("app", "401", 1.0),
        ("other", "202", 1.0),
    ]
    .iter()
    .map(|(p, c, n)| ((*p).to_owned(), (*c).to_owned(), *n))
    .collect();
    assert_eq!(seen, want, "{text}");
    assert!(
        !text.contains("nope"),
        "a raw URL segment became a label: {text}"
    );

    let queued_in_store = server.store().queued_count().await.expect("count");
    assert_eq!(queued_in_store, 5);
    assert_eq!(
        value(&samples, "hookci_builds_queued", &[]),
        Some(queued_in_store as f64),
        "{text}"
    );
    assert_eq!(value(&samples, "hookci_builds_running", &[]), Some(0.0));
    assert_eq!(
        value(
            &samples,
            "hookci_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0),
        "{text}"
    );
    let started = value(&samples, "process_start_time_seconds", &[]).expect("a start time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    assert!(
        started > now - 600.0 && started <= now,
        "{started} vs {now}"
    );
    server.stop().await;
}

/// Seconds from RFC 3339 time `a` to `b`.
fn seconds_between(a: &serde_json::Value, b: &serde_json::Value) -> f64 {
    use time::format_description::well_known::Rfc3339;
    let at = |v: &serde_json::Value| {
        let text = v.as_str().unwrap_or_else(|| panic!("a time: {v}"));
        time::OffsetDateTime::parse(text, &Rfc3339).expect("RFC 3339")
    };
    (at(b) - at(a)).as_seconds_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_that_run_are_counted_by_status_with_their_durations_and_queue_waits() {
    let up = Upstream::new("metrics");
    let commit = up.push(&[("README", "x\n")], "metrics");
    let repo = "Codertocat/Hello-World";
    let clone = up.url();
    let steps = |run: &str| {
        format!(
            "repo = \"{repo}\"\nsecret = \"{SECRET}\"\nclone_url = {clone:?}\n[[steps]]\nname = \"t\"\nrun = \"{run}\"\n"
        )
    };
    let server = TestServer::start(
        &[("ok", &steps("sleep 0.3")), ("bad", &steps("exit 3"))],
        |c| c.max_parallel_builds = 1,
    )
    .await;
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "metrics");
    let base = server.base();
    let ok = common::queue_github(&base, "ok", SECRET, "d-ok", &body).await[0];
    let bad = common::queue_github(&base, "bad", SECRET, "d-bad", &body).await[0];
    let ok_build = common::wait_final(&base, ok).await;
    let bad_build = common::wait_final(&base, bad).await;
    assert_eq!(ok_build["status"], "success");
    assert_eq!(bad_build["status"], "failure");

    let text = scrape(&server).await;
    let samples = parse(&text);
    let finished = "hookci_builds_finished_total";
    assert_eq!(series(&samples, finished).len(), 2, "{text}");
    assert_eq!(
        value(
            &samples,
            finished,
            &[("pipeline", "ok"), ("status", "success")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &samples,
            finished,
            &[("pipeline", "bad"), ("status", "failure")]
        ),
        Some(1.0),
        "{text}"
    );
    for (pipeline, build) in [("ok", &ok_build), ("bad", &bad_build)] {
        let labels = [("pipeline", pipeline)];
        let count = "hookci_build_duration_seconds_count";
        assert_eq!(value(&samples, count, &labels), Some(1.0), "{text}");
        let inf = [("pipeline", pipeline), ("le", "+Inf")];
        assert_eq!(
            value(&samples, "hookci_build_duration_seconds_bucket", &inf),
            Some(1.0),
            "{text}"
        );
        let wait = "hookci_build_queue_wait_seconds_count";
        assert_eq!(value(&samples, wait, &labels), Some(1.0), "{text}");
        // The one wait observed is the build's time from queued to started
        // (bad waited behind ok: one build at a time).
        let wait = "hookci_build_queue_wait_seconds_sum";
        let observed = value(&samples, wait, &labels).expect("a wait");
        let queued_for = seconds_between(&build["created_at"], &build["started_at"]);
        assert!(
            (observed - queued_for).abs() < 0.002,
            "{observed} vs {queued_for}"
        );
    }
    // The successful build slept 0.3 s, and that is in its duration.
    let sum = value(
        &samples,
        "hookci_build_duration_seconds_sum",
        &[("pipeline", "ok")],
    )
    .expect("a sum");
    assert!((0.3..120.0).contains(&sum), "{sum}");
    // The hour bucket is there: durations are bucketed up to an hour.
    assert!(
        value(
            &samples,
            "hookci_build_duration_seconds_bucket",
            &[("pipeline", "ok"), ("le", "3600.0")]
        )
        .is_some(),
        "{text}"
    );
    assert_eq!(value(&samples, "hookci_builds_running", &[]), Some(0.0));
    assert_eq!(value(&samples, "hookci_builds_queued", &[]), Some(0.0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_report_sends_are_counted_by_provider_and_outcome() {
    // The first send gets a 503 (retried later); every other one is taken.
    let host = FakeHost::start(vec![Reply::Status(503)]).await;
    let up = Upstream::new("reports");
    let commit = up.push(&[("README", "x\n")], "reports");
    let toml = common::pipeline_toml(SECRET)
        .clone_url(&up.url())
        .table(&format!(
            "[status]\nprovider = \"github\"\napi_url = \"{}\"\ntoken = \"tok\"\ncontext = \"ci/metrics\"",
            host.url()
        ))
        .step("t", "true")
        .to_string();
    let server = TestServer::start(&[("app", &toml)], |c| c.max_parallel_builds = 1).await;
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "reports");
    let base = server.base();
    let id = common::queue_github(&base, "app", SECRET, "d-report", &body).await[0];
    // The final state's report is sent last (one in flight per commit and
    // context), and counted before it is recorded as delivered.
    common::wait_build(&base, id, |b| {
        b["reports"].as_array().is_some_and(|r| {
            r.iter()
                .any(|r| r["state"] == "success" && r["outcome"] == "delivered")
        })
    })
    .await;
    let sent = host.seen().len();
    assert!(sent >= 2, "{sent}");

    let text = scrape(&server).await;
    let samples = parse(&text);
    let reports = "hookci_status_reports_total";
    assert_eq!(
        value(
            &samples,
            reports,
            &[("provider", "github"), ("outcome", "retry")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &samples,
            reports,
            &[("provider", "github"), ("outcome", "delivered")]
        ),
        Some((sent - 1) as f64),
        "{text}"
    );
    assert_eq!(series(&samples, reports).len(), 2, "{text}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_a_host_keeps_refusing_show_as_pending_in_the_outbox() {
    // The host answers 503 to everything for now: reports stay pending.
    let host = FakeHost::start(vec![Reply::Status(503); 50]).await;
    let up = Upstream::new("pending");
    let commit = up.push(&[("README", "x\n")], "pending");
    let toml = common::pipeline_toml(SECRET)
        .clone_url(&up.url())
        .table(&format!(
            "[status]\nprovider = \"github\"\napi_url = \"{}\"\ntoken = \"tok\"\ncontext = \"ci/pending\"",
            host.url()
        ))
        .step("t", "true")
        .to_string();
    let server = TestServer::start(&[("app", &toml)], |c| c.max_parallel_builds = 1).await;
    let base = server.base();
    let scraped = |text: &str| value(&parse(text), "hookci_status_reports_pending", &[]);
    assert_eq!(scraped(&scrape(&server).await), Some(0.0));
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "pending");
    let id = common::queue_github(&base, "app", SECRET, "d-pending", &body).await[0];
    assert_eq!(common::wait_final(&base, id).await["status"], "success");
    // Refused at least once; the final state's report waits for its retry.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while host.seen().is_empty() {
        assert!(std::time::Instant::now() < until, "nothing was sent");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let in_store = server.store().pending_reports().await.expect("count");
    assert!(in_store >= 1, "{in_store}");
    let text = scrape(&server).await;
    assert_eq!(scraped(&text), Some(in_store as f64), "{text}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_cancelled_or_superseded_before_they_ran_are_counted_as_finished() {
    let toml = common::pipeline_toml(SECRET)
        .top("concurrency = \"supersede\"")
        .step("t", "true")
        .to_string();
    // Queue only: nothing runs, so every end here is one without a run.
    let server = TestServer::start(&[("app", &toml)], |c| {
        c.max_parallel_builds = 0;
        c.admin_token = Some(hookci::secret::Secret::new(ADMIN));
    })
    .await;
    let base = server.base();
    let push = |n: u32| {
        common::github_push(
            "/nonexistent",
            "refs/heads/main",
            ZERO,
            &format!("{n:040x}"),
            "m",
        )
    };
    let first = common::queue_github(&base, "app", SECRET, "s-1", &push(1)).await[0];
    let second = common::queue_github(&base, "app", SECRET, "s-2", &push(2)).await[0];
    assert_eq!(
        common::get_build(&base, first).await.expect("build")["status"],
        "cancelled"
    );
    let res = client()
        .post(server.url(&format!("/api/builds/{second}/cancel")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("cancel");
    assert_eq!(res.status(), 200);

    let text = scrape(&server).await;
    let samples = parse(&text);
    assert_eq!(
        value(
            &samples,
            "hookci_builds_finished_total",
            &[("pipeline", "app"), ("status", "cancelled")]
        ),
        Some(2.0),
        "one superseded, one cancelled by hand: {text}"
    );
    assert_eq!(value(&samples, "hookci_builds_queued", &[]), Some(0.0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_server_shows_its_metrics_only_with_the_admin_token() {
    let server = TestServer::start(&[("app", &pipeline(SECRET))], |c| {
        c.private = true;
        c.admin_token = Some(hookci::secret::Secret::new(ADMIN));
    })
    .await;
    let res = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(res.status(), 401);
    let text = res.text().await.expect("body");
    assert!(!text.contains("hookci_"), "{text}");

    let res = client()
        .get(server.url("/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("scrape");
    assert_eq!(res.status(), 200);
    let samples = parse(&res.text().await.expect("body"));
    assert_eq!(value(&samples, "hookci_builds_queued", &[]), Some(0.0));
    server.stop().await;
}

#[test]
fn the_sample_parser_reads_labels_escapes_and_infinities() {
    let samples = parse(
        "# TYPE x counter\nx_total{a=\"1\",b=\"q\\\"uote\"} 3\ny 2.5\nh_bucket{le=\"+Inf\"} 1\n# EOF\n",
    );
    assert_eq!(samples.len(), 3);
    assert_eq!(
        value(&samples, "x_total", &[("a", "1"), ("b", "q\"uote")]),
        Some(3.0)
    );
    assert_eq!(value(&samples, "y", &[]), Some(2.5));
    assert_eq!(value(&samples, "h_bucket", &[("le", "+Inf")]), Some(1.0));
    assert_eq!(value(&samples, "x_total", &[("a", "1")]), None);
}
