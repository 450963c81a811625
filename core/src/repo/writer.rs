//! Adding blobs to the repository: dedup, seal, pack, and index — in parallel.
//!
//! The caller (the backup walk) hashes each chunk and asks [`BlobWriter::add_with_id`];
//! blobs already in the index or already added in this run are skipped — that is the
//! deduplication, decided in the caller's thread so a blob is never sealed twice. New
//! blobs go through a bounded channel to a pool of sealer threads (zstd + AES-GCM, the
//! expensive part), then to one packer thread that appends them to an in-memory pack per
//! blob type. A full pack is written atomically under its SHA-256 name; the index files
//! that describe written packs are written after them (periodically and at `finish`).
//! Nothing refers to a pack before it is durable, so a crash loses only unreferenced work.
//! Memory is bounded: at most a fixed number of chunks are in flight, whatever the sizes
//! of the files, plus one pack buffer per blob type.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};

use super::index::IndexFile;
use super::pack::{PackEntry, PackStream, BLOB_TREE, MAX_BLOBS_PER_PACK};
use super::{io_err, write_index_to, RepoError, Repository};
use crate::backend::Backend;
use crate::crypto::Keys;

/// Write an index file after this many packs, so a long first backup that is interrupted
/// keeps most of its work reachable.
const PACKS_PER_INDEX: usize = 32;
/// ... or after this many blob entries, so no index file nears the readers' size limit
/// (49 bytes an entry: about 100 MiB).
const ENTRIES_PER_INDEX: usize = 2 << 20;

/// A batch for the sealers is sent when it holds this many bytes...
const BATCH_BYTES: usize = 1 << 20;
/// ... or this many blobs.
const BATCH_BLOBS: usize = 256;

#[derive(Debug, Default, Clone, Copy)]
pub struct WriteStats {
    pub blobs_added: u64,
    pub bytes_added: u64,
    pub bytes_stored: u64,
    pub packs_written: u64,
}

struct Job {
    kind: u8,
    id: [u8; 32],
    plain: Vec<u8>,
}

struct Sealed {
    kind: u8,
    id: [u8; 32],
    sealed: Vec<u8>,
    raw_len: usize,
}

/// What the packer thread hands back.
#[derive(Default)]
struct PackerOut {
    bytes_stored: u64,
    packs_written: u64,
}

pub struct BlobWriter<'r> {
    repo: &'r Repository,
    added: HashSet<[u8; 32]>,
    jobs: Option<Sender<Vec<Job>>>,
    /// Blobs waiting to be sent to the sealers as one batch.
    batch: Vec<Job>,
    batch_bytes: usize,
    sealers: Vec<JoinHandle<()>>,
    packer: Option<JoinHandle<Result<PackerOut, RepoError>>>,
    /// Set by the packer when it failed: stop feeding it.
    failed: Arc<AtomicBool>,
    pub stats: WriteStats,
}

/// Number of sealer threads: one per core.
fn sealer_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 16)
}

