//! The XML loader (`config::xml`) against real files: exact positions, namespaces, imports,
//! placeholders and the messages for malformed input. Fixtures live in tests/fixtures/xml.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ferromq::config::tree::{Element, Namespace};
use ferromq::config::xml::{load_document, load_document_from_str, LoadedDocument};
use ferromq::config::{Diagnostic, Diagnostics, LoadOptions, Severity};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/xml")
}

fn no_env() -> LoadOptions {
    LoadOptions {
        overrides: BTreeMap::new(),
        use_env: false,
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

// ---- imports ----------------------------------------------------------------------------

#[test]
fn imports_are_spliced_in_place_relative_to_the_importing_file() {
    let dir = fixtures().join("imports");
    let doc = load_ok(&dir.join("main.xml"), &no_env());
    let ids: Vec<String> = doc
        .root
        .children
        .iter()
        .map(|c| c.attr_value("id").unwrap_or(&c.name).to_owned())
        .collect();
    assert_eq!(ids, vec!["jettyPort", "broker", "leaf", "extra"]);
    let jetty_bean = &doc.root.children[0];
    assert_eq!(*jetty_bean.span.file, dir.join("jetty.xml"));
    assert_eq!((jetty_bean.span.line, jetty_bean.span.col), (2, 3));
    assert_eq!(
        doc.files,
        vec![
            dir.join("main.xml"),
            dir.join("jetty.xml"),
            dir.join("nested/extra.xml"),
            dir.join("nested/../leaf.xml"),
        ]
    );
}

#[test]
fn an_import_cycle_is_an_error_naming_the_chain() {
    let dir = fixtures().join("cycle");
    let (doc, diagnostics) = load(&dir.join("a.xml"), &no_env());
    let error = only_error(&diagnostics);
    assert_eq!(position(error), (dir.join("b.xml"), 2, 3));
    assert_eq!(
        error.message,
        format!(
            "import cycle: {} -> {} -> {}",
            dir.join("a.xml").display(),
            dir.join("b.xml").display(),
            dir.join("a.xml").display()
        )
    );
    // The rest of the document is still there for later stages.
    assert!(find(&doc.expect("document").root, "broker").is_activemq());
}

#[test]
fn a_missing_import_is_an_error_at_the_import_element() {
    let path = fixtures().join("missing_import.xml");
    let (doc, diagnostics) = load(&path, &no_env());
    let error = only_error(&diagnostics);
    assert_eq!(position(error), (path.clone(), 2, 3));
    assert_eq!(
        error.message,
        format!(
            "imported file `{}` does not exist",
            fixtures().join("nope.xml").display()
        )
    );
    let doc = doc.expect("document");
    assert_eq!(value(find(&doc.root, "broker"), "brokerName"), "still-here");
    assert_eq!(doc.files, vec![path]);
}

#[test]
fn a_malformed_imported_file_reports_its_own_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("bad.xml"), "<beans>\n  <bean>\n</beans>\n").expect("write");
    let main = dir.path().join("main.xml");
    std::fs::write(
        &main,
        "<beans>\n  <import resource=\"bad.xml\"/>\n</beans>\n",
    )
    .expect("write");
    let (_, diagnostics) = load(&main, &no_env());
    let error = only_error(&diagnostics);
    assert_eq!(position(error), (dir.path().join("bad.xml"), 3, 1));
}

// ---- placeholders -----------------------------------------------------------------------

fn placeholder_conf() -> PathBuf {
    fixtures().join("placeholders/conf")
}

