//! `GET /metrics`: Prometheus text format.

use super::{ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;

/// `GET /metrics`.
pub async fn metrics(State(_state): State<AppState>) -> Result<String, ApiError> {
    Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, "not built yet"))
}
