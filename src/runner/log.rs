//! Build logs: one file per build, written as output arrives, secrets
//! masked, capped in size, and followable while the build runs.
//!
//! A [`LogWriter`] owns the file. Step output goes through [`LogWriter::write`]
//! and hookci's own lines (step headers and results) through
//! [`LogWriter::line`]; both are masked ([`mask`]) before they reach the file,
//! so no secret value is ever on disk. Nothing is buffered beyond what the
//! masker must hold back (less than the longest secret), so memory stays
//! flat however much a step prints, and once the cap is reached further step
//! output is read and dropped: a step is never blocked by its log.
//!
//! Readers follow a log with a [`LogFollower`]: the writer publishes how many
//! bytes are in the file (and whether it is finished) on a `watch` channel,
//! and followers read the file itself up to that point. A follower never
//! sees bytes the writer has not finished writing.
//!
//! *Invariant:* every byte in a log file went through the masker.

mod follow;
pub mod mask;
pub mod mirror;
pub mod ship;
pub mod times;
pub mod visible;

pub use follow::{LogFollower, follow_file};

use crate::secret::Secret;
use mask::Masker;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{oneshot, watch};

/// The most one splice(2) moves from a full log's pipe to /dev/null.
const DISCARD_CHUNK: usize = 1 << 20;

/// How often a capture thread looks for hookci's lines and for a stop
/// while the step prints nothing.
const CAPTURE_TICK_MS: u16 = 50;

/// How much step output one write takes in (a step's reader reads this
/// much from its pipe at once).
pub const CHUNK: usize = 1 << 20;

/// What the writer has published so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Progress {
    /// Bytes in the file, all of them written and readable.
    written: u64,
    /// The log is complete: no byte will be added.
    finished: bool,
}

/// The writer of one build's log file.
///
/// The file is written off the async threads, and a chunk of output is
/// copied only twice, from the pipe into the buffer and from the buffer into
/// the file, as `cat > FILE` does. While a step runs, its output is read,
/// masked and written by a thread of its own ([`LogWriter::capture`]),
/// which owns the writer's state ([`Sink`], the masker and the buffer) until
/// the step's pipe ends; hookci's lines meanwhile go to that thread. Other
/// writes hand the state to the blocking pool and take it back.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    /// `None` while a capture thread has it, or if a write's future was
    /// dropped before it ended (its task aborted): the log takes nothing
    /// more then.
    inner: Option<Box<Inner>>,
    /// The capture thread that has the state, and where hookci's lines go
    /// meanwhile.
    capture: Option<(Capture, std::sync::mpsc::Sender<String>)>,
    /// Bytes in the file, as of the last write that ended.
    written: u64,
    /// The cap was reached: step output is dropped from now on.
    truncated: bool,
    progress: Arc<watch::Sender<Progress>>,
}

/// The writer's state, owned by whichever thread writes.
#[derive(Debug)]
struct Inner {
    sink: Sink,
    masker: Masker,
    /// The stream's bytes: `buf[..held]` is output the masker held back
    /// (it may still become part of a secret), new output goes after it.
    buf: Vec<u8>,
    held: usize,
    /// Reused when masked output is more than one piece.
    scratch: Vec<u8>,
}

/// The file end of the log: what is written, up to the cap.
#[derive(Debug)]
struct Sink {
    path: PathBuf,
    file: std::fs::File,
    cap_bytes: u64,
    /// Bytes in the file.
    written: u64,
    /// The last byte in the file, to start hookci's lines on a line of
    /// their own.
    last_byte: Option<u8>,
    truncated: bool,
    /// A duplicate of stdout when echoing (`hookci run` in a terminal).
    /// What goes there passes a [`visible::ViewMask`]: a terminal would
    /// show a secret split by an escape sequence whole.
    echo: Option<(std::fs::File, visible::ViewMask)>,
    /// Why a write to the file first failed (the log is incomplete).
    failed: Option<String>,
    /// When output arrived ([`times`]); `None` if the sidecar could not be
    /// made (a log without times is still a log).
    stamps: Option<times::Stamps>,
}

