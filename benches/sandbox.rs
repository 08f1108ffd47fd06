//! What the step sandbox costs, against the same daemon with it off, in the
//! same run:
//!
//! 1. Push to first step: a small repository, already mirrored; a new
//!    commit is pushed and delivered, measured from the 202 to the first
//!    step's process start (`date +%s%N`). Pipelines `on` (default
//!    sandbox) and `off` (`[sandbox] enabled = false`), alternating.
//! 2. Drain: 300 one-step builds (`true`) queued while the daemon runs no
//!    builds, then drained by a daemon with 2 workers; measured from the
//!    first build's start to the last one's end, and as CPU time (user +
//!    system of the daemon and of every process it reaped, its steps and
//!    their sandboxes included), which moves less with other load on the
//!    machine. `--drains N` pairs, each pair's on/off ratio listed; the
//!    table shows the medians. The pairs alternate which goes first (off
//!    then on, on then off), since the second drain of a pair runs on a
//!    store that holds the first one's builds.
//!
//! `--dir D` puts the daemon's data and the repository under D (default:
//! cargo's target tmp dir). On `/dev/shm` the disk's fsync times leave the
//! figures: the drain is then shorter, so the sandbox's share of it is a
//! larger fraction, and the ratio is the stricter test.
//!
//! Run: `cargo bench --bench sandbox` (`-- --runs N --builds N --drains N
//! --dir D`).

