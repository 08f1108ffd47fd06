//! Where credentials may go, judged from clone URLs: which payload clone
//! URLs a pipeline without `clone_url` may fetch, and the https location a
//! configured clone URL names (the base a status API is derived from).

use super::url::{RemoteUrl, Transport};

/// The https location of a repository URL: `https://host[:port]/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebLocation {
    /// Lowercase host.
    pub host: String,
    /// The port, only for an `https://` URL with a port other than 443.
    pub port: Option<u16>,
    /// The repository's path, without a leading `/`, query or fragment.
    pub path: String,
}

impl WebLocation {
    /// `https://host[:port]/path`.
    pub fn https_url(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(port) => format!("https://{host}:{port}/{}", self.path),
            None => format!("https://{host}/{}", self.path),
        }
    }
}

/// The https location of a remote clone URL (`https://`, `http://`,
/// `ssh://`, scp-like `user@host:path`): the same host, always https (a
/// port is kept only from an https URL: an ssh or http port is no https
/// port). `None` for local paths, `file://` and other schemes.
pub fn web_location(url: &str) -> Option<WebLocation> {
    let remote = RemoteUrl::parse(url);
    let host = remote.host()?.to_owned();
    if host.is_empty() {
        return None;
    }
    let display = remote.display();
    let (port, path) = match remote.transport() {
        Transport::Http => {
            let rest = display.split_once("://")?.1;
            let path = rest.find('/').map_or("", |i| &rest[i + 1..]);
            let https = display.to_ascii_lowercase().starts_with("https://");
            (remote.port().filter(|p| https && *p != 443), path)
        }
        Transport::Ssh => {
            let path = match display.split_once("://") {
                Some((_, rest)) => rest.find('/').map_or("", |i| &rest[i + 1..]),
                None => display.split_once(':').map_or("", |(_, p)| p),
            };
            (None, path.trim_start_matches('/'))
        }
        Transport::Local | Transport::Other => return None,
    };
    Some(WebLocation {
        host,
        port,
        path: path.to_owned(),
    })
}

/// Checks a clone URL taken from a payload, for a pipeline that has no
/// `clone_url`: only https or ssh, and only on `expected_host` (the host
/// the pipeline's `host` implies). Never `http://`, `file://`, a local path
/// or another host: whoever can send a delivery must not choose where the
/// clone credentials go, nor which code runs with the pipeline's secrets.
/// The error is one sentence naming the URL without credentials.
pub fn check_payload_url(url: &str, expected_host: Option<&str>) -> Result<(), String> {
    let remote = RemoteUrl::parse(url);
    let shown = remote.display().to_owned();
    let scheme_ok = match remote.transport() {
        Transport::Ssh => true,
        Transport::Http => shown.to_ascii_lowercase().starts_with("https://"),
        Transport::Local | Transport::Other => false,
    };
    if !scheme_ok {
        return Err(format!(
            "the payload's clone URL {shown} is not https or ssh; set clone_url in the pipeline"
        ));
    }
    let Some(expected) = expected_host else {
        return Err(format!(
            "the pipeline has no clone_url and no host that tells which clone URLs to trust (payload: {shown}); set clone_url"
        ));
    };
    let host = remote.host().unwrap_or("");
    let matches = host == expected || host.strip_prefix("www.") == Some(expected);
    if !matches {
        return Err(format!(
            "the payload's clone URL {shown} is not on {expected}; set clone_url in the pipeline"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_locations_are_https_on_the_same_host() {
        let loc = web_location("https://u:p@Git.Example.com:8443/sub/o/r.git").unwrap();
        assert_eq!(loc.https_url(), "https://git.example.com:8443/sub/o/r.git");
        let loc = web_location("git@github.com:o/r.git").unwrap();
        assert_eq!(loc.https_url(), "https://github.com/o/r.git");
        let loc = web_location("ssh://git@host.example:2222/o/r.git").unwrap();
        assert_eq!(loc.https_url(), "https://host.example/o/r.git");
        let loc = web_location("http://host.example:3000/o/r").unwrap();
        assert_eq!(loc.https_url(), "https://host.example/o/r");
        assert_eq!(web_location("/srv/git/r.git"), None);
        assert_eq!(web_location("file:///srv/git/r.git"), None);
        assert_eq!(web_location("git://host/r.git"), None);
    }

    #[test]
    fn payload_urls_must_be_https_or_ssh_on_the_expected_host() {
        let gh = Some("github.com");
        assert!(check_payload_url("https://github.com/o/r.git", gh).is_ok());
        assert!(check_payload_url("git@github.com:o/r.git", gh).is_ok());
        assert!(check_payload_url("ssh://git@github.com/o/r.git", gh).is_ok());
        for bad in [
            "http://github.com/o/r.git",
            "file:///srv/git/r.git",
            "/srv/git/r.git",
            "../r.git",
            "https://evil.example/o/r.git",
            "https://github.com.evil.example/o/r.git",
            "git://github.com/o/r.git",
        ] {
            let e = check_payload_url(bad, gh).unwrap_err();
            assert!(e.contains("set clone_url"), "{bad}: {e}");
        }
        assert!(check_payload_url("https://github.com/o/r.git", None).is_err());
        let e = check_payload_url("https://tok:secret@evil.example/r.git", gh).unwrap_err();
        assert!(!e.contains("secret"), "{e}");
    }
}
