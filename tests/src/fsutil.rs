//! Low-level, dirfd-relative filesystem helpers shared by the fixture, the
//! tree comparer and the tar checker.
//!
//! Design choice: every operation resolves a tree-relative path (raw bytes,
//! `/`-separated, `b""` meaning the root) one component at a time with
//! `openat(O_PATH|O_DIRECTORY|O_NOFOLLOW)`, so paths longer than `PATH_MAX`
//! work and symlinks inside the tree are never followed. Extended attributes
//! are read and written through `/proc/self/fd/<dirfd>/<name>` with the
//! `l*xattr` calls: the string stays short whatever the depth, it works for
//! symlinks, fifos and device nodes without opening them, and it never
//! follows the final component.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, SeekFrom};

/// The type of a filesystem entry (or of a tar entry, once resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDev,
    BlockDev,
    Socket,
    Unknown,
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            FileKind::File => "regular file",
            FileKind::Dir => "directory",
            FileKind::Symlink => "symlink",
            FileKind::Fifo => "fifo",
            FileKind::CharDev => "character device",
            FileKind::BlockDev => "block device",
            FileKind::Socket => "socket",
            FileKind::Unknown => "unknown type",
        };
        f.write_str(s)
    }
}

impl FileKind {
    pub(crate) fn from_file_type(t: FileType) -> FileKind {
        match t {
            FileType::RegularFile => FileKind::File,
            FileType::Directory => FileKind::Dir,
            FileType::Symlink => FileKind::Symlink,
            FileType::Fifo => FileKind::Fifo,
            FileType::CharacterDevice => FileKind::CharDev,
            FileType::BlockDevice => FileKind::BlockDev,
            FileType::Socket => FileKind::Socket,
            _ => FileKind::Unknown,
        }
    }
}

/// `stat` results that matter for fidelity, independent of the target's
/// `struct stat` layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub kind: FileKind,
    /// The 12 permission bits (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Seconds and nanoseconds.
    pub mtime: (i64, u32),
    /// `(major, minor)` of `st_rdev`.
    pub rdev: (u32, u32),
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub blocks: u64,
}

#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
pub(crate) fn meta_from_stat(st: &rustix::fs::Stat) -> Meta {
    let raw_mode = st.st_mode as u32;
    Meta {
        kind: FileKind::from_file_type(FileType::from_raw_mode(raw_mode)),
        mode: raw_mode & 0o7777,
        uid: st.st_uid as u32,
        gid: st.st_gid as u32,
        size: st.st_size as u64,
        mtime: (st.st_mtime as i64, st.st_mtime_nsec as u32),
        rdev: (
            rustix::fs::major(st.st_rdev as u64),
            rustix::fs::minor(st.st_rdev as u64),
        ),
        dev: st.st_dev as u64,
        ino: st.st_ino as u64,
        nlink: st.st_nlink as u64,
        blocks: st.st_blocks as u64,
    }
}

/// Render a path (raw bytes) for humans: valid UTF-8 is kept, every other
/// byte is shown as `\xNN`; the root is shown as `.`.
pub fn display_path(rel: &[u8]) -> String {
    if rel.is_empty() {
        return ".".to_string();
    }
    display_bytes(rel)
}

/// Like [`display_path`] but for arbitrary bytes (symlink targets, xattr
/// names).
pub fn display_bytes(b: &[u8]) -> String {
    let mut out = String::new();
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out
}

/// Join a tree-relative path and a name.
pub fn join_rel(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        name.to_vec()
    } else {
        let mut v = parent.to_vec();
        v.push(b'/');
        v.extend_from_slice(name);
        v
    }
}

/// Split a tree-relative path into its non-empty components.
pub fn components(rel: &[u8]) -> Vec<&[u8]> {
    rel.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect()
}

fn os(b: &[u8]) -> OsString {
    OsString::from_vec(b.to_vec())
}

/// Open `root` itself as a directory (`O_RDONLY|O_DIRECTORY`).
pub fn open_root(root: &Path) -> io::Result<OwnedFd> {
    rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| with_ctx(e.into(), &format!("open {}", root.display())))
}

