//! Packs: many sealed blobs in one file, with an encrypted header at the end.
//!
//! A pack is `blob* || sealed header || header length (u32 LE)`. The header lists every
//! blob (type, id, offset, sealed length, plaintext length), so the index can be rebuilt
//! from packs alone. Data blobs and tree blobs go to separate packs, so reading metadata
//! never drags file contents along. The pack's name is the SHA-256 of its bytes.

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{self, Keys};

pub const BLOB_DATA: u8 = 0;
pub const BLOB_TREE: u8 = 1;
/// One header entry: kind u8, id [32], offset u64, sealed length u32, plaintext length u32.
pub const ENTRY_LEN: usize = 1 + 32 + 8 + 4 + 4;
const HEADER_VERSION: u8 = 1;
/// Largest blob count a header may declare.
pub const MAX_BLOBS_PER_PACK: usize = 1 << 22;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub kind: u8,
    pub id: [u8; 32],
    pub offset: u64,
    pub length: u32,
    pub raw_length: u32,
}

/// Accumulates sealed blobs into a pack in memory.
#[derive(Default)]
pub struct PackBuilder {
    pub buf: Vec<u8>,
    pub entries: Vec<PackEntry>,
}

impl PackBuilder {
    pub fn add(&mut self, kind: u8, id: [u8; 32], sealed: &[u8], raw_length: usize) {
        self.entries.push(PackEntry {
            kind,
            id,
            offset: self.buf.len() as u64,
            length: sealed.len() as u32,
            raw_length: raw_length as u32,
        });
        self.buf.extend_from_slice(sealed);
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Append the sealed header; returns (pack id, pack bytes, entries).
    pub fn finish(mut self, keys: &Keys) -> ([u8; 32], Vec<u8>, Vec<PackEntry>) {
        let header = encode_entries(&self.entries);
        let sealed = keys.seal_meta(crypto::aad::PACK_HEADER, &header, Some(3));
        self.buf.extend_from_slice(&sealed);
        self.buf
            .extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        let id = crypto::sha256(&self.buf);
        (id, self.buf, self.entries)
    }
}

fn encode_entries(entries: &[PackEntry]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(HEADER_VERSION);
    w.u32(entries.len() as u32);
    for e in entries {
        write_entry(&mut w, e);
    }
    w.buf
}

pub fn write_entry(w: &mut Writer, e: &PackEntry) {
    w.u8(e.kind);
    w.bytes(&e.id);
    w.u64(e.offset);
    w.u32(e.length);
    w.u32(e.raw_length);
}

pub fn read_entry(r: &mut Reader) -> Result<PackEntry, DecodeError> {
    let kind = r.u8()?;
    if kind != BLOB_DATA && kind != BLOB_TREE {
        return Err(DecodeError::Invalid(format!("blob type {kind}")));
    }
    Ok(PackEntry {
        kind,
        id: r.id()?,
        offset: r.u64()?,
        length: r.u32()?,
        raw_length: r.u32()?,
    })
}

/// A pack written straight to a temporary file as blobs arrive, hashed on the way, and
/// renamed to its SHA-256 name when finished: a backup holds no pack in memory.
pub struct PackStream {
    out: Option<std::io::BufWriter<std::fs::File>>,
    tmp: Option<std::path::PathBuf>,
    sha: openssl::sha::Sha256,
    len: u64,
    pub entries: Vec<PackEntry>,
}

impl PackStream {
    pub fn create(backend: &dyn crate::backend::Backend) -> std::io::Result<PackStream> {
        let (f, tmp) = backend.create_temp(crate::backend::Kind::Data)?;
        Ok(PackStream {
            out: Some(std::io::BufWriter::with_capacity(1 << 20, f)),
            tmp: Some(tmp),
            sha: openssl::sha::Sha256::new(),
            len: 0,
            entries: Vec::new(),
        })
    }

    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        self.out
            .as_mut()
            .expect("pack already finished")
            .write_all(b)?;
        self.sha.update(b);
        self.len += b.len() as u64;
        Ok(())
    }

