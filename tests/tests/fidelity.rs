//! Point 7 of the foundation issue: every kind of entry and metadata is backed up and
//! restored exactly, and the tar export carries all of it.

mod common;

use cairn_tests::{compare_tar_with_tree, compare_trees, format_differences, CompareOpts};
use common::{ok, text, Env};

#[test]
fn full_tree_round_trips_through_restore_and_tar() {
    let src_parent = cairn_tests::fixture::tempdir().unwrap();
    let src = src_parent.path().join("tree");
    std::fs::create_dir(&src).unwrap();
    let manifest = cairn_tests::build_full_tree(&src).unwrap();
    eprintln!("{manifest}");
    let env = Env::new(&[&src]);

    let snap = env.snapshot();
    ok(&snap);
    let status = env.status("snapshot");
    assert_eq!(status["result"], "success", "{status}");
    assert_eq!(status["exit_code"], 0);

    // Restore into a new directory; the tree sits at its absolute path below the target.
    let target = env.path("restore");
    ok(&env.cairn(&["restore", "latest", "--target", target.to_str().unwrap()]));
    let restored = target.join(src.strip_prefix("/").unwrap());
    let opts = CompareOpts {
        ignore_root_metadata: false,
        ..CompareOpts::for_current_user()
    };
    let diffs = compare_trees(&src, &restored, &opts);
    assert!(
        diffs.is_empty(),
        "restore differs from the source:\n{}",
        format_differences(&diffs)
    );

    // The tar export of the same subtree matches the source tree.
    // (SNAPSHOT:PATH exports the subtree at PATH, names relative to it.)
    let spec = format!("latest:{}", src.display());
    let tar = env
        .cmd("cairn")
        .args(["restore", &spec, "--tar", "-"])
        .output()
        .unwrap();
    let tar = ok(&tar).stdout.clone();
    let diffs = compare_tar_with_tree(&tar, &src, &CompareOpts::for_current_user());
    assert!(
        diffs.is_empty(),
        "tar export differs from the source:\n{}",
        format_differences(&diffs)
    );

    // A second snapshot of the unchanged tree adds (almost) nothing and restores alone.
    ok(&env.snapshot());
    let s = env.status("snapshot");
    let f = &s["figures"]["figures"];
    assert_eq!(f["files_new"], 0, "{s}");
    assert_eq!(f["files_changed"], 0, "{s}");
    assert!(
        f["bytes_added"].as_u64().unwrap() < 64 * 1024,
        "an unchanged tree added {}",
        f["bytes_added"]
    );
    let t2 = env.path("restore2");
    let ids = env.snapshot_ids();
    ok(&env.cairn(&["restore", &ids[1][..10], "--target", t2.to_str().unwrap()]));
    let diffs = compare_trees(&src, &t2.join(src.strip_prefix("/").unwrap()), &opts);
    assert!(
        diffs.is_empty(),
        "second snapshot differs:\n{}",
        format_differences(&diffs)
    );

    // `cat` streams one file exactly.
    let big = manifest.path("big_file");
    let mut abs = src.as_os_str().as_encoded_bytes().to_vec();
    abs.push(b'/');
    abs.extend_from_slice(big);
    let abs = String::from_utf8(abs).unwrap();
    let out = env.cairn(&["cat", "latest", &abs]);
    let out = ok(&out).stdout.clone();
    assert_eq!(out, std::fs::read(&abs).unwrap());
}

#[test]
fn include_restores_the_selection_and_its_parents_only() {
    let src_parent = cairn_tests::fixture::tempdir().unwrap();
    let src = src_parent.path().join("s");
    std::fs::create_dir_all(src.join("keep/inner")).unwrap();
    std::fs::create_dir_all(src.join("drop")).unwrap();
    std::fs::write(src.join("keep/inner/a.conf"), "a").unwrap();
    std::fs::write(src.join("keep/b.txt"), "b").unwrap();
    std::fs::write(src.join("drop/c.conf"), "c").unwrap();
    let env = Env::new(&[&src]);
    ok(&env.snapshot());
    let t = env.path("t");
    let inc = format!("{}/keep/**", src.display());
    let o = env.cairn(&[
        "restore",
        "latest",
        "--target",
        t.to_str().unwrap(),
        "--include",
        &inc,
        "--exclude",
        "*.txt",
    ]);
    ok(&o);
    let r = t.join(src.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read(r.join("keep/inner/a.conf")).unwrap(),
        b"a",
        "{}",
        text(&o)
    );
    assert!(
        !r.join("keep/b.txt").exists(),
        "--exclude *.txt must leave b.txt out"
    );
    assert!(
        !r.join("drop").exists(),
        "nothing outside the include may be restored"
    );

    // --dry-run lists and writes nothing.
    let t2 = env.path("t2");
    let o = env.cairn(&[
        "restore",
        "latest",
        "--target",
        t2.to_str().unwrap(),
        "--dry-run",
    ]);
    let o = ok(&o).stdout.clone();
    assert!(String::from_utf8_lossy(&o).contains("c.conf"));
    assert!(!t2.exists(), "a dry run must not create the target");

    // --overwrite: never leaves a changed file alone; always replaces it.
    ok(&env.cairn(&["restore", "latest", "--target", t.to_str().unwrap()]));
    std::fs::write(r.join("drop/c.conf"), "local edit").unwrap();
    ok(&env.cairn(&["restore", "latest", "--target", t.to_str().unwrap()]));
    assert_eq!(std::fs::read(r.join("drop/c.conf")).unwrap(), b"local edit");
    ok(&env.cairn(&[
        "restore",
        "latest",
        "--target",
        t.to_str().unwrap(),
        "--overwrite",
        "if-changed",
    ]));
    assert_eq!(std::fs::read(r.join("drop/c.conf")).unwrap(), b"c");
}
