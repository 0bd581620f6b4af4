//! What `run` builds before it binds a socket or opens the store, done without either, so that
//! `ferromq check` passing means `ferromq run` starts: each TLS connector's rustls configuration
//! (certificate and key read, the key matched against the certificate), the security snapshot
//! (authentication plugins with their login.config modules and options, authorization), the
//! store directory checked by path and permission (not created, not opened; a `..` judged as
//! the kernel resolves it while `run` makes the directory: `store::directory`), for a running
//! broker holding its lock (looked up, never taken: `store::held_by_another`), for its files
//! (regular, writable, a link `run` can follow), its database file by its first bytes and its
//! header (`store::database_file_whole`) and the free space `run` needs to start there, and
//! each connector's host resolved as `run` resolves it. `run` calls the same [`preflight`]
//! first, so both fail the same way.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

use crate::broker::server::listener_set::{load_tls, ConnectorTlsError};
use crate::config::{
    Authentication, Config, ConsoleConfig, Diagnostic, Listener, Persistence, Span,
};
use crate::security::Security;
use crate::store::directory::Planned;

/// Every problem `run` would hit before serving, as located errors (empty when it would start).
pub fn preflight(config: &Config) -> Vec<Diagnostic> {
    let mut found: Vec<Diagnostic> = config
        .listeners
        .iter()
        .filter_map(|l| resolve(l).err())
        .collect();
    if let Some(console) = &config.console {
        if let Err(problem) = resolve_console(console) {
            found.push(problem);
        }
        // A console of the file was compared with the connectors when compiled; one placed by
        // `--console` is compared here, so that `check --console` refuses what `run` could
        // not bind.
        if console.source == ConsoleConfig::COMMAND_LINE {
            found.extend(crate::config::compile::console_clash(
                &config.listeners,
                console,
            ));
        }
        if console.users.is_empty() {
            found.push(console_without_users(console));
        }
    }
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
        // The store's files are looked at by the path `run` opens them by.
        let usable = store_directory_usable(directory);
        let opened = usable.as_ref().map_or(directory, |planned| &planned.path);
        if let Err(problem) = &usable {
            found.push(
                Diagnostic::error(config.persistence_span.clone(), problem.clone()).with_hint(
                    "point the store (kahaDB directory or the broker's dataDirectory) at a \
                     directory the broker may create and write",
                ),
            );
        } else if let Some(holder) = crate::store::held_by_another(opened) {
            // Looked up without taking the lock (see `held_by_another`): a broker starting
            // while `check` runs is never locked out by it.
            found.push(
                Diagnostic::error(
                    config.persistence_span.clone(),
                    format!(
                        "the store directory {} is already in use by another broker{}",
                        directory.display(),
                        holder
                            .map(|pid| format!(" (pid {pid})"))
                            .unwrap_or_default()
                    ),
                )
                .with_hint(
                    "stop that broker first, or give this one its own store: another kahaDB \
                     directory or dataDirectory (`-D activemq.data=DIR` where the file uses \
                     ${activemq.data})",
                ),
            );
        } else if let Err(problem) = crate::store::store_files_writable(opened) {
            found.push(
                Diagnostic::error(config.persistence_span.clone(), problem).with_hint(
                    "give the store's files back to the user the broker runs as (chown), or \
                     move them away if they are not a store's",
                ),
            );
        } else if let Err(problem) = crate::store::database_file_usable(opened) {
            // Read from its first bytes only: the store is never opened by `check`.
            found.push(
                Diagnostic::error(config.persistence_span.clone(), problem).with_hint(format!(
                    "move that file away (it is not a ferromq store; keep it if it is someone \
                     else's data): the broker then starts with an empty store in {}, or point \
                     the store at another directory",
                    directory.display()
                )),
            );
        } else if let Err(problem) = crate::store::database_file_whole(opened) {
            // From its header and length only: the store is never opened by `check`.
            found.push(
                Diagnostic::error(config.persistence_span.clone(), problem).with_hint(format!(
                    "put a good copy of the file back (finish the copy, or restore a \
                     backup); or, to give up what it holds, move it away: the broker then \
                     starts with an empty store in {}",
                    directory.display()
                )),
            );
        } else if let Some(problem) = usable.as_ref().ok().and_then(no_room_to_start) {
            found.push(
                Diagnostic::error(config.persistence_span.clone(), problem).with_hint(format!(
                    "free space on that filesystem (`df -h {}` shows it), or point the store \
                     at another one",
                    usable
                        .as_ref()
                        .map_or(directory, |planned| &planned.existing)
                        .display()
                )),
            );
        }
    }
    found
}

