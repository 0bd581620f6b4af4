//! The SCRAM credentials of one user ([`ScramKeys`]), and the background thread that derives
//! those of plain-text passwords.
//!
//! A plain-text password (users.properties, `simpleAuthenticationPlugin`) gives a credential for
//! each mechanism, which PBKDF2 derives at [`DEFAULT_ITERATIONS`]: about a millisecond per
//! mechanism per user. Derived at load, that made a users file of 2,000 users take 7.5 s to
//! `check` and 11 s to start (ActiveMQ's `PropertiesLoginModule` reads it at once), and every
//! reload of the file paid it again. So each credential is derived once, when first asked for,
//! and a background thread ([`warm`]) derives the rest after a load: a SCRAM exchange that
//! found a credential still underived would answer its first message a millisecond later than
//! for a user whose credential is ready, which tells a patient client that the user exists
//! (unknown users get a fake exchange at once). The thread closes that window within seconds
//! of a load (about 2.5 ms of a core per user, at the lowest scheduling priority); tables a
//! reload replaced before their turn are skipped.

use std::fmt;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::scram::{ScramCredential, ScramMechanism, DEFAULT_ITERATIONS};

/// The SCRAM credentials of one user, one per mechanism it can use. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct ScramKeys(Option<Arc<Source>>);

enum Source {
    /// A stored SCRAM credential: its one mechanism.
    Stored(Arc<ScramCredential>),
    /// A plain-text password: both mechanisms, each derived (with a fresh random salt) on
    /// first use.
    Plain {
        password: Arc<[u8]>,
        sha256: OnceLock<Arc<ScramCredential>>,
        sha512: OnceLock<Arc<ScramCredential>>,
    },
}

impl fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the password.
        let kind = match self.0.as_deref() {
            None => "none",
            Some(Source::Stored(_)) => "stored",
            Some(Source::Plain { .. }) => "from a plain-text password",
        };
        f.debug_tuple("ScramKeys").field(&kind).finish()
    }
}

impl ScramKeys {
    /// Credentials for both mechanisms from a plain-text password, derived when first asked
    /// for (or by the background thread, see [`warm`]).
    pub fn from_plain_password(password: Arc<[u8]>) -> ScramKeys {
        ScramKeys(Some(Arc::new(Source::Plain {
            password,
            sha256: OnceLock::new(),
            sha512: OnceLock::new(),
        })))
    }

    /// Only the mechanism of a stored credential.
    pub fn from_credential(credential: Arc<ScramCredential>) -> ScramKeys {
        ScramKeys(Some(Arc::new(Source::Stored(credential))))
    }

    /// The credential for `mechanism`; `None` when this user cannot use it. For a plain-text
    /// password not derived yet, runs PBKDF2 here (about a millisecond); a caller racing
    /// another waits for the one derivation.
    pub fn get(&self, mechanism: ScramMechanism) -> Option<Arc<ScramCredential>> {
        match self.0.as_deref()? {
            Source::Stored(credential) => {
                (credential.mechanism() == mechanism).then(|| credential.clone())
            }
            Source::Plain {
                password,
                sha256,
                sha512,
            } => {
                let cell = match mechanism {
                    ScramMechanism::Sha256 => sha256,
                    ScramMechanism::Sha512 => sha512,
                };
                let credential = cell.get_or_init(|| {
                    Arc::new(ScramCredential::generate(
                        mechanism,
                        password,
                        DEFAULT_ITERATIONS,
                    ))
                });
                Some(credential.clone())
            }
        }
    }

    /// Are the credentials of every mechanism it can use ready (nothing left to derive)?
    pub fn is_derived(&self) -> bool {
        match self.0.as_deref() {
            None | Some(Source::Stored(_)) => true,
            Some(Source::Plain { sha256, sha512, .. }) => {
                sha256.get().is_some() && sha512.get().is_some()
            }
        }
    }

    fn derive_all(&self) {
        for mechanism in ScramMechanism::ALL {
            let _ = self.get(mechanism);
        }
    }

    fn pending(&self) -> Option<Weak<Source>> {
        (!self.is_derived())
            .then(|| self.0.as_ref().map(Arc::downgrade))
            .flatten()
    }
}

/// One load's keys still to derive, held weakly: a table a reload dropped is not derived.
type Batch = Vec<Weak<Source>>;

