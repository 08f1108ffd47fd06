//! Real git for checkout tests: repositories made with the `git` CLI in a
//! temp dir (its own HOME, no system config), a smart-HTTP server running
//! `git http-backend` as a CGI behind Basic auth, and an sshd on loopback.

#![allow(dead_code, reason = "each test binary uses a different part")]

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// The environment every git command of a test runs with.
fn git_env(cmd: &mut Command, home: &Path) {
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Ada Tester")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Ada Tester")
        .env("GIT_COMMITTER_EMAIL", "ada@example.com")
        .env("LANG", "C");
}

/// Runs `git args` in `cwd`; panics with git's stderr on failure.
pub fn git(home: &Path, cwd: &Path, args: &[&str]) -> String {
    let out = try_git(home, cwd, args);
    match out {
        Ok(stdout) => stdout,
        Err(stderr) => panic!("git {args:?} in {} failed: {stderr}", cwd.display()),
    }
}

/// Runs `git args` in `cwd`: its trimmed stdout, or its stderr.
pub fn try_git(home: &Path, cwd: &Path, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("git");
    git_env(&mut cmd, home);
    let out = cmd.args(args).current_dir(cwd).output().expect("git runs");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A bare "remote" repository and a working clone that pushes to it.
#[derive(Debug)]
pub struct Upstream {
    /// Holds every path below.
    pub tmp: tempfile::TempDir,
    /// HOME for git commands.
    pub home: PathBuf,
    /// The bare repository (`<root>/repos/NAME.git`).
    pub bare: PathBuf,
    /// The directory served over HTTP (`<root>/repos`).
    pub project_root: PathBuf,
    /// Where commits are made.
    pub work: PathBuf,
}

impl Upstream {
    /// An empty bare repository `name.git` (default branch `main`) and a
    /// working repository whose `origin` is it.
    pub fn new(name: &str) -> Upstream {
        let tmp = tempfile::tempdir().expect("tempdir");
        let home = tmp.path().join("home");
        let project_root = tmp.path().join("repos");
        let work = tmp.path().join("work");
        for dir in [&home, &project_root, &work] {
            std::fs::create_dir_all(dir).expect("mkdir");
        }
        let bare = project_root.join(format!("{name}.git"));
        let bare_str = bare.to_str().expect("utf-8 temp path");
        git(
            &home,
            tmp.path(),
            &["init", "-q", "--bare", "-b", "main", bare_str],
        );
        git(&home, &work, &["init", "-q", "-b", "main"]);
        git(&home, &work, &["remote", "add", "origin", bare_str]);
        Upstream {
            tmp,
            home,
            bare,
            project_root,
            work,
        }
    }

    /// The bare repository's path as a clone URL.
    pub fn url(&self) -> String {
        self.bare.to_str().expect("utf-8").to_owned()
    }

    /// `git args` in the working repository.
    pub fn git(&self, args: &[&str]) -> String {
        git(&self.home, &self.work, args)
    }

    /// `git args` in the bare repository.
    pub fn git_bare(&self, args: &[&str]) -> String {
        git(&self.home, &self.bare, args)
    }

    /// Writes `files` (path, contents), commits everything and returns the
    /// new commit's id. Does not push.
    pub fn commit(&self, files: &[(&str, &str)], message: &str) -> String {
        for (path, contents) in files {
            let path = self.work.join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, contents).expect("write");
        }
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    /// Another bare repository `name.git` beside this one (same project
    /// root), with one commit of `files` on `main`; returns its path.
    pub fn sibling(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let bare = self.project_root.join(format!("{name}.git"));
        let work = self.tmp.path().join(format!("work-{name}"));
        std::fs::create_dir_all(&work).expect("mkdir");
        let bare_str = bare.to_str().expect("utf-8");
        git(
            &self.home,
            &self.project_root,
            &["init", "-q", "--bare", "-b", "main", bare_str],
        );
        for (path, contents) in files {
            std::fs::write(work.join(path), contents).expect("write");
        }
        git(&self.home, &work, &["init", "-q", "-b", "main"]);
        git(&self.home, &work, &["add", "-A"]);
        git(&self.home, &work, &["commit", "-q", "-m", name]);
        git(
            &self.home,
            &work,
            &["push", "-q", bare_str, "HEAD:refs/heads/main"],
        );
        bare
    }

    /// Commits `files` and pushes `main`; returns the commit id.
    pub fn push(&self, files: &[(&str, &str)], message: &str) -> String {
        let id = self.commit(files, message);
        self.git(&["push", "-q", "origin", "HEAD:refs/heads/main"]);
        id
    }
}

/// A smart-HTTP git server on 127.0.0.1 that serves a project root with
/// `git http-backend`, for clients that send `Authorization: Basic` with the
/// right password (any user name).
#[derive(Debug)]
pub struct HttpGitServer {
    /// Where it listens.
    pub addr: SocketAddr,
    config: Arc<HttpConfig>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct HttpConfig {
    project_root: PathBuf,
    home: PathBuf,
    token: String,
    /// Requests that carried an `Authorization` header.
    authorizations: AtomicUsize,
}

impl HttpGitServer {
    /// Serves `project_root` on a free loopback port.
    pub async fn start(project_root: &Path, home: &Path, token: &str) -> HttpGitServer {
        let config = Arc::new(HttpConfig {
            project_root: project_root.to_path_buf(),
            home: home.to_path_buf(),
            token: token.to_owned(),
            authorizations: AtomicUsize::new(0),
        });
        let app = axum::Router::new().fallback(cgi).with_state(config.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        HttpGitServer { addr, config, task }
    }

    /// How many requests carried an `Authorization` header so far.
    pub fn authorizations(&self) -> usize {
        self.config.authorizations.load(Ordering::SeqCst)
    }

    /// The URL of `NAME.git` under the project root.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}.git", self.addr)
    }
}

impl Drop for HttpGitServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn plain(status: StatusCode, text: &str) -> Response {
    let mut response = Response::new(Body::from(text.to_owned()));
    *response.status_mut() = status;
    response
}

/// The Basic-auth user when the password is the token.
fn authorized(request: &Request, token: &str) -> Option<String> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    (password == token).then(|| user.to_owned())
}

async fn cgi(State(config): State<Arc<HttpConfig>>, request: Request) -> Response {
    if request.headers().contains_key(header::AUTHORIZATION) {
        config.authorizations.fetch_add(1, Ordering::SeqCst);
    }
    let Some(user) = authorized(&request, &config.token) else {
        let mut response = plain(StatusCode::UNAUTHORIZED, "authentication required\n");
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"git\""),
        );
        return response;
    };
    // Read everything from the request before the first await: a `&Request`
    // held across it would make this future not `Send`.
    let (content_type, content_encoding, git_protocol, method, path, query) = {
        let header_str = |name: header::HeaderName| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        (
            header_str(header::CONTENT_TYPE),
            header_str(header::CONTENT_ENCODING),
            header_str(header::HeaderName::from_static("git-protocol")),
            request.method().as_str().to_owned(),
            request.uri().path().to_owned(),
            request.uri().query().unwrap_or("").to_owned(),
        )
    };
    let body = match axum::body::to_bytes(request.into_body(), 64 << 20).await {
        Ok(body) => body,
        Err(_) => return plain(StatusCode::BAD_REQUEST, "bad body\n"),
    };

    let mut cmd = tokio::process::Command::new("git");
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &config.home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_PROJECT_ROOT", &config.project_root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", content_type)
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .arg("http-backend")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if !content_encoding.is_empty() {
        cmd.env("HTTP_CONTENT_ENCODING", content_encoding);
    }
    if !git_protocol.is_empty() {
        cmd.env("GIT_PROTOCOL", git_protocol);
    }
    let mut child = cmd.spawn().expect("git http-backend starts");
    let mut stdin = child.stdin.take().expect("stdin");
    // Write the body while the output is read: a big request and a big
    // answer must not wait on each other.
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let output = child.wait_with_output().await.expect("http-backend output");
    let _ = writer.await;
    cgi_response(&output.stdout)
}