/// Walk `dirs` (components) below `base` without following symlinks;
/// returns an `O_PATH` directory descriptor.
fn walk_dirs(base: BorrowedFd<'_>, dirs: &[&[u8]]) -> io::Result<OwnedFd> {
    let mut cur = rustix::fs::openat(
        base,
        ".",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for c in dirs {
        cur = rustix::fs::openat(
            &cur,
            os(c),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
    }
    Ok(cur)
}

/// Resolve the parent directory of `rel` below `base`; returns an `O_PATH`
/// fd for the parent and the final component. `rel` must not be the root.
pub fn open_parent(base: BorrowedFd<'_>, rel: &[u8]) -> io::Result<(OwnedFd, Vec<u8>)> {
    let comps = components(rel);
    let Some((last, dirs)) = comps.split_last() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "open_parent: empty relative path (the root has no parent here)",
        ));
    };
    let parent = walk_dirs(base, dirs)
        .map_err(|e| with_ctx(e, &format!("resolve parent of {}", display_path(rel))))?;
    Ok((parent, last.to_vec()))
}

/// Open `rel` below `base` with `flags` (`O_NOFOLLOW|O_CLOEXEC` are added).
/// The root (`b""`) is reopened as `.`.
pub fn open_rel(base: BorrowedFd<'_>, rel: &[u8], flags: OFlags) -> io::Result<OwnedFd> {
    let comps = components(rel);
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let r = match comps.split_last() {
        None => rustix::fs::openat(base, ".", flags, Mode::empty()),
        Some((last, dirs)) => {
            let parent = walk_dirs(base, dirs)?;
            rustix::fs::openat(&parent, os(last), flags, Mode::empty())
        }
    };
    r.map_err(|e| with_ctx(e.into(), &format!("open {}", display_path(rel))))
}

/// `lstat` of `rel` below `base`.
pub fn stat_rel(base: BorrowedFd<'_>, rel: &[u8]) -> io::Result<Meta> {
    let comps = components(rel);
    let st = match comps.split_last() {
        None => rustix::fs::fstat(base)?,
        Some((last, dirs)) => {
            let parent = walk_dirs(base, dirs)?;
            rustix::fs::statat(&parent, os(last), AtFlags::SYMLINK_NOFOLLOW)?
        }
    };
    Ok(meta_from_stat(&st))
}

/// Read a whole regular file at `rel` below the directory `root`
/// (works beyond `PATH_MAX`).
pub fn read_rel(root: &Path, rel: &[u8]) -> io::Result<Vec<u8>> {
    let rootfd = open_root(root)?;
    let fd = open_rel(rootfd.as_fd(), rel, OFlags::RDONLY)?;
    let mut v = Vec::new();
    File::from(fd).read_to_end(&mut v)?;
    Ok(v)
}

/// The `/proc/self/fd/<dirfd>/<name>` path through which the `l*xattr`
/// calls reach an entry without following it.
pub(crate) fn proc_path(dirfd: BorrowedFd<'_>, name: &[u8]) -> OsString {
    let mut v = format!("/proc/self/fd/{}/", dirfd.as_raw_fd()).into_bytes();
    v.extend_from_slice(name);
    OsString::from_vec(v)
}

pub(crate) fn with_ctx(e: io::Error, ctx: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{ctx}: {e}"))
}

fn is_unsupported(e: &rustix::io::Errno) -> bool {
    *e == rustix::io::Errno::NOTSUP || *e == rustix::io::Errno::OPNOTSUPP
}

/// Extended attributes of an entry, name → value.
pub type Xattrs = BTreeMap<Vec<u8>, Vec<u8>>;

