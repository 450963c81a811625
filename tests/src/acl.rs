//! POSIX ACLs in the two forms the tests meet: the kernel's binary xattr
//! value (`system.posix_acl_access` / `system.posix_acl_default`) and the
//! text form GNU tar stores in `SCHILY.acl.access` / `SCHILY.acl.default`.
//!
//! Design choice: no libacl and no `setfacl` — the binary format is small
//! and stable (a little-endian `u32` version 2 header, then one
//! `(tag: u16, perm: u16, id: u32)` record per entry, sorted by tag then
//! id), so ACLs are written and compared as xattrs. Encoding always sorts,
//! which makes the bytes canonical: two equal ACLs encode identically.

use std::fmt;

pub const ACL_XATTR_ACCESS: &[u8] = b"system.posix_acl_access";
pub const ACL_XATTR_DEFAULT: &[u8] = b"system.posix_acl_default";

const VERSION: u32 = 2;
const UNDEFINED_ID: u32 = u32::MAX;

/// An ACL entry's tag, with its kernel value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tag {
    UserObj = 0x01,
    User = 0x02,
    GroupObj = 0x04,
    Group = 0x08,
    Mask = 0x10,
    Other = 0x20,
}

impl Tag {
    fn from_u16(v: u16) -> Option<Tag> {
        Some(match v {
            0x01 => Tag::UserObj,
            0x02 => Tag::User,
            0x04 => Tag::GroupObj,
            0x08 => Tag::Group,
            0x10 => Tag::Mask,
            0x20 => Tag::Other,
            _ => return None,
        })
    }
}

/// One ACL entry; `id` is meaningful for `User` and `Group` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    pub tag: Tag,
    pub id: Option<u32>,
    /// `rwx` as bits 4/2/1.
    pub perm: u16,
}

impl Entry {
    pub fn new(tag: Tag, id: Option<u32>, perm: u16) -> Entry {
        Entry { tag, id, perm }
    }
}

/// A whole ACL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Acl(pub Vec<Entry>);

impl Acl {
    /// Canonical (sorted) kernel xattr bytes.
    pub fn to_xattr(&self) -> Vec<u8> {
        let mut es = self.0.clone();
        es.sort_by_key(|e| (e.tag, e.id));
        let mut v = VERSION.to_le_bytes().to_vec();
        for e in es {
            v.extend_from_slice(&(e.tag as u16).to_le_bytes());
            v.extend_from_slice(&e.perm.to_le_bytes());
            v.extend_from_slice(&e.id.unwrap_or(UNDEFINED_ID).to_le_bytes());
        }
        v
    }

    /// Parse the kernel xattr bytes.
    pub fn from_xattr(b: &[u8]) -> Result<Acl, String> {
        if b.len() < 4 || !(b.len() - 4).is_multiple_of(8) {
            return Err(format!("bad ACL xattr length {}", b.len()));
        }
        let ver = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if ver != VERSION {
            return Err(format!("unknown ACL xattr version {ver}"));
        }
        let mut out = Vec::new();
        for rec in b[4..].chunks_exact(8) {
            let tag = u16::from_le_bytes([rec[0], rec[1]]);
            let perm = u16::from_le_bytes([rec[2], rec[3]]);
            let id = u32::from_le_bytes([rec[4], rec[5], rec[6], rec[7]]);
            let tag = Tag::from_u16(tag).ok_or_else(|| format!("unknown ACL tag {tag:#x}"))?;
            let id = matches!(tag, Tag::User | Tag::Group).then_some(id);
            out.push(Entry { tag, id, perm });
        }
        Ok(Acl(out))
    }

