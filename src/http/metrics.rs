//! `GET /metrics`: the daemon's metrics in OpenMetrics text, for Prometheus.

use super::{ApiError, AppState};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// `GET /metrics`: a read, so public unless `private = true`. A store that
/// cannot say how many builds are queued answers 503.
pub async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    super::api::require_read(&state, &headers)?;
    let queued = state.store().queued_count().await?;
    let pending = state.store().pending_reports().await?;
    let body = state.metrics().render(queued, pending).map_err(|e| {
        tracing::error!(error = %e, "cannot encode the metrics");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be rendered",
        )
    })?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response())
}
