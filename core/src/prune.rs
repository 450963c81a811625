//! `cairn prune`: delete the data nothing uses any more, in an order a crash cannot break.
//!
//! Under the exclusive lock, prune reads every snapshot's trees to learn which blobs are
//! used (it refuses to run if any tree cannot be read: it would not know what that tree
//! needs). Packs holding no used blob are deleted; packs whose used share is below
//! [`REPACK_BELOW`] are repacked — their used blobs, checked and copied as sealed bytes,
//! go to new packs — within `--max-repack`. Packs no index names (left by interrupted
//! runs) are deleted too. The order is what makes it crash-safe:
//! 1. new packs are written (until the index names them they are harmless orphans);
//! 2. one new index file is written that lists every pack still in use and *supersedes*
//!    every old index file (readers ignore superseded files from this instant on);
//! 3. the old index files are deleted;
//! 4. the packs nothing lists any more are deleted.
//!
//! A crash at any point leaves a repository that `check` passes and every snapshot
//! restores; the next prune finishes the job.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::backend::Kind;
use crate::repo::index::IndexFile;
use crate::repo::pack::{PackBuilder, PackEntry, BLOB_TREE};
use crate::repo::{io_err, parse_id, RepoError, Repository, MAX_TREE_BYTES};
use crate::tree::{self, Kind as NodeKind};

/// A pack whose used bytes are below this share of its blob bytes is repacked.
pub const REPACK_BELOW: f64 = 0.8;

pub struct PruneOptions {
    pub dry_run: bool,
    /// Most bytes of packs to rewrite in one run (None: no limit).
    pub max_repack: Option<u64>,
    pub pack_size: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    pub snapshots: u64,
    pub blobs_used: u64,
    pub packs_total: u64,
    pub packs_deleted: u64,
    pub packs_repacked: u64,
    pub packs_unindexed_deleted: u64,
    pub packs_written: u64,
    pub bytes_freed: u64,
    pub bytes_repacked: u64,
    pub index_files_replaced: u64,
    pub dry_run: bool,
}

pub trait PruneEvents {
    fn progress(&self, _what: &str) {}
}

pub struct NoEvents;
impl PruneEvents for NoEvents {}

/// Every blob id some snapshot uses (trees and data).
pub fn used_blobs(
    repo: &Repository,
    events: &dyn PruneEvents,
) -> Result<(HashSet<[u8; 32]>, u64), RepoError> {
    let mut used = HashSet::new();
    let snaps = repo.snapshots()?;
    for (i, (id, s)) in snaps.iter().enumerate() {
        events.progress(&format!(
            "reading snapshot {}/{} ({})",
            i + 1,
            snaps.len(),
            &id[..8]
        ));
        let root = crate::walk::root_id(&s.tree)?;
        let mut stack = vec![root];
        while let Some(t) = stack.pop() {
            if !used.insert(t) {
                continue;
            }
            let bytes = repo.read_blob(BLOB_TREE, &t).map_err(|e| {
                RepoError::Corrupt(format!("snapshot {}: {e}; prune refuses to run on a damaged repository (see `cairn check`)", &id[..12]))
            })?;
            let nodes = tree::decode(&bytes).map_err(|e| {
                RepoError::Corrupt(format!(
                    "snapshot {}: tree {}: {e}",
                    &id[..12],
                    hex::encode(t)
                ))
            })?;
            for n in nodes {
                match n.kind {
                    NodeKind::Dir { subtree } => stack.push(subtree),
                    NodeKind::File(f) => used.extend(f.chunks),
                    _ => {}
                }
            }
        }
    }
    Ok((used, snaps.len() as u64))
}

