//! Cryptography for the repository: key derivation, blob ids, sealing and opening.
//!
//! One random 256-bit master key per repository; every purpose gets its own subkey by
//! HKDF-SHA256 (salt = repository id, info = a distinct label), so a weakness in one use
//! cannot leak into another. Blob ids are keyed BLAKE3 of the plaintext (ids reveal nothing
//! without the key, and are fast to compute). Everything stored is "sealed": a one-byte
//! compression flag is prepended to the plaintext (so compression is hidden too), then the
//! whole is encrypted with AES-256-GCM through OpenSSL with a random 96-bit nonce and
//! purpose-specific associated data. Opening authenticates before any byte is used and
//! bounds the decompressed size, so a hostile object cannot make us allocate without limit.

use std::cell::RefCell;

use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};
use thiserror::Error;

/// Length of every key, id and hash in the format.
pub const KEY_LEN: usize = 32;
/// AES-GCM nonce length.
pub const NONCE_LEN: usize = 12;
/// AES-GCM tag length.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed object adds to its payload (nonce, flag byte, tag).
pub const SEAL_OVERHEAD: usize = NONCE_LEN + 1 + TAG_LEN;

const FLAG_RAW: u8 = 0;
const FLAG_ZSTD: u8 = 1;

#[derive(Debug, Error)]
pub enum CryptoError {
    #[error("authentication failed: the data was modified, or belongs to another key")]
    Auth,
    #[error("sealed object is too short ({0} bytes)")]
    TooShort(usize),
    #[error("unknown compression flag {0}")]
    BadFlag(u8),
    #[error("decompressed size exceeds the limit of {0} bytes")]
    TooLarge(usize),
    #[error("decompression failed: {0}")]
    Decompress(String),
    #[error("OpenSSL error: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
}

/// Fill a buffer with cryptographically secure random bytes.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    openssl::rand::rand_bytes(&mut b).expect("OpenSSL RNG failed");
    b
}

/// HKDF-SHA256 (RFC 5869) via OpenSSL, with an output of any length up to 255*32 bytes.
pub fn hkdf(ikm: &[u8], salt: &[u8], info: &[u8], out: &mut [u8]) -> Result<(), CryptoError> {
    use openssl::md::Md;
    use openssl::pkey::Id;
    use openssl::pkey_ctx::PkeyCtx;
    let mut ctx = PkeyCtx::new_id(Id::HKDF)?;
    ctx.derive_init()?;
    ctx.set_hkdf_md(Md::sha256())?;
    ctx.set_hkdf_key(ikm)?;
    ctx.set_hkdf_salt(salt)?;
    ctx.add_hkdf_info(info)?;
    ctx.derive(Some(out))?;
    Ok(())
}

/// SHA-256 of a byte string (object names).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    openssl::sha::sha256(data)
}

/// A 256-bit secret that is wiped when dropped and never printed.
#[derive(Clone)]
pub struct SecretKey(pub(crate) [u8; KEY_LEN]);

