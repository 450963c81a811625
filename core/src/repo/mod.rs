//! The repository: a content-addressed, deduplicated, encrypted store of snapshots.
//!
//! Layout and bytes are specified in docs/FORMAT.md. Objects are immutable; packs, index
//! files and snapshots are named by the SHA-256 of their bytes, so anyone can check an
//! object's integrity without the key. Write order is packs, then index, then snapshot
//! (see [`writer`]); a crash at any point leaves at worst unreferenced packs, which `check`
//! reports as harmless (the next run writes its own; prune will remove them).

pub mod index;
pub mod keyslot;
pub mod lock;
pub mod pack;
pub mod snapshot;
pub mod writer;

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::backend::{Backend, Kind, LocalBackend};
use crate::crypto::{self, Keys, SecretKey};
use index::{Index, IndexFile};
use keyslot::{KeySource, Slot};
use snapshot::{Snapshot, StoredSnapshot};

pub use pack::{BLOB_DATA, BLOB_TREE};

/// Largest tree blob (one directory's listing) accepted.
pub const MAX_TREE_BYTES: usize = 256 << 20;

#[derive(Debug, Error)]
pub enum RepoError {
    #[error("no repository at {0}: create one with `cairn init`, or set [repository] path")]
    NotFound(String),
    #[error("{0}")]
    NotARepository(String),
    #[error("{0}")]
    KeyUnavailable(String),
    #[error("{0}")]
    WrongKey(String),
    #[error("{0}")]
    Locked(String),
    #[error("{0}")]
    Corrupt(String),
    #[error("{0}")]
    Usage(String),
    #[error("{what}: {err}{}", io_hint(err))]
    Io { what: String, err: std::io::Error },
}

impl RepoError {
    /// The exit code of DESIGN.md for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            RepoError::WrongKey(_) | RepoError::Usage(_) => 1,
            RepoError::NotFound(_)
            | RepoError::NotARepository(_)
            | RepoError::KeyUnavailable(_)
            | RepoError::Locked(_) => 2,
            RepoError::Corrupt(_) | RepoError::Io { .. } => 3,
        }
    }
}

/// What to do about the I/O errors an operator can fix.
fn io_hint(err: &std::io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
            " — the disk holding the repository is full: free space (`cairn forget` then `cairn prune`), or give the repository a larger disk; the repository itself is intact"
        }
        Some(libc::EROFS) => " — the repository's file system is mounted read-only",
        Some(libc::EACCES) | Some(libc::EPERM) => " — check the owner and mode of the repository directory",
        _ => "",
    }
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RepoError {
    let what = what.into();
    move |err| RepoError::Io { what, err }
}

/// The plaintext `config` object.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    pub format: String,
    pub version: u32,
    pub id: String,
    pub created: String,
    pub chunker: ChunkerParams,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ChunkerParams {
    pub algorithm: ChunkerAlgorithm,
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

/// The only chunker algorithm: FastCDC 2020, normalization level 1, keyed gear table.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum ChunkerAlgorithm {
    #[serde(rename = "fastcdc-2020-keyed")]
    FastCdc2020Keyed,
}

pub const FORMAT_NAME: &str = "cairn-repository";
pub const FORMAT_VERSION: u32 = 1;

pub struct InitParams {
    pub chunk_min: u32,
    pub chunk_avg: u32,
    pub chunk_max: u32,
}

/// Snapshots with copies collapsed, and the copies: see [`Repository::snapshot_list`].
pub type SnapshotList = (Vec<StoredSnapshot>, Vec<(String, String)>);

/// What [`Repository::set_protected`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectChange {
    /// The snapshot's name now.
    pub id: String,
    /// Its name before.
    pub previous: String,
    /// Whether its mark changed (false: it already had the wanted one).
    pub changed: bool,
    /// Objects removed: the old one and any other copies.
    pub removed: Vec<String>,
}

/// An opened, unlocked repository.
pub struct Repository {
    pub backend: Arc<dyn Backend>,
    pub config: RepoConfig,
    pub keys: Arc<Keys>,
    pub index: Index,
    /// The key slot that opened the repository.
    pub slot: String,
    master: SecretKey,
}

