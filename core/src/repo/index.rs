//! The index: which pack holds each blob, where, and how long it is.
//!
//! Index files are sealed lists of packs and their entries, written after the packs they
//! describe (so an index never points at a pack that is not there yet). All index files are
//! loaded into one in-memory map when the repository is opened. An index file may name
//! index files it supersedes (used by prune), which are then ignored.

use std::collections::{HashMap, HashSet};

use super::pack::{read_entry, write_entry, PackEntry, ENTRY_LEN};
use crate::codec::{Reader, Writer};
use crate::crypto::{self, Keys};

const INDEX_VERSION: u8 = 1;
/// Largest plaintext index file accepted.
pub const MAX_INDEX_BYTES: usize = 1 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLoc {
    pub pack: u32,
    pub kind: u8,
    pub offset: u64,
    pub length: u32,
    pub raw_length: u32,
}

/// One index file's content.
#[derive(Debug, Default, Clone)]
pub struct IndexFile {
    pub supersedes: Vec<[u8; 32]>,
    pub packs: Vec<([u8; 32], Vec<PackEntry>)>,
}

impl IndexFile {
    pub fn encode(&self, keys: &Keys) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(INDEX_VERSION);
        w.u32(self.supersedes.len() as u32);
        for s in &self.supersedes {
            w.bytes(s);
        }
        w.u32(self.packs.len() as u32);
        for (id, entries) in &self.packs {
            w.bytes(id);
            w.u32(entries.len() as u32);
            for e in entries {
                write_entry(&mut w, e);
            }
        }
        keys.seal_meta(crypto::aad::INDEX, &w.buf, Some(3))
    }

    pub fn decode(keys: &Keys, sealed: &[u8]) -> Result<IndexFile, String> {
        let plain = keys
            .open_meta(crypto::aad::INDEX, sealed, MAX_INDEX_BYTES)
            .map_err(|e| e.to_string())?;
        let mut r = Reader::new(&plain);
        let e = |e: crate::codec::DecodeError| e.to_string();
        let v = r.u8().map_err(e)?;
        if v != INDEX_VERSION {
            return Err(format!("unknown index version {v}"));
        }
        let ns = r
            .count("superseded index files", usize::MAX, 32)
            .map_err(e)?;
        let mut supersedes = Vec::with_capacity(ns);
        for _ in 0..ns {
            supersedes.push(r.id().map_err(e)?);
        }
        let np = r.count("packs", usize::MAX, 36).map_err(e)?;
        let mut packs = Vec::with_capacity(np);
        for _ in 0..np {
            let id = r.id().map_err(e)?;
            let ne = r.count("pack entries", usize::MAX, ENTRY_LEN).map_err(e)?;
            let mut entries = Vec::with_capacity(ne);
            for _ in 0..ne {
                entries.push(read_entry(&mut r).map_err(e)?);
            }
            packs.push((id, entries));
        }
        r.finish().map_err(e)?;
        Ok(IndexFile { supersedes, packs })
    }
}

/// The merged in-memory index.
#[derive(Default)]
pub struct Index {
    pub packs: Vec<[u8; 32]>,
    pack_pos: HashMap<[u8; 32], u32>,
    blobs: HashMap<[u8; 32], BlobLoc>,
}

impl Index {
    /// Merge index files (already filtered of superseded ones).
    pub fn add_file(&mut self, f: &IndexFile) {
        for (pack, entries) in &f.packs {
            self.add_pack(pack, entries);
        }
    }

    pub fn add_pack(&mut self, pack: &[u8; 32], entries: &[PackEntry]) {
        let p = *self.pack_pos.entry(*pack).or_insert_with(|| {
            self.packs.push(*pack);
            (self.packs.len() - 1) as u32
        });
        for e in entries {
            self.blobs.entry(e.id).or_insert(BlobLoc {
                pack: p,
                kind: e.kind,
                offset: e.offset,
                length: e.length,
                raw_length: e.raw_length,
            });
        }
    }

    pub fn get(&self, id: &[u8; 32]) -> Option<BlobLoc> {
        self.blobs.get(id).copied()
    }

    pub fn contains(&self, id: &[u8; 32]) -> bool {
        self.blobs.contains_key(id)
    }

    pub fn pack_id(&self, loc: &BlobLoc) -> &[u8; 32] {
        &self.packs[loc.pack as usize]
    }

    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8; 32], &BlobLoc)> {
        self.blobs.iter()
    }

    pub fn pack_set(&self) -> HashSet<[u8; 32]> {
        self.packs.iter().copied().collect()
    }
}
