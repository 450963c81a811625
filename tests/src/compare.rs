//! Exact comparison of two directory trees, for "restore is faithful"
//! assertions.
//!
//! Design choice: each tree is first scanned in full (dirfd-relative, so
//! paths beyond `PATH_MAX` work; nothing is followed) into a map keyed by
//! the relative path as raw bytes. Regular files are summarised by a BLAKE3
//! hash of their logical bytes plus their `SEEK_DATA`/`SEEK_HOLE` map; only
//! when two hashes differ are both files reopened to report the first
//! differing offset. Hardlinks are compared as structure — the set of paths
//! sharing each inode — never as inode numbers. Every difference found is
//! returned (not just the first), each naming the path and the property.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use crate::acl;
use crate::fsutil::{self, display_bytes, display_path, FileKind, Node, Scan};

/// How the data/hole maps of regular files are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SparseCheck {
    /// Don't compare sparseness at all.
    Ignore,
    /// The `SEEK_DATA`/`SEEK_HOLE` maps must be identical.
    Exact,
    /// Round every data region outward to this granularity (bytes) and
    /// merge neighbours before comparing — for filesystems that allocate in
    /// larger units than the one the expected tree lives on.
    Granularity(u64),
}

/// What to compare and what to let pass.
#[derive(Debug, Clone)]
pub struct CompareOpts {
    /// Skip uid/gid (and, for tar, uname/gname) — for unprivileged runs.
    pub ignore_ownership: bool,
    /// Skip the root directory's own mode, owner, mtime and xattrs.
    pub ignore_root_metadata: bool,
    /// Sparse-map comparison (trees only; tar content is always compared
    /// as logical bytes).
    pub sparse: SparseCheck,
    /// xattr names starting with any of these are ignored on both sides.
    /// Default: `security.selinux` (labels come from policy, not backups).
    pub ignore_xattr_prefixes: Vec<Vec<u8>>,
    /// Tar only: check that `uname`/`gname` name the tree's owner when that
    /// uid/gid has a name on this system (and are absent/empty otherwise).
    pub check_owner_names: bool,
    /// Tar only: require an entry for the root directory (`.` / `./`).
    pub require_root_entry: bool,
}

impl Default for CompareOpts {
    fn default() -> Self {
        CompareOpts {
            ignore_ownership: false,
            ignore_root_metadata: false,
            sparse: SparseCheck::Exact,
            ignore_xattr_prefixes: vec![b"security.selinux".to_vec()],
            check_owner_names: true,
            require_root_entry: false,
        }
    }
}

impl CompareOpts {
    /// Defaults, with ownership ignored unless we run as root.
    pub fn for_current_user() -> Self {
        CompareOpts {
            ignore_ownership: !fsutil::is_root(),
            ..Default::default()
        }
    }

    pub(crate) fn xattr_ignored(&self, name: &[u8]) -> bool {
        self.ignore_xattr_prefixes
            .iter()
            .any(|p| name.starts_with(p))
    }
}

/// One property of one path that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// Relative path, raw bytes (`b""` is the root).
    pub path: Vec<u8>,
    pub kind: DiffKind,
}

/// What differs. "expected" is the reference tree (or, for tar checks, the
/// tree on disk); "actual" is the restored tree (or the tar entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiffKind {
    /// Present in expected, absent in actual.
    Missing,
    /// Present in actual, absent in expected.
    Extra,
    Type {
        expected: FileKind,
        actual: FileKind,
    },
    Size {
        expected: u64,
        actual: u64,
    },
    /// Contents differ; `offset` is the first differing byte if known.
    Content {
        offset: Option<u64>,
    },
    /// Permission bits (`0o7777`).
    Mode {
        expected: u32,
        actual: u32,
    },
    /// `(uid, gid)`.
    Owner {
        expected: (u32, u32),
        actual: (u32, u32),
    },
    /// Tar only: `uname`/`gname`; `what` is `"uname"` or `"gname"`.
    OwnerName {
        what: &'static str,
        expected: Option<String>,
        actual: Option<String>,
    },
    /// `(seconds, nanoseconds)`.
    Mtime {
        expected: (i64, u32),
        actual: (i64, u32),
    },
    SymlinkTarget {
        expected: Vec<u8>,
        actual: Vec<u8>,
    },
    /// `(major, minor)`.
    Device {
        expected: (u32, u32),
        actual: (u32, u32),
    },
    XattrMissing {
        name: Vec<u8>,
    },
    XattrExtra {
        name: Vec<u8>,
    },
    XattrValue {
        name: Vec<u8>,
        expected: Vec<u8>,
        actual: Vec<u8>,
    },
    /// The paths sharing this path's inode differ.
    Hardlink {
        expected: Vec<Vec<u8>>,
        actual: Vec<Vec<u8>>,
    },
    /// Data regions `(start, end)` differ.
    Sparse {
        expected: Vec<(u64, u64)>,
        actual: Vec<(u64, u64)>,
    },
    /// Tar only: a structural problem with the archive (duplicate entry,
    /// hardlink to a later/unknown member, undecodable header, ...).
    Tar(String),
    /// Something could not be read; the comparison is incomplete.
    Error(String),
}

