//! Storage backends: where repository objects live.
//!
//! The repository engine sees only named, immutable objects (`config`, `keys/ID`,
//! `data/XX/ID`, `index/ID`, `snapshots/ID`, `locks/ID`), so the same layout works on the
//! backup disk and in an S3 bucket, and mirroring is copying objects by name. The local
//! backend writes every object atomically (temp + fsync + rename + directory fsync): a
//! crash never leaves a partial object under a final name.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::atomic;

pub mod s3;

/// The kinds of object directories in a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Keys,
    Data,
    Index,
    Snapshots,
    Locks,
}

impl Kind {
    pub fn dir(self) -> &'static str {
        match self {
            Kind::Keys => "keys",
            Kind::Data => "data",
            Kind::Index => "index",
            Kind::Snapshots => "snapshots",
            Kind::Locks => "locks",
        }
    }
    pub const ALL: [Kind; 5] = [
        Kind::Keys,
        Kind::Data,
        Kind::Index,
        Kind::Snapshots,
        Kind::Locks,
    ];
}

/// Object storage as the repository engine needs it.
pub trait Backend: Send + Sync {
    /// A human-readable location for messages.
    fn location(&self) -> String;
    fn read(&self, kind: Option<Kind>, name: &str) -> io::Result<Vec<u8>>;
    /// Read `len` bytes at `offset` of an object.
    fn read_at(&self, kind: Kind, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    fn size(&self, kind: Kind, name: &str) -> io::Result<u64>;
    /// Store an object atomically. `kind` None is the top-level `config`.
    fn write(&self, kind: Option<Kind>, name: &str, data: &[u8]) -> io::Result<()>;
    fn exists(&self, kind: Option<Kind>, name: &str) -> io::Result<bool>;
    fn remove(&self, kind: Kind, name: &str) -> io::Result<()>;
    /// Names of all complete objects of a kind (never temporaries).
    fn list(&self, kind: Kind) -> io::Result<Vec<String>>;
    /// Temporary files left by interrupted writes (for `check` to report).
    fn leftovers(&self) -> io::Result<Vec<String>>;
    /// A new temporary file in which a large object (a pack) is built piece by piece,
    /// on the same file system as the objects of `kind`. Its name starts with
    /// [`atomic::TMP_PREFIX`], so it is never taken for an object.
    fn create_temp(&self, kind: Kind) -> io::Result<(fs::File, PathBuf)>;
    /// Make a finished, synced temporary file the object `name`, atomically.
    fn commit_temp(&self, kind: Kind, tmp: &Path, name: &str) -> io::Result<()>;
}

/// A repository in a local directory (the backup disk).
pub struct LocalBackend {
    root: PathBuf,
    /// Recently read packs, kept open: restore and check read many blobs from one pack.
    open_packs: Mutex<Vec<(String, Arc<fs::File>)>>,
}

/// How many pack files [`LocalBackend`] keeps open.
const OPEN_PACKS: usize = 32;

impl LocalBackend {
    pub fn new(root: &Path) -> Self {
        LocalBackend {
            root: root.to_path_buf(),
            open_packs: Mutex::new(Vec::new()),
        }
    }

    fn open_cached(&self, kind: Kind, name: &str) -> io::Result<Arc<fs::File>> {
        let mut open = self.open_packs.lock().unwrap();
        if let Some(i) = open.iter().position(|(n, _)| n == name) {
            let e = open.remove(i);
            let f = e.1.clone();
            open.insert(0, e);
            return Ok(f);
        }
        let f = Arc::new(fs::File::open(self.path(Some(kind), name))?);
        open.insert(0, (name.to_string(), f.clone()));
        open.truncate(OPEN_PACKS);
        Ok(f)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, kind: Option<Kind>, name: &str) -> PathBuf {
        match kind {
            None => self.root.join(name),
            Some(Kind::Data) => self
                .root
                .join("data")
                .join(&name[..2.min(name.len())])
                .join(name),
            Some(k) => self.root.join(k.dir()).join(name),
        }
    }

