//! `[sandbox]` and `[limits]` (SPEC section 9): the same keys in
//! `hookci.toml` (defaults for every pipeline) and in a pipeline file (which
//! overrides them key by key). Each layer keeps only what it writes, so
//! [`SandboxKeys::over`] and [`LimitKeys::over`] can merge a pipeline's keys
//! over the server's.

use super::check::Checker;
use serde::Deserialize;
use std::path::PathBuf;
use toml::Spanned;

/// `[sandbox] enabled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Enabled {
    /// On where bubblewrap is installed and works; off (said at start and
    /// by `check`) where it is not.
    #[default]
    Auto,
    /// Required: a build that cannot be sandboxed ends `error`.
    On,
    /// Off: steps run with the daemon's authority.
    Off,
}

/// `[sandbox]` as one layer wrote it; `None` = not written here.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SandboxKeys {
    /// `enabled`.
    pub enabled: Option<Enabled>,
    /// `network`.
    pub network: Option<bool>,
    /// `read_only`: absolute host paths the step may read.
    pub read_only: Option<Vec<PathBuf>>,
    /// `read_write`: absolute host paths the step may write.
    pub read_write: Option<Vec<PathBuf>>,
}

impl SandboxKeys {
    /// These keys where written, else `base`'s.
    pub fn over(&self, base: &SandboxKeys) -> SandboxKeys {
        SandboxKeys {
            enabled: self.enabled.or(base.enabled),
            network: self.network.or(base.network),
            read_only: self.read_only.clone().or_else(|| base.read_only.clone()),
            read_write: self.read_write.clone().or_else(|| base.read_write.clone()),
        }
    }
}

/// `[limits]` as one layer wrote it; `None` = not written here.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitKeys {
    /// `memory`: bytes, and the value as written ("4G") for the reason.
    pub memory: Option<(u64, String)>,
    /// `cpus`.
    pub cpus: Option<f64>,
    /// `pids`.
    pub pids: Option<u64>,
}

impl LimitKeys {
    /// These keys where written, else `base`'s.
    pub fn over(&self, base: &LimitKeys) -> LimitKeys {
        LimitKeys {
            memory: self.memory.clone().or_else(|| base.memory.clone()),
            cpus: self.cpus.or(base.cpus),
            pids: self.pids.or(base.pids),
        }
    }

    /// True when no limit is set.
    pub fn is_empty(&self) -> bool {
        self.memory.is_none() && self.cpus.is_none() && self.pids.is_none()
    }
}

/// `[sandbox]` exactly as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSandbox {
    pub enabled: Option<Spanned<toml::Value>>,
    pub network: Option<bool>,
    pub read_only: Option<Vec<Spanned<String>>>,
    pub read_write: Option<Vec<Spanned<String>>>,
}

/// `[limits]` exactly as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub memory: Option<Spanned<toml::Value>>,
    pub cpus: Option<Spanned<toml::Value>>,
    pub pids: Option<Spanned<i64>>,
}

/// Checks `[sandbox]`.
pub(crate) fn sandbox(c: &mut Checker<'_>, raw: Option<&RawSandbox>) -> SandboxKeys {
    let Some(raw) = raw else {
        return SandboxKeys::default();
    };
    let enabled = raw.enabled.as_ref().and_then(|v| match v.get_ref() {
        toml::Value::Boolean(true) => Some(Enabled::On),
        toml::Value::Boolean(false) => Some(Enabled::Off),
        toml::Value::String(s) if s == "auto" => Some(Enabled::Auto),
        _ => {
            c.error(
                Some(&v.span()),
                "sandbox.enabled must be \"auto\", true or false",
            );
            None
        }
    });
    SandboxKeys {
        enabled,
        network: raw.network,
        read_only: paths(c, "sandbox.read_only", raw.read_only.as_ref()),
        read_write: paths(c, "sandbox.read_write", raw.read_write.as_ref()),
    }
}

fn paths(
    c: &mut Checker<'_>,
    key: &str,
    list: Option<&Vec<Spanned<String>>>,
) -> Option<Vec<PathBuf>> {
    let list = list?;
    let mut out = Vec::with_capacity(list.len());
    for p in list {
        let path = PathBuf::from(p.get_ref());
        if path.is_absolute() {
            out.push(path);
        } else {
            c.error(
                Some(&p.span()),
                format!(
                    "{key}: \"{}\" is not an absolute path; write it from /",
                    p.get_ref()
                ),
            );
        }
    }
    Some(out)
}

/// Checks `[limits]`.
pub(crate) fn limits(c: &mut Checker<'_>, raw: Option<&RawLimits>) -> LimitKeys {
    let Some(raw) = raw else {
        return LimitKeys::default();
    };
    let memory = raw.memory.as_ref().and_then(|v| {
        let parsed = match v.get_ref() {
            toml::Value::String(s) => parse_bytes(s).map(|n| (n, s.trim().to_owned())),
            toml::Value::Integer(n) => u64::try_from(*n).ok().map(|b| (b, n.to_string())),
            _ => None,
        };
        match parsed {
            Some((n, text)) if n >= 1024 * 1024 => Some((n, text)),
            Some(_) => {
                c.error(Some(&v.span()), "limits.memory must be at least 1M");
                None
            }
            None => {
                c.error(
                    Some(&v.span()),
                    "limits.memory is not a size; write e.g. \"512M\" or \"4G\"",
                );
                None
            }
        }
    });
    let cpus = raw.cpus.as_ref().and_then(|v| {
        let n = match v.get_ref() {
            toml::Value::Float(f) => Some(*f),
            toml::Value::Integer(i) => Some(*i as f64),
            _ => None,
        };
        match n {
            Some(n) if (0.01..=4096.0).contains(&n) => Some(n),
            _ => {
                c.error(
                    Some(&v.span()),
                    "limits.cpus must be a number of CPUs from 0.01 up, e.g. 2.0",
                );
                None
            }
        }
    });
    let pids = raw
        .pids
        .as_ref()
        .and_then(|v| match u64::try_from(*v.get_ref()) {
            Ok(n) if n > 0 => Some(n),
            _ => {
                c.error(Some(&v.span()), "limits.pids must be greater than zero");
                None
            }
        });
    LimitKeys { memory, cpus, pids }
}

/// `512M`, `4G`, `1.5G`, `4GiB`, `1048576`: binary units (K = 1024).
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s
        .strip_suffix("iB")
        .or_else(|| s.strip_suffix('B'))
        .unwrap_or(s);
    let (number, unit) = match s.char_indices().find(|(_, ch)| ch.is_ascii_alphabetic()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    let scale: u64 = match unit.to_ascii_uppercase().as_str() {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return None,
    };
    let number = number.trim();
    if let Ok(n) = number.parse::<u64>() {
        return n.checked_mul(scale);
    }
    let f: f64 = number.parse().ok()?;
    (f.is_finite() && f > 0.0 && f < 1e18).then_some((f * scale as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(parse_bytes("4G"), Some(4 << 30));
        assert_eq!(parse_bytes("512M"), Some(512 << 20));
        assert_eq!(parse_bytes("4GiB"), Some(4 << 30));
        assert_eq!(parse_bytes("1.5G"), Some(3 << 29));
        assert_eq!(parse_bytes("1048576"), Some(1 << 20));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("4X"), None);
    }
}
