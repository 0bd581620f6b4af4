//! No input makes the loader panic: random bytes and random XML-like token soup.

use super::*;
use proptest::prelude::*;

#[rustfmt::skip]
const TOKENS: &[&str] = &[
    "<", ">", "/", "/>", "</", "=", "\"", "'", "&", ";", "&amp;", "&#65;", "&#x;", "${", "}",
    ":", " ", "\n", "\r\n", "\t", "<!--", "-->", "<![CDATA[", "]]>", "<?xml", "?>",
    "<!DOCTYPE", "beans", "broker", "amq", "xmlns", "xmlns:amq", "import", "resource",
    "bean", "property", "value", "class", "name", "location", "é", "\u{feff}", "${a:b}",
    "<beans>", "</beans>", "<broker a=\"x\">", "</broker>",
    "<bean class=\"org.springframework.beans.factory.config.PropertyPlaceholderConfigurer\">",
    "<property name=\"location\" value=\"credentials.properties\"/>",
    "<import resource=\"activemq.xml\"/>", "ENC(x)", "${activemq.password}",
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
        assert!(span.is_none_or(|s| s.line >= 1 && s.col >= 1), "{d}");
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
