//! Streaming secret masking: every occurrence of a secret value in a byte
//! stream becomes `***`, even when the stream splits it across writes.
//!
//! The patterns are each secret's whole value and, for a multi-line value,
//! each of its lines (trimmed of surrounding whitespace) that has at least
//! [`MIN_LINE_CHARS`] characters: a step that prints a key line by line, or
//! a tool that re-wraps it, still shows no line of it. Shorter lines (`{`,
//! `-----`, blank lines) are not masked on their own: they would mask
//! ordinary output everywhere. A single-line value is masked whatever its
//! length.
//!
//! Between writes the masker holds back only the tail of the stream that
//! could still grow into a match: the longest suffix that is a proper
//! prefix of some pattern, so never more than (longest pattern − 1) bytes,
//! and nothing at all when the tail cannot start a secret.

use crate::secret::Secret;
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use std::fmt;

/// Lines of a multi-line secret shorter than this (in characters, after
/// trimming) are not masked on their own.
pub const MIN_LINE_CHARS: usize = 4;

/// What a masked secret becomes.
const MASK: &[u8] = b"***";

/// A streaming masker over one log.
pub struct Masker {
    /// `None` when there is nothing to mask: bytes pass straight through.
    matcher: Option<Matcher>,
    /// Bytes held back because they may be the start of a secret.
    pending: Vec<u8>,
}

struct Matcher {
    ac: AhoCorasick,
    /// Each pattern with its KMP failure table, to find how much of the
    /// stream's tail may still become that pattern.
    patterns: Vec<(Vec<u8>, Vec<usize>)>,
}

impl fmt::Debug for Masker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the patterns: they are the secrets.
        f.debug_struct("Masker")
            .field(
                "patterns",
                &self.matcher.as_ref().map_or(0, |m| m.patterns.len()),
            )
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl Masker {
    /// A masker for these secrets. No secrets: a pass-through.
    pub fn new(secrets: &[Secret]) -> Masker {
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        for secret in secrets {
            let value = secret.expose();
            if value.is_empty() {
                continue;
            }
            patterns.push(value.as_bytes().to_vec());
            if value.contains('\n') {
                for line in value.split('\n') {
                    let line = line.trim();
                    if line.chars().count() >= MIN_LINE_CHARS {
                        patterns.push(line.as_bytes().to_vec());
                    }
                }
            }
        }
        patterns.sort();
        patterns.dedup();
        let matcher = if patterns.is_empty() {
            None
        } else {
            AhoCorasickBuilder::new()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&patterns)
                .ok()
                .map(|ac| Matcher {
                    ac,
                    patterns: patterns
                        .into_iter()
                        .map(|p| {
                            let fail = failure_table(&p);
                            (p, fail)
                        })
                        .collect(),
                })
        };
        Masker {
            matcher,
            pending: Vec::new(),
        }
    }

    /// Masks `input` as the continuation of the stream and appends to `out`
    /// every byte that is now final; keeps back the tail that may still turn
    /// out to be part of a secret.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if self.matcher.is_none() {
            out.extend_from_slice(input);
            return;
        }
        let mut pending = std::mem::take(&mut self.pending);
        pending.extend_from_slice(input);
        let cut = self.mask_final(&pending, |piece| out.extend_from_slice(piece));
        pending.drain(..cut);
        self.pending = pending;
    }

    /// Masks the stream in `buf` (what an earlier call left final-less,
    /// then the new bytes) without copying it: hands `emit` the pieces that
    /// are now final, in order (slices of `buf`, and the mask for each
    /// secret), and returns how many bytes of `buf` they covered. The rest,
    /// at most the longest secret − 1 bytes, may still become part of a
    /// secret: the caller keeps it at the start of the next `buf`. Uses
    /// none of [`Masker::push`]'s held-back bytes.
    pub fn mask_final<'b>(&self, buf: &'b [u8], mut emit: impl FnMut(&'b [u8])) -> usize {
        let Some(matcher) = &self.matcher else {
            emit(buf);
            return buf.len();
        };
        // Every match starting before `hold` is final: all the bytes that
        // could take part in it are already here.
        let hold = buf.len() - matcher.open_tail(buf);
        let mut done = 0;
        for m in matcher.ac.find_iter(buf) {
            if m.start() >= hold {
                break;
            }
            emit(&buf[done..m.start()]);
            emit(MASK);
            done = m.end();
        }
        let cut = done.max(hold);
        emit(&buf[done..cut]);
        cut
    }

    /// Ends the stream: masks and appends what was held back.
    pub fn flush(&mut self, out: &mut Vec<u8>) {
        let pending = std::mem::take(&mut self.pending);
        mask_whole(self.matcher.as_ref(), &pending, out);
    }

    /// Masks a complete piece of text on its own (no hold-back).
    pub fn mask_complete(&self, input: &[u8], out: &mut Vec<u8>) {
        mask_whole(self.matcher.as_ref(), input, out);
    }

    /// The length of the longest suffix of `text` that more text could
    /// still turn into a secret (less than the longest secret's length).
    pub fn open_tail(&self, text: &[u8]) -> usize {
        self.matcher.as_ref().map_or(0, |m| m.open_tail(text))
    }

    /// Where secrets occur in `text`, as the masker would mask them.
    pub fn spans(&self, text: &[u8]) -> Vec<(usize, usize)> {
        self.matcher.as_ref().map_or_else(Vec::new, |m| {
            m.ac.find_iter(text).map(|m| (m.start(), m.end())).collect()
        })
    }

    /// The longest a tail that [`Masker::mask_final`] leaves can be.
    pub fn max_held(&self) -> usize {
        self.matcher.as_ref().map_or(0, |m| {
            m.patterns
                .iter()
                .map(|(p, _)| p.len().saturating_sub(1))
                .max()
                .unwrap_or(0)
        })
    }

    /// True when some secret occurs in `text`.
    pub fn finds(&self, text: &[u8]) -> bool {
        self.matcher.as_ref().is_some_and(|m| m.ac.is_match(text))
    }

    /// True when there is a secret to mask.
    pub fn is_active(&self) -> bool {
        self.matcher.is_some()
    }

    /// Drops what was held back, unwritten.
    pub fn discard(&mut self) {
        self.pending.clear();
    }

    /// How many bytes are held back now.
    pub fn held_back(&self) -> usize {
        self.pending.len()
    }
}

