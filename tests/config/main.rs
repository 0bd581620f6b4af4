//! Configuration: reading `activemq.xml` (imports, placeholders, never panicking on any input),
//! `ferromq check` on the shipped and golden configurations, ActiveMQ's own example
//! configurations checked and run, and docs/migration.md followed step by step.

#[path = "../support/mod.rs"]
mod support;

mod activemq_examples;
mod check;
mod embedded_default;
mod migration_guide;
mod packaging;
mod preflight;
mod xml;
