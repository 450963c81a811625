//! Locating the workspace's built binaries (`cairn`, `cairn-snapshot`) from
//! an end-to-end test.
//!
//! Design choice: Cargo only sets `CARGO_BIN_EXE_<name>` for a package's own
//! binaries, and these live in other workspace members, so the directory is
//! derived from the running test executable instead: tests run from
//! `target/<profile>/deps/`, binaries sit in `target/<profile>/`. The
//! environment variable `CAIRN_BIN_DIR` overrides this (e.g. to test an
//! installed build). Nothing is built here: a missing binary is a panic
//! telling the developer to run `cargo build --workspace` first.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Environment variable naming the directory that holds the binaries.
pub const BIN_DIR_ENV: &str = "CAIRN_BIN_DIR";

/// Where the binaries are.
#[derive(Debug, Clone)]
pub struct Bins {
    dir: PathBuf,
    /// How `dir` was found (for messages).
    source: String,
}

impl Bins {
    /// `$CAIRN_BIN_DIR`, else the parent of the test executable's `deps/`
    /// directory, else `<workspace>/target/debug`.
    pub fn locate() -> Bins {
        if let Some(d) = std::env::var_os(BIN_DIR_ENV).filter(|d| !d.is_empty()) {
            return Bins {
                dir: PathBuf::from(d),
                source: format!("${BIN_DIR_ENV}"),
            };
        }
        if let Ok(exe) = std::env::current_exe() {
            if let Some(dir) = exe.parent() {
                let dir = if dir.file_name().is_some_and(|n| n == "deps") {
                    dir.parent().unwrap_or(dir)
                } else {
                    dir
                };
                return Bins {
                    dir: dir.to_path_buf(),
                    source: format!("the test executable {}", exe.display()),
                };
            }
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
        Bins {
            dir: target.join("debug"),
            source: "the default target directory".to_string(),
        }
    }

    /// Use an explicit directory.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Bins {
        Bins {
            dir: dir.into(),
            source: "an explicit directory".to_string(),
        }
    }

    /// The directory searched.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The binary's path if it exists.
    pub fn try_path(&self, name: &str) -> Option<PathBuf> {
        let p = self.dir.join(name);
        p.is_file().then_some(p)
    }

    /// The binary's path; panics with instructions if it is missing.
    pub fn path(&self, name: &str) -> PathBuf {
        match self.try_path(name) {
            Some(p) => p,
            None => panic!(
                "binary `{name}` not found in {} (located via {}): run `cargo build --workspace` \
                 first (same profile as the tests), or set {BIN_DIR_ENV} to the directory that \
                 holds it",
                self.dir.display(),
                self.source
            ),
        }
    }

    /// A `Command` for the binary; panics with instructions if missing.
    pub fn cmd(&self, name: &str) -> Command {
        Command::new(self.path(name))
    }
}
