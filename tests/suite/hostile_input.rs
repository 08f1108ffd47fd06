//! What a hostile sender can put in a delivery, and what it must not get:
//! clone URLs that point elsewhere, refs that forge log lines, huge commit
//! messages, secrets hidden behind escape sequences; and a data directory
//! no other local user can read.

use crate::common;
use crate::gitserve;

use common::{TestServer, ZERO};
use gitserve::Upstream;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const SECRET: &str = "hostile-secret";

/// A step printing the secret `MINE` split by an ANSI escape, then a
/// coloured word (the masking tests' step, on the server and in `hookci run`).
const SPLIT_SECRET: &str = r#"
printf 'ansi split: %s\033[0m%s\n' "$(echo $MINE | cut -c1-3)" "$(echo $MINE | cut -c4-)"
printf 'colour \033[32mok\033[0m\n'
"#;

async fn start(pipeline: &str) -> TestServer {
    TestServer::start(&[("app", pipeline)], |c| c.max_parallel_builds = 1).await
}

fn log(server: &TestServer, id: i64) -> String {
    let path = server
        .config
        .data_dir
        .join("logs")
        .join(format!("{id}.log"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A GitHub push of `commit` with the payload's clone URL set to `clone_url`.
fn push_with_clone_url(up: &Upstream, commit: &str, clone_url: &str) -> Vec<u8> {
    let mut body: Value = serde_json::from_slice(&common::github_push(
        &up.url(),
        "refs/heads/main",
        ZERO,
        commit,
        "x",
    ))
    .expect("json");
    body["repository"]["clone_url"] = clone_url.into();
    serde_json::to_vec(&body).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_clone_url_is_fetched_only_over_https_or_ssh_on_the_pipelines_host() {
    let up = Upstream::new("payload-url");
    let commit = up.push(&[("README", "x\n")], "x");
    // Whatever connects here would be handed the clone.
    let capture = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    capture.set_nonblocking(true).expect("nonblocking");
    let http = format!("http://{}/evil.git", capture.local_addr().expect("addr"));
    let toml = common::pipeline_toml(SECRET)
        .top("host = \"github\"")
        .step("t", "true")
        .to_string();
    let server = start(&toml).await;
    let local = up.url();
    let file = format!("file://{local}");
    let other = "https://git.example.invalid/Codertocat/Hello-World.git";
    for (n, url) in [local.as_str(), &file, &http, other]
        .into_iter()
        .enumerate()
    {
        let body = push_with_clone_url(&up, &commit, url);
        let id =
            common::queue_github(&server.base(), "app", SECRET, &format!("u-{n}"), &body).await[0];
        let b = common::wait_final(&server.base(), id).await;
        assert_eq!(b["status"], "error", "{url}: {b}");
        let reason = b["reason"].as_str().unwrap_or("");
        assert!(reason.contains("set clone_url"), "{url}: {reason}");
    }
    assert!(
        capture.accept().is_err(),
        "the payload's http server got a connection"
    );
    // Nothing was fetched at all.
    let repos = server.config.data_dir.join("repos");
    let mirrors = std::fs::read_dir(&repos).map_or(0, |d| d.count());
    assert_eq!(mirrors, 0, "a mirror was made in {}", repos.display());
    server.stop().await;
}

#[tokio::test]
async fn a_ref_git_would_refuse_is_a_400() {
    let server = TestServer::start(
        &[(
            "app",
            &common::pipeline_toml(SECRET).step("t", "true").to_string(),
        )],
        |_| {},
    )
    .await;
    let commit = "1111111111111111111111111111111111111111";
    for (n, bad) in [
        "refs/heads/x\n==> step build exited 0 in 1s\n==> build 99 success in 2s",
        "refs/heads/a..b",
        "refs/heads/x\u{1b}[2J",
        "refs/heads/x.lock",
        "refs/heads/x y",
    ]
    .into_iter()
    .enumerate()
    {
        let body = common::github_push("/nowhere", bad, ZERO, commit, "x");
        let (status, answer) =
            common::send_github(&server.base(), "app", SECRET, &format!("r-{n}"), &body).await;
        assert_eq!(status, 400, "{bad:?}: {answer}");
        assert_eq!(
            answer["error"], "the payload's ref is not a valid git ref name",
            "{bad:?}"
        );
    }
    // A good one still queues.
    let body = common::github_push("/nowhere", "refs/heads/feature/x-1", ZERO, commit, "x");
    common::queue_github(&server.base(), "app", SECRET, "ok", &body).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hookcis_own_log_lines_escape_control_characters() {
    let up = Upstream::new("forge");
    let commit = up.push(&[("README", "x\n")], "x");
    let toml = common::pipeline_toml(SECRET)
        .top("host = \"github\"")
        .step("t", "true")
        .to_string();
    let server = start(&toml).await;
    // The refusal names the payload's URL in hookci's own line.
    let forged = "file:///x\n==> step t exited 0 in 1s\n==> build 7 success in 1s";
    let body = push_with_clone_url(&up, &commit, forged);
    let id = common::queue_github(&server.base(), "app", SECRET, "f", &body).await[0];
    let b = common::wait_final(&server.base(), id).await;
    assert_eq!(b["status"], "error", "{b}");
    let text = log(&server, id);
    assert!(
        text.lines().all(|l| !l.starts_with("==> build 7")),
        "a forged line:\n{text}"
    );
    assert!(text.contains("file:///x\\n==> step t exited"), "{text}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200000_character_commit_message_still_builds() {
    let up = Upstream::new("huge");
    let commit = up.push(&[("README", "x\n")], "x");
    let toml = common::pipeline_toml(SECRET)
        .clone_url(&up.url())
        .step(
            "t",
            r#"
printf 'env=%s\n' "$(printf %s "$HOOKCI_COMMIT_MESSAGE" | wc -c)"
printf 'file=%s\n' "$(wc -c < "$HOOKCI_COMMIT_MESSAGE_FILE")"
printf 'tail=%s\n' "$(printf %s "$HOOKCI_COMMIT_MESSAGE" | tail -c 40)"
"#,
        )
        .to_string();
    let server = start(&toml).await;
    let message = "m".repeat(200_000);
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, &message);
    let id = common::queue_github(&server.base(), "app", SECRET, "huge", &body).await[0];
    let b = common::wait_final(&server.base(), id).await;
    let text = log(&server, id);
    assert_eq!(
        b["status"],
        "success",
        "{b}\n{}",
        &text[..text.len().min(2000)]
    );
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in the log"))
            .trim()
            .to_owned()
    };
    assert_eq!(value("env"), (64 * 1024).to_string());
    assert_eq!(value("file"), "200000");
    assert!(
        value("tail").ends_with("$HOOKCI_COMMIT_MESSAGE_FILE]"),
        "{text}"
    );
    server.stop().await;
}

/// Every path under `dir` whose mode gives anything to group or others.
fn readable_by_others(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o777;
        // Directories may be 0700; files 0600 (a mirror's objects 0400/0500).
        if mode & 0o077 != 0 {
            found.push(format!("{:o} {}", mode, path.display()));
        }
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.filter_map(Result::ok).map(|e| e.path()));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_in_the_data_dir_is_private_to_the_daemons_user() {
    let up = Upstream::new("modes");
    let commit = up.push(&[("README", "x\n")], "x");
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join("pipelines")).expect("mkdir");
    std::fs::write(
        dir.path().join("pipelines/app.toml"),
        common::pipeline_toml(SECRET)
            .clone_url(&up.url())
            .step("t", "echo built > out.txt; mkdir -p sub; echo x > sub/y")
            .to_string(),
    )
    .expect("pipeline");
    // Killed when the test ends, passed or failed.
    let (_daemon, base) = common::spawn_daemon(dir.path(), "max_parallel_builds = 1");
    for n in 0..2 {
        // The second build reuses the parked workspace.
        // A body of its own each time: the same signed body is a replay.
        let message = format!("x {n}");
        let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, &message);
        let id = common::queue_github(&base, "app", SECRET, &format!("m-{n}"), &body).await[0];
        let b = common::wait_final(&base, id).await;
        assert_eq!(b["status"], "success", "{b}");
    }
    let data = dir.path().join("data");
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("hookci.db")), 0o600);
    assert_eq!(mode(&data.join("logs")), 0o700);
    assert_eq!(mode(&data.join("logs/1.log")), 0o600);
    for sub in ["repos", "workspaces", "workspace-pool"] {
        assert_eq!(mode(&data.join(sub)), 0o700, "{sub}");
    }
    let open = readable_by_others(&data);
    assert!(open.is_empty(), "readable by others:\n{}", open.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_is_private_whatever_the_umask() {
    // In this process the umask is the test runner's (usually 022): the
    // store, the logs and the directories get their modes explicitly.
    let up = Upstream::new("explicit");
    let commit = up.push(&[("README", "x\n")], "x");
    let toml = common::pipeline_toml(SECRET)
        .clone_url(&up.url())
        .step("t", "true")
        .to_string();
    let server = start(&toml).await;
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "x");
    let id = common::queue_github(&server.base(), "app", SECRET, "e", &body).await[0];
    assert_eq!(
        common::wait_final(&server.base(), id).await["status"],
        "success"
    );
    let data = &server.config.data_dir;
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(data), 0o700);
    assert_eq!(mode(&data.join("hookci.db")), 0o600);
    assert_eq!(mode(&data.join(format!("logs/{id}.log"))), 0o600);
    for sub in ["logs", "repos", "workspaces", "workspace-pool"] {
        assert_eq!(mode(&data.join(sub)), 0o700, "{sub}");
    }
    server.stop().await;
}