impl LogWriter {
    /// Creates (or truncates) the log file at `path`. Every value of
    /// `secrets` (and every line of at least [`mask::MIN_LINE_CHARS`]
    /// characters of a multi-line one) is masked as `***`. After `cap_bytes`
    /// bytes the log says it was truncated and step output is dropped.
    pub fn create(path: &Path, secrets: &[Secret], cap_bytes: u64) -> io::Result<LogWriter> {
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)?
        };
        let stamps = times::Stamps::create(path)
            .inspect_err(|e| tracing::warn!(error = %e, "cannot record a log's line times"))
            .ok();
        let (progress, _) = watch::channel(Progress::default());
        let masker = Masker::new(secrets);
        // Zeroed by the allocator (calloc): untouched pages cost nothing.
        let buf = vec![0; masker.max_held() + CHUNK];
        Ok(LogWriter {
            path: path.to_path_buf(),
            inner: Some(Box::new(Inner {
                sink: Sink {
                    path: path.to_path_buf(),
                    file,
                    cap_bytes,
                    written: 0,
                    last_byte: None,
                    truncated: false,
                    echo: None,
                    failed: None,
                    stamps,
                },
                masker,
                buf,
                held: 0,
                scratch: Vec::new(),
            })),
            capture: None,
            written: 0,
            truncated: false,
            progress: Arc::new(progress),
        })
    }

    /// Also copies everything written to the file (masked) to this
    /// process's stdout, for `hookci run` in a terminal: each line as the
    /// terminal will show it is masked too, with these secrets (the log's).
    pub fn echo_to_stdout(&mut self, secrets: &[Secret]) -> io::Result<()> {
        let fd = io::stdout().as_fd().try_clone_to_owned()?;
        self.inner_mut()?.sink.echo =
            Some((std::fs::File::from(fd), visible::ViewMask::new(secrets)));
        Ok(())
    }

    /// Why the log is incomplete, when a write to its file failed (such as
    /// "No space left on device"); `None` while every byte was written.
    pub fn write_error(&self) -> Option<String> {
        match &self.inner {
            Some(inner) => inner.sink.failed.clone(),
            None => Some("the log writer was lost".to_owned()),
        }
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the file so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// True once the cap was reached and step output is being dropped.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }

    /// A reader of this log from its first byte, that follows it until
    /// [`LogWriter::finish`].
    pub fn follow(&self) -> LogFollower {
        LogFollower::live(self.path.clone(), self.progress.subscribe())
    }

    /// Reads a step's output pipe (non-blocking) to its end on a thread of
    /// its own, masking and writing it as it arrives; past the cap, the
    /// pipe goes to /dev/null by splice(2), never through hookci's memory.
    /// Until [`LogWriter::end_capture`], hookci's lines go to that thread,
    /// in order with the output. Dropping the returned guard stops the
    /// thread (within [`CAPTURE_TICK_MS`]).
    pub fn capture(&mut self, pipe: OwnedFd) -> io::Result<CaptureGuard> {
        let inner = self
            .inner
            .take()
            .ok_or_else(|| io::Error::other("the log writer was lost"))?;
        let (notes_tx, notes) = std::sync::mpsc::channel();
        let (done_tx, done) = oneshot::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::clone(&self.progress);
        let thread_stop = Arc::clone(&stop);
        let spawned = std::thread::Builder::new()
            .name("hookci-capture".into())
            .spawn(move || {
                let mut inner = inner;
                capture_loop(&mut inner, &pipe, &notes, &thread_stop, &progress);
                // The receiver goes back with the state: a line sent after
                // the thread's last look is still there for `end_capture`.
                let _ = done_tx.send((inner, notes));
            });
        match spawned {
            Ok(_) => {
                let guard = CaptureGuard(Arc::clone(&stop));
                let capture = Capture {
                    stop,
                    done,
                    got: None,
                    closed: false,
                };
                self.capture = Some((capture, notes_tx));
                Ok(guard)
            }
            Err(e) => Err(e),
        }
    }

    /// Resolves when the capture thread ended (the pipe's end; at once
    /// without one). Cancel-safe.
    pub async fn capture_ended(&mut self) {
        if let Some((capture, _)) = &mut self.capture {
            capture.ended().await;
        }
    }

    /// Waits for the capture thread (stopping it first when `stop`: the
    /// pipe stayed open too long) and takes the writer's state back.
    pub async fn end_capture(&mut self, stop: bool) {
        let Some((mut capture, notes)) = self.capture.take() else {
            return;
        };
        if stop {
            capture.stop.store(true, Ordering::Relaxed);
        }
        drop(notes);
        capture.ended().await;
        if let Some((inner, rest)) = capture.got.take() {
            self.truncated = inner.sink.truncated;
            self.written = inner.sink.written;
            self.inner = Some(inner);
            // Lines sent while the thread was ending (the pipe closed
            // between its last look at them and its exit), in order.
            while let Ok(text) = rest.try_recv() {
                let _ = self.with_inner(move |inner| inner.line(&text)).await;
            }
        }
    }

    /// Appends step output. Masked; past the cap, dropped.
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() || self.truncated {
            return Ok(());
        }
        let bytes = bytes.to_vec();
        self.with_inner(move |inner| {
            for piece in bytes.chunks(CHUNK) {
                let held = inner.held;
                inner.buf[held..held + piece.len()].copy_from_slice(piece);
                inner.commit(piece.len())?;
            }
            Ok(())
        })
        .await?
    }

    /// Appends one of hookci's own lines (`==> step test: cargo test`), on a
    /// line of its own, masked like step output. It ends whatever step
    /// output the masker held back. These lines are written even past the
    /// cap: they are few and short, and they tell how each step ended.
    /// Control characters in `text` are escaped (`\n`, `\x1b`, ...).
    pub async fn line(&mut self, text: &str) -> io::Result<()> {
        // hookci's own lines carry payload values (refs, URLs): escape
        // control characters so that none can end the line early and
        // forge another.
        let text = escape_controls(text).into_owned();
        if let Some((_, notes)) = &self.capture {
            match notes.send(text) {
                Ok(()) => return Ok(()),
                // The thread ended (the pipe did): take the state back
                // and write the line here.
                Err(std::sync::mpsc::SendError(text)) => {
                    self.end_capture(false).await;
                    return self.with_inner(move |inner| inner.line(&text)).await?;
                }
            }
        }
        self.with_inner(move |inner| inner.line(&text)).await?
    }

    /// Writes what the masker held back and marks the log complete; its
    /// followers end once they have read it all.
    pub async fn finish(mut self) -> io::Result<()> {
        let result = self
            .with_inner(|inner| {
                let result = inner.flush_held();
                if let Some((stdout, view)) = &mut inner.sink.echo {
                    let _ = stdout.write_all(&view.finish());
                }
                result.and_then(|()| inner.sink.file.sync_data())
            })
            .await
            .and_then(|r| r);
        self.progress.send_modify(|p| p.finished = true);
        result
    }

    fn inner_mut(&mut self) -> io::Result<&mut Inner> {
        self.inner
            .as_deref_mut()
            .ok_or_else(|| io::Error::other("the log writer was lost"))
    }

    /// Runs `f` on the writer's state on the blocking pool, then publishes
    /// what is in the file.
    async fn with_inner<R: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Inner) -> R + Send + 'static,
    ) -> io::Result<R> {
        let mut inner = self
            .inner
            .take()
            .ok_or_else(|| io::Error::other("the log writer was lost"))?;
        let (inner, result) = tokio::task::spawn_blocking(move || {
            let result = f(&mut inner);
            (inner, result)
        })
        .await
        .map_err(|_| io::Error::other("writing the log failed"))?;
        self.truncated = inner.sink.truncated;
        if inner.sink.written != self.written {
            self.written = inner.sink.written;
            let written = self.written;
            self.progress.send_modify(|p| p.written = written);
        }
        self.inner = Some(inner);
        Ok(result)
    }
}

