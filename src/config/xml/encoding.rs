//! A configuration file's bytes -> text, in the encodings an XML parser must or commonly does
//! read (Xerces, which ActiveMQ uses, reads all of these): UTF-8 (the default), UTF-16 with a
//! byte-order mark or recognised from its `<?xml` (XML 1.0 appendix F), and ISO-8859-1 when the
//! XML declaration names it (US-ASCII is read as UTF-8, its superset). Any other declared
//! encoding is refused with the `iconv` command that converts the file.

/// Why bytes are not text in the encoding they are (or are declared to be) in. Positions are
/// 1-based line and column (in characters) of the first undecodable unit.
pub(super) enum DecodeError {
    Invalid {
        encoding: &'static str,
        line: u32,
        col: u32,
    },
    Unsupported {
        declared: String,
    },
}

/// Decode a whole file. The byte-order mark, if any, is kept for UTF-8 (the parser strips it)
/// and dropped for UTF-16.
pub(super) fn decode(bytes: Vec<u8>) -> Result<String, DecodeError> {
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return utf16(rest, u16::from_le_bytes);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        return utf16(rest, u16::from_be_bytes);
    }
    // `<?` in UTF-16 without a byte-order mark.
    if bytes.starts_with(&[b'<', 0, b'?', 0]) {
        return utf16(&bytes, u16::from_le_bytes);
    }
    if bytes.starts_with(&[0, b'<', 0, b'?']) {
        return utf16(&bytes, u16::from_be_bytes);
    }
    match declared_encoding(&bytes) {
        Some(name) if is_latin1(&name) => Ok(bytes.iter().map(|&b| char::from(b)).collect()),
        Some(name) if is_utf8(&name) => utf8(bytes),
        Some(name) => Err(DecodeError::Unsupported { declared: name }),
        None => utf8(bytes),
    }
}

fn utf8(bytes: Vec<u8>) -> Result<String, DecodeError> {
    String::from_utf8(bytes).map_err(|err| {
        let valid = err.utf8_error().valid_up_to();
        let before = String::from_utf8_lossy(err.as_bytes().get(..valid).unwrap_or_default());
        invalid("UTF-8", &before)
    })
}

fn utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16) -> Result<String, DecodeError> {
    let units = bytes.chunks(2).map(|pair| match pair {
        [a, b] => Some(unit([*a, *b])),
        _ => None,
    });
    let mut text = String::with_capacity(bytes.len() / 2);
    let mut pending = Vec::new();
    for unit in units {
        let Some(unit) = unit else {
            // An odd number of bytes: the last one is half a unit.
            return Err(invalid("UTF-16", &text));
        };
        pending.push(unit);
        // A high surrogate waits for its low half.
        if (0xD800..0xDC00).contains(&unit) {
            continue;
        }
        for decoded in char::decode_utf16(pending.drain(..)) {
            match decoded {
                Ok(c) => text.push(c),
                Err(_) => return Err(invalid("UTF-16", &text)),
            }
        }
    }
    if pending.is_empty() {
        Ok(text)
    } else {
        Err(invalid("UTF-16", &text))
    }
}

/// The error at the character after `before`.
fn invalid(encoding: &'static str, before: &str) -> DecodeError {
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    DecodeError::Invalid {
        encoding,
        line: u32::try_from(line).unwrap_or(u32::MAX),
        col: u32::try_from(col).unwrap_or(u32::MAX),
    }
}

/// `encoding="..."` of a leading `<?xml ...?>` declaration (ASCII-compatible encodings only).
fn declared_encoding(bytes: &[u8]) -> Option<String> {
    let bytes = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(bytes);
    let rest = bytes.strip_prefix(b"<?xml")?;
    let end = rest.windows(2).take(1024).position(|w| w == b"?>")?;
    let declaration = std::str::from_utf8(rest.get(..end)?).ok()?;
    let after = &declaration[declaration.find("encoding")? + "encoding".len()..];
    let after = after.trim_start().strip_prefix('=')?.trim_start();
    let quote = after.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value = &after[1..];
    Some(value[..value.find(quote)?].to_owned())
}

fn is_latin1(name: &str) -> bool {
    [
        "ISO-8859-1",
        "ISO8859-1",
        "ISO_8859-1",
        "ISO8859_1",
        "LATIN1",
        "L1",
    ]
    .iter()
    .any(|n| n.eq_ignore_ascii_case(name))
}

fn is_utf8(name: &str) -> bool {
    ["UTF-8", "UTF8", "US-ASCII", "ASCII"]
        .iter()
        .any(|n| n.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(bytes: &[u8]) -> String {
        match decode(bytes.to_vec()) {
            Ok(text) => text,
            Err(_) => panic!("{bytes:?} does not decode"),
        }
    }

    fn utf16_bytes(text: &str, bom: bool, to: fn(u16) -> [u8; 2]) -> Vec<u8> {
        let mut out = Vec::new();
        if bom {
            out.extend(to(0xFEFF));
        }
        for unit in text.encode_utf16() {
            out.extend(to(unit));
        }
        out
    }

    const XML: &str =
        "<?xml version=\"1.0\" encoding=\"UTF-16\"?>\n<beans a=\"caf\u{e9} \u{1F600}\"/>";

    #[test]
    fn utf16_with_and_without_bom_in_both_byte_orders() {
        for to in [u16::to_le_bytes as fn(u16) -> [u8; 2], u16::to_be_bytes] {
            for bom in [true, false] {
                assert_eq!(decoded(&utf16_bytes(XML, bom, to)), XML);
            }
        }
    }

    #[test]
    fn latin1_only_when_declared() {
        let bytes = b"<?xml version='1.0' encoding = 'iso-8859-1'?>\n<b a=\"caf\xe9\"/>";
        assert!(decoded(bytes).ends_with("<b a=\"caf\u{e9}\"/>"));
        let undeclared = b"<b a=\"caf\xe9\"/>".to_vec();
        assert!(matches!(
            decode(undeclared),
            Err(DecodeError::Invalid {
                encoding: "UTF-8",
                line: 1,
                col: 10
            })
        ));
    }

    #[test]
    fn other_declared_encodings_are_refused_by_name() {
        let bytes = b"<?xml version=\"1.0\" encoding=\"Shift_JIS\"?><b/>".to_vec();
        assert!(
            matches!(decode(bytes), Err(DecodeError::Unsupported { declared }) if declared == "Shift_JIS")
        );
    }

    #[test]
    fn broken_utf16_is_located() {
        let mut bytes = utf16_bytes("<b>\n  x", true, u16::to_le_bytes);
        bytes.extend(0xD800u16.to_le_bytes());
        bytes.extend(u16::to_le_bytes(u16::from(b'y')));
        assert!(matches!(
            decode(bytes),
            Err(DecodeError::Invalid {
                encoding: "UTF-16",
                line: 2,
                col: 4
            })
        ));
        let odd = vec![0xFF, 0xFE, b'<', 0, b'b'];
        assert!(matches!(
            decode(odd),
            Err(DecodeError::Invalid { col: 2, .. })
        ));
    }
}
