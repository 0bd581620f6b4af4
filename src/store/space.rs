//! Free space of the store's filesystem, so that a QoS 1/2 publish is refused (not
//! acknowledged) BEFORE the disk is full instead of failing inside a commit.
//!
//! # The rule
//!
//! A batch that stores a new message body of `incoming` bytes is admitted when
//!
//! ```text
//! free - written_since_measure + reusable_in_db  >=  disk_cost(incoming) + reserve
//! ```
//!
//! - `free`: `statvfs(dir).f_bavail * f_frsize`, bytes an unprivileged process may still write.
//! - `reserve` ([`reserve_for`]): 1/16 of the filesystem, at least 256 KiB and at most 64 MiB.
//!   It is what redb needs to go on committing what frees space (an acknowledgement rewrites
//!   B-tree pages copy-on-write before the old ones are freed: a full disk would refuse even
//!   deletions), plus slack for other writers on the same filesystem. Scaled with the filesystem
//!   so that a small one (8 MiB in the tests) is still usable; capped so that a big disk does
//!   not keep gigabytes back.
//! - `disk_cost` ([`disk_cost`]): 2 x the encoded body + one 4 KiB page. redb allocates values in
//!   power-of-two page runs, so a 4.1 KiB body takes 8 KiB (measured on tmpfs: 8.3 KiB of file
//!   per 4 KiB message, queue entry included).
//! - `reusable_in_db` ([`reusable_in_db`]): pages inside the database file that were written
//!   once and are free again (redb reuses them before growing the file): the file's allocated
//!   blocks minus an estimate of the live data (3 x stored body bytes + 256 KiB). Without it, a
//!   store that filled the disk and then drained would refuse publishes forever although its
//!   file is mostly empty. The estimate errs towards "live" for bodies of a few KiB; for many
//!   tiny bodies it can over-admit, in which case the commit hits ENOSPC and the writer's
//!   reopen path (see `writer.rs`) refuses and recovers: nothing acknowledged is lost either way.
//!
//! # Cost
//!
//! `statvfs` and `stat` are syscalls and [`DiskSpace::check`] runs for every QoS 1/2 publish,
//! so their results are cached and measured again at most every [`MEASURE_EVERY`] (100 ms) or
//! once [`MEASURE_AFTER_BYTES`] have been written since the last measurement, whichever comes
//! first. Between measurements what the writer committed is subtracted from the cached free
//! space, so the estimate only errs towards refusing. A check that needs no measurement is a
//! clock read and a few relaxed atomic loads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How old a measurement may be before [`DiskSpace::check`] measures again.
pub(crate) const MEASURE_EVERY: Duration = Duration::from_millis(100);
/// Bytes (as [`disk_cost`]) committed since the last measurement after which the next check
/// measures again, whatever its age.
pub(crate) const MEASURE_AFTER_BYTES: u64 = 1024 * 1024;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// Bounds of the automatic reserve ([`reserve_for`]).
const MIN_RESERVE_BYTES: u64 = 256 * KIB;
const MAX_RESERVE_BYTES: u64 = 64 * MIB;
/// redb's page size: every batch may dirty at least one more page.
const PAGE_BYTES: u64 = 4 * KIB;
/// An empty store's file plus metadata pages, counted as live in [`reusable_in_db`].
const DB_BASE_BYTES: u64 = 256 * KIB;
/// [`DiskSpace::reserve_override`] value meaning "use [`reserve_for`]".
const AUTO_RESERVE: u64 = u64::MAX;

/// The reserve kept free on a filesystem of `total_bytes`: 1/16 of it, clamped to
/// 256 KiB..=64 MiB (see the module documentation for why).
pub fn reserve_for(total_bytes: u64) -> u64 {
    (total_bytes / 16).clamp(MIN_RESERVE_BYTES, MAX_RESERVE_BYTES)
}

/// Bytes of disk a batch storing `incoming_bytes` of encoded message bodies may take: twice the
/// bodies (power-of-two page runs) plus one page (queue entries, reference counts).
pub fn disk_cost(incoming_bytes: u64) -> u64 {
    incoming_bytes.saturating_mul(2).saturating_add(PAGE_BYTES)
}

