//! Each role reads only the secrets it needs (SPEC §11, issue 13): a
//! receiver the webhook secrets, the admin token and the status tokens; a
//! runner the clone credentials and the step secrets. The real binary, a
//! receiver and a runner on one PostgreSQL schema, each with only its own
//! secrets on its "box" (its directory and environment).

use crate::cluster::spawn_role;
use crate::common;
use crate::gitserve::{HttpGitServer, Upstream};
use crate::pg;
use crate::report_fake::FakeHost;

use common::ZERO;
use std::path::Path;
use std::time::{Duration, Instant};

const HOOK_SECRET: &str = "hook-secret-4f1d";
const FIFO_SECRET: &str = "fifo-secret-9a2c";
const CLONE_TOKEN: &str = "clone-tok-7e3b";
const STEP_SECRET: &str = "step-value-5d8e";

/// A pipeline whose webhook secret comes from `webhook`, with a clone
/// token, a step secret and a status token from files beside it (each box
/// has its own files, or not).
fn pipeline(webhook: &str, clone_url: &str, host: &FakeHost, context: &str) -> String {
    format!(
        r#"repo = "Codertocat/Hello-World"
host = "github"
secret = {webhook}
clone_url = "{clone_url}"

[clone]
token = {{ file = "clone-token" }}

[secrets]
DEPLOY_KEY = {{ file = "step-secret" }}

[status]
provider = "github"
api_url = "{}"
token = {{ file = "status-token" }}
context = "{context}"

[[steps]]
name = "use"
run = 'test "$DEPLOY_KEY" = "{STEP_SECRET}" && echo deploy key ok'
"#,
        host.url()
    )
}

/// A FIFO at `path`: opening it to read blocks until a writer comes, so a
/// process that reads it as a secret never gets past its start.
fn fifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
}

/// True while some process holds `path` (a FIFO) open for reading.
fn fifo_has_reader(path: &Path) -> bool {
    use nix::fcntl::{OFlag, open};
    match open(
        path,
        OFlag::O_WRONLY | OFlag::O_NONBLOCK,
        nix::sys::stat::Mode::empty(),
    ) {
        Ok(fd) => {
            let _ = nix::unistd::close(fd);
            true
        }
        Err(e) => {
            assert_eq!(e, nix::errno::Errno::ENXIO, "{e}");
            false
        }
    }
}