    /// Parse the text form (`user::rwx,user:1000:r-x,group::r-x,mask::rwx,
    /// other::r--`; entries separated by `,` or newlines; `#` comments;
    /// qualifiers may be names, resolved on this system, or numbers).
    pub fn from_text(s: &str) -> Result<Acl, String> {
        let mut out = Vec::new();
        for raw in s.split([',', '\n']) {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let line = line.strip_prefix("default:").unwrap_or(line);
            let fields: Vec<&str> = line.split(':').map(str::trim).collect();
            let (tag, qual, perm) = match fields.as_slice() {
                // libarchive appends the numeric id: "user:daemon:r--:1".
                [t, _, p, id] if !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()) => {
                    (*t, *id, *p)
                }
                [t, q, p] => (*t, *q, *p),
                // "mask:rwx" / "other:r--" (two fields) is also accepted.
                [t, p] => (*t, "", *p),
                _ => return Err(format!("bad ACL entry {line:?}")),
            };
            let perm = parse_perm(perm)?;
            let entry = match (tag.trim(), qual.is_empty()) {
                ("user" | "u", true) => Entry::new(Tag::UserObj, None, perm),
                ("user" | "u", false) => Entry::new(Tag::User, Some(resolve_user(qual)?), perm),
                ("group" | "g", true) => Entry::new(Tag::GroupObj, None, perm),
                ("group" | "g", false) => Entry::new(Tag::Group, Some(resolve_group(qual)?), perm),
                ("mask" | "m", _) => Entry::new(Tag::Mask, None, perm),
                ("other" | "o", _) => Entry::new(Tag::Other, None, perm),
                _ => return Err(format!("bad ACL tag in {line:?}")),
            };
            out.push(entry);
        }
        Ok(Acl(out))
    }
}

impl fmt::Display for Acl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut es = self.0.clone();
        es.sort_by_key(|e| (e.tag, e.id));
        let parts: Vec<String> = es
            .iter()
            .map(|e| {
                let tag = match e.tag {
                    Tag::UserObj | Tag::User => "user",
                    Tag::GroupObj | Tag::Group => "group",
                    Tag::Mask => "mask",
                    Tag::Other => "other",
                };
                let id = e.id.map(|i| i.to_string()).unwrap_or_default();
                format!("{tag}:{id}:{}", perm_text(e.perm))
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

fn perm_text(p: u16) -> String {
    let mut s = String::new();
    s.push(if p & 4 != 0 { 'r' } else { '-' });
    s.push(if p & 2 != 0 { 'w' } else { '-' });
    s.push(if p & 1 != 0 { 'x' } else { '-' });
    s
}

fn parse_perm(p: &str) -> Result<u16, String> {
    let mut v = 0;
    for c in p.chars() {
        match c {
            'r' => v |= 4,
            'w' => v |= 2,
            'x' => v |= 1,
            '-' => {}
            _ => return Err(format!("bad ACL permission {p:?}")),
        }
    }
    Ok(v)
}

fn resolve_user(q: &str) -> Result<u32, String> {
    if let Ok(n) = q.parse() {
        return Ok(n);
    }
    match nix::unistd::User::from_name(q) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        _ => Err(format!("ACL names unknown user {q:?}")),
    }
}

fn resolve_group(q: &str) -> Result<u32, String> {
    if let Ok(n) = q.parse() {
        return Ok(n);
    }
    match nix::unistd::Group::from_name(q) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        _ => Err(format!("ACL names unknown group {q:?}")),
    }
}

impl Acl {
    /// The permissions of the mask entry, if any.
    pub fn mask(&self) -> Option<u16> {
        self.0.iter().find(|e| e.tag == Tag::Mask).map(|e| e.perm)
    }
}

/// If `name` is an ACL xattr, return its value in canonical form (parsed
/// and re-encoded), else the value unchanged.
pub fn canonical_xattr_value(name: &[u8], value: &[u8]) -> Vec<u8> {
    if name == ACL_XATTR_ACCESS || name == ACL_XATTR_DEFAULT {
        if let Ok(acl) = Acl::from_xattr(value) {
            return acl.to_xattr();
        }
    }
    value.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_roundtrip_and_text() {
        let acl = Acl(vec![
            Entry::new(Tag::Other, None, 5),
            Entry::new(Tag::UserObj, None, 7),
            Entry::new(Tag::User, Some(54321), 7),
            Entry::new(Tag::GroupObj, None, 5),
            Entry::new(Tag::Mask, None, 7),
        ]);
        let b = acl.to_xattr();
        assert_eq!(&b[..4], &[2, 0, 0, 0]);
        let back = Acl::from_xattr(&b).expect("parse");
        assert_eq!(back.to_xattr(), b);
        let t = Acl::from_text("user::rwx\nuser:54321:rwx\ngroup::r-x\nmask::rwx\nother::r-x\n")
            .expect("text");
        assert_eq!(t.to_xattr(), b);
        let t2 = Acl::from_text("u::rwx,u:54321:rwx,g::r-x,m::rwx,o::r-x").expect("short");
        assert_eq!(t2.to_xattr(), b);
        let t3 =
            Acl::from_text("user::rwx,user:nosuchuser:rwx:54321,group::r-x,mask::rwx,other::r-x")
                .expect("libarchive style");
        assert_eq!(t3.to_xattr(), b);
    }
}
