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

/// Whether another process holds the lock of the store in `dir`, found without taking it
/// (`ferromq check`): `Some(pid)` of the holder (`None` inside when its pid is unknown),
/// `None` when nobody else holds it or this cannot be told.
///
/// Why not try the lock and release it: for that moment the directory would look owned, and a
/// broker starting at the same moment would fail with "already in use" because of a check. A
/// shared flock would do the same (it excludes the broker's exclusive one). Nor the pid file
/// alone: it outlives a kill -9, and the pid may be reused by any other process by then.
/// Linux lists every held flock in `/proc/locks` with the file's device and inode: reading
/// it only looks. Elsewhere (no `/proc`) the answer is "cannot tell", and `run` still refuses.
pub fn held_by_another(dir: &Path) -> Option<Option<u32>> {
    use std::os::unix::fs::MetadataExt;
    let path = dir.join(LOCK_FILE_NAME);
    // The database file too: redb holds a flock on it while open, so a running broker whose
    // lock file was deleted is still found (`run` would fail to open the database).
    let targets: Vec<(u32, u32, u64)> = [path.clone(), dir.join(super::DATABASE_FILE_NAME)]
        .iter()
        .filter_map(|file| std::fs::metadata(file).ok())
        .map(|meta| {
            (
                rustix::fs::major(meta.dev()),
                rustix::fs::minor(meta.dev()),
                meta.ino(),
            )
        })
        .collect();
    if targets.is_empty() {
        return None;
    }
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let own = i64::from(std::process::id());
    let holder = locks
        .lines()
        .filter_map(parse_flock_line)
        .find(|(pid, file)| targets.contains(file) && *pid != own)?;
    let pid = u32::try_from(holder.0).ok().filter(|pid| *pid > 0);
    // A holder in another pid namespace is shown without its pid: the pid file names it.
    Some(pid.or_else(|| {
        let mut file = File::open(&path).ok()?;
        read_pid(&mut file)
    }))
}

/// One held flock of `/proc/locks` (`3: FLOCK  ADVISORY  WRITE 23407 fe:00:10028081 0 EOF`):
/// the holder's pid and the file's device major, minor (hex) and inode. Waiters (`->`) and
/// POSIX or OFD locks (which do not exclude a flock) are not holders of ours.
fn parse_flock_line(line: &str) -> Option<(i64, (u32, u32, u64))> {
    let mut fields = line.split_whitespace().skip(1);
    if fields.next()? != "FLOCK" {
        return None;
    }
    let _advisory = fields.next()?;
    let _mode = fields.next()?;
    let pid: i64 = fields.next()?.parse().ok()?;
    let mut file = fields.next()?.splitn(3, ':');
    let major = u32::from_str_radix(file.next()?, 16).ok()?;
    let minor = u32::from_str_radix(file.next()?, 16).ok()?;
    let inode: u64 = file.next()?.parse().ok()?;
    Some((pid, (major, minor, inode)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_flock_line_is_read() {
        assert_eq!(
            parse_flock_line("3: FLOCK  ADVISORY  WRITE 23407 fe:00:10028081 0 EOF"),
            Some((23407, (0xfe, 0, 10028081)))
        );
        assert_eq!(
            parse_flock_line("12: FLOCK  ADVISORY  READ -1 103:02:77 0 EOF"),
            Some((-1, (0x103, 2, 77)))
        );
    }

    #[test]
    fn waiters_and_posix_locks_are_not_holders() {
        assert_eq!(
            parse_flock_line("3: -> FLOCK  ADVISORY  WRITE 23407 fe:00:10028081 0 EOF"),
            None
        );
        assert_eq!(
            parse_flock_line("1: POSIX  ADVISORY  WRITE 99 fe:00:10028081 0 EOF"),
            None
        );
        assert_eq!(parse_flock_line("garbage"), None);
        assert_eq!(parse_flock_line(""), None);
    }

    #[test]
    fn a_lock_held_elsewhere_is_seen_and_not_taken() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(held_by_another(dir.path()), None);
        let held = DirLock::acquire(dir.path()).expect("lock");
        // Held by this very process: not "another" (acquire's own rules apply then).
        assert_eq!(held_by_another(dir.path()), None);
        drop(held);
        assert_eq!(held_by_another(dir.path()), None);
        // Looking did not take it.
        let again = DirLock::acquire(dir.path()).expect("lock after looking");
        drop(again);
    }
}
