//! One XML text -> one [`Element`] tree, with the position of every element, attribute name and
//! attribute value, namespaces resolved and entities decoded.
//!
//! quick-xml does the tokenising; this module does the rest itself (tag matching, namespace
//! scopes, "one root element") so that a malformed file gets ONE error that says where the
//! problem is and which open tag it concerns, instead of a tokenizer message with a byte offset.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;

use quick_xml::escape::unescape;
use quick_xml::events::{BytesStart, BytesText, Event};
use quick_xml::Reader;

use super::position::{offset_within, LineIndex};
use super::syntax_errors::{self, Problem};
use crate::config::diagnostic::{Diagnostic, Span};
use crate::config::tree::{
    Attr, Element, Namespace, NS_ACTIVEMQ_CORE, NS_FERROMQ, NS_SPRING_BEANS,
};

/// The namespace bound to the `xml:` prefix by the XML specification itself.
const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";

/// How deep elements may nest in a configuration, counting the root as 1. ActiveMQ's own
/// configurations stay below 15; the limit exists because every later stage (import splicing,
/// placeholders, compiling, diffing, even dropping the tree) walks the tree recursively, and a
/// file nested thousands deep would overflow the stack and abort the process.
pub(super) const MAX_ELEMENT_DEPTH: usize = 256;

/// Parse one document. The text must not start with a byte-order mark (the caller strips it so
/// that columns on line 1 are not shifted by an invisible character). `max_depth`: the deepest
/// element allowed (root = 1); an imported file gets what is left below its `<import>`.
/// `builtin`: the text is the built-in copy of `file` ([`Span::builtin`]).
///
/// [`Span::builtin`]: crate::config::Span::builtin
pub(super) fn parse_document(
    text: &str,
    file: Arc<PathBuf>,
    builtin: bool,
    max_depth: usize,
) -> Result<Element, Box<Diagnostic>> {
    DocumentParser {
        text,
        index: LineIndex::new(text, file, builtin),
        bindings: Vec::new(),
        stack: Vec::new(),
        root: None,
        max_depth,
    }
    .run()
}

/// A namespace declaration in scope (`xmlns="..."` has no prefix).
struct Binding {
    prefix: Option<String>,
    uri: String,
}

/// An element whose end tag has not been read yet.
struct OpenElement {
    element: Element,
    /// The name as written (`amq:broker`), to match the end tag and to show in messages.
    qname: String,
    /// How many [`Binding`]s this element's `xmlns` attributes pushed (popped at its end).
    bindings_pushed: usize,
    text: String,
}

/// An attribute read from a tag before namespaces are resolved.
struct RawAttr {
    qname: String,
    value: String,
    name_offset: usize,
    value_offset: usize,
}

struct DocumentParser<'a> {
    text: &'a str,
    index: LineIndex<'a>,
    bindings: Vec<Binding>,
    stack: Vec<OpenElement>,
    root: Option<Element>,
    max_depth: usize,
}

type ParseResult<T> = Result<T, Box<Diagnostic>>;

impl<'a> DocumentParser<'a> {
    fn run(mut self) -> ParseResult<Element> {
        let mut reader = Reader::from_str(self.text);
        let config = reader.config_mut();
        config.trim_text(false);
        config.expand_empty_elements = false;
        // Tag matching is done here, where the position of the open tag is known.
        config.check_end_names = false;
        config.allow_unmatched_ends = true;
        loop {
            let event_start = to_usize(reader.buffer_position());
            let event = match reader.read_event() {
                Ok(event) => event,
                Err(err) => {
                    return Err(self.problem(syntax_errors::tokenizer(
                        &err,
                        to_usize(reader.error_position()),
                    )))
                }
            };
            match event {
                Event::Start(tag) => {
                    let open = self.open_element(&tag, event_start)?;
                    self.stack.push(open);
                }
                Event::Empty(tag) => {
                    let open = self.open_element(&tag, event_start)?;
                    self.close_element(open);
                }
                Event::End(tag) => {
                    let name = String::from_utf8_lossy(tag.name().as_ref()).into_owned();
                    self.end_tag(&name, event_start)?;
                }
                Event::Text(text) => self.text_event(&text, event_start)?,
                Event::CData(data) => {
                    let content = String::from_utf8_lossy(&data).into_owned();
                    self.character_data(&content, event_start)?;
                }
                Event::Eof => break,
                Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
            }
        }
        self.finish()
    }

