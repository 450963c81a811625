//! Check a POSIX pax tar archive against a directory tree, entry by entry.
//!
//! Design choice: the `tar` crate does the block-level parsing (ustar/GNU
//! headers, local pax headers, GNU long names, old-GNU sparse), and this
//! module interprets the pax records itself, because the crate applies only
//! `path`, `linkpath`, `size`, `uid` and `gid`: here `mtime` (with its
//! fraction, also negative), `uname`/`gname`, global (`g`) headers,
//! `SCHILY.xattr.*`, `LIBARCHIVE.xattr.*` (URL-encoded name, base64 value),
//! GNU tar's `SCHILY.acl.access`/`.default` text ACLs (converted to the
//! kernel's binary xattr so they compare with the tree's
//! `system.posix_acl_*`), and GNU pax sparse formats 0.0, 0.1 and 1.0
//! (`GNU.sparse.*`, expanded to logical bytes with holes as zeros) are all
//! honoured. Names are handled as raw bytes throughout.
//!
//! Pax records are parsed here too, from a raw pre-pass over the archive:
//! the crate's `PaxExtensions` splits records at newlines, which corrupts
//! any value containing one (binary xattrs, GNU tar's text ACLs, names with
//! a newline) and can make it silently drop `uid`/`gid`/`size` records.
//! Records are length-prefixed, and this parser honours the lengths.
//!
//! The tree is scanned once up front (dirfd-relative, so >`PATH_MAX` works);
//! each archive member is then compared as it is read, so only one member's
//! data is in memory at a time. Hardlinks are compared as structure: the
//! groups formed by the archive's hardlink members must equal the tree's
//! inode groups, exactly one member of each group must carry the data, and
//! every hardlink must name an earlier member.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::Path;

use base64::engine::{general_purpose, DecodePaddingMode, Engine};

use crate::acl::{self, Acl, Tag};
use crate::compare::{compare_xattrs, diff, CompareOpts, DiffKind, Difference};
use crate::fsutil::{self, display_bytes, FileKind, Node, Xattrs};

/// Pax records in archive order: (keyword, value), both raw bytes.
pub type PaxRecords = Vec<(Vec<u8>, Vec<u8>)>;
type Pax = PaxRecords;

fn pax_get<'a>(local: &'a Pax, global: &'a Pax, key: &[u8]) -> Option<&'a [u8]> {
    local
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .or_else(|| global.iter().rev().find(|(k, _)| k == key))
        .map(|(_, v)| v.as_slice())
}

/// Parse a pax extended header's data: `"<len> <key>=<value>\n"` records,
/// where `<len>` counts the whole record, so values may hold any byte.
pub fn parse_pax_records(data: &[u8]) -> Result<PaxRecords, String> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        if data[pos..].iter().all(|b| *b == 0) {
            break; // NUL padding
        }
        let sp = data[pos..]
            .iter()
            .position(|b| *b == b' ')
            .ok_or_else(|| format!("pax record at {pos}: no length"))?;
        let len: usize = std::str::from_utf8(&data[pos..pos + sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("pax record at {pos}: bad length"))?;
        if len <= sp + 1 || pos + len > data.len() {
            return Err(format!("pax record at {pos}: length {len} out of range"));
        }
        let rec = &data[pos + sp + 1..pos + len];
        let Some((&b'\n', kv)) = rec.split_last() else {
            return Err(format!("pax record at {pos}: not newline-terminated"));
        };
        let eq = kv
            .iter()
            .position(|b| *b == b'=')
            .ok_or_else(|| format!("pax record at {pos}: no '='"))?;
        out.push((kv[..eq].to_vec(), kv[eq + 1..].to_vec()));
        pos += len;
    }
    Ok(out)
}

/// Pax records (local, global in force) for each member, keyed by the
/// position of the member's own header in the archive.
type PaxByPosition = HashMap<u64, (Pax, Pax)>;

