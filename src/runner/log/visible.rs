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
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        i += 1;
        if b == 0x1b {
            match line.get(i) {
                Some(b'[') => {
                    i += 1;
                    while i < line.len() {
                        let c = line[i];
                        i += 1;
                        if (0x40..=0x7e).contains(&c) {
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
                            break;
                        }
                        if c == 0x1b && line.get(i) == Some(&b'\\') {
                            i += 1;
                            break;
                        }
                    }
                }
                Some(_) => i += 1,
                None => {}
            }
        } else if !hidden(b) {
            out.push(b);
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

/// The most of an unfinished line a [`ViewMask`] holds back; a longer one
/// is passed on in pieces, each checked on its own.
const MAX_HELD: usize = 64 * 1024;

/// [`mask_line`] over a stream of log bytes: complete lines are passed on
/// (masked where they show a secret); an unfinished line is held until its
/// newline or [`ViewMask::finish`].
#[derive(Debug)]
pub struct ViewMask {
    masker: Masker,
    held: Vec<u8>,
}

impl ViewMask {
    /// A view mask for these secrets.
    pub fn new(secrets: &[Secret]) -> ViewMask {
        ViewMask {
            masker: Masker::new(secrets),
            held: Vec::new(),
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
        let complete = match self.held.iter().rposition(|b| *b == b'\n') {
            Some(nl) => nl + 1,
            None if self.held.len() > MAX_HELD => self.held.len(),
            None => 0,
        };
        for line in self.held[..complete].split_inclusive(|b| *b == b'\n') {
            self.emit(line, &mut out);
        }
        self.held.drain(..complete);
        out
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
        match mask_line(&self.masker, body) {
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
}
