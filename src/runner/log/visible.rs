//! Masking of what a viewer shows. The log file is masked byte for byte,
//! but a terminal and the build page do not show bytes: they drop escape
//! sequences and control characters, so a secret printed as
//! `min\x1b[0me-secret` is not in the file whole, yet shows whole. The
//! viewers (the page, `GET /api/builds/ID/log` and its stream, which
//! `hookci logs` prints) therefore also check each line's visible text and,
//! when it shows a secret, show that text masked instead (without its
//! styles).

use super::mask::Masker;
use crate::pipeline::Pipeline;
use crate::secret::Secret;

/// The secrets a build of `pipeline` masks: its `[secrets]` and its clone
/// credentials (the same the log writer is given).
pub fn pipeline_secrets(pipeline: &Pipeline) -> Vec<Secret> {
    pipeline
        .secrets
        .values()
        .chain(pipeline.clone.token.iter())
        .chain(pipeline.clone.ssh_key.iter())
        .cloned()
        .collect()
}

/// True for a byte that a viewer does not show as itself: an escape, or
/// any control character but tab and newline.
fn hidden(b: u8) -> bool {
    (b.is_ascii_control() && b != b'\t' && b != b'\n') || b == 0x7f
}

/// What a terminal or the page shows of `line`: CSI sequences (`ESC [` …
/// final byte), OSC sequences (`ESC ]` … BEL or `ESC \`), other two-byte
/// escapes and control characters dropped; tab and newline kept.
pub fn visible_text(line: &[u8]) -> Vec<u8> {
    scan(line).text
}

/// A line's visible text, where each of its bytes is in the line, and
/// where an escape sequence the line ends in the middle of starts.
struct Scan {
    text: Vec<u8>,
    /// `at[i]`: the index in the line of `text[i]`.
    at: Vec<usize>,
    /// The start of an escape sequence still open at the end of the line.
    open_escape: Option<usize>,
}

fn scan(line: &[u8]) -> Scan {
    let mut out = Scan {
        text: Vec::with_capacity(line.len()),
        at: Vec::with_capacity(line.len()),
        open_escape: None,
    };
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        let start = i;
        i += 1;
        if b == 0x1b {
            let mut closed = false;
            match line.get(i) {
                Some(b'[') => {
                    i += 1;
                    while i < line.len() {
                        let c = line[i];
                        i += 1;
                        if (0x40..=0x7e).contains(&c) {
                            closed = true;
                            break;
                        }
                    }
                }
                Some(b']') => {
                    i += 1;
                    while i < line.len() {
                        let c = line[i];
                        i += 1;
                        if c == 0x07 {
                            closed = true;
                            break;
                        }
                        if c == 0x1b && line.get(i) == Some(&b'\\') {
                            i += 1;
                            closed = true;
                            break;
                        }
                    }
                }
                Some(_) => {
                    i += 1;
                    closed = true;
                }
                None => {}
            }
            if !closed {
                out.open_escape = Some(start);
            }
        } else if !hidden(b) {
            out.text.push(b);
            out.at.push(start);
        }
    }
    out
}

/// `line` as a viewer may show it: `None` when it is fine as it is, else
/// its visible text with every secret masked (a line without escapes or
/// control characters was masked whole when written).
pub fn mask_line(masker: &Masker, line: &[u8]) -> Option<Vec<u8>> {
    if !masker.is_active() || !line.iter().any(|b| hidden(*b)) {
        return None;
    }
    let visible = visible_text(line);
    if !masker.finds(&visible) {
        return None;
    }
    let mut out = Vec::with_capacity(visible.len());
    masker.mask_complete(&visible, &mut out);
    Some(out)
}

/// `line` with every byte a viewer would show as part of a secret turned
/// into `*`, its escapes and every other byte left where they are: the
/// same length, so that byte offsets into the log still hold (what the
/// runner ships to the database, for receivers that do not hold the step
/// secrets). `None` when it is fine as it is.
pub fn star_line(masker: &Masker, line: &[u8]) -> Option<Vec<u8>> {
    if !masker.is_active() || !line.iter().any(|b| hidden(*b)) {
        return None;
    }
    let scan = scan(line);
    let spans = masker.spans(&scan.text);
    if spans.is_empty() {
        return None;
    }
    let mut out = line.to_vec();
    for (start, end) in spans {
        for i in start..end {
            out[scan.at[i]] = b'*';
        }
    }
    Some(out)
}

