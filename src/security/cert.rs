//! Certificate subject DNs, compared the way directories compare them rather than byte for byte.
//!
//! ActiveMQ's DN mapping files are written by hand (`alice=CN=Alice, O=Example`), while the TLS
//! layer prints the certificate's subject in RFC 2253 form (`CN=Alice,O=Example`). Both are
//! normalised before comparing: RDNs split at unescaped `,` (or `;`), multi-valued RDNs at
//! unescaped `+` and sorted, attribute types case-insensitive, values unescaped (`\,`, `\"`,
//! `\4A`), stripped of surrounding spaces and compared case-insensitively (caseIgnoreMatch, the
//! matching rule of CN, O, OU, L, ST, C). RDN order is significant, as in X.500.

/// A normalised distinguished name, usable as a map key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DistinguishedName {
    rdns: Vec<Vec<(String, String)>>,
}

impl DistinguishedName {
    pub fn parse(text: &str) -> Result<DistinguishedName, String> {
        let mut rdns = Vec::new();
        for rdn in split_unescaped(text, &[',', ';']) {
            let mut avas = Vec::new();
            for ava in split_unescaped(rdn, &['+']) {
                let (kind, value) = split_once_unescaped(ava, '=')
                    .ok_or_else(|| format!("`{}` has no `=`", ava.trim()))?;
                let kind = kind.trim();
                if kind.is_empty() {
                    return Err(format!("`{}` has no attribute type", ava.trim()));
                }
                avas.push((kind.to_ascii_uppercase(), normalise_value(value)?));
            }
            avas.sort();
            rdns.push(avas);
        }
        Ok(DistinguishedName { rdns })
    }
}

/// Split at separators that are not escaped by a backslash and not inside double quotes.
fn split_unescaped<'a>(text: &'a str, separators: &[char]) -> Vec<&'a str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    let mut quoted = false;
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if !quoted && separators.contains(&c) {
            parts.push(&text[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&text[start..]);
    parts
}

fn split_once_unescaped(text: &str, separator: char) -> Option<(&str, &str)> {
    let first = split_unescaped(text, &[separator]).into_iter().next()?;
    let rest = text.get(first.len() + separator.len_utf8()..)?;
    Some((first, rest))
}

/// Unescape an attribute value, drop unescaped surrounding spaces and quotes, fold case.
fn normalise_value(raw: &str) -> Result<String, String> {
    let raw = raw.trim_start();
    // Trailing spaces are insignificant unless escaped (`\ `).
    let mut end = raw.len();
    while end > 0 && raw[..end].ends_with(' ') && !raw[..end - 1].ends_with('\\') {
        end -= 1;
    }
    let raw = &raw[..end];
    let raw = raw
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(raw);
    let mut bytes = Vec::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let Some(next) = chars.next() else {
            return Err(format!("`{raw}` ends with a lone backslash"));
        };
        match next.to_digit(16) {
            // `\XX`: one byte in hexadecimal (UTF-8 sequences are written byte by byte).
            Some(high) => {
                let low = chars
                    .next()
                    .and_then(|l| l.to_digit(16))
                    .ok_or_else(|| format!("`{raw}` has an incomplete \\XX escape"))?;
                bytes.push((high * 16 + low) as u8);
            }
            None => {
                let mut buf = [0u8; 4];
                bytes.extend_from_slice(next.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    let value = String::from_utf8(bytes).map_err(|_| format!("`{raw}` is not valid UTF-8"))?;
    Ok(value.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dn(s: &str) -> DistinguishedName {
        DistinguishedName::parse(s).expect("valid DN")
    }

    #[test]
    fn spacing_case_and_escapes_do_not_matter() {
        let canonical = dn("CN=Alice Smith,O=Example\\, Inc.,C=GB");
        assert_eq!(
            dn("cn = alice smith , o=\"Example, Inc.\", c=gb"),
            canonical
        );
        assert_eq!(dn("CN=Alice\\20Smith;O=Example\\2C Inc.;C=GB"), canonical);
        assert_ne!(dn("O=Example\\, Inc.,CN=Alice Smith,C=GB"), canonical);
        assert_ne!(dn("CN=Alice Smith,O=Example,C=GB"), canonical);
    }

    #[test]
    fn multi_valued_rdns_are_unordered() {
        assert_eq!(dn("CN=a+UID=1,O=x"), dn("UID=1+CN=a,O=x"));
        assert_ne!(dn("CN=a+UID=1,O=x"), dn("CN=a,UID=1,O=x"));
    }

    #[test]
    fn malformed_dns_are_errors() {
        assert!(DistinguishedName::parse("").is_err());
        assert!(DistinguishedName::parse("CN").is_err());
        assert!(DistinguishedName::parse("=x").is_err());
        assert!(DistinguishedName::parse("CN=a\\").is_err());
        assert!(DistinguishedName::parse("CN=a\\4").is_err());
    }
}
