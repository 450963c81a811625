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
//! complete. Owners are restored by name when the name exists here, else by number (only
//! when running as root).
//!
//! The walk (directories, symlinks, special files, hard links) runs in one thread; regular
//! files go to a pool of workers that read, verify and write them in parallel. Directory
//! metadata (owner, mode, xattrs, times) is applied once everything inside is written:
//! left directories are kept in a list, and applied — children before parents — after the
//! workers have drained, every 1024 directories and at the end.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, RenameFlags, Timespec, Timestamps, Uid};

use crate::fsmeta::{self, Names, Xattrs};
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

/// What a restore reports; called from several threads.
pub trait RestoreEvents: Sync {
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

/// Directories whose metadata waits for their contents, at most this many at once.
const DEFERRED_DIRS: usize = 1024;

type Owner = (Option<Uid>, Option<Gid>);

/// What the walk and the file workers share.
struct Shared<'a> {
    repo: &'a Repository,
    events: &'a dyn RestoreEvents,
    stats: Mutex<RestoreStats>,
    /// Files handed to the workers and not finished yet.
    pending: Mutex<usize>,
    idle: Condvar,
}

impl Shared<'_> {
    fn fail(&self, path: &[u8], err: impl std::fmt::Display) {
        self.stats.lock().unwrap().failed += 1;
        self.events.failed(&show(path), &err.to_string());
    }

    fn done(&self) {
        let mut p = self.pending.lock().unwrap();
        *p -= 1;
        if *p == 0 {
            self.idle.notify_all();
        }
    }

    fn wait_idle(&self) {
        let mut p = self.pending.lock().unwrap();
        while *p > 0 {
            p = self.idle.wait(p).unwrap();
        }
    }
}

/// One regular file for a worker.
struct FileJob {
    dir: Arc<OwnedFd>,
    path: Vec<u8>,
    node: Node,
    replace: bool,
    owner: Owner,
    xattrs: Xattrs,
}

/// A directory left by the walk, whose metadata is still to be applied.
struct Deferred {
    fd: Arc<OwnedFd>,
    path: Vec<u8>,
    node: Node,
    owner: Owner,
    xattrs: Xattrs,
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
        let fd = rustix::fs::open(
            target,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            RepoError::Usage(format!("cannot open the target {}: {e}", target.display()))
        })?;
        Some(Arc::new(fd))
    };
    raise_fd_limit();
    let shared = Shared {
        repo,
        events,
        stats: Mutex::new(RestoreStats::default()),
        pending: Mutex::new(0),
        idle: Condvar::new(),
    };
    let workers = if opts.dry_run {
        0
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(1, 16)
            + 2
    };
    let result = std::thread::scope(|scope| {
        let (tx, rx) = crossbeam_channel::bounded::<FileJob>(4 * workers.max(1));
        for i in 0..workers {
            let (rx, sh) = (rx.clone(), &shared);
            std::thread::Builder::new()
                .name(format!("cairn-restore-{i}"))
                .spawn_scoped(scope, move || {
                    for job in rx {
                        run_file_job(sh, job);
                        sh.done();
                    }
                })
                .expect("cannot start a restore thread");
        }
        drop(rx);
        let mut r = Restorer {
            shared: &shared,
            opts,
            stack: vec![root_fd.clone()],
            names: Names::default(),
            links: HashMap::new(),
            deferred: Vec::new(),
            tx: (workers > 0).then_some(tx),
        };
        let walked = walk::walk(repo, root, sel, &mut r);
        // Whatever happened, finish the files under way and the directories left so far.
        r.flush_deferred();
        r.tx = None;
        walked
    });
    result?;
    // One sync of the target's file system at the end, not one per file: as durable once
    // restore returns, without paying an fsync for every small file.
    if let Some(fd) = &root_fd {
        rustix::fs::syncfs(&**fd).map_err(|e| RepoError::Io {
            what: format!("cannot sync {}", target.display()),
            err: e.into(),
        })?;
    }
    Ok(shared.stats.into_inner().unwrap())
}

/// Many directories are open at once while their metadata waits: use the hard limit.
fn raise_fd_limit() {
    let l = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    if l.current < l.maximum {
        let _ = rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit {
                current: l.maximum,
                maximum: l.maximum,
            },
        );
    }
}

