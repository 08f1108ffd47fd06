//! The JSON API: builds and their control. Reads are public unless the
//! config says `private = true`; writes need `Authorization: Bearer
//! ADMIN_TOKEN`.

use super::{ApiError, AppState};
use crate::pipeline::{Concurrency, Pipeline};
use crate::runner::build::clone_spec_from;
use crate::runner::checkout::CheckoutError;
use crate::store::{
    ApproveOutcome, Build, BuildFilter, BuildOrigin, BuildStatus, CancelOutcome, NewBuild,
    ReportRecord, Resume, StepRecord,
};
use crate::webhook::{CommitId, Host, PushEvent, RefKind};
use axum::Json;
use axum::extract::FromRequestParts;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use subtle::ConstantTimeEq;

/// A build in a list: its fields and its link.
#[derive(Debug, Serialize)]
pub struct BuildSummary {
    #[serde(flatten)]
    build: Build,
    url: String,
}

/// The most builds one `GET /api/builds` answers with.
const MAX_LIST: u32 = 500;

/// `GET /api/builds?pipeline=&branch=&status=&limit=&before=`: newest
/// first; page with `before` = the last id of the previous page.
pub async fn list_builds(
    State(state): State<AppState>,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_read(&state, &headers)?;
    let Query(query) = query.map_err(|_| ApiError::bad_request("the query string is malformed"))?;
    let filter = build_filter(&query)?;
    let limit = filter.limit;
    let builds = state.store().builds(filter).await?;
    let next_before = (builds.len() as u32 == limit)
        .then(|| builds.last().map(|b| b.id))
        .flatten();
    let builds: Vec<BuildSummary> = builds
        .into_iter()
        .map(|build| BuildSummary {
            url: state.build_url(build.id),
            build,
        })
        .collect();
    Ok(Json(
        json!({ "builds": builds, "next_before": next_before }),
    ))
}

/// The filter a list query asks for; 400 for a value that cannot be one.
fn build_filter(query: &BTreeMap<String, String>) -> Result<BuildFilter, ApiError> {
    let non_empty = |key: &str| query.get(key).filter(|v| !v.is_empty()).cloned();
    let statuses = match non_empty("status") {
        None => Vec::new(),
        Some(s) => vec![s.parse::<BuildStatus>().map_err(|()| {
            ApiError::bad_request(
                "status must be one of waiting, queued, running, success, failure, error, cancelled, skipped",
            )
        })?],
    };
    let limit = match non_empty("limit") {
        None => 50,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=MAX_LIST).contains(l))
            .ok_or_else(|| ApiError::bad_request("limit must be a number from 1 to 500"))?,
    };
    let before = match non_empty("before") {
        None => None,
        Some(b) => Some(
            b.parse::<i64>()
                .ok()
                .filter(|b| *b > 0)
                .ok_or_else(|| ApiError::bad_request("before must be a build id"))?,
        ),
    };
    Ok(BuildFilter {
        pipeline: non_empty("pipeline"),
        branch: non_empty("branch"),
        statuses,
        before,
        limit,
        event: non_empty("event"),
        git_ref: None,
    })
}

/// `GET /api/pipelines`: every pipeline served now, with its latest build.
pub async fn list_pipelines(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_read(&state, &headers)?;
    let pipelines = state.pipelines();
    let mut out = Vec::with_capacity(pipelines.len());
    for p in pipelines.values() {
        let last = state
            .store()
            .latest_build(&p.name)
            .await?
            .map(|build| BuildSummary {
                url: state.build_url(build.id),
                build,
            });
        out.push(json!({
            "name": p.name,
            "repo": p.repo,
            "host": p.host.map(|h| h.as_str()),
            "concurrency": p.concurrency.as_str(),
            "steps": p.steps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            "last_build": last,
        }));
    }
    Ok(Json(json!({ "pipelines": out })))
}

