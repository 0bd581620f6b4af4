//! The files JAAS login modules read (users.properties, groups.properties, certificate DN maps),
//! parsed into lookup tables, and re-read on change when the module says `reload=true`.
//!
//! Reload strategy: on every login that consults the file, one `stat` compares the modification
//! time and length with what was loaded; only a change re-reads the file. A stat costs about a
//! microsecond, far below a CONNECT's own cost, so no watcher task is needed and an edit takes
//! effect on the very next CONNECT. A file that became unreadable or invalid is logged once per
//! change and the last good contents stay in force. Without `reload=true` the file is read once,
//! when the security configuration is built (ferromq's own config reload rebuilds it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::RwLock;

use super::cert::DistinguishedName;
use super::password::StoredPassword;
use super::scram::{CredentialLookup, ScramKeys, ScramMechanism};
use crate::config::jasypt::{self, Algorithm};
use crate::config::properties;

/// The environment variable ActiveMQ's `EncryptionSupport` takes the jasypt password from; the
/// name is fixed (no `passwordEnvName` option for the properties login module).
pub const ENCRYPTION_PASSWORD_ENV: &str = "ACTIVEMQ_ENCRYPTION_PASSWORD";

/// How `ENC(...)` values of a properties file are decrypted: login.config's `decrypt=true`
/// with `algorithm=` (default `PBEWithMD5AndDES`), as ActiveMQ's `PropertiesLoader` runs
/// jasypt's `StandardPBEStringEncryptor` over every value on each (re)load.
#[derive(Clone)]
pub struct Decryption {
    pub algorithm: Algorithm,
    /// The value of [`ENCRYPTION_PASSWORD_ENV`], `None` when unset: only an `ENC(...)` value
    /// makes that an error, as jasypt initialises its encryptor on first use.
    pub password: Option<String>,
}

impl std::fmt::Debug for Decryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decryption")
            .field("algorithm", &self.algorithm)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Decryption {
    /// The decryption a login module's options ask for: `None` without `decrypt=true`
    /// (then `ENC(...)` is an ordinary value, as in ActiveMQ). An unknown `algorithm` is an
    /// error naming the supported ones. The password is read from the environment now.
    pub fn from_options(
        options: &std::collections::BTreeMap<String, String>,
    ) -> Result<Option<Decryption>, String> {
        let on = options
            .get("decrypt")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        if !on {
            return Ok(None);
        }
        let algorithm = match options.get("algorithm") {
            None => Algorithm::PbeWithMd5AndDes,
            Some(name) => Algorithm::from_name(name).ok_or_else(|| {
                format!(
                    "`{name}` is not a supported algorithm; use one of {}",
                    Algorithm::SUPPORTED
                )
            })?,
        };
        Ok(Some(Decryption {
            algorithm,
            password: std::env::var(ENCRYPTION_PASSWORD_ENV).ok(),
        }))
    }

    /// `value` decrypted when it is `ENC(...)`, `None` when it is not encrypted. The error
    /// never contains the value, clear or encrypted.
    pub fn decrypt(&self, value: &str) -> Result<Option<String>, String> {
        let Some(inner) = jasypt::enc_inner(value) else {
            return Ok(None);
        };
        let Some(password) = &self.password else {
            return Err(format!(
                "is ENC(...) and login.config says decrypt=true, but the environment variable \
                 `{ENCRYPTION_PASSWORD_ENV}` is not set"
            ));
        };
        jasypt::decrypt(self.algorithm, password, inner)
            .map(Some)
            .map_err(|e| {
                format!(
                    "is ENC(...) but cannot be decrypted with {} and `{ENCRYPTION_PASSWORD_ENV}`: {e}",
                    self.algorithm.name()
                )
            })
    }
}

/// users.properties: `user=password` (plaintext or a recognised hash or SCRAM credential), with
/// each user's SCRAM credentials (for plain-text passwords, derived in the background after the
/// parse or at first use: [`ScramKeys`]).
#[derive(Debug, Default)]
pub struct UsersTable {
    passwords: HashMap<String, StoredPassword>,
    scram: HashMap<String, ScramKeys>,
}

impl UsersTable {
    pub fn parse(text: &str) -> Result<UsersTable, String> {
        UsersTable::parse_decrypting(text, None)
    }

