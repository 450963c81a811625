//! A deterministic "everything a backup must preserve" tree.
//!
//! [`build_full_tree`] fills an empty directory with one or more of every
//! kind of entry and metadata the fidelity brief names (see the list in
//! [`build_full_tree_with`]), and returns a [`Manifest`] of what it made and
//! what it had to skip (not root, or the filesystem lacks a feature).
//!
//! Design choices:
//! - Every operation is dirfd-relative (`openat`/`mkdirat`/`symlinkat`/
//!   `linkat`/`mknodat`/`utimensat` via rustix), so the same code builds
//!   the >`PATH_MAX` branch as the shallow ones.
//! - Content comes from a seeded SplitMix64 generator, and every entry gets
//!   a fixed, distinct mtime with nonzero nanoseconds (one entry has
//!   exactly `.000000000`, one is before 1970, one after 2038). Building
//!   twice with the same seed therefore yields trees that compare equal.
//! - Times are set in a final pass: non-directories first, then
//!   directories deepest first, then the root — so creating contents never
//!   disturbs a directory's mtime after it was set. Directory modes and
//!   owners are also applied in a late pass (so 0700/0751 dirs owned by
//!   someone else never block creating their contents).
//! - POSIX ACLs are written as the kernel's binary xattrs
//!   (`system.posix_acl_access`/`_default`, see [`crate::acl`]); no
//!   `setfacl` needed.

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timestamps};
use rustix::io::Errno;
use rustix::time::Timespec;

use crate::acl::{self, Acl, Tag};
use crate::fsutil::{self, display_path, FileKind};

/// A small, fast, deterministic generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Prng {
        Prng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
}

/// Fixture knobs.
#[derive(Debug, Clone)]
pub struct FixtureOpts {
    /// Seed for all generated content.
    pub seed: u64,
    /// Size of the "big" random file (default 3 MiB + 12345 bytes).
    pub big_file_size: usize,
    /// Logical size of the main sparse file (default 64 MiB).
    pub sparse_size: u64,
}

impl Default for FixtureOpts {
    fn default() -> Self {
        FixtureOpts {
            seed: 0x00ca_112e_5eed,
            big_file_size: 3 * 1024 * 1024 + 12345,
            sparse_size: 64 * 1024 * 1024,
        }
    }
}

/// One created entry.
#[derive(Debug, Clone)]
pub struct Item {
    /// Stable name for the entry (e.g. `"setuid_file"`, `"sparse_tail_hole"`).
    pub key: String,
    /// Path relative to the root, raw bytes.
    pub path: Vec<u8>,
    pub kind: FileKind,
    /// Free-form detail (mode, owner, target, ...).
    pub note: String,
}

/// Something the fixture did not create (or created without the feature).
#[derive(Debug, Clone)]
pub struct Skipped {
    pub key: String,
    pub reason: String,
}

/// Which optional features ended up in the tree.
#[derive(Debug, Clone, Default)]
pub struct Features {
    pub user_xattrs: bool,
    pub acls: bool,
    pub holes: bool,
    pub devices: bool,
    pub ownership: bool,
}

/// What [`build_full_tree`] made.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub root: PathBuf,
    pub seed: u64,
    /// Whether the fixture ran with euid 0.
    pub as_root: bool,
    pub items: Vec<Item>,
    pub skipped: Vec<Skipped>,
    pub features: Features,
}

impl Manifest {
    /// The item with this key, if it was created.
    pub fn get(&self, key: &str) -> Option<&Item> {
        self.items.iter().find(|i| i.key == key)
    }

    /// The relative path of the item with this key; panics with a clear
    /// message if the fixture did not create it.
    pub fn path(&self, key: &str) -> &[u8] {
        match self.get(key) {
            Some(i) => &i.path,
            None => panic!(
                "fixture item {key:?} was not created{}",
                self.skip_reason(key)
                    .map(|r| format!(" (skipped: {r})"))
                    .unwrap_or_default()
            ),
        }
    }

    /// Why an item was skipped, if it was.
    pub fn skip_reason(&self, key: &str) -> Option<&str> {
        self.skipped
            .iter()
            .find(|s| s.key == key)
            .map(|s| s.reason.as_str())
    }

    /// Items whose key starts with `prefix`.
    pub fn items_with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a Item> {
        self.items.iter().filter(move |i| i.key.starts_with(prefix))
    }
}

impl fmt::Display for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "fixture at {} (seed {:#x}, as root: {}): {} entries",
            self.root.display(),
            self.seed,
            self.as_root,
            self.items.len()
        )?;
        writeln!(f, "features: {:?}", self.features)?;
        if self.skipped.is_empty() {
            writeln!(f, "nothing skipped")?;
        }
        for s in &self.skipped {
            writeln!(f, "skipped {}: {}", s.key, s.reason)?;
        }
        Ok(())
    }
}

/// Environment variable naming the directory in which [`tempdir`] creates
/// fixture directories (default: the system temp dir). It must be on a
/// filesystem with user xattrs, POSIX ACLs and `SEEK_HOLE` (ext4, xfs,
/// btrfs, tmpfs ≥ 6.6) for the whole fixture to be built.
pub const TMPDIR_ENV: &str = "CAIRN_TEST_TMPDIR";