/// Bind every connector and release it at once (`check --bind`): the address is free and the
/// broker may listen on it now. A broker started later can still lose the race for a port.
/// A connector whose host does not resolve was already reported by [`preflight`].
pub async fn try_bind(config: &Config) -> Vec<Diagnostic> {
    let mut found = Vec::new();
    for listener in &config.listeners {
        let Ok(candidates) = resolve(listener) else {
            continue;
        };
        let mut last_error = None;
        for addr in candidates {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(socket) => {
                    drop(socket);
                    last_error = None;
                    break;
                }
                Err(e) => last_error = Some((addr, e)),
            }
        }
        if let Some((addr, e)) = last_error {
            // The diagnostic carries the connector's location: the message does not repeat it.
            found.push(
                Diagnostic::error(
                    listener.span.clone(),
                    format!(
                        "cannot listen on {addr} for connector `{}` ({}): {e}",
                        listener.name, listener.uri
                    ),
                )
                .with_hint(bind_hint(&e, addr)),
            );
        }
    }
    if let Some(console) = &config.console {
        if let Ok(candidates) = resolve_console(console) {
            let mut last_error = None;
            for addr in candidates {
                match tokio::net::TcpListener::bind(addr).await {
                    Ok(socket) => {
                        drop(socket);
                        last_error = None;
                        break;
                    }
                    Err(e) => last_error = Some((addr, e)),
                }
            }
            if let Some((addr, e)) = last_error {
                found.push(
                    Diagnostic::error(
                        console.span.clone(),
                        format!("cannot listen on {addr} for the web console: {e}"),
                    )
                    .with_hint(bind_hint(&e, addr)),
                );
            }
        }
    }
    found
}

/// The console's host and port resolved as the console's bind resolves them; an error at
/// the console's bean or element when the host does not resolve.
fn resolve_console(console: &ConsoleConfig) -> Result<Vec<SocketAddr>, Diagnostic> {
    let problem = |message: String| {
        Diagnostic::error(console.span.clone(), message).with_hint(
            "the console's host must resolve on this machine: use an address of this machine, \
             `0.0.0.0` (every interface) or a name from /etc/hosts or DNS",
        )
    };
    match (console.host.as_str(), console.port).to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                Err(problem(format!(
                    "host `{}` of the web console resolves to no address",
                    console.host
                )))
            } else {
                Ok(addrs)
            }
        }
        Err(e) => Err(problem(format!(
            "host `{}` of the web console does not resolve: {e}",
            console.host
        ))),
    }
}

/// A console nobody can log in to: the broker refuses to serve it (it is never open to
/// everyone), and says so before it opens the store, with the file to write.
fn console_without_users(console: &ConsoleConfig) -> Diagnostic {
    let message = format!(
        "the web console at {} (from {}) has no users: nobody could log in, and it is never open \
         to everyone",
        console.address(),
        console.source
    );
    let hint = match &console.realm {
        Some(realm) => format!(
            "add a user to the realm file {}: a line `admin: PASSWORD, admin` (role admin acts, \
             role user reads; docs/console.md, \"Users and roles\")",
            realm.display()
        ),
        None => "name a realm file: create jetty-realm.properties beside activemq.xml with a \
                 line `admin: PASSWORD, admin` (role admin acts, role user reads) and add \
                 <ferromq:console realm=\"jetty-realm.properties\"/> inside <broker> \
                 (xmlns:ferromq=\"urn:ferromq\"), or import a jetty.xml; on the built-in \
                 default configuration, `ferromq init` first writes conf/activemq.xml to edit \
                 (docs/console.md)"
            .to_owned(),
    };
    Diagnostic::error(console.span.clone(), message).with_hint(hint)
}

/// The host and port `run` will bind, resolved the way `run` resolves them (the system
/// resolver: /etc/hosts, then DNS); an error at the connector when the host does not resolve.
fn resolve(listener: &Listener) -> Result<Vec<SocketAddr>, Diagnostic> {
    let problem = |message: String| {
        Diagnostic::error(listener.span.clone(), message).with_hint(
            "the host of a connector URI must resolve on this machine: use an address of \
             this machine, `0.0.0.0` (every interface) or a name from /etc/hosts or DNS",
        )
    };
    match (listener.host.as_str(), listener.port).to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                Err(problem(format!(
                    "host `{}` of connector `{}` ({}) resolves to no address",
                    listener.host, listener.name, listener.uri
                )))
            } else {
                Ok(addrs)
            }
        }
        Err(e) => Err(problem(format!(
            "host `{}` of connector `{}` ({}) does not resolve: {e}",
            listener.host, listener.name, listener.uri
        ))),
    }
}

/// What to do about a failed bind, by its cause.
fn bind_hint(error: &std::io::Error, addr: SocketAddr) -> String {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::AddrInUse => format!(
            "something already listens on {addr}: stop it (`ss -ltnp 'sport = :{}'` shows \
             what) or choose another port",
            addr.port()
        ),
        ErrorKind::AddrNotAvailable => format!(
            "{} is not an address of this machine (`ip -brief address` lists them): use one \
             of those, or `0.0.0.0` for every interface",
            addr.ip()
        ),
        ErrorKind::PermissionDenied if addr.port() < 1024 => format!(
            "ports below 1024 need root or CAP_NET_BIND_SERVICE; port {} is one of them",
            addr.port()
        ),
        _ => "check the connector's host and port".to_owned(),
    }
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

