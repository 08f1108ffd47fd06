//! What a reload (SIGHUP) changed, in words for the log: each pipeline
//! added, changed (its file or one of its secrets, re-read from env, file
//! or credential), removed, or broken and kept at its previous version.

use crate::pipeline::{Finding, Pipeline};
use std::collections::BTreeMap;

/// The outcome of one reload.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Served for the first time.
    pub added: Vec<String>,
    /// Served with a new version.
    pub changed: Vec<String>,
    /// No longer served (the file is gone).
    pub removed: Vec<String>,
    /// Did not load; the previous version is still served.
    pub kept: Vec<String>,
    /// Did not load and had no previous version: not served.
    pub broken: Vec<String>,
}

/// Builds the set to serve and its report: `loaded` as read now, with the
/// previous version of each pipeline whose file has `errors`.
pub fn merge(
    old: &BTreeMap<String, Pipeline>,
    mut loaded: BTreeMap<String, Pipeline>,
    errors: &[Finding],
) -> (BTreeMap<String, Pipeline>, Report) {
    let mut report = Report::default();
    let mut failed: Vec<&std::path::Path> = errors.iter().map(|f| f.file.as_path()).collect();
    failed.dedup();
    for (name, p) in old {
        if failed.contains(&p.path.as_path()) {
            loaded.entry(name.clone()).or_insert_with(|| p.clone());
            report.kept.push(name.clone());
        }
    }
    for file in failed {
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !report.kept.contains(&name) && file.extension().is_some_and(|x| x == "toml") {
            report.broken.push(name);
        }
    }
    for (name, p) in &loaded {
        match old.get(name) {
            None => report.added.push(name.clone()),
            Some(o) if !report.kept.contains(name) && !same(o, p) => {
                report.changed.push(name.clone());
            }
            Some(_) => {}
        }
    }
    for name in old.keys() {
        if !loaded.contains_key(name) {
            report.removed.push(name.clone());
        }
    }
    (loaded, report)
}

/// Same settings and same secret values.
fn same(a: &Pipeline, b: &Pipeline) -> bool {
    // Debug shows every setting, and every secret as `***`.
    format!("{a:?}") == format!("{b:?}")
        && a.secret == b.secret
        && a.secrets == b.secrets
        && a.clone.ssh_key == b.clone.ssh_key
        && a.clone.token == b.clone.token
        && a.status.token == b.status.token
        && a.status.secret == b.status.secret
}

impl Report {
    /// Logs one line per kind of change, and a summary.
    pub fn log(&self, serving: usize) {
        let list = |v: &[String]| v.join(", ");
        if !self.added.is_empty() {
            tracing::info!(pipelines = %list(&self.added), "reload: added");
        }
        if !self.changed.is_empty() {
            tracing::info!(pipelines = %list(&self.changed), "reload: changed");
        }
        if !self.removed.is_empty() {
            tracing::info!(pipelines = %list(&self.removed), "reload: removed");
        }
        if !self.kept.is_empty() {
            tracing::warn!(
                pipelines = %list(&self.kept),
                "reload: broken, the previous version is still served"
            );
        }
        if !self.broken.is_empty() {
            tracing::warn!(pipelines = %list(&self.broken), "reload: broken, not served");
        }
        tracing::info!(
            pipelines = serving,
            added = self.added.len(),
            changed = self.changed.len(),
            removed = self.removed.len(),
            kept = self.kept.len(),
            "pipelines reloaded"
        );
    }

    /// "1 added, 2 changed, 1 broken (old version kept)", for STATUS=.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for (n, what) in [
            (self.added.len(), "added"),
            (self.changed.len(), "changed"),
            (self.removed.len(), "removed"),
            (self.kept.len(), "broken (old version kept)"),
            (self.broken.len(), "broken"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        if parts.is_empty() {
            "reloaded, nothing changed".to_owned()
        } else {
            format!("reloaded: {}", parts.join(", "))
        }
    }
}
