//! The `hookci` binary's commands, run as a user runs them.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn hookci(args: &[&str], dir: &std::path::Path, stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookci"))
        .args(args)
        .current_dir(dir)
        .env_remove("HOOKCI_CONFIG")
        .env_remove("HOOKCI_SIGN_SECRET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hookci");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(bytes) = stdin {
        // hookci may answer (and exit) before it reads its input, as when
        // the arguments are wrong: a closed pipe is not the test's failure.
        if let Err(e) = input.write_all(bytes) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
        }
    }
    drop(input);
    child.wait_with_output().expect("wait")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn check_accepts_the_shipped_pipelines_on_the_embedded_defaults() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = hookci(&["check"], repo, None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let count = std::fs::read_dir(repo.join("pipelines"))
        .expect("pipelines")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "toml"))
        })
        .count();
    assert_eq!(text(&out.stdout).trim(), format!("ok: {count} pipelines"));
    // The shipped examples accept unsigned deliveries, and check says so.
    assert!(
        text(&out.stderr).contains("warning:"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_reports_a_broken_pipeline_with_file_line_and_column_and_exits_1() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir(dir.path().join("pipelines")).expect("mkdir");
    std::fs::write(
        dir.path().join("pipelines/app.toml"),
        "repo = \"a/b\"\ninsecure_no_signature = true\n[[trigger]]\nbranchs = [\"main\"]\n\
         [[steps]]\nname = \"t\"\nrun = \"true\"\n",
    )
    .expect("write");
    let out = hookci(&["check"], dir.path(), None);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("app.toml:4:1"), "{err}");
    assert!(err.contains("branchs"), "{err}");
    assert!(text(&out.stdout).is_empty());
}

#[test]
fn check_reports_an_unknown_config_key_and_exits_1() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("hookci.toml"),
        "listen = \"127.0.0.1:1\"\nlisen = 3\n",
    )
    .expect("write");
    let out = hookci(&["check"], dir.path(), None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("hookci.toml:2:1"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn serve_with_a_missing_config_file_exits_2_with_one_sentence() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = hookci(&["serve", "--config", "nope.toml"], dir.path(), None);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("nope.toml"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn sign_prints_githubs_published_signature_for_a_body_on_stdin() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = hookci(
        &[
            "sign",
            "--secret",
            "It's a Secret to Everybody",
            "--host",
            "github",
        ],
        dir.path(),
        Some(b"Hello, World!"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "X-Hub-Signature-256: sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    );
}

#[test]
fn sign_reads_a_file_and_the_secret_from_the_environment() {
    let dir = tempfile::tempdir().expect("tmp");
    let body = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/webhooks/gogs/goplayground__push-event.json");
    let out = Command::new(env!("CARGO_BIN_EXE_hookci"))
        .args(["sign", "--host", "gogs", "--file"])
        .arg(&body)
        .current_dir(dir.path())
        .env("HOOKCI_SIGN_SECRET", "sampleToken!")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "X-Gogs-Signature: 83d4163fb936904aeb9ffd6ce22cf86e4b36273b2e1c63a57f5a6ddc371ce3ba"
    );
}

#[test]
fn sign_with_an_unknown_host_exits_2() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = hookci(
        &["sign", "--secret", "s", "--host", "svn"],
        dir.path(),
        Some(b"{}"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("svn"));
}
