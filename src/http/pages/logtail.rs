//! The end of a build log as a page shows it: the last bytes of the file,
//! from a line start, with terminal control sequences removed.

use std::io;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// What a page embeds of a log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogTail {
    /// The text shown, cleaned for display (not for HTML: that is the
    /// template's job).
    pub text: String,
    /// Bytes at the start of the file not shown.
    pub skipped: u64,
    /// There is no log file (yet).
    pub missing: bool,
}

/// How far past the cut a page looks for a line start before it gives up
/// and starts mid-line.
const LINE_SEARCH: usize = 64 * 1024;

/// The last `cap` bytes of the log at `path` (the whole log when smaller).
pub async fn read(path: &Path, cap: u64) -> io::Result<LogTail> {
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
    let start = len.saturating_sub(cap);
    file.seek(io::SeekFrom::Start(start)).await?;
    let mut bytes = Vec::with_capacity(usize::try_from(len.min(cap)).unwrap_or(0));
    // A running build's log grows while it is read: read no more than cap.
    file.take(cap).read_to_end(&mut bytes).await?;
    let mut skipped = start;
    if start > 0 {
        let search = &bytes[..bytes.len().min(LINE_SEARCH)];
        if let Some(nl) = search.iter().position(|b| *b == b'\n') {
            bytes.drain(..=nl);
            skipped += nl as u64 + 1;
        }
    }
    Ok(LogTail {
        text: terminal_text(&String::from_utf8_lossy(&bytes)),
        skipped,
        missing: false,
    })
}

/// What a terminal would leave of `raw`, roughly: escape sequences
/// (colours, cursor moves, titles) and other control characters removed,
/// and a line rewritten with carriage returns (progress bars) reduced to
/// its last version.
pub fn terminal_text(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for line in raw.split_inclusive('\n') {
        let (body, newline) = match line.strip_suffix('\n') {
            Some(body) => (body, true),
            None => (line, false),
        };
        let body = body.strip_suffix('\r').unwrap_or(body);
        let last = body.rsplit('\r').next().unwrap_or(body);
        strip_controls(last, &mut out);
        if newline {
            out.push('\n');
        }
    }
    out
}

/// Appends `s` to `out` without ANSI escape sequences and control
/// characters (tabs are kept).
fn strip_controls(s: &str, out: &mut String) {
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI: parameters and intermediates, then one final byte.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC (titles, hyperlinks): up to BEL or ESC \.
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' && chars.peek() == Some(&'\\') {
                            chars.next();
                            break;
                        }
                    }
                }
                // Any other escape is two characters.
                Some(_) | None => {}
            },
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::terminal_text;

    #[test]
    fn colours_and_control_characters_are_removed() {
        assert_eq!(
            terminal_text("\u{1b}[1;31merror\u{1b}[0m: x\u{7}\u{0}\ty\n"),
            "error: x\ty\n"
        );
        assert_eq!(
            terminal_text("\u{1b}]0;title\u{7}a\u{1b}]8;;http://x\u{1b}\\b"),
            "ab"
        );
    }

    #[test]
    fn a_line_rewritten_by_carriage_returns_shows_its_last_version() {
        assert_eq!(terminal_text("10%\r50%\r100%\r\ndone\r\n"), "100%\ndone\n");
    }

    #[test]
    fn a_cut_escape_sequence_ends_the_text_without_a_panic() {
        assert_eq!(terminal_text("a\u{1b}"), "a");
        assert_eq!(terminal_text("a\u{1b}[12"), "a");
        assert_eq!(terminal_text("a\u{1b}]x"), "a");
    }
}