impl<'r> BlobWriter<'r> {
    /// `level`: zstd level, or None for no compression. `dry_run`: count, write nothing.
    pub fn new(repo: &'r Repository, pack_size: usize, level: Option<i32>, dry_run: bool) -> Self {
        let n = sealer_count();
        // Bounded queues of batches: the data in memory at once is fixed (a batch holds at
        // most BATCH_BYTES, or one blob), and small blobs travel many to a message.
        let (jobs_tx, jobs_rx) = bounded::<Vec<Job>>(2 * n);
        let (sealed_tx, sealed_rx) = bounded::<Vec<Sealed>>(2 * n);
        let sealers = (0..n)
            .map(|i| {
                let (rx, tx, keys) = (jobs_rx.clone(), sealed_tx.clone(), repo.keys.clone());
                std::thread::Builder::new()
                    .name(format!("cairn-seal-{i}"))
                    .spawn(move || {
                        for batch in rx {
                            let out: Vec<Sealed> = batch
                                .into_iter()
                                .map(|j| Sealed {
                                    sealed: keys.seal_blob(j.kind, &j.id, &j.plain, level),
                                    kind: j.kind,
                                    id: j.id,
                                    raw_len: j.plain.len(),
                                })
                                .collect();
                            if tx.send(out).is_err() {
                                break;
                            }
                        }
                    })
                    .expect("cannot start a sealer thread")
            })
            .collect();
        drop(sealed_tx);
        let failed = Arc::new(AtomicBool::new(false));
        let packer = {
            let (backend, keys, failed) = (repo.backend.clone(), repo.keys.clone(), failed.clone());
            std::thread::Builder::new()
                .name("cairn-pack".into())
                .spawn(move || packer(sealed_rx, backend, keys, pack_size, dry_run, failed))
                .expect("cannot start the packer thread")
        };
        BlobWriter {
            repo,
            added: HashSet::new(),
            jobs: Some(jobs_tx),
            batch: Vec::new(),
            batch_bytes: 0,
            sealers,
            packer: Some(packer),
            failed,
            stats: WriteStats::default(),
        }
    }

    pub fn repo(&self) -> &Repository {
        self.repo
    }

    /// Is this blob already stored (or added in this run)?
    pub fn has(&self, id: &[u8; 32]) -> bool {
        self.repo.index.contains(id) || self.added.contains(id)
    }

    /// Add a blob whose id the caller computed; returns true if it was new.
    pub fn add_with_id(&mut self, kind: u8, id: [u8; 32], plain: &[u8]) -> Result<bool, RepoError> {
        if self.has(&id) {
            return Ok(false);
        }
        if self.failed.load(Ordering::Relaxed) {
            return Err(self.take_error());
        }
        self.added.insert(id);
        self.stats.blobs_added += 1;
        self.stats.bytes_added += plain.len() as u64;
        self.batch.push(Job {
            kind,
            id,
            plain: plain.to_vec(),
        });
        self.batch_bytes += plain.len();
        if self.batch_bytes >= BATCH_BYTES || self.batch.len() >= BATCH_BLOBS {
            self.send_batch()?;
        }
        Ok(true)
    }

    fn send_batch(&mut self) -> Result<(), RepoError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let sent = self
            .jobs
            .as_ref()
            .expect("writer used after finish")
            .send(batch);
        if sent.is_err() {
            return Err(self.take_error());
        }
        Ok(())
    }

    /// Add a blob; returns its id.
    pub fn add(&mut self, kind: u8, plain: &[u8]) -> Result<[u8; 32], RepoError> {
        let id = self.repo.keys.blob_id(plain);
        self.add_with_id(kind, id, plain)?;
        Ok(id)
    }

    /// The packer's error (joining it to get it).
    fn take_error(&mut self) -> RepoError {
        self.jobs = None;
        for h in self.sealers.drain(..) {
            let _ = h.join();
        }
        match self.packer.take().map(|h| h.join()) {
            Some(Ok(Err(e))) => e,
            _ => RepoError::Corrupt("the blob writer stopped unexpectedly".into()),
        }
    }

    /// Wait for every blob to be sealed and packed, write the partial packs and the index
    /// describing every pack of this run.
    pub fn finish(mut self) -> Result<WriteStats, RepoError> {
        self.send_batch()?;
        self.jobs = None;
        for h in self.sealers.drain(..) {
            h.join()
                .map_err(|_| RepoError::Corrupt("a sealer thread panicked".into()))?;
        }
        let out = match self.packer.take() {
            Some(h) => h
                .join()
                .map_err(|_| RepoError::Corrupt("the packer thread panicked".into()))??,
            None => return Err(self.take_error()),
        };
        self.stats.bytes_stored = out.bytes_stored;
        self.stats.packs_written = out.packs_written;
        Ok(self.stats)
    }
}

