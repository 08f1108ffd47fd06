//! What the benchmarks share: the release daemon started on 127.0.0.1:0.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Starts `hookci serve` with a config in `dir` (data and pipelines under
/// `dir`, then the `extra` lines), and returns it with its address once it
/// listens. Its warnings are passed on to stderr; `BENCH_HOOKCI_LOG`
/// replaces the log filter.
#[allow(dead_code, reason = "the checkout bench starts no daemon")]
pub fn spawn_hookci(dir: &Path, extra: &str) -> (Child, String) {
    let (child, addr) = spawn_hookci_as(dir, extra, &[]);
    (child, addr.expect("a daemon that listens"))
}

/// [`spawn_hookci`] with more arguments for `serve` (`--role runner`):
/// returns once the process listens (with its address) or, as a runner,
/// once it says it claims builds (no address).
#[allow(dead_code, reason = "the checkout bench starts no daemon")]
pub fn spawn_hookci_as(dir: &Path, extra: &str, serve_args: &[&str]) -> (Child, Option<String>) {
    spawn_hookci_on(dir, extra, serve_args, None)
}

/// [`spawn_hookci_as`], the process (and all it starts) on CPU `cpu` alone
/// (`taskset -c`), as if it had a box of one core.
#[allow(dead_code, reason = "only the cluster bench pins")]
pub fn spawn_hookci_on(
    dir: &Path,
    extra: &str,
    serve_args: &[&str],
    cpu: Option<usize>,
) -> (Child, Option<String>) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let config = dir.join("hookci.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\npipelines_dir = \"{}\"\n{extra}\n",
            dir.join("data").display(),
            dir.join("pipelines").display()
        ),
    )
    .expect("config");
    let filter =
        std::env::var("BENCH_HOOKCI_LOG").unwrap_or_else(|_| "warn,hookci::server=info".into());
    let mut command = match cpu {
        // taskset execs hookci: the child's pid is hookci's.
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpu.to_string(), env!("CARGO_BIN_EXE_hookci")]);
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_hookci")),
    };
    let mut child = command
        .arg("serve")
        .args(serve_args)
        .arg("--config")
        .arg(&config)
        .env("HOOKCI_LOG", filter)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hookci");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let addr = loop {
        let line = lines.next().expect("hookci exited").expect("stderr");
        if let Some(rest) = line.split("address=").nth(1) {
            break Some(rest.split_whitespace().next().expect("address").to_owned());
        }
        if line.contains("runner: claiming builds") {
            break None;
        }
    };
    // Pass the daemon's warnings and errors on; they would explain a failed run.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            eprintln!("hookci: {line}");
        }
    });
    (child, addr)
}

/// Stops a daemon with SIGTERM (running builds are re-queued, not lost) and
/// reaps it.
#[allow(dead_code, reason = "not every bench stops daemons this way")]
pub fn stop(mut daemon: Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = daemon.wait();
}

/// The 1-minute load average.
#[allow(dead_code, reason = "not every bench prints it")]
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

/// A PostgreSQL schema of the bench's own on the server
/// `HOOKCI_TEST_DATABASE_URL` names (default: the local `test` database,
/// as the tests use), dropped when the guard goes.
#[allow(dead_code, reason = "not every bench uses PostgreSQL")]
#[derive(Debug)]
pub struct PgSchema {
    /// The URL that puts a connection in the schema (`search_path`).
    pub url: String,
    name: String,
    server: String,
}

#[allow(dead_code, reason = "not every bench uses PostgreSQL")]
impl PgSchema {
    /// A new empty schema; `None` (after saying why) when no server answers.
    pub fn create() -> Option<PgSchema> {
        let server = std::env::var("HOOKCI_TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let name = format!(
            "hookci_bench_{}_{}",
            std::process::id(),
            rand::random::<u32>()
        );
        if let Err(e) = pg_execute(&server, &format!("CREATE SCHEMA {name}")) {
            eprintln!("no PostgreSQL at HOOKCI_TEST_DATABASE_URL or 127.0.0.1:5432: {e}");
            return None;
        }
        let sep = if server.contains('?') { '&' } else { '?' };
        Some(PgSchema {
            url: format!("{server}{sep}options=-c%20search_path%3D{name}"),
            name,
            server,
        })
    }

    /// Runs `f` on a client connected into the schema.
    pub fn with_client<T>(
        &self,
        f: impl AsyncFnOnce(&tokio_postgres::Client) -> T,
    ) -> Result<T, tokio_postgres::Error> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await?;
            let task = tokio::spawn(conn);
            let out = f(&client).await;
            drop(client);
            let _ = task.await;
            Ok(out)
        })
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        // `BENCH_KEEP_SCHEMA=1` keeps it, to look at the queries afterwards.
        if std::env::var_os("BENCH_KEEP_SCHEMA").is_some() {
            eprintln!("kept the bench schema {}", self.name);
            return;
        }
        if let Err(e) = pg_execute(
            &self.server,
            &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name),
        ) {
            eprintln!("cannot drop the bench schema {}: {e}", self.name);
        }
    }
}

fn pg_execute(url: &str, sql: &str) -> Result<(), tokio_postgres::Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        let task = tokio::spawn(conn);
        let out = client.batch_execute(sql).await;
        drop(client);
        let _ = task.await;
        out
    })
}

/// Runs git in `dir` (with `dir` as HOME and a fixed author); its output.
#[allow(dead_code, reason = "not every bench builds repositories")]
pub fn git(dir: &Path, args: &[&str]) -> String {
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

/// A bare repository of `commits` commits over `files` files, made with
/// `git fast-import` (seconds, not the minutes of 10,000 `git commit`s).
#[allow(dead_code, reason = "not every bench builds repositories")]
pub fn big_repo(root: &Path, files: usize, commits: usize) -> PathBuf {
    let bare = root.join("big.git");
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
    let mut child = fast_import_child(&bare);
    let mut w = std::io::BufWriter::new(child.stdin.take().expect("stdin"));
    let mut ts = 1_600_000_000u64;
    for c in 0..commits {
        ts += 60;
        let msg = format!("commit {c}");
        writeln!(w, "commit refs/heads/main").expect("w");
        writeln!(w, "committer Bench <bench@example.com> {ts} +0000").expect("w");
        writeln!(w, "data {}\n{msg}", msg.len()).expect("w");
        if c == 0 {
            for f in 0..files {
                let body = format!("// file {f}\nfn f{f}() -> u32 {{ {f} }}\n");
                writeln!(w, "M 644 inline src/m{}/f{f}.rs", f % 50).expect("w");
                writeln!(w, "data {}\n{body}", body.len()).expect("w");
            }
        } else {
            let f = c % files;
            let body = format!("// file {f}, version {c}\nfn f{f}() -> u32 {{ {c} }}\n");
            writeln!(w, "M 644 inline src/m{}/f{f}.rs", f % 50).expect("w");
            writeln!(w, "data {}\n{body}", body.len()).expect("w");
        }
    }
    drop(w);
    assert!(child.wait().expect("fast-import").success());
    git(&bare, &["repack", "-a", "-d", "-q"]);
    bare
}

fn fast_import_child(bare: &Path) -> Child {
    Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(bare)
        .stdin(Stdio::piped())
        .spawn()
        .expect("fast-import")
}

/// Feeds `stream` to `git fast-import` in the bare repository `bare`.
#[allow(dead_code, reason = "not every bench builds repositories")]
pub fn fast_import(bare: &Path, stream: &str) {
    let mut child = fast_import_child(bare);
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stream.as_bytes())
        .expect("write");
    assert!(child.wait().expect("wait").success());
}
