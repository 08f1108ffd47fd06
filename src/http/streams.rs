//! Live log streams (Server-Sent Events) are capped in total and per client
//! (IP address), and each lives at most `log_stream_lifetime`: a stream
//! holds a connection for as long as it is open.

use super::body::client_ip;
use super::{ApiError, AppState};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Streams open now, overall and per client.
#[derive(Debug, Default)]
pub struct StreamCounts {
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One open stream; counted until dropped.
#[derive(Debug)]
struct Slot {
    counts: Arc<StreamCounts>,
    client: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(|e| e.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.1.remove(&self.client);
            }
        }
    }
}

impl StreamCounts {
    fn take(self: &Arc<Self>, client: IpAddr, total: usize, per_client: usize) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mine = open.1.get(&client).copied().unwrap_or(0);
        if open.0 >= total || mine >= per_client {
            return None;
        }
        open.0 += 1;
        *open.1.entry(client).or_insert(0) += 1;
        Some(Slot {
            counts: Arc::clone(self),
            client,
        })
    }
}

/// The middleware of the stream routes: 503 + Retry-After past a cap; the
/// stream ends after its lifetime.
pub async fn limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let client = client_ip(req.extensions());
    let config = state.config();
    let Some(slot) = state.streams().take(
        client,
        config.max_log_streams,
        config.max_log_streams_per_client,
    ) else {
        return ApiError::unavailable("too many live log streams are open; retry later", 30)
            .into_response();
    };
    let lifetime = config.log_stream_lifetime;
    let res = next.run(req).await;
    let (parts, body) = res.into_parts();
    let ends = tokio::time::sleep(lifetime);
    let stream = body.into_data_stream().take_until(ends).map(move |chunk| {
        let _held = &slot;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(stream))
}