impl Repository {
    /// Create a new repository at `path`, with one key slot for `source`.
    pub fn init(path: &Path, source: &KeySource, params: &InitParams) -> Result<String, RepoError> {
        let loc = path.display().to_string();
        if path.join("config").exists() {
            return Err(RepoError::Usage(format!(
                "{loc} already holds a cairn repository"
            )));
        }
        let non_empty = std::fs::read_dir(path)
            .map(|r| r.flatten().any(|e| e.file_name() != "lost+found"))
            .unwrap_or(false);
        if non_empty {
            return Err(RepoError::Usage(format!(
                "{loc} is not empty; cairn init needs an empty or missing directory"
            )));
        }
        let material = source.material().map_err(RepoError::KeyUnavailable)?;
        let backend = LocalBackend::new(path);
        backend
            .create_layout()
            .map_err(io_err(format!("cannot create {loc}")))?;
        let id = hex::encode(crypto::random_bytes::<32>());
        let master = SecretKey::random();
        let slot = Slot::create(source.kind(), &material, &master, &id, &source.describe())
            .map_err(RepoError::Usage)?;
        let bytes = slot.encode();
        backend
            .write(
                Some(Kind::Keys),
                &hex::encode(crypto::sha256(&bytes)),
                &bytes,
            )
            .map_err(io_err("cannot write the key slot"))?;
        let config = RepoConfig {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            id: id.clone(),
            created: chrono::Utc::now().to_rfc3339(),
            chunker: ChunkerParams {
                algorithm: ChunkerAlgorithm::FastCdc2020Keyed,
                min: params.chunk_min,
                avg: params.chunk_avg,
                max: params.chunk_max,
            },
        };
        let mut c = serde_json::to_vec_pretty(&config).unwrap();
        c.push(b'\n');
        // The config is written last: a directory without it is not a repository yet.
        backend
            .write(None, "config", &c)
            .map_err(io_err("cannot write the config object"))?;
        Ok(id)
    }

    /// Open the repository at `path`, unlocking it with the first source that fits a slot.
    pub fn open(path: &Path, sources: &[KeySource]) -> Result<Repository, RepoError> {
        Self::open_backend(Arc::new(LocalBackend::new(path)), sources)
    }

