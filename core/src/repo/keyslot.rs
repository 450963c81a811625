//! Key slots: the repository's master key, stored wrapped.
//!
//! The master key is random and never stored in the clear. Each slot under `keys/` wraps
//! it (AES-256-GCM) under a key derived from one secret: a passphrase through scrypt, or a
//! raw key file (also delivered as a systemd credential) through HKDF. Several slots may
//! coexist, so a key file for the timers and a passphrase for people can both open the same
//! repository, and a lost secret is revoked by removing its slot. A bucket-only attacker
//! sees slots only; with no key file, that leaves a scrypt brute force of the passphrase.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::crypto::{self, SecretKey};

/// scrypt cost used for new passphrase slots: N = 2^15, r = 8, p = 1 (32 MiB, ~0.1 s).
pub const SCRYPT_LOG_N: u8 = 15;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;
/// Bounds on the scrypt parameters accepted from a slot, so a hostile slot cannot make
/// opening the repository take unbounded memory or time.
const MAX_LOG_N: u8 = 22;
const MAX_R: u32 = 32;
const MAX_P: u32 = 16;

/// Where a secret that opens the repository comes from.
#[derive(Clone)]
pub enum KeySource {
    /// A raw key file, as written by `cairn key generate`.
    KeyFile(PathBuf),
    /// A systemd credential holding a key file's bytes: `$CREDENTIALS_DIRECTORY/NAME`.
    Credential(String),
    /// A passphrase (from config, a file, the environment or a prompt).
    Passphrase { secret: String, origin: String },
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.describe())
    }
}

impl KeySource {
    /// A description for messages; never contains the secret.
    pub fn describe(&self) -> String {
        match self {
            KeySource::KeyFile(p) => format!("key file {}", p.display()),
            KeySource::Credential(n) => format!("systemd credential {n:?}"),
            KeySource::Passphrase { origin, .. } => format!("passphrase from {origin}"),
        }
    }

    /// The slot kind this source can open.
    pub fn kind(&self) -> SlotKind {
        match self {
            KeySource::Passphrase { .. } => SlotKind::Passphrase,
            _ => SlotKind::KeyFile,
        }
    }

    /// The secret bytes (key material or passphrase).
    pub fn material(&self) -> Result<Vec<u8>, String> {
        match self {
            KeySource::KeyFile(p) => read_key_file(p),
            KeySource::Credential(name) => {
                let (bytes, origin) = crate::credential::read(name)?;
                parse_key_bytes(&bytes, &origin)
            }
            KeySource::Passphrase { secret, origin } => {
                if secret.is_empty() {
                    return Err(format!("the passphrase from {origin} is empty"));
                }
                Ok(secret.as_bytes().to_vec())
            }
        }
    }
}