    pub fn add(
        &mut self,
        kind: u8,
        id: [u8; 32],
        sealed: &[u8],
        raw_length: usize,
    ) -> std::io::Result<()> {
        self.entries.push(PackEntry {
            kind,
            id,
            offset: self.len,
            length: sealed.len() as u32,
            raw_length: raw_length as u32,
        });
        self.put(sealed)
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Append the sealed header, sync, and store the pack under its name.
    pub fn finish(
        mut self,
        keys: &Keys,
        backend: &dyn crate::backend::Backend,
    ) -> std::io::Result<([u8; 32], Vec<PackEntry>)> {
        let header = encode_entries(&self.entries);
        let sealed = keys.seal_meta(crypto::aad::PACK_HEADER, &header, Some(3));
        self.put(&sealed)?;
        self.put(&(sealed.len() as u32).to_le_bytes())?;
        let sha = std::mem::replace(&mut self.sha, openssl::sha::Sha256::new());
        let id = sha.finish();
        let file = self
            .out
            .take()
            .expect("finished once")
            .into_inner()
            .map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        let tmp = self.tmp.take().expect("finished once");
        backend.commit_temp(crate::backend::Kind::Data, &tmp, &hex::encode(id))?;
        Ok((id, std::mem::take(&mut self.entries)))
    }
}

impl Drop for PackStream {
    fn drop(&mut self) {
        // Abandoned before finish: the temporary file goes.
        if let Some(t) = self.tmp.take() {
            let _ = std::fs::remove_file(t);
        }
    }
}

/// Decode and check a pack's header from the whole pack's bytes: entries must lie
/// inside the blob area, in order, without overlap.
pub fn read_header(keys: &Keys, pack: &[u8]) -> Result<Vec<PackEntry>, String> {
    if pack.len() < 4 {
        return Err("pack shorter than its trailer".into());
    }
    let hlen = u32::from_le_bytes(pack[pack.len() - 4..].try_into().unwrap()) as usize;
    if hlen + 4 > pack.len() {
        return Err(format!(
            "header length {hlen} exceeds the pack size {}",
            pack.len()
        ));
    }
    let blob_area = pack.len() - 4 - hlen;
    decode_header(keys, &pack[blob_area..pack.len() - 4], blob_area)
}

/// Largest sealed header accepted.
const MAX_HEADER: usize = 64 + MAX_BLOBS_PER_PACK * ENTRY_LEN;

/// Read a pack's header from the end of the stored object, without reading its blobs.
pub fn read_header_of(
    keys: &Keys,
    backend: &dyn crate::backend::Backend,
    name: &str,
) -> Result<Vec<PackEntry>, String> {
    use crate::backend::Kind;
    let size = backend.size(Kind::Data, name).map_err(|e| e.to_string())?;
    if size < 4 {
        return Err("pack shorter than its trailer".into());
    }
    let t = backend
        .read_at(Kind::Data, name, size - 4, 4)
        .map_err(|e| e.to_string())?;
    let hlen = u32::from_le_bytes(t[..4].try_into().unwrap()) as u64;
    if hlen + 4 > size || hlen as usize > MAX_HEADER {
        return Err(format!(
            "header length {hlen} does not fit the pack size {size}"
        ));
    }
    let sealed = backend
        .read_at(Kind::Data, name, size - 4 - hlen, hlen as usize)
        .map_err(|e| e.to_string())?;
    decode_header(keys, &sealed, (size - 4 - hlen) as usize)
}

fn decode_header(keys: &Keys, sealed: &[u8], blob_area: usize) -> Result<Vec<PackEntry>, String> {
    let plain = keys
        .open_meta(
            crypto::aad::PACK_HEADER,
            sealed,
            16 + MAX_BLOBS_PER_PACK * ENTRY_LEN,
        )
        .map_err(|e| format!("pack header: {e}"))?;
    let mut r = Reader::new(&plain);
    let v = r.u8().map_err(|e| e.to_string())?;
    if v != HEADER_VERSION {
        return Err(format!("unknown pack header version {v}"));
    }
    let n = r
        .count("pack entries", MAX_BLOBS_PER_PACK, ENTRY_LEN)
        .map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(n);
    let mut end = 0u64;
    for _ in 0..n {
        let e = read_entry(&mut r).map_err(|e| e.to_string())?;
        let e_end = e
            .offset
            .checked_add(e.length as u64)
            .filter(|x| *x <= blob_area as u64);
        if e.offset < end || e_end.is_none() {
            return Err(format!(
                "blob entry at offset {} overlaps or lies outside the blob area",
                e.offset
            ));
        }
        end = e_end.unwrap_or(end);
        out.push(e);
    }
    r.finish().map_err(|e| e.to_string())?;
    Ok(out)
}
