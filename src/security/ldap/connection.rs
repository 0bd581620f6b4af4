//! One LDAP server: a shared, lazily (re)opened search connection bound as the connection
//! user, and one-shot connections for user binds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ldap3::asn1::StructureTag;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, ResultEntry, Scope};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::config::ldap::LdapConnection;

/// LDAP result code `invalidCredentials` (RFC 4511 section 4.1.9).
const INVALID_CREDENTIALS: u32 = 49;
/// LDAP result code `referral` (RFC 4511 section 4.1.10).
const REFERRAL: u32 = 10;
/// LDAP result code `noSuchObject`: the search base does not exist.
const NO_SUCH_OBJECT: u32 = 32;

/// Why an LDAP exchange did not give an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LdapError {
    /// The server could not be reached, timed out, broke the connection, refused the
    /// connection user, or answered an error: nothing is known about the user.
    Unavailable(String),
}

impl std::fmt::Display for LdapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LdapError::Unavailable(why) => f.write_str(why),
        }
    }
}

/// A search result entry: its DN and attributes (names lower-cased: LDAP attribute names are
/// case-insensitive, as JNDI's `Attributes.get`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub dn: String,
    pub attrs: HashMap<String, Vec<String>>,
}

impl Entry {
    pub fn values(&self, attribute: &str) -> &[String] {
        self.attrs
            .get(&attribute.to_ascii_lowercase())
            .map_or(&[], Vec::as_slice)
    }
}

/// What a user bind said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindResult {
    Accepted,
    /// `invalidCredentials` or another refusal code (carried for the log).
    Refused(u32),
}

/// One configured LDAP server.
pub struct LdapServer {
    settings: LdapConnection,
    tls: Option<Arc<ClientConfig>>,
    /// The shared search connection (a handle: ldap3 multiplexes operations over it).
    shared: parking_lot::Mutex<Option<Ldap>>,
}

impl std::fmt::Debug for LdapServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapServer")
            .field("url", &self.settings.url)
            .finish_non_exhaustive()
    }
}

impl LdapServer {
    /// Reads `trustedCertificates` now (errors name the file); connects nothing.
    pub fn new(settings: &LdapConnection) -> Result<LdapServer, String> {
        let tls = match &settings.trusted_certificates {
            Some(path) => Some(Arc::new(client_config(path)?)),
            None => None,
        };
        Ok(LdapServer {
            settings: settings.clone(),
            tls,
            shared: parking_lot::Mutex::new(None),
        })
    }

    pub fn url(&self) -> &str {
        &self.settings.url
    }

    fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.settings.read_timeout_ms)
    }

    /// A new connection (not bound).
    async fn open(&self) -> Result<Ldap, LdapError> {
        let connect_timeout = Duration::from_millis(self.settings.connect_timeout_ms);
        let mut conn_settings = LdapConnSettings::new()
            .set_conn_timeout(connect_timeout)
            .set_starttls(self.settings.start_tls);
        if let Some(config) = &self.tls {
            conn_settings = conn_settings.set_config(config.clone());
        }
        let url = self.settings.dial_url();
        // The TCP connect has its own limit; TLS and StartTLS handshakes are bounded here.
        let opened = tokio::time::timeout(
            connect_timeout + self.read_timeout(),
            LdapConnAsync::with_settings(conn_settings, &url),
        )
        .await;
        let (conn, ldap) = match opened {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err(unavailable(format!("cannot connect to {url}: {e}"))),
            Err(_) => {
                return Err(unavailable(format!(
                    "cannot connect to {url}: no answer within {} ms",
                    (connect_timeout + self.read_timeout()).as_millis()
                )))
            }
        };
        let server = url.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(server = %server, error = %e, "LDAP connection ended");
            }
        });
        Ok(ldap)
    }

    /// A new connection bound as the connection user (or anonymous with `authentication=none`
    /// or no user).
    pub async fn open_bound(&self) -> Result<Ldap, LdapError> {
        let mut ldap = self.open().await?;
        if let (true, Some(user)) = (self.settings.bind, &self.settings.username) {
            let password = self.settings.password.as_ref().map_or("", |p| p.expose());
            let result = ldap
                .with_timeout(self.read_timeout())
                .simple_bind(user, password)
                .await
                .map_err(|e| unavailable(format!("binding as {user} failed: {e}")))?;
            if result.rc != 0 {
                return Err(unavailable(format!(
                    "{} refused the connection user {user}: result code {} {}",
                    self.settings.url, result.rc, result.text
                )));
            }
        }
        Ok(ldap)
    }

    /// The shared search connection, opened (and bound) if there is none or it broke. The
    /// lock is not held while connecting: during an outage concurrent CONNECTs each wait for
    /// their own attempt (bounded by the timeouts) instead of queueing behind one another.
    /// Returns the connection and whether it was reused (opened by an earlier operation).
    async fn shared(&self, fresh: bool) -> Result<(Ldap, bool), LdapError> {
        if !fresh {
            if let Some(ldap) = self.shared.lock().as_mut() {
                if !ldap.is_closed() {
                    return Ok((ldap.clone(), true));
                }
            }
        }
        let ldap = self.open_bound().await?;
        *self.shared.lock() = Some(ldap.clone());
        Ok((ldap, false))
    }

    /// Search on the shared connection; one retry on a new connection when a reused shared
    /// connection turns out to be closed (the server restarted, a firewall dropped it). A
    /// search that timed out on a live connection is not retried: the server is slow, and a
    /// new connection per waiting CONNECT would double the wait and flood the server with
    /// connections when it resumes. A missing base gives no entries.
    pub async fn search(
        &self,
        base: &str,
        subtree: bool,
        filter: &str,
        attrs: &[&str],
    ) -> Result<Vec<Entry>, LdapError> {
        let (mut ldap, reused) = self.shared(false).await?;
        match self
            .search_on(&mut ldap, base, subtree, filter, attrs)
            .await
        {
            Ok(entries) => Ok(entries),
            Err(_) if reused && ldap.is_closed() => {
                let (mut ldap, _) = self.shared(true).await?;
                self.search_on(&mut ldap, base, subtree, filter, attrs)
                    .await
            }
            Err(e) => Err(e),
        }
    }

    /// Search on a given connection.
    pub async fn search_on(
        &self,
        ldap: &mut Ldap,
        base: &str,
        subtree: bool,
        filter: &str,
        attrs: &[&str],
    ) -> Result<Vec<Entry>, LdapError> {
        let scope = if subtree {
            Scope::Subtree
        } else {
            Scope::OneLevel
        };
        // "1.1": no attributes (RFC 4511 section 4.5.1.8), when none is wanted.
        let attrs: Vec<&str> = if attrs.is_empty() {
            vec!["1.1"]
        } else {
            attrs.to_vec()
        };
        let result = ldap
            .with_timeout(self.read_timeout())
            .search(base, scope, filter, attrs)
            .await
            .map_err(|e| unavailable(format!("search under `{base}` failed: {e}")))?;
        let ldap3::SearchResult(entries, status) = result;
        match status.rc {
            // 10 (referral): the rest is on another server, which is not followed (as
            // `referral=ignore`); what this server returned stands.
            0 | REFERRAL => Ok(entries.into_iter().filter_map(entry_of).collect()),
            NO_SUCH_OBJECT => Ok(Vec::new()),
            rc => Err(unavailable(format!(
                "search under `{base}` with `{filter}` failed: result code {rc} {}",
                status.text
            ))),
        }
    }

    /// Read one entry's attributes (a base-scope search), on the shared connection.
    pub async fn read_entry(&self, dn: &str, attrs: &[&str]) -> Result<Option<Entry>, LdapError> {
        let mut last = None;
        for fresh in [false, true] {
            let (mut ldap, reused) = self.shared(fresh).await?;
            let read = ldap
                .with_timeout(self.read_timeout())
                .search(dn, Scope::Base, "(objectClass=*)", attrs.to_vec())
                .await;
            match read {
                Ok(ldap3::SearchResult(entries, status)) => {
                    return match status.rc {
                        0 => Ok(entries.into_iter().find_map(entry_of)),
                        NO_SUCH_OBJECT => Ok(None),
                        rc => Err(unavailable(format!(
                            "reading `{dn}` failed: result code {rc} {}",
                            status.text
                        ))),
                    }
                }
                Err(e) => {
                    last = Some(unavailable(format!("reading `{dn}` failed: {e}")));
                    // As in `search`: only a reused connection found closed is worth a retry.
                    if !(reused && ldap.is_closed()) {
                        break;
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| unavailable("read failed".to_owned())))
    }

    /// Bind as `dn` with `password` on a connection of its own, closed afterwards. The
    /// caller has refused an empty password already (an empty simple bind is anonymous).
    pub async fn bind_user(&self, dn: &str, password: &str) -> Result<BindResult, LdapError> {
        let mut ldap = self.open().await?;
        let result = ldap
            .with_timeout(self.read_timeout())
            .simple_bind(dn, password)
            .await
            .map_err(|e| unavailable(format!("binding as the user failed: {e}")));
        // Best effort: the server closes the connection after an unbind anyway.
        let _ = ldap.with_timeout(self.read_timeout()).unbind().await;
        let result = result?;
        Ok(match result.rc {
            0 => BindResult::Accepted,
            rc => BindResult::Refused(rc),
        })
    }

    /// Is `rc` the code of a wrong password (rather than a server problem)?
    pub fn is_bad_password(rc: u32) -> bool {
        rc == INVALID_CREDENTIALS
    }
}

fn unavailable(why: String) -> LdapError {
    LdapError::Unavailable(why)
}

/// A `SearchResultEntry` (RFC 4511 section 4.5.2, application tag 4) as DN and attributes;
/// `None` for references and malformed entries (read without panicking, unlike
/// `SearchEntry::construct`).
fn entry_of(entry: ResultEntry) -> Option<Entry> {
    let mut parts = entry.0.match_id(4)?.expect_constructed()?.into_iter();
    let dn = String::from_utf8(parts.next()?.expect_primitive()?).ok()?;
    let mut attrs: HashMap<String, Vec<String>> = HashMap::new();
    for attribute in parts.next()?.expect_constructed()? {
        let mut attribute = attribute.expect_constructed()?.into_iter();
        let name = String::from_utf8(attribute.next()?.expect_primitive()?).ok()?;
        let values = attribute
            .next()?
            .expect_constructed()?
            .into_iter()
            .filter_map(StructureTag::expect_primitive)
            .filter_map(|v| String::from_utf8(v).ok());
        attrs
            .entry(name.to_ascii_lowercase())
            .or_default()
            .extend(values);
    }
    Some(Entry { dn, attrs })
}

/// TLS client settings trusting the CA certificates of a PEM file.
fn client_config(path: &std::path::Path) -> Result<ClientConfig, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("trustedCertificates {}: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| format!("trustedCertificates {}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("trustedCertificates {}: {e}", path.display()))?;
        count += 1;
    }
    if count == 0 {
        return Err(format!(
            "trustedCertificates {}: no PEM certificate in the file",
            path.display()
        ));
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS settings: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
