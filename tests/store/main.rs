//! The durable store on its own: records, damaged files, and kill -9 during commits.

#[path = "../support/mod.rs"]
mod support;

mod crash;
mod damage;
mod owned;
mod records;
