//! cairn's Debian package and `make install`, for the tests that install them.
//!
//! [`deb`] builds `target/debian/cairn_VERSION_ARCH.deb` with `make deb` (a release
//! build, then a staged `make install PREFIX=/usr` and `dpkg-deb`) and returns its path.
//! nextest runs every test in its own process, so "once" needs a lock across processes:
//! an exclusive `flock(2)` on `target/debian/.deb.lock`, held while `make deb` runs. Make
//! itself decides whether anything is to be done: the .deb is rebuilt only when one of
//! its inputs (the release binaries, units, man pages, packaging files…) is newer, and
//! cargo leaves the binaries alone when no source changed, so a second caller, in this
//! process or another, gets the same file back in a second or two. The first build takes
//! minutes (a release build of the workspace).
//!
//! [`make`] runs the project's Makefile with a clean make environment (no `MAKEFLAGS`
//! of an enclosing `make test`, no stray `PREFIX`/`DESTDIR` from the environment).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The variables the Makefile takes from the environment (`?=`), removed from `make`'s
/// environment so that only what a test passes applies.
pub const MAKE_VARIABLES: &[&str] = &[
    "MAKEFLAGS",
    "MFLAGS",
    "MAKELEVEL",
    "MAKEOVERRIDES",
    "GNUMAKEFLAGS",
    "PREFIX",
    "DESTDIR",
    "BINDIR",
    "DATADIR",
    "MANDIR",
    "SYSTEMDUNITDIR",
    "SYSUSERSDIR",
    "TMPFILESDIR",
    "CATALOGDIR",
    "DBUSPOLICYDIR",
    "PKGDATADIR",
    "BASHCOMPDIR",
    "ZSHCOMPDIR",
    "MANGZ",
    "INSTALL",
];

/// The checkout (the workspace root, where the Makefile is).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Cargo's target directory, as the Makefile finds it (`$CARGO_TARGET_DIR`, else
/// `target/` in the checkout).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(d) => workspace().join(d),
        None => workspace().join("target"),
    }
}

/// The package's version: the workspace's (this crate's version is the workspace's).
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// `dpkg --print-architecture`.
pub fn architecture() -> String {
    let o = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .expect("run dpkg --print-architecture");
    assert!(o.status.success(), "dpkg --print-architecture: {o:?}");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// `make -C <checkout> ARGS…` with a clean make environment; returns its output (stdout
/// and stderr). Does not check the exit status.
pub fn make(args: &[&str]) -> Output {
    let mut cmd = Command::new("make");
    cmd.arg("--no-print-directory").arg("-C").arg(workspace());
    cmd.args(args);
    for v in MAKE_VARIABLES {
        cmd.env_remove(v);
    }
    cmd.output().expect("run make")
}

/// The built package, `target/debian/cairn_VERSION_ARCH.deb`, up to date with the
/// checkout: built by `make deb` under a lock shared by every test process (see the
/// module doc). Panics with the end of make's output if the build fails.
pub fn deb() -> PathBuf {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let dir = target_dir().join("debian");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let lock_path = dir.join(".deb.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .unwrap_or_else(|e| panic!("open {}: {e}", lock_path.display()));
        // Blocks while another test process builds; released when `lock` is closed.
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .unwrap_or_else(|e| panic!("flock {}: {e}", lock_path.display()));
        let o = make(&["deb"]);
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            o.status.success(),
            "make deb failed ({}):\n{}",
            o.status,
            tail(&out, 60)
        );
        let deb = dir.join(format!("cairn_{}_{}.deb", version(), architecture()));
        assert!(
            deb.is_file(),
            "make deb succeeded but {} is not there:\n{}",
            deb.display(),
            tail(&out, 30)
        );
        drop(lock);
        deb
    })
    .clone()
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
