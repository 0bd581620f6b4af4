//! Which client certificates a trust store admits, as Java's PKIX trust manager decides
//! (`sun.security.validator.PKIXValidator`), the reference for an ActiveMQ `trustStore`:
//!
//! - a client certificate that *is* a trusted certificate (same DER) is accepted, whatever it is:
//!   a self-signed leaf imported with `keytool -importcert` (ActiveMQ's documented workflow), a
//!   self-signed certificate with `CA:TRUE` (`openssl req -x509`'s default) or an X.509 v1
//!   certificate. The TLS handshake still proves the client holds its private key. Its key
//!   usages must allow TLS client authentication (Java's end-entity check) and, unlike Java,
//!   its validity period is checked too;
//! - any other certificate must chain, through rustls' WebPKI verifier, to a trusted certificate
//!   that may issue certificates: a v3 certificate with basicConstraints `cA=TRUE` (and
//!   keyCertSign when it has a keyUsage extension), or a v1/v2 certificate (Java allows v1
//!   anchors: they predate extensions). A trusted leaf without `cA=TRUE` issues nothing: otherwise
//!   whoever holds a trusted client's key could sign a certificate for any subject (`CN=admin`)
//!   and be mapped to that user by certificate login.
//!
//! A trust store with no certificate admits no client certificate.

use std::sync::Arc;

use rustls_pki_types::{CertificateDer, SubjectPublicKeyInfoDer, UnixTime};
use tokio_rustls::rustls::{
    self,
    client::danger::HandshakeSignatureValid,
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    server::danger::{ClientCertVerified, ClientCertVerifier},
    server::WebPkiClientVerifier,
    CertificateError, DigitallySignedStruct, DistinguishedName, PeerMisbehaved, RootCertStore,
    SignatureScheme,
};
use x509_parser::prelude::{FromDer, X509Certificate, X509Version};

use super::keystore::spki_algorithm_id;

/// One certificate of the trust store, parsed once.
#[derive(Debug)]
struct Trusted {
    der: CertificateDer<'static>,
    /// `SubjectPublicKeyInfo` DER: the key a client presenting exactly this certificate signs with.
    spki: Vec<u8>,
    /// The raw `subjectPublicKey` bits of `spki`.
    public_key: Vec<u8>,
    not_before: i64,
    not_after: i64,
    /// Whether its key usages allow TLS client authentication (checked when a client presents
    /// exactly this certificate).
    client_auth_allowed: bool,
}

/// Whether a trusted certificate may issue others, as Java decides for a trust anchor:
/// v1/v2 certificates may; v3 ones need basicConstraints `cA=TRUE` and, when they have a
/// keyUsage extension, keyCertSign.
fn can_issue(cert: &X509Certificate<'_>) -> bool {
    if cert.version() != X509Version::V3 {
        return true;
    }
    let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    let may_sign = match cert.key_usage() {
        Ok(Some(ku)) => ku.value.key_cert_sign(),
        Ok(None) => true,
        Err(_) => false,
    };
    is_ca && may_sign
}

/// Whether a certificate's extensions allow TLS client authentication, as Java's end-entity
/// check for TLS clients: keyUsage, when present, has digitalSignature; extendedKeyUsage, when
/// present, has clientAuth or anyExtendedKeyUsage.
fn allows_client_auth(cert: &X509Certificate<'_>) -> bool {
    let key_usage = match cert.key_usage() {
        Ok(Some(ku)) => ku.value.digital_signature(),
        Ok(None) => true,
        Err(_) => false,
    };
    let extended = match cert.extended_key_usage() {
        Ok(Some(eku)) => eku.value.client_auth || eku.value.any,
        Ok(None) => true,
        Err(_) => false,
    };
    key_usage && extended
}

/// How a trust store's certificates were sorted, for the load-time log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct TrustSummary {
    /// Certificates that may issue client certificates (CAs and v1 certificates).
    pub(crate) issuers: usize,
    /// Certificates accepted only when a client presents exactly them.
    pub(crate) exact_only: usize,
    /// Certificates that could not be parsed and are ignored.
    pub(crate) unparsable: usize,
}

