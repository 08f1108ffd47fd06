//! A damaged or stuck store: `hookci serve` refuses a corrupt SQLite file
//! (exit 2, one sentence naming it), and `/healthz` answers for the store's
//! writer thread, not just for a read.

use crate::common;

use common::{TestServer, ZERO, client};
use std::path::Path;
use std::time::Duration;

const PIPELINE: &str = r#"
repo = "Codertocat/Hello-World"
secret = "s3cret"
[[steps]]
name = "test"
run = "true"
"#;

/// `hookci serve` on `dir/data` (the store in it as it is); its exit code
/// and stderr.
fn serve(dir: &Path) -> (Option<i32>, String) {
    std::fs::create_dir_all(dir.join("pipelines")).expect("pipelines dir");
    std::fs::write(dir.join("pipelines/hello.toml"), PIPELINE).expect("pipeline");
    let config = dir.join("hookci.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\npipelines_dir = \"{}\"\n",
            dir.join("data").display(),
            dir.join("pipelines").display()
        ),
    )
    .expect("config");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hookci"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn hookci");
    // A daemon that does start would never exit: bound the wait.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stderr = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .expect("stderr")
                .read_to_string(&mut stderr)
                .expect("read stderr");
            return (status.code(), stderr);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hookci serve started on a damaged store");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_refused(code: Option<i32>, stderr: &str, db: &Path) {
    assert_eq!(code, Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let said: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(&db.display().to_string()))
        .collect();
    assert!(!said.is_empty(), "the sentence names the file: {stderr}");
    assert!(
        said.iter()
            .any(|l| l.contains("restore it from a backup") && l.matches(". ").count() == 0),
        "one sentence: {stderr}"
    );
}

#[test]
fn a_file_of_garbage_is_refused_with_one_sentence() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("data/hookci.db");
    std::fs::create_dir_all(db.parent().expect("dir")).expect("data dir");
    let garbage: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7 + 13) as u8).collect();
    std::fs::write(&db, garbage).expect("garbage");
    let (code, stderr) = serve(dir.path());
    assert_refused(code, &stderr, &db);
    assert!(stderr.contains("not a SQLite database"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_store_with_a_page_overwritten_is_refused() {
    // A real store with builds in it, written by hookci.
    let mut server = TestServer::start(&[("hello", PIPELINE)], |_| {}).await;
    for n in 1..=20u32 {
        let commit = format!("{n:040x}");
        let body = common::github_push("/nonexistent", "refs/heads/main", ZERO, &commit, "queued");
        common::queue_github(&server.base(), "hello", "s3cret", &format!("d-{n}"), &body).await;
    }
    let db = server.db_path();
    let data = server.config.data_dir.clone();
    let root = data.parent().expect("dir").to_path_buf();
    // The store outlives the server that wrote it.
    let _kept = std::mem::replace(&mut server.dir, tempfile::tempdir().expect("temp dir"));
    server.stop().await;
    // Everything in the main file, then one b-tree page (the builds
    // table's root) overwritten in place.
    let (page, size) = {
        let conn = rusqlite::Connection::open(&db).expect("open");
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode=DELETE;")
            .expect("checkpoint");
        let page: i64 = conn
            .query_row(
                "SELECT rootpage FROM sqlite_master WHERE name = 'builds'",
                [],
                |r| r.get(0),
            )
            .expect("builds' root page");
        let size: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .expect("page size");
        (page as u64, size as u64)
    };
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&db)
            .expect("open the file");
        f.seek(SeekFrom::Start((page - 1) * size)).expect("seek");
        f.write_all(&vec![0xa5; size as usize]).expect("overwrite");
    }
    let (code, stderr) = serve(&root);
    assert_refused(code, &stderr, &db);
    assert!(stderr.contains("damaged"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_503_while_the_writer_is_stuck_and_200_after() {
    let server = TestServer::start(&[("hello", PIPELINE)], |_| {}).await;
    let health = || async {
        let res = client()
            .get(server.url("/healthz"))
            .send()
            .await
            .expect("healthz");
        let status = res.status().as_u16();
        let json: serde_json::Value = res.json().await.expect("json");
        (status, json)
    };
    let (status, json) = health().await;
    assert_eq!(status, 200, "{json}");
    // Another connection holds the write lock: reads still work, the
    // writer cannot commit. (A fault injection no API offers, on SQLite's
    // own file.)
    let locker = rusqlite::Connection::open(server.db_path()).expect("open db");
    locker.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    let (status, json) = health().await;
    assert_eq!(status, 503, "{json}");
    let sentence = json["error"].as_str().expect("a sentence");
    assert!(sentence.contains("writer"), "{sentence}");
    locker.execute_batch("ROLLBACK").expect("unlock");
    // It recovers: the writer answers again (the probes that waited behind
    // the lock fail first, so allow a few tries).
    let mut last = (0, serde_json::Value::Null);
    for _ in 0..20 {
        last = health().await;
        if last.0 == 200 {
            break;
        }
    }
    assert_eq!(last.0, 200, "{}", last.1);
    assert_eq!(last.1["status"], "ok");
    server.stop().await;
}