impl SecretKey {
    pub fn from_bytes(b: [u8; KEY_LEN]) -> Self {
        SecretKey(b)
    }
    pub fn random() -> Self {
        SecretKey(random_bytes())
    }
    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        // Volatile writes so the wipe is not optimised away.
        for b in self.0.iter_mut() {
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// HKDF labels, one per purpose. Part of the format: see docs/FORMAT.md.
pub mod label {
    pub const BLOB_ID: &[u8] = b"cairn/v1/blob-id";
    pub const BLOB: &[u8] = b"cairn/v1/blob";
    pub const META: &[u8] = b"cairn/v1/meta";
    pub const GEAR: &[u8] = b"cairn/v1/gear";
    pub const KEY_SLOT: &[u8] = b"cairn/v1/key-slot";
}

/// Associated data for each kind of sealed metadata object.
pub mod aad {
    pub const PACK_HEADER: &[u8] = b"cairn/v1/pack-header";
    pub const INDEX: &[u8] = b"cairn/v1/index";
    pub const SNAPSHOT: &[u8] = b"cairn/v1/snapshot";
}

/// The subkeys of an unlocked repository.
pub struct Keys {
    id_key: [u8; KEY_LEN],
    blob_key: SecretKey,
    meta_key: SecretKey,
    /// The keyed gear table for content-defined chunking.
    pub gear: Box<[u64; 256]>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

impl Keys {
    /// Derive every subkey from the master key; `repo_id` is the HKDF salt.
    pub fn derive(master: &SecretKey, repo_id: &[u8]) -> Result<Keys, CryptoError> {
        let mut id_key = [0u8; KEY_LEN];
        hkdf(master.bytes(), repo_id, label::BLOB_ID, &mut id_key)?;
        let mut blob = [0u8; KEY_LEN];
        hkdf(master.bytes(), repo_id, label::BLOB, &mut blob)?;
        let mut meta = [0u8; KEY_LEN];
        hkdf(master.bytes(), repo_id, label::META, &mut meta)?;
        let mut gear_bytes = [0u8; 256 * 8];
        hkdf(master.bytes(), repo_id, label::GEAR, &mut gear_bytes)?;
        let mut gear = Box::new([0u64; 256]);
        for (i, g) in gear.iter_mut().enumerate() {
            *g = u64::from_le_bytes(gear_bytes[i * 8..i * 8 + 8].try_into().unwrap());
        }
        Ok(Keys {
            id_key,
            blob_key: SecretKey(blob),
            meta_key: SecretKey(meta),
            gear,
        })
    }

    /// The id of a blob: keyed BLAKE3 of its plaintext.
    pub fn blob_id(&self, plaintext: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.id_key, plaintext).as_bytes()
    }

    /// Seal a blob; associated data binds the blob's type and id.
    pub fn seal_blob(
        &self,
        kind: u8,
        id: &[u8; 32],
        plaintext: &[u8],
        level: Option<i32>,
    ) -> Vec<u8> {
        seal(&self.blob_key, &blob_aad(kind, id), plaintext, level)
    }

    /// Open a blob and check that its plaintext hashes to `id`.
    pub fn open_blob(
        &self,
        kind: u8,
        id: &[u8; 32],
        sealed: &[u8],
        max_len: usize,
    ) -> Result<Vec<u8>, CryptoError> {
        let plain = open(&self.blob_key, &blob_aad(kind, id), sealed, max_len)?;
        if &self.blob_id(&plain) != id {
            return Err(CryptoError::Auth);
        }
        Ok(plain)
    }

    pub fn seal_meta(&self, aad: &[u8], plaintext: &[u8], level: Option<i32>) -> Vec<u8> {
        seal(&self.meta_key, aad, plaintext, level)
    }

    pub fn open_meta(
        &self,
        aad: &[u8],
        sealed: &[u8],
        max_len: usize,
    ) -> Result<Vec<u8>, CryptoError> {
        open(&self.meta_key, aad, sealed, max_len)
    }
}

fn blob_aad(kind: u8, id: &[u8; 32]) -> [u8; 33] {
    let mut a = [0u8; 33];
    a[0] = kind;
    a[1..].copy_from_slice(id);
    a
}

/// Seal `plaintext`: nonce || AES-256-GCM(flag || body) || tag. With `level`, the body is
/// zstd-compressed when that saves at least 1/32 of the size.
pub fn seal(key: &SecretKey, aad: &[u8], plaintext: &[u8], level: Option<i32>) -> Vec<u8> {
    let mut payload = Vec::with_capacity(plaintext.len() + 1);
    let compressed = level.and_then(|l| {
        compress(plaintext, l).filter(|c| c.len() + plaintext.len() / 32 < plaintext.len())
    });
    match compressed {
        Some(c) => {
            payload.push(FLAG_ZSTD);
            payload.extend_from_slice(&c);
        }
        None => {
            payload.push(FLAG_RAW);
            payload.extend_from_slice(plaintext);
        }
    }
    let nonce: [u8; NONCE_LEN] = random_bytes();
    let mut tag = [0u8; TAG_LEN];
    let ct = encrypt_aead(
        Cipher::aes_256_gcm(),
        key.bytes(),
        Some(&nonce),
        aad,
        &payload,
        &mut tag,
    )
    .expect("AES-256-GCM encryption failed");
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out.extend_from_slice(&tag);
    out
}

/// Open a sealed object: authenticate, then decompress into at most `max_len` bytes.
pub fn open(
    key: &SecretKey,
    aad: &[u8],
    sealed: &[u8],
    max_len: usize,
) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(CryptoError::TooShort(sealed.len()));
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
    let payload = decrypt_aead(
        Cipher::aes_256_gcm(),
        key.bytes(),
        Some(nonce),
        aad,
        ct,
        tag,
    )
    .map_err(|_| CryptoError::Auth)?;
    match payload[0] {
        FLAG_RAW => {
            if payload.len() - 1 > max_len {
                return Err(CryptoError::TooLarge(max_len));
            }
            let mut p = payload;
            p.remove(0);
            Ok(p)
        }
        FLAG_ZSTD => decompress_bounded(&payload[1..], max_len),
        f => Err(CryptoError::BadFlag(f)),
    }
}

thread_local! {
    // One zstd context per thread, reused: creating one per blob cost more than
    // compressing a small blob.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

fn compress(plain: &[u8], level: i32) -> Option<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().map(|(l, _)| *l) != Some(level) {
            *c = zstd::bulk::Compressor::new(level).ok().map(|z| (level, z));
        }
        c.as_mut()?.1.compress(plain).ok()
    })
}

