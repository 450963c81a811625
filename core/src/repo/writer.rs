//! Adding blobs to the repository: dedup, seal, pack, and index.
//!
//! Blobs already in the index (or already added in this run) are skipped — that is the
//! deduplication. New blobs are sealed and appended to an in-memory pack per blob type;
//! a full pack is written atomically under its SHA-256 name, and the index files that
//! describe written packs are written after them (periodically and at `finish`). Nothing
//! refers to a pack before it is durable, so a crash loses only unreferenced work.

use std::collections::HashSet;

use super::index::IndexFile;
use super::pack::{PackBuilder, PackEntry, BLOB_TREE, MAX_BLOBS_PER_PACK};
use super::{io_err, RepoError, Repository};
use crate::backend::Kind;

/// Write an index file after this many packs, so a long first backup that is interrupted
/// keeps most of its work reachable.
const PACKS_PER_INDEX: usize = 32;
/// ... or after this many blob entries, so no index file nears the readers' size limit
/// (49 bytes an entry: about 100 MiB).
const ENTRIES_PER_INDEX: usize = 2 << 20;

#[derive(Debug, Default, Clone, Copy)]
pub struct WriteStats {
    pub blobs_added: u64,
    pub bytes_added: u64,
    pub bytes_stored: u64,
    pub packs_written: u64,
}

pub struct BlobWriter<'r> {
    repo: &'r Repository,
    pack_size: usize,
    level: Option<i32>,
    dry_run: bool,
    data: PackBuilder,
    tree: PackBuilder,
    added: HashSet<[u8; 32]>,
    unindexed: Vec<([u8; 32], Vec<PackEntry>)>,
    pub stats: WriteStats,
}

impl<'r> BlobWriter<'r> {
    /// `level`: zstd level, or None for no compression. `dry_run`: count, write nothing.
    pub fn new(repo: &'r Repository, pack_size: usize, level: Option<i32>, dry_run: bool) -> Self {
        BlobWriter {
            repo,
            pack_size,
            level,
            dry_run,
            data: PackBuilder::default(),
            tree: PackBuilder::default(),
            added: HashSet::new(),
            unindexed: Vec::new(),
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
        self.added.insert(id);
        self.stats.blobs_added += 1;
        self.stats.bytes_added += plain.len() as u64;
        let sealed = self.repo.keys.seal_blob(kind, &id, plain, self.level);
        self.stats.bytes_stored += sealed.len() as u64;
        if self.dry_run {
            return Ok(true);
        }
        let pb = if kind == BLOB_TREE {
            &mut self.tree
        } else {
            &mut self.data
        };
        pb.add(kind, id, &sealed, plain.len());
        // A pack is cut by size, or by blob count so its header stays readable.
        if pb.buf.len() >= self.pack_size || pb.entries.len() >= MAX_BLOBS_PER_PACK {
            let full = std::mem::take(pb);
            self.write_pack(full)?;
        }
        Ok(true)
    }

    /// Add a blob; returns its id.
    pub fn add(&mut self, kind: u8, plain: &[u8]) -> Result<[u8; 32], RepoError> {
        let id = self.repo.keys.blob_id(plain);
        self.add_with_id(kind, id, plain)?;
        Ok(id)
    }

    fn write_pack(&mut self, pb: PackBuilder) -> Result<(), RepoError> {
        if pb.is_empty() {
            return Ok(());
        }
        let (id, bytes, entries) = pb.finish(&self.repo.keys);
        let name = hex::encode(id);
        self.repo
            .backend
            .write(Some(Kind::Data), &name, &bytes)
            .map_err(io_err(format!(
                "cannot write pack data/{}/{name} in {}",
                &name[..2],
                self.repo.location()
            )))?;
        self.stats.packs_written += 1;
        self.unindexed.push((id, entries));
        let entries: usize = self.unindexed.iter().map(|(_, e)| e.len()).sum();
        if self.unindexed.len() >= PACKS_PER_INDEX || entries >= ENTRIES_PER_INDEX {
            self.write_index()?;
        }
        Ok(())
    }

    fn write_index(&mut self) -> Result<(), RepoError> {
        if self.unindexed.is_empty() {
            return Ok(());
        }
        let f = IndexFile {
            supersedes: vec![],
            packs: std::mem::take(&mut self.unindexed),
        };
        self.repo.write_index(&f)?;
        Ok(())
    }

    /// Write the partial packs and the index describing every pack of this run.
    pub fn finish(mut self) -> Result<WriteStats, RepoError> {
        if !self.dry_run {
            let d = std::mem::take(&mut self.data);
            self.write_pack(d)?;
            let t = std::mem::take(&mut self.tree);
            self.write_pack(t)?;
            self.write_index()?;
        }
        Ok(self.stats)
    }
}
