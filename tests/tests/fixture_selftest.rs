//! Self-tests of the test-support library: the fixture builds; the tree
//! comparer finds nothing between faithful copies and finds every kind of
//! planted difference (each in its own assertion, so it cannot silently
//! pass); the tar checker accepts GNU tar's pax export of the fixture and
//! finds planted differences.
//!
//! The faithful copy is a second build with the same seed: `cp -a` cannot
//! copy the fixture (it fails on the >PATH_MAX branch), and neither can a
//! GNU tar round trip (extraction fails there too).
//!
//! Needs GNU `tar` with xattr/ACL support (Debian's `tar`); `acl` is not
//! needed. Trees live in `$CAIRN_TEST_TMPDIR` or the system temp dir, which
//! must support user xattrs, ACLs and holes for the full set of checks.

use std::collections::BTreeSet;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cairn_tests::acl::{Acl, Entry, Tag, ACL_XATTR_ACCESS, ACL_XATTR_DEFAULT};
use cairn_tests::compare::{
    compare_trees, format_differences, CompareOpts, DiffKind, Difference, SparseCheck,
};
use cairn_tests::fixture::{self, FixtureOpts, Manifest};
use cairn_tests::fsutil::{self, display_path};
use cairn_tests::tarcheck::compare_tar_with_tree;
use rustix::fs::OFlags;

struct Pair {
    _tmp: tempfile::TempDir,
    a: PathBuf,
    b: PathBuf,
    m: Manifest,
}

