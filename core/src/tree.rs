//! Trees: one blob per directory, listing its entries sorted by name.
//!
//! Names are raw bytes (non-UTF-8 names round-trip). Each entry carries the full
//! metadata restore needs — type, permission bits, owner by number and by name, mtime to
//! the nanosecond, xattrs (POSIX ACLs are xattrs) — and, for a regular file, its size, the
//! data extents of a sparse file, the ids of its chunks, a hard-link group, and the BLAKE3
//! hash of its whole logical content so a restore can be verified independently of the
//! chunk path. The decoder is strict: names are validated (no `/`, NUL, `.` or `..`),
//! strictly increasing, and every length and count is bounded before allocation — a tree
//! from a hostile repository can be rejected, never trusted.

use crate::codec::{DecodeError, Reader, Writer};

const TREE_VERSION: u8 = 1;
pub const MAX_ENTRIES: usize = 1 << 24;
pub const MAX_XATTRS: usize = 4096;
pub const MAX_XATTR_VALUE: usize = 1 << 16;
pub const MAX_SYMLINK: usize = 4095;
pub const MAX_EXTENTS: usize = 1 << 24;
pub const MAX_CHUNKS: usize = 1 << 28;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileContent {
    /// Logical size in bytes.
    pub size: u64,
    /// BLAKE3 (unkeyed) of the logical content, holes read as zeros.
    pub hash: [u8; 32],
    /// Hard-link group within the snapshot (0: not hard-linked).
    pub link_group: u64,
    /// Data extents (offset, length) of a sparse file; empty for a dense file. The chunks
    /// hold the concatenation of the extents' bytes; everything else is a hole.
    pub extents: Vec<(u64, u64)>,
    pub chunks: Vec<[u8; 32]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File(FileContent),
    Dir { subtree: [u8; 32] },
    Symlink { target: Vec<u8> },
    Fifo,
    CharDev { major: u32, minor: u32 },
    BlockDev { major: u32, minor: u32 },
}

impl Kind {
    fn code(&self) -> u8 {
        match self {
            Kind::File(_) => 1,
            Kind::Dir { .. } => 2,
            Kind::Symlink { .. } => 3,
            Kind::Fifo => 4,
            Kind::CharDev { .. } => 5,
            Kind::BlockDev { .. } => 6,
        }
    }