struct Restorer<'a, 's> {
    shared: &'s Shared<'a>,
    opts: &'s RestoreOptions,
    /// Open directories on the current path; None where a directory could not be made
    /// (its contents are then skipped, the failure reported once).
    stack: Vec<Option<Arc<OwnedFd>>>,
    names: Names,
    /// Hard-link group -> an O_PATH descriptor of the first file restored in it.
    links: HashMap<u64, OwnedFd>,
    deferred: Vec<Deferred>,
    /// The file workers (None in a dry run).
    tx: Option<crossbeam_channel::Sender<FileJob>>,
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

/// Move a finished temporary entry into place.
fn commit(dir: BorrowedFd, tmp: &[u8], name: &[u8], replace: bool) -> io::Result<()> {
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

/// A worker's job: a regular file, built under a temporary name, then renamed.
fn run_file_job(sh: &Shared, job: FileJob) {
    let Kind::File(f) = &job.node.kind else {
        return;
    };
    let dir = job.dir.as_fd();
    let tmp = tmp_name();
    let res = write_file(sh, dir, &tmp, &job.node, f, job.owner, &job.xattrs).and_then(|()| {
        commit(dir, &tmp, last_name(&job.path), job.replace)
            .map_err(|e| format!("cannot move into place: {e}"))
    });
    match res {
        Ok(()) => {
            {
                let mut st = sh.stats.lock().unwrap();
                st.files += 1;
                st.bytes += f.size;
            }
            sh.events.restored(&show(&job.path), &job.node);
        }
        Err(e) => sh.fail(&job.path, e),
    }
}

/// Create `tmp` in `dir` with the file's verified content and metadata. On error the
/// temporary file is removed.
fn write_file(
    sh: &Shared,
    dir: BorrowedFd,
    tmp: &[u8],
    n: &Node,
    f: &FileContent,
    owner: Owner,
    xattrs: &Xattrs,
) -> Result<(), String> {
    let fd = rustix::fs::openat(
        dir,
        os(tmp),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| format!("cannot create: {e}"))?;
    let file = File::from(fd);
    let result = write_content(sh, &file, f).and_then(|()| {
        if owner.0.is_some() {
            rustix::fs::fchown(&file, owner.0, owner.1)
                .map_err(|e| format!("cannot set owner: {e}"))?;
        }
        fsmeta::set_fd_xattrs(&file, xattrs)?;
        rustix::fs::fchmod(&file, Mode::from_raw_mode(n.mode))
            .map_err(|e| format!("cannot set mode: {e}"))?;
        rustix::fs::futimens(&file, &times(n)).map_err(|e| format!("cannot set times: {e}"))
    });
    if result.is_err() {
        let _ = rustix::fs::unlinkat(dir, os(tmp), AtFlags::empty());
    }
    result
}

/// Write and verify content.
fn write_content(sh: &Shared, file: &File, f: &FileContent) -> Result<(), String> {
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
        let data = sh
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
        sh.events.progress(data.len() as u64);
    }
    crate::util::hash_zeros(&mut hasher, &mut logical, f.size);
    file.set_len(f.size)
        .map_err(|e| format!("cannot set the size: {e}"))?;
    if *hasher.finalize().as_bytes() != f.hash {
        return Err("content does not match the recorded hash (damaged repository)".into());
    }
    Ok(())
}

fn ft_name(ft: FileType) -> &'static str {
    match ft {
        FileType::Fifo => "fifo",
        FileType::CharacterDevice => "character device",
        _ => "block device",
    }
}

impl Restorer<'_, '_> {
    fn fail(&self, path: &[u8], err: impl std::fmt::Display) {
        self.shared.fail(path, err);
    }

    fn parent(&self) -> Option<Arc<OwnedFd>> {
        self.stack.last().and_then(|f| f.clone())
    }

