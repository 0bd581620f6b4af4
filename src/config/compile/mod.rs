//! Loaded tree -> typed [`Config`], collecting every diagnostic in one pass.
//!
//! Each section of `<broker>` has its own submodule that reads what it acts on through `Ctx`,
//! which records every element and attribute read. Afterwards `names` walks the whole tree and
//! reports what nobody read: names ActiveMQ 5.17 knows become warnings ("not acted on"), names
//! nobody knows become errors with a "did you mean" suggestion. So a section never has to list
//! what it ignores, and nothing is silently dropped.

mod broker;
mod connectors;
pub use connectors::console_clash;
pub(crate) mod console;
mod delivery;
mod destinations;
mod extension;
mod jaas_plugin;
mod jetstream;
mod names;
mod plugins;
mod policy;
mod published_address;
mod shared;
mod shared_store;
mod ssl;
mod system_topics;
mod usage;
mod virtual_destinations;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use super::delivery_policy::DeliveryPolicy;
use super::diagnostic::{Diagnostic, Diagnostics, Span};
use super::model::Config;
use super::tree::{Attr, Element, Namespace};
use super::values;
use super::xml::LoadedDocument;

/// Compile a loaded document. Returns `None` when the document has no usable `<broker>`;
/// otherwise a config even when errors were found (the caller drops it when
/// `diagnostics.has_errors()`), so that every section is checked in the same pass.
pub fn compile(doc: &LoadedDocument, diagnostics: &mut Diagnostics) -> Option<Config> {
    let mut ctx = Ctx::new(doc, diagnostics);
    let config = find_broker(&mut ctx, &doc.root).map(|broker| build(&mut ctx, doc, broker));
    names::check_document(&mut ctx, &doc.root);
    let Ctx {
        found, mut files, ..
    } = ctx;
    diagnostics.extend(sorted(found, &doc.files));
    config.map(|mut c| {
        files.retain(|f| !doc.files.contains(f));
        c.files = doc.files.iter().cloned().chain(files).collect();
        c
    })
}

fn build(ctx: &mut Ctx<'_>, doc: &LoadedDocument, broker_element: &Element) -> Config {
    let broker = broker::settings(ctx, broker_element);
    let listeners = connectors::listeners(ctx, broker_element);
    connectors::network_connectors(ctx, broker_element);
    let ssl = ssl::context(ctx, broker_element);
    ssl::check_listeners(ctx, &listeners, ssl.as_ref());
    let security = plugins::plugins(ctx, broker_element, &listeners);
    let persistence = broker::persistence(ctx, broker_element, &broker);
    let persistence_span = broker::persistence_span(broker_element);
    let limits = usage::limits(ctx, broker_element);
    let (policies, delivery_entries) = policy::entries(ctx, broker_element);
    let shared_strategy = shared::strategy(ctx, broker_element);
    let system_topics = system_topics::settings(ctx, broker_element);
    let destinations = destinations::declared(ctx, broker_element);
    let virtual_destinations = virtual_destinations::virtual_destinations(
        ctx,
        broker_element,
        matches!(persistence, crate::config::model::Persistence::JetStream(_)),
    );
    let console = console::console(ctx, &doc.root, broker_element);
    if let Some(console) = &console {
        connectors::check_console_clash(ctx, &listeners, console);
    }
    Config {
        source: doc.main_file.clone(),
        files: Vec::new(),
        broker,
        listeners,
        ssl,
        authentication: security.authentication,
        authorization: security.authorization,
        persistence,
        persistence_span,
        limits,
        policies,
        reload: security.reload,
        shared_strategy,
        system_topics,
        destinations,
        virtual_destinations,
        delivery: DeliveryPolicy {
            entries: delivery_entries,
            redelivery: security.redelivery,
        },
        console,
    }
}

