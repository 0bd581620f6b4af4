//! What `run` builds before it binds a socket or opens the store, done without either, so that
//! `ferromq check` passing means `ferromq run` starts: each TLS connector's rustls configuration
//! (certificate and key read, the key matched against the certificate), the security snapshot
//! (authentication plugins with their login.config modules and options, authorization), and the
//! store directory checked by path and permission (not created, not opened: a running broker
//! may hold its lock). `run` calls the same [`preflight`] first, so both fail the same way.

use std::path::Path;

use crate::broker::server::listener_set::{load_tls, ConnectorTlsError};
use crate::config::{Authentication, Config, Diagnostic, Persistence, Span};
use crate::security::Security;

/// Every problem `run` would hit before serving, as located errors (empty when it would start).
pub fn preflight(config: &Config) -> Vec<Diagnostic> {
    let mut found = Vec::new();
    for listener in config.listeners.iter().filter(|l| l.scheme.is_tls()) {
        if let Err(e) = load_tls(config, listener) {
            // At the store attribute the error is about (keyStore, trustStore, keyAlias) when
            // it is about one, else at the connector.
            let tls = e.downcast_ref::<ConnectorTlsError>().map(|c| &c.tls);
            let span = tls
                .and_then(|t| t.to_diagnostic(config.ssl.as_ref()).span)
                .unwrap_or_else(|| listener.span.clone());
            let hint = tls.map_or("add an <sslContext> with a keyStore to the broker", |t| {
                t.hint()
            });
            found.push(Diagnostic::error(span, format!("{e:#}")).with_hint(hint));
        }
    }
    if let Err(e) = Security::from_config(config) {
        found.push(
            Diagnostic::error(
                security_span(config),
                format!("cannot set up security: {e}"),
            )
            .with_hint("fix the authentication plugin, its login.config modules and their options"),
        );
    }
    if let (Persistence::Durable { directory, .. }, true) =
        (&config.persistence, config.broker.persistent)
    {
        if let Err(problem) = store_directory_usable(directory) {
            found.push(
                Diagnostic::error(config.persistence_span.clone(), problem).with_hint(
                    "point the store (kahaDB directory or the broker's dataDirectory) at a \
                     directory the broker may create and write",
                ),
            );
        }
    }
    found
}

/// Bind every connector and release it at once (`check --bind`): the address is free and the
/// broker may listen on it now. A broker started later can still lose the race for a port.
pub async fn try_bind(config: &Config) -> Vec<Diagnostic> {
    let mut found = Vec::new();
    for listener in &config.listeners {
        match crate::broker::server::listener::bind(listener).await {
            Ok((socket, _)) => drop(socket),
            Err(e) => found.push(
                Diagnostic::error(listener.span.clone(), format!("{e:#}"))
                    .with_hint("stop what listens there or choose another port"),
            ),
        }
    }
    found
}

/// `check --online`: bind to every LDAP server as its connection user and load each LDAP
/// authorization map once (nothing remote is contacted without `--online`).
pub async fn try_online(config: &Config) -> Vec<Diagnostic> {
    crate::security::ldap::online::check(config).await
}

/// Where security is configured: the authentication plugin, else the first authorization entry,
/// else the main file.
fn security_span(config: &Config) -> Option<Span> {
    match &config.authentication {
        Authentication::Simple(simple) => return Some(simple.span.clone()),
        Authentication::Jaas(jaas) | Authentication::JaasCertificate(jaas) => {
            return Some(jaas.span.clone())
        }
        Authentication::JaasDual { password, .. } => return Some(password.span.clone()),
        Authentication::None => {}
    }
    config
        .authorization
        .as_ref()
        .and_then(|a| a.entries.first())
        .map(|e| e.span.clone())
}

/// Whether the store directory exists as a writable directory or could be created: the
/// nearest existing ancestor must be a writable directory. Nothing is created.
fn store_directory_usable(directory: &Path) -> Result<(), String> {
    let shown = directory.display();
    let mut candidate = Some(directory);
    while let Some(path) = candidate {
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => {
                return match writable(path) {
                    Ok(()) => Ok(()),
                    Err(e) if path == directory => {
                        Err(format!("the store directory {shown} is not writable: {e}"))
                    }
                    Err(e) => Err(format!(
                        "the store directory {shown} cannot be created: {} is not writable: {e}",
                        path.display()
                    )),
                };
            }
            Ok(_) if path == directory => {
                return Err(format!(
                    "the store directory {shown} exists but is not a directory"
                ))
            }
            Ok(_) => {
                return Err(format!(
                    "the store directory {shown} cannot be created: {} is a file, not a directory",
                    path.display()
                ))
            }
            // Missing, or under a file (ENOTDIR): look at the parent.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) => {}
            Err(e) => return Err(format!("cannot inspect {}: {e}", path.display())),
        }
        candidate = path.parent().filter(|p| !p.as_os_str().is_empty());
    }
    // A relative path whose every component is missing: it lives in the working directory.
    writable(Path::new(".")).map_err(|e| {
        format!("the store directory {shown} cannot be created in the working directory: {e}")
    })
}

/// The kernel's own answer (`access(2)` with W_OK|X_OK), which accounts for root and ACLs.
fn writable(path: &Path) -> Result<(), String> {
    rustix::fs::access(
        path,
        rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
    )
    .map_err(|e| std::io::Error::from(e).to_string())
}
