//! HTML pages (`GET /`, `GET /builds/ID`) and the status badge
//! (`GET /badge/NAME.svg`).
//!
//! Almost everything these pages show was written by whoever can push:
//! branch names, commit messages, logs, and the hosts' answers to reports.
//! The pages are maud templates, so every value is escaped unless a
//! template marks it otherwise (only the fixed style sheet and script are);
//! the badge escapes its few values by hand. Every HTML answer carries a
//! Content-Security-Policy that allows only the page's own style and script
//! (by hash) and connections to this server, as a second line of defence.
//! Pages load nothing from elsewhere: the build box may be offline.
//!
//! Reads follow the API's rule (`private = true` needs the admin token); a
//! page or badge that needs it asks a browser for Basic credentials. These
//! handlers only read the store and log files: they never change a build.

mod badge;
mod live;
mod logtail;
mod logview;
mod view;

pub use live::{build_live, index_live};

use super::api::{build_id, require_read};
use super::{ApiError, AppState};
use crate::store::{Build, BuildFilter, BuildStatus};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::Markup;
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// How much of a log a build page embeds: its last 512 KiB. Earlier parts
/// are fetched on demand (`/builds/ID/log?before=OFFSET`), as much at a
/// time; the whole log is at `/api/builds/ID/log`.
const LOG_EMBED_BYTES: u64 = 512 * 1024;

/// How many builds `GET /` lists per page.
const INDEX_BUILDS: u32 = 50;

/// The Content-Security-Policy of every page: nothing but the page's own
/// style sheet and script (allowed by their hashes), connections to this
/// server (the live log) and images from it (badges).
static PAGE_CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let policy = format!(
        "default-src 'none'; style-src '{}'; script-src '{}'; connect-src 'self'; \
         img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        csp_hash(&view::STYLE),
        csp_hash(view::SCRIPT),
    );
    HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("default-src 'none'"))
});

/// `sha256-BASE64` of an inline element's text, as CSP names it.
fn csp_hash(text: &str) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// Why a page could not be shown.
#[derive(Debug)]
enum PageError {
    /// Reads need the admin token and none (or a wrong one) was given: 401
    /// asking for Basic credentials.
    Unauthorized,
    /// A short HTML page: a status and one sentence for the reader.
    Page(StatusCode, &'static str),
    /// Anything else the API already answers (store failures: 503).
    Api(ApiError),
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        PageError::Api(e)
    }
}

impl From<crate::store::StoreError> for PageError {
    fn from(e: crate::store::StoreError) -> Self {
        PageError::Api(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::Unauthorized => {
                let mut res = html(
                    StatusCode::UNAUTHORIZED,
                    view::message_page(
                        "Sign in",
                        "This server is private: sign in with any user name and the admin token as the password.",
                    ),
                );
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"hookci\", charset=\"UTF-8\""),
                );
                res
            }
            PageError::Page(status, sentence) => {
                let title = status.canonical_reason().unwrap_or("Error");
                html(status, view::message_page(title, sentence))
            }
            PageError::Api(e) => e.into_response(),
        }
    }
}

/// An HTML answer with the pages' security headers.
fn html(status: StatusCode, markup: Markup) -> Response {
    let mut res = (status, markup.into_string()).into_response();
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CONTENT_SECURITY_POLICY, PAGE_CSP.clone());
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

/// The API's read check, with the answers a browser understands.
fn check_read(state: &AppState, headers: &HeaderMap) -> Result<(), PageError> {
    require_read(state, headers).map_err(|e| match e.status() {
        StatusCode::UNAUTHORIZED => PageError::Unauthorized,
        StatusCode::FORBIDDEN => PageError::Page(
            StatusCode::FORBIDDEN,
            "This server is private and has no admin token configured, so its pages cannot be opened.",
        ),
        _ => PageError::Api(e),
    })
}