/// Raw pass: collect and correctly parse every `x`/`g` header.
fn collect_pax(tar_bytes: &[u8], out: &mut Vec<Difference>) -> PaxByPosition {
    let mut map = PaxByPosition::new();
    let mut archive = tar::Archive::new(tar_bytes);
    let entries = match archive.entries() {
        Ok(e) => e.raw(true),
        Err(_) => return map, // reported by the main pass
    };
    let mut local: Pax = Vec::new();
    let mut global: Pax = Vec::new();
    for entry in entries {
        let Ok(mut entry) = entry else { break };
        let t = entry.header().entry_type();
        let pos = entry.raw_header_position();
        if t.is_pax_local_extensions() || t.is_pax_global_extensions() {
            let mut data = Vec::new();
            if let Err(e) = entry.read_to_end(&mut data) {
                out.push(diff(
                    b"",
                    DiffKind::Tar(format!("cannot read pax header: {e}")),
                ));
                break;
            }
            match parse_pax_records(&data) {
                Ok(recs) if t.is_pax_global_extensions() => global.extend(recs),
                Ok(recs) => local.extend(recs),
                Err(e) => out.push(diff(
                    b"",
                    DiffKind::Tar(format!("malformed pax header at byte {pos}: {e}")),
                )),
            }
            continue;
        }
        if t.is_gnu_longname() || t.is_gnu_longlink() {
            continue;
        }
        map.insert(pos, (std::mem::take(&mut local), global.clone()));
    }
    map
}

/// Normalise an archive path to tree-relative form: no leading `/` or
/// `./`, no trailing `/`, `.` → `b""`. `..` components are rejected.
pub fn normalize_tar_path(p: &[u8]) -> Result<Vec<u8>, String> {
    let comps = fsutil::components(p);
    if comps.contains(&&b".."[..]) {
        return Err(format!("unsafe path {:?} (contains ..)", display_bytes(p)));
    }
    Ok(comps.join(&b'/'))
}

/// Parse a pax time (`[-]sec[.frac]`) into seconds and nanoseconds.
pub fn parse_pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let secs: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    if !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let ns: u32 = digits.parse().ok()?;
    if !neg {
        Some((secs, ns))
    } else if ns == 0 {
        Some((-secs, 0))
    } else {
        Some((-secs - 1, 1_000_000_000 - ns))
    }
}

fn url_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let Ok(b) = u8::from_str_radix(&String::from_utf8_lossy(&s[i + 1..i + 3]), 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

fn b64_decode(v: &[u8]) -> Result<Vec<u8>, String> {
    let engine = general_purpose::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        general_purpose::GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let cleaned: Vec<u8> = v
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    engine.decode(cleaned).map_err(|e| e.to_string())
}

fn is_minimal_access_acl(a: &Acl) -> bool {
    a.0.iter()
        .all(|e| matches!(e.tag, Tag::UserObj | Tag::GroupObj | Tag::Other))
}

/// The xattr set a member carries, from every encoding the archive uses.
fn member_xattrs(local: &Pax, global: &Pax, path: &[u8], out: &mut Vec<Difference>) -> Xattrs {
    let mut x = Xattrs::new();
    for (k, v) in global.iter().chain(local.iter()) {
        if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
            x.insert(name.to_vec(), v.clone());
        } else if let Some(name) = k.strip_prefix(b"LIBARCHIVE.xattr.") {
            match b64_decode(v) {
                Ok(val) => {
                    x.insert(url_decode(name), val);
                }
                Err(e) => out.push(diff(
                    path,
                    DiffKind::Tar(format!("bad base64 in {}: {e}", display_bytes(k))),
                )),
            }
        }
    }
    for (key, xname) in [
        (&b"SCHILY.acl.access"[..], acl::ACL_XATTR_ACCESS),
        (b"SCHILY.acl.default", acl::ACL_XATTR_DEFAULT),
    ] {
        let Some(text) = pax_get(local, global, key) else {
            continue;
        };
        let parsed = std::str::from_utf8(text)
            .map_err(|e| e.to_string())
            .and_then(Acl::from_text);
        match parsed {
            Ok(a) if xname == acl::ACL_XATTR_ACCESS && is_minimal_access_acl(&a) => {}
            Ok(a) if a.0.is_empty() => {}
            Ok(a) => {
                let bin = a.to_xattr();
                if let Some(existing) = x.get(xname) {
                    if acl::canonical_xattr_value(xname, existing) != bin {
                        out.push(diff(
                            path,
                            DiffKind::Tar(format!(
                                "{} [{a}] disagrees with SCHILY.xattr.{}",
                                display_bytes(key),
                                display_bytes(xname)
                            )),
                        ));
                    }
                }
                x.insert(xname.to_vec(), bin);
            }
            Err(e) => out.push(diff(
                path,
                DiffKind::Tar(format!("cannot parse {}: {e}", display_bytes(key))),
            )),
        }
    }
    x
}

