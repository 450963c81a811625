//! Test support for cairn's end-to-end tests.
//!
//! - [`fixture`]: builds a deterministic tree holding every kind of entry
//!   and metadata a backup must preserve, and reports what it skipped.
//! - [`compare`]: compares two trees exactly (content, modes, owners,
//!   nanosecond mtimes, xattrs and ACLs, hardlink structure, holes).
//! - [`tarcheck`]: compares a POSIX pax tar export with a tree.
//! - [`bins`]: finds the built `cairn` / `cairn-snapshot` binaries.
//! - [`fsutil`], [`acl`]: the dirfd-relative and ACL helpers underneath,
//!   public for tests that need to reach or plant things beyond `PATH_MAX`.
//!
//! All paths inside trees are raw bytes relative to the tree root (`b""`
//! is the root), so names that are not UTF-8 and paths longer than
//! `PATH_MAX` are first-class.

pub mod acl;
pub mod bins;
pub mod compare;
pub mod container;
pub mod disk;
pub mod faultproxy;
pub mod fixture;
pub mod fsutil;
pub mod garage;
pub mod httpsink;
pub mod mariadb;
pub mod mta;
pub mod netns;
pub mod nsrun;
pub mod package;
pub mod pg;
pub mod promparse;
pub mod tarcheck;

pub use bins::Bins;

/// A command's stdout then stderr, as one string: what a failed assertion shows.
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
pub use compare::{
    assert_trees_equal, compare_trees, format_differences, CompareOpts, DiffKind, Difference,
    SparseCheck,
};
pub use fixture::{build_full_tree, build_full_tree_with, FixtureOpts, Manifest};
pub use fsutil::FileKind;
pub use tarcheck::{assert_tar_matches_tree, compare_tar_with_tree};