/// Derive, on the background thread, the credentials of `keys` that are not ready yet (those
/// of plain-text passwords just loaded). Returns at once. Keys dropped before their turn (a
/// reload replaced their table) are skipped; the thread starts with the first call and then
/// waits for work.
pub fn warm<'a>(keys: impl IntoIterator<Item = &'a ScramKeys>) {
    let batch: Batch = keys.into_iter().filter_map(ScramKeys::pending).collect();
    if batch.is_empty() {
        return;
    }
    static QUEUE: OnceLock<Mutex<Option<Sender<Batch>>>> = OnceLock::new();
    let queue = QUEUE.get_or_init(|| Mutex::new(spawn_warmer()));
    let Ok(mut sender) = queue.lock() else {
        return;
    };
    if let Some(tx) = sender.as_ref() {
        match tx.send(batch) {
            Ok(()) => {}
            // The thread is gone (it cannot panic, but a failed spawn leaves none): start
            // another for this batch.
            Err(unsent) => {
                *sender = spawn_warmer();
                if let Some(tx) = sender.as_ref() {
                    let _ = tx.send(unsent.0);
                }
            }
        }
    }
}

/// The warming thread and its queue; `None` when the thread cannot be started (the
/// credentials are then derived on first use only).
fn spawn_warmer() -> Option<Sender<Batch>> {
    let (tx, rx) = channel::<Batch>();
    let spawned = std::thread::Builder::new()
        .name("scram-derive".into())
        .spawn(move || {
            // Lowest priority: this is spare work (closing a timing difference), and a large
            // users file costs seconds of a core after each load, which the broker's own
            // threads should not wait behind. On Linux a nice value is the calling thread's.
            let _ = rustix::process::setpriority_process(None, 19);
            for batch in rx {
                for source in batch {
                    if let Some(source) = source.upgrade() {
                        ScramKeys(Some(source)).derive_all();
                    }
                }
            }
        });
    match spawned {
        Ok(_) => Some(tx),
        Err(e) => {
            tracing::warn!(
                "could not start the thread that derives SCRAM credentials ({e}); each is \
                 derived at its user's first SCRAM login"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_plain_password_is_derived_on_first_use_once() {
        let keys = ScramKeys::from_plain_password(Arc::from(&b"s3cret"[..]));
        assert!(!keys.is_derived());
        let first = keys.get(ScramMechanism::Sha256).expect("sha256");
        assert!(first.verify_password(b"s3cret"));
        assert!(!first.verify_password(b"other"));
        // The same credential (salt) every time, and for every clone.
        let again = keys.clone().get(ScramMechanism::Sha256).expect("sha256");
        assert!(Arc::ptr_eq(&first, &again));
        assert!(!keys.is_derived(), "SHA-512 is still to derive");
        assert!(keys
            .get(ScramMechanism::Sha512)
            .is_some_and(|c| c.verify_password(b"s3cret")));
        assert!(keys.is_derived());
    }

    #[test]
    fn a_stored_credential_serves_its_mechanism_only() {
        let stored = Arc::new(ScramCredential::generate(
            ScramMechanism::Sha512,
            b"x",
            4096,
        ));
        let keys = ScramKeys::from_credential(stored.clone());
        assert!(keys.is_derived());
        assert!(keys
            .get(ScramMechanism::Sha512)
            .is_some_and(|c| Arc::ptr_eq(&c, &stored)));
        assert!(keys.get(ScramMechanism::Sha256).is_none());
        assert!(ScramKeys::default().get(ScramMechanism::Sha256).is_none());
    }

    #[test]
    fn the_background_thread_derives_what_was_loaded() {
        let keys: Vec<ScramKeys> = (0..20)
            .map(|i| ScramKeys::from_plain_password(Arc::from(format!("pw{i}").into_bytes())))
            .collect();
        // A table replaced before its turn: dropped, so skipped (nothing to observe but that
        // the thread goes on with the rest).
        let dropped: Vec<ScramKeys> = (0..5)
            .map(|_| ScramKeys::from_plain_password(Arc::from(&b"gone"[..])))
            .collect();
        warm(&dropped);
        drop(dropped);
        warm(&keys);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !keys.iter().all(ScramKeys::is_derived) {
            assert!(Instant::now() < deadline, "not derived within 60 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        for (i, k) in keys.iter().enumerate() {
            let pw = format!("pw{i}");
            for m in ScramMechanism::ALL {
                assert!(k.get(m).is_some_and(|c| c.verify_password(pw.as_bytes())));
            }
        }
    }
}
