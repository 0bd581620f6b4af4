//! `activemq.xml` -> typed [`Config`]. Nothing in this module opens a socket.
//!
//! Flow: [`xml`] reads the file (following `<import>`, resolving `${...}` placeholders) into a
//! [`tree::Element`] tree where every element and attribute keeps its file:line:column;
//! [`compile`] turns that tree into a [`Config`], collecting every [`Diagnostic`] in one pass.

pub mod compile;
pub mod delivery_policy;
pub mod diagnostic;
pub mod diff;
pub mod embedded;
pub mod jaas;
pub mod jasypt;
pub mod known_names;
pub mod ldap;
pub mod model;
pub mod properties;
pub mod report;
mod report_delivery;
pub mod stomp_options;
pub mod tree;
pub mod uri;
pub mod values;
pub mod virtual_destinations;
pub mod xml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use diagnostic::{Diagnostic, Diagnostics, Severity, Span};
pub use model::*;
pub use stomp_options::{HeartBeat, StompOptions};

/// How to load a configuration: values given on the command line and whether the process
/// environment is consulted for placeholders.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// `--set name=value` / `-Dname=value`: override properties files, like Java system
    /// properties.
    pub overrides: BTreeMap<String, String>,
    /// Look placeholders up in environment variables after files and overrides (default true).
    pub use_env: bool,
    /// `--local-store`: run a shared or replicated store configuration (JDBC, a shared-file or
    /// database locker) on ferromq's local store with a warning instead of refusing it.
    pub local_store: bool,
    /// Load the default configuration built into the binary (see [`embedded`]): a file of it
    /// missing from `./conf/` is read from the binary instead.
    pub embedded_default: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            overrides: BTreeMap::new(),
            use_env: true,
            local_store: false,
            embedded_default: false,
        }
    }
}

/// The outcome of a load: the configuration when there were no errors, and every diagnostic.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Option<Config>,
    pub diagnostics: Diagnostics,
}

impl Loaded {
    /// The configuration, or every diagnostic when there were errors.
    pub fn into_result(self) -> Result<Config, Diagnostics> {
        match self.config {
            Some(c) if !self.diagnostics.has_errors() => Ok(c),
            _ => Err(self.diagnostics),
        }
    }
}

/// Load and compile a configuration file.
pub fn load_file(path: &Path, options: &LoadOptions) -> Loaded {
    let mut diagnostics = Diagnostics::default();
    let config = xml::load_document(path, options, &mut diagnostics)
        .and_then(|doc| compile::compile(&doc, &mut diagnostics));
    finish(config, diagnostics)
}

/// Load and compile XML held in memory (tests, embedded configs). Relative paths in it
/// (imports, properties files, `activemq.base` defaults) resolve against `base_dir`; diagnostics
/// name the file `base_dir/<memory>.xml`.
pub fn load_str(xml_text: &str, base_dir: &Path, options: &LoadOptions) -> Loaded {
    let mut diagnostics = Diagnostics::default();
    let name: PathBuf = base_dir.join("<memory>.xml");
    let config = xml::load_document_from_str(xml_text, &name, options, &mut diagnostics)
        .and_then(|doc| compile::compile(&doc, &mut diagnostics));
    finish(config, diagnostics)
}

fn finish(config: Option<Config>, diagnostics: Diagnostics) -> Loaded {
    let config = if diagnostics.has_errors() {
        None
    } else {
        config
    };
    Loaded {
        config,
        diagnostics,
    }
}