/// A fresh temporary directory for a fixture tree (see [`TMPDIR_ENV`]).
pub fn tempdir() -> Result<tempfile::TempDir> {
    let base = std::env::var_os(TMPDIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix("cairn-test-")
        .tempdir_in(&base)
        .with_context(|| format!("create a temporary directory in {}", base.display()))
}

/// Length of each directory component on the long path.
pub const LONG_COMPONENT_LEN: usize = 200;
/// Number of nested directories on the long path (22 × 201 > 4096).
pub const LONG_DEPTH: usize = 22;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

/// Build the full tree under the existing empty directory `root` with the
/// default options. See [`build_full_tree_with`].
pub fn build_full_tree(root: &Path) -> Result<Manifest> {
    build_full_tree_with(root, &FixtureOpts::default())
}

/// Build the full tree under the existing empty directory `root`.
///
/// Creates (keys in parentheses; all paths relative to `root`):
/// - `big.bin` random content (`big_file`), `empty` (`empty_file`)
/// - `dirs/private` 0700 (`dir_0700`), `dirs/private/inner` 0751
///   (`dir_0751`), `dirs/sticky` 01777 (`dir_sticky`), `dirs/setgid-dir`
///   02775 (`dir_setgid`), `dirs/empty-dir` (`empty_dir`)
/// - `modes/setuid` 04755, `modes/setgid` 02755, `modes/all-special`
///   07755, `modes/odd-0604`; as root also `modes/mode-0000` and
///   `modes/exec-only` 0111 (unreadable to their owner otherwise)
/// - symlinks `links/relative`, `links/absolute`, `links/dangling`,
///   `links/to-dir`, `links/non-utf8-target`, `links/long-target` (300
///   bytes)
/// - hardlinks: `hardlinks/a/two`+`hardlinks/b/two` (`hardlink2_*`),
///   `hardlinks/a/three`+`b/three`+`c/three` (`hardlink3_*`), and
///   `long/link-to-deep-leaf` sharing the inode of the deep leaf
/// - `special/fifo`; as root `special/char-1-3` and `special/block-7-200`
/// - as root: `owners/by-name` (file), `owners/by-name-dir` (dir),
///   `owners/link-by-name` (symlink) owned by nobody/nogroup (or daemon),
///   `owners/by-number` owned by an unnamed uid:gid (54321:54322 or next
///   free)
/// - `xattrs/file`, `xattrs/dir` with binary `user.*` xattrs
/// - `acl/dir` with an access and a default ACL, `acl/dir/inherited` and
///   `acl/dir/subdir` inheriting it, `acl/file` with an access ACL
/// - `sparse/holes` (starts with a hole, ends with data), `sparse/tail-hole`
///   (ends in a hole), `sparse/all-hole`
/// - `names/caf\xe9` file, `names/\xff\xfe/` dir with `\x80inside`, a name
///   with a newline, one with a leading space, a 255-byte name
/// - `long/` + 22 nested 200-byte directories + `leaf.txt` (>PATH_MAX),
///   with a symlink and an xattr at the bottom
/// - `mtimes/pre-epoch`, `mtimes/post-2038`, `mtimes/whole-second`
pub fn build_full_tree_with(root: &Path, opts: &FixtureOpts) -> Result<Manifest> {
    let rootfd = fsutil::open_root(root).with_context(|| format!("open {}", root.display()))?;
    {
        let mut dir = rustix::fs::Dir::read_from(&rootfd)?;
        while let Some(e) = dir.read() {
            let e = e?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                bail!("fixture root {} is not empty", root.display());
            }
        }
    }
    let mut b = Builder {
        rootfd,
        rng: Prng::new(opts.seed),
        m: Manifest {
            root: root.to_path_buf(),
            seed: opts.seed,
            as_root: fsutil::is_root(),
            items: Vec::new(),
            skipped: Vec::new(),
            features: Features::default(),
        },
        late_dirs: Vec::new(),
        special_times: Vec::new(),
    };
    b.build(opts)?;
    b.finish()?;
    Ok(b.m)
}

/// (path, mode, owner) of a directory finished in the late pass.
type LateDir = (Vec<u8>, Option<u32>, Option<(u32, u32)>);

struct Builder {
    rootfd: OwnedFd,
    rng: Prng,
    m: Manifest,
    /// Directories whose owner and mode are applied after all contents
    /// exist: (path, mode, owner).
    late_dirs: Vec<LateDir>,
    /// Entries with a hand-picked mtime.
    special_times: Vec<(Vec<u8>, (i64, u32))>,
}

fn is_privilege_error(e: Errno) -> bool {
    matches!(e, Errno::PERM | Errno::ACCESS | Errno::INVAL)
}

fn is_unsupported(e: Errno) -> bool {
    e == Errno::NOTSUP || e == Errno::OPNOTSUPP
}

