//! `<import resource=...>`: splicing, relative locations, cycles, missing and malformed files.

use super::*;

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