/// Write a new random key file (0600, atomically); refuses to overwrite.
pub fn generate_key_file(path: &Path) -> Result<(), String> {
    if path.symlink_metadata().is_ok() {
        return Err(format!(
            "{} already exists; refusing to overwrite a key",
            path.display()
        ));
    }
    let key: [u8; 32] = crypto::random_bytes();
    let text = format!("{}\n", hex::encode(key));
    crate::atomic::write_atomic(path, text.as_bytes(), 0o600)
        .map_err(|e| format!("cannot write key file {}: {e}", path.display()))
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, String> {
    let text =
        std::fs::read(path).map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
    parse_key_bytes(&text, &path.display().to_string())
}

/// A key file's content (64 hex digits); `origin` names it in the error.
fn parse_key_bytes(text: &[u8], origin: &str) -> Result<Vec<u8>, String> {
    let bad = || {
        format!(
            "{origin} is not a cairn key file (expected 64 hexadecimal characters, as written by `cairn key generate`)"
        )
    };
    if text.len() > 1024 {
        return Err(bad());
    }
    let s = std::str::from_utf8(text).map_err(|_| bad())?.trim();
    let b = hex::decode(s).map_err(|_| bad())?;
    if b.len() != 32 {
        return Err(bad());
    }
    Ok(b)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotKind {
    #[serde(rename = "keyfile")]
    KeyFile,
    Passphrase,
}

/// A key slot as stored in `keys/<sha256 of these bytes>` (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slot {
    pub version: u32,
    pub kind: SlotKind,
    pub created: String,
    pub host: String,
    pub label: String,
    /// scrypt parameters (passphrase slots only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrypt: Option<ScryptParams>,
    /// KDF salt, hex.
    pub salt: String,
    /// The sealed master key, hex: nonce || AES-256-GCM(0x00 || master key) || tag.
    pub wrapped: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScryptParams {
    pub log_n: u8,
    pub r: u32,
    pub p: u32,
}

fn slot_aad(repo_id: &str) -> Vec<u8> {
    let mut a = crypto::label::KEY_SLOT.to_vec();
    a.extend_from_slice(repo_id.as_bytes());
    a
}

fn wrapping_key(
    kind: SlotKind,
    material: &[u8],
    salt: &[u8],
    scrypt: Option<ScryptParams>,
) -> Result<SecretKey, String> {
    let mut k = [0u8; 32];
    match kind {
        SlotKind::KeyFile => crypto::hkdf(material, salt, crypto::label::KEY_SLOT, &mut k)
            .map_err(|e| e.to_string())?,
        SlotKind::Passphrase => {
            let p = scrypt.ok_or("passphrase slot without scrypt parameters")?;
            if p.log_n > MAX_LOG_N
                || p.r > MAX_R
                || p.p > MAX_P
                || p.log_n == 0
                || p.r == 0
                || p.p == 0
            {
                return Err(format!("scrypt parameters out of bounds ({p:?})"));
            }
            let n = 1u64 << p.log_n;
            let maxmem = 128 * n * p.r as u64 + 128 * (p.r as u64) * (p.p as u64) + (1 << 20);
            openssl::pkcs5::scrypt(material, salt, n, p.r as u64, p.p as u64, maxmem, &mut k)
                .map_err(|e| format!("scrypt failed: {e}"))?;
        }
    }
    Ok(SecretKey::from_bytes(k))
}

impl Slot {
    /// Wrap `master` under the secret from `material`.
    pub fn create(
        kind: SlotKind,
        material: &[u8],
        master: &SecretKey,
        repo_id: &str,
        label: &str,
    ) -> Result<Slot, String> {
        let salt: [u8; 32] = crypto::random_bytes();
        let scrypt = (kind == SlotKind::Passphrase).then_some(ScryptParams {
            log_n: SCRYPT_LOG_N,
            r: SCRYPT_R,
            p: SCRYPT_P,
        });
        let wk = wrapping_key(kind, material, &salt, scrypt)?;
        let wrapped = crypto::seal(&wk, &slot_aad(repo_id), master.bytes(), None);
        Ok(Slot {
            version: 1,
            kind,
            created: chrono::Utc::now().to_rfc3339(),
            host: crate::util::hostname(),
            label: label.to_string(),
            scrypt,
            salt: hex::encode(salt),
            wrapped: hex::encode(wrapped),
        })
    }

    /// Try to unwrap the master key; `None` when the secret does not match this slot.
    pub fn unwrap_key(&self, material: &[u8], repo_id: &str) -> Result<Option<SecretKey>, String> {
        if self.version != 1 {
            return Err(format!(
                "key slot version {} is not supported by this cairn",
                self.version
            ));
        }
        let salt = hex::decode(&self.salt).map_err(|_| "bad salt")?;
        let wrapped = hex::decode(&self.wrapped).map_err(|_| "bad wrapped key")?;
        let wk = wrapping_key(self.kind, material, &salt, self.scrypt)?;
        match crypto::open(&wk, &slot_aad(repo_id), &wrapped, 32) {
            Ok(k) if k.len() == 32 => Ok(Some(SecretKey::from_bytes(k.try_into().unwrap()))),
            Ok(_) => Err("wrapped key has the wrong length".into()),
            Err(_) => Ok(None),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("slot serializes");
        v.push(b'\n');
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyfile_and_passphrase_slots_unwrap_only_with_their_secret() {
        let master = SecretKey::random();
        let s = Slot::create(SlotKind::KeyFile, &[1; 32], &master, "r1", "t").unwrap();
        assert_eq!(
            s.unwrap_key(&[1; 32], "r1").unwrap().unwrap().bytes(),
            master.bytes()
        );
        assert!(s.unwrap_key(&[2; 32], "r1").unwrap().is_none());
        assert!(
            s.unwrap_key(&[1; 32], "r2").unwrap().is_none(),
            "a slot is bound to its repository"
        );
        let p = Slot::create(SlotKind::Passphrase, b"correct horse", &master, "r1", "t").unwrap();
        assert_eq!(
            p.unwrap_key(b"correct horse", "r1")
                .unwrap()
                .unwrap()
                .bytes(),
            master.bytes()
        );
        assert!(p.unwrap_key(b"wrong", "r1").unwrap().is_none());
    }

    #[test]
    fn hostile_scrypt_parameters_are_refused() {
        let master = SecretKey::random();
        let mut p = Slot::create(SlotKind::Passphrase, b"pw", &master, "r", "t").unwrap();
        p.scrypt = Some(ScryptParams {
            log_n: 40,
            r: 8,
            p: 1,
        });
        assert!(p
            .unwrap_key(b"pw", "r")
            .unwrap_err()
            .contains("out of bounds"));
    }

    #[test]
    fn key_file_roundtrip_and_errors_do_not_leak() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        generate_key_file(&p).unwrap();
        assert!(generate_key_file(&p).is_err());
        assert_eq!(KeySource::KeyFile(p.clone()).material().unwrap().len(), 32);
        std::fs::write(&p, "supersecretvalue").unwrap();
        let e = KeySource::KeyFile(p).material().unwrap_err();
        assert!(!e.contains("supersecretvalue"));
        let pp = KeySource::Passphrase {
            secret: "hunter2".into(),
            origin: "config".into(),
        };
        assert!(!format!("{pp:?}").contains("hunter2"));
    }
}
