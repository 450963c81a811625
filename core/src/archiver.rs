//! Backup: walk the sources and record a snapshot.
//!
//! The walk is anchored on directory file descriptors (`openat`/`statat` with
//! `O_NOFOLLOW`), so it never follows a symlink by accident, is immune to a directory being
//! swapped for a link mid-walk, and works on paths longer than PATH_MAX. Each directory
//! becomes one tree blob, written after its children (bottom-up), and the snapshot is
//! written last. A file that cannot be read is reported by path and left out; the snapshot
//! is still recorded but marked incomplete, and the caller exits 3. A file that changes
//! while it is read is stored as read and reported.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, SeekFrom, Stat};

use crate::cache::{CacheBuilder, FilesCache, Signature};
use crate::chunker::Chunker;
use crate::fsmeta::{self, Names};
use crate::repo::snapshot::{Figures, Inventory, Snapshot, MAX_RECORDED_ERRORS};
use crate::repo::writer::BlobWriter;
use crate::repo::{RepoError, Repository, BLOB_DATA, BLOB_TREE};
use crate::tree::{self, FileContent, Kind, Node};

const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// What to back up and how.
pub struct BackupOptions {
    pub paths: Vec<PathBuf>,
    pub exclude: Vec<String>,
    pub one_file_system: bool,
    pub exclude_caches: bool,
    pub exclude_if_present: Vec<String>,
    pub tags: Vec<String>,
    pub compression: Option<i32>,
    pub pack_size: usize,
    pub dry_run: bool,
    /// Where the files cache lives (`$CACHE_DIRECTORY`); None: no cache.
    pub cache_dir: Option<PathBuf>,
    /// Read every file, whatever the files cache says.
    pub force_read: bool,
    /// Database dumps, streamed into `/.cairn/databases/NAME/FILE` (see [`crate::dump`]).
    pub dumps: Vec<crate::dump::Dump>,
    /// Dumps that could not even be planned (tool or user missing): (path, error); they
    /// make the snapshot incomplete like a dump that fails.
    pub failed_dumps: Vec<(String, String)>,
    /// Where a dump that needs a temporary copy (SQLite) makes it.
    pub scratch_dir: PathBuf,
}

/// Callbacks for what an operator should hear about while the backup runs.
pub trait BackupEvents {
    fn unreadable(&self, _path: &str, _error: &str) {}
    fn changed_while_read(&self, _path: &str) {}
    fn skipped(&self, _path: &str, _why: &str) {}
    fn progress(&self, _bytes: u64) {}
    /// Something worth a line in the log that is not about one file.
    fn note(&self, _message: &str) {}
    /// A database dump starts: its path in the snapshot, and what runs.
    fn dump_started(&self, _path: &str, _what: &str) {}
    /// A dump was stored whole: its size, and the tool's stderr (warnings), if any.
    fn dump_stored(&self, _path: &str, _bytes: u64, _warnings: &str) {}
    /// A dump failed and is not in the snapshot.
    fn dump_failed(&self, _path: &str, _error: &str) {}
}

pub struct NoEvents;
impl BackupEvents for NoEvents {}

pub struct BackupResult {
    /// None in a dry run.
    pub snapshot_id: Option<String>,
    pub snapshot: Snapshot,
}

/// Compile exclude patterns: a pattern with a `/` matches the whole path (`*` stays within
/// one component, `**` crosses them); one without matches the entry's name anywhere.
pub fn compile_excludes(patterns: &[String]) -> Result<(GlobSet, GlobSet), String> {
    let mut full = GlobSetBuilder::new();
    let mut base = GlobSetBuilder::new();
    for p in patterns {
        let g = GlobBuilder::new(p)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| format!("exclude pattern {p:?}: {e}"))?;
        if p.contains('/') {
            full.add(g);
        } else {
            base.add(g);
        }
    }
    Ok((
        full.build().map_err(|e| e.to_string())?,
        base.build().map_err(|e| e.to_string())?,
    ))
}

struct Walker<'a, 'r> {
    writer: BlobWriter<'r>,
    chunker: Chunker<'r>,
    opts: &'a BackupOptions,
    events: &'a dyn BackupEvents,
    exclude_full: GlobSet,
    exclude_base: GlobSet,
    names: Names,
    figures: Figures,
    errors: Vec<String>,
    /// (dev, ino) of hard-linked files seen -> (group, content)
    links: HashMap<(u64, u64), FileContent>,
    /// The files cache of the parent snapshot, when there is one that fits.
    cache: Option<FilesCache>,
    /// The files cache this run writes.
    cache_out: CacheBuilder,
    /// The chunker's read buffer, reused for every file.
    buf: Vec<u8>,
    prefetch: Prefetcher,
    next_group: u64,
    /// The `/.cairn` directory of dumps, merged into the root tree when it is stored.
    root_extra: Option<Node>,
}

fn dev_of(st: &Stat) -> u64 {
    st.st_dev
}

fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