    fn owner(&mut self, n: &Node) -> Owner {
        if !self.opts.owners {
            return (None, None);
        }
        let uid = self.names.uid_for(&n.user, n.uid);
        let gid = self.names.gid_for(&n.group, n.gid);
        (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
    }

    /// The xattrs to set: all of them as root; otherwise only the namespaces an
    /// unprivileged user may set (`user.*`, POSIX ACLs), the others reported as skipped.
    fn xattrs_for(&self, path: &[u8], n: &Node) -> Xattrs {
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
            self.shared.events.skipped(
                &show(path),
                &format!("xattrs {} need root; not restored", names.join(", ")),
            );
        }
        keep
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

    /// Wait for the file workers, then apply the metadata of the directories left so far
    /// (children before parents, in the order they were left).
    fn flush_deferred(&mut self) {
        self.shared.wait_idle();
        for d in std::mem::take(&mut self.deferred) {
            let res = (|| {
                if d.owner.0.is_some() {
                    rustix::fs::fchown(&*d.fd, d.owner.0, d.owner.1)
                        .map_err(|e| format!("cannot set owner: {e}"))?;
                }
                fsmeta::set_fd_xattrs(&*d.fd, &d.xattrs)?;
                rustix::fs::fchmod(&*d.fd, Mode::from_raw_mode(d.node.mode))
                    .map_err(|e| format!("cannot set mode: {e}"))?;
                rustix::fs::futimens(&*d.fd, &times(&d.node))
                    .map_err(|e| format!("cannot set times: {e}"))
            })();
            if let Err(e) = res {
                self.fail(&d.path, e);
            }
        }
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

    fn count(&self, n: &Node) {
        let mut st = self.shared.stats.lock().unwrap();
        match n.kind {
            Kind::File(_) => st.files += 1,
            _ => st.other += 1,
        }
    }
}

impl Visitor for Restorer<'_, '_> {
    fn enter_dir(&mut self, path: &[u8], n: &Node) -> Result<(), RepoError> {
        self.shared.events.restored(&show(path), n);
        self.shared.stats.lock().unwrap().dirs += 1;
        if self.opts.dry_run {
            self.stack.push(None);
            return Ok(());
        }
        let Some(dir) = self.parent() else {
            self.stack.push(None);
            return Ok(());
        };
        let name = last_name(path);
        let fd = match rustix::fs::mkdirat(&*dir, os(name), Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => rustix::fs::openat(
                &*dir,
                os(name),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ),
            Err(e) => Err(e),
        };
        match fd {
            Ok(fd) => self.stack.push(Some(Arc::new(fd))),
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
        let owner = self.owner(n);
        let xattrs = self.xattrs_for(path, n);
        self.deferred.push(Deferred {
            fd,
            path: path.to_vec(),
            node: n.clone(),
            owner,
            xattrs,
        });
        if self.deferred.len() >= DEFERRED_DIRS {
            self.flush_deferred();
        }
        Ok(())
    }

    fn entry(&mut self, path: &[u8], n: &Node) -> Result<(), RepoError> {
        if self.opts.dry_run {
            self.shared.events.restored(&show(path), n);
            self.count(n);
            return Ok(());
        }
        let Some(dir_arc) = self.parent() else {
            return Ok(());
        };
        let dir = dir_arc.as_fd();
        let name = last_name(path);
        let replace = match self.may_replace(dir, name, n) {
            Ok(r) => r,
            Err(why) => {
                self.shared.stats.lock().unwrap().skipped += 1;
                self.shared.events.skipped(&show(path), &why);
                return Ok(());
            }
        };
        // An ordinary regular file: to the workers.
        if let (Kind::File(f), true) = (&n.kind, self.tx.is_some()) {
            if f.link_group == 0 {
                let owner = self.owner(n);
                let xattrs = self.xattrs_for(path, n);
                *self.shared.pending.lock().unwrap() += 1;
                let job = FileJob {
                    dir: dir_arc.clone(),
                    path: path.to_vec(),
                    node: n.clone(),
                    replace,
                    owner,
                    xattrs,
                };
                let tx = self.tx.as_ref().expect("checked above");
                if tx.send(job).is_err() {
                    self.shared.done();
                    self.fail(path, "the restore workers stopped");
                }
                return Ok(());
            }
        }
        // Hard links, symlinks and special files: here, in walk order.
        let tmp = tmp_name();
        let res = match &n.kind {
            Kind::File(f) => self.hard_link_member(dir, &tmp, path, n, f),
            _ => self.restore_other(dir, &tmp, path, n),
        };
        match res.and_then(|()| {
            commit(dir, &tmp, name, replace).map_err(|e| format!("cannot move into place: {e}"))
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
                    self.shared.stats.lock().unwrap().bytes += f.size;
                }
                self.shared.events.restored(&show(path), n);
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

impl Restorer<'_, '_> {
    /// A member of a hard-link group: linked to the first member restored, or written in
    /// full (the first one, or when linking fails).
    fn hard_link_member(
        &mut self,
        dir: BorrowedFd,
        tmp: &[u8],
        path: &[u8],
        n: &Node,
        f: &FileContent,
    ) -> Result<(), String> {
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
        let owner = self.owner(n);
        let xattrs = self.xattrs_for(path, n);
        write_file(self.shared, dir, tmp, n, f, owner, &xattrs)
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
