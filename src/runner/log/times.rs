//! When a log's output arrived: a sidecar file beside each log (`ID.times`
//! for `ID.log`) of 16-byte records, (byte offset in the log, Unix time in
//! milliseconds), both little-endian `u64`s. The first record is the log's
//! creation at offset 0; then one record per write of the log whose
//! millisecond differs from the last record's, written before the bytes it
//! stamps. So it costs one 16-byte write per chunk read from a step (a
//! chunk is up to 1 MiB), and at most 1,000 records a second, whatever the
//! step prints.
//!
//! A line's time is that of the last record at or before the line's first
//! byte: when the chunk that held it was read (a secret's first bytes
//! held back by the masker carry the time of the chunk that completed
//! them).

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The size of one record.
const RECORD: u64 = 16;

/// How many records a reader reads at once.
const BATCH: u64 = 4096;

/// The sidecar of the log at `log`: `ID.times` for `ID.log`.
pub fn times_path(log: &Path) -> PathBuf {
    log.with_extension("times")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The writing end, owned by the log's writer.
#[derive(Debug)]
pub(super) struct Stamps {
    file: File,
    last_ms: u64,
}

impl Stamps {
    /// Creates (or truncates) the sidecar and stamps the log's start.
    pub(super) fn create(log: &Path) -> io::Result<Stamps> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(times_path(log))?;
        let mut stamps = Stamps { file, last_ms: 0 };
        stamps.stamp(0)?;
        Ok(stamps)
    }

    /// Bytes from `offset` on arrive now.
    pub(super) fn stamp(&mut self, offset: u64) -> io::Result<()> {
        let ms = now_ms();
        if ms == self.last_ms {
            return Ok(());
        }
        self.last_ms = ms;
        let mut record = [0u8; RECORD as usize];
        record[..8].copy_from_slice(&offset.to_le_bytes());
        record[8..].copy_from_slice(&ms.to_le_bytes());
        self.file.write_all(&record)
    }
}

/// A reader of a sidecar that answers, for line starts in increasing
/// order, how long after the log's start each arrived. Reads only the
/// records from the first offset asked on, in batches.
#[derive(Debug)]
pub struct LineTimes {
    file: File,
    /// The log's start (the first record's time).
    start_ms: u64,
    /// The record in force: (offset, ms).
    current: (u64, u64),
    /// Read, not yet in force.
    ahead: std::collections::VecDeque<(u64, u64)>,
    /// The next record to read, by index.
    next: u64,
    /// The last read found no more records: none is read again until
    /// [`LineTimes::refresh`].
    dry: bool,
}

impl LineTimes {
    /// The times of the log at `log` from byte `from` on; `None` when the
    /// log has no sidecar (written before there were any) or it cannot be
    /// read.
    pub fn open(log: &Path, from: u64) -> Option<LineTimes> {
        let file = File::open(times_path(log)).ok()?;
        let first = read_record(&file, 0)?;
        let count = file.metadata().ok()?.len() / RECORD;
        // The last record at or before `from`: offsets never decrease.
        let (mut lo, mut hi) = (0, count);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            match read_record(&file, mid) {
                Some((offset, _)) if offset <= from => lo = mid,
                Some(_) => hi = mid,
                None => return None,
            }
        }
        let current = read_record(&file, lo)?;
        Some(LineTimes {
            file,
            start_ms: first.1,
            current,
            ahead: std::collections::VecDeque::new(),
            next: lo + 1,
            dry: false,
        })
    }

    /// Milliseconds from the log's start to the arrival of the byte at
    /// `offset` (asked in increasing order).
    pub fn at(&mut self, offset: u64) -> u64 {
        loop {
            if self.ahead.is_empty() && !self.dry {
                self.read_ahead();
            }
            match self.ahead.front() {
                Some(&(o, ms)) if o <= offset => {
                    self.current = (o, ms);
                    self.ahead.pop_front();
                }
                _ => break,
            }
        }
        self.current.1.saturating_sub(self.start_ms)
    }

    /// A live log grew: its new records are read when asked for. (A
    /// record is written before the bytes it stamps, so the records of
    /// bytes already read are there.)
    pub fn refresh(&mut self) {
        self.dry = false;
    }

    fn read_ahead(&mut self) {
        let mut buf = vec![0u8; (BATCH * RECORD) as usize];
        let n = self.file.read_at(&mut buf, self.next * RECORD).unwrap_or(0);
        self.dry = n < buf.len();
        for record in buf[..n].chunks_exact(RECORD as usize) {
            self.ahead.push_back(parse(record));
            self.next += 1;
        }
    }
}

fn parse(record: &[u8]) -> (u64, u64) {
    let mut offset = [0u8; 8];
    let mut ms = [0u8; 8];
    offset.copy_from_slice(&record[..8]);
    ms.copy_from_slice(&record[8..16]);
    (u64::from_le_bytes(offset), u64::from_le_bytes(ms))
}

fn read_record(file: &File, index: u64) -> Option<(u64, u64)> {
    let mut record = [0u8; RECORD as usize];
    file.read_exact_at(&mut record, index * RECORD).ok()?;
    Some(parse(&record))
}

/// `ms` as a log line's time: `m:ss.mmm`, with hours when there are any.
pub fn format_elapsed(ms: u64) -> String {
    let (h, m, s, milli) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}.{milli:03}")
    } else {
        format!("{m}:{s:02}.{milli:03}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_get_the_time_of_the_last_stamp_at_or_before_them() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("1.log");
        let mut file = File::create(times_path(&log)).unwrap();
        for (offset, ms) in [(0u64, 1000u64), (10, 1500), (10, 1600), (30, 4000)] {
            file.write_all(&offset.to_le_bytes()).unwrap();
            file.write_all(&ms.to_le_bytes()).unwrap();
        }
        let mut t = LineTimes::open(&log, 0).unwrap();
        assert_eq!(
            [0, 9, 10, 29, 30, 99].map(|o| t.at(o)),
            [0, 0, 600, 600, 3000, 3000]
        );
        let mut t = LineTimes::open(&log, 12).unwrap();
        assert_eq!(t.at(12), 600);
        assert!(LineTimes::open(&dir.path().join("2.log"), 0).is_none());
        assert_eq!(format_elapsed(3_723_004), "1:02:03.004");
        assert_eq!(format_elapsed(61_500), "1:01.500");
    }
}