/// The query string as key/value pairs; a malformed one is the caller's error.
fn query_map(
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<BTreeMap<String, String>, PageError> {
    query
        .map(|Query(q)| q)
        .map_err(|_| PageError::Page(StatusCode::BAD_REQUEST, "The query string is malformed."))
}

/// A query value, when present and not empty.
fn non_empty(query: &BTreeMap<String, String>, key: &str) -> Option<String> {
    query.get(key).filter(|v| !v.is_empty()).cloned()
}

/// `GET /?pipeline=&branch=&before=`: pipelines and recent builds, newest
/// first; `before` (a build id) pages to older builds.
pub async fn index(
    State(state): State<AppState>,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    match index_page(&state, query, &headers).await {
        Ok(markup) => html(StatusCode::OK, markup),
        Err(e) => e.into_response(),
    }
}

async fn index_page(
    state: &AppState,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
    headers: &HeaderMap,
) -> Result<Markup, PageError> {
    check_read(state, headers)?;
    let query = query_map(query)?;
    let before = match non_empty(&query, "before") {
        None => None,
        Some(b) => Some(
            b.parse::<i64>()
                .ok()
                .filter(|b| *b > 0)
                .ok_or(PageError::Page(
                    StatusCode::BAD_REQUEST,
                    "The before parameter must be a build number.",
                ))?,
        ),
    };
    let status = match non_empty(&query, "status") {
        None => None,
        Some(st) => Some(st.parse::<BuildStatus>().map_err(|()| {
            PageError::Page(
                StatusCode::BAD_REQUEST,
                "The status parameter must be one of waiting, queued, running, success, failure, error, cancelled, skipped.",
            )
        })?),
    };
    let filter = view::IndexFilter {
        pipeline: non_empty(&query, "pipeline"),
        branch: non_empty(&query, "branch"),
        status,
        event: non_empty(&query, "event"),
        before,
    };

    let mut pipelines = Vec::new();
    for p in state.pipelines().values() {
        let latest = state.store().latest_build(&p.name).await?;
        pipelines.push(view::PipelineRow {
            name: p.name.clone(),
            repo: p.repo.clone(),
            latest,
        });
    }
    let builds = state
        .store()
        .builds(BuildFilter {
            pipeline: filter.pipeline.clone(),
            branch: filter.branch.clone(),
            statuses: filter.status.into_iter().collect(),
            before: filter.before,
            limit: INDEX_BUILDS,
            event: filter.event.clone(),
            git_ref: None,
        })
        .await?;
    let older = (builds.len() == INDEX_BUILDS as usize)
        .then(|| builds.last().map(|b| b.id))
        .flatten();
    Ok(view::index(&view::Index {
        public_url: &state.config().public_url,
        pipelines: &pipelines,
        builds: &builds,
        filter: &filter,
        older,
        now: time::OffsetDateTime::now_utc(),
    }))
}

/// `GET /runners`: every runner process registered in the store.
pub async fn runners_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let page = async {
        check_read(&state, &headers)?;
        let runners = state.store().runners().await?;
        Ok::<_, PageError>(view::runners(&runners, time::OffsetDateTime::now_utc()))
    };
    match page.await {
        Ok(markup) => html(StatusCode::OK, markup),
        Err(e) => e.into_response(),
    }
}

/// `GET /pipelines/NAME`: a pipeline, the latest build of each branch, its
/// newest builds, and a button to trigger a branch.
pub async fn pipeline_page(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let page = async {
        check_read(&state, &headers)?;
        let no_such_pipeline = PageError::Page(StatusCode::NOT_FOUND, "There is no such pipeline.");
        let Ok(Path(name)) = name else {
            return Err(no_such_pipeline);
        };
        let pipelines = state.pipelines();
        let Some(pipeline) = pipelines.get(&name) else {
            return Err(no_such_pipeline);
        };
        let branches = state.store().latest_per_branch(&name, 100).await?;
        let recent = state
            .store()
            .builds(BuildFilter {
                pipeline: Some(name.clone()),
                limit: 20,
                ..BuildFilter::default()
            })
            .await?;
        Ok::<_, PageError>(view::pipeline(&view::PipelinePage {
            pipeline,
            branches: &branches,
            recent: &recent,
            admin: state.config().admin_token.is_some(),
            now: time::OffsetDateTime::now_utc(),
        }))
    };
    match page.await {
        Ok(markup) => html(StatusCode::OK, markup),
        Err(e) => e.into_response(),
    }
}

