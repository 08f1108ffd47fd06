//! A receiver's copies of the logs runners ship to a shared store
//! (PostgreSQL, SPEC §11): every receiver serves every log, though the
//! runner that writes it is on another box.
//!
//! A build's log is copied from the database into a file of this
//! process's (`data_dir/logs/mirror/ID-RUN.log`, with its `ID-RUN.times`
//! line-time sidecar) and published as a [`LogWriter`](super::LogWriter)
//! publishes its own ([`Publisher`]), so that followers, the pages' log
//! parts, the API's reads and the live streams read it as they read a log
//! written here. One copy per build, shared by all its readers: a read
//! first copies what the database has now ([`Mirrors::file`]); a follower
//! ([`Mirrors::follow`]) also starts a copier that copies as the runner
//! ships (woken by the runner's NOTIFY, and every second besides) until
//! the log is complete, its runner lost the build, or nobody follows.
//!
//! A new run of the log (attempt 2, or a claim after a re-queue) is a new
//! file: followers of the old one end, and never read the new run's
//! bytes. The copies are a cache: wiped at start, at most [`MAX_IDLE`]
//! kept that nobody reads (least recently used go first), and a build's
//! copy goes once the database no longer has its log (pruned).

use super::{LogFollower, Publisher};
use crate::store::{LogHead, Store, StoreError};
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

/// How many copies nobody reads are kept.
pub const MAX_IDLE: usize = 64;

/// How often a copier looks at the database without being told.
const FALLBACK: Duration = Duration::from_secs(1);

/// How long a copy of an ended build's incomplete log waits for the rest
/// (its runner completes it after recording the end) before it is taken
/// as all there is.
const END_GRACE: Duration = Duration::from_secs(15);

/// How many chunks one read of the database fetches.
const FETCH: u32 = 16;

/// A process's copies of shipped logs.
#[derive(Debug)]
pub struct Mirrors {
    dir: PathBuf,
    store: Store,
    map: Mutex<HashMap<i64, Arc<Mirror>>>,
    uses: AtomicU64,
}

/// The copy of one build's log.
#[derive(Debug)]
struct Mirror {
    id: i64,
    state: tokio::sync::Mutex<State>,
    /// A copier task runs for it.
    copying: AtomicBool,
    /// When it was last asked for (a count, for least recently used).
    used: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// The run copied, its file and sidecar.
    run: Option<i64>,
    publisher: Option<Arc<Publisher>>,
    file: Option<tokio::fs::File>,
    times: Option<tokio::fs::File>,
    /// Bytes copied.
    len: u64,
    /// When the build was first seen ended with its log incomplete.
    ended_since: Option<Instant>,
}

/// A copy's file as it is now; it is not removed while this is held.
#[derive(Debug)]
pub struct MirrorFile {
    /// The file.
    pub path: PathBuf,
    _keep: Arc<Mirror>,
}

