//! The server config (`hookci.toml`): raw TOML validated into [`Config`].
//!
//! Every key is optional; the defaults serve `./pipelines` with the store in
//! `./data`. Lookup order: `--config F`, `$HOOKCI_CONFIG`, `./hookci.toml`,
//! built-in defaults.

mod raw;

use crate::pipeline::{Checker, Finding};
use crate::secret::{Secret, SecretUse};
use raw::RawConfig;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// The validated server config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from; `None` for the built-in defaults.
    pub source: Option<PathBuf>,
    /// The address to listen on (ignored when systemd passes a socket).
    pub listen: String,
    /// The base of links sent to Git hosts, without a trailing slash.
    pub public_url: String,
    /// Store, logs, mirrors and workspaces live here.
    pub data_dir: PathBuf,
    /// Where `NAME.toml` pipeline files are read from.
    pub pipelines_dir: PathBuf,
    /// How many builds run at once.
    pub max_parallel_builds: usize,
    /// Past this many queued builds, deliveries get 503.
    pub max_queued_builds: u64,
    /// The largest webhook body accepted.
    pub max_body_bytes: u64,
    /// Needed by mutating API calls; `None` refuses them.
    pub admin_token: Option<Secret>,
    /// When root, steps run as this user.
    pub run_as: Option<String>,
    /// Builds kept per pipeline.
    pub keep_builds: u32,
    /// How long running builds may finish on SIGTERM.
    pub shutdown_grace: Duration,
    /// Reads of the API and pages need the admin token too.
    pub private: bool,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// How long a client may take to send its request headers.
    pub header_timeout: Duration,
    /// How long a whole request may take, body included.
    pub request_timeout: Duration,
    /// The largest log kept per build.
    pub max_log_bytes: u64,
    /// Bytes of request bodies held at once, all clients together (one
    /// client may hold half); past it, 503 with Retry-After.
    pub max_body_bytes_in_flight: u64,
    /// Connection slots, beyond `max_connections`, that only `/hooks` may use.
    pub reserved_hook_connections: usize,
    /// Live log streams open at once, all clients together.
    pub max_log_streams: usize,
    /// Live log streams one client (IP address) may hold open.
    pub max_log_streams_per_client: usize,
    /// How long one live log stream may stay open.
    pub log_stream_lifetime: Duration,
    /// `[sandbox]`: the defaults every pipeline starts from.
    pub sandbox: crate::pipeline::sandbox::SandboxKeys,
    /// `[limits]`: the defaults every pipeline starts from.
    pub limits: crate::pipeline::sandbox::LimitKeys,
    /// Every file a `{ file = ... }` secret of this config is read from.
    pub secret_files: Vec<PathBuf>,
    /// `store`: a PostgreSQL URL shared by every process of an
    /// installation (SPEC 11); `None` is the embedded SQLite store in
    /// `data_dir`. A secret: it may carry a password.
    pub store: Option<Secret>,
    /// `node`: this process's name, recorded on the builds it claims;
    /// default: the host name.
    pub node: String,
    /// `role`: what this process does (`serve --role` overrides it).
    pub role: Role,
    /// `labels`: what this runner offers; a pipeline's `runs_on` builds
    /// only where every label it names is offered.
    pub labels: Vec<String>,
    /// `lease`: on a shared store, how long a runner's claim on a build
    /// lasts without a renewal (renewed every third of it); a build whose
    /// lease runs out goes back to the queue.
    pub lease: Duration,
}

/// What a `hookci serve` process does (SPEC 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Role {
    /// Everything: one box.
    #[default]
    All,
    /// Webhooks, the API, the pages and the status reports; runs no build.
    Receiver,
    /// Claims and runs builds; serves no HTTP.
    Runner,
}

impl Role {
    /// The name `role` and `--role` take.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Receiver => "receiver",
            Role::Runner => "runner",
        }
    }

    /// Why this role cannot run on `config`'s store, if it cannot: a
    /// receiver or a runner shares its queue with other processes, which
    /// the embedded SQLite store cannot.
    pub fn refused(self, config: &Config) -> Option<String> {
        (self != Role::All && config.store.is_none()).then(|| {
            format!(
                "role \"{}\" needs store = a PostgreSQL URL that every process of the installation shares; the embedded SQLite store serves one process (role \"all\")",
                self.as_str()
            )
        })
    }

    /// Serves HTTP: webhooks, the API, the pages.
    pub fn receives(self) -> bool {
        self != Role::Runner
    }

    /// Claims and runs builds.
    pub fn runs(self) -> bool {
        self != Role::Receiver
    }
}

const ROLES: &[(&str, Role)] = &[
    ("all", Role::All),
    ("receiver", Role::Receiver),
    ("runner", Role::Runner),
];

