//! Files in the encodings Xerces reads: UTF-16 (either byte order, with or without a byte-order
//! mark) and declared ISO-8859-1 load; another declared encoding is refused with an `iconv`
//! command; undeclared non-UTF-8 bytes are located, with the conversion command.

use super::*;

const BODY: &str = "<beans>\n  <broker brokerName=\"caf\u{e9}\"/>\n</beans>\n";

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write");
    path
}

fn broker_name(path: &Path) -> String {
    let doc = load_ok(path, &no_env());
    value(find(&doc.root, "broker"), "brokerName").to_owned()
}

#[test]
fn declared_iso_8859_1_loads_with_exact_positions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "latin1.xml",
        b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<beans>\n  <broker brokerName=\"caf\xe9\" x=\"1\"/>\n</beans>\n",
    );
    assert_eq!(broker_name(&path), "caf\u{e9}");
    let doc = load_ok(&path, &no_env());
    let broker = find(&doc.root, "broker");
    let x = broker.attrs.iter().find(|a| a.name == "x").expect("x");
    assert_eq!((x.span.line, x.span.col), (3, 29));
}

#[test]
fn utf16_loads_in_both_byte_orders_with_or_without_a_byte_order_mark() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!("<?xml version=\"1.0\" encoding=\"UTF-16\"?>\n{BODY}");
    for (name, to, bom) in [
        ("le-bom.xml", u16::to_le_bytes as fn(u16) -> [u8; 2], true),
        ("be-bom.xml", u16::to_be_bytes, true),
        ("le.xml", u16::to_le_bytes, false),
        ("be.xml", u16::to_be_bytes, false),
    ] {
        let mut bytes = Vec::new();
        if bom {
            bytes.extend(to(0xFEFF));
        }
        for unit in text.encode_utf16() {
            bytes.extend(to(unit));
        }
        let path = write(dir.path(), name, &bytes);
        assert_eq!(broker_name(&path), "caf\u{e9}", "{name}");
    }
}

#[test]
fn another_declared_encoding_is_refused_with_the_iconv_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "sjis.xml",
        b"<?xml version=\"1.0\" encoding=\"Shift_JIS\"?>\n<beans/>\n",
    );
    let (doc, diagnostics) = load(&path, &no_env());
    assert!(doc.is_none());
    let error = only_error(&diagnostics);
    assert!(error.message.contains("`Shift_JIS`"), "{error}");
    let hint = error.hint.as_deref().unwrap_or_default();
    assert!(hint.contains("iconv -f Shift_JIS -t UTF-8"), "{hint}");
    assert!(!hint.contains("give the path"), "{hint}");
}

#[test]
fn undeclared_latin1_is_located_with_the_iconv_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "plain.xml",
        b"<beans>\n  <broker brokerName=\"caf\xe9\"/>\n</beans>",
    );
    let (doc, diagnostics) = load(&path, &no_env());
    assert!(doc.is_none());
    let error = only_error(&diagnostics);
    assert_eq!(position(error), (path, 2, 26));
    let hint = error.hint.as_deref().unwrap_or_default();
    assert!(hint.contains("iconv -f WINDOWS-1252 -t UTF-8"), "{hint}");
    assert!(!hint.contains("give the path"), "{hint}");
}
