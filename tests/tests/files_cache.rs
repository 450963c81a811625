//! The files cache: unchanged files are not read again, and every way a file can change
//! (or the cache can be wrong) makes it read again.

mod common;

use common::{ok, Env};

fn figures(env: &Env) -> serde_json::Value {
    env.status("snapshot")["figures"]["figures"].clone()
}

fn n(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"))
}

fn cache_files(env: &Env) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(env.path("cache/files"))
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn unchanged_files_are_not_read_and_changes_are_never_missed() {
    let d = cairn_tests::fixture::tempdir().unwrap();
    let s = d.path().join("src");
    std::fs::create_dir_all(s.join("sub")).unwrap();
    let mut rng = cairn_tests::fixture::Prng::new(3);
    for i in 0..20 {
        std::fs::write(s.join(format!("sub/f{i}")), rng.bytes(10_000 + i * 1000)).unwrap();
    }
    std::fs::write(s.join("same-size.txt"), "AAAA").unwrap();
    let env = Env::new(&[&s]);
    ok(&env.snapshot());
    let first = figures(&env);
    assert!(n(&first, "bytes_read") > 200_000, "{first}");
    assert_eq!(cache_files(&env).len(), 1, "one cache file per repository");

    // No change: nothing is read, everything is unchanged.
    ok(&env.snapshot());
    let f = figures(&env);
    assert_eq!(
        n(&f, "bytes_read"),
        0,
        "unchanged files must not be read: {f}"
    );
    assert_eq!(n(&f, "files_unchanged"), 21, "{f}");

    // Same size, same mtime, different content: the change time gives it away.
    let p = s.join("same-size.txt");
    let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
    std::fs::write(&p, "BBBB").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    ok(&env.snapshot());
    let f = figures(&env);
    assert_eq!(n(&f, "bytes_read"), 4, "only the changed file is read: {f}");
    assert_eq!(n(&f, "files_changed"), 1, "{f}");
    let o = env.cairn(&["cat", "latest", p.to_str().unwrap()]);
    assert_eq!(ok(&o).stdout, b"BBBB");

    // --force-read reads everything.
    let o = env
        .cmd("cairn-snapshot")
        .arg("--force-read")
        .output()
        .unwrap();
    ok(&o);
    assert!(n(&figures(&env), "bytes_read") > 200_000);

    // A damaged cache costs time only.
    let cf = cache_files(&env).pop().unwrap();
    let mut b = std::fs::read(&cf).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0xff;
    std::fs::write(&cf, &b).unwrap();
    let o = env.snapshot();
    ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("files cache"),
        "the damaged cache is mentioned"
    );
    assert!(n(&figures(&env), "bytes_read") > 200_000);
    ok(&env.snapshot());
    assert_eq!(
        n(&figures(&env), "bytes_read"),
        0,
        "the cache is rewritten after a damaged one"
    );

    // A cache that belongs to an older snapshot is not used.
    let old = std::fs::read(&cf).unwrap();
    std::fs::write(s.join("new-file"), "n").unwrap();
    ok(&env.snapshot());
    std::fs::write(&cf, &old).unwrap();
    ok(&env.snapshot());
    assert!(
        n(&figures(&env), "bytes_read") > 200_000,
        "a cache for another snapshot must be ignored"
    );

    // Chunks no longer in the index are never trusted: read again, stored again.
    ok(&env.snapshot());
    // (The packs go too: a backup indexes packs it finds unindexed, and would reuse them.)
    for p in common::listing(&env.repo.join("index"))
        .into_iter()
        .chain(common::listing(&env.repo.join("data")))
    {
        if p.is_file() {
            std::fs::remove_file(p).unwrap();
        }
    }
    ok(&env.snapshot());
    let f = figures(&env);
    assert!(
        n(&f, "bytes_read") > 200_000 && n(&f, "bytes_added") > 200_000,
        "{f}"
    );
    // The old snapshots lost their data (deleted above); the newest one must be whole.
    let t = env.path("t");
    ok(&env.cairn(&["restore", "latest", "--target", t.to_str().unwrap()]));
    let diffs = cairn_tests::compare_trees(
        &s,
        &t.join(s.strip_prefix("/").unwrap()),
        &cairn_tests::CompareOpts::for_current_user(),
    );
    assert!(
        diffs.is_empty(),
        "{}",
        cairn_tests::format_differences(&diffs)
    );
}
