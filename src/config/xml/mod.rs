//! `activemq.xml` -> [`LoadedDocument`]: the element tree with file:line:column for every element
//! and attribute, `<import resource=...>` spliced in and `${...}` placeholders resolved.
//!
//! - `reader`: one XML text -> one tree (quick-xml tokens, namespaces, entities, positions);
//! - `imports`: Spring `<import>`, relative to the including file, cycles detected;
//! - `placeholders`: Spring's placeholder configurer beans, their `.properties` files and the
//!   lookup order Spring uses.

mod encoding;
mod imports;
mod placeholders;
mod position;
mod reader;
mod syntax_errors;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::diagnostic::{Diagnostic, Diagnostics, Span};
use super::tree::Element;
use super::LoadOptions;
pub use placeholders::FromCommandLine;

/// A loaded document: the `<beans>` (or bare `<broker>`) root with imports spliced in.
#[derive(Debug, Clone)]
pub struct LoadedDocument {
    pub root: Element,
    /// Every file read: the main file, imports and properties files.
    pub files: Vec<PathBuf>,
    /// The main file's path (for relative paths in the compiled model).
    pub main_file: PathBuf,
    /// Every resolved property (properties files, overrides, `activemq.*` defaults).
    pub properties: BTreeMap<String, String>,
    /// [`LoadOptions::local_store`](crate::config::LoadOptions::local_store).
    pub local_store: bool,
    /// Attribute values that took a `--set`/`-D` value, for the diagnostics about them.
    pub from_command_line: Vec<FromCommandLine>,
}

/// Read, parse and expand the configuration file at `path`. `None` when the main file cannot
/// be read or is not well-formed XML; otherwise the document, even when `diagnostics` gained
/// errors (a missing import, an unresolved placeholder), so that later stages can report more.
pub fn load_document(
    path: &Path,
    options: &LoadOptions,
    diagnostics: &mut Diagnostics,
) -> Option<LoadedDocument> {
    let (text, builtin) = match read_text(path, options.embedded_default) {
        Ok(read) => read,
        Err(err @ ReadError::Io(_)) => {
            diagnostics.push(err.into_diagnostic(path, None).with_hint(
                "give the path of an activemq.xml file (`ferromq check FILE`, `ferromq run --config FILE`)",
            ));
            return None;
        }
        Err(err) => {
            diagnostics.push(err.into_diagnostic(path, None));
            return None;
        }
    };
    let mut files = vec![path.to_path_buf()];
    load_text(&text, path, builtin, options, &mut files, diagnostics)
}

/// Like [`load_document`] for XML held in memory; `name` is the path diagnostics show and
/// relative paths (imports, properties files) resolve against its directory. `name` itself is
/// not listed in [`LoadedDocument::files`] since it is not read from disk.
pub fn load_document_from_str(
    text: &str,
    name: &Path,
    options: &LoadOptions,
    diagnostics: &mut Diagnostics,
) -> Option<LoadedDocument> {
    let mut files = Vec::new();
    load_text(text, name, false, options, &mut files, diagnostics)
}

/// `builtin`: `text` is the built-in copy of `name` ([`Span::builtin`]).
fn load_text(
    text: &str,
    name: &Path,
    builtin: bool,
    options: &LoadOptions,
    files: &mut Vec<PathBuf>,
    diagnostics: &mut Diagnostics,
) -> Option<LoadedDocument> {
    let mut root = match parse_text(text, name, builtin, reader::MAX_ELEMENT_DEPTH) {
        Ok(root) => root,
        Err(diagnostic) => {
            diagnostics.push(*diagnostic);
            return None;
        }
    };
    let environment = placeholders::Environment::new(name, options);
    imports::expand(&mut root, name, &environment, files, diagnostics);
    let mut from_command_line = Vec::new();
    let properties = placeholders::resolve(
        &mut root,
        &environment,
        files,
        diagnostics,
        &mut from_command_line,
    );
    Some(LoadedDocument {
        root,
        files: std::mem::take(files),
        main_file: name.to_path_buf(),
        properties,
        local_store: options.local_store,
        from_command_line,
    })
}

