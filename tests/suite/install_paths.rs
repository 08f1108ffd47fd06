//! The first hour on a build box (issue 10): relative paths in a config file
//! resolve against that file's directory, a missing pipelines directory
//! stops the daemon with its absolute path, and `public_url` follows
//! `listen`.

use crate::common;

use hookci::config::load_file;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn hookci(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hookci"))
        .args(args)
        .current_dir(cwd)
        .env_remove("HOOKCI_CONFIG")
        .env_remove("HOOKCI_TOKEN")
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run hookci")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `etc/hookci.toml` with relative paths, a pipeline whose secret is a
/// relative file, and the admin token in a relative file.
fn layout(root: &Path) -> std::path::PathBuf {
    let etc = root.join("etc");
    std::fs::create_dir_all(etc.join("pipelines")).unwrap();
    std::fs::write(etc.join("admin.token"), "tok\n").unwrap();
    std::fs::write(etc.join("pipelines/app.secret"), "s3cret\n").unwrap();
    std::fs::write(
        etc.join("pipelines/app.toml"),
        "repo = \"acme/app\"\nsecret = { file = \"app.secret\" }\n[[steps]]\nname = \"t\"\nrun = \"true\"\n",
    )
    .unwrap();
    let config = etc.join("hookci.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:1\"\npipelines_dir = \"pipelines\"\ndata_dir = \"../var\"\n\
         admin_token = { file = \"admin.token\" }\n",
    )
    .unwrap();
    config
}

#[test]
fn relative_paths_in_the_config_resolve_against_its_directory() {
    let root = tempfile::tempdir().unwrap();
    let config = layout(root.path());
    let (c, _) = load_file(&config).expect("loads");
    let etc = root.path().join("etc");
    assert_eq!(c.pipelines_dir, etc.join("pipelines"));
    assert_eq!(c.data_dir, etc.join("../var"));
    assert_eq!(c.admin_token.expect("token").expose(), "tok");
}

#[test]
fn check_sees_the_same_files_from_any_working_directory() {
    let root = tempfile::tempdir().unwrap();
    let config = layout(root.path());
    let elsewhere = tempfile::tempdir().unwrap();
    for cwd in [root.path(), elsewhere.path(), Path::new("/")] {
        let out = hookci(&["check", "--config", config.to_str().unwrap()], cwd);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), "ok: 1 pipelines");
    }
    // The relative form of --config too.
    let out = hookci(&["check", "--config", "etc/hookci.toml"], root.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn serve_without_its_pipelines_directory_names_the_absolute_path_and_exits_2() {
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("hookci.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\npipelines_dir = \"nope\"\n",
    )
    .unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    // A daemon that wrongly starts must not hang the test: it is killed
    // (guard) as soon as a log line says it listens.
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookci"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .current_dir(elsewhere.path())
        .env_remove("HOOKCI_CONFIG")
        .env("HOOKCI_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hookci");
    let stderr = child.stderr.take().unwrap();
    let mut guard = common::Daemon(child);
    let mut err = String::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
        assert!(
            !line.contains("listening"),
            "hookci started without pipelines: {line}"
        );
        err.push_str(&line);
        err.push('\n');
    }
    let status = guard.0.wait().unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    let want = format!(
        "the pipelines directory {} does not exist",
        root.path().join("nope").display()
    );
    assert!(err.contains(&want), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Nothing was created in the data dir: it stopped before the store.
    assert!(!root.path().join("data").exists());
}

#[test]
fn public_url_defaults_to_the_listen_address() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookci.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:8792\"\n").unwrap();
    let (c, _) = load_file(&config).unwrap();
    assert_eq!(c.public_url, "http://127.0.0.1:8792");
    std::fs::write(&config, "listen = \"[::1]:9000\"\n").unwrap();
    assert_eq!(
        load_file(&config).unwrap().0.public_url,
        "http://[::1]:9000"
    );
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:8792\"\npublic_url = \"https://ci.example.com\"\n",
    )
    .unwrap();
    assert_eq!(
        load_file(&config).unwrap().0.public_url,
        "https://ci.example.com"
    );
}

/// The client commands reach the daemon the config describes, not the
/// default port.
#[test]
fn the_client_commands_reach_the_configured_listen_address() {
    let dir = tempfile::tempdir().unwrap();
    // A free port, chosen by the kernel, for a config that names it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_guard, base) = common::spawn_daemon_listening(
        dir.path(),
        &format!("127.0.0.1:{port}"),
        "max_parallel_builds = 0",
    );
    assert_eq!(base, format!("http://127.0.0.1:{port}"));
    let config = dir.path().join("hookci.toml");
    let out = hookci(
        &["builds", "--json", "--config", config.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("\"builds\""),
        "{}",
        text(&out.stdout)
    );
}

/// `listen = "127.0.0.1:0"` without a public_url: the links hookci gives
/// out name the port it got, not port 0.
#[tokio::test]
async fn links_name_the_bound_port_when_listen_asks_for_any() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
    std::fs::write(
        dir.path().join("pipelines/app.toml"),
        common::pipeline_toml("s").step("t", "true").to_string(),
    )
    .unwrap();
    let (_guard, base) = common::spawn_daemon(dir.path(), "max_parallel_builds = 0");
    let body = common::github_push(
        "https://github.com/Codertocat/Hello-World.git",
        "refs/heads/main",
        common::ZERO,
        &"a".repeat(40),
        "x",
    );
    let (status, json) = common::send_github(&base, "app", "s", "port-1", &body).await;
    assert_eq!(status, 202, "{json}");
    let url = json["builds"][0]["url"].as_str().expect("url");
    assert!(
        url.starts_with(&format!("{base}/builds/")),
        "{url} is not under {base}"
    );
}

