//! `cairn status`: lights from the status files, staleness from their timestamps (no
//! sleeping), the repository's figures, and exit 3 when something is red.

mod common;

use common::{code, ok, text, Env};
use serde_json::Value;

fn status(env: &Env) -> (i32, Value, String) {
    let o = env.cairn(&["status", "--json"]);
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    let plain = env.cairn(&["status"]);
    (
        code(&o),
        v,
        String::from_utf8_lossy(&plain.stdout).into_owned(),
    )
}

fn light(v: &Value, stage: &str) -> String {
    v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == stage)
        .map(|s| s["light"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no {stage}: {v:#}"))
}

#[test]
fn lights_staleness_and_the_repository() {
    let d = cairn_tests::fixture::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..5 {
        std::fs::write(
            src.join(format!("f{i}")),
            "same content in every file\n".repeat(1000),
        )
        .unwrap();
    }
    let env = Env::new(&[&src]);
    ok(&env.snapshot());
    ok(&env.snapshot());
    let (c, v, plain) = status(&env);
    assert_eq!(c, 0, "{v:#}");
    assert_eq!(light(&v, "snapshot"), "green");
    assert_eq!(light(&v, "preflight"), "yellow", "never ran: worth a look");
    assert_eq!(v["overall"], "yellow");
    assert_eq!(v["repository"]["snapshots"], 2);
    let ratio = v["repository"]["dedup_ratio"].as_f64().unwrap();
    assert!(
        ratio > 2.0,
        "ten copies of one content, stored once: {ratio}"
    );
    assert!(
        plain.contains("snapshot") && plain.contains("dedup"),
        "{plain}"
    );
    assert!(!plain.contains('\u{1b}'), "no colours when not a terminal");

    // The last success three days ago: stale, red, exit 3 — from the timestamps alone.
    let p = env.path("state/status/snapshot.json");
    let mut st: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    let old = (chrono::Utc::now() - chrono::Duration::days(3)).to_rfc3339();
    st["last_success"] = Value::String(old.clone());
    st["started"] = Value::String(old.clone());
    st["finished"] = Value::String(old);
    std::fs::write(&p, serde_json::to_vec(&st).unwrap()).unwrap();
    let (c, v, plain) = status(&env);
    assert_eq!(c, 3, "{v:#}");
    assert_eq!(v["overall"], "red");
    assert_eq!(light(&v, "snapshot"), "red");
    assert!(
        v["reasons"][0].as_str().unwrap().starts_with("STALE"),
        "{v:#}"
    );
    assert!(plain.contains("RED"), "{plain}");

    // A failed run is red too, with its error.
    std::fs::rename(&env.repo, env.path("moved")).unwrap();
    let o = env.snapshot();
    assert_ne!(code(&o), 0);
    let (c, v, _) = status(&env);
    assert_eq!(c, 3);
    let snap = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "snapshot")
        .unwrap()
        .clone();
    assert_eq!(snap["result"], "failure", "{v:#}");
    assert!(
        snap["error"].as_str().unwrap().contains("repository"),
        "{snap:#}"
    );
    assert!(
        v["repository"]["note"]
            .as_str()
            .unwrap()
            .contains("no repository"),
        "{v:#}"
    );
}

#[test]
fn the_snapshot_status_records_the_repository_size() {
    let d = cairn_tests::fixture::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), "x".repeat(100_000)).unwrap();
    std::fs::write(src.join("b"), "x".repeat(100_000)).unwrap();
    let env = Env::new(&[&src]);
    ok(&env.snapshot());
    ok(&env.snapshot());
    let r = &env.status("snapshot")["figures"]["repository"];
    assert_eq!(r["snapshots"], 2, "{r:#}");
    let stored = r["stored_bytes"].as_u64().unwrap();
    let logical = r["logical_bytes"].as_u64().unwrap();
    assert_eq!(logical, 400_000, "two snapshots of 200 kB: {r:#}");
    assert!(
        stored > 0 && stored < logical,
        "deduplicated and compressed: {r:#}"
    );
}