/// Parse one file's text, reporting positions against `name` (`builtin`: the built-in copy
/// of it, [`Span::builtin`]); `max_depth` as in [`reader::parse_document`].
fn parse_text(
    text: &str,
    name: &Path,
    builtin: bool,
    max_depth: usize,
) -> Result<Element, Box<Diagnostic>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    reader::parse_document(text, Arc::new(name.to_path_buf()), builtin, max_depth)
}

/// Why a file could not be read as text.
enum ReadError {
    Io(std::io::Error),
    Decode(encoding::DecodeError),
}

impl ReadError {
    /// `named_at`: where the file is named (an `<import>`, a bean property); I/O errors are
    /// reported there, encoding errors inside the file itself.
    fn into_diagnostic(self, path: &Path, named_at: Option<Span>) -> Diagnostic {
        let shown = path.display();
        match self {
            ReadError::Io(err) => {
                Diagnostic::error(named_at, format!("cannot read `{shown}`: {err}"))
            }
            ReadError::Decode(encoding::DecodeError::Invalid {
                encoding,
                line,
                col,
            }) => Diagnostic::error(
                Span::new(Arc::new(path.to_path_buf()), line, col),
                format!("`{shown}` is not valid {encoding}"),
            )
            .with_hint(if encoding == "UTF-8" {
                format!(
                    "ferromq reads UTF-8, UTF-16 and, when `<?xml ... encoding=\"ISO-8859-1\"?>` \
                     says so, ISO-8859-1; a file in another encoding (here probably ISO-8859-1 \
                     or Windows-1252) converts with \
                     `iconv -f WINDOWS-1252 -t UTF-8 {shown} > {shown}.utf8`"
                )
            } else {
                "the file ends in the middle of a character or holds a broken surrogate pair; \
                 save it again (as UTF-8 preferably)"
                    .to_owned()
            }),
            ReadError::Decode(encoding::DecodeError::Unsupported { declared }) => {
                Diagnostic::error(
                    Span::new(Arc::new(path.to_path_buf()), 1, 1),
                    format!(
                        "`{shown}` declares encoding `{declared}`, which ferromq does not read"
                    ),
                )
                .with_hint(format!(
                    "convert it to UTF-8: `iconv -f {declared} -t UTF-8 {shown} > {shown}.utf8`, \
                     then change the declaration to encoding=\"UTF-8\""
                ))
            }
        }
    }
}

/// A configuration file's text, decoded as its byte-order mark or XML declaration says
/// (UTF-8 when neither does); see [`encoding`].
/// `embedded`: a file of the built-in default configuration missing from disk is read from
/// the binary ([`super::embedded`]); the `bool` says it was.
fn read_text(path: &Path, embedded: bool) -> Result<(String, bool), ReadError> {
    let (bytes, builtin) = super::embedded::read(path, embedded).map_err(ReadError::Io)?;
    let text = encoding::decode(bytes).map_err(ReadError::Decode)?;
    Ok((text, builtin))
}

/// A Spring resource location (`file:`, `classpath:` or a plain path) -> a file path; relative
/// paths are relative to `base_dir`, the directory of the file that names them. `classpath:`
/// means that same directory: ActiveMQ puts its `conf` directory on the class path.
fn resource_path(location: &str, base_dir: &Path) -> Result<PathBuf, String> {
    let location = location.trim();
    let path = if let Some(rest) = location
        .strip_prefix("classpath*:")
        .or_else(|| location.strip_prefix("classpath:"))
    {
        rest.trim_start_matches('/')
    } else if let Some(rest) = location.strip_prefix("file:") {
        // file:///abs, file:/abs and file:relative
        rest.strip_prefix("//").unwrap_or(rest)
    } else if location.contains("://") {
        return Err(format!(
            "`{location}` is not a local file; only plain paths, `file:` and `classpath:` are supported"
        ));
    } else {
        location
    };
    if path.is_empty() {
        return Err("the location is empty".to_owned());
    }
    Ok(base_dir.join(path))
}

/// The directory relative paths in `file` resolve against.
fn directory_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
