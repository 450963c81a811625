//! Content-defined chunking: FastCDC (2020) with a gear table derived from the key.
//!
//! Boundaries depend on content, so an insertion early in a file shifts only nearby
//! chunks and the rest still deduplicate. The gear table is derived from the repository
//! key (HKDF), so chunk lengths — visible as blob sizes to anyone holding the repository —
//! do not fingerprint known content. Cut points come from the `fastcdc` crate's
//! `cut_gear`; this module only streams a reader through it with a bounded buffer.

use std::io::{self, Read};

use fastcdc::v2020::{cut_gear, select_masks, Normalization};

pub struct Chunker<'g> {
    min: usize,
    avg: usize,
    max: usize,
    masks: (u64, u64),
    gear: &'g [u64; 256],
    gear_ls: Box<[u64; 256]>,
}

impl<'g> Chunker<'g> {
    pub fn new(min: u32, avg: u32, max: u32, gear: &'g [u64; 256]) -> Self {
        let mut gear_ls = Box::new([0u64; 256]);
        for (d, g) in gear_ls.iter_mut().zip(gear.iter()) {
            *d = g << 1;
        }
        Chunker {
            min: min as usize,
            avg: avg as usize,
            max: max as usize,
            masks: select_masks(avg as usize, Normalization::Level1),
            gear,
            gear_ls,
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Length of the next chunk at the start of `data` (`data` holds at least `max` bytes
    /// unless it is the end of the stream).
    pub fn cut(&self, data: &[u8]) -> usize {
        if data.len() <= self.min {
            return data.len();
        }
        let (ms, ml) = self.masks;
        let (_, end) = cut_gear(
            data,
            self.min,
            self.avg,
            self.max,
            ms,
            ml,
            ms << 1,
            ml << 1,
            &self.gear[..],
            &self.gear_ls[..],
        );
        end.clamp(1, data.len())
    }

    /// Split a whole stream, calling `f` with each chunk. Memory: one buffer of 2 × max.
    pub fn split(&self, r: impl Read, f: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<u64> {
        self.split_with(&mut Vec::new(), r, f)
    }

    /// Like [`split`](Self::split), with a caller-kept buffer: allocated (and zeroed) once
    /// for all the files of a backup instead of once per file.
    pub fn split_with(
        &self,
        buf: &mut Vec<u8>,
        mut r: impl Read,
        mut f: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<u64> {
        if buf.len() < 2 * self.max {
            buf.resize(2 * self.max, 0);
        }
        let (mut start, mut end, mut eof, mut total) = (0usize, 0usize, false, 0u64);
        loop {
            if !eof && end - start < self.max {
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
                while end < buf.len() {
                    let n = match r.read(&mut buf[end..]) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    if n == 0 {
                        eof = true;
                        break;
                    }
                    end += n;
                    total += n as u64;
                }
            }
            if start == end {
                return Ok(total);
            }
            let n = self.cut(&buf[start..end]);
            f(&buf[start..start + n])?;
            start += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn chunks(c: &Chunker, d: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        c.split(d, |ch| {
            out.push(ch.to_vec());
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn chunks_cover_the_input_within_bounds() {
        let gear = [0x9e37_79b9_7f4a_7c15u64; 256].map(|g| g.rotate_left(7));
        let mut gear = gear;
        for (i, g) in gear.iter_mut().enumerate() {
            *g = g.wrapping_mul(i as u64 + 1);
        }
        let c = Chunker::new(1024, 4096, 16384, &gear);
        let d = data(1 << 20, 1);
        let ch = chunks(&c, &d);
        assert_eq!(ch.concat(), d);
        assert!(ch[..ch.len() - 1]
            .iter()
            .all(|c| c.len() >= 1024 && c.len() <= 16384));
        assert!(
            ch.len() > 100,
            "average size near 4 KiB expected, got {} chunks",
            ch.len()
        );
        assert!(chunks(&c, &[]).is_empty());
    }

    #[test]
    fn insertion_only_changes_nearby_chunks_and_gear_changes_cuts() {
        let mut g1 = [0u64; 256];
        let mut g2 = [0u64; 256];
        for i in 0..256 {
            g1[i] = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            g2[i] = (i as u64 + 7).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        }
        let c = Chunker::new(1024, 4096, 16384, &g1);
        let d = data(1 << 20, 2);
        let mut d2 = d.clone();
        d2.splice(5000..5000, [1u8, 2, 3]);
        let a: std::collections::HashSet<_> = chunks(&c, &d).into_iter().collect();
        let b = chunks(&c, &d2);
        let shared = b.iter().filter(|x| a.contains(*x)).count();
        assert!(
            shared + 3 >= b.len(),
            "only chunks near the edit may differ ({shared}/{})",
            b.len()
        );
        let other = Chunker::new(1024, 4096, 16384, &g2);
        let cuts1: Vec<usize> = chunks(&c, &d).iter().map(|c| c.len()).collect();
        let cuts2: Vec<usize> = chunks(&other, &d).iter().map(|c| c.len()).collect();
        assert_ne!(
            cuts1, cuts2,
            "a different key must give different boundaries"
        );
    }
}
