//! Loading pipeline files: the shipped examples, and broken files each
//! reported as `file:line:col: one sentence`.

use hookci::pipeline::{self, Concurrency, Finding, Provider, Shell, load_dir, load_file};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

/// A value set in the environment for `{ env = ... }` secrets.
const ENV_SECRET: &str = "env-secret-value-4f1c9a";
const ENV_SECRET_VAR: &str = "HOOKCI_PIPELINE_LOAD_TEST_SECRET";
const LITERAL_SECRET: &str = "literal-secret-value-77d2e0";
/// A variable no test sets.
const UNSET_VAR: &str = "HOOKCI_PIPELINE_LOAD_TEST_NEVER_SET";

#[expect(
    unsafe_code,
    reason = "set once, before any test reads it, under a Once"
)]
fn set_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| unsafe { std::env::set_var(ENV_SECRET_VAR, ENV_SECRET) });
}

fn write(dir: &Path, name: &str, src: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, src).expect("write pipeline");
    path
}

/// Loads `src` as `name` in a fresh directory; the findings as strings with
/// the directory left out.
fn load(name: &str, src: &str) -> Result<(pipeline::Pipeline, Vec<String>), Vec<String>> {
    set_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), name, src);
    let strip = |fs: Vec<Finding>| -> Vec<String> {
        let prefix = format!("{}/", dir.path().display());
        fs.iter()
            .map(|f| f.to_string().replace(&prefix, ""))
            .collect()
    };
    load_file(&path).map(|(p, w)| (p, strip(w))).map_err(strip)
}

const STEP: &str = "\n[[steps]]\nname = \"t\"\nrun = \"true\"\n";
const HEAD: &str = "repo = \"o/r\"\ninsecure_no_signature = true\n";

#[test]
fn the_shipped_pipelines_load_with_only_the_insecure_warnings() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let loaded = load_dir(&dir);
    assert!(loaded.errors.is_empty(), "{:#?}", loaded.errors);
    assert!(loaded.pipelines.len() >= 2, "{:?}", loaded.pipelines.keys());
    assert!(loaded.pipelines.contains_key("hello"));
    assert!(loaded.pipelines.contains_key("rust"));
    for w in &loaded.warnings {
        assert!(
            w.message.contains(
                "accepts unsigned deliveries; anyone who can reach hookci can trigger builds"
            ),
            "an unexpected warning: {w}"
        );
        assert!(w.position.is_some(), "{w}");
    }
    assert_eq!(loaded.warnings.len(), loaded.pipelines.len());
    for p in loaded.pipelines.values() {
        assert!(p.insecure_no_signature && p.secret.is_none());
        assert!(
            p.clone_url.is_some(),
            "{} must pin its clone_url, being unsigned",
            p.name
        );
    }
}

#[test]
fn the_rust_example_reads_as_written() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let (p, _) = load_file(&dir.join("rust.toml")).expect("rust.toml loads");
    assert_eq!(p.name, "rust");
    assert_eq!(p.concurrency, Concurrency::Supersede);
    assert_eq!(p.timeout, Some(Duration::from_secs(3600)));
    assert_eq!(p.triggers.len(), 2);
    assert!(
        p.triggers[0]
            .branches
            .as_ref()
            .unwrap()
            .matches("release/1.0")
    );
    assert!(
        !p.triggers[0]
            .branches
            .as_ref()
            .unwrap()
            .matches("release/old")
    );
    assert!(p.triggers[0].paths.accepts(&["src/lib.rs"]));
    assert!(!p.triggers[0].paths.accepts(&["README.md"]));
    assert!(p.triggers[1].tags.as_ref().unwrap().matches("v0.4.22"));
    assert_eq!(p.status.context, "hookci/rust");
    assert_eq!(
        p.steps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["toolchain", "build", "test", "clippy"]
    );
    assert!(p.steps[3].allow_failure);
}