    /// Parse, decrypting `ENC(...)` passwords first when `decryption` is given. A decrypted
    /// password is the clear password (ActiveMQ compares it as it is), never a hash.
    pub fn parse_decrypting(
        text: &str,
        decryption: Option<&Decryption>,
    ) -> Result<UsersTable, String> {
        let mut passwords = HashMap::new();
        for p in properties::parse(text).map_err(|e| e.to_string())? {
            let located = |e: String| format!("line {}: password of `{}` {e}", p.line, p.key);
            let decrypted = match decryption {
                Some(d) => d.decrypt(&p.value).map_err(located)?,
                None => None,
            };
            let stored = match decrypted {
                Some(clear) => StoredPassword::Plain(Arc::from(clear.into_bytes())),
                None => StoredPassword::parse(&p.value).map_err(located)?,
            };
            passwords.insert(p.key, stored);
        }
        // After the loop: a user written twice gets the credentials of its last line only.
        let scram = passwords
            .iter()
            .map(|(user, stored)| (user.clone(), stored.scram_keys()))
            .collect::<HashMap<_, _>>();
        super::scram_keys::warm(scram.values());
        Ok(UsersTable { passwords, scram })
    }

    /// The SCRAM credential of `user` for `mechanism`.
    pub fn scram_credential(&self, user: &str, mechanism: ScramMechanism) -> CredentialLookup {
        match self.scram.get(user).map(|keys| keys.get(mechanism)) {
            Some(Some(credential)) => CredentialLookup::Found(credential),
            Some(None) => CredentialLookup::NotForScram,
            None => CredentialLookup::Unknown,
        }
    }

    pub fn password(&self, user: &str) -> Option<&StoredPassword> {
        self.passwords.get(user)
    }
}

/// groups.properties: `group=user1,user2`, inverted to user -> groups.
#[derive(Debug, Default)]
pub struct GroupsTable {
    groups_by_user: HashMap<String, Vec<Arc<str>>>,
}

impl GroupsTable {
    pub fn parse(text: &str) -> Result<GroupsTable, String> {
        let mut groups_by_user: HashMap<String, Vec<Arc<str>>> = HashMap::new();
        for p in properties::parse(text).map_err(|e| e.to_string())? {
            let group: Arc<str> = Arc::from(p.key.as_str());
            for user in p.value.split(',').map(str::trim).filter(|u| !u.is_empty()) {
                let groups = groups_by_user.entry(user.to_owned()).or_default();
                if !groups.contains(&group) {
                    groups.push(group.clone());
                }
            }
        }
        Ok(GroupsTable { groups_by_user })
    }

    pub fn groups_of(&self, user: &str) -> &[Arc<str>] {
        self.groups_by_user.get(user).map_or(&[], Vec::as_slice)
    }
}

/// TextFileCertificateLoginModule's users file: `user=CN=...,O=...`, looked up by subject DN.
#[derive(Debug, Default)]
pub struct DnTable {
    user_by_dn: HashMap<DistinguishedName, Arc<str>>,
}

impl DnTable {
    pub fn parse(text: &str) -> Result<DnTable, String> {
        let mut user_by_dn = HashMap::new();
        for p in properties::parse(text).map_err(|e| e.to_string())? {
            let dn = DistinguishedName::parse(&p.value)
                .map_err(|e| format!("line {}: DN of `{}`: {e}", p.line, p.key))?;
            user_by_dn.insert(dn, Arc::from(p.key.as_str()));
        }
        Ok(DnTable { user_by_dn })
    }

    pub fn user_for(&self, dn: &DistinguishedName) -> Option<&Arc<str>> {
        self.user_by_dn.get(dn)
    }
}

/// Identity of a file's contents as far as `stat` can tell.
type Stamp = (Option<SystemTime>, u64);

struct Loaded<T> {
    stamp: Stamp,
    value: Arc<T>,
    /// The last reload problem, so that it is logged once rather than on every CONNECT.
    last_error: Option<String>,
}

/// How a watched file's text becomes its table (a closure: decryption settings ride along).
type Parser<T> = Box<dyn Fn(&str) -> Result<T, String> + Send + Sync>;

/// A parsed file, optionally re-read when it changes.
pub struct WatchedFile<T> {
    path: PathBuf,
    reload: bool,
    parse: Parser<T>,
    state: RwLock<Loaded<T>>,
}

