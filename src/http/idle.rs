//! Connections without a request in progress, oldest wait first: a socket
//! that has not yet sent a complete request head, or a keep-alive
//! connection between requests. When every connection slot is taken, the
//! accept loop closes the one that has waited longest ([`Waiting::evict_oldest`]).

use axum::body::Body;
use axum::response::Response;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use tokio::sync::Notify;

/// `Conn::active` of a connection that was closed to make room.
const EVICTED: usize = usize::MAX;

/// The connections waiting for a request head, in the order they began to.
#[derive(Debug, Default)]
pub struct Waiting {
    queue: Mutex<Queue>,
    turns: AtomicU64,
}

#[derive(Debug, Default)]
struct Queue {
    /// (turn, connection): an entry is current while the connection's
    /// `turn` is still this one and no request is in progress.
    entries: VecDeque<(u64, Weak<Conn>)>,
    /// Past this length, stale entries are dropped.
    compact_at: usize,
}

/// One connection's part.
#[derive(Debug)]
pub struct Conn {
    waiting: Arc<Waiting>,
    /// Requests in progress (a head received, its answer not yet sent), or
    /// [`EVICTED`].
    active: AtomicUsize,
    /// Its latest wait's turn.
    turn: AtomicU64,
    evict: Notify,
}

impl Waiting {
    /// A new connection: it waits for its first request head.
    pub fn connected(self: &Arc<Self>) -> Arc<Conn> {
        let conn = Arc::new(Conn {
            waiting: Arc::clone(self),
            active: AtomicUsize::new(0),
            turn: AtomicU64::new(0),
            evict: Notify::new(),
        });
        self.enqueue(&conn);
        conn
    }

    fn enqueue(&self, conn: &Arc<Conn>) {
        let turn = self.turns.fetch_add(1, Ordering::Relaxed);
        conn.turn.store(turn, Ordering::Release);
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.entries.push_back((turn, Arc::downgrade(conn)));
        if queue.entries.len() > queue.compact_at.max(1024) {
            queue.entries.retain(|(turn, weak)| {
                weak.upgrade()
                    .is_some_and(|c| c.is_waiting() && c.turn.load(Ordering::Acquire) == *turn)
            });
            queue.compact_at = queue.entries.len() * 2;
        }
    }

    /// Closes the connection that has waited longest for a request head;
    /// false when no connection is waiting.
    pub fn evict_oldest(&self) -> bool {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((turn, weak)) = queue.entries.pop_front() {
            let Some(conn) = weak.upgrade() else {
                continue;
            };
            if conn.turn.load(Ordering::Acquire) != turn {
                continue;
            }
            if conn
                .active
                .compare_exchange(0, EVICTED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                conn.evict.notify_one();
                return true;
            }
        }
        false
    }
}

impl Conn {
    fn is_waiting(&self) -> bool {
        self.active.load(Ordering::Acquire) == 0
    }

    /// A request head arrived: the connection is not evictable until the
    /// returned guard (kept by the answer's body) is dropped.
    pub fn begin(self: &Arc<Self>) -> Busy {
        let counted = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                if n == EVICTED { None } else { Some(n + 1) }
            })
            .is_ok();
        Busy {
            conn: Arc::clone(self),
            counted,
        }
    }

    /// Resolves once the accept loop closed this connection.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }
}

/// A request in progress on a connection.
#[derive(Debug)]
pub struct Busy {
    conn: Arc<Conn>,
    counted: bool,
}

impl Busy {
    /// `res`, whose body keeps the request in progress until it is sent
    /// (or dropped).
    pub fn hold(self, res: Response) -> Response {
        res.map(|inner| Body::new(HeldBody { inner, _busy: self }))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.counted && self.conn.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Back to waiting for the next request head.
            self.conn.waiting.enqueue(&self.conn);
        }
    }
}

/// A response body that holds its connection's [`Busy`].
struct HeldBody {
    inner: Body,
    _busy: Busy,
}

impl axum::body::HttpBody for HeldBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_wait_is_evicted_and_requests_in_progress_never() {
        let waiting = Arc::new(Waiting::default());
        let a = waiting.connected();
        let b = waiting.connected();
        let c = waiting.connected();
        let busy_a = a.begin();
        assert!(waiting.evict_oldest());
        assert_eq!(
            b.active.load(Ordering::Acquire),
            EVICTED,
            "b waited longest"
        );
        // a answers and waits again, after c.
        drop(busy_a);
        assert!(waiting.evict_oldest());
        assert_eq!(c.active.load(Ordering::Acquire), EVICTED);
        assert!(waiting.evict_oldest());
        assert_eq!(a.active.load(Ordering::Acquire), EVICTED);
        assert!(!waiting.evict_oldest(), "nobody waits");
        // A head that comes after the eviction starts nothing.
        let late = b.begin();
        assert!(!late.counted);
    }

    #[test]
    fn stale_entries_do_not_pile_up() {
        let waiting = Arc::new(Waiting::default());
        let conn = waiting.connected();
        for _ in 0..10_000 {
            drop(conn.begin());
        }
        let len = waiting.queue.lock().unwrap().entries.len();
        assert!(len <= 2048, "{len}");
    }
}