/// Bytes inside the database file that redb can reuse without growing it: its allocated
/// blocks (`db_disk_bytes`) minus the live data, estimated as 3 x `message_bytes` (the stored
/// bodies) + 256 KiB.
pub fn reusable_in_db(db_disk_bytes: u64, message_bytes: u64) -> u64 {
    let live = message_bytes
        .saturating_mul(3)
        .saturating_add(DB_BASE_BYTES);
    db_disk_bytes.saturating_sub(live)
}

/// One measurement of the store's filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceSample {
    /// Bytes an unprivileged process may still write (`f_bavail * f_frsize`).
    pub free_bytes: u64,
    /// Size of the filesystem (`f_blocks * f_frsize`).
    pub total_bytes: u64,
    /// Blocks allocated to the database file, in bytes (`st_blocks * 512`; 0 before it exists).
    pub db_disk_bytes: u64,
}

/// Why a batch was refused for lack of disk space (numbers for the error text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoRoom {
    /// Free bytes as estimated at the check (free - written since measured + reusable in the
    /// database file).
    pub available_bytes: u64,
    /// What the batch would take ([`disk_cost`]).
    pub needed_bytes: u64,
    pub reserve_bytes: u64,
}

/// Whether a batch that may take `needed_bytes` fits in `available_bytes` while keeping
/// `reserve_bytes` free.
pub fn admits(available_bytes: u64, needed_bytes: u64, reserve_bytes: u64) -> bool {
    needed_bytes
        .checked_add(reserve_bytes)
        .is_some_and(|total| total <= available_bytes)
}

/// Measures `dir`'s filesystem and the allocated size of `db_file`.
///
/// Errors: the `statvfs` error (directory gone, I/O error). A missing `db_file` counts as 0
/// bytes (it is created by the first open).
pub fn measure(dir: &Path, db_file: &Path) -> std::io::Result<SpaceSample> {
    use std::os::unix::fs::MetadataExt;
    let vfs = rustix::fs::statvfs(dir).map_err(std::io::Error::from)?;
    let (frsize, bavail, blocks) = (vfs.f_frsize, vfs.f_bavail, vfs.f_blocks);
    let db_disk_bytes = match std::fs::metadata(db_file) {
        Ok(meta) => meta.blocks().saturating_mul(512),
        Err(_) => 0,
    };
    Ok(SpaceSample {
        free_bytes: bavail.saturating_mul(frsize),
        total_bytes: blocks.saturating_mul(frsize),
        db_disk_bytes,
    })
}

/// The cached free-space gauge of one store directory, shared by the broker threads that check
/// admission and the writer thread that commits.
#[derive(Debug)]
pub(crate) struct DiskSpace {
    dir: PathBuf,
    db_file: PathBuf,
    /// When this gauge was made; times below are nanoseconds since then.
    epoch: Instant,
    /// Nanoseconds since `epoch` of the last measurement; `u64::MAX`: never measured.
    measured_at_ns: AtomicU64,
    free_bytes: AtomicU64,
    total_bytes: AtomicU64,
    db_disk_bytes: AtomicU64,
    /// [`disk_cost`] of what the writer committed since the last measurement.
    written_since: AtomicU64,
    /// [`AUTO_RESERVE`], or a reserve set by [`DiskSpace::set_reserve`].
    reserve_override: AtomicU64,
    /// Held by the one thread measuring; the others use the cached sample meanwhile.
    measuring: parking_lot::Mutex<()>,
    /// Measurement failures so far (logged at the 1st, 2nd, 4th...).
    failures: AtomicU64,
}

