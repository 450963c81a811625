//! Restore: write a snapshot (or part of it) into a target directory, exactly and safely.
//!
//! Safety is structural, not a path check bolted on: every entry is created relative to an
//! open directory file descriptor, one validated name component at a time (tree decoding
//! already refuses `/`, `..`, `.` and NUL in names), and every directory is opened with
//! `O_NOFOLLOW|O_DIRECTORY` — so neither a hostile tree nor a symlink planted in the target
//! (by the archive or by anyone else) can make a write land outside `--target`. Each entry
//! is first built under a temporary name in its directory and renamed into place only when
//! complete: a regular file is renamed only after every blob was authenticated and its
//! whole-file BLAKE3 hash matched, so a damaged file is reported and never left looking
//! complete. Directory metadata is applied after their contents. Owners are restored by
//! name when the name exists here, else by number (only when running as root).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, Timespec, Timestamps};

use crate::fsmeta::{self, Names};
use crate::repo::{RepoError, Repository, BLOB_DATA};
use crate::tree::{FileContent, Kind, Node};
use crate::util::{os, show};
use crate::walk::{self, Selection, Visitor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    /// Leave existing entries alone (default).
    Never,
    /// Replace an existing file whose size or mtime differ.
    IfChanged,
    /// Replace existing files, symlinks and special files.
    Always,
}

pub struct RestoreOptions {
    pub overwrite: Overwrite,
    pub dry_run: bool,
    /// Restore owners (needs root); default: when running as root.
    pub owners: bool,
}

pub trait RestoreEvents {
    /// An entry that could not be restored (the others go on).
    fn failed(&self, _path: &str, _error: &str) {}
    /// An entry left as it was.
    fn skipped(&self, _path: &str, _why: &str) {}
    /// An entry restored (or, in a dry run, that would be).
    fn restored(&self, _path: &str, _node: &Node) {}
    fn progress(&self, _bytes: u64) {}
}

pub struct NoEvents;
impl RestoreEvents for NoEvents {}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RestoreStats {
    pub files: u64,
    pub dirs: u64,
    pub other: u64,
    pub bytes: u64,
    pub skipped: u64,
    pub failed: u64,
}

/// Restore the snapshot tree `root` into `target`.
pub fn restore(
    repo: &Repository,
    root: &[u8; 32],
    target: &Path,
    sel: &Selection,
    opts: &RestoreOptions,
    events: &dyn RestoreEvents,
) -> Result<RestoreStats, RepoError> {
    let root_fd = if opts.dry_run {
        None
    } else {
        std::fs::create_dir_all(target).map_err(|e| {
            RepoError::Usage(format!(
                "cannot create the target {}: {e}",
                target.display()
            ))
        })?;
        Some(
            rustix::fs::open(
                target,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| {
                RepoError::Usage(format!("cannot open the target {}: {e}", target.display()))
            })?,
        )
    };
    let mut r = Restorer {
        repo,
        opts,
        events,
        stack: vec![root_fd],
        names: Names::default(),
        links: HashMap::new(),
        stats: RestoreStats::default(),
    };
    walk::walk(repo, root, sel, &mut r)?;
    // One sync of the target's file system at the end, not one per file: as durable once
    // restore returns, without paying an fsync for every small file.
    if let Some(Some(fd)) = r.stack.first() {
        rustix::fs::syncfs(fd).map_err(|e| RepoError::Io {
            what: format!("cannot sync {}", target.display()),
            err: e.into(),
        })?;
    }
    Ok(r.stats)
}

struct Restorer<'a> {
    repo: &'a Repository,
    opts: &'a RestoreOptions,
    events: &'a dyn RestoreEvents,
    /// Open directories on the current path; None where a directory could not be made
    /// (its contents are then skipped, the failure reported once).
    stack: Vec<Option<OwnedFd>>,
    names: Names,
    /// Hard-link group -> an O_PATH descriptor of the first file restored in it.
    links: HashMap<u64, OwnedFd>,
    stats: RestoreStats,
}

fn tmp_name() -> Vec<u8> {
    format!(
        ".cairn-restore-{}",
        hex::encode(crate::crypto::random_bytes::<8>())
    )
    .into_bytes()
}