/// `POST /api/builds/ID/rebuild`: queues the same commit of the same ref
/// again, as a new build (attempt 1). Path rules are not applied: the user
/// asked for this build.
///
/// `?from=failed`: the new build starts at the step that failed build ID;
/// the steps before it are recorded `skipped` ("passed in #ID") and not
/// run. Its checkout is fresh, so what those steps left in their workspace
/// is not there.
pub async fn rebuild(
    State(state): State<AppState>,
    BuildId(id): BuildId,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    require_admin(&state, &headers)?;
    let Query(query) = query.map_err(|_| ApiError::bad_request("the query string is malformed"))?;
    let from_failed = match query.get("from").map(String::as_str) {
        None => false,
        Some("failed") => true,
        Some(_) => {
            return Err(ApiError::bad_request(
                "from must be \"failed\" (re-run from the step that failed), or left out",
            ));
        }
    };
    let old = state
        .store()
        .build(id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such build"))?;
    if !old.status.is_final() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "build {id} is still {}: wait for it to finish or cancel it",
                old.status
            ),
        ));
    }
    let pipelines = state.pipelines();
    let pipeline = pipelines.get(&old.pipeline).ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            format!("pipeline {} is no longer served", old.pipeline),
        )
    })?;
    let resume = if from_failed {
        let steps = state.store().steps(id).await?;
        let resume = Resume::from_failed(&old, &steps)
            .map_err(|why| ApiError::new(StatusCode::CONFLICT, why))?;
        if !resume.fits(pipeline.steps.iter().map(|s| s.name.as_str())) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "the steps of pipeline {} changed since build {id}: re-run it whole",
                    old.pipeline
                ),
            ));
        }
        Some(resume)
    } else {
        None
    };
    let from_step = resume.as_ref().map(|r| r.from_name.clone());
    let host = old.host.as_deref().and_then(|h| h.parse::<Host>().ok());
    // The same push, minus what only its first delivery was.
    let mut push = old.push;
    push.created = false;
    push.deleted = false;
    let origin = BuildOrigin {
        rebuild_of: Some(id),
        triggered_by: "admin".to_owned(),
        resume,
    };
    let queued = queue(&state, pipeline, push, host, origin).await?;
    let mut answer = json!({ "id": queued, "url": state.build_url(queued), "rebuild_of": id });
    if let Some(step) = from_step {
        answer["from_step"] = json!(step);
    }
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

/// The largest body an API call accepts.
const MAX_API_BODY: u64 = 16 * 1024;

/// The body of a trigger.
#[derive(Debug, Deserialize)]
struct TriggerBody {
    branch: String,
}

/// `POST /api/pipelines/NAME/trigger` `{"branch": B}`: builds the commit
/// branch B points to now. The mirror is fetched first (so the build finds
/// it there); the repository comes from the pipeline's `clone_url`, else
/// from the pipeline's latest build.
pub async fn trigger(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    super::body::Client(client): super::body::Client,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    // The token is checked before a byte of the body is read.
    require_admin(&state, &headers)?;
    let Ok(Path(name)) = name else {
        return Err(ApiError::not_found("no such pipeline"));
    };
    let pipelines = state.pipelines();
    let pipeline = pipelines
        .get(&name)
        .ok_or_else(|| ApiError::not_found("no such pipeline"))?;
    super::origin::require_json(&headers)?;
    let rules = super::body::BodyRules {
        max: MAX_API_BODY,
        deadline: state.config().request_timeout,
    };
    let body = super::body::read(state.bodies(), client, &headers, body, rules).await?;
    let branch = serde_json::from_slice::<TriggerBody>(&body)
        .map_err(|_| ApiError::bad_request(r#"the body must be JSON like {"branch": "main"}"#))?
        .branch;
    let git_ref = format!("refs/heads/{branch}");
    if branch.is_empty() || !git2::Reference::is_valid_name(&git_ref) {
        return Err(ApiError::bad_request(format!(
            "{branch:?} is not a valid branch name"
        )));
    }
    let last = state.store().latest_build(&pipeline.name).await?;
    let (clone_url, ssh_url, web_url, last_host) = match (&pipeline.clone_url, last) {
        (_, Some(b)) => (b.push.clone_url, b.push.ssh_url, b.push.web_url, b.host),
        (Some(url), None) => (url.clone(), None, None, None),
        (None, None) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "pipeline {name} has no clone_url and has received no push yet: set clone_url, or push once"
                ),
            ));
        }
    };
    let spec = clone_spec_from(pipeline, &clone_url, ssh_url.as_deref())
        .map_err(|why| ApiError::new(StatusCode::CONFLICT, why))?;
    let mirrors = &state.runner().mirrors;
    let (mirror, commit) = mirrors
        .fetch(&spec, &git_ref, "")
        .await
        .map_err(|e| match e {
            CheckoutError::NoSuchRef { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("the repository has no branch {branch}"),
            ),
            // What git said stays in the daemon's log: a 5xx carries no
            // internal detail.
            CheckoutError::Failed(why) => {
                tracing::warn!(pipeline = %name, error = %why, "a trigger could not fetch the repository");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "the repository could not be fetched; the daemon's log says why",
                )
            }
        })?;
    let message = mirrors
        .commit_message(&mirror, &commit)
        .await
        .unwrap_or_default();
    // libgit2 names a commit in hex; anything else would be a bug there.
    let commit: CommitId = commit.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "the repository could not be fetched; the daemon's log says why",
        )
    })?;
    let host = pipeline
        .host
        .or_else(|| last_host.as_deref().and_then(|h| h.parse::<Host>().ok()));
    let push = PushEvent {
        repo: pipeline.repo.clone(),
        kind: RefKind::Branch(branch),
        git_ref,
        before: CommitId::ZERO,
        after: commit.clone(),
        commit: Some(commit),
        created: false,
        deleted: false,
        forced: false,
        clone_url,
        ssh_url,
        web_url,
        message,
        pusher: "api".to_owned(),
        pull_request: None,
    };
    let origin = BuildOrigin {
        rebuild_of: None,
        triggered_by: "admin".to_owned(),
        resume: None,
    };
    let queued = queue(&state, pipeline, push, host, origin).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": queued, "url": state.build_url(queued) })),
    ))
}

