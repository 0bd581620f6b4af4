//! Byte offsets -> 1-based line and column (in characters), the positions diagnostics show.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::diagnostic::Span;

/// The start offset of every line of one text, so that any byte offset maps to line:column
/// with a binary search instead of rescanning the text.
pub(super) struct LineIndex<'a> {
    text: &'a str,
    file: Arc<PathBuf>,
    /// The text is the built-in copy of `file` ([`Span::builtin`]).
    builtin: bool,
    /// Byte offset of the first character of each line; `line_starts[0] == 0`.
    line_starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    /// Lines end at `\n`, `\r\n` or a lone `\r` (XML's end-of-line rule).
    pub(super) fn new(text: &'a str, file: Arc<PathBuf>, builtin: bool) -> Self {
        let bytes = text.as_bytes();
        let mut line_starts = vec![0];
        for (i, &b) in bytes.iter().enumerate() {
            let ends_line = b == b'\n' || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n'));
            if ends_line {
                line_starts.push(i + 1);
            }
        }
        LineIndex {
            text,
            file,
            builtin,
            line_starts,
        }
    }

    /// The span of a byte offset; offsets past the end map to the end of the text.
    pub(super) fn span(&self, offset: usize) -> Span {
        let (line, col) = self.line_col(offset);
        Span {
            builtin: self.builtin,
            ..Span::new(Arc::clone(&self.file), line, col)
        }
    }

    /// 1-based line and column; the column counts characters, not bytes.
    pub(super) fn line_col(&self, offset: usize) -> (u32, u32) {
        let offset = offset.min(self.text.len());
        let line_idx = match self.line_starts.binary_search(&offset) {
            Ok(exact) => exact,
            Err(insert_at) => insert_at.saturating_sub(1),
        };
        let line_start = self.line_starts.get(line_idx).copied().unwrap_or(0);
        let chars_before = match self.text.get(line_start..offset) {
            Some(prefix) => prefix.chars().count(),
            // Not a character boundary (cannot happen for offsets the reader produces): count
            // bytes so that the position is still close.
            None => offset - line_start,
        };
        (to_u32(line_idx + 1), to_u32(chars_before + 1))
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Where `part` starts inside `whole`, when `part` is a sub-slice of it (quick-xml hands out
/// slices of the input, which is how attribute positions are recovered).
pub(super) fn offset_within(whole: &[u8], part: &[u8]) -> Option<usize> {
    let start = whole.as_ptr() as usize;
    let part_start = part.as_ptr() as usize;
    let offset = part_start.checked_sub(start)?;
    (offset + part.len() <= whole.len()).then_some(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_count_characters_and_all_line_ends() {
        let text = "ab\ncdé\r\nxyz\rq";
        let index = LineIndex::new(text, Arc::new(PathBuf::from("t.xml")), false);
        assert_eq!(index.line_col(0), (1, 1));
        assert_eq!(index.line_col(3), (2, 1));
        // `é` is two bytes but one column.
        let after_e = text.find('\r').expect("has CR");
        assert_eq!(index.line_col(after_e), (2, 4));
        assert_eq!(index.line_col(text.find('x').expect("x")), (3, 1));
        assert_eq!(index.line_col(text.find('q').expect("q")), (4, 1));
        assert_eq!(index.line_col(10_000), (4, 2));
    }

    #[test]
    fn offset_within_rejects_foreign_slices() {
        let whole = b"hello world";
        assert_eq!(offset_within(whole, &whole[6..]), Some(6));
        let other = b"world".to_vec();
        assert_eq!(offset_within(whole, &other), None);
    }
}
