//! cairn's library: everything the binaries do lives here, one module per concern.
//! The binaries under `bins/` only parse arguments and call into this crate.

pub mod alert;
pub mod app;
pub mod archiver;
pub mod atomic;
pub mod backend;
pub mod cache;
pub mod check;
pub mod chunker;
pub mod codec;
pub mod config;
pub mod crypto;
pub mod drill;
pub mod dump;
pub mod fsmeta;
pub mod fstab;
pub mod heartbeat;
pub mod http;
pub mod keys;
pub mod mount;
pub mod overview;
pub mod preflight;
pub mod prune;
pub mod quiesce;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod setup;
pub mod snapshot_stage;
pub mod stage;
pub mod systemd;
pub mod tarexport;
pub mod tree;
pub mod upload;
pub mod util;
pub mod walk;