#[test]
fn a_full_pipeline_becomes_validated_values() {
    let src = format!(
        r#"
repo = "octocat/hello-world"
host = "gitea"
secret = {{ env = "{ENV_SECRET_VAR}" }}
allow_sha1 = true
clone_url = "https://example.com/o/r.git"
skip_ci = false
concurrency = "parallel"
timeout = "1h30m"
[clone]
token = {{ env = "{ENV_SECRET_VAR}" }}
submodules = true
[[trigger]]
branches = ["main"]
paths = ["src/**"]
ignore_paths = ["docs/**"]
[env]
A_B = "1"
[secrets]
DEPLOY = {{ env = "{ENV_SECRET_VAR}" }}
[status]
provider = "webhook"
url = "https://status.example.com/hook/"
secret = {{ env = "{ENV_SECRET_VAR}" }}
context = "ci/x"
[[steps]]
name = "test"
run = "make test"
shell = "bash"
timeout = "30m"
env = {{ RUST_BACKTRACE = "1" }}
allow_failure = true
"#
    );
    let (p, warnings) = load("full.toml", &src).expect("loads");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(p.name, "full");
    assert_eq!(p.host, Some(hookci::webhook::Host::Gitea));
    assert_eq!(p.secret.as_ref().map(|s| s.expose()), Some(ENV_SECRET));
    assert!(p.allow_sha1 && !p.skip_ci && p.clone.submodules);
    assert_eq!(p.concurrency, Concurrency::Parallel);
    assert_eq!(p.timeout, Some(Duration::from_secs(5400)));
    assert_eq!(p.triggers[0].paths.ignore_paths, ["docs/**"]);
    assert_eq!(p.env.get("A_B").map(String::as_str), Some("1"));
    assert!(p.secrets.contains_key("DEPLOY"));
    assert_eq!(p.status.provider, Some(Provider::Webhook));
    assert_eq!(
        p.status.url.as_deref(),
        Some("https://status.example.com/hook")
    );
    assert_eq!(p.status.context, "ci/x");
    assert_eq!(p.steps[0].shell, Shell::Bash);
    assert_eq!(p.steps[0].timeout, Some(Duration::from_secs(1800)));
    assert!(p.steps[0].allow_failure);
}

#[test]
fn an_ssh_key_file_becomes_the_keys_contents() {
    let dir = tempfile::tempdir().unwrap();
    let key = write(
        dir.path(),
        "key",
        "-----BEGIN KEY-----\nabc\n-----END KEY-----\n",
    );
    let src = format!(
        "repo = \"o/r\"\nsecret = \"s\"\nclone_url = \"git@example.com:o/r.git\"\n[clone]\nssh_key = {{ file = \"{}\" }}\n{STEP}",
        key.display()
    );
    let (p, _) = load("k.toml", &src).expect("loads");
    let got = p.clone.ssh_key.expect("a key");
    assert_eq!(got.expose(), "-----BEGIN KEY-----\nabc\n-----END KEY-----");
}

