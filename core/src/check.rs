//! `cairn check`: prove the repository is whole.
//!
//! Without the data pass it checks structure: every index file and snapshot matches its
//! SHA-256 name and decrypts, every pack the index names exists with room for its blobs,
//! and every tree of every snapshot reads, decodes, and names only blobs the index has.
//! `--read-data` also reads every pack in full: its name must be the SHA-256 of its bytes,
//! its header must decrypt and agree with the index, and every blob must authenticate and
//! hash to its id. Packs nobody indexes (left by an interrupted run) and temporary files
//! are warnings, not errors: they are harmless (a later prune will remove them).

use std::collections::{HashMap, HashSet};

use crate::backend::Kind;
use crate::crypto;
use crate::repo::pack::{self, PackEntry};
use crate::repo::{RepoError, Repository, BLOB_DATA, BLOB_TREE};
use crate::tree::{self, Kind as NodeKind};
use crate::walk;

#[derive(Debug, Default, serde::Serialize)]
pub struct CheckReport {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    pub packs: u64,
    pub blobs: u64,
    pub snapshots: u64,
    pub trees: u64,
    pub bytes_read: u64,
}

/// Without the key: every object of the repository (key slots, packs, index files,
/// snapshots) is read and must be the SHA-256 of its name, and `config` must be there.
/// This is what a bucket-only auditor can prove; `objects` and `bytes_read` say how much.
pub fn check_names(
    backend: &dyn crate::backend::Backend,
    events: &dyn CheckEvents,
) -> Result<CheckReport, RepoError> {
    let mut r = CheckReport::default();
    match backend.exists(None, "config") {
        Ok(true) => {}
        Ok(false) => r.errors.push(format!(
            "{}: no config object: not a cairn repository",
            backend.location()
        )),
        Err(e) => return Err(crate::repo::io_err("cannot read config")(e)),
    }
    for kind in [Kind::Keys, Kind::Snapshots, Kind::Index, Kind::Data] {
        let names = backend
            .list(kind)
            .map_err(crate::repo::io_err("cannot list the objects"))?;
        for name in names {
            events.progress(&format!("{}/{name}", kind.dir()));
            match backend.read(Some(kind), &name) {
                Ok(bytes) => {
                    r.bytes_read += bytes.len() as u64;
                    if hex::encode(crypto::sha256(&bytes)) != name {
                        r.errors.push(format!(
                            "{}/{name}: its bytes do not hash to its name (damaged)",
                            kind.dir()
                        ));
                    }
                }
                Err(e) => r
                    .errors
                    .push(format!("{}/{name}: cannot read it: {e}", kind.dir())),
            }
            match kind {
                Kind::Data => r.packs += 1,
                Kind::Snapshots => r.snapshots += 1,
                _ => {}
            }
        }
    }
    Ok(r)
}

pub trait CheckEvents {
    fn progress(&self, _what: &str) {}
}

pub struct NoEvents;
impl CheckEvents for NoEvents {}

pub fn check(
    repo: &Repository,
    read_data: bool,
    events: &dyn CheckEvents,
) -> Result<CheckReport, RepoError> {
    let mut r = CheckReport::default();
    for l in repo
        .backend
        .leftovers()
        .map_err(crate::repo::io_err("cannot scan the repository"))?
    {
        r.warnings.push(format!(
            "temporary file left by an interrupted write: {l} (harmless)"
        ));
    }
    // Index files: damaged ones are errors; their packs then count as unindexed.
    let mut files = Vec::new();
    for name in repo
        .backend
        .list(Kind::Index)
        .map_err(crate::repo::io_err("cannot list index/"))?
    {
        match repo.backend.read(Some(Kind::Index), &name) {
            Ok(b) if Some(crypto::sha256(&b)) == crate::repo::parse_id(&name) => {
                match crate::repo::index::IndexFile::decode(&repo.keys, &b) {
                    Ok(f) => files.push((crate::repo::parse_id(&name).unwrap_or_default(), f)),
                    Err(e) => r.errors.push(format!("index/{name}: {e}")),
                }
            }
            Ok(_) => r.errors.push(format!(
                "index/{name}: content does not match its name (damaged)"
            )),
            Err(e) => r.errors.push(format!("index/{name}: cannot read: {e}")),
        }
    }
    // Index files superseded by another (prune's rewrite) no longer count, as in `open`.
    let superseded: HashSet<[u8; 32]> = files
        .iter()
        .flat_map(|(_, f)| f.supersedes.clone())
        .collect();
    let mut indexed: HashMap<[u8; 32], Vec<PackEntry>> = HashMap::new();
    for (_, f) in files.into_iter().filter(|(id, _)| !superseded.contains(id)) {
        indexed.extend(f.packs);
    }
    let on_disk: HashSet<String> = repo
        .backend
        .list(Kind::Data)
        .map_err(crate::repo::io_err("cannot list data/"))?
        .into_iter()
        .collect();
    r.packs = on_disk.len() as u64;
    for (p, entries) in &indexed {
        let name = hex::encode(p);
        if !on_disk.contains(&name) {
            r.errors.push(format!(
                "pack {name} is named by the index but missing from data/ ({} blobs lost)",
                entries.len()
            ));
            continue;
        }
        let end = entries
            .iter()
            .map(|e| e.offset.saturating_add(e.length as u64))
            .max()
            .unwrap_or(0)
            .saturating_add(4);
        match repo.backend.size(Kind::Data, &name) {
            Ok(sz) if sz < end => r.errors.push(format!(
                "pack {name} is truncated ({sz} bytes, index needs {end})"
            )),
            Ok(_) => {}
            Err(e) => r.errors.push(format!("pack {name}: {e}")),
        }
    }
    for name in &on_disk {
        if crate::repo::parse_id(name).is_some_and(|id| !indexed.contains_key(&id)) {
            r.warnings.push(format!("pack {name} is not in any index (left by an interrupted run; harmless, and unused by snapshots)"));
        }
    }
    // Snapshots and their trees.
    let mut seen_trees = HashSet::new();
    for name in repo
        .backend
        .list(Kind::Snapshots)
        .map_err(crate::repo::io_err("cannot list snapshots/"))?
    {
        events.progress(&format!("checking snapshot {}", &name[..8.min(name.len())]));
        r.snapshots += 1;
        let snap = match repo.load_snapshot(&name) {
            Ok(s) => s,
            Err(e) => {
                r.errors.push(e.to_string());
                continue;
            }
        };
        match walk::root_id(&snap.tree) {
            Ok(root) => check_tree(
                repo,
                &root,
                &format!("snapshot {}", &name[..8]),
                &mut seen_trees,
                &mut r,
            ),
            Err(e) => r.errors.push(format!("snapshots/{name}: {e}")),
        }
    }
    if read_data {
        let mut names: Vec<&String> = on_disk.iter().collect();
        names.sort();
        for (i, name) in names.iter().enumerate() {
            events.progress(&format!("reading pack {}/{}", i + 1, names.len()));
            read_pack(
                repo,
                name,
                indexed.get(&crate::repo::parse_id(name).unwrap_or_default()),
                &mut r,
            );
        }
    }
    Ok(r)
}

