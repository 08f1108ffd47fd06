//! The webhook routes: `POST /hooks/NAME` and `POST /hooks`.
//!
//! Order of checks: pipeline (404), host (400), a declared body size (413),
//! a signature header of the host's form (401), all before a byte of the body is read; then body size
//! (413), the body budget (503), signature (401), payload (400), repository
//! (422), then the matcher and the store. The answer is sent only after the
//! store has committed.

use super::body::{self, BodyRules, Client, HeldBody};
use super::delivery_log::{self, Seen};
use super::{ApiError, AppState};
use crate::pipeline::matcher::{self, Decision, PullDecision};
use crate::pipeline::{Concurrency, Pipeline};
use crate::store::{BuildStatus, CloseRef, NewBuild, NewDelivery, Recorded};
use crate::webhook::{self, Host, Parsed, ParsedKind, VerifyError};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::time::SystemTime;

/// `POST /hooks/NAME`: a delivery for one pipeline. Every answer is counted.
pub async fn for_pipeline(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Client(client): Client,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut seen = Seen::default();
    let result = deliver_to(&state, &name, client, &headers, body, &mut seen).await;
    let answer = log_and_answer(&name, &headers, &seen, result);
    let known = state
        .pipelines()
        .contains_key(&name)
        .then_some(name.as_str());
    state
        .metrics()
        .webhook_delivery(known, answer.status().as_u16());
    answer
}

/// Logs the delivery's line and turns its result into the answer.
fn log_and_answer(
    name: &str,
    headers: &HeaderMap,
    seen: &Seen,
    result: Result<Response, ApiError>,
) -> Response {
    match result {
        Ok(answer) => {
            delivery_log::log(name, headers, seen, answer.status(), None);
            answer
        }
        Err(e) => {
            delivery_log::log(name, headers, seen, e.status(), Some(&e));
            e.into_response()
        }
    }
}

async fn deliver_to(
    state: &AppState,
    name: &str,
    client: std::net::IpAddr,
    headers: &HeaderMap,
    body: Body,
    seen: &mut Seen,
) -> Result<Response, ApiError> {
    let pipelines = state.pipelines();
    let Some(pipeline) = pipelines.get(name) else {
        return Err(ApiError::not_found(format!(
            "no pipeline named {:?}",
            truncate(name, 64)
        )));
    };
    let host = match pipeline.host {
        Some(h) => h,
        None => webhook::detect(headers).ok_or_else(unknown_host)?,
    };
    seen.host = Some(host);
    body::refuse_declared_too_large(headers, state.config().max_body_bytes)?;
    if pipeline.secret.is_some() {
        signature_present(host, headers, pipeline.allow_sha1)?;
    }
    let body = read_body(state, client, headers, body).await?;
    seen.delivery = Some(webhook::delivery_id(host, headers, &body));
    check_signature(pipeline, host, headers, &body)?;
    let parsed = parse(host, headers, &body)?;
    seen.event = Some(parsed.event.clone());
    if let Some(repo) = &parsed.repo {
        if !same_repo(repo, &pipeline.repo) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "the payload is for repository {:?}, but pipeline {name} builds {:?}",
                    truncate(repo, 200),
                    pipeline.repo
                ),
            ));
        }
    }
    let delivery_id = webhook::delivery_id(host, headers, &body);
    let parsed = without_unchanged_update(state, pipeline, host, parsed).await?;
    let mut delivery = new_delivery(pipeline, host, &delivery_id, &parsed, sandbox_exists(state));
    delivery.body_sha256 = signed_digest(pipeline, &body);
    let recorded = state.store().record_deliveries(vec![delivery]).await?;
    seen.recorded(&recorded);
    count_superseded(state, &recorded);
    Ok(answer(state, &delivery_id, &recorded))
}

