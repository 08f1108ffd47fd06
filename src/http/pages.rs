//! HTML pages (`GET /`, `GET /builds/ID`) and the status badge.

use super::{ApiError, AppState};
use axum::extract::{Path, State};
use axum::http::StatusCode;

/// `GET /`: pipelines and recent builds.
pub async fn index(State(_state): State<AppState>) -> Result<String, ApiError> {
    Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, "not built yet"))
}

/// `GET /builds/ID`: one build, its steps and its live log.
pub async fn build_page(
    State(_state): State<AppState>,
    Path(_id): Path<String>,
) -> Result<String, ApiError> {
    Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, "not built yet"))
}

/// `GET /badge/NAME.svg?branch=B`.
pub async fn badge(
    State(_state): State<AppState>,
    Path(_file): Path<String>,
) -> Result<String, ApiError> {
    Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, "not built yet"))
}