fn long_component(i: usize) -> Vec<u8> {
    let mut c = format!("L{i:02}-").into_bytes();
    c.resize(LONG_COMPONENT_LEN, b'x');
    c
}

/// The relative path of the deep file on the long path (for callers).
pub fn long_leaf_path() -> Vec<u8> {
    let mut p = b"long".to_vec();
    for i in 0..LONG_DEPTH {
        p.push(b'/');
        p.extend(long_component(i));
    }
    p.extend_from_slice(b"/leaf.txt");
    p
}

impl Builder {
    fn item(&mut self, key: &str, path: &[u8], kind: FileKind, note: impl Into<String>) {
        self.m.items.push(Item {
            key: key.to_string(),
            path: path.to_vec(),
            kind,
            note: note.into(),
        });
    }

    fn skip(&mut self, key: &str, reason: impl Into<String>) {
        self.m.skipped.push(Skipped {
            key: key.to_string(),
            reason: reason.into(),
        });
    }

    fn parent(&self, rel: &[u8]) -> Result<(OwnedFd, Vec<u8>)> {
        fsutil::open_parent(self.rootfd.as_fd(), rel)
            .with_context(|| format!("resolve parent of {}", display_path(rel)))
    }

    /// mkdir with a private mode now; `mode`/`owner` are applied late.
    fn mkdir(
        &mut self,
        key: &str,
        rel: &[u8],
        mode: Option<u32>,
        owner: Option<(u32, u32)>,
    ) -> Result<()> {
        let (p, name) = self.parent(rel)?;
        rustix::fs::mkdirat(&p, name.as_slice(), Mode::from_raw_mode(0o700))
            .with_context(|| format!("mkdir {}", display_path(rel)))?;
        self.late_dirs.push((rel.to_vec(), mode, owner));
        let note = mode.map(|m| format!("mode {m:04o}")).unwrap_or_default();
        self.item(key, rel, FileKind::Dir, note);
        Ok(())
    }

    /// Create a regular file with `content`, then chown (if asked), then
    /// chmod (if asked; after chown, which would clear set-id bits).
    fn file(
        &mut self,
        key: &str,
        rel: &[u8],
        content: &[u8],
        mode: Option<u32>,
        owner: Option<(u32, u32)>,
    ) -> Result<OwnedFd> {
        let (p, name) = self.parent(rel)?;
        let fd = rustix::fs::openat(
            &p,
            name.as_slice(),
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .with_context(|| format!("create {}", display_path(rel)))?;
        let mut f = File::from(fd);
        f.write_all(content)
            .with_context(|| format!("write {}", display_path(rel)))?;
        let fd = OwnedFd::from(f);
        if let Some((u, g)) = owner {
            rustix::fs::fchown(
                &fd,
                Some(rustix::fs::Uid::from_raw(u)),
                Some(rustix::fs::Gid::from_raw(g)),
            )
            .with_context(|| format!("chown {} to {u}:{g}", display_path(rel)))?;
        }
        if let Some(m) = mode {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(m))
                .with_context(|| format!("chmod {}", display_path(rel)))?;
        }
        let note = mode.map(|m| format!("mode {m:04o}")).unwrap_or_default();
        self.item(key, rel, FileKind::File, note);
        Ok(fd)
    }

    fn symlink(&mut self, key: &str, rel: &[u8], target: &[u8]) -> Result<()> {
        let (p, name) = self.parent(rel)?;
        rustix::fs::symlinkat(target, &p, name.as_slice())
            .with_context(|| format!("symlink {}", display_path(rel)))?;
        let note = format!("-> {}", fsutil::display_bytes(target));
        self.item(key, rel, FileKind::Symlink, note);
        Ok(())
    }

    fn hardlink(&mut self, key: &str, rel: &[u8], existing: &[u8]) -> Result<()> {
        let (op, oname) = self.parent(existing)?;
        let (np, nname) = self.parent(rel)?;
        rustix::fs::linkat(
            &op,
            oname.as_slice(),
            &np,
            nname.as_slice(),
            AtFlags::empty(),
        )
        .with_context(|| format!("link {} -> {}", display_path(rel), display_path(existing)))?;
        let note = format!("hardlink of {}", display_path(existing));
        self.item(key, rel, FileKind::File, note);
        Ok(())
    }

    fn chmod(&self, rel: &[u8], mode: u32) -> Result<()> {
        let (p, name) = self.parent(rel)?;
        rustix::fs::chmodat(
            &p,
            name.as_slice(),
            Mode::from_raw_mode(mode),
            AtFlags::empty(),
        )
        .with_context(|| format!("chmod {}", display_path(rel)))
    }

