//! The store's one error type. Every variant carries text (not the source error value) so that a
//! single failed group commit can be reported to every caller whose batch was in it.

use std::path::PathBuf;

/// Why a store operation failed. The text says what, where and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create store directory {dir}: {detail}")]
    CreateDir { dir: PathBuf, detail: String },

    #[error(
        "store directory {dir} is already in use by another broker{}: stop it, or give this \
         broker its own persistenceAdapter directory",
        holder_pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    Locked {
        dir: PathBuf,
        holder_pid: Option<u32>,
    },

    #[error("store lock file {path}: {detail}")]
    LockFile { path: PathBuf, detail: String },

    #[error("cannot open store file {path}: {detail}")]
    Open { path: PathBuf, detail: String },

    /// The `storeUsage` limit would be passed: the new message is refused, nothing was written.
    #[error(
        "store full: {used_bytes} bytes of messages stored, {incoming_bytes} more would pass the \
         storeUsage limit of {limit_bytes} bytes; the message was refused"
    )]
    Full {
        used_bytes: u64,
        incoming_bytes: u64,
        limit_bytes: u64,
    },

    /// A batch referred to something that does not exist (a bug in the caller, not bad input).
    /// Nothing of that batch was written.
    #[error("invalid store batch: {0}")]
    InvalidOp(String),

    /// The storage engine failed (disk full, I/O error): nothing of the group was made durable.
    #[error("store I/O error: {0}")]
    Storage(String),

    #[error("store is closed")]
    Closed,
}

impl StoreError {
    pub(crate) fn storage(context: &str, err: impl std::fmt::Display) -> Self {
        StoreError::Storage(format!("{context}: {err}"))
    }
}