fn build(dir: &Path, opts: &FixtureOpts) -> Manifest {
    std::fs::create_dir(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let m = fixture::build_full_tree_with(dir, opts)
        .unwrap_or_else(|e| panic!("building the fixture in {}: {e:#}", dir.display()));
    eprintln!("{m}");
    m
}

fn single() -> (tempfile::TempDir, PathBuf, Manifest) {
    let tmp = fixture::tempdir().expect("temporary directory");
    let a = tmp.path().join("a");
    let m = build(&a, &FixtureOpts::default());
    (tmp, a, m)
}

fn pair() -> Pair {
    let (tmp, a, m) = single();
    let b = tmp.path().join("b");
    build(&b, &FixtureOpts::default());
    Pair { _tmp: tmp, a, b, m }
}

fn opts() -> CompareOpts {
    CompareOpts::for_current_user()
}

/// The set of (path, kind) in `d`, paths rendered for humans.
fn kinds(d: &[Difference]) -> BTreeSet<(String, &'static str)> {
    d.iter()
        .map(|x| (display_path(&x.path), x.kind.name()))
        .collect()
}

/// Assert that `d` is exactly the given (path, kind) set.
#[track_caller]
fn assert_exactly(d: &[Difference], expected: &[(&[u8], &'static str)]) {
    let want: BTreeSet<(String, &'static str)> = expected
        .iter()
        .map(|(p, k)| (display_path(p), *k))
        .collect();
    assert_eq!(
        kinds(d),
        want,
        "differences found:\n{}",
        format_differences(d)
    );
}

#[track_caller]
fn assert_clean(d: &[Difference]) {
    assert!(
        d.is_empty(),
        "unexpected differences:\n{}",
        format_differences(d)
    );
}

/// Run `f`, then put back the mtimes that `rels` (and their parents) had.
fn keeping_mtimes(root: &Path, rels: &[&[u8]], f: impl FnOnce()) {
    let mut all: Vec<Vec<u8>> = Vec::new();
    for r in rels {
        all.push(r.to_vec());
        all.push(fsutil::parent_rel(r));
    }
    let saved: Vec<(Vec<u8>, (i64, u32))> = all
        .iter()
        .filter_map(|r| {
            fsutil::lstat_rel(root, r)
                .ok()
                .map(|m| (r.clone(), m.mtime))
        })
        .collect();
    f();
    for (r, t) in saved {
        if fsutil::lstat_rel(root, &r).is_ok() {
            fsutil::set_mtime_rel(root, &r, t).expect("restore mtime");
        }
    }
}

fn abs(root: &Path, rel: &[u8]) -> PathBuf {
    fsutil::abs_path(root, rel)
}

fn pwrite_rel(root: &Path, rel: &[u8], data: &[u8], off: u64) {
    let rootfd = fsutil::open_root(root).expect("open root");
    let fd = fsutil::open_rel(rootfd.as_fd(), rel, OFlags::WRONLY).expect("open for writing");
    let n = rustix::io::pwrite(&fd, data, off).expect("pwrite");
    assert_eq!(n, data.len());
}

fn read_byte(root: &Path, rel: &[u8], off: u64) -> u8 {
    let rootfd = fsutil::open_root(root).expect("open root");
    let fd = fsutil::open_rel(rootfd.as_fd(), rel, OFlags::RDONLY).expect("open for reading");
    let mut b = [0u8; 1];
    let n = rustix::io::pread(&fd, &mut b, off).expect("pread");
    assert_eq!(n, 1);
    b[0]
}

// ---------------------------------------------------------------------------
// Fixture

#[test]
fn fixture_creates_everything_it_can() {
    let (_tmp, root, m) = single();
    for key in [
        "big_file",
        "empty_file",
        "dir_0700",
        "dir_0751",
        "dir_sticky",
        "setuid_file",
        "setgid_file",
        "mode_0604",
        "symlink_relative",
        "symlink_absolute",
        "symlink_dangling",
        "symlink_to_dir",
        "hardlink2_a",
        "hardlink2_b",
        "hardlink3_a",
        "hardlink3_b",
        "hardlink3_c",
        "fifo",
        "sparse_holes",
        "sparse_tail_hole",
        "non_utf8_file",
        "non_utf8_dir",
        "name_255",
        "long_path_file",
    ] {
        assert!(m.get(key).is_some(), "fixture lacks {key}\n{m}");
    }
    // Ownership, devices and owner-unreadable files need root.
    for key in [
        "char_device",
        "block_device",
        "owned_by_name_file",
        "owned_by_number_file",
        "mode_0000",
        "mode_0111",
    ] {
        assert!(
            m.get(key).is_some() || m.skip_reason(key).is_some(),
            "{key} neither created nor reported as skipped"
        );
        if !m.as_root {
            assert!(
                m.skip_reason(key).is_some(),
                "{key} should be skipped when not root"
            );
        }
    }
    let leaf = m.path("long_path_file");
    assert!(leaf.len() > 4096, "long path is only {} bytes", leaf.len());
    assert_eq!(
        fsutil::read_rel(&root, leaf).expect("read deep leaf").len(),
        3000
    );
    let n255 = m.path("name_255");
    assert_eq!(
        n255.rsplit(|b| *b == b'/').next().map(<[u8]>::len),
        Some(255)
    );
    let st = fsutil::lstat_rel(&root, m.path("sparse_holes")).expect("stat sparse");
    assert_eq!(st.size, 64 * 1024 * 1024);
    if m.features.holes {
        assert!(
            st.blocks * 512 < 1024 * 1024,
            "sparse file is not sparse: {st:?}"
        );
    }
    let st = fsutil::lstat_rel(&root, m.path("hardlink3_c")).expect("stat");
    assert_eq!(st.nlink, 3);
    let st = fsutil::lstat_rel(&root, m.path("symlink_dangling")).expect("stat");
    assert_ne!(st.mtime.1, 0, "symlink mtime has no nanoseconds");
}

// ---------------------------------------------------------------------------
// Tree comparison: faithful copies

#[test]
fn same_seed_builds_compare_equal() {
    let p = pair();
    assert_clean(&compare_trees(&p.a, &p.b, &opts()));
    assert_clean(&compare_trees(&p.a, &p.a, &opts()));
}

#[test]
fn different_seed_is_noticed() {
    let tmp = fixture::tempdir().expect("tempdir");
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    build(&a, &FixtureOpts::default());
    build(
        &b,
        &FixtureOpts {
            seed: 7,
            ..FixtureOpts::default()
        },
    );
    let d = compare_trees(&a, &b, &opts());
    assert!(
        d.iter().any(
            |x| x.path == b"big.bin" && matches!(x.kind, DiffKind::Content { offset: Some(0) })
        ),
        "{}",
        format_differences(&d)
    );
}

// ---------------------------------------------------------------------------
// Tree comparison: planted differences, one kind per test

#[test]
fn planted_content_byte() {
    let p = pair();
    let rel = p.m.path("big_file").to_vec();
    let old = read_byte(&p.b, &rel, 1_000_000);
    keeping_mtimes(&p.b, &[&rel], || {
        pwrite_rel(&p.b, &rel, &[old ^ 0x01], 1_000_000)
    });
    let d = compare_trees(&p.a, &p.b, &opts());
    assert_exactly(&d, &[(&rel, "content")]);
    assert_eq!(
        d[0].kind,
        DiffKind::Content {
            offset: Some(1_000_000)
        }
    );
}

#[test]
fn planted_content_byte_beyond_path_max() {
    let p = pair();
    let rel = p.m.path("long_path_file").to_vec();
    let old = read_byte(&p.b, &rel, 2999);
    keeping_mtimes(&p.b, &[&rel], || {
        pwrite_rel(&p.b, &rel, &[old ^ 0x80], 2999)
    });
    let d = compare_trees(&p.a, &p.b, &opts());
    // The deep leaf shares its inode with long/link-to-deep-leaf.
    assert_exactly(
        &d,
        &[(&rel, "content"), (b"long/link-to-deep-leaf", "content")],
    );
    assert!(d
        .iter()
        .all(|x| x.kind == DiffKind::Content { offset: Some(2999) }));
}

#[test]
fn planted_size_change() {
    let p = pair();
    let rel = p.m.path("mode_0604").to_vec();
    keeping_mtimes(&p.b, &[&rel], || pwrite_rel(&p.b, &rel, b"!", 4));
    let d = compare_trees(&p.a, &p.b, &opts());
    assert_exactly(&d, &[(&rel, "size"), (&rel, "content")]);
}

#[test]
fn planted_mode_bit() {
    let p = pair();
    let rel = p.m.path("mode_0604").to_vec();
    rustix::fs::chmod(abs(&p.b, &rel), rustix::fs::Mode::from_raw_mode(0o605)).expect("chmod");
    let d = compare_trees(&p.a, &p.b, &opts());
    assert_exactly(&d, &[(&rel, "mode")]);
    assert_eq!(
        d[0].kind,
        DiffKind::Mode {
            expected: 0o604,
            actual: 0o605
        }
    );
}

#[test]
fn planted_setuid_bit_loss() {
    let p = pair();
    let rel = p.m.path("setuid_file").to_vec();
    rustix::fs::chmod(abs(&p.b, &rel), rustix::fs::Mode::from_raw_mode(0o755)).expect("chmod");
    assert_exactly(&compare_trees(&p.a, &p.b, &opts()), &[(&rel, "mode")]);
}

#[test]
fn planted_sticky_bit_loss_on_dir() {
    let p = pair();
    let rel = p.m.path("dir_sticky").to_vec();
    rustix::fs::chmod(abs(&p.b, &rel), rustix::fs::Mode::from_raw_mode(0o777)).expect("chmod");
    assert_exactly(&compare_trees(&p.a, &p.b, &opts()), &[(&rel, "mode")]);
}

fn bump_ns(root: &Path, rel: &[u8]) {
    let m = fsutil::lstat_rel(root, rel).expect("lstat");
    let (s, ns) = m.mtime;
    let t = if ns == 999_999_999 {
        (s + 1, 0)
    } else {
        (s, ns + 1)
    };
    fsutil::set_mtime_rel(root, rel, t).expect("set mtime");
}

#[test]
fn planted_mtime_nanosecond_on_file() {
    let p = pair();
    let rel = p.m.path("empty_file").to_vec();
    bump_ns(&p.b, &rel);
    assert_exactly(&compare_trees(&p.a, &p.b, &opts()), &[(&rel, "mtime")]);
}

#[test]
fn planted_mtime_nanosecond_on_dir() {
    let p = pair();
    let rel = p.m.path("dir_0751").to_vec();
    bump_ns(&p.b, &rel);
    assert_exactly(&compare_trees(&p.a, &p.b, &opts()), &[(&rel, "mtime")]);
}

#[test]
fn planted_mtime_nanosecond_on_symlink() {
    let p = pair();
    let rel = p.m.path("symlink_dangling").to_vec();
    bump_ns(&p.b, &rel);
    assert_exactly(&compare_trees(&p.a, &p.b, &opts()), &[(&rel, "mtime")]);
}

#[test]
fn planted_mtime_on_deep_dir_beyond_path_max() {
    let p = pair();
    let leaf = p.m.path("long_path_file").to_vec();
    let rel = fsutil::parent_rel(&leaf);
    bump_ns(&p.b, &rel);
    assert_exactly(&compare_trees(&p.a, &p.b, &opts()), &[(&rel, "mtime")]);
}

#[test]
fn planted_xattr_value() {
    let p = pair();
    if !p.m.features.user_xattrs {
        eprintln!(
            "SKIP: no user xattrs here: {:?}",
            p.m.skip_reason("xattr_file")
        );
        return;
    }
    let rel = p.m.path("xattr_file").to_vec();
    fsutil::set_xattr_rel(&p.b, &rel, b"user.cairn.binary", b"\x00\x01").expect("setxattr");
    let d = compare_trees(&p.a, &p.b, &opts());
    assert_exactly(&d, &[(&rel, "xattr-value")]);
}

#[test]
fn planted_xattr_missing_and_extra() {
    let p = pair();
    if !p.m.features.user_xattrs {
        eprintln!("SKIP: no user xattrs here");
        return;
    }
    let dir = p.m.path("xattr_dir").to_vec();
    rustix::fs::lremovexattr(abs(&p.b, &dir), "user.cairn.second").expect("removexattr");
    let file = p.m.path("empty_file").to_vec();
    fsutil::set_xattr_rel(&p.b, &file, b"user.cairn.new", b"").expect("setxattr");
    let d = compare_trees(&p.a, &p.b, &opts());
    assert_exactly(&d, &[(&dir, "xattr-missing"), (&file, "xattr-extra")]);
}

#[test]
fn planted_xattr_on_deep_leaf() {
    let p = pair();
    if !p.m.features.user_xattrs {
        eprintln!("SKIP: no user xattrs here");
        return;
    }
    let rel = p.m.path("long_path_file").to_vec();
    fsutil::set_xattr_rel(&p.b, &rel, b"user.cairn.deep", b"other").expect("setxattr");
    let d = compare_trees(&p.a, &p.b, &opts());
    assert_exactly(
        &d,
        &[
            (&rel, "xattr-value"),
            (b"long/link-to-deep-leaf", "xattr-value"),
        ],
    );
}

#[test]
fn planted_acl_change() {
    let p = pair();
    if !p.m.features.acls {
        eprintln!("SKIP: no ACLs here: {:?}", p.m.skip_reason("acl_dir"));
        return;
    }
    let rel = p.m.path("acl_dir").to_vec();
    // Same mask, so the mode is unchanged: only the ACL differs.
    let changed = Acl(vec![
        Entry::new(Tag::UserObj, None, 7),
        Entry::new(Tag::User, Some(1), 4),
        Entry::new(Tag::User, Some(54321), 5),
        Entry::new(Tag::GroupObj, None, 5),
        Entry::new(Tag::Group, Some(54322), 3),
        Entry::new(Tag::Mask, None, 7),
        Entry::new(Tag::Other, None, 1),
    ]);
    fsutil::set_xattr_rel(&p.b, &rel, ACL_XATTR_ACCESS, &changed.to_xattr()).expect("set ACL");
    let d = compare_trees(&p.a, &p.b, &opts());
    assert_exactly(&d, &[(&rel, "xattr-value")]);
    assert!(d[0].to_string().contains("user:54321:r-x"), "{}", d[0]);
}

#[test]
fn planted_default_acl_removed() {
    let p = pair();
    if !p.m.features.acls {
        eprintln!("SKIP: no ACLs here");
        return;
    }
    let rel = p.m.path("acl_dir").to_vec();
    rustix::fs::lremovexattr(
        abs(&p.b, &rel),
        std::ffi::OsStr::from_bytes(ACL_XATTR_DEFAULT),
    )
    .expect("remove default ACL");
    assert_exactly(
        &compare_trees(&p.a, &p.b, &opts()),
        &[(&rel, "xattr-missing")],
    );
}

#[test]
fn planted_hardlink_break() {
    let p = pair();
    let a = p.m.path("hardlink2_a").to_vec();
    let b = p.m.path("hardlink2_b").to_vec();
    keeping_mtimes(&p.b, &[&b], || {
        let path = abs(&p.b, &b);
        let meta = fsutil::lstat_rel(&p.b, &b).expect("lstat");
        let content = std::fs::read(&path).expect("read");
        std::fs::remove_file(&path).expect("unlink");
        std::fs::write(&path, content).expect("write copy");
        rustix::fs::chmod(&path, rustix::fs::Mode::from_raw_mode(meta.mode)).expect("chmod");
        fsutil::set_mtime_rel(&p.b, &b, meta.mtime).expect("mtime");
    });
    let d = compare_trees(&p.a, &p.b, &opts());
    assert_exactly(&d, &[(&a, "hardlink"), (&b, "hardlink")]);
}

#[test]
fn planted_extra_hardlink() {
    let p = pair();
    // Make two formerly separate files share an inode.
    let a = p.m.path("setgid_file").to_vec();
    let b = p.m.path("setuid_file").to_vec();
    keeping_mtimes(&p.b, &[&b], || {
        let meta = fsutil::lstat_rel(&p.b, &b).expect("lstat");
        std::fs::remove_file(abs(&p.b, &b)).expect("unlink");
        std::fs::hard_link(abs(&p.b, &a), abs(&p.b, &b)).expect("link");
        let _ = meta;
    });
    let d = compare_trees(&p.a, &p.b, &opts());
    // b now has a's mode and mtime, and both paths report the new grouping.
    assert!(
        d.iter().any(|x| x.kind.name() == "hardlink" && x.path == a),
        "{}",
        format_differences(&d)
    );
    assert!(d.iter().any(|x| x.kind.name() == "hardlink" && x.path == b));
}

#[test]
fn planted_hole_filled() {
    let p = pair();
    if !p.m.features.holes {
        eprintln!("SKIP: no holes here: {:?}", p.m.skip_reason("sparse_holes"));
        return;
    }
    let rel = p.m.path("sparse_holes").to_vec();
    // Zeros written into a hole: same logical content, different map.
    keeping_mtimes(&p.b, &[&rel], || {
        pwrite_rel(&p.b, &rel, &[0u8; 4096], 2 * 1024 * 1024)
    });
    let d = compare_trees(&p.a, &p.b, &opts());
    assert_exactly(&d, &[(&rel, "sparse")]);
    // With sparseness ignored the trees are equal.
    let lax = CompareOpts {
        sparse: SparseCheck::Ignore,
        ..opts()
    };
    assert_clean(&compare_trees(&p.a, &p.b, &lax));
}

#[test]
fn sparse_granularity_tolerates_rounding() {
    let p = pair();
    if !p.m.features.holes {
        eprintln!("SKIP: no holes here");
        return;
    }
    let rel = p.m.path("sparse_holes").to_vec();
    // Extend the first data region (1 MiB + 4 KiB) by one block.
    keeping_mtimes(&p.b, &[&rel], || {
        pwrite_rel(&p.b, &rel, &[0u8; 4096], 1024 * 1024 + 4096)
    });
    assert_exactly(&compare_trees(&p.a, &p.b, &opts()), &[(&rel, "sparse")]);
    let rounded = CompareOpts {
        sparse: SparseCheck::Granularity(64 * 1024),
        ..opts()
    };
    assert_clean(&compare_trees(&p.a, &p.b, &rounded));
}

#[test]
fn planted_rename_of_non_utf8_entry() {
    let p = pair();
    let old = p.m.path("non_utf8_file").to_vec();
    let new = b"names/caf\xc3\xa9".to_vec();
    keeping_mtimes(&p.b, &[&old], || {
        std::fs::rename(abs(&p.b, &old), abs(&p.b, &new)).expect("rename")
    });
    let d = compare_trees(&p.a, &p.b, &opts());
    assert_exactly(&d, &[(&old, "missing"), (&new, "extra")]);
    assert!(d[0].to_string().contains("caf\\xe9") || d[1].to_string().contains("caf\\xe9"));
}

#[test]
fn planted_missing_empty_dir() {
    let p = pair();
    let rel = p.m.path("empty_dir").to_vec();
    keeping_mtimes(&p.b, &[&rel], || {
        std::fs::remove_dir(abs(&p.b, &rel)).expect("rmdir")
    });
    assert_exactly(&compare_trees(&p.a, &p.b, &opts()), &[(&rel, "missing")]);
}

#[test]
fn planted_symlink_target() {
    let p = pair();
    let rel = p.m.path("symlink_dangling").to_vec();
    keeping_mtimes(&p.b, &[&rel], || {
        let path = abs(&p.b, &rel);
        let t = fsutil::lstat_rel(&p.b, &rel).expect("lstat").mtime;
        std::fs::remove_file(&path).expect("unlink");
        std::os::unix::fs::symlink("does/not/exist2", &path).expect("symlink");
        fsutil::set_mtime_rel(&p.b, &rel, t).expect("mtime");
    });
    assert_exactly(
        &compare_trees(&p.a, &p.b, &opts()),
        &[(&rel, "symlink-target")],
    );
}

#[test]
fn planted_type_change() {
    let p = pair();
    let rel = p.m.path("fifo").to_vec();
    keeping_mtimes(&p.b, &[&rel], || {
        let path = abs(&p.b, &rel);
        std::fs::remove_file(&path).expect("unlink");
        std::fs::write(&path, b"").expect("write");
    });
    assert_exactly(&compare_trees(&p.a, &p.b, &opts()), &[(&rel, "type")]);
}

#[test]
fn planted_owner_change() {
    let p = pair();
    if !p.m.as_root {
        eprintln!("SKIP: not root");
        return;
    }
    let rel = p.m.path("mode_0604").to_vec();
    std::os::unix::fs::lchown(abs(&p.b, &rel), Some(1), Some(1)).expect("chown");
    let d = compare_trees(&p.a, &p.b, &opts());
    assert_exactly(&d, &[(&rel, "owner")]);
    let ignoring = CompareOpts {
        ignore_ownership: true,
        ..opts()
    };
    assert_clean(&compare_trees(&p.a, &p.b, &ignoring));
}

#[test]
fn planted_device_number() {
    let p = pair();
    if p.m.get("char_device").is_none() {
        eprintln!("SKIP: {:?}", p.m.skip_reason("char_device"));
        return;
    }
    let rel = p.m.path("char_device").to_vec();
    keeping_mtimes(&p.b, &[&rel], || {
        let path = abs(&p.b, &rel);
        let meta = fsutil::lstat_rel(&p.b, &rel).expect("lstat");
        std::fs::remove_file(&path).expect("unlink");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(meta.mode),
            rustix::fs::makedev(1, 5),
        )
        .expect("mknod");
        rustix::fs::chmod(&path, rustix::fs::Mode::from_raw_mode(meta.mode)).expect("chmod");
        fsutil::set_mtime_rel(&p.b, &rel, meta.mtime).expect("mtime");
    });
    let d = compare_trees(&p.a, &p.b, &opts());
    assert_exactly(&d, &[(&rel, "device")]);
    assert_eq!(
        d[0].kind,
        DiffKind::Device {
            expected: (1, 3),
            actual: (1, 5)
        }
    );
}

#[test]
fn root_metadata_can_be_ignored() {
    let p = pair();
    bump_ns(&p.b, b"");
    assert_exactly(&compare_trees(&p.a, &p.b, &opts()), &[(b"", "mtime")]);
    let ignoring = CompareOpts {
        ignore_root_metadata: true,
        ..opts()
    };
    assert_clean(&compare_trees(&p.a, &p.b, &ignoring));
}

#[test]
fn missing_tree_is_an_error_not_a_pass() {
    let (_tmp, root, _m) = single();
    let d = compare_trees(&root, Path::new("/nonexistent/cairn-test"), &opts());
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].kind.name(), "error");
}

// ---------------------------------------------------------------------------
// Tar

/// `tar <args> -C root -cf - .`, capturing the archive.
fn gnu_tar(root: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("tar")
        .args(args)
        .arg("-C")
        .arg(root)
        .args(["-cf", "-", "."])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running GNU tar (apt-get install tar): {e}"));
    assert!(
        out.status.success(),
        "tar {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

const PAX_ALL: &[&str] = &["--xattrs", "--xattrs-include=*", "--acls", "--format=posix"];

fn with(extra: &[&'static str]) -> Vec<&'static str> {
    let mut v = PAX_ALL.to_vec();
    v.extend_from_slice(extra);
    v
}

#[test]
fn gnu_tar_pax_export_matches_tree() {
    let (_tmp, root, _m) = single();
    let tar = gnu_tar(&root, PAX_ALL);
    let o = CompareOpts {
        require_root_entry: true,
        ..opts()
    };
    assert_clean(&compare_tar_with_tree(&tar, &root, &o));
}

#[test]
fn gnu_tar_pax_sparse_exports_match_tree() {
    let (_tmp, root, _m) = single();
    for version in [
        "--sparse-version=1.0",
        "--sparse-version=0.1",
        "--sparse-version=0.0",
    ] {
        let tar = gnu_tar(&root, &with(&["--sparse", version]));
        let d = compare_tar_with_tree(&tar, &root, &opts());
        assert!(d.is_empty(), "{version}:\n{}", format_differences(&d));
    }
}

#[test]
fn tar_checker_finds_planted_tree_changes() {
    let (_tmp, root, m) = single();
    let tar = gnu_tar(&root, &with(&["--sparse"]));
    assert_clean(&compare_tar_with_tree(&tar, &root, &opts()));

    // One byte of content.
    let big = m.path("big_file").to_vec();
    let old = read_byte(&root, &big, 12345);
    keeping_mtimes(&root, &[&big], || {
        pwrite_rel(&root, &big, &[old ^ 1], 12345)
    });
    let d = compare_tar_with_tree(&tar, &root, &opts());
    assert_exactly(&d, &[(&big, "content")]);
    assert_eq!(
        d[0].kind,
        DiffKind::Content {
            offset: Some(12345)
        }
    );
    keeping_mtimes(&root, &[&big], || pwrite_rel(&root, &big, &[old], 12345));
    assert_clean(&compare_tar_with_tree(&tar, &root, &opts()));

    // A mode bit.
    let f = m.path("setgid_file").to_vec();
    rustix::fs::chmod(abs(&root, &f), rustix::fs::Mode::from_raw_mode(0o755)).expect("chmod");
    assert_exactly(
        &compare_tar_with_tree(&tar, &root, &opts()),
        &[(&f, "mode")],
    );
    rustix::fs::chmod(abs(&root, &f), rustix::fs::Mode::from_raw_mode(0o2755)).expect("chmod");

    // One nanosecond of a symlink's mtime.
    let l = m.path("symlink_to_dir").to_vec();
    let t = fsutil::lstat_rel(&root, &l).expect("lstat").mtime;
    bump_ns(&root, &l);
    assert_exactly(
        &compare_tar_with_tree(&tar, &root, &opts()),
        &[(&l, "mtime")],
    );
    fsutil::set_mtime_rel(&root, &l, t).expect("mtime");

    // An xattr value.
    if m.features.user_xattrs {
        let x = m.path("xattr_dir").to_vec();
        fsutil::set_xattr_rel(&root, &x, b"user.cairn.second", b"3").expect("setxattr");
        assert_exactly(
            &compare_tar_with_tree(&tar, &root, &opts()),
            &[(&x, "xattr-value")],
        );
        fsutil::set_xattr_rel(&root, &x, b"user.cairn.second", b"2").expect("setxattr");
    }

    // A file in the tree that the archive lacks, and one the other way.
    let extra = b"dirs/empty-dir/new".to_vec();
    keeping_mtimes(&root, &[&extra], || {
        std::fs::write(abs(&root, &extra), b"").expect("write")
    });
    let gone = m.path("leading_space_name").to_vec();
    keeping_mtimes(&root, &[&gone], || {
        std::fs::remove_file(abs(&root, &gone)).expect("unlink")
    });
    assert_exactly(
        &compare_tar_with_tree(&tar, &root, &opts()),
        &[(&extra, "missing"), (&gone, "extra")],
    );
}

#[test]
fn tar_checker_finds_lost_hardlinks() {
    let (_tmp, root, m) = single();
    let tar = gnu_tar(&root, &with(&["--hard-dereference"]));
    let d = compare_tar_with_tree(&tar, &root, &opts());
    let a = m.path("hardlink3_a").to_vec();
    assert!(
        d.iter().any(|x| x.kind.name() == "hardlink" && x.path == a),
        "{}",
        format_differences(&d)
    );
    // Nothing but hardlink findings.
    assert!(
        d.iter().all(|x| x.kind.name() == "hardlink"),
        "{}",
        format_differences(&d)
    );
}

#[test]
fn tar_checker_finds_missing_xattrs_and_acls() {
    let (_tmp, root, m) = single();
    let tar = gnu_tar(&root, &["--format=posix"]);
    let d = compare_tar_with_tree(&tar, &root, &opts());
    if m.features.user_xattrs {
        let f = m.path("xattr_file").to_vec();
        assert!(
            d.iter()
                .any(|x| x.path == f && x.kind.name() == "xattr-missing"),
            "{}",
            format_differences(&d)
        );
    }
    if m.features.acls {
        let a = m.path("acl_dir").to_vec();
        assert!(d.iter().any(|x| x.path == a
            && x.kind
                == DiffKind::XattrMissing {
                    name: ACL_XATTR_DEFAULT.to_vec()
                }));
    }
    assert!(
        d.iter().all(|x| x.kind.name() == "xattr-missing"),
        "{}",
        format_differences(&d)
    );
}

#[test]
fn tar_checker_finds_missing_owner_names() {
    let (_tmp, root, m) = single();
    if !m.as_root {
        eprintln!("SKIP: not root (ownership not compared)");
        return;
    }
    let tar = gnu_tar(&root, &with(&["--numeric-owner"]));
    let d = compare_tar_with_tree(&tar, &root, &opts());
    let f = m.path("owned_by_name_file").to_vec();
    assert!(
        d.iter()
            .any(|x| x.path == f && x.kind.name() == "owner-name"),
        "{}",
        format_differences(&d)
    );
    // The unnamed owner needs no name, so it is not reported.
    let n = m.path("owned_by_number_file").to_vec();
    assert!(!d.iter().any(|x| x.path == n), "{}", format_differences(&d));
    let no_names = CompareOpts {
        check_owner_names: false,
        ..opts()
    };
    assert_clean(&compare_tar_with_tree(&tar, &root, &no_names));
}

#[test]
fn tar_checker_rejects_garbage_and_empty_archives() {
    let (_tmp, root, _m) = single();
    let d = compare_tar_with_tree(b"", &root, &opts());
    assert!(
        d.iter().any(|x| x.kind == DiffKind::Missing),
        "empty archive passed"
    );
    let garbage = vec![0x55u8; 4096];
    let d = compare_tar_with_tree(&garbage, &root, &opts());
    assert!(
        d.iter().any(|x| x.kind.name() == "tar"),
        "{}",
        format_differences(&d)
    );
    let _ = display_path(b"");
}

#[test]
fn bsdtar_pax_export_matches_tree_if_available() {
    // libarchive writes LIBARCHIVE.xattr.* (base64) next to SCHILY.xattr.*
    // and its own sparse encoding; optional (`apt-get install
    // libarchive-tools`).
    let available = Command::new("bsdtar")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !available {
        eprintln!("SKIP: bsdtar not installed");
        return;
    }
    let (_tmp, root, _m) = single();
    let out = Command::new("bsdtar")
        .args(["--format=pax", "--xattrs", "--acls", "-C"])
        .arg(&root)
        .args(["-cf", "-", "."])
        .stdin(Stdio::null())
        .output()
        .expect("run bsdtar");
    assert!(
        out.status.success(),
        "bsdtar failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = compare_tar_with_tree(&out.stdout, &root, &opts());
    // Known libarchive quirk: it writes a negative time as "-S.F" meaning
    // -S + 0.F, where POSIX (and GNU tar, and this checker) read -(S.F).
    let pre_epoch = b"mtimes/pre-epoch".to_vec();
    let d: Vec<Difference> = d
        .into_iter()
        .filter(|x| !(x.path == pre_epoch && x.kind.name() == "mtime"))
        .collect();
    assert_clean(&d);
}

#[test]
fn bins_locate_and_explain_missing_binaries() {
    let bins = cairn_tests::Bins::locate();
    let exe = std::env::current_exe().expect("current_exe");
    // Test executables live in target/<profile>/deps; binaries one level up.
    let in_deps = exe
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|n| n == "deps");
    if in_deps && std::env::var_os(cairn_tests::bins::BIN_DIR_ENV).is_none() {
        assert_eq!(Some(bins.dir()), exe.parent().and_then(Path::parent));
    }
    let missing = cairn_tests::Bins::in_dir("/nonexistent/cairn-bins");
    assert!(missing.try_path("cairn").is_none());
    let err = std::panic::catch_unwind(|| missing.cmd("cairn")).expect_err("should panic");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("cargo build --workspace"), "{msg}");
}