    fn chown_nofollow(&self, rel: &[u8], uid: u32, gid: u32) -> std::result::Result<(), Errno> {
        let (p, name) = self.parent(rel).map_err(|_| Errno::NOENT)?;
        rustix::fs::chownat(
            &p,
            name.as_slice(),
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
    }

    fn set_xattr(&self, rel: &[u8], name: &[u8], value: &[u8]) -> std::io::Result<()> {
        let (p, n) = fsutil::open_parent(self.rootfd.as_fd(), rel)?;
        fsutil::set_xattr(p.as_fd(), &n, name, value)
    }

    fn build(&mut self, opts: &FixtureOpts) -> Result<()> {
        let as_root = self.m.as_root;

        // --- regular files -------------------------------------------------
        let big = self.rng.bytes(opts.big_file_size);
        self.file("big_file", b"big.bin", &big, Some(0o644), None)?;
        self.file("empty_file", b"empty", b"", Some(0o644), None)?;

        // --- directories with modes ----------------------------------------
        self.mkdir("dirs", b"dirs", Some(0o755), None)?;
        self.mkdir("dir_0700", b"dirs/private", Some(0o700), None)?;
        self.mkdir("dir_0751", b"dirs/private/inner", Some(0o751), None)?;
        let c = self.rng.bytes(100);
        self.file(
            "nested_file",
            b"dirs/private/inner/note.bin",
            &c,
            Some(0o640),
            None,
        )?;
        self.mkdir("dir_sticky", b"dirs/sticky", Some(0o1777), None)?;
        self.file(
            "file_in_sticky",
            b"dirs/sticky/scratch",
            b"tmp\n",
            Some(0o666),
            None,
        )?;
        self.mkdir("dir_setgid", b"dirs/setgid-dir", Some(0o2775), None)?;
        self.file(
            "file_in_setgid_dir",
            b"dirs/setgid-dir/shared",
            b"s\n",
            Some(0o664),
            None,
        )?;
        self.mkdir("empty_dir", b"dirs/empty-dir", Some(0o755), None)?;

        // --- file modes -----------------------------------------------------
        self.mkdir("modes", b"modes", Some(0o755), None)?;
        self.file(
            "setuid_file",
            b"modes/setuid",
            b"#!/bin/sh\n",
            Some(0o4755),
            None,
        )?;
        self.file(
            "setgid_file",
            b"modes/setgid",
            b"#!/bin/sh\n",
            Some(0o2755),
            None,
        )?;
        self.file(
            "all_special_file",
            b"modes/all-special",
            b"x\n",
            Some(0o7755),
            None,
        )?;
        self.file("mode_0604", b"modes/odd-0604", b"odd\n", Some(0o604), None)?;
        // Files their owner cannot read: without root nothing could read
        // them back (not a backup, not the comparer, not GNU tar).
        for (key, rel, content, mode) in [
            ("mode_0000", &b"modes/mode-0000"[..], &b"secret\n"[..], 0),
            ("mode_0111", b"modes/exec-only", b"#!/bin/true\n", 0o111),
        ] {
            if as_root {
                self.file(key, rel, content, Some(mode), None)?;
            } else {
                self.skip(
                    key,
                    format!(
                        "not root: {} ({mode:04o}) could not be read back without CAP_DAC_READ_SEARCH",
                        display_path(rel)
                    ),
                );
            }
        }
        for key in ["setuid_file", "setgid_file", "all_special_file"] {
            let rel = self.m.path(key).to_vec();
            let st = fsutil::stat_rel(self.rootfd.as_fd(), &rel)?;
            if st.mode & 0o6000 == 0 {
                self.skip(
                    key,
                    "the kernel cleared the set-id bits (filesystem or group membership)",
                );
            }
        }

        // --- symlinks ------------------------------------------------------
        self.mkdir("links", b"links", Some(0o755), None)?;
        self.symlink("symlink_relative", b"links/relative", b"../big.bin")?;
        self.symlink("symlink_absolute", b"links/absolute", b"/etc/passwd")?;
        self.symlink("symlink_dangling", b"links/dangling", b"does/not/exist")?;
        self.symlink("symlink_to_dir", b"links/to-dir", b"../dirs")?;
        self.symlink(
            "symlink_non_utf8_target",
            b"links/non-utf8-target",
            b"../names/caf\xe9",
        )?;
        let long_target = b"a/".repeat(150);
        self.symlink("symlink_long_target", b"links/long-target", &long_target)?;

        // --- hardlinks -----------------------------------------------------
        self.mkdir("hardlinks", b"hardlinks", Some(0o755), None)?;
        for d in [&b"hardlinks/a"[..], b"hardlinks/b", b"hardlinks/c"] {
            let key = format!("hardlink_dir_{}", d[d.len() - 1] as char);
            self.mkdir(&key, d, Some(0o755), None)?;
        }
        let c = self.rng.bytes(5000);
        self.file("hardlink2_a", b"hardlinks/a/two", &c, Some(0o644), None)?;
        self.hardlink("hardlink2_b", b"hardlinks/b/two", b"hardlinks/a/two")?;
        let c = self.rng.bytes(7000);
        self.file("hardlink3_a", b"hardlinks/a/three", &c, Some(0o600), None)?;
        self.hardlink("hardlink3_b", b"hardlinks/b/three", b"hardlinks/a/three")?;
        self.hardlink("hardlink3_c", b"hardlinks/c/three", b"hardlinks/a/three")?;

        // --- special files -------------------------------------------------
        self.mkdir("special", b"special", Some(0o755), None)?;
        {
            let (p, n) = self.parent(b"special/fifo")?;
            rustix::fs::mknodat(
                &p,
                n.as_slice(),
                FileType::Fifo,
                Mode::from_raw_mode(0o600),
                0,
            )
            .context("mkfifo special/fifo")?;
            self.chmod(b"special/fifo", 0o644)?;
            self.item("fifo", b"special/fifo", FileKind::Fifo, "mode 0644");
        }
        self.devices()?;

        // --- ownership -----------------------------------------------------
        self.mkdir("owners", b"owners", Some(0o755), None)?;
        self.ownership()?;

        // --- xattrs --------------------------------------------------------
        self.mkdir("xattrs", b"xattrs", Some(0o755), None)?;
        self.xattrs()?;

        // --- ACLs ----------------------------------------------------------
        self.mkdir("acl", b"acl", Some(0o755), None)?;
        self.acls()?;

        // --- sparse files --------------------------------------------------
        self.mkdir("sparse", b"sparse", Some(0o755), None)?;
        self.sparse(opts)?;

        // --- names ---------------------------------------------------------
        self.mkdir("names", b"names", Some(0o755), None)?;
        self.file(
            "non_utf8_file",
            b"names/caf\xe9",
            b"latin-1 name\n",
            Some(0o644),
            None,
        )?;
        self.mkdir("non_utf8_dir", b"names/\xff\xfe", Some(0o755), None)?;
        self.file(
            "non_utf8_nested_file",
            b"names/\xff\xfe/\x80inside",
            b"in\n",
            Some(0o644),
            None,
        )?;
        self.file(
            "newline_name",
            b"names/with\nnewline",
            b"nl\n",
            Some(0o644),
            None,
        )?;
        self.file(
            "leading_space_name",
            b"names/ leading space",
            b"sp\n",
            Some(0o644),
            None,
        )?;
        let mut n255 = b"names/n255-".to_vec();
        n255.resize(6 + 255, b'n');
        self.file("name_255", &n255, b"255\n", Some(0o644), None)?;

        // --- > PATH_MAX ----------------------------------------------------
        self.long_path()?;

        // --- special mtimes ------------------------------------------------
        self.mkdir("mtimes", b"mtimes", Some(0o755), None)?;
        self.file(
            "mtime_pre_epoch",
            b"mtimes/pre-epoch",
            b"1960\n",
            Some(0o644),
            None,
        )?;
        self.special_times
            .push((b"mtimes/pre-epoch".to_vec(), (-315_619_200, 987_654_321)));
        self.file(
            "mtime_post_2038",
            b"mtimes/post-2038",
            b"2100\n",
            Some(0o644),
            None,
        )?;
        self.special_times
            .push((b"mtimes/post-2038".to_vec(), (4_102_444_801, 1)));
        self.file(
            "mtime_whole_second",
            b"mtimes/whole-second",
            b"0ns\n",
            Some(0o644),
            None,
        )?;
        self.special_times
            .push((b"mtimes/whole-second".to_vec(), (1_234_567_890, 0)));
        Ok(())
    }

    fn devices(&mut self) -> Result<()> {
        if !self.m.as_root {
            self.skip(
                "char_device",
                "not root: mknod of device nodes needs CAP_MKNOD",
            );
            self.skip(
                "block_device",
                "not root: mknod of device nodes needs CAP_MKNOD",
            );
            return Ok(());
        }
        let mut any = false;
        for (key, rel, ft, maj, min) in [
            (
                "char_device",
                &b"special/char-1-3"[..],
                FileType::CharacterDevice,
                1,
                3,
            ),
            (
                "block_device",
                b"special/block-7-200",
                FileType::BlockDevice,
                7,
                200,
            ),
        ] {
            let (p, n) = self.parent(rel)?;
            match rustix::fs::mknodat(
                &p,
                n.as_slice(),
                ft,
                Mode::from_raw_mode(0o600),
                rustix::fs::makedev(maj, min),
            ) {
                Ok(()) => {
                    self.chmod(rel, 0o660)?;
                    let kind = if ft == FileType::BlockDevice {
                        FileKind::BlockDev
                    } else {
                        FileKind::CharDev
                    };
                    self.item(key, rel, kind, format!("{maj}:{min} mode 0660"));
                    any = true;
                }
                Err(e) => self.skip(key, format!("mknod refused even as root: {e}")),
            }
        }
        self.m.features.devices = any;
        Ok(())
    }

    fn ownership(&mut self) -> Result<()> {
        let keys = [
            "owned_by_name_file",
            "owned_by_name_dir",
            "symlink_owned_by_name",
            "owned_by_number_file",
        ];
        if !self.m.as_root {
            for k in keys {
                self.skip(k, "not root: chown to another user needs CAP_CHOWN");
            }
            return Ok(());
        }
        let user = ["nobody", "daemon"]
            .iter()
            .find_map(|n| nix::unistd::User::from_name(n).ok().flatten());
        let group = ["nogroup", "nobody", "daemon"]
            .iter()
            .find_map(|n| nix::unistd::Group::from_name(n).ok().flatten());
        let mut uid = 54321u32;
        while matches!(
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)),
            Ok(Some(_))
        ) {
            uid += 1;
        }
        let mut gid = 54322u32;
        while matches!(
            nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)),
            Ok(Some(_))
        ) {
            gid += 1;
        }
        let mut ok = false;
        match (user, group) {
            (Some(u), Some(g)) => {
                let (un, gn) = (u.uid.as_raw(), g.gid.as_raw());
                let note = format!("owner {}:{} ({un}:{gn})", u.name, g.name);
                self.file(
                    "owned_by_name_file",
                    b"owners/by-name",
                    b"named\n",
                    Some(0o644),
                    None,
                )?;
                match self.chown_nofollow(b"owners/by-name", un, gn) {
                    Ok(()) => {
                        ok = true;
                        self.chmod(b"owners/by-name", 0o644)?;
                        self.note("owned_by_name_file", &note);
                        self.mkdir(
                            "owned_by_name_dir",
                            b"owners/by-name-dir",
                            Some(0o750),
                            Some((un, gn)),
                        )?;
                        self.note("owned_by_name_dir", &note);
                        self.symlink("symlink_owned_by_name", b"owners/link-by-name", b"by-name")?;
                        self.chown_nofollow(b"owners/link-by-name", un, gn)
                            .context("lchown owners/link-by-name")?;
                        self.note("symlink_owned_by_name", &note);
                    }
                    Err(e) => {
                        for k in &keys[..3] {
                            self.skip(k, format!("chown to {un}:{gn} refused: {e}"));
                        }
                    }
                }
            }
            _ => {
                for k in &keys[..3] {
                    self.skip(
                        k,
                        "no nobody/daemon user or nogroup/nobody/daemon group on this system",
                    );
                }
            }
        }
        self.file(
            "owned_by_number_file",
            b"owners/by-number",
            b"numeric\n",
            Some(0o640),
            None,
        )?;
        match self.chown_nofollow(b"owners/by-number", uid, gid) {
            Ok(()) => {
                ok = true;
                self.chmod(b"owners/by-number", 0o640)?;
                self.note(
                    "owned_by_number_file",
                    &format!("owner {uid}:{gid} (no names)"),
                );
            }
            Err(e) if is_privilege_error(e) => self.skip(
                "owned_by_number_file",
                format!("chown to {uid}:{gid} refused: {e}"),
            ),
            Err(e) => bail!("chown owners/by-number: {e}"),
        }
        self.m.features.ownership = ok;
        Ok(())
    }

    fn note(&mut self, key: &str, note: &str) {
        if let Some(i) = self.m.items.iter_mut().find(|i| i.key == key) {
            if !i.note.is_empty() {
                i.note.push_str(", ");
            }
            i.note.push_str(note);
        }
    }

    fn xattrs(&mut self) -> Result<()> {
        self.file(
            "xattr_file",
            b"xattrs/file",
            b"has xattrs\n",
            Some(0o644),
            None,
        )?;
        self.mkdir("xattr_dir", b"xattrs/dir", Some(0o755), None)?;
        let all_bytes: Vec<u8> = (0..=255u8).collect();
        let bigger = self.rng.bytes(1500);
        let file_attrs: Vec<(&[u8], Vec<u8>)> = vec![
            (b"user.cairn.binary", all_bytes),
            (b"user.cairn.empty", Vec::new()),
            (b"user.cairn.text", b"hello, world".to_vec()),
            (b"user.cairn.bigger", bigger),
        ];
        for (name, value) in &file_attrs {
            if let Err(e) = self.set_xattr(b"xattrs/file", name, value) {
                let reason = format!("filesystem refuses user.* xattrs: {e}");
                self.skip("xattr_file", &reason);
                self.skip("xattr_dir", &reason);
                return Ok(());
            }
        }
        self.set_xattr(b"xattrs/dir", b"user.cairn.dir", b"\x00\xffdir\n\x01")
            .context("setxattr on xattrs/dir")?;
        self.set_xattr(b"xattrs/dir", b"user.cairn.second", b"2")
            .context("setxattr on xattrs/dir")?;
        self.note("xattr_file", "user.cairn.{binary,empty,text,bigger}");
        self.note("xattr_dir", "user.cairn.{dir,second}");
        self.m.features.user_xattrs = true;
        Ok(())
    }

    fn acls(&mut self) -> Result<()> {
        // Named entries use ids that need not exist (54321/54322) and one
        // that usually has a name (uid 1, daemon), so tar's text form
        // exercises both numeric and named qualifiers.
        let access = Acl(vec![
            acl::Entry::new(Tag::UserObj, None, 7),
            acl::Entry::new(Tag::User, Some(1), 4),
            acl::Entry::new(Tag::User, Some(54321), 7),
            acl::Entry::new(Tag::GroupObj, None, 5),
            acl::Entry::new(Tag::Group, Some(54322), 3),
            acl::Entry::new(Tag::Mask, None, 7),
            acl::Entry::new(Tag::Other, None, 1),
        ]);
        let default = Acl(vec![
            acl::Entry::new(Tag::UserObj, None, 7),
            acl::Entry::new(Tag::User, Some(54321), 5),
            acl::Entry::new(Tag::GroupObj, None, 5),
            acl::Entry::new(Tag::Mask, None, 5),
            acl::Entry::new(Tag::Other, None, 4),
        ]);
        let file_acl = Acl(vec![
            acl::Entry::new(Tag::UserObj, None, 6),
            acl::Entry::new(Tag::User, Some(54321), 6),
            acl::Entry::new(Tag::GroupObj, None, 4),
            acl::Entry::new(Tag::Mask, None, 6),
            acl::Entry::new(Tag::Other, None, 0),
        ]);
        // The ACL dir's mode is whatever the access ACL implies: no late chmod.
        self.mkdir("acl_dir", b"acl/dir", None, None)?;
        let r = self
            .set_xattr(b"acl/dir", acl::ACL_XATTR_DEFAULT, &default.to_xattr())
            .and_then(|()| self.set_xattr(b"acl/dir", acl::ACL_XATTR_ACCESS, &access.to_xattr()));
        if let Err(e) = r {
            let unsupported = e
                .raw_os_error()
                .is_some_and(|c| is_unsupported(Errno::from_raw_os_error(c)));
            if !unsupported {
                return Err(e).context("set ACL xattrs on acl/dir");
            }
            for k in [
                "acl_dir",
                "acl_inherited_file",
                "acl_inherited_dir",
                "acl_file",
            ] {
                self.skip(k, format!("filesystem refuses POSIX ACLs: {e}"));
            }
            return Ok(());
        }
        self.note(
            "acl_dir",
            &format!("access ACL [{access}], default ACL [{default}]"),
        );
        // Created after the default ACL: they inherit it. No chmod after.
        self.file(
            "acl_inherited_file",
            b"acl/dir/inherited",
            b"inherits\n",
            None,
            None,
        )?;
        self.mkdir("acl_inherited_dir", b"acl/dir/subdir", None, None)?;
        self.file("acl_file", b"acl/file", b"acl\n", Some(0o640), None)?;
        self.set_xattr(b"acl/file", acl::ACL_XATTR_ACCESS, &file_acl.to_xattr())
            .context("set access ACL on acl/file")?;
        self.note("acl_file", &format!("access ACL [{file_acl}]"));
        self.m.features.acls = true;
        Ok(())
    }

    fn sparse(&mut self, opts: &FixtureOpts) -> Result<()> {
        let size = opts.sparse_size.max(8 * MIB);
        // Starts with a hole, ends with data.
        let regions = [
            (MIB, 4 * KIB),
            (5 * MIB, 12 * KIB),
            (size / 2 + MIB, 64 * KIB),
            (size - 4 * KIB, 4 * KIB),
        ];
        self.sparse_file("sparse_holes", b"sparse/holes", &regions, size)?;
        // Ends in a hole (ftruncate beyond the last data).
        let regions = [(0, 4 * KIB), (8 * MIB, 8 * KIB)];
        self.sparse_file("sparse_tail_hole", b"sparse/tail-hole", &regions, 16 * MIB)?;
        // Nothing but a hole.
        self.sparse_file("sparse_all_hole", b"sparse/all-hole", &[], 8 * MIB)?;

        let rel = b"sparse/holes";
        let fd = fsutil::open_rel(self.rootfd.as_fd(), rel, OFlags::RDONLY)?;
        let map = fsutil::data_map(fd.as_fd(), size)?;
        let expected: Vec<(u64, u64)> = regions_to_map(&[
            (MIB, 4 * KIB),
            (5 * MIB, 12 * KIB),
            (size / 2 + MIB, 64 * KIB),
            (size - 4 * KIB, 4 * KIB),
        ]);
        if map == expected {
            self.m.features.holes = true;
        } else if map.len() <= 1 {
            for k in ["sparse_holes", "sparse_tail_hole", "sparse_all_hole"] {
                self.skip(
                    k,
                    format!("filesystem does not report holes (SEEK_DATA map {map:?}); file created dense"),
                );
            }
        } else {
            self.m.features.holes = true;
            self.skip(
                "sparse_exact_map",
                format!("filesystem rounds holes: map {map:?}, wrote {expected:?}"),
            );
        }
        Ok(())
    }

    fn sparse_file(
        &mut self,
        key: &str,
        rel: &[u8],
        regions: &[(u64, u64)],
        size: u64,
    ) -> Result<()> {
        let fd = self.file(key, rel, b"", Some(0o644), None)?;
        for &(off, len) in regions {
            let data = self.rng.bytes(len as usize);
            let mut done = 0usize;
            while done < data.len() {
                done += rustix::io::pwrite(&fd, &data[done..], off + done as u64)
                    .with_context(|| format!("pwrite {}", display_path(rel)))?;
            }
        }
        rustix::fs::ftruncate(&fd, size)
            .with_context(|| format!("ftruncate {}", display_path(rel)))?;
        self.note(
            key,
            &format!("logical size {size}, data at {:?}", regions_to_map(regions)),
        );
        Ok(())
    }

    fn long_path(&mut self) -> Result<()> {
        self.mkdir("long_root", b"long", Some(0o755), None)?;
        let mut rel = b"long".to_vec();
        for i in 0..LONG_DEPTH {
            rel.push(b'/');
            rel.extend(long_component(i));
            self.mkdir(&format!("long_dir_{i:02}"), &rel.clone(), Some(0o755), None)?;
        }
        let leaf = long_leaf_path();
        let c = self.rng.bytes(3000);
        self.file("long_path_file", &leaf, &c, Some(0o644), None)?;
        let mut link = rel.clone();
        link.extend_from_slice(b"/leaf-link");
        self.symlink("long_path_symlink", &link, b"leaf.txt")?;
        self.hardlink("long_path_hardlink", b"long/link-to-deep-leaf", &leaf)?;
        if self.m.features.user_xattrs {
            self.set_xattr(&leaf, b"user.cairn.deep", b"deep\x00value")
                .context("setxattr on the deep leaf")?;
            self.note("long_path_file", "user.cairn.deep xattr");
        }
        self.note(
            "long_path_file",
            &format!("path length {} bytes", leaf.len()),
        );
        Ok(())
    }

    /// Late pass: directory owners and modes, then all mtimes.
    fn finish(&mut self) -> Result<()> {
        for (rel, mode, owner) in std::mem::take(&mut self.late_dirs) {
            if let Some((u, g)) = owner {
                self.chown_nofollow(&rel, u, g)
                    .map_err(|e| anyhow::anyhow!("chown {}: {e}", display_path(&rel)))?;
            }
            if let Some(m) = mode {
                self.chmod(&rel, m)?;
            }
        }
        let st = fsutil::stat_rel(self.rootfd.as_fd(), b"dirs/setgid-dir")?;
        if st.mode & 0o2000 == 0 {
            self.skip(
                "dir_setgid",
                "the kernel cleared the setgid bit on the directory",
            );
        }

        // Every entry gets a distinct time with nonzero nanoseconds.
        let mut entries: Vec<(Vec<u8>, FileKind)> = self
            .m
            .items
            .iter()
            .map(|i| (i.path.clone(), i.kind))
            .collect();
        entries.dedup_by(|a, b| a.0 == b.0);
        let time_for = |idx: usize| -> (i64, u32) {
            let idx = idx as i64 + 1;
            let ns = ((idx * 7_919 * 104_729 + 123_456_789) % 1_000_000_000) as u32;
            (1_500_000_000 + idx * 86_413, ns.max(1))
        };
        let mut times: Vec<(Vec<u8>, bool, (i64, u32))> = Vec::new();
        for (idx, (p, kind)) in entries.iter().enumerate() {
            let t = self
                .special_times
                .iter()
                .find(|(sp, _)| sp == p)
                .map(|(_, t)| *t)
                .unwrap_or_else(|| time_for(idx));
            times.push((p.clone(), *kind == FileKind::Dir, t));
        }
        // Non-directories first, then directories deepest first. Hardlinked
        // paths share one inode, which keeps the time of its first path.
        times.sort_by_key(|(p, is_dir, _)| {
            (
                *is_dir,
                std::cmp::Reverse(if *is_dir {
                    fsutil::components(p).len()
                } else {
                    0
                }),
            )
        });
        let mut seen_inodes = std::collections::BTreeSet::new();
        for (p, _, t) in &times {
            let st = fsutil::stat_rel(self.rootfd.as_fd(), p)?;
            if st.kind != FileKind::Dir && !seen_inodes.insert((st.dev, st.ino)) {
                continue;
            }
            self.set_mtime(p, *t)?;
        }
        for (p, t) in self.special_times.clone() {
            let st = fsutil::stat_rel(self.rootfd.as_fd(), &p)?;
            if st.mtime != t {
                self.skip(
                    &format!("mtime {}", display_path(&p)),
                    format!("filesystem stored {:?} instead of {t:?}", st.mtime),
                );
            }
        }
        // The root last.
        rustix::fs::futimens(&self.rootfd, &timestamps((1_700_000_000, 424_242_424)))
            .context("set root mtime")?;
        Ok(())
    }

    fn set_mtime(&self, rel: &[u8], t: (i64, u32)) -> Result<()> {
        let (p, name) = self.parent(rel)?;
        rustix::fs::utimensat(
            &p,
            name.as_slice(),
            &timestamps(t),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .with_context(|| format!("utimensat {}", display_path(rel)))
    }
}

fn timestamps(t: (i64, u32)) -> Timestamps {
    let ts = Timespec {
        tv_sec: t.0,
        tv_nsec: t.1.into(),
    };
    Timestamps {
        last_access: ts,
        last_modification: ts,
    }
}

fn regions_to_map(regions: &[(u64, u64)]) -> Vec<(u64, u64)> {
    regions.iter().map(|&(o, l)| (o, o + l)).collect()
}
