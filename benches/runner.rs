//! Runner benchmarks, each against a baseline measured in the same run:
//!
//! 1. Push to first step: a repository of 10,000 commits and 3,000 files,
//!    already mirrored; one new commit is pushed and delivered; measured
//!    from the 202 to the first step's process start. Baseline: a fresh
//!    `git clone` of the same repository over the same transport.
//! 2. Log capture: a step writing 1 GiB to stdout, captured by hookci,
//!    against the same command writing to /dev/null, both run as steps of
//!    the same daemon (so step start-up cancels out).
//! 3. Log capture, every byte kept: the log cap raised to 2 GiB, a step
//!    writing 1 GiB to stdout (all of it masked, the pipelines having a
//!    secret, and written to the log)
//!    against the same command piped to `cat > FILE` on the same disk.
//!
//!    Beside the wall-clock times, CPU time, which load on the machine
//!    moves far less: the daemon's own (all its threads, from
//!    /proc/PID/stat) per kept run, against `cat`'s alone (getrusage of the
//!    bench's own `head -c 1G /dev/zero | cat > FILE`).
//!
//! Run: `cargo bench --bench runner` (`-- --runs N`; `--kept-only` runs
//! only the third part, on a small repository).

#[path = "support.rs"]
mod support;

use support::{big_repo, git};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SECRET: &str = "bench";

/// Sends a signed GitHub push; returns the build id and when the 202 came.
fn deliver(addr: &str, pipeline: &str, url: &str, before: &str, after: &str) -> (i64, SystemTime) {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let delivery = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Each body differs: a signed body seen before is a replay.
    let body = serde_json::json!({
        "ref": "refs/heads/main", "before": before, "after": after,
        "created": false, "deleted": false, "forced": false,
        "head_commit": {"id": after, "message": format!("bench {delivery}")},
        "repository": {"full_name": "bench/big", "clone_url": url, "html_url": "http://127.0.0.1/bench/big"},
        "pusher": {"name": "bench"}
    });
    let body = serde_json::to_vec(&body).expect("json");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(&body);
    let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    let head = format!(
        "POST /hooks/{pipeline} HTTP/1.1\r\nHost: b\r\nX-GitHub-Event: push\r\n\
         X-GitHub-Delivery: bench-{delivery}\r\n\
         X-Hub-Signature-256: {sig}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write");
    stream.write_all(&body).expect("write");
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).expect("read");
    let at = SystemTime::now();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let json = &answer[answer.find("\r\n\r\n").expect("body") + 4..];
    let v: serde_json::Value = serde_json::from_str(json).expect("json");
    (v["builds"][0]["id"].as_i64().expect("id"), at)
}

fn get_build(addr: &str, id: i64) -> serde_json::Value {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "GET /api/builds/{id} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
    )
    .expect("w");
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).expect("read");
    serde_json::from_str(&answer[answer.find("\r\n\r\n").expect("body") + 4..]).expect("json")
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

fn rfc3339_ms(s: &str) -> f64 {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .expect("timestamp");
    (t.unix_timestamp_nanos() / 1_000_000) as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// CPU time (user + system) of process `pid` so far, all its threads, in ms.
fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // After the command's closing parenthesis: state is field 3, utime 14.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime");
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    ticks * 1000.0 / hz
}

/// User + system CPU ms of the children this process reaped so far.
fn children_cpu_ms() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let ms = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 * 1000.0 + t.tv_usec() as f64 / 1000.0;
    ms(u.user_time()) + ms(u.system_time())
}