/// Text without tags and with the page's entities decoded: what a browser
/// shows of the HTML, as far as a secret is concerned.
fn page_text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&amp;", "&")
}

/// What a terminal shows: SGR sequences dropped.
fn terminal_text(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_split_by_an_escape_sequence_is_masked_on_the_page_and_in_hookci_logs() {
    let up = Upstream::new("split");
    let commit = up.push(&[("README", "x\n")], "x");
    let toml = common::pipeline_toml(SECRET)
        .clone_url(&up.url())
        .table("[secrets]\nMINE = \"mine-secret-444\"")
        .step("t", SPLIT_SECRET)
        .to_string();
    let server = start(&toml).await;
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "x");
    let id = common::queue_github(&server.base(), "app", SECRET, "split", &body).await[0];
    let b = common::wait_final(&server.base(), id).await;
    assert_eq!(b["status"], "success", "{b}");
    let raw = log(&server, id);
    assert!(
        raw.contains("min\u{1b}[0me-secret-444"),
        "the test prints it split:\n{raw}"
    );

    // The page.
    let html = common::client()
        .get(server.url(&format!("/builds/{id}")))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    let shown = page_text(&html);
    assert!(!shown.contains("mine-secret-444"), "the page shows it");
    assert!(shown.contains("ansi split: ***"), "{shown}");
    assert!(shown.contains("colour ok"), "other lines keep their text");

    // The API's log, which `hookci logs` prints to a terminal.
    let api = common::client()
        .get(server.url(&format!("/api/builds/{id}/log")))
        .send()
        .await
        .expect("log")
        .text()
        .await
        .expect("text");
    assert!(!terminal_text(&api).contains("mine-secret-444"), "{api}");
    assert!(
        api.contains("\u{1b}[32mok"),
        "other lines keep their colours"
    );
    for args in [vec!["logs", "ID"], vec!["logs", "ID", "--follow"]] {
        let args: Vec<String> = args
            .iter()
            .map(|a| a.replace("ID", &id.to_string()))
            .chain(["--server".to_owned(), server.base()])
            .collect();
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookci"))
            .args(&args)
            .env_remove("HOOKCI_CONFIG")
            .env_remove("HOOKCI_TOKEN")
            .env_remove("HOOKCI_SERVER")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(std::time::Duration::from_secs(60), out)
            .await
            .expect("hookci logs ends")
            .expect("run hookci");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("ansi split: ***"), "{args:?}: {stdout}");
        assert!(
            !terminal_text(&stdout).contains("mine-secret-444"),
            "{args:?}: {stdout}"
        );
    }
    server.stop().await;
}