/// Outputs up to this size are decompressed in one call into an exactly sized buffer.
const BULK_LIMIT: usize = 64 << 20;

/// zstd-decompress into at most `max_len` bytes, whatever the frame header claims.
pub fn decompress_bounded(data: &[u8], max_len: usize) -> Result<Vec<u8>, CryptoError> {
    use std::io::Read;
    if let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(data) {
        if size > max_len as u64 {
            return Err(CryptoError::TooLarge(max_len));
        }
        if size as usize <= BULK_LIMIT {
            // The frame says its size (checked against max_len above); zstd fails rather
            // than write past the buffer. Anything unusual (several frames) falls back to
            // the bounded streaming decoder below.
            let r = DECOMPRESSOR.with(|d| {
                let mut d = d.borrow_mut();
                if d.is_none() {
                    *d = zstd::bulk::Decompressor::new().ok();
                }
                d.as_mut()
                    .and_then(|d| d.decompress(data, size as usize).ok())
            });
            if let Some(out) = r {
                return Ok(out);
            }
        }
    }
    let dec = zstd::stream::read::Decoder::new(data)
        .map_err(|e| CryptoError::Decompress(e.to_string()))?;
    let mut out = Vec::new();
    let n = dec
        .take(max_len as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| CryptoError::Decompress(e.to_string()))?;
    if n > max_len {
        return Err(CryptoError::TooLarge(max_len));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::derive(&SecretKey::from_bytes([7; 32]), b"repo").unwrap()
    }

    #[test]
    fn hkdf_matches_rfc5869_case_1() {
        let ikm = [0x0b; 22];
        let salt: Vec<u8> = (0..=0x0c).collect();
        let info: Vec<u8> = (0xf0..=0xf9).collect();
        let mut okm = [0u8; 42];
        hkdf(&ikm, &salt, &info, &mut okm).unwrap();
        assert_eq!(
            hex::encode(okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
    }

    #[test]
    fn subkeys_differ_by_purpose_and_repo() {
        let k = keys();
        let k2 = Keys::derive(&SecretKey::from_bytes([7; 32]), b"other").unwrap();
        assert_ne!(k.blob_id(b"x"), k2.blob_id(b"x"));
        assert_ne!(k.blob_key.0, k.meta_key.0);
        assert_ne!(k.gear[0], k2.gear[0]);
    }

    #[test]
    fn blob_roundtrip_compressed_and_raw() {
        let k = keys();
        let data = vec![b'a'; 100_000];
        let id = k.blob_id(&data);
        let s = k.seal_blob(0, &id, &data, Some(3));
        assert!(s.len() < 1000, "compressible data must be compressed");
        assert_eq!(k.open_blob(0, &id, &s, data.len()).unwrap(), data);
        let rnd: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let id = k.blob_id(&rnd);
        let s = k.seal_blob(0, &id, &rnd, None);
        assert_eq!(s.len(), rnd.len() + SEAL_OVERHEAD);
        assert_eq!(k.open_blob(0, &id, &s, rnd.len()).unwrap(), rnd);
    }

    #[test]
    fn tampering_wrong_id_wrong_kind_and_bounds_fail() {
        let k = keys();
        let data = vec![b'z'; 10_000];
        let id = k.blob_id(&data);
        let mut s = k.seal_blob(0, &id, &data, Some(3));
        assert!(matches!(
            k.open_blob(1, &id, &s, 1 << 20),
            Err(CryptoError::Auth)
        ));
        let other = k.blob_id(b"other");
        assert!(matches!(
            k.open_blob(0, &other, &s, 1 << 20),
            Err(CryptoError::Auth)
        ));
        assert!(matches!(
            k.open_blob(0, &id, &s, 100),
            Err(CryptoError::TooLarge(100))
        ));
        let n = s.len();
        s[n / 2] ^= 1;
        assert!(matches!(
            k.open_blob(0, &id, &s, 1 << 20),
            Err(CryptoError::Auth)
        ));
        assert!(matches!(
            k.open_blob(0, &id, &s[..10], 1 << 20),
            Err(CryptoError::TooShort(10))
        ));
    }
}