/// `POST /hooks`: one org-wide webhook, routed to every pipeline whose
/// `repo` matches the payload and whose secret verifies it. Every answer is
/// counted, under one label for the route.
pub async fn org_wide(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut seen = Seen::default();
    let result = deliver_org_wide(&state, client, &headers, body, &mut seen).await;
    let answer = match result {
        // A private server tells a stranger nothing of its pipelines:
        // whether a repository has one, which host it expects, what its
        // payload lacked. The log keeps the real reason.
        Err(e) if state.config().private && is_strangers_error(&e) => {
            delivery_log::log("*", &headers, &seen, e.status(), Some(&e));
            ApiError::unauthorized("no pipeline verified this delivery").into_response()
        }
        result => log_and_answer("*", &headers, &seen, result),
    };
    let code = answer.status().as_u16();
    state
        .metrics()
        .webhook_delivery(Some(crate::metrics::ORG_WIDE), code);
    answer
}

/// The refusals of the org-wide route that depend on what the server
/// serves (no event header of a known host, a payload that does not parse
/// or names no served repository, no signature that verifies): answered as
/// one 401 in private mode. Limits (408, 413, 503) are the same for all.
fn is_strangers_error(e: &ApiError) -> bool {
    matches!(
        e.status(),
        StatusCode::BAD_REQUEST
            | StatusCode::UNAUTHORIZED
            | StatusCode::NOT_FOUND
            | StatusCode::UNPROCESSABLE_ENTITY
    )
}

