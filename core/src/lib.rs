//! cairn's library: everything the binaries do lives here, one module per concern.
//! The binaries under `bins/` only parse arguments and call into this crate.

pub mod atomic;
pub mod config;
pub mod stage;