/// The host name, the default `node`.
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "hookci".to_owned())
}

impl Default for Config {
    fn default() -> Self {
        Config {
            source: None,
            listen: "127.0.0.1:8787".to_owned(),
            public_url: "http://127.0.0.1:8787".to_owned(),
            data_dir: PathBuf::from("data"),
            pipelines_dir: PathBuf::from("pipelines"),
            max_parallel_builds: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_queued_builds: 10_000,
            max_body_bytes: 25 * 1024 * 1024,
            admin_token: None,
            run_as: None,
            keep_builds: 500,
            shutdown_grace: Duration::from_secs(30),
            private: false,
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_log_bytes: 64 * 1024 * 1024,
            max_body_bytes_in_flight: 64 * 1024 * 1024,
            reserved_hook_connections: 64,
            max_log_streams: 256,
            max_log_streams_per_client: 16,
            log_stream_lifetime: Duration::from_secs(3600),
            sandbox: crate::pipeline::sandbox::SandboxKeys::default(),
            limits: crate::pipeline::sandbox::LimitKeys::default(),
            secret_files: Vec::new(),
            store: None,
            node: host_name(),
            role: Role::All,
            labels: Vec::new(),
            lease: crate::store::DEFAULT_LEASE,
        }
    }
}

/// Finds and loads the config: `explicit`, else `$HOOKCI_CONFIG`, else
/// `./hookci.toml` if present, else the defaults. Relative paths in a file
/// (and the default `data` and `pipelines`) are taken relative to the
/// file's own directory, so `check` and `serve` see the same files from any
/// working directory. A file named by
/// `explicit` or `$HOOKCI_CONFIG` must exist.
pub fn load(explicit: Option<&Path>) -> Result<(Config, Vec<Finding>), Finding> {
    let env = std::env::var_os("HOOKCI_CONFIG");
    match locate(explicit, env.as_deref(), Path::new("hookci.toml")) {
        Some(path) => load_file(&path),
        None => Ok((Config::default(), Vec::new())),
    }
}

/// Which file the lookup order picks: `explicit`, else `env` (the value of
/// `$HOOKCI_CONFIG`, ignored when empty), else `fallback` if it exists, else
/// none (the built-in defaults).
pub fn locate(explicit: Option<&Path>, env: Option<&OsStr>, fallback: &Path) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = env.filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    fallback.is_file().then(|| fallback.to_path_buf())
}

/// Loads and validates one config file. The error is the first problem
/// found, as `file:line:col: sentence`; warnings are returned beside the
/// config.
pub fn load_file(path: &Path) -> Result<(Config, Vec<Finding>), Finding> {
    load_file_all(path).map_err(|mut errors| errors.remove(0))
}

/// Like [`load`], with every error of the file, sorted by line (for
/// `hookci check`).
pub fn load_all(explicit: Option<&Path>) -> Result<(Config, Vec<Finding>), Vec<Finding>> {
    let env = std::env::var_os("HOOKCI_CONFIG");
    match locate(explicit, env.as_deref(), Path::new("hookci.toml")) {
        Some(path) => load_file_all(&path),
        None => Ok((Config::default(), Vec::new())),
    }
}

/// Loads and validates one config file; on failure, every error found
/// (never an empty list), sorted by line.
pub fn load_file_all(path: &Path) -> Result<(Config, Vec<Finding>), Vec<Finding>> {
    let src = std::fs::read_to_string(path).map_err(|e| {
        vec![Finding {
            file: path.to_path_buf(),
            position: None,
            message: if e.kind() == std::io::ErrorKind::NotFound {
                "the config file does not exist".to_owned()
            } else {
                format!("cannot read the config file: {}", e.kind())
            },
        }]
    })?;
    let mut c = Checker::new(path, &src);
    let Some(raw) = c.parse_all::<RawConfig>(raw::TABLES) else {
        return Err(c.sorted_errors());
    };
    let mut config = convert(&mut c, raw);
    config.data_dir = c.resolve_path(&config.data_dir);
    config.pipelines_dir = c.resolve_path(&config.pipelines_dir);
    if !c.errors.is_empty() {
        return Err(c.sorted_errors());
    }
    Ok((
        Config {
            source: Some(path.to_path_buf()),
            ..config
        },
        c.warnings,
    ))
}