pub fn prune(
    repo: &Repository,
    opts: &PruneOptions,
    events: &dyn PruneEvents,
) -> Result<PruneReport, RepoError> {
    let mut r = PruneReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let (used, n_snaps) = used_blobs(repo, events)?;
    r.snapshots = n_snaps;
    r.blobs_used = used.len() as u64;
    // Every index file and the packs it lists (superseded files already dropped by load).
    let files = repo.read_index_files()?;
    let superseded: HashSet<[u8; 32]> = files
        .iter()
        .flat_map(|(_, f)| f.supersedes.iter().copied())
        .collect();
    let mut packs: HashMap<[u8; 32], Vec<PackEntry>> = HashMap::new();
    for (id, f) in &files {
        if superseded.contains(id) {
            continue;
        }
        for (p, e) in &f.packs {
            packs.insert(*p, e.clone());
        }
    }
    // Each used blob is kept in exactly one pack: the first that holds it.
    let mut placed: HashSet<[u8; 32]> = HashSet::new();
    let mut keep: Vec<([u8; 32], Vec<PackEntry>)> = Vec::new();
    let mut delete: Vec<[u8; 32]> = Vec::new();
    let mut repack: Vec<([u8; 32], Vec<PackEntry>)> = Vec::new();
    let mut repack_budget = opts.max_repack.unwrap_or(u64::MAX);
    let mut ids: Vec<&[u8; 32]> = packs.keys().collect();
    ids.sort();
    r.packs_total = ids.len() as u64;
    for p in ids {
        let entries = &packs[p];
        let total: u64 = entries.iter().map(|e| e.length as u64).sum();
        let live: Vec<PackEntry> = entries
            .iter()
            .filter(|e| used.contains(&e.id) && !placed.contains(&e.id))
            .copied()
            .collect();
        let live_bytes: u64 = live.iter().map(|e| e.length as u64).sum();
        if live.is_empty() {
            delete.push(*p);
            r.bytes_freed += total;
            continue;
        }
        if (live_bytes as f64) < REPACK_BELOW * total as f64 && total <= repack_budget {
            repack_budget -= total;
            r.bytes_freed += total - live_bytes;
            r.bytes_repacked += live_bytes;
            placed.extend(live.iter().map(|e| e.id));
            repack.push((*p, live));
            continue;
        }
        placed.extend(live.iter().map(|e| e.id));
        keep.push((*p, entries.clone()));
    }
    if let Some(missing) = used.iter().find(|b| !placed.contains(*b)) {
        return Err(RepoError::Corrupt(format!(
            "blob {} is used by a snapshot but no pack holds it; prune refuses to run (see `cairn check`)",
            hex::encode(missing)
        )));
    }
    // Packs on disk that no index lists.
    let on_disk = repo
        .backend
        .list(Kind::Data)
        .map_err(io_err("cannot list data/"))?;
    let unindexed: Vec<String> = on_disk
        .into_iter()
        .filter(|n| parse_id(n).is_none_or(|id| !packs.contains_key(&id)))
        .collect();
    r.packs_deleted = delete.len() as u64;
    r.packs_repacked = repack.len() as u64;
    r.packs_unindexed_deleted = unindexed.len() as u64;
    let nothing_to_do = delete.is_empty() && repack.is_empty() && unindexed.is_empty();
    if opts.dry_run || nothing_to_do {
        return Ok(r);
    }

    // 1. New packs with the live blobs of the packs being repacked.
    let mut new_packs: Vec<([u8; 32], Vec<PackEntry>)> = Vec::new();
    let mut data = PackBuilder::default();
    let mut trees = PackBuilder::default();
    for (i, (p, live)) in repack.iter().enumerate() {
        events.progress(&format!("repacking {}/{}", i + 1, repack.len()));
        let name = hex::encode(p);
        let bytes = repo
            .backend
            .read(Some(Kind::Data), &name)
            .map_err(io_err(format!("cannot read pack {name}")))?;
        for e in live {
            let end = (e.offset as usize)
                .checked_add(e.length as usize)
                .filter(|x| *x <= bytes.len());
            let sealed = end
                .map(|end| &bytes[e.offset as usize..end])
                .ok_or_else(|| {
                    RepoError::Corrupt(format!("pack {name} is shorter than its index says"))
                })?;
            // Never carry damage forward: every copied blob is authenticated first.
            let limit = if e.kind == BLOB_TREE {
                MAX_TREE_BYTES
            } else {
                repo.config.chunker.max as usize
            };
            repo.keys
                .open_blob(e.kind, &e.id, sealed, limit.min(e.raw_length as usize))
                .map_err(|err| {
                    RepoError::Corrupt(format!(
                        "pack {name}: blob {}: {err}; prune stopped, nothing was deleted",
                        hex::encode(e.id)
                    ))
                })?;
            let pb = if e.kind == BLOB_TREE {
                &mut trees
            } else {
                &mut data
            };
            pb.add(e.kind, e.id, sealed, e.raw_length as usize);
            if pb.buf.len() >= opts.pack_size {
                let full = std::mem::take(pb);
                new_packs.push(write_pack(repo, full)?);
            }
        }
    }
    for pb in [data, trees] {
        if !pb.is_empty() {
            new_packs.push(write_pack(repo, pb)?);
        }
    }
    r.packs_written = new_packs.len() as u64;

    // 2. One index for everything still in use, superseding every old index file.
    let old_index: Vec<[u8; 32]> = files.iter().map(|(id, _)| *id).collect();
    let mut all = keep;
    all.extend(new_packs);
    let new_index = IndexFile {
        supersedes: old_index.clone(),
        packs: all,
    };
    let new_name = repo.write_index(&new_index)?;

    // 3. The old index files.
    for id in &old_index {
        let name = hex::encode(id);
        if name != new_name {
            repo.backend
                .remove(Kind::Index, &name)
                .map_err(io_err(format!("cannot remove index/{name}")))?;
        }
    }
    r.index_files_replaced = old_index.len() as u64;

    // 4. The packs nothing lists any more.
    let doomed = delete
        .iter()
        .chain(repack.iter().map(|(p, _)| p))
        .map(hex::encode)
        .chain(unindexed);
    for name in doomed {
        match repo.backend.remove(Kind::Data, &name) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(RepoError::Io {
                    what: format!("cannot remove pack {name}"),
                    err: e,
                })
            }
        }
    }
    Ok(r)
}

fn write_pack(repo: &Repository, pb: PackBuilder) -> Result<([u8; 32], Vec<PackEntry>), RepoError> {
    let (id, bytes, entries) = pb.finish(&repo.keys);
    let name = hex::encode(id);
    repo.backend
        .write(Some(Kind::Data), &name, &bytes)
        .map_err(io_err(format!("cannot write pack {name}")))?;
    Ok((id, entries))
}
