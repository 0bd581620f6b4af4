//! The durable store on its own: records, damaged files, a full disk, and kill -9 during commits.

#[path = "../support/mod.rs"]
mod support;

mod carried;
mod crash;
mod damage;
mod disk;
mod owned;
mod records;
