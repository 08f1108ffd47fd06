//! The API's command-line clients (`hookci builds`, `runners`, `logs`, `cancel`,
//! `rebuild`, `trigger`): the real binary against the real server, as a
//! user runs them.

use crate::common;
use crate::gitserve;

use common::{TestServer, ZERO};
use gitserve::Upstream;
use hookci::config::Config;
use hookci::secret::Secret;
use serde_json::Value;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

const SECRET: &str = "clients-secret";
const ADMIN: &str = "clients-admin-token-7f3a";

fn pipeline(clone_url: &str, steps: &str) -> String {
    common::pipeline_toml(SECRET)
        .clone_url(clone_url)
        .raw_steps(steps)
        .to_string()
}

const ECHO: &str = "[[steps]]\nname = \"hello\"\nrun = \"echo hello\"\n";

/// A server that queues and does not run builds, with the admin token set.
async fn queue_only(pipelines: &[(&str, &str)]) -> TestServer {
    TestServer::start(pipelines, |c| c.admin_token = Some(Secret::new(ADMIN))).await
}

/// Queues a push of `branch` at `commit` to `name`; returns the build id.
async fn push(server: &TestServer, name: &str, branch: &str, commit: &str, delivery: &str) -> i64 {
    let body = common::github_push(
        "/nowhere",
        &format!("refs/heads/{branch}"),
        ZERO,
        commit,
        "a commit",
    );
    let ids = common::queue_github(&server.base(), name, SECRET, delivery, &body).await;
    assert_eq!(ids.len(), 1, "{ids:?}");
    ids[0]
}

/// A command of the binary, in an empty directory (no `./hookci.toml`),
/// with none of the variables that could give it a config or a token.
fn command(cwd: &Path, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookci"));
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("HOOKCI_CONFIG")
        .env_remove("HOOKCI_TOKEN")
        .env_remove("HOOKCI_SERVER")
        .env("HOOKCI_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for proxy in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(proxy);
    }
    cmd
}

/// Runs `hookci args` (bounded: 60 s) with `envs` set.
async fn hookci(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let cwd = tempfile::tempdir().expect("tmp");
    hookci_in(cwd.path(), args, envs).await
}

async fn hookci_in(cwd: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = command(cwd, args);
    cmd.envs(envs.iter().copied());
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("hookci {args:?} did not finish in 60 s"))
        .expect("run hookci")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Stdout and stderr, for assertion messages.
fn both(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    )
}

fn assert_no_token(out: &Output, token: &str) {
    assert!(
        !text(&out.stdout).contains(token) && !text(&out.stderr).contains(token),
        "the token was printed:\n{}",
        both(out)
    );
}

