//! The default configuration built into the binary: the repository's `conf/` directory
//! (`activemq.xml` and the files it names or documents), so that `ferromq run` without a file
//! works in any directory, and `ferromq init` writes the same files out to edit.
//!
//! Where no `conf/activemq.xml` exists in the current directory and no file is named, the
//! broker runs on this copy as if it were `./conf/activemq.xml`: `${activemq.conf}` is
//! `./conf`, `${activemq.base}` the current directory and `${activemq.data}` `./data`, exactly
//! as when the files are on disk. While such a load runs ([`LoadOptions::embedded_default`]),
//! a file of the set that exists on disk in `./conf/` is read from disk, the others from the
//! binary: so a reload after `ferromq init` (or with `--watch`, once the file appears) reads
//! the file written out and edited, not the built-in copy. Only while `${activemq.conf}` is
//! `./conf` by default: a conf directory named with `-D activemq.conf=DIR` or
//! `ACTIVEMQ_CONF=DIR` is read from disk alone, as ActiveMQ reads it (a properties file missing
//! there is an error, not the built-in one).
//!
//! [`LoadOptions::embedded_default`]: super::LoadOptions::embedded_default

use std::path::{Path, PathBuf};

/// The directory the default configuration is found in, relative to the current directory.
pub const CONF_DIR: &str = "conf";
/// The main file's name in [`CONF_DIR`].
pub const MAIN_FILE: &str = "activemq.xml";

/// The files of the default configuration: name in [`CONF_DIR`], contents.
pub const FILES: [(&str, &[u8]); 5] = [
    (MAIN_FILE, include_bytes!("../../conf/activemq.xml")),
    (
        "credentials.properties",
        include_bytes!("../../conf/credentials.properties"),
    ),
    (
        "users.properties",
        include_bytes!("../../conf/users.properties"),
    ),
    (
        "groups.properties",
        include_bytes!("../../conf/groups.properties"),
    ),
    ("login.config", include_bytes!("../../conf/login.config")),
];

/// `conf/activemq.xml` of the current directory, absolute (the name the built-in copy is
/// loaded and reported under).
pub fn main_file() -> PathBuf {
    let relative = Path::new(CONF_DIR).join(MAIN_FILE);
    std::path::absolute(&relative).unwrap_or(relative)
}

/// Whether a run or check that names no file must use the built-in copy: `conf/activemq.xml`
/// certainly does not exist in the current directory. A path that cannot be looked at (an
/// unreadable `conf/`) or that is a link to nothing is not "missing": the load then reports
/// it, rather than the broker falling back to an open default configuration in place of a
/// file it could not read.
pub fn needed() -> bool {
    matches!(
        std::fs::symlink_metadata(Path::new(CONF_DIR).join(MAIN_FILE)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound
    )
}

/// The built-in contents of `path`, when it names a file of the set in the current
/// directory's `conf/` (as an absolute or relative path).
pub fn file(path: &Path) -> Option<&'static [u8]> {
    let conf = std::path::absolute(CONF_DIR).ok()?;
    let path = std::path::absolute(path).ok()?;
    if path.parent()? != conf {
        return None;
    }
    let name = path.file_name()?.to_str()?;
    FILES
        .iter()
        .find(|(file, _)| *file == name)
        .map(|(_, contents)| *contents)
}

/// Read `path` from disk; when it is not there, `embedded`, and the built-in set has it,
/// from the binary. With whether the contents came from the binary (then `path` names a file
/// that does not exist, and positions in it are shown as the built-in copy's).
pub fn read(path: &Path, embedded: bool) -> std::io::Result<(Vec<u8>, bool)> {
    match std::fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && embedded => match file(path) {
            Some(contents) => Ok((contents.to_vec(), true)),
            None => Err(e),
        },
        read => read.map(|bytes| (bytes, false)),
    }
}

/// Write the set into `dir/conf/` (created if missing), refusing to replace any file that
/// exists there. Returns the paths written.
///
/// # Errors
/// A file of the set exists already (nothing is written then), or an I/O error.
pub fn write_out(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let conf = dir.join(CONF_DIR);
    let targets: Vec<(PathBuf, &[u8])> = FILES
        .iter()
        .map(|(name, contents)| (conf.join(name), *contents))
        .collect();
    let existing: Vec<String> = targets
        .iter()
        // A link (even to nothing) counts as existing: nothing is written through one.
        .filter(|(path, _)| std::fs::symlink_metadata(path).is_ok())
        .map(|(path, _)| path.display().to_string())
        .collect();
    if !existing.is_empty() {
        return Err(format!(
            "not replacing existing files: {} (move them away or choose another directory)",
            existing.join(", ")
        ));
    }
    std::fs::create_dir_all(&conf).map_err(|e| format!("cannot create {}: {e}", conf.display()))?;
    let mut written = Vec::new();
    for (path, contents) in targets {
        // `create_new`: never through a link or over a file that appeared meanwhile.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut file| std::io::Write::write_all(&mut file, contents))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_is_found_by_its_names_in_conf_only() {
        assert!(file(Path::new("conf/activemq.xml")).is_some());
        assert!(file(&main_file()).is_some());
        assert!(file(Path::new("conf/credentials.properties")).is_some());
        assert!(file(Path::new("conf/other.xml")).is_none());
        assert!(file(Path::new("activemq.xml")).is_none());
        assert!(
            file(Path::new("/etc/conf/activemq.xml")).is_none()
                || std::env::current_dir().is_ok_and(|d| d == Path::new("/etc"))
        );
    }

    #[test]
    fn written_out_it_refuses_to_replace_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let written = write_out(dir.path()).expect("written");
        assert_eq!(written.len(), FILES.len());
        let on_disk = std::fs::read(dir.path().join("conf/activemq.xml")).expect("read");
        assert_eq!(on_disk, FILES[0].1);
        let again = write_out(dir.path()).expect_err("refused");
        assert!(again.contains("activemq.xml"), "{again}");
    }
}