impl DiskSpace {
    pub(crate) fn new(dir: &Path, db_file: &Path) -> DiskSpace {
        let space = DiskSpace {
            dir: dir.to_path_buf(),
            db_file: db_file.to_path_buf(),
            epoch: Instant::now(),
            measured_at_ns: AtomicU64::new(u64::MAX),
            free_bytes: AtomicU64::new(u64::MAX),
            total_bytes: AtomicU64::new(0),
            db_disk_bytes: AtomicU64::new(0),
            written_since: AtomicU64::new(0),
            reserve_override: AtomicU64::new(AUTO_RESERVE),
            measuring: parking_lot::Mutex::new(()),
            failures: AtomicU64::new(0),
        };
        space.measure_now();
        space
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Replaces the automatic reserve ([`reserve_for`]) by `reserve_bytes` (0 turns the
    /// free-space check off), or restores it with `None`.
    pub(crate) fn set_reserve(&self, reserve_bytes: Option<u64>) {
        self.reserve_override
            .store(reserve_bytes.unwrap_or(AUTO_RESERVE), Ordering::Relaxed);
    }

    /// The reserve in force, in bytes.
    pub(crate) fn reserve_bytes(&self) -> u64 {
        match self.reserve_override.load(Ordering::Relaxed) {
            AUTO_RESERVE => reserve_for(self.total_bytes.load(Ordering::Relaxed)),
            fixed => fixed,
        }
    }

    /// Whether a batch storing `incoming_bytes` of new bodies fits, with `pending_cost` bytes
    /// (as [`disk_cost`]) already admitted into the transaction being built and
    /// `message_bytes` of bodies stored. Measures again if the cached sample is stale.
    /// Never fails because the measurement failed: then the last sample is used (or, with
    /// none, the batch is admitted and the writer's I/O error handling is the backstop).
    pub(crate) fn check(
        &self,
        incoming_bytes: u64,
        message_bytes: u64,
        pending_cost: u64,
    ) -> Result<(), NoRoom> {
        if self.reserve_override.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        self.measure_if_stale();
        let free = self.free_bytes.load(Ordering::Relaxed);
        let written = self.written_since.load(Ordering::Relaxed);
        let reusable = reusable_in_db(self.db_disk_bytes.load(Ordering::Relaxed), message_bytes);
        let available = free.saturating_sub(written).saturating_add(reusable);
        let needed = disk_cost(incoming_bytes).saturating_add(pending_cost);
        let reserve_bytes = self.reserve_bytes();
        if admits(available, needed, reserve_bytes) {
            Ok(())
        } else {
            Err(NoRoom {
                available_bytes: available,
                needed_bytes: needed,
                reserve_bytes,
            })
        }
    }

    /// The writer committed batches that may take `cost` bytes of disk ([`disk_cost`]).
    pub(crate) fn note_written(&self, cost: u64) {
        self.written_since.fetch_add(cost, Ordering::Relaxed);
    }

    /// Whether the filesystem is (nearly) out of space by a fresh measurement: free bytes
    /// below the reserve. Used to tell ENOSPC-like write failures from other I/O errors.
    pub(crate) fn out_of_space_now(&self) -> bool {
        self.measure_now();
        self.free_bytes.load(Ordering::Relaxed) < self.reserve_bytes().max(MIN_RESERVE_BYTES)
    }

    fn measure_if_stale(&self) {
        let at = self.measured_at_ns.load(Ordering::Relaxed);
        let written = self.written_since.load(Ordering::Relaxed);
        let now = self.now_ns();
        let stale = at == u64::MAX
            || now.saturating_sub(at) >= MEASURE_EVERY.as_nanos() as u64
            || written >= MEASURE_AFTER_BYTES;
        if stale {
            // One thread measures; the others go on with the cached sample.
            if let Some(_measuring) = self.measuring.try_lock() {
                self.measure_locked();
            }
        }
    }

    fn measure_now(&self) {
        let _measuring = self.measuring.lock();
        self.measure_locked();
    }

    fn measure_locked(&self) {
        let written_before = self.written_since.load(Ordering::Relaxed);
        match measure(&self.dir, &self.db_file) {
            Ok(sample) => {
                self.free_bytes.store(sample.free_bytes, Ordering::Relaxed);
                self.total_bytes
                    .store(sample.total_bytes, Ordering::Relaxed);
                self.db_disk_bytes
                    .store(sample.db_disk_bytes, Ordering::Relaxed);
                // What was written before this measurement is in it; later writes are not.
                self.written_since
                    .fetch_sub(written_before, Ordering::Relaxed);
            }
            Err(e) => {
                let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if failures.is_power_of_two() {
                    tracing::warn!(
                        dir = %self.dir.display(),
                        failures,
                        "cannot measure the store's free disk space (statvfs): {e}; using the \
                         last measurement"
                    );
                }
            }
        }
        self.measured_at_ns.store(self.now_ns(), Ordering::Relaxed);
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_scales_with_the_filesystem_within_bounds() {
        assert_eq!(reserve_for(0), 256 * KIB);
        assert_eq!(reserve_for(2 * MIB), 256 * KIB);
        assert_eq!(reserve_for(8 * MIB), 512 * KIB);
        assert_eq!(reserve_for(160 * MIB), 10 * MIB);
        assert_eq!(reserve_for(1024 * MIB), 64 * MIB);
        assert_eq!(reserve_for(4 * 1024 * 1024 * MIB), 64 * MIB);
        assert_eq!(reserve_for(u64::MAX), 64 * MIB);
    }

    #[test]
    fn the_disk_cost_covers_page_rounding_and_never_overflows() {
        assert_eq!(disk_cost(0), 4 * KIB);
        assert_eq!(disk_cost(4 * KIB + 18), 12 * KIB + 36);
        assert_eq!(disk_cost(u64::MAX), u64::MAX);
    }

    #[test]
    fn reusable_space_is_what_the_live_data_does_not_take() {
        // A store that filled the disk with 4 KiB messages: nothing reusable.
        assert_eq!(reusable_in_db(8_384_512, 4_105_772), 0);
        // Drained: almost all of its file is reusable.
        assert_eq!(reusable_in_db(8_384_512, 0), 8_384_512 - 256 * KIB);
        assert_eq!(reusable_in_db(0, 0), 0);
        assert_eq!(reusable_in_db(u64::MAX, u64::MAX), 0);
    }

    #[test]
    fn admission_keeps_the_reserve() {
        assert!(admits(10 * MIB, 9 * MIB, MIB));
        assert!(!admits(10 * MIB, 9 * MIB + 1, MIB));
        assert!(!admits(0, 0, 1));
        assert!(admits(0, 0, 0));
        assert!(!admits(u64::MAX, u64::MAX, 1));
    }

    #[test]
    fn a_real_directory_is_measured_and_a_missing_one_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sample = measure(dir.path(), &dir.path().join("absent")).expect("statvfs");
        assert!(sample.total_bytes > 0);
        assert!(sample.free_bytes <= sample.total_bytes);
        assert_eq!(sample.db_disk_bytes, 0);
        assert!(measure(&dir.path().join("absent"), &dir.path().join("x")).is_err());
    }

    #[test]
    fn the_check_refuses_past_the_reserve_and_counts_writes_between_measurements() {
        let dir = tempfile::tempdir().expect("tempdir");
        let space = DiskSpace::new(dir.path(), &dir.path().join("db"));
        let free = space.free_bytes.load(Ordering::Relaxed);
        space.set_reserve(Some(free / 2));
        assert!(space.check(1024, 0, 0).is_ok());
        // More than the free space above the reserve: refused, with the numbers.
        let refusal = space.check(free, 0, 0).expect_err("no room");
        assert_eq!(refusal.reserve_bytes, free / 2);
        assert!(refusal.needed_bytes > free);
        // Writes since the measurement count until the next one (pinned: no measurement by
        // age here).
        space.measure_now();
        space.measured_at_ns.store(u64::MAX - 1, Ordering::Relaxed);
        let free = space.free_bytes.load(Ordering::Relaxed);
        space.set_reserve(Some(free.saturating_sub(600 * KIB)));
        assert!(space.check(100 * KIB, 0, 0).is_ok());
        space.note_written(512 * KIB);
        assert!(space.check(0, 0, 0).is_ok());
        assert!(space.check(100 * KIB, 0, 0).is_err());
        // Past MEASURE_AFTER_BYTES the next check measures again and forgets them.
        space.note_written(MEASURE_AFTER_BYTES);
        let _ = space.check(100 * KIB, 0, 0);
        assert_eq!(space.written_since.load(Ordering::Relaxed), 0);
        // Reserve 0 turns the check off.
        space.set_reserve(Some(0));
        assert!(space.check(u64::MAX / 4, 0, 0).is_ok());
    }

    /// `cargo test --release --lib store::space::tests::check_cost -- --ignored --nocapture`
    #[test]
    #[ignore = "measurement, run by hand in release"]
    fn check_cost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let space = DiskSpace::new(dir.path(), &dir.path().join("db"));
        let rounds = 2_000_000u32;
        let start = Instant::now();
        let mut admitted = 0u32;
        for _ in 0..rounds {
            if space.check(std::hint::black_box(4096), 0, 0).is_ok() {
                admitted += 1;
            }
        }
        let per_check = start.elapsed() / rounds;
        let sample_start = Instant::now();
        for _ in 0..1000 {
            std::hint::black_box(measure(dir.path(), &dir.path().join("db")).expect("statvfs"));
        }
        let per_measure = sample_start.elapsed() / 1000;
        println!(
            "check: {per_check:?} per call ({admitted} admitted); statvfs+stat: {per_measure:?}"
        );
    }
}
