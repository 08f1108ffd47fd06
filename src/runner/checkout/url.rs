//! Clone URLs: which transport and host they name, how to show them without
//! credentials, and the mirror directory each one gets.
//!
//! The raw URL (which may carry `user:password@`) is only ever handed to
//! libgit2 to connect; every name, log line and error uses [`RemoteUrl::display`].

use sha2::{Digest, Sha256};

/// How libgit2 will reach a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transport {
    /// `ssh://…` or scp-like `user@host:path`.
    Ssh,
    /// `http://…` or `https://…`.
    Http,
    /// A path on this machine or `file://…`.
    Local,
    /// Any other scheme (`git://`, …): no credentials apply.
    Other,
}

/// A clone URL, parsed just enough to name, show and authenticate it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RemoteUrl {
    raw: String,
    display: String,
    host: Option<String>,
    /// `scheme://host:port` with the default port filled in, for remote URLs.
    origin: Option<String>,
    transport: Transport,
}

impl RemoteUrl {
    /// Parses any URL or path git2 takes; never fails (an unknown shape is a
    /// local path, which libgit2 then judges).
    pub(super) fn parse(raw: &str) -> RemoteUrl {
        let raw = raw.trim().to_owned();
        if let Some((scheme, rest)) = raw.split_once("://") {
            let scheme_lower = scheme.to_ascii_lowercase();
            let transport = match scheme_lower.as_str() {
                "ssh" | "git+ssh" | "ssh+git" => Transport::Ssh,
                "http" | "https" => Transport::Http,
                "file" => Transport::Local,
                _ => Transport::Other,
            };
            if transport == Transport::Local {
                return RemoteUrl {
                    display: raw.clone(),
                    raw,
                    host: None,
                    origin: None,
                    transport,
                };
            }
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            // A token in a query string is as secret as one in the userinfo.
            let path = &path[..path.find(['?', '#']).unwrap_or(path.len())];
            let scheme = match transport {
                Transport::Ssh => "ssh",
                Transport::Http | Transport::Local | Transport::Other => &scheme_lower,
            };
            let (host, port) = split_host_port(host_port);
            let port = port.or(match scheme {
                "ssh" => Some(22),
                "http" => Some(80),
                "https" => Some(443),
                "git" => Some(9418),
                _ => None,
            });
            RemoteUrl {
                display: format!("{scheme_lower}://{host_port}{path}"),
                origin: Some(match port {
                    Some(port) => format!("{scheme}://{host}:{port}"),
                    None => format!("{scheme}://{host}"),
                }),
                host: Some(host),
                raw,
                transport,
            }
        } else if let Some((user_host, path)) = scp_like(&raw) {
            let host = user_host.rsplit_once('@').map_or(user_host, |(_, h)| h);
            RemoteUrl {
                display: format!("{host}:{path}"),
                host: Some(host.to_ascii_lowercase()),
                origin: Some(format!("ssh://{}:22", host.to_ascii_lowercase())),
                raw: raw.clone(),
                transport: Transport::Ssh,
            }
        } else {
            RemoteUrl {
                display: raw.clone(),
                raw,
                host: None,
                origin: None,
                transport: Transport::Local,
            }
        }
    }

    /// The URL as configured, credentials and all: only for libgit2.
    pub(super) fn raw(&self) -> &str {
        &self.raw
    }

    /// The URL without userinfo, query or fragment: safe to show.
    pub(super) fn display(&self) -> &str {
        &self.display
    }

    /// The host (lowercase, no port), for remote URLs.
    pub(super) fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    pub(super) fn transport(&self) -> Transport {
        self.transport
    }

    /// The userinfo of a `scheme://user:pass@host/` URL, if it carries a
    /// password: a value to scrub from libgit2's messages.
    pub(super) fn password(&self) -> Option<&str> {
        let rest = self.raw.split_once("://")?.1;
        let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
        let userinfo = authority.rsplit_once('@')?.0;
        userinfo
            .split_once(':')
            .map(|(_, p)| p)
            .filter(|p| !p.is_empty())
    }

    /// The port (the scheme's default filled in), for remote URLs.
    pub(super) fn port(&self) -> Option<u16> {
        self.origin()?.rsplit_once(':')?.1.parse().ok()
    }

    /// `scheme://host:port` (default port filled in), for remote URLs.
    pub(super) fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// True when `other` (a URL libgit2 is connecting to) has this URL's
    /// scheme, host and port: credentials go there only, never to wherever
    /// a submodule or a redirect points, nor over plain http when the clone
    /// URL is https.
    pub(super) fn same_origin(&self, other: &str) -> bool {
        match (self.origin(), RemoteUrl::parse(other).origin()) {
            (Some(mine), Some(theirs)) => mine == theirs,
            _ => false,
        }
    }

