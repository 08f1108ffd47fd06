//! Shipping a running build's log to a shared store (PostgreSQL, SPEC
//! §11), so that every receiver serves it: a task per build follows the
//! log file (already masked: only what the [`super::LogWriter`] wrote is
//! read) and appends it to the store in batches, at most one write per
//! [`BATCH_EVERY`] unless [`BATCH_BYTES`] gathered first, each with the
//! line-time records of its bytes; the last marks the log complete.
//!
//! The steps never wait for it: the writer publishes to the file as
//! before, and the shipper reads the file behind it. While the database
//! does not answer, the shipper retries the same batch (backing off up to
//! 5 s) and reads nothing more meanwhile, so its memory stays bounded; the
//! file stays complete, and once the database answers the shipper catches
//! up from where it was. The worker waits for it at the build's end for a
//! bounded time ([`Shipper::wait`]), then records the end anyway. A runner
//! that lost the build (rescued, re-queued) is fenced: it stops shipping.

use super::visible::ViewMask;
use super::{LogFollower, LogWriter, times};
use crate::secret::Secret;
use crate::store::{LogChunk, Store, StoreError};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The most one append carries, about (a batch stops growing past it).
pub const BATCH_BYTES: usize = 256 * 1024;

/// At most one append per this while a step prints steadily.
pub const BATCH_EVERY: Duration = Duration::from_millis(250);

/// How long the shipper retries a database that does not answer before
/// it gives up on the log (the file keeps it all).
const GIVE_UP: Duration = Duration::from_secs(600);

/// One build's shipping task.
#[derive(Debug)]
pub struct Shipper {
    task: tokio::task::JoinHandle<()>,
}

/// Starts shipping `log` (of `build`, claimed by `store`'s handle) to the
/// store.
pub fn start(store: Store, build: i64, log: &LogWriter, secrets: &[Secret]) -> Shipper {
    let follower = log.follow();
    let times = times::times_path(log.path());
    let view = ViewMask::in_place(secrets);
    Shipper {
        task: tokio::spawn(ship(store, build, follower, times, view)),
    }
}

impl Shipper {
    /// Waits, at most `grace`, until the whole log (finished by its
    /// writer) is in the store; true if it is. Past `grace` the shipper
    /// goes on by itself.
    pub async fn wait(mut self, grace: Duration) -> bool {
        tokio::time::timeout(grace, &mut self.task).await.is_ok()
    }
}

async fn ship(
    store: Store,
    build: i64,
    follower: LogFollower,
    times_path: PathBuf,
    mut view: ViewMask,
) {
    // The file is read by a task of its own: a read is not safe to abandon
    // halfway, which the batching select would do. The channel is small:
    // while appends fail, reading stops.
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
    tokio::spawn(async move {
        let mut follower = follower;
        loop {
            match follower.next_chunk().await {
                Ok(Some(chunk)) => {
                    if tx.send(chunk).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(build, error = %e, "cannot read the build log to ship it");
                    return;
                }
            }
        }
    });
    let Some(run) = retried(build, "begin", || store.log_begin(build)).await else {
        return;
    };
    // The store keeps no logs.
    let Some(run) = run else { return };
    let mut times = TimesReader {
        path: times_path,
        next: 0,
        pending: Vec::new(),
    };
    let mut offset = 0u64;
    let mut batch: Vec<u8> = Vec::new();
    let mut last = Instant::now() - BATCH_EVERY;
    let mut ended = false;
    loop {
        while !ended && batch.len() < BATCH_BYTES {
            let due = last + BATCH_EVERY;
            tokio::select! {
                got = rx.recv() => match got {
                    Some(chunk) => batch.extend_from_slice(&chunk),
                    None => ended = true,
                },
                () = tokio::time::sleep_until(due), if !batch.is_empty() => break,
            }
        }
        // The file holds every secret masked where its bytes hold it whole;
        // one split by escape sequences shows whole on a page, so it is
        // masked in place here: a receiver may not hold the step secrets
        // to do it when it shows the log. The same length, so offsets and
        // line times hold; an unfinished line's tail that may still grow
        // into a secret waits for the rest.
        let mut data = view.push(&std::mem::take(&mut batch));
        if ended {
            data.extend(view.finish());
        } else if data.is_empty() {
            continue;
        }
        let end = offset + data.len() as u64;
        let chunk = LogChunk {
            offset,
            times: times.until(end, ended).await,
            data,
        };
        let sent = retried(build, "append to", || {
            store.log_append(build, run, chunk.clone(), ended)
        })
        .await;
        if sent.is_none() {
            return;
        }
        offset = end;
        last = Instant::now();
        if ended {
            return;
        }
    }
}

/// Runs a log write until it passes: `None` when the runner lost the
/// build (fenced) or the database did not answer for [`GIVE_UP`].
async fn retried<T, F, Fut>(build: i64, what: &str, mut write: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut backoff = Duration::from_millis(250);
    let mut failing: Option<Instant> = None;
    loop {
        match write().await {
            Ok(v) => {
                if failing.is_some() {
                    tracing::info!(build, "shipping the build log to the database again");
                }
                return Some(v);
            }
            Err(StoreError::Fenced) => {
                tracing::info!(
                    build,
                    "this runner no longer holds the build: its log is not shipped further"
                );
                return None;
            }
            Err(e) => {
                let since = *failing.get_or_insert_with(|| {
                    tracing::warn!(
                        build,
                        error = %e,
                        "cannot {what} the build log in the database; retrying (the log file \
                         here stays complete)"
                    );
                    Instant::now()
                });
                if since.elapsed() > GIVE_UP {
                    tracing::error!(
                        build,
                        "gave up shipping the build log: the database did not answer for 10 minutes"
                    );
                    return None;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Reads a log's line-time sidecar as it grows.
struct TimesReader {
    path: PathBuf,
    /// The next record to read, by index.
    next: u64,
    /// Records read, not shipped yet.
    pending: Vec<u8>,
}

impl TimesReader {
    /// The records of the bytes before `end` (all of them when `all`),
    /// taken from those not shipped yet. A record is written before the
    /// bytes it stamps, so those of bytes already read are there.
    async fn until(&mut self, end: u64, all: bool) -> Vec<u8> {
        const RECORD: usize = 16;
        let (path, from) = (self.path.clone(), self.next * RECORD as u64);
        let read = tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            let file = std::fs::File::open(path).ok()?;
            let len = file.metadata().ok()?.len();
            let whole = (len.saturating_sub(from) / RECORD as u64) * RECORD as u64;
            let mut buf = vec![0u8; usize::try_from(whole).ok()?];
            file.read_exact_at(&mut buf, from).ok()?;
            Some(buf)
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
        self.next += (read.len() / RECORD) as u64;
        self.pending.extend_from_slice(&read);
        let cut = if all {
            self.pending.len()
        } else {
            self.pending
                .chunks_exact(RECORD)
                .position(|r| {
                    let mut offset = [0u8; 8];
                    offset.copy_from_slice(&r[..8]);
                    u64::from_le_bytes(offset) >= end
                })
                .map_or(self.pending.len(), |i| i * RECORD)
        };
        let rest = self.pending.split_off(cut);
        std::mem::replace(&mut self.pending, rest)
    }
}
