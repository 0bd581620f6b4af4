//! The loaded XML document: every element and attribute with the position it came from.
//!
//! Produced by `config::xml` (which also follows `<import>` and resolves placeholders) and consumed
//! by `config::compile`. Namespaces are resolved here so that `<amq:broker>` and
//! `<broker xmlns="http://activemq.apache.org/schema/core">` look the same to the compiler.

use super::diagnostic::Span;

pub const NS_ACTIVEMQ_CORE: &str = "http://activemq.apache.org/schema/core";
pub const NS_SPRING_BEANS: &str = "http://www.springframework.org/schema/beans";
/// ferromq's own extension attributes/elements (e.g. a separate TLS key file).
pub const NS_FERROMQ: &str = "urn:ferromq";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespace {
    /// `http://activemq.apache.org/schema/core`
    ActiveMq,
    /// `http://www.springframework.org/schema/beans` (and no namespace at all)
    Beans,
    /// `urn:ferromq`
    Ferromq,
    /// anything else (camel, jetty, util, ...), with its URI
    Other(String),
}

#[derive(Debug, Clone)]
pub struct Attr {
    /// Local name, without prefix (`uri`, `keyStorePassword`).
    pub name: String,
    /// Namespace of a prefixed attribute (`ferromq:keyFile`); `None` for unprefixed ones.
    pub ns: Option<Namespace>,
    /// The value with XML entities decoded and `${...}` placeholders resolved.
    pub value: String,
    /// The value as written in the file (entities decoded, placeholders not resolved), so that
    /// messages can show what the user wrote and secrets can be recognised.
    pub raw: String,
    /// Position of the attribute name.
    pub span: Span,
    /// Position of the first character of the value.
    pub value_span: Span,
}

#[derive(Debug, Clone)]
pub struct Element {
    pub ns: Namespace,
    /// Local name, without prefix (`broker`, `transportConnector`).
    pub name: String,
    pub attrs: Vec<Attr>,
    pub children: Vec<Element>,
    /// Text content (trimmed, placeholders resolved), e.g. of `<value>` in a Spring bean property.
    pub text: String,
    /// Position of the `<` of the start tag.
    pub span: Span,
}

impl Element {
    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.iter().find(|a| a.name == name)
    }

    pub fn attr_value(&self, name: &str) -> Option<&str> {
        self.attr(name).map(|a| a.value.as_str())
    }

    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    pub fn is_activemq(&self) -> bool {
        self.ns == Namespace::ActiveMq
    }
}
