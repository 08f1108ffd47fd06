//! `hookci.toml` exactly as written, before validation. Every key is
//! optional and unknown keys are errors.

use crate::pipeline::raw::RawSecret;
use serde::Deserialize;
use toml::Spanned;

/// The table named for "unknown key" errors.
pub(crate) const TABLES: &[(&str, &str)] = &[
    ("listen", "in the server config"),
    ("enabled", "in [sandbox]"),
    ("memory", "in [limits]"),
];

/// The whole server config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub listen: Option<Spanned<String>>,
    pub public_url: Option<Spanned<String>>,
    pub data_dir: Option<Spanned<String>>,
    pub pipelines_dir: Option<Spanned<String>>,
    pub max_parallel_builds: Option<Spanned<i64>>,
    pub max_queued_builds: Option<Spanned<i64>>,
    pub max_body_bytes: Option<Spanned<i64>>,
    pub admin_token: Option<Spanned<RawSecret>>,
    pub run_as: Option<Spanned<String>>,
    pub keep_builds: Option<Spanned<i64>>,
    pub shutdown_grace: Option<Spanned<String>>,
    pub private: Option<bool>,
    pub max_connections: Option<Spanned<i64>>,
    pub header_timeout: Option<Spanned<String>>,
    pub request_timeout: Option<Spanned<String>>,
    pub max_log_bytes: Option<Spanned<i64>>,
    pub max_body_bytes_in_flight: Option<Spanned<i64>>,
    pub reserved_hook_connections: Option<Spanned<i64>>,
    pub max_log_streams: Option<Spanned<i64>>,
    pub max_log_streams_per_client: Option<Spanned<i64>>,
    pub log_stream_lifetime: Option<Spanned<String>>,
    pub sandbox: Option<crate::pipeline::sandbox::RawSandbox>,
    pub limits: Option<crate::pipeline::sandbox::RawLimits>,
    pub store: Option<Spanned<RawSecret>>,
    pub node: Option<Spanned<String>>,
    pub role: Option<Spanned<String>>,
    pub labels: Option<Spanned<Vec<Spanned<String>>>>,
    pub lease: Option<Spanned<String>>,
}
