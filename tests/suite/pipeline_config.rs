//! Loading the server config (`hookci.toml`): defaults, the shipped
//! example, and bad values reported as `file:line:col: one sentence`.

use hookci::config::{Config, load, load_file};
use std::path::{Path, PathBuf};
use std::time::Duration;

const LITERAL_TOKEN: &str = "admin-token-literal-9b3e11";
const UNSET_VAR: &str = "HOOKCI_CONFIG_TEST_NEVER_SET";

fn write(dir: &Path, src: &str) -> PathBuf {
    let path = dir.join("hookci.toml");
    std::fs::write(&path, src).expect("write config");
    path
}

/// Loads `src`; the finding (or warnings) as strings with the directory left out.
fn load_src(src: &str) -> Result<(Config, Vec<String>), String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), src);
    let prefix = format!("{}/", dir.path().display());
    load(Some(&path))
        .map(|(c, w)| {
            let w = w
                .iter()
                .map(|f| f.to_string().replace(&prefix, ""))
                .collect();
            (c, w)
        })
        .map_err(|f| f.to_string().replace(&prefix, ""))
}

#[test]
fn an_empty_file_gives_the_defaults() {
    let (c, warnings) = load_src("").expect("loads");
    let d = Config::default();
    assert!(warnings.is_empty());
    assert_eq!(c.listen, d.listen);
    assert_eq!(c.public_url, d.public_url);
    // The default directories sit beside the file.
    assert!(c.data_dir.is_absolute() && c.data_dir.ends_with(&d.data_dir));
    assert!(c.pipelines_dir.is_absolute() && c.pipelines_dir.ends_with(&d.pipelines_dir));
    assert_eq!(c.max_parallel_builds, d.max_parallel_builds);
    assert_eq!(c.keep_builds, 500);
    assert_eq!(c.shutdown_grace, Duration::from_secs(30));
    assert!(c.admin_token.is_none() && c.run_as.is_none() && !c.private);
    assert!(c.source.is_some());
}

#[test]
fn every_key_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "from-a-file\n").unwrap();
    let src = format!(
        r#"
listen = "0.0.0.0:9000"
public_url = "https://ci.example.com/"
data_dir = "/var/lib/hookci"
pipelines_dir = "/etc/hookci/pipelines"
max_parallel_builds = 3
max_queued_builds = 50
max_body_bytes = 1024
admin_token = {{ file = "{}" }}
run_as = "nobody"
keep_builds = 7
shutdown_grace = "1m"
private = true
max_connections = 10
header_timeout = "5s"
request_timeout = "2m"
max_log_bytes = 4096
"#,
        token.display()
    );
    let (c, warnings) = load_src(&src).expect("loads");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(c.listen, "0.0.0.0:9000");
    assert_eq!(c.public_url, "https://ci.example.com");
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/hookci"));
    assert_eq!(c.pipelines_dir, PathBuf::from("/etc/hookci/pipelines"));
    assert_eq!(c.max_parallel_builds, 3);
    assert_eq!(c.max_queued_builds, 50);
    assert_eq!(c.max_body_bytes, 1024);
    assert_eq!(c.admin_token.unwrap().expose(), "from-a-file");
    assert_eq!(c.run_as.as_deref(), Some("nobody"));
    assert_eq!(c.keep_builds, 7);
    assert_eq!(c.shutdown_grace, Duration::from_secs(60));
    assert!(c.private);
    assert_eq!(c.max_connections, 10);
    assert_eq!(c.header_timeout, Duration::from_secs(5));
    assert_eq!(c.request_timeout, Duration::from_secs(120));
    assert_eq!(c.max_log_bytes, 4096);
}

#[test]
fn the_example_config_loads_as_shipped_and_with_every_key_uncommented() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("hookci.example.toml");
    let (_, warnings) = load_file(&example).expect("the example loads as shipped");
    assert!(warnings.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t").unwrap();
    let store_url = dir.path().join("store-url");
    std::fs::write(&store_url, "postgres://hookci@db.example/hookci\n").unwrap();
    let text = std::fs::read_to_string(&example).unwrap();
    let mut keys = Vec::new();
    let uncommented: String = text
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(kv)
                if kv.split_once(" = ").is_some_and(|(k, _)| {
                    k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                }) =>
            {
                let key = kv.split_once(" = ").unwrap().0;
                keys.push(key.to_owned());
                if key == "admin_token" {
                    format!("admin_token = {{ file = \"{}\" }}\n", token.display())
                } else if key == "store" {
                    // The URL is a secret: from a file, as a deployment would.
                    format!("store = {{ file = \"{}\" }}\n", store_url.display())
                } else if key == "run_as" {
                    // run_as must name a user that exists on this box.
                    "run_as = \"nobody\"\n".to_owned()
                } else {
                    format!("{kv}\n")
                }
            }
            _ => format!("{line}\n"),
        })
        .collect();
    let spec_keys = [
        "listen",
        "public_url",
        "data_dir",
        "pipelines_dir",
        "max_parallel_builds",
        "max_queued_builds",
        "max_body_bytes",
        "admin_token",
        "run_as",
        "keep_builds",
        "shutdown_grace",
    ];
    for k in spec_keys {
        assert!(keys.iter().any(|x| x == k), "the example lacks {k}");
    }
    let (c, warnings) = load_src(&uncommented).expect("every example value is valid");
    assert!(warnings.is_empty(), "{warnings:?}");
    let d = Config::default();
    assert_eq!(c.listen, d.listen);
    assert_eq!(c.public_url, d.public_url);
    assert_eq!(c.max_queued_builds, d.max_queued_builds);
    assert_eq!(c.max_body_bytes, d.max_body_bytes);
    assert_eq!(c.keep_builds, d.keep_builds);
    assert_eq!(c.shutdown_grace, d.shutdown_grace);
    assert_eq!(c.max_connections, d.max_connections);
    assert_eq!(c.header_timeout, d.header_timeout);
    assert_eq!(c.request_timeout, d.request_timeout);
    assert_eq!(c.max_log_bytes, d.max_log_bytes);
}

