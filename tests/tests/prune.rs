//! `cairn prune`: frees what no snapshot uses, repacks half-empty packs, never breaks a
//! snapshot — not even when killed at any instant.

mod common;

use std::time::Duration;

use cairn_tests::{compare_trees, format_differences, CompareOpts};
use common::{code, listing, ok, text, Env};

fn fill(dir: &std::path::Path, files: usize, size: usize, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = cairn_tests::fixture::Prng::new(seed);
    for i in 0..files {
        std::fs::write(dir.join(format!("f{i:03}")), rng.bytes(size)).unwrap();
    }
}

fn repo_bytes(env: &Env) -> u64 {
    listing(&env.repo.join("data"))
        .iter()
        .filter_map(|p| p.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

fn drop_snapshot(env: &Env, id: &str) {
    std::fs::remove_file(env.repo.join("snapshots").join(id)).unwrap();
}

fn assert_latest_restores(env: &Env, src: &std::path::Path, tag: &str) {
    let t = env.path(&format!("restore-{tag}"));
    let _ = std::fs::remove_dir_all(&t);
    ok(&env.cairn(&["restore", "latest", "--target", t.to_str().unwrap()]));
    let diffs = compare_trees(
        src,
        &t.join(src.strip_prefix("/").unwrap()),
        &CompareOpts {
            ignore_root_metadata: true,
            ..CompareOpts::for_current_user()
        },
    );
    assert!(diffs.is_empty(), "{tag}: {}", format_differences(&diffs));
    std::fs::remove_dir_all(&t).unwrap();
}

/// Two snapshots; the first one forgotten; half of its data is garbage.
fn setup() -> (tempfile::TempDir, std::path::PathBuf, Env) {
    let d = cairn_tests::fixture::tempdir().unwrap();
    let src = d.path().join("src");
    fill(&src, 24, 512 << 10, 1);
    let env = Env::new(&[&src]);
    ok(&env.snapshot());
    for i in (0..24).step_by(2) {
        std::fs::remove_file(src.join(format!("f{i:03}"))).unwrap();
    }
    fill(&src.join("more"), 6, 512 << 10, 2);
    ok(&env.snapshot());
    let first = env.snapshot_ids()[0].clone();
    drop_snapshot(&env, &first);
    (d, src, env)
}

#[test]
fn prune_frees_unused_data_and_keeps_every_snapshot_whole() {
    let (_d, src, env) = setup();
    let before = repo_bytes(&env);
    let packs_before = listing(&env.repo.join("data")).len();
    let o = env.cairn(&["prune", "--dry-run", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&ok(&o).stdout).unwrap();
    assert!(v["bytes_freed"].as_u64().unwrap() > 4 << 20, "{v}");
    assert_eq!(repo_bytes(&env), before, "a dry run deletes nothing");
    assert_eq!(listing(&env.repo.join("data")).len(), packs_before);

    let o = env.cairn(&["prune", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&ok(&o).stdout).unwrap();
    let after = repo_bytes(&env);
    assert!(
        after + (4 << 20) < before,
        "prune must free space: {before} -> {after}\n{v}"
    );
    assert!(
        v["packs_repacked"].as_u64().unwrap() + v["packs_deleted"].as_u64().unwrap() > 0,
        "{v}"
    );
    ok(&env.cairn(&["check", "--read-data"]));
    assert_latest_restores(&env, &src, "after-prune");
    // Nothing left to do the second time.
    let o = env.cairn(&["prune", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&ok(&o).stdout).unwrap();
    assert_eq!(v["bytes_freed"], 0, "{v}");
    assert_eq!(repo_bytes(&env), after);
    // A new backup after prune still deduplicates against what is left.
    ok(&env.snapshot());
    let st = env.status("snapshot");
    assert!(
        st["figures"]["figures"]["bytes_added"].as_u64().unwrap() < 64 << 10,
        "{st}"
    );
}

#[test]
fn max_repack_limits_the_rewrite() {
    let (_d, _src, env) = setup();
    let o = env.cairn(&["prune", "--dry-run", "--json", "--max-repack", "0"]);
    let v: serde_json::Value = serde_json::from_slice(&ok(&o).stdout).unwrap();
    assert_eq!(v["packs_repacked"], 0, "{v}");
    let o = env.cairn(&["prune", "--max-repack", "banana"]);
    assert_eq!(code(&o), 1, "{}", text(&o));
}

#[test]
fn prune_refuses_a_damaged_repository_and_a_locked_one() {
    let (_d, _src, env) = setup();
    // A live shared lock (a backup running elsewhere): exit 2, nothing deleted.
    let lock = serde_json::json!({"host": "otherhost", "pid": 1, "time": chrono::Utc::now(), "exclusive": false, "command": "cairn-snapshot"});
    let lp = env.repo.join("locks").join("1".repeat(32));
    std::fs::write(&lp, lock.to_string()).unwrap();
    let before = repo_bytes(&env);
    let o = env.cairn(&["prune"]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert_eq!(repo_bytes(&env), before);
    std::fs::remove_file(&lp).unwrap();
    // Every index file gone: snapshots name blobs no pack is known to hold.
    for e in std::fs::read_dir(env.repo.join("index")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let o = env.cairn(&["prune"]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("refuses"),
        "{}",
        text(&o)
    );
    assert_eq!(repo_bytes(&env), before, "a refused prune deletes nothing");
}

#[test]
fn kill9_during_prune_never_breaks_a_snapshot() {
    let (_d, src, env) = setup();
    let mut rng = cairn_tests::fixture::Prng::new(5);
    let mut interrupted = 0;
    let state = |dir: &str| listing(&env.repo.join(dir));
    for t in 0..12 {
        let (packs, index) = (state("data"), state("index"));
        let mut child = env
            .cmd("cairn")
            .arg("prune")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Kill at each phase in turn: early (reading), once new packs appear (before the
        // index), once the new index appears (before old objects are deleted).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        match t % 3 {
            0 => std::thread::sleep(Duration::from_millis(5 + rng.next_u64() % 40)),
            1 => {
                while state("data") == packs
                    && child.try_wait().unwrap().is_none()
                    && std::time::Instant::now() < deadline
                {}
            }
            _ => {
                while state("index") == index
                    && child.try_wait().unwrap().is_none()
                    && std::time::Instant::now() < deadline
                {}
            }
        }
        if child.try_wait().unwrap().is_none() {
            interrupted += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        let c = env.cairn(&["check"]);
        assert_eq!(code(&c), 0, "after kill #{t}, check fails:\n{}", text(&c));
        assert_latest_restores(&env, &src, &format!("kill-{t}"));
    }
    eprintln!("{interrupted} of 12 prunes were killed while running");
    assert!(
        interrupted >= 3,
        "too few kills landed while prune ran ({interrupted})"
    );
    ok(&env.cairn(&["prune"]));
    ok(&env.cairn(&["check", "--read-data"]));
    assert_latest_restores(&env, &src, "final");
}
