//! The files cache: which files were unchanged since the last snapshot, without reading
//! them.
//!
//! For every regular file stored, the cache keeps a fixed-size record: a 64-bit hash of
//! the path and the file's device, inode, size, mtime and ctime. The content itself is not
//! in the cache — it is the parent snapshot's tree entry for the same path, which the
//! backup walk loads anyway — so the cache is small (56 bytes a file, sorted, binary
//! searched) and can never disagree with the repository: the cache names the snapshot it
//! was written for and is used only when that snapshot is the parent, and every chunk it
//! lets us reuse is checked against the index. It lives in
//! `$CACHE_DIRECTORY/files/<repository id>`, is written atomically after the snapshot, and
//! a lost or corrupt cache only costs time (the next run reads everything).

use std::path::{Path, PathBuf};

use crate::codec::{Reader, Writer};

const MAGIC: &[u8; 8] = b"CAIRNFC1";
const RECORD: usize = 56;

/// What identifies an unchanged file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub ctime: i64,
    pub ctime_nsec: u32,
}

impl Signature {
    pub fn of(st: &rustix::fs::Stat) -> Signature {
        Signature {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec as u32,
            ctime: st.st_ctime,
            ctime_nsec: st.st_ctime_nsec as u32,
        }
    }
}

pub fn path_hash(path: &[u8]) -> u64 {
    u64::from_le_bytes(blake3::hash(path).as_bytes()[..8].try_into().unwrap())
}

/// A loaded cache.
#[derive(Debug)]
pub struct FilesCache {
    /// The snapshot the cache describes.
    pub snapshot: String,
    entries: Vec<(u64, Signature)>,
}

/// Where a repository's cache lives.
pub fn cache_file(cache_dir: &Path, repo_id: &str) -> PathBuf {
    cache_dir.join("files").join(repo_id)
}

impl FilesCache {
    /// Load the cache; Err says why it was not usable (the caller logs it and goes on).
    pub fn load(cache_dir: &Path, repo_id: &str) -> Result<Option<FilesCache>, String> {
        let p = cache_file(cache_dir, repo_id);
        let data = match std::fs::read(&p) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read the files cache {}: {e}", p.display())),
        };
        Self::decode(&data).map(Some).map_err(|e| {
            format!(
                "files cache {} is damaged ({e}); every file will be read",
                p.display()
            )
        })
    }

    fn decode(data: &[u8]) -> Result<FilesCache, String> {
        if data.len() < 8 + 64 + 8 + 32 || &data[..8] != MAGIC {
            return Err("not a files cache".into());
        }
        let (body, sum) = data.split_at(data.len() - 32);
        if blake3::hash(body).as_bytes() != sum {
            return Err("checksum mismatch".into());
        }
        let mut r = Reader::new(&body[8..]);
        let e = |e: crate::codec::DecodeError| e.to_string();
        let snapshot =
            String::from_utf8(r.take(64).map_err(e)?.to_vec()).map_err(|_| "bad snapshot id")?;
        let n = r.u64().map_err(e)? as usize;
        if n.checked_mul(RECORD) != Some(r.remaining()) {
            return Err("wrong length".into());
        }
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let h = r.u64().map_err(e)?;
            let sig = Signature {
                dev: r.u64().map_err(e)?,
                ino: r.u64().map_err(e)?,
                size: r.u64().map_err(e)?,
                mtime: r.i64().map_err(e)?,
                mtime_nsec: r.u32().map_err(e)?,
                ctime: r.i64().map_err(e)?,
                ctime_nsec: r.u32().map_err(e)?,
            };
            entries.push((h, sig));
        }
        if entries.windows(2).any(|w| w[0].0 > w[1].0) {
            return Err("not sorted".into());
        }
        Ok(FilesCache { snapshot, entries })
    }

    /// The recorded signature of a path, if any (paths whose hashes collide are ignored).
    pub fn get(&self, path: &[u8]) -> Option<Signature> {
        let h = path_hash(path);
        let i = self.entries.partition_point(|(k, _)| *k < h);
        match (self.entries.get(i), self.entries.get(i + 1)) {
            (Some((k, s)), next) if *k == h && next.is_none_or(|(k2, _)| *k2 != h) => Some(*s),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Collects the signatures of the files stored by this run.
#[derive(Default)]
pub struct CacheBuilder {
    entries: Vec<(u64, Signature)>,
}

impl CacheBuilder {
    pub fn add(&mut self, path: &[u8], sig: Signature) {
        self.entries.push((path_hash(path), sig));
    }

    /// Write the cache for `snapshot` atomically.
    pub fn save(mut self, cache_dir: &Path, repo_id: &str, snapshot: &str) -> std::io::Result<()> {
        self.entries.sort_by_key(|(h, _)| *h);
        let mut w = Writer::new();
        w.bytes(MAGIC);
        let mut id = [b'0'; 64];
        let n = snapshot.len().min(64);
        id[..n].copy_from_slice(&snapshot.as_bytes()[..n]);
        w.bytes(&id);
        w.u64(self.entries.len() as u64);
        for (h, s) in &self.entries {
            w.u64(*h);
            w.u64(s.dev);
            w.u64(s.ino);
            w.u64(s.size);
            w.i64(s.mtime);
            w.u32(s.mtime_nsec);
            w.i64(s.ctime);
            w.u32(s.ctime_nsec);
        }
        let sum = *blake3::hash(&w.buf).as_bytes();
        w.bytes(&sum);
        let p = cache_file(cache_dir, repo_id);
        std::fs::create_dir_all(p.parent().unwrap())?;
        crate::atomic::write_atomic(&p, &w.buf, 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(i: u64) -> Signature {
        Signature {
            dev: 1,
            ino: i,
            size: i * 10,
            mtime: i as i64,
            mtime_nsec: 5,
            ctime: -(i as i64),
            ctime_nsec: 7,
        }
    }

    #[test]
    fn roundtrip_lookup_and_damage() {
        let d = tempfile::tempdir().unwrap();
        let mut b = CacheBuilder::default();
        for i in 0..1000u64 {
            b.add(format!("/data/f{i}").as_bytes(), sig(i));
        }
        let snap = "ab".repeat(32);
        b.save(d.path(), "repo", &snap).unwrap();
        let c = FilesCache::load(d.path(), "repo").unwrap().unwrap();
        assert_eq!(c.snapshot, snap);
        assert_eq!(c.len(), 1000);
        assert_eq!(c.get(b"/data/f417"), Some(sig(417)));
        assert_eq!(c.get(b"/data/missing"), None);
        assert!(FilesCache::load(d.path(), "other").unwrap().is_none());
        // One flipped byte: the cache is refused, not trusted.
        let p = cache_file(d.path(), "repo");
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[200] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        assert!(FilesCache::load(d.path(), "repo")
            .unwrap_err()
            .contains("damaged"));
        std::fs::write(&p, b"short").unwrap();
        assert!(FilesCache::load(d.path(), "repo").is_err());
    }
}
