//! The web console: its pages in a real browser (`browser`).

#[path = "../support/mod.rs"]
mod support;

mod browser;
