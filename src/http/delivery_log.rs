//! One log line per webhook delivery, for the operator asking "the host
//! says delivered, why did nothing build?": pipeline, host, event, delivery
//! id, the answer's status, and why (every 4xx, and every delivery that
//! built nothing). Info for 2xx, warning for 4xx, error for 5xx.

use super::ApiError;
use crate::store::Recorded;
use crate::webhook::Host;
use axum::http::{HeaderMap, StatusCode};

/// What a delivery revealed on its way through the checks.
#[derive(Debug, Default)]
pub(super) struct Seen {
    /// The host, once known.
    pub host: Option<Host>,
    /// The host's event name, once the payload parsed.
    pub event: Option<String>,
    /// The delivery id, once computed.
    pub delivery: Option<String>,
    /// Builds queued, and the reasons nothing was built.
    pub builds: Vec<i64>,
    /// Why nothing was built.
    pub skipped: Option<String>,
}

impl Seen {
    /// Notes what the store recorded.
    pub fn recorded(&mut self, recorded: &[Recorded]) {
        self.builds = recorded.iter().flat_map(|r| r.build_ids.clone()).collect();
        let reasons: Vec<&str> = recorded
            .iter()
            .filter_map(|r| r.skipped.as_deref())
            .collect();
        if self.builds.is_empty() && !reasons.is_empty() {
            self.skipped = Some(reasons.join("; "));
        }
    }
}

/// The event header's value, for deliveries refused before parsing.
fn event_header(headers: &HeaderMap) -> Option<String> {
    [
        "x-github-event",
        "x-gitea-event",
        "x-forgejo-event",
        "x-gogs-event",
        "x-gitlab-event",
        "x-event-key",
    ]
    .iter()
    .find_map(|h| headers.get(*h))
    .and_then(|v| v.to_str().ok())
    .map(|v| v.chars().take(64).collect())
}

/// Writes the line. `pipeline` is the route's name (`*` for the org-wide
/// route); `error` is the refusal, if any.
pub(super) fn log(
    pipeline: &str,
    headers: &HeaderMap,
    seen: &Seen,
    status: StatusCode,
    error: Option<&ApiError>,
) {
    let pipeline: String = pipeline.chars().take(64).collect();
    let host = seen.host.map_or("unknown", |h| h.as_str());
    let event = seen
        .event
        .clone()
        .or_else(|| event_header(headers))
        .unwrap_or_else(|| "-".to_owned());
    let delivery = seen.delivery.as_deref().unwrap_or("-");
    let answer = status.as_u16();
    if let Some(e) = error {
        let why = e.message();
        if status.is_server_error() {
            tracing::error!(%pipeline, host, %event, delivery, answer, why, "delivery failed");
        } else {
            tracing::warn!(%pipeline, host, %event, delivery, answer, why, "delivery refused");
        }
    } else if let Some(why) = &seen.skipped {
        tracing::info!(%pipeline, host, %event, delivery, answer, why = %why, "delivery built nothing");
    } else {
        let builds = seen
            .builds
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        tracing::info!(%pipeline, host, %event, delivery, answer, %builds, "delivery queued builds");
    }
}