/// The publishing end of a log file that something other than a
/// [`LogWriter`] writes (a receiver's copy of a log a runner shipped to the
/// database, [`mirror`]): its followers read the file up to what it
/// published, as a writer's do.
#[derive(Debug)]
pub struct Publisher {
    path: PathBuf,
    progress: watch::Sender<Progress>,
}

impl Publisher {
    /// Publishes the file at `path`, empty so far.
    pub fn new(path: PathBuf) -> Publisher {
        Publisher {
            path,
            progress: watch::channel(Progress::default()).0,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The first `written` bytes of the file are written and readable.
    pub fn written(&self, written: u64) {
        self.progress.send_if_modified(|p| {
            let changed = p.written != written;
            p.written = written;
            changed
        });
    }

    /// No byte will be added: followers end once they have read it all.
    pub fn finish(&self) {
        self.progress
            .send_if_modified(|p| !std::mem::replace(&mut p.finished, true));
    }

    /// True once [`Publisher::finish`] was called.
    pub fn is_finished(&self) -> bool {
        self.progress.borrow().finished
    }

    /// A reader of the file from its first byte, that follows it until
    /// [`Publisher::finish`].
    pub fn follow(&self) -> LogFollower {
        LogFollower::live(self.path.clone(), self.progress.subscribe())
    }

    /// How many followers (and clones of them) read it now.
    pub fn followers(&self) -> usize {
        self.progress.receiver_count()
    }
}

/// Stops a capture thread when dropped (its step's task was aborted).
#[derive(Debug)]
pub struct CaptureGuard(Arc<AtomicBool>);

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A step's output being read by a capture thread.
#[derive(Debug)]
struct Capture {
    stop: Arc<AtomicBool>,
    done: oneshot::Receiver<(Box<Inner>, std::sync::mpsc::Receiver<String>)>,
    /// What the thread handed back when it ended.
    got: Option<(Box<Inner>, std::sync::mpsc::Receiver<String>)>,
    /// The thread ended without handing anything back.
    closed: bool,
}

impl Capture {
    /// Resolves when the thread ended (the pipe's end). Cancel-safe.
    async fn ended(&mut self) {
        if self.got.is_some() || self.closed {
            return;
        }
        match (&mut self.done).await {
            Ok(back) => self.got = Some(back),
            Err(_) => self.closed = true,
        }
    }
}

/// The capture thread: poll, read into the buffer, mask, write, publish;
/// hookci's lines in between.
fn capture_loop(
    inner: &mut Inner,
    pipe: &OwnedFd,
    notes: &std::sync::mpsc::Receiver<String>,
    stop: &AtomicBool,
    progress: &watch::Sender<Progress>,
) {
    use nix::errno::Errno;
    use nix::fcntl::{SpliceFFlags, splice};
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut null: Option<std::fs::File> = None;
    let mut failed = false;
    let publish = |inner: &Inner| {
        let written = inner.sink.written;
        progress.send_if_modified(|p| {
            let changed = p.written != written;
            p.written = written;
            changed
        });
    };
    let notes_now = |inner: &mut Inner| {
        while let Ok(text) = notes.try_recv() {
            let _ = inner.line(&text);
        }
        publish(inner);
    };
    loop {
        notes_now(inner);
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(CAPTURE_TICK_MS)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "waiting for a step's output failed");
                return;
            }
        }
        if inner.sink.truncated {
            if null.is_none() {
                match std::fs::OpenOptions::new().write(true).open("/dev/null") {
                    Ok(f) => null = Some(f),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot open /dev/null to discard output");
                        return;
                    }
                }
            }
            let Some(null) = &null else { return };
            let flags = SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE;
            match splice(pipe, None, null, None, DISCARD_CHUNK, flags) {
                Ok(0) => return,
                Ok(_) | Err(Errno::EAGAIN | Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "discarding a step's output failed");
                    return;
                }
            }
        }
        let held = inner.held;
        match nix::unistd::read(pipe, &mut inner.buf[held..]) {
            Ok(0) => {
                notes_now(inner);
                return;
            }
            Ok(n) => {
                // The step keeps running whatever happens to its log:
                // output that cannot be written is dropped.
                if let Err(e) = inner.commit(n) {
                    if !failed {
                        failed = true;
                        tracing::error!(error = %e, "writing the build log failed");
                    }
                }
                publish(inner);
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(e) => {
                tracing::warn!(error = %e, "reading a step's output failed");
                return;
            }
        }
    }
}