fn parse_u64(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// Expand GNU pax sparse data (formats 0.0, 0.1, 1.0) into logical bytes.
/// Returns `Ok(None)` when the member is not pax-sparse.
fn expand_pax_sparse(local: &Pax, global: &Pax, stored: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let major = pax_get(local, global, b"GNU.sparse.major").and_then(parse_u64);
    let minor = pax_get(local, global, b"GNU.sparse.minor").and_then(parse_u64);
    let realsize = pax_get(local, global, b"GNU.sparse.realsize")
        .or_else(|| pax_get(local, global, b"GNU.sparse.size"))
        .and_then(parse_u64);
    let mut map: Vec<(u64, u64)> = Vec::new();
    let mut data_start = 0usize;
    if major == Some(1) && minor == Some(0) {
        // Map at the start of the data: decimal numbers, one per line,
        // padded to a 512-byte boundary.
        let mut pos = 0usize;
        let mut next = || -> Result<u64, String> {
            let end = stored[pos..]
                .iter()
                .position(|b| *b == b'\n')
                .ok_or("truncated GNU sparse 1.0 map")?;
            let n = parse_u64(&stored[pos..pos + end]).ok_or("bad number in GNU sparse 1.0 map")?;
            pos += end + 1;
            Ok(n)
        };
        let count = next()?;
        for _ in 0..count {
            let off = next()?;
            let len = next()?;
            map.push((off, len));
        }
        data_start = pos.div_ceil(512) * 512;
    } else if let Some(m) = pax_get(local, global, b"GNU.sparse.map") {
        let nums: Result<Vec<u64>, String> = m
            .split(|b| *b == b',')
            .filter(|s| !s.is_empty())
            .map(|s| parse_u64(s).ok_or_else(|| "bad GNU.sparse.map".to_string()))
            .collect();
        let nums = nums?;
        if nums.len() % 2 != 0 {
            return Err("odd number of values in GNU.sparse.map".into());
        }
        map = nums.chunks(2).map(|c| (c[0], c[1])).collect();
    } else if local.iter().any(|(k, _)| k == b"GNU.sparse.offset") {
        let mut off = None;
        for (k, v) in local {
            if k == b"GNU.sparse.offset" {
                off = parse_u64(v);
            } else if k == b"GNU.sparse.numbytes" {
                let o = off.take().ok_or("GNU.sparse.numbytes without offset")?;
                map.push((o, parse_u64(v).ok_or("bad GNU.sparse.numbytes")?));
            }
        }
    } else {
        return Ok(None);
    }
    let realsize = realsize.ok_or("pax sparse member without GNU.sparse.realsize/size")?;
    let mut logical = vec![0u8; usize::try_from(realsize).map_err(|e| e.to_string())?];
    let mut pos = data_start;
    for (off, len) in map {
        let (off, len) = (off as usize, len as usize);
        if off.checked_add(len).is_none_or(|e| e > logical.len()) {
            return Err(format!(
                "sparse region {off}+{len} beyond real size {realsize}"
            ));
        }
        if pos + len > stored.len() {
            return Err("sparse data shorter than its map".into());
        }
        logical[off..off + len].copy_from_slice(&stored[pos..pos + len]);
        pos += len;
    }
    Ok(Some(logical))
}

/// Union-find over archive paths, for hardlink groups.
#[derive(Default)]
struct Groups {
    parent: HashMap<Vec<u8>, Vec<u8>>,
}

impl Groups {
    fn find(&mut self, p: &[u8]) -> Vec<u8> {
        let mut cur = p.to_vec();
        while let Some(next) = self.parent.get(&cur) {
            if *next == cur {
                break;
            }
            cur = next.clone();
        }
        cur
    }
    fn union(&mut self, a: &[u8], b: &[u8]) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent.insert(ra, rb);
        }
    }
}

