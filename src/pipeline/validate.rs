//! Raw pipeline TOML into a validated [`Pipeline`], in one step: every
//! problem in a file is collected, each with its line and column.

use super::check::Checker;
use super::raw::{RawPipeline, RawPullRequests, RawSecret, RawStatus, RawStep, RawTrigger};
use super::{
    Clone as CloneOptions, Concurrency, ForkPolicy, GlobList, PathFilter, Pipeline, Provider,
    PullRequests, Shell, Status, Step, Trigger,
};
use crate::secret::{Secret, SecretUse};
use crate::webhook::Host;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use toml::Spanned;

/// Environment names hookci sets for every step; `HOOKCI_*` too.
/// Set by hookci for every step. PATH and LANG have defaults a pipeline may
/// override (a toolchain outside the default PATH, another locale).
const RESERVED_ENV: &[&str] = &["HOOKCI", "CI", "HOME"];

const CONCURRENCY: &[(&str, Concurrency)] = &[
    ("queue", Concurrency::Queue),
    ("supersede", Concurrency::Supersede),
    ("parallel", Concurrency::Parallel),
];

const FORKS: &[(&str, ForkPolicy)] = &[
    ("approve", ForkPolicy::Approve),
    ("build", ForkPolicy::Build),
    ("ignore", ForkPolicy::Ignore),
];

const SHELLS: &[(&str, Shell)] = &[("sh", Shell::Sh), ("bash", Shell::Bash)];

/// True for a pipeline name: `[a-z0-9][a-z0-9._-]*`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

/// Parses and validates the text of `path`, a pipeline called `name`.
pub(super) fn pipeline(
    name: &str,
    path: &Path,
    src: &str,
) -> Result<(Pipeline, Vec<super::Finding>), Vec<super::Finding>> {
    let mut c = Checker::new(path, src);
    if !valid_name(name) {
        c.error(
            None,
            format!(
                "\"{name}\" is not a valid pipeline name; a pipeline file is NAME.toml with NAME matching [a-z0-9][a-z0-9._-]*"
            ),
        );
    }
    let Some(raw) = c.parse_all::<RawPipeline>(super::raw::TABLES) else {
        return Err(c.sorted_errors());
    };
    let pipeline = convert(&mut c, name, path, raw);
    match pipeline {
        Some(mut p) if c.errors.is_empty() => {
            p.revision = super::revision(src);
            Ok((p, c.warnings))
        }
        _ => Err(c.sorted_errors()),
    }
}