fn join(path: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = path.to_vec();
    if p.last() != Some(&b'/') {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Back up `opts.paths` into `repo` and record a snapshot.
pub fn backup(
    repo: &Repository,
    opts: &BackupOptions,
    events: &dyn BackupEvents,
) -> Result<BackupResult, RepoError> {
    let start = Instant::now();
    let (exclude_full, exclude_base) = compile_excludes(&opts.exclude).map_err(RepoError::Usage)?;
    let sources = normalize_sources(&opts.paths)?;
    let host = crate::util::hostname();
    let paths: Vec<String> = sources.iter().map(|p| p.display().to_string()).collect();
    // The parent: the latest snapshot of the same host and paths, for the figures.
    let parent = repo
        .snapshots()?
        .into_iter()
        .rev()
        .find(|(_, s)| s.host == host && s.paths == paths);
    let cache = load_cache(
        repo,
        opts,
        parent.as_ref().map(|(id, _)| id.as_str()),
        events,
    );
    let c = repo.config.chunker;
    let mut w = Walker {
        writer: BlobWriter::new(repo, opts.pack_size, opts.compression, opts.dry_run),
        chunker: Chunker::new(c.min, c.avg, c.max, &repo.keys.gear),
        opts,
        events,
        exclude_full,
        exclude_base,
        names: Names::default(),
        figures: Figures::default(),
        errors: Vec::new(),
        links: HashMap::new(),
        cache,
        cache_out: CacheBuilder::default(),
        buf: Vec::new(),
        prefetch: Prefetcher::start(),
        next_group: 1,
        root_extra: None,
    };
    let parent_root = parent.as_ref().and_then(|(_, s)| w.load_tree_hex(&s.tree));
    // Dumps first: they are the database's consistent point, taken before the long walk.
    w.root_extra = w.dumps(parent_root.as_deref())?;
    let root = w.virtual_root(&sources, parent_root.as_deref())?;
    let stats = w.writer.finish()?;
    let mut figures = w.figures;
    figures.bytes_added = stats.bytes_added;
    figures.bytes_added_stored = stats.bytes_stored;
    figures.blobs_added = stats.blobs_added;
    figures.duration_secs = start.elapsed().as_secs_f64();
    let complete = w.errors.is_empty();
    let mut errors = w.errors;
    errors.truncate(MAX_RECORDED_ERRORS);
    let snapshot = Snapshot {
        version: 1,
        time: chrono::Utc::now(),
        host,
        user: nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_default(),
        paths,
        tags: opts.tags.clone(),
        tree: hex::encode(root),
        parent: parent.map(|(id, _)| id),
        program: format!("cairn {}", env!("CARGO_PKG_VERSION")),
        complete,
        errors,
        figures,
        inventory: Inventory::collect(),
    };
    let snapshot_id = if opts.dry_run {
        None
    } else {
        Some(repo.save_snapshot(&snapshot)?)
    };
    if let (Some(dir), Some(id)) = (&opts.cache_dir, &snapshot_id) {
        if let Err(e) = w.cache_out.save(dir, &repo.config.id, id) {
            events.note(&format!(
                "cannot write the files cache in {}: {e} (the next run reads every file)",
                dir.display()
            ));
        }
    }
    Ok(BackupResult {
        snapshot_id,
        snapshot,
    })
}

/// Files up to this size are prefetched (larger ones get the kernel's own read-ahead).
const PREFETCH_MAX: u64 = 1 << 20;

/// Threads that prefetch. The work is waiting on the disk, not the CPU, so two keep the
/// disk's queue fuller than one without taking the cores from the walk.
const PREFETCH_THREADS: usize = 2;

/// What the prefetcher is asked to do with some entries of an open directory.
enum Prefetch {
    /// Start reading these small files (`posix_fadvise(WILLNEED)`).
    Read(OwnedFd, Vec<Vec<u8>>),
    /// List these subdirectories and stat their entries, so their inodes are in memory
    /// when the walk gets there.
    Stat(OwnedFd, Vec<Vec<u8>>),
}

/// Starts the disk work of what the walk will need next, ahead of it: the reads of a
/// directory's small files, and the listing and stat of its subdirectories. The walk is
/// one thread and each `stat` or first read of a cold file waits for the disk; the
/// prefetch threads queue that I/O for many entries at once, so the walk then finds them
/// in the page and inode caches. Best effort and side-effect free (nothing is read into
/// cairn; the kernel caches it): when the threads fall behind, requests are dropped.
struct Prefetcher {
    tx: Option<crossbeam_channel::Sender<Prefetch>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Prefetcher {
    fn start() -> Prefetcher {
        let (tx, rx) = crossbeam_channel::bounded::<Prefetch>(64);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut threads = Vec::new();
        for i in 0..PREFETCH_THREADS {
            let (rx, stopped) = (rx.clone(), stop.clone());
            let t = std::thread::Builder::new()
                .name(format!("cairn-prefetch-{i}"))
                .spawn(move || {
                    let halt = || stopped.load(std::sync::atomic::Ordering::Relaxed);
                    for job in rx {
                        match job {
                            Prefetch::Read(dir, names) => prefetch_reads(&dir, &names, &halt),
                            Prefetch::Stat(dir, names) => prefetch_stats(&dir, &names, &halt),
                        }
                    }
                });
            if let Ok(t) = t {
                threads.push(t);
            }
        }
        Prefetcher {
            tx: (!threads.is_empty()).then_some(tx),
            threads,
            stop,
        }
    }

    fn send(&self, dir: BorrowedFd, names: Vec<Vec<u8>>, read: bool) {
        if let (Some(tx), Ok(d)) = (&self.tx, rustix::io::dup(dir)) {
            let job = if read {
                Prefetch::Read(d, names)
            } else {
                Prefetch::Stat(d, names)
            };
            let _ = tx.try_send(job);
        }
    }

    /// Start reading these small files of `dir`.
    fn request(&self, dir: BorrowedFd, names: Vec<Vec<u8>>) {
        self.send(dir, names, true);
    }

    /// List and stat the entries of these subdirectories of `dir`.
    fn request_stats(&self, dir: BorrowedFd, subdirs: Vec<Vec<u8>>) {
        self.send(dir, subdirs, false);
    }
}

fn prefetch_reads(dir: &OwnedFd, names: &[Vec<u8>], halt: &dyn Fn() -> bool) {
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    for n in names {
        if halt() {
            return;
        }
        if let Ok(f) = rustix::fs::openat(dir, crate::util::os(n), flags, Mode::empty()) {
            let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::WillNeed);
        }
    }
}

fn prefetch_stats(dir: &OwnedFd, subdirs: &[Vec<u8>], halt: &dyn Fn() -> bool) {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    for sub in subdirs {
        if halt() {
            return;
        }
        let Ok(fd) = rustix::fs::openat(dir, crate::util::os(sub), flags, Mode::empty()) else {
            continue;
        };
        let Ok(entries) = rustix::fs::Dir::read_from(&fd) else {
            continue;
        };
        for e in entries.flatten() {
            if halt() {
                return;
            }
            let n = e.file_name();
            if n.to_bytes() != b"." && n.to_bytes() != b".." {
                let _ = rustix::fs::statat(&fd, n, AtFlags::SYMLINK_NOFOLLOW);
            }
        }
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The files cache, when it describes the parent snapshot.
fn load_cache(
    repo: &Repository,
    opts: &BackupOptions,
    parent: Option<&str>,
    events: &dyn BackupEvents,
) -> Option<FilesCache> {
    if opts.force_read {
        return None;
    }
    let dir = opts.cache_dir.as_ref()?;
    match FilesCache::load(dir, &repo.config.id) {
        Ok(Some(c)) if Some(c.snapshot.as_str()) == parent => Some(c),
        Ok(Some(_)) => {
            events.note("the files cache belongs to another snapshot than the parent; every file will be read");
            None
        }
        Ok(None) => None,
        Err(e) => {
            events.note(&e);
            None
        }
    }
}

/// Absolute, with symlinks in the parent resolved, sorted, and without paths that another
/// source already contains.
fn normalize_sources(paths: &[PathBuf]) -> Result<Vec<PathBuf>, RepoError> {
    let mut out: Vec<PathBuf> = Vec::new();
    for p in paths {
        if !p.is_absolute() {
            return Err(RepoError::Usage(format!(
                "source path {} is not absolute",
                p.display()
            )));
        }
        let norm = match (p.parent(), p.file_name()) {
            (Some(parent), Some(name)) => match std::fs::canonicalize(parent) {
                Ok(cp) => cp.join(name),
                Err(_) => p.clone(),
            },
            _ => PathBuf::from("/"),
        };
        out.push(norm);
    }
    out.sort();
    out.dedup();
    let all = out.clone();
    out.retain(|p| !all.iter().any(|q| q != p && p.starts_with(q)));
    Ok(out)
}

impl<'a, 'r> Walker<'a, 'r> {
    fn fail(&mut self, path: &[u8], err: impl std::fmt::Display) {
        let p = crate::util::show(path);
        let e = err.to_string();
        self.events.unreadable(&p, &e);
        self.errors.push(format!("{p}: {e}"));
    }

    fn load_tree_hex(&self, hexid: &str) -> Option<Vec<Node>> {
        let id: [u8; 32] = hex::decode(hexid).ok()?.try_into().ok()?;
        self.load_tree(&id)
    }

    fn load_tree(&self, id: &[u8; 32]) -> Option<Vec<Node>> {
        let b = self.writer.repo().read_blob(BLOB_TREE, id).ok()?;
        tree::decode(&b).ok()
    }

    fn store_tree(&mut self, nodes: &[Node]) -> Result<[u8; 32], RepoError> {
        let bytes = tree::encode(nodes);
        if nodes.len() > tree::MAX_ENTRIES || bytes.len() > crate::repo::MAX_TREE_BYTES {
            // Readers refuse such a tree; refuse to write one (the caller reports it).
            return Err(RepoError::Usage(format!(
                "a directory with {} entries ({} bytes of metadata) exceeds the tree limits",
                nodes.len(),
                bytes.len()
            )));
        }
        self.writer.add(BLOB_TREE, &bytes)
    }

    /// The root tree: the sources at their absolute paths, with the directories leading
    /// to them recorded with their own metadata.
    fn virtual_root(
        &mut self,
        sources: &[PathBuf],
        parent: Option<&[Node]>,
    ) -> Result<[u8; 32], RepoError> {
        if sources.iter().any(|p| p == Path::new("/")) {
            let fd = rustix::fs::open(
                "/",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| RepoError::Usage(format!("cannot open /: {e}")))?;
            let dev = rustix::fs::fstat(&fd).map(|s| s.st_dev).unwrap_or(0);
            return self.walk_dir(fd.as_fd(), b"/", dev, parent);
        }
        let rel: Vec<Vec<Vec<u8>>> = sources
            .iter()
            .map(|p| {
                p.components()
                    .skip(1)
                    .map(|c| c.as_os_str().as_bytes().to_vec())
                    .collect()
            })
            .collect();
        self.virtual_dir(b"/", &rel, parent)
    }

    fn virtual_dir(
        &mut self,
        path: &[u8],
        rel: &[Vec<Vec<u8>>],
        parent: Option<&[Node]>,
    ) -> Result<[u8; 32], RepoError> {
        let dirfd = rustix::fs::open(
            crate::util::os(path),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| RepoError::Usage(format!("cannot open {}: {e}", crate::util::show(path))))?;
        let mut groups: std::collections::BTreeMap<Vec<u8>, Vec<Vec<Vec<u8>>>> = Default::default();
        for r in rel {
            groups
                .entry(r[0].clone())
                .or_default()
                .push(r[1..].to_vec());
        }
        let mut nodes = Vec::new();
        for (name, rest) in groups {
            let full = join(path, &name);
            let pnode = parent.and_then(|p| tree::find(p, &name));
            if rest.iter().any(|r| r.is_empty()) {
                // A source itself.
                match rustix::fs::statat(&dirfd, crate::util::os(&name), AtFlags::SYMLINK_NOFOLLOW)
                {
                    Ok(st) => {
                        if let Some(n) =
                            self.entry(dirfd.as_fd(), &name, &full, st, dev_of(&st), pnode)?
                        {
                            nodes.push(n);
                        }
                    }
                    Err(e) => self.fail(&full, format!("source path: {e}")),
                }
                continue;
            }
            // A directory leading to sources: its metadata, and only the sources below.
            let st =
                match rustix::fs::statat(&dirfd, crate::util::os(&name), AtFlags::SYMLINK_NOFOLLOW)
                {
                    Ok(st) if is_dir(&st) => st,
                    Ok(_) => {
                        self.fail(&full, "not a directory (leading to a source path)");
                        continue;
                    }
                    Err(e) => {
                        self.fail(&full, e);
                        continue;
                    }
                };
            let sub_parent = pnode.and_then(|n| match &n.kind {
                Kind::Dir { subtree } => self.load_tree(subtree),
                _ => None,
            });
            let subtree = self.virtual_dir(&full, &rest, sub_parent.as_deref())?;
            let xattrs = match rustix::fs::openat(
                &dirfd,
                crate::util::os(&name),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fsmeta::fd_xattrs(fd.as_fd()).unwrap_or_default(),
                Err(_) => vec![],
            };
            nodes.push(self.node(name, &st, Kind::Dir { subtree }, xattrs));
            self.figures.dirs += 1;
        }
        self.merge_root_extra(path, &mut nodes);
        self.store_tree(&nodes)
    }

    /// At the root, add the `/.cairn` directory of dumps (replacing a real `/.cairn`,
    /// which a source of `/` would otherwise bring: the name is cairn's).
    fn merge_root_extra(&mut self, path: &[u8], nodes: &mut Vec<Node>) {
        if path != b"/" {
            return;
        }
        let Some(extra) = self.root_extra.take() else {
            return;
        };
        if let Some(i) = nodes.iter().position(|n| n.name == extra.name) {
            self.events.note(&format!(
                "/{} on this host is not backed up: that name holds cairn's database dumps \
                 in snapshots",
                String::from_utf8_lossy(&extra.name)
            ));
            nodes.remove(i);
        }
        nodes.push(extra);
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// Run every dump and build `/.cairn/databases/NAME/FILE` from what they stored;
    /// None when there are no dumps (or none succeeded and no section directory is left).
    fn dumps(&mut self, parent_root: Option<&[Node]>) -> Result<Option<Node>, RepoError> {
        let opts = self.opts;
        for (path, error) in &opts.failed_dumps {
            self.dump_failed(path, error);
        }
        if opts.dumps.is_empty() {
            return Ok(None);
        }
        let now = chrono::Utc::now();
        let (uid, gid) = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        let meta = |w: &mut Self, name: &[u8], kind: Kind, mode: u32| Node {
            name: name.to_vec(),
            kind,
            mode,
            uid,
            gid,
            user: w.names.user(uid),
            group: w.names.group(gid),
            mtime: now.timestamp(),
            mtime_nsec: now.timestamp_subsec_nanos(),
            xattrs: vec![],
        };
        let [top, sub] = crate::dump::VIRTUAL_DIR;
        let parent_dir = |root: Option<&[Node]>, names: &[&str]| -> Option<Vec<Node>> {
            let mut nodes = root?.to_vec();
            for n in names {
                let node = tree::find(&nodes, n.as_bytes())?.clone();
                let Kind::Dir { subtree } = node.kind else {
                    return None;
                };
                nodes = self.load_tree(&subtree)?;
            }
            Some(nodes)
        };
        // Sections in order, each with its files.
        let mut sections: Vec<(String, Vec<Node>)> = Vec::new();
        let mut parents: HashMap<String, Option<Vec<Node>>> = HashMap::new();
        for d in &opts.dumps {
            parents
                .entry(d.section.clone())
                .or_insert_with(|| parent_dir(parent_root, &[top, sub, &d.section]));
        }
        for dump in &opts.dumps {
            let path = dump.snapshot_path();
            self.events.dump_started(&path, &dump.describe());
            let mut stream = match dump.open(&opts.scratch_dir) {
                Ok(s) => s,
                Err(e) => {
                    self.dump_failed(&path, &e.to_string());
                    continue;
                }
            };
            let stored = self.store_stream(&mut stream);
            let content = match stored {
                Ok(c) => c,
                Err(ReadErr::Repo(e)) => {
                    stream.abort();
                    return Err(e);
                }
                Err(ReadErr::Io(e)) => {
                    stream.abort();
                    self.dump_failed(&path, &format!("reading the dump: {e}"));
                    continue;
                }
            };
            match stream.finish() {
                Ok(warnings) => {
                    self.events.dump_stored(&path, content.size, &warnings);
                    let pnode = parents
                        .get(&dump.section)
                        .and_then(|p| p.as_deref())
                        .and_then(|p| tree::find(p, dump.file.as_bytes()));
                    self.count_file(pnode, &content);
                    let node = meta(self, dump.file.as_bytes(), Kind::File(content), 0o600);
                    match sections.iter_mut().find(|(n, _)| *n == dump.section) {
                        Some((_, files)) => files.push(node),
                        None => sections.push((dump.section.clone(), vec![node])),
                    }
                }
                // What was stored of it stays unreferenced (prune reclaims it).
                Err(e) => self.dump_failed(&path, &e.to_string()),
            }
        }
        if sections.is_empty() {
            return Ok(None);
        }
        let mut section_nodes = Vec::new();
        for (name, mut files) in sections {
            files.sort_by(|a, b| a.name.cmp(&b.name));
            let subtree = self.store_tree(&files)?;
            section_nodes.push(meta(self, name.as_bytes(), Kind::Dir { subtree }, 0o700));
            self.figures.dirs += 1;
        }
        section_nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let subtree = self.store_tree(&section_nodes)?;
        let databases = meta(self, sub.as_bytes(), Kind::Dir { subtree }, 0o700);
        let subtree = self.store_tree(&[databases])?;
        self.figures.dirs += 2;
        Ok(Some(meta(
            self,
            top.as_bytes(),
            Kind::Dir { subtree },
            0o700,
        )))
    }

    fn dump_failed(&mut self, path: &str, error: &str) {
        self.events.dump_failed(path, error);
        self.errors.push(format!("{path}: {error}"));
    }

    fn node(&mut self, name: Vec<u8>, st: &Stat, kind: Kind, xattrs: fsmeta::Xattrs) -> Node {
        Node {
            name,
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            user: self.names.user(st.st_uid),
            group: self.names.group(st.st_gid),
            mtime: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec as u32,
            xattrs,
        }
    }

    fn excluded(&self, path: &[u8], name: &[u8]) -> bool {
        self.exclude_full.is_match(Path::new(crate::util::os(path)))
            || self.exclude_base.is_match(Path::new(crate::util::os(name)))
    }

    /// One directory entry; None when excluded or unreadable (already reported).
    fn entry(
        &mut self,
        dirfd: BorrowedFd,
        name: &[u8],
        path: &[u8],
        st: Stat,
        root_dev: u64,
        parent: Option<&Node>,
    ) -> Result<Option<Node>, RepoError> {
        if self.excluded(path, name) {
            return Ok(None);
        }
        let oname = crate::util::os(name);
        let node = match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                let fd = match rustix::fs::openat(
                    dirfd,
                    oname,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(fd) => fd,
                    Err(e) => {
                        self.fail(path, e);
                        return Ok(None);
                    }
                };
                let xattrs = self.fd_xattrs(fd.as_fd(), path);
                let skip_contents = if self.opts.one_file_system && st.st_dev != root_dev {
                    self.events.skipped(
                        &crate::util::show(path),
                        "another file system (one_file_system)",
                    );
                    true
                } else if let Some(why) = self.dir_excluded_by_marker(fd.as_fd()) {
                    self.events.skipped(&crate::util::show(path), &why);
                    true
                } else {
                    false
                };
                let subtree = if skip_contents {
                    self.store_tree(&[])?
                } else {
                    let sub_parent = parent.and_then(|n| match &n.kind {
                        Kind::Dir { subtree } => self.load_tree(subtree),
                        _ => None,
                    });
                    self.walk_dir(fd.as_fd(), path, root_dev, sub_parent.as_deref())?
                };
                self.figures.dirs += 1;
                self.node(name.to_vec(), &st, Kind::Dir { subtree }, xattrs)
            }
            FileType::RegularFile => match self.file(dirfd, name, path, &st, parent)? {
                Some((content, xattrs, st2)) => {
                    self.node(name.to_vec(), &st2, Kind::File(content), xattrs)
                }
                None => return Ok(None),
            },
            FileType::Symlink => {
                let target = match rustix::fs::readlinkat(dirfd, oname, Vec::new()) {
                    Ok(t) => t.into_bytes(),
                    Err(e) => {
                        self.fail(path, e);
                        return Ok(None);
                    }
                };
                let x = self.entry_xattrs(dirfd, name, path);
                self.figures.other_entries += 1;
                self.node(name.to_vec(), &st, Kind::Symlink { target }, x)
            }
            t @ (FileType::Fifo | FileType::CharacterDevice | FileType::BlockDevice) => {
                let (major, minor) = (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
                let kind = match t {
                    FileType::Fifo => Kind::Fifo,
                    FileType::CharacterDevice => Kind::CharDev { major, minor },
                    _ => Kind::BlockDev { major, minor },
                };
                let x = self.entry_xattrs(dirfd, name, path);
                self.figures.other_entries += 1;
                self.node(name.to_vec(), &st, kind, x)
            }
            _ => {
                self.events
                    .skipped(&crate::util::show(path), "socket (not restorable)");
                return Ok(None);
            }
        };
        Ok(Some(node))
    }

    fn fd_xattrs(&mut self, fd: BorrowedFd, path: &[u8]) -> fsmeta::Xattrs {
        fsmeta::fd_xattrs(fd).unwrap_or_else(|e| {
            self.fail(path, format!("xattrs: {e}"));
            vec![]
        })
    }

    fn entry_xattrs(&mut self, dirfd: BorrowedFd, name: &[u8], path: &[u8]) -> fsmeta::Xattrs {
        match fsmeta::entry_xattrs(dirfd, name) {
            Ok(x) => x,
            Err(e) => {
                self.fail(path, format!("xattrs: {e}"));
                vec![]
            }
        }
    }

    fn dir_excluded_by_marker(&self, fd: BorrowedFd) -> Option<String> {
        for m in &self.opts.exclude_if_present {
            if rustix::fs::statat(fd, m.as_str(), AtFlags::SYMLINK_NOFOLLOW).is_ok() {
                return Some(format!(
                    "contents excluded: {m} present (exclude_if_present)"
                ));
            }
        }
        if self.opts.exclude_caches {
            if let Ok(f) = rustix::fs::openat(
                fd,
                "CACHEDIR.TAG",
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                let mut head = [0u8; 43];
                if File::from(f).read_exact(&mut head).is_ok() && head == CACHEDIR_SIGNATURE {
                    return Some(
                        "contents excluded: cache directory (CACHEDIR.TAG, exclude_caches)".into(),
                    );
                }
            }
        }
        None
    }

    fn walk_dir(
        &mut self,
        fd: BorrowedFd,
        path: &[u8],
        root_dev: u64,
        parent: Option<&[Node]>,
    ) -> Result<[u8; 32], RepoError> {
        let mut names: Vec<Vec<u8>> = Vec::new();
        let dir = rustix::fs::Dir::read_from(fd);
        match dir {
            Ok(dir) => {
                for e in dir {
                    match e {
                        Ok(e) => {
                            let n = e.file_name().to_bytes();
                            if n != b"." && n != b".." {
                                names.push(n.to_vec());
                            }
                        }
                        Err(err) => {
                            self.fail(path, format!("reading directory: {err}"));
                            break;
                        }
                    }
                }
            }
            Err(e) => self.fail(path, format!("reading directory: {e}")),
        }
        names.sort();
        let mut listed = Vec::with_capacity(names.len());
        for name in names {
            match rustix::fs::statat(fd, crate::util::os(&name), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => listed.push((name, st)),
                Err(rustix::io::Errno::NOENT) => {} // deleted since listed
                Err(e) => self.fail(&join(path, &name), e),
            }
        }
        // Small files this directory will read: start their I/O now, all at once, so the
        // disk works on many while the walk processes one.
        let wanted: Vec<Vec<u8>> = listed
            .iter()
            .filter(|(name, st)| {
                FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
                    && st.st_size > 0
                    && (st.st_size as u64) <= PREFETCH_MAX
                    && self
                        .cached(
                            &join(path, name),
                            st,
                            parent.and_then(|p| tree::find(p, name)),
                        )
                        .is_none()
            })
            .map(|(name, _)| name.clone())
            .collect();
        if wanted.len() > 1 {
            self.prefetch.request(fd, wanted);
        }
        // The subdirectories the walk will enter after this one's files: list and stat
        // their entries meanwhile.
        let subdirs: Vec<Vec<u8>> = listed
            .iter()
            .filter(|(_, st)| is_dir(st) && (!self.opts.one_file_system || dev_of(st) == root_dev))
            .map(|(name, _)| name.clone())
            .collect();
        if !subdirs.is_empty() {
            self.prefetch.request_stats(fd, subdirs);
        }
        let mut nodes = Vec::with_capacity(listed.len());
        for (name, st) in listed {
            let full = join(path, &name);
            let pnode = parent.and_then(|p| tree::find(p, &name));
            if let Some(n) = self.entry(fd, &name, &full, st, root_dev, pnode)? {
                nodes.push(n);
            }
        }
        self.merge_root_extra(path, &mut nodes);
        match self.store_tree(&nodes) {
            Err(RepoError::Usage(m)) => {
                self.fail(path, m);
                self.store_tree(&[])
            }
            r => r,
        }
    }

    /// Read one regular file: chunks, whole-file hash, sparse extents, xattrs.
    fn file(
        &mut self,
        dirfd: BorrowedFd,
        name: &[u8],
        path: &[u8],
        listed: &Stat,
        parent: Option<&Node>,
    ) -> Result<Option<(FileContent, fsmeta::Xattrs, Stat)>, RepoError> {
        // Unchanged since the parent snapshot (files cache): take its content, read nothing.
        if let Some((mut content, xattrs)) = self.cached(path, listed, parent) {
            self.cache_out.add(path, Signature::of(listed));
            self.count_file(parent, &content);
            self.link(listed, &mut content);
            return Ok(Some((content, xattrs, *listed)));
        }
        let oname = crate::util::os(name);
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
        let fd: OwnedFd =
            match rustix::fs::openat(dirfd, oname, flags | OFlags::NOATIME, Mode::empty()) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::PERM) => {
                    match rustix::fs::openat(dirfd, oname, flags, Mode::empty()) {
                        Ok(fd) => fd,
                        Err(e) => {
                            self.fail(path, e);
                            self.figures.files_failed += 1;
                            return Ok(None);
                        }
                    }
                }
                Err(e) => {
                    self.fail(path, e);
                    self.figures.files_failed += 1;
                    return Ok(None);
                }
            };
        let st = match rustix::fs::fstat(&fd) {
            Ok(s) if FileType::from_raw_mode(s.st_mode) == FileType::RegularFile => s,
            Ok(_) => {
                self.fail(path, "replaced by a non-regular file while being backed up");
                return Ok(None);
            }
            Err(e) => {
                self.fail(path, e);
                return Ok(None);
            }
        };
        let xattrs = self.fd_xattrs(fd.as_fd(), path);
        let key = (st.st_dev, st.st_ino);
        if st.st_nlink > 1 {
            if let Some(c) = self.links.get(&key) {
                let c = c.clone();
                self.count_file(parent, &c);
                return Ok(Some((c, xattrs, st)));
            }
        }
        let mut content = match self.read_content(&fd, &st) {
            Ok(c) => c,
            Err(ReadErr::Io(e)) => {
                self.fail(path, e);
                self.figures.files_failed += 1;
                return Ok(None);
            }
            Err(ReadErr::Repo(e)) => return Err(e),
        };
        match rustix::fs::fstat(&fd) {
            Ok(after) if Signature::of(&after) == Signature::of(&st) => {
                // Only a file read whole and unchanged may be skipped next time.
                self.cache_out.add(path, Signature::of(&st));
            }
            _ => {
                self.figures.files_changed_during_read += 1;
                self.events.changed_while_read(&crate::util::show(path));
            }
        }
        self.count_file(parent, &content);
        self.link(&st, &mut content);
        Ok(Some((content, xattrs, st)))
    }

    /// Give a multiply-linked file its hard-link group (first sight) and remember it.
    fn link(&mut self, st: &Stat, content: &mut FileContent) {
        if st.st_nlink > 1 {
            content.link_group = self.next_group;
            self.next_group += 1;
            self.links.insert((st.st_dev, st.st_ino), content.clone());
        }
    }

    /// The parent snapshot's content for `path`, if the files cache vouches that the file
    /// has not changed since (same device, inode, size, mtime, ctime) and every chunk is
    /// still in the index. ctime covers owner, mode and xattr changes too, so the parent's
    /// xattrs are reused as well.
    fn cached(
        &self,
        path: &[u8],
        st: &Stat,
        parent: Option<&Node>,
    ) -> Option<(FileContent, fsmeta::Xattrs)> {
        if self.opts.force_read {
            return None;
        }
        if self.cache.as_ref()?.get(path)? != Signature::of(st) {
            return None;
        }
        let p = parent?;
        let Kind::File(c) = &p.kind else { return None };
        if c.size != st.st_size as u64
            || p.mtime != st.st_mtime
            || p.mtime_nsec != st.st_mtime_nsec as u32
        {
            return None;
        }
        let index = &self.writer.repo().index;
        if !c.chunks.iter().all(|id| index.contains(id)) {
            return None;
        }
        let mut content = c.clone();
        content.link_group = 0;
        Some((content, p.xattrs.clone()))
    }

    /// Count a file as new, changed or unchanged against the parent snapshot.
    fn count_file(&mut self, parent: Option<&Node>, content: &FileContent) {
        match parent.map(|p| &p.kind) {
            Some(Kind::File(pc)) if pc.hash == content.hash && pc.size == content.size => {
                self.figures.files_unchanged += 1
            }
            Some(Kind::File(_)) => self.figures.files_changed += 1,
            _ => self.figures.files_new += 1,
        }
        self.figures.bytes_total += content.size;
    }

    /// Cut what `reader` yields into chunks and store them as data blobs, appending their
    /// ids to `chunks`; returns the number of bytes read.
    fn chunk_into(
        &mut self,
        reader: &mut dyn Read,
        chunks: &mut Vec<[u8; 32]>,
    ) -> Result<u64, ReadErr> {
        let writer = &mut self.writer;
        let events = self.events;
        let mut repo_err = None;
        let chunker = &self.chunker;
        let read = chunker.split_with(&mut self.buf, reader, |chunk| {
            let id = writer.repo().keys.blob_id(chunk);
            if let Err(e) = writer.add_with_id(BLOB_DATA, id, chunk) {
                repo_err = Some(e);
                return Err(io::Error::other("repository write failed"));
            }
            chunks.push(id);
            events.progress(chunk.len() as u64);
            Ok(())
        });
        if let Some(e) = repo_err {
            return Err(ReadErr::Repo(e));
        }
        read.map_err(ReadErr::Io)
    }

    /// Store a stream (a database dump) as a file's content: chunks and whole hash.
    fn store_stream(&mut self, stream: &mut dyn Read) -> Result<FileContent, ReadErr> {
        struct Hashing<'a> {
            inner: &'a mut dyn Read,
            hasher: blake3::Hasher,
        }
        impl Read for Hashing<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.inner.read(buf)?;
                self.hasher.update(&buf[..n]);
                Ok(n)
            }
        }
        let mut reader = Hashing {
            inner: stream,
            hasher: blake3::Hasher::new(),
        };
        let mut chunks = Vec::new();
        let size = self.chunk_into(&mut reader, &mut chunks)?;
        self.figures.bytes_read += size;
        Ok(FileContent {
            size,
            hash: *reader.hasher.finalize().as_bytes(),
            link_group: 0,
            extents: Vec::new(),
            chunks,
        })
    }

    fn read_content(&mut self, fd: &OwnedFd, st: &Stat) -> Result<FileContent, ReadErr> {
        let size = st.st_size as u64;
        let extents = if (st.st_blocks as u64) * 512 < size {
            data_extents(fd.as_fd(), size)?
        } else {
            None
        };
        let file = File::from(fd.try_clone().map_err(ReadErr::Io)?);
        let mut hasher = blake3::Hasher::new();
        let mut chunks = Vec::new();
        let mut reader = ContentReader {
            file: &file,
            extents: extents.as_deref(),
            idx: 0,
            pos: 0,
            hasher: &mut hasher,
            logical: 0,
            size,
        };
        let data_bytes = self.chunk_into(&mut reader, &mut chunks)?;
        reader.finish();
        let logical = reader.logical;
        self.figures.bytes_read += data_bytes;
        Ok(FileContent {
            size: if extents.is_some() {
                size.max(logical)
            } else {
                logical
            },
            hash: *hasher.finalize().as_bytes(),
            link_group: 0,
            extents: extents.unwrap_or_default(),
            chunks,
        })
    }
}

