//! The broker as a network server: one accept loop per connector ([`listener`]), the running
//! listeners reconciled with each reloaded configuration ([`listener_set`]), and what a reload
//! applies to a running broker ([`apply`]).

pub mod apply;
pub mod listener;
pub mod listener_set;