/// The most of an unfinished line a [`ViewMask`] holds back; a longer one
/// is passed on in pieces, each checked on its own. Only escape sequences
/// between the characters of a possible secret make it this long.
const MAX_HELD: usize = 64 * 1024;

/// [`mask_line`] over a stream of log bytes: complete lines are passed on
/// (masked where they show a secret), and of an unfinished line all but
/// what could still become a secret once more bytes come (at most the
/// longest secret's length − 1 visible bytes, with the escapes among
/// them), so `progress...` without a newline shows at once.
///
/// A line may so be passed on in pieces: each is cut where no secret of
/// the line's visible text can cross the cut, and is masked on its own.
#[derive(Debug)]
pub struct ViewMask {
    masker: Masker,
    held: Vec<u8>,
    /// Mask in place ([`star_line`]) rather than show the masked visible
    /// text ([`mask_line`]).
    in_place: bool,
}

impl ViewMask {
    /// A view mask for these secrets.
    pub fn new(secrets: &[Secret]) -> ViewMask {
        ViewMask {
            masker: Masker::new(secrets),
            held: Vec::new(),
            in_place: false,
        }
    }

    /// A view mask that keeps every byte where it is: a secret a viewer
    /// would see is turned into as many `*`, escapes kept, so what it
    /// passes on is exactly as long as what it took in.
    pub fn in_place(secrets: &[Secret]) -> ViewMask {
        ViewMask {
            in_place: true,
            ..ViewMask::new(secrets)
        }
    }

    /// True when there is nothing to mask: bytes may pass untouched.
    pub fn is_passthrough(&self) -> bool {
        !self.masker.is_active()
    }