/// `{ credential = "NAME" }` reads `$CREDENTIALS_DIRECTORY/NAME`, the file
/// systemd's `LoadCredential=` gives the service.
#[test]
fn a_credential_secret_is_read_from_the_credentials_directory() {
    let root = tempfile::tempdir().unwrap();
    let pipelines = root.path().join("pipelines");
    std::fs::create_dir_all(&pipelines).unwrap();
    std::fs::write(
        pipelines.join("app.toml"),
        "repo = \"acme/app\"\nsecret = { credential = \"app-hook\" }\n[[steps]]\nname = \"t\"\nrun = \"true\"\n",
    )
    .unwrap();
    let config = root.path().join("hookci.toml");
    std::fs::write(&config, "admin_token = { credential = \"admin\" }\n").unwrap();
    let creds = root.path().join("creds");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(creds.join("app-hook"), "hook-secret\n").unwrap();
    std::fs::write(creds.join("admin"), "admin-secret").unwrap();

    let run = |creds: Option<&Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookci"));
        cmd.args(["check", "--config", config.to_str().unwrap()])
            .env_remove("HOOKCI_CONFIG")
            .env_remove("CREDENTIALS_DIRECTORY");
        if let Some(dir) = creds {
            cmd.env("CREDENTIALS_DIRECTORY", dir);
        }
        cmd.output().expect("run hookci")
    };
    let out = run(Some(&creds));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("secret\n"));

    let out = run(None);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("credential admin: $CREDENTIALS_DIRECTORY is not set; give it with LoadCredential=admin:/path in the unit"),
        "{err}"
    );

    std::fs::remove_file(creds.join("app-hook")).unwrap();
    let out = run(Some(&creds));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot read secret file"), "{err}");
    assert!(!err.contains("admin-secret"), "{err}");
}

/// `check` reports every error of a file in one run, by line, unknown keys
/// included with a suggestion, and every error of the server config.
#[test]
fn check_reports_every_error_sorted_by_line_with_suggestions() {
    let root = tempfile::tempdir().unwrap();
    let pipelines = root.path().join("pipelines");
    std::fs::create_dir_all(&pipelines).unwrap();
    std::fs::write(
        pipelines.join("app.toml"),
        "repo = \"acme/app\"\ninsecure_no_signature = true\ntimeout = \"soon\"\nconcurency = \"queue\"\n\
         [[trigger]]\nbranchs = [\"main\"]\n[[steps]]\nname = \"t\"\nrun = \"true\"\nwhatever = 1\n",
    )
    .unwrap();
    let config = root.path().join("hookci.toml");
    std::fs::write(
        &config,
        "listen = \"nowhere\"\nkeep_builds = 0\nrun_as = \"no-such-user-hookci\"\n",
    )
    .unwrap();
    let out = hookci(&["check", "--config", "hookci.toml"], root.path());
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(lines[0].ends_with("hookci.toml:1:10: listen \"nowhere\" is not a socket address; write e.g. \"127.0.0.1:8787\" or \"[::]:8787\""), "{err}");
    assert!(
        lines[1].ends_with("hookci.toml:2:15: keep_builds must be greater than zero"),
        "{err}"
    );
    assert!(
        lines[2].ends_with("hookci.toml:3:10: the run_as user no-such-user-hookci does not exist"),
        "{err}"
    );

    // The config fixed, the pipeline's errors, all of them, by line.
    std::fs::write(&config, "").unwrap();
    let out = hookci(&["check", "--config", "hookci.toml"], root.path());
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let at: Vec<String> = err
        .lines()
        .map(|l| {
            let rest = l.split("app.toml:").nth(1).unwrap_or(l);
            rest.to_owned()
        })
        .collect();
    assert_eq!(at.len(), 4, "{err}");
    assert!(at[0].starts_with("3:11: timeout "), "{err}");
    assert!(
        at[1].starts_with("4:1: unknown key \"concurency\" at the top level"),
        "{err}"
    );
    assert!(at[1].ends_with("; did you mean \"concurrency\"?"), "{err}");
    assert!(
        at[2].starts_with("6:1: unknown key \"branchs\" in [[trigger]]"),
        "{err}"
    );
    assert!(at[2].ends_with("; did you mean \"branches\"?"), "{err}");
    assert!(
        at[3].starts_with("10:1: unknown key \"whatever\" in [[steps]]"),
        "{err}"
    );
    assert!(!at[3].contains("did you mean"), "{err}");
}

/// `--no-secrets` checks everything but reading secrets, for a shell
/// without the service's variables and credentials.
#[test]
fn check_no_secrets_skips_only_the_secrets() {
    let root = tempfile::tempdir().unwrap();
    let pipelines = root.path().join("pipelines");
    std::fs::create_dir_all(&pipelines).unwrap();
    std::fs::write(
        pipelines.join("app.toml"),
        "repo = \"acme/app\"\nsecret = { env = \"HOOKCI_TEST_NEVER_SET_SECRET\" }\n\
         [[steps]]\nname = \"t\"\nrun = \"true\"\n",
    )
    .unwrap();
    std::fs::write(
        root.path().join("hookci.toml"),
        "admin_token = { credential = \"admin\" }\n",
    )
    .unwrap();
    let out = hookci(&["check"], root.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let out = hookci(&["check", "--no-secrets"], root.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Everything else is still checked.
    std::fs::write(
        pipelines.join("bad.toml"),
        "repo = \"acme/app\"\nsecret = { env = \"X\" }\ntimeout = \"later\"\n[[steps]]\nname = \"t\"\nrun = \"true\"\n",
    )
    .unwrap();
    let out = hookci(&["check", "--no-secrets"], root.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("bad.toml:3:11: timeout"),
        "{}",
        text(&out.stderr)
    );
}
