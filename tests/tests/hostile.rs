//! A hostile repository — crafted by someone who holds the key — must never make restore
//! write outside its target, follow a symlink it planted, allocate without bound, or hand
//! back bytes that do not match what the snapshot recorded.

mod common;

use std::path::Path;

use cairn::repo::index::IndexFile;
use cairn::repo::keyslot::KeySource;
use cairn::repo::pack::PackEntry;
use cairn::repo::snapshot::{Figures, Inventory, Snapshot};
use cairn::repo::writer::BlobWriter;
use cairn::repo::{Repository, BLOB_DATA, BLOB_TREE};
use cairn::tree::{self, FileContent, Kind, Node};
use common::{code, listing, ok, stderr, text, Env};

fn node(name: &[u8], kind: Kind) -> Node {
    Node {
        name: name.to_vec(),
        kind,
        mode: 0o755,
        uid: 0,
        gid: 0,
        user: vec![],
        group: vec![],
        mtime: 1_600_000_000,
        mtime_nsec: 0,
        xattrs: vec![],
    }
}

/// Writes crafted trees and snapshots straight into the repository.
struct Forge {
    repo: Repository,
}

impl Forge {
    fn open(env: &Env) -> Forge {
        Forge {
            repo: Repository::open(&env.repo, &[KeySource::KeyFile(env.key.clone())]).unwrap(),
        }
    }

    /// Store raw tree bytes (no validation) and data blobs; returns ids.
    fn blobs(&mut self, trees: &[Vec<u8>], data: &[&[u8]]) -> (Vec<[u8; 32]>, Vec<[u8; 32]>) {
        let mut w = BlobWriter::new(&self.repo, 1 << 20, Some(3), false);
        let t = trees.iter().map(|b| w.add(BLOB_TREE, b).unwrap()).collect();
        let d = data.iter().map(|b| w.add(BLOB_DATA, b).unwrap()).collect();
        w.finish().unwrap();
        self.repo.load_index().unwrap();
        (t, d)
    }

    fn file(&mut self, name: &[u8], content: &[u8]) -> Node {
        let (_, d) = self.blobs(&[], &[content]);
        node(
            name,
            Kind::File(FileContent {
                size: content.len() as u64,
                hash: *blake3::hash(content).as_bytes(),
                link_group: 0,
                extents: vec![],
                chunks: d,
            }),
        )
    }

    /// Record a snapshot whose root tree is `root` (sorted by the caller).
    fn snapshot(&mut self, root: &[Node]) -> String {
        let (t, _) = self.blobs(&[tree::encode(root)], &[]);
        let s = Snapshot {
            version: 1,
            time: chrono_now(),
            host: "forge".into(),
            user: "mallory".into(),
            paths: vec!["/".into()],
            tags: vec![],
            tree: hex::encode(t[0]),
            parent: None,
            program: "forge".into(),
            complete: true,
            errors: vec![],
            figures: Figures::default(),
            inventory: Inventory::default(),
        };
        self.repo.save_snapshot(&s).unwrap()
    }
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

/// A scratch area: `area/target` is restored into, `area/outside` must stay empty.
fn area(env: &Env) -> (std::path::PathBuf, std::path::PathBuf) {
    let t = env.path("area/target");
    let o = env.path("area/outside");
    std::fs::create_dir_all(&t).unwrap();
    std::fs::create_dir_all(&o).unwrap();
    (t, o)
}

fn assert_nothing_outside(env: &Env, target: &Path, outside: &Path) {
    assert!(
        listing(outside).is_empty(),
        "restore wrote outside its target: {:?}",
        listing(outside)
    );
    for p in listing(&env.path("area")) {
        assert!(
            p.starts_with(target) || p == outside,
            "unexpected entry {}",
            p.display()
        );
    }
    for p in listing(target) {
        assert!(
            !p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".cairn-restore-"),
            "temporary file left behind: {}",
            p.display()
        );
    }
}

fn restore(env: &Env, snap: &str, target: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["restore", snap, "--target", target.to_str().unwrap()];
    args.extend_from_slice(extra);
    env.cairn(&args)
}

