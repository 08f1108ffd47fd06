//! Ingest load benchmark: correctly signed ~8 KB GitHub push deliveries over
//! 32 keep-alive connections to `POST /hooks/NAME` of the release binary.
//!
//! Prints acknowledged (202) deliveries per second, p50 and p99 latency, the
//! daemon's peak RSS, and checks that every acknowledged delivery is in the
//! store afterwards. Run: `cargo bench --bench ingest` (options after `--`:
//! `--seconds N`, `--connections N`, `--baseline-webhook` to run the same load
//! against adnanh/webhook from Debian's `webhook` package in the same command,
//! `--pending-reports N` to measure with N status reports pending, as a Git
//! host outage leaves them), `--postgres` to run the same load, in the
//! same command, against `--receivers N` (default 2) processes of
//! `role = "receiver"` on one PostgreSQL schema of the bench's own (the
//! connections split evenly between them), beside the SQLite figure.
//!
//! The load generator is a minimal HTTP/1.1 client on one thread, so that it
//! takes as little of the machine's two cores as it can.

#[path = "support.rs"]
mod support;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "bench-secret";
const PIPELINE: &str = r#"
repo = "Codertocat/Hello-World"
secret = "bench-secret"
[[steps]]
name = "test"
run = "true"
"#;

struct Args {
    seconds: u64,
    connections: usize,
    baseline: bool,
    pending_reports: u64,
    postgres: bool,
    receivers: usize,
}

fn args() -> Args {
    let mut a = Args {
        seconds: 10,
        connections: 32,
        baseline: false,
        pending_reports: 0,
        postgres: false,
        receivers: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seconds" => a.seconds = it.next().and_then(|v| v.parse().ok()).unwrap_or(10),
            "--connections" => a.connections = it.next().and_then(|v| v.parse().ok()).unwrap_or(32),
            "--baseline-webhook" => a.baseline = true,
            "--postgres" => a.postgres = true,
            "--receivers" => a.receivers = it.next().and_then(|v| v.parse().ok()).unwrap_or(2),
            "--pending-reports" => {
                a.pending_reports = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            }
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

fn signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn spawn_daemon(dir: &Path) -> (Child, String) {
    std::fs::create_dir_all(dir.join("pipelines")).expect("mkdir");
    std::fs::write(dir.join("pipelines/bench.toml"), PIPELINE).expect("pipeline");
    support::spawn_hookci(dir, "max_parallel_builds = 0\nmax_queued_builds = 10000000")
}

fn spawn_webhook(dir: &Path) -> Option<(Child, String)> {
    let bin = which("webhook")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let hooks = dir.join("hooks.json");
    std::fs::write(
        &hooks,
        format!(
            r#"[{{"id":"bench","execute-command":"/bin/true","trigger-rule":{{"match":{{"type":"payload-hmac-sha256","secret":"{SECRET}","parameter":{{"source":"header","name":"X-Hub-Signature-256"}}}}}}}}]"#
        ),
    )
    .ok()?;
    let child = Command::new(bin)
        .args(["-hooks"])
        .arg(&hooks)
        .args(["-ip", "127.0.0.1", "-port", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..100 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            return Some((child, addr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

struct Outcome {
    acked: Vec<String>,
    latencies_us: Vec<u32>,
    other: u64,
    elapsed: Duration,
}

/// One keep-alive connection sending deliveries until `until`.
async fn connection(
    addr: String,
    path: String,
    prefix: String,
    body: std::sync::Arc<Vec<u8>>,
    until: Instant,
    ok_status: u16,
) -> (Vec<String>, Vec<u32>, u64) {
    let mut acked = Vec::new();
    let mut lat = Vec::new();
    let mut other = 0;
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    // Bounded: the deadline, and at most a million requests a connection.
    while Instant::now() < until && n < 1_000_000 {
        let id = format!("{prefix}-{n}");
        n += 1;
        // A body of its own per delivery (signed again): the same signed
        // body twice is a replay, answered 200 and queued once.
        let mut own = format!("{{\"hookci_bench\":\"{id}\",").into_bytes();
        own.extend_from_slice(&body[1..]);
        let body = own;
        let sig = signature(&body);
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: bench\r\nX-GitHub-Event: push\r\n\
             X-GitHub-Delivery: {id}\r\nX-Hub-Signature-256: {sig}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        let t0 = Instant::now();
        stream.write_all(&req).await.expect("write");
        let mut have = 0;
        let (status, total) = loop {
            let r = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf[have..]))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no answer in 5 s; have {:?}",
                        String::from_utf8_lossy(&buf[..have])
                    )
                })
                .expect("read");
            assert!(r > 0, "server closed the connection");
            have += r;
            if let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let status: u16 = head[9..12].parse().expect("status");
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().expect("length"))
                    .unwrap_or(0);
                break (status, end + 4 + len);
            }
        };
        while have < total {
            let r = stream.read(&mut buf[have..]).await.expect("read");
            assert!(r > 0, "server closed the connection");
            have += r;
        }
        lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
        if status == ok_status {
            acked.push(id);
        } else {
            other += 1;
        }
    }
    (acked, lat, other)
}