/// Queues a build no delivery carried, with where it came from (for the
/// pages, and for the runner of a rebuild from the failed step); returns
/// its id.
async fn queue(
    state: &AppState,
    pipeline: &Pipeline,
    push: PushEvent,
    host: Option<Host>,
    origin: BuildOrigin,
) -> Result<i64, ApiError> {
    // A pull request's rebuild is one of its builds: it supersedes the
    // pull request's others and reports under its context. An admin asked
    // for it, so it does not wait for approval.
    let pull_request = push.pull_request.is_some();
    let build = NewBuild {
        pipeline: pipeline.name.clone(),
        path_filters: Vec::new(),
        supersede: pull_request || pipeline.concurrency == Concurrency::Supersede,
        waiting: false,
        report_context: if pull_request {
            pipeline.pr_report_context(host)
        } else {
            pipeline.report_context(host)
        },
        push,
        pipeline_revision: Some(pipeline.revision.clone()),
    };
    let queued = state.store().queue_manual(build, host, origin).await?;
    state.metrics().ended_unrun(
        &pipeline.name,
        BuildStatus::Cancelled,
        queued.superseded_queued,
    );
    Ok(queued.id)
}

/// A build as the API shows it.
#[derive(Debug, Serialize)]
pub struct BuildView {
    #[serde(flatten)]
    build: Build,
    url: String,
    steps: Vec<StepRecord>,
    reports: Vec<ReportRecord>,
    /// Why a waiting or queued build waits (`runners::waiting_reason`);
    /// null otherwise.
    waiting_reason: Option<String>,
}

/// `GET /api/runners`: every runner process registered in the store, with
/// how many builds each runs now and whether it is gone (missed its
/// heartbeats).
pub async fn list_runners(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_read(&state, &headers)?;
    let runners = state.store().runners().await?;
    Ok(Json(json!({ "runners": runners })))
}

/// Checks `Authorization: Bearer TOKEN` against the admin token, for the
/// calls that change something. Only `Bearer`: a browser re-sends cached
/// `Basic` credentials on a cross-site form post, but no other site can make
/// it send an `Authorization: Bearer` header (that needs a CORS preflight,
/// which this server never allows), so a write cannot be forged.
pub fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    check_token(state, headers, false)
}

/// Checks the admin token as `Bearer`, or, with `basic`, as a browser's
/// `Basic` credentials (any user name, the token as password), which lets
/// the pages of a private server be opened.
fn check_token(state: &AppState, headers: &HeaderMap, basic: bool) -> Result<(), ApiError> {
    let Some(expected) = &state.config().admin_token else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this call needs an admin token, and none is configured (admin_token)",
        ));
    };
    let given = match presented_token(headers) {
        None => {
            return Err(ApiError::sign_in(
                "this call needs Authorization: Bearer ADMIN_TOKEN",
            ));
        }
        Some(Presented::Basic(_)) if !basic => {
            return Err(ApiError::unauthorized(
                "a call that changes something takes the admin token only as Authorization: Bearer",
            ));
        }
        Some(Presented::Bearer(token) | Presented::Basic(token)) => token,
    };
    // Hash both sides so that the comparison's time says nothing of length.
    let a = Sha256::digest(given.trim().as_bytes());
    let b = Sha256::digest(expected.expose().as_bytes());
    if bool::from(a.ct_eq(&b)) {
        Ok(())
    } else {
        Err(ApiError::sign_in("the admin token is wrong"))
    }
}