    /// One letter, as in `ls -l`.
    pub fn letter(&self) -> char {
        match self {
            Kind::File(_) => '-',
            Kind::Dir { .. } => 'd',
            Kind::Symlink { .. } => 'l',
            Kind::Fifo => 'p',
            Kind::CharDev { .. } => 'c',
            Kind::BlockDev { .. } => 'b',
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: Vec<u8>,
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky (07777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub user: Vec<u8>,
    pub group: Vec<u8>,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Is `name` acceptable as one path component?
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != b"."
        && name != b".."
        && !name.contains(&b'/')
        && !name.contains(&0)
}

pub fn encode(nodes: &[Node]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(TREE_VERSION);
    w.u32(nodes.len() as u32);
    for n in nodes {
        w.bytes16(&n.name);
        w.u8(n.kind.code());
        w.u32(n.mode);
        w.u32(n.uid);
        w.u32(n.gid);
        w.bytes16(&n.user);
        w.bytes16(&n.group);
        w.i64(n.mtime);
        w.u32(n.mtime_nsec);
        w.u32(n.xattrs.len() as u32);
        for (k, v) in &n.xattrs {
            w.bytes16(k);
            w.bytes32(v);
        }
        match &n.kind {
            Kind::File(f) => {
                w.u64(f.size);
                w.bytes(&f.hash);
                w.u64(f.link_group);
                w.u32(f.extents.len() as u32);
                for (o, l) in &f.extents {
                    w.u64(*o);
                    w.u64(*l);
                }
                w.u32(f.chunks.len() as u32);
                for c in &f.chunks {
                    w.bytes(c);
                }
            }
            Kind::Dir { subtree } => w.bytes(subtree),
            Kind::Symlink { target } => w.bytes16(target),
            Kind::Fifo => {}
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                w.u32(*major);
                w.u32(*minor);
            }
        }
    }
    w.buf
}

fn invalid(s: impl Into<String>) -> DecodeError {
    DecodeError::Invalid(s.into())
}

pub fn decode(data: &[u8]) -> Result<Vec<Node>, DecodeError> {
    let mut r = Reader::new(data);
    let v = r.u8()?;
    if v != TREE_VERSION {
        return Err(invalid(format!("tree version {v}")));
    }
    // Smallest possible entry is well over 32 bytes.
    let n = r.count("tree entries", MAX_ENTRIES, 32)?;
    let mut nodes: Vec<Node> = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.bytes16("name length", 255)?.to_vec();
        if !valid_name(&name) {
            return Err(invalid(format!(
                "entry name {:?}",
                crate::util::show(&name)
            )));
        }
        if let Some(prev) = nodes.last() {
            if prev.name >= name {
                return Err(invalid(
                    "entry names not strictly increasing (duplicate or unsorted)",
                ));
            }
        }
        let code = r.u8()?;
        let mode = r.u32()?;
        if mode & !0o7777 != 0 {
            return Err(invalid(format!("mode {mode:o}")));
        }
        let uid = r.u32()?;
        let gid = r.u32()?;
        let user = r.bytes16("user name", 255)?.to_vec();
        let group = r.bytes16("group name", 255)?.to_vec();
        let mtime = r.i64()?;
        let mtime_nsec = r.u32()?;
        if mtime_nsec >= 1_000_000_000 {
            return Err(invalid("mtime nanoseconds"));
        }
        let nx = r.count("xattrs", MAX_XATTRS, 6)?;
        let mut xattrs = Vec::with_capacity(nx);
        for _ in 0..nx {
            let k = r.bytes16("xattr name", 255)?.to_vec();
            if k.is_empty() || k.contains(&0) {
                return Err(invalid("xattr name"));
            }
            let v = r.bytes32("xattr value", MAX_XATTR_VALUE)?.to_vec();
            xattrs.push((k, v));
        }
        let kind = match code {
            1 => {
                let size = r.u64()?;
                let hash = r.id()?;
                let link_group = r.u64()?;
                let ne = r.count("extents", MAX_EXTENTS, 16)?;
                let mut extents = Vec::with_capacity(ne);
                let mut end = 0u64;
                for _ in 0..ne {
                    let (o, l) = (r.u64()?, r.u64()?);
                    if o < end || o.checked_add(l).is_none_or(|e| e > size) {
                        return Err(invalid("file extents overlap or exceed the size"));
                    }
                    end = o + l;
                    extents.push((o, l));
                }
                let nc = r.count("chunks", MAX_CHUNKS, 32)?;
                let mut chunks = Vec::with_capacity(nc);
                for _ in 0..nc {
                    chunks.push(r.id()?);
                }
                Kind::File(FileContent {
                    size,
                    hash,
                    link_group,
                    extents,
                    chunks,
                })
            }
            2 => Kind::Dir { subtree: r.id()? },
            3 => {
                let target = r.bytes16("symlink target", MAX_SYMLINK)?.to_vec();
                if target.is_empty() || target.contains(&0) {
                    return Err(invalid("symlink target"));
                }
                Kind::Symlink { target }
            }
            4 => Kind::Fifo,
            5 => Kind::CharDev {
                major: r.u32()?,
                minor: r.u32()?,
            },
            6 => Kind::BlockDev {
                major: r.u32()?,
                minor: r.u32()?,
            },
            c => return Err(invalid(format!("entry type {c}"))),
        };
        nodes.push(Node {
            name,
            kind,
            mode,
            uid,
            gid,
            user,
            group,
            mtime,
            mtime_nsec,
            xattrs,
        });
    }
    r.finish()?;
    Ok(nodes)
}

/// Find an entry by name in a sorted tree.
pub fn find<'a>(nodes: &'a [Node], name: &[u8]) -> Option<&'a Node> {
    nodes
        .binary_search_by(|n| n.name.as_slice().cmp(name))
        .ok()
        .map(|i| &nodes[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &[u8], kind: Kind) -> Node {
        Node {
            name: name.to_vec(),
            kind,
            mode: 0o4755,
            uid: 1,
            gid: 2,
            user: b"u".to_vec(),
            group: b"g".to_vec(),
            mtime: -5,
            mtime_nsec: 123,
            xattrs: vec![(b"user.a".to_vec(), vec![0, 1, 2])],
        }
    }

    #[test]
    fn roundtrip_every_kind() {
        let nodes = vec![
            node(
                b"a",
                Kind::File(FileContent {
                    size: 10,
                    hash: [1; 32],
                    link_group: 3,
                    extents: vec![(0, 2), (8, 2)],
                    chunks: vec![[2; 32]],
                }),
            ),
            node(b"b", Kind::Dir { subtree: [3; 32] }),
            node(
                b"c",
                Kind::Symlink {
                    target: b"../x".to_vec(),
                },
            ),
            node(b"d", Kind::Fifo),
            node(b"e", Kind::CharDev { major: 1, minor: 3 }),
            node(b"f\xff", Kind::BlockDev { major: 8, minor: 0 }),
        ];
        assert_eq!(decode(&encode(&nodes)).unwrap(), nodes);
    }

    #[test]
    fn hostile_trees_are_rejected() {
        for bad in [&b".."[..], b".", b"a/b", b"/etc", b"a\0b", b""] {
            let t = encode(&[node(bad, Kind::Fifo)]);
            assert!(decode(&t).is_err(), "name {bad:?} must be refused");
        }
        let dup = encode(&[node(b"a", Kind::Fifo), node(b"a", Kind::Fifo)]);
        assert!(decode(&dup).is_err());
        let unsorted = encode(&[node(b"b", Kind::Fifo), node(b"a", Kind::Fifo)]);
        assert!(decode(&unsorted).is_err());
        let over = encode(&[node(
            b"a",
            Kind::File(FileContent {
                size: 4,
                hash: [0; 32],
                link_group: 0,
                extents: vec![(2, 5)],
                chunks: vec![],
            }),
        )]);
        assert!(decode(&over).is_err());
        let mut huge = encode(&[node(b"a", Kind::Fifo)]);
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge).is_err());
        let t = encode(&[node(b"a", Kind::Fifo)]);
        for cut in 0..t.len() {
            assert!(decode(&t[..cut]).is_err());
        }
    }
}
