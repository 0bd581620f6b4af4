//! `<sslContext><sslContext keyStore=... trustStore=.../></sslContext>` -> [`SslContextConfig`].
//!
//! ActiveMQ reads Java key stores; ferromq reads them too (JKS and JCEKS, `transport::keystore`),
//! besides PKCS#12 stores (what modern Java writes by default) and PEM files. The kind is taken
//! from the file's content when it can be read (magic numbers), else from `keyStoreType`, else
//! from the file extension. Passwords, aliases and integrity are checked when the TLS
//! configuration is built (`broker::preflight` for `check`, the listener for `run`).

use std::path::Path;

use super::Ctx;
use crate::config::diagnostic::Diagnostic;
use crate::config::model::{KeyAlias, KeyMaterial, Listener, Secret, SslContextConfig, StoreKind};
use crate::config::tree::{Attr, Element};

const JKS_MAGIC: [u8; 4] = [0xFE, 0xED, 0xFE, 0xED];
const JCEKS_MAGIC: [u8; 4] = [0xCE, 0xCE, 0xCE, 0xCE];
/// `ferromq:keyAlias`: which private key entry of the key store to serve.
pub(super) const KEY_ALIAS: &str = "keyAlias";

pub(super) fn context(ctx: &mut Ctx<'_>, broker: &Element) -> Option<SslContextConfig> {
    let contexts: Vec<&Element> = ctx
        .items(broker, "sslContext")
        .into_iter()
        .filter(|e| e.name == "sslContext")
        .collect();
    if let Some(extra) = contexts.get(1) {
        ctx.push(Diagnostic::error(
            extra.span.clone(),
            "a second <sslContext>: a broker has one TLS context",
        ));
    }
    let element = contexts.first()?;
    ctx.mark(element);
    let key_file = ctx.ext_attr(element, "keyFile");
    let key_alias = ctx.ext_attr(element, KEY_ALIAS);
    let mut key_store = store(ctx, element, Role::Key, key_file);
    let trust_store = store(ctx, element, Role::Trust, None);
    if let Some(attr) = key_alias {
        alias(ctx, attr, key_store.as_mut());
    }
    Some(SslContextConfig {
        key_store,
        trust_store,
        span: element.span.clone(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Key,
    Trust,
}

impl Role {
    fn attr(self, suffix: &str) -> String {
        match self {
            Role::Key => format!("keyStore{suffix}"),
            Role::Trust => format!("trustStore{suffix}"),
        }
    }
}

fn store(
    ctx: &mut Ctx<'_>,
    element: &Element,
    role: Role,
    key_file_attr: Option<&Attr>,
) -> Option<KeyMaterial> {
    let path_attr = ctx.attr(element, &role.attr(""));
    let password = ctx
        .attr(element, &role.attr("Password"))
        .map(|a| Secret(a.value.clone()));
    let type_attr = ctx.attr(element, &role.attr("Type"));
    let key_password_attr = match role {
        Role::Key => ctx.attr(element, "keyStoreKeyPassword"),
        Role::Trust => None,
    };
    let key_password = key_password_attr.map(|a| Secret(a.value.clone()));
    let Some(path_attr) = path_attr else {
        if let Some(k) = key_file_attr {
            ctx.push(
                Diagnostic::error(k.span.clone(), "ferromq:keyFile without a keyStore").with_hint(
                    "keyStore names the PEM certificate chain, ferromq:keyFile its private key",
                ),
            );
        }
        return None;
    };
    let path = ctx.resource_path(&decode_file_url(path_attr.value.trim()));
    ctx.read_file(&path);
    let content = match crate::transport::read_store_file(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            ctx.push(
                Diagnostic::error(
                    path_attr.value_span.clone(),
                    format!("cannot read {} {}: {e}", role.attr(""), path.display()),
                )
                .with_hint("check the path; relative paths are relative to the configuration file's directory"),
            );
            None
        }
    };
    let kind = store_kind(ctx, &path, content.as_deref(), type_attr, path_attr)?;
    if let (StoreKind::Pem, Some(attr)) = (kind, key_password_attr) {
        ctx.push(
            Diagnostic::warning(
                attr.span.clone(),
                "keyStoreKeyPassword is not used: a PEM private key is not encrypted",
            )
            .with_hint("it opens the private key entry of a JKS or JCEKS keyStore"),
        );
    }
    if let (StoreKind::Pkcs12, Some(attr)) = (kind, key_password_attr) {
        if password.as_ref().map(|p| p.expose()) != Some(attr.value.as_str()) {
            ctx.push(
                Diagnostic::warning(
                    attr.span.clone(),
                    "keyStoreKeyPassword is not used: the private key of a PKCS#12 keyStore is \
                     opened with keyStorePassword",
                )
                .with_hint(
                    "keytool gives a PKCS#12 key the store's password; remove \
                     keyStoreKeyPassword or make it equal to keyStorePassword",
                ),
            );
        }
    }
    let key_file = match (role, kind, key_file_attr) {
        (Role::Key, StoreKind::Pem, Some(attr)) => {
            let key_path = ctx.resource_path(&decode_file_url(attr.value.trim()));
            check_pem_file(ctx, &key_path, attr, "PRIVATE KEY", "a private key");
            Some(key_path)
        }
        (_, _, Some(attr)) => {
            ctx.push(
                Diagnostic::error(
                    attr.span.clone(),
                    "ferromq:keyFile applies to a PEM keyStore only",
                )
                .with_hint("a PKCS#12, JKS or JCEKS store holds its private key itself"),
            );
            None
        }
        _ => None,
    };
    if let (StoreKind::Pem, Some(bytes)) = (kind, content.as_deref()) {
        let text = String::from_utf8_lossy(bytes);
        if !text.contains("CERTIFICATE-----") {
            ctx.push(Diagnostic::error(
                path_attr.value_span.clone(),
                format!("{} holds no PEM certificate", path.display()),
            ));
        }
        if role == Role::Key && key_file.is_none() && !text.contains("PRIVATE KEY-----") {
            ctx.push(
                Diagnostic::error(
                    path_attr.value_span.clone(),
                    format!("{} holds no private key", path.display()),
                )
                .with_hint("append the key to the file, or name it with ferromq:keyFile=\"broker-key.pem\" (declare xmlns:ferromq=\"urn:ferromq\")"),
            );
        }
    }
    Some(KeyMaterial {
        path,
        password,
        kind,
        key_file,
        key_password,
        key_password_span: key_password_attr.map(|a| a.value_span.clone()),
        key_alias: None,
        span: path_attr.value_span.clone(),
    })
}

/// A `file:` URL with its percent-escapes decoded (`file:///x/with%20space/broker.ks` names
/// `/x/with space/broker.ks`), as Spring resolves it; other values are paths, kept as written.
/// An escape that does not decode to UTF-8 leaves the value as written.
fn decode_file_url(value: &str) -> String {
    if !value.starts_with("file:") || !value.contains('%') {
        return value.to_owned();
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = (b == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(decoded) => {
                out.push(decoded);
                i += 3;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| value.to_owned())
}

/// `ferromq:keyAlias` on the key store it picks from (a store with aliases: not PEM).
fn alias(ctx: &mut Ctx<'_>, attr: &Attr, key_store: Option<&mut KeyMaterial>) {
    let name = attr.value.trim();
    let problem = match &key_store {
        None => Some("ferromq:keyAlias without a keyStore"),
        Some(ks) if ks.kind == StoreKind::Pem => {
            Some("ferromq:keyAlias applies to a JKS, JCEKS or PKCS#12 keyStore, not to PEM files")
        }
        Some(_) if name.is_empty() => Some("ferromq:keyAlias is empty"),
        Some(_) => None,
    };
    if let Some(problem) = problem {
        ctx.push(Diagnostic::error(attr.value_span.clone(), problem).with_hint(
            "ferromq:keyAlias names the private key entry of the keyStore to serve, as `keytool -list` shows it",
        ));
        return;
    }
    if let Some(ks) = key_store {
        ks.key_alias = Some(KeyAlias {
            name: name.to_owned(),
            span: attr.value_span.clone(),
        });
    }
}

fn check_pem_file(ctx: &mut Ctx<'_>, path: &Path, attr: &Attr, marker: &str, what: &str) {
    ctx.read_file(path);
    match crate::transport::read_store_file(path) {
        Ok(bytes) if String::from_utf8_lossy(&bytes).contains(&format!("{marker}-----")) => {}
        Ok(_) => ctx.push(Diagnostic::error(
            attr.value_span.clone(),
            format!("{} holds no PEM {what}", path.display()),
        )),
        Err(e) => ctx.push(Diagnostic::error(
            attr.value_span.clone(),
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}

fn kind_name(kind: StoreKind) -> &'static str {
    match kind {
        StoreKind::Pem => "PEM",
        StoreKind::Pkcs12 => "PKCS#12",
        StoreKind::Jks => "JKS",
        StoreKind::Jceks => "JCEKS",
    }
}

fn kind_from_content(bytes: &[u8]) -> Option<StoreKind> {
    if bytes.starts_with(&JKS_MAGIC) {
        return Some(StoreKind::Jks);
    }
    if bytes.starts_with(&JCEKS_MAGIC) {
        return Some(StoreKind::Jceks);
    }
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
    let rest = bytes.get(start..)?;
    if rest.first() == Some(&0x30) {
        // DER SEQUENCE: the outer structure of a PKCS#12 file.
        Some(StoreKind::Pkcs12)
    } else if rest.windows(10).any(|w| w == b"-----BEGIN") {
        // PEM text, possibly after explanatory lines (`openssl pkcs12` writes "Bag Attributes").
        Some(StoreKind::Pem)
    } else {
        None
    }
}

fn kind_from_type(value: &str) -> Option<StoreKind> {
    match value.trim().to_ascii_lowercase().as_str() {
        "jks" => Some(StoreKind::Jks),
        "jceks" => Some(StoreKind::Jceks),
        "pkcs12" | "p12" | "pfx" => Some(StoreKind::Pkcs12),
        "pem" => Some(StoreKind::Pem),
        _ => None,
    }
}

fn kind_from_extension(path: &Path) -> Option<StoreKind> {
    let ext = path.extension()?.to_string_lossy().to_ascii_lowercase();
    match ext.as_str() {
        "jks" | "ks" | "ts" | "keystore" | "truststore" => Some(StoreKind::Jks),
        "jceks" => Some(StoreKind::Jceks),
        "p12" | "pfx" | "pkcs12" => Some(StoreKind::Pkcs12),
        "pem" | "crt" | "cer" | "key" => Some(StoreKind::Pem),
        _ => None,
    }
}

fn store_kind(
    ctx: &mut Ctx<'_>,
    path: &Path,
    content: Option<&[u8]>,
    type_attr: Option<&Attr>,
    path_attr: &Attr,
) -> Option<StoreKind> {
    let declared = match type_attr {
        Some(a) => match kind_from_type(&a.value) {
            Some(k) => Some(k),
            None => {
                ctx.value_error(
                    a,
                    format!("unknown store type `{}`", a.value),
                    "use jks, jceks, pkcs12 or pem",
                );
                None
            }
        },
        None => None,
    };
    let detected = content.and_then(kind_from_content);
    if let (Some(declared), Some(detected), Some(a)) = (declared, detected, type_attr) {
        if declared != detected {
            ctx.push(Diagnostic::warning(
                a.value_span.clone(),
                format!(
                    "the type says {} but {} is {}; ferromq reads it as {}",
                    kind_name(declared),
                    path.display(),
                    kind_name(detected),
                    kind_name(detected)
                ),
            ));
        }
    }
    if let Some(kind) = detected.or(declared).or_else(|| kind_from_extension(path)) {
        return Some(kind);
    }
    if content.is_some() {
        ctx.push(
            Diagnostic::error(
                path_attr.value_span.clone(),
                format!("{} is neither PEM, PKCS#12, JKS nor JCEKS", path.display()),
            )
            .with_hint("ferromq reads PEM (-----BEGIN CERTIFICATE-----) files, PKCS#12 (.p12) stores and Java JKS/JCEKS stores"),
        );
    }
    None
}

/// TLS listeners need a key store; client authentication needs a trust store.
pub(super) fn check_listeners(
    ctx: &mut Ctx<'_>,
    listeners: &[Listener],
    ssl: Option<&SslContextConfig>,
) {
    for listener in listeners.iter().filter(|l| l.scheme.is_tls()) {
        if ssl.and_then(|s| s.key_store.as_ref()).is_none() {
            ctx.push(
                Diagnostic::error(
                    listener.span.clone(),
                    format!(
                        "TLS connector `{}` needs a server certificate, but there is no <sslContext keyStore=...>",
                        listener.name
                    ),
                )
                .with_hint("add <sslContext><sslContext keyStore=\"broker.p12\" keyStorePassword=\"...\"/></sslContext> inside <broker> (see examples/tls.xml)"),
            );
        }
        let wants_clients = listener.options.need_client_auth || listener.options.want_client_auth;
        if wants_clients && ssl.and_then(|s| s.trust_store.as_ref()).is_none() {
            ctx.push(
                Diagnostic::error(
                    listener.span.clone(),
                    format!(
                        "connector `{}` asks for client certificates but <sslContext> has no trustStore to verify them",
                        listener.name
                    ),
                )
                .with_hint("set trustStore to a JKS, JCEKS or PKCS#12 store, or a PEM file, of the CA certificates that sign client certificates"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_are_percent_decoded_and_paths_are_not() {
        assert_eq!(
            decode_file_url("file:///x/with%20space/broker.ks"),
            "file:///x/with space/broker.ks"
        );
        assert_eq!(decode_file_url("file:caf%C3%A9.ks"), "file:café.ks");
        assert_eq!(decode_file_url("conf/100%25.ks"), "conf/100%25.ks");
        assert_eq!(decode_file_url("file:bad%zz.ks"), "file:bad%zz.ks");
        assert_eq!(decode_file_url("file:half%e9.ks"), "file:half%e9.ks");
    }

    #[test]
    fn kinds_from_content_type_and_extension() {
        assert_eq!(
            kind_from_content(&[0xFE, 0xED, 0xFE, 0xED, 0, 0]),
            Some(StoreKind::Jks)
        );
        assert_eq!(
            kind_from_content(b"\n-----BEGIN CERTIFICATE-----"),
            Some(StoreKind::Pem)
        );
        assert_eq!(
            kind_from_content(&[0x30, 0x82, 0x01]),
            Some(StoreKind::Pkcs12)
        );
        assert_eq!(kind_from_content(b"hello"), None);
        assert_eq!(kind_from_type("PKCS12"), Some(StoreKind::Pkcs12));
        assert_eq!(kind_from_type("bks"), None);
        assert_eq!(kind_from_type("JCEKS"), Some(StoreKind::Jceks));
        assert_eq!(
            kind_from_content(&[0xCE, 0xCE, 0xCE, 0xCE, 0, 0]),
            Some(StoreKind::Jceks)
        );
        assert_eq!(
            kind_from_extension(Path::new("a/broker.ks")),
            Some(StoreKind::Jks)
        );
        assert_eq!(
            kind_from_extension(Path::new("x.pem")),
            Some(StoreKind::Pem)
        );
    }
}