fn ts(sec: i64, nsec: u32) -> Timespec {
    Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    }
}

fn times(n: &Node) -> Timestamps {
    Timestamps {
        last_access: ts(n.mtime, n.mtime_nsec),
        last_modification: ts(n.mtime, n.mtime_nsec),
    }
}

fn last_name(path: &[u8]) -> &[u8] {
    path.rsplit(|b| *b == b'/').next().unwrap_or(path)
}

impl Restorer<'_> {
    fn fail(&mut self, path: &[u8], err: impl std::fmt::Display) {
        self.stats.failed += 1;
        self.events.failed(&show(path), &err.to_string());
    }

    fn parent(&self) -> Option<BorrowedFd<'_>> {
        self.stack
            .last()
            .and_then(|f| f.as_ref().map(|f| f.as_fd()))
    }

    fn owner(&mut self, n: &Node) -> (Option<rustix::fs::Uid>, Option<rustix::fs::Gid>) {
        if !self.opts.owners {
            return (None, None);
        }
        let uid = self.names.uid_for(&n.user, n.uid);
        let gid = self.names.gid_for(&n.group, n.gid);
        (
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
    }

    /// Decide whether an existing entry at `name` is to be replaced. Err(reason) = leave it.
    fn may_replace(&self, dir: BorrowedFd, name: &[u8], n: &Node) -> Result<bool, String> {
        let st = match rustix::fs::statat(dir, os(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(_) => return Ok(false),
        };
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            return Err("a directory is in the way (not replaced)".into());
        }
        match self.opts.overwrite {
            Overwrite::Never => Err("exists (use --overwrite to replace)".into()),
            Overwrite::Always => Ok(true),
            Overwrite::IfChanged => match &n.kind {
                Kind::File(f)
                    if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
                        && st.st_size as u64 == f.size
                        && st.st_mtime == n.mtime
                        && st.st_mtime_nsec as u32 == n.mtime_nsec =>
                {
                    Err("unchanged".into())
                }
                _ => Ok(true),
            },
        }
    }

    /// Move a finished temporary entry into place.
    fn commit(&self, dir: BorrowedFd, tmp: &[u8], name: &[u8], replace: bool) -> io::Result<()> {
        let flags = if replace {
            RenameFlags::empty()
        } else {
            RenameFlags::NOREPLACE
        };
        let r = rustix::fs::renameat_with(dir, os(tmp), dir, os(name), flags);
        if r.is_err() {
            let _ = rustix::fs::unlinkat(dir, os(tmp), AtFlags::empty());
        }
        r.map_err(Into::into)
    }

    fn restore_file(
        &mut self,
        dir: BorrowedFd,
        tmp: &[u8],
        path: &[u8],
        n: &Node,
        f: &FileContent,
    ) -> Result<(), String> {
        // A further member of a hard-link group: link to the first one restored.
        if f.link_group != 0 {
            if let Some(first) = self.links.get(&f.link_group) {
                let src = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(first));
                if rustix::fs::linkat(
                    rustix::fs::CWD,
                    src.as_str(),
                    dir,
                    os(tmp),
                    AtFlags::SYMLINK_FOLLOW,
                )
                .is_ok()
                {
                    return Ok(());
                }
            }
        }
        let fd = rustix::fs::openat(
            dir,
            os(tmp),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| format!("cannot create: {e}"))?;
        let file = File::from(fd);
        let result = self.write_content(&file, f).and_then(|()| {
            let (u, g) = self.owner(n);
            if u.is_some() {
                rustix::fs::fchown(&file, u, g).map_err(|e| format!("cannot set owner: {e}"))?;
            }
            fsmeta::set_fd_xattrs(&file, &self.xattrs_for(path, n))?;
            rustix::fs::fchmod(&file, Mode::from_raw_mode(n.mode))
                .map_err(|e| format!("cannot set mode: {e}"))?;
            rustix::fs::futimens(&file, &times(n)).map_err(|e| format!("cannot set times: {e}"))
        });
        if let Err(e) = result {
            let _ = rustix::fs::unlinkat(dir, os(tmp), AtFlags::empty());
            return Err(e);
        }
        self.stats.bytes += f.size;
        Ok(())
    }

    /// Write and verify content; Err leaves the temporary file to be removed by the caller.
    fn write_content(&self, file: &File, f: &FileContent) -> Result<(), String> {
        let mut hasher = blake3::Hasher::new();
        let mut logical = 0u64;
        let mut ext = f.extents.iter().copied();
        let mut cur: Option<(u64, u64)> = if f.extents.is_empty() {
            Some((0, u64::MAX))
        } else {
            ext.next()
        };
        let mut in_ext = 0u64;
        for id in &f.chunks {
            let data = self
                .repo
                .read_blob(BLOB_DATA, id)
                .map_err(|e| format!("{e}"))?;
            let mut rest: &[u8] = &data;
            while !rest.is_empty() {
                let (off, len) = cur.ok_or("content is longer than its extents (damaged tree)")?;
                if in_ext == len {
                    cur = ext.next();
                    in_ext = 0;
                    continue;
                }
                let n = rest
                    .len()
                    .min((len - in_ext).min(usize::MAX as u64) as usize);
                let at = off + in_ext;
                if at + n as u64 > f.size {
                    return Err("content is longer than the recorded size (damaged tree)".into());
                }
                crate::util::hash_zeros(&mut hasher, &mut logical, at);
                file.write_all_at(&rest[..n], at)
                    .map_err(|e| format!("write failed: {e}"))?;
                hasher.update(&rest[..n]);
                logical = at + n as u64;
                in_ext += n as u64;
                rest = &rest[n..];
            }
            self.events.progress(data.len() as u64);
        }
        crate::util::hash_zeros(&mut hasher, &mut logical, f.size);
        file.set_len(f.size)
            .map_err(|e| format!("cannot set the size: {e}"))?;
        if *hasher.finalize().as_bytes() != f.hash {
            return Err("content does not match the recorded hash (damaged repository)".into());
        }
        Ok(())
    }

    /// The xattrs to set: all of them as root; otherwise only the namespaces an
    /// unprivileged user may set (`user.*`, POSIX ACLs), the others reported as skipped.
    fn xattrs_for(&self, path: &[u8], n: &Node) -> fsmeta::Xattrs {
        if self.opts.owners {
            return n.xattrs.clone();
        }
        let (keep, drop): (Vec<_>, Vec<_>) = n
            .xattrs
            .iter()
            .cloned()
            .partition(|(k, _)| k.starts_with(b"user.") || k.starts_with(b"system.posix_acl_"));
        if !drop.is_empty() {
            let names: Vec<String> = drop.iter().map(|(k, _)| show(k)).collect();
            self.events.skipped(
                &show(path),
                &format!("xattrs {} need root; not restored", names.join(", ")),
            );
        }
        keep
    }

    fn restore_other(
        &mut self,
        dir: BorrowedFd,
        tmp: &[u8],
        path: &[u8],
        n: &Node,
    ) -> Result<(), String> {
        let (u, g) = self.owner(n);
        match &n.kind {
            Kind::Symlink { target } => {
                rustix::fs::symlinkat(os(target), dir, os(tmp))
                    .map_err(|e| format!("cannot create symlink: {e}"))?;
            }
            Kind::Fifo | Kind::CharDev { .. } | Kind::BlockDev { .. } => {
                let (ft, dev) = match n.kind {
                    Kind::Fifo => (FileType::Fifo, 0),
                    Kind::CharDev { major, minor } => {
                        (FileType::CharacterDevice, rustix::fs::makedev(major, minor))
                    }
                    Kind::BlockDev { major, minor } => {
                        (FileType::BlockDevice, rustix::fs::makedev(major, minor))
                    }
                    _ => unreachable!(),
                };
                rustix::fs::mknodat(dir, os(tmp), ft, Mode::from_raw_mode(0o600), dev)
                    .map_err(|e| format!("cannot create {}: {e}", ft_name(ft)))?;
            }
            _ => unreachable!("files and dirs are handled elsewhere"),
        }
        let res = (|| {
            if u.is_some() {
                rustix::fs::chownat(dir, os(tmp), u, g, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| format!("cannot set owner: {e}"))?;
            }
            if !matches!(n.kind, Kind::Symlink { .. }) {
                rustix::fs::chmodat(dir, os(tmp), Mode::from_raw_mode(n.mode), AtFlags::empty())
                    .map_err(|e| format!("cannot set mode: {e}"))?;
            }
            let x = self.xattrs_for(path, n);
            if !x.is_empty() {
                fsmeta::set_entry_xattrs(dir, tmp, &x)?;
            }
            rustix::fs::utimensat(dir, os(tmp), &times(n), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| format!("cannot set times: {e}"))
        })();
        if res.is_err() {
            let _ = rustix::fs::unlinkat(dir, os(tmp), AtFlags::empty());
        }
        res
    }
}

