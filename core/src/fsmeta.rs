//! File metadata helpers: extended attributes and user/group names.
//!
//! xattrs are read and written through file descriptors wherever possible (no path, so no
//! race and no PATH_MAX); for entries that cannot be opened without side effects (symlinks,
//! fifos, devices) the path `/proc/self/fd/DIRFD/NAME` is used with the `l*xattr` calls,
//! which keeps the lookup anchored at an already-open directory. POSIX ACLs are the
//! `system.posix_acl_*` xattrs and travel with them. Name lookups are cached.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rustix::io::Errno;

pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

fn grow(mut f: impl FnMut(&mut [u8]) -> Result<usize, Errno>) -> Result<Vec<u8>, Errno> {
    let mut size = 4096;
    loop {
        let mut buf = vec![0u8; size];
        match f(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::RANGE) if size < (1 << 20) => size *= 16,
            Err(e) => return Err(e),
        }
    }
}

fn split_names(list: &[u8]) -> Vec<Vec<u8>> {
    list.split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| n.to_vec())
        .collect()
}

fn unsupported(e: Errno) -> bool {
    e == Errno::NOTSUP || e == Errno::OPNOTSUPP || e == Errno::PERM
}

/// xattrs of an open file or directory, sorted by name.
pub fn fd_xattrs(fd: BorrowedFd) -> Result<Xattrs, Errno> {
    let list = match grow(|b| rustix::fs::flistxattr(fd, b)) {
        Ok(l) => l,
        Err(e) if unsupported(e) => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in split_names(&list) {
        let n = std::ffi::OsStr::from_bytes(&name);
        match grow(|b| rustix::fs::fgetxattr(fd, n, b)) {
            Ok(v) => out.push((name, v)),
            Err(Errno::NODATA) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}

/// The `/proc/self/fd/N/NAME` path of an entry in an open directory.
pub fn proc_path(dir: BorrowedFd, name: &[u8]) -> PathBuf {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name);
    PathBuf::from(std::ffi::OsString::from(std::ffi::OsStr::from_bytes(&p)))
}

/// xattrs of an entry that must not be opened (symlink, fifo, device), not following it.
pub fn entry_xattrs(dir: BorrowedFd, name: &[u8]) -> Result<Xattrs, Errno> {
    let p = proc_path(dir, name);
    let list = match grow(|b| rustix::fs::llistxattr(&p, b)) {
        Ok(l) => l,
        Err(e) if unsupported(e) || e == Errno::NOENT => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in split_names(&list) {
        let n = std::ffi::OsStr::from_bytes(&name);
        match grow(|b| rustix::fs::lgetxattr(&p, n, b)) {
            Ok(v) => out.push((name, v)),
            Err(Errno::NODATA) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}

/// Set xattrs on an open file or directory.
pub fn set_fd_xattrs(fd: impl AsFd, xattrs: &Xattrs) -> Result<(), String> {
    for (k, v) in xattrs {
        rustix::fs::fsetxattr(
            fd.as_fd(),
            std::ffi::OsStr::from_bytes(k),
            v,
            rustix::fs::XattrFlags::empty(),
        )
        .map_err(|e| format!("cannot set xattr {}: {e}", crate::util::show(k)))?;
    }
    Ok(())
}

/// Set xattrs on an entry without following it.
pub fn set_entry_xattrs(dir: BorrowedFd, name: &[u8], xattrs: &Xattrs) -> Result<(), String> {
    let p = proc_path(dir, name);
    for (k, v) in xattrs {
        rustix::fs::lsetxattr(
            &p,
            std::ffi::OsStr::from_bytes(k),
            v,
            rustix::fs::XattrFlags::empty(),
        )
        .map_err(|e| format!("cannot set xattr {}: {e}", crate::util::show(k)))?;
    }
    Ok(())
}

/// Cached uid/gid <-> name lookups through NSS.
#[derive(Default)]
pub struct Names {
    users: HashMap<u32, Vec<u8>>,
    groups: HashMap<u32, Vec<u8>>,
    uids: HashMap<Vec<u8>, Option<u32>>,
    gids: HashMap<Vec<u8>, Option<u32>>,
}

impl Names {
    pub fn user(&mut self, uid: u32) -> Vec<u8> {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(uid.into())
                    .ok()
                    .flatten()
                    .map(|u| u.name.into_bytes())
                    .unwrap_or_default()
            })
            .clone()
    }

    pub fn group(&mut self, gid: u32) -> Vec<u8> {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                nix::unistd::Group::from_gid(gid.into())
                    .ok()
                    .flatten()
                    .map(|g| g.name.into_bytes())
                    .unwrap_or_default()
            })
            .clone()
    }

    /// The uid for a recorded owner: by name when the name exists here, else the number.
    pub fn uid_for(&mut self, name: &[u8], uid: u32) -> u32 {
        if name.is_empty() {
            return uid;
        }
        let found = *self.uids.entry(name.to_vec()).or_insert_with(|| {
            std::str::from_utf8(name)
                .ok()
                .and_then(|n| nix::unistd::User::from_name(n).ok().flatten())
                .map(|u| u.uid.as_raw())
        });
        found.unwrap_or(uid)
    }

    pub fn gid_for(&mut self, name: &[u8], gid: u32) -> u32 {
        if name.is_empty() {
            return gid;
        }
        let found = *self.gids.entry(name.to_vec()).or_insert_with(|| {
            std::str::from_utf8(name)
                .ok()
                .and_then(|n| nix::unistd::Group::from_name(n).ok().flatten())
                .map(|g| g.gid.as_raw())
        });
        found.unwrap_or(gid)
    }
}