#[test]
fn placeholders_come_from_properties_files_with_nesting_and_defaults() {
    let conf = placeholder_conf();
    let doc = load_ok(&conf.join("activemq.xml"), &no_env());
    let broker = find(&doc.root, "broker");
    // Nested: broker.name=${activemq.username}-broker.
    assert_eq!(value(broker, "brokerName"), "system-broker");
    assert_eq!(
        broker.attr("brokerName").expect("attr").raw,
        "${broker.name}"
    );
    // activemq.base is the parent of `conf`; activemq.data = base/data.
    let base = fixtures().join("placeholders");
    assert_eq!(
        value(broker, "dataDirectory"),
        format!("{}/kahadb", base.join("data").display())
    );
    let user = find(broker, "authenticationUser");
    assert_eq!(value(user, "username"), "system");
    assert_eq!(value(user, "password"), "manager");
    assert_eq!(value(user, "groups"), "admins,users");
    // The later file (tuning.properties) overrides mqtt.port.
    assert_eq!(
        value(find(broker, "transportConnector"), "uri"),
        "mqtt://127.0.0.1:1884?transport.defaultKeepAlive=60000"
    );
    assert_eq!(
        doc.files,
        vec![
            conf.join("activemq.xml"),
            conf.join("credentials.properties"),
            conf.join("tuning.properties"),
        ]
    );
    assert_eq!(
        doc.properties.get("broker.name").map(String::as_str),
        Some("system-broker")
    );
    assert_eq!(
        doc.properties.get("activemq.conf").map(PathBuf::from),
        Some(conf.clone())
    );
}

#[test]
fn overrides_fill_gaps_but_files_win_with_the_default_configurer() {
    let mut options = no_env();
    options.overrides.insert("mqtt.port".into(), "9999".into());
    options.overrides.insert("groups".into(), "ops".into());
    options
        .overrides
        .insert("activemq.base".into(), "/opt/amq".into());
    let doc = load_ok(&placeholder_conf().join("activemq.xml"), &options);
    let broker = find(&doc.root, "broker");
    // PropertyPlaceholderConfigurer's default mode is FALLBACK: files first.
    assert!(value(find(broker, "transportConnector"), "uri").contains(":1884?"));
    // Not in the files: the override beats the `${groups:admins,users}` default.
    assert_eq!(value(find(broker, "authenticationUser"), "groups"), "ops");
    // activemq.data follows an overridden activemq.base.
    assert_eq!(value(broker, "dataDirectory"), "/opt/amq/data/kahadb");
}

const CONFIGURER_HEAD: &str = "<beans xmlns=\"http://www.springframework.org/schema/beans\">\n\
  <bean class=\"org.springframework.beans.factory.config.PropertyPlaceholderConfigurer\">\n\
    <property name=\"location\" value=\"credentials.properties\"/>\n";

fn with_configurer(extra_properties: &str, body: &str) -> String {
    format!("{CONFIGURER_HEAD}{extra_properties}  </bean>\n{body}\n</beans>\n")
}

#[test]
fn sources_configurer_puts_overrides_before_files() {
    let xml = "<beans xmlns=\"http://www.springframework.org/schema/beans\">\n\
      <bean class=\"org.springframework.context.support.PropertySourcesPlaceholderConfigurer\">\n\
        <property name=\"location\" value=\"credentials.properties\"/>\n  </bean>\n\
      <x port=\"${mqtt.port}\" user=\"${activemq.username}\"/>\n</beans>";
    let mut options = no_env();
    options.overrides.insert("mqtt.port".into(), "9999".into());
    let (doc, diagnostics) = load_in(&placeholder_conf(), xml, &options);
    assert!(!diagnostics.has_errors(), "{diagnostics}");
    let x = find(&doc.expect("document").root, "x").clone();
    assert_eq!((value(&x, "port"), value(&x, "user")), ("9999", "system"));
}

#[test]
fn environment_variables_come_last_and_can_be_turned_off() {
    std::env::set_var("FERROMQ_XML_TEST_ONLY_IN_ENV", "from-env");
    std::env::set_var("activemq.username", "env-user");
    let xml = with_configurer(
        "",
        "<x a=\"${FERROMQ_XML_TEST_ONLY_IN_ENV}\" u=\"${activemq.username}\"/>",
    );
    let with_env = LoadOptions::default();
    let (doc, diagnostics) = load_in(&placeholder_conf(), &xml, &with_env);
    assert!(!diagnostics.has_errors(), "{diagnostics}");
    let x = find(&doc.expect("document").root, "x").clone();
    // The file's activemq.username wins over the environment's.
    assert_eq!((value(&x, "a"), value(&x, "u")), ("from-env", "system"));

    let (_, diagnostics) = load_in(&placeholder_conf(), &xml, &no_env());
    assert_eq!(
        only_error(&diagnostics).message,
        "unresolved placeholder `${FERROMQ_XML_TEST_ONLY_IN_ENV}`"
    );
}