impl<T> std::fmt::Debug for WatchedFile<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchedFile")
            .field("path", &self.path)
            .field("reload", &self.reload)
            .finish_non_exhaustive()
    }
}

impl<T> WatchedFile<T> {
    /// Read and parse `path` now; an unreadable or invalid file is an error naming it.
    pub fn open(
        path: &Path,
        reload: bool,
        parse: impl Fn(&str) -> Result<T, String> + Send + Sync + 'static,
    ) -> Result<WatchedFile<T>, String> {
        let (stamp, value) = read(path, &parse)?;
        Ok(WatchedFile {
            path: path.to_owned(),
            reload,
            parse: Box::new(parse),
            state: RwLock::new(Loaded {
                stamp,
                value: Arc::new(value),
                last_error: None,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current contents, re-read first if `reload` is on and the file changed.
    pub fn current(&self) -> Arc<T> {
        if self.reload {
            let stamp = stamp_of(&self.path);
            if self.state.read().stamp != stamp {
                self.reread(stamp);
            }
        }
        self.state.read().value.clone()
    }

    fn reread(&self, stamp: Stamp) {
        let mut state = self.state.write();
        if state.stamp == stamp {
            return; // another connection re-read it meanwhile
        }
        state.stamp = stamp;
        match read(&self.path, &self.parse) {
            Ok((fresh_stamp, value)) => {
                state.stamp = fresh_stamp;
                state.value = Arc::new(value);
                state.last_error = None;
                tracing::info!(file = %self.path.display(), "reloaded");
            }
            Err(e) => {
                if state.last_error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(error = %e, "keeping the previous contents");
                }
                state.last_error = Some(e);
            }
        }
    }
}

fn stamp_of(path: &Path) -> Stamp {
    match std::fs::metadata(path) {
        Ok(meta) => (meta.modified().ok(), meta.len()),
        Err(_) => (None, 0),
    }
}

fn read<T>(path: &Path, parse: &dyn Fn(&str) -> Result<T, String>) -> Result<(Stamp, T), String> {
    // Stat before reading: a write racing with the read then shows up as a change next time.
    let stamp = stamp_of(path);
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value = parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((stamp, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_inverted_and_deduplicated() {
        let table = GroupsTable::parse("admins=alice\nusers=alice, bob,,alice\n").expect("ok");
        let names =
            |u: &str| -> Vec<String> { table.groups_of(u).iter().map(|g| g.to_string()).collect() };
        assert_eq!(names("alice"), vec!["admins", "users"]);
        assert_eq!(names("bob"), vec!["users"]);
        assert!(names("carol").is_empty());
    }

    #[test]
    fn enc_passwords_decrypt_to_clear_passwords_and_errors_hide_them() {
        let enc =
            jasypt::encrypt(Algorithm::PbeWithMd5AndDes, "k", "$2b$not-a-hash").unwrap_or_default();
        let with = |password: Option<&str>| Decryption {
            algorithm: Algorithm::PbeWithMd5AndDes,
            password: password.map(str::to_owned),
        };
        let text = format!("a=ENC({enc})\nb=plain\n");
        let table = UsersTable::parse_decrypting(&text, Some(&with(Some("k")))).expect("decrypts");
        // A decrypted value is a clear password even when it looks like a hash.
        assert!(table
            .password("a")
            .is_some_and(|p| p.verify(b"$2b$not-a-hash")));
        assert!(table.password("b").is_some_and(|p| p.verify(b"plain")));
        for bad in [with(None), with(Some("wrong"))] {
            let err = UsersTable::parse_decrypting(&text, Some(&bad)).expect_err("fails");
            assert!(err.contains("line 1") && err.contains("`a`"), "{err}");
            assert!(!err.contains("not-a-hash") && !err.contains(&enc), "{err}");
        }
        assert!(!format!("{:?}", with(Some("k"))).contains("\"k\""));
        // Without decrypt=true the ENC text is the password, as in ActiveMQ.
        let literal = UsersTable::parse(&text).expect("parses");
        assert!(literal
            .password("a")
            .is_some_and(|p| p.verify(format!("ENC({enc})").as_bytes())));
    }

    #[test]
    fn users_with_malformed_hashes_are_rejected_with_the_line() {
        let err = UsersTable::parse("a=x\nb=$2b$bad\n").expect_err("bad hash");
        assert!(err.contains("line 2") && err.contains("`b`"), "{err}");
    }
}