/// Whether the store directory exists as a writable directory or could be created, judged
/// as the kernel resolves the path while `run` makes it (`store::directory::plan`: a `..`
/// after a directory not made yet steps back to where it would be made); `Ok` with the walk
/// (its `path` is the one `run` opens the store by). The deepest existing directory must be writable, and a directory made
/// there (and removed at once) must be made: `access(2)` says yes to root on a filesystem
/// that refuses every `mkdir` (`/proc`, `/sys`), where `run` would then fail. Nothing is left
/// behind.
fn store_directory_usable(directory: &Path) -> Result<Planned, String> {
    use crate::store::directory::{plan, Blocked};
    let shown = directory.display();
    let planned = plan(directory).map_err(|blocked| match blocked {
        Blocked::NotADirectory { last: true, .. } => {
            format!("the store directory {shown} exists but is not a directory")
        }
        Blocked::NotADirectory { path, last: false } => format!(
            "the store directory {shown} cannot be created: {} is a file, not a directory",
            path.display()
        ),
        Blocked::DanglingLink { path, target } => format!(
            "the store directory {shown} cannot be created: {} is a link to {}, which does not \
             exist",
            path.display(),
            target.display()
        ),
        Blocked::Inspect { path, error } => format!("cannot inspect {}: {error}", path.display()),
    })?;
    let at = &planned.existing;
    match writable(at).and_then(|()| directory_can_be_made_in(at)) {
        Ok(()) => Ok(planned),
        Err(e) if !planned.to_make => {
            Err(format!("the store directory {shown} is not writable: {e}"))
        }
        // A relative path whose every component is missing: it lives in the working directory.
        Err(e) if at == Path::new(".") && directory.is_relative() => Err(format!(
            "the store directory {shown} cannot be created in the working directory: {e}"
        )),
        Err(e) => Err(format!(
            "the store directory {shown} cannot be created: {} is not writable: {e}",
            at.display()
        )),
    }
}

/// Why `run` could not start for want of space where the store is made, if so: it writes its
/// pid in the lock file (a block), a new database's first pages (a second block: measured on
/// tmpfs, 4 KiB free fails and 8 KiB starts), and makes the missing directories and files (an
/// inode each). A lower bound, so that `check` never refuses a store `run` would open: the
/// free space a directory takes depends on the filesystem and is not counted, nor what a
/// store that is already large needs at open. Root may use the filesystem's reserved blocks,
/// as `run` as root does.
fn no_room_to_start(planned: &Planned) -> Option<String> {
    let vfs = rustix::fs::statvfs(&planned.existing).ok()?;
    let root = rustix::process::geteuid().is_root();
    let (blocks, inodes) = if root {
        (vfs.f_bfree, vfs.f_ffree)
    } else {
        (vfs.f_bavail, vfs.f_favail)
    };
    let block = vfs.f_frsize.max(1);
    let free_bytes = blocks.saturating_mul(block);
    let exists = |name: &str| {
        std::fs::metadata(planned.path.join(name)).is_ok_and(|m| m.is_file() && m.len() > 0)
    };
    let new_database = !exists(crate::store::DATABASE_FILE_NAME);
    let needed_bytes = block * if new_database { 2 } else { 1 };
    let new_files = u64::from(!exists(crate::store::LOCK_FILE_NAME)) + u64::from(new_database);
    // `f_files` of 0: the filesystem does not count inodes (btrfs), so none can be missing.
    let needed_inodes = new_files + u64::from(planned.to_make);
    let shown = planned.existing.display();
    if free_bytes < needed_bytes {
        Some(format!(
            "the filesystem of {shown} has {free_bytes} bytes free for this user: the broker \
             needs at least {needed_bytes} there to write its pid in the store's lock file{} \
             (`run` would fail with \"No space left on device\")",
            if new_database {
                " and make its database"
            } else {
                ""
            }
        ))
    } else if vfs.f_files > 0 && inodes < needed_inodes {
        Some(format!(
            "the filesystem of {shown} has {inodes} inodes free for this user: the broker \
             needs {needed_inodes} there for the store's directory and files (`run` would \
             fail with \"No space left on device\")"
        ))
    } else {
        None
    }
}

/// Make a directory in `parent` and remove it: the store makes its directory and files there.
fn directory_can_be_made_in(parent: &Path) -> Result<(), String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let probe = parent.join(format!(".ferromq-check-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&probe).map_err(|e| format!("a directory cannot be made there ({e})"))?;
    // Ours, just made and empty: a failure to remove it is only reported.
    if let Err(e) = std::fs::remove_dir(&probe) {
        tracing::warn!("could not remove {}: {e}", probe.display());
    }
    Ok(())
}

/// The kernel's own answer (`access(2)` with W_OK|X_OK), which accounts for root and ACLs.
fn writable(path: &Path) -> Result<(), String> {
    rustix::fs::access(
        path,
        rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
    )
    .map_err(|e| std::io::Error::from(e).to_string())
}