impl Inner {
    /// Masks and writes `n` new bytes at `buf[held..]`, keeping back the
    /// tail that may still become a secret.
    fn commit(&mut self, n: usize) -> io::Result<()> {
        let len = self.held + n;
        if self.sink.truncated {
            self.held = 0;
            return Ok(());
        }
        let mut first: &[u8] = &[];
        let mut count = 0usize;
        let scratch = &mut self.scratch;
        scratch.clear();
        let cut = self.masker.mask_final(&self.buf[..len], |piece| {
            // One piece (no secret in the chunk) is written from the
            // buffer as it is; more are gathered first, so a step that
            // prints a secret often costs one write per chunk, not one per
            // secret.
            match count {
                0 => first = piece,
                1 => {
                    scratch.extend_from_slice(first);
                    scratch.extend_from_slice(piece);
                }
                _ => scratch.extend_from_slice(piece),
            }
            count += 1;
        });
        let result = if count <= 1 {
            self.sink.write_capped(first)
        } else {
            self.sink.write_capped(&self.scratch)
        };
        if self.sink.truncated {
            self.held = 0;
        } else {
            self.buf.copy_within(cut..len, 0);
            self.held = len - cut;
        }
        result
    }

    /// Masks and writes what was held back.
    fn flush_held(&mut self) -> io::Result<()> {
        let held = std::mem::take(&mut self.held);
        if self.sink.truncated || held == 0 {
            return Ok(());
        }
        self.scratch.clear();
        self.masker
            .mask_complete(&self.buf[..held], &mut self.scratch);
        self.sink.write_capped(&self.scratch)
    }

