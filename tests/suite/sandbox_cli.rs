//! What `hookci check`, `hookci serve` and `hookci run` say and do about the
//! sandbox, `run_as` and `[limits]` (SPEC section 9).

use std::path::Path;
use std::process::{Command, Output};

/// A config (with `extra` lines) and an empty pipelines directory.
fn setup(extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join("pipelines")).expect("mkdir");
    std::fs::write(
        dir.path().join("hookci.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\npipelines_dir = \"{}\"\n{extra}\n",
            dir.path().join("data").display(),
            dir.path().join("pipelines").display()
        ),
    )
    .expect("config");
    dir
}

fn hookci(dir: &Path, args: &[&str], path: Option<&str>, user: Option<u32>) -> Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookci"));
    cmd.arg("--config")
        .arg(dir.join("hookci.toml"))
        .args(args)
        .env("HOOKCI_LOG", "info");
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    if let Some(id) = user {
        cmd.uid(id).gid(id);
    }
    cmd.output().expect("run hookci")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn have_bwrap() -> bool {
    match hookci::runner::sandbox::probe(None) {
        Ok(_) => true,
        Err(why) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "this test needs bwrap: {why}"
            );
            println!("skipped: {why}");
            false
        }
    }
}

#[test]
fn check_names_the_package_and_says_steps_have_the_daemons_authority_without_bwrap() {
    let dir = setup("");
    // A PATH with no bwrap in it stands for a host without bubblewrap.
    let out = hookci(dir.path(), &["check"], Some("/nonexistent"), None);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("warning:"), "{stderr}");
    assert!(stderr.contains("bubblewrap"), "{stderr}");
    assert!(stderr.contains("the daemon's authority"), "{stderr}");

    // Required but missing: an error.
    let dir = setup("[sandbox]\nenabled = true\n");
    let out = hookci(dir.path(), &["check"], Some("/nonexistent"), None);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error:") && stderr.contains("required"),
        "{stderr}"
    );

    // Turned off: said plainly too.
    let dir = setup("[sandbox]\nenabled = false\n");
    let out = hookci(dir.path(), &["check"], None, None);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("the daemon's authority"), "{stderr}");
}

#[test]
fn check_says_a_forks_pull_requests_wait_where_no_sandbox_works() {
    let dir = setup("");
    std::fs::write(
        dir.path().join("pipelines/prs.toml"),
        "repo = \"o/r\"\ninsecure_no_signature = true\nclone_url = \"/srv/r.git\"\n\
         [[trigger]]\npull_requests = [\"main\"]\n[pull_requests]\nforks = \"build\"\n\
         [[steps]]\nname = \"t\"\nrun = \"true\"\n",
    )
    .expect("pipeline");
    let out = hookci(dir.path(), &["check"], Some("/nonexistent"), None);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("pipeline prs: forks = \"build\", but steps cannot be sandboxed here")
            && stderr.contains("pull requests from forks will wait for approval"),
        "{stderr}"
    );
    if have_bwrap() {
        let out = hookci(dir.path(), &["check"], None, None);
        let stderr = text(&out.stderr);
        assert!(!stderr.contains("forks"), "{stderr}");
    }
}

#[test]
fn check_is_quiet_about_the_sandbox_where_bwrap_works() {
    if !have_bwrap() {
        return;
    }
    let dir = setup("");
    let out = hookci(dir.path(), &["check"], None, None);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("authority"), "{stderr}");
    assert!(!stderr.contains("bubblewrap"), "{stderr}");
}

#[test]
fn run_as_without_root_is_an_error_for_check_and_serve() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: the test runs hookci as another user, which needs root");
        return;
    }
    const NOBODY: u32 = 65534;
    let dir = setup("run_as = \"nobody\"\n");
    for p in [dir.path().to_path_buf(), dir.path().join("pipelines")] {
        std::os::unix::fs::chown(&p, Some(NOBODY), Some(NOBODY)).expect("chown");
    }
    let out = hookci(dir.path(), &["check"], None, Some(NOBODY));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("run_as") && stderr.contains("root"),
        "{stderr}"
    );
    let out = hookci(dir.path(), &["serve"], None, Some(NOBODY));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("run_as") && stderr.contains("root"),
        "{stderr}"
    );
}