#[test]
fn an_unresolved_placeholder_is_an_error_at_the_attribute_value() {
    let xml = with_configurer("", "  <broker brokerName=\"${no.such.key}\"/>");
    let (doc, diagnostics) = load_in(&placeholder_conf(), &xml, &no_env());
    let error = only_error(&diagnostics);
    assert_eq!(
        position(error),
        (placeholder_conf().join("<memory>.xml"), 5, 23)
    );
    assert_eq!(error.message, "unresolved placeholder `${no.such.key}`");
    let hint = error.hint.as_deref().expect("hint");
    assert!(hint.contains("credentials.properties"), "{hint}");
    assert!(hint.contains("--set/-D values"), "{hint}");
    // The raw text stays in the tree.
    let broker = find(&doc.expect("document").root, "broker").clone();
    assert_eq!(value(&broker, "brokerName"), "${no.such.key}");
}

#[test]
fn ignore_unresolvable_placeholders_keeps_them_literal() {
    let xml = with_configurer(
        "    <property name=\"ignoreUnresolvablePlaceholders\" value=\"true\"/>\n",
        "<broker brokerName=\"${no.such.key}\" user=\"${activemq.username}\"/>",
    );
    let (doc, diagnostics) = load_in(&placeholder_conf(), &xml, &no_env());
    assert!(diagnostics.0.is_empty(), "{diagnostics}");
    let broker = find(&doc.expect("document").root, "broker").clone();
    assert_eq!(value(&broker, "brokerName"), "${no.such.key}");
    assert_eq!(value(&broker, "user"), "system");
}

#[test]
fn jasypt_encrypted_values_are_a_clear_error() {
    let xml = "<beans xmlns=\"http://www.springframework.org/schema/beans\">\n\
      <bean class=\"org.jasypt.spring31.properties.EncryptablePropertyPlaceholderConfigurer\">\n\
        <property name=\"location\" value=\"encrypted.properties\"/>\n  </bean>\n\
      <user password=\"${activemq.password}\"/>\n</beans>";
    let (_, diagnostics) = load_in(&placeholder_conf(), xml, &no_env());
    let error = only_error(&diagnostics);
    assert!(
        error
            .message
            .contains("jasypt-encrypted values are not supported yet"),
        "{}",
        error.message
    );
    assert!(error.message.contains("activemq.password"));
    assert_eq!(position(error).1, 5);
    assert!(error.hint.is_some());
}

#[test]
fn a_missing_properties_file_is_an_error_unless_ignored() {
    let xml = "<beans xmlns=\"http://www.springframework.org/schema/beans\">\n\
      <bean class=\"org.springframework.beans.factory.config.PropertyPlaceholderConfigurer\">\n\
        <property name=\"locations\"><list><value>file:${activemq.conf}/absent.properties</value></list></property>\n\
      </bean>\n</beans>";
    let (_, diagnostics) = load_in(&placeholder_conf(), xml, &no_env());
    let error = only_error(&diagnostics);
    assert_eq!(position(error).1, 3);
    assert!(
        error.message.contains("absent.properties"),
        "{}",
        error.message
    );
    assert!(error
        .hint
        .as_deref()
        .is_some_and(|h| h.contains("ignoreResourceNotFound")));

    let ignoring = xml.replace(
        "<property name=\"locations\">",
        "<property name=\"ignoreResourceNotFound\" value=\"true\"/><property name=\"locations\">",
    );
    let (_, diagnostics) = load_in(&placeholder_conf(), &ignoring, &no_env());
    assert!(diagnostics.0.is_empty(), "{diagnostics}");
}

#[test]
fn without_a_configurer_placeholders_stay_literal_with_a_note() {
    let xml = "<beans>\n  <broker dataDirectory=\"${activemq.data}/kahadb\"/>\n</beans>";
    let (doc, diagnostics) = load_in(&placeholder_conf(), xml, &no_env());
    assert!(!diagnostics.has_errors());
    let broker = find(&doc.expect("document").root, "broker").clone();
    assert_eq!(value(&broker, "dataDirectory"), "${activemq.data}/kahadb");
    let notes: Vec<&Diagnostic> = diagnostics
        .0
        .iter()
        .filter(|d| d.severity == Severity::Note)
        .collect();
    assert_eq!(notes.len(), 1, "{diagnostics}");
    assert_eq!(position(notes[0]).1, 2);
}