    /// The next bytes of the log; returns what may be shown now.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        if self.is_passthrough() {
            return bytes.to_vec();
        }
        self.held.extend_from_slice(bytes);
        let mut out = Vec::with_capacity(self.held.len());
        let complete = self
            .held
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |nl| nl + 1);
        for line in self.held[..complete].split_inclusive(|b| *b == b'\n') {
            self.emit(line, &mut out);
        }
        self.held.drain(..complete);
        let cut = if self.held.len() > MAX_HELD {
            self.held.len()
        } else {
            self.settled(&self.held)
        };
        if cut > 0 {
            self.emit(&self.held[..cut], &mut out);
            self.held.drain(..cut);
        }
        out
    }

    /// How much of an unfinished line no more bytes can change: up to the
    /// start of the visible text that may still grow into a secret (or of
    /// a secret already there that reaches into it), and never into an
    /// escape sequence that is not finished.
    fn settled(&self, line: &[u8]) -> usize {
        let scan = scan(line);
        let mut keep = scan.text.len() - self.masker.open_tail(&scan.text);
        for (start, end) in self.masker.spans(&scan.text) {
            if start < keep && keep < end {
                keep = start;
            }
        }
        let mut cut = scan.at.get(keep).copied().unwrap_or(line.len());
        if let Some(open) = scan.open_escape {
            cut = cut.min(open);
        }
        cut
    }

    /// True while an unfinished line is held back.
    pub fn has_held(&self) -> bool {
        !self.held.is_empty()
    }

    /// The end of the log: what was held back.
    pub fn finish(&mut self) -> Vec<u8> {
        let held = std::mem::take(&mut self.held);
        let mut out = Vec::with_capacity(held.len());
        if !held.is_empty() {
            self.emit(&held, &mut out);
        }
        out
    }

    fn emit(&self, line: &[u8], out: &mut Vec<u8>) {
        let (body, nl) = match line.strip_suffix(b"\n") {
            Some(body) => (body, true),
            None => (line, false),
        };
        let masked = if self.in_place {
            star_line(&self.masker, body)
        } else {
            mask_line(&self.masker, body)
        };
        match masked {
            Some(masked) => out.extend_from_slice(&masked),
            None => out.extend_from_slice(body),
        }
        if nl {
            out.push(b'\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masker() -> Masker {
        Masker::new(&[Secret::new("mine-secret-444")])
    }

    #[test]
    fn escapes_and_controls_are_not_visible() {
        assert_eq!(visible_text(b"a\x1b[1;31mb\x1b[0mc"), b"abc");
        assert_eq!(visible_text(b"a\x1b]0;title\x07b\x1b]8;;x\x1b\\c"), b"abc");
        // As the page reads them: an escape drops the one character after it.
        assert_eq!(visible_text(b"a\x1b(Bb\rc\x08d\te"), b"aBbcd\te");
    }

    #[test]
    fn in_place_a_split_secret_becomes_stars_and_every_offset_holds() {
        let m = masker();
        let line = b"ansi split: min\x1b[0me-secret-444 end";
        let starred = star_line(&m, line).expect("masked");
        assert_eq!(starred.len(), line.len());
        assert_eq!(&starred[..], &b"ansi split: ***\x1b[0m************ end"[..]);
        assert_eq!(visible_text(&starred), b"ansi split: *************** end");
        assert_eq!(star_line(&m, b"plain \x1b[1mbold\x1b[0m"), None);
        // Streamed in pieces: as long as what went in, the secret never
        // shown, whatever the cuts.
        let log = b"a\nmin\x1b[0me-secret-444 x\nb\n";
        for cut in 1..log.len() {
            let mut view = ViewMask::in_place(&[Secret::new("mine-secret-444")]);
            let mut out = view.push(&log[..cut]);
            out.extend(view.push(&log[cut..]));
            out.extend(view.finish());
            assert_eq!(out.len(), log.len(), "cut at {cut}");
            assert!(
                !visible_text(&out)
                    .windows(15)
                    .any(|w| w == b"mine-secret-444"),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_secret_split_by_an_escape_is_masked_in_the_visible_text() {
        let m = masker();
        let line = b"ansi split: min\x1b[0me-secret-444 end";
        assert_eq!(
            mask_line(&m, line).as_deref(),
            Some(&b"ansi split: *** end"[..])
        );
        assert_eq!(mask_line(&m, b"plain \x1b[1mbold\x1b[0m"), None);
        assert_eq!(mask_line(&m, b"no escapes here"), None);
    }

    #[test]
    fn a_stream_is_masked_line_by_line_across_chunks() {
        let mut v = ViewMask::new(&[Secret::new("mine-secret-444")]);
        let mut out = v.push(b"one\nmin\x1b[");
        out.extend(v.push(b"0me-secret-444\ntwo \x1b[1mx"));
        out.extend(v.finish());
        assert_eq!(out, b"one\n***\ntwo \x1b[1mx");
        let mut none = ViewMask::new(&[]);
        assert_eq!(none.push(b"min\x1b[0me"), b"min\x1b[0me");
    }

    #[test]
    fn an_unfinished_line_is_held_back_only_where_a_secret_could_grow() {
        let mut v = ViewMask::new(&[Secret::new("mine-secret-444")]);
        // Nothing here can become the secret: shown at once.
        assert_eq!(v.push(b"progress..."), b"progress...");
        assert!(!v.has_held());
        // "mine-se" could: held, with the escape inside it.
        assert_eq!(
            v.push(b" \x1b[1mdone\x1b[0m min\x1b[0me-se"),
            b" \x1b[1mdone\x1b[0m "
        );
        assert_eq!(v.push(b"cret-444 after"), b"*** after");
        // An escape sequence cut by a chunk is never passed on half.
        assert_eq!(v.push(b" x\x1b["), b" x");
        assert_eq!(v.push(b"0m y\n"), b"\x1b[0m y\n");
        // A secret already whole in the held text goes out masked.
        let mut v = ViewMask::new(&[Secret::new("abc"), Secret::new("bcdef")]);
        let mut out = v.push(b"x a\x1b[0mbc");
        out.extend(v.push(b"d"));
        out.extend(v.finish());
        assert!(
            !visible_text(&out).windows(3).any(|w| w == b"abc"),
            "{out:?}"
        );
    }

    #[test]
    fn every_split_of_a_stream_shows_no_secret() {
        let input: &[u8] =
            b"a min\x1b[0me-secret-444 b\nmine-secret-44 mi\x1b]0;t\x07ne-secret-444\x1b[1m\nz";
        for i in 0..=input.len() {
            for j in i..=input.len() {
                let mut v = ViewMask::new(&[Secret::new("mine-secret-444")]);
                let mut out = v.push(&input[..i]);
                out.extend(v.push(&input[i..j]));
                out.extend(v.push(&input[j..]));
                out.extend(v.finish());
                let shown = visible_text(&out);
                assert!(
                    !shown.windows(15).any(|w| w == b"mine-secret-444"),
                    "split at {i}, {j}: {}",
                    String::from_utf8_lossy(&out)
                );
                assert!(
                    String::from_utf8_lossy(&shown).contains("mine-secret-44 "),
                    "split at {i}, {j}: {}",
                    String::from_utf8_lossy(&out)
                );
            }
        }
    }
}