fn convert(c: &mut Checker<'_>, name: &str, path: &Path, raw: RawPipeline) -> Option<Pipeline> {
    let start = 0..0;
    let repo = match &raw.repo {
        Some(r) if !r.get_ref().trim().is_empty() => Some(r.get_ref().trim().to_owned()),
        Some(r) => {
            c.error(
                Some(&r.span()),
                "repo is empty; write the repository's full name, e.g. \"octocat/hello-world\"",
            );
            None
        }
        None => {
            c.error(
                Some(&start),
                "repo is required: the repository's full name as the host reports it, e.g. \"octocat/hello-world\"",
            );
            None
        }
    };

    let hosts: Vec<(&str, Host)> = Host::ALL.iter().map(|h| (h.as_str(), *h)).collect();
    let host = raw.host.as_ref().and_then(|h| c.one_of("host", h, &hosts));

    let insecure = raw.insecure_no_signature.as_ref();
    let insecure_on = insecure.is_some_and(|i| *i.get_ref());
    let secret = match (&raw.secret, insecure_on) {
        (Some(s), false) => c.secret("secret", SecretUse::Webhook, s),
        (Some(s), true) => {
            c.error(
                Some(&s.span()),
                "secret and insecure_no_signature = true are both set; remove one",
            );
            None
        }
        (None, true) => {
            c.warn(
                insecure.map(|i| i.span()).as_ref(),
                "the pipeline accepts unsigned deliveries; anyone who can reach hookci can trigger builds",
            );
            None
        }
        (None, false) => {
            let at = insecure.map_or(start.clone(), |i| i.span());
            c.error(
                Some(&at),
                "secret is required; set secret = { env = \"NAME\" } or, to accept unsigned deliveries, insecure_no_signature = true",
            );
            None
        }
    };

    let clone_url = raw.clone_url.as_ref().and_then(|u| {
        let url = u.get_ref().trim();
        if url.is_empty() {
            c.error(
                Some(&u.span()),
                "clone_url is empty; remove it to use the payload's clone URL",
            );
            None
        } else {
            Some(url.to_owned())
        }
    });

    if insecure_on && clone_url.is_none() {
        c.warn(
            insecure.map(|i| i.span()).as_ref(),
            "an unsigned delivery names the repository URL to clone, so anyone who can reach hookci can make it run code of their choosing; set clone_url",
        );
    }

    let clone = CloneOptions {
        ssh_key: raw
            .clone
            .ssh_key
            .as_ref()
            .and_then(|s| c.secret("clone.ssh_key", SecretUse::Clone, s)),
        token: raw
            .clone
            .token
            .as_ref()
            .and_then(|s| c.secret("clone.token", SecretUse::Clone, s)),
        submodules: raw.clone.submodules,
        accept_new_host_keys: raw.clone.accept_new_host_keys,
    };

    let triggers: Vec<Trigger> = raw.trigger.iter().filter_map(|t| trigger(c, t)).collect();

    let concurrency = raw
        .concurrency
        .as_ref()
        .map_or(Some(Concurrency::Queue), |v| {
            c.one_of("concurrency", v, CONCURRENCY)
        });
    let timeout = raw
        .timeout
        .as_ref()
        .and_then(|t| c.duration("timeout", t, false));
    let mut runs_on = Vec::new();
    for label in raw.runs_on.iter().flat_map(|l| l.get_ref()) {
        let name = label.get_ref().trim();
        if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
            c.error(
                Some(&label.span()),
                "a runs_on label must be a name of 1 to 100 printable characters",
            );
        } else {
            runs_on.push(name.to_owned());
        }
    }

    let env = env_table(c, "[env]", &raw.env);
    let secrets = secrets_table(c, &raw.secrets);
    for key in raw.secrets.keys() {
        if raw.env.contains_key(key) {
            c.error(
                Some(&key.span()),
                format!(
                    "{} is set in both [env] and [secrets]; keep one",
                    key.get_ref()
                ),
            );
        }
    }

    let status = status(c, name, &raw.status);
    let steps = steps(c, raw.steps.as_ref());
    super::credentials::check(c, &raw);
    let sandbox = super::sandbox::sandbox(c, raw.sandbox.as_ref());
    let limits = super::sandbox::limits(c, raw.limits.as_ref());
    let pull_requests = pull_requests(c, raw.pull_requests.as_ref());

    Some(Pipeline {
        name: name.to_owned(),
        path: path.to_path_buf(),
        repo: repo?,
        host,
        secret,
        insecure_no_signature: insecure_on,
        allow_sha1: raw.allow_sha1,
        clone_url,
        clone,
        triggers,
        skip_ci: raw.skip_ci.unwrap_or(true),
        concurrency: concurrency?,
        runs_on,
        timeout,
        env,
        secrets,
        status: status?,
        steps,
        sandbox,
        limits,
        secret_files: c.secret_files.clone(),
        pull_requests: pull_requests?,
        revision: String::new(),
    })
}