#[test]
fn hookci_run_sandboxes_its_steps_with_the_workdir_as_workspace() {
    if !have_bwrap() {
        return;
    }
    let canary = format!("CONFIG-CANARY-{}", std::process::id());
    let dir = setup(&format!("# {canary}"));
    let config = dir.path().join("hookci.toml");
    std::fs::write(
        dir.path().join("pipelines/app.toml"),
        format!(
            "repo = \"acme/app\"\ninsecure_no_signature = true\nclone_url = \"/nowhere\"\n\
             [[steps]]\nname = \"look\"\nrun = '''\n\
             cat input.txt\ntest -e /sys || echo no-sys\n\
             cat {} 2>/dev/null || echo no-config\necho made > made.txt\n'''\n",
            config.display()
        ),
    )
    .expect("pipeline");
    let work = tempfile::tempdir().expect("tmp");
    std::fs::write(work.path().join("input.txt"), "from the work tree\n").expect("write");
    let out = hookci(
        dir.path(),
        &[
            "run",
            "app",
            "--workdir",
            work.path().to_str().expect("utf-8"),
        ],
        None,
        None,
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("from the work tree"), "{stdout}");
    assert!(stdout.contains("no-sys"), "{stdout}");
    assert!(stdout.contains("no-config"), "{stdout}");
    assert!(!stdout.contains(&canary), "{stdout}");
    // The workdir is the step's, read-write.
    assert!(work.path().join("made.txt").exists());
}

/// Runs `hookci run app` for the pipeline in `dir` on `work`, inside
/// `script`, which gives it a terminal as its controlling terminal; returns
/// what the terminal showed.
fn run_on_a_terminal(dir: &Path, work: &Path) -> String {
    let command = format!(
        "'{}' --config '{}' run app --workdir '{}'",
        env!("CARGO_BIN_EXE_hookci"),
        dir.join("hookci.toml").display(),
        work.display()
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("HOOKCI_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run script");
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{shown}\n{}", text(&out.stderr));
    shown
}

#[test]
fn a_sandboxed_step_cannot_open_a_terminal_with_or_without_one_around_hookci() {
    if !have_bwrap() {
        return;
    }
    if Command::new("script").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "this test needs script (util-linux)"
        );
        println!("skipped: no script(1)");
        return;
    }
    let dir = setup("");
    // A step that could open its controlling terminal could push input
    // into it (TIOCSTI) for the shell behind hookci to run.
    std::fs::write(
        dir.path().join("pipelines/app.toml"),
        "repo = \"acme/app\"\ninsecure_no_signature = true\nclone_url = \"/nowhere\"\n\
         [[steps]]\nname = \"tty\"\nrun = '''\n\
         if (: <>/dev/tty) 2>/dev/null; then echo tty-reached; else echo tty-unreachable; fi\n'''\n",
    )
    .expect("pipeline");
    let work = tempfile::tempdir().expect("tmp");

    // The log echoes the script: only a line of its own is the answer.
    let said = |out: &str, what: &str| out.lines().any(|l| l.trim() == what);

    // hookci on a terminal: the step gets a session of its own.
    let shown = run_on_a_terminal(dir.path(), work.path());
    assert!(said(&shown, "tty-unreachable"), "{shown}");
    assert!(!said(&shown, "tty-reached"), "{shown}");

    // hookci without one (as here, and as a service): none to reach.
    let out = hookci(
        dir.path(),
        &[
            "run",
            "app",
            "--workdir",
            work.path().to_str().expect("utf-8"),
        ],
        None,
        None,
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(said(&stdout, "tty-unreachable"), "{stdout}");
}
