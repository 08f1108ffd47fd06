//! Credentials for libgit2 and the sentences its errors become.
//!
//! Credentials reach libgit2 only through the credential callback, and only
//! for the scheme, host and port of the configured clone URL. Every message
//! built from a libgit2 error is scrubbed of the token, the key and any URL
//! password.

use super::CheckoutError;
use super::known_hosts::{KnownHosts, Verdict};
use super::url::{RemoteUrl, Transport};
use crate::secret::Secret;
use git2::{CertificateCheckStatus, Cred, CredentialType, ErrorClass, ErrorCode, RemoteCallbacks};
use std::cell::{Cell, RefCell};

/// What happened in the credential callback, to explain a failed connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Asked {
    /// Not asked, or asked once and answered.
    #[default]
    Fine,
    /// Asked, but the pipeline has no credential of the kind the server takes.
    Missing,
    /// Asked again: the server refused what we gave.
    Rejected,
    /// Asked by another host (a submodule, a redirect): nothing given.
    OtherHost(String),
    /// The ssh host key is not the one `known_hosts` lists: the sentence.
    HostKey(String),
}

/// The credentials of one clone, and what the callback saw of one connection.
#[derive(Debug)]
pub(super) struct Auth<'s> {
    /// The URL whose origin (scheme, host, port) the credentials belong to.
    home: &'s RemoteUrl,
    /// The URL being fetched (the clone URL, or a submodule's).
    target: RemoteUrl,
    ssh_key: Option<&'s Secret>,
    token: Option<&'s Secret>,
    known_hosts: &'s KnownHosts,
    /// Pin the key of a host in no `known_hosts` file, rather than refuse it.
    accept_new: bool,
    attempts: Cell<u32>,
    asked: RefCell<Asked>,
}