#[test]
fn traversal_names_are_refused_and_siblings_restore() {
    let src = cairn_tests::fixture::tempdir().unwrap();
    let env = Env::new(&[src.path()]);
    let mut f = Forge::open(&env);
    let (target, outside) = area(&env);
    let escape = format!("../outside/pwned-{}", "x");
    let abs = format!("{}/abs-pwned", outside.display());
    for bad in [
        b"..".to_vec(),
        escape.into_bytes(),
        abs.into_bytes(),
        b".".to_vec(),
        b"a/b".to_vec(),
        b"nul\0name".to_vec(),
        vec![],
    ] {
        // The hostile name sits in a subdirectory; a good file sits beside it.
        let evil = f.file(&bad, b"evil");
        let (sub, _) = f.blobs(&[tree::encode(&[evil])], &[]);
        let good = f.file(b"good.txt", b"good");
        let snap = f.snapshot(&[node(b"d", Kind::Dir { subtree: sub[0] }), good]);
        let o = restore(&env, &snap, &target, &["--overwrite", "always"]);
        assert_eq!(
            code(&o),
            3,
            "a hostile tree must fail the restore (name {:?}):\n{}",
            String::from_utf8_lossy(&bad),
            text(&o)
        );
        assert!(
            stderr(&o).contains("invalid entry name") || stderr(&o).contains("entry name"),
            "{}",
            text(&o)
        );
        assert_eq!(std::fs::read(target.join("good.txt")).unwrap(), b"good");
        assert_nothing_outside(&env, &target, &outside);
    }
    // Duplicate names (a symlink and a directory called the same) are refused too.
    let link = node(
        b"x",
        Kind::Symlink {
            target: outside.as_os_str().as_encoded_bytes().to_vec(),
        },
    );
    let inner = f.file(b"pwned", b"evil");
    let (sub, _) = f.blobs(&[tree::encode(&[inner])], &[]);
    let dup = tree::encode(&[link, node(b"x", Kind::Dir { subtree: sub[0] })]);
    let (dsub, _) = f.blobs(&[dup], &[]);
    let snap = f.snapshot(&[node(b"d2", Kind::Dir { subtree: dsub[0] })]);
    let o = restore(&env, &snap, &target, &[]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert_nothing_outside(&env, &target, &outside);
}

#[test]
fn a_symlink_planted_by_one_restore_is_never_followed_by_the_next() {
    let src = cairn_tests::fixture::tempdir().unwrap();
    let env = Env::new(&[src.path()]);
    let mut f = Forge::open(&env);
    let (target, outside) = area(&env);
    // Snapshot A plants x -> outside (absolute) and y -> ../outside (relative).
    let a = f.snapshot(&[
        node(
            b"x",
            Kind::Symlink {
                target: outside.as_os_str().as_encoded_bytes().to_vec(),
            },
        ),
        node(
            b"y",
            Kind::Symlink {
                target: b"../outside".to_vec(),
            },
        ),
    ]);
    // Snapshot B has directories x and y with files inside, and a file z whose name is
    // a symlink in the target after A.
    let px = f.file(b"pwned", b"evil");
    let (sx, _) = f.blobs(&[tree::encode(&[px])], &[]);
    let b = f.snapshot(&[
        node(b"x", Kind::Dir { subtree: sx[0] }),
        node(b"y", Kind::Dir { subtree: sx[0] }),
    ]);
    ok(&restore(&env, &a, &target, &[]));
    assert!(target
        .join("x")
        .symlink_metadata()
        .unwrap()
        .file_type()
        .is_symlink());
    for policy in ["never", "if-changed", "always"] {
        let o = restore(&env, &b, &target, &["--overwrite", policy]);
        assert_eq!(code(&o), 3, "{}", text(&o));
        assert!(stderr(&o).contains("not followed"), "{}", text(&o));
        assert_nothing_outside(&env, &target, &outside);
    }
    // A file restored over a planted symlink replaces the link, never writes through it.
    let z = f.file(b"x", b"replaced");
    let c = f.snapshot(&[z]);
    ok(&restore(&env, &c, &target, &["--overwrite", "always"]));
    assert_eq!(std::fs::read(target.join("x")).unwrap(), b"replaced");
    assert!(!target
        .join("x")
        .symlink_metadata()
        .unwrap()
        .file_type()
        .is_symlink());
    assert_nothing_outside(&env, &target, &outside);
}

#[test]
fn absurd_lengths_fail_without_allocating() {
    let src = cairn_tests::fixture::tempdir().unwrap();
    let env = Env::new(&[src.path()]);
    let mut f = Forge::open(&env);
    let (target, outside) = area(&env);

    // A tree claiming 2^32-1 entries, and one whose xattr claims a 4 GiB value.
    let mut huge_count = tree::encode(&[node(b"a", Kind::Fifo)]);
    huge_count[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut n = node(b"a", Kind::Fifo);
    n.xattrs = vec![(b"user.x".to_vec(), vec![1, 2, 3])];
    let mut huge_xattr = tree::encode(&[n]);
    let pos = huge_xattr.windows(6).position(|w| w == b"user.x").unwrap() + 6;
    huge_xattr[pos..pos + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    // A file whose chunk list claims 2^32-1 entries.
    let mut fnode = f.file(b"f", b"data");
    if let Kind::File(c) = &mut fnode.kind {
        c.chunks = vec![];
    }
    let mut huge_chunks = tree::encode(&[fnode]);
    let l = huge_chunks.len();
    huge_chunks[l - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
    let (subs, _) = f.blobs(&[huge_count, huge_xattr, huge_chunks], &[]);

    // An index entry claiming a 4 GiB blob, referenced by a file of that size.
    let fake_id = [0x42u8; 32];
    let real = f.file(b"real", b"x");
    let Kind::File(rc) = &real.kind else {
        unreachable!()
    };
    let loc = f.repo.index.get(&rc.chunks[0]).unwrap();
    let pack = *f.repo.index.pack_id(&loc);
    let idx = IndexFile {
        supersedes: vec![],
        packs: vec![(
            pack,
            vec![PackEntry {
                kind: BLOB_DATA,
                id: fake_id,
                offset: 0,
                length: u32::MAX,
                raw_length: u32::MAX,
            }],
        )],
    };
    f.repo.write_index(&idx).unwrap();
    f.repo.load_index().unwrap();
    let giant = node(
        b"giant",
        Kind::File(FileContent {
            size: u32::MAX as u64,
            hash: [0; 32],
            link_group: 0,
            extents: vec![],
            chunks: vec![fake_id],
        }),
    );
    // A file whose recorded size is smaller than its data.
    let mut short = f.file(b"short", b"0123456789");
    if let Kind::File(c) = &mut short.kind {
        c.size = 3;
    }
    let good = f.file(b"zgood", b"fine");
    let snap = f.snapshot(&[
        node(b"d1", Kind::Dir { subtree: subs[0] }),
        node(b"d2", Kind::Dir { subtree: subs[1] }),
        node(b"d3", Kind::Dir { subtree: subs[2] }),
        giant,
        short,
        good,
    ]);
    let o = restore(&env, &snap, &target, &[]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    let e = stderr(&o);
    assert!(e.contains("exceeds the limit"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    assert_eq!(std::fs::read(target.join("zgood")).unwrap(), b"fine");
    for gone in ["giant", "short"] {
        assert!(
            !target.join(gone).exists(),
            "{gone} must not be left looking complete"
        );
    }
    assert_nothing_outside(&env, &target, &outside);
    // The tar export and check refuse it too, without crashing.
    let t = env
        .cmd("cairn")
        .args(["restore", &snap, "--tar", "-"])
        .output()
        .unwrap();
    assert_eq!(code(&t), 3, "{}", text(&t));
    let c = env.cairn(&["check"]);
    assert_eq!(code(&c), 4, "{}", text(&c));
}

#[test]
fn wrong_whole_file_hash_fails_that_file_only() {
    let src = cairn_tests::fixture::tempdir().unwrap();
    let env = Env::new(&[src.path()]);
    let mut f = Forge::open(&env);
    let (target, outside) = area(&env);
    let mut bad = f.file(b"bad", b"contents");
    if let Kind::File(c) = &mut bad.kind {
        c.hash[0] ^= 1;
    }
    let good = f.file(b"good", b"contents too");
    let snap = f.snapshot(&[bad, good]);
    let o = restore(&env, &snap, &target, &[]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(
        stderr(&o).contains("does not match the recorded hash"),
        "{}",
        text(&o)
    );
    assert!(!target.join("bad").exists());
    assert_eq!(std::fs::read(target.join("good")).unwrap(), b"contents too");
    assert_nothing_outside(&env, &target, &outside);
    let c = env.cairn(&["cat", &snap, "/bad"]);
    assert_eq!(code(&c), 3, "{}", text(&c));
}
