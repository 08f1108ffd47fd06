//! ssh host keys checked against OpenSSH's `known_hosts` files.
//!
//! libssh2 does not read `known_hosts` for libgit2, so hookci does: a host
//! listed there with a key of the type the server presents must present
//! exactly that key, or the connection is refused (a man in the middle, or
//! a re-keyed server someone must confirm). A host not listed is refused,
//! as OpenSSH in batch mode refuses it, unless the pipeline sets
//! `accept_new_host_keys = true` in `[clone]`: then its key is pinned on
//! first use into hookci's own `known_hosts` (`data_dir/known_hosts`),
//! which is read with the others. Lines follow sshd(8)'s format:
//! comma-separated patterns with `*`, `?` and `!`, `[host]:port` for other
//! ports, hashed names (`|1|salt|hash`), and the `@revoked` marker
//! (`@cert-authority` lines are skipped: libgit2 shows no certificates).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use std::path::{Path, PathBuf};

/// What `known_hosts` says of a presented host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// A line lists this host with exactly this key.
    Known,
    /// No line lists this host with a key of this type.
    Unknown,
    /// A line lists this host with another key of the same type.
    Changed { file: PathBuf, line: usize },
    /// A `@revoked` line lists this key.
    Revoked { file: PathBuf, line: usize },
}

/// The `known_hosts` files to read, in order, and hookci's own.
#[derive(Debug, Clone)]
pub struct KnownHosts {
    files: Vec<PathBuf>,
    /// hookci's own file (`data_dir/known_hosts`): read last, and where
    /// keys accepted on first use are pinned.
    own: Option<PathBuf>,
}

impl Default for KnownHosts {
    /// The daemon user's `~/.ssh/known_hosts`, then the system's
    /// `/etc/ssh/ssh_known_hosts`, as ssh(1) reads them.
    fn default() -> Self {
        let mut files = Vec::new();
        if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            files.push(Path::new(&home).join(".ssh/known_hosts"));
        }
        files.push(PathBuf::from("/etc/ssh/ssh_known_hosts"));
        KnownHosts { files, own: None }
    }
}

impl KnownHosts {
    /// These files instead of the default ones.
    pub fn from_files(files: Vec<PathBuf>) -> Self {
        KnownHosts { files, own: None }
    }

    /// The same files, with `own` as hookci's own file.
    pub fn with_own(mut self, own: PathBuf) -> Self {
        self.own = Some(own);
        self
    }

    /// hookci's own file, where keys are pinned.
    pub fn own(&self) -> Option<&Path> {
        self.own.as_deref()
    }

    /// Pins `key` for `host` and `port` into hookci's own file (created
    /// 0600), as `ssh-keyscan` writes a line. Returns the file.
    pub(super) fn pin(&self, host: &str, port: u16, key: &[u8]) -> std::io::Result<PathBuf> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let own = self.own.clone().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no known_hosts of hookci's own",
            )
        })?;
        let kind = key_type(key).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "an unreadable host key")
        })?;
        if let Some(dir) = own.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&own)?;
        writeln!(file, "{} {kind} {}", host_name(host, port), B64.encode(key))?;
        file.sync_data()?;
        Ok(own)
    }

    /// Checks `key` (the key blob in ssh wire format) presented by `host`
    /// on `port`. Files that do not exist or cannot be read say nothing.
    pub(super) fn check(&self, host: &str, port: u16, key: &[u8]) -> Verdict {
        let Some(kind) = key_type(key) else {
            return Verdict::Unknown;
        };
        let name = host_name(host, port);
        let mut verdict = Verdict::Unknown;
        for file in self.files.iter().chain(self.own.iter()) {
            let Ok(text) = std::fs::read_to_string(file) else {
                continue;
            };
            for (idx, line) in text.lines().enumerate() {
                let Some(entry) = Entry::parse(line) else {
                    continue;
                };
                if entry.cert_authority || entry.kind != kind || !entry.matches(&name) {
                    continue;
                }
                let same = B64.decode(entry.key).is_ok_and(|k| k == key);
                let at = || (file.clone(), idx + 1);
                match (entry.revoked, same) {
                    (true, true) => {
                        let (file, line) = at();
                        return Verdict::Revoked { file, line };
                    }
                    (true, false) => {}
                    (false, true) => verdict = Verdict::Known,
                    (false, false) => {
                        if verdict == Verdict::Unknown {
                            let (file, line) = at();
                            verdict = Verdict::Changed { file, line };
                        }
                    }
                }
            }
        }
        verdict
    }
}

/// `host`, or `[host]:port` for a port other than 22, as `known_hosts`
/// names it.
fn host_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_ascii_lowercase()
    } else {
        format!("[{}]:{port}", host.to_ascii_lowercase())
    }
}

/// One `known_hosts` line.
struct Entry<'a> {
    revoked: bool,
    cert_authority: bool,
    hosts: &'a str,
    kind: &'a str,
    key: &'a str,
}

