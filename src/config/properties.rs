//! Java `.properties` files (users.properties, credentials.properties, ...), parsed the way
//! `java.util.Properties.load` does: `#`/`!` comments, `=`, `:` or blank as separator, backslash
//! line continuations and escapes (`\t`, `\n`, `\uXXXX`). Later keys win over earlier ones.

use std::collections::BTreeMap;

/// One `key=value` with the 1-based line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    pub key: String,
    pub value: String,
    pub line: u32,
}

/// A malformed `\uXXXX` escape, the only error `java.util.Properties` reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: malformed \\uXXXX escape")]
pub struct PropertiesError {
    pub line: u32,
}

/// Parse every entry in file order (duplicates kept; see [`to_map`] for last-wins).
pub fn parse(text: &str) -> Result<Vec<Property>, PropertiesError> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((idx, first)) = lines.next() {
        let start_line = idx as u32 + 1;
        let trimmed = first.trim_start_matches([' ', '\t', '\x0c']);
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('!') {
            continue;
        }
        // Join continuation lines: a line ending in an odd number of backslashes continues, and
        // the next line's leading white space is dropped.
        let mut logical = String::from(trimmed);
        while ends_with_odd_backslashes(&logical) {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next.trim_start_matches([' ', '\t', '\x0c'])),
                None => break,
            }
        }
        let (key, value) = split_key_value(&logical);
        out.push(Property {
            key: unescape(key, start_line)?,
            value: unescape(value, start_line)?,
            line: start_line,
        });
    }
    Ok(out)
}

/// Parse into a map where a later duplicate key replaces an earlier one.
pub fn to_map(text: &str) -> Result<BTreeMap<String, String>, PropertiesError> {
    Ok(parse(text)?.into_iter().map(|p| (p.key, p.value)).collect())
}

fn ends_with_odd_backslashes(s: &str) -> bool {
    s.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

/// Split at the first unescaped `=`, `:` or white space; the separator may be surrounded by
/// white space, and a white-space separator may be followed by one `=` or `:`.
fn split_key_value(line: &str) -> (&str, &str) {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'=' | b':' | b' ' | b'\t' | b'\x0c' => break,
            _ => i += 1,
        }
    }
    let key_end = i.min(bytes.len());
    let mut j = key_end;
    while j < bytes.len() && matches!(bytes[j], b' ' | b'\t' | b'\x0c') {
        j += 1;
    }
    if j < bytes.len() && matches!(bytes[j], b'=' | b':') {
        j += 1;
        while j < bytes.len() && matches!(bytes[j], b' ' | b'\t' | b'\x0c') {
            j += 1;
        }
    }
    (&line[..key_end], &line[j..])
}

fn unescape(s: &str, line: u32) -> Result<String, PropertiesError> {
    if !s.contains('\\') {
        return Ok(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\x0c'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let code = (hex.len() == 4)
                    .then(|| u32::from_str_radix(&hex, 16).ok())
                    .flatten()
                    .ok_or(PropertiesError { line })?;
                // Lone surrogates cannot be represented in Rust strings; use U+FFFD like a lossy
                // decoder would rather than failing the whole file.
                out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_comments_and_continuations() {
        let text = "# comment\n! other\nadmin=password\nuser : secret\nguest pass\n\
                    long = a\\\n    b\\\n   c\nempty\nk\\=ey=v\\u0041\n";
        let props = parse(text).expect("valid");
        let pairs: Vec<(&str, &str)> = props
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_str()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("admin", "password"),
                ("user", "secret"),
                ("guest", "pass"),
                ("long", "abc"),
                ("empty", ""),
                ("k=ey", "vA"),
            ]
        );
        assert_eq!(props[3].line, 6);
    }

    #[test]
    fn later_duplicates_win_and_bad_unicode_is_an_error() {
        let map = to_map("a=1\na=2\n").expect("valid");
        assert_eq!(map.get("a").map(String::as_str), Some("2"));
        assert_eq!(parse("x=\\u12\n"), Err(PropertiesError { line: 1 }));
    }
}
