//! Positions and one-sentence messages for errors in TOML sources.
//!
//! `toml`'s own `Display` prints a multi-line excerpt of the source; hookci
//! reports `file:line:col: sentence` instead, so errors from the parser and
//! from serde are reworded here into one line.

use std::ops::Range;

/// The 1-based line and column (in characters) of byte `offset` in `src`.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = src.get(..offset).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The position of a span's start, for a `Finding`.
pub fn position(src: &str, span: &Range<usize>) -> (usize, usize) {
    line_col(src, span.start)
}

/// A `toml::from_str` error as a position and one sentence.
///
/// `tables` names the table a set of known keys belongs to: when an unknown
/// key is reported, the first entry whose key appears in the expected list
/// names the table (e.g. `("branches", "in [[trigger]]")`).
pub fn describe(
    src: &str,
    err: &toml::de::Error,
    tables: &[(&str, &str)],
) -> (Option<(usize, usize)>, String) {
    let span = err.span();
    let position = span.as_ref().map(|s| position(src, s));
    let raw = err.message().trim();
    let message = reword(src, span.as_ref(), raw, tables);
    (position, message)
}

fn reword(src: &str, span: Option<&Range<usize>>, raw: &str, tables: &[(&str, &str)]) -> String {
    if let Some(rest) = raw.strip_prefix("unknown field ") {
        let (key, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        let key = key.trim_matches('`');
        let expected = backticked(expected);
        let table = tables
            .iter()
            .find(|(k, _)| expected.iter().any(|e| e == k))
            .map(|(_, t)| *t)
            .unwrap_or("");
        let mut out = format!("unknown key \"{key}\"");
        if !table.is_empty() {
            out.push(' ');
            out.push_str(table);
        }
        if !expected.is_empty() {
            out.push_str("; expected one of ");
            out.push_str(&expected.join(", "));
        }
        return out;
    }
    if let Some(rest) = raw.strip_prefix("missing field ") {
        let key = rest.trim_matches('`');
        let header = span
            .and_then(|s| src.get(s.clone()))
            .map(str::trim)
            .filter(|t| t.starts_with('['));
        return match header {
            Some(h) => format!("missing key \"{key}\" in {h}"),
            None => format!("missing key \"{key}\""),
        };
    }
    if let Some(rest) = raw.strip_prefix("invalid type: ") {
        let (found, expected) = rest
            .split_once(", expected ")
            .unwrap_or((rest, "something else"));
        let expected = match expected {
            "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" | "isize" => {
                "an integer"
            }
            "f32" | "f64" => "a number",
            other => other,
        };
        // A string is not quoted back: it may be a secret in the wrong place.
        let found = if found.starts_with("string ") {
            "a string"
        } else {
            found
        };
        return match span.and_then(|s| key_before(src, s.start)) {
            Some(key) => format!("wrong type for \"{key}\": expected {expected}, found {found}"),
            None => format!("wrong type: expected {expected}, found {found}"),
        };
    }
    if raw == "duplicate key" {
        if let Some(key) = span.and_then(|s| src.get(s.clone())) {
            return format!("duplicate key {}", quoted(key.trim()));
        }
    }
    one_line(raw)
}

/// The key a value at `offset` is assigned to, read from the text before it
/// on the same line (`key = ` or `{ key = `); `None` inside arrays.
fn key_before(src: &str, offset: usize) -> Option<String> {
    let before = src.get(..offset)?;
    let line = before.rsplit('\n').next()?;
    let head = line.trim_end().strip_suffix('=')?.trim_end();
    let key: String = if let Some(q) = head.strip_suffix('"') {
        q.rsplit('"').next()?.to_owned()
    } else {
        let start = head
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'))
            .map_or(0, |i| i + 1);
        head[start..].to_owned()
    };
    (!key.is_empty()).then_some(key)
}

fn backticked(s: &str) -> Vec<String> {
    s.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, k)| k.to_owned())
        .collect()
}

fn quoted(key: &str) -> String {
    if key.starts_with('"') {
        key.to_owned()
    } else {
        format!("\"{key}\"")
    }
}

/// Joins a multi-line message into one line.
pub fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let src = "a = 1\nbb = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        assert_eq!(line_col(src, 9), (2, 4));
    }

    #[test]
    fn the_key_before_a_value_is_found_on_its_line() {
        let src = "x = 1\nenv = { RUST_LOG = 3 }\n\"a b\" = 2\nlist = [1, 2]\n";
        assert_eq!(key_before(src, 4).as_deref(), Some("x"));
        let at = src.find('3').unwrap();
        assert_eq!(key_before(src, at).as_deref(), Some("RUST_LOG"));
        let at = src.find('2').unwrap();
        assert_eq!(key_before(src, at).as_deref(), Some("a b"));
        let at = src.rfind('2').unwrap();
        assert_eq!(key_before(src, at), None);
    }

    #[test]
    fn an_unknown_field_names_its_table_and_the_expected_keys() {
        let msg = reword(
            "",
            None,
            "unknown field `branchs`, expected one of `branches`, `tags`",
            &[("branches", "in [[trigger]]")],
        );
        assert_eq!(
            msg,
            "unknown key \"branchs\" in [[trigger]]; expected one of branches, tags"
        );
    }
}
