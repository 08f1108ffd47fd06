//! Branch, tag and path globs: `*` stays within one path segment, `**`
//! crosses `/`, a leading `!` excludes.
//!
//! A list is read in order, as GitHub Actions reads `branches` and `paths`:
//! each pattern that matches a name includes it (or, negated, excludes it),
//! and the last match wins. A list that opens with a negation starts from
//! "included", so `["!gh-pages"]` is every branch but `gh-pages`.

use super::PathFilter;
use globset::{GlobBuilder, GlobMatcher};

/// An ordered list of globs, some negated.
#[derive(Debug, Clone)]
pub struct GlobList {
    patterns: Vec<String>,
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    negated: bool,
    matcher: GlobMatcher,
}

impl GlobList {
    /// Compiles a list; the error names the bad pattern in one sentence.
    pub fn new(patterns: &[String]) -> Result<GlobList, String> {
        let rules = patterns
            .iter()
            .map(|p| compile(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(GlobList {
            patterns: patterns.to_vec(),
            rules,
        })
    }

    /// Checks one pattern, as [`GlobList::new`] would.
    pub fn check(pattern: &str) -> Result<(), String> {
        compile(pattern).map(|_| ())
    }

    /// True when `name` is included by the list.
    pub fn matches(&self, name: &str) -> bool {
        let mut included = self.rules.first().is_some_and(|r| r.negated);
        for rule in &self.rules {
            if rule.matcher.is_match(name) {
                included = !rule.negated;
            }
        }
        included
    }

    /// The patterns as written.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

fn compile(pattern: &str) -> Result<Rule, String> {
    let (negated, body) = match pattern.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, pattern),
    };
    if body.is_empty() {
        return Err(format!("the glob \"{pattern}\" is empty"));
    }
    let glob = GlobBuilder::new(body)
        .literal_separator(true)
        .build()
        .map_err(|e| format!("invalid glob \"{pattern}\": {}", e.kind()))?;
    Ok(Rule {
        negated,
        matcher: glob.compile_matcher(),
    })
}

impl PathFilter {
    /// Whether a push that changed `changed` (paths relative to the
    /// repository root) builds under this filter.
    ///
    /// As GitHub Actions: some changed file must be included by `paths`
    /// (any file when `paths` is empty) and not be matched by
    /// `ignore_paths`. With only `ignore_paths`, the push builds unless every
    /// changed file is ignored. An empty filter accepts everything, even no
    /// changes; a non-empty one accepts no changes at all as nothing.
    ///
    /// The globs were checked at load; a filter read back from elsewhere
    /// whose globs do not compile accepts everything, since building
    /// needlessly is the safer mistake.
    pub fn accepts(&self, changed: &[&str]) -> bool {
        if self.is_empty() {
            return true;
        }
        let (Ok(paths), Ok(ignore)) = (
            GlobList::new(&self.paths),
            GlobList::new(&self.ignore_paths),
        ) else {
            return true;
        };
        changed
            .iter()
            .any(|file| (self.paths.is_empty() || paths.matches(file)) && !ignore.matches(file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(p: &[&str]) -> GlobList {
        GlobList::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn glob_lists_follow_order_and_negation() {
        let rows: &[(&[&str], &str, bool)] = &[
            (&["main"], "main", true),
            (&["main"], "mainline", false),
            (&["release/*"], "release/1", true),
            (&["release/*"], "release/1/hotfix", false),
            (&["release/**"], "release/1/hotfix", true),
            (&["release/**"], "release/1", true),
            (&["*"], "feature/x", false),
            (&["**"], "feature/x", true),
            (&["!gh-pages"], "main", true),
            (&["!gh-pages"], "gh-pages", false),
            (&["release/**", "!release/old"], "release/old", false),
            (&["release/**", "!release/old"], "release/new", true),
            (&["!release/old", "release/**"], "release/old", true),
            (&["v*", "!v*-rc*", "v2.0-rc1"], "v2.0-rc1", true),
            (&["v*", "!v*-rc*", "v2.0-rc1"], "v2.0-rc2", false),
            (&["{main,dev}"], "dev", true),
            (&[], "main", false),
        ];
        for (patterns, name, want) in rows {
            assert_eq!(
                list(patterns).matches(name),
                *want,
                "{patterns:?} vs {name}"
            );
        }
    }

    #[test]
    fn a_bad_glob_is_named_in_the_error() {
        let err = GlobList::new(&["ok".to_owned(), "[abc".to_owned()]).unwrap_err();
        assert!(err.starts_with("invalid glob \"[abc\""), "{err}");
        assert_eq!(GlobList::check("!").unwrap_err(), "the glob \"!\" is empty");
    }

    #[test]
    fn path_filters_decide_like_github_actions() {
        let f = |paths: &[&str], ignore: &[&str]| PathFilter {
            paths: paths.iter().map(|s| s.to_string()).collect(),
            ignore_paths: ignore.iter().map(|s| s.to_string()).collect(),
        };
        let rows: &[(PathFilter, &[&str], bool)] = &[
            (f(&[], &[]), &[], true),
            (f(&["src/**"], &[]), &["src/a/b.rs"], true),
            (f(&["src/**"], &[]), &["README.md"], false),
            (f(&["src/**"], &[]), &[], false),
            (f(&["*.md"], &[]), &["docs/a.md"], false),
            (f(&["**/*.md"], &[]), &["docs/a.md"], true),
            (f(&[], &["docs/**"]), &["docs/a.md"], false),
            (f(&[], &["docs/**"]), &["docs/a.md", "src/main.rs"], true),
            (f(&["src/**"], &["src/gen/**"]), &["src/gen/x.rs"], false),
            (
                f(&["src/**"], &["src/gen/**"]),
                &["src/gen/x.rs", "src/y.rs"],
                true,
            ),
            (
                f(&["src/**", "!src/**/*.md"], &[]),
                &["src/notes.md"],
                false,
            ),
        ];
        for (filter, changed, want) in rows {
            assert_eq!(filter.accepts(changed), *want, "{filter:?} vs {changed:?}");
        }
    }
}
