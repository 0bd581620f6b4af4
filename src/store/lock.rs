//! Exclusive ownership of a store directory: an advisory lock (flock) on `ferromq.lock`
//! holding the owner's pid.
//!
//! The kernel drops the lock when the process dies, so a kill -9 never leaves a stale lock; the
//! pid left in the file is only used to name the holder when the lock is taken. Locks belong
//! to open file descriptions, so a second open from the same process fails too.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use super::StoreError;

pub(crate) const LOCK_FILE_NAME: &str = "ferromq.lock";

/// How long a lock that names this very process as holder is retried (see `acquire`).
const OWN_PID_GRACE: Duration = Duration::from_millis(500);

/// Held for the life of a [`super::Store`]; dropping it releases the directory.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock, StoreError> {
        let path = dir.join(LOCK_FILE_NAME);
        let lock_error = |detail: String| StoreError::LockFile {
            path: path.clone(),
            detail,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| lock_error(e.to_string()))?;
        // `File::try_lock` is std since 1.89; the declared rust-version (1.80) is below what the
        // dependencies already need (redb 4: 1.90, notify-types: 1.91).
        let started = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    let holder_pid = read_pid(&mut file);
                    // A child process forked by this process (any `Command::spawn`) holds a copy
                    // of every descriptor until its exec closes them: a store closed and reopened
                    // in that window looks held by ourselves. Such a hold ends within
                    // milliseconds; a real second owner in this process is still refused.
                    let own = holder_pid == Some(std::process::id());
                    if own && started.elapsed() < OWN_PID_GRACE {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    return Err(StoreError::Locked {
                        dir: dir.to_path_buf(),
                        holder_pid,
                    });
                }
                Err(TryLockError::Error(e)) => return Err(lock_error(e.to_string())),
            }
        }
        let record_pid = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            writeln!(file, "{}", std::process::id())?;
            file.sync_data()
        };
        record_pid(&mut file).map_err(|e| lock_error(format!("cannot record our pid: {e}")))?;
        Ok(DirLock { _file: file })
    }
}

/// The pid written by the current holder, if readable (it may be mid-write).
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}