enum ReadErr {
    Io(io::Error),
    Repo(RepoError),
}

/// Data extents of a sparse file via SEEK_DATA / SEEK_HOLE; None if unsupported.
fn data_extents(fd: BorrowedFd, size: u64) -> Result<Option<Vec<(u64, u64)>>, ReadErr> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let start = match rustix::fs::seek(fd, SeekFrom::Data(pos)) {
            Ok(s) => s,
            Err(rustix::io::Errno::NXIO) => break, // only a hole remains
            Err(rustix::io::Errno::INVAL) => return Ok(None),
            Err(e) => return Err(ReadErr::Io(e.into())),
        };
        let end = rustix::fs::seek(fd, SeekFrom::Hole(start))
            .map_err(|e| ReadErr::Io(e.into()))?
            .min(size);
        if end > start {
            out.push((start, end - start));
        }
        pos = end;
    }
    Ok(Some(out))
}

/// Reads a file's data (the extents of a sparse file, or all of a dense one) and feeds
/// the logical content — zeros for holes — to the whole-file hash.
struct ContentReader<'a> {
    file: &'a File,
    extents: Option<&'a [(u64, u64)]>,
    idx: usize,
    /// Offset within the current extent (sparse) or the file (dense).
    pos: u64,
    hasher: &'a mut blake3::Hasher,
    logical: u64,
    size: u64,
}

