//! Cheap and exact ways to tell that a file changed.
//!
//! [`FileStamp`] (size + modification time) is what polling compares, as ActiveMQ's
//! runtimeConfigurationPlugin does: cheap enough to take every period. [`ContentHashes`] hashes
//! whole contents and is taken once per reload: it tells which files the model cannot see
//! changing (TLS material, JAAS users/groups files) really did change.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hasher};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Size, modification time and (on Unix) inode of a file, or `None` in [`stamp`] when it cannot
/// be read. The inode catches a replacement (rename over, symlink swap) of the same size within
/// one tick of the file system's coarse clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub len_bytes: u64,
    pub modified: Option<SystemTime>,
    pub inode: u64,
}

/// The stamp of `path`, following symlinks (a Kubernetes ConfigMap swaps the link target).
pub fn stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        len_bytes: meta.len(),
        modified: meta.modified().ok(),
        inode: inode(&meta),
    })
}

#[cfg(unix)]
fn inode(meta: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

#[cfg(not(unix))]
fn inode(_meta: &std::fs::Metadata) -> u64 {
    0
}

/// Content hash of each file of a configuration; `None` for a file that could not be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentHashes(BTreeMap<PathBuf, Option<u64>>);

impl ContentHashes {
    /// Hash every file now. Files are small (XML, properties, certificates), so reading them in
    /// full once per reload is cheap. Not a security hash: it only has to notice edits.
    pub fn read(files: &[PathBuf]) -> ContentHashes {
        let hash_of = |path: &Path| {
            // A device (`/dev/zero`) would be read without end and a FIFO would block: only
            // regular files have contents to compare.
            if !std::fs::metadata(path).ok()?.is_file() {
                return None;
            }
            let bytes = std::fs::read(path).ok()?;
            let mut hasher = DefaultHasher::new();
            hasher.write(&bytes);
            Some(hasher.finish())
        };
        ContentHashes(files.iter().map(|f| (f.clone(), hash_of(f))).collect())
    }

    /// Files present in both snapshots whose contents differ. A file in only one snapshot is a
    /// change in the model (a new path), which the diff sees by itself.
    pub fn changed_since(&self, earlier: &ContentHashes) -> Vec<PathBuf> {
        self.0
            .iter()
            .filter(|(path, hash)| earlier.0.get(*path).is_some_and(|old| old != *hash))
            .map(|(path, _)| path.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_changes_are_seen_and_new_paths_are_not_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        std::fs::write(&a, "one").expect("write");
        std::fs::write(&b, "two").expect("write");
        let before = ContentHashes::read(&[a.clone(), b.clone()]);
        std::fs::write(&a, "ONE").expect("write");
        std::fs::write(&c, "new").expect("write");
        let after = ContentHashes::read(&[a.clone(), b.clone(), c]);
        assert_eq!(after.changed_since(&before), std::slice::from_ref(&a));
        std::fs::remove_file(&b).expect("remove");
        let gone = ContentHashes::read(&[a, b.clone()]);
        assert_eq!(gone.changed_since(&after), [b]);
    }

    #[test]
    fn stamps_follow_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        assert_eq!(stamp(&file), None);
        std::fs::write(&file, "1").expect("write");
        let first = stamp(&file).expect("stamp");
        std::fs::write(&file, "12").expect("write");
        assert_ne!(stamp(&file), Some(first));
    }
}
