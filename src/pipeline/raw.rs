//! The pipeline file exactly as written: serde structs that mirror the TOML
//! of SPEC section 4, before any validation.
//!
//! Every table denies unknown keys. Values whose checks can fail after
//! parsing are `Spanned`, so their errors carry a line and column.

use crate::secret::SecretSource;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use toml::Spanned;

/// Which table each table's first key belongs to, for "unknown key" errors.
pub(crate) const TABLES: &[(&str, &str)] = &[
    ("repo", "at the top level"),
    ("ssh_key", "in [clone]"),
    ("branches", "in [[trigger]]"),
    ("provider", "in [status]"),
    ("run", "in [[steps]]"),
    ("enabled", "in [sandbox]"),
    ("memory", "in [limits]"),
    ("forks", "in [pull_requests]"),
];

/// A whole pipeline file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPipeline {
    pub repo: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub secret: Option<Spanned<RawSecret>>,
    pub insecure_no_signature: Option<Spanned<bool>>,
    #[serde(default)]
    pub allow_sha1: bool,
    pub clone_url: Option<Spanned<String>>,
    #[serde(default)]
    pub clone: RawClone,
    #[serde(default)]
    pub trigger: Vec<RawTrigger>,
    pub skip_ci: Option<bool>,
    pub concurrency: Option<Spanned<String>>,
    pub runs_on: Option<Spanned<Vec<Spanned<String>>>>,
    pub timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub env: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    pub secrets: BTreeMap<Spanned<String>, Spanned<RawSecret>>,
    #[serde(default)]
    pub status: RawStatus,
    pub steps: Option<Spanned<Vec<RawStep>>>,
    pub sandbox: Option<super::sandbox::RawSandbox>,
    pub limits: Option<super::sandbox::RawLimits>,
    pub pull_requests: Option<RawPullRequests>,
}

/// `[pull_requests]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPullRequests {
    pub forks: Option<Spanned<String>>,
    #[serde(default)]
    pub trusted_authors: Vec<Spanned<String>>,
    pub secrets_for_forks: Option<Spanned<bool>>,
}

/// `[clone]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClone {
    pub ssh_key: Option<Spanned<RawSecret>>,
    pub token: Option<Spanned<RawSecret>>,
    #[serde(default)]
    pub submodules: bool,
    #[serde(default)]
    pub accept_new_host_keys: bool,
}

/// One `[[trigger]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrigger {
    pub branches: Option<Spanned<Vec<Spanned<String>>>>,
    pub tags: Option<Spanned<Vec<Spanned<String>>>>,
    pub paths: Option<Spanned<Vec<Spanned<String>>>>,
    pub ignore_paths: Option<Spanned<Vec<Spanned<String>>>>,
    pub pull_requests: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `[status]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStatus {
    pub provider: Option<Spanned<String>>,
    pub api_url: Option<Spanned<String>>,
    pub token: Option<Spanned<RawSecret>>,
    pub context: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    pub secret: Option<Spanned<RawSecret>>,
}

/// One `[[steps]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStep {
    pub name: Spanned<String>,
    pub run: Spanned<String>,
    pub shell: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub env: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    pub allow_failure: bool,
}

/// A secret as written: `{ env = "NAME" }`, `{ file = "/path" }` or a
/// literal string. Read by hand rather than through [`SecretSource`]'s
/// untagged derive, so a stray key in the table is an error with a clear
/// sentence instead of being ignored.
#[derive(Debug)]
pub(crate) struct RawSecret(pub SecretSource);

impl<'de> Deserialize<'de> for RawSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SecretVisitor)
    }
}

struct SecretVisitor;

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = RawSecret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a string, { env = "NAME" }, { file = "/path" } or { credential = "NAME" }"#)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSecret, E> {
        Ok(RawSecret(SecretSource::Literal(v.to_owned())))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawSecret, A::Error> {
        let mut found: Option<SecretSource> = None;
        while let Some(key) = map.next_key::<String>()? {
            let source = match key.as_str() {
                "env" => SecretSource::Env {
                    env: map.next_value()?,
                },
                "file" => SecretSource::File {
                    file: map.next_value::<PathBuf>()?,
                },
                "credential" => SecretSource::Credential {
                    credential: map.next_value()?,
                },
                other => {
                    return Err(de::Error::custom(format!(
                        "unknown key \"{other}\" in a secret; expected env, file or credential"
                    )));
                }
            };
            if found.is_some() {
                return Err(de::Error::custom(
                    "a secret takes one of env, file or credential, not two",
                ));
            }
            found = Some(source);
        }
        found.map(RawSecret).ok_or_else(|| {
            de::Error::custom(
                r#"a secret table needs env = "NAME", file = "/path" or credential = "NAME""#,
            )
        })
    }
}