/// `head -c 1G /dev/zero | cat > file`, run by the bench itself: the CPU
/// ms of `cat` alone.
fn cat_cpu_ms(file: &Path) -> f64 {
    let mut head = Command::new("head")
        .args(["-c", "1073741824", "/dev/zero"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("head");
    let pipe = head.stdout.take().expect("pipe");
    let mut cat = Command::new("cat")
        .stdin(pipe)
        .stdout(std::fs::File::create(file).expect("cat file"))
        .spawn()
        .expect("cat");
    head.wait().expect("head");
    let before = children_cpu_ms();
    cat.wait().expect("cat");
    let ms = children_cpu_ms() - before;
    let _ = std::fs::remove_file(file);
    ms
}

fn main() {
    let mut runs = 5usize;
    let mut kept_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--runs" {
            runs = args.next().and_then(|v| v.parse().ok()).unwrap_or(5);
        }
        kept_only |= a == "--kept-only";
    }
    // In the target dir, not /tmp: on some machines /tmp is far slower to
    // create files in, which would measure the disk, not hookci.
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tmp");
    let root = tmp.path();
    let bare = if kept_only {
        big_repo(root, 10, 2)
    } else {
        eprintln!("building a repository of 10,000 commits and 3,000 files ...");
        big_repo(root, 3000, 10_000)
    };
    let url = format!("file://{}", bare.display());
    // Outside the daemon's directory, which the step sandbox hides.
    let marks = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tmp");
    let out = marks.path().to_path_buf();
    std::fs::create_dir_all(root.join("pipelines")).expect("mkdir");
    let pipeline = |run: &str| {
        format!(
            "repo = \"bench/big\"\nsecret = \"{SECRET}\"\nclone_url = \"{url}\"\n[env]\nOUT = \"{}\"\n[secrets]\nTOKEN = \"bench-secret-not-in-the-zeros\"\n[sandbox]\nread_write = [\"{}\"]\n[[steps]]\nname = \"s\"\nrun = '{run}'\n",
            out.display(),
            out.display()
        )
    };
    std::fs::write(
        root.join("pipelines/first.toml"),
        pipeline("date +%s%N > \"$OUT/start-$HOOKCI_BUILD_ID\""),
    )
    .expect("w");
    std::fs::write(
        root.join("pipelines/flood.toml"),
        pipeline("head -c 1073741824 /dev/zero"),
    )
    .expect("w");
    std::fs::write(
        root.join("pipelines/null.toml"),
        pipeline("head -c 1073741824 /dev/zero > /dev/null"),
    )
    .expect("w");
    std::fs::write(
        root.join("pipelines/cat.toml"),
        pipeline("head -c 1073741824 /dev/zero | cat > /dev/null"),
    )
    .expect("w");
    // Every byte kept, on the same disk as hookci's logs: `cat` into a file
    // under the bench dir (its data dir is there too). The file goes after
    // the step, outside the timed part.
    std::fs::write(
        root.join("pipelines/catfile.toml"),
        pipeline("head -c 1073741824 /dev/zero | cat > \"$OUT/cat-$HOOKCI_BUILD_ID\""),
    )
    .expect("w");

    // Baseline 1: fresh clones of the same repository, same transport.
    let mut clones = Vec::new();
    for i in 0..if kept_only { 0 } else { 3 } {
        let dest = root.join(format!("clone-{i}"));
        let t = Instant::now();
        git(root, &["clone", "-q", &url, dest.to_str().expect("utf-8")]);
        clones.push(t.elapsed().as_secs_f64() * 1000.0);
        std::fs::remove_dir_all(&dest).expect("rm");
    }
    let clone_ms = median(clones);

    let (mut daemon, addr) = support::spawn_hookci(root, "max_parallel_builds = 1");
    // Mirror it once (the first push of a repository fetches everything).
    let mut head = git(&bare, &["rev-parse", "main"]);
    let (id, _) = deliver(
        &addr,
        "first",
        &url,
        "0000000000000000000000000000000000000000",
        &head,
    );
    wait_done(&addr, id);

    // 1. Push one new commit, deliver, time the 202 → first step start.
    let work = root.join("work");
    git(root, &["clone", "-q", &url, work.to_str().expect("utf-8")]);
    let mut first_step = Vec::new();
    for r in 0..if kept_only { 0 } else { runs } {
        let file = format!("src/m{}/f{r}.rs", r % 50);
        std::fs::write(work.join(file), format!("// bench run {r}\n")).expect("w");
        git(&work, &["commit", "-qam", &format!("bench {r}")]);
        git(&work, &["push", "-q", "origin", "HEAD:main"]);
        let after = git(&work, &["rev-parse", "HEAD"]);
        let (id, acked) = deliver(&addr, "first", &url, &head, &after);
        wait_done(&addr, id);
        let started: u128 = std::fs::read_to_string(out.join(format!("start-{id}")))
            .expect("start file")
            .trim()
            .parse()
            .expect("ns");
        let acked_ns = acked.duration_since(UNIX_EPOCH).expect("clock").as_nanos();
        first_step.push((started.saturating_sub(acked_ns)) as f64 / 1e6);
        head = after;
    }
    let first_ms = median(first_step.clone());

    // 2. 1 GiB to stdout (captured) vs to /dev/null, as steps.
    // The median of `runs` runs of `pipeline`'s one step, start to end;
    // `after` runs after each (outside the timed part).
    let one_step = |addr: &str, pipeline: &str, after: &dyn Fn(i64)| {
        let zero = "0000000000000000000000000000000000000000";
        let (id, _) = deliver(addr, pipeline, &url, zero, &head);
        let b = wait_done(addr, id);
        let s = &b["steps"][0];
        let ms = rfc3339_ms(s["finished_at"].as_str().expect("finished"))
            - rfc3339_ms(s["started_at"].as_str().expect("started"));
        after(id);
        ms
    };
    let step_ms = |addr: &str, pipeline: &str, after: &dyn Fn(i64)| {
        let v: Vec<f64> = (0..runs).map(|_| one_step(addr, pipeline, after)).collect();
        median(v)
    };
    let (null_ms, cat_ms, flood_ms) = if kept_only {
        (f64::NAN, f64::NAN, f64::NAN)
    } else {
        (
            step_ms(&addr, "null", &|_| {}),
            step_ms(&addr, "cat", &|_| {}),
            step_ms(&addr, "flood", &|_| {}),
        )
    };
    let _ = daemon.kill();
    let _ = daemon.wait();

    // 3. The same 1 GiB with the log cap raised above it (every byte masked
    // and written to the log) vs `cat > FILE` on the same disk.
    let (mut daemon, addr) = support::spawn_hookci(
        root,
        "max_parallel_builds = 1\nmax_log_bytes = 2147483648\nkeep_builds = 1",
    );
    let remove_cat_file = |id: i64| {
        let _ = std::fs::remove_file(out.join(format!("cat-{id}")));
    };
    // Taken in turns, so that load from elsewhere falls on both alike.
    let (mut cats, mut kepts, mut cpus, mut cat_cpus) = (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        cats.push(one_step(&addr, "catfile", &remove_cat_file));
        let before = cpu_ms(daemon.id());
        kepts.push(one_step(&addr, "flood", &remove_cat_file));
        cpus.push(cpu_ms(daemon.id()) - before);
        cat_cpus.push(cat_cpu_ms(&out.join("cat-cpu")));
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    eprintln!("kept, each run (ms): hookci {kepts:.0?}, cat > FILE {cats:.0?}");
    eprintln!("kept, CPU ms: hookci daemon {cpus:.0?}, cat alone {cat_cpus:.0?}");
    let catfile_ms = median(cats);
    let kept_ms = median(kepts);
    let kept_cpu = median(cpus);
    let cat_cpu = median(cat_cpus);

    println!("| benchmark | hookci | baseline | ratio | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| step writing 1 GiB to stdout, log cap 2 GiB, every byte kept (median of {runs}) | {kept_ms:.0} ms | same piped to cat > FILE {catfile_ms:.0} ms | {:.2} | <= 1.15 |",
        kept_ms / catfile_ms
    );
    println!(
        "| the same, CPU time (median of {runs}) | daemon {kept_cpu:.0} ms | cat alone {cat_cpu:.0} ms | {:.2} | |",
        kept_cpu / cat_cpu
    );
    if kept_only {
        return;
    }
    println!(
        "| push to first step (10,000 commits, 3,000 files; median of {runs}) | {first_ms:.0} ms | fresh git clone {clone_ms:.0} ms | {:.3} | <= 0.1 and < 250 ms |",
        first_ms / clone_ms
    );
    println!(
        "| step writing 1 GiB to stdout (median of {runs}) | {flood_ms:.0} ms | same to /dev/null {null_ms:.0} ms | {:.2} | <= 1.15 |",
        flood_ms / null_ms
    );
    println!(
        "| step writing 1 GiB to stdout, vs the floor of any pipe reader (median of {runs}) | {flood_ms:.0} ms | same piped to cat {cat_ms:.0} ms | {:.2} | |",
        flood_ms / cat_ms
    );
    eprintln!("push to first step, each run (ms): {first_step:?}");
}