#[test]
fn placeholders_in_text_and_import_locations_are_resolved() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).expect("mkdir");
    std::fs::write(conf.join("app.properties"), "who=world\n").expect("write");
    std::fs::write(
        conf.join("part.xml"),
        "<beans><greeting>hello ${who}</greeting></beans>",
    )
    .expect("write");
    let main = conf.join("activemq.xml");
    std::fs::write(
        &main,
        "<beans>\n\
           <bean class=\"org.springframework.beans.factory.config.PropertyPlaceholderConfigurer\">\n\
             <property name=\"location\"><value>classpath:app.properties</value></property>\n\
           </bean>\n\
           <import resource=\"file:${activemq.conf}/part.xml\"/>\n\
         </beans>",
    )
    .expect("write");
    let doc = load_ok(&main, &no_env());
    assert_eq!(find(&doc.root, "greeting").text, "hello world");
    assert_eq!(
        doc.files,
        vec![
            main.clone(),
            conf.join("part.xml"),
            conf.join("app.properties")
        ]
    );
}

#[test]
fn circular_property_references_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("loop.properties"), "a=${b}\nb=x${a}\n").expect("write");
    let xml = "<beans>\n\
      <bean class=\"org.springframework.beans.factory.config.PropertyPlaceholderConfigurer\">\n\
        <property name=\"location\" value=\"loop.properties\"/>\n  </bean>\n\
      <x v=\"${a}\"/>\n</beans>";
    let (_, diagnostics) = load_in(dir.path(), xml, &no_env());
    assert_eq!(
        only_error(&diagnostics).message,
        "circular placeholder reference: a -> b -> a"
    );
}

// ---- never panic ------------------------------------------------------------------------

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    const TOKENS: &[&str] = &[
        "<",
        ">",
        "/",
        "/>",
        "</",
        "=",
        "\"",
        "'",
        "&",
        ";",
        "&amp;",
        "&#65;",
        "&#x;",
        "${",
        "}",
        ":",
        " ",
        "\n",
        "\r\n",
        "\t",
        "<!--",
        "-->",
        "<![CDATA[",
        "]]>",
        "<?xml",
        "?>",
        "<!DOCTYPE",
        "beans",
        "broker",
        "amq",
        "xmlns",
        "xmlns:amq",
        "import",
        "resource",
        "bean",
        "property",
        "value",
        "class",
        "name",
        "location",
        "é",
        "\u{feff}",
        "${a:b}",
        "<beans>",
        "</beans>",
        "<broker a=\"x\">",
        "</broker>",
        "<bean class=\"org.springframework.beans.factory.config.PropertyPlaceholderConfigurer\">",
        "<property name=\"location\" value=\"credentials.properties\"/>",
        "<import resource=\"activemq.xml\"/>",
        "ENC(x)",
        "${activemq.password}",
    ];

    fn run(text: &str) {
        let mut diagnostics = Diagnostics::default();
        let doc = load_document_from_str(
            text,
            &placeholder_conf().join("<fuzz>.xml"),
            &LoadOptions::default(),
            &mut diagnostics,
        );
        // Either a document or at least one error explaining why not.
        assert!(doc.is_some() || diagnostics.has_errors());
        for d in &diagnostics.0 {
            let span = d.span.as_ref();
            assert!(span.map_or(true, |s| s.line >= 1 && s.col >= 1), "{d}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

        #[test]
        fn on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            run(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn on_xml_like_text(tokens in proptest::collection::vec(proptest::sample::select(TOKENS), 0..80)) {
            run(&tokens.concat());
        }
    }

    #[test]
    fn on_random_bytes_in_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fuzz.xml");
        let mut runner = proptest::test_runner::TestRunner::default();
        runner
            .run(&proptest::collection::vec(any::<u8>(), 0..300), |bytes| {
                std::fs::write(&path, &bytes).expect("write");
                let mut diagnostics = Diagnostics::default();
                let doc = load_document(&path, &LoadOptions::default(), &mut diagnostics);
                prop_assert!(doc.is_some() || diagnostics.has_errors());
                Ok(())
            })
            .expect("no failure");
    }
}
