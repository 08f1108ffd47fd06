//! The trigger matcher: decides, with no I/O, whether a push builds.
//!
//! The order of the checks is the contract: what the ref is, deletion, a
//! host's test delivery, skip markers, then the triggers. Path rules are
//! not decided here (they need git); the matching triggers' rules are
//! handed on in the [`Decision`].

use super::{ForkPolicy, PathFilter, Pipeline};
use crate::webhook::{PushEvent, RefKind, ZERO_SHA};

/// Whether a push builds, and under which path rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Queue a build. When `path_filters` is non-empty the runner builds
    /// only if the changed files pass at least one of them.
    Build {
        /// The path rules of the triggers that matched; empty when one of
        /// them has none (the push builds whatever it changed).
        path_filters: Vec<PathFilter>,
    },
    /// Build nothing; the reason is shown to the host and the user.
    Skip(String),
}

/// Markers in a head commit message that skip CI, as GitHub reads them.
const SKIP_MARKERS: &[&str] = &[
    "[skip ci]",
    "[ci skip]",
    "[no ci]",
    "[skip actions]",
    "[actions skip]",
];

/// Decides whether `event` builds `pipeline`.
pub fn decide(pipeline: &Pipeline, event: &PushEvent) -> Decision {
    let (name, is_tag) = match &event.kind {
        RefKind::Branch(b) => (b.as_str(), false),
        RefKind::Tag(t) => (t.as_str(), true),
        RefKind::Other => {
            return Decision::Skip(format!(
                "ref {} is neither a branch nor a tag",
                event.git_ref
            ));
        }
    };
    let what = if is_tag { "tag" } else { "branch" };
    if event.deleted {
        return Decision::Skip(format!("{what} {name} was deleted"));
    }
    if event.before == event.after {
        return Decision::Skip("before and after are the same commit: a test delivery".to_owned());
    }
    if pipeline.skip_ci && asks_to_skip(&event.message) {
        return Decision::Skip("the commit message asks to skip CI".to_owned());
    }

    if pipeline.triggers.is_empty() {
        return if is_tag {
            Decision::Skip("tags build only when a trigger names them".to_owned())
        } else {
            Decision::Build {
                path_filters: Vec::new(),
            }
        };
    }
    let matching: Vec<&PathFilter> = pipeline
        .triggers
        .iter()
        .filter(|t| match (is_tag, &t.branches, &t.tags) {
            (true, _, Some(tags)) => tags.matches(name),
            (true, _, None) => false,
            (false, Some(branches), _) => branches.matches(name),
            (false, None, tags) => tags.is_none() && t.pull_requests.is_none(),
        })
        .map(|t| &t.paths)
        .collect();
    if matching.is_empty() {
        return Decision::Skip(format!("no trigger matches {what} {name}"));
    }
    // A new ref has no `before` to diff against, so it always builds.
    let new_ref = event.created || event.before == ZERO_SHA;
    let path_filters = if new_ref || matching.iter().any(|f| f.is_empty()) {
        Vec::new()
    } else {
        let mut filters: Vec<PathFilter> = Vec::new();
        for f in matching {
            if !filters.contains(f) {
                filters.push(f.clone());
            }
        }
        filters
    };
    Decision::Build { path_filters }
}

/// Whether a pull request builds, and whether it waits for approval first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullDecision {
    /// Record a build: `waiting` for an admin's approval, else queued.
    Build {
        /// As for a push, against the pull request's base commit.
        path_filters: Vec<PathFilter>,
        /// The build waits for approval (status `waiting`).
        waiting: bool,
    },
    /// Build nothing; the reason is shown to the host and the user.
    Skip(String),
}