fn check_tree(
    repo: &Repository,
    id: &[u8; 32],
    ctx: &str,
    seen: &mut HashSet<[u8; 32]>,
    r: &mut CheckReport,
) {
    let mut stack = vec![(*id, "/".to_string())];
    while let Some((id, path)) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        r.trees += 1;
        let nodes = match repo
            .read_blob(BLOB_TREE, &id)
            .map_err(|e| e.to_string())
            .and_then(|b| tree::decode(&b).map_err(|e| e.to_string()))
        {
            Ok(n) => n,
            Err(e) => {
                r.errors.push(format!("{ctx}: tree of {path}: {e}"));
                continue;
            }
        };
        for n in nodes {
            let p = format!(
                "{}{}{}",
                path,
                if path.ends_with('/') { "" } else { "/" },
                crate::util::show(&n.name)
            );
            match n.kind {
                NodeKind::Dir { subtree } => stack.push((subtree, p)),
                NodeKind::File(f) => {
                    for c in &f.chunks {
                        match repo.index.get(c) {
                            Some(l) if l.kind == BLOB_DATA => {}
                            Some(_) => r.errors.push(format!(
                                "{ctx}: {p}: blob {} has the wrong type",
                                hex::encode(c)
                            )),
                            None => r.errors.push(format!(
                                "{ctx}: {p}: data blob {} is missing",
                                hex::encode(c)
                            )),
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

fn read_pack(repo: &Repository, name: &str, indexed: Option<&Vec<PackEntry>>, r: &mut CheckReport) {
    let bytes = match repo.backend.read(Some(Kind::Data), name) {
        Ok(b) => b,
        Err(e) => {
            r.errors.push(format!("pack {name}: cannot read: {e}"));
            return;
        }
    };
    r.bytes_read += bytes.len() as u64;
    if Some(crypto::sha256(&bytes)) != crate::repo::parse_id(name) {
        r.errors.push(format!(
            "pack {name}: content does not match its name (damaged)"
        ));
    }
    let entries = match pack::read_header(&repo.keys, &bytes) {
        Ok(e) => e,
        Err(e) => {
            r.errors.push(format!("pack {name}: {e}"));
            // Fall back to the index's view so damaged blobs can still be named.
            match indexed {
                Some(e) => e.clone(),
                None => return,
            }
        }
    };
    if let Some(ix) = indexed {
        if ix.len() != entries.len() || ix.iter().zip(&entries).any(|(a, b)| a != b) {
            r.errors
                .push(format!("pack {name}: header and index disagree"));
        }
    }
    for e in &entries {
        r.blobs += 1;
        let end = (e.offset as usize).saturating_add(e.length as usize);
        if end > bytes.len() {
            r.errors.push(format!(
                "pack {name}: blob {} lies outside the pack",
                hex::encode(e.id)
            ));
            continue;
        }
        let limit = if e.kind == BLOB_TREE {
            crate::repo::MAX_TREE_BYTES
        } else {
            repo.config.chunker.max as usize
        };
        if e.raw_length as usize > limit {
            r.errors.push(format!(
                "pack {name}: blob {} claims {} bytes, over the limit {limit}",
                hex::encode(e.id),
                e.raw_length
            ));
            continue;
        }
        let sealed = &bytes[e.offset as usize..end];
        match repo
            .keys
            .open_blob(e.kind, &e.id, sealed, e.raw_length as usize)
        {
            Ok(p) if p.len() == e.raw_length as usize => {}
            Ok(_) => r.errors.push(format!(
                "pack {name}: blob {}: length differs from the pack header",
                hex::encode(e.id)
            )),
            Err(err) => r.errors.push(format!(
                "pack {name}: blob {} at offset {}: {err}",
                hex::encode(e.id),
                e.offset
            )),
        }
    }
}