/// Turns CGI output (`Status:` and headers, a blank line, the body) into a
/// response.
fn cgi_response(out: &[u8]) -> Response {
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| {
            out.windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, i + 2))
        });
    let Some((head_end, body_start)) = split else {
        return plain(StatusCode::BAD_GATEWAY, "bad CGI output\n");
    };
    let head = String::from_utf8_lossy(&out[..head_end]);
    let mut response = Response::new(Body::from(out[body_start..].to_vec()));
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split(' ').next().and_then(|c| c.parse().ok());
            if let Some(status) = code.and_then(|c: u16| StatusCode::from_u16(c).ok()) {
                *response.status_mut() = status;
            }
        } else if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// An sshd on a free loopback port that lets one key log in as the
/// current user; killed on drop.
#[derive(Debug)]
pub struct Sshd {
    /// Where it listens.
    pub port: u16,
    /// The user keys log in as.
    pub user: String,
    child: Child,
    log: PathBuf,
}

/// An ssh key pair made with ssh-keygen.
#[derive(Debug)]
pub struct KeyPair {
    /// The private key file's contents.
    pub private: String,
    /// The public key line.
    pub public: String,
}

/// Makes a key pair of `kind` (`ed25519`, or `rsa` in PEM form) in `dir`.
pub fn keygen(dir: &Path, name: &str, kind: &str) -> KeyPair {
    let path = dir.join(name);
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-N", "", "-C", name, "-f"]).arg(&path);
    match kind {
        "rsa" => cmd.args(["-t", "rsa", "-b", "3072", "-m", "PEM"]),
        other => cmd.args(["-t", other]),
    };
    let status = cmd.status().expect("ssh-keygen runs");
    assert!(status.success(), "ssh-keygen failed");
    KeyPair {
        private: std::fs::read_to_string(&path).expect("private key"),
        public: std::fs::read_to_string(path.with_extension("pub")).expect("public key"),
    }
}

