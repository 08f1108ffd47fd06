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
pub mod visible;

pub use follow::{LogFollower, follow_file};

use crate::secret::Secret;
use mask::Masker;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use tokio::fs::File;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

/// What the writer has published so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Progress {
    /// Bytes in the file, all of them written and readable.
    written: u64,
    /// The log is complete: no byte will be added.
    finished: bool,
}

/// The writer of one build's log file.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    file: File,
    masker: Masker,
    cap_bytes: u64,
    /// Bytes in the file.
    written: u64,
    /// The last byte in the file, to start hookci's lines on a line of
    /// their own.
    last_byte: Option<u8>,
    /// The cap was reached: step output is dropped from now on.
    truncated: bool,
    /// A duplicate of stdout when echoing; written on the blocking pool
    /// like the file, so a slow terminal does not stall the runtime. What
    /// goes there passes a [`visible::ViewMask`]: a terminal shows a
    /// secret split by an escape sequence whole.
    echo: Option<(File, visible::ViewMask)>,
    progress: watch::Sender<Progress>,
    /// Reused for masked output, so a write allocates nothing in the steady
    /// state.
    scratch: Vec<u8>,
    /// Why a write to the file first failed (the log is incomplete).
    failed: Option<String>,
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
        let (progress, _) = watch::channel(Progress::default());
        Ok(LogWriter {
            path: path.to_path_buf(),
            file: File::from_std(file),
            masker: Masker::new(secrets),
            cap_bytes,
            written: 0,
            last_byte: None,
            truncated: false,
            echo: None,
            progress,
            scratch: Vec::new(),
            failed: None,
        })
    }

    /// Also copies everything written to the file (masked) to this
    /// process's stdout, for `hookci run` in a terminal: each line as the
    /// terminal will show it is masked too, with these secrets (the log's).
    pub fn echo_to_stdout(&mut self, secrets: &[Secret]) -> io::Result<()> {
        let fd = io::stdout().as_fd().try_clone_to_owned()?;
        self.echo = Some((
            File::from_std(std::fs::File::from(fd)),
            visible::ViewMask::new(secrets),
        ));
        Ok(())
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the file so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Why the log is incomplete, when a write to its file failed (such as
    /// "No space left on device"); `None` while every byte was written.
    pub fn write_error(&self) -> Option<String> {
        self.failed.clone()
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

    /// Appends step output. Masked; past the cap, dropped.
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.truncated || bytes.is_empty() {
            return Ok(());
        }
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        self.masker.push(bytes, &mut out);
        let result = self.write_capped(&out).await;
        self.scratch = out;
        result
    }

    /// Appends one of hookci's own lines (`==> step test: cargo test`), on a
    /// line of its own, masked like step output. It ends whatever step
    /// output the masker held back. These lines are written even past the
    /// cap: they are few and short, and they tell how each step ended.
    /// Control characters in `text` are escaped (`\n`, `\x1b`, ...).
    pub async fn line(&mut self, text: &str) -> io::Result<()> {
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        if !self.truncated {
            self.masker.flush(&mut out);
        }
        let mut result = self.write_capped(&out).await;
        out.clear();
        if self.last_byte.is_some_and(|b| b != b'\n') {
            out.push(b'\n');
        }
        // hookci's own lines carry payload values (refs, URLs): escape
        // control characters so that none can end the line early and
        // forge another.
        let text = escape_controls(text);
        self.masker.mask_complete(text.as_bytes(), &mut out);
        out.push(b'\n');
        let written = self.write_raw(&out).await;
        self.scratch = out;
        if result.is_ok() {
            result = written;
        }
        result
    }

    /// Writes what the masker held back and marks the log complete; its
    /// followers end once they have read it all.
    pub async fn finish(mut self) -> io::Result<()> {
        let mut out = Vec::new();
        if !self.truncated {
            self.masker.flush(&mut out);
        }
        let mut result = self.write_capped(&out).await;
        if result.is_ok() {
            result = self.file.sync_data().await;
        }
        if let Some((stdout, view)) = &mut self.echo {
            let _ = stdout.write_all(&view.finish()).await;
            let _ = stdout.flush().await;
        }
        self.progress.send_modify(|p| p.finished = true);
        result
    }

    /// Writes masked step output, up to the cap.
    async fn write_capped(&mut self, out: &[u8]) -> io::Result<()> {
        if self.truncated || out.is_empty() {
            return Ok(());
        }
        let room = self.cap_bytes.saturating_sub(self.written);
        if (out.len() as u64) <= room {
            return self.write_raw(out).await;
        }
        // `room < out.len()`, so it fits in a usize.
        let head = &out[..usize::try_from(room).unwrap_or(out.len())];
        self.truncated = true;
        self.masker.discard();
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
        self.write_raw(&notice).await
    }

    /// Writes bytes that are already masked, then publishes them.
    async fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        // tokio's File finishes a write on the blocking pool; flush waits
        // for it, so followers are only told about bytes in the file.
        let written = match self.file.write_all(bytes).await {
            Ok(()) => self.file.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            self.failed.get_or_insert_with(|| describe(&e));
            return Err(e);
        }
        self.written += bytes.len() as u64;
        self.last_byte = bytes.last().copied();
        let written = self.written;
        self.progress.send_modify(|p| p.written = written);
        if let Some((stdout, view)) = &mut self.echo {
            let shown = view.push(bytes);
            // A closed terminal must not fail the build.
            let _ = stdout.write_all(&shown).await;
            let _ = stdout.flush().await;
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
