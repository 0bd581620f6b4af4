//! `ferromq check` output: diagnostics, then a summary of the runtime graph. (Being written.)

use super::Loaded;

/// Human-readable report: every diagnostic (`file:line:col: severity: message` + hint), then a
/// summary of what the broker would build.
pub fn text(loaded: &Loaded) -> String {
    loaded.diagnostics.to_string()
}

/// The same as JSON: `{"valid": bool, "diagnostics": [...], "summary": {...}}`.
pub fn json(loaded: &Loaded) -> String {
    serde_json::json!({
        "valid": !loaded.diagnostics.has_errors(),
        "diagnostics": loaded.diagnostics.0,
    })
    .to_string()
}
