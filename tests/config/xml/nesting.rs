//! Element nesting is bounded while reading: a file nested thousands deep is one located error,
//! never a stack overflow in a later recursive walk (or in dropping the tree).

use super::*;

/// `<beans>` holding `depth - 1` nested `<bean>`s (the root counts as 1).
fn nested(depth: usize) -> String {
    let inner = depth - 1;
    format!(
        "<beans>\n{}{}</beans>\n",
        "<bean>".repeat(inner),
        "</bean>".repeat(inner)
    )
}

#[test]
fn twenty_thousand_nested_elements_are_one_located_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("deep.xml");
    std::fs::write(&file, nested(20_000)).expect("write");
    let (doc, diagnostics) = load(&file, &no_env());
    assert!(doc.is_none());
    let error = only_error(&diagnostics);
    assert!(
        error.message.contains("nested deeper than 256"),
        "{diagnostics}"
    );
    // The 257th element: `<beans>` is line 2 col 1, then 255 `<bean>` of 6 bytes each.
    assert_eq!(position(error), (file, 2, 1 + 255 * 6));
}

#[test]
fn the_limit_itself_loads() {
    let (doc, diagnostics) = load_in(&fixtures(), &nested(256), &no_env());
    assert!(!diagnostics.has_errors(), "{diagnostics}");
    assert!(doc.is_some());
    let (doc, diagnostics) = load_in(&fixtures(), &nested(257), &no_env());
    assert!(doc.is_none());
    assert!(only_error(&diagnostics)
        .message
        .contains("nested deeper than 256"));
}

#[test]
fn an_imported_file_gets_only_the_depth_left_below_its_import() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The import sits in a `<beans>` at depth 200. The imported file gets 256 - 200 = 56 levels,
    // its own root included (even a `<beans>` root, which is spliced away: the budget is set
    // before the file is read).
    let opening = "<beans>".repeat(199);
    let closing = "</beans>".repeat(199);
    let main = format!("<beans>{opening}<import resource=\"part.xml\"/>{closing}</beans>");
    std::fs::write(dir.path().join("main.xml"), &main).expect("write");
    // 56 levels fit ...
    std::fs::write(dir.path().join("part.xml"), nested(56)).expect("write");
    let (doc, diagnostics) = load(&dir.path().join("main.xml"), &no_env());
    assert!(!diagnostics.has_errors(), "{diagnostics}");
    assert!(doc.is_some());
    // ... 57 do not, and the error is in the imported file.
    let part = dir.path().join("part.xml");
    std::fs::write(&part, nested(57)).expect("write");
    let (_, diagnostics) = load(&dir.path().join("main.xml"), &no_env());
    let error = only_error(&diagnostics);
    assert!(error.message.contains("nested deeper than 256"), "{error}");
    assert_eq!(position(error).0, part);
    assert!(
        error.hint.as_deref().unwrap_or_default().contains("200"),
        "{error:?}"
    );
}

#[test]
fn a_huge_flat_file_loads_in_linear_time() {
    // 100,000 sibling beans: guards against a quadratic step in reading or splicing.
    let body = "<bean class=\"x\"/>\n".repeat(100_000);
    let xml = format!("<beans>\n{body}</beans>\n");
    let started = std::time::Instant::now();
    let (doc, diagnostics) = load_in(&fixtures(), &xml, &no_env());
    assert!(!diagnostics.has_errors(), "{diagnostics}");
    assert_eq!(doc.expect("document").root.children.len(), 100_000);
    let took = started.elapsed();
    assert!(took.as_secs() < 10, "100,000 flat elements took {took:?}");
}