#[test]
fn broken_pipeline_files_are_reported_with_line_column_and_one_sentence() {
    let s = STEP;
    let h = HEAD;
    let rows: Vec<(&str, &str, String, &str)> = vec![
        (
            "an unknown key",
            "a.toml",
            format!("{h}[[trigger]]\nbranchs = [\"main\"]\n{s}"),
            "a.toml:4:1: unknown key \"branchs\" in [[trigger]]; expected one of branches, tags, paths, ignore_paths, pull_requests; did you mean \"branches\"?",
        ),
        (
            "an unknown top-level key",
            "a.toml",
            format!("{h}foo = 1\n{s}"),
            "a.toml:3:1: unknown key \"foo\" at the top level; expected one of repo, host, secret, insecure_no_signature, allow_sha1, clone_url, clone, trigger, skip_ci, concurrency, runs_on, timeout, env, secrets, status, steps, sandbox, limits, pull_requests",
        ),
        (
            "a key after a table belongs to it",
            "a.toml",
            format!("{h}[[trigger]]\ntags = [\"v*\"]\nconcurrency = \"queue\"\n{s}"),
            "a.toml:5:1: unknown key \"concurrency\" in [[trigger]]; expected one of branches, tags, paths, ignore_paths, pull_requests",
        ),
        (
            "a wrong type",
            "a.toml",
            format!("repo = 3\ninsecure_no_signature = true\n{s}"),
            "a.toml:1:8: wrong type for \"repo\": expected a string, found integer `3`",
        ),
        (
            "a boolean written as a string",
            "a.toml",
            format!("{h}skip_ci = \"yes\"\n{s}"),
            "a.toml:3:11: wrong type for \"skip_ci\": expected a boolean, found a string",
        ),
        (
            "a number in [env]",
            "a.toml",
            format!("{h}[env]\nX = 1\n{s}"),
            "a.toml:4:5: wrong type for \"X\": expected a string, found integer `1`",
        ),
        (
            "a syntax error",
            "a.toml",
            format!("repo = \"o/r\n{s}"),
            "a.toml:1:12: invalid basic string, expected `\"`",
        ),
        (
            "a duplicate key",
            "a.toml",
            format!("{h}repo = \"x/y\"\n{s}"),
            "a.toml:3:1: duplicate key \"repo\"",
        ),
        (
            "a bad host",
            "a.toml",
            format!("{h}host = \"githb\"\n{s}"),
            "a.toml:3:8: unknown host \"githb\"; expected one of github, gitlab, gitea, forgejo, gogs, bitbucket, bitbucket-server, generic",
        ),
        (
            "a bad provider",
            "a.toml",
            format!("{h}[status]\nprovider = \"gihub\"\n{s}"),
            "a.toml:4:12: unknown status provider \"gihub\"; expected one of github, gitea, forgejo, gitlab, bitbucket, bitbucket-server, webhook, none",
        ),
        (
            "a bad concurrency",
            "a.toml",
            format!("{h}concurrency = \"fifo\"\n{s}"),
            "a.toml:3:15: unknown concurrency \"fifo\"; expected one of queue, supersede, parallel",
        ),
        (
            "a bad shell",
            "a.toml",
            format!("{h}{s}shell = \"zsh\"\n"),
            "a.toml:7:9: unknown shell \"zsh\"; expected one of sh, bash",
        ),
        (
            "a duration without a unit",
            "a.toml",
            format!("{h}timeout = \"30\"\n{s}"),
            "a.toml:3:11: timeout \"30\" is not a duration; write e.g. \"30s\", \"30m\" or \"1h30m\"",
        ),
        (
            "a zero step timeout",
            "a.toml",
            format!("{h}{s}timeout = \"0s\"\n"),
            "a.toml:7:11: timeout must be longer than zero",
        ),
        (
            "a bad glob",
            "a.toml",
            format!("{h}[[trigger]]\nbranches = [\"main\", \"release/[abc\"]\n{s}"),
            "a.toml:4:21: invalid glob \"release/[abc\": unclosed character class; missing ']'",
        ),
        (
            "a bad path glob",
            "a.toml",
            format!("{h}[[trigger]]\npaths = [\"src/{{a,b\"]\n{s}"),
            "a.toml:4:10: invalid glob \"src/{a,b\": unclosed alternate group; missing '}' (maybe escape '{' with '[{]'?)",
        ),
        (
            "an empty branch list",
            "a.toml",
            format!("{h}[[trigger]]\nbranches = []\n{s}"),
            "a.toml:4:12: branches is empty; list at least one glob or remove the key",
        ),
        (
            "a missing repo",
            "a.toml",
            format!("insecure_no_signature = true\n{s}"),
            "a.toml:1:1: repo is required: the repository's full name as the host reports it, e.g. \"octocat/hello-world\"",
        ),
        (
            "a missing secret",
            "a.toml",
            format!("repo = \"o/r\"\n{s}"),
            "a.toml:1:1: secret is required; set secret = { env = \"NAME\" } or, to accept unsigned deliveries, insecure_no_signature = true",
        ),
        (
            "a missing secret with the flag false",
            "a.toml",
            format!("repo = \"o/r\"\ninsecure_no_signature = false\n{s}"),
            "a.toml:2:25: secret is required; set secret = { env = \"NAME\" } or, to accept unsigned deliveries, insecure_no_signature = true",
        ),
        (
            "a secret and the insecure flag",
            "a.toml",
            format!("{h}secret = {{ env = \"{ENV_SECRET_VAR}\" }}\n{s}"),
            "a.toml:3:10: secret and insecure_no_signature = true are both set; remove one",
        ),
        (
            "an unset environment variable",
            "a.toml",
            format!("repo = \"o/r\"\nsecret = {{ env = \"{UNSET_VAR}\" }}\n{s}"),
            "a.toml:2:10: secret: environment variable HOOKCI_PIPELINE_LOAD_TEST_NEVER_SET is not set",
        ),
        (
            "an unset variable in [secrets]",
            "a.toml",
            format!("{h}[secrets]\nTOKEN = {{ env = \"{UNSET_VAR}\" }}\n{s}"),
            "a.toml:4:9: secrets.TOKEN: environment variable HOOKCI_PIPELINE_LOAD_TEST_NEVER_SET is not set",
        ),
        (
            "a missing secret file",
            "a.toml",
            format!("repo = \"o/r\"\nsecret = {{ file = \"/nonexistent/hookci/secret\" }}\n{s}"),
            "a.toml:2:10: secret: cannot read secret file /nonexistent/hookci/secret: entity not found",
        ),
        (
            "a stray key in a secret",
            "a.toml",
            format!("repo = \"o/r\"\nsecret = {{ env = \"{ENV_SECRET_VAR}\", fil = \"x\" }}\n{s}"),
            "a.toml:2:10: unknown key \"fil\" in a secret; expected env, file or credential",
        ),
        (
            "a secret of the wrong type",
            "a.toml",
            format!("repo = \"o/r\"\nsecret = 5\n{s}"),
            "a.toml:2:10: wrong type for \"secret\": expected a string, { env = \"NAME\" }, { file = \"/path\" } or { credential = \"NAME\" }, found integer `5`",
        ),
        (
            "duplicate step names",
            "a.toml",
            format!("{h}{s}{s}"),
            "a.toml:9:8: two steps are named \"t\"; step names must be unique",
        ),
        (
            "an empty step name",
            "a.toml",
            format!("{h}\n[[steps]]\nname = \" \"\nrun = \"true\"\n"),
            "a.toml:5:8: a step's name is empty",
        ),
        (
            "a missing run",
            "a.toml",
            format!("{h}\n[[steps]]\nname = \"t\"\n"),
            "a.toml:4:1: missing key \"run\" in [[steps]]",
        ),
        (
            "no steps",
            "a.toml",
            h.to_owned(),
            "a.toml:1:1: the pipeline has no steps; add at least one [[steps]] with a name and run",
        ),
        (
            "a reserved variable in [env]",
            "a.toml",
            format!("{h}[env]\nHOME = \"/evil\"\n{s}"),
            "a.toml:4:1: HOME in [env] is reserved: hookci sets CI, HOME and HOOKCI_* for every step",
        ),
        (
            "a HOOKCI_ variable in a step's env",
            "a.toml",
            format!("{h}{s}env = {{ HOOKCI_BUILD_ID = \"1\" }}\n"),
            "a.toml:7:9: HOOKCI_BUILD_ID in the env of step \"t\" is reserved: hookci sets CI, HOME and HOOKCI_* for every step",
        ),
        (
            "a reserved variable in [secrets]",
            "a.toml",
            format!("{h}[secrets]\nCI = {{ env = \"{ENV_SECRET_VAR}\" }}\n{s}"),
            "a.toml:4:1: CI in [secrets] is reserved: hookci sets CI, HOME and HOOKCI_* for every step",
        ),
        (
            "a bad variable name",
            "a.toml",
            format!("{h}[env]\n\"1X\" = \"a\"\n{s}"),
            "a.toml:4:1: \"1X\" in [env] is not a valid environment variable name; use letters, digits and _, not starting with a digit",
        ),
        (
            "a webhook status without url",
            "a.toml",
            format!(
                "{h}[status]\nprovider = \"webhook\"\nsecret = {{ env = \"{ENV_SECRET_VAR}\" }}\n{s}"
            ),
            "a.toml:4:12: status provider \"webhook\" needs url, the address the status is posted to",
        ),
        (
            "a status url without the webhook provider",
            "a.toml",
            format!("{h}[status]\nurl = \"https://x.example\"\n{s}"),
            "a.toml:4:7: status.url is only used with provider = \"webhook\"",
        ),
        (
            "a bad file name",
            "Hello World.toml",
            format!("{h}{s}"),
            "Hello World.toml: \"Hello World\" is not a valid pipeline name; a pipeline file is NAME.toml with NAME matching [a-z0-9][a-z0-9._-]*",
        ),
        (
            "a file name with a capital",
            "Hello.toml",
            format!("{h}{s}"),
            "Hello.toml: \"Hello\" is not a valid pipeline name; a pipeline file is NAME.toml with NAME matching [a-z0-9][a-z0-9._-]*",
        ),
    ];
    let mut failures = Vec::new();
    for (what, name, src, want) in &rows {
        match load(name, src) {
            Ok(_) => failures.push(format!("{what}: loaded, expected {want}")),
            // Every error of the file is reported, sorted by line; the
            // row's own is among them.
            Err(errors) if errors.iter().any(|e| e == want) => {}
            Err(errors) => failures.push(format!("{what}:\n  want {want}\n  got  {errors:?}")),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_error_in_a_file_is_reported_not_just_the_first() {
    let src =
        "repo = \"\"\nhost = \"x\"\nconcurrency = \"y\"\n[[steps]]\nname = \"\"\nrun = \"\"\n";
    let errors = load("a.toml", src).unwrap_err();
    assert_eq!(errors.len(), 6, "{errors:#?}");
}

#[test]
fn valid_names_follow_the_file_name_rule() {
    for ok in ["a", "0", "hello", "my-app.ci", "a_b", "9lives"] {
        assert!(pipeline::valid_name(ok), "{ok}");
    }
    for bad in ["", "-a", ".a", "_a", "A", "a b", "é"] {
        assert!(!pipeline::valid_name(bad), "{bad}");
    }
}

#[test]
fn a_literal_secret_loads_with_a_warning() {
    let src = format!("repo = \"o/r\"\nsecret = \"{LITERAL_SECRET}\"\n{STEP}");
    let (p, warnings) = load("a.toml", &src).expect("loads");
    assert_eq!(
        warnings,
        [
            "a.toml:2:10: secret is a literal secret in the file; prefer { env = ... } or { file = ... }"
        ]
    );
    assert_eq!(p.secret.unwrap().expose(), LITERAL_SECRET);
}

#[test]
fn an_insecure_pipeline_loads_with_a_warning() {
    let (p, warnings) = load("a.toml", &format!("{HEAD}{STEP}")).expect("loads");
    assert_eq!(
        warnings,
        [
            "a.toml:2:25: the pipeline accepts unsigned deliveries; anyone who can reach hookci can trigger builds",
            "a.toml:2:25: an unsigned delivery names the repository URL to clone, so anyone who can reach hookci can make it run code of their choosing; set clone_url"
        ]
    );
    // With the clone URL pinned, only the first warning stands.
    let pinned = format!("{HEAD}clone_url = \"https://example.com/o/r.git\"\n{STEP}");
    let (_, warnings) = load("a.toml", &pinned).expect("loads");
    assert_eq!(
        warnings,
        [
            "a.toml:2:25: the pipeline accepts unsigned deliveries; anyone who can reach hookci can trigger builds"
        ]
    );
    assert!(p.secret.is_none());
    assert_eq!(p.status.context, "hookci/a");
    assert!(p.skip_ci);
    assert_eq!(p.concurrency, Concurrency::Queue);
}

#[test]
fn no_secret_value_appears_in_errors_warnings_or_debug_output() {
    set_env();
    let good = format!(
        r#"repo = "o/r"
secret = "{LITERAL_SECRET}"
host = "github"
clone_url = "https://github.com/o/r.git"
[clone]
token = {{ env = "{ENV_SECRET_VAR}" }}
[secrets]
A = "{LITERAL_SECRET}"
B = {{ env = "{ENV_SECRET_VAR}" }}
[status]
token = "{LITERAL_SECRET}"
{STEP}"#
    );
    let (p, warnings) = load("good.toml", &good).expect("loads");
    let debug = format!("{p:?}");
    let broken = format!(
        r#"repo = "o/r"
secret = "{LITERAL_SECRET}"
clone_url = "https://github.com/o/r.git"
[secrets]
A = "{LITERAL_SECRET}"
B = {{ env = "{ENV_SECRET_VAR}" }}
C = {{ env = "{UNSET_VAR}" }}
"1D" = "{LITERAL_SECRET}"
HOME = {{ env = "{ENV_SECRET_VAR}" }}
{STEP}"#
    );
    let errors = load("broken.toml", &broken).unwrap_err();
    assert_eq!(errors.len(), 3, "{errors:?}");
    let mut parse_errors = Vec::new();
    for src in [
        format!("repo = \"o/r\"\nsecret = [\"{LITERAL_SECRET}\"]\n{STEP}"),
        format!("repo = \"o/r\"\nsecrets = \"{LITERAL_SECRET}\"\n{STEP}"),
        format!(
            "repo = \"o/r\"\nsecret = {{ env = \"{ENV_SECRET_VAR}\", x = \"{LITERAL_SECRET}\" }}\n{STEP}"
        ),
    ] {
        parse_errors.extend(load("t.toml", &src).unwrap_err());
    }
    let all = format!("{debug}\n{warnings:?}\n{errors:?}\n{parse_errors:?}");
    assert!(!all.contains(LITERAL_SECRET), "{all}");
    assert!(!all.contains(ENV_SECRET), "{all}");
}

#[test]
fn one_broken_file_does_not_stop_the_others_from_loading() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.toml", &format!("{HEAD}{STEP}"));
    write(dir.path(), "b.toml", "repo = ");
    write(dir.path(), "c.toml", &format!("{HEAD}{STEP}"));
    write(dir.path(), "notes.txt", "not a pipeline");
    let loaded = load_dir(dir.path());
    assert_eq!(loaded.pipelines.keys().collect::<Vec<_>>(), ["a", "c"]);
    assert_eq!(loaded.errors.len(), 1);
    assert!(loaded.errors[0].file.ends_with("b.toml"));
    // Two per insecure pipeline without a pinned clone_url.
    assert_eq!(loaded.warnings.len(), 4);
}

#[test]
fn a_missing_pipelines_directory_is_one_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let loaded = load_dir(&missing);
    assert!(loaded.pipelines.is_empty());
    assert_eq!(loaded.errors.len(), 1);
    assert_eq!(
        loaded.errors[0].to_string(),
        format!(
            "{}: the pipelines directory does not exist",
            missing.display()
        )
    );
}

#[test]
fn credentials_go_only_where_the_configuration_says() {
    let errors = |src: &str| load("a.toml", src).unwrap_err();
    let signed = "repo = \"o/r\"\nsecret = \"s\"\n";
    // A status token names its provider in the configuration.
    assert_eq!(
        errors(&format!(
            "{signed}[status]\ntoken = {{ env = \"{ENV_SECRET_VAR}\" }}\n{STEP}"
        )),
        [
            "a.toml:4:9: status.token needs host or [status] provider: the provider that uses the token comes from the configuration, never from a delivery's headers"
        ]
    );
    // Clone credentials and secrets need a configured clone_url.
    assert_eq!(
        errors(&format!(
            "{signed}[clone]\ntoken = {{ env = \"{ENV_SECRET_VAR}\" }}\n{STEP}"
        )),
        [
            "a.toml:4:9: [clone] token needs clone_url: without it the delivery names the repository, and so where credentials go and which code sees the secrets"
        ]
    );
    assert_eq!(
        errors(&format!(
            "{signed}[secrets]\nDEPLOY = {{ env = \"{ENV_SECRET_VAR}\" }}\n{STEP}"
        )),
        [
            "a.toml:4:1: [secrets] needs clone_url: without it the delivery names the repository, and so where credentials go and which code sees the secrets"
        ]
    );
    // No credential or secret in an unsigned pipeline, clone_url or not.
    let pinned = "clone_url = \"https://example.com/o/r.git\"\n";
    assert_eq!(
        errors(&format!(
            "{HEAD}{pinned}[secrets]\nDEPLOY = {{ env = \"{ENV_SECRET_VAR}\" }}\n{STEP}"
        )),
        [
            "a.toml:2:25: insecure_no_signature = true cannot go with [secrets]: anyone who can reach hookci could make it use them; set secret instead"
        ]
    );
    assert_eq!(
        errors(&format!(
            "{HEAD}host = \"github\"\n[status]\ntoken = {{ env = \"{ENV_SECRET_VAR}\" }}\n{STEP}"
        )),
        [
            "a.toml:2:25: insecure_no_signature = true cannot go with [status] token: anyone who can reach hookci could make it use them; set secret instead"
        ]
    );
    // Pinned and signed, they load.
    let ok = format!(
        "{signed}host = \"github\"\n{pinned}[clone]\ntoken = {{ env = \"{ENV_SECRET_VAR}\" }}\n[secrets]\nDEPLOY = {{ env = \"{ENV_SECRET_VAR}\" }}\n[status]\ntoken = {{ env = \"{ENV_SECRET_VAR}\" }}\n{STEP}"
    );
    load("a.toml", &ok).expect("loads");
}

#[test]
fn pull_request_settings_are_read_and_checked() {
    let src = format!(
        "repo = \"o/r\"\nsecret = {{ env = \"{ENV_SECRET_VAR}\" }}\n\
         [[trigger]]\npull_requests = [\"main\", \"release/**\"]\npaths = [\"src/**\"]\n\
         [pull_requests]\nforks = \"build\"\ntrusted_authors = [\"ada\", \"bob\"]\n{STEP}"
    );
    let (p, warnings) = load("pr.toml", &src).expect("loads");
    assert!(warnings.is_empty(), "{warnings:?}");
    let t = &p.triggers[0];
    assert!(t.pull_requests.as_ref().unwrap().matches("release/1.0"));
    assert!(t.branches.is_none());
    assert_eq!(p.pull_requests.forks, pipeline::ForkPolicy::Build);
    assert!(p.pull_requests.trusts("ADA") && !p.pull_requests.trusts("eve"));
    assert!(!p.pull_requests.secrets_for_forks);

    // The defaults: forks wait for approval, without secrets.
    let (p, _) = load("plain.toml", &format!("{HEAD}{STEP}")).expect("loads");
    assert_eq!(p.pull_requests.forks, pipeline::ForkPolicy::Approve);
    assert!(p.pull_requests.trusted_authors.is_empty() && !p.pull_requests.secrets_for_forks);

    let bad = [
        (
            "[pull_requests]\nforks = \"always\"\n",
            "bad.toml:5:9: unknown forks \"always\"; expected one of approve, build, ignore",
        ),
        (
            "[pull_requests]\nforks_allowed = true\n",
            "bad.toml:5:1: unknown key \"forks_allowed\" in [pull_requests]; expected one of forks, trusted_authors, secrets_for_forks",
        ),
        (
            "[[trigger]]\npull_requests = []\n",
            "bad.toml:5:17: pull_requests is empty; list at least one glob or remove the key",
        ),
        (
            "[pull_requests]\ntrusted_authors = [\" ada\"]\n",
            "bad.toml:5:20: a trusted author is a host login, without spaces around it",
        ),
    ];
    for (table, want) in bad {
        let errors = load("bad.toml", &format!("{HEAD}\n{table}{STEP}")).unwrap_err();
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "{table}: {errors:?}"
        );
    }
    let (_, warnings) = load(
        "open.toml",
        &format!("{HEAD}[pull_requests]\nsecrets_for_forks = true\n{STEP}"),
    )
    .expect("loads");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("secrets_for_forks = true gives [secrets]")),
        "{warnings:?}"
    );
}
