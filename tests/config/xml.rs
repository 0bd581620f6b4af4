//! The XML loader (`config::xml`) against real files: exact positions, namespaces, imports,
//! placeholders and the messages for malformed input. Fixtures live in tests/fixtures/xml.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ferromq::config::tree::{Element, Namespace};
use ferromq::config::xml::{load_document, load_document_from_str, LoadedDocument};
use ferromq::config::{Diagnostic, Diagnostics, LoadOptions, Severity};

mod encodings;
mod imports;
mod nesting;
mod never_panics;
mod placeholders;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/xml")
}

fn no_env() -> LoadOptions {
    LoadOptions {
        overrides: BTreeMap::new(),
        use_env: false,
        local_store: false,
        embedded_default: false,
    }
}

fn load(path: &Path, options: &LoadOptions) -> (Option<LoadedDocument>, Diagnostics) {
    let mut diagnostics = Diagnostics::default();
    let doc = load_document(path, options, &mut diagnostics);
    (doc, diagnostics)
}

fn load_ok(path: &Path, options: &LoadOptions) -> LoadedDocument {
    let (doc, diagnostics) = load(path, options);
    assert!(
        !diagnostics.has_errors(),
        "unexpected errors:\n{diagnostics}"
    );
    doc.expect("a document when there are no errors")
}

/// A `conf` directory with a configurer's properties files.
fn placeholder_conf() -> PathBuf {
    fixtures().join("placeholders/conf")
}

/// Load XML held in memory as if it were the file `dir/<memory>.xml`.
fn load_in(dir: &Path, xml: &str, options: &LoadOptions) -> (Option<LoadedDocument>, Diagnostics) {
    let mut diagnostics = Diagnostics::default();
    let doc = load_document_from_str(xml, &dir.join("<memory>.xml"), options, &mut diagnostics);
    (doc, diagnostics)
}

fn only_error(diagnostics: &Diagnostics) -> &Diagnostic {
    let errors: Vec<&Diagnostic> = diagnostics.errors().collect();
    assert_eq!(
        errors.len(),
        1,
        "expected exactly one error:\n{diagnostics}"
    );
    errors[0]
}

fn position(d: &Diagnostic) -> (PathBuf, u32, u32) {
    let span = d.span.as_ref().expect("diagnostic has a position");
    (span.file.as_ref().clone(), span.line, span.col)
}

fn find<'a>(element: &'a Element, name: &str) -> &'a Element {
    fn search<'a>(element: &'a Element, name: &str) -> Option<&'a Element> {
        if element.name == name {
            return Some(element);
        }
        element.children.iter().find_map(|c| search(c, name))
    }
    search(element, name).unwrap_or_else(|| panic!("no <{name}> in the tree"))
}

fn value<'a>(element: &'a Element, attr: &str) -> &'a str {
    element
        .attr_value(attr)
        .unwrap_or_else(|| panic!("<{}> has no {attr}", element.name))
}

/// Namespaces, names and attributes of a subtree, without positions: two spellings of the same
/// document must have the same shape.
fn shape(element: &Element) -> String {
    let attrs: Vec<String> = element
        .attrs
        .iter()
        .map(|a| format!("{:?}:{}={}", a.ns, a.name, a.value))
        .collect();
    let children: Vec<String> = element.children.iter().map(shape).collect();
    format!(
        "{:?}:{}[{}]({})",
        element.ns,
        element.name,
        attrs.join(","),
        children.join(",")
    )
}

// ---- positions --------------------------------------------------------------------------

#[test]
fn spans_of_elements_attribute_names_and_values_are_exact() {
    let path = fixtures().join("spans.xml");
    let doc = load_ok(&path, &no_env());
    let at = |span: &ferromq::config::Span| (span.line, span.col);
    assert_eq!(*doc.root.span.file, path);
    assert_eq!(at(&doc.root.span), (1, 1));
    let broker = find(&doc.root, "broker");
    // A tab is one column.
    assert_eq!(at(&broker.span), (2, 2));
    let name = broker.attr("brokerName").expect("brokerName");
    assert_eq!((at(&name.span), at(&name.value_span)), ((3, 10), (3, 22)));
    assert_eq!(name.value, "é-broker");
    // `é` before it is one column, and spaces around `=` are allowed.
    let dir = broker.attr("dataDirectory").expect("dataDirectory");
    assert_eq!((at(&dir.span), at(&dir.value_span)), ((3, 32), (3, 49)));
    assert_eq!((dir.value.as_str(), dir.raw.as_str()), ("x&y", "x&y"));
    // After a comment with non-ASCII characters on the same line.
    assert_eq!(at(&find(&doc.root, "plugins").span), (4, 21));
    assert_eq!(doc.files, vec![path.clone()]);
    assert_eq!(doc.main_file, path);
}