/// A token as the request presents it.
enum Presented {
    /// `Authorization: Bearer T`.
    Bearer(String),
    /// `Authorization: Basic base64(user:T)`.
    Basic(String),
}

/// The token of `Authorization: Bearer T` or `Basic base64(user:T)`.
fn presented_token(headers: &HeaderMap) -> Option<Presented> {
    use base64::Engine;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Some(Presented::Bearer(token.to_owned()));
    }
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let pair = String::from_utf8(decoded).ok()?;
    let (_user, token) = pair.split_once(':')?;
    Some(Presented::Basic(token.to_owned()))
}

/// Reads are public unless the config says `private = true`; then they
/// take the admin token as `Bearer` or as a browser's `Basic` credentials.
pub fn require_read(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if state.config().private {
        check_token(state, headers, true)
    } else {
        Ok(())
    }
}

/// The `{id}` of a build route. Anything that is not a build id (not a
/// number, not UTF-8) is a 404 in words, like an id that does not exist.
#[derive(Debug, Clone, Copy)]
pub struct BuildId(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for BuildId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::not_found("no such build"))?;
        build_id(&raw).map(BuildId)
    }
}

pub fn build_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::not_found("no such build"))
}

/// `GET /api/builds/ID`.
pub async fn get_build(
    State(state): State<AppState>,
    BuildId(id): BuildId,
    headers: HeaderMap,
) -> Result<Json<BuildView>, ApiError> {
    require_read(&state, &headers)?;
    let build = state
        .store()
        .build(id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such build"))?;
    let steps = state.store().steps(id).await?;
    let reports = state.store().reports(id).await?;
    let waiting_reason =
        crate::runners::waiting_reason_now(state.store(), &state.pipelines(), &build).await?;
    let url = state.build_url(id);
    Ok(Json(BuildView {
        build,
        url,
        steps,
        reports,
        waiting_reason,
    }))
}

/// `POST /api/builds/ID/cancel`.
pub async fn cancel_build(
    State(state): State<AppState>,
    BuildId(id): BuildId,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    require_admin(&state, &headers)?;
    match state
        .store()
        .cancel(id, "cancelled by a user".into())
        .await?
    {
        CancelOutcome::Cancelled { pipeline } => {
            state
                .metrics()
                .ended_unrun(&pipeline, BuildStatus::Cancelled, 1);
            Ok((
                StatusCode::OK,
                Json(serde_json::json!({ "id": id, "status": "cancelled" })),
            ))
        }
        CancelOutcome::Requested => Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "id": id, "status": "cancelling" })),
        )),
        CancelOutcome::AlreadyFinished => Err(ApiError::new(
            StatusCode::CONFLICT,
            "the build has already finished",
        )),
        CancelOutcome::NotFound => Err(ApiError::not_found("no such build")),
    }
}

/// `POST /api/builds/ID/approve`: a waiting build (a fork's pull request)
/// is queued. 409 when the build is not waiting.
pub async fn approve_build(
    State(state): State<AppState>,
    BuildId(id): BuildId,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    require_admin(&state, &headers)?;
    match state.store().approve(id).await? {
        ApproveOutcome::Approved => Ok((
            StatusCode::OK,
            Json(serde_json::json!({ "id": id, "status": "queued" })),
        )),
        ApproveOutcome::NotWaiting(status) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("build {id} is {status}, not waiting for approval"),
        )),
        ApproveOutcome::NotFound => Err(ApiError::not_found("no such build")),
    }
}

/// `GET /api/builds/ID/log`: the log as it is now (text/plain, masked).
pub async fn get_log(
    State(state): State<AppState>,
    BuildId(id): BuildId,
    headers: HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    require_read(&state, &headers)?;
    let Some(build) = state.store().build(id).await? else {
        return Err(ApiError::not_found("no such build"));
    };
    let content_type = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    let file = state.log_file(id).await?;
    match tokio::fs::File::open(&file.path).await {
        Ok(file) => {
            // What a terminal shows of each line is masked too: a secret
            // split by an escape sequence is whole only there.
            let view = view_mask(&state, &build.pipeline);
            let chunks = tokio_util::io::ReaderStream::new(file);
            let body = if view.is_passthrough() {
                axum::body::Body::from_stream(chunks)
            } else {
                use futures_util::StreamExt as _;
                let masked = futures_util::stream::unfold(
                    (chunks, view, false),
                    |(mut chunks, mut view, done)| async move {
                        if done {
                            return None;
                        }
                        match chunks.next().await {
                            Some(Ok(bytes)) => {
                                let out = view.push(&bytes);
                                Some((Ok(axum::body::Bytes::from(out)), (chunks, view, false)))
                            }
                            Some(Err(e)) => Some((Err(e), (chunks, view, true))),
                            None => {
                                let out = view.finish();
                                Some((Ok(axum::body::Bytes::from(out)), (chunks, view, true)))
                            }
                        }
                    },
                );
                axum::body::Body::from_stream(masked)
            };
            Ok((content_type, body).into_response())
        }
        // Queued builds have no log yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok((content_type, "").into_response())
        }
        Err(e) => {
            tracing::error!(build = id, error = %e, "cannot read a build log");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the log cannot be read",
            ))
        }
    }
}