impl Sshd {
    /// The sshd binary, or why ssh tests cannot run here.
    pub fn binary() -> Result<PathBuf, String> {
        let sshd = PathBuf::from("/usr/sbin/sshd");
        if !sshd.exists() {
            return Err("/usr/sbin/sshd is not installed (apt-get install openssh-server)".into());
        }
        if Command::new("ssh-keygen").arg("-V").output().is_err() {
            return Err("ssh-keygen is not installed".into());
        }
        Ok(sshd)
    }

    /// Starts sshd in `dir` accepting `authorized` (public key lines).
    pub fn start(sshd: &Path, dir: &Path, authorized: &[&str]) -> Sshd {
        let host_key = dir.join("ssh_host_ed25519_key");
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&host_key)
            .status()
            .expect("ssh-keygen runs");
        assert!(status.success(), "host key generation failed");
        let authorized_keys = dir.join("authorized_keys");
        std::fs::write(&authorized_keys, authorized.join("")).expect("authorized_keys");
        // sshd insists on its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");

        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").expect("bind");
            probe.local_addr().expect("addr").port()
        };
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1:{port}\n\
                 HostKey {}\n\
                 AuthorizedKeysFile {}\n\
                 PidFile {}\n\
                 StrictModes no\n\
                 PermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\n\
                 UsePAM no\n\
                 LogLevel VERBOSE\n",
                host_key.display(),
                authorized_keys.display(),
                dir.join("sshd.pid").display(),
            ),
        )
        .expect("sshd_config");
        let log = dir.join("sshd.log");
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("sshd starts");
        let user = Command::new("id")
            .arg("-un")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .expect("id -un");
        let mut sshd = Sshd {
            port,
            user,
            child,
            log,
        };
        sshd.wait_ready();
        sshd
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sshd exited with {status}: {}", self.log());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("sshd did not listen within 10 s: {}", self.log());
    }

    /// What sshd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The ssh URL of a repository at an absolute path.
    pub fn url(&self, path: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            path.display()
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