/// Decides whether a pull request event builds `pipeline`: a trigger's
/// `pull_requests` must match its target branch; then `[pull_requests]`
/// decides for a fork. `sandbox` says whether steps can be sandboxed
/// here: without one, an untrusted author's fork pull request always waits.
pub fn decide_pull_request(pipeline: &Pipeline, event: &PushEvent, sandbox: bool) -> PullDecision {
    let Some(pr) = &event.pull_request else {
        return PullDecision::Skip("not a pull request".to_owned());
    };
    let matching: Vec<&PathFilter> = pipeline
        .triggers
        .iter()
        .filter(|t| {
            t.pull_requests
                .as_ref()
                .is_some_and(|g| g.matches(&pr.base_branch))
        })
        .map(|t| &t.paths)
        .collect();
    if matching.is_empty() {
        return PullDecision::Skip(format!(
            "no trigger matches pull requests into {}",
            pr.base_branch
        ));
    }
    let policy = &pipeline.pull_requests;
    let trusted = pr.author_trusted || policy.trusts(&pr.author);
    let waiting = match (pr.fork, policy.forks) {
        (false, _) => false,
        (true, ForkPolicy::Ignore) => {
            return PullDecision::Skip("pull requests from forks are ignored".to_owned());
        }
        (true, ForkPolicy::Approve) => !trusted,
        (true, ForkPolicy::Build) => !trusted && !sandbox,
    };
    let unknown_base = event.before == ZERO_SHA;
    let path_filters = if unknown_base || matching.iter().any(|f| f.is_empty()) {
        Vec::new()
    } else {
        let mut filters: Vec<PathFilter> = Vec::new();
        for f in matching {
            if !filters.contains(f) {
                filters.push(f.clone());
            }
        }
        filters
    };
    PullDecision::Build {
        path_filters,
        waiting,
    }
}

