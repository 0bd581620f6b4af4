//! Java writes an EC private key's PKCS#8 without the optional public key of its
//! `ECPrivateKey` (RFC 5915 3, `publicKey [1]`); rustls' ring provider refuses a key without it
//! ("failed to parse private key as RSA, ECDSA, or EdDSA"). The public key is the one of the
//! entry's leaf certificate: put it back.

use x509_parser::prelude::{FromDer, X509Certificate};

use super::der;

/// id-ecPublicKey, 1.2.840.10045.2.1, content bytes.
const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
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
    let info = der::element(pkcs8).filter(|e| e.tag == SEQUENCE)?;
    let version = der::element(info.content)?;
    let algorithm = der::element(version.rest).filter(|e| e.tag == SEQUENCE)?;
    let oid = der::element(algorithm.content).filter(|e| e.tag == OID)?;
    if oid.content != EC_PUBLIC_KEY {
        return None;
    }
    let key = der::element(algorithm.rest).filter(|e| e.tag == OCTET_STRING)?;
    let ec_key = der::element(key.content).filter(|e| e.tag == SEQUENCE)?;
    // ECPrivateKey: version, privateKey, then optional [0] parameters and [1] publicKey.
    let mut fields = Vec::new();
    let mut rest = ec_key.content;
    while !rest.is_empty() {
        let field = der::element(rest)?;
        if field.tag == PUBLIC_KEY_TAG {
            return None;
        }
        fields.extend_from_slice(field.whole);
        rest = field.rest;
    }
    let (_, cert) = X509Certificate::from_der(certificate).ok()?;
    let point = &cert.tbs_certificate.subject_pki.subject_public_key.data;
    let mut bits = vec![0u8]; // no unused bits
    bits.extend_from_slice(point);
    fields.extend(der::encode(PUBLIC_KEY_TAG, &der::encode(BIT_STRING, &bits)));

    let mut out = version.whole.to_vec();
    out.extend_from_slice(algorithm.whole);
    out.extend(der::encode(OCTET_STRING, &der::encode(SEQUENCE, &fields)));
    out.extend_from_slice(key.rest); // attributes, if any
    Some(der::encode(SEQUENCE, &out))
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
