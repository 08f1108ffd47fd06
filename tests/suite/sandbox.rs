//! The step sandbox end to end (SPEC section 9), with the real daemon and
//! real bwrap: what a step of one pipeline can reach of the daemon and of
//! another pipeline, its network, and the cgroup escape of the security
//! review (C1).

use crate::common;
use crate::gitserve;

use base64::Engine as _;
use common::{TestServer, ZERO};
use gitserve::Upstream;
use std::path::{Path, PathBuf};

const SECRET: &str = "sandbox-secret";

/// bwrap works here; else the test is skipped (failed under `CI=true`).
fn have_bwrap() -> bool {
    match hookci::runner::sandbox::probe(None) {
        Ok(_) => true,
        Err(why) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "the sandbox tests need bwrap: {why}"
            );
            println!("skipped: {why}");
            false
        }
    }
}

/// A value no file or process has by chance.
fn canary(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{what}-CANARY-{}-{nanos}", std::process::id())
}

/// The daemon binary, killed when dropped (a failing test leaves nothing).
struct Daemon {
    /// Killed when dropped.
    child: common::Daemon,
    base: String,
}

/// Starts `hookci serve --config CONFIG` with `env` added to its
/// environment, once it listens.
fn serve(config: &Path, env: &[(&str, &str)]) -> Daemon {
    serve_as(config, env, None)
}

/// [`serve`], as `user` (uid = gid) when given.
fn serve_as(config: &Path, env: &[(&str, &str)], user: Option<u32>) -> Daemon {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hookci"));
    if let Some(id) = user {
        cmd.uid(id).gid(id);
    }
    let child = cmd
        .arg("serve")
        .arg("--config")
        .arg(config)
        .envs(env.iter().copied())
        .env("HOOKCI_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn hookci");
    let (child, base) = common::listening(child);
    Daemon { child, base }
}

/// What every path of a test lives in: a config directory, a data
/// directory, pipelines and secret files, all under one temp dir.
struct Layout {
    root: tempfile::TempDir,
    config: PathBuf,
    data: PathBuf,
    pipelines: PathBuf,
    secrets: PathBuf,
}

impl Layout {
    fn new() -> Layout {
        let root = tempfile::tempdir().expect("tmp");
        let r = root.path().canonicalize().expect("canonical");
        let layout = Layout {
            config: r.join("etc/hookci.toml"),
            data: r.join("var/data"),
            pipelines: r.join("etc/pipelines"),
            secrets: r.join("secrets"),
            root,
        };
        for d in [&layout.data, &layout.pipelines, &layout.secrets] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        layout
    }

    fn root(&self) -> PathBuf {
        self.root.path().canonicalize().expect("canonical")
    }

    fn pipeline(&self, name: &str, clone_url: &str, toml: &str) {
        let text = common::pipeline_toml(SECRET)
            .clone_url(clone_url)
            .table(toml)
            .to_string();
        std::fs::write(self.pipelines.join(format!("{name}.toml")), text).expect("pipeline");
    }

    fn write_config(&self, extra: &str) {
        std::fs::write(
            &self.config,
            format!(
                "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\npipelines_dir = \"{}\"\n\
                 max_parallel_builds = 2\nadmin_token = {{ env = \"HOOKCI_ADMIN_TOKEN\" }}\n{extra}\n",
                self.data.display(),
                self.pipelines.display()
            ),
        )
        .expect("config");
    }

    fn log(&self, id: i64) -> String {
        std::fs::read_to_string(self.data.join(format!("logs/{id}.log"))).expect("log")
    }
}