/// The table's rows below its header, split into cells.
fn rows(stdout: &str) -> Vec<Vec<String>> {
    let mut lines = stdout.lines();
    let header = lines.next().expect("a header");
    assert!(
        header.starts_with("ID") && header.contains("PIPELINE") && header.contains("STATUS"),
        "{stdout}"
    );
    lines
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

fn ids(stdout: &str) -> Vec<i64> {
    rows(stdout)
        .iter()
        .map(|r| r[0].parse().expect("an id"))
        .collect()
}

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test]
async fn builds_lists_queued_builds_newest_first_with_filters() {
    let server = queue_only(&[
        ("app", &pipeline("/nowhere", ECHO)),
        ("web", &pipeline("/nowhere", ECHO)),
    ])
    .await;
    let c1 = "1111111111111111111111111111111111111111";
    let c2 = "2222222222222222222222222222222222222222";
    let c3 = "3333333333333333333333333333333333333333";
    let b1 = push(&server, "app", "main", c1, "d-1").await;
    let b2 = push(&server, "app", "dev", c2, "d-2").await;
    let b3 = push(&server, "web", "main", c3, "d-3").await;
    let base = server.base();

    let out = hookci(&["builds", "--server", &base], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    let stdout = text(&out.stdout);
    assert_eq!(ids(&stdout), vec![b3, b2, b1], "{stdout}");
    let table = rows(&stdout);
    assert_eq!(
        table[0][1..5],
        ["web", "main", "33333333", "queued"],
        "{stdout}"
    );
    assert_eq!(
        table[1][1..5],
        ["app", "dev", "22222222", "queued"],
        "{stdout}"
    );
    assert!(
        table[2][5].ends_with('s') && table[2][6] == "ago",
        "{stdout}"
    );

    let out = hookci(&["builds", "--server", &base, "--pipeline", "app"], &[]).await;
    assert_eq!(ids(&text(&out.stdout)), vec![b2, b1], "{}", both(&out));
    let out = hookci(&["builds", "--server", &base, "--branch", "main"], &[]).await;
    assert_eq!(ids(&text(&out.stdout)), vec![b3, b1], "{}", both(&out));
    let out = hookci(&["builds", "--server", &base, "--limit", "1"], &[]).await;
    assert_eq!(ids(&text(&out.stdout)), vec![b3], "{}", both(&out));
    let out = hookci(
        &[
            "builds",
            "--server",
            &base,
            "--status",
            "queued",
            "--pipeline",
            "web",
        ],
        &[],
    )
    .await;
    assert_eq!(ids(&text(&out.stdout)), vec![b3], "{}", both(&out));

    let out = hookci(&["builds", "--server", &base, "--status", "success"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    assert!(text(&out.stdout).is_empty(), "{}", both(&out));
    assert!(text(&out.stderr).contains("no builds"), "{}", both(&out));

    // A value the server could not take is a usage error, before any call.
    let out = hookci(&["builds", "--server", &base, "--status", "done"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    server.stop().await;
}

#[tokio::test]
async fn builds_json_is_the_api_answer() {
    let server = queue_only(&[("app", &pipeline("/nowhere", ECHO))]).await;
    // Two builds, so that a page of one has a next page.
    push(
        &server,
        "app",
        "main",
        "1111111111111111111111111111111111111111",
        "j-1",
    )
    .await;
    let b2 = push(
        &server,
        "app",
        "main",
        "2222222222222222222222222222222222222222",
        "j-2",
    )
    .await;
    let out = hookci(
        &[
            "builds",
            "--server",
            &server.base(),
            "--json",
            "--limit",
            "1",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["builds"].as_array().expect("builds").len(), 1, "{v}");
    assert_eq!(v["builds"][0]["id"], b2, "{v}");
    assert_eq!(
        v["builds"][0]["commit"],
        "2222222222222222222222222222222222222222"
    );
    assert_eq!(
        v["builds"][0]["url"],
        format!("{}/builds/{b2}", server.base())
    );
    assert_eq!(v["next_before"], b2, "{v}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_streams_a_running_build_live_and_exits_0_when_it_succeeds() {
    let up = Upstream::new("follow");
    let commit = up.push(&[("README", "hi\n")], "first");
    let gate = tempfile::tempdir().expect("tmp");
    let open = gate.path().join("open");
    // The step waits for the test: the second line can only come after the
    // test saw the first one on the client's stdout.
    let steps = format!(
        "[[steps]]\nname = \"slow\"\nrun = '''\necho first-line\nwhile [ ! -e {} ]; do sleep 0.05; done\necho second-line\n'''\n",
        open.display()
    );
    let server = TestServer::start(&[("app", &pipeline(&up.url(), &steps))], |c| {
        c.max_parallel_builds = 1;
        // The step watches the gate from its sandbox.
        c.sandbox.read_only = Some(vec![gate.path().to_path_buf()]);
    })
    .await;
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "first");
    let id = common::queue_github(&server.base(), "app", SECRET, "f-1", &body).await[0];

    let cwd = tempfile::tempdir().expect("tmp");
    let mut child = command(
        cwd.path(),
        &[
            "logs",
            &id.to_string(),
            "--follow",
            "--server",
            &server.base(),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn hookci");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read") {
            let first = line == "first-line";
            seen.push(line);
            if first {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no first-line on stdout: {seen:?}"));
    assert_eq!(
        common::get_build(&server.base(), id).await.expect("build")["status"],
        "running",
        "the first line came while the build ran"
    );
    std::fs::write(&open, "").expect("open the gate");
    let rest = tokio::time::timeout(Duration::from_secs(60), async {
        let mut rest = Vec::new();
        while let Some(line) = lines.next_line().await.expect("read") {
            rest.push(line);
        }
        rest
    })
    .await
    .expect("the stream ends");
    assert!(
        rest.contains(&"second-line".to_owned()),
        "{seen:?} {rest:?}"
    );
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("hookci exits")
        .expect("wait");
    assert_eq!(status.code(), Some(0), "{seen:?} {rest:?}");
    assert_eq!(
        common::get_build(&server.base(), id).await.expect("build")["status"],
        "success"
    );

    // Without --follow: the finished log, the same lines, exit 0.
    let out = hookci(&["logs", &id.to_string(), "--server", &server.base()], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    let stdout = text(&out.stdout);
    let first = stdout.find("first-line\n").expect("first line");
    let second = stdout.find("second-line\n").expect("second line");
    assert!(first < second, "{stdout}");
    // What --follow printed is the log itself, byte for byte (the stream's
    // end event is not log text).
    let followed: String = seen.iter().chain(&rest).map(|l| format!("{l}\n")).collect();
    assert_eq!(followed.trim_end(), stdout.trim_end());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_of_a_failing_build_prints_its_output_and_exits_1() {
    let up = Upstream::new("fail");
    let commit = up.push(&[("README", "hi\n")], "first");
    let steps = "[[steps]]\nname = \"boom\"\nrun = \"echo about-to-fail; sleep 0.5; exit 3\"\n";
    let server = TestServer::start(&[("app", &pipeline(&up.url(), steps))], |c| {
        c.max_parallel_builds = 1;
    })
    .await;
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "first");
    let id = common::queue_github(&server.base(), "app", SECRET, "x-1", &body).await[0];
    let out = hookci(
        &["logs", &id.to_string(), "-f", "--server", &server.base()],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        text(&out.stdout).contains("about-to-fail\n"),
        "{}",
        both(&out)
    );
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&format!("build {id} failure")), "{stderr}");
    assert!(stderr.contains("exited 3"), "{stderr}");
    assert_eq!(
        common::get_build(&server.base(), id).await.expect("build")["status"],
        "failure"
    );
    server.stop().await;
}

/// The text of each numbered log line of a build page, in order (the
/// line's number and time left out, entities decoded).
fn page_log_lines(html: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find("<div id=\"L") {
        rest = &rest[at..];
        let Some(a) = rest.find("</a>") else { break };
        let Some(end) = rest.find("</div>") else {
            break;
        };
        let mut inner = &rest[a + 4..end];
        if inner.starts_with("<span class=\"ts\"") {
            inner = inner.split_once("</span>").map_or(inner, |(_, r)| r);
        }
        let mut text = String::new();
        let mut in_tag = false;
        for c in inner.chars() {
            match c {
                '<' => in_tag = true,
                '>' => in_tag = false,
                c if !in_tag => text.push(c),
                _ => {}
            }
        }
        lines.push(
            text.replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&amp;", "&"),
        );
        rest = &rest[end..];
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_and_stderr_keep_their_order_in_the_stored_log_the_page_and_hookci_logs() {
    let up = Upstream::new("order");
    let commit = up.push(&[("README", "hi\n")], "first");
    let n = 300;
    let steps = format!(
        "[[steps]]\nname = \"both\"\nrun = 'i=0; while [ $i -lt {n} ]; do echo out $i; echo err $i >&2; i=$((i+1)); done'\n"
    );
    let server = TestServer::start(&[("app", &pipeline(&up.url(), &steps))], |c| {
        c.max_parallel_builds = 1;
    })
    .await;
    let body = common::github_push(&up.url(), "refs/heads/main", ZERO, &commit, "first");
    let id = common::queue_github(&server.base(), "app", SECRET, "o-1", &body).await[0];
    let build = common::wait_final(&server.base(), id).await;
    assert_eq!(build["status"], "success", "{build}");
    let expected: Vec<String> = (0..n)
        .flat_map(|i| [format!("out {i}"), format!("err {i}")])
        .collect();
    // The step's own lines, between hookci's.
    let step_lines = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("out ") || l.starts_with("err "))
            .map(str::to_owned)
            .collect()
    };
    let stored = std::fs::read_to_string(server.config.data_dir.join(format!("logs/{id}.log")))
        .expect("the stored log");
    assert!(
        step_lines(&stored) == expected,
        "stored log reordered: {stored:.600}"
    );

    let out = hookci(&["logs", &id.to_string(), "--server", &server.base()], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    let printed = text(&out.stdout);
    assert!(
        step_lines(&printed) == expected,
        "hookci logs reordered: {printed:.600}"
    );

    let page = common::client()
        .get(server.url(&format!("/builds/{id}")))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("page text");
    let shown = page_log_lines(&page).join("\n");
    assert!(
        step_lines(&shown) == expected,
        "the page reordered: {shown:.600}"
    );
    server.stop().await;
}

#[tokio::test]
async fn logs_of_an_unknown_build_exits_1_with_the_servers_sentence() {
    let server = queue_only(&[("app", &pipeline("/nowhere", ECHO))]).await;
    for args in [vec!["logs", "999"], vec!["logs", "999", "--follow"]] {
        let mut args = args.clone();
        let base = server.base();
        args.extend(["--server", &base]);
        let out = hookci(&args, &[]).await;
        assert_eq!(out.status.code(), Some(1), "{}", both(&out));
        assert_eq!(
            text(&out.stderr).trim(),
            "error: no such build (HTTP 404 Not Found)",
            "{}",
            both(&out)
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn cancel_of_a_queued_build_prints_it_and_the_api_shows_it_cancelled() {
    let server = queue_only(&[("app", &pipeline("/nowhere", ECHO))]).await;
    let id = push(
        &server,
        "app",
        "main",
        "1111111111111111111111111111111111111111",
        "c-1",
    )
    .await;
    let out = hookci(
        &["cancel", &id.to_string(), "--server", &server.base()],
        &[("HOOKCI_TOKEN", ADMIN)],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    assert_eq!(text(&out.stdout).trim(), format!("build {id} cancelled"));
    assert_no_token(&out, ADMIN);
    let b = common::get_build(&server.base(), id).await.expect("build");
    assert_eq!(b["status"], "cancelled", "{b}");

    // Again: the server refuses, and says why.
    let out = hookci(
        &[
            "cancel",
            &id.to_string(),
            "--server",
            &server.base(),
            "--token",
            ADMIN,
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert_eq!(
        text(&out.stderr).trim(),
        "error: the build has already finished (HTTP 409 Conflict)"
    );
    assert_no_token(&out, ADMIN);

    let out = hookci(
        &[
            "builds",
            "--server",
            &server.base(),
            "--status",
            "cancelled",
        ],
        &[],
    )
    .await;
    assert_eq!(ids(&text(&out.stdout)), vec![id], "{}", both(&out));
    server.stop().await;
}

#[tokio::test]
async fn cancel_without_the_right_token_exits_1_with_the_servers_sentence_and_never_prints_a_token()
{
    let server = queue_only(&[("app", &pipeline("/nowhere", ECHO))]).await;
    let id = push(
        &server,
        "app",
        "main",
        "1111111111111111111111111111111111111111",
        "n-1",
    )
    .await;
    let base = server.base();
    let id_arg = id.to_string();

    let out = hookci(&["cancel", &id_arg, "--server", &base], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(
            "error: this call needs Authorization: Bearer ADMIN_TOKEN (HTTP 401 Unauthorized)\n"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("HOOKCI_TOKEN"), "a hint: {stderr}");
    assert!(text(&out.stdout).is_empty(), "{}", both(&out));

    let wrong = "wrong-token-Zq81";
    for (args, envs) in [
        (
            vec!["cancel", &id_arg, "--server", &base, "--token", wrong],
            vec![],
        ),
        (
            vec!["cancel", &id_arg, "--server", &base],
            vec![("HOOKCI_TOKEN", wrong)],
        ),
    ] {
        let out = hookci(&args, &envs).await;
        assert_eq!(out.status.code(), Some(1), "{}", both(&out));
        assert_eq!(
            text(&out.stderr).trim(),
            "error: the admin token is wrong (HTTP 401 Unauthorized)"
        );
        assert_no_token(&out, wrong);
        assert_no_token(&out, ADMIN);
    }
    // A token a header cannot carry: refused before any call, unprinted.
    let bad = "bad\ntoken-Yx2";
    let out = hookci(
        &["cancel", &id_arg, "--server", &base],
        &[("HOOKCI_TOKEN", bad)],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert_no_token(&out, "token-Yx2");

    let b = common::get_build(&base, id).await.expect("build");
    assert_eq!(b["status"], "queued", "{b}");
    server.stop().await;
}

#[tokio::test]
async fn an_unreachable_server_exits_2_with_one_sentence_naming_it() {
    let port = closed_port();
    let url = format!("http://127.0.0.1:{port}");
    for args in [
        vec!["builds", "--server", &url],
        vec!["logs", "3", "--follow", "--server", &url],
        vec!["cancel", "3", "--server", &url, "--token", ADMIN],
    ] {
        let out = hookci(&args, &[]).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", both(&out));
        let stderr = text(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(&format!(
                "cannot reach the hookci server at {url}: connection refused"
            )),
            "{stderr}"
        );
        assert_no_token(&out, ADMIN);
    }
}

/// Writes a config `name` in `dir` whose server is `public_url` and whose
/// admin token, if any, comes from the variable `var`.
fn config_file(dir: &Path, name: &str, public_url: &str, var: Option<&str>) -> String {
    let path = dir.join(name);
    let token = var.map_or_else(String::new, |v| {
        format!("admin_token = {{ env = \"{v}\" }}\n")
    });
    std::fs::write(&path, format!("public_url = \"{public_url}\"\n{token}")).expect("write config");
    path.to_str().expect("utf-8").to_owned()
}

#[tokio::test]
async fn the_server_and_token_default_to_the_configs() {
    let server = queue_only(&[("app", &pipeline("/nowhere", ECHO))]).await;
    let base = server.base();
    let a = push(
        &server,
        "app",
        "main",
        "1111111111111111111111111111111111111111",
        "g-1",
    )
    .await;
    let b = push(
        &server,
        "app",
        "main",
        "2222222222222222222222222222222222222222",
        "g-2",
    )
    .await;
    let c = push(
        &server,
        "app",
        "main",
        "3333333333333333333333333333333333333333",
        "g-3",
    )
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    let config = config_file(dir.path(), "hookci.toml", &base, Some("CLIENTS_TEST_ADMIN"));
    let config = config.as_str();
    let var = [("CLIENTS_TEST_ADMIN", ADMIN)];

    // --config: its public_url and its admin_token, resolved from the variable.
    let out = hookci(&["cancel", &a.to_string(), "--config", config], &var).await;
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    assert_eq!(text(&out.stdout).trim(), format!("build {a} cancelled"));
    assert_no_token(&out, ADMIN);

    // ./hookci.toml, found in the working directory.
    let out = hookci_in(dir.path(), &["builds", "--status", "cancelled"], &var).await;
    assert_eq!(ids(&text(&out.stdout)), vec![a], "{}", both(&out));

    // $HOOKCI_CONFIG, and $HOOKCI_TOKEN over the config's token.
    let other = tempfile::tempdir().expect("tmp");
    let wrong = config_file(
        other.path(),
        "wrong.toml",
        &base,
        Some("CLIENTS_TEST_WRONG"),
    );
    let out = hookci(
        &["cancel", &b.to_string()],
        &[
            ("HOOKCI_CONFIG", &wrong),
            ("CLIENTS_TEST_WRONG", "not-the-token"),
            ("HOOKCI_TOKEN", ADMIN),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    assert_eq!(text(&out.stdout).trim(), format!("build {b} cancelled"));

    // --server over the config's public_url (which nothing listens on).
    let nowhere = format!("http://127.0.0.1:{}", closed_port());
    let elsewhere = config_file(other.path(), "elsewhere.toml", &nowhere, None);
    let out = hookci(&["builds", "--config", &elsewhere, "--server", &base], &[]).await;
    assert_eq!(ids(&text(&out.stdout)), vec![c, b, a], "{}", both(&out));
    let out = hookci(&["builds", "--config", &elsewhere], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(text(&out.stderr).contains(&nowhere), "{}", both(&out));

    // The config's token goes only to the config's own server: not to
    // another --server, even one that would take it.
    let elsewhere = config_file(
        other.path(),
        "token.toml",
        &nowhere,
        Some("CLIENTS_TEST_ADMIN"),
    );
    let out = hookci(
        &[
            "cancel",
            &c.to_string(),
            "--config",
            &elsewhere,
            "--server",
            &base,
        ],
        &var,
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(text(&out.stderr).contains("HTTP 401"), "{}", both(&out));
    assert!(
        text(&out.stderr).contains("only to its own server"),
        "{}",
        both(&out)
    );
    assert_no_token(&out, ADMIN);
    assert_eq!(
        common::get_build(&base, c).await.expect("build")["status"],
        "queued"
    );

    // An admin_token the config cannot resolve is a configuration error.
    let out = hookci(&["builds", "--config", config], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", both(&out));
    assert!(
        text(&out.stderr).contains("CLIENTS_TEST_ADMIN"),
        "{}",
        both(&out)
    );
    server.stop().await;
}

#[tokio::test]
async fn a_private_server_needs_the_token_for_reads_too() {
    let server = TestServer::start(&[("app", &pipeline("/nowhere", ECHO))], |c: &mut Config| {
        c.admin_token = Some(Secret::new(ADMIN));
        c.private = true;
    })
    .await;
    let id = push(
        &server,
        "app",
        "main",
        "1111111111111111111111111111111111111111",
        "p-1",
    )
    .await;
    let out = hookci(&["builds", "--server", &server.base()], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(text(&out.stderr).contains("HTTP 401"), "{}", both(&out));
    let out = hookci(
        &["builds", "--server", &server.base()],
        &[("HOOKCI_TOKEN", ADMIN)],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    assert_eq!(ids(&text(&out.stdout)), vec![id]);
    assert_no_token(&out, ADMIN);
    server.stop().await;
}

/// The build id in `stdout`, which must be exactly the one line
/// `build N queued: BASE/builds/N`.
fn queued_build(stdout: &str, base: &str) -> i64 {
    let id: i64 = stdout
        .strip_prefix("build ")
        .and_then(|s| s.split_once(" queued: "))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(
        stdout.trim(),
        format!("build {id} queued: {base}/builds/{id}")
    );
    id
}

#[tokio::test]
async fn rebuild_queues_a_finished_builds_commit_again_and_prints_the_new_build() {
    let server = queue_only(&[("app", &pipeline("/nowhere", ECHO))]).await;
    let commit = "4444444444444444444444444444444444444444";
    let id = push(&server, "app", "main", commit, "r-1").await;
    // A build is rebuilt once it has finished.
    let out = hookci(
        &["cancel", &id.to_string(), "--server", &server.base()],
        &[("HOOKCI_TOKEN", ADMIN)],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    let out = hookci(
        &["rebuild", &id.to_string(), "--server", &server.base()],
        &[("HOOKCI_TOKEN", ADMIN)],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    let new = queued_build(&text(&out.stdout), &server.base());
    assert_ne!(new, id);
    let b = common::get_build(&server.base(), new).await.expect("build");
    assert_eq!(b["commit"], commit, "{b}");
    assert_eq!(b["pipeline"], "app", "{b}");
    assert_no_token(&out, ADMIN);
    server.stop().await;
}

#[tokio::test]
async fn rebuild_from_failed_asks_the_server_to_start_at_the_failed_step() {
    let server = queue_only(&[("app", &pipeline("/nowhere", ECHO))]).await;
    let id = push(&server, "app", "main", &"5".repeat(40), "rf-1").await;
    let out = hookci(
        &["cancel", &id.to_string(), "--server", &server.base()],
        &[("HOOKCI_TOKEN", ADMIN)],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    // A cancelled build did not fail in a step: the server's sentence, exit 1.
    let out = hookci(
        &[
            "rebuild",
            &id.to_string(),
            "--from-failed",
            "--server",
            &server.base(),
        ],
        &[("HOOKCI_TOKEN", ADMIN)],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        text(&out.stderr).contains("only a failed build can be re-run from its failed step"),
        "{}",
        both(&out)
    );
    assert_no_token(&out, ADMIN);
    server.stop().await;
}

#[tokio::test]
async fn trigger_queues_the_branch_head_and_prints_the_new_build() {
    let up = Upstream::new("trigger");
    let head = up.push(&[("README", "one\n")], "one");
    let server = queue_only(&[("app", &pipeline(&up.url(), ECHO))]).await;
    let out = hookci(
        &[
            "trigger",
            "app",
            "--branch",
            "main",
            "--server",
            &server.base(),
        ],
        &[("HOOKCI_TOKEN", ADMIN)],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    let id = queued_build(&text(&out.stdout), &server.base());
    let b = common::get_build(&server.base(), id).await.expect("build");
    assert_eq!(b["pipeline"], "app", "{b}");
    assert_eq!(b["branch"], "main", "{b}");
    assert_eq!(b["commit"], head, "{b}");
    assert_no_token(&out, ADMIN);

    // An unknown pipeline: the server's sentence, exit 1.
    let out = hookci(
        &[
            "trigger",
            "nope",
            "--branch",
            "main",
            "--server",
            &server.base(),
        ],
        &[("HOOKCI_TOKEN", ADMIN)],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(text(&out.stderr).starts_with("error: "), "{}", both(&out));
    assert!(text(&out.stderr).contains("HTTP 404"), "{}", both(&out));
    server.stop().await;
}

/// A server that records the `Authorization` header of every request (or
/// `-` when there is none) and answers an empty list of builds.
async fn recording_server() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = std::sync::Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let record = std::sync::Arc::clone(&record);
            tokio::spawn(async move {
                let mut reader = BufReader::new(socket);
                let mut auth = "-".to_owned();
                let mut line = String::new();
                for _ in 0..100 {
                    line.clear();
                    if reader.read_line(&mut line).await.unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':') {
                        if name.eq_ignore_ascii_case("authorization") {
                            auth = value.trim().to_owned();
                        }
                    }
                }
                record.lock().unwrap().push(auth);
                let body = r#"{"builds":[]}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = reader.get_mut().write_all(answer.as_bytes()).await;
            });
        }
    });
    (url, seen)
}

#[tokio::test]
async fn a_hookci_toml_found_in_the_working_directory_never_gets_a_token() {
    let (capture, seen) = recording_server().await;
    // A cloned repository carrying a hostile ./hookci.toml.
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("hookci.toml"),
        format!("public_url = \"{capture}\"\nadmin_token = {{ env = \"CLIENTS_TEST_VICTIM\" }}\n"),
    )
    .expect("write config");
    let envs = [
        ("HOOKCI_TOKEN", "REAL-ADMIN-TOKEN-from-env"),
        ("CLIENTS_TEST_VICTIM", "ghp_USERS_OWN_GITHUB_TOKEN"),
    ];
    let out = hookci_in(dir.path(), &["builds", "-v"], &envs).await;
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("found in the working directory") && stderr.contains(&capture),
        "-v says which config and server: {}",
        both(&out)
    );
    assert_no_token(&out, "REAL-ADMIN-TOKEN-from-env");
    assert_eq!(*seen.lock().unwrap(), ["-"], "{}", both(&out));

    // Its { env } token is never resolved: with the variable unset, no
    // configuration error either.
    let out = hookci_in(dir.path(), &["builds"], &[]).await;
    assert!(
        !text(&out.stderr).contains("CLIENTS_TEST_VICTIM"),
        "{}",
        both(&out)
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert_eq!(seen.lock().unwrap()[1], "-");

    // Named explicitly (--server, HOOKCI_SERVER or --config), the server
    // gets the token.
    let named = hookci_in(
        dir.path(),
        &["builds", "--server", &capture],
        &[("HOOKCI_TOKEN", "tok-for-a-named-server")],
    )
    .await;
    assert_no_token(&named, "tok-for-a-named-server");
    let named = hookci_in(
        dir.path(),
        &["builds"],
        &[
            ("HOOKCI_SERVER", capture.as_str()),
            ("HOOKCI_TOKEN", "tok-for-a-named-server"),
        ],
    )
    .await;
    assert_no_token(&named, "tok-for-a-named-server");
    let config = dir.path().join("hookci.toml");
    let named = hookci_in(
        dir.path(),
        &["builds", "--config", config.to_str().expect("utf-8")],
        &[("CLIENTS_TEST_VICTIM", "tok-from-a-named-config")],
    )
    .await;
    assert_no_token(&named, "tok-from-a-named-config");
    assert_eq!(
        seen.lock().unwrap()[2..],
        [
            "Bearer tok-for-a-named-server",
            "Bearer tok-for-a-named-server",
            "Bearer tok-from-a-named-config"
        ]
    );
}

/// `hookci runners` lists the runner processes the store knows: on the
/// embedded store, the one process, with its node, labels and capacity.
/// A build of a pipeline whose `runs_on` its labels lack says why it waits.
#[tokio::test]
async fn runners_lists_the_one_process_and_a_build_it_cannot_take_says_why() {
    let gpu = common::pipeline_toml(SECRET)
        .clone_url("/nowhere")
        .top(r#"runs_on = ["gpu"]"#)
        .raw_steps(ECHO)
        .to_string();
    let server = TestServer::start(&[("gpu", &gpu)], |c| {
        c.admin_token = Some(Secret::new(ADMIN));
        c.node = "box-1".to_owned();
        c.labels = vec!["linux".to_owned()];
        c.max_parallel_builds = 1;
    })
    .await;
    let base = server.base();
    // The worker registers itself as it starts: bounded wait.
    let mut out = hookci(&["runners", "--server", &base], &[]).await;
    for _ in 0..100 {
        if text(&out.stdout).contains("box-1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        out = hookci(&["runners", "--server", &base], &[]).await;
    }
    assert!(out.status.success(), "{}", both(&out));
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    let header: Vec<&str> = lines.next().expect("a header").split_whitespace().collect();
    assert_eq!(
        header,
        ["NODE", "STATE", "LABELS", "BUILDS", "LAST", "SEEN", "ID"]
    );
    let row: Vec<&str> = lines.next().expect("a row").split_whitespace().collect();
    assert_eq!(&row[..4], ["box-1", "online", "linux", "0/1"], "{stdout}");
    assert!(
        row.last().is_some_and(|id| id.starts_with("box-1/")),
        "{stdout}"
    );
    assert_eq!(lines.next(), None, "{stdout}");

    let json = hookci(&["runners", "--json", "--server", &base], &[]).await;
    let answer: Value = serde_json::from_slice(&json.stdout).expect("the API's JSON");
    assert_eq!(answer["runners"][0]["node"], "box-1", "{answer}");
    assert_eq!(answer["runners"][0]["role"], "all", "{answer}");

    let id = push(&server, "gpu", "main", &"b".repeat(40), "r-1").await;
    let build = common::get_build(&base, id).await.expect("the build");
    assert_eq!(build["status"], "queued", "{build}");
    assert_eq!(
        build["waiting_reason"], "no runner online has labels gpu",
        "{build}"
    );
}