struct NameCache {
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
}

impl NameCache {
    fn user(&mut self, uid: u32) -> Option<String> {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            })
            .clone()
    }
    fn group(&mut self, gid: u32) -> Option<String> {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
                    .ok()
                    .flatten()
                    .map(|g| g.name)
            })
            .clone()
    }
}

fn non_empty_name(v: Option<&[u8]>) -> Option<String> {
    v.filter(|b| !b.is_empty())
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

/// Compare every member of the pax tar `tar_bytes` with the tree at
/// `tree` (see the module docs). Uses `opts.ignore_ownership`,
/// `ignore_root_metadata`, `ignore_xattr_prefixes`, `check_owner_names` and
/// `require_root_entry`; `opts.sparse` is not used (content is compared as
/// logical bytes).
pub fn compare_tar_with_tree(tar_bytes: &[u8], tree: &Path, opts: &CompareOpts) -> Vec<Difference> {
    let mut out = Vec::new();
    let scan = match fsutil::scan_tree(tree, true) {
        Ok(s) => s,
        Err(e) => {
            out.push(diff(b"", DiffKind::Error(format!("tree: {e}"))));
            return out;
        }
    };
    for (p, e) in &scan.errors {
        out.push(diff(p, DiffKind::Error(format!("tree: {e}"))));
    }
    let mut names = NameCache {
        users: HashMap::new(),
        groups: HashMap::new(),
    };
    let mut seen: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut groups = Groups::default();
    // Members that carry data (i.e. are not hardlink members).
    let mut data_members: BTreeSet<Vec<u8>> = BTreeSet::new();
    let pax_by_pos = collect_pax(tar_bytes, &mut out);

    let mut archive = tar::Archive::new(tar_bytes);
    let entries = match archive.entries() {
        Ok(e) => e,
        Err(e) => {
            out.push(diff(
                b"",
                DiffKind::Tar(format!("cannot read archive: {e}")),
            ));
            return out;
        }
    };
    for (index, entry) in entries.enumerate() {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => {
                out.push(diff(
                    b"",
                    DiffKind::Tar(format!("cannot read member #{index}: {e}")),
                ));
                break;
            }
        };
        let etype = entry.header().entry_type();
        if etype == tar::EntryType::XGlobalHeader {
            continue; // applied via collect_pax
        }
        let (local, global) = pax_by_pos
            .get(&entry.raw_header_position())
            .cloned()
            .unwrap_or_default();
        if let Some(size) = pax_get(&local, &global, b"size").and_then(parse_u64) {
            if size != entry.size() {
                out.push(diff(
                    &entry.path_bytes(),
                    DiffKind::Tar(format!(
                        "pax size {size} but the member was read with size {}",
                        entry.size()
                    )),
                ));
            }
        }
        let raw_path = pax_get(&local, &global, b"GNU.sparse.name")
            .or_else(|| pax_get(&local, &global, b"path"))
            .map(|v| v.to_vec())
            .unwrap_or_else(|| entry.path_bytes().into_owned());
        let path = match normalize_tar_path(&raw_path) {
            Ok(p) => p,
            Err(e) => {
                out.push(diff(&raw_path, DiffKind::Tar(e)));
                continue;
            }
        };
        if !seen.insert(path.clone()) {
            out.push(diff(&path, DiffKind::Tar("duplicate member".into())));
            continue;
        }
        let kind = match etype {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                Some(FileKind::File)
            }
            tar::EntryType::Directory => Some(FileKind::Dir),
            tar::EntryType::Symlink => Some(FileKind::Symlink),
            tar::EntryType::Char => Some(FileKind::CharDev),
            tar::EntryType::Block => Some(FileKind::BlockDev),
            tar::EntryType::Fifo => Some(FileKind::Fifo),
            tar::EntryType::Link => None,
            other => {
                out.push(diff(
                    &path,
                    DiffKind::Tar(format!("unsupported member type {other:?}")),
                ));
                continue;
            }
        };
        let Some(node) = scan.nodes.get(&path) else {
            out.push(diff(&path, DiffKind::Extra));
            continue;
        };
        groups.find(&path);

        let Some(kind) = kind else {
            // A hardlink member: structure only.
            let target = link_target(&entry, &local, &global);
            match normalize_tar_path(&target) {
                Ok(t) if t.is_empty() => out.push(diff(
                    &path,
                    DiffKind::Tar("hardlink member with empty target".into()),
                )),
                Ok(t) => {
                    if !seen.contains(&t) || t == path {
                        out.push(diff(
                            &path,
                            DiffKind::Tar(format!(
                                "hardlink to {:?}, which is not an earlier member",
                                display_bytes(&t)
                            )),
                        ));
                    }
                    if node.meta.kind == FileKind::Dir {
                        out.push(diff(
                            &path,
                            DiffKind::Type {
                                expected: FileKind::Dir,
                                actual: FileKind::File,
                            },
                        ));
                    }
                    groups.union(&path, &t);
                }
                Err(e) => out.push(diff(&path, DiffKind::Tar(e))),
            }
            continue;
        };
        if kind != FileKind::Dir {
            data_members.insert(path.clone());
        }
        if kind != node.meta.kind {
            out.push(diff(
                &path,
                DiffKind::Type {
                    expected: node.meta.kind,
                    actual: kind,
                },
            ));
            continue;
        }
        compare_member(
            &mut entry, &path, node, &local, &global, tree, opts, &mut names, &mut out,
        );
    }

    // Nothing missing.
    for p in scan.nodes.keys() {
        if p.is_empty() && !opts.require_root_entry {
            continue;
        }
        if !seen.contains(p) {
            out.push(diff(p, DiffKind::Missing));
        }
    }

    // Hardlink structure.
    let tree_groups = scan.link_groups();
    let mut tar_groups: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
    let members: Vec<Vec<u8>> = seen
        .iter()
        .filter(|p| {
            scan.nodes
                .get(*p)
                .is_some_and(|n| n.meta.kind != FileKind::Dir)
        })
        .cloned()
        .collect();
    for p in &members {
        let r = groups.find(p);
        tar_groups.entry(r).or_default().push(p.clone());
    }
    let mut tar_group_of: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
    for g in tar_groups.into_values() {
        let mut g = g;
        g.sort();
        let carriers = g.iter().filter(|p| data_members.contains(*p)).count();
        if carriers != 1 {
            out.push(diff(
                &g[0],
                DiffKind::Tar(format!(
                    "hardlink group {:?} has {carriers} data-carrying members (want exactly 1)",
                    g.iter().map(|p| display_bytes(p)).collect::<Vec<_>>()
                )),
            ));
        }
        for p in &g {
            tar_group_of.insert(p.clone(), g.clone());
        }
    }
    let mut reported = BTreeSet::new();
    for p in &members {
        let exp: Vec<Vec<u8>> = tree_groups
            .get(p)
            .map(|g| g.iter().filter(|q| seen.contains(*q)).cloned().collect())
            .unwrap_or_default();
        let act = tar_group_of.get(p).cloned().unwrap_or_default();
        if exp != act && reported.insert((exp.clone(), act.clone())) {
            out.push(diff(
                p,
                DiffKind::Hardlink {
                    expected: exp,
                    actual: act,
                },
            ));
        }
    }
    out
}

