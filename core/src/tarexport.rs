//! Export a snapshot (or part of it) as a POSIX pax tar stream.
//!
//! tar is cairn's interchange format: `cairn restore SNAPSHOT --tar -` streams out what a
//! restore would write, readable by GNU tar, bsdtar and Python. Every entry gets a pax
//! extended header carrying what ustar cannot: the full name as bytes (long and
//! non-UTF-8 names), mtime to the nanosecond, uid/gid and user/group names, link targets,
//! and every xattr as `SCHILY.xattr.NAME` (POSIX ACLs included, as their raw xattrs).
//! Hard links after the first of a group become tar hard-link entries. Sparse files are
//! written with their logical content (holes as zeros). File content is streamed, every
//! blob authenticated first; a file whose data fails aborts the stream with an error.

use std::collections::HashMap;
use std::io::Write;

use tar::{EntryType, Header};

use crate::repo::{RepoError, Repository};
use crate::restore::FileStream;
use crate::tree::{Kind, Node};
use crate::walk::{self, Selection, Visitor};

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct TarStats {
    pub entries: u64,
    pub bytes: u64,
    pub errors: u64,
}

/// Write the tree `root` as a pax tar to `out`.
pub fn export<W: Write>(
    repo: &Repository,
    root: &[u8; 32],
    sel: &Selection,
    out: W,
) -> Result<TarStats, RepoError> {
    let mut t = TarWriter {
        repo,
        b: tar::Builder::new(out),
        links: HashMap::new(),
        stats: TarStats::default(),
    };
    walk::walk(repo, root, sel, &mut t)?;
    t.b.finish().map_err(|e| RepoError::Io {
        what: "cannot finish the tar stream".into(),
        err: e,
    })?;
    Ok(t.stats)
}

struct TarWriter<'a, W: Write> {
    repo: &'a Repository,
    b: tar::Builder<W>,
    /// Hard-link group -> archive path of its first member.
    links: HashMap<u64, Vec<u8>>,
    stats: TarStats,
}

fn tar_err(e: std::io::Error) -> RepoError {
    RepoError::Io {
        what: "cannot write the tar stream".into(),
        err: e,
    }
}

impl<W: Write> TarWriter<'_, W> {
    fn write(&mut self, path: &[u8], n: &Node, dir: bool) -> Result<(), RepoError> {
        // Archive names are relative: "etc/ssh/sshd_config".
        let mut name = path.strip_prefix(b"/").unwrap_or(path).to_vec();
        if dir {
            name.push(b'/');
        }
        let mut h = Header::new_ustar();
        let mut link: Option<Vec<u8>> = None;
        let mut size = 0u64;
        let (etype, content) = match &n.kind {
            Kind::Dir { .. } => (EntryType::Directory, None),
            Kind::File(f) => {
                if f.link_group != 0 {
                    if let Some(first) = self.links.get(&f.link_group) {
                        link = Some(first.clone());
                    } else {
                        self.links.insert(f.link_group, name.clone());
                    }
                }
                if link.is_some() {
                    (EntryType::Link, None)
                } else {
                    size = f.size;
                    (EntryType::Regular, Some(f))
                }
            }
            Kind::Symlink { target } => {
                link = Some(target.clone());
                (EntryType::Symlink, None)
            }
            Kind::Fifo => (EntryType::Fifo, None),
            Kind::CharDev { major, minor } => {
                h.set_device_major(*major).map_err(tar_err)?;
                h.set_device_minor(*minor).map_err(tar_err)?;
                (EntryType::Char, None)
            }
            Kind::BlockDev { major, minor } => {
                h.set_device_major(*major).map_err(tar_err)?;
                h.set_device_minor(*minor).map_err(tar_err)?;
                (EntryType::Block, None)
            }
        };
        // pax records: the authoritative values for everything ustar truncates.
        let mtime = crate::util::decimal_time(n.mtime, n.mtime_nsec);
        let (uid, gid) = (n.uid.to_string(), n.gid.to_string());
        let size_s = size.to_string();
        let mut recs: Vec<(String, Vec<u8>)> = vec![
            ("path".into(), name.clone()),
            ("mtime".into(), mtime.into_bytes()),
            ("uid".into(), uid.into_bytes()),
            ("gid".into(), gid.into_bytes()),
            ("size".into(), size_s.into_bytes()),
        ];
        if !n.user.is_empty() {
            recs.push(("uname".into(), n.user.clone()));
        }
        if !n.group.is_empty() {
            recs.push(("gname".into(), n.group.clone()));
        }
        if let Some(l) = &link {
            recs.push(("linkpath".into(), l.clone()));
        }
        for (k, v) in &n.xattrs {
            match std::str::from_utf8(k) {
                Ok(k) if !k.contains('=') => recs.push((format!("SCHILY.xattr.{k}"), v.clone())),
                _ => self.stats.errors += 1, // a name pax cannot carry
            }
        }
        self.b
            .append_pax_extensions(recs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .map_err(tar_err)?;
        {
            let u = h.as_ustar_mut().expect("ustar header");
            let short = &name[..name.len().min(99)];
            u.name = [0; 100];
            u.name[..short.len()].copy_from_slice(short);
            if let Some(l) = &link {
                let s = &l[..l.len().min(99)];
                u.linkname = [0; 100];
                u.linkname[..s.len()].copy_from_slice(s);
            }
        }
        h.set_entry_type(etype);
        h.set_mode(n.mode);
        h.set_uid(n.uid as u64);
        h.set_gid(n.gid as u64);
        h.set_mtime(n.mtime.max(0) as u64);
        let _ = h.set_username(std::str::from_utf8(&n.user[..n.user.len().min(31)]).unwrap_or(""));
        let _ =
            h.set_groupname(std::str::from_utf8(&n.group[..n.group.len().min(31)]).unwrap_or(""));
        // Sizes over 8 GiB use ustar's binary size form (and the pax record above).
        h.set_size(size);
        h.set_cksum();
        match content {
            Some(f) => self
                .b
                .append(&h, FileStream::new(self.repo, f))
                .map_err(|e| {
                    if e.kind() == std::io::ErrorKind::InvalidData {
                        RepoError::Corrupt(format!("{}: {e}", crate::util::show(path)))
                    } else {
                        tar_err(e)
                    }
                })?,
            None => self.b.append(&h, std::io::empty()).map_err(tar_err)?,
        }
        self.stats.entries += 1;
        self.stats.bytes += size;
        Ok(())
    }
}

impl<W: Write> Visitor for TarWriter<'_, W> {
    fn enter_dir(&mut self, path: &[u8], node: &Node) -> Result<(), RepoError> {
        self.write(path, node, true)
    }
    fn leave_dir(&mut self, _path: &[u8], _node: &Node) -> Result<(), RepoError> {
        Ok(())
    }
    fn entry(&mut self, path: &[u8], node: &Node) -> Result<(), RepoError> {
        self.write(path, node, false)
    }
    fn tree_error(&mut self, _path: &[u8], error: &RepoError) -> Result<(), RepoError> {
        Err(RepoError::Corrupt(error.to_string()))
    }
}
