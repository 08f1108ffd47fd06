//! The `webhook` provider: the build as JSON, POSTed to `[status] url` and
//! signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,BASE64` with the `whsec_` secret).
//!
//! The message id is `msg_hookci_{report id}`: unique per report and the
//! same on every retry, so a receiver can drop repeats.

use super::request::{Outgoing, Report};
use crate::model::rfc3339;
use crate::secret::Secret;
use crate::store::{BuildStatus, StepRecord};
use crate::webhook::standard_webhooks_signature;
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

/// The JSON body: the build at the reported state.
#[derive(Debug, Serialize)]
struct Payload<'a> {
    id: i64,
    pipeline: &'a str,
    repo: &'a str,
    #[serde(rename = "ref")]
    git_ref: &'a str,
    commit: &'a str,
    /// hookci's own state name: queued, running, success, failure, error, cancelled.
    status: &'a str,
    reason: Option<&'a str>,
    context: &'a str,
    url: &'a str,
    created_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    steps: &'a [StepRecord],
}

/// The message id of report `id`.
pub fn message_id(report_id: i64) -> String {
    format!("msg_hookci_{report_id}")
}

/// The Standard Webhooks headers for `body` sent as `msg_id` at `timestamp`
/// (Unix seconds), with `Content-Type: application/json`.
pub fn signed_headers(secret: &Secret, msg_id: &str, timestamp: i64, body: &[u8]) -> HeaderMap {
    let signature = standard_webhooks_signature(secret, msg_id, timestamp, body);
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let pairs = [
        ("webhook-id", msg_id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ];
    for (name, value) in pairs {
        // Ids, digits and base64 are always valid header values.
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    headers
}

/// The request for `report`, signed at `timestamp` (Unix seconds).
/// `started_at` is left out of a `queued` report and `finished_at` out of a
/// report before the end, so that each message is the build as it was then.
pub fn request(
    report: &Report<'_>,
    url: &Url,
    secret: &Secret,
    steps: &[StepRecord],
    timestamp: i64,
) -> Result<Outgoing, String> {
    let build = report.build;
    let started = report.state != BuildStatus::Queued;
    let payload = Payload {
        id: build.id,
        pipeline: &build.pipeline,
        repo: &build.repo,
        git_ref: &build.git_ref,
        commit: build.commit_str(),
        status: report.state.as_str(),
        reason: Some(report.reason).filter(|r| !r.is_empty()),
        context: report.context,
        url: &report.target_url,
        created_at: rfc3339(build.created_at),
        started_at: build.started_at.filter(|_| started).map(rfc3339),
        finished_at: build
            .finished_at
            .filter(|_| report.state.is_final())
            .map(rfc3339),
        steps,
    };
    let body =
        serde_json::to_vec(&payload).map_err(|e| format!("cannot encode the report: {e}"))?;
    let headers = signed_headers(secret, &message_id(report.id), timestamp, &body);
    Ok(Outgoing {
        url: url.clone(),
        headers,
        body,
        secrets: vec![secret.clone()],
    })
}