#[path = "support.rs"]
mod support;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SECRET: &str = "bench";
const ZERO: &str = "0000000000000000000000000000000000000000";

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .env("GIT_AUTHOR_NAME", "Bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "Bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

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
         X-GitHub-Delivery: sandbox-bench-{}-{delivery}\r\n\
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

fn get_build(addr: &str, id: i64) -> serde_json::Value {
    let head = format!("GET /api/builds/{id} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n");
    json_of(&request(addr, &head, b""))
}

fn wait_done(addr: &str, id: i64) -> serde_json::Value {
    let until = Instant::now() + Duration::from_secs(600);
    loop {
        let b = get_build(addr, id);
        if b["status"] != "queued" && b["status"] != "running" {
            assert_eq!(b["status"], "success", "{b}");
            return b;
        }
        assert!(Instant::now() < until, "build {id} did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ms_of(s: &str) -> f64 {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .expect("timestamp");
    (t.unix_timestamp_nanos() / 1_000_000) as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// User + system CPU milliseconds of process `pid` and of the children it
/// has reaped (`/proc/PID/stat` fields 14 to 17).
fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // After the comm: field 3 is the state, so field N is at N - 3.
    let ticks: u64 = fields[11..15]
        .iter()
        .map(|f| f.parse::<u64>().expect("ticks"))
        .sum();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    ticks as f64 * 1000.0 / hz
}

/// The 1-minute load average.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

fn stop(mut daemon: std::process::Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = daemon.wait();
}

fn main() {
    let (mut runs, mut builds, mut drains) = (11usize, 300usize, 3usize);
    let mut dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).unwrap_or(runs),
            "--builds" => builds = args.next().and_then(|v| v.parse().ok()).unwrap_or(builds),
            "--drains" => drains = args.next().and_then(|v| v.parse().ok()).unwrap_or(drains),
            "--dir" => dir = args.next().map(Into::into).unwrap_or(dir),
            _ => {}
        }
    }
    match hookci::runner::sandbox::probe(None) {
        Ok(bwrap) => eprintln!("sandbox: {}", bwrap.display()),
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    }
    eprintln!("under {}", dir.display());
    let tmp = tempfile::tempdir_in(&dir).expect("tmp");
    let root = tmp.path();
    // The steps' marks live outside the daemon's directory, which the
    // sandbox hides.
    let marks = tempfile::tempdir_in(&dir).expect("tmp");
    let out = marks.path();
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
    let mut head = git(&work, &["rev-parse", "HEAD"]);

    std::fs::create_dir_all(root.join("pipelines")).expect("mkdir");
    // A payload's clone URL must be https or ssh: the pipelines name the
    // local repository themselves.
    let pipeline = |sandbox: &str, run: &str| {
        format!(
            "repo = \"bench/small\"\nsecret = \"{SECRET}\"\nconcurrency = \"parallel\"\n\
             clone_url = {url:?}\n[env]\nOUT = \"{}\"\n[sandbox]\n{sandbox}\nread_write = [\"{}\"]\n\
             [[steps]]\nname = \"s\"\nrun = '{run}'\n",
            out.display(),
            out.display()
        )
    };
    let mark = "date +%s%N > \"$OUT/start-$HOOKCI_BUILD_ID\"";
    for (name, sandbox, run) in [
        ("first-on", "", mark),
        ("first-off", "enabled = false", mark),
        ("true-on", "", "true"),
        ("true-off", "enabled = false", "true"),
    ] {
        std::fs::write(
            root.join(format!("pipelines/{name}.toml")),
            pipeline(sandbox, run),
        )
        .expect("w");
    }

    // 1. Push to first step, on and off alternating.
    let (daemon, addr) = support::spawn_hookci(root, "max_parallel_builds = 2");
    for p in ["first-on", "first-off"] {
        let (id, _) = deliver(&addr, p, &url, &head);
        wait_done(&addr, id);
    }
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for r in 0..runs {
        for (p, into) in [("first-on", &mut on), ("first-off", &mut off)] {
            std::fs::write(work.join("f0.txt"), format!("run {r} {p}\n")).expect("w");
            git(&work, &["commit", "-qam", &format!("bench {r} {p}")]);
            git(&work, &["push", "-q", "origin", "HEAD:main"]);
            head = git(&work, &["rev-parse", "HEAD"]);
            let (id, acked) = deliver(&addr, p, &url, &head);
            wait_done(&addr, id);
            let started: u128 = std::fs::read_to_string(out.join(format!("start-{id}")))
                .expect("start file")
                .trim()
                .parse()
                .expect("ns");
            let acked = acked.duration_since(UNIX_EPOCH).expect("clock").as_nanos();
            into.push(started.saturating_sub(acked) as f64 / 1e6);
        }
    }
    stop(daemon);
    let (on_ms, off_ms) = (median(on.clone()), median(off.clone()));

    // 2. Drain `builds` queued builds with 2 workers, off then on, `drains`
    // times: (wall seconds, CPU milliseconds per build).
    let drain = |pipeline: &str| -> (f64, f64) {
        let (daemon, addr) = support::spawn_hookci(root, "max_parallel_builds = 0");
        let ids: Vec<i64> = (0..builds)
            .map(|_| deliver(&addr, pipeline, &url, &head).0)
            .collect();
        stop(daemon);
        let (daemon, addr) = support::spawn_hookci(root, "max_parallel_builds = 2");
        let mut first = f64::MAX;
        let mut last = 0f64;
        for id in &ids {
            let b = wait_done(&addr, *id);
            first = first.min(ms_of(b["started_at"].as_str().expect("started")));
            last = last.max(ms_of(b["finished_at"].as_str().expect("finished")));
        }
        let cpu = cpu_ms(daemon.id());
        stop(daemon);
        ((last - first) / 1000.0, cpu / builds as f64)
    };
    let (mut walls_on, mut walls_off, mut cpus_on, mut cpus_off) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for d in 0..drains {
        let ((wall_off, cpu_off), (wall_on, cpu_on)) = if d % 2 == 0 {
            let off = drain("true-off");
            (off, drain("true-on"))
        } else {
            let on = drain("true-on");
            (drain("true-off"), on)
        };
        eprintln!(
            "drain {d}: off {wall_off:.2} s {cpu_off:.2} ms/build, on {wall_on:.2} s {cpu_on:.2} ms/build: wall {:+.1}%, cpu {:+.2} ms/build, load {}",
            (wall_on / wall_off - 1.0) * 100.0,
            cpu_on - cpu_off,
            load()
        );
        walls_off.push(wall_off);
        walls_on.push(wall_on);
        cpus_off.push(cpu_off);
        cpus_on.push(cpu_on);
    }
    let ratios: Vec<f64> = walls_on
        .iter()
        .zip(&walls_off)
        .map(|(on, off)| (on / off - 1.0) * 100.0)
        .collect();
    let (drain_on, drain_off) = (median(walls_on), median(walls_off));
    let (cpu_on, cpu_off) = (median(cpus_on), median(cpus_off));

    println!("| benchmark | sandbox on | sandbox off | difference | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| push to first step (median of {runs}) | {on_ms:.1} ms | {off_ms:.1} ms | {:+.1} ms | <= +15 ms |",
        on_ms - off_ms
    );
    println!(
        "| drain {builds} queued one-step builds, 2 workers (median of {drains}) | {drain_on:.2} s ({:.1} builds/s) | {drain_off:.2} s ({:.1} builds/s) | {:+.1}% | <= +10% |",
        builds as f64 / drain_on,
        builds as f64 / drain_off,
        median(ratios.clone())
    );
    println!(
        "| CPU per drained build (daemon and what it reaped; median of {drains}) | {cpu_on:.2} ms | {cpu_off:.2} ms | {:+.2} ms | |",
        cpu_on - cpu_off
    );
    eprintln!("drain differences (%): {ratios:.1?}");
    eprintln!("push to first step, on (ms): {on:?}");
    eprintln!("push to first step, off (ms): {off:?}");
}