fn link_target<R: Read>(entry: &tar::Entry<'_, R>, local: &Pax, global: &Pax) -> Vec<u8> {
    pax_get(local, global, b"linkpath")
        .map(|v| v.to_vec())
        .or_else(|| entry.link_name_bytes().map(|t| t.into_owned()))
        .unwrap_or_default()
}

/// [`compare_tar_with_tree`], panicking with the full list if anything
/// differs.
#[track_caller]
pub fn assert_tar_matches_tree(tar_bytes: &[u8], tree: &Path, opts: &CompareOpts) {
    let d = compare_tar_with_tree(tar_bytes, tree, opts);
    crate::compare::assert_no_differences(&d, &format!("tar vs {}", tree.display()));
}

#[allow(clippy::too_many_arguments)]
fn compare_member<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    path: &[u8],
    node: &Node,
    local: &Pax,
    global: &Pax,
    tree: &Path,
    opts: &CompareOpts,
    names: &mut NameCache,
    out: &mut Vec<Difference>,
) {
    let m = &node.meta;
    let h = entry.header().clone();
    let check_meta = !(path.is_empty() && opts.ignore_root_metadata);
    if check_meta {
        let xattrs = member_xattrs(local, global, path, out);
        // With an extended access ACL, restoring it sets the group bits
        // from the ACL mask (libarchive stores the group entry's bits in
        // the mode instead), so compare the mode a restore would produce.
        let acl_mask = xattrs
            .get(acl::ACL_XATTR_ACCESS)
            .and_then(|v| Acl::from_xattr(v).ok())
            .and_then(|a| a.mask());
        match h.mode() {
            Ok(mode) => {
                let mut mode = mode & 0o7777;
                if let Some(mask) = acl_mask {
                    mode = (mode & !0o070) | (u32::from(mask & 7) << 3);
                }
                if mode != m.mode {
                    out.push(diff(
                        path,
                        DiffKind::Mode {
                            expected: m.mode,
                            actual: mode,
                        },
                    ))
                }
            }
            Err(e) => out.push(diff(path, DiffKind::Tar(format!("bad mode field: {e}")))),
        }
        if !opts.ignore_ownership {
            let uid = pax_get(local, global, b"uid")
                .and_then(parse_u64)
                .or_else(|| h.uid().ok())
                .map(|u| u as u32)
                .unwrap_or(u32::MAX);
            let gid = pax_get(local, global, b"gid")
                .and_then(parse_u64)
                .or_else(|| h.gid().ok())
                .map(|g| g as u32)
                .unwrap_or(u32::MAX);
            if (uid, gid) != (m.uid, m.gid) {
                out.push(diff(
                    path,
                    DiffKind::Owner {
                        expected: (m.uid, m.gid),
                        actual: (uid, gid),
                    },
                ));
            }
            if opts.check_owner_names {
                let uname =
                    non_empty_name(pax_get(local, global, b"uname").or_else(|| h.username_bytes()));
                let gname = non_empty_name(
                    pax_get(local, global, b"gname").or_else(|| h.groupname_bytes()),
                );
                let (eu, eg) = (names.user(m.uid), names.group(m.gid));
                if uname != eu {
                    out.push(diff(
                        path,
                        DiffKind::OwnerName {
                            what: "uname",
                            expected: eu,
                            actual: uname,
                        },
                    ));
                }
                if gname != eg {
                    out.push(diff(
                        path,
                        DiffKind::OwnerName {
                            what: "gname",
                            expected: eg,
                            actual: gname,
                        },
                    ));
                }
            }
        }
        let mtime = match pax_get(local, global, b"mtime") {
            Some(v) => parse_pax_time(v),
            None => h.mtime().ok().map(|s| (s as i64, 0)),
        };
        match mtime {
            Some(t) if t != m.mtime => out.push(diff(
                path,
                DiffKind::Mtime {
                    expected: m.mtime,
                    actual: t,
                },
            )),
            Some(_) => {}
            None => out.push(diff(path, DiffKind::Tar("unreadable mtime".into()))),
        }
        match &node.xattrs {
            Ok(tx) => compare_xattrs(path, tx, &xattrs, opts, out),
            Err(e) => out.push(diff(path, DiffKind::Error(format!("tree xattrs: {e}")))),
        }
    }
    match m.kind {
        FileKind::File => compare_file_data(entry, path, node, local, global, tree, out),
        FileKind::Symlink => {
            let t = link_target(entry, local, global);
            let expected = node.target.clone().unwrap_or_default();
            if t != expected {
                out.push(diff(
                    path,
                    DiffKind::SymlinkTarget {
                        expected,
                        actual: t,
                    },
                ));
            }
        }
        FileKind::CharDev | FileKind::BlockDev => {
            let maj = h.device_major().ok().flatten();
            let min = h.device_minor().ok().flatten();
            match (maj, min) {
                (Some(a), Some(b)) if (a, b) == m.rdev => {}
                (a, b) => out.push(diff(
                    path,
                    DiffKind::Device {
                        expected: m.rdev,
                        actual: (a.unwrap_or(u32::MAX), b.unwrap_or(u32::MAX)),
                    },
                )),
            }
        }
        _ => {}
    }
}