    pub fn open_backend(
        backend: Arc<dyn Backend>,
        sources: &[KeySource],
    ) -> Result<Repository, RepoError> {
        let loc = backend.location();
        let raw = match backend.read(None, "config") {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RepoError::NotFound(loc))
            }
            Err(e) => {
                return Err(RepoError::Io {
                    what: format!("cannot read {loc}/config"),
                    err: e,
                })
            }
        };
        let config: RepoConfig = serde_json::from_slice(&raw).map_err(|e| {
            RepoError::NotARepository(format!(
                "{loc}/config is not a cairn repository config: {e}"
            ))
        })?;
        if config.format != FORMAT_NAME || config.version != FORMAT_VERSION {
            return Err(RepoError::NotARepository(format!(
                "{loc}: repository format {} version {} is not supported by this cairn (version {FORMAT_VERSION})",
                config.format, config.version
            )));
        }
        let c = config.chunker;
        if !(64..=1 << 20).contains(&c.min)
            || !(256..=4 << 20).contains(&c.avg)
            || !(1024..=16 << 20).contains(&c.max)
            || c.min > c.avg
            || c.avg > c.max
            || !(c.min | c.avg | c.max).is_multiple_of(2)
            || parse_id(&config.id).is_none()
        {
            return Err(RepoError::NotARepository(format!(
                "{loc}/config: invalid repository id or chunker sizes (damaged config)"
            )));
        }
        let (master, slot) = unlock(&*backend, &config.id, sources)?;
        let keys = Keys::derive(&master, config.id.as_bytes())
            .map_err(|e| RepoError::Corrupt(e.to_string()))?;
        let mut repo = Repository {
            backend,
            config,
            keys: Arc::new(keys),
            index: Index::default(),
            slot,
            master,
        };
        repo.load_index()?;
        Ok(repo)
    }

    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// (Re)load every index file into memory.
    pub fn load_index(&mut self) -> Result<(), RepoError> {
        let files = self.read_index_files()?;
        let superseded: std::collections::HashSet<[u8; 32]> = files
            .iter()
            .flat_map(|(_, f)| f.supersedes.iter().copied())
            .collect();
        let mut index = Index::default();
        for (name, f) in &files {
            if !superseded.contains(name) {
                index.add_file(f);
            }
        }
        self.index = index;
        Ok(())
    }

    /// Every index file, decoded; a damaged one is an error naming it.
    pub fn read_index_files(&self) -> Result<Vec<([u8; 32], IndexFile)>, RepoError> {
        let mut out = Vec::new();
        for name in self
            .backend
            .list(Kind::Index)
            .map_err(io_err("cannot list index/"))?
        {
            let bytes = self
                .backend
                .read(Some(Kind::Index), &name)
                .map_err(io_err(format!("cannot read index/{name}")))?;
            let id = parse_id(&name).ok_or_else(|| {
                RepoError::Corrupt(format!("index/{name}: not a valid object name"))
            })?;
            if crypto::sha256(&bytes) != id {
                return Err(RepoError::Corrupt(format!(
                    "index/{name}: content does not match its name (damaged)"
                )));
            }
            let f = IndexFile::decode(&self.keys, &bytes)
                .map_err(|e| RepoError::Corrupt(format!("index/{name}: {e}")))?;
            out.push((id, f));
        }
        Ok(out)
    }

    /// Read, authenticate and decrypt one blob.
    pub fn read_blob(&self, kind: u8, id: &[u8; 32]) -> Result<Vec<u8>, RepoError> {
        let loc = self.index.get(id).ok_or_else(|| {
            RepoError::Corrupt(format!(
                "blob {} is not in the index (missing data)",
                hex::encode(id)
            ))
        })?;
        if loc.kind != kind {
            return Err(RepoError::Corrupt(format!(
                "blob {} has the wrong type in the index",
                hex::encode(id)
            )));
        }
        let limit = if kind == BLOB_TREE {
            MAX_TREE_BYTES
        } else {
            self.config.chunker.max as usize
        };
        if loc.raw_length as usize > limit || loc.length as usize > limit + limit / 8 + 1024 {
            return Err(RepoError::Corrupt(format!(
                "blob {}: size {} exceeds the limit {limit}",
                hex::encode(id),
                loc.raw_length
            )));
        }
        let pack = hex::encode(self.index.pack_id(&loc));
        let sealed = self
            .backend
            .read_at(Kind::Data, &pack, loc.offset, loc.length as usize)
            .map_err(|e| {
                RepoError::Corrupt(format!(
                    "blob {} in pack {pack}: cannot read: {e}",
                    hex::encode(id)
                ))
            })?;
        let plain = self
            .keys
            .open_blob(kind, id, &sealed, loc.raw_length as usize)
            .map_err(|e| {
                RepoError::Corrupt(format!("blob {} in pack {pack}: {e}", hex::encode(id)))
            })?;
        if plain.len() != loc.raw_length as usize {
            return Err(RepoError::Corrupt(format!(
                "blob {} in pack {pack}: length differs from the index",
                hex::encode(id)
            )));
        }
        Ok(plain)
    }

    /// Index the packs that are on disk but in no index — left by a run that was
    /// interrupted between writing packs and writing their index — so their blobs are
    /// reused instead of written again. Packs are complete once visible under their final
    /// name, so this is safe even while another backup runs. Returns (packs indexed,
    /// unreadable packs with the reason).
    pub fn recover_unindexed(&mut self) -> Result<(usize, Vec<String>), RepoError> {
        let known = self.index.pack_set();
        let mut found = Vec::new();
        let mut bad = Vec::new();
        for name in self
            .backend
            .list(Kind::Data)
            .map_err(io_err("cannot list data/"))?
        {
            let Some(id) = parse_id(&name) else { continue };
            if known.contains(&id) {
                continue;
            }
            match pack::read_header_of(&self.keys, &*self.backend, &name) {
                Ok(entries) => found.push((id, entries)),
                Err(e) => bad.push(format!("pack {name}: {e}")),
            }
        }
        if found.is_empty() {
            return Ok((0, bad));
        }
        let n = found.len();
        for chunk in found.chunks(1024) {
            self.write_index(&IndexFile {
                supersedes: vec![],
                packs: chunk.to_vec(),
            })?;
        }
        self.load_index()?;
        Ok((n, bad))
    }

    /// All snapshots, oldest first.
    pub fn snapshots(&self) -> Result<Vec<(String, Snapshot)>, RepoError> {
        Ok(self
            .stored_snapshots()?
            .into_iter()
            .map(|s| (s.id, s.snapshot))
            .collect())
    }

    /// Every snapshot object with its protection, oldest first (by time, then name).
    pub fn stored_snapshots(&self) -> Result<Vec<StoredSnapshot>, RepoError> {
        let mut out = Vec::new();
        for name in self
            .backend
            .list(Kind::Snapshots)
            .map_err(io_err("cannot list snapshots/"))?
        {
            out.push(self.load_stored_snapshot(&name)?);
        }
        out.sort_by(|a, b| a.snapshot.time.cmp(&b.snapshot.time).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// The snapshots as people see them, oldest first: copies of one record left by an
    /// interrupted protect or unprotect count once (see [`snapshot::collapse_copies`]).
    /// Also returns the extra copies: (copy name, name of the snapshot it duplicates).
    pub fn snapshot_list(&self) -> Result<SnapshotList, RepoError> {
        Ok(snapshot::collapse_copies(self.stored_snapshots()?))
    }

    pub fn load_snapshot(&self, name: &str) -> Result<Snapshot, RepoError> {
        Ok(self.load_stored_snapshot(name)?.snapshot)
    }

    /// One snapshot object, verified against its name, with its protection.
    pub fn load_stored_snapshot(&self, name: &str) -> Result<StoredSnapshot, RepoError> {
        let bytes = self
            .backend
            .read(Some(Kind::Snapshots), name)
            .map_err(io_err(format!("cannot read snapshots/{name}")))?;
        if Some(crypto::sha256(&bytes)) != parse_id(name) {
            return Err(RepoError::Corrupt(format!(
                "snapshots/{name}: content does not match its name (damaged)"
            )));
        }
        let plain = self
            .keys
            .open_meta(crypto::aad::SNAPSHOT, &bytes, snapshot::MAX_SNAPSHOT_BYTES)
            .map_err(|e| RepoError::Corrupt(format!("snapshots/{name}: {e}")))?;
        let s: Snapshot = serde_json::from_slice(&plain)
            .map_err(|e| RepoError::Corrupt(format!("snapshots/{name}: {e}")))?;
        if s.version != 1 {
            return Err(RepoError::NotARepository(format!(
                "snapshots/{name}: snapshot version {} is not supported by this cairn",
                s.version
            )));
        }
        let flags: snapshot::StoredFlags = serde_json::from_slice(&plain)
            .map_err(|e| RepoError::Corrupt(format!("snapshots/{name}: {e}")))?;
        Ok(StoredSnapshot {
            id: name.to_string(),
            snapshot: s,
            protected: flags.protected,
        })
    }

    pub fn save_snapshot(&self, s: &Snapshot) -> Result<String, RepoError> {
        self.save_stored_snapshot(s, false)
    }

    /// Write a snapshot object, marked protected or not; returns its name.
    pub fn save_stored_snapshot(&self, s: &Snapshot, protected: bool) -> Result<String, RepoError> {
        let plain = serde_json::to_vec(&snapshot::StoredRecord {
            snapshot: s,
            protected,
        })
        .unwrap();
        let sealed = self.keys.seal_meta(crypto::aad::SNAPSHOT, &plain, Some(3));
        let name = hex::encode(crypto::sha256(&sealed));
        self.backend
            .write(Some(Kind::Snapshots), &name, &sealed)
            .map_err(io_err("cannot write the snapshot"))?;
        Ok(name)
    }

    /// Remove one snapshot object (its data stays, for prune). Already gone is fine.
    pub fn remove_snapshot(&self, name: &str) -> Result<(), RepoError> {
        match self.backend.remove(Kind::Snapshots, name) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(RepoError::Io {
                what: format!("cannot remove snapshots/{name}"),
                err: e,
            }),
            _ => Ok(()),
        }
    }

    /// Mark the snapshot `name` protected or not. Snapshots are immutable and named by
    /// their hash, so the record is written again with the new mark, and only then are the
    /// old object and any other copy of the same record removed: a crash in between leaves
    /// two copies (which [`Self::snapshot_list`] counts as one), never none. A copy that
    /// already has the wanted mark is kept instead of writing a new one. The caller holds
    /// a lock.
    pub fn set_protected(&self, name: &str, protected: bool) -> Result<ProtectChange, RepoError> {
        let target = self.load_stored_snapshot(name)?;
        let copies: Vec<StoredSnapshot> = self
            .stored_snapshots()?
            .into_iter()
            .filter(|s| s.snapshot.same_record(&target.snapshot))
            .collect();
        let keep = if target.protected == protected {
            target.id.clone()
        } else {
            match copies.iter().find(|c| c.protected == protected) {
                Some(c) => c.id.clone(),
                None => self.save_stored_snapshot(&target.snapshot, protected)?,
            }
        };
        // The target is among the copies (it is listed); the rest go after the new one.
        let mut removed = Vec::new();
        for c in copies.iter().filter(|c| c.id != keep) {
            self.remove_snapshot(&c.id)?;
            removed.push(c.id.clone());
        }
        Ok(ProtectChange {
            id: keep,
            previous: target.id,
            changed: target.protected != protected,
            removed,
        })
    }

    /// `latest`, a full id, or a unique id prefix.
    pub fn resolve_snapshot(&self, spec: &str) -> Result<(String, Snapshot), RepoError> {
        let all = self
            .backend
            .list(Kind::Snapshots)
            .map_err(io_err("cannot list snapshots/"))?;
        if spec == "latest" {
            return self.snapshots()?.pop().ok_or_else(|| {
                RepoError::Usage(format!("{} holds no snapshots yet", self.location()))
            });
        }
        let m: Vec<&String> = all.iter().filter(|n| n.starts_with(spec)).collect();
        match m.as_slice() {
            [one] => Ok(((*one).clone(), self.load_snapshot(one)?)),
            [] => Err(RepoError::Usage(format!(
                "no snapshot matches {spec:?}; list them with `cairn snapshots`"
            ))),
            _ => Err(RepoError::Usage(format!(
                "{spec:?} matches {} snapshots; give more characters of the id",
                m.len()
            ))),
        }
    }

    pub fn write_index(&self, f: &IndexFile) -> Result<String, RepoError> {
        write_index_to(&*self.backend, &self.keys, f)
    }

    pub fn lock(&self, exclusive: bool, command: &str) -> Result<lock::Acquired, RepoError> {
        lock::acquire(self.backend.clone(), exclusive, command).map_err(|e| match e {
            lock::LockError::Conflict(m) => RepoError::Locked(m),
            lock::LockError::Io(e) => RepoError::Io {
                what: format!("cannot write a lock in {}/locks", self.location()),
                err: e,
            },
        })
    }

    /// Key slots: (name, slot).
    pub fn slots(&self) -> Result<Vec<(String, Slot)>, RepoError> {
        list_slots(&*self.backend)
    }

    /// Add a key slot for `source`; returns its name.
    pub fn add_slot(&self, source: &KeySource, label: &str) -> Result<String, RepoError> {
        let material = source.material().map_err(RepoError::KeyUnavailable)?;
        let slot = Slot::create(
            source.kind(),
            &material,
            &self.master,
            &self.config.id,
            label,
        )
        .map_err(RepoError::Usage)?;
        let bytes = slot.encode();
        let name = hex::encode(crypto::sha256(&bytes));
        self.backend
            .write(Some(Kind::Keys), &name, &bytes)
            .map_err(io_err("cannot write the key slot"))?;
        Ok(name)
    }

    /// Remove a key slot by unique name prefix; the last slot cannot be removed.
    pub fn remove_slot(&self, prefix: &str) -> Result<String, RepoError> {
        let slots = self.slots()?;
        let m: Vec<&String> = slots
            .iter()
            .map(|(n, _)| n)
            .filter(|n| n.starts_with(prefix))
            .collect();
        let name = match m.as_slice() {
            [one] => (*one).clone(),
            [] => {
                return Err(RepoError::Usage(format!(
                    "no key slot matches {prefix:?}; see `cairn key list`"
                )))
            }
            _ => {
                return Err(RepoError::Usage(format!(
                    "{prefix:?} matches several key slots; give more characters"
                )))
            }
        };
        if slots.len() == 1 {
            return Err(RepoError::Usage(
                "refusing to remove the last key slot: the repository would be unreadable".into(),
            ));
        }
        self.backend
            .remove(Kind::Keys, &name)
            .map_err(io_err(format!("cannot remove keys/{name}")))?;
        Ok(name)
    }
}

