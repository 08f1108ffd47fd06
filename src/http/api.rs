//! The JSON API: builds and their control. Reads are public unless the
//! config says `private = true`; writes need `Authorization: Bearer
//! ADMIN_TOKEN`.

use super::{ApiError, AppState};
use crate::store::{Build, CancelOutcome, ReportRecord, StepRecord};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A build as the API shows it.
#[derive(Debug, Serialize)]
pub struct BuildView {
    #[serde(flatten)]
    build: Build,
    url: String,
    steps: Vec<StepRecord>,
    reports: Vec<ReportRecord>,
}

/// Checks `Authorization: Bearer TOKEN` against the admin token.
pub fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &state.config().admin_token else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this call needs an admin token, and none is configured (admin_token)",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::unauthorized("this call needs Authorization: Bearer ADMIN_TOKEN")
        })?;
    // Hash both sides so that the comparison's time says nothing of length.
    let a = Sha256::digest(given.trim().as_bytes());
    let b = Sha256::digest(expected.expose().as_bytes());
    if bool::from(a.ct_eq(&b)) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("the admin token is wrong"))
    }
}

fn require_read(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if state.config().private {
        require_admin(state, headers)
    } else {
        Ok(())
    }
}

fn build_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::not_found("no such build"))
}

/// `GET /api/builds/ID`.
pub async fn get_build(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<BuildView>, ApiError> {
    require_read(&state, &headers)?;
    let id = build_id(&id)?;
    let build = state
        .store()
        .build(id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such build"))?;
    let steps = state.store().steps(id).await?;
    let reports = state.store().reports(id).await?;
    let url = state.build_url(id);
    Ok(Json(BuildView {
        build,
        url,
        steps,
        reports,
    }))
}

/// `POST /api/builds/ID/cancel`.
pub async fn cancel_build(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    require_admin(&state, &headers)?;
    let id = build_id(&id)?;
    match state
        .store()
        .cancel(id, "cancelled by a user".into())
        .await?
    {
        CancelOutcome::Cancelled => Ok((
            StatusCode::OK,
            Json(serde_json::json!({ "id": id, "status": "cancelled" })),
        )),
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

/// `GET /api/builds/ID/log`: the log as it is now (text/plain, masked).
pub async fn get_log(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    require_read(&state, &headers)?;
    let id = build_id(&id)?;
    if state.store().build(id).await?.is_none() {
        return Err(ApiError::not_found("no such build"));
    }
    let content_type = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    match tokio::fs::File::open(state.log_path(id)).await {
        Ok(file) => {
            let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
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

/// `GET /api/builds/ID/log/stream`: the log as Server-Sent Events, live
/// while the build runs: one `data` event per chunk, then `event: end`.
pub async fn stream_log(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<
    axum::response::sse::Sse<
        impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
    >,
    ApiError,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    require_read(&state, &headers)?;
    let id = build_id(&id)?;
    if state.store().build(id).await?.is_none() {
        return Err(ApiError::not_found("no such build"));
    }
    let follower = state.follow_log(id);
    // (follower, bytes of a UTF-8 sequence cut by a chunk boundary, ended)
    let stream = futures_util::stream::unfold(
        (follower, Vec::<u8>::new(), false),
        |(mut follower, mut carry, ended)| async move {
            if ended {
                return None;
            }
            match follower.next_chunk().await {
                Ok(Some(chunk)) => {
                    carry.extend_from_slice(&chunk);
                    let valid = match std::str::from_utf8(&carry) {
                        Ok(_) => carry.len(),
                        Err(e) if e.error_len().is_none() => e.valid_up_to(),
                        Err(_) => carry.len(),
                    };
                    let text = String::from_utf8_lossy(&carry[..valid]).into_owned();
                    let rest = carry.split_off(valid);
                    Some((Ok(Event::default().data(text)), (follower, rest, false)))
                }
                Ok(None) | Err(_) => {
                    let last = String::from_utf8_lossy(&carry).into_owned();
                    Some((
                        Ok(Event::default().event("end").data(last)),
                        (follower, Vec::new(), true),
                    ))
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