/// `args.connections` connections for `seconds`, connection `c` to
/// `addrs[c % addrs.len()]`.
fn load(addrs: &[String], path: &str, args: &Args, seconds: u64, tag: &str, ok: u16) -> Outcome {
    let body = std::sync::Arc::new(
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/webhooks/github/goscm__push.json"),
        )
        .expect("fixture"),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let start = Instant::now();
        let until = start + Duration::from_secs(seconds);
        let tasks: Vec<_> = (0..args.connections)
            .map(|c| {
                tokio::spawn(connection(
                    addrs[c % addrs.len()].clone(),
                    path.to_owned(),
                    format!("{tag}-{c}"),
                    body.clone(),
                    until,
                    ok,
                ))
            })
            .collect();
        let mut out = Outcome {
            acked: Vec::new(),
            latencies_us: Vec::new(),
            other: 0,
            elapsed: Duration::ZERO,
        };
        for t in tasks {
            let (a, l, o) = t.await.expect("task");
            out.acked.extend(a);
            out.latencies_us.extend(l);
            out.other += o;
        }
        out.elapsed = start.elapsed();
        out
    })
}

/// The same load against `args.receivers` receivers on a PostgreSQL schema
/// of its own: the outcome, the largest peak RSS of the receivers, how many
/// acknowledged deliveries are queued builds there, and the load average
/// at the end. `None` when no PostgreSQL server answers.
fn postgres_run(args: &Args, root: &Path) -> Option<(Outcome, u64, i64, String)> {
    let schema = support::PgSchema::create()?;
    let mut receivers = Vec::new();
    for r in 0..args.receivers {
        let dir = root.join(format!("receiver-{r}"));
        std::fs::create_dir_all(dir.join("pipelines")).expect("mkdir");
        std::fs::write(dir.join("pipelines/bench.toml"), PIPELINE).expect("pipeline");
        let (child, addr) = support::spawn_hookci_as(
            &dir,
            &format!(
                "store = {:?}\nrole = \"receiver\"\nnode = \"receiver-{r}\"\nmax_parallel_builds = 0\nmax_queued_builds = 10000000",
                schema.url
            ),
            &[],
        );
        receivers.push((child, addr.expect("a receiver listens")));
    }
    let addrs: Vec<String> = receivers.iter().map(|(_, a)| a.clone()).collect();
    let _ = load(&addrs, "/hooks/bench", args, 1, "warm", 202);
    let out = load(&addrs, "/hooks/bench", args, args.seconds, "run", 202);
    let load_avg = support::load_average();
    let rss = receivers
        .iter()
        .map(|(c, _)| peak_rss_kib(c.id()))
        .max()
        .unwrap_or(0);
    for (child, _) in receivers {
        support::stop(child);
    }
    assert_eq!(out.other, 0, "a receiver answered something other than 202");
    let stored = schema
        .with_client(async |client| {
            let row = client
                .query_one(
                    "SELECT count(*) FROM builds
                     WHERE delivery_id = ANY($1) AND status = 'queued'",
                    &[&out.acked],
                )
                .await
                .expect("count");
            row.get::<_, i64>(0)
        })
        .expect("connect to the bench schema");
    Some((out, rss, stored, load_avg))
}

fn add_pending_reports(db: &Path, n: u64) {
    let mut db = rusqlite::Connection::open(db).expect("db");
    let tx = db.transaction().expect("tx");
    let builds: Vec<i64> = {
        let mut stmt = tx.prepare("SELECT id FROM builds").expect("stmt");
        stmt.query_map([], |r| r.get(0))
            .expect("builds")
            .map(|r| r.expect("id"))
            .collect()
    };
    assert!(!builds.is_empty(), "the warm-up queued no build");
    {
        let mut ins = tx
            .prepare(
                "INSERT INTO reports (build, context, state, description, created_at,
                                      attempts, next_attempt_ms)
                 VALUES (?1, ?2, 'queued', 'queued', '2026-01-01T00:00:00Z', 3,
                         CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
                         + 86400000)",
            )
            .expect("stmt");
        for i in 0..n {
            let build = builds[(i as usize) % builds.len()];
            ins.execute(rusqlite::params![build, format!("bench/{i}")])
                .expect("insert");
        }
    }
    tx.commit().expect("commit");
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn report(name: &str, o: &mut Outcome, rss_kib: u64, stored: Option<i64>) -> f64 {
    o.latencies_us.sort_unstable();
    let rate = o.acked.len() as f64 / o.elapsed.as_secs_f64();
    println!(
        "| {name} | {} | {:.0} | {:.2} | {:.2} | {:.1} | {} |",
        o.acked.len(),
        rate,
        percentile(&o.latencies_us, 0.50),
        percentile(&o.latencies_us, 0.99),
        rss_kib as f64 / 1024.0,
        stored.map_or("n/a (persists nothing)".to_owned(), |s| format!(
            "{s} of {}",
            o.acked.len()
        )),
    );
    rate
}

