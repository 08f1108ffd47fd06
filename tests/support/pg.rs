//! A PostgreSQL schema of its own per test, in the database
//! `HOOKCI_TEST_DATABASE_URL` names (default: the local server's `test`
//! database), so that tests run side by side on one server. The schema is
//! dropped when the guard goes.
#![allow(dead_code, reason = "each test binary uses a different part")]

use std::sync::atomic::{AtomicU64, Ordering};

/// The URL of the server tests use.
pub fn server_url() -> String {
    std::env::var("HOOKCI_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// An empty schema, and the URL that puts a connection in it.
pub struct Schema {
    /// The schema's name.
    pub name: String,
    /// The server URL with `search_path` set to the schema.
    pub url: String,
    server: String,
}

static N: AtomicU64 = AtomicU64::new(0);

/// `url` with `search_path` = `schema`, in URL or key=value form.
pub fn with_search_path(url: &str, schema: &str) -> String {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}options=-c%20search_path%3D{schema}")
    } else {
        format!("{url} options='-c search_path={schema}'")
    }
}

impl Schema {
    /// A new schema on the test server; `None` (after saying why, or
    /// failing under `CI=true`) when no server answers.
    pub async fn create() -> Option<Schema> {
        let server = server_url();
        let (client, conn) = match tokio_postgres::connect(&server, tokio_postgres::NoTls).await {
            Ok(c) => c,
            Err(e) => {
                super::prereq::missing(&format!(
                    "no PostgreSQL at HOOKCI_TEST_DATABASE_URL or 127.0.0.1:5432 ({e})"
                ));
                return None;
            }
        };
        let task = tokio::spawn(conn);
        let name = format!(
            "hookci_t{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        client
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .expect("create a test schema");
        drop(client);
        let _ = task.await;
        Some(Schema {
            url: with_search_path(&server, &name),
            name,
            server,
        })
    }

    /// Runs `sql` on the test server with the schema as search path.
    pub async fn execute(&self, sql: &str) {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        let task = tokio::spawn(conn);
        client.batch_execute(sql).await.expect("run SQL");
        drop(client);
        let _ = task.await;
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let server = self.server.clone();
        let name = self.name.clone();
        // Drop may run inside a runtime: a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&server, tokio_postgres::NoTls).await
                {
                    let task = tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .await;
                    drop(client);
                    let _ = task.await;
                }
            });
        })
        .join();
    }
}

/// A PostgreSQL server of a test's own, which the test may stop and start
/// (the machine's server on 5432 is shared: never stop that one). Debian's
/// binaries (`/usr/lib/postgresql/VERSION/bin`, the newest), a cluster made
/// by `initdb` in a temp dir (trust auth), listening on 127.0.0.1 on a free
/// port, its Unix socket in the temp dir. Run as `postgres` when this
/// process is root (PostgreSQL refuses root). Dropping it stops the server
/// (the one process it started) and removes the dir.
pub struct Server {
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub url: String,
    /// Its port, kept across restarts.
    pub port: u16,
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
    user: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
    postmaster: Option<std::process::Child>,
}

/// How [`Server::stop`] stops the server.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// `pg_ctl stop -m fast` (SIGINT): sessions are ended, a checkpoint
    /// is written.
    Fast,
    /// `pg_ctl stop -m immediate` (SIGQUIT): as a crash; the next start
    /// replays the WAL.
    Immediate,
}

/// The newest Debian PostgreSQL `bin` directory that has `initdb` and
/// `postgres`.
fn pg_bin() -> Option<std::path::PathBuf> {
    let mut found: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file())
                .then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// A port nobody listens on now, on 127.0.0.1 (it may be taken before the
/// server binds it: [`Server::start`] retries).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

impl Server {
    /// A new cluster, started; `None` (after saying why, or failing under
    /// `CI=true`) when PostgreSQL's binaries are not installed.
    pub async fn start() -> Option<Server> {
        let Some(bin) = pg_bin() else {
            super::prereq::missing(
                "PostgreSQL's server binaries (/usr/lib/postgresql/*/bin/initdb; apt-get install postgresql)",
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let user = if nix::unistd::geteuid().is_root() {
            let pg = nix::unistd::User::from_name("postgres")
                .expect("look up the postgres user")
                .expect("the postgres user (made by the postgresql package)");
            nix::unistd::chown(dir.path(), Some(pg.uid), Some(pg.gid)).expect("chown the dir");
            Some((pg.uid, pg.gid))
        } else {
            None
        };
        let mut server = Server {
            url: String::new(),
            port: 0,
            bin,
            dir,
            user,
            postmaster: None,
        };
        let out = server
            .command("initdb")
            .args([
                "--auth=trust",
                "--username=postgres",
                "--no-sync",
                "--no-instructions",
            ])
            .args(["--encoding=UTF8", "--locale=C", "-D"])
            .arg(server.data())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for _ in 0..5 {
            server.port = free_port();
            server.url = format!("postgres://postgres@127.0.0.1:{}/postgres", server.port);
            if server.try_start().await {
                return Some(server);
            }
        }
        panic!("the test's PostgreSQL did not start on any of 5 ports");
    }

    fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// `bin/NAME`, as the server's user.
    fn command(&self, name: &str) -> std::process::Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(self.bin.join(name));
        cmd.current_dir(self.dir.path())
            .env("LC_ALL", "C")
            .stdin(std::process::Stdio::null());
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
        }
        cmd
    }

    /// Starts the postmaster on `self.port`; false when it exits at once
    /// (the port was taken meanwhile). Waits (bounded) until it answers.
    async fn try_start(&mut self) -> bool {
        let mut child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
            ])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .args(["-c", "max_connections=200", "-c", "shared_buffers=16MB"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("server.log")).expect("log"))
            .spawn()
            .expect("spawn postgres");
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if let Ok((client, conn)) =
                tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await
            {
                let task = tokio::spawn(conn);
                let ok = client.simple_query("SELECT 1").await.is_ok();
                drop(client);
                let _ = task.await;
                if ok {
                    self.postmaster = Some(child);
                    return true;
                }
            }
            if std::time::Instant::now() > until {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the test's PostgreSQL did not answer within 60 s: {}",
                    self.log()
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The server's own log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Starts the server again after [`Server::stop`], on the same port.
    pub async fn restart(&mut self) {
        assert!(self.postmaster.is_none(), "the server runs");
        for _ in 0..20 {
            if self.try_start().await {
                return;
            }
            // The old sockets may linger a moment.
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        panic!(
            "the test's PostgreSQL did not start again on port {}: {}",
            self.port,
            self.log()
        );
    }

    /// Stops the server (the postmaster this guard started, whose
    /// backends follow it) and waits until it has exited (bounded: then
    /// SIGKILL).
    pub fn stop(&mut self, how: Stop) {
        use nix::sys::signal::{Signal, kill};
        let Some(mut child) = self.postmaster.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let signal = match how {
            Stop::Fast => Signal::SIGINT,
            Stop::Immediate => Signal::SIGQUIT,
        };
        let _ = kill(pid, signal);
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            if std::time::Instant::now() > until {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop(Stop::Immediate);
    }
}