#[test]
fn bad_config_values_are_reported_with_line_column_and_one_sentence() {
    let rows: &[(&str, String, &str)] = &[
        (
            "an unknown key",
            "listn = \"x\"\n".to_owned(),
            "hookci.toml:1:1: unknown key \"listn\" in the server config; expected one of listen, public_url, data_dir, pipelines_dir, max_parallel_builds, max_queued_builds, max_body_bytes, admin_token, run_as, keep_builds, shutdown_grace, private, max_connections, header_timeout, request_timeout, max_log_bytes, max_body_bytes_in_flight, reserved_hook_connections, max_log_streams, max_log_streams_per_client, log_stream_lifetime, sandbox, limits, store, node, role, labels, lease; did you mean \"listen\"?",
        ),
        (
            "a listen address without a port",
            "listen = \"127.0.0.1\"\n".to_owned(),
            "hookci.toml:1:10: listen \"127.0.0.1\" is not a socket address; write e.g. \"127.0.0.1:8787\" or \"[::]:8787\"",
        ),
        (
            "a public_url without a scheme",
            "\npublic_url = \"ci.example.com\"\n".to_owned(),
            "hookci.toml:2:14: public_url must start with http:// or https:// and name a host",
        ),
        (
            "negative parallel builds",
            "max_parallel_builds = -1\n".to_owned(),
            "hookci.toml:1:23: max_parallel_builds must not be negative",
        ),
        (
            "a negative keep_builds",
            "keep_builds = -1\n".to_owned(),
            "hookci.toml:1:15: keep_builds must be greater than zero",
        ),
        (
            "a number too large for its type",
            "keep_builds = 99999999999\n".to_owned(),
            "hookci.toml:1:15: keep_builds is too large",
        ),
        (
            "a bad duration",
            "shutdown_grace = \"30 seconds please\"\n".to_owned(),
            "hookci.toml:1:18: shutdown_grace \"30 seconds please\" is not a duration; write e.g. \"30s\", \"30m\" or \"1h30m\"",
        ),
        (
            "a lease too short to renew",
            "lease = \"1s\"\n".to_owned(),
            "hookci.toml:1:9: lease must be between 2s and 1h",
        ),
        (
            "a zero request timeout",
            "request_timeout = \"0s\"\n".to_owned(),
            "hookci.toml:1:19: request_timeout must be longer than zero",
        ),
        (
            "a wrong type",
            "max_body_bytes = \"25MiB\"\n".to_owned(),
            "hookci.toml:1:18: wrong type for \"max_body_bytes\": expected an integer, found a string",
        ),
        (
            "an unset admin token variable",
            format!("admin_token = {{ env = \"{UNSET_VAR}\" }}\n"),
            "hookci.toml:1:15: admin_token: environment variable HOOKCI_CONFIG_TEST_NEVER_SET is not set",
        ),
        (
            "an empty run_as",
            "run_as = \"\"\n".to_owned(),
            "hookci.toml:1:10: run_as is empty; name a user or remove the key",
        ),
        (
            "a syntax error",
            "listen = \n".to_owned(),
            "hookci.toml:1:10: string values must be quoted, expected literal string",
        ),
    ];
    let mut failures = Vec::new();
    for (what, src, want) in rows {
        match load_src(src) {
            Ok(_) => failures.push(format!("{what}: loaded, expected {want}")),
            Err(got) if got == *want => {}
            Err(got) => failures.push(format!("{what}:\n  want {want}\n  got  {got}")),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn a_literal_admin_token_loads_with_a_warning_that_hides_it() {
    let (c, warnings) = load_src(&format!("admin_token = \"{LITERAL_TOKEN}\"\n")).expect("loads");
    assert_eq!(
        warnings,
        [
            "hookci.toml:1:15: admin_token is a literal secret in the file; prefer { env = ... } or { file = ... }"
        ]
    );
    assert_eq!(c.admin_token.as_ref().unwrap().expose(), LITERAL_TOKEN);
    assert!(!format!("{c:?}").contains(LITERAL_TOKEN));
    let err = load_src(&format!("admin_token = \"{LITERAL_TOKEN}\"\nlisten = 1\n")).unwrap_err();
    assert!(!err.contains(LITERAL_TOKEN), "{err}");
}

#[test]
fn an_explicitly_named_config_that_does_not_exist_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let err = load(Some(&missing)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: the config file does not exist", missing.display())
    );
}
