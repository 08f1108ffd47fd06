//! A collector of findings for one TOML file, with the checks pipeline
//! files and the server config share: durations, secrets, closed lists.

use super::Finding;
use super::raw::RawSecret;
use crate::config::Role;
use crate::secret::{Secret, SecretSource, SecretUse};
use crate::tomlpos;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// Set once by `hookci check --no-secrets`: secrets are not resolved.
static SKIP_SECRETS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes every later load skip resolving secrets (`check --no-secrets`,
/// a one-shot command; the daemon never calls this).
pub fn skip_secrets() {
    SKIP_SECRETS.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// True under `check --no-secrets`: a secret's value is a stand-in.
pub(crate) fn secrets_skipped() -> bool {
    SKIP_SECRETS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Which secrets this process loads (SPEC §11: each role holds only the
/// secrets it needs): 0 every one (the default: `run`, tests, a library
/// user), 1 those of the role the config file names (set by `serve` and
/// `check` before the config is read; the config settles it), else
/// 2 + the role's index in [`ROLES_BY_INDEX`].
static SECRET_SCOPE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

const ROLES_BY_INDEX: [Role; 3] = [Role::All, Role::Receiver, Role::Runner];

/// Makes every later load read only the secrets `role` needs, or, for
/// `None`, those of the role the config file names (`serve` and `check`
/// call this once, before reading the config; `--role` gives `role`).
pub fn scope_secrets(role: Option<Role>) {
    let v = match role {
        None => 1,
        Some(r) => 2 + ROLES_BY_INDEX.iter().position(|x| *x == r).unwrap_or(0) as u8,
    };
    SECRET_SCOPE.store(v, std::sync::atomic::Ordering::Relaxed);
}

/// The config file names `role`: if [`scope_secrets`] waits for it, the
/// later loads read that role's secrets.
pub(crate) fn settle_secret_role(role: Role) {
    let v = 2 + ROLES_BY_INDEX.iter().position(|x| *x == role).unwrap_or(0) as u8;
    let _ = SECRET_SCOPE.compare_exchange(
        1,
        v,
        std::sync::atomic::Ordering::Relaxed,
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// The role whose secrets are read, or `None` for every secret.
pub fn secret_role() -> Option<Role> {
    match SECRET_SCOPE.load(std::sync::atomic::Ordering::Relaxed) {
        0 | 1 => None,
        v => ROLES_BY_INDEX.get(usize::from(v - 2)).copied(),
    }
}

/// How much a process of `role` (`None`: every secret) needs a secret for
/// `what`.
pub(crate) fn demand(role: Option<Role>, what: SecretUse) -> Demand {
    use SecretUse::*;
    match (role, what) {
        (None | Some(Role::All), _) | (_, Store) => Demand::Required,
        // A receiver verifies deliveries, checks the admin token and sends
        // the status reports. It runs no build, but a manual trigger
        // fetches the branch (clone credentials) and its log views mask
        // the step secrets: it uses them where its box has them.
        (Some(Role::Receiver), Webhook | Admin | Status) => Demand::Required,
        (Some(Role::Receiver), Clone | Step) => Demand::Optional,
        // A runner fetches and runs builds; it serves no HTTP and sends no
        // report.
        (Some(Role::Runner), Clone | Step) => Demand::Required,
        (Some(Role::Runner), Webhook | Admin | Status) => Demand::Skipped,
    }
}

/// Whether a process reads a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Demand {
    /// Read; one that cannot be read is an error.
    Required,
    /// Read when it can be; one that cannot is a warning, and the secret
    /// is absent.
    Optional,
    /// Never read (its source's form is still checked).
    Skipped,
}

/// Errors and warnings found in one file so far.
#[derive(Debug)]
pub(crate) struct Checker<'a> {
    file: &'a Path,
    src: &'a str,
    pub errors: Vec<Finding>,
    pub warnings: Vec<Finding>,
    /// Keys whose lines [`Self::parse_all`] blanked after reporting them.
    blanked: Vec<String>,
    /// The files `{ file = ... }` secrets were read from (the sandbox masks them).
    pub secret_files: Vec<PathBuf>,
}

impl<'a> Checker<'a> {
    pub fn new(file: &'a Path, src: &'a str) -> Self {
        Checker {
            file,
            src,
            errors: Vec::new(),
            warnings: Vec::new(),
            blanked: Vec::new(),
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

    /// The errors, by line and column (errors without a position first).
    pub fn sorted_errors(&mut self) -> Vec<Finding> {
        let mut errors = std::mem::take(&mut self.errors);
        // A key already reported (and blanked) is not "required" news.
        let blanked = &self.blanked;
        errors.retain(|f| {
            !blanked
                .iter()
                .any(|k| f.message.starts_with(&format!("{k} is required")))
        });
        errors.sort_by_key(|f| f.position);
        errors
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

    /// Deserializes the whole file, recording every error serde reports,
    /// not only the first: after each error on a `key = value` line, that
    /// line is blanked (same length, so positions hold) and the file read
    /// again. Unknown keys get a "did you mean" for a near miss. `None`
    /// when the file could not be read into `T` at all.
    pub fn parse_all<T: serde::de::DeserializeOwned>(
        &mut self,
        tables: &[(&str, &str)],
    ) -> Option<T> {
        // A syntax error ends the reading: nothing after it is reliable.
        if let Err(e) = toml::from_str::<toml::Table>(self.src) {
            let f = self.parse_error(&e, tables);
            self.errors.push(f);
            return None;
        }
        let mut text = self.src.to_owned();
        let mut blanked = std::mem::take(&mut self.blanked);
        for _ in 0..64 {
            let err = match toml::from_str::<T>(&text) {
                Ok(t) => {
                    self.blanked = blanked;
                    return Some(t);
                }
                Err(e) => e,
            };
            let mut finding = self.parse_error(&err, tables);
            let missing = err
                .message()
                .strip_prefix("missing field `")
                .and_then(|r| r.split('`').next());
            if missing.is_some_and(|k| blanked.iter().any(|b| b == k)) {
                // A side effect of an earlier blanked line, not news.
                return None;
            }
            if let Some(hint) = did_you_mean(err.message()) {
                finding.message.push_str(&hint);
            }
            self.errors.push(finding);
            let span = err.span()?;
            let (line, key) = blank_line(&text, span.start)?;
            // A blank that breaks the syntax (a value over several lines)
            // would only add noise: stop with what is known.
            if line.parse::<toml::Table>().is_err() {
                return None;
            }
            blanked.push(key);
            text = line;
        }
        None
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
    /// Only the secrets this process's role needs are read (see
    /// [`scope_secrets`]): one it never uses is `None` and never opened.
    pub fn secret(&mut self, key: &str, what: SecretUse, v: &Spanned<RawSecret>) -> Option<Secret> {
        let source = &self.relative_to_file(&v.get_ref().0);
        if let SecretSource::File { file } = source {
            self.secret_files.push(file.clone());
        }
        if let SecretSource::Credential { credential } = source {
            // The name's form is checked whether or not it is read.
            if let Err(e) = SecretSource::check_credential_name(credential) {
                self.error(Some(&v.span()), format!("{key}: {e}"));
                return None;
            }
        }
        let demand = demand(secret_role(), what);
        if demand == Demand::Skipped {
            return None;
        }
        if SKIP_SECRETS.load(std::sync::atomic::Ordering::Relaxed) {
            // `check --no-secrets`: the source's form is checked, its value
            // is not read.
            return Some(Secret::new("not read by check --no-secrets"));
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
            Err(e) if demand == Demand::Optional => {
                self.warn(
                    Some(&v.span()),
                    format!("{key}: {e}; {}", what.without_it()),
                );
                None
            }
            Err(e) => {
                self.error(Some(&v.span()), format!("{key}: {e}"));
                None
            }
        }
    }

    /// The directory relative paths in this file resolve against: the
    /// file's own directory, made absolute.
    pub fn base_dir(&self) -> PathBuf {
        std::path::absolute(self.file)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_default()
    }

    /// `p` as written in this file: a relative path is taken relative to
    /// the file's directory, so every command sees the same file from
    /// any working directory.
    pub fn resolve_path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir().join(p)
        }
    }

    /// A `{ file = }` source with its path resolved by [`Self::resolve_path`].
    fn relative_to_file(&self, source: &SecretSource) -> SecretSource {
        match source {
            SecretSource::File { file } => SecretSource::File {
                file: self.resolve_path(file),
            },
            other => other.clone(),
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
    fn each_role_reads_only_the_secrets_it_needs() {
        use super::Demand::*;
        use super::{Demand, demand};
        use crate::config::Role;
        use crate::secret::SecretUse::*;
        let all = [Store, Webhook, Admin, Status, Clone, Step];
        for what in all {
            assert_eq!(demand(None, what), Required, "{what:?}");
            assert_eq!(demand(Some(Role::All), what), Required, "{what:?}");
        }
        let receiver: Vec<Demand> = all
            .iter()
            .map(|w| demand(Some(Role::Receiver), *w))
            .collect();
        assert_eq!(
            receiver,
            [Required, Required, Required, Required, Optional, Optional]
        );
        let runner: Vec<Demand> = all.iter().map(|w| demand(Some(Role::Runner), *w)).collect();
        assert_eq!(
            runner,
            [Required, Skipped, Skipped, Skipped, Required, Required]
        );
    }

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

/// `text` with the `key = value` line around `offset` turned into spaces,
/// and that key; `None` for a table header or a line that is not a key.
fn blank_line(text: &str, offset: usize) -> Option<(String, String)> {
    let start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let end = text
        .get(offset..)?
        .find('\n')
        .map_or(text.len(), |i| offset + i);
    let line = &text[start..end];
    let trimmed = line.trim_start();
    if trimmed.starts_with('[') || !line.contains('=') {
        return None;
    }
    let key = trimmed
        .split('=')
        .next()
        .unwrap_or("")
        .trim()
        .trim_matches('"')
        .to_owned();
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..start]);
    out.extend(line.chars().map(|c| if c.is_ascii() { ' ' } else { c }));
    out.push_str(&text[end..]);
    // Non-ASCII characters keep their bytes, so offsets still hold; a key
    // line of non-ASCII is rare, and the parse check catches the rest.
    Some((out, key))
}

/// "; did you mean \"branches\"?" for serde's unknown-field message, when
/// an expected key is close to the one written.
fn did_you_mean(serde_message: &str) -> Option<String> {
    let rest = serde_message.strip_prefix("unknown field `")?;
    let (key, expected) = rest.split_once('`')?;
    let best = expected
        .split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, k)| (strsim::jaro_winkler(key, k), k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))?;
    Some(format!("; did you mean \"{}\"?", best.1))
}

#[cfg(test)]
mod near_miss_tests {
    use super::*;

    #[test]
    fn near_misses_get_a_suggestion() {
        let m = "unknown field `branchs`, expected one of `branches`, `tags`, `paths`";
        assert_eq!(
            did_you_mean(m).as_deref(),
            Some("; did you mean \"branches\"?")
        );
        let m = "unknown field `zzz`, expected one of `branches`, `tags`";
        assert_eq!(did_you_mean(m), None);
    }

    #[test]
    fn a_blanked_line_keeps_every_offset() {
        let text = "a = 1\nbad = [1]\nc = 2\n";
        let (out, key) = blank_line(text, 8).unwrap();
        assert_eq!(key, "bad");
        assert_eq!(out.len(), text.len());
        assert_eq!(out, "a = 1\n         \nc = 2\n");
        assert!(blank_line("[steps]\n", 2).is_none());
    }
}