impl<'a> Entry<'a> {
    fn parse(line: &'a str) -> Option<Entry<'a>> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let mut fields = line.split_whitespace();
        let mut first = fields.next()?;
        let (mut revoked, mut cert_authority) = (false, false);
        if let Some(marker) = first.strip_prefix('@') {
            match marker {
                "revoked" => revoked = true,
                "cert-authority" => cert_authority = true,
                _ => return None,
            }
            first = fields.next()?;
        }
        Some(Entry {
            revoked,
            cert_authority,
            hosts: first,
            kind: fields.next()?,
            key: fields.next()?,
        })
    }

    /// True when a pattern names `name` and no negated pattern does.
    fn matches(&self, name: &str) -> bool {
        let mut hit = false;
        for pattern in self.hosts.split(',') {
            if let Some(negated) = pattern.strip_prefix('!') {
                if pattern_matches(negated, name) {
                    return false;
                }
            } else if pattern_matches(pattern, name) {
                hit = true;
            }
        }
        hit
    }
}

fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("|1|") {
        Some(hashed) => hashed_matches(hashed, name),
        None => wildcard(pattern.to_ascii_lowercase().as_bytes(), name.as_bytes()),
    }
}

/// `salt|hash`: base64 HMAC-SHA1 of the name keyed with the salt.
fn hashed_matches(hashed: &str, name: &str) -> bool {
    let Some((salt, hash)) = hashed.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (B64.decode(salt), B64.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// `*` matches any run of characters, `?` any one.
fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The key type a wire-format key blob starts with (`ssh-ed25519`, ...).
fn key_type(blob: &[u8]) -> Option<&str> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    std::str::from_utf8(blob.get(4..4 + len)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(kind: &str, body: &[u8]) -> Vec<u8> {
        let mut b = (kind.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind.as_bytes());
        b.extend_from_slice(body);
        b
    }

    fn hosts(text: &str) -> (tempfile::TempDir, KnownHosts) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        std::fs::write(&file, text).unwrap();
        (dir, KnownHosts::from_files(vec![file]))
    }

    #[test]
    fn verdicts() {
        let good = blob("ssh-ed25519", b"good key");
        let bad = blob("ssh-ed25519", b"other key");
        let rsa = blob("ssh-rsa", b"rsa key");
        let salt = b"0123456789abcdef0123";
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(salt).unwrap();
        mac.update(b"[hashed.example]:2222");
        let hashed = format!(
            "|1|{}|{}",
            B64.encode(salt),
            B64.encode(mac.finalize().into_bytes())
        );
        let text = format!(
            "# comment\n\n\
             git.example,10.0.0.1 ssh-ed25519 {good}\n\
             [git.example]:2222 ssh-ed25519 {bad}\n\
             *.corp.example,!evil.corp.example ssh-ed25519 {good} a comment\n\
             {hashed} ssh-ed25519 {good}\n\
             @revoked * ssh-rsa {rsa}\n\
             @cert-authority * ssh-ed25519 {bad}\n\
             garbage\n",
            good = B64.encode(&good),
            bad = B64.encode(&bad),
            rsa = B64.encode(&rsa),
        );
        let (_dir, kh) = hosts(&text);
        assert_eq!(kh.check("git.example", 22, &good), Verdict::Known);
        assert_eq!(kh.check("GIT.example", 22, &good), Verdict::Known);
        assert_eq!(kh.check("10.0.0.1", 22, &good), Verdict::Known);
        assert!(matches!(
            kh.check("git.example", 22, &bad),
            Verdict::Changed { line: 3, .. }
        ));
        assert_eq!(kh.check("git.example", 2222, &bad), Verdict::Known);
        assert!(matches!(
            kh.check("git.example", 2222, &good),
            Verdict::Changed { line: 4, .. }
        ));
        assert_eq!(kh.check("a.corp.example", 22, &good), Verdict::Known);
        assert_eq!(kh.check("evil.corp.example", 22, &bad), Verdict::Unknown);
        assert_eq!(kh.check("hashed.example", 2222, &good), Verdict::Known);
        assert!(matches!(
            kh.check("hashed.example", 2222, &bad),
            Verdict::Changed { .. }
        ));
        assert_eq!(kh.check("elsewhere.example", 22, &bad), Verdict::Unknown);
        // Another key type than the listed one: not known, not changed.
        assert!(matches!(
            kh.check("anything.example", 22, &rsa),
            Verdict::Revoked { line: 7, .. }
        ));
        assert_eq!(
            kh.check("git.example", 22, &blob("ecdsa-sha2-nistp256", b"k")),
            Verdict::Unknown
        );
        assert_eq!(kh.check("git.example", 22, b"\0\0"), Verdict::Unknown);
    }

    #[test]
    fn a_missing_file_says_nothing() {
        let kh = KnownHosts::from_files(vec!["/nonexistent/known_hosts".into()]);
        assert_eq!(
            kh.check("git.example", 22, &blob("ssh-ed25519", b"k")),
            Verdict::Unknown
        );
    }

    #[test]
    fn wildcards() {
        assert!(wildcard(b"*", b"anything"));
        assert!(wildcard(b"*.example", b"a.b.example"));
        assert!(!wildcard(b"*.example", b"example"));
        assert!(wildcard(b"h?st", b"host"));
        assert!(!wildcard(b"h?st", b"hoost"));
        assert!(wildcard(b"a*b*c", b"aXXbYYc"));
        assert!(!wildcard(b"a*b*c", b"aXXbYY"));
    }
}