#[test]
fn hookci_run_prints_a_secret_split_by_an_escape_sequence_masked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir_all(&pipelines).expect("pipelines dir");
    let config = dir.path().join("hookci.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\npipelines_dir = \"{}\"\n",
            dir.path().join("data").display(),
            pipelines.display()
        ),
    )
    .expect("config");
    std::fs::write(
        pipelines.join("app.toml"),
        format!(
            "repo = \"acme/app\"\nsecret = \"hook-secret\"\nclone_url = \"/nowhere\"\n\
             [secrets]\nMINE = \"mine-secret-444\"\n\
             [[steps]]\nname = \"t\"\nrun = '''{SPLIT_SECRET}'''\n"
        ),
    )
    .expect("pipeline");
    let work = tempfile::tempdir().expect("work dir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookci"))
        .args([
            "--config",
            config.to_str().expect("utf-8"),
            "run",
            "app",
            "--workdir",
        ])
        .arg(work.path())
        .env_remove("HOOKCI_CONFIG")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run hookci");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ansi split: ***"), "{stdout}");
    assert!(
        !terminal_text(&stdout).contains("mine-secret-444"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\u{1b}[32mok"),
        "other lines keep their colours: {stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hookci_logs_follow_shows_an_unfinished_line_at_once_with_secrets() {
    let up = Upstream::new("progress");
    let commit = up.push(&[("README", "x\n")], "x");
    let marks = tempfile::tempdir().expect("marks dir");
    let go = marks.path().join("go");
    let toml = common::pipeline_toml(SECRET)
        .clone_url(&up.url())
        .table(&format!(
            "[secrets]\nMINE = \"mine-secret-444\"\n[sandbox]\nread_only = [{:?}]",
            marks.path()
        ))
        .step(
            "t",
            &format!(
                "
printf 'progress %s...' $((6 * 7))
i=0; while [ ! -e {go:?} ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done
echo ' done'
"
            ),
        )
        .to_string();
    let server = start(&toml).await;
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "x");
    let id = common::queue_github(&server.base(), "app", SECRET, "progress", &body).await[0];
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookci"))
        .args([
            "logs",
            &id.to_string(),
            "--follow",
            "--server",
            &server.base(),
        ])
        .env_remove("HOOKCI_CONFIG")
        .env_remove("HOOKCI_TOKEN")
        .env_remove("HOOKCI_SERVER")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run hookci logs");
    let mut stdout = child.stdout.take().expect("stdout");
    // The line is unfinished until the test says go: it must show before.
    // (The step's own line in the log shows the script, not its output.)
    let mut seen = Vec::new();
    let shown = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        use tokio::io::AsyncReadExt as _;
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("progress 42...") {
            let n = stdout.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    std::fs::write(&go, "").expect("go");
    assert!(
        shown.is_ok() && String::from_utf8_lossy(&seen).contains("progress 42..."),
        "an unfinished line was held back: {}",
        String::from_utf8_lossy(&seen)
    );
    let b = common::wait_final(&server.base(), id).await;
    assert_eq!(b["status"], "success", "{b}");
    let raw = log(&server, id);
    assert!(
        raw.contains("progress 42... done\n"),
        "the step waited: {raw}"
    );
    let _ = child.wait().await;
    server.stop().await;
}