/// `[pull_requests]`; `None` after an error.
fn pull_requests(c: &mut Checker<'_>, raw: Option<&RawPullRequests>) -> Option<PullRequests> {
    let Some(raw) = raw else {
        return Some(PullRequests::default());
    };
    let forks = raw
        .forks
        .as_ref()
        .map_or(Some(ForkPolicy::Approve), |v| c.one_of("forks", v, FORKS));
    let mut ok = true;
    for a in &raw.trusted_authors {
        let login = a.get_ref();
        if login.trim().is_empty() || login.trim() != login {
            c.error(
                Some(&a.span()),
                "a trusted author is a host login, without spaces around it",
            );
            ok = false;
        }
    }
    let secrets_for_forks = raw.secrets_for_forks.as_ref().is_some_and(|s| *s.get_ref());
    if let Some(s) = raw.secrets_for_forks.as_ref().filter(|s| *s.get_ref()) {
        c.warn(
            Some(&s.span()),
            "secrets_for_forks = true gives [secrets] and the clone credentials to the steps of pull requests from forks, which anyone can open",
        );
    }
    Some(PullRequests {
        forks: forks?,
        trusted_authors: raw
            .trusted_authors
            .iter()
            .map(|a| a.get_ref().clone())
            .collect(),
        secrets_for_forks,
    })
    .filter(|_| ok)
}

type Globs = Option<Spanned<Vec<Spanned<String>>>>;

/// A glob list's patterns, each checked where it is written.
fn globs(c: &mut Checker<'_>, key: &str, list: &Globs) -> Option<Vec<String>> {
    let list = list.as_ref()?;
    if list.get_ref().is_empty() {
        c.error(
            Some(&list.span()),
            format!("{key} is empty; list at least one glob or remove the key"),
        );
        return None;
    }
    let mut ok = true;
    for p in list.get_ref() {
        if let Err(e) = GlobList::check(p.get_ref()) {
            c.error(Some(&p.span()), e);
            ok = false;
        }
    }
    ok.then(|| list.get_ref().iter().map(|p| p.get_ref().clone()).collect())
}

fn trigger(c: &mut Checker<'_>, t: &RawTrigger) -> Option<Trigger> {
    let branches = globs(c, "branches", &t.branches);
    let tags = globs(c, "tags", &t.tags);
    let pull_requests = globs(c, "pull_requests", &t.pull_requests);
    let paths = globs(c, "paths", &t.paths);
    let ignore_paths = globs(c, "ignore_paths", &t.ignore_paths);
    let compile = |p: Option<Vec<String>>| p.map(|p| GlobList::new(&p)).transpose().ok().flatten();
    let failed = |written: &Globs, got: &Option<Vec<String>>| written.is_some() && got.is_none();
    if failed(&t.branches, &branches)
        || failed(&t.tags, &tags)
        || failed(&t.pull_requests, &pull_requests)
        || failed(&t.paths, &paths)
        || failed(&t.ignore_paths, &ignore_paths)
    {
        return None;
    }
    Some(Trigger {
        branches: compile(branches),
        tags: compile(tags),
        pull_requests: compile(pull_requests),
        paths: PathFilter {
            paths: paths.unwrap_or_default(),
            ignore_paths: ignore_paths.unwrap_or_default(),
        },
    })
}

/// Checks one environment variable name; `table` says where it is.
fn env_name(c: &mut Checker<'_>, table: &str, key: &Spanned<String>) -> bool {
    let name = key.get_ref();
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|ch| ch.is_ascii_alphabetic() || ch == '_')
        && chars.all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
    if !valid {
        c.error(
            Some(&key.span()),
            format!(
                "\"{name}\" in {table} is not a valid environment variable name; use letters, digits and _, not starting with a digit"
            ),
        );
        return false;
    }
    if RESERVED_ENV.contains(&name.as_str()) || name.starts_with("HOOKCI_") {
        c.error(
            Some(&key.span()),
            format!(
                "{name} in {table} is reserved: hookci sets CI, HOME and HOOKCI_* for every step"
            ),
        );
        return false;
    }
    true
}

fn env_table(
    c: &mut Checker<'_>,
    table: &str,
    raw: &BTreeMap<Spanned<String>, Spanned<String>>,
) -> BTreeMap<String, String> {
    raw.iter()
        .filter(|(k, _)| env_name(c, table, k))
        .map(|(k, v)| (k.get_ref().clone(), v.get_ref().clone()))
        .collect()
}