/// Read every xattr of `name` in `dirfd` (not following symlinks), or of
/// the directory `dirfd` itself when `name` is `None` (then `dirfd` must be
/// a real, non-`O_PATH` descriptor). A filesystem without xattr support
/// yields an empty set.
pub(crate) fn read_xattrs(dirfd: BorrowedFd<'_>, name: Option<&[u8]>) -> io::Result<Xattrs> {
    let path = name.map(|n| proc_path(dirfd, n));
    let list = |buf: &mut Vec<u8>| -> rustix::io::Result<usize> {
        match &path {
            Some(p) => rustix::fs::llistxattr(p, buf.as_mut_slice()),
            None => rustix::fs::flistxattr(dirfd, buf.as_mut_slice()),
        }
    };
    let get = |attr: &[u8], buf: &mut Vec<u8>| -> rustix::io::Result<usize> {
        let attr = os(attr);
        match &path {
            Some(p) => rustix::fs::lgetxattr(p, &attr, buf.as_mut_slice()),
            None => rustix::fs::fgetxattr(dirfd, &attr, buf.as_mut_slice()),
        }
    };
    // Grow-and-retry: the kernel answers ERANGE when the buffer is too small.
    let mut names = vec![0u8; 4096];
    let n = loop {
        match list(&mut names) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(e) if is_unsupported(&e) => return Ok(Xattrs::new()),
            Err(e) => return Err(with_ctx(e.into(), "listxattr")),
        }
    };
    names.truncate(n);
    let mut out = Xattrs::new();
    for attr in names.split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let mut val = vec![0u8; 1024];
        let len = loop {
            match get(attr, &mut val) {
                Ok(n) => break n,
                Err(rustix::io::Errno::RANGE) if val.len() < (1 << 24) => {
                    let l = val.len() * 8;
                    val.resize(l, 0)
                }
                Err(rustix::io::Errno::NODATA) => break usize::MAX, // raced away
                Err(e) => {
                    return Err(with_ctx(
                        e.into(),
                        &format!("getxattr {}", display_bytes(attr)),
                    ))
                }
            }
        };
        if len == usize::MAX {
            continue;
        }
        val.truncate(len);
        out.insert(attr.to_vec(), val);
    }
    Ok(out)
}

/// Set one xattr on `name` in `dirfd` without following symlinks.
pub(crate) fn set_xattr(
    dirfd: BorrowedFd<'_>,
    name: &[u8],
    attr: &[u8],
    value: &[u8],
) -> io::Result<()> {
    rustix::fs::lsetxattr(
        proc_path(dirfd, name),
        os(attr),
        value,
        rustix::fs::XattrFlags::empty(),
    )
    .map_err(io::Error::from)
}

/// Set one xattr on the entry at `rel` below the directory `root` (not
/// following a final symlink; works beyond `PATH_MAX`).
pub fn set_xattr_rel(root: &Path, rel: &[u8], attr: &[u8], value: &[u8]) -> io::Result<()> {
    let rootfd = open_root(root)?;
    if components(rel).is_empty() {
        return rustix::fs::fsetxattr(&rootfd, os(attr), value, rustix::fs::XattrFlags::empty())
            .map_err(io::Error::from);
    }
    let (parent, name) = open_parent(rootfd.as_fd(), rel)?;
    set_xattr(parent.as_fd(), &name, attr, value)
}

/// Data regions `(start, end)` of an open regular file according to
/// `SEEK_DATA`/`SEEK_HOLE`. A filesystem that does not implement them gets
/// the kernel's generic answer (one region covering the whole file).
pub(crate) fn data_map(fd: BorrowedFd<'_>, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut map = Vec::new();
    let mut off = 0u64;
    while off < size {
        let start = match rustix::fs::seek(fd, SeekFrom::Data(off)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(rustix::io::Errno::INVAL) if off == 0 => {
                // No SEEK_DATA support at all: treat as fully allocated.
                return Ok(vec![(0, size)]);
            }
            Err(e) => return Err(with_ctx(e.into(), "lseek(SEEK_DATA)")),
        };
        if start >= size {
            break;
        }
        let end = rustix::fs::seek(fd, SeekFrom::Hole(start))
            .map_err(|e| with_ctx(e.into(), "lseek(SEEK_HOLE)"))?
            .min(size);
        map.push((start, end));
        off = end;
    }
    Ok(map)
}

/// What a regular file holds: a hash of its logical bytes (holes read as
/// zeros) and its data/hole map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Content {
    pub hash: [u8; 32],
    pub len: u64,
    pub data_map: Vec<(u64, u64)>,
}

