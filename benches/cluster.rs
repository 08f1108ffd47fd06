//! Several processes on one PostgreSQL (SPEC 11), each against its baseline
//! in the same run:
//!
//! 1. Push to first step: a small repository, already mirrored; a new
//!    commit is pushed and delivered, measured from the 202 to the first
//!    step's process start (`date +%s%N`). Three installations, their runs
//!    interleaved: SQLite (one process, `role = "all"`, the baseline); a
//!    PostgreSQL receiver plus a runner process (`serve --role runner`),
//!    woken by NOTIFY; one `role = "all"` process on PostgreSQL.
//! 2. Drain: `--builds` (300) one-step `true` builds of a `parallel`
//!    pipeline queued through a receiver while no runner runs, then drained
//!    by one runner process, or by two, each with `--slots` (1) builds at a
//!    time; measured from the first build's start to the last one's end
//!    (the store's own timestamps). Each drain on a schema of its own and
//!    fresh data directories; `--drains` (3) pairs, alternating which goes
//!    first.
//!
//! 3. A loud step (`--only log`): one step prints `--log-mb` (50) MB of
//!    numbered lines (`seq`). SQLite (one process, the baseline) and a PostgreSQL receiver
//!    plus a runner process, `--runs` builds each, interleaved: the step's
//!    time and the build's (start to recorded end: on PostgreSQL the end
//!    is recorded once the log is all in the database), as the store says;
//!    and that the receiver serves the runner's whole log.
//!
//! Each run creates its schemas on the server `HOOKCI_TEST_DATABASE_URL`
//! names (default: the local `test` database) and drops them. Run:
//! `cargo bench --bench cluster` (`-- --runs N --builds N --drains N
//! --slots N --log-mb N --dir D --only first|drain|log --pin`).

#[path = "support.rs"]
mod support;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::{PgSchema, git, load_average, spawn_hookci_as, spawn_hookci_on, stop};

const SECRET: &str = "bench";
const ZERO: &str = "0000000000000000000000000000000000000000";

fn request(addr: &str, head: &str, body: &[u8]) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.write_all(head.as_bytes()).expect("write");
    stream.write_all(body).expect("write");
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).expect("read");
    answer
}

fn json_of(answer: &str) -> serde_json::Value {
    serde_json::from_str(&answer[answer.find("\r\n\r\n").expect("body") + 4..]).expect("json")
}

/// Sends a signed GitHub push; returns the build id and when the 202 came.
fn deliver(addr: &str, pipeline: &str, url: &str, after: &str) -> (i64, SystemTime) {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let delivery = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Each body its own (signed bodies are replay-protected).
    let body = serde_json::json!({
        "ref": "refs/heads/main", "before": ZERO, "after": after,
        "created": false, "deleted": false, "forced": false,
        "head_commit": {"id": after, "message": format!("bench {delivery}")},
        "repository": {"full_name": "bench/small", "clone_url": url, "html_url": "http://127.0.0.1/bench/small"},
        "pusher": {"name": "bench"}
    });
    let body = serde_json::to_vec(&body).expect("json");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(&body);
    let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let head = format!(
        "POST /hooks/{pipeline} HTTP/1.1\r\nHost: b\r\nX-GitHub-Event: push\r\n\
         X-GitHub-Delivery: cluster-bench-{}-{delivery}\r\n\
         X-Hub-Signature-256: {sig}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        std::process::id(),
        body.len()
    );
    let answer = request(addr, &head, &body);
    let at = SystemTime::now();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    (
        json_of(&answer)["builds"][0]["id"].as_i64().expect("id"),
        at,
    )
}