/// The client certificate verifier of one TLS listener (see the module documentation).
#[derive(Debug)]
pub(crate) struct TrustVerifier {
    trusted: Vec<Trusted>,
    /// WebPKI over the certificates that may issue; `None` when there are none.
    chains: Option<Arc<dyn ClientCertVerifier>>,
    hints: Vec<DistinguishedName>,
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl TrustVerifier {
    /// A verifier over `certs` (the trust store's certificates); `mandatory` refuses clients
    /// without a certificate (`needClientAuth`). Errors are rustls' reasons for refusing to build
    /// the WebPKI verifier over the CA certificates.
    pub(crate) fn new(
        certs: Vec<CertificateDer<'static>>,
        provider: Arc<CryptoProvider>,
        mandatory: bool,
    ) -> Result<(TrustVerifier, TrustSummary), rustls::Error> {
        let mut summary = TrustSummary::default();
        let mut trusted = Vec::with_capacity(certs.len());
        let mut hints = Vec::with_capacity(certs.len());
        let mut roots = RootCertStore::empty();
        for der in certs {
            let Ok((_, cert)) = X509Certificate::from_der(der.as_ref()) else {
                summary.unparsable += 1;
                continue;
            };
            // A CA that WebPKI cannot take as an anchor is still trusted by exact match.
            let issues = can_issue(&cert) && roots.add(der.clone()).is_ok();
            hints.push(DistinguishedName::from(cert.subject().as_raw().to_vec()));
            let entry = Trusted {
                spki: cert.public_key().raw.to_vec(),
                public_key: cert.public_key().subject_public_key.data.to_vec(),
                not_before: cert.validity().not_before.timestamp(),
                not_after: cert.validity().not_after.timestamp(),
                client_auth_allowed: allows_client_auth(&cert),
                der: der.clone(),
            };
            if issues {
                summary.issuers += 1;
            } else {
                summary.exact_only += 1;
            }
            trusted.push(entry);
        }
        let chains = if roots.is_empty() {
            None
        } else {
            let builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .allow_unauthenticated();
            let verifier: Arc<dyn ClientCertVerifier> = builder
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
            Some(verifier)
        };
        Ok((
            TrustVerifier {
                trusted,
                chains,
                hints,
                mandatory,
                algorithms: provider.signature_verification_algorithms,
            },
            summary,
        ))
    }

    fn exact(&self, cert: &CertificateDer<'_>) -> Option<&Trusted> {
        self.trusted
            .iter()
            .find(|t| t.der.as_ref() == cert.as_ref())
    }
}

fn unix(seconds: i64) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(seconds).unwrap_or(0),
    ))
}

fn check_validity(trusted: &Trusted, now: UnixTime) -> Result<(), rustls::Error> {
    let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    if now_secs < trusted.not_before {
        return Err(CertificateError::NotValidYetContext {
            time: now,
            not_before: unix(trusted.not_before),
        }
        .into());
    }
    if now_secs > trusted.not_after {
        return Err(CertificateError::ExpiredContext {
            time: now,
            not_after: unix(trusted.not_after),
        }
        .into());
    }
    Ok(())
}

/// Verify `dss` over `message` with the public key of a trusted certificate, without parsing the
/// certificate with WebPKI (which refuses v1 certificates).
fn verify_with_key(
    trusted: &Trusted,
    message: &[u8],
    dss: &DigitallySignedStruct,
    algorithms: &WebPkiSupportedAlgorithms,
    tls13: bool,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    if tls13 {
        let spki = SubjectPublicKeyInfoDer::from(trusted.spki.as_slice());
        return rustls::crypto::verify_tls13_signature_with_raw_key(
            message, &spki, dss, algorithms,
        );
    }
    let candidates = algorithms
        .mapping
        .iter()
        .find(|(scheme, _)| *scheme == dss.scheme)
        .map(|(_, algs)| *algs)
        .ok_or(PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme)?;
    let key_algorithm = spki_algorithm_id(&trusted.spki).unwrap_or(&[]);
    for alg in candidates {
        if alg.public_key_alg_id().as_ref() != key_algorithm {
            continue;
        }
        return alg
            .verify_signature(&trusted.public_key, message, dss.signature())
            .map(|()| HandshakeSignatureValid::assertion())
            .map_err(|_| CertificateError::BadSignature.into());
    }
    Err(CertificateError::BadSignature.into())
}