pub(crate) fn hash_reader(mut r: impl Read) -> io::Result<([u8; 32], u64)> {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((*h.finalize().as_bytes(), len))
}

fn read_content(dirfd: BorrowedFd<'_>, name: &[u8], size: u64) -> io::Result<Content> {
    if size == 0 {
        // Nothing to read: don't even open it (a mode-0000 file stays
        // comparable when we are not root).
        return Ok(Content {
            hash: *blake3::hash(b"").as_bytes(),
            len: 0,
            data_map: Vec::new(),
        });
    }
    let fd = rustix::fs::openat(
        dirfd,
        os(name),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| with_ctx(e.into(), "open for reading"))?;
    let data_map = data_map(fd.as_fd(), size)?;
    // SEEK_DATA/SEEK_HOLE moved the file offset: rewind before reading.
    rustix::fs::seek(&fd, SeekFrom::Start(0)).map_err(|e| with_ctx(e.into(), "lseek(0)"))?;
    let (hash, len) = hash_reader(File::from(fd))?;
    Ok(Content {
        hash,
        len,
        data_map,
    })
}

/// One scanned entry.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub meta: Meta,
    pub target: Option<Vec<u8>>,
    pub xattrs: Result<Xattrs, String>,
    pub content: Option<Result<Content, String>>,
}

/// A whole tree, keyed by relative path bytes (`b""` is the root).
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub nodes: BTreeMap<Vec<u8>, Node>,
    /// Paths that could not be listed or stat'ed, with the error.
    pub errors: Vec<(Vec<u8>, String)>,
}

impl Scan {
    /// Hardlink groups: for every non-directory path, the sorted list of
    /// paths in the tree that share its inode.
    pub fn link_groups(&self) -> BTreeMap<Vec<u8>, Vec<Vec<u8>>> {
        let mut by_ino: BTreeMap<(u64, u64), Vec<Vec<u8>>> = BTreeMap::new();
        for (p, n) in &self.nodes {
            if n.meta.kind != FileKind::Dir {
                by_ino
                    .entry((n.meta.dev, n.meta.ino))
                    .or_default()
                    .push(p.clone());
            }
        }
        let mut out = BTreeMap::new();
        for group in by_ino.into_values() {
            for p in &group {
                out.insert(p.clone(), group.clone());
            }
        }
        out
    }
}

/// Scan the tree at `root` with dirfd-relative calls. Fails only if the
/// root itself cannot be opened; per-entry failures land in `Scan::errors`
/// or in the entry's fields.
pub(crate) fn scan_tree(root: &Path, want_content: bool) -> io::Result<Scan> {
    let rootfd = open_root(root)?;
    let st = rustix::fs::fstat(&rootfd).map_err(|e| with_ctx(e.into(), "fstat root"))?;
    let mut scan = Scan::default();
    scan.nodes.insert(
        Vec::new(),
        Node {
            meta: meta_from_stat(&st),
            target: None,
            xattrs: read_xattrs(rootfd.as_fd(), None).map_err(|e| e.to_string()),
            content: None,
        },
    );
    scan_dir(rootfd, Vec::new(), &mut scan, want_content);
    Ok(scan)
}