fn secrets_table(
    c: &mut Checker<'_>,
    raw: &BTreeMap<Spanned<String>, Spanned<RawSecret>>,
) -> BTreeMap<String, Secret> {
    let mut out = BTreeMap::new();
    for (k, v) in raw {
        if !env_name(c, "[secrets]", k) {
            continue;
        }
        if let Some(s) = c.secret(&format!("secrets.{}", k.get_ref()), SecretUse::Step, v) {
            out.insert(k.get_ref().clone(), s);
        }
    }
    out
}

fn status(c: &mut Checker<'_>, name: &str, raw: &RawStatus) -> Option<Status> {
    let providers: Vec<(&str, Provider)> = Provider::ALL.iter().map(|p| (p.as_str(), *p)).collect();
    let provider = match &raw.provider {
        Some(p) => Some(c.one_of("status provider", p, &providers)?),
        None => None,
    };
    let api_url = raw
        .api_url
        .as_ref()
        .and_then(|u| c.http_url("status.api_url", u));
    let token = raw
        .token
        .as_ref()
        .and_then(|t| c.secret("status.token", SecretUse::Status, t));
    let context = match &raw.context {
        Some(ctx) if ctx.get_ref().trim().is_empty() => {
            c.error(
                Some(&ctx.span()),
                "status.context is empty; remove it to use hookci/NAME",
            );
            String::new()
        }
        Some(ctx) => ctx.get_ref().trim().to_owned(),
        None => format!("hookci/{name}"),
    };
    let url = raw.url.as_ref().and_then(|u| c.http_url("status.url", u));
    let secret = raw
        .secret
        .as_ref()
        .and_then(|s| c.secret("status.secret", SecretUse::Status, s));
    let webhook = provider == Some(Provider::Webhook);
    if webhook {
        let at = raw.provider.as_ref().map(|p| p.span());
        if raw.url.is_none() {
            c.error(
                at.as_ref(),
                "status provider \"webhook\" needs url, the address the status is posted to",
            );
        }
        if raw.secret.is_none() {
            c.error(at.as_ref(), "status provider \"webhook\" needs secret, the whsec_ key its posts are signed with");
        }
    } else {
        for (key, v) in [
            ("url", raw.url.as_ref().map(|u| u.span())),
            ("secret", raw.secret.as_ref().map(|s| s.span())),
        ] {
            if let Some(span) = v {
                c.error(
                    Some(&span),
                    format!("status.{key} is only used with provider = \"webhook\""),
                );
            }
        }
    }
    Some(Status {
        provider,
        api_url,
        token,
        context,
        url,
        secret,
    })
}

fn steps(c: &mut Checker<'_>, raw: Option<&Spanned<Vec<RawStep>>>) -> Vec<Step> {
    let Some(raw) = raw.filter(|s| !s.get_ref().is_empty()) else {
        let at = raw.map_or(0..0, |s| s.span());
        c.error(
            Some(&at),
            "the pipeline has no steps; add at least one [[steps]] with a name and run",
        );
        return Vec::new();
    };
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for s in raw.get_ref() {
        let name = s.name.get_ref().trim();
        if name.is_empty() {
            c.error(Some(&s.name.span()), "a step's name is empty");
        } else if name.chars().any(char::is_control) {
            c.error(
                Some(&s.name.span()),
                "a step's name must be one line of printable text",
            );
        } else if !seen.insert(name.to_owned()) {
            c.error(
                Some(&s.name.span()),
                format!("two steps are named \"{name}\"; step names must be unique"),
            );
        }
        if s.run.get_ref().trim().is_empty() {
            c.error(
                Some(&s.run.span()),
                format!("step \"{name}\" has an empty run"),
            );
        }
        let shell = s
            .shell
            .as_ref()
            .map_or(Some(Shell::Sh), |v| c.one_of("shell", v, SHELLS))
            .unwrap_or_default();
        let timeout = s
            .timeout
            .as_ref()
            .and_then(|t| c.duration("timeout", t, false));
        let env = env_table(c, &format!("the env of step \"{name}\""), &s.env);
        out.push(Step {
            name: name.to_owned(),
            run: s.run.get_ref().clone(),
            shell,
            timeout,
            env,
            allow_failure: s.allow_failure,
        });
    }
    out
}
