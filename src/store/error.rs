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

    /// The store's filesystem is too full to take the new message while keeping its reserve
    /// free (see `src/store/space.rs`): refused before anything was written. Retry later;
    /// deletions still go through and free space.
    #[error(
        "disk nearly full: {available_bytes} bytes free for the store in {dir}, a new message \
         needs {needed_bytes} plus the reserve of {reserve_bytes}; the message was refused"
    )]
    DiskFull {
        dir: PathBuf,
        available_bytes: u64,
        needed_bytes: u64,
        reserve_bytes: u64,
    },

    /// A write failed (I/O error, disk full) and the store is being reopened; until it is,
    /// every batch is refused at once. `out_of_space`: the filesystem was out of space when it
    /// failed (the broker treats that as full rather than unavailable). Nothing of a refused
    /// batch was written; retry later.
    #[error(
        "store unavailable{}: {detail}",
        if *out_of_space { " (disk full)" } else { "" }
    )]
    Unavailable { detail: String, out_of_space: bool },

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