/// `GET /builds/ID`: one build, its steps, its reports and its log, followed
/// live while it runs. This is the `target_url` of every commit status.
pub async fn build_page(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    // `?times=1`: each log line shows when it arrived. Anything else shows
    // no times (an unknown parameter changes nothing).
    let times = query.is_ok_and(|Query(q)| q.get("times").is_some_and(|v| v == "1"));
    match build_page_markup(&state, id, &headers, times).await {
        Ok(markup) => html(StatusCode::OK, markup),
        Err(e) => e.into_response(),
    }
}

async fn build_page_markup(
    state: &AppState,
    id: Result<Path<String>, PathRejection>,
    headers: &HeaderMap,
    times: bool,
) -> Result<Markup, PageError> {
    check_read(state, headers)?;
    let no_such_build = PageError::Page(StatusCode::NOT_FOUND, "There is no such build.");
    let Ok(Path(raw)) = id else {
        return Err(no_such_build);
    };
    let Ok(id) = build_id(&raw) else {
        return Err(no_such_build);
    };
    let Some(build) = state.store().build(id).await? else {
        return Err(no_such_build);
    };
    let file = state.log_file(id).await?;
    let log = match logtail::read(&file.path, LOG_EMBED_BYTES).await {
        Ok(tail) => Some(tail),
        Err(e) => {
            tracing::error!(build = id, error = %e, "cannot read a build log for its page");
            None
        }
    };
    let ctx = BuildContext::load(state, build).await?;
    let log = match log {
        Some(tail) => {
            let live = !ctx.build.status.is_final();
            Some(layout_log(state, id, &file.path, &ctx.steps, tail, live, times).await)
        }
        None => None,
    };
    Ok(view::build(&ctx.page(log.as_ref())))
}

/// What a build page shows besides its log.
struct BuildContext {
    build: Build,
    steps: Vec<view::StepView>,
    reports: Vec<crate::store::ReportRecord>,
    origin: Option<crate::store::BuildOrigin>,
    provider: Option<crate::pipeline::Provider>,
    admin: bool,
    /// The step a re-run from the failed step would start at, when the
    /// build can be re-run so (see `store::Resume::from_failed`).
    rerun_from: Option<String>,
    /// Why it waits, while it waits.
    waiting_reason: Option<String>,
}

impl BuildContext {
    async fn load(state: &AppState, build: Build) -> Result<BuildContext, PageError> {
        let id = build.id;
        let records = state.store().steps(id).await?;
        let reports = state.store().reports(id).await?;
        let origin = state.store().origin(id).await?;
        let pipelines = state.pipelines();
        let pipeline = pipelines.get(&build.pipeline);
        let host = build.host.as_deref().and_then(|h| h.parse().ok());
        let provider = pipeline.map(|p| p.provider_for(host));
        let rerun_from = crate::store::Resume::from_failed(&build, &records)
            .ok()
            .filter(|r| pipeline.is_some_and(|p| r.fits(p.steps.iter().map(|s| s.name.as_str()))))
            .map(|r| r.from_name);
        let steps = step_views(&build, records, pipeline);
        let waiting_reason =
            crate::runners::waiting_reason_now(state.store(), &pipelines, &build).await?;
        Ok(BuildContext {
            waiting_reason,
            rerun_from,
            build,
            steps,
            reports,
            origin,
            provider,
            admin: state.config().admin_token.is_some(),
        })
    }

    fn page<'a>(&'a self, log: Option<&'a view::LogPart>) -> view::BuildPage<'a> {
        view::BuildPage {
            build: &self.build,
            steps: &self.steps,
            reports: &self.reports,
            origin: self.origin.as_ref(),
            log,
            provider: self.provider,
            admin: self.admin,
            rerun_from: self.rerun_from.as_deref(),
            waiting_reason: self.waiting_reason.as_deref(),
            now: time::OffsetDateTime::now_utc(),
        }
    }
}

