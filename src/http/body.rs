//! Request bodies under a memory budget.
//!
//! Every byte of a request body the daemon holds is counted against one
//! global budget (`max_body_bytes_in_flight`), taken as the body streams in
//! and given back when the handler is done with it. One client (by IP
//! address) may hold at most half of it, so a single sender cannot starve
//! the others. When the budget is spent the answer is 503 with
//! `Retry-After`, and nothing more of that body is read. Reading a body has
//! a deadline (`request_timeout`): a client too slow to send it gets 408.

use super::ApiError;
use axum::body::{Body, Bytes};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt as _;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The peer's address, as the accept loop saw it.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The client a request came from: its IP address (unspecified when the
/// request did not come through the accept loop, as in unit tests).
#[derive(Debug, Clone, Copy)]
pub struct Client(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Client(client_ip(&parts.extensions)))
    }
}

/// The IP address the accept loop recorded for this request.
pub fn client_ip(extensions: &axum::http::Extensions) -> IpAddr {
    extensions
        .get::<Peer>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.0.ip())
}

/// Bytes of request bodies held at once, overall and per client.
#[derive(Debug)]
pub struct BodyBudget {
    total: usize,
    per_client: usize,
    used: Mutex<Used>,
}

#[derive(Debug, Default)]
struct Used {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

impl BodyBudget {
    /// A budget of `total` bytes; one client may hold half of it, but never
    /// less than one body of `max_body` bytes.
    pub fn new(total: u64, max_body: u64) -> Arc<Self> {
        let total = usize::try_from(total.max(max_body)).unwrap_or(usize::MAX);
        let max_body = usize::try_from(max_body).unwrap_or(usize::MAX);
        Arc::new(BodyBudget {
            total,
            per_client: (total / 2).max(max_body).min(total),
            used: Mutex::new(Used::default()),
        })
    }

    /// A lease of nothing yet, for `client`.
    pub fn lease(self: &Arc<Self>, client: IpAddr) -> BodyLease {
        BodyLease {
            budget: Arc::clone(self),
            client,
            bytes: 0,
        }
    }

    /// Bytes held now (for tests and metrics).
    pub fn in_use(&self) -> usize {
        self.used.lock().unwrap_or_else(|e| e.into_inner()).total
    }

    /// True when `client` could take `n` more bytes now.
    fn fits(&self, client: IpAddr, n: usize) -> bool {
        let used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let mine = used.by_client.get(&client).copied().unwrap_or(0);
        used.total.saturating_add(n) <= self.total && mine.saturating_add(n) <= self.per_client
    }

    fn try_take(&self, client: IpAddr, n: usize) -> bool {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let mine = used.by_client.get(&client).copied().unwrap_or(0);
        if used.total.saturating_add(n) > self.total || mine.saturating_add(n) > self.per_client {
            return false;
        }
        used.total += n;
        *used.by_client.entry(client).or_insert(0) += n;
        true
    }

    fn give_back(&self, client: IpAddr, n: usize) {
        if n == 0 {
            return;
        }
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        used.total = used.total.saturating_sub(n);
        if let Some(mine) = used.by_client.get_mut(&client) {
            *mine = mine.saturating_sub(n);
            if *mine == 0 {
                used.by_client.remove(&client);
            }
        }
    }
}

/// Bytes of the budget one request holds; given back when dropped.
#[derive(Debug)]
pub struct BodyLease {
    budget: Arc<BodyBudget>,
    client: IpAddr,
    bytes: usize,
}

impl BodyLease {
    fn grow(&mut self, n: usize) -> bool {
        if self.budget.try_take(self.client, n) {
            self.bytes += n;
            true
        } else {
            false
        }
    }
}

impl Drop for BodyLease {
    fn drop(&mut self) {
        self.budget.give_back(self.client, self.bytes);
    }
}

/// A body read whole, with the budget it holds until dropped.
#[derive(Debug)]
pub struct HeldBody {
    /// The bytes.
    pub bytes: Bytes,
    _lease: BodyLease,
}

impl std::ops::Deref for HeldBody {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// How a body is read: its size limit and the time the client has.
#[derive(Debug, Clone, Copy)]
pub struct BodyRules {
    /// The largest body accepted (413 above).
    pub max: u64,
    /// How long the client may take to send it (408 after).
    pub deadline: Duration,
}

/// 413 when `Content-Length` declares more than `max`: checked before
/// anything else about the body.
pub fn refuse_declared_too_large(headers: &HeaderMap, max: u64) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than the limit of {max} bytes"),
        ));
    }
    Ok(())
}

/// Reads `body` whole under `rules`, taking its bytes from `budget` as they
/// arrive: 413 past the limit (also when `Content-Length` says so, before a
/// byte is read), 408 past the deadline, 503 + Retry-After when the budget
/// is spent, 400 when the body breaks off.
pub async fn read(
    budget: &Arc<BodyBudget>,
    client: IpAddr,
    headers: &HeaderMap,
    body: Body,
    rules: BodyRules,
) -> Result<HeldBody, ApiError> {
    let max = rules.max;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than the limit of {max} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let mut lease = budget.lease(client);
    let busy = || {
        ApiError::unavailable(
            "the server is busy receiving other requests; retry later",
            5,
        )
    };
    // A declared length that cannot fit now is refused before its first
    // byte; one that fits is not set aside, though: the bytes are taken as
    // they arrive, so a client that declares much and sends nothing holds
    // nothing.
    if let Some(n) = declared {
        if !budget.fits(client, usize::try_from(n).unwrap_or(usize::MAX)) {
            return Err(busy());
        }
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let read = async {
        let mut body = body;
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut len = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| ApiError::bad_request("the body could not be read"))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            len = len.saturating_add(data.len());
            if len > limit {
                return Err(too_large());
            }
            if !lease.grow(data.len()) {
                return Err(busy());
            }
            chunks.push(data);
        }
        Ok(concat(chunks, len))
    };
    match tokio::time::timeout(rules.deadline, read).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "the body took too long to send",
        )),
        Ok(Err(e)) => Err(e),
        Ok(Ok(bytes)) => Ok(HeldBody {
            bytes,
            _lease: lease,
        }),
    }
}

fn concat(mut chunks: Vec<Bytes>, len: usize) -> Bytes {
    if chunks.len() == 1 {
        return chunks.pop().unwrap_or_default();
    }
    let mut out = Vec::with_capacity(len);
    for c in &chunks {
        out.extend_from_slice(c);
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_may_hold_half_and_everyone_the_whole() {
        let b = BodyBudget::new(100, 10);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let c: IpAddr = "10.0.0.2".parse().unwrap();
        let mut l1 = b.lease(a);
        assert!(l1.grow(50));
        assert!(!l1.grow(1), "a client past its half");
        let mut l2 = b.lease(c);
        assert!(l2.grow(50));
        let mut l3 = b.lease(c);
        assert!(!l3.grow(1), "the whole budget is spent");
        drop(l1);
        assert_eq!(b.in_use(), 50);
        drop(l2);
        drop(l3);
        assert_eq!(b.in_use(), 0);
    }

    #[test]
    fn a_budget_below_one_body_still_takes_one_body() {
        let b = BodyBudget::new(5, 10);
        let mut l = b.lease(IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(l.grow(10));
    }
}
