//! Secret values: webhook secrets, tokens, keys.
//!
//! A [`Secret`] never prints its value: `Debug` and `Display` show `***`.
//! Its source in a TOML file is `{ env = "NAME" }`, `{ file = "/path" }`,
//! `{ credential = "NAME" }` (systemd's `LoadCredential=`, read from
//! `$CREDENTIALS_DIRECTORY`) or a literal string; [`SecretSource`] is that raw form, resolved once at load.

use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;

/// A secret value. Compared only through [`Secret::expose`] by code that
/// needs the bytes (HMAC keys, constant-time token checks).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value that must never be printed.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret's bytes, for the few places that must use them.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a secret comes from, as written in a TOML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SecretSource {
    /// `{ env = "NAME" }`: read from the daemon's environment at load.
    Env {
        /// The variable's name.
        env: String,
    },
    /// `{ file = "/path" }`: the file's contents, trailing newline trimmed.
    File {
        /// The file's path.
        file: PathBuf,
    },
    /// `{ credential = "NAME" }`: `$CREDENTIALS_DIRECTORY/NAME`, the file
    /// systemd's `LoadCredential=NAME:...` gives the service.
    Credential {
        /// The credential's name.
        credential: String,
    },
    /// A literal string in the file (accepted; `check` warns).
    Literal(String),
}

/// What a secret is for, which decides which roles read it (SPEC §11):
/// a receiver reads the webhook secrets, the admin token and the status
/// tokens; a runner the clone credentials and the step secrets; every
/// process the store's URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretUse {
    /// `store`: every process.
    Store,
    /// A pipeline's `secret`: verifies deliveries.
    Webhook,
    /// `admin_token`: the API's writes.
    Admin,
    /// `[status] token` and `secret`: sending status reports.
    Status,
    /// `[clone] token` and `ssh_key`: fetching.
    Clone,
    /// `[secrets]`: the steps' environment.
    Step,
}

impl SecretUse {
    /// What a receiver that cannot read such a secret does without it
    /// (only clone credentials and step secrets are optional there).
    pub fn without_it(self) -> &'static str {
        match self {
            SecretUse::Clone => {
                "this receiver starts without it, and a manual trigger of the pipeline here fetches without it"
            }
            SecretUse::Step => {
                "this receiver starts without it, and its log views mask only what the runner masked"
            }
            _ => "it is needed",
        }
    }
}

/// Why a secret could not be resolved. Names the source, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The environment variable is unset or empty.
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    /// The file could not be read.
    #[error("cannot read secret file {path}: {reason}")]
    File {
        /// The file's path.
        path: PathBuf,
        /// The I/O error's kind, in words.
        reason: String,
    },
    /// `$CREDENTIALS_DIRECTORY` is not set: not started by systemd with
    /// `LoadCredential=`.
    #[error(
        "credential {0}: $CREDENTIALS_DIRECTORY is not set; give it with LoadCredential={0}:/path in the unit"
    )]
    NoCredentials(String),
    /// The credential's name is not a plain file name.
    #[error("credential name {0:?} must be a plain name, without / or ..")]
    CredentialName(String),
    /// The resolved value is empty.
    #[error("the secret is empty")]
    Empty,
}

impl SecretSource {
    /// True for a literal string written in the file.
    pub fn is_literal(&self) -> bool {
        matches!(self, SecretSource::Literal(_))
    }

    /// A credential's name must be a plain file name.
    pub fn check_credential_name(credential: &str) -> Result<(), SecretError> {
        if credential.is_empty()
            || credential.contains('/')
            || credential == "."
            || credential == ".."
        {
            return Err(SecretError::CredentialName(credential.to_owned()));
        }
        Ok(())
    }

    /// Reads the secret's value from its source.
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        let value = match self {
            SecretSource::Env { env } => match std::env::var(env) {
                Ok(v) if !v.is_empty() => v,
                _ => return Err(SecretError::EnvMissing(env.clone())),
            },
            SecretSource::File { file } => {
                let mut s = std::fs::read_to_string(file).map_err(|e| SecretError::File {
                    path: file.clone(),
                    reason: e.kind().to_string(),
                })?;
                while s.ends_with('\n') || s.ends_with('\r') {
                    s.pop();
                }
                s
            }
            SecretSource::Credential { credential } => {
                SecretSource::check_credential_name(credential)?;
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
                    .filter(|d| !d.is_empty())
                    .ok_or_else(|| SecretError::NoCredentials(credential.clone()))?;
                let path = PathBuf::from(dir).join(credential);
                return SecretSource::File { file: path }.resolve();
            }
            SecretSource::Literal(s) => s.clone(),
        };
        if value.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Secret(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), "***");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn a_file_secret_loses_its_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "abc\n").unwrap();
        let s = SecretSource::File { file: p }.resolve().unwrap();
        assert_eq!(s.expose(), "abc");
    }
}