/// The steps with whether a failure was allowed. The store does not keep
/// the rule, but what the runner did shows it: a failed step after which
/// the build went on (a later step ran, or the build passed) was allowed.
/// While nothing ran after it yet, the pipeline as loaded now says.
fn step_views(
    build: &Build,
    records: Vec<crate::store::StepRecord>,
    pipeline: Option<&crate::pipeline::Pipeline>,
) -> Vec<view::StepView> {
    use crate::store::StepStatus;
    let ran = |s: &crate::store::StepRecord| {
        !matches!(s.status, StepStatus::Pending | StepStatus::Skipped)
    };
    (0..records.len())
        .map(|i| {
            let r = &records[i];
            let allowed = r.status == StepStatus::Failure
                && (build.status == BuildStatus::Success
                    || records[i + 1..].iter().any(ran)
                    || (!build.status.is_final()
                        && pipeline
                            .and_then(|p| p.steps.get(i))
                            .is_some_and(|s| s.name == r.name && s.allow_failure)));
            view::StepView {
                record: r.clone(),
                allowed,
            }
        })
        .collect()
}

/// Lays out a log part for a page: numbered from the line it starts at, in
/// the section it starts in; with each line's time when `times`.
async fn layout_log(
    state: &AppState,
    id: i64,
    path: &std::path::Path,
    steps: &[view::StepView],
    tail: logtail::LogTail,
    live: bool,
    times: bool,
) -> view::LogPart {
    let names: Vec<String> = steps.iter().map(|s| s.record.name.clone()).collect();
    let (first_line, section) = if tail.skipped > 0 {
        let started = steps
            .iter()
            .filter(|s| s.record.status != crate::store::StepStatus::Pending)
            .count();
        let lines = logtail::lines_before(path, tail.skipped).await.unwrap_or(0);
        (
            lines + 1,
            logview::section_at_cut(&tail.text, &names, started),
        )
    } else {
        (1, None)
    };
    let mut parser = logview::LogParser::new(names, section, first_line);
    if let Ok(Some(build)) = state.store().build(id).await {
        if let Some(pipeline) = state.pipelines().get(&build.pipeline) {
            parser.mask_with(&crate::runner::log::visible::pipeline_secrets(pipeline));
        }
    }
    if times {
        let (path, from) = (path.to_path_buf(), tail.skipped);
        let found = tokio::task::spawn_blocking(move || {
            crate::runner::log::times::LineTimes::open(&path, from)
        })
        .await;
        if let Ok(Some(line_times)) = found {
            parser.with_times(line_times, tail.skipped);
        }
    }
    let mut ops = vec![logview::Op::Section(section)];
    let rest = parser.feed(&tail.text, &mut ops);
    // An unfinished last line: a live page leaves it to its stream, which
    // sends it once it is complete; a finished log ends there.
    let end = tail.end - rest.len() as u64;
    let (next_line, (section_now, in_group)) = (parser.next_line, parser.state());
    if !rest.is_empty() && !live {
        parser.line(rest, &mut ops);
    }
    view::LogPart {
        sections: logview::sections(ops),
        skipped: tail.skipped,
        missing: tail.missing,
        end,
        next_line,
        section: section_now,
        in_group,
        times,
    }
}

