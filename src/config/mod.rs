//! The server config (`hookci.toml`): raw TOML validated into [`Config`].
//!
//! Every key is optional; the defaults serve `./pipelines` with the store in
//! `./data`. Lookup order: `--config F`, `$HOOKCI_CONFIG`, `./hookci.toml`,
//! built-in defaults.

use crate::pipeline::Finding;
use crate::secret::Secret;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
        }
    }
}

/// Finds and loads the config: `explicit`, else `$HOOKCI_CONFIG`, else
/// `./hookci.toml` if present, else the defaults. Relative paths in a file
/// are taken relative to the process's working directory.
pub fn load(explicit: Option<&Path>) -> Result<(Config, Vec<Finding>), Finding> {
    let _ = explicit;
    Ok((Config::default(), Vec::new()))
}