fn convert(c: &mut Checker<'_>, raw: RawConfig) -> Config {
    let mut config = Config::default();
    if let Some(v) = &raw.listen {
        if v.get_ref().parse::<SocketAddr>().is_ok() {
            config.listen = v.get_ref().clone();
        } else {
            c.error(
                Some(&v.span()),
                format!(
                    "listen \"{}\" is not a socket address; write e.g. \"127.0.0.1:8787\" or \"[::]:8787\"",
                    v.get_ref()
                ),
            );
        }
    }
    // Without public_url, links and the client commands go to this
    // daemon's own address.
    config.public_url = format!("http://{}", config.listen);
    if let Some(url) = raw
        .public_url
        .as_ref()
        .and_then(|v| c.http_url("public_url", v))
    {
        config.public_url = url;
    }
    if let Some(p) = path(c, "data_dir", raw.data_dir.as_ref()) {
        config.data_dir = p;
    }
    if let Some(p) = path(c, "pipelines_dir", raw.pipelines_dir.as_ref()) {
        config.pipelines_dir = p;
    }
    // 0 is allowed: this daemon receives and queues, and runs no builds.
    if let Some(n) = non_negative(c, "max_parallel_builds", raw.max_parallel_builds.as_ref()) {
        config.max_parallel_builds = n;
    }
    if let Some(n) = positive(c, "max_queued_builds", raw.max_queued_builds.as_ref()) {
        config.max_queued_builds = n;
    }
    if let Some(n) = positive(c, "max_body_bytes", raw.max_body_bytes.as_ref()) {
        config.max_body_bytes = n;
    }
    if let Some(v) = &raw.run_as {
        let user = v.get_ref().trim();
        if user.is_empty() {
            c.error(
                Some(&v.span()),
                "run_as is empty; name a user or remove the key",
            );
        } else {
            // Steps must not silently run as the daemon's own user because
            // of a typo: a user that does not exist is an error.
            match nix::unistd::User::from_name(user) {
                Ok(Some(_)) => {}
                Ok(None) => c.error(
                    Some(&v.span()),
                    format!("the run_as user {user} does not exist"),
                ),
                Err(e) => c.error(
                    Some(&v.span()),
                    format!("cannot look up the run_as user {user}: {}", e.desc()),
                ),
            }
            config.run_as = Some(user.to_owned());
        }
    }
    if let Some(n) = positive(c, "keep_builds", raw.keep_builds.as_ref()) {
        config.keep_builds = n;
    }
    // A zero grace is meaningful: stop running builds at once on SIGTERM.
    if let Some(d) = raw
        .shutdown_grace
        .as_ref()
        .and_then(|v| c.duration("shutdown_grace", v, true))
    {
        config.shutdown_grace = d;
    }
    if let Some(p) = raw.private {
        config.private = p;
    }
    if let Some(n) = positive(c, "max_connections", raw.max_connections.as_ref()) {
        config.max_connections = n;
    }
    if let Some(d) = raw
        .header_timeout
        .as_ref()
        .and_then(|v| c.duration("header_timeout", v, false))
    {
        config.header_timeout = d;
    }
    if let Some(d) = raw
        .request_timeout
        .as_ref()
        .and_then(|v| c.duration("request_timeout", v, false))
    {
        config.request_timeout = d;
    }
    if let Some(n) = positive(c, "max_log_bytes", raw.max_log_bytes.as_ref()) {
        config.max_log_bytes = n;
    }
    convert_limits(c, &raw, &mut config);
    convert_cluster(c, &raw, &mut config);
    // After `role`: which secrets are read depends on it.
    config.admin_token = raw
        .admin_token
        .as_ref()
        .and_then(|s| c.secret("admin_token", SecretUse::Admin, s));
    config.sandbox = crate::pipeline::sandbox::sandbox(c, raw.sandbox.as_ref());
    config.limits = crate::pipeline::sandbox::limits(c, raw.limits.as_ref());
    config.secret_files.clone_from(&c.secret_files);
    config
}

