//! Behind a reverse proxy: every Server-Sent Events answer (the live log,
//! the live pages) carries `X-Accel-Buffering: no`, so nginx passes each
//! event on at once instead of buffering the stream (docs/reverse-proxy.md).

use axum::http::{HeaderValue, header};
use axum::response::Response;

/// Adds `X-Accel-Buffering: no` to `text/event-stream` answers.
pub(super) async fn no_buffering_for_streams(mut res: Response) -> Response {
    let is_stream = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if is_stream {
        res.headers_mut()
            .insert("x-accel-buffering", HeaderValue::from_static("no"));
    }
    res
}