impl ContentReader<'_> {
    fn zeros_to(&mut self, target: u64) {
        crate::util::hash_zeros(self.hasher, &mut self.logical, target);
    }

    /// Hash the trailing hole of a sparse file.
    fn finish(&mut self) {
        if self.extents.is_some() {
            let size = self.size;
            self.zeros_to(size);
        }
    }
}

impl Read for ContentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.extents {
            None => {
                let n = self.file.read_at(buf, self.pos)?;
                self.pos += n as u64;
                self.hasher.update(&buf[..n]);
                self.logical += n as u64;
                Ok(n)
            }
            Some(ext) => loop {
                let Some(&(off, len)) = ext.get(self.idx) else {
                    return Ok(0);
                };
                if self.pos >= len {
                    self.idx += 1;
                    self.pos = 0;
                    continue;
                }
                self.zeros_to(off + self.pos);
                let want = ((len - self.pos) as usize).min(buf.len());
                let n = self.file.read_at(&mut buf[..want], off + self.pos)?;
                if n == 0 {
                    // The file shrank under us: end this extent here.
                    self.idx += 1;
                    self.pos = 0;
                    continue;
                }
                self.pos += n as u64;
                self.hasher.update(&buf[..n]);
                self.logical += n as u64;
                return Ok(n);
            },
        }
    }
}
