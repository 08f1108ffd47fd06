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
mod logtail;
mod view;

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

/// How much of a log a build page embeds: its last MiB. The whole log is at
/// `/api/builds/ID/log`.
const LOG_EMBED_BYTES: u64 = 1024 * 1024;

/// How many builds `GET /` lists per page.
const INDEX_BUILDS: u32 = 50;

/// The Content-Security-Policy of every page: nothing but the page's own
/// style sheet and script (allowed by their hashes), connections to this
/// server (the live log) and images from it (badges).
static PAGE_CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let policy = format!(
        "default-src 'none'; style-src '{}'; script-src '{}'; connect-src 'self'; \
         img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        csp_hash(view::STYLE),
        csp_hash(view::LIVE_SCRIPT),
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
    let filter = view::IndexFilter {
        pipeline: non_empty(&query, "pipeline"),
        branch: non_empty(&query, "branch"),
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
            statuses: Vec::new(),
            before: filter.before,
            limit: INDEX_BUILDS,
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

/// `GET /builds/ID`: one build, its steps, its reports and its log, followed
/// live while it runs. This is the `target_url` of every commit status.
pub async fn build_page(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    match build_page_markup(&state, id, &headers).await {
        Ok(markup) => html(StatusCode::OK, markup),
        Err(e) => e.into_response(),
    }
}

async fn build_page_markup(
    state: &AppState,
    id: Result<Path<String>, PathRejection>,
    headers: &HeaderMap,
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
    let steps = state.store().steps(id).await?;
    let reports = state.store().reports(id).await?;
    let log = match logtail::read(&state.log_path(id), LOG_EMBED_BYTES).await {
        Ok(tail) => Some(tail),
        Err(e) => {
            tracing::error!(build = id, error = %e, "cannot read a build log for its page");
            None
        }
    };
    Ok(view::build(&view::BuildPage {
        build: &build,
        steps: &steps,
        reports: &reports,
        log: log.as_ref(),
        now: time::OffsetDateTime::now_utc(),
    }))
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
/// count); with none finished, the latest running or queued one.
async fn badge_build(
    state: &AppState,
    pipeline: &str,
    branch: Option<&str>,
) -> Result<Option<Build>, PageError> {
    use BuildStatus::{Cancelled, Error, Failure, Queued, Running, Success};
    let latest_of = |statuses: Vec<BuildStatus>| async move {
        let filter = BuildFilter {
            pipeline: Some(pipeline.to_owned()),
            branch: branch.map(str::to_owned),
            statuses,
            before: None,
            limit: 1,
        };
        Ok::<_, PageError>(state.store().builds(filter).await?.into_iter().next())
    };
    match latest_of(vec![Success, Failure, Error, Cancelled]).await? {
        Some(b) => Ok(Some(b)),
        None => latest_of(vec![Running, Queued]).await,
    }
}
