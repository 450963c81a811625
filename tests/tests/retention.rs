//! Retention through the built binaries: `cairn forget` (with `--dry-run` and `--json`),
//! `cairn protect`/`unprotect`, and the forget that `cairn-snapshot` runs after a backup.
//!
//! Snapshot times cannot be faked through the binaries, so the time-bucket rules are
//! tested by the unit tests of `cairn::retention`; here `keep_last` drives the commands.

mod common;

use std::io::Write;

use cairn::repo::keyslot::KeySource;
use cairn::repo::Repository;
use common::{code, ok, stderr, text, Env};
use serde_json::Value;

fn src() -> (tempfile::TempDir, std::path::PathBuf) {
    let d = cairn_tests::fixture::tempdir().unwrap();
    let s = d.path().join("src");
    std::fs::create_dir_all(&s).unwrap();
    std::fs::write(s.join("a.txt"), "alpha\n").unwrap();
    (d, s)
}

/// Append `[retention]` with `body` to the environment's config.
fn retention(env: &Env, body: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&env.conf)
        .unwrap();
    write!(f, "\n[retention]\n{body}").unwrap();
}

/// `n` snapshots, each with a different file; their ids, oldest first.
fn snapshots(env: &Env, src: &std::path::Path, n: usize) -> Vec<String> {
    for i in 0..n {
        std::fs::write(src.join(format!("f{i}")), format!("file {i}\n")).unwrap();
        ok(&env.snapshot());
    }
    env.snapshot_ids()
}