    fn error(
        &self,
        offset: usize,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Box<Diagnostic> {
        Box::new(Diagnostic::error(self.index.span(offset), message).with_hint(hint))
    }

    fn problem(&self, problem: Problem) -> Box<Diagnostic> {
        self.error(problem.offset, problem.message, problem.hint)
    }

    /// `line:col` of a byte offset, for hints that point at a second place.
    fn position_text(&self, offset: usize) -> String {
        let (line, col) = self.index.line_col(offset);
        format!("{line}:{col}")
    }

    fn span_text(&self, span: &Span) -> String {
        format!("{}:{}", span.line, span.col)
    }

    fn open_element(
        &mut self,
        tag: &BytesStart<'_>,
        event_start: usize,
    ) -> ParseResult<OpenElement> {
        let qname = String::from_utf8_lossy(tag.name().as_ref()).into_owned();
        if self.stack.len() >= self.max_depth {
            return Err(self.too_deep(&qname, event_start));
        }
        if self.stack.is_empty() {
            if let Some(root) = &self.root {
                let first = self.span_text(&root.span);
                return Err(self.error(
                    event_start,
                    format!("second root element `<{qname}>`: a document has exactly one root element"),
                    format!("the root element opened at {first} is already closed; move `<{qname}>` inside it"),
                ));
            }
        }
        let raw_attrs = self.read_attributes(tag, event_start)?;
        let bindings_pushed = self.push_bindings(&raw_attrs);
        let (prefix, local) = split_qname(&qname).ok_or_else(|| {
            self.error(
                event_start + 1,
                format!("`{qname}` is not a valid element name"),
                "a name starts with a letter or `_` and has one `:` at most; a literal `<` in \
                 text is written `&lt;`",
            )
        })?;
        let ns = self
            .resolve_prefix(prefix)
            .ok_or_else(|| self.unbound_prefix(prefix, event_start + 1))?;
        let mut attrs = Vec::with_capacity(raw_attrs.len());
        for raw in raw_attrs {
            if is_namespace_declaration(&raw.qname) {
                continue;
            }
            let (attr_prefix, attr_local) = split_qname(&raw.qname).ok_or_else(|| {
                self.error(
                    raw.name_offset,
                    format!("`{}` is not a valid attribute name", raw.qname),
                    "a name is `local` or `prefix:local`, with one colon at most",
                )
            })?;
            let attr_ns = match attr_prefix {
                None => None,
                Some(_) => Some(
                    self.resolve_prefix(attr_prefix)
                        .ok_or_else(|| self.unbound_prefix(attr_prefix, raw.name_offset))?,
                ),
            };
            attrs.push(Attr {
                name: attr_local.to_owned(),
                ns: attr_ns,
                raw: raw.value.clone(),
                value: raw.value,
                span: self.index.span(raw.name_offset),
                value_span: self.index.span(raw.value_offset),
            });
        }
        Ok(OpenElement {
            element: Element {
                ns,
                name: local.to_owned(),
                attrs,
                children: Vec::new(),
                text: String::new(),
                span: self.index.span(event_start),
            },
            qname,
            bindings_pushed,
            text: String::new(),
        })
    }

    fn too_deep(&self, qname: &str, event_start: usize) -> Box<Diagnostic> {
        let limit = self.max_depth;
        let hint = if limit < MAX_ELEMENT_DEPTH {
            format!(
                "the `<import>` of this file sits inside {} element(s), which leaves it {limit}; \
                 a configuration nests a few levels, not hundreds: look for a start tag \
                 that was meant to be empty (`<.../>`)",
                MAX_ELEMENT_DEPTH - limit
            )
        } else {
            "a configuration nests a few levels, not hundreds: look for a start tag that was \
             meant to be empty (`<.../>`)"
                .to_owned()
        };
        self.error(
            event_start,
            format!(
                "`<{qname}>` is nested deeper than {MAX_ELEMENT_DEPTH} elements; not reading further"
            ),
            hint,
        )
    }

    fn read_attributes(
        &self,
        tag: &BytesStart<'_>,
        event_start: usize,
    ) -> ParseResult<Vec<RawAttr>> {
        let buf: &[u8] = tag;
        // The tag's bytes (name and attributes, without `<`) are a slice of the input.
        let buf_offset = offset_within(self.text.as_bytes(), buf).unwrap_or(event_start + 1);
        let mut out: Vec<RawAttr> = Vec::new();
        for attr in tag.attributes() {
            let attr = attr.map_err(|err| {
                self.problem(syntax_errors::attribute(&err, buf, buf_offset, |o| {
                    self.position_text(o)
                }))
            })?;
            let key: &[u8] = attr.key.as_ref();
            let value: &[u8] = &attr.value;
            let name_offset = buf_offset + offset_within(buf, key).unwrap_or(0);
            let value_offset = offset_within(buf, value).map_or(name_offset, |o| buf_offset + o);
            let raw_value = String::from_utf8_lossy(value);
            out.push(RawAttr {
                qname: String::from_utf8_lossy(key).into_owned(),
                value: self.decode_attribute_value(&raw_value, value_offset)?,
                name_offset,
                value_offset,
            });
        }
        Ok(out)
    }

    /// Entities decoded and white space normalised as an XML parser must (a line break inside
    /// an attribute value is a space; `&#10;` stays a line feed).
    fn decode_attribute_value(&self, raw: &str, value_offset: usize) -> ParseResult<String> {
        // Same length as `raw`, so that entity error positions stay exact.
        let spaced: String = raw
            .chars()
            .map(|c| {
                if matches!(c, '\t' | '\n' | '\r') {
                    ' '
                } else {
                    c
                }
            })
            .collect();
        let collapsed = if raw.contains("\r\n") {
            Cow::Owned(raw.replace("\r\n", "\n"))
        } else {
            Cow::Borrowed(raw)
        };
        if let Err(err) = unescape(&spaced) {
            return Err(self.problem(syntax_errors::entity(&err, value_offset)));
        }
        let spaced_collapsed: String = collapsed
            .chars()
            .map(|c| {
                if matches!(c, '\t' | '\n' | '\r') {
                    ' '
                } else {
                    c
                }
            })
            .collect();
        unescape(&spaced_collapsed)
            .map(Cow::into_owned)
            .map_err(|err| self.problem(syntax_errors::entity(&err, value_offset)))
    }

    fn push_bindings(&mut self, attrs: &[RawAttr]) -> usize {
        let mut pushed = 0;
        for attr in attrs {
            let prefix = if attr.qname == "xmlns" {
                None
            } else if let Some(prefix) = attr.qname.strip_prefix("xmlns:") {
                Some(prefix.to_owned())
            } else {
                continue;
            };
            self.bindings.push(Binding {
                prefix,
                uri: attr.value.clone(),
            });
            pushed += 1;
        }
        pushed
    }

    /// The namespace of a prefix (`None`: the default namespace); `None` when unbound.
    fn resolve_prefix(&self, prefix: Option<&str>) -> Option<Namespace> {
        if prefix == Some("xml") {
            return Some(Namespace::Other(NS_XML.to_owned()));
        }
        let bound = self
            .bindings
            .iter()
            .rev()
            .find(|b| b.prefix.as_deref() == prefix)
            .map(|b| b.uri.as_str());
        match (prefix, bound) {
            (_, Some(uri)) => Some(namespace_of(uri)),
            // No default namespace declared: Spring reads such elements as beans elements.
            (None, None) => Some(Namespace::Beans),
            (Some(_), None) => None,
        }
    }

    fn unbound_prefix(&self, prefix: Option<&str>, offset: usize) -> Box<Diagnostic> {
        let prefix = prefix.unwrap_or_default();
        let hint = match prefix {
            "amq" => format!("declare it on the root element: xmlns:amq=\"{NS_ACTIVEMQ_CORE}\""),
            "ferromq" => format!("declare it on the root element: xmlns:ferromq=\"{NS_FERROMQ}\""),
            _ => format!(
                "declare it with xmlns:{prefix}=\"...\" on this element or an enclosing one"
            ),
        };
        self.error(
            offset,
            format!("namespace prefix `{prefix}:` is not declared"),
            hint,
        )
    }

    fn close_element(&mut self, open: OpenElement) {
        let keep = self.bindings.len().saturating_sub(open.bindings_pushed);
        self.bindings.truncate(keep);
        let mut element = open.element;
        element.text = open.text.trim().to_owned();
        match self.stack.last_mut() {
            Some(parent) => parent.element.children.push(element),
            None => self.root = Some(element),
        }
    }

    fn end_tag(&mut self, name: &str, event_start: usize) -> ParseResult<()> {
        let Some(open) = self.stack.pop() else {
            return Err(self.error(
                event_start,
                format!("`</{name}>` closes no open element"),
                "remove it, or add the matching start tag before it",
            ));
        };
        if open.qname != name {
            let opened_at = self.span_text(&open.element.span);
            let expected = &open.qname;
            let closes_an_outer_element = self.stack.iter().any(|outer| outer.qname == name);
            let hint = if closes_an_outer_element {
                format!("`<{expected}>` opened at {opened_at} is never closed; add `</{expected}>` before this line")
            } else {
                format!("`<{expected}>` opened at {opened_at} must be closed by `</{expected}>`")
            };
            return Err(self.error(
                event_start,
                format!("`</{name}>` found where `</{expected}>` was expected"),
                hint,
            ));
        }
        self.close_element(open);
        Ok(())
    }

    fn text_event(&mut self, text: &BytesText<'_>, event_start: usize) -> ParseResult<()> {
        let raw_bytes: &[u8] = text;
        let raw = String::from_utf8_lossy(raw_bytes);
        if self.stack.is_empty() {
            return self.reject_text_outside_root(&raw, event_start);
        }
        if let Err(err) = unescape(&raw) {
            return Err(self.problem(syntax_errors::entity(&err, event_start)));
        }
        let decoded = unescape(&normalize_line_ends(&raw))
            .map_err(|err| self.problem(syntax_errors::entity(&err, event_start)))?
            .into_owned();
        if let Some(open) = self.stack.last_mut() {
            open.text.push_str(&decoded);
        }
        Ok(())
    }

    fn character_data(&mut self, content: &str, event_start: usize) -> ParseResult<()> {
        match self.stack.last_mut() {
            Some(open) => {
                open.text.push_str(&normalize_line_ends(content));
                Ok(())
            }
            None => self.reject_text_outside_root("<![CDATA[", event_start),
        }
    }

    fn reject_text_outside_root(&self, raw: &str, event_start: usize) -> ParseResult<()> {
        let Some(first) = raw.find(|c: char| !c.is_whitespace()) else {
            return Ok(());
        };
        let excerpt: String = raw[first..].chars().take(20).collect();
        let excerpt = excerpt.split_whitespace().collect::<Vec<_>>().join(" ");
        let (message, hint) = if self.root.is_none() {
            (
                format!("unexpected text `{excerpt}` before the root element"),
                "an XML document starts with `<?xml ...?>`, comments or the root element's `<`",
            )
        } else {
            (
                format!("unexpected text `{excerpt}` after the root element is closed"),
                "everything must be inside the root element; check for an extra end tag above",
            )
        };
        Err(self.error(event_start + first, message, hint))
    }

    fn finish(self) -> ParseResult<Element> {
        if let Some(open) = self.stack.last() {
            let name = &open.qname;
            let opened_at = self.span_text(&open.element.span);
            let also = match self.stack.len() {
                1 => String::new(),
                n => format!(" (and {} enclosing element(s))", n - 1),
            };
            return Err(self.error(
                self.text.len(),
                format!("end of file inside `<{name}>`"),
                format!("`<{name}>` opened at {opened_at} is never closed{also}; add `</{name}>`"),
            ));
        }
        match self.root {
            Some(root) => Ok(root),
            None => Err(self.error(
                self.text.len(),
                "no root element: the file holds no XML element",
                format!(
                    "an ActiveMQ configuration starts with `<beans xmlns=\"{NS_SPRING_BEANS}\">`"
                ),
            )),
        }
    }
}

/// `prefix:local` -> (Some(prefix), local); `None` for a name that is not an XML name, an
/// empty part or a second colon.
fn split_qname(qname: &str) -> Option<(Option<&str>, &str)> {
    if !is_xml_name(qname) {
        return None;
    }
    match qname.split_once(':') {
        None if !qname.is_empty() => Some((None, qname)),
        Some((prefix, local))
            if !prefix.is_empty() && !local.is_empty() && !local.contains(':') =>
        {
            Some((Some(prefix), local))
        }
        _ => None,
    }
}

/// XML's name rule, simplified to "letters, digits, `_ - . :`, any non-ASCII character; not
/// starting with a digit, `-` or `.`". Catches a stray `<` (`<</beans>`) read as a tag.
fn is_xml_name(name: &str) -> bool {
    let mut chars = name.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_' || c == ':' || !c.is_ascii());
    starts_well
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ':') || !c.is_ascii())
}

fn is_namespace_declaration(qname: &str) -> bool {
    qname == "xmlns" || qname.starts_with("xmlns:")
}

pub(super) fn namespace_of(uri: &str) -> Namespace {
    match uri {
        NS_ACTIVEMQ_CORE => Namespace::ActiveMq,
        "" | NS_SPRING_BEANS => Namespace::Beans,
        NS_FERROMQ => Namespace::Ferromq,
        other => Namespace::Other(other.to_owned()),
    }
}

fn normalize_line_ends(text: &str) -> Cow<'_, str> {
    if text.contains('\r') {
        Cow::Owned(text.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        Cow::Borrowed(text)
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}
