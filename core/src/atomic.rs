//! Atomic, durable file writes.
//!
//! Every write that matters in cairn (repository objects, status files, caches, key files)
//! goes through [`write_atomic`]: the bytes go to a temporary file in the same directory,
//! which is fsynced, renamed over the final name, and the directory is fsynced too. A crash
//! at any instant leaves either the old file or the new one, never a partial file under
//! the final name. Temporary names start with `.tmp-` so readers and `check` can tell them
//! from real objects.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Prefix of temporary files; anything starting with it is never a complete object.
pub const TMP_PREFIX: &str = ".tmp-";

/// Write `data` to `path` atomically with the given permission bits (subject to umask).
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    write_atomic_with(path, mode, |f| f.write_all(data))
}

/// Like [`write_atomic`], but the content is produced by `fill` writing into the temp file.
pub fn write_atomic_with(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut rnd = [0u8; 8];
    openssl::rand::rand_bytes(&mut rnd).map_err(io::Error::other)?;
    let tmp = dir.join(format!(
        "{TMP_PREFIX}{}-{}",
        name.to_string_lossy(),
        hex::encode(rnd)
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        fill(&mut f)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// fsync a directory so that a rename or unlink inside it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f")]);
    }

    #[test]
    fn failed_fill_leaves_old_file_and_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write_atomic(&p, b"old", 0o600).unwrap();
        let r = write_atomic_with(&p, 0o600, |f| {
            f.write_all(b"partial")?;
            Err(io::Error::other("boom"))
        });
        assert!(r.is_err());
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