fn compare_file_data<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    path: &[u8],
    node: &Node,
    local: &Pax,
    global: &Pax,
    tree: &Path,
    out: &mut Vec<Difference>,
) {
    let mut stored = Vec::with_capacity(entry.size().min(1 << 30) as usize);
    if let Err(e) = entry.read_to_end(&mut stored) {
        out.push(diff(path, DiffKind::Tar(format!("cannot read data: {e}"))));
        return;
    }
    let logical = match expand_pax_sparse(local, global, &stored) {
        Ok(Some(l)) => l,
        Ok(None) => stored,
        Err(e) => {
            out.push(diff(
                path,
                DiffKind::Tar(format!("bad pax sparse data: {e}")),
            ));
            return;
        }
    };
    if logical.len() as u64 != node.meta.size {
        out.push(diff(
            path,
            DiffKind::Size {
                expected: node.meta.size,
                actual: logical.len() as u64,
            },
        ));
    }
    match &node.content {
        Some(Ok(c)) if *blake3::hash(&logical).as_bytes() != c.hash => {
            let offset = fsutil::open_file_rel(tree, path)
                .and_then(|f| fsutil::first_difference(f, logical.as_slice()))
                .ok()
                .flatten();
            out.push(diff(path, DiffKind::Content { offset }));
        }
        Some(Ok(_)) => {}
        Some(Err(e)) => out.push(diff(path, DiffKind::Error(format!("tree content: {e}")))),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_pax_time(b"12"), Some((12, 0)));
        assert_eq!(parse_pax_time(b"1.000000001"), Some((1, 1)));
        assert_eq!(parse_pax_time(b"-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_pax_time(b"-3"), Some((-3, 0)));
        assert_eq!(parse_pax_time(b"7.1234567891"), Some((7, 123_456_789)));
        assert_eq!(parse_pax_time(b"x"), None);
    }

    #[test]
    fn paths() {
        assert_eq!(normalize_tar_path(b"./a/b/").unwrap(), b"a/b");
        assert_eq!(normalize_tar_path(b"./").unwrap(), b"");
        assert_eq!(normalize_tar_path(b"/x//y").unwrap(), b"x/y");
        assert!(normalize_tar_path(b"a/../b").is_err());
    }

    #[test]
    fn pax_records_with_newlines_and_nuls() {
        let mut data = Vec::new();
        for (k, v) in [
            (&b"path"[..], &b"a\nb"[..]),
            (b"SCHILY.xattr.user.x", b"\n\0=\n"),
        ] {
            let body_len = k.len() + v.len() + 3; // ' ', '=', '\n'
            let mut len = body_len + 1;
            while len.to_string().len() + body_len != len {
                len += 1;
            }
            data.extend(format!("{len} ").into_bytes());
            data.extend_from_slice(k);
            data.push(b'=');
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        let recs = parse_pax_records(&data).unwrap();
        assert_eq!(recs[0], (b"path".to_vec(), b"a\nb".to_vec()));
        assert_eq!(
            recs[1],
            (b"SCHILY.xattr.user.x".to_vec(), b"\n\0=\n".to_vec())
        );
        assert!(parse_pax_records(b"99 path=x\n").is_err());
    }

    #[test]
    fn url_and_base64() {
        assert_eq!(url_decode(b"user.a%3Db"), b"user.a=b");
        assert_eq!(url_decode(b"100%"), b"100%");
        assert_eq!(b64_decode(b"AP8B").unwrap(), vec![0, 255, 1]);
        assert_eq!(b64_decode(b"AP8").unwrap(), vec![0, 255]);
        assert_eq!(b64_decode(b"AP8=").unwrap(), vec![0, 255]);
    }
}
