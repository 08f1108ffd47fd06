//! Byte offsets in a TOML source turned into 1-based line and column.

/// The 1-based line and column (in characters) of byte `offset` in `src`.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = src.get(..offset).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    #[test]
    fn offsets_become_lines_and_columns() {
        let src = "a = 1\nbb = 2\n";
        assert_eq!(super::line_col(src, 0), (1, 1));
        assert_eq!(super::line_col(src, 6), (2, 1));
        assert_eq!(super::line_col(src, 9), (2, 4));
    }
}