#[test]
fn entities_text_and_attribute_white_space_are_decoded() {
    let xml = "<beans>\n<value a=\"x\ny\tz&#10;&lt;\">  a &amp; b <![CDATA[<raw>]]>&#x41; </value>\n</beans>";
    let (doc, diagnostics) = load_in(&fixtures(), xml, &no_env());
    assert!(diagnostics.0.is_empty(), "{diagnostics}");
    let value_el = find(&doc.expect("document").root, "value").clone();
    assert_eq!(value_el.attr_value("a"), Some("x y z\n<"));
    assert_eq!(value_el.text, "a & b <raw>A");
}

// ---- namespaces -------------------------------------------------------------------------

#[test]
fn prefixed_and_default_namespaces_give_the_same_tree() {
    let prefixed = load_ok(&fixtures().join("prefixed.xml"), &no_env());
    let default = load_ok(&fixtures().join("default_ns.xml"), &no_env());
    assert_eq!(shape(&prefixed.root), shape(&default.root));

    let broker = find(&prefixed.root, "broker");
    assert!(broker.is_activemq());
    let key_file = broker.attr("keyFile").expect("ferromq:keyFile");
    assert_eq!(key_file.ns, Some(Namespace::Ferromq));
    assert_eq!(broker.attr("brokerName").expect("brokerName").ns, None);
    let connector = find(broker, "transportConnector");
    assert_eq!(connector.ns, Namespace::ActiveMq);
    assert_eq!(value(connector, "uri"), "mqtt://127.0.0.1:1883?a=1&b=2");
}

#[test]
fn elements_of_other_namespaces_are_kept_as_other() {
    let doc = load_ok(&fixtures().join("prefixed.xml"), &no_env());
    let camel = find(&doc.root, "camelContext");
    let camel_ns = Namespace::Other("http://camel.apache.org/schema/spring".into());
    assert_eq!(camel.ns, camel_ns);
    assert_eq!(camel.children[0].ns, camel_ns);
    assert_eq!(find(&doc.root, "bean").ns, Namespace::Beans);
    assert_eq!(doc.root.ns, Namespace::Beans);
    // The xmlns declarations themselves are not attributes.
    assert!(doc.root.attrs.is_empty());
}

#[test]
fn an_undeclared_prefix_is_an_error_with_the_declaration_to_add() {
    let (doc, diagnostics) = load_in(&fixtures(), "<beans>\n  <amq:broker/>\n</beans>", &no_env());
    assert!(doc.is_none());
    let error = only_error(&diagnostics);
    assert_eq!((error.span.as_ref().map(|s| (s.line, s.col))), Some((2, 4)));
    assert_eq!(error.message, "namespace prefix `amq:` is not declared");
    assert!(error
        .hint
        .as_deref()
        .is_some_and(|h| h.contains("xmlns:amq=\"http://activemq.apache.org/schema/core\"")));
}

// ---- well-formedness --------------------------------------------------------------------

#[test]
fn unclosed_tag_golden_message() {
    let path = fixtures().join("unclosed.xml");
    let (doc, diagnostics) = load(&path, &no_env());
    assert!(doc.is_none());
    assert_eq!(diagnostics.0.len(), 1, "{diagnostics}");
    assert_eq!(
        diagnostics.to_string(),
        format!(
            "{}:7:3: error: `</broker>` found where `</transportConnectors>` was expected\n  \
             hint: `<transportConnectors>` opened at 4:5 is never closed; add \
             `</transportConnectors>` before this line\n",
            path.display()
        )
    );
}

#[test]
fn truncated_file_golden_message() {
    let path = fixtures().join("truncated.xml");
    let (doc, diagnostics) = load(&path, &no_env());
    assert!(doc.is_none());
    assert_eq!(
        diagnostics.to_string(),
        format!(
            "{}:4:1: error: end of file inside `<beans>`\n  \
             hint: `<beans>` opened at 2:1 is never closed; add `</beans>`\n",
            path.display()
        )
    );
}