/// True when a commit message carries a skip marker anywhere, or a
/// `skip-checks: true` line in its trailers (the last paragraph, when the
/// message has more than one).
fn asks_to_skip(message: &str) -> bool {
    let lower = message.to_lowercase();
    if SKIP_MARKERS.iter().any(|m| lower.contains(m)) {
        return true;
    }
    let paragraphs: Vec<&str> = lower
        .split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let [_, .., trailers] = paragraphs.as_slice() else {
        return false;
    };
    trailers.lines().any(|line| {
        line.split_once(':')
            .is_some_and(|(k, v)| k.trim() == "skip-checks" && v.trim() == "true")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{
        Clone, Concurrency, GlobList, PathFilter, Pipeline, Status, Step, Trigger,
    };
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";

    fn globs(p: &[&str]) -> Option<GlobList> {
        Some(GlobList::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap())
    }

    fn filter(paths: &[&str], ignore: &[&str]) -> PathFilter {
        PathFilter {
            paths: paths.iter().map(|s| s.to_string()).collect(),
            ignore_paths: ignore.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn trig(branches: Option<&[&str]>, tags: Option<&[&str]>, paths: PathFilter) -> Trigger {
        Trigger {
            branches: branches.and_then(globs),
            tags: tags.and_then(globs),
            pull_requests: None,
            paths,
        }
    }

    fn pipeline(triggers: Vec<Trigger>, skip_ci: bool) -> Pipeline {
        Pipeline {
            name: "p".to_owned(),
            path: PathBuf::from("pipelines/p.toml"),
            revision: "0123456789ab".to_owned(),
            repo: "o/r".to_owned(),
            host: None,
            secret: None,
            insecure_no_signature: true,
            allow_sha1: false,
            clone_url: None,
            clone: Clone::default(),
            triggers,
            skip_ci,
            concurrency: Concurrency::Queue,
            runs_on: Vec::new(),
            timeout: None,
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
            status: Status {
                provider: None,
                api_url: None,
                token: None,
                context: "hookci/p".to_owned(),
                url: None,
                secret: None,
            },
            steps: vec![Step {
                name: "t".to_owned(),
                run: "true".to_owned(),
                shell: Default::default(),
                timeout: None,
                env: BTreeMap::new(),
                allow_failure: false,
            }],
            sandbox: Default::default(),
            limits: Default::default(),
            secret_files: Vec::new(),
            pull_requests: Default::default(),
        }
    }

    /// A push of `git_ref` from `before` to `after` with `message`.
    fn push(git_ref: &str, before: &str, after: &str, message: &str) -> PushEvent {
        PushEvent {
            repo: "o/r".to_owned(),
            git_ref: git_ref.to_owned(),
            kind: RefKind::of(git_ref),
            before: before.parse().unwrap(),
            after: after.parse().unwrap(),
            commit: Some(after.parse().unwrap()).filter(|_| after != ZERO_SHA),
            created: before == ZERO_SHA,
            deleted: after == ZERO_SHA,
            forced: false,
            clone_url: "https://example.com/o/r.git".to_owned(),
            ssh_url: None,
            web_url: None,
            message: message.to_owned(),
            pusher: "me".to_owned(),
            pull_request: None,
        }
    }

    fn build(filters: Vec<PathFilter>) -> Decision {
        Decision::Build {
            path_filters: filters,
        }
    }

    fn skip(reason: &str) -> Decision {
        Decision::Skip(reason.to_owned())
    }

    #[test]
    fn pushes_are_decided_in_the_documented_order() {
        let none = || pipeline(vec![], true);
        let main_only = || pipeline(vec![trig(Some(&["main"]), None, filter(&[], &[]))], true);
        let release = || {
            pipeline(
                vec![trig(
                    Some(&["main", "release/**", "!release/old"]),
                    Some(&["v*"]),
                    filter(&[], &[]),
                )],
                true,
            )
        };
        let star = || {
            pipeline(
                vec![trig(Some(&["feature/*"]), None, filter(&[], &[]))],
                true,
            )
        };
        let neg_first = || {
            pipeline(
                vec![trig(Some(&["!gh-pages"]), None, filter(&[], &[]))],
                true,
            )
        };
        let neg_then_pos = || {
            pipeline(
                vec![trig(
                    Some(&["!release/old", "release/**"]),
                    None,
                    filter(&[], &[]),
                )],
                true,
            )
        };
        let tags_only = || pipeline(vec![trig(None, Some(&["v*"]), filter(&[], &[]))], true);
        let paths_only = || {
            pipeline(
                vec![trig(None, None, filter(&["src/**"], &["docs/**"]))],
                true,
            )
        };
        let two_filtered = || {
            pipeline(
                vec![
                    trig(Some(&["main"]), None, filter(&["src/**"], &[])),
                    trig(Some(&["**"]), None, filter(&["Cargo.toml"], &[])),
                    trig(Some(&["dev"]), None, filter(&["src/**"], &[])),
                ],
                true,
            )
        };
        let one_unfiltered = || {
            pipeline(
                vec![
                    trig(Some(&["main"]), None, filter(&["src/**"], &[])),
                    trig(Some(&["main"]), None, filter(&[], &[])),
                ],
                true,
            )
        };
        let no_skip = || pipeline(vec![], false);

        let rows: Vec<(&str, Pipeline, PushEvent, Decision)> = vec![
            (
                "a note ref is neither branch nor tag",
                none(),
                push("refs/notes/commits", A, B, ""),
                skip("ref refs/notes/commits is neither a branch nor a tag"),
            ),
            (
                "a pull head is neither branch nor tag",
                none(),
                push("refs/pull/1/head", A, B, ""),
                skip("ref refs/pull/1/head is neither a branch nor a tag"),
            ),
            (
                "a deleted branch",
                none(),
                push("refs/heads/main", A, ZERO_SHA, ""),
                skip("branch main was deleted"),
            ),
            (
                "a deleted tag",
                tags_only(),
                push("refs/tags/v1", A, ZERO_SHA, ""),
                skip("tag v1 was deleted"),
            ),
            (
                "a test delivery",
                none(),
                push("refs/heads/main", A, A, ""),
                skip("before and after are the same commit: a test delivery"),
            ),
            (
                "[skip ci]",
                none(),
                push("refs/heads/main", A, B, "fix typo [skip ci]"),
                skip("the commit message asks to skip CI"),
            ),
            (
                "[ci skip] in upper case",
                none(),
                push("refs/heads/main", A, B, "docs [CI SKIP]"),
                skip("the commit message asks to skip CI"),
            ),
            (
                "[no ci] in the body",
                none(),
                push("refs/heads/main", A, B, "subject\n\nbody [no ci]"),
                skip("the commit message asks to skip CI"),
            ),
            (
                "[skip actions]",
                none(),
                push("refs/heads/main", A, B, "x [skip actions]"),
                skip("the commit message asks to skip CI"),
            ),
            (
                "[actions skip]",
                none(),
                push("refs/heads/main", A, B, "x [Actions Skip]"),
                skip("the commit message asks to skip CI"),
            ),
            (
                "a skip-checks trailer",
                none(),
                push(
                    "refs/heads/main",
                    A,
                    B,
                    "subject\n\nbody\n\nSigned-off-by: me\nskip-checks: true\n",
                ),
                skip("the commit message asks to skip CI"),
            ),
            (
                "a skip-checks trailer without a space",
                none(),
                push("refs/heads/main", A, B, "subject\n\n\nskip-checks:true"),
                skip("the commit message asks to skip CI"),
            ),
            (
                "skip-checks as the subject is not a trailer",
                none(),
                push("refs/heads/main", A, B, "skip-checks: true"),
                build(vec![]),
            ),
            (
                "skip-checks outside the last paragraph is not a trailer",
                none(),
                push(
                    "refs/heads/main",
                    A,
                    B,
                    "subject\n\nskip-checks: true\n\nmore text",
                ),
                build(vec![]),
            ),
            (
                "skip-checks: false does not skip",
                none(),
                push("refs/heads/main", A, B, "subject\n\nskip-checks: false"),
                build(vec![]),
            ),
            (
                "skip ci without brackets does not skip",
                none(),
                push("refs/heads/main", A, B, "please skip ci"),
                build(vec![]),
            ),
            (
                "skip_ci = false ignores markers",
                no_skip(),
                push("refs/heads/main", A, B, "x [skip ci]"),
                build(vec![]),
            ),
            (
                "no triggers: every branch",
                none(),
                push("refs/heads/feature/a/b", A, B, ""),
                build(vec![]),
            ),
            (
                "no triggers: no tags",
                none(),
                push("refs/tags/v1", ZERO_SHA, B, ""),
                skip("tags build only when a trigger names them"),
            ),
            (
                "a named branch",
                main_only(),
                push("refs/heads/main", A, B, ""),
                build(vec![]),
            ),
            (
                "another branch",
                main_only(),
                push("refs/heads/dev", A, B, ""),
                skip("no trigger matches branch dev"),
            ),
            (
                "a tag against a branches-only trigger",
                main_only(),
                push("refs/tags/main", A, B, ""),
                skip("no trigger matches tag main"),
            ),
            (
                "** crosses slashes",
                release(),
                push("refs/heads/release/1/x", A, B, ""),
                build(vec![]),
            ),
            (
                "a later negation excludes",
                release(),
                push("refs/heads/release/old", A, B, ""),
                skip("no trigger matches branch release/old"),
            ),
            (
                "a later positive re-includes",
                neg_then_pos(),
                push("refs/heads/release/old", A, B, ""),
                build(vec![]),
            ),
            (
                "* stays in one segment",
                star(),
                push("refs/heads/feature/a/b", A, B, ""),
                skip("no trigger matches branch feature/a/b"),
            ),
            (
                "* matches one segment",
                star(),
                push("refs/heads/feature/a", A, B, ""),
                build(vec![]),
            ),
            (
                "a leading negation starts from everything",
                neg_first(),
                push("refs/heads/main", A, B, ""),
                build(vec![]),
            ),
            (
                "a leading negation excludes its match",
                neg_first(),
                push("refs/heads/gh-pages", A, B, ""),
                skip("no trigger matches branch gh-pages"),
            ),
            (
                "a tag glob matches a tag",
                release(),
                push("refs/tags/v1.2", ZERO_SHA, B, ""),
                build(vec![]),
            ),
            (
                "a tag glob does not match a branch",
                tags_only(),
                push("refs/heads/v1", A, B, ""),
                skip("no trigger matches branch v1"),
            ),
            (
                "an unmatched tag",
                tags_only(),
                push("refs/tags/release-1", ZERO_SHA, B, ""),
                skip("no trigger matches tag release-1"),
            ),
            (
                "a trigger naming neither builds every branch",
                paths_only(),
                push("refs/heads/x", A, B, ""),
                build(vec![filter(&["src/**"], &["docs/**"])]),
            ),
            (
                "a trigger naming neither builds no tags",
                paths_only(),
                push("refs/tags/v1", ZERO_SHA, B, ""),
                skip("no trigger matches tag v1"),
            ),
            (
                "a new branch always builds",
                paths_only(),
                push("refs/heads/x", ZERO_SHA, B, ""),
                build(vec![]),
            ),
            (
                "matching triggers' filters are collected once each",
                two_filtered(),
                push("refs/heads/main", A, B, ""),
                build(vec![filter(&["src/**"], &[]), filter(&["Cargo.toml"], &[])]),
            ),
            (
                "a matching trigger without paths builds everything",
                one_unfiltered(),
                push("refs/heads/main", A, B, ""),
                build(vec![]),
            ),
        ];
        for (what, pipeline, event, want) in rows {
            assert_eq!(decide(&pipeline, &event), want, "{what}");
        }
    }

    fn pr_event(base: &str, fork: bool, trusted: bool, author: &str) -> PushEvent {
        let mut e = push("refs/pull/7/head", A, B, "");
        e.kind = RefKind::Other;
        e.pull_request = Some(crate::model::PullRequest {
            number: 7,
            title: "t".to_owned(),
            author: author.to_owned(),
            author_trusted: trusted,
            base_branch: base.to_owned(),
            head_branch: "feature".to_owned(),
            head_repo: if fork { "m/r" } else { "o/r" }.to_owned(),
            fork,
            head_clone_url: None,
        });
        e
    }

    fn pr_pipeline(forks: ForkPolicy, trusted: &[&str]) -> Pipeline {
        let mut p = pipeline(
            vec![Trigger {
                pull_requests: globs(&["main", "release/**"]),
                ..Trigger::default()
            }],
            true,
        );
        p.pull_requests = crate::pipeline::PullRequests {
            forks,
            trusted_authors: trusted.iter().map(|s| s.to_string()).collect(),
            secrets_for_forks: false,
        };
        p
    }

    fn waits(d: PullDecision) -> Option<bool> {
        match d {
            PullDecision::Build { waiting, .. } => Some(waiting),
            PullDecision::Skip(_) => None,
        }
    }

    /// forks, fork?, host trusts?, trusted_authors, sandbox?, want (None:
    /// skipped; Some: whether it waits).
    type Row = (
        ForkPolicy,
        bool,
        bool,
        &'static [&'static str],
        bool,
        Option<bool>,
    );

    #[test]
    fn fork_policy_as_a_table() {
        use ForkPolicy::*;
        #[rustfmt::skip]
        let rows: &[Row] = &[
            (Approve, false, false, &[],     true,  Some(false)), // own branch: never waits
            (Approve, false, false, &[],     false, Some(false)),
            (Approve, true,  false, &[],     true,  Some(true)),  // a stranger's fork waits
            (Approve, true,  true,  &[],     true,  Some(false)), // the host says member
            (Approve, true,  false, &["ALI"], true, Some(false)), // trusted_authors, any case
            (Approve, true,  false, &["bob"], true, Some(true)),
            (Build,   true,  false, &[],     true,  Some(false)), // sandboxed: builds
            (Build,   true,  false, &[],     false, Some(true)),  // no sandbox: waits anyway
            (Build,   true,  true,  &[],     false, Some(false)),
            (Ignore,  true,  true,  &[],     true,  None),
            (Ignore,  false, false, &[],     true,  Some(false)),
        ];
        for &(forks, fork, host_trusts, trusted, sandbox, want) in rows {
            let got = decide_pull_request(
                &pr_pipeline(forks, trusted),
                &pr_event("main", fork, host_trusts, "ali"),
                sandbox,
            );
            assert_eq!(
                waits(got),
                want,
                "{forks:?} fork={fork} trusted={host_trusts} {trusted:?} sandbox={sandbox}"
            );
        }
    }

    #[test]
    fn pull_requests_build_only_where_a_trigger_names_their_target_and_never_as_pushes() {
        let p = pr_pipeline(ForkPolicy::Approve, &[]);
        assert_eq!(
            decide_pull_request(&p, &pr_event("release/1.2", false, false, "a"), true),
            PullDecision::Build {
                path_filters: Vec::new(),
                waiting: false
            }
        );
        assert_eq!(
            decide_pull_request(&p, &pr_event("dev", false, false, "a"), true),
            PullDecision::Skip("no trigger matches pull requests into dev".to_owned())
        );
        // A trigger that names only pull requests builds no push.
        assert!(matches!(
            decide(&p, &push("refs/heads/main", A, B, "m")),
            Decision::Skip(_)
        ));
        // A pipeline without pull_requests builds none.
        let plain = pipeline(Vec::new(), true);
        assert!(matches!(
            decide_pull_request(&plain, &pr_event("main", false, false, "a"), true),
            PullDecision::Skip(_)
        ));
    }
}