/// Everything base64 in `log`'s lines, decoded and joined.
fn decoded(log: &str) -> String {
    let engine = base64::engine::general_purpose::STANDARD;
    log.lines()
        .filter_map(|l| l.strip_prefix("B64:"))
        .filter_map(|b| engine.decode(b.trim()).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs the leak scenario with `sandbox` (a `[sandbox]` table for the
/// server config) and returns (canaries, what pipeline A's steps got).
async fn leak_scenario(sandbox: &str) -> (Vec<String>, String, String) {
    let up = Upstream::new("leak");
    let commit = up.push(&[("README", "x\n")], "leak");
    let l = Layout::new();
    let admin = canary("ADMIN");
    let config_canary = canary("CONFIG");
    let b_secret = canary("BSECRET");
    let b_workspace = canary("BWORKSPACE");
    let b_log = canary("BLOG");
    let gate = l.root().join("gate");
    std::fs::create_dir_all(&gate).expect("gate dir");
    let secret_file = l.secrets.join("b.secret");
    std::fs::write(&secret_file, format!("{b_secret}\n")).expect("secret");
    l.write_config(&format!("# {config_canary}\n{sandbox}"));
    // B: a secret file, a workspace file and a log line, then it waits
    // (running, workspace in place) until the test opens the gate.
    l.pipeline(
        "b",
        &up.url(),
        &format!(
            "[secrets]\nB_TOKEN = {{ file = \"{}\" }}\n[sandbox]\nread_only = [\"{}\"]\n\
             [[steps]]\nname = \"hold\"\nrun = '''\n\
             echo {b_workspace} > ws-canary.txt\necho {b_log}\n\
             while [ ! -e {}/open ]; do sleep 0.05; done\n'''\n",
            secret_file.display(),
            gate.display(),
            gate.display(),
        ),
    );
    // A tries every path SPEC section 9 puts out of its reach; a second
    // pipeline does the same with the whole temp dir made readable, so
    // that hookci's own masks are what stops it.
    let data = l.data.display();
    let reach = format!(
        "[[steps]]\nname = \"reach\"\nrun = '''\n\
         for f in /proc/[0-9]*/environ {config} {secret} {data}/workspaces/*/src/ws-canary.txt {data}/logs/*.log; do\n\
         printf 'B64:'; cat \"$f\" 2>/dev/null | base64 -w0; echo\ndone\n'''\n",
        config = l.config.display(),
        secret = secret_file.display(),
    );
    l.pipeline("a", &up.url(), &reach);
    l.pipeline(
        "a-wide",
        &up.url(),
        &format!(
            "[sandbox]\nread_only = [\"{}\"]\n{reach}",
            l.root().display()
        ),
    );
    let daemon = serve(&l.config, &[("HOOKCI_ADMIN_TOKEN", &admin)]);
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "leak");
    let b = common::queue_github(&daemon.base, "b", SECRET, "b-1", &body).await[0];
    common::wait_build(&daemon.base, b, |v| v["steps"][0]["status"] == "running").await;
    // B's log line is out before A looks.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_to_string(l.data.join(format!("logs/{b}.log")))
        .unwrap_or_default()
        .contains(&b_log)
    {
        assert!(std::time::Instant::now() < until, "B never printed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let a = common::queue_github(&daemon.base, "a", SECRET, "a-1", &body).await[0];
    let a_build = common::wait_final(&daemon.base, a).await;
    assert_eq!(a_build["status"], "success", "{a_build}");
    let wide = common::queue_github(&daemon.base, "a-wide", SECRET, "a-2", &body).await[0];
    let wide_build = common::wait_final(&daemon.base, wide).await;
    assert_eq!(wide_build["status"], "success", "{wide_build}");
    std::fs::write(gate.join("open"), "").expect("open the gate");
    let b_build = common::wait_final(&daemon.base, b).await;
    assert_eq!(b_build["status"], "success", "{b_build}");
    let canaries = vec![admin, config_canary, b_secret, b_workspace, b_log];
    (canaries, decoded(&l.log(a)), decoded(&l.log(wide)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_reaches_nothing_of_the_daemon_or_another_pipeline() {
    if !have_bwrap() {
        return;
    }
    let (canaries, a, wide) = leak_scenario("").await;
    for c in &canaries {
        assert!(!a.contains(c.as_str()), "{c} reached pipeline a's step");
        assert!(
            !wide.contains(c.as_str()),
            "{c} reached pipeline a-wide's step"
        );
    }
    // The step did read: its own processes' environments.
    assert!(a.contains("HOOKCI_PIPELINE=a"), "{a}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_sandbox_the_same_step_reaches_all_of_it() {
    if !have_bwrap() {
        return;
    }
    let (canaries, a, _) = leak_scenario("[sandbox]\nenabled = false\n").await;
    for c in &canaries {
        // The daemon is non-dumpable: only root still reads its environment.
        if c.starts_with("ADMIN") && !nix::unistd::geteuid().is_root() {
            assert!(
                !a.contains(c.as_str()),
                "the non-dumpable daemon leaked {c}"
            );
            continue;
        }
        assert!(
            a.contains(c.as_str()),
            "{c} did not leak without the sandbox"
        );
    }
}

/// A step that tries to reach a server the test runs on 127.0.0.1, under
/// `network`; returns what it printed.
async fn reach_loopback(network: bool) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            drop(conn);
        }
    });
    let up = Upstream::new("net");
    let commit = up.push(&[("README", "x\n")], "net");
    let steps = format!(
        "[sandbox]\nnetwork = {network}\n[[steps]]\nname = \"connect\"\nshell = \"bash\"\n\
         run = 'if echo hi > /dev/tcp/127.0.0.1/{port}; then echo REACHED; else echo UNREACHABLE; fi'\n"
    );
    let pipeline = common::pipeline_toml(SECRET)
        .clone_url(&up.url())
        .table(&steps)
        .to_string();
    let server = TestServer::start(&[("net", &pipeline)], |c| c.max_parallel_builds = 1).await;
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "net");
    let id = common::queue_github(&server.base(), "net", SECRET, "n-1", &body).await[0];
    let b = common::wait_final(&server.base(), id).await;
    assert_eq!(b["status"], "success", "{b}");
    let log = std::fs::read_to_string(server.config.data_dir.join(format!("logs/{id}.log")))
        .expect("log");
    server.stop().await;
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_network_false_a_step_cannot_reach_a_server_on_the_hosts_loopback() {
    if !have_bwrap() {
        return;
    }
    let log = reach_loopback(false).await;
    assert!(log.contains("UNREACHABLE"), "{log}");
    assert!(!log.contains("REACHED\n"), "{log}");
    // The same step with the network on does reach it.
    let log = reach_loopback(true).await;
    assert!(log.contains("REACHED"), "{log}");
}

/// Pids of live processes whose command line holds `needle`.
fn pids_with(needle: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmd)
            .replace('\0', " ")
            .contains(needle)
        {
            found.push(pid);
        }
    }
    found
}

/// The review's escape (C1): the step writes itself into every cgroup it
/// can, then leaves its session with a cleared environment. Returns the
/// pids of escapees still alive after the build.
async fn escape(enabled: bool, needle: &str) -> Vec<i32> {
    let up = Upstream::new("escape");
    let commit = up.push(&[("README", "x\n")], "escape");
    let run = format!(
        "sh -c 'for f in /sys/fs/cgroup/cgroup.procs /sys/fs/cgroup/*/cgroup.procs; do echo $$ > $f 2>/dev/null; done; exec setsid env -i sleep {needle}' &\n\
         sleep 0.5; echo started"
    );
    let pipeline = common::pipeline_toml(SECRET)
        .clone_url(&up.url())
        .table(&format!("[sandbox]\nenabled = {enabled}"))
        .step("escape", &format!("\n{run}\n"))
        .to_string();
    let server = TestServer::start(&[("esc", &pipeline)], |c| c.max_parallel_builds = 1).await;
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "escape");
    let id = common::queue_github(&server.base(), "esc", SECRET, "e-1", &body).await[0];
    let b = common::wait_final(&server.base(), id).await;
    assert_eq!(b["status"], "success", "{b}");
    server.stop().await;
    pids_with(&format!("sleep {needle}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reviews_cgroup_escape_fails_in_the_sandbox_and_leaves_no_process() {
    if !have_bwrap() {
        return;
    }
    assert_eq!(escape(true, "4242171").await, Vec::<i32>::new());
    // Without the sandbox, where step cgroups are writable, it escapes.
    if hookci::runner::cgroup::available() {
        let left = escape(false, "4242172").await;
        for pid in &left {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        assert!(
            !left.is_empty(),
            "the escape did not work without the sandbox"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelines_secrets_go_only_to_its_own_steps() {
    let up = Upstream::new("secrets");
    let commit = up.push(&[("README", "x\n")], "secrets");
    let dir = tempfile::tempdir().expect("tmp");
    let mine = canary("MINE");
    let theirs = canary("THEIRS");
    let file = dir.path().join("theirs.secret");
    std::fs::write(&file, &theirs).expect("secret");
    let show = "[[steps]]\nname = \"env\"\nrun = 'printf \"B64:\"; env | base64 -w0; echo'\n";
    let a = common::pipeline_toml(SECRET)
        .clone_url(&up.url())
        .table(&format!("[secrets]\nMINE = \"{mine}\""))
        .raw_steps(show)
        .to_string();
    let b = common::pipeline_toml(SECRET)
        .clone_url(&up.url())
        .table(&format!(
            "[secrets]\nTHEIRS = {{ file = {:?} }}",
            file.display().to_string()
        ))
        .raw_steps(show)
        .to_string();
    let server = TestServer::start(&[("a", &a), ("b", &b)], |c| c.max_parallel_builds = 2).await;
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "secrets");
    let ida = common::queue_github(&server.base(), "a", SECRET, "s-1", &body).await[0];
    let idb = common::queue_github(&server.base(), "b", SECRET, "s-2", &body).await[0];
    for id in [ida, idb] {
        let b = common::wait_final(&server.base(), id).await;
        assert_eq!(b["status"], "success", "{b}");
    }
    let read = |id: i64| {
        decoded(
            &std::fs::read_to_string(server.config.data_dir.join(format!("logs/{id}.log")))
                .expect("log"),
        )
    };
    let (env_a, env_b) = (read(ida), read(idb));
    assert!(env_a.contains(&format!("MINE={mine}")), "{env_a}");
    assert!(
        !env_a.contains(&theirs) && !env_a.contains("THEIRS="),
        "{env_a}"
    );
    assert!(env_b.contains(&format!("THEIRS={theirs}")), "{env_b}");
    assert!(
        !env_b.contains(&mine) && !env_b.contains("MINE="),
        "{env_b}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_is_non_dumpable_so_its_own_user_cannot_read_its_environment() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: the test runs the daemon as another user, which needs root");
        return;
    }
    const NOBODY: u32 = 65534;
    let l = Layout::new();
    l.write_config("");
    std::fs::write(
        &l.config,
        std::fs::read_to_string(&l.config).expect("config"),
    )
    .expect("config");
    let root = l.root();
    for entry in [&root, &l.data, &l.pipelines, &l.secrets, &l.config] {
        std::os::unix::fs::chown(entry, Some(NOBODY), Some(NOBODY)).expect("chown");
    }
    std::os::unix::fs::chown(root.join("etc"), Some(NOBODY), Some(NOBODY)).expect("chown");
    std::os::unix::fs::chown(root.join("var"), Some(NOBODY), Some(NOBODY)).expect("chown");
    let token = canary("ADMIN");
    let daemon = serve_as(&l.config, &[("HOOKCI_ADMIN_TOKEN", &token)], Some(NOBODY));
    let pid = daemon.child.id();
    // Another process of the daemon's own user, as a step without a
    // sandbox would be.
    let read = {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("cat")
            .arg(format!("/proc/{pid}/environ"))
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .expect("cat")
    };
    let got = String::from_utf8_lossy(&read.stdout);
    assert!(
        !got.contains(&token),
        "the daemon's environment was readable"
    );
    assert!(!read.status.success(), "{got}");
    drop(daemon);
}