#[test]
fn malformed_xml_is_one_error_at_the_exact_place() {
    let cases: &[(&str, (u32, u32), &str)] = &[
        (
            "<beans>\n  <broker a=\"1\" a=\"2\"/>\n</beans>",
            (2, 17),
            "attribute `a` is given twice",
        ),
        (
            "<beans>\n  <broker a=1/>\n</beans>",
            (2, 13),
            "attribute value is not quoted",
        ),
        (
            "<beans>\n  <broker a/>\n</beans>",
            (2, 12),
            "expected `=` after an attribute name",
        ),
        (
            "<beans>\n  <broker a=\"1/>\n</beans>",
            (2, 3),
            "tag is never closed with `>`",
        ),
        (
            "<beans>\n  <x uri=\"tcp://h?a=1&b=2\"/>\n</beans>",
            (2, 22),
            "`&` does not start an entity (no `;` follows)",
        ),
        ("<beans>&nbsp;</beans>", (1, 8), "unknown entity `&nbsp;`"),
        (
            "junk<beans/>",
            (1, 1),
            "unexpected text `junk` before the root element",
        ),
        (
            "<beans/>\n junk",
            (2, 2),
            "unexpected text `junk` after the root element is closed",
        ),
        (
            "<beans/><beans/>",
            (1, 9),
            "second root element `<beans>`: a document has exactly one root element",
        ),
        (
            "<beans></brokr>",
            (1, 8),
            "`</brokr>` found where `</beans>` was expected",
        ),
        ("</beans>", (1, 1), "`</beans>` closes no open element"),
        (
            "<beans><</beans>",
            (1, 9),
            "`</beans` is not a valid element name",
        ),
        (
            "<beans><!-- x </beans>",
            (1, 8),
            "comment is never closed with `-->`",
        ),
        ("", (1, 1), "no root element: the file holds no XML element"),
    ];
    for (xml, (line, col), message) in cases {
        let (doc, diagnostics) = load_in(&fixtures(), xml, &no_env());
        assert!(doc.is_none(), "{xml:?}");
        let error = only_error(&diagnostics);
        assert_eq!(&error.message, message, "{xml:?}");
        let span = error.span.as_ref().expect("position");
        assert_eq!((span.line, span.col), (*line, *col), "{xml:?}");
        assert!(error.hint.is_some(), "{xml:?} has no hint");
    }
}

#[test]
fn unreadable_and_non_utf8_files_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (doc, diagnostics) = load(&dir.path().join("absent.xml"), &no_env());
    assert!(doc.is_none());
    assert!(only_error(&diagnostics).message.starts_with("cannot read"));

    let latin1 = dir.path().join("latin1.xml");
    std::fs::write(
        &latin1,
        b"<beans>\n  <broker brokerName=\"caf\xe9\"/>\n</beans>",
    )
    .expect("write");
    let (doc, diagnostics) = load(&latin1, &no_env());
    assert!(doc.is_none());
    let error = only_error(&diagnostics);
    assert_eq!(position(error), (latin1.clone(), 2, 26));
    assert!(error.message.contains("not valid UTF-8"));
}

#[test]
fn a_byte_order_mark_does_not_shift_columns() {
    let (doc, diagnostics) = load_in(&fixtures(), "\u{feff}<beans a=\"1\"/>", &no_env());
    assert!(diagnostics.0.is_empty(), "{diagnostics}");
    let root = doc.expect("document").root;
    assert_eq!((root.span.col, root.attrs[0].span.col), (1, 8));
}

// ---- a whole file -----------------------------------------------------------------------

#[test]
fn upstream_style_configuration_loads_without_diagnostics() {
    let conf = fixtures().join("upstream/conf");
    let (doc, diagnostics) = load(&conf.join("activemq.xml"), &no_env());
    assert!(diagnostics.0.is_empty(), "{diagnostics}");
    let doc = doc.expect("document");
    let base = fixtures().join("upstream");
    let broker = find(&doc.root, "broker");
    assert!(broker.is_activemq());
    assert_eq!(
        value(broker, "dataDirectory"),
        base.join("data").display().to_string()
    );
    let connectors: Vec<&str> = find(broker, "transportConnectors")
        .children
        .iter()
        .map(|c| value(c, "name"))
        .collect();
    assert_eq!(connectors, vec!["openwire", "amqp", "stomp", "mqtt", "ws"]);
    // The hook bean inside <broker> switches back to the beans namespace.
    assert_eq!(find(broker, "bean").ns, Namespace::Beans);
    // jetty.xml's beans replace the <import>, at the end, with their placeholders resolved.
    let last = doc.root.children.last().expect("children");
    assert_eq!(last.attr_value("id"), Some("jettyPort"));
    let realm = &doc.root.children[doc.root.children.len() - 2];
    assert_eq!(realm.attr_value("id"), Some("securityLoginService"));
    assert_eq!(
        realm.children[1].attr_value("value"),
        Some(
            conf.join("jetty-realm.properties")
                .display()
                .to_string()
                .as_str()
        )
    );
    assert_eq!(
        doc.files,
        vec![
            conf.join("activemq.xml"),
            conf.join("jetty.xml"),
            conf.join("credentials.properties"),
        ]
    );
    assert_eq!(
        doc.properties.get("activemq.password").map(String::as_str),
        Some("manager")
    );
}