/// The `<broker>` element: the root itself, or a child of the Spring `<beans>` root.
fn find_broker<'d>(ctx: &mut Ctx<'_>, root: &'d Element) -> Option<&'d Element> {
    if root.is_activemq() && root.name == "broker" {
        // Amazon MQ's files are written so; ActiveMQ's XBean loader wants Spring's <beans>
        // around it ("Cannot find the declaration of element 'broker'").
        ctx.push(
            Diagnostic::note(
                root.span.clone(),
                "a <broker> root element is read as written (Amazon MQ's format); ActiveMQ 5.17 \
                 refuses it",
            )
            .with_hint(
                "for a file ActiveMQ reads too, put <broker> inside \
                 <beans xmlns=\"http://www.springframework.org/schema/beans\">",
            ),
        );
        return Some(root);
    }
    let brokers: Vec<&Element> = root
        .children
        .iter()
        .filter(|c| c.is_activemq() && c.name == "broker")
        .collect();
    for extra in brokers.iter().skip(1) {
        ctx.mark_subtree(extra);
        ctx.push(
            Diagnostic::error(
                extra.span.clone(),
                "a second <broker>: ferromq runs one broker per configuration file",
            )
            .with_hint("split the brokers into separate files and run one ferromq for each"),
        );
    }
    if let Some(first) = brokers.first() {
        return Some(first);
    }
    let misplaced = root.children.iter().find(|c| c.name == "broker");
    let hint = match misplaced.map(|m| &m.ns) {
        Some(Namespace::Beans) => format!(
            "<broker> must be in ActiveMQ's namespace: write <broker xmlns=\"{}\">",
            super::tree::NS_ACTIVEMQ_CORE
        ),
        Some(other) => {
            let uri = match other {
                Namespace::Other(uri) => uri.as_str(),
                Namespace::Ferromq => super::tree::NS_FERROMQ,
                _ => "",
            };
            format!(
                "<broker> is in namespace `{uri}`; ActiveMQ's is {}",
                super::tree::NS_ACTIVEMQ_CORE
            )
        }
        None => format!(
            "add <broker xmlns=\"{}\"> with at least one <transportConnector>",
            super::tree::NS_ACTIVEMQ_CORE
        ),
    };
    ctx.push(
        Diagnostic::error(
            misplaced.map_or_else(|| root.span.clone(), |m| m.span.clone()),
            "no ActiveMQ <broker> element in this configuration",
        )
        .with_hint(hint),
    );
    None
}

/// Order diagnostics by file (in the order files were read), then line and column, so the
/// output reads top to bottom. Diagnostics without a position come last.
fn sorted(mut found: Vec<Diagnostic>, files: &[PathBuf]) -> Vec<Diagnostic> {
    let key = |d: &Diagnostic| match &d.span {
        Some(s) => (
            files
                .iter()
                .position(|f| f.as_path() == s.file.as_path())
                .unwrap_or(files.len()),
            s.line,
            s.col,
        ),
        None => (usize::MAX, 0, 0),
    };
    found.sort_by_key(key);
    found
}

/// Compilation state shared by the sections: the diagnostics found so far, what was read (for
/// [`names`]), and the extra files read (login.config, properties files, TLS material).
pub(super) struct Ctx<'d> {
    found: Vec<Diagnostic>,
    /// Where the loader already reported errors (an unresolved placeholder, say): a compile
    /// error later on the same line is almost always a consequence, so it is not repeated.
    loader_errors: Vec<Span>,
    used: HashSet<Span>,
    files: Vec<PathBuf>,
    /// Attribute values that took a `--set`/`-D` value: a diagnostic there names it.
    from_command_line: &'d [super::xml::FromCommandLine],
    pub properties: &'d BTreeMap<String, String>,
    /// Directory of the main configuration file; relative resource paths resolve against it.
    pub config_dir: PathBuf,
    /// `--local-store`: shared store configurations run locally with a warning.
    pub local_store: bool,
}

impl<'d> Ctx<'d> {
    fn new(doc: &'d LoadedDocument, loader: &Diagnostics) -> Self {
        Ctx {
            found: Vec::new(),
            loader_errors: loader.errors().filter_map(|d| d.span.clone()).collect(),
            used: HashSet::new(),
            files: Vec::new(),
            from_command_line: &doc.from_command_line,
            properties: &doc.properties,
            local_store: doc.local_store,
            config_dir: doc
                .main_file
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        }
    }

    pub fn push(&mut self, mut diagnostic: Diagnostic) {
        if let Some(given) = diagnostic
            .span
            .as_ref()
            .and_then(|at| self.from_command_line.iter().find(|value| value.covers(at)))
        {
            diagnostic.message = format!(
                "{} (the value comes from {} on the command line)",
                diagnostic.message,
                given.describe()
            );
        }
        let follows_loader_error = diagnostic.span.as_ref().is_some_and(|new| {
            self.loader_errors
                .iter()
                .any(|e| e.file == new.file && e.line == new.line && e.col <= new.col)
        });
        if !follows_loader_error {
            self.found.push(diagnostic);
        }
    }

    /// Record a file that was read, for `Config.files` (the reload watcher watches these).
    pub fn read_file(&mut self, path: &Path) {
        if !self.files.iter().any(|f| f == path) {
            self.files.push(path.to_path_buf());
        }
    }

    pub fn mark(&mut self, element: &Element) {
        self.used.insert(element.span.clone());
    }