impl Mirrors {
    /// The copies under `dir`, which is emptied: copies left by an
    /// earlier process may be partial.
    pub fn open(dir: PathBuf, store: Store) -> io::Result<Arc<Mirrors>> {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)?;
        }
        Ok(Arc::new(Mirrors {
            dir,
            store,
            map: Mutex::default(),
            uses: AtomicU64::new(0),
        }))
    }

    /// Build `id`'s log as the database has it now, copied; `None` when
    /// the database has none for it.
    pub async fn file(&self, id: i64) -> Result<Option<MirrorFile>, StoreError> {
        let mirror = self.get(id);
        match mirror.sync(&self.store, &self.dir).await? {
            Some(publisher) => Ok(Some(MirrorFile {
                path: publisher.path().to_path_buf(),
                _keep: mirror,
            })),
            None => {
                drop(mirror);
                self.forget(id);
                Ok(None)
            }
        }
    }

    /// A follower of build `id`'s log in the database from its first
    /// byte, live while its runner ships it; `None` when the database has
    /// none for it.
    pub async fn follow(self: &Arc<Self>, id: i64) -> Result<Option<LogFollower>, StoreError> {
        let mirror = self.get(id);
        let Some(publisher) = mirror.sync(&self.store, &self.dir).await? else {
            drop(mirror);
            self.forget(id);
            return Ok(None);
        };
        let follower = publisher.follow();
        if !publisher.is_finished() && !mirror.copying.swap(true, Ordering::AcqRel) {
            tokio::spawn(Arc::clone(self).copy(mirror));
        }
        Ok(Some(follower))
    }

    /// Copies while anybody follows and more may come.
    async fn copy(self: Arc<Self>, mirror: Arc<Mirror>) {
        let mut logs = self.store.subscribe_logs();
        loop {
            loop {
                let more = self.copy_round(&mirror, &mut logs).await;
                if !more {
                    break;
                }
            }
            mirror.copying.store(false, Ordering::Release);
            // A follower that came while the copier was ending saw it
            // running: look once more.
            let wanted = {
                let state = mirror.state.lock().await;
                state
                    .publisher
                    .as_ref()
                    .is_some_and(|p| !p.is_finished() && p.followers() > 0)
            };
            if !wanted || mirror.copying.swap(true, Ordering::AcqRel) {
                return;
            }
        }
    }

    /// Waits for news of the log (or [`FALLBACK`]) and copies it; false
    /// once nothing more is to be copied for anybody.
    async fn copy_round(
        &self,
        mirror: &Mirror,
        logs: &mut tokio::sync::broadcast::Receiver<Option<i64>>,
    ) -> bool {
        let fallback = tokio::time::sleep(FALLBACK);
        tokio::pin!(fallback);
        loop {
            tokio::select! {
                heard = logs.recv() => match heard {
                    Ok(Some(id)) if id != mirror.id => continue,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        (&mut fallback).await;
                        break;
                    }
                },
                () = &mut fallback => break,
            }
        }
        match mirror.sync(&self.store, &self.dir).await {
            Ok(Some(p)) => !p.is_finished() && p.followers() > 0,
            Ok(None) => false,
            Err(e) => {
                tracing::debug!(build = mirror.id, error = %e, "cannot copy a build log; retrying");
                true
            }
        }
    }

    /// The copy of build `id`, made if there is none; the least recently
    /// used idle copies beyond [`MAX_IDLE`] go.
    fn get(&self, id: i64) -> Arc<Mirror> {
        let now = self.uses.fetch_add(1, Ordering::Relaxed);
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mirror = Arc::clone(map.entry(id).or_insert_with(|| {
            Arc::new(Mirror {
                id,
                state: tokio::sync::Mutex::default(),
                copying: AtomicBool::new(false),
                used: AtomicU64::new(0),
            })
        }));
        mirror.used.store(now, Ordering::Relaxed);
        if map.len() > MAX_IDLE {
            let mut idle: Vec<(u64, i64)> = map
                .values()
                .filter(|m| m.idle())
                .map(|m| (m.used.load(Ordering::Relaxed), m.id))
                .collect();
            idle.sort_unstable();
            let over = map.len() - MAX_IDLE;
            for (_, old) in idle.into_iter().take(over) {
                if let Some(m) = map.remove(&old) {
                    m.remove_files();
                }
            }
        }
        mirror
    }

    /// Drops the copy of build `id` (the database has no log for it).
    fn forget(&self, id: i64) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&id).is_some_and(|m| m.idle()) {
            if let Some(m) = map.remove(&id) {
                m.remove_files();
            }
        }
    }

    /// Drops the idle copies whose build's log the database no longer has
    /// (the build was pruned).
    pub async fn sweep(&self) {
        let ids: Vec<i64> = {
            let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            map.values().filter(|m| m.idle()).map(|m| m.id).collect()
        };
        for id in ids {
            if let Ok(None) = self.store.log_head(id).await {
                self.forget(id);
            }
        }
    }
}