/// `store` and `node`: several processes on one PostgreSQL (SPEC 11).
fn convert_cluster(c: &mut Checker<'_>, raw: &RawConfig, config: &mut Config) {
    if let Some(v) = &raw.store {
        if let Some(url) = c.secret("store", SecretUse::Store, v) {
            // The value is a secret: the error never repeats it.
            let scheme_ok = ["postgres://", "postgresql://"]
                .iter()
                .any(|s| url.expose().starts_with(s));
            if scheme_ok || crate::pipeline::secrets_skipped() {
                config.store = Some(url);
            } else {
                c.error(
                    Some(&v.span()),
                    "store is not a PostgreSQL URL; write postgres://user@host/database, or remove the key for the embedded SQLite store",
                );
            }
        }
    }
    if let Some(v) = &raw.role {
        if let Some(role) = c.one_of("role", v, ROLES) {
            config.role = role;
            if let Some(why) = role.refused(config) {
                if raw.store.is_none() {
                    c.error(Some(&v.span()), why);
                }
            }
        }
    }
    // `serve` and `check` without `--role` read the secrets of this role.
    crate::pipeline::settle_secret_role(config.role);
    if let Some(v) = &raw.lease {
        if let Some(d) = c.duration("lease", v, false) {
            if d < Duration::from_secs(2) || d > Duration::from_secs(3600) {
                c.error(Some(&v.span()), "lease must be between 2s and 1h");
            } else {
                config.lease = d;
            }
        }
    }
    if let Some(list) = &raw.labels {
        for label in list.get_ref() {
            let name = label.get_ref().trim();
            if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
                c.error(
                    Some(&label.span()),
                    "a label must be a name of 1 to 100 printable characters",
                );
            } else {
                config.labels.push(name.to_owned());
            }
        }
    }
    if let Some(v) = &raw.node {
        let name = v.get_ref().trim();
        if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
            c.error(
                Some(&v.span()),
                "node must be a name of 1 to 200 printable characters",
            );
        } else {
            config.node = name.to_owned();
        }
    }
}

/// The keys that bound what clients may hold (bodies, connections, streams).
fn convert_limits(c: &mut Checker<'_>, raw: &RawConfig, config: &mut Config) {
    if let Some(n) = positive(
        c,
        "max_body_bytes_in_flight",
        raw.max_body_bytes_in_flight.as_ref(),
    ) {
        config.max_body_bytes_in_flight = n;
    }
    // 0 is allowed: no slots kept for webhooks.
    if let Some(n) = non_negative(
        c,
        "reserved_hook_connections",
        raw.reserved_hook_connections.as_ref(),
    ) {
        config.reserved_hook_connections = n;
    }
    if let Some(n) = positive(c, "max_log_streams", raw.max_log_streams.as_ref()) {
        config.max_log_streams = n;
    }
    if let Some(n) = positive(
        c,
        "max_log_streams_per_client",
        raw.max_log_streams_per_client.as_ref(),
    ) {
        config.max_log_streams_per_client = n;
    }
    if let Some(d) = raw
        .log_stream_lifetime
        .as_ref()
        .and_then(|v| c.duration("log_stream_lifetime", v, false))
    {
        config.log_stream_lifetime = d;
    }
}

/// A count that must be above zero and fit its type.
fn positive<T: TryFrom<i64>>(
    c: &mut Checker<'_>,
    key: &str,
    v: Option<&Spanned<i64>>,
) -> Option<T> {
    count(c, key, v, 1, "must be greater than zero")
}

/// A count that may be zero and must fit its type.
fn non_negative<T: TryFrom<i64>>(
    c: &mut Checker<'_>,
    key: &str,
    v: Option<&Spanned<i64>>,
) -> Option<T> {
    count(c, key, v, 0, "must not be negative")
}

fn count<T: TryFrom<i64>>(
    c: &mut Checker<'_>,
    key: &str,
    v: Option<&Spanned<i64>>,
    min: i64,
    below_min: &str,
) -> Option<T> {
    let v = v?;
    let n = *v.get_ref();
    if n < min {
        c.error(Some(&v.span()), format!("{key} {below_min}"));
        return None;
    }
    match T::try_from(n) {
        Ok(t) => Some(t),
        Err(_) => {
            c.error(Some(&v.span()), format!("{key} is too large"));
            None
        }
    }
}

fn path(c: &mut Checker<'_>, key: &str, v: Option<&Spanned<String>>) -> Option<PathBuf> {
    let v = v?;
    if v.get_ref().trim().is_empty() {
        c.error(
            Some(&v.span()),
            format!("{key} is empty; name a directory or remove the key"),
        );
        return None;
    }
    Some(PathBuf::from(v.get_ref()))
}

#[cfg(test)]
mod tests {
    use super::locate;
    use std::ffi::OsStr;
    use std::path::{Path, PathBuf};

    #[test]
    fn the_lookup_prefers_the_flag_then_the_variable_then_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let present = dir.path().join("hookci.toml");
        std::fs::write(&present, "").unwrap();
        let absent = dir.path().join("absent.toml");
        let flag = Path::new("flag.toml");
        let env = OsStr::new("env.toml");
        assert_eq!(
            locate(Some(flag), Some(env), &present),
            Some(PathBuf::from("flag.toml"))
        );
        assert_eq!(
            locate(None, Some(env), &present),
            Some(PathBuf::from("env.toml"))
        );
        assert_eq!(
            locate(None, Some(OsStr::new("")), &present),
            Some(present.clone())
        );
        assert_eq!(locate(None, None, &present), Some(present.clone()));
        assert_eq!(locate(None, None, &absent), None);
    }
}