/// `GET /builds/ID/log?before=OFFSET`: the part of the log before byte
/// OFFSET, as HTML for the build page to put in place (its "Show earlier
/// output").
pub async fn log_part(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let part = async {
        check_read(&state, &headers)?;
        let no_such_build = PageError::Page(StatusCode::NOT_FOUND, "There is no such build.");
        let Ok(Path(raw)) = id else {
            return Err(no_such_build);
        };
        let Ok(id) = build_id(&raw) else {
            return Err(no_such_build);
        };
        let query = query_map(query)?;
        let times = non_empty(&query, "times").is_some_and(|v| v == "1");
        let before = non_empty(&query, "before")
            .and_then(|b| b.parse::<u64>().ok())
            .ok_or(PageError::Page(
                StatusCode::BAD_REQUEST,
                "The before parameter must be a byte offset.",
            ))?;
        let Some(build) = state.store().build(id).await? else {
            return Err(no_such_build);
        };
        let file = state.log_file(id).await?;
        let path = file.path.clone();
        let tail = logtail::read_before(&path, Some(before), LOG_EMBED_BYTES)
            .await
            .map_err(|e| {
                tracing::error!(build = id, error = %e, "cannot read a build log part");
                PageError::Page(StatusCode::SERVICE_UNAVAILABLE, "The log cannot be read.")
            })?;
        let records = state.store().steps(id).await?;
        let steps = step_views(&build, records, None);
        let part = layout_log(&state, id, &path, &steps, tail.clone(), false, times).await;
        Ok::<_, PageError>(view::log_part(id, &part.sections, tail.skipped, times))
    };
    match part.await {
        Ok(markup) => html(StatusCode::OK, markup),
        Err(e) => e.into_response(),
    }
}

/// `GET /badge/NAME.svg?branch=B`: the latest finished build of pipeline
/// NAME (on branch B when given) as a shields.io-style SVG badge.
pub async fn badge(
    State(state): State<AppState>,
    file: Result<Path<String>, PathRejection>,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    match badge_svg(&state, file, query, &headers).await {
        Ok(svg) => {
            let mut res = svg.into_response();
            let headers = res.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("image/svg+xml"),
            );
            // GitHub's image proxy caches a badge for as long as it may.
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
            );
            headers.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            res
        }
        Err(e) => e.into_response(),
    }
}

async fn badge_svg(
    state: &AppState,
    file: Result<Path<String>, PathRejection>,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
    headers: &HeaderMap,
) -> Result<String, PageError> {
    check_read(state, headers)?;
    let no_such_pipeline = PageError::Page(StatusCode::NOT_FOUND, "There is no such pipeline.");
    let Ok(Path(file)) = file else {
        return Err(no_such_pipeline);
    };
    let Some(name) = file.strip_suffix(".svg") else {
        return Err(no_such_pipeline);
    };
    if !state.pipelines().contains_key(name) {
        return Err(no_such_pipeline);
    }
    let query = query_map(query)?;
    let branch = non_empty(&query, "branch");
    let latest = badge_build(state, name, branch.as_deref()).await?;
    let shown = badge::Shown::of(latest.map(|b| b.status));
    Ok(badge::svg(name, branch.as_deref(), shown))
}

/// The build a badge shows: the latest finished one (skipped builds do not
/// count); with none finished, the latest running or queued one. Pull
/// requests never count: a stranger's must not set the badge (with a
/// branch they have none; without, only push and tag builds are read).
async fn badge_build(
    state: &AppState,
    pipeline: &str,
    branch: Option<&str>,
) -> Result<Option<Build>, PageError> {
    use BuildStatus::{Cancelled, Error, Failure, Queued, Running, Success};
    let latest_of = |statuses: Vec<BuildStatus>| async move {
        let mut newest: Option<Build> = None;
        for event in ["push", "tag"] {
            let filter = BuildFilter {
                pipeline: Some(pipeline.to_owned()),
                branch: branch.map(str::to_owned),
                statuses: statuses.clone(),
                before: None,
                limit: 1,
                event: Some(event.to_owned()),
                git_ref: None,
            };
            let found = state.store().builds(filter).await?.into_iter().next();
            if let Some(b) = found.filter(|b| newest.as_ref().is_none_or(|n| b.id > n.id)) {
                newest = Some(b);
            }
        }
        Ok::<_, PageError>(newest)
    };
    match latest_of(vec![Success, Failure, Error, Cancelled]).await? {
        Some(b) => Ok(Some(b)),
        None => latest_of(vec![Running, Queued]).await,
    }
}
