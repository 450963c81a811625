//! Reading a systemd credential by name, under a unit and at a root shell alike.
//!
//! Design: under its unit, a stage finds the credential `NAME` in
//! `$CREDENTIALS_DIRECTORY/NAME`, where systemd put it (`LoadCredential=`,
//! `LoadCredentialEncrypted=`). An operator at a root shell (`cairn status`,
//! `cairn restore`, `cairn --remote snapshots`) has no such directory; there the
//! credential is read from where `cairn setup` stored it, as systemd would: the encrypted
//! store `/etc/credstore.encrypted/NAME`, decrypted by `systemd-creds decrypt` (which
//! needs root and the host's key or TPM), else the plain `/etc/credstore/NAME` (mode
//! 0600, root). Nothing else is searched, so a credential never comes from a place the
//! units would not use. Reads are bounded: a credential is a key, not a file of data.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The plain credential store `cairn setup` writes when `systemd-creds` is missing.
pub const CREDSTORE: &str = "/etc/credstore";
/// The encrypted credential store `cairn setup` writes with `systemd-creds encrypt`.
pub const CREDSTORE_ENCRYPTED: &str = "/etc/credstore.encrypted";
/// The most bytes a credential may have.
pub const MAX_LEN: u64 = 64 * 1024;

/// The credential `name`'s bytes and where they came from (for messages; never the
/// content).
pub fn read(name: &str) -> Result<(Vec<u8>, String), String> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(format!(
            "`{name}` is not a credential name (one file name, no `/`)"
        ));
    }
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let p = PathBuf::from(dir).join(name);
        return read_bounded(&p).map(|b| (b, format!("the systemd credential {name}")));
    }
    let encrypted = Path::new(CREDSTORE_ENCRYPTED).join(name);
    if encrypted.exists() {
        return decrypt(name, &encrypted).map(|b| (b, encrypted.display().to_string()));
    }
    let plain = Path::new(CREDSTORE).join(name);
    if plain.exists() {
        return read_bounded(&plain).map(|b| (b, plain.display().to_string()));
    }
    Err(format!(
        "the systemd credential {name:?} is needed, but $CREDENTIALS_DIRECTORY is not set \
         and neither {} nor {} exists: run under the unit (its LoadCredential= names \
         {name}), run `cairn setup` to store it, or use a file path instead",
        encrypted.display(),
        plain.display()
    ))
}

fn read_bounded(p: &Path) -> Result<Vec<u8>, String> {
    let f = std::fs::File::open(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    let mut out = Vec::new();
    f.take(MAX_LEN + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    if out.len() as u64 > MAX_LEN {
        return Err(format!(
            "{} is larger than {MAX_LEN} bytes: not a credential",
            p.display()
        ));
    }
    Ok(out)
}

fn decrypt(name: &str, p: &Path) -> Result<Vec<u8>, String> {
    let o = Command::new("systemd-creds")
        .arg("decrypt")
        .arg(format!("--name={name}"))
        .arg(p)
        .arg("-")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run systemd-creds to decrypt {}: {e}", p.display()))?;
    if !o.status.success() {
        return Err(format!(
            "systemd-creds cannot decrypt {} ({}): run as root on the host that encrypted it",
            p.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    if o.stdout.len() as u64 > MAX_LEN {
        return Err(format!(
            "{} decrypts to more than {MAX_LEN} bytes",
            p.display()
        ));
    }
    Ok(o.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_slashes_are_refused() {
        for bad in ["", "a/b", "..", "."] {
            assert!(
                read(bad).unwrap_err().contains("not a credential name"),
                "{bad}"
            );
        }
    }

    #[test]
    fn reads_are_bounded() {
        let d = tempfile::tempdir().unwrap();
        let big = d.path().join("big");
        std::fs::write(&big, vec![b'x'; MAX_LEN as usize + 1]).unwrap();
        assert!(read_bounded(&big).unwrap_err().contains("larger than"));
        let ok = d.path().join("ok");
        std::fs::write(&ok, b"abc").unwrap();
        assert_eq!(read_bounded(&ok).unwrap(), b"abc");
    }
}
