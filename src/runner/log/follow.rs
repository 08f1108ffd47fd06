//! Readers of a log, running or finished.

use super::Progress;
use std::io::{self, SeekFrom};
use std::path::PathBuf;
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::watch;

/// The most a follower hands out at once.
const CHUNK: u64 = 64 * 1024;

/// A reader of one log from its first byte: of a running build (from
/// [`super::LogWriter::follow`]) it waits for new bytes until the log is
/// finished; of a finished build ([`follow_file`]) it reads to the end.
/// Cloning is cheap; a clone reads on from the same offset, independently.
#[derive(Debug)]
pub struct LogFollower {
    path: PathBuf,
    offset: u64,
    /// `None`: the log is complete (or its writer is gone): read to EOF.
    progress: Option<watch::Receiver<Progress>>,
    /// Opened on the first read.
    file: Option<File>,
}

impl Clone for LogFollower {
    fn clone(&self) -> Self {
        LogFollower {
            path: self.path.clone(),
            offset: self.offset,
            progress: self.progress.clone(),
            file: None,
        }
    }
}

/// A reader of a finished build's log: it reads the file to its end.
pub fn follow_file(path: impl Into<PathBuf>) -> LogFollower {
    LogFollower {
        path: path.into(),
        offset: 0,
        progress: None,
        file: None,
    }
}

impl LogFollower {
    pub(super) fn live(path: PathBuf, progress: watch::Receiver<Progress>) -> LogFollower {
        LogFollower {
            path,
            offset: 0,
            progress: Some(progress),
            file: None,
        }
    }

    /// The same reader, from byte `offset` on (a page that shows the log up
    /// to there follows the rest). Before the first read only.
    pub fn starting_at(mut self, offset: u64) -> LogFollower {
        if self.file.is_none() {
            self.offset = offset;
        }
        self
    }

    /// How many bytes this follower has handed out.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next bytes of the log (at most 64 KiB), waiting for the writer
    /// when there are none yet; `None` once the log is finished and all of
    /// it was read.
    pub async fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            let Some(rx) = &mut self.progress else {
                let chunk = self.read(CHUNK).await?;
                return Ok((!chunk.is_empty()).then_some(chunk));
            };
            let now = *rx.borrow_and_update();
            if self.offset < now.written {
                let chunk = self.read((now.written - self.offset).min(CHUNK)).await?;
                if chunk.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the log file is shorter than its writer reported",
                    ));
                }
                return Ok(Some(chunk));
            }
            if now.finished {
                return Ok(None);
            }
            if rx.changed().await.is_err() {
                // The writer is gone without finishing (its build task
                // ended): what is in the file is all there will be.
                self.progress = None;
            }
        }
    }

    /// Reads up to `max` bytes at the follower's offset.
    async fn read(&mut self, max: u64) -> io::Result<Vec<u8>> {
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                let mut file = File::open(&self.path).await?;
                file.seek(SeekFrom::Start(self.offset)).await?;
                self.file.insert(file)
            }
        };
        let mut buf = vec![0; usize::try_from(max).unwrap_or(usize::MAX)];
        let n = file.read(&mut buf).await?;
        buf.truncate(n);
        self.offset += n as u64;
        Ok(buf)
    }
}