impl ClientCertVerifier for TrustVerifier {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if let Some(trusted) = self.exact(end_entity) {
            check_validity(trusted, now)?;
            if !trusted.client_auth_allowed {
                return Err(CertificateError::InvalidPurpose.into());
            }
            return Ok(ClientCertVerified::assertion());
        }
        match &self.chains {
            Some(chains) => chains.verify_client_cert(end_entity, intermediates, now),
            None => Err(CertificateError::UnknownIssuer.into()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match self.exact(cert) {
            Some(trusted) => verify_with_key(trusted, message, dss, &self.algorithms, false),
            None => rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms),
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match self.exact(cert) {
            Some(trusted) => verify_with_key(trusted, message, dss, &self.algorithms, true),
            None => rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms),
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn self_signed(is_ca: IsCa, usages: Vec<KeyUsagePurpose>) -> CertificateDer<'static> {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec!["x".into()]).expect("params");
        params.is_ca = is_ca;
        params.key_usages = usages;
        params.self_signed(&key).expect("cert").der().clone()
    }

    #[test]
    fn only_ca_certificates_with_key_cert_sign_may_issue() {
        let leaf = self_signed(IsCa::NoCa, vec![]);
        let explicit_leaf = self_signed(IsCa::ExplicitNoCa, vec![]);
        let ca = self_signed(IsCa::Ca(BasicConstraints::Unconstrained), vec![]);
        let ca_without_cert_sign = self_signed(
            IsCa::Ca(BasicConstraints::Unconstrained),
            vec![KeyUsagePurpose::DigitalSignature],
        );
        let (verifier, summary) = TrustVerifier::new(
            vec![leaf, explicit_leaf, ca, ca_without_cert_sign],
            provider(),
            true,
        )
        .expect("verifier");
        assert!(verifier.chains.is_some());
        assert_eq!(
            summary,
            TrustSummary {
                issuers: 1,
                exact_only: 3,
                unparsable: 0
            }
        );
    }

    #[test]
    fn an_empty_trust_store_refuses_every_certificate() {
        let (verifier, summary) = TrustVerifier::new(vec![], provider(), true).expect("verifier");
        assert_eq!(summary, TrustSummary::default());
        let cert = self_signed(IsCa::NoCa, vec![]);
        let err = verifier
            .verify_client_cert(&cert, &[], UnixTime::now())
            .expect_err("refused");
        assert_eq!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        );
    }

    #[test]
    fn a_trusted_server_only_certificate_is_not_a_client_certificate() {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec!["x".into()]).expect("params");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let server_only = params.self_signed(&key).expect("cert").der().clone();
        let mut params = CertificateParams::new(vec!["x".into()]).expect("params");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let client = params.self_signed(&key).expect("cert").der().clone();
        let (verifier, _) =
            TrustVerifier::new(vec![server_only.clone(), client.clone()], provider(), true)
                .expect("verifier");
        assert_eq!(
            verifier
                .verify_client_cert(&server_only, &[], UnixTime::now())
                .err(),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::InvalidPurpose
            ))
        );
        assert!(verifier
            .verify_client_cert(&client, &[], UnixTime::now())
            .is_ok());
    }

    #[test]
    fn garbage_is_counted_not_trusted() {
        let (verifier, summary) = TrustVerifier::new(
            vec![CertificateDer::from(vec![0x30, 0x00])],
            provider(),
            true,
        )
        .expect("verifier");
        assert_eq!(summary.unparsable, 1);
        assert!(verifier.trusted.is_empty());
    }
}