fn list_slots(backend: &dyn Backend) -> Result<Vec<(String, Slot)>, RepoError> {
    let mut out = Vec::new();
    for name in backend
        .list(Kind::Keys)
        .map_err(io_err("cannot list keys/"))?
    {
        let b = backend
            .read(Some(Kind::Keys), &name)
            .map_err(io_err(format!("cannot read keys/{name}")))?;
        if b.len() > 64 * 1024 {
            continue;
        }
        if let Ok(s) = serde_json::from_slice::<Slot>(&b) {
            out.push((name, s));
        }
    }
    Ok(out)
}

fn unlock(
    backend: &dyn Backend,
    repo_id: &str,
    sources: &[KeySource],
) -> Result<(SecretKey, String), RepoError> {
    let slots = list_slots(backend)?;
    if slots.is_empty() {
        return Err(RepoError::NotARepository(format!(
            "{}/keys holds no key slot: the repository cannot be opened",
            backend.location()
        )));
    }
    if sources.is_empty() {
        return Err(RepoError::Usage(
            "no repository key configured: set key_file, key_credential, passphrase or passphrase_file in [repository], or CAIRN_PASSPHRASE".into(),
        ));
    }
    let mut problems = Vec::new();
    for src in sources {
        let material = match src.material() {
            Ok(m) => m,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        for (name, slot) in slots.iter().filter(|(_, s)| s.kind == src.kind()) {
            match slot.unwrap_key(&material, repo_id) {
                Ok(Some(k)) => return Ok((k, name.clone())),
                Ok(None) => {}
                Err(e) => problems.push(format!("keys/{name}: {e}")),
            }
        }
        problems.push(format!(
            "the {} opens none of the {} key slots",
            src.describe(),
            slots.len()
        ));
    }
    let all_unavailable = sources.iter().all(|s| s.material().is_err());
    let msg = format!(
        "cannot open the repository at {}: {}",
        backend.location(),
        problems.join("; ")
    );
    if all_unavailable {
        Err(RepoError::KeyUnavailable(msg))
    } else {
        Err(RepoError::WrongKey(format!(
            "wrong key or passphrase — {msg}"
        )))
    }
}

/// Seal and store an index file; returns its name.
pub fn write_index_to(
    backend: &dyn Backend,
    keys: &Keys,
    f: &IndexFile,
) -> Result<String, RepoError> {
    let sealed = f.encode(keys);
    let name = hex::encode(crypto::sha256(&sealed));
    backend
        .write(Some(Kind::Index), &name, &sealed)
        .map_err(io_err(format!(
            "cannot write an index file in {}",
            backend.location()
        )))?;
    Ok(name)
}

/// Parse a 64-hex object name.
pub fn parse_id(name: &str) -> Option<[u8; 32]> {
    if name.len() != 64 {
        return None;
    }
    hex::decode(name).ok()?.try_into().ok()
}
