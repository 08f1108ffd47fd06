//! Build page latency (issue 14): `GET /builds/ID` of a finished build with
//! a 64 MiB log, in a store of 100,000 builds, served by the release daemon.
//! Also measured: the index (`GET /`), a filtered index, and one earlier
//! part of the log (`GET /builds/ID/log?before=`).
//!
//! The store is filled directly (one transaction of 100,000 rows: the
//! daemon's own queue is not what is measured), the log is written as a
//! runner writes one: `==> step` lines, coloured output, 100-byte lines.
//! Requests go one at a time over one keep-alive connection after a
//! warm-up; the figures are per request, client included.
//!
//! Run: `cargo bench --bench pages` (`-- --requests N`).

#[path = "support.rs"]
mod support;

use std::io::Write;
use std::time::{Duration, Instant};

const BUILDS: i64 = 100_000;
const LOG_BYTES: usize = 64 * 1024 * 1024;

fn requests() -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--requests")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(500)
}

/// Fills the store at `db` (created and migrated by the daemon's own code)
/// with `BUILDS` finished builds and the last one's steps.
fn fill_store(db: &std::path::Path) {
    let store = hookci::store::Store::open_sqlite(
        db,
        hookci::store::StoreOptions {
            max_queued_builds: 1000,
        },
    )
    .expect("store");
    drop(store);
    let mut conn = rusqlite::Connection::open(db).expect("db");
    let tx = conn.transaction().expect("tx");
    tx.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
         INSERT INTO builds (pipeline, repo, host, event, ref, branch, commit_sha, before_sha,
             after_sha, clone_url, web_url, message, pusher, status, reason, created_at,
             started_at, finished_at)
         SELECT CASE i % 3 WHEN 0 THEN 'app' WHEN 1 THEN 'web' ELSE 'docs' END,
                'acme/app', 'github', 'push',
                'refs/heads/' || CASE i % 5 WHEN 0 THEN 'main' ELSE 'feature-' || (i % 97) END,
                CASE i % 5 WHEN 0 THEN 'main' ELSE 'feature-' || (i % 97) END,
                printf('%040x', i), printf('%040x', i - 1), printf('%040x', i),
                'https://github.com/acme/app.git', 'https://github.com/acme/app',
                'change ' || i || char(10) || char(10) || 'a longer body',
                'ada',
                CASE WHEN i % 7 = 0 THEN 'failure' ELSE 'success' END,
                CASE WHEN i % 7 = 0 THEN 'step test exited 1' END,
                '2026-11-30T12:00:00.000Z', '2026-11-30T12:00:01.000Z',
                '2026-11-30T12:04:00.000Z'
         FROM n",
        [BUILDS],
    )
    .expect("builds");
    for (idx, name, status, code) in [
        (0, "build", "success", 0),
        (1, "test", "failure", 1),
        (2, "deploy", "skipped", -1),
    ] {
        tx.execute(
            "INSERT INTO steps (build, idx, name, status, exit_code, started_at, finished_at)
             VALUES (?1, ?2, ?3, ?4, NULLIF(?5, -1), '2026-11-30T12:00:02.000Z',
                     '2026-11-30T12:03:59.000Z')",
            rusqlite::params![BUILDS, idx, name, status, code],
        )
        .expect("steps");
    }
    tx.commit().expect("commit");
}

/// A 64 MiB log as the runner writes one: two steps of coloured output.
fn write_log(path: &std::path::Path) {
    std::fs::create_dir_all(path.parent().expect("logs dir")).expect("logs dir");
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("log"));
    writeln!(out, "==> hookci build {BUILDS} of app: refs/heads/main").expect("w");
    writeln!(out, "==> step build: make").expect("w");
    let mut written = 0;
    let mut n = 0u64;
    while written < LOG_BYTES {
        if written > LOG_BYTES / 2 && n % 1_000_000 == 0 {
            writeln!(out, "==> step build exited 0 in 2m").expect("w");
            writeln!(out, "==> step test: cargo test").expect("w");
        }
        let line = if n % 10 == 0 {
            format!(
                "\u{1b}[1;32m   Compiling\u{1b}[0m crate-{n} v1.0.0 <src/lib.rs> & friends ................................\n"
            )
        } else {
            format!(
                "test module_{n}::case_{n} ... \u{1b}[32mok\u{1b}[0m ....................................................\n"
            )
        };
        out.write_all(line.as_bytes()).expect("w");
        written += line.len();
        n += 1;
    }
    writeln!(out, "==> step test exited 1 in 1m").expect("w");
    writeln!(out, "==> build {BUILDS} failure: step test exited 1 in 4m").expect("w");
    out.flush().expect("flush");
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn measure(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    n: usize,
) -> (Vec<Duration>, usize) {
    let mut bytes = 0;
    for _ in 0..20 {
        let res = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("get");
        assert_eq!(res.status().as_u16(), 200, "{path}");
        bytes = res.bytes().await.expect("body").len();
    }
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let res = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("get");
        assert_eq!(res.status().as_u16(), 200, "{path}");
        let body = res.bytes().await.expect("body");
        times.push(start.elapsed());
        bytes = body.len();
    }
    times.sort();
    (times, bytes)
}

fn main() {
    let n = requests();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tmp");
    std::fs::create_dir_all(&root).expect("target/tmp");
    let dir = tempfile::tempdir_in(root).expect("temp dir");
    std::fs::create_dir_all(dir.path().join("pipelines")).expect("pipelines");
    for name in ["app", "web", "docs"] {
        std::fs::write(
            dir.path().join(format!("pipelines/{name}.toml")),
            "repo = \"acme/app\"\ninsecure_no_signature = true\n[[steps]]\nname = \"build\"\nrun = \"true\"\n",
        )
        .expect("pipeline");
    }
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data");
    let t = Instant::now();
    fill_store(&data.join("hookci.db"));
    write_log(&data.join("logs").join(format!("{BUILDS}.log")));
    eprintln!("store and log ready in {:.1?}", t.elapsed());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (child, addr) = support::spawn_hookci(dir.path(), "max_parallel_builds = 0\n");
    // Killed (by its pid) however the measurement ends.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Kill(child);
    let base = format!("http://{addr}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let results = rt.block_on(async {
        let client = reqwest::Client::new();
        let page = client
            .get(format!("{base}/builds/{BUILDS}"))
            .send()
            .await
            .expect("page")
            .text()
            .await
            .expect("text");
        let before = page
            .split("log?before=")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("an earlier part")
            .to_owned();
        let mut out = Vec::new();
        for (label, path) in [
            ("GET /builds/ID (64 MiB log)", format!("/builds/{BUILDS}")),
            (
                "GET /builds/ID/log?before= (an earlier part)",
                format!("/builds/{BUILDS}/log?before={before}"),
            ),
            ("GET / (index)", "/".to_owned()),
            (
                "GET /?pipeline=app&branch=main&status=failure",
                "/?pipeline=app&branch=main&status=failure".to_owned(),
            ),
        ] {
            let (times, bytes) = measure(&client, &base, &path, n).await;
            out.push((label, times, bytes));
        }
        out
    });
    drop(child);
    println!(
        "{BUILDS} builds in the store, a {} MiB log; {n} requests each, one at a time, after 20 warm-up requests\n",
        LOG_BYTES >> 20
    );
    println!("| request | p50 ms | p99 ms | max ms | page KiB |");
    println!("|---|---|---|---|---|");
    for (label, times, bytes) in results {
        println!(
            "| {label} | {:.2} | {:.2} | {:.2} | {} |",
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            percentile(&times, 1.0),
            bytes / 1024
        );
    }
}
