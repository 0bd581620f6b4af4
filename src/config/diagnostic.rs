//! Diagnostics: what is wrong, where (file:line:column) and what to do about it.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

/// A position in a configuration file. Lines and columns are 1-based; columns count characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Span {
    pub file: Arc<PathBuf>,
    pub line: u32,
    pub col: u32,
    /// The text was the copy built into the binary, not a file on disk
    /// ([`crate::config::embedded`]): `file` is where it stands in, which does not exist.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub builtin: bool,
}

impl Span {
    pub fn new(file: Arc<PathBuf>, line: u32, col: u32) -> Self {
        Span {
            file,
            line,
            col,
            builtin: false,
        }
    }
}

/// `file:line:col`; for the built-in copy `built-in conf/activemq.xml:line:col (embedded in
/// the binary)`, so that no one looks for the absolute path of a file that is not on disk.
impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.builtin {
            let name = self.file.file_name().unwrap_or(self.file.as_os_str());
            return write!(
                f,
                "built-in {}/{}:{}:{} (embedded in the binary)",
                crate::config::embedded::CONF_DIR,
                name.to_string_lossy(),
                self.line,
                self.col
            );
        }
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Note,
    Warning,
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One finding about a configuration. Rendered as `file:line:col: error: message` followed by an
/// indented `hint:` line when there is a hint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Where the problem is; `None` for problems with no position (a file that cannot be opened is
    /// reported at the place that names it, so this is rare).
    pub span: Option<Span>,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(span: impl Into<Option<Span>>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            span: span.into(),
            message: message.into(),
            hint: None,
        }
    }

    pub fn warning(span: impl Into<Option<Span>>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            span: span.into(),
            message: message.into(),
            hint: None,
        }
    }

    pub fn note(span: impl Into<Option<Span>>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Note,
            span: span.into(),
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(span) = &self.span {
            write!(f, "{span}: ")?;
        }
        write!(f, "{}: {}", self.severity, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Collected diagnostics of one load; errors and warnings together, in the order found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.is_error())
    }
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Warning)
    }
    pub fn extend(&mut self, other: impl IntoIterator<Item = Diagnostic>) {
        self.0.extend(other)
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_in_the_built_in_copy_names_no_path_on_disk() {
        let file = Arc::new(PathBuf::from("/srv/nowhere/conf/activemq.xml"));
        let on_disk = Span::new(Arc::clone(&file), 26, 13);
        assert_eq!(on_disk.to_string(), "/srv/nowhere/conf/activemq.xml:26:13");
        let builtin = Span {
            builtin: true,
            ..on_disk
        };
        assert_eq!(
            builtin.to_string(),
            "built-in conf/activemq.xml:26:13 (embedded in the binary)"
        );
    }
}
