//! Spring's `<import resource="jetty.xml"/>`: the imported file's root children replace the
//! `<import>` element. Locations are relative to the importing file; `file:` and `classpath:`
//! prefixes are accepted (ActiveMQ's class path holds its `conf` directory, the usual home of
//! both files). An import cycle is an error that names the chain.

use std::path::{Path, PathBuf};

use super::placeholders::Environment;
use super::reader::MAX_ELEMENT_DEPTH;
use super::{directory_of, parse_text, read_text, resource_path, ReadError};
use crate::config::diagnostic::{Diagnostic, Diagnostics};
use crate::config::tree::{Element, Namespace};

/// More files than any real configuration imports; bounds the work a file that imports the
/// same files over and over can cause.
const MAX_IMPORTED_FILES: usize = 256;

/// Replace every `<import>` under `root` (read from `file`) with the imported elements.
pub(super) fn expand(
    root: &mut Element,
    file: &Path,
    environment: &Environment,
    files: &mut Vec<PathBuf>,
    diagnostics: &mut Diagnostics,
) {
    let mut expander = Expander {
        environment,
        files,
        diagnostics,
        chain: vec![ChainEntry::new(file)],
        imported_count: 0,
    };
    expander.expand(root, file, 1);
}

/// A file on the current import chain: the path as named (for messages) and as canonicalised
/// (to recognise the same file reached by two spellings).
struct ChainEntry {
    shown: PathBuf,
    canonical: PathBuf,
}

impl ChainEntry {
    fn new(path: &Path) -> Self {
        ChainEntry {
            shown: path.to_path_buf(),
            canonical: std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
        }
    }
}

struct Expander<'a> {
    environment: &'a Environment,
    files: &'a mut Vec<PathBuf>,
    diagnostics: &'a mut Diagnostics,
    chain: Vec<ChainEntry>,
    imported_count: usize,
}

fn is_beans(element: &Element, name: &str) -> bool {
    element.ns == Namespace::Beans && element.name == name
}

impl Expander<'_> {
    /// Imports are children of `<beans>` (the root or a nested profile `<beans>`). `depth`:
    /// `element`'s depth in the spliced tree (root = 1), so that an imported file gets only the
    /// nesting depth left below its `<import>`.
    fn expand(&mut self, element: &mut Element, file: &Path, depth: usize) {
        if !is_beans(element, "beans") {
            return;
        }
        let children = std::mem::take(&mut element.children);
        for mut child in children {
            if is_beans(&child, "import") {
                let imported = self.import(&child, file, depth);
                element.children.extend(imported);
            } else {
                self.expand(&mut child, file, depth + 1);
                element.children.push(child);
            }
        }
    }

    /// The elements an `<import>` stands for; none (and a diagnostic) when it cannot be read.
    /// `parent_depth`: the depth of the `<beans>` holding the `<import>`.
    fn import(
        &mut self,
        import: &Element,
        including_file: &Path,
        parent_depth: usize,
    ) -> Vec<Element> {
        let Some(resource) = import.attr("resource") else {
            self.diagnostics.push(
                Diagnostic::error(
                    import.span.clone(),
                    "`<import>` has no `resource` attribute",
                )
                .with_hint("write <import resource=\"other.xml\"/>"),
            );
            return Vec::new();
        };
        let location = match self.environment.resolve_location(&resource.raw) {
            Ok(location) => location,
            Err(err) => {
                self.diagnostics.push(
                    Diagnostic::error(resource.value_span.clone(), err.to_string()).with_hint(
                        "an import location is resolved against --set/-D values, environment \
                         variables and the activemq.* defaults only",
                    ),
                );
                return Vec::new();
            }
        };
        let path = match resource_path(&location, &directory_of(including_file)) {
            Ok(path) => path,
            Err(message) => {
                self.diagnostics
                    .push(Diagnostic::error(resource.value_span.clone(), message));
                return Vec::new();
            }
        };
        let entry = ChainEntry::new(&path);
        if self.chain.iter().any(|e| e.canonical == entry.canonical) {
            let mut names: Vec<String> = self
                .chain
                .iter()
                .map(|e| e.shown.display().to_string())
                .collect();
            names.push(entry.shown.display().to_string());
            self.diagnostics.push(
                Diagnostic::error(
                    import.span.clone(),
                    format!("import cycle: {}", names.join(" -> ")),
                )
                .with_hint("remove this <import>: a file cannot import itself, directly or through other files"),
            );
            return Vec::new();
        }
        self.imported_count += 1;
        if self.imported_count > MAX_IMPORTED_FILES {
            self.diagnostics.push(Diagnostic::error(
                import.span.clone(),
                format!("more than {MAX_IMPORTED_FILES} imports; not following this one"),
            ));
            return Vec::new();
        }
        let (text, builtin) = match read_text(&path, self.environment.embedded_default) {
            Ok(read) => read,
            Err(err) => {
                let not_found =
                    matches!(&err, ReadError::Io(e) if e.kind() == std::io::ErrorKind::NotFound);
                let mut diagnostic = err.into_diagnostic(&path, Some(import.span.clone()));
                if not_found {
                    diagnostic = Diagnostic::error(
                        import.span.clone(),
                        format!("imported file `{}` does not exist", path.display()),
                    )
                    .with_hint(
                        "import locations are relative to the importing file's directory; \
                         `file:` and `classpath:` prefixes are accepted",
                    );
                }
                self.diagnostics.push(diagnostic);
                return Vec::new();
            }
        };
        self.files.push(path.clone());
        // The imported root (or, for `<beans>`, its children) lands below the parent.
        let depth_left = MAX_ELEMENT_DEPTH.saturating_sub(parent_depth);
        let mut root = match parse_text(&text, &path, builtin, depth_left) {
            Ok(root) => root,
            Err(diagnostic) => {
                self.diagnostics.push(*diagnostic);
                return Vec::new();
            }
        };
        self.chain.push(entry);
        self.expand(&mut root, &path, parent_depth);
        self.chain.pop();
        if is_beans(&root, "beans") {
            root.children
        } else {
            vec![root]
        }
    }
}