fn main() {
    let args = args();
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "ingest benchmark: {} connections, {} s, ~{} byte signed GitHub pushes",
        args.connections, args.seconds, 8556
    );
    println!("| server | acknowledged | per second | p50 ms | p99 ms | peak RSS MiB | in store |");
    println!("|---|---|---|---|---|---|---|");

    let (mut child, mut addr) = spawn_daemon(dir.path());
    // Warm up, then measure.
    let _ = load(&[addr.clone()], "/hooks/bench", &args, 1, "warm", 202);
    if args.pending_reports > 0 {
        // A host outage: N reports pending and backing off (due in a day),
        // each of its own context (so none supersedes another), over the
        // builds the warm-up queued.
        let _ = child.kill();
        let _ = child.wait();
        add_pending_reports(&dir.path().join("data/hookci.db"), args.pending_reports);
        (child, addr) = spawn_daemon(dir.path());
        println!("({} status reports pending)", args.pending_reports);
    }
    let mut out = load(&[addr], "/hooks/bench", &args, args.seconds, "run", 202);
    let sqlite_load = support::load_average();
    let rss = peak_rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let mut db = rusqlite::Connection::open(dir.path().join("data/hookci.db")).expect("db");
    // Every acknowledged delivery id, joined against the queued builds.
    let stored: i64 = {
        let tx = db.transaction().expect("tx");
        tx.execute_batch("CREATE TEMP TABLE acked (id TEXT PRIMARY KEY)")
            .expect("temp");
        {
            let mut ins = tx
                .prepare("INSERT INTO acked (id) VALUES (?1)")
                .expect("stmt");
            for id in &out.acked {
                ins.execute([id]).expect("insert");
            }
        }
        let n = tx
            .query_row(
                "SELECT COUNT(*) FROM acked JOIN builds ON builds.delivery_id = acked.id
                 WHERE builds.status = 'queued'",
                [],
                |r| r.get(0),
            )
            .expect("count");
        tx.commit().expect("commit");
        n
    };
    assert_eq!(out.other, 0, "hookci answered something other than 202");
    let rate = report("hookci", &mut out, rss, Some(stored));
    assert_eq!(
        stored as usize,
        out.acked.len(),
        "an acknowledged delivery is missing from the store"
    );
    if args.postgres {
        println!("(SQLite: load average {sqlite_load} at the end of its run)");
        let name = format!("hookci, PostgreSQL, {} receivers", args.receivers);
        match postgres_run(&args, dir.path()) {
            Some((mut pg, rss, stored, load_avg)) => {
                let pg_rate = report(&name, &mut pg, rss, Some(stored));
                println!("(PostgreSQL: load average {load_avg} at the end of its run)");
                println!(
                    "\nPostgreSQL / SQLite throughput ratio: {:.2}",
                    pg_rate / rate.max(1.0)
                );
                assert_eq!(
                    stored as usize,
                    pg.acked.len(),
                    "an acknowledged delivery is missing from PostgreSQL"
                );
            }
            None => println!("\n(PostgreSQL skipped: no server answers)"),
        }
    }

    if args.baseline {
        match spawn_webhook(dir.path()) {
            Some((mut child, addr)) => {
                let addr = [addr];
                let _ = load(&addr, "/hooks/bench", &args, 1, "warm", 200);
                let mut base = load(&addr, "/hooks/bench", &args, args.seconds, "run", 200);
                let rss = peak_rss_kib(child.id());
                let _ = child.kill();
                let _ = child.wait();
                let base_rate = report("adnanh/webhook", &mut base, rss, None);
                println!(
                    "\nhookci / webhook throughput ratio: {:.2}",
                    rate / base_rate.max(1.0)
                );
            }
            None => println!(
                "\n(baseline skipped: `webhook` is not installed: apt-get install webhook)"
            ),
        }
    }
}
