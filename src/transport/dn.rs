//! Certificate subject distinguished names, written the way Java writes them.
//!
//! ActiveMQ's `TextFileCertificateLoginModule` maps a client certificate to a user by comparing
//! the certificate's subject DN string with the `user=DN` lines of its users file. Users copy
//! those strings from `keytool -printcert` or from broker logs, so ferromq must produce the same
//! text Java does. [`subject_dn`] produces `X500Principal.getName()` (RFC 2253:
//! `CN=client,O=Org,C=US`); older ActiveMQ releases print `getSubjectDN().getName()`, the same
//! names with `", "` between them.

use x509_parser::prelude::{FromDer, X509Certificate};

/// OIDs that Java's RFC 2253 writer prints by keyword; every other attribute is printed as a
/// dotted OID with a `#` hex value.
const RFC2253_KEYWORDS: &[(&str, &str)] = &[
    ("2.5.4.3", "CN"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
];

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_OID: u8 = 0x06;

/// The subject DN of a DER certificate in Java's RFC 2253 form (`X500Principal.getName()`):
/// RDNs most-specific first, joined by `,`; multi-valued RDNs joined by `+`.
pub fn subject_dn(cert_der: &[u8]) -> Result<String, String> {
    let (_, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
    name_to_rfc2253(cert.subject().as_raw())
}

/// Format a DER `Name` (SEQUENCE OF SET OF AttributeTypeAndValue) as Java's RFC 2253 string.
pub fn name_to_rfc2253(name_der: &[u8]) -> Result<String, String> {
    let (tag, body, _) = read_tlv(name_der)?;
    if tag != TAG_SEQUENCE {
        return Err("subject is not a DER SEQUENCE".into());
    }
    let mut rdns = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (tag, set_body, after) = read_tlv(rest)?;
        if tag != TAG_SET {
            return Err("subject RDN is not a DER SET".into());
        }
        let mut avas = Vec::new();
        let mut set_rest = set_body;
        while !set_rest.is_empty() {
            let (tag, ava_body, after_ava) = read_tlv(set_rest)?;
            if tag != TAG_SEQUENCE {
                return Err("subject attribute is not a DER SEQUENCE".into());
            }
            avas.push(format_ava(ava_body)?);
            set_rest = after_ava;
        }
        rdns.push(avas.join("+"));
        rest = after;
    }
    rdns.reverse();
    Ok(rdns.join(","))
}

/// One `type=value` pair, as Java's `AVA.toRFC2253String` writes it.
fn format_ava(ava_body: &[u8]) -> Result<String, String> {
    let (tag, oid_body, value_tlv) = read_tlv(ava_body)?;
    if tag != TAG_OID {
        return Err("subject attribute type is not an OID".into());
    }
    let oid = oid_to_string(oid_body)?;
    let keyword = RFC2253_KEYWORDS
        .iter()
        .find(|(o, _)| *o == oid)
        .map(|(_, k)| *k);
    let (value_tag, value_body, _) = read_tlv(value_tlv)?;
    match (keyword, decode_string(value_tag, value_body)) {
        (Some(keyword), Some(text)) => Ok(format!("{keyword}={}", escape_rfc2253(&text))),
        (Some(keyword), None) => Ok(format!("{keyword}=#{}", hex(value_tlv))),
        (None, _) => Ok(format!("{oid}=#{}", hex(value_tlv))),
    }
}

/// Escape a value as Java does: the RFC 2253 specials get a backslash, NUL becomes `\00`, and
/// leading or trailing spaces (and carriage returns) are escaped.
fn escape_rfc2253(value: &str) -> String {
    const SPECIALS: &str = ",=+<>#;\"\\";
    let chars: Vec<char> = value.chars().collect();
    let is_blank = |c: &char| *c == ' ' || *c == '\r';
    let lead = chars.iter().take_while(|c| is_blank(c)).count();
    let trail = chars.iter().rev().take_while(|c| is_blank(c)).count();
    let mut out = String::with_capacity(value.len() + 4);
    for (i, c) in chars.iter().enumerate() {
        if *c == '\0' {
            out.push_str("\\00");
            continue;
        }
        if SPECIALS.contains(*c) || i < lead || i >= chars.len() - trail {
            out.push('\\');
        }
        out.push(*c);
    }
    out
}

/// Decode the DER string types Java prints as text; `None` for anything else.
fn decode_string(tag: u8, body: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, IA5String
        0x0c | 0x13 | 0x16 => String::from_utf8(body.to_vec()).ok(),
        // TeletexString, GeneralString: Java reads them as ISO-8859-1
        0x14 | 0x1b => Some(body.iter().map(|b| char::from(*b)).collect()),
        // BMPString: UTF-16BE
        0x1e => {
            if !body.len().is_multiple_of(2) {
                return None;
            }
            let units: Vec<u16> = body
                .chunks_exact(2)
                .map(|p| u16::from_be_bytes([p[0], p[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        // UniversalString: UTF-32BE
        0x1c => {
            if !body.len().is_multiple_of(4) {
                return None;
            }
            body.chunks_exact(4)
                .map(|q| char::from_u32(u32::from_be_bytes([q[0], q[1], q[2], q[3]])))
                .collect()
        }
        _ => None,
    }
}

/// Split one DER TLV off the front of `input`: (tag, contents, rest). Single-byte tags only,
/// which is all a `Name` uses.
fn read_tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let truncated = || "truncated DER in certificate subject".to_string();
    let (&tag, after_tag) = input.split_first().ok_or_else(truncated)?;
    if tag & 0x1f == 0x1f {
        return Err("multi-byte DER tag in certificate subject".into());
    }
    let (&first_len, after_len_byte) = after_tag.split_first().ok_or_else(truncated)?;
    let (len, contents_start) = if first_len < 0x80 {
        (usize::from(first_len), after_len_byte)
    } else {
        let count = usize::from(first_len & 0x7f);
        if count == 0 || count > 4 {
            return Err("unsupported DER length in certificate subject".into());
        }
        let len_bytes = after_len_byte.get(..count).ok_or_else(truncated)?;
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, after_len_byte.get(count..).ok_or_else(truncated)?)
    };
    let contents = contents_start.get(..len).ok_or_else(truncated)?;
    let rest = contents_start.get(len..).ok_or_else(truncated)?;
    Ok((tag, contents, rest))
}

/// Dotted-decimal form of a DER OID body.
fn oid_to_string(body: &[u8]) -> Result<String, String> {
    let mut arcs: Vec<u64> = Vec::new();
    let mut current: u64 = 0;
    for (i, b) in body.iter().enumerate() {
        current = current
            .checked_mul(128)
            .and_then(|c| c.checked_add(u64::from(b & 0x7f)))
            .ok_or("OID arc too large in certificate subject")?;
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = current.min(80) / 40;
                arcs.push(first);
                arcs.push(current - first * 40);
            } else {
                arcs.push(current);
            }
            current = 0;
        } else if i + 1 == body.len() {
            return Err("truncated OID in certificate subject".into());
        }
    }
    if arcs.is_empty() {
        return Err("empty OID in certificate subject".into());
    }
    Ok(arcs
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join("."))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with_subject(entries: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        for (kind, value) in entries {
            dn.push(kind.clone(), *value);
        }
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn subject_is_most_specific_first_without_spaces() {
        let der = cert_with_subject(&[
            (rcgen::DnType::CountryName, "US"),
            (rcgen::DnType::OrganizationName, "Org"),
            (rcgen::DnType::CommonName, "client"),
        ]);
        assert_eq!(subject_dn(&der).expect("dn"), "CN=client,O=Org,C=US");
    }

    #[test]
    fn specials_and_edge_spaces_are_escaped() {
        let der = cert_with_subject(&[
            (rcgen::DnType::OrganizationName, "Acme, Inc. +1"),
            (rcgen::DnType::CommonName, " #lead"),
        ]);
        assert_eq!(
            subject_dn(&der).expect("dn"),
            "CN=\\ \\#lead,O=Acme\\, Inc. \\+1"
        );
    }

    #[test]
    fn unknown_attributes_are_dotted_oids_with_hex_values() {
        let der = cert_with_subject(&[
            (
                rcgen::DnType::CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]),
                "a@b",
            ),
            (rcgen::DnType::CommonName, "c"),
        ]);
        // rcgen writes custom attributes as UTF8String (tag 0x0c)
        assert_eq!(
            subject_dn(&der).expect("dn"),
            "CN=c,1.2.840.113549.1.9.1=#0c03614062"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(subject_dn(b"").is_err());
        assert!(subject_dn(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(name_to_rfc2253(&[0x30, 0x03, 0x31, 0x05, 0x30]).is_err());
    }
}