    /// Create the directory layout of a new repository.
    pub fn create_layout(&self) -> io::Result<()> {
        fs::create_dir_all(&self.root)?;
        for k in Kind::ALL {
            fs::create_dir_all(self.root.join(k.dir()))?;
        }
        for i in 0..256 {
            fs::create_dir_all(self.root.join("data").join(format!("{i:02x}")))?;
        }
        atomic::sync_dir(&self.root.join("data"))?;
        atomic::sync_dir(&self.root)
    }
}

pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

pub(crate) fn check_name(name: &str) -> io::Result<()> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid object name {name:?}"),
        ))
    }
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn read(&self, kind: Option<Kind>, name: &str) -> io::Result<Vec<u8>> {
        check_name(name)?;
        fs::read(self.path(kind, name))
    }

    fn read_at(&self, kind: Kind, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        check_name(name)?;
        let f = self.open_cached(kind, name)?;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    fn size(&self, kind: Kind, name: &str) -> io::Result<u64> {
        check_name(name)?;
        Ok(fs::metadata(self.path(Some(kind), name))?.len())
    }

    fn write(&self, kind: Option<Kind>, name: &str, data: &[u8]) -> io::Result<()> {
        check_name(name)?;
        let mode = if kind == Some(Kind::Keys) {
            0o600
        } else {
            0o644
        };
        atomic::write_atomic(&self.path(kind, name), data, mode)
    }

    fn exists(&self, kind: Option<Kind>, name: &str) -> io::Result<bool> {
        check_name(name)?;
        match fs::symlink_metadata(self.path(kind, name)) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn remove(&self, kind: Kind, name: &str) -> io::Result<()> {
        check_name(name)?;
        let p = self.path(Some(kind), name);
        self.open_packs.lock().unwrap().retain(|(n, _)| n != name);
        fs::remove_file(&p)?;
        atomic::sync_dir(p.parent().unwrap())
    }

    fn list(&self, kind: Kind) -> io::Result<Vec<String>> {
        let dir = self.root.join(kind.dir());
        let mut out = Vec::new();
        let mut push_dir = |d: &Path| -> io::Result<()> {
            for e in fs::read_dir(d)? {
                let e = e?;
                if let Some(n) = e.file_name().to_str() {
                    if valid_name(n) && e.file_type()?.is_file() {
                        out.push(n.to_string());
                    }
                }
            }
            Ok(())
        };
        if kind == Kind::Data {
            for e in fs::read_dir(&dir)? {
                let e = e?;
                if e.file_type()?.is_dir() {
                    push_dir(&e.path())?;
                }
            }
        } else {
            push_dir(&dir)?;
        }
        out.sort();
        Ok(out)
    }

    fn create_temp(&self, kind: Kind) -> io::Result<(fs::File, PathBuf)> {
        use std::os::unix::fs::OpenOptionsExt;
        let rnd: [u8; 8] = crate::crypto::random_bytes();
        let p = self.root.join(kind.dir()).join(format!(
            "{}{}-{}",
            atomic::TMP_PREFIX,
            kind.dir(),
            hex::encode(rnd)
        ));
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&p)?;
        Ok((f, p))
    }

    fn commit_temp(&self, kind: Kind, tmp: &Path, name: &str) -> io::Result<()> {
        check_name(name)?;
        let dest = self.path(Some(kind), name);
        if let Err(e) = fs::rename(tmp, &dest) {
            let _ = fs::remove_file(tmp);
            return Err(e);
        }
        atomic::sync_dir(dest.parent().unwrap())?;
        atomic::sync_dir(tmp.parent().unwrap())
    }

    fn leftovers(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        let mut dirs = vec![self.root.clone()];
        while let Some(d) = dirs.pop() {
            for e in fs::read_dir(&d)? {
                let e = e?;
                let ft = e.file_type()?;
                if ft.is_dir() {
                    dirs.push(e.path());
                } else if e
                    .file_name()
                    .to_string_lossy()
                    .starts_with(atomic::TMP_PREFIX)
                {
                    out.push(e.path().display().to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }
}