fn mask_whole(matcher: Option<&Matcher>, input: &[u8], out: &mut Vec<u8>) {
    let Some(matcher) = matcher else {
        out.extend_from_slice(input);
        return;
    };
    let mut done = 0;
    for m in matcher.ac.find_iter(input) {
        out.extend_from_slice(&input[done..m.start()]);
        out.extend_from_slice(MASK);
        done = m.end();
    }
    out.extend_from_slice(&input[done..]);
}

impl Matcher {
    /// The length of the longest suffix of `buf` that is a proper prefix of
    /// some pattern: the bytes that more input could still turn into a match.
    fn open_tail(&self, buf: &[u8]) -> usize {
        self.patterns
            .iter()
            .map(|(p, fail)| {
                // A proper prefix of `p` is at most `p.len() - 1` bytes long,
                // so only that much of the tail matters.
                let window = &buf[buf.len().saturating_sub(p.len() - 1)..];
                kmp_end_state(p, fail, window)
            })
            .max()
            .unwrap_or(0)
    }
}

/// KMP failure table: `fail[i]` is the length of the longest proper border
/// of `p[..i]`.
fn failure_table(p: &[u8]) -> Vec<usize> {
    let mut fail = vec![0; p.len() + 1];
    let mut k = 0;
    for i in 1..p.len() {
        while k > 0 && p[i] != p[k] {
            k = fail[k];
        }
        if p[i] == p[k] {
            k += 1;
        }
        fail[i + 1] = k;
    }
    fail
}

/// The longest `k < p.len()` such that `text` ends with `p[..k]`.
fn kmp_end_state(p: &[u8], fail: &[usize], text: &[u8]) -> usize {
    let mut k = 0;
    for &b in text {
        while k > 0 && b != p[k] {
            k = fail[k];
        }
        if b == p[k] {
            k += 1;
        }
        if k == p.len() {
            k = fail[k];
        }
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masker(secrets: &[&str]) -> Masker {
        let secrets: Vec<Secret> = secrets.iter().map(|s| Secret::new(*s)).collect();
        Masker::new(&secrets)
    }

    fn run(m: &mut Masker, writes: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for w in writes {
            m.push(w, &mut out);
            assert!(m.held_back() < m_longest(m).max(1));
        }
        m.flush(&mut out);
        out
    }

    fn m_longest(m: &Masker) -> usize {
        m.matcher.as_ref().map_or(0, |x| {
            x.patterns.iter().map(|p| p.0.len()).max().unwrap_or(0)
        })
    }

    #[test]
    fn every_split_of_the_stream_masks_the_same() {
        let input: &[u8] = b"a hunter2 b hunter hunter22 hunhunter2 abcdefgh abcd abcde";
        let expected: &[u8] = b"a *** b hunter ***2 hun*** *** *** ***e";
        for i in 0..=input.len() {
            for j in i..=input.len() {
                let mut m = masker(&["hunter2", "abcd", "abcdefgh"]);
                let out = run(&mut m, &[&input[..i], &input[i..j], &input[j..]]);
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(expected),
                    "split at {i}, {j}"
                );
            }
        }
    }

    #[test]
    fn byte_by_byte_masks_the_same() {
        let input = b"xx aaab aaaab aab";
        let mut m = masker(&["aab"]);
        let writes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(&mut m, &writes), b"xx a*** aa*** ***");
    }

    #[test]
    fn a_tail_that_cannot_start_a_secret_is_not_held_back() {
        let mut m = masker(&["hunter2"]);
        let mut out = Vec::new();
        m.push(b"hello world\n", &mut out);
        assert_eq!(out, b"hello world\n");
        assert_eq!(m.held_back(), 0);
        m.push(b"say hunt", &mut out);
        assert_eq!(m.held_back(), 4);
    }

    #[test]
    fn no_secrets_pass_everything_through() {
        let mut m = masker(&[]);
        let mut out = Vec::new();
        m.push(b"abc", &mut out);
        assert_eq!(out, b"abc");
        assert_eq!(m.held_back(), 0);
    }

    #[test]
    fn short_lines_of_a_multi_line_secret_are_not_patterns() {
        let m = masker(&["{\n  long-line-1\n}\n"]);
        let n = m.matcher.as_ref().map_or(0, |x| x.patterns.len());
        assert_eq!(n, 2);
    }
}
