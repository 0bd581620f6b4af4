//! Java writes an EC private key's PKCS#8 without the optional public key of its
//! `ECPrivateKey` (RFC 5915 3, `publicKey [1]`); rustls' ring provider refuses a key without it
//! ("failed to parse private key as RSA, ECDSA, or EdDSA"). The public key is the one of the
//! entry's leaf certificate: put it back.

use x509_parser::prelude::{FromDer, X509Certificate};

use super::der;

/// id-ecPublicKey, 1.2.840.10045.2.1, content bytes.
const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const SEQUENCE: u8 = 0x30;
const OCTET_STRING: u8 = 0x04;
const BIT_STRING: u8 = 0x03;
const PUBLIC_KEY_TAG: u8 = 0xa1;

/// `pkcs8` with the EC public key of `certificate` added when it is an EC key without one;
/// anything else (RSA, a complete EC key, an unexpected shape) is returned unchanged, and rustls
/// judges it.
pub(crate) fn with_public_key(pkcs8: Vec<u8>, certificate: &[u8]) -> Vec<u8> {
    completed(&pkcs8, certificate).unwrap_or(pkcs8)
}

fn completed(pkcs8: &[u8], certificate: &[u8]) -> Option<Vec<u8>> {
    let (SEQUENCE, info, _, _) = der::element(pkcs8)? else {
        return None;
    };
    let (_, _, version, rest) = der::element(info)?;
    let (SEQUENCE, algorithm, algorithm_whole, rest) = der::element(rest)? else {
        return None;
    };
    let (0x06, oid, _, _) = der::element(algorithm)? else {
        return None;
    };
    if oid != EC_PUBLIC_KEY {
        return None;
    }
    let (OCTET_STRING, ec_key, _, attributes) = der::element(rest)? else {
        return None;
    };
    let (SEQUENCE, ec_fields, _, _) = der::element(ec_key)? else {
        return None;
    };
    // ECPrivateKey: version, privateKey, then optional [0] parameters and [1] publicKey.
    let mut fields = Vec::new();
    let mut rest = ec_fields;
    while !rest.is_empty() {
        let (tag, _, whole, next) = der::element(rest)?;
        if tag == PUBLIC_KEY_TAG {
            return None;
        }
        fields.extend_from_slice(whole);
        rest = next;
    }
    let (_, cert) = X509Certificate::from_der(certificate).ok()?;
    let point = &cert.tbs_certificate.subject_pki.subject_public_key.data;
    let mut bits = vec![0u8]; // no unused bits
    bits.extend_from_slice(point);
    fields.extend(der::encode(PUBLIC_KEY_TAG, &der::encode(BIT_STRING, &bits)));

    let mut info = version.to_vec();
    info.extend_from_slice(algorithm_whole);
    info.extend(der::encode(OCTET_STRING, &der::encode(SEQUENCE, &fields)));
    info.extend_from_slice(attributes);
    Some(der::encode(SEQUENCE, &info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_are_not_incomplete_ec_keys_stay_as_they_are() {
        assert_eq!(with_public_key(vec![1, 2, 3], b"x"), vec![1, 2, 3]);
        // an RSA PrivateKeyInfo shape: version, rsaEncryption, key
        let rsa = der::encode(
            SEQUENCE,
            &[
                der::encode(0x02, &[0]),
                der::encode(
                    SEQUENCE,
                    &der::encode(
                        0x06,
                        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
                    ),
                ),
                der::encode(OCTET_STRING, &[0x30, 0x00]),
            ]
            .concat(),
        );
        assert_eq!(with_public_key(rsa.clone(), b"x"), rsa);
    }
}
