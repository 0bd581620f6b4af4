//! The store directory as the kernel will find it: what exists of it, what must be made, and
//! the path to make it by.
//!
//! A path like `data/zz/../store` names `data/store` only once `data/zz` exists: the kernel
//! resolves `..` physically, after each directory it passes. `create_dir_all` therefore makes
//! `zz` first, and leaves it behind (also when it then fails, because `data/store`'s parent is
//! a file). [`plan`] walks the path the same way, one component at a time, so that `check`
//! judges the directory `run` would reach, and `Store::open` makes it without the detours: a
//! `..` right after a directory still to be made cancels that directory.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// What making the store directory would find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// The directory as written, less each `name/..` whose `name` does not exist yet: the
    /// same place for the kernel, reached without making `name`.
    pub path: PathBuf,
    /// The deepest directory of the path that exists (`.` for a relative path none of whose
    /// directories exist): the directory itself when nothing is to be made.
    pub existing: PathBuf,
    /// Whether directories must be made (under `existing`).
    pub to_make: bool,
}

/// Why the store directory cannot be made, found without making anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// `path` exists and is not a directory; `last`: it is the store directory itself.
    NotADirectory { path: PathBuf, last: bool },
    /// `path` is a symbolic link to `target`, which does not exist (making it fails with
    /// "File exists", which says nothing of the link).
    DanglingLink { path: PathBuf, target: PathBuf },
    /// `path` could not be inspected (permission denied on a parent, I/O error).
    Inspect { path: PathBuf, error: String },
}

/// Walk `dir` as the kernel resolves it while it is being made (nothing is made or opened).
///
/// Errors: the first component that exists and is not a directory, is a link to nothing, or
/// cannot be inspected.
pub fn plan(dir: &Path) -> Result<Planned, Blocked> {
    let components: Vec<Component<'_>> = dir.components().collect();
    let mut path = PathBuf::new();
    let mut existing = PathBuf::new();
    // Names (in order) of the directories still to be made, the last one at the end of `path`.
    let mut missing: Vec<OsString> = Vec::new();
    for (i, component) in components.iter().enumerate() {
        let last = i + 1 == components.len();
        match component {
            Component::Prefix(_) | Component::RootDir => {
                path.push(component.as_os_str());
                existing.clone_from(&path);
                missing.clear();
            }
            // `Path::components` keeps only a leading `.`.
            Component::CurDir => {
                path.push(".");
                existing.clone_from(&path);
            }
            Component::ParentDir => {
                if missing.pop().is_some() {
                    // The parent of a directory made here is where it was made.
                    path.pop();
                } else {
                    path.push("..");
                    existing.clone_from(&path);
                }
            }
            Component::Normal(name) => {
                path.push(name);
                if !missing.is_empty() {
                    missing.push(name.to_os_string());
                    continue;
                }
                match std::fs::metadata(&path) {
                    Ok(meta) if meta.is_dir() => existing.clone_from(&path),
                    Ok(_) => return Err(Blocked::NotADirectory { path, last }),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_symlink()) {
                            let target = std::fs::read_link(&path).unwrap_or_default();
                            return Err(Blocked::DanglingLink { path, target });
                        }
                        missing.push(name.to_os_string());
                    }
                    Err(e) => {
                        return Err(Blocked::Inspect {
                            path,
                            error: e.to_string(),
                        })
                    }
                }
            }
        }
    }
    let or_here = |p: PathBuf| {
        if p.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            p
        }
    };
    Ok(Planned {
        path: or_here(path),
        existing: or_here(existing),
        to_make: !missing.is_empty(),
    })
}

/// The path to make and open the store by: [`plan`]'s, else `dir` as written (making it then
/// fails with the system's own words).
pub fn creation_path(dir: &Path) -> PathBuf {
    plan(dir).map_or_else(|_| dir.to_path_buf(), |planned| planned.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parent_step_after_a_missing_directory_cancels_it() {
        let root = tempfile::tempdir().expect("tempdir");
        let base = root.path();
        let planned = plan(&base.join("zz/../data/store")).expect("plan");
        assert_eq!(planned.path, base.join("data/store"));
        assert_eq!(planned.existing, base);
        assert!(planned.to_make);
        assert!(!base.join("zz").exists());
    }

    #[test]
    fn a_parent_step_after_an_existing_directory_is_kept() {
        let root = tempfile::tempdir().expect("tempdir");
        let base = root.path();
        std::fs::create_dir(base.join("real")).expect("mkdir");
        let planned = plan(&base.join("real/../store")).expect("plan");
        assert_eq!(planned.path, base.join("real/../store"));
        assert_eq!(planned.existing, base.join("real/.."));
        assert!(planned.to_make);
    }

    #[test]
    fn a_file_reached_through_a_cancelled_directory_blocks() {
        let root = tempfile::tempdir().expect("tempdir");
        let base = root.path();
        std::fs::write(base.join("afile"), "x").expect("write");
        assert_eq!(
            plan(&base.join("zz/../afile/sub")),
            Err(Blocked::NotADirectory {
                path: base.join("afile"),
                last: false
            })
        );
        assert_eq!(
            plan(&base.join("afile")),
            Err(Blocked::NotADirectory {
                path: base.join("afile"),
                last: true
            })
        );
    }

    #[test]
    fn an_existing_directory_needs_nothing_made() {
        let root = tempfile::tempdir().expect("tempdir");
        let planned = plan(root.path()).expect("plan");
        assert_eq!(planned.path, root.path());
        assert_eq!(planned.existing, root.path());
        assert!(!planned.to_make);
    }

    #[test]
    fn a_relative_path_of_missing_directories_is_made_here() {
        let planned = plan(Path::new("no-such-ferromq-dir/x/../y")).expect("plan");
        assert_eq!(planned.path, Path::new("no-such-ferromq-dir/y"));
        assert_eq!(planned.existing, Path::new("."));
        assert!(planned.to_make);
    }
}