fn wait_done(addr: &str, id: i64) {
    let until = Instant::now() + Duration::from_secs(600);
    loop {
        let head = format!("GET /api/builds/{id} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n");
        let b = json_of(&request(addr, &head, b""));
        if b["status"] != "queued" && b["status"] != "running" {
            assert_eq!(b["status"], "success", "{b}");
            return;
        }
        assert!(Instant::now() < until, "build {id} did not finish");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The pipelines every process of the bench reads (distributing them is
/// the deployment's job): `first` writes its start time, `true` does
/// nothing; both `parallel`, both on the local repository.
fn write_pipelines(dir: &Path, url: &str, out: &Path) {
    std::fs::create_dir_all(dir.join("pipelines")).expect("mkdir");
    let pipeline = |run: &str| {
        format!(
            "repo = \"bench/small\"\nsecret = \"{SECRET}\"\nconcurrency = \"parallel\"\n\
             clone_url = {url:?}\n[env]\nOUT = \"{}\"\n[sandbox]\nread_write = [\"{}\"]\n\
             [[steps]]\nname = \"s\"\nrun = '{run}'\n",
            out.display(),
            out.display()
        )
    };
    std::fs::write(
        dir.join("pipelines/first.toml"),
        pipeline("date +%s%N > \"$OUT/start-$HOOKCI_BUILD_ID\""),
    )
    .expect("w");
    std::fs::write(dir.join("pipelines/true.toml"), pipeline("true")).expect("w");
    let mb = LOG_MB.load(std::sync::atomic::Ordering::Relaxed);
    std::fs::write(
        dir.join("pipelines/loud.toml"),
        pipeline(&format!(
            "seq -f \"%.0f: a line of the loud step, a few words to fill it out\" 1 9000000 | \
             head -c {}",
            mb * 1_000_000
        )),
    )
    .expect("w");
}

/// How many MB the loud step prints.
static LOG_MB: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(50);

/// Build `id` as `addr`'s API has it.
fn build_json(addr: &str, id: i64) -> serde_json::Value {
    let head = format!("GET /api/builds/{id} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n");
    json_of(&request(addr, &head, b""))
}

/// Seconds between two RFC 3339 times of a build's JSON.
fn seconds_between(v: &serde_json::Value, from: &str, to: &str) -> f64 {
    let at = |k: &str| {
        time::OffsetDateTime::parse(
            v[k].as_str().expect("a time"),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("RFC 3339")
    };
    (at(to) - at(from)).as_seconds_f64()
}

/// How many bytes `addr` serves of build `id`'s log.
fn served_log_len(addr: &str, id: i64) -> usize {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    let head = format!("GET /api/builds/{id}/log HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).expect("write");
    let mut answer = Vec::new();
    std::io::Read::read_to_end(&mut stream, &mut answer).expect("read");
    let body = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a body")
        + 4;
    let head = String::from_utf8_lossy(&answer[..body]).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    if head.contains("transfer-encoding: chunked") {
        // Chunk sizes in hex, each on its own line, then the chunk.
        let (mut at, mut len) = (body, 0);
        loop {
            let line_end = at
                + answer[at..]
                    .windows(2)
                    .position(|w| w == b"\r\n")
                    .expect("size");
            let size =
                usize::from_str_radix(String::from_utf8_lossy(&answer[at..line_end]).trim(), 16)
                    .expect("hex");
            if size == 0 {
                return len;
            }
            len += size;
            at = line_end + 2 + size + 2;
        }
    }
    answer.len() - body
}

/// Part 3: a step that prints a lot, SQLite against a PostgreSQL runner
/// that ships its log, interleaved.
fn loud_step(root: &Path, out: &Path, repo: &Repo, runs: usize) {
    let Some(schema) = PgSchema::create() else {
        return;
    };
    let url = repo.url.clone();
    let (sqlite, sqlite_addr) = start(
        &root.join("loud-sqlite"),
        &url,
        out,
        "max_parallel_builds = 1",
        &[],
    );
    let (receiver, receiver_addr) = start(
        &root.join("loud-receiver"),
        &url,
        out,
        &pg_lines(&schema, "receiver", "receiver", 0),
        &[],
    );
    let runner_dir = root.join("loud-runner");
    let (runner, _) = start(
        &runner_dir,
        &url,
        out,
        &pg_lines(&schema, "runner", "runner", 1),
        &[],
    );
    let modes = [
        ("SQLite, one process (baseline)", sqlite_addr.expect("addr")),
        (
            "PostgreSQL, a receiver and a runner that ships the log",
            receiver_addr.expect("addr"),
        ),
    ];
    let (mut step, mut build): (Vec<Vec<f64>>, Vec<Vec<f64>>) =
        (vec![Vec::new(); 2], vec![Vec::new(); 2]);
    let mut ratios = Vec::new();
    // One unmeasured build each: the mirror's first clone.
    for r in 0..=runs {
        let mut pair = [0f64; 2];
        for (m, (_, addr)) in modes.iter().enumerate() {
            let (id, _) = deliver(addr, "loud", &url, &repo.head);
            wait_done(addr, id);
            let b = build_json(addr, id);
            let s = seconds_between(&b["steps"][0], "started_at", "finished_at");
            let whole = seconds_between(&b, "started_at", "finished_at");
            if m == 1 {
                let file = std::fs::metadata(runner_dir.join(format!("data/logs/{id}.log")))
                    .expect("the runner's log")
                    .len() as usize;
                assert_eq!(served_log_len(addr, id), file, "the receiver serves it all");
            }
            if r > 0 {
                step[m].push(s);
                build[m].push(whole);
                pair[m] = whole;
            }
        }
        if r > 0 {
            ratios.push(pair[1] / pair[0]);
        }
    }
    let (shipped, stored) = schema
        .with_client(async |c| {
            let row = c
                .query_one(
                    "SELECT (SELECT sum(length)::float8 FROM build_logs),
                            pg_total_relation_size('log_chunks')::float8",
                    &[],
                )
                .await
                .expect("query");
            (
                row.get::<_, Option<f64>>(0).unwrap_or(0.0),
                row.get::<_, f64>(1),
            )
        })
        .expect("connect");
    let load = load_average();
    for daemon in [sqlite, receiver, runner] {
        stop(daemon);
    }
    let mb = LOG_MB.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "\nlogs in the database: {:.1} MB of log take {:.1} MB in log_chunks ({:.2} bytes per byte)",
        shipped / 1e6,
        stored / 1e6,
        stored / shipped.max(1.0)
    );
    println!("\na step printing {mb} MB (median of {runs}, load average {load} at the end)");
    println!("| installation | step s | build s (start to recorded end) | build vs SQLite |");
    println!("|---|---|---|---|");
    for (m, (name, _)) in modes.iter().enumerate() {
        println!(
            "| {name} | {:.2} | {:.2} | {} |",
            median(step[m].clone()),
            median(build[m].clone()),
            if m == 0 {
                String::new()
            } else {
                format!("{:.2} x (pairs {:.2?})", median(ratios.clone()), ratios)
            }
        );
    }
    for (m, (name, _)) in modes.iter().enumerate() {
        eprintln!("{name}: steps {:.2?} builds {:.2?}", step[m], build[m]);
    }
}

/// A process of an installation in `dir`: `extra` config lines, `args`
/// for `serve`; its address if it listens.
fn start(dir: &Path, url: &str, out: &Path, extra: &str, args: &[&str]) -> (Child, Option<String>) {
    write_pipelines(dir, url, out);
    spawn_hookci_as(dir, extra, args)
}

fn pg_lines(schema: &PgSchema, node: &str, role: &str, slots: usize) -> String {
    format!(
        "store = {:?}\nnode = {node:?}\nrole = {role:?}\nmax_parallel_builds = {slots}\nmax_queued_builds = 100000",
        schema.url
    )
}

struct Repo {
    work: PathBuf,
    url: String,
    head: String,
}

impl Repo {
    fn new(root: &Path) -> Repo {
        let bare = root.join("small.git");
        git(
            root,
            &[
                "init",
                "-q",
                "--bare",
                "-b",
                "main",
                bare.to_str().expect("utf-8"),
            ],
        );
        let work = root.join("work");
        let url = format!("file://{}", bare.display());
        git(root, &["clone", "-q", &url, work.to_str().expect("utf-8")]);
        for f in 0..20 {
            std::fs::write(work.join(format!("f{f}.txt")), format!("file {f}\n")).expect("w");
        }
        git(&work, &["add", "."]);
        git(&work, &["commit", "-qm", "first"]);
        git(&work, &["push", "-q", "origin", "HEAD:main"]);
        let head = git(&work, &["rev-parse", "HEAD"]);
        Repo { work, url, head }
    }

    fn push(&mut self, what: &str) {
        std::fs::write(self.work.join("f0.txt"), format!("{what}\n")).expect("w");
        git(&self.work, &["commit", "-qam", what]);
        git(&self.work, &["push", "-q", "origin", "HEAD:main"]);
        self.head = git(&self.work, &["rev-parse", "HEAD"]);
    }
}

/// Part 1: push to first step in the three installations, interleaved.
fn first_step(root: &Path, out: &Path, repo: &mut Repo, runs: usize) {
    let Some(split) = PgSchema::create() else {
        return;
    };
    let Some(single) = PgSchema::create() else {
        return;
    };
    let url = repo.url.clone();
    let (sqlite, sqlite_addr) = start(
        &root.join("sqlite"),
        &url,
        out,
        "max_parallel_builds = 1",
        &[],
    );
    let (receiver, receiver_addr) = start(
        &root.join("pg-receiver"),
        &url,
        out,
        &pg_lines(&split, "receiver", "receiver", 0),
        &[],
    );
    let (runner, _) = start(
        &root.join("pg-runner"),
        &url,
        out,
        &pg_lines(&split, "runner", "runner", 1),
        &[],
    );
    let (all, all_addr) = start(
        &root.join("pg-all"),
        &url,
        out,
        &pg_lines(&single, "all", "all", 1),
        &[],
    );
    let modes = [
        ("SQLite, one process (baseline)", sqlite_addr.expect("addr")),
        (
            "PostgreSQL, a receiver and a runner process",
            receiver_addr.expect("addr"),
        ),
        ("PostgreSQL, one process", all_addr.expect("addr")),
    ];
    // The first build of each clones the mirror: not measured.
    for (_, addr) in &modes {
        let (id, _) = deliver(addr, "first", &url, &repo.head);
        wait_done(addr, id);
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for r in 0..runs {
        for (m, (_, addr)) in modes.iter().enumerate() {
            repo.push(&format!("run {r} mode {m}"));
            let (id, acked) = deliver(addr, "first", &url, &repo.head);
            wait_done(addr, id);
            let started: u128 = std::fs::read_to_string(out.join(format!("start-{id}")))
                .expect("start file")
                .trim()
                .parse()
                .expect("ns");
            let _ = std::fs::remove_file(out.join(format!("start-{id}")));
            let acked = acked.duration_since(UNIX_EPOCH).expect("clock").as_nanos();
            times[m].push(started.saturating_sub(acked) as f64 / 1e6);
        }
    }
    let load = load_average();
    for daemon in [sqlite, receiver, runner, all] {
        stop(daemon);
    }
    let base = median(times[0].clone());
    println!("\npush to first step (median of {runs}, load average {load} at the end)");
    println!("| installation | median ms | min ms | max ms | vs SQLite |");
    println!("|---|---|---|---|---|");
    for (m, (name, _)) in modes.iter().enumerate() {
        let v = &times[m];
        let min = v.iter().copied().fold(f64::MAX, f64::min);
        let max = v.iter().copied().fold(0f64, f64::max);
        let med = median(v.clone());
        println!(
            "| {name} | {med:.1} | {min:.1} | {max:.1} | {:+.1} ms |",
            med - base
        );
    }
    for (m, (name, _)) in modes.iter().enumerate() {
        eprintln!("{name} (ms): {:.1?}", times[m]);
    }
}

/// What the store says of a drain once every build has ended: seconds from
/// the first start to the last end, and builds per runner node.
struct Drained {
    seconds: f64,
    per_runner: Vec<(String, i64)>,
}

fn drained(schema: &PgSchema, builds: usize) -> Drained {
    let until = Instant::now() + Duration::from_secs(900);
    loop {
        let (ended, failed, seconds) = schema
            .with_client(async |c| {
                let row = c
                    .query_one(
                        "SELECT count(*) FILTER (WHERE status NOT IN ('queued', 'running')),
                                count(*) FILTER (WHERE status <> 'success'
                                                 AND status NOT IN ('queued', 'running')),
                                EXTRACT(EPOCH FROM max(finished_at) - min(started_at))::float8
                         FROM builds WHERE pipeline = 'true'",
                        &[],
                    )
                    .await
                    .expect("query");
                (
                    row.get::<_, i64>(0),
                    row.get::<_, i64>(1),
                    row.get::<_, Option<f64>>(2),
                )
            })
            .expect("connect");
        assert_eq!(failed, 0, "a drained build did not succeed");
        if ended as usize >= builds {
            let per_runner = schema
                .with_client(async |c| {
                    c.query(
                        "SELECT coalesce(runner, '?'), count(*) FROM builds
                         WHERE pipeline = 'true' GROUP BY 1 ORDER BY 1",
                        &[],
                    )
                    .await
                    .expect("query")
                    .iter()
                    .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
                    .collect()
                })
                .expect("connect");
            return Drained {
                seconds: seconds.expect("times"),
                per_runner,
            };
        }
        assert!(Instant::now() < until, "the drain did not end");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One drain of `builds` builds by `runners` runner processes of `slots`
/// builds each, on a schema of its own.
fn drain(
    root: &Path,
    out: &Path,
    repo: &Repo,
    builds: usize,
    runners: usize,
    slots: usize,
) -> Drained {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let schema = PgSchema::create().expect("the server answered before");
    let base = root.join(format!("drain-{n}"));
    let (receiver, addr) = start(
        &base.join("receiver"),
        &repo.url,
        out,
        &pg_lines(&schema, "receiver", "receiver", 0),
        &[],
    );
    let addr = addr.expect("addr");
    for _ in 0..builds {
        deliver(&addr, "true", &repo.url, &repo.head);
    }
    let procs: Vec<Child> = (0..runners)
        .map(|r| {
            let dir = base.join(format!("runner-{r}"));
            write_pipelines(&dir, &repo.url, out);
            let cpus = std::thread::available_parallelism().map_or(1, usize::from);
            let pin = PIN
                .load(std::sync::atomic::Ordering::Relaxed)
                .then_some(r % cpus);
            spawn_hookci_on(
                &dir,
                &pg_lines(&schema, &format!("runner-{r}"), "runner", slots),
                &[],
                pin,
            )
            .0
        })
        .collect();
    let d = drained(&schema, builds);
    for p in procs {
        stop(p);
    }
    stop(receiver);
    let _ = std::fs::remove_dir_all(&base);
    d
}

/// `--pin`: runner process `r` of a drain runs on CPU `r` alone (the
/// receiver and PostgreSQL float), as if each runner had a box of one
/// core; without it, the runners share every core.
static PIN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn main() {
    let (mut runs, mut builds, mut drains, mut slots) = (7usize, 300usize, 3usize, 1usize);
    let mut only = String::new();
    let mut dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).unwrap_or(runs),
            "--builds" => builds = args.next().and_then(|v| v.parse().ok()).unwrap_or(builds),
            "--drains" => drains = args.next().and_then(|v| v.parse().ok()).unwrap_or(drains),
            "--slots" => slots = args.next().and_then(|v| v.parse().ok()).unwrap_or(slots),
            "--dir" => dir = args.next().map(Into::into).unwrap_or(dir),
            "--log-mb" => {
                if let Some(mb) = args.next().and_then(|v| v.parse().ok()) {
                    LOG_MB.store(mb, std::sync::atomic::Ordering::Relaxed);
                }
            }
            "--only" => only = args.next().unwrap_or_default(),
            "--pin" => PIN.store(true, std::sync::atomic::Ordering::Relaxed),
            _ => {}
        }
    }
    // Skipped, not failed, where no server answers.
    if PgSchema::create().is_none() {
        eprintln!("skipped: no PostgreSQL");
        return;
    }
    let tmp = tempfile::tempdir_in(&dir).expect("tmp");
    let root = tmp.path();
    // The steps' marks live outside the daemons' directories, which the
    // sandbox hides.
    let marks = tempfile::tempdir_in(&dir).expect("tmp");
    let out = marks.path();
    let mut repo = Repo::new(root);
    println!("cluster benchmark under {}", dir.display());

    if only.is_empty() || only == "first" {
        first_step(root, out, &mut repo, runs);
    }
    if only.is_empty() || only == "log" {
        loud_step(root, out, &repo, runs.min(5));
    }
    if only.is_empty() || only == "drain" {
        let (mut one, mut two) = (Vec::new(), Vec::new());
        for d in 0..drains {
            let (a, b) = if d % 2 == 0 {
                let a = drain(root, out, &repo, builds, 1, slots);
                (a, drain(root, out, &repo, builds, 2, slots))
            } else {
                let b = drain(root, out, &repo, builds, 2, slots);
                (drain(root, out, &repo, builds, 1, slots), b)
            };
            eprintln!(
                "drain {d}: one runner {:.2} s, two {:.2} s ({:?}): speed-up {:.2}, load {}",
                a.seconds,
                b.seconds,
                b.per_runner,
                a.seconds / b.seconds,
                load_average()
            );
            one.push(a.seconds);
            two.push(b.seconds);
        }
        let ratios: Vec<f64> = one.iter().zip(&two).map(|(a, b)| a / b).collect();
        let (m1, m2) = (median(one), median(two));
        println!(
            "\ndrain {builds} one-step builds, runner processes of {slots} slot(s) (median of {drains}, load average {} at the end)",
            load_average()
        );
        println!("| runners | seconds | builds/s | speed-up |");
        println!("|---|---|---|---|");
        println!("| 1 | {m1:.2} | {:.1} | |", builds as f64 / m1);
        println!(
            "| 2 | {m2:.2} | {:.1} | {:.2} (pairs {:.2?}) |",
            builds as f64 / m2,
            median(ratios.clone()),
            ratios
        );
    }
}