fn json(o: &std::process::Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", text(o)))
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `cairn snapshots --json` as (id, protected), oldest first.
fn listed(env: &Env) -> Vec<(String, bool)> {
    let o = env.cairn(&["snapshots", "--json"]);
    ok(&o);
    json(&o)
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["snapshot"]["protected"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn snapshot_objects(env: &Env) -> usize {
    std::fs::read_dir(env.repo.join("snapshots"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_str()
                .is_some_and(|n| n.len() == 64)
        })
        .count()
}

#[test]
fn keep_last_two_of_four() {
    let (_d, s) = src();
    let env = Env::new(&[&s]);
    let ids = snapshots(&env, &s, 4);
    assert_eq!(ids.len(), 4);
    retention(&env, "keep_last = 2\n");
    let o = env.cairn(&["forget"]);
    ok(&o);
    let out = stdout(&o);
    assert!(out.contains("policy: keep_last 2"), "{}", text(&o));
    assert!(out.contains("keep_last 1/2"), "{}", text(&o));
    assert!(out.contains("keep_last 2/2"), "{}", text(&o));
    assert_eq!(out.matches("matches no rule").count(), 2, "{}", text(&o));
    assert!(
        out.contains("4 snapshots: 2 kept, 2 removed"),
        "{}",
        text(&o)
    );
    for id in &ids[..2] {
        let line = out.lines().find(|l| l.starts_with(&id[..12])).unwrap();
        assert!(line.contains(" drop "), "{line}");
    }
    assert_eq!(env.snapshot_ids(), ids[2..].to_vec());
    assert_eq!(snapshot_objects(&env), 2);
    ok(&env.cairn(&["check"]));
    // The data of the survivors is intact.
    let o = env.cairn(&["cat", "latest", &format!("{}/f3", s.display())]);
    ok(&o);
    assert_eq!(stdout(&o), "file 3\n");
    // A second forget has nothing to do.
    let o = env.cairn(&["forget"]);
    ok(&o);
    assert!(
        stdout(&o).contains("2 snapshots: 2 kept, 0 removed"),
        "{}",
        text(&o)
    );
}

#[test]
fn dry_run_removes_nothing() {
    let (_d, s) = src();
    let env = Env::new(&[&s]);
    let ids = snapshots(&env, &s, 3);
    retention(&env, "keep_last = 1\n");
    let o = env.cairn(&["forget", "--dry-run"]);
    ok(&o);
    assert!(
        stdout(&o).contains("3 snapshots: 1 kept, 2 would be removed (dry run"),
        "{}",
        text(&o)
    );
    let o = env.cairn(&["forget", "--dry-run", "--json"]);
    ok(&o);
    let v = json(&o);
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["dropped"], 2);
    assert_eq!(v["removed"], 0);
    assert!(v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["removed"] == false));
    assert_eq!(env.snapshot_ids(), ids);
    assert_eq!(snapshot_objects(&env), 3);
    // A dry run takes no lock, so it works while the repository is locked.
    let lp = env.repo.join("locks").join("0".repeat(32));
    std::fs::write(&lp, foreign_lock(true).to_string()).unwrap();
    ok(&env.cairn(&["forget", "--dry-run"]));
}

#[test]
fn json_lists_every_snapshot_with_its_decision() {
    let (_d, s) = src();
    let env = Env::new(&[&s]);
    let ids = snapshots(&env, &s, 3);
    retention(&env, "keep_last = 2\nkeep_tag = keepme\n");
    let o = env.cairn(&["forget", "--json"]);
    ok(&o);
    let v = json(&o);
    assert_eq!(v["dry_run"], false);
    assert_eq!(v["policy"], "keep_last 2, keep_tag keepme");
    assert_eq!(
        (v["kept"].as_u64(), v["dropped"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(v["removed"], 1);
    assert_eq!(v["copies"], serde_json::json!([]));
    assert_eq!(v["errors"], serde_json::json!([]));
    let snaps = v["snapshots"].as_array().unwrap();
    let got: Vec<&str> = snaps.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(got, ids.iter().map(String::as_str).collect::<Vec<_>>());
    for s in snaps {
        for key in ["time", "host", "paths", "tags", "protected", "reasons"] {
            assert!(s.get(key).is_some(), "{key} missing in {s}");
        }
    }
    assert_eq!(snaps[0]["decision"], "drop");
    assert_eq!(snaps[0]["reasons"], serde_json::json!(["matches no rule"]));
    assert_eq!(snaps[0]["removed"], true);
    assert_eq!(snaps[2]["decision"], "keep");
    assert_eq!(snaps[2]["reasons"], serde_json::json!(["keep_last 1/2"]));
    assert_eq!(snaps[2]["removed"], false);
    assert_eq!(
        snaps[2]["paths"],
        serde_json::json!([s.display().to_string()])
    );
}

#[test]
fn tagged_snapshots_are_kept() {
    let (_d, s) = src();
    let env = Env::new(&[&s]);
    ok(&env
        .cmd("cairn-snapshot")
        .args(["--tag", "before-upgrade"])
        .output()
        .unwrap());
    let ids = snapshots(&env, &s, 2);
    retention(&env, "keep_last = 1\nkeep_tag = before-upgrade\n");
    let o = env.cairn(&["forget"]);
    ok(&o);
    assert!(stdout(&o).contains("tag before-upgrade"), "{}", text(&o));
    assert_eq!(env.snapshot_ids(), [ids[0].clone(), ids[2].clone()]);
}

#[test]
fn protect_keeps_and_unprotect_releases() {
    let (_d, s) = src();
    let env = Env::new(&[&s]);
    let ids = snapshots(&env, &s, 3);
    retention(&env, "keep_last = 1\n");
    // Protect the oldest, by a prefix of its id: it gets a new id.
    let o = env.cairn(&["protect", &ids[0][..12]]);
    ok(&o);
    let new = stdout(&o).split_whitespace().last().unwrap().to_string();
    assert_eq!(new.len(), 64, "{}", text(&o));
    assert_ne!(new, ids[0]);
    let l = listed(&env);
    assert_eq!(l.len(), 3);
    assert_eq!(l[0], (new.clone(), true), "{l:?}");
    assert!(!l[1].1 && !l[2].1);
    assert!(!env.repo.join("snapshots").join(&ids[0]).exists());
    let o = env.cairn(&["snapshots"]);
    ok(&o);
    assert!(stdout(&o).contains("PROTECTED"), "{}", text(&o));
    // Protecting again changes nothing.
    let o = env.cairn(&["protect", &new, "--json"]);
    ok(&o);
    let v = json(&o);
    assert_eq!(
        (v["snapshot"].as_str(), &v["changed"]),
        (Some(new.as_str()), &Value::Bool(false))
    );
    // keep_last = 1 would drop it; protection keeps it.
    let o = env.cairn(&["forget"]);
    ok(&o);
    let out = stdout(&o);
    let line = out.lines().find(|l| l.starts_with(&new[..12])).unwrap();
    assert!(
        line.contains(" keep ") && line.contains("protected"),
        "{line}"
    );
    assert_eq!(env.snapshot_ids(), [new.clone(), ids[2].clone()]);
    // The protected snapshot restores (its record points at the same data).
    let o = env.cairn(&["cat", &new, &format!("{}/f0", s.display())]);
    ok(&o);
    assert_eq!(stdout(&o), "file 0\n");
    ok(&env.cairn(&["check"]));
    // Unprotect: a new id again, and now forget drops it.
    let o = env.cairn(&["unprotect", &new, "--json"]);
    ok(&o);
    let v = json(&o);
    assert_eq!(v["protected"], false);
    assert_eq!(v["changed"], true);
    assert_eq!(v["previous"], new.as_str());
    let plain = v["snapshot"].as_str().unwrap().to_string();
    assert_ne!(plain, new);
    assert_eq!(listed(&env)[0], (plain.clone(), false));
    ok(&env.cairn(&["forget"]));
    assert_eq!(env.snapshot_ids(), [ids[2].clone()]);
    ok(&env.cairn(&["check"]));
    // Unknown snapshots are usage errors.
    let o = env.cairn(&["protect", "ffffffffffff"]);
    assert_eq!(code(&o), 1, "{}", text(&o));
}

/// A crash between writing the protected copy and removing the old object leaves two
/// objects of one record: they count as one snapshot, the protected one, and forget
/// removes the extra copy.
#[test]
fn an_interrupted_protect_leaves_one_snapshot() {
    let (_d, s) = src();
    let env = Env::new(&[&s]);
    let ids = snapshots(&env, &s, 2);
    let repo = Repository::open(&env.repo, &[KeySource::KeyFile(env.key.clone())]).unwrap();
    let old = repo.load_stored_snapshot(&ids[0]).unwrap();
    assert!(!old.protected);
    // What protect writes first, without the removal that follows it.
    let copy = repo.save_stored_snapshot(&old.snapshot, true).unwrap();
    drop(repo);
    assert_eq!(snapshot_objects(&env), 3);
    let l = listed(&env);
    assert_eq!(l, [(copy.clone(), true), (ids[1].clone(), false)]);
    let o = env.cairn(&["snapshots"]);
    ok(&o);
    assert!(stderr(&o).contains("extra copies"), "{}", text(&o));
    ok(&env.cairn(&["check"]));
    // Forget keeps the protected copy, removes the other one.
    retention(&env, "keep_last = 1\n");
    let o = env.cairn(&["forget", "--json"]);
    ok(&o);
    let v = json(&o);
    assert_eq!(
        v["copies"],
        serde_json::json!([{"id": ids[0], "copy_of": copy, "removed": true}])
    );
    assert_eq!(v["removed"], 0);
    assert_eq!(snapshot_objects(&env), 2);
    assert_eq!(
        listed(&env),
        [(copy.clone(), true), (ids[1].clone(), false)]
    );
    ok(&env.cairn(&["check"]));

    // The same for an interrupted unprotect: protect wins until unprotect is run again.
    let repo = Repository::open(&env.repo, &[KeySource::KeyFile(env.key.clone())]).unwrap();
    let rec = repo.load_stored_snapshot(&copy).unwrap();
    let plain = repo.save_stored_snapshot(&rec.snapshot, false).unwrap();
    drop(repo);
    assert_eq!(listed(&env)[0], (copy.clone(), true));
    // Running unprotect again finishes the job, reusing the copy already written.
    let o = env.cairn(&["unprotect", &copy, "--json"]);
    ok(&o);
    let v = json(&o);
    assert_eq!(v["snapshot"], plain.as_str());
    assert_eq!(v["removed"], serde_json::json!([copy]));
    assert_eq!(snapshot_objects(&env), 2);
    assert_eq!(listed(&env)[0], (plain, false));
}

#[test]
fn no_section_is_a_configuration_error() {
    let (_d, s) = src();
    let env = Env::new(&[&s]);
    snapshots(&env, &s, 1);
    let o = env.cairn(&["forget"]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    let e = stderr(&o);
    assert!(e.contains("[retention]"), "{e}");
    assert!(e.contains(&env.conf.display().to_string()), "{e}");
    assert_eq!(env.snapshot_ids().len(), 1);
}

#[test]
fn no_rules_keep_everything() {
    let (_d, s) = src();
    let env = Env::new(&[&s]);
    let ids = snapshots(&env, &s, 2);
    retention(&env, "keep_last = 0\n");
    let o = env.cairn(&["forget"]);
    ok(&o);
    assert_eq!(
        stdout(&o)
            .matches("no retention rule set: keeping everything")
            .count(),
        2,
        "{}",
        text(&o)
    );
    assert_eq!(env.snapshot_ids(), ids);
}

fn foreign_lock(exclusive: bool) -> Value {
    serde_json::json!({"host": "otherhost", "pid": 4242, "time": chrono::Utc::now(), "exclusive": exclusive, "command": "cairn test"})
}

#[test]
fn forget_on_a_locked_repository_exits_2() {
    let (_d, s) = src();
    let env = Env::new(&[&s]);
    let ids = snapshots(&env, &s, 2);
    retention(&env, "keep_last = 1\n");
    // A live lock of another host: exclusive, and even a shared one blocks forget.
    for exclusive in [true, false] {
        let lp = env.repo.join("locks").join("0".repeat(32));
        std::fs::write(&lp, foreign_lock(exclusive).to_string()).unwrap();
        let o = env.cairn(&["forget"]);
        assert_eq!(code(&o), 2, "{}", text(&o));
        assert!(stderr(&o).contains("otherhost"), "{}", text(&o));
        std::fs::remove_file(&lp).unwrap();
        assert_eq!(snapshot_objects(&env), 2);
    }
    // Protect takes a shared lock: an exclusive one blocks it.
    let lp = env.repo.join("locks").join("0".repeat(32));
    std::fs::write(&lp, foreign_lock(true).to_string()).unwrap();
    let o = env.cairn(&["protect", &ids[0]]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    std::fs::remove_file(&lp).unwrap();
    assert_eq!(env.snapshot_ids(), ids);
}

#[test]
fn cairn_snapshot_applies_retention() {
    let (_d, s) = src();
    let env = Env::new(&[&s]);
    retention(&env, "keep_last = 1\n");
    ok(&env.snapshot());
    assert_eq!(env.status("snapshot")["figures"]["forgotten"], 0);
    for i in 0..2 {
        std::fs::write(s.join(format!("g{i}")), "x").unwrap();
        let o = env.snapshot();
        ok(&o);
        let st = env.status("snapshot");
        assert_eq!(st["result"], "success");
        assert_eq!(st["figures"]["forgotten"], 1, "{st}");
        assert_eq!(st["figures"]["retention_error"], Value::Null);
        assert!(
            st["summary"]
                .as_str()
                .unwrap()
                .contains("forgot 1 snapshots"),
            "{st}"
        );
        assert_eq!(env.snapshot_ids().len(), 1);
    }
    assert_eq!(snapshot_objects(&env), 1);
    ok(&env.cairn(&["check"]));
    // --json reports the number too.
    let o = env.cmd("cairn-snapshot").arg("--json").output().unwrap();
    ok(&o);
    assert_eq!(json(&o)["forgotten"], 1);
    // A dry run forgets nothing.
    let o = env.cmd("cairn-snapshot").arg("--dry-run").output().unwrap();
    ok(&o);
    assert_eq!(snapshot_objects(&env), 1);
}

/// The forget after a backup needs the exclusive lock; if another process holds a shared
/// one, the backup still succeeds, and retention is skipped with a warning.
#[test]
fn a_failed_forget_does_not_fail_the_backup() {
    let (_d, s) = src();
    let env = Env::new(&[&s]);
    ok(&env.snapshot());
    retention(&env, "keep_last = 1\n");
    let lp = env.repo.join("locks").join("0".repeat(32));
    std::fs::write(&lp, foreign_lock(false).to_string()).unwrap();
    std::fs::write(s.join("b.txt"), "beta\n").unwrap();
    let o = env.snapshot();
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(stderr(&o).contains("retention not applied"), "{}", text(&o));
    let st = env.status("snapshot");
    assert_eq!(st["result"], "success");
    assert_eq!(st["exit_code"], 0);
    assert_eq!(st["figures"]["forgotten"], Value::Null);
    assert!(
        st["figures"]["retention_error"]
            .as_str()
            .unwrap()
            .contains("otherhost"),
        "{st}"
    );
    assert_eq!(env.snapshot_ids().len(), 2);
    // Once the lock is gone, the next run catches up.
    std::fs::remove_file(&lp).unwrap();
    ok(&env.snapshot());
    assert_eq!(env.status("snapshot")["figures"]["forgotten"], 2);
    assert_eq!(env.snapshot_ids().len(), 1);
}
