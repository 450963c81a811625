//! A tiny little-endian binary codec for the repository's binary structures (trees, pack
//! headers, index files).
//!
//! Hand-specified rather than a serialization crate, so that docs/FORMAT.md can describe
//! every byte and a third party can write a reader. The [`Reader`] never trusts a length:
//! every length is checked against the bytes that remain (and a caller-given cap) before
//! anything is allocated, so a hostile object can make decoding fail but never make it
//! allocate more than the object's own size.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("truncated: needed {needed} more bytes at offset {offset}")]
    Truncated { offset: usize, needed: usize },
    #[error("{what}: {value} exceeds the limit of {limit}")]
    Limit {
        what: &'static str,
        value: u64,
        limit: u64,
    },
    #[error("invalid {0}")]
    Invalid(String),
}

/// Appends little-endian values to a buffer.
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    /// Length-prefixed (u16) bytes; the caller guarantees the length fits.
    pub fn bytes16(&mut self, b: &[u8]) {
        self.u16(u16::try_from(b.len()).expect("field longer than 65535 bytes"));
        self.bytes(b);
    }
    /// Length-prefixed (u32) bytes.
    pub fn bytes32(&mut self, b: &[u8]) {
        self.u32(u32::try_from(b.len()).expect("field longer than 4 GiB"));
        self.bytes(b);
    }
}

/// Reads little-endian values from a slice, with every length bounded.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated {
                offset: self.pos,
                needed: n - self.remaining(),
            });
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    pub fn id(&mut self) -> Result<[u8; 32], DecodeError> {
        Ok(self.take(32)?.try_into().unwrap())
    }
    pub fn bytes16(&mut self, what: &'static str, limit: usize) -> Result<&'a [u8], DecodeError> {
        let n = self.u16()? as usize;
        check_limit(what, n as u64, limit as u64)?;
        self.take(n)
    }
    pub fn bytes32(&mut self, what: &'static str, limit: usize) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        check_limit(what, n as u64, limit as u64)?;
        self.take(n)
    }
    /// A count of items, each at least `min_item` bytes: bounded by what remains, so a
    /// count can never cause an allocation larger than the input.
    pub fn count(
        &mut self,
        what: &'static str,
        limit: usize,
        min_item: usize,
    ) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        check_limit(what, n as u64, limit as u64)?;
        if n.saturating_mul(min_item.max(1)) > self.remaining() {
            return Err(DecodeError::Truncated {
                offset: self.pos,
                needed: n * min_item - self.remaining(),
            });
        }
        Ok(n)
    }
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.remaining() != 0 {
            return Err(DecodeError::Invalid(format!(
                "{} trailing bytes",
                self.remaining()
            )));
        }
        Ok(())
    }
}

fn check_limit(what: &'static str, value: u64, limit: u64) -> Result<(), DecodeError> {
    if value > limit {
        return Err(DecodeError::Limit { what, value, limit });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_bounds() {
        let mut w = Writer::new();
        w.u8(1);
        w.u32(7);
        w.bytes16(b"abc");
        w.i64(-5);
        let mut r = Reader::new(&w.buf);
        assert_eq!(r.u8().unwrap(), 1);
        assert_eq!(r.u32().unwrap(), 7);
        assert_eq!(r.bytes16("name", 10).unwrap(), b"abc");
        assert_eq!(r.i64().unwrap(), -5);
        r.finish().unwrap();
        let mut r = Reader::new(&w.buf[5..]);
        assert!(matches!(
            r.bytes16("name", 2),
            Err(DecodeError::Limit { .. })
        ));
    }

    #[test]
    fn absurd_count_is_refused_before_allocating() {
        let mut w = Writer::new();
        w.u32(u32::MAX);
        let mut r = Reader::new(&w.buf);
        assert!(r.count("entries", usize::MAX, 40).is_err());
        let mut w = Writer::new();
        w.u32(1000);
        w.bytes(&[0; 100]);
        let mut r = Reader::new(&w.buf);
        assert!(matches!(
            r.count("entries", 1 << 20, 1),
            Err(DecodeError::Truncated { .. })
        ));
    }
}
