//! A collector of findings for one TOML file, with the checks pipeline
//! files and the server config share: durations, secrets, closed lists.

use super::Finding;
use super::raw::RawSecret;
use crate::secret::{Secret, SecretSource};
use crate::tomlpos;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

/// Errors and warnings found in one file so far.
#[derive(Debug)]
pub(crate) struct Checker<'a> {
    file: &'a Path,
    src: &'a str,
    pub errors: Vec<Finding>,
    pub warnings: Vec<Finding>,
    /// The files `{ file = ... }` secrets were read from (the sandbox masks them).
    pub secret_files: Vec<std::path::PathBuf>,
}

impl<'a> Checker<'a> {
    pub fn new(file: &'a Path, src: &'a str) -> Self {
        Checker {
            file,
            src,
            errors: Vec::new(),
            warnings: Vec::new(),
            secret_files: Vec::new(),
        }
    }

    /// A finding at `span`, or at no position.
    pub fn finding(&self, span: Option<&Range<usize>>, message: impl Into<String>) -> Finding {
        Finding {
            file: self.file.to_path_buf(),
            position: span.map(|s| tomlpos::position(self.src, s)),
            message: message.into(),
        }
    }

    /// Records an error at `span`.
    pub fn error(&mut self, span: Option<&Range<usize>>, message: impl Into<String>) {
        let f = self.finding(span, message);
        self.errors.push(f);
    }

    /// Records a warning at `span`.
    pub fn warn(&mut self, span: Option<&Range<usize>>, message: impl Into<String>) {
        let f = self.finding(span, message);
        self.warnings.push(f);
    }

    /// The finding for a `toml::from_str` error.
    pub fn parse_error(&self, err: &toml::de::Error, tables: &[(&str, &str)]) -> Finding {
        let (position, message) = tomlpos::describe(self.src, err, tables);
        Finding {
            file: self.file.to_path_buf(),
            position,
            message,
        }
    }

    /// A duration such as `30s`, `1h30m`; `key` names it in errors.
    pub fn duration(
        &mut self,
        key: &str,
        v: &Spanned<String>,
        allow_zero: bool,
    ) -> Option<Duration> {
        match parse_duration(v.get_ref()) {
            Ok(d) if d.is_zero() && !allow_zero => {
                self.error(Some(&v.span()), format!("{key} must be longer than zero"));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.error(Some(&v.span()), format!("{key} {e}"));
                None
            }
        }
    }

    /// One value of a closed list, as the matching item of `allowed`.
    pub fn one_of<T: Copy>(
        &mut self,
        key: &str,
        v: &Spanned<String>,
        allowed: &[(&str, T)],
    ) -> Option<T> {
        if let Some((_, t)) = allowed.iter().find(|(name, _)| *name == v.get_ref()) {
            return Some(*t);
        }
        let names: Vec<&str> = allowed.iter().map(|(n, _)| *n).collect();
        self.error(
            Some(&v.span()),
            format!(
                "unknown {key} \"{}\"; expected one of {}",
                v.get_ref(),
                names.join(", ")
            ),
        );
        None
    }

    /// Resolves a secret; a literal is a warning, an unresolvable source
    /// an error naming the variable or file (never a value).
    pub fn secret(&mut self, key: &str, v: &Spanned<RawSecret>) -> Option<Secret> {
        let source = &v.get_ref().0;
        if let SecretSource::File { file } = source {
            self.secret_files.push(file.clone());
        }
        if let SecretSource::Literal(_) = source {
            self.warn(
                Some(&v.span()),
                format!(
                    "{key} is a literal secret in the file; prefer {{ env = ... }} or {{ file = ... }}"
                ),
            );
        }
        match source.resolve() {
            Ok(s) => Some(s),
            Err(e) => {
                self.error(Some(&v.span()), format!("{key}: {e}"));
                None
            }
        }
    }

    /// A URL that must be http(s), returned without a trailing slash.
    pub fn http_url(&mut self, key: &str, v: &Spanned<String>) -> Option<String> {
        let url = v.get_ref().trim();
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        match rest {
            Some(host) if !host.trim_end_matches('/').is_empty() => {
                Some(url.trim_end_matches('/').to_owned())
            }
            _ => {
                self.error(
                    Some(&v.span()),
                    format!("{key} must start with http:// or https:// and name a host"),
                );
                None
            }
        }
    }
}

/// Parses a duration as `humantime` does (`30s`, `30m`, `1h30m`), with an
/// error that says what to write instead.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|_| format!("\"{s}\" is not a duration; write e.g. \"30s\", \"30m\" or \"1h30m\""))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_read_as_humans_write_them() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("30").unwrap_err().contains("\"30\""));
        assert!(parse_duration("soon").is_err());
    }
}