    /// Writes one of hookci's own lines (control characters already
    /// escaped), after what was held back.
    fn line(&mut self, text: &str) -> io::Result<()> {
        let result = self.flush_held();
        self.scratch.clear();
        if self.sink.last_byte.is_some_and(|b| b != b'\n') {
            self.scratch.push(b'\n');
        }
        self.masker
            .mask_complete(text.as_bytes(), &mut self.scratch);
        self.scratch.push(b'\n');
        let written = self.sink.write_raw(&self.scratch);
        result.and(written)
    }
}

impl Sink {
    /// Writes masked step output, up to the cap.
    fn write_capped(&mut self, out: &[u8]) -> io::Result<()> {
        if self.truncated || out.is_empty() {
            return Ok(());
        }
        let room = self.cap_bytes.saturating_sub(self.written);
        if (out.len() as u64) <= room {
            return self.write_raw(out);
        }
        // `room < out.len()`, so it fits in a usize.
        let head = &out[..usize::try_from(room).unwrap_or(out.len())];
        self.truncated = true;
        let mut notice = Vec::with_capacity(head.len() + 80);
        notice.extend_from_slice(head);
        if notice
            .last()
            .or(self.last_byte.as_ref())
            .is_some_and(|b| *b != b'\n')
        {
            notice.push(b'\n');
        }
        notice.extend_from_slice(
            format!(
                "[hookci] log truncated: the build printed more than {} bytes\n",
                self.cap_bytes
            )
            .as_bytes(),
        );
        tracing::info!(path = %self.path.display(), cap = self.cap_bytes, "build log truncated");
        self.write_raw(&notice)
    }

    /// Writes bytes that are already masked.
    fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if let Some(stamps) = &mut self.stamps {
            if stamps.stamp(self.written).is_err() {
                self.stamps = None;
            }
        }
        if let Err(e) = self.file.write_all(bytes) {
            self.failed.get_or_insert_with(|| describe(&e));
            return Err(e);
        }
        self.written += bytes.len() as u64;
        self.last_byte = bytes.last().copied();
        if let Some((stdout, view)) = &mut self.echo {
            let shown = view.push(bytes);
            // A closed terminal must not fail the build.
            let _ = stdout.write_all(&shown);
        }
        Ok(())
    }
}

/// An I/O error in words without its code: "No space left on device".
pub fn describe(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_owned(),
        None => e.to_string(),
    }
}

/// `text` with every control character but tab escaped: `\n`, `\r`,
/// `\x1b`, `\u{85}`.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\t' => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() && u32::from(c) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", u32::from(c)));
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_in_hookcis_own_lines_are_escaped() {
        assert_eq!(escape_controls("plain\ttext"), "plain\ttext");
        assert_eq!(
            escape_controls("refs/heads/x\n==> build 9 success\r\u{1b}[2J\u{85}"),
            "refs/heads/x\\n==> build 9 success\\r\\x1b[2J\\u{85}"
        );
    }
}
