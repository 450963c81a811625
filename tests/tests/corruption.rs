//! Damage in the repository is found by `check --read-data`, named precisely, and a
//! restore fails closed for the affected file only.

mod common;

use cairn::repo::keyslot::KeySource;
use cairn::repo::Repository;
use cairn::tree::Kind;
use common::{code, listing, ok, stderr, text, Env};

fn tree() -> (tempfile::TempDir, std::path::PathBuf) {
    let d = cairn_tests::fixture::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let mut rng = cairn_tests::fixture::Prng::new(7);
    std::fs::write(src.join("big.bin"), rng.bytes(3 << 20)).unwrap();
    std::fs::write(src.join("small.txt"), "small and fine\n").unwrap();
    std::fs::write(src.join("sub/other.txt"), "also fine\n").unwrap();
    (d, src)
}

/// The pack file and offset holding the first chunk of `path` in the latest snapshot.
fn first_chunk(env: &Env, path: &str) -> (std::path::PathBuf, u64, String, String) {
    let repo = Repository::open(&env.repo, &[KeySource::KeyFile(env.key.clone())]).unwrap();
    let (_, snap) = repo.resolve_snapshot("latest").unwrap();
    let root = cairn::walk::root_id(&snap.tree).unwrap();
    let node = cairn::walk::lookup(&repo, &root, path.as_bytes())
        .unwrap()
        .unwrap();
    let Kind::File(f) = node.kind else {
        panic!("not a file")
    };
    let loc = repo.index.get(&f.chunks[0]).unwrap();
    let pack = hex::encode(repo.index.pack_id(&loc));
    (
        env.repo.join("data").join(&pack[..2]).join(&pack),
        loc.offset,
        pack,
        hex::encode(f.chunks[0]),
    )
}

#[test]
fn one_flipped_byte_is_named_and_fails_closed_for_that_file_only() {
    let (_d, src) = tree();
    let env = Env::new(&[&src]);
    ok(&env.snapshot());
    ok(&env.cairn(&["check", "--read-data"]));

    let big = format!("{}/big.bin", src.display());
    let (pack_path, offset, pack, blob) = first_chunk(&env, &big);
    let mut bytes = std::fs::read(&pack_path).unwrap();
    bytes[offset as usize + 100] ^= 0x01;
    std::fs::write(&pack_path, &bytes).unwrap();

    // The structural check cannot see inside packs; the data check names pack and blob.
    ok(&env.cairn(&["check"]));
    let c = env.cairn(&["check", "--read-data"]);
    assert_eq!(code(&c), 4, "{}", text(&c));
    let e = stderr(&c);
    assert!(e.contains(&pack), "the damaged pack must be named:\n{e}");
    assert!(e.contains(&blob), "the damaged blob must be named:\n{e}");
    let j = env.cairn(&["check", "--read-data", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    assert!(!v["errors"].as_array().unwrap().is_empty());

    // Restore: the damaged file is reported and absent; everything else is restored.
    let t = env.path("t");
    let o = env.cairn(&["restore", "latest", "--target", t.to_str().unwrap()]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(stderr(&o).contains("big.bin"), "{}", text(&o));
    let r = t.join(src.strip_prefix("/").unwrap());
    assert!(
        !r.join("big.bin").exists(),
        "a damaged file must not be left looking complete"
    );
    assert_eq!(
        std::fs::read(r.join("small.txt")).unwrap(),
        b"small and fine\n"
    );
    assert_eq!(
        std::fs::read(r.join("sub/other.txt")).unwrap(),
        b"also fine\n"
    );
    assert!(
        listing(&t)
            .iter()
            .all(|p| !p.to_string_lossy().contains(".cairn-restore-")),
        "no temporary left"
    );

    // cat and the tar export refuse the damaged data too.
    let c = env.cairn(&["cat", "latest", &big]);
    assert_eq!(code(&c), 3, "{}", text(&c));
    let t = env
        .cmd("cairn")
        .args(["restore", "latest", "--tar", "-"])
        .output()
        .unwrap();
    assert_eq!(code(&t), 3, "{}", text(&t));
}

#[test]
fn missing_and_truncated_packs_are_found() {
    let (_d, src) = tree();
    let env = Env::new(&[&src]);
    ok(&env.snapshot());
    let big = format!("{}/big.bin", src.display());
    let (pack_path, _, pack, _) = first_chunk(&env, &big);
    let bytes = std::fs::read(&pack_path).unwrap();
    std::fs::write(&pack_path, &bytes[..bytes.len() / 2]).unwrap();
    let c = env.cairn(&["check"]);
    assert_eq!(code(&c), 4, "{}", text(&c));
    assert!(
        stderr(&c).contains(&pack) && stderr(&c).contains("truncated"),
        "{}",
        text(&c)
    );
    std::fs::remove_file(&pack_path).unwrap();
    let c = env.cairn(&["check"]);
    assert_eq!(code(&c), 4, "{}", text(&c));
    assert!(stderr(&c).contains("missing"), "{}", text(&c));
}

#[test]
fn interrupted_writes_are_warnings_not_errors() {
    let (_d, src) = tree();
    let env = Env::new(&[&src]);
    ok(&env.snapshot());
    // What a crash between pack write and index write leaves: an unindexed pack and a temp.
    let (pack_path, _, _, _) = first_chunk(&env, &format!("{}/big.bin", src.display()));
    let orphan = pack_path.with_file_name("ab".repeat(32));
    std::fs::copy(&pack_path, &orphan).unwrap();
    std::fs::write(env.repo.join("index").join(".tmp-partial"), b"half").unwrap();
    let c = env.cairn(&["check", "--read-data"]);
    // The orphan's name is not its SHA-256, so --read-data flags it; plain check warns only.
    let plain = env.cairn(&["check"]);
    assert_eq!(code(&plain), 0, "{}", text(&plain));
    assert!(
        stderr(&plain).contains("not in any index"),
        "{}",
        text(&plain)
    );
    assert!(
        stderr(&plain).contains("temporary file"),
        "{}",
        text(&plain)
    );
    assert_eq!(code(&c), 4, "{}", text(&c));
}
