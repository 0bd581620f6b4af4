//! Loaded tree -> typed [`Config`], collecting every diagnostic. (Being written: issue 2.)

use super::diagnostic::{Diagnostic, Diagnostics};
use super::model::Config;
use super::xml::LoadedDocument;

pub fn compile(doc: &LoadedDocument, diagnostics: &mut Diagnostics) -> Option<Config> {
    let _ = doc;
    diagnostics.push(Diagnostic::error(None, "compiler not implemented yet"));
    None
}