impl DiffKind {
    /// A short stable name for the kind, handy in assertions.
    pub fn name(&self) -> &'static str {
        match self {
            DiffKind::Missing => "missing",
            DiffKind::Extra => "extra",
            DiffKind::Type { .. } => "type",
            DiffKind::Size { .. } => "size",
            DiffKind::Content { .. } => "content",
            DiffKind::Mode { .. } => "mode",
            DiffKind::Owner { .. } => "owner",
            DiffKind::OwnerName { .. } => "owner-name",
            DiffKind::Mtime { .. } => "mtime",
            DiffKind::SymlinkTarget { .. } => "symlink-target",
            DiffKind::Device { .. } => "device",
            DiffKind::XattrMissing { .. } => "xattr-missing",
            DiffKind::XattrExtra { .. } => "xattr-extra",
            DiffKind::XattrValue { .. } => "xattr-value",
            DiffKind::Hardlink { .. } => "hardlink",
            DiffKind::Sparse { .. } => "sparse",
            DiffKind::Tar(_) => "tar",
            DiffKind::Error(_) => "error",
        }
    }
}

fn show_value(name: &[u8], v: &[u8]) -> String {
    if name == acl::ACL_XATTR_ACCESS || name == acl::ACL_XATTR_DEFAULT {
        if let Ok(a) = acl::Acl::from_xattr(v) {
            return format!("ACL[{a}]");
        }
    }
    let shown = &v[..v.len().min(48)];
    let more = if v.len() > 48 { "…" } else { "" };
    format!("{} bytes 0x{}{more}", v.len(), hex::encode(shown))
}

fn show_paths(ps: &[Vec<u8>]) -> String {
    let v: Vec<String> = ps.iter().map(|p| display_path(p)).collect();
    format!("{{{}}}", v.join(", "))
}

fn show_time(t: (i64, u32)) -> String {
    format!("{}.{:09}", t.0, t.1)
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", display_path(&self.path))?;
        match &self.kind {
            DiffKind::Missing => write!(f, "missing (expected but not present)"),
            DiffKind::Extra => write!(f, "extra (present but not expected)"),
            DiffKind::Type { expected, actual } => {
                write!(f, "type differs: expected {expected}, got {actual}")
            }
            DiffKind::Size { expected, actual } => {
                write!(f, "size differs: expected {expected}, got {actual}")
            }
            DiffKind::Content { offset: Some(o) } => {
                write!(f, "content differs, first at byte {o}")
            }
            DiffKind::Content { offset: None } => write!(f, "content differs"),
            DiffKind::Mode { expected, actual } => {
                write!(f, "mode differs: expected {expected:04o}, got {actual:04o}")
            }
            DiffKind::Owner { expected, actual } => write!(
                f,
                "owner differs: expected {}:{}, got {}:{}",
                expected.0, expected.1, actual.0, actual.1
            ),
            DiffKind::OwnerName {
                what,
                expected,
                actual,
            } => write!(f, "{what} differs: expected {expected:?}, got {actual:?}"),
            DiffKind::Mtime { expected, actual } => write!(
                f,
                "mtime differs: expected {}, got {}",
                show_time(*expected),
                show_time(*actual)
            ),
            DiffKind::SymlinkTarget { expected, actual } => write!(
                f,
                "symlink target differs: expected {:?}, got {:?}",
                display_bytes(expected),
                display_bytes(actual)
            ),
            DiffKind::Device { expected, actual } => write!(
                f,
                "device number differs: expected {}:{}, got {}:{}",
                expected.0, expected.1, actual.0, actual.1
            ),
            DiffKind::XattrMissing { name } => {
                write!(f, "xattr {} missing", display_bytes(name))
            }
            DiffKind::XattrExtra { name } => write!(f, "xattr {} extra", display_bytes(name)),
            DiffKind::XattrValue {
                name,
                expected,
                actual,
            } => write!(
                f,
                "xattr {} differs: expected {}, got {}",
                display_bytes(name),
                show_value(name, expected),
                show_value(name, actual)
            ),
            DiffKind::Hardlink { expected, actual } => write!(
                f,
                "hardlink group differs: expected {}, got {}",
                show_paths(expected),
                show_paths(actual)
            ),
            DiffKind::Sparse { expected, actual } => write!(
                f,
                "data/hole map differs: expected data at {expected:?}, got {actual:?}"
            ),
            DiffKind::Tar(m) => write!(f, "archive: {m}"),
            DiffKind::Error(m) => write!(f, "error: {m}"),
        }
    }
}