impl Drop for BlobWriter<'_> {
    fn drop(&mut self) {
        // Abandoned (error path): stop the threads; unfinished packs are simply not written.
        self.failed.store(true, Ordering::Relaxed);
        self.jobs = None;
        for h in self.sealers.drain(..) {
            let _ = h.join();
        }
        if let Some(h) = self.packer.take() {
            let _ = h.join();
        }
    }
}

struct Packer {
    backend: Arc<dyn Backend>,
    keys: Arc<Keys>,
    pack_size: usize,
    dry_run: bool,
    /// The packs being written, one per blob type (data, tree); opened on first use.
    open: [Option<PackStream>; 2],
    unindexed: Vec<([u8; 32], Vec<PackEntry>)>,
    out: PackerOut,
}

fn packer(
    rx: Receiver<Vec<Sealed>>,
    backend: Arc<dyn Backend>,
    keys: Arc<Keys>,
    pack_size: usize,
    dry_run: bool,
    failed: Arc<AtomicBool>,
) -> Result<PackerOut, RepoError> {
    let mut p = Packer {
        backend,
        keys,
        pack_size,
        dry_run,
        open: [None, None],
        unindexed: Vec::new(),
        out: PackerOut::default(),
    };
    for batch in rx.iter() {
        if failed.load(Ordering::Relaxed) {
            // Abandoned by the writer: drain and drop.
            continue;
        }
        if let Err(e) = batch.into_iter().try_for_each(|s| p.add(s)) {
            failed.store(true, Ordering::Relaxed);
            // Drain so the sealers are never blocked, then report.
            for _ in rx.iter() {}
            return Err(e);
        }
    }
    if failed.load(Ordering::Relaxed) {
        return Err(RepoError::Corrupt("backup abandoned".into()));
    }
    for slot in 0..2 {
        if let Some(ps) = p.open[slot].take() {
            p.write_pack(ps)?;
        }
    }
    p.write_index()?;
    Ok(p.out)
}

impl Packer {
    fn add(&mut self, s: Sealed) -> Result<(), RepoError> {
        self.out.bytes_stored += s.sealed.len() as u64;
        if self.dry_run {
            return Ok(());
        }
        let slot = usize::from(s.kind == BLOB_TREE);
        let loc = self.backend.location();
        let werr = |e| RepoError::Io {
            what: format!("cannot write a pack in {loc}/data"),
            err: e,
        };
        if self.open[slot].is_none() {
            self.open[slot] = Some(PackStream::create(&*self.backend).map_err(werr)?);
        }
        let ps = self.open[slot].as_mut().expect("opened above");
        ps.add(s.kind, s.id, &s.sealed, s.raw_len).map_err(werr)?;
        // A pack is cut by size, or by blob count so its header stays readable.
        if ps.len() >= self.pack_size as u64 || ps.entries.len() >= MAX_BLOBS_PER_PACK {
            let full = self.open[slot].take().expect("opened above");
            self.write_pack(full)?;
        }
        Ok(())
    }

    fn write_pack(&mut self, ps: PackStream) -> Result<(), RepoError> {
        if ps.is_empty() || self.dry_run {
            return Ok(());
        }
        let (id, entries) = ps
            .finish(&self.keys, &*self.backend)
            .map_err(io_err(format!(
                "cannot write a pack in {}/data",
                self.backend.location()
            )))?;
        self.out.packs_written += 1;
        self.unindexed.push((id, entries));
        let entries: usize = self.unindexed.iter().map(|(_, e)| e.len()).sum();
        if self.unindexed.len() >= PACKS_PER_INDEX || entries >= ENTRIES_PER_INDEX {
            self.write_index()?;
        }
        Ok(())
    }

    fn write_index(&mut self) -> Result<(), RepoError> {
        if self.unindexed.is_empty() || self.dry_run {
            return Ok(());
        }
        let f = IndexFile {
            supersedes: vec![],
            packs: std::mem::take(&mut self.unindexed),
        };
        write_index_to(&*self.backend, &self.keys, &f)?;
        Ok(())
    }
}
