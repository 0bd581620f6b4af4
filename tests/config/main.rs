//! Configuration: reading `activemq.xml` (imports, placeholders, never panicking on any input)
//! and `ferromq check` on the shipped and golden configurations.

mod check;
mod preflight;
mod xml;