impl<'s> Auth<'s> {
    pub(super) fn new(
        home: &'s RemoteUrl,
        target: RemoteUrl,
        ssh_key: Option<&'s Secret>,
        token: Option<&'s Secret>,
        known_hosts: &'s KnownHosts,
        accept_new: bool,
    ) -> Auth<'s> {
        Auth {
            home,
            target,
            ssh_key,
            token,
            known_hosts,
            accept_new,
            attempts: Cell::new(0),
            asked: RefCell::new(Asked::Fine),
        }
    }

    /// Callbacks for one connection: credentials, and host key acceptance.
    pub(super) fn callbacks(&self) -> RemoteCallbacks<'_> {
        self.attempts.set(0);
        self.asked.replace(Asked::Fine);
        let mut callbacks = RemoteCallbacks::new();
        callbacks.credentials(|url, user, allowed| self.credential(url, user, allowed));
        // ssh host keys are checked here against known_hosts (libssh2 does
        // not do it for libgit2); see `known_hosts`. TLS certificates are not
        // ours to judge: libgit2 verifies them against the system's roots
        // (passthrough).
        callbacks.certificate_check(|cert, host| {
            let Some(key) = cert.as_hostkey().and_then(|k| k.hostkey()) else {
                return Ok(CertificateCheckStatus::CertificatePassthrough);
            };
            let port = self.target.port().unwrap_or(22);
            let (file, line, what) = match self.known_hosts.check(host, port, key) {
                Verdict::Known => return Ok(CertificateCheckStatus::CertificateOk),
                Verdict::Unknown if self.accept_new => match self.known_hosts.pin(host, port, key) {
                    Ok(file) => {
                        tracing::info!(
                            host,
                            port,
                            file = %file.display(),
                            "an ssh host key seen for the first time is pinned (accept_new_host_keys)"
                        );
                        return Ok(CertificateCheckStatus::CertificateOk);
                    }
                    Err(e) => {
                        self.asked.replace(Asked::HostKey(format!(
                            "the ssh host key of {host} is in no known_hosts file and cannot be pinned ({e}): refusing to fetch {}",
                            self.target.display()
                        )));
                        return Err(git2::Error::new(
                            ErrorCode::Certificate,
                            ErrorClass::Ssh,
                            "host key verification failed",
                        ));
                    }
                },
                Verdict::Unknown => {
                    let own = self
                        .known_hosts
                        .own()
                        .map_or_else(|| "~/.ssh/known_hosts".to_owned(), |p| p.display().to_string());
                    let scan = if port == 22 {
                        format!("ssh-keyscan {host} >> {own}")
                    } else {
                        format!("ssh-keyscan -p {port} {host} >> {own}")
                    };
                    self.asked.replace(Asked::HostKey(format!(
                        "the ssh host key of {host} is in no known_hosts file: refusing to fetch {}; \
                         add the key with `{scan}` after checking it, or set \
                         accept_new_host_keys = true in [clone] to pin it on first use",
                        self.target.display()
                    )));
                    return Err(git2::Error::new(
                        ErrorCode::Certificate,
                        ErrorClass::Ssh,
                        "host key verification failed",
                    ));
                }
                Verdict::Changed { file, line } => (file, line, "is not the one listed"),
                Verdict::Revoked { file, line } => (file, line, "is revoked"),
            };
            self.asked.replace(Asked::HostKey(format!(
                "the ssh host key of {host} {what} in {}:{line}: refusing to fetch {} \
                 (if the server's key really changed, update known_hosts)",
                file.display(),
                self.target.display()
            )));
            Err(git2::Error::new(
                ErrorCode::Certificate,
                ErrorClass::Ssh,
                "host key verification failed",
            ))
        });
        callbacks
    }

    fn credential(
        &self,
        url: &str,
        user: Option<&str>,
        allowed: CredentialType,
    ) -> Result<Cred, git2::Error> {
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(user.unwrap_or("git"));
        }
        if !self.home.same_origin(url) {
            let other = RemoteUrl::parse(url);
            self.asked
                .replace(Asked::OtherHost(other.display().to_owned()));
            return Err(git2::Error::from_str("no credentials for this host"));
        }
        // libgit2 asks again after a refusal, forever: one retry is the end.
        let attempt = self.attempts.get() + 1;
        self.attempts.set(attempt);
        if attempt > 1 {
            self.asked.replace(Asked::Rejected);
            return Err(git2::Error::new(
                ErrorCode::Auth,
                ErrorClass::Callback,
                "the credentials were refused",
            ));
        }
        if allowed.contains(CredentialType::SSH_KEY)
            && let Some(key) = self.ssh_key
        {
            return Cred::ssh_key_from_memory(user.unwrap_or("git"), None, key.expose(), None);
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT)
            && let Some(token) = self.token
        {
            return Cred::userpass_plaintext(user.unwrap_or("x-access-token"), token.expose());
        }
        self.asked.replace(Asked::Missing);
        Err(git2::Error::new(
            ErrorCode::Auth,
            ErrorClass::Callback,
            "no credentials configured",
        ))
    }

    /// The pipeline key a user should look at for this URL.
    fn key_name(&self) -> &'static str {
        match self.home.transport() {
            Transport::Ssh => "[clone] ssh_key",
            Transport::Http | Transport::Local | Transport::Other => "[clone] token",
        }
    }

    /// True when the error came from the credentials, not the repository.
    pub(super) fn is_auth_failure(&self, err: &git2::Error) -> bool {
        *self.asked.borrow() != Asked::Fine || err.code() == ErrorCode::Auth
    }

    /// One sentence for a failed connection to [`Self::target`]; `doing`
    /// is the verb phrase ("fetching", "cloning submodule x from").
    pub(super) fn describe(&self, err: &git2::Error, doing: &str) -> CheckoutError {
        let url = self.target.display();
        let host = self.target.host().unwrap_or(url);
        let message = self.scrub(err.message());
        let lower = message.to_ascii_lowercase();
        let sentence = match &*self.asked.borrow() {
            Asked::Missing => {
                format!("{url} asks for credentials: set {}", self.key_name())
            }
            Asked::Rejected => {
                format!("authentication failed for {url}: check {}", self.key_name())
            }
            Asked::HostKey(sentence) => sentence.clone(),
            Asked::OtherHost(other) => format!(
                "{other} asks for credentials, but hookci sends {} only to {}",
                self.key_name(),
                self.home.origin().unwrap_or("the clone URL")
            ),
            Asked::Fine if err.code() == ErrorCode::Auth => {
                format!("authentication failed for {url}: check {}", self.key_name())
            }
            Asked::Fine if err.code() == ErrorCode::Certificate => {
                format!(
                    "the TLS certificate of {host} could not be verified ({message}): {url} was not fetched"
                )
            }
            Asked::Fine if is_not_found(&lower) || self.is_missing_path(&lower) => {
                format!(
                    "repository not found at {url}: check the clone URL and that {} can read it",
                    self.key_name()
                )
            }
            Asked::Fine if is_unreachable(err, &lower) => {
                format!("cannot reach {host} for {url}: {message}")
            }
            Asked::Fine => format!("{doing} {url} failed: {message}"),
        };
        CheckoutError::Failed(sentence)
    }

    /// libgit2 takes a path that does not exist for a URL it cannot parse.
    fn is_missing_path(&self, lower: &str) -> bool {
        self.target.transport() == Transport::Local && lower.contains("unsupported url protocol")
    }

    /// `text` with every credential value replaced by `***`.
    pub(super) fn scrub(&self, text: &str) -> String {
        let mut out = text.replace(self.home.raw(), self.home.display());
        out = out.replace(self.target.raw(), self.target.display());
        let mut secrets: Vec<&str> = Vec::new();
        if let Some(token) = self.token {
            secrets.push(token.expose());
        }
        if let Some(key) = self.ssh_key {
            secrets.extend(key.expose().lines().map(str::trim));
        }
        secrets.extend(self.home.password());
        secrets.extend(self.target.password());
        for secret in secrets {
            // Short fragments (a key's "-----" lines) are not secret and
            // would shred the message.
            if secret.len() >= 8 && !secret.starts_with("-----") {
                out = out.replace(secret, "***");
            }
        }
        out
    }
}

fn is_not_found(lower: &str) -> bool {
    [
        "404",
        "not found",
        "does not appear to be a git repository",
        "could not find repository",
        "no such file or directory",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
}

fn is_unreachable(err: &git2::Error, lower: &str) -> bool {
    matches!(
        err.class(),
        ErrorClass::Net | ErrorClass::Os | ErrorClass::Ssh | ErrorClass::Http | ErrorClass::Ssl
    ) && [
        "resolve",
        "connect",
        "refused",
        "timed out",
        "unreachable",
        "banner",
        "handshake",
        "session",
        "eof",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_the_token_the_url_password_and_key_lines() {
        let home = RemoteUrl::parse("https://u:urlpassword1@h.example/r.git");
        let token = Secret::new("tok_1234567890");
        let key = Secret::new("-----BEGIN KEY-----\nAAAABBBBCCCCDDDD\n-----END KEY-----");
        let known = KnownHosts::from_files(Vec::new());
        let auth = Auth::new(&home, home.clone(), Some(&key), Some(&token), &known, false);
        let text = "at https://u:urlpassword1@h.example/r.git: tok_1234567890 AAAABBBBCCCCDDDD urlpassword1";
        let out = auth.scrub(text);
        assert_eq!(out, "at https://h.example/r.git: *** *** ***");
    }
}