fn ft_name(ft: FileType) -> &'static str {
    match ft {
        FileType::Fifo => "fifo",
        FileType::CharacterDevice => "character device",
        _ => "block device",
    }
}

impl Visitor for Restorer<'_> {
    fn enter_dir(&mut self, path: &[u8], n: &Node) -> Result<(), RepoError> {
        self.events.restored(&show(path), n);
        self.stats.dirs += 1;
        if self.opts.dry_run {
            self.stack.push(None);
            return Ok(());
        }
        let Some(dir) = self.parent() else {
            self.stack.push(None);
            return Ok(());
        };
        let name = last_name(path);
        let fd = match rustix::fs::mkdirat(dir, os(name), Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => rustix::fs::openat(
                dir,
                os(name),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ),
            Err(e) => Err(e),
        };
        match fd {
            Ok(fd) => self.stack.push(Some(fd)),
            Err(e) => {
                let why = if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NOTDIR {
                    "something that is not a directory (a symlink?) is in the way; not followed"
                        .to_string()
                } else {
                    e.to_string()
                };
                self.fail(
                    path,
                    format!("cannot create directory: {why}; its contents are skipped"),
                );
                self.stack.push(None);
            }
        }
        Ok(())
    }

    fn leave_dir(&mut self, path: &[u8], n: &Node) -> Result<(), RepoError> {
        let Some(Some(fd)) = self.stack.pop() else {
            return Ok(());
        };
        let (u, g) = self.owner(n);
        let res = (|| {
            if u.is_some() {
                rustix::fs::fchown(&fd, u, g).map_err(|e| format!("cannot set owner: {e}"))?;
            }
            fsmeta::set_fd_xattrs(&fd, &self.xattrs_for(path, n))?;
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(n.mode))
                .map_err(|e| format!("cannot set mode: {e}"))?;
            rustix::fs::futimens(&fd, &times(n)).map_err(|e| format!("cannot set times: {e}"))
        })();
        if let Err(e) = res {
            self.fail(path, e);
        }
        Ok(())
    }

    fn entry(&mut self, path: &[u8], n: &Node) -> Result<(), RepoError> {
        if self.opts.dry_run {
            self.events.restored(&show(path), n);
            self.count(n);
            return Ok(());
        }
        let Some(dir) = self.parent() else {
            return Ok(());
        };
        // Safety: the descriptor is owned by self.stack and outlives this call; re-borrow
        // it independently of `self` so that `self` can be mutated below.
        let dir: BorrowedFd<'_> =
            unsafe { BorrowedFd::borrow_raw(std::os::fd::AsRawFd::as_raw_fd(&dir)) };
        let name = last_name(path);
        let replace = match self.may_replace(dir, name, n) {
            Ok(r) => r,
            Err(why) => {
                self.stats.skipped += 1;
                self.events.skipped(&show(path), &why);
                return Ok(());
            }
        };
        let tmp = tmp_name();
        let res = match &n.kind {
            Kind::File(f) => self.restore_file(dir, &tmp, path, n, f),
            _ => self.restore_other(dir, &tmp, path, n),
        };
        match res.and_then(|()| {
            self.commit(dir, &tmp, name, replace)
                .map_err(|e| format!("cannot move into place: {e}"))
        }) {
            Ok(()) => {
                if let Kind::File(f) = &n.kind {
                    if f.link_group != 0 && !self.links.contains_key(&f.link_group) {
                        if let Ok(p) = rustix::fs::openat(
                            dir,
                            os(name),
                            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                            Mode::empty(),
                        ) {
                            self.links.insert(f.link_group, p);
                        }
                    }
                }
                self.events.restored(&show(path), n);
                self.count(n);
            }
            Err(e) => self.fail(path, e),
        }
        Ok(())
    }

    fn tree_error(&mut self, path: &[u8], error: &RepoError) -> Result<(), RepoError> {
        self.fail(path, format!("directory contents unreadable: {error}"));
        Ok(())
    }
}