/// `GET /api/builds/ID/log/stream`: the log as Server-Sent Events, from its
/// first byte and live while the build runs: one `data` event per chunk,
/// then `event: end` whose data is the build's final status. A queued
/// build's stream waits (with keep-alive comments) until it starts. SSE
/// carries text lines: a chunk's `\r` arrives as a line break.
pub async fn stream_log(
    State(state): State<AppState>,
    BuildId(id): BuildId,
    headers: HeaderMap,
) -> Result<
    axum::response::sse::Sse<
        impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
    >,
    ApiError,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    require_read(&state, &headers)?;
    let Some(build) = state.store().build(id).await? else {
        return Err(ApiError::not_found("no such build"));
    };
    let view = view_mask(&state, &build.pipeline);
    enum Phase {
        Waiting,
        Following(crate::runner::log::LogFollower, Vec<u8>),
        Ending,
        Done,
    }
    // The view mask travels with the stream's state: each chunk's lines
    // are masked in what a terminal shows of them.
    let stream = futures_util::stream::unfold((Phase::Waiting, view), move |(phase, mut view)| {
        let state = state.clone();
        async move {
            let (mut follower, mut carry) = match phase {
                Phase::Done => return None,
                Phase::Ending => return Some((end_event(&state, id).await, (Phase::Done, view))),
                Phase::Waiting => match state.follow_log(id).await {
                    Ok(follower) => (follower, Vec::new()),
                    Err(e) => {
                        tracing::warn!(build = id, error = %e, "cannot follow a build log");
                        return Some((
                            Ok(Event::default().event("end").data("unknown")),
                            (Phase::Done, view),
                        ));
                    }
                },
                Phase::Following(follower, carry) => (follower, carry),
            };
            match follower.next_chunk().await {
                Ok(Some(chunk)) => {
                    carry.extend(view.push(&chunk));
                    // Hold back a UTF-8 sequence cut by the chunk boundary.
                    let valid = match std::str::from_utf8(&carry) {
                        Ok(_) => carry.len(),
                        Err(e) if e.error_len().is_none() => e.valid_up_to(),
                        Err(_) => carry.len(),
                    };
                    let text = String::from_utf8_lossy(&carry[..valid]).into_owned();
                    let rest = carry.split_off(valid);
                    Some((
                        Ok(Event::default().data(text)),
                        (Phase::Following(follower, rest), view),
                    ))
                }
                Ok(None) | Err(_) if !carry.is_empty() || view.has_held() => {
                    carry.extend(view.finish());
                    let last = String::from_utf8_lossy(&carry).into_owned();
                    Some((Ok(Event::default().data(last)), (Phase::Ending, view)))
                }
                // No event for an empty chunk: straight to the end.
                Ok(None) | Err(_) => Some((end_event(&state, id).await, (Phase::Done, view))),
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The view mask of a build of `pipeline`: its secrets, as the log writer
/// masks them, checked in what each line shows.
fn view_mask(state: &AppState, pipeline: &str) -> crate::runner::log::visible::ViewMask {
    let secrets = state
        .pipelines()
        .get(pipeline)
        .map(crate::runner::log::visible::pipeline_secrets)
        .unwrap_or_default();
    crate::runner::log::visible::ViewMask::new(&secrets)
}

/// `event: end` with the status the build settled in (never empty data: an
/// SSE event without data is not delivered).
async fn end_event(
    state: &AppState,
    id: i64,
) -> Result<axum::response::sse::Event, std::convert::Infallible> {
    let status = match state.settled_status(id).await {
        Ok(Some(status)) => status.as_str(),
        Ok(None) => "unknown",
        Err(e) => {
            tracing::warn!(build = id, error = %e, "cannot read a build's status");
            "unknown"
        }
    };
    Ok(axum::response::sse::Event::default()
        .event("end")
        .data(status))
}