    /// The mirror's directory name: a hash of the displayed URL (so two URLs
    /// never share a mirror and credentials never shape it) and a readable
    /// tail, e.g. `3f2a…-hello-world.git`.
    pub(super) fn mirror_name(&self) -> String {
        let hash = hex::encode(Sha256::digest(self.display.as_bytes()));
        let last = self
            .display
            .trim_end_matches(['/', '\\'])
            .rsplit(['/', '\\', ':'])
            .next()
            .unwrap_or("");
        let last = last.strip_suffix(".git").unwrap_or(last);
        let mut tail: String = last
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        tail = tail.trim_start_matches('.').to_owned();
        if tail.is_empty() {
            tail.push_str("repo");
        }
        format!("{}-{tail}.git", &hash[..16])
    }
}

/// `[user@]host:path` as git reads it: a colon before any slash.
fn scp_like(raw: &str) -> Option<(&str, &str)> {
    let colon = raw.find(':')?;
    if raw[..colon].contains('/') || colon == 0 {
        return None;
    }
    // `C:\…` is a Windows drive, not a host called C.
    if colon == 1 && raw[..1].chars().all(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    Some((&raw[..colon], &raw[colon + 1..]))
}

/// `host:port`, `[v6]:port` or `host` → the lowercase host and the port.
fn split_host_port(host_port: &str) -> (String, Option<u16>) {
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let (host, rest) = v6.split_once(']').unwrap_or((v6, ""));
        (host, rest.strip_prefix(':'))
    } else {
        match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    (host.to_ascii_lowercase(), port.and_then(|p| p.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_userinfo_and_query_are_never_shown() {
        let url = RemoteUrl::parse("https://bob:s3cret@Git.Example.com:8443/o/r.git?t=x#f");
        assert_eq!(url.display(), "https://Git.Example.com:8443/o/r.git");
        assert_eq!(url.host(), Some("git.example.com"));
        assert_eq!(url.transport(), Transport::Http);
        assert_eq!(url.password(), Some("s3cret"));
        assert!(!url.mirror_name().contains("s3cret"));
    }

    #[test]
    fn scp_like_urls_are_ssh_without_the_user() {
        let url = RemoteUrl::parse("git@github.com:octocat/hello-world.git");
        assert_eq!(url.display(), "github.com:octocat/hello-world.git");
        assert_eq!(url.transport(), Transport::Ssh);
        assert_eq!(url.host(), Some("github.com"));
        assert!(url.mirror_name().ends_with("-hello-world.git"));
    }

    #[test]
    fn paths_are_local_and_named_by_their_last_segment() {
        let url = RemoteUrl::parse("/srv/git/My Repo.git/");
        assert_eq!(url.transport(), Transport::Local);
        assert_eq!(url.host(), None);
        let name = url.mirror_name();
        assert!(name.ends_with("-My_Repo.git"), "{name}");
        assert_eq!(name.len(), 16 + "-My_Repo.git".len());
    }

    #[test]
    fn urls_differing_only_in_credentials_share_a_mirror() {
        let a = RemoteUrl::parse("https://x:one@h.example/o/r.git");
        let b = RemoteUrl::parse("https://h.example/o/r.git");
        let c = RemoteUrl::parse("https://h.example/o/other.git");
        assert_eq!(a.mirror_name(), b.mirror_name());
        assert_ne!(a.mirror_name(), c.mirror_name());
    }

    #[test]
    fn credentials_go_to_the_same_scheme_host_and_port_only() {
        let url = RemoteUrl::parse("ssh://git@[::1]:2222/r.git");
        assert_eq!(url.host(), Some("::1"));
        assert_eq!(url.origin(), Some("ssh://::1:2222"));
        assert!(url.same_origin("ssh://[::1]:2222/other.git"));
        assert!(!url.same_origin("ssh://[::1]/other.git"));
        let url = RemoteUrl::parse("https://h.example/o/r.git");
        assert!(url.same_origin("https://H.example:443/o/sub.git"));
        assert!(!url.same_origin("http://h.example/o/sub.git"));
        assert!(!url.same_origin("https://h.example:8443/o/sub.git"));
        assert!(!url.same_origin("https://evil.example/o/r.git"));
        assert!(!url.same_origin("/local/path"));
        let url = RemoteUrl::parse("git@github.com:o/r.git");
        assert!(url.same_origin("ssh://git@github.com/o/sub.git"));
        assert!(url.same_origin("git+ssh://github.com:22/o/sub.git"));
    }

    #[test]
    fn a_dot_only_tail_becomes_repo() {
        assert!(
            RemoteUrl::parse("https://h.example/")
                .mirror_name()
                .ends_with("-h.example.git")
        );
        assert!(RemoteUrl::parse("..").mirror_name().ends_with("-repo.git"));
    }
}