/// Render a list of differences one per line (for assertion messages).
pub fn format_differences(diffs: &[Difference]) -> String {
    let mut s = String::new();
    for d in diffs {
        s.push_str("  ");
        s.push_str(&d.to_string());
        s.push('\n');
    }
    s
}

/// Panic, listing every difference, unless `diffs` is empty.
#[track_caller]
pub fn assert_no_differences(diffs: &[Difference], what: &str) {
    if !diffs.is_empty() {
        panic!(
            "{what}: {} difference(s):\n{}",
            diffs.len(),
            format_differences(diffs)
        );
    }
}

/// [`compare_trees`], panicking with the full list if anything differs.
#[track_caller]
pub fn assert_trees_equal(expected: &Path, actual: &Path, opts: &CompareOpts) {
    let d = compare_trees(expected, actual, opts);
    assert_no_differences(
        &d,
        &format!("{} vs {}", expected.display(), actual.display()),
    );
}

pub(crate) fn diff(path: &[u8], kind: DiffKind) -> Difference {
    Difference {
        path: path.to_vec(),
        kind,
    }
}

fn round_map(map: &[(u64, u64)], g: u64) -> Vec<(u64, u64)> {
    let g = g.max(1);
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(s, e) in map {
        let s = s / g * g;
        let e = e.div_ceil(g).saturating_mul(g);
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

pub(crate) fn sparse_maps_equal(a: &[(u64, u64)], b: &[(u64, u64)], mode: SparseCheck) -> bool {
    match mode {
        SparseCheck::Ignore => true,
        SparseCheck::Exact => a == b,
        SparseCheck::Granularity(g) => round_map(a, g) == round_map(b, g),
    }
}

/// Compare two xattr sets (already filtered), pushing differences.
pub(crate) fn compare_xattrs(
    path: &[u8],
    expected: &fsutil::Xattrs,
    actual: &fsutil::Xattrs,
    opts: &CompareOpts,
    out: &mut Vec<Difference>,
) {
    let names: BTreeSet<&Vec<u8>> = expected.keys().chain(actual.keys()).collect();
    for name in names {
        if opts.xattr_ignored(name) {
            continue;
        }
        match (expected.get(name), actual.get(name)) {
            (Some(_), None) => out.push(diff(path, DiffKind::XattrMissing { name: name.clone() })),
            (None, Some(_)) => out.push(diff(path, DiffKind::XattrExtra { name: name.clone() })),
            (Some(e), Some(a)) => {
                if acl::canonical_xattr_value(name, e) != acl::canonical_xattr_value(name, a) {
                    out.push(diff(
                        path,
                        DiffKind::XattrValue {
                            name: name.clone(),
                            expected: e.clone(),
                            actual: a.clone(),
                        },
                    ))
                }
            }
            (None, None) => {}
        }
    }
}

/// Compare the tree at `expected` with the tree at `actual`. An empty
/// result means they are identical in every respect checked (see the
/// module docs and [`DiffKind`]).
pub fn compare_trees(expected: &Path, actual: &Path, opts: &CompareOpts) -> Vec<Difference> {
    let mut out = Vec::new();
    let se = match fsutil::scan_tree(expected, true) {
        Ok(s) => s,
        Err(e) => {
            out.push(diff(b"", DiffKind::Error(format!("expected tree: {e}"))));
            return out;
        }
    };
    let sa = match fsutil::scan_tree(actual, true) {
        Ok(s) => s,
        Err(e) => {
            out.push(diff(b"", DiffKind::Error(format!("actual tree: {e}"))));
            return out;
        }
    };
    for (p, e) in &se.errors {
        out.push(diff(p, DiffKind::Error(format!("expected tree: {e}"))));
    }
    for (p, e) in &sa.errors {
        out.push(diff(p, DiffKind::Error(format!("actual tree: {e}"))));
    }

    let all: BTreeSet<&Vec<u8>> = se.nodes.keys().chain(sa.nodes.keys()).collect();
    for path in all {
        match (se.nodes.get(path), sa.nodes.get(path)) {
            (Some(_), None) => out.push(diff(path, DiffKind::Missing)),
            (None, Some(_)) => out.push(diff(path, DiffKind::Extra)),
            (Some(e), Some(a)) => {
                compare_node(path, e, a, expected, actual, opts, &mut out);
            }
            (None, None) => {}
        }
    }
    compare_link_groups(&se, &sa, &mut out);
    out
}

fn compare_node(
    path: &[u8],
    e: &Node,
    a: &Node,
    expected_root: &Path,
    actual_root: &Path,
    opts: &CompareOpts,
    out: &mut Vec<Difference>,
) {
    let (me, ma) = (&e.meta, &a.meta);
    if me.kind != ma.kind {
        out.push(diff(
            path,
            DiffKind::Type {
                expected: me.kind,
                actual: ma.kind,
            },
        ));
        return;
    }
    let is_root = path.is_empty();
    let check_meta = !(is_root && opts.ignore_root_metadata);
    if check_meta {
        if me.mode != ma.mode {
            out.push(diff(
                path,
                DiffKind::Mode {
                    expected: me.mode,
                    actual: ma.mode,
                },
            ));
        }
        if !opts.ignore_ownership && (me.uid, me.gid) != (ma.uid, ma.gid) {
            out.push(diff(
                path,
                DiffKind::Owner {
                    expected: (me.uid, me.gid),
                    actual: (ma.uid, ma.gid),
                },
            ));
        }
        if me.mtime != ma.mtime {
            out.push(diff(
                path,
                DiffKind::Mtime {
                    expected: me.mtime,
                    actual: ma.mtime,
                },
            ));
        }
        match (&e.xattrs, &a.xattrs) {
            (Ok(xe), Ok(xa)) => compare_xattrs(path, xe, xa, opts, out),
            (Err(err), _) => out.push(diff(
                path,
                DiffKind::Error(format!("expected tree xattrs: {err}")),
            )),
            (_, Err(err)) => out.push(diff(
                path,
                DiffKind::Error(format!("actual tree xattrs: {err}")),
            )),
        }
    }
    match me.kind {
        FileKind::File => {
            if me.size != ma.size {
                out.push(diff(
                    path,
                    DiffKind::Size {
                        expected: me.size,
                        actual: ma.size,
                    },
                ));
            }
            match (&e.content, &a.content) {
                (Some(Ok(ce)), Some(Ok(ca))) => {
                    if ce.hash != ca.hash {
                        let offset = fsutil::open_file_rel(expected_root, path)
                            .and_then(|fe| {
                                fsutil::open_file_rel(actual_root, path)
                                    .and_then(|fa| fsutil::first_difference(fe, fa))
                            })
                            .ok()
                            .flatten();
                        out.push(diff(path, DiffKind::Content { offset }));
                    }
                    // Only meaningful when the sizes agree (else the size
                    // and content findings already say it all).
                    if me.size == ma.size
                        && !sparse_maps_equal(&ce.data_map, &ca.data_map, opts.sparse)
                    {
                        out.push(diff(
                            path,
                            DiffKind::Sparse {
                                expected: ce.data_map.clone(),
                                actual: ca.data_map.clone(),
                            },
                        ));
                    }
                }
                (Some(Err(err)), _) => out.push(diff(
                    path,
                    DiffKind::Error(format!("expected tree content: {err}")),
                )),
                (_, Some(Err(err))) => out.push(diff(
                    path,
                    DiffKind::Error(format!("actual tree content: {err}")),
                )),
                _ => {}
            }
        }
        FileKind::Symlink if e.target != a.target => {
            out.push(diff(
                path,
                DiffKind::SymlinkTarget {
                    expected: e.target.clone().unwrap_or_default(),
                    actual: a.target.clone().unwrap_or_default(),
                },
            ));
        }
        FileKind::CharDev | FileKind::BlockDev if me.rdev != ma.rdev => {
            out.push(diff(
                path,
                DiffKind::Device {
                    expected: me.rdev,
                    actual: ma.rdev,
                },
            ));
        }
        _ => {}
    }
}

/// (expected group, actual group) of one path.
type GroupPair = (Vec<Vec<u8>>, Vec<Vec<u8>>);

fn compare_link_groups(se: &Scan, sa: &Scan, out: &mut Vec<Difference>) {
    let ge = se.link_groups();
    let ga = sa.link_groups();
    let in_both = |p: &Vec<u8>| se.nodes.contains_key(p) && sa.nodes.contains_key(p);
    let mut reported: BTreeSet<GroupPair> = BTreeSet::new();
    let mut first_path: BTreeMap<GroupPair, Vec<u8>> = BTreeMap::new();
    for (p, exp) in &ge {
        let Some(act) = ga.get(p) else { continue };
        // Types already differ, or the entry is a directory on one side.
        let exp: Vec<Vec<u8>> = exp.iter().filter(|q| in_both(q)).cloned().collect();
        let act: Vec<Vec<u8>> = act.iter().filter(|q| in_both(q)).cloned().collect();
        if exp != act {
            let key = (exp, act);
            first_path.entry(key.clone()).or_insert_with(|| p.clone());
            reported.insert(key);
        }
    }
    for key in reported {
        let path = first_path.get(&key).cloned().unwrap_or_default();
        let (expected, actual) = key;
        out.push(diff(&path, DiffKind::Hardlink { expected, actual }));
    }
}