impl Restorer<'_> {
    fn count(&mut self, n: &Node) {
        match n.kind {
            Kind::File(_) => self.stats.files += 1,
            _ => self.stats.other += 1,
        }
    }
}

/// A file's logical content as a stream, every blob authenticated before its bytes are
/// returned and the whole-file hash checked at the end (a mismatch is an error, not EOF).
pub struct FileStream<'a> {
    repo: &'a Repository,
    f: &'a FileContent,
    next_chunk: usize,
    /// Stream positions: the chunk data not yet returned, mapped onto extents.
    buf: Vec<u8>,
    buf_pos: usize,
    ext_idx: usize,
    in_ext: u64,
    logical: u64,
    hasher: blake3::Hasher,
    done: bool,
}

impl<'a> FileStream<'a> {
    pub fn new(repo: &'a Repository, f: &'a FileContent) -> Self {
        FileStream {
            repo,
            f,
            next_chunk: 0,
            buf: Vec::new(),
            buf_pos: 0,
            ext_idx: 0,
            in_ext: 0,
            logical: 0,
            hasher: blake3::Hasher::new(),
            done: false,
        }
    }

    /// Where the next data byte goes in the logical file.
    fn next_data_offset(&mut self) -> Option<u64> {
        if self.f.extents.is_empty() {
            return Some(self.logical);
        }
        while let Some(&(off, len)) = self.f.extents.get(self.ext_idx) {
            if self.in_ext < len {
                return Some(off + self.in_ext);
            }
            self.ext_idx += 1;
            self.in_ext = 0;
        }
        None
    }

