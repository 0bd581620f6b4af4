//! A small real filesystem for the disk-full tests: a tmpfs mounted on a fresh temporary
//! directory (root only), unmounted when dropped. Skipped with a message when not root or when
//! mounting fails, unless `CI` is set: then the test fails instead (CI runs as root and must run
//! the disk-full tests).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of `size_kib` mounted on a fresh temporary directory, unmounted when dropped.
pub struct SmallFs {
    mount_point: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallFs {
    /// `None` (after printing why) when the test cannot mount and `CI` is not set.
    pub fn mount(size_kib: u64) -> Option<SmallFs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mount_point = dir.path().join("fs");
        std::fs::create_dir(&mount_point).expect("mount point");
        let root = rustix::process::geteuid().is_root();
        let mounted = root
            && Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size_kib}k"), "tmpfs"])
                .arg(&mount_point)
                .status()
                .is_ok_and(|s| s.success());
        if !mounted {
            let why = if root {
                "mount -t tmpfs failed"
            } else {
                "not root"
            };
            assert!(
                std::env::var_os("CI").is_none(),
                "{why}: the disk-full tests must run in CI (as root)"
            );
            eprintln!("SKIPPED: {why}; the disk-full tests need root to mount a small tmpfs");
            return None;
        }
        Some(SmallFs {
            mount_point,
            _dir: dir,
        })
    }

    pub fn path(&self) -> &Path {
        &self.mount_point
    }

    /// Writes a file of `bytes` (as much as fits) and returns how much was written.
    /// Removes `name` from the filesystem.
    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.mount_point.join(name)).expect("remove file");
    }

    pub fn fill(&self, name: &str, bytes: usize) -> usize {
        use std::io::Write;
        let mut file = std::fs::File::create(self.mount_point.join(name)).expect("filler");
        let chunk = vec![0xa5u8; 64 * 1024];
        let mut written = 0;
        while written < bytes {
            let n = chunk.len().min(bytes - written);
            match file.write(&chunk[..n]) {
                Ok(0) | Err(_) => break,
                Ok(n) => written += n,
            }
        }
        written
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.mount_point)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mount_point)
                .status();
        }
    }
}