fn scan_dir(dirfd: OwnedFd, rel: Vec<u8>, scan: &mut Scan, want_content: bool) {
    let mut names: Vec<Vec<u8>> = Vec::new();
    let mut dir = match rustix::fs::Dir::read_from(&dirfd) {
        Ok(d) => d,
        Err(e) => {
            scan.errors
                .push((rel, format!("cannot list directory: {e}")));
            return;
        }
    };
    while let Some(ent) = dir.read() {
        match ent {
            Ok(ent) => {
                let n = ent.file_name().to_bytes();
                if n != b"." && n != b".." {
                    names.push(n.to_vec());
                }
            }
            Err(e) => {
                scan.errors
                    .push((rel.clone(), format!("error reading directory: {e}")));
                break;
            }
        }
    }
    drop(dir);
    names.sort();
    for name in names {
        let path = join_rel(&rel, &name);
        let st = match rustix::fs::statat(&dirfd, os(&name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(e) => {
                scan.errors.push((path, format!("lstat failed: {e}")));
                continue;
            }
        };
        let meta = meta_from_stat(&st);
        let target = if meta.kind == FileKind::Symlink {
            match rustix::fs::readlinkat(&dirfd, os(&name), Vec::new()) {
                Ok(t) => Some(t.into_bytes()),
                Err(e) => {
                    scan.errors
                        .push((path.clone(), format!("readlink failed: {e}")));
                    None
                }
            }
        } else {
            None
        };
        let xattrs = read_xattrs(dirfd.as_fd(), Some(&name)).map_err(|e| e.to_string());
        let content = (want_content && meta.kind == FileKind::File)
            .then(|| read_content(dirfd.as_fd(), &name, meta.size).map_err(|e| e.to_string()));
        scan.nodes.insert(
            path.clone(),
            Node {
                meta,
                target,
                xattrs,
                content,
            },
        );
        if meta.kind == FileKind::Dir {
            match rustix::fs::openat(
                &dirfd,
                os(&name),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(sub) => scan_dir(sub, path, scan, want_content),
                Err(e) => scan
                    .errors
                    .push((path, format!("cannot open directory: {e}"))),
            }
        }
    }
}

/// First offset at which two readers differ (or where one ends early);
/// `None` if they are identical.
pub(crate) fn first_difference(mut a: impl Read, mut b: impl Read) -> io::Result<Option<u64>> {
    let mut ba = vec![0u8; 1 << 16];
    let mut bb = vec![0u8; 1 << 16];
    let mut off = 0u64;
    loop {
        let na = read_full(&mut a, &mut ba)?;
        let nb = read_full(&mut b, &mut bb)?;
        let n = na.min(nb);
        if let Some(i) = ba[..n].iter().zip(&bb[..n]).position(|(x, y)| x != y) {
            return Ok(Some(off + i as u64));
        }
        if na != nb {
            return Ok(Some(off + n as u64));
        }
        if na == 0 {
            return Ok(None);
        }
        off += n as u64;
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Open a regular file at `rel` under `root` for reading.
pub(crate) fn open_file_rel(root: &Path, rel: &[u8]) -> io::Result<File> {
    let rootfd = open_root(root)?;
    Ok(File::from(open_rel(
        rootfd.as_fd(),
        rel,
        OFlags::RDONLY | OFlags::NONBLOCK,
    )?))
}

/// True when the effective uid is 0.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Convenience: `root` joined with a relative path that is known to be
/// short (for messages and for callers that use path-based tools).
pub fn abs_path(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(os(rel))
}

/// `lstat` of `rel` below the directory `root` (works beyond `PATH_MAX`).
pub fn lstat_rel(root: &Path, rel: &[u8]) -> io::Result<Meta> {
    let rootfd = open_root(root)?;
    stat_rel(rootfd.as_fd(), rel).map_err(|e| with_ctx(e, &format!("lstat {}", display_path(rel))))
}

/// Set the mtime (and atime) of `rel` below `root` without following a
/// final symlink (works beyond `PATH_MAX`).
pub fn set_mtime_rel(root: &Path, rel: &[u8], mtime: (i64, u32)) -> io::Result<()> {
    let rootfd = open_root(root)?;
    let ts = rustix::fs::Timespec {
        tv_sec: mtime.0,
        tv_nsec: mtime.1.into(),
    };
    let times = rustix::fs::Timestamps {
        last_access: ts,
        last_modification: ts,
    };
    let r = if components(rel).is_empty() {
        rustix::fs::futimens(&rootfd, &times)
    } else {
        let (parent, name) = open_parent(rootfd.as_fd(), rel)?;
        rustix::fs::utimensat(&parent, os(&name), &times, AtFlags::SYMLINK_NOFOLLOW)
    };
    r.map_err(|e| with_ctx(e.into(), &format!("utimensat {}", display_path(rel))))
}

/// The parent of a tree-relative path (`b""` for top-level entries).
pub fn parent_rel(rel: &[u8]) -> Vec<u8> {
    let comps = components(rel);
    match comps.split_last() {
        Some((_, dirs)) => dirs.join(&b'/'),
        None => Vec::new(),
    }
}
