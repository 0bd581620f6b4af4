//! quick-xml's tokenizer, attribute and entity errors turned into messages that say what is
//! wrong and what to write instead, at an absolute byte offset of the file.

use quick_xml::errors::{IllFormedError, SyntaxError};
use quick_xml::escape::EscapeError;
use quick_xml::events::attributes::AttrError;

const ENTITY_HINT: &str = "XML knows only `&lt;` `&gt;` `&amp;` `&quot;` `&apos;` and character \
     references such as `&#38;`; write a literal `&` as `&amp;` (transport URIs separate their \
     options with `&amp;`)";

/// What is wrong at `offset` (bytes from the start of the file's text).
pub(super) struct Problem {
    pub(super) offset: usize,
    pub(super) message: String,
    pub(super) hint: String,
}

impl Problem {
    fn new(offset: usize, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Problem {
            offset,
            message: message.into(),
            hint: hint.into(),
        }
    }
}

/// A tokenizer error (quick-xml reports where) in words.
pub(super) fn tokenizer(err: &quick_xml::Error, offset: usize) -> Problem {
    use quick_xml::Error as E;
    let (message, hint): (String, &str) = match err {
        E::Syntax(SyntaxError::UnclosedTag) => (
            "tag is never closed with `>`".into(),
            "check for a missing `>` or an attribute value whose closing quote is missing",
        ),
        E::Syntax(SyntaxError::UnclosedComment) => (
            "comment is never closed with `-->`".into(),
            "a comment runs from `<!--` to the next `-->`",
        ),
        E::Syntax(SyntaxError::UnclosedCData) => (
            "CDATA section is never closed with `]]>`".into(),
            "a CDATA section runs from `<![CDATA[` to the next `]]>`",
        ),
        E::Syntax(SyntaxError::UnclosedDoctype) => (
            "`<!DOCTYPE` is never closed with `>`".into(),
            "remove the DOCTYPE; ActiveMQ configurations use XML schemas",
        ),
        E::Syntax(SyntaxError::UnclosedPIOrXmlDecl) => (
            "`<?` is never closed with `?>`".into(),
            "the XML declaration is written `<?xml version=\"1.0\" encoding=\"UTF-8\"?>`",
        ),
        E::Syntax(SyntaxError::InvalidBangMarkup) => (
            "`<!` starts neither a comment, a CDATA section nor a DOCTYPE".into(),
            "comments are written `<!-- ... -->`",
        ),
        E::IllFormed(IllFormedError::MissingDeclVersion(_)) => (
            "the XML declaration has no `version`".into(),
            "write `<?xml version=\"1.0\" encoding=\"UTF-8\"?>`",
        ),
        other => (
            format!("malformed XML: {other}"),
            "fix the XML syntax at this position",
        ),
    };
    Problem::new(offset, message, hint)
}

/// A malformed attribute. quick-xml gives positions relative to the tag's bytes (`buf`, which
/// starts at `buf_offset`); `position_text` renders an offset as `line:col`.
pub(super) fn attribute(
    err: &AttrError,
    buf: &[u8],
    buf_offset: usize,
    position_text: impl Fn(usize) -> String,
) -> Problem {
    const QUOTE_HINT: &str = "write attributes as name=\"value\"";
    match *err {
        AttrError::ExpectedEq(pos) => Problem::new(
            buf_offset + pos,
            "expected `=` after an attribute name",
            QUOTE_HINT,
        ),
        AttrError::ExpectedValue(pos) => Problem::new(
            buf_offset + pos,
            "expected a quoted attribute value after `=`",
            QUOTE_HINT,
        ),
        AttrError::UnquotedValue(pos) => Problem::new(
            buf_offset + pos,
            "attribute value is not quoted",
            QUOTE_HINT,
        ),
        AttrError::ExpectedQuote(pos, quote) => Problem::new(
            buf_offset + pos,
            format!("attribute value is not closed with `{}`", char::from(quote)),
            "add the closing quote",
        ),
        AttrError::Duplicated(pos, previous) => {
            let name = name_at(buf, pos);
            let first = position_text(buf_offset + previous);
            Problem::new(
                buf_offset + pos,
                format!("attribute `{name}` is given twice"),
                format!("first given at {first}; keep one of them"),
            )
        }
    }
}

/// A bad `&...;` in text or an attribute value that starts at `text_offset`.
pub(super) fn entity(err: &EscapeError, text_offset: usize) -> Problem {
    match err {
        EscapeError::UnrecognizedEntity(range, name) => Problem::new(
            text_offset + range.start.saturating_sub(1),
            format!("unknown entity `&{name};`"),
            ENTITY_HINT,
        ),
        EscapeError::UnterminatedEntity(range) => Problem::new(
            text_offset + range.start,
            "`&` does not start an entity (no `;` follows)",
            ENTITY_HINT,
        ),
        EscapeError::InvalidCharRef(inner) => Problem::new(
            text_offset,
            format!("invalid character reference: {inner}"),
            ENTITY_HINT,
        ),
    }
}

/// The attribute name starting at `pos` in a tag buffer (for messages).
fn name_at(buf: &[u8], pos: usize) -> String {
    let rest = buf.get(pos..).unwrap_or_default();
    let end = rest
        .iter()
        .position(|&b| b == b'=' || b.is_ascii_whitespace())
        .unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end]).into_owned()
}