    fn emit(&mut self, out: &mut [u8], n: usize) -> usize {
        self.hasher.update(&out[..n]);
        self.logical += n as u64;
        n
    }
}

impl Read for FileStream<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() || self.done {
            return Ok(0);
        }
        if self.buf_pos == self.buf.len() && self.next_chunk < self.f.chunks.len() {
            let id = self.f.chunks[self.next_chunk];
            self.buf = self
                .repo
                .read_blob(BLOB_DATA, &id)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            self.buf_pos = 0;
            self.next_chunk += 1;
        }
        let have_data = self.buf_pos < self.buf.len();
        let target = if have_data {
            self.next_data_offset().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "content is longer than its extents (damaged tree)",
                )
            })?
        } else {
            self.f.size
        };
        if target > self.f.size || (have_data && target == self.f.size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "content is longer than the recorded size (damaged tree)",
            ));
        }
        if self.logical < target {
            // A hole: zeros.
            let n = ((target - self.logical) as usize).min(out.len());
            out[..n].fill(0);
            return Ok(self.emit(out, n));
        }
        if have_data {
            let mut n = (self.buf.len() - self.buf_pos).min(out.len());
            if !self.f.extents.is_empty() {
                let (_, len) = self.f.extents[self.ext_idx];
                n = n.min((len - self.in_ext) as usize);
                self.in_ext += n as u64;
            }
            out[..n].copy_from_slice(&self.buf[self.buf_pos..self.buf_pos + n]);
            self.buf_pos += n;
            return Ok(self.emit(out, n));
        }
        self.done = true;
        if self.logical != self.f.size || *self.hasher.finalize().as_bytes() != self.f.hash {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "content does not match the recorded hash (damaged repository)",
            ));
        }
        Ok(0)
    }
}