/// A receiver without the clone credential and the step secret, a runner
/// without the webhook secrets (an unset variable, and a file it must
/// never open), the status token and the admin token: both start, the
/// receiver accepts deliveries and sends the reports, the runner clones
/// with the token and gives the step its secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_starts_and_works_with_only_its_own_secrets() {
    let Some(schema) = pg::Schema::create().await else {
        return;
    };
    let host = FakeHost::start(Vec::new()).await;
    let up = Upstream::new("private");
    let commit = up.push(&[("README", "x\n")], "private");
    let git = HttpGitServer::start(&up.project_root, &up.home, CLONE_TOKEN).await;
    let (r_dir, x_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for dir in [r_dir.path(), x_dir.path()] {
        let p = dir.join("pipelines");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(
            p.join("app.toml"),
            pipeline(
                r#"{ env = "HOOKCI_TEST_HOOK_SECRET" }"#,
                &git.url("private"),
                &host,
                "ci/env",
            ),
        )
        .unwrap();
        std::fs::write(
            p.join("fifo.toml"),
            pipeline(
                r#"{ file = "hook-secret" }"#,
                &git.url("private"),
                &host,
                "ci/file",
            ),
        )
        .unwrap();
    }
    // The receiver's box: the webhook secrets, the admin token, the status
    // token; no clone token, no step secret.
    let rp = r_dir.path().join("pipelines");
    std::fs::write(rp.join("hook-secret"), FIFO_SECRET).unwrap();
    std::fs::write(rp.join("status-token"), "status-tok").unwrap();
    std::fs::write(r_dir.path().join("admin-token"), "admin-tok").unwrap();
    // The runner's box: the clone token and the step secret; the webhook
    // secret file and the admin token are FIFOs nothing writes to (an open
    // would hang its start), the status token is absent.
    let xp = x_dir.path().join("pipelines");
    std::fs::write(xp.join("clone-token"), CLONE_TOKEN).unwrap();
    std::fs::write(xp.join("step-secret"), STEP_SECRET).unwrap();
    fifo(&xp.join("hook-secret"));
    fifo(&x_dir.path().join("admin-token"));

    let common_lines = format!(
        "store = {:?}\nadmin_token = {{ file = \"admin-token\" }}",
        schema.url
    );
    let (_r, r_log) = spawn_role(
        r_dir.path(),
        "receiver",
        &format!("{common_lines}\nnode = \"r\""),
        &[("HOOKCI_TEST_HOOK_SECRET", HOOK_SECRET)],
    );
    let r = format!(
        "http://{}",
        r_log
            .last()
            .and_then(|l| l.split("address=").nth(1))
            .and_then(|a| a.split_whitespace().next())
            .expect("an address")
    );
    let (_x, x_log) = spawn_role(
        x_dir.path(),
        "runner",
        &format!("{common_lines}\nnode = \"x\"\nmax_parallel_builds = 2"),
        &[],
    );
    let said = x_log.join("\n");
    assert!(
        said.contains("secrets of this role")
            && said.contains("no webhook secret, admin_token or status token"),
        "{said}"
    );
    assert!(!said.contains("HOOKCI_TEST_HOOK_SECRET"), "{said}");

    // Both pipelines, each signed with the secret the receiver read.
    let body = |context: &str| {
        let mut v: serde_json::Value = serde_json::from_slice(&common::github_push(
            &git.url("private"),
            "refs/heads/main",
            ZERO,
            &commit,
            context,
        ))
        .unwrap();
        v["repository"]["clone_url"] = git.url("private").into();
        serde_json::to_vec(&v).unwrap()
    };
    let a = common::queue_github(&r, "app", HOOK_SECRET, "d-env", &body("env")).await[0];
    let f = common::queue_github(&r, "fifo", FIFO_SECRET, "d-file", &body("file")).await[0];
    for id in [a, f] {
        let done = common::wait_final(&r, id).await;
        assert_eq!(done["status"], "success", "{done}");
        assert_eq!(done["node"], "x", "{done}");
        let log = std::fs::read_to_string(x_dir.path().join(format!("data/logs/{id}.log")))
            .expect("the runner's log");
        assert!(log.contains("deploy key ok"), "{log}");
    }
    assert!(
        git.authorizations() > 0,
        "the runner fetched with the token"
    );
    // The receiver sent the reports, with the token only it has.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = host.seen();
        let finals: Vec<_> = seen
            .iter()
            .filter(|s| s.json()["state"] == "success")
            .collect();
        if finals.len() == 2 {
            assert!(
                seen.iter()
                    .all(|s| s.header("authorization") == Some("Bearer status-tok")),
                "{:?}",
                seen.iter()
                    .map(|s| s.header("authorization"))
                    .collect::<Vec<_>>()
            );
            break;
        }
        assert!(Instant::now() < until, "no success status arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The runner never opened the webhook secret's file nor the admin
    // token's (it started, which a read would have stopped, and holds
    // neither open now).
    assert!(!fifo_has_reader(&xp.join("hook-secret")));
    assert!(!fifo_has_reader(&x_dir.path().join("admin-token")));
    // The receiver said what it started without.
    let said = r_log.join("\n");
    assert!(
        said.contains("clone.token") && said.contains("this receiver starts without it"),
        "{said}"
    );
    assert!(said.contains("secrets.DEPLOY_KEY"), "{said}");
    assert!(
        !said.contains(CLONE_TOKEN) && !said.contains(STEP_SECRET),
        "{said}"
    );
}

/// `hookci check` reads what `serve` would on the box: the secrets of the
/// config's role, or of `--role`.
#[test]
fn check_reads_the_secrets_of_the_configs_role_or_of_role() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pipelines");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(
        p.join("app.toml"),
        r#"repo = "o/r"
host = "github"
secret = { env = "HOOKCI_TEST_UNSET_HOOK_SECRET" }
clone_url = "https://git.example/o/r.git"

[secrets]
DEPLOY_KEY = { file = "step-secret" }

[[steps]]
name = "t"
run = "true"
"#,
    )
    .unwrap();
    let check = |role_line: &str, args: &[&str], hook_secret: Option<&str>| {
        let config = dir.path().join("hookci.toml");
        std::fs::write(
            &config,
            format!(
                "store = \"postgres://hookci@127.0.0.1:1/hookci\"\n{role_line}\npipelines_dir = \"{}\"\n",
                p.display()
            ),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookci"))
            .arg("check")
            .args(args)
            .arg("--config")
            .arg(&config)
            .env_remove("HOOKCI_TEST_UNSET_HOOK_SECRET")
            .envs(hook_secret.map(|v| ("HOOKCI_TEST_UNSET_HOOK_SECRET", v)))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run hookci check");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    // A runner's box has the step secret, not the webhook secret.
    std::fs::write(p.join("step-secret"), "v").unwrap();
    let (code, out) = check("role = \"runner\"", &[], None);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = check("role = \"receiver\"", &["--role", "runner"], None);
    assert_eq!(code, Some(0), "{out}");
    // Every secret, as one box needs them.
    let (code, out) = check("role = \"runner\"", &["--role", "all"], None);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("HOOKCI_TEST_UNSET_HOOK_SECRET is not set"),
        "{out}"
    );
    let (code, out) = check("", &[], None);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("HOOKCI_TEST_UNSET_HOOK_SECRET is not set"),
        "{out}"
    );
    // A receiver's box: the webhook secret is needed, the step secret not.
    std::fs::remove_file(p.join("step-secret")).unwrap();
    let (code, out) = check("role = \"receiver\"", &[], None);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("HOOKCI_TEST_UNSET_HOOK_SECRET is not set"),
        "{out}"
    );
    assert!(
        !out.lines()
            .any(|l| l.starts_with("error:") && l.contains("DEPLOY_KEY")),
        "{out}"
    );
    let (code, out) = check("role = \"receiver\"", &[], Some("v"));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("warning:") && l.contains("secrets.DEPLOY_KEY")),
        "{out}"
    );
}