    /// Mark an element and everything inside it as read (after a section reported it as a
    /// whole, e.g. "networkConnectors are not supported yet").
    pub fn mark_subtree(&mut self, element: &Element) {
        self.mark(element);
        for attr in &element.attrs {
            self.used.insert(attr.span.clone());
        }
        for child in &element.children {
            self.mark_subtree(child);
        }
    }

    pub fn is_used(&self, span: &Span) -> bool {
        self.used.contains(span)
    }

    /// An ActiveMQ attribute (unprefixed or `amq:`-prefixed) of `element`, marked as read.
    pub fn attr<'e>(&mut self, element: &'e Element, name: &str) -> Option<&'e Attr> {
        let found = element
            .attrs
            .iter()
            .find(|a| a.name == name && matches!(a.ns, None | Some(Namespace::ActiveMq)))?;
        self.used.insert(found.span.clone());
        Some(found)
    }

    /// Mark one attribute as read (of an element read by hand, such as a ferromq element).
    pub fn mark_attr(&mut self, attr: &Attr) {
        self.used.insert(attr.span.clone());
    }

    /// A ferromq extension attribute (`ferromq:keyFile`), marked as read.
    pub fn ext_attr<'e>(&mut self, element: &'e Element, name: &str) -> Option<&'e Attr> {
        let found = element
            .attrs
            .iter()
            .find(|a| a.name == name && a.ns == Some(Namespace::Ferromq))?;
        self.used.insert(found.span.clone());
        Some(found)
    }

    /// The items of property element(s) `property` of `element`: for
    /// `<broker><transportConnectors><transportConnector/>...`, `items(broker,
    /// "transportConnectors")` gives the `transportConnector` elements. The property elements are
    /// marked as read; the items are not (the caller marks what it understands). Spring beans and
    /// other namespaces inside are left to [`names`].
    pub fn items<'e>(&mut self, element: &'e Element, property: &str) -> Vec<&'e Element> {
        let mut out = Vec::new();
        for prop in element
            .children
            .iter()
            .filter(|c| c.is_activemq() && c.name == property)
        {
            self.mark(prop);
            out.extend(prop.children.iter().filter(|c| c.is_activemq()));
        }
        out
    }

    /// A boolean attribute; an unparsable value is an error and yields `None`.
    pub fn bool_attr(&mut self, element: &Element, name: &str) -> Option<bool> {
        let attr = self.attr(element, name)?;
        match values::parse_bool(&attr.value) {
            Ok(b) => Some(b),
            Err(e) => {
                self.push(e.into_diagnostic(attr.value_span.clone()));
                None
            }
        }
    }

    /// A size attribute (`"64 mb"`, `"1gb"`, bytes when unit-less).
    pub fn size_attr(&mut self, element: &Element, name: &str) -> Option<u64> {
        let attr = self.attr(element, name)?;
        match values::parse_size_bytes(&attr.value) {
            Ok(n) => Some(n),
            Err(e) => {
                self.push(e.into_diagnostic(attr.value_span.clone()));
                None
            }
        }
    }

    /// An integer attribute (Java `long`), e.g. milliseconds or a count.
    pub fn int_attr(&mut self, element: &Element, name: &str) -> Option<i64> {
        let attr = self.attr(element, name)?;
        match attr.value.trim().parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                self.value_error(
                    attr,
                    format!("`{name}` must be a whole number, not `{}`", attr.value),
                    "write digits only, e.g. `1000`",
                );
                None
            }
        }
    }

    /// An error about an attribute's value, placed at the value.
    pub fn value_error(&mut self, attr: &Attr, message: impl Into<String>, hint: &str) {
        self.push(Diagnostic::error(attr.value_span.clone(), message).with_hint(hint));
    }

    /// A resource path as ActiveMQ writes it (`file:${activemq.conf}/broker.ks`, `broker.ks`):
    /// the `file:` prefix dropped, and relative paths resolved against the configuration file's
    /// directory (ActiveMQ finds them there through its classpath, which holds `conf/`). A
    /// trailing `/` is dropped, as `java.io.File` drops it (`file:conf/broker.ks/` names the
    /// file `conf/broker.ks` in ActiveMQ).
    pub fn resource_path(&self, value: &str) -> PathBuf {
        let stripped = value
            .strip_prefix("file://")
            .or_else(|| value.strip_prefix("file:"))
            .or_else(|| value.strip_prefix("classpath:"))
            .unwrap_or(value);
        let trimmed = stripped.trim_end_matches('/');
        let stripped = if trimmed.is_empty() {
            stripped
        } else {
            trimmed
        };
        let path = Path::new(stripped);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.config_dir.join(path)
        }
    }
}

#[cfg(test)]
mod delivery_tests;
#[cfg(test)]
mod security_tests;
#[cfg(test)]
mod stomp_connector_tests;
#[cfg(test)]
mod tests;
