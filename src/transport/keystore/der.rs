//! The little DER a Java key store needs: the `EncryptedPrivateKeyInfo` (PKCS#8, RFC 5208 6)
//! around each protected private key, and the outer shape of a decrypted `PrivateKeyInfo`.

use super::KeyStoreError;

const SEQUENCE: u8 = 0x30;
const OCTET_STRING: u8 = 0x04;
const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;

/// One DER element: its tag, its content, and what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (len_bytes, rest) = rest.split_at_checked(n)?;
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, rest)
    };
    let (content, rest) = rest.split_at_checked(len)?;
    Some((tag, content, rest))
}

/// One DER element with what follows it.
pub(super) struct Element<'a> {
    pub(super) tag: u8,
    pub(super) content: &'a [u8],
    /// The element with its header.
    pub(super) whole: &'a [u8],
    pub(super) rest: &'a [u8],
}

pub(super) fn element(input: &[u8]) -> Option<Element<'_>> {
    let (tag, content, rest) = tlv(input)?;
    let whole = input.get(..input.len() - rest.len())?;
    Some(Element {
        tag,
        content,
        whole,
        rest,
    })
}

/// `content` as one DER element with `tag` (definite length, short or long form).
pub(super) fn encode(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    match u8::try_from(len) {
        Ok(short) if short < 0x80 => out.push(short),
        _ => {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            let significant = bytes.get(skip..).unwrap_or_default();
            out.push(0x80 | u8::try_from(significant.len()).unwrap_or(8));
            out.extend_from_slice(significant);
        }
    }
    out.extend_from_slice(content);
    out
}

fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    match tlv(input)? {
        (t, content, rest) if t == tag => Some((content, rest)),
        _ => None,
    }
}

/// A parsed `EncryptedPrivateKeyInfo`.
pub(super) struct EncryptedKey<'a> {
    /// The algorithm OID's content bytes.
    pub(super) algorithm: &'a [u8],
    /// The DER of the algorithm's parameters (empty when absent).
    pub(super) parameters: &'a [u8],
    pub(super) data: &'a [u8],
}

pub(super) fn encrypted_private_key_info(bytes: &[u8]) -> Result<EncryptedKey<'_>, KeyStoreError> {
    let bad = || KeyStoreError::BadKeyEncoding {
        reason: "not a PKCS#8 EncryptedPrivateKeyInfo",
    };
    let (info, _) = expect(bytes, SEQUENCE).ok_or_else(bad)?;
    let (algorithm_id, rest) = expect(info, SEQUENCE).ok_or_else(bad)?;
    let (data, _) = expect(rest, OCTET_STRING).ok_or_else(bad)?;
    let (algorithm, parameters) = expect(algorithm_id, OID).ok_or_else(bad)?;
    Ok(EncryptedKey {
        algorithm,
        parameters,
        data,
    })
}

/// `PBEParameter ::= SEQUENCE { salt OCTET STRING, iterationCount INTEGER }` (PKCS#5 PBES1).
pub(super) fn pbe_parameters(der: &[u8]) -> Result<(&[u8], u64), KeyStoreError> {
    let bad = || KeyStoreError::BadKeyEncoding {
        reason: "bad PBE parameters (salt, iteration count)",
    };
    let (params, _) = expect(der, SEQUENCE).ok_or_else(bad)?;
    let (salt, rest) = expect(params, OCTET_STRING).ok_or_else(bad)?;
    let (count, _) = expect(rest, INTEGER).ok_or_else(bad)?;
    // A positive INTEGER of at most 8 significant bytes (a leading 0x00 keeps it positive).
    let count = match count {
        [0, rest @ ..] => rest,
        [b, ..] if *b >= 0x80 => return Err(bad()),
        other => other,
    };
    if count.len() > 8 {
        return Err(bad());
    }
    let iterations = count.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    Ok((salt, iterations))
}

/// Whether `bytes` is exactly one DER SEQUENCE (the outer shape of a PKCS#8 `PrivateKeyInfo`).
pub(super) fn is_one_sequence(bytes: &[u8]) -> bool {
    matches!(tlv(bytes), Some((SEQUENCE, _, rest)) if rest.is_empty())
}

/// An OID's content bytes in dotted form, for error messages.
pub(super) fn oid_text(content: &[u8]) -> String {
    let mut parts = Vec::new();
    let mut value: u64 = 0;
    for (i, b) in content.iter().enumerate() {
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if parts.is_empty() {
                let first = value.min(80) / 40;
                parts.push(first.to_string());
                parts.push((value - first * 40).to_string());
            } else {
                parts.push(value.to_string());
            }
            value = 0;
        } else if i + 1 == content.len() || value > u64::MAX >> 8 {
            return "(malformed OID)".into();
        }
    }
    parts.join(".")
}

/// The content of the `AlgorithmIdentifier` of a DER `SubjectPublicKeyInfo` (RFC 5280 4.1), the
/// form `SignatureVerificationAlgorithm::public_key_alg_id` compares against.
pub(crate) fn spki_algorithm_id(spki: &[u8]) -> Option<&[u8]> {
    let (tag, content, _) = tlv(spki)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, algorithm, _) = tlv(content)?;
    (tag == SEQUENCE).then_some(algorithm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_short_and_long_lengths() {
        let long = [0x04, 0x81, 0x02, 0xaa, 0xbb, 0x05];
        let (tag, content, rest) = tlv(&long).expect("tlv");
        assert_eq!((tag, content, rest), (0x04, &[0xaa, 0xbb][..], &[0x05][..]));
        assert!(tlv(&[0x04, 0x85, 1, 1, 1, 1, 1]).is_none());
        assert!(tlv(&[0x04, 0x03, 1]).is_none());
    }

    #[test]
    fn encode_then_parse() {
        for len in [0usize, 5, 127, 128, 300, 70_000] {
            let content = vec![7u8; len];
            let der = encode(0x04, &content);
            let e = element(&der).expect("element");
            assert_eq!(
                (e.tag, e.content, e.whole, e.rest.len()),
                (0x04, &content[..], &der[..], 0)
            );
        }
    }

    #[test]
    fn oid_in_dotted_form() {
        // 1.3.6.1.4.1.42.2.17.1.1: Sun's JKS key protector
        let oid = [0x2b, 0x06, 0x01, 0x04, 0x01, 0x2a, 0x02, 0x11, 0x01, 0x01];
        assert_eq!(oid_text(&oid), "1.3.6.1.4.1.42.2.17.1.1");
        assert_eq!(oid_text(&[0x2b, 0x86]), "(malformed OID)");
    }

    #[test]
    fn pbe_parameters_read_salt_and_count() {
        let der = [
            0x30, 0x0d, 0x04, 0x08, 1, 2, 3, 4, 5, 6, 7, 8, 0x02, 0x01, 0x14,
        ];
        let (salt, count) = pbe_parameters(&der).expect("params");
        assert_eq!((salt, count), (&[1, 2, 3, 4, 5, 6, 7, 8][..], 20));
        let negative = [0x30, 0x05, 0x04, 0x00, 0x02, 0x01, 0x80];
        assert!(pbe_parameters(&negative).is_err());
    }
}