impl Mirror {
    /// Nobody holds it but the map, no copier runs and nobody follows.
    fn idle(self: &Arc<Self>) -> bool {
        Arc::strong_count(self) == 1
            && !self.copying.load(Ordering::Acquire)
            && self.state.try_lock().is_ok_and(|s| {
                s.publisher
                    .as_ref()
                    .is_none_or(|p| p.is_finished() && p.followers() == 0)
            })
    }

    fn remove_files(&self) {
        if let Ok(mut state) = self.state.try_lock() {
            state.drop_run();
        }
    }

    /// Copies what the database has of the log now; the publisher of the
    /// copy, or `None` when the database has no log for the build.
    async fn sync(&self, store: &Store, dir: &Path) -> Result<Option<Arc<Publisher>>, StoreError> {
        let mut state = self.state.lock().await;
        let Some(head) = store.log_head(self.id).await? else {
            state.drop_run();
            return Ok(None);
        };
        if state.run != Some(head.run) {
            state.drop_run();
            state
                .start_run(dir, self.id, head.run)
                .await
                .map_err(|e| copy_failed(self.id, &e))?;
        }
        state.copy(store, self.id, &head).await?;
        Ok(state.publisher.clone())
    }
}

fn copy_failed(id: i64, e: &io::Error) -> StoreError {
    tracing::error!(build = id, error = %e, "cannot write the copy of a build log");
    StoreError::unavailable(crate::store::Cause::Failed, e)
}

impl State {
    /// Ends the current run's copy: its followers end, its files go (a
    /// follower that has opened the file reads on).
    fn drop_run(&mut self) {
        if let Some(p) = self.publisher.take() {
            p.finish();
            let _ = std::fs::remove_file(p.path());
            let _ = std::fs::remove_file(super::times::times_path(p.path()));
        }
        self.run = None;
        self.file = None;
        self.times = None;
        self.len = 0;
        self.ended_since = None;
    }

    async fn start_run(&mut self, dir: &Path, id: i64, run: i64) -> io::Result<()> {
        let path = dir.join(format!("{id}-{run}.log"));
        let create = |path: PathBuf| async move {
            tokio::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .await
        };
        self.file = Some(create(path.clone()).await?);
        self.times = Some(create(super::times::times_path(&path)).await?);
        self.publisher = Some(Arc::new(Publisher::new(path)));
        self.run = Some(run);
        Ok(())
    }

    /// Copies the chunks past what is copied, up to `head`'s length, and
    /// finishes the copy when no byte will be added.
    async fn copy(&mut self, store: &Store, id: i64, head: &LogHead) -> Result<(), StoreError> {
        while self.len < head.length {
            let chunks = store.log_chunks(id, head.run, self.len, FETCH).await?;
            if chunks.is_empty() {
                // A newer run began meanwhile: the next look starts it.
                break;
            }
            for chunk in chunks {
                if chunk.offset != self.len {
                    return Err(StoreError::unavailable(
                        crate::store::Cause::Failed,
                        format!("a log chunk at {} after {} bytes", chunk.offset, self.len),
                    ));
                }
                let (Some(file), Some(times), Some(publisher)) =
                    (&mut self.file, &mut self.times, &self.publisher)
                else {
                    return Ok(());
                };
                let written = async {
                    times.write_all(&chunk.times).await?;
                    times.flush().await?;
                    file.write_all(&chunk.data).await?;
                    file.flush().await
                }
                .await;
                written.map_err(|e| copy_failed(id, &e))?;
                self.len += chunk.data.len() as u64;
                publisher.written(self.len);
            }
        }
        let Some(publisher) = &self.publisher else {
            return Ok(());
        };
        let all_in = self.len >= head.length;
        let ended = !head.running
            && self.ended_since.get_or_insert_with(Instant::now).elapsed() >= END_GRACE;
        // Complete; or its runner lost the build (it can add nothing);
        // or the build ended and the rest never came.
        if all_in && (head.complete || !head.writer_holds || ended) {
            publisher.finish();
        }
        Ok(())
    }
}
