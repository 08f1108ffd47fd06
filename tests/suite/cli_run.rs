//! `hookci run`: a pipeline in the foreground, as a user tries it before
//! pushing.

use crate::gitserve;

use gitserve::Upstream;
use std::path::Path;
use std::process::{Command, Output};

fn setup(pipelines: &[(&str, String)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join("pipelines")).expect("mkdir");
    for (name, toml) in pipelines {
        std::fs::write(dir.path().join(format!("pipelines/{name}.toml")), toml).expect("write");
    }
    std::fs::write(
        dir.path().join("hookci.toml"),
        format!(
            "data_dir = \"{}\"\npipelines_dir = \"{}\"\n",
            dir.path().join("data").display(),
            dir.path().join("pipelines").display()
        ),
    )
    .expect("config");
    dir
}

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hookci"))
        .arg("--config")
        .arg(dir.join("hookci.toml"))
        .arg("run")
        .args(args)
        .env("HOOKCI_LOG", "warn")
        .output()
        .expect("run hookci")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const HEAD: &str = "repo = \"acme/app\"\ninsecure_no_signature = true\n";

#[test]
fn run_with_a_workdir_streams_the_steps_and_summarises_them() {
    let work = tempfile::tempdir().expect("tmp");
    std::fs::write(work.path().join("input.txt"), "from the work tree\n").expect("write");
    let toml = format!(
        "{HEAD}clone_url = \"/nowhere\"\n[[steps]]\nname = \"read\"\nrun = \"cat input.txt\"\n\
         [[steps]]\nname = \"where\"\nrun = 'echo \"ws=$HOOKCI_WORKSPACE ci=$CI\"'\n"
    );
    let dir = setup(&[("app", toml)]);
    let out = run(
        dir.path(),
        &["app", "--workdir", work.path().to_str().expect("utf-8")],
    );
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("==> step read: cat input.txt"), "{stdout}");
    assert!(stdout.contains("from the work tree"), "{stdout}");
    let canonical = std::fs::canonicalize(work.path()).expect("canonical");
    assert!(
        stdout.contains(&format!("ws={} ci=true", canonical.display())),
        "{stdout}"
    );
    assert!(
        stderr.contains("read") && stderr.contains("success"),
        "{stderr}"
    );
    assert!(stderr.contains("build success"), "{stderr}");
}

#[test]
fn a_failing_step_exits_1_and_the_rest_are_skipped() {
    let work = tempfile::tempdir().expect("tmp");
    let toml = format!(
        "{HEAD}clone_url = \"/nowhere\"\n[[steps]]\nname = \"boom\"\nrun = \"exit 3\"\n\
         [[steps]]\nname = \"never\"\nrun = \"echo should-not-run\"\n"
    );
    let dir = setup(&[("app", toml)]);
    let out = run(
        dir.path(),
        &["app", "--workdir", work.path().to_str().expect("utf-8")],
    );
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(!stdout.contains("should-not-run"), "{stdout}");
    assert!(stderr.contains("step boom exited 3"), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("never") && l.contains("skipped")),
        "{stderr}"
    );
}

#[test]
fn an_unknown_pipeline_exits_2_with_one_sentence() {
    let dir = setup(&[]);
    let out = run(dir.path(), &["nope", "--workdir", "."]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("nope"), "{}", text(&out.stderr));
}

#[test]
fn run_clones_the_pipelines_repository_at_a_branch() {
    let up = Upstream::new("cli");
    up.push(&[("README", "one\n")], "one");
    let head = up.push(&[("README", "two\n")], "two");
    let toml = format!(
        "{HEAD}clone_url = \"{}\"\n[[steps]]\nname = \"show\"\n\
         run = 'echo \"commit=$HOOKCI_COMMIT branch=$HOOKCI_BRANCH\"; cat README'\n",
        up.url()
    );
    let dir = setup(&[("app", toml)]);
    let out = run(dir.path(), &["app", "--branch", "main"]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("commit={head} branch=main")),
        "{stdout}"
    );
    assert!(stdout.contains("two"), "{stdout}");
}
