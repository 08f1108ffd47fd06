//! Parts of a build log as a page shows them: the end of the file, or the
//! part before an offset, from a line start; and the number of the line a
//! part starts at.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// A part of a log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogTail {
    /// The bytes shown, as text (invalid UTF-8 replaced); raw terminal
    /// output, not yet cleaned or escaped.
    pub text: String,
    /// The byte offset the part starts at: bytes before it are not shown.
    pub skipped: u64,
    /// The byte offset the part ends at.
    pub end: u64,
    /// There is no log file (yet).
    pub missing: bool,
}

/// How far past the cut a page looks for a line start before it gives up
/// and starts mid-line.
const LINE_SEARCH: usize = 64 * 1024;

/// The most lines a part holds: a page of many short lines is mostly
/// markup, and a browser lays out a few thousand lines at once quickly.
pub const MAX_LINES: usize = 5000;

/// The last `cap` bytes (at most [`MAX_LINES`] lines) of the log at `path`
/// (the whole log when smaller).
pub async fn read(path: &Path, cap: u64) -> io::Result<LogTail> {
    read_before(path, None, cap).await
}

/// Up to `cap` bytes and [`MAX_LINES`] lines of the log at `path` that end
/// at `before` (at the end of the file when `None`), from a line start.
pub async fn read_before(path: &Path, before: Option<u64>, cap: u64) -> io::Result<LogTail> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(LogTail {
                missing: true,
                ..LogTail::default()
            });
        }
        Err(e) => return Err(e),
    };
    let len = file.metadata().await?.len();
    let end = before.map_or(len, |b| b.min(len));
    let start = end.saturating_sub(cap);
    file.seek(io::SeekFrom::Start(start)).await?;
    let mut bytes = Vec::with_capacity(usize::try_from(end - start).unwrap_or(0));
    // A running build's log grows while it is read: read no more than asked.
    file.take(end - start).read_to_end(&mut bytes).await?;
    let end = start + bytes.len() as u64;
    let mut skipped = start;
    if start > 0 {
        let search = &bytes[..bytes.len().min(LINE_SEARCH)];
        if let Some(nl) = search.iter().position(|b| *b == b'\n') {
            bytes.drain(..=nl);
            skipped += nl as u64 + 1;
        }
    }
    let mut seen = 0;
    let last = bytes.len().saturating_sub(1);
    if let Some(cut) = bytes[..last.min(bytes.len())].iter().rposition(|b| {
        *b == b'\n' && {
            seen += 1;
            seen == MAX_LINES
        }
    }) {
        bytes.drain(..=cut);
        skipped += cut as u64 + 1;
    }
    Ok(LogTail {
        text: String::from_utf8_lossy(&bytes).into_owned(),
        skipped,
        end,
        missing: false,
    })
}

/// Counted line starts per log file: (offset, lines before it). A log only
/// grows, so a count up to an offset stays true; a page of a long log then
/// counts only what was added since.
static COUNTED: LazyLock<Mutex<HashMap<PathBuf, (u64, u64)>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// How many logs' counts are kept.
const COUNTED_MAX: usize = 1024;

/// How many `\n` the log at `path` has before byte `offset`.
pub async fn lines_before(path: &Path, offset: u64) -> io::Result<u64> {
    if offset == 0 {
        return Ok(0);
    }
    let cached = COUNTED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(path)
        .copied();
    // A part just before a counted offset (the page's "Show earlier
    // output") is counted back from there.
    if let Some((at, lines)) = cached.filter(|(at, _)| *at > offset && *at - offset <= offset) {
        let between = count_newlines(path, offset, at).await?;
        return Ok(lines.saturating_sub(between));
    }
    let (from, before_from) = match cached {
        Some((at, lines)) if at <= offset => (at, lines),
        _ => (0, 0),
    };
    let lines = before_from + count_newlines(path, from, offset).await?;
    let at = offset;
    let mut counted = COUNTED.lock().unwrap_or_else(|p| p.into_inner());
    if counted.len() >= COUNTED_MAX && !counted.contains_key(path) {
        counted.clear();
    }
    let entry = counted.entry(path.to_path_buf()).or_insert((0, 0));
    if entry.0 < at {
        *entry = (at, lines);
    }
    Ok(lines)
}

/// How many `\n` the file at `path` has in `[from, to)`.
async fn count_newlines(path: &Path, from: u64, to: u64) -> io::Result<u64> {
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(io::SeekFrom::Start(from)).await?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut at, mut lines) = (from, 0);
    while at < to {
        let want = usize::try_from((to - at).min(buf.len() as u64)).unwrap_or(buf.len());
        let n = file.read(&mut buf[..want]).await?;
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
        at += n as u64;
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parts_start_at_a_line_and_lines_are_counted_from_the_cache_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.log");
        let text: String = (1..=1000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        let tail = read(&path, 100).await.unwrap();
        assert!(tail.text.starts_with("line "), "{:?}", tail.text);
        assert_eq!(tail.end, text.len() as u64);
        let first: u64 = tail.text[5..tail.text.find('\n').unwrap()].parse().unwrap();
        assert_eq!(lines_before(&path, tail.skipped).await.unwrap() + 1, first);
        // Counted again from the cache, and for an earlier offset from 0.
        assert_eq!(lines_before(&path, tail.skipped).await.unwrap() + 1, first);
        assert_eq!(lines_before(&path, 7).await.unwrap(), 1);
        // Just before the counted offset: counted back from it.
        let back = tail.skipped - 12;
        assert_eq!(
            lines_before(&path, back).await.unwrap(),
            text[..back as usize].matches('\n').count() as u64
        );
        let part = read_before(&path, Some(tail.skipped), 30).await.unwrap();
        assert!(part.text.ends_with(&format!("line {}\n", first - 1)));
        assert!(part.text.starts_with("line "));
        // Many short lines: the last MAX_LINES of them.
        let short: String = (1..=MAX_LINES + 7).map(|i| format!("{i}\n")).collect();
        std::fs::write(&path, &short).unwrap();
        let tail = read(&path, 1 << 20).await.unwrap();
        assert_eq!(tail.text.lines().count(), MAX_LINES);
        assert!(tail.text.starts_with("8\n"), "{:?}", &tail.text[..10]);
        assert_eq!(&short[tail.skipped as usize..], tail.text);
        let missing = read(&dir.path().join("2.log"), 10).await.unwrap();
        assert!(missing.missing);
    }
}