async fn deliver_org_wide(
    state: &AppState,
    client: std::net::IpAddr,
    headers: &HeaderMap,
    body: Body,
    seen: &mut Seen,
) -> Result<Response, ApiError> {
    let host = webhook::detect(headers).ok_or_else(unknown_host)?;
    seen.host = Some(host);
    // Every pipeline this route can reach has a secret or is unsigned; a
    // delivery without a signature can only be for an unsigned one.
    let any_unsigned = state.pipelines().values().any(|p| p.secret.is_none());
    body::refuse_declared_too_large(headers, state.config().max_body_bytes)?;
    if !any_unsigned {
        signature_present(host, headers, true)?;
    }
    let body = read_body(state, client, headers, body).await?;
    seen.delivery = Some(webhook::delivery_id(host, headers, &body));
    // The repository is needed to route, so this route parses before it
    // verifies; nothing is recorded until a pipeline's secret verifies.
    let parsed = parse(host, headers, &body)?;
    seen.event = Some(parsed.event.clone());
    let Some(repo) = parsed.repo.clone() else {
        return Err(ApiError::bad_request(
            "the payload names no repository to route by",
        ));
    };
    let pipelines = state.pipelines();
    let candidates: Vec<&Pipeline> = pipelines
        .values()
        .filter(|p| same_repo(&p.repo, &repo) && p.host.is_none_or(|h| h == host))
        .collect();
    if candidates.is_empty() {
        return Err(ApiError::not_found(format!(
            "no pipeline builds repository {:?}",
            truncate(&repo, 200)
        )));
    }
    let mut first_error = None;
    let mut verified = Vec::new();
    for p in candidates {
        match check_signature(p, host, headers, &body) {
            Ok(()) => verified.push(p),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if verified.is_empty() {
        return Err(first_error.unwrap_or_else(|| ApiError::unauthorized("no pipeline verified")));
    }
    let delivery_id = webhook::delivery_id(host, headers, &body);
    let mut deliveries = Vec::with_capacity(verified.len());
    for p in verified {
        let parsed = without_unchanged_update(state, p, host, parsed.clone()).await?;
        deliveries.push(NewDelivery {
            body_sha256: signed_digest(p, &body),
            ..new_delivery(p, host, &delivery_id, &parsed, sandbox_exists(state))
        });
    }
    let recorded = state.store().record_deliveries(deliveries).await?;
    seen.recorded(&recorded);
    count_superseded(state, &recorded);
    Ok(answer(state, &delivery_id, &recorded))
}

/// Reads the body under `max_body_bytes`, `request_timeout` and the
/// daemon's body budget.
async fn read_body(
    state: &AppState,
    client: std::net::IpAddr,
    headers: &HeaderMap,
    body: Body,
) -> Result<HeldBody, ApiError> {
    let rules = BodyRules {
        max: state.config().max_body_bytes,
        deadline: state.config().request_timeout,
    };
    body::read(state.bodies(), client, headers, body, rules).await
}

/// 401 unless the headers carry a signature of `host`'s form: checked with
/// a throwaway key over no body, before the body is read, so only "missing"
/// and "malformed" (and what can never verify) count here.
fn signature_present(host: Host, headers: &HeaderMap, allow_sha1: bool) -> Result<(), ApiError> {
    let probe = crate::secret::Secret::new("hookci-signature-shape-probe");
    match webhook::verify(host, headers, b"", &probe, allow_sha1, SystemTime::now()) {
        Ok(()) | Err(VerifyError::Mismatch) => Ok(()),
        Err(e) => Err(verify_error(host, e)),
    }
}

fn unknown_host() -> ApiError {
    ApiError::bad_request(
        "the request has no event header of a known Git host (GitHub, GitLab, Gitea, Forgejo, \
         Gogs, Bitbucket, or Standard Webhooks)",
    )
}

fn check_signature(
    pipeline: &Pipeline,
    host: Host,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    let Some(secret) = &pipeline.secret else {
        // Validation allows no secret only with insecure_no_signature.
        return if pipeline.insecure_no_signature {
            Ok(())
        } else {
            Err(ApiError::unauthorized(
                "the pipeline has no secret to verify with",
            ))
        };
    };
    webhook::verify(
        host,
        headers,
        body,
        secret,
        pipeline.allow_sha1,
        SystemTime::now(),
    )
    .map_err(|e| verify_error(host, e))
}

fn verify_error(host: Host, e: VerifyError) -> ApiError {
    let message = match e {
        VerifyError::Missing => format!("the delivery has no {host} signature"),
        VerifyError::Malformed
        | VerifyError::Mismatch
        | VerifyError::Stale
        | VerifyError::Sha1NotAllowed => e.to_string(),
    };
    ApiError::unauthorized(message)
}

fn parse(host: Host, headers: &HeaderMap, body: &[u8]) -> Result<Parsed, ApiError> {
    webhook::parse(host, headers, body).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Repository names compare without regard to ASCII case, as hosts do.
fn same_repo(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Bitbucket Cloud sends `pullrequest:updated` for a title or description
/// edit too, and no previous head to compare with: an update whose head is
/// the one the pull request's newest build has builds nothing (the other
/// hosts say in their payloads which updates bring commits).
async fn without_unchanged_update(
    state: &AppState,
    pipeline: &Pipeline,
    host: Host,
    parsed: Parsed,
) -> Result<Parsed, ApiError> {
    let ParsedKind::PullRequest(event) = &parsed.kind else {
        return Ok(parsed);
    };
    if host != Host::Bitbucket || parsed.event != "pullrequest:updated" {
        return Ok(parsed);
    }
    let newest = state
        .store()
        .builds(crate::store::BuildFilter {
            pipeline: Some(pipeline.name.clone()),
            git_ref: Some(event.git_ref.clone()),
            limit: 1,
            ..Default::default()
        })
        .await?;
    // Bitbucket Cloud sends abbreviated ids; a resolved build may hold the
    // full one.
    let same =
        |a: &str, b: &str| !a.is_empty() && !b.is_empty() && (a.starts_with(b) || b.starts_with(a));
    match newest.first() {
        Some(b) if same(b.commit_str(), event.commit_str()) => {
            let number = event.pull_request.as_ref().map_or(0, |p| p.number);
            Ok(Parsed {
                kind: ParsedKind::Ignored(format!(
                    "pull request {number} was updated without new commits"
                )),
                ..parsed
            })
        }
        _ => Ok(parsed),
    }
}

/// Whether steps can be sandboxed here (the probe ran at start, so this is
/// its cached answer): a fork pull request by an untrusted author waits
/// for approval where they cannot, whatever `forks` says.
fn sandbox_exists(state: &AppState) -> bool {
    crate::runner::sandbox::probe(state.runner().run_as).is_ok()
}

fn new_delivery(
    pipeline: &Pipeline,
    host: Host,
    delivery_id: &str,
    parsed: &Parsed,
    sandbox: bool,
) -> NewDelivery {
    let mut builds = Vec::new();
    let mut skipped = Vec::new();
    let mut close = None;
    match &parsed.kind {
        ParsedKind::Ping => skipped.push("ping".to_owned()),
        ParsedKind::Ignored(reason) => skipped.push(reason.clone()),
        ParsedKind::PullRequest(event) => {
            if !same_repo(&event.repo, &pipeline.repo) {
                skipped.push("the pull request is for another repository".to_owned());
            } else {
                match matcher::decide_pull_request(pipeline, event, sandbox) {
                    PullDecision::Build {
                        path_filters,
                        waiting,
                    } => builds.push(NewBuild {
                        pipeline: pipeline.name.clone(),
                        push: (**event).clone(),
                        path_filters,
                        // A new push to a pull request always supersedes
                        // its older builds, whatever `concurrency` says.
                        supersede: true,
                        waiting,
                        report_context: pipeline.pr_report_context(Some(host)),
                        pipeline_revision: Some(pipeline.revision.clone()),
                    }),
                    PullDecision::Skip(reason) => skipped.push(reason),
                }
            }
        }
        ParsedKind::PullRequestClosed(closed) => {
            let what = if closed.merged { "merged" } else { "closed" };
            skipped.push(format!("pull request {} was {what}", closed.number));
            if same_repo(&closed.repo, &pipeline.repo) {
                close = Some(CloseRef {
                    git_ref: closed.git_ref.clone(),
                    reason: format!("pull request {} was {what}", closed.number),
                });
            }
        }
        ParsedKind::Pushes(pushes) => {
            for push in pushes {
                if !same_repo(&push.repo, &pipeline.repo) {
                    skipped.push(format!("ref {} is for another repository", push.git_ref));
                    continue;
                }
                match matcher::decide(pipeline, push) {
                    Decision::Build { path_filters } => builds.push(NewBuild {
                        pipeline: pipeline.name.clone(),
                        push: push.clone(),
                        path_filters,
                        supersede: pipeline.concurrency == Concurrency::Supersede,
                        waiting: false,
                        report_context: pipeline.report_context(Some(host)),
                        pipeline_revision: Some(pipeline.revision.clone()),
                    }),
                    Decision::Skip(reason) => skipped.push(reason),
                }
            }
            if pushes.is_empty() {
                skipped.push("the push changes no ref".to_owned());
            }
        }
    }
    NewDelivery {
        pipeline: pipeline.name.clone(),
        delivery_id: delivery_id.to_owned(),
        host,
        event: parsed.event.clone(),
        skipped: if builds.is_empty() {
            Some(skipped.join("; "))
        } else {
            None
        },
        builds,
        body_sha256: None,
        close,
    }
}

/// The body's SHA-256 when the pipeline verified a signature over it: the
/// same signed bytes again are a replay, whatever their delivery id.
fn signed_digest(pipeline: &Pipeline, body: &[u8]) -> Option<String> {
    use sha2::Digest as _;
    pipeline
        .secret
        .is_some()
        .then(|| hex::encode(sha2::Sha256::digest(body)))
}

/// Queued builds a delivery superseded ended without running.
fn count_superseded(state: &AppState, recorded: &[Recorded]) {
    for r in recorded {
        state
            .metrics()
            .ended_unrun(&r.pipeline, BuildStatus::Cancelled, r.superseded_queued);
    }
}

/// 202 when this delivery queued builds; 200 when it queued nothing or was
/// seen before (with the first answer's body).
fn answer(state: &AppState, delivery_id: &str, recorded: &[Recorded]) -> Response {
    let builds: Vec<_> = recorded
        .iter()
        .flat_map(|r| {
            r.build_ids
                .iter()
                .map(|&id| json!({ "id": id, "pipeline": r.pipeline, "url": state.build_url(id) }))
        })
        .collect();
    let duplicate = recorded.iter().all(|r| r.duplicate);
    let mut body = json!({ "delivery": delivery_id, "builds": builds });
    if builds.is_empty() {
        let reasons: Vec<&str> = recorded
            .iter()
            .filter_map(|r| r.skipped.as_deref())
            .collect();
        body["skipped"] = json!(reasons.join("; "));
    }
    let status = if duplicate || builds.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    (status, Json(body)).into_response()
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
