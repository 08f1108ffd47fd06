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
